/*
 * test_zdict.c: compression at rest (src/core/zdict.c) through the record
 * codec (src/core/record.c): round trips with and without a dictionary,
 * bodies too small to compress, the change-over to a newer dictionary with
 * records of the old one still readable, dictionaries surviving a restart
 * through their directory, background training, version 2 records still
 * read, and damage inside a compressed body refused.
 */
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
#include "llmc/record.h"
#include "llmc/zdict.h"

static const char *const words[] = {
    "the", "cache", "server", "returns", "a", "summary", "of", "each", "record", "when",
    "model", "request", "is", "large", "before", "deadline", "user", "profile", "reads",
    "quickly", "network", "latency", "improves", "budget", "report", "monthly", "garden",
    "planet", "river", "explains", "carefully", "without", "blocking", "loop", "values",
};

static uint64_t rng = 88172645463325252ULL;

static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* A chat.completion answer of about n bytes of varied text. */
static char *answer(size_t n)
{
    size_t cap = n + 1024, len = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    len += (size_t)snprintf(b, cap, "{\"id\":\"chatcmpl-%08x%08x\",\"object\":\"chat.completion\","
                            "\"created\":%u,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{"
                            "\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
                            next(), next(), 1700000000u + next() % 10000000u);
    while (len < n) {
        const char *w = words[next() % (sizeof words / sizeof words[0])];
        len += (size_t)snprintf(b + len, cap - len, "%s%s", w, next() % 9 ? " " : ". ");
    }
    snprintf(b + len, cap - len, "\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":%u,"
             "\"completion_tokens\":%u,\"total_tokens\":%u}}", next() % 900, next() % 900,
             next() % 1800);
    return b;
}

static llmc_key_t key_of(uint32_t seed)
{
    llmc_key_t k;
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        k.b[i] = (uint8_t)(seed * 31 + (uint32_t)i);
    return k;
}

static llmc_entry_t *entry_of(const llmc_key_t *k, const char *body)
{
    llmc_entry_spec_t s = {
        .key = k, .status = 200, .created_ms = 1700000000000LL, .expires_ms = 1700000300000LL,
        .content_type = "application/json", .ns = "ns", .model = "gpt-4o-mini",
        .route = "/v1/chat/completions", .body = body, .body_len = strlen(body),
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    assert_non_null(e);
    return e;
}

/* Encodes e through a plan; returns the record, *len its bytes, *dict its dictionary. */
static uint8_t *encode(const llmc_entry_t *e, size_t *len, bool *packed, uint32_t *dict)
{
    llmc_record_plan_t pl;
    assert_int_equal(llmc_record_plan(e, &pl), 0);
    uint8_t *buf = malloc(pl.size);
    assert_non_null(buf);
    assert_int_equal(llmc_record_plan_write(&pl, buf, pl.size), 0);
    *len = pl.size;
    *packed = pl.z != NULL;
    *dict = pl.dict_id;
    llmc_record_plan_free(&pl);
    return buf;
}

static void expect_body(const llmc_key_t *k, const uint8_t *buf, size_t len, const char *body)
{
    llmc_entry_t *out = NULL;
    assert_int_equal(llmc_record_decode(k, buf, len, &out), 0);
    assert_int_equal(out->body_len, strlen(body));
    assert_memory_equal(out->body, body, out->body_len);
    assert_int_equal(out->body[out->body_len], 0);
    assert_string_equal(llmc_entry_route(out), "/v1/chat/completions");
    llmc_entry_unref(out);
}

static void init(size_t min, size_t samples, size_t retrain, const char *dir)
{
    llmc_zdict_opts_t o = { .on = true, .min_bytes = min, .train_samples = samples,
                            .retrain_every = retrain };
    char err[200] = "";
    assert_int_equal(llmc_zdict_init(&o, dir, err, sizeof err), 0);
}

/* Packs n answers (samples for training); returns nothing. */
static void feed(int n)
{
    for (int i = 0; i < n; i++) {
        char *b = answer(300 + next() % 3000);
        uint8_t *z = NULL;
        size_t zl;
        uint32_t id;
        assert_true(llmc_zdict_pack(b, strlen(b), &z, &zl, &id) >= 0);
        free(z);
        free(b);
    }
}

static void test_plain_zstd_round_trip(void **state)
{
    (void)state;
    init(256, 0, 0, NULL);
    llmc_key_t k = key_of(1);
    char *body = answer(2000);
    llmc_entry_t *e = entry_of(&k, body);
    size_t len;
    bool packed;
    uint32_t dict;
    uint8_t *buf = encode(e, &len, &packed, &dict);
    assert_true(packed);
    assert_int_equal(dict, 0);
    assert_true(len < llmc_record_size(e));
    assert_int_equal(buf[10], LLMC_RECORD_ZSTD);
    expect_body(&k, buf, len, body);
    free(buf);
    llmc_entry_unref(e);
    free(body);
    llmc_zdict_shutdown();
}

static void test_small_or_off_is_stored_as_is(void **state)
{
    (void)state;
    llmc_key_t k = key_of(2);
    char *body = answer(100);
    llmc_entry_t *e = entry_of(&k, body);
    size_t len;
    bool packed;
    uint32_t dict;
    init(4096, 0, 0, NULL);
    uint8_t *buf = encode(e, &len, &packed, &dict);
    assert_false(packed);
    assert_int_equal(len, llmc_record_size(e));
    assert_int_equal(buf[10], 0);
    expect_body(&k, buf, len, body);
    free(buf);
    llmc_zdict_shutdown();
    /* Not initialised at all (a process without a disk tier): as it is. */
    buf = encode(e, &len, &packed, &dict);
    assert_false(packed);
    free(buf);
    llmc_entry_unref(e);
    free(body);
}

/* Records under dictionary 1 still read after dictionary 2 took over; a
   dictionary beats none on unseen answers. */
static void test_dictionary_change_over(void **state)
{
    (void)state;
    init(256, 0, 0, NULL);
    llmc_key_t k1 = key_of(3), k2 = key_of(4);
    char *b1 = answer(600), *b2 = answer(600);
    llmc_entry_t *e1 = entry_of(&k1, b1), *e2 = entry_of(&k2, b2);
    size_t plain_len, len1, len2;
    bool packed;
    uint32_t dict;
    uint8_t *plain = encode(e1, &plain_len, &packed, &dict);
    assert_int_equal(dict, 0);
    feed(400);
    assert_int_equal(llmc_zdict_train_now(), 0);
    llmc_zdict_stats_t st;
    llmc_zdict_get_stats(&st);
    assert_int_equal(st.current, 1);
    uint8_t *r1 = encode(e1, &len1, &packed, &dict);
    assert_true(packed);
    assert_int_equal(dict, 1);
    assert_true(len1 < plain_len);
    feed(400);
    assert_int_equal(llmc_zdict_train_now(), 0);
    llmc_zdict_get_stats(&st);
    assert_int_equal(st.current, 2);
    assert_int_equal(st.count, 2);
    uint8_t *r2 = encode(e2, &len2, &packed, &dict);
    assert_int_equal(dict, 2);
    expect_body(&k1, r1, len1, b1);
    expect_body(&k2, r2, len2, b2);
    expect_body(&k1, plain, plain_len, b1);
    free(plain);
    free(r1);
    free(r2);
    llmc_entry_unref(e1);
    llmc_entry_unref(e2);
    free(b1);
    free(b2);
    llmc_zdict_shutdown();
}

/* With a directory, a record compressed with a trained dictionary reads
   after a restart; without the dictionary it is damage, not a wrong body. */
static void test_dictionaries_survive_a_restart(void **state)
{
    (void)state;
    char dir[] = "/tmp/llmc-zdict-XXXXXX";
    assert_non_null(mkdtemp(dir));
    init(256, 0, 0, dir);
    feed(300);
    assert_int_equal(llmc_zdict_train_now(), 0);
    llmc_key_t k = key_of(5);
    char *body = answer(1500);
    llmc_entry_t *e = entry_of(&k, body);
    size_t len;
    bool packed;
    uint32_t dict;
    uint8_t *buf = encode(e, &len, &packed, &dict);
    assert_int_equal(dict, 1);
    llmc_zdict_shutdown();

    init(256, 0, 0, dir);
    expect_body(&k, buf, len, body);
    llmc_zdict_stats_t st;
    llmc_zdict_get_stats(&st);
    assert_int_equal(st.current, 1);
    llmc_zdict_shutdown();

    /* Its dictionary gone: a sound record this process cannot read, which
       the disk tier drops like one of another format (not damage). */
    init(256, 0, 0, NULL);
    llmc_entry_t *out = NULL;
    assert_int_equal(llmc_record_decode(&k, buf, len, &out), LLMC_EVERSION);
    assert_null(out);
    llmc_zdict_shutdown();

    /* An unreadable dictionary file does not stop the start, and its id is
       never reused for a new one. */
    char path[200];
    snprintf(path, sizeof path, "%s/zdict-7", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    init(256, 0, 0, dir);
    llmc_zdict_get_stats(&st);
    assert_int_equal(st.count, 1);
    feed(300);
    assert_int_equal(llmc_zdict_train_now(), 0);
    llmc_zdict_get_stats(&st);
    assert_int_equal(st.current, 8);
    expect_body(&k, buf, len, body);
    llmc_zdict_shutdown();
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/zdict-8", dir);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/zdict-1", dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
    free(buf);
    llmc_entry_unref(e);
    free(body);
}

static void test_trains_in_the_background(void **state)
{
    (void)state;
    init(256, 200, 0, NULL);
    feed(250);
    llmc_zdict_stats_t st = {0};
    for (int i = 0; i < 1000 && st.current == 0; i++) {
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        llmc_zdict_get_stats(&st);
    }
    assert_int_equal(st.current, 1);
    assert_int_equal(st.trainings, 1);
    llmc_zdict_shutdown();
}

static void reseal(const llmc_key_t *k, uint8_t *buf, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_true(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL));
    assert_true(EVP_DigestUpdate(ctx, k->b, LLMC_KEY_LEN));
    assert_true(EVP_DigestUpdate(ctx, buf, len - 8));
    assert_true(EVP_DigestFinal_ex(ctx, md, NULL));
    EVP_MD_CTX_free(ctx);
    memcpy(buf + len - 8, md, 8); /* SHA-256 bytes as the LE u64's bytes */
}

/* A version 2 record is a version 3 one stored as it is: it still reads.
   Version 2 never had the encoding field, so one that sets it is damage. */
static void test_version_2_still_reads(void **state)
{
    (void)state;
    llmc_key_t k = key_of(6);
    char *body = answer(800);
    llmc_entry_t *e = entry_of(&k, body), *out = NULL;
    uint8_t *buf;
    size_t len;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    buf[2] = 2;
    reseal(&k, buf, len);
    expect_body(&k, buf, len, body);
    buf[10] = LLMC_RECORD_ZSTD;
    reseal(&k, buf, len);
    assert_int_equal(llmc_record_decode(&k, buf, len, &out), LLMC_ECORRUPT);
    free(buf);
    llmc_entry_unref(e);
    free(body);
}

/* Where a compressed record's zstd head starts: its body (length at byte
   56, 24 bits are plenty here) ends before the 8-byte trailer. */
static size_t zhead_of(const uint8_t *buf, size_t len)
{
    return len - 8 - (size_t)buf[56] - ((size_t)buf[57] << 8) - ((size_t)buf[58] << 16);
}

/* Lies inside a compressed body behind a valid checksum: ECORRUPT (an
   unknown dictionary: EVERSION). */
static void test_damaged_frame_is_corrupt(void **state)
{
    (void)state;
    init(256, 0, 0, NULL);
    llmc_key_t k = key_of(7);
    char *body = answer(1200);
    llmc_entry_t *e = entry_of(&k, body), *out = NULL;
    size_t len;
    bool packed;
    uint32_t dict;
    uint8_t *buf = encode(e, &len, &packed, &dict);
    assert_true(packed);
    size_t zhead = zhead_of(buf, len);
    uint8_t *copy = malloc(len);
    /* the decoded length, the dictionary id (one this process does not
       have: unreadable here, like another format), a frame byte, an
       unknown encoding */
    size_t offs[] = { zhead + 4, zhead, zhead + LLMC_RECORD_ZHEAD + 5, 10 };
    int want[] = { LLMC_ECORRUPT, LLMC_EVERSION, LLMC_ECORRUPT, LLMC_ECORRUPT };
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        memcpy(copy, buf, len);
        copy[offs[i]] ^= 0x5a;
        reseal(&k, copy, len);
        assert_int_equal(llmc_record_decode(&k, copy, len, &out), want[i]);
        assert_null(out);
    }
    free(copy);
    free(buf);
    llmc_entry_unref(e);
    free(body);
    llmc_zdict_shutdown();
}

/* A record whose decoded length is forged (resealed, so its checksum
   holds) is refused before that length sizes a buffer: 3.75 GiB claimed
   for a 1 KB frame once made decode try the malloc (fuzz_record's OOM). */
static void test_forged_length_sizes_nothing(void **state)
{
    (void)state;
    init(256, 0, 0, NULL);
    llmc_key_t k = key_of(8);
    char *body = answer(1200);
    llmc_entry_t *e = entry_of(&k, body), *out = NULL;
    size_t len;
    bool packed;
    uint32_t dict;
    uint8_t *buf = encode(e, &len, &packed, &dict);
    assert_true(packed);
    size_t zhead = zhead_of(buf, len);
    const uint8_t *frame = buf + zhead + LLMC_RECORD_ZHEAD;
    size_t flen = len - 8 - zhead - LLMC_RECORD_ZHEAD;
    assert_int_equal(llmc_zdict_frame_fits(frame, flen, strlen(body)), 0);
    assert_int_equal(llmc_zdict_frame_fits(frame, flen, strlen(body) + 1), LLMC_ECORRUPT);
    assert_int_equal(llmc_zdict_frame_fits("not zstd", 8, 4), LLMC_ECORRUPT);
    uint64_t forged = 0xF0000000ull; /* 3.75 GiB, under LLMC_ENTRY_MAX_BODY */
    uint8_t *copy = malloc(len);
    memcpy(copy, buf, len);
    for (int i = 0; i < 8; i++)
        copy[zhead + 4 + i] = (uint8_t)(forged >> (8 * i));
    reseal(&k, copy, len);
    assert_int_equal(llmc_record_decode(&k, copy, len, &out), LLMC_ECORRUPT);
    assert_null(out);
    free(copy);
    free(buf);
    llmc_entry_unref(e);
    free(body);
    llmc_zdict_shutdown();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_zstd_round_trip),
        cmocka_unit_test(test_forged_length_sizes_nothing),
        cmocka_unit_test(test_small_or_off_is_stored_as_is),
        cmocka_unit_test(test_dictionary_change_over),
        cmocka_unit_test(test_dictionaries_survive_a_restart),
        cmocka_unit_test(test_trains_in_the_background),
        cmocka_unit_test(test_version_2_still_reads),
        cmocka_unit_test(test_damaged_frame_is_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
