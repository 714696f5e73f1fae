/*
 * test_bymodel.c: counters by route and model (src/gateway/bymodel.c): the
 * cap on models told apart ("other"), money from the price table (per model
 * even under "other"), long names cut whole, and writers adding the same
 * names at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "gateway/bymodel.h"

typedef struct seen {
    unsigned n;
    struct {
        char route[64], model[LLMC_BYMODEL_NAME_MAX + 1];
        bool priced;
        llmc_bymodel_row_t row;
    } r[64];
} seen_t;

static void collect(void *arg, const char *route, const char *model, bool priced,
                    const llmc_bymodel_row_t *row)
{
    seen_t *s = arg;
    assert_true(s->n < 64);
    snprintf(s->r[s->n].route, sizeof(s->r[s->n].route), "%s", route);
    snprintf(s->r[s->n].model, sizeof(s->r[s->n].model), "%s", model);
    s->r[s->n].priced = priced;
    s->r[s->n].row = *row;
    s->n++;
}

static const llmc_bymodel_row_t *find(const seen_t *s, const char *route, const char *model)
{
    for (unsigned i = 0; i < s->n; i++)
        if (!strcmp(s->r[i].route, route) && !strcmp(s->r[i].model, model))
            return &s->r[i].row;
    return NULL;
}

static llmc_prices_t *prices(const char *text)
{
    llmc_prices_t *p;
    char err[128];
    assert_int_equal(llmc_prices_parse(text, strlen(text), &p, err, sizeof(err)), 0);
    return p;
}

static void test_models_beyond_the_cap_fold_into_other_priced_each(void **state)
{
    (void)state;
    llmc_bymodel_t *bm = llmc_bymodel_new(1, 2, prices("a 1 2\nc 10 20\n"));
    assert_non_null(bm);
    llmc_usage_t u = {100, 10};
    const char *chat = "/v1/chat/completions";
    llmc_bymodel_count(bm, 0, chat, "a", LLMC_BY_MISS, NULL);
    llmc_bymodel_count(bm, 0, chat, "a", LLMC_BY_HIT, &u);
    llmc_bymodel_count(bm, 0, chat, "b", LLMC_BY_STALE, &u);   /* no price: tokens only */
    llmc_bymodel_count(bm, 0, chat, "c", LLMC_BY_HIT, &u);     /* third model: "other" */
    llmc_bymodel_count(bm, 0, chat, "d", LLMC_BY_HIT, &u);     /* "other", no price */
    llmc_bymodel_count(bm, 0, chat, "a", LLMC_BY_COALESCED, NULL);
    llmc_bymodel_count(bm, 0, "/v1/embeddings", NULL, LLMC_BY_BYPASS, NULL);
    seen_t s = {0};
    assert_int_equal(llmc_bymodel_each(bm, collect, &s), 4);
    const llmc_bymodel_row_t *a = find(&s, chat, "a");
    assert_non_null(a);
    assert_int_equal(a->hits, 1);
    assert_int_equal(a->misses, 1);
    assert_int_equal(a->coalesced, 1);
    assert_int_equal(a->prompt_tokens_saved, 100);
    assert_int_equal(a->completion_tokens_saved, 10);
    assert_int_equal(a->money_saved, 100 * 1000000ull + 10 * 2000000ull);
    const llmc_bymodel_row_t *b = find(&s, chat, "b");
    assert_int_equal(b->stale, 1);
    assert_int_equal(b->prompt_tokens_saved, 100);
    assert_int_equal(b->money_saved, 0);
    const llmc_bymodel_row_t *o = find(&s, chat, "other");
    assert_int_equal(o->hits, 2);
    assert_int_equal(o->prompt_tokens_saved, 200);
    assert_int_equal(o->money_saved, 100 * 10000000ull + 10 * 20000000ull); /* c's, not d's */
    /* No model is "unknown", a name like any other: past the cap, "other". */
    assert_int_equal(find(&s, "/v1/embeddings", "other")->bypasses, 1);
    assert_null(find(&s, chat, "c"));
    for (unsigned i = 0; i < s.n; i++)
        if (!strcmp(s.r[i].model, "a"))
            assert_true(s.r[i].priced);
        else
            assert_false(s.r[i].priced);
    llmc_bymodel_free(bm);
}

static void test_a_long_name_is_cut_whole(void **state)
{
    (void)state;
    llmc_bymodel_t *bm = llmc_bymodel_new(1, 4, NULL);
    char name[300];
    memset(name, 'x', sizeof(name));
    /* A two-byte character across the cut: it goes whole or not at all. */
    name[LLMC_BYMODEL_NAME_MAX - 1] = (char)0xC3;
    name[LLMC_BYMODEL_NAME_MAX] = (char)0xA9;
    name[sizeof(name) - 1] = '\0';
    llmc_bymodel_count(bm, 0, "/r", name, LLMC_BY_MISS, NULL);
    llmc_bymodel_count(bm, 0, "/r", name, LLMC_BY_MISS, NULL); /* the same row again */
    seen_t s = {0};
    assert_int_equal(llmc_bymodel_each(bm, collect, &s), 1);
    assert_int_equal(strlen(s.r[0].model), LLMC_BYMODEL_NAME_MAX - 1);
    assert_int_equal(s.r[0].row.misses, 2);
    llmc_bymodel_free(bm);
}

typedef struct writer {
    llmc_bymodel_t *bm;
    unsigned id;
} writer_t;

static void *write_many(void *arg)
{
    writer_t *w = arg;
    llmc_usage_t u = {1, 2};
    char model[16];
    for (unsigned i = 0; i < 20000; i++) {
        snprintf(model, sizeof(model), "m%u", i % 12);
        llmc_bymodel_count(w->bm, w->id, "/v1/chat/completions", model, LLMC_BY_HIT, &u);
    }
    return NULL;
}

static void test_writers_adding_names_at_once_agree(void **state)
{
    (void)state;
    enum { N = 4 };
    llmc_bymodel_t *bm = llmc_bymodel_new(N, 8, NULL);
    pthread_t t[N];
    writer_t w[N];
    for (unsigned i = 0; i < N; i++) {
        w[i] = (writer_t){bm, i};
        pthread_create(&t[i], NULL, write_many, &w[i]);
    }
    for (unsigned i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    seen_t s = {0};
    assert_int_equal(llmc_bymodel_each(bm, collect, &s), 9); /* 8 names and "other" */
    uint64_t hits = 0, prompt = 0;
    for (unsigned i = 0; i < s.n; i++) {
        for (unsigned j = 0; j < i; j++)
            assert_string_not_equal(s.r[i].model, s.r[j].model); /* each name once */
        hits += s.r[i].row.hits;
        prompt += s.r[i].row.prompt_tokens_saved;
    }
    assert_int_equal(hits, N * 20000);
    assert_int_equal(prompt, N * 20000);
    llmc_bymodel_free(bm);
}

static void test_new_prices_apply_to_later_hits_only(void **state)
{
    (void)state;
    llmc_bymodel_t *bm = llmc_bymodel_new(1, 1, prices("a 1 1\n"));
    llmc_usage_t u = {1000000, 0};
    llmc_bymodel_count(bm, 0, "/r", "a", LLMC_BY_HIT, &u);   /* 1 unit */
    llmc_bymodel_count(bm, 0, "/r", "z", LLMC_BY_HIT, &u);   /* "other", unpriced */
    assert_int_equal(llmc_bymodel_set_prices(bm, prices("a 3 0\nz 5 0\nq 1 1\n")), 0);
    assert_int_equal(llmc_bymodel_prices(bm), 3);
    llmc_bymodel_count(bm, 0, "/r", "a", LLMC_BY_HIT, &u);   /* 3 units */
    llmc_bymodel_count(bm, 0, "/r", "z", LLMC_BY_HIT, &u);   /* 5 units, under "other" */
    seen_t s = {0};
    llmc_bymodel_each(bm, collect, &s);
    assert_int_equal(find(&s, "/r", "a")->money_saved, 4000000000000ull);
    assert_int_equal(find(&s, "/r", "other")->money_saved, 5000000000000ull);
    /* No prices at all: tokens still count, money stays. */
    assert_int_equal(llmc_bymodel_set_prices(bm, NULL), 0);
    assert_int_equal(llmc_bymodel_prices(bm), 0);
    llmc_bymodel_count(bm, 0, "/r", "a", LLMC_BY_HIT, &u);
    s.n = 0;
    llmc_bymodel_each(bm, collect, &s);
    assert_int_equal(find(&s, "/r", "a")->money_saved, 4000000000000ull);
    assert_int_equal(find(&s, "/r", "a")->prompt_tokens_saved, 3000000);
    assert_false(s.r[0].priced);
    llmc_bymodel_free(bm);
}

typedef struct ns_seen {
    unsigned n;
    char name[4][32];
    llmc_bymodel_row_t row[4];
} ns_seen_t;

static void ns_collect(void *arg, const char *ns, const llmc_bymodel_row_t *row)
{
    ns_seen_t *s = arg;
    assert_true(s->n < 4);
    snprintf(s->name[s->n], sizeof(s->name[0]), "%s", ns);
    s->row[s->n++] = *row;
}

static void test_namespaces_are_counted_apart_up_to_their_cap(void **state)
{
    (void)state;
    llmc_bymodel_t *bm = llmc_bymodel_new(2, 4, NULL);
    assert_non_null(bm);
    llmc_usage_t u = {7, 3};
    /* Not asked for: nothing counted. */
    llmc_bymodel_count_ns(bm, 0, "x", LLMC_BY_HIT, &u);
    ns_seen_t s = {0};
    assert_int_equal(llmc_bymodel_each_ns(bm, ns_collect, &s), 0);
    assert_int_equal(llmc_bymodel_namespaces(bm, 2), 0);
    llmc_bymodel_count_ns(bm, 0, "", LLMC_BY_MISS, NULL);
    llmc_bymodel_count_ns(bm, 1, "", LLMC_BY_HIT, &u);
    llmc_bymodel_count_ns(bm, 1, "team", LLMC_BY_STALE, &u);
    llmc_bymodel_count_ns(bm, 0, "late", LLMC_BY_COALESCED, NULL); /* third: "other" */
    llmc_bymodel_count_ns(bm, 1, NULL, LLMC_BY_BYPASS, NULL);      /* NULL is "" */
    assert_int_equal(llmc_bymodel_each_ns(bm, ns_collect, &s), 3);
    assert_string_equal(s.name[0], "");
    assert_int_equal(s.row[0].misses, 1);
    assert_int_equal(s.row[0].hits, 1);
    assert_int_equal(s.row[0].bypasses, 1);
    assert_int_equal(s.row[0].prompt_tokens_saved, 7);
    assert_string_equal(s.name[1], "team");
    assert_int_equal(s.row[1].stale, 1);
    assert_int_equal(s.row[1].completion_tokens_saved, 3);
    assert_string_equal(s.name[2], "other");
    assert_int_equal(s.row[2].coalesced, 1);
    assert_int_equal(s.row[2].money_saved, 0);
    llmc_bymodel_free(bm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models_beyond_the_cap_fold_into_other_priced_each),
        cmocka_unit_test(test_a_long_name_is_cut_whole),
        cmocka_unit_test(test_writers_adding_names_at_once_agree),
        cmocka_unit_test(test_new_prices_apply_to_later_hits_only),
        cmocka_unit_test(test_namespaces_are_counted_apart_up_to_their_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
