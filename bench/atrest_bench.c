/*
 * atrest_bench.c: what compression at rest saves and costs on the corpus of
 * bench/corpus.py (issue 18).
 *
 *   python3 bench/corpus.py /tmp/corpus
 *   make atrest-bench CORPUS=/tmp/corpus
 *
 * Trains a dictionary from CORPUS/train only (as the gateway would: every
 * answer packed once, then one training), then encodes every answer of
 * CORPUS/measure as a disk record three ways: as it is, plain zstd, zstd
 * with the dictionary; prints the record bytes per answer, answers per GB
 * (record bytes only: LMDB's page overhead comes on top of every column
 * alike) and the nanoseconds to decode one record (a disk-tier hit's codec
 * share), median of several passes. ONLY=chat or ONLY=embeddings keeps
 * one kind of answer (chat includes the tool calls).
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "corpus_files.h"
#include "llmc/record.h"
#include "llmc/zdict.h"

/* ONLY=chat or ONLY=embeddings measures one kind of answer */
static bool wanted(const char *text)
{
    const char *only = getenv("ONLY");
    bool emb = strstr(text, "\"embedding\"") != NULL;
    return !(only && *only && (strcmp(only, "embeddings") == 0) != emb);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Record bytes of every measured answer, and the median ns to decode one. */
static size_t measure(const char *name, body_t *m, size_t n, size_t asis_total)
{
    uint8_t **recs = malloc(n * sizeof *recs);
    size_t *lens = malloc(n * sizeof *lens), total = 0;
    llmc_key_t *keys = malloc(n * sizeof *keys);
    for (size_t i = 0; i < n; i++) {
        memset(&keys[i], 0, sizeof keys[i]);
        memcpy(keys[i].b, &i, sizeof i);
        llmc_entry_spec_t s = {
            .key = &keys[i], .status = 200, .created_ms = 1, .expires_ms = 2,
            .content_type = "application/json", .ns = "", .model = "gpt-4o-mini",
            .route = "/v1/chat/completions", .body = m[i].p, .body_len = m[i].n,
        };
        llmc_entry_t *e = llmc_entry_new(&s);
        llmc_record_plan_t pl;
        if (!e || llmc_record_plan(e, &pl))
            exit(3);
        recs[i] = malloc(pl.size);
        if (llmc_record_plan_write(&pl, recs[i], pl.size))
            exit(3);
        lens[i] = pl.size;
        total += pl.size;
        llmc_record_plan_free(&pl);
        llmc_entry_unref(e);
    }
    double t[7];
    for (int r = 0; r < 7; r++) {
        double t0 = corpus_cpu_ns();
        for (size_t i = 0; i < n; i++) {
            llmc_entry_t *e;
            if (llmc_record_decode(&keys[i], recs[i], lens[i], &e))
                exit(4);
            llmc_entry_unref(e);
        }
        t[r] = (corpus_cpu_ns() - t0) / (double)n;
    }
    qsort(t, 7, sizeof t[0], cmp_d);
    printf("%-14s %10.0f %12.0f %10.2fx %14.0f\n", name, (double)total / (double)n,
           1e9 / ((double)total / (double)n),
           (double)(asis_total ? asis_total : total) / (double)total, t[3]);
    for (size_t i = 0; i < n; i++)
        free(recs[i]);
    free(recs);
    free(lens);
    free(keys);
    return total;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR (from bench/corpus.py)\n", argv[0]);
        return 2;
    }
    char dir[4096];
    body_t *train, *meas;
    snprintf(dir, sizeof dir, "%s/train", argv[1]);
    size_t nt = corpus_load(dir, wanted, &train);
    snprintf(dir, sizeof dir, "%s/measure", argv[1]);
    size_t nm = corpus_load(dir, wanted, &meas);
    size_t body_total = 0;
    for (size_t i = 0; i < nm; i++)
        body_total += meas[i].n;
    printf("corpus: %zu training answers, %zu measured (%.0f body bytes each on average)\n",
           nt, nm, (double)body_total / (double)nm);
    printf("%-14s %10s %12s %11s %14s\n", "records", "bytes/ans", "answers/GB", "vs as-is",
           "decode CPU ns");
    llmc_zdict_opts_t o = { .on = false, .min_bytes = 256 };
    llmc_zdict_init(&o, NULL, NULL, 0);
    size_t asis = measure("as is", meas, nm, 0);
    llmc_zdict_shutdown();
    o.on = true;
    llmc_zdict_init(&o, NULL, NULL, 0);
    measure("zstd", meas, nm, asis);
    llmc_zdict_shutdown();
    /* the dictionary: every training answer sampled once, then one training */
    llmc_zdict_init(&o, NULL, NULL, 0);
    for (size_t i = 0; i < nt; i++) {
        uint8_t *z = NULL;
        size_t zl;
        uint32_t id;
        llmc_zdict_pack(train[i].p, train[i].n, &z, &zl, &id);
        free(z);
    }
    double t0 = corpus_cpu_ns();
    if (llmc_zdict_train_now()) {
        fprintf(stderr, "training failed\n");
        return 1;
    }
    printf("(dictionary trained in %.0f ms)\n", (corpus_cpu_ns() - t0) / 1e6);
    measure("zstd+dict", meas, nm, asis);
    llmc_zdict_shutdown();
    for (size_t i = 0; i < nt; i++)
        free(train[i].p);
    for (size_t i = 0; i < nm; i++)
        free(meas[i].p);
    free(train);
    free(meas);
    return 0;
}
