/*
 * test_memzip.c: compression at rest in the memory tier (issue 18):
 * packed entries round trip with every field intact, the tier hands out
 * byte-identical bodies and keeps packed entries in its main cache, a hot
 * set serves repeated hits without decompressing and stays within its
 * share, a new answer or a purge never leaves an old hot copy behind, and
 * the bytes charged are the packed ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/cache_int.h"
#include "llmc/error.h"
#include "llmc/record.h"
#include "llmc/zdict.h"
#include "tier/memory.h"

static const char *const words[] = {
    "the", "cache", "server", "returns", "a", "summary", "of", "each", "record", "when",
    "model", "request", "is", "large", "before", "deadline", "user", "profile", "reads",
    "quickly", "network", "latency", "improves", "budget", "report", "monthly", "garden",
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
    size_t cap = n + 512, len = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    len += (size_t)snprintf(b, cap, "{\"id\":\"chatcmpl-%08x\",\"object\":\"chat.completion\","
                            "\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"",
                            next());
    while (len < n)
        len += (size_t)snprintf(b + len, cap - len, "%s ",
                                words[next() % (sizeof words / sizeof words[0])]);
    snprintf(b + len, cap - len, "\"}}]}");
    return b;
}

static llmc_key_t key_of(uint32_t seed)
{
    llmc_key_t k;
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        k.b[i] = (uint8_t)(seed * 31 + (uint32_t)i * 7);
    memcpy(k.b, &seed, sizeof seed); /* distinct seeds, distinct keys */
    return k;
}

static const float vec[4] = {0.25f, -1.5f, 3.0f, 0.125f};

static llmc_entry_t *entry_of(const llmc_key_t *k, const char *body, const char *ns)
{
    const char *tags[] = {"alpha", "beta"};
    llmc_usage_t u = {.prompt_tokens = 12, .completion_tokens = 34};
    llmc_entry_spec_t s = {
        .key = k, .status = 200, .created_ms = 1000, .expires_ms = 1000000,
        .content_type = "application/json", .ns = ns, .model = "gpt-4o-mini",
        .route = "/v1/chat/completions", .tags = tags, .ntags = 2, .vector = vec, .dim = 4,
        .body = body, .body_len = strlen(body), .usage = &u,
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    assert_non_null(e);
    return e;
}

static void zinit(bool on)
{
    llmc_zdict_opts_t o = {.on = on, .min_bytes = 256};
    char err[200] = "";
    assert_int_equal(llmc_zdict_init(&o, NULL, err, sizeof err), 0);
}

static int teardown(void **state)
{
    (void)state;
    llmc_zdict_shutdown();
    return 0;
}

static llmc_tier_t *tier_of(size_t max_bytes, unsigned hot_percent)
{
    llmc_cache_config_t cc = {.max_bytes = max_bytes, .max_entry_share = 0.5};
    llmc_tier_t *t = llmc_tier_memory_open(&cc, hot_percent, 64 << 10);
    assert_non_null(t);
    return t;
}

typedef struct xs {
    uint64_t raw_bytes, packed_bytes, hot_entries, hot_bytes, hot_max_bytes, hot_hits, unpacks;
} xs_t;

static xs_t xstats(llmc_tier_t *t)
{
    xs_t x;
    assert_int_equal(t->ops->nxstats, sizeof(x) / sizeof(uint64_t));
    t->ops->xstats(t, &x);
    return x;
}

static void expect_same_answer(const llmc_entry_t *a, const llmc_entry_t *b)
{
    char ta[LLMC_ETAG_LEN], tb[LLMC_ETAG_LEN];
    llmc_usage_t ua, ub;

    assert_false(llmc_entry_is_packed(a));
    assert_int_equal(a->body_len, b->body_len);
    assert_memory_equal(a->body, b->body, a->body_len);
    assert_int_equal(a->body[a->body_len], 0);
    llmc_entry_etag(a, ta);
    llmc_entry_etag(b, tb);
    assert_string_equal(ta, tb);
    assert_string_equal(llmc_entry_ns(a), llmc_entry_ns(b));
    assert_string_equal(llmc_entry_model(a), llmc_entry_model(b));
    assert_string_equal(llmc_entry_route(a), llmc_entry_route(b));
    assert_string_equal(llmc_entry_content_type(a), llmc_entry_content_type(b));
    assert_int_equal(a->ntags, b->ntags);
    assert_string_equal(llmc_entry_tag(a, 1), llmc_entry_tag(b, 1));
    assert_int_equal(a->dim, b->dim);
    assert_memory_equal(llmc_entry_vector(a), llmc_entry_vector(b), sizeof vec);
    assert_true(llmc_entry_usage(a, &ua));
    assert_true(llmc_entry_usage(b, &ub));
    assert_memory_equal(&ua, &ub, sizeof ua);
    assert_int_equal(a->expires_ms, b->expires_ms);
    assert_int_equal(a->created_ms, b->created_ms);
}

static void test_pack_round_trip(void **state)
{
    (void)state;
    zinit(true);
    llmc_key_t k = key_of(1);
    char *body = answer(4000);
    llmc_entry_t *e = entry_of(&k, body, "ns");
    llmc_entry_t *p = llmc_entry_pack(e);
    assert_non_null(p);
    assert_true(llmc_entry_is_packed(p));
    assert_true(p->body_len < e->body_len / 2);
    assert_true(p->mem_bytes < e->mem_bytes);
    assert_int_equal(llmc_entry_raw_len(p), e->body_len);
    assert_null(llmc_entry_pack(p)); /* never packed twice */
    /* What purges read is there on the packed entry too. */
    assert_string_equal(llmc_entry_ns(p), "ns");
    assert_string_equal(llmc_entry_tag(p, 0), "alpha");

    int rc = -1;
    llmc_entry_t *u = llmc_entry_unpack(p, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(u);
    expect_same_answer(u, e);
    llmc_entry_unref(u);
    llmc_entry_unref(p);
    llmc_entry_unref(e);
    free(body);
}

static void test_small_or_off_not_packed(void **state)
{
    (void)state;
    zinit(false);
    llmc_key_t k = key_of(2);
    char *body = answer(4000);
    llmc_entry_t *e = entry_of(&k, body, "");
    assert_null(llmc_entry_pack(e)); /* compression at rest off */
    llmc_zdict_shutdown();
    zinit(true);
    llmc_entry_t *s = entry_of(&k, "{\"short\":true}", "");
    assert_null(llmc_entry_pack(s)); /* below --compress-at-rest-min */
    /* A spec can never claim to be packed. */
    llmc_entry_spec_t spec = {.key = &k, .flags = LLMC_ENTRY_PACKED, .body = "x", .body_len = 1};
    llmc_entry_t *f = llmc_entry_new(&spec);
    assert_false(llmc_entry_is_packed(f));
    llmc_entry_unref(f);
    llmc_entry_unref(s);
    llmc_entry_unref(e);
    free(body);
}

/* A compressed entry is held packed; the first hit unpacks it once, the
   next ones are served from the hot copy. */
static void test_tier_hot_and_cold(void **state)
{
    (void)state;
    zinit(true);
    llmc_tier_t *t = tier_of(8 << 20, 10);
    llmc_key_t k = key_of(3);
    char *body = answer(3000);
    llmc_entry_t *e = entry_of(&k, body, "ns"), *got = NULL, *again = NULL, *raw = NULL;
    assert_int_equal(t->ops->put(t, 0, e, 10), 0);

    assert_int_equal(llmc_cache_get(llmc_tier_memory_cache(t), &k, 10, &raw), 0);
    assert_true(llmc_entry_is_packed(raw));
    llmc_entry_unref(raw);
    xs_t x = xstats(t);
    assert_int_equal(x.raw_bytes, e->body_len);
    assert_true(x.packed_bytes < x.raw_bytes / 2);
    assert_int_equal(x.hot_max_bytes, (8u << 20) / 100 * 10);

    assert_int_equal(t->ops->get(t, &k, 20, &got), 0);
    expect_same_answer(got, e);
    assert_int_equal(t->ops->get(t, &k, 30, &again), 0);
    assert_ptr_equal(again, got); /* the hot copy itself: no second unpack */
    x = xstats(t);
    assert_int_equal(x.unpacks, 1);
    assert_int_equal(x.hot_hits, 1);
    assert_int_equal(x.hot_entries, 1);
    assert_int_equal(x.hot_bytes, llmc__cache_charge(got));

    llmc_tier_stats_t st;
    t->ops->stats(t, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.max_bytes, 8u << 20);
    llmc_cache_stats_t ms;
    llmc_cache_stats(llmc_tier_memory_cache(t), &ms);
    assert_int_equal(ms.bytes, llmc__cache_charge(raw)); /* the packed entry, not the body */
    assert_int_equal(st.bytes, ms.bytes + x.hot_bytes);
    assert_true(ms.bytes < e->mem_bytes / 2);
    llmc_entry_unref(again);
    llmc_entry_unref(got);
    llmc_entry_unref(e);
    t->ops->destroy(t);
    free(body);
}

static void purged(void *arg, size_t n)
{
    *(size_t *)arg = n;
}

/* A new answer under the key, or a purge, takes the hot copy with it. */
static void test_replace_and_purge_clear_hot(void **state)
{
    (void)state;
    zinit(true);
    llmc_tier_t *t = tier_of(8 << 20, 10);
    llmc_key_t k = key_of(4);
    char *b1 = answer(3000), *b2 = answer(3000);
    llmc_entry_t *e1 = entry_of(&k, b1, "ns"), *e2 = entry_of(&k, b2, "ns"), *got = NULL;
    assert_int_equal(t->ops->put(t, 0, e1, 10), 0);
    assert_int_equal(t->ops->get(t, &k, 20, &got), 0);
    llmc_entry_unref(got);
    assert_int_equal(xstats(t).hot_entries, 1);

    assert_int_equal(t->ops->put(t, 0, e2, 30), 0);
    assert_int_equal(t->ops->get(t, &k, 40, &got), 0);
    expect_same_answer(got, e2);
    llmc_entry_unref(got);
    assert_int_equal(xstats(t).unpacks, 2);

    assert_int_equal(xstats(t).hot_entries, 1);
    llmc_purge_t sel = {.conds = LLMC_PURGE_NAMESPACE, .ns = "ns"};
    size_t removed = 99;
    t->ops->purge(t, 0, &sel, purged, &removed);
    assert_int_equal(removed, 1); /* the answer, its hot copy not counted apart */
    assert_int_equal(xstats(t).hot_entries, 0);
    assert_int_equal(t->ops->get(t, &k, 50, &got), LLMC_ENOENT);
    assert_null(got);

    /* A key purge too. */
    assert_int_equal(t->ops->put(t, 0, e1, 60), 0);
    assert_int_equal(t->ops->get(t, &k, 70, &got), 0);
    llmc_entry_unref(got);
    llmc_purge_t ksel = {.conds = LLMC_PURGE_KEY, .key = k};
    t->ops->purge(t, 0, &ksel, purged, &removed);
    assert_int_equal(removed, 1);
    assert_int_equal(t->ops->get(t, &k, 80, &got), LLMC_ENOENT);
    llmc_entry_unref(e1);
    llmc_entry_unref(e2);
    t->ops->destroy(t);
    free(b1);
    free(b2);
}

/* The hot set keeps to its share: many answers hit once each leave at most
   its budget of copies, and every answer is still served whole. Entries
   below the minimum are kept and served as they came. */
static void test_hot_set_bounded(void **state)
{
    (void)state;
    zinit(true);
    llmc_tier_t *t = tier_of(4 << 20, 5); /* 209,715 bytes of hot copies */
    enum { N = 200 };
    char *bodies[N];
    llmc_entry_t *es[N];
    for (int i = 0; i < N; i++) {
        llmc_key_t k = key_of(100 + (uint32_t)i);
        bodies[i] = answer(2000 + (size_t)i * 10);
        es[i] = entry_of(&k, bodies[i], "");
        assert_int_equal(t->ops->put(t, 0, es[i], 10), 0);
    }
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < N; i++) {
            llmc_entry_t *got = NULL;
            assert_int_equal(t->ops->get(t, &es[i]->key, 20, &got), 0);
            expect_same_answer(got, es[i]);
            llmc_entry_unref(got);
        }
    xs_t x = xstats(t);
    assert_true(x.hot_bytes <= x.hot_max_bytes);
    assert_true(x.hot_entries < N);                /* ~2 KB copies: not all fit */
    assert_true(x.unpacks > N);                    /* evicted copies were made again */
    assert_int_equal(x.unpacks + x.hot_hits, 2 * N);
    llmc_tier_stats_t st;
    t->ops->stats(t, &st);
    assert_int_equal(st.entries, N);
    assert_true(st.bytes <= st.max_bytes);

    llmc_key_t sk = key_of(7);
    llmc_entry_t *small = entry_of(&sk, "{\"id\":\"tiny\"}", ""), *got = NULL;
    assert_int_equal(t->ops->put(t, 0, small, 30), 0);
    assert_int_equal(t->ops->get(t, &sk, 40, &got), 0);
    assert_ptr_equal(got, small); /* stored as it came */
    llmc_entry_unref(got);
    llmc_entry_unref(small);

    /* Above the tier's pack_max (64 KiB here): kept as it came too. */
    llmc_key_t bk = key_of(8);
    char *bb = answer(70 << 10);
    llmc_entry_t *big = entry_of(&bk, bb, "");
    assert_int_equal(t->ops->put(t, 0, big, 30), 0);
    assert_int_equal(t->ops->get(t, &bk, 40, &got), 0);
    assert_ptr_equal(got, big);
    llmc_entry_unref(got);
    llmc_entry_unref(big);
    free(bb);
    for (int i = 0; i < N; i++) {
        llmc_entry_unref(es[i]);
        free(bodies[i]);
    }
    t->ops->destroy(t);
}

/* Accounting: the same answers take several times fewer charged bytes
   packed than as they came (a cache sized for them holds them all). */
static void test_packed_accounting(void **state)
{
    (void)state;
    llmc_tier_stats_t st[2];
    for (int on = 0; on < 2; on++) {
        zinit(on);
        llmc_tier_t *t = tier_of(16 << 20, on ? 10 : 0);
        for (uint32_t i = 0; i < 300; i++) {
            llmc_key_t k = key_of(1000 + i);
            char *b = answer(3000);
            llmc_entry_t *e = entry_of(&k, b, "");
            assert_int_equal(t->ops->put(t, 0, e, 10), 0);
            llmc_entry_unref(e);
            free(b);
        }
        t->ops->stats(t, &st[on]);
        assert_int_equal(st[on].entries, 300);
        t->ops->destroy(t);
        llmc_zdict_shutdown();
    }
    assert_true(st[1].bytes * 2 < st[0].bytes);
}

static bool dict_file(const char *dir, uint32_t id)
{
    char path[512];
    snprintf(path, sizeof path, "%s/zdict-%u", dir, id);
    return access(path, F_OK) == 0;
}

/* n packed entries of fresh answers (each sampled for training too). */
static void pack_some(llmc_entry_t **out, int n, uint32_t seed)
{
    for (int i = 0; i < n; i++) {
        llmc_key_t k = key_of(seed + (uint32_t)i);
        char *b = answer(1500 + next() % 1500);
        llmc_entry_t *e = entry_of(&k, b, "");
        out[i] = llmc_entry_pack(e);
        assert_non_null(out[i]);
        llmc_entry_unref(e);
        free(b);
    }
}

static llmc_zdict_stats_t zstats(void)
{
    llmc_zdict_stats_t st;
    llmc_zdict_get_stats(&st);
    return st;
}

/* The dictionary's lifecycle: an old dictionary stays while packed entries
   use it and goes (file and all) with the last of them; one a disk record
   was written with stays for good, and comes back after a restart. */
static void test_dict_lifecycle(void **state)
{
    (void)state;
    char dir[] = "/tmp/llmc-memzip-XXXXXX";
    assert_non_null(mkdtemp(dir));
    llmc_zdict_opts_t o = {.on = true, .min_bytes = 256};
    char err[200] = "";
    assert_int_equal(llmc_zdict_init(&o, dir, err, sizeof err), 0);
    enum { N = 200 };
    llmc_entry_t *a[N], *b[N];

    pack_some(a, N, 5000); /* plain zstd, and samples */
    for (int i = 0; i < N; i++)
        llmc_entry_unref(a[i]);
    assert_int_equal(llmc_zdict_train_now(), 0);
    uint32_t d1 = zstats().current;
    assert_true(d1 > 0 && dict_file(dir, d1));
    pack_some(a, N, 6000);
    assert_int_equal(llmc_entry_dict_id(a[0]), d1);

    assert_int_equal(llmc_zdict_train_now(), 0);
    uint32_t d2 = zstats().current;
    assert_true(d2 > d1);
    assert_int_equal(zstats().count, 2); /* d1 still used by a[] */
    int rc = -1;
    llmc_entry_t *u = llmc_entry_unpack(a[N - 1], &rc);
    assert_int_equal(rc, 0);
    llmc_entry_unref(u);
    pack_some(b, N, 7000);
    assert_int_equal(llmc_entry_dict_id(b[0]), d2);

    for (int i = 0; i < N - 1; i++)
        llmc_entry_unref(a[i]);
    assert_int_equal(zstats().count, 2);  /* one entry left on d1 */
    assert_true(dict_file(dir, d1));
    llmc_entry_unref(a[N - 1]);
    assert_int_equal(zstats().count, 1);  /* the last one gone: d1 freed */
    assert_int_equal(zstats().removed, 1);
    assert_false(dict_file(dir, d1));

    /* A record written with d2 pins it. */
    llmc_record_plan_t pl;
    int ok = 0;
    for (int i = 0; i < N && !ok; i++) {
        rc = -1;
        llmc_entry_t *full = llmc_entry_unpack(b[i], &rc);
        assert_int_equal(rc, 0);
        assert_int_equal(llmc_record_plan(full, &pl), 0);
        ok = pl.dict_id == d2;
        llmc_record_plan_free(&pl);
        llmc_entry_unref(full);
    }
    assert_true(ok);
    assert_int_equal(llmc_zdict_train_now(), 0);
    uint32_t d3 = zstats().current;
    for (int i = 0; i < N; i++)
        llmc_entry_unref(b[i]);
    assert_int_equal(zstats().count, 2);  /* d2 kept for the records */
    assert_true(dict_file(dir, d2) && dict_file(dir, d3));

    llmc_zdict_shutdown();
    assert_int_equal(llmc_zdict_init(&o, dir, err, sizeof err), 0);
    assert_int_equal(zstats().count, 2);
    assert_int_equal(zstats().current, d3);
    llmc_zdict_shutdown();
    char path[512];
    snprintf(path, sizeof path, "%s/zdict-%u", dir, d2);
    unlink(path);
    snprintf(path, sizeof path, "%s/zdict-%u", dir, d3);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
}

/* With sample_held_only (the gateway's setting), a disk record's packing
   does not sample the answer the memory tier already sampled. */
static void test_records_not_sampled_twice(void **state)
{
    (void)state;
    llmc_zdict_opts_t o = {.on = true, .min_bytes = 256, .sample_held_only = true};
    assert_int_equal(llmc_zdict_init(&o, NULL, NULL, 0), 0);
    for (int i = 0; i < 50; i++) {
        char *b = answer(2000);
        uint8_t *z = NULL;
        size_t zl;
        uint32_t id;
        assert_int_equal(llmc_zdict_pack(b, strlen(b), &z, &zl, &id), 1);
        free(z);
        free(b);
    }
    assert_int_equal(llmc_zdict_train_now(), LLMC_EINVAL); /* nothing sampled */
    for (int i = 0; i < 300; i++) {
        char *b = answer(2000);
        llmc_zdict_sample(b, strlen(b));
        free(b);
    }
    assert_int_equal(llmc_zdict_train_now(), 0);
    llmc_zdict_shutdown();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_pack_round_trip, teardown),
        cmocka_unit_test_teardown(test_small_or_off_not_packed, teardown),
        cmocka_unit_test_teardown(test_tier_hot_and_cold, teardown),
        cmocka_unit_test_teardown(test_replace_and_purge_clear_hot, teardown),
        cmocka_unit_test_teardown(test_hot_set_bounded, teardown),
        cmocka_unit_test(test_packed_accounting),
        cmocka_unit_test(test_dict_lifecycle),
        cmocka_unit_test(test_records_not_sampled_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
