/*
 * semantic/judge.c: the model judge (see judge.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "llmc/error.h"
#include "semantic/judge.h"
#include "upstream/upstream.h"

typedef struct jcall {
    struct jcall *prev, *next;  /* the judge's calls in the air */
    llmc_judge_model_t *jm;
    llmc_upstream_call_t *call;
    int status;
    char *buf;
    size_t len, cap;
    bool too_big;
    llmc_judge_cb cb;
    void *arg;
} jcall_t;

struct llmc_judge_model {
    llmc_upstream_t *up;
    char *url, *model, *auth;
    jcall_t *calls;
};

int llmc_judge_model_parse(const char *body, size_t len, bool *same, uint64_t *tokens)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *c0 = json_array_get(json_object_get(root, "choices"), 0);
    const char *t = json_string_value(json_object_get(json_object_get(c0, "message"), "content"));
    json_t *u = json_object_get(root, "usage");
    json_int_t pt = json_integer_value(json_object_get(u, "prompt_tokens"));
    json_int_t ct = json_integer_value(json_object_get(u, "completion_tokens"));
    int rc = LLMC_EBADRESP;

    *tokens = (pt > 0 ? (uint64_t)pt : 0) + (ct > 0 ? (uint64_t)ct : 0);
    while (t && (*t == ' ' || *t == '\n' || *t == '\t' || *t == '"' || *t == '*'))
        t++;
    if (t && strncasecmp(t, "yes", 3) == 0 && !((t[3] | 32) >= 'a' && (t[3] | 32) <= 'z')) {
        *same = true;
        rc = 0;
    } else if (t && strncasecmp(t, "no", 2) == 0 && !((t[2] | 32) >= 'a' && (t[2] | 32) <= 'z')) {
        *same = false;
        rc = 0;
    }
    json_decref(root);
    return rc;
}

static void call_end(jcall_t *c, int rc, bool same, uint64_t tokens)
{
    llmc_judge_model_t *jm = c->jm;
    if (c->prev)
        c->prev->next = c->next;
    else
        jm->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->cb(c->arg, rc, same, tokens);
    free(c->buf);
    free(c);
}

static void on_head(void *arg, int status, const char *ct, const char *h, size_t hl)
{
    (void)ct;
    (void)h;
    (void)hl;
    ((jcall_t *)arg)->status = status;
}

static void on_data(void *arg, const char *buf, size_t len)
{
    jcall_t *c = arg;
    if (c->too_big || c->len + len > LLMC_JUDGE_MAX_ANSWER) {
        c->too_big = true;
        return;
    }
    if (c->len + len + 1 > c->cap) {
        size_t cap = (c->len + len + 1) * 2;
        char *n = realloc(c->buf, cap);
        if (!n) {
            c->too_big = true;
            return;
        }
        c->buf = n;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, buf, len);
    c->len += len;
}

static void on_done(void *arg, int err, const char *detail)
{
    jcall_t *c = arg;
    bool same = false;
    uint64_t tokens = 0;
    int rc = err;

    (void)detail;
    if (rc == 0 && (c->status < 200 || c->status > 299 || c->too_big))
        rc = LLMC_EUPSTREAM;
    if (rc == 0)
        rc = llmc_judge_model_parse(c->buf, c->len, &same, &tokens);
    call_end(c, rc, same, tokens);
}

llmc_judge_model_t *llmc_judge_model_new(uv_loop_t *loop, const llmc_judge_config_t *cfg)
{
    llmc_judge_model_t *jm = calloc(1, sizeof(*jm));
    if (!jm)
        return NULL;
    llmc_upstream_config_t uc = {
        .connect_timeout_ms = cfg->timeout_ms, .total_timeout_ms = cfg->timeout_ms,
    };
    if (asprintf(&jm->url, "%s/chat/completions", cfg->url ? cfg->url : "") < 0)
        jm->url = NULL;
    jm->model = strdup(cfg->model ? cfg->model : "gpt-4o-mini");
    jm->auth = cfg->auth ? strdup(cfg->auth) : NULL;
    jm->up = llmc_upstream_new(loop, &uc);
    if (!jm->url || !jm->model || (cfg->auth && !jm->auth) || !jm->up) {
        if (jm->up)
            llmc_upstream_close(jm->up, NULL, NULL);
        free(jm->url);
        free(jm->model);
        free(jm->auth);
        free(jm);
        return NULL;
    }
    return jm;
}

static void up_closed(void *arg)
{
    llmc_judge_model_t *jm = arg;
    free(jm->url);
    free(jm->model);
    free(jm->auth);
    free(jm);
}

void llmc_judge_model_free(llmc_judge_model_t *jm)
{
    if (!jm)
        return;
    while (jm->calls) {
        llmc_upstream_cancel(jm->calls->call);
        call_end(jm->calls, LLMC_ECANCELED, false, 0);
    }
    llmc_upstream_close(jm->up, up_closed, jm);
}

int llmc_judge_model_ask(llmc_judge_model_t *jm, const char *a, size_t alen, const char *b,
                         size_t blen, llmc_judge_cb cb, void *arg)
{
    if (alen > LLMC_JUDGE_MAX_TEXT || blen > LLMC_JUDGE_MAX_TEXT)
        return LLMC_E2BIG;
    jcall_t *c = calloc(1, sizeof(*c));
    char *user = malloc(alen + blen + 32), *body = NULL;
    int rc = LLMC_ENOMEM;
    if (!c || !user)
        goto fail;
    int n = sprintf(user, "Answer A:\n");
    memcpy(user + n, a, alen);
    n += (int)alen;
    n += sprintf(user + n, "\n\nAnswer B:\n");
    memcpy(user + n, b, blen);
    n += (int)blen;
    json_t *o = json_pack("{s:s,s:i,s:i,s:[{s:s,s:s},{s:s,s:s%}]}", "model", jm->model,
                          "temperature", 0, "max_tokens", 3, "messages", "role", "system",
                          "content", LLMC_JUDGE_PROMPT, "role", "user", "content", user,
                          (size_t)n);
    body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body)
        goto fail;
    const char *hdrs[2] = {"Content-Type: application/json", jm->auth};
    llmc_upstream_request_t req = {
        .method = "POST", .url = jm->url, .body = body, .body_len = strlen(body),
        .headers = hdrs, .nheaders = jm->auth ? 2 : 1, .allow_resend = true,
        .drop_account_hdrs = true,
    };
    static const llmc_upstream_handler_t h = {on_head, on_data, on_done};
    *c = (jcall_t){.jm = jm, .cb = cb, .arg = arg};
    if ((rc = llmc_upstream_start(jm->up, &req, &h, c, &c->call)) < 0)
        goto fail;
    c->next = jm->calls;
    if (c->next)
        c->next->prev = c;
    jm->calls = c;
    free(user);
    free(body);
    return 0;
fail:
    free(c);
    free(user);
    free(body);
    return rc;
}
