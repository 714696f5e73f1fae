/*
 * bench/burst.c: N identical requests sent at once (issue 6's stampede).
 *
 * Opens the N connections first, then sends the same request on each and
 * waits for every answer; prints one JSON line like bench/stampede.py's:
 * the wall time from the first send to the last answer, the statuses and the
 * cache headers seen (X-Cache or X-Cache-Status). It exists because the
 * Python client spends about 10 ms of its own on 100 answers on a 2-core
 * machine, as much as the bound being measured. Measures only: the exit
 * status is 0 whenever it could run.
 *
 *   burst --port P --body JSON [--host 127.0.0.1] [--path /v1/chat/completions]
 *         [--n 100] [--timeout 60]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    char *buf;
    size_t len, cap;
    long head_end;        /* offset just past the blank line, -1 until seen */
    long body_len;        /* Content-Length, -1 when chunked or absent */
    bool chunked, done;
    char status[24], cache[32];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what)
{
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(errno));
    return 1;
}

/* The value of header `name` in the head [p, end), copied into out. */
static bool header(const char *p, const char *end, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    for (const char *l = p; l < end;) {
        const char *eol = memmem(l, (size_t)(end - l), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - l) > n && l[n] == ':' && strncasecmp(l, name, n) == 0) {
            const char *v = l + n + 1;
            while (v < eol && *v == ' ')
                v++;
            size_t vl = (size_t)(eol - v) < cap - 1 ? (size_t)(eol - v) : cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return true;
        }
        l = eol + 2;
    }
    return false;
}

/* Parses the head once it is in; then says whether the whole answer is in. */
static void progress(struct conn *c)
{
    if (c->head_end < 0) {
        char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (!e)
            return;
        c->head_end = e + 4 - c->buf;
        const char *sp = memchr(c->buf, ' ', (size_t)c->head_end);
        snprintf(c->status, sizeof(c->status), "%.3s", sp ? sp + 1 : "?");
        char v[64];
        if (!header(c->buf, e + 2, "X-Cache", c->cache, sizeof(c->cache)) &&
            !header(c->buf, e + 2, "X-Cache-Status", c->cache, sizeof(c->cache)))
            strcpy(c->cache, "-");
        c->chunked = header(c->buf, e + 2, "Transfer-Encoding", v, sizeof(v)) &&
                     strcasestr(v, "chunked");
        c->body_len = header(c->buf, e + 2, "Content-Length", v, sizeof(v)) ? atol(v) : -1;
    }
    if (c->chunked)
        c->done = c->len >= 5 && memcmp(c->buf + c->len - 5, "0\r\n\r\n", 5) == 0;
    else if (c->body_len >= 0)
        c->done = (long)c->len >= c->head_end + c->body_len;
}

static void on_readable(struct conn *c)
{
    if (c->cap - c->len < 4096) {
        c->cap = c->cap ? c->cap * 2 : 16384;
        c->buf = realloc(c->buf, c->cap);
        if (!c->buf) {
            perror("burst");
            exit(1);
        }
    }
    ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (n > 0) {
        c->len += (size_t)n;
        progress(c);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        if (c->head_end < 0 || c->body_len >= 0 || c->chunked) /* cut short */
            strcpy(c->status, n == 0 ? "IncompleteRead" : "ConnectionError");
        c->done = true;
    }
}

#define MAX_KEYS 16

/* Adds one to key's count; keys past MAX_KEYS distinct ones are not counted. */
static void tally(char keys[][32], int *counts, int *nkeys, const char *key)
{
    for (int i = 0; i < *nkeys; i++)
        if (strcmp(keys[i], key) == 0) {
            counts[i]++;
            return;
        }
    if (*nkeys == MAX_KEYS)
        return;
    snprintf(keys[*nkeys], 32, "%s", key);
    counts[(*nkeys)++] = 1;
}

static void print_obj(const char *name, char keys[][32], const int *counts, int nkeys)
{
    printf("\"%s\": {", name);
    for (int i = 0; i < nkeys; i++)
        printf("%s\"%s\": %d", i ? ", " : "", keys[i], counts[i]);
    printf("}");
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *path = "/v1/chat/completions", *body = NULL;
    int port = 0, n = 100;
    double timeout = 60;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--path")) path = argv[i + 1];
        else if (!strcmp(argv[i], "--body")) body = argv[i + 1];
        else if (!strcmp(argv[i], "--n")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeout")) timeout = atof(argv[i + 1]);
    }
    if (!port || !body || n < 1 || n > 60000) {
        fprintf(stderr, "usage: burst --port P --body JSON [--host H] [--path P] [--n N] [--timeout S]\n");
        return 2;
    }
    char *req;
    int rlen = asprintf(&req, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\n\r\n%s", path, strlen(body), body);
    struct conn *cs = calloc((size_t)n, sizeof(*cs));
    struct pollfd *pf = calloc((size_t)n, sizeof(*pf));
    if (rlen < 0 || !cs || !pf)
        return fail("memory");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return fail("host");
    for (int i = 0; i < n; i++) {
        int one = 1;
        cs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        cs[i].head_end = -1;
        if (cs[i].fd < 0 || connect(cs[i].fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
            return fail("connect");
        setsockopt(cs[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        if (send(cs[i].fd, req, (size_t)rlen, 0) != rlen)
            return fail("send");
    int left = n;
    while (left > 0 && now_s() - t0 < timeout) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (!cs[i].done)
                pf[k++] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN};
        if (poll(pf, (nfds_t)k, 100) < 0 && errno != EINTR)
            return fail("poll");
        for (int j = 0, i = 0; j < k; j++) {
            if (!(pf[j].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            while (cs[i].fd != pf[j].fd)
                i++;
            on_readable(&cs[i]);
            if (cs[i].done)
                left--;
        }
    }
    double wall = now_s() - t0;
    char skeys[MAX_KEYS][32], ckeys[MAX_KEYS][32];
    int scount[MAX_KEYS], ccount[MAX_KEYS], ns = 0, nc = 0;
    for (int i = 0; i < n; i++) {
        if (!cs[i].done)
            strcpy(cs[i].status, "Timeout");
        tally(skeys, scount, &ns, cs[i].status[0] ? cs[i].status : "?");
        tally(ckeys, ccount, &nc, cs[i].cache[0] ? cs[i].cache : "-");
        close(cs[i].fd);
        free(cs[i].buf);
    }
    printf("{\"n\": %d, \"wall_s\": %.6f, ", n, wall);
    print_obj("statuses", skeys, scount, ns);
    printf(", ");
    print_obj("cache", ckeys, ccount, nc);
    printf(", \"client\": \"burst\"}\n");
    free(cs);
    free(pf);
    free(req);
    return 0;
}
