/*
 * cache.c: the sharded in-memory cache with SIEVE eviction (llmc/cache.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The shard comes from the high half of a hash of all 32 key bytes, the
 *   bucket from the low half, so the two choices are independent. Keys are
 *   SHA-256 digests already; hashing all of them again only protects against
 *   keys built by hand (tests, tools) that differ in one byte.
 * - Each shard is a whole small cache: its own lock, bucket array, SIEVE
 *   queue, byte budget (max_bytes / nshards) and counters. Eviction never
 *   crosses shards, so a put takes exactly one lock, and the sum of shard
 *   budgets is the global bound. An entry bigger than a shard's budget is
 *   refused even when max_entry_share would allow it; the default shard
 *   count (64, fewer for small caches or large shares) avoids that case.
 * - Bytes charged per entry are its measured mem_bytes plus a fixed share of
 *   the bucket array (see cache_int.h for why two slots).
 * - SIEVE: new entries go to the head; a hit only sets the visited bit; the
 *   hand walks from the tail toward the head clearing bits and evicts the
 *   first unvisited entry, then stays where it stopped. When something else
 *   removes the entry under the hand, the hand steps to its newer neighbour,
 *   which is where it would have gone next.
 * - A removed entry's last reference is dropped under the shard lock, but
 *   the block is freed after unlocking (a "grave" list threaded through the
 *   now unused hnext field), so free() never lengthens a critical section.
 *   Reusing hnext is safe only because nobody else holds a reference.
 * - The bucket array is resized (one full rehash under the lock) at the end
 *   of put, delete, purge and sweep, never in get, so a lookup never
 *   allocates and never waits on a rehash it caused itself.
 */
#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/cache_int.h"
#include "core/lock.h"
#include "core/entry_int.h"
#include "llmc/cache.h"
#include "llmc/error.h"

#define DEFAULT_SHARDS 64u
#define MAX_SHARDS 65536u
/* With the default shard count (nshards 0), shards are halved until each
   holds at least this much and at least max_entry_share of the whole. */
#define MIN_DEFAULT_SHARD_BUDGET ((size_t)1 << 20)
#define MIN_BUCKETS 16u

struct shard {
    alignas(64) pthread_mutex_t mu; /* one cache line per shard: no false sharing */
    llmc_entry_t **buckets;
    size_t nbuckets;                /* power of two */
    size_t count;
    size_t bytes, budget;
    llmc_entry_t *head, *tail;      /* head is newest */
    llmc_entry_t *hand;             /* NULL: start at the tail */
    uint64_t stored, evicted_size, evicted_ttl, purged;
};

struct llmc_cache {
    struct shard *shards;
    unsigned nshards;
    size_t max_bytes;
    size_t entry_limit;
    int64_t keep_stale_ms;
    _Atomic uint64_t too_big;       /* counted before any shard is chosen */
    pthread_mutex_t sweep_mu;       /* guards the sweep cursor */
    unsigned sweep_shard;
    size_t sweep_bucket, sweep_depth;
};

static uint64_t key_hash(const llmc_key_t *k)
{
    uint64_t h = 0;

    for (int i = 0; i < LLMC_KEY_LEN; i += 8) {
        uint64_t w;
        memcpy(&w, k->b + i, sizeof(w));
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
    }
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 32);
}

static struct shard *shard_of(llmc_cache_t *c, uint64_t h)
{
    return &c->shards[(h >> 32) & (c->nshards - 1)];
}

static bool is_dead(const llmc_entry_t *e, int64_t keep_ms, int64_t now_ms)
{
    /* An entry that expires "never" (INT64_MAX) must not overflow here. */
    if (e->expires_ms > INT64_MAX - keep_ms)
        return false;
    return now_ms >= e->expires_ms + keep_ms;
}

/* The slot that holds the entry with key k, or the empty slot ending its chain. */
static llmc_entry_t **chain_find(struct shard *s, const llmc_key_t *k, uint64_t h)
{
    llmc_entry_t **pp = &s->buckets[h & (s->nbuckets - 1)];

    while (*pp && memcmp((*pp)->key.b, k->b, LLMC_KEY_LEN) != 0)
        pp = &(*pp)->link.hnext;
    return pp;
}

static void queue_push_head(struct shard *s, llmc_entry_t *e)
{
    e->link.prev = NULL;
    e->link.next = s->head;
    if (s->head)
        s->head->link.prev = e;
    else
        s->tail = e;
    s->head = e;
}

static void queue_remove(struct shard *s, llmc_entry_t *e)
{
    if (s->hand == e)
        s->hand = e->link.prev;
    if (e->link.prev)
        e->link.prev->link.next = e->link.next;
    else
        s->head = e->link.next;
    if (e->link.next)
        e->link.next->link.prev = e->link.prev;
    else
        s->tail = e->link.prev;
    e->link.prev = e->link.next = NULL;
}

/* Drops the cache's reference; a block nobody else holds goes to the grave. */
static void drop(llmc_entry_t *e, llmc_entry_t **grave)
{
    if (atomic_fetch_sub_explicit(&e->refcnt, 1, memory_order_acq_rel) == 1) {
        e->link.hnext = *grave;
        *grave = e;
    }
}

/* Frees what drop() collected; runs after the shard lock is released. */
static void bury(llmc_entry_t *grave)
{
    while (grave) {
        llmc_entry_t *next = grave->link.hnext;
        llmc__entry_free(grave);
        grave = next;
    }
}

/* Removes the entry in slot *pp from table and queue. Lock held. */
static void do_unlink(struct shard *s, llmc_entry_t **pp, llmc_entry_t **grave)
{
    LLMC_ASSERT_LOCKED(&s->mu);
    llmc_entry_t *e = *pp;

    *pp = e->link.hnext;
    e->link.hnext = NULL;
    queue_remove(s, e);
    s->bytes -= llmc__cache_charge(e);
    s->count--;
    e->in_cache = 0;
    drop(e, grave);
}

/* Moves the hand to the entry SIEVE evicts next. Lock held, count > 0. */
static llmc_entry_t *sieve_victim(struct shard *s)
{
    llmc_entry_t *e = s->hand ? s->hand : s->tail;

    /* Ends within one lap: every visited entry passed is cleared. */
    while (atomic_load_explicit(&e->visited, memory_order_relaxed)) {
        atomic_store_explicit(&e->visited, 0, memory_order_relaxed);
        e = e->link.prev ? e->link.prev : s->tail;
    }
    s->hand = e;
    return e;
}

static void do_evict_one(struct shard *s, llmc_entry_t **grave)
{
    LLMC_ASSERT_LOCKED(&s->mu);
    llmc_entry_t *v = sieve_victim(s);

    /* do_unlink steps the hand to v's newer neighbour, where SIEVE resumes. */
    do_unlink(s, chain_find(s, &v->key, key_hash(&v->key)), grave);
    s->evicted_size++;
}

static void rehash(struct shard *s, size_t n)
{
    llmc_entry_t **nb = calloc(n, sizeof(*nb));

    /* Without memory the old array still works, with longer chains. */
    if (!nb)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        llmc_entry_t *e = s->buckets[i];
        while (e) {
            llmc_entry_t *next = e->link.hnext;
            size_t b = key_hash(&e->key) & (n - 1);
            e->link.hnext = nb[b];
            nb[b] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = nb;
    s->nbuckets = n;
}

/*
 * Keeps the load between one half and two entries per bucket, so at most
 * two slots per entry: a factor of four between the thresholds, so that a
 * shard whose count hovers around one of them is not rehashed over and
 * over. Lock held.
 */
static void do_maybe_resize(struct shard *s)
{
    size_t n = s->nbuckets;

    while (s->count > 2 * n)
        n *= 2;
    while (n > MIN_BUCKETS && s->count < n / 2)
        n /= 2;
    if (n != s->nbuckets)
        rehash(s, n);
}

static int shard_init(struct shard *s, size_t budget)
{
    memset(s, 0, sizeof(*s));
    s->buckets = calloc(MIN_BUCKETS, sizeof(*s->buckets));
    if (!s->buckets)
        return LLMC_ENOMEM;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s->buckets);
        return LLMC_ENOMEM;
    }
    s->nbuckets = MIN_BUCKETS;
    s->budget = budget;
    return 0;
}

static void shard_destroy(struct shard *s)
{
    llmc_entry_t *e = s->head;

    while (e) {
        llmc_entry_t *next = e->link.next;
        e->link.hnext = e->link.prev = e->link.next = NULL;
        e->in_cache = 0;
        llmc_entry_unref(e);
        e = next;
    }
    free(s->buckets);
    pthread_mutex_destroy(&s->mu);
}

static unsigned pick_shards(const llmc_cache_config_t *cfg)
{
    unsigned n = cfg->nshards;

    if (n)
        return (n & (n - 1)) == 0 && n <= MAX_SHARDS ? n : 0;
    /* A shard must be able to hold the largest entry the share allows, or
       the configured share would silently shrink to 1/nshards. */
    double share = cfg->max_entry_share > 0 ? cfg->max_entry_share : 1.0;
    n = DEFAULT_SHARDS;
    while (n > 1 && (cfg->max_bytes / n < MIN_DEFAULT_SHARD_BUDGET ||
                     (double)(cfg->max_bytes / n) < share * (double)cfg->max_bytes))
        n /= 2;
    return n;
}

/* The largest charge an entry may have: the share and the shard budget. */
static size_t entry_limit(const llmc_cache_config_t *cfg, size_t shard_budget)
{
    double share = cfg->max_entry_share > 0 ? cfg->max_entry_share : 1.0;
    double by_share = share * (double)cfg->max_bytes;

    return by_share < (double)shard_budget ? (size_t)by_share : shard_budget;
}

llmc_cache_t *llmc_cache_new(const llmc_cache_config_t *cfg)
{
    llmc_cache_t *c = NULL;
    unsigned n = pick_shards(cfg), ready = 0;

    if (!n || cfg->max_bytes / n == 0 || cfg->keep_stale_ms < 0 ||
        !(cfg->max_entry_share >= 0 && cfg->max_entry_share <= 1))
        goto fail;
    c = calloc(1, sizeof(*c));
    if (!c)
        goto fail;
    c->shards = aligned_alloc(alignof(struct shard), n * sizeof(struct shard));
    if (!c->shards)
        goto fail;
    for (; ready < n; ready++)
        if (shard_init(&c->shards[ready], cfg->max_bytes / n) != 0)
            goto fail;
    if (pthread_mutex_init(&c->sweep_mu, NULL) != 0)
        goto fail;
    c->nshards = n;
    c->max_bytes = cfg->max_bytes;
    c->entry_limit = entry_limit(cfg, cfg->max_bytes / n);
    c->keep_stale_ms = cfg->keep_stale_ms;
    atomic_init(&c->too_big, 0);
    return c;

fail:
    if (c) {
        while (ready > 0)
            shard_destroy(&c->shards[--ready]);
        free(c->shards);
        free(c);
    }
    return NULL;
}

void llmc_cache_free(llmc_cache_t *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->nshards; i++)
        shard_destroy(&c->shards[i]);
    pthread_mutex_destroy(&c->sweep_mu);
    free(c->shards);
    free(c);
}

int llmc_cache_get(llmc_cache_t *c, const llmc_key_t *key, int64_t now_ms, llmc_entry_t **out)
{
    uint64_t h = key_hash(key);
    struct shard *s = shard_of(c, h);
    llmc_entry_t *grave = NULL;
    int rc = LLMC_ENOENT;

    *out = NULL;
    pthread_mutex_lock(&s->mu);
    llmc_entry_t **pp = chain_find(s, key, h);
    llmc_entry_t *e = *pp;
    if (e && is_dead(e, c->keep_stale_ms, now_ms)) {
        do_unlink(s, pp, &grave);
        s->evicted_ttl++;
    } else if (e) {
        /* Read first: a hot entry's bit is already set, and a store on every
           hit would bounce its cache line between the threads serving it. */
        if (!atomic_load_explicit(&e->visited, memory_order_relaxed))
            atomic_store_explicit(&e->visited, 1, memory_order_relaxed);
        *out = llmc_entry_ref(e);
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    bury(grave);
    return rc;
}

/* Links e in as the newest entry of s. Lock held; e's key is not in s. */
static void do_insert(struct shard *s, llmc_entry_t *e, uint64_t h)
{
    LLMC_ASSERT_LOCKED(&s->mu);
    llmc_entry_t **bucket = &s->buckets[h & (s->nbuckets - 1)];

    e->link.hnext = *bucket;
    *bucket = e;
    queue_push_head(s, e);
    atomic_store_explicit(&e->visited, 0, memory_order_relaxed);
    e->in_cache = 1;
    llmc_entry_ref(e);
    s->bytes += llmc__cache_charge(e);
    s->count++;
    s->stored++;
}

int llmc_cache_put(llmc_cache_t *c, llmc_entry_t *e, int64_t now_ms)
{
    size_t charge = llmc__cache_charge(e);
    uint64_t h = key_hash(&e->key);
    struct shard *s = shard_of(c, h);
    llmc_entry_t *grave = NULL;
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    if (e->in_cache) {
        pthread_mutex_unlock(&s->mu);
        return LLMC_EINVAL;
    }
    llmc_entry_t **pp = chain_find(s, &e->key, h);
    /* A replaced answer is neither evicted nor purged: it was superseded.
       That holds for a replacement too big to keep as well (memcached
       unlinks the old item on a failed set for the same reason): left in,
       the older answer would be served after a newer one was seen. */
    if (*pp)
        do_unlink(s, pp, &grave);
    if (charge > c->entry_limit) {
        atomic_fetch_add_explicit(&c->too_big, 1, memory_order_relaxed);
        rc = LLMC_E2BIG;
    } else {
        /* Evict before inserting, so the new entry is never its own victim. */
        while (s->count && s->bytes + charge > s->budget)
            do_evict_one(s, &grave);
        do_insert(s, e, h);
    }
    do_maybe_resize(s);
    pthread_mutex_unlock(&s->mu);
    bury(grave);
    return rc;
}

int llmc_cache_delete(llmc_cache_t *c, const llmc_key_t *key)
{
    uint64_t h = key_hash(key);
    struct shard *s = shard_of(c, h);
    llmc_entry_t *grave = NULL;
    int rc = LLMC_ENOENT;

    pthread_mutex_lock(&s->mu);
    llmc_entry_t **pp = chain_find(s, key, h);
    if (*pp) {
        do_unlink(s, pp, &grave);
        s->purged++;
        do_maybe_resize(s);
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    bury(grave);
    return rc;
}

size_t llmc_cache_purge(llmc_cache_t *c, bool (*match)(const llmc_entry_t *e, void *arg), void *arg)
{
    size_t removed = 0;

    for (unsigned i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];
        llmc_entry_t *grave = NULL;

        pthread_mutex_lock(&s->mu);
        for (size_t b = 0; b < s->nbuckets; b++) {
            llmc_entry_t **pp = &s->buckets[b];
            while (*pp) {
                if (match(*pp, arg)) {
                    do_unlink(s, pp, &grave);
                    s->purged++;
                    removed++;
                } else {
                    pp = &(*pp)->link.hnext;
                }
            }
        }
        do_maybe_resize(s);
        pthread_mutex_unlock(&s->mu);
        bury(grave);
    }
    return removed;
}

/*
 * Sweeps one shard from the cursor until the budget is spent or the shard's
 * buckets end (returns true then). An empty bucket costs one unit of work so
 * that sweeping an empty cache is bounded too; a long chain may be left
 * halfway, and sweep_depth says how many of its entries were kept.
 * Both locks held.
 */
static bool do_sweep_shard(llmc_cache_t *c, struct shard *s, int64_t now_ms, size_t budget,
                           size_t *work, size_t *removed, llmc_entry_t **grave)
{
    size_t b = c->sweep_bucket, depth = c->sweep_depth;
    bool done = false;

    while (*work < budget) {
        if (b >= s->nbuckets) {
            done = true;
            break;
        }
        llmc_entry_t **pp = &s->buckets[b];
        if (!*pp)
            (*work)++;
        for (size_t i = 0; i < depth && *pp; i++)
            pp = &(*pp)->link.hnext;
        while (*pp && *work < budget) {
            (*work)++;
            if (is_dead(*pp, c->keep_stale_ms, now_ms)) {
                do_unlink(s, pp, grave);
                s->evicted_ttl++;
                (*removed)++;
            } else {
                pp = &(*pp)->link.hnext;
                depth++;
            }
        }
        if (*pp)
            break;
        b++;
        depth = 0;
    }
    c->sweep_bucket = b;
    c->sweep_depth = depth;
    return done;
}

size_t llmc_cache_sweep(llmc_cache_t *c, int64_t now_ms, size_t budget)
{
    size_t work = 0, removed = 0;

    /* A second sweeper would only repeat the first one's work: skip. */
    if (!budget || pthread_mutex_trylock(&c->sweep_mu) != 0)
        return 0;
    /* One lap plus the partial shard we may have started in, at most. */
    for (unsigned lap = 0; lap <= c->nshards && work < budget; lap++) {
        struct shard *s = &c->shards[c->sweep_shard];
        llmc_entry_t *grave = NULL;

        pthread_mutex_lock(&s->mu);
        bool done = do_sweep_shard(c, s, now_ms, budget, &work, &removed, &grave);
        /* The cursor indexes buckets; a resize only makes it skip or repeat a
           few, which a later lap fixes. */
        do_maybe_resize(s);
        pthread_mutex_unlock(&s->mu);
        bury(grave);
        if (done) {
            c->sweep_shard = (c->sweep_shard + 1) & (c->nshards - 1);
            c->sweep_bucket = c->sweep_depth = 0;
        }
    }
    pthread_mutex_unlock(&c->sweep_mu);
    return removed;
}

void llmc_cache_stats(llmc_cache_t *c, llmc_cache_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];

        pthread_mutex_lock(&s->mu);
        out->entries += s->count;
        out->bytes += s->bytes;
        out->stored += s->stored;
        out->evicted_size += s->evicted_size;
        out->evicted_ttl += s->evicted_ttl;
        out->purged += s->purged;
        pthread_mutex_unlock(&s->mu);
    }
    out->max_bytes = c->max_bytes;
    out->too_big = atomic_load_explicit(&c->too_big, memory_order_relaxed);
}

size_t llmc_cache_entry_limit(const llmc_cache_t *c)
{
    return c->entry_limit;
}
