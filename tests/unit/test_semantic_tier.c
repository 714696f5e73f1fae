/* Unit tests for the semantic tier (tier/semantic.h) through the tier ops,
   with a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "llmc/error.h"
#include "semantic/guard.h"
#include "tier/semantic.h"
#include "tier/memory.h"
#include "tier/set.h"

#define CHAT "/v1/chat/completions"
#define NOW 1000000

/* A canonical chat body: an optional system prompt, then the question. */
static void body(char *out, size_t cap, const char *model, const char *system, const char *q)
{
    if (system)
        snprintf(out, cap,
                 "{\"messages\":[{\"content\":\"%s\",\"role\":\"system\"},"
                 "{\"content\":\"%s\",\"role\":\"user\"}],\"model\":\"%s\"}",
                 system, q, model);
    else
        snprintf(out, cap, "{\"messages\":[{\"content\":\"%s\",\"role\":\"user\"}],\"model\":\"%s\"}",
                 q, model);
}

typedef struct ask {
    llmc_tier_query_t q;
    char body[1024];
} ask_t;

static uint8_t next_key = 1;

/* A query in *a (its body points into a, so a is filled in place). */
static void ask_in(ask_t *a, const char *model, const char *system, const char *question,
                   const char *ns)
{
    memset(a, 0, sizeof(*a));
    body(a->body, sizeof(a->body), model, system, question);
    a->q.key.b[0] = next_key++;
    a->q.path = CHAT;
    a->q.body = a->body;
    a->q.body_len = strlen(a->body);
    a->q.scope = "";
    a->q.ns = ns;
    a->q.model = model;
    a->q.similar = true;
}

#define ASK(var, ...) \
    ask_t var;        \
    ask_in(&var, __VA_ARGS__)

static float last_similarity;
static unsigned look_worker; /* the worker lookups say they run on */

/* Looks q up; returns the entry found (a reference) or NULL. */
static llmc_entry_t *look(llmc_tier_t *t, ask_t *a, int64_t now)
{
    llmc_tier_lookup_t lk = {.query = &a->q, .now_ms = now, .similarity = -1,
                             .worker = look_worker};
    int rc = t->ops->lookup(t, &lk);
    assert_true(rc == 0 || rc == LLMC_ENOENT);
    assert_true((rc == 0) == (lk.entry != NULL));
    /* A hit says how close; a miss leaves the field to the set (which zeroes it). */
    if (rc == 0)
        assert_true(lk.similarity >= (a->q.threshold > 0 ? a->q.threshold : 0.5f) &&
                    lk.similarity <= 1.0001f);
    last_similarity = lk.similarity;
    return lk.entry;
}

static llmc_entry_t *answer(llmc_tier_t *t, ask_t *a, const char *text, int64_t expires)
{
    llmc_entry_spec_t spec = {
        .key = &a->q.key, .status = 200, .created_ms = NOW, .expires_ms = expires,
        .content_type = "application/json", .route = a->q.path, .model = a->q.model,
        .ns = a->q.ns, .body = text, .body_len = strlen(text),
    };
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);
    assert_int_equal(t->ops->put(t, 0, e, NOW), 0);
    return e;
}

static uint64_t xstat(llmc_tier_t *t, const char *name)
{
    uint64_t v[64];
    t->ops->xstats(t, v);
    for (unsigned i = 0; i < t->ops->nxstats; i++)
        if (strcmp(t->ops->xstats_desc[i].name, name) == 0)
            return llmc_stat_value(v, &t->ops->xstats_desc[i]);
    fail_msg("no counter %s", name);
    return 0;
}

static llmc_tier_stats_t stats(llmc_tier_t *t)
{
    llmc_tier_stats_t st;
    t->ops->stats(t, &st);
    return st;
}

/* The tier as the gateway makes it is one a tier set takes: its counters
   within the set's bounds, every operation it needs present (a tier that
   outgrew LLMC_TIER_XSTATS_MAX was refused at start with "invalid
   argument" and no other word). */
static void test_a_tier_set_takes_it(void **state)
{
    (void)state;
    llmc_tier_set_t *set = llmc_tier_set_new();
    assert_non_null(set);
    llmc_cache_config_t mc = {1u << 20, 1, 0.5, 3600 * 1000};
    assert_int_equal(llmc_tier_set_add(set, llmc_tier_memory_new(llmc_cache_new(&mc))), 0);
    llmc_semantic_config_t cfg = {.threshold = 0.9f, .max_error = 0.01, .verify_rate = 0.1,
                                  .verify_per_min = 10};
    assert_int_equal(llmc_tier_set_add(set, llmc_tier_semantic_new(&cfg)), 0);
    llmc_tier_set_free(set);
}

static void test_near_duplicate_hits_hard_negative_misses(void **state)
{
    (void)state;
    llmc_tier_t *t = llmc_tier_semantic_new(NULL);
    assert_true(t->ops->wants_query);
    ASK(a, "m", "be brief", "What is the capital of France?", "");
    assert_null(look(t, &a, NOW));
    llmc_entry_t *e = answer(t, &a, "Paris", NOW + 60000);
    assert_int_equal(stats(t).stored, 1);
    assert_int_equal(stats(t).entries, 1);

    ASK(b, "m", "be brief", "what's the capital of france", "");
    llmc_entry_t *hit = look(t, &b, NOW + 1);
    assert_ptr_equal(hit, e);
    assert_true(last_similarity > 0.99f); /* the same words once folded */
    llmc_entry_unref(hit);

    ASK(c, "m", "be brief", "Hey, can you tell me what the capital of France is?", "");
    hit = look(t, &c, NOW + 1);
    assert_ptr_equal(hit, e);
    llmc_entry_unref(hit);

    ASK(d, "m", "be brief", "What is the capital of Germany?", "");
    assert_null(look(t, &d, NOW + 1));
    ASK(f, "m", "be brief", "What is not the capital of France?", "");
    assert_null(look(t, &f, NOW + 1));
    assert_int_equal(stats(t).hits, 2);
    assert_int_equal(stats(t).misses, 3);
    assert_int_equal(xstat(t, "lookups"), 5);
    assert_int_equal(xstat(t, "rejected/negation") + xstat(t, "rejected/content") +
                         xstat(t, "below_threshold"),
                     2);
    llmc_entry_unref(e);
    t->ops->destroy(t);
}

/* Everything but the last question must match: another system prompt,
   model, namespace or scope, or an earlier turn, never hits. */
static void test_other_context_never_hits(void **state)
{
    (void)state;
    llmc_tier_t *t = llmc_tier_semantic_new(NULL);
    ASK(a, "m", "be brief", "What is the capital of France?", "");
    assert_null(look(t, &a, NOW));
    llmc_entry_t *e = answer(t, &a, "Paris", NOW + 60000);

    ASK(sys, "m", "be verbose", "What is the capital of France?", "");
    ASK(model, "m2", "be brief", "What is the capital of France?", "");
    ASK(ns, "m", "be brief", "What is the capital of France?", "team-b");
    ASK(scope, "m", "be brief", "What is the capital of France?", "");
    scope.q.scope = "abcd";
    ASK(nosys, "m", NULL, "What is the capital of France?", "");
    assert_null(look(t, &sys, NOW));
    assert_null(look(t, &model, NOW));
    assert_null(look(t, &ns, NOW));
    assert_null(look(t, &scope, NOW));
    assert_null(look(t, &nosys, NOW));
    /* The same context again does hit: the misses above were for context. */
    ASK(same, "m", "be brief", "what is the capital of France", "");
    llmc_entry_t *hit = look(t, &same, NOW);
    assert_ptr_equal(hit, e);
    llmc_entry_unref(hit);
    llmc_entry_unref(e);
    t->ops->destroy(t);
}

static void test_not_eligible_is_skipped(void **state)
{
    (void)state;
    llmc_tier_t *t = llmc_tier_semantic_new(NULL);
    ASK(a, "m", NULL, "hello world", "");
    a.q.path = "/v1/embeddings";
    assert_null(look(t, &a, NOW));
    ASK(b, "m", NULL, "hello world", "");
    b.q.body = NULL;
    assert_null(look(t, &b, NOW));
    ASK(c, "m", NULL, "hello world", "");
    strcpy(c.body, "{\"messages\":[{\"content\":\"x\",\"role\":\"assistant\"}],\"model\":\"m\"}");
    c.q.body_len = strlen(c.body);
    assert_null(look(t, &c, NOW));
    ASK(d, "m", NULL, "please", ""); /* only a filler: nothing to embed */
    assert_null(look(t, &d, NOW));
    assert_int_equal(xstat(t, "skipped"), 4);
    assert_int_equal(xstat(t, "lookups"), 1);
    /* A request that says no is neither answered nor indexed. */
    ASK(no, "m", NULL, "what is go", "");
    no.q.similar = false;
    assert_null(look(t, &no, NOW));
    assert_int_equal(xstat(t, "declined"), 1);
    llmc_entry_unref(answer(t, &no, "a language", NOW + 60000));
    assert_int_equal(stats(t).entries, 0);
    /* An answer whose question was never looked up here is not indexed. */
    ASK(e, "m", NULL, "what is rust", "");
    llmc_entry_unref(answer(t, &e, "a language", NOW + 60000));
    assert_int_equal(stats(t).entries, 0);
    t->ops->destroy(t);
}

/* Attached workers embed with their own embedders, others with the shared
   one: the answers are the same. */
static void test_worker_embedders(void **state)
{
    (void)state;
    llmc_tier_t *t = llmc_tier_semantic_new(NULL);
    assert_int_equal(t->ops->attach(t, 0, NULL), 0);
    assert_int_equal(t->ops->attach(t, 2, NULL), 0); /* 1 never attached */
    look_worker = 2;
    ASK(a, "m", NULL, "What is the capital of France?", "");
    assert_null(look(t, &a, NOW));
    llmc_entry_t *e = answer(t, &a, "Paris", NOW + 60000);
    for (unsigned w = 0; w < 4; w++) {
        look_worker = w;
        ASK(b, "m", NULL, "what's the capital of france", "");
        llmc_entry_t *hit = look(t, &b, NOW);
        assert_ptr_equal(hit, e);
        assert_true(last_similarity > 0.99f);
        llmc_entry_unref(hit);
        ASK(c, "m", NULL, "what is the capital of Spain", "");
        assert_null(look(t, &c, NOW));
    }
    look_worker = 0;
    t->ops->detach(t, 0);
    llmc_entry_unref(e);
    t->ops->destroy(t);
}

static void purged(void *arg, size_t removed)
{
    *(size_t *)arg = removed;
}

/* A hit makes the request's key an alias: the same request again is found
   by its key, goes with its record, and can be purged alone. */
static void test_aliases(void **state)
{
    (void)state;
    llmc_tier_t *t = llmc_tier_semantic_new(NULL);
    ASK(a, "m", NULL, "In Python, how do I reverse a list?", "");
    assert_null(look(t, &a, NOW));
    llmc_entry_t *e = answer(t, &a, "reversed", NOW + 60000);

    ASK(b, "m", NULL, "How do I reverse a list in Python?", "");
    llmc_entry_t *hit = look(t, &b, NOW);
    assert_ptr_equal(hit, e);
    float sim = last_similarity;
    llmc_entry_unref(hit);
    assert_int_equal(xstat(t, "alias_hits"), 0);
    hit = look(t, &b, NOW); /* the same request: by its key */
    assert_ptr_equal(hit, e);
    assert_true(last_similarity == sim);
    llmc_entry_unref(hit);
    assert_int_equal(xstat(t, "alias_hits"), 1);
    /* A stricter request does not take an alias matched below its threshold. */
    b.q.threshold = sim + (1.0f - sim) / 2;
    assert_null(look(t, &b, NOW));
    b.q.threshold = 0;
    assert_int_equal(xstat(t, "alias_hits"), 1);

    /* A key purge of the alias takes the alias only. */
    size_t n = 0;
    llmc_purge_t sel = {.conds = LLMC_PURGE_KEY, .key = b.q.key};
    t->ops->purge(t, 0, &sel, purged, &n);
    assert_int_equal(n, 1);
    assert_int_equal(stats(t).entries, 1);
    hit = look(t, &b, NOW); /* found again by search, and aliased again */
    assert_ptr_equal(hit, e);
    llmc_entry_unref(hit);
    assert_int_equal(xstat(t, "alias_hits"), 1);
    hit = look(t, &b, NOW);
    llmc_entry_unref(hit);
    assert_int_equal(xstat(t, "alias_hits"), 2);

    /* At most LLMC_TIER_SEMANTIC_ALIASES per record. */
    const char *more[] = {"how do I reverse a list in python", "HOW DO I REVERSE A LIST IN PYTHON",
                          "How do I reverse a list in Python", "how do i reverse a list in python?",
                          "How do I reverse a list, in Python?"};
    ask_t extra[5];
    for (int i = 0; i < 5; i++) {
        ask_in(&extra[i], "m", NULL, more[i], "");
        llmc_entry_unref(look(t, &extra[i], NOW));
    }
    uint64_t before = xstat(t, "alias_hits");
    for (int i = 0; i < 5; i++)
        llmc_entry_unref(look(t, &extra[i], NOW));
    assert_int_equal(xstat(t, "alias_hits") - before, LLMC_TIER_SEMANTIC_ALIASES - 1);

    /* Expired: not by alias either. */
    assert_null(look(t, &b, NOW + 60000));
    /* A purge of the record takes its aliases. */
    sel.key = a.q.key;
    t->ops->purge(t, 0, &sel, purged, &n);
    assert_int_equal(n, 1);
    assert_null(look(t, &b, NOW));
    assert_int_equal(xstat(t, "alias_hits"), before + LLMC_TIER_SEMANTIC_ALIASES - 1);
    llmc_entry_unref(e);
    t->ops->destroy(t);
}

/* A completion's prompt is a question too; a list of prompts is not. */
static void test_completions(void **state)
{
    (void)state;
    llmc_tier_t *t = llmc_tier_semantic_new(NULL);
    ASK(a, "m", NULL, "x", "");
    strcpy(a.body, "{\"max_tokens\":16,\"model\":\"m\",\"prompt\":\"What is the capital of France?\"}");
    a.q.path = "/v1/completions";
    a.q.body_len = strlen(a.body);
    assert_null(look(t, &a, NOW));
    llmc_entry_t *e = answer(t, &a, "Paris", NOW + 60000);
    ASK(b, "m", NULL, "x", "");
    strcpy(b.body, "{\"max_tokens\":16,\"model\":\"m\",\"prompt\":\"what's the capital of france\"}");
    b.q.path = "/v1/completions";
    b.q.body_len = strlen(b.body);
    llmc_entry_t *hit = look(t, &b, NOW);
    assert_ptr_equal(hit, e);
    llmc_entry_unref(hit);
    /* Another parameter: another partition. */
    ASK(c, "m", NULL, "x", "");
    strcpy(c.body, "{\"max_tokens\":17,\"model\":\"m\",\"prompt\":\"what's the capital of france\"}");
    c.q.path = "/v1/completions";
    c.q.body_len = strlen(c.body);
    assert_null(look(t, &c, NOW));
    /* The same question as a chat message: another route, another partition. */
    ASK(d, "m", NULL, "What is the capital of France?", "");
    assert_null(look(t, &d, NOW));
    ASK(f, "m", NULL, "x", "");
    strcpy(f.body, "{\"max_tokens\":16,\"model\":\"m\",\"prompt\":[\"What is the capital of France?\"]}");
    f.q.path = "/v1/completions";
    f.q.body_len = strlen(f.body);
    assert_null(look(t, &f, NOW));
    assert_int_equal(xstat(t, "skipped"), 1);
    llmc_entry_unref(e);
    t->ops->destroy(t);
}

static void test_expiry_purge_and_bound(void **state)
{
    (void)state;
    llmc_semantic_config_t cfg = {.max_entries = 2};
    llmc_tier_t *t = llmc_tier_semantic_new(&cfg);
    const char *qs[] = {"how do I bake bread", "how do I brew coffee", "how do I boil an egg"};
    llmc_entry_t *es[3];
    for (int i = 0; i < 3; i++) {
        ASK(a, "m", NULL, qs[i], "");
        assert_null(look(t, &a, NOW));
        es[i] = answer(t, &a, "x", NOW + 1000 * (i + 1));
    }
    /* The bound: the oldest went. */
    assert_int_equal(stats(t).entries, 2);
    assert_int_equal(stats(t).evicted_size, 1);
    ASK(q0, "m", NULL, "How do I bake bread?", "");
    assert_null(look(t, &q0, NOW));
    ASK(q1, "m", NULL, "How do I brew coffee?", "");
    llmc_entry_t *hit = look(t, &q1, NOW);
    assert_ptr_equal(hit, es[1]);
    llmc_entry_unref(hit);
    /* Expired: never answered, then swept. */
    assert_null(look(t, &q1, NOW + 2000));
    t->ops->tick(t, NOW + 2000);
    assert_int_equal(stats(t).entries, 1);
    assert_int_equal(stats(t).evicted_ttl, 1);
    /* A purge by key removes it. */
    size_t n = 99;
    llmc_purge_t sel = {.conds = LLMC_PURGE_KEY, .key = es[2]->key};
    t->ops->purge(t, 0, &sel, purged, &n);
    assert_int_equal(n, 1);
    assert_int_equal(stats(t).entries, 0);
    assert_int_equal(stats(t).purged, 1);
    ASK(q2, "m", NULL, "how do I boil an egg", "");
    assert_null(look(t, &q2, NOW));
    for (int i = 0; i < 3; i++)
        llmc_entry_unref(es[i]);
    t->ops->destroy(t);
}

/* The request's threshold overrides the tier's; the tier's config sets its own. */
static void test_thresholds(void **state)
{
    (void)state;
    llmc_tier_t *t = llmc_tier_semantic_new(NULL);
    ASK(a, "m", NULL, "In Python, how do I reverse a list?", "");
    assert_null(look(t, &a, NOW));
    llmc_entry_t *e = answer(t, &a, "reversed", NOW + 60000);
    ASK(b, "m", NULL, "How do I reverse a list in Python?", "");
    b.q.threshold = 0.999f;
    assert_null(look(t, &b, NOW));
    assert_int_equal(xstat(t, "below_threshold"), 1);
    ASK(c, "m", NULL, "How do I reverse a list in Python?", "");
    llmc_entry_t *hit = look(t, &c, NOW);
    assert_ptr_equal(hit, e);
    assert_true(last_similarity < 0.999f);
    llmc_entry_unref(hit);
    llmc_entry_unref(e);
    t->ops->destroy(t);

    llmc_semantic_config_t cfg = {.threshold = 0.999f};
    t = llmc_tier_semantic_new(&cfg);
    ASK(d, "m", NULL, "In Python, how do I reverse a list?", "");
    assert_null(look(t, &d, NOW));
    e = answer(t, &d, "reversed", NOW + 60000);
    ASK(f, "m", NULL, "How do I reverse a list in Python?", "");
    assert_null(look(t, &f, NOW));
    ASK(g, "m", NULL, "How do I reverse a list in Python?", "");
    g.q.threshold = 0.5f; /* the request may ask for less */
    hit = look(t, &g, NOW);
    assert_ptr_equal(hit, e);
    llmc_entry_unref(hit);
    llmc_entry_unref(e);
    t->ops->destroy(t);
}

static char shadow_log[4096];

static void log_line(void *arg, const char *line)
{
    (void)arg;
    size_t n = strlen(shadow_log);
    snprintf(shadow_log + n, sizeof(shadow_log) - n, "%s\n", line);
}

/* Shadow mode: every lookup misses; what would have hit is logged, counted,
   and compared with the model's answer when it comes. */
static void test_shadow(void **state)
{
    (void)state;
    llmc_semantic_config_t cfg = {.shadow = true, .log = log_line};
    llmc_tier_t *t = llmc_tier_semantic_new(&cfg);
    const char *paris = "{\"choices\":[{\"message\":{\"content\":\"Paris\"}}],\"id\":\"1\"}";
    const char *paris2 = "{\"choices\":[{\"message\":{\"content\":\"Paris\"}}],\"id\":\"2\"}";
    const char *lyon = "{\"choices\":[{\"message\":{\"content\":\"Lyon\"}}],\"id\":\"3\"}";
    shadow_log[0] = '\0';

    ASK(a, "m", NULL, "What is the capital of France?", "");
    assert_null(look(t, &a, NOW));
    llmc_entry_t *ea = answer(t, &a, paris, NOW + 60000);
    ASK(b, "m", NULL, "what's the capital of france", "");
    assert_null(look(t, &b, NOW)); /* would hit, but misses */
    assert_int_equal(xstat(t, "shadow/would_hit"), 1);
    assert_non_null(strstr(shadow_log, "\"semantic_shadow\":\"would_hit\""));
    llmc_entry_unref(answer(t, &b, paris2, NOW + 60000)); /* same text, other id */
    assert_int_equal(xstat(t, "shadow/agreed"), 1);
    ASK(c, "m", NULL, "WHAT IS THE CAPITAL OF FRANCE", "");
    assert_null(look(t, &c, NOW));
    llmc_entry_unref(answer(t, &c, lyon, NOW + 60000));
    assert_int_equal(xstat(t, "shadow/disagreed"), 1);
    assert_non_null(strstr(shadow_log, "\"agreed\":false"));
    ASK(d, "m", NULL, "What is not the capital of France?", "");
    assert_null(look(t, &d, NOW));
    assert_non_null(strstr(shadow_log, "\"semantic_shadow\":\"rejected\""));
    assert_non_null(strstr(shadow_log, "\"guard\":\"negation\""));
    assert_int_equal(stats(t).hits, 0);
    assert_int_equal(stats(t).misses, 4);
    ASK(e, "m", NULL, "What is the capital of France", ""); /* would hit; never answered */
    assert_null(look(t, &e, NOW));
    assert_int_equal(xstat(t, "shadow/would_hit"), 3);
    llmc_entry_unref(ea);
    t->ops->destroy(t); /* its pending would-be hit is released (ASan checks) */
}

/* The byte bound: the oldest answers go once the entries held pass it. */
static void test_byte_bound(void **state)
{
    (void)state;
    static char big[4000];
    memset(big, 'x', sizeof(big) - 1);
    llmc_semantic_config_t cfg = {.max_bytes = 3 * (sizeof(big) + LLMC_LEX_DIM * sizeof(float))};
    llmc_tier_t *t = llmc_tier_semantic_new(&cfg);
    const char *qs[] = {"how do I bake bread", "how do I brew coffee", "how do I boil an egg",
                        "how do I fry rice"};
    for (int i = 0; i < 4; i++) {
        ASK(a, "m", NULL, qs[i], "");
        assert_null(look(t, &a, NOW));
        llmc_entry_unref(answer(t, &a, big, NOW + 60000));
        llmc_tier_stats_t st = stats(t);
        assert_true(st.bytes <= cfg.max_bytes);
        assert_int_equal(st.max_bytes, cfg.max_bytes);
    }
    assert_true(stats(t).entries >= 2 && stats(t).entries < 4);
    assert_true(stats(t).evicted_size >= 1);
    ASK(first, "m", NULL, "How do I bake bread?", "");
    assert_null(look(t, &first, NOW)); /* the oldest went */
    ASK(last, "m", NULL, "How do I fry rice?", "");
    llmc_entry_t *hit = look(t, &last, NOW);
    assert_non_null(hit);
    llmc_entry_unref(hit);
    t->ops->destroy(t);
}

static void test_purge_by_model(void **state)
{
    (void)state;
    llmc_tier_t *t = llmc_tier_semantic_new(NULL);
    ASK(a, "m1", NULL, "what is rust", "");
    ASK(b, "m2", NULL, "what is rust", "");
    assert_null(look(t, &a, NOW));
    assert_null(look(t, &b, NOW));
    llmc_entry_t *ea = answer(t, &a, "x", NOW + 60000), *eb = answer(t, &b, "y", NOW + 60000);
    size_t n = 0;
    llmc_purge_t sel = {.conds = LLMC_PURGE_MODEL, .model = "m1"};
    t->ops->purge(t, 0, &sel, purged, &n);
    assert_int_equal(n, 1);
    ASK(a2, "m1", NULL, "What is Rust?", "");
    ASK(b2, "m2", NULL, "What is Rust?", "");
    assert_null(look(t, &a2, NOW));
    llmc_entry_t *hit = look(t, &b2, NOW);
    assert_ptr_equal(hit, eb);
    llmc_entry_unref(hit);
    llmc_entry_unref(ea);
    llmc_entry_unref(eb);
    t->ops->destroy(t);
}

/* ---- persistence: a store (the disk tier's part) holding some answers ---- */

#include "fake_store.h"

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Questions indexed before a restart are indexed again after it, those
   whose answer the store no longer has (purged) are not, and the file keeps
   only the first. */
static void test_persistence_round_trip(void **state)
{
    (void)state;
    char dir[] = "/tmp/llmc-semantic-XXXXXX", old[64], log[64];
    assert_non_null(mkdtemp(dir));
    snprintf(old, sizeof(old), "%s/semantic.log.old", dir);
    snprintf(log, sizeof(log), "%s/semantic.log", dir);
    store_t st = {.tier = {.ops = &store_ops}};
    st.tier.impl = &st;
    llmc_semantic_config_t cfg = {.dir = dir, .store = &st.tier};
    int64_t later = wall_ms() + 3600 * 1000;

    llmc_tier_t *t = llmc_tier_semantic_new(&cfg);
    assert_non_null(t);
    ASK(a, "m", "be brief", "What is the capital of France?", "");
    assert_null(look(t, &a, NOW));
    llmc_entry_t *e = answer(t, &a, "Paris", later);
    ASK(c, "m", "be brief", "Why is the sky blue?", "");
    assert_null(look(t, &c, NOW));
    llmc_entry_t *sky = answer(t, &c, "Rayleigh", later);
    st.held[0] = e; /* the sky's answer was purged from the store */
    t->ops->destroy(t);

    for (int round = 0; round < 2; round++) {
        t = llmc_tier_semantic_new(&cfg);
        assert_non_null(t);
        for (int i = 0; i < 500 && access(old, F_OK) == 0; i++)
            usleep(10000); /* the restore thread removes the old file when done */
        assert_int_not_equal(access(old, F_OK), 0);
        assert_int_equal(xstat(t, "restored"), 1);
        assert_int_equal(stats(t).entries, 1);
        ASK(b, "m", "be brief", "what's the capital of france", "");
        llmc_entry_t *hit = look(t, &b, NOW);
        assert_ptr_equal(hit, e);
        llmc_entry_unref(hit);
        ASK(d, "m", "be brief", "why is the sky blue", "");
        assert_null(look(t, &d, NOW));
        t->ops->destroy(t); /* the second round reads what the first rewrote */
    }
    llmc_entry_unref(e);
    llmc_entry_unref(sky);
    unlink(log);
    unlink(old);
    assert_int_equal(rmdir(dir), 0);
}

/* A partition past the graph threshold, searched narrow first: a question
   near nothing stored stays narrow and misses; a near-duplicate widens the
   walk and hits its question; alike whether the walk reads int8 codes or
   floats. */
static void narrow_round(bool floats)
{
    static const char *const words[] = {"sort",   "list",  "python", "rust",   "table",
                                        "index",  "query", "cache",  "memory", "thread",
                                        "socket", "file",  "json",   "parse",  "string",
                                        "kernel", "graph", "vector", "matrix", "array"};
    enum { NW = sizeof(words) / sizeof(words[0]), NQ = 1500 };
    llmc_semantic_config_t cfg = {.threshold = 0.7f, .max_entries = 4096, .search_ef = 32,
                                  .search_narrow = 8, .search_margin = 0.15f,
                                  .search_floats = floats};
    llmc_tier_t *t = llmc_tier_semantic_new(&cfg);
    assert_non_null(t);
    char q[NQ][96];
    uint64_t r = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < NQ; i++) {
        const char *w[4];
        for (int j = 0; j < 4; j++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            w[j] = words[r % NW];
        }
        char text[96];
        snprintf(text, sizeof(text), "how do I %s the %s in %s with %s number %d?", w[0], w[1],
                 w[2], w[3], i);
        memcpy(q[i], text, sizeof(text));
        ASK(a, "m", NULL, text, "");
        a.q.key.b[1] = (uint8_t)(i >> 8), a.q.key.b[2] = (uint8_t)i;
        assert_null(look(t, &a, NOW));
        llmc_entry_unref(answer(t, &a, "{\"x\":1}", NOW + 3600 * 1000));
    }
    assert_int_equal(stats(t).entries, NQ);
    uint64_t w0 = xstat(t, "search/widened");
    ASK(far, "m", NULL, "which violin suits a glacier near the museum during the opera?", "");
    assert_null(look(t, &far, NOW));
    assert_int_equal(xstat(t, "search/widened"), w0);
    char dup[128] = "please, ";
    strncat(dup, q[777], sizeof(dup) - strlen(dup) - 1);
    ASK(near, "m", NULL, dup, "");
    near.q.key.b[3] = 0x77;
    llmc_entry_t *e = look(t, &near, NOW);
    assert_non_null(e);
    assert_true(last_similarity > 0.9f);
    assert_int_equal(xstat(t, "search/widened"), w0 + 1);
    llmc_entry_unref(e);
    t->ops->destroy(t);
}

static void test_narrow_search_widens_near_the_threshold(void **state)
{
    (void)state;
    narrow_round(false); /* walking by int8 codes, the default */
    narrow_round(true);  /* by floats alone (--semantic-search-int8 off) */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_tier_set_takes_it),
        cmocka_unit_test(test_near_duplicate_hits_hard_negative_misses),
        cmocka_unit_test(test_other_context_never_hits),
        cmocka_unit_test(test_not_eligible_is_skipped),
        cmocka_unit_test(test_completions),
        cmocka_unit_test(test_worker_embedders),
        cmocka_unit_test(test_aliases),
        cmocka_unit_test(test_expiry_purge_and_bound),
        cmocka_unit_test(test_thresholds),
        cmocka_unit_test(test_shadow),
        cmocka_unit_test(test_byte_bound),
        cmocka_unit_test(test_purge_by_model),
        cmocka_unit_test(test_persistence_round_trip),
        cmocka_unit_test(test_narrow_search_widens_near_the_threshold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
