/*
 * gateway/dashboard.h: GET /dashboard, the live page compiled into the
 * binary (src/gateway/dashboard.html, embedded at build time by
 * tools/embed.sh).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The page holds no data: it is the same bytes for everyone, and what it
 *   shows comes from /stats, which the page fetches with the admin token
 *   the user types into it (kept in the tab's sessionStorage, sent as
 *   Authorization: Bearer). A browser cannot put a Bearer header on a
 *   navigation, so the page is served to whoever reaches the admin
 *   listener and the data stays behind the token.
 * - It needs nothing from the network beyond this listener: no CDN, no
 *   font, no library; a Content-Security-Policy says so to the browser
 *   (connect-src 'self', nothing else loaded).
 */
#ifndef LLMC_GW_DASHBOARD_H
#define LLMC_GW_DASHBOARD_H

#include <stddef.h>

#include "http/http.h"

/* The page's bytes and length (static, for the process's life). */
const unsigned char *llmc_dashboard_page(size_t *len);

/* Answers req with the page (200, text/html, no-store, the CSP above).
   req's loop thread. */
void llmc_dashboard_respond(llmc_http_req_t *req);

#endif
