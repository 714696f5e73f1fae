/*
 * zdict.c: zstd at rest with trained dictionaries (see llmc/zdict.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Each dictionary is a block of its own, freed only when it is not
 *   current, not pinned and no hold is left (see llmc/zdict.h: the
 *   lifecycle). Whoever uses a dictionary's pointer after dropping the
 *   lock holds it: packing and unpacking take a hold under the lock.
 *   Unpacking a disk record needs its own: a reader may decode a record
 *   from a snapshot older than the delete that let a census unpin its
 *   dictionary.
 * - The census (llmc_zdict_census_begin/_end) may unpin only what was
 *   pinned and not current when it began. Records are packed with the
 *   current dictionary alone, and the current one only ever moves to a
 *   newer one, so no record written after the census began names a
 *   dictionary it may unpin: no generation count is needed.
 * - A trained dictionary is written to the directory (temporary file,
 *   fsync, rename) before it becomes current; a record compressed with it
 *   can therefore never reach the disk before its dictionary does.
 * - Samples are the first SAMPLE_MAX bytes of what is packed: the skeleton
 *   and the start of the text are what repeats across answers; the end of
 *   a long embedding adds nothing but training time.
 * - Contexts are reused from a small pool: a fresh ZSTD_DCtx is larger than
 *   malloc's mmap threshold, and creating one per record cost more than
 *   decompressing a chat answer (50 us against 8).
 * - Only bodies up to DICT_USE_MAX use the dictionary: past that a body
 *   is its own context (a 32 KB embeddings answer: 3.66x with it, 3.61x
 *   without) and decoding it with the dictionary took twice the CPU
 *   (bench/atrest_bench.c).
 * - Nothing is stored compressed unless it saves at least 1/16: a frame
 *   that does not shrink only costs a decompression per read.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zdict.h>
#include <zstd.h>

#include "llmc/error.h"
#include "llmc/zdict.h"

#define LEVEL 3
#define SAMPLE_MAX 4096u          /* bytes kept of one sample */
#define SAMPLES_CAP 8192u         /* samples held at most (a ring) */
#define DICT_PREFIX "zdict-"
#define DICT_USE_MAX (32u << 10)  /* larger bodies are compressed without one */

typedef struct dict {
    uint32_t id;
    ZSTD_CDict *c;
    ZSTD_DDict *d;
    uint64_t holds;  /* packed memory entries (and packs and unpacks in progress) */
    bool pinned;     /* records on disk may use it: kept until a census says none does */
} dict_t;

typedef struct sample {
    uint8_t *p;
    size_t n;
} sample_t;

#define POOL 16

static struct {
    pthread_mutex_t mu;
    ZSTD_CCtx *cpool[POOL];
    ZSTD_DCtx *dpool[POOL];
    unsigned ncpool, ndpool;
    bool ready;
    llmc_zdict_opts_t o;
    char *dir;
    dict_t *dicts[LLMC_ZDICT_MAX];
    uint32_t ndicts;
    uint64_t removed, unpinned;
    uint32_t max_id;      /* highest id loaded, skipped or trained */
    dict_t *current;
    sample_t samples[SAMPLES_CAP];
    size_t nsamples, next_sample, since_train;
    bool training;
    pthread_t trainer;
    bool trainer_joinable;
    uint64_t trainings;
} g = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void free_dict(dict_t *d)
{
    if (d) {
        ZSTD_freeCDict(d->c);
        ZSTD_freeDDict(d->d);
        free(d);
    }
}

/* Takes d out of the table when nothing needs it any more: not current,
   not pinned, no hold. Returns it for the caller to free after unlocking
   (freeing a CDict is not quick), or NULL. Caller holds mu. */
static dict_t *retire_locked(dict_t *d)
{
    if (!d || d == g.current || d->pinned || d->holds)
        return NULL;
    for (uint32_t i = 0; i < g.ndicts; i++)
        if (g.dicts[i] == d) {
            g.dicts[i] = g.dicts[--g.ndicts];
            g.removed++;
            /* Unpinned: no committed record names it (none was written
               with it, or a census found none left), so no record needs
               its file; left behind (a crash), it is loaded as pinned and
               a census removes it. */
            if (g.dir) {
                char path[4096];
                snprintf(path, sizeof path, "%s/" DICT_PREFIX "%u", g.dir, d->id);
                unlink(path);
            }
            return d;
        }
    return NULL;
}

/* Adds a dictionary built from buf (caller holds mu); *old is the
   dictionary it replaced as current when that one is no longer needed. */
static int add_dict(uint32_t id, const void *buf, size_t len, bool pinned, dict_t **old)
{
    *old = NULL;
    if (g.ndicts >= LLMC_ZDICT_MAX)
        return LLMC_EFULL;
    dict_t *d = calloc(1, sizeof *d);
    if (!d)
        return LLMC_ENOMEM;
    d->id = id;
    d->pinned = pinned;
    d->c = ZSTD_createCDict(buf, len, LEVEL);
    d->d = ZSTD_createDDict(buf, len);
    if (!d->c || !d->d) {
        free_dict(d);
        return LLMC_ENOMEM;
    }
    g.dicts[g.ndicts++] = d;
    if (!g.current || id > g.current->id) {
        dict_t *prev = g.current;
        g.current = d;
        *old = retire_locked(prev);
    }
    return 0;
}

static dict_t *find_locked(uint32_t id)
{
    for (uint32_t i = 0; i < g.ndicts; i++)
        if (g.dicts[i]->id == id)
            return g.dicts[i];
    return NULL;
}

void llmc_zdict_drop(uint32_t id)
{
    if (!id)
        return;
    pthread_mutex_lock(&g.mu);
    dict_t *d = find_locked(id), *gone = NULL;
    /* A drop after shutdown (an entry outliving the registry) finds nothing. */
    if (d && d->holds && --d->holds == 0)
        gone = retire_locked(d);
    pthread_mutex_unlock(&g.mu);
    free_dict(gone);
}

static ZSTD_CCtx *get_cctx(void)
{
    pthread_mutex_lock(&g.mu);
    ZSTD_CCtx *c = g.ncpool ? g.cpool[--g.ncpool] : NULL;
    pthread_mutex_unlock(&g.mu);
    return c ? c : ZSTD_createCCtx();
}

static void put_cctx(ZSTD_CCtx *c)
{
    pthread_mutex_lock(&g.mu);
    if (g.ncpool < POOL) {
        g.cpool[g.ncpool++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&g.mu);
    ZSTD_freeCCtx(c);
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return LLMC_EIO;
    uint8_t *buf = malloc(LLMC_ZDICT_SIZE * 4);
    size_t n = buf ? fread(buf, 1, LLMC_ZDICT_SIZE * 4, f) : 0;
    int bad = ferror(f) || !feof(f);
    fclose(f);
    if (!buf || bad || n == 0) {
        free(buf);
        return buf ? LLMC_EIO : LLMC_ENOMEM;
    }
    *out = buf;
    *len = n;
    return 0;
}

static int load_dir(const char *dir, char *err, size_t errlen)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return 0; /* the disk tier makes it; nothing to load yet */
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(dp))) {
        char *end;
        if (strncmp(de->d_name, DICT_PREFIX, strlen(DICT_PREFIX)))
            continue;
        unsigned long id = strtoul(de->d_name + strlen(DICT_PREFIX), &end, 10);
        if (*end || id == 0 || id > UINT32_MAX)
            continue; /* a temporary file of an interrupted training */
        char path[4096];
        uint8_t *buf;
        size_t len;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        /* Its id is taken even when it cannot be read: a new dictionary
           under the same id would be asked to decode the old records. */
        g.max_id = (uint32_t)id > g.max_id ? (uint32_t)id : g.max_id;
        if ((rc = read_file(path, &buf, &len)) == 0) {
            dict_t *old;
            pthread_mutex_lock(&g.mu);
            /* Records in the data file may use it: pinned. */
            rc = add_dict((uint32_t)id, buf, len, true, &old);
            pthread_mutex_unlock(&g.mu);
            free(buf);
        }
        /* An unreadable dictionary only costs the records that use it (they
           read as damaged); the cache still starts. */
        if (rc == LLMC_EIO) {
            fprintf(stderr, "llmcached: compression dictionary %s unreadable, skipped\n", path);
            rc = 0;
        }
        if (rc)
            seterr(err, errlen, "compression dictionary %s: %s", path, llmc_strerror(rc));
    }
    closedir(dp);
    return rc;
}

int llmc_zdict_init(const llmc_zdict_opts_t *o, const char *dir, char *err, size_t errlen)
{
    pthread_mutex_lock(&g.mu);
    g.o = *o;
    g.ready = true;
    int rc = 0;
    if (dir && !(g.dir = strdup(dir)))
        rc = LLMC_ENOMEM;
    pthread_mutex_unlock(&g.mu);
    if (rc == 0 && dir)
        rc = load_dir(dir, err, errlen);
    if (rc)
        llmc_zdict_shutdown();
    return rc;
}

void llmc_zdict_shutdown(void)
{
    pthread_mutex_lock(&g.mu);
    bool join = g.trainer_joinable;
    g.trainer_joinable = false;
    pthread_mutex_unlock(&g.mu);
    if (join)
        pthread_join(g.trainer, NULL);
    pthread_mutex_lock(&g.mu);
    for (uint32_t i = 0; i < g.ndicts; i++)
        free_dict(g.dicts[i]);
    for (size_t i = 0; i < g.nsamples; i++)
        free(g.samples[i].p);
    for (unsigned i = 0; i < g.ncpool; i++)
        ZSTD_freeCCtx(g.cpool[i]);
    for (unsigned i = 0; i < g.ndpool; i++)
        ZSTD_freeDCtx(g.dpool[i]);
    free(g.dir);
    pthread_mutex_t mu = g.mu;
    memset(&g, 0, sizeof g);
    g.mu = mu;
    pthread_mutex_unlock(&g.mu);
}

/* Writes a dictionary file durably under its final name. */
static int save(const char *dir, uint32_t id, const void *buf, size_t len)
{
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/" DICT_PREFIX "%u.tmp", dir, id);
    snprintf(path, sizeof path, "%s/" DICT_PREFIX "%u", dir, id);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return LLMC_EIO;
    ssize_t w = write(fd, buf, len);
    int ok = w == (ssize_t)len && fsync(fd) == 0;
    ok = (close(fd) == 0) && ok && rename(tmp, path) == 0;
    if (!ok) {
        unlink(tmp);
        return LLMC_EIO;
    }
    /* The name must be durable too before a record can name the
       dictionary: after a power loss a record whose dictionary's
       directory entry was lost could not be read. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ok = dfd >= 0 && fsync(dfd) == 0;
    if (dfd >= 0)
        close(dfd);
    if (!ok)
        unlink(path);
    return ok ? 0 : LLMC_EIO;
}

/* A copy of the samples, concatenated, for training outside the lock. */
typedef struct batch {
    uint8_t *buf;
    size_t *sizes;
    unsigned n;
} batch_t;

static int snapshot(batch_t *b)
{
    size_t total = 0;
    for (size_t i = 0; i < g.nsamples; i++)
        total += g.samples[i].n;
    b->buf = malloc(total ? total : 1);
    b->sizes = malloc(g.nsamples * sizeof *b->sizes + 1);
    if (!b->buf || !b->sizes) {
        free(b->buf);
        free(b->sizes);
        return LLMC_ENOMEM;
    }
    size_t off = 0;
    for (size_t i = 0; i < g.nsamples; i++) {
        memcpy(b->buf + off, g.samples[i].p, g.samples[i].n);
        off += g.samples[i].n;
        b->sizes[i] = g.samples[i].n;
    }
    b->n = (unsigned)g.nsamples;
    return 0;
}

/* Trains from b and makes the result current. Frees b. */
static int train(batch_t *b)
{
    uint8_t *dict = malloc(LLMC_ZDICT_SIZE);
    int rc = dict ? 0 : LLMC_ENOMEM;
    size_t len = 0;
    if (rc == 0) {
        len = ZDICT_trainFromBuffer(dict, LLMC_ZDICT_SIZE, b->buf, b->sizes, b->n);
        if (ZDICT_isError(len))
            rc = LLMC_EINVAL; /* too few or too alike samples: try again later */
    }
    free(b->buf);
    free(b->sizes);
    pthread_mutex_lock(&g.mu);
    uint32_t id = ++g.max_id; /* reserved: two trainings never share an id */
    bool has_dir = g.dir != NULL;
    char *dir = has_dir ? strdup(g.dir) : NULL;
    pthread_mutex_unlock(&g.mu);
    if (rc == 0 && has_dir && !dir)
        rc = LLMC_ENOMEM;
    bool saved = rc == 0 && dir && (rc = save(dir, id, dict, len)) == 0;
    dict_t *old = NULL;
    pthread_mutex_lock(&g.mu);
    if (rc == 0 && (rc = add_dict(id, dict, len, false, &old)) == 0) {
        g.trainings++;
    }
    g.training = false;
    pthread_mutex_unlock(&g.mu);
    /* Not taken (LLMC_ZDICT_MAX held): nothing uses it, and its file would
       come back as the current dictionary at the next start. */
    if (rc && saved) {
        char path[4096];
        snprintf(path, sizeof path, "%s/" DICT_PREFIX "%u", dir, id);
        unlink(path);
    }
    free(dir);
    free_dict(old);
    free(dict);
    return rc;
}

static void *trainer_main(void *arg)
{
    train(arg);
    free(arg);
    return NULL;
}

/* Keeps a sample and starts a training when enough are new (caller holds mu). */
static void sample_locked(const void *src, size_t len)
{
    size_t n = len < SAMPLE_MAX ? len : SAMPLE_MAX;
    uint8_t *p = malloc(n);
    if (!p)
        return;
    memcpy(p, src, n);
    sample_t *s = &g.samples[g.next_sample];
    free(s->p);
    *s = (sample_t){ p, n };
    g.next_sample = (g.next_sample + 1) % SAMPLES_CAP;
    if (g.nsamples < SAMPLES_CAP)
        g.nsamples++;
    g.since_train++;
    size_t want = g.ndicts ? g.o.retrain_every : g.o.train_samples;
    if (want == 0 || g.since_train < want || g.training || g.ndicts >= LLMC_ZDICT_MAX)
        return;
    batch_t *b = malloc(sizeof *b);
    if (!b || snapshot(b)) {
        free(b);
        return;
    }
    /* The previous trainer has finished (training is false): reap it. */
    if (g.trainer_joinable)
        pthread_join(g.trainer, NULL);
    g.trainer_joinable = pthread_create(&g.trainer, NULL, trainer_main, b) == 0;
    if (!g.trainer_joinable) {
        free(b->buf);
        free(b->sizes);
        free(b);
        return;
    }
    g.training = true;
    g.since_train = 0;
}

int llmc_zdict_train_now(void)
{
    pthread_mutex_lock(&g.mu);
    batch_t b;
    int rc = g.nsamples ? snapshot(&b) : LLMC_EINVAL;
    if (rc == 0)
        g.since_train = 0;
    pthread_mutex_unlock(&g.mu);
    return rc ? rc : train(&b);
}

/* Compresses src with d (NULL: none): 1 with *out, 0 when it does not pay. */
static int compress(const dict_t *d, const void *src, size_t len, uint8_t **out, size_t *out_len,
                    uint32_t *dict_id)
{
    size_t cap = ZSTD_compressBound(len);
    uint8_t *buf = malloc(cap);
    ZSTD_CCtx *cx = get_cctx();
    if (!buf || !cx) {
        free(buf);
        ZSTD_freeCCtx(cx);
        return LLMC_ENOMEM;
    }
    size_t n = d ? ZSTD_compress_usingCDict(cx, buf, cap, src, len, d->c)
                 : ZSTD_compressCCtx(cx, buf, cap, src, len, LEVEL);
    put_cctx(cx);
    if (ZSTD_isError(n) || n > len - len / 16) {
        free(buf);
        return 0;
    }
    *out = buf;
    *out_len = n;
    *dict_id = d ? d->id : 0;
    return 1;
}

/* Packs src; with a dictionary, returns holding it (held) or having
   pinned it (!held: for a record). */
static int pack(const void *src, size_t len, uint8_t **out, size_t *out_len, uint32_t *dict_id,
                bool held)
{
    pthread_mutex_lock(&g.mu);
    if (!g.ready || !g.o.on || len < g.o.min_bytes || len == 0) {
        pthread_mutex_unlock(&g.mu);
        return 0;
    }
    if (held || !g.o.sample_held_only)
        sample_locked(src, len);
    dict_t *d = len <= DICT_USE_MAX ? g.current : NULL;
    /* Held while it compresses, so that a newer one cannot free it meanwhile. */
    if (d) {
        d->holds++;
        d->pinned = d->pinned || !held;
    }
    pthread_mutex_unlock(&g.mu);
    int rc = compress(d, src, len, out, out_len, dict_id);
    if (d && (rc != 1 || !held))
        llmc_zdict_drop(d->id);
    return rc;
}

void llmc_zdict_sample(const void *src, size_t len)
{
    pthread_mutex_lock(&g.mu);
    if (g.ready && g.o.on && len >= g.o.min_bytes && len > 0)
        sample_locked(src, len);
    pthread_mutex_unlock(&g.mu);
}

int llmc_zdict_pack(const void *src, size_t len, uint8_t **out, size_t *out_len, uint32_t *dict_id)
{
    return pack(src, len, out, out_len, dict_id, false);
}

int llmc_zdict_pack_held(const void *src, size_t len, uint8_t **out, size_t *out_len,
                         uint32_t *dict_id)
{
    return pack(src, len, out, out_len, dict_id, true);
}

int llmc_zdict_frame_fits(const void *src, size_t len, uint64_t raw_len)
{
    unsigned long long fcs = ZSTD_getFrameContentSize(src, len);
    if (fcs == ZSTD_CONTENTSIZE_ERROR || (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != raw_len))
        return LLMC_ECORRUPT;
    return raw_len / LLMC_ZDICT_MAX_EXPANSION > len ? LLMC_ECORRUPT : 0;
}

int llmc_zdict_unpack(uint32_t dict_id, const void *src, size_t len, void *dst, size_t raw_len)
{
    /* One lock to hold the dictionary and take a context, one to give both
       back: a disk hit decodes on the event loop. */
    pthread_mutex_lock(&g.mu);
    dict_t *d = dict_id ? find_locked(dict_id) : NULL;
    ZSTD_DCtx *dx = NULL;
    if (d)
        d->holds++; /* see the file header: a census may unpin it meanwhile */
    if (d || !dict_id)
        dx = g.ndpool ? g.dpool[--g.ndpool] : NULL;
    pthread_mutex_unlock(&g.mu);
    /* A sound record (its checksum held) whose dictionary is gone, e.g. a
       file removed by hand: unreadable here, not damage. LLMC_EVERSION
       makes the disk tier drop the record, as it does records of another
       format, instead of judging the whole file damaged. */
    if (dict_id && !d)
        return LLMC_EVERSION;
    if (!dx)
        dx = ZSTD_createDCtx();
    size_t n = !dx ? 0
               : d ? ZSTD_decompress_usingDDict(dx, dst, raw_len, src, len, d->d)
                   : ZSTD_decompressDCtx(dx, dst, raw_len, src, len);
    dict_t *gone = NULL;
    ZSTD_DCtx *spare = dx;
    pthread_mutex_lock(&g.mu);
    if (dx && g.ndpool < POOL) {
        g.dpool[g.ndpool++] = dx;
        spare = NULL;
    }
    if (d && --d->holds == 0)
        gone = retire_locked(d);
    pthread_mutex_unlock(&g.mu);
    ZSTD_freeDCtx(spare);
    free_dict(gone);
    if (!dx)
        return LLMC_ENOMEM;
    return ZSTD_isError(n) || n != raw_len ? LLMC_ECORRUPT : 0;
}

size_t llmc_zdict_census_begin(uint32_t ids[LLMC_ZDICT_MAX])
{
    size_t n = 0;
    pthread_mutex_lock(&g.mu);
    for (uint32_t i = 0; i < g.ndicts; i++)
        if (g.dicts[i]->pinned && g.dicts[i] != g.current)
            ids[n++] = g.dicts[i]->id;
    pthread_mutex_unlock(&g.mu);
    return n;
}

size_t llmc_zdict_census_end(const uint32_t *ids, const bool *seen, size_t n)
{
    dict_t *gone[LLMC_ZDICT_MAX];
    size_t ngone = 0, unpinned = 0;
    assert(n <= LLMC_ZDICT_MAX);
    pthread_mutex_lock(&g.mu);
    for (size_t i = 0; i < n; i++) {
        dict_t *d = seen[i] ? NULL : find_locked(ids[i]);
        /* Gone meanwhile (a shutdown), or not pinned any more: nothing to do. */
        if (!d || !d->pinned)
            continue;
        assert(d != g.current); /* it was not at the start, and never is again */
        d->pinned = false;
        unpinned++;
        if ((gone[ngone] = retire_locked(d)))
            ngone++;
    }
    g.unpinned += unpinned;
    pthread_mutex_unlock(&g.mu);
    while (ngone)
        free_dict(gone[--ngone]);
    return unpinned;
}

void llmc_zdict_get_stats(llmc_zdict_stats_t *s)
{
    pthread_mutex_lock(&g.mu);
    *s = (llmc_zdict_stats_t){
        .current = g.current ? g.current->id : 0, .count = g.ndicts, .trainings = g.trainings,
        .removed = g.removed, .unpinned = g.unpinned,
    };
    for (uint32_t i = 0; i < g.ndicts; i++)
        s->pinned += g.dicts[i]->pinned;
    pthread_mutex_unlock(&g.mu);
}
