/*
 * sieve_vs_lru.c: miss ratio of the real llmc_cache (SIEVE) against a plain
 * LRU on Zipf traces.
 *
 * Build and run from the repository root:
 *   make build/libllmc.a
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Wshadow -Iinclude -Isrc \
 *      bench/sieve_vs_lru.c build/libllmc.a -lcrypto -lpthread -lm -o build/sieve_vs_lru
 *   build/sieve_vs_lru            # or: build/sieve_vs_lru KEYS REQUESTS
 *
 * Decisions a reader would otherwise get wrong:
 * - The SIEVE side is the production cache, not a model of it: one shard,
 *   equal-size entries, and a byte budget of exactly capacity x charge, so
 *   it holds exactly `capacity` entries, as the LRU does.
 * - Zipf ranks are shuffled onto keys, so that popularity has nothing to do
 *   with where a key hashes. The trace comes from a fixed seed, so every
 *   run prints the same table.
 * - Miss ratios cover the whole trace, cold misses included; both policies
 *   pay the same cold misses, so the comparison is unaffected.
 * - The last column is the offline best static cache (the k most requested
 *   keys of the trace, held from the start): a floor no online policy
 *   should beat by much on an i.i.d. trace, and a check that the trace and
 *   both replays are sane.
 * - On a miss the entry is inserted, as the gateway does after fetching
 *   the answer upstream. Entries are built once per key up front and
 *   re-inserted after eviction, to keep malloc out of the measurement.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cache_int.h"
#include "llmc/cache.h"
#include "llmc/entry.h"
#include "llmc/error.h"

#define SEED 20240611u
#define BODY_LEN 64

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s)
{
    return (double)(splitmix(s) >> 11) * 0x1.0p-53;
}

/* A trace of n requests over nkeys keys, Zipf(alpha) popularity. */
static uint32_t *zipf_trace(uint32_t nkeys, size_t n, double alpha, uint64_t seed)
{
    double *cdf = malloc(nkeys * sizeof(*cdf));
    uint32_t *perm = malloc(nkeys * sizeof(*perm));
    uint32_t *trace = malloc(n * sizeof(*trace));
    double sum = 0;

    if (!cdf || !perm || !trace) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (uint32_t r = 0; r < nkeys; r++) {
        sum += 1.0 / pow((double)r + 1, alpha);
        cdf[r] = sum;
        perm[r] = r;
    }
    for (uint32_t i = nkeys - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(splitmix(&seed) % (i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t i = 0; i < n; i++) {
        double u = uniform(&seed) * sum;
        uint32_t lo = 0, hi = nkeys - 1;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (cdf[mid] < u)
                lo = mid + 1;
            else
                hi = mid;
        }
        trace[i] = perm[lo];
    }
    free(cdf);
    free(perm);
    return trace;
}

static int by_count_desc(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x < y) - (x > y);
}

/* Request counts per key, most requested first: the best static cache of
   k entries (holding the k most requested keys from the start) misses
   n - sum of the first k. A sanity line for both policies. */
static uint32_t *sorted_counts(const uint32_t *trace, size_t n, uint32_t nkeys)
{
    uint32_t *cnt = calloc(nkeys, sizeof(*cnt));
    if (!cnt) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        cnt[trace[i]]++;
    qsort(cnt, nkeys, sizeof(*cnt), by_count_desc);
    return cnt;
}

static double static_best(const uint32_t *cnt, size_t n, size_t cap)
{
    size_t hits = 0;
    for (size_t i = 0; i < cap; i++)
        hits += cnt[i];
    return (double)(n - hits) / (double)n;
}

/* ---- the reference LRU: doubly linked list + chained hash on the key ---- */

typedef struct lru {
    const llmc_key_t *keys;      /* keys[id] */
    int32_t *prev, *next, *hnext; /* per key id; -1 ends a list */
    int32_t *buckets;
    uint32_t mask;
    int32_t head, tail;          /* head is most recent */
    size_t count, cap;
} lru_t;

static uint32_t lru_hash(const llmc_key_t *k)
{
    uint64_t w;
    memcpy(&w, k->b, sizeof(w));
    return (uint32_t)(w ^ (w >> 32));
}

static void lru_init(lru_t *l, const llmc_key_t *keys, uint32_t nkeys, size_t cap)
{
    uint32_t nb = 1;
    while (nb < 2 * cap)
        nb *= 2;
    *l = (lru_t){.keys = keys, .mask = nb - 1, .head = -1, .tail = -1, .cap = cap};
    l->prev = malloc(nkeys * sizeof(int32_t));
    l->next = malloc(nkeys * sizeof(int32_t));
    l->hnext = malloc(nkeys * sizeof(int32_t));
    l->buckets = malloc(nb * sizeof(int32_t));
    if (!l->prev || !l->next || !l->hnext || !l->buckets) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    memset(l->buckets, 0xff, nb * sizeof(int32_t));
}

static void lru_free(lru_t *l)
{
    free(l->prev);
    free(l->next);
    free(l->hnext);
    free(l->buckets);
}

static int32_t *lru_slot(lru_t *l, const llmc_key_t *k)
{
    int32_t *p = &l->buckets[lru_hash(k) & l->mask];
    while (*p >= 0 && memcmp(l->keys[*p].b, k->b, LLMC_KEY_LEN) != 0)
        p = &l->hnext[*p];
    return p;
}

static void lru_unlink(lru_t *l, int32_t id)
{
    if (l->prev[id] >= 0) l->next[l->prev[id]] = l->next[id]; else l->head = l->next[id];
    if (l->next[id] >= 0) l->prev[l->next[id]] = l->prev[id]; else l->tail = l->prev[id];
}

static void lru_push(lru_t *l, int32_t id)
{
    l->prev[id] = -1;
    l->next[id] = l->head;
    if (l->head >= 0) l->prev[l->head] = id; else l->tail = id;
    l->head = id;
}

/* Returns 1 on a hit; on a miss inserts id, evicting the least recent. */
static int lru_access(lru_t *l, int32_t id)
{
    int32_t *slot = lru_slot(l, &l->keys[id]);
    if (*slot >= 0) {
        lru_unlink(l, id);
        lru_push(l, id);
        return 1;
    }
    if (l->count == l->cap) {
        int32_t victim = l->tail;
        int32_t *vs = lru_slot(l, &l->keys[victim]);
        *vs = l->hnext[victim];
        lru_unlink(l, victim);
        l->count--;
        slot = lru_slot(l, &l->keys[id]); /* the victim may have sat before us */
    }
    l->hnext[id] = -1;
    *slot = id;
    lru_push(l, id);
    l->count++;
    return 0;
}

/* ---- replays ---- */

static double run_lru(const llmc_key_t *keys, uint32_t nkeys, const uint32_t *trace, size_t n,
                      size_t cap)
{
    lru_t l;
    size_t misses = 0;

    lru_init(&l, keys, nkeys, cap);
    for (size_t i = 0; i < n; i++)
        misses += !lru_access(&l, (int32_t)trace[i]);
    lru_free(&l);
    return (double)misses / (double)n;
}

static double run_sieve(llmc_entry_t **entries, const uint32_t *trace, size_t n, size_t cap)
{
    llmc_cache_config_t cfg = {
        .max_bytes = cap * llmc__cache_charge(entries[0]),
        .nshards = 1,
        .max_entry_share = 1.0,
    };
    llmc_cache_t *c = llmc_cache_new(&cfg);
    size_t misses = 0;

    if (!c) {
        fprintf(stderr, "llmc_cache_new failed\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        llmc_entry_t *e = entries[trace[i]], *out;
        if (llmc_cache_get(c, &e->key, 0, &out) == 0) {
            llmc_entry_unref(out);
            continue;
        }
        misses++;
        if (llmc_cache_put(c, e, 0) != 0) {
            fprintf(stderr, "llmc_cache_put failed\n");
            exit(1);
        }
    }
    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    if (st.entries != cap) {
        fprintf(stderr, "cache holds %llu entries, expected %zu\n",
                (unsigned long long)st.entries, cap);
        exit(1);
    }
    llmc_cache_free(c);
    return (double)misses / (double)n;
}

static llmc_entry_t **make_entries(llmc_key_t *keys, uint32_t nkeys)
{
    llmc_entry_t **entries = malloc(nkeys * sizeof(*entries));
    char body[BODY_LEN];
    uint64_t s = SEED;

    memset(body, 'x', sizeof(body));
    if (!entries)
        return NULL;
    for (uint32_t i = 0; i < nkeys; i++) {
        for (int j = 0; j < LLMC_KEY_LEN; j += 8) {
            uint64_t w = splitmix(&s);
            memcpy(keys[i].b + j, &w, 8);
        }
        llmc_entry_spec_t spec = {.key = &keys[i], .status = 200, .expires_ms = INT64_MAX,
                                  .body = body, .body_len = sizeof(body)};
        entries[i] = llmc_entry_new(&spec);
        if (!entries[i] || entries[i]->mem_bytes != entries[0]->mem_bytes) {
            fprintf(stderr, "could not build equal-size entries\n");
            exit(1);
        }
    }
    return entries;
}

int main(int argc, char **argv)
{
    uint32_t nkeys = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 200000;
    size_t nreq = argc > 2 ? strtoull(argv[2], NULL, 10) : 2000000;
    const double alphas[] = {0.8, 1.0};
    const double shares[] = {0.001, 0.01, 0.05, 0.10, 0.25};
    llmc_key_t *keys = malloc(nkeys * sizeof(*keys));
    llmc_entry_t **entries;

    if (!keys || nkeys < 1000 || !nreq) {
        fprintf(stderr, "usage: %s [KEYS>=1000] [REQUESTS>0]\n", argv[0]);
        return 2;
    }
    entries = make_entries(keys, nkeys);
    if (!entries)
        return 1;
    printf("Zipf trace: %zu requests over %u keys, seed %u; miss ratio over the whole trace.\n\n",
           nreq, nkeys, SEED);
    printf("| alpha | cache size | entries | LRU miss ratio | SIEVE (llmc_cache) miss ratio "
           "| SIEVE vs LRU | best static top-k |\n");
    printf("|------:|-----------:|--------:|---------------:|------------------------------:"
           "|-------------:|------------------:|\n");
    for (size_t a = 0; a < sizeof(alphas) / sizeof(alphas[0]); a++) {
        uint32_t *trace = zipf_trace(nkeys, nreq, alphas[a], SEED + a);
        uint32_t *cnt = sorted_counts(trace, nreq, nkeys);
        for (size_t s = 0; s < sizeof(shares) / sizeof(shares[0]); s++) {
            size_t cap = (size_t)llround(shares[s] * nkeys);
            double lru = run_lru(keys, nkeys, trace, nreq, cap);
            double sieve = run_sieve(entries, trace, nreq, cap);
            printf("| %.1f | %g%% | %zu | %.4f | %.4f | %+.1f%% | %.4f |\n", alphas[a],
                   shares[s] * 100, cap, lru, sieve, (sieve - lru) / lru * 100,
                   static_best(cnt, nreq, cap));
            fflush(stdout);
        }
        free(cnt);
        free(trace);
    }
    for (uint32_t i = 0; i < nkeys; i++)
        llmc_entry_unref(entries[i]);
    free(entries);
    free(keys);
    return 0;
}
