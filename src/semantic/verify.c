/*
 * semantic/verify.c: measured semantic correctness (see verify.h).
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "semantic/lexical.h"
#include "semantic/verify.h"

void llmc_vstate_init(llmc_vstate_t *st, float start)
{
    *st = (llmc_vstate_t){.thr = start, .min_right = 2.0f, .max_wrong = -1.0f};
}

void llmc_vstate_learn(llmc_vstate_t *st, float s, bool right, float floor)
{
    if (!right) {
        /* Its answer fit its own question and not this one, at a similarity
           the tier took for the same: nothing says a closer one is safer. */
        st->wrong++;
        if (s > st->max_wrong)
            st->max_wrong = s;
        st->thr = LLMC_VERIFY_BARRED;
        return;
    }
    st->right++;
    if (s < st->min_right)
        st->min_right = s;
    if (st->thr != LLMC_VERIFY_BARRED && s < st->thr)
        st->thr = s < floor ? floor : s;
    assert(st->wrong == 0 || st->thr == LLMC_VERIFY_BARRED);
}

double llmc_vstate_expected_error(const llmc_vstate_t *st, double prior)
{
    if (st->wrong)
        return 1;
    return prior / (1.0 + st->right);
}

llmc_vdecision_t llmc_verify_decide(const llmc_vstate_t *st, float s, float band, double budget,
                                    double prior)
{
    if (st->thr == LLMC_VERIFY_BARRED)
        return LLMC_VD_NO;
    if (budget > 0 && llmc_vstate_expected_error(st, prior) > budget)
        return LLMC_VD_PROBE; /* not enough evidence yet: learn, at no extra call */
    /* Float noise aside: one wording scores 0.99999994 or 1.0000001 by the
       order of its sums, and a threshold of 1 must not tell them apart. */
    if (s + LLMC_VERIFY_EPS >= st->thr)
        return LLMC_VD_SERVE;
    return s + LLMC_VERIFY_EPS >= st->thr - band ? LLMC_VD_PROBE : LLMC_VD_NO;
}

void llmc_wilson95(uint64_t wrong, uint64_t n, double *lo, double *hi)
{
    const double z = 1.959963984540054;
    if (n == 0) {
        *lo = 0;
        *hi = 1;
        return;
    }
    double p = (double)wrong / (double)n, nn = (double)n, z2 = z * z;
    double centre = (p + z2 / (2 * nn)) / (1 + z2 / nn);
    double half = z * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / (1 + z2 / nn);
    *lo = centre - half < 0 ? 0 : centre - half;
    *hi = centre + half > 1 ? 1 : centre + half;
}

void llmc_vns_init(llmc_vns_t *ns, float start)
{
    *ns = (llmc_vns_t){.start = start};
}

/* A wrong at s: the namespace's new entries start above it. */
static void raise_start(llmc_vns_t *ns, float s)
{
    float up = s + LLMC_VERIFY_WRONG_MARGIN;
    if (up > ns->start)
        ns->start = up > 1.0f ? 1.0f : up;
}

bool llmc_vns_verified(llmc_vns_t *ns, bool right, float s, double budget)
{
    ns->verified++;
    if (!right) {
        ns->wrong++;
        raise_start(ns, s);
    }
    if (budget <= 0 || ns->verified < LLMC_VERIFY_MIN_SAMPLES)
        return false;
    double lo, hi;
    llmc_wilson95(ns->wrong, ns->verified, &lo, &hi);
    bool was = ns->fallback;
    if (!was && lo > budget)
        ns->fallback = true; /* surely over: the whole interval is */
    else if (was && hi <= budget)
        ns->fallback = false; /* surely under again */
    return ns->fallback != was;
}

void llmc_vns_probed(llmc_vns_t *ns, bool right, float s)
{
    ns->probes++;
    if (right)
        return;
    ns->probes_wrong++;
    raise_start(ns, s);
}

double llmc_vns_prior(const llmc_vns_t *ns)
{
    /* The upper end of the 95% interval, not the rate itself: with the
       rate, an entry served as soon as its expected error reached the
       budget, so the served error sat at the budget and went over it in
       half the runs (bench/semantic_verify.py, budget 2%: 1.9-4.1%). */
    double lo, hi;
    llmc_wilson95(ns->probes_wrong, ns->probes, &lo, &hi);
    return hi;
}

bool llmc_vrate_take(llmc_vrate_t *r, int64_t now_ms)
{
    if (r->per_min == 0)
        return false;
    int64_t slice = now_ms / 10000;
    if (slice - r->slice0 >= 6) {
        /* Slide: slots older than the minute leave. */
        int64_t shift = slice - r->slice0 - 5;
        if (shift >= 6)
            memset(r->slots, 0, sizeof(r->slots));
        else {
            memmove(r->slots, r->slots + shift, (size_t)(6 - shift) * sizeof(r->slots[0]));
            memset(r->slots + (6 - shift), 0, (size_t)shift * sizeof(r->slots[0]));
        }
        r->slice0 += shift;
    } else if (slice < r->slice0) {
        slice = r->slice0; /* a clock step back: counted in the oldest slice */
    }
    uint64_t used = 0;
    for (int i = 0; i < 6; i++)
        used += r->slots[i];
    if (used >= r->per_min)
        return false;
    r->slots[slice - r->slice0]++;
    return true;
}

bool llmc_verify_sampled(double rate, uint32_t x)
{
    if (rate <= 0)
        return false;
    if (rate >= 1)
        return true;
    return (double)x < rate * 4294967296.0;
}

int llmc_judge(llmc_judge_t j, struct llmc_lex *lx, float bound, const char *a, size_t alen,
               const char *b, size_t blen)
{
    if (j == LLMC_JUDGE_EXACT)
        return alen == blen && memcmp(a, b, alen) == 0;
    if (j != LLMC_JUDGE_EMBED || !lx)
        return LLMC_EINVAL;
    if (alen == blen && memcmp(a, b, alen) == 0)
        return 1;
    float *va = malloc(2 * LLMC_LEX_DIM * sizeof(float)), *vb = va + LLMC_LEX_DIM;
    if (!va)
        return LLMC_ENOMEM;
    int na = llmc_lex_embed(lx, a, alen, va), nb = na < 0 ? na : llmc_lex_embed(lx, b, blen, vb);
    int rc;
    if (na < 0 || nb < 0)
        rc = LLMC_EINVAL; /* a text too long or not UTF-8: no judgement */
    else if (na == 0 || nb == 0)
        rc = 0; /* one says nothing the embedder reads, the other something */
    else
        rc = llmc_lex_dot(va, vb, LLMC_LEX_DIM) >= bound;
    free(va);
    return rc;
}

int llmc_judge_parse(const char *name)
{
    if (strcmp(name, "embed") == 0)
        return LLMC_JUDGE_EMBED;
    if (strcmp(name, "exact") == 0)
        return LLMC_JUDGE_EXACT;
    if (strcmp(name, "model") == 0)
        return LLMC_JUDGE_MODEL;
    return -1;
}

const char *llmc_judge_name(llmc_judge_t j)
{
    return j == LLMC_JUDGE_EXACT ? "exact" : j == LLMC_JUDGE_MODEL ? "model" : "embed";
}
