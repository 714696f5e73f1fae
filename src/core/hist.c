/*
 * hist.c: fixed-bucket latency histograms (llmc/hist.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The bucket is found by binary search over 22 bounds (five compares):
 *   cheaper than a log and exact at the bounds, where Prometheus's le
 *   ("less or equal") puts an observation equal to a bound in that bucket.
 * - Each observation is two single-writer stores (bucket, sum), as the
 *   gateway's counters are: the histogram belongs to one thread.
 */
#include "llmc/hist.h"

#include <assert.h>

#define US 1000ull
#define MS (1000ull * US)
#define S (1000ull * MS)

const uint64_t llmc_hist_bounds_ns[LLMC_HIST_NBOUNDS] = {
    10 * US,  25 * US,  50 * US,  100 * US, 250 * US, 500 * US, 1 * MS, 2500 * US,
    5 * MS,   10 * MS,  25 * MS,  50 * MS,  100 * MS, 250 * MS, 500 * MS, 1 * S,
    2500 * MS, 5 * S,   10 * S,   30 * S,   60 * S,   120 * S,
};

unsigned llmc_hist_bucket(uint64_t ns)
{
    unsigned lo = 0, hi = LLMC_HIST_NBOUNDS; /* the answer is in [lo, hi] */
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (ns <= llmc_hist_bounds_ns[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void bump(_Atomic uint64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

void llmc_hist_observe(llmc_hist_t *h, uint64_t ns)
{
    bump(&h->bucket[llmc_hist_bucket(ns)], 1);
    bump(&h->sum_ns, ns);
}

void llmc_hist_add(llmc_hist_snap_t *s, const llmc_hist_t *h)
{
    for (unsigned i = 0; i < LLMC_HIST_NBUCKETS; i++) {
        uint64_t v = atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        s->bucket[i] += v;
        s->count += v;
    }
    s->sum_ns += atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
}

uint64_t llmc_hist_quantile(const llmc_hist_snap_t *s, double q)
{
    if (s->count == 0)
        return 0;
    if (q > 1)
        q = 1;
    if (q < 0)
        q = 0;
    double rank = q * (double)s->count;
    uint64_t below = 0;
    for (unsigned i = 0; i < LLMC_HIST_NBOUNDS; i++) {
        uint64_t in = s->bucket[i];
        if (in && (double)(below + in) >= rank) {
            double lo = i ? (double)llmc_hist_bounds_ns[i - 1] : 0.0;
            double hi = (double)llmc_hist_bounds_ns[i];
            double frac = (rank - (double)below) / (double)in;
            if (frac < 0)
                frac = 0;
            return (uint64_t)(lo + (hi - lo) * frac);
        }
        below += in;
    }
    /* The rank is among observations above the last bound. */
    assert(s->bucket[LLMC_HIST_NBOUNDS] > 0);
    return llmc_hist_bounds_ns[LLMC_HIST_NBOUNDS - 1];
}
