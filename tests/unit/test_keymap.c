/* Unit tests for the key -> value map (llmc/keymap.h). The .c is included
   so the tests can check the table's invariants after every step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/core/keymap.c"

/* Every entry is found from its home without crossing a free slot, the
   count is the number of used slots, and the table is at most half full. */
static void check(const llmc_keymap_t *m)
{
    size_t used = 0;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->used[i])
            continue;
        used++;
        for (size_t j = home(m, &m->keys[i]); j != i; j = (j + 1) & (m->cap - 1))
            assert_true(m->used[j]);
        assert_int_equal(probe(m, &m->keys[i]), i);
    }
    assert_int_equal(used, m->count);
    assert_true(m->count <= m->max);
    assert_true(m->cap == 0 || m->count * 2 <= m->cap);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static llmc_key_t random_key(void)
{
    llmc_key_t k;
    for (size_t i = 0; i < LLMC_KEY_LEN; i += 8) {
        uint64_t r = next();
        memcpy(k.b + i, &r, 8);
    }
    return k;
}

/* A key whose first 8 bytes are `first` (so its home too), the rest `tag`. */
static llmc_key_t key_at(uint64_t first, uint8_t tag)
{
    llmc_key_t k;
    memset(k.b, tag, sizeof(k.b));
    memcpy(k.b, &first, 8);
    return k;
}

typedef struct val {
    uint32_t slot;
    float f;
} val_t;

static void test_insert_find_delete(void **state)
{
    (void)state;
    llmc_keymap_t m;
    llmc_keymap_init(&m, sizeof(val_t), 10);
    llmc_key_t a = random_key(), b = random_key();
    assert_null(llmc_keymap_find(&m, &a));
    assert_false(llmc_keymap_delete(&m, &a));
    void *v = NULL;
    assert_int_equal(llmc_keymap_insert(&m, &a, &v), 0);
    assert_int_equal(((val_t *)v)->slot, 0); /* a new value comes zeroed */
    *(val_t *)v = (val_t){.slot = 7, .f = 0.5f};
    assert_int_equal(llmc_keymap_insert(&m, &a, &v), LLMC_EEXIST);
    assert_int_equal(((val_t *)v)->slot, 7); /* untouched */
    val_t *got = llmc_keymap_find(&m, &a);
    assert_non_null(got);
    assert_int_equal(got->slot, 7);
    assert_true(got->f == 0.5f);
    assert_null(llmc_keymap_find(&m, &b));
    assert_int_equal(llmc_keymap_count(&m), 1);
    assert_true(llmc_keymap_delete(&m, &a));
    assert_false(llmc_keymap_delete(&m, &a));
    assert_null(llmc_keymap_find(&m, &a));
    assert_int_equal(llmc_keymap_count(&m), 0);
    check(&m);
    llmc_keymap_fini(&m);
    assert_null(llmc_keymap_find(&m, &a)); /* usable again after fini */
    assert_int_equal(llmc_keymap_insert(&m, &b, &v), 0);
    llmc_keymap_fini(&m);
}

/* The bound is the map's, whatever the table's size: an insert past it is
   refused and changes nothing, and a delete makes room again. */
static void test_bound(void **state)
{
    (void)state;
    llmc_keymap_t m;
    llmc_keymap_init(&m, sizeof(uint32_t), 3);
    llmc_key_t k[4];
    void *v;
    for (int i = 0; i < 4; i++)
        k[i] = random_key();
    for (int i = 0; i < 3; i++)
        assert_int_equal(llmc_keymap_insert(&m, &k[i], &v), 0);
    assert_int_equal(llmc_keymap_insert(&m, &k[3], &v), LLMC_EFULL);
    assert_null(llmc_keymap_find(&m, &k[3]));
    assert_int_equal(llmc_keymap_insert(&m, &k[1], &v), LLMC_EEXIST); /* present: not full */
    assert_true(llmc_keymap_delete(&m, &k[0]));
    assert_int_equal(llmc_keymap_insert(&m, &k[3], &v), 0);
    assert_int_equal(llmc_keymap_count(&m), 3);
    check(&m);
    llmc_keymap_fini(&m);
}

/* Growing keeps every entry and its value, and the table never passes half full. */
static void test_growth_keeps_everything(void **state)
{
    (void)state;
    enum { N = 5000 };
    static llmc_key_t keys[N];
    llmc_keymap_t m;
    llmc_keymap_init(&m, sizeof(uint32_t), N);
    size_t caps_seen = 0, last_cap = 0;
    for (uint32_t i = 0; i < N; i++) {
        void *v;
        keys[i] = random_key();
        assert_int_equal(llmc_keymap_insert(&m, &keys[i], &v), 0);
        memcpy(v, &i, sizeof(i));
        assert_true(m.count * 2 <= m.cap);
        if (m.cap != last_cap) {
            caps_seen++;
            last_cap = m.cap;
            check(&m);
        }
    }
    assert_true(caps_seen > 5);
    for (uint32_t i = 0; i < N; i++) {
        uint32_t *v = llmc_keymap_find(&m, &keys[i]);
        assert_non_null(v);
        assert_int_equal(*v, i);
    }
    check(&m);
    llmc_keymap_fini(&m);
}

/* Keys sharing a home make one run; with the home at the table's last slot
   the run wraps around to slot 0. Deleting from its start, middle and end
   must leave every other key findable (no hole cuts the run). */
static void test_deletion_chains_wrap(void **state)
{
    (void)state;
    llmc_keymap_t m;
    llmc_keymap_init(&m, sizeof(uint32_t), 8); /* 8 entries: the table stays 16 slots */
    void *v;
    llmc_key_t probe_key = random_key();
    assert_int_equal(llmc_keymap_insert(&m, &probe_key, &v), 0);
    assert_true(llmc_keymap_delete(&m, &probe_key));
    assert_int_equal(m.cap, 16);
    /* A first-8-bytes value whose home is the last slot, and one whose is 0. */
    uint64_t last = 0, zero = 0;
    bool have_last = false, have_zero = false;
    for (uint64_t x = 1; !(have_last && have_zero); x++) {
        llmc_key_t k = key_at(x, 0);
        size_t h = home(&m, &k);
        if (h == m.cap - 1 && !have_last)
            last = x, have_last = true;
        if (h == 0 && !have_zero)
            zero = x, have_zero = true;
    }
    for (int round = 0; round < 3; round++) {
        llmc_key_t k[7];
        for (uint8_t i = 0; i < 5; i++)
            k[i] = key_at(last, (uint8_t)(i + 1)); /* slots 15, 0, 1, 2, 3 */
        k[5] = key_at(zero, 1);                   /* home 0: pushed to 4 */
        k[6] = key_at(zero, 2);                   /* home 0: pushed to 5 */
        for (uint32_t i = 0; i < 7; i++) {
            assert_int_equal(llmc_keymap_insert(&m, &k[i], &v), 0);
            memcpy(v, &i, sizeof(i));
        }
        check(&m);
        /* Round 0 deletes the run's first (the one at home), 1 a middle one
           past the wrap, 2 the last of the shared home. */
        int del = round == 0 ? 0 : round == 1 ? 2 : 4;
        assert_true(llmc_keymap_delete(&m, &k[del]));
        check(&m);
        for (int i = 0; i < 7; i++) {
            uint32_t *got = llmc_keymap_find(&m, &k[i]);
            if (i == del) {
                assert_null(got);
                continue;
            }
            assert_non_null(got);
            assert_int_equal(*got, (uint32_t)i);
        }
        /* Delete the rest one by one, checking as the run shrinks. */
        for (int i = 6; i >= 0; i--)
            if (i != del) {
                assert_true(llmc_keymap_delete(&m, &k[i]));
                check(&m);
                for (int j = 0; j < i; j++)
                    if (j != del)
                        assert_non_null(llmc_keymap_find(&m, &k[j]));
            }
        assert_int_equal(m.count, 0);
    }
    llmc_keymap_fini(&m);
}

/* Random inserts and deletes over a small pool of keys (so the same keys
   come and go, and runs form and break), against a plain array. */
static void test_random_against_model(void **state)
{
    (void)state;
    enum { POOL = 400, STEPS = 60000, MAX = 300 };
    static llmc_key_t pool[POOL];
    static bool in[POOL];
    static uint32_t model[POOL];
    size_t count = 0;
    /* Half the pool shares its first 8 bytes with a neighbour: collisions. */
    for (int i = 0; i < POOL; i++) {
        pool[i] = random_key();
        if (i % 2)
            memcpy(pool[i].b, pool[i - 1].b, 8);
    }
    llmc_keymap_t m;
    llmc_keymap_init(&m, sizeof(uint32_t), MAX);
    for (uint32_t step = 0; step < STEPS; step++) {
        int i = (int)(next() % POOL);
        void *v;
        if (next() % 3 != 0) {
            int rc = llmc_keymap_insert(&m, &pool[i], &v);
            if (in[i]) {
                assert_int_equal(rc, LLMC_EEXIST);
                assert_int_equal(*(uint32_t *)v, model[i]);
            } else if (count == MAX) {
                assert_int_equal(rc, LLMC_EFULL);
            } else {
                assert_int_equal(rc, 0);
                memcpy(v, &step, sizeof(step));
                in[i] = true;
                model[i] = step;
                count++;
            }
        } else {
            assert_int_equal(llmc_keymap_delete(&m, &pool[i]), in[i]);
            if (in[i])
                count--;
            in[i] = false;
        }
        assert_int_equal(llmc_keymap_count(&m), count);
        if (step % 500 == 0) {
            check(&m);
            for (int j = 0; j < POOL; j++) {
                uint32_t *got = llmc_keymap_find(&m, &pool[j]);
                assert_int_equal(got != NULL, in[j]);
                if (got)
                    assert_int_equal(*got, model[j]);
            }
        }
    }
    /* Iteration visits each live entry exactly once, with its value. */
    size_t pos = 0, seen = 0;
    const llmc_key_t *k;
    void *v;
    while (llmc_keymap_next(&m, &pos, &k, &v)) {
        int j = 0;
        while (j < POOL && memcmp(pool[j].b, k->b, LLMC_KEY_LEN) != 0)
            j++;
        assert_true(j < POOL && in[j]);
        assert_int_equal(*(uint32_t *)v, model[j]);
        seen++;
    }
    assert_int_equal(seen, count);
    llmc_keymap_fini(&m);
}

/* Values up to the largest size keep all their bytes through growth and shifts. */
static void test_wide_values(void **state)
{
    (void)state;
    llmc_keymap_t m;
    llmc_keymap_init(&m, LLMC_KEYMAP_MAX_VALUE, 1000);
    llmc_key_t keys[200];
    for (int i = 0; i < 200; i++) {
        void *v;
        keys[i] = random_key();
        assert_int_equal(llmc_keymap_insert(&m, &keys[i], &v), 0);
        memset(v, i, LLMC_KEYMAP_MAX_VALUE);
    }
    for (int i = 0; i < 200; i += 2)
        assert_true(llmc_keymap_delete(&m, &keys[i]));
    for (int i = 1; i < 200; i += 2) {
        uint8_t want[LLMC_KEYMAP_MAX_VALUE];
        memset(want, i, sizeof(want));
        uint8_t *got = llmc_keymap_find(&m, &keys[i]);
        assert_non_null(got);
        assert_memory_equal(got, want, sizeof(want));
    }
    check(&m);
    llmc_keymap_fini(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_find_delete),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_growth_keeps_everything),
        cmocka_unit_test(test_deletion_chains_wrap),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_wide_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
