/*
 * responses_stream.c: the Responses API's event stream to one response
 * object and back (llmc/responses_stream.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Nothing is merged from deltas: response.completed carries the final
 *   response whole, and that object, not a rebuild from the deltas, is
 *   what the same request without "stream" would have got. The deltas are
 *   only checked for being JSON objects with a type. The items of
 *   response.output_item.done are kept as a fallback for servers whose
 *   response.completed leaves "output" out or empty.
 * - Only response.completed makes a stream cacheable. response.incomplete
 *   (max_output_tokens, a content filter) and response.failed are answers
 *   the model did not finish; a stream cut before any of them is one the
 *   client did not get whole. None of them is stored.
 * - Replay writes "event:" lines as OpenAI does: the official SDKs read
 *   the type from the data, but other clients (and curl users) go by the
 *   event name. sequence_number counts from 0 on every event, as the SDK's
 *   stream helpers use it to resume.
 * - Replayed added events carry the item without its text so that an
 *   accumulating client (the SDKs' stream helpers append every delta to
 *   what added gave) ends with the text once, not twice; the done events
 *   carry it whole, as OpenAI's do.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llmc/error.h"
#include "llmc/responses_stream.h"

/* ---- assembler ------------------------------------------------------------- */

struct llmc_resp_asm {
    json_t *final;      /* response.completed's response, once it came */
    json_t *items;      /* output_item.done items by output_index (null: none) */
    int err;            /* sticky */
};

llmc_resp_asm_t *llmc_resp_asm_new(void)
{
    llmc_resp_asm_t *a = calloc(1, sizeof(*a));
    if (a && !(a->items = json_array())) {
        free(a);
        a = NULL;
    }
    return a;
}

void llmc_resp_asm_free(llmc_resp_asm_t *a)
{
    if (!a)
        return;
    json_decref(a->final);
    json_decref(a->items);
    free(a);
}

static bool type_is(const char *t, const char *want)
{
    return strcmp(t, want) == 0;
}

/* Keeps item at output_index ix, nulls filling any gap before it. */
static int keep_item(llmc_resp_asm_t *a, json_t *ix, json_t *item)
{
    if (!json_is_integer(ix) || json_integer_value(ix) < 0 ||
        json_integer_value(ix) >= LLMC_RESP_MAX_ITEMS || !json_is_object(item))
        return LLMC_EBADRESP;
    size_t i = (size_t)json_integer_value(ix);
    while (json_array_size(a->items) <= i)
        if (json_array_append_new(a->items, json_null()))
            return LLMC_ENOMEM;
    return json_array_set(a->items, i, item) ? LLMC_ENOMEM : 0;
}

static int add_event(llmc_resp_asm_t *a, json_t *ev)
{
    const char *t = json_string_value(json_object_get(ev, "type"));
    if (!t)
        return LLMC_EBADRESP;
    if (type_is(t, "error") || type_is(t, "response.failed") || type_is(t, "response.incomplete"))
        return LLMC_EUPSTREAM;
    if (type_is(t, "response.output_item.done"))
        return keep_item(a, json_object_get(ev, "output_index"), json_object_get(ev, "item"));
    if (type_is(t, "response.completed")) {
        json_t *r = json_object_get(ev, "response");
        if (!json_is_object(r))
            return LLMC_EBADRESP;
        a->final = json_incref(r);
    }
    return 0;
}

int llmc_resp_asm_add(llmc_resp_asm_t *a, const char *data, size_t len)
{
    if (a->err || a->final)
        return a->err;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0)
        return 0;
    json_t *ev = json_loadb(data ? data : "", len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(ev))
        a->err = LLMC_EJSON;
    else
        a->err = add_event(a, ev);
    json_decref(ev);
    return a->err;
}

bool llmc_resp_asm_complete(const llmc_resp_asm_t *a)
{
    return !a->err && a->final;
}

/* The kept items without gaps, or NULL without memory. */
static json_t *items_in_order(const llmc_resp_asm_t *a)
{
    json_t *out = json_array();
    size_t i;
    json_t *it;
    json_array_foreach(a->items, i, it) {
        if (out && !json_is_null(it) && json_array_append(out, it)) {
            json_decref(out);
            out = NULL;
        }
    }
    return out;
}

int llmc_resp_asm_result(llmc_resp_asm_t *a, char **json, size_t *len)
{
    if (a->err)
        return a->err;
    if (!a->final)
        return LLMC_EINVAL;
    json_t *out = a->final;
    json_t *have = json_object_get(out, "output");
    bool fill = json_array_size(a->items) > 0 && (!json_is_array(have) || !json_array_size(have));
    if (fill) {
        /* A copy: the kept object stays as it came, so a second call agrees. */
        json_t *items = items_in_order(a);
        out = json_copy(a->final);
        if (!items || !out || json_object_set_new(out, "output", items)) {
            json_decref(out);
            return LLMC_ENOMEM;
        }
    }
    *json = json_dumps(out, JSON_COMPACT);
    if (fill)
        json_decref(out);
    if (!*json)
        return LLMC_ENOMEM;
    *len = strlen(*json);
    return 0;
}

/* ---- replay ---------------------------------------------------------------- */

#define DEFAULT_PIECE 24

typedef struct rp {
    char *p;
    size_t len, cap;
    json_int_t seq;
    size_t piece;
} rp_t;

static int out_add(rp_t *r, const char *s, size_t n)
{
    if (n > SIZE_MAX / 2 - r->len)
        return LLMC_ENOMEM;
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->len + n + 1)
            cap *= 2;
        char *q = realloc(r->p, cap);
        if (!q)
            return LLMC_ENOMEM;
        r->p = q;
        r->cap = cap;
    }
    memcpy(r->p + r->len, s, n);
    r->len += n;
    r->p[r->len] = '\0';
    return 0;
}

static int out_cb(const char *buf, size_t size, void *data)
{
    return out_add(data, buf, size) ? -1 : 0;
}

/* Writes one event: "type" and "sequence_number" first, then body's
   members (body: a new reference, consumed; NULL is out of memory). */
static int emit(rp_t *r, const char *type, json_t *body)
{
    json_t *ev = body ? json_pack("{s:s,s:I}", "type", type, "sequence_number", r->seq++) : NULL;
    int rc = ev && !json_object_update(ev, body) ? 0 : LLMC_ENOMEM;
    json_decref(body);
    if (!rc && (out_add(r, "event: ", 7) || out_add(r, type, strlen(type)) ||
                out_add(r, "\ndata: ", 7) || json_dump_callback(ev, out_cb, r, JSON_COMPACT) ||
                out_add(r, "\n\n", 2)))
        rc = LLMC_ENOMEM;
    json_decref(ev);
    return rc;
}

/* How many bytes of s (len) the next piece takes: about want, at a UTF-8
   character boundary; never zero unless len is. */
static size_t cut(const unsigned char *s, size_t len, size_t want)
{
    if (len <= want)
        return len;
    size_t i = want;
    while (i > 0 && (s[i] & 0xC0) == 0x80)
        i--;
    if (i == 0) {
        i = 1;
        while (i < len && (s[i] & 0xC0) == 0x80)
            i++;
    }
    return i;
}

/* The fields that place an event inside an item: item_id, output_index and
   one more index (name, value) when name is not NULL. */
static json_t *where(json_t *item, size_t oi, const char *name, size_t ix)
{
    json_t *id = json_object_get(item, "id");
    json_t *w = json_pack("{s:s%,s:I}", "item_id", json_is_string(id) ? json_string_value(id) : "",
                          json_string_length(id), "output_index", (json_int_t)oi);
    if (w && name && json_object_set_new(w, name, json_integer((json_int_t)ix))) {
        json_decref(w);
        w = NULL;
    }
    return w;
}

/* A new event body: base (a new reference, consumed) with key = v (v: a
   new reference, consumed). NULL without memory. */
static json_t *with(json_t *base, const char *key, json_t *v)
{
    if (base && v && !json_object_set_new(base, key, v))
        return base;
    if (!base || !v)
        json_decref(v);
    json_decref(base);
    return NULL;
}

/* Emits s (a JSON string) as events of type in pieces: each with the
   placing fields of w (borrowed) and "delta"; logprobs adds "logprobs": []
   as OpenAI's text deltas carry. An empty string sends no delta. */
static int emit_pieces(rp_t *r, const char *type, json_t *w, json_t *s, bool logprobs)
{
    const char *p = json_string_value(s);
    size_t len = json_string_length(s);
    for (size_t off = 0; off < len;) {
        size_t n = cut((const unsigned char *)p + off, len - off, r->piece);
        json_t *b = with(json_deep_copy(w), "delta", json_stringn(p + off, n));
        if (b && logprobs)
            b = with(b, "logprobs", json_array());
        int rc = emit(r, type, b);
        if (rc)
            return rc;
        off += n;
    }
    return 0;
}

/* A copy of o with key set to v (a new reference, consumed), or NULL. */
static json_t *copy_with(json_t *o, const char *key, json_t *v)
{
    return with(json_copy(o), key, v);
}

/* One content part of a message: added (no text), the text in pieces,
   its annotations, the text's done, the part's done. */
static int replay_part(rp_t *r, json_t *item, size_t oi, json_t *part, size_t ci)
{
    const char *t = json_string_value(json_object_get(part, "type"));
    bool text = t && !strcmp(t, "output_text") && json_is_string(json_object_get(part, "text"));
    bool refusal = t && !strcmp(t, "refusal") && json_is_string(json_object_get(part, "refusal"));
    const char *field = text ? "text" : "refusal";
    json_t *w = where(item, oi, "content_index", ci);
    json_t *head = !text && !refusal ? json_incref(part) : copy_with(part, field, json_string(""));
    json_t *annots = text ? json_object_get(part, "annotations") : NULL;
    if (head && json_is_array(annots))
        head = with(head, "annotations", json_array());
    int rc = emit(r, "response.content_part.added", with(json_deep_copy(w), "part", head));
    if (!rc && (text || refusal))
        rc = emit_pieces(r, text ? "response.output_text.delta" : "response.refusal.delta", w,
                         json_object_get(part, field), text);
    size_t k;
    json_t *an;
    json_array_foreach(json_is_array(annots) ? annots : NULL, k, an) {
        if (rc)
            break;
        json_t *b = with(json_deep_copy(w), "annotation_index", json_integer((json_int_t)k));
        rc = emit(r, "response.output_text.annotation.added", with(b, "annotation", json_incref(an)));
    }
    if (!rc && (text || refusal)) {
        json_t *b = with(json_deep_copy(w), field, json_incref(json_object_get(part, field)));
        if (b && text)
            b = with(b, "logprobs", json_array());
        rc = emit(r, text ? "response.output_text.done" : "response.refusal.done", b);
    }
    if (!rc)
        rc = emit(r, "response.content_part.done", with(json_deep_copy(w), "part", json_incref(part)));
    json_decref(w);
    return w ? rc : LLMC_ENOMEM;
}

/* One reasoning summary part: added (no text), text pieces, done, done. */
static int replay_summary(rp_t *r, json_t *item, size_t oi, json_t *part, size_t si)
{
    json_t *text = json_object_get(part, "text");
    json_t *w = where(item, oi, "summary_index", si);
    if (!w)
        return LLMC_ENOMEM;
    int rc = emit(r, "response.reasoning_summary_part.added",
                  with(json_deep_copy(w), "part",
                       json_is_string(text) ? copy_with(part, "text", json_string(""))
                                            : json_incref(part)));
    if (!rc && json_is_string(text))
        rc = emit_pieces(r, "response.reasoning_summary_text.delta", w, text, false);
    if (!rc && json_is_string(text))
        rc = emit(r, "response.reasoning_summary_text.done",
                  with(json_deep_copy(w), "text", json_incref(text)));
    if (!rc)
        rc = emit(r, "response.reasoning_summary_part.done",
                  with(json_deep_copy(w), "part", json_incref(part)));
    json_decref(w);
    return rc;
}

/* The item as response.output_item.added shows it: what its kind streams
   afterwards emptied, status "in_progress" where it has one. */
static json_t *item_head(json_t *item, const char *t)
{
    json_t *h = json_copy(item);
    if (h && json_object_get(h, "status"))
        h = with(h, "status", json_string("in_progress"));
    if (h && !strcmp(t, "message") && json_is_array(json_object_get(item, "content")))
        h = with(h, "content", json_array());
    if (h && !strcmp(t, "function_call") && json_is_string(json_object_get(item, "arguments")))
        h = with(h, "arguments", json_string(""));
    if (h && !strcmp(t, "reasoning") && json_is_array(json_object_get(item, "summary")))
        h = with(h, "summary", json_array());
    return h;
}

static int replay_item(rp_t *r, json_t *item, size_t oi)
{
    const char *t = json_string_value(json_object_get(item, "type"));
    t = t ? t : "";
    json_t *at = json_pack("{s:I}", "output_index", (json_int_t)oi);
    int rc = emit(r, "response.output_item.added", with(json_copy(at), "item", item_head(item, t)));
    json_t *parts = json_object_get(item, !strcmp(t, "reasoning") ? "summary" : "content");
    size_t i;
    json_t *part;
    if (!strcmp(t, "message") || !strcmp(t, "reasoning")) {
        json_array_foreach(json_is_array(parts) ? parts : NULL, i, part) {
            if (rc)
                break;
            if (json_is_object(part))
                rc = t[0] == 'm' ? replay_part(r, item, oi, part, i)
                                 : replay_summary(r, item, oi, part, i);
        }
    }
    json_t *args = json_object_get(item, "arguments");
    if (!rc && !strcmp(t, "function_call") && json_is_string(args)) {
        json_t *w = where(item, oi, NULL, 0);
        rc = w ? emit_pieces(r, "response.function_call_arguments.delta", w, args, false)
               : LLMC_ENOMEM;
        if (!rc)
            rc = emit(r, "response.function_call_arguments.done",
                      with(json_deep_copy(w), "arguments", json_incref(args)));
        json_decref(w);
    }
    if (!rc)
        rc = emit(r, "response.output_item.done", with(json_copy(at), "item", json_incref(item)));
    json_decref(at);
    return rc;
}

/* The response as the opening events show it: running, nothing out yet. */
static json_t *response_head(json_t *root)
{
    json_t *h = copy_with(root, "status", json_string("in_progress"));
    h = with(h, "output", json_array());
    if (h && json_object_get(root, "usage"))
        h = with(h, "usage", json_null());
    if (h && json_object_get(root, "completed_at"))
        h = with(h, "completed_at", json_null());
    return h;
}

static int replay_root(rp_t *r, json_t *root)
{
    json_t *output = json_object_get(root, "output");
    json_t *head = response_head(root);
    int rc = emit(r, "response.created", head ? json_pack("{s:O}", "response", head) : NULL);
    if (!rc)
        rc = emit(r, "response.in_progress", head ? json_pack("{s:O}", "response", head) : NULL);
    json_decref(head);
    size_t i;
    json_t *item;
    json_array_foreach(output, i, item) {
        if (rc)
            break;
        rc = replay_item(r, item, i);
    }
    if (!rc)
        rc = emit(r, "response.completed", json_pack("{s:O}", "response", root));
    return rc;
}

int llmc_resp_replay(const char *json, size_t len, size_t piece_bytes, char **out,
                     size_t *out_len)
{
    json_t *root = json_loadb(json ? json : "", len, JSON_ALLOW_NUL, NULL);
    if (!root)
        return LLMC_EJSON;
    json_t *output = json_object_get(root, "output");
    bool ok = json_is_object(root) && json_is_array(output);
    size_t i;
    json_t *item;
    json_array_foreach(ok ? output : NULL, i, item) {
        if (!json_is_object(item))
            ok = false;
    }
    if (!ok) {
        json_decref(root);
        return LLMC_EINVAL;
    }
    rp_t r = {.piece = piece_bytes ? piece_bytes : DEFAULT_PIECE};
    int rc = replay_root(&r, root);
    json_decref(root);
    if (rc) {
        free(r.p);
        return rc;
    }
    *out = r.p;
    *out_len = r.len;
    return 0;
}
