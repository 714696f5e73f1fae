/*
 * gateway/respond.c: answers built from an entry or from a finished flight,
 * with the cache headers every answer carries:
 *   X-Cache        HIT | MISS | BYPASS | COALESCED | STALE
 *   Cache-Status   RFC 9211, e.g. "llmcached; hit; ttl=42"
 *   Age            on answers from the cache
 *   Cache-Control  the real freshness left, public or private by scope
 *   ETag           strong, from the stored body
 *   X-Cache-Key    the key in hex
 *
 * The body of a hit is the stored upstream body, byte for byte, written
 * from the entry itself: the entry's reference is dropped only when the
 * write is done, so eviction in the meantime cannot free it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/gw_int.h"
#include "llmc/error.h"

#define HDR_CAP 2048

static void release_entry(void *arg)
{
    llmc_entry_unref(arg);
}

static void release_flight(void *arg)
{
    llmc_flight_unref(arg);
}

/* Appends printf-style text to a header buffer; never overflows. */
static size_t hadd(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static size_t hadd(char *buf, size_t len, const char *fmt, ...)
{
    if (len >= HDR_CAP)
        return len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + len, HDR_CAP - len, fmt, ap);
    va_end(ap);
    return n < 0 ? len : len + (size_t)n >= HDR_CAP ? HDR_CAP - 1 : len + (size_t)n;
}

/* Cache-Control and ETag for an answer that the cache holds (e), or
   no-store when it does not. */
static size_t freshness_hdrs(gw_req_t *gr, char *h, size_t n, const llmc_entry_t *e, int64_t now)
{
    if (!e)
        return hadd(h, n, "Cache-Control: no-store\r\n");
    n = hadd(h, n, "Cache-Control: %s, max-age=%lld\r\n",
             (e->flags & LLMC_ENTRY_PRIVATE) ? "private" : "public",
             (long long)llmc_entry_ttl_left(e, now));
    return hadd(h, n, "ETag: %s\r\n", e->etag);
}

static size_t cache_hdrs(gw_req_t *gr, char *h, size_t n, const char *xcache, const char *status)
{
    n = hadd(h, n, "X-Cache: %s\r\nCache-Status: %s\r\n", xcache, status);
    if (gr->keyhex[0])
        n = hadd(h, n, "X-Cache-Key: %s\r\n", gr->keyhex);
    return n;
}

/* True when If-None-Match names the entry's ETag (or is "*"). */
static bool etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return false;
    size_t elen = strlen(etag);
    for (const char *p = inm; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return true;
        if (p[0] == 'W' && p[1] == '/')
            p += 2; /* weak comparison, as RFC 9110 asks for If-None-Match */
        if (strncmp(p, etag, elen) == 0 && (p[elen] == ',' || p[elen] == ' ' || !p[elen]))
            return true;
        while (*p && *p != ',')
            p++;
    }
    return false;
}

/* The text an /ask answer carries: choices[0].message.content. */
static json_t *ask_answer(const char *body, size_t len)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *content = json_object_get(
        json_object_get(json_array_get(json_object_get(root, "choices"), 0), "message"),
        "content");
    json_t *out = json_is_string(content) ? json_incref(content) : json_null();
    json_decref(root);
    return out;
}

static void respond_ask(gw_req_t *gr, int status, const char *h, size_t n, const char *body,
                        size_t len, bool from_cache)
{
    json_t *o = json_pack("{s:o, s:s}", "answer", ask_answer(body, len), "source",
                          from_cache ? "cache" : "llm");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    llmc_http_respond_copy(gr->req, status, h, n, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
}

void llmc__gw_respond_entry(gw_req_t *gr, llmc_entry_t *e, const char *xcache,
                            const char *cache_status, int64_t now)
{
    char h[HDR_CAP], cs[160];
    bool stale = now >= e->expires_ms;
    gr->xcache = xcache;
    if (stale)
        LLMC_COUNT(&gr->w->ctr, stale);
    else
        LLMC_COUNT(&gr->w->ctr, hits);
    if (!cache_status) {
        long long ttl = stale ? -(long long)((now - e->expires_ms + 999) / 1000)
                              : (long long)llmc_entry_ttl_left(e, now);
        bool slow = gr->tier && strcmp(gr->tier, "memory") != 0;
        snprintf(cs, sizeof(cs), "llmcached; hit; ttl=%lld%s%s", ttl, slow ? "; detail=" : "",
                 slow ? gr->tier : "");
        cache_status = cs;
    }
    size_t n = hadd(h, 0, "Content-Type: %s\r\n", gr->route == R_ASK ? "application/json"
                                                                    : e->content_type);
    n = cache_hdrs(gr, h, n, xcache, cache_status);
    n = hadd(h, n, "Age: %lld\r\n", (long long)llmc_entry_age(e, now));
    n = freshness_hdrs(gr, h, n, e, now);
    if (etag_matches(llmc_http_header(gr->req, "if-none-match"), e->etag)) {
        LLMC_COUNT(&gr->w->ctr, not_modified);
        llmc_http_respond(gr->req, 304, h, n, NULL, 0, NULL, NULL);
        return;
    }
    if (gr->route == R_ASK) {
        respond_ask(gr, e->status, h, n, e->body, e->body_len, true);
        return;
    }
    uv_buf_t buf = uv_buf_init((char *)e->body, (unsigned)e->body_len);
    llmc_http_respond(gr->req, e->status, h, n, &buf, 1, release_entry, llmc_entry_ref(e));
}

void llmc__gw_error(gw_req_t *gr, int status, const char *type, const char *code,
                    const char *msg)
{
    char h[HDR_CAP];
    size_t n = 0;
    if (gr->xcache)
        n = cache_hdrs(gr, h, n, gr->xcache,
                       strcmp(gr->xcache, "BYPASS") == 0 ? "llmcached; fwd=bypass"
                                                          : "llmcached; fwd=uri-miss");
    n = hadd(h, n, "Cache-Control: no-store\r\n");
    llmc_http_respond_error(gr->req, status, h, type, code, msg);
}

/* Upstream failure: a stale entry within --stale-if-error wins over an error. */
static bool try_stale(gw_req_t *gr)
{
    if (!gr->stale)
        return false;
    int64_t now = llmc_now_ms();
    if (now - gr->stale->expires_ms > gr->w->gw->cfg->stale_if_error)
        return false;
    llmc__gw_respond_entry(gr, gr->stale, "STALE", "llmcached; fwd=stale", now);
    return true;
}

static void respond_failure(gw_req_t *gr, llmc_flight_t *f)
{
    if (try_stale(gr))
        return;
    int status = f->err == LLMC_ETIMEDOUT ? 504 : 502;
    char msg[400];
    if (f->err)
        snprintf(msg, sizeof(msg), "%s: %s", llmc_strerror(f->err), f->errmsg);
    else
        snprintf(msg, sizeof(msg), "the upstream answered status %d with a body that is not "
                 "valid JSON", f->status);
    llmc__gw_error(gr, status, "upstream_error",
                   f->err == LLMC_ETIMEDOUT ? "upstream_timeout"
                   : f->err ? "upstream_unavailable" : "upstream_invalid_response", msg);
}

static const char *miss_status(gw_req_t *gr, const llmc_flight_t *f)
{
    if (!strcmp(gr->xcache, "COALESCED"))
        return "llmcached; fwd=miss; collapsed";
    if (!strcmp(gr->xcache, "BYPASS"))
        return "llmcached; fwd=bypass";
    if (!gr->policy.read)
        return f->entry ? "llmcached; fwd=request; stored" : "llmcached; fwd=request";
    return f->entry ? "llmcached; fwd=uri-miss; stored" : "llmcached; fwd=uri-miss";
}

void llmc__gw_respond_flight(gw_req_t *gr)
{
    llmc_flight_t *f = gr->flight;
    /* A finished flight never changes again, so it can be read unlocked. */
    if (f->err || f->invalid) {
        respond_failure(gr, f);
        llmc__gw_leave_flight(gr);
        return;
    }
    if (f->status >= 500 && try_stale(gr)) {
        llmc__gw_leave_flight(gr);
        return;
    }
    char h[HDR_CAP];
    int64_t now = llmc_now_ms();
    const char *ctype = f->content_type[0] ? f->content_type : "application/json";
    size_t n = hadd(h, 0, "Content-Type: %s\r\n", gr->route == R_ASK ? "application/json" : ctype);
    n = cache_hdrs(gr, h, n, gr->xcache, miss_status(gr, f));
    n = freshness_hdrs(gr, h, n, f->entry, now);
    if (f->pass_len && n + f->pass_len < HDR_CAP) {
        memcpy(h + n, f->pass_hdrs, f->pass_len);
        n += f->pass_len;
    }
    if (gr->route == R_ASK && f->status / 100 == 2) {
        respond_ask(gr, f->status, h, n, f->body ? f->body : "", f->body_len, false);
        llmc__gw_leave_flight(gr);
        return;
    }
    uv_buf_t buf = uv_buf_init(f->body ? f->body : (char *)"", (unsigned)f->body_len);
    llmc_flight_ref(f);
    llmc_http_respond(gr->req, f->status, h, n, &buf, 1, release_flight, f);
    llmc__gw_leave_flight(gr);
}

/* Relays what the flight has that this client has not seen yet. Any server
   call may end the request (a failed write): gr->req is checked after each. */
void llmc__gw_stream_step(gw_req_t *gr)
{
    llmc_flight_t *f = gr->flight;
    pthread_mutex_lock(&f->mu);
    bool done = f->done, failed = f->err != 0;
    int status = f->status;
    bool relay = f->head_known && status / 100 == 2;
    size_t len = relay && f->body_len > gr->sent ? f->body_len - gr->sent : 0;
    char *chunk = len ? malloc(len) : NULL;
    if (chunk)
        memcpy(chunk, f->body + gr->sent, len);
    pthread_mutex_unlock(&f->mu);

    if (!gr->started && relay && !(done && failed && !len)) {
        char h[HDR_CAP];
        size_t n = hadd(h, 0, "Content-Type: %s\r\n",
                        f->content_type[0] ? f->content_type : "text/event-stream");
        n = cache_hdrs(gr, h, n, gr->xcache, "llmcached; fwd=bypass");
        n = hadd(h, n, "Cache-Control: no-store\r\n");
        if (f->pass_len && n + f->pass_len < HDR_CAP) {
            memcpy(h + n, f->pass_hdrs, f->pass_len);
            n += f->pass_len;
        }
        gr->started = llmc_http_stream_begin(gr->req, status, h, n) == 0;
    }
    if (gr->started && chunk && gr->req)
        llmc_http_stream_write(gr->req, chunk, len);
    gr->sent += len;
    free(chunk);
    if (!done || !gr->req)
        return;
    if (!gr->started) {
        llmc__gw_respond_flight(gr); /* not a stream after all: an error answer */
        return;
    }
    llmc_http_req_t *req = gr->req;
    llmc__gw_leave_flight(gr);
    if (failed)
        llmc_http_abort(req); /* cut off upstream: the client must see it cut off too */
    else
        llmc_http_stream_end(req);
}
