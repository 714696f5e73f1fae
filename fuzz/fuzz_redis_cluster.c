/*
 * fuzz_redis_cluster.c: libFuzzer driver for what the Redis tier reads from
 * other processes beside values: Cluster redirects and slot maps
 * (src/tier/redis_cluster.c) and the invalidation selector
 * (src/tier/redis_msg.c).
 *
 * Input: a mode byte, then the bytes. Mode % 3 == 0: an error reply's text
 * for llmc_redis_redirect_parse; 1: RESP bytes read by hiredis's reader,
 * whose first reply goes to llmc_redis_slots_parse and to
 * llmc_redis_shards_parse; 2: a selector for
 * llmc__redis_sel_decode.
 *
 * What it checks, beyond ASan and UBSan:
 * - a redirect answers 0 (slot < 16384, port 1..65535, a host) or
 *   LLMC_EINVAL with the struct zeroed;
 * - a slot map answers 0 or LLMC_EIO; on 0 every owner names a node the
 *   map has (or none) and covered counts the slots owned; on LLMC_EIO
 *   nothing is owned;
 * - a decoded selector is never empty (all alone, or conditions alone),
 *   and encoding it and decoding that gives the same selector.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "tier/redis_cluster.h"
#include "tier/redis_int.h"

#include "fuzz_check.h"

static llmc_redis_slot_map_t map;

static void redirect(const uint8_t *d, size_t n)
{
    llmc_redis_redirect_t rd;
    static const llmc_redis_redirect_t zero;
    int rc = llmc_redis_redirect_parse((const char *)d, n, &rd);

    CHECK(rc == 0 || rc == LLMC_EINVAL);
    if (rc == 0) {
        CHECK(rd.slot < LLMC_REDIS_SLOTS);
        CHECK(rd.to.port >= 1 && rd.to.port <= 65535);
        CHECK(rd.to.host[0] != '\0');
    } else {
        CHECK(memcmp(&rd, &zero, sizeof rd) == 0);
    }
}

/* The reader's array maker, refusing what no CLUSTER SLOTS reply holds
   before hiredis 0.14 callocs for it, as the tier's reader does
   (redis.c's guard_array): this driver tests our parser of the reply, not
   hiredis's allocator. A '*' header can stand anywhere a reply element
   starts, so a scan of the text for one missed some (CI: "****797172682"). */
#define ARRAY_MAX 100000
static void *(*plain_array)(const redisReadTask *, int);
static redisReplyObjectFunctions guarded;

static void *guarded_array(const redisReadTask *t, int n)
{
    return n > ARRAY_MAX ? NULL : plain_array(t, n);
}

/* What a parse of a slot map (CLUSTER SLOTS or SHARDS) answering rc left. */
static void check_map(int rc)
{
    unsigned owned = 0;

    CHECK(rc == 0 || rc == LLMC_EIO);
    CHECK(map.nnodes <= LLMC_REDIS_NODES_MAX);
    for (unsigned s = 0; s < LLMC_REDIS_SLOTS; s++) {
        if (map.owner[s] == LLMC_REDIS_NO_NODE)
            continue;
        CHECK(map.owner[s] < map.nnodes);
        owned++;
    }
    CHECK(owned == map.covered);
    CHECK(rc == 0 || owned == 0);
    for (unsigned i = 0; i < map.nnodes; i++)
        CHECK(map.nodes[i].host[0] && map.nodes[i].port >= 1 && map.nodes[i].port <= 65535);
}

static void slots(const uint8_t *d, size_t n)
{
    redisReader *rd = redisReaderCreate();
    void *reply = NULL;

    if (!rd)
        return;
    guarded = *rd->fn;
    plain_array = rd->fn->createArray;
    guarded.createArray = guarded_array;
    rd->fn = &guarded;
    if (redisReaderFeed(rd, (const char *)d, n) == REDIS_OK &&
        redisReaderGetReply(rd, &reply) == REDIS_OK && reply) {
        check_map(llmc_redis_slots_parse(reply, "asked", &map));
        check_map(llmc_redis_shards_parse(reply, "asked", &map));
        freeReplyObject(reply);
    }
    redisReaderFree(rd);
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void selector(const uint8_t *d, size_t n)
{
    llmc_purge_t sel, again;
    void *h = llmc__redis_sel_decode((const char *)d, n, &sel);

    if (!h)
        return;
    CHECK((sel.conds == 0) == sel.all);
    char *json = llmc__redis_sel_encode(&sel);
    if (json) {
        void *h2 = llmc__redis_sel_decode(json, strlen(json), &again);
        CHECK(h2);
        CHECK(again.all == sel.all && again.conds == sel.conds);
        CHECK(memcmp(&again.key, &sel.key, sizeof sel.key) == 0);
        CHECK(memcmp(&again.prefix, &sel.prefix, sizeof sel.prefix) == 0);
        CHECK(again.prefix_digits == sel.prefix_digits);
        CHECK(again.created_before_ms == sel.created_before_ms);
        CHECK(same_str(again.ns, sel.ns) && same_str(again.tag, sel.tag));
        CHECK(same_str(again.model, sel.model) && same_str(again.route, sel.route));
        llmc__redis_sel_free(h2);
        free(json);
    }
    llmc__redis_sel_free(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        redirect(data + 1, size - 1);
        break;
    case 1:
        slots(data + 1, size - 1);
        break;
    default:
        selector(data + 1, size - 1);
        break;
    }
    return 0;
}
