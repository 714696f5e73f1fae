/*
 * test_encoding.c: Accept-Encoding negotiation and the gzip and zstd
 * codecs (src/http/encoding.c).
 *
 * The choice is checked against RFC 9110 12.5.3's cases (q values, "*",
 * identity excluded or preferred, malformed elements); the codecs by round
 * trips of answers like the cache holds (JSON text, long lists of
 * numbers, empty), by the gzip stream being what zlib's own gzip reader
 * takes, and by refusing cut, trailing and oversized input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "http/encoding.h"
#include "llmc/error.h"

#define BOTH (LLMC_ENC_MASK(LLMC_ENC_GZIP) | LLMC_ENC_MASK(LLMC_ENC_ZSTD))
#define GZ LLMC_ENC_MASK(LLMC_ENC_GZIP)

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
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        llmc_encoding_t got = llmc_encoding_pick(cases[i].accept, cases[i].mask);
        if (got != cases[i].want)
            fail_msg("Accept-Encoding '%s': got %s, want %s", cases[i].accept ? cases[i].accept : "(none)",
                     llmc_encoding_name(got), llmc_encoding_name(cases[i].want));
    }
    assert_string_equal(llmc_encoding_name(LLMC_ENC_GZIP), "gzip");
    assert_string_equal(llmc_encoding_name(LLMC_ENC_ZSTD), "zstd");
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
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_gzip_is_the_gzip_format),
        cmocka_unit_test(test_identity_and_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
