/*
 * semantic/guard.h: the guards against wrong semantic hits. Two questions
 * that an embedding finds close may still ask different things ("enable
 * 2FA" / "disable 2FA", "5 km" / "5 miles"); each guard compares one kind
 * of fact the two must share and passes or rejects, with a reason a person
 * can read in a log.
 *
 * A question's features are extracted once (llmc_guard_q_new) and kept with
 * the stored entry, so a lookup compares features, not texts. Pure: no
 * server header, no globals, no clock.
 */
#ifndef LLMC_SEMANTIC_GUARD_H
#define LLMC_SEMANTIC_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#include "semantic/lexical.h"

/* X(ID, "name", "what must agree"), in the order llmc_guard_check runs them:
   the cheap, precise ones first, so a rejection names the most telling
   difference. */
#define LLMC_GUARD_TABLE(X)                                                                 \
    X(NUMBERS, "numbers", "numbers and their units, in order")                              \
    X(QUOTES, "quotes", "quoted strings, exactly")                                          \
    X(CODE, "code", "code spans, exactly")                                                  \
    X(IDENTS, "identifiers", "URLs exactly; paths and code identifiers")                    \
    X(NEGATION, "negation", "the number of negations; no antonym swapped (enable/disable)") \
    X(CONTENT, "content", "every content word, up to fillers, inflection and spelling")     \
    X(ROLES, "roles", "what follows each role word (to, from, into, than, vs)")               \
    X(ORDER, "order", "the content words' order, up to one phrase moved")

enum llmc_guard_id {
#define LLMC_GUARD_ENUM(id, name, what) LLMC_GUARD_##id,
    LLMC_GUARD_TABLE(LLMC_GUARD_ENUM)
#undef LLMC_GUARD_ENUM
    LLMC_GUARD_N
};

/* The guard's short name ("numbers"), static; "?" out of range. */
const char *llmc_guard_name(int id);

/* One question's features. Immutable once built: any thread may read it. */
typedef struct llmc_guard_q llmc_guard_q_t;

/*
 * Extracts text's features with lx (the calling thread's embedder).
 * 0 and *out (the caller's; llmc_guard_q_free), or the errors of
 * llmc_lex_tokenize.
 */
int llmc_guard_q_new(llmc_lex_t *lx, const char *text, size_t len, llmc_guard_q_t **out);
void llmc_guard_q_free(llmc_guard_q_t *q);

/* The reason a guard gives, NUL-terminated, cut to fit. */
#define LLMC_GUARD_REASON 160

/*
 * Runs guard id on a and b: true when it passes; false with reason written
 * (reason may be NULL) when it rejects. Symmetric in a and b.
 */
bool llmc_guard_one(int id, const llmc_guard_q_t *a, const llmc_guard_q_t *b,
                    char reason[LLMC_GUARD_REASON]);

/*
 * Runs every guard in table order and stops at the first that rejects.
 * Returns -1 when all pass, or the rejecting guard's id with its reason.
 */
int llmc_guard_check(const llmc_guard_q_t *a, const llmc_guard_q_t *b,
                     char reason[LLMC_GUARD_REASON]);

#endif
