/*
 * test_http.c: the HTTP server as a client sees it.
 *
 * Each test starts a server on 127.0.0.1:0 with its own loop in a thread and
 * talks to it with blocking sockets from the test thread. Anything that
 * touches server state (stats, handler counters) runs on the loop thread
 * through on_loop(), which hands a function over with uv_async and waits.
 * Responses are decoded with libhttp-parser in response mode, so chunked and
 * close-delimited bodies are checked by a real decoder, not by string
 * compares. The head scanner, a pure function, is tested directly.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <http_parser.h>
#include <jansson.h>
#include <uv.h>

#include "http/http.h"
#include "http/http_int.h"
#include "llmc/error.h"

/* ------------------------------------------------------------------ */
/* Server fixture                                                      */

typedef struct srv {
    uv_loop_t loop;
    uv_async_t async;
    uv_thread_t thread;
    uv_sem_t done;
    void (*fn)(struct srv *, void *);
    void *arg;
    llmc_http_server_t *s;
    int port;
    /* Loop thread only (read through on_loop). */
    int aborts, dones, releases, closed, drained;
    int last_status;
    uint64_t last_bytes;
    uint64_t last_dur_ns;  /* uv_hrtime() - start_ns, as an access log computes it */
    bool last_named;       /* method_name, target, path and query were all set */
    size_t pending;
} srv_t;

static srv_t *g_srv; /* the fixture of the running test, for cmocka's state */

static void on_async(uv_async_t *a)
{
    srv_t *t = a->data;

    t->fn(t, t->arg);
    uv_sem_post(&t->done);
}

/* Runs fn(t, arg) on the loop thread and waits for it. */
static void on_loop(srv_t *t, void (*fn)(srv_t *, void *), void *arg)
{
    t->fn = fn;
    t->arg = arg;
    uv_async_send(&t->async);
    uv_sem_wait(&t->done);
}

static void loop_main(void *arg)
{
    srv_t *t = arg;

    uv_run(&t->loop, UV_RUN_DEFAULT);
}

/* -- test handler -- */

typedef struct later {
    uv_timer_t timer;
    llmc_http_req_t *req;
    srv_t *t;
    int step;
} later_t;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_abort(llmc_http_req_t *req)
{
    later_t *l = req->data;

    g_srv->aborts++;
    if (l) {
        uv_timer_stop(&l->timer);
        uv_close((uv_handle_t *)&l->timer, later_closed);
    }
}

static void later_fire(uv_timer_t *tm)
{
    later_t *l = tm->data;
    char body[128];
    int n = snprintf(body, sizeof(body), "later:%s", l->req->query);

    llmc_http_respond_copy(l->req, 200, "Content-Type: text/plain\r\n", 26, body, (size_t)n);
    uv_close((uv_handle_t *)&l->timer, later_closed);
}

static const char *chunks[3] = {"one", "two", "three"};
static char *g_big;

static void stream_tick(uv_timer_t *tm)
{
    later_t *l = tm->data;

    if (l->step < 3) {
        llmc_http_stream_write(l->req, chunks[l->step], strlen(chunks[l->step]));
        l->step++;
        return;
    }
    llmc_http_stream_end(l->req);
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, later_closed);
}

/* /flood: a stream that keeps producing whether the client reads or not,
   like an upstream relayed as it comes: 64 KiB every 5 ms, for 3 s at most. */
#define FLOOD_CHUNK 65536
#define FLOOD_TICKS 600

static void flood_tick(uv_timer_t *tm)
{
    later_t *l = tm->data;

    if (l->step++ < FLOOD_TICKS) {
        llmc_http_stream_write(l->req, g_big, FLOOD_CHUNK);
        return;
    }
    llmc_http_stream_end(l->req);
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, later_closed);
}

static later_t *later_new(llmc_http_req_t *req, uv_timer_cb cb, uint64_t ms, uint64_t repeat)
{
    later_t *l = calloc(1, sizeof(*l));

    l->req = req;
    l->t = g_srv;
    uv_timer_init(req->loop, &l->timer);
    l->timer.data = l;
    req->data = l;
    req->on_abort = later_abort;
    uv_timer_start(&l->timer, cb, ms, repeat);
    return l;
}

static void echo(llmc_http_req_t *req)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s%, s:s?, s:b, s:i}", "method", req->method_name,
                          "target", req->target, "path", req->path, "query", req->query, "body",
                          req->body, req->body_len, "x_test", llmc_http_header(req, "X-Test"),
                          "keep_alive", req->keep_alive, "minor", req->http_minor);
    json_t *hs = json_array();
    size_t i;
    char *s;

    for (i = 0; i < req->nheaders; i++)
        json_array_append_new(hs, json_pack("[s,s]", req->headers[i].name, req->headers[i].value));
    json_object_set_new(j, "headers", hs);
    s = json_dumps(j, JSON_COMPACT);
    llmc_http_respond_copy(req, 200, "Content-Type: application/json\r\n", 32, s, strlen(s));
    free(s);
    json_decref(j);
}

#define BIG_LEN (8u << 20)

static void big_release(void *arg)
{
    ((srv_t *)arg)->releases++;
}

static void handler(llmc_http_req_t *req, void *ctx)
{
    srv_t *t = ctx;
    uv_buf_t b[2];

    if (strcmp(req->path, "/echo") == 0) {
        echo(req);
    } else if (strcmp(req->path, "/later") == 0) {
        later_new(req, later_fire, 30, 0);
    } else if (strcmp(req->path, "/slow") == 0) {
        later_new(req, later_fire, 300, 0);
    } else if (strcmp(req->path, "/slowstream") == 0) {
        llmc_http_stream_begin(req, 200, "Content-Type: text/plain\r\n", 26);
        later_new(req, stream_tick, 100, 100);
    } else if (strcmp(req->path, "/stream") == 0) {
        llmc_http_stream_begin(req, 200, "Content-Type: text/plain\r\n", 26);
        later_new(req, stream_tick, 5, 5);
    } else if (strcmp(req->path, "/stream_sync") == 0) {
        llmc_http_stream_begin(req, 200, "", 0);
        llmc_http_stream_write(req, "", 0); /* ignored, must not end the body */
        for (int i = 0; i < 3; i++)
            llmc_http_stream_write(req, chunks[i], strlen(chunks[i]));
        llmc_http_stream_end(req);
    } else if (strcmp(req->path, "/flood") == 0) {
        llmc_http_stream_begin(req, 200, "", 0);
        later_new(req, flood_tick, 5, 5);
    } else if (strcmp(req->path, "/hang") == 0) {
        req->data = NULL;
        req->on_abort = later_abort;
    } else if (strcmp(req->path, "/error_bytes") == 0) {
        /* as when a message quotes a header value, which may hold any byte */
        llmc_http_respond_error(req, 400, NULL, "invalid_request_error", "bad_value",
                                "\xc3\xa9\xf0\x9f\x98\x80 got '\xff', '\xc3(' and '\xed\xa0\x80' "
                                "and a cut \xe2\x82");
    } else if (strcmp(req->path, "/error") == 0) {
        llmc_http_respond_error(req, 422, "X-Extra: yes\r\n", "invalid_request_error",
                                strcmp(req->query, "nocode") == 0 ? NULL : "bad_thing",
                                "quote \" and \\ backslash");
    } else if (strcmp(req->path, "/big") == 0) {
        b[0] = uv_buf_init(g_big, BIG_LEN / 2);
        b[1] = uv_buf_init(g_big + BIG_LEN / 2, BIG_LEN / 2);
        llmc_http_respond(req, 200, "", 0, b, 2, big_release, t);
    } else if (strcmp(req->path, "/pending") == 0) {
        llmc_http_stream_begin(req, 200, "", 0);
        llmc_http_stream_write(req, g_big, BIG_LEN);
        t->pending = llmc_http_pending_bytes(req);
        llmc_http_stream_end(req);
    } else if (strcmp(req->path, "/nocontent") == 0) {
        llmc_http_respond_copy(req, 204, "", 0, "ignored", 7);
    } else {
        llmc_http_respond_error(req, 404, NULL, "invalid_request_error", "not_found", "no such path");
    }
}

static void on_done(llmc_http_req_t *req, int status, uint64_t bytes_out, void *ctx)
{
    srv_t *t = ctx;

    t->dones++;
    t->last_status = status;
    t->last_bytes = bytes_out;
    t->last_dur_ns = uv_hrtime() - req->start_ns;
    t->last_named = req->method_name && req->target && req->path && req->query;
}

static llmc_http_limits_t default_limits(void)
{
    llmc_http_limits_t l = {
        .max_header_bytes = 4096,
        .max_body_bytes = 65536,
        .max_headers = 20,
        .header_timeout_ms = 5000,
        .idle_timeout_ms = 5000,
        .max_conns = 100,
    };
    return l;
}

static srv_t *srv_start(llmc_http_limits_t lim)
{
    srv_t *t = calloc(1, sizeof(*t));
    llmc_http_server_config_t cfg = {.limits = lim, .handler = handler, .on_done = on_done, .ctx = t};
    char err[128];

    assert_non_null(t);
    g_srv = t;
    assert_int_equal(uv_loop_init(&t->loop), 0);
    assert_int_equal(uv_sem_init(&t->done, 0), 0);
    uv_async_init(&t->loop, &t->async, on_async);
    t->async.data = t;
    t->s = llmc_http_server_new(&t->loop, &cfg);
    assert_non_null(t->s);
    assert_int_equal(llmc_http_server_listen(t->s, "127.0.0.1", 0, true, err, sizeof(err)), 0);
    t->port = llmc_http_server_port(t->s);
    assert_true(t->port > 0);
    assert_int_equal(uv_thread_create(&t->thread, loop_main, t), 0);
    return t;
}

static void server_closed(void *arg)
{
    ((srv_t *)arg)->closed++;
}

static void do_close(srv_t *t, void *arg)
{
    llmc_http_server_close(t->s, server_closed, t);
    uv_close((uv_handle_t *)&t->async, NULL);
}

/* Closes the server, waits for the loop to run dry, and checks that every
   handle was closed (uv_loop_close fails otherwise). */
static void srv_stop(srv_t *t)
{
    on_loop(t, do_close, NULL);
    uv_thread_join(&t->thread);
    assert_int_equal(t->closed, 1);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    uv_sem_destroy(&t->done);
    free(t);
    g_srv = NULL;
}

static void get_stats(srv_t *t, void *arg)
{
    llmc_http_server_stats(t->s, arg);
}

static llmc_http_server_stats_t stats(srv_t *t)
{
    llmc_http_server_stats_t st;

    on_loop(t, get_stats, &st);
    return st;
}

typedef struct counters {
    int aborts, dones, releases, drained, last_status;
    uint64_t last_bytes, last_dur_ns;
    bool last_named;
    size_t pending;
} counters_t;

static void get_counters(srv_t *t, void *arg)
{
    counters_t *c = arg;

    c->aborts = t->aborts;
    c->dones = t->dones;
    c->releases = t->releases;
    c->drained = t->drained;
    c->last_status = t->last_status;
    c->last_bytes = t->last_bytes;
    c->last_dur_ns = t->last_dur_ns;
    c->last_named = t->last_named;
    c->pending = t->pending;
}

static counters_t counters(srv_t *t)
{
    counters_t c;

    on_loop(t, get_counters, &c);
    return c;
}

/* Polls until the loop-thread counter at offset off reaches want (2 s max). */
static int wait_counter(srv_t *t, size_t off, int want)
{
    for (int i = 0; i < 400; i++) {
        counters_t c = counters(t);
        if (*(int *)((char *)&c + off) >= want)
            return *(int *)((char *)&c + off);
        usleep(5000);
    }
    counters_t c = counters(t);
    return *(int *)((char *)&c + off);
}

/* ------------------------------------------------------------------ */
/* Client                                                              */

typedef struct resp {
    int status;
    unsigned short major, minor;
    char headers[4096]; /* "name: value\n", names lowercased */
    size_t hlen;
    char *body;
    size_t blen;
    bool done, head;
    int last_was_value;
} resp_t;

typedef struct cli {
    int fd;
    char buf[1 << 16];
    size_t pos, len;
    http_parser p;
    bool eof;
    size_t slow_bytes;   /* when set: sleep slow_us, then recv at most this much */
    unsigned slow_us;
} cli_t;

static int c_status(http_parser *p, const char *at, size_t n)
{
    ((resp_t *)p->data)->status = (int)p->status_code;
    return 0;
}

static int c_field(http_parser *p, const char *at, size_t n)
{
    resp_t *r = p->data;

    if (r->last_was_value && r->hlen < sizeof(r->headers) - 1)
        r->headers[r->hlen++] = '\n';
    for (size_t i = 0; i < n && r->hlen < sizeof(r->headers) - 4; i++) {
        char ch = at[i];
        r->headers[r->hlen++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    r->last_was_value = 0;
    return 0;
}

static int c_value(http_parser *p, const char *at, size_t n)
{
    resp_t *r = p->data;

    if (!r->last_was_value && r->hlen < sizeof(r->headers) - 2) {
        r->headers[r->hlen++] = ':';
        r->headers[r->hlen++] = ' ';
    }
    for (size_t i = 0; i < n && r->hlen < sizeof(r->headers) - 2; i++)
        r->headers[r->hlen++] = at[i];
    r->last_was_value = 1;
    return 0;
}

static int c_headers_complete(http_parser *p)
{
    resp_t *r = p->data;

    if (r->hlen < sizeof(r->headers) - 1)
        r->headers[r->hlen++] = '\n';
    r->headers[r->hlen] = '\0';
    r->major = p->http_major;
    r->minor = p->http_minor;
    return r->head ? 1 : 0;
}

static int c_body(http_parser *p, const char *at, size_t n)
{
    resp_t *r = p->data;

    r->body = realloc(r->body, r->blen + n + 1);
    memcpy(r->body + r->blen, at, n);
    r->blen += n;
    r->body[r->blen] = '\0';
    return 0;
}

static int c_complete(http_parser *p)
{
    ((resp_t *)p->data)->done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings cli_settings = {
    .on_status = c_status,
    .on_header_field = c_field,
    .on_header_value = c_value,
    .on_headers_complete = c_headers_complete,
    .on_body = c_body,
    .on_message_complete = c_complete,
};

/* rcvbuf > 0 sets the socket's receive buffer (before connect, so that the
   window stays small): a slow reader then holds back the server at once. */
static cli_t *cli_open_rcvbuf(int port, int rcvbuf)
{
    cli_t *c = calloc(1, sizeof(*c));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = 5};
    int one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return c;
}

static cli_t *cli_open(int port)
{
    return cli_open_rcvbuf(port, 0);
}

static void cli_close(cli_t *c)
{
    close(c->fd);
    free(c);
}

static void cli_send(cli_t *c, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        data += n;
        len -= (size_t)n;
    }
}

static void cli_sends(cli_t *c, const char *s)
{
    cli_send(c, s, strlen(s));
}

static void resp_free(resp_t *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* Reads one response (head only when head is true). 0, or -1 when the
   connection ended or timed out first. */
static int cli_read(cli_t *c, resp_t *r, bool head)
{
    memset(r, 0, sizeof(*r));
    r->head = head;
    http_parser_init(&c->p, HTTP_RESPONSE);
    c->p.data = r;
    for (;;) {
        if (c->pos < c->len) {
            size_t used = http_parser_execute(&c->p, &cli_settings, c->buf + c->pos, c->len - c->pos);
            c->pos += used;
            if (r->done)
                return 0;
            if (HTTP_PARSER_ERRNO(&c->p) != HPE_OK)
                return -1;
        }
        if (c->eof)
            return -1;
        c->pos = c->len = 0;
        if (c->slow_bytes)
            usleep(c->slow_us);
        ssize_t n = recv(c->fd, c->buf, c->slow_bytes ? c->slow_bytes : sizeof(c->buf), 0);
        if (n <= 0) {
            c->eof = true;
            http_parser_execute(&c->p, &cli_settings, NULL, 0); /* close-delimited body */
            return r->done ? 0 : -1;
        }
        c->len = (size_t)n;
    }
}

/* True when the server closed the connection (no more bytes, EOF or RST). */
static bool cli_closed(cli_t *c)
{
    char b[256];

    if (c->pos < c->len)
        return false;
    if (c->eof)
        return true;
    ssize_t n = recv(c->fd, b, sizeof(b), 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
        return true;
    return false;
}

static bool has_header(const resp_t *r, const char *line)
{
    return strstr(r->headers, line) != NULL;
}

static json_t *body_json(const resp_t *r)
{
    json_t *j = json_loadb(r->body ? r->body : "", r->blen, 0, NULL);

    assert_non_null(j);
    return j;
}

static const char *jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

/* Sends raw, expects an error status with the OpenAI JSON body, and that
   the server then closes the connection. */
static void expect_error(srv_t *t, const char *raw, size_t len, int status)
{
    cli_t *c = cli_open(t->port);
    resp_t r;
    json_t *j, *e;

    cli_send(c, raw, len);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, status);
    assert_true(has_header(&r, "connection: close\n"));
    assert_true(has_header(&r, "content-type: application/json\n"));
    j = body_json(&r);
    e = json_object_get(j, "error");
    assert_non_null(json_string_value(json_object_get(e, "message")));
    assert_non_null(json_string_value(json_object_get(e, "type")));
    json_decref(j);
    resp_free(&r);
    assert_true(cli_closed(c));
    cli_close(c);
}

#define EXPECT_ERROR(t, lit, st) expect_error((t), (lit), sizeof(lit) - 1, (st))

static int setup(void **state)
{
    *state = srv_start(default_limits());
    return 0;
}

static int teardown(void **state)
{
    srv_stop(*state);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */

static void test_get_echo(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;
    json_t *j;

    cli_sends(c, "GET /echo?a=1&b=2 HTTP/1.1\r\nHost: x\r\nX-Test:   hello there \t\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.minor, 1);
    assert_true(has_header(&r, "connection: keep-alive\n"));
    assert_true(has_header(&r, "content-type: application/json\n"));
    assert_true(has_header(&r, "date: "));
    assert_true(has_header(&r, " GMT\n"));
    j = body_json(&r);
    assert_string_equal(jstr(j, "method"), "GET");
    assert_string_equal(jstr(j, "target"), "/echo?a=1&b=2");
    assert_string_equal(jstr(j, "path"), "/echo");
    assert_string_equal(jstr(j, "query"), "a=1&b=2");
    assert_string_equal(jstr(j, "body"), "");
    assert_string_equal(jstr(j, "x_test"), "hello there"); /* trimmed both sides */
    /* names lowercased */
    assert_string_equal(json_string_value(json_array_get(json_array_get(json_object_get(j, "headers"), 1), 0)),
                        "x-test");
    json_decref(j);
    resp_free(&r);
    cli_close(c);
}

static void test_post_content_length(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;
    json_t *j;

    cli_sends(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello");
    usleep(20000); /* the body arrives in two reads */
    cli_sends(c, " world");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_string_equal(jstr(j, "method"), "POST");
    assert_string_equal(jstr(j, "body"), "hello world");
    json_decref(j);
    resp_free(&r);
    cli_close(c);
}

static void test_post_chunked(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;
    json_t *j;

    cli_sends(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nhel\r\n8;ext=1\r\nlo world\r\n0\r\nX-Trailer: t\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_string_equal(jstr(j, "body"), "hello world");
    /* the trailer is not a header */
    assert_int_equal(json_array_size(json_object_get(j, "headers")), 2);
    json_decref(j);
    resp_free(&r);
    cli_close(c);
}

static void test_expect_continue(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;
    json_t *j;

    cli_sends(c, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 100);
    resp_free(&r);
    cli_sends(c, "ping");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_string_equal(jstr(j, "body"), "ping");
    json_decref(j);
    resp_free(&r);
    cli_close(c);
}

static void test_expect_continue_too_large(void **state)
{
    srv_t *t = *state;

    /* 413 instead of 100: the client never has to send the body */
    EXPECT_ERROR(t, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 9999999\r\n\r\n",
                 413);
}

static void test_expect_unknown(void **state)
{
    EXPECT_ERROR((srv_t *)*state, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx",
                 417);
}

static void test_keep_alive_sequential(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;
    char req[128], want[32];

    for (int i = 1; i <= 3; i++) {
        snprintf(req, sizeof(req), "GET /later?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
        cli_sends(c, req);
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.status, 200);
        snprintf(want, sizeof(want), "later:n=%d", i);
        assert_string_equal(r.body, want);
        resp_free(&r);
    }
    llmc_http_server_stats_t st = stats(t);
    assert_int_equal(st.conns_total, 1);
    assert_int_equal(st.conns_open, 1);
    assert_int_equal(st.requests, 3);
    cli_close(c);
}

static void test_pipelined_in_order(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;
    json_t *j;

    /* The slow one in the middle must not let the third overtake it. */
    cli_sends(c, "GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET /later?n=2 HTTP/1.1\r\nHost: x\r\n\r\n"
                 "POST /echo?n=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert_int_equal(cli_read(c, &r, false), 0);
    j = body_json(&r);
    assert_string_equal(jstr(j, "query"), "n=1");
    json_decref(j);
    resp_free(&r);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_string_equal(r.body, "later:n=2");
    resp_free(&r);
    assert_int_equal(cli_read(c, &r, false), 0);
    j = body_json(&r);
    assert_string_equal(jstr(j, "query"), "n=3");
    assert_string_equal(jstr(j, "body"), "abc");
    json_decref(j);
    resp_free(&r);
    cli_close(c);
}

static void test_pipelined_many(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    static char buf[64 * 100];
    size_t len = 0;
    resp_t r;
    char want[32];

    /* More than one read buffer's worth would be fine too; 100 small ones
       exercise the in-feed loop that answers synchronously. */
    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "GET /echo?%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
    cli_send(c, buf, len);
    for (int i = 0; i < 100; i++) {
        json_t *j;
        assert_int_equal(cli_read(c, &r, false), 0);
        j = body_json(&r);
        snprintf(want, sizeof(want), "%d", i);
        assert_string_equal(jstr(j, "query"), want);
        json_decref(j);
        resp_free(&r);
    }
    cli_close(c);
}

static void test_head(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;

    cli_sends(c, "HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, true), 0);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "content-length: "));
    assert_false(has_header(&r, "content-length: 0\n"));
    resp_free(&r);
    /* No body bytes were sent: the next response parses from its start. */
    cli_sends(c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.blen > 0);
    resp_free(&r);
    cli_close(c);
}

static void test_http10_closes(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;

    cli_sends(c, "GET /echo HTTP/1.0\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.major, 1);
    assert_int_equal(r.minor, 0);
    assert_true(has_header(&r, "connection: close\n"));
    resp_free(&r);
    assert_true(cli_closed(c));
    cli_close(c);
}

static void test_http10_keep_alive(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;

    for (int i = 0; i < 2; i++) {
        cli_sends(c, "GET /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.status, 200);
        assert_true(has_header(&r, "connection: keep-alive\n"));
        resp_free(&r);
    }
    cli_close(c);
}

static void test_connection_close(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;

    cli_sends(c, "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_true(has_header(&r, "connection: close\n"));
    resp_free(&r);
    assert_true(cli_closed(c));
    cli_close(c);
}

/* Draining: what the handler holds is answered whole (Connection: close),
   idle and half-received requests are closed, nothing new is accepted,
   and the drained callback runs once no connection is left. */
static void on_drained(void *arg)
{
    ((srv_t *)arg)->drained++;
}

static void do_drain(srv_t *t, void *arg)
{
    llmc_http_server_drain(t->s, on_drained, t);
}

static void test_drain(void **state)
{
    srv_t *t = *state;
    cli_t *idle = cli_open(t->port), *slow = cli_open(t->port), *stream = cli_open(t->port);
    cli_t *half = cli_open(t->port);
    resp_t r;

    cli_sends(idle, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(idle, &r, false), 0);
    resp_free(&r);
    cli_sends(slow, "GET /slow?x HTTP/1.1\r\nHost: x\r\n\r\n");
    cli_sends(stream, "GET /slowstream HTTP/1.1\r\nHost: x\r\n\r\n");
    cli_sends(half, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12");
    for (int i = 0; i < 400 && stats(t).requests < 3; i++)
        usleep(5000);
    assert_int_equal(stats(t).requests, 3);
    on_loop(t, do_drain, NULL);

    assert_true(cli_closed(idle));
    assert_true(cli_closed(half));
    /* Nothing is accepted any more. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)t->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_not_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    close(fd);
    /* The held requests end as they would have. */
    assert_int_equal(cli_read(slow, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "later:x");
    assert_true(has_header(&r, "connection: close\n"));
    resp_free(&r);
    assert_true(cli_closed(slow));
    assert_int_equal(cli_read(stream, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "onetwothree");
    resp_free(&r);
    assert_true(cli_closed(stream));
    assert_int_equal(counters(t).aborts, 0);
    assert_int_equal(wait_counter(t, offsetof(counters_t, drained), 1), 1);
    cli_close(idle);
    cli_close(slow);
    cli_close(stream);
    cli_close(half);
}

/* A drain also ends when the last held request's client leaves. */
static void test_drain_ends_when_the_last_client_leaves(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);

    cli_sends(c, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
    for (int i = 0; i < 400 && stats(t).requests < 1; i++)
        usleep(5000);
    on_loop(t, do_drain, NULL);
    usleep(50000);
    assert_int_equal(counters(t).drained, 0); /* /hang never answers */
    cli_close(c);
    assert_int_equal(wait_counter(t, offsetof(counters_t, aborts), 1), 1);
    assert_int_equal(wait_counter(t, offsetof(counters_t, drained), 1), 1);
}

/* Close during a drain cuts off what is left: teardown closes the server
   with /hang still held (its client may not even have left yet), and must
   find it freed with every handle closed (uv_loop_close checks). */
static void test_close_while_draining(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);

    cli_sends(c, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
    for (int i = 0; i < 400 && stats(t).requests < 1; i++)
        usleep(5000);
    on_loop(t, do_drain, NULL);
    assert_int_equal(counters(t).drained, 0);
    cli_close(c);
}

static void test_header_too_large(void **state)
{
    srv_t *t = *state;
    char *big = malloc(8192);
    int n = snprintf(big, 8192, "GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: %0*d\r\n\r\n", 5000, 0);

    expect_error(t, big, (size_t)n, 431);
    free(big);
    assert_int_equal(stats(t).requests_too_large, 1);
    assert_int_equal(stats(t).bad_requests, 0);
    assert_int_equal(stats(t).requests, 0);
}

static void test_header_limit_exact(void **state)
{
    srv_t *t = *state;
    char *req = malloc(8192);
    const char *fmt = "GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: %0*d\r\n\r\n";
    int base = snprintf(NULL, 0, fmt, 1, 0) - 1, n;
    cli_t *c;
    resp_t r;

    /* exactly max_header_bytes (4096) is allowed; one more is not */
    n = snprintf(req, 8192, fmt, 4096 - base, 0);
    assert_int_equal(n, 4096);
    c = cli_open(t->port);
    cli_send(c, req, (size_t)n);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(c);
    n = snprintf(req, 8192, fmt, 4097 - base, 0);
    expect_error(t, req, (size_t)n, 431);
    free(req);
}

static void test_too_many_headers(void **state)
{
    srv_t *t = *state;
    char req[2048];
    size_t len = (size_t)snprintf(req, sizeof(req), "GET /echo HTTP/1.1\r\nHost: x\r\n");

    for (int i = 0; i < 25; i++)
        len += (size_t)snprintf(req + len, sizeof(req) - len, "X-H%d: %d\r\n", i, i);
    len += (size_t)snprintf(req + len, sizeof(req) - len, "\r\n");
    expect_error(t, req, len, 431);
}

static void test_body_declared_too_large(void **state)
{
    srv_t *t = *state;
    struct timespec a, b;

    clock_gettime(CLOCK_MONOTONIC, &a);
    /* No body follows: the answer must come from the head alone. */
    EXPECT_ERROR(t, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", 413);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_true((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < 2000);
}

/* Regression: closing right after the 413 while the client was still
   sending made the kernel answer its body with an RST, and the client lost
   the 413. The server must drain input for a while (lingering close). */
static void test_error_survives_unread_body(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    static char chunk[65536];
    size_t sent = 0;
    resp_t r;

    memset(chunk, 'b', sizeof(chunk));
    cli_sends(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n");
    usleep(50000); /* the 413 is written and the server has moved on */
    while (sent < 4194304) {
        ssize_t n = send(c->fd, chunk, sizeof(chunk), MSG_NOSIGNAL);
        if (n <= 0)
            break;
        sent += (size_t)n;
    }
    assert_int_equal(sent, 4194304);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    cli_close(c);
}

/* --max-body-memory: what the body buffers of every server sharing the
   count hold together. A declared length that would pass it is refused 503
   with Retry-After before a byte of it is read; a chunked body is refused at
   the chunk that would pass it; the count follows the buffers down again. */
static void test_body_memory_bound(void **state)
{
    static _Atomic size_t held;
    llmc_http_limits_t lim = default_limits();
    lim.body_memory = &held;
    lim.max_body_memory = 50000;
    srv_t *t = srv_start(lim);
    static char chunk[30000];
    char line[32];
    resp_t r;

    (void)state;
    atomic_store(&held, 0);
    memset(chunk, 'a', sizeof(chunk));
    /* 40000 declared, held while the rest is awaited. */
    cli_t *a = cli_open(t->port);
    cli_sends(a, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40000\r\n\r\n{");
    for (int i = 0; i < 200 && stats(t).body_bytes < 40001; i++)
        usleep(5000);
    assert_int_equal(stats(t).body_bytes, 40001);
    assert_int_equal(atomic_load(&held), 40001);
    /* 20000 more would pass 50000. */
    EXPECT_ERROR(t, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n", 503);
    /* A chunked body grows until its chunk would pass it. */
    cli_t *c = cli_open(t->port);
    cli_sends(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    snprintf(line, sizeof(line), "%zx\r\n", sizeof(chunk));
    cli_sends(c, line);
    cli_send(c, chunk, sizeof(chunk));
    cli_sends(c, "\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 503);
    assert_true(has_header(&r, "retry-after: 1\n"));
    resp_free(&r);
    cli_close(c);
    assert_int_equal(stats(t).body_memory_refused, 2);
    /* A small body still fits beside the held one. */
    c = cli_open(t->port);
    cli_sends(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(c);
    /* The held body's client leaves: its bytes go back. */
    cli_close(a);
    for (int i = 0; i < 200 && atomic_load(&held) > 0; i++)
        usleep(5000);
    srv_stop(t);
    assert_int_equal(atomic_load(&held), 0);
}

static void test_body_chunked_too_large(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    static char chunk[40000];
    char line[32];
    resp_t r;

    memset(chunk, 'a', sizeof(chunk));
    cli_sends(c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    /* 40000 twice passes the 65536 limit in the second chunk */
    for (int i = 0; i < 2; i++) {
        snprintf(line, sizeof(line), "%zx\r\n", sizeof(chunk));
        cli_sends(c, line);
        cli_send(c, chunk, sizeof(chunk));
        cli_sends(c, "\r\n");
    }
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    assert_true(cli_closed(c));
    cli_close(c);
    assert_int_equal(counters(t).dones, 1);
    assert_int_equal(stats(t).requests, 0);
}

static void test_header_timeout(void **state)
{
    srv_t *t;
    llmc_http_limits_t lim = default_limits();
    cli_t *c;
    resp_t r;

    lim.header_timeout_ms = 150;
    t = srv_start(lim);
    c = cli_open(t->port);
    cli_sends(c, "GET /echo HTTP/1.1\r\nHo");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 408);
    resp_free(&r);
    assert_true(cli_closed(c));
    cli_close(c);
    assert_int_equal(stats(t).timeouts, 1);
    /* A slow body counts too. */
    c = cli_open(t->port);
    cli_sends(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 408);
    resp_free(&r);
    cli_close(c);
    assert_int_equal(stats(t).timeouts, 2);
    assert_int_equal(stats(t).bad_requests, 0);
    srv_stop(t);
    (void)state;
}

static void test_no_header_timeout_while_handler_works(void **state)
{
    srv_t *t;
    llmc_http_limits_t lim = default_limits();
    cli_t *c;
    resp_t r;

    lim.header_timeout_ms = 10; /* /later takes 30 ms */
    t = srv_start(lim);
    c = cli_open(t->port);
    cli_sends(c, "GET /later?x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(c);
    srv_stop(t);
    (void)state;
}

static void test_idle_timeout(void **state)
{
    srv_t *t;
    llmc_http_limits_t lim = default_limits();
    cli_t *c;
    resp_t r;

    lim.idle_timeout_ms = 100;
    t = srv_start(lim);
    c = cli_open(t->port);
    cli_sends(c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    resp_free(&r);
    usleep(300000);
    /* closed quietly: no 408, just EOF */
    assert_true(cli_closed(c));
    cli_close(c);
    assert_int_equal(stats(t).timeouts, 0);
    assert_int_equal(stats(t).idle_closes, 1);
    srv_stop(t);
    (void)state;
}

static void test_cl_and_te(void **state)
{
    EXPECT_ERROR((srv_t *)*state,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "0\r\n\r\n",
                 400);
    EXPECT_ERROR((srv_t *)*state,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                 "0\r\n\r\n",
                 400);
}

static void test_te_not_chunked(void **state)
{
    srv_t *t = *state;

    EXPECT_ERROR(t, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400);
    EXPECT_ERROR(t, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                 400);
    EXPECT_ERROR(t,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 400);
    EXPECT_ERROR(t, "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
}

static void test_duplicate_content_length(void **state)
{
    srv_t *t = *state;

    EXPECT_ERROR(t, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400);
    EXPECT_ERROR(t, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400);
    EXPECT_ERROR(t, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", 400);
}

static void test_bad_chunk_size(void **state)
{
    EXPECT_ERROR((srv_t *)*state,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400);
    assert_int_equal(stats((srv_t *)*state).requests, 0);
}

#define TE_HEAD "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

/* The framing libhttp-parser, non-strict, lets through: chunk_scan.c
   refuses it before the parser or the handler sees it. */
static void test_chunk_framing_strict(void **state)
{
    srv_t *t = *state;

    EXPECT_ERROR(t, TE_HEAD "3\r\nabcXX0\r\n\r\n", 400);
    EXPECT_ERROR(t, TE_HEAD "3\r\nabc\n0\r\n\r\n", 400);
    EXPECT_ERROR(t, TE_HEAD "3\rXabc\r\n0\r\n\r\n", 400);
    EXPECT_ERROR(t, TE_HEAD "3;a\nb\r\nabc\r\n0\r\n\r\n", 400);
    EXPECT_ERROR(t, TE_HEAD "3;\0\r\nabc\r\n0\r\n\r\n", 400);
    EXPECT_ERROR(t, TE_HEAD "3;a=\"x\r\nabc\r\n0\r\n\r\n", 400);
    EXPECT_ERROR(t, TE_HEAD "3 \r\nabc\r\n0\r\n\r\n", 400);
    EXPECT_ERROR(t, TE_HEAD "00000000000000003\r\nabc\r\n0\r\n\r\n", 400);
    EXPECT_ERROR(t, TE_HEAD "3\r\nabc\r\n0\r\nX-T: a\0b\r\n\r\n", 400);
    EXPECT_ERROR(t, TE_HEAD "3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n", 400);
    EXPECT_ERROR(t, TE_HEAD "3\r\nabc\r\n0\r\n\r\rGET /echo HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    assert_int_equal(stats(t).requests, 0);
    assert_int_equal(counters(t).dones, 11);
}

/* Extensions and trailers are bounded by the head limit (4096 here). */
static void test_chunk_trailers_too_large(void **state)
{
    srv_t *t = *state;
    static char big[8192];
    size_t n = 0;

    n += (size_t)snprintf(big, sizeof(big), "%s1\r\nx\r\n0\r\n", TE_HEAD);
    while (n < 6000)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "X-Trailer-%zu: vvvvvvvvvvvvvvvvvvvvvvvv\r\n", n);
    n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\n");
    expect_error(t, big, n, 431);
    assert_int_equal(stats(t).requests, 0);
}

/* A chunked body ends at its final CRLF: what follows is the next request,
   checked as a head (a chunk scan would refuse "GET"), in whatever pieces
   it comes. */
static void test_chunk_pipelined_and_split(void **state)
{
    srv_t *t = *state;
    static const char req[] = TE_HEAD "3;e=\"q;\\\"\"\r\nhel\r\n8\r\nlo world\r\n0\r\nX-T: t\r\n\r\n"
                              "GET /echo?next HTTP/1.1\r\nHost: x\r\n\r\n";
    static const size_t cuts[] = {0, sizeof(TE_HEAD) - 2, sizeof(TE_HEAD) - 1, sizeof(TE_HEAD),
                                  sizeof(TE_HEAD) + 1, sizeof(TE_HEAD) + 14, sizeof(TE_HEAD) + 19,
                                  sizeof(TE_HEAD) + 33, sizeof(TE_HEAD) + 45, sizeof(TE_HEAD) + 46,
                                  sizeof(TE_HEAD) + 47, sizeof(TE_HEAD) + 5, sizeof(TE_HEAD) + 41,
                                  sizeof(TE_HEAD) + 42};

    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        cli_t *c = cli_open(t->port);
        resp_t r;
        json_t *j;

        cli_send(c, req, cuts[i]);
        usleep(10000);
        cli_send(c, req + cuts[i], sizeof(req) - 1 - cuts[i]);
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.status, 200);
        j = body_json(&r);
        assert_string_equal(jstr(j, "body"), "hello world");
        json_decref(j);
        resp_free(&r);
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.status, 200);
        j = body_json(&r);
        assert_string_equal(jstr(j, "query"), "next");
        json_decref(j);
        resp_free(&r);
        cli_close(c);
    }
    assert_int_equal(stats(t).requests, 2 * sizeof(cuts) / sizeof(cuts[0]));
    assert_int_equal(stats(t).bad_requests, 0);
}

/* After a 100 Continue the body comes on its own and is checked all the same. */
static void test_chunk_after_continue(void **state)
{
    srv_t *t = *state;
    static const char head[] = "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n";

    for (int bad = 0; bad < 2; bad++) {
        cli_t *c = cli_open(t->port);
        resp_t r;
        json_t *j;

        cli_sends(c, head);
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.status, 100);
        resp_free(&r);
        cli_sends(c, bad ? "4\r\npingXX0\r\n\r\n" : "4\r\nping\r\n0\r\n\r\n");
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.status, bad ? 400 : 200);
        if (!bad) {
            j = body_json(&r);
            assert_string_equal(jstr(j, "body"), "ping");
            json_decref(j);
        } else {
            assert_true(cli_closed(c));
        }
        resp_free(&r);
        cli_close(c);
    }
    assert_int_equal(stats(t).requests, 1);
}

static void test_control_bytes_in_header(void **state)
{
    srv_t *t = *state;

    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: x\r\nX-Test: a\0b\r\n\r\n", 400);
    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: x\r\nX-Test: a\x01" "b\r\n\r\n", 400);
    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: x\r\nX\0Test: a\r\n\r\n", 400);
    EXPECT_ERROR(t, "GET /ec\0ho HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    EXPECT_ERROR(t, "GET /e\tcho HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}

static void test_malformed_lines(void **state)
{
    srv_t *t = *state;

    /* obsolete line folding */
    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: x\r\nX-Test: a\r\n b\r\n\r\n", 400);
    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: x\r\nX-Test: a\r\n\tb\r\n\r\n", 400);
    /* whitespace before the colon, inside a name */
    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: x\r\nX-Test : a\r\n\r\n", 400);
    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: x\r\nX Test: a\r\n\r\n", 400);
    /* bare LF line ends, a bare CR */
    EXPECT_ERROR(t, "GET /echo HTTP/1.1\nHost: x\n\n", 400);
    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400);
    /* no colon */
    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400);
    /* garbage */
    EXPECT_ERROR(t, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400);
}

static void test_absolute_form(void **state)
{
    srv_t *t = *state;

    EXPECT_ERROR(t, "GET http://example.com/echo HTTP/1.1\r\nHost: example.com\r\n\r\n", 400);
    EXPECT_ERROR(t, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 400);
    EXPECT_ERROR(t, "GET /echo#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}

static void test_host_required(void **state)
{
    srv_t *t = *state;

    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\n\r\n", 400);
    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    /* issue 7: HTTP/1.0 needs it too */
    EXPECT_ERROR(t, "GET /echo HTTP/1.0\r\n\r\n", 400);
    EXPECT_ERROR(t, "POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", 400);
    assert_int_equal(stats(t).requests, 0);
}

static void test_version(void **state)
{
    EXPECT_ERROR((srv_t *)*state, "GET /echo HTTP/2.0\r\nHost: x\r\n\r\n", 505);
}

static void test_max_conns(void **state)
{
    srv_t *t;
    llmc_http_limits_t lim = default_limits();
    cli_t *a, *b, *c;
    resp_t r;

    lim.max_conns = 2;
    t = srv_start(lim);
    a = cli_open(t->port);
    b = cli_open(t->port);
    /* a request on each makes sure both were accepted before the third */
    cli_sends(a, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(a, &r, false), 0);
    resp_free(&r);
    cli_sends(b, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(b, &r, false), 0);
    resp_free(&r);
    c = cli_open(t->port);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 503);
    assert_true(strstr(r.body, "\"error\"") != NULL);
    resp_free(&r);
    assert_true(cli_closed(c));
    cli_close(c);
    llmc_http_server_stats_t st = stats(t);
    assert_int_equal(st.conns_refused, 1);
    assert_int_equal(st.conns_open, 2);
    assert_int_equal(st.conns_total, 3);
    /* once one leaves, a new one gets in */
    cli_close(a);
    for (int i = 0; i < 200 && stats(t).conns_open != 1; i++)
        usleep(5000);
    c = cli_open(t->port);
    cli_sends(c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(c);
    cli_close(b);
    srv_stop(t);
    (void)state;
}

/* Regression: a connection refused at the cap (503) reached on_done with a
   request whose start time was never set, so the gateway's access log gave
   it a dur_ms of about 1,500,000 (uv_hrtime() since boot). So did a request
   whose very first bytes the head scan refused, before the parser began it.
   Every request on_done sees has its start time and its strings set. */
static void test_rejected_requests_have_a_start_time(void **state)
{
    srv_t *t;
    llmc_http_limits_t lim = default_limits();
    cli_t *a, *c;
    resp_t r;
    counters_t k;

    (void)state;
    lim.max_conns = 1;
    t = srv_start(lim);
    a = cli_open(t->port);
    cli_sends(a, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(a, &r, false), 0);
    resp_free(&r);
    c = cli_open(t->port);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    cli_close(c);
    assert_int_equal(wait_counter(t, offsetof(counters_t, dones), 2), 2);
    k = counters(t);
    assert_int_equal(k.last_status, 503);
    assert_true(k.last_dur_ns < 1000000000ull);
    assert_true(k.last_named);
    cli_close(a);
    for (int i = 0; i < 200 && stats(t).conns_open != 0; i++)
        usleep(5000);
    /* refused by the head scan at the first byte (a TLS hello) */
    EXPECT_ERROR(t, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400);
    assert_int_equal(wait_counter(t, offsetof(counters_t, dones), 3), 3);
    k = counters(t);
    assert_int_equal(k.last_status, 400);
    assert_true(k.last_dur_ns < 1000000000ull);
    assert_true(k.last_named);
    srv_stop(t);
}

/* Each refusal before the handler counts in one counter: malformed or
   unsupported in bad_requests, a size limit in requests_too_large. */
static void test_refusals_are_counted(void **state)
{
    srv_t *t = *state;
    static char line[6000];
    char req[2048];
    size_t len;
    llmc_http_server_stats_t st;

    EXPECT_ERROR(t, "GET /echo HTTP/1.1\r\nHost: x\r\nX Test: a\r\n\r\n", 400);
    EXPECT_ERROR(t, "GET /echo HTTP/2.0\r\nHost: x\r\n\r\n", 505);
    EXPECT_ERROR(t, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", 417);
    len = (size_t)snprintf(line, sizeof(line), "GET /%0*d HTTP/1.1\r\nHost: x\r\n\r\n", 5000, 0);
    expect_error(t, line, len, 414);
    EXPECT_ERROR(t, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", 413);
    len = (size_t)snprintf(req, sizeof(req), "GET /echo HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 25; i++)
        len += (size_t)snprintf(req + len, sizeof(req) - len, "X-H%d: %d\r\n", i, i);
    len += (size_t)snprintf(req + len, sizeof(req) - len, "\r\n");
    expect_error(t, req, len, 431);
    st = stats(t);
    assert_int_equal(st.bad_requests, 3);
    assert_int_equal(st.requests_too_large, 3);
    assert_int_equal(st.timeouts, 0);
    assert_int_equal(st.conns_refused, 0);
    assert_int_equal(st.requests, 0);
    assert_int_equal(st.conns_total, 6);
}

/* The counters may be read from any thread (the gateway's /stats sums every
   worker's server from its own): here from the test's thread, while the
   loop thread writes them. */
static void test_stats_read_from_another_thread(void **state)
{
    srv_t *t = *state;
    cli_t *c[3];
    llmc_http_server_stats_t st;
    resp_t r;

    for (int i = 0; i < 3; i++) {
        c[i] = cli_open(t->port);
        cli_sends(c[i], "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(cli_read(c[i], &r, false), 0);
        resp_free(&r);
    }
    llmc_http_server_stats(t->s, &st);
    assert_int_equal(st.conns_open, 3);
    assert_int_equal(st.requests, 3);
    for (int i = 0; i < 3; i++)
        cli_close(c[i]);
    for (int i = 0; i < 400; i++) {
        llmc_http_server_stats(t->s, &st);
        if (st.conns_open == 0)
            break;
        usleep(5000);
    }
    assert_int_equal(st.conns_open, 0);
    assert_int_equal(st.conns_total, 3);
}

/* The table describes the struct: every field once, by offset, with the
   "http_" names /stats shows; stats_add sums them all. */
static void test_stats_table(void **state)
{
    llmc_http_server_stats_t a, b;
    uint64_t *fa = (uint64_t *)(void *)&a;

    (void)state;
    assert_int_equal(sizeof(a), LLMC_HTTP_NSTATS * sizeof(uint64_t));
    for (size_t i = 0; i < LLMC_HTTP_NSTATS; i++)
        fa[i] = i + 1;
    memset(&b, 0, sizeof(b));
    for (size_t i = 0; i < LLMC_HTTP_NSTATS; i++) {
        const llmc_stat_desc_t *d = &llmc_http_stat_desc[i];
        assert_int_equal(d->offset, i * sizeof(uint64_t)); /* table order, none left out */
        assert_int_equal(llmc_stat_value(&a, d), i + 1);
        assert_true(strncmp(d->name, "http_", 5) == 0);
        assert_true(d->unit[0] != '\0' && d->help[0] != '\0');
        bool gauge = strcmp(d->name, "http_conns_open") == 0 ||
                     strcmp(d->name, "http_body_bytes") == 0;
        assert_int_equal(d->kind, gauge ? LLMC_STAT_GAUGE : LLMC_STAT_COUNTER);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(d->name, llmc_http_stat_desc[j].name);
    }
    llmc_http_stats_add(&b, &a);
    llmc_http_stats_add(&b, &a);
    for (size_t i = 0; i < LLMC_HTTP_NSTATS; i++)
        assert_int_equal(llmc_stat_value(&b, &llmc_http_stat_desc[i]), 2 * (i + 1));
}

static void test_client_disconnect_aborts(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);

    cli_sends(c, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
    for (int i = 0; i < 200 && stats(t).requests < 1; i++)
        usleep(5000);
    cli_close(c);
    assert_int_equal(wait_counter(t, offsetof(counters_t, aborts), 1), 1);
    counters_t k = counters(t);
    assert_int_equal(k.dones, 1);
    assert_int_equal(k.last_status, 0); /* no response was sent */
    for (int i = 0; i < 200 && stats(t).conns_open != 0; i++)
        usleep(5000);
    assert_int_equal(stats(t).conns_open, 0);
}

static void test_half_close_aborts(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);

    cli_sends(c, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    shutdown(c->fd, SHUT_WR);
    assert_int_equal(wait_counter(t, offsetof(counters_t, aborts), 1), 1);
    assert_true(cli_closed(c));
    cli_close(c);
}

static void test_abort_while_streaming(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    char b[64];

    cli_sends(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(recv(c->fd, b, sizeof(b), 0) > 0); /* the head came */
    cli_close(c);
    assert_int_equal(wait_counter(t, offsetof(counters_t, aborts), 1), 1);
    assert_int_equal(counters(t).last_status, 200);
}

static void test_server_close_aborts_pending(void **state)
{
    srv_t *t = srv_start(default_limits());
    cli_t *c = cli_open(t->port);
    resp_t r;

    cli_sends(c, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
    for (int i = 0; i < 200 && stats(t).requests < 1; i++)
        usleep(5000);
    assert_int_equal(counters(t).aborts, 0);
    on_loop(t, do_close, NULL);
    uv_thread_join(&t->thread);
    assert_int_equal(t->aborts, 1);
    assert_int_equal(t->dones, 1);
    assert_int_equal(t->closed, 1);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    assert_int_not_equal(cli_read(c, &r, false), 0);
    resp_free(&r);
    cli_close(c);
    uv_sem_destroy(&t->done);
    free(t);
    (void)state;
}

static void test_stream_chunked(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;

    for (int i = 0; i < 2; i++) {
        cli_sends(c, i == 0 ? "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
                            : "GET /stream_sync HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(cli_read(c, &r, false), 0);
        assert_int_equal(r.status, 200);
        assert_true(has_header(&r, "transfer-encoding: chunked\n"));
        assert_false(has_header(&r, "content-length"));
        assert_int_equal(r.blen, 11);
        assert_string_equal(r.body, "onetwothree");
        resp_free(&r);
    }
    /* still usable after a streamed answer */
    cli_sends(c, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(c);
    assert_int_equal(counters(t).last_status, 200);
}

static void test_stream_http10(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;

    cli_sends(c, "GET /stream HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_false(has_header(&r, "transfer-encoding"));
    assert_true(has_header(&r, "connection: close\n"));
    assert_string_equal(r.body, "onetwothree"); /* ended by the close */
    resp_free(&r);
    cli_close(c);
}

static void test_respond_error_shape(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;
    json_t *j, *e;

    cli_sends(c, "GET /error HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 422);
    assert_true(has_header(&r, "content-type: application/json\n"));
    assert_true(has_header(&r, "x-extra: yes\n"));
    j = body_json(&r);
    assert_int_equal(json_object_size(j), 1);
    e = json_object_get(j, "error");
    assert_int_equal(json_object_size(e), 3);
    assert_string_equal(jstr(e, "message"), "quote \" and \\ backslash");
    assert_string_equal(jstr(e, "type"), "invalid_request_error");
    assert_string_equal(jstr(e, "code"), "bad_thing");
    json_decref(j);
    resp_free(&r);
    /* a handler's error does not close the connection; code may be null */
    cli_sends(c, "GET /error?nocode HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    j = body_json(&r);
    assert_true(json_is_null(json_object_get(json_object_get(j, "error"), "code")));
    json_decref(j);
    resp_free(&r);
    cli_close(c);
}

/* An error message that is not valid UTF-8 (it quotes a client's header
   value, whose bytes >= 0x80 the head allows) still gives the OpenAI-shaped
   JSON body, each bad byte as U+FFFD and the good ones kept. It used to
   give an empty body: jansson refuses a string that is not UTF-8. */
static void test_respond_error_with_invalid_utf8(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;
    json_t *j, *e;

    cli_sends(c, "GET /error_bytes HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 400);
    j = body_json(&r);
    e = json_object_get(j, "error");
    /* Every byte from 0x80 up became '?' ("\?" keeps "??" from reading as a trigraph). */
    assert_string_equal(jstr(e, "message"), "?\?\?\?\?\? got '?', '?(' and '?\?\?' and a cut ?\?");
    assert_string_equal(jstr(e, "code"), "bad_value");
    json_decref(j);
    resp_free(&r);
    cli_close(c);
}

static void test_big_response_by_reference(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;

    cli_sends(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    usleep(100000); /* let the kernel buffers fill so that uv_write takes the rest */
    assert_int_equal(counters(t).releases, 0);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.blen, BIG_LEN);
    assert_memory_equal(r.body, g_big, BIG_LEN);
    resp_free(&r);
    assert_int_equal(wait_counter(t, offsetof(counters_t, releases), 1), 1);
    assert_true(counters(t).last_bytes > BIG_LEN);
    cli_close(c);
}

/* A client that asks for a big answer and never reads it is dropped after
   the idle timeout (the send timeout), and the body's release still runs. */
static void test_send_timeout_drops_a_client_that_never_reads(void **state)
{
    srv_t *t;
    llmc_http_limits_t lim = default_limits();
    cli_t *c;

    (void)state;
    lim.idle_timeout_ms = 200;
    t = srv_start(lim);
    c = cli_open(t->port);
    cli_sends(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    /* The answer is 8 MB: far more than the socket buffers take, so the
       server's write waits on us; we never read. */
    assert_int_equal(wait_counter(t, offsetof(counters_t, releases), 1), 1);
    assert_int_equal(stats(t).send_timeouts, 1);
    assert_int_equal(stats(t).idle_closes, 0);
    cli_close(c);
    srv_stop(t);
}

/* A client that reads a big answer slowly but steadily keeps its connection:
   the send timeout bounds a stall, not the whole transfer (nginx's
   send_timeout). It used to run from the start of the one write that carries
   the answer to its end, so any answer that took longer than the idle
   timeout to download was cut. */
static void test_send_timeout_spares_a_slow_steady_reader(void **state)
{
    srv_t *t;
    llmc_http_limits_t lim = default_limits();
    cli_t *c;
    resp_t r;

    (void)state;
    lim.idle_timeout_ms = 300;
    t = srv_start(lim);
    c = cli_open_rcvbuf(t->port, 16384);
    c->slow_bytes = 32768; /* a few MB/s: 8 MB take seconds, each read comes in 5 ms */
    c->slow_us = 5000;
    cli_sends(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.blen, BIG_LEN);
    resp_free(&r);
    cli_close(c);
    assert_int_equal(counters(t).last_status, 200);
    assert_int_equal(stats(t).send_timeouts, 0);
    srv_stop(t);
}

/* A stream whose producer keeps writing to a client that reads nothing is
   still cut at the send timeout: queueing more is not progress. It used to
   push the deadline on with every write, so such a client held its
   connection and an ever larger copy of the answer for as long as the
   producer went on. */
static void test_send_timeout_drops_a_stalled_stream_reader(void **state)
{
    srv_t *t;
    llmc_http_limits_t lim = default_limits();
    cli_t *c;
    char b[64];

    (void)state;
    lim.idle_timeout_ms = 200;
    t = srv_start(lim);
    c = cli_open_rcvbuf(t->port, 16384);
    cli_sends(c, "GET /flood HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(recv(c->fd, b, sizeof(b), 0) > 0); /* the head came; now we stall */
    /* The flood runs 3 s; the timeout must end it long before. */
    for (int i = 0; i < 300 && counters(t).aborts == 0; i++)
        usleep(5000);
    assert_int_equal(counters(t).aborts, 1);
    assert_int_equal(stats(t).send_timeouts, 1);
    cli_close(c);
    srv_stop(t);
}

/* A chunk the kernel cannot take at once is queued (copied) and shows in
   llmc_http_pending_bytes, which is what lets a producer slow down. */
static void test_pending_bytes(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;

    cli_sends(c, "GET /pending HTTP/1.1\r\nHost: x\r\n\r\n");
    /* Not reading yet: the socket buffers hold a few MB at most, so the
       server's 8 MB write must leave some queued (a reader racing the write
       could otherwise drain it as it goes). */
    usleep(100000);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.blen, BIG_LEN);
    assert_memory_equal(r.body, g_big, BIG_LEN);
    resp_free(&r);
    size_t p = counters(t).pending;
    assert_true(p > 0 && p < BIG_LEN + 64);
    cli_close(c);
}

static void test_no_content(void **state)
{
    srv_t *t = *state;
    cli_t *c = cli_open(t->port);
    resp_t r;

    cli_sends(c, "GET /nocontent HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 204);
    assert_false(has_header(&r, "content-length"));
    resp_free(&r);
    assert_int_equal(cli_read(c, &r, false), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(c);
}

static void test_reason(void **state)
{
    assert_string_equal(llmc_http_reason(404), "Not Found");
    assert_string_equal(llmc_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(llmc_http_reason(799), "Unknown");
}

static void count_closed(void *arg)
{
    (*(int *)arg)++;
}

static void test_listen_errors(void **state)
{
    uv_loop_t loop;
    llmc_http_server_config_t cfg = {.limits = default_limits(), .handler = handler};
    llmc_http_server_t *s;
    char err[128] = "";
    int closed = 0;

    uv_loop_init(&loop);
    s = llmc_http_server_new(&loop, &cfg);
    assert_int_equal(llmc_http_server_listen(s, "no.such.host.invalid", 0, false, err, sizeof(err)), LLMC_EIO);
    assert_true(strncmp(err, "no.such.host.invalid:0: ", 24) == 0);
    /* An address this host does not have (TEST-NET-1): the message names it
       and the step, where it used to say only "bind: Cannot assign ...". */
    assert_int_equal(llmc_http_server_listen(s, "192.0.2.1", 18080, false, err, sizeof(err)), LLMC_EIO);
    assert_true(strncmp(err, "192.0.2.1:18080: cannot bind: ", 30) == 0);
    assert_int_equal(llmc_http_server_listen(s, "::ffff:192.0.2.1", 18080, false, err, sizeof(err)),
                     LLMC_EIO);
    /* (no "cannot bind" asked: a host without IPv6 fails at the socket) */
    assert_true(strncmp(err, "[::ffff:192.0.2.1]:18080: ", 26) == 0);
    assert_int_equal(llmc_http_server_listen(s, "localhost", 0, false, err, sizeof(err)), 0);
    assert_true(llmc_http_server_port(s) > 0);
    llmc_http_server_close(s, count_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the head scanner alone ---- */

static int scan_all(const char *s, size_t len, size_t max, size_t *used)
{
    llmc__http_scan_t hs;

    llmc__http_scan_init(&hs, max);
    return llmc__http_scan(&hs, s, len, used);
}

static void test_scan_split_everywhere(void **state)
{
    static const char req[] = "GET /a?b HTTP/1.1\r\nHost: x\r\nX-A:\tv \x80\r\n\r\nBODY";
    size_t head = sizeof(req) - 1 - 4, used;

    for (size_t cut = 0; cut <= sizeof(req) - 1; cut++) {
        llmc__http_scan_t hs;
        int r;
        llmc__http_scan_init(&hs, 0);
        r = llmc__http_scan(&hs, req, cut, &used);
        if (cut < head) {
            assert_int_equal(r, LLMC_HS_MORE);
            r = llmc__http_scan(&hs, req + cut, sizeof(req) - 1 - cut, &used);
            assert_int_equal(r, LLMC_HS_DONE);
            assert_int_equal(cut + used, head);
        } else {
            assert_int_equal(r, LLMC_HS_DONE);
            assert_int_equal(used, head);
        }
    }
}

static void test_scan_rejects(void **state)
{
    static const char *bad[] = {
        "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", "GET / HTTP/1.1\r\nA : b\r\n\r\n",
        "GET / HTTP/1.1\nA: b\r\n\r\n",       "GET / HTTP/1.1\r\nA: b\n\r\n",
        "GET / HTTP/1.1\r\n: b\r\n\r\n",      "GET /\x80 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nA: \x7f\r\n\r\n",  "GET / HTTP/1.1\r\n\r\r\n",
        " GET / HTTP/1.1\r\n\r\n",
    };
    size_t used;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(scan_all(bad[i], strlen(bad[i]), 0, &used), LLMC_HS_BAD);
    /* leading empty lines are skipped, as the parser does */
    assert_int_equal(scan_all("\r\n\r\nGET / HTTP/1.1\r\n\r\n", 22, 0, &used), LLMC_HS_DONE);
    assert_int_equal(used, 22);
    assert_int_equal(scan_all("GET / HTTP/1.1\r\n\r\n", 18, 18, &used), LLMC_HS_DONE);
    assert_int_equal(scan_all("GET / HTTP/1.1\r\n\r\n", 18, 17, &used), LLMC_HS_TOO_BIG);
}

/* Over the limit while the request line is still being read is 414, in the
   header fields 431, however the bytes were split into reads: the scan stops
   at the first byte past the limit. */
static void test_scan_limit_names_the_part(void **state)
{
    (void)state;
    static const char long_line[] = "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char long_field[] = "GET / HTTP/1.1\r\nX: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\n";
    const size_t max = 30;
    size_t used;

    for (size_t cut = 0; cut <= sizeof(long_line) - 1; cut++) {
        llmc__http_scan_t a, b;
        size_t rest = sizeof(long_line) - 1 - cut;
        int r;
        llmc__http_scan_init(&a, max);
        r = llmc__http_scan(&a, long_line, cut, &used);
        if (r == LLMC_HS_MORE)
            r = llmc__http_scan(&a, long_line + cut, rest, &used);
        assert_int_equal(r, LLMC_HS_LINE_TOO_BIG);
        llmc__http_scan_init(&b, max);
        r = llmc__http_scan(&b, long_field, cut, &used);
        if (r == LLMC_HS_MORE)
            r = llmc__http_scan(&b, long_field + cut, sizeof(long_field) - 1 - cut, &used);
        assert_int_equal(r, LLMC_HS_TOO_BIG);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_split_everywhere),
        cmocka_unit_test(test_scan_rejects),
        cmocka_unit_test(test_scan_limit_names_the_part),
        cmocka_unit_test(test_reason),
        cmocka_unit_test(test_listen_errors),
        cmocka_unit_test_setup_teardown(test_get_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_content_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_sequential, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http10_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http10_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_ends_when_the_last_client_leaves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_while_draining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_limit_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_declared_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_chunked_too_large, setup, teardown),
        cmocka_unit_test(test_body_memory_bound),
        cmocka_unit_test_setup_teardown(test_error_survives_unread_body, setup, teardown),
        cmocka_unit_test(test_header_timeout),
        cmocka_unit_test(test_no_header_timeout_while_handler_works),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test_setup_teardown(test_cl_and_te, setup, teardown),
        cmocka_unit_test_setup_teardown(test_te_not_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_content_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_chunk_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunk_framing_strict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunk_trailers_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunk_pipelined_and_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunk_after_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_control_bytes_in_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absolute_form, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version, setup, teardown),
        cmocka_unit_test(test_max_conns),
        cmocka_unit_test(test_rejected_requests_have_a_start_time),
        cmocka_unit_test_setup_teardown(test_refusals_are_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_read_from_another_thread, setup, teardown),
        cmocka_unit_test(test_stats_table),
        cmocka_unit_test_setup_teardown(test_client_disconnect_aborts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_close_aborts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_while_streaming, setup, teardown),
        cmocka_unit_test(test_server_close_aborts_pending),
        cmocka_unit_test_setup_teardown(test_stream_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_http10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_respond_error_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_respond_error_with_invalid_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_response_by_reference, setup, teardown),
        cmocka_unit_test(test_send_timeout_drops_a_client_that_never_reads),
        cmocka_unit_test(test_send_timeout_spares_a_slow_steady_reader),
        cmocka_unit_test(test_send_timeout_drops_a_stalled_stream_reader),
        cmocka_unit_test_setup_teardown(test_no_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_bytes, setup, teardown),
    };

    g_big = malloc(BIG_LEN);
    for (size_t i = 0; i < BIG_LEN; i++)
        g_big[i] = (char)('a' + (i * 7 + i / 4096) % 26);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(g_big);
    return rc;
}
