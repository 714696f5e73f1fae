/*
 * key.c: canonical request bodies and cache keys (llmc/key.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 *
 * - Duplicate object keys are rejected (JSON_REJECT_DUPLICATES). jansson
 *   would keep the last one while some upstreams keep the first, so the
 *   key could describe a different request than the one the model answers.
 *
 * - Integers too big for json_int_t are accepted by parsing the body again
 *   with JSON_DECODE_INT_AS_REAL. In that (rare) body every integer becomes
 *   a double, which would merge integers that differ only above 2^53, so
 *   such a body is keyed by its raw bytes instead of a canonical form: it
 *   may miss where an equivalent body would hit, but two different requests
 *   never share a key.
 *
 * - Numbers: any real with an integral value that fits json_int_t becomes
 *   an integer (so 1, 1.0, 1e0, 10e-1 and -0.0 agree), every other real is
 *   written with the fewest %g digits that read back to the same double.
 *   jansson takes one precision per dump, so that digit count is the
 *   largest any real in the document needs; a longer form of a real still
 *   reads back to the same double, so the text stays canonical.
 *
 * - Strings are written as raw UTF-8 (no JSON_ENSURE_ASCII) by jansson's
 *   encoder, which always escapes the same characters the same way; "\/"
 *   and "\u00e9" are decoded on parse, so they match "/" and "é".
 *
 * - The canonical form is built from a deep copy: root stays the body the
 *   client sent (minus "cache"), so forwarding it changes no number.
 */
/* SHA256_Init/Update/Final are marked deprecated from OpenSSL 3.0 on (still
   shipped); asking for the 1.1.1 API keeps them, see key_hash. */
#define OPENSSL_API_COMPAT 10101

#include "llmc/key.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "llmc/error.h"

/* Top-level request fields that cannot change the answer. Everything else,
   including fields this table has never heard of, enters the key. */
static const char *const ignored_fields[] = {
    "user",           /* end-user id for abuse tracking */
    "stream",         /* streamed and whole answers are cached as one entry */
    "stream_options", /* only shapes the stream's framing */
    "metadata",       /* stored-completion tags */
    "store",          /* whether OpenAI keeps a copy */
    "service_tier",   /* latency/price class, not content */
    "prompt_cache_key",       /* routing hint for OpenAI's prompt cache */
    "prompt_cache_retention", /* how long OpenAI keeps that prefix cache */
    "safety_identifier",      /* end-user id for abuse tracking (user's successor) */
};

#define KEY_VERSION_TAG "llmc-key-v1"

/* The markers of the hashes that are not request keys (see key_hash). A
   request key's upstream slot holds a URL or "mock" and its path slot a
   path starting with '/', so none of these hashes has a request key's
   input. */
#define FINGERPRINT_TAG "fingerprint-v1"   /* upstream slot */
#define SCOPE_TAG "scope"                  /* path slot */
#define DERIVED_TAG "derived-v1"           /* path slot */
#define FORWARD_TAG "forwarded-v1"         /* path slot */

/* 2^63 as a double: reals in [-2^63, 2^63) convert to json_int_t exactly
   when they are integral. */
#define INT_LIMIT 9223372036854775808.0

bool llmc_key_field_ignored(const char *name)
{
    for (size_t i = 0; i < sizeof ignored_fields / sizeof ignored_fields[0]; i++)
        if (strcmp(name, ignored_fields[i]) == 0)
            return true;
    return false;
}

/* Fewest significant digits (1..17) whose %g form reads back to x. */
static int shortest_digits(double x)
{
    char buf[40];
    for (int p = 1; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, x);
        if (strtod(buf, NULL) == x)
            return p;
    }
    return 17;
}

/*
 * Rewrites integral reals as integers in place, recursively, and raises
 * *digits to the precision the remaining reals need. Returns 0 or
 * LLMC_ENOMEM.
 */
static int normalize(json_t *v, int *digits);

static json_t *normalize_number(json_t *v, int *digits)
{
    double x = json_real_value(v);
    if (x == trunc(x) && x >= -INT_LIMIT && x < INT_LIMIT)
        return json_integer((json_int_t)x); /* -0.0 becomes 0 here too */
    int p = shortest_digits(x);
    if (p > *digits)
        *digits = p;
    return NULL;
}

static int normalize_object(json_t *obj, int *digits)
{
    for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        json_t *child = json_object_iter_value(it);
        if (json_is_real(child)) {
            json_t *n = normalize_number(child, digits);
            if (n && json_object_iter_set_new(obj, it, n) != 0)
                return LLMC_ENOMEM;
        } else if (normalize(child, digits) != 0) {
            return LLMC_ENOMEM;
        }
    }
    return 0;
}

static int normalize_array(json_t *arr, int *digits)
{
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *child = json_array_get(arr, i);
        if (json_is_real(child)) {
            json_t *n = normalize_number(child, digits);
            if (n && json_array_set_new(arr, i, n) != 0)
                return LLMC_ENOMEM;
        } else if (normalize(child, digits) != 0) {
            return LLMC_ENOMEM;
        }
    }
    return 0;
}

static int normalize(json_t *v, int *digits)
{
    if (json_is_object(v))
        return normalize_object(v, digits);
    if (json_is_array(v))
        return normalize_array(v, digits);
    return 0;
}

/* Normalises v (which the caller owns and which may be replaced) and dumps
   it canonically. Consumes v. */
static int dump_owned(json_t *v, char **out, size_t *out_len)
{
    int digits = 1;
    int rc = LLMC_ENOMEM;

    if (json_is_real(v)) {
        json_t *n = normalize_number(v, &digits);
        if (n) {
            json_decref(v);
            v = n;
        }
    } else if (normalize(v, &digits) != 0) {
        goto fail;
    }
    size_t flags = JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(digits);
    char *text = json_dumps(v, flags);
    if (!text)
        goto fail;
    *out = text;
    *out_len = strlen(text);
    rc = 0;
fail:
    json_decref(v);
    return rc;
}

int llmc_canon_dump(const json_t *v, char **out, size_t *out_len)
{
    json_t *copy = json_deep_copy(v);
    if (!copy)
        return LLMC_ENOMEM;
    return dump_owned(copy, out, out_len);
}

/* Parses body, retrying once with big integers read as reals. Returns the
   root (any JSON type) or NULL with a client-readable message in err. */
static json_t *parse_body(const char *body, size_t len, bool *inexact, char *err, size_t errlen)
{
    size_t flags = JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
    json_error_t e;

    json_t *root = json_loadb(body, len, flags, &e);
    *inexact = false;
    if (!root && json_error_code(&e) == json_error_numeric_overflow) {
        root = json_loadb(body, len, flags | JSON_DECODE_INT_AS_REAL, &e);
        *inexact = true;
    }
    if (!root) {
        if (json_error_code(&e) == json_error_out_of_memory)
            snprintf(err, errlen, "out of memory while parsing the request body");
        else
            snprintf(err, errlen, "request body is not valid JSON: %s at line %d column %d",
                     e.text, e.line, e.column);
    }
    return root;
}

/* The key text of a body that cannot be canonicalised exactly: its bytes,
   marked so that no canonical text can equal it. */
static int raw_text(llmc_canon_t *c, const char *body, size_t len)
{
    static const char mark[] = "raw:";
    if (!(c->text = malloc(sizeof(mark) - 1 + len + 1)))
        return LLMC_ENOMEM;
    memcpy(c->text, mark, sizeof(mark) - 1);
    memcpy(c->text + sizeof(mark) - 1, body, len);
    c->text_len = sizeof(mark) - 1 + len;
    c->text[c->text_len] = '\0';
    return 0;
}

/* Moves the "cache" extension out of root into c->cache_ext. */
static int take_cache_ext(llmc_canon_t *c, char *err, size_t errlen)
{
    json_t *ext = json_object_get(c->root, "cache");
    if (!ext)
        return 0;
    if (!json_is_object(ext)) {
        snprintf(err, errlen, "cache must be an object");
        return LLMC_EJSON;
    }
    c->cache_ext = json_incref(ext);
    json_object_del(c->root, "cache");
    return 0;
}

/* Builds c->text from c->root without the ignored top-level fields. */
static int build_text(llmc_canon_t *c)
{
    json_t *copy = json_deep_copy(c->root);
    if (!copy)
        return LLMC_ENOMEM;
    for (size_t i = 0; i < sizeof ignored_fields / sizeof ignored_fields[0]; i++)
        json_object_del(copy, ignored_fields[i]);
    return dump_owned(copy, &c->text, &c->text_len);
}

static void read_flags(llmc_canon_t *c)
{
    json_t *opts = json_object_get(c->root, "stream_options");
    json_t *model = json_object_get(c->root, "model");

    c->stream = json_is_true(json_object_get(c->root, "stream"));
    c->include_usage = json_is_true(json_object_get(opts, "include_usage"));
    c->model = json_is_string(model) ? json_string_value(model) : "";
}

int llmc_canon_parse(const char *body, size_t len, llmc_canon_t *out, char *err, size_t errlen)
{
    int rc;

    memset(out, 0, sizeof *out);
    if (len == 0) {
        snprintf(err, errlen, "request body is empty; expected a JSON object");
        return LLMC_EJSON;
    }
    /* jansson skips a raw NUL byte after some tokens; JSON has none outside
       strings (where it must be escaped), so such a body is refused rather
       than keyed like the body without it. */
    if (memchr(body, '\0', len)) {
        snprintf(err, errlen, "request body is not valid JSON: it contains a NUL byte");
        return LLMC_EJSON;
    }
    bool inexact;
    out->root = parse_body(body, len, &inexact, err, errlen);
    if (!out->root)
        return LLMC_EJSON;
    if (!json_is_object(out->root)) {
        snprintf(err, errlen, "request body must be a JSON object");
        rc = LLMC_EJSON;
        goto fail;
    }
    if ((rc = take_cache_ext(out, err, errlen)) != 0)
        goto fail;
    if ((rc = inexact ? raw_text(out, body, len) : build_text(out)) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    read_flags(out);
    return 0;
fail:
    llmc_canon_free(out);
    return rc;
}

void llmc_canon_free(llmc_canon_t *c)
{
    json_decref(c->root);
    json_decref(c->cache_ext);
    free(c->text);
    memset(c, 0, sizeof *c);
}

static void hash_field(SHA256_CTX *ctx, const char *s, size_t len)
{
    uint8_t pre[8];
    for (int i = 0; i < 8; i++)
        pre[i] = (uint8_t)((uint64_t)len >> (8 * i));
    SHA256_Update(ctx, pre, sizeof pre);
    SHA256_Update(ctx, s, len);
}

/* One field of the layout: len bytes at s. */
typedef struct key_field {
    const char *s;
    size_t len;
} key_field_t;

#define KEY_FIELDS 5
#define TEXT(s) {(s), strlen(s)}

/*
 * The one layout every hash of this file is made in: the version tag, then
 * five length-prefixed fields. The disk tier stores request keys under it,
 * so it never changes. The fingerprint, scope and derived hashes are made
 * in it too, each with its marker in one slot (FINGERPRINT_TAG ...).
 *
 * A key (or a fingerprint) is built for every request, hits included. The
 * low-level SHA256_* calls hash on the stack; OpenSSL 3.0's EVP digest
 * allocates and frees its provider context on every EVP_DigestInit_ex, even
 * on a reused EVP_MD_CTX, which would be the one allocation left on the hit
 * path. Both run the same SHA-256 code, and these calls cannot fail.
 */
static void key_hash(llmc_key_t *out, const key_field_t f[KEY_FIELDS])
{
    SHA256_CTX ctx;

    SHA256_Init(&ctx);
    SHA256_Update(&ctx, KEY_VERSION_TAG, sizeof KEY_VERSION_TAG - 1);
    for (int i = 0; i < KEY_FIELDS; i++)
        hash_field(&ctx, f[i].s, f[i].len);
    SHA256_Final(out->b, &ctx);
    OPENSSL_cleanse(&ctx, sizeof ctx);
}

void llmc_key_build(llmc_key_t *out, const char *path, const char *upstream,
                    const char *scope, const char *ns,
                    const char *canon, size_t canon_len)
{
    const key_field_t f[KEY_FIELDS] = {
        TEXT(path), TEXT(upstream), TEXT(scope), TEXT(ns), {canon, canon_len},
    };
    key_hash(out, f);
}

void llmc_key_fingerprint(llmc_key_t *out, const char *path, const char *scope,
                          const char *ns, const char *raw, size_t raw_len)
{
    const key_field_t f[KEY_FIELDS] = {
        TEXT(path), TEXT(FINGERPRINT_TAG), TEXT(scope), TEXT(ns), {raw_len ? raw : "", raw_len},
    };
    key_hash(out, f);
}

void llmc_key_scope(llmc_key_t *out, const char *credential, size_t len)
{
    const key_field_t f[KEY_FIELDS] = {
        TEXT(SCOPE_TAG), TEXT(""), TEXT(""), TEXT(""), {len ? credential : "", len},
    };
    key_hash(out, f);
}

void llmc_key_forwarded(llmc_key_t *out, const char *scope, const char *lines, size_t len)
{
    const key_field_t f[KEY_FIELDS] = {
        TEXT(FORWARD_TAG), TEXT(scope), TEXT(""), TEXT(""), {len ? lines : "", len},
    };
    key_hash(out, f);
}

void llmc_key_derived(llmc_key_t *out, const llmc_key_t *of, const char *form,
                      const char *etag)
{
    const key_field_t f[KEY_FIELDS] = {
        TEXT(DERIVED_TAG), TEXT(form), TEXT(etag), TEXT(""),
        {(const char *)of->b, LLMC_KEY_LEN},
    };
    key_hash(out, f);
}

void llmc_key_variant(llmc_key_t *out, const llmc_key_t *of, unsigned variant,
                      const uint8_t etag[8])
{
    *out = *of;
    for (int i = 0; i < 8; i++)
        out->b[i] ^= etag[i];
    out->b[LLMC_KEY_LEN - 1] ^= (uint8_t)(0x80u | (variant & 0x7fu));
}
