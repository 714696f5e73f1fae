/*
 * gateway/stats.h: the gateway's counters, in one table.
 *
 * Each worker thread owns one llmc_counters_t and is its only writer, so an
 * increment is a relaxed load and store, not a locked instruction; /stats
 * sums the workers' copies. The table makes the struct, the JSON
 * of /stats and the documentation, so a counter cannot be added in one place
 * and forgotten in another.
 */
#ifndef LLMC_GW_STATS_H
#define LLMC_GW_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#include <jansson.h>

/* X(field, "json name", "description"). Names under "upstream_errors" are
   grouped into that object by their upstream_err_ prefix. */
#define LLMC_COUNTER_TABLE(X)                                                      \
    X(requests, "requests", "Requests answered (any route, any status).")          \
    X(hits, "hits", "Answers served fresh from a cache tier.")                     \
    X(misses, "misses", "Cacheable requests that went to the upstream.")           \
    X(coalesced, "coalesced", "Requests that waited for an identical call in flight.") \
    X(bypasses, "bypasses", "Requests that skipped the cache (no-store, not cacheable).") \
    X(stale, "stale", "Expired answers served (max-stale or stale-if-error).")     \
    X(not_modified, "not_modified", "304 answers to If-None-Match.")               \
    X(only_if_cached_misses, "only_if_cached_misses", "504s for only-if-cached.")  \
    X(stored, "stored", "Answers written to the cache.")                           \
    X(not_stored_too_big, "not_stored_too_big", "Answers too big for the cache.")  \
    X(upstream_calls, "upstream_calls", "Calls made to the upstream.")             \
    X(upstream_retries, "upstream_retries", "Upstream calls that were retries.")   \
    X(upstream_err_connect, "connect", "Upstream calls that could not connect.")   \
    X(upstream_err_timeout, "timeout", "Upstream calls that timed out.")           \
    X(upstream_err_io, "io", "Upstream calls cut off or otherwise failed.")        \
    X(upstream_err_status, "status", "Upstream answers with a non-2xx status.")    \
    X(upstream_err_invalid, "invalid", "2xx upstream answers that were not valid JSON.") \
    X(client_errors, "client_errors", "Requests answered 4xx.")                    \
    X(server_errors, "server_errors", "Requests answered 5xx.")                    \
    X(aborted, "aborted", "Requests whose client left before the answer.")

typedef struct llmc_counters {
#define LLMC_CTR_FIELD(f, name, desc) _Atomic uint64_t f;
    LLMC_COUNTER_TABLE(LLMC_CTR_FIELD)
#undef LLMC_CTR_FIELD
} llmc_counters_t;

/* Single-writer increment: only the owning worker thread may call it. */
#define LLMC_COUNT(ctr, field)                                                     \
    atomic_store_explicit(&(ctr)->field,                                           \
        atomic_load_explicit(&(ctr)->field, memory_order_relaxed) + 1,             \
        memory_order_relaxed)

/* Adds every counter of src into dst (a plain snapshot). Any thread. */
void llmc_counters_add(llmc_counters_t *dst, const llmc_counters_t *src);

/* Adds the counters to a JSON object: top-level fields, plus an
   "upstream_errors" object by class. */
void llmc_counters_to_json(const llmc_counters_t *c, json_t *obj);

#endif
