/*
 * entry.c: building, sharing and freeing cache entries (llmc/entry.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - An entry is one malloc block laid out as: the struct, content_type, ns,
 *   model, the tag pointer array (pointer-aligned), the tag strings, the
 *   vector (float-aligned), then the body and a NUL. mem_bytes is
 *   malloc_usable_size of that block, so the memory cache charges what the
 *   allocator really handed out, slack included.
 * - The reference count uses a relaxed increment (taking a reference needs
 *   an existing one, so nothing is published by it) and an acq_rel
 *   decrement, so that every write made through any reference happens
 *   before the free in the thread that drops the last one.
 * - The ETag is the first 16 hex digits of SHA-256(body): 64 bits are ample
 *   to tell apart versions of one URL, and a hash (not a counter) gives the
 *   same ETag to the same answer in every process and tier.
 * - A NULL content_type becomes "application/json", what every endpoint of
 *   an OpenAI-style API answers, so that the entry's field is never NULL.
 */
#include <malloc.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/entry_int.h"
#include "llmc/entry.h"

#define DEFAULT_CONTENT_TYPE "application/json"

static const char hexdigits[] = "0123456789abcdef";

/* Where each part of the block starts; computed once, used to size and fill. */
struct layout {
    size_t ct, ns, model, tagv, tagstr, vec, body, total;
};

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

static size_t align_up(size_t off, size_t a)
{
    return (off + a - 1) & ~(a - 1);
}

/* Adds n to *off; false when the sum would overflow size_t. */
static int grow(size_t *off, size_t n)
{
    if (n > SIZE_MAX - *off)
        return 0;
    *off += n;
    return 1;
}

static int plan(const llmc_entry_spec_t *s, const char *ct, uint32_t ntags, uint32_t dim,
                struct layout *l)
{
    size_t off = sizeof(llmc_entry_t);

    l->ct = off;
    off += strlen(ct) + 1;
    l->ns = off;
    off += strlen(or_empty(s->ns)) + 1;
    l->model = off;
    off += strlen(or_empty(s->model)) + 1;
    l->tagv = off = align_up(off, alignof(const char *));
    off += (size_t)ntags * sizeof(const char *);
    l->tagstr = off;
    for (uint32_t i = 0; i < ntags; i++)
        off += strlen(or_empty(s->tags[i])) + 1;
    l->vec = off = align_up(off, alignof(float));
    if ((size_t)dim > (SIZE_MAX - off) / sizeof(float))
        return 0;
    off += (size_t)dim * sizeof(float);
    l->body = off;
    if (!grow(&off, s->body_len) || !grow(&off, 1))
        return 0;
    l->total = off;
    return 1;
}

/* Copies the NUL-terminated s to base + *off and returns where it landed. */
static const char *put_str(char *base, size_t *off, const char *s)
{
    size_t n = strlen(s) + 1;
    char *dst = memcpy(base + *off, s, n);

    *off += n;
    return dst;
}

static int make_etag(llmc_entry_t *e)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (!EVP_Digest(e->body, e->body_len, md, &mdlen, EVP_sha256(), NULL) || mdlen < 8)
        return -1;
    e->etag[0] = '"';
    for (int i = 0; i < 8; i++) {
        e->etag[1 + 2 * i] = hexdigits[md[i] >> 4];
        e->etag[2 + 2 * i] = hexdigits[md[i] & 15];
    }
    e->etag[17] = '"';
    e->etag[18] = '\0';
    return 0;
}

static void fill(llmc_entry_t *e, const llmc_entry_spec_t *s, const char *ct, uint32_t ntags,
                 uint32_t dim, const struct layout *l)
{
    char *base = (char *)e;
    size_t off = l->ct;

    e->content_type = put_str(base, &off, ct);
    e->ns = put_str(base, &off, or_empty(s->ns));
    e->model = put_str(base, &off, or_empty(s->model));

    const char **tagv = (const char **)(void *)(base + l->tagv);
    off = l->tagstr;
    for (uint32_t i = 0; i < ntags; i++)
        tagv[i] = put_str(base, &off, or_empty(s->tags[i]));
    e->tags = ntags ? tagv : NULL;
    e->ntags = ntags;

    e->dim = dim;
    e->vector = NULL;
    if (dim)
        e->vector = memcpy(base + l->vec, s->vector, (size_t)dim * sizeof(float));

    char *body = base + l->body;
    if (s->body_len)
        memcpy(body, s->body, s->body_len);
    body[s->body_len] = '\0';
    e->body = body;
    e->body_len = s->body_len;
}

llmc_entry_t *llmc_entry_new(const llmc_entry_spec_t *spec)
{
    struct layout l;
    llmc_entry_t *e = NULL;
    const char *ct = spec->content_type ? spec->content_type : DEFAULT_CONTENT_TYPE;
    uint32_t ntags = spec->tags ? spec->ntags : 0;
    uint32_t dim = spec->vector ? spec->dim : 0;

    /* A length without bytes is a caller bug we refuse rather than read NULL. */
    if (!spec->body && spec->body_len)
        goto fail;
    if (!plan(spec, ct, ntags, dim, &l))
        goto fail;
    e = malloc(l.total);
    if (!e)
        goto fail;
    memset(e, 0, sizeof(*e));
    if (spec->key)
        e->key = *spec->key;
    atomic_init(&e->refcnt, 1);
    atomic_init(&e->link.visited, 0);
    e->flags = spec->flags;
    e->status = spec->status;
    e->created_ms = spec->created_ms;
    e->expires_ms = spec->expires_ms;
    fill(e, spec, ct, ntags, dim, &l);
    if (make_etag(e) != 0)
        goto fail;
    e->mem_bytes = malloc_usable_size(e);
    return e;

fail:
    free(e);
    return NULL;
}

llmc_entry_t *llmc_entry_ref(llmc_entry_t *e)
{
    atomic_fetch_add_explicit(&e->refcnt, 1, memory_order_relaxed);
    return e;
}

void llmc__entry_free(llmc_entry_t *e)
{
    free(e);
}

void llmc_entry_unref(llmc_entry_t *e)
{
    if (!e)
        return;
    if (atomic_fetch_sub_explicit(&e->refcnt, 1, memory_order_acq_rel) == 1)
        llmc__entry_free(e);
}

int64_t llmc_entry_ttl_left(const llmc_entry_t *e, int64_t now_ms)
{
    if (now_ms >= e->expires_ms)
        return 0;
    /* Ceiling, so that an entry with 1 ms left still says "1" rather than
       "0", which a client would read as already expired. */
    uint64_t left = (uint64_t)e->expires_ms - (uint64_t)now_ms;
    return (int64_t)(left / 1000 + (left % 1000 != 0));
}

int64_t llmc_entry_age(const llmc_entry_t *e, int64_t now_ms)
{
    if (now_ms <= e->created_ms)
        return 0;
    return (int64_t)(((uint64_t)now_ms - (uint64_t)e->created_ms) / 1000);
}

void llmc_key_hex(const llmc_key_t *key, char out[2 * LLMC_KEY_LEN + 1])
{
    for (int i = 0; i < LLMC_KEY_LEN; i++) {
        out[2 * i] = hexdigits[key->b[i] >> 4];
        out[2 * i + 1] = hexdigits[key->b[i] & 15];
    }
    out[2 * LLMC_KEY_LEN] = '\0';
}
