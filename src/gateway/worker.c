/*
 * gateway/worker.c: the event-loop threads, start and stop, and the wake-up
 * of a worker's inbox (whose requests req.c queues and handler.c resumes).
 *
 * Every worker is set up on the main thread (loop, servers, upstream
 * client, async handles) and only then handed to its own thread, so no
 * handle is ever touched by two threads. With --admin-listen every worker
 * has a second server, on that address (SO_REUSEPORT like the first), that
 * serves the admin routes only: the same code path as the public listener,
 * no worker that is special, and a scrape or a purge is taken by whichever
 * loop is free rather than queued behind worker 0's traffic. Worker 0 runs on the main thread
 * and also owns the signal handlers and the tier upkeep timer.
 *
 * Shutdown has two phases, because a flight on one thread can have waiters
 * on another: first every worker closes its server (which aborts its
 * clients' requests and detaches their waiters); once the last server is
 * closed, every worker cancels its upstream calls and closes the rest.
 * By then no waiter is left anywhere, so no inbox is written to after its
 * handle is closed.
 *
 * SIGTERM drains first: every server stops accepting and lets the requests
 * it holds finish (llmc_http_server_drain) while every loop, upstream calls
 * included, keeps running, since a request on one thread may wait on a
 * call led by another. When the last server has no connection left, or
 * when --drain-timeout fires on worker 0, the two phases above run. A
 * second SIGTERM (or SIGINT at any time) starts them at once. SIGHUP
 * rereads the client keys file (on the thread pool; each worker takes the
 * new table at its next request) and reopens the access log file, for
 * logrotate.
 *
 * Each worker buffers its access-log lines (gateway/log.h). The buffer has
 * no lock, so only its own thread writes it out: on its timer, when full,
 * when the drain starts, at close_rest, and on a SIGHUP, which worker 0
 * turns into a message to every worker (log_async); the last one to have
 * written its buffer out swaps the file, so no line of a request finished
 * before the signal lands in the new file and none is split.
 */
#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/checkers.h"
#include "gateway/gw_int.h"
#include "llmc/cache.h"
#include "llmc/error.h"
#include "tier/memory.h"

#define TICK_MS 100

static void on_inbox(uv_async_t *h)
{
    llmc_gw_inbox_run(h->data);
}

/* ---- start and stop -------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    llmc_worker_t *w = t->data;
    llmc_tier_set_tick(w->gw->tiers, llmc_now_ms());
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

static void close_rest(llmc_worker_t *w);
static bool advance(llmc_gw_t *gw, int to);

static void on_upstream_closed(void *arg)
{
    (void)arg;
}

/* One of gw's servers (public or admin) is closed and freed. */
static void server_gone(llmc_gw_t *gw)
{
    if (atomic_fetch_sub(&gw->servers_open, 1) == 1)
        advance(gw, LLMC_GW_CLOSE_REST);
}

static void on_server_drained(void *arg)
{
    llmc_worker_t *w = arg;
    if (atomic_fetch_sub(&w->gw->servers_draining, 1) == 1) {
        fprintf(stderr, "llmcached: drained: every request taken was answered\n");
        llmc_gw_stop(w->gw);
    }
}

static void on_drain_timeout(uv_timer_t *t)
{
    llmc_worker_t *w = t->data;
    fprintf(stderr, "llmcached: --drain-timeout passed: cutting off what is still in progress\n");
    llmc_gw_stop(w->gw);
}

static void on_server_closed(void *arg)
{
    llmc_worker_t *w = arg;
    w->server = NULL;
    server_gone(w->gw);
}


static void on_admin_closed(void *arg)
{
    llmc_worker_t *w = arg;
    w->admin_server = NULL;
    server_gone(w->gw);
}

/* Stops worker 0 from sending log_async a reopen once the handle closes. */
static void close_log_async(llmc_worker_t *w)
{
    pthread_mutex_lock(&w->gw->log_async_mu);
    w->log_async_open = false;
    uv_close((uv_handle_t *)&w->log_async, close_cb);
    pthread_mutex_unlock(&w->gw->log_async_mu);
}

static void close_rest(llmc_worker_t *w)
{
    llmc__gw_fetch_cancel_all(w);
    llmc_gw_inbox_run(w); /* drops the inbox's hold on requests that ended queued */
    llmc_tier_set_detach(w->gw->tiers, w->id); /* ends lookups still pending here */
    llmc_upstream_close(w->upstream, on_upstream_closed, w);
    uv_close((uv_handle_t *)&w->inbox_async, close_cb);
    uv_close((uv_handle_t *)&w->stop_async, close_cb);
    /* Every server is closed: no request finishes here after this. */
    llmc_logbuf_flush(&w->logbuf);
    uv_close((uv_handle_t *)&w->log_timer, close_cb);
    close_log_async(w);
    if (w->id == 0) {
        uv_close((uv_handle_t *)&w->tick_timer, close_cb);
        uv_close((uv_handle_t *)&w->drain_timer, close_cb);
        uv_close((uv_handle_t *)&w->sigint, close_cb);
        uv_close((uv_handle_t *)&w->sigterm, close_cb);
        uv_close((uv_handle_t *)&w->sighup, close_cb);
    }
}

static void on_stop(uv_async_t *h)
{
    llmc_worker_t *w = h->data;
    int phase = atomic_load(&w->gw->phase);
    if (phase == LLMC_GW_DRAIN) {
        llmc_logbuf_flush(&w->logbuf);
        if (w->id == 0)
            uv_timer_start(&w->drain_timer, on_drain_timeout, (uint64_t)w->gw->cfg->drain_timeout, 0);
        if (w->server)
            llmc_http_server_drain(w->server, on_server_drained, w);
        if (w->admin_server)
            llmc_http_server_drain(w->admin_server, on_server_drained, w);
    } else if (phase == LLMC_GW_CLOSE_SERVERS) {
        if (w->server)
            llmc_http_server_close(w->server, on_server_closed, w);
        if (w->admin_server)
            llmc_http_server_close(w->admin_server, on_admin_closed, w);
    } else if (phase == LLMC_GW_CLOSE_REST)
        close_rest(w);
}

/* Moves gw from one of the phases before to, and wakes every worker. */
static bool advance(llmc_gw_t *gw, int to)
{
    int cur = atomic_load(&gw->phase);
    do {
        if (cur >= to)
            return false;
    } while (!atomic_compare_exchange_weak(&gw->phase, &cur, to));
    for (unsigned i = 0; i < gw->nstarted; i++)
        uv_async_send(&gw->workers[i].stop_async);
    return true;
}

void llmc_gw_stop(llmc_gw_t *gw)
{
    advance(gw, LLMC_GW_CLOSE_SERVERS);
}

void llmc_gw_drain(llmc_gw_t *gw)
{
    if (gw->cfg->drain_timeout <= 0) {
        llmc_gw_stop(gw);
        return;
    }
    advance(gw, LLMC_GW_DRAIN);
}

static void on_signal(uv_signal_t *s, int signum)
{
    llmc_worker_t *w = s->data;
    llmc_gw_t *gw = w->gw;
    if (signum == SIGTERM && atomic_load(&gw->phase) == LLMC_GW_RUN && gw->cfg->drain_timeout > 0) {
        fprintf(stderr, "llmcached: SIGTERM, draining: no new requests, up to %.3g s for those in "
                "progress (a second SIGTERM stops at once)\n", (double)gw->cfg->drain_timeout / 1000);
        llmc_gw_drain(gw);
        return;
    }
    fprintf(stderr, "llmcached: %s, shutting down\n", signum == SIGINT ? "SIGINT" : "SIGTERM");
    llmc_gw_stop(gw);
}

/* A step of a SIGHUP's reopen, on each worker's own thread: its buffered
   lines go to the old file; the last worker to get here swaps the file. */
static void on_log_async(uv_async_t *h)
{
    llmc_worker_t *w = h->data;
    const char *path = w->gw->cfg->access_log_path;
    llmc_logbuf_flush(&w->logbuf);
    int rc = llmc_log_reopen_step(&w->gw->log);
    if (rc < 0)
        fprintf(stderr, "llmcached: SIGHUP: cannot reopen %s: %s (still writing to the old file)\n",
                path, strerror(errno));
    else if (rc == 1)
        fprintf(stderr, "llmcached: SIGHUP: reopened the access log %s\n", path);
}

/* A SIGHUP's rereads (the options, the client keys file) run on the thread
   pool, not on worker 0's loop: a file on a slow or stuck mount must not
   stall the requests that loop serves. What they say is printed back on
   the loop. */
typedef struct reload {
    uv_work_t work;
    llmc_worker_t *w;
    char out[2048];
} reload_t;

static void reload_work(uv_work_t *req)
{
    reload_t *r = req->data;
    llmc_gw_t *gw = r->w->gw;
    char msg[512];
    r->out[0] = '\0';
    llmc_gw_reload_options(gw, r->out, sizeof(r->out));
    if (!gw->client_keys)
        return;
    int rc = llmc_gw_clients_reload(gw, msg, sizeof(msg));
    size_t n = strlen(r->out);
    snprintf(r->out + n, sizeof(r->out) - n, "llmcached: SIGHUP: %s %s\n",
             rc == 0 ? "reloaded the client keys" : "cannot reload --client-keys:", msg);
}

static void reload_done(uv_work_t *req, int status)
{
    reload_t *r = req->data;
    r->w->reloading = false;
    if (status == 0)
        fputs(r->out, stderr);
    free(r);
}

static void reload_start(llmc_worker_t *w)
{
    reload_t *r;
    if (w->reloading || !(r = calloc(1, sizeof(*r)))) {
        fprintf(stderr, "llmcached: SIGHUP: %s\n", w->reloading
                ? "a reload is still under way" : "out of memory");
        return;
    }
    r->w = w;
    r->work.data = r;
    if (uv_queue_work(&w->loop, &r->work, reload_work, reload_done) != 0) {
        fprintf(stderr, "llmcached: SIGHUP: cannot start the reload\n");
        free(r);
        return;
    }
    w->reloading = true;
}

/* SIGHUP: the options and the client keys file are read again
   (reload_start), and the access log reopened.
   logrotate's postrotate: the access log file is opened again under its
   name once every worker has written out its buffer (on_log_async), and
   takes the old one's descriptor (dup3 swaps it in one step). */
static void on_sighup(uv_signal_t *s, int signum)
{
    llmc_worker_t *w = s->data;
    llmc_gw_t *gw = w->gw;
    (void)signum;
    reload_start(w);
    if (gw->cfg->access_log != LLMC_CFG_ACCESS_LOG_FILE || gw->log.fd < 0) {
        fprintf(stderr, "llmcached: SIGHUP: no access log file to reopen\n");
        return;
    }
    pthread_mutex_lock(&gw->log_async_mu);
    unsigned n = 0;
    for (unsigned i = 0; i < gw->nstarted; i++)
        n += gw->workers[i].log_async_open;
    if (!llmc_log_reopen_begin(&gw->log, n)) {
        fprintf(stderr, "llmcached: SIGHUP: a reopen is still under way\n");
    } else {
        for (unsigned i = 0; i < gw->nstarted; i++)
            if (gw->workers[i].log_async_open)
                uv_async_send(&gw->workers[i].log_async);
    }
    pthread_mutex_unlock(&gw->log_async_mu);
}

/* Closes the handles a worker whose set-up failed had opened, in reverse,
   and its loop. Only for a worker that never ran. */
static void worker_undo(llmc_worker_t *w, bool tiers, bool upstream)
{
    if (tiers)
        llmc_tier_set_detach(w->gw->tiers, w->id);
    if (upstream)
        llmc_upstream_close(w->upstream, on_upstream_closed, NULL);
    close_log_async(w);
    uv_close((uv_handle_t *)&w->log_timer, close_cb);
    uv_close((uv_handle_t *)&w->stop_async, close_cb);
    uv_close((uv_handle_t *)&w->inbox_async, close_cb);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    llmc_logbuf_free(&w->logbuf);
    pthread_mutex_destroy(&w->inbox_mu);
    uv_loop_close(&w->loop);
}

static int worker_init(llmc_gw_t *gw, llmc_worker_t *w, unsigned id, char *err, size_t errlen)
{
    const llmc_config_t *cfg = gw->cfg;
    w->gw = gw;
    w->id = id;
    llmc__gr_spares_init(w);
    if (uv_loop_init(&w->loop) != 0)
        goto fail;
    pthread_mutex_init(&w->inbox_mu, NULL);
    uv_async_init(&w->loop, &w->inbox_async, on_inbox);
    w->inbox_async.data = w;
    uv_async_init(&w->loop, &w->stop_async, on_stop);
    w->stop_async.data = w;
    uv_timer_init(&w->loop, &w->log_timer);
    w->log_timer.data = w;
    uv_async_init(&w->loop, &w->log_async, on_log_async);
    w->log_async.data = w;
    pthread_mutex_lock(&gw->log_async_mu);
    w->log_async_open = true;
    pthread_mutex_unlock(&gw->log_async_mu);
    if (llmc_logbuf_init(&w->logbuf, (size_t)cfg->access_log_buffer, llmc_log_write,
                         &gw->log) < 0)
        goto fail_loop;
    llmc_upstream_config_t ucfg = {
        .connect_timeout_ms = (uint64_t)cfg->connect_timeout,
        .total_timeout_ms = (uint64_t)cfg->upstream_timeout,
        .max_host_conns = 0,
        .max_total_conns = gw->upstream_conns,
    };
    if (!(w->upstream = llmc_upstream_new(&w->loop, &ucfg)))
        goto fail_loop;
    int rc = llmc_tier_set_attach(gw->tiers, id, &w->loop);
    if (rc < 0) {
        worker_undo(w, false, true);
        snprintf(err, errlen, "could not set up worker %u: a cache tier failed: %s", id,
                 llmc_strerror(rc));
        return rc;
    }
    unsigned per = (unsigned)(cfg->max_connections / gw->nworkers);
    llmc_http_server_config_t scfg = {
        .limits = {
            .max_header_bytes = (size_t)cfg->max_header_bytes,
            .max_body_bytes = (size_t)cfg->max_body_bytes,
            .max_headers = (size_t)cfg->max_headers,
            .header_timeout_ms = (uint64_t)cfg->header_timeout,
            .idle_timeout_ms = (uint64_t)cfg->idle_timeout,
            .max_conns = per ? per : 1,
            .body_memory = &gw->body_memory,
            .max_body_memory = (size_t)cfg->max_body_memory,
        },
        .handler = llmc_gw_handle,
        .on_done = llmc_gw_done,
        .ctx = w,
    };
    if (!(w->server = llmc_http_server_new(&w->loop, &scfg)))
        goto fail_tiers;
    scfg.handler = llmc_gw_handle_admin;
    if (gw->admin_listen && !(w->admin_server = llmc_http_server_new(&w->loop, &scfg))) {
        llmc_http_server_close(w->server, NULL, NULL);
        w->server = NULL;
        goto fail_tiers;
    }
    if (id == 0) {
        uv_timer_init(&w->loop, &w->tick_timer);
        w->tick_timer.data = w;
        uv_timer_start(&w->tick_timer, on_tick, TICK_MS, TICK_MS);
        uv_timer_init(&w->loop, &w->drain_timer);
        w->drain_timer.data = w;
        uv_signal_init(&w->loop, &w->sigint);
        uv_signal_init(&w->loop, &w->sigterm);
        uv_signal_init(&w->loop, &w->sighup);
        w->sigint.data = w->sigterm.data = w->sighup.data = w;
        uv_signal_start(&w->sigint, on_signal, SIGINT);
        uv_signal_start(&w->sigterm, on_signal, SIGTERM);
        uv_signal_start(&w->sighup, on_sighup, SIGHUP);
    }
    return 0;
fail_tiers:
    worker_undo(w, true, true);
    goto fail;
fail_loop:
    worker_undo(w, false, false);
fail:
    snprintf(err, errlen, "could not set up worker %u: out of memory", id);
    return LLMC_ENOMEM;
}

/* SO_REUSEPORT lets our threads share one port, but it would also let a
   second llmcached (same user) silently share it and take half the traffic.
   A plain bind first tells whether anyone else holds the port. */
static int port_taken(const char *opt, const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    if (port == 0 || getaddrinfo(host, ps, &hints, &res) != 0 || !res)
        return 0; /* the real listen reports resolution errors */
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, rc = 0;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 && errno == EADDRINUSE) {
            snprintf(err, errlen, "--%s %s:%d: address already in use", opt, host, port);
            rc = LLMC_EIO;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return rc;
}

static void *worker_main(void *arg)
{
    llmc_worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

int llmc_gw_run(llmc_gw_t *gw, void (*ready)(llmc_gw_t *gw, void *arg), void *arg,
                char *err, size_t errlen)
{
    int rc = 0;
    if (port_taken("listen", gw->listen_host, gw->listen_port, err, errlen) < 0 ||
        (gw->admin_listen &&
         port_taken("admin-listen", gw->admin_host, gw->admin_port, err, errlen) < 0))
        return LLMC_EIO;
    gw->workers = calloc(gw->nworkers, sizeof(*gw->workers));
    if (!gw->workers)
        return LLMC_ENOMEM;
    /* gw->nstarted counts the workers whose handles exist: stop and
       shutdown reach those only, so a failure part-way through start-up
       never touches a worker that was not set up. */
    for (unsigned i = 0; i < gw->nworkers && rc == 0; i++) {
        rc = worker_init(gw, &gw->workers[i], i, err, errlen);
        if (rc < 0)
            break;
        gw->nstarted = i + 1;
        char lerr[300] = "";
        rc = llmc_http_server_listen(gw->workers[i].server, gw->listen_host,
                                     i == 0 ? gw->listen_port
                                            : llmc_http_server_port(gw->workers[0].server),
                                     true, lerr, sizeof(lerr));
        if (rc < 0) {
            snprintf(err, errlen, "--listen %s", lerr);
        } else if (gw->admin_listen) {
            rc = llmc_http_server_listen(gw->workers[i].admin_server, gw->admin_host,
                                         i == 0 ? gw->admin_port
                                                : llmc_http_server_port(gw->workers[0].admin_server),
                                         true, lerr, sizeof(lerr));
            if (rc < 0)
                snprintf(err, errlen, "--admin-listen %s", lerr);
        }
    }
    atomic_store(&gw->servers_open, gw->nstarted * (gw->admin_listen ? 2u : 1u));
    atomic_store(&gw->servers_draining, atomic_load(&gw->servers_open));
    if (rc < 0) {
        /* Run the normal shutdown so every handle is closed and freed. */
        llmc_gw_stop(gw);
        for (unsigned i = 0; i < gw->nstarted; i++)
            uv_run(&gw->workers[i].loop, UV_RUN_DEFAULT);
        goto out;
    }
    gw->listen_port = llmc_http_server_port(gw->workers[0].server);
    if (gw->admin_listen)
        gw->admin_port = llmc_http_server_port(gw->workers[0].admin_server);
    for (unsigned i = 1; i < gw->nworkers; i++)
        pthread_create(&gw->workers[i].thread, NULL, worker_main, &gw->workers[i]);
    if (ready)
        ready(gw, arg);
    uv_run(&gw->workers[0].loop, UV_RUN_DEFAULT);
    for (unsigned i = 1; i < gw->nworkers; i++)
        pthread_join(gw->workers[i].thread, NULL);
out:
    for (unsigned i = 0; i < gw->nstarted; i++) {
        uv_loop_close(&gw->workers[i].loop);
        llmc_logbuf_free(&gw->workers[i].logbuf); /* writes out anything left */
        llmc__gr_spares_free(&gw->workers[i]);
        pthread_mutex_destroy(&gw->workers[i].inbox_mu);
    }
    return rc;
}
