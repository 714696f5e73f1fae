/*
 * fuzz_origin.c: libFuzzer driver for the browser checks (src/gateway/origin.c):
 * llmc_origin_init on fuzzed --allowed-host / --cors-origin lists and listen
 * hosts, then llmc_origin_check on fuzzed Host, Origin and Sec-Fetch-Site values.
 *
 * Input: the parts split at NUL bytes, in this order: --allowed-host list,
 * --cors-origin list, listen host, Host, Origin, Sec-Fetch-Site, the preflight's
 * method (a missing part is NULL for the request headers, "" for the options).
 *
 * What it checks, beyond ASan, UBSan and LeakSanitizer:
 * - init answers 0, or LLMC_EINVAL/LLMC_ENOMEM with a NUL-terminated message
 *   naming its option;
 * - the verdict is one of the enum's; CORS lines come with PASS or PREFLIGHT
 *   only, and are whole "Name: value\r\n" lines with no other CR or LF (no
 *   header can be injected through an option), each starting with
 *   Access-Control- or Vary;
 * - a request without Host, Origin and Sec-Fetch-Site (a program's) always passes;
 * - the check is pure: the same input gives the same verdict and lines.
 */
#include <http_parser.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/origin.h"
#include "llmc/error.h"

#include "fuzz_check.h"

#define NPARTS 7

static void check_lines(const char *cors)
{
    for (const char *p = cors; *p;) {
        const char *eol = strstr(p, "\r\n");
        CHECK(eol != NULL);
        CHECK(strncmp(p, "Access-Control-", 15) == 0 || strncmp(p, "Vary: ", 6) == 0);
        for (const char *c = p; c < eol; c++)
            CHECK(*c != '\r' && *c != '\n' && *c != '\0');
        p = eol + 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *part[NPARTS] = {0};
    char *p = buf, *end = buf + size;
    for (int i = 0; i < NPARTS && p <= end; i++) {
        part[i] = p;
        p += strlen(p) + 1;
    }

    llmc_origin_t o;
    char err[256];
    err[0] = '\0';
    int rc = llmc_origin_init(&o, part[2] ? part[2] : "127.0.0.1", NULL, part[0] ? part[0] : "",
                              part[1] ? part[1] : "", err, sizeof(err));
    CHECK(rc == 0 || rc == LLMC_EINVAL || rc == LLMC_ENOMEM);
    if (rc == 0) {
        for (int admin = 0; admin < 2; admin++) {
            const char *cors = NULL, *again = NULL;
            int method = part[6] ? HTTP_OPTIONS : HTTP_POST;
            llmc_origin_verdict_t v = llmc_origin_check(&o, admin, method, part[3], part[4],
                                                        part[5], part[6], &cors);
            CHECK(v >= LLMC_ORIGIN_PASS && v <= LLMC_ORIGIN_PREFLIGHT);
            CHECK(!cors || v == LLMC_ORIGIN_PASS || v == LLMC_ORIGIN_PREFLIGHT);
            CHECK(v != LLMC_ORIGIN_PREFLIGHT || cors);
            if (cors)
                check_lines(cors);
            CHECK(llmc_origin_check(&o, admin, method, part[3], part[4], part[5], part[6],
                                    &again) == v);
            CHECK(again == cors);
            const char *none;
            CHECK(llmc_origin_check(&o, admin, HTTP_POST, NULL, NULL, NULL, NULL, &none) ==
                  LLMC_ORIGIN_PASS && !none);
        }
    } else {
        CHECK(memchr(err, '\0', sizeof(err)) != NULL);
        CHECK(strstr(err, "--allowed-host") || strstr(err, "--cors-origin") ||
              rc == LLMC_ENOMEM);
    }
    llmc_origin_free(&o);
    free(buf);
    return 0;
}
