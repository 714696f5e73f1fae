/*
 * tier/semantic_log.h: one indexed question as bytes: the record of
 * semantic.log (--data-dir) and of the Redis stream that shares questions
 * between gateways (tier/redis_vec.c). It carries the vector and the id of
 * the embedder that made it, so a restart or a peer reuses the vector
 * instead of embedding the question again (a paid call with a remote
 * model) whenever its embedder is the same.
 *
 * Layout (integers and floats little-endian): magic "SSQ2", text length,
 * dimension (0: no vector), id length, key, partition, id, text, the
 * vector's floats, then the first 8 bytes of SHA-256 over all before. A
 * record that does not check is refused: a wrong question under a key
 * could serve a wrong answer; so is a vector with a float that is not
 * finite. Version 1 ("SSQ1": key, partition, text, no
 * id or vector) is still read, as a record without a vector.
 * Pure: no server header, no globals.
 */
#ifndef LLMC_TIER_SEMANTIC_LOG_H
#define LLMC_TIER_SEMANTIC_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "llmc/entry.h"
#include "semantic/embed.h"
#include "semantic/embedder.h"

#define LLMC_SEMQ_MAX_TEXT (1u << 20)
#define LLMC_SEMQ_MAX_DIM LLMC_EMBED_MAX_DIM

typedef struct llmc_semq {
    llmc_key_t key;  /* the answer's */
    llmc_key_t part; /* the question's partition */
    char id[LLMC_EMBEDDER_ID_MAX]; /* what made vec; "" when none */
    char *text;      /* the question, NUL-terminated (decode: malloc'd) */
    size_t len;
    float *vec;      /* dim floats, or NULL (decode: malloc'd) */
    unsigned dim;
} llmc_semq_t;

/* q as one record (malloc'd, *len bytes), or NULL when out of memory or
   when q is over the bounds. */
uint8_t *llmc_semq_encode(const llmc_semq_t *q, size_t *len);

/* The record at buf (exactly len bytes) into *out (its text and vec
   malloc'd: llmc_semq_clear). 0, or LLMC_EINVAL (not one intact record),
   LLMC_ENOMEM. */
int llmc_semq_decode(const uint8_t *buf, size_t len, llmc_semq_t *out);

/* The next record of f into *out: 0, or LLMC_ENOENT at the end or at the
   first damage (what follows a damaged record cannot be framed). */
int llmc_semq_read(FILE *f, llmc_semq_t *out);

/* The checksum these records end with: the first LLMC_SEMQ_SUM bytes of
   SHA-256 over rec[0..len). The tier's semantic-verify.log uses it too. */
#define LLMC_SEMQ_SUM 8
void llmc_semq_sum(const uint8_t *rec, size_t len, uint8_t out[LLMC_SEMQ_SUM]);

/* Frees what decode or read allocated; *q is zeroed. */
void llmc_semq_clear(llmc_semq_t *q);

#endif
