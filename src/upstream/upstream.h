/*
 * upstream/upstream.h: calls to the model API with libcurl's multi interface,
 * driven by the libuv loop (uv_poll per socket, one uv_timer), never blocking.
 *
 * One llmc_upstream_t per event-loop thread, each with its own multi handle:
 * connections are reused per thread, and no handle crosses threads.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Errors are translated here: connect failures (refused, DNS, TLS, or the
 *   connect timeout: nothing of the request went out) become LLMC_ECONNECT
 *   (the gateway answers 502 and may retry), the whole call's timeout
 *   LLMC_ETIMEDOUT (504), anything else LLMC_EUPSTREAM (502). Callers never
 *   see a CURLcode.
 * - A non-2xx status is not an error at this layer: it arrives through
 *   on_head/on_data like any answer, so the gateway can pass it on unchanged.
 * - Response bytes are delivered as they arrive (on_data), so a stream can be
 *   relayed without buffering; nothing is accumulated here.
 */
#ifndef LLMC_UPSTREAM_H
#define LLMC_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct llmc_upstream llmc_upstream_t;
typedef struct llmc_upstream_call llmc_upstream_call_t;

typedef struct llmc_upstream_config {
    uint64_t connect_timeout_ms;
    uint64_t total_timeout_ms;   /* whole call, first byte sent to last byte read */
    long max_host_conns;         /* per thread; 0 = unlimited */
    long max_total_conns;        /* per thread; calls past it wait for a connection; 0 = unlimited */
} llmc_upstream_config_t;

typedef struct llmc_upstream_request {
    const char *method;            /* "GET" or "POST" */
    const char *url;               /* absolute */
    const char *body;              /* copied at start; NULL for none */
    size_t body_len;
    const char *const *headers;    /* "Name: value" lines, nheaders of them */
    size_t nheaders;
    /* When a pooled connection dies after the body went out, libcurl would
       send the request again on a fresh one: the server may have run it
       already. Allowed only when true; else the call fails (LLMC_EUPSTREAM). */
    bool allow_resend;
    /* The answer's per-account headers (the organisation, x-ratelimit-*,
       request ids, processing times) are not passed on: the call was made
       with a key that is not the client's own, or its answer is shared. */
    bool drop_account_hdrs;
} llmc_upstream_request_t;

/* Initialises libcurl for the process (curl_global_init). Call once from
   main before any thread starts. 0, or LLMC_EIO when libcurl refuses. */
int llmc_upstream_global_init(void);

/* Releases what llmc_upstream_global_init took; after every client is closed
   and every thread has stopped (valgrind-clean exits and tests). */
void llmc_upstream_global_cleanup(void);

/* url as it may be printed or logged: its credentials become three
   asterisks (scheme, then ***@host/v1 where u:p@host/v1 was). The userinfo is taken to end at the last '@' before any '?' or '#' (a
   password may hold '@' or '/' unescaped), so an '@' in a path hides more,
   never less. out gets at most outlen bytes, NUL included. Any thread. */
void llmc_upstream_url_redact(const char *url, char *out, size_t outlen);

typedef struct llmc_upstream_handler {
    /* Once, when the final status and headers are in. pass_hdrs holds the
       response headers worth handing to the client (a table in upstream.c:
       Retry-After, X-Request-Id, OpenAI-*, X-RateLimit-*; only Retry-After
       and OpenAI-Version with drop_account_hdrs) as
       "Name: value\r\n" lines; content_type is "" when none was sent. */
    void (*on_head)(void *arg, int status, const char *content_type,
                    const char *pass_hdrs, size_t pass_len);
    /* Zero or more times, body bytes as they arrive (already de-chunked). */
    void (*on_data)(void *arg, const char *buf, size_t len);
    /* Exactly once, last, unless the call was canceled: err 0 when the whole
       answer was read, else LLMC_ECONNECT / LLMC_ETIMEDOUT / LLMC_EUPSTREAM,
       with a short human-readable detail. */
    void (*on_done)(void *arg, int err, const char *detail);
} llmc_upstream_handler_t;

/* Creates the client for loop. NULL when out of memory. Loop thread. */
llmc_upstream_t *llmc_upstream_new(uv_loop_t *loop, const llmc_upstream_config_t *cfg);

/* Cancels every call in flight (no callbacks), closes the handles and frees
   the client when they are closed; then cb(arg). Loop thread. */
void llmc_upstream_close(llmc_upstream_t *u, void (*cb)(void *arg), void *arg);

/* Starts a call. Returns 0 and sets *out (may be NULL), or LLMC_ENOMEM /
   LLMC_EINVAL. Callbacks run later, on the loop, never inside this call.
   Loop thread. */
int llmc_upstream_start(llmc_upstream_t *u, const llmc_upstream_request_t *r,
                        const llmc_upstream_handler_t *h, void *arg,
                        llmc_upstream_call_t **out);

/* Stops a call in flight; no callback runs after this. Loop thread. */
void llmc_upstream_cancel(llmc_upstream_call_t *call);

/* Stops reading call's answer (pause true) until it is called again with
   false: no on_data comes meanwhile, curl holds at most the one read it
   had in hand, and the upstream's sends wait on TCP. The call's timeout
   goes on running. May be called from inside on_head/on_data, not after
   on_done. Resuming may deliver the held bytes through on_data before it
   returns. Loop thread. */
void llmc_upstream_pause(llmc_upstream_call_t *call, bool pause);

/* Calls in flight on this client. */
unsigned llmc_upstream_active(const llmc_upstream_t *u);

#endif
