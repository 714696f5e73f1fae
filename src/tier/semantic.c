/*
 * tier/semantic.c: the semantic tier (see semantic.h).
 *
 * A request is split in two: its question (a chat request's last user
 * message, GET /ask's included; a completion's prompt when it is one
 * string) and everything else (route, scope, namespace and the canonical
 * body without the question: model, parameters, system prompt, tools,
 * earlier turns).
 * The second is hashed into the partition key; only questions within one
 * partition are ever compared. The question is embedded with the lexical
 * embedder (or the remote one, semantic/embed.h) and searched for in that
 * partition; the best candidates above the threshold go through the
 * guards, and the first that passes them all is the hit (decide()).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - With the remote embedder a lookup whose text's vector is not cached
 *   goes pending (LLMC_EAGAIN): decide() runs in the embedder's callback on
 *   the lookup's loop, which then calls lk->done. The guards still use the
 *   lexical features (they compare words, not vectors). The index is made
 *   with the first vector, since the model names its dimension.
 * - put() gets only the answer (an entry), never the question. So a lookup
 *   that misses remembers its question (partition, vector, guard features)
 *   under the request's key in a small ring of pending questions, and the
 *   put() of an entry with that key indexes it. An answer stored without a
 *   semantic lookup before it (the tier was off for that request, or the
 *   ring moved on) is simply not indexed.
 * - The tier holds a reference on every entry it indexes, so a semantic hit
 *   does not depend on the memory tier still having the entry; its own
 *   bounds are a number of entries and bytes (the oldest indexed goes
 *   first; the gateway gives it --max-memory, so the answers it keeps alive
 *   after the memory tier let them go never take more than that), and
 *   expired entries are never answered and are swept by tick(). Vectors are
 *   not stored: with a data dir, each indexed question is appended to
 *   semantic.log (key, partition, text), and at start a thread reads the
 *   file, finds each answer again in the disk tier (cfg->store) and embeds
 *   its question anew. A key names its request, so the (key -> partition,
 *   question) pairs never go wrong: a purged or expired answer is simply
 *   not found, and the file is compacted to the answers found.
 * - Only fresh answers are served: a stale one found by similarity is a
 *   guess about a guess.
 * - One mutex guards the index, the records and the pending ring. Each
 *   worker embeds with its own embedder (a Snowball stemmer is not
 *   thread-safe), made at attach, outside the lock; a lookup from a loop
 *   that was never attached (tests) uses the shared one under the lock.
 * - The index's id of a record is its slot in the record array; a freed
 *   slot is reused, and the index entry is deleted before the slot is.
 * - A hit also makes the request's own key an alias of the matched record
 *   (at most LLMC_TIER_SEMANTIC_ALIASES per record), so the same wording
 *   again is found by its key, without embedding or search; it is still a
 *   SEMANTIC-HIT with the similarity it was matched at. An alias lives in
 *   this tier only and goes with its record (expiry, eviction, purge); a
 *   key purge of the alias's own key removes just the alias.
 * - Shadow mode runs the whole decision and then misses: a would-be hit is
 *   kept (a reference) with the pending question, and when the model's
 *   answer is stored the two answers' texts are compared (agreed or
 *   disagreed). A log line says what would have happened and why.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "llmc/error.h"
#include "semantic/embed.h"
#include "semantic/guard.h"
#include "semantic/index.h"
#include "semantic/lexical.h"
#include "tier/semantic.h"

#define CHAT_ROUTE "/v1/chat/completions"
#define COMPLETIONS_ROUTE "/v1/completions"

/* X(field, "name", KIND, "unit", "help"): this tier's own counters. */
#define SEM_XSTATS_TABLE(X)                                                                  \
    X(lookups, "lookups", COUNTER, "lookups", "Questions searched for by similarity.")        \
    X(skipped, "skipped", COUNTER, "lookups",                                                \
      "Lookups not eligible: not chat, no final user message with text, nothing to embed.")  \
    X(alias_hits, "alias_hits", COUNTER, "lookups",                                          \
      "Hits found by the request's key, an alias made by an earlier hit (no search).")       \
    X(declined, "declined", COUNTER, "lookups",                                              \
      "Lookups whose request said no (X-Cache-Semantic: off, \"cache\": {\"semantic\": false}).") \
    X(below_threshold, "below_threshold", COUNTER, "lookups",                                \
      "Misses whose best candidate was under the similarity threshold.")                     \
    X(rejected_numbers, "rejected/numbers", COUNTER, "candidates",                           \
      "Candidates rejected: numbers or units differ.")                                       \
    X(rejected_quotes, "rejected/quotes", COUNTER, "candidates",                             \
      "Candidates rejected: quoted strings differ.")                                         \
    X(rejected_code, "rejected/code", COUNTER, "candidates",                                 \
      "Candidates rejected: code spans differ.")                                             \
    X(rejected_identifiers, "rejected/identifiers", COUNTER, "candidates",                   \
      "Candidates rejected: URLs, paths or identifiers differ.")                             \
    X(rejected_negation, "rejected/negation", COUNTER, "candidates",                         \
      "Candidates rejected: negation or an antonym differs.")                                \
    X(rejected_content, "rejected/content", COUNTER, "candidates",                           \
      "Candidates rejected: a content word only one question has.")                          \
    X(rejected_roles, "rejected/roles", COUNTER, "candidates",                               \
      "Candidates rejected: roles swapped (English to French / French to English).")         \
    X(rejected_order, "rejected/order", COUNTER, "candidates",                               \
      "Candidates rejected: the same words in another order (dogs eat chocolate / chocolate " \
      "eat dogs).")                                                                          \
    X(restored, "restored", COUNTER, "questions",                                           \
      "Questions indexed again at start from --data-dir (their answers found on disk).")     \
    X(embed_timeouts, "embed/timeouts", COUNTER, "lookups",                                  \
      "Lookups whose remote embedding did not come within --semantic-timeout-ms (a miss).")  \
    X(embed_errors, "embed/errors", COUNTER, "lookups",                                      \
      "Lookups whose remote embedding failed (connection, status, a bad answer): a miss.")   \
    X(pending_lost, "pending_lost", COUNTER, "questions",                                    \
      "Missed questions forgotten before their answer was stored (the ring moved on).")      \
    X(shadow_hits, "shadow/would_hit", COUNTER, "lookups",                                   \
      "Shadow mode: lookups that would have been answered by similarity.")                   \
    X(shadow_agreed, "shadow/agreed", COUNTER, "answers",                                    \
      "Shadow mode: the model's answer had the text the would-be hit had.")                  \
    X(shadow_disagreed, "shadow/disagreed", COUNTER, "answers",                              \
      "Shadow mode: the model's answer differed from the would-be hit's.")

typedef struct sem_xstats {
    SEM_XSTATS_TABLE(LLMC_STAT_FIELD)
} sem_xstats_t;

#define LLMC_STAT_TYPE sem_xstats_t
static const llmc_stat_desc_t xstats_desc[] = {SEM_XSTATS_TABLE(LLMC_STAT_DESC)};
#undef LLMC_STAT_TYPE

/* Each guard's rejection counter, by guard id. */
static const size_t rejected_off[LLMC_GUARD_N] = {
    [LLMC_GUARD_NUMBERS] = offsetof(sem_xstats_t, rejected_numbers),
    [LLMC_GUARD_QUOTES] = offsetof(sem_xstats_t, rejected_quotes),
    [LLMC_GUARD_CODE] = offsetof(sem_xstats_t, rejected_code),
    [LLMC_GUARD_IDENTS] = offsetof(sem_xstats_t, rejected_identifiers),
    [LLMC_GUARD_NEGATION] = offsetof(sem_xstats_t, rejected_negation),
    [LLMC_GUARD_CONTENT] = offsetof(sem_xstats_t, rejected_content),
    [LLMC_GUARD_ROLES] = offsetof(sem_xstats_t, rejected_roles),
    [LLMC_GUARD_ORDER] = offsetof(sem_xstats_t, rejected_order),
};
_Static_assert(LLMC_GUARD_N == 8, "a rejection counter (and a row above) per guard");

typedef struct rec {
    llmc_entry_t *e; /* a reference; NULL: the slot is free */
    llmc_guard_q_t *q;
    uint64_t seq;    /* when indexed: the oldest goes first */
    llmc_key_t *aliases; /* malloc'd when the first comes; naliases of them */
    uint8_t naliases;
} rec_t;

/* An alias: a request key whose question was matched to the record at slot. */
typedef struct alias {
    llmc_key_t key;
    uint32_t slot;
    float similarity;
    bool used;
} alias_t;

typedef struct pend {
    bool used;
    llmc_key_t key;  /* the request's: its answer will be stored under it */
    llmc_key_t part;
    llmc_guard_q_t *q;
    llmc_entry_t *would; /* shadow mode: the answer a hit would have served (a reference) */
    char *text;          /* the question, kept when questions are persisted; malloc'd */
    float *vec;          /* the tier's dim floats; malloc'd */
} pend_t;

typedef struct sem_tier {
    llmc_tier_t tier;
    pthread_mutex_t mu;
    float threshold;
    bool shadow;
    void (*log)(void *arg, const char *line);
    void *log_arg;
    llmc_lex_t *lex;   /* shared, under mu */
    llmc_lex_t **wlex; /* per worker, made at attach (main thread, before workers run) */
    llmc_embedder_t **wemb; /* per worker with a remote embedder, beside wlex (nwlex) */
    unsigned nwlex;
    bool remote;            /* vectors from the remote embedder (remote_cfg) */
    llmc_embed_config_t remote_cfg;
    unsigned dim;           /* the vectors'; a remote one's is learnt from the first (0 till then) */
    llmc_vindex_t *ix;
    rec_t *recs;
    size_t cap, live;
    uint32_t *free_slots;
    size_t nfree;
    size_t sweep_at;
    uint64_t seq, bytes, max_bytes;
    alias_t *amap; /* open addressing by key, at most half full; acap 0: none yet */
    size_t acap, acount;
    pend_t pend[LLMC_TIER_SEMANTIC_PENDING];
    size_t pend_next;
    llmc_tier_stats_t st; /* under mu */
    sem_xstats_t xs;      /* under mu */
    /* Persistence (see the top): qfd appends under mu; -1: none. */
    int qfd;
    char *qpath, *oldpath;
    llmc_tier_t *store;
    uint64_t npurges; /* purges seen, under mu: a restore that raced one looks again */
    pthread_t restorer;
    bool restoring;   /* restorer was started: join it */
    _Atomic bool stop;
} sem_tier_t;

static sem_tier_t *impl(llmc_tier_t *t)
{
    return t->impl;
}

/* ---- the question and its partition ----------------------------------------------- */

/* The text of a message's content: a string, or the "text" parts of an
   array joined by newlines. NULL when it has none. malloc'd. */
static char *content_text(json_t *content)
{
    if (json_is_string(content))
        return strndup(json_string_value(content), json_string_length(content));
    if (!json_is_array(content))
        return NULL;
    size_t i, len = 0;
    json_t *part;
    json_array_foreach(content, i, part) {
        json_t *tx = json_object_get(part, "text");
        if (!json_is_string(tx) || !json_is_string(json_object_get(part, "type")) ||
            strcmp(json_string_value(json_object_get(part, "type")), "text") != 0)
            return NULL; /* an image or audio part: not a question to compare by text */
        len += json_string_length(tx) + 1;
    }
    char *s = malloc(len + 1), *p = s;
    if (!s)
        return NULL;
    json_array_foreach(content, i, part) {
        json_t *tx = json_object_get(part, "text");
        if (i)
            *p++ = '\n';
        memcpy(p, json_string_value(tx), json_string_length(tx));
        p += json_string_length(tx);
    }
    *p = '\0';
    return s;
}

static void hash_str(EVP_MD_CTX *ctx, const char *s, size_t n)
{
    uint64_t len = n;
    EVP_DigestUpdate(ctx, &len, sizeof(len)); /* length-prefixed: no field runs into the next */
    EVP_DigestUpdate(ctx, s, n);
}

/* Chat: the last message, a user's with text only, is the question; it
   leaves root. 0 or LLMC_ENOENT. */
static int take_chat_question(json_t *root, char **question)
{
    json_t *msgs = json_object_get(root, "messages"), *last;
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return LLMC_ENOENT;
    last = json_array_get(msgs, json_array_size(msgs) - 1);
    if (!json_is_string(json_object_get(last, "role")) ||
        strcmp(json_string_value(json_object_get(last, "role")), "user") != 0 ||
        json_object_size(last) != 2 /* role and content, no name or anything else */ ||
        !(*question = content_text(json_object_get(last, "content"))))
        return LLMC_ENOENT;
    json_array_remove(msgs, json_array_size(msgs) - 1);
    return 0;
}

/* Completions: a prompt that is one string is the question (a list of
   prompts asks several things at once); it leaves root. */
static int take_prompt(json_t *root, char **question)
{
    json_t *p = json_object_get(root, "prompt");
    if (!json_is_string(p) || !(*question = strndup(json_string_value(p), json_string_length(p))))
        return LLMC_ENOENT;
    json_object_del(root, "prompt");
    return 0;
}

/* The routes the tier answers, and where their question is. Embeddings and
   the rest never are: their answer is not to a question. */
static const struct {
    const char *path;
    int (*take)(json_t *root, char **question);
} routes[] = {
    {CHAT_ROUTE, take_chat_question}, /* GET /ask too: it is a chat request inside */
    {COMPLETIONS_ROUTE, take_prompt},
};

static bool eligible_route(const char *path)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (strcmp(path, routes[i].path) == 0)
            return true;
    return false;
}

/* The question (malloc'd) and the partition of a query. 0, or LLMC_ENOENT
   when the request is not one the tier answers. */
static int split_query(const llmc_tier_query_t *q, char **question, llmc_key_t *part)
{
    json_t *root = NULL;
    char *dump = NULL;
    int rc = LLMC_ENOENT;
    size_t r = 0;

    *question = NULL;
    if (!q->body || !q->path)
        return LLMC_ENOENT;
    while (r < sizeof(routes) / sizeof(routes[0]) && strcmp(q->path, routes[r].path) != 0)
        r++;
    if (r == sizeof(routes) / sizeof(routes[0]))
        return LLMC_ENOENT;
    root = json_loadb(q->body, q->body_len, 0, NULL);
    if (!json_is_object(root) || routes[r].take(root, question) < 0)
        goto done;
    if (!(dump = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS))) {
        rc = LLMC_ENOMEM;
        goto done;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int mdlen = 0;
    if (!ctx) {
        rc = LLMC_ENOMEM;
        goto done;
    }
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    hash_str(ctx, "llmc semantic partition 1", strlen("llmc semantic partition 1"));
    hash_str(ctx, q->path, strlen(q->path));
    hash_str(ctx, q->scope ? q->scope : "", q->scope ? strlen(q->scope) : 0);
    hash_str(ctx, q->ns ? q->ns : "", q->ns ? strlen(q->ns) : 0);
    hash_str(ctx, dump, strlen(dump));
    EVP_DigestFinal_ex(ctx, part->b, &mdlen);
    EVP_MD_CTX_free(ctx);
    rc = mdlen == LLMC_KEY_LEN ? 0 : LLMC_EINVAL;
done:
    free(dump);
    json_decref(root);
    if (rc < 0) {
        free(*question);
        *question = NULL;
    }
    return rc;
}

/* ---- records ---------------------------------------------------------------------- */

/* ---- aliases ---------------------------------------------------------------------- */

static size_t alias_home(const sem_tier_t *s, const llmc_key_t *k)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < LLMC_KEY_LEN; i++)
        h = (h ^ k->b[i]) * 0x100000001b3ull;
    return (size_t)(h ^ (h >> 29)) & (s->acap - 1);
}

static size_t do_alias_find(const sem_tier_t *s, const llmc_key_t *k)
{
    size_t i = alias_home(s, k);
    while (s->amap[i].used && memcmp(s->amap[i].key.b, k->b, LLMC_KEY_LEN) != 0)
        i = (i + 1) & (s->acap - 1);
    return i;
}

/* Removes the map's entry at i, shifting back the ones its hole would hide. */
static void do_alias_remove_at(sem_tier_t *s, size_t i)
{
    size_t mask = s->acap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!s->amap[j].used)
            break;
        size_t home = alias_home(s, &s->amap[j].key);
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            s->amap[i] = s->amap[j];
            i = j;
        }
    }
    s->amap[i] = (alias_t){0};
    s->acount--;
}

static int do_alias_grow(sem_tier_t *s)
{
    size_t ocap = s->acap, cap = ocap ? 2 * ocap : 64;
    alias_t *old = s->amap, *v = calloc(cap, sizeof(*v));
    if (!v)
        return LLMC_ENOMEM;
    s->amap = v;
    s->acap = cap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].used)
            s->amap[do_alias_find(s, &old[i].key)] = old[i];
    free(old);
    return 0;
}

/* Makes key an alias of the record at slot, matched at similarity. Best
   effort: a full record or no memory just means no alias. */
static void do_alias_add(sem_tier_t *s, const llmc_key_t *key, uint32_t slot, float similarity)
{
    rec_t *r = &s->recs[slot];
    if (r->naliases == LLMC_TIER_SEMANTIC_ALIASES)
        return;
    if ((s->acount + 1) * 2 > s->acap && do_alias_grow(s) < 0)
        return;
    size_t i = do_alias_find(s, key);
    if (s->amap[i].used)
        return; /* an alias already (of a record it was matched to first) */
    if (!r->aliases && !(r->aliases = malloc(LLMC_TIER_SEMANTIC_ALIASES * sizeof(llmc_key_t))))
        return;
    r->aliases[r->naliases++] = *key;
    s->amap[i] = (alias_t){.key = *key, .slot = slot, .similarity = similarity, .used = true};
    s->acount++;
}

/* Removes the alias key, and its place in its record's list. */
static bool do_alias_del(sem_tier_t *s, const llmc_key_t *key)
{
    if (!s->acap)
        return false;
    size_t i = do_alias_find(s, key);
    if (!s->amap[i].used)
        return false;
    rec_t *r = &s->recs[s->amap[i].slot];
    for (uint8_t k = 0; k < r->naliases; k++)
        if (memcmp(r->aliases[k].b, key->b, LLMC_KEY_LEN) == 0) {
            r->aliases[k] = r->aliases[--r->naliases];
            break;
        }
    do_alias_remove_at(s, i);
    return true;
}

static void do_rec_drop(sem_tier_t *s, uint32_t slot)
{
    rec_t *r = &s->recs[slot];
    while (r->naliases > 0) {
        llmc_key_t k = r->aliases[r->naliases - 1];
        if (!do_alias_del(s, &k))
            r->naliases--; /* not in the map: cannot be, but never loop */
    }
    free(r->aliases);
    (void)llmc_vindex_delete(s->ix, slot);
    s->bytes -= r->e->mem_bytes + s->dim * sizeof(float);
    llmc_entry_unref(r->e);
    llmc_guard_q_free(r->q);
    *r = (rec_t){0};
    s->free_slots[s->nfree++] = slot;
    s->live--;
}

static long do_rec_find(sem_tier_t *s, const llmc_key_t *key)
{
    /* A scan: it runs only on a store after a semantic miss (a model call
       is under way anyway) and on key purges. */
    for (size_t i = 0; i < s->cap; i++)
        if (s->recs[i].e && memcmp(s->recs[i].e->key.b, key->b, LLMC_KEY_LEN) == 0)
            return (long)i;
    return -1;
}

static void do_evict_oldest(sem_tier_t *s)
{
    size_t oldest = s->cap;
    for (size_t i = 0; i < s->cap; i++)
        if (s->recs[i].e && (oldest == s->cap || s->recs[i].seq < s->recs[oldest].seq))
            oldest = i;
    if (oldest < s->cap) {
        do_rec_drop(s, (uint32_t)oldest);
        s->st.evicted_size++;
    }
}

static void do_pend_clear(pend_t *p)
{
    llmc_guard_q_free(p->q);
    p->q = NULL;
    free(p->text);
    p->text = NULL;
    free(p->vec);
    p->vec = NULL;
    if (p->would)
        llmc_entry_unref(p->would);
    p->would = NULL;
    p->used = false;
}

/* Indexes e (a reference of its own) under part with its question's vector
   and features; q is the record's from now on when this returns 0. The
   key's older record goes first. 0 or LLMC_ENOMEM (counted). */
static int do_index(sem_tier_t *s, llmc_entry_t *e, const llmc_key_t *part, const float *vec,
                    llmc_guard_q_t *q)
{
    long old = do_rec_find(s, &e->key);
    if (old >= 0)
        do_rec_drop(s, (uint32_t)old);
    if (s->live == s->cap)
        do_evict_oldest(s);
    uint32_t slot = s->free_slots[--s->nfree];
    if (llmc_vindex_insert(s->ix, part, slot, vec) < 0) {
        s->free_slots[s->nfree++] = slot;
        s->st.errors++;
        return LLMC_ENOMEM;
    }
    s->recs[slot] = (rec_t){.e = llmc_entry_ref(e), .q = q, .seq = ++s->seq};
    s->live++;
    s->bytes += e->mem_bytes + s->dim * sizeof(float);
    s->st.stored++;
    while (s->max_bytes && s->bytes > s->max_bytes && s->live > 1)
        do_evict_oldest(s);
    return 0;
}

/* ---- persistence ------------------------------------------------------------------ */

/* One question in semantic.log: magic, text length, key, partition, text,
   then the first 8 bytes of SHA-256 over all that (a torn or damaged record
   is skipped: a wrong question under a key could serve a wrong answer). */
#define QLOG_MAGIC 0x31515353u /* "SSQ1" */
#define QLOG_HEAD (8 + 2 * LLMC_KEY_LEN)
#define QLOG_MAX_TEXT (1u << 20)

static void qlog_sum(const uint8_t *rec, size_t len, uint8_t out[8])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(rec, len, md, &mdlen, EVP_sha256(), NULL);
    memcpy(out, md, 8);
}

/* Appends one question (under mu, or before any worker runs). A failed
   write only costs that question its restore: counted as an error. */
static void do_qlog(sem_tier_t *s, const llmc_key_t *key, const llmc_key_t *part,
                    const char *text, size_t len)
{
    if (s->qfd < 0 || len > QLOG_MAX_TEXT)
        return;
    size_t n = QLOG_HEAD + len + 8;
    uint8_t *rec = malloc(n);
    if (!rec) {
        s->st.errors++;
        return;
    }
    uint32_t magic = QLOG_MAGIC, l32 = (uint32_t)len;
    memcpy(rec, &magic, 4);
    memcpy(rec + 4, &l32, 4);
    memcpy(rec + 8, key->b, LLMC_KEY_LEN);
    memcpy(rec + 8 + LLMC_KEY_LEN, part->b, LLMC_KEY_LEN);
    memcpy(rec + QLOG_HEAD, text, len);
    qlog_sum(rec, QLOG_HEAD + len, rec + QLOG_HEAD + len);
    /* O_APPEND: one write() per record, so a crash tears at most the last. */
    if (write(s->qfd, rec, n) != (ssize_t)n)
        s->st.errors++;
    free(rec);
}

/* Reads the next intact record of f: 0, or LLMC_ENOENT at the end (or at
   the first damage: what follows cannot be framed). *text is malloc'd. */
static int qlog_read(FILE *f, llmc_key_t *key, llmc_key_t *part, char **text, size_t *len)
{
    uint8_t head[QLOG_HEAD], sum[8];
    uint32_t magic, l32;
    if (fread(head, 1, QLOG_HEAD, f) != QLOG_HEAD)
        return LLMC_ENOENT;
    memcpy(&magic, head, 4);
    memcpy(&l32, head + 4, 4);
    if (magic != QLOG_MAGIC || l32 > QLOG_MAX_TEXT)
        return LLMC_ENOENT;
    uint8_t *rec = malloc(QLOG_HEAD + l32 + 8);
    if (!rec)
        return LLMC_ENOENT;
    memcpy(rec, head, QLOG_HEAD);
    if (fread(rec + QLOG_HEAD, 1, l32 + 8, f) != l32 + 8) {
        free(rec);
        return LLMC_ENOENT;
    }
    qlog_sum(rec, QLOG_HEAD + l32, sum);
    if (memcmp(sum, rec + QLOG_HEAD + l32, 8) != 0) {
        free(rec);
        return LLMC_ENOENT;
    }
    memcpy(key->b, rec + 8, LLMC_KEY_LEN);
    memcpy(part->b, rec + 8 + LLMC_KEY_LEN, LLMC_KEY_LEN);
    memmove(rec, rec + QLOG_HEAD, l32);
    rec[l32] = '\0';
    *text = (char *)rec;
    *len = l32;
    return 0;
}

/* The answer under key from the store, fresh, and no purge since: with mu
   held on success (the caller indexes, then unlocks). A purge that comes
   between the store's get and the lock makes it look again. */
static llmc_entry_t *restore_find(sem_tier_t *s, const llmc_key_t *key)
{
    for (int tries = 0; tries < 3; tries++) {
        pthread_mutex_lock(&s->mu);
        uint64_t p0 = s->npurges;
        pthread_mutex_unlock(&s->mu);
        llmc_entry_t *e = NULL;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts); /* entries' times are wall-clock */
        int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        if (s->store->ops->get(s->store, key, now, &e) != 0)
            return NULL;
        if (e->expires_ms <= now || !eligible_route(llmc_entry_route(e))) {
            llmc_entry_unref(e);
            return NULL;
        }
        pthread_mutex_lock(&s->mu);
        if (s->npurges == p0)
            return e;
        pthread_mutex_unlock(&s->mu);
        llmc_entry_unref(e);
    }
    return NULL;
}

/* The restore thread: every question of the old file whose answer the
   store still has is embedded, indexed and written to the new file; then
   the old file goes. Serving goes on meanwhile (only mu is shared). */
static void *restore_main(void *arg)
{
    sem_tier_t *s = arg;
    llmc_lex_t *lx = llmc_lex_new();
    FILE *f = fopen(s->oldpath, "rb");
    llmc_key_t key, part;
    char *text;
    size_t len;
    float vec[LLMC_LEX_DIM];

    while (lx && f && !atomic_load(&s->stop) && qlog_read(f, &key, &part, &text, &len) == 0) {
        llmc_guard_q_t *q = NULL;
        llmc_entry_t *e = NULL;
        if (llmc_lex_embed(lx, text, len, vec) > 0 && llmc_guard_q_new(lx, text, len, &q) == 0 &&
            (e = restore_find(s, &key))) {
            /* mu held; an answer indexed since start (a newer question) wins */
            if (do_rec_find(s, &key) < 0 && do_index(s, e, &part, vec, q) == 0) {
                q = NULL;
                s->xs.restored++;
                do_qlog(s, &key, &part, text, len);
            }
            pthread_mutex_unlock(&s->mu);
            llmc_entry_unref(e);
        }
        llmc_guard_q_free(q);
        free(text);
    }
    if (f)
        fclose(f);
    /* Stopped early, the rest stays for the next start. */
    if (lx && !atomic_load(&s->stop))
        unlink(s->oldpath);
    llmc_lex_free(lx);
    return NULL;
}

/* Moves the last run's file aside (appending it to one a stopped restore
   left), opens a new one for appends and starts the restore thread. */
static int persist_open(sem_tier_t *s, const char *dir, llmc_tier_t *store)
{
    if (asprintf(&s->qpath, "%s/semantic.log", dir) < 0 ||
        asprintf(&s->oldpath, "%s/semantic.log.old", dir) < 0)
        return LLMC_ENOMEM;
    s->store = store;
    if (access(s->oldpath, F_OK) != 0) {
        if (rename(s->qpath, s->oldpath) != 0 && errno != ENOENT)
            return LLMC_EIO;
    } else {
        FILE *in = fopen(s->qpath, "rb"), *out = in ? fopen(s->oldpath, "ab") : NULL;
        char buf[65536];
        size_t n;
        while (out && (n = fread(buf, 1, sizeof(buf), in)) > 0)
            if (fwrite(buf, 1, n, out) != n)
                break;
        if (in)
            fclose(in);
        if (out && fclose(out) != 0)
            return LLMC_EIO;
        unlink(s->qpath);
    }
    s->qfd = open(s->qpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (s->qfd < 0)
        return LLMC_EIO;
    if (pthread_create(&s->restorer, NULL, restore_main, s) != 0)
        return LLMC_ENOMEM;
    s->restoring = true;
    return 0;
}

/* ---- shadow mode ------------------------------------------------------------------ */

/* One JSON line (o is consumed): to the configured log, else stderr. */
static void do_log(sem_tier_t *s, json_t *o)
{
    char *line = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    if (!line)
        return;
    if (s->log)
        s->log(s->log_arg, line);
    else
        fprintf(stderr, "%s\n", line);
    free(line);
}

static json_t *hex_of(const llmc_key_t *k)
{
    char hex[2 * LLMC_KEY_LEN + 1];
    llmc_key_hex(k, hex);
    return json_string(hex);
}

/* The text of a chat answer's first choice, or NULL (json_decref *root). */
static const char *answer_text(const llmc_entry_t *e, json_t **root)
{
    *root = json_loadb(e->body, e->body_len, 0, NULL);
    json_t *c = json_object_get(json_array_get(json_object_get(*root, "choices"), 0), "message");
    return json_string_value(json_object_get(c, "content"));
}

/* The model answered a question that would have hit: did it say the same? */
static void do_shadow_compare(sem_tier_t *s, const pend_t *p, const llmc_entry_t *e)
{
    json_t *ra, *rb;
    const char *a = answer_text(p->would, &ra), *b = answer_text(e, &rb);
    bool agreed = a && b ? strcmp(a, b) == 0
                         : p->would->body_len == e->body_len &&
                               memcmp(p->would->body, e->body, e->body_len) == 0;
    json_decref(ra);
    json_decref(rb);
    if (agreed)
        s->xs.shadow_agreed++;
    else
        s->xs.shadow_disagreed++;
    do_log(s, json_pack("{s:s,s:o,s:o,s:b}", "semantic_shadow", "answered", "key",
                        hex_of(&e->key), "would_have_served", hex_of(&p->would->key), "agreed",
                        agreed));
}

/* ---- the ops ---------------------------------------------------------------------- */

/* The decision for a question with its vector (dim floats) and guard
   features (qf, the record's or freed): a hit (0, lk->entry set) or a miss
   that keeps the question for its answer's put(). question and qf are
   taken. */
static int decide(sem_tier_t *s, llmc_tier_lookup_t *lk, char *question, const llmc_key_t *part,
                  llmc_guard_q_t *qf, const float *vec, unsigned dim)
{
    llmc_vindex_hit_t cand[LLMC_TIER_SEMANTIC_CANDIDATES];
    llmc_entry_t *would = NULL;
    float *pvec = malloc(dim * sizeof(float));
    int rc;

    pthread_mutex_lock(&s->mu);
    s->xs.lookups++;
    if (!s->ix) {
        /* The remote model's first vector: its dimension is the index's. */
        if ((s->ix = llmc_vindex_new_opts(
                 dim, &(llmc_vindex_opts_t){.quantize = 1, .ef_search = LLMC_VINDEX_FEW_EF})))
            s->dim = dim;
        else
            s->st.errors++;
    }
    if (!s->ix || dim != s->dim || !pvec) {
        /* A remote model that changed its dimension: nothing to compare with. */
        s->xs.embed_errors += s->ix && dim != s->dim;
        s->st.misses++;
        rc = LLMC_ENOENT;
        goto out;
    }
    float threshold = lk->query->threshold > 0 ? lk->query->threshold : s->threshold;
    size_t n = llmc_vindex_search(s->ix, part, vec, LLMC_TIER_SEMANTIC_CANDIDATES, cand);
    for (size_t i = 0; i < n; i++) {
        if (cand[i].score < threshold) {
            if (i == 0)
                s->xs.below_threshold++;
            break;
        }
        rec_t *r = &s->recs[cand[i].id];
        if (r->e->expires_ms <= lk->now_ms)
            continue;
        char why[LLMC_GUARD_REASON];
        int g = llmc_guard_check(r->q, qf, why);
        if (g >= 0) {
            (*(uint64_t *)(void *)((char *)&s->xs + rejected_off[g]))++;
            if (s->shadow)
                do_log(s, json_pack("{s:s,s:o,s:o,s:f,s:s,s:s}", "semantic_shadow", "rejected",
                                    "key", hex_of(&lk->query->key), "candidate",
                                    hex_of(&r->e->key), "similarity", (double)cand[i].score,
                                    "guard", llmc_guard_name(g), "reason", why));
            continue;
        }
        if (s->shadow) {
            /* What would have been served; the lookup misses all the same. */
            s->xs.shadow_hits++;
            would = llmc_entry_ref(r->e);
            do_log(s, json_pack("{s:s,s:o,s:o,s:f}", "semantic_shadow", "would_hit", "key",
                                hex_of(&lk->query->key), "matched", hex_of(&r->e->key),
                                "similarity", (double)cand[i].score));
            break;
        }
        lk->entry = llmc_entry_ref(r->e);
        lk->similarity = cand[i].score;
        s->st.hits++;
        do_alias_add(s, &lk->query->key, (uint32_t)cand[i].id, cand[i].score);
        rc = 0;
        goto out;
    }
    /* A miss: keep the question for its answer's put(). */
    s->st.misses++;
    pend_t *p = NULL;
    for (size_t i = 0; i < LLMC_TIER_SEMANTIC_PENDING && !p; i++)
        if (s->pend[i].used && memcmp(s->pend[i].key.b, lk->query->key.b, LLMC_KEY_LEN) == 0)
            p = &s->pend[i]; /* the same request again (two misses at once): one place */
    if (!p) {
        p = &s->pend[s->pend_next];
        s->pend_next = (s->pend_next + 1) % LLMC_TIER_SEMANTIC_PENDING;
        if (p->used)
            s->xs.pending_lost++;
    }
    do_pend_clear(p);
    memcpy(pvec, vec, dim * sizeof(float));
    *p = (pend_t){.used = true, .key = lk->query->key, .part = *part, .q = qf, .would = would,
                  .vec = pvec};
    pvec = NULL;
    qf = NULL;
    if (s->qfd >= 0) {
        p->text = question;
        question = NULL;
    }
    rc = LLMC_ENOENT;
out:
    pthread_mutex_unlock(&s->mu);
    free(pvec);
    llmc_guard_q_free(qf);
    free(question);
    return rc;
}

/* A lookup waiting for the remote embedder. */
typedef struct sem_wait {
    sem_tier_t *s;
    llmc_tier_lookup_t *lk;
    char *question;
    llmc_key_t part;
    llmc_guard_q_t *qf;
    llmc_embed_req_t *req;
} sem_wait_t;

static void wait_free(sem_wait_t *w)
{
    llmc_guard_q_free(w->qf);
    free(w->question);
    free(w);
}

/* The embedder answered (on the lookup's loop): decide, then finish the lookup. */
static void on_vector(void *arg, int rc, const float *vec, unsigned dim)
{
    sem_wait_t *w = arg;
    sem_tier_t *s = w->s;
    llmc_tier_lookup_t *lk = w->lk;

    if (rc == 0) {
        rc = decide(s, lk, w->question, &w->part, w->qf, vec, dim);
        w->question = NULL;
        w->qf = NULL;
    } else if (rc != LLMC_ECANCELED) {
        pthread_mutex_lock(&s->mu);
        s->xs.lookups++;
        s->st.misses++;
        if (rc == LLMC_ETIMEDOUT)
            s->xs.embed_timeouts++;
        else
            s->xs.embed_errors++;
        pthread_mutex_unlock(&s->mu);
        rc = LLMC_ENOENT;
    }
    wait_free(w);
    lk->done(lk, rc);
}

static int sem_lookup(llmc_tier_t *t, llmc_tier_lookup_t *lk)
{
    sem_tier_t *s = impl(t);
    llmc_guard_q_t *qf = NULL;
    llmc_key_t part;
    char *question = NULL;
    float vec[LLMC_LEX_DIM];

    lk->entry = NULL;
    if (!lk->query->similar) {
        /* Nor is its answer indexed: the client asked to stay out of it. */
        pthread_mutex_lock(&s->mu);
        s->xs.declined++;
        pthread_mutex_unlock(&s->mu);
        return LLMC_ENOENT;
    }
    /* The same wording as an earlier hit: its alias, no search. */
    pthread_mutex_lock(&s->mu);
    if (s->acap) {
        const alias_t *al = &s->amap[do_alias_find(s, &lk->query->key)];
        const rec_t *r = al->used ? &s->recs[al->slot] : NULL;
        if (r && r->e->expires_ms > lk->now_ms && !s->shadow &&
            al->similarity >= (lk->query->threshold > 0 ? lk->query->threshold : s->threshold)) {
            lk->entry = llmc_entry_ref(r->e);
            lk->similarity = al->similarity;
            s->st.hits++;
            s->xs.alias_hits++;
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (split_query(lk->query, &question, &part) < 0) {
        pthread_mutex_lock(&s->mu);
        s->xs.skipped++;
        pthread_mutex_unlock(&s->mu);
        return LLMC_ENOENT;
    }
    /* The worker's own embedder works outside the lock; the shared one in it. */
    llmc_lex_t *lx = lk->worker < s->nwlex ? s->wlex[lk->worker] : NULL;
    llmc_embedder_t *em = s->remote && lk->worker < s->nwlex ? s->wemb[lk->worker] : NULL;
    size_t qlen = strlen(question);
    bool embedded;
    if (!lx)
        pthread_mutex_lock(&s->mu);
    llmc_lex_t *use = lx ? lx : s->lex;
    embedded = llmc_guard_q_new(use, question, qlen, &qf) == 0 &&
               (s->remote ? em != NULL : llmc_lex_embed(use, question, qlen, vec) > 0);
    if (!lx)
        pthread_mutex_unlock(&s->mu);
    if (!embedded) {
        pthread_mutex_lock(&s->mu);
        s->xs.lookups++;
        s->xs.skipped++;
        pthread_mutex_unlock(&s->mu);
        llmc_guard_q_free(qf);
        free(question);
        return LLMC_ENOENT;
    }
    if (!s->remote)
        return decide(s, lk, question, &part, qf, vec, LLMC_LEX_DIM);
    /* The remote embedder: from its cache at once, else the lookup waits. */
    sem_wait_t *w = malloc(sizeof(*w));
    const float *cached = NULL;
    unsigned dim = 0;
    int rc = w ? llmc_embed_get(em, question, qlen, &cached, &dim, on_vector, w, &w->req)
               : LLMC_ENOMEM;
    if (rc == 1) {
        free(w);
        return decide(s, lk, question, &part, qf, cached, dim);
    }
    if (rc < 0) {
        free(w);
        llmc_guard_q_free(qf);
        free(question);
        pthread_mutex_lock(&s->mu);
        s->xs.embed_errors++;
        pthread_mutex_unlock(&s->mu);
        return LLMC_ENOENT;
    }
    *w = (sem_wait_t){.s = s, .lk = lk, .question = question, .part = part, .qf = qf,
                      .req = w->req};
    return LLMC_EAGAIN;
}

static int sem_put(llmc_tier_t *t, unsigned worker, llmc_entry_t *e, int64_t now_ms)
{
    sem_tier_t *s = impl(t);
    pend_t *p = NULL;

    (void)worker;
    if (!eligible_route(llmc_entry_route(e)) || e->expires_ms <= now_ms)
        return 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < LLMC_TIER_SEMANTIC_PENDING && !p; i++)
        if (s->pend[i].used && memcmp(s->pend[i].key.b, e->key.b, LLMC_KEY_LEN) == 0)
            p = &s->pend[i];
    if (!p)
        goto out; /* its question was never seen here */
    if (p->would)
        do_shadow_compare(s, p, e);
    if (do_index(s, e, &p->part, p->vec, p->q) == 0) {
        p->q = NULL;
        if (p->text)
            do_qlog(s, &e->key, &p->part, p->text, strlen(p->text));
    }
    do_pend_clear(p);
out:
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void sem_purge(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                      llmc_tier_purge_cb done, void *arg)
{
    sem_tier_t *s = impl(t);
    size_t n = 0;

    (void)worker;
    pthread_mutex_lock(&s->mu);
    if (llmc_purge_is_key(sel)) {
        long i = do_rec_find(s, &sel->key);
        if (i >= 0) {
            do_rec_drop(s, (uint32_t)i);
            n++;
        }
        /* The key of a request that was answered by similarity: the way to
           that answer goes, the answer stays for its own question. */
        n += do_alias_del(s, &sel->key);
    } else {
        for (size_t i = 0; i < s->cap; i++)
            if (s->recs[i].e && llmc_purge_match(sel, s->recs[i].e)) {
                do_rec_drop(s, (uint32_t)i);
                n++;
            }
    }
    s->st.purged += n;
    s->npurges++;
    pthread_mutex_unlock(&s->mu);
    done(arg, n);
}

static void sem_tick(llmc_tier_t *t, int64_t now_ms)
{
    sem_tier_t *s = impl(t);

    pthread_mutex_lock(&s->mu);
    for (size_t k = 0; k < LLMC_TIER_SEMANTIC_SWEEP_BUDGET && k < s->cap; k++) {
        size_t i = s->sweep_at;
        s->sweep_at = (s->sweep_at + 1) % s->cap;
        if (s->recs[i].e && s->recs[i].e->expires_ms <= now_ms) {
            do_rec_drop(s, (uint32_t)i);
            s->st.evicted_ttl++;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

static void sem_stats(llmc_tier_t *t, llmc_tier_stats_t *out)
{
    sem_tier_t *s = impl(t);

    pthread_mutex_lock(&s->mu);
    *out = s->st;
    out->entries = s->live;
    out->bytes = s->bytes;
    out->max_bytes = s->max_bytes;
    pthread_mutex_unlock(&s->mu);
}

static void sem_xstats(llmc_tier_t *t, void *out)
{
    sem_tier_t *s = impl(t);

    pthread_mutex_lock(&s->mu);
    *(sem_xstats_t *)out = s->xs;
    pthread_mutex_unlock(&s->mu);
}

/* Main thread, before worker runs: its own embedder. */
static int sem_attach(llmc_tier_t *t, unsigned worker, struct uv_loop_s *loop)
{
    sem_tier_t *s = impl(t);

    (void)loop;
    if (worker >= s->nwlex) {
        llmc_lex_t **v = realloc(s->wlex, (worker + 1) * sizeof(*v));
        if (v)
            s->wlex = v;
        llmc_embedder_t **ev = v ? realloc(s->wemb, (worker + 1) * sizeof(*ev)) : NULL;
        if (!ev)
            return LLMC_ENOMEM;
        memset(v + s->nwlex, 0, (worker + 1 - s->nwlex) * sizeof(*v));
        memset(ev + s->nwlex, 0, (worker + 1 - s->nwlex) * sizeof(*ev));
        s->wemb = ev;
        s->nwlex = worker + 1;
    }
    if (!s->wlex[worker] && !(s->wlex[worker] = llmc_lex_new()))
        return LLMC_ENOMEM;
    if (s->remote && !s->wemb[worker] && !(s->wemb[worker] = llmc_embed_new(loop, &s->remote_cfg)))
        return LLMC_ENOMEM;
    return 0;
}

/* The lexical embedder stays until destroy (a worker's loop may still ask
   while shutting down); a remote one goes, ending its waiting lookups as
   cancelled (on this loop, as detach requires). */
static void sem_detach(llmc_tier_t *t, unsigned worker)
{
    sem_tier_t *s = impl(t);

    if (worker < s->nwlex && s->wemb[worker]) {
        llmc_embedder_t *em = s->wemb[worker];
        s->wemb[worker] = NULL; /* a lookup now misses without waiting */
        llmc_embed_free(em);
    }
}

static void semantic_destroy(llmc_tier_t *t)
{
    sem_tier_t *s = impl(t);

    atomic_store(&s->stop, true);
    if (s->restoring)
        pthread_join(s->restorer, NULL);
    if (s->qfd >= 0)
        close(s->qfd);
    free(s->qpath);
    free(s->oldpath);
    for (size_t i = 0; s->recs && i < s->cap; i++)
        if (s->recs[i].e) {
            llmc_entry_unref(s->recs[i].e);
            llmc_guard_q_free(s->recs[i].q);
            free(s->recs[i].aliases);
        }
    free(s->amap);
    for (size_t i = 0; i < LLMC_TIER_SEMANTIC_PENDING; i++)
        do_pend_clear(&s->pend[i]);
    for (unsigned i = 0; i < s->nwlex; i++)
        llmc_lex_free(s->wlex[i]);
    free(s->wlex);
    free(s->wemb);
    free((char *)s->remote_cfg.url);
    free((char *)s->remote_cfg.model);
    free((char *)s->remote_cfg.key);
    free(s->recs);
    free(s->free_slots);
    llmc_vindex_free(s->ix);
    llmc_lex_free(s->lex);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static const llmc_tier_ops_t semantic_ops = {
    .name = "semantic",
    .wants_query = true,
    .lookup = sem_lookup,
    .put = sem_put,
    .purge = sem_purge,
    .tick = sem_tick,
    .stats = sem_stats,
    .xstats_desc = xstats_desc,
    .nxstats = sizeof(xstats_desc) / sizeof(xstats_desc[0]),
    .xstats = sem_xstats,
    .attach = sem_attach,
    .detach = sem_detach,
    .destroy = semantic_destroy,
};

llmc_tier_t *llmc_tier_semantic_new(const llmc_semantic_config_t *cfg)
{
    sem_tier_t *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->qfd = -1;
    s->threshold = cfg && cfg->threshold > 0 ? cfg->threshold : LLMC_TIER_SEMANTIC_THRESHOLD;
    s->shadow = cfg && cfg->shadow;
    s->log = cfg ? cfg->log : NULL;
    s->log_arg = cfg ? cfg->log_arg : NULL;
    s->cap = cfg && cfg->max_entries ? cfg->max_entries : LLMC_TIER_SEMANTIC_MAX_ENTRIES;
    s->max_bytes = cfg ? cfg->max_bytes : 0;
    if (s->cap > UINT32_MAX)
        s->cap = UINT32_MAX;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return NULL;
    }
    s->tier.ops = &semantic_ops;
    s->tier.impl = s;
    s->lex = llmc_lex_new();
    if (cfg && cfg->remote) {
        /* Its dimension is the model's: the index comes with the first vector. */
        s->remote = true;
        s->remote_cfg = *cfg->remote;
        s->remote_cfg.url = strdup(cfg->remote->url ? cfg->remote->url : "");
        s->remote_cfg.model = cfg->remote->model ? strdup(cfg->remote->model) : NULL;
        s->remote_cfg.key = cfg->remote->key ? strdup(cfg->remote->key) : NULL;
    } else {
        s->dim = LLMC_LEX_DIM;
        s->ix = llmc_vindex_new_opts(
            LLMC_LEX_DIM, &(llmc_vindex_opts_t){.quantize = 1, .ef_search = LLMC_VINDEX_FEW_EF});
    }
    s->recs = calloc(s->cap, sizeof(*s->recs));
    s->free_slots = malloc(s->cap * sizeof(*s->free_slots));
    if (!s->lex || (!s->remote && !s->ix) || !s->recs || !s->free_slots ||
        (s->remote && (!s->remote_cfg.url || (cfg->remote->model && !s->remote_cfg.model) ||
                       (cfg->remote->key && !s->remote_cfg.key)))) {
        semantic_destroy(&s->tier);
        return NULL;
    }
    /* Slot 0 is handed out first. */
    for (size_t i = 0; i < s->cap; i++)
        s->free_slots[i] = (uint32_t)(s->cap - 1 - i);
    s->nfree = s->cap;
    /* Questions are embedded anew at start: the lexical embedder's only. */
    if (cfg && cfg->dir && cfg->store && !s->remote && persist_open(s, cfg->dir, cfg->store) < 0) {
        semantic_destroy(&s->tier);
        return NULL;
    }
    return &s->tier;
}
