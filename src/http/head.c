/*
 * http/head.c: what goes before a response's body, built into the
 * connection's out buffer without any I/O: the status line and its reason
 * phrase, Date, Content-Length, Connection and the caller's header lines;
 * and the OpenAI-shaped JSON body of an error. Both the connection (for the
 * requests it refuses itself) and the handlers' responses build here, so
 * this file calls none of the others.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Date is formatted at most once a second per server, into the server
 *   struct: a server belongs to one loop thread, so the cache needs no lock.
 *   Day and month names come from our own tables: strftime's follow the
 *   locale.
 * - Numbers are written by hand: snprintf's format parsing was a visible
 *   share of a cache hit's user time.
 * - HEAD, 1xx, 204 and 304 responses carry no body; for HEAD the
 *   Content-Length still says what GET would have sent.
 * - An error message may quote bytes a client sent, and jansson refuses a
 *   string that is not UTF-8: such a message is sent with those bytes as
 *   '?', never as an empty body.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "http/http_int.h"
#include "llmc/error.h"

const char *llmc_http_reason(int status)
{
    const char *r = http_status_str((enum http_status)status);

    return strcmp(r, "<unknown>") == 0 ? "Unknown" : r;
}

/* The Date header's value for now, formatted at most once a second per
   server (each server is one loop thread's, so the cache needs no lock). */
static const char *date_now(llmc_http_server_t *s, size_t *len)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    struct tm tm;

    if (now != s->date_sec) {
        /* Names from our own tables: strftime's %a and %b follow the locale. */
        gmtime_r(&now, &tm);
        s->date_len = (size_t)snprintf(s->date, sizeof(s->date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                                       days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
                                       tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        s->date_sec = now;
    }
    *len = s->date_len;
    return s->date;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* Writes v in decimal at p; returns the end. snprintf's format parsing was
   a visible share of a cache hit's user time. */
static char *put_uint(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;

    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n)
        *p++ = tmp[--n];
    return p;
}

int llmc__http_head(llmc__http_conn_t *c, int status, bool has_length, size_t length, const char *h1,
                    size_t l1, const char *h2, size_t l2, size_t extra)
{
    static const char http10[] = "HTTP/1.0 ", http11[] = "HTTP/1.1 ", date_h[] = "\r\nDate: ",
                      cl_h[] = "Content-Length: ", ka[] = "Connection: keep-alive\r\n",
                      cl[] = "Connection: close\r\n";
    const llmc_http_req_t *req = &c->req;
    const char *reason = llmc_http_reason(status);
    size_t rlen = strlen(reason), dlen, need;
    const char *date = date_now(c->s, &dlen);

    need = 128 + rlen + dlen + l1 + l2 + req->extra_hdrs_len + extra;
    if (llmc__http_grow(&c->obuf, &c->ocap, need) != 0)
        return LLMC_ENOMEM;
    char *p = c->obuf;
    p = put(p, (req->http_major == 1 && req->http_minor == 0) ? http10 : http11, sizeof(http11) - 1);
    p = put_uint(p, (unsigned)status % 1000);
    *p++ = ' ';
    p = put(p, reason, rlen);
    p = put(p, date_h, sizeof(date_h) - 1);
    p = put(p, date, dlen);
    p = put(p, "\r\n", 2);
    if (has_length) {
        p = put(p, cl_h, sizeof(cl_h) - 1);
        p = put_uint(p, length);
        p = put(p, "\r\n", 2);
    }
    p = req->keep_alive ? put(p, ka, sizeof(ka) - 1) : put(p, cl, sizeof(cl) - 1);
    p = put(p, h1, l1);
    p = put(p, h2, l2);
    if (req->extra_hdrs_len)
        p = put(p, req->extra_hdrs, req->extra_hdrs_len);
    p = put(p, "\r\n", 2);
    c->olen = (size_t)(p - c->obuf);
    c->status = status;
    return 0;
}

bool llmc__http_status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

/* Client errors that the same request would meet again: sending it once
   more cannot help, so the answer says so (X-Should-Retry: false, which
   the official OpenAI SDKs obey instead of their retry-on-status rules). */
static const int final_statuses[] = {400, 404, 405, 413, 414, 417, 431, 505};

bool llmc__http_status_final(int status)
{
    for (size_t i = 0; i < sizeof(final_statuses) / sizeof(final_statuses[0]); i++)
        if (final_statuses[i] == status)
            return true;
    return false;
}

int llmc__http_head_full(llmc__http_conn_t *c, int status, const char *h1, size_t l1, const char *h2,
                         size_t l2, size_t body_len, size_t extra)
{
    bool has_body = llmc__http_status_has_body(status);

    c->no_body = c->req.method == HTTP_HEAD || !has_body;
    return llmc__http_head(c, status, has_body, body_len, h1, l1, h2, l2, c->no_body ? 0 : extra);
}

/* The error object for message; NULL when out of memory. Messages quote
   what clients sent (a header value may hold any byte from 0x80 up), and
   jansson refuses a string that is not UTF-8, which would leave the client
   an empty body. Such a message is sent with every byte from 0x80 up as
   '?': jansson still decides what is valid, and the message keeps its
   ASCII, which is all our own wording uses. */
static json_t *error_json(const char *type, const char *code, const char *message)
{
    const char *fmt = "{s:{s:s, s:s, s:s?}}";
    json_t *j;
    char *ascii;

    if (!type)
        type = "invalid_request_error";
    j = json_pack(fmt, "error", "message", message, "type", type, "code", code);
    if (j || !(ascii = strdup(message)))
        return j;
    for (char *p = ascii; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_pack(fmt, "error", "message", ascii, "type", type, "code", code);
    free(ascii);
    return j;
}

char *llmc__http_error_body(const char *type, const char *code, const char *message)
{
    json_t *j = error_json(type, code, message ? message : "");
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    return body;
}
