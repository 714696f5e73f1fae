/*
 * test_admin.c: the admin side of the gateway: the admin token check
 * (gateway/gateway.c) and the purge selector's parser (gateway/admin.c),
 * both included for their statics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../src/gateway/gateway.c"
#include "../../src/gateway/admin.c"

/* A request carrying one Authorization header (none when auth is NULL). */
static bool check(const llmc_gw_t *gw, const char *auth)
{
    llmc_http_header_t h = {.name = "authorization", .value = auth,
                            .name_len = 13, .value_len = auth ? strlen(auth) : 0};
    llmc_http_req_t req = {.headers = &h, .nheaders = auth ? 1 : 0};
    return llmc_gw_admin_authorized(gw, &req);
}

static void with_token(llmc_gw_t *gw, llmc_config_t *cfg, const char *token)
{
    memset(gw, 0, sizeof(*gw));
    memset(cfg, 0, sizeof(*cfg));
    cfg->admin_token = (char *)token;
    admin_token_init(gw, cfg);
}

static void test_token_check(void **state)
{
    (void)state;
    llmc_gw_t gw;
    llmc_config_t cfg;
    with_token(&gw, &cfg, "tok-123");
    assert_true(gw.admin_token_set);
    assert_true(check(&gw, "Bearer tok-123"));
    assert_true(check(&gw, "bearer tok-123"));
    assert_true(check(&gw, "BEARER \t tok-123"));
    assert_false(check(&gw, NULL));
    assert_false(check(&gw, ""));
    assert_false(check(&gw, "tok-123"));
    assert_false(check(&gw, "Bearer"));
    assert_false(check(&gw, "Bearer "));
    assert_false(check(&gw, "Bearertok-123"));
    assert_false(check(&gw, "Basic tok-123"));
    assert_false(check(&gw, "Bearer tok-12"));
    assert_false(check(&gw, "Bearer tok-1234"));
    assert_false(check(&gw, "Bearer TOK-123"));
    /* Only the hash is kept. */
    assert_null(memmem(&gw, sizeof(gw), "tok-123", 7));
}

/* No token configured: nothing is authorized, not even an empty bearer. */
static void test_no_token_authorizes_nothing(void **state)
{
    (void)state;
    llmc_gw_t gw;
    llmc_config_t cfg;
    with_token(&gw, &cfg, "");
    assert_false(gw.admin_token_set);
    assert_false(check(&gw, "Bearer "));
    assert_false(check(&gw, "Bearer x"));
    assert_false(check(&gw, NULL));
    with_token(&gw, &cfg, NULL);
    assert_false(gw.admin_token_set);
    assert_false(check(&gw, "Bearer "));
}

/* ---- the purge selector ---- */

#define NOW_MS 1700000000000LL

/* Parses text; returns the parser's rc, the selector in *sel (its strings
   live in *root, which the caller frees). */
static int sel_of(const char *text, llmc_purge_t *sel, json_t **root, char *err)
{
    *root = json_loads(text, JSON_DECODE_ANY, NULL);
    assert_non_null(*root);
    err[0] = '\0';
    return parse_selector(*root, NOW_MS, sel, err, 256);
}

static void expect_refused(const char *text, const char *words)
{
    llmc_purge_t sel;
    json_t *root;
    char err[256];
    assert_int_equal(sel_of(text, &sel, &root, err), LLMC_EINVAL);
    if (!strstr(err, words))
        fail_msg("%s: '%s' does not say '%s'", text, err, words);
    json_decref(root);
}

static void test_selector_fields(void **state)
{
    (void)state;
    llmc_purge_t sel;
    json_t *root;
    char err[256];
    assert_int_equal(sel_of("{\"namespace\": \"a\", \"model\": \"m\", \"tag\": \"t\", "
                            "\"route\": \"/v1/embeddings\", \"older_than\": 60, "
                            "\"key_prefix\": \"aB3\"}", &sel, &root, err), 0);
    assert_int_equal(sel.conds, LLMC_PURGE_NAMESPACE | LLMC_PURGE_MODEL | LLMC_PURGE_TAG |
                                LLMC_PURGE_ROUTE | LLMC_PURGE_OLDER | LLMC_PURGE_KEY_PREFIX);
    assert_false(sel.all);
    assert_string_equal(sel.ns, "a");
    assert_string_equal(sel.model, "m");
    assert_string_equal(sel.tag, "t");
    assert_string_equal(sel.route, "/v1/embeddings");
    assert_int_equal(sel.created_before_ms, NOW_MS - 60000 + 1); /* at or before now - 60 s */
    assert_int_equal(sel.prefix_digits, 3);
    assert_int_equal(sel.prefix.b[0], 0xab);
    assert_int_equal(sel.prefix.b[1], 0x30);
    json_decref(root);

    assert_int_equal(sel_of("{\"all\": true}", &sel, &root, err), 0);
    assert_true(llmc_purge_is_all(&sel));
    json_decref(root);
    /* The empty namespace is a value: entries stored without one. */
    assert_int_equal(sel_of("{\"namespace\": \"\"}", &sel, &root, err), 0);
    assert_int_equal(sel.conds, LLMC_PURGE_NAMESPACE);
    assert_string_equal(sel.ns, "");
    json_decref(root);
    /* older_than 0: everything created before now; fractions count. */
    assert_int_equal(sel_of("{\"older_than\": 0.5}", &sel, &root, err), 0);
    assert_int_equal(sel.created_before_ms, NOW_MS - 500 + 1);
    json_decref(root);
    assert_int_equal(sel_of("{\"older_than\": 1e300}", &sel, &root, err), 0);
    assert_int_equal(sel.created_before_ms, INT64_MIN);
    json_decref(root);
}

static void test_selector_refusals(void **state)
{
    (void)state;
    expect_refused("{}", "empty selector");
    expect_refused("{\"all\": false}", "\"all\" can only be true");
    expect_refused("{\"all\": 1}", "\"all\" can only be true");
    expect_refused("{\"all\": true, \"model\": \"m\"}", "cannot be combined");
    expect_refused("{\"namespce\": \"a\"}", "unknown selector field \"namespce\"");
    expect_refused("{\"model\": \"m\", \"x\": 1}", "unknown selector field \"x\"");
    expect_refused("{\"model\": 3}", "\"model\" must be a string");
    expect_refused("{\"namespace\": null}", "\"namespace\" must be a string");
    expect_refused("{\"tag\": \"\"}", "\"tag\" must not be empty");
    expect_refused("{\"route\": \"v1/chat/completions\"}", "endpoint path");
    expect_refused("{\"key_prefix\": \"\"}", "1 to 64 hex digits");
    expect_refused("{\"key_prefix\": \"xyz\"}", "1 to 64 hex digits");
    expect_refused("{\"key_prefix\": 12}", "1 to 64 hex digits");
    char long_prefix[100];
    memset(long_prefix, 0, sizeof long_prefix);
    snprintf(long_prefix, sizeof long_prefix, "{\"key_prefix\": \"%065d\"}", 0);
    expect_refused(long_prefix, "1 to 64 hex digits");
    expect_refused("{\"older_than\": -1}", "0 or more");
    expect_refused("{\"older_than\": \"60\"}", "0 or more");
    expect_refused("[{\"all\": true}]", "JSON object");
    expect_refused("\"all\"", "JSON object");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_check),
        cmocka_unit_test(test_no_token_authorizes_nothing),
        cmocka_unit_test(test_selector_fields),
        cmocka_unit_test(test_selector_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
