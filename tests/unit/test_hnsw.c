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

/* 100,000 random unit vectors: recall@10 of at least 0.95. */
static void test_recall_100k(void **state)
{
    enum { N = 100000 };
    float *vecs = malloc((size_t)N * DIM * sizeof(float));
    unsigned char *alive = malloc(N);
    llmc_hnsw_t *h = llmc_hnsw_new(DIM, &(llmc_hnsw_opts_t){.m = 12, .ef_construction = 64});
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
    fprintf(stderr, "recall@10 at 100k x %d, ef 64: %.4f\n", DIM, r);
    assert_true(r >= 0.95);
    llmc_hnsw_free(h);
    free(vecs);
    free(alive);
}

/*
 * Batches of adds, deletes and searches: the check holds after each, a
 * deleted vector is never found, recall stays up, freed slots are reused
 * (the slots used never pass the most vectors ever live), and deleting
 * everything leaves an empty, valid graph.
 */
static void test_churn(void **state)
{
    enum { N = 6000, BATCH = 400, DEL = 250 };
    float *vecs = malloc((size_t)N * DIM * sizeof(float));
    unsigned char *alive = calloc(N, 1);
    uint32_t *node_of = calloc(N, sizeof(*node_of));
    llmc_hnsw_t *h = llmc_hnsw_new(DIM, &(llmc_hnsw_opts_t){.m = 8, .ef_construction = 64,
                                                            .seed = 7});
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
    (*indeg_of(h, nodes[5], 0))++;
    assert_int_equal(llmc_hnsw_check(h, why, sizeof(why)), LLMC_ECORRUPT);
    assert_non_null(strstr(why, "in-degree"));
    (*indeg_of(h, nodes[5], 0))--;
    checked(h);
    llmc_hnsw_free(h);
}

/* Bad dimensions and m are refused. */
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
        cmocka_unit_test(test_churn),
        cmocka_unit_test(test_check_finds_breaks),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
