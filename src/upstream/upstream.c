/*
 * upstream/upstream.c: the model-API client, libcurl's multi interface driven
 * by libuv (one uv_poll per socket curl asks us to watch, one uv_timer for
 * curl's timeout), in the manner of curl's multi-uv.c example.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - libcurl refuses multi calls (add, remove, cleanup) made from inside its
 *   own callbacks, and the user's on_head/on_data run inside curl's write
 *   callback. So while curl is running (u->in_curl) a cancel only marks the
 *   call and queues it on u->dead, a start queues on u->pending, and a close
 *   is remembered; drive() settles all three as soon as curl returns.
 * - Callbacks never run inside llmc_upstream_start: adding a handle only makes
 *   curl arm our timer (often with 0 ms), and curl does its work when that
 *   timer fires on a later turn of the loop.
 * - A pause asked for inside a callback is applied by curl_easy_pause only
 *   once curl returns (as a cancel is), but the next write callback of the
 *   paused call already answers CURL_WRITEFUNC_PAUSE: curl keeps those
 *   bytes and stops reading, so not one more byte reaches on_data. Without
 *   that, curl reads on for up to a hundred buffers in one run.
 * - on_done runs after the easy handle has left the multi handle, so it may
 *   start, cancel or close anything; the call itself is freed after on_done
 *   returns and must not be used after it.
 * - The response head is reported once: on the first body bytes, or at the end
 *   when the answer had no body. Header blocks of 1xx answers are dropped by
 *   resetting the collected headers on every status line.
 * - Memory that holds a libuv handle (the client, each socket context) is
 *   freed only in the handle's close callback.
 * - curl's "run me again at once" (a 0 ms timeout, asked for while a call
 *   still has bytes to read) is an idle handle, not a 0 ms timer: libuv
 *   1.44 runs a timer re-armed at 0 ms from its own callback again in the
 *   same pass, before any I/O, so a body arriving faster than it was taken
 *   (a local model's 50 MB answer) held every other client of the loop
 *   until it ended. An idle callback runs once per turn, after the poll.
 */
#include "upstream/upstream.h"

#include <curl/curl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llmc/error.h"

/* Response headers beyond this many bytes are not passed on: an upstream
   should not be able to make us hold unbounded header text per call. */
#define PASS_MAX 16384

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    llmc_upstream_t *u;
    struct sock_ctx *prev, *next;
} sock_ctx_t;

struct llmc_upstream_call {
    llmc_upstream_t *u;
    CURL *easy;
    struct curl_slist *hdrs;
    llmc_upstream_handler_t h;
    void *arg;
    char *body;                 /* the request body, sent by on_read */
    size_t body_len, body_off;
    bool allow_resend;
    bool drop_account_hdrs;     /* see pass_table */
    char *pass;                 /* pass-through header lines */
    size_t pass_len, pass_cap;
    bool added;                 /* the easy handle is in the multi handle */
    bool paused;                /* reading the answer is paused (llmc_upstream_pause) */
    bool pause_dirty;           /* paused changed while curl ran: drive() applies it */
    bool head_sent;
    bool canceled;
    bool finishing;             /* on_head/on_done of the end are running */
    llmc_upstream_call_t *prev, *next;  /* u->calls: every live call */
    llmc_upstream_call_t *qnext;        /* u->pending or u->dead */
    char errbuf[CURL_ERROR_SIZE];
};

struct llmc_upstream {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    uv_idle_t kick;             /* curl's 0 ms timeout: run on the next turn */
    llmc_upstream_config_t cfg;
    llmc_upstream_call_t *calls;
    llmc_upstream_call_t *pending, *pending_tail; /* started while curl ran */
    llmc_upstream_call_t *dead;                   /* canceled while curl ran */
    sock_ctx_t *socks;
    unsigned active;
    unsigned open_handles;      /* timer, kick and polls not yet closed */
    bool in_curl;
    bool pause_dirty;           /* some call's pause waits for curl to return */
    bool closing;               /* llmc_upstream_close was called */
    bool shut;                  /* the close has been carried out */
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* Response headers handed to the client: exact names, or prefixes; the
   first row that matches decides. account: the header tells about the
   account whose key made the call (its organisation, quota, request ids,
   timings), and is dropped when the caller asks (drop_account_hdrs: the
   key was not the client's own, or answers are shared between clients). */
static const struct {
    const char *name;
    bool prefix;
    bool account;
} pass_table[] = {
    {"retry-after", false, false},
    {"retry-after-ms", false, false},
    {"openai-version", false, false},
    {"x-request-id", false, true},
    {"request-id", false, true},
    {"openai-", true, true},          /* -organization, -project, -processing-ms, ... */
    {"x-ratelimit-", true, true},
    {"anthropic-ratelimit-", true, true},
};

/* CURLcodes that are not a plain LLMC_EUPSTREAM. */
static const struct {
    CURLcode cc;
    int err;
} err_table[] = {
    {CURLE_BAD_CONTENT_ENCODING, LLMC_EBADRESP},
    {CURLE_COULDNT_CONNECT, LLMC_ECONNECT},
    {CURLE_COULDNT_RESOLVE_HOST, LLMC_ECONNECT},
    {CURLE_COULDNT_RESOLVE_PROXY, LLMC_ECONNECT},
    {CURLE_SSL_CONNECT_ERROR, LLMC_ECONNECT},
    {CURLE_PEER_FAILED_VERIFICATION, LLMC_ECONNECT},
    {CURLE_OPERATION_TIMEDOUT, LLMC_ETIMEDOUT},
};

static void drive(llmc_upstream_t *u, curl_socket_t fd, int ev_bitmask);
static void shutdown_client(llmc_upstream_t *u);

int llmc_upstream_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : LLMC_EIO;
}

void llmc_upstream_global_cleanup(void)
{
    curl_global_cleanup();
}

void llmc_upstream_url_redact(const char *url, char *out, size_t outlen)
{
    const char *scheme = strstr(url, "://");
    const char *start = scheme ? scheme + 3 : url;
    size_t auth_len = strcspn(start, "?#");
    const char *at = NULL;
    for (const char *p = start; p < start + auth_len; p++)
        if (*p == '@')
            at = p;
    if (outlen == 0)
        return;
    if (!at)
        snprintf(out, outlen, "%s", url);
    else
        snprintf(out, outlen, "%.*s***%s", (int)(start - url), url, at);
}

static int map_error(CURLcode cc)
{
    if (cc == CURLE_OK)
        return 0;
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
        if (err_table[i].cc == cc)
            return err_table[i].err;
    return LLMC_EUPSTREAM;
}

/* ---- live-call bookkeeping ---------------------------------------------- */

static void link_call(llmc_upstream_t *u, llmc_upstream_call_t *c)
{
    c->prev = NULL;
    c->next = u->calls;
    if (u->calls)
        u->calls->prev = c;
    u->calls = c;
    u->active++;
}

static void unlink_call(llmc_upstream_t *u, llmc_upstream_call_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        u->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    u->active--;
}

static void free_call(llmc_upstream_call_t *c)
{
    if (c->added)
        curl_multi_remove_handle(c->u->multi, c->easy);
    if (c->easy)
        curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->hdrs);
    free(c->pass);
    free(c->body);
    free(c);
}

/* ---- the head: status, content type, pass-through headers --------------- */

static bool wanted_header(const llmc_upstream_call_t *c, const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(pass_table) / sizeof(pass_table[0]); i++) {
        size_t n = strlen(pass_table[i].name);
        if (pass_table[i].prefix ? (len > n && strncasecmp(name, pass_table[i].name, n) == 0)
                                 : (len == n && strncasecmp(name, pass_table[i].name, n) == 0))
            return !(pass_table[i].account && c->drop_account_hdrs);
    }
    return false;
}

static int pass_append(llmc_upstream_call_t *c, const char *line, size_t len)
{
    if (c->pass_len + len > PASS_MAX)
        return 0;   /* dropped on purpose, see PASS_MAX */
    if (c->pass_len + len > c->pass_cap) {
        size_t cap = c->pass_cap ? c->pass_cap * 2 : 256;
        while (cap < c->pass_len + len)
            cap *= 2;
        char *p = realloc(c->pass, cap);
        if (!p)
            return LLMC_ENOMEM;
        c->pass = p;
        c->pass_cap = cap;
    }
    memcpy(c->pass + c->pass_len, line, len);
    c->pass_len += len;
    return 0;
}

/* No callback may run for a canceled call, nor for any call once the
   client is closing (a close from inside a callback takes effect only when
   curl returns). */
static bool stopped(const llmc_upstream_call_t *c)
{
    return c->canceled || c->u->closing;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    llmc_upstream_call_t *c = ud;
    size_t len = size * n;

    if (stopped(c))
        return 0;
    if (c->head_sent)
        return len;   /* trailers: the head is already out */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        c->pass_len = 0;   /* a new header block (after 1xx) replaces the last */
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon || !wanted_header(c, p, (size_t)(colon - p)))
        return len;
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t nlen = (size_t)(colon - p), vlen = (size_t)(end - v);
    char line[1024];
    if (nlen + vlen + 4 > sizeof(line))
        return len;   /* an absurd header is not worth passing on */
    memcpy(line, p, nlen);
    memcpy(line + nlen, ": ", 2);
    memcpy(line + nlen + 2, v, vlen);
    memcpy(line + nlen + 2 + vlen, "\r\n", 2);
    return pass_append(c, line, nlen + vlen + 4) == 0 ? len : 0;
}

static void send_head(llmc_upstream_call_t *c)
{
    long status = 0;
    char *ct = NULL;

    c->head_sent = true;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ct);
    if (c->h.on_head)
        c->h.on_head(c->arg, (int)status, ct ? ct : "", c->pass ? c->pass : "", c->pass_len);
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    llmc_upstream_call_t *c = ud;
    size_t len = size * n;

    /* Returning less than len makes curl fail the transfer, which is how a
       call canceled from inside a callback stops reading at once. */
    if (stopped(c))
        return 0;
    if (!c->head_sent) {
        send_head(c);
        if (stopped(c))
            return 0;
    }
    /* Paused since curl last called us (curl_easy_pause waits until curl
       returns): curl keeps these bytes, reads no more, and hands them back
       on the resume. */
    if (c->paused && len)
        return CURL_WRITEFUNC_PAUSE;
    if (len && c->h.on_data)
        c->h.on_data(c->arg, p, len);
    return stopped(c) ? 0 : len;
}

/* ---- finishing ------------------------------------------------------------ */

/*
 * curl reports the connect timeout as CURLE_OPERATION_TIMEDOUT, like the
 * whole call's. A call that timed out before any byte of its request went
 * out, and before the whole call's time was up, failed to connect: that is
 * LLMC_ECONNECT, which the gateway may retry since the upstream saw nothing.
 */
static int call_error(llmc_upstream_call_t *c, CURLcode cc)
{
    int err = map_error(cc);
    long sent = 1;
    curl_off_t took = 0;
    uint64_t total_ms = c->u->cfg.total_timeout_ms;

    if (err != LLMC_ETIMEDOUT || c->body_off > 0 ||
        curl_easy_getinfo(c->easy, CURLINFO_REQUEST_SIZE, &sent) != CURLE_OK || sent != 0 ||
        curl_easy_getinfo(c->easy, CURLINFO_TOTAL_TIME_T, &took) != CURLE_OK)
        return err;
    return total_ms == 0 || (uint64_t)took < total_ms * 1000 ? LLMC_ECONNECT : err;
}

static void finish_call(llmc_upstream_call_t *c, CURLcode cc)
{
    llmc_upstream_t *u = c->u;
    int err = call_error(c, cc);

    curl_multi_remove_handle(u->multi, c->easy);
    c->added = false;
    unlink_call(u, c);
    c->finishing = true;
    if (err == 0 && !c->head_sent)
        send_head(c);
    if (!stopped(c)) {
        const char *detail = c->errbuf[0] ? c->errbuf : curl_easy_strerror(cc);
        c->h.on_done(c->arg, err, err ? detail : "");
    }
    free_call(c);
}

static void check_done(llmc_upstream_t *u)
{
    CURLMsg *m;
    int left;

    /* A close from inside on_done has cleaned up the multi handle: stop. */
    while (!u->closing && (m = curl_multi_info_read(u->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        llmc_upstream_call_t *c = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        finish_call(c, m->data.result);
    }
}

static void reap_dead(llmc_upstream_t *u)
{
    while (u->dead) {
        llmc_upstream_call_t *c = u->dead;
        u->dead = c->qnext;
        free_call(c);
    }
}

static void fail_now(llmc_upstream_call_t *c, int err, const char *detail)
{
    /* Only for a deferred start that curl refused: report it like any end. */
    c->finishing = true;
    unlink_call(c->u, c);
    c->h.on_done(c->arg, err, detail);
    free_call(c);
}

static void add_pending(llmc_upstream_t *u)
{
    while (u->pending && !u->closing) {
        llmc_upstream_call_t *c = u->pending;
        u->pending = c->qnext;
        if (c->canceled) {
            free_call(c);
            continue;
        }
        CURLMcode mc = curl_multi_add_handle(u->multi, c->easy);
        if (mc != CURLM_OK) {
            fail_now(c, mc == CURLM_OUT_OF_MEMORY ? LLMC_ENOMEM : LLMC_EUPSTREAM,
                     curl_multi_strerror(mc));
            continue;
        }
        c->added = true;
    }
    if (!u->pending)
        u->pending_tail = NULL;
}

/* Pauses or resumes reading c's answer as c->paused says. Resuming may
   deliver bytes curl held (the write callback runs inside), so it counts
   as running curl. */
static void apply_pause(llmc_upstream_call_t *c)
{
    llmc_upstream_t *u = c->u;
    c->pause_dirty = false;
    u->in_curl = true;
    curl_easy_pause(c->easy, c->paused ? CURLPAUSE_RECV : CURLPAUSE_CONT);
    u->in_curl = false;
}

/* What had to wait until curl returned: frees, closes, adds, pauses, and
   the calls that ended. */
static void after_curl(llmc_upstream_t *u)
{
    reap_dead(u);
    if (u->closing) {
        shutdown_client(u);
        return;
    }
    add_pending(u);
    while (u->pause_dirty) {
        u->pause_dirty = false;
        llmc_upstream_call_t *c = u->calls;
        while (c) {
            if (!c->pause_dirty || !c->added || c->canceled) {
                c = c->next;
                continue;
            }
            /* Bytes held may run callbacks that cancel or pause calls:
               the list is walked again from its head. */
            apply_pause(c);
            reap_dead(u);
            if (u->closing) {
                shutdown_client(u);
                return;
            }
            c = u->calls;
        }
    }
    check_done(u);
}

/* Runs curl, then does what had to wait until curl returned. */
static void drive(llmc_upstream_t *u, curl_socket_t fd, int ev_bitmask)
{
    int running;

    u->in_curl = true;
    curl_multi_socket_action(u->multi, fd, ev_bitmask, &running);
    u->in_curl = false;
    after_curl(u);
}

/* ---- libuv side of the multi handle -------------------------------------- */

static void maybe_free_client(llmc_upstream_t *u)
{
    if (u->open_handles > 0 || !u->shut)
        return;
    void (*cb)(void *) = u->close_cb;
    void *arg = u->close_arg;
    free(u);
    if (cb)
        cb(arg);
}

static void on_sock_closed(uv_handle_t *h)
{
    sock_ctx_t *s = h->data;
    llmc_upstream_t *u = s->u;
    free(s);
    u->open_handles--;
    maybe_free_client(u);
}

/* The timer's or the kick's close (their data is the client). */
static void on_own_closed(uv_handle_t *h)
{
    llmc_upstream_t *u = h->data;
    u->open_handles--;
    maybe_free_client(u);
}

static void sock_close(sock_ctx_t *s)
{
    llmc_upstream_t *u = s->u;
    if (s->prev)
        s->prev->next = s->next;
    else
        u->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    sock_ctx_t *s = h->data;
    int flags = 0;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    drive(s->u, s->fd, flags);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    llmc_upstream_t *u = userp;
    sock_ctx_t *s = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(u->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (u->shut)
        return 0;
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        if (uv_poll_init_socket(u->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        s->fd = fd;
        s->u = u;
        s->next = u->socks;
        if (u->socks)
            u->socks->prev = s;
        u->socks = s;
        u->open_handles++;
        curl_multi_assign(u->multi, fd, s);
    }
    int ev = ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    drive(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static void on_kick(uv_idle_t *h)
{
    uv_idle_stop(h);
    drive(h->data, CURL_SOCKET_TIMEOUT, 0);
}

/* curl's one timeout: none (< 0), at once (0: the next turn of the loop,
   after its I/O; see the top of this file) or in timeout_ms. */
static int on_timer_set(CURLM *m, long timeout_ms, void *userp)
{
    llmc_upstream_t *u = userp;

    if (u->shut)
        return 0;
    uv_timer_stop(&u->timer);
    uv_idle_stop(&u->kick);
    if (timeout_ms == 0)
        uv_idle_start(&u->kick, on_kick);
    else if (timeout_ms > 0)
        uv_timer_start(&u->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- public API ------------------------------------------------------------ */

llmc_upstream_t *llmc_upstream_new(uv_loop_t *loop, const llmc_upstream_config_t *cfg)
{
    llmc_upstream_t *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->loop = loop;
    if (cfg)
        u->cfg = *cfg;
    u->multi = curl_multi_init();
    if (!u->multi)
        goto fail;
    if (curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK ||
        curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u) != CURLM_OK ||
        curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, on_timer_set) != CURLM_OK ||
        curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u) != CURLM_OK)
        goto fail;
    if (u->cfg.max_host_conns > 0 &&
        curl_multi_setopt(u->multi, CURLMOPT_MAX_HOST_CONNECTIONS, u->cfg.max_host_conns) != CURLM_OK)
        goto fail;
    if (u->cfg.max_total_conns > 0 &&
        curl_multi_setopt(u->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, u->cfg.max_total_conns) != CURLM_OK)
        goto fail;
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    uv_idle_init(loop, &u->kick);
    u->kick.data = u;
    u->open_handles = 2;
    return u;
fail:
    if (u->multi)
        curl_multi_cleanup(u->multi);
    free(u);
    return NULL;
}

static long ms_to_long(uint64_t ms)
{
    return ms > (uint64_t)LONG_MAX ? LONG_MAX : (long)ms;
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || *s == '-' || *s == '_'))
            return false;
    return true;
}

static int build_headers(llmc_upstream_call_t *c, const llmc_upstream_request_t *r)
{
    bool has_ctype = false;
    struct curl_slist *l;

    for (size_t i = 0; i < r->nheaders; i++) {
        const char *h = r->headers[i];
        if (!h || strpbrk(h, "\r\n"))
            return LLMC_EINVAL;   /* a line break would inject headers */
        if (strncasecmp(h, "content-type:", 13) == 0)
            has_ctype = true;
        if (!(l = curl_slist_append(c->hdrs, h)))
            return LLMC_ENOMEM;
        c->hdrs = l;
    }
    /* curl would add "Expect: 100-continue" to large bodies (one more round
       trip) and a form Content-Type to bodies that name none; every body we
       send is JSON. */
    if (!(l = curl_slist_append(c->hdrs, "Expect:")))
        return LLMC_ENOMEM;
    c->hdrs = l;
    if (r->body && !has_ctype) {
        if (!(l = curl_slist_append(c->hdrs, "Content-Type: application/json")))
            return LLMC_ENOMEM;
        c->hdrs = l;
    }
    return 0;
}

#define SETOPT(opt, val)                                                  \
    do {                                                                  \
        CURLcode cc_ = curl_easy_setopt(e, opt, val);                     \
        if (cc_ != CURLE_OK)                                              \
            return cc_ == CURLE_OUT_OF_MEMORY ? LLMC_ENOMEM : LLMC_EINVAL; \
    } while (0)

/* The body goes out through a read callback rather than POSTFIELDS for one
   reason: libcurl re-sends a request when a reused connection dies before
   any answer byte, also after the whole POST went out. Sending the body
   again needs a rewind, which on_seek refuses once bytes were read, unless
   the operator allowed it: a request the model may have run is never sent
   twice behind its back. */
static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    llmc_upstream_call_t *c = arg;
    size_t want = size * n, left = c->body_len - c->body_off;
    size_t take = want < left ? want : left;
    memcpy(buf, c->body + c->body_off, take);
    c->body_off += take;
    return take;
}

static int on_seek(void *arg, curl_off_t offset, int origin)
{
    llmc_upstream_call_t *c = arg;
    if (origin != SEEK_SET || offset != 0)
        return CURL_SEEKFUNC_CANTSEEK;
    if (c->body_off > 0 && !c->allow_resend)
        return CURL_SEEKFUNC_FAIL;
    c->body_off = 0;
    return CURL_SEEKFUNC_OK;
}

static int set_method(llmc_upstream_call_t *c, const llmc_upstream_request_t *r)
{
    CURL *e = c->easy;
    bool post = strcmp(r->method, "POST") == 0;

    if (r->body || post) {
        c->body_len = r->body ? r->body_len : 0;
        c->allow_resend = r->allow_resend;
        if (c->body_len && !(c->body = malloc(c->body_len)))
            return LLMC_ENOMEM;
        if (c->body_len)
            memcpy(c->body, r->body, c->body_len);
        SETOPT(CURLOPT_POST, 1L);
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
        SETOPT(CURLOPT_READFUNCTION, on_read);
        SETOPT(CURLOPT_READDATA, c);
        SETOPT(CURLOPT_SEEKFUNCTION, on_seek);
        SETOPT(CURLOPT_SEEKDATA, c);
        if (!post)
            SETOPT(CURLOPT_CUSTOMREQUEST, r->method);
    } else if (strcmp(r->method, "GET") == 0) {
        SETOPT(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(r->method, "HEAD") == 0) {
        SETOPT(CURLOPT_NOBODY, 1L);
    } else {
        SETOPT(CURLOPT_CUSTOMREQUEST, r->method);
    }
    return 0;
}

static int setup_easy(llmc_upstream_call_t *c, const llmc_upstream_request_t *r)
{
    CURL *e = c->easy;
    const llmc_upstream_config_t *cfg = &c->u->cfg;
    int rc;

    c->drop_account_hdrs = r->drop_account_hdrs;
    if ((rc = build_headers(c, r)) != 0 || (rc = set_method(c, r)) != 0)
        return rc;
    SETOPT(CURLOPT_PRIVATE, (char *)c);
    SETOPT(CURLOPT_URL, r->url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_HTTPHEADER, c->hdrs);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, ms_to_long(cfg->connect_timeout_ms));
    SETOPT(CURLOPT_TIMEOUT_MS, ms_to_long(cfg->total_timeout_ms));
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_TCP_NODELAY, 1L);
    /* "": every coding this libcurl decodes (gzip, deflate, br, zstd on
       Debian 12), decoded as the bytes arrive, so an answer costs the
       model's network less and the gateway relays, checks and stores the
       decoded bytes (--max-response-bytes counts those). Content-Encoding is
       not in pass_table: no client ever sees the upstream's coding. */
    SETOPT(CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SETOPT(CURLOPT_ERRORBUFFER, c->errbuf);
    /* Thousands of calls wait on a slow model at once: curl's default
       buffers (16 KiB down, 64 KiB up per call) would be most of the memory
       they hold. Bodies are small, answers arrive at the model's pace. */
    SETOPT(CURLOPT_BUFFERSIZE, 8192L);
    SETOPT(CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, c);
    SETOPT(CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(CURLOPT_WRITEDATA, c);
    return 0;
}

#undef SETOPT

int llmc_upstream_start(llmc_upstream_t *u, const llmc_upstream_request_t *r,
                        const llmc_upstream_handler_t *h, void *arg,
                        llmc_upstream_call_t **out)
{
    llmc_upstream_call_t *c = NULL;
    int rc = LLMC_EINVAL;

    if (out)
        *out = NULL;
    if (!u || !r || !r->url || !r->method || !is_token(r->method) || !h || !h->on_done ||
        (r->nheaders && !r->headers) || u->closing)
        return LLMC_EINVAL;
    if (!(c = calloc(1, sizeof(*c))))
        return LLMC_ENOMEM;
    c->u = u;
    c->h = *h;
    c->arg = arg;
    rc = LLMC_ENOMEM;
    if (!(c->easy = curl_easy_init()))
        goto fail;
    if ((rc = setup_easy(c, r)) != 0)
        goto fail;
    if (u->in_curl) {
        /* curl forbids adding from inside its callbacks: drive() adds it. */
        if (u->pending_tail)
            u->pending_tail->qnext = c;
        else
            u->pending = c;
        u->pending_tail = c;
    } else {
        CURLMcode mc = curl_multi_add_handle(u->multi, c->easy);
        if (mc != CURLM_OK) {
            rc = mc == CURLM_OUT_OF_MEMORY ? LLMC_ENOMEM : LLMC_EINVAL;
            goto fail;
        }
        c->added = true;
    }
    link_call(u, c);
    if (out)
        *out = c;
    return 0;
fail:
    free_call(c);
    return rc;
}

void llmc_upstream_cancel(llmc_upstream_call_t *c)
{
    if (!c || c->canceled)
        return;
    c->canceled = true;
    if (c->finishing)
        return;   /* finish_call frees it after on_head returns */
    llmc_upstream_t *u = c->u;
    unlink_call(u, c);
    if (u->in_curl) {
        /* A pending call is freed when the pending queue is drained. */
        if (c->added) {
            c->qnext = u->dead;
            u->dead = c;
        }
        return;
    }
    free_call(c);
}

/* Cancels everything, releases curl, and closes the libuv handles; the client
   is freed by the last close callback. Never runs while curl runs. */
static void shutdown_client(llmc_upstream_t *u)
{
    if (u->shut)
        return;
    u->shut = true;
    reap_dead(u);
    while (u->pending) {
        llmc_upstream_call_t *c = u->pending;
        u->pending = c->qnext;
        if (!c->canceled)
            unlink_call(u, c);
        free_call(c);
    }
    u->pending_tail = NULL;
    while (u->calls) {
        llmc_upstream_call_t *c = u->calls;
        c->canceled = true;
        unlink_call(u, c);
        free_call(c);
    }
    curl_multi_cleanup(u->multi);   /* may report sockets to remove */
    u->multi = NULL;
    while (u->socks)
        sock_close(u->socks);
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, on_own_closed);
    uv_idle_stop(&u->kick);
    uv_close((uv_handle_t *)&u->kick, on_own_closed);
}

void llmc_upstream_close(llmc_upstream_t *u, void (*cb)(void *arg), void *arg)
{
    if (!u || u->closing)
        return;
    u->closing = true;
    u->close_cb = cb;
    u->close_arg = arg;
    if (!u->in_curl)
        shutdown_client(u);
}

void llmc_upstream_pause(llmc_upstream_call_t *c, bool pause)
{
    if (!c || c->canceled || c->finishing || c->paused == pause)
        return;
    llmc_upstream_t *u = c->u;
    c->paused = pause;
    c->pause_dirty = true;
    if (u->in_curl || !c->added) {
        u->pause_dirty = true; /* applied when curl returns, or once added */
        return;
    }
    apply_pause(c);
    after_curl(u);
}

unsigned llmc_upstream_active(const llmc_upstream_t *u)
{
    return u ? u->active : 0;
}
