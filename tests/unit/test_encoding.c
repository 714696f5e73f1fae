/*
 * test_encoding.c: Accept-Encoding negotiation and the gzip, zstd and br
 * codecs (src/http/encoding.c), whole bodies and flushed streams.
 *
 * The choice is checked against RFC 9110 12.5.3's cases (q values, "*",
 * identity excluded or preferred, malformed elements); the codecs by round
 * trips of answers like the cache holds (JSON text, long lists of
 * numbers, empty), by the gzip stream being what zlib's own gzip reader
 * takes, and by refusing cut, trailing and oversized input. A streaming
 * encoder is checked by decoding its output after every write with each
 * library's own streaming decoder: every byte written so far must come
 * out, event by event, before the stream ends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <brotli/decode.h>
#include <cmocka.h>
#include <zlib.h>
#include <zstd.h>

#include "http/encoding.h"
#include "llmc/error.h"

#define BOTH (LLMC_ENC_MASK(LLMC_ENC_GZIP) | LLMC_ENC_MASK(LLMC_ENC_ZSTD))
#define GZ LLMC_ENC_MASK(LLMC_ENC_GZIP)
#define ALL (BOTH | LLMC_ENC_MASK(LLMC_ENC_BR))

static void test_pick(void **state)
{
    (void)state;
    static const struct { const char *accept; unsigned mask; llmc_encoding_t want; } cases[] = {
        {NULL, BOTH, LLMC_ENC_IDENTITY},
        {"", BOTH, LLMC_ENC_IDENTITY},
        {"identity", BOTH, LLMC_ENC_IDENTITY},
        {"gzip", BOTH, LLMC_ENC_GZIP},
        {"GZIP", BOTH, LLMC_ENC_GZIP},
        {"x-gzip", BOTH, LLMC_ENC_GZIP},
        {"gzip, deflate", BOTH, LLMC_ENC_GZIP},           /* python requests */
        {"gzip, deflate, br, zstd", BOTH, LLMC_ENC_ZSTD}, /* browsers: a tie, zstd first */
        {"gzip, deflate, br, zstd", GZ, LLMC_ENC_GZIP},   /* what we may use */
        {"zstd;q=0.5, gzip", BOTH, LLMC_ENC_GZIP},
        {"zstd;q=0.5,gzip;q=0.4", BOTH, LLMC_ENC_ZSTD},
        {"gzip;q=0", BOTH, LLMC_ENC_IDENTITY},
        {"gzip;q=0.000", BOTH, LLMC_ENC_IDENTITY},
        {"gzip ; q=0.001", BOTH, LLMC_ENC_GZIP},
        {"gzip;Q=1.000", BOTH, LLMC_ENC_GZIP},
        {"*", BOTH, LLMC_ENC_ZSTD},
        {"*;q=0.3, zstd;q=0", BOTH, LLMC_ENC_GZIP},
        {"br", BOTH, LLMC_ENC_IDENTITY},
        {"gzip;q=0.5, identity", BOTH, LLMC_ENC_IDENTITY}, /* identity preferred */
        {"gzip;q=0.5, identity;q=0.5", BOTH, LLMC_ENC_GZIP},
        {"identity;q=0, gzip", BOTH, LLMC_ENC_GZIP},
        /* Malformed elements count as not listed. */
        {"gzip;q=1.5", BOTH, LLMC_ENC_IDENTITY},
        {"gzip;q=0.1234", BOTH, LLMC_ENC_IDENTITY},
        {"gzip;q=", BOTH, LLMC_ENC_IDENTITY},
        {"gzip junk, zstd;q=0.1", BOTH, LLMC_ENC_ZSTD},
        {"gzipx", BOTH, LLMC_ENC_IDENTITY},
        {",,, ,gzip,,", BOTH, LLMC_ENC_GZIP},
        {"gzip;level=9;q=0.2", BOTH, LLMC_ENC_GZIP},
        {";;;", BOTH, LLMC_ENC_IDENTITY},
        {"gzip", 0, LLMC_ENC_IDENTITY},
        /* br, when we may use it: a tie goes zstd, br, gzip. */
        {"br", ALL, LLMC_ENC_BR},
        {"BR", ALL, LLMC_ENC_BR},
        {"gzip, deflate, br", ALL, LLMC_ENC_BR}, /* requests with brotli installed, browsers */
        {"gzip, deflate, br, zstd", ALL, LLMC_ENC_ZSTD},
        {"gzip, br;q=0.9", ALL, LLMC_ENC_GZIP},
        {"br;q=0.2, gzip;q=0.1", ALL, LLMC_ENC_BR},
        {"br;q=0, gzip", ALL, LLMC_ENC_GZIP},
        {"*;q=0.5, zstd;q=0", ALL, LLMC_ENC_BR},
        {"*", ALL, LLMC_ENC_ZSTD},
        {"br, identity", ALL, LLMC_ENC_BR},
        {"br;q=0.5, identity", ALL, LLMC_ENC_IDENTITY},
        {"brotli", ALL, LLMC_ENC_IDENTITY},
        {"br", BOTH, LLMC_ENC_IDENTITY},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        llmc_encoding_t got = llmc_encoding_pick(cases[i].accept, cases[i].mask);
        if (got != cases[i].want)
            fail_msg("Accept-Encoding '%s': got %s, want %s", cases[i].accept ? cases[i].accept : "(none)",
                     llmc_encoding_name(got), llmc_encoding_name(cases[i].want));
    }
    assert_string_equal(llmc_encoding_name(LLMC_ENC_GZIP), "gzip");
    assert_string_equal(llmc_encoding_name(LLMC_ENC_ZSTD), "zstd");
    assert_string_equal(llmc_encoding_name(LLMC_ENC_BR), "br");
}

static char *embeddings_like(size_t *len)
{
    size_t cap = 200000, n = 0;
    char *s = malloc(cap);
    n += (size_t)snprintf(s + n, cap - n, "{\"object\":\"list\",\"data\":[{\"embedding\":[");
    uint32_t x = 12345;
    for (int i = 0; i < 1536; i++) {
        x = x * 1103515245u + 12345u;
        n += (size_t)snprintf(s + n, cap - n, "%s%.8f", i ? "," : "", (double)(x % 20000) / 1e4 - 1);
    }
    n += (size_t)snprintf(s + n, cap - n, "]}]}");
    *len = n;
    return s;
}

static void round_trip(llmc_encoding_t enc, const char *in, size_t len, bool smaller)
{
    char *z = NULL, *back = NULL;
    size_t zlen = 0, blen = 0;
    assert_int_equal(llmc_encoding_encode(enc, in, len, &z, &zlen), 0);
    if (smaller)
        assert_true(zlen < len / 2);
    assert_int_equal(llmc_encoding_decode(enc, z, zlen, len, &back, &blen), 0);
    assert_int_equal(blen, len);
    assert_memory_equal(back, in, len);
    free(back);
    /* A limit below the size: refused. */
    if (len > 0)
        assert_int_equal(llmc_encoding_decode(enc, z, zlen, len - 1, &back, &blen), LLMC_E2BIG);
    /* Cut short, and with bytes after the stream: refused. */
    if (zlen > 1)
        assert_int_equal(llmc_encoding_decode(enc, z, zlen - 1, len + 10, &back, &blen),
                         LLMC_ECORRUPT);
    char *more = malloc(zlen + 3);
    memcpy(more, z, zlen);
    memcpy(more + zlen, "xyz", 3);
    assert_int_equal(llmc_encoding_decode(enc, more, zlen + 3, len + 10, &back, &blen),
                     LLMC_ECORRUPT);
    free(more);
    free(z);
}

static void test_round_trips(void **state)
{
    (void)state;
    const char *chat =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1700000000,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"The cache answered this, and it answered it again, and again.\"},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,"
        "\"total_tokens\":21}}";
    size_t elen;
    char *emb = embeddings_like(&elen);
    for (llmc_encoding_t e = LLMC_ENC_GZIP; e < LLMC_ENC_N; e++) {
        round_trip(e, chat, strlen(chat), false);
        round_trip(e, emb, elen, true);
        round_trip(e, "", 0, false);
    }
    free(emb);
}

static void test_gzip_is_the_gzip_format(void **state)
{
    (void)state;
    const char *in = "{\"hello\":\"world, world, world, world\"}";
    char *z = NULL;
    size_t zlen = 0;
    assert_int_equal(llmc_encoding_encode(LLMC_ENC_GZIP, in, strlen(in), &z, &zlen), 0);
    /* RFC 1952's magic, and zlib's gzip-only reader takes it. */
    assert_true(zlen > 18 && (unsigned char)z[0] == 0x1f && (unsigned char)z[1] == 0x8b);
    char out[128];
    z_stream zs = {0};
    assert_int_equal(inflateInit2(&zs, 16 + 15), Z_OK);
    zs.next_in = (Bytef *)z;
    zs.avail_in = (uInt)zlen;
    zs.next_out = (Bytef *)out;
    zs.avail_out = sizeof(out);
    assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
    assert_int_equal(zs.total_out, strlen(in));
    assert_memory_equal(out, in, strlen(in));
    inflateEnd(&zs);
    free(z);
}

static void test_identity_and_garbage(void **state)
{
    (void)state;
    char *out = NULL;
    size_t n = 0;
    assert_int_equal(llmc_encoding_encode(LLMC_ENC_IDENTITY, "x", 1, &out, &n), LLMC_EINVAL);
    assert_int_equal(llmc_encoding_decode(LLMC_ENC_IDENTITY, "x", 1, 10, &out, &n), LLMC_EINVAL);
    assert_int_equal(llmc_encoding_decode(LLMC_ENC_GZIP, "not gzip at all", 15, 100, &out, &n),
                     LLMC_ECORRUPT);
    assert_int_equal(llmc_encoding_decode(LLMC_ENC_ZSTD, "not zstd at all", 15, 100, &out, &n),
                     LLMC_ECORRUPT);
    assert_int_equal(llmc_encoding_decode(LLMC_ENC_BR, "not br at all!!", 15, 100, &out, &n),
                     LLMC_ECORRUPT);
    assert_null(llmc_encoder_new(LLMC_ENC_IDENTITY));
}

/* ---- streams ---------------------------------------------------------------- */

/* A client's decoder, fed piece by piece: what it has given so far. */
typedef struct client_dec {
    llmc_encoding_t enc;
    z_stream zs;
    ZSTD_DStream *zd;
    BrotliDecoderState *bd;
    char out[1 << 16];
    size_t n;
} client_dec_t;

static void dec_init(client_dec_t *d, llmc_encoding_t enc)
{
    memset(d, 0, sizeof(*d));
    d->enc = enc;
    if (enc == LLMC_ENC_GZIP)
        assert_int_equal(inflateInit2(&d->zs, 16 + 15), Z_OK);
    else if (enc == LLMC_ENC_ZSTD)
        assert_non_null(d->zd = ZSTD_createDStream());
    else
        assert_non_null(d->bd = BrotliDecoderCreateInstance(NULL, NULL, NULL));
}

/* Feeds in[0..len) and takes all the decoder can give now. */
static void dec_feed(client_dec_t *d, const char *in, size_t len)
{
    if (d->enc == LLMC_ENC_GZIP) {
        d->zs.next_in = (Bytef *)(uintptr_t)in;
        d->zs.avail_in = (uInt)len;
        d->zs.next_out = (Bytef *)d->out + d->n;
        d->zs.avail_out = (uInt)(sizeof(d->out) - d->n);
        int rc = inflate(&d->zs, Z_SYNC_FLUSH);
        assert_true(rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR);
        d->n = sizeof(d->out) - d->zs.avail_out;
    } else if (d->enc == LLMC_ENC_ZSTD) {
        ZSTD_inBuffer ib = {in, len, 0};
        ZSTD_outBuffer ob = {d->out, sizeof(d->out), d->n};
        while (ib.pos < ib.size)
            assert_false(ZSTD_isError(ZSTD_decompressStream(d->zd, &ob, &ib)));
        d->n = ob.pos;
    } else {
        const uint8_t *ni = (const uint8_t *)in;
        size_t ai = len, ao = sizeof(d->out) - d->n;
        uint8_t *no = (uint8_t *)d->out + d->n;
        BrotliDecoderResult r = BrotliDecoderDecompressStream(d->bd, &ai, &ni, &ao, &no, NULL);
        assert_true(r != BROTLI_DECODER_RESULT_ERROR && ai == 0);
        d->n = sizeof(d->out) - ao;
    }
}

static void dec_free(client_dec_t *d)
{
    if (d->enc == LLMC_ENC_GZIP)
        inflateEnd(&d->zs);
    ZSTD_freeDStream(d->zd);
    if (d->bd)
        BrotliDecoderDestroyInstance(d->bd);
}

static void test_stream_flushes_each_event(void **state)
{
    (void)state;
    static const char *const events[] = {
        "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\" there\"}}]}\n\n",
        "data: [DONE]\n\n",
    };
    const size_t nev = sizeof(events) / sizeof(events[0]);
    for (llmc_encoding_t e = LLMC_ENC_GZIP; e < LLMC_ENC_N; e++) {
        llmc_encoder_t *z = llmc_encoder_new(e);
        assert_non_null(z);
        client_dec_t d;
        dec_init(&d, e);
        char *all = malloc(1 << 16);
        size_t alln = 0, plain = 0;
        for (size_t i = 0; i < nev; i++) {
            char *out;
            size_t n;
            assert_int_equal(llmc_encoder_write(z, events[i], strlen(events[i]), false, &out, &n), 0);
            assert_true(n > 0);
            dec_feed(&d, out, n);
            plain += strlen(events[i]);
            /* Every event so far is out of the client's decoder now. */
            if (d.n != plain)
                fail_msg("%s: after event %zu the decoder gave %zu of %zu bytes",
                         llmc_encoding_name(e), i, d.n, plain);
            memcpy(all + alln, out, n);
            alln += n;
            free(out);
        }
        char *out;
        size_t n;
        /* Nothing to flush: nothing written. */
        assert_int_equal(llmc_encoder_write(z, "", 0, false, &out, &n), 0);
        assert_true(out == NULL && n == 0);
        assert_int_equal(llmc_encoder_write(z, NULL, 0, true, &out, &n), 0);
        memcpy(all + alln, out, n);
        alln += n;
        free(out);
        /* Ended: no more writes; the whole is one stream of that coding. */
        assert_int_equal(llmc_encoder_write(z, "x", 1, false, &out, &n), LLMC_EINVAL);
        char *back;
        size_t blen;
        assert_int_equal(llmc_encoding_decode(e, all, alln, 1 << 16, &back, &blen), 0);
        assert_int_equal(blen, plain);
        assert_memory_equal(back, d.out, plain);
        free(back);
        free(all);
        dec_free(&d);
        llmc_encoder_free(z);
    }
}

/* A stream of many events: the encoder keeps its window (later events are
   smaller than they would be alone) and a big write is taken whole. */
static void test_stream_big_writes(void **state)
{
    (void)state;
    size_t elen;
    char *emb = embeddings_like(&elen);
    for (llmc_encoding_t e = LLMC_ENC_GZIP; e < LLMC_ENC_N; e++) {
        llmc_encoder_t *z = llmc_encoder_new(e);
        char *all = NULL;
        size_t alln = 0;
        for (int i = 0; i < 3; i++) {
            char *out;
            size_t n;
            assert_int_equal(llmc_encoder_write(z, emb, elen, i == 2, &out, &n), 0);
            all = realloc(all, alln + n);
            memcpy(all + alln, out, n);
            alln += n;
            free(out);
        }
        assert_true(alln < elen); /* three copies in less than one */
        char *back;
        size_t blen;
        assert_int_equal(llmc_encoding_decode(e, all, alln, 3 * elen, &back, &blen), 0);
        assert_int_equal(blen, 3 * elen);
        for (int i = 0; i < 3; i++)
            assert_memory_equal(back + i * elen, emb, elen);
        free(back);
        free(all);
        llmc_encoder_free(z);
    }
    free(emb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_gzip_is_the_gzip_format),
        cmocka_unit_test(test_identity_and_garbage),
        cmocka_unit_test(test_stream_flushes_each_event),
        cmocka_unit_test(test_stream_big_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
