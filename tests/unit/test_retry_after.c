/*
 * test_retry_after.c: reading an upstream's Retry-After (src/gateway/fetch.c,
 * included here to reach its statics retry_after_s and retry_after_ms).
 *
 * The value decides how long a refused call (429, 503) waits before its
 * retry, so a value that wraps around or is misread turns into a retry at
 * once or a wait for days. The date cases are built from the clock, as the
 * parser reads the clock itself; they allow a little slack for that.
 *
 * Linking: this file defines fetch.c's exported functions itself, so the
 * archive's fetch.o is never pulled in (nothing else is left for it to
 * provide) and nothing is defined twice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "gateway/fetch.c"

#define MAX_S ((int64_t)RETRY_AFTER_MAX_S)
#define DFLT 1234u

/* now + delta seconds written with fmt (a strftime format, UTC). */
static void date_as(char *buf, size_t len, const char *fmt, time_t delta)
{
    time_t t = time(NULL) + delta;
    struct tm tm;
    assert_non_null(gmtime_r(&t, &tm));
    assert_true(strftime(buf, len, fmt, &tm) > 0);
}

/* An IMF-fixdate (RFC 9110 5.6.7) for now + delta seconds. */
static void http_date(char *buf, size_t len, time_t delta)
{
    date_as(buf, len, "%a, %d %b %Y %H:%M:%S GMT", delta);
}

static uint64_t ms(const char *pass)
{
    return retry_after_ms(pass, strlen(pass), DFLT);
}

/* ---- retry_after_s: one value ------------------------------------------- */

static void test_delta_seconds(void **state)
{
    (void)state;
    assert_int_equal(retry_after_s("0"), 0);
    assert_int_equal(retry_after_s("7"), 7);
    assert_int_equal(retry_after_s("120"), 120);
    assert_int_equal(retry_after_s("007"), 7);
}

static void test_spaces_around(void **state)
{
    (void)state;
    assert_int_equal(retry_after_s("  5"), 5);
    assert_int_equal(retry_after_s("5  "), 5);
    assert_int_equal(retry_after_s(" \t 5 \t"), 5);
    /* Space inside the number is not a number. */
    assert_int_equal(retry_after_s("5 5"), -1);
}

static void test_huge_saturates(void **state)
{
    (void)state;
    assert_int_equal(retry_after_s("86399"), 86399);
    assert_int_equal(retry_after_s("86400"), MAX_S);
    assert_int_equal(retry_after_s("86401"), MAX_S);
    assert_int_equal(retry_after_s("999999999"), MAX_S);
    /* Past 2^64 and 2^63: a wrap would give a short (or negative) wait. */
    assert_int_equal(retry_after_s("18446744073709551617"), MAX_S);
    assert_int_equal(retry_after_s("9223372036854775808"), MAX_S);
    assert_int_equal(retry_after_s("99999999999999999999999999999999999999999999"), MAX_S);
    assert_int_equal(retry_after_s("00000000000000000000000000000000000000000003"), 3);
}

static void test_not_a_value(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "-1", "-0", "+5", "", "   ", "abc", "5s", "1.5", "0x10", "5,6",
        "Mon, 32 Foo 2026 00:00:00 GMT", "Wed, 02 Dec 2026 10:00:00", /* no GMT */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (retry_after_s(bad[i]) != -1)
            fail_msg("'%s' was read as %lld", bad[i], (long long)retry_after_s(bad[i]));
    }
}

static void test_date_in_future(void **state)
{
    (void)state;
    char d[64];
    http_date(d, sizeof d, 30);
    int64_t s = retry_after_s(d);
    assert_in_range(s, 28, 32);
    /* With spaces around it, as a header value may come. */
    char padded[80];
    snprintf(padded, sizeof padded, "  %s  ", d);
    assert_in_range(retry_after_s(padded), 28, 32);
    /* A date a year ahead is as far as any wait goes. */
    http_date(d, sizeof d, 366 * 86400);
    assert_int_equal(retry_after_s(d), MAX_S);
}

static void test_date_in_past(void **state)
{
    (void)state;
    char d[64];
    http_date(d, sizeof d, -3600);
    assert_int_equal(retry_after_s(d), 0);
    assert_int_equal(retry_after_s("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    /* Trailing garbage after a date is not a date. */
    http_date(d, sizeof d, 30);
    strcat(d, " x");
    assert_int_equal(retry_after_s(d), -1);
}

/* Regression: RFC 9110 5.6.7 says a recipient MUST accept all three forms
   of HTTP-date, but only the IMF-fixdate was read; an upstream that sent an
   RFC 850 or asctime date got the default backoff instead of its wait. */
static void test_obsolete_date_forms(void **state)
{
    (void)state;
    char d[64];
    date_as(d, sizeof d, "%A, %d-%b-%y %H:%M:%S GMT", 30); /* rfc850-date */
    assert_in_range(retry_after_s(d), 28, 32);
    date_as(d, sizeof d, "%a %b %e %H:%M:%S %Y", 30); /* asctime-date, day space-padded */
    assert_in_range(retry_after_s(d), 28, 32);
    /* The examples of RFC 9110 5.6.7, long past. */
    assert_int_equal(retry_after_s("Sunday, 06-Nov-94 08:49:37 GMT"), 0);
    assert_int_equal(retry_after_s("Sun Nov  6 08:49:37 1994"), 0);
    assert_int_equal(retry_after_s("Sun, 06 Nov 1994 08:49:37 GMT"), 0);
    /* Each form whole, or not a date. */
    assert_int_equal(retry_after_s("Sunday, 06-Nov-94 08:49:37"), -1);
    assert_int_equal(retry_after_s("Sun Nov  6 08:49:37 1994 GMT"), -1);
    char pass[128];
    date_as(d, sizeof d, "%a %b %e %H:%M:%S %Y", 30);
    snprintf(pass, sizeof pass, "X-A: b\r\nRetry-After: %s\r\n", d);
    assert_in_range(ms(pass), 28000, 32000);
}

/* ---- retry_after_ms: the header among the passed-on lines --------------- */

static void test_header_among_lines(void **state)
{
    (void)state;
    assert_int_equal(ms("Retry-After: 5\r\n"), 5000);
    assert_int_equal(ms("X-Request-Id: abc\r\nRetry-After: 7\r\nX-Other: 1\r\n"), 7000);
    assert_int_equal(ms("x-a: 1\r\nretry-after: 2\r\n"), 2000);
    assert_int_equal(ms("x-a: 1\r\nRETRY-AFTER:   3   \r\n"), 3000);
    /* No space after the colon, and no CRLF after the last line. */
    assert_int_equal(ms("x-a: 1\r\nRetry-After:4"), 4000);
    /* Saturated seconds in milliseconds. */
    assert_int_equal(ms("Retry-After: 99999999999999999999999\r\n"), (uint64_t)MAX_S * 1000);
    /* A date. */
    char pass[128], d[64];
    http_date(d, sizeof d, 30);
    snprintf(pass, sizeof pass, "X-A: b\r\nRetry-After: %s\r\n", d);
    assert_in_range(ms(pass), 28000, 32000);
    /* Only len bytes are read. */
    assert_int_equal(retry_after_ms("Retry-After: 12345\r\n", strlen("Retry-After: 12"), DFLT), 12000);
}

static void test_header_absent(void **state)
{
    (void)state;
    assert_int_equal(ms(""), DFLT);
    assert_int_equal(retry_after_ms(NULL, 0, DFLT), DFLT);
    assert_int_equal(ms("Content-Type: application/json\r\nX-A: 1\r\n"), DFLT);
    /* The name must start a line and be the whole name. */
    assert_int_equal(ms("X-Retry-After: 5\r\n"), DFLT);
    assert_int_equal(ms("X-A: Retry-After: 5\r\n"), DFLT);
    assert_int_equal(ms("Retry-After-Ms: 5\r\n"), DFLT);
    assert_int_equal(ms("Retry-After 5\r\n"), DFLT);
    /* Present but empty or unreadable: the default too. */
    assert_int_equal(ms("Retry-After:"), DFLT);
    assert_int_equal(ms("Retry-After: \r\n"), DFLT);
    assert_int_equal(ms("Retry-After: -1\r\n"), DFLT);
    assert_int_equal(ms("Retry-After: soon\r\n"), DFLT);
}

static void test_header_overlong_value(void **state)
{
    (void)state;
    /* The value is read into 64 bytes: 63 fit, 64 give the default rather
       than a value cut short (which could read as another number). */
    char pass[256];
    snprintf(pass, sizeof pass, "Retry-After:%62s5\r\n", "");
    assert_int_equal(ms(pass), 5000);
    snprintf(pass, sizeof pass, "Retry-After:%63s5\r\n", "");
    assert_int_equal(ms(pass), DFLT);
    snprintf(pass, sizeof pass, "Retry-After: 1%0100d\r\n", 0);
    assert_int_equal(ms(pass), DFLT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delta_seconds),
        cmocka_unit_test(test_spaces_around),
        cmocka_unit_test(test_huge_saturates),
        cmocka_unit_test(test_not_a_value),
        cmocka_unit_test(test_date_in_future),
        cmocka_unit_test(test_date_in_past),
        cmocka_unit_test(test_obsolete_date_forms),
        cmocka_unit_test(test_header_among_lines),
        cmocka_unit_test(test_header_absent),
        cmocka_unit_test(test_header_overlong_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
