/*
 * tier/redis_cluster.c: hash slots, the slot map (from CLUSTER SHARDS or
 * CLUSTER SLOTS) and redirects for Redis Cluster (tier/redis_cluster.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The hashtag rule is Redis's exactly: the first '{', then the first
 *   '}' after it; an empty "{}" does not count (the whole key is hashed).
 *   A different reading puts a key and its lease in different slots, and
 *   the lease script fails with CROSSSLOT.
 * - A reply from another process is never trusted: CLUSTER SLOTS is
 *   checked element by element and a bad one fails the whole parse, so a
 *   half-read map never routes a key to a node that does not hold it.
 * - CLUSTER SHARDS (Redis 7) is read first: CLUSTER SLOTS is deprecated
 *   there and repeats a master's address once per range, so a fragmented
 *   slot space makes it large; SHARDS names each node once with its
 *   health. SLOTS stays for older servers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "tier/redis_cluster.h"

uint16_t llmc_redis_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)(crc << 1 ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned llmc_redis_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);

    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - from);
        if (close && close > open + 1)
            return llmc_redis_crc16(open + 1, (size_t)(close - open - 1)) % LLMC_REDIS_SLOTS;
    }
    return llmc_redis_crc16(key, len) % LLMC_REDIS_SLOTS;
}

void llmc_redis_map_init(llmc_redis_slot_map_t *m)
{
    memset(m->owner, LLMC_REDIS_NO_NODE, sizeof(m->owner));
    m->nnodes = 0;
    m->covered = 0;
}

int llmc_redis_map_node(llmc_redis_slot_map_t *m, const char *host, size_t hlen, int port)
{
    if (hlen == 0 || hlen >= LLMC_REDIS_HOST_MAX || memchr(host, '\0', hlen))
        return -1;
    for (unsigned i = 0; i < m->nnodes; i++)
        if (m->nodes[i].port == port && strlen(m->nodes[i].host) == hlen &&
            memcmp(m->nodes[i].host, host, hlen) == 0)
            return (int)i;
    if (m->nnodes == LLMC_REDIS_NODES_MAX)
        return -1;
    memcpy(m->nodes[m->nnodes].host, host, hlen);
    m->nodes[m->nnodes].host[hlen] = '\0';
    m->nodes[m->nnodes].port = port;
    return (int)m->nnodes++;
}

static bool is_int(const redisReply *r, long long lo, long long hi)
{
    return r && r->type == REDIS_REPLY_INTEGER && r->integer >= lo && r->integer <= hi;
}

/* One [start, end, master, replicas...] element into m; false when bad. */
static bool slots_range(const redisReply *e, const char *asked_host, llmc_redis_slot_map_t *m)
{
    const redisReply *master;
    const char *host;
    size_t hlen;
    int node;

    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        !is_int(e->element[0], 0, LLMC_REDIS_SLOTS - 1) ||
        !is_int(e->element[1], e->element[0]->integer, LLMC_REDIS_SLOTS - 1))
        return false;
    master = e->element[2];
    if (master->type != REDIS_REPLY_ARRAY || master->elements < 2 ||
        master->element[0]->type != REDIS_REPLY_STRING || !is_int(master->element[1], 1, 65535))
        return false;
    host = master->element[0]->str;
    hlen = master->element[0]->len;
    if (hlen == 0 || (hlen == 1 && host[0] == '?')) {
        host = asked_host;
        hlen = strlen(asked_host);
    }
    if ((node = llmc_redis_map_node(m, host, hlen, (int)master->element[1]->integer)) < 0)
        return false;
    for (long long s = e->element[0]->integer; s <= e->element[1]->integer; s++) {
        if (m->owner[s] == LLMC_REDIS_NO_NODE)
            m->covered++;
        m->owner[s] = (uint8_t)node;
    }
    return true;
}

int llmc_redis_slots_parse(const redisReply *reply, const char *asked_host,
                           llmc_redis_slot_map_t *m)
{
    llmc_redis_map_init(m);
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        return LLMC_EIO;
    for (size_t i = 0; i < reply->elements; i++) {
        if (!slots_range(reply->element[i], asked_host, m)) {
            llmc_redis_map_init(m);
            return LLMC_EIO;
        }
    }
    return 0;
}

/* The value of name in a flat map (an array of name, value, ...), or NULL. */
static const redisReply *field(const redisReply *map, const char *name)
{
    size_t nlen = strlen(name);

    if (map->type != REDIS_REPLY_ARRAY || map->elements % 2)
        return NULL;
    for (size_t i = 0; i + 1 < map->elements; i += 2) {
        const redisReply *k = map->element[i];
        if (k->type == REDIS_REPLY_STRING && k->len == nlen && memcmp(k->str, name, nlen) == 0)
            return map->element[i + 1];
    }
    return NULL;
}

static bool is_str(const redisReply *r, const char *s)
{
    return r && r->type == REDIS_REPLY_STRING && r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

/* A shard's master among its nodes: the first online one, else the first;
   NULL when none is a master. */
static const redisReply *shard_master(const redisReply *nodes)
{
    const redisReply *first = NULL;

    for (size_t i = 0; i < nodes->elements; i++) {
        const redisReply *n = nodes->element[i];
        if (!is_str(field(n, "role"), "master"))
            continue;
        if (is_str(field(n, "health"), "online"))
            return n;
        if (!first)
            first = n;
    }
    return first;
}

/* One shard into m; false when bad. */
static bool shard(const redisReply *sh, const char *asked_host, llmc_redis_slot_map_t *m)
{
    const redisReply *slots = field(sh, "slots"), *nodes = field(sh, "nodes"), *master, *host, *port;
    const char *h;
    size_t hlen;
    int node;

    if (!slots || !nodes || slots->type != REDIS_REPLY_ARRAY || slots->elements % 2 ||
        nodes->type != REDIS_REPLY_ARRAY)
        return false;
    if (slots->elements == 0)
        return true; /* a master failed over keeps its shard, empty */
    if (!(master = shard_master(nodes)))
        return false;
    if (!(host = field(master, "endpoint")))
        host = field(master, "ip");
    port = field(master, "port");
    if (!host || host->type != REDIS_REPLY_STRING || !is_int(port, 1, 65535))
        return false;
    h = host->str;
    hlen = host->len;
    if (hlen == 0 || (hlen == 1 && h[0] == '?')) {
        h = asked_host;
        hlen = strlen(asked_host);
    }
    if ((node = llmc_redis_map_node(m, h, hlen, (int)port->integer)) < 0)
        return false;
    for (size_t i = 0; i < slots->elements; i += 2) {
        const redisReply *a = slots->element[i], *b = slots->element[i + 1];
        if (!is_int(a, 0, LLMC_REDIS_SLOTS - 1) || !is_int(b, a->integer, LLMC_REDIS_SLOTS - 1))
            return false;
        for (long long s = a->integer; s <= b->integer; s++) {
            if (m->owner[s] == LLMC_REDIS_NO_NODE)
                m->covered++;
            m->owner[s] = (uint8_t)node;
        }
    }
    return true;
}

int llmc_redis_shards_parse(const redisReply *reply, const char *asked_host,
                            llmc_redis_slot_map_t *m)
{
    llmc_redis_map_init(m);
    if (!reply || reply->type != REDIS_REPLY_ARRAY)
        return LLMC_EIO;
    for (size_t i = 0; i < reply->elements; i++) {
        if (!shard(reply->element[i], asked_host, m)) {
            llmc_redis_map_init(m);
            return LLMC_EIO;
        }
    }
    return 0;
}

int llmc_redis_redirect_parse(const char *err, size_t len, llmc_redis_redirect_t *out)
{
    char buf[LLMC_REDIS_HOST_MAX + 32], *sp, *colon, *end, *host;
    unsigned long slot, port;
    size_t hlen;

    memset(out, 0, sizeof(*out));
    if (len >= sizeof(buf) || memchr(err, '\0', len))
        goto fail;
    memcpy(buf, err, len);
    buf[len] = '\0';
    if (strncmp(buf, "MOVED ", 6) == 0)
        sp = buf + 6;
    else if (strncmp(buf, "ASK ", 4) == 0)
        sp = buf + 4, out->ask = true;
    else
        goto fail;
    if (*sp < '0' || *sp > '9')
        goto fail;
    slot = strtoul(sp, &end, 10);
    if (*end != ' ' || slot >= LLMC_REDIS_SLOTS || !(colon = strrchr(end + 1, ':')) ||
        colon == end + 1 || colon[1] < '0' || colon[1] > '9')
        goto fail;
    port = strtoul(colon + 1, &sp, 10);
    if (*sp != '\0' || port == 0 || port > 65535)
        goto fail;
    /* An IPv6 address may come in brackets or bare; kept without them. */
    host = end + 1;
    hlen = (size_t)(colon - host);
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']')
        host++, hlen -= 2;
    if (hlen == 0 || hlen >= sizeof(out->to.host))
        goto fail;
    memcpy(out->to.host, host, hlen);
    out->to.host[hlen] = '\0';
    out->to.port = (int)port;
    out->slot = (unsigned)slot;
    return 0;
fail:
    memset(out, 0, sizeof(*out)); /* an ASK's flag set before the rest failed */
    return LLMC_EINVAL;
}
