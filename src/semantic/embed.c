/*
 * semantic/embed.c: the remote embedder (see embed.h).
 *
 * A request waits in the open batch until the window's timer fires (or the
 * batch is full); then the batch becomes a call: its texts go out as one
 * "input" array and the answer's data[i].embedding goes to request i. A
 * cancelled request stays in its batch with no callback, so the indexes of
 * the answer never shift. The cache is a ring of (text hash, vector): a
 * lookup compares the SHA-256 of the text, never the text itself.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "llmc/error.h"
#include "semantic/embed.h"
#include "upstream/upstream.h"

struct llmc_embed_req {
    char *text;
    size_t len;
    uint8_t hash[32];
    llmc_embed_cb cb; /* NULL: cancelled */
    void *arg;
};

typedef struct batch {
    struct llmc_embed *em;
    llmc_embed_req_t *reqs[LLMC_EMBED_BATCH];
    unsigned n;
    llmc_upstream_call_t *call;
    int status;
    char *buf;
    size_t len, cap;
    bool too_big;
} batch_t;

typedef struct cached {
    uint8_t hash[32];
    unsigned dim; /* 0: empty */
    float *vec;
} cached_t;

struct llmc_embed {
    llmc_embed_config_t cfg;
    char *url, *model, *auth;
    llmc_upstream_t *up;
    uv_timer_t timer;
    batch_t *open;      /* filling; NULL: none */
    batch_t **flying;   /* calls in flight */
    unsigned nflying, capflying;
    cached_t cache[LLMC_EMBED_CACHE];
    unsigned cache_next;
    unsigned closing;   /* handles still to close */
};

static void text_hash(const char *t, size_t n, uint8_t out[32])
{
    unsigned len = 0;
    EVP_Digest(t, n, out, &len, EVP_sha256(), NULL);
}

static const cached_t *cache_find(const llmc_embed_t *em, const uint8_t h[32])
{
    for (unsigned i = 0; i < LLMC_EMBED_CACHE; i++)
        if (em->cache[i].dim && memcmp(em->cache[i].hash, h, 32) == 0)
            return &em->cache[i];
    return NULL;
}

static void cache_put(llmc_embed_t *em, const uint8_t h[32], const float *v, unsigned dim)
{
    cached_t *c = &em->cache[em->cache_next];
    float *nv = malloc(dim * sizeof(float));
    if (!nv)
        return;
    free(c->vec);
    memcpy(c->hash, h, 32);
    memcpy(nv, v, dim * sizeof(float));
    c->vec = nv;
    c->dim = dim;
    em->cache_next = (em->cache_next + 1) % LLMC_EMBED_CACHE;
}

/* Ends every request of b with rc (and its vector when 0), frees b. */
static void batch_end(batch_t *b, int rc, float **vecs, unsigned dim)
{
    for (unsigned i = 0; i < b->n; i++) {
        llmc_embed_req_t *r = b->reqs[i];
        if (r->cb)
            r->cb(r->arg, rc, rc == 0 ? vecs[i] : NULL, rc == 0 ? dim : 0);
        free(r->text);
        free(r);
    }
    free(b->buf);
    free(b);
}

static void flying_remove(llmc_embed_t *em, batch_t *b)
{
    for (unsigned i = 0; i < em->nflying; i++)
        if (em->flying[i] == b) {
            em->flying[i] = em->flying[--em->nflying];
            return;
        }
}

/* The answer's vectors, one per request, all of one dimension. */
static int parse_answer(batch_t *b, float **vecs, unsigned *dim)
{
    json_t *root = json_loadb(b->buf ? b->buf : "", b->len, 0, NULL);
    json_t *data = json_object_get(root, "data"), *it;
    size_t i;
    int rc = 0;

    *dim = 0;
    if (!json_is_array(data) || json_array_size(data) != b->n)
        rc = LLMC_EBADRESP;
    json_array_foreach(data, i, it) {
        if (rc)
            break;
        json_t *idx = json_object_get(it, "index"), *emb = json_object_get(it, "embedding");
        size_t k = json_is_integer(idx) ? (size_t)json_integer_value(idx) : i;
        size_t d = json_array_size(emb);
        if (!json_is_array(emb) || d == 0 || d > LLMC_EMBED_MAX_DIM || k >= b->n || vecs[k] ||
            (*dim && d != *dim) || !(vecs[k] = malloc(d * sizeof(float)))) {
            rc = LLMC_EBADRESP;
            break;
        }
        *dim = (unsigned)d;
        double norm = 0;
        for (size_t j = 0; j < d; j++) {
            json_t *x = json_array_get(emb, j);
            if (!json_is_number(x)) {
                rc = LLMC_EBADRESP;
                break;
            }
            vecs[k][j] = (float)json_number_value(x);
            norm += (double)vecs[k][j] * vecs[k][j];
        }
        /* Cosine is what the index compares: unit length whatever the model sends. */
        for (size_t j = 0; rc == 0 && j < d && norm > 0; j++)
            vecs[k][j] = (float)(vecs[k][j] / __builtin_sqrt(norm));
    }
    json_decref(root);
    return rc;
}

static void on_head(void *arg, int status, const char *ct, const char *h, size_t hl)
{
    (void)ct;
    (void)h;
    (void)hl;
    ((batch_t *)arg)->status = status;
}

static void on_data(void *arg, const char *buf, size_t len)
{
    batch_t *b = arg;
    if (b->too_big || b->len + len > LLMC_EMBED_MAX_ANSWER) {
        b->too_big = true;
        return;
    }
    if (b->len + len + 1 > b->cap) {
        size_t cap = (b->len + len + 1) * 2;
        char *n = realloc(b->buf, cap);
        if (!n) {
            b->too_big = true;
            return;
        }
        b->buf = n;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, buf, len);
    b->len += len;
}

static void on_done(void *arg, int err, const char *detail)
{
    batch_t *b = arg;
    llmc_embed_t *em = b->em;
    float *vecs[LLMC_EMBED_BATCH] = {0};
    unsigned dim = 0;
    int rc = err;

    (void)detail;
    flying_remove(em, b);
    if (rc == 0 && (b->status < 200 || b->status > 299 || b->too_big))
        rc = LLMC_EUPSTREAM;
    if (rc == 0)
        rc = parse_answer(b, vecs, &dim);
    if (rc == 0)
        for (unsigned i = 0; i < b->n; i++)
            cache_put(em, b->reqs[i]->hash, vecs[i], dim);
    batch_end(b, rc, vecs, dim);
    for (unsigned i = 0; i < LLMC_EMBED_BATCH; i++)
        free(vecs[i]);
}

/* The open batch goes out as one call. */
static void flush(llmc_embed_t *em)
{
    batch_t *b = em->open;
    em->open = NULL;
    uv_timer_stop(&em->timer);
    if (!b)
        return;
    json_t *in = json_array();
    for (unsigned i = 0; i < b->n; i++)
        json_array_append_new(in, json_stringn(b->reqs[i]->text, b->reqs[i]->len));
    json_t *o = json_pack("{s:s,s:o}", "model", em->model, "input", in);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    const char *hdrs[2] = {"Content-Type: application/json", em->auth};
    llmc_upstream_request_t req = {
        .method = "POST", .url = em->url, .body = body, .body_len = body ? strlen(body) : 0,
        .headers = hdrs, .nheaders = em->auth ? 2 : 1, .allow_resend = true,
    };
    static const llmc_upstream_handler_t h = {on_head, on_data, on_done};
    int rc = LLMC_ENOMEM;
    if (body && (em->nflying < em->capflying ||
                 (em->flying = realloc(em->flying, (em->capflying = em->capflying * 2 + 4) *
                                                       sizeof(*em->flying)))))
        rc = llmc_upstream_start(em->up, &req, &h, b, &b->call);
    free(body);
    if (rc < 0) {
        batch_end(b, rc, NULL, 0);
        return;
    }
    em->flying[em->nflying++] = b;
}

static void on_timer(uv_timer_t *t)
{
    flush(t->data);
}

static uint64_t call_ms(const llmc_embed_config_t *cfg)
{
    return cfg->timeout_ms > cfg->window_ms + 1 ? cfg->timeout_ms - cfg->window_ms : 1;
}

llmc_embed_t *llmc_embed_new(uv_loop_t *loop, const llmc_embed_config_t *cfg)
{
    llmc_embed_t *em = calloc(1, sizeof(*em));
    if (!em)
        return NULL;
    em->cfg = *cfg;
    llmc_upstream_config_t uc = {
        /* The window is part of a request's wait: the call gets the rest. */
        .connect_timeout_ms = call_ms(cfg), .total_timeout_ms = call_ms(cfg),
    };
    if (asprintf(&em->url, "%s/embeddings", cfg->url) < 0)
        em->url = NULL;
    em->model = strdup(cfg->model ? cfg->model : "text-embedding-3-small");
    if (cfg->key && asprintf(&em->auth, "Authorization: Bearer %s", cfg->key) < 0)
        em->auth = NULL;
    em->up = llmc_upstream_new(loop, &uc);
    if (!em->url || !em->model || (cfg->key && !em->auth) || !em->up ||
        uv_timer_init(loop, &em->timer) != 0) {
        if (em->up)
            llmc_upstream_close(em->up, NULL, NULL);
        free(em->url);
        free(em->model);
        free(em->auth);
        free(em);
        return NULL;
    }
    em->timer.data = em;
    return em;
}

static void release(llmc_embed_t *em)
{
    if (--em->closing > 0)
        return;
    for (unsigned i = 0; i < LLMC_EMBED_CACHE; i++)
        free(em->cache[i].vec);
    free(em->flying);
    free(em->url);
    free(em->model);
    free(em->auth);
    free(em);
}

static void timer_closed(uv_handle_t *h)
{
    release(h->data);
}

static void up_closed(void *arg)
{
    release(arg);
}

void llmc_embed_free(llmc_embed_t *em)
{
    if (!em)
        return;
    if (em->open) {
        batch_t *b = em->open;
        em->open = NULL;
        batch_end(b, LLMC_ECANCELED, NULL, 0);
    }
    /* The calls are cancelled by the client's close: their requests end here. */
    while (em->nflying > 0) {
        batch_t *b = em->flying[--em->nflying];
        llmc_upstream_cancel(b->call);
        batch_end(b, LLMC_ECANCELED, NULL, 0);
    }
    em->closing = 2;
    uv_close((uv_handle_t *)&em->timer, timer_closed);
    llmc_upstream_close(em->up, up_closed, em);
}

int llmc_embed_get(llmc_embed_t *em, const char *text, size_t len, const float **vec,
                   unsigned *dim,
                   llmc_embed_cb cb, void *arg, llmc_embed_req_t **out)
{
    uint8_t h[32];
    /* A full batch goes out before this request joins the next: a failure
       to start it answers its own requests, never this one, here. */
    if (em->open && em->open->n == LLMC_EMBED_BATCH)
        flush(em);
    text_hash(text, len, h);
    const cached_t *c = cache_find(em, h);
    if (c) {
        *vec = c->vec;
        *dim = c->dim;
        return 1;
    }
    llmc_embed_req_t *r = calloc(1, sizeof(*r));
    if (!r || !(r->text = malloc(len + 1))) {
        free(r);
        return LLMC_ENOMEM;
    }
    memcpy(r->text, text, len);
    r->text[len] = '\0';
    r->len = len;
    memcpy(r->hash, h, 32);
    r->cb = cb;
    r->arg = arg;
    if (!em->open) {
        if (!(em->open = calloc(1, sizeof(batch_t)))) {
            free(r->text);
            free(r);
            return LLMC_ENOMEM;
        }
        em->open->em = em;
        uv_timer_start(&em->timer, on_timer, em->cfg.window_ms, 0);
    }
    em->open->reqs[em->open->n++] = r;
    *out = r;
    return 0;
}

void llmc_embed_cancel(llmc_embed_req_t *r)
{
    r->cb = NULL;
}
