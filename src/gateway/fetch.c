/*
 * gateway/fetch.c: the upstream call behind a flight.
 *
 * The leader's worker starts the call on its own upstream client; the bytes
 * go into the flight as they arrive. When the call ends, an answer that may
 * be cached becomes an entry and is put into every tier BEFORE the flight
 * is finished (see flight.h for why), then every waiter is notified.
 *
 * An answer is stored only when it is complete, a 200, and has the shape
 * of the endpoint's answer (shape.h): error answers, 200 {"error": ...},
 * 201/204, truncated bodies and garbage are handed to the waiters but never
 * kept. A 2xx that is not JSON at all is a failure (502).
 *
 * When a tier coordinates calls across gateways (tier.h's lease: the
 * Redis tier), a call that may be stored first asks for the lease: won
 * or unavailable, the call goes ahead (a won lease is given back once the
 * answer is stored, after its SET on the same connection); held elsewhere,
 * the fetch waits for that gateway's answer and ends the flight with it,
 * never calling the model. Only requests that would take any stored answer
 * ask (not no-cache, nor one that refused what the tiers had).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gateway/dialect.h"
#include "gateway/gw_int.h"
#include "gateway/shape.h"
#include "llmc/cache.h"
#include "llmc/error.h"
#include "llmc/sse.h"

/* Longest single SSE event we assemble; a longer one makes the stream uncacheable. */
#define MAX_SSE_EVENT (8u << 20)

typedef struct fetch {
    struct fetch *prev, *next; /* the worker's list of calls, for shutdown */
    llmc_flight_t *f;
    llmc_worker_t *w;
    llmc_upstream_call_t *call;
    bool store;
    bool background;           /* a semantic hit's verification (handler.c): nobody waits,
                                  yet the answer is stored */
    bool private_scope;
    int64_t ttl_ms;
    bool cut;                  /* cut short (cut_short): take no more bytes */
    char ns[128];
    char model[128];
    const char *route;         /* the endpoint as keyed: a static string (handler.c's) */
    char call_id[48];          /* "thread-id" of the request that started the call, as the
                                  access log names it: what clients quote for a failure */
    char tags[LLMC_POLICY_TAGS_BYTES];
    unsigned ntags;
    uint64_t purge_seq;        /* the tier set's purges when the call began: a later
                                  purge that selects the answer keeps it from the cache */
    /* The request, kept for retries. */
    char *method, *url, *body;
    size_t body_len;
    char *hdrs[LLMC_FWD_MAX + 2];   /* Content-Type, the credential, the forwarded */
    size_t nhdrs;
    unsigned retries_left;
    bool retrying;       /* this answer is swallowed: a retry follows */
    uint64_t retry_wait_ms;
    uint64_t started_ms; /* uv_now of the first try: retries stay within the timeout */
    uint64_t try_ns;     /* uv_hrtime when this try's call started (the latency histogram) */
    uv_timer_t *timer;   /* the wait before a retry */
    uv_work_t work;      /* a big answer's JSON check, off the loop */
    bool validating;     /* that check is running: the fetch must not be freed */
    int valid;           /* its result, an llmc_shape_t; -1 not checked yet */
    int has_usage;       /* the answer's token counts: 1 read into usage, 0 none,
                            -1 not read yet (read with the check when off the loop) */
    llmc_usage_t usage;
    void *as;            /* a stream's events folded into one answer (d's assembler) */
    const llmc_dialect_t *d; /* the route's API: its assembler and replay */
    size_t sse_off;      /* bytes of the flight's body already parsed as events */
    int sse_err;         /* first error of the stream (sticky): not cacheable */
    llmc_tier_lease_t lease; /* cross-gateway coalescing (llmc/tier.h) */
    bool leasing;        /* the lease is asked: no call yet */
    bool lease_held;     /* won: given back when the fetch ends */
} fetch_t;

static void fetch_free(fetch_t *ft)
{
    /* After the store (finish): its SET is sent before the lease goes. */
    if (ft->leasing || ft->lease_held)
        llmc_tier_set_lease_end(ft->w->gw->tiers, &ft->lease);
    if (ft->prev)
        ft->prev->next = ft->next;
    else if (ft->w->fetches == ft)
        ft->w->fetches = ft->next;
    if (ft->next)
        ft->next->prev = ft->prev;
    llmc_flight_unref(ft->f);
    if (ft->as)
        ft->d->asm_free(ft->as);
    if (ft->timer)
        uv_close((uv_handle_t *)ft->timer, (uv_close_cb)free);
    for (size_t i = 0; i < ft->nhdrs; i++)
        free(ft->hdrs[i]);
    free(ft->method);
    free(ft->url);
    free(ft->body);
    free(ft);
}

/* ---- retries ------------------------------------------------------------ */

/* Longest wait a Retry-After is taken for: past --upstream-timeout's
   maximum no retry fits anyway, and the bound keeps the sums below small. */
#define RETRY_AFTER_MAX_S 86400u

/* The three forms of HTTP-date a recipient must accept (RFC 9110 5.6.7):
   IMF-fixdate, then the obsolete rfc850-date and asctime-date. */
static const char *const http_date_formats[] = {
    "%a, %d %b %Y %H:%M:%S GMT",
    "%a, %d-%b-%y %H:%M:%S GMT",
    "%a %b %d %H:%M:%S %Y",
};

/* Past any spaces and tabs: whether s ends there. */
static bool only_ows_left(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return *s == '\0';
}

/* Seconds a Retry-After value (v: the value alone, NUL-terminated) asks for
   (RFC 9110 10.2.3: delta-seconds, or an HTTP-date in any of its three
   forms, read in the C locale we run in), at most RETRY_AFTER_MAX_S; -1
   when it is neither. */
static int64_t retry_after_s(const char *v)
{
    uint64_t s = 0;

    while (*v == ' ' || *v == '\t')
        v++;
    if (*v >= '0' && *v <= '9') {
        for (; *v >= '0' && *v <= '9'; v++)
            s = s > RETRY_AFTER_MAX_S ? s : s * 10 + (uint64_t)(*v - '0');
        if (!only_ows_left(v))
            return -1;
        return (int64_t)(s < RETRY_AFTER_MAX_S ? s : RETRY_AFTER_MAX_S);
    }
    for (size_t i = 0; i < sizeof(http_date_formats) / sizeof(http_date_formats[0]); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(v, http_date_formats[i], &tm);
        if (!end || !only_ows_left(end))
            continue;
        time_t at = timegm(&tm), now = time(NULL);
        s = at > now ? (uint64_t)(at - now) : 0;
        return (int64_t)(s < RETRY_AFTER_MAX_S ? s : RETRY_AFTER_MAX_S);
    }
    return -1;
}

/* Milliseconds the Retry-After among pass's "Name: value\r\n" lines asks
   for, or dflt when there is none or it cannot be read. */
static uint64_t retry_after_ms(const char *pass, size_t len, uint64_t dflt)
{
    static const char name[] = "retry-after:";
    char v[64];
    for (size_t i = 0; i + sizeof(name) - 1 < len; i++) {
        if ((i == 0 || pass[i - 1] == '\n') && strncasecmp(pass + i, name, sizeof(name) - 1) == 0) {
            const char *p = pass + i + sizeof(name) - 1, *eol = memchr(p, '\r', len - (size_t)(p - pass));
            size_t n = eol ? (size_t)(eol - p) : len - (size_t)(p - pass);
            if (n >= sizeof(v))
                return dflt;
            memcpy(v, p, n);
            v[n] = '\0';
            int64_t s = retry_after_s(v);
            return s < 0 ? dflt : (uint64_t)s * 1000;
        }
    }
    return dflt;
}

/* True when a retry after wait_ms still fits the upstream timeout (written
   so that no sum can wrap around). */
static bool retry_fits(fetch_t *ft, uint64_t wait_ms)
{
    uint64_t elapsed = uv_now(&ft->w->loop) - ft->started_ms;
    uint64_t budget = (uint64_t)ft->w->gw->cfg->upstream_timeout;
    return ft->retries_left > 0 && ft->f->body_len == 0 && !ft->f->head_known &&
           elapsed < budget && wait_ms < budget - elapsed;
}

/* A status the upstream refused the request with (so the model never ran
   it), or, with --retry-unsafe, a server error before any byte was sent on. */
static bool retryable_status(const fetch_t *ft, int status)
{
    if (status == 429 || status == 503)
        return true;
    return ft->w->gw->cfg->retry_unsafe && (status == 500 || status == 502 || status == 504);
}

static bool retryable_error(const fetch_t *ft, int err)
{
    return err == LLMC_ECONNECT || (ft->w->gw->cfg->retry_unsafe && err == LLMC_EUPSTREAM);
}

/* Exponential backoff from 100 ms for failures that say nothing about when. */
static uint64_t backoff_ms(const fetch_t *ft)
{
    return 100u << (ft->w->gw->cfg->upstream_retries - ft->retries_left);
}

static int start_call(fetch_t *ft);
static void on_done(void *arg, int err, const char *detail);

static void on_retry_timer(uv_timer_t *t)
{
    fetch_t *ft = t->data;
    LLMC_COUNT(&ft->w->ctr, upstream_retries);
    int rc = start_call(ft);
    if (rc < 0)
        on_done(ft, rc, "could not start the retry");
}

static bool schedule_retry(fetch_t *ft, uint64_t wait_ms)
{
    if (!ft->timer) {
        if (!(ft->timer = malloc(sizeof(*ft->timer))))
            return false;
        uv_timer_init(&ft->w->loop, ft->timer);
        ft->timer->data = ft;
    }
    ft->retries_left--;
    ft->retrying = false;
    ft->call = NULL;
    uv_timer_start(ft->timer, on_retry_timer, wait_ms, 0);
    return true;
}

/* ---- the call ------------------------------------------------------------- */

static void on_head(void *arg, int status, const char *ctype, const char *pass, size_t pass_len)
{
    fetch_t *ft = arg;
    if (retryable_status(ft, status)) {
        uint64_t wait = retry_after_ms(pass, pass_len, backoff_ms(ft));
        if (retry_fits(ft, wait)) {
            ft->retrying = true; /* swallow this answer; on_done schedules the retry */
            ft->retry_wait_ms = wait;
            return;
        }
    }
    llmc_flight_head(ft->f, status, ctype, pass, pass_len);
}

/* Steps over a UTF-8 byte-order mark at the very start of the stream, which
   WHATWG (and so every client's decoder) drops: read as part of the first
   field's name it would lose the first event. False while the bytes so far
   could still be the start of one. */
static bool skip_bom(fetch_t *ft, bool eof)
{
    static const char bom[] = "\xEF\xBB\xBF";
    llmc_flight_t *f = ft->f;
    if (ft->sse_off != 0 || f->body_len == 0)
        return true;
    size_t n = f->body_len < 3 ? f->body_len : 3;
    if (memcmp(f->body, bom, n) != 0)
        return true;
    if (n < 3)
        return eof;
    ft->sse_off = 3;
    return true;
}

/* Feeds the stream's complete events to the assembler. Only this thread
   writes the flight's body, so reading it here needs no lock. */
static void assemble_events(fetch_t *ft, bool eof)
{
    llmc_flight_t *f = ft->f;
    if (!skip_bom(ft, eof))
        return;
    while (!ft->sse_err && ft->sse_off < f->body_len) {
        llmc_sse_event_t ev;
        size_t used = 0;
        const char *p = f->body + ft->sse_off;
        size_t n = f->body_len - ft->sse_off;
        int rc = eof ? llmc_sse_next_eof(p, n, MAX_SSE_EVENT, &ev, &used)
                     : llmc_sse_next(p, n, MAX_SSE_EVENT, &ev, &used);
        if (rc <= 0) {
            ft->sse_err = rc;
            return;
        }
        ft->sse_off += used;
        if (ev.data_lines == 0)
            continue;
        if (ev.data) {
            ft->sse_err = ft->d->asm_add(ft->as, ev.data, ev.data_len);
        } else {
            char *d = malloc(ev.data_len + 1);
            ft->sse_err = d ? ft->d->asm_add(ft->as, d, llmc_sse_event_data(&ev, d, ev.data_len + 1))
                            : LLMC_ENOMEM;
            free(d);
        }
    }
}

/* With --complete-abandoned off, a call nobody waits for any more is cut. */
static bool abandoned(fetch_t *ft)
{
    if (ft->w->gw->cfg->complete_abandoned || ft->background)
        return false;
    pthread_mutex_lock(&ft->f->mu);
    bool alone = ft->f->nwaiters == 0;
    pthread_mutex_unlock(&ft->f->mu);
    return alone;
}

static void on_done(void *arg, int err, const char *detail);

/* An answer past --max-response-bytes, or one we have no memory for, stops
   the call at once: reading the rest would only cost time and bandwidth,
   and its clients get a 502 that says why. */
static void cut_short(fetch_t *ft, int err)
{
    char why[120] = "no memory to hold the answer";
    if (err == LLMC_E2BIG)
        snprintf(why, sizeof(why), "the answer is larger than --max-response-bytes (%lld bytes)",
                 (long long)ft->w->gw->cfg->max_response_bytes);
    ft->cut = true;
    llmc_upstream_cancel(ft->call);
    on_done(ft, err, why);
}

static void on_data(void *arg, const char *buf, size_t len)
{
    fetch_t *ft = arg;
    if (ft->cut || ft->retrying)
        return;
    if (ft->f->body_len + len > (uint64_t)ft->w->gw->cfg->max_response_bytes) {
        cut_short(ft, LLMC_E2BIG);
        return;
    }
    if (llmc_flight_data(ft->f, buf, len) < 0) {
        cut_short(ft, LLMC_ENOMEM);
        return;
    }
    if (ft->as && ft->f->status / 100 == 2)
        assemble_events(ft, false);
    if (abandoned(ft)) {
        llmc_upstream_cancel(ft->call);
        on_done(ft, LLMC_ECANCELED, "every client left and --complete-abandoned is off");
    }
}

static llmc_entry_t *make_entry(fetch_t *ft, const char *body, size_t body_len, int64_t now)
{
    llmc_flight_t *f = ft->f;
    const char *tags[LLMC_POLICY_MAX_TAGS];
    const char *t = ft->tags;
    for (unsigned i = 0; i < ft->ntags; i++, t += strlen(t) + 1)
        tags[i] = t;
    /* Read once, here, so that every hit can say what it saved. */
    if (ft->has_usage < 0)
        ft->has_usage = llmc_usage_scan(body, body_len, &ft->usage);
    llmc_entry_spec_t spec = {
        .key = &f->key,
        .status = (uint16_t)f->status,
        .flags = (ft->private_scope ? LLMC_ENTRY_PRIVATE : 0) |
                 (ft->as ? LLMC_ENTRY_FROM_STREAM : 0),
        .created_ms = now,
        .expires_ms = now + ft->ttl_ms,
        .content_type = ft->as || !f->content_type[0] ? "application/json" : f->content_type,
        .ns = ft->ns,
        .model = ft->model,
        .route = ft->route,
        .tags = tags,
        .ntags = ft->ntags,
        .body = body,
        .body_len = body_len,
        .usage = ft->has_usage ? &ft->usage : NULL,
    };
    return llmc_entry_new(&spec);
}

static void count_error(llmc_counters_t *c, int err)
{
    if (err == LLMC_ECONNECT)
        LLMC_COUNT(c, upstream_err_connect);
    else if (err == LLMC_ETIMEDOUT)
        LLMC_COUNT(c, upstream_err_timeout);
    else
        LLMC_COUNT(c, upstream_err_io);
}

/* A stream's answer: complete (as the dialect says: finish_reason and
   [DONE] for chat, response.completed for the Responses API) or nothing.
   Hands the assembled answer to the flight and returns it (flight-owned). */
static const char *stream_answer(fetch_t *ft, size_t *len)
{
    assemble_events(ft, true);
    char *json = NULL;
    if (ft->sse_err || !ft->d->asm_complete(ft->as) || ft->d->asm_result(ft->as, &json, len) < 0)
        return NULL;
    llmc_flight_set_assembled(ft->f, json, *len);
    return json;
}

/* Decides what a finished 200 answer is: the JSON to cache, the JSON of a
   non-answer (*not_answer set), or invalid (NULL). A stream's assembled
   completion is the assembler's own making, always of the answer's shape. */
static const char *answer_json(fetch_t *ft, size_t *len, bool *not_answer)
{
    llmc_flight_t *f = ft->f;
    if (ft->as)
        return stream_answer(ft, len);
    *len = f->body_len;
    if (ft->valid < 0)
        ft->valid = (int)llmc_shape_check(ft->route, f->body, f->body_len);
    *not_answer = ft->valid == LLMC_SHAPE_NOT_ANSWER;
    return ft->valid != LLMC_SHAPE_INVALID ? f->body : NULL;
}

/* Answers bigger than this are checked on libuv's thread pool: jansson
   reads some 40 MB/s, and a loop must never stop for a parse. */
#define INLINE_CHECK_MAX (256u << 10)

static void finish(fetch_t *ft, int err, const char *detail);

static void check_work(uv_work_t *w)
{
    fetch_t *ft = w->data;
    ft->valid = (int)llmc_shape_check(ft->route, ft->f->body, ft->f->body_len);
    if (ft->valid == LLMC_SHAPE_ANSWER)
        ft->has_usage = llmc_usage_scan(ft->f->body, ft->f->body_len, &ft->usage);
}

static void check_done(uv_work_t *w, int status)
{
    fetch_t *ft = w->data;
    ft->validating = false;
    if (status != 0) /* canceled: the loop is closing */
        ft->valid = LLMC_SHAPE_INVALID;
    finish(ft, 0, NULL);
}

/* Starts the off-loop check when the answer needs one; true when started. */
static bool check_off_loop(fetch_t *ft)
{
    llmc_flight_t *f = ft->f;
    if (ft->as || ft->cut || f->status != 200 || f->body_len <= INLINE_CHECK_MAX)
        return false;
    ft->work.data = ft;
    ft->validating = uv_queue_work(&ft->w->loop, &ft->work, check_work, check_done) == 0;
    return ft->validating;
}

static void on_done(void *arg, int err, const char *detail)
{
    fetch_t *ft = arg;
    uint64_t backoff = backoff_ms(ft);
    if (ft->retrying || (err && err != LLMC_ECANCELED && retryable_error(ft, err) &&
                         retry_fits(ft, backoff))) {
        if (schedule_retry(ft, ft->retrying ? ft->retry_wait_ms : backoff))
            return;
    }
    ft->call = NULL;
    if (!err && check_off_loop(ft))
        return;
    finish(ft, err, detail);
}

/* The end of a fetch: count, store what may be stored, release the waiters. */
static void finish(fetch_t *ft, int err, const char *detail)
{
    llmc_flight_t *f = ft->f;
    llmc_counters_t *c = &ft->w->ctr;
    llmc_entry_t *e = NULL;
    bool invalid = false, not_answer = false;
    size_t len = 0;
    const char *json = NULL;
    if (err) {
        count_error(c, err);
    } else if (f->status / 100 != 2) {
        LLMC_COUNT(c, upstream_err_status);
    } else if (f->status != 200) {
        not_answer = true; /* 201, 204, ...: passed on as they came */
    } else if (!(json = answer_json(ft, &len, &not_answer))) {
        LLMC_COUNT(c, upstream_err_invalid);
        invalid = true;
    }
    if (not_answer) {
        if (ft->store) /* counted where it would have been stored: not /v1/models */
            LLMC_COUNT(c, not_stored_not_answer);
        llmc_flight_set_not_answer(f);
    } else if (json && ft->store) {
        int64_t now = llmc_now_ms();
        llmc_tier_set_t *tiers = ft->w->gw->tiers;
        /* Copying an answer the front tier will refuse would stall the
           loop for nothing (tens of ms for tens of MB): refuse it first. */
        bool fits = len <= llmc_tier_set_max_body(tiers);
        if (!fits)
            llmc_tier_set_refuse(tiers, ft->w->id, &f->key);
        e = fits ? make_entry(ft, json, len, now) : NULL;
        /* Stored before the flight finishes (flight.h): no moment when a
           request finds neither. A refusal as too big keeps it nowhere:
           --max-entry-percent promises such an answer is served, not
           stored, and it goes out marked no-store. So does an answer a
           purge selected while it was asked for: its waiters get it (they
           asked before the purge was done), the cache does not. */
        int rc = !fits ? LLMC_E2BIG
                 : e   ? llmc_tier_set_store(tiers, ft->w->id, e, now, ft->purge_seq)
                       : LLMC_ENOMEM;
        if (rc == 0)
            LLMC_COUNT(c, stored);
        else if (rc == LLMC_ECANCELED)
            LLMC_COUNT(c, not_stored_purged);
        else
            LLMC_COUNT(c, not_stored_too_big);
        if (rc < 0) {
            llmc_entry_unref(e);
            e = NULL;
        }
    }
    llmc_flight_finish(f, err, detail, invalid, e);
    llmc_entry_unref(e);
    fetch_free(ft);
}

/* libcurl's words for a failure name hosts, ports and addresses of the
   operator's network ("Failed to connect to 10.0.0.7 port 8000"): they go
   to stderr under the id of the request that started the call, and the
   clients (every waiter of the flight) get that id instead. */
static void on_call_done(void *arg, int err, const char *detail)
{
    fetch_t *ft = arg;
    char shown[96], url[1100];
    if (err != LLMC_ECANCELED)
        llmc_hist_observe(&ft->w->hist[LLMC_H_UPSTREAM], uv_hrtime() - ft->try_ns);
    if (err && err != LLMC_ECANCELED) {
        llmc_upstream_url_redact(ft->url, url, sizeof(url));
        fprintf(stderr, "llmcached: request %s: upstream call %s %s failed: %s: %s\n", ft->call_id,
                ft->method, url, llmc_strerror(err), detail ? detail : "");
        snprintf(shown, sizeof(shown), "the gateway's log has the detail, under request %s",
                 ft->call_id);
        detail = shown;
    }
    on_done(ft, err, detail);
}

static const llmc_upstream_handler_t handler = {on_head, on_data, on_call_done};

static int add_hdr(char **out, size_t cap, size_t *n, const char *name, const char *value)
{
    if (*n >= cap)
        return 0;
    if (asprintf(&out[*n], "%s%s", name, value) < 0)
        return LLMC_ENOMEM;
    (*n)++;
    return 0;
}

int llmc__gw_upstream_hdrs(const gw_req_t *gr, const char *ctype, char **out, size_t cap,
                           size_t *n)
{
    llmc_gw_t *gw = gr->w->gw;
    int rc = ctype ? add_hdr(out, cap, n, "Content-Type: ", ctype) : 0;
    /* With --client-keys the client's credential is the gateway's key, not
       the model's: it never goes upstream. */
    const char *own = llmc_dialect_auth(gw, gr->dialect), *line = "";
    const char *auth = own              ? own
                       : gw->client_keys ? NULL
                                         : llmc_dialect_credential(gr->dialect, gr->req, &line);
    if (rc == 0 && auth)
        rc = add_hdr(out, cap, n, own ? "" : line, auth);
    /* The same lines the key was made with (handler.c): what is forwarded
       is what is keyed. */
    char fwd[LLMC_FWD_BYTES];
    size_t len = llmc_forward_lines(&gw->forward, gr->req, fwd, sizeof(fwd));
    for (char *l = fwd, *eol; rc == 0 && l < fwd + len; l = eol + 2) {
        eol = strstr(l, "\r\n");
        *eol = '\0';
        rc = add_hdr(out, cap, n, "", l);
    }
    /* The dialect's headers that change the answer go as they came. */
    for (const char *const *h = llmc_dialect_of(gr->dialect)->key_headers; rc == 0 && *h; h++) {
        char *owned = NULL;
        const char *v = llmc_dialect_header(gr->req, *h, &owned);
        char name[64];
        snprintf(name, sizeof(name), "%s: ", *h);
        if (v && strlen(v) < 400)
            rc = add_hdr(out, cap, n, name, v);
        free(owned);
    }
    return rc;
}

/* Copies what the call needs, so it can be sent again for a retry. */
static int keep_request(fetch_t *ft, gw_req_t *gr, const char *method, const char *url,
                        const char *body, size_t body_len)
{
    ft->method = strdup(method);
    ft->url = strdup(url);
    ft->body_len = body_len;
    if (!ft->method || !ft->url || (body && !(ft->body = malloc(body_len + 1))))
        return LLMC_ENOMEM;
    if (body)
        memcpy(ft->body, body, body_len);
    return llmc__gw_upstream_hdrs(gr, body ? "application/json" : NULL, ft->hdrs,
                                  sizeof(ft->hdrs) / sizeof(ft->hdrs[0]), &ft->nhdrs);
}

static int start_call(fetch_t *ft)
{
    llmc_upstream_request_t r = {
        .method = ft->method, .url = ft->url, .body = ft->body, .body_len = ft->body_len,
        .headers = (const char *const *)ft->hdrs, .nheaders = ft->nhdrs,
        .allow_resend = ft->w->gw->cfg->retry_unsafe,
        /* Shared answers, or the operator's key: its organisation, quota and
           request ids are not the clients' to see. */
        .drop_account_hdrs = llmc_dialect_shared(ft->w->gw, ft->d) ||
                             llmc_dialect_auth(ft->w->gw, ft->d) || ft->w->gw->client_keys,
    };
    LLMC_COUNT(&ft->w->ctr, upstream_calls);
    ft->try_ns = uv_hrtime();
    return llmc_upstream_start(ft->w->upstream, &r, &handler, ft, &ft->call);
}

/* Another gateway's call answered, its entry brought by the lease: the
   flight ends with it as if this gateway had made the call. The memory
   tier keeps it (the shared tier has it already); a streaming flight gets
   it replayed as events, and its assembled form for plain waiters. */
static void fill_from(fetch_t *ft, llmc_entry_t *e)
{
    llmc_flight_t *f = ft->f;
    llmc_gw_t *gw = ft->w->gw;

    (void)llmc_tier_set_front_put(gw->tiers, ft->w->id, e, llmc_now_ms());
    pthread_mutex_lock(&f->mu);
    bool usage = f->upstream_usage;
    f->filled_by = llmc_tier_set_leaser_name(gw->tiers);
    pthread_mutex_unlock(&f->mu);
    if (!f->is_stream) {
        llmc_flight_head(f, e->status, llmc_entry_content_type(e), NULL, 0);
        if (llmc_flight_data(f, e->body, e->body_len) < 0) {
            llmc_flight_finish(f, LLMC_ENOMEM, "out of memory", false, NULL);
            return;
        }
        llmc_flight_finish(f, 0, NULL, false, e);
        return;
    }
    char *sse = NULL, *json = malloc((size_t)e->body_len + 1);
    size_t n = 0;
    if (!json || ft->d->replay(e->body, e->body_len, usage, &sse, &n) < 0) {
        free(json);
        llmc_flight_finish(f, LLMC_EBADRESP, "the shared answer cannot be replayed as a stream",
                           false, NULL);
        return;
    }
    memcpy(json, e->body, e->body_len);
    json[e->body_len] = '\0';
    llmc_flight_head(f, e->status, "text/event-stream", NULL, 0);
    int rc = llmc_flight_data(f, sse, n);
    free(sse);
    llmc_flight_set_assembled(f, json, e->body_len);
    llmc_flight_finish(f, rc, rc < 0 ? "out of memory" : NULL, false, rc < 0 ? NULL : e);
}

/* The lease's answer, on this worker's loop. */
static void lease_done(llmc_tier_lease_t *ls, int result)
{
    fetch_t *ft = (fetch_t *)((char *)ls - offsetof(fetch_t, lease));

    ft->leasing = false;
    if (result == LLMC_LEASE_FILLED) {
        fill_from(ft, ls->entry);
        llmc_entry_unref(ls->entry);
        ls->entry = NULL;
        fetch_free(ft);
        return;
    }
    if (result < 0) { /* canceled: the gateway is shutting down */
        llmc_flight_finish(ft->f, result, "the gateway is shutting down", false, NULL);
        fetch_free(ft);
        return;
    }
    ft->lease_held = result == LLMC_LEASE_WON;
    ft->started_ms = uv_now(&ft->w->loop); /* the timeout bounds the call, not the wait */
    int rc = start_call(ft);
    if (rc < 0) {
        llmc_flight_finish(ft->f, rc, "could not start the upstream call", false, NULL);
        fetch_free(ft);
    }
}

int llmc__gw_fetch_start(gw_req_t *gr, const char *method, const char *url,
                         const char *body, size_t body_len, bool store, const char *model)
{
    llmc_gw_t *gw = gr->w->gw;
    fetch_t *ft = calloc(1, sizeof(*ft));
    if (!ft)
        return LLMC_ENOMEM;
    ft->f = gr->flight;
    llmc_flight_ref(ft->f);
    ft->w = gr->w;
    ft->store = store;
    ft->background = gr->verify;
    ft->d = llmc_dialect_of(gr->dialect);
    if (gr->flight->is_stream && !(ft->as = ft->d->asm_new())) {
        fetch_free(ft);
        return LLMC_ENOMEM;
    }
    /* Before the call starts, so every waiter that sees a byte of the
       answer sees this too. */
    pthread_mutex_lock(&ft->f->mu);
    ft->f->upstream_usage = gr->stream && gr->usage_asked;
    pthread_mutex_unlock(&ft->f->mu);
    ft->private_scope = gr->private_scope;
    ft->ttl_ms = gr->policy.ttl_ms;
    snprintf(ft->ns, sizeof(ft->ns), "%s", gr->policy.ns);
    snprintf(ft->model, sizeof(ft->model), "%s", model ? model : "");
    ft->route = gr->path;
    snprintf(ft->call_id, sizeof(ft->call_id), "%u-%llu", gr->w->id,
             gr->req ? (unsigned long long)gr->req->id : 0ull);
    memcpy(ft->tags, gr->policy.tags, sizeof(ft->tags));
    ft->ntags = gr->policy.ntags;
    ft->purge_seq = llmc_tier_set_purge_seq(gw->tiers);

    if (keep_request(ft, gr, method, url, body, body_len) < 0) {
        fetch_free(ft);
        return LLMC_ENOMEM;
    }
    ft->retries_left = (unsigned)gw->cfg->upstream_retries;
    ft->valid = -1;
    ft->has_usage = -1;
    ft->next = gr->w->fetches;
    if (ft->next)
        ft->next->prev = ft;
    gr->w->fetches = ft;
    /* A verification needs this gateway's own call: another's answer comes
       only to the front tier, never judged. */
    if (store && gr->policy.read && !gr->fwd && !ft->background &&
        llmc_tier_set_leases(gw->tiers)) {
        ft->lease.key = ft->f->key;
        ft->lease.worker = gr->w->id;
        ft->lease.max_wait_ms = gw->cfg->upstream_timeout;
        ft->lease.done = lease_done;
        int lr = llmc_tier_set_lease(gw->tiers, &ft->lease);
        if (lr == LLMC_EAGAIN) {
            ft->leasing = true;
            return 0;
        }
        ft->lease_held = lr == LLMC_LEASE_WON;
    }
    ft->started_ms = uv_now(&gr->w->loop);
    int rc = start_call(ft);
    if (rc < 0) {
        fetch_free(ft);
        return rc;
    }
    return 0;
}

void llmc__gw_fetch_cancel_all(llmc_worker_t *w)
{
    fetch_t *next;
    for (fetch_t *ft = w->fetches; ft; ft = next) {
        next = ft->next;
        if (ft->validating)
            continue; /* its check ends on its own and finishes it */
        if (ft->call)
            llmc_upstream_cancel(ft->call);
        llmc_flight_finish(ft->f, LLMC_ECANCELED, "the gateway is shutting down", false, NULL);
        fetch_free(ft);
    }
}
