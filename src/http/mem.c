/*
 * http/mem.c: the memory an HTTP server's files share: growing a
 * connection's buffers, the pool of read buffers connections borrow, and
 * the server's own memory, freed once its listener and its last connection
 * have closed. The bottom of the server's files: it calls none of them.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A connection holds a read buffer only while bytes are in flight, so
 *   that thousands of idle keep-alive connections cost a few hundred bytes
 *   each, not 16 KiB; the server keeps a small pool of them so that the hot
 *   path does not allocate.
 * - Whichever closes last, the listener (server.c) or a connection
 *   (conn.c), frees the server, through llmc__http_server_maybe_free: so the
 *   connection never calls up into the server, and the server's close
 *   callback runs only once nothing can touch the server any more.
 */
#include <stdlib.h>

#include "http/http_int.h"
#include "llmc/error.h"

int llmc__http_grow(char **buf, size_t *cap, size_t need)
{
    size_t ncap = *cap ? *cap : 256;
    char *nb;

    if (need <= *cap)
        return 0;
    while (ncap < need)
        ncap *= 2;
    nb = realloc(*buf, ncap);
    if (!nb)
        return LLMC_ENOMEM;
    *buf = nb;
    *cap = ncap;
    return 0;
}

/* Body buffers are counted by capacity, the memory they hold, from the
   first byte reserved until the buffer is freed: a body being handled (or
   kept for the next request on a keep-alive connection) is held as much as
   one being received. The bound is checked before the buffer grows, so a
   declared Content-Length is refused before any of it is read. */
int llmc__http_body_grow(llmc__http_conn_t *c, size_t need, bool exact)
{
    const llmc_http_limits_t *lim = &c->s->cfg.limits;
    size_t ncap = c->bcap ? c->bcap : 256;

    if (need <= c->bcap)
        return 0;
    while (ncap < need)
        ncap *= 2;
    if (exact)
        ncap = need;
    size_t more = ncap - c->bcap;
    if (lim->body_memory) {
        size_t before = atomic_fetch_add_explicit(lim->body_memory, more, memory_order_relaxed);
        if (lim->max_body_memory && before + more > lim->max_body_memory) {
            atomic_fetch_sub_explicit(lim->body_memory, more, memory_order_relaxed);
            return LLMC_EFULL;
        }
    }
    char *nb = realloc(c->bbuf, ncap);
    if (!nb) {
        if (lim->body_memory)
            atomic_fetch_sub_explicit(lim->body_memory, more, memory_order_relaxed);
        return LLMC_ENOMEM;
    }
    c->bbuf = nb;
    c->bcap = ncap;
    LLMC__HTTP_STAT_SET(c->s, body_bytes, LLMC__HTTP_STAT(c->s, body_bytes) + more);
    return 0;
}

void llmc__http_body_free(llmc__http_conn_t *c)
{
    const llmc_http_limits_t *lim = &c->s->cfg.limits;

    if (lim->body_memory && c->bcap)
        atomic_fetch_sub_explicit(lim->body_memory, c->bcap, memory_order_relaxed);
    LLMC__HTTP_STAT_SET(c->s, body_bytes, LLMC__HTTP_STAT(c->s, body_bytes) - c->bcap);
    free(c->bbuf);
    c->bbuf = NULL;
    c->bcap = 0;
}

char *llmc__http_rbuf_take(llmc_http_server_t *s)
{
    return s->npool ? s->rbuf_pool[--s->npool] : malloc(LLMC_HTTP_RBUF);
}

void llmc__http_rbuf_give(llmc_http_server_t *s, char *buf)
{
    if (s->npool < sizeof(s->rbuf_pool) / sizeof(s->rbuf_pool[0]))
        s->rbuf_pool[s->npool++] = buf;
    else
        free(buf);
}

void llmc__http_server_maybe_free(llmc_http_server_t *s)
{
    void (*cb)(void *);
    void *arg;

    if (!s->listener_closed || s->nalive > 0)
        return;
    if (!s->closing) {
        if (s->draining && s->drained_cb) {
            cb = s->drained_cb;
            s->drained_cb = NULL;
            cb(s->drained_arg);
        }
        return;
    }
    cb = s->close_cb;
    arg = s->close_arg;
    while (s->npool)
        free(s->rbuf_pool[--s->npool]);
    free(s);
    if (cb)
        cb(arg);
}
