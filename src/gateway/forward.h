/*
 * gateway/forward.h: which client headers go upstream with a call.
 *
 * Rule: a client header that reaches the upstream is part of the cache key
 * and of the flight's identity, so an answer (or an error) made under one
 * client's header is never handed to a client who sent another. The lines
 * this module makes are both what the call carries and what the key hashes
 * (handler.c folds them into the key's scope slot), so the two cannot drift.
 *
 * Which headers:
 * - the client's own credential goes upstream (per-key or shared scope
 *   without --upstream key): OpenAI-Organization, OpenAI-Project and
 *   OpenAI-Beta (they mean something to an OpenAI-style API and the client
 *   pays for them), plus every --forward-header name;
 * - the gateway holds the upstream key: only the --forward-header names. A
 *   client must not pick which organisation the operator's key bills.
 * Accept is never forwarded unless listed: the gateway decides the form of
 * the answer itself (JSON, or SSE when the body asks for a stream).
 * Credentials, framing and hop-by-hop headers cannot be listed.
 */
#ifndef LLMC_GW_FORWARD_H
#define LLMC_GW_FORWARD_H

#include <stdbool.h>
#include <stddef.h>

#include "http/http.h"

/* Most names forwarded (the defaults and --forward-header together). */
#define LLMC_FWD_MAX 8
/* Longest name taken, and longest value forwarded: a longer value is not
   forwarded (nor keyed), as before this module. */
#define LLMC_FWD_NAME_MAX 63
#define LLMC_FWD_VALUE_MAX 399
/* Room for every line llmc_forward_lines can write. */
#define LLMC_FWD_BYTES (LLMC_FWD_MAX * (LLMC_FWD_NAME_MAX + LLMC_FWD_VALUE_MAX + 4) + 1)

typedef struct llmc_forward {
    unsigned n;
    char names[LLMC_FWD_MAX][LLMC_FWD_NAME_MAX + 1];   /* as written upstream */
    char lower[LLMC_FWD_MAX][LLMC_FWD_NAME_MAX + 1];   /* as the request is searched */
    /* ", Name" for each: what a cached answer's Vary adds, since these
       headers chose it as much as the body did. */
    char vary[LLMC_FWD_MAX * (LLMC_FWD_NAME_MAX + 2) + 1];
} llmc_forward_t;

/* Fills fw from list (the --forward-header value: names separated by
   commas, "" for none) and whether the gateway holds the upstream key.
   0, or LLMC_EINVAL with a message in err for a name that is not an HTTP
   token, one that may not be forwarded (Authorization, Host, Cookie,
   framing and hop-by-hop headers, X-Cache-*), or too many. Start-up. */
int llmc_forward_init(llmc_forward_t *fw, const char *list, bool gateway_key, char *err,
                      size_t errlen);

/* The headers of req that go upstream, as "Name: value\r\n" lines in fw's
   order (the first of a repeated header; a value longer than
   LLMC_FWD_VALUE_MAX is left out) into buf (cap bytes, at least
   LLMC_FWD_BYTES: then nothing is cut), NUL-terminated. Returns the length
   without the NUL; 0 when none is forwarded. Any thread. */
size_t llmc_forward_lines(const llmc_forward_t *fw, const llmc_http_req_t *req, char *buf,
                          size_t cap);

#endif
