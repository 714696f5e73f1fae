/*
 * semantic/embedder.c: the lexical and the remote embedder behind
 * semantic/embedder.h's interface (see there).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "semantic/embedder.h"
#include "semantic/lexical.h"

/* ---- lexical ------------------------------------------------------------------------ */

typedef struct lex_embedder {
    llmc_embedder_t base; /* first: the interface's pointer is this one's */
    llmc_lex_t *lx;
    float vec[LLMC_LEX_DIM]; /* the last answer */
} lex_embedder_t;

static int lex_get(llmc_embedder_t *em, const char *text, size_t len, const float **vec,
                   unsigned *dim, llmc_embedder_cb cb, void *arg, llmc_embedder_req_t **req)
{
    lex_embedder_t *le = (lex_embedder_t *)em;
    (void)cb;
    (void)arg;
    (void)req; /* it always answers at once */
    int n = llmc_lex_embed(le->lx, text, len, le->vec);
    if (n < 0)
        return n;
    if (n == 0)
        return LLMC_ENOENT; /* an all-zero vector compares with nothing */
    *vec = le->vec;
    *dim = LLMC_LEX_DIM;
    return 1;
}

static void lex_cancel(llmc_embedder_t *em, llmc_embedder_req_t *req)
{
    (void)em;
    (void)req; /* nothing ever waits */
}

static void lex_free(llmc_embedder_t *em)
{
    lex_embedder_t *le = (lex_embedder_t *)em;
    llmc_lex_free(le->lx);
    free(le);
}

static const llmc_embedder_ops_t lex_ops = {.get = lex_get, .cancel = lex_cancel,
                                            .free = lex_free};

llmc_embedder_t *llmc_embedder_lexical_new(void)
{
    lex_embedder_t *le = calloc(1, sizeof(*le));
    if (!le || !(le->lx = llmc_lex_new())) {
        free(le);
        return NULL;
    }
    le->base.ops = &lex_ops;
    snprintf(le->base.id, sizeof(le->base.id), "%s", LLMC_EMBEDDER_LEXICAL_ID);
    le->base.dim = LLMC_LEX_DIM;
    return &le->base;
}

/* ---- remote ------------------------------------------------------------------------- */

typedef struct remote_embedder {
    llmc_embedder_t base;
    llmc_embed_t *em;
} remote_embedder_t;

static int remote_get(llmc_embedder_t *em, const char *text, size_t len, const float **vec,
                      unsigned *dim, llmc_embedder_cb cb, void *arg, llmc_embedder_req_t **req)
{
    remote_embedder_t *re = (remote_embedder_t *)em;
    llmc_embed_req_t *r = NULL;
    int rc = llmc_embed_get(re->em, text, len, vec, dim, cb, arg, &r);
    if (rc == 1 && !re->base.dim)
        re->base.dim = *dim;
    if (rc == 0)
        *req = (llmc_embedder_req_t *)r;
    return rc;
}

static void remote_cancel(llmc_embedder_t *em, llmc_embedder_req_t *req)
{
    (void)em;
    llmc_embed_cancel((llmc_embed_req_t *)req);
}

static void remote_free(llmc_embedder_t *em)
{
    remote_embedder_t *re = (remote_embedder_t *)em;
    llmc_embed_free(re->em); /* cancels its requests; its memory goes once closed */
    free(re);
}

static const llmc_embedder_ops_t remote_ops = {.get = remote_get, .cancel = remote_cancel,
                                               .free = remote_free};

/* The model when cfg names none: embed.c's default. */
#define REMOTE_DEFAULT_MODEL "text-embedding-3-small"

void llmc_embedder_remote_id(const llmc_embed_config_t *cfg, char *out)
{
    const char *model = cfg->model ? cfg->model : REMOTE_DEFAULT_MODEL;
    const char *url = cfg->url ? cfg->url : "";
    int n = snprintf(out, LLMC_EMBEDDER_ID_MAX, "openai %s %s", model, url);
    if (n >= LLMC_EMBEDDER_ID_MAX) {
        /* Cut, with a hash of the whole: two long ids that differ only past
           the cut stay different. */
        uint64_t h = 0xcbf29ce484222325ull;
        for (const char *p = model; *p; p++)
            h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
        for (const char *p = url; *p; p++)
            h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
        snprintf(out + LLMC_EMBEDDER_ID_MAX - 18, 18, "#%016llx", (unsigned long long)h);
    }
}

llmc_embedder_t *llmc_embedder_remote_new(uv_loop_t *loop, const llmc_embed_config_t *cfg)
{
    remote_embedder_t *re = calloc(1, sizeof(*re));
    if (!re || !(re->em = llmc_embed_new(loop, cfg))) {
        free(re);
        return NULL;
    }
    re->base.ops = &remote_ops;
    llmc_embedder_remote_id(cfg, re->base.id);
    return &re->base;
}
