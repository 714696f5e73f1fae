/*
 * gateway/ask.h: GET /ask in and out. Pure functions over strings: no
 * request, no loop, no shared state, so they are unit tested alone.
 *
 * /ask?q=TEXT[&model=M] stands for a chat completion with one user
 * message; it is keyed exactly like that POST /v1/chat/completions, so
 * the two share cached answers. Its answer is {"answer": the completion's
 * choices[0].message.content, "source": "cache" | "llm"}.
 */
#ifndef LLMC_GW_ASK_H
#define LLMC_GW_ASK_H

#include <stdbool.h>
#include <stddef.h>

/* The endpoint an /ask request is keyed and forwarded as. */
#define LLMC_ASK_PATH "/v1/chat/completions"

/*
 * Percent-decodes the value of query parameter name ('+' is a space) into
 * out (cap bytes, NUL added) and its length into *len: a decoded %00 is part
 * of the value. 0, LLMC_ENOENT (absent), LLMC_EINVAL (a bad %XX) or
 * LLMC_E2BIG (longer than cap - 1).
 */
int llmc_ask_query_param(const char *query, const char *name, char *out, size_t cap,
                         size_t *len);

/*
 * The chat request (compact JSON, malloc'd into *body, *len bytes) that the
 * query of GET /ask stands for; model= overrides default_model. A missing
 * or empty q, bad percent-encoding or bad UTF-8 is LLMC_EINVAL with a
 * message for the client in err; LLMC_ENOMEM.
 */
int llmc_ask_body(const char *query, const char *default_model, char **body, size_t *len,
                  char *err, size_t errlen);

/* {"answer": ..., "source": "cache"|"llm"} for a stored completion (the
   answer is null when it has no text content). malloc'd, NULL when out of
   memory. */
char *llmc_ask_answer(const char *completion, size_t len, bool from_cache, size_t *out_len);

#endif
