/*
 * gateway/relay.c: the routes passed through. Any method and path under
 * /v1/ that the gateway does not cache (GET /v1/models, /v1/models/{id},
 * files, audio, moderations, batches, ...) goes upstream as it came, on a
 * call of its own, and its answer comes back as it arrives: never stored,
 * never shared, counted as "forwarded".
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The answer is relayed, not collected: the head goes out when the
 *   upstream's head comes, each piece of the body as it comes (chunked to
 *   the client). Only what the client has not taken yet is held, and when
 *   that passes RELAY_HIGH_WATER the call stops reading the upstream until
 *   the client has taken it all (the server's on_drain): a file download to
 *   a slow client costs a bounded buffer, not the file.
 * - What goes upstream is the client's request: its method, its path and
 *   query (below the upstream base, "/v1" swapped for it), its body bytes
 *   (held whole by the server, within --max-body-bytes) and its own
 *   Content-Type (multipart uploads keep their boundary). The headers are
 *   those any upstream call carries (fetch.c's table, the credential), the
 *   answer's those the upstream client passes on (upstream.c's table).
 * - A path with a "." or ".." segment, in any spelling, is refused: libcurl
 *   would resolve it, so "/v1/../admin" would reach the upstream's /admin
 *   with the gateway's own key.
 * - Nothing is retried here: the request may not be idempotent, and a
 *   failure before the head is a 502/504 that clients retry themselves.
 * - The call holds a reference to the request context until it ends; a
 *   client that leaves cancels the call at once (gr->on_leave). A leave can
 *   happen inside our own write to the client, so the struct is freed only
 *   once no callback of ours is on the stack (busy).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/dialect.h"
#include "gateway/gw_int.h"
#include "llmc/error.h"

/* Client bytes queued beyond which the upstream is not read any more. */
#define RELAY_HIGH_WATER (256u << 10)

/* Request header lines: Content-Type, credential, fetch.c's four. */
#define RELAY_MAX_HDRS (LLMC_FWD_MAX + 2) /* Content-Type, credential, forwarded */

typedef struct relay {
    gw_req_t *gr;                 /* a reference, until the relay is freed */
    llmc_upstream_call_t *call;   /* NULL once it ended or was canceled */
    char *hdrs[RELAY_MAX_HDRS];
    size_t nhdrs;
    bool started;                 /* the head went to the client */
    bool paused;                  /* the call does not read: the client is behind */
    bool busy;                    /* one of our callbacks is running */
    bool dead;                    /* freed when the callback returns */
} relay_t;

static void relay_free(relay_t *r)
{
    gw_req_t *gr = r->gr;
    gr->relay = NULL;
    gr->on_leave = NULL;
    if (gr->req)
        gr->req->on_drain = NULL;
    for (size_t i = 0; i < r->nhdrs; i++)
        free(r->hdrs[i]);
    free(r);
    llmc__gr_unref(gr);
}

/* The end of one of our callbacks: the relay goes if it ended meanwhile. */
static void unbusy(relay_t *r)
{
    r->busy = false;
    if (r->dead)
        relay_free(r);
}

/* The client left (req.c's abort): no more bytes are wanted. */
static void on_leave(gw_req_t *gr)
{
    relay_t *r = gr->relay;
    if (r->call) {
        llmc_upstream_cancel(r->call);
        r->call = NULL;
    }
    if (r->busy)
        r->dead = true;
    else
        relay_free(r);
}

/* The client took everything queued: read the upstream again. */
static void on_drain(llmc_http_req_t *req)
{
    gw_req_t *gr = req->data;
    relay_t *r = gr->relay;
    if (!r || !r->paused || !r->call)
        return;
    r->paused = false;
    r->busy = true;
    llmc_upstream_pause(r->call, false); /* may deliver held bytes here */
    unbusy(r);
}


static void on_head(void *arg, int status, const char *ctype, const char *pass, size_t pass_len)
{
    relay_t *r = arg;
    gw_req_t *gr = r->gr;
    char h[2048 + 512];
    size_t n = 0;
    if (!gr->req)
        return;
    if (ctype[0] && strlen(ctype) < 400 && !strpbrk(ctype, "\r\n"))
        n = (size_t)snprintf(h, sizeof(h), "Content-Type: %s\r\n", ctype);
    /* A request of a cached route that is not cached says which field
       made it so. */
    n += (size_t)snprintf(h + n, sizeof(h) - n,
                          "X-Cache: BYPASS\r\nCache-Status: llmcached; fwd=bypass%s%s\r\n"
                          "Cache-Control: no-store\r\n",
                          gr->pass_why ? "; detail=" : "", gr->pass_why ? gr->pass_why : "");
    if (pass_len && n + pass_len < sizeof(h)) {
        memcpy(h + n, pass, pass_len);
        n += pass_len;
    }
    if (status / 100 != 2)
        LLMC_COUNT(&gr->w->ctr, upstream_err_status);
    r->busy = true;
    /* An event stream is compressed when the client asks (respond.c's
       stream writer, flushed per piece); anything else goes as it came. */
    if (strncasecmp(ctype, "text/event-stream", 17) == 0)
        r->started = llmc__gw_stream_begin(gr, status, h, n, sizeof(h)) == 0;
    else
        r->started = llmc_http_stream_begin(gr->req, status, h, n) == 0;
    unbusy(r);
}

static void on_data(void *arg, const char *buf, size_t len)
{
    relay_t *r = arg;
    gw_req_t *gr = r->gr;
    if (!gr->req || !r->started)
        return;
    r->busy = true;
    llmc__gw_stream_write(gr, buf, len);
    if (gr->req && r->call && !r->paused && llmc_http_pending_bytes(gr->req) > RELAY_HIGH_WATER) {
        r->paused = true;
        LLMC_COUNT(&gr->w->ctr, forward_pauses);
        llmc_upstream_pause(r->call, true);
    }
    unbusy(r);
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

static void on_done(void *arg, int err, const char *detail)
{
    relay_t *r = arg;
    gw_req_t *gr = r->gr;
    llmc_http_req_t *req = gr->req;
    r->call = NULL; /* freed by the upstream client when this returns */
    if (err)
        count_error(&gr->w->ctr, err);
    r->busy = true;
    if (!req) {
        /* the client left; on_leave found no call to cancel */
    } else if (r->started && err) {
        llmc_http_abort(req); /* cut off upstream: the client sees it cut off too */
    } else if (r->started) {
        llmc__gw_stream_finish(gr, req);
    } else {
        char msg[400];
        snprintf(msg, sizeof(msg), "%s: %s", llmc_strerror(err ? err : LLMC_EUPSTREAM),
                 detail ? detail : "");
        llmc__gw_error(gr, err == LLMC_ETIMEDOUT ? 504 : 502, "upstream_error",
                       err == LLMC_ETIMEDOUT ? "upstream_timeout" : "upstream_unavailable", msg);
    }
    r->dead = true;
    unbusy(r);
}

static const llmc_upstream_handler_t handler = {on_head, on_data, on_done};

/* True when a segment of path is "." or "..", also percent-encoded. */
static bool has_dot_segment(const char *path)
{
    for (const char *seg = path; seg; seg = strchr(seg, '/')) {
        seg++; /* past the '/' */
        size_t len = strcspn(seg, "/");
        size_t dots = 0, i = 0;
        while (i < len) {
            if (seg[i] == '.') {
                i++;
            } else if (len - i >= 3 && seg[i] == '%' && seg[i + 1] == '2' &&
                       (seg[i + 2] == 'e' || seg[i + 2] == 'E')) {
                i += 3;
            } else {
                break;
            }
            dots++;
        }
        if (i == len && (dots == 1 || dots == 2))
            return true;
    }
    return false;
}

/* Methods whose request has a body even when it is empty (sent with
   Content-Length: 0); others send one only when the client did. */
static bool body_method(const char *m)
{
    return !strcmp(m, "POST") || !strcmp(m, "PUT") || !strcmp(m, "PATCH");
}

static void refuse(gw_req_t *gr, int status, const char *type, const char *code, const char *msg)
{
    llmc__gr_enter(gr, GR_RESPOND);
    llmc__gw_error(gr, status, type, code, msg);
}

void llmc__gw_relay(gw_req_t *gr)
{
    llmc_http_req_t *req = gr->req;
    llmc_gw_t *gw = gr->w->gw;
    char url[4096];

    gr->xcache = "BYPASS";
    if (has_dot_segment(req->path)) {
        refuse(gr, 400, "invalid_request_error", "invalid_path",
               "a path with a '.' or '..' segment is not passed upstream");
        return;
    }
    int n = snprintf(url, sizeof(url), "%s%s%s%s", llmc_dialect_base(gw, gr->dialect),
                     req->path + 3 /* "/v1" */,
                     req->query[0] ? "?" : "", req->query);
    if (n < 0 || (size_t)n >= sizeof(url)) {
        refuse(gr, 414, "invalid_request_error", "uri_too_long",
               "the request target is too long to pass upstream");
        return;
    }
    relay_t *r = calloc(1, sizeof(*r));
    if (!r) {
        refuse(gr, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    const char *ctype = llmc_http_header(req, "content-type");
    bool body = req->body_len > 0 || body_method(req->method_name);
    if (llmc__gw_upstream_hdrs(gr, ctype && strlen(ctype) < 400 ? ctype : NULL, r->hdrs,
                               RELAY_MAX_HDRS, &r->nhdrs) < 0) {
        for (size_t i = 0; i < r->nhdrs; i++)
            free(r->hdrs[i]);
        free(r);
        refuse(gr, 503, "server_error", "out_of_memory", "out of memory");
        return;
    }
    llmc_upstream_request_t ur = {
        .method = req->method_name, .url = url,
        .body = body ? req->body : NULL, .body_len = body ? req->body_len : 0,
        .headers = (const char *const *)r->hdrs, .nheaders = r->nhdrs,
        .allow_resend = gw->cfg->retry_unsafe,
        /* as fetch.c's */
        .drop_account_hdrs = llmc_dialect_shared(gw, gr->dialect) ||
                             llmc_dialect_auth(gw, gr->dialect) || gw->client_keys,
    };
    r->gr = gr;
    llmc__gr_ref(gr); /* the relay's */
    gr->relay = r;
    LLMC_COUNT(&gr->w->ctr, upstream_calls);
    int rc = llmc_upstream_start(gr->w->upstream, &ur, &handler, r, &r->call);
    if (rc < 0) {
        relay_free(r);
        refuse(gr, rc == LLMC_ENOMEM ? 503 : 502, "upstream_error", "upstream_unavailable",
               "could not start the upstream call");
        return;
    }
    LLMC_COUNT(&gr->w->ctr, forwarded);
    gr->on_leave = on_leave;
    req->on_drain = on_drain;
    llmc__gr_enter(gr, GR_RELAY);
}
