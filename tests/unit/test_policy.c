/*
 * test_policy.c: the request's cache controls (src/gateway/policy.c): the
 * freshness decision made from them (llmc_policy_usable), If-None-Match
 * against an entry's ETag, and list-valued headers sent on several lines.
 *
 * Times are plain numbers: an entry is built with the created and expiry
 * times a case needs, and "now" is an argument, so nothing sleeps. Request
 * headers are an llmc_http_header_t array built by hand, as the HTTP server
 * fills it (names lowercased, values trimmed and NUL-terminated).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/policy.h"
#include "llmc/error.h"

#define TTL 300000
#define MAX_TTL 86400000

static llmc_policy_t cc(const char *cache_control)
{
    llmc_policy_t p;
    char err[256] = "";
    assert_int_equal(llmc_policy_parse(&p, cache_control, NULL, NULL, NULL, NULL, TTL, MAX_TTL,
                                       err, sizeof err), 0);
    return p;
}

static void test_delta_seconds_leading_zeros(void **state)
{
    (void)state;
    /* 13 and more digits: still their value, not "huge". */
    assert_int_equal(cc("max-age=0000000000000").max_age_ms, 0);
    assert_int_equal(cc("min-fresh=00000000000005").min_fresh_ms, 5000);
    assert_int_equal(cc("max-stale=\"0000000000000007\"").max_stale_ms, 7000);
}

static void test_delta_seconds_malformed_is_ignored(void **state)
{
    (void)state;
    /* Not digits, whatever the length: the directive counts as absent. */
    assert_int_equal(cc("max-age=abcdefghijklmnop").max_age_ms, LLMC_POLICY_UNSET);
    assert_int_equal(cc("min-fresh=12345678901234x").min_fresh_ms, 0);
    assert_int_equal(cc("max-age=-1").max_age_ms, LLMC_POLICY_UNSET);
    assert_int_equal(cc("max-age=").max_age_ms, LLMC_POLICY_UNSET);
}

static void test_delta_seconds_saturates(void **state)
{
    (void)state;
    /* RFC 9111 1.2.2: too big to hold means the largest value, never a wrap. */
    int64_t big = cc("max-age=99999999999999999999999999").max_age_ms;
    assert_true(big >= INT64_MAX / 1000 * 1000 - 1000);
    assert_int_equal(cc("max-age=9223372036854775807").max_age_ms, big);
    assert_int_equal(cc("max-age=31536000").max_age_ms, 31536000000LL);
}

static llmc_entry_t *entry(int64_t created, int64_t expires)
{
    llmc_key_t k;
    memset(&k, 7, sizeof k);
    llmc_entry_spec_t spec = {.key = &k, .status = 200, .created_ms = created,
                              .expires_ms = expires, .body = "{}", .body_len = 2};
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);
    return e;
}

static void test_min_fresh_with_max_stale(void **state)
{
    (void)state;
    llmc_entry_t *e = entry(0, 100000); /* fresh until 100 s */
    llmc_policy_t p = cc("min-fresh=10, max-stale=60");
    /* 5 s left, 10 wanted: 5 s short, forgiven by max-stale. */
    assert_int_equal(llmc_policy_usable(&p, e, 95000), LLMC_USE_FRESH);
    /* 5 s past expiry: 15 s short, still within 60. */
    assert_int_equal(llmc_policy_usable(&p, e, 105000), LLMC_USE_STALE);
    /* 55 s past expiry: 65 s short. */
    assert_int_equal(llmc_policy_usable(&p, e, 155000), LLMC_USE_NO);
    p = cc("min-fresh=10, max-stale=2");
    assert_int_equal(llmc_policy_usable(&p, e, 95000), LLMC_USE_NO);
    assert_int_equal(llmc_policy_usable(&p, e, 89000), LLMC_USE_FRESH);
    /* A bare max-stale forgives any shortfall, however big min-fresh. */
    p = cc("min-fresh=99999999999999999999, max-stale");
    assert_int_equal(llmc_policy_usable(&p, e, 200000), LLMC_USE_STALE);
    llmc_entry_unref(e);
}

static void test_usable_without_combination(void **state)
{
    (void)state;
    llmc_entry_t *e = entry(0, 100000);
    llmc_policy_t p = cc("");
    assert_int_equal(llmc_policy_usable(&p, e, 99999), LLMC_USE_FRESH);
    assert_int_equal(llmc_policy_usable(&p, e, 100000), LLMC_USE_NO);
    p = cc("min-fresh=10");
    assert_int_equal(llmc_policy_usable(&p, e, 90000), LLMC_USE_FRESH);
    assert_int_equal(llmc_policy_usable(&p, e, 90001), LLMC_USE_NO);
    p = cc("max-stale=5");
    assert_int_equal(llmc_policy_usable(&p, e, 105000), LLMC_USE_STALE);
    assert_int_equal(llmc_policy_usable(&p, e, 105001), LLMC_USE_NO);
    p = cc("max-age=1");
    assert_int_equal(llmc_policy_usable(&p, e, 1000), LLMC_USE_FRESH);
    assert_int_equal(llmc_policy_usable(&p, e, 1001), LLMC_USE_NO);
    /* A huge min-fresh on an expired entry must not overflow into "fresh". */
    p = cc("min-fresh=99999999999999999999");
    assert_int_equal(llmc_policy_usable(&p, e, 200000), LLMC_USE_NO);
    llmc_entry_unref(e);
}

/* A policy with the freshness fields set directly, for values no header
   can spell. */
static llmc_policy_t bounds(int64_t max_age, int64_t min_fresh, int64_t max_stale)
{
    llmc_policy_t p = cc("");
    p.max_age_ms = max_age;
    p.min_fresh_ms = min_fresh;
    p.max_stale_ms = max_stale;
    return p;
}

static void test_usable_fresh_and_expired(void **state)
{
    (void)state;
    llmc_entry_t *e = entry(1000, 61000); /* stored at 1 s, fresh for 60 s */
    llmc_policy_t p = cc("");
    assert_int_equal(llmc_policy_usable(&p, e, 1000), LLMC_USE_FRESH);
    assert_int_equal(llmc_policy_usable(&p, e, 60999), LLMC_USE_FRESH);
    /* Fresh while now < expires_ms: expired at expiry itself. */
    assert_int_equal(llmc_policy_usable(&p, e, 61000), LLMC_USE_NO);
    assert_int_equal(llmc_policy_usable(&p, e, 1000000), LLMC_USE_NO);
    llmc_entry_unref(e);
}

static void test_usable_max_age(void **state)
{
    (void)state;
    llmc_entry_t *e = entry(10000, 1000000);
    llmc_policy_t p = cc("max-age=30");
    assert_int_equal(llmc_policy_usable(&p, e, 40000), LLMC_USE_FRESH); /* 30 s old */
    assert_int_equal(llmc_policy_usable(&p, e, 40001), LLMC_USE_NO);
    /* max-age=0: only an answer stored this very millisecond. */
    p = cc("max-age=0");
    assert_int_equal(llmc_policy_usable(&p, e, 10000), LLMC_USE_FRESH);
    assert_int_equal(llmc_policy_usable(&p, e, 10001), LLMC_USE_NO);
    /* max-stale does not forgive an entry older than max-age. */
    p = cc("max-age=30, max-stale");
    assert_int_equal(llmc_policy_usable(&p, e, 50000), LLMC_USE_NO);
    llmc_entry_unref(e);
}

static void test_usable_min_fresh(void **state)
{
    (void)state;
    llmc_entry_t *e = entry(0, 100000);
    llmc_policy_t p = cc("min-fresh=30");
    assert_int_equal(llmc_policy_usable(&p, e, 70000), LLMC_USE_FRESH); /* 30 s left */
    assert_int_equal(llmc_policy_usable(&p, e, 70001), LLMC_USE_NO);
    assert_int_equal(llmc_policy_usable(&p, e, 99999), LLMC_USE_NO);   /* 1 ms left */
    assert_int_equal(llmc_policy_usable(&p, e, 150000), LLMC_USE_NO);
    llmc_entry_unref(e);
}

static void test_usable_max_stale(void **state)
{
    (void)state;
    llmc_entry_t *e = entry(0, 100000);
    llmc_policy_t p = cc("max-stale=20");
    /* A fresh entry stays fresh; an expired one within 20 s is stale. */
    assert_int_equal(llmc_policy_usable(&p, e, 50000), LLMC_USE_FRESH);
    assert_int_equal(llmc_policy_usable(&p, e, 100000), LLMC_USE_STALE);
    assert_int_equal(llmc_policy_usable(&p, e, 120000), LLMC_USE_STALE);
    assert_int_equal(llmc_policy_usable(&p, e, 120001), LLMC_USE_NO);
    /* A bare max-stale takes any staleness. */
    p = cc("max-stale");
    assert_int_equal(llmc_policy_usable(&p, e, INT64_MAX / 2), LLMC_USE_STALE);
    /* max-stale=0 forgives nothing. */
    p = cc("max-stale=0");
    assert_int_equal(llmc_policy_usable(&p, e, 100000), LLMC_USE_NO);
    llmc_entry_unref(e);
}

/* min-fresh and max-stale are one bound on the shortfall, so the answer only
   ever gets worse as an entry ages: walking now forward, FRESH may turn into
   STALE or NO and STALE into NO, never back. Put the other way: a fresher
   entry is never refused where a staler one would be taken. */
static void test_usable_one_bound_is_monotonic(void **state)
{
    (void)state;
    static const int64_t min_fresh[] = {0, 1000, 10000, 60000, 200000, INT64_MAX / 2, INT64_MAX};
    static const int64_t max_stale[] = {0, 1, 2000, 10000, 60000, INT64_MAX / 2, INT64_MAX};
    llmc_entry_t *e = entry(0, 100000);
    for (size_t i = 0; i < sizeof min_fresh / sizeof min_fresh[0]; i++) {
        for (size_t j = 0; j < sizeof max_stale / sizeof max_stale[0]; j++) {
            llmc_policy_t p = bounds(LLMC_POLICY_UNSET, min_fresh[i], max_stale[j]);
            llmc_use_t prev = LLMC_USE_FRESH;
            for (int64_t now = 0; now <= 400000; now += 250) {
                llmc_use_t u = llmc_policy_usable(&p, e, now);
                if (prev == LLMC_USE_NO)
                    assert_int_equal(u, LLMC_USE_NO);
                if (prev == LLMC_USE_STALE)
                    assert_int_not_equal(u, LLMC_USE_FRESH);
                /* STALE only for an expired entry, FRESH only for an unexpired one. */
                if (u == LLMC_USE_STALE)
                    assert_true(now >= 100000);
                if (u == LLMC_USE_FRESH)
                    assert_true(now < 100000);
                prev = u;
            }
        }
    }
    llmc_entry_unref(e);
}

static void test_usable_overflow(void **state)
{
    (void)state;
    llmc_entry_t *e = entry(0, 100000);
    /* min-fresh - left would overflow for an expired entry: it saturates,
       so it is refused, and only "any staleness" takes it. */
    llmc_policy_t p = bounds(LLMC_POLICY_UNSET, INT64_MAX, 0);
    assert_int_equal(llmc_policy_usable(&p, e, 50000), LLMC_USE_NO);
    assert_int_equal(llmc_policy_usable(&p, e, 200000), LLMC_USE_NO);
    p = bounds(LLMC_POLICY_UNSET, INT64_MAX, INT64_MAX - 1);
    assert_int_equal(llmc_policy_usable(&p, e, 200000), LLMC_USE_NO);
    p = bounds(LLMC_POLICY_UNSET, INT64_MAX, INT64_MAX);
    assert_int_equal(llmc_policy_usable(&p, e, 200000), LLMC_USE_STALE);
    assert_int_equal(llmc_policy_usable(&p, e, 50000), LLMC_USE_FRESH);
    /* The largest min-fresh a header can give, on an expired entry. */
    p = cc("min-fresh=99999999999999999999999");
    assert_int_equal(llmc_policy_usable(&p, e, INT64_MAX / 4), LLMC_USE_NO);
    llmc_entry_unref(e);
    /* An entry that never expires is fresh for any min-fresh it can meet. */
    e = entry(0, INT64_MAX);
    p = bounds(LLMC_POLICY_UNSET, INT64_MAX - 1000, 0);
    assert_int_equal(llmc_policy_usable(&p, e, 0), LLMC_USE_FRESH);
    assert_int_equal(llmc_policy_usable(&p, e, 1001), LLMC_USE_NO);
    llmc_entry_unref(e);
}

/* ---- If-None-Match -------------------------------------------------------- */

#define ETAG "\"0123456789abcdef\""

static void test_etag_exact_and_list(void **state)
{
    (void)state;
    assert_true(llmc_policy_etag_matches(ETAG, ETAG));
    assert_true(llmc_policy_etag_matches("\"aaaa\", " ETAG, ETAG));
    assert_true(llmc_policy_etag_matches("\"aaaa\"," ETAG ",\"bbbb\"", ETAG));
    assert_true(llmc_policy_etag_matches(ETAG ", \"aaaa\"", ETAG));
    assert_false(llmc_policy_etag_matches("\"aaaa\", \"bbbb\"", ETAG));
    /* Another entry's tag does not match. */
    assert_false(llmc_policy_etag_matches("\"0123456789abcdee\"", ETAG));
    assert_false(llmc_policy_etag_matches("", ETAG));
}

static void test_etag_spaces(void **state)
{
    (void)state;
    assert_true(llmc_policy_etag_matches("   " ETAG, ETAG));
    assert_true(llmc_policy_etag_matches(ETAG "   ", ETAG));
    assert_true(llmc_policy_etag_matches("\"aaaa\"  ,   " ETAG "  , \"bbbb\"", ETAG));
    assert_true(llmc_policy_etag_matches("\t" ETAG, ETAG));
}

static void test_etag_weak(void **state)
{
    (void)state;
    /* If-None-Match compares weakly: W/"x" names the same answer as "x". */
    assert_true(llmc_policy_etag_matches("W/" ETAG, ETAG));
    assert_true(llmc_policy_etag_matches("\"aaaa\", W/" ETAG, ETAG));
    assert_false(llmc_policy_etag_matches("W/\"aaaa\"", ETAG));
}

static void test_etag_star(void **state)
{
    (void)state;
    assert_true(llmc_policy_etag_matches("*", ETAG));
    assert_true(llmc_policy_etag_matches(" * ", ETAG));
}

static void test_etag_prefix_does_not_match(void **state)
{
    (void)state;
    /* A tag that starts like ours, or that ours starts like, is another tag. */
    assert_false(llmc_policy_etag_matches("\"0123456789abcdef0\"", ETAG));
    assert_false(llmc_policy_etag_matches("\"0123456789abcde\"", ETAG));
    assert_false(llmc_policy_etag_matches(ETAG "x", ETAG));
    assert_false(llmc_policy_etag_matches(ETAG "x, \"aaaa\"", ETAG));
    /* The tag's text without its quotes is not the tag. */
    assert_false(llmc_policy_etag_matches("0123456789abcdef", ETAG));
    /* Nor is a longer tag ending in ours. */
    assert_false(llmc_policy_etag_matches("\"x\"0123456789abcdef\"", ETAG));
}

/* Regression: a tab after a tag (OWS before the comma, RFC 9110 5.6.1) made
   the tag not match, though a tab before it was skipped. */
static void test_etag_tab_after_tag(void **state)
{
    (void)state;
    assert_true(llmc_policy_etag_matches(ETAG "\t, \"aaaa\"", ETAG));
    assert_true(llmc_policy_etag_matches("\"aaaa\"\t,\t" ETAG "\t", ETAG));
    assert_true(llmc_policy_etag_matches("W/" ETAG "\t,\"aaaa\"", ETAG));
    assert_false(llmc_policy_etag_matches("\"aaaa\"\t, \"bbbb\"", ETAG));
}

static void test_etag_null_header(void **state)
{
    (void)state;
    assert_false(llmc_policy_etag_matches(NULL, ETAG));
}

/* ---- list-valued headers ------------------------------------------------- */

#define HDR(n, v) {.name = (n), .value = (v), .name_len = sizeof(n) - 1, .value_len = sizeof(v) - 1}

static void test_list_header_absent(void **state)
{
    (void)state;
    llmc_http_header_t h[] = {HDR("content-type", "application/json"), HDR("pragma", "no-cache")};
    llmc_http_req_t req = {.headers = h, .nheaders = 2};
    char *owned = (char *)"not touched";
    assert_null(llmc_policy_list_header(&req, "cache-control", &owned));
    assert_null(owned);
    llmc_http_req_t none = {.headers = NULL, .nheaders = 0};
    owned = (char *)"not touched";
    assert_null(llmc_policy_list_header(&none, "cache-control", &owned));
    assert_null(owned);
}

static void test_list_header_one_line(void **state)
{
    (void)state;
    llmc_http_header_t h[] = {HDR("content-type", "application/json"),
                              HDR("cache-control", "max-age=5, no-store"), HDR("x-a", "b")};
    llmc_http_req_t req = {.headers = h, .nheaders = 3};
    char *owned = (char *)"not touched";
    const char *v = llmc_policy_list_header(&req, "cache-control", &owned);
    /* The line itself, not a copy: nothing to free. */
    assert_ptr_equal(v, h[1].value);
    assert_null(owned);
}

static void test_list_header_lines_joined(void **state)
{
    (void)state;
    llmc_http_header_t h[] = {HDR("cache-control", "max-age=5"), HDR("x-other", "no-store"),
                              HDR("cache-control", "min-fresh=1"), HDR("accept", "*/*"),
                              HDR("cache-control", "max-stale")};
    llmc_http_req_t req = {.headers = h, .nheaders = 5};
    char *owned = NULL;
    const char *v = llmc_policy_list_header(&req, "cache-control", &owned);
    assert_non_null(owned);
    assert_ptr_equal(v, owned);
    assert_string_equal(v, "max-age=5, min-fresh=1, max-stale");
    /* The join is what a policy is parsed from: every line counts. */
    llmc_policy_t p = cc(v);
    assert_int_equal(p.max_age_ms, 5000);
    assert_int_equal(p.min_fresh_ms, 1000);
    assert_int_equal(p.max_stale_ms, INT64_MAX);
    free(owned);

    /* Two lines exactly, one of them empty. */
    llmc_http_header_t h2[] = {HDR("if-none-match", "\"a\""), HDR("if-none-match", "")};
    llmc_http_req_t req2 = {.headers = h2, .nheaders = 2};
    v = llmc_policy_list_header(&req2, "if-none-match", &owned);
    assert_non_null(owned);
    assert_string_equal(v, "\"a\", ");
    free(owned);
}

static void test_list_header_case_insensitive(void **state)
{
    (void)state;
    llmc_http_header_t h[] = {HDR("cache-control", "no-cache"), HDR("Cache-Control", "no-store")};
    llmc_http_req_t req = {.headers = h, .nheaders = 2};
    char *owned = NULL;
    const char *v = llmc_policy_list_header(&req, "CACHE-CONTROL", &owned);
    assert_non_null(owned);
    assert_string_equal(v, "no-cache, no-store");
    free(owned);
    v = llmc_policy_list_header(&req, "Pragma", &owned);
    assert_null(v);
    assert_null(owned);
}

/* ---- semantic ---- */

/* 1 (similar answers allowed), 0 (refused by the request), -1 (a 400). */
static int semantic_of(const char *hdr, const char *ext_json)
{
    llmc_policy_t p = cc(NULL);
    char err[256] = "";
    json_t *ext = ext_json ? json_loads(ext_json, 0, NULL) : NULL;
    if (ext_json)
        assert_non_null(ext);
    p.semantic = false; /* the parse decides, whatever was there */
    int rc = llmc_policy_parse_semantic(&p, hdr, NULL, ext, err, sizeof err);
    json_decref(ext);
    if (rc < 0) {
        assert_int_equal(rc, LLMC_EINVAL);
        assert_true(err[0] != '\0');
        return -1;
    }
    return p.semantic;
}

static void test_semantic(void **state)
{
    (void)state;
    assert_int_equal(semantic_of(NULL, NULL), 1);           /* allowed unless refused */
    assert_int_equal(semantic_of("off", NULL), 0);
    assert_int_equal(semantic_of("OFF", NULL), 0);
    assert_int_equal(semantic_of("on", NULL), 1);
    assert_int_equal(semantic_of("maybe", NULL), -1);
    assert_int_equal(semantic_of("", NULL), -1);
    /* The body wins over the header. */
    assert_int_equal(semantic_of("on", "{\"semantic\": false}"), 0);
    assert_int_equal(semantic_of("off", "{\"semantic\": true}"), 1);
    assert_int_equal(semantic_of(NULL, "{\"ttl\": 5}"), 1);
    assert_int_equal(semantic_of(NULL, "{\"semantic\": \"off\"}"), -1);
    assert_int_equal(semantic_of(NULL, "{\"semantic\": 0}"), -1);
}

/* X-Cache-Semantic-Threshold: the value, 0 when absent, -1 on a 400. */
static float threshold_of(const char *hdr)
{
    llmc_policy_t p = cc(NULL);
    char err[256] = "";
    if (llmc_policy_parse_semantic(&p, NULL, hdr, NULL, err, sizeof err) < 0) {
        assert_true(err[0] != '\0');
        return -1;
    }
    return p.semantic_threshold;
}

static void test_semantic_threshold(void **state)
{
    (void)state;
    assert_true(threshold_of(NULL) == 0);
    assert_true(threshold_of("0.85") == 0.85f);
    assert_true(threshold_of("1") == 1.0f);
    assert_true(threshold_of(".5") == 0.5f);
    assert_true(threshold_of("0") == -1);
    assert_true(threshold_of("1.01") == -1);
    assert_true(threshold_of("-0.5") == -1);
    assert_true(threshold_of("1e-1") == -1);
    assert_true(threshold_of("nan") == -1);
    assert_true(threshold_of("0.8x") == -1);
    assert_true(threshold_of("") == -1);
    assert_true(threshold_of(".") == -1);
}

/* ---- tags ---- */

/* The tags parsed from a header and a body "cache" object (JSON text or
   NULL), as one string "a|b|c"; "ERR" on a refusal. */
static const char *tags_of(const char *hdr, const char *ext_json, char *out, size_t cap)
{
    llmc_policy_t p = cc(NULL);
    char err[256] = "";
    json_t *ext = ext_json ? json_loads(ext_json, JSON_ALLOW_NUL, NULL) : NULL;
    if (ext_json)
        assert_non_null(ext);
    int rc = llmc_policy_parse_tags(&p, hdr, ext, err, sizeof err);
    json_decref(ext);
    if (rc < 0) {
        assert_int_equal(rc, LLMC_EINVAL);
        assert_true(err[0] != '\0');
        return "ERR";
    }
    out[0] = '\0';
    const char *t = p.tags;
    for (unsigned i = 0; i < p.ntags; i++, t += strlen(t) + 1)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? "|" : "", t);
    return out;
}

static void test_tags(void **state)
{
    (void)state;
    char b[600];
    assert_string_equal(tags_of(NULL, NULL, b, sizeof b), "");
    assert_string_equal(tags_of("a", NULL, b, sizeof b), "a");
    assert_string_equal(tags_of(" docs , release-2 ,a b", NULL, b, sizeof b), "docs|release-2|a b");
    assert_string_equal(tags_of("a,,b, ,", NULL, b, sizeof b), "a|b");   /* empty items skipped */
    assert_string_equal(tags_of("a,b,a", NULL, b, sizeof b), "a|b");     /* once each */
    /* The body's tags win over the header's. */
    assert_string_equal(tags_of("h", "{\"tags\": [\"x\", \"y\"]}", b, sizeof b), "x|y");
    assert_string_equal(tags_of("h", "{\"ttl\": 5}", b, sizeof b), "h");
    assert_string_equal(tags_of(NULL, "{\"tags\": []}", b, sizeof b), "");
    /* Refused: wrong types, empty or long tags, commas and control bytes, too many. */
    assert_string_equal(tags_of(NULL, "{\"tags\": \"x\"}", b, sizeof b), "ERR");
    assert_string_equal(tags_of(NULL, "{\"tags\": [1]}", b, sizeof b), "ERR");
    assert_string_equal(tags_of(NULL, "{\"tags\": [\"\"]}", b, sizeof b), "ERR");
    assert_string_equal(tags_of(NULL, "{\"tags\": [\"a,b\"]}", b, sizeof b), "ERR");
    assert_string_equal(tags_of(NULL, "{\"tags\": [\"a\\u0000b\"]}", b, sizeof b), "ERR");
    assert_string_equal(tags_of("a\tb\x01", NULL, b, sizeof b), "ERR");
    char longtag[100];
    memset(longtag, 'x', 65);
    longtag[65] = '\0';
    assert_string_equal(tags_of(longtag, NULL, b, sizeof b), "ERR");
    longtag[64] = '\0';
    assert_string_equal(tags_of(longtag, NULL, b, sizeof b), longtag);
    char many[200] = "";
    for (int i = 0; i < 17; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%st%d", i ? "," : "", i);
    assert_string_equal(tags_of(many, NULL, b, sizeof b), "ERR");
    *strrchr(many, ',') = '\0';   /* 16 */
    assert_string_equal(tags_of(many, NULL, b, sizeof b),
                        "t0|t1|t2|t3|t4|t5|t6|t7|t8|t9|t10|t11|t12|t13|t14|t15");
}

static void test_json_content_type(void **state)
{
    (void)state;
    static const char *const ok[] = {
        NULL, "", "  ", "application/json", "APPLICATION/JSON", "application/json; charset=utf-8",
        "application/json;charset=UTF-8", " application/json ", "application/json ; x=y",
        "\tapplication/json\t;",
    };
    static const char *const refused[] = {
        "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x", "text/json", "application/jsonx", "application/json-seq",
        "application/json-patch+json", "application", "application/", "json", "*/*",
        "application/json,text/plain", "; application/json",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (!llmc_policy_json_content_type(ok[i]))
            fail_msg("refused: '%s'", ok[i] ? ok[i] : "(null)");
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (llmc_policy_json_content_type(refused[i]))
            fail_msg("accepted: '%s'", refused[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delta_seconds_leading_zeros),
        cmocka_unit_test(test_delta_seconds_malformed_is_ignored),
        cmocka_unit_test(test_delta_seconds_saturates),
        cmocka_unit_test(test_min_fresh_with_max_stale),
        cmocka_unit_test(test_usable_without_combination),
        cmocka_unit_test(test_usable_fresh_and_expired),
        cmocka_unit_test(test_usable_max_age),
        cmocka_unit_test(test_usable_min_fresh),
        cmocka_unit_test(test_usable_max_stale),
        cmocka_unit_test(test_usable_one_bound_is_monotonic),
        cmocka_unit_test(test_usable_overflow),
        cmocka_unit_test(test_etag_exact_and_list),
        cmocka_unit_test(test_etag_spaces),
        cmocka_unit_test(test_etag_weak),
        cmocka_unit_test(test_etag_star),
        cmocka_unit_test(test_etag_prefix_does_not_match),
        cmocka_unit_test(test_etag_null_header),
        cmocka_unit_test(test_etag_tab_after_tag),
        cmocka_unit_test(test_list_header_absent),
        cmocka_unit_test(test_list_header_one_line),
        cmocka_unit_test(test_list_header_lines_joined),
        cmocka_unit_test(test_list_header_case_insensitive),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_json_content_type),
        cmocka_unit_test(test_semantic),
        cmocka_unit_test(test_semantic_threshold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
