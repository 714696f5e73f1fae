/*
 * fuzz_usage.c: libFuzzer driver for the token counts read from a stored
 * answer (llmc_usage_scan in src/core/usage.c).
 *
 * Input: any bytes, read as the body of an answer.
 *
 * What it checks, beyond ASan, UBSan and LeakSanitizer (the input is copied
 * into a buffer of exactly its size, so a read past it is caught):
 * - whenever jansson reads the input as an object, the scanner agrees with
 *   what the parsed object says: a top-level "usage" object, last one
 *   winning, with "prompt_tokens" (or "input_tokens") and
 *   "completion_tokens" (or "output_tokens") integers from 0 to 2^32-1.
 *   Inputs where the two readings differ by design are left out: a
 *   backslash (the scanner matches keys as written, jansson decodes
 *   escapes), "-0" (the scanner takes no sign), a NUL byte (jansson stops
 *   there), and both names of a pair (jansson keeps a duplicate key at its
 *   first place, so the order of the two names is lost);
 * - the scan is a pure function: scanning twice gives the same answer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llmc/usage.h"

#include "fuzz_check.h"

/* What the object says under name, by the scanner's rule: 1 taken, 0 not. */
static int count_of(json_t *usage, const char *a, const char *b, uint32_t *out)
{
    int got = 0;
    const char *k;
    json_t *v;
    json_object_foreach(usage, k, v) {
        if (strcmp(k, a) != 0 && strcmp(k, b) != 0)
            continue;
        if (json_is_integer(v) && json_integer_value(v) >= 0 &&
            json_integer_value(v) <= (json_int_t)UINT32_MAX) {
            *out = (uint32_t)json_integer_value(v);
            got = 1;
        }
    }
    return got;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    llmc_usage_t u1 = {0, 0}, u2 = {0, 0};
    bool got = llmc_usage_scan(buf, size, &u1);
    CHECK(got == llmc_usage_scan(buf, size, &u2));
    if (got)
        CHECK(u1.prompt_tokens == u2.prompt_tokens && u1.completion_tokens == u2.completion_tokens);

    bool both_names = (memmem(buf, size, "prompt_tokens", 13) && memmem(buf, size, "input_tokens", 12)) ||
                      (memmem(buf, size, "completion_tokens", 17) && memmem(buf, size, "output_tokens", 13));
    if (!memchr(buf, '\\', size) && !memchr(buf, '\0', size) && !memmem(buf, size, "-0", 2) &&
        !both_names) {
        json_t *root = json_loadb(buf, size, JSON_DISABLE_EOF_CHECK, NULL);
        json_t *usage = json_object_get(root, "usage");
        if (json_is_object(root)) {
            llmc_usage_t want = {0, 0};
            int p = 0, c = 0;
            if (json_is_object(usage)) {
                p = count_of(usage, "prompt_tokens", "input_tokens", &want.prompt_tokens);
                c = count_of(usage, "completion_tokens", "output_tokens", &want.completion_tokens);
            }
            CHECK(got == (p || c));
            if (got)
                CHECK(u1.prompt_tokens == want.prompt_tokens &&
                      u1.completion_tokens == want.completion_tokens);
        }
        json_decref(root);
    }
    free(buf);
    return 0;
}
