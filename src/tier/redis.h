/*
 * tier/redis.h: the shared cache tier on one Redis server, so that several
 * gateways answer from one cache.
 *
 * It implements llmc/tier.h with hiredis's asynchronous API on its libuv
 * adapter: one connection per event loop (made at attach), never a
 * blocking call. An entry is stored under prefix + the key in hex, its
 * value the disk tier's record (llmc/record.h), with the entry's remaining
 * freshness as the key's lifetime (SET ... PX). A lookup is a GET whose
 * answer comes back on the asking loop (LLMC_EAGAIN, then done()).
 *
 * Redis trouble never becomes a client error: a lookup not answered within
 * the timeout is a miss, a value that does not decode is a miss, and while
 * a loop's connection is down its lookups miss at once and its writes are
 * dropped (all counted) while it reconnects with backoff.
 *
 * It also coordinates model calls across gateways (tier.h's lease): one
 * gateway per key holds a lease in Redis while it calls the model, the
 * others wait for its answer there.
 *
 * Purges and new answers are told to the other gateways over pub/sub
 * (prefix + "invalidate"); what they tell this one is applied to the other
 * tiers through the configuration's peer_purge. A purge by selector walks
 * the prefix's keys in Redis (SCAN) and removes what it selects.
 *
 * A comma list of seed nodes is a Redis Cluster: keys are routed by hash
 * slot (tier/redis_cluster.h) to a connection per master per loop, keyed
 * prefix{hex} so that a key and its lease share a slot; MOVED and ASK are
 * followed and the slot map read again, which also finds a promoted
 * replica after a failover.
 *
 * Not here: rediss:// (TLS: Debian 12's hiredis 0.14 has none).
 */
#ifndef LLMC_TIER_REDIS_H
#define LLMC_TIER_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmc/tier.h"

#define LLMC_REDIS_HOST_MAX 256
#define LLMC_REDIS_CRED_MAX 256
#define LLMC_REDIS_PREFIX_MAX 128

#define LLMC_REDIS_SEEDS_MAX 16
#define LLMC_REDIS_SEEDS_MAX_STR "16"

typedef struct llmc_redis_seed {
    char host[LLMC_REDIS_HOST_MAX];
    int port;
} llmc_redis_seed_t;

/* A parsed redis:// URL. user and password are "" when absent. */
typedef struct llmc_redis_url {
    char host[LLMC_REDIS_HOST_MAX]; /* a name or an address, without []: seeds[0]'s */
    int port;                       /* 6379 when the URL names none */
    llmc_redis_seed_t seeds[LLMC_REDIS_SEEDS_MAX]; /* every host:port, in order */
    unsigned nseeds;
    bool cluster;                   /* more than one: a Redis Cluster's seed nodes */
    int db;                         /* 0 when the URL names none */
    char user[LLMC_REDIS_CRED_MAX];
    char password[LLMC_REDIS_CRED_MAX];
} llmc_redis_url_t;

/*
 * Parses redis://[[user]:password@]host[:port][,host[:port]...][/db].
 * user and password may be percent-encoded; an IPv6 host is written in
 * brackets; more than one host names a Redis Cluster's seed nodes (then
 * the database must be 0). Returns 0, or LLMC_EINVAL with a message in err
 * that never holds the credentials: rediss:// (no TLS in this build), a
 * query, a bad port or database, too many seeds. Any thread.
 */
int llmc_redis_url_parse(const char *url, llmc_redis_url_t *out, char *err, size_t errlen);

/*
 * Writes url into out (outlen bytes, always terminated) with whatever lies
 * between "://" and the last '@' replaced by "***": safe to print for any
 * text, parsed or not. Any thread.
 */
void llmc_redis_url_redact(const char *url, char *out, size_t outlen);

typedef struct llmc_redis_config {
    const char *url;          /* redis://... (llmc_redis_url_parse) */
    const char *prefix;       /* before every key; NULL means "llmc:" */
    int64_t timeout_ms;       /* a lookup unanswered this long is a miss; 0 means 50 */
    /* Where the state changes (connected, lost, cannot connect) are told;
       NULL: stderr. msg never holds credentials. Called on loop threads. */
    void (*log)(void *arg, const char *msg);
    void *log_arg;
    /* Where the other gateways' invalidations are applied: every tier but
       from drops what sel selects; logged for a peer's purge, not for its
       new answer to one key (tier/set.h's llmc_tier_set_purge_peer).
       NULL: this process does not listen (it still tells the others).
       Called on worker 0's loop thread. */
    void (*peer_purge)(void *arg, llmc_tier_t *from, unsigned worker, const llmc_purge_t *sel,
                       bool logged);
    void *peer_purge_arg;
} llmc_redis_config_t;

/*
 * Makes the Redis tier, named "redis". Connects nothing yet: each
 * attach() starts its loop's connection, so a Redis that is down at start
 * delays nothing (its lookups miss until it is up). Returns 0 and the tier
 * in *out, or LLMC_EINVAL (bad URL or prefix) / LLMC_ENOMEM with a message
 * in err that never holds the credentials. Main thread, before the loops.
 */
int llmc_tier_redis_open(const llmc_redis_config_t *cfg, llmc_tier_t **out, char *err, size_t errlen);

#endif
