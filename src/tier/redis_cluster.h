/*
 * tier/redis_cluster.h: what routing over a Redis Cluster needs, as pure
 * functions over bytes and parsed replies: a key's hash slot, the slot map
 * from CLUSTER SHARDS or CLUSTER SLOTS, and MOVED/ASK redirects. hiredis 0.14 has no cluster
 * support; this is the small part of it the Redis tier needs.
 *
 * Nothing here does I/O or keeps state between calls: the caller owns a
 * map, fills it from a reply, and asks it where a slot lives. Unit tested
 * against replies recorded from a Redis 7.0 cluster (tests/unit).
 * tier/redis.c routes with it (see "Redis Cluster: routing" there).
 */
#ifndef LLMC_TIER_REDIS_CLUSTER_H
#define LLMC_TIER_REDIS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "tier/redis.h"

#define LLMC_REDIS_SLOTS     16384
#define LLMC_REDIS_NODES_MAX 64        /* masters a map may name */
#define LLMC_REDIS_NO_NODE   0xff      /* a slot no master serves */

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), Redis Cluster's. */
uint16_t llmc_redis_crc16(const char *buf, size_t len);

/* The hash slot of a key: CRC16 of the whole key, or, when it holds a
   non-empty {...}, of what lies between its first '{' and the first '}'
   after it; mod 16384. Keys that share such a hashtag share a slot. */
unsigned llmc_redis_slot(const char *key, size_t len);

typedef struct llmc_redis_node {
    char host[LLMC_REDIS_HOST_MAX];
    int port;
} llmc_redis_node_t;

typedef struct llmc_redis_slot_map {
    uint8_t owner[LLMC_REDIS_SLOTS];   /* index into nodes, or LLMC_REDIS_NO_NODE */
    llmc_redis_node_t nodes[LLMC_REDIS_NODES_MAX];
    unsigned nnodes;
    unsigned covered;                  /* slots that have an owner */
} llmc_redis_slot_map_t;

/* An empty map: no node, no slot served. */
void llmc_redis_map_init(llmc_redis_slot_map_t *m);

/* The index of host:port in m, added when new; -1 when m is full or the
   host is too long. */
int llmc_redis_map_node(llmc_redis_slot_map_t *m, const char *host, size_t hlen, int port);

/*
 * Fills m (initialised here) from CLUSTER SLOTS' reply: an array of
 * [start, end, [host, port, id, ...] of the master, replicas...]. A master
 * whose host is "" or "?" (Redis does not know its own address) is taken
 * to be asked_host, the node that answered. Returns 0, or LLMC_EIO when
 * the reply is not such an array (an error reply, a range out of order or
 * past 16383, a port out of range): m then serves nothing. Replicas are
 * not routed to (reads go to masters: a replica may lag a fill).
 */
int llmc_redis_slots_parse(const redisReply *reply, const char *asked_host,
                           llmc_redis_slot_map_t *m);

/*
 * Fills m (initialised here) from CLUSTER SHARDS' reply (Redis >= 7): an
 * array of shards, each a flat map with "slots" (start, end pairs) and
 * "nodes" (flat maps: "endpoint" or "ip", "port", "role", "health"...).
 * A shard's slots go to its master, the first one whose health is
 * "online" if any is. An endpoint "" or "?" is asked_host, as above; a
 * shard with no slots (a master failed over) names no node. Returns 0, or
 * LLMC_EIO when the reply is not such an array, a shard with slots has no
 * master, or a field is out of range: m then serves nothing.
 */
int llmc_redis_shards_parse(const redisReply *reply, const char *asked_host,
                            llmc_redis_slot_map_t *m);

typedef struct llmc_redis_redirect {
    bool ask;                  /* ASK (this command only, after ASKING) or MOVED */
    unsigned slot;
    llmc_redis_node_t to;
} llmc_redis_redirect_t;

/* Reads "MOVED <slot> <host>:<port>" or "ASK ..." (an error reply's text,
   len bytes; an IPv6 host is the part before the last ':'). 0, or
   LLMC_EINVAL (out zeroed) when it is not a redirect. */
int llmc_redis_redirect_parse(const char *err, size_t len, llmc_redis_redirect_t *out);

#endif
