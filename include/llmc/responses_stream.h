/*
 * llmc/responses_stream.h: the Responses API's typed event stream
 * (POST /v1/responses with "stream": true), folded into the response object
 * the cache stores, and that object written back as an event stream.
 *
 * The stream is SSE whose events carry "event: <type>" and a JSON data
 * object with the same "type" and a "sequence_number": response.created,
 * response.in_progress, response.output_item.added, ...,
 * response.output_text.delta, ..., response.completed. Unlike a chat
 * stream there is nothing to merge: response.completed carries the whole
 * final response, usage included, which is what the same request without
 * "stream" gets. Parse the events with llmc_sse_next (llmc/sse.h) and hand
 * each one's data to llmc_resp_asm_add.
 *
 * Pure (no I/O, no globals); any thread, one assembler per stream.
 */
#ifndef LLMC_RESPONSES_STREAM_H
#define LLMC_RESPONSES_STREAM_H

#include <stdbool.h>
#include <stddef.h>

typedef struct llmc_resp_asm llmc_resp_asm_t;

/* A new assembler, or NULL without memory. Free it with llmc_resp_asm_free. */
llmc_resp_asm_t *llmc_resp_asm_new(void);

/*
 * Adds one event's data (len bytes). Returns 0; LLMC_EJSON when it is not
 * a JSON object; LLMC_EBADRESP when it has no string "type", when a
 * response.completed carries no response object, or an output index is
 * not an integer in [0, LLMC_RESP_MAX_ITEMS); LLMC_EUPSTREAM for an
 * "error", "response.failed" or "response.incomplete" event (an answer
 * that is not the model's whole answer); LLMC_ENOMEM. Every error is
 * sticky: later calls return it and the stream never becomes complete.
 * Events after response.completed, and a "[DONE]" some compatible servers
 * send, are ignored.
 */
int llmc_resp_asm_add(llmc_resp_asm_t *a, const char *data, size_t len);

#define LLMC_RESP_MAX_ITEMS 1024

/* True when response.completed came and no error happened. */
bool llmc_resp_asm_complete(const llmc_resp_asm_t *a);

/*
 * Writes the final response, compact JSON, to a malloc'd *json (*len bytes,
 * NUL-terminated; the caller frees it): the "response" of response.completed,
 * its members in the order they came. When that object has no "output"
 * array, or an empty one while response.output_item.done events brought
 * items, the items (in output_index order) are put there: some compatible
 * servers send a slim response.completed. Returns 0, the sticky error,
 * LLMC_EINVAL before response.completed, or LLMC_ENOMEM.
 */
int llmc_resp_asm_result(llmc_resp_asm_t *a, char **json, size_t *len);

/* Frees the assembler. NULL is a no-op. */
void llmc_resp_asm_free(llmc_resp_asm_t *a);

/*
 * Writes a stored response object (json, len bytes) as the event stream
 * the Responses API sends for it, into a malloc'd *out (*out_len bytes,
 * NUL-terminated; the caller frees it). Text travels in pieces of about
 * piece_bytes (0: 24), cut at UTF-8 character boundaries. Returns 0;
 * LLMC_EJSON when json does not parse; LLMC_EINVAL when it is not an
 * object with an "output" array of objects; LLMC_ENOMEM.
 *
 * Every event is "event: <type>\ndata: <compact JSON>\n\n", its data
 * starting with "type" and "sequence_number" (0, 1, 2, ...), so "\n\n"
 * ends each event and occurs nowhere else. The sequence: response.created
 * and response.in_progress (the response with status "in_progress", no
 * output, usage null); per output item, response.output_item.added (the
 * item without its text, status "in_progress"), then
 * - message: per content part, response.content_part.added (the part with
 *   no text), its text as response.output_text.delta (or
 *   response.refusal.delta) pieces, response.output_text.annotation.added
 *   per annotation, response.output_text.done (refusal.done), and
 *   response.content_part.done with the whole part;
 * - function_call: response.function_call_arguments.delta pieces and
 *   response.function_call_arguments.done;
 * - reasoning: per summary part, response.reasoning_summary_part.added,
 *   response.reasoning_summary_text.delta pieces and .done, and
 *   response.reasoning_summary_part.done;
 * - any other type travels whole in its added and done events;
 * then response.output_item.done with the whole item. Last,
 * response.completed with the stored object as it is (usage included).
 * llmc_resp_asm over the result gives back the stored object.
 */
int llmc_resp_replay(const char *json, size_t len, size_t piece_bytes, char **out,
                     size_t *out_len);

#endif
