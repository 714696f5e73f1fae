/*
 * test_forward.c: which client headers go upstream (src/gateway/forward.c):
 * the defaults when the client's own key goes up, none but the listed ones
 * with the gateway's key, the names that can never be listed, and the
 * lines themselves (table order, the first of a repeated header, long
 * values left out), which are what the cache key hashes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/forward.h"
#include "llmc/error.h"

#define HDR(n, v) {.name = (n), .value = (v), .name_len = sizeof(n) - 1, .value_len = sizeof(v) - 1}

static llmc_http_header_t org_hdrs[] = {
    HDR("openai-beta", "assistants=v2"), HDR("accept", "application/json"),
    HDR("openai-organization", "org-a"), HDR("x-tenant", "t1"),
    HDR("openai-organization", "org-b"),
};
static llmc_http_req_t org_req = {.headers = org_hdrs, .nheaders = 5};

static void test_defaults_with_the_clients_own_key(void **state)
{
    (void)state;
    llmc_forward_t fw;
    char err[256], buf[LLMC_FWD_BYTES];
    assert_int_equal(llmc_forward_init(&fw, "", false, err, sizeof(err)), 0);
    size_t n = llmc_forward_lines(&fw, &org_req, buf, sizeof(buf));
    /* Table order, the first of a repeated header; Accept is not forwarded. */
    assert_string_equal(buf, "OpenAI-Organization: org-a\r\nOpenAI-Beta: assistants=v2\r\n");
    assert_int_equal(n, strlen(buf));
}

static void test_the_gateways_key_forwards_only_listed_names(void **state)
{
    (void)state;
    llmc_forward_t fw;
    char err[256], buf[LLMC_FWD_BYTES];
    assert_int_equal(llmc_forward_init(&fw, "", true, err, sizeof(err)), 0);
    assert_int_equal(llmc_forward_lines(&fw, &org_req, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");

    assert_int_equal(llmc_forward_init(&fw, " X-Tenant ,openai-organization,x-tenant", true, err,
                                       sizeof(err)), 0);
    assert_int_equal(fw.n, 2);
    llmc_forward_lines(&fw, &org_req, buf, sizeof(buf));
    assert_string_equal(buf, "X-Tenant: t1\r\nopenai-organization: org-a\r\n");
}

static void test_names_that_cannot_be_forwarded(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Authorization", "host", "Content-Length", "Transfer-Encoding", "Cookie",
        "X-Cache-TTL", "Connection", "bad name", "a:b", "",
        "x-a-very-long-name-that-goes-on-and-on-past-sixty-three-characters-in-all",
    };
    llmc_forward_t fw;
    char err[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (!bad[i][0])
            continue; /* an empty item is skipped, not an error */
        err[0] = '\0';
        assert_int_equal(llmc_forward_init(&fw, bad[i], true, err, sizeof(err)), LLMC_EINVAL);
        assert_non_null(strstr(err, "--forward-header"));
    }
    assert_int_equal(llmc_forward_init(&fw, ",,", true, err, sizeof(err)), 0);
    assert_int_equal(fw.n, 0);
    /* Too many. */
    assert_int_equal(llmc_forward_init(&fw, "a,b,c,d,e,f", false, err, sizeof(err)),
                     LLMC_EINVAL);
    assert_int_equal(llmc_forward_init(&fw, "a,b,c,d,e", false, err, sizeof(err)), 0);
}

static void test_a_long_value_is_neither_forwarded_nor_keyed(void **state)
{
    (void)state;
    char big[LLMC_FWD_VALUE_MAX + 2];
    memset(big, 'o', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    llmc_http_header_t h[] = {
        {.name = "openai-organization", .value = big, .name_len = 19, .value_len = strlen(big)},
        HDR("openai-project", "p1"),
    };
    llmc_http_req_t req = {.headers = h, .nheaders = 2};
    llmc_forward_t fw;
    char err[256], buf[LLMC_FWD_BYTES];
    assert_int_equal(llmc_forward_init(&fw, "", false, err, sizeof(err)), 0);
    llmc_forward_lines(&fw, &req, buf, sizeof(buf));
    assert_string_equal(buf, "OpenAI-Project: p1\r\n");
    /* The longest value taken still fits, with every other name at its longest. */
    big[LLMC_FWD_VALUE_MAX] = '\0';
    llmc_forward_lines(&fw, &req, buf, sizeof(buf));
    assert_int_equal(strlen(buf), strlen("OpenAI-Organization: \r\nOpenAI-Project: p1\r\n") +
                                      LLMC_FWD_VALUE_MAX);
    /* A short buffer cuts at a whole line. */
    assert_int_equal(llmc_forward_lines(&fw, &req, buf, 30), 0);
    assert_string_equal(buf, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_with_the_clients_own_key),
        cmocka_unit_test(test_the_gateways_key_forwards_only_listed_names),
        cmocka_unit_test(test_names_that_cannot_be_forwarded),
        cmocka_unit_test(test_a_long_value_is_neither_forwarded_nor_keyed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
