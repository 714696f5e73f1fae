/*
 * wire_bench.c: what compression on the wire costs and saves, per coding,
 * on the corpus of bench/corpus.py (issue 18).
 *
 *   make wire-bench CORPUS=/tmp/llmc-corpus
 *
 * For each of gzip, zstd and br, on every answer of CORPUS/measure (ONLY=chat
 * or ONLY=embeddings keeps one kind):
 * - a whole form, as respond.c builds it once per entry: bytes out against
 *   bytes in, and the CPU microseconds per answer (this thread's CPU time,
 *   which other load on a shared machine moves less than wall time);
 * - a stream, as a compressed SSE relay writes it: each answer cut into
 *   events of about 60 bytes (a token's delta with its JSON frame), each
 *   written and flushed on its own: bytes out per event and CPU per event;
 * - one 4 MB body (the measured answers end to end): the CPU milliseconds a
 *   loop would spend on it, which is why bodies of --compress-offload-bytes
 *   or more are compressed on the thread pool.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "corpus_files.h"
#include "http/encoding.h"


#define EVENT 60

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR (bench/corpus.py's output)\n", argv[0]);
        return 2;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/measure", argv[1]);
    body_t *v;
    size_t n = corpus_load(dir, NULL, &v);
    if (!n) {
        fprintf(stderr, "no answers in %s\n", dir);
        return 2;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i].n;
    /* The big body: answers end to end up to 4 MB. */
    size_t big_len = 0, big_cap = 4u << 20;
    char *big = malloc(big_cap);
    for (size_t i = 0; big_len < big_cap; i = (i + 1) % n) {
        size_t k = v[i].n < big_cap - big_len ? v[i].n : big_cap - big_len;
        memcpy(big + big_len, v[i].p, k);
        big_len += k;
    }
    printf("%zu answers, %zu bytes (ONLY=%s)\n", n, total, getenv("ONLY") ? getenv("ONLY") : "");
    printf("%-5s %12s %8s %10s | %12s %10s | %12s\n", "", "form bytes", "ratio", "us/answer",
           "stream B/ev", "us/event", "4 MB: ms");
    for (llmc_encoding_t e = LLMC_ENC_GZIP; e < LLMC_ENC_N; e++) {
        size_t out = 0, sout = 0, events = 0;
        double t0 = corpus_cpu_ns();
        for (size_t i = 0; i < n; i++) {
            char *z;
            size_t zl;
            if (llmc_encoding_encode(e, v[i].p, v[i].n, &z, &zl) < 0)
                return 1;
            out += zl;
            free(z);
        }
        double form_us = (corpus_cpu_ns() - t0) / 1e3 / (double)n;
        t0 = corpus_cpu_ns();
        for (size_t i = 0; i < n; i++) {
            llmc_encoder_t *s = llmc_encoder_new(e);
            for (size_t off = 0; off <= v[i].n; off += EVENT) {
                size_t k = v[i].n - off < EVENT ? v[i].n - off : EVENT;
                bool last = off + EVENT > v[i].n;
                char *z;
                size_t zl;
                if (!s || llmc_encoder_write(s, v[i].p + off, k, last, &z, &zl) < 0)
                    return 1;
                sout += zl;
                events++;
                free(z);
            }
            llmc_encoder_free(s);
        }
        double ev_us = (corpus_cpu_ns() - t0) / 1e3 / (double)events;
        t0 = corpus_cpu_ns();
        char *z;
        size_t zl;
        if (llmc_encoding_encode(e, big, big_len, &z, &zl) < 0)
            return 1;
        free(z);
        double big_ms = (corpus_cpu_ns() - t0) / 1e6;
        printf("%-5s %12zu %8.2f %10.1f | %12.1f %10.2f | %12.1f\n", llmc_encoding_name(e), out,
               (double)total / (double)out, form_us, (double)sout / (double)events, ev_us,
               big_ms);
    }
    printf("(stream: events of %d bytes, each flushed; identity is %d B/event)\n", EVENT, EVENT);
    for (size_t i = 0; i < n; i++)
        free(v[i].p);
    free(v);
    free(big);
    return 0;
}
