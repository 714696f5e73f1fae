/*
 * test_disk_dict.c: the disk tier's census of the compression dictionaries
 * its records use (src/tier/disk.c, src/core/zdict.c; issue 18): a
 * dictionary is kept while a record or a memory entry uses it and freed,
 * its file deleted, once neither does and it is not current; a record
 * written while a census runs keeps its dictionary; after a restart the
 * dictionaries no record uses go and every record still reads; a record
 * the census cannot read keeps everything until it is gone.
 *
 * The tier's file is included so that a test can drive a census step by
 * step (census_step, with a small census_chunk) while the writer thread
 * is idle, and write a record of another format straight into LMDB.
 */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "tier/disk.c"
#include "tier_purge_now.h"

#define NOW 1700000000000LL

typedef struct fixture {
    char root[64];
    char dir[96];
} fixture_t;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    strcpy(f->root, "/tmp/llmc-dictgc-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->dir, sizeof f->dir, "%s/data", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    llmc_zdict_shutdown();
    nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ---- answers and entries ---- */

static const char *const words[] = {
    "the", "cache", "server", "returns", "a", "summary", "of", "each", "record", "when",
    "model", "request", "is", "large", "before", "deadline", "user", "profile", "reads",
    "quickly", "network", "latency", "improves", "budget", "report", "monthly", "garden",
    "planet", "river", "explains", "carefully", "without", "blocking", "loop", "values",
};

static uint64_t rng = 88172645463325252ULL;

static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* A chat.completion answer of about n bytes of varied text (malloc'd). */
static char *answer(size_t n)
{
    size_t cap = n + 1024, len = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    len += (size_t)snprintf(b, cap, "{\"id\":\"chatcmpl-%08x%08x\",\"object\":\"chat.completion\","
                            "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{"
                            "\"role\":\"assistant\",\"content\":\"", next(), next());
    while (len < n) {
        const char *w = words[next() % (sizeof words / sizeof words[0])];
        len += (size_t)snprintf(b + len, cap - len, "%s%s", w, next() % 9 ? " " : ". ");
    }
    snprintf(b + len, cap - len, "\"},\"finish_reason\":\"stop\"}],\"usage\":{\"total_tokens\":%u}}",
             next() % 1800);
    return b;
}

/* Key i: i big-endian first, so that keys sort as their numbers. */
static llmc_key_t key_of(uint32_t i)
{
    llmc_key_t k;
    for (int j = 0; j < LLMC_KEY_LEN; j++)
        k.b[j] = (uint8_t)(0x5a ^ j);
    k.b[0] = (uint8_t)(i >> 24);
    k.b[1] = (uint8_t)(i >> 16);
    k.b[2] = (uint8_t)(i >> 8);
    k.b[3] = (uint8_t)i;
    return k;
}

/* The bodies put, by key number, to check what reads back. */
#define NKEYS 64
static char *bodies[NKEYS];

/* Puts key i with a new answer; a small one is stored as it is. */
static void put_answer(llmc_tier_t *t, uint32_t i, int64_t ttl_ms, const char *ns, bool small)
{
    assert_true(i < NKEYS);
    free(bodies[i]);
    bodies[i] = small ? strdup("{\"small\":true}") : answer(600 + next() % 1500);
    llmc_key_t k = key_of(i);
    llmc_entry_spec_t s = {
        .key = &k, .status = 200, .created_ms = NOW, .expires_ms = NOW + ttl_ms,
        .content_type = "application/json", .ns = ns, .model = "gpt-4o-mini",
        .route = "/v1/chat/completions", .body = bodies[i], .body_len = strlen(bodies[i]),
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    assert_non_null(e);
    assert_int_equal(t->ops->put(t, 0, e, NOW), 0);
    llmc_entry_unref(e);
}

static void put(llmc_tier_t *t, uint32_t i, int64_t ttl_ms, const char *ns)
{
    put_answer(t, i, ttl_ms, ns, false);
}

/* True when key i reads back with the body put under it. */
static bool reads(llmc_tier_t *t, uint32_t i)
{
    llmc_key_t k = key_of(i);
    llmc_entry_t *e = NULL;
    if (t->ops->get(t, &k, NOW, &e) != 0)
        return false;
    assert_int_equal(e->body_len, strlen(bodies[i]));
    assert_memory_equal(e->body, bodies[i], e->body_len);
    llmc_entry_unref(e);
    return true;
}

/* The dictionary key i's record names, read from LMDB; -1: no record. */
static int64_t dict_of(llmc_tier_t *t, uint32_t i)
{
    disk_t *d = t->impl;
    llmc_key_t k = key_of(i);
    MDB_txn *txn;
    MDB_val mk = { LLMC_KEY_LEN, k.b }, v;
    uint32_t id = 0;
    int64_t out = -1;
    assert_int_equal(mdb_txn_begin(d->env, NULL, MDB_RDONLY, &txn), 0);
    if (mdb_get(txn, d->entries, &mk, &v) == 0) {
        assert_int_equal(llmc_record_peek_dict(v.mv_data, v.mv_size, &id), 0);
        out = id;
    }
    mdb_txn_abort(txn);
    return out;
}

/* ---- the tier and the dictionaries ---- */

static llmc_tier_t *open_tier(const fixture_t *f, int64_t census_ms)
{
    llmc_disk_config_t c = {
        .path = f->dir, .sync = LLMC_DISK_SYNC_PERIODIC, .sync_interval_ms = 60000,
        .max_bytes = 64u << 20, .queue_len = 100000, .dict_census_ms = census_ms,
    };
    llmc_tier_t *t = NULL;
    char err[256] = "";
    int rc = llmc_tier_disk_open(&c, &t, err, sizeof err);
    if (rc)
        fail_msg("open: %s: %s", llmc_errname(rc), err);
    /* As the gateway: the dictionaries live beside the data file. */
    llmc_zdict_opts_t o = { .on = true, .min_bytes = 256 };
    assert_int_equal(llmc_zdict_init(&o, f->dir, err, sizeof err), 0);
    return t;
}

static void close_tier(llmc_tier_t *t)
{
    t->ops->destroy(t);
    llmc_zdict_shutdown();
}

/* Trains a new current dictionary from fresh samples; returns its id. */
static uint32_t train(void)
{
    for (int i = 0; i < 300; i++) {
        char *b = answer(300 + next() % 2000);
        llmc_zdict_sample(b, strlen(b));
        free(b);
    }
    assert_int_equal(llmc_zdict_train_now(), 0);
    llmc_zdict_stats_t st;
    llmc_zdict_get_stats(&st);
    return st.current;
}

static bool dict_file(const fixture_t *f, uint32_t id)
{
    char path[160];
    snprintf(path, sizeof path, "%s/zdict-%u", f->dir, id);
    return access(path, F_OK) == 0;
}

static llmc_zdict_stats_t zstats(void)
{
    llmc_zdict_stats_t st;
    llmc_zdict_get_stats(&st);
    return st;
}

static disk_xstats_t xstats(llmc_tier_t *t)
{
    disk_xstats_t x;
    t->ops->xstats(t, &x);
    return x;
}

static uint64_t stats_errors(llmc_tier_t *t)
{
    llmc_tier_stats_t s;
    t->ops->stats(t, &s);
    return s.errors;
}

static void purge_ns(llmc_tier_t *t, const char *ns)
{
    llmc_purge_t sel = { .conds = LLMC_PURGE_NAMESPACE, .ns = ns };
    purge_now(t, &sel);
    llmc_tier_disk_flush(t);
}

/* ---- tests ---- */

/* Kept while one record names it, through an expiry and a purge of the
   others; freed with its file once the last goes. The current one stays. */
static void test_freed_after_its_last_record_goes(void **state)
{
    fixture_t *f = *state;
    llmc_tier_t *t = open_tier(f, 0);
    assert_int_equal(train(), 1);
    put(t, 1, 1000, "a");      /* expires first */
    put(t, 2, 3600000, "a");
    put(t, 3, 3600000, "b");
    llmc_tier_disk_flush(t);
    assert_int_equal(dict_of(t, 1), 1);
    assert_int_equal(dict_of(t, 3), 1);
    assert_int_equal(train(), 2);
    put(t, 4, 3600000, "c");
    llmc_tier_disk_flush(t);
    assert_int_equal(dict_of(t, 4), 2);

    llmc_tier_disk_census(t);
    assert_true(dict_file(f, 1));
    assert_int_equal(zstats().count, 2);
    assert_int_equal(zstats().pinned, 2);

    /* The expiry sweep takes record 1; 2 and 3 still name dictionary 1. */
    t->ops->tick(t, NOW + 1001);
    llmc_tier_disk_flush(t);
    assert_int_equal(dict_of(t, 1), -1);
    llmc_tier_disk_census(t);
    assert_true(dict_file(f, 1));
    purge_ns(t, "a");
    llmc_tier_disk_census(t);
    assert_true(dict_file(f, 1));
    assert_int_equal(zstats().removed, 0);
    assert_true(reads(t, 3));

    /* The last one goes. */
    purge_ns(t, "b");
    llmc_tier_disk_census(t);
    assert_false(dict_file(f, 1));
    assert_true(dict_file(f, 2));
    llmc_zdict_stats_t st = zstats();
    assert_int_equal(st.count, 1);
    assert_int_equal(st.current, 2);
    assert_int_equal(st.removed, 1);
    assert_int_equal(st.unpinned, 1);
    disk_xstats_t x = xstats(t);
    assert_int_equal(x.dicts_unpinned, 1);
    assert_int_equal(x.dicts_removed, 1);
    assert_int_equal(x.dicts, 1);
    assert_int_equal(x.dict_current, 2);
    assert_true(x.dict_censuses >= 4);
    assert_true(reads(t, 4));

    /* The current dictionary stays with no record naming it. */
    purge_ns(t, "c");
    llmc_tier_disk_census(t);
    assert_true(dict_file(f, 2));
    assert_int_equal(zstats().count, 1);
    assert_int_equal(stats_errors(t), 0);
    close_tier(t);
}

/* A memory entry's hold outlives the census: unpinned, the dictionary is
   freed (and its file deleted) only when the hold is given back. */
static void test_a_memory_hold_keeps_it_past_the_census(void **state)
{
    fixture_t *f = *state;
    llmc_tier_t *t = open_tier(f, 0);
    assert_int_equal(train(), 1);
    put(t, 1, 3600000, "a");
    llmc_tier_disk_flush(t);
    char *b = answer(1500);
    uint8_t *z = NULL;
    size_t zl;
    uint32_t held = 0;
    assert_int_equal(llmc_zdict_pack_held(b, strlen(b), &z, &zl, &held), 1);
    assert_int_equal(held, 1);
    assert_int_equal(train(), 2);
    purge_ns(t, "a");
    llmc_tier_disk_census(t);
    assert_int_equal(zstats().unpinned, 1);
    assert_int_equal(zstats().removed, 0);
    assert_true(dict_file(f, 1));
    /* Still decodes what it packed. */
    char *out = malloc(strlen(b));
    assert_int_equal(llmc_zdict_unpack(1, z, zl, out, strlen(b)), 0);
    assert_memory_equal(out, b, strlen(b));
    llmc_zdict_drop(held);
    assert_false(dict_file(f, 1));
    assert_int_equal(zstats().removed, 1);
    free(out);
    free(z);
    free(b);
    close_tier(t);
}

/* The census reads records a chunk at a time, writes going on between
   chunks. A record written meanwhile, behind where the census has read,
   with the dictionary that was current when it began (and is no longer
   when it ends), keeps that dictionary: only dictionaries that were not
   current when the census began are its candidates. (Every other record
   names no dictionary, so nothing but that one record could keep it.) */
static void test_a_record_written_during_a_census_keeps_its_dictionary(void **state)
{
    fixture_t *f = *state;
    llmc_tier_t *t = open_tier(f, 0);
    disk_t *d = t->impl;
    assert_int_equal(train(), 1);
    for (uint32_t i = 10; i < 16; i++)
        put(t, i, 3600000, "old");
    llmc_tier_disk_flush(t);
    assert_int_equal(train(), 2);
    put(t, 40, 3600000, "old");        /* pins 2, as a current dictionary usually is */
    for (uint32_t i = 20; i < 30; i++)
        put_answer(t, i, 3600000, "mid", true);
    llmc_tier_disk_flush(t);
    assert_int_equal(dict_of(t, 40), 2);
    purge_ns(t, "old");               /* dictionaries 1 and 2: no record left */
    assert_int_equal(dict_of(t, 20), 0);
    assert_int_equal(zstats().pinned, 2);

    /* The writer is idle (flushed): this thread takes its part. */
    d->census_chunk = 2;
    assert_true(census_step(d));       /* read keys 20 and 21 */
    put(t, 1, 3600000, "new");         /* sorts before them */
    llmc_tier_disk_flush(t);
    assert_int_equal(dict_of(t, 1), 2);
    assert_int_equal(train(), 3);      /* 2 is no longer current */
    while (census_step(d)) {
    }
    assert_false(dict_file(f, 1));
    assert_true(dict_file(f, 2));
    assert_int_equal(zstats().unpinned, 1);
    assert_true(reads(t, 1));

    /* The next census has 2 as a candidate, and finds key 1 naming it. */
    d->census_chunk = CENSUS_CHUNK;
    llmc_tier_disk_census(t);
    assert_true(dict_file(f, 2));
    assert_int_equal(zstats().unpinned, 1);
    assert_true(reads(t, 1));
    close_tier(t);
    t = open_tier(f, 0);
    assert_true(reads(t, 1));
    close_tier(t);
}

/* Dictionaries loaded at start are pinned until a census (here the one
   tick queues) finds which records name them: the unused ones go, the
   rest and the current one stay, and every record still reads, then and
   after another restart. */
static void test_after_a_restart_unused_dictionaries_go(void **state)
{
    fixture_t *f = *state;
    llmc_tier_t *t = open_tier(f, 0);
    assert_int_equal(train(), 1);
    for (uint32_t i = 1; i <= 5; i++)
        put(t, i, 3600000, "d1");
    llmc_tier_disk_flush(t);
    assert_int_equal(train(), 2);
    for (uint32_t i = 6; i <= 10; i++)
        put(t, i, 3600000, "d2");
    llmc_tier_disk_flush(t);
    assert_int_equal(train(), 3);
    for (uint32_t i = 11; i <= 12; i++)
        put(t, i, 3600000, "d3");
    llmc_tier_disk_flush(t);
    assert_int_equal(train(), 4);
    purge_ns(t, "d2");
    close_tier(t);  /* no census ran: every file is still there */
    for (uint32_t id = 1; id <= 4; id++)
        assert_true(dict_file(f, id));

    t = open_tier(f, 60000);
    assert_int_equal(zstats().count, 4);
    assert_int_equal(zstats().pinned, 4);
    t->ops->tick(t, NOW);
    for (int i = 0; i < 500 && xstats(t).dict_censuses == 0; i++)
        nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
    assert_int_equal(xstats(t).dict_censuses, 1);
    assert_true(dict_file(f, 1));
    assert_false(dict_file(f, 2));
    assert_true(dict_file(f, 3));
    assert_true(dict_file(f, 4));
    assert_int_equal(zstats().count, 3);
    assert_int_equal(zstats().current, 4);
    /* Not due again before the interval. */
    t->ops->tick(t, NOW + 1000);
    llmc_tier_disk_flush(t);
    assert_int_equal(xstats(t).dict_censuses, 1);
    for (uint32_t i = 1; i <= 12; i++)
        assert_true(reads(t, i) == (i < 6 || i > 10));
    close_tier(t);

    t = open_tier(f, 0);
    assert_int_equal(zstats().count, 3);
    llmc_tier_disk_census(t);
    assert_int_equal(zstats().count, 3);
    for (uint32_t i = 1; i <= 12; i++)
        assert_true(reads(t, i) == (i < 6 || i > 10));
    close_tier(t);
}

static void reseal(const llmc_key_t *k, uint8_t *buf, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_true(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL));
    assert_true(EVP_DigestUpdate(ctx, k->b, LLMC_KEY_LEN));
    assert_true(EVP_DigestUpdate(ctx, buf, len - 8));
    assert_true(EVP_DigestFinal_ex(ctx, md, NULL));
    EVP_MD_CTX_free(ctx);
    memcpy(buf + len - 8, md, 8);
}

/* A sound record of another format might name any dictionary: the census
   that meets it frees nothing and queues its removal; the next one, with
   the record gone, frees the unused dictionary. */
static void test_a_record_of_another_format_holds_the_census(void **state)
{
    fixture_t *f = *state;
    llmc_tier_t *t = open_tier(f, 0);
    disk_t *d = t->impl;
    assert_int_equal(train(), 1);
    put(t, 1, 3600000, "a");
    llmc_tier_disk_flush(t);
    assert_int_equal(train(), 2);
    purge_ns(t, "a");

    /* Key 7: a version 9 record, checksum and all. */
    llmc_key_t k = key_of(7);
    char *b = answer(800);
    llmc_entry_spec_t s = {
        .key = &k, .status = 200, .created_ms = NOW, .expires_ms = NOW + 3600000,
        .content_type = "application/json", .ns = "x", .model = "m", .body = b,
        .body_len = strlen(b),
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    uint8_t *rec;
    size_t len;
    assert_int_equal(llmc_record_encode(e, &rec, &len), 0);
    rec[2] = 9;
    reseal(&k, rec, len);
    MDB_txn *txn;
    MDB_val mk = { LLMC_KEY_LEN, k.b }, mv = { len, rec };
    assert_int_equal(mdb_txn_begin(d->env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_put(txn, d->entries, &mk, &mv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);

    llmc_tier_disk_census(t);
    assert_true(dict_file(f, 1));
    assert_int_equal(zstats().unpinned, 0);
    assert_int_equal(xstats(t).dict_censuses, 0);
    llmc_tier_disk_flush(t);           /* the queued removal */
    assert_int_equal(dict_of(t, 7), -1);
    llmc_tier_disk_census(t);
    assert_false(dict_file(f, 1));
    assert_int_equal(xstats(t).dict_censuses, 1);
    free(rec);
    llmc_entry_unref(e);
    free(b);
    close_tier(t);
}

/* At LLMC_ZDICT_MAX dictionaries training cannot add one (and leaves no
   file behind); once a census frees those no record uses, it can again. */
static void test_training_resumes_once_old_dictionaries_go(void **state)
{
    fixture_t *f = *state;
    llmc_tier_t *t = open_tier(f, 0);
    assert_int_equal(train(), 1);
    for (uint32_t id = 1; id <= LLMC_ZDICT_MAX; id++) {
        if (id > 1)
            assert_int_equal(llmc_zdict_train_now(), 0); /* the samples held */
        assert_int_equal(zstats().current, id);
        put(t, id % NKEYS, 3600000, id < LLMC_ZDICT_MAX ? "old" : "last");
        llmc_tier_disk_flush(t);     /* pinned by its record */
    }
    assert_int_equal(zstats().count, LLMC_ZDICT_MAX);
    assert_int_equal(llmc_zdict_train_now(), LLMC_EFULL);
    assert_false(dict_file(f, LLMC_ZDICT_MAX + 1));
    llmc_tier_disk_census(t);
    assert_int_equal(zstats().count, LLMC_ZDICT_MAX);
    purge_ns(t, "old");
    llmc_tier_disk_census(t);
    assert_int_equal(zstats().count, 1);
    assert_int_equal(zstats().removed, LLMC_ZDICT_MAX - 1);
    assert_int_equal(llmc_zdict_train_now(), 0);
    assert_int_equal(zstats().current, LLMC_ZDICT_MAX + 2); /* ids are never reused */
    assert_true(dict_file(f, LLMC_ZDICT_MAX));
    assert_true(reads(t, LLMC_ZDICT_MAX % NKEYS));
    close_tier(t);
}

/* llmc_record_peek_dict reads the id a record decodes with, or 0. */
static void test_peek_dict_matches_the_record(void **state)
{
    (void)state;
    llmc_zdict_opts_t o = { .on = true, .min_bytes = 256 };
    assert_int_equal(llmc_zdict_init(&o, NULL, NULL, 0), 0);
    llmc_key_t k = key_of(3);
    const char *small = "{\"tiny\":1}";
    char *b = answer(1200);
    const char *sizes[] = { small, b };
    uint32_t want[] = { 0, 0, 0, 1 };
    for (int round = 0; round < 2; round++) {
        for (int j = 0; j < 2; j++) {
            llmc_entry_spec_t s = {
                .key = &k, .status = 200, .created_ms = NOW, .expires_ms = NOW + 1,
                .content_type = "application/json", .ns = "", .model = "m",
                .body = sizes[j], .body_len = strlen(sizes[j]),
            };
            llmc_entry_t *e = llmc_entry_new(&s);
            llmc_record_plan_t pl;
            assert_int_equal(llmc_record_plan(e, &pl), 0);
            uint8_t *buf = malloc(pl.size);
            assert_int_equal(llmc_record_plan_write(&pl, buf, pl.size), 0);
            uint32_t id = 99;
            assert_int_equal(llmc_record_peek_dict(buf, pl.size, &id), 0);
            assert_int_equal(id, want[round * 2 + j]);
            assert_int_equal(id, pl.dict_id);
            /* Cut short or lying about its body section: refused, in bounds. */
            assert_int_equal(llmc_record_peek_dict(buf, 40, &id), LLMC_ECORRUPT);
            buf[63] = 0x7f;
            assert_int_equal(llmc_record_peek_dict(buf, pl.size, &id), LLMC_ECORRUPT);
            free(buf);
            llmc_record_plan_free(&pl);
            llmc_entry_unref(e);
        }
        if (round == 0)
            assert_int_equal(train(), 1);
    }
    free(b);
    llmc_zdict_shutdown();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_freed_after_its_last_record_goes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_memory_hold_keeps_it_past_the_census, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_record_written_during_a_census_keeps_its_dictionary,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_after_a_restart_unused_dictionaries_go, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_record_of_another_format_holds_the_census, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_training_resumes_once_old_dictionaries_go, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_peek_dict_matches_the_record, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < NKEYS; i++)
        free(bodies[i]);
    return rc;
}
