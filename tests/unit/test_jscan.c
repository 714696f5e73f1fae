/*
 * test_jscan.c: the JSON value count a body is refused by before it is
 * parsed (src/core/jscan.c): what counts as a value, that member names and
 * string contents do not, that the count stops past its limit, and that it
 * agrees with jansson's tree on real request bodies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "llmc/jscan.h"

static size_t count(const char *s)
{
    return llmc_json_count_values(s, strlen(s), SIZE_MAX - 1);
}

/* The number of json_t values in v's tree. */
static size_t tree_values(const json_t *v)
{
    size_t n = 1, i;
    const char *k;
    json_t *m;
    if (json_is_object(v))
        json_object_foreach((json_t *)v, k, m) n += tree_values(m);
    else if (json_is_array(v))
        json_array_foreach(v, i, m) n += tree_values(m);
    return n;
}

static void assert_agrees(const char *s)
{
    json_error_t e;
    json_t *v = json_loads(s, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
    if (!v)
        fail_msg("not JSON: %s (%s)", s, e.text);
    size_t want = tree_values(v);
    json_decref(v);
    if (count(s) != want)
        fail_msg("%zu values counted in %s, jansson has %zu", count(s), s, want);
}

static void test_each_kind_of_value_counts_one(void **state)
{
    assert_int_equal(count("{}"), 1);
    assert_int_equal(count("[]"), 1);
    assert_int_equal(count("\"x\""), 1);
    assert_int_equal(count("-1.5e+3"), 1);
    assert_int_equal(count("true"), 1);
    assert_int_equal(count("null"), 1);
    assert_int_equal(count("[1,2.0,true,false,null,\"s\",{},[]]"), 9);
    assert_int_equal(count("{\"model\":\"m\",\"x\":[{},{},{}]}"), 6);
}

static void test_member_names_and_string_contents_do_not(void **state)
{
    /* Names, with white space before their colon. */
    assert_int_equal(count("{ \"a\" :1, \"b\"\n:\t\"c\" }"), 3);
    /* Quotes, colons, brackets and escapes inside strings. */
    assert_int_equal(count("[\"a\\\"b\", \"{[:,]}\", \"\\\\\", \"\\u0041\\n\"]"), 5);
    assert_int_equal(count("{\"k\\\"\":\"v:\"}"), 2);
}

static void test_it_agrees_with_jansson_on_requests(void **state)
{
    assert_agrees("{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"system\",\"content\":\"be "
                  "brief\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what "
                  "is this?\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/"
                  "png;base64,iVBORw0KGgo=\"}}]}],\"temperature\":0.2,\"stream\":true,"
                  "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
                  "{\"type\":\"object\",\"properties\":{}}}}],\"stop\":null,\"n\":1}");
    assert_agrees("  [ [ [ ] ] , { \"a\" : [ 1e5 , -0 ] } ]  ");
    assert_agrees("\"only a string\"");
}

static void test_the_count_stops_past_its_limit(void **state)
{
    const char *s = "[{},{},{},{},{}]"; /* 6 values */
    assert_int_equal(llmc_json_count_values(s, strlen(s), 6), 6);
    assert_int_equal(llmc_json_count_values(s, strlen(s), 5), 6);
    assert_int_equal(llmc_json_count_values(s, strlen(s), 0), 1);
    /* The worst body of issue 14: a million empty objects, cut off early. */
    size_t n = 1000000, len = 1 + 3 * n;
    char *big = malloc(len + 1);
    assert_non_null(big);
    big[0] = '[';
    for (size_t i = 0; i < n; i++)
        memcpy(big + 1 + 3 * i, i + 1 < n ? "{}," : "{}]", 3);
    big[len] = '\0';
    assert_int_equal(llmc_json_count_values(big, len, SIZE_MAX - 1), n + 1);
    assert_int_equal(llmc_json_count_values(big, len, 1000), 1001);
    free(big);
}

static void test_any_bytes_are_read_safely(void **state)
{
    /* Unterminated strings and escapes at the end, bytes that are not JSON:
       a count, never a read past len (ASan watches the heap copy). */
    const char *odd[] = {"\"abc", "\"ab\\", "[\"a\\\"", "{\"a\"", "\x01\xff junk", ":::",
                         "\"a\"   ", ""};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        size_t len = strlen(odd[i]);
        char *buf = malloc(len ? len : 1);
        memcpy(buf, odd[i], len);
        (void)llmc_json_count_values(buf, len, 100);
        free(buf);
    }
    assert_int_equal(count("\"abc"), 1);
    assert_int_equal(count("{\"a\""), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_kind_of_value_counts_one),
        cmocka_unit_test(test_member_names_and_string_contents_do_not),
        cmocka_unit_test(test_it_agrees_with_jansson_on_requests),
        cmocka_unit_test(test_the_count_stops_past_its_limit),
        cmocka_unit_test(test_any_bytes_are_read_safely),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
