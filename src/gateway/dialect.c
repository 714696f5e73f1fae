/*
 * gateway/dialect.c: the stream dialect of each streaming route (see
 * dialect.h). The rows adapt the core's typed functions (llmc/sse.h for
 * chat and text completions, llmc/responses_stream.h for the Responses
 * API) to one signature.
 */
#include "gateway/dialect.h"

#include <string.h>

#include "llmc/responses_stream.h"
#include "llmc/sse.h"

/* ---- chat and text completions: chunks merged, usage on request ---------- */

static void *chat_new(void) { return llmc_sse_asm_new(); }
static int chat_add(void *a, const char *d, size_t n) { return llmc_sse_asm_add(a, d, n); }
static bool chat_complete(const void *a) { return llmc_sse_asm_complete(a); }
static int chat_result(void *a, char **j, size_t *n) { return llmc_sse_asm_result(a, j, n); }
static void chat_free(void *a) { llmc_sse_asm_free(a); }

static int chat_replay(const char *json, size_t len, bool usage, char **out, size_t *out_len)
{
    llmc_sse_replay_opts_t o = {.piece_bytes = 0, .include_usage = usage};
    return llmc_sse_replay(json, len, &o, out, out_len);
}

/* ---- the Responses API: typed events, response.completed holds it all ---- */

static void *resp_new(void) { return llmc_resp_asm_new(); }
static int resp_add(void *a, const char *d, size_t n) { return llmc_resp_asm_add(a, d, n); }
static bool resp_complete(const void *a) { return llmc_resp_asm_complete(a); }
static int resp_result(void *a, char **j, size_t *n) { return llmc_resp_asm_result(a, j, n); }
static void resp_free(void *a) { llmc_resp_asm_free(a); }

static int resp_replay(const char *json, size_t len, bool usage, char **out, size_t *out_len)
{
    (void)usage; /* always in response.completed */
    return llmc_resp_replay(json, len, 0, out, out_len);
}

static const llmc_dialect_t dialects[] = {
    {"/v1/chat/completions", true, chat_new, chat_add, chat_complete, chat_result, chat_free,
     chat_replay},
    {"/v1/responses", false, resp_new, resp_add, resp_complete, resp_result, resp_free,
     resp_replay},
};

const llmc_dialect_t *llmc_dialect_of(const char *route)
{
    for (size_t i = 0; route && i < sizeof(dialects) / sizeof(dialects[0]); i++)
        if (strcmp(dialects[i].route, route) == 0)
            return &dialects[i];
    return &dialects[0]; /* /v1/completions and /ask stream as chat does */
}
