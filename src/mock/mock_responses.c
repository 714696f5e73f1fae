/*
 * mock/mock_responses.c: the mock's Responses API (POST /v1/responses),
 * plain and streamed, as pure functions of the request (mock_int.h).
 *
 * What it answers:
 * - "input" is a string or a list of items (messages whose content is a
 *   string or input_text parts, function_call_output items); the last user
 *   text is answered, or, when a function_call_output comes after it, that
 *   output ("tool result: ..."): the second step of a tool loop.
 * - With function "tools" (and tool_choice not "none") and no tool output
 *   after the last user message, the answer is one function_call item to
 *   the first tool (or the one tool_choice names), its arguments made from
 *   the tool's parameter schema (llmc__mock_schema_value).
 * - text.format {"type": "json_schema", "schema": ...}: the text is a JSON
 *   document that fits the schema.
 * - max_output_tokens below the answer's word count cuts the text there and
 *   the response is "incomplete" (reason max_output_tokens), as OpenAI's
 *   is; a stream then ends with response.incomplete, not response.completed.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The stream is written here from the response object by this file's own
 *   code, not by the gateway's replay (core/responses_stream.c): the mock
 *   stands for OpenAI, and a test of the gateway against its own writer
 *   could not catch a shape both got wrong. The event order and fields
 *   follow what api.openai.com sends (event: lines, sequence_number from 0,
 *   logprobs on text deltas).
 * - Token counts are words, as for chat, under this API's names.
 */
#include "mock/mock_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"

/* Text deltas of whole words, at least a 200th of the text each. */
#define STREAM_PIECES 200

/* ---- the request ------------------------------------------------------------------- */

typedef struct rq {
    char *prompt;            /* what is answered (malloc'd) */
    size_t prompt_len;
    size_t in_words;
    const json_t *tool;      /* the function tool to call, or NULL */
    const json_t *schema;    /* text.format's json_schema, or NULL */
    json_int_t max_words;    /* max_output_tokens, or -1 */
} rq_t;

static size_t words_of(const char *s, size_t n)
{
    return llmc__mock_words(s ? s : "", s ? n : 0);
}

/* The function tool the answer calls: tool_choice's, or the first. */
static const json_t *pick_tool(const json_t *req)
{
    const json_t *tools = json_object_get(req, "tools"), *choice = json_object_get(req, "tool_choice");
    const char *want = json_string_value(json_object_get(choice, "name"));
    if (json_is_string(choice) && !strcmp(json_string_value(choice), "none"))
        return NULL;
    size_t i;
    json_t *t;
    json_array_foreach(json_is_array(tools) ? tools : NULL, i, t) {
        const char *type = json_string_value(json_object_get(t, "type"));
        const char *name = json_string_value(json_object_get(t, "name"));
        if (type && !strcmp(type, "function") && name && (!want || !strcmp(want, name)))
            return t;
    }
    return NULL;
}

/* Replaces *dst by text (malloc'd, len n). */
static void take(char **dst, size_t *dlen, char *text, size_t n)
{
    free(*dst);
    *dst = text;
    *dlen = n;
}

static int read_request(const llmc__mock_ctx_t *c, rq_t *q, char *err, size_t errlen)
{
    const json_t *in = json_object_get(c->req, "input");
    const json_t *instr = json_object_get(c->req, "instructions");
    bool tool_output_last = false;
    size_t i;
    json_t *item;

    memset(q, 0, sizeof(*q));
    if (json_is_string(in)) {
        q->prompt = strndup(json_string_value(in), json_string_length(in));
        q->prompt_len = json_string_length(in);
        q->in_words = words_of(q->prompt, q->prompt_len);
    } else if (json_is_array(in) && json_array_size(in) > 0) {
        json_array_foreach(in, i, item) {
            const char *type = json_string_value(json_object_get(item, "type"));
            const char *role = json_string_value(json_object_get(item, "role"));
            size_t n = 0;
            char *t;
            if (type && !strcmp(type, "function_call_output")) {
                const json_t *o = json_object_get(item, "output");
                t = llmc__mock_content(o, &n);
                char *p = t ? malloc(n + sizeof("tool result: ")) : NULL;
                if (p)
                    snprintf(p, n + sizeof("tool result: "), "tool result: %s", t);
                free(t);
                t = p;
                n += p ? sizeof("tool result: ") - 1 : 0;
                tool_output_last = true;
            } else {
                t = llmc__mock_content(json_object_get(item, "content"), &n);
            }
            if (!t)
                return LLMC_ENOMEM;
            q->in_words += words_of(t, n);
            bool user = role && !strcmp(role, "user");
            if (user)
                tool_output_last = false;
            if (user || (type && !strcmp(type, "function_call_output")))
                take(&q->prompt, &q->prompt_len, t, n);
            else
                free(t);
        }
    } else {
        snprintf(err, errlen, "Missing required parameter: 'input'.");
        return LLMC_EINVAL;
    }
    if (json_is_string(instr))
        q->in_words += words_of(json_string_value(instr), json_string_length(instr));
    const json_t *fmt = json_object_get(json_object_get(c->req, "text"), "format");
    const char *ft = json_string_value(json_object_get(fmt, "type"));
    if (ft && !strcmp(ft, "json_schema"))
        q->schema = json_object_get(fmt, "schema");
    q->tool = tool_output_last ? NULL : pick_tool(c->req);
    json_t *mx = json_object_get(c->req, "max_output_tokens");
    q->max_words = json_is_integer(mx) ? json_integer_value(mx) : -1;
    return 0;
}

/* ---- the response object ---------------------------------------------------------- */

static void tag_of(const llmc__mock_ctx_t *c, char tag[9])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < 4; i++) {
        tag[2 * i] = digits[c->digest[i] >> 4];
        tag[2 * i + 1] = digits[c->digest[i] & 15];
    }
    tag[8] = '\0';
}

/* The first n words of text (len), in place; returns the new length. */
static size_t cut_words(char *text, size_t len, json_int_t n)
{
    size_t i = 0;
    for (json_int_t w = 0; i < len; w++) {
        while (i < len && text[i] == ' ')
            i++;
        if (w == n || i == len)
            break;
        while (i < len && text[i] != ' ')
            i++;
    }
    while (i > 0 && text[i - 1] == ' ')
        i--;
    text[i] = '\0';
    return i;
}

/* The output item: a function call, or the assistant's message. *incomplete
   when max_output_tokens cut the text; *out_words its word count. */
static json_t *output_item(const llmc__mock_ctx_t *c, rq_t *q, const char *h, bool *incomplete,
                           size_t *out_words)
{
    char tag[9], id[48];
    tag_of(c, tag);
    if (q->tool) {
        json_t *args = llmc__mock_schema_value(json_object_get(q->tool, "parameters"), tag);
        char *a = args ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        json_decref(args);
        if (!a)
            return NULL;
        char call_id[48];
        snprintf(id, sizeof(id), "fc_mock%s", h);
        snprintf(call_id, sizeof(call_id), "call_mock%s", h);
        *out_words = words_of(a, strlen(a));
        json_t *it = json_pack("{s:s,s:s,s:s,s:s,s:s,s:O}", "type", "function_call", "id", id,
                               "status", "completed", "arguments", a, "call_id", call_id, "name",
                               json_object_get(q->tool, "name"));
        free(a);
        return it;
    }
    size_t len = 0;
    char *text;
    if (q->schema) {
        json_t *v = llmc__mock_schema_value(q->schema, tag);
        text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        json_decref(v);
        len = text ? strlen(text) : 0;
    } else {
        const char *p = q->prompt ? q->prompt : "(no user message)";
        text = llmc__mock_reply(c, "response", p, q->prompt ? q->prompt_len : strlen(p), &len);
    }
    if (!text)
        return NULL;
    *out_words = words_of(text, len);
    if (q->max_words >= 0 && (size_t)q->max_words < *out_words) {
        len = cut_words(text, len, q->max_words);
        *out_words = (size_t)q->max_words;
        *incomplete = true;
    }
    snprintf(id, sizeof(id), "msg_mock%s", h);
    json_t *it = json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:s%,s:[]}]}", "type", "message", "id", id,
                           "status", *incomplete ? "incomplete" : "completed", "role", "assistant",
                           "content", "type", "output_text", "text", text, len, "annotations");
    free(text);
    return it;
}

static json_t *response_object(const llmc__mock_ctx_t *c, rq_t *q)
{
    static const char digits[] = "0123456789abcdef";
    char h[17], id[48];
    for (size_t i = 0; i < 8; i++) {
        h[2 * i] = digits[c->digest[i] >> 4];
        h[2 * i + 1] = digits[c->digest[i] & 15];
    }
    h[16] = '\0';
    bool incomplete = false;
    size_t out_words = 0;
    json_t *item = output_item(c, q, h, &incomplete, &out_words);
    if (!item)
        return NULL;
    snprintf(id, sizeof(id), "resp_mock%s", h);
    const json_t *store = json_object_get(c->req, "store");
    const json_t *instr = json_object_get(c->req, "instructions");
    const char *model = json_string_value(json_object_get(c->req, "model"));
    return json_pack(
        "{s:s,s:s,s:I,s:s,s:n,s:o,s:O?,s:s,s:[o],s:b,s:n,s:b,s:{s:I,s:{s:I},s:I,s:{s:I},s:I}}",
        "id", id, "object", "response", "created_at", (json_int_t)c->now_s, "status",
        incomplete ? "incomplete" : "completed", "error", "incomplete_details",
        incomplete ? json_pack("{s:s}", "reason", "max_output_tokens") : json_null(),
        "instructions", json_is_string(instr) ? instr : NULL, "model", model ? model : "mock-model",
        "output", item, "parallel_tool_calls", 1, "previous_response_id", "store",
        store ? json_is_true(store) : 1, "usage", "input_tokens", (json_int_t)q->in_words,
        "input_tokens_details", "cached_tokens", (json_int_t)0, "output_tokens",
        (json_int_t)out_words, "output_tokens_details", "reasoning_tokens", (json_int_t)0,
        "total_tokens", (json_int_t)(q->in_words + out_words));
}

/* ---- the event stream ------------------------------------------------------------- */

typedef struct ev {
    char *p;
    size_t len, cap;
    size_t *cuts;
    size_t ncuts, capcuts;
    json_int_t seq;
    bool oom;
} ev_t;

static void put(ev_t *s, const char *b, size_t n)
{
    if (s->oom)
        return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *p = realloc(s->p, cap);
        if (!p) {
            s->oom = true;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, b, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void cut_here(ev_t *s, size_t at)
{
    if (s->ncuts == s->capcuts) {
        size_t cap = s->capcuts ? s->capcuts * 2 : 64;
        size_t *p = realloc(s->cuts, cap * sizeof(*p));
        if (!p) {
            s->oom = true;
            return;
        }
        s->cuts = p;
        s->capcuts = cap;
    }
    s->cuts[s->ncuts++] = at;
}

/* One event: "event: type", then the data {type, sequence_number, ...body}
   (body: a new reference, consumed), then a pause point. */
static void emit(ev_t *s, const char *type, json_t *body)
{
    json_t *o = body ? json_pack("{s:s,s:I}", "type", type, "sequence_number", s->seq++) : NULL;
    char *d = o && !json_object_update(o, body) ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    json_decref(body);
    if (!d) {
        s->oom = true;
        return;
    }
    put(s, "event: ", 7);
    put(s, type, strlen(type));
    put(s, "\ndata: ", 7);
    put(s, d, strlen(d));
    put(s, "\n\n", 2);
    free(d);
    cut_here(s, s->len);
}

/* End of the next delta: whole words, at least min bytes. */
static size_t piece_end(const char *t, size_t len, size_t off, size_t min)
{
    size_t i = off;
    for (;;) {
        while (i < len && t[i] != ' ')
            i++;
        while (i < len && t[i] == ' ')
            i++;
        if (i >= len || i - off >= min)
            return i;
    }
}

static void stream_message(ev_t *s, json_t *item, json_int_t oi)
{
    json_t *id = json_object_get(item, "id");
    json_t *part = json_array_get(json_object_get(item, "content"), 0);
    json_t *text = json_object_get(part, "text");
    const char *t = json_string_value(text);
    size_t len = json_string_length(text), min = len / STREAM_PIECES;
    emit(s, "response.output_item.added",
         json_pack("{s:I,s:{s:O,s:s,s:s,s:[],s:s}}", "output_index", oi, "item", "id", id, "type",
                   "message", "status", "in_progress", "content", "role", "assistant"));
    emit(s, "response.content_part.added",
         json_pack("{s:O,s:I,s:i,s:{s:s,s:[],s:[],s:s}}", "item_id", id, "output_index", oi,
                   "content_index", 0, "part", "type", "output_text", "annotations", "logprobs",
                   "text", ""));
    for (size_t off = 0; off < len && !s->oom;) {
        size_t end = piece_end(t, len, off, min);
        emit(s, "response.output_text.delta",
             json_pack("{s:O,s:I,s:i,s:s%,s:[]}", "item_id", id, "output_index", oi,
                       "content_index", 0, "delta", t + off, end - off, "logprobs"));
        off = end;
    }
    emit(s, "response.output_text.done",
         json_pack("{s:O,s:I,s:i,s:O,s:[]}", "item_id", id, "output_index", oi, "content_index", 0,
                   "text", text, "logprobs"));
    emit(s, "response.content_part.done",
         json_pack("{s:O,s:I,s:i,s:O}", "item_id", id, "output_index", oi, "content_index", 0,
                   "part", part));
}

static void stream_call(ev_t *s, json_t *item, json_int_t oi)
{
    json_t *id = json_object_get(item, "id"), *args = json_object_get(item, "arguments");
    const char *a = json_string_value(args);
    size_t len = json_string_length(args);
    emit(s, "response.output_item.added",
         json_pack("{s:I,s:{s:O,s:s,s:s,s:s,s:O,s:O}}", "output_index", oi, "item", "id", id,
                   "type", "function_call", "status", "in_progress", "arguments", "", "call_id",
                   json_object_get(item, "call_id"), "name", json_object_get(item, "name")));
    for (size_t off = 0; off < len && !s->oom; off += 8) /* arguments come in small bits */
        emit(s, "response.function_call_arguments.delta",
             json_pack("{s:O,s:I,s:s%}", "item_id", id, "output_index", oi, "delta", a + off,
                       len - off < 8 ? len - off : 8));
    emit(s, "response.function_call_arguments.done",
         json_pack("{s:O,s:I,s:O}", "item_id", id, "output_index", oi, "arguments", args));
}

/* mock.split = "bytes": cuts every 1 to 7 bytes instead, from a generator
   seeded by the request so runs repeat. */
static void split_bytes(ev_t *s, const unsigned char *digest)
{
    uint32_t x = (uint32_t)digest[0] << 24 | (uint32_t)digest[1] << 16 |
                 (uint32_t)digest[2] << 8 | digest[3] | 1u;
    s->ncuts = 0;
    for (size_t at = 0; at < s->len && !s->oom;) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        at += 1 + x % 7;
        cut_here(s, at < s->len ? at : s->len);
    }
}

static int stream_of(const llmc__mock_ctx_t *c, json_t *r, llmc__mock_out_t *out)
{
    ev_t s = {0};
    json_t *head = json_deep_copy(r);
    if (head) {
        json_object_set_new(head, "status", json_string("in_progress"));
        json_object_set_new(head, "output", json_array());
        json_object_set_new(head, "usage", json_null());
        json_object_set_new(head, "incomplete_details", json_null());
    }
    emit(&s, "response.created", head ? json_pack("{s:O}", "response", head) : NULL);
    emit(&s, "response.in_progress", head ? json_pack("{s:O}", "response", head) : NULL);
    json_decref(head);
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(r, "output"), i, item) {
        const char *t = json_string_value(json_object_get(item, "type"));
        bool msg = t && !strcmp(t, "message");
        if (!msg)
            stream_call(&s, item, (json_int_t)i);
        else
            stream_message(&s, item, (json_int_t)i);
        emit(&s, "response.output_item.done", json_pack("{s:I,s:O}", "output_index",
                                                         (json_int_t)i, "item", item));
    }
    const char *st = json_string_value(json_object_get(r, "status"));
    emit(&s, !strcmp(st, "completed") ? "response.completed" : "response.incomplete",
         json_pack("{s:O}", "response", r));
    if (c->split_bytes)
        split_bytes(&s, c->digest);
    if (s.oom) {
        free(s.p);
        free(s.cuts);
        return LLMC_ENOMEM;
    }
    out->body = s.p;
    out->len = s.len;
    out->cuts = s.cuts;
    out->ncuts = s.ncuts;
    return 0;
}

int llmc__mock_responses(const llmc__mock_ctx_t *c, bool stream, llmc__mock_out_t *out,
                         char *err, size_t errlen)
{
    rq_t q;
    memset(out, 0, sizeof(*out));
    int rc = read_request(c, &q, err, errlen);
    json_t *r = rc ? NULL : response_object(c, &q);
    free(q.prompt);
    if (rc)
        return rc;
    if (!r)
        return LLMC_ENOMEM;
    if (stream) {
        rc = stream_of(c, r, out);
    } else {
        out->body = json_dumps(r, JSON_COMPACT);
        out->len = out->body ? strlen(out->body) : 0;
        rc = out->body ? 0 : LLMC_ENOMEM;
    }
    json_decref(r);
    return rc;
}
