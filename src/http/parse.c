/*
 * http/parse.c: a request read out of its connection's buffer: the strict
 * checks of head_scan.c and chunk_scan.c, libhttp-parser and its callbacks,
 * the head and body copied into the connection's buffers, and the checks on
 * a complete head. No I/O: it answers need more / a request is complete / an
 * error with the status to refuse it with, and the connection acts on that.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Everything about a request's head (Host, Transfer-Encoding, Expect, the
 *   target's form, the version, a declared length over the limit) is decided
 *   in on_headers_complete, before a byte of the body is read. To make that
 *   hold, the parser gets the head alone first, then the body.
 * - Each byte goes through a strict checker before the parser sees it: the
 *   head through head_scan.c, a chunked body through chunk_scan.c. Each
 *   stops where its part ends, so a pipelined request after a chunked body
 *   is checked as a head, and the parser must agree on that end or the
 *   request is refused.
 * - The head is copied into one buffer (hbuf) as offsets while it grows;
 *   the pointers in the request are made only once it is complete and the
 *   buffer will not move again.
 * - When a request is complete the parser pauses: nothing after it is
 *   parsed until it has finished, so pipelined requests wait in rbuf.
 * - A client waiting for "100 Continue" is only marked (want_continue): the
 *   connection sends it, once the whole head has passed its checks.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/http_int.h"
#include "llmc/error.h"

enum { CB_NONE, CB_URL, CB_FIELD, CB_VALUE };

/* Records why the request is refused. Returns -1: a parser callback's
   error, and LLMC_PARSE_ERROR too. */
static int fail_with(llmc__http_conn_t *c, int status, const char *code, const char *msg)
{
    c->err_status = status;
    c->err_code = code;
    c->err_msg = msg;
    return -1;
}

/* Makes room for a body of need bytes (and its NUL): a refusal when out of
   memory or when the bodies held by every server sharing the bound would
   pass --max-body-memory (then the client may come back: 503, Retry-After). */
static int body_room(llmc__http_conn_t *c, size_t need, bool exact)
{
    int rc = llmc__http_body_grow(c, need, exact);

    if (rc == LLMC_EFULL) {
        LLMC__HTTP_INC(c->s, body_memory_refused);
        return fail_with(c, 503, "body_memory_full",
                         "the gateway holds as many request bodies as --max-body-memory allows; "
                         "try again shortly");
    }
    return rc ? fail_with(c, 500, "server_error", "out of memory") : 0;
}

static int head_append(llmc__http_conn_t *c, const char *at, size_t n, bool lower)
{
    size_t i;

    if (llmc__http_grow(&c->hbuf, &c->hcap, c->hlen + n + 1) != 0)
        return fail_with(c, 500, "server_error", "out of memory");
    if (lower) {
        for (i = 0; i < n; i++) {
            char ch = at[i];
            c->hbuf[c->hlen + i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
    } else {
        memcpy(c->hbuf + c->hlen, at, n);
    }
    c->hlen += n;
    return 0;
}

static int head_nul(llmc__http_conn_t *c)
{
    return head_append(c, "", 1, false);
}

static int name_end(llmc__http_conn_t *c)
{
    llmc__http_hoff_t *h = &c->hoff[c->nh - 1];

    h->name_len = (uint32_t)(c->hlen - h->name);
    if (head_nul(c) != 0)
        return -1;
    h->value = (uint32_t)c->hlen;
    return 0;
}

/* Ends a value: trailing whitespace trimmed (the parser skips the leading). */
static int value_end(llmc__http_conn_t *c)
{
    llmc__http_hoff_t *h = &c->hoff[c->nh - 1];
    size_t len = c->hlen - h->value;

    while (len && (c->hbuf[h->value + len - 1] == ' ' || c->hbuf[h->value + len - 1] == '\t'))
        len--;
    c->hlen = h->value + len;
    h->value_len = (uint32_t)len;
    return head_nul(c);
}

/* Ends the piece the data callbacks were building with its NUL. */
static int piece_end(llmc__http_conn_t *c)
{
    int rc = 0;

    if (c->last_cb == CB_URL) {
        rc = head_nul(c); /* the target starts hbuf */
    } else if (c->last_cb == CB_FIELD) {
        rc = name_end(c);
        if (rc == 0)
            rc = value_end(c);
    } else if (c->last_cb == CB_VALUE) {
        rc = value_end(c);
    }
    c->last_cb = CB_NONE;
    return rc;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    llmc__http_conn_t *c = p->data;

    c->last_cb = CB_URL;
    return head_append(c, at, n, false);
}

static int header_begin(llmc__http_conn_t *c)
{
    size_t max = c->s->cfg.limits.max_headers;
    size_t cap = c->nh_cap ? c->nh_cap * 2 : 16;
    llmc__http_hoff_t *nh;
    llmc_http_header_t *hd;

    if (piece_end(c) != 0)
        return -1;
    if (max && c->nh >= max)
        return fail_with(c, 431, "request_header_too_large", "too many request headers");
    if (c->nh == c->nh_cap) {
        /* Both arrays grow together so that head_finish needs no memory. */
        nh = realloc(c->hoff, cap * sizeof(*nh));
        if (nh)
            c->hoff = nh;
        hd = nh ? realloc(c->hdrs, cap * sizeof(*hd)) : NULL;
        if (!hd)
            return fail_with(c, 500, "server_error", "out of memory");
        c->hdrs = hd;
        c->nh_cap = cap;
    }
    c->hoff[c->nh++] = (llmc__http_hoff_t){.name = (uint32_t)c->hlen};
    c->last_cb = CB_FIELD;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    llmc__http_conn_t *c = p->data;

    if (c->head_done)
        return 0; /* a trailer after a chunked body: dropped */
    if (c->last_cb != CB_FIELD && header_begin(c) != 0)
        return -1;
    return head_append(c, at, n, true);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    llmc__http_conn_t *c = p->data;

    if (c->head_done)
        return 0;
    if (c->last_cb == CB_FIELD) {
        if (name_end(c) != 0)
            return -1;
        c->last_cb = CB_VALUE;
    }
    return head_append(c, at, n, false);
}

/* Offsets become pointers now that hbuf will not move any more. */
static int head_finish(llmc__http_conn_t *c)
{
    llmc_http_req_t *req = &c->req;
    size_t plen, path_off, i;

    if (!c->hbuf)
        return fail_with(c, 400, "bad_request", "no request target");
    plen = strcspn(c->hbuf, "?");
    if (llmc__http_grow(&c->hbuf, &c->hcap, c->hlen + plen + 1) != 0)
        return fail_with(c, 500, "server_error", "out of memory");
    path_off = c->hlen;
    memcpy(c->hbuf + path_off, c->hbuf, plen);
    c->hbuf[path_off + plen] = '\0';
    c->hlen += plen + 1;
    for (i = 0; i < c->nh; i++) {
        const llmc__http_hoff_t *o = &c->hoff[i];
        c->hdrs[i] = (llmc_http_header_t){c->hbuf + o->name, c->hbuf + o->value, o->name_len,
                                          o->value_len};
    }
    req->headers = c->hdrs;
    req->nheaders = c->nh;
    req->target = c->hbuf;
    req->path = c->hbuf + path_off;
    req->query = c->hbuf[plen] == '?' ? c->hbuf + plen + 1 : "";
    req->method = (int)c->parser.method;
    req->method_name = http_method_str((enum http_method)c->parser.method);
    req->http_major = c->parser.http_major;
    req->http_minor = c->parser.http_minor;
    return 0;
}

/* Headers whose presence or count the head checks need, found in one pass. */
enum { SH_HOST, SH_TE, SH_CL, SH_EXPECT, SH_N };
static const struct {
    const char *name;
    size_t len;
} special_headers[SH_N] = {
    [SH_HOST] = {"host", 4},
    [SH_TE] = {"transfer-encoding", 17},
    [SH_CL] = {"content-length", 14},
    [SH_EXPECT] = {"expect", 6},
};

static void find_special(const llmc_http_req_t *req, const char *first[SH_N], unsigned count[SH_N])
{
    size_t i;
    int k;

    for (i = 0; i < req->nheaders; i++) {
        const llmc_http_header_t *h = &req->headers[i];
        for (k = 0; k < SH_N; k++) {
            if (h->name_len == special_headers[k].len &&
                memcmp(h->name, special_headers[k].name, h->name_len) == 0) {
                if (count[k]++ == 0)
                    first[k] = h->value;
            }
        }
    }
}

static bool target_ok(const llmc__http_conn_t *c)
{
    const char *t = c->req.target;

    if (t[0] == '/')
        return strchr(t, '#') == NULL;
    return c->parser.method == HTTP_OPTIONS && strcmp(t, "*") == 0;
}

/* The framing and protocol checks on a complete head. */
static int head_check(llmc__http_conn_t *c)
{
    const llmc_http_req_t *req = &c->req;
    const char *first[SH_N] = {0};
    unsigned count[SH_N] = {0};
    size_t max_body = c->s->cfg.limits.max_body_bytes;
    uint64_t declared = (c->parser.flags & F_CONTENTLENGTH) ? c->parser.content_length : 0;
    bool v11 = req->http_minor >= 1;

    find_special(req, first, count);
    if (req->http_major != 1)
        return fail_with(c, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served");
    if (!target_ok(c))
        return fail_with(c, 400, "bad_request",
                         "the request target must be a path (absolute-form is refused: this is not a proxy)");
    /* RFC 9112 only requires Host of HTTP/1.1; issue 7 requires it of 1.0
       too, since every client in use sends it and a request without one is
       more likely a probe than a client. */
    if (count[SH_HOST] != 1)
        return fail_with(c, 400, "bad_request", "a request needs exactly one Host header");
    if (count[SH_TE] > 0 && (count[SH_CL] > 0 || count[SH_TE] > 1 || !v11 ||
                             strcasecmp(first[SH_TE], "chunked") != 0))
        return fail_with(c, 400, "bad_request",
                         "only Transfer-Encoding: chunked, once, without Content-Length, is accepted");
    if (count[SH_CL] > 1)
        return fail_with(c, 400, "bad_request", "more than one Content-Length header");
    if (max_body && declared > max_body)
        return fail_with(c, 413, "request_too_large", "the request body is larger than allowed");
    if (count[SH_EXPECT] > 0 && v11) {
        if (strcasecmp(first[SH_EXPECT], "100-continue") != 0)
            return fail_with(c, 417, "expectation_failed", "only Expect: 100-continue is supported");
        if (declared > 0 || count[SH_TE] > 0)
            c->want_continue = true; /* sent by the connection once the head passed */
    }
    if (declared && body_room(c, (size_t)declared + 1, true) != 0)
        return -1;
    if (count[SH_TE] > 0) {
        /* Extensions and trailers extend the head: the head's limit bounds them. */
        c->chunk_on = true;
        llmc__http_chunk_init(&c->chunk, c->s->cfg.limits.max_header_bytes);
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    llmc__http_conn_t *c = p->data;

    if (piece_end(c) != 0)
        return -1;
    c->head_done = true;
    if (head_finish(c) != 0 || head_check(c) != 0)
        return -1;
    /* The body is checked as chunked exactly when the parser decodes it so:
       otherwise the checked bytes and the parsed ones would differ. */
    if (c->chunk_on != ((p->flags & F_CHUNKED) != 0))
        return fail_with(c, 400, "bad_request", "ambiguous Transfer-Encoding");
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    llmc__http_conn_t *c = p->data;
    size_t max = c->s->cfg.limits.max_body_bytes;

    /* Only a chunked body can get here past the limit: a declared length
       over it was refused in head_check. */
    if (max && c->blen + n > max)
        return fail_with(c, 413, "request_too_large", "the request body is larger than allowed");
    if (body_room(c, c->blen + n + 1, false) != 0)
        return -1;
    memcpy(c->bbuf + c->blen, at, n);
    c->blen += n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    /* Nothing after this request is parsed until it has finished. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void llmc__http_parse_reset(llmc__http_conn_t *c)
{
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    llmc__http_scan_init(&c->scan, c->s->cfg.limits.max_header_bytes);
    c->scan_done = c->head_done = c->chunk_on = c->want_continue = false;
    c->last_cb = CB_NONE;
    c->hlen = c->nh = c->blen = 0;
    if (c->bcap > LLMC_HTTP_KEEP_BUF)
        llmc__http_body_free(c);
    c->err_status = 0;
}

/* Why the parser stopped, as a refusal: a callback's own reason when it
   gave one, else libhttp-parser's. */
static int parse_error(llmc__http_conn_t *c, enum http_errno e)
{
    if (e >= HPE_CB_message_begin && e <= HPE_CB_chunk_complete && c->err_status)
        return LLMC_PARSE_ERROR;
    if (e == HPE_HEADER_OVERFLOW)
        return fail_with(c, 431, "request_header_too_large", "the request head is too large");
    return fail_with(c, 400, "bad_request", http_errno_description(e));
}

/* The body and the client's keep-alive wish, once the message is complete. */
static void request_complete(llmc__http_conn_t *c)
{
    llmc_http_req_t *req = &c->req;

    if (c->bbuf) {
        c->bbuf[c->blen] = '\0';
        req->body = c->bbuf;
    }
    req->body_len = c->blen;
    /* An Upgrade or CONNECT leaves bytes of another protocol behind. */
    req->keep_alive = http_should_keep_alive(&c->parser) && !c->parser.upgrade;
}

int llmc__http_parse(llmc__http_conn_t *c)
{
    const char *p = c->rbuf + c->rpos;
    size_t n = c->rlen - c->rpos, used;
    bool body_end = false;
    enum http_errno e;
    int r;

    if (!c->scan_done) {
        r = llmc__http_scan(&c->scan, p, n, &used);
        if (r == LLMC_HS_BAD)
            return fail_with(c, 400, "bad_request", "malformed request head");
        if (r == LLMC_HS_TOO_BIG)
            return fail_with(c, 431, "request_header_too_large", "the request head is too large");
        if (r == LLMC_HS_LINE_TOO_BIG)
            return fail_with(c, 414, "uri_too_long", "the request line is too long");
        if (r == LLMC_HS_DONE) {
            /* The head alone: on_headers_complete decides whether a chunked
               body follows, and the chunk scan must start at its first byte. */
            c->scan_done = true;
            n = used;
        }
    } else if (c->chunk_on) {
        r = llmc__http_chunk_scan(&c->chunk, p, n, &used);
        if (r == LLMC_CS_BAD)
            return fail_with(c, 400, "bad_request", "malformed chunked request body");
        if (r == LLMC_CS_TOO_BIG)
            return fail_with(c, 431, "request_header_too_large",
                             "the chunk extensions and trailers are too large");
        if (r == LLMC_CS_DONE) {
            /* What follows is the next request: the parser stops here too. */
            c->chunk_on = false;
            body_end = true;
            n = used;
        }
    }
    used = http_parser_execute(&c->parser, &parser_settings, p, n);
    c->rpos += used;
    e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK && e != HPE_PAUSED)
        return parse_error(c, e);
    /* The scan accepts a subset of what the parser does, so both end a
       chunked body at the same byte; if they ever did not, the bytes after
       it would be read as a request that was never checked. */
    if ((c->chunk_on || body_end) && (e == HPE_PAUSED) != body_end)
        return fail_with(c, 400, "bad_request", "malformed chunked request body");
    if (e == HPE_PAUSED) {
        request_complete(c);
        return LLMC_PARSE_DONE;
    }
    if (used == 0)
        return parse_error(c, e);
    return LLMC_PARSE_MORE;
}

const char *llmc_http_header(const llmc_http_req_t *req, const char *name)
{
    size_t i, len = strlen(name);

    /* The length first: most names differ in it, and strcasecmp's cost
       (which, in glibc's vector version, even moves with where the literal
       lands in a page) is then paid only for a likely match. */
    for (i = 0; i < req->nheaders; i++)
        if (req->headers[i].name_len == len && strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}
