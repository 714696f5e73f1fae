/*
 * fake_store.h: for unit tests of the semantic tier across restarts: a
 * stand-in for the disk tier's part (cfg->store) that holds a few answers
 * and finds them by key. Include after cmocka.h, llmc/error.h and
 * llmc/tier.h.
 */
#ifndef FAKE_STORE_H
#define FAKE_STORE_H

#include <string.h>

#define FAKE_STORE_HELD 4

typedef struct store {
    llmc_tier_t tier;
    llmc_entry_t *held[FAKE_STORE_HELD]; /* NULL: an empty place */
} store_t;

static int store_get(llmc_tier_t *t, const llmc_key_t *key, int64_t now_ms, llmc_entry_t **out)
{
    store_t *st = t->impl;
    (void)now_ms;
    for (int i = 0; i < FAKE_STORE_HELD; i++)
        if (st->held[i] && memcmp(st->held[i]->key.b, key->b, LLMC_KEY_LEN) == 0) {
            *out = llmc_entry_ref(st->held[i]);
            return 0;
        }
    return LLMC_ENOENT;
}

static const llmc_tier_ops_t store_ops = {.name = "store", .get = store_get};

#endif
