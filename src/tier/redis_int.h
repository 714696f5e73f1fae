/*
 * tier/redis_int.h: what the Redis tier's files share, and what its unit
 * tests reach: the invalidation message's selector (redis_msg.c).
 */
#ifndef LLMC_TIER_REDIS_INT_H
#define LLMC_TIER_REDIS_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

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

/* ---- redis.c's hooks for redis_vec.c (semantic questions shared, issue 19) ---- */

struct redisReply;
struct uv_loop_s;

/* A command's reply (NULL: the connection ended before it came). */
typedef void (*llmc__redis_ext_cb)(void *arg, const struct redisReply *reply);

/* Sends argv on worker's connection for the key rkey (a Cluster routes it
   by its slot); cb runs once, with the reply or NULL. 0, or LLMC_EAGAIN
   when no connection can take it now (cb never runs). Worker's loop. */
int llmc__redis_ext_send(llmc_tier_t *t, unsigned worker, const char *rkey, size_t rklen,
                         int argc, const char **argv, const size_t *lens, llmc__redis_ext_cb cb,
                         void *arg);

/* The Redis key of an entry's key into out (LLMC_REDIS_KEY_MAX bytes): its length. */
#define LLMC_REDIS_KEY_MAX (128 + 6 + 2 * 32 + 3)
size_t llmc__redis_key(llmc_tier_t *t, const llmc_key_t *key, char *out);
const char *llmc__redis_prefix(llmc_tier_t *t);

/* A part of the tier that lives on worker 0's loop (redis_vec.c): redis.c
   calls attach there at its attach, detach at its detach, and free with
   the tier; through these pointers, so that redis.c never calls up into
   the files that use it. */
typedef struct llmc__redis_part {
    int (*attach)(void *arg, struct uv_loop_s *loop);
    void (*detach)(void *arg);
    void (*free)(void *arg);
    /* After the invalidation subscriber listened again (resync(): every
       local copy, the peers' questions included, was just dropped), on
       worker 0's loop. May be NULL. */
    void (*resync)(void *arg);
    void *arg;
} llmc__redis_part_t;

/* Sets t's part (copied). Main thread, before attach. */
void llmc__redis_set_part(llmc_tier_t *t, const llmc__redis_part_t *part);

/* redis_vec.c's counters: they live in the Redis tier, whose /stats table
   shows them (semantic/...), since the part has no table of its own. */
typedef struct llmc__redis_vec_stats {
    _Atomic uint64_t published, publish_failures, reads, read_failures, answers_gone,
        answer_failures, rereads, bad_entries;
} llmc__redis_vec_stats_t;
llmc__redis_vec_stats_t *llmc__redis_vec_stats(llmc_tier_t *t);

/* msg to the Redis tier's log (one line, no credentials in it). Any thread. */
void llmc__redis_tell(llmc_tier_t *t, const char *msg);

#endif
