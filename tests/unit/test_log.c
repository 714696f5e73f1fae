/*
 * test_log.c: the buffered access log (src/gateway/log.c).
 *
 * A buffer is tested with a write callback that records every run it gets,
 * so each case can check that runs hold whole lines only, in order, and
 * that nothing is left behind at a flush or at free. The destination
 * (llmc_log_t) is tested on real files in a temporary directory: two
 * buffers standing for two workers, a rename as logrotate does it, and the
 * reopen in steps, after which the old file holds exactly the lines
 * written before it and the new file those after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/log.h"
#include "llmc/error.h"

typedef struct rec {
    char out[1 << 16];
    size_t len;
    unsigned runs;
    bool fail;            /* the next writes fail (a full disk) */
} rec_t;

static int rec_write(void *arg, const char *buf, size_t len)
{
    rec_t *r = arg;
    r->runs++;
    if (r->fail)
        return LLMC_EIO;
    /* Every run is whole lines: it ends with '\n'. */
    assert_true(len > 0 && buf[len - 1] == '\n');
    assert_true(r->len + len <= sizeof(r->out));
    memcpy(r->out + r->len, buf, len);
    r->len += len;
    return 0;
}

static size_t line(char *buf, size_t cap, unsigned i, size_t pad)
{
    int n = snprintf(buf, cap, "{\"n\":%u,\"pad\":\"%*s\"}\n", i, (int)pad, "");
    return (size_t)n;
}

/* Whether r->out is exactly lines from..to-1 with the pads given by pad(). */
static void expect_lines(const rec_t *r, unsigned from, unsigned to, size_t (*pad)(unsigned))
{
    char want[1 << 16], l[4096];
    size_t n = 0;
    for (unsigned i = from; i < to; i++) {
        size_t k = line(l, sizeof l, i, pad(i));
        memcpy(want + n, l, k);
        n += k;
    }
    assert_int_equal(r->len, n);
    assert_memory_equal(r->out, want, n);
}

static size_t pad_small(unsigned i) { return i % 7; }
static size_t pad_varied(unsigned i) { return (i * 37) % 150; }

static void test_lines_stay_in_the_buffer_until_flushed(void **state)
{
    (void)state;
    rec_t *r = calloc(1, sizeof *r);
    llmc_logbuf_t lb;
    char l[256];
    assert_int_equal(llmc_logbuf_init(&lb, 4096, rec_write, r), 0);
    assert_true(llmc_logbuf_empty(&lb));
    assert_true(llmc_logbuf_append(&lb, l, line(l, sizeof l, 0, pad_small(0))));  /* arm */
    assert_false(llmc_logbuf_append(&lb, l, line(l, sizeof l, 1, pad_small(1)))); /* armed */
    assert_int_equal(r->runs, 0);
    llmc_logbuf_flush(&lb);
    assert_int_equal(r->runs, 1);
    expect_lines(r, 0, 2, pad_small);
    llmc_logbuf_flush(&lb); /* empty: nothing written */
    assert_int_equal(r->runs, 1);
    assert_true(llmc_logbuf_append(&lb, l, line(l, sizeof l, 2, pad_small(2)))); /* armed again */
    llmc_logbuf_free(&lb);
    free(r);
}

static void test_lines_intact_across_flushes_when_full(void **state)
{
    (void)state;
    rec_t *r = calloc(1, sizeof *r);
    llmc_logbuf_t lb;
    char l[256];
    /* A buffer that no line size divides: runs end wherever a line would
       not fit, never inside one. */
    assert_int_equal(llmc_logbuf_init(&lb, 1000, rec_write, r), 0);
    for (unsigned i = 0; i < 300; i++) {
        llmc_logbuf_append(&lb, l, line(l, sizeof l, i, pad_varied(i)));
        assert_true(lb.len <= lb.cap);
    }
    assert_true(r->runs > 10);
    llmc_logbuf_flush(&lb);
    expect_lines(r, 0, 300, pad_varied);
    llmc_logbuf_free(&lb);
    free(r);
}

static size_t pad_long_every_tenth(unsigned i) { return i % 10 == 5 ? 3000 : 10; }

static void test_a_line_longer_than_the_buffer_goes_alone_in_order(void **state)
{
    (void)state;
    rec_t *r = calloc(1, sizeof *r);
    llmc_logbuf_t lb;
    char l[4096];
    assert_int_equal(llmc_logbuf_init(&lb, 512, rec_write, r), 0);
    for (unsigned i = 0; i < 40; i++)
        llmc_logbuf_append(&lb, l, line(l, sizeof l, i, pad_long_every_tenth(i)));
    llmc_logbuf_free(&lb); /* flushes the rest */
    expect_lines(r, 0, 40, pad_long_every_tenth);
    free(r);
}

static void test_unbuffered_writes_each_line(void **state)
{
    (void)state;
    rec_t *r = calloc(1, sizeof *r);
    llmc_logbuf_t lb;
    char l[256];
    assert_int_equal(llmc_logbuf_init(&lb, 0, rec_write, r), 0);
    for (unsigned i = 0; i < 5; i++)
        assert_false(llmc_logbuf_append(&lb, l, line(l, sizeof l, i, pad_small(i))));
    assert_int_equal(r->runs, 5);
    expect_lines(r, 0, 5, pad_small);
    llmc_logbuf_free(&lb);
    free(r);
}

static void test_flushed_at_free(void **state)
{
    (void)state;
    rec_t *r = calloc(1, sizeof *r);
    llmc_logbuf_t lb;
    char l[256];
    assert_int_equal(llmc_logbuf_init(&lb, 65536, rec_write, r), 0);
    for (unsigned i = 0; i < 100; i++)
        llmc_logbuf_append(&lb, l, line(l, sizeof l, i, pad_varied(i)));
    assert_int_equal(r->runs, 0);
    llmc_logbuf_free(&lb);
    expect_lines(r, 0, 100, pad_varied);
    llmc_logbuf_free(&lb); /* twice: nothing more */
    assert_int_equal(r->runs, 1);
    free(r);
}

static void test_a_failed_write_counts_its_lines_and_goes_on(void **state)
{
    (void)state;
    rec_t *r = calloc(1, sizeof *r);
    llmc_logbuf_t lb;
    char l[256];
    assert_int_equal(llmc_logbuf_init(&lb, 4096, rec_write, r), 0);
    for (unsigned i = 0; i < 3; i++)
        llmc_logbuf_append(&lb, l, line(l, sizeof l, i, 1));
    r->fail = true;
    llmc_logbuf_flush(&lb);
    assert_int_equal(lb.lines_lost, 3);
    assert_true(llmc_logbuf_empty(&lb));
    r->fail = false;
    llmc_logbuf_append(&lb, l, line(l, sizeof l, 3, 1));
    llmc_logbuf_free(&lb);
    assert_int_equal(r->len, line(l, sizeof l, 3, 1));
    free(r);
}

/* ---- one line ------------------------------------------------------------------------------ */

static void test_format_is_the_documented_line(void **state)
{
    (void)state;
    llmc_log_clock_t clk = {0};
    char out[LLMC_LOG_LINE_MAX + 1];
    llmc_access_t a = {
        .now_ms = 1767323045678LL, /* 2026-01-02T03:04:05.678Z */
        .thread = 3, .id = 12345, .method = "POST", .path = "/v1/chat/completions",
        .status = 200, .cache = "HIT", .key = "0123456789abcdef0123456789abcdef",
        .bytes = 1234, .dur_ns = 125400, /* 0.1254 ms: rounds to 0.125 */
    };
    size_t n = llmc_log_format(out, &clk, &a);
    out[n] = '\0';
    assert_string_equal(out,
        "{\"ts\":\"2026-01-02T03:04:05.678Z\",\"thread\":3,\"id\":12345,\"method\":\"POST\","
        "\"path\":\"/v1/chat/completions\",\"status\":200,\"cache\":\"HIT\","
        "\"key\":\"0123456789abcdef\",\"bytes\":1234,\"dur_ms\":0.125}\n");
    /* The same second: the kept date; the next one: a new date. */
    a.now_ms += 5;
    a.cache = NULL;
    a.key = "";
    a.dur_ns = 2000000999500ULL;
    n = llmc_log_format(out, &clk, &a);
    out[n] = '\0';
    assert_non_null(strstr(out, "\"ts\":\"2026-01-02T03:04:05.683Z\""));
    assert_non_null(strstr(out, "\"cache\":\"-\",\"key\":\"\""));
    assert_non_null(strstr(out, "\"dur_ms\":2000001.000}"));
    a.now_ms = 1767323046001LL;
    n = llmc_log_format(out, &clk, &a);
    out[n] = '\0';
    assert_non_null(strstr(out, "\"ts\":\"2026-01-02T03:04:06.001Z\""));
}

static void test_format_escapes_and_bounds_the_path(void **state)
{
    (void)state;
    llmc_log_clock_t clk = {0};
    char out[LLMC_LOG_LINE_MAX + 1];
    llmc_access_t a = {.now_ms = 0, .method = "GET", .path = "/a\"b\\c\x01\x7f", .status = 404};
    size_t n = llmc_log_format(out, &clk, &a);
    out[n] = '\0';
    assert_non_null(strstr(out, "\"path\":\"/a\\\"b\\\\c\\u0001\\u007f\""));
    assert_non_null(strstr(out, "\"ts\":\"1970-01-01T00:00:00.000Z\""));
    /* A long path of characters that escape to six bytes each: cut, and the
       line still whole and within its bound. */
    char *path = malloc(20001);
    memset(path, '\x02', 20000);
    path[20000] = '\0';
    a.path = path;
    a.id = UINT64_MAX;
    a.bytes = UINT64_MAX;
    a.dur_ns = UINT64_MAX;
    n = llmc_log_format(out, &clk, &a);
    assert_true(n <= LLMC_LOG_LINE_MAX);
    assert_int_equal(out[n - 1], '\n');
    assert_int_equal(out[n - 2], '}');
    free(path);
}

/* ---- the destination: real files ---------------------------------------------------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_reopen_after_every_buffer_is_written(void **state)
{
    (void)state;
    char dir[] = "/tmp/llmc-test-log-XXXXXX", path[300], rotated[310];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/access.log", dir);
    snprintf(rotated, sizeof rotated, "%s.1", path);
    llmc_log_t log;
    llmc_logbuf_t a, b; /* two workers */
    assert_int_equal(llmc_log_open(&log, path, -1), 0);
    assert_int_equal(llmc_logbuf_init(&a, 4096, llmc_log_write, &log), 0);
    assert_int_equal(llmc_logbuf_init(&b, 4096, llmc_log_write, &log), 0);
    llmc_logbuf_append(&a, "a1\n", 3);
    llmc_logbuf_append(&b, "b1\n", 3);
    llmc_logbuf_flush(&a);
    llmc_logbuf_append(&a, "a2\n", 3);
    assert_int_equal(rename(path, rotated), 0); /* logrotate, then SIGHUP */
    assert_true(llmc_log_reopen_begin(&log, 2));
    assert_false(llmc_log_reopen_begin(&log, 2)); /* one at a time */
    llmc_logbuf_flush(&b);
    assert_int_equal(llmc_log_reopen_step(&log), 0);   /* a has not flushed yet */
    llmc_logbuf_append(&b, "b2\n", 3);                 /* b goes on meanwhile */
    llmc_logbuf_flush(&a);
    assert_int_equal(llmc_log_reopen_step(&log), 1);   /* the last: reopened */
    llmc_logbuf_append(&a, "a3\n", 3);
    llmc_logbuf_free(&a);
    llmc_logbuf_free(&b);
    char *old = slurp(rotated), *cur = slurp(path);
    assert_string_equal(old, "a1\nb1\na2\n");
    assert_string_equal(cur, "a3\nb2\n");
    assert_true(llmc_log_reopen_begin(&log, 1)); /* the next reopen may start */
    assert_int_equal(llmc_log_reopen_step(&log), 1);
    free(old);
    free(cur);
    llmc_log_close(&log);
    unlink(rotated);
    unlink(path);
    rmdir(dir);
}

static void test_reopen_needs_a_path(void **state)
{
    (void)state;
    llmc_log_t log;
    assert_int_equal(llmc_log_open(&log, NULL, STDOUT_FILENO), 0);
    assert_false(llmc_log_reopen_begin(&log, 1));
    llmc_log_close(&log);
    assert_int_equal(llmc_log_open(&log, NULL, -1), 0); /* off */
    assert_false(llmc_log_reopen_begin(&log, 1));
    llmc_log_close(&log);
    assert_int_equal(llmc_log_open(&log, "/nonexistent-dir/x.log", -1), LLMC_EIO);
    llmc_log_close(&log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_stay_in_the_buffer_until_flushed),
        cmocka_unit_test(test_lines_intact_across_flushes_when_full),
        cmocka_unit_test(test_a_line_longer_than_the_buffer_goes_alone_in_order),
        cmocka_unit_test(test_unbuffered_writes_each_line),
        cmocka_unit_test(test_flushed_at_free),
        cmocka_unit_test(test_a_failed_write_counts_its_lines_and_goes_on),
        cmocka_unit_test(test_format_is_the_documented_line),
        cmocka_unit_test(test_format_escapes_and_bounds_the_path),
        cmocka_unit_test(test_reopen_after_every_buffer_is_written),
        cmocka_unit_test(test_reopen_needs_a_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
