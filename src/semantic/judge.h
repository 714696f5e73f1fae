/*
 * semantic/judge.h: the model judge (`--semantic-judge model`): whether two
 * answers say the same, asked of a chat model with one fixed equivalence
 * prompt, asynchronously through the upstream client on one worker's loop.
 * The exact and embed judges are pure and answer at once (verify.h); this
 * one answers later, so the semantic tier learns from it in its callback.
 *
 * The request: a system message LLMC_JUDGE_PROMPT, a user message
 * "Answer A:\n<a>\n\nAnswer B:\n<b>", temperature 0, max_tokens 3. The
 * answer's text, first word, case aside: "yes" is equivalent, "no" is
 * not, anything else is no judgement (LLMC_EBADRESP).
 */
#ifndef LLMC_SEMANTIC_JUDGE_H
#define LLMC_SEMANTIC_JUDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define LLMC_JUDGE_PROMPT                                                                    \
    "You compare two answers to the same question. Reply YES if they give the same "        \
    "information (wording, length and order aside), NO if they do not. Reply with one word."
#define LLMC_JUDGE_MAX_ANSWER (1u << 20) /* the judge's own answer, bytes at most */
#define LLMC_JUDGE_MAX_TEXT (64u << 10)  /* each compared answer, bytes at most */

typedef struct llmc_judge_config {
    const char *url;     /* the chat API base ("http://host/v1"); "/chat/completions" appended */
    const char *model;
    const char *auth;    /* a whole "Authorization: ..." header line, or NULL */
    unsigned timeout_ms;
} llmc_judge_config_t;

typedef struct llmc_judge_model llmc_judge_model_t;

/* rc 0 and same (equivalent or not) with the call's tokens (prompt and
   completion, 0 when the answer did not say), or an LLMC_E*:
   LLMC_ECANCELED when the judge is freed first. */
typedef void (*llmc_judge_cb)(void *arg, int rc, bool same, uint64_t tokens);

/* A new judge on loop (cfg copied). NULL when out of memory. Loop thread. */
llmc_judge_model_t *llmc_judge_model_new(uv_loop_t *loop, const llmc_judge_config_t *cfg);

/* Ends every call (callbacks with LLMC_ECANCELED, inside this call) and
   frees the judge once its handles are closed. NULL is fine. Loop thread. */
void llmc_judge_model_free(llmc_judge_model_t *jm);

/* Asks whether a and b say the same. 0: cb runs later on the loop, never
   inside this call; LLMC_E2BIG (a text over LLMC_JUDGE_MAX_TEXT) or
   LLMC_ENOMEM: cb never runs. Loop thread. */
int llmc_judge_model_ask(llmc_judge_model_t *jm, const char *a, size_t alen, const char *b,
                         size_t blen, llmc_judge_cb cb, void *arg);

/* Reads a judge's answer (a chat completion's JSON): 0 and *same, or
   LLMC_EBADRESP; *tokens gets its usage (0 without). Pure. */
int llmc_judge_model_parse(const char *body, size_t len, bool *same, uint64_t *tokens);

#endif
