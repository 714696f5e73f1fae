/*
 * tier/memory.c: the memory tier, a thin adapter from llmc_tier_ops_t to the
 * in-memory cache.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Hits and misses are counted here, not in the cache, because only the
 *   tier knows a lookup is a client lookup; they are atomics since every
 *   loop thread calls get(). A stale entry found is a hit: freshness is the
 *   gateway's decision, not the tier's.
 * - A key purge is a delete (one shard, one lock); every other selector
 *   walks all shards through llmc_cache_purge with llmc_purge_match.
 * - The tier struct embeds the llmc_tier_t, so impl and the tier are one
 *   allocation and the adapter needs no lookups.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "llmc/error.h"
#include "tier/memory.h"

typedef struct memory_tier {
    llmc_tier_t tier;
    llmc_cache_t *cache;
    _Atomic uint64_t hits, misses;
} memory_tier_t;

static memory_tier_t *impl(llmc_tier_t *t)
{
    return t->impl;
}

static int mem_get(llmc_tier_t *t, const llmc_key_t *key, int64_t now_ms, llmc_entry_t **out)
{
    memory_tier_t *m = impl(t);
    int rc = llmc_cache_get(m->cache, key, now_ms, out);

    atomic_fetch_add_explicit(rc == 0 ? &m->hits : &m->misses, 1, memory_order_relaxed);
    return rc;
}

static int mem_put(llmc_tier_t *t, unsigned worker, llmc_entry_t *e, int64_t now_ms)
{
    (void)worker;
    return llmc_cache_put(impl(t)->cache, e, now_ms);
}

static bool match_sel(const llmc_entry_t *e, void *arg)
{
    return llmc_purge_match(arg, e);
}

static void mem_purge(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                      llmc_tier_purge_cb done, void *arg)
{
    llmc_cache_t *c = impl(t)->cache;
    size_t n;

    (void)worker;
    if (llmc_purge_is_key(sel))
        n = llmc_cache_delete(c, &sel->key) == 0 ? 1 : 0;
    else
        n = llmc_cache_purge(c, match_sel, (void *)sel);
    done(arg, n);
}

static void mem_tick(llmc_tier_t *t, int64_t now_ms)
{
    llmc_cache_sweep(impl(t)->cache, now_ms, LLMC_TIER_MEMORY_SWEEP_BUDGET);
}

static void mem_stats(llmc_tier_t *t, llmc_tier_stats_t *out)
{
    memory_tier_t *m = impl(t);
    llmc_cache_stats_t cs;

    llmc_cache_stats(m->cache, &cs);
    *out = (llmc_tier_stats_t){
        .entries = cs.entries,
        .bytes = cs.bytes,
        .max_bytes = cs.max_bytes,
        .hits = atomic_load_explicit(&m->hits, memory_order_relaxed),
        .misses = atomic_load_explicit(&m->misses, memory_order_relaxed),
        .stored = cs.stored,
        .evicted_size = cs.evicted_size,
        .evicted_ttl = cs.evicted_ttl,
        .purged = cs.purged,
        /* A refused oversized answer is a write the tier dropped. */
        .dropped = cs.too_big,
    };
}

static void mem_destroy(llmc_tier_t *t)
{
    memory_tier_t *m = impl(t);

    llmc_cache_free(m->cache);
    free(m);
}

static size_t mem_max_body(llmc_tier_t *t)
{
    return llmc_cache_entry_limit(impl(t)->cache);
}

static const llmc_tier_ops_t memory_ops = {
    .name = "memory",
    .get = mem_get,
    .max_body = mem_max_body,
    .put = mem_put,
    .purge = mem_purge,
    .tick = mem_tick,
    .stats = mem_stats,
    .destroy = mem_destroy,
};

llmc_tier_t *llmc_tier_memory_new(llmc_cache_t *c)
{
    memory_tier_t *m;

    if (!c)
        return NULL;
    m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->tier.ops = &memory_ops;
    m->tier.impl = m;
    m->cache = c;
    atomic_init(&m->hits, 0);
    atomic_init(&m->misses, 0);
    return &m->tier;
}

llmc_cache_t *llmc_tier_memory_cache(llmc_tier_t *t)
{
    return impl(t)->cache;
}
