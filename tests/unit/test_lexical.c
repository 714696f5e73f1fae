/* Unit tests for the lexical embedder (semantic/lexical.h). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "llmc/error.h"
#include "semantic/lexical.h"

static llmc_lex_t *lx;

static int setup(void **state)
{
    (void)state;
    lx = llmc_lex_new();
    return lx ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    llmc_lex_free(lx);
    return 0;
}

static float sim(const char *a, const char *b)
{
    float va[LLMC_LEX_DIM], vb[LLMC_LEX_DIM];
    assert_true(llmc_lex_embed(lx, a, strlen(a), va) > 0);
    assert_true(llmc_lex_embed(lx, b, strlen(b), vb) > 0);
    return llmc_lex_dot(va, vb, LLMC_LEX_DIM);
}

/* The words of text's tokens, space-separated, fillers in brackets. */
static const char *words(const char *text)
{
    static char buf[1024];
    llmc_lex_toks_t t = {0};
    size_t o = 0;
    assert_int_equal(llmc_lex_tokenize(lx, text, strlen(text), &t), 0);
    buf[0] = '\0';
    for (size_t i = 0; i < t.n; i++) {
        const char *fmt = (t.v[i].flags & LLMC_LEX_FILLER) ? "%s[%s]" : "%s%s";
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, fmt, i ? " " : "", t.v[i].word);
    }
    llmc_lex_toks_free(&t);
    return buf;
}

static void test_normalisation_case_contraction_punctuation(void **state)
{
    (void)state;
    assert_true(sim("What's the capital of France?", "what is the capital of france") > 0.9f);
    assert_true(sim("  WHAT   IS the capital\tof FRANCE!!! ", "what is the capital of france") > 0.99f);
    /* Curly apostrophe and full-width letters fold like their ASCII forms. */
    assert_string_equal(words("What\xe2\x80\x99s \xef\xbc\xa6rance"), "what [is] france");
    assert_string_equal(words("Isn't it? I can't, won't."), "[is] not it i can not will not");
    assert_string_equal(words("France's capital"), "france capital");
    assert_string_equal(words("cannot"), "can not");
}

static void test_canonical_words(void **state)
{
    (void)state;
    assert_string_equal(words("my favourite colours"), "my favorite colors");
    assert_string_equal(words("organising the centre"), "organizing [the] center");
    assert_string_equal(words("two apples, the third"), "2 apples [the] 3rd");
    assert_string_equal(words("one second"), "one second");
    assert_string_equal(words("the second law"), "[the] 2nd law");
    assert_string_equal(words("ok so thank you"), "[ok] [so] [thank] [you]");
    assert_string_equal(words("costs 1,000.50 $ or 3.5%"), "costs 1000.50 $ or 3.5 %");
    assert_string_equal(words("Can you tell me please"), "[can] [you] [tell] [me] [please]");
    /* "you" alone is not a filler. */
    assert_string_equal(words("what do you think"), "what [do] you think");
}

static void test_flags_and_stems(void **state)
{
    (void)state;
    llmc_lex_toks_t t = {0};
    const char *s = "never running 42";
    assert_int_equal(llmc_lex_tokenize(lx, s, strlen(s), &t), 0);
    assert_int_equal(t.n, 3);
    assert_true(t.v[0].flags & LLMC_LEX_NEG);
    assert_string_equal(t.v[1].stem, "run");
    assert_true(t.v[2].flags & LLMC_LEX_NUM);
    assert_false(t.v[1].flags & (LLMC_LEX_NEG | LLMC_LEX_NUM | LLMC_LEX_FILLER));
    llmc_lex_toks_free(&t);
}

/* Two long words that share their first LLMC_LEX_TOKMAX bytes stay apart. */
static void test_long_words_never_collide(void **state)
{
    (void)state;
    char a[200], b[200];
    llmc_lex_toks_t ta = {0}, tb = {0};
    memset(a, 'x', 120);
    memcpy(b, a, 120);
    a[119] = 'y';
    a[120] = b[120] = '\0';
    assert_int_equal(llmc_lex_tokenize(lx, a, 120, &ta), 0);
    assert_int_equal(llmc_lex_tokenize(lx, b, 120, &tb), 0);
    assert_int_equal(ta.n, 1);
    assert_true(strlen(ta.v[0].word) < LLMC_LEX_TOKMAX);
    assert_string_not_equal(ta.v[0].word, tb.v[0].word);
    assert_string_not_equal(ta.v[0].stem, tb.v[0].stem);
    llmc_lex_toks_free(&ta);
    llmc_lex_toks_free(&tb);
}

static void test_deterministic_and_normalised(void **state)
{
    (void)state;
    const char *q = "How do I reverse a linked list in C?";
    float v1[LLMC_LEX_DIM], v2[LLMC_LEX_DIM];
    llmc_lex_t *other = llmc_lex_new();
    assert_true(llmc_lex_embed(lx, q, strlen(q), v1) > 0);
    assert_true(llmc_lex_embed(other, q, strlen(q), v2) > 0);
    assert_memory_equal(v1, v2, sizeof(v1));
    assert_true(fabsf(llmc_lex_dot(v1, v1, LLMC_LEX_DIM) - 1.0f) < 1e-4f);
    /* A fixed seed: the same text gives the same vector in every build.
       These two components were recorded once; a change in the hash, the
       tables or the weights shows here (and invalidates stored vectors). */
    assert_true(fabsf(v1[0] - 0.0543809831f) < 1e-5f);
    assert_true(fabsf(v1[100] - 0.150301099f) < 1e-5f);
    assert_true(v1[7] == 0.0f);
    llmc_lex_free(other);
}

static void test_similar_above_dissimilar(void **state)
{
    (void)state;
    const char *q = "how do I reverse a list in python";
    float near = sim(q, "how to reverse a python list");
    float typo = sim(q, "how do I reverse a lists in pyhton");
    float far = sim(q, "what is the best bread recipe");
    float sharing = sim(q, "how do I sort a list in java");
    assert_true(near > sharing);
    assert_true(typo > sharing);
    assert_true(sharing > far);
    assert_true(far < 0.3f);
    assert_true(sim("colour of the sky", "color of the sky") > 0.99f);
}

static void test_empty_and_filler_only(void **state)
{
    (void)state;
    float v[LLMC_LEX_DIM];
    assert_int_equal(llmc_lex_embed(lx, "", 0, v), 0);
    for (int i = 0; i < LLMC_LEX_DIM; i++)
        assert_true(v[i] == 0.0f);
    assert_int_equal(llmc_lex_embed(lx, "  ?!  ", 6, v), 0);
    assert_int_equal(llmc_lex_embed(lx, "please, the", 11, v), 0);
    assert_true(llmc_lex_dot(v, v, LLMC_LEX_DIM) == 0.0f);
}

static void test_bad_input(void **state)
{
    (void)state;
    float v[LLMC_LEX_DIM];
    static char big[LLMC_LEX_MAX_TEXT + 2];
    assert_int_equal(llmc_lex_embed(lx, "ab\xff\xfe", 4, v), LLMC_EINVAL);
    memset(big, 'a', sizeof(big) - 1);
    assert_int_equal(llmc_lex_embed(lx, big, sizeof(big) - 1, v), LLMC_E2BIG);
    assert_true(llmc_lex_embed(lx, big, LLMC_LEX_MAX_TEXT, v) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalisation_case_contraction_punctuation),
        cmocka_unit_test(test_canonical_words),
        cmocka_unit_test(test_flags_and_stems),
        cmocka_unit_test(test_long_words_never_collide),
        cmocka_unit_test(test_deterministic_and_normalised),
        cmocka_unit_test(test_similar_above_dissimilar),
        cmocka_unit_test(test_empty_and_filler_only),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
