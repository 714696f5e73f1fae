/*
 * slab.c: size-classed pages for long-lived blocks (llmc/slab.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Classes step by 16 bytes up to 1 KiB and by 64 bytes up to 4 KiB (112
 *   classes). Most cached answers are a few hundred bytes, where 16-byte
 *   steps waste 8 bytes a block on average (16 is also the alignment the
 *   blocks need, so no finer step could be used); above 1 KiB a 64-byte step
 *   wastes at most 6%. The largest class is 4 KiB, not 8, because a 64 KiB
 *   page holds only 7 blocks of 8 KiB and the tail left over would waste up
 *   to 12% of it; at 4 KiB and below the tail is under 6.5%. Bigger blocks
 *   go to malloc, where a hole of a few hundred bytes is small beside them.
 * - A page is 64 KiB from mmap, aligned to 64 KiB, so that the page of any
 *   block is found by masking its address: a block needs no header, and a
 *   free needs only the size the allocation reported (to tell slab blocks
 *   from malloc ones). The page's header sits in its first 64 bytes.
 * - A page serves one class. When its last block is freed its memory goes
 *   back to the system (madvise MADV_DONTNEED), so that memory does not stay
 *   stuck in a class whose sizes are no longer asked for (memcached's
 *   "calcification"); except that each class keeps one emptied page as a
 *   spare, so that a class hovering around a page boundary does not release
 *   and refault a page per miss (at most 112 x 64 KiB).
 * - A released page is not unmapped: its address range stays mapped (costing
 *   no memory) on a stack of released pages, and the next page any class
 *   needs comes from there first. Unmapping pages in the middle of the
 *   others would split the kernel's one mapping area into as many as there
 *   are holes; a big cache fragmented by eviction could reach the kernel's
 *   limit on mappings (vm.max_map_count, 65530 by default) and every later
 *   mmap in the process would fail: malloc's, libcurl's, not just ours.
 * - When a page cannot be mapped (the kernel's limit on mappings, or no
 *   memory), the block comes from malloc instead, rounded up past
 *   LLMC_SLAB_MAX so that its size still says where it came from: a waste
 *   of space, but the answer is still cached and charged for what it holds. A page hands out its
 *   never-used blocks from a bump offset before it has a free list, so a new
 *   page is touched (made resident) only as far as it is used.
 * - One mutex per class: blocks are allocated on a miss and freed on
 *   eviction, expiry or the last unref, never on a hit, so a lock per class
 *   costs nothing a request would notice. The class of a block is read from
 *   its page without the lock: it is set before the page is handed out and
 *   never changes while a block on it is live.
 * - Each new page costs its own mmap; adjacent anonymous mappings merge into
 *   one kernel area, and since pages are never unmapped before the slab is
 *   destroyed, the mapping count stays that of the address space's layout.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "llmc/slab.h"

#define PAGE_SIZE   ((size_t)64 << 10)
#define PAGE_HDR    64u    /* the page header, rounded so blocks stay 16-aligned */
#define SMALL_STEP  16u
#define SMALL_MAX   1024u
#define LARGE_STEP  64u
#define NSMALL      (SMALL_MAX / SMALL_STEP)
#define NCLASSES    (NSMALL + (LLMC_SLAB_MAX - SMALL_MAX) / LARGE_STEP)

struct page {
    struct page *prev, *next; /* the class's list it is on: avail or full */
    void *free;               /* freed blocks, linked through their first word */
    llmc_slab_t *slab;        /* the owner, to catch a block freed into another slab */
    uint32_t cls;
    uint32_t live;            /* blocks handed out */
    uint32_t fresh;           /* offset of the first block never handed out */
};
_Static_assert(sizeof(struct page) <= PAGE_HDR, "page header outgrew its slot");

struct class {
    alignas(64) pthread_mutex_t mu; /* one cache line per class: no false sharing */
    struct page *avail;             /* pages with at least one free block */
    struct page *full;              /* pages without, kept only so destroy finds them */
    struct page *spare;             /* one emptied page kept mapped (see do_free) */
    uint32_t size, per_page;
};

/* Pages whose memory went back to the system, mapped still, for reuse. */
struct released {
    pthread_mutex_t mu;
    void **pages;
    size_t n, cap;
};

struct llmc_slab {
    struct class cls[NCLASSES];
    struct released rel;
    _Atomic size_t pages, blocks, used_bytes, big_bytes, big_blocks;
};

static size_t class_size(unsigned c)
{
    return c < NSMALL ? (c + 1) * SMALL_STEP : SMALL_MAX + (c + 1 - NSMALL) * LARGE_STEP;
}

/* The smallest class whose blocks hold n bytes (0 < n <= LLMC_SLAB_MAX). */
static unsigned class_of(size_t n)
{
    if (n <= SMALL_MAX)
        return (unsigned)((n + SMALL_STEP - 1) / SMALL_STEP - 1);
    return NSMALL + (unsigned)((n - SMALL_MAX + LARGE_STEP - 1) / LARGE_STEP - 1);
}

static struct page *page_of(void *p)
{
    return (struct page *)((uintptr_t)p & ~(uintptr_t)(PAGE_SIZE - 1));
}

/* Maps PAGE_SIZE bytes aligned to PAGE_SIZE. The kernel places mappings
   next to each other, so after the first aligned one a plain mmap is usually
   aligned too; only when it is not, map twice the size and trim. */
static void *map_page(void)
{
    const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS;
    char *p = mmap(NULL, PAGE_SIZE, prot, flags, -1, 0);

    if (p == MAP_FAILED)
        return NULL;
    if (((uintptr_t)p & (PAGE_SIZE - 1)) == 0)
        return p;
    munmap(p, PAGE_SIZE);
    p = mmap(NULL, 2 * PAGE_SIZE, prot, flags, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    size_t head = (PAGE_SIZE - ((uintptr_t)p & (PAGE_SIZE - 1))) & (PAGE_SIZE - 1);
    if (head)
        munmap(p, head);
    munmap(p + head + PAGE_SIZE, PAGE_SIZE - head);
    return p + head;
}

static void unlink_page(struct page **list, struct page *pg)
{
    if (pg->prev)
        pg->prev->next = pg->next;
    else
        *list = pg->next;
    if (pg->next)
        pg->next->prev = pg->prev;
    pg->prev = pg->next = NULL;
}

static void push_page(struct page **list, struct page *pg)
{
    pg->prev = NULL;
    pg->next = *list;
    if (*list)
        (*list)->prev = pg;
    *list = pg;
}

llmc_slab_t *llmc_slab_new(void)
{
    llmc_slab_t *s = aligned_alloc(alignof(llmc_slab_t), sizeof(*s));

    if (!s)
        return NULL;
    for (unsigned i = 0; i < NCLASSES; i++) {
        struct class *c = &s->cls[i];
        if (pthread_mutex_init(&c->mu, NULL) != 0) {
            while (i--)
                pthread_mutex_destroy(&s->cls[i].mu);
            free(s);
            return NULL;
        }
        c->avail = c->full = c->spare = NULL;
        c->size = (uint32_t)class_size(i);
        c->per_page = (uint32_t)((PAGE_SIZE - PAGE_HDR) / c->size);
    }
    if (pthread_mutex_init(&s->rel.mu, NULL) != 0) {
        for (unsigned i = 0; i < NCLASSES; i++)
            pthread_mutex_destroy(&s->cls[i].mu);
        free(s);
        return NULL;
    }
    s->rel.pages = NULL;
    s->rel.n = s->rel.cap = 0;
    atomic_init(&s->pages, 0);
    atomic_init(&s->blocks, 0);
    atomic_init(&s->used_bytes, 0);
    atomic_init(&s->big_bytes, 0);
    atomic_init(&s->big_blocks, 0);
    return s;
}

static void unmap_list(struct page **list)
{
    while (*list) {
        struct page *pg = *list;
        unlink_page(list, pg);
        munmap(pg, PAGE_SIZE);
    }
}

void llmc_slab_destroy(llmc_slab_t *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < NCLASSES; i++) {
        unmap_list(&s->cls[i].avail);
        unmap_list(&s->cls[i].full);
        unmap_list(&s->cls[i].spare);
        pthread_mutex_destroy(&s->cls[i].mu);
    }
    while (s->rel.n)
        munmap(s->rel.pages[--s->rel.n], PAGE_SIZE);
    free(s->rel.pages);
    pthread_mutex_destroy(&s->rel.mu);
    free(s);
}

/* A released page, or NULL when there is none. */
static void *reuse_page(llmc_slab_t *s)
{
    void *pg = NULL;

    pthread_mutex_lock(&s->rel.mu);
    if (s->rel.n)
        pg = s->rel.pages[--s->rel.n];
    pthread_mutex_unlock(&s->rel.mu);
    return pg;
}

/* Gives an empty page's memory back and keeps its range for reuse; unmaps
   it only when the stack cannot grow (no memory for the pointer). */
static void release_page(llmc_slab_t *s, struct page *pg)
{
    bool kept = false;

    madvise(pg, PAGE_SIZE, MADV_DONTNEED);
    pthread_mutex_lock(&s->rel.mu);
    if (s->rel.n == s->rel.cap) {
        size_t cap = s->rel.cap ? 2 * s->rel.cap : 64;
        void **grown = realloc(s->rel.pages, cap * sizeof(*grown));
        if (grown) {
            s->rel.pages = grown;
            s->rel.cap = cap;
        }
    }
    if (s->rel.n < s->rel.cap) {
        s->rel.pages[s->rel.n++] = pg;
        kept = true;
    }
    pthread_mutex_unlock(&s->rel.mu);
    if (!kept)
        munmap(pg, PAGE_SIZE);
}

static struct page *page_new(llmc_slab_t *s, unsigned cls)
{
    struct page *pg = reuse_page(s);

    if (!pg && !(pg = map_page()))
        return NULL;
    pg->prev = pg->next = NULL;
    pg->free = NULL;
    pg->slab = s;
    pg->cls = cls;
    pg->live = 0;
    pg->fresh = PAGE_HDR;
    atomic_fetch_add_explicit(&s->pages, 1, memory_order_relaxed);
    return pg;
}

/* Takes a block from the class's first page with room, mapping a page when
   none has any. Runs with c->mu held. */
static void *do_alloc(llmc_slab_t *s, struct class *c)
{
    struct page *pg = c->avail;
    void *b;

    if (!pg && c->spare) {
        pg = c->spare;
        c->spare = NULL;
        pg->free = NULL;          /* every block of it is free: hand them out afresh */
        pg->fresh = PAGE_HDR;
        push_page(&c->avail, pg);
    }
    if (!pg) {
        pg = page_new(s, (unsigned)(c - s->cls));
        if (!pg)
            return NULL;
        push_page(&c->avail, pg);
    }
    if (pg->free) {
        b = pg->free;
        pg->free = *(void **)b;
    } else {
        b = (char *)pg + pg->fresh;
        pg->fresh += c->size;
    }
    if (++pg->live == c->per_page) {
        unlink_page(&c->avail, pg);
        push_page(&c->full, pg);
    }
    return b;
}

static void *big_alloc(llmc_slab_t *s, size_t n, size_t *size)
{
    void *p = malloc(n);

    if (!p)
        return NULL;
    *size = malloc_usable_size(p);
    atomic_fetch_add_explicit(&s->big_bytes, *size, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->big_blocks, 1, memory_order_relaxed);
    return p;
}

void *llmc_slab_alloc(llmc_slab_t *s, size_t n, size_t *size)
{
    if (n > LLMC_SLAB_MAX)
        return big_alloc(s, n, size);
    struct class *c = &s->cls[class_of(n ? n : 1)];
    pthread_mutex_lock(&c->mu);
    void *b = do_alloc(s, c);
    pthread_mutex_unlock(&c->mu);
    if (!b)
        return big_alloc(s, LLMC_SLAB_MAX + 1 > n ? LLMC_SLAB_MAX + 1 : n, size);
    *size = c->size;
    atomic_fetch_add_explicit(&s->blocks, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->used_bytes, c->size, memory_order_relaxed);
    return b;
}

/* Puts b back on its page; true when that emptied the page, which the
   caller then releases outside the lock. Runs with c->mu held. */
static bool do_free(struct class *c, struct page *pg, void *b)
{
    *(void **)b = pg->free;
    pg->free = b;
    if (pg->live-- == c->per_page) {
        unlink_page(&c->full, pg);
        push_page(&c->avail, pg);
    }
    if (pg->live)
        return false;
    unlink_page(&c->avail, pg);
    if (!c->spare) {
        c->spare = pg;
        return false;
    }
    return true;
}

void llmc_slab_free(llmc_slab_t *s, void *p, size_t size)
{
    if (!p)
        return;
    if (size > LLMC_SLAB_MAX) {
        atomic_fetch_sub_explicit(&s->big_bytes, size, memory_order_relaxed);
        atomic_fetch_sub_explicit(&s->big_blocks, 1, memory_order_relaxed);
        free(p);
        return;
    }
    struct page *pg = page_of(p);
    /* A block freed into the wrong slab or with a size it was not given
       would corrupt a free list silently; stop here instead. */
    if (pg->slab != s || pg->cls >= NCLASSES || s->cls[pg->cls].size != size)
        abort();
    struct class *c = &s->cls[pg->cls];
    pthread_mutex_lock(&c->mu);
    bool empty = do_free(c, pg, p);
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_sub_explicit(&s->blocks, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->used_bytes, size, memory_order_relaxed);
    if (empty) {
        release_page(s, pg);
        atomic_fetch_sub_explicit(&s->pages, 1, memory_order_relaxed);
    }
}

void llmc_slab_stats(llmc_slab_t *s, llmc_slab_stats_t *out)
{
    out->pages = atomic_load_explicit(&s->pages, memory_order_relaxed);
    out->page_bytes = out->pages * PAGE_SIZE;
    out->blocks = atomic_load_explicit(&s->blocks, memory_order_relaxed);
    out->used_bytes = atomic_load_explicit(&s->used_bytes, memory_order_relaxed);
    out->big_bytes = atomic_load_explicit(&s->big_bytes, memory_order_relaxed);
    out->big_blocks = atomic_load_explicit(&s->big_blocks, memory_order_relaxed);
    pthread_mutex_lock(&s->rel.mu);
    out->released = s->rel.n;
    pthread_mutex_unlock(&s->rel.mu);
}

#define LLMC_STAT_TYPE llmc_slab_stats_t
const llmc_stat_desc_t llmc_slab_stat_desc[] = {
    LLMC_SLAB_STATS_TABLE(LLMC_STAT_DESC)
};
#undef LLMC_STAT_TYPE
_Static_assert(sizeof(llmc_slab_stat_desc) / sizeof(llmc_slab_stat_desc[0]) == LLMC_SLAB_NSTATS, "a descriptor per field");
