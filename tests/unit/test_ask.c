/*
 * test_ask.c: GET /ask's conversions (src/gateway/ask.c): a query parameter
 * percent-decoded, the query turned into the chat request it stands for,
 * and a stored completion turned into /ask's answer.
 *
 * The functions are pure, so each case is a string in and a string or an
 * error code out. Bodies are compared byte for byte: the /ask body is keyed
 * like the POST it stands for, so its exact form is part of the contract.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/ask.h"
#include "llmc/error.h"

/* ---- llmc_ask_query_param ------------------------------------------------ */

/* The decoded value of name in query, checked to be NUL-terminated at its
   reported length; the return code in *rc. */
static int param(const char *query, const char *name, char *out, size_t cap, size_t *len)
{
    *len = (size_t)-1;
    memset(out, 'X', cap);
    int rc = llmc_ask_query_param(query, name, out, cap, len);
    if (rc == 0) {
        assert_true(*len < cap);
        assert_int_equal(out[*len], '\0');
    }
    return rc;
}

static void test_param_present(void **state)
{
    (void)state;
    char out[64];
    size_t len;
    assert_int_equal(param("q=hello", "q", out, sizeof out, &len), 0);
    assert_int_equal(len, 5);
    assert_string_equal(out, "hello");
    /* After '&', and the first of two parameters. */
    assert_int_equal(param("model=m1&q=world", "q", out, sizeof out, &len), 0);
    assert_string_equal(out, "world");
    assert_int_equal(param("model=m1&q=world", "model", out, sizeof out, &len), 0);
    assert_string_equal(out, "m1");
    assert_int_equal(len, 2);
}

static void test_param_absent(void **state)
{
    (void)state;
    char out[64];
    size_t len;
    assert_int_equal(param("model=m1", "q", out, sizeof out, &len), LLMC_ENOENT);
    assert_int_equal(param("", "q", out, sizeof out, &len), LLMC_ENOENT);
    /* A bare name without '=' gives no value. */
    assert_int_equal(param("q&model=m1", "q", out, sizeof out, &len), LLMC_ENOENT);
    /* The name must be the whole parameter name, not the end of a longer one. */
    assert_int_equal(param("xq=1", "q", out, sizeof out, &len), LLMC_ENOENT);
}

static void test_param_empty_value(void **state)
{
    (void)state;
    char out[64];
    size_t len;
    assert_int_equal(param("q=&model=m1", "q", out, sizeof out, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(out, "");
    assert_int_equal(param("model=m1&q=", "q", out, sizeof out, &len), 0);
    assert_int_equal(len, 0);
}

static void test_param_name_is_prefix_of_another(void **state)
{
    (void)state;
    char out[64];
    size_t len;
    /* "qq" starts with "q": the value of q is still the q= one. */
    assert_int_equal(param("qq=1&q=2", "q", out, sizeof out, &len), 0);
    assert_string_equal(out, "2");
    assert_int_equal(param("q=2&qq=1", "qq", out, sizeof out, &len), 0);
    assert_string_equal(out, "1");
    assert_int_equal(param("qq=1", "q", out, sizeof out, &len), LLMC_ENOENT);
}

static void test_param_plus_is_space(void **state)
{
    (void)state;
    char out[64];
    size_t len;
    assert_int_equal(param("q=what+is+2%2B2", "q", out, sizeof out, &len), 0);
    assert_string_equal(out, "what is 2+2");
}

static void test_param_percent_decoding(void **state)
{
    (void)state;
    char out[64];
    size_t len;
    /* Upper and lower case hex digits alike. */
    assert_int_equal(param("q=caf%C3%a9%20%26%3d", "q", out, sizeof out, &len), 0);
    assert_int_equal(len, 8);
    assert_memory_equal(out, "caf\xc3\xa9 &=", 9);
    /* A decoded %00 is part of the value: the length says where it ends. */
    assert_int_equal(param("q=a%00b&x=1", "q", out, sizeof out, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(out, "a\0b", 4);
    assert_int_equal(param("q=%00", "q", out, sizeof out, &len), 0);
    assert_int_equal(len, 1);
    assert_int_equal(out[0], '\0');
}

static void test_param_bad_percent(void **state)
{
    (void)state;
    char out[64];
    size_t len;
    assert_int_equal(param("q=%ZZ", "q", out, sizeof out, &len), LLMC_EINVAL);
    assert_int_equal(param("q=%4", "q", out, sizeof out, &len), LLMC_EINVAL);
    assert_int_equal(param("q=ab%", "q", out, sizeof out, &len), LLMC_EINVAL);
    assert_int_equal(param("q=%4G", "q", out, sizeof out, &len), LLMC_EINVAL);
    assert_int_equal(param("q=%G4", "q", out, sizeof out, &len), LLMC_EINVAL);
    /* Cut before the second digit by the next parameter. */
    assert_int_equal(param("q=%4&x=1", "q", out, sizeof out, &len), LLMC_EINVAL);
    /* A bad escape in another parameter does not matter. */
    assert_int_equal(param("x=%ZZ&q=ok", "q", out, sizeof out, &len), 0);
    assert_string_equal(out, "ok");
}

static void test_param_longer_than_cap(void **state)
{
    (void)state;
    char out[8];
    size_t len;
    /* cap - 1 bytes fit (the NUL takes the last), cap bytes do not. */
    assert_int_equal(param("q=1234567", "q", out, sizeof out, &len), 0);
    assert_int_equal(len, 7);
    assert_string_equal(out, "1234567");
    assert_int_equal(param("q=12345678", "q", out, sizeof out, &len), LLMC_E2BIG);
    /* The decoded length is what counts, not the encoded one. */
    assert_int_equal(param("q=%31%32%33%34%35%36%37", "q", out, sizeof out, &len), 0);
    assert_string_equal(out, "1234567");
    assert_int_equal(param("q=1234567%00", "q", out, sizeof out, &len), LLMC_E2BIG);
}

/* ---- llmc_ask_body ------------------------------------------------------- */

#define DEFAULT_MODEL "gpt-4o-mini"

/* The body for query, asserting that it succeeds and *len is its length. */
static char *body_ok(const char *query)
{
    char *body = NULL, err[256] = "";
    size_t len = 0;
    assert_int_equal(llmc_ask_body(query, DEFAULT_MODEL, &body, &len, err, sizeof err), 0);
    assert_non_null(body);
    assert_int_equal(len, strlen(body));
    return body;
}

/* The error code for query, with its message in err. */
static int body_err(const char *query, char *err, size_t errlen)
{
    char *body = NULL;
    size_t len = 0;
    err[0] = '\0';
    int rc = llmc_ask_body(query, DEFAULT_MODEL, &body, &len, err, errlen);
    assert_true(rc < 0);
    assert_null(body);
    return rc;
}

static void test_body_default_model(void **state)
{
    (void)state;
    char *b = body_ok("q=what+is+2%2B2");
    assert_string_equal(b, "{\"model\":\"gpt-4o-mini\",\"messages\":"
                           "[{\"role\":\"user\",\"content\":\"what is 2+2\"}]}");
    free(b);
}

static void test_body_model_overrides_default(void **state)
{
    (void)state;
    char *b = body_ok("model=gpt-4o&q=hi");
    assert_string_equal(b, "{\"model\":\"gpt-4o\",\"messages\":"
                           "[{\"role\":\"user\",\"content\":\"hi\"}]}");
    free(b);
    /* An empty model= is no model: the default. */
    b = body_ok("q=hi&model=");
    assert_non_null(strstr(b, "\"model\":\"gpt-4o-mini\""));
    free(b);
}

static void test_body_missing_q(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(body_err("model=gpt-4o", err, sizeof err), LLMC_EINVAL);
    assert_string_equal(err, "missing query parameter q");
    assert_int_equal(body_err("", err, sizeof err), LLMC_EINVAL);
    assert_string_equal(err, "missing query parameter q");
    assert_int_equal(body_err(NULL, err, sizeof err), LLMC_EINVAL);
    assert_string_equal(err, "missing query parameter q");
}

static void test_body_empty_q(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(body_err("q=", err, sizeof err), LLMC_EINVAL);
    assert_string_equal(err, "missing query parameter q");
    assert_int_equal(body_err("q=&model=m", err, sizeof err), LLMC_EINVAL);
    assert_string_equal(err, "missing query parameter q");
}

static void test_body_invalid_utf8(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(body_err("q=%FF", err, sizeof err), LLMC_EINVAL);
    assert_non_null(strstr(err, "UTF-8"));
    assert_non_null(strstr(err, "q"));
    /* A truncated two-byte sequence. */
    assert_int_equal(body_err("q=ok%C3", err, sizeof err), LLMC_EINVAL);
    assert_non_null(strstr(err, "UTF-8"));
    /* In model= too, which names model and is not replaced by the default. */
    assert_int_equal(body_err("q=hi&model=%FF", err, sizeof err), LLMC_EINVAL);
    assert_non_null(strstr(err, "UTF-8"));
    assert_non_null(strstr(err, "model"));
}

static void test_body_bad_percent(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(body_err("q=%ZZ", err, sizeof err), LLMC_EINVAL);
    assert_non_null(strstr(err, "percent-encoding"));
    assert_int_equal(body_err("q=hi&model=%Z", err, sizeof err), LLMC_EINVAL);
    assert_non_null(strstr(err, "model"));
}

static void test_body_keeps_nul(void **state)
{
    (void)state;
    /* Cut at the %00, "a%00b" would be keyed and answered as "a". */
    char *b = body_ok("q=a%00b");
    assert_string_equal(b, "{\"model\":\"gpt-4o-mini\",\"messages\":"
                           "[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}");
    free(b);
    char *a = body_ok("q=a");
    assert_string_not_equal(a, "{\"model\":\"gpt-4o-mini\",\"messages\":"
                               "[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}");
    free(a);
}

static void test_body_utf8_and_escapes(void **state)
{
    (void)state;
    char *b = body_ok("q=%22caf%C3%A9%22%0A");
    assert_string_equal(b, "{\"model\":\"gpt-4o-mini\",\"messages\":"
                           "[{\"role\":\"user\",\"content\":\"\\\"caf\xc3\xa9\\\"\\n\"}]}");
    free(b);
}

/* ---- llmc_ask_answer ----------------------------------------------------- */

static char *answer(const char *completion, size_t len, bool from_cache)
{
    size_t out_len = (size_t)-1;
    char *a = llmc_ask_answer(completion, len, from_cache, &out_len);
    assert_non_null(a);
    assert_int_equal(out_len, strlen(a));
    return a;
}

static void test_answer_content(void **state)
{
    (void)state;
    const char *c = "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":"
                    "{\"role\":\"assistant\",\"content\":\"Four.\"}},"
                    "{\"index\":1,\"message\":{\"content\":\"Second\"}}]}";
    char *a = answer(c, strlen(c), true);
    assert_string_equal(a, "{\"answer\":\"Four.\",\"source\":\"cache\"}");
    free(a);
    a = answer(c, strlen(c), false);
    assert_string_equal(a, "{\"answer\":\"Four.\",\"source\":\"llm\"}");
    free(a);
}

static void test_answer_missing_content(void **state)
{
    (void)state;
    static const char *const no_text[] = {
        "{\"choices\":[{\"message\":{\"role\":\"assistant\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[]}}]}",
        "{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\"}]}}]}",
        "{\"choices\":[]}",
        "{\"choices\":{\"message\":{\"content\":\"not an array\"}}}",
        "{}",
        "[]",
    };
    for (size_t i = 0; i < sizeof no_text / sizeof no_text[0]; i++) {
        char *a = answer(no_text[i], strlen(no_text[i]), false);
        assert_string_equal(a, "{\"answer\":null,\"source\":\"llm\"}");
        free(a);
    }
}

static void test_answer_invalid_json(void **state)
{
    (void)state;
    const char *bad = "{\"choices\":[{\"message\":{\"content\":\"cut";
    char *a = answer(bad, strlen(bad), true);
    assert_string_equal(a, "{\"answer\":null,\"source\":\"cache\"}");
    free(a);
    a = answer("", 0, true);
    assert_string_equal(a, "{\"answer\":null,\"source\":\"cache\"}");
    free(a);
}

static void test_answer_reads_only_len_bytes(void **state)
{
    (void)state;
    /* A stored body need not end in a NUL: only len bytes are read. */
    const char *c = "{\"choices\":[{\"message\":{\"content\":\"ok\"}}]}GARBAGE";
    char *a = answer(c, strlen(c) - strlen("GARBAGE"), true);
    assert_string_equal(a, "{\"answer\":\"ok\",\"source\":\"cache\"}");
    free(a);
}

static void test_answer_keeps_nul(void **state)
{
    (void)state;
    /* A model may write \u0000; the answer used to be null. */
    const char *c = "{\"choices\":[{\"message\":{\"content\":\"a\\u0000b\"}}]}";
    char *a = answer(c, strlen(c), false);
    assert_string_equal(a, "{\"answer\":\"a\\u0000b\",\"source\":\"llm\"}");
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_present),
        cmocka_unit_test(test_param_absent),
        cmocka_unit_test(test_param_empty_value),
        cmocka_unit_test(test_param_name_is_prefix_of_another),
        cmocka_unit_test(test_param_plus_is_space),
        cmocka_unit_test(test_param_percent_decoding),
        cmocka_unit_test(test_param_bad_percent),
        cmocka_unit_test(test_param_longer_than_cap),
        cmocka_unit_test(test_body_default_model),
        cmocka_unit_test(test_body_model_overrides_default),
        cmocka_unit_test(test_body_missing_q),
        cmocka_unit_test(test_body_empty_q),
        cmocka_unit_test(test_body_invalid_utf8),
        cmocka_unit_test(test_body_bad_percent),
        cmocka_unit_test(test_body_keeps_nul),
        cmocka_unit_test(test_body_utf8_and_escapes),
        cmocka_unit_test(test_answer_content),
        cmocka_unit_test(test_answer_missing_content),
        cmocka_unit_test(test_answer_invalid_json),
        cmocka_unit_test(test_answer_reads_only_len_bytes),
        cmocka_unit_test(test_answer_keeps_nul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
