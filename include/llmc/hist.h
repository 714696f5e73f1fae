/*
 * llmc/hist.h: a latency histogram with fixed buckets, written by one
 * thread without locks and read by any.
 *
 * The buckets are the same for every histogram: upper bounds from 10 µs to
 * 120 s, about three per decade (1, 2.5, 5), so a hit served from memory
 * (tens of microseconds) and a model call (seconds) land in buckets of the
 * same relative width. Prometheus needs fixed bounds to sum histograms over
 * processes, and fixed bounds make an observation a search and one store.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - One writer per llmc_hist_t (a worker thread owns its own): an
 *   observation is a relaxed load and store, never a locked instruction.
 *   Readers sum the writers' copies into an llmc_hist_snap_t; a snapshot
 *   taken during an observation may see the bucket but not yet the sum:
 *   a scrape is not a transaction, the next one agrees.
 * - Buckets are stored per bucket (not cumulative); Prometheus's
 *   cumulative _bucket{le} series is made when written out.
 * - The sum is kept in nanoseconds, the unit of uv_hrtime(): 2^64 ns is
 *   584 years, so it does not wrap.
 */
#ifndef LLMC_HIST_H
#define LLMC_HIST_H

#include <stdatomic.h>
#include <stdint.h>

/* The finite upper bounds; one more bucket (+Inf) follows them. */
#define LLMC_HIST_NBOUNDS 22
#define LLMC_HIST_NBUCKETS (LLMC_HIST_NBOUNDS + 1)

/* The upper bounds in nanoseconds, ascending (hist.c). */
extern const uint64_t llmc_hist_bounds_ns[LLMC_HIST_NBOUNDS];

/* One writer's histogram; all zero is empty. */
typedef struct llmc_hist {
    _Atomic uint64_t bucket[LLMC_HIST_NBUCKETS];
    _Atomic uint64_t sum_ns;
} llmc_hist_t;

/* A plain copy, summed over writers. */
typedef struct llmc_hist_snap {
    uint64_t bucket[LLMC_HIST_NBUCKETS];
    uint64_t sum_ns;
    uint64_t count;    /* the buckets' total */
} llmc_hist_snap_t;

/* The bucket an observation of ns falls in: the first whose bound is
   >= ns, else the +Inf bucket (LLMC_HIST_NBOUNDS). Pure. */
unsigned llmc_hist_bucket(uint64_t ns);

/* Records one observation of ns. Only h's writer thread may call it. */
void llmc_hist_observe(llmc_hist_t *h, uint64_t ns);

/* Adds h's counts into s (count included). Any thread. */
void llmc_hist_add(llmc_hist_snap_t *s, const llmc_hist_t *h);

/*
 * The q-quantile (0 < q <= 1) of s in nanoseconds, estimated as Prometheus's
 * histogram_quantile() does: linear within the bucket the rank falls in
 * (the first bucket starting at 0). A rank in the +Inf bucket gives the
 * largest finite bound. 0 when s is empty. Pure.
 */
uint64_t llmc_hist_quantile(const llmc_hist_snap_t *s, double q);

#endif
