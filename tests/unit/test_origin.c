/*
 * test_origin.c: who may reach the gateway from a browser
 * (src/gateway/origin.c): Host on loopback and other listeners, Origin
 * against --cors-origin, cross-site requests without an Origin, preflights,
 * and the options' parsing. llmc_origin_check is pure: headers in, verdict
 * and CORS lines out.
 */
#include <http_parser.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/origin.h"
#include "llmc/error.h"

static llmc_origin_t o;

static void init(const char *listen, const char *hosts, const char *origins)
{
    char err[256] = "";
    llmc_origin_free(&o);
    int rc = llmc_origin_init(&o, listen, NULL, hosts, origins, err, sizeof(err));
    if (rc != 0)
        fail_msg("init: %s", err);
}

static llmc_origin_verdict_t host(const char *h)
{
    const char *cors;
    return llmc_origin_check(&o, false, HTTP_POST, h, NULL, NULL, NULL, &cors);
}

static void test_loopback_listener_takes_only_local_names(void **state)
{
    (void)state;
    init("127.0.0.1", "", "");
    assert_int_equal(host("127.0.0.1:8080"), LLMC_ORIGIN_PASS);
    assert_int_equal(host("localhost:9999"), LLMC_ORIGIN_PASS);
    assert_int_equal(host("LOCALHOST"), LLMC_ORIGIN_PASS);
    assert_int_equal(host("localhost."), LLMC_ORIGIN_PASS);
    assert_int_equal(host("[::1]:8080"), LLMC_ORIGIN_PASS);
    assert_int_equal(host(NULL), LLMC_ORIGIN_PASS); /* HTTP/1.0 tools */
    /* DNS rebinding: the page's own name. */
    assert_int_equal(host("evil.example:8080"), LLMC_ORIGIN_BAD_HOST);
    assert_int_equal(host("localhost.evil.example"), LLMC_ORIGIN_BAD_HOST);
    assert_int_equal(host("127.0.0.1.nip.io"), LLMC_ORIGIN_BAD_HOST);
    assert_int_equal(host(""), LLMC_ORIGIN_BAD_HOST);
    assert_int_equal(host("local host"), LLMC_ORIGIN_BAD_HOST);
    assert_int_equal(host("localhost:"), LLMC_ORIGIN_BAD_HOST);

    /* The listen address itself, and --allowed-host. */
    init("127.0.0.2", "my-box,api.internal:8443", "");
    assert_int_equal(host("127.0.0.2:8080"), LLMC_ORIGIN_PASS);
    assert_int_equal(host("my-box:1"), LLMC_ORIGIN_PASS);
    assert_int_equal(host("api.internal:8443"), LLMC_ORIGIN_PASS);
    assert_int_equal(host("api.internal:8444"), LLMC_ORIGIN_BAD_HOST);
    assert_int_equal(host("api.internal"), LLMC_ORIGIN_BAD_HOST);

    init("[::1]", "", "");
    assert_true(o.loopback[0]);
    assert_int_equal(host("[::1]:8080"), LLMC_ORIGIN_PASS);
    assert_int_equal(host("example.com"), LLMC_ORIGIN_BAD_HOST);
}

static void test_other_listeners_check_host_only_when_told(void **state)
{
    (void)state;
    init("0.0.0.0", "", "");
    assert_false(o.loopback[0]);
    assert_int_equal(host("llm.corp.example"), LLMC_ORIGIN_PASS);
    assert_int_equal(host("10.0.0.7:8080"), LLMC_ORIGIN_PASS);

    init("10.0.0.7", "llm.corp.example", "");
    assert_int_equal(host("llm.corp.example:80"), LLMC_ORIGIN_PASS);
    assert_int_equal(host("10.0.0.7:8080"), LLMC_ORIGIN_BAD_HOST);
    assert_int_equal(host("localhost"), LLMC_ORIGIN_BAD_HOST);
}

static llmc_origin_verdict_t from(const char *origin, const char *site, const char **cors)
{
    return llmc_origin_check(&o, false, HTTP_POST, "localhost:8080", origin, site, NULL, cors);
}

static void test_origins(void **state)
{
    (void)state;
    const char *cors;
    init("127.0.0.1", "", "");
    /* Programs send none; the gateway's own pages send its own. */
    assert_int_equal(from(NULL, NULL, &cors), LLMC_ORIGIN_PASS);
    assert_null(cors);
    assert_int_equal(from("http://localhost:8080", "same-origin", &cors), LLMC_ORIGIN_PASS);
    assert_null(cors);
    assert_int_equal(from("https://evil.example", "cross-site", &cors), LLMC_ORIGIN_BAD_ORIGIN);
    assert_int_equal(from("http://localhost:3000", "same-site", &cors), LLMC_ORIGIN_BAD_ORIGIN);
    assert_int_equal(from("null", "cross-site", &cors), LLMC_ORIGIN_BAD_ORIGIN);

    init("127.0.0.1", "", "http://localhost:3000, HTTPS://App.Example");
    assert_int_equal(from("http://localhost:3000", "same-site", &cors), LLMC_ORIGIN_PASS);
    assert_string_equal(cors, "Access-Control-Allow-Origin: http://localhost:3000\r\n"
                              "Vary: Origin\r\nAccess-Control-Expose-Headers: X-Cache, "
                              "X-Cache-Key, X-Cache-Tokens-Saved, X-Cache-Similarity, "
                              "X-Cache-Matched-Key, Cache-Status, Age, ETag, Retry-After, "
                              "X-Request-Id\r\n");
    assert_int_equal(from("https://app.example", "cross-site", &cors), LLMC_ORIGIN_PASS);
    assert_non_null(strstr(cors, "Allow-Origin: https://app.example\r\n"));
    assert_int_equal(from("http://localhost:3001", "same-site", &cors), LLMC_ORIGIN_BAD_ORIGIN);
    assert_null(cors);

    init("127.0.0.1", "", "*");
    assert_int_equal(from("https://anyone.example", "cross-site", &cors), LLMC_ORIGIN_PASS);
    assert_non_null(strstr(cors, "Access-Control-Allow-Origin: *\r\n"));
    assert_null(strstr(cors, "Vary"));
    llmc_origin_free(&o);
}

static void test_cross_site_requests_without_an_origin(void **state)
{
    (void)state;
    const char *cors;
    init("127.0.0.1", "", "http://localhost:3000");
    /* <img src="http://localhost:8080/ask?q=..."> on another site. */
    assert_int_equal(from(NULL, "cross-site", &cors), LLMC_ORIGIN_CROSS_SITE);
    assert_int_equal(from(NULL, "same-site", &cors), LLMC_ORIGIN_CROSS_SITE);
    /* Typed into the address bar, or the gateway's own page. */
    assert_int_equal(from(NULL, "none", &cors), LLMC_ORIGIN_PASS);
    assert_int_equal(from(NULL, "same-origin", &cors), LLMC_ORIGIN_PASS);
    init("127.0.0.1", "", "*");
    assert_int_equal(from(NULL, "cross-site", &cors), LLMC_ORIGIN_PASS);
    llmc_origin_free(&o);
}

static void test_preflight(void **state)
{
    (void)state;
    const char *cors;
    init("127.0.0.1", "", "http://localhost:3000");
    assert_int_equal(llmc_origin_check(&o, false, HTTP_OPTIONS, "localhost:8080",
                                       "http://localhost:3000", "same-site", "POST", &cors),
                     LLMC_ORIGIN_PREFLIGHT);
    assert_non_null(cors);
    /* Not allowed: refused like the request itself. */
    assert_int_equal(llmc_origin_check(&o, false, HTTP_OPTIONS, "localhost:8080",
                                       "http://evil.example", "cross-site", "POST", &cors),
                     LLMC_ORIGIN_BAD_ORIGIN);
    /* An OPTIONS without Access-Control-Request-Method is not a preflight. */
    assert_int_equal(llmc_origin_check(&o, false, HTTP_OPTIONS, "localhost:8080",
                                       "http://localhost:3000", "same-site", NULL, &cors),
                     LLMC_ORIGIN_PASS);
    llmc_origin_free(&o);
}

static void test_admin_listener_has_its_own_address(void **state)
{
    (void)state;
    char err[256];
    const char *cors;
    llmc_origin_free(&o);
    assert_int_equal(llmc_origin_init(&o, "0.0.0.0", "127.0.0.1", "", "", err, sizeof(err)), 0);
    assert_int_equal(llmc_origin_check(&o, false, HTTP_GET, "evil.example", NULL, NULL, NULL,
                                       &cors), LLMC_ORIGIN_PASS);
    assert_int_equal(llmc_origin_check(&o, true, HTTP_GET, "evil.example", NULL, NULL, NULL,
                                       &cors), LLMC_ORIGIN_BAD_HOST);
    llmc_origin_free(&o);
}

static void test_bad_options(void **state)
{
    (void)state;
    static const char *const hosts[] = {"a b", "x:port", "[::1", "host:123456", "a/b"};
    static const char *const origins[] = {"localhost:3000", "ftp://x", "http://a b",
                                          "http://x/path", "http://"};
    char err[256];
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        assert_int_equal(llmc_origin_init(&o, "127.0.0.1", NULL, hosts[i], "", err, sizeof(err)),
                         LLMC_EINVAL);
        assert_non_null(strstr(err, "--allowed-host"));
        llmc_origin_free(&o);
    }
    for (size_t i = 0; i < sizeof(origins) / sizeof(origins[0]); i++) {
        assert_int_equal(llmc_origin_init(&o, "127.0.0.1", NULL, "", origins[i], err,
                                          sizeof(err)), LLMC_EINVAL);
        assert_non_null(strstr(err, "--cors-origin"));
        llmc_origin_free(&o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback_listener_takes_only_local_names),
        cmocka_unit_test(test_other_listeners_check_host_only_when_told),
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_cross_site_requests_without_an_origin),
        cmocka_unit_test(test_preflight),
        cmocka_unit_test(test_admin_listener_has_its_own_address),
        cmocka_unit_test(test_bad_options),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    llmc_origin_free(&o);
    return rc;
}
