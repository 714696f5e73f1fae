/* Unit tests for the narrow walk widened near a similarity (semantic/hnsw.h,
   llmc_hnsw_walk_t): a walk that finds nothing near stays narrow and
   returns what a narrow search returns; one that does widens and finds
   what a wide search finds; a stored vector is always found. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "semantic/hnsw.h"

#define DIM 24
#define N 4000
#define K 4

static uint64_t rng = 0x853c49e6748fea9bull;

static void unit(float *v)
{
    double ss = 0;
    for (unsigned i = 0; i < DIM; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        v[i] = (float)((double)(rng % 20001) / 10000.0 - 1.0);
        ss += (double)v[i] * v[i];
    }
    for (unsigned i = 0; i < DIM; i++)
        v[i] = (float)(v[i] / sqrt(ss));
}

static float *vecs;

static llmc_hnsw_t *graph(unsigned quantize)
{
    llmc_hnsw_t *h =
        llmc_hnsw_new(DIM, &(llmc_hnsw_opts_t){.m = 8, .ef_construction = 64,
                                               .quantize = quantize});
    assert_non_null(h);
    for (uint32_t i = 0; i < N; i++) {
        uint32_t node;
        assert_int_equal(llmc_hnsw_add(h, i, vecs + (size_t)i * DIM, &node), 0);
    }
    return h;
}

/* Nothing found reaches near: the walk stays at ef_lo and its finds are
   exactly a search's at that width. */
static void test_nothing_near_stays_narrow(void **state)
{
    (void)state;
    for (unsigned q8 = 0; q8 < 2; q8++) {
        llmc_hnsw_t *h = graph(q8);
        for (int r = 0; r < 50; r++) {
            float q[DIM];
            unit(q);
            llmc_hnsw_hit_t a[K], b[K];
            llmc_hnsw_walk_t w = {.ef = 64, .ef_lo = 8, .near = 1.5f};
            size_t na = llmc_hnsw_search_walk(h, q, K, &w, a);
            size_t nb = llmc_hnsw_search(h, q, K, 8, b);
            assert_false(w.widened);
            assert_int_equal(na, nb);
            for (size_t i = 0; i < na; i++) {
                assert_int_equal(a[i].label, b[i].label);
                assert_true(a[i].score == b[i].score);
            }
        }
        llmc_hnsw_free(h);
    }
}

/* How many of the K best (by brute force) are among found. */
static size_t overlap(const float *q, const llmc_hnsw_hit_t *found, size_t n)
{
    uint64_t best[K];
    float bs[K];
    size_t m = 0;
    for (uint32_t i = 0; i < N; i++) {
        float s = 0;
        for (unsigned d = 0; d < DIM; d++)
            s += q[d] * vecs[(size_t)i * DIM + d];
        if (m == K && s <= bs[K - 1])
            continue;
        size_t j = m < K ? m++ : K - 1;
        while (j > 0 && bs[j - 1] < s) {
            bs[j] = bs[j - 1];
            best[j] = best[j - 1];
            j--;
        }
        bs[j] = s;
        best[j] = i;
    }
    size_t hit = 0;
    for (size_t j = 0; j < m; j++)
        for (size_t i = 0; i < n; i++)
            hit += found[i].label == best[j];
    return hit;
}

/* Something near: the walk widens, and the widened walk finds the true
   best about as well as a walk at the full width from the start (and
   better than the narrow one). */
static void test_something_near_widens_to_full_recall(void **state)
{
    (void)state;
    for (unsigned q8 = 0; q8 < 2; q8++) {
        llmc_hnsw_t *h = graph(q8);
        size_t wide = 0, full = 0, narrow = 0;
        for (int r = 0; r < 300; r++) {
            float q[DIM];
            unit(q);
            llmc_hnsw_hit_t a[K], b[K], c[K];
            llmc_hnsw_walk_t w = {.ef = 64, .ef_lo = 4, .near = -1.0f};
            size_t na = llmc_hnsw_search_walk(h, q, K, &w, a);
            assert_true(w.widened);
            wide += overlap(q, a, na);
            full += overlap(q, b, llmc_hnsw_search(h, q, K, 64, b));
            narrow += overlap(q, c, llmc_hnsw_search(h, q, K, 4, c));
        }
        /* of 1,200 true neighbours */
        assert_true(wide + 12 >= full);
        assert_true(wide > narrow);
        assert_true(wide >= 1140); /* recall >= 0.95 */
        llmc_hnsw_free(h);
    }
}

/* A stored vector asked again scores 1 and is found first, however narrow
   the first walk. */
static void test_a_stored_vector_is_found(void **state)
{
    (void)state;
    llmc_hnsw_t *h = graph(1);
    for (uint32_t i = 0; i < N; i += 97) {
        llmc_hnsw_hit_t a[K];
        llmc_hnsw_walk_t w = {.ef = 32, .ef_lo = 4, .near = 0.5f};
        size_t n = llmc_hnsw_search_walk(h, vecs + (size_t)i * DIM, K, &w, a);
        assert_true(n >= 1);
        assert_int_equal(a[0].label, i);
        assert_true(a[0].score > 0.999f);
        assert_true(w.widened);
    }
    llmc_hnsw_free(h);
}

int main(void)
{
    vecs = malloc((size_t)N * DIM * sizeof(float));
    for (uint32_t i = 0; i < N; i++)
        unit(vecs + (size_t)i * DIM);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_near_stays_narrow),
        cmocka_unit_test(test_something_near_widens_to_full_recall),
        cmocka_unit_test(test_a_stored_vector_is_found),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(vecs);
    return rc;
}
