/*
 * core/jscan.c: counting a JSON text's values without parsing it.
 *
 * The scan knows three things about JSON, and they are enough for a text
 * that is valid: '{' and '[' each open one value; a string is a value
 * unless the next byte that is not white space is ':' (then it is a
 * member name); any other run of bytes outside strings that is not
 * punctuation or white space is one scalar (a number, true, false, null).
 * Strings are skipped with their escapes, so that a '"' or ':' inside one
 * counts for nothing.
 */
#include "llmc/jscan.h"

#include <stdbool.h>
#include <string.h>

static bool is_ws(unsigned char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static bool is_punct(unsigned char ch)
{
    return ch == '{' || ch == '}' || ch == '[' || ch == ']' || ch == ',' || ch == ':' ||
           ch == '"';
}

/* The index just past the string whose opening quote is at p[i]; len when
   it does not end. */
static size_t skip_string(const char *p, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        /* memchr-speed over long string runs: only '"' and '\\' matter. */
        const char *q = p + i;
        size_t left = len - i;
        const char *quote = memchr(q, '"', left);
        if (!quote)
            return len;
        const char *bs = memchr(q, '\\', (size_t)(quote - q));
        if (!bs)
            return (size_t)(quote - p) + 1;
        i = (size_t)(bs - p) + 1; /* the escaped byte; the loop steps past it */
    }
    return len;
}

size_t llmc_json_count_values(const char *p, size_t len, size_t limit)
{
    size_t n = 0, i = 0;
    while (i < len) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '{' || ch == '[') {
            n++;
            i++;
        } else if (ch == '"') {
            i = skip_string(p, len, i);
            size_t j = i;
            while (j < len && is_ws((unsigned char)p[j]))
                j++;
            if (j >= len || p[j] != ':')
                n++;
            i = j;
        } else if (is_ws(ch) || is_punct(ch)) {
            i++;
        } else {
            n++;
            while (i < len && !is_ws((unsigned char)p[i]) && !is_punct((unsigned char)p[i]))
                i++;
        }
        if (n > limit)
            return limit + 1;
    }
    return n;
}
