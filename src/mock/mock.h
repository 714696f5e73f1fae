/*
 * mock/mock.h: the built-in mock model, an OpenAI-compatible fake model
 * server on the project's HTTP server, for `llmcached mock`, for
 * `--upstream mock`, and for tests.
 *
 * Endpoints: POST /v1/chat/completions (also "stream": true), POST
 * /v1/completions (also streamed), POST /v1/embeddings, GET /v1/models,
 * GET /v1/models/{id}, POST /v1/responses (also streamed as the Responses
 * API's typed events; function tools get a function_call, text.format
 * json_schema a JSON answer, a small max_output_tokens an incomplete
 * response: mock_responses.c), GET /mock/stats, POST /mock/reset, and for tests of
 * pass-through any method on /v1/echo and /v1/echo/...: the request body
 * sent back as it came (its Content-Type too, in 64 KiB pieces), with
 * "X-Request-Id: echo METHOD TARGET". Every /v1 answer waits latency_ms
 * and carries "X-Mock-Call: N", the call's number since start (or reset),
 * and what a real answer says about the account that made it:
 * X-Request-Id (req_mock_N; not on echoes), OpenAI-Organization (the
 * request's, else org-mock), OpenAI-Processing-Ms, X-RateLimit-Remaining-
 * Requests. GET /mock/requests lists the last 64 model calls, each its path
 * and request headers (names in lower case): what the gateway sent.
 *
 * Tests steer single requests through an optional top-level "mock" object in
 * the JSON body (the gateway forwards bodies unchanged):
 *   latency_ms      this request's delay instead of the configured one
 *   status          400-599: answer this status with an OpenAI error (429 adds
 *                   Retry-After: 1); 200-299: the usual answer (or mock.body) with
 *                   this status, 204 without a body
 *   body            a string: send it as the (non-streamed) answer's body, as it
 *                   is, e.g. '{"error": {...}}' to play a 200 that is no answer
 *   retry_after     with status: send this Retry-After value instead (printable
 *                   ASCII, at most 40 bytes; "" sends none)
 *   fault           "reset"        close the connection without an answer
 *                   "truncate"     send the head and half the body, then close
 *                   "invalid-json" 200 with a body that is not JSON
 *                   "empty"        200 with an empty body
 *                   "stall"        never answer (until the client leaves)
 *                   "cut-stream"   a stream stops after half its pieces, no [DONE]
 *                   "stall-body"   send the head and half the body, then nothing
 *                   "endless-stream" a stream that never ends (content pieces
 *                                  repeat every chunk_delay_ms, default 10 ms)
 *   bytes           pad the answer text to about this many bytes
 *   chunk_delay_ms  pause between streamed pieces
 *   split           "bytes": stream in pieces of 1 to 7 bytes, cut anywhere
 *   gzip            true: a plain (not streamed) answer goes gzip-compressed
 *                   (Content-Encoding: gzip) when the request accepts gzip
 *   organizations   an array of strings, the organisations the caller's key
 *                   belongs to: a request whose OpenAI-Organization names
 *                   another gets 401 mismatched_organization, as from OpenAI
 *   api_keys        an array of strings: the API keys taken; a request without
 *                   "Authorization: Bearer <one of them>" gets 401 invalid_api_key
 * The answer echoes the last user message, "\u0000" included (requests are
 * parsed with JSON_ALLOW_NUL): that is how a test gets a NUL in an answer.
 */
#ifndef LLMC_MOCK_H
#define LLMC_MOCK_H

#include <stdint.h>
#include <stddef.h>

typedef struct llmc_mock_config {
    uint64_t latency_ms;   /* delay before each answer */
    const char *classes;   /* a class table's path (mock_classes.c): answers by meaning */
} llmc_mock_config_t;

typedef struct llmc_mock llmc_mock_t;

/* `llmcached mock [--listen HOST:PORT] [--latency-ms N | --latency SECS]
   [--classes FILE]`:
   argv[0] is "mock". Serves on one loop until SIGINT or SIGTERM; prints
   "mock model listening on http://HOST:PORT/v1" to stderr when ready.
   Returns the process exit status (0, 1 on failure, 2 on bad usage). */
int llmc_mock_main(int argc, char **argv);

/* Starts the mock on its own thread and loop, listening on host:port (port 0
   picks a free one); returns once it listens. 0 and *out, or LLMC_EIO /
   LLMC_ENOMEM / LLMC_EINVAL with a message in err. Any thread. */
int llmc_mock_start(const llmc_mock_config_t *cfg, const char *host, int port, llmc_mock_t **out,
                    char *err, size_t errlen);

/* The port the mock listens on. */
int llmc_mock_port(const llmc_mock_t *m);

/* Stops the mock (open requests are dropped), joins its thread and frees it.
   Not from the mock's own thread. */
void llmc_mock_stop(llmc_mock_t *m);

#endif
