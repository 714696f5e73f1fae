/*
 * bench/corpus_files.h: what the compression benches (atrest_bench.c,
 * memzip_bench.c, wire_bench.c) share: reading one part of bench/corpus.py's
 * output (a directory of answer files) into memory, and the thread's CPU
 * clock they time with (on a shared machine other load moves it less than
 * wall time). Header-only: each bench is one program.
 */
#ifndef LLMC_BENCH_CORPUS_FILES_H
#define LLMC_BENCH_CORPUS_FILES_H

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct body {
    char *p; /* NUL-terminated */
    size_t n;
} body_t;

/* Every file of dir for which keep(text) says yes (NULL: every file), in
   readdir's order, into *out (malloc'd). Exits on a directory it cannot
   read or memory it cannot get: a bench has no way to go on. */
static inline size_t corpus_load(const char *dir, bool (*keep)(const char *text), body_t **out)
{
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        exit(2);
    }
    size_t n = 0, cap = 0;
    body_t *v = NULL;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[4096];
        int pn = snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (pn < 0 || (size_t)pn >= sizeof path)
            continue; /* a path this long is not one of corpus.py's */
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *p = malloc((size_t)len + 1);
        if (!p || fread(p, 1, (size_t)len, f) != (size_t)len)
            exit(2);
        p[len] = 0;
        fclose(f);
        if (keep && !keep(p)) {
            free(p);
            continue;
        }
        if (n == cap && !(v = realloc(v, (cap = cap ? 2 * cap : 1024) * sizeof *v)))
            exit(2);
        v[n++] = (body_t){p, (size_t)len};
    }
    closedir(d);
    *out = v;
    return n;
}

/* This thread's CPU time in ns. */
static inline double corpus_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

#endif
