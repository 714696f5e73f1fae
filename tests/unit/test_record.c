/*
 * test_record.c: the disk tier's record codec (src/core/record.c).
 *
 * Round trips must give back every field; any damaged record (cut short,
 * one byte changed, under another key, lengths that lie behind a valid
 * checksum) must decode to LLMC_ECORRUPT and never crash; an intact record
 * of another format version must decode to LLMC_EVERSION. reseal() below
 * recomputes the checksum the way llmc/record.h specifies it, so the tests
 * also pin the format.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <sys/resource.h>

#include "llmc/error.h"
#include "llmc/record.h"

static llmc_key_t key_of(uint8_t seed)
{
    llmc_key_t k;
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        k.b[i] = (uint8_t)(seed * 31 + i);
    return k;
}

static const char *const tags3[] = { "team-a", "", "release-2" };
static const float vec4[] = { 0.5f, -1.25f, 3.0e-7f, -0.0f };
/* A body with a NUL inside: bodies are counted bytes, not C strings. */
static const char body_bin[] = "{\"a\":1}\0tail";

static llmc_entry_t *full_entry(const llmc_key_t *k)
{
    llmc_entry_spec_t s = {
        .key = k, .status = 203, .flags = LLMC_ENTRY_PRIVATE | LLMC_ENTRY_FROM_STREAM,
        .created_ms = 1700000000123LL, .expires_ms = 1700000300123LL,
        .content_type = "text/event-stream", .ns = "tenant-1", .model = "gpt-4o-mini",
        .route = "/v1/chat/completions", .tags = tags3, .ntags = 3, .vector = vec4, .dim = 4,
        .body = body_bin, .body_len = sizeof body_bin - 1,
    };
    return llmc_entry_new(&s);
}

static llmc_entry_t *empty_entry(const llmc_key_t *k)
{
    llmc_entry_spec_t s = {
        .key = k, .status = 200, .created_ms = -5, .expires_ms = 0,
        .content_type = "", .ns = "", .model = "", .body = "", .body_len = 0,
    };
    return llmc_entry_new(&s);
}

static void st16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static void st32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void st64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Rewrites the trailer: first 8 bytes of SHA-256(key || record minus trailer), LE. */
static void reseal(const llmc_key_t *k, uint8_t *buf, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_non_null(ctx);
    assert_true(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL));
    assert_true(EVP_DigestUpdate(ctx, k->b, LLMC_KEY_LEN));
    assert_true(EVP_DigestUpdate(ctx, buf, len - 8));
    assert_true(EVP_DigestFinal_ex(ctx, md, NULL));
    EVP_MD_CTX_free(ctx);
    memcpy(buf + len - 8, md, 8);
}

static void assert_same_entry(const llmc_entry_t *a, const llmc_entry_t *b)
{
    assert_memory_equal(a->key.b, b->key.b, LLMC_KEY_LEN);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->created_ms, b->created_ms);
    assert_int_equal(a->expires_ms, b->expires_ms);
    assert_string_equal(llmc_entry_content_type(a), llmc_entry_content_type(b));
    assert_string_equal(llmc_entry_ns(a), llmc_entry_ns(b));
    assert_string_equal(llmc_entry_model(a), llmc_entry_model(b));
    assert_string_equal(llmc_entry_route(a), llmc_entry_route(b));
    assert_int_equal(a->ntags, b->ntags);
    for (uint32_t i = 0; i < a->ntags; i++)
        assert_string_equal(llmc_entry_tag(a, i), llmc_entry_tag(b, i));
    assert_int_equal(a->dim, b->dim);
    if (a->dim)
        assert_memory_equal(llmc_entry_vector(a), llmc_entry_vector(b), a->dim * sizeof(float));
    assert_int_equal(a->body_len, b->body_len);
    assert_memory_equal(a->body, b->body, a->body_len);
    assert_memory_equal(a->etag, b->etag, sizeof(a->etag));
}

static void round_trip(llmc_entry_t *e)
{
    uint8_t *buf;
    size_t len;
    llmc_entry_t *back = NULL;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    assert_int_equal(len, llmc_record_size(e));
    assert_int_equal(llmc_record_decode(&e->key, buf, len, &back), 0);
    assert_same_entry(e, back);
    assert_int_equal(back->refcnt, 1);
    llmc_entry_unref(back);
    free(buf);
}

static void test_round_trip_full(void **state)
{
    (void)state;
    llmc_key_t k = key_of(1);
    llmc_entry_t *e = full_entry(&k);
    round_trip(e);
    llmc_entry_unref(e);
}

/* The token counts are not in the record: they are read from the body again
   when it is decoded, so an entry read back from disk has them too. */
static void test_usage_comes_back_from_the_body(void **state)
{
    (void)state;
    llmc_key_t k = key_of(7);
    static const char body[] = "{\"object\":\"chat.completion\",\"choices\":[],"
                               "\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":22}}";
    llmc_usage_t u = {11, 22}, got;
    llmc_entry_spec_t spec = {.key = &k, .status = 200, .body = body, .body_len = strlen(body),
                              .usage = &u};
    llmc_entry_t *e = llmc_entry_new(&spec), *back = NULL;
    uint8_t *buf;
    size_t len;
    assert_non_null(e);
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    assert_int_equal(llmc_record_decode(&k, buf, len, &back), 0);
    assert_same_entry(e, back);
    assert_true(llmc_entry_usage(back, &got));
    assert_int_equal(got.prompt_tokens, 11);
    assert_int_equal(got.completion_tokens, 22);
    llmc_entry_unref(back);
    llmc_entry_unref(e);
    free(buf);
}

static void test_round_trip_empty_strings(void **state)
{
    (void)state;
    llmc_key_t k = key_of(2);
    llmc_entry_t *e = empty_entry(&k);
    round_trip(e);
    llmc_entry_unref(e);
}

static void test_layout_is_fixed_little_endian(void **state)
{
    (void)state;
    llmc_key_t k = key_of(3);
    llmc_entry_t *e = full_entry(&k);
    uint8_t *buf;
    size_t len;
    int64_t created, expires;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    assert_int_equal(buf[0], 'L');
    assert_int_equal(buf[1], 'R');
    assert_int_equal(buf[2], LLMC_RECORD_VERSION);
    assert_int_equal(buf[3], 0);
    assert_int_equal(buf[8], 203);    /* status, low byte first */
    assert_int_equal(buf[12], 3);     /* ntags */
    assert_memory_equal(buf + 64, "text/event-stream", 18);   /* with its NUL */
    assert_int_equal(llmc_record_peek(buf, len, &created, &expires), 0);
    assert_int_equal(created, e->created_ms);
    assert_int_equal(expires, e->expires_ms);
    free(buf);
    llmc_entry_unref(e);
}

static void test_write_needs_exact_size(void **state)
{
    (void)state;
    llmc_key_t k = key_of(4);
    llmc_entry_t *e = full_entry(&k);
    size_t n = llmc_record_size(e);
    uint8_t *buf = malloc(n + 1);
    assert_int_equal(llmc_record_write(e, buf, n + 1), LLMC_EINVAL);
    assert_int_equal(llmc_record_write(e, buf, n - 1), LLMC_EINVAL);
    assert_int_equal(llmc_record_write(e, buf, n), 0);
    free(buf);
    llmc_entry_unref(e);
}

static void test_truncation_at_every_length(void **state)
{
    (void)state;
    llmc_key_t k = key_of(5);
    llmc_entry_t *e = full_entry(&k), *out;
    uint8_t *buf;
    size_t len;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    for (size_t n = 0; n < len; n++) {
        /* A fresh exact-size copy, so that ASan sees any read past n. */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, buf, n);
        out = NULL;
        assert_int_equal(llmc_record_decode(&k, cut, n, &out), LLMC_ECORRUPT);
        assert_null(out);
        free(cut);
    }
    free(buf);
    llmc_entry_unref(e);
}

static void test_any_flipped_byte_is_corrupt(void **state)
{
    (void)state;
    llmc_key_t k = key_of(6);
    llmc_entry_t *e = full_entry(&k), *out = NULL;
    uint8_t *buf;
    size_t len;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            buf[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(llmc_record_decode(&k, buf, len, &out), LLMC_ECORRUPT);
            buf[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Restored, it decodes again: the failures above were the flips. */
    assert_int_equal(llmc_record_decode(&k, buf, len, &out), 0);
    llmc_entry_unref(out);
    free(buf);
    llmc_entry_unref(e);
}

static void test_other_key_is_corrupt(void **state)
{
    (void)state;
    llmc_key_t k = key_of(7), other = key_of(8);
    llmc_entry_t *e = full_entry(&k), *out = NULL;
    uint8_t *buf;
    size_t len;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    assert_int_equal(llmc_record_decode(&other, buf, len, &out), LLMC_ECORRUPT);
    assert_null(out);
    free(buf);
    llmc_entry_unref(e);
}

static void test_other_versions(void **state)
{
    (void)state;
    llmc_key_t k = key_of(9);
    llmc_entry_t *e = full_entry(&k), *out = NULL;
    uint8_t *buf;
    size_t len;
    int64_t c, x;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    uint16_t versions[] = { 0, LLMC_RECORD_VERSION + 1, 0xffff };
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        st16(buf + 2, versions[i]);
        reseal(&k, buf, len);
        assert_int_equal(llmc_record_decode(&k, buf, len, &out), LLMC_EVERSION);
        assert_int_equal(llmc_record_peek(buf, len, &c, &x), LLMC_EVERSION);
        assert_null(out);
    }
    /* The wrong magic behind a valid checksum is not a version: it is damage. */
    st16(buf + 2, LLMC_RECORD_VERSION);
    st16(buf, 0x1234);
    reseal(&k, buf, len);
    assert_int_equal(llmc_record_decode(&k, buf, len, &out), LLMC_ECORRUPT);
    free(buf);
    llmc_entry_unref(e);
}

/* A version 1 record (written before the route was kept) is e's version 2
   record less the route's byte, with 1 in the version field: it decodes,
   with no route. A version 1 record with a route length is damage. */
static void test_version_1_still_decodes(void **state)
{
    (void)state;
    llmc_key_t k = key_of(11);
    llmc_entry_spec_t s = {
        .key = &k, .status = 200, .created_ms = 1700000000000LL, .expires_ms = 1700000300000LL,
        .content_type = "application/json", .ns = "ns", .model = "m", .tags = tags3, .ntags = 3,
        .body = "{}", .body_len = 2,
    };
    llmc_entry_t *e = llmc_entry_new(&s), *out = NULL;
    uint8_t *buf;
    size_t len;
    int64_t c, x;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    /* The route's NUL follows content_type, ns and model, each with its NUL. */
    size_t at = 64 + strlen("application/json") + 1 + strlen("ns") + 1 + strlen("m") + 1;
    assert_int_equal(buf[at], 0);
    memmove(buf + at, buf + at + 1, len - at - 1);
    len--;
    st16(buf + 2, 1);
    reseal(&k, buf, len);
    assert_int_equal(llmc_record_peek(buf, len, &c, &x), 0);
    assert_int_equal(llmc_record_decode(&k, buf, len, &out), 0);
    assert_same_entry(e, out);
    assert_string_equal(llmc_entry_route(out), "");
    llmc_entry_unref(out);
    out = NULL;
    st32(buf + 52, 1);
    reseal(&k, buf, len);
    assert_int_equal(llmc_record_decode(&k, buf, len, &out), LLMC_ECORRUPT);
    assert_null(out);
    free(buf);
    llmc_entry_unref(e);
}

/* Patches 4 or 8 bytes at off, reseals, and expects ECORRUPT. */
static void expect_lie(const llmc_entry_t *e, size_t off, int width, uint64_t value)
{
    uint8_t *buf;
    size_t len;
    llmc_entry_t *out = NULL;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    if (width == 2)
        st16(buf + off, (uint16_t)value);
    else if (width == 4)
        st32(buf + off, (uint32_t)value);
    else
        st64(buf + off, value);
    reseal(&e->key, buf, len);
    assert_int_equal(llmc_record_decode(&e->key, buf, len, &out), LLMC_ECORRUPT);
    assert_null(out);
    free(buf);
}

static void test_lying_lengths_behind_valid_checksum(void **state)
{
    (void)state;
    llmc_key_t k = key_of(10);
    llmc_entry_t *e = full_entry(&k);
    expect_lie(e, 10, 2, 1);                     /* reserved */
    expect_lie(e, 52, 4, 19);                    /* route one short: no NUL there */
    expect_lie(e, 52, 4, 21);                    /* route runs into the tags */
    expect_lie(e, 12, 4, 4);                     /* one tag more than the section holds */
    expect_lie(e, 12, 4, 2);                     /* one tag fewer: section not used up */
    expect_lie(e, 12, 4, UINT32_MAX);            /* a count that would size a huge array */
    expect_lie(e, 32, 4, 16);                    /* content_type one short: no NUL there */
    expect_lie(e, 32, 4, UINT32_MAX);
    expect_lie(e, 36, 4, 9);                     /* ns runs into model */
    expect_lie(e, 44, 4, 0);                     /* tag section says empty */
    expect_lie(e, 44, 4, UINT32_MAX);
    expect_lie(e, 48, 4, 5);                     /* vector longer than written */
    expect_lie(e, 48, 4, UINT32_MAX);
    expect_lie(e, 56, 8, sizeof body_bin);       /* body one longer */
    expect_lie(e, 56, 8, UINT64_MAX);
    expect_lie(e, 64 + 4, 2, 0);                 /* a NUL inside content_type */
    expect_lie(e, 4, 4, 0x100);                  /* flags no entry can hold */
    llmc_entry_unref(e);
}

/*
 * Found by fuzz_record: a tag count and tag-section length that agree with
 * each other but not with the record sized a multi-gigabyte allocation.
 * With the address space capped at 1 GB such an allocation fails, and the
 * decoder would answer ENOMEM instead of ECORRUPT. (ASan reserves terabytes
 * of shadow memory, so under it the cap is left off and the fuzzer's
 * malloc limit is what guards this.)
 */
static void test_huge_tag_count_is_refused_before_allocating(void **state)
{
    (void)state;
    llmc_key_t k = key_of(12);
    llmc_entry_t *e = full_entry(&k), *out = NULL;
    uint8_t *buf;
    size_t len;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);
    st32(buf + 12, 0x30000000u);   /* 805 million tags: 6.4 GB of pointers */
    st32(buf + 44, 0xF0000000u);   /* a section big enough for them, 5 bytes each */
    reseal(&k, buf, len);
    struct rlimit old, cap;
    assert_int_equal(getrlimit(RLIMIT_AS, &old), 0);
    cap = old;
#ifndef __SANITIZE_ADDRESS__
    cap.rlim_cur = 1ul << 30;
#endif
    assert_int_equal(setrlimit(RLIMIT_AS, &cap), 0);
    int rc = llmc_record_decode(&k, buf, len, &out);
    assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);
    assert_int_equal(rc, LLMC_ECORRUPT);
    assert_null(out);
    free(buf);
    llmc_entry_unref(e);
}

static void test_many_tags_and_big_vector(void **state)
{
    (void)state;
    llmc_key_t k = key_of(11);
    enum { NT = 40, DIM = 1536 };
    char names[NT][16];
    const char *tags[NT];
    static float vec[DIM];
    for (int i = 0; i < NT; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        tags[i] = names[i];
    }
    for (int i = 0; i < DIM; i++)
        vec[i] = (float)i / 7.0f;
    llmc_entry_spec_t s = {
        .key = &k, .status = 200, .created_ms = 1, .expires_ms = 2, .content_type = "a/b",
        .tags = tags, .ntags = NT, .vector = vec, .dim = DIM, .body = "x", .body_len = 1,
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    round_trip(e);
    llmc_entry_unref(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_full),
        cmocka_unit_test(test_usage_comes_back_from_the_body),
        cmocka_unit_test(test_round_trip_empty_strings),
        cmocka_unit_test(test_layout_is_fixed_little_endian),
        cmocka_unit_test(test_write_needs_exact_size),
        cmocka_unit_test(test_truncation_at_every_length),
        cmocka_unit_test(test_any_flipped_byte_is_corrupt),
        cmocka_unit_test(test_other_key_is_corrupt),
        cmocka_unit_test(test_other_versions),
        cmocka_unit_test(test_version_1_still_decodes),
        cmocka_unit_test(test_lying_lengths_behind_valid_checksum),
        cmocka_unit_test(test_huge_tag_count_is_refused_before_allocating),
        cmocka_unit_test(test_many_tags_and_big_vector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
