/*
 * gateway/dialect.h: how each streaming route's event stream is recorded
 * and replayed. One table keyed by route (dialect.c), like shape.c's, so a
 * new streaming API is one row: the gateway's stream paths (fetch.c
 * records, respond.c and fetch.c replay, handler.c asks for usage) call
 * through the row and never name an API.
 *
 * The assembler folds a stream's events (each one's data, as llmc_sse_next
 * finds them) into the object the cache stores: the answer the same
 * request without "stream" gets. Replay writes a stored object back as the
 * route's stream. Both are pure (core/), any thread.
 */
#ifndef LLMC_GW_DIALECT_H
#define LLMC_GW_DIALECT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct llmc_dialect {
    const char *route;
    /* The upstream sends usage in a stream only when asked with
       stream_options.include_usage (chat and completions), so a streaming
       miss asks for it and the clients that did not get the stream without
       that chunk (handler.c, respond.c). False: usage is always there. */
    bool usage_opt_in;
    void *(*asm_new)(void);                                 /* NULL without memory */
    int (*asm_add)(void *a, const char *data, size_t len);  /* 0 or a sticky error */
    bool (*asm_complete)(const void *a);                    /* the stream ended properly */
    int (*asm_result)(void *a, char **json, size_t *len);   /* malloc'd JSON */
    void (*asm_free)(void *a);
    /* The stored object json as the route's SSE body, malloc'd into *out.
       include_usage: the client's stream_options.include_usage (only read
       by usage_opt_in dialects). 0 or an LLMC_E* code. */
    int (*replay)(const char *json, size_t len, bool include_usage, char **out, size_t *out_len);
} llmc_dialect_t;

/* The row of route (a path such as "/v1/responses"); a route without one
   (every other cacheable route) gets the chat completions row. Never NULL. */
const llmc_dialect_t *llmc_dialect_of(const char *route);

#endif
