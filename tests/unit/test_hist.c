/*
 * test_hist.c: the fixed-bucket latency histogram (src/core/hist.c): which
 * bucket an observation lands in (le: equal to a bound is inside it), the
 * sum, summing writers, and the quantile estimates /stats reports.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "llmc/hist.h"

static void test_bounds_ascend_from_micro_to_minutes(void **state)
{
    (void)state;
    assert_int_equal(llmc_hist_bounds_ns[0], 10000);                  /* 10 µs */
    assert_int_equal(llmc_hist_bounds_ns[LLMC_HIST_NBOUNDS - 1], 120000000000ull);
    for (unsigned i = 1; i < LLMC_HIST_NBOUNDS; i++)
        assert_true(llmc_hist_bounds_ns[i] > llmc_hist_bounds_ns[i - 1]);
}

static void test_bucket_is_the_first_bound_not_below(void **state)
{
    (void)state;
    assert_int_equal(llmc_hist_bucket(0), 0);
    assert_int_equal(llmc_hist_bucket(10000), 0);       /* equal to the bound: inside */
    assert_int_equal(llmc_hist_bucket(10001), 1);
    assert_int_equal(llmc_hist_bucket(25000), 1);
    for (unsigned i = 0; i < LLMC_HIST_NBOUNDS; i++) {
        assert_int_equal(llmc_hist_bucket(llmc_hist_bounds_ns[i]), i);
        assert_int_equal(llmc_hist_bucket(llmc_hist_bounds_ns[i] + 1), i + 1);
    }
    assert_int_equal(llmc_hist_bucket(UINT64_MAX), LLMC_HIST_NBOUNDS); /* +Inf */
}

static void test_observe_counts_and_sums_over_writers(void **state)
{
    (void)state;
    llmc_hist_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    llmc_hist_observe(&a, 30000);        /* 30 µs: the 50 µs bucket */
    llmc_hist_observe(&a, 2000000000);   /* 2 s: the 2.5 s bucket */
    llmc_hist_observe(&b, 30000);
    llmc_hist_observe(&b, 500000000000ull); /* 500 s: +Inf */
    llmc_hist_snap_t s;
    memset(&s, 0, sizeof(s));
    llmc_hist_add(&s, &a);
    llmc_hist_add(&s, &b);
    assert_int_equal(s.count, 4);
    assert_int_equal(s.sum_ns, 30000 + 2000000000ull + 30000 + 500000000000ull);
    assert_int_equal(s.bucket[llmc_hist_bucket(30000)], 2);
    assert_int_equal(s.bucket[llmc_hist_bucket(2000000000)], 1);
    assert_int_equal(s.bucket[LLMC_HIST_NBOUNDS], 1);
}

static void test_quantiles_interpolate_within_a_bucket(void **state)
{
    (void)state;
    llmc_hist_snap_t s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(llmc_hist_quantile(&s, 0.5), 0); /* empty */
    /* 100 observations in (50 µs, 100 µs]: the median is half way. */
    s.bucket[llmc_hist_bucket(100000)] = 100;
    s.count = 100;
    assert_int_equal(llmc_hist_quantile(&s, 0.5), 75000);
    assert_int_equal(llmc_hist_quantile(&s, 1.0), 100000);
    /* Add 900 in (1 s, 2.5 s]: p50 and p90 there, p05 still among the fast. */
    s.bucket[llmc_hist_bucket(2000000000)] = 900;
    s.count = 1000;
    uint64_t p05 = llmc_hist_quantile(&s, 0.05);
    assert_true(p05 > 50000 && p05 <= 100000);
    uint64_t p50 = llmc_hist_quantile(&s, 0.5), p99 = llmc_hist_quantile(&s, 0.99);
    assert_true(p50 > 1000000000ull && p50 <= 2500000000ull);
    assert_true(p99 > p50 && p99 <= 2500000000ull);
    /* Everything beyond the last bound: the last bound is the estimate. */
    memset(&s, 0, sizeof(s));
    s.bucket[LLMC_HIST_NBOUNDS] = 3;
    s.count = 3;
    assert_int_equal(llmc_hist_quantile(&s, 0.9), 120000000000ull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_ascend_from_micro_to_minutes),
        cmocka_unit_test(test_bucket_is_the_first_bound_not_below),
        cmocka_unit_test(test_observe_counts_and_sums_over_writers),
        cmocka_unit_test(test_quantiles_interpolate_within_a_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
