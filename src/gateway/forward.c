/*
 * gateway/forward.c: the client headers a call upstream carries (see
 * forward.h for the rule).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The lines are made in the table's order, not the request's, so that two
 *   clients that send the same headers in another order share a key.
 * - The default names are dropped when the gateway holds the upstream key,
 *   not merely keyed: keying them would still let a client choose the
 *   organisation billed, and split the shared cache by a header that
 *   changes nothing but the bill.
 */
#include "gateway/forward.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "llmc/error.h"

/* Forwarded by default when the client's own credential goes upstream. */
static const char *const default_names[] = {
    "OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta",
};

/* Never forwarded: the credential is the gateway's business, the framing
   and connection headers are libcurl's, and X-Cache-* are the gateway's
   own controls. Exact names, or prefixes ending in '-'. */
static const char *const refused_names[] = {
    "authorization", "proxy-authorization", "host", "cookie", "content-length",
    "content-type", "content-encoding", "transfer-encoding", "connection", "keep-alive",
    "te", "trailer", "upgrade", "expect", "proxy-connection", "x-cache-",
};

static bool is_tchar(int c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool refused(const char *lower)
{
    for (size_t i = 0; i < sizeof(refused_names) / sizeof(refused_names[0]); i++) {
        const char *r = refused_names[i];
        size_t n = strlen(r);
        if (r[n - 1] == '-' ? strncmp(lower, r, n) == 0 : strcmp(lower, r) == 0)
            return true;
    }
    return false;
}

/* Adds name (len bytes) unless fw has it already. */
static int add_name(llmc_forward_t *fw, const char *name, size_t len, char *err, size_t errlen)
{
    char lower[LLMC_FWD_NAME_MAX + 1];
    if (len == 0 || len > LLMC_FWD_NAME_MAX) {
        snprintf(err, errlen, "--forward-header: '%.*s' is not a header name (1 to %d characters)",
                 (int)(len > 80 ? 80 : len), name, LLMC_FWD_NAME_MAX);
        return LLMC_EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar((unsigned char)name[i])) {
            snprintf(err, errlen, "--forward-header: '%.*s' is not a header name", (int)len, name);
            return LLMC_EINVAL;
        }
        lower[i] = (char)tolower((unsigned char)name[i]);
    }
    lower[len] = '\0';
    if (refused(lower)) {
        snprintf(err, errlen, "--forward-header: %.*s may not be forwarded (credentials, framing, "
                 "hop-by-hop and X-Cache-* headers are the gateway's own)", (int)len, name);
        return LLMC_EINVAL;
    }
    for (unsigned i = 0; i < fw->n; i++)
        if (strcmp(fw->lower[i], lower) == 0)
            return 0;
    if (fw->n == LLMC_FWD_MAX) {
        snprintf(err, errlen, "--forward-header: at most %d headers are forwarded", LLMC_FWD_MAX);
        return LLMC_EINVAL;
    }
    memcpy(fw->names[fw->n], name, len);
    fw->names[fw->n][len] = '\0';
    memcpy(fw->lower[fw->n], lower, len + 1);
    size_t v = strlen(fw->vary);
    snprintf(fw->vary + v, sizeof(fw->vary) - v, ", %s", fw->names[fw->n]);
    fw->n++;
    return 0;
}

int llmc_forward_init(llmc_forward_t *fw, const char *list, bool gateway_key, char *err,
                      size_t errlen)
{
    memset(fw, 0, sizeof(*fw));
    int rc = 0;
    for (size_t i = 0; !gateway_key && i < sizeof(default_names) / sizeof(default_names[0]); i++)
        if ((rc = add_name(fw, default_names[i], strlen(default_names[i]), err, errlen)) < 0)
            return rc;
    const char *item;
    size_t n;
    for (const char *p = list; llmc_config_list_next(&p, &item, &n);)
        if ((rc = add_name(fw, item, n, err, errlen)) < 0)
            return rc;
    return 0;
}

size_t llmc_forward_lines(const llmc_forward_t *fw, const llmc_http_req_t *req, char *buf,
                          size_t cap)
{
    size_t len = 0;
    if (cap)
        buf[0] = '\0';
    for (unsigned i = 0; i < fw->n; i++) {
        const char *v = llmc_http_header(req, fw->lower[i]);
        if (!v || strlen(v) > LLMC_FWD_VALUE_MAX)
            continue;
        int n = snprintf(buf + len, cap - len, "%s: %s\r\n", fw->names[i], v);
        if (n < 0 || (size_t)n >= cap - len) {
            buf[len] = '\0';   /* cap below LLMC_FWD_BYTES: the line does not fit */
            break;
        }
        len += (size_t)n;
    }
    return len;
}
