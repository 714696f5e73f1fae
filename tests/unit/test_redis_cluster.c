/*
 * test_redis_cluster.c: hash slots, the slot map and redirects
 * (tier/redis_cluster.h), against replies (CLUSTER SLOTS, CLUSTER SHARDS)
 * recorded from a Redis 7.0.15 cluster of three masters with a replica each (redis-cli --cluster create
 * ... --cluster-replicas 1), and against Redis's documented examples.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "llmc/error.h"
#include "tier/redis_cluster.h"

/* CLUSTER SLOTS, as 127.0.0.1:17001 answered it. */
static const char recorded_slots[] =
    "*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:17001\r\n$40\r\n"
    "f0c7774154798fbd7c39976aa82bb290290b453b\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:17005\r\n$40\r\n"
    "67cd79fc4b81ab8beeca6df943ad99505733aa79\r\n*0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$9\r\n"
    "127.0.0.1\r\n:17002\r\n$40\r\n152e4695e617b95f35face66c658566797172682\r\n*0\r\n*4\r\n$9\r\n"
    "127.0.0.1\r\n:17006\r\n$40\r\n14bb24de2ffe4995c1dba58c2325116f2d536da5\r\n*0\r\n*4\r\n"
    ":10923\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:17003\r\n$40\r\n"
    "8e10d1e166f4bd9abe52fd24a1d2a8b847616cb3\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:17004\r\n$40\r\n"
    "bb708d7f2ff957925ebd8ea611023cb742fdb376\r\n*0\r\n";

/* CLUSTER SHARDS, as 127.0.0.1:17101 of a Redis 7.0.15 cluster made the
   same way answered it (the replicas still loading). */
static const char recorded_shards[] =
    "*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\n"
    "id\r\n$40\r\ne148e9e420a7c07506d5801bc1c062660cc9f368\r\n$4\r\nport\r\n:17102\r\n$2\r\n"
    "ip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\n"
    "master\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n"
    "$2\r\nid\r\n$40\r\nfa7b14d7b19737d6e086ea117f26d9e5fa61fc0e\r\n$4\r\nport\r\n:17104\r\n"
    "$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\n"
    "replica\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$7\r\nloading\r\n*4\r\n"
    "$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n"
    "c6f21fdfc1746f50e49aa3e55a52c1467792387c\r\n$4\r\nport\r\n:17103\r\n$2\r\nip\r\n$9\r\n"
    "127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\n"
    "replication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n"
    "7464e2e6668097987ce20caacc38364ab42d3e93\r\n$4\r\nport\r\n:17105\r\n$2\r\nip\r\n$9\r\n"
    "127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\n"
    "replication-offset\r\n:0\r\n$6\r\nhealth\r\n$7\r\nloading\r\n*4\r\n$5\r\nslots\r\n*2\r\n"
    ":0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n"
    "37dc651e4964547adea4c45b8975fb67b5e5c92b\r\n$4\r\nport\r\n:17101\r\n$2\r\nip\r\n$9\r\n"
    "127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\n"
    "replication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n"
    "abee293889ea14b0a41426aa462264693b6e14b8\r\n$4\r\nport\r\n:17106\r\n$2\r\nip\r\n$9\r\n"
    "127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\n"
    "replication-offset\r\n:0\r\n$6\r\nhealth\r\n$7\r\nloading\r\n";

/* The same cluster after slot 100 was moved from 17101 to 17102 (CLUSTER
   SETSLOT 100 NODE on every master) and 17103 was shut down and its
   replica 17105 promoted: the failed master keeps a shard with no slots. */
static const char recorded_shards_failover[] =
    "*4\r\n*4\r\n$5\r\nslots\r\n*4\r\n:100\r\n:100\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n"
    "*2\r\n*14\r\n$2\r\nid\r\n$40\r\ne148e9e420a7c07506d5801bc1c062660cc9f368\r\n$4\r\n"
    "port\r\n:17102\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n"
    "$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\n"
    "online\r\n*14\r\n$2\r\nid\r\n$40\r\nfa7b14d7b19737d6e086ea117f26d9e5fa61fc0e\r\n$4\r\n"
    "port\r\n:17104\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n"
    "$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n"
    "$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*0\r\n$5\r\nnodes\r\n*1\r\n*14\r\n$2\r\nid\r\n"
    "$40\r\nc6f21fdfc1746f50e49aa3e55a52c1467792387c\r\n$4\r\nport\r\n:17103\r\n$2\r\nip\r\n"
    "$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
    "$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$4\r\nfail\r\n*4\r\n$5\r\nslots\r\n"
    "*4\r\n:0\r\n:99\r\n:101\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n"
    "37dc651e4964547adea4c45b8975fb67b5e5c92b\r\n$4\r\nport\r\n:17101\r\n$2\r\nip\r\n$9\r\n"
    "127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\n"
    "replication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n"
    "abee293889ea14b0a41426aa462264693b6e14b8\r\n$4\r\nport\r\n:17106\r\n$2\r\nip\r\n$9\r\n"
    "127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\n"
    "replication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n"
    ":10923\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*14\r\n$2\r\nid\r\n$40\r\n"
    "7464e2e6668097987ce20caacc38364ab42d3e93\r\n$4\r\nport\r\n:17105\r\n$2\r\nip\r\n$9\r\n"
    "127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\n"
    "replication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";

/* A reply parsed by hiredis's own reader, as the tier gets it. */
static redisReply *parse(const char *resp, size_t len)
{
    redisReader *rd = redisReaderCreate();
    void *reply = NULL;
    assert_non_null(rd);
    assert_int_equal(redisReaderFeed(rd, resp, len), REDIS_OK);
    assert_int_equal(redisReaderGetReply(rd, &reply), REDIS_OK);
    assert_non_null(reply);
    redisReaderFree(rd);
    return reply;
}

static void test_crc16_and_slots(void **state)
{
    (void)state;
    /* The check value of CRC16/XMODEM, as the Cluster spec gives it. */
    assert_int_equal(llmc_redis_crc16("123456789", 9), 0x31c3);
    /* Slots the recorded cluster named in its MOVED replies. */
    assert_int_equal(llmc_redis_slot("foo", 3), 12182);
    assert_int_equal(llmc_redis_slot("llmc:{abc}", 10), 7638);
    /* Hashtags, as the spec's examples read them. */
    assert_int_equal(llmc_redis_slot("{user1000}.following", 20),
                     llmc_redis_slot("{user1000}.followers", 20));
    assert_int_equal(llmc_redis_slot("{user1000}.following", 20), llmc_redis_slot("user1000", 8));
    assert_int_equal(llmc_redis_slot("foo{}{bar}", 10),
                     llmc_redis_crc16("foo{}{bar}", 10) % LLMC_REDIS_SLOTS);
    assert_int_equal(llmc_redis_slot("foo{{bar}}zap", 13), llmc_redis_slot("{bar", 4));
    assert_int_equal(llmc_redis_slot("foo{bar}{zap}", 13), llmc_redis_slot("bar", 3));
    assert_int_equal(llmc_redis_slot("{abc", 4), llmc_redis_crc16("{abc", 4) % LLMC_REDIS_SLOTS);
}

static void test_slots_parse_recorded(void **state)
{
    (void)state;
    static llmc_redis_slot_map_t m;
    redisReply *r = parse(recorded_slots, sizeof recorded_slots - 1);

    assert_int_equal(llmc_redis_slots_parse(r, "127.0.0.1", &m), 0);
    freeReplyObject(r);
    assert_int_equal(m.covered, LLMC_REDIS_SLOTS);
    assert_int_equal(m.nnodes, 3); /* masters only */
    const struct { unsigned slot; int port; } where[] = {
        {0, 17001}, {5460, 17001}, {5461, 17002}, {7638, 17002}, {10922, 17002},
        {10923, 17003}, {12182, 17003}, {16383, 17003},
    };
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        const llmc_redis_node_t *n = &m.nodes[m.owner[where[i].slot]];
        assert_string_equal(n->host, "127.0.0.1");
        assert_int_equal(n->port, where[i].port);
    }
}

static void test_slots_parse_holes_and_unknown_hosts(void **state)
{
    (void)state;
    static llmc_redis_slot_map_t m;
    /* One range, its master's address unknown to itself ("" in Redis 7). */
    static const char one[] = "*1\r\n*3\r\n:100\r\n:200\r\n*3\r\n$0\r\n\r\n:7000\r\n$2\r\nid\r\n";
    redisReply *r = parse(one, sizeof one - 1);
    assert_int_equal(llmc_redis_slots_parse(r, "10.0.0.9", &m), 0);
    freeReplyObject(r);
    assert_int_equal(m.covered, 101);
    assert_int_equal(m.owner[99], LLMC_REDIS_NO_NODE);
    assert_int_equal(m.owner[201], LLMC_REDIS_NO_NODE);
    assert_string_equal(m.nodes[m.owner[150]].host, "10.0.0.9");
    assert_int_equal(m.nodes[m.owner[150]].port, 7000);

    static const char *const bad[] = {
        "-CLUSTERDOWN The cluster is down\r\n",
        "-ERR This instance has cluster support disabled\r\n",
        ":1\r\n",
        "*1\r\n*3\r\n:200\r\n:100\r\n*2\r\n$1\r\nh\r\n:1\r\n",      /* reversed */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",     /* past the last slot */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n",         /* port 0 */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:1\r\n:1\r\n",              /* host not a string */
        "*2\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n:5\r\n",   /* a stray element */
        "*1\r\n*2\r\n:0\r\n:1\r\n",                                /* no master */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = parse(bad[i], strlen(bad[i]));
        assert_int_equal(llmc_redis_slots_parse(r, "h", &m), LLMC_EIO);
        assert_int_equal(m.covered, 0);
        assert_int_equal(m.owner[0], LLMC_REDIS_NO_NODE);
        freeReplyObject(r);
    }
}

static void test_shards_parse_recorded(void **state)
{
    (void)state;
    static llmc_redis_slot_map_t m;
    redisReply *r = parse(recorded_shards, sizeof recorded_shards - 1);

    assert_int_equal(llmc_redis_shards_parse(r, "127.0.0.1", &m), 0);
    freeReplyObject(r);
    assert_int_equal(m.covered, LLMC_REDIS_SLOTS);
    assert_int_equal(m.nnodes, 3); /* masters only */
    const struct { unsigned slot; int port; } where[] = {
        {0, 17101}, {5460, 17101}, {5461, 17102}, {10922, 17102}, {10923, 17103}, {16383, 17103},
    };
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        const llmc_redis_node_t *n = &m.nodes[m.owner[where[i].slot]];
        assert_string_equal(n->host, "127.0.0.1");
        assert_int_equal(n->port, where[i].port);
    }

    r = parse(recorded_shards_failover, sizeof recorded_shards_failover - 1);
    assert_int_equal(llmc_redis_shards_parse(r, "127.0.0.1", &m), 0);
    freeReplyObject(r);
    assert_int_equal(m.covered, LLMC_REDIS_SLOTS);
    assert_int_equal(m.nnodes, 3); /* 17103 failed, its shard empty: not named */
    const struct { unsigned slot; int port; } after[] = {
        {0, 17101}, {99, 17101}, {100, 17102}, {101, 17101}, {5461, 17102},
        {10923, 17105}, {16383, 17105},
    };
    for (size_t i = 0; i < sizeof after / sizeof after[0]; i++)
        assert_int_equal(m.nodes[m.owner[after[i].slot]].port, after[i].port);
}

static void test_shards_parse_unknown_hosts_and_bad_replies(void **state)
{
    (void)state;
    static llmc_redis_slot_map_t m;
    /* One shard: a replica, then an unhealthy master whose endpoint Redis
       does not know ("?"), then the online master (taken). */
#define NODE(role, health, endpoint, port)                                                      \
    "*10\r\n$4\r\nport\r\n:" port "\r\n$2\r\nip\r\n$1\r\nx\r\n$8\r\nendpoint\r\n" endpoint      \
    "$4\r\nrole\r\n" role "$6\r\nhealth\r\n" health
#define MASTER  "$6\r\nmaster\r\n"
#define REPLICA "$7\r\nreplica\r\n"
#define ONLINE  "$6\r\nonline\r\n"
#define FAIL    "$4\r\nfail\r\n"
    static const char one[] = "*1\r\n*4\r\n$5\r\nslots\r\n*4\r\n:100\r\n:200\r\n:300\r\n:300\r\n"
                              "$5\r\nnodes\r\n*3\r\n" NODE(REPLICA, ONLINE, "$1\r\nr\r\n", "7001")
                              NODE(MASTER, FAIL, "$1\r\nf\r\n", "7002")
                              NODE(MASTER, ONLINE, "$1\r\n?\r\n", "7000");
    redisReply *r = parse(one, sizeof one - 1);
    assert_int_equal(llmc_redis_shards_parse(r, "10.0.0.9", &m), 0);
    freeReplyObject(r);
    assert_int_equal(m.covered, 102);
    assert_int_equal(m.nnodes, 1);
    assert_int_equal(m.owner[99], LLMC_REDIS_NO_NODE);
    assert_int_equal(m.owner[201], LLMC_REDIS_NO_NODE);
    assert_string_equal(m.nodes[m.owner[300]].host, "10.0.0.9");
    assert_int_equal(m.nodes[m.owner[150]].port, 7000);

    static const char *const bad[] = {
        "-ERR unknown subcommand 'SHARDS'. Try CLUSTER HELP.\r\n", /* Redis 6 */
        ":1\r\n",
        "*1\r\n:1\r\n",
        /* slots not in pairs; reversed; past the last slot */
        "*1\r\n*4\r\n$5\r\nslots\r\n*1\r\n:1\r\n$5\r\nnodes\r\n*1\r\n" NODE(MASTER, ONLINE, "$1\r\nh\r\n", "1"),
        "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:2\r\n:1\r\n$5\r\nnodes\r\n*1\r\n" NODE(MASTER, ONLINE, "$1\r\nh\r\n", "1"),
        "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16384\r\n$5\r\nnodes\r\n*1\r\n" NODE(MASTER, ONLINE, "$1\r\nh\r\n", "1"),
        /* no master for slots; port 0; the map's keys odd */
        "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:1\r\n$5\r\nnodes\r\n*1\r\n" NODE(REPLICA, ONLINE, "$1\r\nh\r\n", "1"),
        "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:1\r\n$5\r\nnodes\r\n*1\r\n" NODE(MASTER, ONLINE, "$1\r\nh\r\n", "0"),
        "*1\r\n*3\r\n$5\r\nslots\r\n*2\r\n:0\r\n:1\r\n$5\r\nnodes\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = parse(bad[i], strlen(bad[i]));
        assert_int_equal(llmc_redis_shards_parse(r, "h", &m), LLMC_EIO);
        assert_int_equal(m.covered, 0);
        assert_int_equal(m.owner[0], LLMC_REDIS_NO_NODE);
        freeReplyObject(r);
    }
#undef NODE
#undef MASTER
#undef REPLICA
#undef ONLINE
#undef FAIL
}

static void test_map_nodes(void **state)
{
    (void)state;
    static llmc_redis_slot_map_t m;
    llmc_redis_map_init(&m);
    assert_int_equal(llmc_redis_map_node(&m, "a", 1, 1), 0);
    assert_int_equal(llmc_redis_map_node(&m, "a", 1, 2), 1);
    assert_int_equal(llmc_redis_map_node(&m, "a", 1, 1), 0);
    assert_int_equal(llmc_redis_map_node(&m, "", 0, 1), -1);
    char host[8];
    for (int i = 2; i < LLMC_REDIS_NODES_MAX; i++) {
        int n = snprintf(host, sizeof host, "n%d", i);
        assert_int_equal(llmc_redis_map_node(&m, host, (size_t)n, 1), i);
    }
    assert_int_equal(llmc_redis_map_node(&m, "full", 4, 1), -1);
}

static void test_redirects(void **state)
{
    (void)state;
    llmc_redis_redirect_t rd;
    /* As recorded (the error reply's text, after '-'). */
    assert_int_equal(llmc_redis_redirect_parse("MOVED 12182 127.0.0.1:17003", 27, &rd), 0);
    assert_false(rd.ask);
    assert_int_equal(rd.slot, 12182);
    assert_string_equal(rd.to.host, "127.0.0.1");
    assert_int_equal(rd.to.port, 17003);
    assert_int_equal(llmc_redis_redirect_parse("ASK 12182 127.0.0.1:17001", 25, &rd), 0);
    assert_true(rd.ask);
    assert_int_equal(rd.to.port, 17001);
    assert_int_equal(llmc_redis_redirect_parse("MOVED 1 ::1:7000", 16, &rd), 0);
    assert_string_equal(rd.to.host, "::1");
    assert_int_equal(llmc_redis_redirect_parse("MOVED 1 [fe80::1]:7000", 22, &rd), 0);
    assert_string_equal(rd.to.host, "fe80::1");
    assert_int_equal(llmc_redis_redirect_parse("MOVED 3 redis-2.internal:6379", 29, &rd), 0);
    assert_string_equal(rd.to.host, "redis-2.internal");

    static const char *const bad[] = {
        "MOVED", "MOVED ", "MOVED 16384 h:1", "MOVED 1 h", "MOVED 1 h:0", "MOVED 1 h:65536",
        "MOVED 1 :7000", "MOVED x h:1", "MOVED -1 h:1", "ERR wrong", "OOM command not allowed",
        "MOVED 1 h:1x", "ASK 1h:1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(llmc_redis_redirect_parse(bad[i], strlen(bad[i]), &rd), LLMC_EINVAL);
        assert_false(rd.ask); /* zeroed, also after "ASK " was read (found by fuzz_redis_cluster) */
        assert_int_equal(rd.to.port, 0);
    }
    assert_int_equal(llmc_redis_redirect_parse("MOVED 1 h:1\0x", 13, &rd), LLMC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_and_slots),
        cmocka_unit_test(test_slots_parse_recorded),
        cmocka_unit_test(test_slots_parse_holes_and_unknown_hosts),
        cmocka_unit_test(test_shards_parse_recorded),
        cmocka_unit_test(test_shards_parse_unknown_hosts_and_bad_replies),
        cmocka_unit_test(test_map_nodes),
        cmocka_unit_test(test_redirects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
