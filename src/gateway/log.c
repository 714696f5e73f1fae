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
