/* The semantic tier under random lookups, stores, purges, sweeps and
   evictions, with its invariants checked after every step: the .c is
   included so the check can read the records, their key and age order, the
   alias map and the index. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tier/semantic.c"

#define NOW 1000000

/* Every invariant of the tier's own structures. */
static void check_tier(sem_tier_t *s)
{
    char why[200];
    size_t live = 0, aliases = 0, free_seen = 0;
    uint64_t bytes = 0;

    if (llmc_vindex_check(s->ix, why, sizeof(why)) != 0)
        fail_msg("index: %s", why);
    for (size_t i = 0; i < s->cap; i++) {
        const rec_t *r = &s->recs[i];
        if (!r->e) {
            assert_int_equal(r->naliases, 0);
            continue;
        }
        live++;
        bytes += r->e->mem_bytes + LLMC_LEX_DIM * sizeof(float);
        assert_non_null(r->q);
        assert_true(r->naliases <= LLMC_TIER_SEMANTIC_ALIASES);
        assert_int_equal(do_rec_find(s, &r->e->key), (long)i); /* found by its key */
        for (uint8_t k = 0; k < r->naliases; k++) {
            const alias_t *al = llmc_keymap_find(&s->amap, &r->aliases[k]);
            assert_non_null(al);
            assert_int_equal(al->slot, i); /* the map points back */
        }
        aliases += r->naliases;
    }
    for (size_t i = 0; i < s->nfree; i++) {
        assert_true(s->free_slots[i] < s->cap);
        assert_null(s->recs[s->free_slots[i]].e);
        free_seen++;
    }
    assert_int_equal(live, s->live);
    assert_int_equal(live + free_seen, s->cap);
    assert_int_equal(live, llmc_vindex_count(s->ix));
    assert_int_equal(bytes, s->bytes);
    assert_int_equal(llmc_keymap_count(&s->recmap), live); /* no key of a freed slot */
    size_t used = 0, pos = 0;
    const llmc_key_t *key;
    void *v;
    while (llmc_keymap_next(&s->amap, &pos, &key, &v)) {
        used++;
        assert_non_null(s->recs[((const alias_t *)v)->slot].e);
    }
    assert_int_equal(used, aliases);
    /* The age list holds every live record once, linked both ways. */
    size_t aged = 0;
    uint32_t prev = NO_SLOT;
    for (uint32_t i = s->oldest; i != NO_SLOT; prev = i, i = s->recs[i].newer) {
        assert_true(i < s->cap && aged < live);
        assert_non_null(s->recs[i].e);
        assert_int_equal(s->recs[i].older, prev);
        aged++;
    }
    assert_int_equal(prev, s->newest);
    assert_int_equal(aged, live);
}

static uint64_t rng = 0x2545f4914f6cdd1dull;

static unsigned pick(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static void noop(void *arg, size_t removed)
{
    (void)arg;
    (void)removed;
}

static void test_churn(void **state)
{
    (void)state;
    /* Few slots and few topics: evictions, re-stores and aliases all happen. */
    llmc_semantic_config_t cfg = {.max_entries = 8};
    llmc_tier_t *t = llmc_tier_semantic_new(&cfg);
    sem_tier_t *s = impl(t);
    static const char *const topics[] = {"bake bread", "brew coffee", "boil an egg", "fry rice",
                                         "tie a tie", "learn Rust", "sort a list", "fix a bike",
                                         "grow tomatoes", "paint a wall"};
    static const char *const forms[] = {"How do I %s?", "how do i %s", "Please, how do I %s?",
                                        "HOW DO I %s", "how do I %s??", "Hey, how do I %s"};
    static const char *const models[] = {"m1", "m2"};
    int64_t now = NOW;
    unsigned hits = 0, stores = 0;

    for (int step = 0; step < 4000; step++) {
        char q[128], body[512];
        unsigned topic = pick(10), form = pick(6), model = pick(2);
        snprintf(q, sizeof(q), forms[form], topics[topic]);
        snprintf(body, sizeof(body),
                 "{\"messages\":[{\"content\":\"%s\",\"role\":\"user\"}],\"model\":\"%s\"}", q,
                 models[model]);
        /* One key per (topic, form, model): a repeat is the same request. */
        llmc_key_t key;
        memset(&key, 0, sizeof(key));
        key.b[0] = (uint8_t)topic;
        key.b[1] = (uint8_t)form;
        key.b[2] = (uint8_t)model;
        llmc_tier_query_t query = {.key = key, .path = "/v1/chat/completions", .body = body,
                                   .body_len = strlen(body), .scope = "", .ns = "",
                                   .model = models[model], .similar = true};
        unsigned op = pick(20);
        if (op < 12) {
            llmc_tier_lookup_t lk = {.query = &query, .now_ms = now, .worker = 0};
            if (t->ops->lookup(t, &lk) == 0) {
                hits++;
                llmc_entry_unref(lk.entry);
            } else if (pick(3) > 0) {
                llmc_entry_spec_t spec = {
                    .key = &key, .status = 200, .created_ms = now,
                    .expires_ms = now + 1000 + pick(20000), .route = "/v1/chat/completions",
                    .model = models[model], .body = q, .body_len = strlen(q),
                };
                llmc_entry_t *e = llmc_entry_new(&spec);
                assert_int_equal(t->ops->put(t, 0, e, now), 0);
                llmc_entry_unref(e);
                stores++;
            }
        } else if (op < 15) {
            llmc_purge_t sel = {.conds = LLMC_PURGE_KEY, .key = key}; /* a record or an alias */
            t->ops->purge(t, 0, &sel, noop, NULL);
        } else if (op == 15) {
            llmc_purge_t sel = {.conds = LLMC_PURGE_MODEL, .model = models[model]};
            t->ops->purge(t, 0, &sel, noop, NULL);
        } else {
            now += pick(3000);
            t->ops->tick(t, now);
        }
        check_tier(s);
    }
    printf("  hits %u stores %u alias_hits %llu evicted %llu/%llu purged %llu live %zu\n", hits, stores,
           (unsigned long long)s->xs.alias_hits, (unsigned long long)s->st.evicted_size,
           (unsigned long long)s->st.evicted_ttl, (unsigned long long)s->st.purged, s->live);
    /* The walk did what it is for. */
    assert_true(hits > 100);
    assert_true(stores > 100);
    assert_true(s->xs.alias_hits > 10);
    assert_true(s->st.evicted_size > 0 && s->st.evicted_ttl > 0 && s->st.purged > 0);
    t->ops->destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
