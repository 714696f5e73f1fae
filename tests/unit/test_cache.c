/*
 * test_cache.c: the sharded SIEVE memory cache (src/core/cache.c), the purge
 * selector (src/core/purge.c) and the memory tier (src/tier/memory.c).
 *
 * Time is a fake clock passed as now_ms. Which entries a cache holds is read
 * through llmc_cache_purge with a callback that selects nothing: it visits
 * every entry without marking any visited, so it does not disturb SIEVE.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/cache_int.h"
#include "llmc/cache.h"
#include "llmc/error.h"
#include "llmc/tier.h"
#include "tier/memory.h"
#include "tier_purge_now.h"

#define FOREVER INT64_MAX

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A key that looks like a SHA-256 digest, derived from id. */
static llmc_key_t key_of(uint64_t id)
{
    llmc_key_t k;
    uint64_t s = id * 7919 + 1;
    for (int i = 0; i < LLMC_KEY_LEN; i += 8) {
        uint64_t w = splitmix(&s);
        memcpy(k.b + i, &w, 8);
    }
    return k;
}

typedef struct {
    const char *ns, *model, *route;
    const char *const *tags;
    uint32_t ntags;
    int64_t created_ms, expires_ms;
} meta_t;

/* An entry for id whose body is body_len copies of a byte derived from id. */
static llmc_entry_t *mk_meta(uint64_t id, size_t body_len, const meta_t *m)
{
    llmc_key_t k = key_of(id);
    char *body = malloc(body_len + 1);
    assert_non_null(body);
    memset(body, 'a' + (int)(id % 26), body_len);
    llmc_entry_spec_t spec = {
        .key = &k, .status = 200, .created_ms = m->created_ms, .expires_ms = m->expires_ms,
        .ns = m->ns, .model = m->model, .route = m->route, .tags = m->tags, .ntags = m->ntags,
        .body = body, .body_len = body_len,
    };
    llmc_entry_t *e = llmc_entry_new(&spec);
    free(body);
    assert_non_null(e);
    return e;
}

static llmc_entry_t *mk(uint64_t id, size_t body_len, int64_t expires_ms)
{
    meta_t m = {.expires_ms = expires_ms};
    return mk_meta(id, body_len, &m);
}

/* The body mk() gave id, checked byte for byte. */
static int body_ok(const llmc_entry_t *e, uint64_t id)
{
    for (size_t i = 0; i < e->body_len; i++)
        if (e->body[i] != 'a' + (int)(id % 26))
            return 0;
    return e->body[e->body_len] == '\0';
}

/* Puts a fresh entry and drops the caller's reference. */
static int put_new(llmc_cache_t *c, uint64_t id, size_t body_len, int64_t expires_ms, int64_t now)
{
    llmc_entry_t *e = mk(id, body_len, expires_ms);
    int rc = llmc_cache_put(c, e, now);
    llmc_entry_unref(e);
    return rc;
}

static llmc_cache_t *new_cache(size_t max_bytes, unsigned nshards, double share, int64_t keep)
{
    llmc_cache_config_t cfg = {max_bytes, nshards, share, keep};
    llmc_cache_t *c = llmc_cache_new(&cfg);
    assert_non_null(c);
    return c;
}

/* What the cache holds, visited without touching SIEVE state. */
typedef struct {
    size_t n, bytes;
    const llmc_key_t *want;
    int found;
} walk_t;

static bool visit(const llmc_entry_t *e, void *arg)
{
    walk_t *w = arg;
    w->n++;
    w->bytes += e->mem_bytes + LLMC_CACHE_ENTRY_OVERHEAD;
    if (w->want && memcmp(w->want->b, e->key.b, LLMC_KEY_LEN) == 0)
        w->found = 1;
    return false;
}

static walk_t walk(llmc_cache_t *c)
{
    walk_t w = {0};
    assert_int_equal(llmc_cache_purge(c, visit, &w), 0);
    return w;
}

static int held(llmc_cache_t *c, uint64_t id)
{
    llmc_key_t k = key_of(id);
    walk_t w = {.want = &k};
    llmc_cache_purge(c, visit, &w);
    return w.found;
}

/* The accounting invariants every test ends with. */
static void check_consistent(llmc_cache_t *c)
{
    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    walk_t w = walk(c);
    assert_int_equal(st.entries, w.n);
    assert_int_equal(st.bytes, w.bytes);
    assert_true(st.bytes <= st.max_bytes);
}

static void test_config(void **state)
{
    (void)state;
    llmc_cache_config_t bad_shards = {1 << 20, 3, 0.5, 0};
    assert_null(llmc_cache_new(&bad_shards));
    llmc_cache_config_t bad_stale = {1 << 20, 4, 0.5, -1};
    assert_null(llmc_cache_new(&bad_stale));
    llmc_cache_config_t bad_share = {1 << 20, 4, 1.5, 0};
    assert_null(llmc_cache_new(&bad_share));
    llmc_cache_config_t tiny = {3, 4, 0.5, 0};
    assert_null(llmc_cache_new(&tiny));

    /* A small cache with the default shard count still takes a large answer:
       the default shrinks shards so each keeps at least 1 MiB. */
    llmc_cache_t *c = new_cache(2u << 20, 0, 0.5, 0);
    assert_int_equal(put_new(c, 1, 900 * 1024, FOREVER, 0), 0);
    check_consistent(c);
    llmc_cache_free(c);

    /* The default shard count also honours the configured share: with 10%
       of 64 MiB, an answer of 6 MiB fits (8 shards of 8 MiB, not 64 of 1). */
    c = new_cache(64u << 20, 0, 0.1, 0);
    assert_int_equal(put_new(c, 2, 6u << 20, FOREVER, 0), 0);
    assert_int_equal(put_new(c, 3, 7u << 20, FOREVER, 0), LLMC_E2BIG);
    check_consistent(c);
    llmc_cache_free(c);
}

static void test_put_get_replace_delete(void **state)
{
    (void)state;
    llmc_cache_t *c = new_cache(1 << 20, 4, 0.5, 0);
    llmc_entry_t *out = (llmc_entry_t *)1;
    llmc_key_t k = key_of(7);

    assert_int_equal(llmc_cache_get(c, &k, 0, &out), LLMC_ENOENT);
    assert_null(out);

    llmc_entry_t *a = mk(7, 100, FOREVER);
    assert_int_equal(llmc_cache_put(c, a, 0), 0);
    assert_int_equal(a->refcnt, 2); /* the cache took its own */
    assert_int_equal(llmc_cache_get(c, &k, 0, &out), 0);
    assert_ptr_equal(out, a);
    assert_int_equal(a->refcnt, 3);
    llmc_entry_unref(out);

    /* The same key again replaces, and the old entry's bytes go away. */
    llmc_entry_t *b = mk(7, 5000, FOREVER);
    assert_int_equal(llmc_cache_put(c, b, 0), 0);
    assert_int_equal(a->refcnt, 1);
    assert_int_equal(llmc_cache_get(c, &k, 0, &out), 0);
    assert_ptr_equal(out, b);
    llmc_entry_unref(out);
    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.bytes, llmc__cache_charge(b));
    assert_int_equal(st.stored, 2);
    assert_int_equal(st.purged + st.evicted_size + st.evicted_ttl, 0);

    /* The old entry may go back in: it no longer sits in a cache. */
    assert_int_equal(llmc_cache_put(c, a, 0), 0);
    assert_int_equal(llmc_cache_get(c, &k, 0, &out), 0);
    assert_ptr_equal(out, a);
    llmc_entry_unref(out);

    assert_int_equal(llmc_cache_delete(c, &k), 0);
    assert_int_equal(llmc_cache_delete(c, &k), LLMC_ENOENT);
    assert_int_equal(llmc_cache_get(c, &k, 0, &out), LLMC_ENOENT);
    llmc_cache_stats(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.purged, 1);
    check_consistent(c);

    llmc_entry_unref(a);
    llmc_entry_unref(b);
    llmc_cache_free(c);
}

static void test_put_twice_is_einval(void **state)
{
    (void)state;
    llmc_cache_t *c = new_cache(1 << 20, 4, 0.5, 0);
    llmc_cache_t *d = new_cache(1 << 20, 4, 0.5, 0);
    llmc_entry_t *e = mk(1, 10, FOREVER);

    assert_int_equal(llmc_cache_put(c, e, 0), 0);
    assert_int_equal(llmc_cache_put(c, e, 0), LLMC_EINVAL);
    assert_int_equal(llmc_cache_put(d, e, 0), LLMC_EINVAL);
    assert_int_equal(e->refcnt, 2);
    llmc_cache_free(c);
    /* Freeing the cache released it, so another cache may take it. */
    assert_int_equal(e->refcnt, 1);
    assert_int_equal(llmc_cache_put(d, e, 0), 0);
    llmc_entry_unref(e);
    llmc_cache_free(d);
}

static void test_ttl_fake_clock(void **state)
{
    (void)state;
    llmc_cache_t *c = new_cache(1 << 20, 4, 0.5, 5000);
    llmc_key_t k = key_of(42);
    llmc_entry_t *out;

    assert_int_equal(put_new(c, 42, 64, 10000, 0), 0);

    assert_int_equal(llmc_cache_get(c, &k, 9999, &out), 0);
    assert_true(9999 < out->expires_ms); /* fresh */
    llmc_entry_unref(out);

    assert_int_equal(llmc_cache_get(c, &k, 14999, &out), 0);
    assert_false(14999 < out->expires_ms); /* stale, but kept for stale serving */
    llmc_entry_unref(out);

    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    assert_int_equal(st.evicted_ttl, 0);

    assert_int_equal(llmc_cache_get(c, &k, 15000, &out), LLMC_ENOENT);
    assert_null(out);
    llmc_cache_stats(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.evicted_ttl, 1);
    /* Gone for good: an earlier clock does not bring it back. */
    assert_int_equal(llmc_cache_get(c, &k, 0, &out), LLMC_ENOENT);
    llmc_cache_free(c);
}

/* A one-shard cache with room for exactly n entries of body_len bytes. */
static llmc_cache_t *cache_for(size_t n, size_t body_len)
{
    llmc_entry_t *probe = mk(0, body_len, FOREVER);
    size_t charge = llmc__cache_charge(probe);
    llmc_entry_unref(probe);
    return new_cache(n * charge + charge / 2, 1, 1.0, 0);
}

static void touch(llmc_cache_t *c, uint64_t id)
{
    llmc_key_t k = key_of(id);
    llmc_entry_t *out;
    assert_int_equal(llmc_cache_get(c, &k, 0, &out), 0);
    llmc_entry_unref(out);
}

static void test_sieve_order(void **state)
{
    (void)state;
    enum { A = 1, B, C, D, E, F, G };
    llmc_cache_t *c = cache_for(4, 200);

    for (uint64_t id = A; id <= D; id++)
        assert_int_equal(put_new(c, id, 200, FOREVER, 0), 0);
    /* Queue, newest first: D C B A. A and B were hit. */
    touch(c, A);
    touch(c, B);

    /* The hand starts at the tail, spares A and B (clearing their bits) and
       evicts C, the oldest entry nobody asked for again. */
    assert_int_equal(put_new(c, E, 200, FOREVER, 0), 0);
    assert_false(held(c, C));
    assert_true(held(c, A) && held(c, B) && held(c, D) && held(c, E));

    /* The hand stays after C, at D. Were it to restart at the tail it would
       now evict B (A was hit again, B's bit is clear); SIEVE evicts D. */
    touch(c, A);
    assert_int_equal(put_new(c, F, 200, FOREVER, 0), 0);
    assert_false(held(c, D));
    assert_true(held(c, A) && held(c, B) && held(c, E) && held(c, F));

    /* The hand moves on to E: never hit, so it goes although B is older.
       SIEVE does not rescan from the tail. */
    assert_int_equal(put_new(c, G, 200, FOREVER, 0), 0);
    assert_false(held(c, E));
    assert_true(held(c, A) && held(c, B) && held(c, F) && held(c, G));

    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    assert_int_equal(st.evicted_size, 3);
    assert_int_equal(st.entries, 4);
    check_consistent(c);
    llmc_cache_free(c);
}

static void test_sieve_hand_survives_delete(void **state)
{
    (void)state;
    llmc_cache_t *c = cache_for(4, 100);
    for (uint64_t id = 1; id <= 4; id++)
        assert_int_equal(put_new(c, id, 100, FOREVER, 0), 0);
    touch(c, 1);
    /* Queue 4 3 2 1; the hand clears 1, evicts 2 and stops at 3. */
    assert_int_equal(put_new(c, 5, 100, FOREVER, 0), 0);
    assert_false(held(c, 2));
    /* Deleting the entry under the hand moves the hand to 4, its newer
       neighbour, not back to the tail (1, unvisited now). */
    llmc_key_t k3 = key_of(3);
    assert_int_equal(llmc_cache_delete(c, &k3), 0);
    assert_int_equal(put_new(c, 6, 100, FOREVER, 0), 0); /* room: no eviction */
    assert_int_equal(put_new(c, 7, 100, FOREVER, 0), 0);
    assert_false(held(c, 4));
    assert_true(held(c, 1) && held(c, 5) && held(c, 6) && held(c, 7));
    check_consistent(c);
    llmc_cache_free(c);
}

static void test_byte_bound_random(void **state)
{
    (void)state;
    const size_t max = 256 * 1024;
    const double share = 0.25;
    llmc_cache_t *c = new_cache(max, 4, share, 0);
    uint64_t rng = 12345, refused = 0;

    for (int op = 0; op < 4000; op++) {
        uint64_t id = splitmix(&rng) % 300;
        if (splitmix(&rng) % 10 == 0) {
            llmc_key_t k = key_of(id);
            llmc_cache_delete(c, &k);
        } else {
            size_t len = splitmix(&rng) % 80000;
            llmc_entry_t *e = mk(id, len, FOREVER);
            int too_big = llmc__cache_charge(e) > (size_t)(share * (double)max);
            int rc = llmc_cache_put(c, e, op);
            assert_int_equal(rc, too_big ? LLMC_E2BIG : 0);
            refused += (uint64_t)too_big;
            llmc_entry_unref(e);
        }
        llmc_cache_stats_t st;
        llmc_cache_stats(c, &st);
        assert_true(st.bytes <= max);
        assert_int_equal(st.too_big, refused);
        check_consistent(c);
    }
    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    assert_true(refused > 0);
    assert_true(st.evicted_size > 0);
    llmc_cache_free(c);
}

static void test_too_big(void **state)
{
    (void)state;
    llmc_cache_t *c = new_cache(10000, 1, 0.5, 0);
    llmc_entry_t *e = mk(1, 6000, FOREVER);
    llmc_key_t k = key_of(1);
    llmc_entry_t *out;

    assert_int_equal(llmc_cache_put(c, e, 0), LLMC_E2BIG);
    assert_int_equal(e->refcnt, 1);
    assert_int_equal(llmc_cache_get(c, &k, 0, &out), LLMC_ENOENT);
    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    assert_int_equal(st.too_big, 1);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.entries, 0);
    llmc_entry_unref(e);

    /* Within the share, but bigger than its shard's budget: also refused,
       since eviction cannot cross shards. */
    llmc_cache_t *d = new_cache(40000, 8, 1.0, 0);
    assert_int_equal(put_new(d, 2, 6000, FOREVER, 0), LLMC_E2BIG);
    assert_int_equal(put_new(d, 3, 4000, FOREVER, 0), 0);
    check_consistent(d);
    llmc_cache_free(d);
    llmc_cache_free(c);
}

/* A new answer too big to keep must not leave the previous answer under its
   key in place: the client that refreshed got the new one, and every later
   hit would be served the answer it replaced. */
static void test_too_big_replacement_drops_old(void **state)
{
    (void)state;
    llmc_cache_t *c = new_cache(10000, 1, 0.5, 0);
    llmc_key_t k = key_of(1);
    llmc_entry_t *out;

    assert_int_equal(put_new(c, 1, 100, FOREVER, 0), 0);
    assert_int_equal(put_new(c, 1, 6000, FOREVER, 0), LLMC_E2BIG);
    assert_int_equal(llmc_cache_get(c, &k, 0, &out), LLMC_ENOENT);
    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.too_big, 1);
    assert_int_equal(st.purged + st.evicted_size + st.evicted_ttl, 0);
    check_consistent(c);
    llmc_cache_free(c);
}

static void test_ref_outlives_eviction(void **state)
{
    (void)state;
    llmc_cache_t *c = cache_for(2, 3000);
    llmc_key_t k = key_of(1);
    llmc_entry_t *out;

    assert_int_equal(put_new(c, 1, 3000, FOREVER, 0), 0);
    assert_int_equal(llmc_cache_get(c, &k, 0, &out), 0);
    /* Enough newer puts push entry 1 out, once the hand has cleared its bit. */
    for (uint64_t id = 2; id < 10; id++)
        assert_int_equal(put_new(c, id, 3000, FOREVER, 0), 0);
    assert_false(held(c, 1));
    /* The reader's copy is intact (ASan/valgrind flag a use after free). */
    assert_int_equal(out->refcnt, 1);
    assert_int_equal(out->body_len, 3000);
    assert_true(body_ok(out, 1));
    assert_int_equal(out->in_cache, 0);
    llmc_entry_unref(out);

    /* The same through delete. */
    llmc_key_t k9 = key_of(9);
    assert_int_equal(llmc_cache_get(c, &k9, 0, &out), 0);
    assert_int_equal(llmc_cache_delete(c, &k9), 0);
    assert_true(body_ok(out, 9));
    llmc_entry_unref(out);
    check_consistent(c);
    llmc_cache_free(c);
}

static void test_sweep_incremental(void **state)
{
    (void)state;
    llmc_cache_t *c = new_cache(4 << 20, 4, 0.5, 500);
    const int64_t now = 2000;

    for (uint64_t id = 0; id < 100; id++)      /* dead at 1500 */
        assert_int_equal(put_new(c, id, 50, 1000, 0), 0);
    for (uint64_t id = 100; id < 200; id++)    /* fresh */
        assert_int_equal(put_new(c, id, 50, 100000, 0), 0);
    for (uint64_t id = 200; id < 210; id++)    /* stale, kept until 2300 */
        assert_int_equal(put_new(c, id, 50, 1800, 0), 0);

    size_t total = 0, calls = 0, first = llmc_cache_sweep(c, now, 7);
    assert_true(first <= 7);
    total += first;
    while (total < 100 && calls++ < 10000) {
        size_t n = llmc_cache_sweep(c, now, 7);
        assert_true(n <= 7);
        total += n;
    }
    assert_int_equal(total, 100);
    /* More sweeping at the same time finds nothing more to remove. */
    for (int i = 0; i < 200; i++)
        assert_int_equal(llmc_cache_sweep(c, now, 7), 0);
    for (uint64_t id = 100; id < 210; id++)
        assert_true(held(c, id));
    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    assert_int_equal(st.evicted_ttl, 100);
    assert_int_equal(st.entries, 110);

    /* A budget of one still makes progress (the cursor resumes mid-chain). */
    total = 0;
    for (calls = 0; total < 10 && calls < 100000; calls++)
        total += llmc_cache_sweep(c, 2300, 1);
    assert_int_equal(total, 10);
    assert_int_equal(llmc_cache_sweep(c, 2300, 0), 0);
    check_consistent(c);
    llmc_cache_free(c);
}

static bool match_sel(const llmc_entry_t *e, void *arg)
{
    return llmc_purge_match(arg, e);
}

static size_t purge_sel(llmc_cache_t *c, const llmc_purge_t *sel)
{
    return llmc_cache_purge(c, match_sel, (void *)sel);
}

/* A selector of one string condition. */
static size_t purge(llmc_cache_t *c, uint32_t cond, const char *value)
{
    llmc_purge_t sel = {.conds = cond};
    if (cond == LLMC_PURGE_NAMESPACE)
        sel.ns = value;
    else if (cond == LLMC_PURGE_TAG)
        sel.tag = value;
    else if (cond == LLMC_PURGE_MODEL)
        sel.model = value;
    else if (cond == LLMC_PURGE_ROUTE)
        sel.route = value;
    return purge_sel(c, &sel);
}

static size_t purge_all(llmc_cache_t *c)
{
    llmc_purge_t sel = {.all = true};
    return purge_sel(c, &sel);
}

static void test_purge_selectors(void **state)
{
    (void)state;
    llmc_cache_t *c = new_cache(4 << 20, 4, 0.5, 0);
    const char *red[] = {"red", "common"}, *blue[] = {"blue", "common"};
    struct { const char *ns, *model; const char *const *tags; } kinds[] = {
        {"t1", "gpt-4o", red}, {"t1", "gpt-4o-mini", blue},
        {"t2", "gpt-4o", blue}, {"", "", NULL},
    };
    for (uint64_t id = 0; id < 40; id++) {
        meta_t m = {.ns = kinds[id % 4].ns, .model = kinds[id % 4].model,
                    .tags = kinds[id % 4].tags, .ntags = kinds[id % 4].tags ? 2 : 0,
                    .expires_ms = FOREVER};
        llmc_entry_t *e = mk_meta(id, 30, &m);
        assert_int_equal(llmc_cache_put(c, e, 0), 0);
        llmc_entry_unref(e);
    }
    /* A value-less selector selects nothing rather than everything. */
    assert_int_equal(purge(c, LLMC_PURGE_TAG, NULL), 0);
    /* Whole strings only: "gpt-4o" does not take "gpt-4o-mini". */
    assert_int_equal(purge(c, LLMC_PURGE_MODEL, "gpt-4o"), 20);
    assert_true(held(c, 1) && !held(c, 0) && !held(c, 2));
    assert_int_equal(purge(c, LLMC_PURGE_TAG, "blue"), 10);   /* ids 1 mod 4 */
    assert_int_equal(purge(c, LLMC_PURGE_NAMESPACE, "t1"), 0); /* all gone already */
    assert_int_equal(purge(c, LLMC_PURGE_NAMESPACE, ""), 10);  /* the no-namespace ones */
    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.purged, 40);

    for (uint64_t id = 0; id < 8; id++) {
        meta_t m = {.ns = kinds[id % 4].ns, .tags = kinds[id % 4].tags,
                    .ntags = kinds[id % 4].tags ? 2 : 0, .expires_ms = FOREVER};
        llmc_entry_t *e = mk_meta(id, 30, &m);
        assert_int_equal(llmc_cache_put(c, e, 0), 0);
        llmc_entry_unref(e);
    }
    assert_int_equal(purge(c, LLMC_PURGE_NAMESPACE, "t1"), 4);
    assert_int_equal(purge(c, LLMC_PURGE_TAG, "common"), 2);
    assert_int_equal(purge_all(c), 2);
    check_consistent(c);
    llmc_cache_free(c);
}

/* Several conditions are one conjunction; an empty selector takes nothing
   unless it says all. */
static void test_purge_conjunction(void **state)
{
    (void)state;
    llmc_cache_t *c = new_cache(4 << 20, 4, 0.5, 0);
    const char *red[] = {"red"}, *blue[] = {"blue"};
    for (uint64_t id = 0; id < 40; id++) {
        meta_t m = {.ns = id % 2 ? "a" : "b", .model = id % 4 < 2 ? "m1" : "m2",
                    .route = id % 3 ? "/v1/chat/completions" : "/v1/embeddings",
                    .tags = id % 5 ? red : blue, .ntags = 1,
                    .created_ms = (int64_t)id * 1000, .expires_ms = FOREVER};
        llmc_entry_t *e = mk_meta(id, 30, &m);
        assert_int_equal(llmc_cache_put(c, e, 0), 0);
        llmc_entry_unref(e);
    }
    llmc_purge_t none = {0};
    assert_int_equal(purge_sel(c, &none), 0);
    /* ns a (odd ids) AND model m1 (id % 4 in 0,1): ids 1 mod 4. */
    llmc_purge_t both = {.conds = LLMC_PURGE_NAMESPACE | LLMC_PURGE_MODEL, .ns = "a", .model = "m1"};
    assert_int_equal(purge_sel(c, &both), 10);
    assert_false(held(c, 1) || held(c, 5));
    assert_true(held(c, 3) && held(c, 0));
    /* A condition without its value spoils the whole conjunction. */
    llmc_purge_t half = {.conds = LLMC_PURGE_NAMESPACE | LLMC_PURGE_MODEL, .ns = "b"};
    assert_int_equal(purge_sel(c, &half), 0);
    /* Created before 10 s: ids 0..9 left of those are 0,2,3,4,6,7,8 (1,5,9 went). */
    llmc_purge_t old = {.conds = LLMC_PURGE_OLDER, .created_before_ms = 10000};
    assert_int_equal(purge_sel(c, &old), 7);
    assert_true(held(c, 10));
    /* Route, and a tag AND a route. */
    llmc_purge_t route_tag = {.conds = LLMC_PURGE_ROUTE | LLMC_PURGE_TAG,
                              .route = "/v1/embeddings", .tag = "blue"};
    assert_int_equal(purge_sel(c, &route_tag), 2); /* ids 15, 30: multiples of 15 >= 10 */
    assert_false(held(c, 15) || held(c, 30));
    /* 12,18,24,27,36,39 (21 and 33 went with ns a AND m1) */
    assert_int_equal(purge(c, LLMC_PURGE_ROUTE, "/v1/embeddings"), 6);
    assert_int_equal(purge(c, LLMC_PURGE_ROUTE, "/v1/chat"), 0);     /* whole strings */
    llmc_purge_t all = {.all = true};
    assert_int_equal(purge_sel(c, &all), 40 - 10 - 7 - 2 - 6);
    check_consistent(c);
    llmc_cache_free(c);
}

static void test_purge_key_prefix(void **state)
{
    (void)state;
    llmc_entry_t *e = mk(5, 1, FOREVER);
    char hex[2 * LLMC_KEY_LEN + 1];
    llmc_key_hex(&e->key, hex);
    for (unsigned digits = 1; digits <= 64; digits++) {
        llmc_purge_t sel = {.conds = LLMC_PURGE_KEY_PREFIX, .prefix_digits = (uint8_t)digits};
        for (unsigned i = 0; i < digits; i++) {
            unsigned v = (unsigned)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
            sel.prefix.b[i / 2] |= (uint8_t)(i % 2 ? v : v << 4);
        }
        assert_true(llmc_purge_match(&sel, e));
        /* The last digit changed: no match. */
        sel.prefix.b[(digits - 1) / 2] ^= (uint8_t)((digits - 1) % 2 ? 0x01 : 0x10);
        assert_false(llmc_purge_match(&sel, e));
    }
    llmc_purge_t zero = {.conds = LLMC_PURGE_KEY_PREFIX, .prefix_digits = 0};
    assert_false(llmc_purge_match(&zero, e));
    llmc_entry_unref(e);
}

/* A copy holds its own strings. */
static void test_purge_dup(void **state)
{
    (void)state;
    char ns[] = "team", tag[] = "t1";
    llmc_purge_t sel = {.conds = LLMC_PURGE_NAMESPACE | LLMC_PURGE_TAG, .ns = ns, .tag = tag};
    llmc_purge_t *d = llmc_purge_dup(&sel);
    assert_non_null(d);
    memset(ns, 'x', 4);
    memset(tag, 'y', 2);
    assert_string_equal(d->ns, "team");
    assert_string_equal(d->tag, "t1");
    assert_null(d->model);
    assert_null(d->route);
    assert_int_equal(d->conds, sel.conds);
    free(d);
}

static void test_purge_match_key(void **state)
{
    (void)state;
    llmc_entry_t *e = mk(5, 1, FOREVER);
    llmc_purge_t sel = {.conds = LLMC_PURGE_KEY, .key = key_of(5)};
    assert_true(llmc_purge_match(&sel, e));
    sel.key = key_of(6);
    assert_false(llmc_purge_match(&sel, e));
    llmc_entry_unref(e);
}

static void test_memory_tier(void **state)
{
    (void)state;
    llmc_tier_t *t = llmc_tier_memory_new(new_cache(1 << 20, 4, 0.5, 1000));
    assert_non_null(t);
    assert_string_equal(t->ops->name, "memory");
    llmc_cache_t *c = llmc_tier_memory_cache(t);
    assert_non_null(c);

    llmc_entry_t *e = mk(1, 100, 5000), *out;
    llmc_key_t k = key_of(1), k2 = key_of(2);
    assert_int_equal(t->ops->put(t, 0, e, 0), 0);
    assert_int_equal(t->ops->get(t, &k, 100, &out), 0);
    assert_ptr_equal(out, e);
    llmc_entry_unref(out);
    assert_int_equal(t->ops->get(t, &k2, 100, &out), LLMC_ENOENT);
    assert_int_equal(t->ops->get(t, &k, 5500, &out), 0); /* stale still counts as found */
    llmc_entry_unref(out);

    llmc_entry_t *big = mk(9, 600 * 1024, FOREVER);
    assert_int_equal(t->ops->put(t, 0, big, 0), LLMC_E2BIG);
    llmc_entry_unref(big);

    llmc_tier_stats_t ts;
    t->ops->stats(t, &ts);
    assert_int_equal(ts.hits, 2);
    assert_int_equal(ts.misses, 1);
    assert_int_equal(ts.entries, 1);
    assert_int_equal(ts.bytes, llmc__cache_charge(e));
    assert_int_equal(ts.max_bytes, 1 << 20);
    assert_int_equal(ts.stored, 1);
    assert_int_equal(ts.dropped, 1);

    /* tick() sweeps what is past its keep time. */
    t->ops->tick(t, 5999);
    t->ops->stats(t, &ts);
    assert_int_equal(ts.entries, 1);
    t->ops->tick(t, 6000);
    t->ops->stats(t, &ts);
    assert_int_equal(ts.entries, 0);
    assert_int_equal(ts.evicted_ttl, 1);

    /* A key purge removes exactly that key. */
    assert_int_equal(put_new(c, 2, 10, FOREVER, 0), 0);
    assert_int_equal(put_new(c, 3, 10, FOREVER, 0), 0);
    llmc_purge_t sel = {.conds = LLMC_PURGE_KEY, .key = k2};
    assert_int_equal(purge_now(t, &sel), 1);
    assert_int_equal(purge_now(t, &sel), 0);
    sel = (llmc_purge_t){.all = true};
    assert_int_equal(purge_now(t, &sel), 1);
    t->ops->stats(t, &ts);
    assert_int_equal(ts.purged, 2);

    /* destroy() frees the cache and its entries; e survives on our reference. */
    assert_int_equal(put_new(c, 4, 10, FOREVER, 0), 0);
    t->ops->destroy(t);
    assert_true(body_ok(e, 1));
    llmc_entry_unref(e);
    assert_null(llmc_tier_memory_new(NULL));
}

/* Four threads share one cache; each checks every body it reads. */
typedef struct {
    llmc_cache_t *c;
    _Atomic int64_t *clock;
    uint64_t seed;
    struct timespec until;
    size_t ops;
} worker_t;

static int past(const struct timespec *until)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > until->tv_sec ||
           (now.tv_sec == until->tv_sec && now.tv_nsec >= until->tv_nsec);
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    uint64_t rng = w->seed;
    int bad = 0;

    while (!past(&w->until)) {
        for (int i = 0; i < 64; i++, w->ops++) {
            int64_t now = atomic_fetch_add(w->clock, 1);
            uint64_t id = splitmix(&rng) % 2000, r = splitmix(&rng) % 100;
            llmc_key_t k = key_of(id);
            llmc_entry_t *out;
            if (r < 50) {
                if (llmc_cache_get(w->c, &k, now, &out) == 0) {
                    bad |= !body_ok(out, id);
                    llmc_entry_unref(out);
                }
            } else if (r < 85) {
                llmc_entry_t *e = mk(id, 50 + splitmix(&rng) % 4000,
                                     now + (int64_t)(splitmix(&rng) % 3000));
                int rc = llmc_cache_put(w->c, e, now);
                bad |= rc != 0 && rc != LLMC_EINVAL;
                llmc_entry_unref(e);
            } else if (r < 95) {
                llmc_cache_delete(w->c, &k);
            } else if (r < 99) {
                llmc_cache_sweep(w->c, now, 50);
            } else {
                llmc_cache_stats_t st;
                llmc_cache_stats(w->c, &st);
                bad |= st.bytes > st.max_bytes;
            }
        }
    }
    return bad ? (void *)1 : NULL;
}

static void test_threads(void **state)
{
    (void)state;
    llmc_cache_t *c = new_cache(512 * 1024, 8, 0.1, 200);
    _Atomic int64_t clock = 0;
    worker_t w[4];
    pthread_t th[4];
    struct timespec until;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += 1;
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_t){.c = c, .clock = &clock, .seed = 1000 + (uint64_t)i, .until = until};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    size_t ops = 0;
    for (int i = 0; i < 4; i++) {
        void *ret;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_null(ret);
        ops += w[i].ops;
    }
    assert_true(ops > 0);
    llmc_cache_stats_t st;
    llmc_cache_stats(c, &st);
    assert_true(st.stored > 0);
    assert_true(st.evicted_size + st.evicted_ttl + st.purged > 0);
    check_consistent(c);
    llmc_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_put_get_replace_delete),
        cmocka_unit_test(test_put_twice_is_einval),
        cmocka_unit_test(test_ttl_fake_clock),
        cmocka_unit_test(test_sieve_order),
        cmocka_unit_test(test_sieve_hand_survives_delete),
        cmocka_unit_test(test_byte_bound_random),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_too_big_replacement_drops_old),
        cmocka_unit_test(test_ref_outlives_eviction),
        cmocka_unit_test(test_sweep_incremental),
        cmocka_unit_test(test_purge_selectors),
        cmocka_unit_test(test_purge_match_key),
        cmocka_unit_test(test_purge_conjunction),
        cmocka_unit_test(test_purge_key_prefix),
        cmocka_unit_test(test_purge_dup),
        cmocka_unit_test(test_memory_tier),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
