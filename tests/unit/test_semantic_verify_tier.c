/* Unit tests for the semantic tier's measured correctness (issue 16)
   through the tier ops: verified hits, the bar, probes, the namespace rows,
   and semantic-verify.log across restarts (a damaged tail skipped). */
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
#include "semantic/verify.h"
#include "tier/semantic.h"

#define CHAT "/v1/chat/completions"

typedef struct ask {
    llmc_tier_query_t q;
    char body[512];
} ask_t;

static uint8_t next_key = 1;

static void ask_in(ask_t *a, const char *question)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->body, sizeof(a->body),
             "{\"messages\":[{\"content\":\"%s\",\"role\":\"user\"}],\"model\":\"m\"}", question);
    a->q.key.b[0] = next_key++;
    a->q.key.b[1] = 0x5e;
    a->q.path = CHAT;
    a->q.body = a->body;
    a->q.body_len = strlen(a->body);
    a->q.scope = "";
    a->q.ns = "team";
    a->q.model = "m";
    a->q.similar = true;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Looks a up: the entry (a reference) or NULL; *verify what the tier said. */
static llmc_entry_t *look(llmc_tier_t *t, ask_t *a, bool *verify)
{
    llmc_tier_lookup_t lk = {.query = &a->q, .now_ms = wall_ms(), .verify = true};
    int rc = t->ops->lookup(t, &lk);
    assert_true(rc == 0 || rc == LLMC_ENOENT);
    assert_true(!lk.verify || rc == 0);
    if (verify)
        *verify = lk.verify;
    return lk.entry;
}

/* The model's answer to a, stored (a chat completion saying text). */
static llmc_entry_t *answer(llmc_tier_t *t, ask_t *a, const char *text)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},"
             "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,"
             "\"completion_tokens\":3}}",
             text);
    int64_t now = wall_ms();
    llmc_usage_t u = {5, 3};
    llmc_entry_spec_t spec = {
        .key = &a->q.key, .status = 200, .created_ms = now, .expires_ms = now + 3600000,
        .content_type = "application/json", .route = CHAT, .model = "m", .ns = "team",
        .body = json, .body_len = strlen(json), .usage = &u,
    };
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);
    assert_int_equal(t->ops->put(t, 0, e, now), 0);
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

/* Namespace "team"'s row, counter i of the row table. */
static uint64_t row(llmc_tier_t *t, const char *name)
{
    llmc_tier_row_t rows[4];
    unsigned n = t->ops->xrows(t, rows, 4);
    for (unsigned r = 0; r < n; r++) {
        if (strcmp(rows[r].name, "team") != 0)
            continue;
        for (unsigned i = 0; i < t->ops->nxrows; i++)
            if (strcmp(t->ops->xrows_desc[i].name, name) == 0)
                return llmc_stat_value(rows[r].v, &t->ops->xrows_desc[i]);
    }
    fail_msg("no row team / %s", name);
    return 0;
}

#include "fake_store.h"

/* A sampled hit says verify; the model's answer, judged different, bars the
   answer and its question's neighbours, counted per namespace. */
static void test_verified_wrong_bars(void **state)
{
    (void)state;
    llmc_semantic_config_t cfg = {.verify_rate = 1, .verify_per_min = 100,
                                  .judge = LLMC_JUDGE_EXACT};
    llmc_tier_t *t = llmc_tier_semantic_new(&cfg);
    assert_non_null(t);
    ask_t a, b, c, d;
    ask_in(&a, "What is the capital of France?");
    assert_null(look(t, &a, NULL));
    llmc_entry_t *ea = answer(t, &a, "Paris.");
    bool verify = false;
    ask_in(&b, "what is the capital of france");
    llmc_entry_t *hit = look(t, &b, &verify);
    assert_ptr_equal(hit, ea);
    assert_true(verify);
    llmc_entry_unref(hit);
    assert_int_equal(xstat(t, "verify/sampled"), 1);
    llmc_entry_t *eb = answer(t, &b, "Lyon."); /* the background call's answer */
    assert_int_equal(xstat(t, "verify/wrong"), 1);
    assert_int_equal(xstat(t, "verify/tokens"), 8);
    assert_int_equal(row(t, "hits"), 1);
    assert_int_equal(row(t, "verified"), 1);
    assert_int_equal(row(t, "wrong"), 1);
    assert_int_equal(row(t, "verify_calls"), 1);
    /* Neither the served answer nor the verified wording's own answers another. */
    ask_in(&c, "What's the capital of France?");
    assert_null(look(t, &c, NULL));
    llmc_entry_t *ec = answer(t, &c, "Paris.");
    ask_in(&d, "the capital of France?");
    assert_null(look(t, &d, NULL)); /* c's answer was indexed there: it inherits the bar */
    assert_true(xstat(t, "verify/refused") >= 2);
    t->ops->destroy(t);
    llmc_entry_unref(ea);
    llmc_entry_unref(eb);
    llmc_entry_unref(ec);
}

/* With a budget and no evidence, a candidate is a probe: a miss whose
   model answer, judged the same, lets the answer serve next time. */
static void test_budget_probes_first(void **state)
{
    (void)state;
    llmc_semantic_config_t cfg = {.max_error = 0.4, .verify_per_min = 100,
                                  .judge = LLMC_JUDGE_EXACT, .verify_start = 0.9f,
                                  .verify_band = 0.1f};
    llmc_tier_t *t = llmc_tier_semantic_new(&cfg);
    assert_non_null(t);
    ask_t a, b, c;
    ask_in(&a, "What is the boiling point of water?");
    assert_null(look(t, &a, NULL));
    llmc_entry_t *ea = answer(t, &a, "100 C.");
    ask_in(&b, "what is the boiling point of water");
    assert_null(look(t, &b, NULL)); /* prior 0.5 > 0.4: a probe */
    assert_int_equal(xstat(t, "verify/probes"), 1);
    llmc_entry_t *eb = answer(t, &b, "100 C.");
    assert_int_equal(xstat(t, "verify/probes_wrong"), 0);
    ask_in(&c, "Hey, can you tell me what the boiling point of water is, please?");
    llmc_entry_t *hit = look(t, &c, NULL); /* 0.25 / (1 + 1) within 0.4 now */
    assert_non_null(hit);
    llmc_entry_unref(hit);
    assert_int_equal(row(t, "exact_only"), 0);
    t->ops->destroy(t);
    llmc_entry_unref(ea);
    llmc_entry_unref(eb);
}

/* The bar survives a restart; a torn record at the file's end is skipped
   and the file is compacted to the states whose answers the store has. */
static void test_state_survives_restart(void **state)
{
    (void)state;
    char dir[] = "/tmp/llmc-semverify-XXXXXX", path[96], p2[96];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/semantic-verify.log", dir);
    store_t st = {.tier = {.ops = &store_ops}};
    st.tier.impl = &st;
    llmc_semantic_config_t cfg = {.verify_rate = 1, .verify_per_min = 100,
                                  .judge = LLMC_JUDGE_EXACT, .dir = dir, .store = &st.tier};
    llmc_tier_t *t = llmc_tier_semantic_new(&cfg);
    assert_non_null(t);
    ask_t a, b, c;
    ask_in(&a, "Who wrote Hamlet?");
    assert_null(look(t, &a, NULL));
    llmc_entry_t *ea = answer(t, &a, "Shakespeare.");
    ask_in(&b, "who wrote hamlet");
    llmc_entry_t *hit = look(t, &b, NULL);
    assert_ptr_equal(hit, ea);
    llmc_entry_unref(hit);
    llmc_entry_t *eb = answer(t, &b, "Nobody knows.");
    st.held[0] = ea;
    st.held[1] = eb;
    t->ops->destroy(t);

    /* A torn record after the good ones: garbage of less than a record. */
    FILE *f = fopen(path, "ab");
    assert_non_null(f);
    fwrite("SVV1 torn", 1, 9, f);
    fclose(f);
    for (int round = 0; round < 2; round++) {
        t = llmc_tier_semantic_new(&cfg);
        assert_non_null(t);
        for (int i = 0; i < 500 && xstat(t, "restored") < 2; i++)
            usleep(10000);
        assert_int_equal(xstat(t, "restored"), 2);
        ask_in(&c, "Who wrote Hamlet, please?");
        assert_null(look(t, &c, NULL)); /* still barred */
        struct stat sb;
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_size % 68, 0); /* whole records only: the torn tail went */
        assert_true(sb.st_size >= 2 * 68);
        t->ops->destroy(t);
    }
    llmc_entry_unref(ea);
    llmc_entry_unref(eb);
    unlink(path);
    snprintf(p2, sizeof(p2), "%s/semantic.log", dir);
    unlink(p2);
    snprintf(p2, sizeof(p2), "%s/semantic.log.old", dir);
    unlink(p2);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verified_wrong_bars),
        cmocka_unit_test(test_budget_probes_first),
        cmocka_unit_test(test_state_survives_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
