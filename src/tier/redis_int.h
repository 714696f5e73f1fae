/*
 * tier/redis_int.h: what the Redis tier's files share, and what its unit
 * tests reach: the invalidation message's selector (redis_msg.c).
 */
#ifndef LLMC_TIER_REDIS_INT_H
#define LLMC_TIER_REDIS_INT_H

#include <stddef.h>

#include "llmc/tier.h"

/* sel as compact JSON, every field of it (a malloc'd, terminated string),
   or NULL when out of memory. Any thread. */
char *llmc__redis_sel_encode(const llmc_purge_t *sel);

/* Reads a selector written by llmc__redis_sel_encode from len bytes at s
   (another process's: never trusted) into *out, whose strings point into
   the returned handle; free that with llmc__redis_sel_free once done with
   *out. NULL when s is not such a selector (then *out says nothing). */
void *llmc__redis_sel_decode(const char *s, size_t len, llmc_purge_t *out);
void llmc__redis_sel_free(void *handle);

/* Reads 2 * LLMC_KEY_LEN hex digits at hex into *key: 0, or -1. */
int llmc__redis_key_unhex(const char *hex, llmc_key_t *key);

#endif
