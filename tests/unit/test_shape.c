/* Unit tests for gateway/shape.c: which upstream bodies are an endpoint's
   answer (stored), which are JSON but no answer (passed on, not stored), and
   which are not JSON objects at all (a failure). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/shape.h"

#define CHAT "/v1/chat/completions"
#define COMPL "/v1/completions"
#define EMB "/v1/embeddings"

static llmc_shape_t check(const char *route, const char *body)
{
    return llmc_shape_check(route, body, strlen(body));
}

static void test_answers(void **state)
{
    (void)state;
    assert_int_equal(check(CHAT, "{\"object\":\"chat.completion\",\"choices\":[{\"index\":0}]}"),
                     LLMC_SHAPE_ANSWER);
    assert_int_equal(check(CHAT, "{\"choices\":[]}"), LLMC_SHAPE_ANSWER);
    assert_int_equal(check(COMPL, "{\"object\":\"text_completion\",\"choices\":[{\"text\":\"x\"}]}"),
                     LLMC_SHAPE_ANSWER);
    assert_int_equal(check(EMB, "{\"object\":\"list\",\"data\":[{\"embedding\":[0.1]}]}"),
                     LLMC_SHAPE_ANSWER);
    /* "error": null is no error. */
    assert_int_equal(check(CHAT, "{\"choices\":[],\"error\":null}"), LLMC_SHAPE_ANSWER);
}

static void test_not_answers(void **state)
{
    (void)state;
    static const struct { const char *route, *body; } cases[] = {
        {CHAT, "{\"error\":{\"message\":\"quota\",\"type\":\"insufficient_quota\"}}"},
        {CHAT, "{\"choices\":[{}],\"error\":{\"message\":\"x\"}}"},
        {CHAT, "{\"choices\":[],\"error\":\"x\"}"},
        {CHAT, "{\"object\":\"chat.completion\"}"},
        {CHAT, "{\"choices\":{\"0\":{}}}"},
        {CHAT, "{\"choices\":null}"},
        {CHAT, "{\"data\":[]}"},
        {CHAT, "{}"},
        {COMPL, "{\"error\":{\"message\":\"x\"}}"},
        {COMPL, "{\"choices\":\"text\"}"},
        {EMB, "{\"choices\":[{\"index\":0}]}"},
        {EMB, "{\"data\":{}}"},
        {EMB, "{\"data\":[],\"error\":{\"message\":\"x\"}}"},
        /* A route without a shape stores nothing. */
        {"/v1/models", "{\"object\":\"list\",\"data\":[]}"},
        {"/v1/unknown", "{\"choices\":[]}"},
        {NULL, "{\"choices\":[]}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        llmc_shape_t got = check(cases[i].route, cases[i].body);
        if (got != LLMC_SHAPE_NOT_ANSWER)
            fail_msg("case %zu (%s %s): %d", i, cases[i].route ? cases[i].route : "NULL",
                     cases[i].body, (int)got);
    }
}

static void test_invalid(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "", "[]", "[{\"choices\":[]}]", "\"choices\"", "42", "null",
        "{\"choices\":[", "this is not JSON {\"choices\": [", "{\"choices\":[]} trailing",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        assert_int_equal(check(CHAT, bodies[i]), LLMC_SHAPE_INVALID);
    assert_int_equal(llmc_shape_check(CHAT, NULL, 0), LLMC_SHAPE_INVALID);
}

static void test_nul_and_length(void **state)
{
    (void)state;
    /* "\u0000" is valid JSON: a model may write it. */
    assert_int_equal(check(CHAT, "{\"choices\":[{\"message\":{\"content\":\"a\\u0000b\"}}]}"),
                     LLMC_SHAPE_ANSWER);
    /* Only len bytes are read: a stored body need not end in a NUL. */
    const char *b = "{\"choices\":[]}GARBAGE";
    assert_int_equal(llmc_shape_check(CHAT, b, strlen(b) - 7), LLMC_SHAPE_ANSWER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_not_answers),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_nul_and_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
