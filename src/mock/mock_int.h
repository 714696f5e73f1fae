/*
 * mock/mock_int.h: the mock model's answers, built as pure functions of the
 * parsed request (no server, no clock: the time is an argument), so that unit
 * tests can check them without sockets. mock.c does the serving.
 */
#ifndef LLMC_MOCK_INT_H
#define LLMC_MOCK_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum llmc__mock_kind {
    LLMC_MOCK_CHAT, LLMC_MOCK_COMPLETIONS, LLMC_MOCK_EMBEDDINGS, LLMC_MOCK_MODELS,
    LLMC_MOCK_MODEL,              /* GET /v1/models/{id} */
    LLMC_MOCK_ECHO,               /* any method on /v1/echo...: served by mock.c alone */
    LLMC_MOCK_RESPONSES,          /* POST /v1/responses (mock_responses.c) */
    LLMC_MOCK_MESSAGES            /* POST /v1/messages: Anthropic (mock_anthropic.c) */
} llmc__mock_kind_t;

/* Answers by a question's meaning (mock_classes.c). */
typedef struct llmc__mock_classes llmc__mock_classes_t;

/* Reads the table at path ("QUESTION<TAB>ANSWER" lines): 0 and *out, or
   LLMC_EIO / LLMC_EINVAL / LLMC_ENOMEM with a message in err. */
int llmc__mock_classes_load(const char *path, llmc__mock_classes_t **out, char *err,
                            size_t errlen);
void llmc__mock_classes_free(llmc__mock_classes_t *t);
/* The answer the table gives the question q (len bytes), or NULL. */
const char *llmc__mock_class_answer(const llmc__mock_classes_t *t, const char *q, size_t len);
/* With a table, the mock also plays the semantic tier's judge model: a
   prompt "Answer A:\n<a>\n\nAnswer B:\n<b>" gets "YES" when a and b are
   the same text, else "NO". NULL for any other prompt, or without t. */
const char *llmc__mock_judge_verdict(const llmc__mock_classes_t *t, const char *p, size_t len);

typedef struct llmc__mock_ctx {
    const json_t *req;            /* the request body, a JSON object (NULL for GET) */
    const char *model_id;         /* LLMC_MOCK_MODEL: the {id} of the path */
    unsigned char digest[32];     /* llmc__mock_digest of req */
    int64_t now_s;                /* "created" */
    size_t pad_bytes;             /* mock.bytes: pad each answer text to about this */
    bool split_bytes;             /* mock.split = "bytes": cut the stream in small pieces */
    const llmc__mock_classes_t *classes; /* --classes: answers by meaning; NULL: none */
} llmc__mock_ctx_t;

typedef struct llmc__mock_out {
    char *body;                   /* JSON answer, or the whole SSE text; malloc'd */
    size_t len;
    size_t *cuts;                 /* stream only: end offset of each piece to send */
    size_t ncuts;
} llmc__mock_out_t;

/* SHA-256 of the request's compact, key-sorted JSON: every field counts, but
   whitespace and key order do not. 0 or LLMC_ENOMEM. */
int llmc__mock_digest(const json_t *req, unsigned char out[32]);

/* Builds the answer to a request of kind, any but LLMC_MOCK_RESPONSES
   (llmc__mock_responses, below: the Responses API lives in a file of its
   own that calls this one's helpers, so this one never calls it). stream
   asks for the SSE form (chat and completions only). Returns 0; LLMC_EINVAL with a message for the client
   in err when the request is unusable (a 400); LLMC_ENOENT with a message
   when the model asked for by id does not exist (a 404); LLMC_ENOMEM. On success the
   caller frees out with llmc__mock_out_free. */
int llmc__mock_answer(llmc__mock_kind_t kind, const llmc__mock_ctx_t *c, bool stream,
                      llmc__mock_out_t *out, char *err, size_t errlen);

void llmc__mock_out_free(llmc__mock_out_t *o);

/* An Anthropic Messages answer (mock_anthropic.c): the Message, or with
   stream its event stream; the same returns as llmc__mock_answer. */
int llmc__mock_messages_answer(const llmc__mock_ctx_t *c, bool stream, llmc__mock_out_t *out,
                               char *err, size_t errlen);

/* Words in s (runs of non-whitespace): the mock's token count. */
size_t llmc__mock_words(const char *s, size_t len);

/* The text of a message content (a string, or the text parts of an array,
   joined by spaces), malloc'd with its length in *len; NULL without memory. */
char *llmc__mock_content(const json_t *content, size_t *len);

/* The mock's answer text to prompt ("Mock <what> #<tag> to: <prompt>",
   padded to c->pad_bytes), malloc'd with its length in *len; NULL without
   memory. */
char *llmc__mock_reply(const llmc__mock_ctx_t *c, const char *what, const char *prompt,
                       size_t plen, size_t *len);

/* The Responses API (mock_responses.c): POST /v1/responses, plain or
   streamed as typed events; answers as llmc__mock_answer does. */
int llmc__mock_responses(const llmc__mock_ctx_t *c, bool stream, llmc__mock_out_t *out,
                         char *err, size_t errlen);

/* A JSON value that fits schema (a JSON Schema as tools and json_schema
   formats give them: type, properties, items, enum, anyOf, ...): strings
   are "mock <tag>" or the first enum value, numbers 1, booleans true,
   objects every property, arrays one item. A new reference; NULL without
   memory. Depth is bounded: past it, null. */
json_t *llmc__mock_schema_value(const json_t *schema, const char *tag);

#endif
