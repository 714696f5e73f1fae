/*
 * gateway/policy.h: what a request allows the cache to do, in one struct.
 *
 * Everything a client can say about caching arrives in one of four forms:
 * the Cache-Control request header (RFC 9111), Pragma: no-cache, our own
 * X-Cache-TTL / X-Cache-Namespace headers, and the JSON body extension
 * "cache": {...} that LiteLLM users already send. They are all folded into
 * llmc_policy_t here, so the rest of the gateway asks one question
 * ("may I read? may I write? how stale?") instead of four.
 */
#ifndef LLMC_GW_POLICY_H
#define LLMC_GW_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "http/http.h"
#include "llmc/entry.h"

#define LLMC_POLICY_UNSET (-1)
#define LLMC_POLICY_MAX_TAGS 16        /* tags an answer may carry */
#define LLMC_POLICY_TAG_MAX 64         /* bytes of one tag */
#define LLMC_POLICY_TAGS_BYTES 512     /* all of them, each with its NUL */

typedef struct llmc_policy {
    bool read;              /* may answer from the cache (false: no-cache, no-store) */
    bool write;             /* may store the answer (false: no-store) */
    bool only_if_cached;    /* never call the upstream: 504 when nothing usable */
    int64_t max_age_ms;     /* accept entries at most this old; UNSET = any */
    int64_t min_fresh_ms;   /* require this much freshness left; 0 = none */
    int64_t max_stale_ms;   /* accept this far past expiry; 0 = none, INT64_MAX = any */
    int64_t ttl_ms;         /* lifetime for a stored answer */
    char ns[128];           /* namespace, "" for none */
    char tags[LLMC_POLICY_TAGS_BYTES]; /* ntags NUL-terminated tags, back to back */
    unsigned ntags;
    bool semantic;          /* may be answered with a similar question's answer */
    float semantic_threshold; /* the similarity such an answer needs; 0: the gateway's */
} llmc_policy_t;

/*
 * Fills *p from the request's headers (each may be NULL) and the body's
 * "cache" object (may be NULL). default_ttl_ms applies when nothing sets a
 * TTL; any TTL is clamped to max_ttl_ms. Returns 0, or LLMC_EINVAL with a
 * message for the client in err (a bad X-Cache-TTL, a "cache" field of the
 * wrong type, an over-long namespace).
 */
int llmc_policy_parse(llmc_policy_t *p, const char *cache_control, const char *pragma,
                      const char *ttl_hdr, const char *ns_hdr, const json_t *cache_ext,
                      int64_t default_ttl_ms, int64_t max_ttl_ms, char *err, size_t errlen);

/*
 * Sets whether an answer to a similar question may be served (the semantic
 * tier, when the gateway has one): the body's "cache": {"semantic": bool}
 * when it has one, else X-Cache-Semantic: on|off (any case; sem_hdr may be
 * NULL), else yes; and how similar it must be: X-Cache-Semantic-Threshold,
 * a number in (0, 1] (thr_hdr may be NULL: the gateway's threshold).
 * Returns 0, or LLMC_EINVAL with a message for the client in err. Call
 * after llmc_policy_parse.
 */
int llmc_policy_parse_semantic(llmc_policy_t *p, const char *sem_hdr, const char *thr_hdr,
                               const json_t *cache_ext, char *err, size_t errlen);

/*
 * Sets p's tags, which a stored answer carries for purges to select: from
 * the body's "cache": {"tags": [...]} when it has them, else from the
 * X-Cache-Tags header (tags_hdr, may be NULL: "a, b"; empty items are
 * skipped). A tag is 1 to LLMC_POLICY_TAG_MAX bytes without control bytes
 * or commas, spaces around it trimmed; a repeated tag is kept once; at
 * most LLMC_POLICY_MAX_TAGS. Returns 0, or LLMC_EINVAL with a message for
 * the client in err. Call after llmc_policy_parse (which clears them).
 */
int llmc_policy_parse_tags(llmc_policy_t *p, const char *tags_hdr, const json_t *cache_ext,
                           char *err, size_t errlen);

/* Whether an entry may answer a request with policy p at now_ms. */
typedef enum llmc_use { LLMC_USE_NO, LLMC_USE_FRESH, LLMC_USE_STALE } llmc_use_t;
llmc_use_t llmc_policy_usable(const llmc_policy_t *p, const llmc_entry_t *e, int64_t now_ms);

/* True when an If-None-Match value (may be NULL) names etag (a quoted
   strong tag) or is "*"; weak tags compare as strong ones (RFC 9110 13.1.2). */
bool llmc_policy_etag_matches(const char *if_none_match, const char *etag);

/* True when a request body with this Content-Type may be read as JSON:
   none (NULL or blank) or application/json, in any case, with any
   parameters ("application/json; charset=utf-8"). Anything else, the
   types a browser sends cross-site without a preflight (text/plain, forms)
   included, is false: the route answers 415. */
bool llmc_policy_json_content_type(const char *content_type);

/*
 * The value of a list-valued request header (Cache-Control, Pragma,
 * If-None-Match): the server keeps each line, but several lines mean their
 * values joined with ", " (RFC 9110 5.3). Returns the only line's value as
 * is, the join in a malloc'd *owned (free it) when there are several, or
 * NULL when there is none.
 */
const char *llmc_policy_list_header(const llmc_http_req_t *req, const char *name, char **owned);

#endif
