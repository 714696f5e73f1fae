/*
 * tier/set.c: the tier set (tier/set.h): the ordered tier array, the
 * lookup walk, promotion, store, purge fan-out and per-worker set-up.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The tier array takes no lock: it is written only while the main thread
 *   builds it, then only read. A walk lives in the caller's
 *   llmc_set_lookup_t and a purge fan-out in its own allocation, each on
 *   one worker's loop thread, so neither needs atomics either. The purge
 *   log is the one shared, written thing: a mutex guards it, and its
 *   number is an atomic read without the lock when nothing changed (every
 *   store and promotion reads it).
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
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "tier/set.h"

/* Purges kept for the checks of stores and promotions: a flight whose call
   took longer than this many purges is not stored. */
#define PURGE_LOG 64
/* The most tags an answer may carry and still get an alias (see rekey). */
#define LLMC_ALIAS_MAX_TAGS 64

struct llmc_tier_set {
    llmc_tier_t *tiers[LLMC_TIER_SET_MAX]; /* fastest first */
    unsigned n;
    bool wants_query; /* some tier's ops->wants_query */
    pthread_mutex_t log_mu;
    _Atomic uint64_t purge_seq;            /* purges sent; written under log_mu */
    llmc_purge_t *log[PURGE_LOG];          /* purge number k at [k % PURGE_LOG]; NULL: no
                                              memory for its copy (it selects everything) */
    llmc_tier_t *leaser; /* the first tier with ops->lease, or NULL */
    /* Aliases in the front tier (see alias()): a ring, oldest overwritten
       (and its alias taken off the front first). Under alias_mu. */
    pthread_mutex_t alias_mu;
    struct alias_pair {
        llmc_key_t orig, alias;
        bool used;
    } aliases[LLMC_TIER_SET_ALIASES];
    size_t alias_next;
};

/* ---- building and tearing down ---- */

llmc_tier_set_t *llmc_tier_set_new(void)
{
    llmc_tier_set_t *s = calloc(1, sizeof(llmc_tier_set_t));
    if (!s)
        return NULL;
    if (pthread_mutex_init(&s->log_mu, NULL) != 0) {
        free(s);
        return NULL;
    }
    if (pthread_mutex_init(&s->alias_mu, NULL) != 0) {
        pthread_mutex_destroy(&s->log_mu);
        free(s);
        return NULL;
    }
    return s;
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
    if (o->xrows && (!o->xrows_name || !o->xrows_desc || o->nxrows == 0 ||
                     o->nxrows > LLMC_TIER_ROW_STATS_MAX))
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
    for (unsigned i = 0; i < PURGE_LOG; i++)
        free(s->log[i]);
    pthread_mutex_destroy(&s->log_mu);
    pthread_mutex_destroy(&s->alias_mu);
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

unsigned llmc_tier_set_xrows(const llmc_tier_set_t *s, unsigned i, const char **name,
                             const llmc_stat_desc_t **desc, unsigned *ndesc, llmc_tier_row_t *rows,
                             unsigned max)
{
    const llmc_tier_ops_t *o;
    unsigned n;

    assert(i < s->n);
    o = s->tiers[i]->ops;
    *name = NULL;
    *desc = NULL;
    *ndesc = 0;
    if (!o->xrows)
        return 0;
    memset(rows, 0, max * sizeof(*rows));
    n = o->xrows(s->tiers[i], rows, max);
    assert(n <= max);
    *name = o->xrows_name;
    *desc = o->xrows_desc;
    *ndesc = o->nxrows;
    return n;
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
    lk->similarity = 0;
    lk->verify = lk->tier_only = false;
    if (t->ops->lookup)
        return t->ops->lookup(t, lk);
    return t->ops->get(t, &lk->query->key, lk->now_ms, &lk->entry);
}

static void purged_nothing(void *arg, size_t removed);

/* Removes key from tiers [0, end): a copy that must not stay. Nobody waits. */
static void unput(llmc_tier_set_t *s, unsigned worker, const llmc_key_t *key, unsigned end)
{
    llmc_purge_t sel = {.conds = LLMC_PURGE_KEY, .key = *key};
    for (unsigned i = 0; i < end; i++)
        s->tiers[i]->ops->purge(s->tiers[i], worker, &sel, purged_nothing, NULL);
}

/* e under another key: the same body, times and metadata (so that a purge
   by any selector takes the copy as the original). NULL: out of memory. */
static llmc_entry_t *rekey(const llmc_entry_t *e, const llmc_key_t *key)
{
    const char *tags[LLMC_ALIAS_MAX_TAGS];
    const char *t = llmc_entry_tag(e, 0);
    llmc_usage_t usage;

    if (e->ntags > LLMC_ALIAS_MAX_TAGS)
        return NULL; /* a copy that lost tags would escape their purge */
    for (uint32_t i = 0; i < e->ntags; i++, t += strlen(t) + 1)
        tags[i] = t;
    llmc_entry_spec_t spec = {
        .key = key, .status = e->status, .flags = e->flags & ~LLMC_ENTRY_USAGE,
        .created_ms = e->created_ms, .expires_ms = e->expires_ms,
        .content_type = llmc_entry_content_type(e),
        .ns = llmc_entry_ns(e), .model = llmc_entry_model(e), .route = llmc_entry_route(e),
        .tags = tags, .ntags = e->ntags,
        .vector = llmc_entry_vector(e), .dim = e->dim,
        .body = e->body, .body_len = e->body_len,
        .usage = llmc_entry_usage(e, &usage) ? &usage : NULL,
    };
    return llmc_entry_new(&spec);
}

/* Remembers that alias stands for orig in the front tier. The pair it
   overwrites takes its alias off the front: an alias nobody remembers
   could not go with a key purge of its original. */
static void alias_remember(llmc_tier_set_t *s, unsigned worker, const llmc_key_t *orig,
                           const llmc_key_t *alias)
{
    struct alias_pair old;

    pthread_mutex_lock(&s->alias_mu);
    old = s->aliases[s->alias_next];
    s->aliases[s->alias_next] = (struct alias_pair){.orig = *orig, .alias = *alias, .used = true};
    s->alias_next = (s->alias_next + 1) % LLMC_TIER_SET_ALIASES;
    pthread_mutex_unlock(&s->alias_mu);
    if (old.used)
        unput(s, worker, &old.alias, 1);
}

/* A hit under another key than the request's (a similar question's, from
   the semantic tier): a copy under the request's own key goes into the
   front tier, so that the same request again is an exact hit. It expires
   with its original and is purged with it: by selectors, since it carries
   the same metadata; by the original's key, through the alias ring (see
   llmc_tier_set_purge). It lives in the front tier only, which is in this
   process as the ring is: a copy in a shared or lasting tier would outlive
   the ring and escape the original's key purge. */
static void alias(llmc_set_lookup_t *sl)
{
    llmc_tier_set_t *s = sl->set;
    const llmc_entry_t *e = sl->tl.entry;
    const llmc_key_t *key = &sl->tl.query->key;

    if (sl->next == 0 || memcmp(e->key.b, key->b, LLMC_KEY_LEN) == 0 || sl->tl.tier_only)
        return;
    llmc_entry_t *a = rekey(e, key);
    if (!a)
        return;
    if (!llmc_tier_set_purged_since(s, sl->purge_seq, e) &&
        !llmc_tier_set_purged_since(s, sl->purge_seq, a)) {
        alias_remember(s, sl->tl.worker, &e->key, key);
        (void)s->tiers[0]->ops->put(s->tiers[0], sl->tl.worker, a, sl->tl.now_ms);
        /* A purge of either that landed while we wrote. */
        if (llmc_tier_set_purged_since(s, sl->purge_seq, e) ||
            llmc_tier_set_purged_since(s, sl->purge_seq, a))
            unput(s, sl->tl.worker, key, 1);
    }
    llmc_entry_unref(a);
}

/* The tier at sl->next found tl.entry: copies it into every faster tier,
   which all missed, so the next lookup stops sooner. A faster tier that
   refuses it only loses the shortcut. An entry a purge selected since the
   walk began is a miss, and its copies are taken back (see set.h). */
static int hit(llmc_set_lookup_t *sl)
{
    llmc_tier_set_t *s = sl->set;
    llmc_entry_t *e = sl->tl.entry;

    assert(e);
    if (sl->next > 0) {
        bool purged = llmc_tier_set_purged_since(s, sl->purge_seq, e);
        for (unsigned i = 0; !purged && i < sl->next; i++)
            (void)s->tiers[i]->ops->put(s->tiers[i], sl->tl.worker, e, sl->tl.now_ms);
        if (!purged && llmc_tier_set_purged_since(s, sl->purge_seq, e)) {
            unput(s, sl->tl.worker, &e->key, sl->next);
            purged = true;
        }
        if (purged) {
            llmc_entry_unref(e);
            sl->tl.entry = NULL;
            return LLMC_ENOENT;
        }
    }
    sl->tier_name = s->tiers[sl->next]->ops->name;
    alias(sl);
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
            return hit(sl); /* a purged promotion ends the walk: slower tiers had it too */
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
    sl->purge_seq = llmc_tier_set_purge_seq(s);
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

/* ---- the purge log ---- */

uint64_t llmc_tier_set_purge_seq(llmc_tier_set_t *s)
{
    return atomic_load(&s->purge_seq);
}

bool llmc_tier_set_purged_since(llmc_tier_set_t *s, uint64_t since, const llmc_entry_t *e)
{
    if (atomic_load(&s->purge_seq) == since)
        return false;
    bool hit = false;
    pthread_mutex_lock(&s->log_mu);
    uint64_t now = atomic_load(&s->purge_seq);
    if (now - since > PURGE_LOG)
        hit = true; /* older than the log: cannot tell, so yes */
    for (uint64_t k = since + 1; !hit && k <= now; k++)
        hit = !s->log[k % PURGE_LOG] || llmc_purge_match(s->log[k % PURGE_LOG], e);
    pthread_mutex_unlock(&s->log_mu);
    return hit;
}

/* Numbers and logs sel, before any tier sees it. */
static void log_purge(llmc_tier_set_t *s, const llmc_purge_t *sel)
{
    llmc_purge_t *copy = llmc_purge_dup(sel);
    pthread_mutex_lock(&s->log_mu);
    uint64_t k = atomic_load(&s->purge_seq) + 1;
    free(s->log[k % PURGE_LOG]);
    s->log[k % PURGE_LOG] = copy;
    atomic_store(&s->purge_seq, k);
    pthread_mutex_unlock(&s->log_mu);
}

/* ---- store and the front tier ---- */

static void purged_nothing(void *arg, size_t removed)
{
    (void)arg;
    (void)removed;
}

size_t llmc_tier_set_max_body(const llmc_tier_set_t *s)
{
    if (s->n == 0 || !s->tiers[0]->ops->max_body)
        return SIZE_MAX;
    return s->tiers[0]->ops->max_body(s->tiers[0]);
}

/* The front included: its refusal need not have dropped its own older
   answer (the memory tier's does, and then this finds nothing). */
void llmc_tier_set_refuse(llmc_tier_set_t *s, unsigned worker, const llmc_key_t *key)
{
    unput(s, worker, key, s->n);
}

int llmc_tier_set_store(llmc_tier_set_t *s, unsigned worker, llmc_entry_t *e, int64_t now_ms,
                        uint64_t since)
{
    if (s->n == 0)
        return 0;
    if (llmc_tier_set_purged_since(s, since, e))
        return LLMC_ECANCELED;
    if (s->tiers[0]->ops->put(s->tiers[0], worker, e, now_ms) < 0) {
        llmc_tier_set_refuse(s, worker, &e->key);
        return LLMC_E2BIG;
    }
    /* A slower tier that drops the write counts it in its own stats; the
       answer is kept all the same. */
    for (unsigned i = 1; i < s->n; i++)
        (void)s->tiers[i]->ops->put(s->tiers[i], worker, e, now_ms);
    /* A purge that came while we wrote may have missed what we wrote. */
    if (llmc_tier_set_purged_since(s, since, e)) {
        unput(s, worker, &e->key, s->n);
        return LLMC_ECANCELED;
    }
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

int llmc_tier_set_peek(llmc_tier_set_t *s, unsigned i, const llmc_key_t *key, int64_t now_ms,
                       llmc_entry_t **out)
{
    assert(i < s->n);
    *out = NULL;
    if (!s->tiers[i]->ops->get)
        return LLMC_ENOTSUP;
    return s->tiers[i]->ops->get(s->tiers[i], key, now_ms, out);
}

int llmc_tier_set_ask(llmc_tier_set_t *s, unsigned i, llmc_tier_lookup_t *lk)
{
    assert(i < s->n);
    assert(lk->query && lk->done);
    return ask(s->tiers[i], lk);
}

bool llmc_tier_set_by_similarity(const llmc_tier_set_t *s, unsigned i)
{
    assert(i < s->n);
    return s->tiers[i]->ops->wants_query;
}

/* ---- purge fan-out ---- */

typedef struct purge_fan purge_fan_t;

/* One per tier, so that each tier's completion is known to run once. */
typedef struct purge_slot {
    purge_fan_t *fan;
    unsigned i;          /* the tier's index */
    bool answered;
} purge_slot_t;

struct purge_fan {
    llmc_set_purge_cb done;
    void *arg;
    unsigned n;
    size_t removed[LLMC_TIER_SET_MAX];
    unsigned outstanding; /* tiers yet to answer, + 1 until sel is sent */
    purge_slot_t slot[LLMC_TIER_SET_MAX];
};

static void fan_release(purge_fan_t *f)
{
    assert(f->outstanding > 0);
    if (--f->outstanding > 0)
        return;
    f->done(f->arg, f->removed, f->n);
    free(f);
}

static void slot_answered(void *arg, size_t removed)
{
    purge_slot_t *slot = arg;

    assert(!slot->answered);
    slot->answered = true;
    slot->fan->removed[slot->i] = removed;
    fan_release(slot->fan);
}

/* A purge that names a key names its aliases too: the same selector with
   each alias's key goes to the front tier (the other conditions hold for
   the alias as for its original: it carries the same metadata). The pairs
   stay: an alias the selector did not take may still be purged later. */
static void purge_aliases(llmc_tier_set_t *s, unsigned worker, const llmc_purge_t *sel)
{
    if (!(sel->conds & LLMC_PURGE_KEY) || s->n == 0)
        return;
    /* Under the lock: the front tier's purge never calls back into the set. */
    pthread_mutex_lock(&s->alias_mu);
    for (size_t i = 0; i < LLMC_TIER_SET_ALIASES; i++)
        if (s->aliases[i].used && memcmp(s->aliases[i].orig.b, sel->key.b, LLMC_KEY_LEN) == 0) {
            llmc_purge_t one = *sel;
            one.key = s->aliases[i].alias;
            s->tiers[0]->ops->purge(s->tiers[0], worker, &one, purged_nothing, NULL);
        }
    pthread_mutex_unlock(&s->alias_mu);
}

void llmc_tier_set_purge(llmc_tier_set_t *s, unsigned worker, const llmc_purge_t *sel,
                         llmc_set_purge_cb done, void *arg)
{
    purge_fan_t *f = calloc(1, sizeof(*f));

    log_purge(s, sel);
    if (!f) {
        /* The invalidation matters more than its count: send it anyway. */
        static const size_t zeros[LLMC_TIER_SET_MAX];
        for (unsigned i = 0; i < s->n; i++)
            s->tiers[i]->ops->purge(s->tiers[i], worker, sel, purged_nothing, NULL);
        purge_aliases(s, worker, sel);
        done(arg, zeros, s->n);
        return;
    }
    purge_aliases(s, worker, sel);
    f->done = done;
    f->arg = arg;
    f->n = s->n;
    f->outstanding = s->n + 1;
    for (unsigned i = 0; i < s->n; i++) {
        f->slot[i].fan = f;
        f->slot[i].i = i;
        s->tiers[i]->ops->purge(s->tiers[i], worker, sel, slot_answered, &f->slot[i]);
    }
    fan_release(f);
}

/* A purge another process made (a peer's, told through a shared tier):
   every tier but from applies it, nobody waits. from already holds the
   purge's result and must not hear of it again (it would tell the peers
   back). logged: numbered like a purge sent here, so that a store or a
   promotion it races is refused; a peer's refresh is not (one per fill
   elsewhere would roll the short log over and refuse slow calls' stores). */
void llmc_tier_set_purge_peer(llmc_tier_set_t *s, unsigned worker, const llmc_purge_t *sel,
                              const llmc_tier_t *from, bool logged)
{
    if (logged)
        log_purge(s, sel);
    for (unsigned i = 0; i < s->n; i++)
        if (s->tiers[i] != from)
            s->tiers[i]->ops->purge(s->tiers[i], worker, sel, purged_nothing, NULL);
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
