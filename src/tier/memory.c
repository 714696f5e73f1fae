/*
 * tier/memory.c: the memory tier, an adapter from llmc_tier_ops_t to the
 * in-memory cache, which keeps answers compressed at rest (issue 18).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Two caches share --max-memory: the main one holds every entry, packed
 *   (llmc_entry_pack: zstd with the current dictionary) when that pays;
 *   the hot set, a share of the budget with its own SIEVE queue, holds the
 *   unpacked copies of packed entries that were hit lately. A lookup asks
 *   the hot set first, so a popular answer is served from the same kind of
 *   entry as before compression existed, with no decompression per hit;
 *   only a hit on a cold packed entry decompresses, once, and puts the
 *   result in the hot set. Each cache charges the bytes it really holds.
 * - The main cache is the truth: a hot copy exists only while its packed
 *   original is (or was, an instant ago) in the main cache. A store or a
 *   purge changes the main cache first and the hot set after it; a cold
 *   hit puts its copy in the hot set first and then checks that the main
 *   cache still holds the entry it unpacked, removing the copy otherwise.
 *   Whatever the interleaving, a copy of a replaced or purged answer is
 *   removed by one of the two (see mem_get).
 * - Packing at store and unpacking at a cold hit run on the caller's
 *   thread, a loop thread: bodies above pack_max (--memory-compress-max)
 *   are kept as they came, which bounds the time either takes there.
 * - A copy that outlives its original's eviction for room is still that
 *   key's latest answer, with the same times: serving it is right.
 * - Hits and misses are counted here, not in the cache, because only the
 *   tier knows a lookup is a client lookup; they are atomics since every
 *   loop thread calls get(). A stale entry found is a hit: freshness is the
 *   gateway's decision, not the tier's.
 * - A key purge is a delete (one shard, one lock); every other selector
 *   walks all shards through llmc_cache_purge with llmc_purge_match (a
 *   packed entry keeps every field a selector reads).
 * - The tier struct embeds the llmc_tier_t, so impl and the tier are one
 *   allocation and the adapter needs no lookups.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "llmc/error.h"
#include "llmc/zdict.h"
#include "tier/memory.h"

/* X(field, "name", KIND, "unit", "help"): this tier's own counters. The
   disk tier's stored_raw_bytes/stored_packed_bytes are raw_bytes and
   packed_bytes here: /metrics writes each tier's own counters as families
   of their own, and two tiers' families may not share a name. */
#define MEM_XSTATS_TABLE(X)                                                                  \
    X(raw_bytes, "raw_bytes", COUNTER, "bytes",                                              \
      "Answer bytes stored in the memory tier, before compression at rest.")                 \
    X(packed_bytes, "packed_bytes", COUNTER, "bytes",                                        \
      "The same answers' bytes as stored (compressed or not; --compress-at-rest).")          \
    X(hot_entries, "hot_entries", GAUGE, "entries",                                          \
      "Decompressed copies of compressed entries held for repeated hits.")                   \
    X(hot_bytes, "hot_bytes", GAUGE, "bytes", "Bytes the hot copies take.")                 \
    X(hot_max_bytes, "hot_max_bytes", GAUGE, "bytes",                                        \
      "The hot copies' share of --max-memory (--memory-hot-percent).")                       \
    X(hot_hits, "hot_hits", COUNTER, "lookups", "Hits served from a hot copy.")             \
    X(unpacks, "cold_unpacks", COUNTER, "lookups",                                           \
      "Hits on a compressed entry with no hot copy: decompressed once.")

typedef struct mem_xstats {
    MEM_XSTATS_TABLE(LLMC_STAT_FIELD)
} mem_xstats_t;

#define LLMC_STAT_TYPE mem_xstats_t
static const llmc_stat_desc_t xstats_desc[] = {MEM_XSTATS_TABLE(LLMC_STAT_DESC)};
#undef LLMC_STAT_TYPE

typedef struct memory_tier {
    llmc_tier_t tier;
    llmc_cache_t *cache;   /* every entry, packed when that pays */
    llmc_cache_t *hot;     /* unpacked copies of packed entries hit lately; NULL: none */
    size_t pack_max;       /* bodies above it are kept as they came */
    _Atomic uint64_t hits, misses, errors, hot_hits, unpacks, raw_bytes, packed_bytes;
} memory_tier_t;

static memory_tier_t *impl(llmc_tier_t *t)
{
    return t->impl;
}

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t load(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Puts full, unpacked from p, in the hot set while the main cache still
   holds p. A store or purge that replaced p in between changed the main
   cache before clearing the hot set: either it clears our copy, or the
   check below sees p gone and does. */
static void hot_add(memory_tier_t *m, const llmc_entry_t *p, llmc_entry_t *full, int64_t now_ms)
{
    llmc_entry_t *cur = NULL;

    if (!m->hot || llmc_cache_put(m->hot, full, now_ms) != 0)
        return;
    if (llmc_cache_get(m->cache, &p->key, now_ms, &cur) != 0 || cur != p)
        llmc_cache_delete(m->hot, &p->key);
    llmc_entry_unref(cur);
}

static int mem_get(llmc_tier_t *t, const llmc_key_t *key, int64_t now_ms, llmc_entry_t **out)
{
    memory_tier_t *m = impl(t);
    llmc_entry_t *e = NULL;

    if (m->hot && llmc_cache_get(m->hot, key, now_ms, out) == 0) {
        count(&m->hits, 1);
        count(&m->hot_hits, 1);
        return 0;
    }
    int rc = llmc_cache_get(m->cache, key, now_ms, &e);
    if (rc == 0 && llmc_entry_is_packed(e)) {
        llmc_entry_t *full = llmc_entry_unpack(e, &rc);
        if (full) {
            count(&m->unpacks, 1);
            hot_add(m, e, full, now_ms);
        } else {
            /* Only memory failing or a bug: the answer is asked again. */
            count(&m->errors, 1);
            rc = LLMC_ENOENT;
        }
        llmc_entry_unref(e);
        e = full;
    }
    *out = e;
    count(rc == 0 ? &m->hits : &m->misses, 1);
    return rc;
}

static int mem_put(llmc_tier_t *t, unsigned worker, llmc_entry_t *e, int64_t now_ms)
{
    memory_tier_t *m = impl(t);
    llmc_entry_t *p = e->body_len <= m->pack_max ? llmc_entry_pack(e) : NULL;
    int rc;

    (void)worker;
    /* Training still learns from what is kept as it came. */
    if (e->body_len > m->pack_max)
        llmc_zdict_sample(e->body, e->body_len);
    count(&m->raw_bytes, e->body_len);
    count(&m->packed_bytes, p ? p->body_len : e->body_len);
    rc = llmc_cache_put(m->cache, p ? p : e, now_ms);
    llmc_entry_unref(p);
    /* After the main cache: see hot_add. */
    if (m->hot)
        llmc_cache_delete(m->hot, &e->key);
    return rc;
}

static bool match_sel(const llmc_entry_t *e, void *arg)
{
    return llmc_purge_match(arg, e);
}

static size_t purge_one(llmc_cache_t *c, const llmc_purge_t *sel)
{
    if (llmc_purge_is_key(sel))
        return llmc_cache_delete(c, &sel->key) == 0 ? 1 : 0;
    return llmc_cache_purge(c, match_sel, (void *)sel);
}

static void mem_purge(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                      llmc_tier_purge_cb done, void *arg)
{
    memory_tier_t *m = impl(t);
    size_t n;

    (void)worker;
    n = purge_one(m->cache, sel);
    /* After the main cache (see hot_add); copies are not counted twice. */
    if (m->hot)
        purge_one(m->hot, sel);
    done(arg, n);
}

static void mem_tick(llmc_tier_t *t, int64_t now_ms)
{
    memory_tier_t *m = impl(t);

    llmc_cache_sweep(m->cache, now_ms, LLMC_TIER_MEMORY_SWEEP_BUDGET);
    if (m->hot)
        llmc_cache_sweep(m->hot, now_ms, LLMC_TIER_MEMORY_SWEEP_BUDGET);
}

static void hot_stats(memory_tier_t *m, llmc_cache_stats_t *hs)
{
    if (m->hot)
        llmc_cache_stats(m->hot, hs);
    else
        *hs = (llmc_cache_stats_t){0};
}

static void mem_stats(llmc_tier_t *t, llmc_tier_stats_t *out)
{
    memory_tier_t *m = impl(t);
    llmc_cache_stats_t cs, hs;

    llmc_cache_stats(m->cache, &cs);
    hot_stats(m, &hs);
    /* Entries and their fates are the main cache's (hot copies are copies);
       bytes are both caches', what the tier holds of --max-memory. */
    *out = (llmc_tier_stats_t){
        .entries = cs.entries,
        .bytes = cs.bytes + hs.bytes,
        .max_bytes = cs.max_bytes + hs.max_bytes,
        .hits = load(&m->hits),
        .misses = load(&m->misses),
        .stored = cs.stored,
        .evicted_size = cs.evicted_size,
        .evicted_ttl = cs.evicted_ttl,
        .purged = cs.purged,
        .errors = load(&m->errors),
        /* A refused oversized answer is a write the tier dropped. */
        .dropped = cs.too_big,
    };
}

static void mem_xstats(llmc_tier_t *t, void *out)
{
    memory_tier_t *m = impl(t);
    llmc_cache_stats_t hs;

    hot_stats(m, &hs);
    *(mem_xstats_t *)out = (mem_xstats_t){
        .raw_bytes = load(&m->raw_bytes),
        .packed_bytes = load(&m->packed_bytes),
        .hot_entries = hs.entries,
        .hot_bytes = hs.bytes,
        .hot_max_bytes = hs.max_bytes,
        .hot_hits = load(&m->hot_hits),
        .unpacks = load(&m->unpacks),
    };
}

static void mem_destroy(llmc_tier_t *t)
{
    memory_tier_t *m = impl(t);

    llmc_cache_free(m->hot);
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
    .xstats_desc = xstats_desc,
    .nxstats = sizeof(xstats_desc) / sizeof(xstats_desc[0]),
    .xstats = mem_xstats,
    .destroy = mem_destroy,
};

llmc_tier_t *llmc_tier_memory_new_hot(llmc_cache_t *c, llmc_cache_t *hot)
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
    m->hot = hot;
    m->pack_max = SIZE_MAX;
    return &m->tier;
}

llmc_tier_t *llmc_tier_memory_new(llmc_cache_t *c)
{
    return llmc_tier_memory_new_hot(c, NULL);
}

llmc_tier_t *llmc_tier_memory_open(const llmc_cache_config_t *cfg, unsigned hot_percent,
                                   size_t pack_max)
{
    llmc_cache_config_t main_cfg = *cfg, hot_cfg = *cfg;
    size_t hot_bytes = hot_percent <= 100 ? cfg->max_bytes / 100 * hot_percent : 0;
    llmc_cache_t *c, *hot = NULL;
    llmc_tier_t *t = NULL;

    /* A hot set too small to hold one shard's minimum is no hot set. */
    if (hot_bytes < LLMC_TIER_MEMORY_MIN_HOT)
        hot_bytes = 0;
    main_cfg.max_bytes = cfg->max_bytes - hot_bytes;
    hot_cfg.max_bytes = hot_bytes;
    c = llmc_cache_new(&main_cfg);
    if (c && hot_bytes && !(hot = llmc_cache_new(&hot_cfg)))
        goto fail;
    if (c && (t = llmc_tier_memory_new_hot(c, hot))) {
        impl(t)->pack_max = pack_max ? pack_max : SIZE_MAX;
        return t;
    }
fail:
    llmc_cache_free(hot);
    llmc_cache_free(c);
    return NULL;
}

llmc_cache_t *llmc_tier_memory_cache(llmc_tier_t *t)
{
    return impl(t)->cache;
}
