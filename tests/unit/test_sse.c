/*
 * test_sse.c: the SSE parser, the stream assembler and replay
 * (src/core/sse.c, src/core/assemble.c).
 *
 * The recorded streams below are shaped like what OpenAI (and DeepSeek)
 * send: the parser must find the same events in them however the bytes are
 * split, the assembler must turn them into the completion a non-streaming
 * call would have answered, and replaying that completion must assemble
 * back to it.
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

#include "llmc/error.h"
#include "llmc/sse.h"

/* ---- recorded streams ---------------------------------------------------- */

#define D(json) "data: " json "\n\n"

#define HEAD4O                                                                          \
    "{\"id\":\"chatcmpl-B9x1\",\"object\":\"chat.completion.chunk\",\"created\":1735689600," \
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\","                  \
    "\"system_fingerprint\":\"fp_0aa8d3e20b\","
#define C0(delta, fin) \
    "\"choices\":[{\"index\":0,\"delta\":" delta ",\"logprobs\":null,\"finish_reason\":" fin "}]"

/* Plain content with multi-byte characters, a keep-alive comment, and the
 * "obfuscation" padding field OpenAI adds to chunks. */
static const char CHAT_CONTENT[] =
    D(HEAD4O C0("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}", "null")
          ",\"obfuscation\":\"qX9\"}")
    ": keep-alive\n\n"
    D(HEAD4O C0("{\"content\":\"Caf\"}", "null") ",\"obfuscation\":\"a1Zr\"}")
    D(HEAD4O C0("{\"content\":\"é au lait\"}", "null") "}")
    D(HEAD4O C0("{\"content\":\" ☕ is\"}", "null") "}")
    D(HEAD4O C0("{\"content\":\" ready.\"}", "null") "}")
    D(HEAD4O C0("{}", "\"stop\"") "}")
    D("[DONE]");

static const char CHAT_CONTENT_WANT[] =
    "{\"id\":\"chatcmpl-B9x1\",\"object\":\"chat.completion\",\"created\":1735689600,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\","
    "\"system_fingerprint\":\"fp_0aa8d3e20b\",\"choices\":[{\"index\":0,\"message\":"
    "{\"role\":\"assistant\",\"content\":\"Café au lait ☕ is ready.\",\"refusal\":null},"
    "\"logprobs\":null,\"finish_reason\":\"stop\"}]}";

/* Two parallel tool calls, arguments in fragments that split JSON tokens. */
static const char CHAT_TOOLS[] =
    D(HEAD4O C0("{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,"
                "\"id\":\"call_Wx1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                "\"arguments\":\"\"}}],\"refusal\":null}",
                "null") "}")
    D(HEAD4O C0("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"ci\"}}]}",
                "null") "}")
    D(HEAD4O C0("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ty\\\": \\\"Par\"}}]}",
                "null") "}")
    D(HEAD4O C0("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"is\\\"}\"}}]}",
                "null") "}")
    D(HEAD4O C0("{\"tool_calls\":[{\"index\":1,\"id\":\"call_Qz2\",\"type\":\"function\","
                "\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]}",
                "null") "}")
    D(HEAD4O C0("{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"tz\\\":\"}}]}",
                "null") "}")
    D(HEAD4O C0("{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":"
                "\"\\\"Europe/Paris\\\"}\"}}]}",
                "null") "}")
    D(HEAD4O C0("{}", "\"tool_calls\"") "}")
    D("[DONE]");

static const char CHAT_TOOLS_WANT[] =
    "{\"id\":\"chatcmpl-B9x1\",\"object\":\"chat.completion\",\"created\":1735689600,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\","
    "\"system_fingerprint\":\"fp_0aa8d3e20b\",\"choices\":[{\"index\":0,\"message\":"
    "{\"role\":\"assistant\",\"content\":null,\"refusal\":null,\"tool_calls\":["
    "{\"id\":\"call_Wx1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
    "\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}},"
    "{\"id\":\"call_Qz2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
    "\"arguments\":\"{\\\"tz\\\":\\\"Europe/Paris\\\"}\"}}]},"
    "\"logprobs\":null,\"finish_reason\":\"tool_calls\"}]}";

/* DeepSeek-style reasoning: reasoning_content first, usage on the last chunk
 * that still has a choice. */
#define HEADDS                                                                          \
    "{\"id\":\"0b9c6e7a-55\",\"object\":\"chat.completion.chunk\",\"created\":1735689650," \
    "\"model\":\"deepseek-reasoner\",\"system_fingerprint\":\"fp_7e73fd9a08\","
static const char CHAT_REASONING[] =
    D(HEADDS C0("{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"\"}", "null") "}")
    D(HEADDS C0("{\"content\":null,\"reasoning_content\":\"The user\"}", "null") "}")
    D(HEADDS C0("{\"content\":null,\"reasoning_content\":\" asks 2+2.\"}", "null") "}")
    D(HEADDS C0("{\"content\":\"4\",\"reasoning_content\":null}", "null") "}")
    D(HEADDS C0("{\"content\":\"\",\"reasoning_content\":null}", "\"stop\"")
          ",\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20,\"total_tokens\":30,"
          "\"completion_tokens_details\":{\"reasoning_tokens\":12}}}")
    D("[DONE]");

static const char CHAT_REASONING_WANT[] =
    "{\"id\":\"0b9c6e7a-55\",\"object\":\"chat.completion\",\"created\":1735689650,"
    "\"model\":\"deepseek-reasoner\",\"system_fingerprint\":\"fp_7e73fd9a08\",\"choices\":["
    "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"4\","
    "\"reasoning_content\":\"The user asks 2+2.\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20,\"total_tokens\":30,"
    "\"completion_tokens_details\":{\"reasoning_tokens\":12}}}";

/* stream_options.include_usage with logprobs: "usage": null on every chunk,
 * then a chunk with no choices and the usage. */
#define LP(tok, lp, bytes)                                                              \
    "{\"content\":[{\"token\":\"" tok "\",\"logprob\":" lp ",\"bytes\":[" bytes "],"     \
    "\"top_logprobs\":[]}],\"refusal\":null}"
#define CU(delta, lp, fin)                                                               \
    HEAD4O "\"choices\":[{\"index\":0,\"delta\":" delta ",\"logprobs\":" lp                \
           ",\"finish_reason\":" fin "}],\"usage\":null}"
static const char CHAT_USAGE[] =
    D(CU("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}",
         "{\"content\":[],\"refusal\":null}", "null"))
    D(CU("{\"content\":\"Hi\"}", LP("Hi", "-0.0015", "72,105"), "null"))
    D(CU("{\"content\":\"!\"}", LP("!", "-0.25", "33"), "null"))
    D(CU("{}", "null", "\"stop\""))
    D(HEAD4O "\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,"
             "\"total_tokens\":11}}")
    D("[DONE]");

static const char CHAT_USAGE_WANT[] =
    "{\"id\":\"chatcmpl-B9x1\",\"object\":\"chat.completion\",\"created\":1735689600,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\","
    "\"system_fingerprint\":\"fp_0aa8d3e20b\",\"choices\":[{\"index\":0,\"message\":"
    "{\"role\":\"assistant\",\"content\":\"Hi!\",\"refusal\":null},"
    "\"logprobs\":{\"content\":[{\"token\":\"Hi\",\"logprob\":-0.0015,\"bytes\":[72,105],"
    "\"top_logprobs\":[]},{\"token\":\"!\",\"logprob\":-0.25,\"bytes\":[33],\"top_logprobs\":[]}],"
    "\"refusal\":null},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}";

/* n=2: the choices interleave and finish in a different order. */
#define CN(i, delta, fin) \
    HEAD4O "\"choices\":[{\"index\":" #i ",\"delta\":" delta ",\"logprobs\":null,\"finish_reason\":" fin "}]}"
static const char CHAT_N2[] =
    D(CN(0, "{\"role\":\"assistant\",\"content\":\"\"}", "null"))
    D(CN(1, "{\"role\":\"assistant\",\"content\":\"\"}", "null"))
    D(CN(0, "{\"content\":\"Heads\"}", "null"))
    D(CN(1, "{\"content\":\"Tails\"}", "null"))
    D(CN(1, "{}", "\"stop\""))
    D(CN(0, "{\"content\":\", twice\"}", "null"))
    D(CN(0, "{}", "\"length\""))
    D("[DONE]");

static const char CHAT_N2_WANT[] =
    "{\"id\":\"chatcmpl-B9x1\",\"object\":\"chat.completion\",\"created\":1735689600,"
    "\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\","
    "\"system_fingerprint\":\"fp_0aa8d3e20b\",\"choices\":["
    "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Heads, twice\"},"
    "\"logprobs\":null,\"finish_reason\":\"length\"},"
    "{\"index\":1,\"message\":{\"role\":\"assistant\",\"content\":\"Tails\"},"
    "\"logprobs\":null,\"finish_reason\":\"stop\"}]}";

/* /v1/completions. */
#define CT(text, fin)                                                                    \
    "{\"id\":\"cmpl-8Xa\",\"object\":\"text_completion\",\"created\":1735689700,"         \
    "\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\"" text "\",\"index\":0," \
    "\"logprobs\":null,\"finish_reason\":" fin "}]}"
static const char TEXT_STREAM[] =
    D(CT("\\n\\n", "null"))
    D(CT("Once upon", "null"))
    D(CT(" a time", "null"))
    D(CT("", "\"length\""))
    D("[DONE]");

static const char TEXT_WANT[] =
    "{\"id\":\"cmpl-8Xa\",\"object\":\"text_completion\",\"created\":1735689700,"
    "\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"index\":0,"
    "\"text\":\"\\n\\nOnce upon a time\",\"logprobs\":null,\"finish_reason\":\"length\"}]}";

static const struct recorded {
    const char *name, *stream, *want;
    size_t len;
} recorded[] = {
#define R(name, want) {#name, name, want, sizeof(name) - 1}
    R(CHAT_CONTENT, CHAT_CONTENT_WANT), R(CHAT_TOOLS, CHAT_TOOLS_WANT),
    R(CHAT_REASONING, CHAT_REASONING_WANT), R(CHAT_USAGE, CHAT_USAGE_WANT),
    R(CHAT_N2, CHAT_N2_WANT), R(TEXT_STREAM, TEXT_WANT),
#undef R
};
#define NREC (sizeof recorded / sizeof *recorded)

/* ---- helpers --------------------------------------------------------------- */

/* An event as text ("event|id|lines|data"), for comparing event lists. */
static char *describe(const llmc_sse_event_t *ev)
{
    size_t dl = ev->data_len;
    char *data = malloc(dl + 1);
    assert_non_null(data);
    assert_int_equal(llmc_sse_event_data(ev, data, dl + 1), dl);
    char *s = NULL;
    assert_true(asprintf(&s, "%.*s|%.*s|%zu|%s", (int)ev->event_len, ev->event ? ev->event : "",
                         (int)ev->id_len, ev->id ? ev->id : "", ev->data_lines, data) > 0);
    free(data);
    return s;
}

typedef struct evlist {
    char *ev[256];
    size_t n;
} evlist_t;

static void evlist_free(evlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->ev[i]);
    l->n = 0;
}

/*
 * Parses s as it would arrive in reads ending at each of the lengths in
 * ends[] (increasing, the last == len), each read seen through a buffer of
 * exactly the bytes so far (so that ASan catches any read past them). After
 * the last read, llmc_sse_next_eof takes what is left.
 */
static void parse_reads(const char *s, size_t len, const size_t *ends, size_t nends, evlist_t *out)
{
    size_t off = 0;
    out->n = 0;
    for (size_t r = 0; r < nends; r++) {
        size_t vis = ends[r];
        char *buf = malloc(vis ? vis : 1);
        assert_non_null(buf);
        memcpy(buf, s, vis);
        for (;;) {
            llmc_sse_event_t ev;
            size_t used = 99;
            bool last = r + 1 == nends;
            int rc = llmc_sse_next(buf + off, vis - off, 4096, &ev, &used);
            if (rc == 0 && last)
                rc = llmc_sse_next_eof(buf + off, vis - off, 4096, &ev, &used);
            assert_true(rc == 0 || rc == 1);
            if (rc == 0) {
                assert_int_equal(used, 0);
                break;
            }
            assert_ptr_equal(ev.raw, buf + off);
            assert_int_equal(ev.raw_len, used);
            assert_true(used > 0 && used <= vis - off);
            if (ev.data_lines == 1)
                assert_true(ev.data >= ev.raw && ev.data + ev.data_len <= ev.raw + ev.raw_len);
            assert_true(out->n < 256);
            out->ev[out->n++] = describe(&ev);
            off += used;
        }
        free(buf);
    }
    assert_int_equal(off, len); /* every recorded stream ends with a blank line */
}

static void parse_whole(const char *s, size_t len, evlist_t *out)
{
    parse_reads(s, len, &len, 1, out);
}

static void assert_same_events(const evlist_t *a, const evlist_t *b, const char *what)
{
    if (a->n != b->n)
        fail_msg("%s: %zu events, want %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->ev[i], b->ev[i]) != 0)
            fail_msg("%s: event %zu is '%s', want '%s'", what, i, a->ev[i], b->ev[i]);
}

/* s with every LF replaced by eol; malloc'd. */
static char *with_eol(const char *s, size_t len, const char *eol, size_t *out_len)
{
    size_t el = strlen(eol), n = 0;
    char *o = malloc(len * el + 1);
    assert_non_null(o);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\n') {
            memcpy(o + n, eol, el);
            n += el;
        } else {
            o[n++] = s[i];
        }
    }
    o[n] = '\0';
    *out_len = n;
    return o;
}

static void assert_json_eq(const char *got, size_t got_len, const char *want)
{
    json_error_t e;
    json_t *g = json_loadb(got, got_len, 0, &e), *w = json_loads(want, 0, &e);
    if (!w)
        fail_msg("want is not JSON (%s): %s", e.text, want);
    if (!g || !json_equal(g, w))
        fail_msg("got  %.*s\nwant %s", (int)got_len, got, want);
    json_decref(g);
    json_decref(w);
}

/* Runs the parser over s and feeds every data event to a new assembler.
 * *last_rc: the last non-zero answer of llmc_sse_asm_add (0 if none). */
static llmc_sse_asm_t *assemble(const char *s, size_t len, int *last_rc)
{
    llmc_sse_asm_t *a = llmc_sse_asm_new();
    assert_non_null(a);
    size_t off = 0, used;
    llmc_sse_event_t ev;
    *last_rc = 0;
    while (llmc_sse_next_eof(s + off, len - off, SIZE_MAX, &ev, &used) == 1) {
        off += used;
        if (ev.data_lines == 0)
            continue;
        char *data = malloc(ev.data_len + 1);
        assert_non_null(data);
        llmc_sse_event_data(&ev, data, ev.data_len + 1);
        int rc = llmc_sse_asm_add(a, data, ev.data_len);
        free(data);
        if (rc)
            *last_rc = rc;
    }
    return a;
}

static char *result_of(llmc_sse_asm_t *a, size_t *len)
{
    char *j = NULL;
    assert_int_equal(llmc_sse_asm_result(a, &j, len), 0);
    assert_non_null(j);
    assert_int_equal(strlen(j), *len);
    return j;
}

/* ---- parser ------------------------------------------------------------------ */

static void test_parse_every_split(void **state)
{
    (void)state;
    for (size_t r = 0; r < NREC; r++) {
        const char *s = recorded[r].stream;
        size_t len = recorded[r].len;
        evlist_t whole, split;
        parse_whole(s, len, &whole);
        assert_true(whole.n >= 5);
        for (size_t k = 0; k <= len; k++) {
            size_t ends[2] = {k, len};
            parse_reads(s, len, ends, 2, &split);
            assert_same_events(&split, &whole, recorded[r].name);
            evlist_free(&split);
        }
        evlist_free(&whole);
    }
}

static void test_parse_byte_by_byte(void **state)
{
    (void)state;
    for (size_t r = 0; r < NREC; r++) {
        const char *s = recorded[r].stream;
        size_t len = recorded[r].len;
        size_t *ends = malloc(len * sizeof *ends);
        assert_non_null(ends);
        for (size_t i = 0; i < len; i++)
            ends[i] = i + 1;
        evlist_t whole, bytes;
        parse_whole(s, len, &whole);
        parse_reads(s, len, ends, len, &bytes);
        assert_same_events(&bytes, &whole, recorded[r].name);
        evlist_free(&bytes);
        evlist_free(&whole);
        free(ends);
    }
}

/* The same streams with CRLF and with CR line ends give the same events,
 * however they are split: a CR at the end of a read must wait for the next
 * byte. */
static void test_parse_crlf_and_cr(void **state)
{
    (void)state;
    static const char *const eols[] = {"\r\n", "\r"};
    for (size_t r = 0; r < NREC; r++) {
        evlist_t want;
        parse_whole(recorded[r].stream, recorded[r].len, &want);
        for (size_t e = 0; e < 2; e++) {
            size_t len;
            char *s = with_eol(recorded[r].stream, recorded[r].len, eols[e], &len);
            for (size_t k = 0; k <= len; k++) {
                evlist_t got;
                size_t ends[2] = {k, len};
                parse_reads(s, len, ends, 2, &got);
                assert_same_events(&got, &want, recorded[r].name);
                evlist_free(&got);
            }
            free(s);
        }
        evlist_free(&want);
    }
}

static void test_parse_fields(void **state)
{
    (void)state;
    static const char s[] = ": a comment\r\n"
                            "event: error\n"
                            "id: 42\n"
                            "retry: 1000\n"
                            "unknown: ignored\n"
                            "data:{\"a\":1}\n"
                            "\n";
    llmc_sse_event_t ev;
    size_t used;
    assert_int_equal(llmc_sse_next(s, sizeof s - 1, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(used, sizeof s - 1);
    assert_int_equal(ev.data_lines, 1);
    assert_int_equal(ev.data_len, 7);
    assert_memory_equal(ev.data, "{\"a\":1}", 7); /* no space after the colon: nothing dropped */
    assert_int_equal(ev.event_len, 5);
    assert_memory_equal(ev.event, "error", 5);
    assert_int_equal(ev.id_len, 2);
    assert_memory_equal(ev.id, "42", 2);

    /* Only one space is dropped. */
    assert_int_equal(llmc_sse_next("data:  x\n\n", 10, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(ev.data_len, 2);
    assert_memory_equal(ev.data, " x", 2);
    /* "data:" with nothing after it is an empty data line, which dispatches. */
    assert_int_equal(llmc_sse_next("data:\n\n", 7, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(ev.data_lines, 1);
    assert_int_equal(ev.data_len, 0);
    assert_non_null(ev.data);
}

static void test_parse_multiline_data(void **state)
{
    (void)state;
    static const char s[] = "data: {\"a\":\n: between\ndata:  1}\ndata\n\ndata: next\n\n";
    llmc_sse_event_t ev;
    size_t used;
    assert_int_equal(llmc_sse_next(s, sizeof s - 1, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(ev.data_lines, 3);
    assert_null(ev.data); /* not one span: must be joined */
    assert_int_equal(ev.data_len, strlen("{\"a\":\n 1}\n"));
    char out[32];
    assert_int_equal(llmc_sse_event_data(&ev, out, sizeof out), ev.data_len);
    assert_string_equal(out, "{\"a\":\n 1}\n");
    /* A short buffer gets a prefix and the full length back. */
    char small[4];
    assert_int_equal(llmc_sse_event_data(&ev, small, sizeof small), ev.data_len);
    assert_memory_equal(small, "{\"a\"", 4);

    size_t off = used;
    assert_int_equal(llmc_sse_next(s + off, sizeof s - 1 - off, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(ev.data_lines, 1);
    assert_memory_equal(ev.data, "next", 4);
    assert_int_equal(off + used, sizeof s - 1);
}

static void test_parse_block_without_data(void **state)
{
    (void)state;
    llmc_sse_event_t ev;
    size_t used;
    static const char s[] = ": ping\n\nevent: ping\n\n\n";
    assert_int_equal(llmc_sse_next(s, sizeof s - 1, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(used, 8);
    assert_int_equal(ev.data_lines, 0);
    assert_null(ev.data);
    assert_int_equal(llmc_sse_next(s + 8, sizeof s - 9, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(used, 13);
    assert_int_equal(ev.data_lines, 0);
    assert_memory_equal(ev.event, "ping", 4);
    /* A stray blank line is an empty block of its own. */
    assert_int_equal(llmc_sse_next(s + 21, 1, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(used, 1);
}

static void test_parse_need_more(void **state)
{
    (void)state;
    llmc_sse_event_t ev;
    size_t used = 7;
    assert_int_equal(llmc_sse_next("", 0, SIZE_MAX, &ev, &used), 0);
    assert_int_equal(used, 0);
    assert_int_equal(llmc_sse_next("data: x", 7, SIZE_MAX, &ev, &used), 0);
    assert_int_equal(llmc_sse_next("data: x\n", 8, SIZE_MAX, &ev, &used), 0);
    /* CR at the end: the next byte may make it CRLF, so nothing yet ... */
    assert_int_equal(llmc_sse_next("data: x\r\r", 9, SIZE_MAX, &ev, &used), 0);
    assert_int_equal(llmc_sse_next("data: x\r\r\n", 10, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(used, 10);
    assert_int_equal(llmc_sse_next("data: x\r\rdata", 13, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(used, 9);
    /* ... unless the stream has ended. */
    assert_int_equal(llmc_sse_next_eof("data: x\r\r", 9, SIZE_MAX, &ev, &used), 1);
    assert_int_equal(used, 9);
    /* "data: x\r" + "\n" is one line end, not a blank line. */
    assert_int_equal(llmc_sse_next("data: x\r\n", 9, SIZE_MAX, &ev, &used), 0);
    /* An event cut off by the end of the stream is dropped, not dispatched. */
    assert_int_equal(llmc_sse_next_eof("data: x\n", 8, SIZE_MAX, &ev, &used), 0);
    assert_int_equal(llmc_sse_next(NULL, 0, SIZE_MAX, &ev, &used), 0);
    assert_int_equal(llmc_sse_next(NULL, 1, SIZE_MAX, &ev, &used), LLMC_EINVAL);
}

static void test_parse_too_long(void **state)
{
    (void)state;
    char buf[300];
    memset(buf, 'x', sizeof buf);
    memcpy(buf, "data: ", 6);
    llmc_sse_event_t ev;
    size_t used;
    /* An unfinished line longer than the bound, however much has arrived. */
    assert_int_equal(llmc_sse_next(buf, 64, 64, &ev, &used), 0);
    assert_int_equal(llmc_sse_next(buf, 65, 64, &ev, &used), LLMC_E2BIG);
    assert_int_equal(llmc_sse_next(buf, sizeof buf, 64, &ev, &used), LLMC_E2BIG);
    assert_int_equal(used, 0);

    /* A finished event: exactly the bound is fine, one byte more is not,
     * whether or not the bytes after it have arrived. */
    memcpy(buf + 62, "\n\n", 2);
    assert_int_equal(llmc_sse_next(buf, 64, 64, &ev, &used), 1);
    assert_int_equal(used, 64);
    assert_int_equal(llmc_sse_next(buf, sizeof buf, 64, &ev, &used), 1);
    assert_int_equal(llmc_sse_next(buf, 64, 63, &ev, &used), LLMC_E2BIG);
    assert_int_equal(llmc_sse_next(buf, sizeof buf, 63, &ev, &used), LLMC_E2BIG);
    /* CRLF blank line that ends one byte past the bound. */
    memcpy(buf + 61, "\n\r\n", 3);
    assert_int_equal(llmc_sse_next(buf, sizeof buf, 63, &ev, &used), LLMC_E2BIG);
    assert_int_equal(llmc_sse_next(buf, sizeof buf, 64, &ev, &used), 1);
    assert_int_equal(used, 64);
}

/* ---- assembler ---------------------------------------------------------------- */

static void test_assemble_recorded(void **state)
{
    (void)state;
    for (size_t r = 0; r < NREC; r++) {
        int rc;
        llmc_sse_asm_t *a = assemble(recorded[r].stream, recorded[r].len, &rc);
        assert_int_equal(rc, 0);
        if (!llmc_sse_asm_complete(a))
            fail_msg("%s: not complete", recorded[r].name);
        size_t len;
        char *j = result_of(a, &len);
        assert_json_eq(j, len, recorded[r].want);
        free(j);
        /* result() can be asked twice and answers the same. */
        j = result_of(a, &len);
        assert_json_eq(j, len, recorded[r].want);
        free(j);
        llmc_sse_asm_free(a);
    }
}

/* Every prefix that stops before [DONE] is incomplete; so is one that has
 * [DONE] but lacks a finish_reason. */
static void test_assemble_incomplete(void **state)
{
    (void)state;
    for (size_t r = 0; r < NREC; r++) {
        const char *s = recorded[r].stream;
        size_t len = recorded[r].len;
        const char *done = strstr(s, "data: [DONE]");
        assert_non_null(done);
        int rc;
        llmc_sse_asm_t *a = assemble(s, (size_t)(done - s), &rc);
        assert_int_equal(rc, 0);
        assert_false(llmc_sse_asm_complete(a));
        llmc_sse_asm_free(a);
        /* Cut in the middle: no [DONE] either. */
        a = assemble(s, len / 2, &rc);
        assert_false(llmc_sse_asm_complete(a));
        llmc_sse_asm_free(a);
    }

    static const char no_finish[] =
        D(HEAD4O C0("{\"role\":\"assistant\",\"content\":\"Hel\"}", "null") "}")
        D(HEAD4O C0("{\"content\":\"lo\"}", "null") "}")
        D("[DONE]");
    int rc;
    llmc_sse_asm_t *a = assemble(no_finish, sizeof no_finish - 1, &rc);
    assert_int_equal(rc, 0);
    assert_false(llmc_sse_asm_complete(a));
    llmc_sse_asm_free(a);

    /* n=2 where only choice 1 finished. */
    static const char half[] = D(CN(0, "{\"content\":\"a\"}", "null"))
                               D(CN(1, "{\"content\":\"b\"}", "\"stop\""))
                               D("[DONE]");
    a = assemble(half, sizeof half - 1, &rc);
    assert_false(llmc_sse_asm_complete(a));
    llmc_sse_asm_free(a);

    /* [DONE] alone: no choice ever started. */
    a = assemble(D("[DONE]"), 14, &rc);
    assert_false(llmc_sse_asm_complete(a));
    llmc_sse_asm_free(a);
}

static void test_assemble_malformed_json(void **state)
{
    (void)state;
    static const char s[] = D(HEAD4O C0("{\"role\":\"assistant\",\"content\":\"x\"}", "null") "}")
                            D("{\"id\":\"chatcmpl-B9x1\",\"choices\":[{\"index\":0,\"delta\":{\"co")
                            D(HEAD4O C0("{}", "\"stop\"") "}")
                            D("[DONE]");
    int rc;
    llmc_sse_asm_t *a = assemble(s, sizeof s - 1, &rc);
    assert_int_equal(rc, LLMC_EJSON);
    assert_false(llmc_sse_asm_complete(a));
    /* The error sticks: good data afterwards does not make it storable. */
    assert_int_equal(llmc_sse_asm_add(a, "[DONE]", 6), LLMC_EJSON);
    char *j = NULL;
    size_t len;
    assert_int_equal(llmc_sse_asm_result(a, &j, &len), LLMC_EJSON);
    assert_null(j);
    llmc_sse_asm_free(a);

    a = llmc_sse_asm_new();
    assert_int_equal(llmc_sse_asm_add(a, "[1,2]", 5), LLMC_EJSON);
    llmc_sse_asm_free(a);
    a = llmc_sse_asm_new();
    assert_int_equal(llmc_sse_asm_add(a, "", 0), LLMC_EJSON);
    llmc_sse_asm_free(a);
    a = llmc_sse_asm_new();
    assert_int_equal(llmc_sse_asm_add(a, "{\"choices\":{}}", 14), LLMC_EBADRESP);
    llmc_sse_asm_free(a);
    a = llmc_sse_asm_new();
    assert_int_equal(llmc_sse_asm_add(a, "{\"choices\":[{\"index\":\"0\"}]}", 27), LLMC_EBADRESP);
    llmc_sse_asm_free(a);
}

static void test_assemble_error_event(void **state)
{
    (void)state;
    static const char s[] =
        D(HEAD4O C0("{\"role\":\"assistant\",\"content\":\"Par\"}", "null") "}")
        "event: error\n"
        D("{\"error\":{\"message\":\"The server had an error while processing your request.\","
          "\"type\":\"server_error\",\"param\":null,\"code\":null}}")
        D("[DONE]");
    int rc;
    llmc_sse_asm_t *a = assemble(s, sizeof s - 1, &rc);
    assert_int_equal(rc, LLMC_EUPSTREAM);
    assert_false(llmc_sse_asm_complete(a));
    llmc_sse_asm_free(a);
}

/* Azure opens with a chunk of empty id and model and only filter results;
 * the real values come with the next chunk. */
static void test_assemble_blank_first_chunk(void **state)
{
    (void)state;
    static const char s[] =
        D("{\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
          "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}")
        D("{\"choices\":[{\"delta\":{\"content\":\"\",\"role\":\"assistant\"},\"finish_reason\":null,"
          "\"index\":0,\"logprobs\":null}],\"created\":1735689800,\"id\":\"chatcmpl-Az1\","
          "\"model\":\"gpt-4o-2024-11-20\",\"object\":\"chat.completion.chunk\","
          "\"system_fingerprint\":\"fp_b705f0c291\"}")
        D("{\"choices\":[{\"delta\":{\"content\":\"Ok\"},\"finish_reason\":\"stop\",\"index\":0,"
          "\"logprobs\":null}],\"created\":1735689800,\"id\":\"chatcmpl-Az1\","
          "\"model\":\"gpt-4o-2024-11-20\",\"object\":\"chat.completion.chunk\","
          "\"system_fingerprint\":\"fp_b705f0c291\"}")
        D("[DONE]");
    int rc;
    llmc_sse_asm_t *a = assemble(s, sizeof s - 1, &rc);
    assert_int_equal(rc, 0);
    assert_true(llmc_sse_asm_complete(a));
    size_t len;
    char *j = result_of(a, &len);
    assert_json_eq(j, len,
                   "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Ok\"},"
                   "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"created\":1735689800,"
                   "\"id\":\"chatcmpl-Az1\",\"model\":\"gpt-4o-2024-11-20\","
                   "\"object\":\"chat.completion\",\"system_fingerprint\":\"fp_b705f0c291\","
                   "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}");
    free(j);
    llmc_sse_asm_free(a);
}

/* ---- replay -------------------------------------------------------------------- */

static char *replay(const char *json, size_t piece, bool usage, size_t *len)
{
    llmc_sse_replay_opts_t o = {.piece_bytes = piece, .include_usage = usage};
    char *out = NULL;
    assert_int_equal(llmc_sse_replay(json, strlen(json), &o, &out, len), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), *len);
    return out;
}

/* The events of a replayed body: each "data: <JSON>\n\n", [DONE] last, and
 * "\n\n" nowhere but at the ends of events. Returns the count. */
static size_t check_framing(const char *body, size_t len)
{
    size_t n = 0, off = 0;
    const char *p = body;
    while (off < len) {
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        assert_memory_equal(p, "data: ", 6);
        size_t used;
        llmc_sse_event_t ev;
        assert_int_equal(llmc_sse_next(p, len - off, SIZE_MAX, &ev, &used), 1);
        assert_int_equal(used, (size_t)(end - p) + 2); /* the parser agrees */
        assert_int_equal(ev.data_lines, 1);
        off += used;
        p += used;
        n++;
        if (off == len)
            assert_memory_equal(ev.data, "[DONE]", 6);
        else
            assert_true(ev.data_len > 0 && ev.data[0] == '{');
    }
    return n;
}

/* The JSON of event i of a replayed body (a new reference). */
static json_t *event_json(const char *body, size_t len, size_t i)
{
    size_t off = 0, used;
    llmc_sse_event_t ev;
    for (;;) {
        assert_int_equal(llmc_sse_next(body + off, len - off, SIZE_MAX, &ev, &used), 1);
        if (i-- == 0)
            break;
        off += used;
    }
    json_t *j = json_loadb(ev.data, ev.data_len, 0, NULL);
    assert_non_null(j);
    return j;
}

/* Removes "usage" from a JSON text; malloc'd. */
static char *without_usage(const char *json)
{
    json_t *j = json_loads(json, 0, NULL);
    assert_non_null(j);
    json_object_del(j, "usage");
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static void test_replay_round_trip(void **state)
{
    (void)state;
    static const size_t pieces[] = {1, 3, 7, 24, 4096};
    for (size_t r = 0; r < NREC; r++) {
        for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
            for (int usage = 0; usage < 2; usage++) {
                size_t len, jlen;
                char *body = replay(recorded[r].want, pieces[p], usage, &len);
                check_framing(body, len);
                int rc;
                llmc_sse_asm_t *a = assemble(body, len, &rc);
                assert_int_equal(rc, 0);
                if (!llmc_sse_asm_complete(a))
                    fail_msg("%s replayed: not complete", recorded[r].name);
                char *j = result_of(a, &jlen);
                char *want = usage ? strdup(recorded[r].want) : without_usage(recorded[r].want);
                assert_json_eq(j, jlen, want);
                free(want);
                free(j);
                llmc_sse_asm_free(a);
                free(body);
            }
        }
    }
}

/* A non-streaming answer from the upstream (with fields the assembler has
 * no special case for) replays to a stream that assembles back to it. */
static void test_replay_upstream_answer(void **state)
{
    (void)state;
    static const char answer[] =
        "{\"id\":\"chatcmpl-C1\",\"object\":\"chat.completion\",\"created\":1735690000,"
        "\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"message\":{"
        "\"role\":\"assistant\",\"content\":\"Sure — here it is.\",\"refusal\":null,"
        "\"annotations\":[],\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
        "\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\":\\\"naïve café\\\"}\"}}]},"
        "\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":20,"
        "\"completion_tokens\":9,\"total_tokens\":29,\"prompt_tokens_details\":{"
        "\"cached_tokens\":0,\"audio_tokens\":0}},\"service_tier\":\"default\","
        "\"system_fingerprint\":\"fp_a7d06e42a7\"}";
    size_t len, jlen;
    char *body = replay(answer, 5, true, &len);
    size_t n = check_framing(body, len);

    /* The head chunk: role, content "", the non-text fields. */
    json_t *first = event_json(body, len, 0);
    json_t *c0 = json_array_get(json_object_get(first, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(first, "object")),
                        "chat.completion.chunk");
    assert_string_equal(json_string_value(json_object_get(first, "system_fingerprint")),
                        "fp_a7d06e42a7");
    json_t *want_delta = json_loads(
        "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null,\"annotations\":[]}", 0, NULL);
    assert_true(json_equal(json_object_get(c0, "delta"), want_delta));
    assert_true(json_is_null(json_object_get(c0, "finish_reason")));
    json_decref(want_delta);
    json_decref(first);

    /* The tool call's head carries index, id, type, name and "" arguments. */
    bool saw_head = false;
    for (size_t i = 0; i < n - 1; i++) {
        json_t *e = event_json(body, len, i);
        json_t *tc = json_array_get(
            json_object_get(json_object_get(json_array_get(json_object_get(e, "choices"), 0),
                                            "delta"),
                            "tool_calls"),
            0);
        if (tc && json_object_get(tc, "id")) {
            json_t *w = json_loads("{\"index\":0,\"id\":\"call_1\",\"type\":\"function\","
                                   "\"function\":{\"name\":\"lookup\",\"arguments\":\"\"}}",
                                   0, NULL);
            assert_true(json_equal(tc, w));
            json_decref(w);
            saw_head = true;
        }
        json_decref(e);
    }
    assert_true(saw_head);

    int rc;
    llmc_sse_asm_t *a = assemble(body, len, &rc);
    assert_int_equal(rc, 0);
    assert_true(llmc_sse_asm_complete(a));
    char *j = result_of(a, &jlen);
    assert_json_eq(j, jlen, answer);
    free(j);
    llmc_sse_asm_free(a);
    free(body);
}

static void test_replay_usage_on_off(void **state)
{
    (void)state;
    size_t len;
    for (int on = 0; on < 2; on++) {
        char *body = replay(CHAT_USAGE_WANT, 24, on, &len);
        size_t n = check_framing(body, len);
        size_t usage_chunks = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            json_t *e = event_json(body, len, i);
            json_t *u = json_object_get(e, "usage");
            if (u) {
                usage_chunks++;
                assert_int_equal(i, n - 2); /* right before [DONE] */
                assert_int_equal(json_array_size(json_object_get(e, "choices")), 0);
                assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 11);
            }
            json_decref(e);
        }
        assert_int_equal(usage_chunks, (size_t)on);
        free(body);
    }
    /* Asked for usage, but none stored: no usage chunk. */
    char *body = replay(CHAT_CONTENT_WANT, 24, true, &len);
    assert_null(strstr(body, "\"usage\""));
    free(body);
}

/* Pieces: at most piece_bytes, cut after spaces when one is near, never
 * inside a UTF-8 character (jansson refuses such strings, so every chunk
 * parsing is the proof). */
static void test_replay_pieces(void **state)
{
    (void)state;
    static const struct {
        const char *content;
        size_t piece;
        const char *const want[8];
    } cases[] = {
        {"The quick brown fox jumps over the lazy dog", 10,
         {"The quick ", "brown fox ", "jumps ", "over the ", "lazy dog"}},
        {"日本語です", 4, {"日", "本", "語", "で", "す"}},
        {"a😀b", 2, {"a", "😀", "b"}},
        {"abcdefgh", 3, {"abc", "def", "gh"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        json_t *msg = json_pack("{s:s,s:s,s:[{s:i,s:{s:s,s:s},s:n,s:s}]}", "id", "x", "object",
                                "chat.completion", "choices", "index", 0, "message", "role",
                                "assistant", "content", cases[c].content, "logprobs",
                                "finish_reason", "stop");
        char *stored = json_dumps(msg, JSON_COMPACT);
        json_decref(msg);
        size_t len;
        char *body = replay(stored, cases[c].piece, false, &len);
        size_t n = check_framing(body, len), k = 0;
        /* events: head, the pieces, the finish chunk, [DONE] */
        for (size_t i = 1; i + 2 < n; i++) {
            json_t *e = event_json(body, len, i);
            json_t *d = json_object_get(json_array_get(json_object_get(e, "choices"), 0), "delta");
            const char *piece = json_string_value(json_object_get(d, "content"));
            assert_non_null(piece);
            assert_non_null(cases[c].want[k]);
            assert_string_equal(piece, cases[c].want[k]);
            k++;
            json_decref(e);
        }
        assert_null(cases[c].want[k]);
        json_t *fin = event_json(body, len, n - 2);
        json_t *c0 = json_array_get(json_object_get(fin, "choices"), 0);
        assert_int_equal(json_object_size(json_object_get(c0, "delta")), 0);
        assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "stop");
        assert_true(json_is_null(json_object_get(c0, "logprobs")));
        json_decref(fin);
        free(body);
        free(stored);
    }
}

/* Logprobs travel once, never on a choice's first chunk: the official Node
 * SDK's stream helper (ChatCompletionStream) keeps a choice's first
 * logprobs object as its own and appends that same chunk's tokens to it, so
 * tokens on a first chunk end up in its final completion twice. */
static void test_replay_logprobs_not_on_first_chunk(void **state)
{
    (void)state;
    static const char two[] =
        "{\"id\":\"c\",\"object\":\"chat.completion\",\"choices\":["
        "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"logprobs\":{\"content\":[{\"token\":\"\",\"logprob\":0,\"bytes\":[],"
        "\"top_logprobs\":[]}],\"refusal\":null},\"finish_reason\":\"stop\"},"
        "{\"index\":1,\"message\":{\"role\":\"assistant\",\"content\":\"Yes\"},"
        "\"logprobs\":{\"content\":[{\"token\":\"Yes\",\"logprob\":-0.5,\"bytes\":[89,101,115],"
        "\"top_logprobs\":[]}],\"refusal\":null},\"finish_reason\":\"stop\"}]}";
    const char *const stored[] = {CHAT_USAGE_WANT, two};
    for (size_t k = 0; k < 2; k++) {
        for (size_t piece = 1; piece <= 24; piece += 23) {
            size_t len;
            char *body = replay(stored[k], piece, false, &len);
            size_t n = check_framing(body, len);
            bool seen[2] = {false, false};
            size_t carried[2] = {0, 0};
            for (size_t i = 0; i + 1 < n; i++) {
                json_t *e = event_json(body, len, i);
                json_t *c = json_array_get(json_object_get(e, "choices"), 0);
                size_t ix = (size_t)json_integer_value(json_object_get(c, "index"));
                assert_true(ix < 2);
                json_t *lp = json_object_get(c, "logprobs");
                if (!seen[ix])
                    assert_true(json_is_null(lp)); /* the choice's first chunk */
                else if (!json_is_null(lp))
                    carried[ix]++;
                seen[ix] = true;
                json_decref(e);
            }
            assert_int_equal(carried[0], 1);
            assert_int_equal(carried[1], k == 1 ? 1 : 0);
            free(body);
        }
    }
}

/* Only content and refusal are cut into pieces: the official Node SDK's
 * stream helper appends those but takes any other field of a delta as the
 * whole value, so a pieced reasoning_content would come out of it as its
 * last piece. */
static void test_replay_other_text_fields_whole(void **state)
{
    (void)state;
    static const char stored[] =
        "{\"id\":\"r\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":"
        "{\"role\":\"assistant\",\"content\":\"Four, surely.\",\"reasoning_content\":"
        "\"The user asks 2+2.\",\"reasoning\":\"Add them up.\",\"x_note\":\"an extension\","
        "\"refusal\":\"No, not that.\"},\"logprobs\":null,\"finish_reason\":\"stop\"}]}";
    static const char *const whole[] = {"reasoning_content", "reasoning", "x_note"};
    static const char *const value[] = {"The user asks 2+2.", "Add them up.", "an extension"};
    size_t len;
    char *body = replay(stored, 4, false, &len);
    size_t n = check_framing(body, len), content_pieces = 0, refusal_pieces = 0;
    size_t seen[3] = {0, 0, 0};
    for (size_t i = 0; i + 1 < n; i++) {
        json_t *e = event_json(body, len, i);
        json_t *d = json_object_get(json_array_get(json_object_get(e, "choices"), 0), "delta");
        for (size_t w = 0; w < 3; w++) {
            json_t *v = json_object_get(d, whole[w]);
            if (json_is_string(v) && json_string_length(v)) {
                seen[w]++;
                assert_string_equal(json_string_value(v), value[w]);
            }
        }
        const char *c = json_string_value(json_object_get(d, "content"));
        content_pieces += c && *c;
        const char *rf = json_string_value(json_object_get(d, "refusal"));
        refusal_pieces += rf && *rf;
        json_decref(e);
    }
    for (size_t w = 0; w < 3; w++)
        if (seen[w] != 1)
            fail_msg("%s came in %zu chunks, want 1", whole[w], seen[w]);
    assert_true(content_pieces > 1);
    assert_true(refusal_pieces > 1);
    /* And it assembles back to the stored answer. */
    int rc;
    llmc_sse_asm_t *a = assemble(body, len, &rc);
    assert_int_equal(rc, 0);
    size_t jlen;
    char *j = result_of(a, &jlen);
    assert_json_eq(j, jlen, stored);
    free(j);
    llmc_sse_asm_free(a);
    free(body);
}

static void test_replay_bad_input(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len;
    assert_int_equal(llmc_sse_replay("{\"choices\":", 11, NULL, &out, &len), LLMC_EJSON);
    assert_int_equal(llmc_sse_replay("{\"foo\":1}", 9, NULL, &out, &len), LLMC_EINVAL);
    assert_int_equal(llmc_sse_replay("[]", 2, NULL, &out, &len), LLMC_EINVAL);
    static const char no_message[] = "{\"object\":\"chat.completion\",\"choices\":[{\"index\":0}]}";
    assert_int_equal(llmc_sse_replay(no_message, sizeof no_message - 1, NULL, &out, &len),
                     LLMC_EINVAL);
    assert_null(out);
    /* NULL options are the defaults. */
    assert_int_equal(llmc_sse_replay(CHAT_N2_WANT, strlen(CHAT_N2_WANT), NULL, &out, &len), 0);
    check_framing(out, len);
    free(out);
}


/* ---- usage chunks dropped for a client that did not ask ---------------------- */

static void test_usage_chunk_recognized(void **state)
{
    (void)state;
    static const struct {
        const char *data;
        bool usage;
    } cases[] = {
        {"{\"id\":\"x\",\"choices\":[],\"usage\":{\"total_tokens\":11}}", true},
        {"{\"choices\" : [ ], \"usage\" : {\"total_tokens\":1}}", true},
        /* usage on a chunk that still has a choice (DeepSeek): content, keep it */
        {"{\"choices\":[{\"index\":0,\"delta\":{}}],\"usage\":{\"total_tokens\":3}}", false},
        /* include_usage puts "usage": null on every other chunk */
        {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":null}", false},
        {"{\"choices\":[],\"usage\":null}", false},
        /* Azure's first chunk: no choices, no usage */
        {"{\"choices\":[],\"prompt_filter_results\":[]}", false},
        {"{\"usage\":{\"total_tokens\":1}}", false},
        {"[DONE]", false},
        {"{\"choices\":[],\"usage\":", false},
        {"\"usage\"", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (llmc_sse_is_usage_chunk(cases[i].data, strlen(cases[i].data)) != cases[i].usage)
            fail_msg("case %zu (%s): want %d", i, cases[i].data, cases[i].usage);
    assert_false(llmc_sse_is_usage_chunk(NULL, 0));
}

/* s (len) with the events llmc_sse_is_usage_chunk picks cut out, as a
 * client that reads it all at once would want it; malloc'd. */
static char *stream_without_usage(const char *s, size_t len, size_t *out_len)
{
    char *o = malloc(len + 1);
    assert_non_null(o);
    size_t off = 0, n = 0, used;
    llmc_sse_event_t ev;
    while (llmc_sse_next_eof(s + off, len - off, SIZE_MAX, &ev, &used) == 1) {
        char *d = malloc(ev.data_len + 1);
        assert_non_null(d);
        llmc_sse_event_data(&ev, d, ev.data_len + 1);
        if (!llmc_sse_is_usage_chunk(d, ev.data_len)) {
            memcpy(o + n, s + off, used);
            n += used;
        }
        free(d);
        off += used;
    }
    memcpy(o + n, s + off, len - off); /* an unfinished tail goes as it is */
    n += len - off;
    o[n] = '\0';
    *out_len = n;
    return o;
}

/* Relays s as it would arrive in two reads split at k, the way a waiter's
 * relay step runs: each step filters (in place) what it has not dealt with
 * yet, and keeps the unfinished rest for the next. */
static char *relay_split(const char *s, size_t len, size_t k, size_t *out_len)
{
    char *o = malloc(len + 1), *b = malloc(len + 1);
    assert_non_null(o);
    assert_non_null(b);
    size_t done = 0, n = 0;
    size_t ends[2] = {k, len};
    for (int r = 0; r < 2; r++) {
        size_t have = ends[r] - done, used = 99;
        memcpy(b, s + done, have);
        size_t w = llmc_sse_drop_usage(b, have, r == 1, 4096, b, &used);
        assert_true(w <= used && used <= have);
        memcpy(o + n, b, w);
        n += w;
        done += used;
    }
    assert_int_equal(done, len);
    free(b);
    *out_len = n;
    return o;
}

static void test_drop_usage_every_split(void **state)
{
    (void)state;
    static const char *const eols[] = {"\n", "\r\n", "\r"};
    for (size_t r = 0; r < NREC; r++) {
        for (size_t e = 0; e < 3; e++) {
            size_t len, want_len;
            char *s = with_eol(recorded[r].stream, recorded[r].len, eols[e], &len);
            char *want = stream_without_usage(s, len, &want_len);
            if (recorded[r].stream == CHAT_USAGE) {
                assert_true(want_len < len);
                assert_null(strstr(want, "\"choices\":[],"));
            } else {
                assert_int_equal(want_len, len); /* no usage chunk: every byte goes */
            }
            for (size_t k = 0; k <= len; k++) {
                size_t got_len;
                char *got = relay_split(s, len, k, &got_len);
                if (got_len != want_len || memcmp(got, want, want_len) != 0)
                    fail_msg("%s eol %zu split %zu: got\n%.*s\nwant\n%.*s", recorded[r].name, e,
                             k, (int)got_len, got, (int)want_len, want);
                free(got);
            }
            free(want);
            free(s);
        }
    }
}

/* The end of the stream sends an unfinished block as it is; an event too
 * long to look into passes untouched. */
static void test_drop_usage_tail_and_long_event(void **state)
{
    (void)state;
#define USAGE1 "data: {\"choices\":[],\"usage\":{\"total_tokens\":1}}\n\n"
#define USAGE2_CUT "data: {\"choices\":[],\"usage\":{\"total_tokens\":2}}\n"
    static const char s[] = USAGE1 USAGE2_CUT;
    const size_t first = sizeof USAGE1 - 1, len = sizeof s - 1;
    char out[sizeof s];
    size_t used;
    /* Not the end yet: the whole usage event goes, the unfinished one waits. */
    assert_int_equal(llmc_sse_drop_usage(s, len, false, 4096, out, &used), 0);
    assert_int_equal(used, first);
    /* The end: the unfinished block is sent as it came. */
    size_t w = llmc_sse_drop_usage(s + first, len - first, true, 4096, out, &used);
    assert_int_equal(used, len - first);
    assert_int_equal(w, len - first);
    assert_memory_equal(out, USAGE2_CUT, w);
    /* Events longer than max_event are not looked into. */
    w = llmc_sse_drop_usage(s, len, true, 10, out, &used);
    assert_int_equal(used, len);
    assert_int_equal(w, len);
    assert_memory_equal(out, s, len);
#undef USAGE1
#undef USAGE2_CUT
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_every_split),
        cmocka_unit_test(test_parse_byte_by_byte),
        cmocka_unit_test(test_parse_crlf_and_cr),
        cmocka_unit_test(test_parse_fields),
        cmocka_unit_test(test_parse_multiline_data),
        cmocka_unit_test(test_parse_block_without_data),
        cmocka_unit_test(test_parse_need_more),
        cmocka_unit_test(test_parse_too_long),
        cmocka_unit_test(test_assemble_recorded),
        cmocka_unit_test(test_assemble_incomplete),
        cmocka_unit_test(test_assemble_malformed_json),
        cmocka_unit_test(test_assemble_error_event),
        cmocka_unit_test(test_assemble_blank_first_chunk),
        cmocka_unit_test(test_replay_round_trip),
        cmocka_unit_test(test_replay_upstream_answer),
        cmocka_unit_test(test_replay_usage_on_off),
        cmocka_unit_test(test_replay_pieces),
        cmocka_unit_test(test_replay_logprobs_not_on_first_chunk),
        cmocka_unit_test(test_replay_other_text_fields_whole),
        cmocka_unit_test(test_replay_bad_input),
        cmocka_unit_test(test_usage_chunk_recognized),
        cmocka_unit_test(test_drop_usage_every_split),
        cmocka_unit_test(test_drop_usage_tail_and_long_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
