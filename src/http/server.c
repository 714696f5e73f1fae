/*
 * http/server.c: the HTTP server object: listening socket, accept, stats,
 * and closing the whole server.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - We create the listening socket ourselves (socket, SO_REUSEADDR,
 *   SO_REUSEPORT, bind, listen with a large backlog) and hand it to libuv
 *   with uv_tcp_open: uv_tcp_bind cannot set SO_REUSEPORT in libuv 1.44,
 *   and each loop thread needs its own listener on the same port.
 * - Over max_conns we still accept, so the client learns why (503 with an
 *   OpenAI-shaped error) instead of waiting in the backlog (conn.c answers
 *   it); such connections are counted in conns_refused, not in conns_open.
 * - The counters (LLMC_HTTP_STATS_TABLE in http.h) are written by the
 *   server's loop only, as relaxed atomics, so that /stats may read every
 *   worker's server from its own thread.
 * - The server is freed only when the listener and every connection's
 *   handles have run their close callbacks (mem.c, by whichever closes
 *   last); only then is the close cb called.
 * - In the limits, 0 means "no limit" (for max_conns, the byte and count
 *   limits and both timeouts): the config table never produces 0.
 * - Draining is closing without cutting anyone off: the listener goes,
 *   idle connections and requests not yet received whole are closed, and
 *   every request the handler has goes on to its end, after which its
 *   connection closes (conn.c's finish sees draining) instead of waiting
 *   for another. The server itself stays until close.
 *
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/http_int.h"
#include "llmc/error.h"

#define LISTEN_BACKLOG 4096

llmc_http_server_t *llmc_http_server_new(uv_loop_t *loop, const llmc_http_server_config_t *cfg)
{
    llmc_http_server_t *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->loop = loop;
    s->cfg = *cfg;
    s->date_sec = (time_t)-1;
    /* Initialised now so that close works whether or not listen ran. */
    if (uv_tcp_init(loop, &s->listener) != 0) {
        free(s);
        return NULL;
    }
    s->listener.data = s;
    return s;
}

static void on_connection(uv_stream_t *l, int status)
{
    llmc_http_server_t *s = l->data;
    llmc__http_conn_t *c;

    if (status < 0 || s->closing)
        return;
    c = calloc(1, sizeof(*c));
    /* Out of memory: without uv_accept libuv stops polling the listener
       until one happens; there is nothing better to do with no memory. */
    if (!c)
        return;
    if (llmc__http_conn_init(s, c) != 0) {
        free(c);
        return;
    }
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        llmc__http_conn_close(c);
        return;
    }
    llmc__http_conn_start(c);
}

/* socket + options + bind + listen; returns the fd or -1 with err set,
   naming addr (what the operator asked for) and the step that failed. */
static int bind_fd(const struct addrinfo *ai, bool reuseport, const char *addr, char *err,
                   size_t errlen)
{
    int one = 1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open a socket: %s", addr, strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)) {
        snprintf(err, errlen, "%s: cannot set the socket's options: %s", addr, strerror(errno));
        goto fail;
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        snprintf(err, errlen, "%s: cannot bind: %s", addr, strerror(errno));
        goto fail;
    }
    if (listen(fd, LISTEN_BACKLOG) != 0) {
        snprintf(err, errlen, "%s: cannot listen: %s", addr, strerror(errno));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return -1;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int llmc_http_server_listen(llmc_http_server_t *s, const char *host, int port, bool reuseport,
                            char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char portstr[16], addr[300];
    int fd = -1, rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    /* Every error names the address as it was given, an IPv6 one in brackets. */
    snprintf(addr, sizeof(addr), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    /* Blocking resolution is fine here: listen runs once, at start-up. */
    rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot resolve the host: %s", addr, gai_strerror(rc));
        return LLMC_EIO;
    }
    fd = bind_fd(res, reuseport, addr, err, errlen);
    freeaddrinfo(res);
    if (fd < 0)
        return LLMC_EIO;
    s->port = bound_port(fd);
    rc = uv_tcp_open(&s->listener, fd);
    if (rc != 0) {
        close(fd);
        goto fail;
    }
    /* From here the handle owns fd; server close closes it. */
    rc = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    if (rc != 0)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "%s: cannot listen: %s", addr, uv_strerror(rc));
    return LLMC_EIO;
}

int llmc_http_server_port(const llmc_http_server_t *s)
{
    return s->port;
}

static void on_listener_closed(uv_handle_t *h)
{
    llmc_http_server_t *s = h->data;

    s->listener_closed = true;
    llmc__http_server_maybe_free(s);
}

void llmc_http_server_close(llmc_http_server_t *s, void (*cb)(void *arg), void *arg)
{
    llmc__http_conn_t *c;

    if (s->closing)
        return;
    s->closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    s->drained_cb = NULL;
    if (!uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    /* Conns unlink themselves only when freed, later, so the walk is safe. */
    for (c = s->conns; c; c = c->next)
        llmc__http_conn_close(c);
    /* A drained server has nothing left to close: no callback will come. */
    llmc__http_server_maybe_free(s);
}

void llmc_http_server_drain(llmc_http_server_t *s, void (*drained)(void *arg), void *arg)
{
    llmc__http_conn_t *c;

    if (s->closing || s->draining)
        return;
    s->draining = true;
    s->drained_cb = drained;
    s->drained_arg = arg;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    for (c = s->conns; c; c = c->next) {
        if (c->phase == LLMC_PH_READ)
            llmc__http_conn_close(c); /* idle, or a request not received whole yet */
        else if (c->phase == LLMC_PH_HANDLER)
            c->req.keep_alive = false; /* its answer's head will say Connection: close */
    }
}

void llmc_http_server_stats(const llmc_http_server_t *s, llmc_http_server_stats_t *out)
{
#define LOAD(field, name, kind, unit, help) out->field = LLMC__HTTP_STAT(s, field);
    LLMC_HTTP_STATS_TABLE(LOAD)
#undef LOAD
}

void llmc_http_stats_add(llmc_http_server_stats_t *dst, const llmc_http_server_stats_t *src)
{
#define ADD(field, name, kind, unit, help) dst->field += src->field;
    LLMC_HTTP_STATS_TABLE(ADD)
#undef ADD
}

#define LLMC_STAT_TYPE llmc_http_server_stats_t
const llmc_stat_desc_t llmc_http_stat_desc[LLMC_HTTP_NSTATS] = {
    LLMC_HTTP_STATS_TABLE(LLMC_STAT_DESC)
};
#undef LLMC_STAT_TYPE

/* A row added to the table without LLMC_HTTP_NSTATS would be left out of
   the descriptors without a word from the compiler. */
_Static_assert(sizeof(llmc_http_server_stats_t) == LLMC_HTTP_NSTATS * sizeof(uint64_t),
               "LLMC_HTTP_NSTATS must count the rows of LLMC_HTTP_STATS_TABLE");
