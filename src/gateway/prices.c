/*
 * prices.c: the --prices file (gateway/prices.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A price is read digit by digit into micro-units (six decimals): "0.15"
 *   is 150000, exactly, where strtod would give 0.1499999... and the sums
 *   of a long run would show it.
 * - A bad line stops start-up with its number: a price file with a typo
 *   that silently priced a model at 0 would under-report every saving.
 * - Lookup is a scan: a price file has tens of lines, and the gateway
 *   looks a model up once, when it first counts it (stats.c keeps the
 *   row beside the model's counters), not on every hit.
 */
#include "gateway/prices.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llmc/error.h"
#include "prices_default_txt.h" /* generated: llmc_prices_default_txt[] */

void llmc_prices_free(llmc_prices_t *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->rows[i].model);
    free(p->rows);
    free(p->source);
    free(p);
}

/* A decimal number of at most six decimals, s[0, n), into micro-units. */
static bool parse_price(const char *s, size_t n, uint64_t *out)
{
    uint64_t whole = 0, frac = 0;
    size_t i = 0, ndig = 0, nfrac = 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, ndig++) {
        whole = whole * 10 + (uint64_t)(s[i] - '0');
        if (whole > LLMC_PRICE_MAX_PER_M)
            return false;
    }
    if (i < n && s[i] == '.') {
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, nfrac++) {
            if (nfrac == 6)
                return false;
            frac = frac * 10 + (uint64_t)(s[i] - '0');
        }
    }
    if (i != n || ndig + nfrac == 0)
        return false;
    for (; nfrac < 6; nfrac++)
        frac *= 10;
    *out = whole * 1000000 + frac;
    return *out <= (uint64_t)LLMC_PRICE_MAX_PER_M * 1000000;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Splits line[0, n) into at most max fields separated by blanks. */
static size_t fields(const char *line, size_t n, const char **f, size_t *flen, size_t max)
{
    size_t k = 0, i = 0;
    while (i < n) {
        while (i < n && is_space(line[i]))
            i++;
        if (i == n)
            break;
        size_t start = i;
        while (i < n && !is_space(line[i]))
            i++;
        if (k < max) {
            f[k] = line + start;
            flen[k] = i - start;
        }
        k++;
    }
    return k;
}

static int add_row(llmc_prices_t *p, size_t *cap, const char *name, size_t nlen, bool prefix,
                   uint64_t in, uint64_t out)
{
    if (p->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        llmc_price_t *r = realloc(p->rows, nc * sizeof(*r));
        if (!r)
            return LLMC_ENOMEM;
        p->rows = r;
        *cap = nc;
    }
    char *m = strndup(name, nlen);
    if (!m)
        return LLMC_ENOMEM;
    p->rows[p->n++] = (llmc_price_t){m, prefix, in, out};
    return 0;
}

static bool named_before(const llmc_prices_t *p, const char *name, size_t nlen, bool prefix)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->rows[i].prefix == prefix && strlen(p->rows[i].model) == nlen &&
            memcmp(p->rows[i].model, name, nlen) == 0)
            return true;
    return false;
}

/* A comment "# prices as of YYYY-MM-DD": the table's date, the first one
   given. */
static void as_of_line(llmc_prices_t *p, const char *line, size_t n)
{
    static const char tag[] = "prices as of ";
    size_t i = 0, tl = sizeof(tag) - 1;
    if (p->as_of[0])
        return;
    while (i < n && (is_space(line[i]) || line[i] == '#'))
        i++;
    if (n - i < tl + 10 || strncasecmp(line + i, tag, tl) != 0)
        return;
    const char *d = line + i + tl;
    for (int k = 0; k < 10; k++) {
        bool dash = k == 4 || k == 7;
        if (dash ? d[k] != '-' : !(d[k] >= '0' && d[k] <= '9'))
            return;
    }
    memcpy(p->as_of, d, 10);
    p->as_of[10] = '\0';
}

/* One line (without its newline): blank, a comment, or a row. */
static int parse_line(llmc_prices_t *p, size_t *cap, const char *line, size_t n, unsigned lineno,
                      char *err, size_t errlen)
{
    const char *f[3];
    size_t flen[3];
    size_t k = fields(line, n, f, flen, 3);
    if (k == 0)
        return 0;
    if (f[0][0] == '#') {
        as_of_line(p, line, n);
        return 0;
    }
    if (k != 3) {
        snprintf(err, errlen, "line %u: want 'model input_per_1M output_per_1M', got %zu field%s",
                 lineno, k, k == 1 ? "" : "s");
        return LLMC_EINVAL;
    }
    bool prefix = f[0][flen[0] - 1] == '*';
    size_t nlen = flen[0] - (prefix ? 1 : 0);
    if (nlen > LLMC_PRICE_MODEL_MAX || memchr(f[0], '*', nlen)) {
        snprintf(err, errlen, "line %u: a model name is at most %d bytes, with '*' only at its end",
                 lineno, LLMC_PRICE_MODEL_MAX);
        return LLMC_EINVAL;
    }
    uint64_t in, out;
    for (int i = 1; i <= 2; i++) {
        if (!parse_price(f[i], flen[i], i == 1 ? &in : &out)) {
            snprintf(err, errlen,
                     "line %u: the %s price '%.*s' is not a number from 0 to %d with at most six "
                     "decimals", lineno, i == 1 ? "input" : "output", (int)(flen[i] > 40 ? 40 : flen[i]),
                     f[i], LLMC_PRICE_MAX_PER_M);
            return LLMC_EINVAL;
        }
    }
    if (named_before(p, f[0], nlen, prefix)) {
        snprintf(err, errlen, "line %u: '%.*s' is priced twice", lineno, (int)flen[0], f[0]);
        return LLMC_EINVAL;
    }
    return add_row(p, cap, f[0], nlen, prefix, in, out);
}

int llmc_prices_parse(const char *text, size_t len, llmc_prices_t **out, char *err,
                      size_t errlen)
{
    llmc_prices_t *p = calloc(1, sizeof(*p));
    if (!p)
        return LLMC_ENOMEM;
    size_t cap = 0;
    unsigned lineno = 0;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (text + i)) : len - i;
        lineno++;
        if (memchr(text + i, '\0', n)) {
            snprintf(err, errlen, "line %u: a NUL byte", lineno);
            llmc_prices_free(p);
            return LLMC_EINVAL;
        }
        int rc = parse_line(p, &cap, text + i, n, lineno, err, errlen);
        if (rc < 0) {
            if (rc == LLMC_ENOMEM)
                snprintf(err, errlen, "out of memory");
            llmc_prices_free(p);
            return rc;
        }
        i += n + 1;
    }
    *out = p;
    return 0;
}

int llmc_prices_load(const char *path, llmc_prices_t **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return LLMC_EIO;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            /* A price file is small; a huge one is a mistake, not a table. */
            if (cap >= (1u << 24)) {
                snprintf(err, errlen, "%s: larger than 16 MiB", path);
                goto fail;
            }
            cap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, cap);
            if (!nb) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    char lerr[256];
    int rc = llmc_prices_parse(buf, len, out, lerr, sizeof(lerr));
    free(buf);
    if (rc < 0)
        snprintf(err, errlen, "%s: %s", path, lerr);
    else if (!((*out)->source = strdup(path))) {
        llmc_prices_free(*out);
        *out = NULL;
        snprintf(err, errlen, "out of memory");
        rc = LLMC_ENOMEM;
    }
    return rc;
fail:
    fclose(f);
    free(buf);
    return LLMC_EIO;
}

int llmc_prices_builtin(llmc_prices_t **out, char *err, size_t errlen)
{
    char lerr[256];
    int rc = llmc_prices_parse((const char *)llmc_prices_default_txt,
                               sizeof(llmc_prices_default_txt), out, lerr, sizeof(lerr));
    if (rc < 0) {
        snprintf(err, errlen, "the built-in table: %s", lerr);
        return rc;
    }
    if (!((*out)->source = strdup(LLMC_PRICES_BUILTIN))) {
        llmc_prices_free(*out);
        *out = NULL;
        snprintf(err, errlen, "out of memory");
        return LLMC_ENOMEM;
    }
    return 0;
}

const llmc_price_t *llmc_prices_find(const llmc_prices_t *p, const char *model)
{
    if (!p || !model)
        return NULL;
    const llmc_price_t *best = NULL;
    size_t best_len = 0, mlen = strlen(model);
    for (size_t i = 0; i < p->n; i++) {
        const llmc_price_t *r = &p->rows[i];
        size_t rl = strlen(r->model);
        if (!r->prefix && rl == mlen && memcmp(r->model, model, mlen) == 0)
            return r;
        if (r->prefix && rl <= mlen && memcmp(r->model, model, rl) == 0 &&
            (!best || rl > best_len)) {
            best = r;
            best_len = rl;
        }
    }
    return best;
}

/* a * b, saturating. */
static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

uint64_t llmc_price_cost(const llmc_price_t *r, uint64_t prompt_tokens,
                         uint64_t completion_tokens)
{
    uint64_t a = mul_sat(r->in_pico, prompt_tokens), b = mul_sat(r->out_pico, completion_tokens);
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}
