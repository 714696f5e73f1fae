/*
 * gateway/ask.c: GET /ask's query to a chat request, and a completion to
 * /ask's answer (see ask.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The whole decoded value is kept: cut at a %00, "a%00b" would be keyed,
 *   and answered, as "a".
 * - A bad model= is the client's to fix, never replaced by the default.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gateway/ask.h"
#include "llmc/error.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int llmc_ask_query_param(const char *query, const char *name, char *out, size_t cap,
                         size_t *len)
{
    size_t nlen = strlen(name);
    for (const char *p = query; p && *p; p = strchr(p, '&'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, nlen) != 0 || p[nlen] != '=')
            continue;
        size_t n = 0;
        for (p += nlen + 1; *p && *p != '&'; p++) {
            int c = (unsigned char)*p;
            if (c == '+')
                c = ' ';
            else if (c == '%') {
                int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
                if (lo < 0)
                    return LLMC_EINVAL;
                c = hi * 16 + lo;
                p += 2;
            }
            if (n + 1 >= cap)
                return LLMC_E2BIG;
            out[n++] = (char)c;
        }
        out[n] = '\0';
        *len = n;
        return 0;
    }
    return LLMC_ENOENT;
}

/* A query parameter as a JSON string. 0, LLMC_ENOENT when absent or empty,
   LLMC_EINVAL with a message in err, or LLMC_ENOMEM. */
static int query_json(const char *query, const char *name, json_t **out, char *err,
                      size_t errlen)
{
    size_t cap = strlen(query) + 1, len = 0; /* decoding never grows it */
    char *buf = malloc(cap);
    if (!buf)
        return LLMC_ENOMEM;
    int rc = llmc_ask_query_param(query, name, buf, cap, &len);
    if (rc == 0 && len == 0)
        rc = LLMC_ENOENT;
    if (rc == LLMC_EINVAL)
        snprintf(err, errlen, "query parameter %s is not valid percent-encoding", name);
    if (rc == 0 && !(*out = json_stringn(buf, len))) {
        snprintf(err, errlen, "query parameter %s is not valid UTF-8", name);
        rc = LLMC_EINVAL;
    }
    free(buf);
    return rc;
}

int llmc_ask_body(const char *query, const char *default_model, char **body, size_t *len,
                  char *err, size_t errlen)
{
    json_t *q = NULL, *model = NULL;
    int rc = query_json(query ? query : "", "q", &q, err, errlen);
    if (rc == LLMC_ENOENT) {
        snprintf(err, errlen, "missing query parameter q");
        rc = LLMC_EINVAL;
    }
    if (rc == 0 && (rc = query_json(query, "model", &model, err, errlen)) == LLMC_ENOENT)
        rc = (model = json_string(default_model)) ? 0 : LLMC_ENOMEM;
    if (rc < 0) {
        json_decref(q);
        if (rc == LLMC_ENOMEM)
            snprintf(err, errlen, "out of memory");
        return rc;
    }
    json_t *root = json_pack("{s:o, s:[{s:s, s:o}]}", "model", model, "messages",
                             "role", "user", "content", q);
    *body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!*body) {
        snprintf(err, errlen, "out of memory");
        return LLMC_ENOMEM;
    }
    *len = strlen(*body);
    return 0;
}

/* The text a completion carries: choices[0].message.content, or null. */
static json_t *answer_text(const char *body, size_t len)
{
    json_t *root = json_loadb(body, len, JSON_ALLOW_NUL, NULL); /* a model may write \u0000 */
    json_t *content = json_object_get(
        json_object_get(json_array_get(json_object_get(root, "choices"), 0), "message"),
        "content");
    json_t *out = json_is_string(content) ? json_incref(content) : json_null();
    json_decref(root);
    return out;
}

char *llmc_ask_answer(const char *completion, size_t len, bool from_cache, size_t *out_len)
{
    json_t *o = json_pack("{s:o, s:s}", "answer", answer_text(completion, len), "source",
                          from_cache ? "cache" : "llm");
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    *out_len = s ? strlen(s) : 0;
    return s;
}
