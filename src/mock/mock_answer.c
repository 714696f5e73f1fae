/*
 * mock/mock_answer.c: what the mock model answers, as pure functions of the
 * request (see mock_int.h). OpenAI shapes: chat.completion, text_completion,
 * their streamed chunks, embedding lists, the model list (the Responses
 * API: mock_responses.c).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Answers are deterministic and depend on the whole request: the text
 *   carries a tag from the SHA-256 of the key-sorted compact body, so equal
 *   requests (whatever their whitespace or key order) get equal answers and
 *   any other difference gives a different one. The "created" time is the
 *   only part that changes between calls.
 * - Token counts are word counts. They are only meant to be plausible and
 *   stable, not to match any tokenizer.
 * - A stream is built whole, as SSE text plus the offsets where mock.c should
 *   pause between writes; building it up front keeps the serving side a plain
 *   loop over pieces and lets tests check the text directly.
 * - Embeddings are unit vectors from a hash of (model, input item), so equal
 *   inputs embed equally; they carry no meaning. "base64" encoding is
 *   supported because the official OpenAI clients ask for it by default.
 */
#include "mock/mock_int.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"

#define MAX_DIMS 4096
/* Streams of long answers are cut into about this many content chunks, not
   one per word, so a padded megabyte answer is not a million events. */
#define STREAM_PIECES 200

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

size_t llmc__mock_words(const char *s, size_t len)
{
    size_t n = 0;
    bool in = false;
    for (size_t i = 0; i < len; i++) {
        bool sp = s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r';
        if (!sp && !in)
            n++;
        in = !sp;
    }
    return n;
}

int llmc__mock_digest(const json_t *req, unsigned char out[32])
{
    char *s = req ? json_dumps(req, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    if (req && !s)
        return LLMC_ENOMEM;
    int ok = EVP_Digest(s ? s : "", s ? strlen(s) : 0, out, NULL, EVP_sha256(), NULL);
    free(s);
    return ok ? 0 : LLMC_ENOMEM;
}

void llmc__mock_out_free(llmc__mock_out_t *o)
{
    free(o->body);
    free(o->cuts);
    memset(o, 0, sizeof(*o));
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

static const char *req_model(const llmc__mock_ctx_t *c, const char *dflt)
{
    const char *m = json_string_value(json_object_get(c->req, "model"));
    return m ? m : dflt;
}

/* ---- answer texts ----------------------------------------------------------- */

static void pad_text(sbuf_t *b, size_t target)
{
    static const char *const filler[] = {"lorem", "ipsum", "dolor", "sit", "amet", "consectetur",
                                         "adipiscing", "elit", "sed", "do", "eiusmod", "tempor"};
    for (size_t i = 0; b->len < target && !b->oom; i++) {
        sb_add(b, " ", 1);
        sb_str(b, filler[i % (sizeof(filler) / sizeof(filler[0]))]);
    }
}

/* Text of a message content: a string, or the text parts of an array. */
static void content_text(sbuf_t *b, const json_t *content)
{
    size_t i;
    json_t *part;

    if (json_is_string(content)) {
        sb_add(b, json_string_value(content), json_string_length(content));
        return;
    }
    json_array_foreach(content, i, part) {
        const json_t *t = json_object_get(part, "text");
        if (json_is_string(t)) {
            if (b->len)
                sb_add(b, " ", 1);
            sb_add(b, json_string_value(t), json_string_length(t));
        }
    }
}

static int answer_text(sbuf_t *b, const llmc__mock_ctx_t *c, const char *what, const char *prompt,
                       size_t plen)
{
    char tag[9];
    const char *meant = llmc__mock_class_answer(c->classes, prompt, plen);
    if (!meant)
        meant = llmc__mock_judge_verdict(c->classes, prompt, plen);
    if (meant) {
        /* The answer to what the question means: the same for every wording. */
        sb_str(b, meant);
        return b->oom ? LLMC_ENOMEM : 0;
    }
    hex(c->digest, 4, tag);
    sb_str(b, "Mock ");
    sb_str(b, what);
    sb_str(b, " #");
    sb_str(b, tag);
    sb_str(b, " to: ");
    sb_add(b, prompt, plen);
    pad_text(b, c->pad_bytes);
    return b->oom ? LLMC_ENOMEM : 0;
}

char *llmc__mock_content(const json_t *content, size_t *len)
{
    sbuf_t b = {0};
    content_text(&b, content);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p ? b.p : strdup("");
}

char *llmc__mock_reply(const llmc__mock_ctx_t *c, const char *what, const char *prompt,
                       size_t plen, size_t *len)
{
    sbuf_t b = {0};
    if (answer_text(&b, c, what, prompt, plen)) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ---- schema-shaped values (tool arguments, json_schema answers) ---------------------- */

#define SCHEMA_DEPTH 8

static const char *schema_type(const json_t *s)
{
    json_t *t = json_object_get(s, "type");
    if (json_is_string(t))
        return json_string_value(t);
    size_t i;
    json_t *v;
    json_array_foreach(json_is_array(t) ? t : NULL, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), "null") != 0)
            return json_string_value(v);
    }
    return json_object_get(s, "properties") ? "object" : NULL;
}

static json_t *schema_at(const json_t *s, const char *tag, int depth)
{
    if (depth > SCHEMA_DEPTH || !json_is_object(s))
        return json_null();
    json_t *en = json_object_get(s, "enum"), *cst = json_object_get(s, "const");
    if (cst)
        return json_incref(cst);
    if (json_is_array(en) && json_array_size(en))
        return json_incref(json_array_get(en, 0));
    static const char *const alts[] = {"anyOf", "oneOf", "allOf"};
    for (size_t i = 0; i < sizeof(alts) / sizeof(alts[0]); i++) {
        json_t *a = json_object_get(s, alts[i]);
        if (json_is_array(a) && json_array_size(a))
            return schema_at(json_array_get(a, 0), tag, depth + 1);
    }
    const char *t = schema_type(s);
    if (!t || !strcmp(t, "string"))
        return json_sprintf("mock %s", tag);
    if (!strcmp(t, "integer") || !strcmp(t, "number"))
        return json_integer(1);
    if (!strcmp(t, "boolean"))
        return json_true();
    if (!strcmp(t, "array")) {
        json_t *arr = json_array();
        if (arr && json_array_append_new(arr, schema_at(json_object_get(s, "items"), tag,
                                                        depth + 1))) {
            json_decref(arr);
            arr = NULL;
        }
        return arr;
    }
    if (strcmp(t, "object") != 0)
        return json_null();
    json_t *o = json_object();
    const char *k;
    json_t *sub;
    json_object_foreach((json_t *)json_object_get(s, "properties"), k, sub) {
        if (!o || json_object_set_new(o, k, schema_at(sub, tag, depth + 1))) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *llmc__mock_schema_value(const json_t *schema, const char *tag)
{
    return schema_at(schema, tag, 0);
}

/* The answer texts of a chat or completions request, and its prompt words. */
typedef struct texts {
    sbuf_t t[16];
    size_t n;
    size_t prompt_words;
    const char *call;    /* chat: the function the answer calls (borrowed from the
                            request; t[0] holds its arguments), or NULL */
    char call_id[40];
} texts_t;

static void texts_free(texts_t *x)
{
    for (size_t i = 0; i < x->n; i++)
        free(x->t[i].p);
}

/* The function tool a chat answer calls: tool_choice's, or the first one;
   NULL when there is none or tool_choice is "none". */
static const char *chat_tool(const json_t *req, const json_t **params)
{
    const json_t *choice = json_object_get(req, "tool_choice");
    const char *want = json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
    size_t i;
    json_t *t;
    if (json_is_string(choice) && !strcmp(json_string_value(choice), "none"))
        return NULL;
    json_array_foreach(json_object_get(req, "tools"), i, t) {
        const json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (name && (!want || !strcmp(want, name))) {
            *params = json_object_get(fn, "parameters");
            return name;
        }
    }
    return NULL;
}

/* A JSON answer fitting schema (a tool's parameters or a json_schema
   response format) into b. */
static int schema_text(sbuf_t *b, const llmc__mock_ctx_t *c, const json_t *schema)
{
    char tag[9];
    hex(c->digest, 4, tag);
    json_t *v = llmc__mock_schema_value(schema, tag);
    char *d = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    if (!d)
        return LLMC_ENOMEM;
    sb_str(b, d);
    free(d);
    return b->oom ? LLMC_ENOMEM : 0;
}

/* A chat answer that is not text: a call to a function tool when tools
   are given and no tool result came after the last user message, or a
   document for a json_schema response format. 1 when x was filled. */
static int chat_special(const llmc__mock_ctx_t *c, texts_t *x, bool tool_last)
{
    const json_t *params = NULL;
    const char *call = tool_last ? NULL : chat_tool(c->req, &params);
    const json_t *rf = json_object_get(c->req, "response_format");
    const char *rft = json_string_value(json_object_get(rf, "type"));
    const json_t *schema = rft && !strcmp(rft, "json_schema")
                               ? json_object_get(json_object_get(rf, "json_schema"), "schema")
                               : NULL;
    if (!call && !schema)
        return 0;
    x->n = 1;
    if (call) {
        char h[17];
        hex(c->digest, 8, h);
        x->call = call;
        snprintf(x->call_id, sizeof(x->call_id), "call_mock%s", h);
    }
    int rc = schema_text(&x->t[0], c, call ? params : schema);
    return rc ? rc : 1;
}

static int chat_texts(const llmc__mock_ctx_t *c, texts_t *x, char *err, size_t errlen)
{
    const json_t *msgs = json_object_get(c->req, "messages");
    sbuf_t last = {0}, all = {0};
    size_t i;
    json_t *m;
    bool tool_last = false;

    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        snprintf(err, errlen, "'messages' must be a non-empty array");
        return LLMC_EINVAL;
    }
    json_array_foreach(msgs, i, m) {
        sbuf_t one = {0};
        content_text(&one, json_object_get(m, "content"));
        if (one.p) {
            sb_add(&all, " ", 1);
            sb_add(&all, one.p, one.len);
        }
        const char *role = json_string_value(json_object_get(m, "role"));
        bool tool = role && strcmp(role, "tool") == 0;
        if (tool) { /* a tool's result is what the next answer answers */
            sbuf_t r = {0};
            sb_str(&r, "tool result: ");
            sb_add(&r, one.p ? one.p : "", one.len);
            free(one.p);
            one = r;
        }
        if (role && (strcmp(role, "user") == 0 || tool)) {
            tool_last = tool;
            free(last.p);
            last = one;
        } else {
            free(one.p);
        }
    }
    x->prompt_words = llmc__mock_words(all.p ? all.p : "", all.len);
    int special = all.oom || last.oom ? LLMC_ENOMEM : chat_special(c, x, tool_last);
    if (special != 0) {
        free(last.p);
        free(all.p);
        return special < 0 ? special : 0;
    }
    x->n = 1;
    int rc = answer_text(&x->t[0], c, "answer", last.p ? last.p : "(no user message)",
                         last.p ? last.len : strlen("(no user message)"));
    rc = rc ? rc : (all.oom || last.oom ? LLMC_ENOMEM : 0);
    free(last.p);
    free(all.p);
    return rc;
}

static int completion_texts(const llmc__mock_ctx_t *c, texts_t *x, char *err, size_t errlen)
{
    const json_t *p = json_object_get(c->req, "prompt");
    size_t i;
    json_t *s;
    int rc = 0;

    if (json_is_array(p) && json_array_size(p) > 0 && json_is_string(json_array_get(p, 0))) {
        if (json_array_size(p) > sizeof(x->t) / sizeof(x->t[0])) {
            snprintf(err, errlen, "the mock takes at most 16 prompts");
            return LLMC_EINVAL;
        }
        json_array_foreach(p, i, s) {
            if (!json_is_string(s)) {
                snprintf(err, errlen, "'prompt' must be a string or an array of strings");
                return LLMC_EINVAL;
            }
            x->prompt_words += llmc__mock_words(json_string_value(s), json_string_length(s));
            x->n++;
            if ((rc = answer_text(&x->t[i], c, "completion", json_string_value(s),
                                  json_string_length(s))) != 0)
                return rc;
        }
        return 0;
    }
    if (p && !json_is_string(p) && !json_is_array(p)) {
        snprintf(err, errlen, "'prompt' must be a string or an array");
        return LLMC_EINVAL;
    }
    /* A string, token ids, or nothing: one answer. */
    const char *text = json_is_string(p) ? json_string_value(p) : "";
    size_t len = json_is_string(p) ? json_string_length(p) : 0;
    x->prompt_words = json_is_array(p) ? json_array_size(p) : llmc__mock_words(text, len);
    x->n = 1;
    return answer_text(&x->t[0], c, "completion", text, len);
}

/* ---- whole answers ---------------------------------------------------------------- */

static int dump_into(llmc__mock_out_t *out, json_t *o, size_t flags)
{
    if (!o)
        return LLMC_ENOMEM;
    out->body = json_dumps(o, JSON_COMPACT | flags);
    json_decref(o);
    if (!out->body)
        return LLMC_ENOMEM;
    out->len = strlen(out->body);
    return 0;
}

static json_t *usage(size_t prompt, size_t completion)
{
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                     (json_int_t)completion, "total_tokens", (json_int_t)(prompt + completion));
}

static void make_id(const llmc__mock_ctx_t *c, llmc__mock_kind_t kind, char id[40])
{
    char h[17];
    hex(c->digest, 8, h);
    snprintf(id, 40, "%s-mock-%s", kind == LLMC_MOCK_CHAT ? "chatcmpl" : "cmpl", h);
}

static json_t *choice(llmc__mock_kind_t kind, size_t i, const sbuf_t *t, const texts_t *x)
{
    if (kind == LLMC_MOCK_CHAT && x->call)
        return json_pack("{s:I,s:{s:s,s:n,s:[{s:s,s:s,s:{s:s,s:s%}}],s:n},s:n,s:s}", "index",
                         (json_int_t)i, "message", "role", "assistant", "content", "tool_calls",
                         "id", x->call_id, "type", "function", "function", "name", x->call,
                         "arguments", t->p, t->len, "refusal", "logprobs", "finish_reason",
                         "tool_calls");
    if (kind == LLMC_MOCK_CHAT)
        return json_pack("{s:I,s:{s:s,s:s%,s:n},s:n,s:s}", "index", (json_int_t)i, "message", "role",
                         "assistant", "content", t->p, t->len, "refusal", "logprobs",
                         "finish_reason", "stop");
    return json_pack("{s:s%,s:I,s:n,s:s}", "text", t->p, t->len, "index", (json_int_t)i,
                     "logprobs", "finish_reason", "stop");
}

static int whole_answer(llmc__mock_kind_t kind, const llmc__mock_ctx_t *c, const texts_t *x,
                        llmc__mock_out_t *out)
{
    char id[40];
    size_t words = 0;
    json_t *choices = json_array();

    make_id(c, kind, id);
    for (size_t i = 0; i < x->n; i++) {
        words += llmc__mock_words(x->t[i].p, x->t[i].len);
        json_array_append_new(choices, choice(kind, i, &x->t[i], x));
    }
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:o,s:o,s:n}", "id", id, "object",
                          kind == LLMC_MOCK_CHAT ? "chat.completion" : "text_completion", "created",
                          (json_int_t)c->now_s, "model", req_model(c, "mock-model"), "choices",
                          choices, "usage", usage(x->prompt_words, words), "system_fingerprint");
    return dump_into(out, o, 0);
}

/* ---- streams ---------------------------------------------------------------------------- */

typedef struct stream {
    const llmc__mock_ctx_t *c;
    llmc__mock_kind_t kind;
    const texts_t *x;
    char id[40];
    bool usage_too;
    sbuf_t text;
    size_t *cuts;
    size_t ncuts, capcuts;
    bool oom;
} stream_t;

static void add_cut(stream_t *s, size_t at)
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

static void event(stream_t *s, json_t *chunk)
{
    char *d = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
    json_decref(chunk);
    if (!d) {
        s->oom = true;
        return;
    }
    sb_str(&s->text, "data: ");
    sb_str(&s->text, d);
    sb_str(&s->text, "\n\n");
    free(d);
    add_cut(s, s->text.len);
}

/* One chunk: delta text piece (may be NULL), the role chunk, or the end. */
static json_t *chunk(stream_t *s, size_t index, const char *piece, size_t plen, bool role,
                     bool last)
{
    json_t *ch;
    const char *call = s->x->call;
    if (s->kind == LLMC_MOCK_CHAT && call) { /* a tool call: its arguments in pieces */
        json_t *delta =
            role  ? json_pack("{s:s,s:n,s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "role", "assistant",
                              "content", "tool_calls", "index", 0, "id", s->x->call_id, "type",
                              "function", "function", "name", call, "arguments", "")
            : piece ? json_pack("{s:[{s:i,s:{s:s%}}]}", "tool_calls", "index", 0, "function",
                                "arguments", piece, plen)
                    : json_object();
        ch = json_pack("{s:I,s:o,s:n,s:o}", "index", (json_int_t)index, "delta", delta, "logprobs",
                       "finish_reason", last ? json_string("tool_calls") : json_null());
    } else if (s->kind == LLMC_MOCK_CHAT) {
        json_t *delta = role    ? json_pack("{s:s,s:s}", "role", "assistant", "content", "")
                        : piece ? json_pack("{s:s%}", "content", piece, plen)
                                : json_object();
        ch = json_pack("{s:I,s:o,s:n,s:o}", "index", (json_int_t)index, "delta", delta, "logprobs",
                       "finish_reason", last ? json_string("stop") : json_null());
    } else {
        ch = json_pack("{s:s%,s:I,s:n,s:o}", "text", piece ? piece : "", piece ? plen : 0, "index",
                       (json_int_t)index, "logprobs", "finish_reason",
                       last ? json_string("stop") : json_null());
    }
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:n,s:[o]}", "id", s->id, "object",
                          s->kind == LLMC_MOCK_CHAT ? "chat.completion.chunk" : "text_completion",
                          "created", (json_int_t)s->c->now_s, "model", req_model(s->c, "mock-model"),
                          "system_fingerprint", "choices", ch);
    if (o && s->usage_too)
        json_object_set_new(o, "usage", json_null());
    return o;
}

/* End of the next content piece: whole words, at least min bytes. */
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

/* mock.split = "bytes": replace the per-event cuts by cuts every 1 to 7
   bytes, from a generator seeded by the request so runs repeat. */
static void split_bytes(stream_t *s)
{
    uint32_t x = (uint32_t)s->c->digest[0] << 24 | (uint32_t)s->c->digest[1] << 16 |
                 (uint32_t)s->c->digest[2] << 8 | s->c->digest[3] | 1u;
    s->ncuts = 0;
    for (size_t at = 0; at < s->text.len && !s->oom;) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        at += 1 + x % 7;
        add_cut(s, at < s->text.len ? at : s->text.len);
    }
}

static int stream_answer(llmc__mock_kind_t kind, const llmc__mock_ctx_t *c, const texts_t *x,
                         llmc__mock_out_t *out)
{
    const json_t *so = json_object_get(c->req, "stream_options");
    stream_t s = {.c = c, .kind = kind, .x = x,
                  .usage_too = json_is_true(json_object_get(so, "include_usage"))};
    size_t words = 0;

    make_id(c, kind, s.id);
    for (size_t i = 0; i < x->n && !s.oom; i++) {
        const sbuf_t *t = &x->t[i];
        /* Arguments come in small bits, as OpenAI sends them. */
        size_t min = x->call ? 8 : t->len / STREAM_PIECES;
        words += llmc__mock_words(t->p, t->len);
        if (kind == LLMC_MOCK_CHAT)
            event(&s, chunk(&s, i, NULL, 0, true, false));
        for (size_t off = 0; off < t->len && !s.oom;) {
            size_t end = piece_end(t->p, t->len, off, min);
            event(&s, chunk(&s, i, t->p + off, end - off, false, false));
            off = end;
        }
        event(&s, chunk(&s, i, NULL, 0, false, true));
    }
    if (s.usage_too && !s.oom) {
        json_t *u = json_pack("{s:s,s:s,s:I,s:s,s:n,s:[],s:o}", "id", s.id, "object",
                              kind == LLMC_MOCK_CHAT ? "chat.completion.chunk" : "text_completion",
                              "created", (json_int_t)c->now_s, "model", req_model(c, "mock-model"),
                              "system_fingerprint", "choices", "usage",
                              usage(x->prompt_words, words));
        event(&s, u);
    }
    sb_str(&s.text, "data: [DONE]\n\n");
    add_cut(&s, s.text.len);
    if (c->split_bytes)
        split_bytes(&s);
    if (s.oom || s.text.oom) {
        free(s.text.p);
        free(s.cuts);
        return LLMC_ENOMEM;
    }
    out->body = s.text.p;
    out->len = s.text.len;
    out->cuts = s.cuts;
    out->ncuts = s.ncuts;
    return 0;
}

static int text_answer(llmc__mock_kind_t kind, const llmc__mock_ctx_t *c, bool stream,
                       llmc__mock_out_t *out, char *err, size_t errlen)
{
    texts_t x = {0};
    int rc = kind == LLMC_MOCK_CHAT ? chat_texts(c, &x, err, errlen)
                                    : completion_texts(c, &x, err, errlen);
    if (rc == 0)
        rc = stream ? stream_answer(kind, c, &x, out) : whole_answer(kind, c, &x, out);
    texts_free(&x);
    return rc;
}

/* ---- embeddings ------------------------------------------------------------------------ */

static void embed(const char *model, const char *item, size_t len, float *v, size_t dims)
{
    unsigned char block[32];
    double norm = 0;

    for (size_t k = 0; k < dims; k++) {
        if (k % 8 == 0) {
            EVP_MD_CTX *h = EVP_MD_CTX_new();
            uint32_t n = (uint32_t)(k / 8);
            EVP_DigestInit_ex(h, EVP_sha256(), NULL);
            EVP_DigestUpdate(h, model, strlen(model) + 1);
            EVP_DigestUpdate(h, item, len);
            EVP_DigestUpdate(h, &n, sizeof(n));
            EVP_DigestFinal_ex(h, block, NULL);
            EVP_MD_CTX_free(h);
        }
        const unsigned char *b = block + (k % 8) * 4;
        uint32_t w = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        v[k] = (float)((double)w / 4294967296.0 * 2.0 - 1.0);
        norm += (double)v[k] * v[k];
    }
    norm = sqrt(norm);
    for (size_t k = 0; k < dims && norm > 0; k++)
        v[k] = (float)(v[k] / norm);
}

static json_t *vector_json(const float *v, size_t dims, bool b64)
{
    if (!b64) {
        json_t *a = json_array();
        for (size_t k = 0; k < dims; k++)
            json_array_append_new(a, json_real(v[k]));
        return a;
    }
    unsigned char raw[MAX_DIMS * 4];
    char enc[(MAX_DIMS * 4 + 2) / 3 * 4 + 1];
    for (size_t k = 0; k < dims; k++) {   /* little-endian float32, as OpenAI sends */
        uint32_t w;
        memcpy(&w, &v[k], 4);
        for (int j = 0; j < 4; j++)
            raw[k * 4 + j] = (unsigned char)(w >> (8 * j));
    }
    EVP_EncodeBlock((unsigned char *)enc, raw, (int)(dims * 4));
    return json_string(enc);
}

/* The items of "input": strings, one token list, or token lists. */
static int input_items(const json_t *in, json_t **items, size_t *tokens, char *err, size_t errlen)
{
    *items = json_array();
    if (json_is_string(in)) {
        json_array_append(*items, (json_t *)in);
    } else if (json_is_array(in) && json_array_size(in) > 0) {
        if (json_is_integer(json_array_get(in, 0)))
            json_array_append(*items, (json_t *)in);
        else
            json_array_extend(*items, (json_t *)in);
    }
    size_t i;
    json_t *it;
    json_array_foreach(*items, i, it) {
        if (json_is_string(it)) {
            *tokens += llmc__mock_words(json_string_value(it), json_string_length(it));
        } else if (json_is_array(it) && json_array_size(it) > 0) {
            *tokens += json_array_size(it);
        } else {
            break;
        }
    }
    if (json_array_size(*items) == 0 || i < json_array_size(*items)) {
        snprintf(err, errlen, "'input' must be a string, an array of strings or token arrays");
        json_decref(*items);
        *items = NULL;
        return LLMC_EINVAL;
    }
    return 0;
}

static int embeddings_answer(const llmc__mock_ctx_t *c, llmc__mock_out_t *out, char *err,
                             size_t errlen)
{
    const json_t *d = json_object_get(c->req, "dimensions");
    const char *fmt = json_string_value(json_object_get(c->req, "encoding_format"));
    const char *model = req_model(c, "mock-embedding");
    json_int_t dims = d ? json_integer_value(d) : 8;
    size_t tokens = 0;
    json_t *items, *it;
    size_t i;
    float v[MAX_DIMS];

    if (dims < 1 || dims > MAX_DIMS || (d && !json_is_integer(d))) {
        snprintf(err, errlen, "'dimensions' must be an integer from 1 to %d", MAX_DIMS);
        return LLMC_EINVAL;
    }
    if (fmt && strcmp(fmt, "float") != 0 && strcmp(fmt, "base64") != 0) {
        snprintf(err, errlen, "'encoding_format' must be 'float' or 'base64'");
        return LLMC_EINVAL;
    }
    int rc = input_items(json_object_get(c->req, "input"), &items, &tokens, err, errlen);
    if (rc)
        return rc;
    json_t *data = json_array();
    json_array_foreach(items, i, it) {
        char *s = json_is_string(it) ? NULL : json_dumps(it, JSON_COMPACT);
        const char *text = s ? s : json_string_value(it);
        embed(model, text ? text : "", text ? strlen(text) : 0, v, (size_t)dims);
        free(s);
        json_array_append_new(data, json_pack("{s:s,s:I,s:o}", "object", "embedding", "index",
                                              (json_int_t)i, "embedding",
                                              vector_json(v, (size_t)dims, fmt && fmt[0] == 'b')));
    }
    json_decref(items);
    json_t *o = json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", data, "model", model,
                          "usage", "prompt_tokens", (json_int_t)tokens, "total_tokens",
                          (json_int_t)tokens);
    return dump_into(out, o, JSON_REAL_PRECISION(8));
}

static const char *const model_ids[] = {"mock-model", "gpt-4o-mini", "gpt-4o", "mock-embedding",
                                        "text-embedding-3-small"};

static json_t *model_json(const char *id)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", id, "object", "model", "created",
                     (json_int_t)1700000000, "owned_by", "llmcached-mock");
}

static int models_answer(llmc__mock_out_t *out)
{
    json_t *data = json_array();
    for (size_t i = 0; i < sizeof(model_ids) / sizeof(model_ids[0]); i++)
        json_array_append_new(data, model_json(model_ids[i]));
    return dump_into(out, json_pack("{s:s,s:o}", "object", "list", "data", data), 0);
}

/* One model by id, as GET /v1/models/{id} answers it. */
static int model_answer(const char *id, llmc__mock_out_t *out, char *err, size_t errlen)
{
    for (size_t i = 0; id && i < sizeof(model_ids) / sizeof(model_ids[0]); i++)
        if (strcmp(id, model_ids[i]) == 0)
            return dump_into(out, model_json(model_ids[i]), 0);
    snprintf(err, errlen, "The model '%.100s' does not exist", id ? id : "");
    return LLMC_ENOENT;
}

int llmc__mock_answer(llmc__mock_kind_t kind, const llmc__mock_ctx_t *c, bool stream,
                      llmc__mock_out_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (kind == LLMC_MOCK_MODELS)
        return models_answer(out);
    if (kind == LLMC_MOCK_MODEL)
        return model_answer(c->model_id, out, err, errlen);
    if (!json_is_object(c->req)) {
        snprintf(err, errlen, "the request body must be a JSON object");
        return LLMC_EINVAL;
    }
    if (kind == LLMC_MOCK_EMBEDDINGS)
        return embeddings_answer(c, out, err, errlen);
    if (kind == LLMC_MOCK_RESPONSES)
        abort(); /* a caller's slip: llmc__mock_responses builds those */
    if (kind == LLMC_MOCK_MESSAGES)
        return llmc__mock_messages_answer(c, stream, out, err, errlen);
    return text_answer(kind, c, stream, out, err, errlen);
}
