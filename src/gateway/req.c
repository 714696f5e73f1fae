/*
 * gateway/req.c: the life of a request context (gw_req_t), from the moment
 * a route takes a request to the moment nothing refers to it any more.
 *
 * This file alone creates, moves between states, parks, resumes and frees
 * request contexts; handler.c decides which state comes next.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A context is reference counted, not flagged. The server holds one
 *   reference until it has finished the request (llmc_gw_done); a pending
 *   tier lookup, a pending admin purge, a place in the inbox, a paced
 *   replay and code that calls into the server each hold one more. The last unref frees. A client can
 *   leave at any moment, so every holder checks gr->req before writing.
 * - The count is atomic because a flight finished on another thread queues
 *   the waiter on this worker's inbox and takes the inbox's reference
 *   there. That is safe because it happens under the flight's lock while
 *   gr is attached, and gr leaves its flight (under that lock) before the
 *   server's reference is dropped.
 * - Every request the server finishes, answered or refused (also those
 *   that never got a context: 404s, a connection refused at the cap), ends
 *   in llmc_gw_done, which writes its access-log line and counters.
 * - Contexts are recycled through a per-worker spare list, so a hit
 *   allocates nothing; under ASan and Valgrind nothing is kept, so that a
 *   use after the end of a request is still caught.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/checkers.h"
#include "core/lock.h"
#include "gateway/clients.h"
#include "gateway/gw_int.h"
#include "http/encoding.h"
#include "llmc/cache.h"

#define SPARE_MAX 256
#define POOL_NICE 10

/* [from][to]: the transitions a request may make. */
static const bool legal[GR_NSTATES][GR_NSTATES] = {
    [GR_NEW] = {[GR_LOOKUP] = 1, [GR_FLIGHT] = 1, [GR_PARKED_PURGE] = 1, [GR_RESPOND] = 1,
                [GR_RELAY] = 1, [GR_PARKED_PARSE] = 1,
                [GR_DONE] = 1},
    [GR_LOOKUP] = {[GR_PARKED_TIER] = 1, [GR_FLIGHT] = 1, [GR_RESPOND] = 1, [GR_PARKED_PARSE] = 1,
                   [GR_DONE] = 1},
    [GR_PARKED_TIER] = {[GR_LOOKUP] = 1, [GR_DONE] = 1},
    [GR_FLIGHT] = {[GR_PARKED_FLIGHT] = 1, [GR_RESPOND] = 1, [GR_DONE] = 1},
    [GR_PARKED_FLIGHT] = {[GR_RESPOND] = 1, [GR_DONE] = 1},
    [GR_PARKED_PURGE] = {[GR_RESPOND] = 1, [GR_DONE] = 1},
    [GR_PARKED_PARSE] = {[GR_NEW] = 1, [GR_DONE] = 1},
    [GR_PARKED_ENCODE] = {[GR_RESPOND] = 1, [GR_DONE] = 1},
    [GR_RESPOND] = {[GR_PARKED_ENCODE] = 1, [GR_DONE] = 1},
    [GR_RELAY] = {[GR_DONE] = 1},
};

static const char *const state_names[GR_NSTATES] = {
    "NEW", "LOOKUP", "PARKED_TIER", "FLIGHT", "PARKED_FLIGHT", "PARKED_PURGE", "PARKED_PARSE",
    "PARKED_ENCODE", "RESPOND", "RELAY", "DONE",
};

const char *llmc__gr_state_name(gr_state_t s)
{
    return s < GR_NSTATES ? state_names[s] : "?";
}

void llmc__gr_enter(gw_req_t *gr, gr_state_t to)
{
    if (!legal[gr->state][to]) {
        fprintf(stderr, "llmcached: request state %s -> %s is not a transition\n",
                llmc__gr_state_name(gr->state), llmc__gr_state_name(to));
        abort();
    }
    gr->state = to;
}

static void on_abort(llmc_http_req_t *req)
{
    gw_req_t *gr = req->data;
    gr->req = NULL;
    LLMC_COUNT(&gr->w->ctr, aborted);
    llmc__gr_leave_flight(gr);
    if (gr->on_leave)
        gr->on_leave(gr);
}

gw_req_t *llmc__gr_new(llmc_worker_t *w, llmc_http_req_t *req)
{
    gw_req_t *gr = w->spare;
    if (gr) {
        w->spare = gr->inbox_next;
        w->nspare--;
        memset(gr, 0, sizeof(*gr));
    } else if (!(gr = calloc(1, sizeof(*gr)))) {
        return NULL;
    }
    gr->w = w;
    gr->req = req;
    gr->state = GR_NEW;
    atomic_init(&gr->refs, 1);
    gr->fw.notify = llmc__gr_notify;
    req->data = gr;
    req->on_abort = on_abort;
    return gr;
}

void llmc__gr_ref(gw_req_t *gr)
{
    int before = atomic_fetch_add_explicit(&gr->refs, 1, memory_order_relaxed);
    assert(before > 0);
    (void)before;
}

void llmc__gr_leave_flight(gw_req_t *gr)
{
    if (!gr->flight)
        return;
    llmc_flight_detach(gr->flight, &gr->fw);
    llmc_flight_unref(gr->flight);
    gr->flight = NULL;
}

/* A body parsed on the thread pool is freed there too: jansson frees a
   tree value by value, and a tree of --max-json-values values takes tens
   of milliseconds that a loop serving hits must not spend. */
typedef struct canon_free_job {
    uv_work_t work;
    llmc_canon_t canon;
} canon_free_job_t;

void llmc__gr_pool_thread_nice(void)
{
    static _Thread_local bool niced;
    if (niced)
        return;
    niced = true;
    /* Best effort: a failure leaves the thread as it was. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), POOL_NICE);
}

static void canon_free_work(uv_work_t *w)
{
    llmc__gr_pool_thread_nice();
    llmc_canon_free(&((canon_free_job_t *)w->data)->canon);
}

static void canon_free_done(uv_work_t *w, int status)
{
    canon_free_job_t *job = w->data;
    if (status != 0) /* canceled: the loop is closing */
        llmc_canon_free(&job->canon);
    free(job);
}

static void canon_release(gw_req_t *gr)
{
    canon_free_job_t *job = gr->parsed_off_loop && gr->canon.root ? malloc(sizeof(*job)) : NULL;
    if (job) {
        job->canon = gr->canon;
        job->work.data = job;
        if (uv_queue_work(&gr->w->loop, &job->work, canon_free_work, canon_free_done) == 0) {
            memset(&gr->canon, 0, sizeof(gr->canon));
            return;
        }
        free(job);
    }
    llmc_canon_free(&gr->canon);
}

static void gr_free(gw_req_t *gr)
{
    llmc_worker_t *w = gr->w;
    assert(gr->state == GR_DONE && !gr->queued && !gr->req);
    llmc__gr_leave_flight(gr);
    llmc_entry_unref(gr->stale);
    llmc_entry_unref(gr->hit); /* decided, but the client left before delivery */
    llmc_encoder_free(gr->zenc); /* a compressed stream the client left */
    canon_release(gr);
    llmc_http_body_free(&gr->body_taken);
    json_decref(gr->admin_sel);
    llmc_clients_unref(gr->clients);
    free(gr->ask_body);
    free(gr->fwd_body);
    free(gr->err_msg);
    if (w->nspare >= w->spare_max) {
        free(gr);
        return;
    }
    gr->inbox_next = w->spare;
    w->spare = gr;
    w->nspare++;
}

void llmc__gr_unref(gw_req_t *gr)
{
    int before = atomic_fetch_sub_explicit(&gr->refs, 1, memory_order_acq_rel);
    assert(before > 0);
    if (before == 1)
        gr_free(gr);
}

void llmc__gr_spares_init(llmc_worker_t *w)
{
    w->spare = NULL;
    w->nspare = 0;
    w->spare_max = LLMC_UNDER_ASAN || LLMC_UNDER_VALGRIND() ? 0 : SPARE_MAX;
}

void llmc__gr_spares_free(llmc_worker_t *w)
{
    while (w->spare) {
        gw_req_t *next = w->spare->inbox_next;
        free(w->spare);
        w->spare = next;
    }
    w->nspare = 0;
}

/* ---- the inbox ----------------------------------------------------------------- */

void llmc__gr_notify(llmc_flight_waiter_t *fw)
{
    gw_req_t *gr = (gw_req_t *)fw;
    llmc_worker_t *w = gr->w;
    bool wake = false;
    LLMC_ASSERT_LOCKED(&gr->flight->mu); /* the flight's lock keeps gr attached, so alive */
    pthread_mutex_lock(&w->inbox_mu);
    if (!gr->queued) {
        gr->queued = true;
        llmc__gr_ref(gr); /* the inbox's */
        gr->inbox_next = NULL;
        if (w->inbox_tail)
            w->inbox_tail->inbox_next = gr;
        else
            w->inbox_head = gr;
        w->inbox_tail = gr;
        wake = true;
    }
    pthread_mutex_unlock(&w->inbox_mu);
    if (wake)
        uv_async_send(&w->inbox_async);
}

/* The entries of a taken list stay marked queued until each is popped: a
   producer notifies from its own thread while the loop works through the
   list, and a notification that saw an entry unmarked would relink it into
   the new inbox through the same inbox_next. The pass then either stopped
   there (the rest of the list, and the references it held, lost: leaked
   requests, and waiters whose last notification never ran) or walked on
   into the new inbox (entries run and unreferenced twice). A marked entry
   needs no new notification: it is run later in this pass anyway. */
gw_req_t *llmc__gr_inbox_take(llmc_worker_t *w)
{
    pthread_mutex_lock(&w->inbox_mu);
    gw_req_t *list = w->inbox_head;
    w->inbox_head = w->inbox_tail = NULL;
    pthread_mutex_unlock(&w->inbox_mu);
    return list;
}

gw_req_t *llmc__gr_inbox_pop(llmc_worker_t *w, gw_req_t **list)
{
    pthread_mutex_lock(&w->inbox_mu);
    gw_req_t *gr = *list;
    if (gr) {
        assert(gr->queued);
        *list = gr->inbox_next;
        gr->inbox_next = NULL;
        gr->queued = false; /* from here a notification queues it again */
    }
    pthread_mutex_unlock(&w->inbox_mu);
    return gr;
}

/* ---- the one finish ------------------------------------------------------------ */

/* Copies s into buf as the inside of a JSON string; returns bytes written. */
static void on_log_timer(uv_timer_t *t)
{
    llmc_worker_t *w = t->data;
    llmc_logbuf_flush(&w->logbuf);
}

/* The line goes to this worker's buffer, written out when the buffer is
   full or --access-log-flush after the first line it took (log.h). */
static void access_log(llmc_worker_t *w, llmc_http_req_t *req, int status, uint64_t bytes,
                       const gw_req_t *gr)
{
    if (w->gw->log.fd < 0)
        return;
    char line[LLMC_LOG_LINE_MAX];
    llmc_access_t a = {
        .now_ms = llmc_now_ms(), .thread = w->id, .id = req->id,
        .method = req->method_name, .path = req->path, .status = status,
        .cache = gr ? gr->xcache : NULL, .key = gr ? gr->keyhex : "",
        .bytes = bytes, .dur_ns = uv_hrtime() - req->start_ns,
    };
    size_t len = llmc_log_format(line, &w->log_clock, &a);
    if (llmc_logbuf_append(&w->logbuf, line, len))
        uv_timer_start(&w->log_timer, on_log_timer, (uint64_t)w->gw->cfg->access_log_flush, 0);
}

void llmc_gw_done(llmc_http_req_t *req, int status, uint64_t bytes_out, void *ctx)
{
    llmc_worker_t *w = ctx;
    gw_req_t *gr = req->data;
    LLMC_COUNT(&w->ctr, requests);
    if (status >= 500)
        LLMC_COUNT(&w->ctr, server_errors);
    else if (status >= 400)
        LLMC_COUNT(&w->ctr, client_errors);
    int h = llmc_gw_hist_of_xcache(gr ? gr->xcache : NULL);
    if (h >= 0)
        llmc_hist_observe(&w->hist[h], uv_hrtime() - req->start_ns);
    access_log(w, req, status, bytes_out, gr);
    if (!gr)
        return;
    req->data = NULL;
    gr->req = NULL;
    /* No waiter notification may come after this: the flight lock orders
       it before the server's reference goes. */
    llmc__gr_leave_flight(gr);
    llmc__gr_enter(gr, GR_DONE);
    llmc__gr_unref(gr);
}
