/*
 * Unit tests for the embedder interface (semantic/embedder.h): the lexical
 * embedder and the remote one (against the built-in mock model's
 * /v1/embeddings, on its own thread) answer through the same calls.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "llmc/error.h"
#include "mock/mock.h"
#include "semantic/embedder.h"
#include "semantic/lexical.h"
#include "upstream/upstream.h"

static llmc_mock_t *mock;
static int mock_port;

static float norm(const float *v, unsigned n)
{
    return sqrtf(llmc_lex_dot(v, v, n));
}

static void test_lexical_answers_at_once(void **state)
{
    (void)state;
    llmc_embedder_t *em = llmc_embedder_lexical_new();
    const float *v = NULL;
    unsigned dim = 0;
    float a[LLMC_LEX_DIM];

    assert_non_null(em);
    assert_string_equal(em->id, LLMC_EMBEDDER_LEXICAL_ID);
    assert_int_equal(em->dim, LLMC_LEX_DIM);
    assert_int_equal(llmc_embedder_get(em, "What is the capital of France?", 30, &v, &dim, NULL,
                                       NULL, NULL), 1);
    assert_int_equal(dim, LLMC_LEX_DIM);
    assert_true(fabsf(norm(v, dim) - 1.0f) < 1e-4f);
    memcpy(a, v, sizeof(a));
    /* The same as the lexical embedder itself gives, and again the same. */
    assert_int_equal(llmc_embedder_get(em, "what is the capital of france", 29, &v, &dim, NULL,
                                       NULL, NULL), 1);
    assert_true(llmc_lex_dot(a, v, dim) > 0.9f);
    assert_int_equal(llmc_embedder_get(em, "How do I bake bread?", 20, &v, &dim, NULL, NULL,
                                       NULL), 1);
    assert_true(llmc_lex_dot(a, v, dim) < 0.5f);
    /* Nothing to embed, and a text that is not UTF-8, are refused. */
    assert_int_equal(llmc_embedder_get(em, "", 0, &v, &dim, NULL, NULL, NULL), LLMC_ENOENT);
    assert_int_equal(llmc_embedder_get(em, "\xff\xfe", 2, &v, &dim, NULL, NULL, NULL),
                     LLMC_EINVAL);
    llmc_embedder_free(em);
    llmc_embedder_free(NULL);
}

typedef struct answer {
    int calls, rc;
    unsigned dim;
    float first;
} answer_t;

static void on_vec(void *arg, int rc, const float *vec, unsigned dim)
{
    answer_t *a = arg;
    a->calls++;
    a->rc = rc;
    a->dim = dim;
    a->first = vec ? vec[0] : 0;
}

static llmc_embed_config_t remote_cfg(char *url, size_t n, int port)
{
    snprintf(url, n, "http://127.0.0.1:%d/v1", port);
    return (llmc_embed_config_t){.url = url, .model = "mock-embedding", .window_ms = 5,
                                 .timeout_ms = 5000};
}

static void test_remote_answers_later_then_from_its_cache(void **state)
{
    (void)state;
    uv_loop_t loop;
    char url[64];
    llmc_embed_config_t cfg = remote_cfg(url, sizeof(url), mock_port);
    answer_t a = {0}, b = {0}, gone = {0};
    llmc_embedder_req_t *ra = NULL, *rb = NULL, *rgone = NULL;
    const float *v = NULL;
    unsigned dim = 0;
    char id[LLMC_EMBEDDER_ID_MAX];

    assert_int_equal(uv_loop_init(&loop), 0);
    llmc_embedder_t *em = llmc_embedder_remote_new(&loop, &cfg);
    assert_non_null(em);
    llmc_embedder_remote_id(&cfg, id);
    assert_string_equal(em->id, id);
    assert_non_null(strstr(em->id, "mock-embedding"));
    assert_string_not_equal(em->id, LLMC_EMBEDDER_LEXICAL_ID);
    assert_int_equal(em->dim, 0); /* the model names it */
    assert_int_equal(llmc_embedder_get(em, "hello", 5, &v, &dim, on_vec, &a, &ra), 0);
    assert_int_equal(llmc_embedder_get(em, "world", 5, &v, &dim, on_vec, &b, &rb), 0);
    assert_int_equal(llmc_embedder_get(em, "never", 5, &v, &dim, on_vec, &gone, &rgone), 0);
    llmc_embedder_cancel(em, rgone);
    assert_int_equal(a.calls + b.calls, 0); /* never inside get() */
    while (a.calls == 0 || b.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(a.rc, 0);
    assert_int_equal(b.rc, 0);
    assert_true(a.dim > 0 && a.dim == b.dim);
    assert_int_equal(gone.calls, 0);
    /* Known text: at once, the same vector. */
    assert_int_equal(llmc_embedder_get(em, "hello", 5, &v, &dim, on_vec, &a, &ra), 1);
    assert_int_equal(dim, a.dim);
    assert_true(v[0] == a.first);
    assert_int_equal(em->dim, a.dim);
    /* Freed with a request waiting: it ends cancelled, inside free. */
    answer_t c = {0};
    assert_int_equal(llmc_embedder_get(em, "pending", 7, &v, &dim, on_vec, &c, &ra), 0);
    llmc_embedder_free(em);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.rc, LLMC_ECANCELED);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_remote_failure_is_an_error(void **state)
{
    (void)state;
    uv_loop_t loop;
    char url[64];
    llmc_embed_config_t cfg = remote_cfg(url, sizeof(url), 1); /* nothing listens */
    answer_t a = {0};
    llmc_embedder_req_t *r = NULL;
    const float *v = NULL;
    unsigned dim = 0;

    assert_int_equal(uv_loop_init(&loop), 0);
    llmc_embedder_t *em = llmc_embedder_remote_new(&loop, &cfg);
    assert_int_equal(llmc_embedder_get(em, "hello", 5, &v, &dim, on_vec, &a, &r), 0);
    while (a.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(a.rc < 0 && a.rc != LLMC_ECANCELED);
    llmc_embedder_free(em);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_ids_name_model_and_endpoint(void **state)
{
    (void)state;
    char a[LLMC_EMBEDDER_ID_MAX], b[LLMC_EMBEDDER_ID_MAX], c[LLMC_EMBEDDER_ID_MAX];
    char longurl[400];
    llmc_embed_config_t x = {.url = "http://a/v1", .model = "m1"};
    llmc_embed_config_t y = {.url = "http://b/v1", .model = "m1"};
    llmc_embedder_remote_id(&x, a);
    llmc_embedder_remote_id(&y, b);
    assert_string_not_equal(a, b);
    x.model = "m2";
    llmc_embedder_remote_id(&x, c);
    assert_string_not_equal(a, c);
    /* Two long URLs that differ past the cut still differ. */
    memset(longurl, 'u', sizeof(longurl) - 1);
    longurl[sizeof(longurl) - 1] = '\0';
    x.url = longurl;
    llmc_embedder_remote_id(&x, a);
    longurl[sizeof(longurl) - 2] = 'v';
    llmc_embedder_remote_id(&x, b);
    assert_true(strlen(a) < LLMC_EMBEDDER_ID_MAX);
    assert_string_not_equal(a, b);
}

static int setup(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(llmc_upstream_global_init(), 0);
    llmc_mock_config_t cfg = {.latency_ms = 0};
    if (llmc_mock_start(&cfg, "127.0.0.1", 0, &mock, err, sizeof(err)) != 0) {
        fprintf(stderr, "mock: %s\n", err);
        return -1;
    }
    mock_port = llmc_mock_port(mock);
    return mock_port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    llmc_mock_stop(mock);
    llmc_upstream_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lexical_answers_at_once),
        cmocka_unit_test(test_remote_answers_later_then_from_its_cache),
        cmocka_unit_test(test_remote_failure_is_an_error),
        cmocka_unit_test(test_ids_name_model_and_endpoint),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
