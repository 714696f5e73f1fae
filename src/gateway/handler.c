/*
 * gateway/handler.c: the route table and a request's steps.
 *
 * Each route is one row of routes[]: path (exact, or a prefix when it ends
 * in '/'), method, handler, whether its answers are cached, the listener it
 * belongs to, who may use it (the admin token) and what its body is (JSON:
 * 415 for another Content-Type). Every /v1/ path the rows before it do not
 * take is passed through (relay.c). A cacheable request
 * then runs as a state machine (states in gw_int.h, transitions checked by
 * req.c): every step returns the next state, and run() drives the steps
 * until one parks the request (a tier or a flight answers later) or hands
 * the answer to the server. A parked request is resumed by the callback
 * that unparks it: the tier set's lookup completion, or the worker's inbox
 * when its flight moved.
 *
 *   NEW     fingerprint (or canonical body) -> key, policy
 *   LOOKUP  the tier set; a usable entry -> RESPOND (hit), else a miss
 *   FLIGHT  join the flight for the key, or lead a new one (the upstream call)
 *   PARKED_FLIGHT  relay a stream as it comes, or wait for the end
 *   RESPOND deliver(): the one place an answer decided by a step is written
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
 * - A step never writes to the client itself: it records the answer and
 *   returns RESPOND, so the state is RESPOND before any write can finish
 *   the request (which moves it to DONE).
 */
#include <http_parser.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/ask.h"
#include "gateway/gw_int.h"
#include "llmc/cache.h"
#include "llmc/error.h"
#include "llmc/fpmap.h"

/* Where a route is served when --admin-listen gives the admin routes a
   listener of their own; without one, every route is on --listen. */
typedef enum gw_listener { LISTEN_PUBLIC, LISTEN_ADMIN } gw_listener_t;

/* Who may use a route. */
typedef enum gw_access {
    ACCESS_OPEN,          /* whoever reaches its listener */
    ACCESS_TOKEN,         /* Authorization: Bearer --admin-token; with no token
                             configured the route is not served at all (404) */
    ACCESS_TOKEN_IF_SET,  /* the token once one is configured, else open (/stats,
                             /metrics: open as they always were until a token is set) */
} gw_access_t;

/* A row's method that takes any method. */
#define ANY_METHOD (-1)

/* What a route's request body is. */
typedef enum gw_body {
    BODY_NONE,            /* none is read */
    BODY_JSON,            /* JSON: Content-Type application/json or none, else 415 (a
                             text/plain or form POST is what a web page can make a
                             browser send cross-site without a preflight) */
} gw_body_t;

struct gw_route {
    const char *path;             /* a trailing '/' takes every path below it */
    int method;                   /* HTTP_GET (HEAD too), HTTP_POST, HTTP_DELETE, ANY_METHOD */
    void (*handle)(gw_req_t *gr);
    bool cacheable;               /* answers are stored and coalesced */
    bool streams;                 /* the endpoint can answer with a stream */
    gw_listener_t listener;
    gw_access_t access;
    const char *upstream_method;  /* what a miss sends upstream; NULL: answered here,
                                     or the client's own (passed through) */
    /* For a cacheable route: why this parsed body must be passed through
       uncached instead (a field's name, for Cache-Status), or NULL. */
    const char *(*pass_why)(const llmc_canon_t *c);
    gw_body_t body;
};

static void handle_cached(gw_req_t *gr);
static void handle_ask(gw_req_t *gr);
static void handle_relay(gw_req_t *gr);
static void handle_health(gw_req_t *gr);
static void handle_stats(gw_req_t *gr);
static void handle_metrics(gw_req_t *gr);
static void handle_admin_entry(gw_req_t *gr);
static void handle_admin_delete(gw_req_t *gr);
static void handle_admin_purge(gw_req_t *gr);
static const char *responses_pass_why(const llmc_canon_t *c);

/* In order: the first row whose path and method match takes the request,
   so the exact rows come before the /v1/ prefix that passes the rest
   through (GET /v1/chat/completions, the stored completions' list, is one
   of those). */
#define PUB LISTEN_PUBLIC
#define ADM LISTEN_ADMIN
#define OPEN ACCESS_OPEN
#define JSON BODY_JSON
#define NONE BODY_NONE
static const gw_route_t routes[] = {
    {"/v1/chat/completions", HTTP_POST, handle_cached, true, true, PUB, OPEN, "POST", NULL, JSON},
    {"/v1/completions", HTTP_POST, handle_cached, true, true, PUB, OPEN, "POST", NULL, JSON},
    {"/v1/embeddings", HTTP_POST, handle_cached, true, false, PUB, OPEN, "POST", NULL, JSON},
    {"/v1/responses", HTTP_POST, handle_cached, true, false, PUB, OPEN, "POST", responses_pass_why,
     JSON},
    {"/v1/", ANY_METHOD, handle_relay, false, false, PUB, OPEN, NULL, NULL, NONE},
    {"/ask", HTTP_GET, handle_ask, true, false, PUB, OPEN, "POST", NULL, NONE},
    {"/healthz", HTTP_GET, handle_health, false, false, PUB, OPEN, NULL, NULL, NONE},
    {"/stats", HTTP_GET, handle_stats, false, false, ADM, ACCESS_TOKEN_IF_SET, NULL, NULL, NONE},
    {"/metrics", HTTP_GET, handle_metrics, false, false, ADM, ACCESS_TOKEN_IF_SET, NULL, NULL,
     NONE},
    {"/admin/cache/", HTTP_GET, handle_admin_entry, false, false, ADM, ACCESS_TOKEN, NULL, NULL,
     NONE},
    {"/admin/cache/", HTTP_DELETE, handle_admin_delete, false, false, ADM, ACCESS_TOKEN, NULL,
     NULL, NONE},
    {"/admin/purge", HTTP_POST, handle_admin_purge, false, false, ADM, ACCESS_TOKEN, NULL, NULL,
     JSON},
};
#undef PUB
#undef ADM
#undef OPEN
#undef JSON
#undef NONE

/* The Allow header of a 405 (RFC 9110 15.5.6: it must name what the
   resource accepts): every method of the rows in routes[] that matched
   the path, from[0..n). */
#define ALLOW_CAP 64
static void allow_line(const gw_route_t *const *rows, size_t n, char *buf)
{
    size_t len = (size_t)snprintf(buf, ALLOW_CAP, "Allow: ");
    for (size_t i = 0; i < n; i++) {
        const char *m = rows[i]->method == HTTP_GET ? "GET, HEAD"
                        : rows[i]->method == HTTP_POST ? "POST" : "DELETE";
        len += (size_t)snprintf(buf + len, ALLOW_CAP - len, "%s%s", i ? ", " : "", m);
    }
    snprintf(buf + len, ALLOW_CAP - len, "\r\n");
}

static bool path_matches(const gw_route_t *r, const char *path)
{
    size_t n = strlen(r->path);
    if (r->path[n - 1] == '/')
        return strncmp(path, r->path, n) == 0 && path[n] != '\0';
    return strcmp(path, r->path) == 0;
}

/* Finds the route for req on the admin listener (admin) or the public one.
   A route this listener does not serve, or a token route while no token
   is configured, is not there at all. When the path exists with other
   methods only, fills allow (ALLOW_CAP bytes) with the Allow line. */
static const gw_route_t *find_route(const llmc_gw_t *gw, const llmc_http_req_t *req, bool admin,
                                    char *allow)
{
    const gw_route_t *others[8];
    size_t nothers = 0;
    allow[0] = '\0';
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const gw_route_t *r = &routes[i];
        bool here = gw->admin_listen ? (r->listener == LISTEN_ADMIN) == admin : true;
        if (!here || (r->access == ACCESS_TOKEN && !gw->admin_token_set) ||
            !path_matches(r, req->path))
            continue;
        if (r->method == ANY_METHOD || req->method == r->method ||
            (req->method == HTTP_HEAD && r->method == HTTP_GET))
            return r;
        if (nothers < sizeof(others) / sizeof(others[0]))
            others[nothers++] = r;
    }
    if (nothers)
        allow_line(others, nothers, allow);
    return NULL;
}

/* ---- requests of a cacheable route that are not cached ---------------------- */

/* Responses API fields that tie the answer to state the provider holds: the
   same body can get another answer (previous_response_id, conversation), or
   the answer is fetched later by id (background). Such requests are never
   served from, nor stored in, the cache. Every other field of this API is
   keyed like a chat completion's (key.c's ignored fields included: store,
   metadata, user, safety_identifier, prompt_cache_key, service_tier). */
static const char *const responses_state_fields[] = {
    "previous_response_id", "conversation", "background",
};

static const char *responses_pass_why(const llmc_canon_t *c)
{
    for (size_t i = 0; i < sizeof(responses_state_fields) / sizeof(responses_state_fields[0]); i++) {
        json_t *v = json_object_get(c->root, responses_state_fields[i]);
        if (v && !json_is_null(v) && !json_is_false(v))
            return responses_state_fields[i];
    }
    /* Its typed event stream is not recorded yet: relayed as it is. */
    return c->stream ? "stream" : NULL;
}

/* ---- answers a step decides on; deliver() writes them ---------------------- */

static gr_state_t answer_error(gw_req_t *gr, int status, const char *type, const char *code,
                               const char *msg)
{
    gr->answer = ANS_ERROR;
    gr->err_status = status;
    gr->err_type = type;
    gr->err_code = code;
    gr->err_msg = strdup(msg); /* NULL: deliver() says "out of memory" instead */
    return GR_RESPOND;
}

static gr_state_t answer_oom(gw_req_t *gr)
{
    return answer_error(gr, 503, "server_error", "out_of_memory", "out of memory");
}

static void deliver(gw_req_t *gr)
{
    switch (gr->answer) {
    case ANS_ERROR:
        llmc__gw_error(gr, gr->err_status, gr->err_type, gr->err_code,
                       gr->err_msg ? gr->err_msg : "out of memory");
        break;
    case ANS_HIT: {
        llmc_entry_t *e = gr->hit;
        gr->hit = NULL;
        llmc__gw_respond_entry(gr, e, gr->hit_xcache, NULL, gr->hit_ms);
        llmc_entry_unref(e);
        break;
    }
    case ANS_FLIGHT:
        llmc__gw_respond_flight(gr);
        break;
    case ANS_STREAM_END:
        llmc__gw_stream_end(gr);
        break;
    case ANS_NONE:
        abort(); /* a step returned RESPOND without an answer */
    }
}

/* ---- NEW: key and policy --------------------------------------------------- */

/* Flags remembered with a fingerprint: what the body said that the fast
   path needs without parsing it again. */
enum { FP_STREAM = 1u << 0, FP_USAGE = 1u << 1 };

/* The fingerprint of the raw request: everything the canonical key is made
   of, but from the client's bytes as they came (the body, or the query of
   GET /ask), so that a repeated request needs no JSON work at all. */
static void fingerprint(const gw_req_t *gr, llmc_key_t *fp, const char *fwd, size_t fwd_len)
{
    const llmc_http_req_t *req = gr->req;
    /* The credential itself rather than its hash: the map is per process
       and the hash would be one more SHA-256 on every per-key hit. */
    const char *auth = gr->w->gw->shared_scope ? NULL : llmc_http_header(req, "authorization");
    const char *scope = auth ? auth : "";
    char fwd_scope[2 * LLMC_KEY_LEN + 1];
    if (fwd_len) {   /* headers that go upstream: keyed (forward.h) */
        llmc_key_t h;
        llmc_key_forwarded(&h, scope, fwd, fwd_len);
        llmc_key_hex(&h, fwd_scope);
        scope = fwd_scope;
    }
    const char *ns = llmc_http_header(req, "x-cache-namespace");
    bool ask = gr->form == FORM_ASK;
    const char *raw = ask ? req->query : req->body;
    size_t len = ask ? strlen(req->query) : req->body_len;
    llmc_key_fingerprint(fp, req->path, scope, ns ? ns : "", raw ? raw : "", len);
}

/* The scope part of the key: "" when shared, else a hash of the credential,
   so that one API key's answers are never served to another. */
static void scope_of(gw_req_t *gr, const char *fwd, size_t fwd_len)
{
    llmc_key_t h;
    gr->scope[0] = '\0';
    if (!gr->w->gw->shared_scope) {
        const char *auth = llmc_http_header(gr->req, "authorization");
        llmc_key_scope(&h, auth, auth ? strlen(auth) : 0);
        llmc_key_hex(&h, gr->scope);
    }
    /* The client headers the call would carry: an answer made under one
       organisation is never another's (forward.h). None: the key is the
       one it always was. */
    if (fwd_len) {
        llmc_key_forwarded(&h, gr->scope, fwd, fwd_len);
        llmc_key_hex(&h, gr->scope);
    }
}

/* The body a cacheable request stands for, parsed into gr->canon: the
   client's own, or for GET /ask the chat completion built from its query.
   RESPOND (with the error) when it is not valid, else NEW. */
static gr_state_t parse_body(gw_req_t *gr)
{
    char err[256] = "";
    gr->body = gr->req->body;
    gr->body_len = gr->req->body_len;
    if (gr->form == FORM_ASK) {
        int rc = llmc_ask_body(gr->req->query, gr->w->gw->cfg->ask_model, &gr->ask_body,
                               &gr->body_len, err, sizeof(err));
        if (rc < 0)
            return rc == LLMC_ENOMEM ? answer_oom(gr)
                                     : answer_error(gr, 400, "invalid_request_error",
                                                    "invalid_query", err);
        gr->body = gr->ask_body;
    }
    if (llmc_canon_parse(gr->body, gr->body_len, &gr->canon, err, sizeof(err)) < 0)
        return answer_error(gr, 400, "invalid_request_error", "invalid_json", err);
    gr->parsed = true;
    return GR_NEW;
}

static gr_state_t read_policy(gw_req_t *gr)
{
    const llmc_config_t *cfg = gr->w->gw->cfg;
    llmc_http_req_t *req = gr->req;
    char err[256] = "", *cc_owned, *pragma_owned;
    const char *cc = llmc_policy_list_header(req, "cache-control", &cc_owned);
    const char *pragma = llmc_policy_list_header(req, "pragma", &pragma_owned);
    int rc = llmc_policy_parse(&gr->policy, cc, pragma, llmc_http_header(req, "x-cache-ttl"),
                               llmc_http_header(req, "x-cache-namespace"), gr->canon.cache_ext,
                               cfg->ttl, cfg->max_ttl, err, sizeof(err));
    free(cc_owned);
    free(pragma_owned);
    if (rc < 0)
        return answer_error(gr, 400, "invalid_request_error", "invalid_cache_control", err);
    char *tags_owned;
    const char *tags = llmc_policy_list_header(req, "x-cache-tags", &tags_owned);
    rc = llmc_policy_parse_tags(&gr->policy, tags, gr->canon.cache_ext, err, sizeof(err));
    free(tags_owned);
    if (rc < 0)
        return answer_error(gr, 400, "invalid_request_error", "invalid_cache_tags", err);
    rc = llmc_policy_parse_semantic(&gr->policy, llmc_http_header(req, "x-cache-semantic"),
                                    llmc_http_header(req, "x-cache-semantic-threshold"),
                                    gr->canon.cache_ext, err, sizeof(err));
    if (rc < 0)
        return answer_error(gr, 400, "invalid_request_error", "invalid_cache_semantic", err);
    return GR_NEW;
}

/* The member a streaming miss adds to ask the upstream for usage. */
static const char usage_member[] = "\"stream_options\":{\"include_usage\":true}";

/* body (a JSON object, as parsed) with usage_member as its first member and
   its own bytes otherwise unchanged, into gr->fwd_body; false when out of
   memory. For a body without "stream_options". */
static bool splice_usage(gw_req_t *gr, const char *body, size_t len)
{
    const char *open = memchr(body, '{', len); /* only whitespace can come before it */
    if (!open)
        return false;
    size_t head = (size_t)(open - body) + 1, i = head;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r'))
        i++;
    bool empty = i < len && body[i] == '}';
    size_t n = head + sizeof(usage_member) - 1 + (empty ? 0 : 1) + (len - head);
    char *out = malloc(n + 1);
    if (!out)
        return false;
    memcpy(out, body, head);
    memcpy(out + head, usage_member, sizeof(usage_member) - 1);
    if (!empty)
        out[head + sizeof(usage_member) - 1] = ',';
    memcpy(out + n - (len - head), body + head, len - head);
    out[n] = '\0';
    gr->fwd_body = out;
    gr->body = out;
    gr->body_len = n;
    return true;
}

/* What the upstream gets on a miss: the client's bytes, unless the "cache"
   extension had to be cut out of them, or a stream that did not ask for
   usage gets "stream_options": {"include_usage": true}: the stored answer
   then always has its usage (the gateway drops the usage chunk for the
   clients that did not ask; "stream_options" is not in the key). A body
   without "stream_options" keeps its bytes, the member spliced in first;
   one with an object there is written again with the flag set; one with
   anything else there goes as it is (the upstream refuses it). RESPOND on a
   bad body, else FLIGHT. */
static gr_state_t prepare_miss(gw_req_t *gr)
{
    if (!gr->parsed && parse_body(gr) == GR_RESPOND)
        return GR_RESPOND;
    json_t *so = json_object_get(gr->canon.root, "stream_options");
    bool add_usage = gr->stream && !gr->include_usage && (!so || json_is_object(so));
    gr->usage_asked = gr->include_usage;
    if (add_usage && !so && !gr->canon.cache_ext) {
        if (!splice_usage(gr, gr->body, gr->body_len))
            return answer_oom(gr);
        gr->usage_asked = true;
        return GR_FLIGHT;
    }
    if (add_usage) {
        if (!so && json_object_set_new(gr->canon.root, "stream_options",
                                       so = json_object()) != 0)
            return answer_oom(gr);
        if (json_object_set_new(so, "include_usage", json_true()) != 0)
            return answer_oom(gr);
        gr->usage_asked = true;
    }
    if ((gr->canon.cache_ext || add_usage) && gr->form != FORM_ASK) {
        if (!(gr->fwd_body = json_dumps(gr->canon.root, JSON_COMPACT)))
            return answer_oom(gr);
        gr->body = gr->fwd_body;
        gr->body_len = strlen(gr->fwd_body);
    }
    return GR_FLIGHT;
}

static gr_state_t step_new(gw_req_t *gr)
{
    llmc_gw_t *gw = gr->w->gw;
    llmc_key_t fp;
    uint32_t fl = 0;

    char fwd[LLMC_FWD_BYTES];
    size_t fwd_len = llmc_forward_lines(&gw->forward, gr->req, fwd, sizeof(fwd));

    gr->private_scope = !gw->shared_scope;
    fingerprint(gr, &fp, fwd, fwd_len);
    gr->known = llmc_fpmap_get(gw->fpmap, &fp, &gr->key, &fl);
    bool full = !gr->known || llmc_tier_set_wants_query(gw->tiers);
    if (full) {
        scope_of(gr, fwd, fwd_len);
        if (parse_body(gr) == GR_RESPOND)
            return GR_RESPOND;
        /* Only bodies that pass this check enter the fingerprint map, so a
           known fingerprint needs no check. */
        if (gr->route->pass_why && (gr->pass_why = gr->route->pass_why(&gr->canon))) {
            llmc__gw_relay(gr);
            return gr->state;
        }
    }
    if (read_policy(gr) == GR_RESPOND)
        return GR_RESPOND;
    if (!gr->known) {
        fl = (gr->canon.stream && gr->stream_ok ? FP_STREAM : 0) |
             (gr->canon.include_usage ? FP_USAGE : 0);
        llmc_key_build(&gr->key, gr->path, gw->key_upstream, gr->scope, gr->policy.ns,
                       gr->canon.text, gr->canon.text_len);
        /* The body's own "cache" settings are not in the fingerprint's
           reach, so such requests always take the full path. */
        if (!gr->canon.cache_ext)
            llmc_fpmap_put(gw->fpmap, &fp, &gr->key, fl);
    }
    gr->stream = fl & FP_STREAM;
    gr->include_usage = fl & FP_USAGE;
    llmc_key_hex(&gr->key, gr->keyhex);
    if (gr->policy.read || gr->policy.only_if_cached)
        return GR_LOOKUP;
    return prepare_miss(gr);
}

/* ---- LOOKUP: the tier set ---------------------------------------------------- */

static void run(gw_req_t *gr);

/* What the walk found (e: a reference, or NULL): a usable entry answers;
   anything else is a miss, keeping an expired entry for stale-if-error. */
static gr_state_t after_lookup(gw_req_t *gr, llmc_entry_t *e)
{
    int64_t now = llmc_now_ms();
    llmc_use_t use = e ? llmc_policy_usable(&gr->policy, e, now) : LLMC_USE_NO;
    if (use != LLMC_USE_NO && gr->policy.read) {
        /* Named only when a tier behind the front answered (Cache-Status detail). */
        gr->tier = gr->lookup.next > 0 ? gr->lookup.tier_name : NULL;
        gr->answer = ANS_HIT;
        gr->hit = e;
        gr->similarity = gr->lookup.tl.similarity;
        gr->hit_xcache = use != LLMC_USE_FRESH ? "STALE"
                         : gr->similarity > 0  ? "SEMANTIC-HIT"
                                               : "HIT";
        gr->hit_ms = now;
        return GR_RESPOND;
    }
    /* An answer was there but may not be used: say which way (RFC 9211). */
    if (e)
        gr->fwd = now >= e->expires_ms ? "stale" : "request";
    if (e && now >= e->expires_ms && now - e->expires_ms <= gr->w->gw->cfg->stale_if_error)
        gr->stale = e; /* kept in case the upstream fails */
    else
        llmc_entry_unref(e);
    if (gr->policy.only_if_cached) {
        LLMC_COUNT(&gr->w->ctr, only_if_cached_misses);
        gr->xcache = "MISS";
        /* Asked again, the cache is as likely to be empty: the SDKs would
           retry a 504 twice (seconds of backoff) unless told not to. */
        gr->err_final = true;
        return answer_error(gr, 504, "cache_miss", "only_if_cached",
                            "no cached answer for this request and Cache-Control: "
                            "only-if-cached forbids calling the model");
    }
    return prepare_miss(gr);
}

/* A tier answered a parked lookup, on this request's loop. The lookup's
   reference keeps gr alive until the end of this function. */
static void on_lookup_done(llmc_set_lookup_t *sl, int rc)
{
    gw_req_t *gr = (gw_req_t *)((char *)sl - offsetof(gw_req_t, lookup));
    llmc_entry_t *e = rc == 0 ? sl->tl.entry : NULL;
    if (gr->state == GR_PARKED_TIER && gr->req) {
        llmc__gr_enter(gr, GR_LOOKUP);
        llmc__gr_enter(gr, after_lookup(gr, e));
        run(gr);
    } else {
        llmc_entry_unref(e); /* the client left meanwhile */
    }
    llmc__gr_unref(gr);
}

static void fill_query(gw_req_t *gr)
{
    llmc_tier_query_t *q = &gr->query;
    q->key = gr->key;
    q->path = gr->path;
    q->body = gr->parsed ? gr->canon.text : NULL;
    q->body_len = gr->parsed ? gr->canon.text_len : 0;
    q->scope = gr->scope;
    q->ns = gr->policy.ns;
    q->model = gr->parsed ? gr->canon.model : NULL;
    q->similar = gr->policy.semantic;
    q->threshold = gr->policy.semantic_threshold;
}

static gr_state_t step_lookup(gw_req_t *gr)
{
    llmc_set_lookup_t *sl = &gr->lookup;
    fill_query(gr);
    sl->tl.query = &gr->query;
    sl->tl.now_ms = llmc_now_ms();
    sl->tl.worker = gr->w->id;
    sl->done = on_lookup_done;
    int rc = llmc_tier_set_lookup(gr->w->gw->tiers, sl);
    if (rc == LLMC_EAGAIN) {
        LLMC_COUNT(&gr->w->ctr, tier_parked);
        llmc__gr_ref(gr); /* the pending lookup's */
        return GR_PARKED_TIER;
    }
    return after_lookup(gr, rc == 0 ? sl->tl.entry : NULL);
}

/* ---- FLIGHT: join the call in the air, or lead a new one ----------------------- */

static gr_state_t step_flight(gw_req_t *gr)
{
    llmc_gw_t *gw = gr->w->gw;
    bool coalesce = gr->policy.write && gr->route->cacheable;
    bool created = true;
    /* A shared cache whose clients' own keys go upstream: the key leaves
       the credential out, the flight must not (an error is the caller's). */
    llmc_key_t caller;
    const char *auth = gw->shared_scope && !gw->upstream_auth
                           ? llmc_http_header(gr->req, "authorization") : NULL;
    if (auth)
        llmc_key_scope(&caller, auth, strlen(auth));
    gr->flight = coalesce ? llmc_flight_join_as(gw->flights, &gr->key, auth ? &caller : NULL,
                                                gr->stream, &created)
                          : llmc_flight_new_private(&gr->key, gr->stream);
    if (!gr->flight)
        return answer_oom(gr);
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
    gr->answer = ANS_FLIGHT;
    if (created) {
        char url[1400];
        snprintf(url, sizeof(url), "%s%s", gw->upstream_base, gr->path + 3 /* strip "/v1" */);
        int rc = llmc__gw_fetch_start(gr, gr->route->upstream_method, url,
                                      gr->body, gr->body_len, coalesce,
                                      gr->canon.model ? gr->canon.model : "");
        if (rc < 0) {
            llmc_flight_finish(gr->flight, rc, "could not start the upstream call", false, NULL);
            return GR_RESPOND;
        }
    }
    if (!llmc_flight_attach(gr->flight, &gr->fw))
        return GR_RESPOND; /* finished before we got here */
    return GR_PARKED_FLIGHT;
}

/* Parked on a flight: a stream relays what came (a late joiner first gets
   everything so far); a plain waiter moves on only once the flight is done. */
static gr_state_t step_wait_flight(gw_req_t *gr)
{
    if (gr->fw.wants_data) {
        if (!llmc__gw_stream_step(gr))
            return GR_PARKED_FLIGHT;
        gr->answer = ANS_STREAM_END;
        return GR_RESPOND;
    }
    pthread_mutex_lock(&gr->flight->mu);
    bool done = gr->flight->done;
    pthread_mutex_unlock(&gr->flight->mu);
    return done ? GR_RESPOND : GR_PARKED_FLIGHT;
}

/* ---- the machine ---------------------------------------------------------------- */

/* Runs gr's steps until one parks it or its answer is delivered. A step
   may end the request under us (a failed write finishes it: DONE), and the
   client may leave (gr->req NULL): both stop the run. The caller holds a
   reference. */
static void run(gw_req_t *gr)
{
    while (gr->req) {
        gr_state_t next;
        switch (gr->state) {
        case GR_NEW: next = step_new(gr); break;
        case GR_LOOKUP: next = step_lookup(gr); break;
        case GR_FLIGHT: next = step_flight(gr); break;
        case GR_PARKED_FLIGHT: next = step_wait_flight(gr); break;
        case GR_RESPOND: deliver(gr); return;
        default: return; /* parked on a tier, or done */
        }
        if (gr->state == GR_DONE || next == gr->state)
            return;
        llmc__gr_enter(gr, next);
    }
}

void llmc_gw_inbox_run(llmc_worker_t *w)
{
    gw_req_t *gr = llmc__gr_inbox_take(w);
    while (gr) {
        gw_req_t *next = gr->inbox_next;
        if (gr->state == GR_PARKED_FLIGHT)
            run(gr);
        llmc__gr_unref(gr); /* the inbox's */
        gr = next;
    }
}

/* ---- the routes' handlers ----------------------------------------------------------- */

/* gr->path is the route's own string, not the request's copy (the same
   bytes: these routes match whole paths): the upstream call and the entry
   it makes may outlive the request. */
static void handle_cached(gw_req_t *gr)
{
    gr->path = gr->route->path;
    gr->stream_ok = gr->route->streams;
    run(gr);
}

static void handle_ask(gw_req_t *gr)
{
    gr->form = FORM_ASK;
    gr->path = LLMC_ASK_PATH;
    run(gr);
}

/* Passed through as it is, on a call of its own, the answer relayed as it
   comes (relay.c): never read from, nor stored in, the cache. */
static void handle_relay(gw_req_t *gr)
{
    gr->path = gr->req->path;
    llmc__gw_relay(gr);
}

static void handle_health(gw_req_t *gr)
{
    llmc__gr_enter(gr, GR_RESPOND);
    llmc__gw_respond_json(gr, 200, json_pack("{s:s}", "status", "ok"));
}

static void handle_stats(gw_req_t *gr)
{
    json_t *o = llmc_gw_stats_json(gr->w->gw);
    llmc__gr_enter(gr, GR_RESPOND);
    if (o)
        llmc__gw_respond_json(gr, 200, o);
    else
        llmc__gw_error(gr, 503, "server_error", "out_of_memory", "out of memory");
}

/* Prometheus scrapes this (text format 0.0.4), from the tables /stats reads. */
static void handle_metrics(gw_req_t *gr)
{
    size_t len = 0;
    char *text = llmc_gw_metrics_text(gr->w->gw, &len);
    llmc__gr_enter(gr, GR_RESPOND);
    if (text)
        llmc__gw_respond_text(gr, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    else
        llmc__gw_error(gr, 503, "server_error", "out_of_memory", "out of memory");
    free(text);
}

static void handle_admin_entry(gw_req_t *gr)
{
    llmc__gw_admin_entry(gr);
}

static void handle_admin_delete(gw_req_t *gr)
{
    llmc__gw_admin_delete(gr);
}

static void handle_admin_purge(gw_req_t *gr)
{
    llmc__gw_admin_purge(gr);
}

static void not_found(llmc_http_req_t *req, const char *allow)
{
    char msg[300];
    if (allow[0])
        snprintf(msg, sizeof(msg), "method %s is not allowed on %.200s", req->method_name, req->path);
    else
        snprintf(msg, sizeof(msg), "no route for %s %.200s", req->method_name, req->path);
    llmc_http_respond_error(req, allow[0] ? 405 : 404, allow[0] ? allow : NULL,
                            "invalid_request_error",
                            allow[0] ? "method_not_allowed" : "not_found", msg);
}

/* A route that wants the admin token and did not get it: 401, as OpenAI
   answers a bad API key. Which of missing or wrong is not said. */
static bool authorized(const llmc_gw_t *gw, const gw_route_t *r, llmc_http_req_t *req)
{
    if (r->access == ACCESS_OPEN || (r->access == ACCESS_TOKEN_IF_SET && !gw->admin_token_set) ||
        llmc_gw_admin_authorized(gw, req))
        return true;
    llmc_http_respond_error(req, 401, "WWW-Authenticate: Bearer realm=\"llmcached admin\"\r\n",
                            "invalid_request_error", "invalid_admin_token",
                            "this route needs the admin token: Authorization: Bearer <--admin-token>");
    return false;
}

static void dispatch(llmc_http_req_t *req, llmc_worker_t *w, bool admin)
{
    char allow[ALLOW_CAP];
    if (!llmc_origin_admit(&w->gw->origin, req, admin))
        return; /* a Host, Origin or cross-site refusal, or a preflight answered */
    const gw_route_t *route = find_route(w->gw, req, admin, allow);
    if (!route) {
        not_found(req, allow);
        return;
    }
    if (!authorized(w->gw, route, req))
        return;
    if (route->body == BODY_JSON &&
        !llmc_policy_json_content_type(llmc_http_header(req, "Content-Type"))) {
        llmc_http_respond_error(req, 415, NULL, "invalid_request_error", "unsupported_media_type",
                                "this route takes a JSON body: send it with Content-Type: "
                                "application/json (or no Content-Type)");
        return;
    }
    gw_req_t *gr = llmc__gr_new(w, req);
    if (!gr) {
        llmc_http_respond_error(req, 503, NULL, "server_error", "out_of_memory", "out of memory");
        return;
    }
    gr->route = route;
    gr->route_arg = req->path + strlen(route->path);
    llmc__gr_ref(gr); /* running code's: the answer may finish the request under us */
    route->handle(gr);
    llmc__gr_unref(gr);
}

void llmc_gw_handle(llmc_http_req_t *req, void *ctx)
{
    dispatch(req, ctx, false);
}

void llmc_gw_handle_admin(llmc_http_req_t *req, void *ctx)
{
    dispatch(req, ctx, true);
}
