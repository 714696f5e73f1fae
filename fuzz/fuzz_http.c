/*
 * fuzz_http.c: libFuzzer driver for the HTTP server's request path.
 *
 * Each input goes into one end of a socketpair whose other end the server
 * adopts as a client connection (llmc__http_conn_adopt_fd), so the bytes
 * take the real path: libuv reads, the head scan, libhttp-parser and its
 * callbacks, the head checks, dispatch, responses, lingering close, close.
 * The first input byte picks how the rest is split into writes (so that
 * every parser state meets a buffer end); the rest is what the client sends.
 *
 * The handler answers by path: "/s" streams three chunks, "/l" answers from
 * a 0 ms timer (so pipelined requests wait), "/h" never answers and is
 * aborted by the client's EOF, anything else gets its body echoed back by
 * reference. After each input the driver checks that the
 * connection was freed and counted out: a leaked conn or handle aborts.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "http/http.h"
#include "http/http_int.h"

static uv_loop_t loop;
static llmc_http_server_t *srv;

typedef struct later {
    uv_timer_t timer;
    llmc_http_req_t *req;
    int step;
} later_t;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_abort(llmc_http_req_t *req)
{
    later_t *l = req->data;

    if (l) {
        uv_timer_stop(&l->timer);
        uv_close((uv_handle_t *)&l->timer, later_closed);
    }
}

static void later_fire(uv_timer_t *t)
{
    later_t *l = t->data;
    llmc_http_req_t *req = l->req;

    if (req->path[1] == 's' && l->step < 3) {
        if (llmc_http_stream_write(req, "chunk", 5) != 0)
            return; /* aborted: on_abort closed the timer */
        l->step++;
        uv_timer_start(t, later_fire, 0, 0);
        return;
    }
    uv_close((uv_handle_t *)t, later_closed);
    if (req->path[1] == 's')
        llmc_http_stream_end(req);
    else
        llmc_http_respond_copy(req, 200, "", 0, req->query, strlen(req->query));
}

static void handler(llmc_http_req_t *req, void *ctx)
{
    later_t *l;
    uv_buf_t b;

    if (strcmp(req->path, "/h") == 0) {
        req->on_abort = later_abort;
        return;
    }
    if (strcmp(req->path, "/s") != 0 && strcmp(req->path, "/l") != 0) {
        b = uv_buf_init((char *)req->body, (unsigned)req->body_len);
        llmc_http_respond(req, 200, "X-A: b\r\n", 8, &b, 1, NULL, NULL);
        return;
    }
    l = calloc(1, sizeof(*l));
    if (!l)
        abort();
    l->req = req;
    req->data = l;
    req->on_abort = later_abort;
    uv_timer_init(req->loop, &l->timer);
    l->timer.data = l;
    if (req->path[1] == 's' && llmc_http_stream_begin(req, 200, "", 0) != 0)
        return;
    uv_timer_start(&l->timer, later_fire, 0, 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    llmc_http_server_config_t cfg = {
        /* Small limits so that inputs reach them; no timeouts, which would
           only make runs slow. */
        .limits = {.max_header_bytes = 1024, .max_body_bytes = 4096, .max_headers = 16},
        .handler = handler,
    };

    uv_loop_init(&loop);
    srv = llmc_http_server_new(&loop, &cfg);
    if (!srv)
        abort();
    return 0;
}

static void drain(int fd, bool *closed)
{
    char buf[65536];
    ssize_t n;

    while ((n = read(fd, buf, sizeof(buf))) > 0)
        ;
    if (n == 0 || (n < 0 && errno != EAGAIN))
        *closed = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fds[2];
    size_t split, off = 0;
    bool closed = false;
    int idle = 0;

    if (size < 1)
        return 0;
    split = data[0] ? data[0] : size;
    data++;
    size--;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
        abort();
    if (llmc__http_conn_adopt_fd(srv, fds[0]) != 0)
        abort();
    /* Write in pieces, letting the server run between them; then a few idle
       turns so that timers answer; then EOF, after which every path closes. */
    while (!closed) {
        if (off < size) {
            size_t n = size - off < split ? size - off : split;
            ssize_t w = write(fds[1], data + off, n);
            if (w > 0)
                off += (size_t)w;
        } else if (idle++ == 4) {
            shutdown(fds[1], SHUT_WR);
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        drain(fds[1], &closed);
    }
    close(fds[1]);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (srv->nalive != 0 || srv->st.conns_open != 0) {
        fprintf(stderr, "connection leaked: nalive %zu open %llu\n", srv->nalive,
                (unsigned long long)srv->st.conns_open);
        abort();
    }
    return 0;
}
