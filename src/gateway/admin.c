/*
 * gateway/admin.c: the admin routes' work: an entry's metadata
 * (GET /admin/cache/{key}).
 *
 * Whether a request may reach these at all (the admin token, the admin
 * listener) is decided before, by the route table in handler.c.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The metadata asks each tier on its own (llmc_tier_set_peek), not the
 *   lookup walk: a walk would promote a disk entry into memory, and
 *   looking must not change what is cached. Each ask still counts as a
 *   lookup in that tier's hits or misses.
 * - The key in the path is the hex of X-Cache-Key: exactly 64 hex digits,
 *   either case. Anything else is a 400 that says so, never a lookup of
 *   some other key.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gateway/gw_int.h"
#include "llmc/error.h"

/* ---- helpers -------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The key written as 64 hex digits (the whole of s). 0 or LLMC_EINVAL. */
static int parse_key(const char *s, llmc_key_t *key)
{
    if (strlen(s) != 2 * LLMC_KEY_LEN)
        return LLMC_EINVAL;
    for (size_t i = 0; i < LLMC_KEY_LEN; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return LLMC_EINVAL;
        key->b[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static void bad_key(gw_req_t *gr)
{
    llmc__gr_enter(gr, GR_RESPOND);
    llmc__gw_error(gr, 400, "invalid_request_error", "invalid_key",
                   "the key must be 64 hex digits, as in the X-Cache-Key header");
}

/* An RFC 3339 UTC time with milliseconds. */
static json_t *time_json(int64_t ms)
{
    char buf[48], out[64];
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (ms < 0 || !gmtime_r(&secs, &tm))
        return json_null();
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, sizeof(out), "%s.%03dZ", buf, (int)(ms % 1000));
    return json_string(out);
}

/* ---- GET /admin/cache/{key} --------------------------------------------- */

static json_t *entry_json(const llmc_entry_t *e, json_t *tiers, int64_t now)
{
    char key[2 * LLMC_KEY_LEN + 1], etag[LLMC_ETAG_LEN];
    llmc_key_hex(&e->key, key);
    llmc_entry_etag(e, etag);
    json_t *tags = json_array();
    const char *t = llmc_entry_tag(e, 0);
    for (uint32_t i = 0; i < e->ntags; i++, t += strlen(t) + 1)
        json_array_append_new(tags, json_string(t));
    return json_pack("{s:s, s:o, s:o, s:I, s:o, s:I, s:b, s:I, s:I, s:I, s:I, s:s, s:i, s:s,"
                     " s:s, s:s, s:o, s:s, s:b}",
                     "key", key, "tiers", tiers,
                     "created", time_json(e->created_ms), "created_ms", (json_int_t)e->created_ms,
                     "expires", time_json(e->expires_ms), "expires_ms", (json_int_t)e->expires_ms,
                     "fresh", now < e->expires_ms,
                     "age_s", (json_int_t)llmc_entry_age(e, now),
                     "ttl_left_s", (json_int_t)llmc_entry_ttl_left(e, now),
                     "size", (json_int_t)e->body_len, "mem_bytes", (json_int_t)e->mem_bytes,
                     "content_type", llmc_entry_content_type(e), "status", (int)e->status,
                     "etag", etag, "namespace", llmc_entry_ns(e), "model", llmc_entry_model(e),
                     "tags", tags,
                     "scope", e->flags & LLMC_ENTRY_PRIVATE ? "private" : "shared",
                     "from_stream", (e->flags & LLMC_ENTRY_FROM_STREAM) != 0);
}

void llmc__gw_admin_entry(gw_req_t *gr)
{
    llmc_tier_set_t *s = gr->w->gw->tiers;
    llmc_key_t key;
    if (parse_key(gr->route_arg, &key) < 0) {
        bad_key(gr);
        return;
    }
    int64_t now = llmc_now_ms();
    llmc_entry_t *first = NULL;
    json_t *tiers = json_array();
    for (unsigned i = 0; i < llmc_tier_set_count(s); i++) {
        llmc_entry_t *e = NULL;
        if (llmc_tier_set_peek(s, i, &key, now, &e) != 0)
            continue;
        json_array_append_new(tiers, json_string(llmc_tier_set_name(s, i)));
        if (!first)
            first = e; /* the fastest tier's copy is the one a lookup would find */
        else
            llmc_entry_unref(e);
    }
    llmc__gr_enter(gr, GR_RESPOND);
    if (!first) {
        json_decref(tiers);
        llmc__gw_error(gr, 404, "invalid_request_error", "not_found",
                       "no tier holds an entry under this key");
        return;
    }
    json_t *o = entry_json(first, tiers, now);
    llmc_entry_unref(first);
    if (o)
        llmc__gw_respond_json(gr, 200, o);
    else
        llmc__gw_error(gr, 503, "server_error", "out_of_memory", "out of memory");
}
