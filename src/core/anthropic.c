/*
 * anthropic.c: an Anthropic Messages event stream folded into one Message,
 * and back (llmc/anthropic.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Text, thinking and input fragments grow in buffers of our own and are
 *   set into the block once, at the result: appending to a jansson string
 *   copies it whole, which makes a long answer streamed a few bytes per
 *   event quadratic.
 * - A block's input comes from its input_json_delta fragments only when
 *   some came: the start's own input (a server tool's, sent whole) stays
 *   otherwise. The fragments are parsed at content_block_stop; JSON that
 *   does not parse makes the stream uncacheable rather than storing a
 *   tool call with a broken input.
 * - A delta type we do not know makes the stream uncacheable: a replay
 *   could not give it back. An event type we do not know is skipped, as
 *   Anthropic asks clients to do.
 * - message_delta's usage is merged member by member into message_start's
 *   (the delta carries output_tokens; message_start the input counts), and
 *   replay sends the full usage in both, so the official SDK's
 *   finalMessage() and our own assembler give the stored usage back.
 */
#include "llmc/anthropic.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llmc/error.h"

typedef struct buf {
    char *p;
    size_t len, cap;
} buf_t;

static int buf_add(buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return LLMC_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* ---- the assembler ---------------------------------------------------------- */

typedef struct block {
    json_t *o;                /* content_block_start's block (ours) */
    buf_t text, thinking, input;
    bool has_text, has_thinking, has_input, stopped;
} block_t;

struct llmc_anth_asm {
    json_t *msg;              /* message_start's message (ours), content emptied */
    block_t *b;
    size_t nb, capb;
    bool stopped;             /* message_stop seen */
    int err;                  /* sticky */
};

llmc_anth_asm_t *llmc_anth_asm_new(void)
{
    return calloc(1, sizeof(llmc_anth_asm_t));
}

void llmc_anth_asm_free(llmc_anth_asm_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nb; i++) {
        json_decref(a->b[i].o);
        free(a->b[i].text.p);
        free(a->b[i].thinking.p);
        free(a->b[i].input.p);
    }
    free(a->b);
    json_decref(a->msg);
    free(a);
}

/* A string member of o started in b (its value so far), marking it had. */
static int take_string(const json_t *o, const char *name, buf_t *b, bool *had)
{
    const json_t *v = json_object_get(o, name);
    if (!json_is_string(v))
        return 0;
    *had = true;
    return buf_add(b, json_string_value(v), json_string_length(v));
}

static int block_start(llmc_anth_asm_t *a, const json_t *ev)
{
    const json_t *idx = json_object_get(ev, "index"), *cb = json_object_get(ev, "content_block");
    if (!json_is_integer(idx) || json_integer_value(idx) != (json_int_t)a->nb ||
        !json_is_object(cb) || a->nb >= LLMC_ANTH_MAX_BLOCKS)
        return LLMC_EBADRESP;
    if (a->nb == a->capb) {
        size_t cap = a->capb ? a->capb * 2 : 4;
        block_t *p = realloc(a->b, cap * sizeof(*p));
        if (!p)
            return LLMC_ENOMEM;
        a->b = p;
        a->capb = cap;
    }
    block_t *b = &a->b[a->nb];
    memset(b, 0, sizeof(*b));
    if (!(b->o = json_deep_copy(cb)))
        return LLMC_ENOMEM;
    a->nb++;
    int rc = take_string(cb, "text", &b->text, &b->has_text);
    return rc ? rc : take_string(cb, "thinking", &b->thinking, &b->has_thinking);
}

/* The delta's string member name, appended to b; LLMC_EBADRESP when it is
   not a string. */
static int append(const json_t *delta, const char *name, buf_t *b, bool *had)
{
    const json_t *v = json_object_get(delta, name);
    if (!json_is_string(v))
        return LLMC_EBADRESP;
    *had = true;
    return buf_add(b, json_string_value(v), json_string_length(v));
}

static int block_delta(llmc_anth_asm_t *a, const json_t *ev)
{
    const json_t *idx = json_object_get(ev, "index"), *d = json_object_get(ev, "delta");
    if (!json_is_integer(idx) || json_integer_value(idx) < 0 ||
        (uint64_t)json_integer_value(idx) >= a->nb || !json_is_object(d))
        return LLMC_EBADRESP;
    block_t *b = &a->b[json_integer_value(idx)];
    const char *t = json_string_value(json_object_get(d, "type"));
    if (b->stopped || !t)
        return LLMC_EBADRESP;
    if (strcmp(t, "text_delta") == 0)
        return append(d, "text", &b->text, &b->has_text);
    if (strcmp(t, "thinking_delta") == 0)
        return append(d, "thinking", &b->thinking, &b->has_thinking);
    if (strcmp(t, "input_json_delta") == 0)
        return append(d, "partial_json", &b->input, &b->has_input);
    if (strcmp(t, "signature_delta") == 0) {
        json_t *s = json_object_get(d, "signature");
        return json_is_string(s) ? (json_object_set(b->o, "signature", s) ? LLMC_ENOMEM : 0)
                                 : LLMC_EBADRESP;
    }
    if (strcmp(t, "citations_delta") == 0) {
        json_t *c = json_object_get(d, "citation"), *arr = json_object_get(b->o, "citations");
        if (!c)
            return LLMC_EBADRESP;
        if (!json_is_array(arr)) {
            if (json_object_set_new(b->o, "citations", arr = json_array()))
                return LLMC_ENOMEM;
        }
        return json_array_append(arr, c) ? LLMC_ENOMEM : 0;
    }
    return LLMC_EBADRESP;
}

static int block_stop(llmc_anth_asm_t *a, const json_t *ev)
{
    const json_t *idx = json_object_get(ev, "index");
    if (!json_is_integer(idx) || json_integer_value(idx) < 0 ||
        (uint64_t)json_integer_value(idx) >= a->nb)
        return LLMC_EBADRESP;
    block_t *b = &a->b[json_integer_value(idx)];
    if (b->stopped)
        return LLMC_EBADRESP;
    b->stopped = true;
    if (!b->has_input)
        return 0;
    /* An empty input streamed as "" fragments is the empty object. */
    json_t *in = b->input.len ? json_loadb(b->input.p, b->input.len, 0, NULL) : json_object();
    if (!in)
        return LLMC_EBADRESP;
    return json_object_set_new(b->o, "input", in) ? LLMC_ENOMEM : 0;
}

/* Every member of src that is not null, set on dst. */
static int merge_non_null(json_t *dst, const json_t *src)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)src, k, v) {
        if (!json_is_null(v) && json_object_set(dst, k, v))
            return LLMC_ENOMEM;
    }
    return 0;
}

static int message_delta(llmc_anth_asm_t *a, const json_t *ev)
{
    const json_t *d = json_object_get(ev, "delta"), *u = json_object_get(ev, "usage");
    const char *k;
    json_t *v;
    if (d && !json_is_object(d))
        return LLMC_EBADRESP;
    /* stop_reason and stop_sequence: set as they come, nulls included. */
    json_object_foreach((json_t *)d, k, v) {
        if (json_object_set(a->msg, k, v))
            return LLMC_ENOMEM;
    }
    if (!json_is_object(u))
        return 0;
    json_t *mu = json_object_get(a->msg, "usage");
    if (!json_is_object(mu)) {
        if (json_object_set_new(a->msg, "usage", mu = json_object()))
            return LLMC_ENOMEM;
    }
    return merge_non_null(mu, u);
}

static int message_start(llmc_anth_asm_t *a, const json_t *ev)
{
    const json_t *m = json_object_get(ev, "message");
    if (a->msg || !json_is_object(m))
        return LLMC_EBADRESP;
    if (!(a->msg = json_deep_copy(m)))
        return LLMC_ENOMEM;
    return json_object_set_new(a->msg, "content", json_array()) ? LLMC_ENOMEM : 0;
}

static int add_event(llmc_anth_asm_t *a, const json_t *ev)
{
    const char *t = json_string_value(json_object_get(ev, "type"));
    if (!t)
        return LLMC_EBADRESP;
    if (strcmp(t, "error") == 0)
        return LLMC_EUPSTREAM;
    if (strcmp(t, "message_start") == 0)
        return message_start(a, ev);
    if (strcmp(t, "ping") == 0)
        return 0;
    bool known = !strcmp(t, "content_block_start") || !strcmp(t, "content_block_delta") ||
                 !strcmp(t, "content_block_stop") || !strcmp(t, "message_delta") ||
                 !strcmp(t, "message_stop");
    if (!known)
        return 0;
    if (!a->msg)
        return LLMC_EBADRESP;
    if (strcmp(t, "content_block_start") == 0)
        return block_start(a, ev);
    if (strcmp(t, "content_block_delta") == 0)
        return block_delta(a, ev);
    if (strcmp(t, "content_block_stop") == 0)
        return block_stop(a, ev);
    if (strcmp(t, "message_delta") == 0)
        return message_delta(a, ev);
    a->stopped = true;
    return 0;
}

int llmc_anth_asm_add(llmc_anth_asm_t *a, const char *data, size_t len)
{
    if (a->err || a->stopped)
        return a->err;
    json_t *ev = json_loadb(data, len, 0, NULL);
    int rc = json_is_object(ev) ? add_event(a, ev) : LLMC_EJSON;
    json_decref(ev);
    a->err = rc;
    return rc;
}

bool llmc_anth_asm_complete(const llmc_anth_asm_t *a)
{
    if (a->err || !a->msg || !a->stopped)
        return false;
    for (size_t i = 0; i < a->nb; i++)
        if (!a->b[i].stopped)
            return false;
    return true;
}

/* Block b as it stands: its start with the text so far set in. */
static json_t *block_result(const block_t *b)
{
    json_t *o = json_deep_copy(b->o);
    if (!o)
        return NULL;
    if ((b->has_text && json_object_set_new(o, "text", json_stringn(b->text.p ? b->text.p : "",
                                                                     b->text.len))) ||
        (b->has_thinking &&
         json_object_set_new(o, "thinking",
                             json_stringn(b->thinking.p ? b->thinking.p : "", b->thinking.len)))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int llmc_anth_asm_result(llmc_anth_asm_t *a, char **json, size_t *len)
{
    if (a->err)
        return a->err;
    if (!a->msg)
        return LLMC_EINVAL;
    json_t *m = json_deep_copy(a->msg), *content = json_array();
    int rc = m && content ? 0 : LLMC_ENOMEM;
    for (size_t i = 0; rc == 0 && i < a->nb; i++) {
        json_t *o = block_result(&a->b[i]);
        rc = o && json_array_append_new(content, o) == 0 ? 0 : LLMC_ENOMEM;
    }
    if (rc == 0 && json_object_set_new(m, "content", content) == 0) {
        content = NULL;
        *json = json_dumps(m, JSON_COMPACT);
        rc = *json ? 0 : LLMC_ENOMEM;
        if (*json)
            *len = strlen(*json);
    } else {
        rc = LLMC_ENOMEM;
    }
    json_decref(content);
    json_decref(m);
    return rc;
}

/* ---- replay ----------------------------------------------------------------------- */

#define DEFAULT_PIECE 24

typedef struct rp {
    buf_t out;
    size_t piece;
    int rc;
} rp_t;

/* One event: "event: type\ndata: <o>\n\n". Takes o. */
static void emit(rp_t *r, const char *type, json_t *o)
{
    char *d = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (r->rc == 0 && !d)
        r->rc = LLMC_ENOMEM;
    if (r->rc == 0)
        r->rc = buf_add(&r->out, "event: ", 7);
    if (r->rc == 0)
        r->rc = buf_add(&r->out, type, strlen(type));
    if (r->rc == 0)
        r->rc = buf_add(&r->out, "\ndata: ", 7);
    if (r->rc == 0)
        r->rc = buf_add(&r->out, d, strlen(d));
    if (r->rc == 0)
        r->rc = buf_add(&r->out, "\n\n", 2);
    free(d);
}

/* Bytes the next piece of s (len) takes: about want, ending at a UTF-8
   character boundary; never zero unless len is. */
static size_t cut(const unsigned char *s, size_t len, size_t want)
{
    if (len <= want)
        return len;
    size_t n = want;
    while (n < len && (s[n] & 0xC0) == 0x80)
        n++;
    return n;
}

/* content_block_delta events of type dtype carrying s (len) under field, in
   pieces of about piece bytes (SIZE_MAX: whole). Nothing for "". */
static void emit_pieces(rp_t *r, size_t index, const char *dtype, const char *field,
                        const char *s, size_t len, size_t piece)
{
    for (size_t off = 0; off < len && r->rc == 0;) {
        size_t n = cut((const unsigned char *)s + off, len - off, piece);
        emit(r, "content_block_delta",
             json_pack("{s:s,s:I,s:{s:s,s:s%}}", "type", "content_block_delta", "index",
                       (json_int_t)index, "delta", "type", dtype, field, s + off, n));
        off += n;
    }
}

static void replay_block(rp_t *r, size_t index, const json_t *blk)
{
    json_t *start = json_deep_copy(blk);
    if (!start) {
        r->rc = LLMC_ENOMEM;
        return;
    }
    const json_t *text = json_object_get(blk, "text"), *thinking = json_object_get(blk, "thinking");
    const json_t *sig = json_object_get(blk, "signature"), *input = json_object_get(blk, "input");
    const json_t *cites = json_object_get(blk, "citations");
    bool cite_deltas = json_is_array(cites) && json_array_size(cites) > 0;
    char *in_text = json_is_object(input) && json_object_size(input) > 0
                        ? json_dumps(input, JSON_COMPACT) : NULL;
    if (json_is_string(text))
        json_object_set_new(start, "text", json_string(""));
    if (json_is_string(thinking))
        json_object_set_new(start, "thinking", json_string(""));
    if (json_is_string(sig))
        json_object_set_new(start, "signature", json_string(""));
    if (in_text)
        json_object_set_new(start, "input", json_object());
    if (cite_deltas)
        json_object_set_new(start, "citations", json_array());
    emit(r, "content_block_start",
         json_pack("{s:s,s:I,s:o}", "type", "content_block_start", "index", (json_int_t)index,
                   "content_block", start));
    if (json_is_string(thinking))
        emit_pieces(r, index, "thinking_delta", "thinking", json_string_value(thinking),
                    json_string_length(thinking), r->piece);
    if (json_is_string(sig) && json_string_length(sig) > 0)
        emit_pieces(r, index, "signature_delta", "signature", json_string_value(sig),
                    json_string_length(sig), SIZE_MAX);
    if (json_is_string(text))
        emit_pieces(r, index, "text_delta", "text", json_string_value(text),
                    json_string_length(text), r->piece);
    for (size_t i = 0; cite_deltas && i < json_array_size(cites); i++)
        emit(r, "content_block_delta",
             json_pack("{s:s,s:I,s:{s:s,s:O}}", "type", "content_block_delta", "index",
                       (json_int_t)index, "delta", "type", "citations_delta", "citation",
                       json_array_get(cites, i)));
    if (in_text)
        emit_pieces(r, index, "input_json_delta", "partial_json", in_text, strlen(in_text),
                    r->piece);
    free(in_text);
    emit(r, "content_block_stop",
         json_pack("{s:s,s:I}", "type", "content_block_stop", "index", (json_int_t)index));
}

/* message_start's message: m with no content and no stop yet. */
static json_t *start_message(const json_t *m)
{
    json_t *s = json_deep_copy(m);
    if (!s)
        return NULL;
    json_object_set_new(s, "content", json_array());
    if (json_object_get(s, "stop_reason"))
        json_object_set_new(s, "stop_reason", json_null());
    if (json_object_get(s, "stop_sequence"))
        json_object_set_new(s, "stop_sequence", json_null());
    return s;
}

static json_t *final_delta(const json_t *m)
{
    json_t *d = json_object(), *o = json_pack("{s:s,s:o}", "type", "message_delta", "delta", d);
    const json_t *sr = json_object_get(m, "stop_reason"), *ss = json_object_get(m, "stop_sequence");
    const json_t *u = json_object_get(m, "usage");
    if (!o)
        return NULL;
    if (sr)
        json_object_set(d, "stop_reason", (json_t *)sr);
    if (ss)
        json_object_set(d, "stop_sequence", (json_t *)ss);
    if (json_is_object(u))
        json_object_set(o, "usage", (json_t *)u);
    return o;
}

int llmc_anth_replay(const char *json, size_t len, size_t piece_bytes, char **out,
                     size_t *out_len)
{
    json_t *m = json_loadb(json, len, 0, NULL);
    if (!m)
        return LLMC_EJSON;
    const json_t *content = json_object_get(m, "content");
    size_t i;
    json_t *blk;
    int bad = !json_is_object(m) || !json_is_array(content);
    json_array_foreach(content, i, blk) {
        if (!json_is_object(blk))
            bad = 1;
    }
    if (bad) {
        json_decref(m);
        return LLMC_EINVAL;
    }
    rp_t r = {.piece = piece_bytes ? piece_bytes : DEFAULT_PIECE};
    emit(&r, "message_start",
         json_pack("{s:s,s:o}", "type", "message_start", "message", start_message(m)));
    emit(&r, "ping", json_pack("{s:s}", "type", "ping"));
    json_array_foreach(content, i, blk) {
        if (r.rc)
            break;
        replay_block(&r, i, blk);
    }
    emit(&r, "message_delta", final_delta(m));
    emit(&r, "message_stop", json_pack("{s:s}", "type", "message_stop"));
    json_decref(m);
    if (r.rc) {
        free(r.out.p);
        return r.rc;
    }
    *out = r.out.p;
    *out_len = r.out.len;
    return 0;
}
