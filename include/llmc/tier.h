/*
 * llmc/tier.h: the one interface every cache tier implements.
 *
 * A lookup walks an ordered list of tiers (memory, then disk; later the
 * shared Redis tier and the semantic tier). A hit in a slower tier is
 * promoted into the faster ones. A purge is sent to every tier, so that an
 * invalidated answer cannot come back from a lower one.
 *
 * A lookup may answer at once (the memory tier from its hash table, the
 * disk tier from LMDB's memory map) or later: a tier that waits on a
 * network or searches by similarity answers LLMC_EAGAIN and completes
 * through a callback on the asking request's own loop thread. The ordered
 * list, promotion, store and purge fan-out live in src/tier/set.h; the
 * gateway talks to that, never to a tier directly.
 */
#ifndef LLMC_TIER_H
#define LLMC_TIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmc/entry.h"
#include "llmc/stat.h"

typedef struct llmc_tier llmc_tier_t;

/*
 * What a purge removes: the entries for which every condition in conds
 * holds (a conjunction: {"namespace": "a", "model": "m"} is both). A
 * selector with no condition selects nothing unless all is set, so a
 * selector left empty by mistake can never turn into "purge everything".
 * A condition whose string is NULL selects nothing either.
 */
enum llmc_purge_cond {
    LLMC_PURGE_KEY        = 1u << 0,  /* the key is key */
    LLMC_PURGE_NAMESPACE  = 1u << 1,  /* the namespace is ns ("" : none) */
    LLMC_PURGE_TAG        = 1u << 2,  /* one of the tags is tag */
    LLMC_PURGE_MODEL      = 1u << 3,  /* the model is model ("" : unknown) */
    LLMC_PURGE_KEY_PREFIX = 1u << 4,  /* the key's hex starts with prefix_digits digits of prefix */
    LLMC_PURGE_OLDER      = 1u << 5,  /* created before created_before_ms */
    LLMC_PURGE_ROUTE      = 1u << 6,  /* stored for the endpoint route ("/v1/chat/completions") */
};

typedef struct llmc_purge {
    bool all;                    /* with conds 0: every entry */
    uint32_t conds;              /* LLMC_PURGE_* bits, all of which must hold */
    llmc_key_t key;              /* KEY */
    llmc_key_t prefix;           /* KEY_PREFIX: its bytes, an odd last digit in a high nibble */
    uint8_t prefix_digits;       /* KEY_PREFIX: 1..64 hex digits */
    int64_t created_before_ms;   /* OLDER */
    const char *ns, *tag, *model, *route;
} llmc_purge_t;

/* True when e is selected by sel. Any thread. */
bool llmc_purge_match(const llmc_purge_t *sel, const llmc_entry_t *e);

/* True for the selector of exactly one key and nothing else (a tier can
   delete it without reading it first). */
static inline bool llmc_purge_is_key(const llmc_purge_t *sel)
{
    return sel->conds == LLMC_PURGE_KEY;
}

/* True for the selector of every entry. */
static inline bool llmc_purge_is_all(const llmc_purge_t *sel)
{
    return sel->conds == 0 && sel->all;
}

/* A copy of sel and its strings in one malloc'd block (free() it), for a
   purge kept beyond its caller's stack (a queue, a log). NULL when out of
   memory. Any thread. */
llmc_purge_t *llmc_purge_dup(const llmc_purge_t *sel);

/* X(field, "name", KIND, "unit", "help"): every tier reports these (llmc/stat.h). */
#define LLMC_TIER_STATS_TABLE(X)                                                         \
    X(entries, "entries", GAUGE, "entries", "Entries the tier holds.")                     \
    X(bytes, "bytes", GAUGE, "bytes", "Bytes the tier's entries take.")                    \
    X(max_bytes, "max_bytes", GAUGE, "bytes", "The tier's bound on bytes.")                \
    X(hits, "hits", COUNTER, "lookups", "Lookups that found an entry (fresh or stale).")   \
    X(misses, "misses", COUNTER, "lookups", "Lookups that found nothing.")                 \
    X(stored, "stored", COUNTER, "entries", "Entries written.")                            \
    X(evicted_size, "evicted_size", COUNTER, "entries", "Entries evicted for room.")       \
    X(evicted_ttl, "evicted_ttl", COUNTER, "entries", "Entries removed once expired.")     \
    X(purged, "purged", COUNTER, "entries", "Entries removed by a purge.")                 \
    X(errors, "errors", COUNTER, "operations", "Failed reads or writes, corrupt records.") \
    X(dropped, "dropped", COUNTER, "entries", "Writes dropped (full queue, too big).")

typedef struct llmc_tier_stats {
    LLMC_TIER_STATS_TABLE(LLMC_STAT_FIELD)
} llmc_tier_stats_t;

/* The descriptors of llmc_tier_stats_t, LLMC_TIER_NSTATS of them. */
#define LLMC_TIER_NSTATS (sizeof(llmc_tier_stats_t) / sizeof(uint64_t))
extern const llmc_stat_desc_t llmc_tier_stat_desc[];

/*
 * What a lookup asks. The key is always there. A tier that searches by more
 * than the key (by similarity) sets wants_query in its ops; then the caller
 * fills the rest: the canonical JSON body, the endpoint path, the scope
 * (hex hash of the credential, "" when shared), the namespace and model.
 * Otherwise those may be NULL (a repeated request skips the JSON work).
 */
typedef struct llmc_tier_query {
    llmc_key_t key;
    const char *path;
    const char *body;
    size_t body_len;
    const char *scope;
    const char *ns;
    const char *model;
    bool similar;   /* the request takes an answer to a similar question (a tier
                       that searches by similarity answers nothing otherwise) */
    float threshold; /* the similarity such an answer needs; 0: the tier's own */
} llmc_tier_query_t;

/*
 * One lookup in one tier. The caller owns it and keeps it valid until the
 * lookup has answered: at once (lookup() returned 0 or LLMC_ENOENT) or
 * through done(), which a tier that answered LLMC_EAGAIN calls exactly
 * once, later, on the loop thread of worker.
 */
typedef struct llmc_tier_lookup llmc_tier_lookup_t;
struct llmc_tier_lookup {
    const llmc_tier_query_t *query;
    int64_t now_ms;
    unsigned worker;            /* whose loop the lookup runs on (attach's index) */
    llmc_entry_t *entry;        /* out: a reference on a hit (it may be stale) */
    float similarity;           /* out: a hit by similarity's cosine; 0 for an exact hit */
    /* out: a hit by similarity that the caller should also send to the
       model in the background, storing its answer as usual (the tier
       judges it then); set only with similarity > 0. */
    bool verify;
    /* out: a hit by similarity that must stay the tier's to serve: the
       caller makes no copy of it under the request's own key in a faster
       tier, because the tier may yet find it wrong and take it back (a
       copy would go on answering that wording as an exact hit, unseen by
       the tier's verification). Set only with similarity > 0. */
    bool tier_only;
    /* rc: 0 (entry set), LLMC_ENOENT, or an error (a miss to the caller). */
    void (*done)(llmc_tier_lookup_t *lk, int rc);
    void *tier_data;            /* the tier's own, while the lookup is pending */
};

/*
 * A lease: the right to call the model for a key, held by one process
 * among all those sharing a tier (cross-gateway coalescing). The caller
 * owns it and keeps it valid until it is answered and, when won, ended.
 */
enum llmc_lease_result {
    LLMC_LEASE_NONE,    /* nobody coordinates now (no connection, a fault): call the model */
    LLMC_LEASE_WON,     /* call the model, store the answer, then lease_end() */
    LLMC_LEASE_FILLED,  /* the holder's answer came: entry holds it */
};

typedef struct llmc_tier_lease llmc_tier_lease_t;
struct llmc_tier_lease {
    llmc_key_t key;
    unsigned worker;            /* whose loop asks (attach's index) */
    int64_t max_wait_ms;        /* how long to wait for another holder's answer */
    llmc_entry_t *entry;        /* out, LLMC_LEASE_FILLED: a reference, the caller's */
    /* result: an llmc_lease_result, or LLMC_ECANCELED at detach. */
    void (*done)(llmc_tier_lease_t *ls, int result);
    void *tier_data;            /* the tier's own, from lease() to the end */
};

/* A purge's completion: removed counts entries removed or queued for removal. */
typedef void (*llmc_tier_purge_cb)(void *arg, size_t removed);

struct uv_loop_s;

/* One row of a tier's xrows (see llmc_tier_ops_t.xrows). */
#define LLMC_TIER_ROW_NAME_MAX 272
#define LLMC_TIER_ROW_STATS_MAX 8
#define LLMC_TIER_ROWS_MAX 128 /* the most rows /stats shows of one tier */
typedef struct llmc_tier_row {
    char name[LLMC_TIER_ROW_NAME_MAX];
    uint64_t v[LLMC_TIER_ROW_STATS_MAX];
} llmc_tier_row_t;

typedef struct llmc_tier_ops {
    const char *name; /* "memory", "disk", ... shown in Cache-Status and /stats */
    /* The lookup needs the whole llmc_tier_query_t, not only the key. */
    bool wants_query;
    /* Answers at once: 0 and a new reference in *out, or LLMC_ENOENT. May
       return a stale entry kept for stale serving; the caller compares
       expires_ms. A tier that cannot answer at once leaves it NULL. */
    int (*get)(llmc_tier_t *t, const llmc_key_t *key, int64_t now_ms, llmc_entry_t **out);
    /* The general lookup: 0 (lk->entry set), LLMC_ENOENT, or LLMC_EAGAIN:
       lk->done runs later on lk->worker's loop. NULL: get() is used. */
    int (*lookup)(llmc_tier_t *t, llmc_tier_lookup_t *lk);
    /* Optional: the largest body the tier may keep; NULL: no bound of its
       own. Lets the set refuse an answer before anyone copies it. */
    size_t (*max_body)(llmc_tier_t *t);
    /* Stores (or queues) e, taking its own reference. 0 or LLMC_E*. Called
       on worker's loop thread (attach's index), so a tier with a
       connection per loop writes on that loop's. */
    int (*put)(llmc_tier_t *t, unsigned worker, llmc_entry_t *e, int64_t now_ms);
    /* Removes what sel selects, then calls done(arg, removed) exactly once:
       before returning, or later on worker's loop thread. */
    void (*purge)(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                  llmc_tier_purge_cb done, void *arg);
    /* Background upkeep (expiry sweeps); called from a timer with a budget. */
    void (*tick)(llmc_tier_t *t, int64_t now_ms);
    void (*stats)(llmc_tier_t *t, llmc_tier_stats_t *out);
    /* Optional: counters of the tier's own beyond the common table (a
       remote store's connection state, its faults by kind), shown beside
       them in /stats. xstats_desc describes nxstats uint64_t fields of a
       struct (llmc/stat.h) that xstats fills. Any thread. */
    const llmc_stat_desc_t *xstats_desc;
    unsigned nxstats;
    void (*xstats)(llmc_tier_t *t, void *out);
    /* Optional: rows of the tier's own, one per part of it that can fail
       alone (a remote store's nodes), each a name and the counters
       xrows_desc describes (nxrows uint64_t fields, as xstats); /stats
       lists them under xrows_name. xrows fills at most max rows and
       returns how many. Any thread. */
    const char *xrows_name;
    const llmc_stat_desc_t *xrows_desc;
    unsigned nxrows;
    unsigned (*xrows)(llmc_tier_t *t, llmc_tier_row_t *rows, unsigned max);
    /* Optional. attach: worker (0, 1, ...) will run loop; called on the main
       thread before any worker runs, so a tier may keep a connection per
       loop. detach: on worker's loop thread at shutdown; completes every
       lookup and purge still pending there (LLMC_ECANCELED) and closes the
       tier's handles on that loop. */
    /* Optional, both or neither. lease: asks for the right to call the
       model for ls->key, or waits for the answer of whoever holds it.
       Returns LLMC_LEASE_NONE or LLMC_LEASE_WON at once, or LLMC_EAGAIN:
       then ls->done runs once, later, on ls->worker's loop (any result).
       lease_end: gives back a won lease once its answer is stored (or will
       not be), or drops a pending one the caller stops waiting for (done
       is not called then); nothing for an answered NONE or FILLED. */
    int (*lease)(llmc_tier_t *t, llmc_tier_lease_t *ls);
    void (*lease_end)(llmc_tier_t *t, llmc_tier_lease_t *ls);
    int (*attach)(llmc_tier_t *t, unsigned worker, struct uv_loop_s *loop);
    void (*detach)(llmc_tier_t *t, unsigned worker);
    void (*destroy)(llmc_tier_t *t);
} llmc_tier_ops_t;

struct llmc_tier {
    const llmc_tier_ops_t *ops;
    void *impl;
};

#endif
