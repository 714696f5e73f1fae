/*
 * fuzz_key.c: libFuzzer driver for the canonical key builder
 * (llmc_canon_parse, llmc_canon_dump, llmc_key_build in src/core/key.c).
 *
 * Input: a request body, as a client would send it (the seeds in
 * corpus/key/ are chat, completion, embedding and tool-call bodies).
 *
 * What it checks, beyond ASan and UBSan (and LeakSanitizer):
 * - parse answers 0, LLMC_EJSON (with a message) or LLMC_ENOMEM, and on an
 *   error leaves nothing to free;
 * - the canonical text is JSON without whitespace outside strings, has no
 *   ignored top-level field and no "cache", and text_len is its length;
 * - idempotence: parse(text) gives the same canonical text again;
 * - parse(llmc_canon_dump(root)) gives the same canonical text (dump and
 *   parse agree, ignored fields included or not);
 * - the same value written another way (indented, ASCII-escaped, keys in
 *   insertion order, reals with 17 digits, and again with every integer up
 *   to 2^53 written as a real: 1 as 1.0) gives the same canonical text,
 *   which is what makes whitespace, escapes and number forms share a key;
 * - keys: the same inputs give the same key; a different namespace, scope
 *   or a field boundary moved between path and upstream gives another.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llmc/error.h"
#include "llmc/key.h"

#include "fuzz_check.h"

static const char *const ignored[] = {
    "user", "stream", "stream_options", "metadata", "store", "service_tier",
};

/* No byte outside a string is whitespace (the text is compact). */
static void check_compact(const char *s, size_t n)
{
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
        } else {
            CHECK(ch != ' ' && ch != '\n' && ch != '\t' && ch != '\r');
            if (ch == '"')
                in_str = 1;
        }
    }
    CHECK(!in_str);
}

/* Parses text as a body and checks it canonicalises to want; whole: text
   still holds the ignored fields, so the flags read from them must agree. */
static void check_same_text(const char *text, size_t len, const llmc_canon_t *want, int whole)
{
    llmc_canon_t c;
    char err[256] = "";
    int rc = llmc_canon_parse(text, len, &c, err, sizeof err);
    if (rc == LLMC_ENOMEM)
        return;
    if (rc != 0)
        fprintf(stderr, "reparse failed: %s\ninput: %.*s\n", err, (int)len, text);
    CHECK(rc == 0);
    if (c.text_len != want->text_len || memcmp(c.text, want->text, c.text_len) != 0)
        fprintf(stderr, "canonical text differs\nfirst:  %s\nsecond: %s\nfrom:   %.*s\n",
                want->text, c.text, (int)len, text);
    CHECK(c.text_len == want->text_len && memcmp(c.text, want->text, c.text_len) == 0);
    if (whole)
        CHECK(c.stream == want->stream && c.include_usage == want->include_usage);
    CHECK(strcmp(c.model, want->model) == 0);
    llmc_canon_free(&c);
}

/* Replaces every integer of magnitude <= 2^53 (exact as a double) with the
   equal real, in place: {"n": 1} becomes {"n": 1.0}. */
static void realify(json_t *v)
{
    if (json_is_object(v)) {
        for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
            json_t *child = json_object_iter_value(it);
            json_int_t n = json_integer_value(child);
            if (json_is_integer(child) && n <= (1LL << 53) && n >= -(1LL << 53))
                json_object_iter_set_new(v, it, json_real((double)n));
            else
                realify(child);
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *child = json_array_get(v, i);
            json_int_t n = json_integer_value(child);
            if (json_is_integer(child) && n <= (1LL << 53) && n >= -(1LL << 53))
                json_array_set_new(v, i, json_real((double)n));
            else
                realify(child);
        }
    }
}

static void check_keys(const llmc_canon_t *c)
{
    llmc_key_t a, b, d;
    const char *path = "/v1/chat/completions", *up = "http://127.0.0.1:1/v1";

    llmc_key_build(&a, path, up, "", "", c->text, c->text_len);
    llmc_key_build(&b, path, up, "", "", c->text, c->text_len);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    llmc_key_build(&d, path, up, "", "ns", c->text, c->text_len);
    CHECK(memcmp(&a, &d, sizeof a) != 0);
    llmc_key_build(&d, path, up, "ns", "", c->text, c->text_len);
    CHECK(memcmp(&a, &d, sizeof a) != 0);
    /* Moving the boundary between two fields must change the key. */
    llmc_key_build(&d, "/v1/chat/completionsh", "ttp://127.0.0.1:1/v1", "", "", c->text,
                   c->text_len);
    CHECK(memcmp(&a, &d, sizeof a) != 0);
    /* The body is a field like the others: the same bytes moved into the
       namespace are another key. */
    if (c->text_len < 200) {
        char ns[256];
        memcpy(ns, c->text, c->text_len);
        ns[c->text_len] = '\0';
        if (strlen(ns) == c->text_len) {
            llmc_key_build(&d, path, up, "", ns, "", 0);
            CHECK(memcmp(&a, &d, sizeof a) != 0);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llmc_canon_t c;
    char err[256] = "";

    int rc = llmc_canon_parse((const char *)data, size, &c, err, sizeof err);
    if (rc != 0) {
        CHECK(rc == LLMC_EJSON || rc == LLMC_ENOMEM);
        CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
        CHECK(c.root == NULL && c.text == NULL && c.cache_ext == NULL);
        return 0;
    }
    CHECK(json_is_object(c.root));
    CHECK(c.cache_ext == NULL || json_is_object(c.cache_ext));
    CHECK(json_object_get(c.root, "cache") == NULL);
    CHECK(c.text != NULL && strlen(c.text) == c.text_len);
    CHECK(c.model != NULL);
    if (c.text_len >= 4 && memcmp(c.text, "raw:", 4) == 0) {
        /* A body beyond exact canonical form (an integer past int64) is
           keyed by its own bytes: none of the canonical properties apply. */
        CHECK(c.text_len == size + 4 && memcmp(c.text + 4, data, size) == 0);
        check_keys(&c);
        llmc_canon_free(&c);
        return 0;
    }
    check_compact(c.text, c.text_len);

    json_t *t = json_loadb(c.text, c.text_len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
    CHECK(json_is_object(t));
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        CHECK(llmc_key_field_ignored(ignored[i]));
        CHECK(json_object_get(t, ignored[i]) == NULL);
    }
    CHECK(json_object_get(t, "cache") == NULL);
    json_decref(t);

    /* Idempotence. */
    check_same_text(c.text, c.text_len, &c, 0);

    /* dump(root) and back. */
    char *dumped = NULL;
    size_t dlen = 0;
    if (llmc_canon_dump(c.root, &dumped, &dlen) == 0) {
        check_same_text(dumped, dlen, &c, 1);
        free(dumped);
    }

    /* The same value spelled differently. */
    char *pretty = json_dumps(c.root, JSON_INDENT(3) | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(17));
    if (pretty) {
        check_same_text(pretty, strlen(pretty), &c, 1);
        free(pretty);
    }

    /* Integers written as reals. */
    json_t *alt = json_deep_copy(c.root);
    if (alt) {
        realify(alt);
        char *text = json_dumps(alt, JSON_COMPACT | JSON_REAL_PRECISION(17));
        if (text) {
            check_same_text(text, strlen(text), &c, 1);
            free(text);
        }
        json_decref(alt);
    }

    check_keys(&c);
    llmc_canon_free(&c);
    return 0;
}
