/*
 * test_chunk_scan.c: the strict chunked-body checker (src/http/chunk_scan.c),
 * a pure function, tested alone: valid bodies fed whole, split at every
 * byte and fed a byte at a time, each always ending exactly at its final
 * CRLF even with the next request behind it; each violation the parser
 * would let through; the size bound; the bound on extensions and trailers.
 * How the server answers these (400, closed, nothing dispatched) is in
 * test_http.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http_int.h"

typedef struct {
    const char *s;
    size_t len;
} bytes_t;

#define B(lit) {(lit), sizeof(lit) - 1}

/* Bytes of the next pipelined request, which must never be scanned. */
static const char NEXT[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

static const bytes_t good[] = {
    B("0\r\n\r\n"),
    B("3\r\nabc\r\n0\r\n\r\n"),
    B("A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"),
    B("3\r\na\r\n\r\n0\r\n\r\n"),             /* data holding CRLF: skipped by length */
    B("2\r\n\0\n\r\n0\r\n\r\n"),              /* and NUL, LF */
    B("3;a\r\nabc\r\n0;b=c\r\n\r\n"),
    B("3;a;b=1;c\r\nabc\r\n0\r\n\r\n"),
    B("3 ;a\r\nabc\r\n0\t;\tb\t=\tc\r\n\r\n"), /* BWS around ';' and '=' */
    B("3;a = b ; c\r\nabc\r\n0\r\n\r\n"),
    B("3;q=\"\"\r\nabc\r\n0\r\n\r\n"),
    B("3;q=\"a b;c=d\\\"e\\\\f\t\x80\"\r\nabc\r\n0\r\n\r\n"),
    B("3;q=\"x\" ;r=\"y\";s\r\nabc\r\n0\r\n\r\n"),
    B("3;!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~\r\nabc\r\n0\r\n\r\n"),
    B("0000000000000003\r\nabc\r\n0\r\n\r\n"), /* 16 digits, the most */
    B("0000000000000000\r\n\r\n"),
    B("1\r\nx\r\n0\r\nX-T: v\tw \x80\xff\r\nY:\r\nZ:  \r\n\r\n"),
    B("0;e=1\r\nX-Checksum: abc\r\n\r\n"),
};

static int scan(llmc__http_chunk_t *cs, const char *p, size_t n, size_t *used)
{
    return llmc__http_chunk_scan(cs, p, n, used);
}

/* body followed by NEXT, in one buffer. */
static char *with_next(const bytes_t *b, size_t *len)
{
    char *buf = malloc(b->len + sizeof(NEXT) - 1);

    memcpy(buf, b->s, b->len);
    memcpy(buf + b->len, NEXT, sizeof(NEXT) - 1);
    *len = b->len + sizeof(NEXT) - 1;
    return buf;
}

static void test_good_whole(void **state)
{
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        llmc__http_chunk_t cs;
        size_t len, used = 99;
        char *buf = with_next(&good[i], &len);

        llmc__http_chunk_init(&cs, 0);
        assert_int_equal(scan(&cs, buf, len, &used), LLMC_CS_DONE);
        assert_int_equal(used, good[i].len);
        /* Done stays done, and checks nothing more. */
        assert_int_equal(scan(&cs, buf, len, &used), LLMC_CS_DONE);
        assert_int_equal(used, 0);
        free(buf);
    }
}

static void test_good_split_everywhere(void **state)
{
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        size_t len;
        char *buf = with_next(&good[i], &len);

        for (size_t cut = 0; cut <= len; cut++) {
            llmc__http_chunk_t cs;
            size_t used;
            int r;

            llmc__http_chunk_init(&cs, 0);
            r = scan(&cs, buf, cut, &used);
            if (cut < good[i].len) {
                assert_int_equal(r, LLMC_CS_MORE);
                assert_int_equal(used, cut);
                r = scan(&cs, buf + cut, len - cut, &used);
                assert_int_equal(r, LLMC_CS_DONE);
                assert_int_equal(cut + used, good[i].len);
            } else {
                assert_int_equal(r, LLMC_CS_DONE);
                assert_int_equal(used, good[i].len);
            }
        }
        free(buf);
    }
}

static void test_good_byte_by_byte(void **state)
{
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        llmc__http_chunk_t cs;
        size_t used, k;
        int r = LLMC_CS_MORE;

        llmc__http_chunk_init(&cs, 0);
        for (k = 0; k < good[i].len && r == LLMC_CS_MORE; k++) {
            r = scan(&cs, good[i].s + k, 1, &used);
            assert_int_equal(used, 1);
        }
        assert_int_equal(r, LLMC_CS_DONE);
        assert_int_equal(k, good[i].len);
    }
}

static const bytes_t bad[] = {
    /* chunk sizes */
    B("\r\n"), B("zz\r\n"), B("-5\r\n"), B("+5\r\n"), B("0x3\r\n"), B(" 3\r\n"), B(";a\r\n"),
    B("3\r\r\n"), B("3\rX"), B("3 \r\n"), B("3\t\r\n"), B("3 4\r\n"), B("\x00\r\n"),
    /* line ends */
    B("3\nabc\r\n0\r\n\r\n"),
    B("3\r\nabcXX0\r\n\r\n"),
    B("3\r\nabcX\n0\r\n\r\n"),
    B("3\r\nabc\rX0\r\n\r\n"),
    B("3\r\nabc\n0\r\n\r\n"),
    B("3\r\nabc\r0\r\n\r\n"),
    B("3\r\nabc\r\n0\n\n"),
    B("3\r\nabc\r\n0\r\n\n"),
    B("3\r\nabc\r\n0\r\n\r\r\n"),
    B("3\r\nabcd\r\n0\r\n\r\n"),           /* more data than the size */
    /* extensions */
    B("3;a\nb\r\n"), B("3;\x00\r\n"), B("3;a\x00\r\n"), B("3;\r\n"), B("3;;a\r\n"), B("3;a \r\n"),
    B("3;a=\r\n"), B("3;a=b \r\n"), B("3;a=b c\r\n"), B("3;=b\r\n"), B("3;a@b\r\n"), B("3;a=b@\r\n"),
    B("3;a=\"x\r\n"), B("3;a=\"x\"y\r\n"), B("3;a=\"\x01\"\r\n"), B("3;a=\"\\\x01\"\r\n"),
    B("3;a=\"\x7f\"\r\n"), B("3;a=\"x\" \r\n"), B("3;a=\"x\r\n\"\r\n"), B("3;a\rb\r\n"),
    B("3;a\x80\r\n"), B("3;a=b\x80\r\n"),
    /* trailers */
    B("0\r\nX-T: a\x00" "b\r\n\r\n"),
    B("0\r\nX-T: a\nb\r\n\r\n"),
    B("0\r\nX-T: a\x01" "b\r\n\r\n"),
    B("0\r\nX-T: \x7f\r\n\r\n"),
    B("0\r\nX-T: a\rb\r\n\r\n"),
    B("0\r\nX-T: a\n\r\n"),
    B("0\r\n X-T: a\r\n\r\n"),                /* obs-fold */
    B("0\r\nX-T: a\r\n\tb\r\n\r\n"),
    B("0\r\nX T: a\r\n\r\n"),
    B("0\r\nX-T : a\r\n\r\n"),
    B("0\r\n: a\r\n\r\n"),
    B("0\r\nX-T\r\n\r\n"),
    B("0\r\nX-\x00T: a\r\n\r\n"),
    /* size bound: more than 16 hex digits, leading zeros included */
    B("10000000000000000\r\n"), B("00000000000000003\r\n"), B("ffffffffffffffffffffffffffffffffffffffff\r\n"),
};

static void test_bad(void **state)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        llmc__http_chunk_t cs;
        size_t used = 99;

        llmc__http_chunk_init(&cs, 0);
        if (scan(&cs, bad[i].s, bad[i].len, &used) != LLMC_CS_BAD)
            fail_msg("case %zu accepted: \"%.*s\"", i, (int)bad[i].len, bad[i].s);
        assert_int_equal(used, 0);
        /* An error stays an error. */
        assert_int_equal(scan(&cs, "0\r\n\r\n", 5, &used), LLMC_CS_BAD);
    }
}

/* However a bad body is split, it is refused, never taken as complete. */
static void test_bad_split_everywhere(void **state)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (size_t cut = 0; cut <= bad[i].len; cut++) {
            llmc__http_chunk_t cs;
            size_t used;
            int r;

            llmc__http_chunk_init(&cs, 0);
            r = scan(&cs, bad[i].s, cut, &used);
            if (r == LLMC_CS_MORE)
                r = scan(&cs, bad[i].s + cut, bad[i].len - cut, &used);
            assert_int_equal(r, LLMC_CS_BAD);
        }
    }
}

static void test_size_bound(void **state)
{
    llmc__http_chunk_t cs;
    size_t used;

    /* 16 digits, the largest size, is fine for the scan (the body limit
       refuses it later); its data is skipped by length. */
    llmc__http_chunk_init(&cs, 0);
    assert_int_equal(scan(&cs, "ffffffffffffffff\r\n", 18, &used), LLMC_CS_MORE);
    assert_int_equal(cs.left, UINT64_MAX);
    assert_int_equal(scan(&cs, "\r\n0\r\n\r\n", 7, &used), LLMC_CS_MORE); /* still data */
    /* a 17th digit, fed alone */
    llmc__http_chunk_init(&cs, 0);
    assert_int_equal(scan(&cs, "1000000000000000", 16, &used), LLMC_CS_MORE);
    assert_int_equal(scan(&cs, "0", 1, &used), LLMC_CS_BAD);
}

static void test_big_chunk_in_pieces(void **state)
{
    static char data[70000];
    llmc__http_chunk_t cs;
    size_t used, off = 0;

    memset(data, '\n', sizeof(data)); /* would be bad anywhere but in data */
    llmc__http_chunk_init(&cs, 0);
    assert_int_equal(scan(&cs, "11170\r\n", 7, &used), LLMC_CS_MORE);
    while (off < sizeof(data)) {
        size_t n = sizeof(data) - off < 4093 ? sizeof(data) - off : 4093;
        assert_int_equal(scan(&cs, data + off, n, &used), LLMC_CS_MORE);
        assert_int_equal(used, n);
        off += n;
    }
    assert_int_equal(scan(&cs, "\r\n0\r\n\r\nGET", 10, &used), LLMC_CS_DONE);
    assert_int_equal(used, 7);
}

static void test_meta_bound(void **state)
{
    char buf[256];
    llmc__http_chunk_t cs;
    size_t used;
    int n;

    /* Extensions: 40 bytes pass a 64-byte bound, 100 do not. */
    n = snprintf(buf, sizeof(buf), "1;%s\r\nx\r\n0\r\n\r\n", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    llmc__http_chunk_init(&cs, 64);
    assert_int_equal(scan(&cs, buf, (size_t)n, &used), LLMC_CS_DONE);
    memset(buf, 'a', 100);
    buf[0] = '1';
    buf[1] = ';';
    llmc__http_chunk_init(&cs, 64);
    assert_int_equal(scan(&cs, buf, 100, &used), LLMC_CS_TOO_BIG);
    assert_int_equal(scan(&cs, "\r\n", 2, &used), LLMC_CS_BAD);
    /* Extensions of many chunks add up. */
    llmc__http_chunk_init(&cs, 64);
    for (int i = 0; i < 7; i++)
        assert_int_equal(scan(&cs, "1;abcdefgh\r\nx\r\n", 15, &used), LLMC_CS_MORE);
    assert_int_equal(scan(&cs, "1;abcdefgh\r\nx\r\n", 15, &used), LLMC_CS_TOO_BIG);
    /* Trailers count too. */
    llmc__http_chunk_init(&cs, 64);
    assert_int_equal(scan(&cs, "0\r\nX-A: aaaaaaaaaaaaaaaaaaaa\r\n", 30, &used), LLMC_CS_MORE);
    assert_int_equal(scan(&cs, "X-B: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n", 43, &used), LLMC_CS_TOO_BIG);
    /* Chunk data and plain chunk lines do not. */
    llmc__http_chunk_init(&cs, 8);
    for (int i = 0; i < 100; i++)
        assert_int_equal(scan(&cs, "a\r\n0123456789\r\n", 15, &used), LLMC_CS_MORE);
    assert_int_equal(scan(&cs, "0\r\n\r\n", 5, &used), LLMC_CS_DONE);
    /* 0: no bound */
    llmc__http_chunk_init(&cs, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(scan(&cs, "1;abcdefgh\r\nx\r\n", 15, &used), LLMC_CS_MORE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_whole),
        cmocka_unit_test(test_good_split_everywhere),
        cmocka_unit_test(test_good_byte_by_byte),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_bad_split_everywhere),
        cmocka_unit_test(test_size_bound),
        cmocka_unit_test(test_big_chunk_in_pieces),
        cmocka_unit_test(test_meta_bound),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
