/*
 * fuzz_encoding.c: libFuzzer driver for Accept-Encoding negotiation and
 * the gzip, zstd and br decoders (src/http/encoding.c).
 *
 * Input: the first byte picks the mode; the rest is an Accept-Encoding
 * value (mode even) or bytes handed to the gzip, zstd or br decoder (mode
 * odd).
 *
 * What it checks, beyond ASan and UBSan:
 * - pick answers a coding within the mask or identity, never reads past
 *   the value's NUL, and answers identity for an empty mask;
 * - decode answers 0 with at most max bytes, or a negative LLMC_E* code
 *   with nothing allocated (the leak checker sees the rest); a decoded
 *   body encodes and decodes back to itself, whole and through a
 *   streaming encoder written in two flushed pieces.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/encoding.h"
#include "llmc/error.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    if (mode % 2 == 0) {
        char *s = malloc(size + 1);
        if (!s)
            return 0;
        memcpy(s, data, size);
        s[size] = '\0';
        unsigned mask = (mode >> 1) & 15;
        llmc_encoding_t e = llmc_encoding_pick(s, mask);
        CHECK(e == LLMC_ENC_IDENTITY || (e < LLMC_ENC_N && (mask & LLMC_ENC_MASK(e))));
        CHECK(llmc_encoding_pick(s, 0) == LLMC_ENC_IDENTITY);
        free(s);
        return 0;
    }
    static const llmc_encoding_t decoders[] = {LLMC_ENC_GZIP, LLMC_ENC_ZSTD, LLMC_ENC_BR};
    llmc_encoding_t enc = decoders[(mode >> 1) % 3];
    size_t max = 1 << 16;
    char *out = NULL, *z = NULL, *back = NULL;
    size_t n = 0, zn = 0, bn = 0;
    int rc = llmc_encoding_decode(enc, (const char *)data, size, max, &out, &n);
    CHECK(rc <= 0);
    if (rc < 0)
        return 0;
    CHECK(n <= max);
    CHECK(llmc_encoding_encode(enc, out, n, &z, &zn) == 0);
    CHECK(llmc_encoding_decode(enc, z, zn, max, &back, &bn) == 0);
    CHECK(bn == n && memcmp(back, out, n) == 0);
    free(back);
    free(z);
    /* The same body through a stream: two flushed writes and the end. */
    llmc_encoder_t *se = llmc_encoder_new(enc);
    if (se) {
        char *all = NULL, *piece;
        size_t alln = 0, pn, half = n / 2;
        const char *parts[3] = {out, out + half, NULL};
        size_t lens[3] = {half, n - half, 0};
        for (int i = 0; i < 3; i++) {
            CHECK(llmc_encoder_write(se, parts[i], lens[i], i == 2, &piece, &pn) == 0);
            char *grown = realloc(all, alln + pn + 1);
            CHECK(grown != NULL);
            all = grown;
            if (pn)
                memcpy(all + alln, piece, pn);
            alln += pn;
            free(piece);
        }
        CHECK(llmc_encoding_decode(enc, all, alln, max, &back, &bn) == 0);
        CHECK(bn == n && memcmp(back, out, n) == 0);
        free(back);
        free(all);
        llmc_encoder_free(se);
    }
    free(out);
    return 0;
}
