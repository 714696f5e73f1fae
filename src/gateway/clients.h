/*
 * gateway/clients.h: the client keys file (--client-keys): which keys may
 * use the gateway, and what each may do.
 *
 * The file has one key per line, then optional attributes, then an
 * optional comment:
 *
 *   # the support bot: its own namespace, may not refresh or set TTLs
 *   sk-support-7Hq2...   namespace=support
 *   sk-batch-x91K...     refresh=yes ttl=yes   # nightly re-warm job
 *
 *   namespace=NS   the key's entries live in namespace NS, apart from every
 *                  other key's; an X-Cache-Namespace (or body "cache"
 *                  namespace) naming another gets 403. Default: none, the
 *                  namespace the request names, as without keys.
 *   refresh=yes    Cache-Control: no-cache / max-age=0 / min-fresh and
 *                  Pragma: no-cache may replace a stored answer. Default no:
 *                  such a request is served from the cache like any other.
 *   ttl=yes        X-Cache-TTL (or body "cache" ttl) is honoured. Default
 *                  no: the answer gets --ttl.
 *
 * Blank lines and lines starting with '#' are skipped; '#' after
 * whitespace starts a comment. A key is 16 to 512 printable ASCII bytes
 * without '#' at its start. A line that says anything else (an unknown
 * attribute, a value other than yes/no, a repeated key) makes the whole
 * file invalid, with its line number in the message: a half-read file
 * would lock out or let in the wrong people.
 *
 * Only each key's SHA-256 is kept. A lookup hashes the credential, finds
 * the candidate by binary search over the hashes, and compares with
 * CRYPTO_memcmp: how long it takes says nothing about the keys (the
 * search walks hashes, whose order an attacker cannot steer towards a
 * key). Nothing here logs or prints a key.
 *
 * A table is immutable once built and reference counted: a SIGHUP builds
 * a new one, each worker swaps to it at its next request, and the old one
 * is freed when its last holder (a worker, or a request still running)
 * lets go. Pure: no I/O but llmc_clients_load's read of the file.
 */
#ifndef LLMC_GW_CLIENTS_H
#define LLMC_GW_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/policy.h"

#define LLMC_CLIENT_KEY_MIN 16        /* bytes: shorter keys are guessable */
#define LLMC_CLIENT_KEY_MAX 512
#define LLMC_CLIENT_NS_MAX 127        /* bytes of a bound namespace (policy.h's ns) */
#define LLMC_CLIENTS_FILE_MAX (4u << 20) /* a bigger file is refused, not read */

typedef struct llmc_client {
    uint8_t hash[32];                 /* SHA-256 of the key */
    char ns[LLMC_CLIENT_NS_MAX + 1];  /* the bound namespace; "" when not bound */
    bool refresh;                     /* may refresh stored answers */
    bool ttl;                         /* may choose the TTL */
    unsigned line;                    /* where it was in the file (messages) */
} llmc_client_t;

typedef struct llmc_clients llmc_clients_t;

/*
 * Builds a table from the text of a keys file (text[0..len), no NUL
 * needed). 0 with *out (one reference, the caller's), LLMC_EINVAL with
 * "line N: why" in err, or LLMC_ENOMEM. An empty file is a valid table
 * with no key: every request is refused. Any thread.
 */
int llmc_clients_parse(const char *text, size_t len, llmc_clients_t **out, char *err,
                       size_t errlen);

/* Reads and parses the file at path: as llmc_clients_parse, and LLMC_EIO
   when it cannot be read (err says why, with the path). Blocks. */
int llmc_clients_load(const char *path, llmc_clients_t **out, char *err, size_t errlen);

/* The entry for credential cred[0..len), or NULL when it is not listed.
   The pointer lives as long as the caller's reference to t. Any thread. */
const llmc_client_t *llmc_clients_find(const llmc_clients_t *t, const char *cred, size_t len);

/* How many keys t lists. */
size_t llmc_clients_count(const llmc_clients_t *t);

/* Reference counting; any thread. unref of NULL does nothing; the last
   unref frees the table. */
llmc_clients_t *llmc_clients_ref(llmc_clients_t *t);
void llmc_clients_unref(llmc_clients_t *t);

/* What llmc_clients_apply overrode, for the X-Cache-Denied header. */
#define LLMC_CLIENT_DENIED_REFRESH 1u   /* a refresh from a key without refresh=yes */
#define LLMC_CLIENT_DENIED_TTL 2u       /* a TTL from a key without ttl=yes */

/*
 * Holds the request's policy p (as parsed from its headers and body) to
 * what key c may do: its bound namespace (a request that names another is
 * LLMC_EINVAL, with a message for a 403 in err; one that names none gets
 * the key's); without refresh, a request that would skip a stored answer
 * and store its own (no-cache, Pragma: no-cache, max-age, min-fresh) is
 * read like any other; without ttl, a TTL it asked for is replaced by
 * default_ttl_ms (--ttl within --max-ttl). A request that stores nothing
 * (no-store, a TTL of 0) harms nobody's cache and is left alone. Sets
 * *denied to the LLMC_CLIENT_DENIED_* bits of what was overridden.
 */
int llmc_clients_apply(const llmc_client_t *c, llmc_policy_t *p, int64_t default_ttl_ms,
                       unsigned *denied, char *err, size_t errlen);

/*
 * The key a request presents: the token of "Authorization: Bearer TOKEN"
 * (auth, may be NULL), else the value of x-api-key (may be NULL; what the
 * Anthropic SDKs send). Sets *len; NULL when neither is there.
 */
const char *llmc_clients_credential(const char *auth, const char *x_api_key, size_t *len);

#endif
