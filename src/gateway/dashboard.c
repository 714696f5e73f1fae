/*
 * dashboard.c: the page of GET /dashboard (gateway/dashboard.h).
 *
 * The page is a file of its own, src/gateway/dashboard.html, so that it is
 * edited as HTML; the build turns it into dashboard_html.h (a byte array)
 * and this file serves those bytes without copying them.
 */
#include "gateway/dashboard.h"

#include <string.h>

#include "dashboard_html.h" /* generated: llmc_dashboard_html[] */

/* The page's scripts and styles are inline; it talks only to this origin
   and loads nothing, and no other site may frame it. */
static const char headers[] =
    "Content-Type: text/html; charset=utf-8\r\n"
    "Cache-Control: no-store\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'\r\n";

const unsigned char *llmc_dashboard_page(size_t *len)
{
    *len = sizeof(llmc_dashboard_html);
    return llmc_dashboard_html;
}

void llmc_dashboard_respond(llmc_http_req_t *req)
{
    size_t len;
    const unsigned char *page = llmc_dashboard_page(&len);
    uv_buf_t buf = uv_buf_init((char *)page, (unsigned)len);
    llmc_http_respond(req, 200, headers, sizeof(headers) - 1, &buf, 1, NULL, NULL);
}
