/*
 * http/encoding.c: Accept-Encoding negotiation and the gzip (zlib), zstd
 * and br (libbrotli) codecs (see encoding.h for the decisions).
 *
 * The levels: gzip 6 (zlib's default; 9 takes about twice the time for a
 * percent or two on JSON), zstd 6 and br 6: on 155 KB of embeddings JSON
 * br 6 takes 8 ms of CPU for 37.4 KB, br 7 30 ms and br 9 85 ms for 1.5%
 * less (from 7 on Brotli switches to slower matchers). A form is built
 * once per entry: a few milliseconds for the largest common answers, once
 * (bigger ones off the loop, respond.c). Streams (llmc_encoder_t) use
 * cheaper levels: gzip 6 is already cheap, zstd 3 and br 5.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <brotli/decode.h>
#include <brotli/encode.h>
#include <zlib.h>
#include <zstd.h>

#include "http/encoding.h"
#include "llmc/error.h"

#define GZIP_LEVEL 6
#define ZSTD_LEVEL 6
#define BR_LEVEL 6
#define ZSTD_STREAM_LEVEL 3
#define BR_STREAM_LEVEL 5

static const char *const names[LLMC_ENC_N] = {"identity", "gzip", "zstd", "br"};

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
        else if (token_is(tok, tlen, "br"))
            q[LLMC_ENC_BR] = qv;
        else if (token_is(tok, tlen, "identity"))
            q[LLMC_ENC_IDENTITY] = qv;
        else if (token_is(tok, tlen, "*"))
            star = qv;
    }
    /* In order of preference on a tie. */
    static const llmc_encoding_t order[] = {LLMC_ENC_ZSTD, LLMC_ENC_BR, LLMC_ENC_GZIP};
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

static int br_encode(const char *in, size_t len, char **out, size_t *out_len)
{
    size_t cap = BrotliEncoderMaxCompressedSize(len);
    if (cap == 0 && len > 0)
        return LLMC_E2BIG; /* past what the bound can say */
    if (cap < 16)
        cap = 16;
    char *buf = malloc(cap);
    if (!buf)
        return LLMC_ENOMEM;
    size_t n = cap;
    if (!BrotliEncoderCompress(BR_LEVEL, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT, len,
                               (const uint8_t *)in, &n, (uint8_t *)buf)) {
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
    case LLMC_ENC_BR:
        return br_encode(in, len, out, out_len);
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

/* A decoder's ending: buf (n bytes) handed to the caller when rc is 0 and
   n is within max, freed otherwise; the LLMC_E* that says why. */
static int decoded(int rc, char *buf, size_t n, size_t max, char **out, size_t *out_len)
{
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
    if (rc == 0 && zs.avail_in != 0 && n <= max)
        rc = LLMC_ECORRUPT; /* bytes after the stream */
    return decoded(rc, buf, n, max, out, out_len);
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
    return decoded(rc, buf, n, max, out, out_len);
}

static int br_decode(const char *in, size_t len, size_t max, char **out, size_t *out_len)
{
    BrotliDecoderState *ds = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    if (!ds)
        return LLMC_ENOMEM;
    const uint8_t *next_in = (const uint8_t *)in;
    size_t avail_in = len, cap = 0, n = 0;
    char *buf = NULL;
    int rc = 0;
    for (;;) {
        if (n == cap && (rc = grow(&buf, &cap, max)) < 0)
            break;
        uint8_t *next_out = (uint8_t *)buf + n;
        size_t avail_out = cap - n;
        BrotliDecoderResult r =
            BrotliDecoderDecompressStream(ds, &avail_in, &next_in, &avail_out, &next_out, NULL);
        n = cap - avail_out;
        if (r == BROTLI_DECODER_RESULT_SUCCESS) {
            if (avail_in != 0)
                rc = LLMC_ECORRUPT; /* bytes after the stream */
            break;
        }
        if (r == BROTLI_DECODER_RESULT_ERROR || r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) {
            rc = LLMC_ECORRUPT; /* damaged, or cut short */
            break;
        }
    }
    BrotliDecoderDestroyInstance(ds);
    return decoded(rc, buf, n, max, out, out_len);
}

int llmc_encoding_decode(llmc_encoding_t enc, const char *in, size_t len, size_t max,
                         char **out, size_t *out_len)
{
    switch (enc) {
    case LLMC_ENC_GZIP:
        return gzip_decode(in, len, max, out, out_len);
    case LLMC_ENC_ZSTD:
        return zstd_decode(in, len, max, out, out_len);
    case LLMC_ENC_BR:
        return br_decode(in, len, max, out, out_len);
    default:
        return LLMC_EINVAL;
    }
}

/* ---- streaming encoders --------------------------------------------------- */

struct llmc_encoder {
    llmc_encoding_t enc;
    bool ended;
    z_stream zs;
    ZSTD_CCtx *zc;
    BrotliEncoderState *bs;
};

llmc_encoder_t *llmc_encoder_new(llmc_encoding_t enc)
{
    llmc_encoder_t *z = calloc(1, sizeof(*z));
    if (!z)
        return NULL;
    z->enc = enc;
    bool ok = false;
    switch (enc) {
    case LLMC_ENC_GZIP:
        ok = deflateInit2(&z->zs, GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK;
        break;
    case LLMC_ENC_ZSTD:
        ok = (z->zc = ZSTD_createCCtx()) != NULL &&
             !ZSTD_isError(ZSTD_CCtx_setParameter(z->zc, ZSTD_c_compressionLevel,
                                                  ZSTD_STREAM_LEVEL));
        break;
    case LLMC_ENC_BR:
        ok = (z->bs = BrotliEncoderCreateInstance(NULL, NULL, NULL)) != NULL &&
             BrotliEncoderSetParameter(z->bs, BROTLI_PARAM_QUALITY, BR_STREAM_LEVEL) &&
             BrotliEncoderSetParameter(z->bs, BROTLI_PARAM_MODE, BROTLI_MODE_TEXT);
        break;
    default:
        break;
    }
    if (!ok) {
        llmc_encoder_free(z); /* frees what was made */
        return NULL;
    }
    return z;
}

void llmc_encoder_free(llmc_encoder_t *z)
{
    if (!z)
        return;
    if (z->enc == LLMC_ENC_GZIP && z->zs.state)
        deflateEnd(&z->zs);
    ZSTD_freeCCtx(z->zc);
    if (z->bs)
        BrotliEncoderDestroyInstance(z->bs);
    free(z);
}

/* Output room: grows *buf by at least want bytes past *n. */
static int room(char **buf, size_t *cap, size_t n, size_t want)
{
    if (*cap - n >= want)
        return 0;
    size_t nc = *cap * 2 > n + want ? *cap * 2 : n + want;
    char *nb = realloc(*buf, nc);
    if (!nb)
        return LLMC_ENOMEM;
    *buf = nb;
    *cap = nc;
    return 0;
}

#define STREAM_CHUNK 4096

static int gzip_write(llmc_encoder_t *z, const char *in, size_t len, bool last, char **buf,
                      size_t *cap, size_t *n)
{
    if (len > UINT32_MAX)
        return LLMC_E2BIG;
    z->zs.next_in = (Bytef *)(uintptr_t)in;
    z->zs.avail_in = (uInt)len;
    int flush = last ? Z_FINISH : Z_SYNC_FLUSH;
    for (;;) {
        if (room(buf, cap, *n, STREAM_CHUNK) < 0)
            return LLMC_ENOMEM;
        z->zs.next_out = (Bytef *)*buf + *n;
        z->zs.avail_out = (uInt)(*cap - *n);
        int rc = deflate(&z->zs, flush);
        *n = *cap - z->zs.avail_out;
        if (rc == Z_STREAM_END)
            return 0;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return LLMC_EIO;
        /* Flushed when deflate left room unused with all input taken. */
        if (!last && z->zs.avail_in == 0 && z->zs.avail_out > 0)
            return 0;
    }
}

static int zstd_write(llmc_encoder_t *z, const char *in, size_t len, bool last, char **buf,
                      size_t *cap, size_t *n)
{
    ZSTD_inBuffer ib = {in, len, 0};
    ZSTD_EndDirective op = last ? ZSTD_e_end : ZSTD_e_flush;
    for (;;) {
        if (room(buf, cap, *n, STREAM_CHUNK) < 0)
            return LLMC_ENOMEM;
        ZSTD_outBuffer ob = {*buf, *cap, *n};
        size_t left = ZSTD_compressStream2(z->zc, &ob, &ib, op);
        *n = ob.pos;
        if (ZSTD_isError(left))
            return LLMC_EIO;
        if (left == 0 && ib.pos == ib.size)
            return 0; /* flushed (or ended) */
    }
}

static int br_write(llmc_encoder_t *z, const char *in, size_t len, bool last, char **buf,
                    size_t *cap, size_t *n)
{
    const uint8_t *next_in = (const uint8_t *)in;
    size_t avail_in = len;
    BrotliEncoderOperation op = last ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_FLUSH;
    for (;;) {
        if (room(buf, cap, *n, STREAM_CHUNK) < 0)
            return LLMC_ENOMEM;
        uint8_t *next_out = (uint8_t *)*buf + *n;
        size_t avail_out = *cap - *n;
        if (!BrotliEncoderCompressStream(z->bs, op, &avail_in, &next_in, &avail_out, &next_out,
                                         NULL))
            return LLMC_EIO;
        *n = *cap - avail_out;
        if (avail_in == 0 && !BrotliEncoderHasMoreOutput(z->bs) &&
            (!last || BrotliEncoderIsFinished(z->bs)))
            return 0;
    }
}

int llmc_encoder_write(llmc_encoder_t *z, const char *in, size_t len, bool last, char **out,
                       size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (z->ended)
        return LLMC_EINVAL;
    /* Nothing to flush and not the end: no bytes (a flush of nothing would
       still send a few). */
    if (len == 0 && !last)
        return 0;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    int rc = z->enc == LLMC_ENC_GZIP   ? gzip_write(z, in, len, last, &buf, &cap, &n)
             : z->enc == LLMC_ENC_ZSTD ? zstd_write(z, in, len, last, &buf, &cap, &n)
                                       : br_write(z, in, len, last, &buf, &cap, &n);
    if (last || rc < 0)
        z->ended = true; /* a failed stream cannot go on: its state is unknown */
    if (rc < 0) {
        free(buf);
        return rc;
    }
    if (n == 0) {
        free(buf);
        buf = NULL;
    }
    *out = buf;
    *out_len = n;
    return 0;
}
