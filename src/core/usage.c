/*
 * usage.c: the token counts of a stored answer (llmc/usage.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - It walks the JSON text instead of parsing it: an answer's body can be
 *   megabytes, and all that is wanted is two numbers of one top-level
 *   member. Only the structure is followed (strings skipped with their
 *   escapes, brackets counted); nothing is built and nothing is allocated,
 *   so an answer of any depth costs no stack.
 * - Only a top-level "usage" counts: a "usage" key inside a message, a tool
 *   call's arguments or any nested object is content, not the bill. With
 *   duplicate "usage" members the last one wins, as jansson reads them;
 *   so does a count named twice in one usage object, even when the last
 *   value is not a count (then that count is absent).
 * - Keys are compared as they are written: a key spelled with escapes
 *   ("us\u0061ge") is not recognised. No API writes its usage that way, and
 *   missing a count only costs the header.
 * - The input may be anything (an upstream's answer, a disk record): every
 *   step checks the end of the buffer first, and text that is not a JSON
 *   object gives "no usage".
 */
#include "llmc/usage.h"

#include <stddef.h>
#include <string.h>

typedef struct cur {
    const char *p, *end;
} cur_t;

static void skip_ws(cur_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

/* A string at c->p: its raw bytes between the quotes into *s, *n; c->p
   past the closing quote. False when it does not end in the buffer. */
static bool take_string(cur_t *c, const char **s, size_t *n)
{
    if (c->p >= c->end || *c->p != '"')
        return false;
    const char *start = ++c->p;
    /* Most of a long answer is one string: find its quotes with memchr and
       count the backslashes before each (an odd number escapes it). */
    while (c->p < c->end) {
        const char *q = memchr(c->p, '"', (size_t)(c->end - c->p));
        if (!q)
            break;
        size_t bs = 0;
        while (q - bs > start && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        c->p = q + 1;
        if (bs % 2 == 0) {
            *s = start;
            *n = (size_t)(q - start);
            return true;
        }
    }
    c->p = c->end;
    return false;
}

/* Steps over one value: a string, an object or array (brackets counted,
   strings inside skipped), or a scalar (up to the next delimiter). */
static bool skip_value(cur_t *c)
{
    const char *s;
    size_t n;
    if (c->p >= c->end)
        return false;
    if (*c->p == '"')
        return take_string(c, &s, &n);
    if (*c->p == '{' || *c->p == '[') {
        size_t depth = 0;
        while (c->p < c->end) {
            char ch = *c->p;
            if (ch == '"') {
                if (!take_string(c, &s, &n))
                    return false;
                continue;
            }
            c->p++;
            if (ch == '{' || ch == '[')
                depth++;
            else if ((ch == '}' || ch == ']') && --depth == 0)
                return true;
        }
        return false;
    }
    const char *start = c->p;
    while (c->p < c->end && !strchr(",}] \t\r\n", *c->p))
        c->p++;
    return c->p > start;
}

/* A count: a plain non-negative integer below 2^32 (so 1.5, 1e3, -1 and
   "1" are not taken: *taken false). c->p moves past the value either way;
   false when there is none. */
static bool take_count(cur_t *c, uint32_t *out, bool *taken)
{
    const char *start = c->p;
    *taken = false;
    if (!skip_value(c))
        return false;
    size_t n = (size_t)(c->p - start);
    uint64_t v = 0;
    if (n > 10)
        return true;
    for (size_t i = 0; i < n; i++) {
        if (start[i] < '0' || start[i] > '9')
            return true;
        v = v * 10 + (uint64_t)(start[i] - '0');
    }
    if (v > UINT32_MAX)
        return true;
    *out = (uint32_t)v;
    *taken = true;
    return true;
}

static bool key_is(const char *k, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(k, want, n) == 0;
}

/*
 * Walks the members of the object at c->p. With u NULL (the top level) a
 * "usage" member that is an object is walked again with u set, and *found
 * says whether it held a count; with u set, the counts are read into it.
 * False when the text is not a well-formed object as far as it is followed.
 */
static bool walk_object(cur_t *c, llmc_usage_t *u, llmc_usage_t *last, bool *found)
{
    if (c->p >= c->end || *c->p != '{')
        return false;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        return true;
    }
    bool have_p = false, have_c = false; /* with u: the last value of each was a count */
    for (;;) {
        const char *k;
        size_t kn;
        skip_ws(c);
        if (!take_string(c, &k, &kn))
            return false;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':')
            return false;
        c->p++;
        skip_ws(c);
        bool ok;
        if (!u && key_is(k, kn, "usage") && c->p < c->end && *c->p == '{') {
            llmc_usage_t got = {0, 0};
            bool any = false;
            ok = walk_object(c, &got, NULL, &any);
            if (ok) {
                *last = got;
                *found = any;
            }
        } else if (!u && key_is(k, kn, "usage")) {
            *found = false; /* null or anything else: the last one says none */
            ok = skip_value(c);
        } else if (u && (key_is(k, kn, "prompt_tokens") || key_is(k, kn, "input_tokens"))) {
            ok = take_count(c, &u->prompt_tokens, &have_p);
            if (!have_p)
                u->prompt_tokens = 0;
        } else if (u && (key_is(k, kn, "completion_tokens") || key_is(k, kn, "output_tokens"))) {
            ok = take_count(c, &u->completion_tokens, &have_c);
            if (!have_c)
                u->completion_tokens = 0;
        } else {
            ok = skip_value(c);
        }
        if (!ok)
            return false;
        skip_ws(c);
        if (c->p >= c->end)
            return false;
        if (*c->p == '}') {
            c->p++;
            if (u)
                *found = have_p || have_c;
            return true;
        }
        if (*c->p != ',')
            return false;
        c->p++;
    }
}

bool llmc_usage_scan(const char *json, size_t len, llmc_usage_t *out)
{
    cur_t c = {json, json + len};
    llmc_usage_t last = {0, 0};
    bool found = false;
    if (!json)
        return false;
    skip_ws(&c);
    if (!walk_object(&c, NULL, &last, &found) || !found)
        return false;
    *out = last;
    return true;
}
