/*
 * assemble.c: folding a chunk stream into one completion, and back
 * (llmc_sse_asm_* and llmc_sse_replay in llmc/sse.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Deltas merge by one generic rule, so fields OpenAI adds later survive a
 *   trip through the cache: a string appends to the string so far, an array
 *   extends the array, an object merges key by key, null never erases what
 *   came, anything else replaces. Three keys are exceptions because servers
 *   repeat them in every chunk: "role", "id" and "type" keep their first
 *   non-empty string. "tool_calls" directly in a delta merges its elements
 *   by their "index", the way OpenAI streams arguments in fragments.
 * - Strings grow in our own buffers, not in jansson strings: appending to a
 *   json_t string copies it whole, which makes a long answer streamed a few
 *   bytes per chunk quadratic.
 * - Top-level fields come from the first chunk that has them; a later chunk
 *   fills a field only where it was null, "" or 0, because Azure opens its
 *   streams with a chunk of empty id, model and created. "usage" is taken
 *   from the last chunk that has a non-null one, and "obfuscation" (random
 *   padding OpenAI adds to each chunk) is dropped.
 * - Replay sends each choice whole, one after the other, rather than
 *   interleaving them as a live stream would: clients merge by index, and
 *   the order keeps the code simple. Fields whose text is not pieced
 *   (role, id, type, non-text fields) travel whole in a choice's first
 *   chunk, so the first-wins rule cannot cut them; a tool call's id, type
 *   and name travel whole in its own first chunk. Logprobs travel whole too,
 *   but in the choice's second chunk (replay_chat_choice says why).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llmc/error.h"
#include "llmc/sse.h"

/* ---- the merge tree ----------------------------------------------------- */

enum { N_NONE, N_STR, N_ARR, N_OBJ, N_VAL, N_TOOLS };

typedef struct node node_t;

typedef struct member {
    char *key;
    size_t klen;
    node_t *n;
} member_t;

typedef struct slot {
    json_int_t index;
    node_t *n;
} slot_t;

struct node {
    int kind;
    char *s;          /* N_STR */
    size_t len, cap;
    json_t *v;        /* N_ARR (ours, extended), N_VAL (a reference) */
    member_t *m;      /* N_OBJ, in order of first appearance */
    size_t nm, mcap;
    slot_t *t;        /* N_TOOLS */
    size_t nt, tcap;
};

static const char *const first_wins_keys[] = {"role", "id", "type"};

static bool key_is(const char *k, size_t klen, const char *want)
{
    return klen == strlen(want) && memcmp(k, want, klen) == 0;
}

static bool first_wins(const char *k, size_t klen)
{
    for (size_t i = 0; i < sizeof first_wins_keys / sizeof *first_wins_keys; i++)
        if (key_is(k, klen, first_wins_keys[i]))
            return true;
    return false;
}

/* Grows *p (holding *cap elements of size sz) to room for need. */
static int grow(void **p, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 4;
    while (c < need) {
        if (c > SIZE_MAX / 2 / sz)
            return LLMC_ENOMEM;
        c *= 2;
    }
    void *q = realloc(*p, c * sz);
    if (!q)
        return LLMC_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static void node_free(node_t *n);

static void node_reset(node_t *n)
{
    free(n->s);
    json_decref(n->v);
    for (size_t i = 0; i < n->nm; i++) {
        free(n->m[i].key);
        node_free(n->m[i].n);
    }
    free(n->m);
    for (size_t i = 0; i < n->nt; i++)
        node_free(n->t[i].n);
    free(n->t);
    memset(n, 0, sizeof *n);
}

static void node_free(node_t *n)
{
    if (n) {
        node_reset(n);
        free(n);
    }
}

static int str_append(node_t *n, const char *s, size_t len)
{
    if (len > SIZE_MAX - n->len - 1)
        return LLMC_ENOMEM;
    int rc = grow((void **)&n->s, &n->cap, n->len + len + 1, 1);
    if (rc)
        return rc;
    memcpy(n->s + n->len, s, len);
    n->len += len;
    return 0;
}

/* The member named k of an object node, added (kind N_NONE) if missing. */
static node_t *member(node_t *o, const char *k, size_t klen)
{
    for (size_t i = 0; i < o->nm; i++)
        if (o->m[i].klen == klen && memcmp(o->m[i].key, k, klen) == 0)
            return o->m[i].n;
    if (grow((void **)&o->m, &o->mcap, o->nm + 1, sizeof *o->m))
        return NULL;
    member_t *m = &o->m[o->nm];
    m->key = malloc(klen + 1);
    m->n = calloc(1, sizeof *m->n);
    if (!m->key || !m->n) {
        free(m->key);
        free(m->n);
        return NULL;
    }
    memcpy(m->key, k, klen);
    m->key[klen] = '\0';
    m->klen = klen;
    o->nm++;
    return m->n;
}

static int merge(node_t *d, json_t *src, const char *key, size_t klen, bool tools_here);

/* Merges each key of the object src into d. tools_here: d is a delta, whose
 * "tool_calls" merge by index. */
static int merge_obj(node_t *d, json_t *src, bool tools_here)
{
    if (d->kind != N_OBJ) {
        node_reset(d);
        d->kind = N_OBJ;
    }
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(src, k, klen, v) {
        node_t *m = member(d, k, klen);
        if (!m)
            return LLMC_ENOMEM;
        int rc = merge(m, v, k, klen, tools_here);
        if (rc)
            return rc;
    }
    return 0;
}

/* Reads an element's "index": an integer, or its position when absent. */
static int index_of(json_t *el, size_t pos, json_int_t *out)
{
    json_t *ix = json_object_get(el, "index");
    if (!ix) {
        *out = (json_int_t)pos;
        return 0;
    }
    if (!json_is_integer(ix))
        return LLMC_EBADRESP;
    *out = json_integer_value(ix);
    return 0;
}

static int merge_tools(node_t *d, json_t *arr)
{
    if (d->kind != N_TOOLS) {
        node_reset(d);
        d->kind = N_TOOLS;
    }
    size_t i;
    json_t *el;
    json_array_foreach(arr, i, el) {
        json_int_t ix;
        if (!json_is_object(el) || index_of(el, i, &ix))
            return LLMC_EBADRESP;
        node_t *tc = NULL;
        for (size_t j = 0; j < d->nt && !tc; j++)
            if (d->t[j].index == ix)
                tc = d->t[j].n;
        if (!tc) {
            if (d->nt >= LLMC_SSE_MAX_CHOICES)
                return LLMC_EBADRESP;
            if (grow((void **)&d->t, &d->tcap, d->nt + 1, sizeof *d->t))
                return LLMC_ENOMEM;
            if (!(tc = calloc(1, sizeof *tc)))
                return LLMC_ENOMEM;
            d->t[d->nt].index = ix;
            d->t[d->nt++].n = tc;
            tc->kind = N_OBJ;
        }
        const char *k;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach(el, k, klen, v) {
            if (key_is(k, klen, "index"))
                continue; /* the merge key, not part of the tool call */
            node_t *m = member(tc, k, klen);
            if (!m)
                return LLMC_ENOMEM;
            int rc = merge(m, v, k, klen, false);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* Merges one delta value src, found under key, into d (the rule in the
 * file header). */
static int merge(node_t *d, json_t *src, const char *key, size_t klen, bool tools_here)
{
    switch (json_typeof(src)) {
    case JSON_NULL:
        if (d->kind == N_NONE) { /* keep the field's presence */
            d->kind = N_VAL;
            d->v = json_null();
        }
        return 0;
    case JSON_STRING:
        if (d->kind == N_STR) {
            if (d->len && key && first_wins(key, klen))
                return 0;
        } else {
            node_reset(d);
            d->kind = N_STR;
        }
        return str_append(d, json_string_value(src), json_string_length(src));
    case JSON_ARRAY:
        if (tools_here && key && key_is(key, klen, "tool_calls"))
            return merge_tools(d, src);
        if (d->kind != N_ARR) {
            node_reset(d);
            d->kind = N_ARR;
            if (!(d->v = json_array()))
                return LLMC_ENOMEM;
        }
        return json_array_extend(d->v, src) ? LLMC_ENOMEM : 0;
    case JSON_OBJECT:
        return merge_obj(d, src, false);
    default:
        node_reset(d);
        d->kind = N_VAL;
        d->v = json_incref(src);
        return 0;
    }
}

static int slot_cmp(const void *a, const void *b)
{
    json_int_t x = ((const slot_t *)a)->index, y = ((const slot_t *)b)->index;
    return (x > y) - (x < y);
}

/* The JSON value of a node (a new reference), or NULL without memory.
 * Sorts tool-call slots in place, which lookups do not mind. */
static json_t *node_json(node_t *n)
{
    switch (n->kind) {
    case N_STR:
        /* Fragments came from parsed JSON, so each is valid UTF-8 and so is
         * their concatenation. */
        return json_stringn(n->len ? n->s : "", n->len);
    case N_ARR:
    case N_VAL:
        return json_incref(n->v);
    case N_OBJ: {
        json_t *o = json_object();
        for (size_t i = 0; o && i < n->nm; i++)
            if (json_object_setn_new(o, n->m[i].key, n->m[i].klen, node_json(n->m[i].n))) {
                json_decref(o);
                o = NULL;
            }
        return o;
    }
    case N_TOOLS: {
        json_t *a = json_array();
        if (n->nt)
            qsort(n->t, n->nt, sizeof *n->t, slot_cmp);
        for (size_t i = 0; a && i < n->nt; i++)
            if (json_array_append_new(a, node_json(n->t[i].n))) {
                json_decref(a);
                a = NULL;
            }
        return a;
    }
    default:
        return json_null();
    }
}

/* ---- the assembler -------------------------------------------------------- */

enum { K_UNKNOWN, K_CHAT, K_TEXT };

typedef struct choice {
    json_int_t index;
    node_t msg;       /* every delta merged (chat) */
    node_t text;      /* every text appended (text completions) */
    node_t lp;        /* every logprobs merged */
    json_t *finish;   /* the last non-null finish_reason, or NULL */
} choice_t;

struct llmc_sse_asm {
    int err;          /* sticky: the stream cannot be stored */
    bool done;        /* [DONE] seen */
    int kind;
    json_t *top;      /* top-level fields but choices and usage */
    json_t *usage;
    choice_t *ch;
    size_t nch, chcap;
};

llmc_sse_asm_t *llmc_sse_asm_new(void)
{
    llmc_sse_asm_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    if (!(a->top = json_object())) {
        free(a);
        return NULL;
    }
    return a;
}

void llmc_sse_asm_free(llmc_sse_asm_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nch; i++) {
        node_reset(&a->ch[i].msg);
        node_reset(&a->ch[i].text);
        node_reset(&a->ch[i].lp);
        json_decref(a->ch[i].finish);
    }
    free(a->ch);
    json_decref(a->usage);
    json_decref(a->top);
    free(a);
}

/* A placeholder worth replacing by a later chunk's value (see the header). */
static bool blank(const json_t *v)
{
    return json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0) ||
           (json_is_integer(v) && json_integer_value(v) == 0);
}

static int add_top(llmc_sse_asm_t *a, json_t *root)
{
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(root, k, klen, v) {
        if (key_is(k, klen, "choices") || key_is(k, klen, "usage") ||
            key_is(k, klen, "obfuscation"))
            continue;
        if (key_is(k, klen, "object") && a->kind == K_UNKNOWN && json_is_string(v)) {
            if (strcmp(json_string_value(v), "chat.completion.chunk") == 0)
                a->kind = K_CHAT;
            else if (strcmp(json_string_value(v), "text_completion") == 0)
                a->kind = K_TEXT;
        }
        json_t *have = json_object_getn(a->top, k, klen);
        if ((!have || (blank(have) && !json_is_null(v))) && json_object_setn(a->top, k, klen, v))
            return LLMC_ENOMEM;
    }
    json_t *u = json_object_get(root, "usage");
    if (u && !json_is_null(u)) {
        json_decref(a->usage);
        a->usage = json_incref(u);
    }
    return 0;
}

static choice_t *choice_get(llmc_sse_asm_t *a, json_int_t ix, int *rc)
{
    for (size_t i = 0; i < a->nch; i++)
        if (a->ch[i].index == ix)
            return &a->ch[i];
    if (a->nch >= LLMC_SSE_MAX_CHOICES) {
        *rc = LLMC_EBADRESP;
        return NULL;
    }
    if (grow((void **)&a->ch, &a->chcap, a->nch + 1, sizeof *a->ch)) {
        *rc = LLMC_ENOMEM;
        return NULL;
    }
    choice_t *c = &a->ch[a->nch++];
    memset(c, 0, sizeof *c);
    c->index = ix;
    return c;
}

static int add_choice(llmc_sse_asm_t *a, json_t *el, size_t pos)
{
    json_int_t ix;
    int rc;
    if (!json_is_object(el) || (rc = index_of(el, pos, &ix)))
        return LLMC_EBADRESP;
    choice_t *c = choice_get(a, ix, &rc);
    if (!c)
        return rc;

    json_t *delta = json_object_get(el, "delta");
    json_t *text = json_object_get(el, "text");
    if (a->kind == K_UNKNOWN)
        a->kind = delta ? K_CHAT : text ? K_TEXT : K_UNKNOWN;
    if (delta && !json_is_null(delta)) {
        if (!json_is_object(delta))
            return LLMC_EBADRESP;
        if ((rc = merge_obj(&c->msg, delta, true)))
            return rc;
    }
    if (json_is_string(text) && (rc = merge(&c->text, text, NULL, 0, false)))
        return rc;
    json_t *lp = json_object_get(el, "logprobs");
    if (lp && (rc = merge(&c->lp, lp, "logprobs", 8, false)))
        return rc;
    json_t *fr = json_object_get(el, "finish_reason");
    if (fr && !json_is_null(fr)) {
        json_decref(c->finish);
        c->finish = json_incref(fr);
    }
    return 0;
}

static int add_chunk(llmc_sse_asm_t *a, json_t *root)
{
    if (!json_is_object(root))
        return LLMC_EJSON;
    json_t *e = json_object_get(root, "error");
    if (e && !json_is_null(e))
        return LLMC_EUPSTREAM;
    int rc = add_top(a, root);
    if (rc)
        return rc;
    json_t *choices = json_object_get(root, "choices");
    if (!choices || json_is_null(choices))
        return 0;
    if (!json_is_array(choices))
        return LLMC_EBADRESP;
    size_t i;
    json_t *el;
    json_array_foreach(choices, i, el)
        if ((rc = add_choice(a, el, i)))
            return rc;
    return 0;
}

int llmc_sse_asm_add(llmc_sse_asm_t *a, const char *data, size_t len)
{
    if (!a || (!data && len))
        return LLMC_EINVAL;
    if (a->err || a->done)
        return a->err;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        a->done = true;
        return 0;
    }
    json_t *root = json_loadb(data ? data : "", len, JSON_ALLOW_NUL, NULL);
    a->err = root ? add_chunk(a, root) : LLMC_EJSON;
    json_decref(root);
    return a->err;
}

bool llmc_sse_asm_complete(const llmc_sse_asm_t *a)
{
    if (!a || a->err || !a->done || a->nch == 0)
        return false;
    for (size_t i = 0; i < a->nch; i++)
        if (!a->ch[i].finish)
            return false;
    return true;
}

/* Adds key -> v (a new reference, NULL meaning out of memory) to o. */
static int put(json_t *o, const char *k, size_t klen, json_t *v)
{
    return v && json_object_setn_new(o, k, klen, v) == 0 ? 0 : LLMC_ENOMEM;
}

/* message: role and content first, as in OpenAI's answers, then the rest. */
static json_t *message_json(node_t *msg)
{
    static const char *const lead[] = {"role", "content"};
    json_t *m = json_object();
    if (!m)
        return NULL;
    for (size_t i = 0; i < 2; i++) {
        node_t *n = NULL;
        for (size_t j = 0; j < msg->nm && !n; j++)
            if (key_is(msg->m[j].key, msg->m[j].klen, lead[i]))
                n = msg->m[j].n;
        json_t *v = n ? node_json(n) : i == 0 ? json_string("assistant") : json_null();
        if (put(m, lead[i], strlen(lead[i]), v))
            goto fail;
    }
    for (size_t j = 0; j < msg->nm; j++) {
        member_t *e = &msg->m[j];
        if (key_is(e->key, e->klen, "role") || key_is(e->key, e->klen, "content"))
            continue;
        if (put(m, e->key, e->klen, node_json(e->n)))
            goto fail;
    }
    return m;
fail:
    json_decref(m);
    return NULL;
}

static json_t *choice_json(choice_t *c, int kind)
{
    json_t *o = json_object();
    if (!o || put(o, "index", 5, json_integer(c->index)))
        goto fail;
    if (kind == K_TEXT) {
        if (put(o, "text", 4, c->text.kind == N_STR ? node_json(&c->text) : json_string("")))
            goto fail;
    } else if (put(o, "message", 7, message_json(&c->msg))) {
        goto fail;
    }
    if (put(o, "logprobs", 8, c->lp.kind ? node_json(&c->lp) : json_null()) ||
        put(o, "finish_reason", 13, c->finish ? json_incref(c->finish) : json_null()))
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

static int choice_cmp(const void *x, const void *y)
{
    json_int_t a = ((const choice_t *)x)->index, b = ((const choice_t *)y)->index;
    return (a > b) - (a < b);
}

int llmc_sse_asm_result(llmc_sse_asm_t *a, char **json, size_t *len)
{
    if (!a || !json || !len)
        return LLMC_EINVAL;
    if (a->err)
        return a->err;
    int kind = a->kind == K_TEXT ? K_TEXT : K_CHAT;
    const char *objname = kind == K_TEXT ? "text_completion" : "chat.completion";
    json_t *out = json_object(), *choices = NULL;
    if (!out)
        return LLMC_ENOMEM;

    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(a->top, k, klen, v) {
        json_t *val = key_is(k, klen, "object") ? json_string(objname) : json_incref(v);
        if (put(out, k, klen, val))
            goto fail;
    }
    if (!json_object_get(out, "object") && put(out, "object", 6, json_string(objname)))
        goto fail;

    if (!(choices = json_array()))
        goto fail;
    if (a->nch)
        qsort(a->ch, a->nch, sizeof *a->ch, choice_cmp);
    for (size_t i = 0; i < a->nch; i++)
        if (json_array_append_new(choices, choice_json(&a->ch[i], kind)))
            goto fail;
    if (json_object_set_new(out, "choices", choices)) {
        choices = NULL; /* set_new consumed it even on failure */
        goto fail;
    }
    choices = NULL;
    if (a->usage && put(out, "usage", 5, json_incref(a->usage)))
        goto fail;

    *json = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (!*json)
        return LLMC_ENOMEM;
    *len = strlen(*json);
    return 0;
fail:
    json_decref(choices);
    json_decref(out);
    return LLMC_ENOMEM;
}

/* ---- replay --------------------------------------------------------------- */

#define DEFAULT_PIECE 24

typedef struct obuf {
    char *p;
    size_t len, cap;
} obuf_t;

static int ob_add(obuf_t *b, const char *s, size_t n)
{
    if (n > SIZE_MAX - b->len - 1)
        return LLMC_ENOMEM;
    int rc = grow((void **)&b->p, &b->cap, b->len + n + 1, 1);
    if (rc)
        return rc;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int ob_cb(const char *buf, size_t size, void *data)
{
    return ob_add(data, buf, size) ? -1 : 0;
}

typedef struct rp {
    obuf_t out;
    json_t *base;       /* the chunk's top-level fields; "choices" set per chunk */
    int kind;
    size_t piece;
    json_t *lp;         /* a chat choice's logprobs, for its next chunk (borrowed) */
} rp_t;

/* Writes base with choices = [c] (c: a new reference, consumed; [] when
 * NULL) as one event. */
static int emit(rp_t *r, json_t *c)
{
    json_t *arr = json_array();
    if (!arr) {
        json_decref(c);
        return LLMC_ENOMEM;
    }
    /* jansson's *_new calls consume the value even when they fail. */
    if (c && json_array_append_new(arr, c)) {
        json_decref(arr);
        return LLMC_ENOMEM;
    }
    if (json_object_set_new(r->base, "choices", arr))
        return LLMC_ENOMEM;
    if (ob_add(&r->out, "data: ", 6) || json_dump_callback(r->base, ob_cb, &r->out, JSON_COMPACT) ||
        ob_add(&r->out, "\n\n", 2))
        return LLMC_ENOMEM;
    return 0;
}

/* A chat chunk's choice; delta (a new reference) is consumed, index, lp and
 * fr are borrowed (NULL: null, or the logprobs pending in r). */
static int emit_delta(rp_t *r, json_t *index, json_t *delta, json_t *lp, json_t *fr)
{
    if (!lp && r->lp) {
        lp = r->lp;
        r->lp = NULL;
    }
    json_t *c = delta ? json_pack("{s:O,s:O,s:O,s:O}", "index", index, "delta", delta, "logprobs",
                                  lp ? lp : json_null(), "finish_reason", fr ? fr : json_null())
                      : NULL;
    json_decref(delta);
    return c ? emit(r, c) : LLMC_ENOMEM;
}

/* A text completion chunk's choice, text s (n bytes); index, lp and fr are
 * borrowed (NULL: null). */
static int emit_textc(rp_t *r, json_t *index, const char *s, size_t n, json_t *lp, json_t *fr)
{
    json_t *c = json_pack("{s:s%,s:O,s:O,s:O}", "text", s, n, "index", index, "logprobs",
                          lp ? lp : json_null(), "finish_reason", fr ? fr : json_null());
    return c ? emit(r, c) : LLMC_ENOMEM;
}

/* How many bytes of s (len) the next piece takes: about want, after a space
 * or newline in the second half of the piece if there is one, otherwise at
 * a UTF-8 character boundary; never zero unless len is. */
static size_t cut(const unsigned char *s, size_t len, size_t want)
{
    if (len <= want)
        return len;
    for (size_t i = want; i > want / 2; i--)
        if (s[i - 1] == ' ' || s[i - 1] == '\n')
            return i;
    size_t i = want;
    while (i > 0 && (s[i] & 0xC0) == 0x80)
        i--;
    if (i == 0) { /* want is smaller than the first character */
        i = 1;
        while (i < len && (s[i] & 0xC0) == 0x80)
            i++;
    }
    return i;
}

/* {key: the string p, n bytes} as a new delta, or NULL without memory. */
static json_t *delta_of(const char *key, size_t klen, const char *p, size_t n)
{
    json_t *d = json_object();
    if (d && json_object_setn_new(d, key, klen, json_stringn(p, n))) {
        json_decref(d);
        d = NULL;
    }
    return d;
}

/* Emits the string s under key (chat: in the delta; text completions: as
 * the choice's text, lp on the first piece) in pieces of about piece bytes;
 * "" as one piece. */
static int emit_text(rp_t *r, json_t *index, const char *key, size_t klen, json_t *s, json_t *lp,
                     size_t piece)
{
    const char *p = json_string_value(s);
    size_t len = json_string_length(s), off = 0;
    do {
        size_t n = cut((const unsigned char *)p + off, len - off, piece);
        int rc = r->kind == K_TEXT
                     ? emit_textc(r, index, p + off, n, off == 0 ? lp : NULL, NULL)
                     : emit_delta(r, index, delta_of(key, klen, p + off, n), NULL, NULL);
        if (rc)
            return rc;
        off += n;
    } while (off < len);
    return 0;
}

/* The head chunk's tool call: index pos first, then every field of tc with
 * function.arguments emptied when it is a string. NULL without memory. */
static json_t *tool_head(json_t *tc, size_t pos, json_t *fn, bool cut_args)
{
    json_t *head = json_pack("{s:I}", "index", (json_int_t)pos);
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(tc, k, klen, v) {
        if (!head)
            break;
        if (key_is(k, klen, "index"))
            continue; /* replaced by the position */
        json_t *val = json_incref(v);
        if (cut_args && v == fn) {
            json_decref(val);
            val = json_copy(fn);
            if (val && json_object_set_new(val, "arguments", json_string(""))) {
                json_decref(val);
                val = NULL;
            }
        }
        if (!val || json_object_setn_new(head, k, klen, val)) {
            json_decref(head);
            head = NULL;
        }
    }
    return head;
}

/* One tool call at position pos: a head chunk with everything but the
 * arguments, then the arguments in pieces. */
static int emit_tool(rp_t *r, json_t *index, json_t *tc, size_t pos)
{
    json_t *fn = json_object_get(tc, "function");
    json_t *args = json_is_object(fn) ? json_object_get(fn, "arguments") : NULL;
    if (!json_is_string(args))
        args = NULL;
    json_t *head = tool_head(tc, pos, fn, args != NULL);
    json_t *d = head ? json_pack("{s:[o]}", "tool_calls", head) : NULL;
    int rc = emit_delta(r, index, d, NULL, NULL);
    if (rc || !args)
        return rc;

    const char *p = json_string_value(args);
    size_t len = json_string_length(args), off = 0;
    while (off < len) {
        size_t n = cut((const unsigned char *)p + off, len - off, r->piece);
        json_t *delta = json_pack("{s:[{s:I,s:{s:s%}}]}", "tool_calls", "index", (json_int_t)pos,
                                  "function", "arguments", p + off, n);
        if ((rc = emit_delta(r, index, delta, NULL, NULL)))
            return rc;
        off += n;
    }
    return 0;
}

static bool lead_text_key(const char *k, size_t klen)
{
    return key_is(k, klen, "reasoning_content") || key_is(k, klen, "reasoning") ||
           key_is(k, klen, "content");
}

/* The piece size for a message's text field. Only content and refusal are
 * cut: the official Node SDK's stream helper appends those, but takes any
 * other field of a delta (reasoning_content, ...) as the whole value, so a
 * pieced one would come out of it as its last piece only. */
static size_t piece_for(const rp_t *r, const char *k, size_t klen)
{
    return key_is(k, klen, "content") || key_is(k, klen, "refusal") ? r->piece : SIZE_MAX;
}

static int replay_chat_choice(rp_t *r, json_t *index, json_t *ch)
{
    json_t *msg = json_object_get(ch, "message");
    if (!json_is_object(msg))
        return LLMC_EINVAL;
    json_t *lp = json_object_get(ch, "logprobs"), *fr = json_object_get(ch, "finish_reason");
    json_t *role = json_object_get(msg, "role"), *content = json_object_get(msg, "content");
    json_t *tools = json_object_get(msg, "tool_calls");
    bool tools_pieced = json_is_array(tools) && json_array_size(tools) > 0;

    /* The head chunk: role, content "" (or its non-text value) and every
     * field whose value is not pieced. */
    json_t *d = json_object();
    if (!d || json_object_set_new(d, "role", role ? json_incref(role) : json_string("assistant")) ||
        json_object_set_new(d, "content", json_is_string(content) ? json_string("")
                                          : content ? json_incref(content) : json_null()))
        goto nomem;
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(msg, k, klen, v) {
        if (key_is(k, klen, "role") || key_is(k, klen, "content"))
            continue;
        if (key_is(k, klen, "tool_calls") ? !tools_pieced
                                          : !json_is_string(v) || first_wins(k, klen))
            if (json_object_setn(d, k, klen, v))
                goto nomem;
    }
    /* The logprobs go on the choice's second chunk, not its first: the
     * official Node SDK's stream helper keeps the first chunk's logprobs
     * object as its own and then appends that same chunk's tokens to it,
     * counting every token twice (OpenAI's first chunk has none to count). */
    int rc = emit_delta(r, index, d, NULL, NULL);
    if (rc)
        return rc;
    r->lp = json_is_null(lp) ? NULL : lp;

    static const char *const lead[] = {"reasoning_content", "reasoning", "content"};
    for (size_t i = 0; i < 3; i++) {
        json_t *s = json_object_get(msg, lead[i]);
        size_t klen_i = strlen(lead[i]);
        if (json_is_string(s) && (json_string_length(s) || i < 2) &&
            (rc = emit_text(r, index, lead[i], klen_i, s, NULL, piece_for(r, lead[i], klen_i))))
            return rc;
    }
    json_object_keylen_foreach(msg, k, klen, v) {
        if (!json_is_string(v) || first_wins(k, klen) || lead_text_key(k, klen) ||
            key_is(k, klen, "tool_calls"))
            continue;
        if ((rc = emit_text(r, index, k, klen, v, NULL, piece_for(r, k, klen))))
            return rc;
    }
    if (tools_pieced) {
        size_t i;
        json_array_foreach(tools, i, v)
            if (json_is_object(v) && (rc = emit_tool(r, index, v, i)))
                return rc;
    }
    return emit_delta(r, index, json_object(), NULL, fr);
nomem:
    json_decref(d);
    return LLMC_ENOMEM;
}

static int replay_text_choice(rp_t *r, json_t *index, json_t *ch)
{
    json_t *lp = json_object_get(ch, "logprobs"), *fr = json_object_get(ch, "finish_reason");
    json_t *text = json_object_get(ch, "text");
    int rc = json_is_string(text) ? emit_text(r, index, "text", 4, text, lp, r->piece)
                                  : emit_textc(r, index, "", 0, lp, NULL);
    return rc ? rc : emit_textc(r, index, "", 0, NULL, fr);
}

/* The chunk's top-level fields: the stored ones but choices and usage, with
 * "object" naming the chunk type. */
static int make_base(rp_t *r, json_t *root)
{
    const char *objname = r->kind == K_TEXT ? "text_completion" : "chat.completion.chunk";
    if (!(r->base = json_object()))
        return LLMC_ENOMEM;
    const char *k;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(root, k, klen, v) {
        if (key_is(k, klen, "choices") || key_is(k, klen, "usage"))
            continue;
        json_t *val = key_is(k, klen, "object") ? json_string(objname) : json_incref(v);
        if (put(r->base, k, klen, val))
            return LLMC_ENOMEM;
    }
    if (!json_object_get(r->base, "object") && put(r->base, "object", 6, json_string(objname)))
        return LLMC_ENOMEM;
    return 0;
}

static int replay_kind(json_t *root, json_t *choices)
{
    const char *obj = json_string_value(json_object_get(root, "object"));
    if (obj && strcmp(obj, "text_completion") == 0)
        return K_TEXT;
    if (obj && strcmp(obj, "chat.completion") == 0)
        return K_CHAT;
    json_t *c0 = json_array_get(choices, 0);
    return c0 && !json_object_get(c0, "message") && json_object_get(c0, "text") ? K_TEXT
                                                                                 : K_CHAT;
}

int llmc_sse_replay(const char *json, size_t len, const llmc_sse_replay_opts_t *o, char **out,
                    size_t *out_len)
{
    if ((!json && len) || !out || !out_len)
        return LLMC_EINVAL;
    rp_t r = {.piece = o && o->piece_bytes ? o->piece_bytes : DEFAULT_PIECE};
    int rc = LLMC_EJSON;
    json_t *root = json_loadb(json ? json : "", len, JSON_ALLOW_NUL, NULL);
    if (!root)
        goto fail;
    json_t *choices = json_object_get(root, "choices");
    rc = LLMC_EINVAL;
    if (!json_is_object(root) || !json_is_array(choices))
        goto fail;
    r.kind = replay_kind(root, choices);
    if ((rc = make_base(&r, root)))
        goto fail;

    size_t i;
    json_t *ch;
    json_array_foreach(choices, i, ch) {
        rc = LLMC_EINVAL;
        if (!json_is_object(ch))
            goto fail;
        json_t *index = json_object_get(ch, "index");
        json_t *pos = index ? json_incref(index) : json_integer((json_int_t)i);
        if (!pos) {
            rc = LLMC_ENOMEM;
            goto fail;
        }
        if (!json_is_integer(pos))
            rc = LLMC_EINVAL;
        else
            rc = r.kind == K_TEXT ? replay_text_choice(&r, pos, ch)
                                  : replay_chat_choice(&r, pos, ch);
        json_decref(pos);
        if (rc)
            goto fail;
    }

    json_t *usage = json_object_get(root, "usage");
    if (o && o->include_usage && usage && !json_is_null(usage)) {
        if (put(r.base, "usage", 5, json_incref(usage)) || emit(&r, NULL)) {
            rc = LLMC_ENOMEM;
            goto fail;
        }
    }
    if ((rc = ob_add(&r.out, "data: [DONE]\n\n", 14)))
        goto fail;
    json_decref(r.base);
    json_decref(root);
    *out = r.out.p;
    *out_len = r.out.len;
    return 0;
fail:
    free(r.out.p);
    json_decref(r.base);
    json_decref(root);
    return rc;
}

/* ---- a shared stream for a client that did not ask for usage ------------- */

bool llmc_sse_is_usage_chunk(const char *data, size_t len)
{
    /* Most chunks never mention usage: spare them the parse. */
    if (!data || !memmem(data, len, "\"usage\"", 7))
        return false;
    json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, NULL);
    json_t *choices = json_object_get(root, "choices"), *usage = json_object_get(root, "usage");
    bool yes = json_is_array(choices) && json_array_size(choices) == 0 && usage &&
               !json_is_null(usage);
    json_decref(root);
    return yes;
}

/* True when the event is a usage chunk; multi-line data is joined first. */
static bool event_is_usage(const llmc_sse_event_t *ev)
{
    if (ev->data_lines == 0)
        return false;
    if (ev->data)
        return llmc_sse_is_usage_chunk(ev->data, ev->data_len);
    char *d = malloc(ev->data_len + 1);
    bool yes = d && llmc_sse_is_usage_chunk(d, llmc_sse_event_data(ev, d, ev->data_len + 1));
    free(d);
    return yes;
}

size_t llmc_sse_drop_usage(const char *buf, size_t len, bool eof, size_t max_event, char *out,
                           size_t *used)
{
    size_t off = 0, w = 0;
    while (off < len) {
        llmc_sse_event_t ev;
        size_t n = 0;
        int rc = eof ? llmc_sse_next_eof(buf + off, len - off, max_event, &ev, &n)
                     : llmc_sse_next(buf + off, len - off, max_event, &ev, &n);
        if (rc == 0 && !eof)
            break; /* an unfinished event: decided once it is whole */
        if (rc != 1) /* the end of the stream, or an event too long to look into */
            n = len - off;
        else if (event_is_usage(&ev))
            n = 0;
        memmove(out + w, buf + off, n); /* out may be buf: w <= off */
        w += n;
        off += rc == 1 ? ev.raw_len : n;
    }
    *used = off;
    return w;
}
