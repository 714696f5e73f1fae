/*
 * fuzz_anthropic.c: libFuzzer driver for the Anthropic Messages stream
 * assembler and replay (src/core/anthropic.c).
 *
 * Input: an SSE body (the events are found with llmc_sse_next_eof, as
 * fetch.c finds them), every event's data fed to the assembler.
 *
 * What it checks, beyond the sanitizers (leaks included):
 * - The assembler answers 0 or one of its documented errors, and once it
 *   failed it keeps failing (sticky) and is never complete.
 * - Whenever result() gives a Message (complete or not), replaying it, in
 *   pieces of a size taken from the input's length, gives a stream that
 *   assembles complete and back to the same Message (compared as JSON).
 * - Replay of the raw input as if it were a stored Message answers 0 or
 *   LLMC_EJSON / LLMC_EINVAL, never anything else.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llmc/anthropic.h"
#include "llmc/error.h"
#include "llmc/sse.h"

#include "fuzz_check.h"

static int feed(llmc_anth_asm_t *a, const char *buf, size_t len)
{
    size_t off = 0;
    int err = 0;
    while (off < len) {
        llmc_sse_event_t ev;
        size_t used = 0;
        if (llmc_sse_next_eof(buf + off, len - off, 1u << 20, &ev, &used) <= 0)
            break;
        off += used;
        if (!ev.data_lines)
            continue;
        char *d = malloc(ev.data_len + 1);
        CHECK(d);
        size_t n = llmc_sse_event_data(&ev, d, ev.data_len + 1);
        int rc = llmc_anth_asm_add(a, d, n);
        free(d);
        CHECK(rc == 0 || rc == LLMC_EJSON || rc == LLMC_EUPSTREAM || rc == LLMC_EBADRESP ||
              rc == LLMC_ENOMEM);
        CHECK(!err || rc == err); /* sticky */
        if (rc)
            err = rc;
    }
    return err;
}

static void roundtrip(const char *json, size_t len, size_t piece)
{
    char *sse = NULL;
    size_t n = 0;
    CHECK(llmc_anth_replay(json, len, piece, &sse, &n) == 0);
    llmc_anth_asm_t *a = llmc_anth_asm_new();
    CHECK(a);
    CHECK(feed(a, sse, n) == 0);
    CHECK(llmc_anth_asm_complete(a));
    char *back = NULL;
    size_t blen = 0;
    CHECK(llmc_anth_asm_result(a, &back, &blen) == 0);
    json_t *x = json_loadb(json, len, 0, NULL), *y = json_loadb(back, blen, 0, NULL);
    CHECK(x && y && json_equal(x, y));
    json_decref(x);
    json_decref(y);
    free(back);
    free(sse);
    llmc_anth_asm_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    llmc_anth_asm_t *a = llmc_anth_asm_new();
    CHECK(a);
    int err = feed(a, buf, size);
    if (err)
        CHECK(!llmc_anth_asm_complete(a));
    char *json = NULL;
    size_t len = 0;
    int rc = llmc_anth_asm_result(a, &json, &len);
    CHECK(rc == 0 || rc == err || rc == LLMC_EINVAL);
    if (rc == 0) {
        CHECK(json && strlen(json) == len);
        roundtrip(json, len, 1 + size % 13);
        free(json);
    }
    llmc_anth_asm_free(a);

    char *out = NULL;
    size_t n = 0;
    rc = llmc_anth_replay(buf, size, 0, &out, &n);
    CHECK(rc == 0 || rc == LLMC_EJSON || rc == LLMC_EINVAL);
    CHECK(rc == 0 ? out != NULL : out == NULL);
    free(out);
    return 0;
}
