/* Unit tests for the guards against wrong semantic hits (semantic/guard.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "llmc/error.h"
#include "semantic/guard.h"

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

/* The guard that rejects a against b (-1: all pass), checked to be the same
   both ways round. */
static int verdict(const char *a, const char *b)
{
    llmc_guard_q_t *qa, *qb;
    char why_ab[LLMC_GUARD_REASON] = "", why_ba[LLMC_GUARD_REASON] = "";
    assert_int_equal(llmc_guard_q_new(lx, a, strlen(a), &qa), 0);
    assert_int_equal(llmc_guard_q_new(lx, b, strlen(b), &qb), 0);
    int ab = llmc_guard_check(qa, qb, why_ab), ba = llmc_guard_check(qb, qa, why_ba);
    if (ab != ba)
        fprintf(stderr, "asymmetric: %d (%s) vs %d (%s)\n", ab, why_ab, ba, why_ba);
    assert_int_equal(ab, ba);
    if (ab >= 0)
        fprintf(stderr, "   %-12s %-45s | %s\n", llmc_guard_name(ab), why_ab, b);
    llmc_guard_q_free(qa);
    llmc_guard_q_free(qb);
    return ab;
}

#define PASSES(a, b) assert_int_equal(verdict(a, b), -1)
#define REJECTS(g, a, b) assert_int_equal(verdict(a, b), LLMC_GUARD_##g)

static void test_near_duplicates_pass(void **state)
{
    (void)state;
    const char *q = "What is the capital of France?";
    PASSES(q, "what is the capital of france");                      /* case */
    PASSES(q, "What is the capital of France");                      /* punctuation */
    PASSES(q, "  what   is the capital  of France ?? ");             /* spacing */
    PASSES(q, "What's the capital of France?");                      /* contraction */
    PASSES(q, "Hey, can you tell me what the capital of France is?"); /* filler */
    PASSES(q, "Please, what is France's capital?");                  /* filler, possessive */
    PASSES("Why doesn't my code compile?", "why does my code not compile");
    PASSES("What is the best colour for a living room?",
           "what is the best color for a living room");               /* British/American */
    PASSES("How do I optimise my SQL queries", "how do I optimize my sql query");
    PASSES("In Python, how do I reverse a list?", "How do I reverse a list in Python?");
    PASSES("how to sort lists in python", "How to sort a list in Python?"); /* inflection */
    PASSES("What does HashMap do in Java?", "what does hashmap do in java");
    PASSES("What is 3.50 times 2?", "what is 3.5 times two");
    PASSES("what's the users' role here", "What is the users' role here?"); /* no quote */
    PASSES("Translate \"good morning\" to French", "translate \"good morning\" to french please");
}

static void test_numbers_and_units(void **state)
{
    (void)state;
    REJECTS(NUMBERS, "What is 15% of 200?", "What is 15% of 300?");
    REJECTS(NUMBERS, "Convert 5 km to miles", "Convert 5 miles to km");
    REJECTS(NUMBERS, "How long is 10 minutes in seconds", "How long is 10 hours in seconds");
    REJECTS(NUMBERS, "Is $5 a lot", "Is 5 euros a lot");
    REJECTS(NUMBERS, "Who was the first president of the USA?",
            "Who was the third president of the USA?");               /* ordinal */
    REJECTS(NUMBERS, "what happened in 1969", "what happened in 1968");
    REJECTS(NUMBERS, "is 5 bigger than 3", "is 3 bigger than 5");      /* order counts */
    REJECTS(NUMBERS, "what is 7 times 8", "what is 7 times");
    PASSES("is 5km far", "is 5 kilometres far");
    PASSES("what is 1,000 divided by 8", "What is 1000 divided by 8?");
}

static void test_quotes_and_code(void **state)
{
    (void)state;
    REJECTS(QUOTES, "How do I grep for \"foo\" in files?", "how do I grep for \"bar\" in files");
    REJECTS(QUOTES, "What does 'hello' mean?", "What does 'Hello' mean?");  /* exact */
    REJECTS(QUOTES, "translate \xe2\x80\x9cgood night\xe2\x80\x9d", "translate \"good morning\"");
    PASSES("translate \xe2\x80\x9cgood night\xe2\x80\x9d", "Translate \"good night\"");
    REJECTS(CODE, "What does `ls -la` do?", "What does `ls -l` do?");
    REJECTS(CODE, "Fix ```x = 1``` please", "Fix ```x = 2``` please");
    PASSES("What does `ls -la` do?", "what does ` ls -la ` do");
}

static void test_urls_and_identifiers(void **state)
{
    (void)state;
    REJECTS(IDENTS, "Summarise https://example.com/a", "Summarize https://example.com/b");
    REJECTS(IDENTS, "What does getUserById return?", "What does getUserByName return?");
    REJECTS(IDENTS, "How do I read /etc/hosts", "how do I read /etc/passwd");
    REJECTS(IDENTS, "what does max_retries do", "what does max_retry do");
    REJECTS(IDENTS, "what does rm -rf do", "what does rm -r do");
    REJECTS(IDENTS, "Is HashMap thread safe?", "Is HashSet thread safe?");
    PASSES("Summarise https://example.com/a.", "summarize https://example.com/a");
    PASSES("how do I use os.path.join", "How do I use os.path.join?");
}

static void test_negation_and_antonyms(void **state)
{
    (void)state;
    REJECTS(NEGATION, "Why is my code not working?", "Why is my code working?");
    REJECTS(NEGATION, "Can I run it without root?", "Can I run it with root?");
    REJECTS(NEGATION, "Why doesn't it start", "Why does it start");
    REJECTS(NEGATION, "How do I enable 2FA on GitHub?", "How do I disable 2FA on GitHub?");
    REJECTS(NEGATION, "How do I turn on dark mode", "how do I turn off dark mode");
    REJECTS(NEGATION, "sort in ascending order", "sort in descending order");
    REJECTS(NEGATION, "What should I eat before a run", "What should I eat after a run");
    PASSES("Why isn't it working?", "why is it not working");
    PASSES("How do I enable 2FA?", "how do I enable 2fa");
}

static void test_content_words(void **state)
{
    (void)state;
    REJECTS(CONTENT, "What is the capital of France?", "What is the capital of Germany?");
    REJECTS(CONTENT, "Who is the president of France", "Who was the president of France");
    REJECTS(CONTENT, "best pizza in Rome", "best pizza in Rome for kids");
    REJECTS(CONTENT, "what do you think of Rust", "what do I think of Rust");
    REJECTS(CONTENT, "how do I cook rice", "how do I cook brown rice");
    REJECTS(CONTENT, "why is the sky blue", "how is the sky blue");
}

static void test_roles(void **state)
{
    (void)state;
    REJECTS(ROLES, "Translate English to French: hello", "Translate French to English: hello");
    REJECTS(ROLES, "flights from London to Paris", "flights from Paris to London");
    REJECTS(ROLES, "Is a cat bigger than a dog?", "Is a dog bigger than a cat?");
    REJECTS(ROLES, "convert a string to an int in Go", "convert an int to a string in Go");
    REJECTS(ROLES, "Python vs Java for beginners", "Java vs Python for beginners");
    /* Regression (bench/semantic_pairs.tsv): a determiner is not the object. */
    REJECTS(ROLES, "How do I copy files from my phone to my laptop?",
            "How do I copy files from my laptop to my phone?");
    PASSES("translate to French from English: hello", "translate from English to French: hello");
}

static void test_order(void **state)
{
    (void)state;
    REJECTS(ORDER, "Can dogs eat chocolate?", "Can chocolate eat dogs?");
    REJECTS(ORDER, "Why do cats chase mice?", "Why do mice chase cats?");
    REJECTS(ORDER, "Does Alice love Bob?", "Does Bob love Alice?");
    REJECTS(ORDER, "list files sort names", "sort names list files files"); /* repeated */
    /* One phrase moved is the same question. */
    PASSES("In SQL Server, how do I join two tables?", "How do I join two tables in SQL Server?");
    PASSES("Why doesn't my code compile?", "why does my code not compile");
    PASSES("During winter, why do pipes freeze?", "Why do pipes freeze during winter?");
    PASSES("", "please");
    /* Regression (fuzz_semantic): a long question is the same as itself. */
    char longq[2048] = "";
    for (int i = 0; i < 60; i++)
        snprintf(longq + strlen(longq), sizeof(longq) - strlen(longq), "word%c%c ", 'a' + i % 26,
                 'a' + i / 26);
    PASSES(longq, longq);
    REJECTS(CONTENT, longq, "worda");
}

static void test_names_and_bad_input(void **state)
{
    (void)state;
    llmc_guard_q_t *q = NULL;
    assert_string_equal(llmc_guard_name(LLMC_GUARD_NUMBERS), "numbers");
    assert_string_equal(llmc_guard_name(LLMC_GUARD_ROLES), "roles");
    assert_string_equal(llmc_guard_name(LLMC_GUARD_ORDER), "order");
    assert_string_equal(llmc_guard_name(LLMC_GUARD_N), "?");
    assert_int_equal(llmc_guard_q_new(lx, "\xff", 1, &q), LLMC_EINVAL);
    assert_null(q);
    /* An empty question against an empty one: nothing differs. */
    PASSES("", "");
    REJECTS(CONTENT, "", "world");
    /* llmc_guard_one runs one guard alone, with or without a reason. */
    llmc_guard_q_t *a, *b;
    assert_int_equal(llmc_guard_q_new(lx, "5 km", 4, &a), 0);
    assert_int_equal(llmc_guard_q_new(lx, "5 mi", 4, &b), 0);
    char why[LLMC_GUARD_REASON];
    assert_false(llmc_guard_one(LLMC_GUARD_NUMBERS, a, b, why));
    assert_string_equal(why, "numbers differ: \"5 km\" vs \"5 mi\"");
    assert_false(llmc_guard_one(LLMC_GUARD_NUMBERS, a, b, NULL));
    assert_true(llmc_guard_one(LLMC_GUARD_QUOTES, a, b, NULL));
    assert_false(llmc_guard_one(-1, a, b, NULL));
    llmc_guard_q_free(a);
    llmc_guard_q_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_near_duplicates_pass),
        cmocka_unit_test(test_numbers_and_units),
        cmocka_unit_test(test_quotes_and_code),
        cmocka_unit_test(test_urls_and_identifiers),
        cmocka_unit_test(test_negation_and_antonyms),
        cmocka_unit_test(test_content_words),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_names_and_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
