/*
 * gateway/flight.c: the single-flight table and the shared answer buffer.
 *
 * The table is a fixed array of shards, each a mutex and a small chained
 * hash. Flights are few (only calls in the air) and short-lived, so chains
 * stay short without resizing; the shard count is what spreads contention.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lock.h"
#include "gateway/flight.h"
#include "llmc/error.h"

#define BUCKETS_PER_SHARD 256

typedef struct shard {
    pthread_mutex_t mu;
    llmc_flight_t *buckets[BUCKETS_PER_SHARD];
    size_t count;
} shard_t;

struct llmc_flight_table {
    unsigned nshards;
    shard_t *shards;
};

static uint64_t key_hash(const llmc_key_t *k)
{
    uint64_t h;
    memcpy(&h, k->b + 8, sizeof(h)); /* the key is SHA-256: any 8 bytes are uniform */
    return h;
}

llmc_flight_table_t *llmc_flight_table_new(unsigned nshards)
{
    llmc_flight_table_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->nshards = nshards ? nshards : 64;
    t->shards = calloc(t->nshards, sizeof(shard_t));
    if (!t->shards) {
        free(t);
        return NULL;
    }
    for (unsigned i = 0; i < t->nshards; i++)
        pthread_mutex_init(&t->shards[i].mu, NULL);
    return t;
}

void llmc_flight_table_free(llmc_flight_table_t *t)
{
    if (!t)
        return;
    for (unsigned i = 0; i < t->nshards; i++)
        pthread_mutex_destroy(&t->shards[i].mu);
    free(t->shards);
    free(t);
}

size_t llmc_flight_table_count(llmc_flight_table_t *t)
{
    size_t n = 0;
    for (unsigned i = 0; i < t->nshards; i++) {
        pthread_mutex_lock(&t->shards[i].mu);
        n += t->shards[i].count;
        pthread_mutex_unlock(&t->shards[i].mu);
    }
    return n;
}

static shard_t *shard_of(llmc_flight_table_t *t, const llmc_key_t *key, llmc_flight_t ***bucket)
{
    uint64_t h = key_hash(key);
    shard_t *s = &t->shards[h % t->nshards];
    *bucket = &s->buckets[(h / t->nshards) % BUCKETS_PER_SHARD];
    return s;
}

static llmc_flight_t *flight_alloc(const llmc_key_t *key, bool is_stream)
{
    llmc_flight_t *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->key = *key;
    f->is_stream = is_stream;
    atomic_init(&f->refcnt, 1);
    pthread_mutex_init(&f->mu, NULL);
    return f;
}

llmc_flight_t *llmc_flight_new_private(const llmc_key_t *key, bool is_stream)
{
    return flight_alloc(key, is_stream);
}

llmc_flight_t *llmc_flight_join(llmc_flight_table_t *t, const llmc_key_t *key, bool is_stream,
                                bool *created)
{
    return llmc_flight_join_as(t, key, NULL, is_stream, created);
}

llmc_flight_t *llmc_flight_join_as(llmc_flight_table_t *t, const llmc_key_t *key,
                                   const llmc_key_t *caller, bool is_stream, bool *created)
{
    static const llmc_key_t nobody;
    llmc_flight_t **bucket;
    shard_t *s = shard_of(t, key, &bucket);
    if (!caller)
        caller = &nobody;
    pthread_mutex_lock(&s->mu);
    for (llmc_flight_t *f = *bucket; f; f = f->hnext) {
        /* Flights of one key made as other callers share the bucket. */
        if (memcmp(f->key.b, key->b, LLMC_KEY_LEN) == 0 &&
            memcmp(f->caller.b, caller->b, LLMC_KEY_LEN) == 0) {
            llmc_flight_ref(f);
            pthread_mutex_unlock(&s->mu);
            *created = false;
            return f;
        }
    }
    llmc_flight_t *f = flight_alloc(key, is_stream);
    if (f) {
        f->caller = *caller;
        f->table = t;
        f->in_table = true;
        f->hnext = *bucket;
        *bucket = f;
        s->count++;
        llmc_flight_ref(f); /* the table's reference */
    }
    pthread_mutex_unlock(&s->mu);
    *created = f != NULL;
    return f;
}

void llmc_flight_unpublish(llmc_flight_t *f)
{
    if (!f->table)
        return;
    llmc_flight_t **bucket;
    shard_t *s = shard_of(f->table, &f->key, &bucket);
    bool dropped = false;
    pthread_mutex_lock(&s->mu);
    if (f->in_table) {
        for (llmc_flight_t **pp = bucket; *pp; pp = &(*pp)->hnext) {
            if (*pp == f) {
                *pp = f->hnext;
                break;
            }
        }
        f->in_table = false;
        s->count--;
        dropped = true;
    }
    pthread_mutex_unlock(&s->mu);
    if (dropped)
        llmc_flight_unref(f);
}

void llmc_flight_ref(llmc_flight_t *f)
{
    atomic_fetch_add_explicit(&f->refcnt, 1, memory_order_relaxed);
}

void llmc_flight_unref(llmc_flight_t *f)
{
    if (!f || atomic_fetch_sub_explicit(&f->refcnt, 1, memory_order_acq_rel) != 1)
        return;
    llmc_entry_unref(f->entry);
    pthread_mutex_destroy(&f->mu);
    free(f->pass_hdrs);
    free(f->body);
    free(f->assembled);
    free(f);
}

/* Notifies the waiters that want every step (streams). Lock held. */
static void notify_data_waiters(llmc_flight_t *f)
{
    LLMC_ASSERT_LOCKED(&f->mu);
    for (llmc_flight_waiter_t *w = f->waiters; w; w = w->next)
        if (w->wants_data)
            w->notify(w);
}

void llmc_flight_head(llmc_flight_t *f, int status, const char *content_type,
                      const char *pass, size_t pass_len)
{
    pthread_mutex_lock(&f->mu);
    f->status = status;
    snprintf(f->content_type, sizeof(f->content_type), "%s", content_type ? content_type : "");
    if (pass_len && (f->pass_hdrs = malloc(pass_len))) {
        memcpy(f->pass_hdrs, pass, pass_len);
        f->pass_len = pass_len;
    }
    f->head_known = true;
    notify_data_waiters(f);
    pthread_mutex_unlock(&f->mu);
}

int llmc_flight_data(llmc_flight_t *f, const char *buf, size_t len)
{
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    if (f->body_len + len + 1 > f->body_cap) {
        size_t cap = f->body_cap ? f->body_cap : 4096;
        while (cap < f->body_len + len + 1)
            cap *= 2;
        char *nb = realloc(f->body, cap);
        if (!nb) {
            rc = LLMC_ENOMEM;
            goto out;
        }
        f->body = nb;
        f->body_cap = cap;
    }
    memcpy(f->body + f->body_len, buf, len);
    f->body_len += len;
    f->body[f->body_len] = '\0';
    notify_data_waiters(f);
out:
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void llmc_flight_finish(llmc_flight_t *f, int err, const char *errmsg, bool invalid,
                        llmc_entry_t *entry)
{
    /* Unpublish first: the entry is already in the cache, so a request that
       misses the table now finds the entry instead. */
    llmc_flight_unpublish(f);
    pthread_mutex_lock(&f->mu);
    f->done = true;
    f->err = err;
    f->invalid = invalid;
    snprintf(f->errmsg, sizeof(f->errmsg), "%s", errmsg ? errmsg : "");
    f->entry = entry ? llmc_entry_ref(entry) : NULL;
    for (llmc_flight_waiter_t *w = f->waiters; w; w = w->next)
        w->notify(w);
    pthread_mutex_unlock(&f->mu);
}

void llmc_flight_set_assembled(llmc_flight_t *f, char *json, size_t len)
{
    pthread_mutex_lock(&f->mu);
    free(f->assembled);
    f->assembled = json;
    f->assembled_len = len;
    pthread_mutex_unlock(&f->mu);
}

void llmc_flight_set_not_answer(llmc_flight_t *f)
{
    pthread_mutex_lock(&f->mu);
    f->not_answer = true;
    pthread_mutex_unlock(&f->mu);
}

bool llmc_flight_attach(llmc_flight_t *f, llmc_flight_waiter_t *w)
{
    pthread_mutex_lock(&f->mu);
    bool linked = !f->done;
    if (linked) {
        w->prev = NULL;
        w->next = f->waiters;
        if (f->waiters)
            f->waiters->prev = w;
        f->waiters = w;
        w->attached = true;
        f->nwaiters++;
    }
    pthread_mutex_unlock(&f->mu);
    return linked;
}

void llmc_flight_detach(llmc_flight_t *f, llmc_flight_waiter_t *w)
{
    pthread_mutex_lock(&f->mu);
    if (w->attached) {
        if (w->prev)
            w->prev->next = w->next;
        else
            f->waiters = w->next;
        if (w->next)
            w->next->prev = w->prev;
        w->attached = false;
        f->nwaiters--;
    }
    pthread_mutex_unlock(&f->mu);
}
