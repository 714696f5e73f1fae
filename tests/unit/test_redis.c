/*
 * test_redis.c: the Redis tier (src/tier/redis.c) without a Redis: the URL
 * parser and its redaction, the value glue (keys, lifetimes, replies into
 * entries), and the tier on a libuv loop against a scripted fake server on
 * the same loop, which can answer properly, stay silent, answer garbage or
 * answer twice.
 *
 * The tier's statics are reached by including its .c. Every loop is run to
 * the end and closed, so a handle left open fails the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tier/redis.c"

/* ---- the URL ----------------------------------------------------------------- */

static void test_url_parses(void **state)
{
    (void)state;
    llmc_redis_url_t u;
    char err[256] = "";

    assert_int_equal(llmc_redis_url_parse("redis://localhost", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");

    assert_int_equal(llmc_redis_url_parse("redis://10.0.0.7:7000/3", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "10.0.0.7");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 3);
    assert_int_equal(u.nseeds, 1);
    assert_false(u.cluster);

    /* A comma list: a Cluster's seeds, the first one also as host:port. */
    assert_int_equal(llmc_redis_url_parse("redis://:pw@a:7001,[::1]:7002,c/0", &u, err,
                                          sizeof err), 0);
    assert_true(u.cluster);
    assert_int_equal(u.nseeds, 3);
    assert_string_equal(u.host, "a");
    assert_int_equal(u.port, 7001);
    assert_string_equal(u.seeds[1].host, "::1");
    assert_int_equal(u.seeds[1].port, 7002);
    assert_string_equal(u.seeds[2].host, "c");
    assert_int_equal(u.seeds[2].port, 6379);
    assert_string_equal(u.password, "pw");

    assert_int_equal(llmc_redis_url_parse("redis://:s3cret@h:1/", &u, err, sizeof err), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "s3cret");
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 1);
    assert_int_equal(u.db, 0);

    /* A password may hold ':' and '@' (the last '@' ends it) and %-escapes. */
    assert_int_equal(llmc_redis_url_parse("redis://app:p:w@x%2Fy@[::1]:6380/15", &u, err,
                                          sizeof err), 0);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "p:w@x/y");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 15);
}

/* Each refusal names the problem and never the password. */
static void test_url_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *url, *says;
    } bad[] = {
        {"rediss://:pw-SECRET@h:6380", "TLS"},
        {"redis://:pw-SECRET@a:1,b:2/3", "Cluster"},
        {"redis://:pw-SECRET@a:1,", "host"},
        {"redis://:pw-SECRET@a:1,b:x", "port"},
        {"redis://:pw-SECRET@a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", "seed"},
        {"http://h:1", "not a redis:// URL"},
        {"redis://pw-SECRET@h", "PASSWORD@"},
        {"redis://:pw-SECRET@h:0", "port"},
        {"redis://:pw-SECRET@h:65536", "port"},
        {"redis://:pw-SECRET@h:12x", "port"},
        {"redis://:pw-SECRET@h/x", "database"},
        {"redis://:pw-SECRET@h/1/2", "database"},
        {"redis://:pw-SECRET@:6379", "host"},
        {"redis://:pw-SECRET@[::1:6379", "]"},
        {"redis://:pw-SECRET@h?timeout=1", "query"},
        {"redis://:pw%zzSECRET@h", "escape"},
        {"redis://:pw%00SECRET@h", "escape"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        llmc_redis_url_t u;
        char err[256] = "";
        assert_int_equal(llmc_redis_url_parse(bad[i].url, &u, err, sizeof err), LLMC_EINVAL);
        if (!strstr(err, bad[i].says) || strstr(err, "SECRET")) {
            fprintf(stderr, "%s -> %s\n", bad[i].url, err);
            fail();
        }
        assert_string_equal(u.password, "");
    }
}

static void test_url_redact(void **state)
{
    (void)state;
    char out[128];

    llmc_redis_url_redact("redis://user:pw@host:1/2", out, sizeof out);
    assert_string_equal(out, "redis://***@host:1/2");
    llmc_redis_url_redact("redis://:p@w@host", out, sizeof out);
    assert_string_equal(out, "redis://***@host");
    llmc_redis_url_redact("redis://host:1", out, sizeof out);
    assert_string_equal(out, "redis://host:1");
    llmc_redis_url_redact("user:pw@host", out, sizeof out);
    assert_string_equal(out, "***@host");
    llmc_redis_url_redact("redis://:pw@h", out, 10);
    assert_string_equal(out, "redis://*");
}

/* ---- keys and values ----------------------------------------------------------- */

static llmc_key_t key_of(uint8_t seed)
{
    llmc_key_t k;
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        k.b[i] = (uint8_t)(seed * 31 + i);
    return k;
}

static llmc_entry_t *entry_of(uint8_t seed, int64_t created, int64_t expires, const char *body)
{
    llmc_key_t k = key_of(seed);
    static const char *const tags[] = {"team-a"};
    llmc_entry_spec_t s = {
        .key = &k, .status = 200, .created_ms = created, .expires_ms = expires,
        .content_type = "application/json", .ns = "ns1", .model = "gpt-4o-mini",
        .tags = tags, .ntags = 1, .body = body, .body_len = strlen(body),
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    assert_non_null(e);
    return e;
}

static void test_key_and_lifetime(void **state)
{
    (void)state;
    redis_t r = {.prefix = "tenant:", .prefix_len = 7, .tag_open = "", .tag_close = ""};
    llmc_key_t k;
    char out[KEY_MAX], lease[KEY_MAX], hex[2 * LLMC_KEY_LEN + 1];

    memset(&k, 0xab, sizeof k);
    llmc_key_hex(&k, hex);
    assert_int_equal(make_key(&r, &k, out), 7 + 64);
    assert_memory_equal(out, "tenant:", 7);
    assert_memory_equal(out + 7, hex, 64);
    assert_int_equal(hex_at(&r), 7);

    /* On a Cluster the hex is a hashtag: a key and its lease share a slot
       (the lease script touches both). */
    r.tag_open = "{";
    r.tag_close = "}";
    size_t n = make_key(&r, &k, out), ln = make_lease_key(&r, &k, lease);
    assert_int_equal(n, 7 + 66);
    assert_memory_equal(out, "tenant:{", 8);
    assert_memory_equal(out + 8, hex, 64);
    assert_int_equal(out[72], '}');
    assert_int_equal(hex_at(&r), 8);
    assert_int_equal(ln, 7 + 6 + 66);
    assert_memory_equal(lease, "tenant:lease:{", 14);
    assert_int_equal(llmc_redis_slot(out, n), llmc_redis_slot(lease, ln));

    llmc_entry_t *e = entry_of(1, 1000, 61000, "{}");
    assert_int_equal(px_for(e, 1000), 60000);
    assert_int_equal(px_for(e, 60999), 1);
    assert_int_equal(px_for(e, 61000), 0);
    assert_int_equal(px_for(e, 99999), 0);
    llmc_entry_unref(e);
}

static redisReply reply_str(const void *s, size_t len)
{
    return (redisReply){.type = REDIS_REPLY_STRING, .str = (char *)s, .len = len};
}

/* A stored value decodes to the same entry under its own key; anything
   else is a miss of a kind the tier counts. */
static void test_value_decode(void **state)
{
    (void)state;
    llmc_entry_t *e = entry_of(2, 1700000000000, 1700000300000, "{\"answer\":42}"), *got;
    llmc_key_t k = key_of(2), other = key_of(3);
    uint8_t *buf;
    size_t len;
    assert_int_equal(llmc_record_encode(e, &buf, &len), 0);

    redisReply r = reply_str(buf, len);
    assert_int_equal(value_decode(&k, &r, &got), 0);
    assert_memory_equal(&got->key, &k, sizeof k);
    assert_int_equal(got->body_len, e->body_len);
    assert_memory_equal(got->body, e->body, e->body_len);
    assert_int_equal(got->created_ms, e->created_ms);
    assert_int_equal(got->expires_ms, e->expires_ms);
    assert_string_equal(llmc_entry_ns(got), "ns1");
    assert_string_equal(llmc_entry_tag(got, 0), "team-a");
    llmc_entry_unref(got);

    /* Under another key: the checksum covers the key. */
    assert_int_equal(value_decode(&other, &r, &got), LLMC_ECORRUPT);
    assert_null(got);
    /* Every cut and a flipped byte. */
    for (size_t n = 0; n < len; n += 7) {
        r = reply_str(buf, n);
        assert_int_equal(value_decode(&k, &r, &got), LLMC_ECORRUPT);
    }
    buf[len / 2] ^= 0x40;
    r = reply_str(buf, len);
    assert_int_equal(value_decode(&k, &r, &got), LLMC_ECORRUPT);
    r = reply_str("hello", 5);
    assert_int_equal(value_decode(&k, &r, &got), LLMC_ECORRUPT);

    redisReply nil = {.type = REDIS_REPLY_NIL};
    assert_int_equal(value_decode(&k, &nil, &got), LLMC_ENOENT);
    redisReply num = {.type = REDIS_REPLY_INTEGER, .integer = 7};
    assert_int_equal(value_decode(&k, &num, &got), LLMC_EIO);
    redisReply err = {.type = REDIS_REPLY_ERROR, .str = "WRONGTYPE", .len = 9};
    assert_int_equal(value_decode(&k, &err, &got), LLMC_EIO);
    assert_null(got);
    free(buf);
    llmc_entry_unref(e);
}

/* ---- a fake server on the loop ---------------------------------------------------- */

typedef enum fake_mode {
    FAKE_NORMAL,     /* PING, AUTH, SELECT, GET, SET, DEL as Redis would */
    FAKE_SILENT,     /* GETs are never answered */
    FAKE_GARBAGE,    /* GETs are answered with a string that is no record */
    FAKE_TWICE,      /* GETs are answered twice */
} fake_mode_t;

typedef struct fake_conn {
    uv_tcp_t tcp;
    struct fake *f;
    char *buf;
    size_t len, cap;
    struct fake_conn *next;
} fake_conn_t;

typedef struct fake {
    uv_tcp_t server;
    int port;
    fake_mode_t mode;
    fake_conn_t *conns;
    char key[256];               /* the one key it holds */
    char *val;
    size_t vlen;
    long long px;
    int accepted, pings, gets, sets, dels;
    char auth[256];              /* the last AUTH's arguments, space-separated */
    char lease[64];              /* the token holding the lease, "" when free */
    int acquires, releases, refreshes;
    int publishes, scans;
    char msg[1024];              /* the last PUBLISH's message */
    fake_conn_t *subscriber;     /* the connection that sent SUBSCRIBE */
    char chan[128];
} fake_t;

typedef struct wreq {
    uv_write_t req;
    char data[];
} wreq_t;

static void wrote(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void fake_send(fake_conn_t *fc, const char *data, size_t len)
{
    wreq_t *w = malloc(sizeof(*w) + len);
    assert_non_null(w);
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&fc->tcp, &b, 1, wrote) != 0)
        free(w);
}

static void fake_bulk(fake_conn_t *fc, const char *s, size_t len)
{
    char head[32];
    int n = snprintf(head, sizeof head, "$%zu\r\n", len);
    fake_send(fc, head, (size_t)n);
    fake_send(fc, s, len);
    fake_send(fc, "\r\n", 2);
}

/* One RESP command at buf: bytes used, 0 when incomplete. */
static size_t parse_cmd(const char *buf, size_t len, int *argc, const char **argv, size_t *lens)
{
    const char *end = buf + len, *p = buf, *nl;
    if (len < 4 || *p != '*' || !(nl = memchr(p, '\n', len)))
        return 0;
    *argc = atoi(p + 1);
    assert_true(*argc >= 1 && *argc <= 8);
    p = nl + 1;
    for (int i = 0; i < *argc; i++) {
        if (p >= end || !(nl = memchr(p, '\n', (size_t)(end - p))))
            return 0;
        assert_int_equal(*p, '$');
        lens[i] = (size_t)atol(p + 1);
        argv[i] = nl + 1;
        if ((size_t)(end - argv[i]) < lens[i] + 2)
            return 0;
        p = argv[i] + lens[i] + 2;
    }
    return (size_t)(p - buf);
}

static bool is(const char *a, size_t alen, const char *word)
{
    return alen == strlen(word) && strncasecmp(a, word, alen) == 0;
}

static void fake_command(fake_conn_t *fc, int argc, const char **argv, size_t *lens)
{
    fake_t *f = fc->f;
    if (is(argv[0], lens[0], "PING")) {
        f->pings++;
        fake_send(fc, "+PONG\r\n", 7);
    } else if (is(argv[0], lens[0], "AUTH")) {
        f->auth[0] = '\0';
        for (int i = 1; i < argc; i++)
            snprintf(f->auth + strlen(f->auth), sizeof f->auth - strlen(f->auth), "%s%.*s",
                     i > 1 ? " " : "", (int)lens[i], argv[i]);
        fake_send(fc, "+OK\r\n", 5);
    } else if (is(argv[0], lens[0], "SELECT")) {
        fake_send(fc, "+OK\r\n", 5);
    } else if (is(argv[0], lens[0], "SET")) {
        f->sets++;
        snprintf(f->key, sizeof f->key, "%.*s", (int)lens[1], argv[1]);
        free(f->val);
        f->val = malloc(lens[2]);
        memcpy(f->val, argv[2], lens[2]);
        f->vlen = lens[2];
        f->px = argc >= 5 && is(argv[3], lens[3], "PX") ? atoll(argv[4]) : -1;
        fake_send(fc, "+OK\r\n", 5);
    } else if (is(argv[0], lens[0], "DEL")) {
        f->dels++;
        bool held = f->val && lens[1] == strlen(f->key) && !memcmp(argv[1], f->key, lens[1]);
        if (held) {
            free(f->val);
            f->val = NULL;
        }
        fake_send(fc, held ? ":1\r\n" : ":0\r\n", 4);
    } else if (is(argv[0], lens[0], "EVAL")) {
        /* The tier's three lease scripts, told apart by what they call. */
        char script[512];
        snprintf(script, sizeof script, "%.*s", (int)lens[1], argv[1]);
        const char *tok = argv[argc - 2];
        size_t toklen = lens[argc - 2];
        bool ours = strlen(f->lease) == toklen && !memcmp(f->lease, tok, toklen);
        if (strstr(script, "'NX'")) {
            f->acquires++;
            bool held = f->val && lens[3] == strlen(f->key) && !memcmp(argv[3], f->key, lens[3]);
            if (held) {
                fake_bulk(fc, f->val, f->vlen);
            } else if (!f->lease[0]) {
                snprintf(f->lease, sizeof f->lease, "%.*s", (int)toklen, tok);
                fake_send(fc, ":1\r\n", 4);
            } else {
                fake_send(fc, ":0\r\n", 4);
            }
        } else if (strstr(script, "'DEL'")) {
            f->releases++;
            if (ours)
                f->lease[0] = '\0';
            fake_send(fc, ours ? ":1\r\n" : ":0\r\n", 4);
        } else {
            f->refreshes++;
            fake_send(fc, ours ? ":1\r\n" : ":0\r\n", 4);
        }
    } else if (is(argv[0], lens[0], "GET")) {
        f->gets++;
        bool held = f->val && lens[1] == strlen(f->key) && !memcmp(argv[1], f->key, lens[1]);
        switch (f->mode) {
        case FAKE_SILENT:
            break;
        case FAKE_GARBAGE:
            fake_bulk(fc, "not a record", 12);
            break;
        case FAKE_TWICE:
            fake_send(fc, "$-1\r\n$-1\r\n", 10);
            break;
        case FAKE_NORMAL:
            if (held)
                fake_bulk(fc, f->val, f->vlen);
            else
                fake_send(fc, "$-1\r\n", 5);
            break;
        }
    } else if (is(argv[0], lens[0], "SUBSCRIBE")) {
        char head[64];
        f->subscriber = fc;
        snprintf(f->chan, sizeof f->chan, "%.*s", (int)lens[1], argv[1]);
        int n = snprintf(head, sizeof head, "*3\r\n$9\r\nsubscribe\r\n");
        fake_send(fc, head, (size_t)n);
        fake_bulk(fc, f->chan, strlen(f->chan));
        fake_send(fc, ":1\r\n", 4);
    } else if (is(argv[0], lens[0], "PUBLISH")) {
        f->publishes++;
        snprintf(f->msg, sizeof f->msg, "%.*s", (int)lens[2], argv[2]);
        fake_send(fc, ":0\r\n", 4);
    } else if (is(argv[0], lens[0], "SCAN")) {
        /* One step: the key it holds, if any; cursor 0 (done). */
        f->scans++;
        if (f->val) {
            char head[64];
            int n = snprintf(head, sizeof head, "*2\r\n$1\r\n0\r\n*1\r\n");
            fake_send(fc, head, (size_t)n);
            fake_bulk(fc, f->key, strlen(f->key));
        } else {
            fake_send(fc, "*2\r\n$1\r\n0\r\n*0\r\n", 15);
        }
    } else {
        fake_send(fc, "-ERR unknown command\r\n", 22);
    }
}

static void fake_alloc(uv_handle_t *h, size_t want, uv_buf_t *b)
{
    fake_conn_t *fc = h->data;
    if (fc->cap - fc->len < 65536) {
        fc->cap = fc->cap * 2 + 65536;
        fc->buf = realloc(fc->buf, fc->cap);
    }
    *b = uv_buf_init(fc->buf + fc->len, (unsigned)(fc->cap - fc->len));
}

static void fake_conn_closed(uv_handle_t *h)
{
    fake_conn_t *fc = h->data;
    free(fc->buf);
    free(fc);
}

static void fake_unlink(fake_conn_t *fc)
{
    for (fake_conn_t **pp = &fc->f->conns; *pp; pp = &(*pp)->next)
        if (*pp == fc) {
            *pp = fc->next;
            return;
        }
}

static void fake_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    fake_conn_t *fc = s->data;
    if (n < 0) {
        if (fc->f->subscriber == fc)
            fc->f->subscriber = NULL;
        fake_unlink(fc);
        uv_close((uv_handle_t *)&fc->tcp, fake_conn_closed);
        return;
    }
    fc->len += (size_t)n;
    for (;;) {
        int argc;
        const char *argv[8];
        size_t lens[8];
        size_t used = parse_cmd(fc->buf, fc->len, &argc, argv, lens);
        if (!used)
            break;
        fake_command(fc, argc, argv, lens);
        memmove(fc->buf, fc->buf + used, fc->len - used);
        fc->len -= used;
    }
}

static void fake_accept(uv_stream_t *server, int status)
{
    fake_t *f = server->data;
    fake_conn_t *fc = calloc(1, sizeof *fc);
    assert_int_equal(status, 0);
    assert_non_null(fc);
    fc->f = f;
    uv_tcp_init(server->loop, &fc->tcp);
    fc->tcp.data = fc;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&fc->tcp), 0);
    fc->next = f->conns;
    f->conns = fc;
    f->accepted++;
    uv_read_start((uv_stream_t *)&fc->tcp, fake_alloc, fake_read);
}

static void fake_start(fake_t *f, uv_loop_t *loop)
{
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_init(loop, &f->server), 0);
    f->server.data = f;
    assert_int_equal(uv_tcp_bind(&f->server, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->server, 16, fake_accept), 0);
    uv_tcp_getsockname(&f->server, (struct sockaddr *)&got, &len);
    f->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

/* Closes every connection the fake holds (Redis going away). */
static void fake_drop_conns(fake_t *f)
{
    while (f->conns) {
        fake_conn_t *fc = f->conns;
        f->conns = fc->next;
        uv_close((uv_handle_t *)&fc->tcp, fake_conn_closed);
    }
}

static void fake_stop(fake_t *f)
{
    fake_drop_conns(f);
    if (!uv_is_closing((uv_handle_t *)&f->server))
        uv_close((uv_handle_t *)&f->server, NULL);
    free(f->val);
    f->val = NULL;
}

/* ---- the tier on a loop ------------------------------------------------------------- */

typedef struct fixture {
    uv_loop_t loop;
    uv_timer_t tick;              /* keeps uv_run(ONCE) from sleeping past a deadline */
    fake_t fake;
    llmc_tier_t *t;
    char log[4096];
    int nlog;
} fixture_t;

static void collect(void *arg, const char *msg)
{
    fixture_t *x = arg;
    snprintf(x->log + strlen(x->log), sizeof x->log - strlen(x->log), "%s\n", msg);
    x->nlog++;
}

static void noop_tick(uv_timer_t *t)
{
    (void)t;
}

/* Opens the tier on url (%d: the fake's port) and attaches it as worker 0. */
static void open_tier(fixture_t *x, const char *url_fmt, int64_t timeout_ms)
{
    char url[256], err[256] = "";
    snprintf(url, sizeof url, url_fmt, x->fake.port);
    llmc_redis_config_t cfg = {
        .url = url, .prefix = "t:", .timeout_ms = timeout_ms, .log = collect, .log_arg = x,
    };
    assert_int_equal(llmc_tier_redis_open(&cfg, &x->t, err, sizeof err), 0);
    assert_int_equal(x->t->ops->attach(x->t, 0, &x->loop), 0);
}

/* ---- invalidation messages ---- */

typedef struct heard {
    int calls;
    bool logged;
    llmc_purge_t sel;
    char ns[32];
} heard_t;

static heard_t heard;

static void record_peer_purge(void *arg, llmc_tier_t *from, unsigned worker,
                              const llmc_purge_t *sel, bool logged)
{
    (void)arg;
    assert_int_equal(worker, 0);
    assert_non_null(from);
    heard.calls++;
    heard.logged = logged;
    heard.sel = *sel;
    snprintf(heard.ns, sizeof heard.ns, "%s", sel->ns ? sel->ns : "(null)");
    heard.sel.ns = NULL;
}

/* The fake pushes msg to its subscriber, as Redis delivers a PUBLISH. */
static void fake_push(fake_t *f, const char *msg)
{
    assert_non_null(f->subscriber);
    fake_send(f->subscriber, "*3\r\n$7\r\nmessage\r\n", 17);
    fake_bulk(f->subscriber, f->chan, strlen(f->chan));
    fake_bulk(f->subscriber, msg, strlen(msg));
}

static int setup(void **state)
{
    fixture_t *x = calloc(1, sizeof *x);
    if (!x || uv_loop_init(&x->loop) != 0)
        return -1;
    uv_timer_init(&x->loop, &x->tick);
    uv_timer_start(&x->tick, noop_tick, 2, 2);
    fake_start(&x->fake, &x->loop);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *x = *state;
    if (x->t)
        x->t->ops->detach(x->t, 0);
    fake_stop(&x->fake);
    uv_close((uv_handle_t *)&x->tick, NULL);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    if (x->t)
        x->t->ops->destroy(x->t);
    assert_int_equal(uv_loop_close(&x->loop), 0);
    free(x);
    return 0;
}

static redis_xstats_t xs(fixture_t *x)
{
    redis_xstats_t s;
    x->t->ops->xstats(x->t, &s);
    return s;
}

static llmc_tier_stats_t st(fixture_t *x)
{
    llmc_tier_stats_t s;
    x->t->ops->stats(x->t, &s);
    return s;
}

/* Runs the loop until pred(x) or ms of loop time. */
static bool run_until(fixture_t *x, bool (*pred)(fixture_t *), uint64_t ms)
{
    uint64_t end = uv_now(&x->loop) + ms;
    while (!pred(x) && uv_now(&x->loop) < end)
        uv_run(&x->loop, UV_RUN_ONCE);
    return pred(x);
}

static bool connected(fixture_t *x) { return xs(x).connected == 1; }
static bool disconnected(fixture_t *x) { return xs(x).connected == 0; }

typedef struct ask {
    llmc_tier_lookup_t lk;        /* first */
    llmc_tier_query_t q;
    int calls, rc;
    uint64_t at;                  /* loop time of the answer */
    uv_loop_t *loop;
} ask_t;

static void asked_done(llmc_tier_lookup_t *lk, int rc)
{
    ask_t *a = (ask_t *)lk;
    a->calls++;
    a->rc = rc;
    a->at = uv_now(a->loop);
}

static int ask(fixture_t *x, ask_t *a, uint8_t seed)
{
    memset(a, 0, sizeof *a);
    a->q.key = key_of(seed);
    a->lk.query = &a->q;
    a->lk.now_ms = 1700000000000;
    a->lk.worker = 0;
    a->lk.done = asked_done;
    a->loop = &x->loop;
    return x->t->ops->lookup(x->t, &a->lk);
}

static ask_t *pending_ask;
static bool answered(fixture_t *x)
{
    (void)x;
    return pending_ask->calls > 0;
}

/* Asks and runs the loop until the answer came (at most ms). */
static int ask_wait(fixture_t *x, ask_t *a, uint8_t seed, uint64_t ms)
{
    int rc = ask(x, a, seed);
    if (rc != LLMC_EAGAIN)
        return rc;
    pending_ask = a;
    assert_true(run_until(x, answered, ms));
    assert_int_equal(a->calls, 1);
    return a->rc;
}

static bool fake_set_seen(fixture_t *x) { return x->fake.sets > 0; }
static bool fake_get_seen(fixture_t *x) { return x->fake.gets > 0; }

typedef struct purged {
    int calls;
    size_t removed;
} purged_t;

static void purge_done(void *arg, size_t removed)
{
    purged_t *p = arg;
    p->calls++;
    p->removed = removed;
}

static purged_t *pending_purge;
static bool purge_answered(fixture_t *x)
{
    (void)x;
    return pending_purge->calls > 0;
}

static bool purge_answered_twice(fixture_t *x)
{
    (void)x;
    return pending_purge->calls > 1;
}

static bool fake_two_published(fixture_t *x)
{
    return x->fake.publishes >= 2;
}

/* A fill is written with its remaining lifetime and comes back as the same
   answer; an expired one is not written; a key purge deletes. The AUTH
   and SELECT of the URL reach the server, and no log line holds the
   password. */
static void test_put_lookup_purge(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://app:pw-SECRET@127.0.0.1:%d/2", 200);
    assert_true(run_until(x, connected, 2000));
    assert_string_equal(x->fake.auth, "app pw-SECRET");

    ask_t a;
    assert_int_equal(ask_wait(x, &a, 5, 1000), LLMC_ENOENT);

    int64_t now = 1700000000000;
    llmc_entry_t *old = entry_of(5, now - 1000, now, "{\"old\":1}");
    assert_int_equal(x->t->ops->put(x->t, 0, old, now), 0);
    llmc_entry_t *e = entry_of(5, now, now + 90000, "{\"answer\":42}");
    assert_int_equal(x->t->ops->put(x->t, 0, e, now), 0);
    assert_true(run_until(x, fake_set_seen, 1000));
    assert_int_equal(x->fake.sets, 1); /* the expired one was never sent */
    assert_int_equal(x->fake.px, 90000);
    char hex[65];
    llmc_key_hex(&e->key, hex);
    assert_memory_equal(x->fake.key, "t:", 2);
    assert_string_equal(x->fake.key + 2, hex);

    assert_int_equal(ask_wait(x, &a, 5, 1000), 0);
    assert_non_null(a.lk.entry);
    assert_int_equal(a.lk.entry->body_len, e->body_len);
    assert_memory_equal(a.lk.entry->body, e->body, e->body_len);
    assert_int_equal(a.lk.entry->expires_ms, e->expires_ms);
    llmc_entry_unref(a.lk.entry);

    llmc_tier_stats_t s = st(x);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.stored, 1);
    assert_int_equal(s.errors, 0);

    purged_t pr = {0};
    llmc_purge_t sel = {.conds = LLMC_PURGE_KEY, .key = e->key};
    x->t->ops->purge(x->t, 0, &sel, purge_done, &pr);
    pending_purge = &pr;
    assert_true(run_until(x, purge_answered, 1000));
    assert_int_equal(pr.calls, 1);
    assert_int_equal(pr.removed, 1);
    assert_int_equal(st(x).purged, 1);
    assert_int_equal(ask_wait(x, &a, 5, 1000), LLMC_ENOENT);
    /* The fill and the key purge were told to the other gateways. */
    assert_true(run_until(x, fake_two_published, 1000));
    assert_int_equal(strncmp(x->fake.msg + 16, " P {", 4), 0);
    /* Another selector walks the prefix (SCAN): nothing left to take. */
    sel = (llmc_purge_t){.conds = LLMC_PURGE_NAMESPACE, .ns = "ns1"};
    x->t->ops->purge(x->t, 0, &sel, purge_done, &pr);
    assert_true(run_until(x, purge_answered_twice, 1000));
    assert_int_equal(pr.calls, 2);
    assert_int_equal(pr.removed, 0);
    assert_int_equal(x->fake.scans, 1);
    assert_true(strstr(x->log, "connected to redis://127.0.0.1:") != NULL);
    assert_null(strstr(x->log, "SECRET"));
    llmc_entry_unref(old);
    llmc_entry_unref(e);
}

/* Before its connection is up, a lookup misses at once without asking
   (LLMC_EIO: a miss to the walk; explain says Redis did not answer). */
static void test_miss_before_ready(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 200);
    ask_t a;
    assert_int_equal(ask(x, &a, 1), LLMC_EIO);
    assert_int_equal(a.calls, 0);
    assert_int_equal(xs(x).unasked, 1);
    assert_int_equal(st(x).misses, 1);
    assert_true(run_until(x, connected, 2000));
    assert_int_equal(x->fake.gets, 0);
}

/* A GET not answered within the timeout is a miss (LLMC_ETIMEDOUT, which
   explain tells from an absent key), answered then (not later); the
   connection stays up after one. */
static void test_timeout_is_miss(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 50);
    assert_true(run_until(x, connected, 2000));
    x->fake.mode = FAKE_SILENT;
    ask_t a;
    uint64_t t0 = uv_now(&x->loop);
    assert_int_equal(ask_wait(x, &a, 1, 2000), LLMC_ETIMEDOUT);
    assert_in_range(a.at - t0, 45, 500);
    assert_null(a.lk.entry);
    assert_int_equal(xs(x).timeouts, 1);
    assert_int_equal(st(x).misses, 1);
    assert_int_equal(st(x).errors, 1);
    assert_int_equal(xs(x).connected, 1);
    assert_int_equal(xs(x).breaker_trips, 0);
}

/* Lookups that keep timing out trip the breaker: the connection is
   dropped (told once), made again, and works. */
static void test_breaker(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 20);
    assert_true(run_until(x, connected, 2000));
    x->fake.mode = FAKE_SILENT;
    ask_t a;
    for (int i = 0; i < BREAKER_TIMEOUTS; i++)
        assert_int_equal(ask_wait(x, &a, 1, 2000), LLMC_ETIMEDOUT);
    assert_int_equal(xs(x).breaker_trips, 1);
    assert_int_equal(xs(x).connected, 0);
    /* While it is down, lookups do not wait. */
    assert_int_equal(ask(x, &a, 1), LLMC_EIO);
    x->fake.mode = FAKE_NORMAL;
    assert_true(run_until(x, connected, 3000));
    assert_int_equal(xs(x).connects, 2);
    assert_int_equal(ask_wait(x, &a, 1, 1000), LLMC_ENOENT);
    assert_int_equal(xs(x).timeouts, BREAKER_TIMEOUTS);
    assert_non_null(strstr(x->log, "lookups keep timing out"));
    assert_int_equal(x->nlog, 3); /* connected, lost, connected */
}

/* A value that is not a record is a counted miss (LLMC_ECORRUPT), not a
   client's error. */
static void test_garbage_value(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 200);
    assert_true(run_until(x, connected, 2000));
    x->fake.mode = FAKE_GARBAGE;
    ask_t a;
    assert_int_equal(ask_wait(x, &a, 1, 1000), LLMC_ECORRUPT);
    assert_null(a.lk.entry);
    assert_int_equal(xs(x).corrupt, 1);
    assert_int_equal(st(x).misses, 1);
    assert_int_equal(xs(x).connected, 1);
}

/* A reply nobody asked for (hiredis 0.14 would abort the process) drops
   the connection instead, which is then made again. */
static void test_unasked_reply(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 200);
    assert_true(run_until(x, connected, 2000));
    x->fake.mode = FAKE_TWICE;
    ask_t a;
    assert_int_equal(ask_wait(x, &a, 1, 1000), LLMC_ENOENT);
    assert_true(run_until(x, disconnected, 1000));
    assert_int_equal(xs(x).disconnects, 1);
    assert_int_equal(xs(x).bad_replies, 1);
    assert_non_null(strstr(x->log, "a reply no command asked for"));
    x->fake.mode = FAKE_NORMAL;
    assert_true(run_until(x, connected, 3000));
    assert_int_equal(ask_wait(x, &a, 1, 1000), LLMC_ENOENT);
}

/* Redis closes the connection under a waiting lookup: it is answered at
   once as a miss; the loss is told once; the connection comes back. */
static void test_connection_lost(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 5000);
    assert_true(run_until(x, connected, 2000));
    x->fake.mode = FAKE_SILENT;
    ask_t a;
    uint64_t t0 = uv_now(&x->loop);
    assert_int_equal(ask(x, &a, 1), LLMC_EAGAIN);
    pending_ask = &a;
    assert_true(run_until(x, fake_get_seen, 1000));
    fake_drop_conns(&x->fake);
    assert_true(run_until(x, answered, 1000));
    assert_int_equal(a.rc, LLMC_EIO);
    assert_true(a.at - t0 < 1000);
    assert_int_equal(xs(x).disconnects, 1);
    assert_int_equal(xs(x).timeouts, 0);
    x->fake.mode = FAKE_NORMAL;
    assert_true(run_until(x, connected, 3000));
    assert_non_null(strstr(x->log, "lost the connection"));
    assert_int_equal(x->nlog, 3);
}

/* No server at all: lookups miss at once, writes are dropped, attempts go
   on with backoff, and "cannot connect" is told once, not per attempt. */
static bool failed_thrice(fixture_t *x) { return xs(x).connect_failures >= 3; }

static void test_down(void **state)
{
    fixture_t *x = *state;
    fake_stop(&x->fake); /* its port now refuses */
    open_tier(x, "redis://127.0.0.1:%d", 50);
    assert_true(run_until(x, failed_thrice, 3000));
    ask_t a;
    assert_int_equal(ask(x, &a, 1), LLMC_EIO);
    assert_int_equal(a.calls, 0);
    int64_t now = 1700000000000;
    llmc_entry_t *e = entry_of(1, now, now + 60000, "{}");
    assert_int_equal(x->t->ops->put(x->t, 0, e, now), 0);
    llmc_entry_unref(e);
    assert_int_equal(st(x).dropped, 1);
    assert_int_equal(xs(x).connected, 0);
    assert_int_equal(x->nlog, 1);
    assert_non_null(strstr(x->log, "cannot connect to redis://127.0.0.1:"));
}

/* Detach ends a waiting lookup with LLMC_ECANCELED, at once. */
static void test_detach_cancels(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 5000);
    assert_true(run_until(x, connected, 2000));
    x->fake.mode = FAKE_SILENT;
    ask_t a;
    assert_int_equal(ask(x, &a, 1), LLMC_EAGAIN);
    x->t->ops->detach(x->t, 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.rc, LLMC_ECANCELED);
    assert_int_equal(xs(x).connected, 0);
}

/* ---- leases ---------------------------------------------------------------------- */

typedef struct lease_req {
    llmc_tier_lease_t ls;        /* first */
    int calls, result;
} lease_req_t;

static void lease_done_cb(llmc_tier_lease_t *ls, int result)
{
    lease_req_t *q = (lease_req_t *)ls;
    q->calls++;
    q->result = result;
}

static int lease_ask_(fixture_t *x, lease_req_t *q, uint8_t seed, int64_t max_wait_ms)
{
    memset(q, 0, sizeof *q);
    q->ls.key = key_of(seed);
    q->ls.worker = 0;
    q->ls.max_wait_ms = max_wait_ms;
    q->ls.done = lease_done_cb;
    return x->t->ops->lease(x->t, &q->ls);
}

static lease_req_t *pending_lease;
static bool lease_answered(fixture_t *x)
{
    (void)x;
    return pending_lease->calls > 0;
}

static bool released(fixture_t *x) { return x->fake.releases > 0; }

/* A free lease is won; the holder gives it back (its own only). */
static void test_lease_won_and_given_back(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 200);
    lease_req_t q;
    assert_int_equal(lease_ask_(x, &q, 1, 1000), LLMC_LEASE_NONE); /* not connected yet */
    assert_true(run_until(x, connected, 2000));
    assert_int_equal(lease_ask_(x, &q, 1, 1000), LLMC_EAGAIN);
    pending_lease = &q;
    assert_true(run_until(x, lease_answered, 1000));
    assert_int_equal(q.result, LLMC_LEASE_WON);
    assert_true(x->fake.lease[0] != '\0');
    x->t->ops->lease_end(x->t, &q.ls);
    assert_true(run_until(x, released, 1000));
    assert_string_equal(x->fake.lease, "");
    assert_int_equal(q.calls, 1);
    redis_xstats_t s = xs(x);
    assert_int_equal(s.leases_won, 1);
    assert_int_equal(s.leases_none, 1);
}

/* A lease held elsewhere is waited on; the holder's answer, when it comes,
   is handed over as an entry. */
static bool asked_twice(fixture_t *x) { return x->fake.acquires >= 2; }

static void test_lease_waits_for_the_fill(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 200);
    assert_true(run_until(x, connected, 2000));
    snprintf(x->fake.lease, sizeof x->fake.lease, "someone-else");
    lease_req_t q;
    assert_int_equal(lease_ask_(x, &q, 7, 5000), LLMC_EAGAIN);
    assert_true(run_until(x, asked_twice, 1000));
    assert_int_equal(q.calls, 0);
    assert_int_equal(xs(x).leases_waited, 1);

    /* The holder stores its answer. */
    int64_t now = 1700000000000;
    llmc_entry_t *e = entry_of(7, now, now + 60000, "{\"shared\":true}");
    assert_int_equal(x->t->ops->put(x->t, 0, e, now), 0);
    pending_lease = &q;
    assert_true(run_until(x, lease_answered, 1000));
    assert_int_equal(q.result, LLMC_LEASE_FILLED);
    assert_non_null(q.ls.entry);
    assert_memory_equal(q.ls.entry->body, e->body, e->body_len);
    assert_null(q.ls.tier_data);
    llmc_entry_unref(q.ls.entry);
    llmc_entry_unref(e);
    assert_string_equal(x->fake.lease, "someone-else");
    assert_int_equal(xs(x).leases_filled, 1);
}

/* Waiting is bounded: past max_wait the answer is NONE (call the model). */
static void test_lease_wait_bounded(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 200);
    assert_true(run_until(x, connected, 2000));
    snprintf(x->fake.lease, sizeof x->fake.lease, "someone-else");
    lease_req_t q;
    uint64_t t0 = uv_now(&x->loop);
    assert_int_equal(lease_ask_(x, &q, 1, 120), LLMC_EAGAIN);
    pending_lease = &q;
    assert_true(run_until(x, lease_answered, 2000));
    assert_int_equal(q.result, LLMC_LEASE_NONE);
    assert_in_range(uv_now(&x->loop) - t0, 100, 1000);
}

/* Dropping a pending lease calls nothing back; detach cancels one still
   waited on. */
static void test_lease_end_and_detach(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 200);
    assert_true(run_until(x, connected, 2000));
    snprintf(x->fake.lease, sizeof x->fake.lease, "someone-else");
    lease_req_t dropped, waiting;
    assert_int_equal(lease_ask_(x, &dropped, 1, 5000), LLMC_EAGAIN);
    assert_int_equal(lease_ask_(x, &waiting, 2, 5000), LLMC_EAGAIN);
    assert_true(run_until(x, asked_twice, 1000));
    x->t->ops->lease_end(x->t, &dropped.ls);
    x->t->ops->detach(x->t, 0);
    assert_int_equal(dropped.calls, 0);
    assert_int_equal(waiting.calls, 1);
    assert_int_equal(waiting.result, LLMC_ECANCELED);
}

/* A selector crosses the wire unchanged; what is not one is refused,
   never read as "purge everything". */
static void test_selector_codec(void **state)
{
    (void)state;
    llmc_purge_t sel = {
        .conds = LLMC_PURGE_NAMESPACE | LLMC_PURGE_TAG | LLMC_PURGE_KEY_PREFIX | LLMC_PURGE_OLDER |
                 LLMC_PURGE_MODEL | LLMC_PURGE_ROUTE | LLMC_PURGE_KEY,
        .key = key_of(7), .prefix = key_of(9), .prefix_digits = 5,
        .created_before_ms = -12345, .ns = "n\"s", .tag = "t", .model = "", .route = "/v1/x",
    }, out;
    char *json = llmc__redis_sel_encode(&sel);
    assert_non_null(json);
    void *h = llmc__redis_sel_decode(json, strlen(json), &out);
    assert_non_null(h);
    assert_int_equal(out.conds, sel.conds);
    assert_false(out.all);
    assert_memory_equal(out.key.b, sel.key.b, LLMC_KEY_LEN);
    assert_memory_equal(out.prefix.b, sel.prefix.b, LLMC_KEY_LEN);
    assert_int_equal(out.prefix_digits, 5);
    assert_int_equal(out.created_before_ms, -12345);
    assert_string_equal(out.ns, "n\"s");
    assert_string_equal(out.tag, "t");
    assert_string_equal(out.model, "");
    assert_string_equal(out.route, "/v1/x");
    llmc__redis_sel_free(h);
    free(json);

    llmc_purge_t all = {.all = true};
    json = llmc__redis_sel_encode(&all);
    h = llmc__redis_sel_decode(json, strlen(json), &out);
    assert_non_null(h);
    assert_true(llmc_purge_is_all(&out));
    assert_null(out.ns);
    llmc__redis_sel_free(h);
    free(json);

    static const char *const bad[] = {
        "", "{", "[]", "{\"all\":false,\"conds\":0}",
        "{\"all\":true,\"conds\":2,\"key\":\"" "0000000000000000000000000000000000000000000000000000000000000000"
        "\",\"prefix\":\"0000000000000000000000000000000000000000000000000000000000000000\","
        "\"prefix_digits\":0,\"before_ms\":0}",
        "{\"all\":false,\"conds\":128,\"key\":\"" "0000000000000000000000000000000000000000000000000000000000000000"
        "\",\"prefix\":\"0000000000000000000000000000000000000000000000000000000000000000\","
        "\"prefix_digits\":0,\"before_ms\":0}",
        "{\"all\":false,\"conds\":2,\"key\":\"zz\",\"prefix\":\"00\",\"prefix_digits\":0,"
        "\"before_ms\":0}",
        "{\"all\":false,\"conds\":2,\"key\":\"" "0000000000000000000000000000000000000000000000000000000000000000"
        "\",\"prefix\":\"0000000000000000000000000000000000000000000000000000000000000000\","
        "\"prefix_digits\":0,\"before_ms\":0,\"ns\":\"a\\u0000b\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out.all = true;
        assert_null(llmc__redis_sel_decode(bad[i], strlen(bad[i]), &out));
        assert_false(out.all);
    }
}

static bool fake_published(fixture_t *x) { return x->fake.publishes > 0; }
static bool subscribed(fixture_t *x) { return xs(x).subscribed == 1; }
static bool heard_one_more(fixture_t *x) { (void)x; return heard.calls > 0; }
static bool bad_counted(fixture_t *x) { return xs(x).inval_bad > 0; }

/* A listening tier applies the others' messages through peer_purge (a
   new answer: one key, not logged; a purge: its selector, logged) and
   skips its own and anything that is not a message. */
static void test_peer_messages(void **state)
{
    fixture_t *x = *state;
    char url[256], err[256] = "", msg[1100], hex[65];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", x->fake.port);
    llmc_redis_config_t cfg = {.url = url, .prefix = "t:", .timeout_ms = 200, .log = collect,
                               .log_arg = x, .peer_purge = record_peer_purge};
    assert_int_equal(llmc_tier_redis_open(&cfg, &x->t, err, sizeof err), 0);
    assert_int_equal(x->t->ops->attach(x->t, 0, &x->loop), 0);
    assert_true(run_until(x, subscribed, 2000));
    assert_true(run_until(x, connected, 2000));
    assert_string_equal(x->fake.chan, "t:invalidate");
    memset(&heard, 0, sizeof heard);

    llmc_key_t k = key_of(3);
    llmc_key_hex(&k, hex);
    snprintf(msg, sizeof msg, "%s R %s", impl(x->t)->self_id, hex);
    fake_push(&x->fake, msg); /* our own: skipped */
    snprintf(msg, sizeof msg, "0123456789abcdef R %s", hex);
    fake_push(&x->fake, msg);
    assert_true(run_until(x, heard_one_more, 1000));
    assert_int_equal(heard.calls, 1);
    assert_false(heard.logged);
    assert_true(llmc_purge_is_key(&heard.sel));
    assert_memory_equal(heard.sel.key.b, k.b, LLMC_KEY_LEN);

    llmc_purge_t sel = {.conds = LLMC_PURGE_NAMESPACE, .ns = "team"};
    char *json = llmc__redis_sel_encode(&sel);
    snprintf(msg, sizeof msg, "0123456789abcdef P %s", json);
    free(json);
    heard.calls = 0;
    fake_push(&x->fake, msg);
    assert_true(run_until(x, heard_one_more, 1000));
    assert_true(heard.logged);
    assert_int_equal(heard.sel.conds, LLMC_PURGE_NAMESPACE);
    assert_string_equal(heard.ns, "team");
    assert_int_equal(xs(x).inval_received, 2);

    heard.calls = 0;
    fake_push(&x->fake, "0123456789abcdef P {\"all\":false,\"conds\":0}");
    fake_push(&x->fake, "hello");
    assert_true(run_until(x, bad_counted, 1000));
    run_until(x, heard_one_more, 50);
    assert_int_equal(heard.calls, 0);
    assert_int_equal(xs(x).inval_bad, 2);

    /* Our own fill is told to the others, naming us. */
    int64_t now = 1700000000000;
    llmc_entry_t *e = entry_of(3, now, now + 60000, "{}");
    assert_int_equal(x->t->ops->put(x->t, 0, e, now), 0);
    assert_true(run_until(x, fake_set_seen, 1000));
    assert_true(run_until(x, fake_published, 1000));
    assert_int_equal(x->fake.publishes, 1);
    snprintf(msg, sizeof msg, "%s R %s", impl(x->t)->self_id, hex);
    assert_string_equal(x->fake.msg, msg);
    llmc_entry_unref(e);
}

/* A purge by selector reads each record SCAN finds and deletes only what
   its metadata selects; another namespace leaves it. */
static void test_selector_purge_reads_records(void **state)
{
    fixture_t *x = *state;
    open_tier(x, "redis://127.0.0.1:%d", 200);
    assert_true(run_until(x, connected, 2000));
    int64_t now = 1700000000000;
    llmc_entry_t *e = entry_of(4, now, now + 60000, "{\"a\":1}");
    assert_int_equal(x->t->ops->put(x->t, 0, e, now), 0);
    assert_true(run_until(x, fake_set_seen, 1000));

    purged_t pr = {0};
    pending_purge = &pr;
    llmc_purge_t other = {.conds = LLMC_PURGE_NAMESPACE, .ns = "ns2"};
    x->t->ops->purge(x->t, 0, &other, purge_done, &pr);
    assert_true(run_until(x, purge_answered, 1000));
    assert_int_equal(pr.removed, 0);
    assert_non_null(x->fake.val);
    assert_int_equal(xs(x).scanned, 1);

    llmc_purge_t tag = {.conds = LLMC_PURGE_TAG | LLMC_PURGE_MODEL, .tag = "team-a",
                        .model = "gpt-4o-mini"};
    x->t->ops->purge(x->t, 0, &tag, purge_done, &pr);
    assert_true(run_until(x, purge_answered_twice, 1000));
    assert_int_equal(pr.removed, 1);
    assert_null(x->fake.val);
    assert_int_equal(x->fake.dels, 1);
    assert_int_equal(st(x).purged, 1);
    /* The purge was told to the others after Redis was clean. */
    assert_int_equal(strncmp(x->fake.msg + 16, " P {", 4), 0);
    llmc_entry_unref(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parses),
        cmocka_unit_test(test_url_refusals),
        cmocka_unit_test(test_url_redact),
        cmocka_unit_test(test_key_and_lifetime),
        cmocka_unit_test(test_value_decode),
        cmocka_unit_test_setup_teardown(test_put_lookup_purge, setup, teardown),
        cmocka_unit_test(test_selector_codec),
        cmocka_unit_test_setup_teardown(test_peer_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_selector_purge_reads_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_miss_before_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_is_miss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unasked_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detach_cancels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_won_and_given_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_waits_for_the_fill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_wait_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_end_and_detach, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
