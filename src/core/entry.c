/*
 * entry.c: building, sharing and freeing cache entries (llmc/entry.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - An entry is one block laid out as: the struct, the namespace, the
 *   model, the route, the content type (only when it is not one of the shared ones),
 *   the tag strings back to back, the vector (float-aligned), then the body
 *   and a NUL. The struct reaches the strings through 16-bit offsets and
 *   the vector through the body pointer (it ends where the body starts), so
 *   an empty string costs no byte and a pointer costs 2 bytes, not 8.
 *   mem_bytes is the size of the block the allocator handed out, so the
 *   memory cache charges what it really holds, slack included.
 * - Blocks come from one process-wide slab (llmc/slab.h), not from malloc:
 *   from the general heap, entries fill the holes that each miss's
 *   temporaries leave, and the slivers between them cost about 95 bytes
 *   an entry. The slab is the one global of the core library because an
 *   entry is freed by whoever drops the last reference, with no context in
 *   hand, just as free() needs none. mem_bytes doubles as the size the slab
 *   wants back on free.
 * - Under AddressSanitizer (and Valgrind) every entry is a plain malloc block instead: the
 *   slab reuses a freed block at once and ASan does not see into its pages,
 *   so a use of a freed entry would go unnoticed. From malloc, ASan poisons
 *   the freed block and holds it in quarantine, and reports the use.
 * - The reference count uses a relaxed increment (taking a reference needs
 *   an existing one, so nothing is published by it) and an acq_rel
 *   decrement, so that every write made through any reference happens
 *   before the free in the thread that drops the last one.
 * - The ETag is the first 16 hex digits of SHA-256(body): 64 bits are ample
 *   to tell apart versions of one URL, and a hash (not a counter) gives the
 *   same ETag to the same answer in every process and tier. The entry keeps
 *   the 8 raw bytes; llmc_entry_etag writes the quoted hex when a header
 *   needs it, which costs less than a hit's other work.
 * - A NULL content_type becomes "application/json", what every endpoint of
 *   an OpenAI-style API answers, so that the entry's type is never NULL.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/checkers.h"
#include "core/entry_int.h"
#include "llmc/entry.h"
#include "llmc/error.h"
#include "llmc/slab.h"
#include "llmc/zdict.h"

#define DEFAULT_CONTENT_TYPE "application/json"

/* Whatever the gateway and the usual upstreams send; [0] means "in the block". */
const char *const llmc__entry_ctypes[] = {
    "",
    "application/json",
    "text/event-stream",
    "application/json; charset=utf-8",
    "text/event-stream; charset=utf-8",
};
#define NCTYPES (sizeof(llmc__entry_ctypes) / sizeof(llmc__entry_ctypes[0]))

static const char hexdigits[] = "0123456789abcdef";

/* Set once, before the first entry exists; NULL when the slab is off or
   could not be made, and then every entry comes from malloc. A thread that
   frees an entry got it through some synchronisation after its allocation,
   so it sees the value the allocating thread saw. */
static llmc_slab_t *entry_slab;
static pthread_once_t entry_slab_once = PTHREAD_ONCE_INIT;

/* Under ASan and Valgrind entries come from malloc: the checkers see malloc
   blocks, not the slab's. */
static void entry_slab_init(void)
{
    entry_slab = !LLMC_UNDER_ASAN && !LLMC_UNDER_VALGRIND() ? llmc_slab_new() : NULL;
}

static void *block_alloc(size_t n, size_t *size)
{
    pthread_once(&entry_slab_once, entry_slab_init);
    if (entry_slab)
        return llmc_slab_alloc(entry_slab, n, size);
    void *p = malloc(n);
    if (p)
        *size = malloc_usable_size(p);
    return p;
}

static void block_free(void *p, size_t size)
{
    if (entry_slab)
        llmc_slab_free(entry_slab, p, size);
    else
        free(p);
}

/* Where each part of the block starts (0: absent); computed once, used to
   size and fill. */
struct layout {
    uint8_t ctype;
    size_t ns, model, route, ct, tags, vec, body, total;
};

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

static size_t align_up(size_t off, size_t a)
{
    return (off + a - 1) & ~(a - 1);
}

static uint8_t known_ctype(const char *ct)
{
    for (uint8_t i = 1; i < NCTYPES; i++)
        if (strcmp(ct, llmc__entry_ctypes[i]) == 0)
            return i;
    return 0;
}

static uint32_t ntags_of(const llmc_entry_spec_t *s)
{
    return s->tags ? s->ntags : 0;
}

static uint32_t dim_of(const llmc_entry_spec_t *s)
{
    return s->vector ? s->dim : 0;
}

/* Reserves a string's bytes at *off; an empty one gets offset 0 and none. */
static size_t reserve_str(size_t *off, const char *s)
{
    size_t n = strlen(or_empty(s)), at = n ? *off : 0;

    if (n)
        *off += n + 1;
    return at;
}

/* Bytes of the strings and tags: bounded before anything is laid out, so
   that no offset can overflow 16 bits. */
static size_t meta_bytes(const llmc_entry_spec_t *s, const char *ct)
{
    size_t n = strlen(or_empty(s->ns)) + strlen(or_empty(s->model)) +
               strlen(or_empty(s->route)) + 3;

    if (!known_ctype(ct))
        n += strlen(ct) + 1;
    for (uint32_t i = 0; i < ntags_of(s) && n <= LLMC_ENTRY_MAX_META; i++)
        n += strlen(or_empty(s->tags[i])) + 1;
    return n;
}

bool llmc_entry_spec_fits(const llmc_entry_spec_t *s)
{
    const char *ct = s->content_type ? s->content_type : DEFAULT_CONTENT_TYPE;

    return s->flags <= UINT8_MAX && s->body_len <= LLMC_ENTRY_MAX_BODY &&
           ntags_of(s) <= UINT16_MAX && dim_of(s) <= LLMC_ENTRY_MAX_DIM &&
           meta_bytes(s, ct) <= LLMC_ENTRY_MAX_META;
}

/* Lays out a spec that fits; nothing here can overflow (see the limits). */
static void plan(const llmc_entry_spec_t *s, const char *ct, struct layout *l)
{
    size_t off = sizeof(llmc_entry_t);

    l->ns = reserve_str(&off, s->ns);
    l->model = reserve_str(&off, s->model);
    l->route = reserve_str(&off, s->route);
    l->ctype = known_ctype(ct);
    l->ct = l->ctype ? 0 : reserve_str(&off, ct);
    l->tags = ntags_of(s) ? off : 0;
    for (uint32_t i = 0; i < ntags_of(s); i++)
        off += strlen(or_empty(s->tags[i])) + 1;
    l->vec = off = align_up(off, alignof(float));
    off += (size_t)dim_of(s) * sizeof(float);
    l->body = off;
    l->total = off + s->body_len + 1 + (s->usage ? sizeof(llmc_usage_t) : 0);
}

/* Copies the NUL-terminated s to base + off when it has a place there. */
static void put_str(char *base, size_t off, const char *s)
{
    if (off)
        memcpy(base + off, s, strlen(s) + 1);
}

static int make_etag(llmc_entry_t *e)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (!EVP_Digest(e->body, e->body_len, md, &mdlen, EVP_sha256(), NULL) ||
        mdlen < sizeof(e->etag))
        return -1;
    memcpy(e->etag, md, sizeof(e->etag));
    return 0;
}

static void fill(llmc_entry_t *e, const llmc_entry_spec_t *s, const char *ct,
                 const struct layout *l)
{
    char *base = (char *)e;

    put_str(base, l->ns, or_empty(s->ns));
    put_str(base, l->model, or_empty(s->model));
    put_str(base, l->route, or_empty(s->route));
    put_str(base, l->ct, ct);
    e->ns_off = (uint16_t)l->ns;
    e->model_off = (uint16_t)l->model;
    e->route_off = (uint16_t)l->route;
    e->ct_off = (uint16_t)l->ct;
    e->ctype = l->ctype;

    size_t off = l->tags;
    for (uint32_t i = 0; i < ntags_of(s); i++) {
        size_t n = strlen(or_empty(s->tags[i])) + 1;
        memcpy(base + off, or_empty(s->tags[i]), n);
        off += n;
    }
    e->tags_off = (uint16_t)l->tags;
    e->ntags = (uint16_t)ntags_of(s);

    e->dim = dim_of(s);
    if (e->dim)
        memcpy(base + l->vec, s->vector, (size_t)e->dim * sizeof(float));

    char *body = base + l->body;
    if (s->body_len)
        memcpy(body, s->body, s->body_len);
    body[s->body_len] = '\0';
    e->body = body;
    e->body_len = (uint32_t)s->body_len;
    if (s->usage)
        memcpy(body + s->body_len + 1, s->usage, sizeof(*s->usage));
}

llmc_entry_t *llmc_entry_new(const llmc_entry_spec_t *spec)
{
    struct layout l;
    llmc_entry_t *e = NULL;
    size_t size = 0;
    const char *ct = spec->content_type ? spec->content_type : DEFAULT_CONTENT_TYPE;

    /* A length without bytes is a caller bug we refuse rather than read NULL. */
    if ((!spec->body && spec->body_len) || !llmc_entry_spec_fits(spec))
        goto fail;
    plan(spec, ct, &l);
    e = block_alloc(l.total, &size);
    if (!e)
        goto fail;
    memset(e, 0, sizeof(*e));
    if (spec->key)
        e->key = *spec->key;
    atomic_init(&e->refcnt, 1);
    atomic_init(&e->visited, 0);
    /* Derived flags are never taken from a spec: USAGE from spec.usage,
       PACKED only from llmc_entry_pack (a record claiming it is not packed). */
    e->flags = (uint8_t)((spec->flags & ~(uint32_t)(LLMC_ENTRY_USAGE | LLMC_ENTRY_PACKED)) |
                         (spec->usage ? LLMC_ENTRY_USAGE : 0));
    e->status = spec->status;
    e->created_ms = spec->created_ms;
    e->expires_ms = spec->expires_ms;
    fill(e, spec, ct, &l);
    if (make_etag(e) != 0)
        goto fail;
    /* Under 4 GiB by the limits; the allocator adds at most a page of slack. */
    e->mem_bytes = (uint32_t)size;
    return e;

fail:
    block_free(e, size);
    return NULL;
}

/*
 * Packing keeps the block's layout up to the body (the struct, strings,
 * tags, vector: offsets from the struct's start stay right when that
 * prefix is copied as it is), so packing and unpacking are one memcpy of
 * the prefix and one zstd call. A packed block ends with the frame, its
 * NUL, the token counts when the entry has them (where llmc_entry_usage
 * looks), then the trailer below.
 */
typedef struct pack_trailer {
    uint32_t raw_len, dict_id;
} pack_trailer_t;

static size_t prefix_len(const llmc_entry_t *e)
{
    return (size_t)(e->body - (const char *)e);
}

static size_t usage_len(const llmc_entry_t *e)
{
    return (e->flags & LLMC_ENTRY_USAGE) ? sizeof(llmc_usage_t) : 0;
}

static pack_trailer_t trailer_of(const llmc_entry_t *p)
{
    pack_trailer_t t;
    memcpy(&t, p->body + p->body_len + 1 + usage_len(p), sizeof t);
    return t;
}

/* A copy of e's prefix in a new block of total bytes, its body at the
   same offset (body_len and the bytes after the prefix are the caller's). */
static llmc_entry_t *clone_prefix(const llmc_entry_t *e, size_t total)
{
    size_t size = 0, pre = prefix_len(e);
    llmc_entry_t *n = block_alloc(total, &size);
    if (!n)
        return NULL;
    memcpy(n, e, pre);
    atomic_init(&n->refcnt, 1);
    atomic_init(&n->visited, 0);
    memset(&n->link, 0, sizeof n->link);
    n->in_cache = 0;
    n->body = (const char *)n + pre;
    n->mem_bytes = (uint32_t)size;
    return n;
}

llmc_entry_t *llmc_entry_pack(const llmc_entry_t *e)
{
    uint8_t *z = NULL;
    size_t zlen = 0;
    uint32_t dict = 0;

    if (llmc_entry_is_packed(e) ||
        llmc_zdict_pack_held(e->body, e->body_len, &z, &zlen, &dict) != 1)
        return NULL;
    size_t ulen = usage_len(e);
    llmc_entry_t *p = clone_prefix(e, prefix_len(e) + zlen + 1 + ulen + sizeof(pack_trailer_t));
    if (p) {
        char *body = (char *)p + prefix_len(e);
        pack_trailer_t t = { e->body_len, dict };
        memcpy(body, z, zlen);
        body[zlen] = '\0';
        memcpy(body + zlen + 1, e->body + e->body_len + 1, ulen);
        memcpy(body + zlen + 1 + ulen, &t, sizeof t);
        p->body_len = (uint32_t)zlen; /* < raw: llmc_zdict_pack keeps only frames that shrink */
        p->flags |= LLMC_ENTRY_PACKED; /* its hold on dict is p's from here */
    } else {
        llmc_zdict_drop(dict);
    }
    free(z);
    return p;
}

uint32_t llmc_entry_raw_len(const llmc_entry_t *e)
{
    return llmc_entry_is_packed(e) ? trailer_of(e).raw_len : e->body_len;
}

uint32_t llmc_entry_dict_id(const llmc_entry_t *e)
{
    return llmc_entry_is_packed(e) ? trailer_of(e).dict_id : 0;
}

llmc_entry_t *llmc_entry_unpack(const llmc_entry_t *p, int *rc)
{
    pack_trailer_t t = trailer_of(p);
    size_t ulen = usage_len(p);
    llmc_entry_t *e = clone_prefix(p, prefix_len(p) + (size_t)t.raw_len + 1 + ulen);

    *rc = e ? 0 : LLMC_ENOMEM;
    if (!e)
        return NULL;
    char *body = (char *)e + prefix_len(p);
    *rc = llmc_zdict_unpack(t.dict_id, p->body, p->body_len, body, t.raw_len);
    if (*rc != 0) {
        block_free(e, e->mem_bytes);
        return NULL;
    }
    body[t.raw_len] = '\0';
    memcpy(body + t.raw_len + 1, p->body + p->body_len + 1, ulen);
    e->body_len = t.raw_len;
    e->flags &= (uint8_t)~LLMC_ENTRY_PACKED;
    return e;
}

const char *llmc_entry_tag(const llmc_entry_t *e, uint32_t i)
{
    const char *p = (const char *)e + e->tags_off;

    while (i--)
        p += strlen(p) + 1;
    return p;
}

void llmc_entry_etag(const llmc_entry_t *e, char out[LLMC_ETAG_LEN])
{
    out[0] = '"';
    for (int i = 0; i < 8; i++) {
        out[1 + 2 * i] = hexdigits[e->etag[i] >> 4];
        out[2 + 2 * i] = hexdigits[e->etag[i] & 15];
    }
    out[17] = '"';
    out[18] = '\0';
}

llmc_entry_t *llmc_entry_ref(llmc_entry_t *e)
{
    atomic_fetch_add_explicit(&e->refcnt, 1, memory_order_relaxed);
    return e;
}

void llmc__entry_free(llmc_entry_t *e)
{
    /* A packed entry held its dictionary (llmc_entry_pack). */
    uint32_t dict = llmc_entry_dict_id(e);

    block_free(e, e->mem_bytes);
    llmc_zdict_drop(dict);
}

void llmc_entry_mem_stats(llmc_slab_stats_t *out)
{
    pthread_once(&entry_slab_once, entry_slab_init);
    if (entry_slab)
        llmc_slab_stats(entry_slab, out);
    else
        *out = (llmc_slab_stats_t){0};
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

int64_t llmc_entry_lifetime(const llmc_entry_t *e)
{
    if (e->expires_ms <= e->created_ms)
        return 0;
    uint64_t life = (uint64_t)e->expires_ms - (uint64_t)e->created_ms;
    return (int64_t)(life / 1000 + (life % 1000 != 0));
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
