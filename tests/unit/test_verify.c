/* Unit tests for measured semantic correctness (semantic/verify.h). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "llmc/error.h"
#include "semantic/judge.h"
#include "semantic/lexical.h"
#include "semantic/verify.h"

/* A new entry serves only at its conservative start; under it, a band of
   probes; under that, nothing. */
static void test_decide_start(void **state)
{
    (void)state;
    llmc_vstate_t st;
    llmc_vstate_init(&st, 0.9f);
    assert_int_equal(llmc_verify_decide(&st, 0.95f, 0.1f, 0, 0), LLMC_VD_SERVE);
    assert_int_equal(llmc_verify_decide(&st, 0.90f, 0.1f, 0, 0), LLMC_VD_SERVE);
    assert_int_equal(llmc_verify_decide(&st, 0.85f, 0.1f, 0, 0), LLMC_VD_PROBE);
    assert_int_equal(llmc_verify_decide(&st, 0.79f, 0.1f, 0, 0), LLMC_VD_NO);
    assert_int_equal(llmc_verify_decide(&st, 0.85f, 0.0f, 0, 0), LLMC_VD_NO);
}

/* With a budget an entry serves only once its expected error, prior / (1 +
   rights), is within it; until then every candidate is a probe. */
static void test_decide_evidence(void **state)
{
    (void)state;
    llmc_vstate_t st;
    llmc_vstate_init(&st, 0.9f);
    /* 4% of probes wrong in the namespace, 1% budget: 3 rights needed. */
    double prior = 0.04;
    assert_int_equal(llmc_verify_decide(&st, 1.0f, 0.1f, 0.01, prior), LLMC_VD_PROBE);
    for (int i = 0; i < 2; i++)
        llmc_vstate_learn(&st, 1.0f, true, 0.7f);
    assert_int_equal(llmc_verify_decide(&st, 1.0f, 0.1f, 0.01, prior), LLMC_VD_PROBE);
    llmc_vstate_learn(&st, 1.0f, true, 0.7f);
    assert_true(fabs(llmc_vstate_expected_error(&st, prior) - 0.01) < 1e-12);
    assert_int_equal(llmc_verify_decide(&st, 1.0f, 0.1f, 0.01, prior), LLMC_VD_SERVE);
    /* A looser budget serves sooner; the threshold still applies. */
    llmc_vstate_t fresh;
    llmc_vstate_init(&fresh, 0.9f);
    assert_int_equal(llmc_verify_decide(&fresh, 0.95f, 0.1f, 0.05, prior), LLMC_VD_SERVE);
    assert_int_equal(llmc_verify_decide(&fresh, 0.85f, 0.1f, 0.05, prior), LLMC_VD_PROBE);
    /* The namespace's prior: the upper end of the probes' wrong rate's
       95% interval, 1 with none. */
    llmc_vns_t ns;
    llmc_vns_init(&ns, 0.9f);
    assert_true(llmc_vns_prior(&ns) == 1.0);
    for (int i = 0; i < 99; i++)
        llmc_vns_probed(&ns, i % 33 != 0, 0.95f);
    double lo, hi;
    llmc_wilson95(3, 99, &lo, &hi);
    assert_true(llmc_vns_prior(&ns) == hi);
    assert_true(hi > 3.0 / 99 && hi < 0.09); /* above the rate, by its uncertainty */
}

/* Rights bring the threshold down to the lowest verified, never below the
   floor; a wrong bars the entry at every similarity, for good. */
static void test_learn(void **state)
{
    (void)state;
    llmc_vstate_t st;
    llmc_vstate_init(&st, 0.9f);
    llmc_vstate_learn(&st, 0.84f, true, 0.7f);
    assert_true(fabsf(st.thr - 0.84f) < 1e-6f);
    assert_int_equal(llmc_verify_decide(&st, 0.84f, 0.1f, 0, 0), LLMC_VD_SERVE);
    llmc_vstate_learn(&st, 0.95f, true, 0.7f); /* a higher right changes nothing */
    assert_true(fabsf(st.thr - 0.84f) < 1e-6f);
    llmc_vstate_learn(&st, 0.5f, true, 0.7f);
    assert_true(fabsf(st.thr - 0.7f) < 1e-6f);
    assert_int_equal(st.right, 3);
    llmc_vstate_learn(&st, 0.8f, false, 0.7f);
    assert_int_equal(st.wrong, 1);
    assert_int_equal(llmc_verify_decide(&st, 1.0f, 0.1f, 0, 0), LLMC_VD_NO);
    assert_int_equal(llmc_verify_decide(&st, 0.75f, 0.1f, 0.5, 0), LLMC_VD_NO);
    llmc_vstate_learn(&st, 0.99f, true, 0.7f); /* rights after it do not lift the bar */
    assert_int_equal(llmc_verify_decide(&st, 1.0f, 0.1f, 0, 0), LLMC_VD_NO);
}

/* Known values of the Wilson interval (z = 1.96). */
static void test_wilson(void **state)
{
    (void)state;
    double lo, hi;
    llmc_wilson95(0, 0, &lo, &hi);
    assert_true(lo == 0 && hi == 1);
    llmc_wilson95(0, 10, &lo, &hi);
    assert_true(lo == 0 && fabs(hi - 0.2775) < 1e-3);
    llmc_wilson95(5, 10, &lo, &hi);
    assert_true(fabs(lo - 0.2366) < 1e-3 && fabs(hi - 0.7634) < 1e-3);
    llmc_wilson95(10, 10, &lo, &hi);
    assert_true(fabs(lo - 0.7225) < 1e-3 && fabs(hi - 1) < 1e-9);
    llmc_wilson95(10, 1000, &lo, &hi);
    assert_true(lo < 0.01 && hi > 0.01 && fabs(lo - 0.00544) < 1e-3 && fabs(hi - 0.01831) < 1e-3);
}

/* The namespace falls back once its interval is wholly over the budget,
   says so once, and comes back only when the upper bound is under it. */
static void test_fallback_hysteresis(void **state)
{
    (void)state;
    llmc_vns_t ns;
    llmc_vns_init(&ns, 0.9f);
    int changes = 0;
    /* 3 wrong in 19: under LLMC_VERIFY_MIN_SAMPLES, no judgement yet. */
    for (int i = 0; i < 19; i++)
        changes += llmc_vns_verified(&ns, i % 6 != 0 || i == 18, 0.95f, 0.01);
    assert_false(ns.fallback);
    assert_int_equal(changes, 0);
    changes += llmc_vns_verified(&ns, false, 0.95f, 0.01); /* 4 of 20: lo ~0.08 > 0.01 */
    assert_true(ns.fallback);
    assert_int_equal(changes, 1);
    /* Rights bring the estimate down; it stays fallen back while hi > 1%. */
    uint64_t n = 0;
    while (ns.fallback && n < 100000) {
        changes += llmc_vns_verified(&ns, true, 0.95f, 0.01);
        n++;
        double lo, hi;
        llmc_wilson95(ns.wrong, ns.verified, &lo, &hi);
        if (ns.fallback)
            assert_true(hi > 0.01);
    }
    assert_false(ns.fallback);
    assert_int_equal(changes, 2);
    assert_true(n > 300); /* 4 wrong need hundreds of rights to bound 1% */
    /* No budget: measured, never fallen back. */
    llmc_vns_t free_ns;
    llmc_vns_init(&free_ns, 0.9f);
    for (int i = 0; i < 100; i++)
        assert_false(llmc_vns_verified(&free_ns, false, 0.9f, 0));
    assert_false(free_ns.fallback);
    assert_int_equal(free_ns.wrong, 100);
}

/* A wrong (probe or verified) raises where new entries start, up to 1. */
static void test_start_rises(void **state)
{
    (void)state;
    llmc_vns_t ns;
    llmc_vns_init(&ns, 0.8f);
    llmc_vns_probed(&ns, true, 0.85f);
    assert_true(fabsf(ns.start - 0.8f) < 1e-6f);
    llmc_vns_probed(&ns, false, 0.85f);
    assert_true(fabsf(ns.start - 0.87f) < 1e-6f);
    llmc_vns_probed(&ns, false, 0.8f); /* lower: no change */
    assert_true(fabsf(ns.start - 0.87f) < 1e-6f);
    llmc_vns_verified(&ns, false, 0.995f, 0);
    assert_true(ns.start == 1.0f);
    assert_int_equal(ns.probes, 3);
    assert_int_equal(ns.probes_wrong, 2);
    assert_int_equal(ns.verified, 1);
}

/* At most per_min calls in any minute; the minute slides. */
static void test_rate(void **state)
{
    (void)state;
    llmc_vrate_t r = {.per_min = 5};
    int64_t t0 = 1700000000000;
    int ok = 0;
    for (int i = 0; i < 20; i++)
        ok += llmc_vrate_take(&r, t0 + i * 100);
    assert_int_equal(ok, 5);
    /* 30 s on: the same minute. */
    assert_false(llmc_vrate_take(&r, t0 + 30000));
    /* 61 s on: the first calls' slice has left. */
    ok = 0;
    for (int i = 0; i < 20; i++)
        ok += llmc_vrate_take(&r, t0 + 61000 + i);
    assert_int_equal(ok, 5);
    /* Any 60 s window holds at most 5, over a long run at 1 call a second. */
    llmc_vrate_t r2 = {.per_min = 5};
    int64_t when[2000];
    int nw = 0;
    for (int i = 0; i < 2000; i++)
        if (llmc_vrate_take(&r2, t0 + (int64_t)i * 1000))
            when[nw++] = t0 + (int64_t)i * 1000;
    for (int i = 0; i + 5 < nw; i++)
        assert_true(when[i + 5] - when[i] >= 50000); /* 6 calls span at least 5 slices */
    assert_true(nw >= 2000 / 60 * 5 - 5);
    llmc_vrate_t none = {0};
    assert_false(llmc_vrate_take(&none, t0));
}

static void test_sampled(void **state)
{
    (void)state;
    uint32_t x = 12345;
    int n = 0;
    for (int i = 0; i < 100000; i++) {
        x = x * 1664525u + 1013904223u;
        n += llmc_verify_sampled(0.1, x);
    }
    assert_true(n > 9500 && n < 10500);
    assert_false(llmc_verify_sampled(0, 0));
    assert_true(llmc_verify_sampled(1, 0xffffffffu));
}

static void test_judges(void **state)
{
    (void)state;
    llmc_lex_t *lx = llmc_lex_new();
    assert_non_null(lx);
    const char *a = "The capital of France is Paris.";
    const char *b = "Paris is the capital of France.";
    const char *c = "Photosynthesis turns light into chemical energy.";
    assert_int_equal(llmc_judge(LLMC_JUDGE_EXACT, NULL, 0, a, strlen(a), a, strlen(a)), 1);
    assert_int_equal(llmc_judge(LLMC_JUDGE_EXACT, NULL, 0, a, strlen(a), b, strlen(b)), 0);
    assert_int_equal(llmc_judge(LLMC_JUDGE_EMBED, lx, 0.8f, a, strlen(a), b, strlen(b)), 1);
    assert_int_equal(llmc_judge(LLMC_JUDGE_EMBED, lx, 0.8f, a, strlen(a), c, strlen(c)), 0);
    assert_int_equal(llmc_judge(LLMC_JUDGE_EMBED, lx, 0.8f, a, strlen(a), "", 0), 0);
    assert_int_equal(llmc_judge(LLMC_JUDGE_EMBED, lx, 0.8f, a, strlen(a), "\xff\xfe", 2),
                     LLMC_EINVAL);
    assert_int_equal(llmc_judge_parse("embed"), LLMC_JUDGE_EMBED);
    assert_int_equal(llmc_judge_parse("exact"), LLMC_JUDGE_EXACT);
    assert_int_equal(llmc_judge_parse("model"), LLMC_JUDGE_MODEL);
    assert_int_equal(llmc_judge_parse("llm"), -1);
    assert_int_equal(llmc_judge(LLMC_JUDGE_MODEL, lx, 0.8f, a, strlen(a), a, strlen(a)),
                     LLMC_EINVAL); /* asynchronous: semantic/judge.h */
    assert_string_equal(llmc_judge_name(LLMC_JUDGE_EXACT), "exact");
    llmc_lex_free(lx);
}

/* The judge model's answer: its first word, case aside; anything else is
   no judgement. */
static void test_judge_model_parse(void **state)
{
    (void)state;
    bool same = false;
    uint64_t tokens = 0;
    const char *yes = "{\"choices\":[{\"message\":{\"content\":\" Yes.\"}}],"
                      "\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":1}}";
    assert_int_equal(llmc_judge_model_parse(yes, strlen(yes), &same, &tokens), 0);
    assert_true(same);
    assert_int_equal(tokens, 41);
    const char *no = "{\"choices\":[{\"message\":{\"content\":\"NO\"}}]}";
    assert_int_equal(llmc_judge_model_parse(no, strlen(no), &same, &tokens), 0);
    assert_false(same);
    assert_int_equal(tokens, 0);
    const char *bad[] = {
        "{\"choices\":[{\"message\":{\"content\":\"Nope\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"yesterday\"}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"Maybe\"}}]}",
        "{\"choices\":[]}", "not json", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(llmc_judge_model_parse(bad[i], strlen(bad[i]), &same, &tokens),
                         LLMC_EBADRESP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide_start),  cmocka_unit_test(test_decide_evidence),
        cmocka_unit_test(test_learn),
        cmocka_unit_test(test_wilson),        cmocka_unit_test(test_fallback_hysteresis),
        cmocka_unit_test(test_start_rises),   cmocka_unit_test(test_rate),
        cmocka_unit_test(test_sampled),       cmocka_unit_test(test_judges),
        cmocka_unit_test(test_judge_model_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
