/*
 * fuzz_responses_stream.c: libFuzzer driver for the Responses API's stream
 * assembler and replay (src/core/responses_stream.c).
 *
 * Input: one control byte (the replay's piece size), then either an SSE
 * stream of the API's events or, when the control byte is odd, a stored
 * response object given straight to the replay.
 *
 * What it checks, beyond the sanitizers:
 * - The assembler takes every event's data and answers; an error is sticky
 *   and leaves the stream incomplete.
 * - A complete stream's result is a JSON object.
 * - Whatever replays (the assembled result, or the raw input) assembles
 *   back to the same object (compared as JSON), with every event's name
 *   equal to its data's type and sequence numbers 0, 1, 2, ...
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llmc/error.h"
#include "llmc/responses_stream.h"
#include "llmc/sse.h"

#include "fuzz_check.h"

/* Feeds every event of buf (len) to a; returns the assembler's last answer. */
static int feed(llmc_resp_asm_t *a, const char *buf, size_t len, bool strict)
{
    size_t off = 0, used, n = 0;
    llmc_sse_event_t ev;
    int rc = 0;
    while (off < len && llmc_sse_next_eof(buf + off, len - off, 1u << 20, &ev, &used) == 1) {
        off += used;
        if (!ev.data_lines)
            continue;
        char *d = malloc(ev.data_len + 1);
        CHECK(d);
        size_t dl = llmc_sse_event_data(&ev, d, ev.data_len + 1);
        rc = llmc_resp_asm_add(a, d, dl);
        if (strict) { /* a replay: names and numbers as promised */
            json_t *o = json_loadb(d, dl, JSON_ALLOW_NUL, NULL);
            const char *t = json_string_value(json_object_get(o, "type"));
            CHECK(t && ev.event && ev.event_len == strlen(t) && !memcmp(ev.event, t, ev.event_len));
            CHECK(json_integer_value(json_object_get(o, "sequence_number")) == (json_int_t)n);
            json_decref(o);
        }
        n++;
        free(d);
    }
    if (strict)
        CHECK(off == len);
    return rc;
}

/* Replays json and checks that it assembles back to the same object. */
static void round_trip(const char *json, size_t len, size_t piece)
{
    char *sse = NULL;
    size_t sse_len = 0;
    int rc = llmc_resp_replay(json, len, piece, &sse, &sse_len);
    CHECK(rc == 0 || rc == LLMC_EJSON || rc == LLMC_EINVAL);
    if (rc)
        return;
    llmc_resp_asm_t *a = llmc_resp_asm_new();
    CHECK(a);
    CHECK(feed(a, sse, sse_len, true) == 0);
    CHECK(llmc_resp_asm_complete(a));
    char *back = NULL;
    size_t blen = 0;
    CHECK(llmc_resp_asm_result(a, &back, &blen) == 0);
    json_t *x = json_loadb(json, len, JSON_ALLOW_NUL, NULL);
    json_t *y = json_loadb(back, blen, JSON_ALLOW_NUL, NULL);
    CHECK(x && y && json_equal(x, y));
    json_decref(x);
    json_decref(y);
    free(back);
    free(sse);
    llmc_resp_asm_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t piece = 1 + data[0] / 2 % 32;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        round_trip(buf, len, piece);
        return 0;
    }
    llmc_resp_asm_t *a = llmc_resp_asm_new();
    CHECK(a);
    int rc = feed(a, buf, len, false);
    CHECK(rc <= 0);
    if (rc < 0)
        CHECK(!llmc_resp_asm_complete(a));
    char *json = NULL;
    size_t jl = 0;
    if (llmc_resp_asm_complete(a)) {
        CHECK(llmc_resp_asm_result(a, &json, &jl) == 0);
        json_t *o = json_loadb(json, jl, JSON_ALLOW_NUL, NULL);
        CHECK(json_is_object(o));
        json_decref(o);
        round_trip(json, jl, piece);
        free(json);
    }
    llmc_resp_asm_free(a);
    return 0;
}
