/*
 * gateway/log.h: the buffered access log.
 *
 * Two parts. An llmc_logbuf_t is one worker's buffer of whole lines: no
 * lock, no I/O of its own, it hands whole-line runs to a write callback
 * (so it is unit tested with a callback that records what it gets). An
 * llmc_log_t is the one destination every worker's buffer writes to: the
 * descriptor, the lock that keeps one worker's run of lines from being
 * mixed with another's, and the SIGHUP reopen.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Only whole lines are ever written, and a run of lines goes out in one
 *   write() under the log's lock: with O_APPEND a regular file would keep
 *   runs apart without it, but a pipe (stdout under a supervisor) splits
 *   writes above PIPE_BUF between writers. A line longer than the buffer
 *   is written alone, after what was buffered before it, so order holds.
 * - The reopen is not the dup3 alone: every worker first writes out its own
 *   buffer on its own thread (the buffer has no lock), and the last one to
 *   do so swaps the descriptor. So the lines of requests finished before
 *   the signal are in the old file and none is split between the two.
 * - Writing is blocking, as before; what changed is that it happens once
 *   per buffer (64 KiB) or per interval, not once per request.
 */
#ifndef LLMC_GW_LOG_H
#define LLMC_GW_LOG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Writes len bytes of whole lines; returns 0 or a negative LLMC_E* code
   (the bytes are then lost: a full disk must not stop serving). */
typedef int (*llmc_logbuf_write_fn)(void *arg, const char *buf, size_t len);

typedef struct llmc_logbuf {
    char *buf;
    size_t cap, len;
    llmc_logbuf_write_fn write;
    void *arg;
    uint64_t lines_lost;           /* lines whose write failed */
    unsigned pending_lines;        /* lines in buf */
} llmc_logbuf_t;

/* Sets up lb with a cap-byte buffer (cap 0: nothing buffered, every line
   written at once) writing through write(arg, ...). 0 or LLMC_ENOMEM.
   lb then belongs to one thread. */
int llmc_logbuf_init(llmc_logbuf_t *lb, size_t cap, llmc_logbuf_write_fn write, void *arg);

/* Writes out what lb holds, then frees its buffer. Safe on a zeroed lb
   and twice. */
void llmc_logbuf_free(llmc_logbuf_t *lb);

/* Appends one whole line (its '\n' included; line is copied). When it does
   not fit beside what lb holds, that is written first; a line longer than
   the buffer is then written alone. Returns true when lb went from empty
   to holding data: the caller arms its flush timer then. */
bool llmc_logbuf_append(llmc_logbuf_t *lb, const char *line, size_t len);

/* Writes out what lb holds (nothing when it is empty). */
void llmc_logbuf_flush(llmc_logbuf_t *lb);

static inline bool llmc_logbuf_empty(const llmc_logbuf_t *lb)
{
    return lb->len == 0;
}

/* One request's access-log line, as llmc_log_format writes it:
   {"ts":"2026-01-02T03:04:05.678Z","thread":0,"id":7,"method":"POST",
    "path":"/v1/chat/completions","status":200,"cache":"HIT",
    "key":"0123456789abcdef","bytes":1234,"dur_ms":0.125} */
typedef struct llmc_access {
    int64_t now_ms;                /* wall clock, ms since the epoch */
    unsigned thread;
    uint64_t id;
    const char *method, *path;     /* path is JSON-escaped (and cut at 600 bytes) */
    int status;
    const char *cache;             /* HIT, MISS, ...; "-" when none */
    const char *key;               /* hex; its first 16 digits are logged */
    uint64_t bytes;
    uint64_t dur_ns;
} llmc_access_t;

/* The date and time to the second, kept between lines: gmtime and
   strftime run once a second, not once a line. Zero it before first use. */
typedef struct llmc_log_clock {
    int64_t sec;
    bool set;
    char ymdhms[24];               /* "YYYY-MM-DDTHH:MM:SS" */
} llmc_log_clock_t;

#define LLMC_LOG_LINE_MAX 1024     /* the longest line llmc_log_format writes */

/* Writes a's line, its '\n' included, into out (at least
   LLMC_LOG_LINE_MAX bytes; not NUL-terminated) and returns its length.
   Hand-rolled rather than snprintf'd: on a hit, printf's parsing and its
   double formatting cost more than the rest of the line. */
size_t llmc_log_format(char *out, llmc_log_clock_t *clk, const llmc_access_t *a);

/* The destination every worker's buffer writes to. */
typedef struct llmc_log {
    int fd;                        /* -1: off */
    bool own_fd;                   /* opened here (closed by llmc_log_close) */
    char *path;                    /* what a reopen opens; NULL: nothing to reopen */
    pthread_mutex_t mu;            /* one run of lines at a time; the reopen's swap */
    _Atomic unsigned reopen_left;  /* workers still to flush before the reopen */
} llmc_log_t;

/* Opens path for appending (created 0640), or takes fd (stdout) when path
   is NULL; fd -1 and path NULL: the log is off. 0 or LLMC_EIO (errno set). */
int llmc_log_open(llmc_log_t *log, const char *path, int fd);

/* Closes the descriptor when it was opened here. Safe on a zeroed log. */
void llmc_log_close(llmc_log_t *log);

/* The llmc_logbuf_write_fn of a buffer writing to log (arg: the log):
   one write() of the run under the log's lock, resumed after a short
   write or EINTR. Any thread. */
int llmc_log_write(void *arg, const char *buf, size_t len);

/* A reopen in n steps: llmc_log_reopen_begin(log, n) before asking n
   workers to flush; each calls llmc_log_reopen_step after its flush, and
   the last one reopens the path and swaps it in with dup3. Begin returns
   false when a reopen is still under way or there is nothing to reopen.
   Step returns 1 when this call reopened, 0 when others are still to
   flush, or a negative LLMC_E* code when the reopen failed (the old file
   stays in use; errno set). Any thread. */
bool llmc_log_reopen_begin(llmc_log_t *log, unsigned n);
int llmc_log_reopen_step(llmc_log_t *log);

#endif
