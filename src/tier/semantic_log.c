/*
 * tier/semantic_log.c: the record of one indexed question (see
 * semantic_log.h).
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "llmc/error.h"
#include "tier/semantic_log.h"

#define MAGIC1 0x31515353u /* "SSQ1" */
#define MAGIC2 0x32515353u /* "SSQ2" */
#define HEAD1 (8 + 2 * LLMC_KEY_LEN)
#define HEAD2 (16 + 2 * LLMC_KEY_LEN)
#define SUM LLMC_SEMQ_SUM

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void llmc_semq_sum(const uint8_t *rec, size_t len, uint8_t out[LLMC_SEMQ_SUM])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(rec, len, md, &mdlen, EVP_sha256(), NULL);
    memcpy(out, md, SUM);
}

uint8_t *llmc_semq_encode(const llmc_semq_t *q, size_t *len)
{
    size_t idlen = strnlen(q->id, LLMC_EMBEDDER_ID_MAX);
    unsigned dim = q->vec ? q->dim : 0;
    if (q->len > LLMC_SEMQ_MAX_TEXT || dim > LLMC_SEMQ_MAX_DIM || idlen == LLMC_EMBEDDER_ID_MAX)
        return NULL;
    size_t n = HEAD2 + idlen + q->len + 4 * (size_t)dim + SUM;
    uint8_t *rec = malloc(n), *p = rec;
    if (!rec)
        return NULL;
    put32(p, MAGIC2);
    put32(p + 4, (uint32_t)q->len);
    put32(p + 8, dim);
    put32(p + 12, (uint32_t)idlen);
    memcpy(p + 16, q->key.b, LLMC_KEY_LEN);
    memcpy(p + 16 + LLMC_KEY_LEN, q->part.b, LLMC_KEY_LEN);
    p += HEAD2;
    memcpy(p, q->id, idlen);
    p += idlen;
    memcpy(p, q->text, q->len);
    p += q->len;
    for (unsigned i = 0; i < dim; i++, p += 4) {
        uint32_t bits;
        memcpy(&bits, &q->vec[i], 4);
        put32(p, bits);
    }
    llmc_semq_sum(rec, (size_t)(p - rec), p);
    *len = n;
    return rec;
}

/* The body's length after a head of hlen bytes (sum included), or 0 when
   the head is not one of ours or names more than the bounds. */
static size_t body_len(const uint8_t *h, size_t hlen)
{
    uint32_t magic = get32(h), tlen = get32(h + 4);
    if (tlen > LLMC_SEMQ_MAX_TEXT)
        return 0;
    if (magic == MAGIC1 && hlen == HEAD1)
        return tlen + SUM;
    if (magic != MAGIC2 || hlen != HEAD2)
        return 0;
    uint32_t dim = get32(h + 8), idlen = get32(h + 12);
    if (dim > LLMC_SEMQ_MAX_DIM || idlen >= LLMC_EMBEDDER_ID_MAX)
        return 0;
    return idlen + tlen + 4 * (size_t)dim + SUM;
}

int llmc_semq_decode(const uint8_t *buf, size_t len, llmc_semq_t *out)
{
    uint8_t sum[SUM];
    memset(out, 0, sizeof(*out));
    if (len < 8)
        return LLMC_EINVAL;
    bool v1 = get32(buf) == MAGIC1;
    size_t hlen = v1 ? HEAD1 : HEAD2;
    if (len < hlen || body_len(buf, hlen) != len - hlen)
        return LLMC_EINVAL;
    llmc_semq_sum(buf, len - SUM, sum);
    if (memcmp(sum, buf + len - SUM, SUM) != 0)
        return LLMC_EINVAL;
    size_t tlen = get32(buf + 4), idlen = v1 ? 0 : get32(buf + 12);
    unsigned dim = v1 ? 0 : get32(buf + 8);
    const uint8_t *k = buf + (v1 ? 8 : 16), *p = buf + hlen;
    memcpy(out->key.b, k, LLMC_KEY_LEN);
    memcpy(out->part.b, k + LLMC_KEY_LEN, LLMC_KEY_LEN);
    memcpy(out->id, p, idlen);
    out->id[idlen] = '\0';
    if (strlen(out->id) != idlen)
        return LLMC_EINVAL; /* a NUL inside: not an id we wrote */
    p += idlen;
    if (!(out->text = malloc(tlen + 1)) || (dim && !(out->vec = malloc(dim * sizeof(float))))) {
        llmc_semq_clear(out);
        return LLMC_ENOMEM;
    }
    memcpy(out->text, p, tlen);
    out->text[tlen] = '\0';
    out->len = tlen;
    p += tlen;
    for (unsigned i = 0; i < dim; i++, p += 4) {
        uint32_t bits = get32(p);
        memcpy(&out->vec[i], &bits, 4);
        if (!isfinite(out->vec[i])) {
            /* Never ours (a peer's record is another process's bytes):
               a NaN would poison every distance it meets in the index. */
            llmc_semq_clear(out);
            return LLMC_EINVAL;
        }
    }
    out->dim = dim;
    return 0;
}

int llmc_semq_read(FILE *f, llmc_semq_t *out)
{
    uint8_t head[HEAD2];
    memset(out, 0, sizeof(*out));
    if (fread(head, 1, 8, f) != 8)
        return LLMC_ENOENT;
    size_t hlen = get32(head) == MAGIC1 ? HEAD1 : HEAD2;
    if (fread(head + 8, 1, hlen - 8, f) != hlen - 8)
        return LLMC_ENOENT;
    size_t blen = body_len(head, hlen);
    if (!blen)
        return LLMC_ENOENT;
    uint8_t *rec = malloc(hlen + blen);
    if (!rec)
        return LLMC_ENOENT;
    memcpy(rec, head, hlen);
    int rc = fread(rec + hlen, 1, blen, f) == blen ? llmc_semq_decode(rec, hlen + blen, out)
                                                   : LLMC_EINVAL;
    free(rec);
    return rc == 0 ? 0 : LLMC_ENOENT;
}

void llmc_semq_clear(llmc_semq_t *q)
{
    free(q->text);
    free(q->vec);
    memset(q, 0, sizeof(*q));
}
