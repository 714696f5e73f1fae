/*
 * llmc/entry.h: one cached answer.
 *
 * An entry is immutable once built, apart from its reference count and the
 * link fields that belong to the memory cache. It is one allocation: the
 * struct, then every string, the tags, the vector and the body, so that its
 * size can be measured exactly (malloc_usable_size) and freeing it is one
 * call. Entries are reference counted because an answer that is being
 * written to a slow client must outlive its eviction from the cache.
 *
 * Times are wall-clock milliseconds since the Unix epoch, not monotonic
 * ones, because entries outlive the process in the disk tier.
 */
#ifndef LLMC_ENTRY_H
#define LLMC_ENTRY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define LLMC_KEY_LEN 32

/* A SHA-256 cache key; all 32 bytes are kept and compared. */
typedef struct llmc_key {
    uint8_t b[LLMC_KEY_LEN];
} llmc_key_t;

enum llmc_entry_flags {
    LLMC_ENTRY_PRIVATE     = 1u << 0, /* per-credential scope: Cache-Control private */
    LLMC_ENTRY_FROM_STREAM = 1u << 1, /* assembled from a recorded SSE stream */
};

/* Fields owned by the memory cache (llmc/cache.h); nobody else touches them. */
struct llmc_entry_link {
    struct llmc_entry *hnext;        /* hash chain */
    struct llmc_entry *prev, *next;  /* SIEVE queue: head is newest */
    _Atomic uint8_t visited;         /* SIEVE bit, set on hit without a lock */
    uint8_t in_cache;
};

typedef struct llmc_entry {
    llmc_key_t key;
    _Atomic uint32_t refcnt;
    uint32_t flags;              /* LLMC_ENTRY_* */
    uint16_t status;             /* upstream HTTP status, always 2xx today */
    int64_t created_ms;          /* when the upstream answered */
    int64_t expires_ms;          /* fresh while now < expires_ms */
    const char *content_type;    /* never NULL */
    const char *ns;              /* namespace, "" when none */
    const char *model;           /* "" when unknown */
    const char *const *tags;     /* ntags strings, for purge by tag */
    uint32_t ntags;
    uint32_t dim;                /* vector dimension, 0 when none */
    const float *vector;         /* for the semantic tier, NULL when none */
    const char *body;            /* body_len bytes, NUL-terminated for convenience */
    size_t body_len;
    char etag[20];               /* strong validator: "\"" 16 hex of SHA-256(body) "\"" */
    size_t mem_bytes;            /* measured bytes held by this allocation */
    struct llmc_entry_link link;
} llmc_entry_t;

/* What llmc_entry_new copies into a new entry. Pointers may be NULL/0. */
typedef struct llmc_entry_spec {
    const llmc_key_t *key;
    uint16_t status;
    uint32_t flags;
    int64_t created_ms, expires_ms;
    const char *content_type;
    const char *ns;
    const char *model;
    const char *const *tags;
    uint32_t ntags;
    const float *vector;
    uint32_t dim;
    const char *body;
    size_t body_len;
} llmc_entry_spec_t;

/*
 * Builds an entry holding copies of everything in spec, with refcnt 1 owned
 * by the caller. Returns NULL when out of memory. Any thread.
 */
llmc_entry_t *llmc_entry_new(const llmc_entry_spec_t *spec);

/* Takes another reference and returns e. Any thread. */
llmc_entry_t *llmc_entry_ref(llmc_entry_t *e);

/* Drops a reference; the last one frees the entry. NULL is ignored. Any thread. */
void llmc_entry_unref(llmc_entry_t *e);

/* Seconds of freshness left at now_ms, never negative. */
int64_t llmc_entry_ttl_left(const llmc_entry_t *e, int64_t now_ms);

/* Age in whole seconds at now_ms, never negative. */
int64_t llmc_entry_age(const llmc_entry_t *e, int64_t now_ms);

/* Writes the key as 64 lowercase hex digits plus NUL into out. */
void llmc_key_hex(const llmc_key_t *key, char out[2 * LLMC_KEY_LEN + 1]);

#endif
