/*
 * semantic/hnsw.c: the HNSW graph (see hnsw.h), after Malkov and Yashunin,
 * "Efficient and robust approximate nearest neighbor search using
 * Hierarchical Navigable Small World graphs" (2016).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - One block per node holds its vector, its layer-0 list, its label, its
 *   level and its layer-0 in-degree, so a search step touches one place per
 *   node. Blocks live in fixed chunks of 256 nodes: growing never copies a
 *   vector and wastes at most one chunk (a doubling array would hold up to
 *   twice what it stores). Lists above layer 0 (about one node in m has
 *   any) are one allocation per node.
 * - Links are directed, as in the paper; a delete must find every node
 *   that links to the dead one. Each list keeps the in-degree of its node,
 *   so the search for in-links (the dead node's neighbours, then theirs,
 *   then the nodes a search for its vector finds, then, only if some are
 *   still missing, every node) stops as soon as all are found and never
 *   leaves a dangling link. hnswlib instead only marks
 *   deleted nodes (they stay in the graph and every search still walks
 *   them); Redis's vector sets keep links symmetric, which costs a second
 *   pruning on every insert.
 * - A node that linked to the dead one gets, in its place, the dead node's
 *   neighbour closest to it, so the graph stays navigable where the node
 *   was and degrees do not shrink; a neighbour left with no in-link at all
 *   is relinked from its own best neighbour.
 * - The heuristic keeps a candidate only if it is closer to the base than
 *   to every candidate kept so far (the paper's algorithm 4): long links
 *   across clusters survive, redundant ones do not.
 * - Walks write visited marks (an epoch per node, so nothing is cleared
 *   between walks) and reuse heaps in a scratch area. Adds and removes use
 *   the writer's; each search takes one of a pool (a bit in an atomic
 *   mask), so searches may run side by side: a search writes nothing
 *   else. A scratch area's marks cover the slots there were when it was
 *   last taken and grow when taken again (no writer runs meanwhile).
 * - With quantize, searches walk by int8 codes (one scale per vector: the
 *   largest component maps to 127), a quarter of the bytes per step, then
 *   score their best 2k + 8 finds again by float. The codes sit at the
 *   head of each node's block with its layer-0 links; the floats, read
 *   only by adds, removes and the final scoring, live in chunks of their
 *   own. Links are chosen by float: the graph is the same either way.
 * - Each node keeps its layer-0 in-links (who links to it), so a delete
 *   finds them without a hunt: 2.5 ms -> well under 1 ms per delete at
 *   100,000 (bench/hnsw_bench.cc). Only the one-way ones are listed: a
 *   neighbour that links back is found in the node's own list, and nine
 *   links in ten go both ways. A list that cannot grow is dropped (LOST)
 *   and that node's delete hunts as described below; above layer 0 (one
 *   node in m) deletes always hunt.
 * - Memory per node is what hnswlib's must beat: the block holds the
 *   vector (or code), the layer-0 list, the label, the in-list pointer and
 *   4-byte fields only (in-degree; upper lists by index into a table; the
 *   in-list's count and size with the level), laid out with no padding;
 *   free slots are a stack threaded through the free blocks.
 */
#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "llmc/error.h"
#include "semantic/hnsw.h"

#define FREE_LEVEL 0xFF
#define MAX_LEVEL 24
#define CHUNK_SHIFT 8
#define CHUNK (1u << CHUNK_SHIFT)
#define MAX_M 64
#define SEARCH_POOL 32

/* Big graphs on huge pages (see arena_t): the page, the bytes a stream of
   chunks must reach first (-D for a bench's trial of others), the least a
   mapping reserves (address space only: pages are touched as used). */
#define HUGE_PAGE ((size_t)2 << 20)
#ifndef HNSW_HUGE_FROM
#define HNSW_HUGE_FROM ((size_t)8 << 20)
#endif
#ifndef HNSW_REGION_MIN
#define HNSW_REGION_MIN ((size_t)32 << 20)
#endif
#define MAX_REGIONS 48
/* How many nodes ahead of the one scored a walk starts fetching. */
#ifndef HNSW_AHEAD
#define HNSW_AHEAD 2
#endif

typedef struct cand {
    float s;
    uint32_t id;
} cand_t;

/* A binary max-heap by s. */
typedef struct heap {
    cand_t *a;
    size_t n, cap;
} heap_t;

typedef struct scratch {
    uint32_t *visit; /* visit[node] == epoch: seen in this walk */
    size_t vcap;     /* slots visit covers */
    size_t vmap;     /* non-zero: visit is a mapping of this many bytes (huge pages) */
    uint32_t epoch;
    int8_t *qcode;   /* q8: the query's code */
    heap_t cand, res;   /* res is keyed by -s: its top is the worst kept */
    cand_t *sorted;     /* res drained best first, res.cap entries */
    uint32_t mark;      /* the running walk's epoch */
    /* A narrow walk that may be widened keeps every node it scored here
       (seen_lost: one could not be kept, so widening walks afresh). */
    cand_t *seen;
    size_t nseen, seencap;
    bool logging, seen_lost;
} scratch_t;

/*
 * Where a stream of equal chunks (node blocks; with q8 also the float
 * vectors) comes from. While the stream is under HNSW_HUGE_FROM bytes each
 * chunk is its own malloc, so a small partition costs nothing extra. Once
 * it gets there, every chunk moves (one copy) into 2 MB-aligned mappings
 * advised MADV_HUGEPAGE, and later chunks are carved from them in turn: a
 * search step's node is then nearly never a TLB miss (at 100,000 nodes
 * of 512 dimensions the blocks span 17,000 small pages, several times
 * what the TLB holds, and 35 huge ones). What is wasted is the unused
 * part of the last huge page touched and each full mapping's tail, under
 * one chunk: a few percent of such a graph. Chunks' addresses stay in the
 * chunk table, so a node's address costs what it did.
 */
typedef struct region {
    uint8_t *base;
    size_t len;
} region_t;

typedef struct arena {
    size_t chunk;   /* bytes per chunk, a multiple of 64 */
    size_t from;    /* stream bytes from which chunks lie in mappings (HNSW_HUGE_FROM) */
    bool huge;      /* the chunks lie in reg[], not on the heap */
    region_t reg[MAX_REGIONS];
    unsigned nreg;
    size_t off;     /* bytes handed out of the last region */
} arena_t;

typedef float (*dotf_fn)(const float *a, const float *b, unsigned n);
typedef int32_t (*dot8_fn)(const int8_t *a, const int8_t *b, unsigned n);

/* What a walk compares nodes with: the float vector, and when coarse, its
   int8 code (scaled by cs) that the walk uses instead. */
typedef struct qry {
    const float *f;
    const int8_t *c;
    float cs;
    bool coarse;
} qry_t;

struct llmc_hnsw {
    unsigned dim, m, m0, efc, efs;
    bool q8;          /* int8 codes in the blocks, floats in fchunks */
    dotf_fn dotf;     /* the widest dot the CPU runs, picked once at new */
    dot8_fn dot8;
    uint8_t **fchunks; /* q8: the float vectors, CHUNK per chunk */
    arena_t nodes, floats; /* where chunks and fchunks come from */
    size_t off_scale, off_in, off_inw;
    uint64_t rng;
    double ml;
    size_t bsize, off_l0, off_label, off_up, off_indeg, off_level;
    uint8_t **chunks;
    size_t nchunks, chunks_cap;
    uint32_t used, count; /* slots handed out (0..used-1), live nodes */
    /* Free slots, a stack threaded through their blocks (each free block's
       label word holds the next, NO_SLOT ends it): no array of 4 bytes a
       slot beside the blocks. */
    uint32_t free_top;
    size_t nfree;
    uint32_t entry;
    int maxlevel; /* -1: empty */
    size_t upper_bytes;
    /* The upper lists (see up_of): upt_n entries handed out of upt_cap,
       the free ones' numbers stacked in upt_free. */
    uint32_t **upt, *upt_free;
    uint32_t upt_n, upt_cap, upt_nfree;
    scratch_t *sc;    /* the writer's: add, remove, check */
    /* Searches' scratch areas, one per search running at once; a search
       takes a free one (a bit of busy) or, when all are taken, makes its
       own for the call. */
    scratch_t *pool[SEARCH_POOL];
    _Atomic uint32_t busy;
};

/* ---- node access ---------------------------------------------------------------- */

static inline uint8_t *blk(const llmc_hnsw_t *h, uint32_t n)
{
    return h->chunks[n >> CHUNK_SHIFT] + (size_t)(n & (CHUNK - 1)) * h->bsize;
}

static inline float *vec_of(const llmc_hnsw_t *h, uint32_t n)
{
    if (h->q8)
        return (float *)h->fchunks[n >> CHUNK_SHIFT] + (size_t)(n & (CHUNK - 1)) * h->dim;
    return (float *)blk(h, n);
}

/* q8: node n's code opens its block (cache-line aligned), its scale after. */
static inline const int8_t *code_of(const llmc_hnsw_t *h, uint32_t n)
{
    return (const int8_t *)blk(h, n);
}

static inline float scale_of(const llmc_hnsw_t *h, uint32_t n)
{
    float f;
    memcpy(&f, blk(h, n) + h->off_scale, sizeof(f));
    return f;
}

static inline uint8_t *level_of(const llmc_hnsw_t *h, uint32_t n)
{
    return blk(h, n) + h->off_level;
}

/* Node n's upper lists are entry up_idx - 1 of the table upt (0: none,
   level 0): 4 bytes in every block where a pointer took 8, for a table
   entry in the one node in m that has levels. */
static inline uint32_t up_idx(const llmc_hnsw_t *h, uint32_t n)
{
    uint32_t i;
    memcpy(&i, blk(h, n) + h->off_up, sizeof(i));
    return i;
}

static inline uint32_t *up_of(const llmc_hnsw_t *h, uint32_t n)
{
    uint32_t i = up_idx(h, n);
    assert(i > 0 && i <= h->upt_n);
    return h->upt[i - 1];
}

static inline unsigned maxdeg(const llmc_hnsw_t *h, int l)
{
    return l ? h->m : h->m0;
}

/* Node n's list at level l: [count, links...]. Above 0: the upper
   allocation holds level lists of 1 + m, then level in-degrees. */
static inline uint32_t *list_of(const llmc_hnsw_t *h, uint32_t n, int l)
{
    if (l == 0)
        return (uint32_t *)(blk(h, n) + h->off_l0);
    return up_of(h, n) + (size_t)(l - 1) * (1 + h->m);
}

static inline uint32_t *indeg_of(const llmc_hnsw_t *h, uint32_t n, int l)
{
    if (l == 0)
        return (uint32_t *)(blk(h, n) + h->off_indeg);
    return up_of(h, n) + (size_t)*level_of(h, n) * (1 + h->m) + (l - 1);
}

/*
 * Node n's layer-0 in-list: the nodes that link to n while n does not
 * link back, in no order. A link both ways (most of HNSW's are) is found
 * from n's own list at delete time, so it is not stored twice: the lists
 * hold a tenth of the in-links (make bench-hnsw). inl_of NULL with in_cap
 * LOST: the list could not grow; a delete of n then hunts for its
 * in-links as before the lists existed. Most nodes have no one-way
 * in-link at all (five in six at 50,000 clustered vectors of 384
 * dimensions): an empty list is freed. Lists grow and shrink by IN_STEP
 * entries (one malloc size class), not by doubling: a doubled list holds
 * a third more than it uses on average.
 * Their sizes are IN_FIRST + k IN_STEP entries: glibc's chunks are 16 k
 * bytes with 8 of header, so such a list fills its chunk to the byte.
 * The block keeps k + 1 in a byte (0: no list), so the count, that byte
 * and the level share one word: at most IN_MAX entries (one-way
 * in-degrees stay under 100 at 50,000 nodes of 384 dimensions), over it
 * the list is LOST.
 */
#define LOST UINT16_MAX
#define IN_STEP 4
#define IN_FIRST 6
#define CAPK_LOST 0xFF
#define IN_MAX (IN_FIRST + (CAPK_LOST - 2) * IN_STEP)

static inline uint32_t **inl_of(const llmc_hnsw_t *h, uint32_t n)
{
    return (uint32_t **)(blk(h, n) + h->off_in);
}

/* Entries the in-list uses; room it has (0, a size above, or LOST). */
static inline uint16_t *incnt_of(const llmc_hnsw_t *h, uint32_t n)
{
    return (uint16_t *)(blk(h, n) + h->off_inw);
}

static inline unsigned in_cap(const llmc_hnsw_t *h, uint32_t n)
{
    unsigned k = blk(h, n)[h->off_inw + sizeof(uint16_t)];
    return k == CAPK_LOST ? LOST : k ? IN_FIRST + (k - 1) * IN_STEP : 0;
}

static inline void set_cap(const llmc_hnsw_t *h, uint32_t n, unsigned cap)
{
    assert(cap == LOST || cap == 0 || (cap <= IN_MAX && cap % IN_STEP == IN_FIRST % IN_STEP));
    blk(h, n)[h->off_inw + sizeof(uint16_t)] =
        (uint8_t)(cap == LOST ? CAPK_LOST : cap ? (cap - IN_FIRST) / IN_STEP + 1 : 0);
}

static bool has(const uint32_t *v, unsigned n, uint32_t x)
{
    for (unsigned i = 0; i < n; i++)
        if (v[i] == x)
            return true;
    return false;
}

/* Whether a links to b at layer 0. */
static inline bool links0(const llmc_hnsw_t *h, uint32_t a, uint32_t b)
{
    const uint32_t *L = list_of(h, a, 0);
    return has(L + 1, L[0], b);
}

/* v goes into t's in-list; a list that cannot grow is dropped (a hint
   lost, never a wrong one). */
static void in_push(const llmc_hnsw_t *h, uint32_t t, uint32_t v)
{
    unsigned cap = in_cap(h, t);
    uint16_t *cnt = incnt_of(h, t);
    uint32_t **in = inl_of(h, t);
    if (cap == LOST)
        return;
    if (*cnt == cap) {
        uint32_t nc = cap ? cap + IN_STEP : IN_FIRST,
                 *p = nc <= IN_MAX ? realloc(*in, nc * sizeof(*p)) : NULL;
        if (!p) {
            free(*in);
            *in = NULL;
            set_cap(h, t, LOST);
            *cnt = 0;
            return;
        }
        *in = p;
        set_cap(h, t, nc);
    }
    (*in)[(*cnt)++] = v;
}

/* v, which t's in-list names, leaves it. */
static void in_pull(const llmc_hnsw_t *h, uint32_t t, uint32_t v)
{
    unsigned cap = in_cap(h, t);
    uint16_t *cnt = incnt_of(h, t);
    if (cap == LOST)
        return;
    uint32_t *in = *inl_of(h, t), i = 0;
    while (i < *cnt && in[i] != v)
        i++;
    assert(i < *cnt);
    in[i] = in[--*cnt];
    if (*cnt == 0) {
        free(in);
        *inl_of(h, t) = NULL;
        set_cap(h, t, 0);
    } else if (cap >= (unsigned)*cnt + 2 * IN_STEP) {
        /* two steps spare: give one back (not at one, so a node that
           gains and loses a link in turn does not realloc each time);
           a failed shrink keeps the bigger list */
        uint32_t *p = realloc(in, (cap - IN_STEP) * sizeof(*p));
        if (p) {
            *inl_of(h, t) = p;
            set_cap(h, t, cap - IN_STEP);
        }
    }
}

/* The link from -> t at level l came: t's in-degree follows, and at layer
   0 the in-lists: a link back t -> from makes the pair mutual, so from's
   list stops naming t; else t's names from. */
static void in_add(const llmc_hnsw_t *h, uint32_t t, int l, uint32_t from)
{
    (*indeg_of(h, t, l))++;
    if (l != 0)
        return;
    if (links0(h, t, from))
        in_pull(h, from, t);
    else
        in_push(h, t, from);
}

/* The link from -> t at level l went: a link back t -> from is now one
   way, so from's list names t; else t's stops naming from. */
static void in_del(const llmc_hnsw_t *h, uint32_t t, int l, uint32_t from)
{
    uint32_t *d = indeg_of(h, t, l);
    assert(*d > 0);
    (*d)--;
    if (l != 0)
        return;
    if (links0(h, t, from))
        in_push(h, from, t);
    else
        in_pull(h, t, from);
}

static inline bool live(const llmc_hnsw_t *h, uint32_t n)
{
    return n < h->used && *level_of(h, n) != FREE_LEVEL;
}

/* The free stack (see struct llmc_hnsw): a free slot's label word holds
   the slot under it. */
#define NO_SLOT UINT32_MAX

static inline uint32_t free_next(const llmc_hnsw_t *h, uint32_t n)
{
    uint32_t next;
    memcpy(&next, blk(h, n) + h->off_label, sizeof(next));
    return next;
}

static void free_push(llmc_hnsw_t *h, uint32_t n)
{
    assert(*level_of(h, n) == FREE_LEVEL);
    memcpy(blk(h, n) + h->off_label, &h->free_top, sizeof(h->free_top));
    h->free_top = n;
    h->nfree++;
}

static uint32_t free_pop(llmc_hnsw_t *h)
{
    uint32_t n = h->free_top;
    assert(h->nfree > 0 && n != NO_SLOT && *level_of(h, n) == FREE_LEVEL);
    h->free_top = free_next(h, n);
    h->nfree--;
    return n;
}

/* The portable dot: four sums, so the compiler may keep them in lanes. */
static float dot(const float *a, const float *b, unsigned n)
{
    unsigned i = 0;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static int32_t dot8(const int8_t *a, const int8_t *b, unsigned n)
{
    int32_t s = 0;
    for (unsigned i = 0; i < n; i++)
        s += (int32_t)a[i] * b[i];
    return s;
}

/*
 * Wider versions compiled for their instruction sets whatever the build's
 * flags (the server is built for any x86-64) and picked at run time: at
 * 512 dimensions the portable dot costs several times the AVX-512 one.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#define LLMC_X86_DISPATCH 1
__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b,
                                                          unsigned n)
{
    unsigned i = 0;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float t[8], s;
    _mm256_storeu_ps(t, _mm256_add_ps(s0, s1));
    s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b,
                                                           unsigned n)
{
    unsigned i = 0;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* int8 products summed in pairs into int32 lanes (madd of sign-extended
   halves): exact, no overflow below 2^31 / 127^2 = 133,000 dimensions. */
__attribute__((target("avx2"))) static int32_t dot8_avx2(const int8_t *a, const int8_t *b,
                                                         unsigned n)
{
    unsigned i = 0;
    __m256i s = _mm256_setzero_si256();
    for (; i + 16 <= n; i += 16) {
        __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + i)));
        __m256i y = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + i)));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(x, y));
    }
    int32_t t[8], r = 0;
    _mm256_storeu_si256((__m256i *)t, s);
    for (int j = 0; j < 8; j++)
        r += t[j];
    for (; i < n; i++)
        r += (int32_t)a[i] * b[i];
    return r;
}

__attribute__((target("avx512f,avx512bw"))) static int32_t dot8_avx512(const int8_t *a,
                                                                       const int8_t *b,
                                                                       unsigned n)
{
    unsigned i = 0;
    __m512i s = _mm512_setzero_si512();
    for (; i + 32 <= n; i += 32) {
        __m512i x = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(a + i)));
        __m512i y = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(b + i)));
        s = _mm512_add_epi32(s, _mm512_madd_epi16(x, y));
    }
    int32_t r = _mm512_reduce_add_epi32(s);
    for (; i < n; i++)
        r += (int32_t)a[i] * b[i];
    return r;
}
#endif

static void pick_dots(llmc_hnsw_t *h)
{
    h->dotf = dot;
    h->dot8 = dot8;
#ifdef LLMC_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        h->dotf = dot_avx2;
        h->dot8 = dot8_avx2;
    }
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
        h->dotf = dot_avx512;
        h->dot8 = dot8_avx512;
    }
#endif
}

/*
 * v's int8 code into c: each component scaled by 127 / max |v_i| and
 * rounded, so the code spends its whole range on this vector (lexical
 * vectors are sparse with a few large components; a fixed scale would
 * waste most of it). Returns the scale back (max / 127).
 */
static float quantise(const float *v, unsigned dim, int8_t *c)
{
    float mx = 0;
    for (unsigned i = 0; i < dim; i++)
        mx = fabsf(v[i]) > mx ? fabsf(v[i]) : mx;
    if (mx == 0) {
        memset(c, 0, dim);
        return 0;
    }
    float inv = 127.0f / mx;
    for (unsigned i = 0; i < dim; i++)
        c[i] = (int8_t)lrintf(v[i] * inv);
    return mx / 127.0f;
}

/* How close node n is to the query: by code in a coarse walk. */
static inline float qsim(const llmc_hnsw_t *h, const qry_t *q, uint32_t n)
{
    if (q->coarse)
        return q->cs * scale_of(h, n) * (float)h->dot8(q->c, code_of(h, n), h->dim);
    return h->dotf(q->f, vec_of(h, n), h->dim);
}

/* Starts the fetch of node n's compared bytes (a walk's next step): its
   code and scale, or its floats. */
static inline void prefetch_node(const llmc_hnsw_t *h, const qry_t *q, uint32_t n)
{
    const char *p = q->coarse ? (const char *)code_of(h, n) : (const char *)vec_of(h, n);
    size_t len = q->coarse ? h->off_scale + sizeof(float) : h->dim * sizeof(float);
    for (size_t o = 0; o < len && o < 2048 + 64; o += 64)
        __builtin_prefetch(p + o);
}

/* Starts the fetch of node n's layer-0 list (the walk's next expansion). */
static inline void prefetch_list(const llmc_hnsw_t *h, uint32_t n)
{
    const char *p = (const char *)list_of(h, n, 0);
    for (size_t o = 0; o < (1 + h->m0) * sizeof(uint32_t); o += 64)
        __builtin_prefetch(p + o);
}

static inline float sim(const llmc_hnsw_t *h, uint32_t a, uint32_t b)
{
    return h->dotf(vec_of(h, a), vec_of(h, b), h->dim);
}

/* ---- heaps ---------------------------------------------------------------------- */

static bool heap_push(heap_t *hp, float s, uint32_t id)
{
    if (hp->n == hp->cap) {
        size_t cap = hp->cap ? hp->cap * 2 : 64;
        cand_t *a = realloc(hp->a, cap * sizeof(*a));
        if (!a)
            return false; /* the walk goes on without this candidate */
        hp->a = a;
        hp->cap = cap;
    }
    size_t i = hp->n++;
    while (i > 0 && hp->a[(i - 1) / 2].s < s) {
        hp->a[i] = hp->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    hp->a[i] = (cand_t){.s = s, .id = id};
    return true;
}

static void heap_pop(heap_t *hp)
{
    cand_t last = hp->a[--hp->n];
    size_t i = 0, n = hp->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && hp->a[c + 1].s > hp->a[c].s)
            c++;
        if (hp->a[c].s <= last.s)
            break;
        hp->a[i] = hp->a[c];
        i = c;
    }
    if (n)
        hp->a[i] = last;
}

/* ---- the walks ------------------------------------------------------------------ */

static uint32_t next_epoch(scratch_t *sc)
{
    if (++sc->epoch == 0) { /* wrapped: old marks could collide */
        memset(sc->visit, 0, sc->vcap * sizeof(*sc->visit));
        sc->epoch = 1;
    }
    return sc->epoch;
}

/* Greedy descent at level l from *cur (similarity *s). */
static void greedy(const llmc_hnsw_t *h, const qry_t *q, uint32_t *cur, float *s, int l)
{
    bool moved = true;
    while (moved) {
        moved = false;
        const uint32_t *L = list_of(h, *cur, l);
        for (uint32_t j = 1; j <= L[0]; j++) {
            float t = qsim(h, q, L[j]);
            if (t > *s) {
                *s = t;
                *cur = L[j];
                moved = true;
            }
        }
    }
}

/* Keeps (s, id) in sc->seen for a later widening (beam_widen). */
static void seen_push(scratch_t *sc, float s, uint32_t id)
{
    if (sc->nseen == sc->seencap) {
        size_t cap = sc->seencap ? sc->seencap * 2 : 256;
        cand_t *a = realloc(sc->seen, cap * sizeof(*a));
        if (!a) {
            sc->seen_lost = true;
            return;
        }
        sc->seen = a;
        sc->seencap = cap;
    }
    sc->seen[sc->nseen++] = (cand_t){.s = s, .id = id};
}

/* Node e, scored t, competes for the beam of width ef. */
static void beam_offer(scratch_t *sc, float t, uint32_t e, unsigned ef)
{
    heap_t *cand = &sc->cand, *res = &sc->res;
    if (sc->logging)
        seen_push(sc, t, e);
    if (res->n < ef || t > -res->a[0].s) {
        heap_push(cand, t, e);
        heap_push(res, -t, e); /* never grows: cap > ef */
        if (res->n > ef)
            heap_pop(res);
    }
}

/* A new walk from ep (similarity eps): fresh marks, ep its only candidate. */
static void beam_open(scratch_t *sc, uint32_t ep, float eps)
{
    sc->mark = next_epoch(sc);
    sc->cand.n = sc->res.n = 0;
    sc->nseen = 0;
    sc->seen_lost = false;
    sc->visit[ep] = sc->mark;
    if (sc->logging)
        seen_push(sc, eps, ep);
    heap_push(&sc->cand, eps, ep);
    heap_push(&sc->res, -eps, ep);
}

/*
 * The beam search at level l, on from the candidates beam_open (or
 * beam_widen) left: expands the best candidate till none can improve the
 * best ef found.
 */
static void beam_walk(const llmc_hnsw_t *h, scratch_t *sc, const qry_t *q, unsigned ef, int l)
{
    heap_t *cand = &sc->cand, *res = &sc->res;
    uint32_t mark = sc->mark, *visit = sc->visit;

    assert(ef + 1 <= res->cap);
    while (cand->n) {
        cand_t c = cand->a[0];
        if (res->n >= ef && c.s < -res->a[0].s)
            break;
        heap_pop(cand);
        if (l == 0 && cand->n)
            prefetch_list(h, cand->a[0].id); /* likely the next expanded */
        /* The unseen neighbours first, then their fetches started
           HNSW_AHEAD ahead of the scoring: several nodes' misses overlap
           where one at a time left the core waiting on each. */
        const uint32_t *L = list_of(h, c.id, l);
        uint32_t cnt = L[0], fresh[2 * MAX_M], nf = 0;
        for (uint32_t j = 1; j <= cnt; j++)
            if (visit[L[j]] != mark) {
                visit[L[j]] = mark;
                fresh[nf++] = L[j];
            }
        for (uint32_t j = 0; j < nf && j < HNSW_AHEAD; j++)
            prefetch_node(h, q, fresh[j]);
        for (uint32_t j = 0; j < nf; j++) {
            if (j + HNSW_AHEAD < nf)
                prefetch_node(h, q, fresh[j + HNSW_AHEAD]);
            beam_offer(sc, qsim(h, q, fresh[j]), fresh[j], ef);
        }
    }
}

/* The walk's best found into sc->sorted, best first; how many. */
static size_t beam_close(scratch_t *sc)
{
    heap_t *res = &sc->res;
    size_t n = res->n;
    for (size_t i = n; i-- > 0;) {
        sc->sorted[i] = (cand_t){.s = -res->a[0].s, .id = res->a[0].id};
        heap_pop(res);
    }
    return n;
}

/* The beam search at level l from ep: the best ef nodes found go into
   sc->sorted, best first; returns how many. */
static size_t beam(const llmc_hnsw_t *h, scratch_t *sc, const qry_t *q, uint32_t ep, float eps,
                   unsigned ef, int l)
{
    beam_open(sc, ep, eps);
    beam_walk(h, sc, q, ef, l);
    return beam_close(sc);
}

/*
 * Widens a finished layer-0 walk to beam ef, as if it had walked at ef from
 * the start but for the order: every node it scored (sc->seen) competes
 * again for the wider beam, the best ef are its candidates once more, and
 * the walk goes on with the same marks. A candidate expanded before finds
 * its neighbours marked and costs a list read; nothing is scored twice.
 */
static void beam_widen(const llmc_hnsw_t *h, scratch_t *sc, const qry_t *q, unsigned ef)
{
    heap_t *cand = &sc->cand, *res = &sc->res;
    assert(!sc->seen_lost);
    sc->logging = false;
    cand->n = res->n = 0;
    for (size_t i = 0; i < sc->nseen; i++) {
        float t = sc->seen[i].s;
        if (res->n < ef || t > -res->a[0].s) {
            heap_push(res, -t, sc->seen[i].id);
            if (res->n > ef)
                heap_pop(res);
        }
    }
    for (size_t i = 0; i < res->n; i++)
        heap_push(cand, -res->a[i].s, res->a[i].id);
    beam_walk(h, sc, q, ef, 0);
}

static int cand_desc(const void *a, const void *b)
{
    float x = ((const cand_t *)a)->s, y = ((const cand_t *)b)->s;
    return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * The selection heuristic: from c[0..n) (best first, s = similarity to the
 * base), keep at most mx, each closer to the base than to any kept before
 * it. At most mx candidates are all kept, as hnswlib does: a short list
 * gains nothing from pruning. Returns how many went into out.
 */
static unsigned select_heuristic(const llmc_hnsw_t *h, const cand_t *c, size_t n, unsigned mx,
                                 uint32_t *out)
{
    unsigned k = 0;
    if (n <= mx) {
        for (size_t i = 0; i < n; i++)
            out[k++] = c[i].id;
        return k;
    }
    for (size_t i = 0; i < n && k < mx; i++) {
        bool keep = true;
        for (unsigned r = 0; r < k && keep; r++)
            keep = sim(h, c[i].id, out[r]) < c[i].s;
        if (keep)
            out[k++] = c[i].id;
    }
    return k;
}

/*
 * Replaces y's list at level l by the heuristic's pick from its current
 * links plus extra[0..ne), keeping in-degrees true.
 */
static void relist(llmc_hnsw_t *h, uint32_t y, int l, const uint32_t *extra, unsigned ne)
{
    uint32_t *L = list_of(h, y, l), old[2 * MAX_M + 1], keep[2 * MAX_M];
    cand_t c[4 * MAX_M + 2];
    unsigned no = L[0], n = 0, mx = maxdeg(h, l), k;

    memcpy(old, L + 1, no * sizeof(*old));
    for (unsigned i = 0; i < no; i++)
        c[n++] = (cand_t){.s = sim(h, y, old[i]), .id = old[i]};
    for (unsigned i = 0; i < ne; i++)
        if (extra[i] != y && !has(old, no, extra[i]))
            c[n++] = (cand_t){.s = sim(h, y, extra[i]), .id = extra[i]};
    qsort(c, n, sizeof(*c), cand_desc);
    k = select_heuristic(h, c, n, mx, keep);
    for (unsigned i = 0; i < no; i++)
        if (!has(keep, k, old[i]))
            in_del(h, old[i], l, y);
    for (unsigned i = 0; i < k; i++)
        if (!has(old, no, keep[i]))
            in_add(h, keep[i], l, y);
    L[0] = k;
    memcpy(L + 1, keep, k * sizeof(*keep));
}

/* Adds the link y -> x at level l, pruning y's list when it is full. */
static void link_into(llmc_hnsw_t *h, uint32_t y, uint32_t x, int l)
{
    uint32_t *L = list_of(h, y, l);
    if (L[0] < maxdeg(h, l)) {
        L[++L[0]] = x;
        in_add(h, x, l, y);
        return;
    }
    relist(h, y, l, &x, 1);
}

/* ---- memory: huge pages for big graphs ------------------------------------------ */

static size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

/* len bytes (a multiple of HUGE_PAGE) of zeroed memory on a 2 MB boundary,
   advised for huge pages; NULL: none. Advice refused (no THP in this
   kernel) still leaves usable memory on small pages. */
static void *map_huge(size_t len)
{
    size_t span = len + HUGE_PAGE;
    uint8_t *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uint8_t *a = (uint8_t *)align_up((uintptr_t)p, HUGE_PAGE);
    if (a > p)
        munmap(p, (size_t)(a - p));
    if (a + len < p + span)
        munmap(a + len, (size_t)(p + span - (a + len)));
    (void)madvise(a, len, MADV_HUGEPAGE);
    return a;
}

/* The next chunk of the mappings: a new one when the last is full, as big
   as all before it together (so there are few), at least HNSW_REGION_MIN. */
static uint8_t *arena_carve(arena_t *a)
{
    assert(a->huge);
    if (!a->nreg || a->off + a->chunk > a->reg[a->nreg - 1].len) {
        size_t have = 0;
        for (unsigned i = 0; i < a->nreg; i++)
            have += a->reg[i].len;
        size_t len = align_up(have > HNSW_REGION_MIN ? have : HNSW_REGION_MIN, HUGE_PAGE);
        len = len < a->chunk ? align_up(a->chunk, HUGE_PAGE) : len;
        uint8_t *p = a->nreg < MAX_REGIONS ? map_huge(len) : NULL;
        if (!p)
            return NULL;
        a->reg[a->nreg++] = (region_t){.base = p, .len = len};
        a->off = 0;
    }
    uint8_t *c = a->reg[a->nreg - 1].base + a->off;
    a->off += a->chunk;
    return c;
}

/* The stream's n chunks (table) move into one mapping with room to spare;
   a failure leaves them where they were, to be tried at the next chunk. */
static void arena_go_huge(arena_t *a, uint8_t **table, size_t n)
{
    size_t len = align_up(2 * (n + 1) * a->chunk, HUGE_PAGE),
           least = align_up(HNSW_REGION_MIN, HUGE_PAGE);
    len = len > least ? len : least;
    uint8_t *p = map_huge(len);
    if (!p)
        return;
    a->reg[0] = (region_t){.base = p, .len = len};
    a->nreg = 1;
    for (size_t i = 0; i < n; i++) {
        memcpy(p + i * a->chunk, table[i], a->chunk);
        free(table[i]);
        table[i] = p + i * a->chunk;
    }
    a->off = n * a->chunk;
    a->huge = true;
}

/* A new chunk after the stream's n (in table); NULL: no memory. */
static uint8_t *arena_chunk(arena_t *a, uint8_t **table, size_t n)
{
    if (!a->huge && (n + 1) * a->chunk >= a->from)
        arena_go_huge(a, table, n);
    if (a->huge)
        return arena_carve(a);
    return aligned_alloc(64, a->chunk);
}

/* Takes back the chunk just handed out (an add that failed later). */
static void arena_unchunk(arena_t *a, uint8_t *c)
{
    if (!a->huge) {
        free(c);
        return;
    }
    assert(a->nreg && c + a->chunk == a->reg[a->nreg - 1].base + a->off);
    a->off -= a->chunk;
}

static void arena_free(arena_t *a, uint8_t **table, size_t n)
{
    if (!a->huge) {
        for (size_t i = 0; i < n; i++)
            free(table[i]);
        return;
    }
    for (unsigned i = 0; i < a->nreg; i++)
        munmap(a->reg[i].base, a->reg[i].len);
}

/* What the stream's n chunks take: on the heap, themselves; in mappings,
   every huge page touched (all of each full mapping, the last in part). */
static size_t arena_bytes(const arena_t *a, size_t n)
{
    if (!a->huge)
        return n * a->chunk;
    size_t b = 0;
    for (unsigned i = 0; i + 1 < a->nreg; i++)
        b += a->reg[i].len;
    return b + align_up(a->off, HUGE_PAGE);
}

static void marks_release(scratch_t *sc)
{
    if (sc->vmap)
        munmap(sc->visit, sc->vmap);
    else
        free(sc->visit);
}

/* Room in sc for the marks of need slots, new ones zero. Past one huge
   page of marks they live in a mapping of whole huge pages, grown rarely:
   a walk's mark reads are as scattered as its nodes. */
static bool marks_fit(scratch_t *sc, size_t need)
{
    if (need <= sc->vcap)
        return true;
    size_t bytes = need * sizeof(uint32_t);
    if (bytes < HUGE_PAGE) {
        uint32_t *v = realloc(sc->visit, bytes);
        if (!v)
            return false;
        memset(v + sc->vcap, 0, (need - sc->vcap) * sizeof(*v));
        sc->visit = v;
        sc->vcap = need;
        return true;
    }
    size_t len = align_up(bytes + bytes / 4, HUGE_PAGE);
    uint32_t *v = map_huge(len);
    if (!v)
        return false;
    if (sc->vcap)
        memcpy(v, sc->visit, sc->vcap * sizeof(*v));
    marks_release(sc);
    sc->visit = v;
    sc->vmap = len;
    sc->vcap = len / sizeof(*v);
    return true;
}

static size_t marks_bytes(const scratch_t *sc)
{
    return sc->vmap ? sc->vmap : sc->vcap * sizeof(uint32_t);
}

/* ---- new, free ------------------------------------------------------------------ */

llmc_hnsw_t *llmc_hnsw_new(unsigned dim, const llmc_hnsw_opts_t *opts)
{
    llmc_hnsw_opts_t o = opts ? *opts : (llmc_hnsw_opts_t){0};
    llmc_hnsw_t *h;

    if (!o.m)
        o.m = 16;
    if (!o.ef_construction)
        o.ef_construction = 200;
    if (!o.ef_search)
        o.ef_search = 64;
    if (dim == 0 || dim > 4096 || o.m < 2 || o.m > MAX_M)
        return NULL;
    if (!(h = calloc(1, sizeof(*h))) || !(h->sc = calloc(1, sizeof(*h->sc)))) {
        free(h);
        return NULL;
    }
    h->dim = dim;
    h->m = o.m;
    h->m0 = 2 * o.m;
    h->efc = o.ef_construction;
    h->efs = o.ef_search;
    h->rng = o.seed ? o.seed : 0x2545f4914f6cdd1dull;
    h->ml = 1.0 / log((double)o.m);
    h->maxlevel = -1;
    h->free_top = NO_SLOT;
    h->q8 = o.quantize != 0;
    pick_dots(h);
    if (h->q8) {
        /* code, scale, then the links; blocks are whole cache lines, so a
           code of 512 bytes takes exactly 8 of them */
        h->off_scale = align_up(dim, 4);
        h->off_l0 = h->off_scale + sizeof(float);
    } else {
        h->off_l0 = align_up(dim * sizeof(float), 4);
    }
    /* 4-byte fields fill the gaps the 8-byte ones leave: a float block of
       384 dimensions is 1536 + 132 + 28 bytes, no padding */
    h->off_indeg = h->off_l0 + (1 + h->m0) * sizeof(uint32_t);
    h->off_label = align_up(h->off_indeg + sizeof(uint32_t), 8);
    h->off_in = h->off_label + sizeof(uint64_t);
    h->off_up = h->off_in + sizeof(uint32_t *);
    /* the in-list's count and size, and the level: one word */
    h->off_inw = h->off_up + sizeof(uint32_t);
    h->off_level = h->off_inw + sizeof(uint16_t) + 1;
    h->bsize = align_up(h->off_inw + sizeof(uint32_t), h->q8 ? 64 : 8);
    h->nodes.chunk = align_up(CHUNK * h->bsize, 64);
    h->floats.chunk = (size_t)CHUNK * dim * sizeof(float);
    h->nodes.from = h->floats.from = HNSW_HUGE_FROM;
    size_t cap = (h->efc > h->efs ? h->efc : h->efs) + 2;
    h->sc->res.a = malloc(cap * sizeof(cand_t));
    h->sc->res.cap = cap;
    h->sc->sorted = malloc(cap * sizeof(cand_t));
    if (!h->sc->res.a || !h->sc->sorted) {
        llmc_hnsw_free(h);
        return NULL;
    }
    return h;
}

static void scratch_free(scratch_t *sc)
{
    if (!sc)
        return;
    marks_release(sc);
    free(sc->cand.a);
    free(sc->res.a);
    free(sc->sorted);
    free(sc->seen);
    free(sc->qcode);
    free(sc);
}

void llmc_hnsw_free(llmc_hnsw_t *h)
{
    if (!h)
        return;
    for (uint32_t n = 0; n < h->used; n++)
        if (live(h, n)) {
            free(up_idx(h, n) ? up_of(h, n) : NULL);
            free(*inl_of(h, n));
        }
    arena_free(&h->nodes, h->chunks, h->nchunks);
    if (h->q8)
        arena_free(&h->floats, h->fchunks, h->nchunks);
    free(h->chunks);
    free(h->fchunks);
    free(h->upt);
    free(h->upt_free);
    scratch_free(h->sc);
    for (int i = 0; i < SEARCH_POOL; i++)
        scratch_free(h->pool[i]);
    free(h);
}

/* Makes sure res and sorted hold ef + 1; false: they cannot. */
static bool scratch_fit(scratch_t *sc, unsigned ef)
{
    if (ef + 2 <= sc->res.cap)
        return true;
    size_t cap = ef + 2;
    cand_t *a = realloc(sc->res.a, cap * sizeof(*a));
    if (!a)
        return false;
    sc->res.a = a;
    cand_t *s = realloc(sc->sorted, cap * sizeof(*s));
    if (!s)
        return false; /* res is bigger, harmless */
    sc->sorted = s;
    sc->res.cap = cap;
    return true;
}

/* One more chunk of slots, with the visit marks and free stack to match. */
static int grow(llmc_hnsw_t *h)
{
    size_t cap = (h->nchunks + 1) * CHUNK;
    if (h->nchunks == h->chunks_cap) {
        size_t cc = h->chunks_cap ? h->chunks_cap * 2 : 4;
        uint8_t **c = realloc(h->chunks, cc * sizeof(*c));
        if (!c)
            return LLMC_ENOMEM;
        h->chunks = c;
        if (h->q8) {
            uint8_t **f = realloc(h->fchunks, cc * sizeof(*f));
            if (!f)
                return LLMC_ENOMEM; /* chunks grew, harmless */
            h->fchunks = f;
        }
        h->chunks_cap = cc;
    }
    if (!marks_fit(h->sc, cap))
        return LLMC_ENOMEM;
    uint8_t *chunk = arena_chunk(&h->nodes, h->chunks, h->nchunks);
    if (!chunk)
        return LLMC_ENOMEM;
    if (h->q8) {
        uint8_t *fc = arena_chunk(&h->floats, h->fchunks, h->nchunks);
        if (!fc) {
            arena_unchunk(&h->nodes, chunk);
            return LLMC_ENOMEM;
        }
        h->fchunks[h->nchunks] = fc;
    }
    h->chunks[h->nchunks++] = chunk;
    return 0;
}

static int draw_level(llmc_hnsw_t *h)
{
    /* splitmix64: a fixed seed gives the same graph for the same adds */
    uint64_t z = (h->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    double u = ((double)(z >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] */
    double lv = floor(-log(u) * h->ml);
    return lv > MAX_LEVEL ? MAX_LEVEL : (int)lv;
}

/* ---- add ------------------------------------------------------------------------ */

/* Room for twice the upper-list table entries (a node in m needs one). */
static int upt_grow(llmc_hnsw_t *h)
{
    uint32_t cap = h->upt_cap ? h->upt_cap * 2 : 64;
    if (cap <= h->upt_cap)
        return LLMC_ENOMEM; /* 2^32 entries: no more */
    uint32_t **t = realloc(h->upt, cap * sizeof(*t));
    if (!t)
        return LLMC_ENOMEM;
    h->upt = t;
    uint32_t *f = realloc(h->upt_free, cap * sizeof(*f));
    if (!f)
        return LLMC_ENOMEM; /* upt grew, harmless */
    h->upt_free = f;
    h->upt_cap = cap;
    return 0;
}

int llmc_hnsw_add(llmc_hnsw_t *h, uint64_t label, const float *vec, uint32_t *node)
{
    uint32_t x, *up = NULL;
    int level = draw_level(h);

    /* Every allocation first, so that a failure changes nothing. */
    if (!scratch_fit(h->sc, h->efc))
        return LLMC_ENOMEM;
    if (!h->nfree && h->used == h->nchunks * CHUNK && grow(h) < 0)
        return LLMC_ENOMEM;
    if (level > 0) {
        size_t bytes = (size_t)level * (2 + h->m) * sizeof(uint32_t);
        if (!h->upt_nfree && h->upt_n == h->upt_cap && upt_grow(h) < 0)
            return LLMC_ENOMEM;
        if (!(up = calloc(1, bytes)))
            return LLMC_ENOMEM;
        h->upper_bytes += bytes;
    }
    x = h->nfree ? free_pop(h) : h->used++;
    memcpy(vec_of(h, x), vec, h->dim * sizeof(float));
    if (h->q8) {
        float sc = quantise(vec, h->dim, (int8_t *)blk(h, x));
        memcpy(blk(h, x) + h->off_scale, &sc, sizeof(sc));
    }
    memcpy(blk(h, x) + h->off_label, &label, sizeof(label));
    uint32_t ui = 0;
    if (up) {
        ui = h->upt_nfree ? h->upt_free[--h->upt_nfree] : ++h->upt_n;
        h->upt[ui - 1] = up;
    }
    memcpy(blk(h, x) + h->off_up, &ui, sizeof(ui));
    *level_of(h, x) = (uint8_t)level;
    list_of(h, x, 0)[0] = 0;
    *indeg_of(h, x, 0) = 0;
    *inl_of(h, x) = NULL;
    set_cap(h, x, 0);
    *incnt_of(h, x) = 0;
    h->count++;
    *node = x;
    if (h->maxlevel < 0) {
        h->entry = x;
        h->maxlevel = level;
        return 0;
    }

    /* Links are chosen by float similarity: codes steer searches only. */
    const qry_t q = {.f = vec_of(h, x)};
    uint32_t cur = h->entry, sel[MAX_M];
    float s = qsim(h, &q, cur);
    for (int l = h->maxlevel; l > level; l--)
        greedy(h, &q, &cur, &s, l);
    for (int l = level < h->maxlevel ? level : h->maxlevel; l >= 0; l--) {
        size_t n = beam(h, h->sc, &q, cur, s, h->efc, l);
        unsigned k = select_heuristic(h, h->sc->sorted, n, h->m, sel);
        uint32_t *L = list_of(h, x, l);
        cur = h->sc->sorted[0].id;
        s = h->sc->sorted[0].s;
        /* one link at a time, each with its in-lists' update: an update
           reads the lists, which must hold just the links made so far */
        L[0] = 0;
        for (unsigned i = 0; i < k; i++) {
            L[++L[0]] = sel[i];
            in_add(h, sel[i], l, x);
            link_into(h, sel[i], x, l);
        }
    }
    if (level > h->maxlevel) {
        h->entry = x;
        h->maxlevel = level;
    }
    return 0;
}

/* ---- remove --------------------------------------------------------------------- */

/* If y links to x at level l: reconnects y without x; true when it did. */
static bool unlink_from(llmc_hnsw_t *h, uint32_t y, uint32_t x, int l, uint32_t mark)
{
    uint32_t *visit = h->sc->visit;
    if (visit[y] == mark)
        return false;
    visit[y] = mark;
    if (!live(h, y) || *level_of(h, y) < l)
        return false;
    uint32_t *L = list_of(h, y, l), *xl = list_of(h, x, l);
    unsigned j = 1;
    while (j <= L[0] && L[j] != x)
        j++;
    if (j > L[0])
        return false;
    L[j] = L[L[0]--];
    /* x's place goes to x's neighbour closest to y that y lacks: one dot
       per candidate. Rerunning the heuristic over both lists instead costs
       milliseconds per delete at 384 dimensions (measured), for no
       recall the bench could see. */
    uint32_t best = UINT32_MAX;
    float bs = -2;
    for (uint32_t i = 1; i <= xl[0]; i++) {
        uint32_t c = xl[i];
        if (c == y || has(L + 1, L[0], c))
            continue;
        float t = sim(h, y, c);
        if (t > bs) {
            bs = t;
            best = c;
        }
    }
    if (best != UINT32_MAX) {
        L[++L[0]] = best;
        in_add(h, best, l, y);
    }
    return true;
}

/* Every link to x at level l goes, each linking node reconnected. */
static void unlink_level(llmc_hnsw_t *h, uint32_t x, int l)
{
    uint32_t *xl = list_of(h, x, l), need = *indeg_of(h, x, l), found = 0, copy[2 * MAX_M + 1];
    uint32_t mark = next_epoch(h->sc);
    bool back[2 * MAX_M + 1] = {false}; /* back[i]: copy[i] linked to x too */

    h->sc->visit[x] = mark;
    memcpy(copy, xl, (1 + xl[0]) * sizeof(*copy));
    /* x's own neighbours first: those that link back are the in-links an
       in-list leaves out. Once all are found, the rest do not link back.
       unlink_from never touches x's own list or in-list; the links' removal
       updates no in-list of x's (x goes), and the loop at the end knows
       from back[] which of its neighbours' in-lists name x. */
    for (uint32_t i = 1; i <= copy[0] && found < need; i++)
        found += (back[i] = unlink_from(h, copy[i], x, l, mark));
    if (l == 0 && in_cap(h, x) != LOST) {
        /* the in-list names the rest: no hunt */
        const uint32_t *in = *inl_of(h, x);
        for (uint32_t i = 0; i < *incnt_of(h, x); i++)
            found += unlink_from(h, in[i], x, l, mark);
        assert(found == need);
    }
    /* Without a list, nearly all the rest link to x's neighbours too;
       every node is walked only if some are still missing. */
    for (uint32_t i = 1; i <= copy[0] && found < need; i++) {
        uint32_t two[2 * MAX_M + 1], *zl = list_of(h, copy[i], l);
        memcpy(two, zl, (1 + zl[0]) * sizeof(*two));
        for (uint32_t j = 1; j <= two[0] && found < need; j++)
            found += unlink_from(h, two[j], x, l, mark);
    }
    if (found < need) {
        /* The rest are near x too: a search for x's own vector finds them
           for the price of an insert, where walking every node costs
           milliseconds at 100,000 (measured). */
        const qry_t q = {.f = vec_of(h, x)};
        uint32_t cur = h->entry;
        float s = qsim(h, &q, cur);
        for (int u = h->maxlevel; u > l; u--)
            greedy(h, &q, &cur, &s, u);
        size_t n = beam(h, h->sc, &q, cur, s, h->efc, l);
        mark = next_epoch(h->sc); /* the walk used the marks */
        h->sc->visit[x] = mark;
        for (size_t i = 0; i < n && found < need; i++)
            found += unlink_from(h, h->sc->sorted[i].id, x, l, mark);
    }
    for (uint32_t y = 0; y < h->used && found < need; y++)
        found += unlink_from(h, y, x, l, mark);
    assert(found == need);
    *indeg_of(h, x, l) = 0;
    /* x's own links go; a neighbour left with no way in is relinked from
       its best neighbour. */
    for (uint32_t i = 1; i <= copy[0]; i++) {
        uint32_t z = copy[i];
        assert(*indeg_of(h, z, l) > 0);
        (*indeg_of(h, z, l))--;
        if (l == 0 && !back[i])
            in_pull(h, z, x); /* a one-way link: z's in-list named x */
        if (*indeg_of(h, z, l) > 0 || z == h->entry)
            continue;
        const uint32_t *zl = list_of(h, z, l);
        uint32_t best = UINT32_MAX;
        float bs = -2;
        for (uint32_t j = 1; j <= zl[0]; j++)
            if (zl[j] != x && sim(h, z, zl[j]) > bs) {
                bs = sim(h, z, zl[j]);
                best = zl[j];
            }
        if (best != UINT32_MAX)
            link_into(h, best, z, l);
    }
    xl[0] = 0;
}

/* A new entry point once x, the current one, goes: a node on x's top
   level if x has a neighbour there, else the highest node anywhere. */
static void new_entry(llmc_hnsw_t *h, uint32_t x)
{
    const uint32_t *L = list_of(h, x, h->maxlevel);
    if (L[0]) {
        h->entry = L[1];
        return;
    }
    h->maxlevel = -1;
    for (uint32_t n = 0; n < h->used; n++)
        if (n != x && live(h, n) && (int)*level_of(h, n) > h->maxlevel) {
            h->maxlevel = *level_of(h, n);
            h->entry = n;
        }
}

void llmc_hnsw_remove(llmc_hnsw_t *h, uint32_t x)
{
    assert(live(h, x));
    int level = *level_of(h, x);
    if (x == h->entry)
        new_entry(h, x);
    for (int l = 0; l <= level; l++)
        unlink_level(h, x, l);
    if (level > 0) {
        uint32_t ui = up_idx(h, x), none = 0;
        free(up_of(h, x));
        h->upt[ui - 1] = NULL;
        h->upt_free[h->upt_nfree++] = ui;
        h->upper_bytes -= (size_t)level * (2 + h->m) * sizeof(uint32_t);
        memcpy(blk(h, x) + h->off_up, &none, sizeof(none));
    }
    free(*inl_of(h, x));
    *inl_of(h, x) = NULL;
    set_cap(h, x, 0);
    *incnt_of(h, x) = 0;
    *level_of(h, x) = FREE_LEVEL;
    free_push(h, x);
    if (--h->count == 0) {
        h->maxlevel = -1;
        h->used = 0; /* every slot is free: start from the first again */
        h->nfree = 0;
        h->free_top = NO_SLOT;
        h->upt_n = h->upt_nfree = 0; /* every upper list went too */
    }
}

/* ---- search and reads ----------------------------------------------------------- */

/*
 * A coarse walk's best finds by code, scored again by their float vectors
 * and sorted best first: every score a caller sees is exact. Twice k and
 * 8 more, not just k: an int8 score is off by up to about 0.01 at 512
 * dimensions, enough to swap close neighbours; not all ef of them: each is
 * a cold read of 4 bytes a dimension, which cost more than the walk.
 * Returns how many were scored (the rest are dropped).
 */
static size_t rerank(const llmc_hnsw_t *h, const float *q, cand_t *c, size_t n, size_t k)
{
    if (n > 2 * k + 8)
        n = 2 * k + 8;
    for (size_t i = 0; i < n; i++)
        prefetch_node(h, &(qry_t){.f = q}, c[i].id);
    for (size_t i = 0; i < n; i++)
        c[i].s = h->dotf(q, vec_of(h, c[i].id), h->dim);
    for (size_t i = 1; i < n; i++) {
        cand_t x = c[i];
        size_t j = i;
        while (j > 0 && c[j - 1].s < x.s) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
    return n;
}

/*
 * A scratch area fit for a search of h: marks for every slot (the graph may
 * have grown since it was last used: writers never run beside searches,
 * so the slot count holds still while it is taken), a query code.
 */
static bool scratch_ready(const llmc_hnsw_t *h, scratch_t *sc)
{
    if (!marks_fit(sc, h->nchunks * CHUNK))
        return false;
    if (h->q8 && !sc->qcode && !(sc->qcode = malloc(h->dim)))
        return false;
    return true;
}

/* A free pool scratch (its bit set in busy, *slot its index), else one made
   for this call (*slot -1); NULL: no memory. */
static scratch_t *scratch_take(const llmc_hnsw_t *h, int *slot)
{
    llmc_hnsw_t *w = (llmc_hnsw_t *)h; /* the pool is the one part searches write */
    uint32_t b = atomic_load_explicit(&w->busy, memory_order_relaxed);
    for (int i = 0; i < SEARCH_POOL; i++) {
        uint32_t bit = 1u << i;
        while (!(b & bit)) {
            if (atomic_compare_exchange_weak_explicit(&w->busy, &b, b | bit,
                                                      memory_order_acquire,
                                                      memory_order_relaxed)) {
                if (!w->pool[i])
                    w->pool[i] = calloc(1, sizeof(scratch_t));
                if (w->pool[i] && scratch_ready(h, w->pool[i])) {
                    *slot = i;
                    return w->pool[i];
                }
                atomic_fetch_and_explicit(&w->busy, ~bit, memory_order_release);
                return NULL;
            }
        }
    }
    scratch_t *sc = calloc(1, sizeof(*sc));
    if (!sc || !scratch_ready(h, sc)) {
        scratch_free(sc);
        return NULL;
    }
    *slot = -1;
    return sc;
}

static void scratch_give(const llmc_hnsw_t *h, scratch_t *sc, int slot)
{
    if (slot < 0) {
        scratch_free(sc);
        return;
    }
    atomic_fetch_and_explicit(&((llmc_hnsw_t *)h)->busy, ~(1u << slot), memory_order_release);
}

/* The best score among a walk's ef best found (res, keyed by -s). */
static float beam_best(const scratch_t *sc)
{
    float b = -INFINITY;
    for (size_t i = 0; i < sc->res.n; i++)
        b = -sc->res.a[i].s > b ? -sc->res.a[i].s : b;
    return b;
}

/*
 * The layer-0 walk of a search from cur: at w->ef, or, with a narrow width,
 * at that first and then widened only when what it found reaches w->near.
 * Returns how many it found (sc->sorted).
 */
static size_t walk0(const llmc_hnsw_t *h, scratch_t *sc, const qry_t *qr, uint32_t cur, float s,
                    llmc_hnsw_walk_t *w)
{
    if (!w->ef_lo || w->ef_lo >= w->ef)
        return beam(h, sc, qr, cur, s, w->ef, 0);
    sc->logging = true;
    beam_open(sc, cur, s);
    beam_walk(h, sc, qr, w->ef_lo, 0);
    sc->logging = false;
    if (beam_best(sc) < w->near)
        return beam_close(sc);
    w->widened = true;
    if (sc->seen_lost) /* no room kept what it scored: walk again at full width */
        return beam(h, sc, qr, cur, s, w->ef, 0);
    beam_widen(h, sc, qr, w->ef);
    return beam_close(sc);
}

size_t llmc_hnsw_search_walk(const llmc_hnsw_t *h, const float *q, size_t k,
                             llmc_hnsw_walk_t *w, llmc_hnsw_hit_t *out)
{
    w->widened = false;
    if (h->maxlevel < 0 || k == 0)
        return 0;
    if (!w->ef)
        w->ef = h->efs;
    if (w->ef < k)
        w->ef = k > 100000 ? 100000 : (unsigned)k;
    if (w->ef_lo && w->ef_lo < k)
        w->ef_lo = (unsigned)k;
    int slot;
    scratch_t *sc = scratch_take(h, &slot);
    if (!sc)
        return 0; /* no memory for the walk: nothing found */
    if (!scratch_fit(sc, w->ef))
        w->ef = (unsigned)sc->res.cap - 2; /* a narrower beam rather than none */
    qry_t qr = {.f = q, .c = sc->qcode, .coarse = h->q8};
    if (h->q8)
        qr.cs = quantise(q, h->dim, sc->qcode);
    uint32_t cur = h->entry;
    float s = qsim(h, &qr, cur);
    for (int l = h->maxlevel; l > 0; l--)
        greedy(h, &qr, &cur, &s, l);
    size_t n = walk0(h, sc, &qr, cur, s, w);
    if (h->q8)
        n = rerank(h, q, sc->sorted, n, k);
    if (n > k)
        n = k;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = sc->sorted[i].id;
        out[i] = (llmc_hnsw_hit_t){
            .label = llmc_hnsw_label(h, id), .node = id, .score = sc->sorted[i].s};
    }
    scratch_give(h, sc, slot);
    return n;
}

size_t llmc_hnsw_search(const llmc_hnsw_t *h, const float *q, size_t k, unsigned ef,
                        llmc_hnsw_hit_t *out)
{
    return llmc_hnsw_search_walk(h, q, k, &(llmc_hnsw_walk_t){.ef = ef}, out);
}

llmc_dot_fn llmc_hnsw_dot_fn(void)
{
    llmc_hnsw_t h;
    pick_dots(&h);
    return h.dotf;
}

int llmc_hnsw_live(const llmc_hnsw_t *h, uint32_t node)
{
    return live(h, node);
}

const float *llmc_hnsw_vector(const llmc_hnsw_t *h, uint32_t node)
{
    assert(live(h, node));
    return vec_of(h, node);
}

uint64_t llmc_hnsw_label(const llmc_hnsw_t *h, uint32_t node)
{
    uint64_t label;
    memcpy(&label, blk(h, node) + h->off_label, sizeof(label));
    return label;
}

size_t llmc_hnsw_mapped(const llmc_hnsw_t *h)
{
    size_t b = (h->nodes.huge ? arena_bytes(&h->nodes, h->nchunks) : 0) +
               (h->floats.huge ? arena_bytes(&h->floats, h->nchunks) : 0) + h->sc->vmap;
    for (int i = 0; i < SEARCH_POOL; i++)
        b += h->pool[i] ? h->pool[i]->vmap : 0;
    return b;
}

size_t llmc_hnsw_count(const llmc_hnsw_t *h)
{
    return h->count;
}

size_t llmc_hnsw_bytes(const llmc_hnsw_t *h)
{
    size_t in = 0;
    for (uint32_t n = 0; n < h->used; n++)
        if (live(h, n) && in_cap(h, n) != LOST)
            in += in_cap(h, n) * sizeof(uint32_t);
    for (int i = 0; i < SEARCH_POOL; i++) /* the searches' marks: one set per search at once */
        if (h->pool[i])
            in += sizeof(scratch_t) + marks_bytes(h->pool[i]) +
                  (h->pool[i]->cand.cap + 2 * h->pool[i]->res.cap) * sizeof(cand_t) +
                  (h->q8 ? h->dim : 0);
    return in + sizeof(*h) + sizeof(*h->sc) + h->chunks_cap * sizeof(*h->chunks) +
           arena_bytes(&h->nodes, h->nchunks) + marks_bytes(h->sc) +
           (h->q8 ? h->chunks_cap * sizeof(uint8_t *) + arena_bytes(&h->floats, h->nchunks) +
                        h->dim
                  : 0) +
           h->upper_bytes + (size_t)h->upt_cap * (sizeof(*h->upt) + sizeof(*h->upt_free)) +
           (h->sc->cand.cap + 2 * h->sc->res.cap) * sizeof(cand_t);
}

/* ---- the check ------------------------------------------------------------------ */

#define BAD(...) (why ? (void)snprintf(why, why_len, __VA_ARGS__) : (void)0, LLMC_ECORRUPT)

int llmc_hnsw_check(const llmc_hnsw_t *h, char *why, size_t why_len)
{
    uint32_t lives = 0, top = 0, uppers = 0;
    /* Each node with levels owns its own upper-list entry (visit marks the
       entries: there are never more than slots), the rest none. */
    assert(h->upt_n <= h->sc->vcap);
    memset(h->sc->visit, 0, h->upt_n * sizeof(*h->sc->visit));
    for (uint32_t n = 0; n < h->used; n++) {
        if (!live(h, n))
            continue;
        uint32_t ui = up_idx(h, n);
        if (!*level_of(h, n) != !ui)
            return BAD("node %u of level %u has upper-list entry %u", n, *level_of(h, n), ui);
        if (!ui)
            continue;
        if (ui > h->upt_n || !h->upt[ui - 1] || h->sc->visit[ui - 1]++)
            return BAD("node %u's upper-list entry %u is not its own", n, ui);
        uppers++;
    }
    if (uppers + h->upt_nfree != h->upt_n)
        return BAD("%u upper-list entries used and %u free of %u", uppers, h->upt_nfree,
                   h->upt_n);
    /* In-degrees counted from the links, compared with the stored ones
       level by level (a second array would cost the check memory). */
    for (int l = 0; l <= (h->maxlevel < 0 ? 0 : h->maxlevel); l++) {
        /* visit[n] is reused to count n's in-links */
        for (uint32_t n = 0; n < h->used; n++)
            h->sc->visit[n] = 0;
        for (uint32_t n = 0; n < h->used; n++) {
            if (!live(h, n) || *level_of(h, n) < l)
                continue;
            const uint32_t *L = list_of(h, n, l);
            if (L[0] > maxdeg(h, l))
                return BAD("node %u level %d holds %u links", n, l, L[0]);
            for (uint32_t j = 1; j <= L[0]; j++) {
                uint32_t t = L[j];
                if (t == n)
                    return BAD("node %u links to itself at level %d", n, l);
                if (!live(h, t))
                    return BAD("node %u links to dead node %u at level %d", n, t, l);
                if (*level_of(h, t) < l)
                    return BAD("node %u links at level %d to node %u of level %u", n, l, t,
                               *level_of(h, t));
                if (has(L + 1, j - 1, t))
                    return BAD("node %u links twice to %u at level %d", n, t, l);
                h->sc->visit[t]++;
            }
        }
        for (uint32_t n = 0; n < h->used; n++)
            if (live(h, n) && *level_of(h, n) >= l && h->sc->visit[n] != *indeg_of(h, n, l))
                return BAD("node %u level %d: in-degree %u, %u links in", n, l,
                           *indeg_of(h, n, l), h->sc->visit[n]);
    }
    /* Each in-list names distinct nodes that link to its node one way. Its
       length plus the links both ways equals the in-degree checked above,
       so it names all of them. */
    for (uint32_t n = 0; n < h->used; n++) {
        if (!live(h, n))
            continue;
        const uint32_t *in = *inl_of(h, n), cnt = *incnt_of(h, n), cap = in_cap(h, n);
        if (cap == LOST) {
            if (in || cnt)
                return BAD("node %u: a dropped in-list with %u entries", n, cnt);
            continue;
        }
        if (cnt > cap || !cnt != !cap || !cap != !in || (cap && (cap > IN_MAX || cap % IN_STEP != IN_FIRST % IN_STEP)))
            return BAD("node %u: in-list of %u entries in room for %u", n, cnt, cap);
        for (uint32_t i = 0; i < cnt; i++) {
            if (!live(h, in[i]))
                return BAD("node %u's in-list names dead node %u", n, in[i]);
            if (!links0(h, in[i], n))
                return BAD("node %u's in-list names %u, which does not link to it", n, in[i]);
            if (links0(h, n, in[i]))
                return BAD("node %u's in-list names %u, which it links to", n, in[i]);
            if (has(in, i, in[i]))
                return BAD("node %u's in-list names %u twice", n, in[i]);
        }
        const uint32_t *L = list_of(h, n, 0);
        uint32_t both = 0;
        for (uint32_t j = 1; j <= L[0]; j++)
            both += live(h, L[j]) && links0(h, L[j], n);
        if (cnt + both != *indeg_of(h, n, 0))
            return BAD("node %u: in-degree %u, but %u in-list entries and %u links both ways",
                       n, *indeg_of(h, n, 0), cnt, both);
    }
    /* The marks were overwritten: make every old epoch stale. */
    memset(h->sc->visit, 0, h->sc->vcap * sizeof(*h->sc->visit));
    for (uint32_t n = 0; n < h->used; n++) {
        if (!live(h, n))
            continue;
        lives++;
        if ((int)*level_of(h, n) > h->maxlevel)
            return BAD("node %u is above the top level %d", n, h->maxlevel);
        if ((int)*level_of(h, n) == h->maxlevel)
            top++;
    }
    if (lives != h->count || lives + h->nfree != h->used)
        return BAD("counts disagree: %u live of %u, %zu free of %u used", lives, h->count,
                   h->nfree, h->used);
    uint32_t f = h->free_top;
    for (size_t i = 0; i < h->nfree; i++, f = free_next(h, f))
        if (f >= h->used || live(h, f))
            return BAD("free slot %u is in use", f);
    if (f != NO_SLOT)
        return BAD("the free stack runs past its %zu slots", h->nfree);
    if (h->count && (!live(h, h->entry) || (int)*level_of(h, h->entry) != h->maxlevel))
        return BAD("entry %u is not a live node on the top level %d", h->entry, h->maxlevel);
    if (!h->count && h->maxlevel != -1)
        return BAD("an empty graph with a top level");
    return 0;
}
