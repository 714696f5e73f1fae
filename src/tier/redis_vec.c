/*
 * tier/redis_vec.c: semantic questions shared through a Redis stream (see
 * redis_vec.h). Commands go through the Redis tier's connections
 * (redis_int.h's llmc__redis_ext_send): its reconnects, deadlines and
 * Cluster routing are theirs.
 */
#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "llmc/error.h"
#include "llmc/record.h"
#include "tier/redis_int.h"
#include "tier/redis_vec.h"
#include "tier/semantic.h"
#include "tier/semantic_log.h"

#define STREAM "semantic"
#define ID_MAX 48 /* a stream entry id: "<ms>-<seq>" */
#define ID_FILE "redis-semantic-id" /* in the data dir: our records' "from" */

/* What can fail, each told once when it starts failing and once when it
   works again, never per command. */
enum { K_PUBLISH, K_READ, K_ANSWER, KINDS };
static const char *const kind_what[KINDS] = {
    "adding questions to the shared semantic stream",
    "reading the shared semantic stream",
    "reading the answers to the peers' questions",
};

typedef struct vec {
    llmc_tier_t *redis, *sem;
    uint64_t maxlen;
    unsigned poll_ms;
    char stream[LLMC_REDIS_KEY_MAX];
    size_t stream_len;
    char self[17];         /* this gateway, in our records' "from" */
    llmc__redis_vec_stats_t *st; /* the Redis tier's (redis_int.h) */
    atomic_bool failing[KINDS]; /* a kind's last outcome was a failure (told once) */
    /* worker 0's loop only: */
    uv_timer_t timer;
    bool attached;         /* the timer is live */
    bool reading;          /* an XREAD in the air */
    unsigned gen, read_gen; /* resyncs seen; gen when the XREAD in the air was sent */
    /* A resync dropped our own questions with every local copy: until the
       read from the start reaches the stream's end, ours are indexed too. */
    bool regain;
    unsigned gets;         /* GETs in the air */
    char last[ID_MAX];     /* the last entry read ("0": from the start) */
} vec_t;

typedef struct peer_get {
    vec_t *v;
    llmc_semq_t q;
    bool own; /* ours, read back after a resync */
} peer_get_t;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* entries' times are wall-clock */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* Why a command came back without the reply wanted. */
static const char *why_of(const redisReply *reply)
{
    if (!reply)
        return "no reply (the connection was lost or closed)";
    return reply->type == REDIS_REPLY_ERROR ? reply->str : "an unexpected reply";
}

/* k failed (counted by the caller): told when it was working until now. */
static void failed(vec_t *v, int k, const char *why)
{
    char msg[400];

    if (atomic_exchange(&v->failing[k], true))
        return;
    snprintf(msg, sizeof(msg), "redis: %s fails: %.200s (counted in semantic/...; told again "
             "when it works)", kind_what[k], why);
    llmc__redis_tell(v->redis, msg);
}

static void worked(vec_t *v, int k)
{
    char msg[200];

    if (!atomic_load_explicit(&v->failing[k], memory_order_relaxed) ||
        !atomic_exchange(&v->failing[k], false))
        return;
    snprintf(msg, sizeof(msg), "redis: %s works again", kind_what[k]);
    llmc__redis_tell(v->redis, msg);
}

/* ---- publishing ---------------------------------------------------------- */

/* A lost XADD costs the peers one question: counted and told, not retried. */
static void on_added(void *arg, const redisReply *reply)
{
    vec_t *v = arg;

    if (reply && reply->type == REDIS_REPLY_STRING) {
        count(&v->st->published);
        worked(v, K_PUBLISH);
    } else {
        count(&v->st->publish_failures);
        failed(v, K_PUBLISH, why_of(reply));
    }
}

/* The semantic tier's share hook: on the storing worker's loop. */
static void publish(void *arg, unsigned worker, const uint8_t *rec, size_t len)
{
    vec_t *v = arg;
    char maxlen[24];
    int ml = snprintf(maxlen, sizeof(maxlen), "%llu", (unsigned long long)v->maxlen);
    const char *argv[] = {"XADD", v->stream, "MAXLEN", "~", maxlen, "*",
                          "from", v->self, "q", (const char *)rec};
    size_t lens[] = {4, v->stream_len, 6, 1, (size_t)ml, 1, 4, strlen(v->self), 1, len};
    if (llmc__redis_ext_send(v->redis, worker, v->stream, v->stream_len, 10, argv, lens,
                             on_added, v) < 0) {
        count(&v->st->publish_failures);
        failed(v, K_PUBLISH, "no connection to the stream's node can take it");
    }
}

/* ---- reading ------------------------------------------------------------- */

static void on_answer(void *arg, const redisReply *reply)
{
    peer_get_t *pg = arg;
    vec_t *v = pg->v;
    llmc_entry_t *e = NULL;

    v->gets--;
    if (reply && reply->type == REDIS_REPLY_STRING &&
        llmc_record_decode(&pg->q.key, (const uint8_t *)reply->str, reply->len, &e) == 0) {
        (void)llmc_tier_semantic_add_peer(v->sem, &pg->q, e, wall_ms(), pg->own);
        llmc_entry_unref(e);
        worked(v, K_ANSWER);
    } else if (reply && reply->type == REDIS_REPLY_NIL) {
        count(&v->st->answers_gone); /* purged or expired: nothing to index */
        worked(v, K_ANSWER);
    } else {
        count(&v->st->answer_failures);
        failed(v, K_ANSWER, reply && reply->type == REDIS_REPLY_STRING
                                ? "a value that is not a record of its key"
                                : why_of(reply));
    }
    llmc_semq_clear(&pg->q);
    free(pg);
}

/* One stream entry: [id, [field, value, ...]]. Another gateway's question
   has its answer read back; ours and anything malformed are skipped. */
static void got_entry(vec_t *v, const redisReply *ent)
{
    if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 ||
        ent->element[0]->type != REDIS_REPLY_STRING || ent->element[0]->len >= ID_MAX ||
        ent->element[1]->type != REDIS_REPLY_ARRAY) {
        count(&v->st->bad_entries);
        return;
    }
    memcpy(v->last, ent->element[0]->str, ent->element[0]->len);
    v->last[ent->element[0]->len] = '\0';
    const redisReply *f = ent->element[1], *from = NULL, *rec = NULL;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *name = f->element[i], *val = f->element[i + 1];
        if (name->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
            continue;
        if (name->len == 4 && memcmp(name->str, "from", 4) == 0)
            from = val;
        else if (name->len == 1 && name->str[0] == 'q')
            rec = val;
    }
    bool own = from && from->len == strlen(v->self) && memcmp(from->str, v->self, from->len) == 0;
    if (!rec)
        count(&v->st->bad_entries);
    if (!rec || (own && !v->regain))
        return;
    peer_get_t *pg = calloc(1, sizeof(*pg));
    if (!pg)
        return;
    pg->v = v;
    pg->own = own;
    /* Never more than LLMC_REDIS_VEC_GETS: a read is sent only while fewer
       than half are in the air, and brings at most LLMC_REDIS_VEC_COUNT. */
    _Static_assert(LLMC_REDIS_VEC_GETS / 2 + LLMC_REDIS_VEC_COUNT <= LLMC_REDIS_VEC_GETS,
                   "a read's entries fit beside the GETs a read may be sent with");
    assert(v->gets < LLMC_REDIS_VEC_GETS);
    if (llmc_semq_decode((const uint8_t *)rec->str, rec->len, &pg->q) < 0) {
        count(&v->st->bad_entries);
        free(pg);
        return;
    }
    char key[LLMC_REDIS_KEY_MAX];
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, llmc__redis_key(v->redis, &pg->q.key, key)};
    if (llmc__redis_ext_send(v->redis, 0, key, lens[1], 2, argv, lens, on_answer, pg) < 0) {
        count(&v->st->answer_failures);
        failed(v, K_ANSWER, "no connection to the answer's node can take it");
        llmc_semq_clear(&pg->q);
        free(pg);
        return;
    }
    v->gets++;
}

static void on_poll(uv_timer_t *t);

static void on_read(void *arg, const redisReply *reply)
{
    vec_t *v = arg;
    size_t n = 0;

    v->reading = false;
    if (reply && (reply->type == REDIS_REPLY_ARRAY || reply->type == REDIS_REPLY_NIL)) {
        count(&v->st->reads);
        worked(v, K_READ);
    } else {
        count(&v->st->read_failures);
        failed(v, K_READ, why_of(reply));
    }
    /* Sent before a resync: its entries would move last past what the
       resync dropped; the read from the start gets them again. */
    if (v->read_gen != v->gen)
        return;
    /* [[stream, [entry, ...]]], or nil when nothing is new. */
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
        reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2 &&
        reply->element[0]->element[1]->type == REDIS_REPLY_ARRAY) {
        const redisReply *ents = reply->element[0]->element[1];
        n = ents->elements;
        for (size_t i = 0; i < n; i++)
            got_entry(v, ents->element[i]);
    }
    if (reply && (reply->type == REDIS_REPLY_ARRAY || reply->type == REDIS_REPLY_NIL) &&
        n < LLMC_REDIS_VEC_COUNT)
        v->regain = false; /* caught up: what we add from now on, we hold */
    /* A full read: more is waiting (a late start catching up); read again now. */
    if (v->attached && n == LLMC_REDIS_VEC_COUNT && v->gets < LLMC_REDIS_VEC_GETS / 2)
        uv_timer_start(&v->timer, on_poll, 0, v->poll_ms);
}

static void on_poll(uv_timer_t *t)
{
    vec_t *v = t->data;
    char nstr[16];

    if (v->reading || !v->attached || v->gets >= LLMC_REDIS_VEC_GETS / 2)
        return;
    int cl = snprintf(nstr, sizeof(nstr), "%d", LLMC_REDIS_VEC_COUNT);
    const char *argv[] = {"XREAD", "COUNT", nstr, "STREAMS", v->stream, v->last};
    size_t lens[] = {5, 5, (size_t)cl, 7, v->stream_len, strlen(v->last)};
    if (llmc__redis_ext_send(v->redis, 0, v->stream, v->stream_len, 6, argv, lens, on_read, v) == 0) {
        v->reading = true;
        v->read_gen = v->gen;
    } else {
        count(&v->st->read_failures);
        failed(v, K_READ, "no connection to the stream's node can take it");
    }
}

/* The Redis tier listened to invalidations again and dropped every local
   copy, the peers' questions with them: the stream is read again from its
   start (worker 0's loop, like the reads). */
static void vec_resync(void *arg)
{
    vec_t *v = arg;

    v->gen++;
    v->regain = true;
    count(&v->st->rereads);
    snprintf(v->last, sizeof(v->last), "0");
    if (v->attached)
        uv_timer_start(&v->timer, on_poll, 0, v->poll_ms);
}

/* ---- life ---------------------------------------------------------------- */

/* This data dir's id in our records (ID_FILE in dir, made once): stable
   across restarts, because the semantic tier restores its own questions
   from dir, and their records in the stream must then still read as ours
   (skipped), not as a peer's indexed a second time. 0, or -1 (then the id
   is per process). Main thread, at start. */
static int own_id(const char *dir, char out[17])
{
    char path[4096], tmp[4096 + 8], buf[32];
    uint64_t id;
    size_t n = 0;
    FILE *f;

    if ((size_t)snprintf(path, sizeof(path), "%s/" ID_FILE, dir) >= sizeof(path))
        return -1;
    if ((f = fopen(path, "r"))) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        if (n >= 16 && strspn(buf, "0123456789abcdef") == 16) {
            memcpy(out, buf, 16);
            out[16] = '\0';
            return 0;
        }
    }
    if (getrandom(&id, sizeof(id), 0) != sizeof(id))
        return -1;
    snprintf(out, 17, "%016llx", (unsigned long long)id);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (!(f = fopen(tmp, "w")))
        return -1;
    bool ok = fprintf(f, "%s\n", out) == 17;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return -1;
    }
    return 0;
}

static int vec_attach(void *arg, uv_loop_t *loop)
{
    vec_t *v = arg;
    if (uv_timer_init(loop, &v->timer) != 0)
        return LLMC_ENOMEM;
    v->timer.data = v;
    v->attached = true;
    uv_timer_start(&v->timer, on_poll, v->poll_ms, v->poll_ms);
    return 0;
}

static void vec_detach(void *arg)
{
    vec_t *v = arg;
    if (!v->attached)
        return;
    v->attached = false;
    uv_close((uv_handle_t *)&v->timer, NULL); /* v lives until the tier's destroy */
}

static void vec_free(void *arg)
{
    free(arg);
}

int llmc_tier_redis_share_semantic(llmc_tier_t *redis, llmc_tier_t *sem,
                                   const llmc_redis_vec_config_t *cfg)
{
    vec_t *v = calloc(1, sizeof(*v));
    uint64_t id = 0;

    if (!v)
        return LLMC_ENOMEM;
    v->redis = redis;
    v->sem = sem;
    v->st = llmc__redis_vec_stats(redis);
    v->maxlen = cfg && cfg->maxlen ? cfg->maxlen : LLMC_REDIS_VEC_MAXLEN;
    v->poll_ms = cfg && cfg->poll_ms ? cfg->poll_ms : LLMC_REDIS_VEC_POLL_MS;
    v->stream_len = (size_t)snprintf(v->stream, sizeof(v->stream), "%s%s",
                                     llmc__redis_prefix(redis), STREAM);
    if (!(cfg && cfg->dir && own_id(cfg->dir, v->self) == 0)) {
        if (getrandom(&id, sizeof(id), 0) != sizeof(id))
            id = (uint64_t)wall_ms() ^ ((uint64_t)(uintptr_t)v << 16);
        snprintf(v->self, sizeof(v->self), "%016llx", (unsigned long long)id);
    }
    snprintf(v->last, sizeof(v->last), "0");
    llmc_tier_semantic_share(sem, publish, v);
    llmc__redis_part_t part = {.attach = vec_attach, .detach = vec_detach, .free = vec_free,
                               .resync = vec_resync, .arg = v};
    llmc__redis_set_part(redis, &part);
    return 0;
}
