/*
 * sse.c: the server-sent events parser (llmc/sse.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The parser is stateless over the caller's buffer: each call parses one
 *   whole block from the start of buf and reports where it ended. No state
 *   means no state to get wrong when bytes arrive in odd splits; the price
 *   is re-scanning an unfinished block on every read, which max_event bounds.
 * - A CR as the last byte of buf is "need more", never a line end: if the
 *   next read starts with LF the two are one CRLF line end, and deciding
 *   early would turn "data: x\r" + "\n..." into a dispatched event. Only
 *   llmc_sse_next_eof, which knows no byte follows, treats it as a line end.
 * - E2BIG depends only on the block's length, never on where reads split:
 *   a finished block longer than max_event is refused as surely as an
 *   unfinished one that has already grown past it.
 * - Data-less blocks are returned too (data_lines == 0), so the caller's
 *   offset moves over keep-alive comments; WHATWG dispatches nothing for
 *   them and neither should the caller.
 */
#include <stdint.h>
#include <string.h>

#include "llmc/error.h"
#include "llmc/sse.h"

/*
 * Finds the end of the line that starts at from. Scans no further than lim
 * (<= len); looks at buf[q + 1] (below len) to pair CR with LF. Returns true
 * with the line [from, *q) and the next line's start in *next; false when no
 * line end is known yet.
 */
static bool line_end(const char *buf, size_t from, size_t lim, size_t len, bool eof, size_t *q,
                     size_t *next)
{
    size_t i = from;
    while (i < lim && buf[i] != '\n' && buf[i] != '\r')
        i++;
    if (i >= lim)
        return false;
    if (buf[i] == '\r') {
        if (i + 1 == len && !eof)
            return false; /* maybe the first half of a split CRLF */
        *next = (i + 1 < len && buf[i + 1] == '\n') ? i + 2 : i + 1;
    } else {
        *next = i + 1;
    }
    *q = i;
    return true;
}

/* Splits a field line into its name and value (one leading space dropped). */
static void field_split(const char *l, size_t n, const char **name, size_t *name_len,
                        const char **val, size_t *val_len)
{
    const char *colon = memchr(l, ':', n);
    *name = l;
    if (!colon) {
        *name_len = n;
        *val = l + n;
        *val_len = 0;
        return;
    }
    *name_len = (size_t)(colon - l);
    *val = colon + 1;
    *val_len = n - *name_len - 1;
    if (*val_len && **val == ' ') {
        (*val)++;
        (*val_len)--;
    }
}

static bool name_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(name, want, len) == 0;
}

static int parse(const char *buf, size_t len, size_t max_event, bool eof, llmc_sse_event_t *ev,
                 size_t *consumed)
{
    if ((!buf && len) || !ev || !consumed)
        return LLMC_EINVAL;
    memset(ev, 0, sizeof *ev);
    *consumed = 0;

    /* A block that fits max_event lies wholly below max_event, so the scan
     * never needs to look further than one byte past it. */
    size_t lim = len > max_event ? max_event + 1 : len;
    size_t p = 0, q, next;
    while (line_end(buf, p, lim, len, eof, &q, &next)) {
        if (q == p) { /* blank line: the block ends here */
            if (next > max_event)
                return LLMC_E2BIG;
            ev->raw = buf;
            ev->raw_len = next;
            *consumed = next;
            return 1;
        }
        if (buf[p] != ':') { /* a comment line has no field */
            const char *name, *val;
            size_t nlen, vlen;
            field_split(buf + p, q - p, &name, &nlen, &val, &vlen);
            if (name_is(name, nlen, "data")) {
                if (++ev->data_lines == 1) {
                    ev->data = val;
                    ev->data_len = vlen;
                } else {
                    ev->data = NULL;
                    ev->data_len += 1 + vlen;
                }
            } else if (name_is(name, nlen, "event")) {
                ev->event = val;
                ev->event_len = vlen;
            } else if (name_is(name, nlen, "id") && !memchr(val, '\0', vlen)) {
                /* WHATWG ignores an id holding NUL rather than truncating it. */
                ev->id = val;
                ev->id_len = vlen;
            }
        }
        p = next;
    }
    memset(ev, 0, sizeof *ev);
    return len > max_event ? LLMC_E2BIG : 0;
}

int llmc_sse_next(const char *buf, size_t len, size_t max_event, llmc_sse_event_t *ev,
                  size_t *consumed)
{
    return parse(buf, len, max_event, false, ev, consumed);
}

int llmc_sse_next_eof(const char *buf, size_t len, size_t max_event, llmc_sse_event_t *ev,
                      size_t *consumed)
{
    return parse(buf, len, max_event, true, ev, consumed);
}

size_t llmc_sse_event_data(const llmc_sse_event_t *ev, char *out, size_t cap)
{
    size_t w = 0;
    if (ev->data_lines == 1) {
        w = ev->data_len < cap ? ev->data_len : cap;
        if (w)
            memcpy(out, ev->data, w);
    } else if (ev->data_lines > 1) {
        /* The block is complete (it ends in its blank line), so every line
         * end inside it is final: scan it as if at the end of the stream. */
        size_t p = 0, q, next, seen = 0;
        while (line_end(ev->raw, p, ev->raw_len, ev->raw_len, true, &q, &next) && q > p) {
            const char *name, *val;
            size_t nlen, vlen;
            if (ev->raw[p] != ':') {
                field_split(ev->raw + p, q - p, &name, &nlen, &val, &vlen);
                if (name_is(name, nlen, "data")) {
                    if (seen++ && w < cap)
                        out[w++] = '\n';
                    size_t n = vlen < cap - w ? vlen : cap - w;
                    if (n)
                        memcpy(out + w, val, n);
                    w += n;
                }
            }
            p = next;
        }
    }
    if (w < cap)
        out[w] = '\0';
    return ev->data_len;
}
