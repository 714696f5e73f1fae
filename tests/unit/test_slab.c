/*
 * test_slab.c: the slab allocator for entry blocks (src/core/slab.c).
 *
 * Checks that every size gets a block of the right class that it may fill,
 * that freed blocks are reused and a page is given back with its last block
 * (its memory released, its range kept mapped and reused), that big sizes,
 * and any size when no page can be mapped, go to malloc and are counted
 * apart, and that threads allocating and freeing each other's blocks leave
 * the totals at zero.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/checkers.h"
#include "llmc/slab.h"


/* Mirrors slab.c's spacing: the most a block may exceed what was asked. */
static size_t step_of(size_t n)
{
    return n <= 1024 ? 16 : 64;
}

/* No block is live; each class may keep one emptied page as its spare. */
static void assert_empty(llmc_slab_t *s)
{
    llmc_slab_stats_t st;
    llmc_slab_stats(s, &st);
    assert_true(st.pages <= 112);
    assert_int_equal(st.page_bytes, st.pages * 65536);
    assert_int_equal(st.blocks, 0);
    assert_int_equal(st.used_bytes, 0);
    assert_int_equal(st.big_blocks, 0);
    assert_int_equal(st.big_bytes, 0);
}

struct held {
    unsigned char *p;
    size_t n, size;
};

/* Every size at and around each class boundary, all held at once: each
   block fits its request tightly, is 16-aligned, can be filled whole, and
   overlaps no other (the fills survive until every block is written). */
static void test_every_class_boundary(void **state)
{
    (void)state;
    llmc_slab_t *s = llmc_slab_new();
    assert_non_null(s);
    struct held h[3 * 112 + 1];
    size_t nh = 0;
    size_t sizes[] = {0, 1};
    for (size_t i = 0; i < 2; i++)
        h[nh++] = (struct held){.n = sizes[i]};
    for (size_t b = 16; b <= LLMC_SLAB_MAX; b += b < 1024 ? 16 : 64) {
        h[nh++] = (struct held){.n = b - 1};
        h[nh++] = (struct held){.n = b};
        if (b < LLMC_SLAB_MAX)
            h[nh++] = (struct held){.n = b + 1};
    }
    assert_true(nh <= sizeof(h) / sizeof(h[0]));

    size_t used = 0;
    for (size_t i = 0; i < nh; i++) {
        h[i].p = llmc_slab_alloc(s, h[i].n, &h[i].size);
        assert_non_null(h[i].p);
        assert_true(h[i].size >= (h[i].n ? h[i].n : 1));
        assert_true(h[i].size < h[i].n + step_of(h[i].n) || h[i].n == 0);
        assert_true(h[i].size <= LLMC_SLAB_MAX);
        assert_int_equal((uintptr_t)h[i].p % 16, 0);
        memset(h[i].p, (int)(i & 0xff), h[i].size);
        used += h[i].size;
    }
    for (size_t i = 0; i < nh; i++)
        for (size_t j = 0; j < h[i].size; j++)
            assert_int_equal(h[i].p[j], i & 0xff);

    llmc_slab_stats_t st;
    llmc_slab_stats(s, &st);
    assert_int_equal(st.blocks, nh);
    assert_int_equal(st.used_bytes, used);
    assert_int_equal(st.big_blocks, 0);
    assert_true(st.pages >= 112 && st.page_bytes >= used);

    for (size_t i = 0; i < nh; i++)
        llmc_slab_free(s, h[i].p, h[i].size);
    assert_empty(s);
    llmc_slab_destroy(s);
}

/* A freed block is the next one its class hands out (a page's free list is
   last in, first out), and never while it is still held. */
static void test_free_and_reuse(void **state)
{
    (void)state;
    llmc_slab_t *s = llmc_slab_new();
    size_t sa, sb, sc;
    void *a = llmc_slab_alloc(s, 500, &sa);
    void *b = llmc_slab_alloc(s, 500, &sb);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_int_equal(sa, 512);
    llmc_slab_free(s, a, sa);
    void *c = llmc_slab_alloc(s, 497, &sc);
    assert_ptr_equal(c, a);
    assert_int_equal(sc, 512);
    llmc_slab_free(s, b, sb);
    llmc_slab_free(s, c, sc);
    assert_empty(s);
    llmc_slab_destroy(s);
}

/* Fills a page and starts a second. An emptied page becomes its class's
   one spare (still mapped); a page emptied while the class has a spare goes
   back to the system; the next page the class needs is the spare. */
static void test_page_released_when_empty(void **state)
{
    (void)state;
    llmc_slab_t *s = llmc_slab_new();
    llmc_slab_stats_t st;
    enum { MAX = 4096 };
    void *p[MAX];
    size_t size = 0, n = 0;

    do {
        assert_true(n < MAX);
        p[n] = llmc_slab_alloc(s, 64, &size);
        assert_non_null(p[n]);
        n++;
        llmc_slab_stats(s, &st);
    } while (st.pages < 2);
    size_t per_page = n - 1;
    assert_true(per_page > 900); /* (64 KiB - header) / 64 */

    /* All but one block of the first page: it stays. */
    for (size_t i = 0; i + 1 < per_page; i++)
        llmc_slab_free(s, p[i], size);
    llmc_slab_stats(s, &st);
    assert_int_equal(st.pages, 2);
    assert_int_equal(st.blocks, 2);
    /* Its last block: the page becomes the spare and stays mapped. */
    llmc_slab_free(s, p[per_page - 1], size);
    llmc_slab_stats(s, &st);
    assert_int_equal(st.pages, 2);
    assert_int_equal(st.blocks, 1);
    assert_int_equal(st.used_bytes, 64);
    /* The second page's last block: the class has its spare, so it goes. */
    llmc_slab_free(s, p[per_page], size);
    llmc_slab_stats(s, &st);
    assert_int_equal(st.pages, 1);
    assert_int_equal(st.blocks, 0);
    /* The next block comes from the spare, not a new page. */
    void *q = llmc_slab_alloc(s, 64, &size);
    assert_non_null(q);
    llmc_slab_stats(s, &st);
    assert_int_equal(st.pages, 1);
    memset(q, 0x5a, size);
    llmc_slab_free(s, q, size);
    assert_empty(s);
    llmc_slab_destroy(s);
}

/* Lines of /proc/self/maps: the process's mapping areas. */
static int count_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    int n = 0, ch;
    assert_non_null(f);
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

/* 4 KiB pages of [p, p + len) that are resident. */
static size_t resident(void *p, size_t len)
{
    unsigned char vec[16];
    size_t n = 0;
    assert_true(len / 4096 <= sizeof(vec));
    assert_int_equal(mincore(p, len, vec), 0);
    for (size_t i = 0; i < len / 4096; i++)
        n += vec[i] & 1;
    return n;
}

/* Eviction frees blocks all over the slab. Emptying every other page must
   give the memory back without splitting the mapping into one area per
   hole, and the next page any class needs must come from a released one. */
static void test_released_pages_stay_mapped_and_are_reused(void **state)
{
    (void)state;
    enum { PAGES = 40, MAX = PAGES * 1100 };
    static void *p[MAX];
    static uintptr_t pg[MAX];
    llmc_slab_t *s = llmc_slab_new();
    llmc_slab_stats_t st;
    size_t size = 0, n = 0;

    do {
        assert_true(n < MAX);
        p[n] = llmc_slab_alloc(s, 64, &size);
        assert_non_null(p[n]);
        memset(p[n], 0xa5, size);
        pg[n] = (uintptr_t)p[n] & ~(uintptr_t)0xffff;
        n++;
        llmc_slab_stats(s, &st);
    } while (st.pages < PAGES + 1);
    int before = count_mappings();

    /* Empty every other page (the last, partly filled one is left alone). */
    uintptr_t first = pg[0], emptied = 0;
    unsigned npages = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || pg[i] != pg[i - 1])
            npages++;
        if (npages % 2 == 1 && npages < PAGES) {
            llmc_slab_free(s, p[i], size);
            p[i] = NULL;
            if (pg[i] != first)
                emptied = pg[i];
        }
    }
    llmc_slab_stats(s, &st);
    assert_int_equal(st.released, PAGES / 2 - 1); /* one emptied page is the spare */
    assert_int_equal(st.pages, PAGES + 1 - st.released);
    assert_true(count_mappings() <= before + 2);
    assert_int_equal(resident((void *)emptied, 65536), 0);

    /* Another class's next page is a released one, and reads clean. */
    size_t bsize = 0;
    unsigned char *b = llmc_slab_alloc(s, 500, &bsize);
    assert_non_null(b);
    llmc_slab_stats(s, &st);
    assert_int_equal(st.released, PAGES / 2 - 2);
    bool reused = false;
    for (size_t i = 0; i < n && !reused; i++)
        reused = p[i] == NULL && pg[i] == ((uintptr_t)b & ~(uintptr_t)0xffff);
    assert_true(reused);
    for (size_t i = 0; i < bsize; i++)
        assert_int_equal(b[i], 0);
    llmc_slab_free(s, b, bsize);

    for (size_t i = 0; i < n; i++)
        llmc_slab_free(s, p[i], size);
    assert_empty(s);
    llmc_slab_destroy(s);
}

/* Where the kernel maps no page (here: the address-space limit reached),
   a block comes from malloc instead, sized past LLMC_SLAB_MAX so that free
   still knows it, usable whole, and counted with the big blocks. Run in a
   child, whose limit cannot touch the other tests. ASan and Valgrind keep
   address space of their own, so the limit means nothing there. */
static int fallback_child(void)
{
    llmc_slab_t *s = llmc_slab_new();
    llmc_slab_stats_t st;
    void *warm[8];
    size_t size = 0, pages = 0;
    FILE *f;

    /* Room in malloc's heap for the fallback block, kept after the frees. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    for (int i = 0; i < 8; i++)
        warm[i] = malloc(60000);
    for (int i = 0; i < 8; i++)
        free(warm[i]);
    if (!s || !(f = fopen("/proc/self/statm", "r")) || fscanf(f, "%zu", &pages) != 1)
        return 10;
    fclose(f);
    struct rlimit lim = {.rlim_cur = pages * (size_t)sysconf(_SC_PAGESIZE) + 16384};
    lim.rlim_max = lim.rlim_cur;
    if (setrlimit(RLIMIT_AS, &lim) != 0)
        return 11;
    unsigned char *b = llmc_slab_alloc(s, 100, &size);
    if (!b || size <= LLMC_SLAB_MAX)
        return 12;
    memset(b, 0x5a, size);
    llmc_slab_stats(s, &st);
    if (st.pages != 0 || st.big_blocks != 1 || st.big_bytes != size || st.blocks != 0)
        return 13;
    llmc_slab_free(s, b, size);
    llmc_slab_stats(s, &st);
    if (st.big_blocks != 0 || st.big_bytes != 0)
        return 14;
    llmc_slab_destroy(s);
    return 0;
}

static void test_malloc_when_no_page_can_be_mapped(void **state)
{
    (void)state;
    if (LLMC_UNDER_ASAN || LLMC_UNDER_VALGRIND())
        skip();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fallback_child());
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* A page that is full when the slab is destroyed is unmapped too (the test
   can only check that destroy does not trip on it; ASan does not track the
   pages, which are not malloc blocks). */
static void test_destroy_with_live_blocks(void **state)
{
    (void)state;
    llmc_slab_t *s = llmc_slab_new();
    size_t size;
    for (int i = 0; i < 40; i++)
        assert_non_null(llmc_slab_alloc(s, 4000, &size));
    llmc_slab_destroy(s);
    llmc_slab_destroy(NULL);
}

/* Above the largest class, malloc: the size reported exceeds the largest
   class (which is how free tells the kinds apart), counted as big_*. */
static void test_big_sizes_from_malloc(void **state)
{
    (void)state;
    llmc_slab_t *s = llmc_slab_new();
    size_t sizes[] = {LLMC_SLAB_MAX + 1, 10000, 1u << 20};
    void *p[3];
    size_t got[3], total = 0;
    llmc_slab_stats_t st;

    for (int i = 0; i < 3; i++) {
        p[i] = llmc_slab_alloc(s, sizes[i], &got[i]);
        assert_non_null(p[i]);
        assert_true(got[i] >= sizes[i] && got[i] > LLMC_SLAB_MAX);
        memset(p[i], 0x5a, got[i]);
        total += got[i];
    }
    llmc_slab_stats(s, &st);
    assert_int_equal(st.big_blocks, 3);
    assert_int_equal(st.big_bytes, total);
    assert_int_equal(st.pages, 0);
    assert_int_equal(st.blocks, 0);
    for (int i = 0; i < 3; i++)
        llmc_slab_free(s, p[i], got[i]);
    llmc_slab_free(s, NULL, 0);
    assert_empty(s);
    llmc_slab_destroy(s);
}

/* Threads allocate blocks of many sizes, stamp them, then free the blocks
   another thread made while allocating and freeing more of their own: the
   stamps survive (no block was handed out twice) and the totals end at 0. */
enum { NTHREADS = 4, PER_THREAD = 6000 };

struct worker {
    llmc_slab_t *s;
    pthread_barrier_t *bar;
    unsigned id;
    struct held h[PER_THREAD];
    struct worker *next; /* whose blocks this one frees */
};

static size_t size_for(unsigned id, size_t i)
{
    return 1 + (size_t)((id * 7919u + i * 104729u) % (LLMC_SLAB_MAX + 600));
}

static void stamp(struct held *h, unsigned id)
{
    memset(h->p, (int)id + 1, h->n);
}

static int stamped(const struct held *h, unsigned id)
{
    for (size_t j = 0; j < h->n; j++)
        if (h->p[j] != id + 1)
            return 0;
    return 1;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (size_t i = 0; i < PER_THREAD; i++) {
        w->h[i].n = size_for(w->id, i);
        w->h[i].p = llmc_slab_alloc(w->s, w->h[i].n, &w->h[i].size);
        if (!w->h[i].p)
            return (void *)1;
        stamp(&w->h[i], w->id);
    }
    pthread_barrier_wait(w->bar);
    uintptr_t bad = 0;
    for (size_t i = 0; i < PER_THREAD; i++) {
        struct held *o = &w->next->h[i];
        bad += !stamped(o, w->next->id);
        llmc_slab_free(w->s, o->p, o->size);
        /* Churn of its own, so frees and allocations interleave. */
        struct held t = {.n = size_for(w->id + 100, i)};
        t.p = llmc_slab_alloc(w->s, t.n, &t.size);
        if (!t.p)
            return (void *)1;
        stamp(&t, w->id);
        bad += !stamped(&t, w->id);
        llmc_slab_free(w->s, t.p, t.size);
    }
    return (void *)bad;
}

static void test_concurrent_alloc_free(void **state)
{
    (void)state;
    llmc_slab_t *s = llmc_slab_new();
    pthread_barrier_t bar;
    static struct worker w[NTHREADS];
    pthread_t t[NTHREADS];

    pthread_barrier_init(&bar, NULL, NTHREADS);
    for (unsigned i = 0; i < NTHREADS; i++)
        w[i] = (struct worker){.s = s, .bar = &bar, .id = i, .next = &w[(i + 1) % NTHREADS]};
    for (unsigned i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    for (unsigned i = 0; i < NTHREADS; i++) {
        void *bad = NULL;
        pthread_join(t[i], &bad);
        assert_null(bad);
    }
    pthread_barrier_destroy(&bar);
    assert_empty(s);
    llmc_slab_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_class_boundary),
        cmocka_unit_test(test_free_and_reuse),
        cmocka_unit_test(test_page_released_when_empty),
        cmocka_unit_test(test_released_pages_stay_mapped_and_are_reused),
        cmocka_unit_test(test_malloc_when_no_page_can_be_mapped),
        cmocka_unit_test(test_destroy_with_live_blocks),
        cmocka_unit_test(test_big_sizes_from_malloc),
        cmocka_unit_test(test_concurrent_alloc_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
