/*
 * test_key.c: canonical JSON and cache keys (src/core/key.c).
 *
 * The tests compare keys of two bodies the way the gateway will: bodies that
 * mean the same request must share a key, bodies that can get a different
 * answer must not.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "llmc/error.h"
#include "llmc/key.h"

#define PATH "/v1/chat/completions"
#define UP "https://api.openai.com/v1"

/* Key of body with the default path, upstream, scope and namespace. */
static llmc_key_t key_of(const char *body)
{
    llmc_canon_t c;
    llmc_key_t k;
    char err[256] = "";
    int rc = llmc_canon_parse(body, strlen(body), &c, err, sizeof err);
    if (rc != 0)
        fail_msg("parse of %s failed: %s", body, err);
    llmc_key_build(&k, PATH, UP, "shared", "", c.text, c.text_len);
    llmc_canon_free(&c);
    return k;
}

static bool same_key(const char *a, const char *b)
{
    llmc_key_t ka = key_of(a), kb = key_of(b);
    return memcmp(ka.b, kb.b, LLMC_KEY_LEN) == 0;
}

#define assert_same(a, b) assert_true(same_key((a), (b)))
#define assert_differ(a, b) assert_false(same_key((a), (b)))

/* Canonical text of body, for asserting on the exact form. */
static void assert_canon(const char *body, const char *want)
{
    llmc_canon_t c;
    char err[256] = "";
    assert_int_equal(llmc_canon_parse(body, strlen(body), &c, err, sizeof err), 0);
    assert_string_equal(c.text, want);
    assert_int_equal(c.text_len, strlen(want));
    llmc_canon_free(&c);
}

static void test_field_order_and_whitespace(void **state)
{
    (void)state;
    assert_same("{\"model\":\"m\",\"temperature\":0.5}",
                "{ \"temperature\" : 0.5 ,\n\t\"model\" : \"m\" }");
    assert_same("{\"a\":{\"x\":1,\"y\":2}}", "{\"a\":{\"y\":2,\"x\":1}}");
    assert_canon("{ \"b\" : [ 1 , { \"d\":1, \"c\":2 } ], \"a\" : null }",
                 "{\"a\":null,\"b\":[1,{\"c\":2,\"d\":1}]}");
}

static void test_number_forms(void **state)
{
    (void)state;
    const char *ones[] = {"1", "1.0", "1e0", "1E0", "10e-1", "1.000", "0.1e1"};
    for (size_t i = 0; i < sizeof ones / sizeof ones[0]; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"n\":%s}", ones[i]);
        assert_canon(body, "{\"n\":1}");
    }
    assert_canon("{\"n\":-0.0}", "{\"n\":0}");
    assert_canon("{\"n\":-0}", "{\"n\":0}");
    assert_same("{\"t\":0.1}", "{\"t\":1e-1}");
    assert_same("{\"t\":0.1}", "{\"t\":0.10000000000000000555}");
    assert_canon("{\"t\":0.1}", "{\"t\":0.1}");
    assert_canon("{\"t\":0.7,\"p\":[2.5,1e-7]}", "{\"p\":[2.5,1e-7],\"t\":0.7}");
    assert_canon("{\"n\":1e18}", "{\"n\":1000000000000000000}");
    assert_differ("{\"t\":0.1}", "{\"t\":0.2}");
    assert_differ("{\"t\":1}", "{\"t\":\"1\"}");
    assert_differ("{\"t\":0.30000000000000004}", "{\"t\":0.3}");
}

/* Every real must read back to the same double, whatever else the document
   holds: one real needing 17 digits must not shorten another. */
static void test_reals_round_trip(void **state)
{
    (void)state;
    const char *body = "{\"a\":0.1,\"b\":0.30000000000000004,\"c\":3.141592653589793}";
    llmc_canon_t c;
    char err[256];
    assert_int_equal(llmc_canon_parse(body, strlen(body), &c, err, sizeof err), 0);
    json_t *back = json_loads(c.text, 0, NULL);
    assert_non_null(back);
    assert_true(json_real_value(json_object_get(back, "a")) == 0.1);
    assert_true(json_real_value(json_object_get(back, "b")) == 0.30000000000000004);
    assert_true(json_real_value(json_object_get(back, "c")) == 3.141592653589793);
    json_decref(back);
    llmc_canon_free(&c);
}

static void test_string_escapes(void **state)
{
    (void)state;
    assert_same("{\"s\":\"\\u00e9\"}", "{\"s\":\"\xc3\xa9\"}");
    assert_same("{\"s\":\"a\\/b\"}", "{\"s\":\"a/b\"}");
    assert_same("{\"s\":\"\\u0041\"}", "{\"s\":\"A\"}");
    assert_same("{\"s\":\"\\ud83d\\ude00\"}", "{\"s\":\"\xf0\x9f\x98\x80\"}");
    assert_same("{\"\\u0061\":1}", "{\"a\":1}");
    assert_canon("{\"s\":\"\\u00e9\\/\\n\\u0001\"}", "{\"s\":\"\xc3\xa9/\\n\\u0001\"}");
    assert_differ("{\"s\":\"a\"}", "{\"s\":\"A\"}");
    /* NUL inside a string is valid JSON and must not truncate the key. */
    assert_differ("{\"s\":\"a\\u0000b\"}", "{\"s\":\"a\\u0000c\"}");
}

static void test_ignored_fields(void **state)
{
    (void)state;
    const char *base = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    assert_same(base, "{\"model\":\"m\",\"user\":\"alice\",\"messages\":"
                      "[{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_same(base, "{\"model\":\"m\",\"stream\":true,\"stream_options\":"
                      "{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_same(base, "{\"model\":\"m\",\"metadata\":{\"a\":\"b\"},\"store\":true,"
                      "\"service_tier\":\"flex\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    /* OpenAI's prompt-cache routing and the end user's id: the same answer. */
    assert_same(base, "{\"model\":\"m\",\"prompt_cache_key\":\"tenant-7\","
                      "\"prompt_cache_retention\":\"24h\",\"safety_identifier\":\"u-42\","
                      "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_same("{\"model\":\"m\",\"prompt_cache_key\":\"a\",\"safety_identifier\":\"x\"}",
                "{\"model\":\"m\",\"prompt_cache_key\":\"b\",\"safety_identifier\":\"y\"}");
    assert_true(llmc_key_field_ignored("prompt_cache_key"));
    assert_true(llmc_key_field_ignored("prompt_cache_retention"));
    assert_true(llmc_key_field_ignored("safety_identifier"));
    assert_true(llmc_key_field_ignored("user"));
    assert_true(llmc_key_field_ignored("stream"));
    assert_false(llmc_key_field_ignored("temperature"));
    assert_false(llmc_key_field_ignored("messages"));
}

/* Only top-level fields are ignored: a nested "user" is content. */
static void test_ignored_only_at_top(void **state)
{
    (void)state;
    assert_differ("{\"tools\":[{\"user\":\"a\"}]}", "{\"tools\":[{\"user\":\"b\"}]}");
}

static void test_relevant_fields_change_key(void **state)
{
    (void)state;
    const char *base = "{\"model\":\"m\",\"temperature\":0.5,\"messages\":"
                       "[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi\"}]}";
    assert_differ(base, "{\"model\":\"m\",\"temperature\":0.6,\"messages\":"
                        "[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_differ(base, "{\"model\":\"n\",\"temperature\":0.5,\"messages\":"
                        "[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_differ(base, "{\"model\":\"m\",\"temperature\":0.5,\"messages\":"
                        "[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"ho\"}]}");
    /* A parameter this gateway has never heard of still changes the answer. */
    assert_differ(base, "{\"model\":\"m\",\"temperature\":0.5,\"brand_new_param\":1,\"messages\":"
                        "[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi\"}]}");
    /* Array order is meaning: swapped messages are a different conversation. */
    assert_differ(base, "{\"model\":\"m\",\"temperature\":0.5,\"messages\":"
                        "[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"system\",\"content\":\"s\"}]}");
}

static void test_key_inputs(void **state)
{
    (void)state;
    const char *canon = "{\"a\":1}";
    size_t len = strlen(canon);
    llmc_key_t base, k;
    llmc_key_build(&base, PATH, UP, "shared", "", canon, len);

    llmc_key_build(&k, PATH, UP, "shared", "", canon, len);
    assert_memory_equal(base.b, k.b, LLMC_KEY_LEN);
    llmc_key_build(&k, "/v1/embeddings", UP, "shared", "", canon, len);
    assert_memory_not_equal(base.b, k.b, LLMC_KEY_LEN);
    llmc_key_build(&k, PATH, "http://other/v1", "shared", "", canon, len);
    assert_memory_not_equal(base.b, k.b, LLMC_KEY_LEN);
    llmc_key_build(&k, PATH, UP, "key:abc", "", canon, len);
    assert_memory_not_equal(base.b, k.b, LLMC_KEY_LEN);
    llmc_key_build(&k, PATH, UP, "shared", "ns1", canon, len);
    assert_memory_not_equal(base.b, k.b, LLMC_KEY_LEN);
    llmc_key_build(&k, PATH, UP, "shared", "", "{\"a\":2}", len);
    assert_memory_not_equal(base.b, k.b, LLMC_KEY_LEN);
    /* Only canon_len bytes of canon count. */
    llmc_key_build(&k, PATH, UP, "shared", "", "{\"a\":1}trailing", len);
    assert_memory_equal(base.b, k.b, LLMC_KEY_LEN);
}

static void test_no_concatenation_collisions(void **state)
{
    (void)state;
    llmc_key_t a, b;
    llmc_key_build(&a, "ab", UP, "s", "", "", 0);
    llmc_key_build(&b, "a", UP, "s", "b", "", 0);
    assert_memory_not_equal(a.b, b.b, LLMC_KEY_LEN);
    llmc_key_build(&a, "p", "u", "sx", "", "", 0);
    llmc_key_build(&b, "p", "us", "x", "", "", 0);
    assert_memory_not_equal(a.b, b.b, LLMC_KEY_LEN);
    llmc_key_build(&a, "p", "u", "s", "n", "c", 1);
    llmc_key_build(&b, "p", "u", "s", "", "nc", 2);
    assert_memory_not_equal(a.b, b.b, LLMC_KEY_LEN);
}

/* Appends an 8-byte little-endian length and the bytes of s to buf. */
static size_t put_field(uint8_t *buf, size_t at, const char *s)
{
    size_t len = strlen(s);
    for (int i = 0; i < 8; i++)
        buf[at + i] = (uint8_t)(len >> (8 * i));
    memcpy(buf + at + 8, s, len);
    return at + 8 + len;
}

/* The key layout is persisted by the disk tier, so it is pinned here: the
   version tag, then each field length-prefixed, in the documented order. */
static void test_key_layout(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = strlen("llmc-key-v1");
    memcpy(buf, "llmc-key-v1", n);
    n = put_field(buf, n, PATH);
    n = put_field(buf, n, UP);
    n = put_field(buf, n, "shared");
    n = put_field(buf, n, "ns");
    n = put_field(buf, n, "{\"a\":1}");
    uint8_t want[EVP_MAX_MD_SIZE];
    unsigned int wlen = 0;
    assert_true(EVP_Digest(buf, n, want, &wlen, EVP_sha256(), NULL));
    assert_int_equal(wlen, LLMC_KEY_LEN);

    llmc_key_t k;
    llmc_key_build(&k, PATH, UP, "shared", "ns", "{\"a\":1}", 7);
    assert_memory_equal(k.b, want, LLMC_KEY_LEN);
}

/* Asserts that k is the SHA-256 written as hex in want. */
static void assert_hex(const llmc_key_t *k, const char *want)
{
    char hex[2 * LLMC_KEY_LEN + 1];
    llmc_key_hex(k, hex);
    assert_string_equal(hex, want);
}

/* The fingerprint, scope and derived-form hashes were llmc_key_build calls
   with markers in its slots; each function is pinned to that call and, so
   that a change of the layout fails here, to a digest computed apart from
   this code (Python's hashlib over the documented layout). */
static void test_fingerprint_layout(void **state)
{
    (void)state;
    const char *raw = "{\"model\":\"m\"}";
    llmc_key_t old, k;
    llmc_key_build(&old, PATH, "fingerprint-v1", "Bearer sk-a", "ns", raw, strlen(raw));
    llmc_key_fingerprint(&k, PATH, "Bearer sk-a", "ns", raw, strlen(raw));
    assert_memory_equal(k.b, old.b, LLMC_KEY_LEN);
    assert_hex(&k, "f67502f3995ee037a1ccf0aef7cf8a6be12d948c44aeb48349fe2e6ff50ed2ed");

    /* Shared scope, no namespace, no body (GET /ask with an empty query). */
    llmc_key_build(&old, "/ask", "fingerprint-v1", "", "", "", 0);
    llmc_key_fingerprint(&k, "/ask", "", "", NULL, 0);
    assert_memory_equal(k.b, old.b, LLMC_KEY_LEN);

    /* Never the request key of the same parts. */
    llmc_key_build(&old, PATH, UP, "Bearer sk-a", "ns", raw, strlen(raw));
    llmc_key_fingerprint(&k, PATH, "Bearer sk-a", "ns", raw, strlen(raw));
    assert_memory_not_equal(k.b, old.b, LLMC_KEY_LEN);
}

static void test_scope_layout(void **state)
{
    (void)state;
    const char *auth = "Bearer sk-test";
    llmc_key_t old, k;
    llmc_key_build(&old, "scope", "", "", "", auth, strlen(auth));
    llmc_key_scope(&k, auth, strlen(auth));
    assert_memory_equal(k.b, old.b, LLMC_KEY_LEN);
    assert_hex(&k, "8900cb1894ea4978067cf4b9a516be669eaba856e8bfa5159295b5de0c2acc11");

    /* No Authorization header: the caller passed "" and 0 before. */
    llmc_key_build(&old, "scope", "", "", "", "", 0);
    llmc_key_scope(&k, NULL, 0);
    assert_memory_equal(k.b, old.b, LLMC_KEY_LEN);
    assert_hex(&k, "7d67ce6fb01e6788a6a502b99d2745b8fd1a17f841ce7db83538f6f2ebc5d45d");

    /* Only len bytes count. */
    llmc_key_scope(&k, "Bearer sk-test-and-more", strlen(auth));
    assert_hex(&k, "8900cb1894ea4978067cf4b9a516be669eaba856e8bfa5159295b5de0c2acc11");
}

/* Forwarded client headers fold into the scope slot through their own
   hash; a request that forwards none keeps its key (nothing to pin there
   but that llmc_key_build is untouched, which test_key_layout does). */
static void test_forwarded_layout(void **state)
{
    (void)state;
    const char *lines = "OpenAI-Organization: org-a\r\n";
    llmc_key_t old, k, other;
    llmc_key_build(&old, "forwarded-v1", "", "", "", lines, strlen(lines));
    llmc_key_forwarded(&k, "", lines, strlen(lines));
    assert_memory_equal(k.b, old.b, LLMC_KEY_LEN);
    assert_hex(&k, "0fd1b6af92a39750b238f10a86c90af6e9e7851d3c39d853f65fe0c3534aaac8");

    /* Another value, another scope: another hash. */
    llmc_key_forwarded(&other, "", "OpenAI-Organization: org-b\r\n", strlen(lines));
    assert_memory_not_equal(k.b, other.b, LLMC_KEY_LEN);
    llmc_key_forwarded(&other, "8900cb18", lines, strlen(lines));
    assert_memory_not_equal(k.b, other.b, LLMC_KEY_LEN);
    /* Never the scope hash of a credential with the same bytes. */
    llmc_key_scope(&other, lines, strlen(lines));
    assert_memory_not_equal(k.b, other.b, LLMC_KEY_LEN);
}

static void test_derived_layout(void **state)
{
    (void)state;
    const char *tag = "\"0123456789abcdef\"";
    llmc_key_t of, old, k;
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        of.b[i] = (uint8_t)i;
    llmc_key_build(&old, "derived-v1", "sse+usage", tag, "", (const char *)of.b, LLMC_KEY_LEN);
    llmc_key_derived(&k, &of, "sse+usage", tag);
    assert_memory_equal(k.b, old.b, LLMC_KEY_LEN);
    assert_hex(&k, "fcef46faaecdc7badd4a3b87d070213b1a7fc10e7c82fd3ee79d6553cba637fb");

    /* Another form, another ETag or another answer: another key. */
    llmc_key_derived(&old, &of, "ask", tag);
    assert_memory_not_equal(k.b, old.b, LLMC_KEY_LEN);
    llmc_key_derived(&old, &of, "sse+usage", "\"0123456789abcdee\"");
    assert_memory_not_equal(k.b, old.b, LLMC_KEY_LEN);
    of.b[31] ^= 1;
    llmc_key_derived(&old, &of, "sse+usage", tag);
    assert_memory_not_equal(k.b, old.b, LLMC_KEY_LEN);
}

static void test_cache_extension(void **state)
{
    (void)state;
    const char *body = "{\"model\":\"m\",\"cache\":{\"ttl\":60,\"namespace\":\"x\"}}";
    llmc_canon_t c;
    char err[256];
    assert_int_equal(llmc_canon_parse(body, strlen(body), &c, err, sizeof err), 0);
    assert_non_null(c.cache_ext);
    assert_int_equal(json_integer_value(json_object_get(c.cache_ext, "ttl")), 60);
    assert_null(json_object_get(c.root, "cache"));
    assert_string_equal(c.text, "{\"model\":\"m\"}");
    llmc_canon_free(&c);

    /* The extension steers the gateway, not the model: it is not in the key. */
    assert_same("{\"model\":\"m\"}", body);

    assert_int_equal(llmc_canon_parse("{\"a\":1}", 7, &c, err, sizeof err), 0);
    assert_null(c.cache_ext);
    llmc_canon_free(&c);
}

static void test_cache_not_object(void **state)
{
    (void)state;
    const char *bodies[] = {"{\"cache\":true}", "{\"cache\":null}", "{\"cache\":[1]}", "{\"cache\":\"x\"}"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        llmc_canon_t c;
        char err[256] = "";
        assert_int_equal(llmc_canon_parse(bodies[i], strlen(bodies[i]), &c, err, sizeof err), LLMC_EJSON);
        assert_string_equal(err, "cache must be an object");
        assert_null(c.root);
        assert_null(c.text);
    }
}

static void expect_ejson(const char *body, size_t len, const char *fragment)
{
    llmc_canon_t c;
    char err[256] = "";
    assert_int_equal(llmc_canon_parse(body, len, &c, err, sizeof err), LLMC_EJSON);
    if (!strstr(err, fragment))
        fail_msg("error for %.*s is \"%s\", want \"%s\" in it", (int)len, body, err, fragment);
    assert_null(c.root);
    assert_null(c.text);
    assert_null(c.cache_ext);
    llmc_canon_free(&c); /* safe on what an error leaves behind */
}

static void test_invalid_json(void **state)
{
    (void)state;
    expect_ejson("{\"a\":", 5, "not valid JSON");
    expect_ejson("{\"a\":1,}", 8, "not valid JSON");
    expect_ejson("{\"a\":1} x", 9, "not valid JSON");
    expect_ejson("{\"s\":\"\xff\"}", 8, "not valid JSON");
    expect_ejson("", 0, "empty");
    expect_ejson("[1,2]", 5, "must be a JSON object");
    expect_ejson("\"str\"", 5, "must be a JSON object");
    expect_ejson("42", 2, "must be a JSON object");
    expect_ejson("null", 4, "must be a JSON object");
    expect_ejson("{\"a\":1,\"a\":2}", 13, "duplicate");
    /* Not representable as a double: rejected rather than keyed as inf. */
    expect_ejson("{\"a\":1e400}", 11, "not valid JSON");

    /* Nesting deep enough to exhaust the stack of a recursive walk is refused
       by the parser, before the canonicaliser recurses over it. */
    size_t depth = 100000, n = 0;
    char *deep = malloc(2 * depth + 8);
    assert_non_null(deep);
    n += (size_t)sprintf(deep, "{\"a\":");
    memset(deep + n, '[', depth);
    memset(deep + n + depth, ']', depth);
    n += 2 * depth;
    deep[n++] = '}';
    expect_ejson(deep, n, "depth");
    free(deep);
}

/* A body that needs the big-integer fallback must not merge requests that
   differ only in an integer above 2^53 (regression: both became one double). */
static void test_big_integer_bodies_never_merge(void **state)
{
    (void)state;
    const char *a = "{\"model\":\"m\",\"seed\":9007199254740993,\"x\":100000000000000000000000}";
    const char *b = "{\"model\":\"m\",\"seed\":9007199254740992,\"x\":100000000000000000000000}";
    llmc_canon_t ca, cb;
    char err[128];
    assert_int_equal(llmc_canon_parse(a, strlen(a), &ca, err, sizeof(err)), 0);
    assert_int_equal(llmc_canon_parse(b, strlen(b), &cb, err, sizeof(err)), 0);
    assert_false(ca.text_len == cb.text_len && memcmp(ca.text, cb.text, ca.text_len) == 0);
    assert_string_equal(ca.model, "m");
    llmc_canon_free(&ca);
    llmc_canon_free(&cb);
}

/* Regression (fuzz_key): jansson skipped a raw NUL after a number, so the
   body was keyed like the one without it. */
static void test_raw_nul_byte_is_refused(void **state)
{
    (void)state;
    const char b[] = "{\"a\":1\0}";
    llmc_canon_t c;
    char err[128] = "";
    assert_int_equal(llmc_canon_parse(b, sizeof(b) - 1, &c, err, sizeof(err)), LLMC_EJSON);
    assert_non_null(strstr(err, "NUL"));
}

static void test_huge_integers(void **state)
{
    (void)state;
    /* Beyond json_int_t a body is keyed by its raw bytes (see key.c). */
    assert_canon("{\"seed\":123456789012345678901234567890}",
                 "raw:{\"seed\":123456789012345678901234567890}");
    assert_differ("{\"seed\":123456789012345678901234567890}",
                  "{\"seed\":123456789012345678901234567891000}");
    /* Largest json_int_t values stay exact. */
    assert_canon("{\"n\":9223372036854775807,\"m\":-9223372036854775808}",
                 "{\"m\":-9223372036854775808,\"n\":9223372036854775807}");
    assert_differ("{\"n\":9007199254740993}", "{\"n\":9007199254740992}");
    /* ...the whole body, so nothing in it is merged by normalising. */
    assert_canon("{\"a\":99999999999999999999,\"t\":1.0,\"u\":0.5}",
                 "raw:{\"a\":99999999999999999999,\"t\":1.0,\"u\":0.5}");
}

static void test_flags_and_model(void **state)
{
    (void)state;
    llmc_canon_t c;
    char err[256];
    const char *b1 = "{\"model\":\"gpt-x\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}";
    assert_int_equal(llmc_canon_parse(b1, strlen(b1), &c, err, sizeof err), 0);
    assert_true(c.stream);
    assert_true(c.include_usage);
    assert_string_equal(c.model, "gpt-x");
    llmc_canon_free(&c);

    const char *b2 = "{\"stream\":\"true\",\"model\":5,\"stream_options\":{\"include_usage\":false}}";
    assert_int_equal(llmc_canon_parse(b2, strlen(b2), &c, err, sizeof err), 0);
    assert_false(c.stream);
    assert_false(c.include_usage);
    assert_string_equal(c.model, "");
    llmc_canon_free(&c);

    /* root keeps the fields the key ignores: the upstream still needs them. */
    assert_int_equal(llmc_canon_parse(b1, strlen(b1), &c, err, sizeof err), 0);
    assert_true(json_is_true(json_object_get(c.root, "stream")));
    llmc_canon_free(&c);
}

/* Normalising the key text must leave the body forwarded upstream alone. */
static void test_root_numbers_untouched(void **state)
{
    (void)state;
    llmc_canon_t c;
    char err[256];
    const char *b = "{\"t\":1.0}";
    assert_int_equal(llmc_canon_parse(b, strlen(b), &c, err, sizeof err), 0);
    assert_true(json_is_real(json_object_get(c.root, "t")));
    llmc_canon_free(&c);
}

static void test_canon_dump(void **state)
{
    (void)state;
    char *out;
    size_t len;
    json_t *v = json_loads("{\"b\":[1.0,-0.0,0.25],\"a\":\"\\u00e9\"}", 0, NULL);
    assert_int_equal(llmc_canon_dump(v, &out, &len), 0);
    assert_string_equal(out, "{\"a\":\"\xc3\xa9\",\"b\":[1,0,0.25]}");
    assert_int_equal(len, strlen(out));
    free(out);
    /* The caller's value is not modified. */
    assert_true(json_is_real(json_array_get(json_object_get(v, "b"), 0)));
    json_decref(v);

    json_t *r = json_real(2.0);
    assert_int_equal(llmc_canon_dump(r, &out, &len), 0);
    assert_string_equal(out, "2");
    free(out);
    json_decref(r);

    json_t *s = json_string("x/y");
    assert_int_equal(llmc_canon_dump(s, &out, &len), 0);
    assert_string_equal(out, "\"x/y\"");
    free(out);
    json_decref(s);
}

static void test_variant_keys(void **state)
{
    (void)state;
    llmc_key_t k, a, b, c, d;
    memset(&k, 0, sizeof(k));
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        k.b[i] = (uint8_t)(i * 37 + 11);
    const uint8_t t1[8] = {1, 2, 3, 4, 5, 6, 7, 8}, t2[8] = {1, 2, 3, 4, 5, 6, 7, 9};
    const uint8_t zero[8] = {0};
    llmc_key_variant(&a, &k, 1, t1);
    llmc_key_variant(&b, &k, 2, t1);
    llmc_key_variant(&c, &k, 1, t2);
    llmc_key_variant(&d, &k, 0, zero); /* never the key itself */
    assert_memory_not_equal(&a, &k, sizeof(k));
    assert_memory_not_equal(&d, &k, sizeof(k));
    assert_memory_not_equal(&a, &b, sizeof(k));
    assert_memory_not_equal(&a, &c, sizeof(k));
    llmc_key_variant(&b, &k, 1, t1);
    assert_memory_equal(&a, &b, sizeof(k)); /* deterministic */
    llmc_key_t dk;
    llmc_key_derived(&dk, &k, "gzip", "\"0102030405060708\"");
    assert_memory_not_equal(&a, &dk, sizeof(k));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_variant_keys),
        cmocka_unit_test(test_field_order_and_whitespace),
        cmocka_unit_test(test_number_forms),
        cmocka_unit_test(test_reals_round_trip),
        cmocka_unit_test(test_string_escapes),
        cmocka_unit_test(test_ignored_fields),
        cmocka_unit_test(test_ignored_only_at_top),
        cmocka_unit_test(test_relevant_fields_change_key),
        cmocka_unit_test(test_key_inputs),
        cmocka_unit_test(test_no_concatenation_collisions),
        cmocka_unit_test(test_key_layout),
        cmocka_unit_test(test_cache_extension),
        cmocka_unit_test(test_cache_not_object),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_huge_integers),
        cmocka_unit_test(test_flags_and_model),
        cmocka_unit_test(test_root_numbers_untouched),
        cmocka_unit_test(test_canon_dump),
        cmocka_unit_test(test_big_integer_bodies_never_merge),
        cmocka_unit_test(test_raw_nul_byte_is_refused),
        cmocka_unit_test(test_fingerprint_layout),
        cmocka_unit_test(test_scope_layout),
        cmocka_unit_test(test_derived_layout),
        cmocka_unit_test(test_forwarded_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
