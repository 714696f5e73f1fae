/*
 * tier/redis_url.c: the --redis URL (tier/redis.h): a pure parser over a
 * string, and the redaction every message about a URL goes through.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The credentials end at the LAST '@': a password may hold '@' and ':'
 *   unescaped (the first ':' ends the user). They may also be %-escaped;
 *   an escape that decodes to NUL is refused, the fields being C strings.
 * - A userinfo without ':' is refused rather than guessed at: redis-py
 *   reads redis://secret@host as a user with no password, other clients
 *   as a password.
 * - No message quotes the URL as given: only llmc_redis_url_redact()'s
 *   form, which hides everything between "://" and the last '@', parsed
 *   or not. On failure the output struct is zeroed, password included.
 */
#include <stdio.h>
#include <string.h>

#include "llmc/error.h"
#include "tier/redis.h"

void llmc_redis_url_redact(const char *url, char *out, size_t outlen)
{
    const char *scheme = strstr(url, "://");
    const char *start = scheme ? scheme + 3 : url;
    const char *at = strrchr(start, '@');

    if (outlen == 0)
        return;
    if (!at)
        snprintf(out, outlen, "%s", url);
    else
        snprintf(out, outlen, "%.*s***%s", (int)(start - url), url, at);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (cap bytes, NUL included). 0, or -1 for
   a bad escape, a NUL, or no room. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (ch == '\0' || o + 1 >= cap)
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    return 0;
}

/* Digits s[0..n) as a number within lo..hi, or -1. */
static long digits(const char *s, size_t n, long lo, long hi)
{
    long v = 0;

    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v < lo || v > hi ? -1 : v;
}

int llmc_redis_url_parse(const char *url, llmc_redis_url_t *out, char *err, size_t errlen)
{
    char shown[400];
    const char *p, *at, *host, *hend, *rest;
    const char *why = NULL;

    llmc_redis_url_redact(url, shown, sizeof(shown));
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (strncmp(url, "rediss://", 9) == 0) {
        why = "TLS (rediss://) is not supported by this build: it uses Debian 12's "
              "hiredis 0.14, which has no TLS; use redis:// on a trusted network or a "
              "TLS tunnel (stunnel, spiped) to the server";
        goto fail;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        why = "not a redis:// URL";
        goto fail;
    }
    p = url + 8;
    if ((at = strrchr(p, '@'))) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) {
            why = "write the password as :PASSWORD@ or USER:PASSWORD@";
            goto fail;
        }
        if (pct_decode(p, (size_t)(colon - p), out->user, sizeof(out->user)) < 0 ||
            pct_decode(colon + 1, (size_t)(at - colon - 1), out->password,
                       sizeof(out->password)) < 0) {
            why = "bad user or password (too long, or a bad %-escape)";
            goto fail;
        }
        p = at + 1;
    }
    if (strpbrk(p, "?#")) {
        why = "query parameters are not supported";
        goto fail;
    }
    /* host[:port], or a comma list of them (Cluster seeds), up to '/'. */
    for (;;) {
        llmc_redis_seed_t *sd = &out->seeds[out->nseeds];
        if (out->nseeds == LLMC_REDIS_SEEDS_MAX) {
            why = "more seed nodes than " LLMC_REDIS_SEEDS_MAX_STR;
            goto fail;
        }
        sd->port = 6379;
        if (*p == '[') {
            host = p + 1;
            hend = strchr(host, ']');
            if (!hend) {
                why = "an IPv6 address needs its closing ]";
                goto fail;
            }
            rest = hend + 1;
        } else {
            host = p;
            hend = host + strcspn(host, ":/,");
            rest = hend;
        }
        if (hend == host || (size_t)(hend - host) >= sizeof(sd->host)) {
            why = "no host, or too long a one";
            goto fail;
        }
        memcpy(sd->host, host, (size_t)(hend - host));
        if (*rest == ':') {
            size_t n = strcspn(rest + 1, "/,");
            long port = digits(rest + 1, n, 1, 65535);
            if (port < 0) {
                why = "the port must be a number from 1 to 65535";
                goto fail;
            }
            sd->port = (int)port;
            rest += 1 + n;
        }
        out->nseeds++;
        if (*rest != ',')
            break;
        p = rest + 1;
    }
    memcpy(out->host, out->seeds[0].host, sizeof(out->host));
    out->port = out->seeds[0].port;
    out->cluster = out->nseeds > 1;
    if (*rest == '/' && rest[1] != '\0') {
        long db = digits(rest + 1, strlen(rest + 1), 0, 1000000);
        if (db < 0) {
            why = "the database must be a number (redis://host:port/DB)";
            goto fail;
        }
        out->db = (int)db;
        if (out->cluster && db != 0) {
            why = "a Redis Cluster has database 0 only";
            goto fail;
        }
    } else if (*rest != '\0' && strcmp(rest, "/") != 0) {
        why = "unexpected text after the host";
        goto fail;
    }
    return 0;
fail:
    memset(out, 0, sizeof(*out));
    snprintf(err, errlen, "--redis %s: %s", shown, why);
    return LLMC_EINVAL;
}
