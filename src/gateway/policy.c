/*
 * gateway/policy.c: Cache-Control, Pragma, X-Cache-* and the body's "cache"
 * extension folded into one llmc_policy_t.
 *
 * Directive names are case-insensitive and unknown ones are ignored, as
 * RFC 9111 asks. A malformed delta-seconds argument makes the directive
 * count as absent for max-age/min-fresh, but a bare max-stale means "any
 * staleness". Our own headers are stricter: a bad X-Cache-TTL is a 400,
 * because a client that set it wants to know it was not applied.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/policy.h"
#include "llmc/error.h"

/* Parses delta-seconds (digits, optionally quoted); -1 when malformed. A
   value too big to hold saturates (RFC 9111 1.2.2) rather than wrapping;
   the length of the text says nothing, since leading zeros are allowed. */
static int64_t delta_seconds(const char *v, size_t len)
{
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
        v++;
        len -= 2;
    }
    if (len == 0)
        return -1;
    const int64_t cap = INT64_MAX / 1000; /* the caller multiplies by 1000 */
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)v[i]))
            return -1;
        n = n > (cap - (v[i] - '0')) / 10 ? cap : n * 10 + (v[i] - '0');
    }
    return n;
}

static void apply_directive(llmc_policy_t *p, const char *name, size_t nlen,
                            const char *val, size_t vlen, bool has_val)
{
#define IS(s) (nlen == sizeof(s) - 1 && strncasecmp(name, s, nlen) == 0)
    int64_t secs = has_val ? delta_seconds(val, vlen) : -1;
    if (IS("no-cache")) {
        p->read = false;
    } else if (IS("no-store")) {
        p->read = false;
        p->write = false;
    } else if (IS("only-if-cached")) {
        p->only_if_cached = true;
    } else if (IS("max-age") && secs >= 0) {
        p->max_age_ms = secs * 1000;
    } else if (IS("min-fresh") && secs >= 0) {
        p->min_fresh_ms = secs * 1000;
    } else if (IS("max-stale")) {
        p->max_stale_ms = has_val ? (secs >= 0 ? secs * 1000 : 0) : INT64_MAX;
    }
#undef IS
}

/* Walks "a, b=1, c=\"x\"" and applies each directive. */
static void parse_cache_control(llmc_policy_t *p, const char *s)
{
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        const char *name = s;
        while (*s && *s != '=' && *s != ',' && *s != ' ' && *s != '\t')
            s++;
        size_t nlen = (size_t)(s - name);
        while (*s == ' ' || *s == '\t')
            s++;
        const char *val = NULL;
        size_t vlen = 0;
        if (*s == '=') {
            s++;
            val = s;
            if (*s == '"') {
                s++;
                while (*s && *s != '"')
                    s++;
                if (*s == '"')
                    s++;
            } else {
                while (*s && *s != ',' && *s != ' ' && *s != '\t')
                    s++;
            }
            vlen = (size_t)(s - val);
        }
        if (nlen)
            apply_directive(p, name, nlen, val, vlen, val != NULL);
        while (*s && *s != ',')
            s++;
    }
}

static int set_ns(llmc_policy_t *p, const char *ns, char *err, size_t errlen)
{
    size_t n = strlen(ns);
    if (n >= sizeof(p->ns)) {
        snprintf(err, errlen, "cache namespace is longer than %zu bytes", sizeof(p->ns) - 1);
        return LLMC_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)ns[i] < 0x20 || ns[i] == 0x7f) {
            snprintf(err, errlen, "cache namespace contains a control character");
            return LLMC_EINVAL;
        }
    }
    memcpy(p->ns, ns, n + 1);
    return 0;
}

static int parse_ttl_header(const char *s, int64_t *ttl_ms, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    if (errno || end == s || *end || v < 0) {
        snprintf(err, errlen, "X-Cache-TTL must be a whole number of seconds, got '%.40s'", s);
        return LLMC_EINVAL;
    }
    *ttl_ms = v > INT64_MAX / 1000 ? INT64_MAX : (int64_t)v * 1000;
    return 0;
}

static int ext_bool(const json_t *ext, const char *name, bool *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(ext, name);
    if (!v)
        return 1;
    if (!json_is_boolean(v)) {
        snprintf(err, errlen, "cache.%s must be a boolean", name);
        return LLMC_EINVAL;
    }
    *out = json_is_true(v);
    return 0;
}

static int ext_secs(const json_t *ext, const char *name, int64_t *ms, char *err, size_t errlen)
{
    json_t *v = json_object_get(ext, name);
    if (!v)
        return 1;
    if (!json_is_number(v) || json_number_value(v) < 0) {
        snprintf(err, errlen, "cache.%s must be a non-negative number of seconds", name);
        return LLMC_EINVAL;
    }
    double d = json_number_value(v) * 1000.0;
    *ms = d > 9e15 ? INT64_MAX : (int64_t)d;
    return 0;
}

/* The LiteLLM-style body extension; its settings override the headers. */
static int apply_ext(llmc_policy_t *p, const json_t *ext, char *err, size_t errlen)
{
    bool b;
    int64_t ms;
    int rc;
    if ((rc = ext_bool(ext, "no-cache", &b, err, errlen)) < 0)
        return rc;
    if (rc == 0 && b)
        p->read = false;
    if ((rc = ext_bool(ext, "no-store", &b, err, errlen)) < 0)
        return rc;
    if (rc == 0 && b)
        p->read = p->write = false;
    if ((rc = ext_secs(ext, "ttl", &ms, err, errlen)) < 0)
        return rc;
    if (rc == 0)
        p->ttl_ms = ms;
    if ((rc = ext_secs(ext, "s-maxage", &ms, err, errlen)) < 0)
        return rc;
    if (rc == 0)
        p->max_age_ms = ms;
    json_t *ns = json_object_get(ext, "namespace");
    if (ns && !json_is_string(ns)) {
        snprintf(err, errlen, "cache.namespace must be a string");
        return LLMC_EINVAL;
    }
    return ns ? set_ns(p, json_string_value(ns), err, errlen) : 0;
}

int llmc_policy_parse(llmc_policy_t *p, const char *cache_control, const char *pragma,
                      const char *ttl_hdr, const char *ns_hdr, const json_t *cache_ext,
                      int64_t default_ttl_ms, int64_t max_ttl_ms, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    p->read = p->write = true;
    p->max_age_ms = LLMC_POLICY_UNSET;
    p->ttl_ms = default_ttl_ms;
    if (cache_control)
        parse_cache_control(p, cache_control);
    else if (pragma && strcasestr(pragma, "no-cache"))
        p->read = false;
    if (ttl_hdr && parse_ttl_header(ttl_hdr, &p->ttl_ms, err, errlen) < 0)
        return LLMC_EINVAL;
    if (ns_hdr && set_ns(p, ns_hdr, err, errlen) < 0)
        return LLMC_EINVAL;
    if (cache_ext && apply_ext(p, cache_ext, err, errlen) < 0)
        return LLMC_EINVAL;
    if (p->ttl_ms > max_ttl_ms)
        p->ttl_ms = max_ttl_ms;
    if (p->ttl_ms <= 0)
        p->write = false;
    return 0;
}

/* ---- semantic ---- */

int llmc_policy_parse_semantic(llmc_policy_t *p, const char *sem_hdr, const char *thr_hdr,
                               const json_t *cache_ext, char *err, size_t errlen)
{
    json_t *v = cache_ext ? json_object_get(cache_ext, "semantic") : NULL;
    p->semantic = true;
    p->semantic_threshold = 0;
    if (thr_hdr) {
        char *end;
        errno = 0;
        double t = strtod(thr_hdr, &end);
        /* Digits and a point only: no sign, exponent, hex, inf or nan. */
        if (!thr_hdr[0] || strspn(thr_hdr, "0123456789.") != strlen(thr_hdr) || *end ||
            errno || !(t > 0 && t <= 1)) {
            snprintf(err, errlen, "X-Cache-Semantic-Threshold must be a number above 0 and at "
                     "most 1, got '%.40s'", thr_hdr);
            return LLMC_EINVAL;
        }
        p->semantic_threshold = (float)t;
    }
    if (v) {
        if (!json_is_boolean(v)) {
            snprintf(err, errlen, "cache.semantic must be true or false");
            return LLMC_EINVAL;
        }
        p->semantic = json_is_true(v);
        return 0;
    }
    if (!sem_hdr)
        return 0;
    if (strcasecmp(sem_hdr, "on") != 0 && strcasecmp(sem_hdr, "off") != 0) {
        snprintf(err, errlen, "X-Cache-Semantic must be on or off, got '%.40s'", sem_hdr);
        return LLMC_EINVAL;
    }
    p->semantic = strcasecmp(sem_hdr, "on") == 0;
    return 0;
}

/* ---- tags ---- */

/* Adds the tag t[0..n) (spaces around it trimmed) unless it is there. */
static int add_tag(llmc_policy_t *p, const char *t, size_t n, char *err, size_t errlen)
{
    while (n && (*t == ' ' || *t == '\t')) {
        t++;
        n--;
    }
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (n == 0 || n > LLMC_POLICY_TAG_MAX) {
        snprintf(err, errlen, "a cache tag must be 1 to %d bytes", LLMC_POLICY_TAG_MAX);
        return LLMC_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c < 0x20 || c == 0x7f || c == ',') {
            snprintf(err, errlen, "a cache tag may not contain a comma or a control character");
            return LLMC_EINVAL;
        }
    }
    size_t used = 0;
    for (unsigned i = 0; i < p->ntags; i++) {
        size_t len = strlen(p->tags + used);
        if (len == n && memcmp(p->tags + used, t, n) == 0)
            return 0;
        used += len + 1;
    }
    if (p->ntags == LLMC_POLICY_MAX_TAGS || used + n + 1 > sizeof(p->tags)) {
        snprintf(err, errlen, "at most %d cache tags", LLMC_POLICY_MAX_TAGS);
        return LLMC_EINVAL;
    }
    memcpy(p->tags + used, t, n);
    p->tags[used + n] = '\0';
    p->ntags++;
    return 0;
}

int llmc_policy_parse_tags(llmc_policy_t *p, const char *tags_hdr, const json_t *cache_ext,
                           char *err, size_t errlen)
{
    json_t *arr = cache_ext ? json_object_get(cache_ext, "tags") : NULL;
    p->ntags = 0;
    p->tags[0] = '\0';
    if (arr) {
        size_t i;
        json_t *v;
        if (!json_is_array(arr)) {
            snprintf(err, errlen, "cache.tags must be an array of strings");
            return LLMC_EINVAL;
        }
        json_array_foreach(arr, i, v) {
            if (!json_is_string(v)) {
                snprintf(err, errlen, "cache.tags must be an array of strings");
                return LLMC_EINVAL;
            }
            if (add_tag(p, json_string_value(v), json_string_length(v), err, errlen) < 0)
                return LLMC_EINVAL;
        }
        return 0;
    }
    for (const char *t = tags_hdr; t && *t;) {
        size_t n = strcspn(t, ",");
        const char *q = t;
        while (q < t + n && (*q == ' ' || *q == '\t'))
            q++;
        if (q < t + n && add_tag(p, t, n, err, errlen) < 0)
            return LLMC_EINVAL;
        t += n + (t[n] == ',');
    }
    return 0;
}

/* min-fresh adds to an entry's age and max-stale forgives that much past its
   lifetime, as Squid reads the pair: one bound, so that a fresher entry is
   never refused where a staler one would be taken. */
llmc_use_t llmc_policy_usable(const llmc_policy_t *p, const llmc_entry_t *e, int64_t now_ms)
{
    if (p->max_age_ms != LLMC_POLICY_UNSET && now_ms - e->created_ms > p->max_age_ms)
        return LLMC_USE_NO;
    int64_t left = e->expires_ms - now_ms; /* <= 0 once expired */
    int64_t shortfall;                     /* > 0: not as fresh as the client wants */
    if (__builtin_sub_overflow(p->min_fresh_ms, left, &shortfall))
        shortfall = INT64_MAX;
    if (left > 0 && shortfall <= 0)
        return LLMC_USE_FRESH;
    if (p->max_stale_ms > 0 && shortfall <= p->max_stale_ms)
        return left > 0 ? LLMC_USE_FRESH : LLMC_USE_STALE;
    return LLMC_USE_NO;
}

bool llmc_policy_etag_matches(const char *inm, const char *etag)
{
    if (!inm)
        return false;
    size_t elen = strlen(etag);
    for (const char *p = inm; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return true;
        if (p[0] == 'W' && p[1] == '/')
            p += 2; /* weak comparison, as RFC 9110 asks for If-None-Match */
        /* The tag ends at a comma, OWS (space or tab) or the end. */
        if (strncmp(p, etag, elen) == 0 &&
            (p[elen] == ',' || p[elen] == ' ' || p[elen] == '\t' || !p[elen]))
            return true;
        while (*p && *p != ',')
            p++;
    }
    return false;
}

const char *llmc_policy_list_header(const llmc_http_req_t *req, const char *name, char **owned)
{
    const char *first = NULL;
    size_t n = 0, len = 0, nlen = strlen(name);
    *owned = NULL;
    /* The length first (see llmc_http_header): strcasecmp only on a likely match. */
    for (size_t i = 0; i < req->nheaders; i++) {
        if (req->headers[i].name_len != nlen || strcasecmp(req->headers[i].name, name) != 0)
            continue;
        first = first ? first : req->headers[i].value;
        len += req->headers[i].value_len + 2;
        n++;
    }
    if (n < 2 || !(*owned = malloc(len)))
        return first; /* out of memory: the first line is better than none */
    char *p = *owned;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (req->headers[i].name_len != nlen || strcasecmp(req->headers[i].name, name) != 0)
            continue;
        if (p != *owned) {
            memcpy(p, ", ", 2);
            p += 2;
        }
        memcpy(p, req->headers[i].value, req->headers[i].value_len);
        p += req->headers[i].value_len;
    }
    *p = '\0';
    return *owned;
}

bool llmc_policy_json_content_type(const char *ct)
{
    static const char want[] = "application/json";
    if (!ct)
        return true;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n == 0) /* blank is as good as absent; parameters without a type are not */
        return ct[strspn(ct, " \t")] == '\0';
    return n == sizeof(want) - 1 && strncasecmp(ct, want, n) == 0;
}
