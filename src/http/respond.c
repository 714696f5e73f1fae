/*
 * http/respond.c: responses: the head, writing head and body, streaming,
 * and the one function that finishes a request.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Head and body go out as one write of several buffers, tried with
 *   uv_try_write first: usually the kernel takes it all and no write request
 *   or copy is needed. Only what it did not take goes to uv_write.
 * - Bodies given to llmc_http_respond are never copied; their release runs
 *   when the request finishes, after the last write completed or failed.
 *   Stream chunks are copied only for the part the kernel did not take at
 *   once (the caller's buffer is gone when stream_write returns).
 * - A request finishes in exactly one place, finish(): release, on_done,
 *   then the connection reads the next request or closes. It runs once the
 *   handler has handed the response over (or the client left) and no write
 *   is pending, which is also what keeps pipelined answers in order.
 * - Heads and error bodies are built in head.c, which the connection's
 *   own refusals use too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_int.h"
#include "llmc/error.h"

typedef struct wcopy {
    uv_write_t req;
    llmc__http_conn_t *c;
    size_t len;
    char data[];
} wcopy_t;

/* uv_buf_init takes an unsigned int length; uv_buf_t holds a size_t. */
static uv_buf_t buf_of(const char *p, size_t len)
{
    uv_buf_t b;

    b.base = (char *)p;
    b.len = len;
    return b;
}

static size_t bufs_total(const uv_buf_t *b, unsigned n)
{
    size_t t = 0;
    unsigned i;

    for (i = 0; i < n; i++)
        t += b[i].len;
    return t;
}

static void write_done(llmc__http_conn_t *c, int status, size_t len)
{
    c->writes_pending--;
    if (status == 0)
        c->bytes_out += len;
    else
        llmc__http_conn_close(c);
    /* The send timeout moves on if the client took bytes meanwhile. */
    if (!c->closing)
        llmc__http_conn_send_timer(c);
    llmc__http_maybe_finish(c);
}

static void on_write_ref(uv_write_t *w, int status)
{
    llmc__http_conn_t *c = w->data;

    write_done(c, status, c->wreq_bytes);
}

static void on_write_copy(uv_write_t *w, int status)
{
    wcopy_t *wc = (wcopy_t *)w;
    llmc__http_conn_t *c = wc->c;
    size_t len = wc->len;

    free(wc);
    write_done(c, status, len);
}

static int write_copy(llmc__http_conn_t *c, const uv_buf_t *b, unsigned n, size_t len)
{
    wcopy_t *wc = malloc(sizeof(*wc) + len);
    uv_buf_t one;
    size_t off = 0;
    unsigned i;

    if (!wc)
        return LLMC_ENOMEM;
    for (i = 0; i < n; i++) {
        memcpy(wc->data + off, b[i].base, b[i].len);
        off += b[i].len;
    }
    wc->c = c;
    wc->len = len;
    one = buf_of(wc->data, len);
    if (uv_write(&wc->req, (uv_stream_t *)&c->tcp, &one, 1, on_write_copy) != 0) {
        free(wc);
        return LLMC_EIO;
    }
    c->writes_pending++;
    llmc__http_conn_send_timer(c);
    return 0;
}

static int write_ref(llmc__http_conn_t *c, const uv_buf_t *b, unsigned n, size_t len)
{
    c->wreq.data = c;
    c->wreq_bytes = len;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, b, n, on_write_ref) != 0)
        return LLMC_EIO;
    c->writes_pending++;
    llmc__http_conn_send_timer(c);
    return 0;
}

int llmc__http_send(llmc__http_conn_t *c, uv_buf_t *bufs, unsigned n, bool copy)
{
    size_t total = bufs_total(bufs, n), done = 0, skip;
    unsigned i = 0;
    int r;

    if (c->closing)
        return LLMC_EIO;
    if (total == 0)
        return 0;
    /* UV_EAGAIN also when earlier writes are queued, which keeps order. */
    r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
    if (r < 0 && r != UV_EAGAIN)
        goto fail;
    if (r > 0)
        done = (size_t)r;
    c->bytes_out += done;
    c->submitted += total; /* what is not written now is queued below, or the conn closes */
    if (done == total)
        return 0;
    for (skip = done; bufs[i].len <= skip; i++)
        skip -= bufs[i].len;
    bufs[i].base += skip;
    bufs[i].len -= skip;
    r = copy ? write_copy(c, bufs + i, n - i, total - done) : write_ref(c, bufs + i, n - i, total - done);
    if (r != 0)
        goto fail;
    return 0;
fail:
    llmc__http_conn_close(c);
    return LLMC_EIO;
}

static void finish(llmc__http_conn_t *c)
{
    llmc_http_server_t *s = c->s;
    bool keep_alive = c->req.keep_alive && !c->closing;
    void (*release)(void *) = c->release;

    /* Not WRITE any more, so that nothing below finishes it twice. */
    c->phase = LLMC_PH_READ;
    c->release = NULL;
    if (release)
        release(c->release_arg);
    if (s->cfg.on_done)
        s->cfg.on_done(&c->req, c->status, c->bytes_out, s->cfg.ctx);
    llmc__http_conn_req_done(c, keep_alive);
}

void llmc__http_maybe_finish(llmc__http_conn_t *c)
{
    if (c->phase == LLMC_PH_WRITE && c->writes_pending == 0)
        finish(c);
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
    if (!begin_full(c, status, hdrs, hdrs_len, "", 0, bufs_total(body, nbody), 0))
        goto out;
    n = 1 + (c->no_body ? 0 : nbody);
    if (n > sizeof(small) / sizeof(small[0]) && !(bufs = malloc(n * sizeof(*bufs)))) {
        llmc__http_conn_close(c);
        goto out;
    }
    bufs[0] = buf_of(c->obuf, c->olen);
    if (n > 1)
        memcpy(bufs + 1, body, nbody * sizeof(*bufs));
    /* By reference: uv_write copies the array, and the buffers outlive the write. */
    llmc__http_send(c, bufs, n, false);
    if (bufs != small)
        free(bufs);
out:
    llmc__http_maybe_finish(c);
}

static void respond_copy2(llmc_http_req_t *req, int status, const char *h1, size_t l1,
                          const char *h2, size_t l2, const char *body, size_t body_len)
{
    llmc__http_conn_t *c = LLMC__CONN_OF(req);
    uv_buf_t b;

    if (c->phase != LLMC_PH_HANDLER)
        return;
    if (begin_full(c, status, h1, l1, h2, l2, body_len, body_len)) {
        if (!c->no_body) {
            memcpy(c->obuf + c->olen, body, body_len);
            c->olen += body_len;
        }
        b = buf_of(c->obuf, c->olen);
        llmc__http_send(c, &b, 1, false);
    }
    llmc__http_maybe_finish(c);
}

void llmc_http_respond_copy(llmc_http_req_t *req, int status, const char *hdrs, size_t hdrs_len,
                            const char *body, size_t body_len)
{
    respond_copy2(req, status, hdrs, hdrs_len, "", 0, body, body_len);
}

void llmc_http_respond_error(llmc_http_req_t *req, int status, const char *hdrs, const char *type,
                             const char *code, const char *message)
{
    static const char ct[] = "Content-Type: application/json\r\n";
    char *body = llmc__http_error_body(type, code, message);

    /* Out of memory for the JSON still answers with the status. */
    respond_copy2(req, status, ct, sizeof(ct) - 1, hdrs ? hdrs : "", hdrs ? strlen(hdrs) : 0,
                  body ? body : "", body ? strlen(body) : 0);
    free(body);
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
    b = buf_of(c->obuf, c->olen);
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
        b[0] = buf_of(buf, len);
        return llmc__http_send(c, b, 1, true);
    }
    n = snprintf(line, sizeof(line), "%zx\r\n", len);
    b[0] = buf_of(line, (size_t)n);
    b[1] = buf_of(buf, len);
    b[2] = buf_of("\r\n", 2);
    return llmc__http_send(c, b, 3, true);
}

void llmc_http_stream_end(llmc_http_req_t *req)
{
    static const char last[] = "0\r\n\r\n";
    llmc__http_conn_t *c = LLMC__CONN_OF(req);
    uv_buf_t b = buf_of(last, sizeof(last) - 1);

    if (c->phase != LLMC_PH_STREAM)
        return;
    c->phase = LLMC_PH_WRITE;
    if (c->chunked_out && !c->no_body)
        llmc__http_send(c, &b, 1, true);
    llmc__http_maybe_finish(c);
}
