/*
 * http/http_int.h: internals shared by the HTTP server's files. Not for
 * other subsystems: they use http.h.
 *
 * The files, top to bottom; each calls only files below it (tools'
 * file-circles finds no circle among them):
 *
 *   server.c     the server: listening socket, accept, counters, closing it
 *   respond.c    what handlers call: responses, streaming, abort
 *   conn.c       one connection: reading, timers, dispatch, the answers the
 *                server gives itself (refusals, 100 Continue), writes, the
 *                one finish of a request, lingering close, close
 *   parse.c      a request out of the read buffer: libhttp-parser and its
 *                callbacks, the head checks; no I/O
 *   head.c       response heads (status line, reason, Date cache) and
 *                error bodies, built into a buffer; no I/O
 *   mem.c        buffer growth, the read-buffer pool, freeing the server
 *   head_scan.c  strict line checker for a request's head (pure)
 *   chunk_scan.c strict framing checker for a chunked request body (pure)
 *
 * Nothing calls up. A connection reaches the layer above the server only
 * through the pointers it was configured with (handler, on_done, a
 * request's on_abort); the server's final free after its last connection
 * closed is done in mem.c by whichever closes last, so conn.c never calls
 * server.c; and the refusals the connection answers itself are built from
 * head.c, not through respond.c.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A connection owns exactly one request object (conn->req, embedded), and
 *   the next request is not parsed until the previous one has finished, i.e.
 *   its response write completed. So the request needs no malloc, and its
 *   buffers (head, body, response head) are per connection and reused.
 * - A conn struct is freed only in the close callback of the last of its two
 *   handles (tcp, timer). Everything that can close a connection just sets
 *   closing and calls uv_close, so no caller up the stack ever sees it freed.
 */
#ifndef LLMC_HTTP_INT_H
#define LLMC_HTTP_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <http_parser.h>
#include <uv.h>

#include "http/http.h"

/* Read buffer per connection. Head and body are copied out of it as they
   are parsed, so it only ever holds unparsed bytes: a small fixed size is
   enough whatever the limits are. */
#define LLMC_HTTP_RBUF 16384

/* Buffers bigger than this are freed after their request instead of kept
   for the next one, so one large body does not pin memory on an idle
   keep-alive connection. */
#define LLMC_HTTP_KEEP_BUF 65536

/* How long a connection we close ourselves keeps draining input after its
   last answer, so that the kernel does not answer unread input with an RST
   that would destroy the answer at the client before it was read. */
#define LLMC_HTTP_LINGER_MS 2000

/* ---- head_scan.c ---- */

enum llmc__http_scan_result {
    LLMC_HS_MORE = 0,     /* all bytes fine, head not complete yet */
    LLMC_HS_DONE = 1,     /* head complete, *used is the byte after its blank line */
    LLMC_HS_BAD = -1,     /* not a well-formed head: 400 */
    LLMC_HS_TOO_BIG = -2, /* more than max_bytes: 431 */
    LLMC_HS_LINE_TOO_BIG = -3 /* more than max_bytes before the request line ended: 414 */
};

typedef struct llmc__http_scan {
    uint8_t state;
    size_t bytes;      /* head bytes seen so far */
    size_t max_bytes;  /* 0: no limit */
} llmc__http_scan_t;

/* Starts a new head. */
void llmc__http_scan_init(llmc__http_scan_t *hs, size_t max_bytes);

/* Checks the next n bytes of a request head. Returns an
   llmc__http_scan_result; with LLMC_HS_DONE, *used is how many of the n
   bytes belong to the head. Pure: keeps its state in hs only. */
int llmc__http_scan(llmc__http_scan_t *hs, const char *p, size_t n, size_t *used);

/* ---- chunk_scan.c ---- */

enum llmc__http_chunk_result {
    LLMC_CS_MORE = 0,     /* all bytes fine, body not complete yet */
    LLMC_CS_DONE = 1,     /* body complete, *used is the byte after its final CRLF */
    LLMC_CS_BAD = -1,     /* not a well-formed chunked body: 400 */
    LLMC_CS_TOO_BIG = -2  /* extensions and trailers over max_meta bytes: 431 */
};

typedef struct llmc__http_chunk {
    uint8_t state;
    uint8_t digits;    /* hex digits of the chunk size so far */
    uint64_t left;     /* the chunk size being read, then its data bytes left */
    size_t meta;       /* extension and trailer bytes seen so far */
    size_t max_meta;   /* 0: no limit */
} llmc__http_chunk_t;

/* Starts a new chunked body, at the byte after the head. */
void llmc__http_chunk_init(llmc__http_chunk_t *cs, size_t max_meta);

/* Checks the next n bytes of a chunked body. Returns an
   llmc__http_chunk_result; *used is how many of the n bytes were checked:
   all of them with LLMC_CS_MORE, those up to and including the final CRLF
   with LLMC_CS_DONE (the rest belong to the next request), 0 otherwise.
   After DONE or an error every call answers the same. Pure: keeps its state
   in cs only. */
int llmc__http_chunk_scan(llmc__http_chunk_t *cs, const char *p, size_t n, size_t *used);

/* ---- conn.c ---- */

typedef enum llmc__http_phase {
    LLMC_PH_READ,     /* parsing a request (or waiting for one) */
    LLMC_PH_HANDLER,  /* the handler owns the request, nothing sent yet */
    LLMC_PH_STREAM,   /* the handler owns the request and streams its body */
    LLMC_PH_WRITE,    /* response handed over; waiting for the writes to end */
    LLMC_PH_LINGER    /* last answer sent; draining input until close */
} llmc__http_phase_t;

typedef struct llmc__http_hoff {
    uint32_t name, name_len, value, value_len;  /* offsets into conn->hbuf */
} llmc__http_hoff_t;

typedef struct llmc__http_conn llmc__http_conn_t;

struct llmc__http_conn {
    llmc_http_req_t req;          /* the request in flight; reused */
    llmc_http_server_t *s;
    llmc__http_conn_t *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;             /* fires at deadline or earlier; see timer_set */
    uint64_t deadline;            /* loop time (ms) the current limit ends; 0: none */
    uv_write_t wreq;              /* the one by-reference write of a response */
    uv_shutdown_t sreq;
    http_parser parser;
    llmc__http_scan_t scan;
    llmc__http_chunk_t chunk;     /* used while chunk_on */
    llmc__http_phase_t phase;
    int handles;                  /* open handles; the conn is freed at 0 */
    bool closing, reading, peer_eof, counted;
    bool in_feed;                 /* conn_feed is on the stack: do not re-enter */
    bool req_started;             /* bytes of the next request have come */
    bool scan_done, head_done;
    bool want_continue;           /* the head asks for 100 Continue, not sent yet */
    bool chunk_on;                /* a chunked body is being read and checked */
    bool chunked_out, no_body;    /* how the response body is framed */
    uint8_t last_cb;              /* which parser data callback ran last */

    /* Response bookkeeping, reset per request. */
    int status;                   /* status sent, 0 while none */
    uint64_t bytes_out;
    unsigned writes_pending;
    size_t wreq_bytes;
    uint64_t submitted;           /* response bytes ever handed to libuv on this conn */
    uint64_t acked_mark;          /* of those, the client had taken at the last check */
    void (*release)(void *arg);
    void *release_arg;
    int err_status;               /* set by a parser callback that rejects */
    const char *err_code, *err_msg;

    /* Request head: target, path copy and header names and values, each
       NUL-terminated; offsets until the head is complete. */
    char *hbuf;
    size_t hlen, hcap;
    llmc__http_hoff_t *hoff;
    llmc_http_header_t *hdrs;
    size_t nh, nh_cap;

    char *bbuf;                   /* decoded body, NUL-terminated */
    size_t blen, bcap;
    char *obuf;                   /* response head (+ copied body) */
    size_t olen, ocap;

    size_t rpos, rlen;            /* unparsed bytes are rbuf[rpos, rlen) */
    char *rbuf;                   /* LLMC_HTTP_RBUF bytes while reading; NULL when idle */
};

#define LLMC__CONN_OF(r) ((llmc__http_conn_t *)(void *)(r))

/* uv_buf_init takes an unsigned int length; uv_buf_t holds a size_t. */
static inline uv_buf_t llmc__http_buf(const char *p, size_t len)
{
    uv_buf_t b;

    b.base = (char *)p;
    b.len = len;
    return b;
}

static inline size_t llmc__http_bufs_total(const uv_buf_t *b, unsigned n)
{
    size_t t = 0;

    for (unsigned i = 0; i < n; i++)
        t += b[i].len;
    return t;
}

/* Takes over an accepted (or socketpair) stream fd as a client connection.
   Used by accept and by the fuzzer. 0 or an LLMC_E* code (fd then closed). */
int llmc__http_conn_adopt_fd(llmc_http_server_t *s, int fd);

/* Sets up a connection for s in c (zeroed) and counts it. Loop thread. */
int llmc__http_conn_init(llmc_http_server_t *s, llmc__http_conn_t *c);

/* Starts serving a connection whose tcp handle is connected. */
void llmc__http_conn_start(llmc__http_conn_t *c);

/* Closes the connection: aborts a request the handler owns, then closes
   both handles. Idempotent. */
void llmc__http_conn_close(llmc__http_conn_t *c);
/* Answers a request the server rejects itself with an error and closes. */
void llmc__http_conn_reject(llmc__http_conn_t *c, int status, const char *code, const char *msg);

/* Writes bufs, by reference (copy false: they must outlive the write) or
   copied where libuv must keep them. Returns 0 or LLMC_EIO (conn closed). */
int llmc__http_send(llmc__http_conn_t *c, uv_buf_t *bufs, unsigned n, bool copy);

/* Finishes the request once nothing is owned by the handler and no write is
   pending: release, on_done, then the next request or the close. */
void llmc__http_maybe_finish(llmc__http_conn_t *c);

/* Answers a request the handler owns with a complete response whose body
   is copied after the head (h1 and h2: preformatted header lines). Does
   nothing when the request is not the handler's any more. */
void llmc__http_answer_copy(llmc__http_conn_t *c, int status, const char *h1, size_t l1, const char *h2,
                            size_t l2, const char *body, size_t body_len);

/* The same with an OpenAI-shaped error body (see llmc_http_respond_error). */
void llmc__http_answer_error(llmc__http_conn_t *c, int status, const char *hdrs, const char *type,
                             const char *code, const char *message);

/* ---- parse.c ---- */

enum llmc__http_parse_result {
    LLMC_PARSE_MORE = 0,   /* bytes taken, no complete request yet: parse on while bytes remain */
    LLMC_PARSE_DONE = 1,   /* c->req is complete: head, body and the client's keep-alive wish */
    LLMC_PARSE_ERROR = -1  /* refuse it: c->err_status, err_code and err_msg say how */
};

/* Starts the next request: parser, scans, head and body buffers. */
void llmc__http_parse_reset(llmc__http_conn_t *c);

/* Parses the unparsed bytes of rbuf once, the head or the body but not both
   (so that the head's checks come before a body byte is read), and moves
   rpos past what it took. Returns an llmc__http_parse_result; sets
   c->want_continue when the client waits for 100 Continue. No I/O. */
int llmc__http_parse(llmc__http_conn_t *c);

/* ---- head.c ---- */

/* Builds a response head into c->obuf (length in c->olen): the status line,
   Date, Content-Length when has_length, Connection (from req.keep_alive),
   then the preformatted header lines h1 and h2, leaving room for extra more
   bytes (a body to be copied after it). Sets c->status. 0 or LLMC_ENOMEM. */
int llmc__http_head(llmc__http_conn_t *c, int status, bool has_length, size_t length, const char *h1,
                    size_t l1, const char *h2, size_t l2, size_t extra);

/* The head of a complete response of body_len bytes: sets c->no_body (a
   HEAD request, or a status without a body) and builds the head, with room
   for extra bytes of body unless there is none. 0 or LLMC_ENOMEM. */
int llmc__http_head_full(llmc__http_conn_t *c, int status, const char *h1, size_t l1, const char *h2,
                         size_t l2, size_t body_len, size_t extra);

/* False for 1xx, 204 and 304, whose responses never carry a body. */
bool llmc__http_status_has_body(int status);

/* True for the error statuses a retry of the same request cannot change
   (400, 404, 405, 413, 414, 417, 431, 505): their error answers carry
   X-Should-Retry: false. */
bool llmc__http_status_final(int status);

/* {"error":{"message","type","code"}} as a string to free(); NULL when out
   of memory. type NULL means "invalid_request_error", code NULL is JSON
   null, message NULL is "". */
char *llmc__http_error_body(const char *type, const char *code, const char *message);

/* ---- server.c ---- */

/* The counters as the server keeps them. Its loop thread is the only
   writer, so a count is a relaxed load and store, not a locked
   instruction; another thread reads them with relaxed loads
   (llmc_http_server_stats). */
typedef struct llmc__http_counters {
#define LLMC__HTTP_ATOMIC_FIELD(field, name, kind, unit, help) _Atomic uint64_t field;
    LLMC_HTTP_STATS_TABLE(LLMC__HTTP_ATOMIC_FIELD)
#undef LLMC__HTTP_ATOMIC_FIELD
} llmc__http_counters_t;

#define LLMC__HTTP_STAT(s, field) atomic_load_explicit(&(s)->st.field, memory_order_relaxed)
#define LLMC__HTTP_STAT_SET(s, field, v) \
    atomic_store_explicit(&(s)->st.field, (uint64_t)(v), memory_order_relaxed)
/* Loop thread of s only. */
#define LLMC__HTTP_INC(s, field) LLMC__HTTP_STAT_SET(s, field, LLMC__HTTP_STAT(s, field) + 1)
#define LLMC__HTTP_DEC(s, field) LLMC__HTTP_STAT_SET(s, field, LLMC__HTTP_STAT(s, field) - 1)

struct llmc_http_server {
    uv_loop_t *loop;
    llmc_http_server_config_t cfg;
    uv_tcp_t listener;
    int port;
    bool closing, listener_closed;
    bool draining;                /* no new connections or requests; see llmc_http_server_drain */
    void (*close_cb)(void *arg);
    void *close_arg;
    void (*drained_cb)(void *arg); /* once draining with no connection left; then NULL */
    void *drained_arg;
    llmc__http_conn_t *conns;     /* every conn not yet freed */
    size_t nalive;
    uint64_t seq;
    llmc__http_counters_t st;
    char *rbuf_pool[64];          /* read buffers idle connections gave back */
    unsigned npool;
    time_t date_sec;              /* second the cached Date is for (head.c) */
    char date[40];
    size_t date_len;
};

/* ---- mem.c ---- */

/* Makes *buf at least need bytes (doubling). 0 or LLMC_ENOMEM. */
int llmc__http_grow(char **buf, size_t *cap, size_t need);

/* The body buffer (c->bbuf) grown like llmc__http_grow (to need itself
   when exact: a declared length is known whole), its growth counted
   in the server's body_bytes and in the limits' shared body_memory. 0,
   LLMC_ENOMEM, or LLMC_EFULL when the growth would take body_memory past
   max_body_memory (nothing then changes). Loop thread. */
int llmc__http_body_grow(llmc__http_conn_t *c, size_t need, bool exact);

/* Frees c's body buffer and takes it out of the counts. */
void llmc__http_body_free(llmc__http_conn_t *c);

/* Read buffers of LLMC_HTTP_RBUF bytes: a connection holds one only while
   bytes are in flight, taking it from and giving it back to its server's
   small pool. take returns NULL when out of memory. Loop thread. */
char *llmc__http_rbuf_take(llmc_http_server_t *s);
void llmc__http_rbuf_give(llmc_http_server_t *s, char *buf);

/* Frees s (and its pool), then calls its close callback, once it is
   closing and its listener and every connection have closed; otherwise
   does nothing. Called by whichever of them closes last. Draining (not
   closing), it calls the drained callback instead, once, when the last
   connection and the listener are gone; s stays. */
void llmc__http_server_maybe_free(llmc_http_server_t *s);

#endif
