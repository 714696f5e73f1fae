/*
 * fuzz_policy.c: libFuzzer driver for the cache-policy parser
 * (llmc_policy_parse in src/gateway/policy.c): Cache-Control, Pragma,
 * X-Cache-TTL, X-Cache-Namespace and the body's "cache" object.
 *
 * Input: one presence byte (bit i set: header i is given, else NULL), then
 * up to five parts separated by NUL bytes: Cache-Control, Pragma,
 * X-Cache-TTL, X-Cache-Namespace, and the JSON text of the "cache" object
 * (used only when it parses to an object, as the key builder guarantees).
 *
 * What it checks, beyond ASan, UBSan and LeakSanitizer:
 * - the answer is 0 or LLMC_EINVAL, and LLMC_EINVAL carries a message;
 * - on success the policy is coherent: ttl_ms within max_ttl, nothing is
 *   written with ttl_ms <= 0, write implies a positive TTL, max_age_ms is
 *   UNSET or >= 0, min_fresh_ms and max_stale_ms >= 0, the namespace is
 *   NUL-terminated and free of control bytes;
 * - no-store always wins: the same inputs with ", no-store" appended to
 *   Cache-Control (when it holds no quote that could swallow it) never read
 *   or write, and the body's {"no-store": true} likewise;
 * - the parse is a pure function: parsing twice gives the same policy.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gateway/policy.h"
#include "llmc/error.h"

#include "fuzz_check.h"

#define DEFAULT_TTL 300000
#define MAX_TTL 86400000

static int parse(llmc_policy_t *p, char *const part[5], const json_t *ext)
{
    char err[256] = "";
    int rc = llmc_policy_parse(p, part[0], part[1], part[2], part[3], ext, DEFAULT_TTL, MAX_TTL,
                               err, sizeof err);
    CHECK(rc == 0 || rc == LLMC_EINVAL);
    if (rc != 0)
        CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
    return rc;
}

static void check_coherent(const llmc_policy_t *p)
{
    CHECK(p->ttl_ms <= MAX_TTL);
    if (p->ttl_ms <= 0)
        CHECK(!p->write);
    CHECK(p->max_age_ms == LLMC_POLICY_UNSET || p->max_age_ms >= 0);
    CHECK(p->min_fresh_ms >= 0);
    CHECK(p->max_stale_ms >= 0);
    size_t n = strnlen(p->ns, sizeof p->ns);
    CHECK(n < sizeof p->ns);
    for (size_t i = 0; i < n; i++)
        CHECK((unsigned char)p->ns[i] >= 0x20 && p->ns[i] != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t present = data[0];
    char *buf = malloc(size);
    CHECK(buf);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';

    char *part[5] = {NULL, NULL, NULL, NULL, NULL};
    char *p = buf, *end = buf + size - 1;
    for (int i = 0; i < 5; i++) {
        char *s = p;
        p = p <= end ? p + strlen(p) + 1 : p;
        if ((present >> i) & 1)
            part[i] = s <= end ? s : (char *)"";
    }
    json_t *ext = NULL;
    if (part[4]) {
        ext = json_loads(part[4], 0, NULL);
        if (!json_is_object(ext)) {
            json_decref(ext);
            ext = NULL;
        }
    }
    char *hdr[5] = {part[0], part[1], part[2], part[3], NULL};

    llmc_policy_t a, b;
    int rc = parse(&a, hdr, ext);
    if (rc == 0) {
        check_coherent(&a);
        CHECK(parse(&b, hdr, ext) == 0);
        CHECK(memcmp(&a, &b, sizeof a) == 0);

        /* no-store appended to Cache-Control wins. */
        const char *cc = hdr[0] ? hdr[0] : "";
        if (!strchr(cc, '"') && strlen(cc) < 4096) {
            char *cc2 = malloc(strlen(cc) + 16);
            CHECK(cc2);
            sprintf(cc2, "%s, no-store", cc);
            char *hdr2[5] = {cc2, hdr[1], hdr[2], hdr[3], NULL};
            CHECK(parse(&b, hdr2, ext) == 0);
            check_coherent(&b);
            CHECK(!b.read && !b.write);
            free(cc2);
        }
        /* ...and so does the body's no-store. */
        json_t *ext2 = ext ? json_deep_copy(ext) : json_object();
        CHECK(ext2);
        json_object_set_new(ext2, "no-store", json_true());
        if (parse(&b, hdr, ext2) == 0) {
            check_coherent(&b);
            CHECK(!b.read && !b.write);
        }
        json_decref(ext2);
    }
    json_decref(ext);
    free(buf);
    return 0;
}
