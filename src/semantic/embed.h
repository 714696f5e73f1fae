/*
 * semantic/embed.h: the remote embedder (`--semantic-embedder openai`): any
 * OpenAI-compatible /v1/embeddings endpoint, called asynchronously through
 * the upstream client on one worker's loop. The built-in embedder is
 * semantic/lexical.h, which answers at once; this one answers later, so the
 * semantic tier's lookup goes pending while it waits.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - One embedder per worker loop (its upstream client, its timer, its
 *   cache): nothing here is shared between threads, so nothing locks.
 * - Requests that come within window_ms of the first are sent as one call
 *   with many inputs (at most LLMC_EMBED_BATCH): concurrent misses cost one
 *   round trip, not one each. A full batch leaves when the next request
 *   comes or its timer fires, never from inside the request that filled it
 *   (whose callback must not run inside llmc_embed_get).
 * - Identical text is answered from a small cache of recent embeddings
 *   (LLMC_EMBED_CACHE, oldest replaced), synchronously: no call, no wait.
 * - A request's whole wait is bounded by timeout_ms: the batch window and
 *   then the call (the upstream client's timeout, what the window leaves);
 *   a request that cannot be answered in time fails with
 *   LLMC_ETIMEDOUT, any other failure (connection, status, a body that is
 *   not an embedding list of the right length) with another LLMC_E*.
 */
#ifndef LLMC_SEMANTIC_EMBED_H
#define LLMC_SEMANTIC_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define LLMC_EMBED_BATCH 64   /* inputs per call at most */
#define LLMC_EMBED_CACHE 1024 /* embeddings of recent texts kept per worker */
#define LLMC_EMBED_MAX_DIM 8192
#define LLMC_EMBED_MAX_ANSWER (64u << 20)

typedef struct llmc_embed_config {
    const char *url;    /* the API base ("http://host/v1"); "/embeddings" is appended */
    const char *model;
    const char *key;    /* bearer token, or NULL */
    unsigned window_ms; /* how long the first request of a batch waits for more */
    unsigned timeout_ms;
} llmc_embed_config_t;

typedef struct llmc_embed llmc_embed_t;
typedef struct llmc_embed_req llmc_embed_req_t;

/* The answer: rc 0 and vec (dim floats, valid during the call), or an
   LLMC_E* with vec NULL. LLMC_ECANCELED when the embedder is freed first. */
typedef void (*llmc_embed_cb)(void *arg, int rc, const float *vec, unsigned dim);

/* A new embedder on loop (cfg is copied). NULL when out of memory. Loop thread. */
llmc_embed_t *llmc_embed_new(uv_loop_t *loop, const llmc_embed_config_t *cfg);

/* Cancels every request (their callbacks run with LLMC_ECANCELED, inside
   this call), closes the handles; the memory goes once they are closed.
   NULL is fine. Loop thread. */
void llmc_embed_free(llmc_embed_t *em);

/* Asks for text's embedding. 1: it was cached, *vec points at it (valid
   until the embedder is next used on this loop) and *dim is set, and cb
   never runs; 0: cb
   runs later on the loop, never inside this call, unless the request is
   cancelled first (*out, for llmc_embed_cancel); LLMC_ENOMEM. Loop thread. */
int llmc_embed_get(llmc_embed_t *em, const char *text, size_t len, const float **vec,
                   unsigned *dim,
                   llmc_embed_cb cb, void *arg, llmc_embed_req_t **out);

/* Its callback will not run. Loop thread. */
void llmc_embed_cancel(llmc_embed_req_t *r);

#endif
