/*
 * census_bench.c: what the disk tier's census of compression dictionaries
 * costs (tier/disk.h, issue 18), in process CPU time, which other load on
 * the machine does not inflate the way it does wall time.
 *
 * It stores N chat-like answers compressed under dictionary 2, one under
 * dictionary 1, then removes that one: the census that follows must read
 * every record to learn that nothing names dictionary 1 any more (the
 * worst case, a full read of the file), and frees it. Then dictionary 3 is
 * trained: the next census finds dictionary 2 in the first record it reads,
 * and the one after that at the record where it last saw it (the usual
 * case).
 *
 * Build and run (from the repository root, after make):
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Iinclude -Isrc bench/census_bench.c build/libllmc.a \
 *      $(pkg-config --libs libuv libcurl jansson libcrypto lmdb hiredis libutf8proc zlib \
 *      libzstd libbrotlienc libbrotlidec) -lhttp_parser -lstemmer -lpthread -lm \
 *      -o build/census_bench
 *   build/census_bench [N]        (default 100000 records, in a /tmp directory it removes)
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "llmc/error.h"
#include "llmc/zdict.h"
#include "tier/disk.h"

#define NOW 1700000000000LL

static const char *const words[] = {
    "the", "cache", "server", "returns", "a", "summary", "of", "each", "record", "when",
    "model", "request", "is", "large", "before", "deadline", "user", "profile", "reads",
    "quickly", "network", "latency", "improves", "budget", "report", "monthly", "garden",
};

static uint64_t rng = 88172645463325252ULL;

static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static size_t answer(char *b, size_t cap, size_t n)
{
    size_t len = (size_t)snprintf(b, cap, "{\"id\":\"chatcmpl-%08x\",\"object\":\"chat.completion\","
                                  "\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"",
                                  next());
    while (len < n)
        len += (size_t)snprintf(b + len, cap - len, "%s ", words[next() % 27]);
    len += (size_t)snprintf(b + len, cap - len, "\"}}]}");
    return len;
}

static void train(void)
{
    char b[4096];
    for (int i = 0; i < 300; i++)
        llmc_zdict_sample(b, answer(b, sizeof b, 300 + next() % 2000));
    if (llmc_zdict_train_now()) {
        fprintf(stderr, "training failed\n");
        exit(1);
    }
}

static void put(llmc_tier_t *t, uint32_t i, const char *ns)
{
    char b[4096];
    llmc_key_t k;
    for (int j = 0; j < LLMC_KEY_LEN; j++)
        k.b[j] = (uint8_t)(next() >> 8);
    memcpy(k.b, &i, sizeof i);
    llmc_entry_spec_t s = {
        .key = &k, .status = 200, .created_ms = NOW, .expires_ms = NOW + 86400000,
        .content_type = "application/json", .ns = ns, .model = "m",
        .body = b, .body_len = answer(b, sizeof b, 600 + next() % 1500),
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    while (e && t->ops->put(t, 0, e, NOW) == LLMC_EFULL)
        llmc_tier_disk_flush(t);
    llmc_entry_unref(e);
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void on_done(void *arg, size_t k)
{
    *(size_t *)arg = k;
}

static void census(llmc_tier_t *t, const char *what, unsigned n)
{
    llmc_zdict_stats_t z;
    double c0 = cpu_s();
    llmc_tier_disk_census(t);
    double c = cpu_s() - c0;
    llmc_zdict_get_stats(&z);
    printf("%-44s %9.1f ms CPU  %7.2f us/record  (dictionaries: %u, removed %llu)\n", what,
           c * 1e3, c * 1e6 / n, z.count, (unsigned long long)z.removed);
}

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 100000;
    char root[] = "/tmp/llmc-census-XXXXXX", dir[64];
    if (!mkdtemp(root))
        return 1;
    snprintf(dir, sizeof dir, "%s/data", root);
    llmc_disk_config_t c = { .path = dir, .sync = LLMC_DISK_SYNC_PERIODIC,
                             .max_bytes = 4ull << 30, .queue_len = 65536 };
    llmc_tier_t *t = NULL;
    char err[256] = "";
    llmc_zdict_opts_t o = { .on = true, .min_bytes = 256 };
    if (llmc_tier_disk_open(&c, &t, err, sizeof err) || llmc_zdict_init(&o, dir, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    train();
    put(t, 0, "one");
    llmc_tier_disk_flush(t);
    train();
    for (unsigned i = 1; i <= n; i++)
        put(t, i, "many");
    llmc_tier_disk_flush(t);
    llmc_purge_t sel = { .conds = LLMC_PURGE_NAMESPACE, .ns = "one" };
    size_t removed = 0;
    t->ops->purge(t, 0, &sel, on_done, &removed);
    llmc_tier_disk_flush(t);
    printf("%u records under dictionary 2; dictionary 1's only record purged\n", n);
    census(t, "census: nothing names 1 (reads every record)", n);
    train();
    census(t, "census: 2 is named by the first record read", n);
    census(t, "census: 2 is where the last one saw it", n);
    t->ops->destroy(t);
    llmc_zdict_shutdown();
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
