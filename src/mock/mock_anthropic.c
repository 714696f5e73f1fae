/*
 * mock/mock_anthropic.c: the mock model's Anthropic Messages answers
 * (POST /v1/messages), plain and streamed, as pure functions of the request
 * (see mock_int.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Like the OpenAI answers, the text carries a tag from the request's
 *   digest, so equal requests get equal answers and any difference another.
 * - A request with "tools" (and tool_choice not "none") is answered with a
 *   text block and a tool_use block calling the first tool, unless its last
 *   user turn already carries a tool_result (then only text): the two turns
 *   of a tool loop. "thinking": {"type": "enabled"} adds a thinking block
 *   first, with a signature. What the blocks say is deterministic too.
 * - The stream is exactly what the plain answer folds from: message_start
 *   holds the plain Message with no content, no stop and output_tokens 1,
 *   message_delta the stop and the full output count. A tool's input is
 *   streamed in two input_json_delta fragments, so a client (or the
 *   gateway) must join them before parsing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "mock/mock_int.h"

static void hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Words in s (runs of non-space): the mock's token count, as for chat. */
static size_t count_words(const char *s)
{
    size_t n = 0;
    bool in = false;
    for (; *s; s++) {
        bool sp = *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r';
        n += !sp && !in;
        in = !sp;
    }
    return n;
}

/* The text of a content (a string, or the text of its text blocks), and
   whether it holds a tool_result block. malloc'd. */
static char *content_text(const json_t *content, bool *tool_result)
{
    size_t i;
    json_t *blk;
    if (json_is_string(content))
        return strdup(json_string_value(content));
    size_t n = 1;
    json_array_foreach(content, i, blk) {
        n += json_string_length(json_object_get(blk, "text")) + 1;
        const char *t = json_string_value(json_object_get(blk, "type"));
        if (t && strcmp(t, "tool_result") == 0)
            *tool_result = true;
    }
    char *s = calloc(1, n), *p = s;
    json_array_foreach(content, i, blk) {
        const json_t *t = json_object_get(blk, "text");
        if (s && json_is_string(t))
            p += sprintf(p, "%s%s", p == s ? "" : " ", json_string_value(t));
    }
    return s;
}

/* The Message a request gets (the plain answer); NULL with err set. */
static json_t *message(const llmc__mock_ctx_t *c, char *err, size_t errlen)
{
    const json_t *msgs = json_object_get(c->req, "messages"), *m;
    const char *model = json_string_value(json_object_get(c->req, "model"));
    size_t i, in_words = 0;
    char *last = NULL, tag[17], id[40];
    bool tool_result = false;

    if (!model || !json_is_array(msgs) || json_array_size(msgs) == 0 ||
        !json_is_integer(json_object_get(c->req, "max_tokens"))) {
        snprintf(err, errlen, "model, messages and max_tokens are required");
        return NULL;
    }
    json_array_foreach(msgs, i, m) {
        bool tr = false;
        char *t = content_text(json_object_get(m, "content"), &tr);
        if (!t)
            continue;
        in_words += count_words(t);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role && strcmp(role, "user") == 0) {
            free(last);
            last = t;
            tool_result = tr;
        } else {
            free(t);
        }
    }
    hex(c->digest, 8, tag);
    snprintf(id, sizeof(id), "msg_mock%s", tag);
    tag[8] = '\0';
    char *text = NULL;
    if (asprintf(&text, "Mock message #%s to: %s", tag, last ? last : "(no user message)") < 0)
        text = NULL;
    free(last);
    json_t *content = json_array();
    const json_t *th = json_object_get(c->req, "thinking");
    const char *tht = json_string_value(json_object_get(th, "type"));
    if (tht && strcmp(tht, "enabled") == 0) {
        char think[96], sig[80];
        snprintf(think, sizeof(think), "The user wants an answer. Mock thinking #%s.", tag);
        hex(c->digest + 8, 24, sig + 4);
        memcpy(sig, "sig_", 4);
        json_array_append_new(content, json_pack("{s:s,s:s,s:s}", "type", "thinking", "thinking",
                                                 think, "signature", sig));
    }
    json_array_append_new(content, json_pack("{s:s,s:s?}", "type", "text", "text", text));
    const json_t *tools = json_object_get(c->req, "tools");
    const char *choice = json_string_value(json_object_get(json_object_get(c->req, "tool_choice"),
                                                           "type"));
    bool call = json_is_array(tools) && json_array_size(tools) > 0 && !tool_result &&
                !(choice && strcmp(choice, "none") == 0);
    const char *tool = call ? json_string_value(json_object_get(json_array_get(tools, 0), "name"))
                            : NULL;
    if (tool) {
        char tid[40];
        snprintf(tid, sizeof(tid), "toolu_mock%s", tag);
        json_array_append_new(content,
                              json_pack("{s:s,s:s,s:s,s:{s:s,s:i}}", "type", "tool_use", "id", tid,
                                        "name", tool, "input", "query", text ? text : "",
                                        "count", 3));
    }
    size_t out_words = 0;
    json_array_foreach(content, i, m) {
        const char *t = json_string_value(json_object_get(m, "text"));
        out_words += t ? count_words(t) : 5;
    }
    free(text);
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:n,s:{s:I,s:I,s:I,s:I}}", "id", id, "type",
                     "message", "role", "assistant", "model", model, "content", content,
                     "stop_reason", tool ? "tool_use" : "end_turn", "stop_sequence", "usage",
                     "input_tokens", (json_int_t)in_words, "cache_creation_input_tokens",
                     (json_int_t)0, "cache_read_input_tokens", (json_int_t)0, "output_tokens",
                     (json_int_t)out_words);
}

/* ---- the stream ---------------------------------------------------------------- */

typedef struct ev {
    char *p;
    size_t len, cap;
    size_t *cuts;
    size_t ncuts, capcuts;
    bool oom;
} ev_t;

static void add(ev_t *s, const char *t, size_t n)
{
    if (s->oom)
        return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
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
    memcpy(s->p + s->len, t, n);
    s->len += n;
    s->p[s->len] = '\0';
}

/* One event, named by its data's type, and a pause after it. Takes o. */
static void event(ev_t *s, json_t *o)
{
    char *d = o ? json_dumps(o, JSON_COMPACT) : NULL;
    const char *type = json_string_value(json_object_get(o, "type"));
    if (!d || !type) {
        s->oom = true;
    } else {
        add(s, "event: ", 7);
        add(s, type, strlen(type));
        add(s, "\ndata: ", 7);
        add(s, d, strlen(d));
        add(s, "\n\n", 2);
    }
    free(d);
    json_decref(o);
    if (s->oom)
        return;
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
    s->cuts[s->ncuts++] = s->len;
}

static void delta(ev_t *s, size_t index, const char *type, const char *field, const char *v,
                  size_t n)
{
    event(s, json_pack("{s:s,s:I,s:{s:s,s:s%}}", "type", "content_block_delta", "index",
                       (json_int_t)index, "delta", "type", type, field, v, n));
}

/* A text in pieces of whole words. */
static void words(ev_t *s, size_t index, const char *type, const char *field, const char *t)
{
    size_t len = strlen(t);
    for (size_t off = 0; off < len;) {
        size_t end = off;
        while (end < len && t[end] != ' ')
            end++;
        while (end < len && t[end] == ' ')
            end++;
        delta(s, index, type, field, t + off, end - off);
        off = end;
    }
}

static void block(ev_t *s, size_t index, const json_t *b)
{
    const char *type = json_string_value(json_object_get(b, "type"));
    json_t *start = json_deep_copy(b);
    if (strcmp(type, "text") == 0)
        json_object_set_new(start, "text", json_string(""));
    else if (strcmp(type, "thinking") == 0) {
        json_object_set_new(start, "thinking", json_string(""));
        json_object_set_new(start, "signature", json_string(""));
    } else if (strcmp(type, "tool_use") == 0)
        json_object_set_new(start, "input", json_object());
    event(s, json_pack("{s:s,s:I,s:o}", "type", "content_block_start", "index", (json_int_t)index,
                       "content_block", start));
    if (strcmp(type, "text") == 0) {
        words(s, index, "text_delta", "text", json_string_value(json_object_get(b, "text")));
    } else if (strcmp(type, "thinking") == 0) {
        words(s, index, "thinking_delta", "thinking",
              json_string_value(json_object_get(b, "thinking")));
        const char *sig = json_string_value(json_object_get(b, "signature"));
        delta(s, index, "signature_delta", "signature", sig, strlen(sig));
    } else {
        char *in = json_dumps(json_object_get(b, "input"), JSON_COMPACT);
        size_t n = in ? strlen(in) : 0, half = n / 2;
        if (!in)
            s->oom = true;
        delta(s, index, "input_json_delta", "partial_json", "", 0);
        delta(s, index, "input_json_delta", "partial_json", in ? in : "", half);
        delta(s, index, "input_json_delta", "partial_json", in ? in + half : "", n - half);
        free(in);
    }
    event(s, json_pack("{s:s,s:I}", "type", "content_block_stop", "index", (json_int_t)index));
}

static int stream(json_t *m, llmc__mock_out_t *out)
{
    ev_t s = {0};
    json_t *start = json_deep_copy(m), *content = json_object_get(m, "content"), *b;
    json_t *usage = json_object_get(m, "usage");
    size_t i;
    json_object_set_new(start, "content", json_array());
    json_object_set_new(start, "stop_reason", json_null());
    json_object_set_new(json_object_get(start, "usage"), "output_tokens", json_integer(1));
    event(&s, json_pack("{s:s,s:o}", "type", "message_start", "message", start));
    event(&s, json_pack("{s:s}", "type", "ping"));
    json_array_foreach(content, i, b) block(&s, i, b);
    event(&s, json_pack("{s:s,s:{s:O,s:n},s:{s:O}}", "type", "message_delta", "delta",
                        "stop_reason", json_object_get(m, "stop_reason"), "stop_sequence", "usage",
                        "output_tokens", json_object_get(usage, "output_tokens")));
    event(&s, json_pack("{s:s}", "type", "message_stop"));
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

int llmc__mock_messages_answer(const llmc__mock_ctx_t *c, bool stream_it, llmc__mock_out_t *out,
                               char *err, size_t errlen)
{
    json_t *m = message(c, err, errlen);
    if (!m)
        return err[0] ? LLMC_EINVAL : LLMC_ENOMEM;
    int rc;
    if (stream_it) {
        rc = stream(m, out);
    } else {
        out->body = json_dumps(m, JSON_COMPACT);
        out->len = out->body ? strlen(out->body) : 0;
        rc = out->body ? 0 : LLMC_ENOMEM;
    }
    json_decref(m);
    return rc;
}
