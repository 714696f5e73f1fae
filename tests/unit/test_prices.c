/*
 * test_prices.c: the --prices file (src/gateway/prices.c): the format,
 * exact decimal prices, prefixes and which row wins, and the errors a bad
 * line gets (with its number).
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

#include "gateway/prices.h"
#include "llmc/error.h"

static llmc_prices_t *parse_ok(const char *text)
{
    llmc_prices_t *p = NULL;
    char err[256] = "";
    int rc = llmc_prices_parse(text, strlen(text), &p, err, sizeof(err));
    if (rc != 0)
        fail_msg("parse failed (%d): %s", rc, err);
    return p;
}

static void assert_bad(const char *text, const char *want)
{
    llmc_prices_t *p = NULL;
    char err[256] = "";
    assert_int_equal(llmc_prices_parse(text, strlen(text), &p, err, sizeof(err)), LLMC_EINVAL);
    assert_null(p);
    if (!strstr(err, want))
        fail_msg("error '%s' lacks '%s'", err, want);
}

static void test_rows_comments_and_exact_decimals(void **state)
{
    (void)state;
    llmc_prices_t *p = parse_ok("# prices per 1M tokens, 2026-12-01\n"
                                "\n"
                                "gpt-4o-mini 0.15 0.6\r\n"
                                "  text-embedding-3-small\t0.02  0\n"
                                "big 1000000 0.000001"); /* no final newline */
    assert_int_equal(p->n, 3);
    const llmc_price_t *r = llmc_prices_find(p, "gpt-4o-mini");
    assert_non_null(r);
    assert_int_equal(r->in_pico, 150000);    /* 0.15 per 1M = 150000e-12 per token */
    assert_int_equal(r->out_pico, 600000);
    assert_int_equal(llmc_price_cost(r, 1000000, 0), 150000ull * 1000000);
    assert_int_equal(llmc_price_cost(r, 10, 20), 10 * 150000 + 20 * 600000);
    r = llmc_prices_find(p, "text-embedding-3-small");
    assert_int_equal(r->in_pico, 20000);
    assert_int_equal(r->out_pico, 0);
    r = llmc_prices_find(p, "big");
    assert_int_equal(r->in_pico, 1000000000000ull);
    assert_int_equal(r->out_pico, 1);
    /* Saturates rather than wraps. */
    assert_int_equal(llmc_price_cost(r, UINT32_MAX * 10ull, UINT32_MAX), UINT64_MAX);
    assert_null(llmc_prices_find(p, "gpt-4o"));
    assert_null(llmc_prices_find(p, ""));
    assert_null(llmc_prices_find(NULL, "gpt-4o-mini"));
    llmc_prices_free(p);
}

static void test_exact_name_beats_longest_prefix(void **state)
{
    (void)state;
    llmc_prices_t *p = parse_ok("gpt-4o-* 2.5 10\n"
                                "gpt-* 1 1\n"
                                "gpt-4o-mini 0.15 0.6\n"
                                "gpt-4o-mini* 9 9\n");
    assert_int_equal(llmc_prices_find(p, "gpt-4o-2024-08-06")->in_pico, 2500000);
    assert_int_equal(llmc_prices_find(p, "gpt-3.5-turbo")->in_pico, 1000000);
    assert_int_equal(llmc_prices_find(p, "gpt-4o-mini")->in_pico, 150000);
    assert_int_equal(llmc_prices_find(p, "gpt-4o-mini-2024-07-18")->in_pico, 9000000);
    assert_null(llmc_prices_find(p, "claude-3-5-sonnet"));
    llmc_prices_free(p);
    /* A bare '*' prices every model. */
    p = parse_ok("* 1 2\n");
    assert_int_equal(llmc_prices_find(p, "anything")->out_pico, 2000000);
    llmc_prices_free(p);
}

static void test_bad_lines_name_their_number(void **state)
{
    (void)state;
    assert_bad("ok 1 2\nmissing 1\n", "line 2: want 'model input_per_1M output_per_1M'");
    assert_bad("a 1 2 3\n", "line 1:");
    assert_bad("a x 2\n", "line 1: the input price 'x'");
    assert_bad("a 1 -2\n", "the output price '-2'");
    assert_bad("a 1 0.1234567\n", "at most six decimals");
    assert_bad("a 1 1e3\n", "the output price");
    assert_bad("a 1000001 1\n", "the input price");
    assert_bad("a . 1\n", "the input price");
    assert_bad("a 1 2\n\n# c\na 3 4\n", "line 4: 'a' is priced twice");
    assert_bad("gp*t 1 2\n", "'*' only at its end");
    /* A prefix and an exact name of the same spelling are two rows. */
    llmc_prices_t *p = parse_ok("a 1 2\na* 3 4\n");
    assert_int_equal(p->n, 2);
    llmc_prices_free(p);
}

static void test_load_reads_a_file_and_names_it_in_errors(void **state)
{
    (void)state;
    char path[] = "/tmp/llmc-prices-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "m 3 15\nbroken\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    llmc_prices_t *p = NULL;
    char err[512];
    assert_int_equal(llmc_prices_load(path, &p, err, sizeof(err)), LLMC_EINVAL);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "line 2"));
    unlink(path);
    assert_int_equal(llmc_prices_load(path, &p, err, sizeof(err)), LLMC_EIO);
    assert_non_null(strstr(err, "No such file"));
}

static void test_as_of_line_dates_the_table(void **state)
{
    (void)state;
    /* The first well-formed "prices as of" line wins; others are comments. */
    llmc_prices_t *p = parse_ok("# list prices\n#  Prices As Of 2025-06-01, USD\n"
                                "# prices as of 2024-01-01\nm 1 2\n");
    assert_string_equal(p->as_of, "2025-06-01");
    assert_null(p->source);
    llmc_prices_free(p);
    p = parse_ok("# prices as of 2025-6-1\nm 1 2\n");
    assert_string_equal(p->as_of, "");
    llmc_prices_free(p);
}

static void test_builtin_table_is_dated_and_prices_common_models(void **state)
{
    (void)state;
    llmc_prices_t *p = NULL;
    char err[256] = "";
    assert_int_equal(llmc_prices_builtin(&p, err, sizeof(err)), 0);
    assert_string_equal(p->source, LLMC_PRICES_BUILTIN);
    assert_int_equal(strlen(p->as_of), 10);
    const llmc_price_t *r = llmc_prices_find(p, "gpt-4o-mini-2024-07-18");
    assert_non_null(r);
    assert_int_equal(r->in_pico, 150000);
    assert_int_equal(r->out_pico, 600000);
    r = llmc_prices_find(p, "claude-sonnet-4-20250514");
    assert_non_null(r);
    assert_int_equal(r->in_pico, 3000000);
    assert_null(llmc_prices_find(p, "mock-model"));
    llmc_prices_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_comments_and_exact_decimals),
        cmocka_unit_test(test_exact_name_beats_longest_prefix),
        cmocka_unit_test(test_bad_lines_name_their_number),
        cmocka_unit_test(test_load_reads_a_file_and_names_it_in_errors),
        cmocka_unit_test(test_as_of_line_dates_the_table),
        cmocka_unit_test(test_builtin_table_is_dated_and_prices_common_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
