/*
 * test_mock.c: the mock model's answers (mock_answer.c), without a server:
 * deterministic, dependent on the whole request, OpenAI-shaped, streams that
 * reassemble to the same text, embeddings that decode.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <string.h>

#include "llmc/error.h"
#include "mock/mock_int.h"

typedef struct built {
    json_t *req;
    llmc__mock_out_t out;
    json_t *answer;   /* parsed out.body, when not a stream */
    char err[256];
    int rc;
} built_t;

static void build(built_t *b, llmc__mock_kind_t kind, const char *body, bool stream, size_t pad,
                  bool split)
{
    json_error_t je;
    memset(b, 0, sizeof(*b));
    b->req = json_loads(body, 0, &je);
    assert_non_null(b->req);
    llmc__mock_ctx_t c = {.req = b->req, .now_s = 1700000123, .pad_bytes = pad, .split_bytes = split};
    assert_int_equal(llmc__mock_digest(b->req, c.digest), 0);
    b->rc = kind == LLMC_MOCK_RESPONSES
                ? llmc__mock_responses(&c, stream, &b->out, b->err, sizeof(b->err))
                : llmc__mock_answer(kind, &c, stream, &b->out, b->err, sizeof(b->err));
    if (b->rc == 0 && !stream) {
        b->answer = json_loadb(b->out.body, b->out.len, 0, &je);
        assert_non_null(b->answer);
    }
}

static void unbuild(built_t *b)
{
    json_decref(b->req);
    json_decref(b->answer);
    llmc__mock_out_free(&b->out);
}

static const char *chat_content(const built_t *b)
{
    json_t *ch = json_array_get(json_object_get(b->answer, "choices"), 0);
    return json_string_value(json_object_get(json_object_get(ch, "message"), "content"));
}

#define CHAT_A "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}"
#define CHAT_A_REORDERED \
    "{ \"messages\" : [ {\"content\":\"hello there\", \"role\":\"user\"} ],\n \"model\":\"gpt-4o-mini\" }"
#define CHAT_B "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there!\"}]}"
#define CHAT_C "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}"

static void test_chat_shape(void **state)
{
    built_t b;
    build(&b, LLMC_MOCK_CHAT, CHAT_A, false, 0, false);
    assert_int_equal(b.rc, 0);
    assert_string_equal(json_string_value(json_object_get(b.answer, "object")), "chat.completion");
    assert_string_equal(json_string_value(json_object_get(b.answer, "model")), "gpt-4o-mini");
    assert_int_equal(json_integer_value(json_object_get(b.answer, "created")), 1700000123);
    const char *id = json_string_value(json_object_get(b.answer, "id"));
    assert_int_equal(strncmp(id, "chatcmpl-mock-", 14), 0);
    assert_int_equal(strlen(id), 14 + 16);
    const char *content = chat_content(&b);
    assert_non_null(strstr(content, "hello there"));
    assert_int_equal(strncmp(content, "Mock answer #", 13), 0);
    json_t *ch = json_array_get(json_object_get(b.answer, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "stop");
    assert_string_equal(json_string_value(json_object_get(json_object_get(ch, "message"), "role")),
                        "assistant");
    json_t *u = json_object_get(b.answer, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 2);
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")),
                     llmc__mock_words(content, strlen(content)));
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")),
                     2 + llmc__mock_words(content, strlen(content)));
    unbuild(&b);
}

static void test_chat_deterministic(void **state)
{
    built_t a, a2, r, bb, c;
    build(&a, LLMC_MOCK_CHAT, CHAT_A, false, 0, false);
    build(&a2, LLMC_MOCK_CHAT, CHAT_A, false, 0, false);
    build(&r, LLMC_MOCK_CHAT, CHAT_A_REORDERED, false, 0, false);
    build(&bb, LLMC_MOCK_CHAT, CHAT_B, false, 0, false);
    build(&c, LLMC_MOCK_CHAT, CHAT_C, false, 0, false);
    assert_string_equal(chat_content(&a), chat_content(&a2));
    assert_string_equal(chat_content(&a), chat_content(&r));   /* key order, whitespace */
    assert_string_not_equal(chat_content(&a), chat_content(&bb));
    assert_string_not_equal(chat_content(&a), chat_content(&c));   /* only the model differs */
    assert_string_not_equal(json_string_value(json_object_get(a.answer, "id")),
                            json_string_value(json_object_get(c.answer, "id")));
    unbuild(&a);
    unbuild(&a2);
    unbuild(&r);
    unbuild(&bb);
    unbuild(&c);
}

static void test_chat_last_user_message_and_parts(void **state)
{
    built_t b;
    build(&b, LLMC_MOCK_CHAT,
          "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
          "{\"role\":\"user\",\"content\":\"first\"},{\"role\":\"assistant\",\"content\":\"ok\"},"
          "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"second\"},"
          "{\"type\":\"text\",\"text\":\"part\"}]}]}",
          false, 0, false);
    assert_int_equal(b.rc, 0);
    const char *content = chat_content(&b);
    assert_non_null(strstr(content, "to: second part"));
    assert_null(strstr(content, "first"));
    assert_string_equal(json_string_value(json_object_get(b.answer, "model")), "mock-model");
    unbuild(&b);
}

static void test_chat_bad_requests(void **state)
{
    built_t b;
    build(&b, LLMC_MOCK_CHAT, "{\"model\":\"x\"}", false, 0, false);
    assert_int_equal(b.rc, LLMC_EINVAL);
    assert_non_null(strstr(b.err, "messages"));
    unbuild(&b);
    build(&b, LLMC_MOCK_CHAT, "[1,2]", false, 0, false);
    assert_int_equal(b.rc, LLMC_EINVAL);
    unbuild(&b);
}

static void test_pad_bytes(void **state)
{
    built_t b;
    build(&b, LLMC_MOCK_CHAT, CHAT_A, false, 100000, false);
    assert_int_equal(b.rc, 0);
    size_t n = strlen(chat_content(&b));
    assert_true(n >= 100000 && n < 100020);
    unbuild(&b);
}

/* Walks an SSE text: checks framing, joins the content deltas. Returns the
   number of data events; *done tells whether [DONE] came last. */
static size_t parse_sse(const char *text, size_t len, char *joined, size_t cap, bool *role,
                        bool *stop, json_t **usage_out, bool *done)
{
    size_t events = 0, jl = 0;
    const char *p = text, *end = text + len;
    *done = false;
    joined[0] = '\0';
    while (p < end) {
        const char *e = strstr(p, "\n\n");
        assert_non_null(e);
        assert_int_equal(strncmp(p, "data: ", 6), 0);
        assert_false(*done);   /* nothing after [DONE] */
        events++;
        if (strncmp(p + 6, "[DONE]", 6) == 0) {
            *done = true;
            p = e + 2;
            continue;
        }
        json_error_t je;
        json_t *o = json_loadb(p + 6, (size_t)(e - p - 6), 0, &je);
        assert_non_null(o);
        json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
        json_t *delta = json_object_get(ch, "delta");
        if (json_object_get(delta, "role"))
            *role = true;
        const char *piece = json_string_value(json_object_get(delta, "content"));
        if (!piece)
            piece = json_string_value(json_object_get(ch, "text"));
        if (piece) {
            assert_true(jl + strlen(piece) < cap);
            memcpy(joined + jl, piece, strlen(piece) + 1);
            jl += strlen(piece);
        }
        if (json_is_string(json_object_get(ch, "finish_reason")))
            *stop = true;
        if (json_is_object(json_object_get(o, "usage")))
            *usage_out = json_incref(json_object_get(o, "usage"));
        json_decref(o);
        p = e + 2;
    }
    return events;
}

static void test_stream_matches_whole_answer(void **state)
{
    /* One body answered as a stream and whole: the deltas join to the same
       text (the body is the same, so the tag is too). */
    built_t s, w;
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"one two three four\"}],"
                       "\"stream\":true,\"stream_options\":{\"include_usage\":true}}";
    build(&s, LLMC_MOCK_CHAT, body, true, 0, false);
    build(&w, LLMC_MOCK_CHAT, body, false, 0, false);
    assert_int_equal(s.rc, 0);
    char joined[4096];
    bool role = false, stop = false, done = false;
    json_t *usage = NULL;
    size_t events = parse_sse(s.out.body, s.out.len, joined, sizeof(joined), &role, &stop, &usage,
                              &done);
    assert_string_equal(joined, chat_content(&w));
    assert_true(role && stop && done);
    assert_non_null(usage);
    assert_int_equal(json_integer_value(json_object_get(usage, "prompt_tokens")), 4);
    json_decref(usage);
    /* role + one per word (11 words) + stop + usage + [DONE] */
    assert_int_equal(events, 1 + llmc__mock_words(joined, strlen(joined)) + 1 + 1 + 1);
    /* Without split, pieces are whole events. */
    assert_int_equal(s.out.ncuts, events);
    assert_int_equal(s.out.cuts[s.out.ncuts - 1], s.out.len);
    for (size_t i = 0; i < s.out.ncuts; i++)
        assert_memory_equal(s.out.body + s.out.cuts[i] - 2, "\n\n", 2);
    unbuild(&s);
    unbuild(&w);
}

static void test_stream_split_bytes(void **state)
{
    built_t s, plain;
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"split me please\"}]}";
    build(&s, LLMC_MOCK_CHAT, body, true, 0, true);
    build(&plain, LLMC_MOCK_CHAT, body, true, 0, false);
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.out.len, plain.out.len);
    assert_memory_equal(s.out.body, plain.out.body, s.out.len);
    assert_true(s.out.ncuts > plain.out.ncuts * 3);
    size_t prev = 0;
    for (size_t i = 0; i < s.out.ncuts; i++) {
        assert_true(s.out.cuts[i] > prev && s.out.cuts[i] - prev <= 7);
        prev = s.out.cuts[i];
    }
    assert_int_equal(prev, s.out.len);
    unbuild(&s);
    unbuild(&plain);
}

static void test_stream_large_is_grouped(void **state)
{
    built_t s;
    build(&s, LLMC_MOCK_CHAT, CHAT_A, true, 1 << 20, false);
    assert_int_equal(s.rc, 0);
    assert_true(s.out.ncuts < 400);   /* not one event per word of a megabyte */
    assert_true(s.out.len > 1 << 20);
    unbuild(&s);
}

static void test_completions(void **state)
{
    built_t b, s;
    build(&b, LLMC_MOCK_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"alpha\",\"beta gamma\"]}", false,
          0, false);
    assert_int_equal(b.rc, 0);
    assert_string_equal(json_string_value(json_object_get(b.answer, "object")), "text_completion");
    json_t *choices = json_object_get(b.answer, "choices");
    assert_int_equal(json_array_size(choices), 2);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(choices, 1), "text")),
                           "to: beta gamma"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(b.answer, "usage"),
                                                        "prompt_tokens")), 3);
    build(&s, LLMC_MOCK_COMPLETIONS, "{\"prompt\":\"say hi\",\"stream\":true}", true, 0, false);
    char joined[1024];
    bool role = false, stop = false, done = false;
    json_t *usage = NULL;
    parse_sse(s.out.body, s.out.len, joined, sizeof(joined), &role, &stop, &usage, &done);
    assert_non_null(strstr(joined, "Mock completion #"));
    assert_non_null(strstr(joined, "to: say hi"));
    assert_true(stop && done && !role);
    assert_null(usage);
    unbuild(&b);
    unbuild(&s);
}

static void vector_of(const built_t *b, size_t i, float *v, size_t dims)
{
    json_t *e = json_object_get(json_array_get(json_object_get(b->answer, "data"), i), "embedding");
    if (json_is_string(e)) {
        unsigned char raw[4096 * 4 + 4];
        int n = EVP_DecodeBlock(raw, (const unsigned char *)json_string_value(e),
                                (int)json_string_length(e));
        assert_true(n >= (int)(dims * 4));
        for (size_t k = 0; k < dims; k++) {
            uint32_t w = raw[4 * k] | raw[4 * k + 1] << 8 | raw[4 * k + 2] << 16 |
                         (uint32_t)raw[4 * k + 3] << 24;
            memcpy(&v[k], &w, 4);
        }
        return;
    }
    assert_int_equal(json_array_size(e), dims);
    for (size_t k = 0; k < dims; k++)
        v[k] = (float)json_real_value(json_array_get(e, k));
}

static void test_embeddings(void **state)
{
    built_t one, three, b64, d16, bad;
    float v1[8], v3[8], vb[8], v16[16];

    build(&one, LLMC_MOCK_EMBEDDINGS, "{\"model\":\"e\",\"input\":\"cat\"}", false, 0, false);
    build(&three, LLMC_MOCK_EMBEDDINGS, "{\"model\":\"e\",\"input\":[\"dog\",\"cat\",\"cow\"]}", false,
          0, false);
    build(&b64, LLMC_MOCK_EMBEDDINGS,
          "{\"model\":\"e\",\"input\":[\"cat\"],\"encoding_format\":\"base64\"}", false, 0, false);
    build(&d16, LLMC_MOCK_EMBEDDINGS, "{\"model\":\"e\",\"input\":[[1,2,3]],\"dimensions\":16}",
          false, 0, false);
    build(&bad, LLMC_MOCK_EMBEDDINGS, "{\"model\":\"e\",\"input\":[]}", false, 0, false);
    assert_int_equal(one.rc, 0);
    assert_string_equal(json_string_value(json_object_get(one.answer, "object")), "list");
    assert_int_equal(json_array_size(json_object_get(three.answer, "data")), 3);
    vector_of(&one, 0, v1, 8);
    vector_of(&three, 1, v3, 8);
    vector_of(&b64, 0, vb, 8);
    vector_of(&d16, 0, v16, 16);
    double norm = 0;
    for (int k = 0; k < 8; k++) {
        assert_float_equal(v1[k], v3[k], 1e-6);   /* same input, same vector */
        assert_float_equal(v1[k], vb[k], 1e-6);   /* base64 carries the same floats */
        norm += v1[k] * v1[k];
    }
    assert_float_equal(norm, 1.0, 1e-5);
    vector_of(&three, 0, v3, 8);
    assert_true(memcmp(v1, v3, sizeof(v1)) != 0);
    assert_int_equal(bad.rc, LLMC_EINVAL);
    assert_non_null(strstr(bad.err, "input"));
    unbuild(&one);
    unbuild(&three);
    unbuild(&b64);
    unbuild(&d16);
    unbuild(&bad);
}

static void test_models_and_words(void **state)
{
    llmc__mock_out_t out;
    llmc__mock_ctx_t c = {0};
    char err[64];
    assert_int_equal(llmc__mock_answer(LLMC_MOCK_MODELS, &c, false, &out, err, sizeof(err)), 0);
    json_t *o = json_loadb(out.body, out.len, 0, NULL);
    assert_true(json_array_size(json_object_get(o, "data")) >= 3);
    json_decref(o);
    llmc__mock_out_free(&out);
    /* GET /v1/models/{id}: the model object, or not found. */
    c.model_id = "gpt-4o-mini";
    assert_int_equal(llmc__mock_answer(LLMC_MOCK_MODEL, &c, false, &out, err, sizeof(err)), 0);
    o = json_loadb(out.body, out.len, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "gpt-4o-mini");
    assert_string_equal(json_string_value(json_object_get(o, "object")), "model");
    json_decref(o);
    llmc__mock_out_free(&out);
    c.model_id = "no-such-model";
    assert_int_equal(llmc__mock_answer(LLMC_MOCK_MODEL, &c, false, &out, err, sizeof(err)),
                     LLMC_ENOENT);
    assert_non_null(strstr(err, "no-such-model"));
    assert_int_equal(llmc__mock_words("  a bb\tc\n ", 10), 3);
}

/* POST /v1/responses: a completed response object answering the last user
   text, with usage under the Responses API's names; streamed as typed events. */
static void test_responses_answer(void **state)
{
    (void)state;
    built_t b, same, other, str, bad, streamed;
    const char *req = "{\"model\":\"gpt-4o-mini\",\"instructions\":\"be brief\",\"input\":"
                      "[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"hello there\"}]}]}";
    build(&b, LLMC_MOCK_RESPONSES, req, false, 0, 0);
    build(&same, LLMC_MOCK_RESPONSES, req, false, 0, 0);
    build(&other, LLMC_MOCK_RESPONSES, "{\"model\":\"gpt-4o-mini\",\"input\":\"hello here\"}", false, 0, 0);
    build(&str, LLMC_MOCK_RESPONSES, "{\"input\":\"just a string\"}", false, 0, 0);
    build(&bad, LLMC_MOCK_RESPONSES, "{\"model\":\"m\"}", false, 0, 0);
    build(&streamed, LLMC_MOCK_RESPONSES, req, true, 0, 0);
    assert_int_equal(b.rc, 0);
    json_t *o = json_loadb(b.out.body, b.out.len, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "object")), "response");
    assert_string_equal(json_string_value(json_object_get(o, "status")), "completed");
    assert_true(strncmp(json_string_value(json_object_get(o, "id")), "resp_", 5) == 0);
    json_t *msg = json_array_get(json_object_get(o, "output"), 0);
    assert_string_equal(json_string_value(json_object_get(msg, "role")), "assistant");
    json_t *part = json_array_get(json_object_get(msg, "content"), 0);
    assert_string_equal(json_string_value(json_object_get(part, "type")), "output_text");
    assert_non_null(strstr(json_string_value(json_object_get(part, "text")), "to: hello there"));
    json_t *u = json_object_get(o, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "input_tokens")), 4);
    assert_true(json_integer_value(json_object_get(u, "output_tokens")) > 0);
    json_decref(o);
    assert_memory_equal(b.out.body, same.out.body, b.out.len);
    assert_int_equal(other.rc, 0);
    assert_null(strstr(other.out.body, "hello there"));
    assert_int_equal(str.rc, 0);
    assert_non_null(strstr(str.out.body, "to: just a string"));
    assert_int_equal(bad.rc, LLMC_EINVAL);
    assert_non_null(strstr(bad.err, "input"));
    /* The stream ends in response.completed holding the plain answer. */
    assert_int_equal(streamed.rc, 0);
    assert_true(streamed.out.ncuts > 4);
    assert_int_equal(streamed.out.cuts[streamed.out.ncuts - 1], streamed.out.len);
    static const char head[] = "event: response.created\ndata: ";
    static const char tail[] = "event: response.completed\ndata: ";
    assert_true(strncmp(streamed.out.body, head, sizeof(head) - 1) == 0);
    const char *last = strstr(streamed.out.body, tail);
    assert_non_null(last);
    last += sizeof(tail) - 1;
    json_t *done = json_loadb(last, streamed.out.len - (size_t)(last - streamed.out.body) - 2, 0,
                              NULL);
    char *final = json_dumps(json_object_get(done, "response"), JSON_COMPACT);
    assert_string_equal(final, b.out.body);
    free(final);
    json_decref(done);
    unbuild(&b);
    unbuild(&same);
    unbuild(&other);
    unbuild(&str);
    unbuild(&bad);
    unbuild(&streamed);
    assert_int_equal(llmc__mock_words("", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_shape),
        cmocka_unit_test(test_chat_deterministic),
        cmocka_unit_test(test_chat_last_user_message_and_parts),
        cmocka_unit_test(test_chat_bad_requests),
        cmocka_unit_test(test_pad_bytes),
        cmocka_unit_test(test_stream_matches_whole_answer),
        cmocka_unit_test(test_stream_split_bytes),
        cmocka_unit_test(test_stream_large_is_grouped),
        cmocka_unit_test(test_completions),
        cmocka_unit_test(test_embeddings),
        cmocka_unit_test(test_models_and_words),
        cmocka_unit_test(test_responses_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
