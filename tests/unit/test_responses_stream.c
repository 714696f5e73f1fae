/* Unit tests for core/responses_stream.c: the Responses API's events to one
   response object (what the cache stores) and back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "llmc/error.h"
#include "llmc/responses_stream.h"
#include "llmc/sse.h"

/* Every item kind the replay treats apart: a message with an annotated
   text part and a refusal part, a function call, a reasoning item with a
   summary, and a kind it does not know (whole in added and done). */
static const char stored[] =
    "{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1700000000,\"status\":\"completed\","
    "\"model\":\"gpt-4o\",\"output\":["
    "{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[{\"type\":\"summary_text\","
    "\"text\":\"Thinking about caches, \\u00e9t\\u00e9 \\ud83d\\ude00 and more.\"}]},"
    "{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\","
    "\"content\":[{\"type\":\"output_text\",\"text\":\"A cache keeps answers so that the next "
    "identical question costs nothing.\",\"annotations\":[{\"type\":\"url_citation\",\"url\":"
    "\"https://example.com\",\"start_index\":0,\"end_index\":5}]},"
    "{\"type\":\"refusal\",\"refusal\":\"I will not say more than that.\"}]},"
    "{\"id\":\"fc_1\",\"type\":\"function_call\",\"status\":\"completed\",\"call_id\":\"call_1\","
    "\"name\":\"lookup\",\"arguments\":\"{\\\"query\\\":\\\"what is a cache, in detail\\\"}\"},"
    "{\"id\":\"ws_1\",\"type\":\"web_search_call\",\"status\":\"completed\"}],"
    "\"usage\":{\"input_tokens\":12,\"output_tokens\":34,\"total_tokens\":46}}";

/* Feeds every event of sse (len) to a new assembler. */
static llmc_resp_asm_t *assemble(const char *sse, size_t len, size_t *nevents)
{
    llmc_resp_asm_t *a = llmc_resp_asm_new();
    assert_non_null(a);
    size_t off = 0, n = 0;
    llmc_sse_event_t ev;
    size_t used;
    while (off < len && llmc_sse_next(sse + off, len - off, SIZE_MAX, &ev, &used) == 1) {
        assert_int_equal(ev.data_lines, 1);
        assert_int_equal(llmc_resp_asm_add(a, ev.data, ev.data_len), 0);
        /* The event's name is its data's type, and numbers count from 0. */
        json_t *d = json_loadb(ev.data, ev.data_len, 0, NULL);
        const char *t = json_string_value(json_object_get(d, "type"));
        assert_non_null(t);
        assert_int_equal(ev.event_len, strlen(t));
        assert_memory_equal(ev.event, t, ev.event_len);
        assert_int_equal(json_integer_value(json_object_get(d, "sequence_number")), (json_int_t)n);
        json_decref(d);
        off += used;
        n++;
    }
    assert_int_equal(off, len);
    *nevents = n;
    return a;
}

static void test_replay_assembles_back(void **state)
{
    (void)state;
    char *sse = NULL, *json = NULL;
    size_t sse_len = 0, len = 0, n = 0;
    assert_int_equal(llmc_resp_replay(stored, strlen(stored), 8, &sse, &sse_len), 0);
    assert_int_equal(strlen(sse), sse_len);
    assert_non_null(strstr(sse, "event: response.output_text.delta\n"));
    assert_non_null(strstr(sse, "event: response.refusal.delta\n"));
    assert_non_null(strstr(sse, "event: response.function_call_arguments.delta\n"));
    assert_non_null(strstr(sse, "event: response.reasoning_summary_text.delta\n"));
    assert_non_null(strstr(sse, "event: response.output_text.annotation.added\n"));
    llmc_resp_asm_t *a = assemble(sse, sse_len, &n);
    assert_true(n > 20);
    assert_true(llmc_resp_asm_complete(a));
    assert_int_equal(llmc_resp_asm_result(a, &json, &len), 0);
    json_t *x = json_loads(json, 0, NULL), *y = json_loads(stored, 0, NULL);
    assert_true(json_equal(x, y));
    json_decref(x);
    json_decref(y);
    free(json);
    llmc_resp_asm_free(a);

    /* The deltas add up to the text, pieces cut at character boundaries. */
    json_t *want = json_loads(stored, 0, NULL);
    const char *text = json_string_value(json_object_get(
        json_array_get(json_object_get(json_array_get(json_object_get(want, "output"), 1),
                                       "content"), 0), "text"));
    const char *reason = json_string_value(json_object_get(
        json_array_get(json_object_get(json_array_get(json_object_get(want, "output"), 0),
                                       "summary"), 0), "text"));
    char got[512] = "", got_reason[512] = "";
    for (char *p = sse; (p = strstr(p, "data: ")); p += 6) {
        json_t *d = json_loadb(p + 6, strcspn(p + 6, "\n"), 0, NULL);
        assert_non_null(d); /* a cut inside a character would not parse */
        const char *t = json_string_value(json_object_get(d, "type"));
        if (!strcmp(t, "response.output_text.delta"))
            strcat(got, json_string_value(json_object_get(d, "delta")));
        if (!strcmp(t, "response.reasoning_summary_text.delta"))
            strcat(got_reason, json_string_value(json_object_get(d, "delta")));
        if (!strcmp(t, "response.output_item.added")) {
            json_t *it = json_object_get(d, "item");
            json_t *c = json_object_get(it, "content");
            assert_true(!c || json_array_size(c) == 0); /* no text twice */
            json_t *args = json_object_get(it, "arguments");
            assert_true(!args || json_string_length(args) == 0);
        }
        if (!strcmp(t, "response.created"))
            assert_string_equal(json_string_value(json_object_get(json_object_get(d, "response"),
                                                                  "status")), "in_progress");
        json_decref(d);
    }
    assert_string_equal(got, text);
    assert_string_equal(got_reason, reason);
    json_decref(want);
    free(sse);
}

static void test_replay_refuses_what_is_no_response(void **state)
{
    (void)state;
    char *out = NULL;
    size_t n = 0;
    assert_int_equal(llmc_resp_replay("{", 1, 0, &out, &n), LLMC_EJSON);
    assert_int_equal(llmc_resp_replay("{\"choices\":[]}", 14, 0, &out, &n), LLMC_EINVAL);
    assert_int_equal(llmc_resp_replay("{\"output\":[1]}", 14, 0, &out, &n), LLMC_EINVAL);
    assert_int_equal(llmc_resp_replay("[]", 2, 0, &out, &n), LLMC_EINVAL);
    assert_null(out);
}

static int add(llmc_resp_asm_t *a, const char *data)
{
    return llmc_resp_asm_add(a, data, strlen(data));
}

static void test_only_response_completed_completes(void **state)
{
    (void)state;
    static const char *const enders[] = {
        "{\"type\":\"response.incomplete\",\"response\":{\"output\":[]}}",
        "{\"type\":\"response.failed\",\"response\":{\"output\":[]}}",
        "{\"type\":\"error\",\"message\":\"overloaded\"}",
    };
    for (size_t i = 0; i < 3; i++) {
        llmc_resp_asm_t *a = llmc_resp_asm_new();
        assert_int_equal(add(a, "{\"type\":\"response.created\",\"response\":{}}"), 0);
        assert_int_equal(add(a, enders[i]), LLMC_EUPSTREAM);
        /* Sticky: a completed after it changes nothing. */
        assert_int_equal(add(a, "{\"type\":\"response.completed\",\"response\":{\"output\":[]}}"),
                         LLMC_EUPSTREAM);
        assert_false(llmc_resp_asm_complete(a));
        llmc_resp_asm_free(a);
    }
    llmc_resp_asm_t *a = llmc_resp_asm_new();
    char *json = NULL;
    size_t len;
    assert_int_equal(add(a, "{\"type\":\"response.created\",\"response\":{}}"), 0);
    assert_false(llmc_resp_asm_complete(a)); /* cut off: never completed */
    assert_int_equal(llmc_resp_asm_result(a, &json, &len), LLMC_EINVAL);
    assert_int_equal(add(a, "not json"), LLMC_EJSON);
    assert_false(llmc_resp_asm_complete(a));
    llmc_resp_asm_free(a);

    a = llmc_resp_asm_new();
    assert_int_equal(add(a, "{\"no\":\"type\"}"), LLMC_EBADRESP);
    llmc_resp_asm_free(a);
    a = llmc_resp_asm_new();
    assert_int_equal(add(a, "{\"type\":\"response.completed\",\"response\":[]}"), LLMC_EBADRESP);
    llmc_resp_asm_free(a);
    a = llmc_resp_asm_new();
    assert_int_equal(add(a, "{\"type\":\"response.output_item.done\",\"output_index\":-1,"
                            "\"item\":{}}"), LLMC_EBADRESP);
    llmc_resp_asm_free(a);
}

/* A server whose response.completed leaves the output out: the items of
   output_item.done fill it, in index order; [DONE] and anything after
   completed are ignored. */
static void test_a_slim_completed_gets_the_items(void **state)
{
    (void)state;
    llmc_resp_asm_t *a = llmc_resp_asm_new();
    char *json = NULL;
    size_t len;
    assert_int_equal(add(a, "{\"type\":\"response.output_item.done\",\"output_index\":1,"
                            "\"item\":{\"id\":\"b\"}}"), 0);
    assert_int_equal(add(a, "{\"type\":\"response.output_item.done\",\"output_index\":0,"
                            "\"item\":{\"id\":\"a\"}}"), 0);
    assert_int_equal(add(a, "{\"type\":\"response.completed\",\"response\":{\"id\":\"r\","
                            "\"usage\":{\"input_tokens\":1}}}"), 0);
    assert_int_equal(add(a, "[DONE]"), 0);
    assert_int_equal(add(a, "{\"type\":\"error\"}"), 0);
    assert_true(llmc_resp_asm_complete(a));
    assert_int_equal(llmc_resp_asm_result(a, &json, &len), 0);
    assert_string_equal(json, "{\"id\":\"r\",\"usage\":{\"input_tokens\":1},\"output\":[{\"id\":"
                              "\"a\"},{\"id\":\"b\"}]}");
    free(json);
    /* A second call agrees. */
    assert_int_equal(llmc_resp_asm_result(a, &json, &len), 0);
    assert_int_equal(len, strlen(json));
    free(json);
    llmc_resp_asm_free(a);
    llmc_resp_asm_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_assembles_back),
        cmocka_unit_test(test_replay_refuses_what_is_no_response),
        cmocka_unit_test(test_only_response_completed_completes),
        cmocka_unit_test(test_a_slim_completed_gets_the_items),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
