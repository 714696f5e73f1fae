/*
 * test_cache_table.c: the memory cache's bucket array (src/core/cache.c,
 * included here to reach the shards).
 *
 * Each entry is charged LLMC_CACHE_ENTRY_OVERHEAD for its share of the
 * bucket array (cache_int.h). That charge is only honest while every shard
 * keeps at most two slots per entry, above its fixed minimum; and lookups
 * stay fast only while it keeps at most two entries per slot. These tests
 * hold the resize policy to both bounds while a cache grows and shrinks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/cache.c"

static llmc_key_t key_of(uint32_t id)
{
    llmc_key_t k;
    memset(&k, 0, sizeof(k));
    memcpy(k.b, &id, sizeof(id));
    k.b[31] = 0x5a;
    return k;
}

static void put(llmc_cache_t *c, uint32_t id)
{
    llmc_key_t k = key_of(id);
    llmc_entry_spec_t spec = {.key = &k, .status = 200, .expires_ms = INT64_MAX};
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);
    assert_int_equal(llmc_cache_put(c, e, 0), 0);
    llmc_entry_unref(e);
}

/* Every shard within the bounds: slots <= 2 * entries (or the minimum),
   entries <= 2 * slots. */
static void assert_bounds(llmc_cache_t *c)
{
    for (unsigned i = 0; i < c->nshards; i++) {
        struct shard *s = &c->shards[i];
        assert_true(s->nbuckets == MIN_BUCKETS || s->nbuckets <= 2 * s->count);
        assert_true(s->count <= 2 * s->nbuckets);
    }
}

static void test_two_slots_per_entry_at_most(void **state)
{
    (void)state;
    llmc_cache_config_t cfg = {.max_bytes = (size_t)1 << 30, .nshards = 4};
    llmc_cache_t *c = llmc_cache_new(&cfg);
    assert_non_null(c);
    for (uint32_t i = 0; i < 20000; i++) {
        put(c, i);
        if (i % 997 == 0)
            assert_bounds(c);
    }
    assert_bounds(c);
    /* Shrinking keeps the bounds too, down to the minimum. */
    for (uint32_t i = 0; i < 20000; i++) {
        llmc_key_t k = key_of(i);
        assert_int_equal(llmc_cache_delete(c, &k), 0);
        if (i % 997 == 0)
            assert_bounds(c);
    }
    for (unsigned i = 0; i < c->nshards; i++)
        assert_int_equal(c->shards[i].nbuckets, MIN_BUCKETS);
    llmc_cache_free(c);
}

/* A shard whose count moves back and forth across a threshold must not be
   rehashed each time: the thresholds are a factor of four apart. */
static void test_no_rehash_churn(void **state)
{
    (void)state;
    llmc_cache_config_t cfg = {.max_bytes = (size_t)1 << 30, .nshards = 1};
    llmc_cache_t *c = llmc_cache_new(&cfg);
    assert_non_null(c);
    uint32_t n = 2 * 2 * MIN_BUCKETS + 1; /* just past a doubling */
    for (uint32_t i = 0; i < n; i++)
        put(c, i);
    size_t nb = c->shards[0].nbuckets;
    for (int round = 0; round < 50; round++) {
        llmc_key_t k = key_of(n - 1);
        assert_int_equal(llmc_cache_delete(c, &k), 0);
        assert_int_equal(c->shards[0].nbuckets, nb);
        put(c, n - 1);
        assert_int_equal(c->shards[0].nbuckets, nb);
    }
    llmc_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_slots_per_entry_at_most),
        cmocka_unit_test(test_no_rehash_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
