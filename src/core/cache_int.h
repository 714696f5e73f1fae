/*
 * cache_int.h: the memory cache's accounting constant, for its tests and for
 * tools that size a cache.
 *
 * Every entry's link fields (hash chain, SIEVE queue, visited bit) live inside
 * the entry block, so mem_bytes already covers them. What an entry costs the
 * table beyond its block is its share of the shard's bucket array. A shard
 * doubles its bucket array when it holds more than two entries per bucket
 * and halves it when it holds fewer than one per two buckets, so the array
 * never has more than two slots per entry (once above its small fixed
 * minimum): each entry is charged two bucket pointers. Chains stay short:
 * at most two entries per bucket on average. The minimum buckets and the
 * shard structs are a fixed cost of the cache, not charged against
 * max_bytes.
 */
#ifndef LLMC_CACHE_INT_H
#define LLMC_CACHE_INT_H

#include "llmc/entry.h"

#define LLMC_CACHE_ENTRY_OVERHEAD (2 * sizeof(llmc_entry_t *))

/* Bytes an entry counts against the cache budget while it is held. */
static inline size_t llmc__cache_charge(const llmc_entry_t *e)
{
    return e->mem_bytes + LLMC_CACHE_ENTRY_OVERHEAD;
}

#endif
