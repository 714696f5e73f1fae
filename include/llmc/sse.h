/*
 * llmc/sse.h: server-sent events as OpenAI-style streams use them.
 *
 * Three pieces, all pure (no I/O, no globals, any thread):
 * - A parser (llmc_sse_next) that finds one event in a buffer and points
 *   into it. It keeps no state between calls: the caller keeps an offset
 *   into its buffer and calls again from there when more bytes arrive, so
 *   the same bytes give the same events however they were split.
 * - An assembler (llmc_sse_asm_*) that folds the events' data of a
 *   chat.completion.chunk or text_completion stream into the one
 *   non-streaming object (chat.completion / text_completion) that the same
 *   request without "stream" would have got. That object is what the cache
 *   stores for a stream.
 * - Replay (llmc_sse_replay), the inverse: a stored completion written as an
 *   SSE body that OpenAI clients parse back to the same message.
 *
 * Field syntax follows the WHATWG "server-sent events" parsing rules: lines
 * end in LF, CRLF or CR; a line starting with ':' is a comment; "name:value"
 * loses one space after the colon; a line without a colon is a field with an
 * empty value; a blank line ends the event. Not handled here: a UTF-8 BOM at
 * the very start of a stream (the caller drops it: gateway/fetch.c) and the
 * "retry" field (ignored, as a gateway never reconnects on a client's behalf).
 */
#ifndef LLMC_SSE_H
#define LLMC_SSE_H

#include <stdbool.h>
#include <stddef.h>

/* One event block found by llmc_sse_next. Every pointer points into the
 * caller's buffer and lives as long as it does. */
typedef struct llmc_sse_event {
    const char *raw;      /* the whole block, its ending blank line included */
    size_t raw_len;       /* equals *consumed */
    size_t data_lines;    /* how many "data" fields the block has */
    /* With exactly one data field, data points at its value (data_len
     * bytes, not NUL-terminated): the common case, no copy. With several,
     * data is NULL and data_len is the length of the values joined with
     * "\n"; get them with llmc_sse_event_data. With none, data is NULL and
     * data_len 0: WHATWG dispatches nothing for such a block (keep-alive
     * comments, a lone "event:" line), so the caller skips it. */
    const char *data;
    size_t data_len;
    const char *event;    /* value of the last "event" field, or NULL */
    size_t event_len;
    const char *id;       /* value of the last valid "id" field, or NULL */
    size_t id_len;
} llmc_sse_event_t;

/*
 * Finds the event block at the start of buf (len bytes).
 * Returns:
 *   1            one block ends in buf; *ev describes it and *consumed is its
 *                length up to and including the blank line that ends it.
 *                Every block is returned, data-less ones too, so the caller's
 *                offset always advances by exactly *consumed.
 *   0            buf holds no complete block yet; nothing is consumed. This is
 *                also the answer when buf ends in a CR that may be the first
 *                half of a CRLF split across two reads.
 *   LLMC_E2BIG   the block is (or, unfinished, already is) longer than
 *                max_event bytes. The answer does not depend on how the bytes
 *                were split. Pass SIZE_MAX for no bound.
 *   LLMC_EINVAL  a NULL argument other than a zero-length buf.
 * The work is linear in the block's length, so a caller re-scanning an
 * unfinished block on every read does O(max_event) work per read at most.
 */
int llmc_sse_next(const char *buf, size_t len, size_t max_event, llmc_sse_event_t *ev,
                  size_t *consumed);

/*
 * The same as llmc_sse_next for a buffer that holds the end of the stream:
 * a CR at the very end then ends its line. Bytes of an unfinished block
 * still give 0: WHATWG discards an event cut off by the end of the stream.
 */
int llmc_sse_next_eof(const char *buf, size_t len, size_t max_event, llmc_sse_event_t *ev,
                      size_t *consumed);

/*
 * Writes the event's data (its data fields joined with "\n") to out, at most
 * cap bytes, and a NUL after them when there is room. Returns the full data
 * length (ev->data_len), so a return >= cap means the copy was cut short.
 */
size_t llmc_sse_event_data(const llmc_sse_event_t *ev, char *out, size_t cap);

/* ---- assembler ---------------------------------------------------------- */

typedef struct llmc_sse_asm llmc_sse_asm_t;

/* A new, empty assembler, or NULL without memory. Free it with
 * llmc_sse_asm_free. One stream per assembler; not shared between threads. */
llmc_sse_asm_t *llmc_sse_asm_new(void);

/*
 * Adds one event's data: a JSON chunk, or "[DONE]". Returns 0;
 * LLMC_EJSON when the data is not a JSON object; LLMC_EUPSTREAM for an error
 * event (an object with a non-null "error"); LLMC_EBADRESP for a chunk whose
 * shape cannot be merged (choices not an array, an index that is not an
 * integer, more than LLMC_SSE_MAX_CHOICES choices or tool calls); LLMC_ENOMEM.
 * Every error is sticky: later calls return it again and the stream never
 * becomes complete, because such a stream must not be cached. Data after
 * "[DONE]" is ignored.
 */
int llmc_sse_asm_add(llmc_sse_asm_t *a, const char *data, size_t len);

#define LLMC_SSE_MAX_CHOICES 1024

/* True when "[DONE]" was seen, at least one choice started, every choice that
 * started got a non-null finish_reason, and no error happened. */
bool llmc_sse_asm_complete(const llmc_sse_asm_t *a);

/*
 * Writes the assembled object, compact JSON, to a malloc'd *json (*len
 * bytes, NUL-terminated; the caller frees it). It can be called at any time
 * (it reflects what has been added so far) and more than once. Returns 0,
 * the sticky error, or LLMC_ENOMEM.
 *
 * For a chat stream the object is a chat.completion: the first chunk's
 * top-level fields (unknown ones included, "object" set to
 * "chat.completion"), then choices[] in index order, each {index, message,
 * logprobs, finish_reason}, then usage when a chunk carried one. message
 * merges every delta: role (first one, "assistant" if none), content (null
 * when no string ever came), tool_calls merged by their index (which is
 * dropped), and every other field by one rule: strings are concatenated,
 * arrays extended, objects merged key by key, null never erases, other
 * values replace; "role", "id" and "type" keep their first non-empty string.
 * logprobs merge by the same rule (so their content arrays concatenate);
 * finish_reason is the last non-null one. A text_completion stream gives a
 * text_completion with choices {index, text, logprobs, finish_reason}.
 */
int llmc_sse_asm_result(llmc_sse_asm_t *a, char **json, size_t *len);

/* Frees the assembler. NULL is a no-op. */
void llmc_sse_asm_free(llmc_sse_asm_t *a);

/* ---- replay --------------------------------------------------------------- */

typedef struct llmc_sse_replay_opts {
    size_t piece_bytes;   /* about this many bytes of text per chunk; 0: 24 */
    bool include_usage;   /* stream_options.include_usage of the request */
} llmc_sse_replay_opts_t;

/*
 * Writes a stored chat.completion or text_completion (json, len bytes) as an
 * SSE body into a malloc'd *out (*out_len bytes, NUL-terminated; the caller
 * frees it). o may be NULL for the defaults. Returns 0; LLMC_EJSON when json
 * does not parse; LLMC_EINVAL when it is not a completion object with a
 * choices array; LLMC_ENOMEM.
 *
 * Every event is "data: <compact JSON>\n\n" and the last is "data: [DONE]\n\n".
 * Compact JSON never holds a raw newline, so each event ends with exactly one
 * blank line and "\n\n" occurs nowhere else: a caller pacing the replay can
 * split on "\n\n" (or run llmc_sse_next over the body).
 *
 * For each choice in turn: a first chunk with the role, content "" (or null
 * when the stored content is null) and the message's non-text fields; then
 * reasoning_content, reasoning, content, refusal and any other text field:
 * content and refusal in pieces of about piece_bytes, cut at UTF-8 character
 * boundaries and after a space when one is near, the others whole (clients'
 * stream helpers append only the fields they know); then per tool call a
 * chunk with its index, id, type, function name and "" arguments, followed
 * by the arguments in pieces; then a chunk with an empty delta and the
 * finish_reason. The choice's logprobs object travels whole on its second
 * chunk (assemble.c says why not the first). Last, when o->include_usage
 * and the object has usage, a chunk with "choices": [] and the usage.
 * llmc_sse_asm over the result gives back the stored object (usage aside
 * when include_usage is off).
 */
int llmc_sse_replay(const char *json, size_t len, const llmc_sse_replay_opts_t *o, char **out,
                    size_t *out_len);

/* ---- a shared stream for a client that did not ask for usage ------------- */

/*
 * True when data (one event's data, len bytes) is the chunk that
 * stream_options.include_usage adds at the end of a stream: a JSON object
 * whose "choices" is an empty array and whose "usage" is not null. A chunk
 * that has choices is never one, whatever usage it carries (DeepSeek puts
 * usage on its last content chunk), nor is a choice-less chunk without usage
 * (Azure's prompt_filter_results).
 */
bool llmc_sse_is_usage_chunk(const char *data, size_t len);

/*
 * Copies the SSE bytes buf (len) to out without the events that
 * llmc_sse_is_usage_chunk picks, every other byte as it came and in order:
 * what a client that did not ask for usage gets of a stream that was
 * requested with it. out may be buf itself (the copy never runs ahead of the
 * reading) or a buffer of at least len bytes. Returns the bytes written;
 * *used is how much of buf was dealt with: whole events only, so the caller
 * passes the rest again with more bytes after it. With eof (no byte follows)
 * everything is used, an unfinished last block copied as it is. An event
 * longer than max_event is not looked into: it and everything after it in
 * buf is copied as is.
 */
size_t llmc_sse_drop_usage(const char *buf, size_t len, bool eof, size_t max_event, char *out,
                           size_t *used);

#endif
