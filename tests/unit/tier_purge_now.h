/*
 * tier_purge_now.h: for unit tests of tiers that answer a purge before
 * returning (memory, disk): the count the completion reported. Include
 * after cmocka.h and llmc/tier.h.
 */
#ifndef TIER_PURGE_NOW_H
#define TIER_PURGE_NOW_H

static void purge_now_count(void *arg, size_t removed)
{
    *(size_t *)arg = removed;
}

/* Purges sel from t and returns what its completion said; fails the test
   when the completion did not run before the purge returned. */
static size_t purge_now(llmc_tier_t *t, const llmc_purge_t *sel)
{
    size_t n = (size_t)-1;
    t->ops->purge(t, 0, sel, purge_now_count, &n);
    assert_true(n != (size_t)-1);
    return n;
}

#endif
