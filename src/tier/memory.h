/*
 * tier/memory.h: the in-memory cache (llmc/cache.h) as the first tier.
 *
 * The tier owns the cache it wraps: destroying the tier frees the cache.
 * The cache stays reachable through llmc_tier_memory_cache() for callers
 * that need more than the tier interface (the semantic tier, tests).
 */
#ifndef LLMC_TIER_MEMORY_H
#define LLMC_TIER_MEMORY_H

#include "llmc/cache.h"
#include "llmc/tier.h"

/* Entries the memory tier's tick() examines per call. */
#define LLMC_TIER_MEMORY_SWEEP_BUDGET 1000

/*
 * Wraps c as a tier named "memory" and takes ownership of it. Returns NULL
 * when out of memory; c then still belongs to the caller. Any thread; the
 * tier's ops may be called from any thread, as the cache's may.
 */
llmc_tier_t *llmc_tier_memory_new(llmc_cache_t *c);

/* The cache inside a tier made by llmc_tier_memory_new; owned by the tier. */
llmc_cache_t *llmc_tier_memory_cache(llmc_tier_t *t);

#endif
