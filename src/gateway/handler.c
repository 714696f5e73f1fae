/*
 * gateway/handler.c: a request's path from route to answer.
 *
 * route -> read the cache controls into a policy -> canonical body and key
 * -> walk the tiers -> hit: answer now; miss: join (or start) the flight for
 * the key and wait on it. respond.c turns entries and flights into answers;
 * fetch.c runs the upstream call; worker.c owns the threads and inboxes.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - GET /ask is a chat completion in disguise: it is keyed exactly like the
 *   equivalent POST /v1/chat/completions, so the two share cached answers.
 * - The body that goes upstream is the client's bytes, untouched, unless
 *   the "cache" extension had to be cut out of it.
 * - "stream" is not part of the key: a streamed answer is stored as the
 *   assembled completion, so one entry answers both forms (replayed as SSE
 *   for a streaming request). A streaming miss is relayed live to its leader
 *   and to every streaming request that joins it, which first gets what was
 *   relayed so far.
 */
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/gw_int.h"
#include "llmc/cache.h"
#include "llmc/error.h"
#include "llmc/fpmap.h"

static const struct route_def {
    const char *path;
    int method;
    gw_route_t route;
} routes[] = {
    {"/v1/chat/completions", HTTP_POST, R_CHAT},
    {"/v1/completions", HTTP_POST, R_COMPLETIONS},
    {"/v1/embeddings", HTTP_POST, R_EMBEDDINGS},
    {"/v1/models", HTTP_GET, R_MODELS},
    {"/ask", HTTP_GET, R_ASK},
    {"/healthz", HTTP_GET, R_HEALTH},
    {"/stats", HTTP_GET, R_STATS},
};

/* Finds the route; when the path exists with other methods only, sets
   *allow to the Allow header line listing them (RFC 9110 15.5.6: a 405
   must name what the resource accepts). */
static gw_route_t find_route(const llmc_http_req_t *req, const char **allow)
{
    *allow = NULL;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(req->path, routes[i].path) != 0)
            continue;
        if (req->method == routes[i].method ||
            (req->method == HTTP_HEAD && routes[i].method == HTTP_GET))
            return routes[i].route;
        *allow = routes[i].method == HTTP_GET ? "Allow: GET, HEAD\r\n" : "Allow: POST\r\n";
    }
    return R_NONE;
}

/* min-fresh adds to an entry's age and max-stale forgives that much past its
   lifetime, as Squid reads the pair: one bound, so that a fresher entry is
   never refused where a staler one would be taken. */
gw_use_t llmc__gw_usable(const llmc_policy_t *p, const llmc_entry_t *e, int64_t now_ms)
{
    if (p->max_age_ms != LLMC_POLICY_UNSET && now_ms - e->created_ms > p->max_age_ms)
        return USE_NO;
    int64_t left = e->expires_ms - now_ms; /* <= 0 once expired */
    int64_t shortfall;                     /* > 0: not as fresh as the client wants */
    if (__builtin_sub_overflow(p->min_fresh_ms, left, &shortfall))
        shortfall = INT64_MAX;
    if (left > 0 && shortfall <= 0)
        return USE_FRESH;
    if (p->max_stale_ms > 0 && shortfall <= p->max_stale_ms)
        return left > 0 ? USE_FRESH : USE_STALE;
    return USE_NO;
}

const char *llmc__gw_list_header(const llmc_http_req_t *req, const char *name, char **owned)
{
    const char *first = NULL;
    size_t n = 0, len = 0;
    *owned = NULL;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) != 0)
            continue;
        first = first ? first : req->headers[i].value;
        len += req->headers[i].value_len + 2;
        n++;
    }
    if (n < 2 || !(*owned = malloc(len)))
        return first; /* out of memory: the first line is better than none */
    char *p = *owned;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, name) != 0)
            continue;
        if (p != *owned) {
            memcpy(p, ", ", 2);
            p += 2;
        }
        memcpy(p, req->headers[i].value, req->headers[i].value_len);
        p += req->headers[i].value_len;
    }
    *p = '\0';
    return *owned;
}

/* Walks the tiers in order; a hit in a slower tier is copied into the faster
   ones. Returns a referenced entry or NULL. */
static llmc_entry_t *tiers_get(llmc_gw_t *gw, const llmc_key_t *key, int64_t now,
                               const char **tier)
{
    for (unsigned i = 0; i < gw->ntiers; i++) {
        llmc_entry_t *e;
        if (gw->tiers[i]->ops->get(gw->tiers[i], key, now, &e) != 0)
            continue;
        for (unsigned j = 0; j < i; j++)
            gw->tiers[j]->ops->put(gw->tiers[j], e, now);
        *tier = gw->tiers[i]->ops->name;
        return e;
    }
    return NULL;
}

/* The scope part of the key: "" when shared, else a hash of the credential,
   so that one API key's answers are never served to another. */
static void scope_of(const llmc_gw_t *gw, const llmc_http_req_t *req, char out[65],
                     bool *private_scope)
{
    *private_scope = !gw->shared_scope;
    out[0] = '\0';
    if (gw->shared_scope)
        return;
    const char *auth = llmc_http_header(req, "authorization");
    llmc_key_t h;
    llmc_key_build(&h, "scope", "", "", "", auth ? auth : "", auth ? strlen(auth) : 0);
    llmc_key_hex(&h, out);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes a query value ('+' is a space) into out (cap bytes, NUL
   added) and its length into *len: a decoded %00 is part of the value. */
static int query_param(const char *query, const char *name, char *out, size_t cap, size_t *len)
{
    size_t nlen = strlen(name);
    for (const char *p = query; p && *p; p = strchr(p, '&'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, nlen) != 0 || p[nlen] != '=')
            continue;
        size_t n = 0;
        for (p += nlen + 1; *p && *p != '&'; p++) {
            int c = (unsigned char)*p;
            if (c == '+')
                c = ' ';
            else if (c == '%') {
                int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
                if (lo < 0)
                    return LLMC_EINVAL;
                c = hi * 16 + lo;
                p += 2;
            }
            if (n + 1 >= cap)
                return LLMC_E2BIG;
            out[n++] = (char)c;
        }
        out[n] = '\0';
        *len = n;
        return 0;
    }
    return LLMC_ENOENT;
}

/*
 * A query parameter of /ask as a JSON string. Its whole decoded length is
 * kept: cut at a %00, "a%00b" would be keyed, and answered, as "a". A bad
 * value is the client's to fix, never replaced by a default. Returns 0,
 * LLMC_ENOENT when absent or empty, LLMC_EINVAL with a message in err, or
 * LLMC_ENOMEM.
 */
static int query_json(const char *query, const char *name, json_t **out, char *err,
                      size_t errlen)
{
    size_t cap = strlen(query) + 1, len = 0; /* decoding never grows it */
    char *buf = malloc(cap);
    if (!buf)
        return LLMC_ENOMEM;
    int rc = query_param(query, name, buf, cap, &len);
    if (rc == 0 && len == 0)
        rc = LLMC_ENOENT;
    if (rc == LLMC_EINVAL)
        snprintf(err, errlen, "query parameter %s is not valid percent-encoding", name);
    if (rc == 0 && !(*out = json_stringn(buf, len))) {
        snprintf(err, errlen, "query parameter %s is not valid UTF-8", name);
        rc = LLMC_EINVAL;
    }
    free(buf);
    return rc;
}

/* Builds the chat request that GET /ask stands for. */
static int ask_body(gw_req_t *gr, char **body, size_t *len, char *err, size_t errlen)
{
    const char *query = gr->req->query;
    json_t *q = NULL, *model = NULL;
    int rc = query_json(query, "q", &q, err, errlen);
    if (rc == LLMC_ENOENT) {
        snprintf(err, errlen, "missing query parameter q");
        rc = LLMC_EINVAL;
    }
    if (rc == 0 && (rc = query_json(query, "model", &model, err, errlen)) == LLMC_ENOENT)
        rc = (model = json_string(gr->w->gw->cfg->ask_model)) ? 0 : LLMC_ENOMEM;
    if (rc < 0) {
        json_decref(q);
        if (rc == LLMC_ENOMEM)
            snprintf(err, errlen, "out of memory");
        return rc;
    }
    json_t *root = json_pack("{s:o, s:[{s:s, s:o}]}", "model", model, "messages",
                             "role", "user", "content", q);
    *body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!*body) {
        snprintf(err, errlen, "out of memory");
        return LLMC_ENOMEM;
    }
    *len = strlen(*body);
    return 0;
}

static void respond_json(llmc_http_req_t *req, int status, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    static const char h[] = "Content-Type: application/json\r\nCache-Control: no-store\r\n";
    llmc_http_respond_copy(req, status, h, sizeof(h) - 1, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
    json_decref(obj);
}

static void respond_stats(llmc_worker_t *w, llmc_http_req_t *req)
{
    llmc_gw_t *gw = w->gw;
    llmc_counters_t sum;
    memset(&sum, 0, sizeof(sum));
    for (unsigned i = 0; i < gw->nworkers; i++)
        llmc_counters_add(&sum, &gw->workers[i].ctr);
    json_t *o = json_object();
    llmc_counters_to_json(&sum, o);
    json_t *tiers = json_object();
    for (unsigned i = 0; i < gw->ntiers; i++) {
        llmc_tier_stats_t ts;
        memset(&ts, 0, sizeof(ts));
        gw->tiers[i]->ops->stats(gw->tiers[i], &ts);
        if (i == 0) { /* the memory tier is the cache the top-level fields describe */
            json_object_set_new(o, "entries", json_integer((json_int_t)ts.entries));
            json_object_set_new(o, "bytes", json_integer((json_int_t)ts.bytes));
            json_object_set_new(o, "max_bytes", json_integer((json_int_t)ts.max_bytes));
            json_object_set_new(o, "evicted_size", json_integer((json_int_t)ts.evicted_size));
            json_object_set_new(o, "evicted_ttl", json_integer((json_int_t)ts.evicted_ttl));
        }
        json_object_set_new(tiers, gw->tiers[i]->ops->name,
            json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
                      "entries", (json_int_t)ts.entries, "bytes", (json_int_t)ts.bytes,
                      "max_bytes", (json_int_t)ts.max_bytes, "hits", (json_int_t)ts.hits,
                      "misses", (json_int_t)ts.misses, "stored", (json_int_t)ts.stored,
                      "evicted_size", (json_int_t)ts.evicted_size,
                      "evicted_ttl", (json_int_t)ts.evicted_ttl, "purged", (json_int_t)ts.purged,
                      "errors", (json_int_t)ts.errors, "dropped", (json_int_t)ts.dropped));
    }
    json_object_set_new(o, "tiers", tiers);
    /* The entry allocator's own totals: page_bytes beyond used_bytes is what
       the slab loses to partly filled pages, which /stats bytes cannot show. */
    llmc_slab_stats_t ss;
    llmc_entry_mem_stats(&ss);
    json_object_set_new(o, "entry_slab",
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "page_bytes", (json_int_t)ss.page_bytes,
                  "used_bytes", (json_int_t)ss.used_bytes, "pages", (json_int_t)ss.pages,
                  "blocks", (json_int_t)ss.blocks, "big_bytes", (json_int_t)ss.big_bytes,
                  "big_blocks", (json_int_t)ss.big_blocks,
                  "released_pages", (json_int_t)ss.released));
    json_object_set_new(o, "in_flight", json_integer((json_int_t)llmc_flight_table_count(gw->flights)));
    json_object_set_new(o, "threads", json_integer(gw->nworkers));
    json_object_set_new(o, "uptime_s", json_integer((llmc_now_ms() - gw->started_ms) / 1000));
    respond_json(req, 200, o);
}

/* Answers when no usable entry exists and the client forbade the upstream. */
static void only_if_cached_miss(gw_req_t *gr)
{
    LLMC_COUNT(&gr->w->ctr, only_if_cached_misses);
    gr->xcache = "MISS";
    llmc__gw_error(gr, 504, "cache_miss", "only_if_cached",
                   "no cached answer for this request and Cache-Control: only-if-cached "
                   "forbids calling the model");
}

/* A miss: join the flight for the key (or lead a new one) and wait. */
static void go_upstream(gw_req_t *gr, const char *path, const char *body, size_t body_len,
                        const char *model)
{
    llmc_gw_t *gw = gr->w->gw;
    bool coalesce = gr->policy.write && gr->route != R_MODELS;
    bool created = true;
    gr->waited = true;
    gr->flight = coalesce ? llmc_flight_join(gw->flights, &gr->key, gr->stream, &created)
                          : llmc_flight_new_private(&gr->key, gr->stream);
    if (!gr->flight) {
        llmc__gw_error(gr, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    gr->xcache = !coalesce ? "BYPASS" : created ? "MISS" : "COALESCED";
    if (!coalesce)
        LLMC_COUNT(&gr->w->ctr, bypasses);
    else if (created)
        LLMC_COUNT(&gr->w->ctr, misses);
    else
        LLMC_COUNT(&gr->w->ctr, coalesced);
    /* Only a stream that joins a streaming call is relayed live; any other
       mix waits for the end and gets the answer converted (respond.c). */
    gr->fw.wants_data = gr->stream && gr->flight->is_stream;
    if (created) {
        char url[1400];
        snprintf(url, sizeof(url), "%s%s", gw->upstream_base, path + 3 /* strip "/v1" */);
        int rc = llmc__gw_fetch_start(gr, gr->route == R_MODELS ? "GET" : "POST", url,
                                      body, body_len, coalesce, model);
        if (rc < 0) {
            llmc_flight_finish(gr->flight, rc, "could not start the upstream call", false, NULL);
            llmc__gw_respond_flight(gr);
            return;
        }
    }
    if (!llmc_flight_attach(gr->flight, &gr->fw))
        llmc__gw_respond_flight(gr); /* finished before we got here */
    else if (gr->fw.wants_data && !created)
        llmc__gw_stream_step(gr); /* catch up at once on what was relayed so far */
}

/* Flags remembered with a fingerprint: what the body said that the fast
   path needs without parsing it again. */
enum { FP_STREAM = 1u << 0, FP_USAGE = 1u << 1 };

/* The fingerprint of the raw request: everything the canonical key is made
   of, but from the client's bytes as they came (the body, or the query of
   GET /ask), so that a repeated request needs no JSON work at all. */
static void fingerprint(const gw_req_t *gr, llmc_key_t *fp)
{
    const llmc_http_req_t *req = gr->req;
    /* The credential itself rather than its hash: the map is per process
       and the hash would be one more SHA-256 on every per-key hit. */
    const char *auth = gr->w->gw->shared_scope ? NULL : llmc_http_header(req, "authorization");
    const char *scope = auth ? auth : "";
    const char *ns = llmc_http_header(req, "x-cache-namespace");
    const char *raw = gr->route == R_ASK ? req->query : req->body;
    size_t len = gr->route == R_ASK ? strlen(req->query) : req->body_len;
    llmc_key_build(fp, req->path, "fingerprint-v1", scope, ns ? ns : "", raw ? raw : "", len);
}

/* The body and path a cacheable request stands for: the client's own, or
   for GET /ask the chat completion built from its query. */
static int request_body(gw_req_t *gr, char **ask, const char **body, size_t *len,
                        const char **path, char *err, size_t errlen)
{
    *body = gr->req->body;
    *len = gr->req->body_len;
    *path = gr->req->path;
    if (gr->route != R_ASK)
        return 0;
    *path = "/v1/chat/completions";
    int rc = ask_body(gr, ask, len, err, errlen);
    *body = *ask;
    if (rc < 0)
        llmc__gw_error(gr, rc == LLMC_ENOMEM ? 503 : 400, "invalid_request_error",
                       "invalid_query", err);
    return rc;
}

static int parse_canon(gw_req_t *gr, const char *body, size_t len, llmc_canon_t *canon)
{
    char err[256] = "";
    int rc = llmc_canon_parse(body, len, canon, err, sizeof(err));
    if (rc < 0)
        llmc__gw_error(gr, 400, "invalid_request_error", "invalid_json", err);
    return rc;
}

/* Looks the key up in the tiers. Answers and returns true on a usable
   entry; else keeps an expired one for stale-if-error and returns false. */
static bool answer_from_cache(gw_req_t *gr)
{
    llmc_gw_t *gw = gr->w->gw;
    int64_t now = llmc_now_ms();
    const char *tier = NULL;
    llmc_entry_t *e = tiers_get(gw, &gr->key, now, &tier);
    gw_use_t use = e ? llmc__gw_usable(&gr->policy, e, now) : USE_NO;
    if (use != USE_NO && gr->policy.read) {
        gr->tier = tier;
        llmc__gw_respond_entry(gr, e, use == USE_FRESH ? "HIT" : "STALE", NULL, now);
        llmc_entry_unref(e);
        return true;
    }
    /* An answer was there but may not be used: say which way (RFC 9211). */
    if (e)
        gr->fwd = now >= e->expires_ms ? "stale" : "request";
    if (e && now >= e->expires_ms && now - e->expires_ms <= gw->cfg->stale_if_error)
        gr->stale = e; /* kept in case the upstream fails */
    else
        llmc_entry_unref(e);
    return false;
}

/* A cacheable route: fingerprint (or canonical key), policy, tiers; a miss
   goes upstream. */
static void handle_cached(gw_req_t *gr)
{
    llmc_http_req_t *req = gr->req;
    llmc_gw_t *gw = gr->w->gw;
    char err[256] = "", scope[65];
    char *ask = NULL, *fwd = NULL;
    const char *body = NULL, *path = NULL;
    size_t body_len = 0;
    llmc_canon_t canon;
    memset(&canon, 0, sizeof(canon));
    llmc_key_t fp;
    uint32_t fl = 0;

    gr->private_scope = !gw->shared_scope;
    fingerprint(gr, &fp);
    bool known = llmc_fpmap_get(gw->fpmap, &fp, &gr->key, &fl);
    if (!known) {
        scope_of(gw, req, scope, &gr->private_scope);
        if (request_body(gr, &ask, &body, &body_len, &path, err, sizeof(err)) < 0 ||
            parse_canon(gr, body, body_len, &canon) < 0)
            goto out;
    }
    char *cc_owned, *pragma_owned;
    const char *cc = llmc__gw_list_header(req, "cache-control", &cc_owned);
    const char *pragma = llmc__gw_list_header(req, "pragma", &pragma_owned);
    int prc = llmc_policy_parse(&gr->policy, cc, pragma, llmc_http_header(req, "x-cache-ttl"),
                                llmc_http_header(req, "x-cache-namespace"), canon.cache_ext,
                                gw->cfg->ttl, gw->cfg->max_ttl, err, sizeof(err));
    free(cc_owned);
    free(pragma_owned);
    if (prc < 0) {
        llmc__gw_error(gr, 400, "invalid_request_error", "invalid_cache_control", err);
        goto out;
    }
    if (!known) {
        fl = (canon.stream && gr->route != R_EMBEDDINGS && gr->route != R_ASK ? FP_STREAM : 0) |
             (canon.include_usage ? FP_USAGE : 0);
        llmc_key_build(&gr->key, path, gw->key_upstream, scope, gr->policy.ns,
                       canon.text, canon.text_len);
        /* The body's own "cache" settings are not in the fingerprint's
           reach, so such requests always take the full path. */
        if (!canon.cache_ext)
            llmc_fpmap_put(gw->fpmap, &fp, &gr->key, fl);
    }
    gr->stream = fl & FP_STREAM;
    gr->include_usage = fl & FP_USAGE;
    llmc_key_hex(&gr->key, gr->keyhex);

    if ((gr->policy.read || gr->policy.only_if_cached) && answer_from_cache(gr))
        goto out;
    if (gr->policy.only_if_cached) {
        only_if_cached_miss(gr);
        goto out;
    }
    if (known && (request_body(gr, &ask, &body, &body_len, &path, err, sizeof(err)) < 0 ||
                  parse_canon(gr, body, body_len, &canon) < 0))
        goto out;
    /* Forward the client's own bytes unless the extension had to go. */
    if (canon.cache_ext && gr->route != R_ASK && (fwd = json_dumps(canon.root, JSON_COMPACT))) {
        body = fwd;
        body_len = strlen(fwd);
    }
    go_upstream(gr, path, body, body_len, canon.model);
out:
    llmc_canon_free(&canon);
    free(fwd);
    free(ask);
}

static void on_abort(llmc_http_req_t *req)
{
    gw_req_t *gr = req->data;
    gr->req = NULL;
    LLMC_COUNT(&gr->w->ctr, aborted);
    llmc__gw_pacer_abort(gr);
    if (gr->flight)
        llmc_flight_detach(gr->flight, &gr->fw);
}

static void not_found(llmc_http_req_t *req, const char *allow)
{
    char msg[300];
    if (allow)
        snprintf(msg, sizeof(msg), "method %s is not allowed on %.200s", req->method_name, req->path);
    else
        snprintf(msg, sizeof(msg), "no route for %s %.200s", req->method_name, req->path);
    llmc_http_respond_error(req, allow ? 405 : 404, allow, "invalid_request_error",
                            allow ? "method_not_allowed" : "not_found", msg);
}

void llmc_gw_handle(llmc_http_req_t *req, void *ctx)
{
    llmc_worker_t *w = ctx;
    const char *allow;
    gw_route_t route = find_route(req, &allow);
    if (route == R_NONE) {
        not_found(req, allow);
        return;
    }
    if (route == R_HEALTH) {
        static const char h[] = "Content-Type: application/json\r\nCache-Control: no-store\r\n";
        llmc_http_respond_copy(req, 200, h, sizeof(h) - 1, "{\"status\":\"ok\"}", 15);
        return;
    }
    if (route == R_STATS) {
        respond_stats(w, req);
        return;
    }
    gw_req_t *gr = llmc__gw_req_new(w);
    if (!gr) {
        llmc_http_respond_error(req, 503, NULL, "server_error", "out_of_memory", "out of memory");
        return;
    }
    gr->req = req;
    gr->w = w;
    gr->route = route;
    gr->fw.notify = llmc__gw_waiter_notify;
    req->data = gr;
    req->on_abort = on_abort;
    llmc__gw_req_hold(gr);
    if (route == R_MODELS) {
        memset(&gr->policy, 0, sizeof(gr->policy));
        gr->policy.max_age_ms = LLMC_POLICY_UNSET;
        go_upstream(gr, req->path, NULL, 0, "");
    } else {
        handle_cached(gr);
    }
    llmc__gw_req_release(gr);
}
