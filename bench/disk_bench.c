/*
 * disk_bench.c: measures the LMDB disk tier (src/tier/disk.c).
 *
 *   1. write: entries/s through the writer thread (1 KB bodies), from the
 *      first put() to the end of llmc_tier_disk_flush(), per sync mode;
 *   2. get: hits/s from the disk tier (nothing in memory in front of it)
 *      against the memory cache (llmc/cache.h), for 1..T threads;
 *   3. open: time to open an environment holding N entries plus the first
 *      get(), with the file's pages dropped from the page cache first
 *      (posix_fadvise DONTNEED) and again with them cached.
 *
 * Build and run from the repository root (see bench/DISK.md):
 *   make build/libllmc.a
 *   cc -O2 -g -std=c11 -D_GNU_SOURCE -Iinclude -Isrc bench/disk_bench.c build/libllmc.a \
 *      -llmdb -lcrypto -lpthread -o build/disk_bench
 *   build/disk_bench [-n WRITES] [-g GETS] [-o OPEN_ENTRIES] [-t THREADS] [-d DIR]
 *
 * Entries are built before a timer starts, so the figures are the tier's
 * own cost, not the cost of making entries. The bench reads the clock
 * itself: it is a tool, not core code.
 */
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "llmc/cache.h"
#include "llmc/error.h"
#include "tier/disk.h"

#define BODY_LEN 1024
#define NOW      1700000000000LL
#define TTL_MS   (24LL * 3600 * 1000)

typedef struct opts {
    size_t writes, gets, open_n;
    int threads;
    const char *dir;
} opts_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static llmc_key_t key_of(uint32_t i)
{
    llmc_key_t k;
    uint64_t x = i * 0x9E3779B97F4A7C15ull;
    for (int j = 0; j < LLMC_KEY_LEN; j++) {
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ull;
        k.b[j] = (uint8_t)(x >> 56);
    }
    memcpy(k.b, &i, sizeof i);
    return k;
}

static llmc_entry_t *make_entry(uint32_t i)
{
    static char body[BODY_LEN];
    llmc_key_t k = key_of(i);
    if (!body[0])
        memset(body, 'x', sizeof body);
    llmc_entry_spec_t s = {
        .key = &k, .status = 200, .created_ms = NOW + i, .expires_ms = NOW + i + TTL_MS,
        .content_type = "application/json", .ns = "", .model = "gpt-4o-mini",
        .body = body, .body_len = BODY_LEN,
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    if (!e) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return e;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static llmc_tier_t *open_tier(const char *dir, llmc_disk_sync_t sync, uint64_t max_bytes, size_t queue)
{
    llmc_disk_config_t c = {
        .path = dir, .sync = sync, .sync_interval_ms = 1000, .max_bytes = max_bytes,
        .queue_len = queue,
    };
    llmc_tier_t *t = NULL;
    char err[256];
    if (llmc_tier_disk_open(&c, &t, err, sizeof err) != 0) {
        fprintf(stderr, "open %s: %s\n", dir, err);
        exit(1);
    }
    return t;
}

/* Puts es[0..n) and waits for the writer; returns seconds. */
static double put_all(llmc_tier_t *t, llmc_entry_t **es, size_t n)
{
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        t->ops->put(t, 0, es[i], NOW);
    llmc_tier_disk_flush(t);
    return now_s() - t0;
}

static void bench_write(const opts_t *o, llmc_entry_t **es)
{
    static const char *const names[] = { "full", "periodic", "none" };
    printf("\n== write: %zu entries, %d-byte bodies, one put() loop, then flush\n", o->writes, BODY_LEN);
    for (int m = 0; m < 3; m++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/write-%s", o->dir, names[m]);
        llmc_tier_t *t = open_tier(dir, (llmc_disk_sync_t)m, 4ull << 30, o->writes);
        double s = put_all(t, es, o->writes);
        llmc_tier_stats_t st;
        t->ops->stats(t, &st);
        printf("  sync=%-8s %9.0f entries/s  (%.2f s, stored %llu, dropped %llu, file %.0f MB in use)\n",
               names[m], o->writes / s, s, (unsigned long long)st.stored,
               (unsigned long long)st.dropped, st.bytes / 1048576.0);
        t->ops->destroy(t);
        rm_tree(dir);
    }
}

typedef struct get_arg {
    llmc_tier_t *tier;
    llmc_cache_t *cache;
    size_t n, keys, start;
    size_t hits;
} get_arg_t;

static void *get_loop(void *p)
{
    get_arg_t *a = p;
    uint64_t x = a->start * 7919 + 1;
    for (size_t i = 0; i < a->n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        llmc_key_t k = key_of((uint32_t)((x >> 33) % a->keys));
        llmc_entry_t *e = NULL;
        int rc = a->tier ? a->tier->ops->get(a->tier, &k, NOW, &e) : llmc_cache_get(a->cache, &k, NOW, &e);
        if (rc == 0) {
            a->hits++;
            llmc_entry_unref(e);
        }
    }
    return NULL;
}

/* Runs nthreads get loops over keys [0, keys); returns hits/s. */
static double run_gets(llmc_tier_t *t, llmc_cache_t *c, size_t n, size_t keys, int nthreads, size_t *hits)
{
    pthread_t th[64];
    get_arg_t args[64];
    double t0 = now_s();
    for (int i = 0; i < nthreads; i++) {
        args[i] = (get_arg_t){ t, c, n / nthreads, keys, (size_t)i, 0 };
        pthread_create(&th[i], NULL, get_loop, &args[i]);
    }
    *hits = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        *hits += args[i].hits;
    }
    return *hits / (now_s() - t0);
}

static void bench_get(const opts_t *o, llmc_entry_t **es)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/get", o->dir);
    llmc_tier_t *t = open_tier(dir, LLMC_DISK_SYNC_NONE, 4ull << 30, o->writes);
    put_all(t, es, o->writes);
    llmc_cache_config_t cc = { .max_bytes = 4ull << 30, .max_entry_share = 0.1 };
    llmc_cache_t *c = llmc_cache_new(&cc);
    for (size_t i = 0; i < o->writes; i++)
        llmc_cache_put(c, es[i], NOW);
    printf("\n== get: %zu random hits over %zu entries (page cache warm)\n", o->gets, o->writes);
    for (int th = 1; th <= o->threads; th++) {
        size_t hd, hm;
        double d = run_gets(t, NULL, o->gets, o->writes, th, &hd);
        double m = run_gets(NULL, c, o->gets, o->writes, th, &hm);
        printf("  threads=%d  disk %9.0f hits/s   memory %10.0f hits/s   (memory/disk %.1fx; hits %zu, %zu)\n",
               th, d, m, m / d, hd, hm);
    }
    llmc_cache_free(c);
    t->ops->destroy(t);
    rm_tree(dir);
}

/* Drops data.mdb's pages from the page cache, so the next open reads the disk. */
static void drop_cache(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

static double time_open(const char *dir, uint64_t max_bytes, uint32_t probe, bool *hit)
{
    double t0 = now_s();
    llmc_tier_t *t = open_tier(dir, LLMC_DISK_SYNC_PERIODIC, max_bytes, 65536);
    llmc_key_t k = key_of(probe);
    llmc_entry_t *e = NULL;
    *hit = t->ops->get(t, &k, NOW, &e) == 0;
    double s = now_s() - t0;
    llmc_entry_unref(e);
    t->ops->destroy(t);
    return s;
}

static void bench_open(const opts_t *o)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/open", o->dir);
    uint64_t max_bytes = 8ull << 30;
    llmc_tier_t *t = open_tier(dir, LLMC_DISK_SYNC_NONE, max_bytes, 65536);
    printf("\n== open: environment with %zu entries\n", o->open_n);
    double t0 = now_s();
    for (size_t i = 0; i < o->open_n; i += 50000) {
        size_t n = o->open_n - i < 50000 ? o->open_n - i : 50000;
        llmc_entry_t **es = malloc(n * sizeof *es);
        for (size_t j = 0; j < n; j++)
            es[j] = make_entry((uint32_t)(i + j));
        put_all(t, es, n);
        for (size_t j = 0; j < n; j++)
            llmc_entry_unref(es[j]);
        free(es);
    }
    llmc_tier_stats_t st;
    t->ops->stats(t, &st);
    printf("  filled in %.1f s: %llu entries, %.0f MB in use, dropped %llu\n", now_s() - t0,
           (unsigned long long)st.entries, st.bytes / 1048576.0, (unsigned long long)st.dropped);
    t->ops->destroy(t);
    bool hit;
    drop_cache(dir);
    double cold = time_open(dir, max_bytes, (uint32_t)(o->open_n / 2), &hit);
    printf("  open + first get, file not in page cache: %7.2f ms (hit: %s)\n", cold * 1e3, hit ? "yes" : "NO");
    double warm = time_open(dir, max_bytes, (uint32_t)(o->open_n / 3), &hit);
    printf("  open + first get, file in page cache:     %7.2f ms (hit: %s)\n", warm * 1e3, hit ? "yes" : "NO");
    rm_tree(dir);
}

int main(int argc, char **argv)
{
    opts_t o = { .writes = 200000, .gets = 2000000, .open_n = 1000000, .threads = 2, .dir = NULL };
    char tmpl[] = "/tmp/llmc-disk-bench-XXXXXX";
    int ch;
    while ((ch = getopt(argc, argv, "n:g:o:t:d:")) != -1) {
        switch (ch) {
        case 'n': o.writes = strtoull(optarg, NULL, 10); break;
        case 'g': o.gets = strtoull(optarg, NULL, 10); break;
        case 'o': o.open_n = strtoull(optarg, NULL, 10); break;
        case 't': o.threads = atoi(optarg); break;
        case 'd': o.dir = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-n WRITES] [-g GETS] [-o OPEN_ENTRIES] [-t THREADS] [-d DIR]\n", argv[0]);
            return 2;
        }
    }
    if (o.threads < 1 || o.threads > 64 || o.writes == 0)
        return 2;
    if (!o.dir && !(o.dir = mkdtemp(tmpl))) {
        perror("mkdtemp");
        return 1;
    }
    printf("disk_bench: dir %s, %ld CPUs\n", o.dir, sysconf(_SC_NPROCESSORS_ONLN));
    llmc_entry_t **es = malloc(o.writes * sizeof *es);
    for (size_t i = 0; i < o.writes; i++)
        es[i] = make_entry((uint32_t)i);
    bench_write(&o, es);
    bench_get(&o, es);
    for (size_t i = 0; i < o.writes; i++)
        llmc_entry_unref(es[i]);
    free(es);
    if (o.open_n)
        bench_open(&o);
    if (strcmp(o.dir, tmpl) == 0)
        rm_tree(o.dir);
    return 0;
}
