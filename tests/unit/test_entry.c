/*
 * test_entry.c: cache entries (src/core/entry.c).
 *
 * Checks that an entry copies everything it is given into one block whose
 * measured size is what the allocator reports, that its validators and time
 * helpers answer what a client would see, and that references keep it alive.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/checkers.h"
#include "llmc/entry.h"

static llmc_key_t key_of(uint8_t seed)
{
    llmc_key_t k;
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        k.b[i] = (uint8_t)(seed + i * 7);
    return k;
}

/* True when [p, p + n) lies inside the entry's block. */
static int inside(const llmc_entry_t *e, const void *p, size_t n)
{
    const char *base = (const char *)e, *q = p;
    return q >= base + sizeof(*e) && q + n <= base + e->mem_bytes;
}

static void test_round_trip(void **state)
{
    (void)state;
    llmc_key_t k = key_of(3);
    const char *tags[] = {"team-a", "", "release-2"};
    float vec[5] = {0.5f, -1.25f, 3.0f, 0.0f, 1e-3f};
    char body[] = "{\"choices\":[{\"text\":\"hi\"}]}";
    char ns[] = "tenant-1";
    llmc_entry_spec_t spec = {
        .key = &k, .status = 200, .flags = LLMC_ENTRY_PRIVATE | LLMC_ENTRY_FROM_STREAM,
        .created_ms = 1000, .expires_ms = 61000,
        .content_type = "text/event-stream", .ns = ns, .model = "gpt-4o-mini",
        .tags = tags, .ntags = 3, .vector = vec, .dim = 5,
        .body = body, .body_len = strlen(body),
    };
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);

    /* The entry keeps copies: changing the caller's buffers changes nothing. */
    memset(body, 'x', strlen(body));
    ns[0] = 'X';
    vec[0] = 99.0f;

    assert_memory_equal(e->key.b, k.b, LLMC_KEY_LEN);
    assert_int_equal(e->refcnt, 1);
    assert_int_equal(e->status, 200);
    assert_int_equal(e->flags, LLMC_ENTRY_PRIVATE | LLMC_ENTRY_FROM_STREAM);
    assert_int_equal(e->created_ms, 1000);
    assert_int_equal(e->expires_ms, 61000);
    assert_string_equal(llmc_entry_content_type(e), "text/event-stream");
    assert_string_equal(llmc_entry_ns(e), "tenant-1");
    assert_string_equal(llmc_entry_model(e), "gpt-4o-mini");
    assert_int_equal(e->ntags, 3);
    assert_string_equal(llmc_entry_tag(e, 0), "team-a");
    assert_string_equal(llmc_entry_tag(e, 1), "");
    assert_string_equal(llmc_entry_tag(e, 2), "release-2");
    assert_int_equal(e->dim, 5);
    const float *v = llmc_entry_vector(e);
    assert_true(v[0] == 0.5f && v[1] == -1.25f && v[4] == 1e-3f);
    assert_int_equal(e->body_len, strlen("{\"choices\":[{\"text\":\"hi\"}]}"));
    assert_string_equal(e->body, "{\"choices\":[{\"text\":\"hi\"}]}");
    assert_null(e->link.hnext);
    assert_int_equal(e->in_cache, 0);
    llmc_entry_unref(e);
}

/* The token counts come from spec.usage alone, lie after the body's NUL
   inside the block, and cost the header nothing. */
static void test_usage_kept_after_the_body(void **state)
{
    (void)state;
    llmc_usage_t u = {.prompt_tokens = 4000000000u, .completion_tokens = 17}, got;
    llmc_entry_spec_t with = {.body = "{\"x\":1}", .body_len = 7, .usage = &u};
    llmc_entry_spec_t without = {.body = "{\"x\":1}", .body_len = 7,
                                 .flags = LLMC_ENTRY_USAGE | LLMC_ENTRY_PRIVATE};
    llmc_entry_t *a = llmc_entry_new(&with), *b = llmc_entry_new(&without);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(llmc_entry_usage(a, &got));
    assert_int_equal(got.prompt_tokens, 4000000000u);
    assert_int_equal(got.completion_tokens, 17);
    assert_int_equal(a->flags, LLMC_ENTRY_USAGE);
    assert_true(inside(a, a->body + a->body_len + 1, sizeof(llmc_usage_t)));
    assert_string_equal(a->body, "{\"x\":1}");
    /* A flag without counts is not taken from the caller. */
    assert_false(llmc_entry_usage(b, &got));
    assert_int_equal(b->flags, LLMC_ENTRY_PRIVATE);
    llmc_entry_unref(a);
    llmc_entry_unref(b);
}

static void test_single_allocation(void **state)
{
    (void)state;
    llmc_key_t k = key_of(9);
    const char *tags[] = {"a", "bb", "ccc"};
    float vec[7] = {1, 2, 3, 4, 5, 6, 7};
    char body[3001];
    memset(body, 'b', sizeof(body) - 1);
    body[3000] = 0;
    llmc_entry_spec_t spec = {
        .key = &k, .content_type = "application/x-custom", .ns = "n", .model = "m",
        .tags = tags, .ntags = 3, .vector = vec, .dim = 7, .body = body, .body_len = 3000,
    };
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);

    /* mem_bytes is the allocator's measure of the one block (the slab's
       class size, or malloc_usable_size under ASan)... */
    size_t need = sizeof(*e) + 2 + 2 + 21 + 2 + 3 + 4 + 7 * sizeof(float) + 3001;
    assert_true(e->mem_bytes >= need);
    /* ...with slack for alignment and the allocator's rounding only, not a second copy. */
    assert_true(e->mem_bytes < need + 64);

    /* ...and every part lives inside it, aligned for its type. */
    const char *ct = llmc_entry_content_type(e);
    assert_string_equal(ct, "application/x-custom");
    assert_true(inside(e, ct, strlen(ct) + 1));
    assert_true(inside(e, llmc_entry_ns(e), 2));
    assert_true(inside(e, llmc_entry_model(e), 2));
    for (uint32_t i = 0; i < 3; i++)
        assert_true(inside(e, llmc_entry_tag(e, i), strlen(llmc_entry_tag(e, i)) + 1));
    assert_true(inside(e, llmc_entry_vector(e), 7 * sizeof(float)));
    assert_int_equal((uintptr_t)llmc_entry_vector(e) % _Alignof(float), 0);
    assert_true(inside(e, e->body, e->body_len + 1));
    assert_int_equal(e->body[e->body_len], '\0');
    llmc_entry_unref(e);
}

/* Small entries come from the entry slab and big ones from malloc, each
   counted in llmc_entry_mem_stats; freeing gives both back. Under ASan
   every entry is a malloc block and the totals stay zero. */
static void test_blocks_from_the_slab(void **state)
{
    (void)state;
    static char big[8000];
    llmc_slab_stats_t before, mid, after;
    llmc_entry_spec_t small_spec = {.body = "hi", .body_len = 2};
    llmc_entry_spec_t big_spec = {.body = big, .body_len = sizeof(big)};

    llmc_entry_mem_stats(&before);
    llmc_entry_t *a = llmc_entry_new(&small_spec), *b = llmc_entry_new(&big_spec);
    assert_non_null(a);
    assert_non_null(b);
    llmc_entry_mem_stats(&mid);
    if (!LLMC_UNDER_ASAN && !LLMC_UNDER_VALGRIND()) {
        assert_int_equal(mid.blocks, before.blocks + 1);
        assert_int_equal(mid.used_bytes, before.used_bytes + a->mem_bytes);
        assert_int_equal(a->mem_bytes % 16, 0);
        assert_true(a->mem_bytes <= LLMC_SLAB_MAX);
        assert_int_equal(mid.big_blocks, before.big_blocks + 1);
        assert_int_equal(mid.big_bytes, before.big_bytes + b->mem_bytes);
    } else { /* the checkers watch malloc blocks: no slab */
        assert_int_equal(mid.blocks + mid.big_blocks, 0);
    }
    llmc_entry_unref(a);
    llmc_entry_unref(b);
    llmc_entry_mem_stats(&after);
    assert_int_equal(after.blocks, before.blocks);
    assert_int_equal(after.used_bytes, before.used_bytes);
    assert_int_equal(after.big_blocks, before.big_blocks);
    assert_int_equal(after.big_bytes, before.big_bytes);
}

static void test_defaults_when_absent(void **state)
{
    (void)state;
    llmc_entry_spec_t spec = {.status = 204};
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);
    assert_string_equal(llmc_entry_content_type(e), "application/json");
    assert_string_equal(llmc_entry_ns(e), "");
    assert_string_equal(llmc_entry_model(e), "");
    assert_int_equal(e->ntags, 0);
    assert_null(llmc_entry_vector(e));
    assert_int_equal(e->dim, 0);
    assert_int_equal(e->body_len, 0);
    assert_string_equal(e->body, "");
    /* SHA-256 of the empty string starts e3b0c44298fc1c14. */
    char tag[LLMC_ETAG_LEN];
    llmc_entry_etag(e, tag);
    assert_string_equal(tag, "\"e3b0c44298fc1c14\"");
    /* Nothing beyond the struct and the body's NUL: empty strings and a
       known content type take no bytes of the block. */
    assert_true(e->mem_bytes < sizeof(*e) + 1 + 24);
    llmc_entry_unref(e);

    /* A length without bytes is refused instead of read from NULL. */
    llmc_entry_spec_t bad = {.body_len = 5};
    assert_null(llmc_entry_new(&bad));
}

static void test_etag_is_sha256_prefix(void **state)
{
    (void)state;
    llmc_entry_spec_t spec = {.body = "hello", .body_len = 5};
    llmc_entry_t *a = llmc_entry_new(&spec);
    assert_non_null(a);
    /* SHA-256("hello") = 2cf24dba5fb0a30e26e8... */
    char ta[LLMC_ETAG_LEN], tb[LLMC_ETAG_LEN];
    llmc_entry_etag(a, ta);
    assert_string_equal(ta, "\"2cf24dba5fb0a30e\"");

    spec.body = "hellp";
    llmc_entry_t *b = llmc_entry_new(&spec);
    assert_non_null(b);
    llmc_entry_etag(b, tb);
    assert_string_not_equal(ta, tb);
    llmc_entry_unref(a);
    llmc_entry_unref(b);
}

/* A cache holds millions of small answers, and this struct is most of what
   one costs beyond its body (issue 6: under 200 bytes per entry in all). A
   field added here costs a million times over: keep it within 128 bytes. */
static void test_struct_stays_small(void **state)
{
    (void)state;
    assert_true(sizeof(llmc_entry_t) <= 128);
}

static void test_refuses_what_does_not_fit(void **state)
{
    (void)state;
    char big[LLMC_ENTRY_MAX_META + 1];
    memset(big, 'm', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    llmc_entry_spec_t spec = {.model = big};
    assert_false(llmc_entry_spec_fits(&spec));
    assert_null(llmc_entry_new(&spec));

    /* The limit is on the strings and tags together. */
    const char *tags[] = {big + 20, "0123456789"};
    llmc_entry_spec_t two = {.model = "0123456789", .tags = tags, .ntags = 2};
    assert_false(llmc_entry_spec_fits(&two));
    two.ntags = 1;
    assert_true(llmc_entry_spec_fits(&two));
    llmc_entry_t *e = llmc_entry_new(&two);
    assert_non_null(e);
    assert_string_equal(llmc_entry_tag(e, 0), big + 20);
    llmc_entry_unref(e);

    /* Flags are 8 bits; bodies and vectors have limits of their own. */
    llmc_entry_spec_t flags = {.flags = 0x100};
    assert_false(llmc_entry_spec_fits(&flags));
    llmc_entry_spec_t body = {.body = "x", .body_len = LLMC_ENTRY_MAX_BODY + 1};
    assert_false(llmc_entry_spec_fits(&body));
    float f = 0;
    llmc_entry_spec_t vec = {.vector = &f, .dim = LLMC_ENTRY_MAX_DIM + 1};
    assert_false(llmc_entry_spec_fits(&vec));
}

static void test_ttl_and_age(void **state)
{
    (void)state;
    llmc_entry_spec_t spec = {.created_ms = 1000, .expires_ms = 10000};
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);

    assert_int_equal(llmc_entry_ttl_left(e, 8500), 2);  /* 1.5 s rounds up */
    assert_int_equal(llmc_entry_ttl_left(e, 9000), 1);
    assert_int_equal(llmc_entry_ttl_left(e, 9999), 1);
    assert_int_equal(llmc_entry_ttl_left(e, 10000), 0);
    assert_int_equal(llmc_entry_ttl_left(e, 50000), 0); /* never negative */

    assert_int_equal(llmc_entry_age(e, 1000), 0);
    assert_int_equal(llmc_entry_age(e, 2999), 1);       /* whole seconds, rounded down */
    assert_int_equal(llmc_entry_age(e, 3000), 2);
    assert_int_equal(llmc_entry_age(e, 500), 0);        /* clock behind creation */
    llmc_entry_unref(e);

    llmc_entry_spec_t forever = {.created_ms = INT64_MIN, .expires_ms = INT64_MAX};
    e = llmc_entry_new(&forever);
    assert_non_null(e);
    assert_true(llmc_entry_ttl_left(e, INT64_MIN) > 0);
    assert_true(llmc_entry_age(e, INT64_MAX) > 0);
    llmc_entry_unref(e);
}

static void test_refcount(void **state)
{
    (void)state;
    llmc_entry_spec_t spec = {.body = "shared", .body_len = 6};
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);
    assert_ptr_equal(llmc_entry_ref(e), e);
    assert_int_equal(e->refcnt, 2);
    llmc_entry_unref(e);
    /* Still one reference: the body must be readable (ASan/valgrind would flag it). */
    assert_string_equal(e->body, "shared");
    llmc_entry_unref(e);
    llmc_entry_unref(NULL);
}

static void test_key_hex(void **state)
{
    (void)state;
    llmc_key_t k;
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        k.b[i] = (uint8_t)(i * 8 + 0x0f);
    char out[2 * LLMC_KEY_LEN + 1];
    memset(out, '?', sizeof(out));
    llmc_key_hex(&k, out);
    assert_int_equal(strlen(out), 64);
    assert_memory_equal(out, "0f171f272f373f47", 16);
    assert_memory_equal(out + 62, "07", 2); /* 31*8+15 = 263 -> 0x07 */
    for (int i = 0; i < 64; i++)
        assert_non_null(strchr("0123456789abcdef", out[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_usage_kept_after_the_body),
        cmocka_unit_test(test_single_allocation),
        cmocka_unit_test(test_blocks_from_the_slab),
        cmocka_unit_test(test_defaults_when_absent),
        cmocka_unit_test(test_etag_is_sha256_prefix),
        cmocka_unit_test(test_struct_stays_small),
        cmocka_unit_test(test_refuses_what_does_not_fit),
        cmocka_unit_test(test_ttl_and_age),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_key_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
