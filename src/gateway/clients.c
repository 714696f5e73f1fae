/*
 * gateway/clients.c: the client keys file parsed into a sorted table of
 * key hashes, and the lookup of a request's credential in it. The format
 * and the contracts are in clients.h.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The table holds hashes, never keys: a key's bytes are dropped as soon
 *   as the line is hashed, so no message, core dump of the table or log
 *   line can show one. Error messages name the line, never its text.
 * - The binary search compares hashes with memcmp (its time depends on
 *   where two hashes differ, which says nothing about any key); the final
 *   equality is CRYPTO_memcmp over the whole hash.
 * - A repeated key is an error, not "the last line wins": two lines that
 *   grant different rights to one key are a mistake the operator must see.
 */
#include "gateway/clients.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "llmc/error.h"

struct llmc_clients {
    _Atomic unsigned refs;
    size_t n;
    llmc_client_t *v;    /* sorted by hash */
};

static void sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 0;
    if (!EVP_Digest(p, n, out, &len, EVP_sha256(), NULL))
        memset(out, 0, 32); /* cannot happen with the default provider */
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* yes/no (also true/false, on/off, 1/0) -> *b. */
static bool parse_bool(const char *v, size_t n, bool *b)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (n == strlen(yes[i]) && strncasecmp(v, yes[i], n) == 0) {
            *b = true;
            return true;
        }
        if (n == strlen(no[i]) && strncasecmp(v, no[i], n) == 0) {
            *b = false;
            return true;
        }
    }
    return false;
}

static int line_error(char *err, size_t errlen, unsigned line, const char *why)
{
    snprintf(err, errlen, "line %u: %s", line, why);
    return LLMC_EINVAL;
}

/* One attribute "name=value" (s[0..n)) onto c. */
static int parse_attr(llmc_client_t *c, const char *s, size_t n, unsigned line, char *err,
                      size_t errlen)
{
    const char *eq = memchr(s, '=', n);
    if (!eq)
        return line_error(err, errlen, line,
                          "an attribute must be name=value (namespace, refresh, ttl)");
    size_t nlen = (size_t)(eq - s), vlen = n - nlen - 1;
    const char *v = eq + 1;
    if (nlen == 9 && strncmp(s, "namespace", 9) == 0) {
        if (vlen == 0 || vlen > LLMC_CLIENT_NS_MAX)
            return line_error(err, errlen, line, "namespace must be 1 to 127 bytes");
        memcpy(c->ns, v, vlen);
        c->ns[vlen] = '\0';
        return 0;
    }
    bool *flag = nlen == 7 && strncmp(s, "refresh", 7) == 0 ? &c->refresh
                 : nlen == 3 && strncmp(s, "ttl", 3) == 0   ? &c->ttl
                                                           : NULL;
    if (!flag)
        return line_error(err, errlen, line,
                          "unknown attribute (namespace=NS, refresh=yes|no, ttl=yes|no)");
    if (!parse_bool(v, vlen, flag))
        return line_error(err, errlen, line, "refresh and ttl take yes or no");
    return 0;
}

/* One line (s[0..n), without its newline) -> *c; *empty when it holds
   no key (blank or comment). */
static int parse_line(const char *s, size_t n, unsigned line, llmc_client_t *c, bool *empty,
                      char *err, size_t errlen)
{
    size_t i = 0;
    memset(c, 0, sizeof(*c));
    c->line = line;
    *empty = true;
    while (i < n && is_space(s[i]))
        i++;
    if (i == n || s[i] == '#')
        return 0;
    *empty = false;
    size_t k0 = i;
    while (i < n && !is_space(s[i])) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return line_error(err, errlen, line,
                              "a key must be printable ASCII (a control or non-ASCII byte)");
        i++;
    }
    size_t klen = i - k0;
    if (klen < LLMC_CLIENT_KEY_MIN || klen > LLMC_CLIENT_KEY_MAX)
        return line_error(err, errlen, line, "a key must be 16 to 512 bytes long");
    sha256(s + k0, klen, c->hash);
    for (;;) {
        while (i < n && is_space(s[i]))
            i++;
        if (i == n || s[i] == '#')
            return 0;
        size_t a0 = i;
        while (i < n && !is_space(s[i])) {
            unsigned char ch = (unsigned char)s[i];
            if (ch < 0x20 || ch == 0x7f)
                return line_error(err, errlen, line, "a control byte in an attribute");
            i++;
        }
        int rc = parse_attr(c, s + a0, i - a0, line, err, errlen);
        if (rc < 0)
            return rc;
    }
}

static int by_hash(const void *a, const void *b)
{
    return memcmp(((const llmc_client_t *)a)->hash, ((const llmc_client_t *)b)->hash, 32);
}

int llmc_clients_parse(const char *text, size_t len, llmc_clients_t **out, char *err,
                       size_t errlen)
{
    llmc_clients_t *t = calloc(1, sizeof(*t));
    size_t cap = 0;
    unsigned line = 0;
    int rc = 0;
    *out = NULL;
    if (!t)
        return LLMC_ENOMEM;
    atomic_init(&t->refs, 1);
    for (size_t pos = 0; pos < len && rc == 0;) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + 1;
        line++;
        if (memchr(s, '\0', n)) {
            rc = line_error(err, errlen, line, "a NUL byte");
            break;
        }
        llmc_client_t c;
        bool empty;
        if ((rc = parse_line(s, n, line, &c, &empty, err, errlen)) < 0 || empty)
            continue;
        if (t->n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            llmc_client_t *v = realloc(t->v, ncap * sizeof(*v));
            if (!v) {
                rc = LLMC_ENOMEM;
                break;
            }
            t->v = v;
            cap = ncap;
        }
        t->v[t->n++] = c;
    }
    if (rc == 0 && t->n > 1) {
        qsort(t->v, t->n, sizeof(t->v[0]), by_hash);
        for (size_t i = 1; i < t->n; i++) {
            if (memcmp(t->v[i - 1].hash, t->v[i].hash, 32) == 0) {
                unsigned a = t->v[i - 1].line, b = t->v[i].line;
                snprintf(err, errlen, "line %u: the key of line %u again", a > b ? a : b,
                         a > b ? b : a);
                rc = LLMC_EINVAL;
                break;
            }
        }
    }
    if (rc < 0) {
        llmc_clients_unref(t);
        return rc;
    }
    *out = t;
    return 0;
}

int llmc_clients_load(const char *path, llmc_clients_t **out, char *err, size_t errlen)
{
    char perr[256];
    FILE *f = fopen(path, "rb");
    *out = NULL;
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return LLMC_EIO;
    }
    char *buf = malloc(LLMC_CLIENTS_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, LLMC_CLIENTS_FILE_MAX + 1, f) : 0;
    int rc = !buf ? LLMC_ENOMEM : ferror(f) ? LLMC_EIO : 0;
    if (rc == LLMC_EIO)
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
    fclose(f);
    if (rc == 0 && n > LLMC_CLIENTS_FILE_MAX) {
        snprintf(err, errlen, "%s: larger than %u bytes", path, LLMC_CLIENTS_FILE_MAX);
        rc = LLMC_EINVAL;
    }
    if (rc == 0 && (rc = llmc_clients_parse(buf, n, out, perr, sizeof(perr))) == LLMC_EINVAL)
        snprintf(err, errlen, "%s: %s", path, perr);
    free(buf);
    return rc;
}

const llmc_client_t *llmc_clients_find(const llmc_clients_t *t, const char *cred, size_t len)
{
    if (!t || !cred || t->n == 0)
        return NULL;
    uint8_t h[32];
    sha256(cred, len, h);
    size_t lo = 0, hi = t->n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(t->v[mid].hash, h, 32) <= 0)
            lo = mid;
        else
            hi = mid;
    }
    return CRYPTO_memcmp(t->v[lo].hash, h, 32) == 0 ? &t->v[lo] : NULL;
}

size_t llmc_clients_count(const llmc_clients_t *t)
{
    return t ? t->n : 0;
}

llmc_clients_t *llmc_clients_ref(llmc_clients_t *t)
{
    if (t) {
        unsigned before = atomic_fetch_add(&t->refs, 1);
        if (before == 0)
            abort(); /* a reference to a freed table */
    }
    return t;
}

void llmc_clients_unref(llmc_clients_t *t)
{
    if (!t)
        return;
    unsigned before = atomic_fetch_sub(&t->refs, 1);
    if (before == 0)
        abort();
    if (before == 1) {
        free(t->v);
        free(t);
    }
}

int llmc_clients_apply(const llmc_client_t *c, llmc_policy_t *p, int64_t default_ttl_ms,
                       unsigned *denied, char *err, size_t errlen)
{
    *denied = 0;
    if (c->ns[0]) {
        if (p->ns[0] && strcmp(p->ns, c->ns) != 0) {
            snprintf(err, errlen, "this API key is bound to its own cache namespace and may not "
                     "name another (X-Cache-Namespace or cache.namespace)");
            return LLMC_EINVAL;
        }
        static_assert(sizeof(p->ns) == sizeof(c->ns), "one namespace bound");
        memcpy(p->ns, c->ns, sizeof(p->ns));
    }
    if (!c->refresh && p->write &&
        (!p->read || p->max_age_ms != LLMC_POLICY_UNSET || p->min_fresh_ms > 0)) {
        p->read = true;
        p->max_age_ms = LLMC_POLICY_UNSET;
        p->min_fresh_ms = 0;
        *denied |= LLMC_CLIENT_DENIED_REFRESH;
    }
    if (!c->ttl && p->write && p->ttl_ms != default_ttl_ms) {
        p->ttl_ms = default_ttl_ms;
        *denied |= LLMC_CLIENT_DENIED_TTL;
    }
    return 0;
}

const char *llmc_clients_credential(const char *auth, const char *x_api_key, size_t *len)
{
    *len = 0;
    if (auth && strncasecmp(auth, "bearer", 6) == 0 && (auth[6] == ' ' || auth[6] == '\t')) {
        auth += 6;
        while (*auth == ' ' || *auth == '\t')
            auth++;
        size_t n = strlen(auth);
        while (n && (auth[n - 1] == ' ' || auth[n - 1] == '\t'))
            n--;
        if (n) {
            *len = n;
            return auth;
        }
    }
    if (x_api_key && *x_api_key) {
        *len = strlen(x_api_key);
        return x_api_key;
    }
    return NULL;
}
