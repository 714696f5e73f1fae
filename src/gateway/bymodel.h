/*
 * gateway/bymodel.h: requests and savings counted by route and model, with
 * a bound on how many models are told apart.
 *
 * For each (route, model) the gateway counts hits, stale answers, misses,
 * coalesced waits and bypasses, and, for every answer served from the
 * cache, the tokens its stored usage says the model call would have cost
 * (the X-Cache-Tokens-Saved header's numbers) and their price from the
 * --prices table. /stats and /metrics read them (stats.c).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Model names come from clients: without a bound, every new name would
 *   add series to /metrics for ever. The first max_models distinct names
 *   get a row of their own; later ones are counted under "other" (and so
 *   are routes beyond LLMC_BYMODEL_ROUTES, which the route table never
 *   reaches). A name is never forgotten while the process runs, so a
 *   series does not come and go.
 * - The names are a shared append-only list read without a lock: a name is
 *   written before the count that publishes it (release/acquire), and only
 *   adding one takes the mutex. The counters are per writer thread, as the
 *   gateway's others are: one writer, relaxed stores, summed on read.
 * - A model's price is looked up once, when its name is added (and again
 *   when llmc_bymodel_set_prices replaces the table); "other"
 *   looks each hit's model up (a scan of the price table), so its money is
 *   right even though its tokens are a mixture of models.
 * - Money is counted in pico-units (1e-12 of the price file's currency),
 *   exact integers; a writer's counter for one row saturates at 1.8e7
 *   units rather than wrapping.
 */
#ifndef LLMC_GW_BYMODEL_H
#define LLMC_GW_BYMODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/prices.h"
#include "llmc/stat.h"
#include "llmc/usage.h"

/* Routes told apart (the cacheable routes are far fewer). */
#define LLMC_BYMODEL_ROUTES 16
/* The longest model name kept; a longer one is cut (at a UTF-8 boundary). */
#define LLMC_BYMODEL_NAME_MAX 128

#define LLMC_BYMODEL_TABLE(X)                                                                 \
    X(hits, "hits", COUNTER, "requests", "Answers served fresh from a cache tier.")          \
    X(stale, "stale", COUNTER, "requests", "Expired answers served (max-stale or stale-if-error).") \
    X(misses, "misses", COUNTER, "requests", "Cacheable requests that went to the upstream.") \
    X(coalesced, "coalesced", COUNTER, "requests",                                            \
      "Requests that waited for an identical call in flight.")                                \
    X(bypasses, "bypasses", COUNTER, "requests", "Requests that skipped the cache.")          \
    X(prompt_tokens_saved, "prompt_tokens_saved", COUNTER, "tokens",                          \
      "Prompt tokens of the answers served from the cache (their stored usage).")             \
    X(completion_tokens_saved, "completion_tokens_saved", COUNTER, "tokens",                  \
      "Completion tokens of the answers served from the cache (their stored usage).")         \
    X(money_saved, "money_saved", COUNTER, "picounits",                                       \
      "What the answers served from the cache would have cost at the --prices table's prices " \
      "(in the table's currency).")

/* A plain row of counters (a sum over writers). */
typedef struct llmc_bymodel_row {
    LLMC_BYMODEL_TABLE(LLMC_STAT_FIELD)
} llmc_bymodel_row_t;

#define LLMC_BYMODEL_NSTATS (sizeof(llmc_bymodel_row_t) / sizeof(uint64_t))
extern const llmc_stat_desc_t llmc_bymodel_desc[];

typedef enum llmc_by_kind {
    LLMC_BY_HIT,        /* fresh from a tier (exact or semantic): saves its usage */
    LLMC_BY_STALE,      /* an expired answer served: saves its usage too */
    LLMC_BY_MISS,
    LLMC_BY_COALESCED,
    LLMC_BY_BYPASS,
} llmc_by_kind_t;

typedef struct llmc_bymodel llmc_bymodel_t;

/*
 * A table for nwriters writer threads (ids 0..nwriters-1) telling at most
 * max_models models apart, pricing with prices (taken: freed with the
 * table; may be NULL: tokens only). NULL when out of memory (prices freed).
 */
llmc_bymodel_t *llmc_bymodel_new(unsigned nwriters, unsigned max_models, llmc_prices_t *prices);
void llmc_bymodel_free(llmc_bymodel_t *bm);

/*
 * Counts one request of kind on route for model ("" or NULL: "unknown").
 * For a hit or a stale answer, saved (may be NULL: no stored usage) adds
 * its tokens and their price. Only writer's own thread may call it. bm
 * NULL counts nothing.
 */
void llmc_bymodel_count(llmc_bymodel_t *bm, unsigned writer, const char *route,
                        const char *model, llmc_by_kind_t kind, const llmc_usage_t *saved);

/*
 * Namespaces (X-Cache-Namespace, a client key's) counted apart: at most
 * max_namespaces names, then "other"; "" is the requests without one.
 * Call once before any count; without it namespaces are not counted.
 * 0 or LLMC_ENOMEM.
 */
int llmc_bymodel_namespaces(llmc_bymodel_t *bm, unsigned max_namespaces);

/* As llmc_bymodel_count, by namespace (tokens saved, no money: the money
   is by model). Only writer's own thread. bm NULL counts nothing. */
void llmc_bymodel_count_ns(llmc_bymodel_t *bm, unsigned writer, const char *ns,
                           llmc_by_kind_t kind, const llmc_usage_t *saved);

/* Each namespace's row (summed over writers; all-zero rows skipped),
   "other" last. Any thread. Returns how many rows fn was given. */
typedef void (*llmc_bymodel_ns_fn)(void *arg, const char *ns, const llmc_bymodel_row_t *row);
unsigned llmc_bymodel_each_ns(llmc_bymodel_t *bm, llmc_bymodel_ns_fn fn, void *arg);

/* How many rows the current price table has. Any thread. */
size_t llmc_bymodel_prices(llmc_bymodel_t *bm);

/* The current price table (its source and date), or NULL; it stays valid
   until llmc_bymodel_free (a replaced table is retired, not freed). */
const llmc_prices_t *llmc_bymodel_price_table(llmc_bymodel_t *bm);

/*
 * Replaces the price table (taken; NULL: no prices) for the hits counted
 * from now on: what was saved before keeps the prices it was counted at.
 * For a reload (SIGHUP): load the file with llmc_prices_load first, and
 * keep the old table when that fails. The replaced table is kept until
 * llmc_bymodel_free (a writer may be reading it), so a reload costs its
 * size. 0, or LLMC_ENOMEM (prices freed, the old table stays). Any thread.
 */
int llmc_bymodel_set_prices(llmc_bymodel_t *bm, llmc_prices_t *prices);

/*
 * A snapshot: the names known (index max_models or LLMC_BYMODEL_ROUTES is
 * "other") and every writer's rows summed. Any thread. Returns the number
 * of (route, model) rows, each handed to fn with its names; a row whose
 * counters are all zero is skipped. priced: the model's row has a price
 * (false for "other", which prices each hit apart).
 */
typedef void (*llmc_bymodel_fn)(void *arg, const char *route, const char *model, bool priced,
                                const llmc_bymodel_row_t *row);
unsigned llmc_bymodel_each(llmc_bymodel_t *bm, llmc_bymodel_fn fn, void *arg);

#endif
