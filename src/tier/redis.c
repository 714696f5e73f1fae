/*
 * tier/redis.c: the Redis tier (tier/redis.h): a hiredis asynchronous
 * connection per event loop; a lookup is a GET, a fill a SET ... PX, a
 * key purge a DEL; values are the disk tier's records (llmc/record.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A loop's connection (conn_t) is touched by that loop's thread alone:
 *   attach makes it on the main thread before the loop runs, and every
 *   op names its worker. The threads share the configuration (read-only
 *   after open) and the counters (relaxed atomics).
 * - hiredis 0.14's asynchronous API has no timeouts. Every command is an
 *   op in its connection's FIFO (Redis answers in order, and hiredis calls
 *   back in that order); one timer per connection fires at the deadline of
 *   the oldest op someone waits on and answers it LLMC_ETIMEDOUT (a miss
 *   to the walk; explain tells it from an absent key). The op stays
 *   in the FIFO, nobody waiting, until its reply or the connection's end.
 *   The timer is lazy: a new op's deadline is never sooner than those
 *   before it, so it is started only when idle, and a fire with nothing
 *   due re-arms for what is next.
 * - The breaker: a connection whose lookups keep timing out
 *   (BREAKER_TIMEOUTS in a row, no answer in time between them) or whose
 *   oldest command has gone unanswered for stuck_ms is dropped and made
 *   again after a backoff that only an answer in time resets. While it is
 *   down, lookups miss without asking and writes are dropped.
 * - Our state changes before hiredis's teardown runs: conn_down() clears
 *   c->ac first, because the teardown calls back every op (NULL reply), a
 *   lookup's completion may go on to the disk tier, and a disk hit is
 *   promoted into this tier: that put() must find the connection down.
 * - hiredis 0.14 asserts (aborts the process) on a reply that no command
 *   asked for. The reader's object functions are wrapped so that such a
 *   reply fails the parse instead: the connection is dropped and made
 *   again, and the gateway lives.
 * - hiredis's connect resolves the host with a blocking getaddrinfo; the
 *   host is resolved with uv_getaddrinfo (the thread pool) and hiredis is
 *   given the address.
 * - The libuv glue is ours, not hiredis 0.14's adapters/libuv.h: libuv
 *   reports a socket error (a refused connect, a reset) as a poll status
 *   and stops the handle, and that adapter drops such a call, so a refused
 *   connect hung until our connect timeout and a broken socket until the
 *   stuck check. Ours lets hiredis try what it waited for and meet the
 *   error (as later hiredis releases do). It also writes what a loop
 *   pass queued in one write, before the loop polls (ev_flush), instead
 *   of asking for POLLOUT first: two epoll_ctl and a wake-up less per batch.
 * - The log tells the whole tier's state changes, not each loop's: the
 *   first connection up says "connected", the last one lost says "lost",
 *   and failed attempts while down are told once. Per-request trouble is
 *   only counted.
 * - Cross-gateway coalescing is a lease per key: one Lua script reads
 *   the value and, when there is none, takes prefix + "lease:" + hex with
 *   SET NX PX, so that a fill landing between a lookup and the lease is
 *   found instead of fetched twice. The holder refreshes its lease while
 *   its call runs and gives it back (compare-and-delete, so never someone
 *   else's) after its answer is stored; the SET of the answer goes first
 *   on the same connection, so a waiter sees the answer before the lease
 *   disappears. Waiters ask again every LEASE_POLL_MS: the answer (a
 *   fill), the lease (its holder gave up or died), or wait on, until their
 *   max_wait. Any fault answers LLMC_LEASE_NONE: call the model.
 * - Purges: by key, a DEL; by any other selector, a SCAN over the
 *   prefix a batch at a time, each record read and checked (see "purges
 *   by selector" below). The purge answers with what Redis removed.
 * - Invalidations between gateways: every fill publishes "<id> R <key>"
 *   and every purge "<id> P <selector JSON>" on prefix + "invalidate",
 *   on the connection that did the work and after it (a peer that hears
 *   finds Redis already changed). One subscriber connection per process,
 *   on worker 0's loop, hands the others' messages to peer_purge, which
 *   purges every tier but this one: nothing is published back, and our
 *   own messages (id = the token seed) are skipped. A peer's fill is not
 *   logged as a purge by the set (one per fill would roll its short log
 *   over); a peer's purge is. Messages published while the subscriber
 *   was down are lost to it: when it listens again, every local copy is
 *   dropped (resync()).
 * - Redis Cluster (a comma list of seeds): see "Redis Cluster: routing".
 *   Keys become prefix{hex} and lease keys prefix lease:{hex}: one slot
 *   for both, which the lease script needs (EVAL refuses keys of two
 *   slots). conns[worker] is then the first seed's connection; the
 *   worker's node connections live in wn[worker].
 */
#include <arpa/inet.h>
#include <assert.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <uv.h>

#include "llmc/error.h"
#include "llmc/record.h"
#include "tier/redis.h"
#include "tier/redis_cluster.h"
#include "tier/redis_int.h"

#define DEFAULT_PREFIX     "llmc:"
#define DEFAULT_TIMEOUT_MS 50
#define CONNECT_TIMEOUT_MS 1000           /* resolve + connect + AUTH/SELECT/PING */
#define BACKOFF_MIN_MS     50
#define BACKOFF_MAX_MS     2000
#define BREAKER_TIMEOUTS   8
#define STUCK_MIN_MS       1000           /* stuck_ms: this, or 10 timeouts if longer */
#define OPS_MAX            4096           /* commands in the air per connection */
/* The longest array a reply may declare. The longest we ask for: CLUSTER
   SLOTS of a slot space in single-slot ranges (16384), a SCAN step's keys
   (about SCAN_COUNT). */
#define REPLY_ARRAY_MAX    65536
#define VALUE_MAX          (512u << 20)   /* Redis's largest string by default */
#define KEY_MAX            (LLMC_REDIS_PREFIX_MAX + 6 + 2 * LLMC_KEY_LEN + 3) /* + "lease:", {} */
#define LEASE_MS           5000           /* a held lease lives this long unless refreshed */
#define LEASE_REFRESH_MS   (LEASE_MS / 3)
#define LEASE_POLL_MS      25             /* a waiter asks again this often */
#define SCAN_COUNT         "256"          /* keys a SCAN step looks at: a purge's batch */
#define CHANNEL            "invalidate"   /* after the prefix: where invalidations go */
#define ID_LEN             16             /* hex digits naming this process in a message */
#define MAP_MIN_MS         100            /* Cluster: a worker asks for the slot map at most this often */
#define NODE_CONNS_MAX     (2 * LLMC_REDIS_NODES_MAX) /* Cluster: connections a worker may make */

/* KEYS: the answer's key, the lease's; ARGV: our token, the lease's PX.
   The answer when there is one; else 1 when the lease is ours, 0 when
   someone else holds it. */
static const char acquire_lua[] =
    "local v = redis.call('GET', KEYS[1]) if v then return v end "
    "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0";
/* KEYS: the lease; ARGV: our token (and the PX): only our own lease. */
static const char release_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
static const char refresh_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";

/* X(field, "name", KIND, "unit", "help"): this tier's own counters. */
#define REDIS_XSTATS_TABLE(X)                                                                \
    X(connected, "connected", GAUGE, "connections",                                        \
      "Connections up: one per event loop when all is well (on a Cluster, one per master "  \
      "and seed per loop).")                                                                \
    X(connects, "connects", COUNTER, "connections",                                        \
      "Connections made ready: the first ones and every reconnect.")                        \
    X(connect_failures, "connect_failures", COUNTER, "attempts",                           \
      "Connection attempts that failed: unresolvable, refused, timed out, AUTH or SELECT "  \
      "refused.")                                                                           \
    X(disconnects, "disconnects", COUNTER, "connections",                                  \
      "Ready connections lost: closed by Redis, a broken reply, or dropped by the breaker.") \
    X(breaker_trips, "breaker_trips", COUNTER, "connections",                              \
      "Connections dropped because lookups kept timing out or a command went unanswered.")  \
    X(timeouts, "timeouts", COUNTER, "lookups", "Lookups answered as a miss after --redis-timeout.") \
    X(error_replies, "error_replies", COUNTER, "commands",                                 \
      "Commands Redis answered with an error (OOM, READONLY, WRONGTYPE...).")               \
    X(corrupt, "corrupt", COUNTER, "values",                                               \
      "Values that are not a record of this key and format (each a miss).")                 \
    X(bad_replies, "bad_replies", COUNTER, "replies",                                      \
      "Replies the reader refused (one no command asked for, an array declaring more than "  \
      "65536 elements): each dropped the connection, made again after a backoff.")           \
    X(unasked, "unasked", COUNTER, "lookups",                                              \
      "Lookups missed at once: no connection up, or too many commands in the air.")         \
    X(leases_won, "leases/won", COUNTER, "misses",                                         \
      "Misses that took the lease: this gateway called the model for every gateway.")       \
    X(leases_waited, "leases/waited", COUNTER, "misses",                                   \
      "Misses that found the lease held elsewhere and waited for its answer.")              \
    X(leases_filled, "leases/filled", COUNTER, "misses",                                   \
      "Misses answered by another gateway's call (no model call here).")                    \
    X(leases_none, "leases/none", COUNTER, "misses",                                       \
      "Misses that called the model without a lease (Redis down or slow, a wait too long).") \
    X(subscribed, "invalidations/subscribed", GAUGE, "connections",                        \
      "1 while this process listens to the other gateways' invalidations.")                 \
    X(inval_sent, "invalidations/sent", COUNTER, "messages",                               \
      "Invalidations published: a purge here, or a new answer stored for a key.")           \
    X(inval_received, "invalidations/received", COUNTER, "messages",                       \
      "Other gateways' invalidations applied to this process's other tiers.")               \
    X(inval_bad, "invalidations/bad", COUNTER, "messages",                                 \
      "Messages on the invalidation channel that were not an invalidation (ignored).")      \
    X(resyncs, "invalidations/resyncs", COUNTER, "times",                                  \
      "Listening again after a loss: messages may have been missed, so every local copy "   \
      "was dropped (the answers stay in Redis).")                                           \
    X(scanned, "purge/scanned", COUNTER, "keys",                                           \
      "Keys a purge by selector read from Redis to check (SCAN, then GET).")                \
    X(lat_count, "latency/lookups", COUNTER, "lookups",                                    \
      "Lookups Redis answered (the count latency/sum_us adds up).")                         \
    X(lat_sum_us, "latency/sum_us", COUNTER, "microseconds",                               \
      "Time from sending a lookup to its answer, summed: divide by latency/lookups.")       \
    X(lat_max_us, "latency/max_us", GAUGE, "microseconds",                                 \
      "The slowest lookup Redis answered.")                                                 \
    X(moved, "cluster/moved", COUNTER, "replies",                                          \
      "Cluster: MOVED redirects followed (the slot map is updated and asked again).")        \
    X(asked, "cluster/ask", COUNTER, "replies",                                            \
      "Cluster: ASK redirects followed (a slot being migrated).")                           \
    X(map_loads, "cluster/slot_maps", COUNTER, "replies",                                  \
      "Cluster: slot maps read from CLUSTER SHARDS, or SLOTS before Redis 7 (at start, after a " \
      "redirect or a node lost).")                                                          \
    X(vec_published, "semantic/published", COUNTER, "questions",                           \
      "Questions of this gateway's semantic tier added to the shared stream (XADD).")       \
    X(vec_publish_failures, "semantic/publish_failures", COUNTER, "questions",             \
      "Questions not added to the stream: no connection, an error reply or none (the peers " \
      "miss them).")                                                                        \
    X(vec_reads, "semantic/reads", COUNTER, "replies", "Reads of the stream answered (XREAD).") \
    X(vec_read_failures, "semantic/read_failures", COUNTER, "reads",                       \
      "Reads of the stream not sent (no connection) or answered with an error or not at all " \
      "(asked again at the next poll).")                                                    \
    X(vec_answers_gone, "semantic/answers_gone", COUNTER, "questions",                     \
      "Peers' questions whose answer Redis no longer has (purged, expired): not indexed.")  \
    X(vec_answer_failures, "semantic/answer_failures", COUNTER, "questions",               \
      "Peers' questions not indexed because reading their answer failed (no connection, an " \
      "error, no reply, not a record of the key).")                                         \
    X(vec_rereads, "semantic/rereads", COUNTER, "times",                                   \
      "Reads of the stream started again from its beginning after listening again (the "    \
      "peers' questions were dropped with every local copy).")                              \
    X(vec_bad_entries, "semantic/bad_entries", COUNTER, "entries",                         \
      "Stream entries skipped as unreadable: not an entry's shape, no question, or a "      \
      "question record that fails its checks (another version, damage).")

typedef struct redis_xstats {
    REDIS_XSTATS_TABLE(LLMC_STAT_FIELD)
} redis_xstats_t;

#define LLMC_STAT_TYPE redis_xstats_t
static const llmc_stat_desc_t xstats_desc[] = {REDIS_XSTATS_TABLE(LLMC_STAT_DESC)};
#undef LLMC_STAT_TYPE

/* Each node's share of the connection counters (/stats tiers.redis.nodes,
   one row per host:port connected to: the server, or each Cluster master). */
#define REDIS_NSTATS_TABLE(X)                                                              \
    X(connected, "connected", GAUGE, "connections",                                        \
      "Connections to this node up now (one per event-loop thread).")                       \
    X(connects, "connects", COUNTER, "connections", "Connections to this node made ready.") \
    X(connect_failures, "connect_failures", COUNTER, "attempts",                           \
      "Attempts to connect to this node that failed.")                                      \
    X(disconnects, "disconnects", COUNTER, "connections", "Ready connections to this node lost.") \
    X(timeouts, "timeouts", COUNTER, "lookups", "Lookups sent to this node that timed out.") \
    X(error_replies, "error_replies", COUNTER, "commands",                                 \
      "Commands this node answered with an error.")

typedef struct redis_nstats {
    REDIS_NSTATS_TABLE(LLMC_STAT_FIELD)
} redis_nstats_t;

#define LLMC_STAT_TYPE redis_nstats_t
static const llmc_stat_desc_t nstats_desc[] = {REDIS_NSTATS_TABLE(LLMC_STAT_DESC)};
#undef LLMC_STAT_TYPE

/* One node's counters, shared by every thread's connections to it. A row
   is added (under nodes_lock) when a connection first names its host:port
   and never removed, so that a node lost stays visible. */
#define NODE_STATS_MAX (2 * LLMC_REDIS_NODES_MAX)
static_assert(NODE_STATS_MAX <= LLMC_TIER_ROWS_MAX, "/stats shows every node's row");
typedef struct nstat {
    char name[LLMC_TIER_ROW_NAME_MAX];
    _Atomic uint64_t connected, connects, connect_failures, disconnects, timeouts, error_replies;
} nstat_t;

typedef struct redis redis_t;
typedef struct conn conn_t;
typedef struct scan scan_t;
typedef struct wnodes wnodes_t;

enum op_kind {
    OP_HELLO,  /* AUTH or SELECT: an error reply drops the connection */
    OP_READY,  /* the PING whose PONG makes the connection ready */
    OP_GET,
    OP_SET,
    OP_DEL,
    OP_LEASE,  /* the acquire script, for a lease that waits on it */
    OP_FIRE,   /* a lease's refresh or release, a PUBLISH: nobody waits */
    OP_SCAN,   /* a purge's SCAN step */
    OP_SGET,   /* a purge reads a key the SCAN found */
    OP_SDEL,   /* a purge deletes what it selected */
    OP_SLOTS,  /* Cluster: CLUSTER SHARDS (or SLOTS), for the worker's slot map */
    OP_EXT,    /* another file's command (redis_int.h): its callback gets the reply */
};

typedef struct op {
    struct op *next;              /* the FIFO */
    conn_t *c;
    enum op_kind kind;
    bool waited;                  /* lk or done still to be answered */
    const char *what;             /* OP_HELLO: "AUTH" or "SELECT"; OP_SLOTS: "SHARDS" or "SLOTS" */
    llmc_tier_lookup_t *lk;       /* OP_GET */
    llmc_tier_purge_cb done;      /* OP_DEL */
    void *arg;
    struct lease *lease;          /* OP_LEASE, until the lease is answered or ended */
    scan_t *scan;                 /* OP_SCAN, OP_SGET, OP_SDEL */
    llmc_key_t key;               /* OP_SGET */
    llmc_entry_t *entry;          /* OP_SET on a Cluster: a ref, to send again when redirected */
    int64_t px;                   /* OP_SET on a Cluster: the PX it was sent with */
    uint64_t sent_ms, deadline_ms; /* the loop's clock */
    uint64_t sent_ns;             /* OP_GET: uv_hrtime(), for the latency figures */
    llmc__redis_ext_cb ext;       /* OP_EXT */
    struct ext_cmd *xcmd;         /* OP_EXT on a Cluster: its command, to send again when redirected */
} op_t;

/* A copy of another file's command (one allocation: argv and lens point
   into it), for a redirect to send again. */
typedef struct ext_cmd {
    int argc;
    const char **argv;
    size_t *lens;
} ext_cmd_t;

typedef enum cstate {
    C_DOWN,        /* waiting for the retry timer */
    C_RESOLVING,   /* uv_getaddrinfo */
    C_CONNECTING,  /* TCP, then AUTH/SELECT/PING answered */
    C_UP,
    C_DETACHED,    /* shut down: nothing more starts */
} cstate_t;

struct conn {
    redis_t *r;
    unsigned worker;
    bool sub;                     /* the subscriber: SUBSCRIBE once ready, nothing else */
    uv_loop_t *loop;
    char host[LLMC_REDIS_HOST_MAX]; /* the node it talks to */
    int port;
    char port_str[8];
    unsigned seed_next;           /* Cluster subscriber: the seed its next attempt tries */
    unsigned subscriptions;       /* the subscriber: SUBSCRIBEs confirmed so far */
    conn_t *next_node;            /* Cluster: the worker's other node connections */
    nstat_t *ns;                  /* its node's counters; NULL when the table is full */
    cstate_t state;
    redisAsyncContext *ac;        /* while CONNECTING or UP */
    uv_timer_t retry;             /* DOWN: the next attempt; else the connect deadline */
    uv_timer_t deadline;          /* the oldest waited op's deadline, the stuck check */
    uv_getaddrinfo_t gai;
    bool resolving;               /* gai is in use (also after its attempt was given up) */
    unsigned open_handles;        /* timers not yet closed */
    op_t *head, *tail;            /* commands sent, oldest first */
    op_t *waited;                 /* the oldest op with waited set */
    size_t nops;
    uint64_t due_ms;              /* when the deadline timer fires, while active */
    uint64_t backoff_ms;
    unsigned timeouts_in_row;
    const char *bad_reply;        /* why the reader refused a reply (the guard), or NULL */
    unsigned rng;
    struct lease *leases;         /* asked, waiting or held on this loop */
};

typedef struct lease {
    struct lease *prev, *next;    /* the connection's leases */
    conn_t *c;
    llmc_tier_lease_t *ls;        /* the caller's, until answered, or ended when held */
    bool held, waited;
    op_t *op;                     /* its acquire in the air, or NULL */
    uv_timer_t timer;             /* waiting: the next ask; held: the refresh */
    uint64_t give_up_ms;          /* loop time past which it stops waiting */
    char token[48];
    size_t token_len;
    bool asking;                  /* Cluster: its slot migrates to c's node (ASK): ASKING first */
} lease_t;

struct redis {
    llmc_tier_t tier;
    llmc_redis_url_t url;
    char where[LLMC_REDIS_HOST_MAX + 48]; /* redis://host:port/db: no credentials */
    char prefix[LLMC_REDIS_PREFIX_MAX + 1];
    size_t prefix_len;
    uint64_t timeout_ms, stuck_ms;
    void (*log)(void *arg, const char *msg);
    void *log_arg;
    conn_t **conns;               /* by worker; grown by attach on the main thread */
    unsigned nconns;
    redisReplyObjectFunctions plain, guarded;
    _Atomic unsigned up;          /* connections up */
    atomic_bool down_told;        /* "cannot connect" or "lost" said since the last "connected" */
    _Atomic uint64_t hits, misses, stored, purged, dropped;
    _Atomic uint64_t connects, connect_failures, disconnects, breaker_trips, timeouts,
        error_replies, corrupt, unasked, bad_replies;
    _Atomic uint64_t leases_won, leases_waited, leases_filled, leases_none;
    uint64_t token_seed;          /* makes lease tokens unique to this process */
    _Atomic uint64_t token_next;
    /* Invalidations: published on chan by every connection, heard by sub
       (worker 0's loop) and applied through peer_purge. */
    conn_t *sub;
    char chan[LLMC_REDIS_PREFIX_MAX + sizeof(CHANNEL)];
    size_t chan_len;
    char self_id[ID_LEN + 1];     /* token_seed in hex: our own messages are skipped */
    void (*peer_purge)(void *arg, llmc_tier_t *from, unsigned worker, const llmc_purge_t *sel,
                       bool logged);
    void *peer_purge_arg;
    atomic_bool subscribed;
    _Atomic uint64_t inval_sent, inval_received, inval_bad, scanned, resyncs;
    _Atomic uint64_t lat_count, lat_sum_us, lat_max_us;
    /* Cluster: keys are prefix{hex} so that a key and its lease share a
       slot; each worker has its own slot map and node connections. */
    const char *tag_open, *tag_close; /* "{" "}", or "" "" on one node */
    wnodes_t **wn;                /* by worker, like conns; NULL on one node */
    _Atomic uint64_t moved, asked, map_loads;
    nstat_t *nodes;               /* NODE_STATS_MAX rows, the first nnodes in use */
    _Atomic unsigned nnodes;
    uv_mutex_t nodes_lock;        /* adding a row */
    llmc__redis_part_t part;      /* shared semantic questions (redis_vec.c); attach NULL: none */
    llmc__redis_vec_stats_t vec;  /* its counters, shown in this tier's table */
};

/* Cluster: one worker's view. Touched by that worker's loop thread alone. */
struct wnodes {
    llmc_redis_slot_map_t map;
    llmc_redis_slot_map_t next;   /* a CLUSTER SHARDS or SLOTS reply is parsed here first */
    conn_t *conn_of[LLMC_REDIS_NODES_MAX]; /* map.nodes[i]'s connection */
    conn_t *nodes;                /* every node connection made, by next_node */
    unsigned nnodes;
    op_t *slots_op;               /* CLUSTER SHARDS or SLOTS in the air */
    bool stale;                   /* a new map is wanted */
    bool no_shards;               /* a node refused CLUSTER SHARDS (Redis < 7): SLOTS from then on */
    uint64_t asked_ms;            /* when the slot map was last asked for */
};

static void count(_Atomic uint64_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }
static uint64_t load(_Atomic uint64_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }

/* Counts on r's counter and on the node's of connection c. */
#define COUNT_NODE(c, field)        \
    do {                            \
        count(&(c)->r->field);      \
        if ((c)->ns)                \
            count(&(c)->ns->field); \
    } while (0)

static redis_t *impl(llmc_tier_t *t)
{
    return t->impl;
}

static void tell(redis_t *r, const char *fmt, ...)
{
    char msg[600];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r->log)
        r->log(r->log_arg, msg);
    else
        fprintf(stderr, "llmcached: %s\n", msg);
}

/* ---- keys and values ------------------------------------------------------- */

/* Writes at out: what, then the key's 64 hex digits in the hashtag's
   braces (Cluster only); returns the length. */
static size_t put_hex(const redis_t *r, const llmc_key_t *key, char *out)
{
    size_t o = strlen(r->tag_open), c = strlen(r->tag_close);

    memcpy(out, r->tag_open, o);
    llmc_key_hex(key, out + o);
    memcpy(out + o + 2 * LLMC_KEY_LEN, r->tag_close, c);
    return o + 2 * LLMC_KEY_LEN + c;
}

/* Writes prefix + 64 hex digits ({hex} on a Cluster) into out (KEY_MAX
   bytes); returns the length. */
static size_t make_key(const redis_t *r, const llmc_key_t *key, char *out)
{
    memcpy(out, r->prefix, r->prefix_len);
    return r->prefix_len + put_hex(r, key, out + r->prefix_len);
}

/* The key of key's lease: prefix + "lease:" + 64 hex digits ({hex} on a
   Cluster: the same slot as the key, which the lease script needs). */
static size_t make_lease_key(const redis_t *r, const llmc_key_t *key, char *out)
{
    memcpy(out, r->prefix, r->prefix_len);
    memcpy(out + r->prefix_len, "lease:", 6);
    return r->prefix_len + 6 + put_hex(r, key, out + r->prefix_len + 6);
}

/* Where the key's hex starts in a key make_key wrote. */
static size_t hex_at(const redis_t *r)
{
    return r->prefix_len + strlen(r->tag_open);
}

/* The lifetime to give e's key at now_ms (SET ... PX): its freshness left,
   or 0 when none is left and it is not to be written. */
static int64_t px_for(const llmc_entry_t *e, int64_t now_ms)
{
    return e->expires_ms > now_ms ? e->expires_ms - now_ms : 0;
}

/*
 * What a GET's reply means for key: 0 and a new entry in *out (a hit);
 * LLMC_ENOENT (nil: a miss); LLMC_ECORRUPT or LLMC_EVERSION (a value that
 * is not a record of this key and format); LLMC_EIO (an error reply, or a
 * reply of a type GET never answers). Never trusts the value's bytes.
 */
static int value_decode(const llmc_key_t *key, const redisReply *reply, llmc_entry_t **out)
{
    *out = NULL;
    switch (reply->type) {
    case REDIS_REPLY_NIL:
        return LLMC_ENOENT;
    case REDIS_REPLY_STRING:
        return llmc_record_decode(key, (const uint8_t *)reply->str, reply->len, out);
    default:
        return LLMC_EIO;
    }
}

/* ---- the reader guard ------------------------------------------------------ */

/* True when a command waits for the reply being built. Every task carries
   the reader's privdata, which is the async context. */
static bool asked(const redisReadTask *task)
{
    const redisAsyncContext *ac = task->privdata;

    /* Once subscribed, hiredis routes the messages to SUBSCRIBE's callback. */
    if (task->parent || ac->replies.head || (ac->c.flags & REDIS_SUBSCRIBED))
        return true;
    conn_t *c = ac->data;
    if (!c->bad_reply)
        count(&c->r->bad_replies); /* once: the parse fails, the connection goes */
    c->bad_reply = "a reply no command asked for";
    return false;
}

static const redisReplyObjectFunctions *plain_of(const redisReadTask *task)
{
    const redisAsyncContext *ac = task->privdata;
    return &((conn_t *)ac->data)->r->plain;
}

static void *guard_string(const redisReadTask *task, char *s, size_t len)
{
    return asked(task) ? plain_of(task)->createString(task, s, len) : NULL;
}

/* hiredis 0.14 callocs the element pointers of an array as soon as its
   header is read, before any element comes: a header is a protocol error
   past REPLY_ARRAY_MAX, so that "*2000000000" from a broken or hostile
   server costs a reconnect, not gigabytes. */
static void *guard_array(const redisReadTask *task, int n)
{
    const redisAsyncContext *ac = task->privdata;
    conn_t *c = ac->data;

    if (n > REPLY_ARRAY_MAX) {
        if (!c->bad_reply)
            count(&c->r->bad_replies);
        c->bad_reply = "a reply declaring an array longer than the tier's limit";
        return NULL;
    }
    return asked(task) ? plain_of(task)->createArray(task, n) : NULL;
}

static void *guard_integer(const redisReadTask *task, long long v)
{
    return asked(task) ? plain_of(task)->createInteger(task, v) : NULL;
}

static void *guard_nil(const redisReadTask *task)
{
    return asked(task) ? plain_of(task)->createNil(task) : NULL;
}

/* ---- hiredis on a libuv loop ----------------------------------------------- */

typedef struct uvev {
    redisAsyncContext *ac;        /* NULL once hiredis let go (cleanup) */
    uv_poll_t poll;
    uv_idle_t flush;              /* writes what the loop pass queued, once */
    int events;                   /* what the poll handle watches */
    bool flushing;                /* in flush's write: a rest to write waits for POLLOUT */
    unsigned open;                /* handles not yet closed */
} uvev_t;

static void ev_poll(uv_poll_t *h, int status, int events)
{
    uvev_t *p = h->data;
    /* An error stopped the handle: hiredis finds it by doing what it
       waited for. Each call may end the context, which clears p->ac. */
    int ev = status < 0 ? p->events : events;

    if (p->ac && (ev & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void ev_set(uvev_t *p, int events)
{
    if (events == p->events)
        return;
    p->events = events;
    if (events)
        uv_poll_start(&p->poll, events, ev_poll);
    else
        uv_poll_stop(&p->poll);
}

/* The commands queued since the last pass, in one write. A connected
   socket nearly always takes them at once, so waiting for POLLOUT first
   would cost two epoll_ctl and a wake-up per batch; only a rest the kernel
   did not take waits for it (hiredis asks for the write again). An idle
   handle runs before the loop polls, and keeps that poll from sleeping
   while it is active, so a command queued anywhere in a pass goes out
   before the loop waits. */
static void ev_flush(uv_idle_t *h)
{
    uvev_t *p = h->data;

    uv_idle_stop(&p->flush);
    if (!p->ac)
        return;
    p->flushing = true;
    redisAsyncHandleWrite(p->ac); /* may end the context: p stays until closed */
    p->flushing = false;
}

static void ev_add_read(void *arg) { ev_set(arg, ((uvev_t *)arg)->events | UV_READABLE); }
static void ev_del_read(void *arg) { ev_set(arg, ((uvev_t *)arg)->events & ~UV_READABLE); }

static void ev_add_write(void *arg)
{
    uvev_t *p = arg;

    /* Connecting: POLLOUT is how hiredis learns the connect is done. */
    if ((p->events & UV_WRITABLE) || p->flushing || !(p->ac->c.flags & REDIS_CONNECTED))
        ev_set(p, p->events | UV_WRITABLE);
    else if (!uv_is_active((uv_handle_t *)&p->flush))
        uv_idle_start(&p->flush, ev_flush);
}

static void ev_del_write(void *arg)
{
    uvev_t *p = arg;

    uv_idle_stop(&p->flush);
    ev_set(p, p->events & ~UV_WRITABLE);
}

static void ev_closed(uv_handle_t *h)
{
    uvev_t *p = h->data;

    if (--p->open == 0)
        free(p);
}

/* hiredis is done with the socket (it closes it after this returns). */
static void ev_cleanup(void *arg)
{
    uvev_t *p = arg;

    p->ac = NULL;
    uv_close((uv_handle_t *)&p->poll, ev_closed);
    uv_close((uv_handle_t *)&p->flush, ev_closed);
}

/* Watches ac's socket on loop. 0, or -1 (out of memory, or libuv refused
   the descriptor): then ac is still the caller's to free. */
static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    uvev_t *p = calloc(1, sizeof(*p));

    if (!p)
        return -1;
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return -1;
    }
    uv_idle_init(loop, &p->flush);
    p->open = 2;
    p->ac = ac;
    p->poll.data = p;
    p->flush.data = p;
    ac->ev.data = p;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* ---- the op FIFO ----------------------------------------------------------- */

static void on_deadline(uv_timer_t *t);
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* The first op from op on that someone waits on, or NULL. */
static op_t *next_waited(op_t *op)
{
    while (op && !op->waited)
        op = op->next;
    return op;
}

/* Sets the deadline timer to fire at due_ms unless it fires sooner. */
static void arm(conn_t *c, uint64_t due_ms)
{
    uint64_t now = uv_now(c->loop);

    if (uv_is_active((uv_handle_t *)&c->deadline) && c->due_ms <= due_ms)
        return;
    c->due_ms = due_ms;
    uv_timer_start(&c->deadline, on_deadline, due_ms > now ? due_ms - now : 0, 0);
}

/* Sends a command on c (which has an ac). The op, in the FIFO, or NULL
   (out of memory, or hiredis refused: the connection is closing). An
   idle connection's timer is set for the stuck check. */
static op_t *send_cmd(conn_t *c, enum op_kind kind, int argc, const char **argv, const size_t *lens)
{
    op_t *op = calloc(1, sizeof(*op));

    if (!op)
        return NULL;
    op->c = c;
    op->kind = kind;
    op->sent_ms = uv_now(c->loop);
    if (redisAsyncCommandArgv(c->ac, on_reply, op, argc, argv, lens) != REDIS_OK) {
        free(op);
        return NULL;
    }
    if (c->tail)
        c->tail->next = op;
    else
        c->head = op;
    c->tail = op;
    c->nops++;
    if (!uv_is_active((uv_handle_t *)&c->deadline))
        arm(c, op->sent_ms + c->r->stuck_ms);
    return op;
}

/* Someone waits on op until its deadline. */
static void watch(conn_t *c, op_t *op)
{
    op->waited = true;
    op->deadline_ms = op->sent_ms + c->r->timeout_ms;
    if (!c->waited)
        c->waited = op;
    arm(c, op->deadline_ms);
}

/* Takes the head op (whose reply came) off the FIFO. */
static void pop(conn_t *c, op_t *op)
{
    assert(op == c->head);
    c->head = op->next;
    if (!c->head)
        c->tail = NULL;
    c->nops--;
    if (c->waited == op)
        c->waited = next_waited(op->next);
}

static void op_free(op_t *op)
{
    if (op->entry)
        llmc_entry_unref(op->entry);
    free(op->xcmd);
    free(op);
}

/* worker's connection when it may take a command now, else NULL. */
static conn_t *ready_conn(redis_t *r, unsigned worker)
{
    conn_t *c = worker < r->nconns ? r->conns[worker] : NULL;

    return c && c->state == C_UP && c->nops < OPS_MAX ? c : NULL;
}

/* ---- connection state ------------------------------------------------------ */

static void on_conn_timer(uv_timer_t *t);

static uint64_t next_backoff(conn_t *c)
{
    uint64_t b = c->backoff_ms, half = b / 2;

    c->backoff_ms = b * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b * 2;
    /* Jitter, so that the loops of many gateways do not knock together. */
    return half + (uint64_t)rand_r(&c->rng) % (half + 1);
}

/*
 * c is down from now on: no ac, the retry timer set, the change told.
 * Returns the context it held, which the caller frees when hiredis is
 * not already tearing it down. Every op still in the FIFO is answered by
 * that teardown.
 */
static redisAsyncContext *conn_down(conn_t *c, const char *why)
{
    redis_t *r = c->r;
    redisAsyncContext *ac = c->ac;
    bool was_up = c->state == C_UP;

    assert(c->state != C_DETACHED);
    c->ac = NULL;
    c->state = C_DOWN;
    c->timeouts_in_row = 0;
    uv_timer_stop(&c->deadline);
    uv_timer_start(&c->retry, on_conn_timer, next_backoff(c), 0);
    if (c->sub) {
        /* The lookup connections tell the state changes; this one is
           only shown (invalidations/subscribed). */
        atomic_store(&r->subscribed, false);
        return ac;
    }
    if (was_up) {
        COUNT_NODE(c, disconnects);
        if (c->ns)
            atomic_fetch_sub(&c->ns->connected, 1);
        if (atomic_fetch_sub(&r->up, 1) == 1 && !atomic_exchange(&r->down_told, true))
            tell(r, "redis: lost the connection to %s (%s); lookups miss and writes are "
                 "dropped until it is back", r->where, why);
    } else {
        COUNT_NODE(c, connect_failures);
        if (atomic_load(&r->up) == 0 && !atomic_exchange(&r->down_told, true))
            tell(r, "redis: cannot connect to %s (%s); retrying", r->where, why);
    }
    return ac;
}

/* We give up on c's connection: down, and its context freed (at once, or
   when the hiredis callback we are in returns). */
static void conn_drop(conn_t *c, const char *why)
{
    redisAsyncContext *ac = conn_down(c, why);
    if (ac)
        redisAsyncFree(ac);
}

static void subscribe(conn_t *c);
static void want_map(wnodes_t *w, uint64_t now);

static void conn_ready(conn_t *c)
{
    redis_t *r = c->r;

    c->state = C_UP;
    uv_timer_stop(&c->retry);
    if (c->sub) {
        subscribe(c);
        return;
    }
    if (r->wn && (r->wn[c->worker]->stale || !r->wn[c->worker]->map.covered))
        want_map(r->wn[c->worker], uv_now(c->loop));
    COUNT_NODE(c, connects);
    if (c->ns)
        atomic_fetch_add(&c->ns->connected, 1);
    if (atomic_fetch_add(&r->up, 1) == 0) {
        atomic_store(&r->down_told, false);
        tell(r, "redis: connected to %s", r->where);
    }
}

/* Where hiredis tells of a connection it ends itself: a failed connect
   (before it frees the context) and a loss (after it answered the ops). */
static void on_connected(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;

    if (status != REDIS_OK && c->ac == ac)
        conn_down(c, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_disconnected(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;

    if (c->ac == ac)
        conn_down(c, c->bad_reply     ? c->bad_reply
                     : ac->errstr[0]  ? ac->errstr
                                      : "closed");
}

/* Sends what makes a new connection ready: AUTH and SELECT when the URL
   asks for them, then the PING whose answer says it is. */
static void handshake(conn_t *c)
{
    const llmc_redis_url_t *u = &c->r->url;
    char db[16];
    op_t *op;

    if (u->password[0]) {
        /* AUTH user password (Redis 6 ACLs), or AUTH password. */
        const char *argv[] = {"AUTH", u->user, u->password};
        size_t lens[] = {4, strlen(u->user), strlen(u->password)};
        int argc = 3;
        if (!u->user[0]) {
            argv[1] = argv[2];
            lens[1] = lens[2];
            argc = 2;
        }
        if (!(op = send_cmd(c, OP_HELLO, argc, argv, lens)))
            goto fail;
        op->what = "AUTH";
    }
    if (u->db) {
        int n = snprintf(db, sizeof(db), "%d", u->db);
        const char *argv[] = {"SELECT", db};
        size_t lens[] = {6, (size_t)n};
        if (!(op = send_cmd(c, OP_HELLO, 2, argv, lens)))
            goto fail;
        op->what = "SELECT";
    }
    const char *ping[] = {"PING"};
    size_t plen[] = {4};
    if (send_cmd(c, OP_READY, 1, ping, plen))
        return;
fail:
    conn_drop(c, "could not send the handshake");
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    conn_t *c = req->data;
    redis_t *r = c->r;
    char ip[INET6_ADDRSTRLEN] = "";
    redisAsyncContext *ac;

    c->resolving = false;
    if (status == 0 && res) {
        const void *a = res->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
        inet_ntop(res->ai_family, a, ip, sizeof(ip));
    }
    uv_freeaddrinfo(res);
    if (c->state != C_RESOLVING)
        return; /* given up (the connect deadline) or detached meanwhile */
    if (status < 0 || !ip[0]) {
        conn_down(c, status < 0 ? uv_strerror(status) : "no address");
        return;
    }
    ac = redisAsyncConnect(ip, c->port);
    if (!ac || ac->err) {
        char why[160];
        snprintf(why, sizeof(why), "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        conn_down(c, why);
        return;
    }
    ac->data = c;
    ac->c.reader->privdata = ac;
    ac->c.reader->fn = &r->guarded;
    if (ev_attach(ac, c->loop) < 0) {
        redisAsyncFree(ac);
        conn_down(c, "could not watch the socket");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connected);
    redisAsyncSetDisconnectCallback(ac, on_disconnected);
    c->ac = ac;
    c->state = C_CONNECTING;
    c->bad_reply = NULL;
    handshake(c);
}

/* The counters row of host:port, added if new; NULL when the table is
   full (the node is then counted in the totals only). Any thread. */
static nstat_t *node_stat(redis_t *r, const char *host, int port)
{
    char name[LLMC_TIER_ROW_NAME_MAX];
    nstat_t *ns = NULL;
    unsigned n;

    snprintf(name, sizeof(name), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    uv_mutex_lock(&r->nodes_lock);
    n = atomic_load_explicit(&r->nnodes, memory_order_relaxed);
    for (unsigned i = 0; i < n && !ns; i++)
        if (strcmp(r->nodes[i].name, name) == 0)
            ns = &r->nodes[i];
    if (!ns && n < NODE_STATS_MAX) {
        ns = &r->nodes[n];
        memcpy(ns->name, name, sizeof(name));
        /* Readers (rd_xrows) see the name before the row is counted in. */
        atomic_store_explicit(&r->nnodes, n + 1, memory_order_release);
    }
    uv_mutex_unlock(&r->nodes_lock);
    return ns;
}

/* Points c at host:port. Only while c is not up: its node's "connected"
   counts c's connection. */
static void conn_target(conn_t *c, const char *host, int port)
{
    assert(c->state != C_UP);
    snprintf(c->host, sizeof(c->host), "%s", host);
    c->port = port;
    snprintf(c->port_str, sizeof(c->port_str), "%d", port);
    c->ns = node_stat(c->r, host, port);
}

/* Resolves the host; the rest follows from on_resolved. */
static void conn_start(conn_t *c)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc;

    if (c->sub && c->r->url.cluster) {
        /* Any node hears every PUBLISH: the subscriber tries the seeds in
           turn, so that one node lost does not deafen it. */
        const llmc_redis_seed_t *sd = &c->r->url.seeds[c->seed_next++ % c->r->url.nseeds];
        conn_target(c, sd->host, sd->port);
    }
    c->state = C_RESOLVING;
    uv_timer_start(&c->retry, on_conn_timer, CONNECT_TIMEOUT_MS, 0);
    c->gai.data = c;
    rc = uv_getaddrinfo(c->loop, &c->gai, on_resolved, c->host, c->port_str, &hints);
    if (rc < 0) {
        conn_down(c, uv_strerror(rc));
        return;
    }
    c->resolving = true;
}

/* DOWN: time for the next attempt. RESOLVING or CONNECTING: the attempt
   took too long. */
static void on_conn_timer(uv_timer_t *t)
{
    conn_t *c = t->data;

    switch (c->state) {
    case C_DOWN:
        if (c->resolving) /* the last attempt's lookup still runs */
            uv_timer_start(&c->retry, on_conn_timer, BACKOFF_MIN_MS, 0);
        else
            conn_start(c);
        break;
    case C_RESOLVING:
    case C_CONNECTING:
        conn_drop(c, "no answer within the connect timeout");
        break;
    case C_UP:
    case C_DETACHED:
        break;
    }
}

/* ---- Redis Cluster: routing --------------------------------------------------- */

/*
 * On a Cluster each worker keeps a slot map (tier/redis_cluster.h) and a
 * connection per master it has heard of, made on first need and kept. A
 * key's command goes to its slot's master; a slot with no master known,
 * or whose master's connection is down, is a miss (or a dropped write)
 * that asks for a new map (CLUSTER SHARDS, or SLOTS before Redis 7, on
 * any connection up, at most every MAP_MIN_MS): a failover is survived by
 * asking again until a replica has been promoted. MOVED moves the slot in the map, asks for a
 * new map, and sends a lookup, a key purge, a fill (SET, its record
 * encoded again from the entry the op keeps), a lease's acquire or
 * another file's command (OP_EXT, from the copy it keeps) again
 * to the node named; ASK sends it there once after ASKING (a lease then
 * sends ASKING before each of its commands: its keys live there while
 * the slot migrates). A lease's refresh or release is not redirected: a
 * lease left behind expires within LEASE_MS.
 */

static conn_t *conn_new(redis_t *r, unsigned worker, uv_loop_t *loop, bool sub, const char *host,
                        int port);

/* The worker's connection to host:port, made when new (NULL past
   NODE_CONNS_MAX or out of memory). On the worker's loop thread, or the
   main thread at attach. */
static conn_t *node_conn(redis_t *r, unsigned worker, uv_loop_t *loop, const char *host, int port)
{
    wnodes_t *w = r->wn[worker];
    conn_t *c;

    for (c = w->nodes; c; c = c->next_node)
        if (c->port == port && strcmp(c->host, host) == 0)
            return c;
    if (w->nnodes == NODE_CONNS_MAX || !(c = conn_new(r, worker, loop, false, host, port)))
        return NULL;
    c->next_node = w->nodes;
    w->nodes = c;
    w->nnodes++;
    return c;
}

/* Asks for a new slot map on some connection that is up, unless one is in
   the air or was asked for less than MAP_MIN_MS ago; else remembers that
   one is wanted (the next connection ready asks). */
/* Sends CLUSTER SHARDS, or SLOTS to a Cluster that refused SHARDS, on c. */
static op_t *ask_map(wnodes_t *w, conn_t *c)
{
    const char *argv[] = {"CLUSTER", w->no_shards ? "SLOTS" : "SHARDS"};
    const size_t lens[] = {7, strlen(argv[1])};
    op_t *op = send_cmd(c, OP_SLOTS, 2, argv, lens);

    if (op)
        op->what = argv[1];
    return op;
}

static void want_map(wnodes_t *w, uint64_t now)
{
    w->stale = true;
    if (w->slots_op || (w->asked_ms && now - w->asked_ms < MAP_MIN_MS))
        return;
    for (conn_t *c = w->nodes; c; c = c->next_node) {
        if (c->state != C_UP || c->nops >= OPS_MAX)
            continue;
        if ((w->slots_op = ask_map(w, c))) {
            w->asked_ms = now;
            return;
        }
    }
}

static void got_slots(conn_t *c, const op_t *op, const redisReply *reply)
{
    redis_t *r = c->r;
    wnodes_t *w = r->wn[c->worker];
    bool shards = strcmp(op->what, "SHARDS") == 0;

    w->slots_op = NULL;
    if (shards && reply && reply->type == REDIS_REPLY_ERROR && !w->no_shards &&
        (strstr(reply->str, "unknown subcommand") || strstr(reply->str, "Unknown subcommand"))) {
        /* Redis < 7: SLOTS at once, and from then on. */
        w->no_shards = true;
        if (c->state == C_UP)
            w->slots_op = ask_map(w, c);
        return;
    }
    if (!reply ||
        (shards ? llmc_redis_shards_parse(reply, c->host, &w->next)
                : llmc_redis_slots_parse(reply, c->host, &w->next)) < 0 ||
        !w->next.covered) {
        if (reply)
            count(reply->type == REDIS_REPLY_ERROR ? &r->error_replies : &r->corrupt);
        return; /* still stale: the next miss asks again */
    }
    memcpy(&w->map, &w->next, sizeof(w->map));
    for (unsigned i = 0; i < w->map.nnodes; i++)
        w->conn_of[i] = node_conn(r, c->worker, c->loop, w->map.nodes[i].host,
                                  w->map.nodes[i].port);
    w->stale = false;
    count(&r->map_loads);
}

/* The connection that may take a command for key now, or NULL (a miss, a
   dropped write). */
static conn_t *route(redis_t *r, unsigned worker, const char *key, size_t klen)
{
    wnodes_t *w;
    conn_t *c;
    unsigned n;

    if (!r->wn)
        return ready_conn(r, worker);
    if (worker >= r->nconns || !(w = r->wn[worker]) || !r->conns[worker] ||
        r->conns[worker]->state == C_DETACHED)
        return NULL;
    n = w->map.owner[llmc_redis_slot(key, klen)];
    c = n == LLMC_REDIS_NO_NODE ? NULL : w->conn_of[n];
    if (!c || c->state != C_UP || w->stale) {
        /* A map wanted but not asked for yet (MAP_MIN_MS had not passed):
           the next command asks. */
        want_map(w, uv_now(r->conns[worker]->loop));
        if (!c || c->state != C_UP)
            return NULL;
    }
    return c->nops < OPS_MAX ? c : NULL;
}

/* Sends SET key record PX px for e on c. The op, or NULL (e not encoded,
   too big, or not sent). On a Cluster the op keeps a ref to e, so that a
   redirect can send it again to the node named. */
static op_t *send_set(conn_t *c, llmc_entry_t *e, int64_t px)
{
    redis_t *r = c->r;
    uint8_t *val = NULL;
    size_t len = 0;
    char key[KEY_MAX], pxs[24];
    op_t *op = NULL;

    if (llmc_record_encode(e, &val, &len) == 0 && len <= VALUE_MAX) {
        int pxl = snprintf(pxs, sizeof(pxs), "%lld", (long long)px);
        const char *argv[] = {"SET", key, (const char *)val, "PX", pxs};
        size_t lens[] = {3, make_key(r, &e->key, key), len, 2, (size_t)pxl};
        if ((op = send_cmd(c, OP_SET, 5, argv, lens)) && r->wn) {
            op->entry = llmc_entry_ref(e);
            op->px = px;
        }
    }
    free(val);
    return op;
}

static void lease_move(struct lease *l, conn_t *to, bool asking);
static void lease_answer(struct lease *l, int result);

/* The route for a key op: by the key it names. */
static conn_t *route_key(redis_t *r, unsigned worker, const llmc_key_t *key)
{
    char k[KEY_MAX];
    return route(r, worker, k, make_key(r, key, k));
}

/*
 * An error reply that may be a redirect. Returns true when it was one and
 * op was dealt with (sent again, or answered as a miss); false to handle
 * the reply as it is.
 */
static bool redirected(conn_t *c, op_t *op, const redisReply *reply)
{
    redis_t *r = c->r;
    wnodes_t *w = r->wn ? r->wn[c->worker] : NULL;
    llmc_redis_redirect_t rd;
    conn_t *to;
    int n;

    if (!w || (op->kind != OP_GET && op->kind != OP_DEL && op->kind != OP_SET &&
               op->kind != OP_LEASE && op->kind != OP_EXT) ||
        llmc_redis_redirect_parse(reply->str, reply->len, &rd) < 0)
        return false;
    count(rd.ask ? &r->asked : &r->moved);
    n = llmc_redis_map_node(&w->map, rd.to.host, strlen(rd.to.host), rd.to.port);
    to = n < 0 ? NULL : node_conn(r, c->worker, c->loop, rd.to.host, rd.to.port);
    if (!rd.ask && to) {
        if (w->map.owner[rd.slot] == LLMC_REDIS_NO_NODE)
            w->map.covered++;
        w->map.owner[rd.slot] = (uint8_t)n;
        w->conn_of[n] = to;
    }
    if (!rd.ask)
        want_map(w, uv_now(c->loop));
    if (to && (to->state != C_UP || to->nops >= OPS_MAX))
        to = NULL;
    if (op->kind == OP_LEASE) {
        if (!op->lease)
            return true; /* nobody waits for it any more */
        lease_t *l = op->lease;
        op->lease = NULL;
        l->op = NULL;
        if (to) {
            lease_move(l, to, rd.ask); /* asks again there, or answers NONE */
        } else {
            COUNT_NODE(c, error_replies);
            lease_answer(l, LLMC_LEASE_NONE);
        }
        return true;
    }
    if (to && rd.ask) {
        static const char *asking[] = {"ASKING"};
        static const size_t alen[] = {6};
        if (!send_cmd(to, OP_FIRE, 1, asking, alen))
            to = NULL;
    }
    char key[KEY_MAX];
    op_t *again = NULL;
    if (op->kind == OP_GET && op->lk && to) {
        const char *argv[] = {"GET", key};
        size_t lens[] = {3, make_key(r, &op->lk->query->key, key)};
        if ((again = send_cmd(to, OP_GET, 2, argv, lens))) {
            again->lk = op->lk;
            again->sent_ns = op->sent_ns;
            again->lk->tier_data = again;
            op->lk = NULL;
            watch(to, again);
        }
    } else if (op->kind == OP_SET && op->entry && to) {
        uint64_t spent = uv_now(c->loop) - op->sent_ms;
        if (op->px > (int64_t)spent && (again = send_set(to, op->entry, op->px - (int64_t)spent)))
            return true; /* counted stored (or not) on its own reply */
    } else if (op->kind == OP_DEL && op->done && to && op->scan == NULL) {
        const char *argv[] = {"DEL", key};
        size_t lens[] = {3, make_key(r, &op->key, key)};
        if ((again = send_cmd(to, OP_DEL, 2, argv, lens))) {
            again->done = op->done;
            again->arg = op->arg;
            again->key = op->key;
            op->done = NULL;
            watch(to, again);
        }
    } else if (op->kind == OP_EXT && op->xcmd && to) {
        /* Its callback gets the reply from the node named instead. */
        if ((again = send_cmd(to, OP_EXT, op->xcmd->argc, op->xcmd->argv, op->xcmd->lens))) {
            again->ext = op->ext;
            again->arg = op->arg;
            again->xcmd = op->xcmd;
            op->xcmd = NULL;
        }
    }
    return again != NULL; /* else answered as the error it got */
}

/* ---- replies --------------------------------------------------------------- */

static void note_latency(redis_t *r, const op_t *op)
{
    uint64_t us = (uv_hrtime() - op->sent_ns) / 1000;
    uint64_t max = load(&r->lat_max_us);

    count(&r->lat_count);
    atomic_fetch_add_explicit(&r->lat_sum_us, us, memory_order_relaxed);
    while (us > max && !atomic_compare_exchange_weak_explicit(&r->lat_max_us, &max, us,
                                                             memory_order_relaxed,
                                                             memory_order_relaxed))
        ;
}

static void got_get(conn_t *c, op_t *op, const redisReply *reply)
{
    redis_t *r = c->r;
    llmc_tier_lookup_t *lk = op->lk;
    int rc;

    if (!lk)
        return; /* answered LLMC_ETIMEDOUT at its deadline */
    if (!reply) {
        rc = c->state == C_DETACHED ? LLMC_ECANCELED : LLMC_EIO; /* the connection broke */
    } else {
        note_latency(r, op);
        rc = value_decode(&lk->query->key, reply, &lk->entry);
        if (rc == LLMC_ECORRUPT || rc == LLMC_EVERSION)
            count(&r->corrupt);
        else if (rc == LLMC_EIO)
            count(reply->type == REDIS_REPLY_ERROR ? &r->error_replies : &r->corrupt);
    }
    count(rc == 0 ? &r->hits : &r->misses);
    op->lk = NULL;
    lk->tier_data = NULL;
    /* Every rc but 0 is a miss to the walk; explain tells them apart. */
    lk->done(lk, rc);
}

static void got_del(conn_t *c, op_t *op, const redisReply *reply)
{
    size_t removed = 0;

    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {
        removed = (size_t)reply->integer;
        atomic_fetch_add_explicit(&c->r->purged, removed, memory_order_relaxed);
    } else if (reply && reply->type == REDIS_REPLY_ERROR) {
        COUNT_NODE(c, error_replies);
    }
    if (op->done)
        op->done(op->arg, removed);
}

/* ---- leases ----------------------------------------------------------------- */

static void lease_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Forgets l: off its connection's list, its command's reply ignored, its
   timer closed (which frees it). */
static void lease_free(lease_t *l)
{
    conn_t *c = l->c;

    if (l->prev)
        l->prev->next = l->next;
    else
        c->leases = l->next;
    if (l->next)
        l->next->prev = l->prev;
    if (l->op)
        l->op->lease = NULL;
    uv_close((uv_handle_t *)&l->timer, lease_closed);
}

/* Runs a lease script on c: KEYS key (and key2 when not NULL), ARGV the
   token and ms. The op, or NULL. */
static op_t *send_script(conn_t *c, enum op_kind kind, const char *lua, const char *key,
                         size_t klen, const char *key2, size_t k2len, const lease_t *l, uint64_t ms)
{
    char msbuf[24];
    int mlen = snprintf(msbuf, sizeof(msbuf), "%llu", (unsigned long long)ms);
    const char *argv[] = {"EVAL", lua, key2 ? "2" : "1", key, key2, l->token, msbuf};
    size_t lens[] = {4, strlen(lua), 1, klen, k2len, l->token_len, (size_t)mlen};

    if (!key2) {
        argv[4] = argv[5];
        lens[4] = lens[5];
        argv[5] = argv[6];
        lens[5] = lens[6];
    }
    return send_cmd(c, kind, key2 ? 7 : 6, argv, lens);
}

/* Cluster: ASKING before a command of a lease whose slot migrates to its
   connection's node. False when it could not be sent. */
static bool lease_asking(const lease_t *l)
{
    static const char *asking[] = {"ASKING"};
    static const size_t alen[] = {6};

    return !l->asking || send_cmd(l->c, OP_FIRE, 1, asking, alen) != NULL;
}

/* Sends the acquire script for l; false when it could not be sent. */
static bool lease_ask(lease_t *l)
{
    redis_t *r = l->c->r;
    char key[KEY_MAX], lkey[KEY_MAX];

    if (!lease_asking(l))
        return false;
    size_t klen = make_key(r, &l->ls->key, key), lklen = make_lease_key(r, &l->ls->key, lkey);
    op_t *op = send_script(l->c, OP_LEASE, acquire_lua, key, klen, lkey, lklen, l, LEASE_MS);

    if (!op)
        return false;
    op->lease = l;
    l->op = op;
    watch(l->c, op);
    return true;
}

static void on_lease_timer(uv_timer_t *t);

/* Tells the caller; a lease that is not won is over for the tier too. */
static void lease_answer(lease_t *l, int result)
{
    redis_t *r = l->c->r;
    llmc_tier_lease_t *ls = l->ls;

    count(result == LLMC_LEASE_WON      ? &r->leases_won
          : result == LLMC_LEASE_FILLED ? &r->leases_filled
                                        : &r->leases_none);
    if (result == LLMC_LEASE_WON) {
        l->held = true;
        uv_timer_start(&l->timer, on_lease_timer, LEASE_REFRESH_MS, LEASE_REFRESH_MS);
    } else {
        ls->tier_data = NULL;
        l->ls = NULL;
        lease_free(l);
    }
    ls->done(ls, result);
}

/* Held: keep the lease alive while the call runs. Waiting: ask again. */
static void on_lease_timer(uv_timer_t *t)
{
    lease_t *l = t->data;
    conn_t *c = l->c;
    char lkey[KEY_MAX];

    if (l->held) {
        if (c->state == C_UP && lease_asking(l))
            send_script(c, OP_FIRE, refresh_lua, lkey, make_lease_key(c->r, &l->ls->key, lkey),
                        NULL, 0, l, LEASE_MS);
        return;
    }
    if (c->state != C_UP || c->nops >= OPS_MAX || !lease_ask(l))
        lease_answer(l, LLMC_LEASE_NONE);
}

/* A redirect named to as where l's keys are: l moves to that connection
   and asks there, or is answered LLMC_LEASE_NONE when it cannot. */
static void lease_move(lease_t *l, conn_t *to, bool asking)
{
    conn_t *c = l->c;

    if (l->prev)
        l->prev->next = l->next;
    else
        c->leases = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->prev = NULL;
    l->next = to->leases;
    if (l->next)
        l->next->prev = l;
    to->leases = l;
    l->c = to;
    l->asking = asking;
    if (!lease_ask(l))
        lease_answer(l, LLMC_LEASE_NONE);
}

/* An error reply Redis Cluster gives a command of several keys in a slot
   being migrated when the node has not all of them yet. */
static bool try_again(const redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR && reply->len >= 8 &&
           memcmp(reply->str, "TRYAGAIN", 8) == 0;
}

static void got_lease(conn_t *c, op_t *op, const redisReply *reply)
{
    redis_t *r = c->r;
    lease_t *l = op->lease;
    llmc_entry_t *e = NULL;

    if (!l)
        return; /* timed out, or its caller stopped waiting */
    l->op = NULL;
    if (!reply) {
        lease_answer(l, c->state == C_DETACHED ? LLMC_ECANCELED : LLMC_LEASE_NONE);
    } else if (reply->type == REDIS_REPLY_STRING) {
        if (value_decode(&l->ls->key, reply, &e) == 0) {
            l->ls->entry = e;
            lease_answer(l, LLMC_LEASE_FILLED);
        } else {
            count(&r->corrupt);
            lease_answer(l, LLMC_LEASE_NONE);
        }
    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        lease_answer(l, LLMC_LEASE_WON);
    } else if (((reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) || try_again(reply)) &&
               uv_now(c->loop) < l->give_up_ms) {
        /* Held elsewhere, or (TRYAGAIN) its slot is half migrated: the
           lease script has two keys. Either way, ask again shortly. */
        if (!l->waited) {
            l->waited = true;
            count(&r->leases_waited);
        }
        uv_timer_start(&l->timer, on_lease_timer, LEASE_POLL_MS, 0);
    } else {
        if (reply->type == REDIS_REPLY_ERROR)
            COUNT_NODE(c, error_replies);
        lease_answer(l, LLMC_LEASE_NONE);
    }
}

static int rd_lease(llmc_tier_t *t, llmc_tier_lease_t *ls)
{
    redis_t *r = impl(t);
    conn_t *c = route_key(r, ls->worker, &ls->key);
    lease_t *l = c ? calloc(1, sizeof(*l)) : NULL;

    if (!l) {
        count(&r->leases_none);
        return LLMC_LEASE_NONE;
    }
    l->c = c;
    l->ls = ls;
    uv_timer_init(c->loop, &l->timer);
    l->timer.data = l;
    l->token_len = (size_t)snprintf(l->token, sizeof(l->token), "%016llx-%llu",
                                    (unsigned long long)r->token_seed,
                                    (unsigned long long)atomic_fetch_add(&r->token_next, 1));
    l->give_up_ms = uv_now(c->loop) + (uint64_t)(ls->max_wait_ms > 0 ? ls->max_wait_ms : 0);
    l->next = c->leases;
    if (l->next)
        l->next->prev = l;
    c->leases = l;
    ls->tier_data = l;
    if (!lease_ask(l)) {
        ls->tier_data = NULL;
        l->ls = NULL;
        lease_free(l);
        count(&r->leases_none);
        return LLMC_LEASE_NONE;
    }
    return LLMC_EAGAIN;
}

static void rd_lease_end(llmc_tier_t *t, llmc_tier_lease_t *ls)
{
    lease_t *l = ls->tier_data;
    conn_t *c;
    char lkey[KEY_MAX];

    if (!l)
        return;
    c = l->c;
    ls->tier_data = NULL;
    /* Sent after the answer's SET on this same connection: a waiter finds
       the answer before the lease is gone. */
    if (l->held && c->state == C_UP && lease_asking(l))
        send_script(c, OP_FIRE, release_lua, lkey, make_lease_key(c->r, &ls->key, lkey), NULL, 0,
                    l, 0);
    l->ls = NULL;
    lease_free(l);
}

/* At detach: a lease waited on ends LLMC_ECANCELED; a held one is
   forgotten (it expires in Redis within LEASE_MS). */
static void leases_cancel(conn_t *c)
{
    while (c->leases) {
        lease_t *l = c->leases;
        if (l->held) {
            l->ls->tier_data = NULL;
            l->ls = NULL;
            lease_free(l);
        } else {
            lease_answer(l, LLMC_ECANCELED);
        }
    }
}

/* ---- invalidations between gateways ---------------------------------------- */

/*
 * Publishes "<our id> <kind> <payload>" on the channel, behind whatever c
 * sent before it (so a peer that hears of a new answer finds it stored).
 * kind R: a new answer for the key whose hex is payload; P: a purge,
 * payload its selector (redis_msg.c).
 */
static void publish(conn_t *c, char kind, const char *payload, size_t plen)
{
    redis_t *r = c->r;
    size_t n = ID_LEN + 3 + plen;
    char *msg = malloc(n);

    if (!msg)
        return;
    memcpy(msg, r->self_id, ID_LEN);
    msg[ID_LEN] = ' ';
    msg[ID_LEN + 1] = kind;
    msg[ID_LEN + 2] = ' ';
    memcpy(msg + ID_LEN + 3, payload, plen);
    const char *argv[] = {"PUBLISH", r->chan, msg};
    size_t lens[] = {7, r->chan_len, n};
    if (send_cmd(c, OP_FIRE, 3, argv, lens))
        count(&r->inval_sent);
    free(msg);
}

static void publish_purge(conn_t *c, const llmc_purge_t *sel)
{
    char *json = llmc__redis_sel_encode(sel);

    if (json)
        publish(c, 'P', json, strlen(json));
    free(json);
}

/* A peer's message: applied to our other tiers unless it is our own. */
static void apply_message(conn_t *c, const char *s, size_t len)
{
    redis_t *r = c->r;
    llmc_purge_t sel = {.conds = LLMC_PURGE_KEY};
    void *h = NULL;

    if (len > ID_LEN + 3 && memcmp(s, r->self_id, ID_LEN) == 0)
        return;
    if (len < ID_LEN + 3 || s[ID_LEN] != ' ' || s[ID_LEN + 2] != ' ')
        goto bad;
    s += ID_LEN + 3;
    len -= ID_LEN + 3;
    if (s[-2] == 'R' && len == 2 * LLMC_KEY_LEN && llmc__redis_key_unhex(s, &sel.key) == 0) {
        r->peer_purge(r->peer_purge_arg, &r->tier, c->worker, &sel, false);
    } else if (s[-2] == 'P' && (h = llmc__redis_sel_decode(s, len, &sel))) {
        r->peer_purge(r->peer_purge_arg, &r->tier, c->worker, &sel, true);
        llmc__redis_sel_free(h);
    } else {
        goto bad;
    }
    count(&r->inval_received);
    return;
bad:
    count(&r->inval_bad);
}

/* Listening again after a loss: whatever was published meanwhile is lost
   to us, so every local copy goes (memory, disk: each may hold an answer
   another gateway purged or replaced). The answers stay in Redis, so this
   costs round trips to it, not model calls. */
static void resync(conn_t *c)
{
    redis_t *r = c->r;
    llmc_purge_t all = {.all = true};

    count(&r->resyncs);
    tell(r, "redis: listening to invalidations again; messages may have been missed, so this "
         "gateway's own copies were dropped");
    r->peer_purge(r->peer_purge_arg, &r->tier, c->worker, &all, true);
    if (r->part.resync)
        r->part.resync(r->part.arg); /* the shared questions are read again */
}

/* SUBSCRIBE's callback: its confirmation, then every message, then NULL
   when the connection ends. */
static void on_message(redisAsyncContext *ac, void *reply_, void *privdata)
{
    conn_t *c = privdata;
    const redisReply *m = reply_;

    if (!m || c->ac != ac || m->type != REDIS_REPLY_ARRAY || m->elements != 3 ||
        m->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(m->element[0]->str, "subscribe") == 0) {
        atomic_store(&c->r->subscribed, true);
        if (c->subscriptions++ > 0)
            resync(c);
    }
    else if (strcmp(m->element[0]->str, "message") == 0 &&
             m->element[2]->type == REDIS_REPLY_STRING)
        apply_message(c, m->element[2]->str, m->element[2]->len);
}

/* The subscriber is ready (PONG): from now on it only listens. */
static void subscribe(conn_t *c)
{
    const char *argv[] = {"SUBSCRIBE", c->r->chan};
    size_t lens[] = {9, c->r->chan_len};

    if (redisAsyncCommandArgv(c->ac, on_message, c, 2, argv, lens) != REDIS_OK)
        conn_drop(c, "could not subscribe");
}

/* ---- purges by selector ------------------------------------------------------ */

/*
 * A purge other than by key walks the prefix's keys with SCAN, a batch at
 * a time: the keys of one step are read (GET) and those whose record the
 * selector picks are deleted; the next step is asked when the batch is
 * done, so at most one batch is in the air and the loop never waits.
 * {"all": true} deletes what SCAN finds without reading it. Lease keys
 * and anything else under the prefix that is not prefix + 64 hex digits
 * is left alone. An answer stored between a key's GET and its DEL may go
 * with the old one: the cache only loses a copy. A connection lost on the
 * way ends the purge with what it removed so far.
 */
/* A purge by selector: one scan per master (one on a single node). */
typedef struct scan_fan {
    llmc_purge_t *sel;            /* our copy */
    llmc_tier_purge_cb done;
    void *arg;
    size_t removed;
    unsigned outstanding;         /* scans still walking, + 1 while they start */
} scan_fan_t;

struct scan {
    conn_t *c;
    scan_fan_t *fan;
    llmc_purge_t *sel;            /* the fan's */
    size_t removed;
    unsigned inflight;            /* its commands in the air */
    bool more, failed;            /* the cursor is not back at 0; a step went wrong */
    char cursor[24];
    char match[2 * LLMC_REDIS_PREFIX_MAX + 2]; /* the prefix, glob-escaped, and '*' */
    size_t match_len;
};

/* One scan (or the start, c NULL) is over: the last one tells the peers
   through c when it is up, and answers the purge. */
static void fan_release(scan_fan_t *f, conn_t *c)
{
    assert(f->outstanding > 0);
    if (--f->outstanding > 0)
        return;
    /* Told after Redis is clean, so that a peer that drops its copies
       cannot promote them back from here. */
    if (c && c->state == C_UP)
        publish_purge(c, f->sel);
    f->done(f->arg, f->removed);
    free(f->sel);
    free(f);
}

static void scan_finish(scan_t *s)
{
    atomic_fetch_add_explicit(&s->c->r->purged, s->removed, memory_order_relaxed);
    s->fan->removed += s->removed;
    fan_release(s->fan, s->c);
    free(s);
}

/* The batch is done: the next SCAN step, or the end. */
static void scan_next(scan_t *s)
{
    conn_t *c = s->c;
    op_t *op = NULL;

    assert(s->inflight == 0);
    if (s->more && !s->failed && c->state == C_UP) {
        const char *argv[] = {"SCAN", s->cursor, "MATCH", s->match, "COUNT", SCAN_COUNT};
        size_t lens[] = {4, strlen(s->cursor), 5, s->match_len, 5, strlen(SCAN_COUNT)};
        op = send_cmd(c, OP_SCAN, 6, argv, lens);
    }
    if (!op) {
        scan_finish(s);
        return;
    }
    op->scan = s;
    s->inflight++;
}

static void scan_sent(scan_t *s, op_t *op)
{
    if (!op) {
        s->failed = true;
        return;
    }
    op->scan = s;
    s->inflight++;
}

static void scan_answered(scan_t *s)
{
    if (--s->inflight == 0)
        scan_next(s);
}

static void got_scan(conn_t *c, op_t *op, const redisReply *reply)
{
    scan_t *s = op->scan;
    redis_t *r = c->r;
    const redisReply *keys;

    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[0]->len >= sizeof(s->cursor) ||
        reply->element[1]->type != REDIS_REPLY_ARRAY) {
        if (reply && reply->type == REDIS_REPLY_ERROR)
            COUNT_NODE(c, error_replies);
        s->failed = true;
        scan_answered(s);
        return;
    }
    memcpy(s->cursor, reply->element[0]->str, reply->element[0]->len + 1);
    s->more = strcmp(s->cursor, "0") != 0;
    keys = reply->element[1];
    for (size_t i = 0; i < keys->elements && !s->failed && c->state == C_UP; i++) {
        const redisReply *k = keys->element[i];
        llmc_key_t key;
        char want[KEY_MAX];
        if (k->type != REDIS_REPLY_STRING || k->len < hex_at(r) + 2 * LLMC_KEY_LEN ||
            llmc__redis_key_unhex(k->str + hex_at(r), &key) < 0 ||
            k->len != make_key(r, &key, want) || memcmp(k->str, want, k->len) != 0)
            continue;
        if (llmc_purge_is_all(s->sel)) {
            const char *argv[] = {"DEL", k->str};
            size_t lens[] = {3, k->len};
            scan_sent(s, send_cmd(c, OP_SDEL, 2, argv, lens));
        } else {
            const char *argv[] = {"GET", k->str};
            size_t lens[] = {3, k->len};
            op_t *get = send_cmd(c, OP_SGET, 2, argv, lens);
            scan_sent(s, get);
            if (get)
                get->key = key;
        }
    }
    scan_answered(s);
}

static void got_sget(conn_t *c, op_t *op, const redisReply *reply)
{
    scan_t *s = op->scan;
    llmc_entry_t *e = NULL;

    if (reply && reply->type == REDIS_REPLY_STRING) {
        count(&c->r->scanned);
        if (value_decode(&op->key, reply, &e) == 0 && llmc_purge_match(s->sel, e) &&
            c->state == C_UP) {
            char key[KEY_MAX];
            const char *argv[] = {"DEL", key};
            size_t lens[] = {3, make_key(c->r, &op->key, key)};
            scan_sent(s, send_cmd(c, OP_SDEL, 2, argv, lens));
        }
        if (e)
            llmc_entry_unref(e);
    }
    scan_answered(s);
}

static void got_sdel(conn_t *c, op_t *op, const redisReply *reply)
{
    scan_t *s = op->scan;

    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        s->removed += (size_t)reply->integer;
    else if (reply && reply->type == REDIS_REPLY_ERROR)
        COUNT_NODE(c, error_replies);
    scan_answered(s);
}

/* Starts f's scan of c's node. */
static void scan_start(conn_t *c, scan_fan_t *f)
{
    redis_t *r = c->r;
    scan_t *s = calloc(1, sizeof(*s));

    if (!s)
        return;
    f->outstanding++;
    s->c = c;
    s->fan = f;
    s->sel = f->sel;
    s->more = true;
    strcpy(s->cursor, "0");
    /* SCAN's MATCH is a glob: the prefix's own * ? [ ] \ are escaped. */
    for (size_t i = 0; i < r->prefix_len; i++) {
        if (strchr("*?[]\\", r->prefix[i]))
            s->match[s->match_len++] = '\\';
        s->match[s->match_len++] = r->prefix[i];
    }
    s->match[s->match_len++] = '*';
    s->match[s->match_len] = '\0';
    scan_next(s);
}

/* A purge by selector: a scan of every master up (the one node, off a
   Cluster); done once, when the last has walked. */
static void scan_all(redis_t *r, unsigned worker, const llmc_purge_t *sel,
                     llmc_tier_purge_cb done, void *arg)
{
    scan_fan_t *f = calloc(1, sizeof(*f));

    if (!f || !(f->sel = llmc_purge_dup(sel))) {
        free(f);
        done(arg, 0);
        return;
    }
    f->done = done;
    f->arg = arg;
    f->outstanding = 1;
    if (!r->wn) {
        conn_t *c = ready_conn(r, worker);
        if (c)
            scan_start(c, f);
    } else if (worker < r->nconns && r->wn[worker]) {
        wnodes_t *w = r->wn[worker];
        for (unsigned i = 0; i < w->map.nnodes; i++)
            if (w->conn_of[i] && w->conn_of[i]->state == C_UP)
                scan_start(w->conn_of[i], f);
    }
    fan_release(f, NULL);
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    op_t *op = privdata;
    conn_t *c = op->c;
    redis_t *r = c->r;
    const redisReply *reply = reply_;
    bool waited = op->waited;

    pop(c, op);
    if (reply && waited && uv_now(c->loop) - op->sent_ms <= r->timeout_ms) {
        /* An answer in time: whatever went wrong before is over. */
        c->timeouts_in_row = 0;
        c->backoff_ms = BACKOFF_MIN_MS;
    }
    /* A NULL reply while c still holds ac: hiredis is ending the
       connection (it broke, or Redis closed it). Down first, so that the
       completions below find it so. */
    if (!reply && c->ac == ac)
        conn_down(c, c->bad_reply     ? c->bad_reply
                     : ac->errstr[0]  ? ac->errstr
                                      : "closed");
    if (reply && reply->type == REDIS_REPLY_ERROR && r->wn && redirected(c, op, reply)) {
        op_free(op);
        return;
    }
    switch (op->kind) {
    case OP_HELLO:
        if (reply && reply->type == REDIS_REPLY_ERROR && c->ac == ac) {
            char why[300];
            snprintf(why, sizeof(why), "%s refused: %.200s", op->what, reply->str);
            conn_drop(c, why);
        }
        break;
    case OP_READY:
        if (reply && c->ac == ac) {
            if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0) {
                conn_ready(c);
            } else {
                char why[300];
                snprintf(why, sizeof(why), "PING answered %.200s",
                         reply->type == REDIS_REPLY_ERROR ? reply->str : "something else");
                conn_drop(c, why);
            }
        }
        break;
    case OP_GET:
        got_get(c, op, reply);
        break;
    case OP_SET:
        if (reply && reply->type == REDIS_REPLY_STATUS)
            count(&r->stored);
        else if (reply && reply->type == REDIS_REPLY_ERROR)
            COUNT_NODE(c, error_replies);
        else
            count(&r->dropped);
        break;
    case OP_DEL:
        got_del(c, op, reply);
        break;
    case OP_LEASE:
        got_lease(c, op, reply);
        break;
    case OP_FIRE:
        if (reply && reply->type == REDIS_REPLY_ERROR)
            COUNT_NODE(c, error_replies);
        break;
    case OP_SCAN:
        got_scan(c, op, reply);
        break;
    case OP_SGET:
        got_sget(c, op, reply);
        break;
    case OP_SDEL:
        got_sdel(c, op, reply);
        break;
    case OP_SLOTS:
        got_slots(c, op, reply);
        break;
    case OP_EXT:
        op->ext(op->arg, reply);
        break;
    }
    op_free(op);
}

/* The oldest waited ops are past their deadline: each is answered as a
   miss (nothing removed, for a purge); then the breaker is checked. */
static void on_deadline(uv_timer_t *t)
{
    conn_t *c = t->data;
    redis_t *r = c->r;
    uint64_t now = uv_now(c->loop);

    while (c->state == C_UP && c->waited && c->waited->deadline_ms <= now) {
        op_t *op = c->waited;
        c->waited = next_waited(op->next);
        op->waited = false;
        if (op->kind == OP_GET) {
            llmc_tier_lookup_t *lk = op->lk;
            op->lk = NULL;
            lk->tier_data = NULL;
            c->timeouts_in_row++;
            COUNT_NODE(c, timeouts);
            count(&r->misses);
            lk->done(lk, LLMC_ETIMEDOUT);
        } else if (op->kind == OP_DEL && op->done) {
            llmc_tier_purge_cb done = op->done;
            op->done = NULL;
            done(op->arg, 0);
        } else if (op->kind == OP_LEASE && op->lease) {
            lease_t *l = op->lease;
            op->lease = NULL;
            l->op = NULL;
            c->timeouts_in_row++;
            COUNT_NODE(c, timeouts);
            lease_answer(l, LLMC_LEASE_NONE);
        }
    }
    if (c->state != C_UP)
        return;
    if (c->timeouts_in_row >= BREAKER_TIMEOUTS ||
        (c->head && now - c->head->sent_ms >= r->stuck_ms)) {
        count(&r->breaker_trips);
        conn_drop(c, c->timeouts_in_row >= BREAKER_TIMEOUTS ? "lookups keep timing out"
                                                            : "a command went unanswered");
        return;
    }
    if (c->waited)
        arm(c, c->waited->deadline_ms);
    else if (c->head)
        arm(c, c->head->sent_ms + r->stuck_ms);
}

/* ---- the tier ops ---------------------------------------------------------- */

static int rd_lookup(llmc_tier_t *t, llmc_tier_lookup_t *lk)
{
    redis_t *r = impl(t);
    conn_t *c = route_key(r, lk->worker, &lk->query->key);
    char key[KEY_MAX];
    op_t *op = NULL;

    if (c) {
        const char *argv[] = {"GET", key};
        size_t lens[] = {3, make_key(r, &lk->query->key, key)};
        op = send_cmd(c, OP_GET, 2, argv, lens);
    }
    if (!op) {
        count(&r->unasked);
        count(&r->misses);
        return LLMC_EIO; /* a miss; explain says Redis was not asked */
    }
    op->lk = lk;
    op->sent_ns = uv_hrtime();
    lk->tier_data = op;
    watch(c, op);
    return LLMC_EAGAIN;
}

static int rd_put(llmc_tier_t *t, unsigned worker, llmc_entry_t *e, int64_t now_ms)
{
    redis_t *r = impl(t);
    int64_t px = px_for(e, now_ms);
    conn_t *c;
    char key[KEY_MAX];

    if (px == 0)
        return 0; /* nothing left to share */
    if (!(c = route_key(r, worker, &e->key)) || !send_set(c, e, px)) {
        count(&r->dropped);
        return 0;
    }
    make_key(r, &e->key, key);
    publish(c, 'R', key + hex_at(r), 2 * LLMC_KEY_LEN); /* other gateways' copies go */
    return 0;
}

static void rd_purge(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                     llmc_tier_purge_cb done, void *arg)
{
    redis_t *r = impl(t);
    conn_t *c;
    char key[KEY_MAX];
    op_t *op = NULL;

    if (!llmc_purge_is_key(sel)) {
        scan_all(r, worker, sel, done, arg);
        return;
    }
    c = route_key(r, worker, &sel->key);
    if (c) {
        const char *argv[] = {"DEL", key};
        size_t lens[] = {3, make_key(r, &sel->key, key)};
        op = send_cmd(c, OP_DEL, 2, argv, lens);
    }
    if (!op) {
        done(arg, 0);
        return;
    }
    op->done = done;
    op->arg = arg;
    op->key = sel->key;
    watch(c, op);
    publish_purge(c, sel);
}

static void rd_stats(llmc_tier_t *t, llmc_tier_stats_t *out)
{
    redis_t *r = impl(t);

    *out = (llmc_tier_stats_t){
        .hits = load(&r->hits),
        .misses = load(&r->misses),
        .stored = load(&r->stored),
        .purged = load(&r->purged),
        .errors = load(&r->timeouts) + load(&r->error_replies) + load(&r->corrupt) +
                  load(&r->connect_failures) + load(&r->disconnects),
        .dropped = load(&r->dropped),
    };
}

static void rd_xstats(llmc_tier_t *t, void *out)
{
    redis_t *r = impl(t);

    *(redis_xstats_t *)out = (redis_xstats_t){
        .connected = atomic_load_explicit(&r->up, memory_order_relaxed),
        .connects = load(&r->connects),
        .connect_failures = load(&r->connect_failures),
        .disconnects = load(&r->disconnects),
        .breaker_trips = load(&r->breaker_trips),
        .timeouts = load(&r->timeouts),
        .error_replies = load(&r->error_replies),
        .corrupt = load(&r->corrupt),
        .unasked = load(&r->unasked),
        .bad_replies = load(&r->bad_replies),
        .leases_won = load(&r->leases_won),
        .leases_waited = load(&r->leases_waited),
        .leases_filled = load(&r->leases_filled),
        .leases_none = load(&r->leases_none),
        .subscribed = atomic_load(&r->subscribed),
        .inval_sent = load(&r->inval_sent),
        .inval_received = load(&r->inval_received),
        .inval_bad = load(&r->inval_bad),
        .resyncs = load(&r->resyncs),
        .scanned = load(&r->scanned),
        .lat_count = load(&r->lat_count),
        .lat_sum_us = load(&r->lat_sum_us),
        .lat_max_us = load(&r->lat_max_us),
        .moved = load(&r->moved),
        .asked = load(&r->asked),
        .map_loads = load(&r->map_loads),
        .vec_published = load(&r->vec.published),
        .vec_publish_failures = load(&r->vec.publish_failures),
        .vec_reads = load(&r->vec.reads),
        .vec_read_failures = load(&r->vec.read_failures),
        .vec_answers_gone = load(&r->vec.answers_gone),
        .vec_answer_failures = load(&r->vec.answer_failures),
        .vec_rereads = load(&r->vec.rereads),
        .vec_bad_entries = load(&r->vec.bad_entries),
    };
}

static unsigned rd_xrows(llmc_tier_t *t, llmc_tier_row_t *rows, unsigned max)
{
    redis_t *r = impl(t);
    unsigned n = atomic_load_explicit(&r->nnodes, memory_order_acquire);

    if (n > max)
        n = max;
    for (unsigned i = 0; i < n; i++) {
        nstat_t *ns = &r->nodes[i];
        redis_nstats_t v = {
            .connected = load(&ns->connected),
            .connects = load(&ns->connects),
            .connect_failures = load(&ns->connect_failures),
            .disconnects = load(&ns->disconnects),
            .timeouts = load(&ns->timeouts),
            .error_replies = load(&ns->error_replies),
        };
        static_assert(sizeof(v) <= sizeof(rows[i].v), "a node row's counters fit a tier row");
        snprintf(rows[i].name, sizeof(rows[i].name), "%s", ns->name);
        memcpy(rows[i].v, &v, sizeof(v));
    }
    return n;
}

static void handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    c->open_handles--;
}

/* A connection for worker on loop, its first attempt set to run on the
   loop's own thread; NULL when out of memory. Main thread. */
static conn_t *conn_new(redis_t *r, unsigned worker, uv_loop_t *loop, bool sub, const char *host,
                        int port)
{
    conn_t *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->r = r;
    conn_target(c, host, port);
    c->worker = worker;
    c->sub = sub;
    c->loop = loop;
    c->state = C_DOWN;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->rng = (unsigned)time(NULL) ^ (worker * 2654435761u) ^ (sub ? 0x5bd1e995u : 0);
    uv_timer_init(loop, &c->retry);
    uv_timer_init(loop, &c->deadline);
    c->retry.data = c->deadline.data = c;
    c->open_handles = 2;
    uv_timer_start(&c->retry, on_conn_timer, 0, 0);
    return c;
}

/* Shuts c down on its loop's thread: every op and lease still asked is
   answered, its handles closed (freed at destroy). */
static void conn_detach(conn_t *c)
{
    redis_t *r = c->r;
    redisAsyncContext *ac;

    if (c->state == C_DETACHED)
        return;
    if (c->state == C_UP && !c->sub) {
        atomic_fetch_sub(&r->up, 1);
        if (c->ns)
            atomic_fetch_sub(&c->ns->connected, 1);
    }
    if (c->sub)
        atomic_store(&r->subscribed, false);
    c->state = C_DETACHED;
    ac = c->ac;
    c->ac = NULL;
    /* Calls back every op: lookups and leases asked end LLMC_ECANCELED,
       purges with what they removed so far. */
    if (ac)
        redisAsyncFree(ac);
    assert(!c->head);
    leases_cancel(c);
    if (c->resolving)
        uv_cancel((uv_req_t *)&c->gai);
    uv_close((uv_handle_t *)&c->retry, handle_closed);
    uv_close((uv_handle_t *)&c->deadline, handle_closed);
}

static void conn_free(conn_t *c)
{
    if (!c)
        return;
    /* A struct that owns handles is freed after their close callbacks. */
    assert(c->state == C_DETACHED && c->open_handles == 0 && !c->resolving);
    free(c);
}

static int rd_attach(llmc_tier_t *t, unsigned worker, struct uv_loop_s *loop)
{
    redis_t *r = impl(t);
    conn_t *c = NULL;

    if (worker >= r->nconns) {
        conn_t **grown = realloc(r->conns, (worker + 1) * sizeof(*grown));
        if (!grown)
            return LLMC_ENOMEM;
        memset(grown + r->nconns, 0, (worker + 1 - r->nconns) * sizeof(*grown));
        r->conns = grown;
        if (r->url.cluster) {
            wnodes_t **wn = realloc(r->wn, (worker + 1) * sizeof(*wn));
            if (!wn)
                return LLMC_ENOMEM;
            memset(wn + r->nconns, 0, (worker + 1 - r->nconns) * sizeof(*wn));
            r->wn = wn;
        }
        r->nconns = worker + 1;
    }
    if (r->conns[worker])
        return LLMC_EEXIST;
    if (worker == 0 && r->part.attach && r->part.attach(r->part.arg, loop) < 0)
        return LLMC_ENOMEM;
    /* One listener per process is enough: worker 0's loop applies what
       it hears to the tiers, which every loop shares. */
    if (worker == 0 && r->peer_purge && !r->sub &&
        !(r->sub = conn_new(r, 0, loop, true, r->url.host, r->url.port)))
        return LLMC_ENOMEM;
    if (!r->url.cluster) {
        if (!(c = conn_new(r, worker, loop, false, r->url.host, r->url.port)))
            return LLMC_ENOMEM;
        r->conns[worker] = c;
        return 0;
    }
    /* A Cluster: a connection to every seed; the first one up asks for
       the slot map, which names the masters. conns[worker] is the first
       seed's, the worker's own. */
    if (!(r->wn[worker] = calloc(1, sizeof(wnodes_t))))
        return LLMC_ENOMEM;
    llmc_redis_map_init(&r->wn[worker]->map);
    for (unsigned i = r->url.nseeds; i-- > 0;)
        if (!(c = node_conn(r, worker, loop, r->url.seeds[i].host, r->url.seeds[i].port)))
            return LLMC_ENOMEM;
    r->conns[worker] = c;
    return 0;
}

static void rd_detach(llmc_tier_t *t, unsigned worker)
{
    redis_t *r = impl(t);
    conn_t *c = worker < r->nconns ? r->conns[worker] : NULL;

    if (worker == 0 && r->part.detach)
        r->part.detach(r->part.arg);

    if (worker == 0 && r->sub)
        conn_detach(r->sub);
    if (r->wn && worker < r->nconns && r->wn[worker]) {
        for (conn_t *n = r->wn[worker]->nodes; n; n = n->next_node)
            conn_detach(n);
        return;
    }
    if (c)
        conn_detach(c);
}

static void rd_destroy(llmc_tier_t *t)
{
    redis_t *r = impl(t);

    for (unsigned i = 0; i < r->nconns; i++) {
        if (r->wn && r->wn[i]) {
            for (conn_t *n = r->wn[i]->nodes, *next; n; n = next) {
                next = n->next_node;
                conn_free(n);
            }
            free(r->wn[i]);
        } else if (!r->wn) {
            conn_free(r->conns[i]);
        }
    }
    conn_free(r->sub);
    if (r->part.free)
        r->part.free(r->part.arg);
    free(r->conns);
    free(r->wn);
    uv_mutex_destroy(&r->nodes_lock);
    free(r->nodes);
    free(r);
}

/* ---- for the other files of the tier (redis_int.h) ----------------------- */

_Static_assert(KEY_MAX <= LLMC_REDIS_KEY_MAX, "redis_int.h's bound holds every key");

static_assert(sizeof(char *) == sizeof(size_t), "ext_cmd_t's lens follow its argv aligned");

static ext_cmd_t *ext_cmd_new(int argc, const char **argv, const size_t *lens)
{
    size_t total = sizeof(ext_cmd_t) + (size_t)argc * (sizeof(char *) + sizeof(size_t));
    for (int i = 0; i < argc; i++)
        total += lens[i];
    ext_cmd_t *x = malloc(total);
    if (!x)
        return NULL;
    x->argc = argc;
    x->argv = (const char **)(x + 1);
    x->lens = (size_t *)(x->argv + argc);
    char *p = (char *)(x->lens + argc);
    for (int i = 0; i < argc; i++) {
        memcpy(p, argv[i], lens[i]);
        x->argv[i] = p;
        x->lens[i] = lens[i];
        p += lens[i];
    }
    return x;
}

int llmc__redis_ext_send(llmc_tier_t *t, unsigned worker, const char *rkey, size_t rklen,
                         int argc, const char **argv, const size_t *lens, llmc__redis_ext_cb cb,
                         void *arg)
{
    redis_t *r = impl(t);
    /* On a Cluster a copy is kept for redirected() to send again. */
    ext_cmd_t *x = r->wn ? ext_cmd_new(argc, argv, lens) : NULL;
    conn_t *c = r->wn && !x ? NULL : route(r, worker, rkey, rklen);
    op_t *op = c ? send_cmd(c, OP_EXT, argc, argv, lens) : NULL;

    if (!op) {
        free(x);
        return LLMC_EAGAIN;
    }
    op->ext = cb;
    op->arg = arg;
    op->xcmd = x;
    return 0;
}

size_t llmc__redis_key(llmc_tier_t *t, const llmc_key_t *key, char *out)
{
    return make_key(impl(t), key, out);
}

const char *llmc__redis_prefix(llmc_tier_t *t)
{
    return impl(t)->prefix;
}

void llmc__redis_set_part(llmc_tier_t *t, const llmc__redis_part_t *part)
{
    impl(t)->part = *part;
}

llmc__redis_vec_stats_t *llmc__redis_vec_stats(llmc_tier_t *t)
{
    return &impl(t)->vec;
}

void llmc__redis_tell(llmc_tier_t *t, const char *msg)
{
    tell(impl(t), "%s", msg);
}

static const llmc_tier_ops_t redis_ops = {
    .name = "redis",
    .lookup = rd_lookup,
    .put = rd_put,
    .purge = rd_purge,
    .stats = rd_stats,
    .xstats_desc = xstats_desc,
    .nxstats = sizeof(xstats_desc) / sizeof(xstats_desc[0]),
    .xstats = rd_xstats,
    .xrows_name = "nodes",
    .xrows_desc = nstats_desc,
    .nxrows = sizeof(nstats_desc) / sizeof(nstats_desc[0]),
    .xrows = rd_xrows,
    .lease = rd_lease,
    .lease_end = rd_lease_end,
    .attach = rd_attach,
    .detach = rd_detach,
    .destroy = rd_destroy,
};

int llmc_tier_redis_open(const llmc_redis_config_t *cfg, llmc_tier_t **out, char *err, size_t errlen)
{
    const char *prefix = cfg->prefix ? cfg->prefix : DEFAULT_PREFIX;
    redisReader *rd;
    redis_t *r;
    int rc;

    *out = NULL;
    if (strlen(prefix) > LLMC_REDIS_PREFIX_MAX) {
        snprintf(err, errlen, "--redis-prefix: longer than %d bytes", LLMC_REDIS_PREFIX_MAX);
        return LLMC_EINVAL;
    }
    if (!(r = calloc(1, sizeof(*r)))) {
        snprintf(err, errlen, "--redis: out of memory");
        return LLMC_ENOMEM;
    }
    if ((rc = llmc_redis_url_parse(cfg->url, &r->url, err, errlen)) < 0) {
        free(r);
        return rc;
    }
    bool v6 = strchr(r->url.host, ':') != NULL;
    snprintf(r->where, sizeof(r->where), "redis://%s%s%s:%d/%d", v6 ? "[" : "", r->url.host,
             v6 ? "]" : "", r->url.port, r->url.db);
    if (r->url.cluster)
        snprintf(r->where, sizeof(r->where), "the Redis Cluster of %s%s%s:%d and %u more seed%s",
                 v6 ? "[" : "", r->url.host, v6 ? "]" : "", r->url.port, r->url.nseeds - 1,
                 r->url.nseeds > 2 ? "s" : "");
    r->tag_open = r->url.cluster ? "{" : "";
    r->tag_close = r->url.cluster ? "}" : "";
    r->prefix_len = strlen(prefix);
    memcpy(r->prefix, prefix, r->prefix_len);
    r->timeout_ms = cfg->timeout_ms > 0 ? (uint64_t)cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    r->stuck_ms = 10 * r->timeout_ms > STUCK_MIN_MS ? 10 * r->timeout_ms : STUCK_MIN_MS;
    r->log = cfg->log;
    r->log_arg = cfg->log_arg;
    /* hiredis's own reply builders, wrapped by the guard. */
    if (!(rd = redisReaderCreate())) {
        free(r);
        snprintf(err, errlen, "--redis: out of memory");
        return LLMC_ENOMEM;
    }
    r->plain = *rd->fn;
    redisReaderFree(rd);
    if (!(r->nodes = calloc(NODE_STATS_MAX, sizeof(*r->nodes))) || uv_mutex_init(&r->nodes_lock)) {
        free(r->nodes);
        free(r);
        snprintf(err, errlen, "--redis: out of memory");
        return LLMC_ENOMEM;
    }
    r->guarded = (redisReplyObjectFunctions){
        .createString = guard_string,
        .createArray = guard_array,
        .createInteger = guard_integer,
        .createNil = guard_nil,
        .freeObject = r->plain.freeObject,
    };
    if (getrandom(&r->token_seed, sizeof(r->token_seed), GRND_NONBLOCK) != sizeof(r->token_seed))
        r->token_seed = (uint64_t)time(NULL) << 20 ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)r;
    atomic_init(&r->token_next, 0);
    snprintf(r->self_id, sizeof(r->self_id), "%016llx", (unsigned long long)r->token_seed);
    r->chan_len = (size_t)snprintf(r->chan, sizeof(r->chan), "%s%s", r->prefix, CHANNEL);
    r->peer_purge = cfg->peer_purge;
    r->peer_purge_arg = cfg->peer_purge_arg;
    atomic_init(&r->up, 0);
    atomic_init(&r->down_told, false);
    r->tier.ops = &redis_ops;
    r->tier.impl = r;
    *out = &r->tier;
    return 0;
}
