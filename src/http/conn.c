/*
 * http/conn.c: one client connection: reading (parse.c makes requests of
 * the bytes), timers, dispatch to the handler, the answers the server gives
 * itself, writing, the one finish of a request, lingering close and close.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - One request at a time. When a request is complete the parser pauses and
 *   nothing more is parsed until that request has finished (its response
 *   written). Pipelined requests wait as bytes in rbuf and are answered in
 *   order; the next request reuses the same buffers.
 * - Reading goes on while the handler works: an LLM call takes seconds and a
 *   client that hangs up meanwhile must be noticed, so that on_abort can stop
 *   the upstream call. Bytes that come meanwhile are only buffered, and
 *   reading stops when rbuf is full, which bounds what a client can make us
 *   hold. EOF while the handler owns a request aborts it: a client that
 *   half-closed is treated as gone.
 * - One timer per connection: the header timeout from a request's first byte
 *   until it is complete (and from the accept until the first request has
 *   come: a silent new connection gets no idle time), the idle timeout
 *   between requests, the linger time
 *   when closing; nothing while the handler works (LLM calls take long).
 * - Head and body go out as one write of several buffers, tried with
 *   uv_try_write first: usually the kernel takes it all and no write request
 *   or copy is needed. Only what it did not take goes to uv_write.
 * - A request finishes in exactly one place, finish(): release, on_done,
 *   then the connection reads the next request or closes. It runs once the
 *   handler has handed the response over (or the client left) and no write
 *   is pending, which is also what keeps pipelined answers in order.
 * - Connections the server ends itself (errors, Connection: close) linger:
 *   FIN after the last write, then input is read and dropped for a while, so
 *   unread input does not turn into an RST that destroys the answer.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/sockios.h>

#include "http/http_int.h"
#include "llmc/error.h"

static void conn_feed(llmc__http_conn_t *c);
static void req_done(llmc__http_conn_t *c, bool keep_alive);

/* ---- reading and timers ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    llmc__http_conn_t *c = h->data;

    if (!c->rbuf && !(c->rbuf = llmc__http_rbuf_take(c->s))) {
        *buf = uv_buf_init(NULL, 0); /* on_read closes the connection */
        return;
    }
    if (c->phase == LLMC_PH_LINGER) {
        c->rpos = c->rlen = 0; /* lingering input is dropped */
    } else if (c->rpos > 0 && LLMC_HTTP_RBUF - c->rlen < 4096) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    /* A full buffer gives a 0-byte buf: libuv answers UV_ENOBUFS. */
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(LLMC_HTTP_RBUF - c->rlen));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void read_start(llmc__http_conn_t *c)
{
    if (c->reading || c->closing || c->peer_eof)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
}

static void read_stop(llmc__http_conn_t *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

static void timer_set(llmc__http_conn_t *c, uint64_t ms);

/* True when the client took bytes of our answers since the last call. libuv
   tells of a write only once all of it is done, and one write may carry a
   whole answer; and it writes more only when the kernel wakes it, after half
   the socket's send buffer (megabytes) has drained. So what the client took
   is counted down to the kernel: bytes handed over, less those still in
   libuv's queue, less those the kernel holds unacknowledged (SIOCOUTQ). */
static bool send_progressed(llmc__http_conn_t *c)
{
    uint64_t held = c->tcp.write_queue_size, acked;
    uv_os_fd_t fd;
    int outq;

    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &outq) == 0 && outq > 0)
        held += (uint64_t)outq;
    acked = held < c->submitted ? c->submitted - held : 0;
    if (acked <= c->acked_mark)
        return false;
    c->acked_mark = acked;
    return true;
}

static void on_timer(uv_timer_t *t)
{
    llmc__http_conn_t *c = t->data;
    uint64_t now = uv_now(c->s->loop);

    if (c->deadline == 0)
        return;
    if (now < c->deadline) { /* the deadline moved on since the timer was armed */
        uv_timer_start(&c->timer, on_timer, c->deadline - now, 0);
        return;
    }
    c->deadline = 0;
    if (c->writes_pending > 0) {
        if (send_progressed(c)) { /* slow, but reading: another period */
            timer_set(c, c->s->cfg.limits.idle_timeout_ms);
        } else { /* the client stopped reading its answer */
            LLMC__HTTP_INC(c->s, send_timeouts);
            llmc__http_conn_close(c);
        }
    } else if (c->phase == LLMC_PH_READ && c->req_started) {
        llmc__http_conn_reject(c, 408, "request_timeout", "the request was not received in time");
    } else if (c->phase == LLMC_PH_READ) {
        LLMC__HTTP_INC(c->s, idle_closes);
        llmc__http_conn_close(c);
    } else if (c->phase == LLMC_PH_LINGER) {
        llmc__http_conn_close(c);
    }
}

/*
 * Sets the connection's one deadline, ms from now; 0 means no limit. A
 * keep-alive connection moves its deadline several times per request (head
 * timeout, send timeout, idle timeout), and restarting a libuv timer is a
 * heap removal and insertion each time: the biggest libuv cost of a cache
 * hit. So only the deadline moves; the timer is restarted when it must fire
 * sooner than it is armed for, and when it fires early it re-arms for what
 * is left (on_timer).
 */
static void timer_set(llmc__http_conn_t *c, uint64_t ms)
{
    if (!ms) {
        c->deadline = 0;
        return;
    }
    c->deadline = uv_now(c->s->loop) + ms;
    if (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > ms)
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void timer_stop(llmc__http_conn_t *c)
{
    c->deadline = 0;
}

/* While a write waits for a client to read, the idle timeout bounds how long
   it may take to make progress (nginx's send_timeout): a client that never
   reads must not hold its connection and our buffers forever. The deadline
   is set when writes start to wait and moves on only when the client took
   bytes: a producer queueing more is no progress. When nothing waits, a
   streaming answer runs without a timer (the upstream sets the pace). */
static void send_timer(llmc__http_conn_t *c)
{
    const llmc_http_limits_t *lim = &c->s->cfg.limits;
    if (c->writes_pending > 0) {
        if (send_progressed(c) || c->deadline == 0) /* progress checked first: it moves the mark */
            timer_set(c, lim->idle_timeout_ms);
    } else if (c->phase == LLMC_PH_STREAM)
        timer_stop(c);
    else if (c->phase == LLMC_PH_READ) /* after a 100 Continue: back to the read limits */
        timer_set(c, c->req_started ? lim->header_timeout_ms : lim->idle_timeout_ms);
}

/* The next request's first byte has come: its time starts now. Set here,
   not when the parser begins a message, because the head scan can refuse
   the first bytes before the parser ever sees them, and on_done must get a
   start time for every request. */
static void req_begin(llmc__http_conn_t *c)
{
    c->req_started = true;
    c->req.start_ns = uv_hrtime();
}

/* The client sent EOF or the read failed. */
static void read_ended(llmc__http_conn_t *c, ssize_t err)
{
    c->reading = false;
    c->peer_eof = true;
    /* A response already handed over is still delivered, then we close. */
    if (c->phase == LLMC_PH_WRITE && err == UV_EOF) {
        c->req.keep_alive = false;
        return;
    }
    llmc__http_conn_close(c);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    llmc__http_conn_t *c = st->data;

    if (nread == 0 || c->closing)
        return;
    if (nread == UV_ENOBUFS) {
        if (!c->rbuf)
            llmc__http_conn_close(c); /* no memory for a read buffer */
        else
            read_stop(c);
        return;
    }
    if (nread < 0) {
        read_ended(c, nread);
        return;
    }
    if (c->phase == LLMC_PH_LINGER)
        return;
    c->rlen += (size_t)nread;
    if (c->phase != LLMC_PH_READ) {
        if (c->rpos == 0 && c->rlen == LLMC_HTTP_RBUF)
            read_stop(c);
        return;
    }
    if (!c->req_started) {
        req_begin(c);
        timer_set(c, c->s->cfg.limits.header_timeout_ms);
    }
    conn_feed(c);
}

/* ---- requests ---- */

static void req_reset(llmc__http_conn_t *c)
{
    llmc_http_req_t *req = &c->req;

    memset(req, 0, sizeof(*req));
    req->server = c->s;
    req->loop = c->s->loop;
    req->method = -1;
    req->method_name = req->target = req->path = req->query = req->body = "";
    req->http_major = 1;
    req->http_minor = 1;
    llmc__http_parse_reset(c);
    if (c->ocap > LLMC_HTTP_KEEP_BUF) {
        free(c->obuf);
        c->obuf = NULL;
        c->ocap = 0;
    }
    c->status = 0;
    c->bytes_out = 0;
    c->release = NULL;
    c->release_arg = NULL;
    c->chunked_out = c->no_body = false;
}

static void dispatch(llmc__http_conn_t *c)
{
    llmc_http_server_t *s = c->s;
    llmc_http_req_t *req = &c->req;

    /* What the client asked for, unless the server is closing or the client
       has sent EOF already. */
    req->keep_alive = req->keep_alive && !s->closing && !s->draining && !c->peer_eof;
    req->id = ++s->seq;
    LLMC__HTTP_INC(s, requests);
    c->phase = LLMC_PH_HANDLER;
    timer_stop(c);
    s->cfg.handler(req, s->cfg.ctx);
}

/* ---- answers: writes, and the one finish of a request ---- */

typedef struct wcopy {
    uv_write_t req;
    llmc__http_conn_t *c;
    size_t len;
    char data[];
} wcopy_t;

static void write_done(llmc__http_conn_t *c, int status, size_t len)
{
    c->writes_pending--;
    if (status == 0)
        c->bytes_out += len;
    else
        llmc__http_conn_close(c);
    /* The send timeout moves on if the client took bytes meanwhile. */
    if (!c->closing)
        send_timer(c);
    llmc__http_maybe_finish(c);
    /* Last: the handler may write again, or end the stream, from here. */
    if (c->phase == LLMC_PH_STREAM && c->writes_pending == 0 && c->req.on_drain)
        c->req.on_drain(&c->req);
}

static void on_write_ref(uv_write_t *w, int status)
{
    llmc__http_conn_t *c = w->data;

    write_done(c, status, c->wreq_bytes);
}

static void on_write_copy(uv_write_t *w, int status)
{
    wcopy_t *wc = (wcopy_t *)w;
    llmc__http_conn_t *c = wc->c;
    size_t len = wc->len;

    free(wc);
    write_done(c, status, len);
}

static int write_copy(llmc__http_conn_t *c, const uv_buf_t *b, unsigned n, size_t len)
{
    wcopy_t *wc = malloc(sizeof(*wc) + len);
    uv_buf_t one;
    size_t off = 0;
    unsigned i;

    if (!wc)
        return LLMC_ENOMEM;
    for (i = 0; i < n; i++) {
        memcpy(wc->data + off, b[i].base, b[i].len);
        off += b[i].len;
    }
    wc->c = c;
    wc->len = len;
    one = llmc__http_buf(wc->data, len);
    if (uv_write(&wc->req, (uv_stream_t *)&c->tcp, &one, 1, on_write_copy) != 0) {
        free(wc);
        return LLMC_EIO;
    }
    c->writes_pending++;
    send_timer(c);
    return 0;
}

static int write_ref(llmc__http_conn_t *c, const uv_buf_t *b, unsigned n, size_t len)
{
    c->wreq.data = c;
    c->wreq_bytes = len;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, b, n, on_write_ref) != 0)
        return LLMC_EIO;
    c->writes_pending++;
    send_timer(c);
    return 0;
}

int llmc__http_send(llmc__http_conn_t *c, uv_buf_t *bufs, unsigned n, bool copy)
{
    size_t total = llmc__http_bufs_total(bufs, n), done = 0, skip;
    unsigned i = 0;
    int r;

    if (c->closing)
        return LLMC_EIO;
    if (total == 0)
        return 0;
    /* UV_EAGAIN also when earlier writes are queued, which keeps order. */
    r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
    if (r < 0 && r != UV_EAGAIN)
        goto fail;
    if (r > 0)
        done = (size_t)r;
    c->bytes_out += done;
    c->submitted += total; /* what is not written now is queued below, or the conn closes */
    if (done == total)
        return 0;
    for (skip = done; bufs[i].len <= skip; i++)
        skip -= bufs[i].len;
    bufs[i].base += skip;
    bufs[i].len -= skip;
    r = copy ? write_copy(c, bufs + i, n - i, total - done) : write_ref(c, bufs + i, n - i, total - done);
    if (r != 0)
        goto fail;
    return 0;
fail:
    llmc__http_conn_close(c);
    return LLMC_EIO;
}

static void finish(llmc__http_conn_t *c)
{
    llmc_http_server_t *s = c->s;
    bool keep_alive = c->req.keep_alive && !c->closing && !s->draining;
    void (*release)(void *) = c->release;

    /* Not WRITE any more, so that nothing below finishes it twice. */
    c->phase = LLMC_PH_READ;
    c->release = NULL;
    if (release)
        release(c->release_arg);
    if (s->cfg.on_done)
        s->cfg.on_done(&c->req, c->status, c->bytes_out, s->cfg.ctx);
    req_done(c, keep_alive);
}

void llmc__http_maybe_finish(llmc__http_conn_t *c)
{
    if (c->phase == LLMC_PH_WRITE && c->writes_pending == 0)
        finish(c);
}

void llmc__http_answer_copy(llmc__http_conn_t *c, int status, const char *h1, size_t l1, const char *h2,
                            size_t l2, const char *body, size_t body_len)
{
    uv_buf_t b;

    if (c->phase != LLMC_PH_HANDLER)
        return;
    c->phase = LLMC_PH_WRITE;
    if (llmc__http_head_full(c, status, h1, l1, h2, l2, body_len, body_len) != 0) {
        llmc__http_conn_close(c);
    } else {
        if (!c->no_body) {
            memcpy(c->obuf + c->olen, body, body_len);
            c->olen += body_len;
        }
        b = llmc__http_buf(c->obuf, c->olen);
        llmc__http_send(c, &b, 1, false);
    }
    llmc__http_maybe_finish(c);
}

void llmc__http_answer_error(llmc__http_conn_t *c, int status, const char *hdrs, const char *type,
                             const char *code, const char *message)
{
    static const char ct[] = "Content-Type: application/json\r\n";
    static const char ct_final[] = "Content-Type: application/json\r\nX-Should-Retry: false\r\n";
    char *body = llmc__http_error_body(type, code, message);
    bool final = llmc__http_status_final(status);

    /* Out of memory for the JSON still answers with the status. */
    llmc__http_answer_copy(c, status, final ? ct_final : ct, final ? sizeof(ct_final) - 1 : sizeof(ct) - 1,
                           hdrs ? hdrs : "", hdrs ? strlen(hdrs) : 0, body ? body : "",
                           body ? strlen(body) : 0);
    free(body);
}

/* Each refusal counts in one counter of the table (http.h); the connection
   cap's 503 counts where the connection is refused. */
static void count_refusal(llmc_http_server_t *s, int status)
{
    switch (status) {
    case 408:
        LLMC__HTTP_INC(s, timeouts);
        break;
    case 413:
    case 414:
    case 431:
        LLMC__HTTP_INC(s, requests_too_large);
        break;
    case 503:
        break;
    default:
        LLMC__HTTP_INC(s, bad_requests);
    }
}

void llmc__http_conn_reject(llmc__http_conn_t *c, int status, const char *code, const char *msg)
{
    llmc_http_server_t *s = c->s;

    count_refusal(s, status);
    /* Refused before a byte came (the connection cap): the request that
       on_done reports starts at its refusal. */
    if (!c->req.start_ns)
        c->req.start_ns = uv_hrtime();
    c->req.keep_alive = false;
    c->req.id = ++s->seq;
    c->phase = LLMC_PH_HANDLER;
    timer_stop(c);
    /* A 503 (the connection cap, the body memory bound) passes: say when to
       come back, as the SDKs wait for it before their retry. */
    llmc__http_answer_error(c, status, status == 503 ? "Retry-After: 1\r\n" : NULL,
                            status >= 500 ? "server_error" : "invalid_request_error", code, msg);
}

static void send_continue(llmc__http_conn_t *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)msg, sizeof(msg) - 1);

    /* Copied if it cannot go at once: the response may need c->wreq later. */
    llmc__http_send(c, &b, 1, true);
}

/* Parses what rbuf holds once, the head or the body, not both; false when
   the feed loop must stop. */
static bool feed_once(llmc__http_conn_t *c)
{
    int r = llmc__http_parse(c);

    if (r == LLMC_PARSE_ERROR) {
        llmc__http_conn_reject(c, c->err_status, c->err_code, c->err_msg);
        return false;
    }
    if (c->want_continue) {
        c->want_continue = false;
        send_continue(c);
        if (c->closing)
            return false;
    }
    if (r == LLMC_PARSE_DONE)
        dispatch(c);
    return true;
}

static void conn_feed(llmc__http_conn_t *c)
{
    c->in_feed = true;
    while (!c->closing && c->phase == LLMC_PH_READ && c->rpos < c->rlen) {
        if (!feed_once(c))
            break;
    }
    if (c->rpos == c->rlen)
        c->rpos = c->rlen = 0;
    /* Nothing buffered, and either waiting for a next request or for the
       handler (an LLM call takes seconds): give the buffer back. A hang-up
       or a pipelined request takes one again when it comes. */
    if (c->rlen == 0 && c->rbuf &&
        ((c->phase == LLMC_PH_READ && !c->req_started) || c->phase == LLMC_PH_HANDLER)) {
        llmc__http_rbuf_give(c->s, c->rbuf);
        c->rbuf = NULL;
    }
    c->in_feed = false;
    if (c->phase == LLMC_PH_READ)
        read_start(c);
}

static void on_shutdown(uv_shutdown_t *r, int status)
{
    if (status < 0)
        llmc__http_conn_close(r->data);
}

static void conn_linger(llmc__http_conn_t *c)
{
    c->phase = LLMC_PH_LINGER;
    c->rpos = c->rlen = 0;
    c->sreq.data = c;
    if (c->peer_eof || uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        llmc__http_conn_close(c);
        return;
    }
    timer_set(c, LLMC_HTTP_LINGER_MS);
    read_start(c);
}

static void req_done(llmc__http_conn_t *c, bool keep_alive)
{
    const llmc_http_limits_t *lim = &c->s->cfg.limits;

    req_reset(c);
    if (c->closing)
        return;
    if (!keep_alive) {
        conn_linger(c);
        return;
    }
    c->phase = LLMC_PH_READ;
    c->req_started = false;
    if (c->rpos < c->rlen) /* a pipelined request is waiting */
        req_begin(c);
    timer_set(c, c->req_started ? lim->header_timeout_ms : lim->idle_timeout_ms);
    /* Inside conn_feed (the handler answered at once) its loop goes on. */
    if (!c->in_feed)
        conn_feed(c);
}

/* ---- connection life ---- */

/* Both handles have closed: unlink and free c, and let the server go if it
   was waiting for its last connection. */
static void conn_free(llmc__http_conn_t *c)
{
    llmc_http_server_t *s = c->s;

    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nalive--;
    if (c->rbuf)
        llmc__http_rbuf_give(s, c->rbuf);
    free(c->hbuf);
    free(c->hoff);
    free(c->hdrs);
    llmc__http_body_free(c);
    free(c->obuf);
    free(c);
    llmc__http_server_maybe_free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    llmc__http_conn_t *c = h->data;

    if (--c->handles == 0)
        conn_free(c);
}

int llmc__http_conn_init(llmc_http_server_t *s, llmc__http_conn_t *c)
{
    if (uv_tcp_init(s->loop, &c->tcp) != 0)
        return LLMC_EIO;
    uv_timer_init(s->loop, &c->timer);
    c->handles = 2;
    c->tcp.data = c;
    c->timer.data = c;
    c->s = s;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nalive++;
    req_reset(c);
    return 0;
}

void llmc__http_conn_start(llmc__http_conn_t *c)
{
    llmc_http_server_t *s = c->s;
    const llmc_http_limits_t *lim = &s->cfg.limits;

    LLMC__HTTP_INC(s, conns_total);
    uv_tcp_nodelay(&c->tcp, 1); /* fails harmlessly on the fuzzer's socketpair */
    if (lim->max_conns && LLMC__HTTP_STAT(s, conns_open) >= lim->max_conns) {
        LLMC__HTTP_INC(s, conns_refused);
        llmc__http_conn_reject(c, 503, "server_busy", "too many open connections; try again later");
        return;
    }
    c->counted = true;
    LLMC__HTTP_INC(s, conns_open);
    /* A new connection owes us its first request: the header timeout runs
       from the accept, not the idle timeout, which is for a client that has
       been served and may come back. Silent sockets would otherwise hold
       connection slots for the idle timeout (a minute by default). */
    timer_set(c, lim->header_timeout_ms < lim->idle_timeout_ms ? lim->header_timeout_ms
                                                               : lim->idle_timeout_ms);
    read_start(c);
}

int llmc__http_conn_adopt_fd(llmc_http_server_t *s, int fd)
{
    llmc__http_conn_t *c = calloc(1, sizeof(*c));

    if (!c) {
        close(fd);
        return LLMC_ENOMEM;
    }
    if (llmc__http_conn_init(s, c) != 0) {
        free(c);
        close(fd);
        return LLMC_EIO;
    }
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd);
        llmc__http_conn_close(c);
        return LLMC_EIO;
    }
    llmc__http_conn_start(c);
    return 0;
}

static void req_abort(llmc__http_conn_t *c)
{
    /* From here the handler owns nothing; the request finishes once the
       writes already queued have ended (cancelled by the close). */
    c->phase = LLMC_PH_WRITE;
    c->req.keep_alive = false;
    if (c->req.on_abort)
        c->req.on_abort(&c->req);
    llmc__http_maybe_finish(c);
}

void llmc__http_conn_close(llmc__http_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    c->reading = false;
    if (c->counted) {
        c->counted = false;
        LLMC__HTTP_DEC(c->s, conns_open);
    }
    if (c->phase == LLMC_PH_HANDLER || c->phase == LLMC_PH_STREAM)
        req_abort(c);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}
