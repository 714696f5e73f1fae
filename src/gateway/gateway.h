/*
 * gateway/gateway.h: the request pipeline and the threads that run it.
 *
 * One llmc_gw_t per process holds what all threads share: the options, the
 * ordered list of cache tiers, the flight table. One llmc_worker_t per
 * event-loop thread holds what must not be shared: the loop, its HTTP
 * server (an SO_REUSEPORT listener), its upstream client, its counters and
 * its inbox, through which other threads hand it work (a finished flight
 * that one of its clients waits for).
 */
#ifndef LLMC_GATEWAY_H
#define LLMC_GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "gateway/flight.h"
#include "gateway/forward.h"
#include "gateway/log.h"
#include "gateway/origin.h"
#include "gateway/stats.h"
#include "http/http.h"
#include "tier/set.h"
#include "upstream/upstream.h"

typedef struct llmc_gw llmc_gw_t;

/* Where the process is in its life (worker.c moves it, forward only). */
typedef enum llmc_gw_phase {
    LLMC_GW_RUN,            /* serving */
    LLMC_GW_DRAIN,          /* SIGTERM: no new requests; those in progress finish */
    LLMC_GW_CLOSE_SERVERS,  /* every server closes, cutting off what is left */
    LLMC_GW_CLOSE_REST,     /* the last server closed: upstream calls, handles, loops */
} llmc_gw_phase_t;
typedef struct llmc_worker llmc_worker_t;
struct gw_req;

struct llmc_worker {
    llmc_gw_t *gw;
    unsigned id;
    uv_loop_t loop;
    llmc_http_server_t *server;
    llmc_http_server_t *admin_server;  /* --admin-listen's listener; NULL when off */
    llmc_upstream_t *upstream;
    uv_async_t inbox_async;          /* wakes the loop for queued waiters */
    pthread_mutex_t inbox_mu;
    struct gw_req *inbox_head, *inbox_tail;
    uv_async_t stop_async;
    uv_timer_t tick_timer;           /* tier upkeep; worker 0 only */
    uv_timer_t drain_timer;          /* --drain-timeout; worker 0 only */
    llmc_counters_t ctr;
    llmc_hist_t hist[LLMC_GW_NHIST]; /* latencies (stats.h's table); this worker writes them */
    pthread_t thread;
    int listen_rc;                   /* result of listen, read by the main thread */
    char listen_err[256];
    void *fetches;                   /* upstream calls this worker runs (fetch.c) */
    struct gw_req *spare;            /* finished requests kept for reuse (req.c) */
    unsigned nspare, spare_max;
    uv_signal_t sigint, sigterm, sighup; /* worker 0 only */
    llmc_logbuf_t logbuf;            /* this thread's access-log lines (req.c writes them) */
    llmc_log_clock_t log_clock;      /* the lines' date and time to the second */
    uv_timer_t log_timer;            /* writes logbuf out; armed only while it holds lines */
    uv_async_t log_async;            /* SIGHUP: write logbuf out, then a step of the reopen */
    bool log_async_open;             /* under gw->log_async_mu: worker 0 may send to it */
    struct llmc_clients *clients;    /* --client-keys: the table this worker uses (a
                                        reference), swapped at its next request after a
                                        SIGHUP reload (llmc_gw_clients) */
    unsigned clients_gen;            /* the gw->clients_gen it was taken at */
    bool reloading;                  /* worker 0's loop only: one SIGHUP reread at a time */
};

/*
 * The options a SIGHUP may change while requests run (llmc_gw_reload_options):
 * each read once per request, so a request sees one value or the other, never
 * a torn one. Read them with LLMC_GW_LIVE, never from cfg, which keeps the
 * values the process started with.
 */
typedef struct llmc_gw_live {
    _Atomic int64_t ttl, max_ttl;         /* --ttl, --max-ttl (ms) */
    _Atomic int64_t stale_if_error;       /* ms; at most what the tiers keep (set at start) */
    _Atomic int64_t replay_pace_ms;       /* --replay-pace-ms */
    _Atomic int64_t semantic_threshold;   /* per mille; the tier's default when 0 */
} llmc_gw_live_t;

#define LLMC_GW_LIVE(gw, field) atomic_load_explicit(&(gw)->live.field, memory_order_relaxed)

struct llmc_gw {
    const llmc_config_t *cfg;
    llmc_gw_live_t live;             /* what a SIGHUP may change: read these, not cfg's */
    char *prices_opt;                /* the --prices in use (a SIGHUP compares and rereads) */
    char upstream_base[1024];        /* without a trailing slash */
    const char *key_upstream;        /* the upstream as the key names it: stable across
                                        restarts ("mock" for the built-in mock, whose
                                        port changes), else upstream_base */
    char *upstream_auth;             /* "Authorization: Bearer KEY", or NULL */
    /* The Anthropic Messages upstream (--anthropic-upstream; dialect.h):
       its base ("" until set: api.anthropic.com), its name in the key, the
       gateway's own key line ("x-api-key: KEY") or NULL, and its scope. */
    char anth_base[1024];
    const char *anth_key_upstream;
    char *anth_auth;
    bool anth_shared_scope;
    bool shared_scope;
    char listen_host[256];
    int listen_port;
    bool admin_listen;               /* --admin-listen: admin routes on a listener of their own */
    char admin_host[256];
    int admin_port;
    _Atomic bool admin_token_set;    /* --admin-token given (not empty); a SIGHUP may set it */
    pthread_mutex_t admin_mu;        /* admin_token_hash, which a SIGHUP may replace */
    uint8_t admin_token_hash[32];    /* SHA-256 of the token: compared, never the token */
    int argc;                        /* what the options were read from (main.c), read */
    char **argv, **envp;             /* again by a SIGHUP; argv NULL: not reread */
    bool client_keys;                /* --client-keys: only listed keys are served */
    pthread_mutex_t clients_mu;      /* guards clients */
    struct llmc_clients *clients;    /* the newest keys table (a reference); NULL when off */
    _Atomic unsigned clients_gen;    /* bumped at each swap, under clients_mu */
    llmc_forward_t forward;          /* the client headers calls carry (forward.h) */
    llmc_origin_t origin;            /* Host, Origin and CORS (origin.h) */
    llmc_tier_set_t *tiers;          /* every cache tier, fastest first (tier/set.h) */
    bool zdict;                      /* llmc_zdict_init ran: shut it down at free */
    llmc_flight_table_t *flights;
    struct llmc_fpmap *fpmap;        /* raw-request fingerprints -> keys (llmc/fpmap.h) */
    struct llmc_bymodel *bymodel;    /* requests and savings by route and model (bymodel.h) */
    llmc_worker_t *workers;
    unsigned nworkers;
    unsigned nstarted;               /* workers whose handles were set up (worker.c) */
    unsigned upstream_conns;         /* per worker: its libcurl multi's connection cap */
    llmc_log_t log;                  /* the access log; log.fd -1 when off */
    pthread_mutex_t log_async_mu;    /* a SIGHUP's sends vs. workers closing log_async */
    int64_t started_ms;
    _Atomic unsigned servers_open;   /* shutdown: CLOSE_REST starts when it reaches 0 */
    _Atomic unsigned servers_draining; /* drain: CLOSE_SERVERS starts when it reaches 0 */
    _Atomic int phase;               /* llmc_gw_phase_t */
    _Atomic size_t body_memory;      /* request body bytes every server holds (--max-body-memory) */
};

/*
 * Builds the shared state from cfg (which must outlive it): tiers, flight
 * table, access log, upstream base URL and key (key may be NULL). 0 or
 * LLMC_E* with a message in err.
 */
int llmc_gw_init(llmc_gw_t *gw, const llmc_config_t *cfg, const char *upstream_url,
                 const char *upstream_key, char *err, size_t errlen);

/*
 * Sets the Anthropic upstream (url, without a trailing slash; mock: the
 * key names it "mock") and the gateway's key for it (NULL: the clients'
 * own). 0 or LLMC_E* with a message in err. Before llmc_gw_run.
 */
int llmc_gw_set_anthropic(llmc_gw_t *gw, const char *url, bool mock, const char *key,
                          char *err, size_t errlen);

/*
 * Starts cfg->threads workers (one on the calling thread), listens, and
 * runs until llmc_gw_stop. Calls ready(arg) once every worker listens.
 * Returns 0, or LLMC_EIO when a listener could not be opened (message in err).
 */
int llmc_gw_run(llmc_gw_t *gw, void (*ready)(llmc_gw_t *gw, void *arg), void *arg,
                char *err, size_t errlen);

/* Asks every worker to close its servers and finish, cutting off requests
   in progress. Any thread (signal handlers: use a uv_signal on a loop
   instead). */
void llmc_gw_stop(llmc_gw_t *gw);

/* Asks every worker to stop taking requests and to finish those in
   progress; once every server has no connection left, or after
   --drain-timeout, llmc_gw_stop. Any thread. */
void llmc_gw_drain(llmc_gw_t *gw);

/* Frees the shared state after llmc_gw_run returned. */
void llmc_gw_free(llmc_gw_t *gw);

/* The request handlers (handler.c) of the public and of the admin
   listener, and the one finish of every request (req.c) that the workers'
   servers use. ctx is the worker. */
void llmc_gw_handle(llmc_http_req_t *req, void *ctx);
void llmc_gw_handle_admin(llmc_http_req_t *req, void *ctx);
void llmc_gw_done(llmc_http_req_t *req, int status, uint64_t bytes_out, void *ctx);

/* Runs the inbox of a worker: moves on the requests whose flight moved. */
void llmc_gw_inbox_run(llmc_worker_t *w);

/* True when req carries "Authorization: Bearer <--admin-token>". The
   token's and the credential's SHA-256 are compared with CRYPTO_memcmp, so
   the time taken says nothing about the token, its length included. False
   when no token is configured. Any thread. */
bool llmc_gw_admin_authorized(const llmc_gw_t *gw, const llmc_http_req_t *req);

/* --client-keys: the table w uses now, first taking the newest one when a
   reload swapped it since w's last call (the old one is let go, and freed
   once the requests holding it end). NULL when client keys are off. w's
   loop thread; the pointer lives while w holds it: take a reference
   (llmc_clients_ref) to keep it longer. */
struct llmc_clients *llmc_gw_clients(llmc_worker_t *w);

/* --client-keys: the listed key req presents (Authorization: Bearer, else
   x-api-key) in table t (llmc_gw_clients'), or NULL; *cred and *len then
   point at it in req's headers. */
struct llmc_client;
const struct llmc_client *llmc_gw_client_find(const struct llmc_clients *t,
                                              const llmc_http_req_t *req, const char **cred,
                                              size_t *len);

/* SIGHUP: reads the options again from where they came from (gw->argv,
   gw->envp and the --config file they name), applies those that can change
   while running (--admin-token, gw->live's, --prices: its file is reread
   even when the option is the same) and says in out (one line each, appended,
   outlen bytes in all) which others differ from the running ones and need
   a restart; a bad file changes nothing. Never says a token. Blocks on the
   file: not on a loop thread. */
void llmc_gw_reload_options(llmc_gw_t *gw, char *out, size_t outlen);

/* Rereads --client-keys and makes the new table the one every worker takes
   at its next request. A file that cannot be read or parsed leaves the old
   table in place. 0, or LLMC_E* with why in msg (which otherwise says how
   many keys there are now); the keys themselves are never in it. Blocks on
   the file: any thread but a loop's (worker.c runs it on the thread pool). */
int llmc_gw_clients_reload(llmc_gw_t *gw, char *msg, size_t msglen);

/* Wall-clock milliseconds since the epoch. The only clock the cache sees. */
int64_t llmc_now_ms(void);

#endif
