/*
 * fuzz_clients.c: libFuzzer driver for the --client-keys file parser and
 * its lookup (src/gateway/clients.c).
 *
 * Input: the text of a keys file (the seeds in corpus/clients/ are good
 * and bad ones).
 *
 * What it checks, beyond ASan and UBSan (LeakSanitizer included):
 * - parse answers 0, LLMC_EINVAL or LLMC_ENOMEM; an error leaves no table
 *   and its message is "line N: " and one of the parser's own reasons
 *   (never a byte of the input, which may hold keys), N within the file;
 * - on 0, every line that holds a key (its first word, once blank lines
 *   and '#' comments are skipped) is found by that word with its own line
 *   number, the table has exactly that many keys, a bound namespace is
 *   NUL-terminated within its bound, and each word with its last byte
 *   dropped is not found unless it is itself listed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/clients.h"
#include "llmc/error.h"

#include "fuzz_check.h"

static const char *const reasons[] = {
    "a NUL byte",
    "a key must be printable ASCII (a control or non-ASCII byte)",
    "a key must be 16 to 512 bytes long",
    "a control byte in an attribute",
    "an attribute must be name=value (namespace, refresh, ttl)",
    "namespace must be 1 to 127 bytes",
    "unknown attribute (namespace=NS, refresh=yes|no, ttl=yes|no)",
    "refresh and ttl take yes or no",
};

static void check_error(const char *err, unsigned nlines)
{
    unsigned line = 0;
    int used = 0;
    CHECK(sscanf(err, "line %u: %n", &line, &used) == 1 && used > 0);
    CHECK(line >= 1 && line <= nlines);
    const char *why = err + used;
    unsigned other = 0;
    if (sscanf(why, "the key of line %u again", &other) == 1) {
        CHECK(other < line);
        return;
    }
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (strcmp(why, reasons[i]) == 0)
            return;
    CHECK(!"an error message of the parser's own");
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    unsigned nlines = 1;
    for (size_t i = 0; i < size; i++)
        nlines += data[i] == '\n';
    llmc_clients_t *t = (llmc_clients_t *)1;
    char err[256] = "";
    int rc = llmc_clients_parse(text, size, &t, err, sizeof(err));
    CHECK(rc == 0 || rc == LLMC_EINVAL || rc == LLMC_ENOMEM);
    if (rc != 0) {
        CHECK(t == NULL);
        if (rc == LLMC_EINVAL)
            check_error(err, nlines);
        return 0;
    }
    size_t keys = 0;
    unsigned line = 0;
    for (size_t pos = 0; pos < size;) {
        const char *s = text + pos, *nl = memchr(s, '\n', size - pos);
        size_t n = nl ? (size_t)(nl - s) : size - pos, i = 0;
        pos += n + 1;
        line++;
        while (i < n && is_space(s[i]))
            i++;
        if (i == n || s[i] == '#')
            continue;
        size_t k0 = i;
        while (i < n && !is_space(s[i]))
            i++;
        const llmc_client_t *c = llmc_clients_find(t, s + k0, i - k0);
        CHECK(c != NULL);
        CHECK(c->line == line);
        CHECK(memchr(c->ns, '\0', sizeof(c->ns)) != NULL);
        const llmc_client_t *shorter = llmc_clients_find(t, s + k0, i - k0 - 1);
        CHECK(shorter == NULL || shorter != c);
        keys++;
    }
    CHECK(llmc_clients_count(t) == keys);
    llmc_clients_unref(t);
    return 0;
}
