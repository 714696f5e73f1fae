/*
 * llmc/anthropic.h: Anthropic Messages streams (POST /v1/messages with
 * "stream": true), folded into the one Message object the cache stores, and
 * that Message replayed as the same event stream.
 *
 * Both are pure (no I/O, no globals, any thread). The events are those of
 * Anthropic's API: message_start, content_block_start, content_block_delta
 * (text_delta, input_json_delta, thinking_delta, signature_delta,
 * citations_delta), content_block_stop, message_delta, message_stop, ping
 * and error. Each event's data names its own "type", so the assembler reads
 * the data alone (the "event:" line repeats it).
 */
#ifndef LLMC_ANTHROPIC_H
#define LLMC_ANTHROPIC_H

#include <stdbool.h>
#include <stddef.h>

/* Most content blocks one Message may have. */
#define LLMC_ANTH_MAX_BLOCKS 1024

typedef struct llmc_anth_asm llmc_anth_asm_t;

/* A new, empty assembler, or NULL without memory. One stream each; not
   shared between threads. Free it with llmc_anth_asm_free. */
llmc_anth_asm_t *llmc_anth_asm_new(void);

/*
 * Adds one event's data (a JSON object, len bytes). Returns 0; LLMC_EJSON
 * when it is not a JSON object; LLMC_EUPSTREAM for an "error" event;
 * LLMC_EBADRESP for an event that cannot be folded in (a block index out of
 * order or range, more than LLMC_ANTH_MAX_BLOCKS blocks, a delta type this
 * code does not know, input JSON that does not parse at the block's stop,
 * any event before message_start); LLMC_ENOMEM. Every error is sticky: such
 * a stream never becomes complete and must not be cached. Unknown event
 * types (Anthropic may add them) and ping are skipped; data after
 * message_stop is ignored.
 */
int llmc_anth_asm_add(llmc_anth_asm_t *a, const char *data, size_t len);

/* True when message_start and message_stop were seen, every block that
   started also stopped, and no error happened. */
bool llmc_anth_asm_complete(const llmc_anth_asm_t *a);

/*
 * Writes the assembled Message, compact JSON, to a malloc'd *json (*len
 * bytes, NUL-terminated; the caller frees it): message_start's message with
 * its content array filled (text and thinking concatenated, a block's input
 * parsed from its input_json_delta fragments, the last signature, citations
 * appended), message_delta's delta fields set on it and its usage members
 * merged into the message's usage (a null never erases). Returns 0, the
 * sticky error, or LLMC_ENOMEM; LLMC_EINVAL before message_start.
 */
int llmc_anth_asm_result(llmc_anth_asm_t *a, char **json, size_t *len);

/* Frees the assembler. NULL is a no-op. */
void llmc_anth_asm_free(llmc_anth_asm_t *a);

/*
 * Writes a stored Message (json, len bytes) as an Anthropic event stream
 * into a malloc'd *out (*out_len bytes, NUL-terminated). piece_bytes: about
 * this many bytes of text per delta (0: 24). Returns 0; LLMC_EJSON when
 * json does not parse; LLMC_EINVAL when it is not an object with a content
 * array of objects; LLMC_ENOMEM.
 *
 * Every event is "event: <type>\ndata: <compact JSON>\n\n" (compact JSON
 * holds no raw newline, so a pacer can split on "\n\n"): message_start (the
 * message with an empty content array, stop_reason and stop_sequence null,
 * its full usage), a ping, then per block a content_block_start (the block
 * with its text, thinking, signature and citations emptied and its input
 * {}), its deltas (text and thinking in pieces, the input as
 * input_json_delta fragments of its compact JSON, the signature whole, one
 * citations_delta per citation) and content_block_stop; then message_delta
 * (stop_reason, stop_sequence, the full usage) and message_stop. Other
 * block types travel whole in their start. llmc_anth_asm over the result
 * gives back the stored Message.
 */
int llmc_anth_replay(const char *json, size_t len, size_t piece_bytes, char **out,
                     size_t *out_len);

#endif
