/*
 * fuzz_sse.c: libFuzzer driver for the SSE parser, the assembler and replay
 * (src/core/sse.c, src/core/assemble.c).
 *
 * Input: two control bytes, then the stream. Byte 0 picks the event bound
 * (max_event) and the replay piece size; byte 1 seeds the read sizes.
 *
 * What it checks, beyond the sanitizers:
 * - The parser finds the same events (same bytes, same fields, same end,
 *   same E2BIG) when the stream arrives in reads of random sizes, each seen
 *   through a buffer of exactly the bytes so far, as when it is parsed whole.
 * - The assembler takes every event's data, and result() answers.
 * - When the assembled stream is complete, replaying it and assembling the
 *   replay gives back the same object (compared as JSON).
 *
 * Build and run (see fuzz/README-sse.md):
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *     -Iinclude -Isrc fuzz/fuzz_sse.c src/core/sse.c src/core/assemble.c \
 *     src/core/error.c $(pkg-config --cflags --libs jansson) -o build/fuzz_sse
 *   mkdir -p build/fuzz-corpus-sse
 *   build/fuzz_sse -max_total_time=60 -dict=fuzz/sse.dict \
 *     build/fuzz-corpus-sse fuzz/corpus/sse
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llmc/error.h"
#include "llmc/sse.h"

#include "fuzz_check.h"

/* What one event looked like, positions relative to the block start. */
typedef struct seen {
    size_t off, len, lines, data_len, event_off, event_len, id_off, id_len;
    char *data; /* joined, malloc'd */
} seen_t;

typedef struct evs {
    seen_t *v;
    size_t n, cap;
    size_t end; /* offset where parsing stopped */
    int last;   /* the answer that stopped it: 0 or LLMC_E2BIG */
} evs_t;

static size_t rel(const char *p, const char *base)
{
    return p ? (size_t)(p - base) + 1 : 0; /* 0 stands for NULL */
}

static void push(evs_t *e, const llmc_sse_event_t *ev, size_t off)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 16;
        e->v = realloc(e->v, e->cap * sizeof *e->v);
        CHECK(e->v);
    }
    seen_t *s = &e->v[e->n++];
    s->off = off;
    s->len = ev->raw_len;
    s->lines = ev->data_lines;
    s->data_len = ev->data_len;
    s->event_off = rel(ev->event, ev->raw);
    s->event_len = ev->event_len;
    s->id_off = rel(ev->id, ev->raw);
    s->id_len = ev->id_len;
    s->data = malloc(ev->data_len + 1);
    CHECK(s->data);
    CHECK(llmc_sse_event_data(ev, s->data, ev->data_len + 1) == ev->data_len);
    if (ev->data_lines == 1)
        CHECK(memcmp(s->data, ev->data, ev->data_len) == 0);
}

static void evs_free(evs_t *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i].data);
    free(e->v);
}

/* Parses from *off in buf (vis bytes); eof: no more bytes will come. False
 * once parsing has stopped for good (E2BIG). */
static int drain(const char *buf, size_t vis, bool eof, size_t max, size_t *off, evs_t *e)
{
    for (;;) {
        llmc_sse_event_t ev;
        size_t used;
        int rc = llmc_sse_next(buf + *off, vis - *off, max, &ev, &used);
        if (rc == 0 && eof)
            rc = llmc_sse_next_eof(buf + *off, vis - *off, max, &ev, &used);
        if (rc != 1) {
            CHECK(rc == 0 || rc == LLMC_E2BIG);
            CHECK(used == 0);
            return rc;
        }
        CHECK(ev.raw == buf + *off && used == ev.raw_len && used > 0 && used <= vis - *off);
        CHECK(used <= max);
        push(e, &ev, *off);
        *off += used;
    }
}

static void same(const evs_t *a, const evs_t *b)
{
    CHECK(a->n == b->n && a->end == b->end && a->last == b->last);
    for (size_t i = 0; i < a->n; i++) {
        const seen_t *x = &a->v[i], *y = &b->v[i];
        CHECK(x->off == y->off && x->len == y->len && x->lines == y->lines &&
              x->data_len == y->data_len && x->event_off == y->event_off &&
              x->event_len == y->event_len && x->id_off == y->id_off && x->id_len == y->id_len);
        CHECK(memcmp(x->data, y->data, x->data_len) == 0);
    }
}

/* Assembles the data events of e; returns the assembler. */
static llmc_sse_asm_t *assemble(const evs_t *e)
{
    llmc_sse_asm_t *a = llmc_sse_asm_new();
    CHECK(a);
    for (size_t i = 0; i < e->n; i++) {
        if (e->v[i].lines == 0)
            continue;
        int rc = llmc_sse_asm_add(a, e->v[i].data, e->v[i].data_len);
        CHECK(rc == 0 || rc == LLMC_EJSON || rc == LLMC_EUPSTREAM || rc == LLMC_EBADRESP);
    }
    return a;
}

/* Replays the complete assembled object x and checks it assembles back. */
static void round_trip(const char *x, size_t xlen, size_t piece)
{
    llmc_sse_replay_opts_t o = {.piece_bytes = piece, .include_usage = true};
    char *body = NULL;
    size_t blen;
    CHECK(llmc_sse_replay(x, xlen, &o, &body, &blen) == 0);
    evs_t e = {0};
    size_t off = 0;
    e.last = drain(body, blen, true, SIZE_MAX, &off, &e);
    CHECK(e.last == 0 && off == blen);
    llmc_sse_asm_t *a = assemble(&e);
    CHECK(llmc_sse_asm_complete(a));
    char *y;
    size_t ylen;
    CHECK(llmc_sse_asm_result(a, &y, &ylen) == 0);
    json_t *jx = json_loadb(x, xlen, JSON_ALLOW_NUL, NULL), *jy = json_loadb(y, ylen, JSON_ALLOW_NUL, NULL);
    CHECK(jx && jy);
    if (!json_equal(jx, jy)) {
        fprintf(stderr, "round trip differs:\n x %s\n y %s\n", x, y);
        abort();
    }
    json_decref(jx);
    json_decref(jy);
    free(y);
    llmc_sse_asm_free(a);
    evs_free(&e);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max = (data[0] & 0x80) ? 16 + (size_t)(data[0] & 0x7f) * 4 : SIZE_MAX;
    size_t piece = 1 + (data[0] & 0x1f);
    uint32_t rng = data[1] * 2654435761u + 1;
    const char *s = (const char *)data + 2;
    size_t len = size - 2;

    evs_t whole = {0};
    whole.last = drain(s, len, true, max, &whole.end, &whole);

    /* The same bytes in reads of 1 to 32 bytes (sometimes 0: a read that
     * brings nothing must change nothing). */
    evs_t split = {0};
    size_t vis = 0;
    for (;;) {
        rng = rng * 1103515245u + 12345u;
        size_t step = (rng >> 16) % 33;
        vis = step > len - vis ? len : vis + step;
        char *buf = malloc(vis ? vis : 1);
        CHECK(buf);
        memcpy(buf, s, vis);
        split.last = drain(buf, vis, vis == len, max, &split.end, &split);
        free(buf);
        if (split.last || vis == len)
            break;
    }
    same(&split, &whole);

    llmc_sse_asm_t *a = assemble(&whole);
    char *x = NULL;
    size_t xlen;
    int rc = llmc_sse_asm_result(a, &x, &xlen);
    CHECK(rc == 0 || rc == LLMC_EJSON || rc == LLMC_EUPSTREAM || rc == LLMC_EBADRESP);
    if (rc == 0 && llmc_sse_asm_complete(a))
        round_trip(x, xlen, piece);
    free(x);
    llmc_sse_asm_free(a);
    evs_free(&split);
    evs_free(&whole);
    return 0;
}
