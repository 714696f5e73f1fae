/*
 * http/conn.c: one client connection: reading, parsing (libhttp-parser plus
 * the strict head scan), the checks on a request's head, timers, dispatch to
 * the handler, the answers the server gives itself, writing, the one finish
 * of a request, lingering close and close.
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
 * - Everything about a request's head (Host, Transfer-Encoding, Expect, the
 *   target's form, the version, a declared length over the limit) is decided
 *   in on_headers_complete, before a byte of the body is read. To make that
 *   hold, the parser gets the head alone first, then the body.
 * - Each byte goes through a strict checker before the parser sees it: the
 *   head through head_scan.c, a chunked body through chunk_scan.c. Each
 *   stops where its part ends, so a pipelined request after a chunked body
 *   is checked as a head, and the parser must agree on that end or the
 *   request is refused.
 * - One timer per connection: the header timeout from a request's first byte
 *   until it is complete, the idle timeout between requests, the linger time
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

/* Buffers bigger than this are freed after their request instead of kept
   for the next one, so one large body does not pin memory on an idle
   keep-alive connection. */
#define KEEP_BUF_MAX 65536

enum { CB_NONE, CB_URL, CB_FIELD, CB_VALUE };

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
        if (send_progressed(c)) /* slow, but reading: another period */
            timer_set(c, c->s->cfg.limits.idle_timeout_ms);
        else
            llmc__http_conn_close(c); /* the client stopped reading its answer */
    } else if (c->phase == LLMC_PH_READ && c->req_started)
        llmc__http_conn_reject(c, 408, "request_timeout", "the request was not received in time");
    else if (c->phase == LLMC_PH_READ || c->phase == LLMC_PH_LINGER)
        llmc__http_conn_close(c);
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

/* ---- the request head ---- */

static int fail_with(llmc__http_conn_t *c, int status, const char *code, const char *msg)
{
    c->err_status = status;
    c->err_code = code;
    c->err_msg = msg;
    return -1;
}

static int head_append(llmc__http_conn_t *c, const char *at, size_t n, bool lower)
{
    size_t i;

    if (llmc__http_grow(&c->hbuf, &c->hcap, c->hlen + n + 1) != 0)
        return fail_with(c, 500, "server_error", "out of memory");
    if (lower) {
        for (i = 0; i < n; i++) {
            char ch = at[i];
            c->hbuf[c->hlen + i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
    } else {
        memcpy(c->hbuf + c->hlen, at, n);
    }
    c->hlen += n;
    return 0;
}

static int head_nul(llmc__http_conn_t *c)
{
    return head_append(c, "", 1, false);
}

static int name_end(llmc__http_conn_t *c)
{
    llmc__http_hoff_t *h = &c->hoff[c->nh - 1];

    h->name_len = (uint32_t)(c->hlen - h->name);
    if (head_nul(c) != 0)
        return -1;
    h->value = (uint32_t)c->hlen;
    return 0;
}

/* Ends a value: trailing whitespace trimmed (the parser skips the leading). */
static int value_end(llmc__http_conn_t *c)
{
    llmc__http_hoff_t *h = &c->hoff[c->nh - 1];
    size_t len = c->hlen - h->value;

    while (len && (c->hbuf[h->value + len - 1] == ' ' || c->hbuf[h->value + len - 1] == '\t'))
        len--;
    c->hlen = h->value + len;
    h->value_len = (uint32_t)len;
    return head_nul(c);
}

/* Ends the piece the data callbacks were building with its NUL. */
static int piece_end(llmc__http_conn_t *c)
{
    int rc = 0;

    if (c->last_cb == CB_URL) {
        rc = head_nul(c); /* the target starts hbuf */
    } else if (c->last_cb == CB_FIELD) {
        rc = name_end(c);
        if (rc == 0)
            rc = value_end(c);
    } else if (c->last_cb == CB_VALUE) {
        rc = value_end(c);
    }
    c->last_cb = CB_NONE;
    return rc;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    llmc__http_conn_t *c = p->data;

    c->last_cb = CB_URL;
    return head_append(c, at, n, false);
}

static int header_begin(llmc__http_conn_t *c)
{
    size_t max = c->s->cfg.limits.max_headers;
    size_t cap = c->nh_cap ? c->nh_cap * 2 : 16;
    llmc__http_hoff_t *nh;
    llmc_http_header_t *hd;

    if (piece_end(c) != 0)
        return -1;
    if (max && c->nh >= max)
        return fail_with(c, 431, "request_header_too_large", "too many request headers");
    if (c->nh == c->nh_cap) {
        /* Both arrays grow together so that head_finish needs no memory. */
        nh = realloc(c->hoff, cap * sizeof(*nh));
        if (nh)
            c->hoff = nh;
        hd = nh ? realloc(c->hdrs, cap * sizeof(*hd)) : NULL;
        if (!hd)
            return fail_with(c, 500, "server_error", "out of memory");
        c->hdrs = hd;
        c->nh_cap = cap;
    }
    c->hoff[c->nh++] = (llmc__http_hoff_t){.name = (uint32_t)c->hlen};
    c->last_cb = CB_FIELD;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    llmc__http_conn_t *c = p->data;

    if (c->head_done)
        return 0; /* a trailer after a chunked body: dropped */
    if (c->last_cb != CB_FIELD && header_begin(c) != 0)
        return -1;
    return head_append(c, at, n, true);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    llmc__http_conn_t *c = p->data;

    if (c->head_done)
        return 0;
    if (c->last_cb == CB_FIELD) {
        if (name_end(c) != 0)
            return -1;
        c->last_cb = CB_VALUE;
    }
    return head_append(c, at, n, false);
}

/* Offsets become pointers now that hbuf will not move any more. */
static int head_finish(llmc__http_conn_t *c)
{
    llmc_http_req_t *req = &c->req;
    size_t plen, path_off, i;

    if (!c->hbuf)
        return fail_with(c, 400, "bad_request", "no request target");
    plen = strcspn(c->hbuf, "?");
    if (llmc__http_grow(&c->hbuf, &c->hcap, c->hlen + plen + 1) != 0)
        return fail_with(c, 500, "server_error", "out of memory");
    path_off = c->hlen;
    memcpy(c->hbuf + path_off, c->hbuf, plen);
    c->hbuf[path_off + plen] = '\0';
    c->hlen += plen + 1;
    for (i = 0; i < c->nh; i++) {
        const llmc__http_hoff_t *o = &c->hoff[i];
        c->hdrs[i] = (llmc_http_header_t){c->hbuf + o->name, c->hbuf + o->value, o->name_len,
                                          o->value_len};
    }
    req->headers = c->hdrs;
    req->nheaders = c->nh;
    req->target = c->hbuf;
    req->path = c->hbuf + path_off;
    req->query = c->hbuf[plen] == '?' ? c->hbuf + plen + 1 : "";
    req->method = (int)c->parser.method;
    req->method_name = http_method_str((enum http_method)c->parser.method);
    req->http_major = c->parser.http_major;
    req->http_minor = c->parser.http_minor;
    return 0;
}

/* Headers whose presence or count the head checks need, found in one pass. */
enum { SH_HOST, SH_TE, SH_CL, SH_EXPECT, SH_N };
static const struct {
    const char *name;
    size_t len;
} special_headers[SH_N] = {
    [SH_HOST] = {"host", 4},
    [SH_TE] = {"transfer-encoding", 17},
    [SH_CL] = {"content-length", 14},
    [SH_EXPECT] = {"expect", 6},
};

static void find_special(const llmc_http_req_t *req, const char *first[SH_N], unsigned count[SH_N])
{
    size_t i;
    int k;

    for (i = 0; i < req->nheaders; i++) {
        const llmc_http_header_t *h = &req->headers[i];
        for (k = 0; k < SH_N; k++) {
            if (h->name_len == special_headers[k].len &&
                memcmp(h->name, special_headers[k].name, h->name_len) == 0) {
                if (count[k]++ == 0)
                    first[k] = h->value;
            }
        }
    }
}

static bool target_ok(const llmc__http_conn_t *c)
{
    const char *t = c->req.target;

    if (t[0] == '/')
        return strchr(t, '#') == NULL;
    return c->parser.method == HTTP_OPTIONS && strcmp(t, "*") == 0;
}

static void send_continue(llmc__http_conn_t *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)msg, sizeof(msg) - 1);

    /* Copied if it cannot go at once: the response may need c->wreq later. */
    llmc__http_send(c, &b, 1, true);
}

/* The framing and protocol checks on a complete head. */
static int head_check(llmc__http_conn_t *c)
{
    const llmc_http_req_t *req = &c->req;
    const char *first[SH_N] = {0};
    unsigned count[SH_N] = {0};
    size_t max_body = c->s->cfg.limits.max_body_bytes;
    uint64_t declared = (c->parser.flags & F_CONTENTLENGTH) ? c->parser.content_length : 0;
    bool v11 = req->http_minor >= 1;

    find_special(req, first, count);
    if (req->http_major != 1)
        return fail_with(c, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served");
    if (!target_ok(c))
        return fail_with(c, 400, "bad_request",
                         "the request target must be a path (absolute-form is refused: this is not a proxy)");
    /* RFC 9112 only requires Host of HTTP/1.1; issue 7 requires it of 1.0
       too, since every client in use sends it and a request without one is
       more likely a probe than a client. */
    if (count[SH_HOST] != 1)
        return fail_with(c, 400, "bad_request", "a request needs exactly one Host header");
    if (count[SH_TE] > 0 && (count[SH_CL] > 0 || count[SH_TE] > 1 || !v11 ||
                             strcasecmp(first[SH_TE], "chunked") != 0))
        return fail_with(c, 400, "bad_request",
                         "only Transfer-Encoding: chunked, once, without Content-Length, is accepted");
    if (count[SH_CL] > 1)
        return fail_with(c, 400, "bad_request", "more than one Content-Length header");
    if (max_body && declared > max_body)
        return fail_with(c, 413, "request_too_large", "the request body is larger than allowed");
    if (count[SH_EXPECT] > 0 && v11) {
        if (strcasecmp(first[SH_EXPECT], "100-continue") != 0)
            return fail_with(c, 417, "expectation_failed", "only Expect: 100-continue is supported");
        if (declared > 0 || count[SH_TE] > 0)
            send_continue(c);
    }
    if (declared && llmc__http_grow(&c->bbuf, &c->bcap, (size_t)declared + 1) != 0)
        return fail_with(c, 500, "server_error", "out of memory");
    if (count[SH_TE] > 0) {
        /* Extensions and trailers extend the head: the head's limit bounds them. */
        c->chunk_on = true;
        llmc__http_chunk_init(&c->chunk, c->s->cfg.limits.max_header_bytes);
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    llmc__http_conn_t *c = p->data;

    if (piece_end(c) != 0)
        return -1;
    c->head_done = true;
    if (head_finish(c) != 0 || head_check(c) != 0)
        return -1;
    /* The body is checked as chunked exactly when the parser decodes it so:
       otherwise the checked bytes and the parsed ones would differ. */
    if (c->chunk_on != ((p->flags & F_CHUNKED) != 0))
        return fail_with(c, 400, "bad_request", "ambiguous Transfer-Encoding");
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    llmc__http_conn_t *c = p->data;
    size_t max = c->s->cfg.limits.max_body_bytes;

    /* Only a chunked body can get here past the limit: a declared length
       over it was refused in head_check. */
    if (max && c->blen + n > max)
        return fail_with(c, 413, "request_too_large", "the request body is larger than allowed");
    if (llmc__http_grow(&c->bbuf, &c->bcap, c->blen + n + 1) != 0)
        return fail_with(c, 500, "server_error", "out of memory");
    memcpy(c->bbuf + c->blen, at, n);
    c->blen += n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    /* Nothing after this request is parsed until it has finished. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

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
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    llmc__http_scan_init(&c->scan, c->s->cfg.limits.max_header_bytes);
    c->scan_done = c->head_done = c->chunk_on = false;
    c->last_cb = CB_NONE;
    c->hlen = c->nh = c->blen = 0;
    if (c->bcap > KEEP_BUF_MAX) {
        free(c->bbuf);
        c->bbuf = NULL;
        c->bcap = 0;
    }
    if (c->ocap > KEEP_BUF_MAX) {
        free(c->obuf);
        c->obuf = NULL;
        c->ocap = 0;
    }
    c->status = 0;
    c->bytes_out = 0;
    c->release = NULL;
    c->release_arg = NULL;
    c->err_status = 0;
    c->chunked_out = c->no_body = false;
}

static void dispatch(llmc__http_conn_t *c)
{
    llmc_http_server_t *s = c->s;
    llmc_http_req_t *req = &c->req;

    if (c->bbuf) {
        c->bbuf[c->blen] = '\0';
        req->body = c->bbuf;
    }
    req->body_len = c->blen;
    /* An Upgrade or CONNECT leaves bytes of another protocol behind. */
    req->keep_alive = http_should_keep_alive(&c->parser) && !c->parser.upgrade && !s->closing &&
                      !c->peer_eof;
    req->id = ++s->seq;
    s->st.requests++;
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
    bool keep_alive = c->req.keep_alive && !c->closing;
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
    char *body = llmc__http_error_body(type, code, message);

    /* Out of memory for the JSON still answers with the status. */
    llmc__http_answer_copy(c, status, ct, sizeof(ct) - 1, hdrs ? hdrs : "", hdrs ? strlen(hdrs) : 0,
                           body ? body : "", body ? strlen(body) : 0);
    free(body);
}

void llmc__http_conn_reject(llmc__http_conn_t *c, int status, const char *code, const char *msg)
{
    llmc_http_server_t *s = c->s;

    if (status == 408)
        s->st.timeouts++;
    else if (status != 503)
        s->st.bad_requests++;
    /* Refused before a byte came (the connection cap): the request that
       on_done reports starts at its refusal. */
    if (!c->req.start_ns)
        c->req.start_ns = uv_hrtime();
    c->req.keep_alive = false;
    c->req.id = ++s->seq;
    c->phase = LLMC_PH_HANDLER;
    timer_stop(c);
    llmc__http_answer_error(c, status, NULL, status >= 500 ? "server_error" : "invalid_request_error",
                            code, msg);
}

static void reject_parse(llmc__http_conn_t *c, enum http_errno e)
{
    if (e >= HPE_CB_message_begin && e <= HPE_CB_chunk_complete && c->err_status)
        llmc__http_conn_reject(c, c->err_status, c->err_code, c->err_msg);
    else if (e == HPE_HEADER_OVERFLOW)
        llmc__http_conn_reject(c, 431, "request_header_too_large", "the request head is too large");
    else
        llmc__http_conn_reject(c, 400, "bad_request", http_errno_description(e));
}

/* Parses what rbuf holds once, the head or the body, not both; false when
   the feed loop must stop. */
static bool feed_once(llmc__http_conn_t *c)
{
    const char *p = c->rbuf + c->rpos;
    size_t n = c->rlen - c->rpos, used;
    bool body_end = false;
    enum http_errno e;
    int r;

    if (!c->scan_done) {
        r = llmc__http_scan(&c->scan, p, n, &used);
        if (r == LLMC_HS_BAD) {
            llmc__http_conn_reject(c, 400, "bad_request", "malformed request head");
            return false;
        }
        if (r == LLMC_HS_TOO_BIG) {
            llmc__http_conn_reject(c, 431, "request_header_too_large", "the request head is too large");
            return false;
        }
        if (r == LLMC_HS_LINE_TOO_BIG) {
            llmc__http_conn_reject(c, 414, "uri_too_long", "the request line is too long");
            return false;
        }
        if (r == LLMC_HS_DONE) {
            /* The head alone: on_headers_complete decides whether a chunked
               body follows, and the chunk scan must start at its first byte. */
            c->scan_done = true;
            n = used;
        }
    } else if (c->chunk_on) {
        r = llmc__http_chunk_scan(&c->chunk, p, n, &used);
        if (r == LLMC_CS_BAD) {
            llmc__http_conn_reject(c, 400, "bad_request", "malformed chunked request body");
            return false;
        }
        if (r == LLMC_CS_TOO_BIG) {
            llmc__http_conn_reject(c, 431, "request_header_too_large",
                                   "the chunk extensions and trailers are too large");
            return false;
        }
        if (r == LLMC_CS_DONE) {
            /* What follows is the next request: the parser stops here too. */
            c->chunk_on = false;
            body_end = true;
            n = used;
        }
    }
    used = http_parser_execute(&c->parser, &parser_settings, p, n);
    c->rpos += used;
    if (c->closing)
        return false;
    e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK && e != HPE_PAUSED) {
        reject_parse(c, e);
        return false;
    }
    /* The scan accepts a subset of what the parser does, so both end a
       chunked body at the same byte; if they ever did not, the bytes after
       it would be read as a request that was never checked. */
    if ((c->chunk_on || body_end) && (e == HPE_PAUSED) != body_end) {
        llmc__http_conn_reject(c, 400, "bad_request", "malformed chunked request body");
        return false;
    }
    if (e == HPE_PAUSED) {
        dispatch(c);
        return true;
    }
    if (used == 0) {
        reject_parse(c, e);
        return false;
    }
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
    free(c->bbuf);
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

    s->st.conns_total++;
    uv_tcp_nodelay(&c->tcp, 1); /* fails harmlessly on the fuzzer's socketpair */
    if (lim->max_conns && s->st.conns_open >= lim->max_conns) {
        s->st.conns_refused++;
        llmc__http_conn_reject(c, 503, "server_busy", "too many open connections; try again later");
        return;
    }
    c->counted = true;
    s->st.conns_open++;
    timer_set(c, lim->idle_timeout_ms);
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
        c->s->st.conns_open--;
    }
    if (c->phase == LLMC_PH_HANDLER || c->phase == LLMC_PH_STREAM)
        req_abort(c);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}
