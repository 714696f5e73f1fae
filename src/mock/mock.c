/*
 * mock/mock.c: serving the mock model (see mock.h): routing, the per-request
 * delay, the faults a request asks for, streaming, counters, and the two ways
 * to run it (its own thread for --upstream mock and tests, or the `mock`
 * subcommand on the main thread).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Everything runs on one loop thread, so the counters are plain integers
 *   and are exact under any concurrency; other threads only ever touch the
 *   mock through uv_async (stop).
 * - Each waiting request costs one uv_timer in a malloc'd struct and nothing
 *   else, so ten thousand slow requests are cheap. The struct is freed in the
 *   timer's close callback, whichever of answer, client abort or shutdown
 *   ends the request first (finish() is idempotent).
 * - What the answer says is built by the pure functions in mock_answer.c;
 *   this file decides only when and how it is sent, and how it fails.
 * - A request the mock cannot parse is answered at once (400), not after the
 *   delay: tests of malformed input should not have to wait.
 */
#include "mock/mock.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "http/encoding.h"
#include "http/http.h"
#include "llmc/error.h"
#include "mock/mock_int.h"

enum { ROUTE_STATS = 100, ROUTE_RESET, ROUTE_REQUESTS };

/* Model calls whose headers GET /mock/requests keeps, the newest last. */
#define REQUEST_LOG 64

/* method NULL: any method. prefix: the path starts with path and goes on. */
static const struct route {
    const char *method, *path;
    int kind;
    bool prefix;
} routes[] = {
    {"POST", "/v1/chat/completions", LLMC_MOCK_CHAT, false},
    {"POST", "/v1/completions", LLMC_MOCK_COMPLETIONS, false},
    {"POST", "/v1/embeddings", LLMC_MOCK_EMBEDDINGS, false},
    {"GET", "/v1/models", LLMC_MOCK_MODELS, false},
    {"GET", "/v1/models/", LLMC_MOCK_MODEL, true},
    {NULL, "/v1/echo", LLMC_MOCK_ECHO, false},
    {NULL, "/v1/echo/", LLMC_MOCK_ECHO, true},
    {"POST", "/v1/responses", LLMC_MOCK_RESPONSES, false},
    {"POST", "/v1/messages", LLMC_MOCK_MESSAGES, false},
    {"GET", "/mock/stats", ROUTE_STATS, false},
    {"POST", "/mock/reset", ROUTE_RESET, false},
    {"GET", "/mock/requests", ROUTE_REQUESTS, false},
};

/* Per-kind call counters, in llmc__mock_kind_t order, as /mock/stats names them. */
static const char *const kind_names[] = {"chat", "completions", "embeddings", "models", "model",
                                         "echo", "responses", "messages"};
#define NKINDS (sizeof(kind_names) / sizeof(kind_names[0]))

/* The pieces an echo is sent back in, so that a large one arrives in many
   reads rather than one write. */
#define ECHO_PIECE (64u << 10)

enum fault {
    F_NONE, F_RESET, F_TRUNCATE, F_INVALID_JSON, F_EMPTY, F_STALL, F_CUT_STREAM, F_STALL_BODY,
    F_ENDLESS_STREAM
};

static const char *const fault_names[] = {
    [F_RESET] = "reset", [F_TRUNCATE] = "truncate", [F_INVALID_JSON] = "invalid-json",
    [F_EMPTY] = "empty", [F_STALL] = "stall",       [F_CUT_STREAM] = "cut-stream",
    [F_STALL_BODY] = "stall-body", [F_ENDLESS_STREAM] = "endless-stream",
};

/* OpenAI's error type and code for the statuses tests ask for. */
static const struct {
    int status;
    const char *type, *code, *message;
} status_errors[] = {
    {400, "invalid_request_error", NULL, "mock: bad request"},
    {401, "invalid_request_error", "invalid_api_key", "mock: incorrect API key provided"},
    {403, "invalid_request_error", "forbidden", "mock: forbidden"},
    {404, "invalid_request_error", "model_not_found", "mock: the model does not exist"},
    {429, "requests", "rate_limit_exceeded", "mock: rate limit reached, try again in 1s"},
    {500, "server_error", NULL, "mock: the server had an error processing your request"},
    {502, "server_error", NULL, "mock: bad gateway"},
    {503, "server_error", NULL, "mock: the engine is currently overloaded"},
    {504, "server_error", NULL, "mock: gateway timeout"},
};

struct llmc_mock {
    uv_loop_t *loop;
    llmc_http_server_t *srv;
    uint64_t latency_ms;
    llmc__mock_classes_t *classes;   /* --classes; NULL: none */
    uint64_t calls;
    uint64_t by_kind[NKINDS];
    uint64_t in_flight;
    uint64_t max_in_flight;          /* high-water mark of in_flight since the last reset */
    json_t *log;                     /* the last REQUEST_LOG model calls: path and headers */
    int port;
    bool stopping;
    /* llmc_mock_start: own thread and loop, stopped through an async. */
    uv_loop_t own;
    uv_thread_t thread;
    uv_async_t stop;
    /* llmc_mock_main: signals. */
    uv_signal_t sigint, sigterm;
};

typedef struct controls {
    uint64_t latency_ms;
    int status;
    enum fault fault;
    size_t bytes;
    uint64_t chunk_delay_ms;
    bool split_bytes;
    bool gzip;               /* answer gzip when the request accepts it (plain answers) */
    bool retry_after_set;
    char retry_after[41];    /* with status: the Retry-After to send ("" for none) */
    const char *body;        /* mock.body: sent as the answer instead of the model's; points
                                into the request's JSON, which outlives the answer */
    const json_t *orgs;      /* mock.organizations: the ones the caller's key is in */
    const json_t *keys;      /* mock.api_keys: the keys taken (Authorization: Bearer K) */
    size_t body_len;
} controls_t;

typedef struct mreq {
    llmc_mock_t *m;
    llmc_http_req_t *req;     /* NULL once the request has ended */
    uv_timer_t timer;         /* the delay, then the pauses of a stream */
    llmc__mock_kind_t kind;
    json_t *body;
    controls_t ctl;
    bool stream;
    bool done;
    llmc__mock_out_t out;     /* a stream being sent */
    size_t piece;
    char call_hdr[320];       /* "X-Mock-Call: N\r\n" and the account headers, on every
                                 answer */
} mreq_t;

#define JSON_CT "Content-Type: application/json\r\n"


/* ---- ending a request --------------------------------------------------------- */

static void on_mreq_closed(uv_handle_t *h)
{
    mreq_t *mr = h->data;
    json_decref(mr->body);
    llmc__mock_out_free(&mr->out);
    free(mr);
}

static void finish(mreq_t *mr)
{
    if (mr->done)
        return;
    mr->done = true;
    mr->req = NULL;
    /* Counted out here, not when the timer's close completes: the loop may
       read the client's next request before close callbacks run. */
    mr->m->in_flight--;
    uv_close((uv_handle_t *)&mr->timer, on_mreq_closed);
}

static void on_abort(llmc_http_req_t *req)
{
    finish(req->data);
}

/* The server must not call on_abort once the response is handed over. */
static llmc_http_req_t *take_req(mreq_t *mr)
{
    llmc_http_req_t *req = mr->req;
    req->on_abort = NULL;
    return req;
}

/* Anthropic's error type for a status (its API reference, "Errors"). */
static const char *anthropic_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* An error in the shape of the API the request spoke: Anthropic's
   {"type":"error","error":{"type","message"}} on /v1/messages (its SDK
   reads the message from there), OpenAI's everywhere else. */
static void send_error(mreq_t *mr, int status, const char *hdrs, const char *type,
                       const char *code, const char *msg)
{
    json_t *j = mr->kind != LLMC_MOCK_MESSAGES ? NULL
                : json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                            anthropic_error_type(status), "message", msg);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!body) {
        llmc_http_respond_error(take_req(mr), status, hdrs, type, code, msg);
        finish(mr);
        return;
    }
    char h[512];
    int n = snprintf(h, sizeof(h), "%s" JSON_CT, hdrs ? hdrs : "");
    size_t len = strlen(body);
    uv_buf_t b = uv_buf_init(body, (unsigned)len);
    llmc_http_respond(take_req(mr), status, h, n > 0 && (size_t)n < sizeof(h) ? (size_t)n : 0, &b,
                      1, free, body);
    finish(mr);
}

/* Sends a JSON (or would-be JSON) body and frees it once written; gzip'd
   when mock.gzip asked for it and the request accepts gzip. */
static void send_body(mreq_t *mr, int status, char *body, size_t len)
{
    char hdrs[512];
    const char *ce = "";
    char *z = NULL;
    size_t zlen = 0;
    if (mr->ctl.gzip && mr->req &&
        llmc_encoding_pick(llmc_http_header(mr->req, "accept-encoding"),
                           LLMC_ENC_MASK(LLMC_ENC_GZIP)) == LLMC_ENC_GZIP &&
        llmc_encoding_encode(LLMC_ENC_GZIP, body, len, &z, &zlen) == 0) {
        free(body);
        body = z;
        len = zlen;
        ce = "Content-Encoding: gzip\r\n";
    }
    int n = snprintf(hdrs, sizeof(hdrs), JSON_CT "%s%s", ce, mr->call_hdr);
    uv_buf_t b = uv_buf_init(body, (unsigned)len);
    llmc_http_respond(take_req(mr), status, hdrs, (size_t)n, &b, len ? 1 : 0, free, body);
    finish(mr);
}

/* ---- answers -------------------------------------------------------------------- */

static void status_answer(mreq_t *mr)
{
    char hdrs[512];
    const char *type = mr->ctl.status >= 500 ? "server_error" : "invalid_request_error";
    const char *ra = mr->ctl.retry_after_set ? mr->ctl.retry_after
                     : mr->ctl.status == 429 ? "1" : "";
    const char *code = NULL, *msg = "mock: error requested";

    for (size_t i = 0; i < sizeof(status_errors) / sizeof(status_errors[0]); i++)
        if (status_errors[i].status == mr->ctl.status) {
            type = status_errors[i].type;
            code = status_errors[i].code;
            msg = status_errors[i].message;
        }
    snprintf(hdrs, sizeof(hdrs), "%s%s%s%s", mr->call_hdr, ra[0] ? "Retry-After: " : "", ra,
             ra[0] ? "\r\n" : "");
    send_error(mr, mr->ctl.status, hdrs, type, code, msg);
}

static void stream_next(mreq_t *mr);

static void on_stream_timer(uv_timer_t *t)
{
    stream_next(t->data);
}

/* Sends the stream's pieces, pausing between them when asked; a cut stream
   ends half way without its last chunk. */
static void stream_next(mreq_t *mr)
{
    bool endless = mr->ctl.fault == F_ENDLESS_STREAM;
    uint64_t delay = mr->ctl.chunk_delay_ms ? mr->ctl.chunk_delay_ms
                     : mr->ctl.split_bytes ? 1 : endless ? 10 : 0;
    bool cut = mr->ctl.fault == F_CUT_STREAM;
    size_t stop_at = cut || endless ? mr->out.ncuts / 2 : mr->out.ncuts;

    /* An endless stream sends its content pieces round and round (never the
       last chunk or [DONE]) until the client leaves. */
    if (endless && mr->piece >= stop_at && stop_at > 1)
        mr->piece = 1;
    while (mr->piece < stop_at) {
        size_t from = mr->piece ? mr->out.cuts[mr->piece - 1] : 0;
        size_t to = mr->out.cuts[mr->piece];
        if (llmc_http_stream_write(mr->req, mr->out.body + from, to - from) != 0 || mr->done)
            return;   /* the client left: on_abort ends the request */
        mr->piece++;
        if (endless && mr->piece >= stop_at && stop_at > 1)
            mr->piece = 1;
        if (delay && mr->piece < stop_at) {
            uv_timer_start(&mr->timer, on_stream_timer, delay, 0);
            return;
        }
    }
    llmc_http_req_t *req = take_req(mr);
    if (cut)
        llmc_http_abort(req);
    else
        llmc_http_stream_end(req);
    finish(mr);
}

static void stream_answer(mreq_t *mr)
{
    char hdrs[512];
    int n = snprintf(hdrs, sizeof(hdrs),
                     "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n%s",
                     mr->call_hdr);
    if (llmc_http_stream_begin(mr->req, 200, hdrs, (size_t)n) != 0)
        return;
    mr->piece = 0;
    stream_next(mr);
}

/* Head and the first half of the body, then the connection closes. */
static void truncated_answer(mreq_t *mr)
{
    char hdrs[512];
    int n = snprintf(hdrs, sizeof(hdrs), JSON_CT "%s", mr->call_hdr);
    if (llmc_http_stream_begin(mr->req, 200, hdrs, (size_t)n) != 0 ||
        llmc_http_stream_write(mr->req, mr->out.body, mr->out.len / 2) != 0 || mr->done)
        return;
    if (mr->ctl.fault == F_STALL_BODY)
        return; /* half an answer, then silence until the client leaves */
    llmc_http_abort(take_req(mr));
    finish(mr);
}

/* The request's body sent back as it came, in pieces, with its content
   type; X-Request-Id names the method and target the mock was asked for
   (a header every OpenAI answer has, which gateways pass on). */
static void echo_answer(mreq_t *mr)
{
    llmc_http_req_t *req = mr->req;
    const char *ct = llmc_http_header(req, "content-type");
    char hdrs[1024];
    int n = snprintf(hdrs, sizeof(hdrs), "Content-Type: %.200s\r\nX-Request-Id: echo %s %.300s\r\n%s",
                     ct ? ct : "application/octet-stream", req->method_name, req->target,
                     mr->call_hdr);
    if (llmc_http_stream_begin(req, 200, hdrs, (size_t)n) != 0)
        return;
    for (size_t off = 0; off < req->body_len; off += ECHO_PIECE) {
        size_t len = req->body_len - off < ECHO_PIECE ? req->body_len - off : ECHO_PIECE;
        if (llmc_http_stream_write(req, req->body + off, len) != 0 || mr->done)
            return;   /* the client left: on_abort ends the request */
    }
    llmc_http_stream_end(take_req(mr));
    finish(mr);
}

static void model_answer(mreq_t *mr)
{
    /* Not time(NULL): glibc reads a coarse clock there that can lag the real
       second by a tick, and clients compare `created` with their own clock. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    llmc__mock_ctx_t c = {.req = mr->body, .now_s = (int64_t)ts.tv_sec,
                          .pad_bytes = mr->ctl.bytes, .split_bytes = mr->ctl.split_bytes,
                          .classes = mr->m->classes,
                          .model_id = mr->kind == LLMC_MOCK_MODEL
                                          ? mr->req->path + sizeof("/v1/models/") - 1 : NULL};
    char err[256];
    /* As Anthropic's API: no credential, or no anthropic-version, and the
       model is not asked at all (tests see what the gateway forwarded). */
    if (mr->kind == LLMC_MOCK_MESSAGES && !llmc_http_header(mr->req, "x-api-key") &&
        !llmc_http_header(mr->req, "authorization")) {
        send_error(mr, 401, mr->call_hdr, "authentication_error", NULL,
                   "mock: x-api-key header is required");
        return;
    }
    if (mr->kind == LLMC_MOCK_MESSAGES && !llmc_http_header(mr->req, "anthropic-version")) {
        send_error(mr, 400, mr->call_hdr, "invalid_request_error", NULL,
                   "mock: anthropic-version: header is required");
        return;
    }
    int rc = llmc__mock_digest(mr->body, c.digest);

    if (rc == 0)
        rc = mr->kind == LLMC_MOCK_RESPONSES
                 ? llmc__mock_responses(&c, mr->stream, &mr->out, err, sizeof(err))
                 : llmc__mock_answer(mr->kind, &c, mr->stream, &mr->out, err, sizeof(err));
    if (rc == LLMC_EINVAL) {
        send_error(mr, 400, mr->call_hdr, "invalid_request_error", NULL, err);
        return;
    }
    if (rc == LLMC_ENOENT) {
        send_error(mr, 404, mr->call_hdr, "invalid_request_error", "model_not_found", err);
        return;
    }
    if (rc != 0) {
        send_error(mr, 500, NULL, "server_error", NULL, "mock: out of memory");
        return;
    }
    if (mr->ctl.fault == F_TRUNCATE || mr->ctl.fault == F_STALL_BODY ||
        ((mr->ctl.fault == F_CUT_STREAM || mr->ctl.fault == F_ENDLESS_STREAM) && !mr->stream)) {
        truncated_answer(mr);
    } else if (mr->stream) {
        stream_answer(mr);
    } else if (mr->ctl.status == 204) {
        send_body(mr, 204, NULL, 0);
    } else {
        char *body = mr->out.body;
        size_t len = mr->out.len;
        mr->out.body = NULL;   /* handed to the server, freed by its release */
        send_body(mr, mr->ctl.status ? mr->ctl.status : 200, body, len);
    }
}

/* mock.organizations given and the request's OpenAI-Organization names
   another: OpenAI answers that 401. */
/* Whether value is one of the strings of list. */
static bool listed(const json_t *list, const char *value)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), value) == 0)
            return true;
    return false;
}

/* mock.api_keys given and the request's bearer key is not one of them. */
static bool key_refused(const mreq_t *mr)
{
    const char *auth = llmc_http_header(mr->req, "authorization");
    if (!mr->ctl.keys)
        return false;
    if (!auth || strncmp(auth, "Bearer ", 7) != 0)
        return true;
    return !listed(mr->ctl.keys, auth + 7);
}

static bool org_refused(const mreq_t *mr)
{
    const char *org = llmc_http_header(mr->req, "openai-organization");
    return mr->ctl.orgs && org && !listed(mr->ctl.orgs, org);
}

static void on_delay(uv_timer_t *t)
{
    mreq_t *mr = t->data;

    if (key_refused(mr)) {
        send_error(mr, 401, mr->call_hdr, "invalid_request_error", "invalid_api_key",
                   "mock: Incorrect API key provided");
        return;
    }
    if (org_refused(mr)) {
        send_error(mr, 401, mr->call_hdr, "invalid_request_error", "mismatched_organization",
                   "mock: OpenAI-Organization header should match organization for API key");
        return;
    }
    if (mr->ctl.status >= 400) {
        status_answer(mr);
        return;
    }
    if (mr->ctl.body) {
        char *b = malloc(mr->ctl.body_len + 1);
        if (b) {
            memcpy(b, mr->ctl.body, mr->ctl.body_len);
            send_body(mr, mr->ctl.status ? mr->ctl.status : 200, b, mr->ctl.body_len);
        } else {
            send_error(mr, 500, NULL, "server_error", NULL, "mock: out of memory");
        }
        return;
    }
    switch (mr->ctl.fault) {
    case F_RESET:
        llmc_http_abort(take_req(mr));
        finish(mr);
        return;
    case F_INVALID_JSON: {
        static const char junk[] = "this is not JSON {\"choices\": [";
        char *b = strdup(junk);
        if (b)
            send_body(mr, 200, b, strlen(b));
        else
            send_error(mr, 500, NULL, "server_error", NULL, "mock: out of memory");
        return;
    }
    case F_EMPTY:
        send_body(mr, 200, NULL, 0);
        return;
    default:
        if (mr->kind == LLMC_MOCK_ECHO)
            echo_answer(mr);
        else
            model_answer(mr);
    }
}

/* ---- controls: the body's "mock" object ---------------------------------------- */

static int uint_field(const json_t *o, const char *name, uint64_t max, uint64_t *out, char *err,
                      size_t errlen)
{
    const json_t *v = json_object_get(o, name);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) {
        snprintf(err, errlen, "mock.%s must be an integer from 0 to %llu", name,
                 (unsigned long long)max);
        return LLMC_EINVAL;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_fault(const json_t *f, enum fault *out, char *err, size_t errlen)
{
    if (!f)
        return 0;
    for (size_t i = 1; i < sizeof(fault_names) / sizeof(fault_names[0]); i++)
        if (json_is_string(f) && strcmp(json_string_value(f), fault_names[i]) == 0) {
            *out = (enum fault)i;
            return 0;
        }
    snprintf(err, errlen, "mock.fault must be one of reset, truncate, invalid-json, empty, stall, "
             "stall-body, endless-stream, "
                          "cut-stream");
    return LLMC_EINVAL;
}

/* mock.retry_after: a header value to send as it is, so that tests can send
   what a real upstream might (an HTTP-date, a negative or huge number). */
static int retry_after_field(const json_t *v, controls_t *ctl, char *err, size_t errlen)
{
    const char *s = json_string_value(v);
    if (!v)
        return 0;
    if (!s || strlen(s) >= sizeof(ctl->retry_after)) {
        snprintf(err, errlen, "mock.retry_after must be a string of at most 40 bytes");
        return LLMC_EINVAL;
    }
    for (const char *p = s; *p; p++)
        if (*p < 0x20 || *p > 0x7e) {
            snprintf(err, errlen, "mock.retry_after must be printable ASCII");
            return LLMC_EINVAL;
        }
    snprintf(ctl->retry_after, sizeof(ctl->retry_after), "%s", s);
    ctl->retry_after_set = true;
    return 0;
}

static int parse_controls(const json_t *body, controls_t *ctl, char *err, size_t errlen)
{
    const json_t *o = json_object_get(body, "mock");
    uint64_t status = 0, bytes = 0;
    int rc;

    if (!o)
        return 0;
    if (!json_is_object(o)) {
        snprintf(err, errlen, "'mock' must be an object");
        return LLMC_EINVAL;
    }
    if ((rc = uint_field(o, "latency_ms", 3600000, &ctl->latency_ms, err, errlen)) ||
        (rc = uint_field(o, "chunk_delay_ms", 60000, &ctl->chunk_delay_ms, err, errlen)) ||
        (rc = uint_field(o, "bytes", 256u << 20, &bytes, err, errlen)) ||
        (rc = uint_field(o, "status", 599, &status, err, errlen)) ||
        (rc = parse_fault(json_object_get(o, "fault"), &ctl->fault, err, errlen)))
        return rc;
    if (status && (status < 200 || (status >= 300 && status < 400))) {
        snprintf(err, errlen, "mock.status must be from 200 to 299 or from 400 to 599");
        return LLMC_EINVAL;
    }
    const json_t *raw = json_object_get(o, "body");
    if (raw && !json_is_string(raw)) {
        snprintf(err, errlen, "mock.body must be a string");
        return LLMC_EINVAL;
    }
    if (raw) {
        ctl->body = json_string_value(raw);
        ctl->body_len = json_string_length(raw);
    }
    const json_t *split = json_object_get(o, "split");
    if (split && !(json_is_string(split) && strcmp(json_string_value(split), "bytes") == 0)) {
        snprintf(err, errlen, "mock.split must be \"bytes\"");
        return LLMC_EINVAL;
    }
    if ((rc = retry_after_field(json_object_get(o, "retry_after"), ctl, err, errlen)))
        return rc;
    const json_t *orgs = json_object_get(o, "organizations");
    if (orgs && !json_is_array(orgs)) {
        snprintf(err, errlen, "mock.organizations must be an array of strings");
        return LLMC_EINVAL;
    }
    ctl->orgs = orgs;
    const json_t *keys = json_object_get(o, "api_keys");
    if (keys && !json_is_array(keys)) {
        snprintf(err, errlen, "mock.api_keys must be an array of strings");
        return LLMC_EINVAL;
    }
    ctl->keys = keys;
    ctl->gzip = json_is_true(json_object_get(o, "gzip"));
    ctl->status = (int)status;
    ctl->bytes = (size_t)bytes;
    ctl->split_bytes = split != NULL;
    return 0;
}

/* ---- routing ----------------------------------------------------------------------- */

static void stats_answer(llmc_mock_t *m, llmc_http_req_t *req, bool reset)
{
    if (reset) {
        json_array_clear(m->log);
        m->calls = 0;
        m->max_in_flight = m->in_flight;
        memset(m->by_kind, 0, sizeof(m->by_kind));
    }
    json_t *o = json_pack("{s:I,s:I,s:I}", "calls", (json_int_t)m->calls, "in_flight",
                          (json_int_t)m->in_flight, "max_in_flight", (json_int_t)m->max_in_flight);
    for (size_t i = 0; o && i < NKINDS; i++)
        json_object_set_new(o, kind_names[i], json_integer((json_int_t)m->by_kind[i]));
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    static const char h[] = "Content-Type: application/json\r\nCache-Control: no-store\r\n";
    if (s)
        llmc_http_respond_copy(req, 200, h, sizeof(h) - 1, s, strlen(s));
    else
        llmc_http_respond_error(req, 500, NULL, "server_error", NULL, "mock: out of memory");
    free(s);
}

static void requests_answer(llmc_mock_t *m, llmc_http_req_t *req)
{
    char *s = m->log ? json_dumps(m->log, JSON_COMPACT) : strdup("[]");
    static const char h[] = "Content-Type: application/json\r\nCache-Control: no-store\r\n";
    if (s)
        llmc_http_respond_copy(req, 200, h, sizeof(h) - 1, s, strlen(s));
    else
        llmc_http_respond_error(req, 500, NULL, "server_error", NULL, "mock: out of memory");
    free(s);
}

static bool path_matches(const struct route *r, const char *path)
{
    if (!r->prefix)
        return strcmp(path, r->path) == 0;
    size_t n = strlen(r->path);
    return strncmp(path, r->path, n) == 0 && path[n] != '\0';
}

static const struct route *find_route(const llmc_http_req_t *req, bool *path_known)
{
    *path_known = false;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (!path_matches(&routes[i], req->path))
            continue;
        *path_known = true;
        if (!routes[i].method || strcmp(req->method_name, routes[i].method) == 0 ||
            (strcmp(req->method_name, "HEAD") == 0 && strcmp(routes[i].method, "GET") == 0))
            return &routes[i];   /* HEAD as GET: the server sends no body */
    }
    return NULL;
}

/* Parses the body and the controls; 0, or answers 400 itself and returns
   LLMC_EINVAL. */
static int read_request(mreq_t *mr, llmc_http_req_t *req)
{
    json_error_t jerr;
    char err[256];

    if (mr->kind == LLMC_MOCK_MODELS || mr->kind == LLMC_MOCK_MODEL || mr->kind == LLMC_MOCK_ECHO)
        return 0;   /* no JSON body: an echo's may be anything */
    /* JSON_ALLOW_NUL: a "\u0000" in the prompt is echoed into the answer,
       which is how tests get an upstream answer that holds a NUL. */
    mr->body = json_loadb(req->body ? req->body : "", req->body_len, JSON_ALLOW_NUL, &jerr);
    if (!mr->body) {
        snprintf(err, sizeof(err), "We could not parse the JSON body of your request: %s", jerr.text);
    } else if (!json_is_object(mr->body)) {
        snprintf(err, sizeof(err), "The request body must be a JSON object");
    } else if (parse_controls(mr->body, &mr->ctl, err, sizeof(err)) == 0) {
        mr->stream = json_is_true(json_object_get(mr->body, "stream")) &&
                     mr->kind != LLMC_MOCK_EMBEDDINGS;
        return 0;
    }
    send_error(mr, 400, mr->call_hdr, "invalid_request_error", NULL, err);
    return LLMC_EINVAL;
}

/* Keeps req's path and headers in the request log (GET /mock/requests), so
   tests can see what the gateway sent upstream. */
static void log_request(llmc_mock_t *m, const llmc_http_req_t *req)
{
    json_t *h = json_object(), *o = json_pack("{s:s,s:o}", "path", req->path, "headers", h);
    if (!m->log && !(m->log = json_array()))
        return json_decref(o);
    for (size_t i = 0; h && i < req->nheaders; i++)
        if (!json_object_get(h, req->headers[i].name))   /* the first of a repeated one */
            json_object_set_new(h, req->headers[i].name, json_string(req->headers[i].value));
    if (o)
        json_array_append_new(m->log, o);
    if (json_array_size(m->log) > REQUEST_LOG)
        json_array_remove(m->log, 0);
}

static void model_call(llmc_mock_t *m, llmc_http_req_t *req, llmc__mock_kind_t kind)
{
    mreq_t *mr = calloc(1, sizeof(*mr));
    if (!mr) {
        llmc_http_respond_error(req, 500, NULL, "server_error", NULL, "mock: out of memory");
        return;
    }
    m->calls++;
    m->by_kind[kind]++;
    if (++m->in_flight > m->max_in_flight)
        m->max_in_flight = m->in_flight;
    mr->m = m;
    mr->req = req;
    mr->kind = kind;
    mr->ctl.latency_ms = m->latency_ms;
    /* What a real answer says about the account that made it (an echo has
       its own X-Request-Id): the gateway must not pass these on where the
       key is not the client's own. */
    const char *org = llmc_http_header(req, "openai-organization");
    char rid[48] = "";
    if (kind != LLMC_MOCK_ECHO)
        snprintf(rid, sizeof(rid), "X-Request-Id: req_mock_%llu\r\n", (unsigned long long)m->calls);
    snprintf(mr->call_hdr, sizeof(mr->call_hdr),
             "X-Mock-Call: %llu\r\n%sOpenAI-Organization: %.64s\r\n"
             "OpenAI-Processing-Ms: 1\r\nX-RateLimit-Remaining-Requests: 9999\r\n",
             (unsigned long long)m->calls, rid, org ? org : "org-mock");
    log_request(m, req);
    uv_timer_init(m->loop, &mr->timer);
    mr->timer.data = mr;
    req->data = mr;
    req->on_abort = on_abort;
    if (read_request(mr, req) != 0)
        return;
    if (mr->ctl.fault != F_STALL || mr->ctl.status >= 400)
        uv_timer_start(&mr->timer, on_delay, mr->ctl.latency_ms, 0);
}

static void on_request(llmc_http_req_t *req, void *ctx)
{
    llmc_mock_t *m = ctx;
    bool known;
    const struct route *r = find_route(req, &known);
    char msg[160];

    if (!r) {
        snprintf(msg, sizeof(msg), "Unknown request URL: %s %.100s", req->method_name, req->path);
        llmc_http_respond_error(req, known ? 405 : 404, NULL, "invalid_request_error",
                                known ? "method_not_allowed" : "unknown_url", msg);
        return;
    }
    if (r->kind == ROUTE_REQUESTS)
        requests_answer(m, req);
    else if (r->kind == ROUTE_STATS || r->kind == ROUTE_RESET)
        stats_answer(m, req, r->kind == ROUTE_RESET);
    else
        model_call(m, req, (llmc__mock_kind_t)r->kind);
}

/* ---- life cycle ---------------------------------------------------------------------- */

static int mock_open(llmc_mock_t *m, uv_loop_t *loop, const llmc_mock_config_t *cfg,
                     const char *host, int port, char *err, size_t errlen)
{
    /* Generous limits: the mock is driven by tests that send large bodies
       and keep thousands of requests waiting. */
    llmc_http_server_config_t sc = {
        .limits = {.max_header_bytes = 65536, .max_body_bytes = 256u << 20, .max_headers = 256,
                   .header_timeout_ms = 60000, .idle_timeout_ms = 120000, .max_conns = 100000},
        .handler = on_request,
        .ctx = m,
    };
    m->loop = loop;
    m->latency_ms = cfg ? cfg->latency_ms : 0;
    if (cfg && cfg->classes) {
        int crc = llmc__mock_classes_load(cfg->classes, &m->classes, err, errlen);
        if (crc < 0)
            return crc;
    }
    if (!(m->srv = llmc_http_server_new(loop, &sc))) {
        snprintf(err, errlen, "mock: out of memory");
        return LLMC_ENOMEM;
    }
    int rc = llmc_http_server_listen(m->srv, host, port, false, err, errlen);
    if (rc != 0) {
        llmc_http_server_close(m->srv, NULL, NULL);
        m->srv = NULL;
        return rc;
    }
    m->port = llmc_http_server_port(m->srv);
    return 0;
}

static void on_stop_closed(void *arg)
{
    llmc_mock_t *m = arg;
    uv_close((uv_handle_t *)&m->stop, NULL);
}

static void on_stop(uv_async_t *a)
{
    llmc_mock_t *m = a->data;
    if (m->stopping)
        return;
    m->stopping = true;
    llmc_http_server_close(m->srv, on_stop_closed, m);
}

static void thread_main(void *arg)
{
    llmc_mock_t *m = arg;
    uv_run(&m->own, UV_RUN_DEFAULT);
}

int llmc_mock_start(const llmc_mock_config_t *cfg, const char *host, int port, llmc_mock_t **out,
                    char *err, size_t errlen)
{
    llmc_mock_t *m = calloc(1, sizeof(*m));
    int rc;

    *out = NULL;
    if (!m) {
        snprintf(err, errlen, "mock: out of memory");
        return LLMC_ENOMEM;
    }
    if (uv_loop_init(&m->own) != 0) {
        snprintf(err, errlen, "mock: cannot create an event loop");
        free(m);
        return LLMC_EIO;
    }
    /* The loop is not running yet, so it is safe to set it up from here. */
    if ((rc = mock_open(m, &m->own, cfg, host, port, err, errlen)) != 0)
        goto fail;
    uv_async_init(&m->own, &m->stop, on_stop);
    m->stop.data = m;
    if (uv_thread_create(&m->thread, thread_main, m) != 0) {
        snprintf(err, errlen, "mock: cannot start a thread");
        on_stop(&m->stop);
        rc = LLMC_EIO;
        goto fail;
    }
    *out = m;
    return 0;
fail:
    uv_run(&m->own, UV_RUN_DEFAULT);   /* lets the closed handles finish */
    uv_loop_close(&m->own);
    json_decref(m->log);
    llmc__mock_classes_free(m->classes);
    free(m);
    return rc;
}

int llmc_mock_port(const llmc_mock_t *m)
{
    return m->port;
}

void llmc_mock_stop(llmc_mock_t *m)
{
    if (!m)
        return;
    uv_async_send(&m->stop);
    uv_thread_join(&m->thread);
    uv_loop_close(&m->own);
    json_decref(m->log);
    llmc__mock_classes_free(m->classes);
    free(m);
}

/* ---- `llmcached mock` ------------------------------------------------------------------- */

static void on_signals_closed(void *arg)
{
    llmc_mock_t *m = arg;
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    llmc_mock_t *m = s->data;
    if (m->stopping)
        return;
    m->stopping = true;
    llmc_http_server_close(m->srv, on_signals_closed, m);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: llmcached mock [--listen HOST:PORT] [--latency-ms N | --latency SECS]\n"
               "  --listen HOST:PORT  address to serve on (default 127.0.0.1:8081)\n"
               "  --latency-ms N      delay before each answer in milliseconds (default 2000)\n"
               "  --latency SECS      the same in seconds, may be fractional\n"
               "  --classes FILE      answer by meaning: QUESTION<TAB>ANSWER lines\n"
               "Serves an OpenAI-compatible fake model under /v1; see GET /mock/stats.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-')
        return LLMC_EINVAL;
    *out = v;
    return 0;
}

static int parse_secs(const char *s, uint64_t *out_ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > 86400)
        return LLMC_EINVAL;
    *out_ms = (uint64_t)(v * 1000 + 0.5);
    return 0;
}

/* HOST:PORT, [V6]:PORT. host gets the address without brackets. */
static int split_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    uint64_t p;
    if (!colon || colon == s || parse_u64(colon + 1, &p) || p > 65535)
        return LLMC_EINVAL;
    const char *h = s;
    size_t n = (size_t)(colon - s);
    if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n == 0 || n >= hostlen)
        return LLMC_EINVAL;
    memcpy(host, h, n);
    host[n] = '\0';
    *port = (int)p;
    return 0;
}

static int parse_args(int argc, char **argv, char *host, size_t hostlen, int *port,
                      uint64_t *latency_ms, const char **classes)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        int rc = LLMC_EINVAL;
        if (v && nlen == 8 && strncmp(a, "--listen", 8) == 0)
            rc = split_listen(v, host, hostlen, port);
        else if (v && nlen == 12 && strncmp(a, "--latency-ms", 12) == 0)
            rc = parse_u64(v, latency_ms);
        else if (v && nlen == 9 && strncmp(a, "--latency", 9) == 0)
            rc = parse_secs(v, latency_ms);
        else if (v && nlen == 9 && strncmp(a, "--classes", 9) == 0) {
            *classes = v;
            rc = 0;
        }
        if (rc != 0) {
            fprintf(stderr, "llmcached mock: bad or unknown option '%s'%s%s\n", a,
                    v ? " with value " : "", v ? v : "");
            usage(stderr);
            return LLMC_EINVAL;
        }
    }
    return 0;
}

int llmc_mock_main(int argc, char **argv)
{
    char host[256] = "127.0.0.1", err[256];
    int port = 8081;
    llmc_mock_config_t cfg = {.latency_ms = 2000};
    uv_loop_t loop;
    llmc_mock_t m = {0};

    int rc = parse_args(argc, argv, host, sizeof(host), &port, &cfg.latency_ms, &cfg.classes);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (uv_loop_init(&loop) != 0) {
        fprintf(stderr, "llmcached mock: cannot create an event loop\n");
        return 1;
    }
    if (mock_open(&m, &loop, &cfg, host, port, err, sizeof(err)) != 0) {
        fprintf(stderr, "llmcached mock: %s\n", err);
        llmc__mock_classes_free(m.classes);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return 1;
    }
    uv_signal_init(&loop, &m.sigint);
    uv_signal_init(&loop, &m.sigterm);
    m.sigint.data = m.sigterm.data = &m;
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
    fprintf(stderr, "mock model listening on http://%s%s%s:%d/v1\n", strchr(host, ':') ? "[" : "",
            host, strchr(host, ':') ? "]" : "", m.port);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    json_decref(m.log);
    llmc__mock_classes_free(m.classes);
    return 0;
}
