/*
 * semantic/verify.h: measured semantic correctness (issue 16). What the
 * semantic tier learns from verified outcomes, and the decisions it takes
 * from them. Pure: no server header, no globals, no clock (times are passed
 * in), no locks (the tier holds its own).
 *
 * A verified outcome is a pair (similarity s at which a cached answer was
 * matched to a new question, whether the model's own answer to that
 * question was judged equivalent). Outcomes come from two places:
 * - sampled hits: a served semantic hit is sent to the model in the
 *   background and the answers compared (--semantic-verify RATE);
 * - probes: a candidate in the uncertain band just below its entry's
 *   threshold is NOT served; the request misses, and the model's answer
 *   (which the miss fetches anyway) is compared with the candidate's. A
 *   probe costs no extra call and risks no wrong answer.
 *
 * With a budget, an entry serves only once its expected error is within
 * it: its wrong probability is taken as a Beta posterior whose prior mean
 * is the namespace's probe wrong rate (how often an unverified match turns
 * out wrong) with the weight of one outcome, so after r rights it is
 * prior / (1 + r). Until then every candidate for it is a probe: the
 * request misses (it needed the model anyway) and the entry learns.
 *
 * Per entry (llmc_vstate_t) the threshold starts conservative (start) and
 * comes down to the lowest similarity verified right, never below the floor
 * (the tier's global threshold). One verified wrong bars the entry from
 * answering by similarity for good: its answer is specific to its own
 * question. A wrong seen at s also teaches the namespace, whose start
 * threshold for new entries rises above s.
 *
 * Per namespace (llmc_vns_t) the served hits that were verified give the
 * measured wrong-hit rate and its Wilson 95% interval. With a budget
 * (--semantic-max-error), a namespace whose interval lies wholly above the
 * budget falls back to exact-only; it comes back once its upper bound is
 * under the budget again (hysteresis: one noisy sample cannot flip it).
 */
#ifndef LLMC_SEMANTIC_VERIFY_H
#define LLMC_SEMANTIC_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A barred entry's threshold: above any cosine. */
#define LLMC_VERIFY_BARRED 2.0f
/* How far above the highest wrong similarity a namespace's start goes. */
#define LLMC_VERIFY_WRONG_MARGIN 0.02f
/* Similarities this close compare equal (float noise of a cosine). */
#define LLMC_VERIFY_EPS 1e-5f
/* Outcomes a namespace needs before its interval may make it fall back. */
#define LLMC_VERIFY_MIN_SAMPLES 20

/* What one cached entry has learned. Zero is not valid: llmc_vstate_init. */
typedef struct llmc_vstate {
    float thr;       /* serve at or above this similarity; LLMC_VERIFY_BARRED: never */
    float min_right; /* lowest similarity verified right; 2: none */
    float max_wrong; /* highest similarity verified wrong; -1: none */
    uint32_t right, wrong;
} llmc_vstate_t;

/* The decision for one candidate. */
typedef enum llmc_vdecision {
    LLMC_VD_NO,    /* not an answer to this question */
    LLMC_VD_PROBE, /* uncertain: miss, and compare the model's answer with the candidate's */
    LLMC_VD_SERVE, /* serve it */
} llmc_vdecision_t;

/* How the two answers are compared. */
typedef enum llmc_judge {
    LLMC_JUDGE_EMBED, /* the answers' lexical embeddings' cosine >= the bound */
    LLMC_JUDGE_EXACT, /* the answer texts equal (classification-like answers) */
    LLMC_JUDGE_MODEL, /* a judge model asked (semantic/judge.h: not here, it calls out) */
} llmc_judge_t;

void llmc_vstate_init(llmc_vstate_t *st, float start);

/* An outcome at similarity s: right lowers the threshold to s (never below
   floor); wrong bars the entry. */
void llmc_vstate_learn(llmc_vstate_t *st, float s, bool right, float floor);

/* Serve, probe or refuse a candidate at similarity s (guards passed, s at
   or above the global threshold) for st's entry, under budget (the wrong
   fraction allowed; 0: no evidence asked) with prior (the namespace's
   llmc_vns_prior). band: the width of the uncertain band under the entry's
   threshold. */
llmc_vdecision_t llmc_verify_decide(const llmc_vstate_t *st, float s, float band, double budget,
                                    double prior);

/* The expected wrong probability of serving st's entry (see the top). */
double llmc_vstate_expected_error(const llmc_vstate_t *st, double prior);

/* The Wilson score interval (z = 1.96) of wrong out of n: *lo, *hi in
   [0, 1]; n 0 gives [0, 1]. */
void llmc_wilson95(uint64_t wrong, uint64_t n, double *lo, double *hi);

/* A namespace's measurement. Zero-initialise, then llmc_vns_init. */
typedef struct llmc_vns {
    uint64_t hits;      /* semantic hits served */
    uint64_t verified;  /* served hits verified (sampled) */
    uint64_t wrong;     /* of them, judged wrong */
    uint64_t probes;    /* probes compared (uncertain band, not served) */
    uint64_t probes_wrong;
    uint64_t calls;     /* background calls made to verify */
    uint64_t tokens;    /* their tokens (prompt + completion) */
    float start;        /* the threshold a new entry starts at */
    bool fallback;      /* exact-only: the measured error is over the budget */
} llmc_vns_t;

void llmc_vns_init(llmc_vns_t *ns, float start);

/* Counts one verified served hit. With budget > 0, re-judges the fallback;
   true when it changed (the caller logs it once). */
bool llmc_vns_verified(llmc_vns_t *ns, bool right, float s, double budget);

/* Counts one probe; a wrong one raises the namespace's start above s
   (never above 1). */
void llmc_vns_probed(llmc_vns_t *ns, bool right, float s);

/* How often an unverified match may turn out wrong here: the upper end
   of the Wilson 95% interval of the probes' wrong rate (1 with none yet),
   so that the budget holds with the rate's uncertainty, not on average. */
double llmc_vns_prior(const llmc_vns_t *ns);

/* A per-minute budget of calls, over a sliding minute made of 6 slices. */
typedef struct llmc_vrate {
    uint32_t per_min;
    int64_t slice0;      /* the slice index of slots[0]'s time, in 10 s units */
    uint32_t slots[6];
} llmc_vrate_t;

/* true, counting one call, when a call at now_ms fits; per_min 0: never. */
bool llmc_vrate_take(llmc_vrate_t *r, int64_t now_ms);

/* Whether a sample falls in rate (0..1): x is a uniform draw in [0, 2^32). */
bool llmc_verify_sampled(double rate, uint32_t x);

/* Judges two answers: 1 equivalent, 0 not, LLMC_EINVAL when a text cannot
   be judged (not UTF-8, too long) or j is the model judge (asynchronous:
   semantic/judge.h). embed needs lx (a lexical embedder of the caller's
   thread) and bound; exact needs neither. */
struct llmc_lex;
int llmc_judge(llmc_judge_t j, struct llmc_lex *lx, float bound, const char *a, size_t alen,
               const char *b, size_t blen);

/* "embed", "exact", "model" -> the judge; -1 when unknown. */
int llmc_judge_parse(const char *name);
const char *llmc_judge_name(llmc_judge_t j);

#endif
