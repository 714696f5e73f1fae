/*
 * gateway/log.c: the buffered access log (see log.h for the decisions).
 *
 * The buffer side does no I/O and takes no lock: a worker appends the line
 * it formatted and, once in a while (full, its flush timer, a reopen,
 * shutdown), hands the whole run to its write callback. The log side is
 * that callback for the real gateway: a lock, a write() loop, and the
 * descriptor swap of a SIGHUP reopen.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway/log.h"
#include "llmc/error.h"

/* ---- one worker's buffer --------------------------------------------------- */

int llmc_logbuf_init(llmc_logbuf_t *lb, size_t cap, llmc_logbuf_write_fn write, void *arg)
{
    memset(lb, 0, sizeof(*lb));
    lb->write = write;
    lb->arg = arg;
    if (cap && !(lb->buf = malloc(cap)))
        return LLMC_ENOMEM;
    lb->cap = cap;
    return 0;
}

static void put(llmc_logbuf_t *lb, const char *buf, size_t len, unsigned lines)
{
    if (lb->write(lb->arg, buf, len) < 0)
        lb->lines_lost += lines;
}

void llmc_logbuf_flush(llmc_logbuf_t *lb)
{
    if (lb->len == 0)
        return;
    put(lb, lb->buf, lb->len, lb->pending_lines);
    lb->len = 0;
    lb->pending_lines = 0;
}

bool llmc_logbuf_append(llmc_logbuf_t *lb, const char *line, size_t len)
{
    if (len > lb->cap - lb->len)
        llmc_logbuf_flush(lb);
    if (len > lb->cap) {
        /* Longer than the whole buffer: alone, after what came before it. */
        put(lb, line, len, 1);
        return false;
    }
    bool was_empty = lb->len == 0;
    memcpy(lb->buf + lb->len, line, len);
    lb->len += len;
    lb->pending_lines++;
    return was_empty;
}

void llmc_logbuf_free(llmc_logbuf_t *lb)
{
    if (lb->write)
        llmc_logbuf_flush(lb);
    free(lb->buf);
    lb->buf = NULL;
    lb->cap = lb->len = 0;
}

/* ---- one line --------------------------------------------------------------- */

#define PATH_MAX_OUT 600

static char *put_str(char *o, const char *s)
{
    size_t n = strlen(s);
    memcpy(o, s, n);
    return o + n;
}
#define PUT_LIT(o, lit) (memcpy(o, lit, sizeof(lit) - 1), (o) + sizeof(lit) - 1)

static char *put_u64(char *o, uint64_t v)
{
    char tmp[24];
    int i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(o, tmp + i, sizeof(tmp) - (size_t)i);
    return o + sizeof(tmp) - i;
}

/* v as exactly n digits (v < 10^n). */
static char *put_fixed(char *o, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10)
        o[i] = (char)('0' + v % 10);
    return o + n;
}

/* s as a JSON string's inside, at most PATH_MAX_OUT bytes of it. */
static char *put_esc(char *o, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    char *end = o + PATH_MAX_OUT;
    for (; s && *s && o + 6 <= end; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o = PUT_LIT(o, "\\u00");
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    return o;
}

/* At most max bytes of s (the method, the cache word and the key are short
   and come from us; the bound keeps the line's length bounded anyway). */
static char *put_short(char *o, const char *s, size_t max)
{
    if (!s)
        return o;
    size_t n = strnlen(s, max);
    memcpy(o, s, n);
    return o + n;
}

size_t llmc_log_format(char *out, llmc_log_clock_t *clk, const llmc_access_t *a)
{
    int64_t sec = a->now_ms / 1000;
    if (!clk->set || clk->sec != sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(clk->ymdhms, sizeof(clk->ymdhms), "%Y-%m-%dT%H:%M:%S", &tm);
        clk->sec = sec;
        clk->set = true;
    }
    char *o = out;
    o = PUT_LIT(o, "{\"ts\":\"");
    o = put_str(o, clk->ymdhms);
    *o++ = '.';
    o = put_fixed(o, (unsigned)(a->now_ms % 1000), 3);
    o = PUT_LIT(o, "Z\",\"thread\":");
    o = put_u64(o, a->thread);
    o = PUT_LIT(o, ",\"id\":");
    o = put_u64(o, a->id);
    o = PUT_LIT(o, ",\"method\":\"");
    o = put_short(o, a->method, 16);
    o = PUT_LIT(o, "\",\"path\":\"");
    o = put_esc(o, a->path);
    o = PUT_LIT(o, "\",\"status\":");
    o = put_u64(o, (uint64_t)(a->status < 0 ? 0 : a->status));
    o = PUT_LIT(o, ",\"cache\":\"");
    o = put_short(o, a->cache ? a->cache : "-", 16);
    o = PUT_LIT(o, "\",\"key\":\"");
    o = put_short(o, a->key, 16);
    o = PUT_LIT(o, "\",\"bytes\":");
    o = put_u64(o, a->bytes);
    o = PUT_LIT(o, ",\"dur_ms\":");
    uint64_t us = (a->dur_ns + 500) / 1000;
    o = put_u64(o, us / 1000);
    *o++ = '.';
    o = put_fixed(o, (unsigned)(us % 1000), 3);
    o = PUT_LIT(o, "}\n");
    return (size_t)(o - out);
}

/* ---- the destination ------------------------------------------------------- */

static int open_append(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

int llmc_log_open(llmc_log_t *log, const char *path, int fd)
{
    memset(log, 0, sizeof(*log));
    log->fd = fd;
    pthread_mutex_init(&log->mu, NULL);
    if (path) {
        if (!(log->path = strdup(path)))
            return LLMC_ENOMEM;
        if ((log->fd = open_append(path)) < 0)
            return LLMC_EIO;
        log->own_fd = true;
    }
    return 0;
}

void llmc_log_close(llmc_log_t *log)
{
    if (log->own_fd && log->fd >= 0)
        close(log->fd);
    log->fd = -1;
    log->own_fd = false;
    free(log->path);
    log->path = NULL;
    pthread_mutex_destroy(&log->mu);
}

int llmc_log_write(void *arg, const char *buf, size_t len)
{
    llmc_log_t *log = arg;
    int rc = 0;
    pthread_mutex_lock(&log->mu);
    while (len > 0) {
        ssize_t n = write(log->fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = LLMC_EIO;
            break;
        }
        buf += n;
        len -= (size_t)n;
    }
    pthread_mutex_unlock(&log->mu);
    return rc;
}

bool llmc_log_reopen_begin(llmc_log_t *log, unsigned n)
{
    unsigned none = 0;
    if (!log->path || log->fd < 0 || n == 0)
        return false;
    return atomic_compare_exchange_strong(&log->reopen_left, &none, n);
}

int llmc_log_reopen_step(llmc_log_t *log)
{
    if (atomic_fetch_sub(&log->reopen_left, 1) != 1)
        return 0;
    int fd = open_append(log->path), rc = 1;
    /* Under the lock: a run being written goes whole to the old file. */
    pthread_mutex_lock(&log->mu);
    if (fd < 0 || dup3(fd, log->fd, O_CLOEXEC) < 0)
        rc = LLMC_EIO;
    pthread_mutex_unlock(&log->mu);
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return rc;
}
