/*
 * semantic/embedder.h: the one interface the semantic tier embeds through.
 * Two embedders stand behind it: the built-in lexical one
 * (semantic/lexical.h), which answers at once, and the remote one
 * (semantic/embed.h, an OpenAI-compatible /v1/embeddings), which answers
 * later on its loop. The tier never asks which one it has.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - An embedder belongs to one thread (a worker's loop): the lexical one
 *   owns a Snowball stemmer, the remote one a loop's upstream client. Make
 *   one per worker; nothing here locks.
 * - id names what made a vector (the embedder, its version or model and
 *   endpoint): vectors of two ids are not comparable, so a vector stored
 *   on disk or shared through Redis is used only by an embedder of the same
 *   id, and re-embedded (or dropped) otherwise.
 * - dim is 0 until known: a remote model names its dimension with its
 *   first vector.
 */
#ifndef LLMC_SEMANTIC_EMBEDDER_H
#define LLMC_SEMANTIC_EMBEDDER_H

#include <stddef.h>

#include <uv.h>

#include "semantic/embed.h"

/* Bytes of an id, NUL included; a longer one is cut (and hashed: below). */
#define LLMC_EMBEDDER_ID_MAX 160
/* The lexical embedder's id: bump the number when its features change. */
#define LLMC_EMBEDDER_LEXICAL_ID "lexical/1"

typedef struct llmc_embedder llmc_embedder_t;
typedef struct llmc_embedder_req llmc_embedder_req_t;

/* A vector later: rc 0 and vec (dim floats, valid during the call), or an
   LLMC_E* with vec NULL (LLMC_ETIMEDOUT, LLMC_ECANCELED when the embedder
   was freed first, ...). Runs on the embedder's loop, never inside get(). */
typedef void (*llmc_embedder_cb)(void *arg, int rc, const float *vec, unsigned dim);

typedef struct llmc_embedder_ops {
    /* text's vector: 1 and *vec, *dim at once (valid until the embedder is
       next used); 0: cb runs later (*req names the request for cancel);
       LLMC_ENOENT: nothing in text to embed (empty, only fillers);
       another LLMC_E* (LLMC_EINVAL, LLMC_E2BIG, LLMC_ENOMEM). */
    int (*get)(llmc_embedder_t *em, const char *text, size_t len, const float **vec,
               unsigned *dim, llmc_embedder_cb cb, void *arg, llmc_embedder_req_t **req);
    /* req's callback will not run. */
    void (*cancel)(llmc_embedder_t *em, llmc_embedder_req_t *req);
    /* Ends every waiting request with LLMC_ECANCELED (inside this call),
       then frees (a remote one once its handles are closed). */
    void (*free)(llmc_embedder_t *em);
} llmc_embedder_ops_t;

struct llmc_embedder {
    const llmc_embedder_ops_t *ops;
    char id[LLMC_EMBEDDER_ID_MAX];
    unsigned dim; /* 0: learnt from the first vector */
};

/* The built-in lexical embedder (LLMC_LEX_DIM floats), or NULL when out of
   memory. Any thread; then used by one thread at a time. */
llmc_embedder_t *llmc_embedder_lexical_new(void);

/* The remote embedder on loop (cfg is copied), or NULL when out of memory.
   Loop thread; used and freed there. */
llmc_embedder_t *llmc_embedder_remote_new(uv_loop_t *loop, const llmc_embed_config_t *cfg);

/* The id a remote embedder made with cfg has ("openai <model> <url>"),
   known before any loop runs. out holds LLMC_EMBEDDER_ID_MAX bytes. */
void llmc_embedder_remote_id(const llmc_embed_config_t *cfg, char *out);

static inline int llmc_embedder_get(llmc_embedder_t *em, const char *text, size_t len,
                                    const float **vec, unsigned *dim, llmc_embedder_cb cb,
                                    void *arg, llmc_embedder_req_t **req)
{
    return em->ops->get(em, text, len, vec, dim, cb, arg, req);
}

static inline void llmc_embedder_cancel(llmc_embedder_t *em, llmc_embedder_req_t *req)
{
    em->ops->cancel(em, req);
}

/* NULL is fine. */
static inline void llmc_embedder_free(llmc_embedder_t *em)
{
    if (em)
        em->ops->free(em);
}

#endif
