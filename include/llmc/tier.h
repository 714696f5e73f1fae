/*
 * llmc/tier.h: the one interface every cache tier implements.
 *
 * A lookup walks an ordered list of tiers (memory, then disk; later the
 * shared Redis tier and the semantic tier). A hit in a slower tier is
 * promoted into the faster ones. A purge is sent to every tier, so that an
 * invalidated answer cannot come back from a lower one.
 *
 * Today every get() answers at once: the memory tier from its hash table,
 * the disk tier from LMDB's memory map, which never takes a write lock.
 * A tier whose get() must wait on a network (Redis) will answer LLMC_EAGAIN
 * and finish through a callback; that is added with the first such tier.
 */
#ifndef LLMC_TIER_H
#define LLMC_TIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmc/entry.h"

typedef struct llmc_tier llmc_tier_t;

/* What a purge removes. */
typedef enum llmc_purge_kind {
    LLMC_PURGE_ALL,
    LLMC_PURGE_KEY,        /* one entry: key */
    LLMC_PURGE_NAMESPACE,  /* every entry whose ns equals value */
    LLMC_PURGE_TAG,        /* every entry carrying tag value */
    LLMC_PURGE_MODEL,      /* every entry whose model equals value */
} llmc_purge_kind_t;

typedef struct llmc_purge {
    llmc_purge_kind_t kind;
    llmc_key_t key;
    const char *value;
} llmc_purge_t;

/* True when e is selected by sel. */
bool llmc_purge_match(const llmc_purge_t *sel, const llmc_entry_t *e);

typedef struct llmc_tier_stats {
    uint64_t entries, bytes, max_bytes;
    uint64_t hits, misses, stored, evicted_size, evicted_ttl, purged;
    uint64_t errors;       /* failed reads/writes, corrupt records */
    uint64_t dropped;      /* writes dropped (full queue) */
} llmc_tier_stats_t;

typedef struct llmc_tier_ops {
    const char *name; /* "memory", "disk", ... shown in Cache-Status and /stats */
    /* 0 and a new reference in *out, or LLMC_ENOENT. May return a stale entry
       kept for stale serving; the caller compares expires_ms. */
    int (*get)(llmc_tier_t *t, const llmc_key_t *key, int64_t now_ms, llmc_entry_t **out);
    /* Stores (or queues) e, taking its own reference. 0 or LLMC_E*. */
    int (*put)(llmc_tier_t *t, llmc_entry_t *e, int64_t now_ms);
    /* Removes what sel selects; returns how many were removed (or queued). */
    size_t (*purge)(llmc_tier_t *t, const llmc_purge_t *sel);
    /* Background upkeep (expiry sweeps); called from a timer with a budget. */
    void (*tick)(llmc_tier_t *t, int64_t now_ms);
    void (*stats)(llmc_tier_t *t, llmc_tier_stats_t *out);
    void (*destroy)(llmc_tier_t *t);
} llmc_tier_ops_t;

struct llmc_tier {
    const llmc_tier_ops_t *ops;
    void *impl;
};

#endif
