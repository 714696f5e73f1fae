/*
 * gateway/dialect.c: the model APIs' rows (see dialect.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Anthropic's anthropic-version and anthropic-beta headers change the
 *   answer (another schema, beta features), so they are part of the key,
 *   and they go upstream as they came; the client's x-api-key is its
 *   credential exactly as Authorization is for OpenAI (the per-key scope
 *   hashes it; the gateway's own key replaces it upstream).
 * - Errors the gateway makes for an Anthropic route have Anthropic's shape
 *   ({"type":"error","error":{"type","message"}}): the Anthropic SDK reads
 *   the message from there, and its error classes come from the status.
 */
#include "gateway/dialect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gateway/policy.h"
#include "llmc/anthropic.h"
#include "llmc/responses_stream.h"
#include "llmc/sse.h"

#define ANTHROPIC_DEFAULT_BASE "https://api.anthropic.com/v1"

/* ---- OpenAI ------------------------------------------------------------------ */

static void *oa_new(void) { return llmc_sse_asm_new(); }
static int oa_add(void *a, const char *d, size_t n) { return llmc_sse_asm_add(a, d, n); }
static bool oa_complete(const void *a) { return llmc_sse_asm_complete(a); }
static int oa_result(void *a, char **j, size_t *n) { return llmc_sse_asm_result(a, j, n); }
static void oa_free(void *a) { llmc_sse_asm_free(a); }

static int oa_replay(const char *json, size_t len, bool usage, char **out, size_t *n)
{
    llmc_sse_replay_opts_t o = {.piece_bytes = 0, .include_usage = usage};
    return llmc_sse_replay(json, len, &o, out, n);
}

static char *oa_error(int status, const char *type, const char *code, const char *msg)
{
    (void)status;
    json_t *j = json_pack("{s:{s:s,s:s,s:s?}}", "error", "message", msg, "type",
                          type ? type : "invalid_request_error", "code", code);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

static const char *const oa_cred[] = {"authorization", NULL};
static const char *const no_headers[] = {NULL};

const llmc_dialect_t llmc_dialect_openai = {
    .name = "openai", .usage_in_stream = false,
    .asm_new = oa_new, .asm_add = oa_add, .asm_complete = oa_complete, .asm_result = oa_result,
    .asm_free = oa_free, .replay = oa_replay, .key_headers = no_headers, .cred_headers = oa_cred,
    .error_body = oa_error, .vary_cred = "Authorization", .vary_keyed = "",
    .anthropic_upstream = false,
};

/* ---- the Responses API: OpenAI's upstream, typed events ------------------ */

static void *resp_new(void) { return llmc_resp_asm_new(); }
static int resp_add(void *a, const char *d, size_t n) { return llmc_resp_asm_add(a, d, n); }
static bool resp_complete(const void *a) { return llmc_resp_asm_complete(a); }
static int resp_result(void *a, char **j, size_t *n) { return llmc_resp_asm_result(a, j, n); }
static void resp_free(void *a) { llmc_resp_asm_free(a); }

/* Usage is always in response.completed, asked for or not. */
static int resp_replay(const char *json, size_t len, bool usage, char **out, size_t *n)
{
    (void)usage;
    return llmc_resp_replay(json, len, 0, out, n);
}

const llmc_dialect_t llmc_dialect_responses = {
    .name = "responses", .usage_in_stream = true,
    .asm_new = resp_new, .asm_add = resp_add, .asm_complete = resp_complete,
    .asm_result = resp_result, .asm_free = resp_free, .replay = resp_replay,
    .key_headers = no_headers, .cred_headers = oa_cred, .error_body = oa_error,
    .vary_cred = "Authorization", .vary_keyed = "", .anthropic_upstream = false,
};

/* ---- Anthropic -------------------------------------------------------------- */

static void *an_new(void) { return llmc_anth_asm_new(); }
static int an_add(void *a, const char *d, size_t n) { return llmc_anth_asm_add(a, d, n); }
static bool an_complete(const void *a) { return llmc_anth_asm_complete(a); }
static int an_result(void *a, char **j, size_t *n) { return llmc_anth_asm_result(a, j, n); }
static void an_free(void *a) { llmc_anth_asm_free(a); }

/* Usage is always in an Anthropic stream, asked for or not. */
static int an_replay(const char *json, size_t len, bool usage, char **out, size_t *n)
{
    (void)usage;
    return llmc_anth_replay(json, len, 0, out, n);
}

/* Anthropic's error types by status (its API reference, "Errors"); the
   gateway's own type words (server_error, upstream_error, cache_miss) mean
   nothing to its clients. */
static const struct {
    int status;
    const char *type;
} anth_types[] = {
    {400, "invalid_request_error"}, {401, "authentication_error"}, {403, "permission_error"},
    {404, "not_found_error"},       {413, "request_too_large"},    {429, "rate_limit_error"},
    {500, "api_error"},             {502, "api_error"},            {503, "overloaded_error"},
    {504, "timeout_error"},
};

static char *an_error(int status, const char *type, const char *code, const char *msg)
{
    (void)type;
    (void)code;
    const char *t = status >= 500 ? "api_error" : "invalid_request_error";
    for (size_t i = 0; i < sizeof(anth_types) / sizeof(anth_types[0]); i++)
        if (anth_types[i].status == status)
            t = anth_types[i].type;
    json_t *j = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", t, "message", msg);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

static const char *const an_keyed[] = {"anthropic-version", "anthropic-beta", NULL};
static const char *const an_cred[] = {"x-api-key", "authorization", NULL};

const llmc_dialect_t llmc_dialect_anthropic = {
    .name = "anthropic", .usage_in_stream = true,
    .asm_new = an_new, .asm_add = an_add, .asm_complete = an_complete, .asm_result = an_result,
    .asm_free = an_free, .replay = an_replay, .key_headers = an_keyed, .cred_headers = an_cred,
    .error_body = an_error, .vary_cred = "X-Api-Key, Authorization",
    .vary_keyed = ", Anthropic-Version, Anthropic-Beta", .anthropic_upstream = true,
};

/* The cached routes whose stream (or whole API) is not chat completions'. */
static const struct {
    const char *path;
    const llmc_dialect_t *d;
} routes[] = {
    {"/v1/messages", &llmc_dialect_anthropic},
    {"/v1/responses", &llmc_dialect_responses},
};

const llmc_dialect_t *llmc_dialect_for_route(const char *path)
{
    for (size_t i = 0; path && i < sizeof(routes) / sizeof(routes[0]); i++)
        if (strcmp(routes[i].path, path) == 0)
            return routes[i].d;
    return NULL;
}

const llmc_dialect_t *llmc_dialect_for_relay(const char *path)
{
    static const char anth[] = "/v1/messages/";
    return strncmp(path, anth, sizeof(anth) - 1) == 0 ? &llmc_dialect_anthropic : NULL;
}

void llmc_dialect_respond_error(const llmc_dialect_t *d, llmc_http_req_t *req, int status,
                                const char *hdrs, const char *type, const char *code,
                                const char *msg)
{
    if (!d || d->error_body == oa_error) {
        llmc_http_respond_error(req, status, hdrs, type, code, msg);
        return;
    }
    char h[2560]; /* respond.c's header lines (at most 2 KiB) and ours */
    /* The server's own rule for errors a retry cannot fix (http/head.c). */
    bool final = status == 400 || status == 404 || status == 405 || status == 413 ||
                 status == 414 || status == 415 || status == 431;
    int n = snprintf(h, sizeof(h), "%sContent-Type: application/json\r\n%s", hdrs ? hdrs : "",
                     final && !(hdrs && strcasestr(hdrs, "x-should-retry"))
                         ? "X-Should-Retry: false\r\n" : "");
    char *body = d->error_body(status, type, code, msg);
    llmc_http_respond_copy(req, status, h, n > 0 && (size_t)n < sizeof(h) ? (size_t)n : 0,
                           body ? body : "{}", body ? strlen(body) : 2);
    free(body);
}

/* ---- the upstream of a dialect --------------------------------------------------- */

const char *llmc_dialect_base(const llmc_gw_t *gw, const llmc_dialect_t *d)
{
    if (!llmc_dialect_of(d)->anthropic_upstream)
        return gw->upstream_base;
    return gw->anth_base[0] ? gw->anth_base : ANTHROPIC_DEFAULT_BASE;
}

const char *llmc_dialect_key_upstream(const llmc_gw_t *gw, const llmc_dialect_t *d)
{
    if (!llmc_dialect_of(d)->anthropic_upstream)
        return gw->key_upstream;
    return gw->anth_key_upstream ? gw->anth_key_upstream : llmc_dialect_base(gw, d);
}

const char *llmc_dialect_auth(const llmc_gw_t *gw, const llmc_dialect_t *d)
{
    return llmc_dialect_of(d)->anthropic_upstream ? gw->anth_auth : gw->upstream_auth;
}

bool llmc_dialect_shared(const llmc_gw_t *gw, const llmc_dialect_t *d)
{
    return llmc_dialect_of(d)->anthropic_upstream ? gw->anth_shared_scope : gw->shared_scope;
}

const char *llmc_dialect_credential(const llmc_dialect_t *d, const llmc_http_req_t *req,
                                    const char **line)
{
    const char *const *h = llmc_dialect_of(d)->cred_headers;
    for (; *h; h++) {
        const char *v = llmc_http_header(req, *h);
        if (v) {
            *line = strcmp(*h, "x-api-key") == 0 ? "x-api-key: " : "Authorization: ";
            return v;
        }
    }
    return NULL;
}

const char *llmc_dialect_header(const llmc_http_req_t *req, const char *name, char **owned)
{
    return llmc_policy_list_header(req, name, owned);
}

char *llmc_dialect_key_extra(const llmc_dialect_t *d, const llmc_http_req_t *req,
                             const char *prefix)
{
    const char *const *h = llmc_dialect_of(d)->key_headers;
    size_t n = strlen(prefix) + 1;
    for (size_t i = 0; h[i]; i++) {
        char *owned = NULL;
        const char *v = llmc_dialect_header(req, h[i], &owned);
        n += (v ? strlen(v) : 0) + 1;
        free(owned);
    }
    char *out = malloc(n), *p = out;
    if (!out)
        return NULL;
    p += sprintf(p, "%s", prefix);
    for (size_t i = 0; h[i]; i++) {
        char *owned = NULL;
        const char *v = llmc_dialect_header(req, h[i], &owned);
        p += snprintf(p, n - (size_t)(p - out), "\n%s", v ? v : "");
        free(owned);
    }
    return out;
}
