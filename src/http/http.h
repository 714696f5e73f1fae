/*
 * http/http.h: the HTTP/1.1 server: listeners, connections, framing, limits.
 *
 * One llmc_http_server_t per event-loop thread. Each binds its own listening
 * socket with SO_REUSEPORT, so the kernel spreads connections over threads
 * and no accept lock is shared.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Requests on one connection are handled one at a time: once a request is
 *   complete the parser is paused and reading stops until its response has
 *   been handed over. Pipelined requests are therefore answered in order,
 *   and a client cannot make us buffer unbounded work.
 * - Framing is strict (libhttp-parser, not lenient): both Content-Length and
 *   Transfer-Encoding, duplicate lengths, bad chunk sizes, NUL or control
 *   bytes in headers, obsolete line folding: 400 and the connection closes.
 *   Such a request never reaches the handler.
 * - Every limit has its status: header bytes 431, body bytes 413, the time
 *   to read a request's head 408; errors the server makes itself carry an
 *   OpenAI-shaped JSON body (and X-Should-Retry: false when sending the same
 *   request again cannot help) and close the connection.
 * - A request object lives from dispatch until its response has been
 *   written or the client has gone. When the client goes first, the server
 *   calls req->on_abort (if the handler set it) and frees the request right
 *   after: the handler must forget req inside on_abort.
 */
#ifndef LLMC_HTTP_H
#define LLMC_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "llmc/stat.h"

typedef struct llmc_http_limits {
    size_t max_header_bytes;      /* request line + headers; over: 431 */
    size_t max_body_bytes;        /* decoded body; over: 413 (before reading it when declared) */
    size_t max_headers;           /* header count; over: 431 */
    uint64_t header_timeout_ms;   /* first byte to end of headers (and body); over: 408 */
    uint64_t idle_timeout_ms;     /* keep-alive wait for the next request; then close quietly */
    unsigned max_conns;           /* open connections per server; over: 503 and close */
    /* The body buffers of every server that shares body_memory (the
       gateway's, all threads): what they hold together, received or being
       handled. A body that would take it past max_body_memory is refused
       before it is buffered: 503 with Retry-After. NULL or 0: no bound. */
    _Atomic size_t *body_memory;
    size_t max_body_memory;
} llmc_http_limits_t;

typedef struct llmc_http_header {
    const char *name;   /* lowercased, NUL-terminated */
    const char *value;  /* surrounding whitespace trimmed, NUL-terminated */
    size_t name_len, value_len;
} llmc_http_header_t;

typedef struct llmc_http_req llmc_http_req_t;
typedef struct llmc_http_server llmc_http_server_t;

struct llmc_http_req {
    /* Filled by the server before the handler runs. All strings are
       NUL-terminated and live as long as the request. */
    llmc_http_server_t *server;
    uv_loop_t *loop;
    int method;                   /* enum http_method from <http_parser.h> */
    const char *method_name;      /* "GET", "POST", ... */
    const char *target;           /* raw request target, e.g. "/ask?q=hi" */
    const char *path;             /* target up to '?', not percent-decoded */
    const char *query;            /* after '?', "" when none */
    llmc_http_header_t *headers;
    size_t nheaders;
    const char *body;             /* decoded body (chunked already joined) */
    size_t body_len;
    unsigned short http_major, http_minor;
    bool keep_alive;              /* the connection stays open after this response */
    uint64_t start_ns;            /* uv_hrtime() when the request's first byte came
                                     (refused at the connection cap: when refused) */
    uint64_t id;                  /* per-server sequence number, for logs */

    /* Set by the handler. */
    void (*on_abort)(llmc_http_req_t *req); /* client left before the response ended */
    /* While streaming: every byte written so far has reached the kernel,
       after some had to wait for the client. A producer that stopped when
       llmc_http_pending_bytes grew resumes here. May be NULL. */
    void (*on_drain)(llmc_http_req_t *req);
    void *data;                             /* the handler's per-request state */
    /* Header lines ("Name: value\r\n") every response head of this request
       carries beside the ones each answer brings (the gateway's CORS
       lines); they must outlive the response. NULL: none. */
    const char *extra_hdrs;
    size_t extra_hdrs_len;
};

typedef void (*llmc_http_handler_fn)(llmc_http_req_t *req, void *ctx);

/* Called once per finished request (also for ones the server rejected itself,
   whose method_name, target, path and query may be empty strings, never
   NULL), after the response was written or the client left. start_ns is
   always set. status 0 means no response was sent. For the access log. */
typedef void (*llmc_http_done_fn)(llmc_http_req_t *req, int status, uint64_t bytes_out, void *ctx);

typedef struct llmc_http_server_config {
    llmc_http_limits_t limits;
    llmc_http_handler_fn handler;
    llmc_http_done_fn on_done;   /* may be NULL */
    void *ctx;                   /* passed to handler and on_done */
} llmc_http_server_config_t;

/*
 * The server's counters, X(field, "name", KIND, "unit", "help") as in
 * llmc/stat.h. The names start with "http_" so that they read well among
 * the gateway's at the top of /stats. Every request the server refuses
 * itself, before the handler, counts in exactly one of bad_requests,
 * requests_too_large, timeouts, conns_refused and body_memory_refused.
 */
#define LLMC_HTTP_STATS_TABLE(X)                                                                    \
    X(conns_open, "http_conns_open", GAUGE, "connections",                                          \
      "Client connections open now (not those refused at the cap).")                                \
    X(conns_total, "http_conns_total", COUNTER, "connections",                                      \
      "Client connections accepted, those refused at the cap included.")                            \
    X(conns_refused, "http_conns_refused", COUNTER, "connections",                                  \
      "Connections answered 503 and closed because the connection cap was reached.")                \
    X(requests, "http_requests", COUNTER, "requests", "Requests handed to the handler.")            \
    X(bad_requests, "http_bad_requests", COUNTER, "requests",                                       \
      "Requests refused as malformed or unsupported (400, 417, 505; 500 when out of memory).")      \
    X(requests_too_large, "http_requests_too_large", COUNTER, "requests",                           \
      "Requests refused for a size limit: line (414), head or headers (431), body (413).")          \
    X(timeouts, "http_timeouts", COUNTER, "requests",                                               \
      "Requests not received within the header timeout (408).")                                     \
    X(send_timeouts, "http_send_timeouts", COUNTER, "connections",                                  \
      "Connections closed because the client took no bytes of its answer for the idle timeout.")    \
    X(idle_closes, "http_idle_closes", COUNTER, "connections",                                      \
      "Connections closed quietly after the idle timeout passed with no request.")                  \
    X(body_bytes, "http_body_bytes", GAUGE, "bytes",                                                \
      "Bytes the buffers of request bodies being received or handled hold now.")                   \
    X(body_memory_refused, "http_body_memory_refused", COUNTER, "requests",                         \
      "Requests answered 503 because their body would take --max-body-memory past its bound.")

/* A snapshot of the counters (llmc_http_server_stats). */
typedef struct llmc_http_server_stats {
    LLMC_HTTP_STATS_TABLE(LLMC_STAT_FIELD)
} llmc_http_server_stats_t;

/* The descriptors of llmc_http_server_stats_t, LLMC_HTTP_NSTATS of them,
   in table order. */
#define LLMC_HTTP_NSTATS 11
extern const llmc_stat_desc_t llmc_http_stat_desc[LLMC_HTTP_NSTATS];

/* Creates a server on loop (not yet listening). NULL when out of memory. Loop thread. */
llmc_http_server_t *llmc_http_server_new(uv_loop_t *loop, const llmc_http_server_config_t *cfg);

/* Binds host:port (IPv4 or IPv6 literal, or "localhost"), with SO_REUSEPORT
   when reuseport, and starts accepting. port 0 picks a free port. Returns 0
   or LLMC_EIO with a message in err that names the address and the step
   that failed ("192.0.2.1:8080: cannot bind: Cannot assign requested
   address"). Loop thread. */
int llmc_http_server_listen(llmc_http_server_t *s, const char *host, int port, bool reuseport,
                            char *err, size_t errlen);

/* The bound port, after listen. */
int llmc_http_server_port(const llmc_http_server_t *s);

/* Stops accepting, closes every connection (aborting pending requests) and
   frees the server once all its handles are closed; then calls cb(arg). */
void llmc_http_server_close(llmc_http_server_t *s, void (*cb)(void *arg), void *arg);

/* Stops accepting and lets what was accepted finish: closes the listener,
   idle connections and those whose request has not been received whole,
   lets every request the handler holds run to its end (its answer ends
   with Connection: close, or the connection closes after it), then calls
   drained(arg) once no connection is left. The server stays until
   llmc_http_server_close (which may come sooner, cutting off the rest). */
void llmc_http_server_drain(llmc_http_server_t *s, void (*drained)(void *arg), void *arg);

/* Copies s's counters into out. Any thread: s's loop is their only writer
   and they are read with relaxed atomic loads, so each is a value it had,
   though not all from one instant. s must not be freed meanwhile (its close
   callback has not run). */
void llmc_http_server_stats(const llmc_http_server_t *s, llmc_http_server_stats_t *out);

/* Adds every field of src into dst (several workers' servers summed; the
   gauge sums too). */
void llmc_http_stats_add(llmc_http_server_stats_t *dst, const llmc_http_server_stats_t *src);

/* Case-insensitive lookup of a request header; NULL when absent. With
   duplicates, the first. */
const char *llmc_http_header(const llmc_http_req_t *req, const char *name);

/*
 * Sends a complete response. The server writes the status line, Date,
 * Content-Length, Connection, then hdrs (preformatted "Name: value\r\n"
 * lines, hdrs_len bytes, copied), then the nbody buffers of the body, all in
 * one write. The body buffers are not copied: they must stay valid until
 * release(release_arg) is called (after the write finished or failed;
 * release may be NULL). For HEAD requests no body is sent. After this call
 * the handler must not touch req. Loop thread of req.
 */
void llmc_http_respond(llmc_http_req_t *req, int status, const char *hdrs, size_t hdrs_len,
                       const uv_buf_t *body, unsigned nbody,
                       void (*release)(void *arg), void *release_arg);

/* Sends a response whose body is copied (small, built answers). */
void llmc_http_respond_copy(llmc_http_req_t *req, int status, const char *hdrs, size_t hdrs_len,
                            const char *body, size_t body_len);

/* Sends an OpenAI-shaped error: {"error":{"message","type","code"}} with
   Content-Type application/json. hdrs as in llmc_http_respond, may be NULL.
   code may be NULL (JSON null). An error that a retry of the same request
   cannot fix (400, 404, 405, 413, 414, 417, 431, 505) also carries
   X-Should-Retry: false, so that clients which obey it (the official
   OpenAI SDKs) do not send it again; the server's own refusals too. */
void llmc_http_respond_error(llmc_http_req_t *req, int status, const char *hdrs,
                             const char *type, const char *code, const char *message);

/*
 * Streaming: begin sends the head with Transfer-Encoding: chunked (HTTP/1.1)
 * or no length and Connection: close (HTTP/1.0); write sends one chunk
 * (copied; empty writes are ignored); end sends the last chunk and finishes
 * the request like llmc_http_respond. Returns 0, or LLMC_EIO when the
 * connection is gone (on_abort has then already run or is about to).
 */
int llmc_http_stream_begin(llmc_http_req_t *req, int status, const char *hdrs, size_t hdrs_len);
int llmc_http_stream_write(llmc_http_req_t *req, const char *buf, size_t len);
void llmc_http_stream_end(llmc_http_req_t *req);

/* Ends the request without finishing its response: what was already queued
   is written, then the connection is closed without the proper ending (no
   last chunk; nothing at all when nothing was sent), so the client sees a
   truncated answer or a connection closed without one. For relaying an
   upstream that failed mid-answer, and for the mock model's faults. on_abort
   is not called. After this call the handler must not touch req. */
void llmc_http_abort(llmc_http_req_t *req);

/* A request body taken from the server (llmc_http_take_body). */
typedef struct llmc_http_body {
    char *buf;                    /* NULL: none */
    size_t cap;                   /* bytes it holds, counted in *memory */
    _Atomic size_t *memory;       /* the limits' body_memory, or NULL */
} llmc_http_body_t;

/* Takes req's body buffer from the server, so that it may outlive the
   request (work on another thread that its client may not wait for):
   req->body stays valid, being that buffer, until llmc_http_body_free.
   Its bytes stay counted in the limits' body_memory until then (they leave
   the server's http_body_bytes at once). out->buf NULL when there is no
   body. Loop thread of req, while the handler owns it. */
void llmc_http_take_body(llmc_http_req_t *req, llmc_http_body_t *out);

/* Frees a taken body and takes its bytes off body_memory. Any thread;
   safe on a zeroed one. */
void llmc_http_body_free(llmc_http_body_t *b);
/* Ends the request by closing its connection now: unlike abort, what is
   queued and not yet taken by the kernel is discarded (its memory goes back
   as libuv cancels the writes), so a client that stopped reading costs
   nothing more. on_abort runs, inside this call, as for a client that left.
   For a stream's client that fell too far behind. After this call the
   handler must not touch req. */
void llmc_http_drop(llmc_http_req_t *req);

/* Bytes queued for this request's connection that the kernel has not taken
   yet, so a producer can slow down for a slow client (and resume in
   req->on_drain). */
size_t llmc_http_pending_bytes(const llmc_http_req_t *req);

/* Reason phrase for a status code ("Not Found"). */
const char *llmc_http_reason(int status);

#endif
