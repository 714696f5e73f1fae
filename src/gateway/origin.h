/*
 * gateway/origin.h: who may reach the gateway from a browser: the Host a
 * request names, its Origin, and the CORS answers for the origins allowed.
 *
 * A model call costs money, and a web page can make a visitor's browser
 * send requests to a gateway on localhost or on the visitor's network.
 * Three ways in, three checks, all before a route is looked up:
 * - DNS rebinding: a page's own name resolves to 127.0.0.1, and its
 *   scripts then read the gateway's answers as same-origin. Such requests
 *   name the page's host in Host. On a loopback listener Host must be
 *   localhost, 127.0.0.1, [::1], the listen address (any port) or an
 *   --allowed-host name; elsewhere only --allowed-host restricts it, when
 *   given (a deployment behind a load balancer keeps working as it is).
 *   Refused: 421.
 * - Cross-site requests from scripts carry Origin. One that is neither the
 *   gateway's own (scheme://Host) nor a --cors-origin ('*' allows all) is
 *   refused: 403. An allowed one gets Access-Control-Allow-Origin (echoed,
 *   with Vary: Origin), the X-Cache headers exposed, and its preflight
 *   (OPTIONS with Access-Control-Request-Method) answered here: 204.
 * - Requests a page makes without scripts (<img src>, a form to GET /ask)
 *   carry no Origin; browsers mark them Sec-Fetch-Site: cross-site or
 *   same-site. Those are refused (403) unless '*' is configured: GET /ask
 *   would otherwise make a paid call for any page the visitor opens.
 *   Sec-Fetch-Site: none (typed into the address bar) is the user's own.
 * Requests from programs (SDKs, curl) send no Origin, no Sec-Fetch-Site and
 * the Host they connected to, so none of this touches them.
 */
#ifndef LLMC_GW_ORIGIN_H
#define LLMC_GW_ORIGIN_H

#include <stdbool.h>
#include <stddef.h>

#include "http/http.h"

/* Most --allowed-host and --cors-origin items each. */
#define LLMC_ORIGIN_MAX 32

typedef struct llmc_origin_item {
    char *text;      /* lower case: a host (no brackets), or "scheme://host[:port]" */
    char *cors;      /* a --cors-origin's CORS lines for its answers; NULL for a host */
    char port[6];    /* a host's port, "" for any */
} llmc_origin_item_t;

typedef struct llmc_origin {
    bool loopback[2];                 /* [admin]: the listener is on a loopback address */
    char listen_host[2][256];         /* [admin]: its host, lower case, no brackets */
    unsigned nhosts, norigins;
    llmc_origin_item_t hosts[LLMC_ORIGIN_MAX];
    llmc_origin_item_t origins[LLMC_ORIGIN_MAX];
    char *any_cors;                   /* the CORS lines when '*' is allowed, else NULL */
} llmc_origin_t;

/* The verdict on one request. */
typedef enum llmc_origin_verdict {
    LLMC_ORIGIN_PASS,          /* go on; *cors may hold lines to add to the answer */
    LLMC_ORIGIN_BAD_HOST,      /* 421 */
    LLMC_ORIGIN_BAD_ORIGIN,    /* 403: an Origin not allowed */
    LLMC_ORIGIN_CROSS_SITE,    /* 403: a cross-site request without an allowed Origin */
    LLMC_ORIGIN_PREFLIGHT,     /* an allowed preflight: answer 204 with *cors */
} llmc_origin_verdict_t;

/* Fills o from the listen hosts (public, and admin or NULL), --allowed-host
   and --cors-origin (comma-separated lists, "" for none). 0, LLMC_ENOMEM,
   or LLMC_EINVAL with a message in err for an item that is not a host
   (name, IPv4, [IPv6], optional :port) or an origin (http(s)://host
   [:port], 'null' or '*'). Free with llmc_origin_free even on failure. */
int llmc_origin_init(llmc_origin_t *o, const char *listen_host, const char *admin_host,
                     const char *hosts, const char *origins, char *err, size_t errlen);
void llmc_origin_free(llmc_origin_t *o);

/* The verdict on a request to the public (admin false) or admin listener,
   from its method (an enum http_method) and headers (NULL when absent).
   *cors: the CORS lines its answer carries (o's, live as long as o), or
   NULL. Pure: any thread. */
llmc_origin_verdict_t llmc_origin_check(const llmc_origin_t *o, bool admin, int method,
                                        const char *host, const char *origin,
                                        const char *fetch_site, const char *preflight_method,
                                        const char **cors);

/* Runs llmc_origin_check on req and answers it when it may not go on (421,
   403, or a preflight's 204); true when the request goes on, with its CORS
   lines set on req (llmc_http_req_t.extra_hdrs). Loop thread. */
bool llmc_origin_admit(const llmc_origin_t *o, llmc_http_req_t *req, bool admin);

#endif
