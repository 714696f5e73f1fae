/*
 * gateway/flight.h: one upstream call and everyone waiting for it.
 *
 * A flight is the answer to one cache key that is being fetched. Identical
 * misses that arrive while it is in the air (on any thread) join it instead
 * of calling the upstream again: single-flight, or "request coalescing".
 * The flight owns the growing answer (status, headers, body bytes) so that
 * waiters on other threads can read it: all at the end for a plain answer,
 * piece by piece for a stream.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The upstream call belongs to the flight, not to the client who started
 *   it: if that client leaves, the others still get the answer, and the
 *   answer is still cached.
 * - The answer is stored in the cache before the flight leaves the table,
 *   so there is no moment when a request finds neither and calls again.
 * - Waiters are notified, never called: notify() must only queue the waiter
 *   for its own loop thread (it runs with the flight lock held), and that
 *   thread then reads the flight under the lock and writes to its client.
 * - Lock order: table shard, then flight, then a worker's inbox.
 */
#ifndef LLMC_GW_FLIGHT_H
#define LLMC_GW_FLIGHT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "llmc/entry.h"

typedef struct llmc_flight llmc_flight_t;
typedef struct llmc_flight_table llmc_flight_table_t;

typedef struct llmc_flight_waiter {
    struct llmc_flight_waiter *prev, *next; /* in the flight's list, under its lock */
    bool attached;
    bool wants_data;                        /* notify on head and data, not only at the end */
    void (*notify)(struct llmc_flight_waiter *w); /* queue w for its thread; lock held */
} llmc_flight_waiter_t;

struct llmc_flight {
    llmc_key_t key;
    /* Who the call is made as, when that is not in the key (a shared cache
       whose clients send their own credentials upstream): the hash of that
       credential, all zero otherwise. A flight is joined only by requests
       with its key and its caller, so one client's bad key never becomes
       another's 401. */
    llmc_key_t caller;
    _Atomic int refcnt;
    pthread_mutex_t mu;
    llmc_flight_table_t *table;   /* NULL for a private (uncoalesced) flight */
    bool in_table;                /* under the table shard lock */
    bool is_stream;               /* the upstream answers with SSE (set at creation) */
    llmc_flight_t *hnext;         /* table chain */

    /* Everything below is guarded by mu. */
    bool head_known, done;
    int status;                   /* upstream status, 0 before the head */
    char content_type[128];
    char *pass_hdrs;              /* upstream headers to hand on, "Name: v\r\n" lines */
    size_t pass_len;
    char *body;                   /* bytes so far (the whole answer once done) */
    size_t body_len, body_cap;
    int err;                      /* LLMC_E* when the call failed */
    char errmsg[256];
    llmc_entry_t *entry;          /* the stored entry, when the answer was cached */
    bool invalid;                 /* 2xx but not a valid answer (not JSON, cut stream) */
    bool not_answer;              /* 2xx and valid, but not the endpoint's answer (gateway/
                                     shape.h, or not a 200): waiters get it as it came, never
                                     in another form */
    char *assembled;              /* a stream's answer as one JSON completion, or NULL */
    size_t assembled_len;
    /* The upstream was asked for a stream with stream_options.include_usage,
       so its answer ends with a usage chunk (choices: []) that a waiter who
       did not ask for one must not get. Set by the leader before the call. */
    bool upstream_usage;
    /* The answer is another gateway's call, brought by this tier's lease
       (fetch.c); NULL when this gateway made the call. */
    const char *filled_by;
    unsigned nwaiters;
    llmc_flight_waiter_t *waiters;
};

/* A table of flights in the air, sharded by key. NULL when out of memory. */
llmc_flight_table_t *llmc_flight_table_new(unsigned nshards);
void llmc_flight_table_free(llmc_flight_table_t *t);
/* Flights in the table now. */
size_t llmc_flight_table_count(llmc_flight_table_t *t);

/*
 * Returns the flight for key with a reference for the caller, creating and
 * publishing it when none is in the air (*created = true: the caller leads
 * and must start the call). NULL when out of memory. Any thread.
 */
llmc_flight_t *llmc_flight_join(llmc_flight_table_t *t, const llmc_key_t *key, bool is_stream,
                                bool *created);
/* The same, joining only a flight made as caller (see llmc_flight.caller;
   NULL: none, as llmc_flight_join). */
llmc_flight_t *llmc_flight_join_as(llmc_flight_table_t *t, const llmc_key_t *key,
                                   const llmc_key_t *caller, bool is_stream, bool *created);

/* A flight that nobody else can join (no-store, streams, uncacheable routes). */
llmc_flight_t *llmc_flight_new_private(const llmc_key_t *key, bool is_stream);

void llmc_flight_ref(llmc_flight_t *f);
void llmc_flight_unref(llmc_flight_t *f);

/* Producer side, the leader's loop thread. head: once; data: appends (0 or
   LLMC_ENOMEM); finish: once, with err 0 or LLMC_E*, and the entry that was
   stored (may be NULL; the flight takes a reference). finish removes the
   flight from the table and notifies every waiter. */
void llmc_flight_head(llmc_flight_t *f, int status, const char *content_type,
                      const char *pass, size_t pass_len);
int llmc_flight_data(llmc_flight_t *f, const char *buf, size_t len);
void llmc_flight_finish(llmc_flight_t *f, int err, const char *errmsg, bool invalid,
                        llmc_entry_t *entry);

/* A stream's answer assembled into one JSON completion (the flight takes
   ownership of json, a malloc'd string), for waiters that asked without
   "stream". Producer side, before finish. */
void llmc_flight_set_assembled(llmc_flight_t *f, char *json, size_t len);

/* The answer is a 2xx that is not the endpoint's answer (see not_answer).
   Producer side, before finish. */
void llmc_flight_set_not_answer(llmc_flight_t *f);

/* Removes the flight from its table so later requests start a new call
   (finish does this too). Any thread. */
void llmc_flight_unpublish(llmc_flight_t *f);

/* Consumer side. attach: links w (under the lock) and returns true; when the
   flight is already done it links nothing and returns false: read the result
   now. detach: unlinks w if still linked. Both lock the flight. */
bool llmc_flight_attach(llmc_flight_t *f, llmc_flight_waiter_t *w);
void llmc_flight_detach(llmc_flight_t *f, llmc_flight_waiter_t *w);

#endif
