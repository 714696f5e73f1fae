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
 *   PARKED_PARSE  a big body's parse on the thread pool (then NEW goes on)
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
#include <assert.h>
#include <http_parser.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/ask.h"
#include "gateway/clients.h"
#include "gateway/dashboard.h"
#include "gateway/dialect.h"
#include "gateway/gw_int.h"
#include "llmc/cache.h"
#include "llmc/error.h"
#include "llmc/fpmap.h"
#include "llmc/jscan.h"

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
    ACCESS_CLIENT,        /* a key listed in --client-keys when that is set, else open
                             (the routes that reach the model) */
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
static void handle_dashboard(gw_req_t *gr);
static void handle_admin_explain(gw_req_t *gr);
static const char *responses_pass_why(const llmc_canon_t *c);
static const char *messages_pass_why(const llmc_canon_t *c);

/* In order: the first row whose path and method match takes the request,
   so the exact rows come before the /v1/ prefix that passes the rest
   through (GET /v1/chat/completions, the stored completions' list, is one
   of those). */
#define PUB LISTEN_PUBLIC
#define ADM LISTEN_ADMIN
#define OPEN ACCESS_OPEN
#define KEY ACCESS_CLIENT
#define JSON BODY_JSON
#define NONE BODY_NONE
static const gw_route_t routes[] = {
    {"/v1/chat/completions", HTTP_POST, handle_cached, true, true, PUB, KEY, "POST", NULL, JSON},
    {"/v1/completions", HTTP_POST, handle_cached, true, true, PUB, KEY, "POST", NULL, JSON},
    {"/v1/embeddings", HTTP_POST, handle_cached, true, false, PUB, KEY, "POST", NULL, JSON},
    {"/v1/responses", HTTP_POST, handle_cached, true, true, PUB, KEY, "POST", responses_pass_why,
     JSON},
    {"/v1/messages", HTTP_POST, handle_cached, true, true, PUB, KEY, "POST", messages_pass_why,
     JSON},
    {"/v1/", ANY_METHOD, handle_relay, false, false, PUB, KEY, NULL, NULL, NONE},
    {"/ask", HTTP_GET, handle_ask, true, false, PUB, KEY, "POST", NULL, NONE},
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
    /* The page is open (no data in it: it asks for the token, then reads /stats with it). */
    {"/dashboard", HTTP_GET, handle_dashboard, false, false, ADM, OPEN, NULL, NULL, NONE},
    {"/admin/explain", HTTP_POST, handle_admin_explain, false, false, ADM, ACCESS_TOKEN, NULL,
     NULL, JSON},
};
#undef PUB
#undef ADM
#undef OPEN
#undef KEY
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
    return NULL;
}

/* Anthropic Messages: "container" names a code-execution container the
   provider keeps between requests, so the same body can get another
   answer; such a request is passed through uncached. */
static const char *messages_pass_why(const llmc_canon_t *c)
{
    json_t *v = json_object_get(c->root, "container");
    return v && !json_is_null(v) ? "container" : NULL;
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

/* Whose flight a request may join. In a shared cache whose clients' own
   keys go upstream the key leaves the credential out, but the flight must
   not: an upstream error is the caller's own (one client's bad key never
   becomes another's 401). *caller is set to the credential's scope and
   returned; NULL when any caller may join. */
static const llmc_key_t *flight_caller(gw_req_t *gr, llmc_key_t *caller)
{
    llmc_gw_t *gw = gr->w->gw;
    const char *line;
    if (!llmc_dialect_shared(gw, gr->dialect) || llmc_dialect_auth(gw, gr->dialect) ||
        gw->client_keys)
        return NULL;
    const char *auth = llmc_dialect_credential(gr->dialect, gr->req, &line);
    if (!auth)
        return NULL;
    llmc_key_scope(caller, auth, strlen(auth));
    return caller;
}

/*
 * A semantic hit the tier sampled for verification (issue 16): the same
 * request goes to the model as a miss would, on a flight nobody waits on,
 * and its answer is stored under the request's own key as usual (it is the
 * model's answer to this very question); the semantic tier's put() then
 * judges it against the answer that was served. Started here, before the
 * hit's answer is written, because the call copies the request's headers;
 * starting it only queues it on this loop's upstream client, so the answer
 * to the client waits for nothing of the call. Asked as a whole answer
 * whatever the client asked: stream and whole share one entry. A call for
 * the key already in the air stores the same way: no second one.
 */
static void verify_start(gw_req_t *gr)
{
    llmc_gw_t *gw = gr->w->gw;
    char *own = NULL;
    const char *body = gr->body;
    size_t len = gr->body_len;

    if (!gr->req || !gr->parsed || !gr->policy.write || !gr->route->cacheable)
        return;
    if ((gr->stream || gr->canon.cache_ext) && gr->form != FORM_ASK) {
        json_t *copy = json_copy(gr->canon.root); /* shallow: the members are shared */
        if (!copy)
            return;
        json_object_del(copy, "stream");
        json_object_del(copy, "stream_options");
        own = json_dumps(copy, JSON_COMPACT);
        json_decref(copy);
        if (!own)
            return;
        body = own;
        len = strlen(own);
    }
    llmc_key_t caller;
    bool created = false;
    llmc_flight_t *f = llmc_flight_join_as(gw->flights, &gr->key, flight_caller(gr, &caller),
                                           false, &created);
    if (f && created) {
        char url[1400];
        snprintf(url, sizeof(url), "%s%s", llmc_dialect_base(gw, gr->dialect),
                 gr->path + 3 /* strip "/v1" */);
        assert(!gr->flight);
        gr->flight = f; /* fetch_start's: it takes a reference of its own */
        int rc = llmc__gw_fetch_start(gr, gr->route->upstream_method, url, body, len, true,
                                      gr->canon.model ? gr->canon.model : "");
        gr->flight = NULL;
        if (rc < 0) /* the tier's pending question is forgotten in time */
            llmc_flight_finish(f, rc, "could not start the verification call", false, NULL);
    }
    if (f)
        llmc_flight_unref(f);
    free(own);
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
        if (gr->verify)
            verify_start(gr);
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

/* What the scope part of the key is made from: nothing when the cache is
   shared, else the credential, so that one API key's answers are never
   served to another. With --client-keys the credential is the presented
   key, and a key bound to a namespace has a scope of its own even in a
   shared cache ("ns:" NAME, into buf), so that an unbound key naming that
   namespace in X-Cache-Namespace finds none of its entries. */
static const char *scope_source(const gw_req_t *gr, char buf[LLMC_CLIENT_NS_MAX + 4])
{
    bool shared = llmc_dialect_shared(gr->w->gw, gr->dialect);
    if (gr->client && gr->client->ns[0] && shared) {
        snprintf(buf, LLMC_CLIENT_NS_MAX + 4, "ns:%s", gr->client->ns);
        return buf;
    }
    if (shared)
        return NULL;
    const char *line;
    return gr->cred ? gr->cred : llmc_dialect_credential(gr->dialect, gr->req, &line);
}

/* The fingerprint of the raw request: everything the canonical key is made
   of, but from the client's bytes as they came (the body, or the query of
   GET /ask), so that a repeated request needs no JSON work at all. */
static bool fingerprint(const gw_req_t *gr, llmc_key_t *fp, const char *fwd, size_t fwd_len)
{
    const llmc_http_req_t *req = gr->req;
    /* The credential itself rather than its hash: the map is per process
       and the hash would be one more SHA-256 on every per-key hit. */
    char buf[LLMC_CLIENT_NS_MAX + 4];
    const char *auth = scope_source(gr, buf);
    const char *scope = auth ? auth : "";
    /* The headers that change the answer join the credential (a dialect
       with none, OpenAI's, pays nothing for it). */
    char *extra = NULL;
    if (gr->dialect && llmc_dialect_of(gr->dialect)->key_headers[0] &&
        !(scope = extra = llmc_dialect_key_extra(gr->dialect, req, scope)))
        return false;
    char fwd_scope[2 * LLMC_KEY_LEN + 1];
    if (fwd_len) {   /* headers that go upstream: keyed (forward.h) */
        llmc_key_t h;
        llmc_key_forwarded(&h, scope, fwd, fwd_len);
        llmc_key_hex(&h, fwd_scope);
        scope = fwd_scope;
    }
    const char *ns = gr->client && gr->client->ns[0] ? gr->client->ns
                                                     : llmc_http_header(req, "x-cache-namespace");
    bool ask = gr->form == FORM_ASK;
    const char *raw = ask ? req->query : req->body;
    size_t len = ask ? strlen(req->query) : req->body_len;
    llmc_key_fingerprint(fp, req->path, scope, ns ? ns : "", raw ? raw : "", len);
    free(extra);
    return true;
}

/* The scope part of the key: "" when nothing sets one, else a hash of
   what does (scope_source); then the client headers the call would carry,
   so that an answer made under one organisation is never another's
   (forward.h). None: the key is the one it always was. */
static void scope_of(gw_req_t *gr, const char *fwd, size_t fwd_len)
{
    char buf[LLMC_CLIENT_NS_MAX + 4];
    llmc_key_t h;
    gr->scope[0] = '\0';
    const char *auth = scope_source(gr, buf);
    if (auth || !llmc_dialect_shared(gr->w->gw, gr->dialect)) {
        llmc_key_scope(&h, auth, auth ? strlen(auth) : 0);
        llmc_key_hex(&h, gr->scope);
    }
    if (fwd_len) {
        llmc_key_forwarded(&h, gr->scope, fwd, fwd_len);
        llmc_key_hex(&h, gr->scope);
    }
}

/* The parse of a body, on whichever thread: its values counted first, so
   that what a body may cost (jansson allocates per value) is bounded by
   --max-json-values, not by what a client sends. LLMC_E2BIG when over. */
static int parse_bounded(const char *body, size_t len, size_t max_values, llmc_canon_t *out,
                         char *err, size_t errlen)
{
    if (llmc_json_count_values(body, len, max_values) > max_values)
        return LLMC_E2BIG;
    return llmc_canon_parse(body, len, out, err, errlen);
}

/* What a parse's result makes of gr: NEW when parsed, else RESPOND with
   the refusal. */
static gr_state_t parsed(gw_req_t *gr, int rc, const char *err)
{
    if (rc == LLMC_E2BIG) {
        char msg[200];
        LLMC_COUNT(&gr->w->ctr, json_values_refused);
        snprintf(msg, sizeof(msg),
                 "the request body holds more than %lld JSON values (--max-json-values)",
                 (long long)gr->w->gw->cfg->max_json_values);
        return answer_error(gr, 413, "invalid_request_error", "too_many_json_values", msg);
    }
    if (rc == LLMC_ECANCELED) /* the pool's work was canceled: the loop is closing */
        return answer_error(gr, 503, "server_error", "shutting_down", err);
    if (rc < 0)
        return answer_error(gr, 400, "invalid_request_error", "invalid_json", err);
    gr->parsed = true;
    return GR_NEW;
}

static gr_state_t parse_off_loop(gw_req_t *gr);

/* The body a cacheable request stands for, parsed into gr->canon: the
   client's own, or for GET /ask the chat completion built from its query.
   RESPOND (with the error) when it is not valid, PARKED_PARSE when a big
   body is parsed off the loop, else NEW. */
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
    const llmc_config_t *cfg = gr->w->gw->cfg;
    if (gr->body_len > (size_t)cfg->parse_offload_bytes)
        return parse_off_loop(gr);
    return parsed(gr, parse_bounded(gr->body, gr->body_len, (size_t)cfg->max_json_values,
                                    &gr->canon, err, sizeof(err)), err);
}

static gr_state_t read_policy(gw_req_t *gr)
{
    /* Read once: a SIGHUP may change them meanwhile (gateway.h, live). */
    int64_t ttl = LLMC_GW_LIVE(gr->w->gw, ttl), max_ttl = LLMC_GW_LIVE(gr->w->gw, max_ttl);
    llmc_http_req_t *req = gr->req;
    char err[256] = "", *cc_owned, *pragma_owned;
    const char *cc = llmc_policy_list_header(req, "cache-control", &cc_owned);
    const char *pragma = llmc_policy_list_header(req, "pragma", &pragma_owned);
    int rc = llmc_policy_parse(&gr->policy, cc, pragma, llmc_http_header(req, "x-cache-ttl"),
                               llmc_http_header(req, "x-cache-namespace"), gr->canon.cache_ext,
                               ttl, max_ttl, err, sizeof(err));
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
    if (gr->client && llmc_clients_apply(gr->client, &gr->policy,
                                         ttl < max_ttl ? ttl : max_ttl,
                                         &gr->denied, err, sizeof(err)) < 0) {
        LLMC_COUNT(&gr->w->ctr, denied_namespace);
        return answer_error(gr, 403, "permission_error", "namespace_not_allowed", err);
    }
    if (gr->denied & LLMC_CLIENT_DENIED_REFRESH)
        LLMC_COUNT(&gr->w->ctr, denied_refresh);
    if (gr->denied & LLMC_CLIENT_DENIED_TTL)
        LLMC_COUNT(&gr->w->ctr, denied_ttl);
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
    if (!gr->parsed) {
        gr->parse_for_miss = true;
        gr_state_t s = parse_body(gr);
        if (s != GR_NEW)
            return s;
    }
    json_t *so = json_object_get(gr->canon.root, "stream_options");
    bool add_usage = gr->stream && !gr->include_usage && (!so || json_is_object(so)) &&
                     !llmc_dialect_of(gr->dialect)->usage_in_stream;
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

static gr_state_t step_keyed(gw_req_t *gr);

/* NEW once the body is parsed (here, or on the thread pool). */
static gr_state_t step_parsed(gw_req_t *gr)
{
    /* Only bodies that pass this check enter the fingerprint map, so a
       known fingerprint needs no check. */
    if (gr->route->pass_why && (gr->pass_why = gr->route->pass_why(&gr->canon))) {
        llmc__gw_relay(gr);
        return gr->state;
    }
    return step_keyed(gr);
}

static gr_state_t step_new(gw_req_t *gr)
{
    llmc_gw_t *gw = gr->w->gw;

    /* With --client-keys an answer is for key holders only: private, so that
       no cache in front of the gateway hands it to a client without a key. */
    gr->private_scope = !llmc_dialect_shared(gw, gr->dialect) || gw->client_keys;
    char fwd[LLMC_FWD_BYTES];
    size_t fwd_len = llmc_forward_lines(&gw->forward, gr->req, fwd, sizeof(fwd));
    if (!fingerprint(gr, &gr->fp, fwd, fwd_len))
        return answer_oom(gr);
    gr->known = llmc_fpmap_get(gw->fpmap, &gr->fp, &gr->key, &gr->fp_flags);
    if (gr->known && !llmc_tier_set_wants_query(gw->tiers))
        return step_keyed(gr);
    scope_of(gr, fwd, fwd_len);
    gr_state_t s = parse_body(gr);
    return s == GR_NEW ? step_parsed(gr) : s;
}

/* NEW with the key's parts known: the policy, the key, then the lookup or
   the miss. */
static gr_state_t step_keyed(gw_req_t *gr)
{
    llmc_gw_t *gw = gr->w->gw;
    uint32_t fl = gr->fp_flags;

    if (read_policy(gr) == GR_RESPOND)
        return GR_RESPOND;
    if (!gr->known) {
        fl = (gr->canon.stream && gr->stream_ok ? FP_STREAM : 0) |
             (gr->canon.include_usage ? FP_USAGE : 0);
        const char *up = llmc_dialect_key_upstream(gw, gr->dialect);
        char *extra = NULL;
        if (gr->dialect && llmc_dialect_of(gr->dialect)->key_headers[0] &&
            !(up = extra = llmc_dialect_key_extra(gr->dialect, gr->req, up)))
            return answer_oom(gr);
        llmc_key_build(&gr->key, gr->path, up, gr->scope, gr->policy.ns, gr->canon.text,
                       gr->canon.text_len);
        free(extra);
        /* The body's own "cache" settings are not in the fingerprint's
           reach, so such requests always take the full path. */
        if (!gr->canon.cache_ext)
            llmc_fpmap_put(gw->fpmap, &gr->fp, &gr->key, fl);
    }
    gr->stream = fl & FP_STREAM;
    gr->include_usage = fl & FP_USAGE;
    llmc_key_hex(&gr->key, gr->keyhex);
    if (gr->policy.read || gr->policy.only_if_cached)
        return GR_LOOKUP;
    return prepare_miss(gr);
}

/* ---- PARKED_PARSE: a big body parsed on the thread pool ----------------------- */

static void run(gw_req_t *gr);

/* A parse off the loop. The connection's body buffer is taken from the
   server (not copied: 4 MB of copy and page faults cost a loop more than
   the rest of the request): it is freed when its client leaves, which may
   be while the parse runs. The canonical form is made there and moved into
   gr once the loop has it; so is the buffer. */
typedef struct parse_job {
    uv_work_t work;
    gw_req_t *gr;                /* a reference, until parse_done */
    const char *body;            /* in taken, or gr's own GET /ask body */
    llmc_http_body_t taken;
    size_t len, max_values;
    int rc;
    llmc_canon_t canon;
    char err[256];
} parse_job_t;

static void parse_work(uv_work_t *w)
{
    parse_job_t *job = w->data;
    llmc__gr_pool_thread_nice();
    job->rc = parse_bounded(job->body, job->len, job->max_values, &job->canon, job->err,
                            sizeof(job->err));
}

/* A parse whose client left: its tree is freed on the pool too (see
   canon_release in req.c: a big tree costs a loop tens of ms). */
static void parse_drop_work(uv_work_t *w)
{
    llmc__gr_pool_thread_nice();
    llmc_canon_free(&((parse_job_t *)w->data)->canon);
}

static void parse_drop_done(uv_work_t *w, int status)
{
    parse_job_t *job = w->data;
    llmc_canon_free(&job->canon); /* nothing left unless canceled */
    llmc_http_body_free(&job->taken);
    free(job);
}

/* Back on gr's loop: the step the body was parsed for goes on from NEW
   (step_parsed, or the miss after a lookup), or the refusal is answered. */
static void parse_done(uv_work_t *w, int status)
{
    parse_job_t *job = w->data;
    gw_req_t *gr = job->gr;
    if (status != 0) { /* canceled: the loop is closing */
        job->rc = LLMC_ECANCELED;
        snprintf(job->err, sizeof(job->err), "the gateway is shutting down");
    }
    if (gr->state == GR_PARKED_PARSE && gr->req) {
        llmc__gr_enter(gr, GR_NEW);
        assert(!gr->parsed && !gr->body_taken.buf);
        gr->body_taken = job->taken; /* req->body and gr->body point into it */
        gr->canon = job->canon; /* moved: zeroed or the parse's */
        gr->parsed_off_loop = true;
        gr_state_t next = parsed(gr, job->rc, job->err);
        if (next == GR_NEW)
            next = gr->parse_for_miss ? prepare_miss(gr) : step_parsed(gr);
        if (gr->state != GR_DONE && next != gr->state)
            llmc__gr_enter(gr, next);
        run(gr);
    } else if (job->canon.root &&
               uv_queue_work(&gr->w->loop, &job->work, parse_drop_work, parse_drop_done) == 0) {
        llmc__gr_unref(gr); /* the client left meanwhile; the job goes on alone */
        return;
    } else {
        llmc_canon_free(&job->canon);
        llmc_http_body_free(&job->taken);
    }
    free(job);
    llmc__gr_unref(gr);
}

static gr_state_t parse_off_loop(gw_req_t *gr)
{
    parse_job_t *job = calloc(1, sizeof(*job));
    if (!job)
        return answer_oom(gr);
    if (gr->body == gr->req->body)
        llmc_http_take_body(gr->req, &job->taken);
    job->body = gr->body;
    job->len = gr->body_len;
    job->max_values = (size_t)gr->w->gw->cfg->max_json_values;
    job->gr = gr;
    job->work.data = job;
    if (uv_queue_work(&gr->w->loop, &job->work, parse_work, parse_done) != 0) {
        gr->body_taken = job->taken; /* the request still reads it */
        free(job);
        return answer_oom(gr);
    }
    llmc__gr_ref(gr); /* the parse's */
    LLMC_COUNT(&gr->w->ctr, parses_off_loop);
    return GR_PARKED_PARSE;
}

/* ---- LOOKUP: the tier set ---------------------------------------------------- */

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
        gr->verify = gr->similarity > 0 && gr->lookup.tl.verify && use == LLMC_USE_FRESH;
        gr->hit_xcache = use != LLMC_USE_FRESH ? "STALE"
                         : gr->similarity > 0  ? "SEMANTIC-HIT"
                                               : "HIT";
        gr->hit_ms = now;
        return GR_RESPOND;
    }
    /* An answer was there but may not be used: say which way (RFC 9211). */
    if (e)
        gr->fwd = now >= e->expires_ms ? "stale" : "request";
    if (e && now >= e->expires_ms && now - e->expires_ms <= LLMC_GW_LIVE(gr->w->gw, stale_if_error))
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
    /* 0 leaves the tier's default; a SIGHUP may have set another. */
    q->threshold = gr->policy.semantic_threshold > 0
                       ? gr->policy.semantic_threshold
                       : (float)LLMC_GW_LIVE(gr->w->gw, semantic_threshold) / 1000.0f;
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
    llmc_key_t caller;
    gr->flight = coalesce ? llmc_flight_join_as(gw->flights, &gr->key,
                                                flight_caller(gr, &caller), gr->stream, &created)
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
    llmc_bymodel_count(gw->bymodel, gr->w->id, gr->path,
                       gr->parsed ? gr->canon.model : NULL,
                       !coalesce ? LLMC_BY_BYPASS : created ? LLMC_BY_MISS : LLMC_BY_COALESCED,
                       NULL);
    llmc_bymodel_count_ns(gw->bymodel, gr->w->id, gr->policy.ns,
                          !coalesce ? LLMC_BY_BYPASS : created ? LLMC_BY_MISS : LLMC_BY_COALESCED,
                          NULL);
    /* Only a stream that joins a streaming call is relayed live; any other
       mix waits for the end and gets the answer converted (respond.c). */
    gr->fw.wants_data = gr->stream && gr->flight->is_stream;
    gr->answer = ANS_FLIGHT;
    if (created) {
        char url[1400];
        snprintf(url, sizeof(url), "%s%s", llmc_dialect_base(gw, gr->dialect),
                 gr->path + 3 /* strip "/v1" */);
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
    gw_req_t *list = llmc__gr_inbox_take(w), *gr;
    while ((gr = llmc__gr_inbox_pop(w, &list))) {
        if (gr->state == GR_PARKED_FLIGHT)
            run(gr);
        llmc__gr_unref(gr); /* the inbox's */
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
    gr->dialect = llmc_dialect_for_route(gr->path);
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
    gr->dialect = llmc_dialect_for_relay(gr->path);
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

/* The live page (dashboard.h): compiled in, served as it is. */
static void handle_dashboard(gw_req_t *gr)
{
    llmc__gr_enter(gr, GR_RESPOND);
    llmc_dashboard_respond(gr->req);
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

/* The row a POST to path would take on the public side, for explain. */
static bool explain_route(const char *path, gw_explain_route_t *out)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const gw_route_t *r = &routes[i];
        if ((r->method != HTTP_POST && r->method != ANY_METHOD) || r->listener != LISTEN_PUBLIC ||
            !path_matches(r, path))
            continue;
        *out = (gw_explain_route_t){r->path, r->cacheable, r->pass_why};
        return true;
    }
    return false;
}

static void handle_admin_explain(gw_req_t *gr)
{
    llmc__gw_admin_explain(gr, explain_route);
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
static bool authorized(llmc_worker_t *w, const gw_route_t *r, llmc_http_req_t *req)
{
    const llmc_gw_t *gw = w->gw;
    if (r->access == ACCESS_OPEN || r->access == ACCESS_CLIENT ||
        (r->access == ACCESS_TOKEN_IF_SET && !gw->admin_token_set) ||
        llmc_gw_admin_authorized(gw, req))
        return true;
    LLMC_COUNT(&w->ctr, denied_admin_token);
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
    if (!authorized(w, route, req))
        return;
    /* The table is taken once: the key found points into it, and the
       request keeps it (a reference) even if a SIGHUP swaps the worker's. */
    llmc_clients_t *keys = route->access == ACCESS_CLIENT ? llmc_gw_clients(w) : NULL;
    const char *cred = NULL;
    size_t cred_len = 0;
    const llmc_client_t *client = NULL;
    if (keys && !(client = llmc_gw_client_find(keys, req, &cred, &cred_len))) {
        LLMC_COUNT(&w->ctr, denied_client_key);
        llmc_http_respond_error(req, 401, "WWW-Authenticate: Bearer realm=\"llmcached\"\r\n",
                                "invalid_request_error", "invalid_api_key",
                                "this gateway needs one of its client keys: Authorization: "
                                "Bearer <key> (or x-api-key: <key>)");
        return;
    }
    if (route->body == BODY_JSON &&
        !llmc_policy_json_content_type(llmc_http_header(req, "Content-Type"))) {
        llmc_dialect_respond_error(llmc_dialect_for_route(route->path), req, 415, NULL,
                                   "invalid_request_error", "unsupported_media_type",
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
    if (client) {
        gr->clients = llmc_clients_ref(keys);
        gr->client = client;
        gr->cred = cred;
    }
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
