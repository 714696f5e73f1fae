/*
 * test_gateway.c: the gateway in-process: the request lifecycle (req.c)
 * and the asynchronous tier path, proven with a tier that answers later.
 *
 * The "delayed" tier below lives only here: a cache that answers every
 * lookup after delay_ms from a timer on the asking worker's loop. It sits
 * behind the memory tier in a gateway that talks to the built-in mock model;
 * the tests speak HTTP to the gateway over real sockets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gateway/gw_int.h"
#include "llmc/cache.h"
#include "llmc/error.h"
#include "mock/mock.h"
#include "tier/memory.h"

/* ---- the delayed tier ------------------------------------------------------------- */

#define MAX_WORKERS 4

typedef struct pend {
    uv_timer_t timer;
    llmc_tier_lookup_t *lk;
    struct delayed *d;
    struct pend *prev, *next;
} pend_t;

typedef struct delayed {
    llmc_tier_t tier;
    llmc_cache_t *cache;
    uint64_t delay_ms;
    uv_loop_t *loops[MAX_WORKERS];
    pend_t *pending[MAX_WORKERS];      /* each list touched by its worker's loop only */
    _Atomic int lookups, answered, canceled;
} delayed_t;

/* A copy of e: the tier keeps answers elsewhere (as a remote store would),
   and an entry sits in one llmc_cache_t at a time. */
static llmc_entry_t *entry_copy(const llmc_entry_t *e)
{
    llmc_entry_spec_t spec = {
        .key = &e->key, .status = e->status, .flags = e->flags,
        .created_ms = e->created_ms, .expires_ms = e->expires_ms,
        .content_type = llmc_entry_content_type(e), .ns = llmc_entry_ns(e),
        .model = llmc_entry_model(e), .body = e->body, .body_len = e->body_len,
    };
    return llmc_entry_new(&spec);
}

static void pend_closed(uv_handle_t *h)
{
    free(h->data);
}

static void pend_unlink(pend_t *p)
{
    unsigned w = p->lk->worker;
    if (p->prev)
        p->prev->next = p->next;
    else
        p->d->pending[w] = p->next;
    if (p->next)
        p->next->prev = p->prev;
}

static void pend_fire(uv_timer_t *t)
{
    pend_t *p = t->data;
    llmc_tier_lookup_t *lk = p->lk;
    pend_unlink(p);
    llmc_entry_t *held = NULL;
    int rc = llmc_cache_get(p->d->cache, &lk->query->key, lk->now_ms, &held);
    if (rc == 0) {
        lk->entry = entry_copy(held);
        llmc_entry_unref(held);
        rc = lk->entry ? 0 : LLMC_ENOMEM;
    }
    atomic_fetch_add(&p->d->answered, 1);
    uv_close((uv_handle_t *)&p->timer, pend_closed);
    lk->done(lk, rc);
}

static int delayed_lookup(llmc_tier_t *t, llmc_tier_lookup_t *lk)
{
    delayed_t *d = t->impl;
    pend_t *p = calloc(1, sizeof(*p));
    if (!p)
        return LLMC_ENOMEM;
    atomic_fetch_add(&d->lookups, 1);
    p->lk = lk;
    p->d = d;
    p->next = d->pending[lk->worker];
    if (p->next)
        p->next->prev = p;
    d->pending[lk->worker] = p;
    uv_timer_init(d->loops[lk->worker], &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, pend_fire, d->delay_ms, 0);
    return LLMC_EAGAIN;
}

static int delayed_put(llmc_tier_t *t, unsigned worker, llmc_entry_t *e, int64_t now_ms)
{
    llmc_entry_t *copy = entry_copy(e);
    int rc = copy ? llmc_cache_put(((delayed_t *)t->impl)->cache, copy, now_ms) : LLMC_ENOMEM;
    llmc_entry_unref(copy);
    return rc;
}

static void delayed_purge(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                          llmc_tier_purge_cb done, void *arg)
{
    (void)worker;
    done(arg, llmc_cache_delete(((delayed_t *)t->impl)->cache, &sel->key) == 0 ? 1 : 0);
}

static void delayed_stats(llmc_tier_t *t, llmc_tier_stats_t *out)
{
    llmc_cache_stats_t cs;
    llmc_cache_stats(((delayed_t *)t->impl)->cache, &cs);
    memset(out, 0, sizeof(*out));
    out->entries = cs.entries;
}

static int delayed_attach(llmc_tier_t *t, unsigned worker, struct uv_loop_s *loop)
{
    delayed_t *d = t->impl;
    if (worker >= MAX_WORKERS)
        return LLMC_EINVAL;
    d->loops[worker] = loop;
    return 0;
}

static void delayed_detach(llmc_tier_t *t, unsigned worker)
{
    delayed_t *d = t->impl;
    while (d->pending[worker]) {
        pend_t *p = d->pending[worker];
        llmc_tier_lookup_t *lk = p->lk;
        pend_unlink(p);
        uv_timer_stop(&p->timer);
        uv_close((uv_handle_t *)&p->timer, pend_closed);
        atomic_fetch_add(&d->canceled, 1);
        lk->done(lk, LLMC_ECANCELED);
    }
}

static void delayed_destroy(llmc_tier_t *t)
{
    delayed_t *d = t->impl;
    llmc_cache_free(d->cache);
    free(d);
}

static const llmc_tier_ops_t delayed_ops = {
    .name = "delayed",
    .lookup = delayed_lookup,
    .put = delayed_put,
    .purge = delayed_purge,
    .stats = delayed_stats,
    .attach = delayed_attach,
    .detach = delayed_detach,
    .destroy = delayed_destroy,
};

/* ---- a gateway on a thread ----------------------------------------------------------- */

typedef struct fixture {
    llmc_mock_t *mock;
    llmc_config_t cfg;
    llmc_gw_t gw;
    llmc_cache_t *front;          /* the memory tier's cache */
    delayed_t *delayed;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
    int port;
} fixture_t;

static void on_ready(llmc_gw_t *gw, void *arg)
{
    fixture_t *f = arg;
    pthread_mutex_lock(&f->mu);
    f->ready = true;
    f->port = gw->listen_port;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void *gw_thread(void *arg)
{
    fixture_t *f = arg;
    char err[256];
    int rc = llmc_gw_run(&f->gw, on_ready, f, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "gateway: %s\n", err);
    return NULL;
}

/* The gateway's tiers: memory, then the delayed tier. */
static llmc_tier_set_t *tiers_with_delay(fixture_t *f, uint64_t delay_ms)
{
    llmc_cache_config_t cc = {.max_bytes = 64u << 20, .max_entry_share = 0.5};
    f->front = llmc_cache_new(&cc);
    f->delayed = calloc(1, sizeof(*f->delayed));
    assert_non_null(f->front);
    assert_non_null(f->delayed);
    f->delayed->cache = llmc_cache_new(&cc);
    f->delayed->delay_ms = delay_ms;
    f->delayed->tier.ops = &delayed_ops;
    f->delayed->tier.impl = f->delayed;
    llmc_tier_set_t *s = llmc_tier_set_new();
    assert_non_null(s);
    assert_int_equal(llmc_tier_set_add(s, llmc_tier_memory_new(f->front)), 0);
    assert_int_equal(llmc_tier_set_add(s, &f->delayed->tier), 0);
    return s;
}

static fixture_t *start(const char *threads, uint64_t mock_latency_ms, uint64_t delay_ms)
{
    fixture_t *f = calloc(1, sizeof(*f));
    char err[256], url[64];
    assert_non_null(f);
    llmc_mock_config_t mc = {.latency_ms = mock_latency_ms};
    assert_int_equal(llmc_mock_start(&mc, "127.0.0.1", 0, &f->mock, err, sizeof(err)), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", llmc_mock_port(f->mock));
    char *argv[] = {"llmcached", "--listen", "127.0.0.1:0", "--threads", (char *)threads,
                    "--upstream", url, "--access-log", "off", "--data-dir", "none", NULL};
    char *envp[] = {NULL};
    bool help = false, help_md = false;
    assert_int_equal(llmc_config_load(&f->cfg, 11, argv, envp, &help, &help_md, err, sizeof(err)),
                     0);
    assert_int_equal(llmc_gw_init(&f->gw, &f->cfg, url, NULL, err, sizeof(err)), 0);
    llmc_tier_set_free(f->gw.tiers);
    f->gw.tiers = tiers_with_delay(f, delay_ms);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    assert_int_equal(pthread_create(&f->thread, NULL, gw_thread, f), 0);
    pthread_mutex_lock(&f->mu);
    while (!f->ready)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    return f;
}

static void stop(fixture_t *f)
{
    llmc_gw_stop(&f->gw);
    pthread_join(f->thread, NULL);
    llmc_gw_free(&f->gw);
    llmc_config_free(&f->cfg);
    llmc_mock_stop(f->mock);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

static uint64_t counter(fixture_t *f, size_t offset)
{
    llmc_counters_snap_t sum;
    memset(&sum, 0, sizeof(sum));
    for (unsigned i = 0; i < f->gw.nstarted; i++)
        llmc_counters_add(&sum, &f->gw.workers[i].ctr);
    uint64_t v;
    memcpy(&v, (char *)&sum + offset, sizeof(v));
    return v;
}
#define COUNTER(f, field) counter(f, offsetof(llmc_counters_snap_t, field))

/* ---- a small HTTP client ---------------------------------------------------------------- */

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static void send_chat(int fd, const char *question)
{
    char body[512], req[1024];
    int blen = snprintf(body, sizeof(body),
                        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                        question);
    int n = snprintf(req, sizeof(req),
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     blen, body);
    assert_int_equal(write(fd, req, (size_t)n), n);
}

/* Reads the whole answer (the server closes); returns the status, and the
   X-Cache and Cache-Status values in the buffers given. */
static int read_answer(int fd, char *xcache, char *cstatus)
{
    static char buf[1 << 16];
    size_t len = 0;
    ssize_t n;
    while ((n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        return 0;
    const char *x = strstr(buf, "X-Cache: "), *c = strstr(buf, "Cache-Status: ");
    if (xcache)
        sscanf(x ? x + 9 : "", "%31[^\r]", xcache);
    if (cstatus)
        sscanf(c ? c + 14 : "", "%127[^\r]", cstatus);
    return status;
}

static int ask(fixture_t *f, const char *question, char xcache[32], char cstatus[128])
{
    int fd = connect_to(f->port);
    send_chat(fd, question);
    xcache[0] = cstatus[0] = '\0';
    return read_answer(fd, xcache, cstatus);
}

/* ---- the asynchronous tier --------------------------------------------------------------- */

static void test_miss_through_a_pending_tier_goes_upstream(void **state)
{
    fixture_t *f = start("1", 20, 50);
    char x[32], cs[128];
    assert_int_equal(ask(f, "pending miss", x, cs), 200);
    assert_string_equal(x, "MISS");
    assert_int_equal(atomic_load(&f->delayed->lookups), 1);
    assert_int_equal(atomic_load(&f->delayed->answered), 1);
    assert_int_equal(COUNTER(f, upstream_calls), 1);
    assert_int_equal(COUNTER(f, tier_parked), 1);
    /* The answer was stored in every tier, the delayed one too. */
    llmc_cache_stats_t st;
    llmc_cache_stats(f->delayed->cache, &st);
    assert_int_equal(st.entries, 1);
    stop(f);
}

static bool every_entry(const llmc_entry_t *e, void *arg)
{
    (void)e;
    (void)arg;
    return true;
}

static void test_hit_through_a_pending_tier_is_promoted(void **state)
{
    fixture_t *f = start("1", 20, 50);
    char x[32], cs[128];
    assert_int_equal(ask(f, "pending hit", x, cs), 200);
    assert_string_equal(x, "MISS");
    /* Forget it in memory: only the delayed tier has it now. */
    llmc_cache_stats_t st;
    llmc_cache_stats(f->front, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(llmc_cache_purge(f->front, every_entry, NULL), 1);

    assert_int_equal(ask(f, "pending hit", x, cs), 200);
    assert_string_equal(x, "HIT");
    assert_non_null(strstr(cs, "detail=delayed"));
    assert_int_equal(atomic_load(&f->delayed->lookups), 2);
    assert_int_equal(COUNTER(f, upstream_calls), 1);

    /* Promoted: the next hit comes from memory, the delayed tier not asked. */
    assert_int_equal(ask(f, "pending hit", x, cs), 200);
    assert_string_equal(x, "HIT");
    assert_null(strstr(cs, "detail="));
    assert_int_equal(atomic_load(&f->delayed->lookups), 2);
    stop(f);
}

#define CROWD 100

static void test_crowd_waiting_on_a_tier_coalesces_into_one_call(void **state)
{
    fixture_t *f = start("2", 300, 100);
    int fds[CROWD];
    for (int i = 0; i < CROWD; i++) {
        fds[i] = connect_to(f->port);
        send_chat(fds[i], "the crowd asks");
    }
    int miss = 0, coalesced = 0;
    for (int i = 0; i < CROWD; i++) {
        char x[32] = "";
        assert_int_equal(read_answer(fds[i], x, NULL), 200);
        miss += strcmp(x, "MISS") == 0;
        coalesced += strcmp(x, "COALESCED") == 0;
    }
    assert_int_equal(miss, 1);
    assert_int_equal(coalesced, CROWD - 1);
    assert_int_equal(COUNTER(f, upstream_calls), 1);
    assert_int_equal(atomic_load(&f->delayed->lookups), CROWD);
    stop(f);
}

static void test_client_leaving_during_a_pending_lookup(void **state)
{
    fixture_t *f = start("1", 20, 200);
    int fd = connect_to(f->port);
    send_chat(fd, "nobody waits for this");
    /* Parked on the tier: leave before it answers. */
    while (atomic_load(&f->delayed->lookups) == 0)
        usleep(1000);
    close(fd);
    while (atomic_load(&f->delayed->answered) == 0)
        usleep(5000);
    usleep(50 * 1000);
    /* The lookup's answer found nobody: no upstream call was made for it. */
    assert_int_equal(COUNTER(f, upstream_calls), 0);
    assert_int_equal(COUNTER(f, aborted), 1);
    /* The gateway still serves. */
    char x[32], cs[128];
    assert_int_equal(ask(f, "after the leaver", x, cs), 200);
    stop(f); /* ASan and Valgrind: nothing leaked */
}

static void test_shutdown_ends_a_pending_lookup(void **state)
{
    fixture_t *f = start("1", 20, 60000);
    int fd = connect_to(f->port);
    send_chat(fd, "the gateway stops first");
    while (atomic_load(&f->delayed->lookups) == 0)
        usleep(1000);
    delayed_t *d = f->delayed;
    int canceled_before = atomic_load(&d->canceled);
    assert_int_equal(canceled_before, 0);
    llmc_gw_stop(&f->gw);
    pthread_join(f->thread, NULL);
    /* detach completed the lookup the tier still held. */
    assert_int_equal(atomic_load(&d->canceled), 1);
    close(fd);
    llmc_gw_free(&f->gw);
    llmc_config_free(&f->cfg);
    llmc_mock_stop(f->mock);
    free(f);
}

/* ---- the lifecycle table ------------------------------------------------------------------- */

/* A worker good enough for req.c: no loop runs. */
typedef struct lonely {
    llmc_gw_t gw;
    llmc_worker_t w;
    llmc_http_req_t req;
} lonely_t;

static void lonely_init(lonely_t *l)
{
    memset(l, 0, sizeof(*l));
    l->gw.log.fd = -1;
    l->w.gw = &l->gw;
    llmc__gr_spares_init(&l->w);
    pthread_mutex_init(&l->w.inbox_mu, NULL);
    l->req.path = "/x";
}

static void test_lifecycle_legal_path_and_refcount(void **state)
{
    lonely_t l;
    lonely_init(&l);
    gw_req_t *gr = llmc__gr_new(&l.w, &l.req);
    assert_non_null(gr);
    assert_ptr_equal(l.req.data, gr);
    assert_int_equal(gr->state, GR_NEW);
    llmc__gr_enter(gr, GR_LOOKUP);
    llmc__gr_enter(gr, GR_FLIGHT);
    llmc__gr_enter(gr, GR_PARKED_FLIGHT);
    llmc__gr_enter(gr, GR_RESPOND);
    llmc__gr_ref(gr); /* someone else holds it past the end */
    llmc_gw_done(&l.req, 200, 10, &l.w);
    assert_int_equal(gr->state, GR_DONE);
    assert_null(gr->req);
    assert_null(l.req.data);
    unsigned spares = l.w.nspare;
    llmc__gr_unref(gr); /* the last one: back to the spares (none under ASan) */
    assert_int_equal(l.w.nspare, spares + (l.w.spare_max ? 1 : 0));
    llmc__gr_spares_free(&l.w);
    pthread_mutex_destroy(&l.w.inbox_mu);
}

/* Runs fn in a child and reports whether it aborted. */
static bool aborts(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(STDERR_FILENO);
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static void parked_tier_to_respond(void)
{
    lonely_t l;
    lonely_init(&l);
    gw_req_t *gr = llmc__gr_new(&l.w, &l.req);
    llmc__gr_enter(gr, GR_LOOKUP);
    llmc__gr_enter(gr, GR_PARKED_TIER);
    llmc__gr_enter(gr, GR_RESPOND); /* must resume through LOOKUP */
}

static void respond_back_to_lookup(void)
{
    lonely_t l;
    lonely_init(&l);
    gw_req_t *gr = llmc__gr_new(&l.w, &l.req);
    llmc__gr_enter(gr, GR_RESPOND);
    llmc__gr_enter(gr, GR_LOOKUP);
}

static void done_twice(void)
{
    lonely_t l;
    lonely_init(&l);
    gw_req_t *gr = llmc__gr_new(&l.w, &l.req);
    llmc__gr_ref(gr);
    llmc_gw_done(&l.req, 200, 0, &l.w);
    llmc__gr_enter(gr, GR_DONE);
}

/* A hit waiting for its compressed form goes back to RESPOND, nowhere else. */
static void parked_encode_to_lookup(void)
{
    lonely_t l;
    lonely_init(&l);
    gw_req_t *gr = llmc__gr_new(&l.w, &l.req);
    llmc__gr_enter(gr, GR_LOOKUP);
    llmc__gr_enter(gr, GR_RESPOND);
    llmc__gr_enter(gr, GR_PARKED_ENCODE);
    llmc__gr_enter(gr, GR_LOOKUP);
}

/* Only an answer being given waits for a form: a lookup cannot park there. */
static void lookup_to_parked_encode(void)
{
    lonely_t l;
    lonely_init(&l);
    gw_req_t *gr = llmc__gr_new(&l.w, &l.req);
    llmc__gr_enter(gr, GR_LOOKUP);
    llmc__gr_enter(gr, GR_PARKED_ENCODE);
}

static void test_lifecycle_illegal_transitions_abort(void **state)
{
    assert_true(aborts(parked_tier_to_respond));
    assert_true(aborts(respond_back_to_lookup));
    assert_true(aborts(done_twice));
    assert_true(aborts(parked_encode_to_lookup));
    assert_true(aborts(lookup_to_parked_encode));
}

/* RESPOND -> PARKED_ENCODE -> RESPOND -> DONE, and a client that leaves
   while it waits: PARKED_ENCODE -> DONE, the build's reference keeping the
   context until the build is done. */
static void test_lifecycle_parked_encode(void **state)
{
    lonely_t l;
    lonely_init(&l);
    gw_req_t *gr = llmc__gr_new(&l.w, &l.req);
    llmc__gr_enter(gr, GR_LOOKUP);
    llmc__gr_enter(gr, GR_RESPOND);
    llmc__gr_enter(gr, GR_PARKED_ENCODE);
    assert_string_equal(llmc__gr_state_name(gr->state), "PARKED_ENCODE");
    llmc__gr_enter(gr, GR_RESPOND);
    llmc_gw_done(&l.req, 200, 10, &l.w);

    llmc_http_req_t req2 = l.req;
    req2.data = NULL;
    gw_req_t *gr2 = llmc__gr_new(&l.w, &req2);
    llmc__gr_enter(gr2, GR_LOOKUP);
    llmc__gr_enter(gr2, GR_RESPOND);
    llmc__gr_enter(gr2, GR_PARKED_ENCODE);
    llmc__gr_ref(gr2); /* the build's */
    llmc_gw_done(&req2, 499, 0, &l.w); /* the client left */
    assert_int_equal(gr2->state, GR_DONE);
    assert_null(gr2->req);
    llmc__gr_unref(gr2); /* the build is done */
    llmc__gr_spares_free(&l.w);
    pthread_mutex_destroy(&l.w.inbox_mu);
}

static void test_lifecycle_inbox_holds_a_reference(void **state)
{
    lonely_t l;
    lonely_init(&l);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_async_init(&loop, &l.w.inbox_async, NULL);
    gw_req_t *gr = llmc__gr_new(&l.w, &l.req);
    llmc_key_t k;
    memset(&k, 7, sizeof(k));
    gr->flight = llmc_flight_new_private(&k, false);
    assert_non_null(gr->flight);
    /* A flight notifies its waiters under its lock. */
    pthread_mutex_lock(&gr->flight->mu);
    llmc__gr_notify(&gr->fw);
    llmc__gr_notify(&gr->fw); /* queued once, one reference */
    pthread_mutex_unlock(&gr->flight->mu);
    assert_int_equal(atomic_load(&gr->refs), 2);
    llmc_gw_done(&l.req, 200, 0, &l.w); /* the server is done; the inbox still holds it */
    assert_int_equal(atomic_load(&gr->refs), 1);
    assert_null(gr->flight); /* left at the finish: no notification can come after it */
    gw_req_t *list = llmc__gr_inbox_take(&l.w);
    assert_ptr_equal(llmc__gr_inbox_pop(&l.w, &list), gr);
    assert_null(list);
    assert_false(gr->queued);
    llmc__gr_unref(gr);
    assert_null(llmc__gr_inbox_take(&l.w));
    uv_close((uv_handle_t *)&l.w.inbox_async, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    llmc__gr_spares_free(&l.w);
    pthread_mutex_destroy(&l.w.inbox_mu);
}

/* A flight's producer runs on another thread and notifies waiters while the
   loop works through the inbox it took. A notification for an entry the
   loop took but has not run yet must neither relink it (the rest of the
   taken list was lost with its references: leaked requests, and waiters
   whose last notification never ran) nor queue it twice. */
static void test_lifecycle_notify_during_an_inbox_pass(void **state)
{
    lonely_t l;
    lonely_init(&l);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_async_init(&loop, &l.w.inbox_async, NULL);
    llmc_key_t k;
    memset(&k, 7, sizeof(k));
    llmc_flight_t *f = llmc_flight_new_private(&k, true);
    llmc_http_req_t reqs[3];
    gw_req_t *gr[3];
    for (int i = 0; i < 3; i++) {
        memset(&reqs[i], 0, sizeof(reqs[i]));
        reqs[i].path = "/x";
        gr[i] = llmc__gr_new(&l.w, &reqs[i]);
        llmc_flight_ref(f);
        gr[i]->flight = f;
    }
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < 3; i++)
        llmc__gr_notify(&gr[i]->fw);
    pthread_mutex_unlock(&f->mu);
    gw_req_t *list = llmc__gr_inbox_take(&l.w);
    gw_req_t *first = llmc__gr_inbox_pop(&l.w, &list);
    assert_ptr_equal(first, gr[0]);
    /* The producer, while the loop runs the first: the others once more. */
    pthread_mutex_lock(&f->mu);
    llmc__gr_notify(&gr[1]->fw);
    llmc__gr_notify(&gr[2]->fw);
    llmc__gr_notify(&gr[0]->fw); /* run already: queued again, for the next pass */
    pthread_mutex_unlock(&f->mu);
    llmc__gr_unref(first);
    int seen = 1;
    for (gw_req_t *p; (p = llmc__gr_inbox_pop(&l.w, &list)); seen++) {
        assert_ptr_equal(p, gr[seen]);
        llmc__gr_unref(p);
    }
    assert_int_equal(seen, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(atomic_load(&gr[i]->refs), i == 0 ? 2 : 1);
    list = llmc__gr_inbox_take(&l.w);
    gw_req_t *again = llmc__gr_inbox_pop(&l.w, &list);
    assert_ptr_equal(again, gr[0]);
    assert_null(llmc__gr_inbox_pop(&l.w, &list));
    llmc__gr_unref(again);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(atomic_load(&gr[i]->refs), 1);
        llmc_gw_done(&reqs[i], 200, 0, &l.w); /* the last reference: freed */
    }
    llmc_flight_unref(f);
    uv_close((uv_handle_t *)&l.w.inbox_async, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    llmc__gr_spares_free(&l.w);
    pthread_mutex_destroy(&l.w.inbox_mu);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle_legal_path_and_refcount),
        cmocka_unit_test(test_lifecycle_illegal_transitions_abort),
        cmocka_unit_test(test_lifecycle_parked_encode),
        cmocka_unit_test(test_lifecycle_inbox_holds_a_reference),
        cmocka_unit_test(test_lifecycle_notify_during_an_inbox_pass),
        cmocka_unit_test(test_miss_through_a_pending_tier_goes_upstream),
        cmocka_unit_test(test_hit_through_a_pending_tier_is_promoted),
        cmocka_unit_test(test_crowd_waiting_on_a_tier_coalesces_into_one_call),
        cmocka_unit_test(test_client_leaving_during_a_pending_lookup),
        cmocka_unit_test(test_shutdown_ends_a_pending_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
