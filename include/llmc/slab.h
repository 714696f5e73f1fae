/*
 * llmc/slab.h: a slab allocator for blocks that live long, apart from the
 * general heap.
 *
 * Cache entries live for minutes or hours while each miss that builds one
 * also makes and frees dozens of short-lived temporaries (libcurl, jansson,
 * OpenSSL). From one malloc heap the entries are carved out of the holes the
 * temporaries leave, and the slivers between entries are too small for the
 * next one: about 95 bytes per entry at a million entries. A slab keeps the
 * long-lived blocks on pages of their own, one size class per page, so that
 * nothing else lands between them. (memcached's slabs; Bonwick's slab.)
 *
 * A block small enough for a class (at most LLMC_SLAB_MAX bytes) comes from
 * the slab; a larger one from malloc, where a few bytes of hole are little
 * beside its size. The caller keeps the size llmc_slab_alloc reported and
 * hands it back to llmc_slab_free, which tells the two kinds apart by it
 * (a class block is at most LLMC_SLAB_MAX, a malloc block always larger), so
 * no block needs a header or a flag.
 */
#ifndef LLMC_SLAB_H
#define LLMC_SLAB_H

#include <stddef.h>

#include "llmc/stat.h"

/* The largest block a class serves; larger ones go to malloc. */
#define LLMC_SLAB_MAX 4096u

typedef struct llmc_slab llmc_slab_t;

/* A snapshot of a slab's totals. Pages and class blocks only, except the
   big_* fields, which count the blocks it handed to malloc. */
/* X(field, "name", KIND, "unit", "help") (llmc/stat.h). page_bytes beyond
   used_bytes is what the slab loses to partly filled pages. */
#define LLMC_SLAB_STATS_TABLE(X)                                                          \
    X(page_bytes, "page_bytes", GAUGE, "bytes", "Bytes of the slab pages held.")            \
    X(used_bytes, "used_bytes", GAUGE, "bytes", "Bytes of the blocks handed out.")          \
    X(pages, "pages", GAUGE, "pages", "Slab pages held.")                                   \
    X(blocks, "blocks", GAUGE, "blocks", "Blocks handed out from pages.")                   \
    X(big_bytes, "big_bytes", GAUGE, "bytes", "Usable bytes of live blocks from malloc.")   \
    X(big_blocks, "big_blocks", GAUGE, "blocks", "Live blocks from malloc.")                \
    X(released, "released_pages", GAUGE, "pages",                                           \
      "Emptied pages whose memory went back, kept mapped for reuse.")

typedef struct llmc_slab_stats {
    LLMC_SLAB_STATS_TABLE(LLMC_STAT_FIELD)
} llmc_slab_stats_t;

#define LLMC_SLAB_NSTATS (sizeof(llmc_slab_stats_t) / sizeof(uint64_t))
extern const llmc_stat_desc_t llmc_slab_stat_desc[];

/* Makes an empty slab; NULL when out of memory. Any thread. */
llmc_slab_t *llmc_slab_new(void);

/*
 * Frees the slab and every page it holds. Blocks still handed out from its
 * pages become invalid; those from malloc stay valid (free them with
 * free()). Nobody else may use the slab meanwhile. NULL is ignored.
 */
void llmc_slab_destroy(llmc_slab_t *s);

/*
 * Returns a block of at least n bytes (n > 0), aligned for any type of up to
 * 16 bytes, and stores its usable size in *size; NULL when out of memory.
 * Where no page can be mapped the block comes from malloc, sized past
 * LLMC_SLAB_MAX so that llmc_slab_free still knows it.
 * The caller owns the block until llmc_slab_free. Any thread.
 */
void *llmc_slab_alloc(llmc_slab_t *s, size_t n, size_t *size);

/*
 * Gives back a block from llmc_slab_alloc; size is the *size it reported.
 * The memory of a page whose last block this was goes back to the system,
 * unless its class has no spare page yet (one emptied page per class is
 * kept, so that a class at a page boundary does not release and refault a
 * page per block); its address range stays mapped, for reuse by any class,
 * so that freeing never multiplies the process's mappings. NULL is ignored.
 * Any thread, not necessarily the one that allocated it.
 */
void llmc_slab_free(llmc_slab_t *s, void *p, size_t size);

/* Fills *out with the current totals (each read on its own, so under load
   they may disagree by a block or a page). Any thread. */
void llmc_slab_stats(llmc_slab_t *s, llmc_slab_stats_t *out);

#endif
