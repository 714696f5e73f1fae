/*
 * fuzz_semq.c: libFuzzer driver for the record of one indexed question
 * (src/tier/semantic_log.c): semantic.log's record and the one other
 * gateways put on the Redis stream, so bytes of another process.
 *
 * Input: record bytes (the seeds in corpus/semq/ are intact records of
 * both versions, with and without a vector).
 *
 * What it checks, beyond ASan and UBSan:
 * - decode answers 0 or LLMC_EINVAL (LLMC_ENOMEM aside); on 0 the text is
 *   terminated at its length, the id is shorter than its bound, the vector
 *   within LLMC_SEMQ_MAX_DIM and finite;
 * - a decoded record encodes to bytes that decode to the same record (a
 *   version 1 record comes back as version 2, the same fields);
 * - read over the input as a file stops at the first record that does not
 *   check and never reads one that decode refuses.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "tier/semantic_log.h"

#include "fuzz_check.h"

static void check_record(const llmc_semq_t *q)
{
    CHECK(q->text && strlen(q->text) <= q->len && q->text[q->len] == '\0');
    CHECK(strlen(q->id) < LLMC_EMBEDDER_ID_MAX);
    CHECK(q->dim <= LLMC_SEMQ_MAX_DIM && (q->dim == 0) == (q->vec == NULL));
    for (unsigned i = 0; i < q->dim; i++)
        CHECK(isfinite(q->vec[i]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llmc_semq_t q, back;
    int rc = llmc_semq_decode(data, size, &q);
    CHECK(rc == 0 || rc == LLMC_EINVAL || rc == LLMC_ENOMEM);
    if (rc == 0) {
        check_record(&q);
        size_t n = 0;
        uint8_t *rec = llmc_semq_encode(&q, &n);
        if (rec) {
            CHECK(llmc_semq_decode(rec, n, &back) == 0);
            CHECK(back.len == q.len && memcmp(back.text, q.text, q.len) == 0);
            CHECK(strcmp(back.id, q.id) == 0 && back.dim == q.dim);
            CHECK(memcmp(back.key.b, q.key.b, LLMC_KEY_LEN) == 0);
            CHECK(memcmp(back.part.b, q.part.b, LLMC_KEY_LEN) == 0);
            CHECK(q.dim == 0 || memcmp(back.vec, q.vec, q.dim * sizeof(float)) == 0);
            llmc_semq_clear(&back);
            free(rec);
        }
        llmc_semq_clear(&q);
    }
    FILE *f = size ? fmemopen((void *)data, size, "rb") : NULL;
    if (f) {
        for (int i = 0; i < 64 && llmc_semq_read(f, &q) == 0; i++) {
            check_record(&q);
            llmc_semq_clear(&q);
        }
        fclose(f);
    }
    return 0;
}
