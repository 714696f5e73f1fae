/*
 * http/chunk_scan.c: a strict checker for chunked request bodies.
 *
 * libhttp-parser decodes the body; this only adds the strictness the library
 * as Debian builds it lacks (HTTP_PARSER_STRICT is off there), the same way
 * head_scan.c does for the head. The parser, non-strict, accepts and this
 * rejects with 400:
 * - any two bytes after chunk data, or after a chunk line's CR, taken as
 *   its CRLF (so "<data>XX0\r\n\r\n" ends a body);
 * - anything at all between a chunk size and its CR: bare LF, NUL, control
 *   bytes, which front ends that end the line elsewhere read differently (a
 *   known request smuggling vector);
 * - bare LF, NUL and control bytes (but HT) in trailer lines.
 * The grammar is RFC 9112 7.1: chunk-size is 1*HEXDIG, here at most 16
 * digits so that it always fits a uint64_t; chunk-ext is
 * *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ), where
 * whitespace is allowed only next to ";" and "=", never before the CRLF.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - It runs over the same bytes just before the parser does, from the byte
 *   after the head on, and stops at the blank line that ends the trailers:
 *   the bytes after it are the next pipelined request, which conn.c hands to
 *   the head scan, not to this.
 * - Chunk data is skipped by its length, never looked at: the cost is per
 *   chunk line, not per body byte.
 * - Extensions and trailers are metadata the server drops, so they cost no
 *   memory, but they would let a client send an endless body that never
 *   reaches the body limit. Their bytes together are bounded by the head's
 *   limit (LLMC_CS_TOO_BIG, 431), like the head they extend.
 */
#include <string.h>

#include "http/http_int.h"

/* The ext and trailer states come last, from S_BWS_SEMI on: a byte that moves
   into one of them is counted against max_meta. */
enum {
    S_SIZE0,      /* first digit of a chunk size */
    S_SIZE,       /* more digits, or what follows them */
    S_SIZE_LF,    /* the LF of a chunk line */
    S_DATA,       /* chunk data: skipped by length */
    S_DATA_CR,    /* the CRLF after chunk data */
    S_DATA_LF,
    S_BWS_SEMI,   /* whitespace that only a ";" may end */
    S_EXT_NAME0,  /* after ";": whitespace, then the first name byte */
    S_EXT_NAME,
    S_EXT_NAME_WS, /* whitespace after a name: "=" or ";" must come */
    S_EXT_VAL0,   /* after "=": whitespace, then a token or a quoted string */
    S_EXT_TOKEN,
    S_EXT_QS,     /* inside a quoted string */
    S_EXT_QP,     /* after a backslash in a quoted string */
    S_EXT_AFTER,  /* after a closing quote */
    S_TRAILER,    /* start of a trailer line or of the final CRLF */
    S_TNAME,
    S_TVALUE,
    S_TVALUE_LF,
    S_END_LF,
    S_DONE,
    S_BAD         /* a violation was seen: every later call answers it again */
};

#define HEX_DIGITS_MAX 16

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

void llmc__http_chunk_init(llmc__http_chunk_t *cs, size_t max_meta)
{
    memset(cs, 0, sizeof(*cs));
    cs->state = S_SIZE0;
    cs->max_meta = max_meta;
}

/* The byte after an extension's value: another extension, the line's end,
   or whitespace that only another extension may follow. */
static int after_value(unsigned char ch)
{
    if (ch == ';')
        return S_EXT_NAME0;
    if (ch == '\r')
        return S_SIZE_LF;
    return (ch == ' ' || ch == '\t') ? S_BWS_SEMI : -1;
}

/* One byte outside chunk data; returns the next state, or -1 when the byte
   is not allowed there. */
static int step(llmc__http_chunk_t *cs, int st, unsigned char ch)
{
    int h;

    switch (st) {
    case S_SIZE0:
    case S_SIZE:
        h = hexval(ch);
        if (h >= 0) {
            if (cs->digits++ == HEX_DIGITS_MAX)
                return -1;
            cs->left = cs->left << 4 | (uint64_t)h;
            return S_SIZE;
        }
        if (st == S_SIZE0)
            return -1;
        if (ch == '\r')
            return S_SIZE_LF;
        if (ch == ';')
            return S_EXT_NAME0;
        return (ch == ' ' || ch == '\t') ? S_BWS_SEMI : -1;
    case S_SIZE_LF:
        if (ch != '\n')
            return -1;
        cs->digits = 0;
        return cs->left ? S_DATA : S_TRAILER;
    case S_DATA_CR:
        return ch == '\r' ? S_DATA_LF : -1;
    case S_DATA_LF:
        return ch == '\n' ? S_SIZE0 : -1;
    case S_BWS_SEMI:
        if (ch == ' ' || ch == '\t')
            return S_BWS_SEMI;
        return ch == ';' ? S_EXT_NAME0 : -1;
    case S_EXT_NAME0:
        if (ch == ' ' || ch == '\t')
            return S_EXT_NAME0;
        return is_tchar(ch) ? S_EXT_NAME : -1;
    case S_EXT_NAME:
        if (is_tchar(ch))
            return S_EXT_NAME;
        if (ch == '=')
            return S_EXT_VAL0;
        if (ch == ';')
            return S_EXT_NAME0;
        if (ch == '\r')
            return S_SIZE_LF;
        return (ch == ' ' || ch == '\t') ? S_EXT_NAME_WS : -1;
    case S_EXT_NAME_WS:
        if (ch == ' ' || ch == '\t')
            return S_EXT_NAME_WS;
        if (ch == '=')
            return S_EXT_VAL0;
        return ch == ';' ? S_EXT_NAME0 : -1;
    case S_EXT_VAL0:
        if (ch == ' ' || ch == '\t')
            return S_EXT_VAL0;
        if (ch == '"')
            return S_EXT_QS;
        return is_tchar(ch) ? S_EXT_TOKEN : -1;
    case S_EXT_TOKEN:
        return is_tchar(ch) ? S_EXT_TOKEN : after_value(ch);
    case S_EXT_AFTER:
        return after_value(ch);
    case S_EXT_QS:
        if (ch == '"')
            return S_EXT_AFTER;
        if (ch == '\\')
            return S_EXT_QP;
        /* qdtext: HT, SP, VCHAR but '"' and '\', obs-text */
        return (ch == '\t' || (ch >= 0x20 && ch != 0x7f)) ? S_EXT_QS : -1;
    case S_EXT_QP:
        return (ch == '\t' || (ch >= 0x20 && ch != 0x7f)) ? S_EXT_QS : -1;
    case S_TRAILER:
        if (ch == '\r')
            return S_END_LF;
        return is_tchar(ch) ? S_TNAME : -1;
    case S_TNAME:
        if (ch == ':')
            return S_TVALUE;
        return is_tchar(ch) ? S_TNAME : -1;
    case S_TVALUE:
        if (ch == '\r')
            return S_TVALUE_LF;
        /* HT, visible ASCII, SP, and obs-text (>= 0x80), as in a header */
        return (ch == '\t' || (ch >= 0x20 && ch != 0x7f)) ? S_TVALUE : -1;
    case S_TVALUE_LF:
        return ch == '\n' ? S_TRAILER : -1;
    case S_END_LF:
        return ch == '\n' ? S_DONE : -1;
    }
    return -1;
}

int llmc__http_chunk_scan(llmc__http_chunk_t *cs, const char *p, size_t n, size_t *used)
{
    int st = cs->state;
    size_t i = 0;

    *used = 0;
    if (st == S_DONE)
        return LLMC_CS_DONE;
    if (st == S_BAD)
        return LLMC_CS_BAD;
    while (i < n) {
        if (st == S_DATA) {
            size_t take = (uint64_t)(n - i) < cs->left ? n - i : (size_t)cs->left;
            cs->left -= take;
            i += take;
            if (cs->left == 0)
                st = S_DATA_CR;
            continue;
        }
        st = step(cs, st, (unsigned char)p[i++]);
        if (st < 0) {
            cs->state = S_BAD;
            return LLMC_CS_BAD;
        }
        if (st >= S_BWS_SEMI && st < S_DONE && cs->max_meta && ++cs->meta > cs->max_meta) {
            cs->state = S_BAD;
            return LLMC_CS_TOO_BIG;
        }
        if (st == S_DONE)
            break;
    }
    cs->state = (uint8_t)st;
    *used = i;
    return st == S_DONE ? LLMC_CS_DONE : LLMC_CS_MORE;
}
