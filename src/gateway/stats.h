/*
 * gateway/stats.h: the gateway's counters, in one table, and the /stats
 * document made from every counter table there is.
 *
 * Each worker thread owns one llmc_counters_t and is its only writer, so an
 * increment is a relaxed load and store, not a locked instruction; /stats
 * sums the workers' copies into a plain snapshot. Every table (this one,
 * the HTTP server's, each tier's, the entry slab's) follows llmc/stat.h:
 * X(field, "name", KIND, "unit", "help"), so /stats and a Prometheus
 * exporter read the same descriptions.
 *
 * A name with a '/' is nested in the JSON: "upstream_errors/connect" is
 * {"upstream_errors": {"connect": N}}.
 */
#ifndef LLMC_GW_STATS_H
#define LLMC_GW_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#include <jansson.h>

#include "llmc/hist.h"
#include "llmc/stat.h"

#define LLMC_COUNTER_TABLE(X)                                                              \
    X(requests, "requests", COUNTER, "requests", "Requests answered (any route, any status).") \
    X(hits, "hits", COUNTER, "requests", "Answers served fresh from a cache tier.")         \
    X(misses, "misses", COUNTER, "requests", "Cacheable requests that went to the upstream.") \
    X(coalesced, "coalesced", COUNTER, "requests",                                          \
      "Requests that waited for an identical call in flight.")                              \
    X(bypasses, "bypasses", COUNTER, "requests",                                            \
      "Requests that skipped the cache (no-store, not cacheable).")                         \
    X(forwarded, "forwarded", COUNTER, "requests",                                          \
      "Requests under /v1 passed through to the upstream as they are (routes not cached).") \
    X(forward_pauses, "forward_pauses", COUNTER, "events",                                  \
      "Times a pass-through stopped reading the upstream until its slow client caught up.") \
    X(stale, "stale", COUNTER, "requests", "Expired answers served (max-stale or stale-if-error).") \
    X(not_modified, "not_modified", COUNTER, "requests", "304 answers to If-None-Match.")   \
    X(encoded_answers, "encoded_answers", COUNTER, "requests",                              \
      "Answers sent compressed (gzip, br or zstd), hits, misses and streams.")                           \
    X(encodings_built, "encodings_built", COUNTER, "entries",                               \
      "Compressed forms of an entry built (then kept as derived entries).")                 \
    X(encodings_off_loop, "encodings_off_loop", COUNTER, "entries",                         \
      "Compressed forms built on the thread pool (bodies of --compress-offload-bytes or more).") \
    X(encodings_off_loop_done, "encodings_off_loop_done", COUNTER, "entries",               \
      "Of those, the builds finished (the rest are in progress).")                         \
    X(encoding_waits, "encoding_waits", COUNTER, "requests",                                \
      "Requests that waited for a compressed form being built on the thread pool.")         \
    X(only_if_cached_misses, "only_if_cached_misses", COUNTER, "requests",                  \
      "504s for only-if-cached.")                                                           \
    X(stored, "stored", COUNTER, "entries", "Answers written to the cache.")                \
    X(not_stored_too_big, "not_stored_too_big", COUNTER, "entries", "Answers too big for the cache.") \
    X(not_stored_not_answer, "not_stored_not_answer", COUNTER, "entries",                   \
      "2xx upstream answers that are not the endpoint's answer (an error object, a missing "  \
      "field, a status other than 200): passed on, never stored.")                            \
    X(not_stored_purged, "not_stored_purged", COUNTER, "entries",                          \
      "Answers not stored because a purge selected them while they were asked for.")        \
    X(purges, "purges", COUNTER, "requests", "Purges run (DELETE /admin/cache, POST /admin/purge).") \
    X(upstream_calls, "upstream_calls", COUNTER, "calls", "Calls made to the upstream.")    \
    X(upstream_retries, "upstream_retries", COUNTER, "calls", "Upstream calls that were retries.") \
    X(upstream_err_connect, "upstream_errors/connect", COUNTER, "calls",                    \
      "Upstream calls that could not connect.")                                             \
    X(upstream_err_timeout, "upstream_errors/timeout", COUNTER, "calls",                    \
      "Upstream calls that timed out.")                                                     \
    X(upstream_err_io, "upstream_errors/io", COUNTER, "calls",                              \
      "Upstream calls cut off or otherwise failed.")                                        \
    X(upstream_err_status, "upstream_errors/status", COUNTER, "calls",                      \
      "Upstream answers with a non-2xx status.")                                            \
    X(upstream_err_invalid, "upstream_errors/invalid", COUNTER, "calls",                    \
      "2xx upstream answers that were not valid JSON.")                                     \
    X(client_errors, "client_errors", COUNTER, "requests", "Requests answered 4xx.")        \
    X(server_errors, "server_errors", COUNTER, "requests", "Requests answered 5xx.")        \
    X(aborted, "aborted", COUNTER, "requests", "Requests whose client left before the answer.") \
    X(stream_waiters_dropped, "stream_waiters_dropped", COUNTER, "requests",                \
      "Clients of a live stream disconnected for falling more than --stream-max-lag behind.") \
    X(tier_parked, "tier_parked", COUNTER, "requests",                                      \
      "Lookups a tier answered later (the request waited on it).")                            \
    X(parses_off_loop, "parses_off_loop", COUNTER, "requests",                              \
      "Request bodies over --parse-offload-bytes parsed on the thread pool.")                 \
    X(json_values_refused, "json_values_refused", COUNTER, "requests",                      \
      "Request bodies refused 413 for holding more than --max-json-values values.")          \
    X(denied_admin_token, "access_denied/admin_token", COUNTER, "requests",                 \
      "Requests refused 401 for a missing or wrong admin token.")                           \
    X(denied_client_key, "access_denied/client_key", COUNTER, "requests",                   \
      "Requests refused 401 for presenting no listed client key (--client-keys).")           \
    X(denied_namespace, "access_denied/namespace", COUNTER, "requests",                     \
      "Requests refused 403: their client key may not use the namespace they asked for.")   \
    X(denied_refresh, "access_denied/refresh", COUNTER, "requests",                         \
      "Requests served without the refresh their client key may not ask for "               \
      "(X-Cache-Denied: refresh).")                                                          \
    X(denied_ttl, "access_denied/ttl", COUNTER, "requests",                                 \
      "Requests whose TTL their client key may not choose: stored with --ttl "              \
      "(X-Cache-Denied: ttl).")

#define LLMC_CTR_ATOMIC(f, name, kind, unit, help) _Atomic uint64_t f;
/* One worker's counters (the worker alone writes them). */
typedef struct llmc_counters {
    LLMC_COUNTER_TABLE(LLMC_CTR_ATOMIC)
} llmc_counters_t;
#undef LLMC_CTR_ATOMIC

/* A plain snapshot of the counters (summed over workers). */
typedef struct llmc_counters_snap {
    LLMC_COUNTER_TABLE(LLMC_STAT_FIELD)
} llmc_counters_snap_t;

#define LLMC_GW_NSTATS (sizeof(llmc_counters_snap_t) / sizeof(uint64_t))
extern const llmc_stat_desc_t llmc_gw_stat_desc[];

/* Single-writer increment: only the owning worker thread may call it. */
#define LLMC_COUNT(ctr, field)                                                     \
    atomic_store_explicit(&(ctr)->field,                                           \
        atomic_load_explicit(&(ctr)->field, memory_order_relaxed) + 1,             \
        memory_order_relaxed)

/* Adds every counter of src into dst. Any thread. */
void llmc_counters_add(llmc_counters_snap_t *dst, const llmc_counters_t *src);

/* Adds each of n described values of src into dst (structs of one table). */
void llmc_stats_sum(const llmc_stat_desc_t *desc, size_t n, void *dst, const void *src);

/* Sets obj's fields from a described struct; a '/' in a name nests. When
   only is not NULL, just the names it lists (NULL-terminated). */
void llmc_stats_to_json(json_t *obj, const llmc_stat_desc_t *desc, size_t n, const void *src,
                        const char *const *only);

/*
 * The latency histograms every worker keeps (llmc/hist.h), one table:
 * X(id, "family", "label", "help"). Rows of one family are one Prometheus
 * histogram, llmcached_<family>_seconds, told apart by the label cache=
 * "<label>" (a family of one unlabelled row has label NULL). /stats shows
 * each row under "latency" by its label (or family).
 */
#define LLMC_HIST_TABLE(X)                                                                   \
    X(LLMC_H_HIT, "request_duration", "hit",                                                 \
      "Time from a request's first byte to its answer written, by how the cache answered.")  \
    X(LLMC_H_SEMANTIC, "request_duration", "semantic_hit", NULL)                             \
    X(LLMC_H_STALE, "request_duration", "stale", NULL)                                       \
    X(LLMC_H_MISS, "request_duration", "miss", NULL)                                         \
    X(LLMC_H_COALESCED, "request_duration", "coalesced", NULL)                               \
    X(LLMC_H_BYPASS, "request_duration", "bypass", NULL)                                     \
    X(LLMC_H_UPSTREAM, "upstream_duration", NULL,                                            \
      "Time an upstream call of a cached route took, start to end (each try apart).")

#define LLMC_HIST_ENUM(id, family, label, help) id,
typedef enum llmc_gw_hist { LLMC_HIST_TABLE(LLMC_HIST_ENUM) LLMC_GW_NHIST } llmc_gw_hist_t;
#undef LLMC_HIST_ENUM

/* The request_duration row for an answer's X-Cache value, or -1 (none:
   an error before a decision, a route that is not cached). */
static inline int llmc_gw_hist_of_xcache(const char *xcache)
{
    static const struct { const char *x; int h; } map[] = {
        {"HIT", LLMC_H_HIT},     {"SEMANTIC-HIT", LLMC_H_SEMANTIC}, {"STALE", LLMC_H_STALE},
        {"MISS", LLMC_H_MISS},   {"COALESCED", LLMC_H_COALESCED},   {"BYPASS", LLMC_H_BYPASS},
    };
    for (size_t i = 0; xcache && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].x, xcache) == 0)
            return map[i].h;
    return -1;
}

struct llmc_gw;
/* The /stats document: every worker's counters summed, the HTTP servers',
   the tiers' (the front tier's also at the top level), the entry slab's,
   and the process gauges. Any worker's loop thread. NULL when out of memory. */
json_t *llmc_gw_stats_json(struct llmc_gw *gw);

/* The same in the Prometheus text exposition format 0.0.4 (HELP and TYPE
   lines, llmcached_ names, counters ending in _total, a tier label per
   tier, a class label for "group/class" rows): a malloc'd string of *len
   bytes, NULL when out of memory. Any worker's loop thread. */
char *llmc_gw_metrics_text(struct llmc_gw *gw, size_t *len);

#endif
