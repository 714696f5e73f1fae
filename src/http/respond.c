/*
 * http/respond.c: what a handler calls to answer its request: a complete
 * response (body by reference or copied, or an error), a streamed one, or
 * an abort. The connection (conn.c) writes and finishes the request; heads
 * are built in head.c.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Bodies given to llmc_http_respond are never copied; their release runs
 *   when the request finishes, after the last write completed or failed.
 *   Stream chunks are copied only for the part the kernel did not take at
 *   once (the caller's buffer is gone when stream_write returns).
 * - Each call checks the request's phase first: a response to a request
 *   that was already answered, or whose client already left, is dropped
 *   (its release runs at once), so a handler needs no check of its own.
 * - HTTP/1.0 has no chunked encoding: a stream to an HTTP/1.0 client is
 *   ended by closing the connection.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_int.h"
#include "llmc/error.h"

void llmc_http_take_body(llmc_http_req_t *req, llmc_http_body_t *out)
{
    llmc__http_conn_t *c = LLMC__CONN_OF(req);

    out->buf = c->bbuf;
    out->cap = c->bcap;
    out->memory = c->s->cfg.limits.body_memory;
    LLMC__HTTP_STAT_SET(c->s, body_bytes, LLMC__HTTP_STAT(c->s, body_bytes) - c->bcap);
    c->bbuf = NULL;
    c->bcap = 0;
}

void llmc_http_body_free(llmc_http_body_t *b)
{
    if (b->memory && b->cap)
        atomic_fetch_sub_explicit(b->memory, b->cap, memory_order_relaxed);
    free(b->buf);
    b->buf = NULL;
    b->cap = 0;
}

/* The common start of a complete response; false when the connection
   failed (closed, and the request finishes on its own). */
static bool begin_full(llmc__http_conn_t *c, int status, const char *h1, size_t l1, const char *h2,
                       size_t l2, size_t body_len, size_t extra)
{
    c->phase = LLMC_PH_WRITE;
    if (llmc__http_head_full(c, status, h1, l1, h2, l2, body_len, extra) != 0) {
        llmc__http_conn_close(c);
        return false;
    }
    return true;
}

void llmc_http_respond(llmc_http_req_t *req, int status, const char *hdrs, size_t hdrs_len,
                       const uv_buf_t *body, unsigned nbody, void (*release)(void *arg),
                       void *release_arg)
{
    llmc__http_conn_t *c = LLMC__CONN_OF(req);
    uv_buf_t small[8], *bufs = small;
    unsigned n;

    if (c->phase != LLMC_PH_HANDLER) {
        if (release)
            release(release_arg);
        return;
    }
    c->release = release;
    c->release_arg = release_arg;
    if (!begin_full(c, status, hdrs, hdrs_len, "", 0, llmc__http_bufs_total(body, nbody), 0))
        goto out;
    n = 1 + (c->no_body ? 0 : nbody);
    if (n > sizeof(small) / sizeof(small[0]) && !(bufs = malloc(n * sizeof(*bufs)))) {
        llmc__http_conn_close(c);
        goto out;
    }
    bufs[0] = llmc__http_buf(c->obuf, c->olen);
    if (n > 1)
        memcpy(bufs + 1, body, nbody * sizeof(*bufs));
    /* By reference: uv_write copies the array, and the buffers outlive the write. */
    llmc__http_send(c, bufs, n, false);
    if (bufs != small)
        free(bufs);
out:
    llmc__http_maybe_finish(c);
}

void llmc_http_respond_copy(llmc_http_req_t *req, int status, const char *hdrs, size_t hdrs_len,
                            const char *body, size_t body_len)
{
    llmc__http_answer_copy(LLMC__CONN_OF(req), status, hdrs, hdrs_len, "", 0, body, body_len);
}

void llmc_http_respond_error(llmc_http_req_t *req, int status, const char *hdrs, const char *type,
                             const char *code, const char *message)
{
    llmc__http_answer_error(LLMC__CONN_OF(req), status, hdrs, type, code, message);
}

int llmc_http_stream_begin(llmc_http_req_t *req, int status, const char *hdrs, size_t hdrs_len)
{
    llmc__http_conn_t *c = LLMC__CONN_OF(req);
    uv_buf_t b;

    if (c->phase != LLMC_PH_HANDLER)
        return LLMC_EIO;
    /* HTTP/1.0 has no chunked encoding: the body ends where the connection does. */
    c->chunked_out = !(req->http_major == 1 && req->http_minor == 0) && llmc__http_status_has_body(status);
    if (!c->chunked_out)
        req->keep_alive = false;
    c->no_body = req->method == HTTP_HEAD || !llmc__http_status_has_body(status);
    c->phase = LLMC_PH_STREAM;
    static const char te[] = "Transfer-Encoding: chunked\r\n";
    if (llmc__http_head(c, status, false, 0, te, c->chunked_out ? sizeof(te) - 1 : 0, hdrs, hdrs_len,
                   0) != 0) {
        llmc__http_conn_close(c);
        return LLMC_EIO;
    }
    b = llmc__http_buf(c->obuf, c->olen);
    return llmc__http_send(c, &b, 1, false);
}

int llmc_http_stream_write(llmc_http_req_t *req, const char *buf, size_t len)
{
    llmc__http_conn_t *c = LLMC__CONN_OF(req);
    char line[24];
    uv_buf_t b[3];
    int n;

    if (c->phase != LLMC_PH_STREAM)
        return LLMC_EIO;
    if (len == 0 || c->no_body)
        return 0;
    if (!c->chunked_out) {
        b[0] = llmc__http_buf(buf, len);
        return llmc__http_send(c, b, 1, true);
    }
    n = snprintf(line, sizeof(line), "%zx\r\n", len);
    b[0] = llmc__http_buf(line, (size_t)n);
    b[1] = llmc__http_buf(buf, len);
    b[2] = llmc__http_buf("\r\n", 2);
    return llmc__http_send(c, b, 3, true);
}

void llmc_http_stream_end(llmc_http_req_t *req)
{
    static const char last[] = "0\r\n\r\n";
    llmc__http_conn_t *c = LLMC__CONN_OF(req);
    uv_buf_t b = llmc__http_buf(last, sizeof(last) - 1);

    if (c->phase != LLMC_PH_STREAM)
        return;
    c->phase = LLMC_PH_WRITE;
    if (c->chunked_out && !c->no_body)
        llmc__http_send(c, &b, 1, true);
    llmc__http_maybe_finish(c);
}

/* It does not close at once: the request goes to the WRITE phase with
   keep-alive off, so what is queued is still written, then the normal
   finish lingers (FIN, drain input). The client sees the bytes sent so far
   and then EOF, which for a chunked or length-framed answer is a truncation
   and for a request without any answer is a connection closed unanswered.
   on_abort is not called: the handler ended the request itself. */
void llmc_http_abort(llmc_http_req_t *req)
{
    llmc__http_conn_t *c = LLMC__CONN_OF(req);

    if (c->phase != LLMC_PH_HANDLER && c->phase != LLMC_PH_STREAM)
        return;
    req->on_abort = NULL;
    req->keep_alive = false;
    c->phase = LLMC_PH_WRITE;
    llmc__http_maybe_finish(c);
}

void llmc_http_drop(llmc_http_req_t *req)
{
    llmc__http_conn_t *c = LLMC__CONN_OF(req);

    if (c->phase != LLMC_PH_HANDLER && c->phase != LLMC_PH_STREAM)
        return;
    llmc__http_conn_close(c);
}

size_t llmc_http_pending_bytes(const llmc_http_req_t *req)
{
    const llmc__http_conn_t *c = (const llmc__http_conn_t *)(const void *)req;

    return c->tcp.write_queue_size;
}
