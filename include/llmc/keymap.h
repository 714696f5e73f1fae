/*
 * llmc/keymap.h: a hash map from a 32-byte key (llmc_key_t) to a small
 * fixed-size value, for structures that index cache entries by their key.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Keys are SHA-256 outputs, so the map does not hash them again: the
 *   first 8 bytes, spread by one multiply, pick the home slot. Two keys are
 *   equal only when all 32 bytes are.
 * - Open addressing with linear probing, kept at most half full (the table
 *   doubles before it would pass that), and deletion shifts the entries
 *   after the hole back instead of leaving tombstones: a lookup never walks
 *   more than the run its key hashes into, however many deletes came before.
 * - Every map has an explicit bound on its entries, given at init: an insert
 *   past it fails with LLMC_EFULL instead of growing without end.
 * - The value is vsize bytes (at most LLMC_KEYMAP_MAX_VALUE), stored inline
 *   and aligned for any scalar up to 8 bytes. A pointer to a value stays
 *   valid only until the next insert or delete: either may move entries.
 * - No lock and no allocator other than malloc: the owner serialises calls.
 *   The struct is public so owners can embed it; its fields are private.
 */
#ifndef LLMC_KEYMAP_H
#define LLMC_KEYMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmc/entry.h"

#define LLMC_KEYMAP_MAX_VALUE 64

typedef struct llmc_keymap {
    llmc_key_t *keys; /* cap of them; NULL until the first insert */
    uint8_t *vals;    /* cap values, stride bytes apart */
    uint8_t *used;    /* cap flags */
    size_t cap, count, max, vsize, stride;
    unsigned shift;   /* 64 - log2(cap) */
} llmc_keymap_t;

/* An empty map of values of vsize bytes (1..LLMC_KEYMAP_MAX_VALUE) holding
   at most max (>= 1) entries. Allocates nothing. */
void llmc_keymap_init(llmc_keymap_t *m, size_t vsize, size_t max);

/* Frees the table; the map is empty (and usable) again. */
void llmc_keymap_fini(llmc_keymap_t *m);

/* key's value, or NULL when it is not in the map. */
void *llmc_keymap_find(const llmc_keymap_t *m, const llmc_key_t *key);

/* Adds key with a zeroed value: 0, with *val pointing at that value for the
   caller to fill. LLMC_EEXIST when key is already there (*val points at its
   value, unchanged); LLMC_EFULL at the bound; LLMC_ENOMEM when the table
   could not grow (the map is unchanged either way). */
int llmc_keymap_insert(llmc_keymap_t *m, const llmc_key_t *key, void **val);

/* Removes key: true when it was there. Copy the value out first if needed. */
bool llmc_keymap_delete(llmc_keymap_t *m, const llmc_key_t *key);

static inline size_t llmc_keymap_count(const llmc_keymap_t *m)
{
    return m->count;
}

/* Iteration: start with *pos = 0; each true gives the next entry's key and
   value. The map must not change while iterating. */
bool llmc_keymap_next(const llmc_keymap_t *m, size_t *pos, const llmc_key_t **key, void **val);

#endif
