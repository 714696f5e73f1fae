/*
 * tier/semantic.c: the semantic tier (see semantic.h).
 *
 * A request is split in two: its question (a chat request's last user
 * message, GET /ask's included; a completion's prompt when it is one
 * string) and everything else (route, scope, namespace and the canonical
 * body without the question: model, parameters, system prompt, tools,
 * earlier turns).
 * The second is hashed into the partition key; only questions within one
 * partition are ever compared. The question is embedded through
 * semantic/embedder.h (the lexical embedder, or the remote one: the tier
 * only sees the interface) and searched for in that partition; the best candidates above the threshold go through the
 * guards, and the first that passes them all is the hit (decide()).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - An embedder that answers later (the remote one, for a text it has
 *   not cached) makes the lookup pending (LLMC_EAGAIN): decide() runs in the embedder's callback on
 *   the lookup's loop, which then calls lk->done. The guards still use the
 *   lexical features (they compare words, not vectors). The index is made
 *   with the first vector, since the model names its dimension.
 * - put() gets only the answer (an entry), never the question. So a lookup
 *   that misses remembers its question (partition, vector, text) under the
 *   request's key in a small ring of pending questions, and the put() of an
 *   entry with that key indexes it. An answer stored without a semantic
 *   lookup before it (the tier was off for that request, or the ring moved
 *   on) is simply not indexed.
 * - A question's guard features cost more than its embedding, and most
 *   misses need none: a lookup makes them only when a candidate clears the
 *   threshold (the guards then judge it), and put() makes the stored
 *   record's from the pending question's text when the lookup did not. put()
 *   runs when the model's answer has come, so that work adds nothing to the
 *   miss's wait.
 * - The tier holds a reference on every entry it indexes, so a semantic hit
 *   does not depend on the memory tier still having the entry; its own
 *   bounds are a number of entries and bytes (the oldest indexed goes
 *   first; the gateway gives it --max-memory, so the answers it keeps alive
 *   after the memory tier let them go never take more than that), and
 *   expired entries are never answered and are swept by tick(). With a data
 *   dir each indexed question is appended to semantic.log with its vector
 *   and the id of the embedder that made it (tier/semantic_log.h), and at
 *   start a thread reads the file, finds each answer again in the disk tier
 *   (cfg->store) and indexes it with the stored vector when the id is this
 *   tier's embedder's. Otherwise the lexical embedder embeds the question
 *   anew (microseconds), and a remote one's tier drops it: a restart makes
 *   no embedding call. A key names its request, so the (key -> partition,
 *   question) pairs never go wrong: a purged or expired answer is simply
 *   not found, and the file is compacted to the answers found.
 * - Questions are shared with other gateways (issue 19, tier/redis_vec.c):
 *   put() hands the record of each question indexed from this gateway's
 *   traffic to the share hook, after the locks are let go; a peer's question
 *   comes back through llmc_tier_semantic_add_peer with its answer already
 *   read from Redis, so the tier holds it like its own and a purge (which
 *   the Redis tier's pub/sub brings to every tier) removes it the same way.
 *   Restored and peers' questions are never shared again.
 * - Only fresh answers are served: a stale one found by similarity is a
 *   guess about a guess.
 * - Two locks, always taken in one order: rw, then mu (never rw while
 *   holding mu; asserted by rd_lock/wr_lock). rw guards the index and the
 *   record slots: read-held while a lookup searches and judges the
 *   candidates whose ids the search gave (so no slot is freed or reused
 *   under it), write-held by everything that inserts in or deletes from
 *   the index or fills or frees a slot (do_index, do_rec_drop: put, purge,
 *   the expiry sweep, eviction, peers' questions, restore). So lookups on
 *   different workers search at once (the index allows many searches
 *   beside no writer, semantic/index.h). mu guards the rest: counters, the
 *   pending ring, aliases, learned states, the files, the shared lexical
 *   tools; a writer holds both. Each worker embeds and makes guard features
 *   with its own tools (a Snowball stemmer is not thread-safe), made at
 *   attach, outside mu; a loop that was never attached (tests) uses the
 *   shared ones under mu.
 * - The index's id of a record is its slot in the record array; a freed
 *   slot is reused, and the index entry is deleted before the slot is.
 *   Records are found by their key through a key -> slot map (recmap), and
 *   chained oldest to newest in a list through their slots, so neither a
 *   store nor a peer's question nor eviction scans the slots (a gateway
 *   catching up on 100k shared questions did, under mu). do_index and
 *   do_rec_drop are the only places a slot is filled or freed, and keep
 *   both in step with it.
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
 * - Verification (issue 16, semantic/verify.h) reuses that comparison: a
 *   sampled hit is served AND kept as a pending question (PEND_VERIFY); the
 *   gateway sends the request upstream in the background, and the put() of
 *   its answer under the request's own key judges the two answers. A probe
 *   (a candidate in the uncertain band) and a candidate held back while the
 *   namespace is exact-only miss and are judged the same way, for free.
 *   Learned states live in their own map by answer key (not in rec_t), so
 *   they can be loaded before the restorer brings the records back; they
 *   go when their record goes (do_rec_drop), in the map and in the file.
 */
#include <assert.h>
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
#include "llmc/keymap.h"
#include "semantic/embedder.h"
#include "semantic/guard.h"
#include "semantic/index.h"
#include "semantic/judge.h"
#include "semantic/lexical.h"
#include "semantic/verify.h"
#include "tier/semantic.h"
#include "tier/semantic_log.h"

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
    X(search_widened, "search/widened", COUNTER, "lookups",                                  \
      "Graph searches whose narrow walk found a question near the threshold and widened "      \
      "(--semantic-search-narrow, --semantic-search-margin).")                              \
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
    X(restore_reembedded, "restore/reembedded", COUNTER, "questions",                        \
      "Restored questions embedded anew (their stored vector was another embedder's).")      \
    X(peer_shared, "peer/shared", COUNTER, "questions",                                      \
      "Questions indexed here handed to the other gateways (--redis: the semantic stream).")  \
    X(peer_indexed, "peer/indexed", COUNTER, "questions",                                    \
      "Other gateways' questions indexed here, their answers read from Redis.")              \
    X(peer_regained, "peer/regained", COUNTER, "questions",                                  \
      "This gateway's own questions indexed again from the stream after a resync dropped them.") \
    X(peer_refused, "peer/refused", COUNTER, "questions",                                    \
      "Other gateways' questions not indexed: another embedder's vector (remote), or none.")  \
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
      "Shadow mode: the model's answer differed from the would-be hit's.")                   \
    X(verify_sampled, "verify/sampled", COUNTER, "hits",                                     \
      "Semantic hits also sent to the model in the background (--semantic-verify).")         \
    X(verify_over_budget, "verify/over_budget", COUNTER, "hits",                             \
      "Hits sampled for verification but over --semantic-verify-per-minute: not verified.")  \
    X(verify_right, "verify/right", COUNTER, "answers",                                      \
      "Verified hits whose answer the judge found equivalent to the model's.")               \
    X(verify_wrong, "verify/wrong", COUNTER, "answers",                                      \
      "Verified hits whose answer the judge found different from the model's.")              \
    X(verify_unjudged, "verify/unjudged", COUNTER, "answers",                                \
      "Outcomes the judge could not read (no answer text, too long): not counted.")          \
    X(verify_tokens, "verify/tokens", COUNTER, "tokens",                                     \
      "Tokens (prompt and completion) of the verification and judge model calls.")           \
    X(probes, "verify/probes", COUNTER, "lookups",                                           \
      "Candidates not served for want of evidence (under --semantic-max-error) or in the "    \
      "uncertain band: a miss whose model answer is compared with theirs (no extra call).")  \
    X(probes_wrong, "verify/probes_wrong", COUNTER, "answers",                               \
      "Probes whose model answer differed from the candidate's.")                            \
    X(verify_refused, "verify/refused", COUNTER, "candidates",                               \
      "Candidates refused by their answer's learned threshold, or barred (verified wrong).") \
    X(fallback_misses, "verify/fallback_misses", COUNTER, "lookups",                         \
      "Lookups of a namespace fallen back to exact-only (its measured error over budget).")  \
    X(verify_lost, "verify/states_lost", COUNTER, "answers",                                 \
      "Learned states not kept: the table of them was full.")                                \
    X(judge_calls, "verify/judge_calls", COUNTER, "calls",                                   \
      "Calls to the judge model (--semantic-judge model); their tokens are in tokens.")

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

#define NO_SLOT UINT32_MAX /* the end of the age list (cap is at most UINT32_MAX) */

typedef struct rec {
    llmc_entry_t *e; /* a reference; NULL: the slot is free */
    llmc_guard_q_t *q;
    uint32_t older, newer; /* the age list's neighbours' slots, or NO_SLOT */
    llmc_key_t *aliases; /* malloc'd when the first comes; naliases of them */
    uint8_t naliases;
} rec_t;

/* An alias (the value in amap, by the alias's key): a request key whose
   question was matched to the record at slot. */
typedef struct alias {
    uint32_t slot;
    float similarity;
} alias_t;

typedef struct pend {
    bool used;
    llmc_key_t key;  /* the request's: its answer will be stored under it */
    llmc_key_t part;
    llmc_guard_q_t *q;   /* the question's features, when its lookup made them; else NULL */
    llmc_entry_t *would; /* shadow mode, a probe, a verified hit: the answer served or
                            that would have been (a reference) */
    uint8_t kind;        /* PEND_*: what to do with would when the answer comes */
    llmc_key_t matched;  /* would's record's key (its learned state's) */
    float sim;           /* the similarity would was matched at */
    uint16_t ns;         /* the request's namespace row */
    char *text;          /* the question (its features come from it); malloc'd */
    float *vec;          /* the tier's dim floats; malloc'd */
} pend_t;

/* What a pending question's would is for. */
enum {
    PEND_SHADOW,   /* shadow mode: compared and logged */
    PEND_VERIFY,   /* a served hit, verified by a background call */
    PEND_PROBE,    /* a candidate in the uncertain band, not served */
    PEND_FALLBACK, /* a candidate that would have been served, not (exact-only) */
};

/* A namespace's measurement. */
typedef struct vns_row {
    char name[128];
    llmc_vns_t m;
} vns_row_t;

typedef struct sem_tier {
    llmc_tier_t tier;
    pthread_rwlock_t rw; /* the index and the record slots (see the top); before mu */
    pthread_mutex_t mu;
    float threshold;
    unsigned search_ef, search_narrow; /* the index walk (llmc_semantic_config_t) */
    float search_margin;
    bool search_floats;
    bool shadow;
    void (*log)(void *arg, const char *line);
    void *log_arg;
    llmc_lex_t *lex;   /* shared, under mu: the guards' features */
    llmc_embedder_t *emb; /* shared, under mu: the lexical embedder (NULL when remote) */
    llmc_lex_t **wlex; /* per worker, made at attach (main thread, before workers run) */
    llmc_embedder_t **wemb; /* per worker, beside wlex (nwlex) */
    unsigned nwlex;
    bool remote;            /* vectors from the remote embedder (remote_cfg) */
    llmc_embed_config_t remote_cfg;
    char emb_id[LLMC_EMBEDDER_ID_MAX]; /* what makes this tier's vectors */
    unsigned dim;           /* the vectors'; a remote one's is learnt from the first (0 till then) */
    llmc_vindex_t *ix;
    rec_t *recs;
    size_t cap, live;
    uint32_t *free_slots;
    size_t nfree;
    size_t sweep_at;
    uint64_t bytes, max_bytes;
    llmc_keymap_t recmap; /* a live record's entry key -> its slot (uint32_t) */
    uint32_t oldest, newest; /* the age list's ends; NO_SLOT when empty */
    llmc_keymap_t amap;   /* alias key -> alias_t; at most ALIASES per record */
    pend_t pend[LLMC_TIER_SEMANTIC_PENDING];
    size_t pend_next;
    llmc_tier_stats_t st; /* under mu */
    sem_xstats_t xs;      /* under mu */
    /* Verification (semantic/verify.h), under mu. */
    bool verifying;         /* max_error or verify_rate set */
    double max_error, verify_rate;
    llmc_judge_t judge;
    float judge_bound, vstart, vband;
    llmc_vrate_t vrate;
    uint64_t rng;
    llmc_keymap_t vmap;     /* answer key -> llmc_vstate_t: what it learned */
    vns_row_t *nss;         /* LLMC_TIER_SEMANTIC_NS of them, nns used */
    unsigned nns;
    llmc_judge_config_t jcfg;      /* judge LLMC_JUDGE_MODEL: strings owned */
    llmc_judge_model_t **wjudge;   /* per worker, made at attach; nwjudge of them */
    unsigned nwjudge;
    int vfd;                /* semantic-verify.log, appended; -1: none */
    char *vpath;
    uint64_t vlog_bytes;    /* its size: compacted by tick() past VLOG_SLACK x the live states */
    /* Persistence (see the top): qfd appends under mu; -1: none. */
    int qfd;
    char *qpath, *oldpath;
    llmc_tier_t *store;
    uint64_t npurges; /* purges seen, under mu: a restore that raced one looks again */
    pthread_t restorer;
    bool restoring;   /* restorer was started: join it */
    _Atomic bool stop;
    /* Sharing (issue 19): the questions indexed from this gateway's own
       traffic go to share (set before the workers run). */
    llmc_semantic_share_fn share;
    void *share_arg;
} sem_tier_t;

static sem_tier_t *impl(llmc_tier_t *t)
{
    return t->impl;
}

/* What this thread holds, of which tier: the lock order (rw, then mu) and
   the do_ functions' needs are asserted from it. */
static _Thread_local struct {
    const struct sem_tier *rw, *mu;
    bool write;
} held;

static void rd_lock(sem_tier_t *s)
{
    assert(!held.rw && !held.mu); /* rw first; and never twice (writers are preferred) */
    pthread_rwlock_rdlock(&s->rw);
    held.rw = s;
    held.write = false;
}

static void wr_lock(sem_tier_t *s)
{
    assert(!held.rw && !held.mu);
    pthread_rwlock_wrlock(&s->rw);
    held.rw = s;
    held.write = true;
}

static void rw_unlock(sem_tier_t *s)
{
    assert(held.rw == s);
    held.rw = NULL;
    pthread_rwlock_unlock(&s->rw);
}

static void mu_lock(sem_tier_t *s)
{
    assert(held.mu != s);
    pthread_mutex_lock(&s->mu);
    held.mu = s;
}

static void mu_unlock(sem_tier_t *s)
{
    assert(held.mu == s);
    held.mu = NULL;
    pthread_mutex_unlock(&s->mu);
}

/* The slots (and the index) may be read: rw held, either way. */
#define ASSERT_READS(s) assert(held.rw == (s))
/* They may change: rw held for writing, and mu. */
#define ASSERT_WRITES(s) assert(held.rw == (s) && held.write && held.mu == (s))
/* Slots read and what mu guards changed (aliases, learned states). */
#define ASSERT_BOTH(s) assert(held.rw == (s) && held.mu == (s))

/* The lexical tools of worker's thread, or NULL on a loop never attached
   (tests): then the shared s->lex, under mu. */
static llmc_lex_t *worker_lex(const sem_tier_t *s, unsigned worker)
{
    return worker < s->nwlex ? s->wlex[worker] : NULL;
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

/* ---- aliases ---------------------------------------------------------------------- */

/* Makes key an alias of the record at slot, matched at similarity. Best
   effort: a full record or no memory just means no alias. */
static void do_alias_add(sem_tier_t *s, const llmc_key_t *key, uint32_t slot, float similarity)
{
    rec_t *r = &s->recs[slot];
    void *v;
    ASSERT_BOTH(s);
    if (r->naliases == LLMC_TIER_SEMANTIC_ALIASES)
        return;
    if (!r->aliases && !(r->aliases = malloc(LLMC_TIER_SEMANTIC_ALIASES * sizeof(llmc_key_t))))
        return;
    if (llmc_keymap_insert(&s->amap, key, &v) != 0)
        return; /* an alias already (of a record it was matched to first), or no memory */
    *(alias_t *)v = (alias_t){.slot = slot, .similarity = similarity};
    r->aliases[r->naliases++] = *key;
}

/* Removes the alias key, and its place in its record's list. */
static bool do_alias_del(sem_tier_t *s, const llmc_key_t *key)
{
    ASSERT_BOTH(s);
    const alias_t *al = llmc_keymap_find(&s->amap, key);
    if (!al)
        return false;
    rec_t *r = &s->recs[al->slot];
    for (uint8_t k = 0; k < r->naliases; k++)
        if (memcmp(r->aliases[k].b, key->b, LLMC_KEY_LEN) == 0) {
            r->aliases[k] = r->aliases[--r->naliases];
            break;
        }
    (void)llmc_keymap_delete(&s->amap, key);
    return true;
}

/* ---- records ---------------------------------------------------------------------- */

static void do_vforget(sem_tier_t *s, const llmc_key_t *k);

/* The slot of the record indexed under key, or -1. rw or mu held (the map
   changes only with both), or no other thread running. */
static long do_rec_find(sem_tier_t *s, const llmc_key_t *key)
{
    const uint32_t *slot = llmc_keymap_find(&s->recmap, key);
    if (!slot)
        return -1;
    assert(*slot < s->cap && s->recs[*slot].e &&
           memcmp(s->recs[*slot].e->key.b, key->b, LLMC_KEY_LEN) == 0);
    return (long)*slot;
}

/* The age list: records by when they were indexed, the oldest first, linked
   through their slots. Eviction takes its head. */
static void do_age_append(sem_tier_t *s, uint32_t slot)
{
    rec_t *r = &s->recs[slot];
    r->older = s->newest;
    r->newer = NO_SLOT;
    if (s->newest != NO_SLOT)
        s->recs[s->newest].newer = slot;
    else
        s->oldest = slot;
    s->newest = slot;
}

static void do_age_unlink(sem_tier_t *s, uint32_t slot)
{
    rec_t *r = &s->recs[slot];
    if (r->older != NO_SLOT) {
        s->recs[r->older].newer = r->newer;
    } else {
        assert(s->oldest == slot);
        s->oldest = r->newer;
    }
    if (r->newer != NO_SLOT) {
        s->recs[r->newer].older = r->older;
    } else {
        assert(s->newest == slot);
        s->newest = r->older;
    }
}

static void do_rec_drop(sem_tier_t *s, uint32_t slot)
{
    rec_t *r = &s->recs[slot];
    ASSERT_WRITES(s);
    assert(r->e && do_rec_find(s, &r->e->key) == (long)slot);
    bool mapped = llmc_keymap_delete(&s->recmap, &r->e->key);
    assert(mapped);
    (void)mapped;
    do_age_unlink(s, slot);
    while (r->naliases > 0) {
        llmc_key_t k = r->aliases[r->naliases - 1];
        if (!do_alias_del(s, &k))
            r->naliases--; /* not in the map: cannot be, but never loop */
    }
    free(r->aliases);
    do_vforget(s, &r->e->key);
    (void)llmc_vindex_delete(s->ix, slot);
    s->bytes -= r->e->mem_bytes + s->dim * sizeof(float);
    llmc_entry_unref(r->e);
    llmc_guard_q_free(r->q);
    *r = (rec_t){0};
    s->free_slots[s->nfree++] = slot;
    s->live--;
    assert(llmc_keymap_count(&s->recmap) == s->live);
}

static void do_evict_oldest(sem_tier_t *s)
{
    if (s->oldest != NO_SLOT) {
        do_rec_drop(s, s->oldest);
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
    ASSERT_WRITES(s);
    long old = do_rec_find(s, &e->key);
    if (old >= 0)
        do_rec_drop(s, (uint32_t)old);
    if (s->live == s->cap)
        do_evict_oldest(s);
    uint32_t slot = s->free_slots[--s->nfree];
    void *at;
    /* The key is not mapped (dropped above) and live < cap: only memory can fail. */
    if (llmc_keymap_insert(&s->recmap, &e->key, &at) != 0) {
        s->free_slots[s->nfree++] = slot;
        s->st.errors++;
        return LLMC_ENOMEM;
    }
    *(uint32_t *)at = slot;
    if (llmc_vindex_insert(s->ix, part, slot, vec) < 0) {
        (void)llmc_keymap_delete(&s->recmap, &e->key);
        s->free_slots[s->nfree++] = slot;
        s->st.errors++;
        return LLMC_ENOMEM;
    }
    s->recs[slot] = (rec_t){.e = llmc_entry_ref(e), .q = q};
    do_age_append(s, slot);
    s->live++;
    assert(llmc_keymap_count(&s->recmap) == s->live);
    s->bytes += e->mem_bytes + s->dim * sizeof(float);
    s->st.stored++;
    while (s->max_bytes && s->bytes > s->max_bytes && s->live > 1)
        do_evict_oldest(s);
    return 0;
}

/* ---- persistence ------------------------------------------------------------------ */

/* Appends one question with its vector (under mu, or before any worker
   runs); the record is semantic_log.h's. A failed write only costs that
   question its restore: counted as an error. */
static void do_qlog(sem_tier_t *s, const llmc_key_t *key, const llmc_key_t *part,
                    const char *text, size_t len, const float *vec)
{
    if (s->qfd < 0 || len > LLMC_SEMQ_MAX_TEXT)
        return;
    llmc_semq_t q = {.key = *key, .part = *part, .text = (char *)text, .len = len,
                     .vec = (float *)vec, .dim = vec ? s->dim : 0};
    memcpy(q.id, s->emb_id, sizeof(q.id));
    size_t n = 0;
    uint8_t *rec = llmc_semq_encode(&q, &n);
    /* O_APPEND: one write() per record, so a crash tears at most the last. */
    if (!rec || write(s->qfd, rec, n) != (ssize_t)n)
        s->st.errors++;
    free(rec);
}

/* The tier's index: graph walks by int8 codes (unless search_floats),
   re-scored by float (every similarity it compares is exact), and a beam
   for the few best above a threshold, not for recall@10 (see make
   bench-semantic). */
static llmc_vindex_t *index_new(const sem_tier_t *s, unsigned dim)
{
    return llmc_vindex_new_opts(dim, &(llmc_vindex_opts_t){.quantize = !s->search_floats,
                                                           .ef_search = s->search_ef});
}

/* An index for dim-float vectors, made now if none yet (a remote model's
   dimension is learnt from its first vector, or from the file). rw held
   for writing, and mu. */
static bool do_index_for(sem_tier_t *s, unsigned dim)
{
    ASSERT_WRITES(s);
    if (!s->ix && dim > 0 && (s->ix = index_new(s, dim)))
        s->dim = dim;
    return s->ix && dim == s->dim;
}

/* The answer under key from the store, fresh, and no purge since: with rw
   held for writing and mu on success (the caller indexes, then unlocks
   both). A purge that comes between the store's get and the locks makes it
   look again. */
static llmc_entry_t *restore_find(sem_tier_t *s, const llmc_key_t *key)
{
    for (int tries = 0; tries < 3; tries++) {
        mu_lock(s);
        uint64_t p0 = s->npurges;
        mu_unlock(s);
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
        wr_lock(s);
        mu_lock(s);
        if (s->npurges == p0)
            return e;
        mu_unlock(s);
        rw_unlock(s);
        llmc_entry_unref(e);
    }
    return NULL;
}

/* A record's vector, when this tier's embedder made it; else the lexical
   embedder's, made anew into buf; else (a remote embedder's record made
   by another model, or none) NULL: the question is dropped, since
   restoring must make no embedding call. */
static const float *restore_vector(sem_tier_t *s, llmc_lex_t *lx, const llmc_semq_t *q,
                                   float *buf, bool *anew)
{
    *anew = false;
    if (q->vec && strcmp(q->id, s->emb_id) == 0)
        return q->vec;
    if (s->remote || llmc_lex_embed(lx, q->text, q->len, buf) <= 0)
        return NULL;
    *anew = true;
    return buf;
}

/* The restore thread: every question of the old file whose answer the
   store still has is indexed (with its stored vector when this embedder
   made it) and written to the new file; then the old file goes. Serving
   goes on meanwhile (the locks are held for one question's indexing). */
static void *restore_main(void *arg)
{
    sem_tier_t *s = arg;
    llmc_lex_t *lx = llmc_lex_new();
    FILE *f = fopen(s->oldpath, "rb");
    llmc_semq_t rq;
    float buf[LLMC_LEX_DIM];

    while (lx && f && !atomic_load(&s->stop) && llmc_semq_read(f, &rq) == 0) {
        llmc_guard_q_t *q = NULL;
        llmc_entry_t *e = NULL;
        bool anew;
        const float *vec = restore_vector(s, lx, &rq, buf, &anew);
        unsigned dim = anew ? LLMC_LEX_DIM : rq.dim;
        if (vec && llmc_guard_q_new(lx, rq.text, rq.len, &q) == 0 &&
            (e = restore_find(s, &rq.key))) {
            /* rw and mu held; an answer indexed since start (a newer question) wins */
            if (do_rec_find(s, &rq.key) < 0 && do_index_for(s, dim) &&
                do_index(s, e, &rq.part, vec, q) == 0) {
                q = NULL;
                s->xs.restored++;
                s->xs.restore_reembedded += anew;
                do_qlog(s, &rq.key, &rq.part, rq.text, rq.len, vec);
            }
            mu_unlock(s);
            rw_unlock(s);
            llmc_entry_unref(e);
        }
        llmc_guard_q_free(q);
        llmc_semq_clear(&rq);
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

/* ---- sharing with other gateways (issue 19) -------------------------------------- */

/* The record of the question p just indexed under key, for share (malloc'd,
   *len bytes), or NULL. Under mu. */
static uint8_t *do_share_record(sem_tier_t *s, const llmc_key_t *key, const pend_t *p,
                                size_t *len)
{
    llmc_semq_t q = {.key = *key, .part = p->part, .text = p->text, .len = strlen(p->text),
                     .vec = p->vec, .dim = s->dim};
    memcpy(q.id, s->emb_id, sizeof(q.id));
    uint8_t *rec = llmc_semq_encode(&q, len);
    if (rec)
        s->xs.peer_shared++;
    return rec;
}

void llmc_tier_semantic_share(llmc_tier_t *t, llmc_semantic_share_fn fn, void *arg)
{
    sem_tier_t *s = impl(t);
    s->share = fn;
    s->share_arg = arg;
}

int llmc_tier_semantic_add_peer(llmc_tier_t *t, const llmc_semq_t *q, llmc_entry_t *e,
                                int64_t now_ms, bool own)
{
    sem_tier_t *s = impl(t);
    float buf[LLMC_LEX_DIM];
    const float *vec = NULL;
    unsigned dim = 0;
    llmc_guard_q_t *g = NULL;
    int rc = LLMC_ENOENT;

    if (memcmp(e->key.b, q->key.b, LLMC_KEY_LEN) != 0 || e->expires_ms <= now_ms ||
        !eligible_route(llmc_entry_route(e)))
        return LLMC_ENOENT;
    /* The shared lexical tools (under mu; searches go on meanwhile). The
       peer's vector when its embedder is ours; the lexical one is cheap to
       run again; a remote one is never called for a peer. */
    mu_lock(s);
    if (q->vec && strcmp(q->id, s->emb_id) == 0) {
        vec = q->vec;
        dim = q->dim;
    } else if (!s->remote && llmc_lex_embed(s->lex, q->text, q->len, buf) > 0) {
        vec = buf;
        dim = LLMC_LEX_DIM;
    }
    if (vec && llmc_guard_q_new(s->lex, q->text, q->len, &g) < 0)
        g = NULL;
    mu_unlock(s);
    /* do_index replaces a record of the same key (the same request: an
       equal answer). */
    wr_lock(s);
    mu_lock(s);
    if (g && do_index_for(s, dim) && do_index(s, e, &q->part, vec, g) == 0) {
        g = NULL;
        if (own)
            s->xs.peer_regained++;
        else
            s->xs.peer_indexed++;
        rc = 0;
    } else {
        s->xs.peer_refused++;
    }
    mu_unlock(s);
    rw_unlock(s);
    llmc_guard_q_free(g);
    return rc;
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

/* The text of a chat or completion answer's first choice, or NULL (json_decref *root). */
static const char *answer_text(const llmc_entry_t *e, json_t **root)
{
    *root = json_loadb(e->body, e->body_len, 0, NULL);
    json_t *c0 = json_array_get(json_object_get(*root, "choices"), 0);
    const char *t = json_string_value(json_object_get(json_object_get(c0, "message"), "content"));
    return t ? t : json_string_value(json_object_get(c0, "text")); /* a completion's */
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

/* ---- verification (issue 16) ------------------------------------------------------ */

/* What key's answer learned, or NULL. The pointer is good until the map
   next changes (do_vget, do_vforget). */
static llmc_vstate_t *do_vfind(sem_tier_t *s, const llmc_key_t *k)
{
    return llmc_keymap_find(&s->vmap, k);
}

/* The state of key's answer, made (threshold start) when it has none;
   NULL when the map is full (as many as the tier indexes) or no memory. */
static llmc_vstate_t *do_vget(sem_tier_t *s, const llmc_key_t *k, float start)
{
    void *v;
    int rc = llmc_keymap_insert(&s->vmap, k, &v);
    if (rc == LLMC_EEXIST)
        return v;
    if (rc < 0) {
        s->xs.verify_lost++;
        return NULL;
    }
    llmc_vstate_init(v, start);
    return v;
}

/* One state in semantic-verify.log: magic, flags (VLOG_FORGET: the answer
   went), key, threshold, lowest right, highest wrong, counts, then the
   first 8 bytes of SHA-256 over all that. Fixed size: a damaged record is
   skipped by its checksum, and the file read on from the next. */
#define VLOG_MAGIC 0x31565653u /* "SVV1" */
#define VLOG_FORGET 1u
#define VLOG_REC (8 + LLMC_KEY_LEN + 5 * 4 + 8)

static void vlog_encode(uint8_t rec[VLOG_REC], const llmc_key_t *k, const llmc_vstate_t *st,
                        uint32_t flags)
{
    uint32_t magic = VLOG_MAGIC;
    uint8_t *p = rec;
    memcpy(p, &magic, 4);
    memcpy(p + 4, &flags, 4);
    memcpy(p + 8, k->b, LLMC_KEY_LEN);
    p += 8 + LLMC_KEY_LEN;
    memcpy(p, &st->thr, 4);
    memcpy(p + 4, &st->min_right, 4);
    memcpy(p + 8, &st->max_wrong, 4);
    memcpy(p + 12, &st->right, 4);
    memcpy(p + 16, &st->wrong, 4);
    llmc_semq_sum(rec, VLOG_REC - 8, rec + VLOG_REC - 8);
}

/* 0 and the record's parts, or LLMC_EINVAL for a damaged one. */
static int vlog_decode(const uint8_t rec[VLOG_REC], llmc_key_t *k, llmc_vstate_t *st,
                       uint32_t *flags)
{
    uint8_t sum[8];
    uint32_t magic;
    memcpy(&magic, rec, 4);
    llmc_semq_sum(rec, VLOG_REC - 8, sum);
    if (magic != VLOG_MAGIC || memcmp(sum, rec + VLOG_REC - 8, 8) != 0)
        return LLMC_EINVAL;
    const uint8_t *p = rec + 8 + LLMC_KEY_LEN;
    memcpy(flags, rec + 4, 4);
    memcpy(k->b, rec + 8, LLMC_KEY_LEN);
    memcpy(&st->thr, p, 4);
    memcpy(&st->min_right, p + 4, 4);
    memcpy(&st->max_wrong, p + 8, 4);
    memcpy(&st->right, p + 12, 4);
    memcpy(&st->wrong, p + 16, 4);
    bool sane = st->thr == st->thr && st->thr >= -1.0f && st->thr <= LLMC_VERIFY_BARRED &&
                (st->wrong == 0 || st->thr == LLMC_VERIFY_BARRED);
    return sane ? 0 : LLMC_EINVAL;
}

/* Appends key's state (under mu). A failed write costs only its restore. */
static void do_vlog(sem_tier_t *s, const llmc_key_t *k, const llmc_vstate_t *st, uint32_t flags)
{
    uint8_t rec[VLOG_REC];
    llmc_vstate_t none;
    if (s->vfd < 0)
        return;
    if (!st) {
        llmc_vstate_init(&none, 0);
        st = &none;
    }
    vlog_encode(rec, k, st, flags);
    if (write(s->vfd, rec, VLOG_REC) != VLOG_REC)
        s->st.errors++;
    s->vlog_bytes += VLOG_REC;
}

/* Writes the live states to path (a new file). 0 or LLMC_EIO. */
static int do_vwrite(sem_tier_t *s, const char *path, llmc_tier_t *store, int64_t now)
{
    uint8_t rec[VLOG_REC];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return LLMC_EIO;
    s->vlog_bytes = 0;
    size_t pos = 0;
    const llmc_key_t *k;
    void *st;
    while (llmc_keymap_next(&s->vmap, &pos, &k, &st)) {
        llmc_entry_t *e = NULL;
        if (store && store->ops->get(store, k, now, &e) != 0)
            continue; /* its answer is gone: forgotten */
        llmc_entry_unref(e);
        vlog_encode(rec, k, st, 0);
        if (write(fd, rec, VLOG_REC) != VLOG_REC) {
            close(fd);
            return LLMC_EIO;
        }
        s->vlog_bytes += VLOG_REC;
    }
    return close(fd) == 0 ? 0 : LLMC_EIO;
}

/* The file grew past VLOG_SLACK times what it must hold (outcomes append,
   forgotten answers leave records behind): rewritten from the map, under
   mu (at most the tier's max entries of VLOG_REC bytes, a few MB). Not
   synced: a crash at the wrong moment costs learned states, never a wrong
   one (the old file stays whole until the rename). */
#define VLOG_SLACK 4
#define VLOG_MIN_COMPACT (1u << 20)
static void do_vcompact(sem_tier_t *s)
{
    uint64_t live = (uint64_t)llmc_keymap_count(&s->vmap) * VLOG_REC;
    if (s->vfd < 0 || s->vlog_bytes <= VLOG_MIN_COMPACT || s->vlog_bytes <= VLOG_SLACK * live)
        return;
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.new", s->vpath) < 0)
        return;
    if (do_vwrite(s, tmp, NULL, 0) == 0 && rename(tmp, s->vpath) == 0) {
        int fd = open(s->vpath, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd >= 0) {
            close(s->vfd);
            s->vfd = fd;
        }
    } else {
        s->st.errors++;
        s->vlog_bytes += live; /* try again once it has grown as much again */
        unlink(tmp);
    }
    free(tmp);
}

/* key's answer went (expired, evicted, purged, replaced): so does what it
   learned, here and in the file. */
static void do_vforget(sem_tier_t *s, const llmc_key_t *k)
{
    if (llmc_keymap_delete(&s->vmap, k))
        do_vlog(s, k, NULL, VLOG_FORGET);
}

/* Reads dir/semantic-verify.log (the last record of a key wins; damaged
   ones are skipped), keeps the states whose answer store still has, writes
   them to a new file that replaces the old (compaction), and opens it for
   appends. Main thread, before any worker. */
static int verify_open(sem_tier_t *s, const char *dir, llmc_tier_t *store)
{
    char *path = NULL, *tmp = NULL;
    uint8_t rec[VLOG_REC];
    int rc = LLMC_ENOMEM;
    if (asprintf(&s->vpath, "%s/semantic-verify.log", dir) < 0 || !(path = strdup(s->vpath)) ||
        asprintf(&tmp, "%s/semantic-verify.log.new", dir) < 0)
        goto out;
    FILE *f = fopen(path, "rb");
    while (f && fread(rec, 1, VLOG_REC, f) == VLOG_REC) {
        llmc_key_t k;
        llmc_vstate_t st;
        uint32_t flags;
        if (vlog_decode(rec, &k, &st, &flags) < 0)
            continue;
        if (flags & VLOG_FORGET) {
            do_vforget(s, &k);
            continue;
        }
        llmc_vstate_t *v = do_vget(s, &k, 0);
        if (v)
            *v = st;
    }
    if (f)
        fclose(f);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (do_vwrite(s, tmp, store, now) < 0 || rename(tmp, path) != 0) {
        rc = LLMC_EIO;
        goto out;
    }
    s->vfd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    rc = s->vfd < 0 ? LLMC_EIO : 0;
out:
    free(path);
    free(tmp);
    return rc;
}

/* The row of namespace name, made when new; past LLMC_TIER_SEMANTIC_NS the
   last row holds the rest. */
static uint16_t do_ns(sem_tier_t *s, const char *name)
{
    if (!name)
        name = "";
    for (unsigned i = 0; i < s->nns; i++)
        if (strncmp(s->nss[i].name, name, sizeof(s->nss[i].name)) == 0)
            return (uint16_t)i;
    if (s->nns == LLMC_TIER_SEMANTIC_NS - 1 && strlen(name) < sizeof(s->nss[0].name))
        name = "(others)";
    if (s->nns == LLMC_TIER_SEMANTIC_NS)
        return LLMC_TIER_SEMANTIC_NS - 1;
    snprintf(s->nss[s->nns].name, sizeof(s->nss[0].name), "%s", name);
    llmc_vns_init(&s->nss[s->nns].m, s->max_error > 0 ? s->vstart : s->threshold);
    return (uint16_t)s->nns++;
}

/* What the learned state says of a candidate that passed the guards. With
   no budget the global threshold serves and only a bar refuses. */
static llmc_vdecision_t do_vdecide(sem_tier_t *s, const vns_row_t *ns, const rec_t *r, float sim)
{
    ASSERT_BOTH(s); /* r is a slot's */
    const llmc_vstate_t *v = do_vfind(s, &r->e->key);
    llmc_vstate_t st;
    if (v)
        st = *v;
    else
        llmc_vstate_init(&st, ns->m.start);
    if (s->max_error <= 0)
        return st.thr == LLMC_VERIFY_BARRED ? LLMC_VD_NO : LLMC_VD_SERVE;
    return llmc_verify_decide(&st, sim, s->vband, s->max_error, llmc_vns_prior(&ns->m));
}

/* A uniform 32-bit draw (xorshift64*), under mu. */
static uint32_t do_draw(sem_tier_t *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (uint32_t)((s->rng * 0x2545F4914F6CDD1Dull) >> 32);
}

/* The model answered a question whose candidate was served (verified),
   probed or held back: judge the two answers and learn. 1 right, 0 wrong,
   -1 not judged. */
/* What one judged outcome teaches: the matched answer's state, the
   namespace's measurement (and its fallback, logged when it changes). key:
   the request's, whose answer the model gave. */
static void do_learn(sem_tier_t *s, uint8_t kind, const llmc_key_t *matched, float sim,
                     uint16_t nsi, bool right, const llmc_key_t *key)
{
    vns_row_t *ns = &s->nss[nsi];
    llmc_vstate_t *v = do_vget(s, matched, ns->m.start);
    if (v) {
        llmc_vstate_learn(v, sim, right, s->threshold);
        do_vlog(s, matched, v, 0);
    }
    bool changed = false;
    if (kind == PEND_PROBE) {
        llmc_vns_probed(&ns->m, right, sim);
        s->xs.probes_wrong += !right;
    } else {
        changed = llmc_vns_verified(&ns->m, right, sim, s->max_error);
        if (right)
            s->xs.verify_right++;
        else
            s->xs.verify_wrong++;
    }
    if (!right)
        do_log(s, json_pack("{s:s,s:s,s:o,s:o,s:f,s:s}", "semantic_verify",
                            kind == PEND_PROBE ? "probe_wrong" : "wrong", "namespace",
                            ns->name, "key", hex_of(key), "matched", hex_of(matched),
                            "similarity", (double)sim, "now", "barred"));
    if (changed) {
        double lo, hi;
        llmc_wilson95(ns->m.wrong, ns->m.verified, &lo, &hi);
        do_log(s, json_pack("{s:s,s:s,s:I,s:I,s:f,s:f,s:f}", "semantic_verify",
                            ns->m.fallback ? "fallback_exact_only" : "fallback_ended",
                            "namespace", ns->name, "verified", (json_int_t)ns->m.verified,
                            "wrong", (json_int_t)ns->m.wrong, "wrong_lo95", lo, "wrong_hi95",
                            hi, "budget", s->max_error));
    }
}

static void do_tokens(sem_tier_t *s, uint16_t nsi, uint64_t tokens)
{
    s->nss[nsi].m.tokens += tokens;
    s->xs.verify_tokens += tokens;
}

static int do_ask_judge(sem_tier_t *s, unsigned worker, const pend_t *p, const llmc_entry_t *e,
                        const char *a, const char *b);

/* The model answered a question whose candidate was served (verified),
   probed or held back: judge the two answers and learn. 1 right, 0 wrong,
   -1 not judged, -2 asked of the judge model (learnt in its callback). */
static int do_outcome(sem_tier_t *s, unsigned worker, const pend_t *p, const llmc_entry_t *e)
{
    json_t *ra, *rb;
    const char *a = answer_text(p->would, &ra), *b = answer_text(e, &rb);
    llmc_lex_t *lx = worker_lex(s, worker) ? worker_lex(s, worker) : s->lex;
    llmc_usage_t u;
    if (p->kind == PEND_VERIFY && llmc_entry_usage(e, &u))
        do_tokens(s, p->ns, (uint64_t)u.prompt_tokens + u.completion_tokens);
    int right = !a || !b                      ? LLMC_EINVAL
                : s->judge == LLMC_JUDGE_MODEL ? do_ask_judge(s, worker, p, e, a, b)
                : llmc_judge(s->judge, lx, s->judge_bound, a, strlen(a), b, strlen(b));
    json_decref(ra);
    json_decref(rb);
    if (right == -2)
        return -2;
    if (right < 0) {
        s->xs.verify_unjudged++;
        return -1;
    }
    do_learn(s, p->kind, &p->matched, p->sim, p->ns, right, &e->key);
    return right;
}

/* Bars the answer under key (learnt as a wrong at similarity sim). */
static void do_bar(sem_tier_t *s, const llmc_key_t *key, float sim, float start)
{
    llmc_vstate_t *v = do_vget(s, key, start);
    if (v && v->thr != LLMC_VERIFY_BARRED) {
        llmc_vstate_learn(v, sim, false, s->threshold);
        do_vlog(s, key, v, 0);
    }
}

/*
 * Where a verified question stands (before its own answer is indexed): the
 * answers it reaches (similarity over the threshold, guards passed). A wrong
 * outcome bars them all: the tier cannot tell those wordings apart, and they
 * do not share an answer. A question that reaches an answer barred so is in
 * such a place too. True when the question's own answer is to be barred.
 */
static bool do_bar_near(sem_tier_t *s, const llmc_key_t *part, const float *vec,
                        const llmc_guard_q_t *q, uint16_t nsi, bool wrong)
{
    llmc_vindex_hit_t near[LLMC_TIER_SEMANTIC_REGION];
    ASSERT_BOTH(s);
    size_t n = llmc_vindex_search(s->ix, part, vec, LLMC_TIER_SEMANTIC_REGION, near);
    bool barred = wrong;
    char why[LLMC_GUARD_REASON];
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n && near[i].score >= s->threshold; i++) {
            rec_t *r = &s->recs[near[i].id];
            if (llmc_guard_check(r->q, q, why) >= 0)
                continue; /* a different question after all */
            const llmc_vstate_t *v = do_vfind(s, &r->e->key);
            if (pass == 0)
                barred = barred || (v && v->wrong > 0);
            else
                do_bar(s, &r->e->key, near[i].score, s->nss[nsi].m.start);
        }
        if (!barred)
            return false;
    }
    return true;
}

/* A judge model's call in the air: what its answer will teach. */
typedef struct judge_job {
    sem_tier_t *s;
    uint8_t kind;
    uint16_t ns;
    float sim;
    llmc_key_t matched, key, part;
    float *vec; /* the question's, s->dim of them: its neighbours are barred if wrong */
} judge_job_t;

/* The judge model's verdict, on the worker's loop. */
static void on_judged(void *arg, int rc, bool same, uint64_t tokens)
{
    judge_job_t *j = arg;
    sem_tier_t *s = j->s;

    rd_lock(s); /* the slot found and its neighbours' are read */
    mu_lock(s);
    do_tokens(s, j->ns, tokens);
    if (rc < 0) {
        s->xs.verify_unjudged++;
    } else {
        do_learn(s, j->kind, &j->matched, j->sim, j->ns, same, &j->key);
        long slot = same ? -1 : do_rec_find(s, &j->key);
        if (slot >= 0 && do_bar_near(s, &j->part, j->vec, s->recs[slot].q, j->ns, true))
            do_bar(s, &j->key, 1.0f, s->nss[j->ns].m.start);
    }
    mu_unlock(s);
    rw_unlock(s);
    free(j->vec);
    free(j);
}

/* Asks the worker's judge model (under mu, on the worker's loop, within the
   per-minute budget): -2, or -1 when it cannot be asked (counted). */
static int do_ask_judge(sem_tier_t *s, unsigned worker, const pend_t *p, const llmc_entry_t *e,
                        const char *a, const char *b)
{
    llmc_judge_model_t *jm = worker < s->nwjudge ? s->wjudge[worker] : NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (!jm)
        return -1;
    if (!llmc_vrate_take(&s->vrate, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000)) {
        s->xs.verify_over_budget++;
        return -1;
    }
    judge_job_t *j = malloc(sizeof(*j));
    float *vec = malloc(s->dim * sizeof(float));
    if (!j || !vec) {
        free(j);
        free(vec);
        return -1;
    }
    memcpy(vec, p->vec, s->dim * sizeof(float));
    *j = (judge_job_t){.s = s, .kind = p->kind, .ns = p->ns, .sim = p->sim,
                       .matched = p->matched, .key = e->key, .part = p->part, .vec = vec};
    if (llmc_judge_model_ask(jm, a, strlen(a), b, strlen(b), on_judged, j) < 0) {
        free(vec);
        free(j);
        return -1;
    }
    s->xs.judge_calls++;
    s->nss[p->ns].m.calls++;
    return -2;
}

/* Per namespace: the measurement /stats shows (rates in parts per million). */
#define SEM_NS_TABLE(X)                                                                      \
    X(hits, "hits", COUNTER, "hits", "Semantic hits served.")                                 \
    X(verified, "verified", COUNTER, "answers",                                              \
      "Served (or held-back, while exact-only) hits whose answer was judged.")              \
    X(wrong, "wrong", COUNTER, "answers", "Of them, judged wrong.")                          \
    X(wrong_ppm, "wrong_rate_ppm", GAUGE, "ppm", "Measured wrong-hit rate (per million).")   \
    X(wrong_lo_ppm, "wrong_rate_lo95_ppm", GAUGE, "ppm",                                     \
      "Its Wilson 95% interval's lower bound (per million).")                                \
    X(wrong_hi_ppm, "wrong_rate_hi95_ppm", GAUGE, "ppm",                                     \
      "Its Wilson 95% interval's upper bound (per million; 1000000 with no sample).")       \
    X(calls, "verify_calls", COUNTER, "calls", "Background calls to the model to verify.")   \
    X(fallback, "exact_only", GAUGE, "bool",                                                 \
      "1 while the namespace's measured error is over --semantic-max-error.")

typedef struct sem_ns_stats {
    SEM_NS_TABLE(LLMC_STAT_FIELD)
} sem_ns_stats_t;

#define LLMC_STAT_TYPE sem_ns_stats_t
static const llmc_stat_desc_t ns_desc[] = {SEM_NS_TABLE(LLMC_STAT_DESC)};
#undef LLMC_STAT_TYPE

static unsigned sem_xrows(llmc_tier_t *t, llmc_tier_row_t *rows, unsigned max)
{
    sem_tier_t *s = impl(t);
    unsigned n = 0;

    mu_lock(s);
    for (unsigned i = 0; i < s->nns && n < max; i++, n++) {
        const llmc_vns_t *m = &s->nss[i].m;
        double lo, hi;
        llmc_wilson95(m->wrong, m->verified, &lo, &hi);
        sem_ns_stats_t v = {
            .hits = m->hits,
            .verified = m->verified,
            .wrong = m->wrong,
            .wrong_ppm = m->verified ? m->wrong * 1000000 / m->verified : 0,
            .wrong_lo_ppm = (uint64_t)(lo * 1e6 + 0.5),
            .wrong_hi_ppm = (uint64_t)(hi * 1e6 + 0.5),
            .calls = m->calls,
            .fallback = m->fallback,
        };
        _Static_assert(sizeof(v) <= sizeof(rows[0].v), "a namespace row fits a tier row");
        snprintf(rows[n].name, sizeof(rows[n].name), "%s", s->nss[i].name);
        memcpy(rows[n].v, &v, sizeof(v));
    }
    mu_unlock(s);
    return n;
}

/* ---- the ops ---------------------------------------------------------------------- */

/* The decision for a question with its vector (dim floats): a hit (0,
   lk->entry set) or a miss that keeps the question for its answer's put().
   question is taken. */
static int decide(sem_tier_t *s, llmc_tier_lookup_t *lk, char *question, const llmc_key_t *part,
                  const float *vec, unsigned dim)
{
    llmc_vindex_hit_t cand[LLMC_TIER_SEMANTIC_CANDIDATES];
    llmc_guard_q_t *qf = NULL;
    llmc_entry_t *would = NULL;
    float *pvec = malloc(dim * sizeof(float));
    int rc;

    rd_lock(s);
    if (!s->ix) {
        /* The remote model's first vector: its dimension is the index's. */
        rw_unlock(s);
        wr_lock(s);
        mu_lock(s);
        if (!do_index_for(s, dim))
            s->st.errors++;
        mu_unlock(s);
        rw_unlock(s);
        rd_lock(s);
    }
    if (!s->ix || dim != s->dim || !pvec) {
        /* A remote model that changed its dimension: nothing to compare with. */
        mu_lock(s);
        s->xs.lookups++;
        s->xs.embed_errors += s->ix && dim != s->dim;
        s->st.misses++;
        rc = LLMC_ENOENT;
        goto out;
    }
    /* rw read-held from here: other lookups search at the same time; no
       slot a candidate names is freed or reused till the end. */
    float threshold = lk->query->threshold > 0 ? lk->query->threshold : s->threshold;
    llmc_hnsw_walk_t walk = {
        .ef_lo = s->search_narrow, .near = threshold - s->search_margin};
    size_t n =
        llmc_vindex_search_near(s->ix, part, vec, LLMC_TIER_SEMANTIC_CANDIDATES, &walk, cand);
    /* The guards' features only for a candidate to judge (best first: the
       first one says); a question they cannot read (no memory) is skipped. */
    if (n > 0 && cand[0].score >= threshold) {
        llmc_lex_t *lx = worker_lex(s, lk->worker);
        if (!lx)
            mu_lock(s);
        int frc = llmc_guard_q_new(lx ? lx : s->lex, question, strlen(question), &qf);
        if (!lx)
            mu_unlock(s);
        if (frc < 0) {
            qf = NULL;
            mu_lock(s);
            s->xs.lookups++;
            s->xs.skipped++;
            rc = LLMC_ENOENT;
            goto out;
        }
    }
    mu_lock(s);
    s->xs.lookups++;
    s->xs.search_widened += walk.widened != 0;
    /* Verification: the namespace's row, and what is learned of each candidate. */
    uint16_t nsi = s->verifying ? do_ns(s, lk->query->ns) : 0;
    vns_row_t *ns = s->verifying ? &s->nss[nsi] : NULL;
    bool fallback = ns && s->max_error > 0 && ns->m.fallback;
    uint8_t kind = PEND_SHADOW;
    llmc_key_t matched = {{0}};
    float msim = 0;
    for (size_t i = 0; i < n; i++) {
        if (cand[i].score < threshold) {
            if (i == 0)
                s->xs.below_threshold++;
            break;
        }
        rec_t *r = &s->recs[cand[i].id];
        if (r->e->expires_ms <= lk->now_ms)
            continue;
        assert(qf); /* made above: this candidate clears the threshold */
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
        if (ns && !s->shadow) {
            llmc_vdecision_t vd = do_vdecide(s, ns, r, cand[i].score);
            if (vd == LLMC_VD_NO) {
                s->xs.verify_refused++;
                continue;
            }
            if (vd == LLMC_VD_PROBE || fallback) {
                /* Not served; the model's answer to this miss will say
                   whether it would have been right. */
                kind = vd == LLMC_VD_PROBE ? PEND_PROBE : PEND_FALLBACK;
                s->xs.probes += kind == PEND_PROBE;
                s->xs.fallback_misses += kind == PEND_FALLBACK;
                would = llmc_entry_ref(r->e);
                matched = r->e->key;
                msim = cand[i].score;
                break;
            }
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
        lk->tier_only = s->verifying; /* a bar must reach every wording it served */
        s->st.hits++;
        do_alias_add(s, &lk->query->key, (uint32_t)cand[i].id, cand[i].score);
        rc = 0;
        if (!ns)
            goto out;
        ns->m.hits++;
        if (!llmc_verify_sampled(s->verify_rate, do_draw(s)))
            goto out;
        if (!llmc_vrate_take(&s->vrate, lk->now_ms)) {
            s->xs.verify_over_budget++;
            goto out;
        }
        /* The caller asks the model in the background; its answer, stored
           under this request's key, comes to put() as a miss's would. */
        lk->verify = true;
        s->xs.verify_sampled++;
        ns->m.calls++;
        kind = PEND_VERIFY;
        would = llmc_entry_ref(r->e);
        matched = r->e->key;
        msim = cand[i].score;
        goto keep;
    }
    /* A miss: keep the question for its answer's put(). */
    s->st.misses++;
    rc = LLMC_ENOENT;
keep:;
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
                  .kind = kind, .matched = matched, .sim = msim, .ns = nsi, .text = question,
                  .vec = pvec};
    pvec = NULL;
    qf = NULL;
    question = NULL;
out:
    mu_unlock(s);
    rw_unlock(s);
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
    llmc_embedder_req_t *req;
} sem_wait_t;

static void wait_free(sem_wait_t *w)
{
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
        rc = decide(s, lk, w->question, &w->part, vec, dim);
        w->question = NULL;
    } else if (rc != LLMC_ECANCELED) {
        mu_lock(s);
        s->xs.lookups++;
        s->st.misses++;
        if (rc == LLMC_ETIMEDOUT)
            s->xs.embed_timeouts++;
        else
            s->xs.embed_errors++;
        mu_unlock(s);
        rc = LLMC_ENOENT;
    }
    wait_free(w);
    lk->done(lk, rc);
}

static int sem_lookup(llmc_tier_t *t, llmc_tier_lookup_t *lk)
{
    sem_tier_t *s = impl(t);
    llmc_key_t part;
    char *question = NULL;
    float vec[LLMC_LEX_DIM];

    lk->entry = NULL;
    lk->verify = false;
    lk->tier_only = false;
    if (!lk->query->similar) {
        /* Nor is its answer indexed: the client asked to stay out of it. */
        mu_lock(s);
        s->xs.declined++;
        mu_unlock(s);
        return LLMC_ENOENT;
    }
    /* The same wording as an earlier hit: its alias, no search (rw: the
       alias's slot is read). */
    rd_lock(s);
    mu_lock(s);
    const alias_t *al = llmc_keymap_find(&s->amap, &lk->query->key);
    if (al) {
        const rec_t *r = &s->recs[al->slot];
        vns_row_t *ns = s->verifying ? &s->nss[do_ns(s, lk->query->ns)] : NULL;
        if (r->e->expires_ms > lk->now_ms && !s->shadow &&
            al->similarity >= (lk->query->threshold > 0 ? lk->query->threshold : s->threshold) &&
            (!ns || (!(s->max_error > 0 && ns->m.fallback) &&
                     do_vdecide(s, ns, r, al->similarity) == LLMC_VD_SERVE))) {
            if (ns)
                ns->m.hits++;
            lk->entry = llmc_entry_ref(r->e);
            lk->similarity = al->similarity;
            lk->tier_only = s->verifying;
            s->st.hits++;
            s->xs.alias_hits++;
            mu_unlock(s);
            rw_unlock(s);
            return 0;
        }
    }
    mu_unlock(s);
    rw_unlock(s);
    if (split_query(lk->query, &question, &part) < 0) {
        mu_lock(s);
        s->xs.skipped++;
        mu_unlock(s);
        return LLMC_ENOENT;
    }
    /* The worker's own embedder works outside the locks; the shared one under mu. */
    llmc_embedder_t *em = lk->worker < s->nwlex ? s->wemb[lk->worker] : NULL;
    size_t qlen = strlen(question);
    /* A question the guards could not read is never compared (nor, with a
       remote embedder, sent to be embedded): their tokeniser's bound, up
       front, since their features are made only when a candidate comes. */
    bool readable = qlen <= LLMC_LEX_MAX_TEXT;
    sem_wait_t *w = readable ? malloc(sizeof(*w)) : NULL;
    const float *got = NULL;
    unsigned dim = 0;
    int rc = LLMC_ENOMEM;
    if (w && em) {
        rc = llmc_embedder_get(em, question, qlen, &got, &dim, on_vector, w, &w->req);
    } else if (w) {
        /* A loop never attached (tests): the shared lexical one, whose
           answer is copied before another thread's use overwrites it. */
        mu_lock(s);
        rc = s->emb ? llmc_embedder_get(s->emb, question, qlen, &got, &dim, on_vector, w, &w->req)
                    : LLMC_ENOENT;
        if (rc == 1)
            memcpy(vec, got, (dim = dim > LLMC_LEX_DIM ? LLMC_LEX_DIM : dim) * sizeof(float));
        mu_unlock(s);
        got = vec;
    }
    if (rc == 1) {
        free(w);
        return decide(s, lk, question, &part, got, dim);
    }
    if (rc < 0) {
        /* Nothing to compare by (a text the guards cannot read, no embedder
           on this loop, a text the embedder refuses) is skipped; the rest
           is its error. */
        bool skip = !readable || rc == LLMC_ENOENT || rc == LLMC_EINVAL || rc == LLMC_E2BIG;
        free(w);
        free(question);
        mu_lock(s);
        if (skip) {
            s->xs.lookups++;
            s->xs.skipped++;
        } else {
            s->xs.embed_errors++;
        }
        mu_unlock(s);
        return LLMC_ENOENT;
    }
    /* It answers later, on this loop. */
    *w = (sem_wait_t){.s = s, .lk = lk, .question = question, .part = part, .req = w->req};
    return LLMC_EAGAIN;
}

static int sem_put(llmc_tier_t *t, unsigned worker, llmc_entry_t *e, int64_t now_ms)
{
    sem_tier_t *s = impl(t);
    pend_t pq = {0}, *p = &pq;
    uint8_t *shared = NULL;
    size_t shared_len = 0;
    int outcome = -1;

    if (!eligible_route(llmc_entry_route(e)) || e->expires_ms <= now_ms)
        return 0;
    /* Its pending question leaves the ring (this answer's now), and what
       it kept a would for is judged: mu alone, searches go on. */
    mu_lock(s);
    for (size_t i = 0; i < LLMC_TIER_SEMANTIC_PENDING && !pq.used; i++)
        if (s->pend[i].used && memcmp(s->pend[i].key.b, e->key.b, LLMC_KEY_LEN) == 0) {
            pq = s->pend[i];
            s->pend[i] = (pend_t){0};
        }
    if (pq.used && p->would && p->kind == PEND_SHADOW)
        do_shadow_compare(s, p, e);
    else if (pq.used && p->would)
        outcome = do_outcome(s, worker, p, e);
    mu_unlock(s);
    if (!pq.used)
        return 0; /* its question was never seen here */
    /* The record's features, when its lookup had no candidate to judge:
       with the worker's own tools, outside both locks. */
    llmc_lex_t *lx = worker_lex(s, worker);
    if (!p->q) {
        if (!lx)
            mu_lock(s);
        if (llmc_guard_q_new(lx ? lx : s->lex, p->text, strlen(p->text), &p->q) < 0)
            p->q = NULL;
        if (!lx)
            mu_unlock(s);
    }
    wr_lock(s);
    mu_lock(s);
    if (p->kind == PEND_VERIFY)
        (void)do_alias_del(s, &e->key); /* its own answer is the model's now */
    if (!p->q)
        s->st.errors++; /* no memory for its features: not indexed */
    bool bar = s->verifying && !s->shadow && p->q &&
               do_bar_near(s, &p->part, p->vec, p->q, p->ns, outcome == 0);
    if (p->q && do_index(s, e, &p->part, p->vec, p->q) == 0) {
        p->q = NULL;
        do_qlog(s, &e->key, &p->part, p->text, strlen(p->text), p->vec);
        if (bar)
            do_bar(s, &e->key, 1.0f, s->nss[p->ns].m.start);
        if (s->share && !s->shadow)
            shared = do_share_record(s, &e->key, p, &shared_len);
    }
    mu_unlock(s);
    rw_unlock(s);
    do_pend_clear(p); /* would's reference goes outside the locks */
    if (shared)
        s->share(s->share_arg, worker, shared, shared_len); /* outside the locks: it sends */
    free(shared);
    return 0;
}

static void sem_purge(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                      llmc_tier_purge_cb done, void *arg)
{
    sem_tier_t *s = impl(t);
    size_t n = 0;

    (void)worker;
    wr_lock(s);
    mu_lock(s);
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
    mu_unlock(s);
    rw_unlock(s);
    done(arg, n);
}

static void sem_tick(llmc_tier_t *t, int64_t now_ms)
{
    sem_tier_t *s = impl(t);
    size_t budget = LLMC_TIER_SEMANTIC_SWEEP_BUDGET < s->cap ? LLMC_TIER_SEMANTIC_SWEEP_BUDGET
                                                             : s->cap;
    bool any = false;

    mu_lock(s);
    do_vcompact(s);
    mu_unlock(s);
    /* Most ticks find nothing expired: they look with searches going on,
       and take rw for writing only to drop what they found. */
    rd_lock(s);
    mu_lock(s);
    for (size_t k = 0; k < budget && !any; k++) {
        const rec_t *r = &s->recs[(s->sweep_at + k) % s->cap];
        any = r->e && r->e->expires_ms <= now_ms;
    }
    if (!any)
        s->sweep_at = (s->sweep_at + budget) % s->cap;
    mu_unlock(s);
    rw_unlock(s);
    if (!any)
        return;
    wr_lock(s);
    mu_lock(s);
    for (size_t k = 0; k < budget; k++) {
        size_t i = s->sweep_at;
        s->sweep_at = (s->sweep_at + 1) % s->cap;
        if (s->recs[i].e && s->recs[i].e->expires_ms <= now_ms) {
            do_rec_drop(s, (uint32_t)i);
            s->st.evicted_ttl++;
        }
    }
    mu_unlock(s);
    rw_unlock(s);
}

static void sem_stats(llmc_tier_t *t, llmc_tier_stats_t *out)
{
    sem_tier_t *s = impl(t);

    mu_lock(s);
    *out = s->st;
    out->entries = s->live;
    out->bytes = s->bytes;
    out->max_bytes = s->max_bytes;
    mu_unlock(s);
}

static void sem_xstats(llmc_tier_t *t, void *out)
{
    sem_tier_t *s = impl(t);

    mu_lock(s);
    *(sem_xstats_t *)out = s->xs;
    mu_unlock(s);
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
    if (!s->wemb[worker] &&
        !(s->wemb[worker] = s->remote ? llmc_embedder_remote_new(loop, &s->remote_cfg)
                                      : llmc_embedder_lexical_new()))
        return LLMC_ENOMEM;
    if (s->verifying && s->judge == LLMC_JUDGE_MODEL) {
        if (worker >= s->nwjudge) {
            llmc_judge_model_t **v = realloc(s->wjudge, (worker + 1) * sizeof(*v));
            if (!v)
                return LLMC_ENOMEM;
            memset(v + s->nwjudge, 0, (worker + 1 - s->nwjudge) * sizeof(*v));
            s->wjudge = v;
            s->nwjudge = worker + 1;
        }
        if (!s->wjudge[worker] && !(s->wjudge[worker] = llmc_judge_model_new(loop, &s->jcfg)))
            return LLMC_ENOMEM;
    }
    return 0;
}

/* The lexical embedder stays until destroy (a worker's loop may still ask
   while shutting down); a remote one goes, ending its waiting lookups as
   cancelled (on this loop, as detach requires). */
static void sem_detach(llmc_tier_t *t, unsigned worker)
{
    sem_tier_t *s = impl(t);

    if (worker < s->nwjudge && s->wjudge[worker]) {
        llmc_judge_model_t *jm = s->wjudge[worker];
        s->wjudge[worker] = NULL; /* an outcome from now on is not judged */
        llmc_judge_model_free(jm); /* its calls' callbacks run now, cancelled */
    }
    if (s->remote && worker < s->nwlex && s->wemb[worker]) {
        llmc_embedder_t *em = s->wemb[worker];
        s->wemb[worker] = NULL; /* a lookup now misses without waiting */
        llmc_embedder_free(em);
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
    llmc_keymap_fini(&s->recmap);
    llmc_keymap_fini(&s->amap);
    llmc_keymap_fini(&s->vmap);
    free(s->nss);
    free(s->wjudge);
    free((char *)s->jcfg.url);
    free((char *)s->jcfg.model);
    free((char *)s->jcfg.auth);
    if (s->vfd >= 0)
        close(s->vfd);
    free(s->vpath);
    for (size_t i = 0; i < LLMC_TIER_SEMANTIC_PENDING; i++)
        do_pend_clear(&s->pend[i]);
    for (unsigned i = 0; i < s->nwlex; i++) {
        llmc_lex_free(s->wlex[i]);
        if (!s->remote)
            llmc_embedder_free(s->wemb[i]); /* a remote one went at detach */
    }
    llmc_embedder_free(s->emb);
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
    pthread_rwlock_destroy(&s->rw);
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
    .xrows_name = "namespaces",
    .xrows_desc = ns_desc,
    .nxrows = sizeof(ns_desc) / sizeof(ns_desc[0]),
    .xrows = sem_xrows,
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
    s->vfd = -1;
    s->threshold = cfg && cfg->threshold > 0 ? cfg->threshold : LLMC_TIER_SEMANTIC_THRESHOLD;
    s->search_ef = cfg && cfg->search_ef ? cfg->search_ef : LLMC_VINDEX_FEW_EF;
    s->search_narrow = cfg ? cfg->search_narrow : 0;
    s->search_margin = cfg ? cfg->search_margin : 0;
    s->search_floats = cfg && cfg->search_floats;
    s->shadow = cfg && cfg->shadow;
    s->log = cfg ? cfg->log : NULL;
    s->log_arg = cfg ? cfg->log_arg : NULL;
    s->cap = cfg && cfg->max_entries ? cfg->max_entries : LLMC_TIER_SEMANTIC_MAX_ENTRIES;
    s->max_bytes = cfg ? cfg->max_bytes : 0;
    if (s->cap > UINT32_MAX)
        s->cap = UINT32_MAX;
    llmc_keymap_init(&s->recmap, sizeof(uint32_t), s->cap);
    llmc_keymap_init(&s->amap, sizeof(alias_t), s->cap * LLMC_TIER_SEMANTIC_ALIASES);
    llmc_keymap_init(&s->vmap, sizeof(llmc_vstate_t), s->cap);
    s->oldest = s->newest = NO_SLOT;
    if (cfg && (cfg->max_error > 0 || cfg->verify_rate > 0)) {
        s->verifying = true;
        s->max_error = cfg->max_error;
        s->verify_rate = cfg->verify_rate;
        s->vrate.per_min = cfg->verify_per_min;
        s->judge = cfg->judge == LLMC_JUDGE_EXACT   ? LLMC_JUDGE_EXACT
                   : cfg->judge == LLMC_JUDGE_MODEL ? LLMC_JUDGE_MODEL
                                                    : LLMC_JUDGE_EMBED;
        s->jcfg.url = cfg->judge_url ? strdup(cfg->judge_url) : NULL;
        s->jcfg.model = cfg->judge_model ? strdup(cfg->judge_model) : NULL;
        s->jcfg.auth = cfg->judge_auth ? strdup(cfg->judge_auth) : NULL;
        s->jcfg.timeout_ms = cfg->judge_timeout_ms ? cfg->judge_timeout_ms : 30000;
        s->judge_bound = cfg->judge_bound > 0 ? cfg->judge_bound : 0.8f;
        s->vstart = cfg->verify_start > 0 ? cfg->verify_start : 0.9f;
        s->vband = cfg->verify_band;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)s ^ 0x9E3779B97F4A7C15ull;
    }
    /* Writers preferred: a stream of lookups must not starve put and purge
       (glibc's default prefers readers). No thread takes it twice. */
    pthread_rwlockattr_t ra;
    bool rw_made = pthread_rwlockattr_init(&ra) == 0;
    if (rw_made) {
        (void)pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        rw_made = pthread_rwlock_init(&s->rw, &ra) == 0;
        pthread_rwlockattr_destroy(&ra);
    }
    if (!rw_made || pthread_mutex_init(&s->mu, NULL) != 0) {
        if (rw_made)
            pthread_rwlock_destroy(&s->rw);
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
        llmc_embedder_remote_id(cfg->remote, s->emb_id);
    } else {
        s->dim = LLMC_LEX_DIM;
        s->ix = index_new(s, LLMC_LEX_DIM);
        s->emb = llmc_embedder_lexical_new();
        if (s->emb)
            memcpy(s->emb_id, s->emb->id, sizeof(s->emb_id));
    }
    s->recs = calloc(s->cap, sizeof(*s->recs));
    s->free_slots = malloc(s->cap * sizeof(*s->free_slots));
    if (s->verifying && !(s->nss = calloc(LLMC_TIER_SEMANTIC_NS, sizeof(*s->nss)))) {
        semantic_destroy(&s->tier);
        return NULL;
    }
    if (!s->lex || (!s->remote && (!s->ix || !s->emb)) || !s->recs || !s->free_slots ||
        (s->remote && (!s->remote_cfg.url || (cfg->remote->model && !s->remote_cfg.model) ||
                       (cfg->remote->key && !s->remote_cfg.key)))) {
        semantic_destroy(&s->tier);
        return NULL;
    }
    /* Slot 0 is handed out first. */
    for (size_t i = 0; i < s->cap; i++)
        s->free_slots[i] = (uint32_t)(s->cap - 1 - i);
    s->nfree = s->cap;
    /* What answers learned, before the restorer indexes them again. */
    if (s->verifying && cfg->dir && verify_open(s, cfg->dir, cfg->store) < 0) {
        semantic_destroy(&s->tier);
        return NULL;
    }
    if (cfg && cfg->dir && cfg->store && persist_open(s, cfg->dir, cfg->store) < 0) {
        semantic_destroy(&s->tier);
        return NULL;
    }
    return &s->tier;
}
