/*
 * tier/redis_vec.h: semantic questions shared between gateways through a
 * Redis stream (issue 19), so that a question answered through gateway A
 * is a SEMANTIC-HIT for a near-duplicate on gateway B.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Each question the semantic tier indexes from its own traffic is
 *   appended (XADD prefix+"semantic" MAXLEN ~ maxlen) as a
 *   tier/semantic_log.h record: key, partition, text, vector and embedder
 *   id. The bound is Redis's: the stream never grows past about maxlen.
 * - Worker 0's loop reads the stream with XREAD (no BLOCK: it shares its
 *   connection with that worker's lookups) every poll_ms, and at once
 *   again while a read comes back full. It starts from the beginning, so a
 *   gateway started late catches up with what the stream still holds.
 * - The answer itself is in Redis under the entry's key (the Redis tier
 *   stored it): a peer's question is indexed only once its answer is read
 *   back (GET), and given to the semantic tier with it. An answer that is
 *   gone (purged, expired) is never indexed; one purged later goes from
 *   the semantic tier like any other, by the purge that the Redis tier's
 *   pub/sub brings to every tier. Our own records are skipped by the
 *   id they carry: kept in the data dir when the semantic tier keeps its
 *   questions there (they come back from disk after a restart, so the
 *   stream's copies stay ours), else one per process (then a restarted
 *   gateway indexes its earlier questions as a peer's: it no longer has
 *   them).
 * - When the Redis tier listens to invalidations again after a loss it
 *   drops every local copy, the peers' questions too: the stream is then
 *   read again from its start (a read in the air is ignored).
 */
#ifndef LLMC_TIER_REDIS_VEC_H
#define LLMC_TIER_REDIS_VEC_H

#include <stdint.h>

#include "llmc/tier.h"

#define LLMC_REDIS_VEC_MAXLEN 100000 /* default entries the stream keeps */
#define LLMC_REDIS_VEC_POLL_MS 200   /* default read interval */
#define LLMC_REDIS_VEC_COUNT 128     /* entries per XREAD */
#define LLMC_REDIS_VEC_GETS 256      /* answers read back at once, at most */

typedef struct llmc_redis_vec_config {
    uint64_t maxlen;  /* 0: LLMC_REDIS_VEC_MAXLEN */
    unsigned poll_ms; /* 0: LLMC_REDIS_VEC_POLL_MS */
    const char *dir;  /* where the semantic tier keeps its questions, or NULL:
                         our records' id is kept there (stable across restarts) */
} llmc_redis_vec_config_t;

/* Shares sem's questions through redis (both made, neither attached yet).
   0 or LLMC_ENOMEM. Main thread, before the workers run; the sharing goes
   with the Redis tier. */
int llmc_tier_redis_share_semantic(llmc_tier_t *redis, llmc_tier_t *sem,
                                   const llmc_redis_vec_config_t *cfg);

#endif
