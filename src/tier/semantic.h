/*
 * tier/semantic.h: the semantic tier: a question (chat, /ask, a completion's
 * prompt) close enough to one answered before, with everything else about
 * the request equal, gets that answer (issue 15). It sits after the exact tiers, so it is asked only on
 * an exact miss, and it asks the gateway for the whole query (wants_query).
 */
#ifndef LLMC_TIER_SEMANTIC_H
#define LLMC_TIER_SEMANTIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmc/tier.h"
#include "semantic/embed.h"

/* The default similarity a candidate must reach before the guards judge it. */
#define LLMC_TIER_SEMANTIC_THRESHOLD 0.70f
/* The default number of answers the tier indexes; past it the oldest goes. */
#define LLMC_TIER_SEMANTIC_MAX_ENTRIES 65536
/* Questions waiting for their answer's store (see semantic.c). */
#define LLMC_TIER_SEMANTIC_PENDING 256
/* Candidates the guards judge per lookup, best first. */
#define LLMC_TIER_SEMANTIC_CANDIDATES 4
/* Request keys a record answers besides its own (see semantic.c). */
#define LLMC_TIER_SEMANTIC_ALIASES 4
/* Answers a wrong verification looks at around its question, to bar them. */
#define LLMC_TIER_SEMANTIC_REGION 32
/* Namespaces whose verification is measured apart; past it they share one row. */
#define LLMC_TIER_SEMANTIC_NS 64
/* Records tick() examines per call. */
#define LLMC_TIER_SEMANTIC_SWEEP_BUDGET 1024

typedef struct llmc_semantic_config {
    float threshold;     /* 0: LLMC_TIER_SEMANTIC_THRESHOLD */
    size_t max_entries;  /* 0: LLMC_TIER_SEMANTIC_MAX_ENTRIES */
    /* The index's graph search (semantic/hnsw.h, llmc_hnsw_walk_t): beam
       width search_ef (0: LLMC_VINDEX_FEW_EF); a first walk at
       search_narrow (0: none) widened when its best find scores at least
       the threshold less search_margin. */
    unsigned search_ef, search_narrow;
    float search_margin;
    /* The graph walks by the vectors' floats alone, not by int8 codes
       first (semantic/hnsw.h quantize): less memory, slower searches. */
    bool search_floats;
    /* Bytes of the entries the tier holds (the entry blocks and vectors);
       past it the oldest go. 0: no bound beyond max_entries. */
    uint64_t max_bytes;
    /* Shadow mode: every lookup misses; what would have hit is logged and
       counted, and when the model's answer comes it is compared with the
       answer that would have been served. */
    bool shadow;
    /* Where shadow mode's lines go (one JSON object each, no newline);
       NULL: stderr. Called with the tier's mutex held: keep it short. */
    void (*log)(void *arg, const char *line);
    void *log_arg;
    /* Persistence: the questions of indexed answers are appended to
       dir/semantic.log with their vectors, and at start a background
       thread reads them back, finds each answer again with store's get()
       (the disk tier) and indexes it (the stored vector when this tier's
       embedder made it); an answer store no longer has (purged, expired)
       is dropped, and the file is rewritten with the rest. Both NULL: none. */
    const char *dir;
    llmc_tier_t *store;
    /* The remote embedder (--semantic-embedder openai), one per worker made
       at attach; NULL: the built-in lexical one. Copied. */
    const llmc_embed_config_t *remote;
    /* Measured correctness (issue 16, semantic/verify.h). max_error: the
       budget of wrong hits (0: none: the global threshold serves, but an
       answer verified wrong is still barred); verify_rate: the fraction of
       hits whose lookup says verify (the caller then sends the request to
       the model in the background and stores its answer as usual, which
       put() judges), at most verify_per_min a minute. Both 0: off. With
       dir, what each answer learned is kept in dir/semantic-verify.log. */
    double max_error;
    double verify_rate;
    unsigned verify_per_min;
    int judge;           /* llmc_judge_t */
    float judge_bound;   /* embed judge: the answers' cosine to count as equal */
    float verify_start;  /* with max_error: an unverified answer's threshold */
    float verify_band;   /* with max_error: the uncertain band under it (probes) */
    /* judge LLMC_JUDGE_MODEL: the chat API and model asked (semantic/judge.h),
       one judge per worker made at attach. Copied. */
    const char *judge_url, *judge_model, *judge_auth;
    unsigned judge_timeout_ms;
} llmc_semantic_config_t;

struct llmc_semq;

/* Where the questions this tier indexes from its own traffic go (issue 19:
   tier/redis_vec.c publishes them to the other gateways): rec is a
   tier/semantic_log.h record (vector and embedder id included), valid
   during the call. Called on the storing worker's thread, without the
   tier's locks. */
typedef void (*llmc_semantic_share_fn)(void *arg, unsigned worker, const uint8_t *rec,
                                       size_t len);

/* Sets the share hook (NULL: none). Main thread, before the workers run. */
void llmc_tier_semantic_share(llmc_tier_t *t, llmc_semantic_share_fn fn, void *arg);

/* Indexes another gateway's question q with its answer e (read from the
   shared store; the tier takes its own reference). Its vector is used
   when its embedder is this tier's; else the lexical embedder embeds it
   anew, and a remote embedder's tier refuses it (no embedding call for a
   peer). Not shared again, not persisted. own: q is this gateway's own,
   read back after a resync dropped it (counted as regained, not as a
   peer's). 0, or LLMC_ENOENT (refused, counted). Any thread. */
int llmc_tier_semantic_add_peer(llmc_tier_t *t, const struct llmc_semq *q, llmc_entry_t *e,
                                int64_t now_ms, bool own);

/* A new semantic tier named "semantic" (cfg may be NULL: the defaults), or
   NULL when out of memory or when cfg->dir's question file cannot be set
   up. Main thread; its ops may then be called from any
   thread (two locks inside, semantic.c). */
llmc_tier_t *llmc_tier_semantic_new(const llmc_semantic_config_t *cfg);

#endif
