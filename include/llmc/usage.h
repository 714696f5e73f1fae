/*
 * llmc/usage.h: the token counts of a stored answer, read from its JSON
 * text: the top-level "usage" object's prompt and completion tokens
 * (OpenAI's prompt_tokens / completion_tokens, or input_tokens /
 * output_tokens as the Responses and Anthropic APIs name them).
 *
 * A pure function over a buffer, no allocation: it is run once per entry
 * (when an answer is stored, and when the disk tier reads one back), so
 * that a hit can say what it saved without looking at the body.
 */
#ifndef LLMC_USAGE_H
#define LLMC_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct llmc_usage {
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
} llmc_usage_t;

/*
 * Reads the usage of the JSON object in json[0, len). True when the object
 * has a top-level "usage" object with a prompt or a completion count (a
 * missing one is 0: an embedding has no completion); false otherwise, also
 * for text that is not a JSON object (never reads outside the buffer). A
 * count that is not a non-negative integer below 2^32 is not taken. Any
 * thread.
 */
bool llmc_usage_scan(const char *json, size_t len, llmc_usage_t *out);

#endif
