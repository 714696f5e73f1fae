/*
 * llmc/entry.h: one cached answer.
 *
 * An entry is immutable once built, apart from its reference count and the
 * fields that belong to the memory cache (link, visited, in_cache). It is
 * one allocation: the struct, then every string, the tags, the vector, the
 * body and its NUL, then the answer's token counts when it has them, so
 * that its size can be measured exactly and freeing it is one call. Small
 * entries come from a slab of their own (llmc/slab.h), large ones from
 * malloc. Entries are reference counted because an answer that is
 * being written to a slow client must outlive its eviction from the cache.
 *
 * Times are wall-clock milliseconds since the Unix epoch, not monotonic
 * ones, because entries outlive the process in the disk tier.
 */
#ifndef LLMC_ENTRY_H
#define LLMC_ENTRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "llmc/slab.h"
#include "llmc/usage.h"

#define LLMC_KEY_LEN 32

/* A SHA-256 cache key; all 32 bytes are kept and compared. */
typedef struct llmc_key {
    uint8_t b[LLMC_KEY_LEN];
} llmc_key_t;

enum llmc_entry_flags {
    LLMC_ENTRY_PRIVATE     = 1u << 0, /* per-credential scope: Cache-Control private */
    LLMC_ENTRY_FROM_STREAM = 1u << 1, /* assembled from a recorded SSE stream */
    LLMC_ENTRY_USAGE       = 1u << 2, /* token counts follow the body (llmc_entry_usage);
                                         set by llmc_entry_new from spec.usage alone */
    LLMC_ENTRY_PACKED      = 1u << 3, /* the body is a zstd frame (llmc_entry_pack); only
                                         the memory tier holds such entries, never a reader */
};

/* The largest body an entry holds: the block's lengths are 32-bit, to keep
   the struct small, and the block is the body plus at most about 1 MiB. */
#define LLMC_ENTRY_MAX_BODY ((size_t)UINT32_MAX - (2u << 20))
/* The strings and tags (namespace, model, a content type not in the table
   below, tag strings) share a region addressed by 16-bit offsets. */
#define LLMC_ENTRY_MAX_META 60000u
/* The longest vector an entry holds (1 MiB of floats). */
#define LLMC_ENTRY_MAX_DIM (1u << 18)

/* Bytes of an ETag as written in a header: '"', 16 hex digits, '"', NUL. */
#define LLMC_ETAG_LEN 19

/* Fields owned by the memory cache (llmc/cache.h); nobody else touches them. */
struct llmc_entry_link {
    struct llmc_entry *hnext;        /* hash chain */
    struct llmc_entry *prev, *next;  /* SIEVE queue: head is newest */
};

/*
 * The struct is kept small (128 bytes on LP64; a unit test holds it to 128)
 * because a cache holds millions of small answers and this header is most
 * of what an answer costs beyond its body. Hence: 32-bit lengths, the ETag
 * as 8 raw bytes, and 16-bit offsets into the block instead of pointers for
 * everything but the body. Read those fields through the accessors below.
 * What a lookup reads (the key, refcnt, visited, expires_ms and the hash
 * chain) comes first, so that a step along a chain touches one cache line
 * or two, not three.
 */
typedef struct llmc_entry {
    llmc_key_t key;
    _Atomic uint32_t refcnt;
    uint16_t status;             /* upstream HTTP status, always 2xx today */
    uint8_t flags;               /* LLMC_ENTRY_* */
    _Atomic uint8_t visited;     /* memory cache: SIEVE bit, set on hit without a lock */
    int64_t expires_ms;          /* fresh while now < expires_ms */
    struct llmc_entry_link link;
    const char *body;            /* body_len bytes, NUL-terminated for convenience */
    int64_t created_ms;          /* when the upstream answered */
    uint32_t body_len;
    uint32_t mem_bytes;          /* bytes of the block the allocator handed out */
    uint8_t etag[8];             /* first 8 bytes of SHA-256(body); see llmc_entry_etag */
    uint32_t dim;                /* vector dimension, 0 when none */
    uint16_t ntags;
    uint16_t ns_off, model_off;  /* offsets from the struct's start; 0: "" */
    uint16_t ct_off;             /* content type's offset when ctype is 0 */
    uint16_t tags_off;           /* ntags NUL-terminated strings, one after another */
    uint8_t ctype;               /* index into the known content types; 0: at ct_off */
    uint8_t in_cache;            /* memory cache: linked into a shard */
    uint16_t route_off;          /* the endpoint the answer is for; 0: "" */
} llmc_entry_t;

/* Content types most answers carry, shared instead of copied; [0] is unused. */
extern const char *const llmc__entry_ctypes[];

static inline const char *llmc__entry_str(const llmc_entry_t *e, uint16_t off)
{
    return off ? (const char *)e + off : "";
}

/* The content type, never NULL. Points into e or at a static string. */
static inline const char *llmc_entry_content_type(const llmc_entry_t *e)
{
    return e->ctype ? llmc__entry_ctypes[e->ctype] : llmc__entry_str(e, e->ct_off);
}

/* The namespace, "" when none. Valid while the caller holds a reference. */
static inline const char *llmc_entry_ns(const llmc_entry_t *e)
{
    return llmc__entry_str(e, e->ns_off);
}

/* The model, "" when unknown. Valid while the caller holds a reference. */
static inline const char *llmc_entry_model(const llmc_entry_t *e)
{
    return llmc__entry_str(e, e->model_off);
}

/* The endpoint path the answer was stored for ("/v1/chat/completions"), ""
   when unknown (records written before it was kept). Valid while the caller
   holds a reference. */
static inline const char *llmc_entry_route(const llmc_entry_t *e)
{
    return llmc__entry_str(e, e->route_off);
}

/* The vector (dim floats, float-aligned), NULL when none. It lies just
   before the body, which is why it needs no field of its own. */
static inline const float *llmc_entry_vector(const llmc_entry_t *e)
{
    return e->dim ? (const float *)(const void *)(e->body - (size_t)e->dim * sizeof(float)) : NULL;
}

/* The token counts of the answer (what a hit saves), read from the body
   once when the entry was built: true and *out set when it has them. No
   field of the struct holds them: like the vector before the body, they
   lie just after the body's NUL, flagged by LLMC_ENTRY_USAGE. Any thread. */
static inline bool llmc_entry_usage(const llmc_entry_t *e, llmc_usage_t *out)
{
    if (!(e->flags & LLMC_ENTRY_USAGE))
        return false;
    memcpy(out, e->body + e->body_len + 1, sizeof(*out));
    return true;
}

/* Tag i (i < ntags). Walks the tags before it: tags are few and read only
   by purges, so an index array would cost every entry for little. */
const char *llmc_entry_tag(const llmc_entry_t *e, uint32_t i);

/* Writes the strong validator, '"' + 16 lowercase hex digits + '"' and a
   NUL, into out. Any thread. */
void llmc_entry_etag(const llmc_entry_t *e, char out[LLMC_ETAG_LEN]);

/* What llmc_entry_new copies into a new entry. Pointers may be NULL/0. */
typedef struct llmc_entry_spec {
    const llmc_key_t *key;
    uint16_t status;
    uint32_t flags;
    int64_t created_ms, expires_ms;
    const char *content_type;
    const char *ns;
    const char *model;
    const char *route;
    const char *const *tags;
    uint32_t ntags;
    const float *vector;
    uint32_t dim;
    const char *body;
    size_t body_len;
    const llmc_usage_t *usage;   /* the answer's token counts, NULL when it has none */
} llmc_entry_spec_t;

/*
 * True when spec is within an entry's limits: flags fit in 8 bits, the body
 * is at most LLMC_ENTRY_MAX_BODY bytes, the vector at most LLMC_ENTRY_MAX_DIM
 * floats, fewer than 65536 tags, and the strings and tags together at most
 * LLMC_ENTRY_MAX_META bytes. Any thread.
 */
bool llmc_entry_spec_fits(const llmc_entry_spec_t *spec);

/*
 * Builds an entry holding copies of everything in spec, with refcnt 1 owned
 * by the caller. Returns NULL when out of memory or when spec does not fit
 * (llmc_entry_spec_fits). Any thread.
 */
llmc_entry_t *llmc_entry_new(const llmc_entry_spec_t *spec);

/*
 * Compression at rest in memory (issue 18). A packed entry is e with its
 * body replaced by a zstd frame (llmc/zdict.h: the current dictionary),
 * everything else (key, times, strings, tags, vector, token counts, ETag
 * of the original body) kept as it was; the original body's length and the
 * dictionary's id follow the frame in the block. Its body is not an answer:
 * only the memory tier holds packed entries, and it hands out unpacked ones.
 */

/* True when e's body is a zstd frame. */
static inline bool llmc_entry_is_packed(const llmc_entry_t *e)
{
    return (e->flags & LLMC_ENTRY_PACKED) != 0;
}

/* A packed copy of e (refcnt 1, the caller's), or NULL when e is not worth
   packing (too small, compression at rest off or not started, a frame that
   would save too little: llmc_zdict_pack) or out of memory. e must not be
   packed. Any thread. */
llmc_entry_t *llmc_entry_pack(const llmc_entry_t *e);

/* The original body's length of a packed entry. */
uint32_t llmc_entry_raw_len(const llmc_entry_t *e);

/* The dictionary id a packed entry's frame needs; 0: none. */
uint32_t llmc_entry_dict_id(const llmc_entry_t *e);

/* The entry p was packed from, rebuilt (refcnt 1, the caller's): same
   block layout, body and ETag as before packing. *rc: 0, or LLMC_ENOMEM /
   LLMC_ECORRUPT / LLMC_EVERSION (llmc_zdict_unpack) with NULL returned.
   Any thread. */
llmc_entry_t *llmc_entry_unpack(const llmc_entry_t *p, int *rc);

/* Takes another reference and returns e. Any thread. */
llmc_entry_t *llmc_entry_ref(llmc_entry_t *e);

/* Drops a reference; the last one frees the entry. NULL is ignored. Any thread. */
void llmc_entry_unref(llmc_entry_t *e);

/* Fills *out with the totals of the allocator entries come from: the slab's
   pages and blocks, and the entries too big for it (big_*). All zero under
   AddressSanitizer, where entries come from malloc. Any thread. */
void llmc_entry_mem_stats(llmc_slab_stats_t *out);

/* Seconds of freshness left at now_ms, never negative. */
int64_t llmc_entry_ttl_left(const llmc_entry_t *e, int64_t now_ms);

/* The whole freshness lifetime in seconds, from storing to expiry (rounded
   up): what Cache-Control max-age says, beside Age (RFC 9111 4.2.1). */
int64_t llmc_entry_lifetime(const llmc_entry_t *e);

/* Age in whole seconds at now_ms, never negative. */
int64_t llmc_entry_age(const llmc_entry_t *e, int64_t now_ms);

/* Writes the key as 64 lowercase hex digits plus NUL into out. */
void llmc_key_hex(const llmc_key_t *key, char out[2 * LLMC_KEY_LEN + 1]);

#endif
