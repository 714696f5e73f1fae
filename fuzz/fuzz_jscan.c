/*
 * fuzz_jscan.c: libFuzzer driver for the JSON value count a request body
 * is refused by before it is parsed (llmc_json_count_values in
 * src/core/jscan.c, behind --max-json-values).
 *
 * Input: a limit byte, then any bytes, read as a request body.
 *
 * What it checks, beyond ASan, UBSan and LeakSanitizer (the body is copied
 * into a buffer of exactly its size, so a read past it is caught):
 * - whenever jansson parses the body as the gateway does (key.c's flags,
 *   and again with integers as reals after a numeric overflow; a body with
 *   a NUL byte is left out, as the gateway refuses it before jansson), the
 *   count is the number of values in jansson's tree, so the refusal "more
 *   than L values" holds exactly when jansson's tree has more than L;
 * - for any bytes, a count with a limit L is the full count when that is
 *   at most L, else L + 1 (the scan stops early but answers the same).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llmc/jscan.h"

#include "fuzz_check.h"

static size_t tree_values(json_t *v)
{
    size_t n = 1, i;
    const char *k;
    json_t *m;
    if (json_is_object(v)) {
        json_object_foreach(v, k, m) n += tree_values(m);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m) n += tree_values(m);
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t limit = data[0];
    size_t len = size - 1;
    char *body = malloc(len ? len : 1);
    if (!body)
        return 0;
    memcpy(body, data + 1, len);

    size_t full = llmc_json_count_values(body, len, SIZE_MAX - 1);
    size_t bounded = llmc_json_count_values(body, len, limit);
    CHECK(bounded == (full <= limit ? full : limit + 1));

    if (!memchr(body, '\0', len)) {
        size_t flags = JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
        json_error_t e;
        json_t *root = json_loadb(body, len, flags, &e);
        if (!root && json_error_code(&e) == json_error_numeric_overflow)
            root = json_loadb(body, len, flags | JSON_DECODE_INT_AS_REAL, &e);
        if (root) {
            size_t want = tree_values(root);
            if (full != want) {
                fprintf(stderr, "counted %zu values, jansson's tree has %zu\n", full, want);
                CHECK(full == want);
            }
            CHECK((bounded > limit) == (want > limit));
            json_decref(root);
        }
    }
    free(body);
    return 0;
}
