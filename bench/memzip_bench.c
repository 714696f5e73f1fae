/*
 * memzip_bench.c: answers per GB of --max-memory with compression at rest
 * in the memory tier, and what its hits cost (issue 18).
 *
 *   python3 bench/corpus.py /tmp/corpus
 *   make memzip-bench CORPUS=/tmp/corpus [MEM=16M] [HOT=10]
 *
 * Trains the dictionary from CORPUS/train only (every answer packed once,
 * then one training), then fills a memory tier of MEM bytes with the
 * answers of CORPUS/measure as the gateway stores them (route, model,
 * content type, token counts), each under keys of its own, cycling through
 * them until three times the budget was offered; prints the answers held,
 * the bytes charged, answers per GB of MEM, three ways: as today (off),
 * compressed with no hot set, compressed with HOT percent of MEM for hot
 * copies (the gateway's default). Then the CPU time (this thread's, so
 * other load moves it little) of a hot hit (a copy in the hot set), a hit
 * on an uncompressed entry (today's hit) and a cold hit (decompression and
 * the copy joining the hot set) and of hits by popularity (Zipf), means.
 */
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "corpus_files.h"
#include "llmc/error.h"
#include "llmc/usage.h"
#include "llmc/zdict.h"
#include "tier/memory.h"


static llmc_key_t key_of(uint64_t i)
{
    llmc_key_t k;
    memset(&k, 0x5a, sizeof k);
    for (int b = 0; b < 8; b++)
        k.b[b] = (uint8_t)(i >> (8 * b)) ^ (uint8_t)(i * 0x9e3779b97f4a7c15ULL >> (8 * b));
    memcpy(k.b + 8, &i, sizeof i);
    return k;
}

static llmc_entry_t *entry_of(uint64_t i, const body_t *b)
{
    llmc_key_t k = key_of(i);
    llmc_usage_t u;
    bool has_usage = llmc_usage_scan(b->p, b->n, &u);
    llmc_entry_spec_t s = {
        .key = &k, .status = 200, .created_ms = 1, .expires_ms = INT64_MAX,
        .content_type = "application/json", .model = "gpt-4o-mini",
        .route = strstr(b->p, "\"embedding\"") ? "/v1/embeddings" : "/v1/chat/completions",
        .body = b->p, .body_len = b->n, .usage = has_usage ? &u : NULL,
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    if (!e)
        exit(3);
    return e;
}

/* Fills a tier of mem bytes; prints answers held per GB; times hits. */
static void run(const char *name, const body_t *m, size_t n, size_t mem, unsigned hot)
{
    llmc_cache_config_t cc = {.max_bytes = mem, .max_entry_share = 0.1};
    llmc_tier_t *t = llmc_tier_memory_open(&cc, hot, 0);
    uint64_t i = 0, raw = 0;
    llmc_tier_stats_t st;
    /* Until as many answers were evicted as are held: the tier is full,
       and what it holds is what a full one holds. */
    do {
        for (int b = 0; b < 256; b++, i++) {
            llmc_entry_t *e = entry_of(i, &m[i % n]);
            t->ops->put(t, 0, e, 1);
            llmc_entry_unref(e);
        }
        t->ops->stats(t, &st);
    } while (st.evicted_size < st.entries);
    /* First hits on the last answers stored (cold: a decompression when
       packed), in batches: reading the clock costs more than a hit. */
    enum { GROUP = 64 };
    size_t held = 0, probes = i < 4096 ? (size_t)i : 4096;
    double cold = 0;
    for (uint64_t g = i - probes; g < i; g += GROUP) {
        llmc_entry_t *got[GROUP] = {0};
        double t0 = corpus_cpu_ns();
        for (int j = 0; j < GROUP; j++) {
            llmc_key_t k = key_of(g + (uint64_t)j);
            if (t->ops->get(t, &k, 2, &got[j]) != 0)
                got[j] = NULL;
        }
        cold += corpus_cpu_ns() - t0;
        for (int j = 0; j < GROUP; j++) {
            if (got[j]) {
                raw += got[j]->body_len;
                held++;
            }
            llmc_entry_unref(got[j]);
        }
    }
    /* Then HITS hits on the answers held, by popularity (Zipf, s = ZIPF_S):
       a few answers take most hits, the long tail is asked rarely. */
    enum { HITS = 200000 };
    const double ZIPF_S = 1.0;
    size_t nheld = st.entries;
    double *cdf = malloc(nheld * sizeof *cdf), sum = 0;
    llmc_key_t *seq = malloc(HITS * sizeof *seq);
    for (size_t r = 0; r < nheld; r++)
        cdf[r] = (sum += 1.0 / pow((double)(r + 1), ZIPF_S));
    uint64_t rng = 88172645463325252ULL;
    for (size_t h = 0; h < HITS; h++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        double u = (double)(rng >> 11) / 9007199254740992.0 * sum;
        size_t lo = 0, hi = nheld - 1;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (cdf[mid] < u)
                lo = mid + 1;
            else
                hi = mid;
        }
        /* rank r is an answer among the last nheld stored, scattered */
        seq[h] = key_of(i - 1 - (lo * 7919) % nheld);
    }
    uint64_t x0[16] = {0};
    t->ops->xstats(t, x0);
    size_t found = 0;
    double t0 = corpus_cpu_ns();
    for (size_t h = 0; h < HITS; h++) {
        llmc_entry_t *e = NULL;
        if (t->ops->get(t, &seq[h], 2, &e) == 0) {
            found++;
            llmc_entry_unref(e);
        }
    }
    double zipf = (corpus_cpu_ns() - t0) / HITS;
    uint64_t x1[16] = {0};
    t->ops->xstats(t, x1);
    printf("%-22s %7llu answers in %5.1f MiB charged (%5.0f B each, %5.0f raw): "
           "%7.0f answers/GB of MEM\n"
           "%-22s first hit (cold) %5.0f ns; Zipf hits %5.0f ns each, %.1f%% served hot, "
           "%.1f%% decompressed, %.1f%% found (mean CPU)\n",
           name, (unsigned long long)st.entries, st.bytes / 1048576.0,
           (double)st.bytes / (double)st.entries, held ? (double)raw / (double)held : 0,
           (double)st.entries / (double)mem * 1e9, "", held ? cold / (double)held : 0, zipf,
           100.0 * (double)(x1[5] - x0[5]) / HITS, 100.0 * (double)(x1[6] - x0[6]) / HITS,
           100.0 * (double)found / HITS);
    free(cdf);
    free(seq);
    uint64_t x[16] = {0};
    t->ops->xstats(t, x);
    printf("%-22s raw %llu packed %llu bytes stored (%.2fx); hot set: %llu entries, %llu bytes "
           "of %llu; %llu hot hits, %llu cold unpacks\n", "", (unsigned long long)x[0],
           (unsigned long long)x[1], x[1] ? (double)x[0] / (double)x[1] : 0,
           (unsigned long long)x[2], (unsigned long long)x[3], (unsigned long long)x[4],
           (unsigned long long)x[5], (unsigned long long)x[6]);
    t->ops->destroy(t);
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    return (size_t)(v * (*end == 'G' ? 1 << 30 : *end == 'M' ? 1 << 20 : *end == 'K' ? 1 << 10 : 1));
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: memzip_bench CORPUS [MEM [HOT]]\n");
        return 2;
    }
    size_t mem = argc > 2 ? parse_size(argv[2]) : (size_t)16 << 20;
    unsigned hot = argc > 3 ? (unsigned)atoi(argv[3]) : 10;
    char dir[4096];
    body_t *train, *meas;
    snprintf(dir, sizeof dir, "%s/train", argv[1]);
    size_t nt = corpus_load(dir, NULL, &train);
    snprintf(dir, sizeof dir, "%s/measure", argv[1]);
    size_t nm = corpus_load(dir, NULL, &meas);
    printf("corpus: %zu training answers, %zu measured; memory tier of %.1f MiB\n", nt, nm,
           mem / 1048576.0);

    llmc_zdict_opts_t o = {.on = false, .min_bytes = 256};
    llmc_zdict_init(&o, NULL, NULL, 0);
    run("off (today)", meas, nm, mem, 0);
    llmc_zdict_shutdown();

    o.on = true;
    llmc_zdict_init(&o, NULL, NULL, 0);
    for (size_t i = 0; i < nt; i++) {
        uint8_t *z = NULL;
        size_t zl;
        uint32_t id;
        llmc_zdict_pack(train[i].p, train[i].n, &z, &zl, &id);
        free(z);
    }
    if (llmc_zdict_train_now()) {
        fprintf(stderr, "training failed\n");
        return 1;
    }
    run("packed, no hot set", meas, nm, mem, 0);
    char name[64];
    snprintf(name, sizeof name, "packed, hot set %u%%", hot);
    run(name, meas, nm, mem, hot);
    llmc_zdict_shutdown();
    for (size_t i = 0; i < nt; i++)
        free(train[i].p);
    for (size_t i = 0; i < nm; i++)
        free(meas[i].p);
    free(train);
    free(meas);
    return 0;
}
