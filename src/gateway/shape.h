/*
 * gateway/shape.h: whether an upstream answer is the endpoint's answer, the
 * only kind the cache keeps. A pure function over a buffer, driven by one
 * table keyed by route (shape.c), so it is unit tested alone.
 *
 * An upstream can say 200 and mean something else: {"error": ...} (quotas,
 * moderation, a proxy in between), an object without the fields the
 * endpoint's answer always has, 201 or 204. Stored, such an answer would be
 * replayed to every later client as a HIT. Clients still get what the
 * upstream sent; the cache keeps only a 200 whose body has the shape.
 */
#ifndef LLMC_GW_SHAPE_H
#define LLMC_GW_SHAPE_H

#include <stddef.h>

typedef enum llmc_shape {
    LLMC_SHAPE_INVALID,    /* not a JSON object at all: the upstream failed (502) */
    LLMC_SHAPE_ANSWER,     /* a JSON object with the route's answer fields: may be stored */
    LLMC_SHAPE_NOT_ANSWER, /* a JSON object, but no answer (an "error" member, a field
                              missing or of the wrong type, a route with no shape) */
} llmc_shape_t;

/*
 * Parses body (len bytes, need not end in a NUL; "\u0000" is allowed) and
 * says what it is as the answer of route, a path such as
 * "/v1/chat/completions". Any thread: it reads only its arguments and a
 * static table.
 */
llmc_shape_t llmc_shape_check(const char *route, const char *body, size_t len);

#endif
