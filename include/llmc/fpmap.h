/*
 * llmc/fpmap.h: raw-request fingerprints mapped to cache keys.
 *
 * Computing a cache key means parsing the JSON body and writing its
 * canonical form: most of the CPU a hit costs. Clients that repeat a
 * question usually send the very same bytes, so the gateway first hashes
 * the raw request (SHA-256 over the route, scope, namespace header and body
 * bytes) and looks that fingerprint up here; a known fingerprint gives the
 * canonical key without parsing anything.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The map is a fixed-size, direct-mapped table: a new fingerprint simply
 *   replaces the one in its slot. It can forget, never grow, and never be
 *   wrong: a slot holds the full 32-byte fingerprint and is compared whole.
 * - Fingerprints are SHA-256 for the same reason keys are: a collision would
 *   serve one request's answer to another.
 * - Slots are guarded by striped locks (one per 64 slots), held for a copy.
 */
#ifndef LLMC_FPMAP_H
#define LLMC_FPMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmc/entry.h"

typedef struct llmc_fpmap llmc_fpmap_t;

/* A map with at least `slots` slots (rounded up to a power of two, minimum
   64). NULL when out of memory. */
llmc_fpmap_t *llmc_fpmap_new(size_t slots);
void llmc_fpmap_free(llmc_fpmap_t *m);

/* True, with the key and the caller's flags, when fp is in the map. Any thread. */
bool llmc_fpmap_get(llmc_fpmap_t *m, const llmc_key_t *fp, llmc_key_t *key, uint32_t *flags);

/* Remembers fp -> key (+ flags), replacing whatever held its slot. Any thread. */
void llmc_fpmap_put(llmc_fpmap_t *m, const llmc_key_t *fp, const llmc_key_t *key, uint32_t flags);

#endif
