/*
 * test_upstream.c: the upstream client (libcurl multi on libuv) against the
 * built-in mock model running on its own thread, and the mock as a client
 * sees it: status and body relay, errors mapped to LLMC_E* codes, timeouts,
 * concurrency, cancel and close at awkward moments, streams, faults,
 * counters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "llmc/error.h"
#include "mock/mock.h"
#include "upstream/upstream.h"

static llmc_mock_t *mock;
static int mock_port;

/* ---- one call's record ---------------------------------------------------------- */

typedef struct result {
    int heads, status, data_calls, done, err;
    char ctype[128], detail[256];
    char *pass;
    size_t pass_len;
    char *body;
    size_t len, cap;
    int data_before_done;
    llmc_upstream_call_t *call;
    /* what the callbacks should do to test re-entry */
    bool cancel_in_head, cancel_in_data;
    bool pause_in_data;                 /* pause the call on its first data */
    bool pause_each_data;               /* pause it on every piece (a slow client) */
    llmc_upstream_t *close_in_data;
    struct env *chain_env;              /* start next_* from inside a callback */
    struct result *next_in_head, *next_in_done;
} result_t;

static int start_chat(struct env *e, const char *body, result_t *r);

static void on_head(void *arg, int status, const char *ct, const char *pass, size_t pass_len)
{
    result_t *r = arg;
    r->heads++;
    r->status = status;
    snprintf(r->ctype, sizeof(r->ctype), "%s", ct);
    r->pass = malloc(pass_len + 1);
    memcpy(r->pass, pass, pass_len);
    r->pass[pass_len] = '\0';
    r->pass_len = pass_len;
    if (r->cancel_in_head)
        llmc_upstream_cancel(r->call);
    if (r->next_in_head) {
        assert_int_equal(start_chat(r->chain_env, "{\"messages\":[{\"role\":\"user\","
                                                  "\"content\":\"from head\"}]}", r->next_in_head), 0);
        assert_int_equal(r->next_in_head->heads + r->next_in_head->done, 0);
    }
}

static void on_data(void *arg, const char *buf, size_t len)
{
    result_t *r = arg;
    assert_int_equal(r->heads, 1);
    assert_int_equal(r->done, 0);
    if (r->len + len + 1 > r->cap) { /* doubling: ASan's realloc always copies */
        r->cap = (r->len + len + 1) * 2;
        r->body = realloc(r->body, r->cap);
    }
    memcpy(r->body + r->len, buf, len);
    r->len += len;
    r->body[r->len] = '\0';
    r->data_calls++;
    if (r->cancel_in_data && r->data_calls == 2)
        llmc_upstream_cancel(r->call);
    if (r->pause_in_data && r->data_calls == 1)
        llmc_upstream_pause(r->call, true);
    if (r->pause_each_data)
        llmc_upstream_pause(r->call, true);
    if (r->close_in_data && r->data_calls == 2)
        llmc_upstream_close(r->close_in_data, NULL, NULL);
}

static void on_done(void *arg, int err, const char *detail)
{
    result_t *r = arg;
    r->done++;
    r->err = err;
    r->data_before_done = r->data_calls;
    snprintf(r->detail, sizeof(r->detail), "%s", detail);
    if (r->next_in_done) {
        assert_int_equal(start_chat(r->chain_env, "{\"messages\":[{\"role\":\"user\","
                                                  "\"content\":\"from done\"}]}", r->next_in_done), 0);
        assert_int_equal(r->next_in_done->heads + r->next_in_done->done, 0);
    }
}

static const llmc_upstream_handler_t handler = {on_head, on_data, on_done};

static void result_free(result_t *r)
{
    free(r->pass);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* ---- a loop per test ----------------------------------------------------------------- */

typedef struct env {
    uv_loop_t loop;
    uv_timer_t tick;   /* keeps uv_run(ONCE) from blocking forever when idle */
    llmc_upstream_t *u;
    bool closed;
} env_t;

static void on_tick(uv_timer_t *t) {}

static void env_open_cfg(env_t *e, const llmc_upstream_config_t *cfg)
{
    memset(e, 0, sizeof(*e));
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->tick);
    uv_timer_start(&e->tick, on_tick, 20, 20);
    e->u = llmc_upstream_new(&e->loop, cfg);
    assert_non_null(e->u);
}

static void env_open(env_t *e, uint64_t total_timeout_ms, long max_host_conns)
{
    llmc_upstream_config_t cfg = {.connect_timeout_ms = 2000, .total_timeout_ms = total_timeout_ms,
                                  .max_host_conns = max_host_conns};
    env_open_cfg(e, &cfg);
}

static void on_closed(void *arg)
{
    *(bool *)arg = true;
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* Runs the loop until *count reaches want, failing after max_ms. */
static void run_until(env_t *e, const int *count, int want, uint64_t max_ms)
{
    uint64_t start = now_ms();
    while (*count < want) {
        uv_run(&e->loop, UV_RUN_ONCE);
        assert_true(now_ms() - start < max_ms);
    }
}

static void run_for(env_t *e, uint64_t ms)
{
    uint64_t start = now_ms();
    while (now_ms() - start < ms)
        uv_run(&e->loop, UV_RUN_ONCE);
}

static void env_close(env_t *e)
{
    if (e->u && !e->closed)
        llmc_upstream_close(e->u, on_closed, &e->closed);
    uint64_t start = now_ms();
    while (!e->closed) {
        uv_run(&e->loop, UV_RUN_ONCE);
        assert_true(now_ms() - start < 5000);
    }
    uv_close((uv_handle_t *)&e->tick, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

static int start_post(env_t *e, const char *path, const char *body, result_t *r, int port)
{
    char url[128];
    static const char *const hdrs[] = {"Content-Type: application/json",
                                       "Authorization: Bearer test-key"};
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    llmc_upstream_request_t req = {.method = "POST", .url = url, .body = body,
                                   .body_len = strlen(body), .headers = hdrs, .nheaders = 2};
    return llmc_upstream_start(e->u, &req, &handler, r, &r->call);
}

static int start_chat(struct env *e, const char *body, result_t *r)
{
    return start_post(e, "/v1/chat/completions", body, r, mock_port);
}

static const char *content_of(const char *body, json_t **keep)
{
    json_error_t je;
    *keep = json_loads(body, 0, &je);
    assert_non_null(*keep);
    json_t *ch = json_array_get(json_object_get(*keep, "choices"), 0);
    return json_string_value(json_object_get(json_object_get(ch, "message"), "content"));
}

/* ---- blocking client for checking the mock itself ------------------------------------- */

typedef struct blocking {
    char *body;
    size_t len;
    long call_no;
    char retry_after[16];
} blocking_t;

static size_t b_write(char *p, size_t s, size_t n, void *ud)
{
    blocking_t *b = ud;
    b->body = realloc(b->body, b->len + s * n + 1);
    memcpy(b->body + b->len, p, s * n);
    b->len += s * n;
    b->body[b->len] = '\0';
    return s * n;
}

static size_t b_header(char *p, size_t s, size_t n, void *ud)
{
    blocking_t *b = ud;
    if (strncasecmp(p, "X-Mock-Call:", 12) == 0)
        b->call_no = strtol(p + 12, NULL, 10);
    if (strncasecmp(p, "Retry-After:", 12) == 0)
        snprintf(b->retry_after, sizeof(b->retry_after), "%.*s", (int)strcspn(p + 13, "\r\n"),
                 p + 13);
    return s * n;
}

static long blocking_call(const char *method, const char *path, const char *body, blocking_t *b)
{
    char url[128];
    long status = 0;
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    memset(b, 0, sizeof(*b));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", mock_port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, b_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, b_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

static json_int_t stat_of(const char *name)
{
    blocking_t b;
    assert_int_equal(blocking_call("GET", "/mock/stats", NULL, &b), 200);
    json_t *o = json_loads(b.body, 0, NULL);
    assert_non_null(o);
    json_int_t v = json_integer_value(json_object_get(o, name));
    json_decref(o);
    free(b.body);
    return v;
}

/* ---- tests: the client ------------------------------------------------------------------ */

#define HELLO "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hello upstream\"}]}"

static void test_chat_roundtrip(void **state)
{
    env_t e;
    result_t r = {0};
    env_open(&e, 5000, 0);
    assert_int_equal(start_chat(&e, HELLO, &r), 0);
    assert_int_equal(llmc_upstream_active(e.u), 1);
    assert_int_equal(r.heads + r.done, 0);   /* nothing runs inside start */
    run_until(&e, &r.done, 1, 5000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "application/json");
    assert_true(r.data_calls >= 1);
    assert_int_equal(strlen(r.body), r.len);
    json_t *o;
    const char *content = content_of(r.body, &o);
    assert_non_null(strstr(content, "to: hello upstream"));
    assert_string_equal(json_string_value(json_object_get(o, "object")), "chat.completion");
    json_decref(o);
    assert_int_equal(llmc_upstream_active(e.u), 0);
    result_free(&r);
    env_close(&e);
}

static void test_error_status_is_passed_through(void **state)
{
    env_t e;
    result_t r500 = {0}, r429 = {0};
    env_open(&e, 5000, 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"status\":500}}", &r500), 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"status\":429}}", &r429), 0);
    run_until(&e, &r500.done, 1, 5000);
    run_until(&e, &r429.done, 1, 5000);
    assert_int_equal(r500.err, 0);
    assert_int_equal(r500.status, 500);
    assert_non_null(strstr(r500.body, "\"error\""));
    assert_int_equal(r429.status, 429);
    assert_non_null(strstr(r429.pass, "Retry-After: 1\r\n"));
    assert_null(strstr(r429.pass, "X-Mock-Call"));   /* not in the pass-through table */
    result_free(&r500);
    result_free(&r429);
    env_close(&e);
}

static int closed_port(void)
{
    /* Bound but never listening: connecting is refused at once. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_connection_refused(void **state)
{
    env_t e;
    result_t r = {0};
    env_open(&e, 5000, 0);
    assert_int_equal(start_post(&e, "/v1/chat/completions", HELLO, &r, closed_port()), 0);
    assert_int_equal(r.done, 0);
    run_until(&e, &r.done, 1, 5000);
    assert_int_equal(r.err, LLMC_ECONNECT);
    assert_int_equal(r.heads, 0);
    assert_true(strlen(r.detail) > 0);
    result_free(&r);
    env_close(&e);
}

static void test_timeout_is_reported_quickly(void **state)
{
    env_t e;
    result_t r = {0};
    env_open(&e, 300, 0);
    uint64_t t0 = now_ms();
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"latency_ms\":5000}}", &r), 0);
    run_until(&e, &r.done, 1, 3000);
    uint64_t took = now_ms() - t0;
    assert_int_equal(r.err, LLMC_ETIMEDOUT);
    assert_int_equal(r.heads, 0);
    assert_true(took >= 290 && took < 1500);
    result_free(&r);
    env_close(&e);
}

/*
 * A port whose accept queue is full: the kernel drops further SYNs, so a
 * connect to it neither succeeds nor is refused (a firewalled or dead
 * host). *keep holds the sockets that keep it so; close them after.
 */
static int blackhole_port(int keep[4])
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    keep[0] = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(keep[0], (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(keep[0], 0), 0);
    assert_int_equal(getsockname(keep[0], (struct sockaddr *)&a, &len), 0);
    for (int i = 1; i < 4; i++) {
        keep[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(keep[i], (struct sockaddr *)&a, sizeof(a));   /* EINPROGRESS, or queued */
    }
    usleep(50 * 1000);
    return ntohs(a.sin_port);
}

static void env_open_timeouts(env_t *e, uint64_t connect_ms, uint64_t total_ms)
{
    llmc_upstream_config_t cfg = {.connect_timeout_ms = connect_ms, .total_timeout_ms = total_ms};
    env_open_cfg(e, &cfg);
}

/*
 * curl reports a connect that timed out as CURLE_OPERATION_TIMEDOUT, like
 * the whole call's timeout, and it used to come out as LLMC_ETIMEDOUT: the
 * gateway answered 504 and never retried it, although nothing had reached
 * the upstream and --upstream-retries promises retries of calls that failed
 * to connect. It is LLMC_ECONNECT now; the whole call's timeout, even while
 * still connecting, stays LLMC_ETIMEDOUT.
 */
static void test_connect_timeout_is_a_connect_failure(void **state)
{
    int keep[4];
    int port = blackhole_port(keep);
    env_t e;
    result_t r = {0}, late = {0};
    env_open_timeouts(&e, 200, 5000);
    uint64_t t0 = now_ms();
    assert_int_equal(start_post(&e, "/v1/chat/completions", HELLO, &r, port), 0);
    run_until(&e, &r.done, 1, 3000);
    assert_int_equal(r.err, LLMC_ECONNECT);
    assert_int_equal(r.heads, 0);
    assert_true(now_ms() - t0 < 2000);
    assert_non_null(strstr(r.detail, "onnect"));
    env_close(&e);

    env_open_timeouts(&e, 5000, 300);
    assert_int_equal(start_post(&e, "/v1/chat/completions", HELLO, &late, port), 0);
    run_until(&e, &late.done, 1, 3000);
    assert_int_equal(late.err, LLMC_ETIMEDOUT);
    env_close(&e);
    result_free(&r);
    result_free(&late);
    for (int i = 0; i < 4; i++)
        close(keep[i]);
}

static void test_200_concurrent_calls(void **state)
{
    enum { N = 200 };
    env_t e;
    static result_t r[N];
    char body[N][160];
    env_open(&e, 10000, 0);
    json_int_t before = stat_of("chat");
    for (int i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        snprintf(body[i], sizeof(body[i]),
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"question %d\"}],"
                 "\"mock\":{\"latency_ms\":100}}", i);
        assert_int_equal(start_chat(&e, body[i], &r[i]), 0);
    }
    assert_int_equal(llmc_upstream_active(e.u), N);
    uint64_t t0 = now_ms();
    for (int i = 0; i < N; i++)
        run_until(&e, &r[i].done, 1, 10000);
    /* The mock waits 100 ms for each; together they must overlap. */
    assert_true(now_ms() - t0 < 3000);
    for (int i = 0; i < N; i++) {
        char want[64];
        json_t *o;
        assert_int_equal(r[i].err, 0);
        assert_int_equal(r[i].status, 200);
        snprintf(want, sizeof(want), "to: question %d", i);
        const char *content = content_of(r[i].body, &o);
        assert_non_null(strstr(content, want));
        assert_int_equal(strlen(strstr(content, want)), strlen(want));   /* its own answer */
        json_decref(o);
        result_free(&r[i]);
    }
    assert_int_equal(stat_of("chat") - before, N);
    assert_int_equal(llmc_upstream_active(e.u), 0);
    env_close(&e);
}

static void test_max_host_conns_still_completes(void **state)
{
    enum { N = 20 };
    env_t e;
    result_t r[N];
    env_open(&e, 10000, 2);
    for (int i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"latency_ms\":20}}", &r[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        run_until(&e, &r[i].done, 1, 10000);
        assert_int_equal(r[i].err, 0);
        assert_int_equal(r[i].status, 200);
        result_free(&r[i]);
    }
    env_close(&e);
}

static void on_cancel_timer(uv_timer_t *t)
{
    llmc_upstream_cancel(t->data);
}

static void test_cancel_in_flight(void **state)
{
    env_t e;
    result_t now = {0}, later = {0}, kept = {0};
    uv_timer_t t;
    env_open(&e, 5000, 0);
    json_int_t before = stat_of("in_flight");
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"latency_ms\":300}}", &now), 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"latency_ms\":300,\"x\":1}}", &later), 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"latency_ms\":300,\"x\":2}}", &kept), 0);
    llmc_upstream_cancel(now.call);   /* before curl ever ran */
    uv_timer_init(&e.loop, &t);
    t.data = later.call;
    uv_timer_start(&t, on_cancel_timer, 100, 0);   /* while the mock waits */
    run_until(&e, &kept.done, 1, 5000);
    run_for(&e, 200);
    assert_int_equal(now.heads + now.data_calls + now.done, 0);
    assert_int_equal(later.heads + later.data_calls + later.done, 0);
    assert_int_equal(kept.err, 0);
    assert_int_equal(llmc_upstream_active(e.u), 0);
    /* The mock saw the canceled client leave: nothing of ours is in flight. */
    assert_int_equal(stat_of("in_flight"), before);
    uv_close((uv_handle_t *)&t, NULL);
    result_free(&kept);
    env_close(&e);
}

#define SLOW_STREAM \
    "{\"messages\":[{\"role\":\"user\",\"content\":\"stream me some words\"}],\"stream\":true," \
    "\"mock\":{\"chunk_delay_ms\":15}}"

static void test_cancel_from_callbacks(void **state)
{
    env_t e;
    result_t in_head = {.cancel_in_head = true}, in_data = {.cancel_in_data = true}, other = {0};
    env_open(&e, 5000, 0);
    assert_int_equal(start_chat(&e, SLOW_STREAM, &in_head), 0);
    assert_int_equal(start_chat(&e, SLOW_STREAM, &in_data), 0);
    assert_int_equal(start_chat(&e, SLOW_STREAM, &other), 0);
    run_until(&e, &other.done, 1, 5000);
    run_for(&e, 100);
    assert_int_equal(in_head.heads, 1);
    assert_int_equal(in_head.data_calls + in_head.done, 0);
    assert_int_equal(in_data.data_calls, 2);
    assert_int_equal(in_data.done, 0);
    assert_int_equal(other.err, 0);
    assert_int_equal(llmc_upstream_active(e.u), 0);
    result_free(&in_head);
    result_free(&in_data);
    result_free(&other);
    env_close(&e);
}

static void test_close_from_callback_and_with_calls_in_flight(void **state)
{
    env_t e;
    result_t a = {0}, b = {0};
    env_open(&e, 5000, 0);
    a.close_in_data = e.u;
    assert_int_equal(start_chat(&e, SLOW_STREAM, &a), 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"latency_ms\":2000}}", &b), 0);
    uint64_t start = now_ms();
    while (a.data_calls < 2) {
        uv_run(&e.loop, UV_RUN_ONCE);
        assert_true(now_ms() - start < 5000);
    }
    e.closed = true;   /* closed by the callback, without a close callback */
    run_for(&e, 100);
    assert_int_equal(a.done + b.heads + b.done, 0);
    assert_int_equal(a.data_calls, 2);
    e.u = NULL;
    result_free(&a);
    result_free(&b);
    env_close(&e);

    /* And a close from outside, with calls waiting. */
    result_t c[5];
    env_open(&e, 5000, 0);
    for (int i = 0; i < 5; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"latency_ms\":500}}", &c[i]), 0);
    }
    run_for(&e, 50);
    env_close(&e);
    for (int i = 0; i < 5; i++)
        assert_int_equal(c[i].heads + c[i].done, 0);
}

/* Starting a call from inside on_head runs inside curl's callback, where
   curl refuses new handles: the start is deferred, not lost. */
static void test_start_from_callbacks(void **state)
{
    env_t e;
    result_t first = {0}, from_head = {0}, from_done = {0};
    env_open(&e, 5000, 0);
    first.chain_env = &e;
    first.next_in_head = &from_head;
    first.next_in_done = &from_done;
    assert_int_equal(start_chat(&e, HELLO, &first), 0);
    run_until(&e, &from_head.done, 1, 5000);
    run_until(&e, &from_done.done, 1, 5000);
    assert_int_equal(first.err, 0);
    assert_int_equal(from_head.err, 0);
    assert_int_equal(from_head.status, 200);
    assert_non_null(strstr(from_head.body, "to: from head"));
    assert_int_equal(from_done.status, 200);
    assert_non_null(strstr(from_done.body, "to: from done"));
    assert_int_equal(llmc_upstream_active(e.u), 0);
    result_free(&first);
    result_free(&from_head);
    result_free(&from_done);
    env_close(&e);
}

static void test_streaming_delivers_pieces(void **state)
{
    env_t e;
    result_t r = {0};
    env_open(&e, 5000, 0);
    assert_int_equal(start_chat(&e, SLOW_STREAM, &r), 0);
    run_until(&e, &r.done, 1, 5000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "text/event-stream");
    assert_true(r.data_before_done >= 3);
    assert_int_equal(strncmp(r.body, "data: {", 7), 0);
    assert_int_equal(strcmp(r.body + r.len - 14, "data: [DONE]\n\n"), 0);
    assert_non_null(strstr(r.body, "\"role\":\"assistant\""));
    assert_non_null(strstr(r.body, "\"finish_reason\":\"stop\""));
    result_free(&r);
    env_close(&e);
}

/* A call paused from inside on_data delivers nothing more until it is
   resumed, and then the rest, whole (curl keeps the bytes it had read). */
static void test_pause_and_resume(void **state)
{
    env_t e;
    result_t r = {.pause_in_data = true};
    size_t big = 2u << 20;
    char *body = malloc(big + 1);
    memset(body, 'p', big);
    body[big] = '\0';
    env_open(&e, 10000, 0);
    assert_int_equal(start_post(&e, "/v1/echo", body, &r, mock_port), 0);
    run_until(&e, &r.data_calls, 1, 5000);
    run_for(&e, 300);
    assert_int_equal(r.done, 0);
    assert_int_equal(r.data_calls, 1); /* nothing after the call that paused */
    assert_true(r.len <= 16384);
    int calls = r.data_calls;
    run_for(&e, 100);
    assert_int_equal(r.data_calls, calls); /* paused: nothing more */
    llmc_upstream_pause(r.call, false);
    run_until(&e, &r.done, 1, 5000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.len, big);
    assert_memory_equal(r.body, body, big);
    free(body);
    result_free(&r);
    env_close(&e);
}

/* Loop turns seen while a call runs: the most on_data calls between two. */
typedef struct turns {
    const result_t *r;
    bool resume; /* resume the call at each turn (it pauses on each piece) */
    int last, most, turns;
} turns_t;

static void on_turn(uv_check_t *h)
{
    turns_t *t = h->data;
    if (t->resume && t->r->call && !t->r->done)
        llmc_upstream_pause(t->r->call, false); /* the client took what it had */
    int d = t->r->data_calls - t->last;
    t->most = d > t->most ? d : t->most;
    t->last = t->r->data_calls;
    t->turns++;
}

/* An answer that arrives faster than it is taken (a big body from a local
   model) must not hold the loop: curl reads at most a hundred buffers per
   run and asks to be run again at once (a 0 ms timeout); run from inside
   the timer's own callback, that again came before any other I/O, so hits
   on the same loop waited for the whole body (test_hardening's 50 MB). */
static void fast_big_answer(bool slow_client)
{
    env_t e;
    result_t r = {.pause_each_data = slow_client};
    uv_check_t check;
    turns_t t = {.r = &r, .resume = slow_client};
    env_open(&e, 20000, 0);
    uv_check_init(&e.loop, &check);
    check.data = &t;
    uv_check_start(&check, on_turn);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"big\"}],"
                                    "\"mock\":{\"bytes\":16000000}}", &r), 0);
    run_until(&e, &r.done, 1, 15000);
    assert_int_equal(r.err, 0);
    assert_true(r.len >= 16000000);
    /* One turn runs curl for the socket's event, for a timeout of its own
       and once more at its request (0 ms) at most: a hundred buffers or so
       each, or one piece each for a client that pauses on every piece. */
    assert_true(t.most <= (slow_client ? 3 : 3 * 101));
    uv_close((uv_handle_t *)&check, NULL);
    result_free(&r);
    env_close(&e);
}

/* An answer that arrives faster than it is taken (a big body from a local
   model) must not hold the loop: curl asks to be run again at once (a 0 ms
   timeout) while it has bytes to read or was resumed; asked from inside
   the timer's own callback, libuv 1.44 ran that timer again before any
   other I/O, so hits on the same loop waited for the whole body
   (test_hardening's 50 MB answer). */
static void test_a_fast_big_answer_leaves_the_loop_turning(void **state)
{
    fast_big_answer(true);
    fast_big_answer(false);
}

static void test_faults(void **state)
{
    env_t e;
    result_t trunc = {0}, reset = {0}, junk = {0}, empty = {0}, cut = {0}, big = {0};
    env_open(&e, 5000, 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"fault\":\"truncate\"}}", &trunc), 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"fault\":\"reset\"}}", &reset), 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"fault\":\"invalid-json\"}}", &junk), 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"fault\":\"empty\"}}", &empty), 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true,\"mock\":{\"fault\":\"cut-stream\"}}",
                                &cut), 0);
    assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"bytes\":3000000}}", &big), 0);
    run_until(&e, &trunc.done, 1, 5000);
    run_until(&e, &reset.done, 1, 5000);
    run_until(&e, &junk.done, 1, 5000);
    run_until(&e, &empty.done, 1, 5000);
    run_until(&e, &cut.done, 1, 5000);
    run_until(&e, &big.done, 1, 5000);
    assert_int_equal(trunc.err, LLMC_EUPSTREAM);
    assert_int_equal(trunc.status, 200);
    assert_true(trunc.len > 0);
    assert_int_equal(reset.err, LLMC_EUPSTREAM);
    assert_int_equal(reset.heads, 0);
    assert_int_equal(junk.err, 0);
    assert_int_equal(junk.status, 200);
    assert_null(json_loads(junk.body, 0, NULL));
    assert_int_equal(empty.err, 0);
    assert_int_equal(empty.heads, 1);   /* a head even without body bytes */
    assert_int_equal(empty.status, 200);
    assert_int_equal(empty.data_calls, 0);
    assert_int_equal(cut.err, LLMC_EUPSTREAM);
    assert_int_equal(cut.heads, 1);
    assert_null(strstr(cut.body, "[DONE]"));
    assert_int_equal(big.err, 0);
    assert_true(big.len > 3000000);
    assert_true(big.data_calls > 1);
    result_free(&trunc);
    result_free(&reset);
    result_free(&junk);
    result_free(&empty);
    result_free(&cut);
    result_free(&big);
    env_close(&e);
}

#define STALL "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"fault\":\"stall\"}}"

static void test_stall_times_out_and_mock_forgets_it(void **state)
{
    env_t e;
    result_t r = {0};
    env_open(&e, 300, 0);
    json_int_t before = stat_of("in_flight");
    assert_int_equal(start_chat(&e, STALL, &r), 0);
    run_for(&e, 150);
    assert_int_equal(stat_of("in_flight"), before + 1);
    run_until(&e, &r.done, 1, 3000);
    assert_int_equal(r.err, LLMC_ETIMEDOUT);
    /* The client hung up: the mock drops the request and its timer. */
    run_for(&e, 200);
    assert_int_equal(stat_of("in_flight"), before);
    result_free(&r);
    env_close(&e);
}

static void test_mock_stop_with_requests_waiting(void **state)
{
    llmc_mock_t *m2;
    char err[128];
    env_t e;
    result_t stalled = {0}, slow = {0};
    llmc_mock_config_t cfg = {.latency_ms = 5000};
    assert_int_equal(llmc_mock_start(&cfg, "127.0.0.1", 0, &m2, err, sizeof(err)), 0);
    env_open(&e, 10000, 0);
    assert_int_equal(start_post(&e, "/v1/chat/completions", STALL, &stalled, llmc_mock_port(m2)), 0);
    assert_int_equal(start_post(&e, "/v1/chat/completions", HELLO, &slow, llmc_mock_port(m2)), 0);
    run_for(&e, 150);
    llmc_mock_stop(m2);   /* joins: its requests are dropped, its memory freed */
    run_until(&e, &stalled.done, 1, 3000);
    run_until(&e, &slow.done, 1, 3000);
    assert_int_equal(stalled.err, LLMC_EUPSTREAM);
    assert_int_equal(slow.err, LLMC_EUPSTREAM);
    assert_int_equal(stalled.heads + slow.heads, 0);
    result_free(&stalled);
    result_free(&slow);
    env_close(&e);
}

static void test_bad_arguments(void **state)
{
    env_t e;
    result_t r = {0};
    static const char *const bad_hdr[] = {"X-Evil: a\r\nInjected: b"};
    char url[64];
    env_open(&e, 5000, 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/models", mock_port);
    llmc_upstream_request_t req = {.method = "GET", .url = url};
    llmc_upstream_request_t inj = {.method = "GET", .url = url, .headers = bad_hdr, .nheaders = 1};
    llmc_upstream_request_t meth = {.method = "GET /x", .url = url};
    llmc_upstream_handler_t no_done = {on_head, on_data, NULL};
    assert_int_equal(llmc_upstream_start(e.u, &inj, &handler, &r, NULL), LLMC_EINVAL);
    assert_int_equal(llmc_upstream_start(e.u, &meth, &handler, &r, NULL), LLMC_EINVAL);
    assert_int_equal(llmc_upstream_start(e.u, &req, &no_done, &r, NULL), LLMC_EINVAL);
    assert_int_equal(llmc_upstream_active(e.u), 0);
    /* A plain GET works and its out pointer may be NULL. */
    assert_int_equal(llmc_upstream_start(e.u, &req, &handler, &r, NULL), 0);
    run_until(&e, &r.done, 1, 5000);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"object\":\"list\""));
    result_free(&r);
    env_close(&e);
}

/* ---- tests: the mock as a client sees it --------------------------------------------- */

static void test_mock_answers_are_deterministic(void **state)
{
    blocking_t a, a2, b;
    json_t *oa, *oa2, *ob;
    assert_int_equal(blocking_call("POST", "/v1/chat/completions", HELLO, &a), 200);
    assert_int_equal(blocking_call("POST", "/v1/chat/completions", HELLO, &a2), 200);
    assert_int_equal(blocking_call("POST", "/v1/chat/completions",
                                   "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\","
                                   "\"content\":\"hello upstream\"}],\"temperature\":0.5}", &b), 200);
    const char *ca = content_of(a.body, &oa);
    assert_string_equal(ca, content_of(a2.body, &oa2));
    assert_string_not_equal(ca, content_of(b.body, &ob));
    assert_int_equal(a2.call_no, a.call_no + 1);
    json_decref(oa);
    json_decref(oa2);
    json_decref(ob);
    free(a.body);
    free(a2.body);
    free(b.body);
}

static void test_mock_counters_and_errors(void **state)
{
    blocking_t b;
    assert_int_equal(blocking_call("POST", "/mock/reset", "", &b), 200);
    free(b.body);
    assert_int_equal(blocking_call("POST", "/v1/chat/completions", HELLO, &b), 200);
    assert_int_equal(b.call_no, 1);
    free(b.body);
    assert_int_equal(blocking_call("POST", "/v1/embeddings", "{\"input\":[\"a\",\"b\"]}", &b), 200);
    assert_int_equal(b.call_no, 2);
    json_t *o = json_loads(b.body, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(o, "data")), 2);
    json_decref(o);
    free(b.body);
    assert_int_equal(blocking_call("GET", "/v1/models", NULL, &b), 200);
    free(b.body);
    assert_int_equal(blocking_call("POST", "/v1/completions", "{\"prompt\":\"x\"}", &b), 200);
    assert_non_null(strstr(b.body, "text_completion"));
    free(b.body);
    assert_int_equal(blocking_call("POST", "/v1/chat/completions", "{not json", &b), 400);
    assert_non_null(strstr(b.body, "\"error\""));
    free(b.body);
    assert_int_equal(blocking_call("POST", "/v1/chat/completions",
                                   "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"fault\":\"sideways\"}}", &b), 400);
    free(b.body);
    assert_int_equal(blocking_call("GET", "/v1/nothing-here", NULL, &b), 404);
    assert_non_null(strstr(b.body, "\"error\""));
    free(b.body);
    assert_int_equal(blocking_call("POST", "/v1/chat/completions",
                                   "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"status\":429}}", &b), 429);
    assert_string_equal(b.retry_after, "1");
    free(b.body);
    assert_int_equal(stat_of("calls"), 7);   /* the 404 is no model call */
    assert_int_equal(stat_of("chat"), 4);
    assert_int_equal(stat_of("embeddings"), 1);
    assert_int_equal(stat_of("models"), 1);
    assert_int_equal(stat_of("completions"), 1);
    assert_int_equal(stat_of("in_flight"), 0);
}

static void test_mock_waits_concurrently(void **state)
{
    /* 1000 requests waiting 300 ms each finish together, not one by one. */
    enum { N = 1000 };
    env_t e;
    static result_t r[N];
    env_open(&e, 20000, 0);
    uint64_t t0 = now_ms();
    for (int i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        assert_int_equal(start_chat(&e, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"mock\":{\"latency_ms\":300}}", &r[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        run_until(&e, &r[i].done, 1, 20000);
        assert_int_equal(r[i].err, 0);
        result_free(&r[i]);
    }
    assert_true(now_ms() - t0 < 6000);
    env_close(&e);
}

static int setup(void **state)
{
    char err[256];
    struct rlimit rl;
    /* Client and mock share this process: two descriptors per connection. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
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
    llmc_mock_stop(mock);
    llmc_upstream_global_cleanup();
    return 0;
}

static void test_url_redact(void **state)
{
    (void)state;
    static const struct { const char *in, *out; } cases[] = {
        {"https://api.openai.com/v1", "https://api.openai.com/v1"},
        {"http://u:p@127.0.0.1:8080/v1", "http://***@127.0.0.1:8080/v1"},
        {"https://user@host/v1", "https://***@host/v1"},
        {"https://u:p@ss:w/rd@host/v1", "https://***@host/v1"},     /* '@' and '/' in it */
        {"https://u:p@host/v1?x=a@b", "https://***@host/v1?x=a@b"}, /* not in the query */
        {"https://host/v1#a@b", "https://host/v1#a@b"},
        {"u:p@host/v1", "***@host/v1"},
        {"", ""},
    };
    char out[128];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        llmc_upstream_url_redact(cases[i].in, out, sizeof(out));
        assert_string_equal(out, cases[i].out);
    }
    llmc_upstream_url_redact("http://u:secret@h/v1", out, 8); /* cut, never the password */
    assert_string_equal(out, "http://");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_roundtrip),
        cmocka_unit_test(test_error_status_is_passed_through),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_timeout_is_reported_quickly),
        cmocka_unit_test(test_connect_timeout_is_a_connect_failure),
        cmocka_unit_test(test_200_concurrent_calls),
        cmocka_unit_test(test_max_host_conns_still_completes),
        cmocka_unit_test(test_cancel_in_flight),
        cmocka_unit_test(test_cancel_from_callbacks),
        cmocka_unit_test(test_close_from_callback_and_with_calls_in_flight),
        cmocka_unit_test(test_start_from_callbacks),
        cmocka_unit_test(test_streaming_delivers_pieces),
        cmocka_unit_test(test_pause_and_resume),
        cmocka_unit_test(test_a_fast_big_answer_leaves_the_loop_turning),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_stall_times_out_and_mock_forgets_it),
        cmocka_unit_test(test_mock_stop_with_requests_waiting),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_mock_answers_are_deterministic),
        cmocka_unit_test(test_mock_counters_and_errors),
        cmocka_unit_test(test_mock_waits_concurrently),
        cmocka_unit_test(test_url_redact),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
