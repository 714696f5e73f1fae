/*
 * mock/mock_classes.c: a mock model whose answers depend on what a question
 * means, not on its bytes (issue 16's tests): a table, read from a file
 * given with `llmcached mock --classes FILE`, maps questions to answers.
 * Near-duplicates a test lists with one answer get that same answer; hard
 * negatives listed with another get the other, whatever the gateway's
 * similarity says. A question not in the table gets the usual echo.
 *
 * The file: one question a line, "QUESTION<TAB>ANSWER"; blank lines and
 * lines starting with '#' are skipped. Questions are matched exactly (the
 * last user message's text, or a completion's prompt).
 *
 * With a table the mock also plays the judge model of --semantic-judge
 * model (semantic/judge.h's prompt shape): the two answers it is shown are
 * the same when their texts are, which is what the table makes them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "mock/mock_int.h"

/* Longest line taken; a longer one is refused (the file is a test's). */
#define CLASS_LINE_MAX 8192

typedef struct row {
    char *q, *a;
    size_t qlen;
} row_t;

struct llmc__mock_classes {
    row_t *v;
    size_t n, cap;
    /* A hash table of row indexes + 1 by question (0: empty), at most half full. */
    size_t *slots, nslots;
};

static size_t q_hash(const char *q, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)q[i]) * 0x100000001b3ull;
    return (size_t)h;
}

void llmc__mock_classes_free(llmc__mock_classes_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].q); /* a holds its answer in the same block */
    free(t->v);
    free(t->slots);
    free(t);
}

static int add_row(llmc__mock_classes_t *t, const char *line, size_t len)
{
    const char *tab = memchr(line, '\t', len);
    if (!tab)
        return LLMC_EINVAL;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        row_t *v = realloc(t->v, cap * sizeof(*v));
        if (!v)
            return LLMC_ENOMEM;
        t->v = v;
        t->cap = cap;
    }
    char *q = malloc(len + 1);
    if (!q)
        return LLMC_ENOMEM;
    memcpy(q, line, len);
    q[len] = '\0';
    size_t qlen = (size_t)(tab - line);
    q[qlen] = '\0';
    t->v[t->n++] = (row_t){.q = q, .a = q + qlen + 1, .qlen = qlen};
    return 0;
}

static int index_rows(llmc__mock_classes_t *t)
{
    t->nslots = 16;
    while (t->nslots < 2 * t->n)
        t->nslots *= 2;
    if (!(t->slots = calloc(t->nslots, sizeof(*t->slots))))
        return LLMC_ENOMEM;
    for (size_t r = 0; r < t->n; r++) {
        size_t i = q_hash(t->v[r].q, t->v[r].qlen) & (t->nslots - 1);
        while (t->slots[i])
            i = (i + 1) & (t->nslots - 1);
        t->slots[i] = r + 1; /* a repeated question: the first row wins at lookup */
    }
    return 0;
}

int llmc__mock_classes_load(const char *path, llmc__mock_classes_t **out, char *err,
                            size_t errlen)
{
    FILE *f = fopen(path, "r");
    llmc__mock_classes_t *t = calloc(1, sizeof(*t));
    char *line = malloc(CLASS_LINE_MAX + 2);
    int rc = 0;
    unsigned lineno = 0;

    if (!f || !t || !line) {
        snprintf(err, errlen, "cannot read the class table %s", path);
        rc = f ? LLMC_ENOMEM : LLMC_EIO;
    }
    while (rc == 0 && fgets(line, CLASS_LINE_MAX + 2, f)) {
        size_t len = strlen(line);
        lineno++;
        if (len > CLASS_LINE_MAX) {
            snprintf(err, errlen, "%s:%u: a line over %u bytes", path, lineno, CLASS_LINE_MAX);
            rc = LLMC_EINVAL;
            break;
        }
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        if ((rc = add_row(t, line, len)) == LLMC_EINVAL)
            snprintf(err, errlen, "%s:%u: not QUESTION<TAB>ANSWER", path, lineno);
    }
    if (rc == 0 && (rc = index_rows(t)) < 0)
        snprintf(err, errlen, "out of memory");
    if (f)
        fclose(f);
    free(line);
    if (rc < 0) {
        llmc__mock_classes_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

const char *llmc__mock_judge_verdict(const llmc__mock_classes_t *t, const char *p, size_t len)
{
    static const char head[] = "Answer A:\n", mid[] = "\n\nAnswer B:\n";
    if (!t || len < sizeof(head) - 1 || memcmp(p, head, sizeof(head) - 1) != 0)
        return NULL;
    const char *a = p + sizeof(head) - 1, *end = p + len;
    const char *m = memmem(a, (size_t)(end - a), mid, sizeof(mid) - 1);
    if (!m)
        return NULL;
    const char *b = m + sizeof(mid) - 1;
    size_t alen = (size_t)(m - a), blen = (size_t)(end - b);
    return alen == blen && memcmp(a, b, alen) == 0 ? "YES" : "NO";
}

const char *llmc__mock_class_answer(const llmc__mock_classes_t *t, const char *q, size_t len)
{
    if (!t || !t->nslots)
        return NULL;
    for (size_t i = q_hash(q, len) & (t->nslots - 1); t->slots[i]; i = (i + 1) & (t->nslots - 1)) {
        const row_t *r = &t->v[t->slots[i] - 1];
        if (r->qlen == len && memcmp(r->q, q, len) == 0)
            return r->a;
    }
    return NULL;
}
