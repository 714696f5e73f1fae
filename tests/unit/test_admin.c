/*
 * test_admin.c: the admin side of the gateway: the admin token check
 * (gateway/gateway.c, included for its statics).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../src/gateway/gateway.c"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_check),
        cmocka_unit_test(test_no_token_authorizes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
