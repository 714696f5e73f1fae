/*
 * gateway/gw_int.h: what the gateway's own files share: a request's
 * context (gw_req_t) and its states, and the functions each file offers
 * the ones above it.
 *
 * The files, each calling only those below it:
 *   worker.c    threads, start and stop, the inbox's wake-up
 *   handler.c   the route table and a request's steps (the state machine)
 *   admin.c     the admin routes: entry metadata, deletes and purges
 *   relay.c     the routes passed through uncached: one upstream call per
 *               request, its answer relayed as it comes
 *   respond.c   answers from an entry, a flight or an error
 *   fetch.c     the upstream call behind a flight, and the store
 *   req.c       a request context's life: create, states, park, resume,
 *               refcount, the one finish (access log, counters)
 *   stats.c, policy.c, ask.c, flight.c, gateway.c   below them all
 */
#ifndef LLMC_GW_INT_H
#define LLMC_GW_INT_H

#include "gateway/bymodel.h"
#include "gateway/gateway.h"
#include "gateway/policy.h"
#include "llmc/key.h"
#include "tier/set.h"

/*
 * A request's states. Each step of handler.c returns the next one, and
 * req.c checks every transition against its table:
 *
 *   NEW -> LOOKUP -> [PARKED_TIER -> LOOKUP ...] -> RESPOND
 *                                               \-> FLIGHT -> [PARKED_FLIGHT] -> RESPOND
 *   NEW -> PARKED_PURGE -> RESPOND         (an admin purge, answered once every tier has)
 *   NEW or LOOKUP -> PARKED_PARSE -> NEW   (a body over --parse-offload-bytes is parsed on
 *                                           the thread pool; the step it was parsed for then
 *                                           goes on from NEW, the body parsed)
 *   NEW -> RELAY     (a route passed through: relay.c answers, as the upstream does)
 *   RESPOND -> PARKED_ENCODE -> RESPOND  (a hit whose compressed form is missing and at least
 *                                         --compress-offload-bytes: built on the thread pool,
 *                                         then the answer goes on from RESPOND)
 *   any state -> DONE, when the server is finished with the request
 *
 * RESPOND means the answer is the server's now (being written, streamed,
 * or replayed); nothing in the pipeline runs for the request after it,
 * except that a hit may wait in PARKED_ENCODE for the compressed form it
 * was decided to go in (the headers are made again when it comes back).
 */
typedef enum gr_state {
    GR_NEW,            /* routed; nothing decided yet */
    GR_LOOKUP,         /* walking the tiers */
    GR_PARKED_TIER,    /* a tier answers later; the lookup holds a reference
                          (also an admin explain's, admin.c) */
    GR_FLIGHT,         /* a miss: join or lead the flight for the key */
    GR_PARKED_FLIGHT,  /* waiting on the flight (its data, or its end) */
    GR_PARKED_PURGE,   /* an admin purge: waiting for every tier's count */
    GR_PARKED_PARSE,   /* the body is parsed on the thread pool; the parse holds a reference */
    GR_PARKED_ENCODE,  /* a hit waits for its compressed form, built on the thread pool; the
                          build holds a reference (respond.c), hit the entry answered from */
    GR_RESPOND,        /* the answer is handed to the server */
    GR_RELAY,          /* passed through: relay.c alone answers, from its own call */
    GR_DONE,           /* the server finished the request; the context may
                          live on while a lookup, the inbox or a replay
                          still holds a reference */
    GR_NSTATES
} gr_state_t;

/* How the stored answer is given to the client. */
typedef enum gw_form {
    FORM_RAW,          /* the stored body itself (or its SSE replay for a stream) */
    FORM_ASK,          /* GET /ask's {"answer": ..., "source": ...} */
} gw_form_t;

/* What a step decided to answer; deliver() (handler.c) writes it. */
typedef enum gw_answer {
    ANS_NONE,
    ANS_ERROR,         /* err_* */
    ANS_HIT,           /* hit, hit_xcache */
    ANS_FLIGHT,        /* the finished flight */
    ANS_STREAM_END,    /* the end of a relayed stream */
} gw_answer_t;

/* A row of the route table (handler.c). */
typedef struct gw_route gw_route_t;

typedef struct gw_req {
    llmc_flight_waiter_t fw;     /* first member: a waiter pointer is a gw_req pointer */
    llmc_set_lookup_t lookup;    /* the walk through the tiers */
    llmc_tier_query_t query;
    llmc_http_req_t *req;        /* NULL once the client has left */
    llmc_worker_t *w;
    gr_state_t state;            /* req.c alone writes it */
    _Atomic int refs;            /* the server's, a pending lookup's, the inbox's,
                                    a replay's, and running code's (req.c) */
    bool queued;                 /* in the inbox; under w->inbox_mu (req.c) */
    struct gw_req *inbox_next;   /* the inbox list, or the spare list (req.c) */

    const gw_route_t *route;
    const struct llmc_dialect *dialect; /* the route's API (dialect.h); NULL: OpenAI's */
    const char *route_arg;       /* the path below a prefix route's ("/admin/cache/" KEY) */
    json_t *admin_sel;           /* an admin purge's selector, echoed in its answer */
    gw_form_t form;
    bool stream_ok;              /* the route can answer with a stream */
    const char *xcache;          /* HIT, MISS, ... for the log; NULL before a decision */
    const char *tier;            /* a tier behind the front that answered a hit, or NULL */
    const char *fwd;             /* why a miss went upstream (RFC 9211 fwd); NULL: uri-miss */
    const char *pass_why;        /* a cacheable route's request passed through: the
                                    field that made it so (Cache-Status detail) */
    char keyhex[2 * LLMC_KEY_LEN + 1];
    llmc_key_t key;
    llmc_policy_t policy;
    bool private_scope;
    bool known;                  /* the fingerprint was known: no canonical body yet */
    llmc_key_t fp;               /* the request's fingerprint, and what the map */
    uint32_t fp_flags;           /* remembers with it (FP_*), kept across a parse */
    bool parse_for_miss;         /* the body is parsed for the miss, after the lookup */
    bool parsed_off_loop;        /* canon came from the thread pool: it is freed there too */
    llmc_http_body_t body_taken; /* the request's body, taken from the server for a parse
                                    off the loop (req->body and body point into it) */
    bool parsed;                 /* canon holds the parsed body */
    bool stream;                 /* the client asked for "stream": true */
    bool include_usage;          /* stream_options.include_usage, as the client asked */
    bool usage_asked;            /* the body a streaming miss sends upstream asks for
                                    usage: the client's own, or added (handler.c) */
    char scope[2 * LLMC_KEY_LEN + 1];
    /* --client-keys: the key the request presented, in a table it holds a
       reference to (a SIGHUP may swap the worker's meanwhile); NULL when off. */
    struct llmc_clients *clients;
    const struct llmc_client *client;
    const char *cred;            /* that key in the request's headers (the cache scope's) */
    unsigned denied;             /* LLMC_CLIENT_DENIED_*: what the key may not ask (X-Cache-Denied) */

    /* What a miss sends upstream, kept across a parked lookup. */
    const char *path;            /* the endpoint as keyed and forwarded: a static string */
    const char *body;            /* the client's bytes, or ask_body, or fwd_body */
    size_t body_len;
    char *ask_body;              /* GET /ask's chat request */
    char *fwd_body;              /* the body without the "cache" extension */
    llmc_canon_t canon;

    gw_answer_t answer;
    bool err_final;              /* the error stays whatever the retry: a 504 for
                                    only-if-cached says X-Should-Retry: false */
    int err_status;
    const char *err_type, *err_code;
    char *err_msg;               /* malloc'd (errors only: a hit pays no bytes for it) */
    llmc_entry_t *hit;           /* a reference until delivered */
    const char *hit_xcache;
    float similarity;            /* a semantic hit's cosine (0: exact), for X-Cache-Similarity */
    bool verify;                 /* that hit is also asked of the model in the background
                                    (issue 16): handler.c starts a call nobody waits on,
                                    fetch.c completes and stores it even then */
    int64_t hit_ms;              /* the time its freshness was judged at */

    struct pacer *pacer;         /* a paced replay in progress (respond.c) */
    struct relay *relay;         /* the pass-through's upstream call (relay.c) */
    /* Runs when the client leaves before its answer ended, for a request
       whose step owns something to stop at once (relay.c's call). */
    void (*on_leave)(struct gw_req *gr);
    bool started;                /* stream head sent */
    const char *enc_status;      /* PARKED_ENCODE: the hit's Cache-Status as given (NULL:
                                    made from the entry); hit, hit_xcache, hit_ms the rest */
    struct llmc_encoder *zenc;   /* the stream's compressor when the client asked for a
                                    coding (respond.c); freed with the context */
    size_t sent;                 /* stream bytes sent */
    size_t lag_min;              /* the least it was behind the flight (respond.c) */
    bool lag_seen;               /* lag_min holds a value */
    llmc_flight_t *flight;
    llmc_entry_t *stale;         /* expired entry kept for stale-if-error */
} gw_req_t;

/* ---- req.c: the life of a request context ---------------------------------- */

/* A context for req on w (from w's spares or the heap), state NEW, one
   reference: the server's, dropped when the server finishes req. Sets
   req->data and req->on_abort. NULL when out of memory. w's loop thread. */
gw_req_t *llmc__gr_new(llmc_worker_t *w, llmc_http_req_t *req);
void llmc__gr_ref(gw_req_t *gr);
/* Drops a reference; the last one frees gr (leaves its flight, drops its
   stale entry and its request copies) and returns it to w's spares. */
void llmc__gr_unref(gw_req_t *gr);
/* Moves gr to state to; a transition the table does not allow aborts. */
void llmc__gr_enter(gw_req_t *gr, gr_state_t to);
/* Ends gr's part in its flight (detach, unref). */
void llmc__gr_leave_flight(gw_req_t *gr);
/* The flight waiter hook: queues gr on its worker's inbox with a
   reference (flight lock held; any thread) and wakes that loop. */
void llmc__gr_notify(llmc_flight_waiter_t *fw);
/* Takes the inbox of w: a list through inbox_next, each entry holding the
   reference the inbox took, and still marked queued (a notification
   meanwhile leaves it be). w's loop thread. */
gw_req_t *llmc__gr_inbox_take(llmc_worker_t *w);
/* The next entry of a taken list, unmarked (a notification from now on
   queues it again): the caller runs it and drops the inbox's reference;
   NULL at the end. Never follow inbox_next of a taken list: a notification
   may relink an entry once it is popped. w's loop thread. */
gw_req_t *llmc__gr_inbox_pop(llmc_worker_t *w, gw_req_t **list);
/* Sets up w's spare list: none kept under ASan and Valgrind. */
void llmc__gr_spares_init(llmc_worker_t *w);
/* Frees w's spare contexts (shutdown). */
void llmc__gr_spares_free(llmc_worker_t *w);
/* Called first by work a request puts on libuv's thread pool (a body's
   parse, its tree's free): that pool thread runs below the loops' priority
   from then on (nice 10; it cannot be raised back unprivileged, and every
   use of the pool is work a loop handed off), so that under CPU contention
   the loops serving hits come before parses. */
void llmc__gr_pool_thread_nice(void);
/* The name of a state, for messages. */
const char *llmc__gr_state_name(gr_state_t s);

/* ---- admin.c: the admin routes ------------------------------------------------ */

/* GET /admin/cache/{key}: the entry's metadata from every tier that holds it. */
void llmc__gw_admin_entry(gw_req_t *gr);
/* DELETE /admin/cache/{key}: that key's entry out of every tier. */
void llmc__gw_admin_delete(gw_req_t *gr);
/* POST /admin/purge: every entry the JSON selector selects, out of every tier. */
void llmc__gw_admin_purge(gw_req_t *gr);

/* What POST /admin/explain needs to know of the route a path names
   (handler.c's table, which admin.c is below). */
typedef struct gw_explain_route {
    const char *path;             /* the route's own path string (the key's) */
    bool cacheable;
    const char *(*pass_why)(const llmc_canon_t *c); /* as gw_route's; may be NULL */
} gw_explain_route_t;

/* POST /admin/explain: what the gateway would do with the request in the
   body, without calling the upstream or changing the cache. find fills
   *out for the route that takes a POST to path, false when none does. */
void llmc__gw_admin_explain(gw_req_t *gr, bool (*find)(const char *path, gw_explain_route_t *out));

/* ---- fetch.c: the upstream call --------------------------------------------- */

/* The request header lines an upstream call carries, each malloc'd into
   out[*n...] (at most cap in all; *n counts them): "Content-Type: ctype"
   when ctype is not NULL, the credential (the gateway's own key, else the
   client's Authorization), and the client headers forward.h forwards (the
   same lines the key hashed). 0, or LLMC_ENOMEM with the lines made so
   far in out. gr's loop thread. */
int llmc__gw_upstream_hdrs(const gw_req_t *gr, const char *ctype, char **out, size_t cap,
                           size_t *n);

/* Starts the upstream call of the flight gr leads. */
int llmc__gw_fetch_start(gw_req_t *gr, const char *method, const char *url,
                         const char *body, size_t body_len, bool store, const char *model);
/* Shutdown: cancels this worker's upstream calls, finishing their flights. */
void llmc__gw_fetch_cancel_all(llmc_worker_t *w);

/* ---- relay.c: the routes passed through ---------------------------------------- */

/* Passes gr's request upstream as it is (method, path and query, body,
   the headers of llmc__gw_upstream_hdrs with the client's Content-Type)
   and relays the answer as it comes, never cached; the state goes from NEW
   to RELAY, or to RESPOND with an error answered. */
void llmc__gw_relay(gw_req_t *gr);

/* ---- respond.c: answers ------------------------------------------------------ */

/* Answers gr from a cached entry (hit or stale). */
void llmc__gw_respond_entry(gw_req_t *gr, llmc_entry_t *e, const char *xcache,
                            const char *cache_status, int64_t now_ms);
/* Answers gr from its finished flight. */
void llmc__gw_respond_flight(gw_req_t *gr);
/* Relays what gr's streaming flight has that gr has not sent yet; true
   when the flight is done and gr's client is still there: then
   llmc__gw_stream_end ends the stream (or answers the error). */
bool llmc__gw_stream_step(gw_req_t *gr);
void llmc__gw_stream_end(gw_req_t *gr);
/* A stream written to gr's client: compressed (gr->zenc, each write
   flushed) when its Accept-Encoding asks for a coding and --compress is on,
   else as it is. begin sends the head (h: cap bytes, n used; Content-
   Encoding and Vary added), write one piece, finish the coding's trailer
   and the end of req. */
int llmc__gw_stream_begin(gw_req_t *gr, int status, char *h, size_t n, size_t cap);
void llmc__gw_stream_write(gw_req_t *gr, const char *buf, size_t len);
void llmc__gw_stream_finish(gw_req_t *gr, llmc_http_req_t *req);
/* OpenAI-style error for gr with the cache headers. */
void llmc__gw_error(gw_req_t *gr, int status, const char *type, const char *code,
                    const char *msg);
/* A JSON answer that is never cached (healthz, stats); takes obj. */
void llmc__gw_respond_json(gw_req_t *gr, int status, json_t *obj);
/* Another answer that is never cached (metrics): body copied. */
void llmc__gw_respond_text(gw_req_t *gr, int status, const char *ctype, const char *body,
                           size_t len);

#endif
