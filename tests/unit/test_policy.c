/*
 * test_policy.c: the request's cache controls (src/gateway/policy.c): the
 * freshness decision made from them (llmc_policy_usable), If-None-Match
 * against an entry's ETag, and list-valued headers sent on several lines.
 *
 * Times are plain numbers: an entry is built with the created and expiry
 * times a case needs, and "now" is an argument, so nothing sleeps. Request
 * headers are an llmc_http_header_t array built by hand, as the HTTP server
 * fills it (names lowercased, values trimmed and NUL-terminated).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/policy.h"
#include "llmc/error.h"

#define TTL 300000
#define MAX_TTL 86400000

static llmc_policy_t cc(const char *cache_control)
{
    llmc_policy_t p;
    char err[256] = "";
    assert_int_equal(llmc_policy_parse(&p, cache_control, NULL, NULL, NULL, NULL, TTL, MAX_TTL,
                                       err, sizeof err), 0);
    return p;
}

static void test_delta_seconds_leading_zeros(void **state)
{
    (void)state;
    /* 13 and more digits: still their value, not "huge". */
    assert_int_equal(cc("max-age=0000000000000").max_age_ms, 0);
    assert_int_equal(cc("min-fresh=00000000000005").min_fresh_ms, 5000);
    assert_int_equal(cc("max-stale=\"0000000000000007\"").max_stale_ms, 7000);
}

static void test_delta_seconds_malformed_is_ignored(void **state)
{
    (void)state;
    /* Not digits, whatever the length: the directive counts as absent. */
    assert_int_equal(cc("max-age=abcdefghijklmnop").max_age_ms, LLMC_POLICY_UNSET);
    assert_int_equal(cc("min-fresh=12345678901234x").min_fresh_ms, 0);
    assert_int_equal(cc("max-age=-1").max_age_ms, LLMC_POLICY_UNSET);
    assert_int_equal(cc("max-age=").max_age_ms, LLMC_POLICY_UNSET);
}

static void test_delta_seconds_saturates(void **state)
{
    (void)state;
    /* RFC 9111 1.2.2: too big to hold means the largest value, never a wrap. */
    int64_t big = cc("max-age=99999999999999999999999999").max_age_ms;
    assert_true(big >= INT64_MAX / 1000 * 1000 - 1000);
    assert_int_equal(cc("max-age=9223372036854775807").max_age_ms, big);
    assert_int_equal(cc("max-age=31536000").max_age_ms, 31536000000LL);
}

static llmc_entry_t *entry(int64_t created, int64_t expires)
{
    llmc_key_t k;
    memset(&k, 7, sizeof k);
    llmc_entry_spec_t spec = {.key = &k, .status = 200, .created_ms = created,
                              .expires_ms = expires, .body = "{}", .body_len = 2};
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);
    return e;
}

static void test_min_fresh_with_max_stale(void **state)
{
    (void)state;
    llmc_entry_t *e = entry(0, 100000); /* fresh until 100 s */
    llmc_policy_t p = cc("min-fresh=10, max-stale=60");
    /* 5 s left, 10 wanted: 5 s short, forgiven by max-stale. */
    assert_int_equal(llmc_policy_usable(&p, e, 95000), LLMC_USE_FRESH);
    /* 5 s past expiry: 15 s short, still within 60. */
    assert_int_equal(llmc_policy_usable(&p, e, 105000), LLMC_USE_STALE);
    /* 55 s past expiry: 65 s short. */
    assert_int_equal(llmc_policy_usable(&p, e, 155000), LLMC_USE_NO);
    p = cc("min-fresh=10, max-stale=2");
    assert_int_equal(llmc_policy_usable(&p, e, 95000), LLMC_USE_NO);
    assert_int_equal(llmc_policy_usable(&p, e, 89000), LLMC_USE_FRESH);
    /* A bare max-stale forgives any shortfall, however big min-fresh. */
    p = cc("min-fresh=99999999999999999999, max-stale");
    assert_int_equal(llmc_policy_usable(&p, e, 200000), LLMC_USE_STALE);
    llmc_entry_unref(e);
}

static void test_usable_without_combination(void **state)
{
    (void)state;
    llmc_entry_t *e = entry(0, 100000);
    llmc_policy_t p = cc("");
    assert_int_equal(llmc_policy_usable(&p, e, 99999), LLMC_USE_FRESH);
    assert_int_equal(llmc_policy_usable(&p, e, 100000), LLMC_USE_NO);
    p = cc("min-fresh=10");
    assert_int_equal(llmc_policy_usable(&p, e, 90000), LLMC_USE_FRESH);
    assert_int_equal(llmc_policy_usable(&p, e, 90001), LLMC_USE_NO);
    p = cc("max-stale=5");
    assert_int_equal(llmc_policy_usable(&p, e, 105000), LLMC_USE_STALE);
    assert_int_equal(llmc_policy_usable(&p, e, 105001), LLMC_USE_NO);
    p = cc("max-age=1");
    assert_int_equal(llmc_policy_usable(&p, e, 1000), LLMC_USE_FRESH);
    assert_int_equal(llmc_policy_usable(&p, e, 1001), LLMC_USE_NO);
    /* A huge min-fresh on an expired entry must not overflow into "fresh". */
    p = cc("min-fresh=99999999999999999999");
    assert_int_equal(llmc_policy_usable(&p, e, 200000), LLMC_USE_NO);
    llmc_entry_unref(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delta_seconds_leading_zeros),
        cmocka_unit_test(test_delta_seconds_malformed_is_ignored),
        cmocka_unit_test(test_delta_seconds_saturates),
        cmocka_unit_test(test_min_fresh_with_max_stale),
        cmocka_unit_test(test_usable_without_combination),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
