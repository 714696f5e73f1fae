/*
 * tier/memory.h: the in-memory cache (llmc/cache.h) as the first tier,
 * keeping answers compressed at rest with a hot set of decompressed copies
 * (see memory.c).
 *
 * The tier owns the caches it wraps: destroying the tier frees them. The
 * main cache stays reachable through llmc_tier_memory_cache() for callers
 * that need more than the tier interface (tests); its entries may be
 * packed (llmc_entry_is_packed), which the tier's get() never hands out.
 */
#ifndef LLMC_TIER_MEMORY_H
#define LLMC_TIER_MEMORY_H

#include "llmc/cache.h"
#include "llmc/tier.h"

/* Entries the memory tier's tick() examines per call (in each cache). */
#define LLMC_TIER_MEMORY_SWEEP_BUDGET 1000

/* The smallest hot set made (bytes); a smaller share means none. */
#define LLMC_TIER_MEMORY_MIN_HOT ((size_t)64 << 10)

/*
 * Wraps c as a tier named "memory" and takes ownership of it, with no hot
 * set (every hit on a packed entry decompresses). Returns NULL when out of
 * memory; c then still belongs to the caller. Any thread; the tier's ops
 * may be called from any thread, as the cache's may.
 */
llmc_tier_t *llmc_tier_memory_new(llmc_cache_t *c);

/* As llmc_tier_memory_new, with hot (NULL: none) as the hot set. */
llmc_tier_t *llmc_tier_memory_new_hot(llmc_cache_t *c, llmc_cache_t *hot);

/* Makes the caches from cfg: hot_percent of cfg->max_bytes for the hot set
   (none below LLMC_TIER_MEMORY_MIN_HOT), the rest for the main cache, both
   with cfg's other settings. Bodies above pack_max bytes are stored as they
   came (0: no bound). NULL when out of memory or cfg is invalid. */
llmc_tier_t *llmc_tier_memory_open(const llmc_cache_config_t *cfg, unsigned hot_percent,
                                   size_t pack_max);

/* The main cache inside a memory tier; owned by the tier. */
llmc_cache_t *llmc_tier_memory_cache(llmc_tier_t *t);

#endif
