/*
 * llmc/key.h: canonical request bodies and cache keys.
 *
 * The cache key is SHA-256 over the endpoint path, the upstream base URL,
 * the cache scope, the namespace and the canonical form of the JSON body.
 * The request fingerprint, the scope hash of a credential and the key of a
 * derived form are SHA-256 in the same layout, each marked as what it is.
 * The canonical form keeps every field that can change the answer, known
 * or unknown, and drops only the fields in one static table (user, stream,
 * ...), so that a new OpenAI parameter is never silently ignored.
 *
 * Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant
 * whitespace, strings re-escaped one way (jansson's encoder), and numbers in
 * one normal form: a number with an integral value (1, 1.0, 1e0, -0.0) is
 * written as an integer, any other as the shortest %.17g form that reads
 * back to the same double.
 */
#ifndef LLMC_KEY_H
#define LLMC_KEY_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "llmc/entry.h"

typedef struct llmc_canon {
    json_t *root;        /* the parsed body, the "cache" extension removed; owned */
    json_t *cache_ext;   /* the removed "cache" object, or NULL; owned */
    char *text;          /* canonical form of the key-relevant fields; malloc'd */
    size_t text_len;
    bool stream;         /* "stream": true */
    bool include_usage;  /* "stream_options": {"include_usage": true} */
    const char *model;   /* points into root, "" when absent */
} llmc_canon_t;

/*
 * Parses a request body that must be a JSON object and fills *out. Returns 0;
 * LLMC_EJSON when the body is not valid JSON or not an object (a message is
 * written to err, errlen bytes, for the client); LLMC_ENOMEM. On error *out
 * holds nothing to free. Any thread; no shared state.
 */
int llmc_canon_parse(const char *body, size_t len, llmc_canon_t *out, char *err, size_t errlen);

/* Frees what llmc_canon_parse allocated. Safe on a zeroed struct. */
void llmc_canon_free(llmc_canon_t *c);

/*
 * Writes the canonical form of any JSON value into a malloc'd string
 * (*out, *out_len). Returns 0 or LLMC_ENOMEM. Exposed for tests and for
 * the disk tier, which stores canonical metadata.
 */
int llmc_canon_dump(const json_t *v, char **out, size_t *out_len);

/* True when a top-level request field does not affect the answer. */
bool llmc_key_field_ignored(const char *name);

/*
 * Computes the cache key. Every string may be "" but not NULL; canon is the
 * canonical body (canon_len bytes), or "" for body-less requests. Fields are
 * length-prefixed before hashing, so no two different inputs collide by
 * concatenation.
 */
void llmc_key_build(llmc_key_t *out, const char *path, const char *upstream,
                    const char *scope, const char *ns,
                    const char *canon, size_t canon_len);

/*
 * The hashes below are made in llmc_key_build's layout, with a marker
 * in one slot so that none has a request key's input, and they keep that
 * layout byte for byte. All are deterministic, need no lock and may be
 * called from any thread; pointers are borrowed for the call only.
 */

/*
 * The fingerprint of a request as the client sent it: the same parts as its
 * cache key, but the raw body (or the query of GET /ask) instead of the
 * canonical one, and the credential itself as scope ("" when shared), so
 * that a repeated request finds its key without any JSON work. Strings are
 * NUL-terminated and may be "" but not NULL; raw is raw_len bytes and may
 * be NULL only when raw_len is 0.
 */
void llmc_key_fingerprint(llmc_key_t *out, const char *path, const char *scope,
                          const char *ns, const char *raw, size_t raw_len);

/*
 * The hash of a client credential (the Authorization header's value, len
 * bytes; NULL only when len is 0) that stands for it in a per-key cache
 * scope, so that one key's answers are never served to another and the
 * credential itself is never stored.
 */
void llmc_key_scope(llmc_key_t *out, const char *credential, size_t len);

/*
 * The scope of a request that sends client headers upstream (lines: the
 * "Name: value\r\n" lines forwarded, len bytes, never empty): scope, the
 * request's scope or fingerprint scope ("" when shared), hashed with those
 * lines, so that an answer made under one organisation, project or beta
 * flag is never a hit for another. Its hex stands in the key's scope slot
 * (or the fingerprint's); a request that forwards none keeps its plain
 * scope, so its key is the one it always had. scope is NUL-terminated.
 */
void llmc_key_forwarded(llmc_key_t *out, const char *scope, const char *lines, size_t len);

/*
 * The key of a derived form of a cached answer (form: "ask", "sse",
 * "sse+usage", ...) stored beside it: from the answer's key *of and its ETag
 * (etag, the quoted text of llmc_entry_etag), so that a new answer under
 * the same key, which has another ETag, never finds the old answer's forms.
 * form and etag are NUL-terminated and not NULL.
 */
void llmc_key_derived(llmc_key_t *out, const llmc_key_t *of, const char *form,
                      const char *etag);

/*
 * The key of another coding of a cached answer or form (variant: 0..127,
 * e.g. the content coding's number), from its key *of and the 8 raw bytes
 * of its ETag (llmc_entry_t.etag). Unlike llmc_key_derived it hashes
 * nothing: it XORs the ETag into the first 8 bytes and the variant, with a
 * high bit set, into the last. That is enough because *of is a SHA-256
 * output nobody chooses: no request's key lands on a variant's but by a
 * 2^-256 chance, and the mask is never zero, so a variant is never *of. A
 * new answer under the same key has another ETag, hence other variants.
 * A hit served compressed derives one per request, where SHA-256 would
 * cost more than the rest of the hit's own work. Any thread.
 */
void llmc_key_variant(llmc_key_t *out, const llmc_key_t *of, unsigned variant,
                      const uint8_t etag[8]);

#endif
