/*
 * tier/set.h: the ordered list of cache tiers, the only thing the gateway
 * talks to about stored answers.
 *
 * The set owns the order (fastest first, as added), the walk of a lookup
 * through it, promotion of a hit in a slower tier into the faster ones,
 * store-to-every-tier, purge fan-out with one completion, upkeep and
 * stats. No code outside it knows which tier is which.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A lookup may be answered later: when a tier answers LLMC_EAGAIN the
 *   walk is parked in the caller's llmc_set_lookup_t and resumes by itself
 *   when that tier calls back (on the lookup's own loop thread); the
 *   caller hears once, through sl->done, with the walk's final answer.
 * - The first tier that has an entry answers, even a stale one: whether a
 *   stale entry may be served is the request's decision, not the set's.
 * - The front tier (the first) is the one whose bound decides what is
 *   kept: an answer it refuses as too big is stored nowhere, and the
 *   key's older answer is purged from every other tier, which would
 *   otherwise promote it back after a newer one was seen.
 * - Derived forms of an answer (the /ask body, an SSE replay) live in the
 *   front tier only: front_get/front_put. The front tier must answer at
 *   once (it has a get()).
 * - No purged answer comes back. A purge sent through the set is numbered
 *   and kept in a short log (llmc_tier_set_purge_seq). A store names the
 *   number it started after (a flight's, when its call began) and is
 *   refused when a later purge selects the answer; a lookup's promotion of
 *   a slower tier's hit is checked the same way. Each checks before
 *   writing and again after (the purge may land in between: it bumps the
 *   number before it reaches the tiers), and undoes its write when the
 *   second check fails. A store or promotion older than the log is
 *   refused: the cache only loses a copy.
 * - A hit found under another key than the request's (a similar question's,
 *   from the semantic tier) is copied under the request's key into the
 *   front tier, so the same request again is an exact hit: an alias with
 *   the original's expiry and metadata, which a key purge of the original
 *   takes too (the set remembers the last LLMC_TIER_SET_ALIASES).
 */
#ifndef LLMC_TIER_SET_H
#define LLMC_TIER_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmc/tier.h"

#define LLMC_TIER_SET_MAX 8
/* Aliases the set remembers (see alias() in set.c): request keys a hit
   under another key (the semantic tier's) was copied to in the front tier.
   Past it the oldest alias is taken off the front. */
#define LLMC_TIER_SET_ALIASES 4096
/* The most counters of its own a tier may describe (ops->nxstats). */
#define LLMC_TIER_XSTATS_MAX 64

typedef struct llmc_tier_set llmc_tier_set_t;

/* A lookup through the set, owned by the caller (in its request context)
   and valid until it has answered. The set owns tl.done (its own
   completion for the tiers), next and pending; the caller reads tl.entry
   and tier_name once the walk has answered. */
typedef struct llmc_set_lookup llmc_set_lookup_t;
struct llmc_set_lookup {
    llmc_tier_lookup_t tl;       /* the tier's view: query, now_ms, worker, entry */
    llmc_tier_set_t *set;
    unsigned next;               /* index of the tier asked now; after a hit, of the
                                    tier that answered (0: the front) */
    bool pending;                /* a tier holds the lookup; done() will run */
    uint64_t purge_seq;          /* purges sent when the walk began (promotion checks) */
    const char *tier_name;       /* out: the tier that answered a hit */
    /* The final answer of a walk that went pending: rc 0 (sl->tl.entry
       holds a reference) or LLMC_ENOENT. Runs on the lookup's loop thread. */
    void (*done)(llmc_set_lookup_t *sl, int rc);
};

/* An empty set. NULL when out of memory. */
llmc_tier_set_t *llmc_tier_set_new(void);

/* Appends t (slower than every tier before it); the set owns it from now
   on, also when this fails. 0, LLMC_E2BIG past LLMC_TIER_SET_MAX, or
   LLMC_EINVAL when t is NULL or lacks an op every tier must have (name,
   put, purge, stats, destroy, and get or lookup; the front needs get),
   or describes counters of its own badly (xstats without descriptors, or
   more than LLMC_TIER_XSTATS_MAX), or has one of lease/lease_end only.
   Main thread, before any worker runs. */
int llmc_tier_set_add(llmc_tier_set_t *s, llmc_tier_t *t);

/* Destroys every tier, slowest first, and the set. NULL is fine. */
void llmc_tier_set_free(llmc_tier_set_t *s);

/* Tiers in the set, and the name of tier i (for stats). */
unsigned llmc_tier_set_count(const llmc_tier_set_t *s);
const char *llmc_tier_set_name(const llmc_tier_set_t *s, unsigned i);

/* True when some tier searches by more than the key (ops->wants_query):
   then a lookup's query must be filled in whole. */
bool llmc_tier_set_wants_query(const llmc_tier_set_t *s);

/* Per-worker set-up and tear-down, forwarded to every tier that has it
   (see llmc_tier_ops_t.attach/detach for the threads). attach undoes what
   it did on failure and returns that tier's error. detach goes slowest
   first; a lookup a tier cancels there ends its walk as a miss (sl->done
   with LLMC_ENOENT) without asking a slower tier. */
int llmc_tier_set_attach(llmc_tier_set_t *s, unsigned worker, struct uv_loop_s *loop);
void llmc_tier_set_detach(llmc_tier_set_t *s, unsigned worker);

/*
 * Walks the tiers from the front for sl->tl.query. The caller sets
 * sl->tl.query, sl->tl.now_ms, sl->tl.worker and sl->done, and sl->pending
 * is false (a zeroed struct, or one whose last walk has answered). Returns
 * 0 on a hit (sl->tl.entry holds a reference the caller now owns,
 * sl->tier_name the tier), LLMC_ENOENT when every tier missed, or
 * LLMC_EAGAIN when a tier went pending: sl->done gives the final answer
 * later, and only then; an answer returned here never calls it. A hit
 * below the front is put into every faster tier before it is answered. An
 * error from a tier counts as its miss. On sl->tl.worker's loop thread.
 */
int llmc_tier_set_lookup(llmc_tier_set_t *s, llmc_set_lookup_t *sl);

/* Stores e in every tier, front first; each tier takes its own reference.
   0 (a slower tier that drops the write counts that itself); LLMC_E2BIG
   when the front tier refused it: then no tier keeps e, nor any older
   answer under its key, which is purged from every tier; LLMC_ECANCELED
   when a purge sent after purge number since (llmc_tier_set_purge_seq,
   read when the answer was asked for) selects e: then no tier keeps it.
   On worker's loop thread, where an asynchronous tier answers a purge. */
int llmc_tier_set_store(llmc_tier_set_t *s, unsigned worker, llmc_entry_t *e, int64_t now_ms,
                        uint64_t since);

/* How many purges were sent through the set so far. Any thread. */
uint64_t llmc_tier_set_purge_seq(llmc_tier_set_t *s);

/* True when a purge sent after number since selects e, or when the log no
   longer reaches back that far. Any thread. */
bool llmc_tier_set_purged_since(llmc_tier_set_t *s, uint64_t since, const llmc_entry_t *e);

/* The longest body the front tier may keep (SIZE_MAX when it names no
   bound): a longer answer is refused without being copied into an entry. */
size_t llmc_tier_set_max_body(const llmc_tier_set_t *s);

/* An answer under key that no tier may keep (too big for the front): the
   key's older answer is taken off every tier, as llmc_tier_set_store does
   when the front refuses (it would otherwise be promoted back after a newer
   one was seen). Nobody waits for it. On worker's loop thread. */
void llmc_tier_set_refuse(llmc_tier_set_t *s, unsigned worker, const llmc_key_t *key);

/* The front tier alone: a reference or NULL; 0 or LLMC_E*. front_get on
   any loop thread, front_put on worker's. A set with no tier has no
   front: NULL, LLMC_EINVAL. */
llmc_entry_t *llmc_tier_set_front_get(llmc_tier_set_t *s, const llmc_key_t *key, int64_t now_ms);
int llmc_tier_set_front_put(llmc_tier_set_t *s, unsigned worker, llmc_entry_t *e, int64_t now_ms);

/* Tier i alone, by key, for inspection (GET /admin/cache): no walk, no
   promotion. 0 and a reference in *out; LLMC_ENOENT; LLMC_ENOTSUP for a
   tier that cannot answer at once (it has no get). Counts in the tier's
   own stats as a lookup. Any loop thread. */
int llmc_tier_set_peek(llmc_tier_set_t *s, unsigned i, const llmc_key_t *key, int64_t now_ms,
                       llmc_entry_t **out);

/* Tier i alone through its general lookup (lookup(), else get()), for
   inspection (POST /admin/explain): no walk, no promotion into faster
   tiers, no alias. The caller fills lk as a walk does (query, now_ms,
   worker, done) and keeps it valid until it has answered. 0 (lk->entry a
   reference the caller owns), LLMC_ENOENT, an error (the tier did not
   answer: a timeout, a fault), or LLMC_EAGAIN: lk->done runs once, later,
   on lk->worker's loop (LLMC_ECANCELED at detach). Counts in the tier's
   own stats as a lookup. On lk->worker's loop thread. */
int llmc_tier_set_ask(llmc_tier_set_t *s, unsigned i, llmc_tier_lookup_t *lk);

/* True when tier i searches by more than the key (ops->wants_query: by
   similarity), so that its hit may be under another key. */
bool llmc_tier_set_by_similarity(const llmc_tier_set_t *s, unsigned i);

/* A purge's completion: removed[i] entries went from tier i (the set's
   order, ntiers of them; removed or queued for removal). */
typedef void (*llmc_set_purge_cb)(void *arg, const size_t *removed, unsigned ntiers);

/* Numbers sel (see llmc_tier_set_purge_seq), logs a copy, and sends it to
   every tier; calls done once, when every tier has answered (on worker's
   loop thread, or before returning when every tier answered at once).
   Call on worker's loop thread. Out of memory, sel still reaches every
   tier (and stores it may race are refused), and done reports zeros. */
void llmc_tier_set_purge(llmc_tier_set_t *s, unsigned worker, const llmc_purge_t *sel,
                         llmc_set_purge_cb done, void *arg);

/* A purge another gateway made, told by the tier from (which already holds
   its result): every other tier applies it, nobody waits. logged: numbered
   and logged as llmc_tier_set_purge does (an admin purge); not for a
   peer's refresh of one key, which only drops local copies. On worker's
   loop thread. */
void llmc_tier_set_purge_peer(llmc_tier_set_t *s, unsigned worker, const llmc_purge_t *sel,
                              const llmc_tier_t *from, bool logged);

/* True when a tier coordinates model calls across processes (ops->lease);
   leaser_name: that tier's name, or NULL. */
bool llmc_tier_set_leases(const llmc_tier_set_t *s);
const char *llmc_tier_set_leaser_name(const llmc_tier_set_t *s);

/* Asks the first tier that has lease() (see llmc_tier_ops_t.lease for the
   contract); LLMC_LEASE_NONE when none has. lease_end likewise. On
   ls->worker's loop thread. */
int llmc_tier_set_lease(llmc_tier_set_t *s, llmc_tier_lease_t *ls);
void llmc_tier_set_lease_end(llmc_tier_set_t *s, llmc_tier_lease_t *ls);

/* Upkeep for every tier that has it (expiry sweeps). One thread. */
void llmc_tier_set_tick(llmc_tier_set_t *s, int64_t now_ms);

/* Tier i's stats. */
void llmc_tier_set_stats(const llmc_tier_set_t *s, unsigned i, llmc_tier_stats_t *out);

/* Tier i's counters of its own (ops->xstats): fills out, which has room
   for LLMC_TIER_XSTATS_MAX values, points *desc at their descriptors and
   returns how many there are; 0 for a tier that has none. Any thread. */
unsigned llmc_tier_set_xstats(const llmc_tier_set_t *s, unsigned i, const llmc_stat_desc_t **desc,
                              uint64_t *out);

/* Tier i's rows of its own (ops->xrows, a remote store's nodes): fills at
   most max rows, points *name, *desc and *ndesc at what names them and
   returns how many; 0 for a tier that has none. Any thread. */
unsigned llmc_tier_set_xrows(const llmc_tier_set_t *s, unsigned i, const char **name,
                             const llmc_stat_desc_t **desc, unsigned *ndesc, llmc_tier_row_t *rows,
                             unsigned max);

#endif
