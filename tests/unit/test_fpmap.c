/* Unit tests for the fingerprint -> key map (llmc/fpmap.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "llmc/fpmap.h"

static llmc_key_t k(uint8_t fill, uint8_t first)
{
    llmc_key_t key;
    memset(key.b, fill, sizeof(key.b));
    key.b[0] = first;
    return key;
}

static void test_put_then_get(void **state)
{
    (void)state;
    llmc_fpmap_t *m = llmc_fpmap_new(128);
    llmc_key_t fp = k(1, 7), key = k(2, 9), out;
    uint32_t flags = 0;
    assert_false(llmc_fpmap_get(m, &fp, &out, &flags));
    llmc_fpmap_put(m, &fp, &key, 3);
    assert_true(llmc_fpmap_get(m, &fp, &out, &flags));
    assert_memory_equal(out.b, key.b, LLMC_KEY_LEN);
    assert_int_equal(flags, 3);
    llmc_fpmap_free(m);
}

/* Two fingerprints sharing a slot: the newer wins, the older is forgotten,
   and neither is ever answered with the other's key. */
static void test_same_slot_replaces_never_confuses(void **state)
{
    (void)state;
    llmc_fpmap_t *m = llmc_fpmap_new(64);
    llmc_key_t a = k(1, 5), b = k(1, 5), ka = k(0xa, 0), kb = k(0xb, 0), out;
    b.b[31] = 0xff; /* same first 8 bytes: same slot; different fingerprint */
    uint32_t flags;
    llmc_fpmap_put(m, &a, &ka, 1);
    llmc_fpmap_put(m, &b, &kb, 2);
    assert_false(llmc_fpmap_get(m, &a, &out, &flags));
    assert_true(llmc_fpmap_get(m, &b, &out, &flags));
    assert_memory_equal(out.b, kb.b, LLMC_KEY_LEN);
    llmc_fpmap_free(m);
}

static void test_many_distinct(void **state)
{
    (void)state;
    llmc_fpmap_t *m = llmc_fpmap_new(4096);
    int found = 0;
    for (int i = 0; i < 1000; i++) {
        llmc_key_t fp = k((uint8_t)i, (uint8_t)(i * 37)), key = k((uint8_t)(i + 1), 0);
        fp.b[1] = (uint8_t)(i >> 8);
        llmc_fpmap_put(m, &fp, &key, 0);
    }
    for (int i = 0; i < 1000; i++) {
        llmc_key_t fp = k((uint8_t)i, (uint8_t)(i * 37)), out;
        fp.b[1] = (uint8_t)(i >> 8);
        uint32_t flags;
        if (llmc_fpmap_get(m, &fp, &out, &flags)) {
            assert_int_equal(out.b[5], (uint8_t)(i + 1));
            found++;
        }
    }
    assert_true(found > 500); /* some slots collide and forget; most stay */
    llmc_fpmap_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_then_get),
        cmocka_unit_test(test_same_slot_replaces_never_confuses),
        cmocka_unit_test(test_many_distinct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
