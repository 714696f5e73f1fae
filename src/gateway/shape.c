/*
 * gateway/shape.c: the answer shape of each cached route (see shape.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A route missing from the table stores nothing: a new cacheable route
 *   must say here what its answer looks like, or it will never be a HIT.
 * - An object with a non-null "error" member is no answer even when it also
 *   carries the required fields: an OpenAI-style error body is never what a
 *   later client asked for.
 * - Only the presence and JSON type of the top-level fields are checked,
 *   never their contents: the check runs on every miss (and on the thread
 *   pool for big answers) and must not second-guess the model.
 */
#include "gateway/shape.h"

#include <string.h>

#include <jansson.h>

static const struct shape {
    const char *route;
    const char *field; /* a member the answer always has */
    json_type type;    /* and its type */
} shapes[] = {
    {"/v1/chat/completions", "choices", JSON_ARRAY},
    {"/v1/completions", "choices", JSON_ARRAY},
    {"/v1/embeddings", "data", JSON_ARRAY},
    {"/v1/responses", "output", JSON_ARRAY},
    {"/v1/messages", "content", JSON_ARRAY}, /* Anthropic's Message */
};

static const struct shape *find_shape(const char *route)
{
    for (size_t i = 0; route && i < sizeof(shapes) / sizeof(shapes[0]); i++)
        if (strcmp(shapes[i].route, route) == 0)
            return &shapes[i];
    return NULL;
}

llmc_shape_t llmc_shape_check(const char *route, const char *body, size_t len)
{
    json_t *root = body ? json_loadb(body, len, JSON_ALLOW_NUL, NULL) : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        return LLMC_SHAPE_INVALID;
    }
    const struct shape *s = find_shape(route);
    const json_t *err = json_object_get(root, "error");
    const json_t *field = s ? json_object_get(root, s->field) : NULL;
    llmc_shape_t out = s && (!err || json_is_null(err)) && field && json_typeof(field) == s->type
                           ? LLMC_SHAPE_ANSWER
                           : LLMC_SHAPE_NOT_ANSWER;
    json_decref(root);
    return out;
}
