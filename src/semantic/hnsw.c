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
 * - Searches write the visited marks (an epoch per node, so nothing is
 *   cleared between searches) and reuse heaps in a scratch area: the graph
 *   is logically const during a search but not thread-safe.
 */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include "llmc/error.h"
#include "semantic/hnsw.h"

#define FREE_LEVEL 0xFF
#define MAX_LEVEL 24
#define CHUNK_SHIFT 8
#define CHUNK (1u << CHUNK_SHIFT)
#define MAX_M 64

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
    uint32_t epoch;
    heap_t cand, res;   /* res is keyed by -s: its top is the worst kept */
    cand_t *sorted;     /* res drained best first, res.cap entries */
} scratch_t;

struct llmc_hnsw {
    unsigned dim, m, m0, efc, efs;
    uint64_t rng;
    double ml;
    size_t bsize, off_l0, off_label, off_up, off_indeg, off_level;
    uint8_t **chunks;
    size_t nchunks, chunks_cap;
    uint32_t used, count; /* slots handed out (0..used-1), live nodes */
    uint32_t *freel;      /* free slots, a stack; capacity = nchunks * CHUNK */
    size_t nfree;
    uint32_t entry;
    int maxlevel; /* -1: empty */
    size_t upper_bytes;
    scratch_t *sc;
};

/* ---- node access ---------------------------------------------------------------- */

static inline uint8_t *blk(const llmc_hnsw_t *h, uint32_t n)
{
    return h->chunks[n >> CHUNK_SHIFT] + (size_t)(n & (CHUNK - 1)) * h->bsize;
}

static inline float *vec_of(const llmc_hnsw_t *h, uint32_t n)
{
    return (float *)blk(h, n);
}

static inline uint8_t *level_of(const llmc_hnsw_t *h, uint32_t n)
{
    return blk(h, n) + h->off_level;
}

static inline uint32_t **up_of(const llmc_hnsw_t *h, uint32_t n)
{
    return (uint32_t **)(blk(h, n) + h->off_up);
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
    return *up_of(h, n) + (size_t)(l - 1) * (1 + h->m);
}

static inline uint32_t *indeg_of(const llmc_hnsw_t *h, uint32_t n, int l)
{
    if (l == 0)
        return (uint32_t *)(blk(h, n) + h->off_indeg);
    return *up_of(h, n) + (size_t)*level_of(h, n) * (1 + h->m) + (l - 1);
}

static inline bool live(const llmc_hnsw_t *h, uint32_t n)
{
    return n < h->used && *level_of(h, n) != FREE_LEVEL;
}

static float dot(const float *a, const float *b, unsigned n)
{
    unsigned i = 0;
    float s = 0;
#if defined(__AVX512F__)
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(s0, s1));
    s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
#else
    /* Four sums, so the compiler may keep them in separate lanes. */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    s = (s0 + s1) + (s2 + s3);
#endif
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static inline float sim(const llmc_hnsw_t *h, uint32_t a, uint32_t b)
{
    return dot(vec_of(h, a), vec_of(h, b), h->dim);
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

static uint32_t next_epoch(const llmc_hnsw_t *h)
{
    scratch_t *sc = h->sc;
    if (++sc->epoch == 0) { /* wrapped: old marks could collide */
        memset(sc->visit, 0, h->nchunks * CHUNK * sizeof(*sc->visit));
        sc->epoch = 1;
    }
    return sc->epoch;
}

/* Greedy descent at level l from *cur (similarity *s). */
static void greedy(const llmc_hnsw_t *h, const float *q, uint32_t *cur, float *s, int l)
{
    bool moved = true;
    while (moved) {
        moved = false;
        const uint32_t *L = list_of(h, *cur, l);
        for (uint32_t j = 1; j <= L[0]; j++) {
            float t = dot(q, vec_of(h, L[j]), h->dim);
            if (t > *s) {
                *s = t;
                *cur = L[j];
                moved = true;
            }
        }
    }
}

/*
 * The beam search at level l from ep: the best ef nodes found go into
 * sc->sorted, best first; returns how many.
 */
static size_t beam(const llmc_hnsw_t *h, const float *q, uint32_t ep, float eps, unsigned ef,
                   int l)
{
    scratch_t *sc = h->sc;
    heap_t *cand = &sc->cand, *res = &sc->res;
    uint32_t mark = next_epoch(h), *visit = sc->visit;

    assert(ef + 1 <= res->cap);
    cand->n = res->n = 0;
    visit[ep] = mark;
    heap_push(cand, eps, ep);
    heap_push(res, -eps, ep);
    while (cand->n) {
        cand_t c = cand->a[0];
        if (res->n >= ef && c.s < -res->a[0].s)
            break;
        heap_pop(cand);
        const uint32_t *L = list_of(h, c.id, l);
        uint32_t cnt = L[0];
        if (cnt)
            __builtin_prefetch(vec_of(h, L[1]));
        for (uint32_t j = 1; j <= cnt; j++) {
            uint32_t e = L[j];
            if (j < cnt)
                __builtin_prefetch(vec_of(h, L[j + 1]));
            if (visit[e] == mark)
                continue;
            visit[e] = mark;
            float t = dot(q, vec_of(h, e), h->dim);
            if (res->n < ef || t > -res->a[0].s) {
                heap_push(cand, t, e);
                heap_push(res, -t, e); /* never grows: cap > ef */
                if (res->n > ef)
                    heap_pop(res);
            }
        }
    }
    size_t n = res->n;
    for (size_t i = n; i-- > 0;) {
        sc->sorted[i] = (cand_t){.s = -res->a[0].s, .id = res->a[0].id};
        heap_pop(res);
    }
    return n;
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

static bool has(const uint32_t *v, unsigned n, uint32_t x)
{
    for (unsigned i = 0; i < n; i++)
        if (v[i] == x)
            return true;
    return false;
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
            (*indeg_of(h, old[i], l))--;
    for (unsigned i = 0; i < k; i++)
        if (!has(old, no, keep[i]))
            (*indeg_of(h, keep[i], l))++;
    L[0] = k;
    memcpy(L + 1, keep, k * sizeof(*keep));
}

/* Adds the link y -> x at level l, pruning y's list when it is full. */
static void link_into(llmc_hnsw_t *h, uint32_t y, uint32_t x, int l)
{
    uint32_t *L = list_of(h, y, l);
    if (L[0] < maxdeg(h, l)) {
        L[++L[0]] = x;
        (*indeg_of(h, x, l))++;
        return;
    }
    relist(h, y, l, &x, 1);
}

/* ---- new, free ------------------------------------------------------------------ */

static size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

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
    h->off_l0 = align_up(dim * sizeof(float), 4);
    h->off_label = align_up(h->off_l0 + (1 + h->m0) * sizeof(uint32_t), 8);
    h->off_up = h->off_label + sizeof(uint64_t);
    h->off_indeg = h->off_up + sizeof(uint32_t *);
    h->off_level = h->off_indeg + sizeof(uint32_t);
    h->bsize = align_up(h->off_level + 1, 8);
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

void llmc_hnsw_free(llmc_hnsw_t *h)
{
    if (!h)
        return;
    for (uint32_t n = 0; n < h->used; n++)
        if (live(h, n))
            free(*up_of(h, n));
    for (size_t i = 0; i < h->nchunks; i++)
        free(h->chunks[i]);
    free(h->chunks);
    free(h->freel);
    free(h->sc->visit);
    free(h->sc->cand.a);
    free(h->sc->res.a);
    free(h->sc->sorted);
    free(h->sc);
    free(h);
}

/* Makes sure res and sorted hold ef + 1; false: they cannot. */
static bool scratch_fit(const llmc_hnsw_t *h, unsigned ef)
{
    scratch_t *sc = h->sc;
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
        h->chunks_cap = cc;
    }
    uint32_t *v = realloc(h->sc->visit, cap * sizeof(*v));
    if (!v)
        return LLMC_ENOMEM;
    h->sc->visit = v;
    memset(v + cap - CHUNK, 0, CHUNK * sizeof(*v));
    uint32_t *f = realloc(h->freel, cap * sizeof(*f));
    if (!f)
        return LLMC_ENOMEM;
    h->freel = f;
    uint8_t *chunk = aligned_alloc(64, align_up(CHUNK * h->bsize, 64));
    if (!chunk)
        return LLMC_ENOMEM;
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

int llmc_hnsw_add(llmc_hnsw_t *h, uint64_t label, const float *vec, uint32_t *node)
{
    uint32_t x, *up = NULL;
    int level = draw_level(h);

    /* Every allocation first, so that a failure changes nothing. */
    if (!scratch_fit(h, h->efc))
        return LLMC_ENOMEM;
    if (!h->nfree && h->used == h->nchunks * CHUNK && grow(h) < 0)
        return LLMC_ENOMEM;
    if (level > 0) {
        size_t bytes = (size_t)level * (2 + h->m) * sizeof(uint32_t);
        if (!(up = calloc(1, bytes)))
            return LLMC_ENOMEM;
        h->upper_bytes += bytes;
    }
    x = h->nfree ? h->freel[--h->nfree] : h->used++;
    memcpy(vec_of(h, x), vec, h->dim * sizeof(float));
    memcpy(blk(h, x) + h->off_label, &label, sizeof(label));
    *up_of(h, x) = up;
    *level_of(h, x) = (uint8_t)level;
    list_of(h, x, 0)[0] = 0;
    *indeg_of(h, x, 0) = 0;
    h->count++;
    *node = x;
    if (h->maxlevel < 0) {
        h->entry = x;
        h->maxlevel = level;
        return 0;
    }

    const float *q = vec_of(h, x);
    uint32_t cur = h->entry, sel[MAX_M];
    float s = dot(q, vec_of(h, cur), h->dim);
    for (int l = h->maxlevel; l > level; l--)
        greedy(h, q, &cur, &s, l);
    for (int l = level < h->maxlevel ? level : h->maxlevel; l >= 0; l--) {
        size_t n = beam(h, q, cur, s, h->efc, l);
        unsigned k = select_heuristic(h, h->sc->sorted, n, h->m, sel);
        uint32_t *L = list_of(h, x, l);
        cur = h->sc->sorted[0].id;
        s = h->sc->sorted[0].s;
        L[0] = k;
        memcpy(L + 1, sel, k * sizeof(*sel));
        for (unsigned i = 0; i < k; i++) {
            (*indeg_of(h, sel[i], l))++;
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
        (*indeg_of(h, best, l))++;
    }
    return true;
}

/* Every link to x at level l goes, each linking node reconnected. */
static void unlink_level(llmc_hnsw_t *h, uint32_t x, int l)
{
    uint32_t *xl = list_of(h, x, l), need = *indeg_of(h, x, l), found = 0, copy[2 * MAX_M + 1];
    uint32_t mark = next_epoch(h);

    h->sc->visit[x] = mark;
    /* Most in-links come from x's own neighbours, nearly all the rest
       from theirs; every node is walked only if some are still missing. */
    memcpy(copy, xl, (1 + xl[0]) * sizeof(*copy));
    for (uint32_t i = 1; i <= copy[0] && found < need; i++)
        found += unlink_from(h, copy[i], x, l, mark);
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
        const float *vx = vec_of(h, x);
        uint32_t cur = h->entry;
        float s = dot(vx, vec_of(h, cur), h->dim);
        for (int u = h->maxlevel; u > l; u--)
            greedy(h, vx, &cur, &s, u);
        size_t n = beam(h, vx, cur, s, h->efc, l);
        mark = next_epoch(h); /* the walk used the marks */
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
        if (--*indeg_of(h, z, l) > 0 || z == h->entry)
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
        free(*up_of(h, x));
        h->upper_bytes -= (size_t)level * (2 + h->m) * sizeof(uint32_t);
    }
    *up_of(h, x) = NULL;
    *level_of(h, x) = FREE_LEVEL;
    h->freel[h->nfree++] = x;
    if (--h->count == 0) {
        h->maxlevel = -1;
        h->used = 0; /* every slot is free: start from the first again */
        h->nfree = 0;
    }
}

/* ---- search and reads ----------------------------------------------------------- */

size_t llmc_hnsw_search(const llmc_hnsw_t *h, const float *q, size_t k, unsigned ef,
                        llmc_hnsw_hit_t *out)
{
    if (h->maxlevel < 0 || k == 0)
        return 0;
    if (!ef)
        ef = h->efs;
    if (ef < k)
        ef = k > 100000 ? 100000 : (unsigned)k;
    if (!scratch_fit(h, ef))
        ef = (unsigned)h->sc->res.cap - 2; /* a narrower beam rather than none */
    uint32_t cur = h->entry;
    float s = dot(q, vec_of(h, cur), h->dim);
    for (int l = h->maxlevel; l > 0; l--)
        greedy(h, q, &cur, &s, l);
    size_t n = beam(h, q, cur, s, ef, 0);
    if (n > k)
        n = k;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = h->sc->sorted[i].id;
        out[i] = (llmc_hnsw_hit_t){
            .label = llmc_hnsw_label(h, id), .node = id, .score = h->sc->sorted[i].s};
    }
    return n;
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

size_t llmc_hnsw_count(const llmc_hnsw_t *h)
{
    return h->count;
}

size_t llmc_hnsw_bytes(const llmc_hnsw_t *h)
{
    size_t slots = h->nchunks * CHUNK;
    return sizeof(*h) + sizeof(*h->sc) + h->chunks_cap * sizeof(*h->chunks) +
           h->nchunks * align_up(CHUNK * h->bsize, 64) + slots * 2 * sizeof(uint32_t) +
           h->upper_bytes + (h->sc->cand.cap + 2 * h->sc->res.cap) * sizeof(cand_t);
}

/* ---- the check ------------------------------------------------------------------ */

#define BAD(...) (why ? (void)snprintf(why, why_len, __VA_ARGS__) : (void)0, LLMC_ECORRUPT)

int llmc_hnsw_check(const llmc_hnsw_t *h, char *why, size_t why_len)
{
    uint32_t lives = 0, top = 0;
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
    /* The marks were overwritten: make every old epoch stale. */
    memset(h->sc->visit, 0, h->nchunks * CHUNK * sizeof(*h->sc->visit));
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
    for (size_t i = 0; i < h->nfree; i++)
        if (h->freel[i] >= h->used || live(h, h->freel[i]))
            return BAD("free slot %u is in use", h->freel[i]);
    if (h->count && (!live(h, h->entry) || (int)*level_of(h, h->entry) != h->maxlevel))
        return BAD("entry %u is not a live node on the top level %d", h->entry, h->maxlevel);
    if (!h->count && h->maxlevel != -1)
        return BAD("an empty graph with a top level");
    return 0;
}
