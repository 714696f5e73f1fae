/*
 * gateway/gw_int.h: what the gateway's own files share: the per-request
 * state and the helpers that answer from an entry or a flight.
 */
#ifndef LLMC_GW_INT_H
#define LLMC_GW_INT_H

#include "gateway/gateway.h"
#include "gateway/policy.h"
#include "llmc/key.h"

typedef enum gw_route {
    R_NONE, R_CHAT, R_COMPLETIONS, R_EMBEDDINGS, R_MODELS, R_ASK, R_HEALTH, R_STATS
} gw_route_t;

typedef struct gw_req {
    llmc_flight_waiter_t fw;     /* first member: a waiter pointer is a gw_req pointer */
    llmc_http_req_t *req;        /* NULL once the client has left */
    llmc_worker_t *w;
    gw_route_t route;
    const char *xcache;          /* HIT, MISS, ... for the log; NULL before a decision */
    const char *tier;            /* tier that answered a hit */
    const char *fwd;             /* why a miss went upstream (RFC 9211 fwd); NULL: uri-miss */
    char keyhex[2 * LLMC_KEY_LEN + 1];
    llmc_key_t key;
    llmc_policy_t policy;
    bool private_scope;
    bool stream;                 /* the client asked for "stream": true */
    bool include_usage;          /* stream_options.include_usage */
    struct pacer *pacer;         /* a paced replay in progress */
    bool started;                /* stream head sent */
    size_t sent;                 /* stream bytes sent */
    llmc_flight_t *flight;
    llmc_entry_t *stale;         /* expired entry kept for stale-if-error */
    bool queued, dead;           /* inbox state, under the worker's inbox lock */
    bool waited;                 /* joined a flight: the inbox may hold it */
    unsigned busy;               /* gateway code is running on gr: don't free it yet */
    bool finished;               /* the server is done with the request (on_done ran) */
    struct gw_req *inbox_next;
} gw_req_t;

/* Freshness of an entry for a request's policy. */
typedef enum { USE_NO, USE_FRESH, USE_STALE } gw_use_t;
gw_use_t llmc__gw_usable(const llmc_policy_t *p, const llmc_entry_t *e, int64_t now_ms);

/* Answers gr from a cached entry (hit or stale). */
void llmc__gw_respond_entry(gw_req_t *gr, llmc_entry_t *e, const char *xcache,
                            const char *cache_status, int64_t now_ms);
/* Answers gr from its finished flight. */
void llmc__gw_respond_flight(gw_req_t *gr);
/* The client left during a paced replay: stop it. */
void llmc__gw_pacer_abort(gw_req_t *gr);
/* Stream relay step for a waiter that wants data. */
void llmc__gw_stream_step(gw_req_t *gr);
/* Starts the upstream call of a flight this request leads. */
int llmc__gw_fetch_start(gw_req_t *gr, const char *method, const char *url,
                         const char *body, size_t body_len, bool store, const char *model);
/* A zeroed request context from w's spares (or the heap); NULL when out of
   memory. Loop thread of w. */
gw_req_t *llmc__gw_req_new(llmc_worker_t *w);
/* Marks gr in use around code that calls into the server, which can finish
   (and would otherwise free) the request synchronously; release frees gr
   then if the request finished meanwhile. */
void llmc__gw_req_hold(gw_req_t *gr);
void llmc__gw_req_release(gw_req_t *gr);
/* Queues a waiter on its worker's inbox (flight lock held). */
void llmc__gw_waiter_notify(llmc_flight_waiter_t *fw);
/* Shutdown: cancels this worker's upstream calls, finishing their flights. */
void llmc__gw_fetch_cancel_all(llmc_worker_t *w);
/* Ends gr's part in its flight (detach, unref). */
void llmc__gw_leave_flight(gw_req_t *gr);
/* The value of a list-valued request header (Cache-Control, Pragma,
   If-None-Match): the server keeps each line, but several lines mean their
   values joined with ", " (RFC 9110 5.3). Returns the only line's value as
   is, the join in a malloc'd *owned (free it) when there are several, or
   NULL when there is none. */
const char *llmc__gw_list_header(const llmc_http_req_t *req, const char *name, char **owned);
/* OpenAI-style error for gr with the cache headers. */
void llmc__gw_error(gw_req_t *gr, int status, const char *type, const char *code,
                    const char *msg);

#endif
