/*
 * gateway/admin.c: the admin routes' work: an entry's metadata
 * (GET /admin/cache/{key}), deleting it (DELETE /admin/cache/{key}),
 * purges by selector (POST /admin/purge) and explain (POST /admin/explain).
 *
 * Whether a request may reach these at all (the admin token, the admin
 * listener) is decided before, by the route table in handler.c.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A purge goes through the tier set, never to a tier: the set numbers
 *   it so that an answer in the air when it lands is not stored after it
 *   and a slower tier's hit is not promoted back (tier/set.h), and it
 *   collects each tier's count. The disk tier counts only once its writer
 *   has committed the purge, so the request parks (PARKED_PURGE) until
 *   every tier has answered; the purge holds a reference to it meanwhile.
 * - The selector is strict: an unknown field, a field of the wrong type or
 *   an empty selector is a 400 naming it, never a purge of something else.
 *   Fields combine with AND; {"all": true} stands alone.
 * - The metadata asks each tier on its own (llmc_tier_set_peek), not the
 *   lookup walk: a walk would promote a disk entry into memory, and
 *   looking must not change what is cached. Each ask still counts as a
 *   lookup in that tier's hits or misses.
 * - Explain asks each tier alone too (llmc_tier_set_ask), through its
 *   general lookup, so Redis and the semantic tier answer as well. One
 *   that answers later parks the request (LOOKUP -> PARKED_TIER, the same
 *   states as a cached request's walk) under that tier's own timeout; the
 *   walk holds a reference on the request and is freed when the tier
 *   answers, whether or not the client is still there.
 * - The key in the path is the hex of X-Cache-Key: exactly 64 hex digits,
 *   either case. Anything else is a 400 that says so, never a lookup of
 *   some other key.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gateway/clients.h"
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

/* ---- purges ---------------------------------------------------------------- */

/* The answer: how many entries went from each tier, and what was asked. */
static void purge_answered(void *arg, const size_t *removed, unsigned ntiers)
{
    gw_req_t *gr = arg;
    if (gr->state == GR_PARKED_PURGE && gr->req) {
        llmc_tier_set_t *s = gr->w->gw->tiers;
        json_t *by_tier = json_object();
        for (unsigned i = 0; i < ntiers; i++)
            json_object_set_new(by_tier, llmc_tier_set_name(s, i),
                                json_integer((json_int_t)removed[i]));
        json_t *o = json_pack("{s:o, s:O}", "removed", by_tier, "selector", gr->admin_sel);
        llmc__gr_enter(gr, GR_RESPOND);
        if (o)
            llmc__gw_respond_json(gr, 200, o);
        else
            llmc__gw_error(gr, 503, "server_error", "out_of_memory", "out of memory");
    }
    llmc__gr_unref(gr); /* the purge's */
}

/* Sends sel through the tier set; the answer comes in purge_answered. */
static void start_purge(gw_req_t *gr, const llmc_purge_t *sel)
{
    LLMC_COUNT(&gr->w->ctr, purges);
    llmc__gr_enter(gr, GR_PARKED_PURGE);
    llmc__gr_ref(gr); /* the purge's */
    llmc_tier_set_purge(gr->w->gw->tiers, gr->w->id, sel, purge_answered, gr);
}

static int sel_error(char *err, size_t errlen, const char *fmt, const char *field)
{
    snprintf(err, errlen, fmt, field);
    return LLMC_EINVAL;
}

/*
 * Reads a purge selector from a JSON object into *sel; its strings point
 * into obj, which must outlive sel. now_ms turns older_than into a time.
 * 0, or LLMC_EINVAL with a message for the client.
 */
static int parse_selector(const json_t *obj, int64_t now_ms, llmc_purge_t *sel, char *err,
                          size_t errlen)
{
    const char *name;
    json_t *v;
    memset(sel, 0, sizeof(*sel));
    if (!json_is_object(obj))
        return sel_error(err, errlen, "%s", "the selector must be a JSON object");
    json_object_foreach((json_t *)obj, name, v) {
        static const struct {
            const char *name;
            uint32_t cond;
            size_t off;
        } strs[] = {
            {"namespace", LLMC_PURGE_NAMESPACE, offsetof(llmc_purge_t, ns)},
            {"model", LLMC_PURGE_MODEL, offsetof(llmc_purge_t, model)},
            {"tag", LLMC_PURGE_TAG, offsetof(llmc_purge_t, tag)},
            {"route", LLMC_PURGE_ROUTE, offsetof(llmc_purge_t, route)},
        };
        size_t i;
        for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
            if (strcmp(name, strs[i].name) == 0)
                break;
        if (i < sizeof(strs) / sizeof(strs[0])) {
            if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
                return sel_error(err, errlen, "\"%s\" must be a string", name);
            if (strs[i].cond == LLMC_PURGE_TAG && json_string_length(v) == 0)
                return sel_error(err, errlen, "%s", "\"tag\" must not be empty");
            if (strs[i].cond == LLMC_PURGE_ROUTE && json_string_value(v)[0] != '/')
                return sel_error(err, errlen, "%s",
                                 "\"route\" must be an endpoint path, such as "
                                 "\"/v1/chat/completions\"");
            sel->conds |= strs[i].cond;
            *(const char **)((char *)sel + strs[i].off) = json_string_value(v);
        } else if (strcmp(name, "key_prefix") == 0) {
            const char *h = json_is_string(v) ? json_string_value(v) : "";
            size_t n = strlen(h);
            if (n == 0 || n > 2 * LLMC_KEY_LEN || n != json_string_length(v))
                return sel_error(err, errlen, "%s",
                                 "\"key_prefix\" must be 1 to 64 hex digits of a key");
            for (size_t k = 0; k < n; k++) {
                int d = hexval(h[k]);
                if (d < 0)
                    return sel_error(err, errlen, "%s",
                                     "\"key_prefix\" must be 1 to 64 hex digits of a key");
                sel->prefix.b[k / 2] |= (uint8_t)(k % 2 ? d : d << 4);
            }
            sel->prefix_digits = (uint8_t)n;
            sel->conds |= LLMC_PURGE_KEY_PREFIX;
        } else if (strcmp(name, "older_than") == 0) {
            if (!json_is_number(v) || json_number_value(v) < 0)
                return sel_error(err, errlen, "%s",
                                 "\"older_than\" must be a number of seconds, 0 or more");
            double ms = json_number_value(v) * 1000.0;
            /* At least that old: created at or before now - ms (so 0 takes
               an answer stored in this very millisecond too). */
            sel->created_before_ms = ms >= (double)now_ms ? INT64_MIN : now_ms - (int64_t)ms + 1;
            sel->conds |= LLMC_PURGE_OLDER;
        } else if (strcmp(name, "all") == 0) {
            if (!json_is_true(v))
                return sel_error(err, errlen, "%s", "\"all\" can only be true");
            sel->all = true;
        } else {
            return sel_error(err, errlen,
                             "unknown selector field \"%.64s\" (namespace, model, tag, "
                             "key_prefix, older_than, route, all)", name);
        }
    }
    if (sel->all && sel->conds)
        return sel_error(err, errlen, "%s", "\"all\" cannot be combined with other fields");
    if (!sel->all && !sel->conds)
        return sel_error(err, errlen, "%s",
                         "an empty selector purges nothing: name at least one field, or "
                         "{\"all\": true}");
    return 0;
}

void llmc__gw_admin_purge(gw_req_t *gr)
{
    char err[256];
    json_error_t jerr;
    llmc_purge_t sel;
    json_t *root = json_loadb(gr->req->body, gr->req->body_len, JSON_DECODE_ANY, &jerr);
    if (!root) {
        snprintf(err, sizeof(err), "the body is not JSON: %s", jerr.text);
        llmc__gr_enter(gr, GR_RESPOND);
        llmc__gw_error(gr, 400, "invalid_request_error", "invalid_json", err);
        return;
    }
    if (parse_selector(root, llmc_now_ms(), &sel, err, sizeof(err)) < 0) {
        json_decref(root);
        llmc__gr_enter(gr, GR_RESPOND);
        llmc__gw_error(gr, 400, "invalid_request_error", "invalid_selector", err);
        return;
    }
    gr->admin_sel = root; /* echoed in the answer; freed with gr */
    start_purge(gr, &sel);
}

void llmc__gw_admin_delete(gw_req_t *gr)
{
    llmc_purge_t sel = {.conds = LLMC_PURGE_KEY};
    if (parse_key(gr->route_arg, &sel.key) < 0) {
        bad_key(gr);
        return;
    }
    char hex[2 * LLMC_KEY_LEN + 1];
    llmc_key_hex(&sel.key, hex);
    gr->admin_sel = json_pack("{s:s}", "key", hex);
    start_purge(gr, &sel);
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
                     " s:s, s:s, s:s, s:o, s:s, s:b}",
                     "key", key, "tiers", tiers,
                     "created", time_json(e->created_ms), "created_ms", (json_int_t)e->created_ms,
                     "expires", time_json(e->expires_ms), "expires_ms", (json_int_t)e->expires_ms,
                     "fresh", now < e->expires_ms,
                     "age_s", (json_int_t)llmc_entry_age(e, now),
                     "ttl_left_s", (json_int_t)llmc_entry_ttl_left(e, now),
                     "size", (json_int_t)e->body_len, "mem_bytes", (json_int_t)e->mem_bytes,
                     "content_type", llmc_entry_content_type(e), "status", (int)e->status,
                     "etag", etag, "namespace", llmc_entry_ns(e), "model", llmc_entry_model(e),
                     "route", llmc_entry_route(e), "tags", tags,
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

/* ---- POST /admin/explain ---------------------------------------------------- */

/* The explained request: its parts as the body named them. */
typedef struct explain_in {
    const char *path;
    json_t *headers;             /* an object of strings, or NULL */
    char *body;                  /* malloc'd */
    size_t body_len;
} explain_in_t;

/* A header of the explained request, by its lowercase name, any case in
   the JSON; NULL when absent. */
static const char *in_header(const explain_in_t *in, const char *lname)
{
    const char *name;
    json_t *v;
    if (!in->headers)
        return NULL;
    json_object_foreach(in->headers, name, v)
        if (strcasecmp(name, lname) == 0)
            return json_string_value(v);
    return NULL;
}

/* Reads {"method", "path", "headers", "body"} (a bare request body, one
   with none of those fields, is taken as a chat completion's). 0, or
   LLMC_EINVAL with a message for a 400. */
static int explain_read(json_t *root, explain_in_t *in, char *err, size_t errlen)
{
    memset(in, 0, sizeof(*in));
    in->path = "/v1/chat/completions";
    json_t *path = json_object_get(root, "path"), *method = json_object_get(root, "method");
    json_t *headers = json_object_get(root, "headers"), *body = json_object_get(root, "body");
    if (!json_is_object(root))
        return sel_error(err, errlen, "%s", "the body must be a JSON object");
    if (!path && !method && !headers && !body) {
        body = root; /* a bare chat body */
    } else {
        const char *name;
        json_t *v;
        json_object_foreach(root, name, v)
            if (strcmp(name, "path") && strcmp(name, "method") && strcmp(name, "headers") &&
                strcmp(name, "body"))
                return sel_error(err, errlen,
                                 "unknown field \"%.64s\" (method, path, headers, body)", name);
        if (path && (!json_is_string(path) || json_string_value(path)[0] != '/'))
            return sel_error(err, errlen, "%s", "\"path\" must be a path such as "
                             "\"/v1/chat/completions\"");
        if (method && (!json_is_string(method) || strcasecmp(json_string_value(method), "POST")))
            return sel_error(err, errlen, "%s", "\"method\" can only be POST: the cached routes "
                             "take POST (GET /ask is keyed as the chat completion it stands for)");
        if (headers && !json_is_object(headers))
            return sel_error(err, errlen, "%s", "\"headers\" must be an object of strings");
        json_object_foreach(headers, name, v)
            if (!json_is_string(v))
                return sel_error(err, errlen, "header \"%.64s\" must be a string", name);
        if (!body || !(json_is_object(body) || json_is_string(body)))
            return sel_error(err, errlen, "%s", "\"body\" must be the request body: a JSON "
                             "object, or its text as a string");
        if (path)
            in->path = json_string_value(path);
        in->headers = headers;
    }
    if (json_is_string(body)) {
        in->body_len = json_string_length(body);
        in->body = malloc(in->body_len + 1);
        if (in->body)
            memcpy(in->body, json_string_value(body), in->body_len + 1);
    } else if ((in->body = json_dumps(body, JSON_COMPACT))) {
        in->body_len = strlen(in->body);
    }
    return in->body ? 0 : LLMC_ENOMEM;
}

/* The verdict of an explained request that never reaches the cache: the
   error status it would get, or 0 for one passed through to the model. */
static json_t *explain_refused(json_t *o, int status, const char *why)
{
    json_object_set_new(o, "cacheable", json_false());
    json_object_set_new(o, "why_not", json_string(why));
    json_object_set_new(o, "verdict", status ? json_pack("{s:s, s:i}", "action", "error",
                                                         "status", status)
                                             : json_pack("{s:s}", "action", "pass"));
    return o;
}

/* An explain asking the tiers: its answer so far and the one lookup in
   flight. Each tier is asked alone (llmc_tier_set_ask), never through the
   set's walk, so what a slower tier has is not promoted into a faster one.
   A tier that answers later (Redis, a remote embedder) parks the request
   (LOOKUP -> PARKED_TIER) under the tier's own timeout; the walk holds a
   reference on gr meanwhile, and is freed when the tier answers, whether
   or not the client is still there. */
typedef struct explain_walk {
    gw_req_t *gr;
    llmc_tier_lookup_t tl;
    llmc_tier_query_t query;
    llmc_policy_t pol;
    unsigned next;               /* the tier asked now */
    json_t *o, *tiers, *verdict, *unanswered;
    char *body, *model;          /* the query's copies (the semantic tier reads them) */
    char scope[2 * LLMC_KEY_LEN + 1];
} explain_walk_t;

static void walk_free(explain_walk_t *ew)
{
    json_decref(ew->o);
    json_decref(ew->tiers);
    json_decref(ew->verdict);
    json_decref(ew->unanswered);
    free(ew->body);
    free(ew->model);
    free(ew);
}

/* The row of a tier that has no entry to show: rc LLMC_ENOENT, or the
   error it answered with. */
static json_t *row_without(explain_walk_t *ew, const char *name, int rc)
{
    bool similar = llmc_tier_set_by_similarity(ew->gr->w->gw->tiers, ew->next);
    if (rc != LLMC_ENOENT) {
        if (!ew->verdict) /* a miss unless that tier had it */
            json_array_append_new(ew->unanswered, json_string(name));
        return json_pack("{s:s, s:s, s:s}", "tier", name, "state",
                         rc == LLMC_ECANCELED ? "not answered (shutting down)" : "not answered",
                         "error", llmc_strerror(rc));
    }
    if (similar && !ew->query.similar)
        return json_pack("{s:s, s:s}", "tier", name, "state",
                         "not asked (the request refuses a similar question's answer)");
    if (similar)
        return json_pack("{s:s, s:s, s:n}", "tier", name, "state",
                         "absent (no similar question stored answers it)", "matched");
    return json_pack("{s:s, s:s}", "tier", name, "state", "absent");
}

/* The row of tier ew->next for the lookup's answer rc, and the verdict if
   it is the first tier whose entry the request would take. */
static void walk_row(explain_walk_t *ew, int rc)
{
    const char *name = llmc_tier_set_name(ew->gr->w->gw->tiers, ew->next);
    llmc_entry_t *e = rc == 0 ? ew->tl.entry : NULL;
    const llmc_policy_t *pol = &ew->pol;
    int64_t now = llmc_now_ms();
    ew->tl.entry = NULL;
    if (!e) {
        json_array_append_new(ew->tiers, row_without(ew, name, rc == 0 ? LLMC_ENOENT : rc));
        return;
    }
    llmc_use_t use = llmc_policy_usable(pol, e, now);
    const char *usable = !pol->read ? "not read (no-cache)"
                         : use == LLMC_USE_FRESH ? "yes"
                         : use == LLMC_USE_STALE ? "stale (max-stale)"
                                                 : "no (the request's directives refuse it)";
    json_t *row = json_pack(
        "{s:s, s:s, s:I, s:I, s:o, s:o, s:s}", "tier", name,
        "state", now < e->expires_ms ? "fresh" : "expired",
        "age_s", (json_int_t)llmc_entry_age(e, now),
        "ttl_left_s", (json_int_t)llmc_entry_ttl_left(e, now),
        "created", time_json(e->created_ms), "expires", time_json(e->expires_ms),
        "usable", usable);
    bool similar = ew->tl.similarity > 0;
    if (row && similar) { /* a similar question's answer: whose, how close */
        char hex[2 * LLMC_KEY_LEN + 1];
        llmc_key_hex(&e->key, hex);
        json_object_set_new(row, "matched", json_string(hex));
        json_object_set_new(row, "similarity", json_real(ew->tl.similarity));
    }
    json_array_append_new(ew->tiers, row);
    if (!ew->verdict && pol->read && use != LLMC_USE_NO)
        ew->verdict = json_pack("{s:s, s:s}", "action",
                                use != LLMC_USE_FRESH ? "stale-hit"
                                : similar             ? "semantic-hit"
                                                      : "hit",
                                "tier", name);
    llmc_entry_unref(e);
}

/* The verdict once every tier has answered, set into the answer. */
static json_t *walk_end(explain_walk_t *ew)
{
    const llmc_policy_t *pol = &ew->pol;
    json_t *o = ew->o, *verdict = ew->verdict;
    ew->o = ew->verdict = NULL;
    if (!verdict && pol->only_if_cached)
        verdict = json_pack("{s:s, s:i}", "action", "error", "status", 504);
    if (!verdict && json_array_size(ew->unanswered))
        verdict = json_pack("{s:s, s:b, s:O}", "action", pol->write ? "miss" : "bypass",
                            "stored", pol->write, "unless", ew->unanswered);
    else if (!verdict)
        verdict = json_pack("{s:s, s:b}", "action", pol->write ? "miss" : "bypass",
                            "stored", pol->write);
    json_object_set(o, "tiers", ew->tiers);
    json_object_set_new(o, "verdict", verdict);
    walk_free(ew);
    return o;
}

static void walk_answered(llmc_tier_lookup_t *lk, int rc);

/* Asks the tiers from ew->next on. The answer once all have answered, or
   NULL when one holds the lookup (the request parked: walk_answered goes
   on). The request is in LOOKUP. */
static json_t *walk_run(explain_walk_t *ew)
{
    llmc_tier_set_t *s = ew->gr->w->gw->tiers;
    for (; ew->next < llmc_tier_set_count(s); ew->next++) {
        ew->tl.entry = NULL;
        ew->tl.now_ms = llmc_now_ms();
        ew->tl.done = walk_answered;
        int rc = llmc_tier_set_ask(s, ew->next, &ew->tl);
        if (rc == LLMC_EAGAIN) {
            llmc__gr_enter(ew->gr, GR_PARKED_TIER);
            llmc__gr_ref(ew->gr); /* the pending lookup's */
            return NULL;
        }
        walk_row(ew, rc);
        if (rc == LLMC_ECANCELED)
            break; /* detach: the slower tiers are gone from this loop */
    }
    return walk_end(ew);
}

static void explain_answer(gw_req_t *gr, json_t *o);

/* A tier answered the parked explain, on its loop. */
static void walk_answered(llmc_tier_lookup_t *lk, int rc)
{
    explain_walk_t *ew = (explain_walk_t *)((char *)lk - offsetof(explain_walk_t, tl));
    gw_req_t *gr = ew->gr;
    if (gr->state == GR_PARKED_TIER && gr->req) {
        llmc__gr_enter(gr, GR_LOOKUP);
        walk_row(ew, rc);
        bool stop = rc == LLMC_ECANCELED;
        ew->next = stop ? llmc_tier_set_count(gr->w->gw->tiers) : ew->next + 1;
        json_t *o = walk_run(ew);
        if (o)
            explain_answer(gr, o);
    } else { /* the client left meanwhile */
        if (rc == 0)
            llmc_entry_unref(lk->entry);
        walk_free(ew);
    }
    llmc__gr_unref(gr); /* the pending lookup's */
}

/* A walk for key as the request would look it up (handler.c's fill_query).
   Takes o; NULL when out of memory (o freed). */
static explain_walk_t *walk_new(gw_req_t *gr, json_t *o, const llmc_key_t *key,
                                const llmc_policy_t *pol, const char *path, const char *scope,
                                const llmc_canon_t *canon)
{
    explain_walk_t *ew = calloc(1, sizeof(*ew));
    if (ew) {
        ew->o = o;
        ew->tiers = json_array();
        ew->unanswered = json_array();
        ew->body = malloc(canon->text_len + 1);
        ew->model = strdup(canon->model ? canon->model : "");
    }
    if (!ew || !ew->tiers || !ew->unanswered || !ew->body || !ew->model) {
        if (ew)
            walk_free(ew);
        else
            json_decref(o);
        return NULL;
    }
    memcpy(ew->body, canon->text, canon->text_len);
    ew->body[canon->text_len] = '\0';
    snprintf(ew->scope, sizeof(ew->scope), "%s", scope);
    ew->gr = gr;
    ew->pol = *pol;
    ew->query = (llmc_tier_query_t){
        .key = *key, .path = path, .body = ew->body, .body_len = canon->text_len,
        .scope = ew->scope, .ns = ew->pol.ns, .model = canon->model ? ew->model : NULL,
        .similar = pol->semantic,
        .threshold = pol->semantic_threshold > 0
                         ? pol->semantic_threshold
                         : (float)LLMC_GW_LIVE(gr->w->gw, semantic_threshold) / 1000.0f,
    };
    ew->tl.query = &ew->query;
    ew->tl.worker = gr->w->id;
    return ew;
}

/* The policy the explained request's headers and body make, held to its
   client key's rights; the same steps as handler.c's read_policy. 0, or
   the status of the error it would get (message in err). */
static int explain_policy(gw_req_t *gr, const explain_in_t *in, const llmc_canon_t *canon,
                          const llmc_client_t *client, llmc_policy_t *pol, unsigned *denied,
                          char *err, size_t errlen)
{
    int64_t ttl = LLMC_GW_LIVE(gr->w->gw, ttl), max_ttl = LLMC_GW_LIVE(gr->w->gw, max_ttl);
    const char *cc = in_header(in, "cache-control");
    if (llmc_policy_parse(pol, cc, in_header(in, "pragma"), in_header(in, "x-cache-ttl"),
                          in_header(in, "x-cache-namespace"), canon->cache_ext, ttl,
                          max_ttl, err, errlen) < 0 ||
        llmc_policy_parse_tags(pol, in_header(in, "x-cache-tags"), canon->cache_ext, err,
                               errlen) < 0 ||
        llmc_policy_parse_semantic(pol, in_header(in, "x-cache-semantic"),
                                   in_header(in, "x-cache-semantic-threshold"), canon->cache_ext,
                                   err, errlen) < 0)
        return 400;
    *denied = 0;
    if (client && llmc_clients_apply(client, pol, ttl < max_ttl ? ttl : max_ttl,
                                     denied, err, errlen) < 0)
        return 403;
    return 0;
}

/* The key's inputs and the key, as handler.c makes them. */
static json_t *explain_key(gw_req_t *gr, json_t *o, const explain_in_t *in,
                           const gw_explain_route_t *rt, const llmc_canon_t *canon,
                           const llmc_client_t *client, const char *cred, llmc_key_t *key,
                           llmc_policy_t *pol, char *scope)
{
    llmc_gw_t *gw = gr->w->gw;
    char err[256] = "", src[LLMC_CLIENT_NS_MAX + 4];
    char hex[2 * LLMC_KEY_LEN + 1];
    unsigned denied = 0;
    int status = explain_policy(gr, in, canon, client, pol, &denied, err, sizeof(err));
    if (status)
        return explain_refused(o, status, err);
    /* The scope: handler.c's scope_source. */
    const char *scope_from = NULL;
    if (client && client->ns[0] && gw->shared_scope) {
        snprintf(src, sizeof(src), "ns:%s", client->ns);
        scope_from = src;
    } else if (!gw->shared_scope) {
        scope_from = cred ? cred : in_header(in, "authorization");
    }
    if (scope_from || !gw->shared_scope) {
        llmc_key_t h;
        llmc_key_scope(&h, scope_from, scope_from ? strlen(scope_from) : 0);
        llmc_key_hex(&h, scope);
    }
    llmc_key_build(key, rt->path, gw->key_upstream, scope, pol->ns, canon->text, canon->text_len);
    llmc_key_hex(key, hex);
    json_t *ignored = json_array();
    const char *name;
    json_t *v;
    json_object_foreach(canon->root, name, v)
        if (llmc_key_field_ignored(name))
            json_array_append_new(ignored, json_string(name));
    if (canon->cache_ext)
        json_array_append_new(ignored, json_string("cache"));
    json_t *d = json_array();
    if (denied & LLMC_CLIENT_DENIED_REFRESH)
        json_array_append_new(d, json_string("refresh"));
    if (denied & LLMC_CLIENT_DENIED_TTL)
        json_array_append_new(d, json_string("ttl"));
    json_object_set_new(o, "key", json_string(hex));
    json_object_set_new(o, "inputs", json_pack(
        "{s:s, s:s, s:s, s:s, s:s%}", "route", rt->path, "upstream", gw->key_upstream,
        "scope", !scope[0] ? "shared" : scope_from && scope_from == src ? "bound namespace"
                                                                          : "per key",
        "namespace", pol->ns, "canonical", canon->text, canon->text_len));
    json_object_set_new(o, "model", json_string(canon->model));
    json_object_set_new(o, "ignored_fields", ignored);
    json_object_set_new(o, "cacheable", json_true());
    json_object_set_new(o, "policy", json_pack(
        "{s:b, s:b, s:b, s:I, s:o}", "read", pol->read, "write", pol->write,
        "only_if_cached", pol->only_if_cached, "ttl_s", (json_int_t)(pol->ttl_ms / 1000),
        "denied", d));
    return o;
}

/* Which client key the explained request presents, with --client-keys. */
static bool explain_client(gw_req_t *gr, json_t *o, const explain_in_t *in,
                           const llmc_client_t **client, const char **cred)
{
    size_t len = 0;
    *client = NULL;
    *cred = NULL;
    if (!gr->w->gw->client_keys)
        return true;
    *cred = llmc_clients_credential(in_header(in, "authorization"), in_header(in, "x-api-key"),
                                    &len);
    *client = llmc_clients_find(gr->clients, *cred, len);
    if (!*client) {
        json_object_set_new(o, "client", json_pack("{s:b}", "listed", false));
        explain_refused(o, 401, "no listed client key (--client-keys)");
        return false;
    }
    json_object_set_new(o, "client", json_pack("{s:b, s:s, s:b, s:b, s:i}", "listed", true,
                                               "namespace", (*client)->ns, "refresh",
                                               (*client)->refresh, "ttl", (*client)->ttl,
                                               "line", (int)(*client)->line));
    return true;
}

/* The answer for a request that never reaches the tiers, or NULL with
   *walk set for one whose tiers are to be asked (NULL too when out of
   memory). */
static json_t *explain(gw_req_t *gr, const explain_in_t *in,
                       bool (*find)(const char *path, gw_explain_route_t *out),
                       explain_walk_t **walk)
{
    char scope[2 * LLMC_KEY_LEN + 1] = "";
    gw_explain_route_t rt;
    llmc_canon_t canon = {0};
    llmc_policy_t pol;
    llmc_key_t key;
    char err[256] = "";
    const llmc_client_t *client;
    const char *cred, *why;
    json_t *o = json_pack("{s:s}", "path", in->path);
    if (!o)
        return NULL;
    if (!find(in->path, &rt))
        return explain_refused(o, 404, "no route takes a POST to this path");
    json_object_set_new(o, "route", json_string(rt.path));
    if (!rt.cacheable)
        return explain_refused(o, 0, "this route is passed through to the model, never cached");
    if (!explain_client(gr, o, in, &client, &cred))
        return o;
    if (llmc_canon_parse(in->body, in->body_len, &canon, err, sizeof(err)) < 0)
        return explain_refused(o, 400, err);
    if (rt.pass_why && (why = rt.pass_why(&canon))) {
        char msg[160];
        snprintf(msg, sizeof(msg), "\"%s\": such requests are passed through uncached", why);
        llmc_canon_free(&canon);
        return explain_refused(o, 0, msg);
    }
    explain_key(gr, o, in, &rt, &canon, client, cred, &key, &pol, scope);
    if (json_is_true(json_object_get(o, "cacheable"))) {
        *walk = walk_new(gr, o, &key, &pol, rt.path, scope, &canon);
        o = NULL; /* the walk's, or freed */
    }
    llmc_canon_free(&canon);
    return o;
}

void llmc__gw_admin_explain(gw_req_t *gr, bool (*find)(const char *path, gw_explain_route_t *out))
{
    char err[256];
    json_error_t jerr;
    explain_in_t in;
    json_t *root = json_loadb(gr->req->body, gr->req->body_len, JSON_DECODE_ANY, &jerr);
    int rc = root ? explain_read(root, &in, err, sizeof(err)) : LLMC_EJSON;
    if (!root)
        snprintf(err, sizeof(err), "the body is not JSON: %s", jerr.text);
    if (gr->w->gw->client_keys) /* the table explain looks keys up in, held for the call */
        gr->clients = llmc_clients_ref(llmc_gw_clients(gr->w));
    explain_walk_t *walk = NULL;
    json_t *o = rc == 0 ? explain(gr, &in, find, &walk) : NULL;
    if (rc == 0 || rc == LLMC_ENOMEM)
        free(in.body);
    json_decref(root);
    if (walk) {
        llmc__gr_enter(gr, GR_LOOKUP);
        if (!(o = walk_run(walk)))
            return; /* parked: walk_answered answers */
    }
    if (rc == 0)
        explain_answer(gr, o);
    else if (rc == LLMC_ENOMEM)
        explain_answer(gr, NULL);
    else {
        llmc__gr_enter(gr, GR_RESPOND);
        llmc__gw_error(gr, 400, "invalid_request_error", "invalid_explain_request", err);
    }
}

/* Answers explain with o (NULL: out of memory). */
static void explain_answer(gw_req_t *gr, json_t *o)
{
    llmc__gr_enter(gr, GR_RESPOND);
    if (o)
        llmc__gw_respond_json(gr, 200, o);
    else
        llmc__gw_error(gr, 503, "server_error", "out_of_memory", "out of memory");
}
