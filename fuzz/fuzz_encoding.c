/*
 * fuzz_encoding.c: libFuzzer driver for Accept-Encoding negotiation and
 * the gzip and zstd decoders (src/http/encoding.c).
 *
 * Input: the first byte picks the mode; the rest is an Accept-Encoding
 * value (mode even) or bytes handed to the gzip or zstd decoder (mode odd).
 *
 * What it checks, beyond ASan and UBSan:
 * - pick answers a coding within the mask or identity, never reads past
 *   the value's NUL, and answers identity for an empty mask;
 * - decode answers 0 with at most max bytes, or a negative LLMC_E* code
 *   with nothing allocated (the leak checker sees the rest); a decoded
 *   body encodes and decodes back to itself.
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
        unsigned mask = (mode >> 1) & 7;
        llmc_encoding_t e = llmc_encoding_pick(s, mask);
        CHECK(e == LLMC_ENC_IDENTITY || (e < LLMC_ENC_N && (mask & LLMC_ENC_MASK(e))));
        CHECK(llmc_encoding_pick(s, 0) == LLMC_ENC_IDENTITY);
        free(s);
        return 0;
    }
    llmc_encoding_t enc = (mode >> 1) % 2 ? LLMC_ENC_ZSTD : LLMC_ENC_GZIP;
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
    free(out);
    return 0;
}
