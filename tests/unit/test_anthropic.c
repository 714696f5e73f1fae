/*
 * test_anthropic.c: Anthropic Messages streams folded into one Message and
 * replayed from it (src/core/anthropic.c).
 *
 * The recorded stream is shaped like the ones Anthropic's API sends (its
 * "Streaming Messages" reference): a thinking block with its signature, a
 * text block with multi-byte characters, a tool_use block whose input comes
 * in input_json_delta fragments cut mid-token, a ping and an event type
 * this code does not know. The assembler must give the Message a plain call
 * would have answered, and replaying that Message must assemble back to it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "llmc/anthropic.h"
#include "llmc/error.h"
#include "llmc/sse.h"

#define EV(name, json) "event: " name "\ndata: " json "\n\n"

static const char STREAM[] =
    EV("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":"
       "\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":"
       "null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":"
       "0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}")
    EV("ping", "{\"type\": \"ping\"}")
    EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
       "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
       "\"thinking_delta\",\"thinking\":\"Let me think \"}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
       "\"thinking_delta\",\"thinking\":\"step by step.\"}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
       "\"signature_delta\",\"signature\":\"EqQBCgIYAhIM1gbcDa9GJwZA2b3h\"}}")
    EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}")
    EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":"
       "{\"type\":\"text\",\"text\":\"\"}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
       "\"text_delta\",\"text\":\"Caf\\u00e9 \"}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
       "\"text_delta\",\"text\":\"\xe2\x98\x95 ready.\"}}")
    EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}")
    EV("something_new", "{\"type\":\"something_new\",\"x\":1}")
    EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":"
       "{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":{}}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":"
       "\"input_json_delta\",\"partial_json\":\"\"}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":"
       "\"input_json_delta\",\"partial_json\":\"{\\\"locat\"}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":"
       "\"input_json_delta\",\"partial_json\":\"ion\\\": \\\"Paris\\\", \\\"days\\\": 3}\"}}")
    EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":2}")
    EV("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
       "\"stop_sequence\":null},\"usage\":{\"output_tokens\":89,\"input_tokens\":null}}")
    EV("message_stop", "{\"type\":\"message_stop\"}");

static const char EXPECTED[] =
    "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":["
    "{\"type\":\"thinking\",\"thinking\":\"Let me think step by step.\",\"signature\":"
    "\"EqQBCgIYAhIM1gbcDa9GJwZA2b3h\"},"
    "{\"type\":\"text\",\"text\":\"Caf\\u00e9 \xe2\x98\x95 ready.\"},"
    "{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":"
    "{\"location\":\"Paris\",\"days\":3}}],"
    "\"model\":\"claude-x\",\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":"
    "{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
    "\"output_tokens\":89}}";

/* Feeds every event of sse to a; returns the first error (or 0). */
static int feed(llmc_anth_asm_t *a, const char *sse, size_t len)
{
    size_t off = 0;
    while (off < len) {
        llmc_sse_event_t ev;
        size_t used = 0;
        int rc = llmc_sse_next_eof(sse + off, len - off, SIZE_MAX, &ev, &used);
        if (rc <= 0)
            return rc;
        off += used;
        if (!ev.data_lines)
            continue;
        char *d = malloc(ev.data_len + 1);
        size_t n = llmc_sse_event_data(&ev, d, ev.data_len + 1);
        rc = llmc_anth_asm_add(a, d, n);
        free(d);
        if (rc)
            return rc;
    }
    return 0;
}

static char *assemble(const char *sse, size_t len, bool *complete, int *err)
{
    llmc_anth_asm_t *a = llmc_anth_asm_new();
    assert_non_null(a);
    *err = feed(a, sse, len);
    *complete = llmc_anth_asm_complete(a);
    char *json = NULL;
    size_t n = 0;
    if (*err == 0)
        assert_int_equal(llmc_anth_asm_result(a, &json, &n), 0);
    llmc_anth_asm_free(a);
    return json;
}

static void assert_json_equal(const char *got, const char *want)
{
    json_t *g = json_loads(got, 0, NULL), *w = json_loads(want, 0, NULL);
    assert_non_null(g);
    assert_non_null(w);
    if (!json_equal(g, w))
        fail_msg("got  %s\nwant %s", got, want);
    json_decref(g);
    json_decref(w);
}

static void test_stream_assembles_to_the_message(void **state)
{
    (void)state;
    bool complete;
    int err;
    char *json = assemble(STREAM, sizeof(STREAM) - 1, &complete, &err);
    assert_int_equal(err, 0);
    assert_true(complete);
    assert_json_equal(json, EXPECTED);
    /* Members keep message_start's order: content where it was. */
    assert_non_null(strstr(json, "\"role\":\"assistant\",\"content\":["));
    free(json);
}

static void roundtrip(size_t piece)
{
    char *sse = NULL;
    size_t n = 0;
    assert_int_equal(llmc_anth_replay(EXPECTED, sizeof(EXPECTED) - 1, piece, &sse, &n), 0);
    assert_int_equal(strlen(sse), n);
    /* Each event ends with the only blank line in it: a pacer splits on it. */
    size_t blanks = 0, events = 0;
    for (const char *p = sse; (p = strstr(p, "\n\n")); p += 2)
        blanks++;
    for (const char *p = sse; (p = strstr(p, "event: ")); p += 7)
        events++;
    assert_int_equal(blanks, events);
    bool complete;
    int err;
    char *json = assemble(sse, n, &complete, &err);
    assert_int_equal(err, 0);
    assert_true(complete);
    assert_json_equal(json, EXPECTED);
    free(json);
    free(sse);
}

static void test_replay_assembles_back(void **state)
{
    (void)state;
    roundtrip(0);
    roundtrip(1); /* one byte a piece: cuts land inside UTF-8 characters */
    roundtrip(7);
}

static void test_replay_event_sequence(void **state)
{
    (void)state;
    char *sse = NULL;
    size_t n = 0;
    assert_int_equal(llmc_anth_replay(EXPECTED, sizeof(EXPECTED) - 1, 0, &sse, &n), 0);
    assert_true(strncmp(sse, "event: message_start\ndata: ", 27) == 0);
    assert_non_null(strstr(sse, "\"stop_reason\":null"));
    assert_non_null(strstr(sse, "\"type\":\"signature_delta\""));
    assert_non_null(strstr(sse, "\"type\":\"input_json_delta\""));
    assert_non_null(strstr(sse, "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\","
                                "\"name\":\"get_weather\",\"input\":{}}"));
    const char *tail = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    assert_string_equal(sse + n - strlen(tail), tail);
    free(sse);
}

/* The stream cut before its end: never complete, so never stored. */
static void test_cut_stream_is_not_complete(void **state)
{
    (void)state;
    const char *stop = strstr(STREAM, "event: message_stop");
    const char *mid = strstr(STREAM, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                                     "\"index\":2}");
    bool complete;
    int err;
    free(assemble(STREAM, (size_t)(stop - STREAM), &complete, &err));
    assert_int_equal(err, 0);
    assert_false(complete);
    free(assemble(STREAM, (size_t)(mid - STREAM), &complete, &err));
    assert_false(complete);
}

static void expect_error(const char *data, int want)
{
    static const char start[] =
        "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"content\":[]}}";
    static const char block[] = "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                                "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"n\",\"input\":{}}}";
    llmc_anth_asm_t *a = llmc_anth_asm_new();
    assert_int_equal(llmc_anth_asm_add(a, start, strlen(start)), 0);
    assert_int_equal(llmc_anth_asm_add(a, block, strlen(block)), 0);
    assert_int_equal(llmc_anth_asm_add(a, data, strlen(data)), want);
    /* Sticky: the stream stays broken whatever follows. */
    assert_int_equal(llmc_anth_asm_add(a, "{\"type\":\"message_stop\"}", 23), want);
    assert_false(llmc_anth_asm_complete(a));
    char *json = NULL;
    size_t n;
    assert_int_equal(llmc_anth_asm_result(a, &json, &n), want);
    llmc_anth_asm_free(a);
}

static void test_bad_events_make_the_stream_uncacheable(void **state)
{
    (void)state;
    expect_error("{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}",
                 LLMC_EUPSTREAM);
    expect_error("not json", LLMC_EJSON);
    expect_error("{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"mystery\"}}",
                 LLMC_EBADRESP);
    expect_error("{\"type\":\"content_block_delta\",\"index\":5,\"delta\":{\"type\":\"text_delta\","
                 "\"text\":\"x\"}}", LLMC_EBADRESP);
    expect_error("{\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"text\"}}",
                 LLMC_EBADRESP);
    expect_error("{\"type\":\"message_start\",\"message\":{}}", LLMC_EBADRESP);
    expect_error("{\"no\":\"type\"}", LLMC_EBADRESP);
}

static void test_broken_tool_input_is_refused(void **state)
{
    (void)state;
    static const char s[] =
        EV("message_start", "{\"type\":\"message_start\",\"message\":{\"content\":[]}}")
        EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
           "{\"type\":\"tool_use\",\"input\":{}}}")
        EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
           "\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}")
        EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}");
    bool complete;
    int err;
    assert_null(assemble(s, sizeof(s) - 1, &complete, &err));
    assert_int_equal(err, LLMC_EBADRESP);
}

static void test_before_message_start(void **state)
{
    (void)state;
    llmc_anth_asm_t *a = llmc_anth_asm_new();
    const char *d = "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{}}";
    assert_int_equal(llmc_anth_asm_add(a, d, strlen(d)), LLMC_EBADRESP);
    llmc_anth_asm_free(a);
    a = llmc_anth_asm_new();
    char *json = NULL;
    size_t n;
    assert_int_equal(llmc_anth_asm_result(a, &json, &n), LLMC_EINVAL);
    llmc_anth_asm_free(a);
    llmc_anth_asm_free(NULL);
}

static void test_replay_bad_input(void **state)
{
    (void)state;
    char *out = NULL;
    size_t n;
    assert_int_equal(llmc_anth_replay("nope", 4, 0, &out, &n), LLMC_EJSON);
    assert_int_equal(llmc_anth_replay("{\"type\":\"message\"}", 18, 0, &out, &n), LLMC_EINVAL);
    assert_int_equal(llmc_anth_replay("{\"content\":[1]}", 15, 0, &out, &n), LLMC_EINVAL);
    assert_int_equal(llmc_anth_replay("[]", 2, 0, &out, &n), LLMC_EINVAL);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_assembles_to_the_message),
        cmocka_unit_test(test_replay_assembles_back),
        cmocka_unit_test(test_replay_event_sequence),
        cmocka_unit_test(test_cut_stream_is_not_complete),
        cmocka_unit_test(test_bad_events_make_the_stream_uncacheable),
        cmocka_unit_test(test_broken_tool_input_is_refused),
        cmocka_unit_test(test_before_message_start),
        cmocka_unit_test(test_replay_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
