/*
 * test_policy.c: the request's cache controls (src/gateway/policy.c) and the
 * freshness decision made from them (llmc__gw_usable, src/gateway/handler.c).
 *
 * Times are plain numbers: an entry is built with the created and expiry
 * times a case needs, and "now" is an argument, so nothing sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/gw_int.h"
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delta_seconds_leading_zeros),
        cmocka_unit_test(test_delta_seconds_malformed_is_ignored),
        cmocka_unit_test(test_delta_seconds_saturates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
