/*
 * gateway/respond.c: answers built from an entry or from a finished flight,
 * with the cache headers every answer carries:
 *   X-Cache        HIT | SEMANTIC-HIT | MISS | BYPASS | COALESCED | STALE
 *   Cache-Status   RFC 9211, e.g. "llmcached; hit; ttl=42"
 *   Age            on answers from the cache
 *   Cache-Control  max-age = the whole lifetime, public or private by scope
 *   ETag           strong, from the stored body
 *   Vary           X-Cache-Namespace, and Authorization under per-key scope,
 *                  and the client headers forwarded upstream (forward.h)
 *   X-Cache-Key    the key in hex
 *   X-Cache-Denied --client-keys: what the key asked for and may not do
 *                  (refresh, ttl), which was not done
 *   X-Cache-Tokens-Saved  on answers from the cache: "<prompt>+<completion>"
 *                  from the stored usage
 *   X-Cache-Similarity, X-Cache-Matched-Key  on a SEMANTIC-HIT: the cosine of
 *                  the two questions and the key the answer was stored under
 *
 * The body of a hit is the stored upstream body, byte for byte, written
 * from the entry itself: the entry's reference is dropped only when the
 * write is done, so eviction in the meantime cannot free it.
 */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/ask.h"
#include "gateway/clients.h"
#include "gateway/dialect.h"
#include "http/encoding.h"
#include "gateway/gw_int.h"
#include "llmc/error.h"
#include "llmc/sse.h"

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

/* Appenders for the hit path, where printf's parsing costs more than the
   rest of the header building together. */
static size_t hcat(char *h, size_t n, const char *s, size_t len)
{
    if (n + len >= HDR_CAP)
        return n;
    memcpy(h + n, s, len);
    return n + len;
}
#define HLIT(h, n, lit) hcat(h, n, lit, sizeof(lit) - 1)
#define HSTR(h, n, s) hcat(h, n, s, strlen(s))

static size_t hnum(char *h, size_t n, long long v)
{
    char tmp[24];
    int i = sizeof(tmp);
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    return hcat(h, n, tmp + i, sizeof(tmp) - (size_t)i);
}

/* Cache-Control, Vary and (when etag is not NULL) the ETag for an answer
   that the cache holds (e), or no-store when it does not. max-age is the
   entry's whole lifetime and Age (sent with hits) how much of it is gone,
   as an origin server says it: a cache in front of us takes max-age minus
   Age as the freshness left; max-age = the freshness left would have it
   subtract the age twice. */
static size_t freshness_hdrs(char *h, size_t n, const llmc_entry_t *e, const char *etag,
                             bool vary_encoding, const gw_req_t *gr)
{
    if (!e)
        return HLIT(h, n, "Cache-Control: no-store\r\n");
    n = (e->flags & LLMC_ENTRY_PRIVATE) ? HLIT(h, n, "Cache-Control: private, max-age=")
                                        : HLIT(h, n, "Cache-Control: public, max-age=");
    n = hnum(h, n, (long long)llmc_entry_lifetime(e));
    n = HLIT(h, n, "\r\n");
    /* The request headers that chose this answer, for any cache in front of
       us (RFC 9110 12.5.5): the namespace always, and the credential when
       each key has a cache of its own. */
    n = HLIT(h, n, "Vary: ");
    if (vary_encoding) /* the answer may be compressed: Accept-Encoding chose too */
        n = HLIT(h, n, "Accept-Encoding, ");
    const llmc_dialect_t *d = llmc_dialect_of(gr->dialect);
    if (e->flags & LLMC_ENTRY_PRIVATE) {
        n = HSTR(h, n, d->vary_cred);
        n = HLIT(h, n, ", ");
    }
    n = HLIT(h, n, "X-Cache-Namespace");
    n = HSTR(h, n, d->vary_keyed);
    n = HSTR(h, n, gr->w->gw->forward.vary); /* the client headers sent upstream (forward.h) */
    n = HLIT(h, n, "\r\n");
    if (!etag)
        return n;
    n = HLIT(h, n, "ETag: ");
    n = HSTR(h, n, etag);
    return HLIT(h, n, "\r\n");
}

static size_t cache_hdrs(gw_req_t *gr, char *h, size_t n, const char *xcache, const char *status)
{
    n = HLIT(h, n, "X-Cache: ");
    n = HSTR(h, n, xcache);
    n = HLIT(h, n, "\r\nCache-Status: ");
    n = HSTR(h, n, status);
    n = HLIT(h, n, "\r\n");
    if (gr->denied) { /* --client-keys: what this key asked for and may not do */
        static const char *const denied[] = {
            [LLMC_CLIENT_DENIED_REFRESH] = "refresh",
            [LLMC_CLIENT_DENIED_TTL] = "ttl",
            [LLMC_CLIENT_DENIED_REFRESH | LLMC_CLIENT_DENIED_TTL] = "refresh, ttl",
        };
        n = HLIT(h, n, "X-Cache-Denied: ");
        n = HSTR(h, n, denied[gr->denied & 3]);
        n = HLIT(h, n, "\r\n");
    }
    if (gr->keyhex[0]) {
        n = HLIT(h, n, "X-Cache-Key: ");
        n = hcat(h, n, gr->keyhex, 2 * LLMC_KEY_LEN);
        n = HLIT(h, n, "\r\n");
    }
    return n;
}

/* How close the question was to the one e answered, and e's own key (the
   request's key, in X-Cache-Key, is not where the answer is stored). */
static size_t semantic_hdrs(gw_req_t *gr, char *h, size_t n, const llmc_entry_t *e)
{
    char sim[32], hex[2 * LLMC_KEY_LEN + 1];
    snprintf(sim, sizeof(sim), "%.3f", (double)gr->similarity);
    llmc_key_hex(&e->key, hex);
    n = HLIT(h, n, "X-Cache-Similarity: ");
    n = HSTR(h, n, sim);
    n = HLIT(h, n, "\r\nX-Cache-Matched-Key: ");
    n = hcat(h, n, hex, 2 * LLMC_KEY_LEN);
    return HLIT(h, n, "\r\n");
}

static void respond_ask(gw_req_t *gr, int status, const char *h, size_t n, const char *body,
                        size_t len)
{
    size_t alen = 0;
    char *s = llmc_ask_answer(body, len, false, &alen);
    llmc_http_respond_copy(gr->req, status, h, n, s ? s : "{}", s ? alen : 2);
    free(s);
}

/* ---- compressed streams ----------------------------------------------------- */

/*
 * A streamed answer (a live relay, a paced replay) is compressed only when
 * the client's Accept-Encoding asks for a coding, and then through a
 * compressor of its own (gr->zenc) flushed after every write: each event
 * reaches the client's decoder as it comes, not when a block fills. An
 * identity client's stream is written as before, byte for byte. A stream
 * that goes out whole (a replay without pacing, a finished stream for a
 * late waiter) is compressed in one go the same way.
 */

static const char *accept_encoding(const llmc_http_req_t *req, char **owned);

#define ENC_ALL \
    (LLMC_ENC_MASK(LLMC_ENC_GZIP) | LLMC_ENC_MASK(LLMC_ENC_ZSTD) | LLMC_ENC_MASK(LLMC_ENC_BR))

/* The coding gr's streamed answer goes in: identity unless --compress is on
   and the client asks for one. */
static llmc_encoding_t stream_encoding(gw_req_t *gr)
{
    if (!gr->w->gw->cfg->compress || !gr->req)
        return LLMC_ENC_IDENTITY;
    char *owned = NULL;
    llmc_encoding_t enc = llmc_encoding_pick(accept_encoding(gr->req, &owned), ENC_ALL);
    free(owned);
    return enc;
}

/* The head of a stream (h holds cap bytes, n of them used), with
   Content-Encoding when the client gets a coding: the compressor is made
   only once its header lines fit, so that a stream whose compressor cannot
   be made, or whose head is full, goes identity. */
int llmc__gw_stream_begin(gw_req_t *gr, int status, char *h, size_t n, size_t cap)
{
    llmc_encoding_t enc = stream_encoding(gr);
    assert(!gr->zenc && n < cap);
    if (enc != LLMC_ENC_IDENTITY) {
        char lines[96];
        int k = snprintf(lines, sizeof(lines), "Content-Encoding: %s\r\nVary: Accept-Encoding\r\n",
                         llmc_encoding_name(enc));
        if (k > 0 && n + (size_t)k < cap && (gr->zenc = llmc_encoder_new(enc))) {
            memcpy(h + n, lines, (size_t)k);
            n += (size_t)k;
            LLMC_COUNT(&gr->w->ctr, encoded_answers);
        }
    }
    return llmc_http_stream_begin(gr->req, status, h, n);
}

static int stream_begin(gw_req_t *gr, int status, char *h, size_t n)
{
    return llmc__gw_stream_begin(gr, status, h, n, HDR_CAP);
}

/* One piece of a stream, compressed and flushed when the stream has a
   coding. A compressor that fails cuts the stream off: the bytes it
   already sent cannot be followed by plain ones. */
void llmc__gw_stream_write(gw_req_t *gr, const char *buf, size_t len)
{
    if (!gr->zenc) {
        llmc_http_stream_write(gr->req, buf, len);
        return;
    }
    char *z = NULL;
    size_t zlen = 0;
    if (llmc_encoder_write(gr->zenc, buf, len, false, &z, &zlen) < 0) {
        llmc_http_abort(gr->req);
        return;
    }
    if (zlen)
        llmc_http_stream_write(gr->req, z, zlen);
    free(z);
}

/* Ends gr's stream on req: the coding's trailer first, when it has one. */
void llmc__gw_stream_finish(gw_req_t *gr, llmc_http_req_t *req)
{
    if (gr->zenc) {
        char *z = NULL;
        size_t zlen = 0;
        int rc = llmc_encoder_write(gr->zenc, NULL, 0, true, &z, &zlen);
        llmc_encoder_free(gr->zenc);
        gr->zenc = NULL;
        if (rc < 0) {
            llmc_http_abort(req);
            return;
        }
        int wrc = zlen ? llmc_http_stream_write(req, z, zlen) : 0;
        free(z);
        if (wrc < 0)
            return; /* the connection is gone: the server ends the request */
    }
    llmc_http_stream_end(req);
}

/* A streamed answer that goes out whole (body, release(arg) when written):
   compressed in one go when the client asks for a coding. h holds
   HDR_CAP bytes, n of them used. */
static void respond_stream_whole(gw_req_t *gr, int status, char *h, size_t n, const char *body,
                                 size_t len, void (*release)(void *), void *arg)
{
    llmc_encoding_t enc = stream_encoding(gr);
    char *z = NULL;
    size_t zlen = 0;
    if (enc != LLMC_ENC_IDENTITY && llmc_encoding_encode(enc, body, len, &z, &zlen) == 0) {
        if (release)
            release(arg);
        n = HLIT(h, n, "Content-Encoding: ");
        n = HSTR(h, n, llmc_encoding_name(enc));
        n = HLIT(h, n, "\r\nVary: Accept-Encoding\r\n");
        LLMC_COUNT(&gr->w->ctr, encoded_answers);
        uv_buf_t zb = uv_buf_init(z, (unsigned)zlen);
        llmc_http_respond(gr->req, status, h, n, &zb, 1, free, z);
        return;
    }
    uv_buf_t buf = uv_buf_init((char *)body, (unsigned)len);
    llmc_http_respond(gr->req, status, h, n, &buf, 1, release, arg);
}

/* ---- replaying a stored completion as a stream ---------------------------- */

typedef struct pacer {
    uv_timer_t timer;
    gw_req_t *gr;        /* holds a reference until the replay ends */
    char *sse;
    size_t len, off;
} pacer_t;

static void pacer_closed(uv_handle_t *h)
{
    pacer_t *p = h->data;
    free(p->sse);
    free(p);
}

/* Ends a paced replay: the timer goes, and so does the replay's reference. */
static void pacer_stop(pacer_t *p)
{
    gw_req_t *gr = p->gr;
    p->gr = NULL;
    gr->pacer = NULL;
    uv_close((uv_handle_t *)&p->timer, pacer_closed);
    llmc__gr_unref(gr);
}

/* Sends the next event (up to and including its blank line); a client that
   left stops the replay at the next tick. */
static void pacer_tick(uv_timer_t *t)
{
    pacer_t *p = t->data;
    gw_req_t *gr = p->gr;
    if (!gr->req) {
        pacer_stop(p);
        return;
    }
    const char *start = p->sse + p->off;
    const char *end = strstr(start, "\n\n");
    size_t n = end ? (size_t)(end - start) + 2 : p->len - p->off;
    p->off += n;
    llmc__gr_ref(gr);
    llmc__gw_stream_write(gr, start, n);
    if (gr->req && p->off >= p->len) {
        llmc_http_req_t *req = gr->req;
        pacer_stop(p);
        llmc__gw_stream_finish(gr, req);
    } else if (!gr->req) {
        pacer_stop(p);
    }
    llmc__gr_unref(gr);
}

static void pace_replay(gw_req_t *gr, int status, char *h, size_t n, char *sse, size_t len)
{
    pacer_t *p = calloc(1, sizeof(*p));
    if (!p || stream_begin(gr, status, h, n) < 0) {
        free(p);
        free(sse);
        return;
    }
    p->gr = gr;
    p->sse = sse;
    p->len = len;
    uint64_t pace = (uint64_t)LLMC_GW_LIVE(gr->w->gw, replay_pace_ms);
    uv_timer_init(&gr->w->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, pacer_tick, 0, pace);
    gr->pacer = p;
    llmc__gr_ref(gr); /* the replay's: kept until it ends or the client leaves */
}

/* Answers a streaming request from a completion (json): its SSE form. h
   holds every header but Content-Type. */
static void respond_replay(gw_req_t *gr, int status, char *h, size_t n, const char *json,
                           size_t len)
{
    char *sse = NULL;
    size_t sse_len = 0;
    if (llmc_dialect_of(gr->dialect)->replay(json, len, gr->include_usage, &sse, &sse_len) < 0) {
        llmc__gw_error(gr, 502, "upstream_error", "unreplayable_answer",
                       "the stored answer cannot be replayed as a stream");
        return;
    }
    n = hadd(h, n, "Content-Type: text/event-stream\r\n");
    if (LLMC_GW_LIVE(gr->w->gw, replay_pace_ms) > 0) {
        pace_replay(gr, status, h, n, sse, sse_len);
        return;
    }
    respond_stream_whole(gr, status, h, n, sse, sse_len, free, sse);
}

/* A derived entry of e kept under dk, or NULL. It must have e's times: an
   entry stored again with the same body (and ETag) has other times, and its
   derived forms are made again to match them. */
static llmc_entry_t *derived_get(llmc_tier_set_t *tiers, const llmc_key_t *dk,
                                 const llmc_entry_t *e, int64_t now)
{
    llmc_entry_t *d = llmc_tier_set_front_get(tiers, dk, now);
    if (d && (d->created_ms != e->created_ms || d->expires_ms != e->expires_ms)) {
        llmc_entry_unref(d);
        d = NULL;
    }
    return d;
}

/* A new entry under dk holding body, with e's times and metadata, kept in
   the front tier (best effort: one too big is still served). Returns a
   reference, or NULL when out of memory. */
static llmc_entry_t *derived_put(llmc_worker_t *w, const llmc_entry_t *e, const llmc_key_t *dk,
                                 const char *ctype, const char *body, size_t len, int64_t now)
{
    /* The original's metadata too, so that a purge by selector takes the
       derived forms with it. */
    const char *tags[LLMC_POLICY_MAX_TAGS];
    uint32_t ntags = e->ntags < LLMC_POLICY_MAX_TAGS ? e->ntags : LLMC_POLICY_MAX_TAGS;
    const char *t = llmc_entry_tag(e, 0);
    for (uint32_t i = 0; i < ntags; i++, t += strlen(t) + 1)
        tags[i] = t;
    llmc_entry_spec_t spec = {
        .key = dk, .status = e->status, .flags = e->flags,
        .created_ms = e->created_ms, .expires_ms = e->expires_ms,
        .content_type = ctype,
        .ns = llmc_entry_ns(e), .model = llmc_entry_model(e), .route = llmc_entry_route(e),
        .tags = tags, .ntags = ntags, .body = body, .body_len = len,
    };
    llmc_entry_t *d = llmc_entry_new(&spec);
    if (d)
        llmc_tier_set_front_put(w->gw->tiers, w->id, d, now);
    return d;
}

/*
 * The form of e a request asks for when it is not the stored body itself:
 * the /ask answer or the SSE replay. Building it means parsing the stored
 * JSON, so it is built once and kept in the memory tier as an entry of its
 * own, under a key derived from e's key, the form and e's ETag: a new answer
 * under the same key has another ETag, so a derived form can never outlive
 * the answer it was made from. It has e's times, counts against the memory
 * bound, and is evicted like any entry. Returns a reference, or NULL when
 * e cannot take that form.
 */
static llmc_entry_t *derived_form(gw_req_t *gr, const llmc_entry_t *e, int64_t now)
{
    bool ask = gr->form == FORM_ASK;
    const char *form = ask ? "ask" : gr->include_usage ? "sse+usage" : "sse";
    llmc_key_t dk;
    llmc_entry_t *d = NULL;
    char tag[LLMC_ETAG_LEN];
    llmc_entry_etag(e, tag);
    llmc_key_derived(&dk, &e->key, form, tag);
    if ((d = derived_get(gr->w->gw->tiers, &dk, e, now)))
        return d;
    size_t len = 0;
    char *body = NULL;
    if (ask)
        body = llmc_ask_answer(e->body, e->body_len, true, &len);
    else if (llmc_dialect_of(gr->dialect)->replay(e->body, e->body_len, gr->include_usage, &body,
                                                  &len) < 0)
        body = NULL;
    if (!body)
        return NULL;
    d = derived_put(gr->w, e, &dk, ask ? "application/json" : "text/event-stream", body, len, now);
    free(body);
    return d;
}

/*
 * rep (the stored body or a form derived from it) compressed with enc: a
 * derived entry like the others, under rep's key, the coding and rep's
 * ETag (llmc_key_variant: no hashing, which would cost a compressed hit
 * more than the rest of it), so a gzip client's hit after the first is two
 * lookups and no compression. encoded_get looks it up (*dk: its key);
 * encoded_build makes it on the loop; a body of --compress-offload-bytes
 * or more is made on the thread pool instead (below). NULL when there is
 * none or compressing fails (the client then gets identity).
 */
static llmc_entry_t *encoded_get(gw_req_t *gr, const llmc_entry_t *rep, llmc_encoding_t enc,
                                 int64_t now, llmc_key_t *dk)
{
    llmc_key_variant(dk, &rep->key, enc, rep->etag);
    return derived_get(gr->w->gw->tiers, dk, rep, now);
}

static llmc_entry_t *encoded_build(gw_req_t *gr, const llmc_entry_t *rep, const llmc_key_t *dk,
                                   llmc_encoding_t enc, int64_t now)
{
    char *z = NULL;
    size_t zlen = 0;
    if (llmc_encoding_encode(enc, rep->body, rep->body_len, &z, &zlen) < 0)
        return NULL;
    LLMC_COUNT(&gr->w->ctr, encodings_built);
    llmc_entry_t *d = derived_put(gr->w, rep, dk, llmc_entry_content_type(rep), z, zlen, now);
    free(z);
    return d;
}

/* ---- big compressed forms, built off the loop ------------------------------ */

/*
 * Compressing a big body takes the loop's time from every other client
 * (gzip of 4 MB of embeddings: about 130 ms of CPU; br more). So a form of
 * a body of --compress-offload-bytes or more is built on libuv's thread
 * pool: a hit that needs it parks in PARKED_ENCODE, holding the entry it
 * answers from, and is answered when the form is ready; the loop serves
 * other clients meanwhile. Identical requests on the same loop while it is
 * built wait for the same build (the loop's list of builds in progress,
 * found by the form's key); another loop builds its own, so a form is
 * built at most once per worker at a time. A miss is not parked: its
 * answer goes identity (the flight's answer is at hand, and waiting would
 * hold it) and the build it starts serves the hits after it.
 */
typedef struct enc_build {
    uv_work_t work;
    llmc_worker_t *w;
    llmc_key_t dk;               /* the form's key */
    llmc_entry_t *rep;           /* a reference: the body compressed */
    llmc_encoding_t enc;
    int rc;                      /* the pool's result: z, zlen */
    char *z;
    size_t zlen;
    gw_req_t **waiters;          /* each holds a reference until the build is done */
    size_t nwait, cap;
    struct enc_build *next;      /* this loop's builds in progress */
} enc_build_t;

/* A worker's loop runs on a thread of its own, and every build is started
   and finished on that loop: the list needs no lock. */
static _Thread_local enc_build_t *builds;

static void answer_entry(gw_req_t *gr, llmc_entry_t *e, const char *cache_status, int64_t now,
                         llmc_entry_t *built, bool resumed);

static enc_build_t *build_find(const llmc_key_t *dk)
{
    for (enc_build_t *b = builds; b; b = b->next)
        if (memcmp(b->dk.b, dk->b, LLMC_KEY_LEN) == 0)
            return b;
    return NULL;
}

static void build_work(uv_work_t *wk)
{
    enc_build_t *b = wk->data;
    llmc__gr_pool_thread_nice();
    b->rc = llmc_encoding_encode(b->enc, b->rep->body, b->rep->body_len, &b->z, &b->zlen);
}

/* Back on the loop: the form is kept, and each waiter still there is
   answered, from RESPOND as before it parked, with the form (or identity
   when the build failed or the loop is closing). */
static void build_done(uv_work_t *wk, int status)
{
    enc_build_t *b = wk->data;
    llmc_worker_t *w = b->w;
    enc_build_t **pp = &builds;
    while (*pp != b)
        pp = &(*pp)->next;
    *pp = b->next;
    LLMC_COUNT(&w->ctr, encodings_off_loop_done);
    llmc_entry_t *d = NULL;
    if (status == 0 && b->rc == 0) {
        LLMC_COUNT(&w->ctr, encodings_built);
        d = derived_put(w, b->rep, &b->dk, llmc_entry_content_type(b->rep), b->z, b->zlen,
                        llmc_now_ms());
    }
    free(b->z);
    for (size_t i = 0; i < b->nwait; i++) {
        gw_req_t *gr = b->waiters[i];
        if (gr->state == GR_PARKED_ENCODE && gr->req) {
            llmc_entry_t *e = gr->hit;
            gr->hit = NULL;
            llmc__gr_enter(gr, GR_RESPOND);
            answer_entry(gr, e, gr->enc_status, gr->hit_ms, d, true);
            llmc_entry_unref(e);
        }
        llmc__gr_unref(gr); /* the build's; a client that left is freed here */
    }
    llmc_entry_unref(d);
    llmc_entry_unref(b->rep);
    free(b->waiters);
    free(b);
}

/* Starts building rep's form dk on the pool; NULL when that cannot be. */
static enc_build_t *build_start(llmc_worker_t *w, llmc_entry_t *rep, const llmc_key_t *dk,
                                llmc_encoding_t enc)
{
    enc_build_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->w = w;
    b->dk = *dk;
    b->rep = llmc_entry_ref(rep);
    b->enc = enc;
    b->work.data = b;
    if (uv_queue_work(&w->loop, &b->work, build_work, build_done) != 0) {
        llmc_entry_unref(b->rep);
        free(b);
        return NULL;
    }
    b->next = builds;
    builds = b;
    LLMC_COUNT(&w->ctr, encodings_off_loop);
    return b;
}

static bool offloaded(const gw_req_t *gr, const llmc_entry_t *rep)
{
    return rep->body_len >= (size_t)gr->w->gw->cfg->compress_offload_bytes;
}

/* Parks gr (RESPOND, a hit from e) until rep's form dk is built, joining
   a build in progress when there is one. False when it cannot wait (out of
   memory): the caller builds on the loop. */
static bool park_for_encoding(gw_req_t *gr, llmc_entry_t *e, llmc_entry_t *rep,
                              const llmc_key_t *dk, llmc_encoding_t enc, const char *cache_status,
                              int64_t now)
{
    enc_build_t *b = build_find(dk);
    if (!b && !(b = build_start(gr->w, rep, dk, enc)))
        return false;
    if (b->nwait == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4;
        gw_req_t **nw = realloc(b->waiters, cap * sizeof(*nw));
        if (!nw)
            return false; /* the build goes on for the hits after this one */
        b->waiters = nw;
        b->cap = cap;
    }
    assert(gr->state == GR_RESPOND && !gr->hit);
    b->waiters[b->nwait++] = gr;
    llmc__gr_ref(gr); /* the build's */
    gr->hit = llmc_entry_ref(e);
    gr->hit_ms = now;
    gr->enc_status = cache_status;
    llmc__gr_enter(gr, GR_PARKED_ENCODE);
    LLMC_COUNT(&gr->w->ctr, encoding_waits);
    return true;
}

/* The request's Accept-Encoding, its lines joined (*owned then holds
   them) when it came on several. Header names come lowercased, so a length
   and memcmp test finds it: an identity client pays this on every hit of
   a big enough answer, and strcasecmp per header would double it. */
static const char *accept_encoding(const llmc_http_req_t *req, char **owned)
{
    static const char name[] = "accept-encoding";
    const char *v = NULL;
    unsigned lines = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const llmc_http_header_t *hd = &req->headers[i];
        if (hd->name_len == sizeof(name) - 1 && memcmp(hd->name, name, sizeof(name) - 1) == 0) {
            v = v ? v : hd->value;
            lines++;
        }
    }
    return lines < 2 ? v : llmc_policy_list_header(req, name, owned);
}

/* The coding gr's client gets rep in: identity unless compression is on,
   the body is big enough and Accept-Encoding takes a coding we have.
   *varies says whether the answer depends on Accept-Encoding at all (then
   it carries Vary: Accept-Encoding, identity included). */
static llmc_encoding_t pick_encoding(gw_req_t *gr, const llmc_entry_t *rep, bool *varies)
{
    const llmc_config_t *cfg = gr->w->gw->cfg;
    *varies = cfg->compress && rep->body_len >= (size_t)cfg->compress_min;
    if (!*varies)
        return LLMC_ENC_IDENTITY;
    char *owned = NULL;
    const char *accept = accept_encoding(gr->req, &owned);
    llmc_encoding_t enc = llmc_encoding_pick(accept, ENC_ALL);
    free(owned);
    return enc;
}

/* The ETag of rep sent with coding enc: the body's tag, with the coding's
   name inside the quotes for a compressed one ("0123abcd-gzip"), so each
   coding validates apart and a 304 needs no compressed form at hand. */
#define TAG_CAP (LLMC_ETAG_LEN + 8)
static void encoded_tag(const llmc_entry_t *rep, llmc_encoding_t enc, char out[TAG_CAP])
{
    llmc_entry_etag(rep, out);
    if (enc == LLMC_ENC_IDENTITY)
        return;
    size_t n = LLMC_ETAG_LEN - 2; /* before the closing quote */
    out[n++] = '-';
    const char *name = llmc_encoding_name(enc);
    size_t k = strlen(name);
    memcpy(out + n, name, k);
    n += k;
    out[n++] = '"';
    out[n] = '\0';
}

void llmc__gw_respond_entry(gw_req_t *gr, llmc_entry_t *e, const char *xcache,
                            const char *cache_status, int64_t now)
{
    bool stale = now >= e->expires_ms;
    gr->xcache = xcache;
    if (stale)
        LLMC_COUNT(&gr->w->ctr, stale);
    else
        LLMC_COUNT(&gr->w->ctr, hits);
    /* What the model call this answer stands in for cost, read when the
       entry was built: two numbers and no JSON on the hit path. */
    llmc_usage_t u;
    bool has_usage = llmc_entry_usage(e, &u);
    llmc_bymodel_count(gr->w->gw->bymodel, gr->w->id, gr->path, llmc_entry_model(e),
                       stale ? LLMC_BY_STALE : LLMC_BY_HIT, has_usage ? &u : NULL);
    llmc_bymodel_count_ns(gr->w->gw->bymodel, gr->w->id, gr->policy.ns,
                          stale ? LLMC_BY_STALE : LLMC_BY_HIT, has_usage ? &u : NULL);
    answer_entry(gr, e, cache_status, now, NULL, false);
}

/* The answer from e (counted already), its Cache-Status cache_status or,
   when NULL, made from e and now. Run again when a build it parked for is
   done (resumed): built is then the form made, or NULL when none was, and
   the answer goes without waiting again. */
static void answer_entry(gw_req_t *gr, llmc_entry_t *e, const char *cache_status, int64_t now,
                         llmc_entry_t *built, bool resumed)
{
    char h[HDR_CAP], cs[HDR_CAP];
    size_t n = 0;
    const char *xcache = gr->xcache;
    bool stale = now >= e->expires_ms;
    bool paced = gr->stream && LLMC_GW_LIVE(gr->w->gw, replay_pace_ms) > 0;
    llmc_usage_t u;
    bool has_usage = llmc_entry_usage(e, &u);
    if (!cache_status) {
        long long ttl = stale ? -(long long)((now - e->expires_ms + 999) / 1000)
                              : (long long)llmc_entry_ttl_left(e, now);
        size_t c = HLIT(cs, 0, "llmcached; hit; ttl=");
        c = hnum(cs, c, ttl);
        if (gr->tier) {
            c = HLIT(cs, c, "; detail=");
            c = HSTR(cs, c, gr->tier);
        }
        cs[c] = '\0';
        cache_status = cs;
    }
    /* rep is what goes out: the stored body, or a form derived from it. */
    llmc_entry_t *rep = (gr->form == FORM_ASK || gr->stream) && !paced ? derived_form(gr, e, now)
                                                                      : llmc_entry_ref(e);
    if (!rep) {
        llmc__gw_error(gr, 502, "upstream_error", "unreplayable_answer",
                       "the stored answer cannot be given in the form this request asks for");
        return;
    }
    if (!paced) {
        n = HLIT(h, n, "Content-Type: ");
        n = HSTR(h, n, llmc_entry_content_type(rep));
        n = HLIT(h, n, "\r\n");
    }
    n = cache_hdrs(gr, h, n, xcache, cache_status);
    if (strcmp(xcache, "SEMANTIC-HIT") == 0)
        n = semantic_hdrs(gr, h, n, e);
    n = HLIT(h, n, "Age: ");
    n = hnum(h, n, (long long)llmc_entry_age(e, now));
    n = HLIT(h, n, "\r\n");
    if (has_usage) {
        n = HLIT(h, n, "X-Cache-Tokens-Saved: ");
        n = hnum(h, n, (long long)u.prompt_tokens);
        n = HLIT(h, n, "+");
        n = hnum(h, n, (long long)u.completion_tokens);
        n = HLIT(h, n, "\r\n");
    }
    if (paced) {
        /* A paced replay is built per request: freshness, but no validator. */
        n = freshness_hdrs(h, n, rep, NULL, false, gr);
        respond_replay(gr, e->status, h, n, e->body, e->body_len);
        llmc_entry_unref(rep);
        return;
    }
    bool varies;
    llmc_encoding_t enc = pick_encoding(gr, rep, &varies);
    char tag[TAG_CAP];
    encoded_tag(rep, enc, tag);
    char *inm_owned;
    bool match = llmc_policy_etag_matches(
        llmc_policy_list_header(gr->req, "if-none-match", &inm_owned), tag);
    free(inm_owned);
    if (!match && enc != LLMC_ENC_IDENTITY) {
        llmc_key_t dk;
        llmc_entry_t *z = encoded_get(gr, rep, enc, now, &dk);
        if (!z && resumed && built && memcmp(built->key.b, dk.b, LLMC_KEY_LEN) == 0)
            z = llmc_entry_ref(built);
        if (!z && !resumed && offloaded(gr, rep) &&
            park_for_encoding(gr, e, rep, &dk, enc, cache_status, now)) {
            llmc_entry_unref(rep);
            return; /* answered from here again when the form is built */
        }
        if (!z && !resumed)
            z = encoded_build(gr, rep, &dk, enc, now);
        if (z) {
            llmc_entry_unref(rep);
            rep = z; /* the same times and flags: freshness_hdrs reads the same */
            n = HLIT(h, n, "Content-Encoding: ");
            n = HSTR(h, n, llmc_encoding_name(enc));
            n = HLIT(h, n, "\r\n");
            LLMC_COUNT(&gr->w->ctr, encoded_answers);
        } else {
            encoded_tag(rep, LLMC_ENC_IDENTITY, tag); /* not compressed after all */
        }
    }
    n = freshness_hdrs(h, n, rep, tag, varies, gr);
    if (match) {
        LLMC_COUNT(&gr->w->ctr, not_modified);
        llmc_entry_unref(rep);
        llmc_http_respond(gr->req, 304, h, n, NULL, 0, NULL, NULL);
        return;
    }
    uv_buf_t buf = uv_buf_init((char *)rep->body, (unsigned)rep->body_len);
    llmc_http_respond(gr->req, rep->status, h, n, &buf, 1, release_entry, rep);
}

/* The Cache-Status of an answer that went upstream: fwd says why (no-cache
   and a stored answer the request's directives refused are "request", an
   expired one "stale", none at all "uri-miss"), "stored" whether it is kept. */
#define MISS_STATUS_CAP 64 /* the longest is "llmcached; fwd=uri-miss; stored" */

static const char *miss_status(gw_req_t *gr, const llmc_flight_t *f, char buf[MISS_STATUS_CAP])
{
    if (!strcmp(gr->xcache, "COALESCED") && f && f->filled_by) {
        snprintf(buf, MISS_STATUS_CAP, "llmcached; fwd=miss; collapsed; detail=%s", f->filled_by);
        return buf;
    }
    if (!strcmp(gr->xcache, "COALESCED"))
        return "llmcached; fwd=miss; collapsed";
    if (!strcmp(gr->xcache, "BYPASS"))
        return "llmcached; fwd=bypass";
    const char *fwd = !gr->policy.read ? "request" : gr->fwd ? gr->fwd : "uri-miss";
    snprintf(buf, MISS_STATUS_CAP, "llmcached; fwd=%s%s", fwd, f && f->entry ? "; stored" : "");
    return buf;
}

void llmc__gw_error(gw_req_t *gr, int status, const char *type, const char *code,
                    const char *msg)
{
    char h[HDR_CAP];
    size_t n = 0;
    char cs[MISS_STATUS_CAP];
    if (gr->xcache)
        n = cache_hdrs(gr, h, n, gr->xcache, miss_status(gr, NULL, cs));
    n = hadd(h, n, "Cache-Control: no-store\r\n");
    /* The server adds it to the statuses that are final by nature (400,
       404, ...); a 5xx is final only when the step said so. */
    if (gr->err_final && status >= 500)
        n = hadd(h, n, "X-Should-Retry: false\r\n");
    h[n] = '\0';
    llmc_dialect_respond_error(gr->dialect, gr->req, status, h, type, code, msg);
}

/* Upstream failure: a stale entry within --stale-if-error wins over an error. */
static bool try_stale(gw_req_t *gr)
{
    if (!gr->stale)
        return false;
    int64_t now = llmc_now_ms();
    if (now - gr->stale->expires_ms > LLMC_GW_LIVE(gr->w->gw, stale_if_error))
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
                   : f->err == LLMC_E2BIG ? "upstream_response_too_large"
                   : f->err ? "upstream_unavailable" : "upstream_invalid_response", msg);
}

/* The body a finished 2xx flight offers a waiter in the form it asked for:
   raw bytes, or a stream's assembled completion; NULL when there is none. */
static const char *flight_json(const llmc_flight_t *f, size_t *len)
{
    if (!f->is_stream) {
        *len = f->body_len;
        return f->body ? f->body : "";
    }
    *len = f->assembled_len;
    return f->assembled;
}

/* A usage chunk is a few hundred bytes. A longer event is none, so the
   usage filter passes it on as it comes instead of holding it back (and
   copying it again on every step) until its end. */
#define USAGE_EVENT_MAX (64u << 10)

/* A finished stream for a waiter that did not ask for the usage chunk the
   upstream was asked for (by the request that started the call): the same
   bytes without it. */
static void respond_sse_without_usage(gw_req_t *gr, const llmc_flight_t *f, char *h, size_t n)
{
    char *body = malloc(f->body_len + 1);
    if (!body) {
        llmc__gw_error(gr, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    size_t used;
    size_t blen = f->body_len ? llmc_sse_drop_usage(f->body, f->body_len, true, USAGE_EVENT_MAX,
                                                    body, &used)
                              : 0;
    respond_stream_whole(gr, f->status, h, n, body, blen, free, body);
}

/* A flight another gateway's call answered (fetch.c's lease): this request
   waited for an identical call in flight, as a local COALESCED one does. */
static void note_shared_fill(gw_req_t *gr, const llmc_flight_t *f)
{
    if (f->filled_by && gr->xcache && !strcmp(gr->xcache, "MISS"))
        gr->xcache = "COALESCED";
}

void llmc__gw_respond_flight(gw_req_t *gr)
{
    llmc_flight_t *f = gr->flight;
    /* A finished flight never changes again, so it can be read unlocked; our
       own reference keeps it while the answer is built. */
    llmc_flight_ref(f);
    llmc__gr_leave_flight(gr);
    note_shared_fill(gr, f);
    size_t len = 0;
    const char *json = f->status / 100 == 2 ? flight_json(f, &len) : NULL;
    bool ok2xx = f->status / 100 == 2 && !f->err;
    /* Only the endpoint's answer takes another form (replay, /ask); a 2xx
       that is none (shape.h) goes to every waiter as the upstream sent it. */
    bool answer = ok2xx && !f->not_answer;
    if (f->err || (ok2xx && !json && !(gr->stream && f->is_stream)) || (f->invalid && !gr->stream)) {
        respond_failure(gr, f);
        goto out;
    }
    if (f->status >= 500 && try_stale(gr))
        goto out;
    char h[HDR_CAP];
    bool replay = answer && gr->stream && !f->is_stream;
    bool raw_sse = ok2xx && gr->stream && f->is_stream;
    size_t n = 0;
    if (!replay)
        n = hadd(h, 0, "Content-Type: %s\r\n",
                 (gr->form == FORM_ASK && answer) || (answer && !raw_sse) ? "application/json"
                 : f->content_type[0] ? f->content_type : "application/json");
    char cs[MISS_STATUS_CAP];
    n = cache_hdrs(gr, h, n, gr->xcache, miss_status(gr, f, cs));
    const llmc_entry_t *held = raw_sse || replay ? NULL : f->entry;
    /* The entry's ETag names its body; an /ask answer is another body, whose
       stored form (the next hit's) has its own ETag, so it goes without. */
    bool tagged = held && gr->form != FORM_ASK;
    char tag[TAG_CAP];
    bool varies = false;
    llmc_entry_t *z = NULL; /* the stored answer compressed for this client */
    if (tagged) {
        llmc_encoding_t enc = ok2xx ? pick_encoding(gr, held, &varies) : LLMC_ENC_IDENTITY;
        llmc_key_t dk;
        int64_t now = llmc_now_ms();
        if (enc != LLMC_ENC_IDENTITY && !(z = encoded_get(gr, held, enc, now, &dk))) {
            /* A big form is built off the loop for the hits to come; this
               answer goes identity rather than hold the flight's. */
            if (!offloaded(gr, held))
                z = encoded_build(gr, held, &dk, enc, now);
            else if (!build_find(&dk))
                build_start(gr->w, (llmc_entry_t *)held, &dk, enc);
        }
        if (z) {
            n = HLIT(h, n, "Content-Encoding: ");
            n = HSTR(h, n, llmc_encoding_name(enc));
            n = HLIT(h, n, "\r\n");
            LLMC_COUNT(&gr->w->ctr, encoded_answers);
        } else {
            enc = LLMC_ENC_IDENTITY;
        }
        encoded_tag(held, enc, tag);
    }
    n = freshness_hdrs(h, n, held, tagged ? tag : NULL, varies, gr);
    if (f->pass_len && n + f->pass_len < HDR_CAP) {
        memcpy(h + n, f->pass_hdrs, f->pass_len);
        n += f->pass_len;
    }
    if (gr->form == FORM_ASK && answer) {
        respond_ask(gr, f->status, h, n, json, len);
    } else if (replay) {
        respond_replay(gr, f->status, h, n, json, len);
    } else if (raw_sse && f->upstream_usage && !gr->include_usage) {
        respond_sse_without_usage(gr, f, h, n);
    } else if (z) {
        uv_buf_t buf = uv_buf_init((char *)z->body, (unsigned)z->body_len);
        llmc_http_respond(gr->req, f->status, h, n, &buf, 1, release_entry, z);
    } else if (raw_sse) { /* a finished stream, whole */
        llmc_flight_ref(f);
        respond_stream_whole(gr, f->status, h, n, f->body ? f->body : "", f->body_len,
                             release_flight, f);
    } else {
        const char *body = ok2xx && !raw_sse ? json : f->body ? f->body : "";
        size_t blen = ok2xx && !raw_sse ? len : f->body_len;
        uv_buf_t buf = uv_buf_init((char *)body, (unsigned)blen);
        llmc_flight_ref(f);
        llmc_http_respond(gr->req, f->status, h, n, &buf, 1, release_flight, f);
    }
out:
    llmc_flight_unref(f);
}

/* The client took everything queued for it: relay what waited in the
   flight meanwhile. Runs on gr's loop, outside any step: the waiter is
   queued for its thread as a producer's step would queue it. */
static void stream_drained(llmc_http_req_t *req)
{
    gw_req_t *gr = req->data;
    llmc_flight_t *f = gr->flight;
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    if (gr->fw.attached)
        gr->fw.notify(&gr->fw);
    pthread_mutex_unlock(&f->mu);
}

/*
 * Backpressure for one client of a live stream. Two bounds, both
 * --stream-max-lag:
 * - The window: at most that many bytes are queued for the client that the
 *   kernel has not taken. The rest stays in the flight's buffer, shared by
 *   every waiter and kept anyway for the cache, and goes out once the
 *   client drained its queue (stream_drained). So a late joiner's catch-up
 *   or a slow reader costs memory of its own only up to the window.
 * - The lag: how far the client is behind the upstream once a step has
 *   written what it could (bytes of the flight the kernel has not taken
 *   for it: queued, or left in the flight by the window) may exceed the
 *   least it has been by that much. A client that stopped reading passes it
 *   once the upstream has sent that much more than its kernel buffers and
 *   its window hold; it is then disconnected at once, its queue discarded
 *   (http's drop), and counted. Judged after writing, so a loop that was
 *   busy elsewhere does not count against the client; and against its own
 *   least, so a late joiner is judged by whether it keeps up from where it
 *   joined, not by its catch-up.
 */

/* How many of have bytes fit in gr's window now. */
static size_t stream_room(gw_req_t *gr, size_t have)
{
    size_t max_lag = (size_t)gr->w->gw->cfg->stream_max_lag;
    size_t queued = gr->started ? llmc_http_pending_bytes(gr->req) : 0;
    size_t room = queued < max_lag ? max_lag - queued : 0;
    return have < room ? have : room;
}

/* After a step: true when gr fell too far behind and must go. */
static bool stream_behind(gw_req_t *gr, size_t body_len)
{
    size_t queued = gr->started ? llmc_http_pending_bytes(gr->req) : 0;
    size_t lag = (body_len > gr->sent ? body_len - gr->sent : 0) + queued;
    if (!gr->lag_seen || lag < gr->lag_min)
        gr->lag_min = lag;
    gr->lag_seen = true;
    return queued > 0 && lag - gr->lag_min > (size_t)gr->w->gw->cfg->stream_max_lag;
}

/* One pass of a stream step: relays what the flight has that this client
   has not seen yet, as much as its window takes. *more: bytes of the
   flight are left for a later pass; *body_len: the flight's length seen.
   True when the answer is all sent. */
static bool stream_pass(gw_req_t *gr, bool *more, size_t *body_len)
{
    llmc_flight_t *f = gr->flight;
    pthread_mutex_lock(&f->mu);
    bool done = f->done, failed = f->err != 0;
    int status = f->status;
    bool relay = f->head_known && status / 100 == 2;
    bool drop_usage = f->upstream_usage && !gr->include_usage;
    size_t have = relay && f->body_len > gr->sent ? f->body_len - gr->sent : 0;
    size_t take = stream_room(gr, have);
    *body_len = relay ? f->body_len : gr->sent;
    /* Copied out under the lock: the producer may move the buffer. */
    char *chunk = take ? malloc(take) : NULL;
    if (chunk)
        memcpy(chunk, f->body + gr->sent, take);
    pthread_mutex_unlock(&f->mu);
    if (take && !chunk)
        take = 0; /* out of memory: the rest waits for the next step */
    /* Only the whole rest of a finished answer is its end. */
    bool last = done && take == have;
    /* len: the bytes that go out; used: the bytes of the body dealt with
       (an unfinished event waits for the rest when usage is dropped). */
    size_t len = take, used = take;
    if (chunk && drop_usage)
        len = llmc_sse_drop_usage(chunk, take, last, USAGE_EVENT_MAX, chunk, &used);

    if (!gr->started && relay && !(done && failed && !have)) {
        char h[HDR_CAP];
        note_shared_fill(gr, f); /* set before the head: done, under the lock */
        size_t n = hadd(h, 0, "Content-Type: %s\r\n",
                        f->content_type[0] ? f->content_type : "text/event-stream");
        char cs[MISS_STATUS_CAP];
        n = cache_hdrs(gr, h, n, gr->xcache, miss_status(gr, f, cs));
        n = hadd(h, n, "Cache-Control: no-store\r\n");
        if (f->pass_len && n + f->pass_len < HDR_CAP) {
            memcpy(h + n, f->pass_hdrs, f->pass_len);
            n += f->pass_len;
        }
        gr->started = stream_begin(gr, status, h, n) == 0;
        if (gr->started)
            gr->req->on_drain = stream_drained;
    }
    if (gr->started && chunk && len && gr->req)
        llmc__gw_stream_write(gr, chunk, len);
    gr->sent += used;
    free(chunk);
    *more = take < have && used > 0;
    return last && used == take;
}

/* Relays what the flight has that this client has not seen yet. Any server
   call may end the request (a failed write, a drop): gr->req is checked
   after each. A pass that left bytes in the flight goes on at once when the
   kernel took all it wrote (no write is pending, so no drain would come),
   else on the drain. */
bool llmc__gw_stream_step(gw_req_t *gr)
{
    bool more, all;
    size_t body_len;
    do
        all = stream_pass(gr, &more, &body_len);
    while (more && gr->req && llmc_http_pending_bytes(gr->req) == 0);
    if (gr->req && !all && stream_behind(gr, body_len)) {
        LLMC_COUNT(&gr->w->ctr, stream_waiters_dropped);
        llmc_http_drop(gr->req); /* on_abort: gr->req goes, gr leaves the flight */
    }
    return all && gr->req;
}

void llmc__gw_stream_end(gw_req_t *gr)
{
    llmc_flight_t *f = gr->flight;
    if (!gr->started) {
        llmc__gw_respond_flight(gr); /* not a stream after all: an error answer */
        return;
    }
    /* Done, so the flight no longer changes: read unlocked. */
    bool failed = f->err != 0;
    llmc_http_req_t *req = gr->req;
    llmc__gr_leave_flight(gr);
    if (failed)
        llmc_http_abort(req); /* cut off upstream: the client must see it cut off too */
    else
        llmc__gw_stream_finish(gr, req);
}

void llmc__gw_respond_json(gw_req_t *gr, int status, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    static const char h[] = "Content-Type: application/json\r\nCache-Control: no-store\r\n";
    llmc_http_respond_copy(gr->req, status, h, sizeof(h) - 1, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
    json_decref(obj);
}

void llmc__gw_respond_text(gw_req_t *gr, int status, const char *ctype, const char *body,
                           size_t len)
{
    char h[256];
    int n = snprintf(h, sizeof(h), "Content-Type: %s\r\nCache-Control: no-store\r\n", ctype);
    llmc_http_respond_copy(gr->req, status, h, (size_t)n < sizeof(h) ? (size_t)n : 0, body, len);
}
