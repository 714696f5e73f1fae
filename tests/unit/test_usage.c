/*
 * test_usage.c: the token counts read from a stored answer
 * (src/core/usage.c): which "usage" counts, which counts are taken, and
 * that any bytes at all are read safely.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "llmc/usage.h"

static bool scan(const char *s, llmc_usage_t *u)
{
    memset(u, 0xAB, sizeof(*u));
    return llmc_usage_scan(s, strlen(s), u);
}

static void assert_usage(const char *s, uint32_t prompt, uint32_t completion)
{
    llmc_usage_t u;
    if (!scan(s, &u))
        fail_msg("no usage found in %s", s);
    assert_int_equal(u.prompt_tokens, prompt);
    assert_int_equal(u.completion_tokens, completion);
}

static void assert_none(const char *s)
{
    llmc_usage_t u;
    if (scan(s, &u))
        fail_msg("usage %u+%u found in %s", u.prompt_tokens, u.completion_tokens, s);
}

static void test_the_apis_usage(void **state)
{
    (void)state;
    /* Chat completions, with the details objects OpenAI adds. */
    assert_usage("{\"id\":\"c\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
                 "\"message\":{\"role\":\"assistant\",\"content\":\"hi\"}}],\"usage\":"
                 "{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46,"
                 "\"prompt_tokens_details\":{\"cached_tokens\":0},"
                 "\"completion_tokens_details\":{\"reasoning_tokens\":7}}}", 12, 34);
    /* Embeddings: no completion. */
    assert_usage("{\"object\":\"list\",\"data\":[{\"embedding\":[0.1,-2e-3]}],"
                 "\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}", 8, 0);
    /* The Responses and Anthropic APIs' names. */
    assert_usage("{\"object\":\"response\",\"usage\":{\"input_tokens\":5,\"output_tokens\":9,"
                 "\"total_tokens\":14}}", 5, 9);
    /* Anywhere among the members, with any whitespace. */
    assert_usage(" \n{ \"usage\" :\t{ \"completion_tokens\" : 3 , \"prompt_tokens\":4 } ,"
                 " \"model\" : \"m\" }\n", 4, 3);
    assert_usage("{\"usage\":{\"prompt_tokens\":4294967295,\"completion_tokens\":0}}",
                 4294967295u, 0);
}

static void test_only_the_top_level_usage_counts(void **state)
{
    (void)state;
    /* In content, escaped quotes cannot open a key. */
    assert_none("{\"choices\":[{\"message\":{\"content\":\"\\\"usage\\\":{\\\"prompt_tokens\\\":5}\"}}]}");
    /* A nested "usage" object is content too. */
    assert_none("{\"choices\":[{\"message\":{\"usage\":{\"prompt_tokens\":5}}}]}");
    assert_usage("{\"tool\":{\"usage\":{\"prompt_tokens\":99}},\"usage\":{\"prompt_tokens\":1,"
                 "\"completion_tokens\":2}}", 1, 2);
    /* A string holding brackets does not confuse the walk. */
    assert_usage("{\"a\":\"}]{[\\\\\",\"b\":[\"]\",{\"c\":\"}\"}],\"usage\":{\"prompt_tokens\":6,"
                 "\"completion_tokens\":7}}", 6, 7);
    /* The last of duplicate members wins, as jansson reads them. */
    assert_usage("{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1},"
                 "\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}", 2, 3);
    assert_none("{\"usage\":{\"prompt_tokens\":1},\"usage\":{}}");
    assert_none("{\"usage\":{\"prompt_tokens\":1},\"usage\":null}");
    /* So does a count named twice, even when its last value is no count
       (fuzz_usage found the scanner keeping the first). */
    assert_usage("{\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":12,"
                 "\"completion_tokens\":\"x\"}}", 12, 0);
    assert_usage("{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":5,"
                 "\"completion_tokens\":2}}", 5, 2);
    assert_none("{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":null}}");
}

static void test_what_is_not_a_count(void **state)
{
    (void)state;
    assert_none("{\"usage\":null}");
    assert_none("{\"usage\":{}}");
    assert_none("{\"usage\":[1,2]}");
    assert_none("{\"usage\":{\"total_tokens\":5}}");
    assert_none("{\"usage\":{\"prompt_tokens\":-1}}");
    assert_none("{\"usage\":{\"prompt_tokens\":1.5}}");
    assert_none("{\"usage\":{\"prompt_tokens\":1e3}}");
    assert_none("{\"usage\":{\"prompt_tokens\":\"7\"}}");
    assert_none("{\"usage\":{\"prompt_tokens\":4294967296}}");
    assert_none("{\"usage\":{\"prompt_tokens\":99999999999999999999999}}");
    /* One good count is enough; the bad one reads as 0. */
    assert_usage("{\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":2}}", 0, 2);
}

static void test_text_that_is_not_an_object(void **state)
{
    (void)state;
    llmc_usage_t u;
    assert_false(llmc_usage_scan(NULL, 0, &u));
    assert_false(llmc_usage_scan("", 0, &u));
    assert_none("[{\"usage\":{\"prompt_tokens\":1}}]");
    assert_none("\"usage\"");
    assert_none("data: {\"usage\":{\"prompt_tokens\":1}}");
    assert_none("{\"usage\":{\"prompt_tokens\":1}");        /* never closed */
    assert_none("{\"usage\" {\"prompt_tokens\":1}}");       /* no colon */
    assert_none("{usage:{\"prompt_tokens\":1}}");           /* key not a string */
    assert_none("{\"x\":1 \"usage\":{\"prompt_tokens\":1}}"); /* no comma */
}

/* Every prefix of a real answer, each in a buffer of exactly its length
   (so that ASan sees a read past it): never a crash, and never a usage
   before the object is complete. */
static void test_every_prefix_is_read_safely(void **state)
{
    (void)state;
    const char *full = "{\"id\":\"c\",\"choices\":[{\"message\":{\"content\":\"a \\\"q\\\" [b]\"}}],"
                       "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34}}";
    size_t len = strlen(full);
    for (size_t n = 0; n <= len; n++) {
        char *buf = malloc(n ? n : 1);
        memcpy(buf, full, n);
        llmc_usage_t u;
        bool got = llmc_usage_scan(buf, n, &u);
        assert_true(got == (n == len));
        free(buf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_apis_usage),
        cmocka_unit_test(test_only_the_top_level_usage_counts),
        cmocka_unit_test(test_what_is_not_a_count),
        cmocka_unit_test(test_text_that_is_not_an_object),
        cmocka_unit_test(test_every_prefix_is_read_safely),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
