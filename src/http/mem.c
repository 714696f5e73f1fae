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
