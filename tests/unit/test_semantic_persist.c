/*
 * Unit tests for the semantic tier's persisted questions: the record codec
 * (tier/semantic_log.h) and a restart that indexes the stored vectors
 * (tier/semantic.h with a data dir), a damaged file included.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "llmc/error.h"
#include "semantic/lexical.h"
#include "tier/semantic.h"
#include "tier/semantic_log.h"

#define CHAT "/v1/chat/completions"

/* ---- the codec ---------------------------------------------------------------------- */

static llmc_semq_t sample(float *vec, unsigned dim)
{
    llmc_semq_t q = {.text = "What is the capital of France?", .len = 30, .vec = vec,
                     .dim = dim};
    memset(q.key.b, 0xab, LLMC_KEY_LEN);
    memset(q.part.b, 0x17, LLMC_KEY_LEN);
    snprintf(q.id, sizeof(q.id), "openai m http://x/v1");
    for (unsigned i = 0; i < dim; i++)
        vec[i] = (float)i / 7.0f - 1.5f;
    return q;
}

static void test_record_round_trip_and_damage(void **state)
{
    (void)state;
    float vec[384];
    llmc_semq_t q = sample(vec, 384), back;
    size_t n = 0;
    uint8_t *rec = llmc_semq_encode(&q, &n);
    assert_non_null(rec);
    assert_int_equal(llmc_semq_decode(rec, n, &back), 0);
    assert_memory_equal(back.key.b, q.key.b, LLMC_KEY_LEN);
    assert_memory_equal(back.part.b, q.part.b, LLMC_KEY_LEN);
    assert_string_equal(back.id, q.id);
    assert_string_equal(back.text, q.text);
    assert_int_equal(back.dim, 384);
    assert_memory_equal(back.vec, vec, sizeof(vec));
    llmc_semq_clear(&back);
    /* Any byte changed, and any length but the record's, is refused. */
    for (size_t i = 0; i < n; i += 37) {
        rec[i] ^= 0x20;
        assert_int_equal(llmc_semq_decode(rec, n, &back), LLMC_EINVAL);
        rec[i] ^= 0x20;
    }
    assert_int_equal(llmc_semq_decode(rec, n - 1, &back), LLMC_EINVAL);
    assert_int_equal(llmc_semq_decode(rec, 3, &back), LLMC_EINVAL);
    free(rec);
    /* A checksummed record whose vector holds a NaN is refused too. */
    vec[5] = NAN;
    assert_non_null(rec = llmc_semq_encode(&q, &n));
    assert_int_equal(llmc_semq_decode(rec, n, &back), LLMC_EINVAL);
    free(rec);
    vec[5] = 0.5f;
    /* Without a vector. */
    q.vec = NULL;
    assert_non_null(rec = llmc_semq_encode(&q, &n));
    assert_int_equal(llmc_semq_decode(rec, n, &back), 0);
    assert_null(back.vec);
    assert_int_equal(back.dim, 0);
    llmc_semq_clear(&back);
    free(rec);
    /* Over the bounds: not written. */
    q.vec = vec;
    q.dim = LLMC_SEMQ_MAX_DIM + 1;
    assert_null(llmc_semq_encode(&q, &n));
}

/* Version 1 records (key, partition, text) are still read: no vector. */
static void test_version_1_is_read(void **state)
{
    (void)state;
    const char *text = "why is the sky blue";
    uint32_t magic = 0x31515353u, len = (uint32_t)strlen(text);
    uint8_t rec[256], md[EVP_MAX_MD_SIZE];
    unsigned mdlen;
    size_t n = 0;
    memcpy(rec, &magic, 4);
    memcpy(rec + 4, &len, 4);
    memset(rec + 8, 1, 2 * LLMC_KEY_LEN);
    n = 8 + 2 * LLMC_KEY_LEN;
    memcpy(rec + n, text, len);
    n += len;
    EVP_Digest(rec, n, md, &mdlen, EVP_sha256(), NULL);
    memcpy(rec + n, md, 8);
    n += 8;
    llmc_semq_t back;
    assert_int_equal(llmc_semq_decode(rec, n, &back), 0);
    assert_string_equal(back.text, text);
    assert_string_equal(back.id, "");
    assert_null(back.vec);
    llmc_semq_clear(&back);
}

/* ---- the tier across restarts ------------------------------------------------------- */

#include "fake_store.h"

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct ask {
    llmc_tier_query_t q;
    char body[512];
} ask_t;

static void ask_in(ask_t *a, uint8_t key, const char *question)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->body, sizeof(a->body),
             "{\"messages\":[{\"content\":\"%s\",\"role\":\"user\"}],\"model\":\"m\"}", question);
    a->q.key.b[0] = key;
    a->q.path = CHAT;
    a->q.body = a->body;
    a->q.body_len = strlen(a->body);
    a->q.scope = "";
    a->q.ns = "";
    a->q.model = "m";
    a->q.similar = true;
}

static llmc_entry_t *look(llmc_tier_t *t, ask_t *a)
{
    llmc_tier_lookup_t lk = {.query = &a->q, .now_ms = wall_ms(), .similarity = -1};
    int rc = t->ops->lookup(t, &lk);
    assert_true(rc == 0 || rc == LLMC_ENOENT);
    return lk.entry;
}

static llmc_entry_t *answer(llmc_tier_t *t, ask_t *a, const char *text)
{
    llmc_entry_spec_t spec = {
        .key = &a->q.key, .status = 200, .created_ms = wall_ms(),
        .expires_ms = wall_ms() + 3600 * 1000, .content_type = "application/json",
        .route = CHAT, .model = "m", .ns = "", .body = text, .body_len = strlen(text),
    };
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);
    assert_int_equal(t->ops->put(t, 0, e, wall_ms()), 0);
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

/* A tier on dir, once its restore thread is done. */
static llmc_tier_t *start(const char *dir, store_t *st)
{
    char old[128];
    llmc_semantic_config_t cfg = {.dir = dir, .store = &st->tier};
    llmc_tier_t *t = llmc_tier_semantic_new(&cfg);
    assert_non_null(t);
    snprintf(old, sizeof(old), "%s/semantic.log.old", dir);
    for (int i = 0; i < 500 && access(old, F_OK) == 0; i++)
        usleep(10000);
    assert_int_not_equal(access(old, F_OK), 0);
    return t;
}

static void append(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "ab");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* The stored vectors are used (nothing embedded anew); a torn record at
   the end is skipped; a record another embedder made is embedded anew by
   the lexical one; a garbage file is no crash. */
static void test_restart_uses_stored_vectors(void **state)
{
    (void)state;
    char dir[] = "/tmp/llmc-semq-XXXXXX", log[128], old[128];
    assert_non_null(mkdtemp(dir));
    snprintf(log, sizeof(log), "%s/semantic.log", dir);
    snprintf(old, sizeof(old), "%s/semantic.log.old", dir);
    store_t st = {.tier = {.ops = &store_ops}};
    st.tier.impl = &st;

    llmc_tier_t *t = start(dir, &st);
    ask_t a, b, c;
    ask_in(&a, 1, "What is the capital of France?");
    ask_in(&b, 2, "Why is the sky blue?");
    assert_null(look(t, &a));
    st.held[0] = answer(t, &a, "Paris");
    assert_null(look(t, &b));
    st.held[1] = answer(t, &b, "Rayleigh");
    t->ops->destroy(t);

    /* A crash tore the last write: half a record at the end. */
    uint8_t half[40];
    memset(half, 0, sizeof(half));
    memcpy(half, "SSQ2", 4);
    append(log, half, sizeof(half));
    t = start(dir, &st);
    assert_int_equal(xstat(t, "restored"), 2);
    assert_int_equal(xstat(t, "restore/reembedded"), 0);
    ask_in(&c, 3, "what's the capital of france");
    llmc_entry_t *hit = look(t, &c);
    assert_ptr_equal(hit, st.held[0]);
    llmc_entry_unref(hit);
    t->ops->destroy(t);

    /* A record another embedder made (its vector means nothing here). */
    float other[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    ask_t d;
    ask_in(&d, 4, "How many legs does a spider have?");
    st.held[2] = answer(t = start(dir, &st), &d, "8"); /* put() without a lookup: not indexed */
    t->ops->destroy(t);
    llmc_semq_t q = {.key = d.q.key, .text = "How many legs does a spider have?", .len = 33,
                     .vec = other, .dim = 8};
    memset(q.part.b, 0, LLMC_KEY_LEN);
    snprintf(q.id, sizeof(q.id), "openai other http://elsewhere/v1");
    size_t n;
    uint8_t *rec = llmc_semq_encode(&q, &n);
    assert_non_null(rec);
    append(log, rec, n);
    free(rec);
    t = start(dir, &st);
    assert_int_equal(xstat(t, "restored"), 3);
    assert_int_equal(xstat(t, "restore/reembedded"), 1);
    t->ops->destroy(t);

    /* Nothing but garbage: nothing restored, no crash. */
    unlink(log);
    char junk[4096];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 131 + 7);
    append(log, junk, sizeof(junk));
    t = start(dir, &st);
    assert_int_equal(xstat(t, "restored"), 0);
    t->ops->destroy(t);

    for (int i = 0; i < 4; i++)
        if (st.held[i])
            llmc_entry_unref(st.held[i]);
    unlink(log);
    unlink(old);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_round_trip_and_damage),
        cmocka_unit_test(test_version_1_is_read),
        cmocka_unit_test(test_restart_uses_stored_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
