/*
 * http/head_scan.c: a strict line checker for request heads.
 *
 * libhttp-parser does the parsing; this only adds the strictness the
 * library as Debian builds it lacks (HTTP_PARSER_STRICT is off there). It
 * accepts, and this rejects with 400:
 * - obsolete line folding (a header line starting with SP or HT), which is
 *   how header values get smuggled past proxies;
 * - bare LF line ends and CR not followed by LF;
 * - spaces or other non-token bytes in header names, including the space in
 *   "Name : value" (RFC 9112 5.1 requires a 400 for it);
 * - control bytes and bytes >= 0x80 in the request line.
 * It also counts the head's bytes, which is the one exact measure of the
 * limit (the parser's own limit is global and approximate): it stops at the
 * first byte past it, so that whether the request line was still being read
 * there (414) or the header fields (431) does not depend on how the bytes
 * were split into reads.
 *
 * It runs over the same bytes just before the parser does and stops at the
 * blank line, so the two always agree on where the head ends: both treat
 * exactly CRLF as a line end once this has rejected everything else.
 */
#include <string.h>

#include "http/http_int.h"

enum {
    S_START,       /* before the request line; CR and LF skipped like the parser does */
    S_REQLINE,
    S_REQLINE_LF,
    S_LINE,        /* start of a header line or of the blank line */
    S_NAME,
    S_VALUE,
    S_VALUE_LF,
    S_END_LF,
    S_DONE
};

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

void llmc__http_scan_init(llmc__http_scan_t *hs, size_t max_bytes)
{
    hs->state = S_START;
    hs->bytes = 0;
    hs->max_bytes = max_bytes;
}

/* One byte; returns the next state, or -1 when the byte is not allowed. */
static int step(int st, unsigned char ch)
{
    switch (st) {
    case S_START:
        if (ch == '\r' || ch == '\n')
            return S_START;
        return (ch > 0x20 && ch < 0x7f) ? S_REQLINE : -1;
    case S_REQLINE:
        if (ch == '\r')
            return S_REQLINE_LF;
        return (ch >= 0x20 && ch < 0x7f) ? S_REQLINE : -1;
    case S_REQLINE_LF:
    case S_VALUE_LF:
        return ch == '\n' ? S_LINE : -1;
    case S_LINE:
        if (ch == '\r')
            return S_END_LF;
        return is_tchar(ch) ? S_NAME : -1;
    case S_NAME:
        if (ch == ':')
            return S_VALUE;
        return is_tchar(ch) ? S_NAME : -1;
    case S_VALUE:
        if (ch == '\r')
            return S_VALUE_LF;
        /* HT, visible ASCII, SP, and obs-text (>= 0x80) */
        return (ch == '\t' || (ch >= 0x20 && ch != 0x7f)) ? S_VALUE : -1;
    case S_END_LF:
        return ch == '\n' ? S_DONE : -1;
    }
    return -1;
}

int llmc__http_scan(llmc__http_scan_t *hs, const char *p, size_t n, size_t *used)
{
    int st = hs->state;
    size_t i;

    if (st == S_DONE) {
        *used = 0;
        return LLMC_HS_DONE;
    }
    if (hs->max_bytes && n > hs->max_bytes - hs->bytes + 1)
        n = hs->max_bytes - hs->bytes + 1; /* bytes stays <= max_bytes until now */
    for (i = 0; i < n; i++) {
        st = step(st, (unsigned char)p[i]);
        if (st < 0)
            return LLMC_HS_BAD;
        if (st == S_DONE) {
            i++;
            break;
        }
    }
    hs->bytes += i;
    hs->state = (uint8_t)st;
    if (hs->max_bytes && hs->bytes > hs->max_bytes)
        return st <= S_REQLINE_LF ? LLMC_HS_LINE_TOO_BIG : LLMC_HS_TOO_BIG;
    *used = i;
    return st == S_DONE ? LLMC_HS_DONE : LLMC_HS_MORE;
}
