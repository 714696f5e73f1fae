/*
 * fuzz_semantic.c: libFuzzer driver for the semantic tier's text parsers:
 * the lexical tokeniser and embedder (src/semantic/lexical.c) and the guards'
 * extraction of numbers, quotes, code spans, URLs and identifiers
 * (src/semantic/guard.c). Their input is a client's question, any bytes.
 *
 * Input: two questions separated by the first NUL byte (no NUL: the second
 * is the first with its ASCII letters upper-cased).
 *
 * What it checks, beyond ASan, UBSan and LeakSanitizer:
 * - tokenising answers 0, LLMC_EINVAL (not UTF-8) or LLMC_E2BIG, and every
 *   token's word and stem are NUL-terminated within LLMC_LEX_TOKMAX;
 * - an embedding with features has norm 1, one without is all zeros;
 * - the guards are symmetric (a against b rejects with the guard b against
 *   a does) and a question always passes against itself;
 * - case never matters to the embedding: a question and its upper-cased
 *   twin embed alike (cosine above 0.999) when both are ASCII.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "semantic/guard.h"
#include "semantic/lexical.h"

#include "fuzz_check.h"

static llmc_lex_t *lx;

static void check_tokens(const char *s, size_t n)
{
    llmc_lex_toks_t t = {0};
    int rc = llmc_lex_tokenize(lx, s, n, &t);
    CHECK(rc == 0 || rc == LLMC_EINVAL || rc == LLMC_E2BIG);
    for (size_t i = 0; rc == 0 && i < t.n; i++) {
        CHECK(memchr(t.v[i].word, '\0', LLMC_LEX_TOKMAX) != NULL);
        CHECK(memchr(t.v[i].stem, '\0', LLMC_LEX_TOKMAX) != NULL);
        CHECK(t.v[i].word[0] != '\0');
    }
    llmc_lex_toks_free(&t);
}

static int embed(const char *s, size_t n, float *v)
{
    int rc = llmc_lex_embed(lx, s, n, v);
    if (rc > 0) {
        float norm = llmc_lex_dot(v, v, LLMC_LEX_DIM);
        CHECK(fabsf(norm - 1.0f) < 1e-3f);
    } else {
        for (int i = 0; i < LLMC_LEX_DIM; i++)
            CHECK(v[i] == 0.0f);
    }
    return rc;
}

static bool ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!lx && !(lx = llmc_lex_new()))
        abort();
    const char *a = (const char *)data, *nul = memchr(data, 0, size);
    size_t na = nul ? (size_t)(nul - a) : size;
    char *b = malloc(size + 1);
    size_t nb;
    if (!b)
        return 0;
    if (nul) {
        nb = size - na - 1;
        memcpy(b, nul + 1, nb);
    } else {
        nb = na;
        for (size_t i = 0; i < na; i++)
            b[i] = (a[i] >= 'a' && a[i] <= 'z') ? (char)(a[i] - 32) : a[i];
    }
    b[nb] = '\0';

    check_tokens(a, na);
    check_tokens(b, nb);
    float va[LLMC_LEX_DIM], vb[LLMC_LEX_DIM];
    int ea = embed(a, na, va), eb = embed(b, nb, vb);
    if (!nul && ea > 0 && eb > 0 && ascii(a, na)) {
        /* Folding happens before anything is hashed: the twin is the same
           question, whatever the letters' case. */
        CHECK(llmc_lex_dot(va, vb, LLMC_LEX_DIM) > 0.999f);
    }

    llmc_guard_q_t *qa = NULL, *qb = NULL;
    if (llmc_guard_q_new(lx, a, na, &qa) == 0 && llmc_guard_q_new(lx, b, nb, &qb) == 0) {
        char why[LLMC_GUARD_REASON];
        int ab = llmc_guard_check(qa, qb, why), ba = llmc_guard_check(qb, qa, why);
        CHECK(ab == ba);
        CHECK(ab >= -1 && ab < LLMC_GUARD_N);
        CHECK(llmc_guard_check(qa, qa, why) == -1);
    }
    llmc_guard_q_free(qa);
    llmc_guard_q_free(qb);
    free(b);
    return 0;
}
