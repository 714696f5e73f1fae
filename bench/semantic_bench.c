/*
 * bench/semantic_bench.c: what the semantic tier's parts cost on one core
 * (issue 15's "cost the tier adds to an exact miss"): the lexical embedding
 * of a question, its guard features, one guard check, and an exact search
 * of one partition of N vectors (512 dimensions) for N = 100 .. 100,000.
 *
 *   make bench-semantic        (an -O3 build, then this)
 *
 * The partition search: the flat scan (cost grows with N), and the index as
 * it runs (a scan below 1,000 vectors, an HNSW graph from there on).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "semantic/guard.h"
#include "semantic/index.h"
#include "semantic/lexical.h"

static double now_us(void)
{
    struct timespec ts;
    /* CPU time of this thread: the machine is shared, and a wall clock
       would count other programs' turns as ours. */
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static void unit(float *v, unsigned dim)
{
    double ss = 0;
    for (unsigned i = 0; i < dim; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        v[i] = (float)((double)(rng % 20001) / 10000.0 - 1.0);
        ss += (double)v[i] * v[i];
    }
    for (unsigned i = 0; i < dim; i++)
        v[i] = (float)(v[i] / sqrt(ss));
}

/*
 * N questions made of random words from a small vocabulary in a few
 * shapes, embedded by the lexical embedder: a partition that looks like
 * questions, where random vectors (above) are the graph's worst case.
 */
static void question(char *buf, size_t len)
{
    static const char *const shapes[] = {"how do I %s the %s in %s with %s?",
                                         "what is the %s of %s %s and %s",
                                         "why does my %s %s fail when %s is %s?",
                                         "explain %s %s to a %s %s"};
    static const char *const words[] = {
        "sort", "list", "python", "rust", "table", "index", "capital", "france", "query",
        "postgres", "cache", "memory", "thread", "socket", "file", "json", "parse", "string",
        "number", "loop", "server", "client", "error", "timeout", "window", "linux", "kernel",
        "graph", "vector", "matrix", "array", "hash", "tree", "node", "edge", "river", "city",
        "price", "stock", "market", "history", "war", "king", "music", "guitar", "piano", "song",
        "recipe", "bread", "flour", "oven", "garden", "tomato", "weather", "rain", "snow",
        "planet", "orbit", "moon", "star", "light", "speed", "energy", "battery", "car", "engine",
        "train", "ticket", "hotel", "flight", "visa", "passport", "tax", "salary", "loan", "bank",
        "doctor", "fever", "sleep", "coffee", "tea", "dog", "cat", "horse", "bird", "fish"};
    enum { NW = sizeof(words) / sizeof(words[0]) };
    const char *w[4];
    for (int i = 0; i < 4; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        w[i] = words[rng % NW];
    }
    snprintf(buf, len, shapes[rng % 4], w[0], w[1], w[2], w[3]);
}

static void lexical_partitions(llmc_lex_t *lx, double embed_us)
{
    static const size_t sizes[] = {1000, 10000, 100000};
    volatile float sink = 0;
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        llmc_vindex_t *ix = llmc_vindex_new(LLMC_LEX_DIM);
        llmc_key_t part;
        llmc_vindex_hit_t hits[4];
        char buf[160];
        float v[LLMC_LEX_DIM];
        static float qv[256][LLMC_LEX_DIM];
        memset(&part, 7, sizeof(part));
        double t0 = now_us();
        for (size_t i = 0; i < sizes[s]; i++) {
            question(buf, sizeof(buf));
            llmc_lex_embed(lx, buf, strlen(buf), v);
            llmc_vindex_insert(ix, &part, i, v);
        }
        double ins = (now_us() - t0) / (double)sizes[s];
        for (int r = 0; r < 256; r++) {
            question(buf, sizeof(buf));
            llmc_lex_embed(lx, buf, strlen(buf), qv[r]);
        }
        t0 = now_us();
        for (int r = 0; r < 2000; r++)
            sink += (float)llmc_vindex_search(ix, &part, qv[r % 256], 4, hits);
        double us = (now_us() - t0) / 2000;
        printf("questions, %6zu:      %8.2f us per search (embed+insert %.2f us); a miss costs "
               "about %.2f us with the embedding\n",
               sizes[s], us, ins, us + embed_us);
        llmc_vindex_free(ix);
    }
}

int main(void)
{
    static const char *const qs[] = {
        "Hey, can you tell me what the capital of France is?",
        "How do I optimise my SQL queries in Postgres when the table has 10 million rows?",
        "Why doesn't my Python script read the file /etc/hosts?",
        "Translate English to French: good morning, how are you?",
    };
    enum { NQ = sizeof(qs) / sizeof(qs[0]), REPS = 20000 };
    llmc_lex_t *lx = llmc_lex_new();
    float v[LLMC_LEX_DIM];
    double t0, t;
    volatile float sink = 0;

    t0 = now_us();
    for (int r = 0; r < REPS; r++) {
        llmc_lex_embed(lx, qs[r % NQ], strlen(qs[r % NQ]), v);
        sink += v[0];
    }
    t = (now_us() - t0) / REPS;
    printf("lexical embed:        %8.2f us per question\n", t);

    t0 = now_us();
    for (int r = 0; r < REPS; r++) {
        llmc_guard_q_t *q;
        llmc_guard_q_new(lx, qs[r % NQ], strlen(qs[r % NQ]), &q);
        llmc_guard_q_free(q);
    }
    printf("guard features:       %8.2f us per question\n", (now_us() - t0) / REPS);

    llmc_guard_q_t *a, *b;
    llmc_guard_q_new(lx, qs[0], strlen(qs[0]), &a);
    llmc_guard_q_new(lx, "what is the capital of france", 29, &b);
    t0 = now_us();
    for (int r = 0; r < REPS; r++)
        sink += (float)llmc_guard_check(a, b, NULL);
    printf("guard check (pass):   %8.2f us per candidate\n", (now_us() - t0) / REPS);
    llmc_guard_q_free(a);
    llmc_guard_q_free(b);

    /* The search a miss pays: a partition of N vectors, scanned (no graph)
       and as the index holds it (a graph from 1,000 vectors on). */
    static const size_t sizes[] = {100, 1000, 10000, 100000};
    double embed_us = t;
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (int graph = 0; graph < 2; graph++) {
            llmc_vindex_opts_t o = {.hnsw_threshold = graph ? 0 : UINT32_MAX};
            llmc_vindex_t *ix = llmc_vindex_new_opts(LLMC_LEX_DIM, &o);
            llmc_key_t part;
            llmc_vindex_hit_t hits[4];
            memset(&part, 7, sizeof(part));
            rng = 0x9e3779b97f4a7c15ull;
            t0 = now_us();
            for (size_t i = 0; i < sizes[s]; i++) {
                unit(v, LLMC_LEX_DIM);
                llmc_vindex_insert(ix, &part, i, v);
            }
            double ins = (now_us() - t0) / (double)sizes[s];
            int reps = graph ? 2000 : sizes[s] >= 100000 ? 50 : sizes[s] >= 10000 ? 500 : 5000;
            static float qv[64][LLMC_LEX_DIM]; /* new questions: nothing near */
            for (int r = 0; r < 64; r++)
                unit(qv[r], LLMC_LEX_DIM);
            t0 = now_us();
            for (int r = 0; r < reps; r++)
                sink += (float)llmc_vindex_search(ix, &part, qv[r % 64], 4, hits);
            double us = (now_us() - t0) / reps;
            printf("%s search, %6zu:  %8.2f us per search (insert %.2f us); a miss costs "
                   "about %.2f us with the embedding\n",
                   graph ? "index" : "flat ", sizes[s], us, ins, us + embed_us);
            llmc_vindex_free(ix);
        }
    }
    lexical_partitions(lx, embed_us);
    llmc_lex_free(lx);
    return sink == 12345.0f;
}
