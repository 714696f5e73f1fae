/*
 * test_tier_set.c: the tier set (src/tier/set.c): the lookup walk,
 * promotion, store, the front tier, purge fan-out and per-worker set-up.
 *
 * The front is the real memory tier; behind it sit two kinds of fake tier
 * defined here. A "sync" fake answers get() at once; a "delayed" fake's
 * lookup() answers LLMC_EAGAIN and completes from a uv_timer on a real
 * loop the test runs, and its purge completes the same way. Both hold at
 * most one entry and count every call; calls that matter for order also go
 * into one shared log ("name:op "), which outlives the fakes (the set frees
 * them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "llmc/error.h"
#include "llmc/key.h"
#include "tier/memory.h"
#include "tier/set.h"

#define NOW 1700000000000LL
#define HOUR 3600000LL

/* ---- the shared call log ---- */

static char calls[1024];

static void logf_call(const char *name, const char *op)
{
    size_t n = strlen(calls);
    snprintf(calls + n, sizeof(calls) - n, "%s:%s ", name, op);
}

/* ---- keys and entries ---- */

static llmc_key_t key_of(int n)
{
    char canon[32];
    llmc_key_t k;
    int len = snprintf(canon, sizeof canon, "{\"n\":%d}", n);
    llmc_key_build(&k, "/v1/chat/completions", "http://up", "", "", canon, (size_t)len);
    return k;
}

static llmc_entry_t *mk_ns(int n, size_t body_len, int64_t expires_ms, const char *ns)
{
    llmc_key_t k = key_of(n);
    char *body = malloc(body_len + 1);
    assert_non_null(body);
    memset(body, 'a' + n % 26, body_len);
    llmc_entry_spec_t spec = {
        .key = &k, .status = 200, .created_ms = NOW - 1000, .expires_ms = expires_ms,
        .ns = ns, .body = body, .body_len = body_len,
    };
    llmc_entry_t *e = llmc_entry_new(&spec);
    free(body);
    assert_non_null(e);
    return e;
}

static llmc_entry_t *mk(int n)
{
    return mk_ns(n, 100, NOW + HOUR, "");
}

static bool same_key(const llmc_key_t *a, const llmc_key_t *b)
{
    return memcmp(a->b, b->b, LLMC_KEY_LEN) == 0;
}

/* ---- the memory tier ---- */

static llmc_tier_t *memory_tier(size_t max_bytes, double share)
{
    llmc_cache_config_t cfg = {max_bytes, 1, share, HOUR};
    llmc_tier_t *t = llmc_tier_memory_new(llmc_cache_new(&cfg));
    assert_non_null(t);
    return t;
}

/* True when the memory tier t holds key n; asks the cache itself, so the
   tier's hit and miss counts stay as the set left them. */
static bool mem_holds(llmc_tier_t *t, int n)
{
    llmc_key_t k = key_of(n);
    llmc_entry_t *e = NULL;
    if (llmc_cache_get(llmc_tier_memory_cache(t), &k, NOW, &e) != 0)
        return false;
    llmc_entry_unref(e);
    return true;
}

/* ---- fake tiers ---- */

typedef struct fake {
    llmc_tier_t tier;
    llmc_tier_ops_t ops;        /* its own copy, so a test may drop an op */
    const char *name;
    llmc_entry_t *held;         /* the one entry it answers */
    int lookup_rc;              /* when not 0: the answer to every lookup */
    int attach_rc;
    size_t purge_removed;       /* what a purge reports */
    unsigned gets, lookups, puts, purges, ticks, attaches, detaches;
    unsigned put_worker;        /* the worker of the last put */
    llmc_purge_t last_purge;
    /* delayed fakes */
    uint64_t delay_ms;
    uv_timer_t timer;
    bool timer_open;
    llmc_tier_lookup_t *pending_lk;
    llmc_tier_purge_cb pending_done;
    void *pending_arg;
} fake_t;

static fake_t *fk(llmc_tier_t *t)
{
    return t->impl;
}

/* What the fake answers for key: 0 and a reference, or LLMC_ENOENT. */
static int answer(fake_t *f, const llmc_key_t *key, llmc_entry_t **out)
{
    if (f->lookup_rc)
        return f->lookup_rc;
    if (!f->held || !same_key(&f->held->key, key))
        return LLMC_ENOENT;
    *out = llmc_entry_ref(f->held);
    return 0;
}

static int fake_get(llmc_tier_t *t, const llmc_key_t *key, int64_t now_ms, llmc_entry_t **out)
{
    fake_t *f = fk(t);
    f->gets++;
    logf_call(f->name, "get");
    return answer(f, key, out);
}

static int fake_put(llmc_tier_t *t, unsigned worker, llmc_entry_t *e, int64_t now_ms)
{
    fake_t *f = fk(t);
    f->puts++;
    f->put_worker = worker;
    logf_call(f->name, "put");
    llmc_entry_unref(f->held);
    f->held = llmc_entry_ref(e);
    return 0;
}

/* Removes its entry when sel selects it; how many it reports is set by the test. */
static size_t fake_remove(fake_t *f, const llmc_purge_t *sel)
{
    f->purges++;
    f->last_purge = *sel;
    logf_call(f->name, "purge");
    if (f->held && llmc_purge_match(sel, f->held)) {
        llmc_entry_unref(f->held);
        f->held = NULL;
    }
    return f->purge_removed;
}

static void fake_purge(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                       llmc_tier_purge_cb done, void *arg)
{
    done(arg, fake_remove(fk(t), sel));
}

static void fake_tick(llmc_tier_t *t, int64_t now_ms)
{
    fk(t)->ticks++;
    logf_call(fk(t)->name, "tick");
}

static void fake_stats(llmc_tier_t *t, llmc_tier_stats_t *out)
{
    fake_t *f = fk(t);
    *out = (llmc_tier_stats_t){.entries = f->held != NULL, .stored = f->puts, .hits = 7};
}

static int fake_attach(llmc_tier_t *t, unsigned worker, uv_loop_t *loop)
{
    fake_t *f = fk(t);
    f->attaches++;
    logf_call(f->name, "attach");
    if (f->attach_rc)
        return f->attach_rc;
    if (f->delay_ms) {
        uv_timer_init(loop, &f->timer);
        f->timer.data = f;
        f->timer_open = true;
    }
    return 0;
}

/* Completes what is pending, as a detach must: the lookup canceled, the
   purge with nothing removed. */
static void fake_detach(llmc_tier_t *t, unsigned worker)
{
    fake_t *f = fk(t);
    f->detaches++;
    logf_call(f->name, "detach");
    if (f->pending_lk) {
        llmc_tier_lookup_t *lk = f->pending_lk;
        f->pending_lk = NULL;
        lk->done(lk, LLMC_ECANCELED);
    }
    if (f->pending_done) {
        llmc_tier_purge_cb done = f->pending_done;
        f->pending_done = NULL;
        done(f->pending_arg, 0);
    }
    if (f->timer_open) {
        uv_close((uv_handle_t *)&f->timer, NULL);
        f->timer_open = false;
    }
}

static void fake_destroy(llmc_tier_t *t)
{
    fake_t *f = fk(t);
    logf_call(f->name, "destroy");
    assert_false(f->timer_open);
    llmc_entry_unref(f->held);
    free(f);
}

/* The delayed fake's answers, when its timer fires. Each completion is
   taken off the fake first: the set may call the fake again from it. */
static void fake_fire(uv_timer_t *h)
{
    fake_t *f = h->data;
    if (f->pending_lk) {
        llmc_tier_lookup_t *lk = f->pending_lk;
        f->pending_lk = NULL;
        lk->done(lk, answer(f, &lk->query->key, &lk->entry));
    }
    if (f->pending_done) {
        llmc_tier_purge_cb done = f->pending_done;
        f->pending_done = NULL;
        done(f->pending_arg, f->purge_removed);
    }
}

static int fake_lookup(llmc_tier_t *t, llmc_tier_lookup_t *lk)
{
    fake_t *f = fk(t);
    f->lookups++;
    logf_call(f->name, "lookup");
    assert_true(f->timer_open);
    assert_null(f->pending_lk);
    f->pending_lk = lk;
    uv_timer_start(&f->timer, fake_fire, f->delay_ms, 0);
    return LLMC_EAGAIN;
}

static void fake_purge_later(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                             llmc_tier_purge_cb done, void *arg)
{
    fake_t *f = fk(t);
    assert_true(f->timer_open);
    assert_null(f->pending_done);
    /* Removes now, reports later: what a tier that queues its purge does. */
    fake_remove(f, sel);
    f->pending_done = done;
    f->pending_arg = arg;
    uv_timer_start(&f->timer, fake_fire, f->delay_ms, 0);
}

static const llmc_tier_ops_t sync_ops = {
    .get = fake_get, .put = fake_put, .purge = fake_purge, .tick = fake_tick,
    .stats = fake_stats, .attach = fake_attach, .detach = fake_detach, .destroy = fake_destroy,
};

static const llmc_tier_ops_t delayed_ops = {
    .lookup = fake_lookup, .put = fake_put, .purge = fake_purge_later, .tick = fake_tick,
    .stats = fake_stats, .attach = fake_attach, .detach = fake_detach, .destroy = fake_destroy,
};

static fake_t *fake_new(const char *name, const llmc_tier_ops_t *ops, uint64_t delay_ms)
{
    fake_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->ops = *ops;
    f->ops.name = name;
    f->name = name;
    f->delay_ms = delay_ms;
    f->tier.ops = &f->ops;
    f->tier.impl = f;
    return f;
}

static fake_t *sync_fake(const char *name)
{
    return fake_new(name, &sync_ops, 0);
}

static fake_t *delayed_fake(const char *name, uint64_t delay_ms)
{
    return fake_new(name, &delayed_ops, delay_ms);
}

/* ---- a set on a loop, and lookups through it ---- */

typedef struct fixture {
    uv_loop_t loop;
    llmc_tier_set_t *set;
    llmc_tier_t *mem;
} fixture_t;

static void add(fixture_t *x, llmc_tier_t *t)
{
    assert_int_equal(llmc_tier_set_add(x->set, t), 0);
}

/* A set whose front is a 1 MiB memory tier; the other tiers come from the test. */
static int setup(void **state)
{
    fixture_t *x = calloc(1, sizeof *x);
    calls[0] = '\0';
    if (!x || uv_loop_init(&x->loop) != 0)
        return -1;
    x->set = llmc_tier_set_new();
    x->mem = memory_tier(1 << 20, 0.5);
    add(x, x->mem);
    *state = x;
    return 0;
}

/* Set-up for tests that add their own front. */
static int setup_empty(void **state)
{
    fixture_t *x = calloc(1, sizeof *x);
    calls[0] = '\0';
    if (!x || uv_loop_init(&x->loop) != 0)
        return -1;
    x->set = llmc_tier_set_new();
    *state = x;
    return 0;
}

/* Detaches worker 0 (a second detach of a test that did it is harmless),
   lets the closes run, frees the set; the loop must be left with nothing. */
static int teardown(void **state)
{
    fixture_t *x = *state;
    llmc_tier_set_detach(x->set, 0);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    llmc_tier_set_free(x->set);
    assert_int_equal(uv_loop_close(&x->loop), 0);
    free(x);
    return 0;
}

static void attach(fixture_t *x)
{
    assert_int_equal(llmc_tier_set_attach(x->set, 0, &x->loop), 0);
}

typedef struct req {
    llmc_set_lookup_t sl;       /* first: the completion finds the req from it */
    llmc_tier_query_t q;
    int calls, rc;
} req_t;

static void req_done(llmc_set_lookup_t *sl, int rc)
{
    req_t *r = (req_t *)sl;
    r->calls++;
    r->rc = rc;
}

static int lookup(fixture_t *x, req_t *r, int n)
{
    memset(r, 0, sizeof *r);
    r->q.key = key_of(n);
    r->sl.tl.query = &r->q;
    r->sl.tl.now_ms = NOW;
    r->sl.tl.worker = 0;
    r->sl.done = req_done;
    return llmc_tier_set_lookup(x->set, &r->sl);
}

/* ---- the walk ---- */

/* The front answers a hit; the tier behind it is never asked. */
static void test_front_hit_stops_walk(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a");
    add(x, &a->tier);
    llmc_entry_t *e = mk(1);
    a->held = llmc_entry_ref(e);
    assert_int_equal(llmc_cache_put(llmc_tier_memory_cache(x->mem), e, NOW), 0);

    req_t r;
    assert_int_equal(lookup(x, &r, 1), 0);
    assert_ptr_equal(r.sl.tl.entry, e);
    assert_string_equal(r.sl.tier_name, "memory");
    assert_int_equal(a->gets, 0);
    assert_int_equal(r.calls, 0);
    assert_false(r.sl.pending);
    llmc_entry_unref(r.sl.tl.entry);
    llmc_entry_unref(e);
}

/* A request context is reused: a similarity left from its last request (a
   semantic hit) must not follow an exact hit, or it would be answered as
   SEMANTIC-HIT. The set zeroes it before asking each tier. */
static void test_exact_hit_has_no_similarity(void **state)
{
    fixture_t *x = *state;
    llmc_entry_t *e = mk(1);
    assert_int_equal(llmc_cache_put(llmc_tier_memory_cache(x->mem), e, NOW), 0);
    req_t r;
    memset(&r, 0, sizeof r);
    r.q.key = key_of(1);
    r.sl.tl.query = &r.q;
    r.sl.tl.now_ms = NOW;
    r.sl.done = req_done;
    r.sl.tl.similarity = 0.93f; /* what the last request left */
    assert_int_equal(llmc_tier_set_lookup(x->set, &r.sl), 0);
    assert_ptr_equal(r.sl.tl.entry, e);
    assert_true(r.sl.tl.similarity == 0.0f);
    llmc_entry_unref(r.sl.tl.entry);
    llmc_entry_unref(e);
}

/* Every tier asked once, in order; a synchronous miss never calls done. */
static void test_miss_through_all(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *b = sync_fake("b");
    add(x, &a->tier);
    add(x, &b->tier);

    req_t r;
    assert_int_equal(lookup(x, &r, 1), LLMC_ENOENT);
    assert_null(r.sl.tl.entry);
    assert_null(r.sl.tier_name);
    assert_string_equal(calls, "a:get b:get ");
    assert_int_equal(r.calls, 0);
}

/* A hit in the third tier is put into the two before it, then the front answers. */
static void test_sync_hit_promoted(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *b = sync_fake("b");
    add(x, &a->tier);
    add(x, &b->tier);
    llmc_entry_t *e = mk(1);
    b->held = e;

    req_t r;
    assert_int_equal(lookup(x, &r, 1), 0);
    assert_ptr_equal(r.sl.tl.entry, e);
    assert_string_equal(r.sl.tier_name, "b");
    assert_string_equal(calls, "a:get b:get a:put ");
    assert_ptr_equal(a->held, e);
    assert_true(mem_holds(x->mem, 1));
    llmc_entry_unref(r.sl.tl.entry);

    calls[0] = '\0';
    assert_int_equal(lookup(x, &r, 1), 0);
    assert_string_equal(r.sl.tier_name, "memory");
    assert_string_equal(calls, "");
    llmc_entry_unref(r.sl.tl.entry);
}

/* A stale entry in the front is the answer: serving stale is the request's call. */
static void test_stale_front_answers(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a");
    add(x, &a->tier);
    llmc_entry_t *old = mk_ns(1, 100, NOW - 1, "");
    a->held = mk(1);
    assert_int_equal(llmc_cache_put(llmc_tier_memory_cache(x->mem), old, NOW - 2000), 0);

    req_t r;
    assert_int_equal(lookup(x, &r, 1), 0);
    assert_ptr_equal(r.sl.tl.entry, old);
    assert_true(r.sl.tl.entry->expires_ms <= NOW);
    assert_string_equal(r.sl.tier_name, "memory");
    assert_int_equal(a->gets, 0);
    llmc_entry_unref(r.sl.tl.entry);
    llmc_entry_unref(old);
}

/* A pending tier's hit reaches the caller once, through done, after promotion. */
static void test_async_hit_promoted(void **state)
{
    fixture_t *x = *state;
    fake_t *d = delayed_fake("d", 1);
    add(x, &d->tier);
    attach(x);
    llmc_entry_t *e = mk(1);
    d->held = e;

    req_t r;
    assert_int_equal(lookup(x, &r, 1), LLMC_EAGAIN);
    assert_true(r.sl.pending);
    assert_int_equal(r.calls, 0);
    assert_false(mem_holds(x->mem, 1));
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, 0);
    assert_false(r.sl.pending);
    assert_ptr_equal(r.sl.tl.entry, e);
    assert_string_equal(r.sl.tier_name, "d");
    assert_true(mem_holds(x->mem, 1));
    llmc_entry_unref(r.sl.tl.entry);
}

/* A pending tier misses; the walk goes on by itself into a tier that answers
   at once, whose hit is promoted into both tiers before it. */
static void test_async_miss_continues(void **state)
{
    fixture_t *x = *state;
    fake_t *d = delayed_fake("d", 1), *a = sync_fake("a");
    add(x, &d->tier);
    add(x, &a->tier);
    attach(x);
    llmc_entry_t *e = mk(1);
    a->held = e;

    req_t r;
    assert_int_equal(lookup(x, &r, 1), LLMC_EAGAIN);
    assert_int_equal(a->gets, 0);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.sl.tier_name, "a");
    assert_ptr_equal(r.sl.tl.entry, e);
    assert_ptr_equal(d->held, e);
    assert_true(mem_holds(x->mem, 1));
    assert_string_equal(calls, "d:attach a:attach d:lookup a:get d:put ");
    llmc_entry_unref(r.sl.tl.entry);
}

/* A pending tier that answers an error missed; the next one goes pending
   from inside that completion, and the caller hears one final miss. */
static void test_async_error_is_miss(void **state)
{
    fixture_t *x = *state;
    fake_t *d1 = delayed_fake("d1", 1), *d2 = delayed_fake("d2", 2);
    add(x, &d1->tier);
    add(x, &d2->tier);
    attach(x);
    d1->lookup_rc = LLMC_EIO;
    d2->held = mk(2);

    req_t r;
    assert_int_equal(lookup(x, &r, 1), LLMC_EAGAIN);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, LLMC_ENOENT);
    assert_null(r.sl.tl.entry);
    assert_null(r.sl.tier_name);
    assert_int_equal(d1->lookups, 1);
    assert_int_equal(d2->lookups, 1);
}

/* Detach cancels the pending lookup: one final miss, and no slower tier
   (which may already be torn down) is asked. */
static void test_detach_cancels_lookup(void **state)
{
    fixture_t *x = *state;
    fake_t *d = delayed_fake("d", 60000), *a = sync_fake("a");
    add(x, &d->tier);
    add(x, &a->tier);
    attach(x);
    a->held = mk(1);

    req_t r;
    assert_int_equal(lookup(x, &r, 1), LLMC_EAGAIN);
    llmc_tier_set_detach(x->set, 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, LLMC_ENOENT);
    assert_null(r.sl.tl.entry);
    assert_false(r.sl.pending);
    assert_int_equal(a->gets, 0);
    assert_string_equal(calls, "d:attach a:attach d:lookup a:detach d:detach ");
}

/* ---- store and the front ---- */

/* Every tier keeps the answer, front first. */
static void test_store_everywhere(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *d = delayed_fake("d", 1);
    add(x, &a->tier);
    add(x, &d->tier);
    llmc_entry_t *e = mk(1);

    assert_int_equal(llmc_tier_set_store(x->set, 0, e, NOW, 0), 0);
    assert_true(mem_holds(x->mem, 1));
    assert_ptr_equal(a->held, e);
    assert_ptr_equal(d->held, e);
    assert_string_equal(calls, "a:put d:put ");
    llmc_entry_unref(e);
}

/* The front refuses an answer too big for it: no tier keeps it, and the
   older answer under its key is purged from the slower tiers (else a
   lookup would promote it back). */
static void test_front_refusal_purges_key(void **state)
{
    fixture_t *x = *state;
    x->mem = memory_tier(8192, 0.25); /* refuses entries over 2 KiB */
    fake_t *a = sync_fake("a"), *d = delayed_fake("d", 1);
    add(x, x->mem);
    add(x, &a->tier);
    add(x, &d->tier);
    attach(x);
    llmc_entry_t *old = mk(1), *other = mk(2), *big = mk_ns(1, 4000, NOW + HOUR, "");
    assert_int_equal(llmc_tier_set_store(x->set, 0, old, NOW - 10, 0), 0);
    /* Another key, which the purge must leave alone. */
    assert_int_equal(llmc_tier_set_front_put(x->set, 0, other, NOW - 10), 0);
    assert_ptr_equal(a->held, old);
    assert_ptr_equal(d->held, old);
    calls[0] = '\0';

    assert_int_equal(llmc_tier_set_store(x->set, 0, big, NOW, 0), LLMC_E2BIG);
    assert_false(mem_holds(x->mem, 1));
    assert_true(mem_holds(x->mem, 2));
    assert_null(a->held);
    assert_null(d->held);
    assert_int_equal(a->puts, 1);
    assert_int_equal(d->puts, 1);
    assert_int_equal(a->last_purge.conds, LLMC_PURGE_KEY);
    assert_true(same_key(&a->last_purge.key, &big->key));
    assert_string_equal(calls, "a:purge d:purge ");
    uv_run(&x->loop, UV_RUN_DEFAULT); /* d's completion goes nowhere */

    req_t r;
    assert_int_equal(lookup(x, &r, 1), LLMC_EAGAIN);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(r.rc, LLMC_ENOENT);
    llmc_entry_unref(old);
    llmc_entry_unref(other);
    llmc_entry_unref(big);
}

/* The front's bound on a body is known before any entry is built, and
   refusing an answer by key takes its older answer off every tier, as a
   refused store does; with no bound of its own the front takes any size. */
static void test_max_body_and_refuse(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a");
    x->mem = memory_tier(8192, 0.25); /* refuses entries over 2 KiB */
    add(x, x->mem);
    add(x, &a->tier);
    size_t max = llmc_tier_set_max_body(x->set);
    assert_true(max >= 1024 && max <= 2048);
    llmc_entry_t *old = mk(1), *other = mk(2);
    assert_int_equal(llmc_tier_set_store(x->set, 0, old, NOW - 10, 0), 0);
    assert_int_equal(llmc_tier_set_store(x->set, 0, other, NOW - 10, 0), 0);
    llmc_tier_set_refuse(x->set, 0, &old->key);
    assert_false(mem_holds(x->mem, 1));
    assert_true(mem_holds(x->mem, 2));
    assert_int_equal(a->last_purge.conds, LLMC_PURGE_KEY);
    assert_true(same_key(&a->last_purge.key, &old->key));
    llmc_entry_unref(old);
    llmc_entry_unref(other);

    llmc_tier_set_t *bare = llmc_tier_set_new();
    assert_non_null(bare);
    assert_int_equal(llmc_tier_set_max_body(bare), SIZE_MAX); /* empty: no bound */
    assert_int_equal(llmc_tier_set_add(bare, &sync_fake("b")->tier), 0);
    assert_int_equal(llmc_tier_set_max_body(bare), SIZE_MAX); /* a tier without max_body */
    llmc_tier_set_free(bare);
}

/* A put names the worker whose loop it runs on (a tier with a connection
   per loop writes on that one): the store's worker, and for a promotion
   the lookup's. */
static void test_put_names_worker(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *b = sync_fake("b");
    add(x, &a->tier);
    add(x, &b->tier);
    llmc_entry_t *e = mk(1);

    assert_int_equal(llmc_tier_set_store(x->set, 3, e, NOW, 0), 0);
    assert_int_equal(a->put_worker, 3);
    assert_int_equal(b->put_worker, 3);
    llmc_entry_unref(a->held);
    a->held = NULL;

    req_t r;
    memset(&r, 0, sizeof r);
    r.q.key = key_of(1);
    r.sl.tl.query = &r.q;
    r.sl.tl.now_ms = NOW;
    r.sl.tl.worker = 2;
    r.sl.done = req_done;
    assert_int_equal(llmc_cache_delete(llmc_tier_memory_cache(x->mem), &r.q.key), 0);
    assert_int_equal(llmc_tier_set_lookup(x->set, &r.sl), 0);
    assert_string_equal(r.sl.tier_name, "b");
    assert_int_equal(a->put_worker, 2);
    assert_int_equal(a->puts, 2);
    llmc_entry_unref(r.sl.tl.entry);
    llmc_entry_unref(e);
}

/* front_get and front_put touch the front alone. */
static void test_front_only(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a");
    add(x, &a->tier);
    llmc_entry_t *e = mk(1), *f = mk(2);
    a->held = llmc_entry_ref(f);

    assert_int_equal(llmc_tier_set_front_put(x->set, 0, e, NOW), 0);
    assert_true(mem_holds(x->mem, 1));
    llmc_key_t k1 = key_of(1), k2 = key_of(2);
    llmc_entry_t *got = llmc_tier_set_front_get(x->set, &k1, NOW);
    assert_ptr_equal(got, e);
    llmc_entry_unref(got);
    assert_null(llmc_tier_set_front_get(x->set, &k2, NOW));
    assert_string_equal(calls, "");
    llmc_entry_unref(e);
    llmc_entry_unref(f);
}

/* ---- purge ---- */

typedef struct purge_result {
    int calls;
    size_t removed;                     /* the sum */
    size_t by_tier[LLMC_TIER_SET_MAX];
    unsigned ntiers;
} purge_result_t;

static void purge_done(void *arg, const size_t *removed, unsigned ntiers)
{
    purge_result_t *p = arg;
    p->calls++;
    p->removed = 0;
    p->ntiers = ntiers;
    for (unsigned i = 0; i < ntiers; i++) {
        p->by_tier[i] = removed[i];
        p->removed += removed[i];
    }
}

/* One completion with the sum, once the delayed tier has answered too. */
static void test_purge_fan_out(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *d = delayed_fake("d", 1);
    add(x, &a->tier);
    add(x, &d->tier);
    attach(x);
    llmc_entry_t *e1 = mk_ns(1, 100, NOW + HOUR, "team"), *e2 = mk_ns(2, 100, NOW + HOUR, "team");
    llmc_entry_t *e3 = mk_ns(3, 100, NOW + HOUR, "other");
    llmc_cache_t *c = llmc_tier_memory_cache(x->mem);
    assert_int_equal(llmc_cache_put(c, e1, NOW), 0);
    assert_int_equal(llmc_cache_put(c, e2, NOW), 0);
    assert_int_equal(llmc_cache_put(c, e3, NOW), 0);
    a->purge_removed = 3;
    d->purge_removed = 5;

    purge_result_t p = {0};
    llmc_purge_t sel = {.conds = LLMC_PURGE_NAMESPACE, .ns = "team"};
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    assert_int_equal(p.calls, 0);
    assert_false(mem_holds(x->mem, 1));
    assert_true(mem_holds(x->mem, 3));
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.removed, 2 + 3 + 5);
    /* Each tier's own count, in the set's order. */
    assert_int_equal(p.ntiers, 3);
    assert_int_equal(p.by_tier[0], 2);
    assert_int_equal(p.by_tier[1], 3);
    assert_int_equal(p.by_tier[2], 5);
    llmc_entry_unref(e1);
    llmc_entry_unref(e2);
    llmc_entry_unref(e3);
}

/* A tier that answers its entry whatever the key (a semantic tier's hit). */
static int similar_get(llmc_tier_t *t, const llmc_key_t *key, int64_t now_ms, llmc_entry_t **out)
{
    fake_t *f = fk(t);
    (void)key;
    f->gets++;
    if (!f->held)
        return LLMC_ENOENT;
    *out = llmc_entry_ref(f->held);
    return 0;
}

/* A hit under another key leaves a copy under the request's key in the
   front (the same request is then an exact hit there); a key purge of the
   original takes the copy too, a purge of the copy's own key just it. */
static void test_hit_under_another_key_leaves_an_alias(void **state)
{
    fixture_t *x = *state;
    fake_t *s = sync_fake("s");
    s->ops.get = similar_get;
    add(x, &s->tier);
    llmc_entry_t *e = mk_ns(1, 100, NOW + HOUR, "team");
    s->held = e;

    req_t r;
    assert_int_equal(lookup(x, &r, 2), 0);
    assert_ptr_equal(r.sl.tl.entry, e);
    assert_string_equal(r.sl.tier_name, "s");
    llmc_entry_unref(r.sl.tl.entry);
    assert_true(mem_holds(x->mem, 2));
    /* The same request again: the front answers a copy with the original's body and metadata. */
    assert_int_equal(lookup(x, &r, 2), 0);
    assert_string_equal(r.sl.tier_name, "memory");
    llmc_entry_t *a = r.sl.tl.entry;
    llmc_key_t k2 = key_of(2);
    assert_true(same_key(&a->key, &k2));
    assert_int_equal(a->body_len, e->body_len);
    assert_memory_equal(a->body, e->body, e->body_len);
    assert_true(a->expires_ms == e->expires_ms);
    assert_string_equal(llmc_entry_ns(a), "team");
    llmc_entry_unref(a);
    assert_int_equal(lookup(x, &r, 3), 0); /* another wording, another alias */
    llmc_entry_unref(r.sl.tl.entry);
    assert_true(mem_holds(x->mem, 3));

    /* The alias's own key: only that alias goes. */
    purge_result_t p = {0};
    llmc_purge_t sel = {.conds = LLMC_PURGE_KEY, .key = key_of(3)};
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    assert_false(mem_holds(x->mem, 3));
    assert_true(mem_holds(x->mem, 2));
    /* The original's key: its aliases go with it. */
    sel.key = key_of(1);
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    assert_false(mem_holds(x->mem, 2));
    uv_run(&x->loop, UV_RUN_DEFAULT);
}

/* An alias carries its original's namespace: a purge by namespace takes it. */
static void test_alias_goes_with_a_selector_purge(void **state)
{
    fixture_t *x = *state;
    fake_t *s = sync_fake("s");
    s->ops.get = similar_get;
    add(x, &s->tier);
    s->held = mk_ns(1, 100, NOW + HOUR, "team");
    req_t r;
    assert_int_equal(lookup(x, &r, 2), 0);
    llmc_entry_unref(r.sl.tl.entry);
    assert_true(mem_holds(x->mem, 2));
    purge_result_t p = {0};
    llmc_purge_t sel = {.conds = LLMC_PURGE_NAMESPACE, .ns = "team"};
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    assert_false(mem_holds(x->mem, 2));
    uv_run(&x->loop, UV_RUN_DEFAULT);
}

/* Tiers that all answer inside purge(): the completion runs before it returns. */
static void test_purge_sync_completes_at_once(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *b = sync_fake("b");
    add(x, &a->tier);
    add(x, &b->tier);
    a->purge_removed = 4;
    b->purge_removed = 1;

    purge_result_t p = {0};
    llmc_purge_t sel = {.all = true};
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.removed, 5);
}

/* A purge with the delayed tier still out when the worker detaches: done
   runs once, from the detach. */
static void test_purge_completed_by_detach(void **state)
{
    fixture_t *x = *state;
    fake_t *d = delayed_fake("d", 60000);
    add(x, &d->tier);
    attach(x);
    d->purge_removed = 9;

    purge_result_t p = {0};
    llmc_purge_t sel = {.all = true};
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    assert_int_equal(p.calls, 0);
    llmc_tier_set_detach(x->set, 0);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.removed, 0);
}

/* ---- no purged answer comes back ---- */

/* An answer asked for before a purge that selects it is not stored after
   it (a flight in the air); one the purge does not select is. */
static void test_store_after_purge_is_refused(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a");
    add(x, &a->tier);
    uint64_t since = llmc_tier_set_purge_seq(x->set);
    purge_result_t p = {0};
    llmc_purge_t sel = {.conds = LLMC_PURGE_NAMESPACE, .ns = "team"};
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    assert_int_equal(llmc_tier_set_purge_seq(x->set), since + 1);

    llmc_entry_t *team = mk_ns(1, 100, NOW + HOUR, "team"), *other = mk_ns(2, 100, NOW + HOUR, "o");
    assert_int_equal(llmc_tier_set_store(x->set, 0, team, NOW, since), LLMC_ECANCELED);
    assert_false(mem_holds(x->mem, 1));
    assert_null(a->held);
    assert_int_equal(llmc_tier_set_store(x->set, 0, other, NOW, since), 0);
    assert_true(mem_holds(x->mem, 2));
    /* Asked for after the purge: stored. */
    assert_int_equal(llmc_tier_set_store(x->set, 0, team, NOW, since + 1), 0);
    assert_true(mem_holds(x->mem, 1));
    llmc_entry_unref(team);
    llmc_entry_unref(other);
}

/* Past the log's reach, a store cannot be checked and is refused. */
static void test_store_older_than_the_log_is_refused(void **state)
{
    fixture_t *x = *state;
    uint64_t since = llmc_tier_set_purge_seq(x->set);
    purge_result_t p = {0};
    llmc_purge_t sel = {.conds = LLMC_PURGE_MODEL, .model = "nothing-has-this"};
    for (int i = 0; i < 64; i++)
        llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    llmc_entry_t *e = mk(1);
    assert_false(llmc_tier_set_purged_since(x->set, since, e));
    assert_int_equal(llmc_tier_set_store(x->set, 0, e, NOW, since), 0);
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    assert_true(llmc_tier_set_purged_since(x->set, since, e));
    assert_false(llmc_tier_set_purged_since(x->set, since + 1, e));
    assert_int_equal(llmc_tier_set_store(x->set, 0, e, NOW, since), LLMC_ECANCELED);
    assert_int_equal(p.calls, 65);
    llmc_entry_unref(e);
}

/* The slower tier had already read the answer when the purge came (its
   reply was on the way): the walk must not promote it into memory, nor
   answer with it. */
static void purge_keeps_read_in_flight(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                                       llmc_tier_purge_cb done, void *arg)
{
    fk(t)->purges++;
    done(arg, 1);
}

static void test_promotion_after_purge_is_dropped(void **state)
{
    fixture_t *x = *state;
    fake_t *d = delayed_fake("d", 1);
    d->ops.purge = purge_keeps_read_in_flight;
    add(x, &d->tier);
    attach(x);
    llmc_entry_t *e = mk_ns(1, 100, NOW + HOUR, "team");
    d->held = llmc_entry_ref(e);

    req_t r;
    assert_int_equal(lookup(x, &r, 1), LLMC_EAGAIN);
    purge_result_t p = {0};
    llmc_purge_t sel = {.conds = LLMC_PURGE_TAG, .tag = "none"};
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);   /* selects nothing here */
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(r.rc, 0);                              /* promoted and answered */
    assert_true(mem_holds(x->mem, 1));
    llmc_entry_unref(r.sl.tl.entry);

    llmc_cache_delete(llmc_tier_memory_cache(x->mem), &e->key);
    assert_int_equal(lookup(x, &r, 1), LLMC_EAGAIN);
    sel = (llmc_purge_t){.conds = LLMC_PURGE_NAMESPACE, .ns = "team"};
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(r.rc, LLMC_ENOENT);
    assert_null(r.sl.tl.entry);
    assert_false(mem_holds(x->mem, 1));
    llmc_entry_unref(e);
}

/* ---- per worker, upkeep, stats ---- */

/* A failing attach undoes the ones before it, in reverse; a tier without
   attach is not detached by the undo. */
static void test_attach_failure_undoes(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *b = sync_fake("b"), *n = sync_fake("n"), *c = sync_fake("c");
    fake_t *z = sync_fake("z");
    n->ops.attach = NULL;
    c->attach_rc = LLMC_ECONNECT;
    add(x, &a->tier);
    add(x, &b->tier);
    add(x, &n->tier);
    add(x, &c->tier);
    add(x, &z->tier);

    assert_int_equal(llmc_tier_set_attach(x->set, 0, &x->loop), LLMC_ECONNECT);
    assert_string_equal(calls, "a:attach b:attach c:attach b:detach a:detach ");
    assert_int_equal(z->attaches, 0);
    assert_int_equal(c->detaches, 0);
}

static void test_tick_reaches_every_tier(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *d = delayed_fake("d", 1);
    add(x, &a->tier);
    add(x, &d->tier);
    llmc_entry_t *e = mk_ns(1, 100, NOW + 10, "");
    assert_int_equal(llmc_cache_put(llmc_tier_memory_cache(x->mem), e, NOW), 0);
    llmc_entry_unref(e);

    llmc_tier_set_tick(x->set, NOW + 2 * HOUR);
    assert_string_equal(calls, "a:tick d:tick ");
    llmc_tier_stats_t st;
    llmc_tier_set_stats(x->set, 0, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.evicted_ttl, 1);
}

static void test_stats_names_count(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *d = delayed_fake("d", 1);
    add(x, &a->tier);
    add(x, &d->tier);
    llmc_entry_t *e = mk(1);
    assert_int_equal(llmc_tier_set_store(x->set, 0, e, NOW, 0), 0);
    llmc_entry_unref(e);

    assert_int_equal(llmc_tier_set_count(x->set), 3);
    assert_string_equal(llmc_tier_set_name(x->set, 0), "memory");
    assert_string_equal(llmc_tier_set_name(x->set, 1), "a");
    assert_string_equal(llmc_tier_set_name(x->set, 2), "d");
    llmc_tier_stats_t st;
    llmc_tier_set_stats(x->set, 0, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.stored, 1);
    assert_int_equal(st.max_bytes, 1 << 20);
    llmc_tier_set_stats(x->set, 2, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.hits, 7);
}

/* A tier's counters of its own: the set hands out its descriptors and
   values; a tier without has none; a tier that describes them badly is
   refused. */
#define FAKE_XSTATS(X)                                                       \
    X(conns, "conns", GAUGE, "connections", "Connections up.")              \
    X(faults, "faults/timeout", COUNTER, "lookups", "Lookups that timed out.")

typedef struct fake_xstats {
    FAKE_XSTATS(LLMC_STAT_FIELD)
} fake_xstats_t;

#define LLMC_STAT_TYPE fake_xstats_t
static const llmc_stat_desc_t fake_xdesc[] = {FAKE_XSTATS(LLMC_STAT_DESC)};
#undef LLMC_STAT_TYPE

static void fake_xstats(llmc_tier_t *t, void *out)
{
    fake_xstats_t *x = out;
    x->conns = 2;
    x->faults = fk(t)->puts + 40;
}

static void test_xstats(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *bad = sync_fake("bad");
    a->ops.xstats = fake_xstats;
    a->ops.xstats_desc = fake_xdesc;
    a->ops.nxstats = 2;
    add(x, &a->tier);
    bad->ops.xstats = fake_xstats;
    bad->ops.nxstats = 2; /* no descriptors */
    assert_int_equal(llmc_tier_set_add(x->set, &bad->tier), LLMC_EINVAL);
    llmc_entry_t *e = mk(1);
    assert_int_equal(llmc_tier_set_store(x->set, 0, e, NOW, 0), 0);
    llmc_entry_unref(e);

    uint64_t v[LLMC_TIER_XSTATS_MAX];
    const llmc_stat_desc_t *d = fake_xdesc;
    /* The memory tier's own: compression at rest and its hot set. */
    assert_int_equal(llmc_tier_set_xstats(x->set, 0, &d, v), 7);
    assert_string_equal(d[0].name, "raw_bytes");
    assert_int_equal(llmc_tier_set_xstats(x->set, 1, &d, v), 2);
    assert_string_equal(d[0].name, "conns");
    assert_int_equal(llmc_stat_value(v, &d[0]), 2);
    assert_string_equal(d[1].name, "faults/timeout");
    assert_int_equal(llmc_stat_value(v, &d[1]), 41);
}

/* A tier's rows of its own (a remote store's nodes): the set hands out
   their name, descriptors and rows, at most as many as asked for; a tier
   without has none; one that names or describes them badly is refused. */
static unsigned fake_xrows(llmc_tier_t *t, llmc_tier_row_t *rows, unsigned max)
{
    unsigned n = max < 3 ? max : 3;
    for (unsigned i = 0; i < n; i++) {
        snprintf(rows[i].name, sizeof(rows[i].name), "node%u:%u", i, 6379 + i);
        fake_xstats_t v = {.conns = i, .faults = fk(t)->puts + 10 * i};
        memcpy(rows[i].v, &v, sizeof(v));
    }
    return n;
}

static void test_xrows(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *unnamed = sync_fake("unnamed"), *wide = sync_fake("wide");
    a->ops.xrows = fake_xrows;
    a->ops.xrows_name = "nodes";
    a->ops.xrows_desc = fake_xdesc;
    a->ops.nxrows = 2;
    add(x, &a->tier);
    unnamed->ops.xrows = fake_xrows;
    unnamed->ops.xrows_desc = fake_xdesc;
    unnamed->ops.nxrows = 2;
    assert_int_equal(llmc_tier_set_add(x->set, &unnamed->tier), LLMC_EINVAL);
    wide->ops.xrows = fake_xrows;
    wide->ops.xrows_name = "nodes";
    wide->ops.xrows_desc = fake_xdesc;
    wide->ops.nxrows = LLMC_TIER_ROW_STATS_MAX + 1;
    assert_int_equal(llmc_tier_set_add(x->set, &wide->tier), LLMC_EINVAL);
    llmc_entry_t *e = mk(1);
    assert_int_equal(llmc_tier_set_store(x->set, 0, e, NOW, 0), 0);
    llmc_entry_unref(e);

    llmc_tier_row_t rows[4];
    const char *name = "x";
    const llmc_stat_desc_t *d = fake_xdesc;
    unsigned nd = 9;
    assert_int_equal(llmc_tier_set_xrows(x->set, 0, &name, &d, &nd, rows, 4), 0);
    assert_null(name);
    assert_null(d);
    assert_int_equal(nd, 0);
    assert_int_equal(llmc_tier_set_xrows(x->set, 1, &name, &d, &nd, rows, 4), 3);
    assert_string_equal(name, "nodes");
    assert_int_equal(nd, 2);
    assert_string_equal(rows[2].name, "node2:6381");
    assert_int_equal(llmc_stat_value(rows[2].v, &d[0]), 2);
    assert_int_equal(llmc_stat_value(rows[2].v, &d[1]), 21);
    assert_int_equal(llmc_tier_set_xrows(x->set, 1, &name, &d, &nd, rows, 2), 2);
}

/* Leases go to the first tier that has them; a set without one answers
   NONE (call the model); a tier with half the pair is refused. */
static int fake_lease(llmc_tier_t *t, llmc_tier_lease_t *ls)
{
    logf_call(fk(t)->name, "lease");
    ls->tier_data = t;
    return LLMC_LEASE_WON;
}

static void fake_lease_end(llmc_tier_t *t, llmc_tier_lease_t *ls)
{
    logf_call(fk(t)->name, "lease_end");
    assert_ptr_equal(ls->tier_data, t);
    ls->tier_data = NULL;
}

static void test_lease_routing(void **state)
{
    fixture_t *x = *state;
    llmc_tier_lease_t ls;
    memset(&ls, 0, sizeof ls);
    assert_false(llmc_tier_set_leases(x->set));
    assert_null(llmc_tier_set_leaser_name(x->set));
    assert_int_equal(llmc_tier_set_lease(x->set, &ls), LLMC_LEASE_NONE);
    llmc_tier_set_lease_end(x->set, &ls);

    fake_t *half = sync_fake("half"), *a = sync_fake("a"), *b = sync_fake("b");
    half->ops.lease = fake_lease;
    assert_int_equal(llmc_tier_set_add(x->set, &half->tier), LLMC_EINVAL);
    a->ops.lease = b->ops.lease = fake_lease;
    a->ops.lease_end = b->ops.lease_end = fake_lease_end;
    add(x, &a->tier);
    add(x, &b->tier);
    assert_true(llmc_tier_set_leases(x->set));
    assert_string_equal(llmc_tier_set_leaser_name(x->set), "a");
    calls[0] = '\0';
    assert_int_equal(llmc_tier_set_lease(x->set, &ls), LLMC_LEASE_WON);
    llmc_tier_set_lease_end(x->set, &ls);
    assert_string_equal(calls, "a:lease a:lease_end ");
}

static void test_wants_query(void **state)
{
    fixture_t *x = *state;
    fake_t *a = sync_fake("a"), *s = delayed_fake("semantic", 1);
    add(x, &a->tier);
    assert_false(llmc_tier_set_wants_query(x->set));
    s->ops.wants_query = true;
    add(x, &s->tier);
    assert_true(llmc_tier_set_wants_query(x->set));
}

/* add() refuses a tier past the limit, a NULL one and a malformed one,
   destroying what it was given; free() destroys slowest first. */
static void test_add_refusals_and_free_order(void **state)
{
    fixture_t *x = *state;
    static char name[LLMC_TIER_SET_MAX][16]; /* outlives the test: teardown frees the tiers */

    assert_int_equal(llmc_tier_set_add(x->set, NULL), LLMC_EINVAL);
    fake_t *front = delayed_fake("slowfront", 1); /* a front must have get() */
    assert_int_equal(llmc_tier_set_add(x->set, &front->tier), LLMC_EINVAL);
    fake_t *noput = sync_fake("noput");
    noput->ops.put = NULL;
    assert_int_equal(llmc_tier_set_add(x->set, &noput->tier), LLMC_EINVAL);
    assert_string_equal(calls, "slowfront:destroy noput:destroy ");

    calls[0] = '\0';
    for (int i = 0; i < LLMC_TIER_SET_MAX; i++) {
        snprintf(name[i], sizeof name[i], "t%d", i);
        add(x, &sync_fake(name[i])->tier);
    }
    fake_t *over = sync_fake("over");
    assert_int_equal(llmc_tier_set_add(x->set, &over->tier), LLMC_E2BIG);
    assert_int_equal(llmc_tier_set_count(x->set), LLMC_TIER_SET_MAX);
    assert_string_equal(calls, "over:destroy ");
}

/* A set with no tier answers everything without calling back later. */
static void test_empty_set(void **state)
{
    fixture_t *x = *state;
    llmc_entry_t *e = mk(1);
    llmc_key_t k = key_of(1);
    req_t r;
    purge_result_t p = {0};
    llmc_purge_t sel = {.all = true};

    assert_int_equal(llmc_tier_set_count(x->set), 0);
    assert_int_equal(lookup(x, &r, 1), LLMC_ENOENT);
    assert_int_equal(r.calls, 0);
    assert_int_equal(llmc_tier_set_store(x->set, 0, e, NOW, 0), 0);
    assert_null(llmc_tier_set_front_get(x->set, &k, NOW));
    assert_int_equal(llmc_tier_set_front_put(x->set, 0, e, NOW), LLMC_EINVAL);
    llmc_tier_set_purge(x->set, 0, &sel, purge_done, &p);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.removed, 0);
    assert_int_equal(llmc_tier_set_attach(x->set, 0, &x->loop), 0);
    llmc_tier_set_tick(x->set, NOW);
    llmc_entry_unref(e);
}

static void test_free_slowest_first(void **state)
{
    fixture_t *x = *state;
    add(x, &sync_fake("a")->tier);
    add(x, &sync_fake("b")->tier);
    llmc_tier_set_free(x->set);
    assert_string_equal(calls, "b:destroy a:destroy ");
    x->set = llmc_tier_set_new();
    llmc_tier_set_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_front_hit_stops_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exact_hit_has_no_similarity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_miss_through_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_hit_promoted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_front_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_hit_promoted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_miss_continues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_error_is_miss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detach_cancels_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_front_refusal_purges_key, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_max_body_and_refuse, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_put_names_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_front_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_fan_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_sync_completes_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_after_purge_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_older_than_the_log_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_promotion_after_purge_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_completed_by_detach, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attach_failure_undoes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tick_reaches_every_tier, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_names_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xstats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_xrows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_routing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wants_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hit_under_another_key_leaves_an_alias, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alias_goes_with_a_selector_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_refusals_and_free_order, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_empty_set, setup_empty, teardown),
        cmocka_unit_test_setup_teardown(test_free_slowest_first, setup_empty, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
