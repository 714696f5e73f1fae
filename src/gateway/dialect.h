/*
 * gateway/dialect.h: what differs between the model APIs a cached route
 * speaks, one table row per API: how its stream is folded into the stored
 * answer and replayed from it, where its upstream is and how it is
 * authenticated, which request headers change the answer (and so enter the
 * key), and the shape of its error bodies.
 *
 * A cached route's dialect is found by its path (routes[] in dialect.c, as
 * shape.c finds its answer shape); NULL is OpenAI's. Everything
 * above this file asks the dialect instead of testing for an API, so a
 * new API is a new row here plus its own assembler in the core library.
 */
#ifndef LLMC_GW_DIALECT_H
#define LLMC_GW_DIALECT_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway/gateway.h"

typedef struct llmc_dialect {
    const char *name;
    /* Usage is always in this API's stream: nothing to ask the upstream for
       (OpenAI's stream_options.include_usage is not spliced in). */
    bool usage_in_stream;
    /* The stream assembler (llmc/sse.h's contract). */
    void *(*asm_new)(void);
    int (*asm_add)(void *a, const char *data, size_t len);
    bool (*asm_complete)(const void *a);
    int (*asm_result)(void *a, char **json, size_t *len);
    void (*asm_free)(void *a);
    /* A stored answer as this API's event stream (malloc'd *out). */
    int (*replay)(const char *json, size_t len, bool include_usage, char **out, size_t *n);
    /* Request headers whose value is part of the key and that go upstream
       as they came (NULL-terminated, lowercase). */
    const char *const *key_headers;
    /* The client's credential headers, first found wins (lowercase), and
       the header line a client's credential goes upstream under. */
    const char *const *cred_headers;
    /* The error body for this API (malloc'd JSON), NULL when out of memory. */
    char *(*error_body)(int status, const char *type, const char *code, const char *msg);
    /* The Vary names of the credential headers (answers per credential) and
       of key_headers (", "-led, or ""): a cache in front must tell apart
       what the key tells apart. */
    const char *vary_cred;
    const char *vary_keyed;
    /* Which of the gateway's upstreams this API's calls go to. */
    bool anthropic_upstream;
} llmc_dialect_t;

extern const llmc_dialect_t llmc_dialect_openai;
extern const llmc_dialect_t llmc_dialect_anthropic;
extern const llmc_dialect_t llmc_dialect_responses; /* OpenAI's, its own stream */

/* The dialect of a cached route (its path), NULL (OpenAI's chat
   completions stream) for most. */
const llmc_dialect_t *llmc_dialect_for_route(const char *path);

/* The dialect of a path passed through (relay.c): Anthropic's below
   /v1/messages/ (count_tokens, batches), so they reach the Anthropic
   upstream with its credential; NULL for the rest. */
const llmc_dialect_t *llmc_dialect_for_relay(const char *path);

/* An error in d's shape (OpenAI's for NULL), answered on req at once with
   the extra header lines hdrs (NULL or CRLF-ended). */
void llmc_dialect_respond_error(const llmc_dialect_t *d, llmc_http_req_t *req, int status,
                                const char *hdrs, const char *type, const char *code,
                                const char *msg);

/* The dialect d names, OpenAI's for NULL. */
static inline const llmc_dialect_t *llmc_dialect_of(const llmc_dialect_t *d)
{
    return d ? d : &llmc_dialect_openai;
}

/* The base URL (no trailing slash), the key's name for it, the credential
   line the gateway holds for it (or NULL) and whether its answers are shared
   between credentials. */
const char *llmc_dialect_base(const llmc_gw_t *gw, const llmc_dialect_t *d);
const char *llmc_dialect_key_upstream(const llmc_gw_t *gw, const llmc_dialect_t *d);
const char *llmc_dialect_auth(const llmc_gw_t *gw, const llmc_dialect_t *d);
bool llmc_dialect_shared(const llmc_gw_t *gw, const llmc_dialect_t *d);

/* The client's credential for d, with *name set to the header it came in,
   as it goes upstream ("Authorization: ", "x-api-key: "); NULL if none. */
const char *llmc_dialect_credential(const llmc_dialect_t *d, const llmc_http_req_t *req,
                                    const char **line);

/* A key header's value: its lines joined with ", " (RFC 9110 5.3: a
   client may send anthropic-beta's list on several lines), the join
   malloc'd in *owned (free it); NULL when absent. */
const char *llmc_dialect_header(const llmc_http_req_t *req, const char *name, char **owned);

/* The values of d's key headers joined with '\n' after prefix (malloc'd),
   or NULL when out of memory. Header values cannot hold a newline, so two
   different sets never join the same. */
char *llmc_dialect_key_extra(const llmc_dialect_t *d, const llmc_http_req_t *req,
                             const char *prefix);

#endif
