/*
 * http/encoding.c: Accept-Encoding negotiation and the gzip (zlib) and
 * zstd codecs (see encoding.h for the decisions).
 *
 * The levels: gzip 6 (zlib's default; 9 takes about twice the time for a
 * percent or two on JSON) and zstd 6. A form is built once per entry, on
 * the loop that first needs it: a few milliseconds for the largest common
 * answers (150 KB of embeddings), once.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>
#include <zstd.h>

#include "http/encoding.h"
#include "llmc/error.h"

#define GZIP_LEVEL 6
#define ZSTD_LEVEL 6

static const char *const names[LLMC_ENC_N] = {"identity", "gzip", "zstd"};

const char *llmc_encoding_name(llmc_encoding_t enc)
{
    return enc < LLMC_ENC_N ? names[enc] : "identity";
}

/* ---- Accept-Encoding ------------------------------------------------------ */

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A qvalue (RFC 9110 12.4.2) in s..end, trailing spaces allowed, as
   thousandths; -1 when it is not one. */
static int parse_q(const char *s, const char *end)
{
    while (end > s && ows(end[-1]))
        end--;
    if (s == end || (*s != '0' && *s != '1'))
        return -1;
    int whole = *s++ - '0', frac = 0, digits = 0;
    if (s < end && *s == '.') {
        for (s++; s < end && digits < 3 && *s >= '0' && *s <= '9'; s++, digits++)
            frac = frac * 10 + (*s - '0');
    }
    if (s != end)
        return -1;
    while (digits++ < 3)
        frac *= 10;
    if (whole == 1 && frac != 0)
        return -1;
    return whole * 1000 + frac;
}

static bool token_is(const char *t, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(t, name, len) == 0;
}

llmc_encoding_t llmc_encoding_pick(const char *accept, unsigned mask)
{
    int q[LLMC_ENC_N], star = -1;
    for (int i = 0; i < LLMC_ENC_N; i++)
        q[i] = -1; /* not listed */
    if (!accept)
        return LLMC_ENC_IDENTITY;
    const char *p = accept;
    while (*p) {
        while (ows(*p) || *p == ',')
            p++;
        if (!*p)
            break;
        const char *tok = p;
        while (*p && *p != ',' && *p != ';' && !ows(*p))
            p++;
        size_t tlen = (size_t)(p - tok);
        int qv = 1000;
        while (ows(*p))
            p++;
        while (*p == ';') {
            for (p++; ows(*p); p++)
                ;
            const char *param = p;
            while (*p && *p != ',' && *p != ';')
                p++;
            if ((param[0] == 'q' || param[0] == 'Q') && param[1] == '=')
                qv = parse_q(param + 2, p);
        }
        if (*p && *p != ',') { /* junk after the coding: the element does not count */
            while (*p && *p != ',')
                p++;
            continue;
        }
        if (qv < 0)
            continue;
        if (token_is(tok, tlen, "gzip") || token_is(tok, tlen, "x-gzip"))
            q[LLMC_ENC_GZIP] = qv;
        else if (token_is(tok, tlen, "zstd"))
            q[LLMC_ENC_ZSTD] = qv;
        else if (token_is(tok, tlen, "identity"))
            q[LLMC_ENC_IDENTITY] = qv;
        else if (token_is(tok, tlen, "*"))
            star = qv;
    }
    /* In order of preference on a tie. */
    static const llmc_encoding_t order[] = {LLMC_ENC_ZSTD, LLMC_ENC_GZIP};
    llmc_encoding_t best = LLMC_ENC_IDENTITY;
    int bestq = 0;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        llmc_encoding_t e = order[i];
        int qe = q[e] >= 0 ? q[e] : star >= 0 ? star : 0;
        if ((mask & LLMC_ENC_MASK(e)) && qe > bestq) {
            best = e;
            bestq = qe;
        }
    }
    return q[LLMC_ENC_IDENTITY] > bestq ? LLMC_ENC_IDENTITY : best;
}

/* ---- the codecs ----------------------------------------------------------- */

static int gzip_encode(const char *in, size_t len, char **out, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (len > UINT32_MAX)
        return LLMC_E2BIG;
    /* 15 window bits + 16: the gzip wrapper. */
    if (deflateInit2(&zs, GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return LLMC_ENOMEM;
    size_t cap = deflateBound(&zs, (uLong)len);
    char *buf = malloc(cap);
    if (!buf) {
        deflateEnd(&zs);
        return LLMC_ENOMEM;
    }
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    zs.next_out = (Bytef *)buf;
    zs.avail_out = (uInt)cap;
    int rc = deflate(&zs, Z_FINISH);
    size_t n = zs.total_out;
    deflateEnd(&zs);
    if (rc != Z_STREAM_END) {
        free(buf);
        return LLMC_EIO;
    }
    char *shrunk = realloc(buf, n ? n : 1);
    *out = shrunk ? shrunk : buf;
    *out_len = n;
    return 0;
}

static int zstd_encode(const char *in, size_t len, char **out, size_t *out_len)
{
    size_t cap = ZSTD_compressBound(len);
    char *buf = malloc(cap);
    if (!buf)
        return LLMC_ENOMEM;
    size_t n = ZSTD_compress(buf, cap, in, len, ZSTD_LEVEL);
    if (ZSTD_isError(n)) {
        free(buf);
        return LLMC_EIO;
    }
    char *shrunk = realloc(buf, n ? n : 1);
    *out = shrunk ? shrunk : buf;
    *out_len = n;
    return 0;
}

int llmc_encoding_encode(llmc_encoding_t enc, const char *in, size_t len, char **out,
                         size_t *out_len)
{
    switch (enc) {
    case LLMC_ENC_GZIP:
        return gzip_encode(in, len, out, out_len);
    case LLMC_ENC_ZSTD:
        return zstd_encode(in, len, out, out_len);
    default:
        return LLMC_EINVAL;
    }
}

/* Makes room for more output: doubles *cap up to max (+1, to tell "at
   max" from "past it"). */
static int grow(char **buf, size_t *cap, size_t max)
{
    size_t want = *cap ? *cap * 2 : 4096;
    if (want > max + 1)
        want = max + 1;
    if (want <= *cap)
        return LLMC_E2BIG;
    char *nb = realloc(*buf, want);
    if (!nb)
        return LLMC_ENOMEM;
    *buf = nb;
    *cap = want;
    return 0;
}

static int gzip_decode(const char *in, size_t len, size_t max, char **out, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (len > UINT32_MAX)
        return LLMC_E2BIG;
    if (inflateInit2(&zs, 15 + 16) != Z_OK)
        return LLMC_ENOMEM;
    char *buf = NULL;
    size_t cap = 0;
    int rc = 0, zrc = Z_OK;
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    while (zrc != Z_STREAM_END) {
        if (zs.total_out == cap && (rc = grow(&buf, &cap, max)) < 0)
            break;
        zs.next_out = (Bytef *)buf + zs.total_out;
        zs.avail_out = (uInt)(cap - zs.total_out);
        zrc = inflate(&zs, Z_NO_FLUSH);
        if (zrc == Z_MEM_ERROR) {
            rc = LLMC_ENOMEM;
            break;
        }
        if (zrc != Z_OK && zrc != Z_STREAM_END && !(zrc == Z_BUF_ERROR && zs.avail_out == 0)) {
            rc = LLMC_ECORRUPT;
            break;
        }
        if (zrc == Z_OK && zs.avail_in == 0 && zs.avail_out > 0) {
            rc = LLMC_ECORRUPT; /* cut short */
            break;
        }
    }
    size_t n = zs.total_out;
    inflateEnd(&zs);
    if (rc == 0 && (zs.avail_in != 0 || n > max))
        rc = n > max ? LLMC_E2BIG : LLMC_ECORRUPT; /* bytes after the stream */
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

static int zstd_decode(const char *in, size_t len, size_t max, char **out, size_t *out_len)
{
    ZSTD_DStream *ds = ZSTD_createDStream();
    if (!ds)
        return LLMC_ENOMEM;
    ZSTD_inBuffer ib = {in, len, 0};
    char *buf = NULL;
    size_t cap = 0, n = 0, zrc = 1;
    int rc = 0;
    while (rc == 0) {
        if (n == cap && (rc = grow(&buf, &cap, max)) < 0)
            break;
        ZSTD_outBuffer ob = {buf, cap, n};
        zrc = ZSTD_decompressStream(ds, &ob, &ib);
        n = ob.pos;
        if (ZSTD_isError(zrc))
            rc = LLMC_ECORRUPT;
        else if (zrc == 0 && ib.pos == ib.size)
            break; /* a frame ended with the input */
        else if (ib.pos == ib.size && ob.pos < ob.size)
            rc = LLMC_ECORRUPT; /* cut short */
    }
    ZSTD_freeDStream(ds);
    if (rc == 0 && n > max)
        rc = LLMC_E2BIG;
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

int llmc_encoding_decode(llmc_encoding_t enc, const char *in, size_t len, size_t max,
                         char **out, size_t *out_len)
{
    switch (enc) {
    case LLMC_ENC_GZIP:
        return gzip_decode(in, len, max, out, out_len);
    case LLMC_ENC_ZSTD:
        return zstd_decode(in, len, max, out, out_len);
    default:
        return LLMC_EINVAL;
    }
}
