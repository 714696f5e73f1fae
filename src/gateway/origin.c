/*
 * gateway/origin.c: the Host, Origin and Sec-Fetch-Site checks and the
 * CORS answers (see origin.h for what each defends against).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A missing Host passes: HTTP/1.0 clients and tools may omit it, and a
 *   browser never does, so refusing it would stop programs, not pages.
 * - Ports are not compared for localhost and the loopback addresses: a page
 *   on another local port is stopped by the Origin check, not this one,
 *   and a proxy in front may well change the port.
 * - The gateway's own origin (scheme://Host) passes without CORS lines, so
 *   a page the gateway serves itself can call it.
 * - Each allowed origin's CORS lines are made once, at start-up: an answer
 *   points at them (llmc_http_req_t.extra_hdrs) and needs no copy.
 * - Allow-Credentials is never sent: the SDKs send the API key in
 *   Authorization, which needs only Allow-Headers; cookies are not ours.
 */
#include "gateway/origin.h"

#include <ctype.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "llmc/error.h"

/* The answer headers a page may read (X-Cache and its family). */
#define EXPOSE "X-Cache, X-Cache-Key, X-Cache-Tokens-Saved, X-Cache-Similarity, " \
               "X-Cache-Matched-Key, Cache-Status, Age, ETag, Retry-After, X-Request-Id"
/* How long a browser may keep a preflight's answer (seconds). */
#define PREFLIGHT_MAX_AGE "600"
/* Request headers a preflight is told it may send when it names none
   (or names them in a form this file does not echo). */
#define ALLOW_HEADERS "Authorization, Content-Type, Cache-Control, Pragma, X-Cache-Namespace, " \
                      "X-Cache-TTL, X-Cache-Tags, X-Cache-Semantic, OpenAI-Organization, "   \
                      "OpenAI-Project, OpenAI-Beta"
#define ALLOW_METHODS "GET, HEAD, POST, DELETE"

/* ---- parsing the options -------------------------------------------------------- */

static char *lower_dup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++)
        d[i] = (char)tolower((unsigned char)s[i]);
    d[n] = '\0';
    return d;
}

/* Splits a host[:port] (host a name, an IPv4 address or [IPv6]) into the
   host without brackets (*h, *hlen) and the port text (*p, "" when none).
   false when it is not one. */
static bool split_host(const char *s, size_t n, const char **h, size_t *hlen, const char **p,
                       size_t *plen)
{
    const char *end = s + n, *colon;
    if (n == 0)
        return false;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close || close == s + 1)
            return false;
        for (const char *c = s + 1; c < close; c++)
            if (!isxdigit((unsigned char)*c) && *c != ':' && *c != '.')
                return false;
        *h = s + 1;
        *hlen = (size_t)(close - s - 1);
        colon = close + 1 < end ? close + 1 : NULL;
        if (colon && *colon != ':')
            return false;
    } else {
        colon = memchr(s, ':', n);
        *h = s;
        *hlen = colon ? (size_t)(colon - s) : n;
        if (*hlen == 0)
            return false;
        for (size_t i = 0; i < *hlen; i++)
            if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.' && s[i] != '_')
                return false;
    }
    *p = colon ? colon + 1 : end;
    *plen = (size_t)(end - *p);
    if (colon && (*plen == 0 || *plen > 5))
        return false;
    for (size_t i = 0; i < *plen; i++)
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
    /* A trailing dot names the same host (the root of DNS). */
    if (*hlen > 1 && (*h)[*hlen - 1] == '.')
        (*hlen)--;
    return true;
}

static int add_host(llmc_origin_t *o, const char *s, size_t n, char *err, size_t errlen)
{
    const char *h, *p;
    size_t hl, pl;
    if (!split_host(s, n, &h, &hl, &p, &pl)) {
        snprintf(err, errlen, "--allowed-host: '%.*s' is not a host name (NAME or NAME:PORT)",
                 (int)(n > 200 ? 200 : n), s);
        return LLMC_EINVAL;
    }
    if (o->nhosts == LLMC_ORIGIN_MAX) {
        snprintf(err, errlen, "--allowed-host: at most %d names", LLMC_ORIGIN_MAX);
        return LLMC_EINVAL;
    }
    if (!(o->hosts[o->nhosts].text = lower_dup(h, hl)))
        return LLMC_ENOMEM;
    memcpy(o->hosts[o->nhosts].port, p, pl);
    o->hosts[o->nhosts].port[pl] = '\0';
    o->nhosts++;
    return 0;
}

/* The CORS lines of an answer to origin ("*" or an origin echoed). */
static char *cors_lines(const char *origin)
{
    char *s = NULL;
    bool any = strcmp(origin, "*") == 0;
    if (asprintf(&s, "Access-Control-Allow-Origin: %s\r\n%sAccess-Control-Expose-Headers: "
                 EXPOSE "\r\n", origin, any ? "" : "Vary: Origin\r\n") < 0)
        return NULL;
    return s;
}

static int add_origin(llmc_origin_t *o, const char *s, size_t n, char *err, size_t errlen)
{
    char *text = lower_dup(s, n);
    if (!text)
        return LLMC_ENOMEM;
    if (strcmp(text, "*") == 0) {
        free(text);
        if (!o->any_cors && !(o->any_cors = cors_lines("*")))
            return LLMC_ENOMEM;
        return 0;
    }
    size_t skip = strncmp(text, "http://", 7) == 0 ? 7 : strncmp(text, "https://", 8) == 0 ? 8 : 0;
    const char *h, *p;
    size_t hl, pl;
    if (strcmp(text, "null") != 0 && !(skip && split_host(text + skip, n - skip, &h, &hl, &p, &pl))) {
        snprintf(err, errlen, "--cors-origin: '%.200s' is not an origin (http(s)://HOST[:PORT], "
                 "null or *)", text);
        free(text);
        return LLMC_EINVAL;
    }
    if (o->norigins == LLMC_ORIGIN_MAX) {
        snprintf(err, errlen, "--cors-origin: at most %d origins", LLMC_ORIGIN_MAX);
        free(text);
        return LLMC_EINVAL;
    }
    o->origins[o->norigins].text = text;
    if (!(o->origins[o->norigins].cors = cors_lines(text))) {
        o->norigins++;   /* freed with the rest */
        return LLMC_ENOMEM;
    }
    o->norigins++;
    return 0;
}

/* Calls add(o, item, len) for each comma-separated item of list. */
static int each_item(llmc_origin_t *o, const char *list,
                     int (*add)(llmc_origin_t *, const char *, size_t, char *, size_t), char *err,
                     size_t errlen)
{
    int rc;
    const char *item;
    size_t n;
    for (const char *p = list; llmc_config_list_next(&p, &item, &n);)
        if ((rc = add(o, item, n, err, errlen)) < 0)
            return rc;
    return 0;
}

static bool is_loopback(const char *host)
{
    return strcasecmp(host, "localhost") == 0 || strcmp(host, "::1") == 0 ||
           strncmp(host, "127.", 4) == 0;
}

static void set_listener(llmc_origin_t *o, int i, const char *host)
{
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        host++;
        n -= 2;
    }
    if (n >= sizeof(o->listen_host[i]))
        n = sizeof(o->listen_host[i]) - 1;
    for (size_t k = 0; k < n; k++)
        o->listen_host[i][k] = (char)tolower((unsigned char)host[k]);
    o->listen_host[i][n] = '\0';
    o->loopback[i] = is_loopback(o->listen_host[i]);
}

int llmc_origin_init(llmc_origin_t *o, const char *listen_host, const char *admin_host,
                     const char *hosts, const char *origins, char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    set_listener(o, 0, listen_host);
    set_listener(o, 1, admin_host ? admin_host : listen_host);
    int rc = each_item(o, hosts, add_host, err, errlen);
    return rc < 0 ? rc : each_item(o, origins, add_origin, err, errlen);
}

void llmc_origin_free(llmc_origin_t *o)
{
    for (unsigned i = 0; i < o->nhosts; i++)
        free(o->hosts[i].text);
    for (unsigned i = 0; i < LLMC_ORIGIN_MAX; i++) {
        free(o->origins[i].text);
        free(o->origins[i].cors);
    }
    free(o->any_cors);
    memset(o, 0, sizeof(*o));
}

/* ---- the checks ----------------------------------------------------------------- */

static bool eq_n(const char *a, size_t an, const char *b)
{
    return strlen(b) == an && strncasecmp(a, b, an) == 0;
}

/* Whether the Host value may be used on this listener. */
static bool host_allowed(const llmc_origin_t *o, bool admin, const char *host)
{
    const char *h, *p;
    size_t hl, pl;
    if (!host)
        return true;
    if (!split_host(host, strlen(host), &h, &hl, &p, &pl))
        return false;
    for (unsigned i = 0; i < o->nhosts; i++) {
        const llmc_origin_item_t *t = &o->hosts[i];
        if (eq_n(h, hl, t->text) && (!t->port[0] || (strlen(t->port) == pl &&
                                                     strncmp(t->port, p, pl) == 0)))
            return true;
    }
    if (!o->loopback[admin])
        return o->nhosts == 0;
    return eq_n(h, hl, "localhost") || eq_n(h, hl, "127.0.0.1") || eq_n(h, hl, "::1") ||
           eq_n(h, hl, o->listen_host[admin]);
}

/* The gateway's own origin: http(s):// and the Host the request named. */
static bool same_origin(const char *origin, const char *host)
{
    size_t skip = strncasecmp(origin, "http://", 7) == 0    ? 7
                  : strncasecmp(origin, "https://", 8) == 0 ? 8
                                                            : 0;
    return host && skip && strcasecmp(origin + skip, host) == 0;
}

/* The CORS lines for an allowed cross-origin Origin, or NULL. */
static const char *allowed_cors(const llmc_origin_t *o, const char *origin)
{
    for (unsigned i = 0; i < o->norigins; i++)
        if (strcasecmp(o->origins[i].text, origin) == 0)
            return o->origins[i].cors;
    return o->any_cors;
}

llmc_origin_verdict_t llmc_origin_check(const llmc_origin_t *o, bool admin, int method,
                                        const char *host, const char *origin,
                                        const char *fetch_site, const char *preflight_method,
                                        const char **cors)
{
    *cors = NULL;
    if (!host_allowed(o, admin, host))
        return LLMC_ORIGIN_BAD_HOST;
    if (origin && !same_origin(origin, host)) {
        if (!(*cors = allowed_cors(o, origin)))
            return LLMC_ORIGIN_BAD_ORIGIN;
        return method == HTTP_OPTIONS && preflight_method ? LLMC_ORIGIN_PREFLIGHT
                                                          : LLMC_ORIGIN_PASS;
    }
    /* No Origin (or our own): a page's request without scripts says where
       it came from only here. */
    if (!origin && fetch_site && !o->any_cors &&
        (strcasecmp(fetch_site, "cross-site") == 0 || strcasecmp(fetch_site, "same-site") == 0))
        return LLMC_ORIGIN_CROSS_SITE;
    return LLMC_ORIGIN_PASS;
}

/* ---- answering -------------------------------------------------------------------- */

/* Whether a preflight's Access-Control-Request-Headers is a plain list of
   header names that can be echoed back as they are. */
static bool token_list(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 1024)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-_ ,.", *s))
            return false;
    return true;
}

static void preflight(llmc_http_req_t *req, const char *cors)
{
    const char *want = llmc_http_header(req, "access-control-request-headers");
    char h[2048];
    int n = snprintf(h, sizeof(h),
                     "%sAccess-Control-Allow-Methods: " ALLOW_METHODS "\r\n"
                     "Access-Control-Allow-Headers: %s\r\n"
                     "Access-Control-Max-Age: " PREFLIGHT_MAX_AGE "\r\n"
                     "Cache-Control: no-store\r\n",
                     cors, want && token_list(want) ? want : ALLOW_HEADERS);
    if (n < 0 || (size_t)n >= sizeof(h))
        n = snprintf(h, sizeof(h), "%s", cors);
    llmc_http_respond_copy(req, 204, h, (size_t)n, NULL, 0);
}

bool llmc_origin_admit(const llmc_origin_t *o, llmc_http_req_t *req, bool admin)
{
    const char *cors = NULL;
    const char *host = llmc_http_header(req, "host");
    const char *origin = llmc_http_header(req, "origin");
    switch (llmc_origin_check(o, admin, req->method, host, origin,
                              llmc_http_header(req, "sec-fetch-site"),
                              llmc_http_header(req, "access-control-request-method"), &cors)) {
    case LLMC_ORIGIN_PASS:
        req->extra_hdrs = cors;
        req->extra_hdrs_len = cors ? strlen(cors) : 0;
        return true;
    case LLMC_ORIGIN_PREFLIGHT:
        preflight(req, cors);
        return false;
    case LLMC_ORIGIN_BAD_HOST:
        llmc_http_respond_error(req, 421, NULL, "invalid_request_error", "host_not_allowed",
                                "this gateway does not answer for that Host: add it with "
                                "--allowed-host");
        return false;
    case LLMC_ORIGIN_BAD_ORIGIN:
        llmc_http_respond_error(req, 403, NULL, "invalid_request_error", "origin_not_allowed",
                                "requests from this Origin are not allowed: add it with "
                                "--cors-origin");
        return false;
    case LLMC_ORIGIN_CROSS_SITE:
        llmc_http_respond_error(req, 403, NULL, "invalid_request_error", "cross_site_request",
                                "a cross-site request without an allowed Origin is refused "
                                "(it could make a paid call for any page)");
        return false;
    }
    return false;
}
