/* Unit tests for the HNSW graph (semantic/hnsw.h): recall against brute
   force, real deletes interleaved with adds and searches, the check. The .c
   is included so a test can break an invariant and see the check say so. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

/* Streams of chunks move to huge-page mappings from 256 KB here, not 8 MB,
   and mappings start at 2 MB: every test past a few thousand nodes runs
   the move and the carving across several mappings. */
#define HNSW_HUGE_FROM ((size_t)256 << 10)
#define HNSW_REGION_MIN ((size_t)2 << 20)
#include "semantic/hnsw.c"

#define DIM 16
#define K 10

static uint64_t rng = 88172645463325252ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void unit(float *v, unsigned dim)
{
    double ss = 0;
    for (unsigned i = 0; i < dim; i++) {
        v[i] = (float)((double)(next() % 20001) / 10000.0 - 1.0);
        ss += (double)v[i] * v[i];
    }
    for (unsigned i = 0; i < dim; i++)
        v[i] = (float)(v[i] / sqrt(ss));
}

static void checked(const llmc_hnsw_t *h)
{
    char why[160] = "";
    int rc = llmc_hnsw_check(h, why, sizeof(why));
    if (rc)
        fprintf(stderr, "check: %s\n", why);
    assert_int_equal(rc, 0);
}

/* The k best of vecs[i] for alive[i], by brute force, into best (labels). */
static size_t brute(const float *vecs, const unsigned char *alive, size_t n, const float *q,
                    size_t k, uint64_t *best)
{
    float bs[K + 1];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!alive[i])
            continue;
        float s = dot(q, vecs + i * DIM, DIM);
        if (m == k && s <= bs[m - 1])
            continue;
        size_t j = m < k ? m++ : m - 1;
        while (j > 0 && bs[j - 1] < s) {
            bs[j] = bs[j - 1];
            best[j] = best[j - 1];
            j--;
        }
        bs[j] = s;
        best[j] = i;
    }
    return m;
}

/* How many of the true k best the graph found, over queries searches. */
static double recall(const llmc_hnsw_t *h, const float *vecs, const unsigned char *alive,
                     size_t n, int queries, unsigned ef)
{
    size_t found = 0, want = 0;
    for (int r = 0; r < queries; r++) {
        float q[DIM];
        uint64_t truth[K];
        llmc_hnsw_hit_t hits[K];
        unit(q, DIM);
        size_t t = brute(vecs, alive, n, q, K, truth);
        size_t g = llmc_hnsw_search(h, q, K, ef, hits);
        for (size_t i = 0; i < g; i++) {
            assert_true(alive[hits[i].label]); /* a deleted vector is never found */
            assert_true(i == 0 || hits[i - 1].score >= hits[i].score);
            for (size_t j = 0; j < t; j++)
                found += hits[i].label == truth[j];
        }
        want += t;
    }
    return want ? (double)found / (double)want : 1.0;
}

/* 100,000 random unit vectors: recall@10 of at least 0.95, the walk by
   floats or (q8) by int8 codes. */
static void recall_100k(unsigned q8)
{
    enum { N = 100000 };
    float *vecs = malloc((size_t)N * DIM * sizeof(float));
    unsigned char *alive = malloc(N);
    llmc_hnsw_t *h = llmc_hnsw_new(
        DIM, &(llmc_hnsw_opts_t){.m = 12, .ef_construction = 64, .quantize = q8});
    assert_non_null(h);
    for (size_t i = 0; i < N; i++) {
        uint32_t node;
        unit(vecs + i * DIM, DIM);
        assert_int_equal(llmc_hnsw_add(h, i, vecs + i * DIM, &node), 0);
        assert_int_equal(node, i); /* no deletes yet: slots in order */
        alive[i] = 1;
    }
    assert_int_equal(llmc_hnsw_count(h), N);
    checked(h);
    double r = recall(h, vecs, alive, N, 200, 64);
    fprintf(stderr, "recall@10 at 100k x %d, ef 64%s: %.4f\n", DIM, q8 ? ", int8 walk" : "", r);
    assert_true(r >= 0.95);
    llmc_hnsw_free(h);
    free(vecs);
    free(alive);
}

static void test_recall_100k(void **state)
{
    recall_100k(0);
}

static void test_recall_100k_quantised(void **state)
{
    recall_100k(1);
}

/*
 * Batches of adds, deletes and searches: the check holds after each, a
 * deleted vector is never found, recall stays up, freed slots are reused
 * (the slots used never pass the most vectors ever live), and deleting
 * everything leaves an empty, valid graph.
 */
static void churn(unsigned q8, bool lose)
{
    enum { N = 6000, BATCH = 400, DEL = 250 };
    float *vecs = malloc((size_t)N * DIM * sizeof(float));
    unsigned char *alive = calloc(N, 1);
    uint32_t *node_of = calloc(N, sizeof(*node_of));
    llmc_hnsw_t *h = llmc_hnsw_new(DIM, &(llmc_hnsw_opts_t){.m = 8, .ef_construction = 64,
                                                            .seed = 7, .quantize = q8});
    size_t next_label = 0, live_n = 0, peak = 0;
    assert_non_null(h);
    while (next_label + BATCH <= N) {
        for (int i = 0; i < BATCH; i++, next_label++) {
            unit(vecs + next_label * DIM, DIM);
            assert_int_equal(llmc_hnsw_add(h, next_label, vecs + next_label * DIM,
                                           &node_of[next_label]), 0);
            alive[next_label] = 1;
            live_n++;
        }
        peak = live_n > peak ? live_n : peak;
        for (uint32_t n = 0; lose && n < h->used; n += 3)
            if (live(h, n) && in_cap(h, n) != LOST) {
                /* as when an in-list cannot grow: deletes hunt instead */
                free(*inl_of(h, n));
                *inl_of(h, n) = NULL;
                set_cap(h, n, LOST);
                *incnt_of(h, n) = 0;
            }
        for (int d = 0; d < DEL; d++) {
            size_t v;
            do
                v = next() % next_label;
            while (!alive[v]);
            assert_int_equal(llmc_hnsw_label(h, node_of[v]), v);
            llmc_hnsw_remove(h, node_of[v]);
            alive[v] = 0;
            live_n--;
        }
        checked(h);
        assert_int_equal(llmc_hnsw_count(h), live_n);
        assert_true(h->used <= peak);
        for (uint32_t n = 0; n < h->used; n++) /* in-lists keep under two steps spare */
            if (live(h, n) && in_cap(h, n) != LOST)
                assert_true(in_cap(h, n) < (unsigned)*incnt_of(h, n) + 2 * IN_STEP);
        double r = recall(h, vecs, alive, next_label, 40, 100);
        assert_true(r >= 0.9);
    }
    for (size_t v = 0; v < next_label; v++)
        if (alive[v]) {
            llmc_hnsw_remove(h, node_of[v]);
            alive[v] = 0;
            if (v % 97 == 0)
                checked(h);
        }
    assert_int_equal(llmc_hnsw_count(h), 0);
    checked(h);
    float q[DIM];
    llmc_hnsw_hit_t hit;
    unit(q, DIM);
    assert_int_equal(llmc_hnsw_search(h, q, 1, 0, &hit), 0);
    uint32_t node;
    assert_int_equal(llmc_hnsw_add(h, 1, q, &node), 0); /* usable again */
    assert_int_equal(llmc_hnsw_search(h, q, 1, 0, &hit), 1);
    assert_int_equal(hit.label, 1);
    checked(h);
    llmc_hnsw_free(h);
    free(vecs);
    free(alive);
    free(node_of);
}

static void test_churn(void **state)
{
    churn(0, false);
}

/* The same with the walk by int8 codes. */
static void test_churn_quantised(void **state)
{
    churn(1, false);
}

/* The same with a third of the in-lists lost before each round of deletes:
   those deletes find the in-links by the hunt, and the graph stays whole. */
static void test_churn_lost_inlists(void **state)
{
    churn(0, true);
}

/*
 * The in-lists after every single add and remove, not just after a batch:
 * a one-way in-link missing from its list, or a link both ways listed,
 * fails the check at the step that broke it. m 4 with a small beam prunes
 * lists on most adds (links come and go both ways); the graph grows to
 * 400 nodes, then removes and adds alternate at random, slots reused.
 */
static void test_inlists_every_step(void **state)
{
    enum { N = 400, STEPS = 3000 };
    llmc_hnsw_t *h = llmc_hnsw_new(DIM, &(llmc_hnsw_opts_t){.m = 4, .ef_construction = 16,
                                                            .seed = 11});
    uint32_t node_of[N];
    bool alive[N] = {false};
    float v[DIM];
    size_t removes = 0, listed = 0;
    assert_non_null(h);
    for (int step = 0; step < STEPS; step++) {
        size_t i = next() % N;
        if (alive[i] && (step < N ? false : next() % 2)) {
            llmc_hnsw_remove(h, node_of[i]);
            alive[i] = false;
            removes++;
        } else if (!alive[i]) {
            unit(v, DIM);
            assert_int_equal(llmc_hnsw_add(h, i, v, &node_of[i]), 0);
            alive[i] = true;
        }
        checked(h);
        for (uint32_t n = 0; n < h->used; n++)
            listed += live(h, n) ? *incnt_of(h, n) : 0;
    }
    assert_true(removes > STEPS / 4);
    assert_true(listed > 0); /* one-way links were listed, not only mutual ones */
    llmc_hnsw_free(h);
}

/*
 * An in-list grows to IN_MAX entries, each growth one step, and the next
 * entry drops it (LOST: freed, empty, its node's delete hunts) rather than
 * overflow the byte that keeps its size; a push to a LOST list is a no-op.
 */
static void test_inlist_limit(void **state)
{
    llmc_hnsw_t *h = llmc_hnsw_new(DIM, NULL);
    float v[DIM];
    uint32_t x;
    unit(v, DIM);
    assert_int_equal(llmc_hnsw_add(h, 1, v, &x), 0);
    for (uint32_t i = 0; i < IN_MAX; i++) {
        in_push(h, x, 1000 + i);
        assert_int_equal(*incnt_of(h, x), i + 1);
        unsigned want = i + 1 <= IN_FIRST ? IN_FIRST
                                          : IN_FIRST + (i + 1 - IN_FIRST + IN_STEP - 1) /
                                                           IN_STEP * IN_STEP;
        assert_int_equal(in_cap(h, x), want);
    }
    assert_int_equal(in_cap(h, x), IN_MAX);
    assert_int_equal((*inl_of(h, x))[IN_MAX - 1], 1000 + IN_MAX - 1);
    in_push(h, x, 7);
    assert_int_equal(in_cap(h, x), LOST);
    assert_null(*inl_of(h, x));
    assert_int_equal(*incnt_of(h, x), 0);
    in_push(h, x, 8);
    assert_int_equal(in_cap(h, x), LOST);
    checked(h); /* a LOST list is a valid state */
    llmc_hnsw_free(h);
}

/*
 * A vector's int8 code: each component within half a step of the float
 * (the step is max |v_i| / 127), the largest exactly +-127; the code's
 * dot with another code, scaled, within 0.02 of the float dot at 512
 * dimensions; every dot this CPU offers agrees with the portable one.
 */
static void test_quantise_round_trip(void **state)
{
    enum { D = 512 };
    float a[D], b[D];
    int8_t ca[D], cb[D];
    llmc_hnsw_t *h = llmc_hnsw_new(D, &(llmc_hnsw_opts_t){.quantize = 1});
    assert_non_null(h);
    for (int round = 0; round < 50; round++) {
        unit(a, D);
        unit(b, D);
        if (round % 2) /* sparse, as lexical vectors are */
            for (int i = 0; i < D; i++)
                if (next() % 8) {
                    a[i] = 0;
                    b[i] = i % 3 ? b[i] : 0;
                }
        float sa = quantise(a, D, ca), sb = quantise(b, D, cb), mx = 0;
        for (int i = 0; i < D; i++)
            mx = fabsf(a[i]) > mx ? fabsf(a[i]) : mx;
        bool full = false;
        for (int i = 0; i < D; i++) {
            assert_true(fabsf(ca[i] * sa - a[i]) <= sa / 2 + 1e-6f);
            full |= ca[i] == 127 || ca[i] == -127;
        }
        assert_true(full);
        assert_true(fabsf(sa * 127 - mx) < 1e-6f);
        float exact = dot(a, b, D), coarse = sa * sb * (float)dot8(ca, cb, D);
        assert_true(fabsf(h->dotf(a, b, D) - exact) < 1e-4f);
        assert_int_equal(h->dot8(ca, cb, D), dot8(ca, cb, D));
        assert_true(fabsf(coarse - exact) < 0.02f);
        for (unsigned n = 1; n < 40; n += 7) /* lengths that leave a tail */
            assert_int_equal(h->dot8(ca, cb, n), dot8(ca, cb, n));
    }
    float z[D] = {0};
    assert_true(quantise(z, D, ca) == 0 && ca[0] == 0);
    llmc_hnsw_free(h);
}

/* The check sees a self link, a dangling link and a wrong in-degree. */
static void test_check_finds_breaks(void **state)
{
    llmc_hnsw_t *h = llmc_hnsw_new(DIM, NULL);
    float v[DIM];
    uint32_t nodes[50];
    for (int i = 0; i < 50; i++) {
        unit(v, DIM);
        assert_int_equal(llmc_hnsw_add(h, i, v, &nodes[i]), 0);
    }
    checked(h);
    uint32_t *L = list_of(h, nodes[3], 0), saved = L[1];
    assert_true(L[0] > 0);
    L[1] = nodes[3];
    assert_int_equal(llmc_hnsw_check(h, NULL, 0), LLMC_ECORRUPT);
    L[1] = saved;
    checked(h);
    llmc_hnsw_remove(h, nodes[10]);
    checked(h);
    L = list_of(h, nodes[4], 0);
    saved = L[1];
    L[1] = nodes[10]; /* now a free slot */
    char why[160];
    assert_int_equal(llmc_hnsw_check(h, why, sizeof(why)), LLMC_ECORRUPT);
    assert_non_null(strstr(why, "dead"));
    L[1] = saved;
    uint32_t self = nodes[10]; /* the free stack made a loop */
    memcpy(blk(h, self) + h->off_label, &self, sizeof(self));
    assert_int_equal(llmc_hnsw_check(h, why, sizeof(why)), LLMC_ECORRUPT);
    assert_non_null(strstr(why, "free stack"));
    self = NO_SLOT;
    memcpy(blk(h, nodes[10]) + h->off_label, &self, sizeof(self));
    checked(h);
    uint32_t u = 0, ui, bad; /* a node with levels loses, then shares, its upper lists */
    while (u < 50 && (u == 10 || !*level_of(h, nodes[u])))
        u++;
    assert_true(u < 50);
    ui = up_idx(h, nodes[u]);
    bad = 0;
    memcpy(blk(h, nodes[u]) + h->off_up, &bad, sizeof(bad));
    assert_int_equal(llmc_hnsw_check(h, why, sizeof(why)), LLMC_ECORRUPT);
    assert_non_null(strstr(why, "upper-list entry"));
    bad = ui == 1 ? 2 : 1;
    memcpy(blk(h, nodes[u]) + h->off_up, &bad, sizeof(bad));
    assert_int_equal(llmc_hnsw_check(h, why, sizeof(why)), LLMC_ECORRUPT);
    assert_non_null(strstr(why, "not its own"));
    memcpy(blk(h, nodes[u]) + h->off_up, &ui, sizeof(ui));
    checked(h);
    (*indeg_of(h, nodes[5], 0))++;
    assert_int_equal(llmc_hnsw_check(h, why, sizeof(why)), LLMC_ECORRUPT);
    assert_non_null(strstr(why, "in-degree"));
    (*indeg_of(h, nodes[5], 0))--;
    checked(h);
    uint32_t o = 0; /* a node with two one-way in-links, and one with a link both ways */
    while (*incnt_of(h, nodes[o]) < 2)
        o++;
    uint32_t *in = *inl_of(h, nodes[o]);
    saved = in[0];
    in[0] = nodes[o]; /* it does not link to itself */
    assert_int_equal(llmc_hnsw_check(h, why, sizeof(why)), LLMC_ECORRUPT);
    assert_non_null(strstr(why, "in-list"));
    in[0] = saved;
    checked(h);
    (*incnt_of(h, nodes[o]))--; /* an in-link left out */
    assert_int_equal(llmc_hnsw_check(h, why, sizeof(why)), LLMC_ECORRUPT);
    assert_non_null(strstr(why, "in-degree"));
    (*incnt_of(h, nodes[o]))++;
    checked(h);
    uint32_t b = 0, *bl = NULL;
    for (;; b++) { /* its first out-link links back */
        bl = list_of(h, nodes[b], 0);
        if (*incnt_of(h, nodes[b]) < in_cap(h, nodes[b]) && bl[0] &&
            links0(h, bl[1], nodes[b]))
            break;
    }
    in = *inl_of(h, nodes[b]);
    in[(*incnt_of(h, nodes[b]))++] = bl[1]; /* a link both ways listed */
    assert_int_equal(llmc_hnsw_check(h, why, sizeof(why)), LLMC_ECORRUPT);
    assert_non_null(strstr(why, "which it links to"));
    (*incnt_of(h, nodes[b]))--;
    checked(h);
    llmc_hnsw_free(h);
}

/*
 * Searches from several threads at once while another deletes and adds,
 * under a reader-writer lock (searches read-held, the rest write-held), as
 * hnsw.h asks: no search returns a vector deleted before it began, each
 * answer is sorted, the graph checks whole after. Under ASan/TSan this is
 * also the proof that searches write only their own scratch.
 */
enum { CN = 3000, CREADERS = 4, CROUNDS = 300 };

typedef struct conc {
    llmc_hnsw_t *h;
    pthread_rwlock_t lk;
    float *vecs;
    unsigned char *alive;
    uint32_t *node_of;
    _Atomic int stop;
    size_t searches, bad;
} conc_t;

static void *conc_reader(void *arg)
{
    conc_t *c = arg;
    uint64_t r = (uint64_t)(uintptr_t)&r | 1;
    size_t searches = 0, bad = 0;
    while (!atomic_load(&c->stop)) {
        llmc_hnsw_hit_t hits[K];
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        pthread_rwlock_rdlock(&c->lk);
        size_t n = llmc_hnsw_search(c->h, c->vecs + (r % CN) * DIM, K, 32, hits);
        for (size_t i = 0; i < n; i++)
            bad += !c->alive[hits[i].label] || (i && hits[i - 1].score < hits[i].score);
        pthread_rwlock_unlock(&c->lk);
        searches++;
    }
    pthread_rwlock_wrlock(&c->lk);
    c->searches += searches;
    c->bad += bad;
    pthread_rwlock_unlock(&c->lk);
    return NULL;
}

static void concurrent(unsigned q8)
{
    conc_t c = {.vecs = malloc((size_t)CN * DIM * sizeof(float)), .alive = calloc(CN, 1),
                .node_of = calloc(CN, sizeof(uint32_t))};
    pthread_t th[CREADERS];
    c.h = llmc_hnsw_new(DIM, &(llmc_hnsw_opts_t){.m = 8, .ef_construction = 48, .quantize = q8});
    assert_non_null(c.h);
    /* writers first: glibc's default lets a stream of readers starve the
       writer (a server would want the same kind) */
    pthread_rwlockattr_t ka;
    pthread_rwlockattr_init(&ka);
    pthread_rwlockattr_setkind_np(&ka, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&c.lk, &ka);
    pthread_rwlockattr_destroy(&ka);
    for (size_t i = 0; i < CN; i++) {
        unit(c.vecs + i * DIM, DIM);
        if (i % 2 == 0) {
            assert_int_equal(llmc_hnsw_add(c.h, i, c.vecs + i * DIM, &c.node_of[i]), 0);
            c.alive[i] = 1;
        }
    }
    for (int t = 0; t < CREADERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, conc_reader, &c), 0);
    for (int round = 0; round < CROUNDS; round++) {
        size_t v = next() % CN;
        pthread_rwlock_wrlock(&c.lk);
        if (c.alive[v]) {
            llmc_hnsw_remove(c.h, c.node_of[v]);
            c.alive[v] = 0;
        } else {
            assert_int_equal(llmc_hnsw_add(c.h, v, c.vecs + v * DIM, &c.node_of[v]), 0);
            c.alive[v] = 1;
        }
        pthread_rwlock_unlock(&c.lk);
        if (round % 100 == 99) {
            pthread_rwlock_wrlock(&c.lk);
            checked(c.h);
            pthread_rwlock_unlock(&c.lk);
        }
    }
    atomic_store(&c.stop, 1);
    for (int t = 0; t < CREADERS; t++)
        pthread_join(th[t], NULL);
    fprintf(stderr, "%zu searches beside %d writes%s\n", c.searches, CROUNDS,
            q8 ? " (int8 walk)" : "");
    assert_true(c.searches > 0);
    assert_int_equal(c.bad, 0);
    checked(c.h);
    pthread_rwlock_destroy(&c.lk);
    llmc_hnsw_free(c.h);
    free(c.vecs);
    free(c.alive);
    free(c.node_of);
}

static void test_concurrent_searches(void **state)
{
    concurrent(0);
    concurrent(1);
}

/* With every pooled scratch area taken, a search makes its own for the
   call and finds the same. */
static void test_pool_exhausted(void **state)
{
    llmc_hnsw_t *h = llmc_hnsw_new(DIM, &(llmc_hnsw_opts_t){.quantize = 1});
    float v[DIM];
    uint32_t node;
    for (int i = 0; i < 300; i++) {
        unit(v, DIM);
        assert_int_equal(llmc_hnsw_add(h, i, v, &node), 0);
    }
    llmc_hnsw_hit_t a[K], b[K];
    size_t na = llmc_hnsw_search(h, v, K, 0, a);
    atomic_store(&h->busy, UINT32_MAX);
    size_t nb = llmc_hnsw_search(h, v, K, 0, b);
    atomic_store(&h->busy, 0);
    assert_int_equal(na, nb);
    assert_int_equal(a[0].label, 299);
    for (size_t i = 0; i < na; i++)
        assert_int_equal(a[i].label, b[i].label);
    llmc_hnsw_free(h);
}

/*
 * A graph that outgrows the heap threshold moves into huge-page mappings
 * and stays the same graph: a twin built from the same adds with the
 * threshold out of reach (on the heap throughout) finds the same answers
 * to the same searches; every vector and label reads back as added; the
 * check holds; what the mappings waste is under a huge page and a chunk
 * per mapping; a small graph maps nothing.
 */
static void huge_move(unsigned q8)
{
    enum { N = 30000, NQ = 50 };
    float *vecs = malloc((size_t)N * DIM * sizeof(float)), q[DIM];
    llmc_hnsw_opts_t o = {.m = 8, .ef_construction = 48, .seed = 3, .quantize = q8};
    llmc_hnsw_t *h = llmc_hnsw_new(DIM, &o), *twin = llmc_hnsw_new(DIM, &o);
    assert_non_null(h);
    assert_non_null(twin);
    twin->nodes.from = twin->floats.from = SIZE_MAX;
    for (size_t i = 0; i < N; i++) {
        uint32_t a, b;
        unit(vecs + i * DIM, DIM);
        assert_int_equal(llmc_hnsw_add(h, i, vecs + i * DIM, &a), 0);
        assert_int_equal(llmc_hnsw_add(twin, i, vecs + i * DIM, &b), 0);
        assert_int_equal(a, b);
        if (i == 10)
            assert_int_equal(llmc_hnsw_mapped(h), 0); /* small: all on the heap */
    }
    assert_true(h->nodes.huge && h->nodes.nreg > 1); /* moved, then filled a mapping */
    assert_true(!q8 || h->floats.huge);
    assert_false(twin->nodes.huge || twin->floats.huge);
    assert_int_equal(llmc_hnsw_mapped(twin), 0);
    assert_true(llmc_hnsw_mapped(h) > 0 && llmc_hnsw_bytes(h) > llmc_hnsw_mapped(h));
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(llmc_hnsw_label(h, i), i);
        assert_memory_equal(llmc_hnsw_vector(h, i), vecs + (size_t)i * DIM, DIM * sizeof(float));
    }
    for (int r = 0; r < NQ; r++) {
        llmc_hnsw_hit_t a[K], b[K];
        unit(q, DIM);
        size_t na = llmc_hnsw_search(h, q, K, 0, a), nb = llmc_hnsw_search(twin, q, K, 0, b);
        assert_int_equal(na, nb);
        for (size_t j = 0; j < na; j++) {
            assert_int_equal(a[j].label, b[j].label);
            assert_true(a[j].score == b[j].score);
        }
    }
    const arena_t *ar = &h->nodes;
    assert_true(arena_bytes(ar, h->nchunks) - h->nchunks * ar->chunk <
                HUGE_PAGE + ar->nreg * ar->chunk);
    checked(h);
    llmc_hnsw_free(h);
    llmc_hnsw_free(twin);
    free(vecs);
}

static void test_huge_move(void **state)
{
    huge_move(0);
    huge_move(1);
}

/* Visit marks past a huge page's worth move into a mapping and keep what
   they held; new marks read zero (never a stale epoch). */
static void test_marks_mapped(void **state)
{
    scratch_t *sc = calloc(1, sizeof(*sc));
    size_t small = 1000, big = HUGE_PAGE / sizeof(uint32_t) + 1;
    assert_true(marks_fit(sc, small));
    assert_int_equal(sc->vmap, 0);
    for (size_t i = 0; i < small; i++)
        sc->visit[i] = (uint32_t)i * 7 + 1;
    assert_true(marks_fit(sc, big));
    assert_true(sc->vmap >= HUGE_PAGE && sc->vmap % HUGE_PAGE == 0);
    assert_true(sc->vcap >= big && marks_bytes(sc) == sc->vmap);
    for (size_t i = 0; i < small; i++)
        assert_int_equal(sc->visit[i], (uint32_t)i * 7 + 1);
    for (size_t i = small; i < sc->vcap; i += 4099)
        assert_int_equal(sc->visit[i], 0);
    sc->visit[big - 1] = 5;
    size_t more = sc->vcap + 1;
    assert_true(marks_fit(sc, more)); /* mapping to a bigger mapping */
    assert_int_equal(sc->visit[big - 1], 5);
    assert_int_equal(sc->visit[more - 1], 0);
    scratch_free(sc);
}

/* Bad dimensions and m are refused. */
/* ---- the narrow walk widened near a similarity (llmc_hnsw_walk_t) ---- */

#define WALK_N 4000
#define WALK_K 4

static llmc_hnsw_t *walk_graph(float *vecs, unsigned quantize)
{
    llmc_hnsw_t *h = llmc_hnsw_new(
        DIM, &(llmc_hnsw_opts_t){.m = 8, .ef_construction = 64, .quantize = quantize});
    assert_non_null(h);
    for (uint32_t i = 0; i < WALK_N; i++) {
        uint32_t node;
        unit(vecs + (size_t)i * DIM, DIM);
        assert_int_equal(llmc_hnsw_add(h, i, vecs + (size_t)i * DIM, &node), 0);
    }
    return h;
}

/* How many of q's true WALK_K best are among found. */
static size_t walk_found(const float *vecs, const unsigned char *alive, const float *q,
                         const llmc_hnsw_hit_t *found, size_t n)
{
    uint64_t best[WALK_K];
    size_t m = brute(vecs, alive, WALK_N, q, WALK_K, best), hit = 0;
    for (size_t j = 0; j < m; j++)
        for (size_t i = 0; i < n; i++)
            hit += found[i].label == best[j];
    return hit;
}

/* Nothing found reaches near: the walk stays at ef_lo, and its finds are
   exactly a search's at that width. */
static void test_walk_nothing_near_stays_narrow(void **state)
{
    (void)state;
    float *vecs = malloc((size_t)WALK_N * DIM * sizeof(float));
    for (unsigned q8 = 0; q8 < 2; q8++) {
        llmc_hnsw_t *h = walk_graph(vecs, q8);
        for (int r = 0; r < 50; r++) {
            float q[DIM];
            unit(q, DIM);
            llmc_hnsw_hit_t a[WALK_K], b[WALK_K];
            llmc_hnsw_walk_t w = {.ef = 64, .ef_lo = 8, .near = 1.5f};
            size_t na = llmc_hnsw_search_walk(h, q, WALK_K, &w, a);
            size_t nb = llmc_hnsw_search(h, q, WALK_K, 8, b);
            assert_false(w.widened);
            assert_int_equal(na, nb);
            for (size_t i = 0; i < na; i++) {
                assert_int_equal(a[i].label, b[i].label);
                assert_true(a[i].score == b[i].score);
            }
        }
        llmc_hnsw_free(h);
    }
    free(vecs);
}

/* Something near: the walk widens, and finds the true best as well as a
   walk at the full width from the start (far better than the narrow one). */
static void test_walk_widened_finds_what_full_width_finds(void **state)
{
    (void)state;
    float *vecs = malloc((size_t)WALK_N * DIM * sizeof(float));
    unsigned char *alive = malloc(WALK_N);
    memset(alive, 1, WALK_N);
    for (unsigned q8 = 0; q8 < 2; q8++) {
        llmc_hnsw_t *h = walk_graph(vecs, q8);
        size_t wide = 0, full = 0, narrow = 0;
        for (int r = 0; r < 300; r++) {
            float q[DIM];
            unit(q, DIM);
            llmc_hnsw_hit_t a[WALK_K], b[WALK_K], c[WALK_K];
            llmc_hnsw_walk_t w = {.ef = 64, .ef_lo = 4, .near = -1.0f};
            size_t na = llmc_hnsw_search_walk(h, q, WALK_K, &w, a);
            assert_true(w.widened);
            wide += walk_found(vecs, alive, q, a, na);
            full += walk_found(vecs, alive, q, b, llmc_hnsw_search(h, q, WALK_K, 64, b));
            narrow += walk_found(vecs, alive, q, c, llmc_hnsw_search(h, q, WALK_K, 4, c));
        }
        /* of 1,200 true neighbours */
        assert_true(wide + 12 >= full);
        assert_true(wide > narrow + 100);
        assert_true(wide >= 1140); /* recall >= 0.95 */
        llmc_hnsw_free(h);
    }
    free(alive);
    free(vecs);
}

/* A stored vector asked again scores 1 and is found first, however narrow
   the first walk. */
static void test_walk_finds_a_stored_vector(void **state)
{
    (void)state;
    float *vecs = malloc((size_t)WALK_N * DIM * sizeof(float));
    llmc_hnsw_t *h = walk_graph(vecs, 1);
    for (uint32_t i = 0; i < WALK_N; i += 97) {
        llmc_hnsw_hit_t a[WALK_K];
        llmc_hnsw_walk_t w = {.ef = 32, .ef_lo = 4, .near = 0.5f};
        size_t n = llmc_hnsw_search_walk(h, vecs + (size_t)i * DIM, WALK_K, &w, a);
        assert_true(n >= 1);
        assert_int_equal(a[0].label, i);
        assert_true(a[0].score > 0.999f);
        assert_true(w.widened);
    }
    llmc_hnsw_free(h);
    free(vecs);
}

static void test_bad_options(void **state)
{
    assert_null(llmc_hnsw_new(0, NULL));
    assert_null(llmc_hnsw_new(5000, NULL));
    assert_null(llmc_hnsw_new(8, &(llmc_hnsw_opts_t){.m = 1}));
    assert_null(llmc_hnsw_new(8, &(llmc_hnsw_opts_t){.m = 65}));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recall_100k),
        cmocka_unit_test(test_recall_100k_quantised),
        cmocka_unit_test(test_churn),
        cmocka_unit_test(test_churn_quantised),
        cmocka_unit_test(test_churn_lost_inlists),
        cmocka_unit_test(test_inlists_every_step),
        cmocka_unit_test(test_inlist_limit),
        cmocka_unit_test(test_quantise_round_trip),
        cmocka_unit_test(test_concurrent_searches),
        cmocka_unit_test(test_pool_exhausted),
        cmocka_unit_test(test_check_finds_breaks),
        cmocka_unit_test(test_huge_move),
        cmocka_unit_test(test_marks_mapped),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_walk_nothing_near_stays_narrow),
        cmocka_unit_test(test_walk_widened_finds_what_full_width_finds),
        cmocka_unit_test(test_walk_finds_a_stored_vector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
