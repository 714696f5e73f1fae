/*
 * tier/set.c: the tier set (tier/set.h): the ordered tier array, the
 * lookup walk, promotion, store, purge fan-out and per-worker set-up.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The set takes no lock: its array is written only while the main thread
 *   builds it, then only read. A walk lives in the caller's
 *   llmc_set_lookup_t and a purge fan-out in its own allocation, each on
 *   one worker's loop thread, so neither needs atomics either.
 * - A walk is one loop, not recursion. A tier's done() resumes that loop
 *   at the next tier; tiers that answer at once are asked in the same
 *   call, and one that goes pending again just returns, so a chain of
 *   waiting tiers never deepens the stack.
 * - The set never takes or drops an entry reference: the one a tier hands
 *   out in tl.entry becomes the caller's, and a promotion put() takes its
 *   own.
 * - LLMC_ECANCELED ends a walk as a miss instead of asking the next tier:
 *   a tier cancels only at detach, when the slower tiers are being torn
 *   down on that loop as well.
 * - A purge fan-out is allocated per purge, with a slot per tier so that
 *   each tier's completion is checked to run once. Its count starts at
 *   tiers + 1, the fan-out holding one until sel has gone to every tier:
 *   one release path ends it whether the last answer comes inside
 *   purge(), later, or never (a set with no tiers).
 */
#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "tier/set.h"

struct llmc_tier_set {
    llmc_tier_t *tiers[LLMC_TIER_SET_MAX]; /* fastest first */
    unsigned n;
    bool wants_query; /* some tier's ops->wants_query */
    llmc_tier_t *leaser; /* the first tier with ops->lease, or NULL */
};

/* ---- building and tearing down ---- */

llmc_tier_set_t *llmc_tier_set_new(void)
{
    return calloc(1, sizeof(llmc_tier_set_t));
}

/* True when t has every op the set calls without checking. The front must
   answer at once, for front_get and for derived forms. */
static bool tier_usable(const llmc_tier_t *t, bool front)
{
    const llmc_tier_ops_t *o = t->ops;

    if (!o || !o->name || !o->put || !o->purge || !o->stats || !o->destroy)
        return false;
    if (o->xstats && (!o->xstats_desc || o->nxstats == 0 || o->nxstats > LLMC_TIER_XSTATS_MAX))
        return false;
    if (!o->lease != !o->lease_end)
        return false;
    return front ? o->get != NULL : (o->get || o->lookup);
}

int llmc_tier_set_add(llmc_tier_set_t *s, llmc_tier_t *t)
{
    int rc = 0;

    if (!t)
        return LLMC_EINVAL;
    if (s->n == LLMC_TIER_SET_MAX)
        rc = LLMC_E2BIG;
    else if (!tier_usable(t, s->n == 0))
        rc = LLMC_EINVAL;
    if (rc < 0) {
        /* Refused, t is still ours: the caller has let go of it. */
        if (t->ops && t->ops->destroy)
            t->ops->destroy(t);
        return rc;
    }
    s->tiers[s->n++] = t;
    s->wants_query = s->wants_query || t->ops->wants_query;
    if (!s->leaser && t->ops->lease)
        s->leaser = t;
    return 0;
}

void llmc_tier_set_free(llmc_tier_set_t *s)
{
    if (!s)
        return;
    /* Slowest first, the reverse of adding: a slower tier may lean on a
       faster one (the semantic tier searches the memory tier's cache). */
    while (s->n > 0) {
        llmc_tier_t *t = s->tiers[--s->n];
        t->ops->destroy(t);
    }
    free(s);
}

unsigned llmc_tier_set_count(const llmc_tier_set_t *s)
{
    return s->n;
}

const char *llmc_tier_set_name(const llmc_tier_set_t *s, unsigned i)
{
    assert(i < s->n);
    return s->tiers[i]->ops->name;
}

bool llmc_tier_set_wants_query(const llmc_tier_set_t *s)
{
    return s->wants_query;
}

void llmc_tier_set_stats(const llmc_tier_set_t *s, unsigned i, llmc_tier_stats_t *out)
{
    assert(i < s->n);
    s->tiers[i]->ops->stats(s->tiers[i], out);
}

unsigned llmc_tier_set_xstats(const llmc_tier_set_t *s, unsigned i, const llmc_stat_desc_t **desc,
                              uint64_t *out)
{
    const llmc_tier_ops_t *o;

    assert(i < s->n);
    o = s->tiers[i]->ops;
    *desc = NULL;
    if (!o->xstats)
        return 0;
    memset(out, 0, o->nxstats * sizeof(*out));
    o->xstats(s->tiers[i], out);
    *desc = o->xstats_desc;
    return o->nxstats;
}

/* ---- per worker ---- */

/* Detaches, slowest first, the tiers below end that attach() set up. */
static void detach_below(llmc_tier_set_t *s, unsigned worker, unsigned end)
{
    while (end > 0) {
        llmc_tier_t *t = s->tiers[--end];
        if (t->ops->attach && t->ops->detach)
            t->ops->detach(t, worker);
    }
}

int llmc_tier_set_attach(llmc_tier_set_t *s, unsigned worker, struct uv_loop_s *loop)
{
    for (unsigned i = 0; i < s->n; i++) {
        llmc_tier_t *t = s->tiers[i];
        int rc = t->ops->attach ? t->ops->attach(t, worker, loop) : 0;
        if (rc < 0) {
            detach_below(s, worker, i);
            return rc;
        }
    }
    return 0;
}

void llmc_tier_set_detach(llmc_tier_set_t *s, unsigned worker)
{
    /* Every tier that has detach, attach or not: a tier needs no per-loop
       set-up to have lookups and purges pending on this loop. */
    for (unsigned i = s->n; i-- > 0;) {
        llmc_tier_t *t = s->tiers[i];
        if (t->ops->detach)
            t->ops->detach(t, worker);
    }
}

/* ---- the lookup walk ---- */

static void tier_answered(llmc_tier_lookup_t *lk, int rc);

/* Asks one tier, through lookup() when it has one. */
static int ask(llmc_tier_t *t, llmc_tier_lookup_t *lk)
{
    lk->entry = NULL;
    if (t->ops->lookup)
        return t->ops->lookup(t, lk);
    return t->ops->get(t, &lk->query->key, lk->now_ms, &lk->entry);
}

/* The tier at sl->next found tl.entry: copies it into every faster tier,
   which all missed, so the next lookup stops sooner. A faster tier that
   refuses it only loses the shortcut. */
static int hit(llmc_set_lookup_t *sl)
{
    llmc_tier_set_t *s = sl->set;

    assert(sl->tl.entry);
    for (unsigned i = 0; i < sl->next; i++)
        (void)s->tiers[i]->ops->put(s->tiers[i], sl->tl.worker, sl->tl.entry, sl->tl.now_ms);
    sl->tier_name = s->tiers[sl->next]->ops->name;
    return 0;
}

/* Asks the tiers from sl->next on. 0 (hit), LLMC_ENOENT, or LLMC_EAGAIN
   when a tier holds the lookup. */
static int walk(llmc_set_lookup_t *sl)
{
    llmc_tier_set_t *s = sl->set;

    for (; sl->next < s->n; sl->next++) {
        int rc = ask(s->tiers[sl->next], &sl->tl);
        if (rc == 0)
            return hit(sl);
        if (rc == LLMC_EAGAIN) {
            sl->pending = true;
            return LLMC_EAGAIN;
        }
        assert(!sl->tl.entry); /* a miss hands out no reference */
        if (rc == LLMC_ECANCELED)
            break;
    }
    return LLMC_ENOENT;
}

int llmc_tier_set_lookup(llmc_tier_set_t *s, llmc_set_lookup_t *sl)
{
    assert(!sl->pending);
    assert(sl->done);
    sl->set = s;
    sl->next = 0;
    sl->tier_name = NULL;
    sl->tl.entry = NULL;
    sl->tl.done = tier_answered;
    return walk(sl);
}

/* A pending tier answered (on the lookup's loop): on a miss the walk goes
   on; the caller hears once the walk has its final answer. */
static void tier_answered(llmc_tier_lookup_t *lk, int rc)
{
    llmc_set_lookup_t *sl =
        (llmc_set_lookup_t *)((char *)lk - offsetof(llmc_set_lookup_t, tl));

    /* Also catches a tier that called done() before returning EAGAIN. */
    assert(sl->pending);
    assert(rc == 0 || !lk->entry);
    sl->pending = false;
    if (rc == 0) {
        rc = hit(sl);
    } else if (rc == LLMC_ECANCELED) {
        rc = LLMC_ENOENT;
    } else {
        sl->next++;
        rc = walk(sl);
        if (rc == LLMC_EAGAIN)
            return;
    }
    sl->done(sl, rc);
}

/* ---- store and the front tier ---- */

static void purged_nothing(void *arg, size_t removed)
{
    (void)arg;
    (void)removed;
}

int llmc_tier_set_store(llmc_tier_set_t *s, unsigned worker, llmc_entry_t *e, int64_t now_ms)
{
    if (s->n == 0)
        return 0;
    if (s->tiers[0]->ops->put(s->tiers[0], worker, e, now_ms) < 0) {
        /* The front included: its refusal need not have dropped its own
           older answer (the memory tier's does, and then this finds
           nothing). Nobody waits for these purges. */
        llmc_purge_t sel = {.kind = LLMC_PURGE_KEY, .key = e->key};
        for (unsigned i = 0; i < s->n; i++)
            s->tiers[i]->ops->purge(s->tiers[i], worker, &sel, purged_nothing, NULL);
        return LLMC_E2BIG;
    }
    /* A slower tier that drops the write counts it in its own stats; the
       answer is kept all the same. */
    for (unsigned i = 1; i < s->n; i++)
        (void)s->tiers[i]->ops->put(s->tiers[i], worker, e, now_ms);
    return 0;
}

llmc_entry_t *llmc_tier_set_front_get(llmc_tier_set_t *s, const llmc_key_t *key, int64_t now_ms)
{
    llmc_entry_t *e = NULL;

    if (s->n == 0 || s->tiers[0]->ops->get(s->tiers[0], key, now_ms, &e) != 0)
        return NULL;
    return e;
}

int llmc_tier_set_front_put(llmc_tier_set_t *s, unsigned worker, llmc_entry_t *e, int64_t now_ms)
{
    if (s->n == 0)
        return LLMC_EINVAL;
    return s->tiers[0]->ops->put(s->tiers[0], worker, e, now_ms);
}

/* ---- purge fan-out ---- */

typedef struct purge_fan purge_fan_t;

/* One per tier, so that each tier's completion is known to run once. */
typedef struct purge_slot {
    purge_fan_t *fan;
    bool answered;
} purge_slot_t;

struct purge_fan {
    llmc_tier_purge_cb done;
    void *arg;
    size_t removed;
    unsigned outstanding; /* tiers yet to answer, + 1 until sel is sent */
    purge_slot_t slot[LLMC_TIER_SET_MAX];
};

static void fan_release(purge_fan_t *f)
{
    assert(f->outstanding > 0);
    if (--f->outstanding > 0)
        return;
    f->done(f->arg, f->removed);
    free(f);
}

static void slot_answered(void *arg, size_t removed)
{
    purge_slot_t *slot = arg;

    assert(!slot->answered);
    slot->answered = true;
    slot->fan->removed += removed;
    fan_release(slot->fan);
}

void llmc_tier_set_purge(llmc_tier_set_t *s, unsigned worker, const llmc_purge_t *sel,
                         llmc_tier_purge_cb done, void *arg)
{
    purge_fan_t *f = calloc(1, sizeof(*f));

    if (!f) {
        /* The invalidation matters more than its count: send it anyway. */
        for (unsigned i = 0; i < s->n; i++)
            s->tiers[i]->ops->purge(s->tiers[i], worker, sel, purged_nothing, NULL);
        done(arg, 0);
        return;
    }
    f->done = done;
    f->arg = arg;
    f->outstanding = s->n + 1;
    for (unsigned i = 0; i < s->n; i++) {
        f->slot[i].fan = f;
        s->tiers[i]->ops->purge(s->tiers[i], worker, sel, slot_answered, &f->slot[i]);
    }
    fan_release(f);
}

/* ---- leases ---- */

bool llmc_tier_set_leases(const llmc_tier_set_t *s)
{
    return s->leaser != NULL;
}

const char *llmc_tier_set_leaser_name(const llmc_tier_set_t *s)
{
    return s->leaser ? s->leaser->ops->name : NULL;
}

int llmc_tier_set_lease(llmc_tier_set_t *s, llmc_tier_lease_t *ls)
{
    ls->entry = NULL;
    if (!s->leaser)
        return LLMC_LEASE_NONE;
    return s->leaser->ops->lease(s->leaser, ls);
}

void llmc_tier_set_lease_end(llmc_tier_set_t *s, llmc_tier_lease_t *ls)
{
    if (s->leaser)
        s->leaser->ops->lease_end(s->leaser, ls);
}

/* ---- upkeep ---- */

void llmc_tier_set_tick(llmc_tier_set_t *s, int64_t now_ms)
{
    for (unsigned i = 0; i < s->n; i++)
        if (s->tiers[i]->ops->tick)
            s->tiers[i]->ops->tick(s->tiers[i], now_ms);
}
