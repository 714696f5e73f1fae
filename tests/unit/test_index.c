/* Unit tests for the semantic tier's vector index (semantic/index.h). The
   .c is included so a test can break an invariant and see the check say so. */
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

#include "semantic/index.c"

#define DIM 16

static llmc_key_t pk(uint8_t n)
{
    llmc_key_t k;
    memset(k.b, 0, sizeof(k.b));
    k.b[31] = n; /* the first bytes equal: the key hash must use all 32 */
    return k;
}

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

/* The unit vector along axis a. */
static void axis(float *v, unsigned a)
{
    memset(v, 0, DIM * sizeof(float));
    v[a] = 1.0f;
}

static void checked(const llmc_vindex_t *ix)
{
    char why[160] = "";
    int rc = llmc_vindex_check(ix, why, sizeof(why));
    if (rc)
        fprintf(stderr, "check: %s\n", why);
    assert_int_equal(rc, 0);
}

static void test_insert_search_best_first(void **state)
{
    (void)state;
    llmc_vindex_t *ix = llmc_vindex_new(DIM);
    llmc_key_t p = pk(1);
    float v[DIM], q[DIM];
    llmc_vindex_hit_t hits[4];

    for (unsigned a = 0; a < 3; a++) {
        axis(v, a);
        assert_int_equal(llmc_vindex_insert(ix, &p, 100 + a, v), 0);
    }
    /* q leans to axis 1, then axis 2, not at all to axis 0. */
    memset(q, 0, sizeof(q));
    q[1] = 0.8f;
    q[2] = 0.6f;
    assert_int_equal(llmc_vindex_search(ix, &p, q, 2, hits), 2);
    assert_int_equal(hits[0].id, 101);
    assert_true(fabsf(hits[0].score - 0.8f) < 1e-6f);
    assert_int_equal(hits[1].id, 102);
    assert_int_equal(llmc_vindex_search(ix, &p, q, 4, hits), 3);
    assert_int_equal(hits[2].id, 100);
    assert_true(fabsf(hits[2].score) < 1e-6f);
    assert_int_equal(llmc_vindex_search(ix, &p, q, 0, hits), 0);
    assert_int_equal(llmc_vindex_count(ix), 3);
    checked(ix);
    llmc_vindex_free(ix);
}

static void test_partitions_never_meet(void **state)
{
    (void)state;
    llmc_vindex_t *ix = llmc_vindex_new(DIM);
    llmc_key_t a = pk(1), b = pk(2), c = pk(3);
    float v[DIM];
    llmc_vindex_hit_t hits[2];

    axis(v, 5);
    assert_int_equal(llmc_vindex_insert(ix, &a, 1, v), 0);
    assert_int_equal(llmc_vindex_insert(ix, &b, 2, v), 0);
    assert_int_equal(llmc_vindex_partitions(ix), 2);
    assert_int_equal(llmc_vindex_search(ix, &a, v, 2, hits), 1);
    assert_int_equal(hits[0].id, 1);
    assert_int_equal(llmc_vindex_search(ix, &b, v, 2, hits), 1);
    assert_int_equal(hits[0].id, 2);
    assert_int_equal(llmc_vindex_search(ix, &c, v, 2, hits), 0);
    checked(ix);
    llmc_vindex_free(ix);
}

static void test_same_id_replaces_or_moves(void **state)
{
    (void)state;
    llmc_vindex_t *ix = llmc_vindex_new(DIM);
    llmc_key_t a = pk(1), b = pk(2);
    float v[DIM], w[DIM];
    llmc_vindex_hit_t hits[2];

    axis(v, 0);
    axis(w, 1);
    assert_int_equal(llmc_vindex_insert(ix, &a, 7, v), 0);
    assert_int_equal(llmc_vindex_insert(ix, &a, 7, w), 0);
    assert_int_equal(llmc_vindex_count(ix), 1);
    assert_int_equal(llmc_vindex_search(ix, &a, w, 2, hits), 1);
    assert_true(hits[0].score > 0.99f);
    /* Into another partition: gone from the first, which is freed. */
    assert_int_equal(llmc_vindex_insert(ix, &b, 7, v), 0);
    assert_int_equal(llmc_vindex_count(ix), 1);
    assert_int_equal(llmc_vindex_partitions(ix), 1);
    assert_int_equal(llmc_vindex_partition_count(ix, &a), 0);
    assert_int_equal(llmc_vindex_partition_count(ix, &b), 1);
    checked(ix);
    llmc_vindex_free(ix);
}

static void test_delete_is_real(void **state)
{
    (void)state;
    llmc_vindex_t *ix = llmc_vindex_new(DIM);
    llmc_key_t p = pk(9);
    float v[DIM];
    llmc_vindex_hit_t hits[DIM];

    for (unsigned a = 0; a < 10; a++) {
        axis(v, a);
        assert_int_equal(llmc_vindex_insert(ix, &p, a, v), 0);
    }
    /* Deleting slot 3 moves the last vector (id 9) into it. */
    assert_int_equal(llmc_vindex_delete(ix, 3), 0);
    assert_int_equal(llmc_vindex_delete(ix, 3), LLMC_ENOENT);
    checked(ix);
    assert_int_equal(llmc_vindex_partition_count(ix, &p), 9);
    axis(v, 9);
    assert_int_equal(llmc_vindex_search(ix, &p, v, 1, hits), 1);
    assert_int_equal(hits[0].id, 9);
    assert_true(hits[0].score > 0.99f);
    axis(v, 3);
    assert_int_equal(llmc_vindex_search(ix, &p, v, 1, hits), 1);
    assert_true(hits[0].score < 0.01f); /* nothing left along axis 3 */
    for (unsigned a = 0; a < 10; a++)
        if (a != 3)
            assert_int_equal(llmc_vindex_delete(ix, a), 0);
    assert_int_equal(llmc_vindex_count(ix), 0);
    assert_int_equal(llmc_vindex_partitions(ix), 0);
    checked(ix);
    llmc_vindex_free(ix);
}

static void test_refuses_bad_vectors(void **state)
{
    (void)state;
    llmc_vindex_t *ix = llmc_vindex_new(DIM);
    llmc_key_t p = pk(1);
    float v[DIM];

    assert_null(llmc_vindex_new(0));
    assert_null(llmc_vindex_new(5000));
    memset(v, 0, sizeof(v));
    assert_int_equal(llmc_vindex_insert(ix, &p, 1, v), LLMC_EINVAL);
    axis(v, 0);
    v[0] = 2.0f;
    assert_int_equal(llmc_vindex_insert(ix, &p, 1, v), LLMC_EINVAL);
    v[0] = NAN;
    assert_int_equal(llmc_vindex_insert(ix, &p, 1, v), LLMC_EINVAL);
    assert_int_equal(llmc_vindex_count(ix), 0);
    assert_int_equal(llmc_vindex_delete(ix, 1), LLMC_ENOENT);
    checked(ix);
    llmc_vindex_free(ix);
}

static int by_score(const void *a, const void *b)
{
    const llmc_vindex_hit_t *x = a, *y = b;
    return better(x->score, x->id, y->score, y->id) ? -1 : better(y->score, y->id, x->score, x->id);
}

/* Random inserts, replaces, moves and deletes over a few partitions, against
   a plain model; after each step the check passes, and every few steps each
   partition's top 5 equals a brute-force top 5 over the model. */
#define NID 600
#define NPART 7
#define CDIM 32
static void test_churn_against_model(void **state)
{
    (void)state;
    static float model[NID][CDIM];
    static int where[NID]; /* partition + 1, 0: absent */
    llmc_vindex_t *ix = llmc_vindex_new(CDIM);
    size_t live = 0;

    memset(where, 0, sizeof(where));
    for (int step = 0; step < 6000; step++) {
        uint64_t id = next() % NID;
        if (next() % 3 == 0) {
            int rc = llmc_vindex_delete(ix, id);
            assert_int_equal(rc, where[id] ? 0 : LLMC_ENOENT);
            live -= where[id] != 0;
            where[id] = 0;
        } else {
            int part = (int)(next() % NPART);
            llmc_key_t k = pk((uint8_t)part);
            unit(model[id], CDIM);
            assert_int_equal(llmc_vindex_insert(ix, &k, id, model[id]), 0);
            live += where[id] == 0;
            where[id] = part + 1;
        }
        assert_int_equal(llmc_vindex_count(ix), live);
        if (step % 50 == 0)
            checked(ix);
        if (step % 200 != 0)
            continue;
        for (int part = 0; part < NPART; part++) {
            llmc_key_t k = pk((uint8_t)part);
            float q[CDIM];
            llmc_vindex_hit_t hits[5], want[NID];
            size_t nw = 0;
            unit(q, CDIM);
            for (uint64_t i = 0; i < NID; i++)
                if (where[i] == part + 1)
                    want[nw++] = (llmc_vindex_hit_t){
                        .id = i, .score = llmc_hnsw_dot_fn()(q, model[i], CDIM)};
            qsort(want, nw, sizeof(*want), by_score);
            if (nw > 5)
                nw = 5;
            size_t n = llmc_vindex_search(ix, &k, q, 5, hits);
            assert_int_equal(n, nw);
            for (size_t j = 0; j < n; j++) {
                assert_int_equal(hits[j].id, want[j].id);
                assert_true(hits[j].score == want[j].score);
            }
        }
    }
    checked(ix);
    llmc_vindex_free(ix);
}

/* The check is able to fail: each invariant broken by hand is reported. */
static void test_check_sees_corruption(void **state)
{
    (void)state;
    llmc_vindex_t *ix = llmc_vindex_new(DIM);
    llmc_key_t p = pk(1);
    float v[DIM];
    char why[160];

    for (unsigned a = 0; a < 4; a++) {
        axis(v, a);
        assert_int_equal(llmc_vindex_insert(ix, &p, a, v), 0);
    }
    part_t *pt = ix->parts[part_find(ix, &p)];
    checked(ix);

    pt->vecs[0] = 0.5f; /* not normalised any more */
    assert_int_equal(llmc_vindex_check(ix, why, sizeof(why)), LLMC_ECORRUPT);
    assert_non_null(strstr(why, "not normalised"));
    pt->vecs[0] = 1.0f;
    checked(ix);

    uint64_t id = pt->ids[1];
    pt->ids[1] = pt->ids[2]; /* two slots claim one id */
    assert_int_equal(llmc_vindex_check(ix, why, sizeof(why)), LLMC_ECORRUPT);
    pt->ids[1] = id;
    checked(ix);

    ix->rcount++;
    assert_int_equal(llmc_vindex_check(ix, NULL, 0), LLMC_ECORRUPT);
    ix->rcount--;
    checked(ix);
    llmc_vindex_free(ix);
}

/*
 * A partition that reaches the threshold moves into a graph: inserts,
 * replacements, moves between partitions and deletes keep the check true;
 * each vector searched for is found first; a deleted id is never found;
 * other partitions stay scanned; an emptied graph partition is freed.
 */
static void big_partition(unsigned q8, unsigned ef)
{
    enum { N = 600, T = 64 };
    llmc_vindex_t *ix = llmc_vindex_new_opts(
        DIM, &(llmc_vindex_opts_t){.hnsw_threshold = T, .quantize = q8, .ef_search = ef});
    llmc_key_t a = pk(1), b = pk(2);
    static float vecs[N][DIM];
    unsigned char alive[N] = {0};
    llmc_vindex_hit_t hits[8];
    assert_non_null(ix);
    for (int i = 0; i < N; i++) {
        unit(vecs[i], DIM);
        assert_int_equal(llmc_vindex_insert(ix, &a, (uint64_t)i, vecs[i]), 0);
        alive[i] = 1;
        assert_true(ix->parts[part_find(ix, &a)]->g == NULL || i + 1 >= T);
        if (i % 50 == 0)
            checked(ix);
    }
    assert_non_null(ix->parts[part_find(ix, &a)]->g);
    assert_int_equal(llmc_vindex_insert(ix, &b, 100000, vecs[0]), 0);
    assert_null(ix->parts[part_find(ix, &b)]->g); /* small: still scanned */
    checked(ix);
    /* Replace in place, move out, delete: a third of the vectors each. */
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0) {
            unit(vecs[i], DIM);
            assert_int_equal(llmc_vindex_insert(ix, &a, (uint64_t)i, vecs[i]), 0);
        } else if (i % 3 == 1) {
            assert_int_equal(llmc_vindex_delete(ix, (uint64_t)i), 0);
            alive[i] = 0;
        } else if (i % 9 == 2) {
            assert_int_equal(llmc_vindex_insert(ix, &b, (uint64_t)i, vecs[i]), 0);
            alive[i] = 0; /* gone from a */
        }
        if (i % 40 == 0)
            checked(ix);
    }
    checked(ix);
    size_t live_n = 0;
    for (int i = 0; i < N; i++)
        live_n += alive[i];
    assert_int_equal(llmc_vindex_partition_count(ix, &a), live_n);
    size_t self = 0;
    for (int i = 0; i < N; i++) {
        size_t n = llmc_vindex_search(ix, &a, vecs[i], 8, hits);
        for (size_t j = 0; j < n; j++) {
            float exact = 0;
            for (unsigned d = 0; d < DIM; d++)
                exact += vecs[i][d] * vecs[hits[j].id][d];
            assert_true(alive[hits[j].id]);
            assert_true(j == 0 || hits[j - 1].score >= hits[j].score);
            assert_true(fabsf(hits[j].score - exact) < 1e-4f); /* the float score, never a code's */
        }
        if (alive[i]) {
            assert_true(n > 0);
            self += hits[0].id == (uint64_t)i;
        }
    }
    assert_true(self * 100 >= live_n * 99); /* a vector finds itself */
    for (int i = 0; i < N; i++)
        if (alive[i])
            assert_int_equal(llmc_vindex_delete(ix, (uint64_t)i), 0);
    assert_int_equal(llmc_vindex_partition_count(ix, &a), 0);
    assert_int_equal(llmc_vindex_partitions(ix), 1); /* b only */
    checked(ix);
    llmc_vindex_free(ix);
}

static void test_big_partition_moves_to_a_graph(void **state)
{
    big_partition(0, 0);
}

/* The same with the tier's options: walks by int8 codes, a narrow beam. */
static void test_big_partition_quantised(void **state)
{
    big_partition(1, LLMC_VINDEX_FEW_EF);
}

/*
 * Searches of a graph partition and of a scanned one from several threads
 * while nothing writes (index.h: many searches, one writer): every thread
 * gets the answers a lone search gets.
 */
enum { TN = 1500, TTHREADS = 4 };
static float tvecs[TN][DIM];
static llmc_vindex_hit_t tsolo[TN][4];

static void *searcher(void *arg)
{
    const llmc_vindex_t *ix = arg;
    llmc_key_t a = pk(1);
    size_t bad = 0;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < TN; i++) {
            llmc_vindex_hit_t hits[4];
            size_t n = llmc_vindex_search(ix, &a, tvecs[i], 4, hits);
            bad += n != 4;
            for (size_t j = 0; j < n; j++) /* fields: the padding is not the answer */
                bad += hits[j].id != tsolo[i][j].id || hits[j].score != tsolo[i][j].score;
        }
    return (void *)(uintptr_t)bad;
}

static void test_concurrent_searches(void **state)
{
    llmc_vindex_t *ix = llmc_vindex_new_opts(DIM, &(llmc_vindex_opts_t){.quantize = 1});
    llmc_key_t a = pk(1);
    pthread_t th[TTHREADS];
    for (int i = 0; i < TN; i++) {
        unit(tvecs[i], DIM);
        assert_int_equal(llmc_vindex_insert(ix, &a, (uint64_t)i, tvecs[i]), 0);
    }
    assert_non_null(ix->parts[part_find(ix, &a)]->g);
    for (int i = 0; i < TN; i++)
        assert_int_equal(llmc_vindex_search(ix, &a, tvecs[i], 4, tsolo[i]), 4);
    for (int t = 0; t < TTHREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, searcher, ix), 0);
    for (int t = 0; t < TTHREADS; t++) {
        void *bad;
        pthread_join(th[t], &bad);
        assert_int_equal((uintptr_t)bad, 0);
    }
    checked(ix);
    llmc_vindex_free(ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_search_best_first),
        cmocka_unit_test(test_partitions_never_meet),
        cmocka_unit_test(test_same_id_replaces_or_moves),
        cmocka_unit_test(test_delete_is_real),
        cmocka_unit_test(test_refuses_bad_vectors),
        cmocka_unit_test(test_churn_against_model),
        cmocka_unit_test(test_check_sees_corruption),
        cmocka_unit_test(test_big_partition_moves_to_a_graph),
        cmocka_unit_test(test_big_partition_quantised),
        cmocka_unit_test(test_concurrent_searches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
