/*
 * llmc/cache.h: the in-memory cache of entries (the first tier).
 *
 * A hash table of entries keyed by llmc_key_t, split into shards that each
 * have their own lock, so that loop threads rarely meet. Each shard keeps a
 * SIEVE queue (Zhang et al., NSDI '24) and its own share of the byte budget;
 * eviction is per shard, so the whole cache stays within max_bytes.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Time is an argument (now_ms); the cache never reads a clock.
 * - An entry stays in the cache until expires_ms + keep_stale_ms, so that a
 *   stale answer can still be served (max-stale, stale-if-error). Whether an
 *   entry found by llmc_cache_get is fresh is the caller's decision.
 * - get() hands out a reference; an evicted entry that is still being sent
 *   lives on until the last llmc_entry_unref.
 * - Bytes are measured (the size of the entry's block as its allocator
 *   handed it out, plus the per-entry table overhead), not estimated.
 */
#ifndef LLMC_CACHE_H
#define LLMC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmc/entry.h"

typedef struct llmc_cache llmc_cache_t;

typedef struct llmc_cache_config {
    size_t max_bytes;        /* budget for entries and their metadata */
    unsigned nshards;        /* power of two; 0 picks a default */
    double max_entry_share;  /* an entry bigger than this share of max_bytes is refused */
    int64_t keep_stale_ms;   /* how long past expiry an entry is kept */
} llmc_cache_config_t;

typedef struct llmc_cache_stats {
    uint64_t entries;
    uint64_t bytes;          /* held now */
    uint64_t max_bytes;
    uint64_t stored;         /* successful puts */
    uint64_t too_big;        /* puts refused by max_entry_share */
    uint64_t evicted_size;   /* removed by SIEVE to make room */
    uint64_t evicted_ttl;    /* removed because expired (sweep or get) */
    uint64_t purged;         /* removed by delete or purge */
} llmc_cache_stats_t;

/* Creates an empty cache. Returns NULL when out of memory or cfg is invalid. */
llmc_cache_t *llmc_cache_new(const llmc_cache_config_t *cfg);

/* Frees the cache, dropping its reference on every entry. No other thread may use it. */
void llmc_cache_free(llmc_cache_t *c);

/*
 * Looks up key. Returns 0 and a new reference in *out when an entry is held
 * and now_ms < expires_ms + keep_stale_ms (it may be stale: compare
 * expires_ms yourself); LLMC_ENOENT otherwise. An entry found past its keep
 * time is removed (counted as evicted_ttl). Marks the entry visited for
 * SIEVE. Any thread.
 */
int llmc_cache_get(llmc_cache_t *c, const llmc_key_t *key, int64_t now_ms, llmc_entry_t **out);

/*
 * Stores e under e->key, replacing any entry with that key, and evicts with
 * SIEVE until the shard is within its budget. Takes its own reference; the
 * caller keeps theirs. Returns 0, or LLMC_E2BIG when e is bigger than
 * max_entry_share of the budget (e is not stored, and the entry it would
 * have replaced is removed all the same), or LLMC_EINVAL when e already
 * sits in a cache. Any thread.
 */
int llmc_cache_put(llmc_cache_t *c, llmc_entry_t *e, int64_t now_ms);

/* Removes the entry under key. Returns 0 or LLMC_ENOENT. Any thread. */
int llmc_cache_delete(llmc_cache_t *c, const llmc_key_t *key);

/*
 * Removes every entry for which match returns true (counted as purged) and
 * returns how many. match runs with a shard lock held: it must not call
 * back into the cache. Any thread.
 */
/* The largest charge (llmc__cache_charge: an entry's block and its share of
   the table) the cache takes; a bigger entry is refused with LLMC_E2BIG.
   An entry is never charged less than its body, so a body longer than this
   is refused whatever else it carries. Any thread. */
size_t llmc_cache_entry_limit(const llmc_cache_t *c);

size_t llmc_cache_purge(llmc_cache_t *c, bool (*match)(const llmc_entry_t *e, void *arg), void *arg);

/*
 * Incremental background expiry: examines at most budget entries, resuming
 * where the previous call stopped, and removes those past expires_ms +
 * keep_stale_ms. Returns how many it removed. Call it often with a small
 * budget; it never holds one lock for longer than one shard's slice.
 */
size_t llmc_cache_sweep(llmc_cache_t *c, int64_t now_ms, size_t budget);

/* Fills *out with a consistent-enough snapshot of the counters. Any thread. */
void llmc_cache_stats(llmc_cache_t *c, llmc_cache_stats_t *out);

#endif
