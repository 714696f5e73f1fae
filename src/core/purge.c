/*
 * purge.c: which entries a purge selector picks (llmc_purge_match in
 * llmc/tier.h), and copies of selectors.
 *
 * Every tier applies the same predicate, so that a purge removes the same
 * answers from memory, disk and any later tier. Namespace, model, route
 * and tag compare whole strings, byte for byte: "gpt-4o" does not select
 * "gpt-4o-mini". A selector is a conjunction; one with no condition
 * selects nothing unless it says all, and a condition that needs a value
 * but has none selects nothing, so a malformed admin request can never
 * turn into "purge everything".
 */
#include <stdlib.h>
#include <string.h>

#include "llmc/tier.h"

static bool has_tag(const llmc_entry_t *e, const char *tag)
{
    const char *t = llmc_entry_tag(e, 0);
    for (uint32_t i = 0; i < e->ntags; i++, t += strlen(t) + 1)
        if (strcmp(t, tag) == 0)
            return true;
    return false;
}

/* The first n hex digits of a key, compared as nibbles. */
static bool prefix_matches(const llmc_key_t *prefix, unsigned digits, const llmc_key_t *key)
{
    unsigned whole = digits / 2;
    if (digits == 0 || digits > 2 * LLMC_KEY_LEN || memcmp(prefix->b, key->b, whole) != 0)
        return false;
    return digits % 2 == 0 || (prefix->b[whole] & 0xf0) == (key->b[whole] & 0xf0);
}

static bool str_is(const char *want, const char *have)
{
    return want && strcmp(want, have) == 0;
}

bool llmc_purge_match(const llmc_purge_t *sel, const llmc_entry_t *e)
{
    uint32_t c = sel->conds;
    if (c == 0)
        return sel->all;
    return (!(c & LLMC_PURGE_KEY) || memcmp(sel->key.b, e->key.b, LLMC_KEY_LEN) == 0) &&
           (!(c & LLMC_PURGE_NAMESPACE) || str_is(sel->ns, llmc_entry_ns(e))) &&
           (!(c & LLMC_PURGE_TAG) || (sel->tag && has_tag(e, sel->tag))) &&
           (!(c & LLMC_PURGE_MODEL) || str_is(sel->model, llmc_entry_model(e))) &&
           (!(c & LLMC_PURGE_ROUTE) || str_is(sel->route, llmc_entry_route(e))) &&
           (!(c & LLMC_PURGE_KEY_PREFIX) || prefix_matches(&sel->prefix, sel->prefix_digits, &e->key)) &&
           (!(c & LLMC_PURGE_OLDER) || e->created_ms < sel->created_before_ms);
}

static size_t str_size(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

/* Copies s to *p and returns the copy (NULL stays NULL). */
static const char *str_copy(char **p, const char *s)
{
    if (!s)
        return NULL;
    char *at = *p;
    size_t n = strlen(s) + 1;
    memcpy(at, s, n);
    *p += n;
    return at;
}

llmc_purge_t *llmc_purge_dup(const llmc_purge_t *sel)
{
    size_t n = sizeof(*sel) + str_size(sel->ns) + str_size(sel->tag) + str_size(sel->model) +
               str_size(sel->route);
    llmc_purge_t *d = malloc(n);
    if (!d)
        return NULL;
    *d = *sel;
    char *p = (char *)(d + 1);
    d->ns = str_copy(&p, sel->ns);
    d->tag = str_copy(&p, sel->tag);
    d->model = str_copy(&p, sel->model);
    d->route = str_copy(&p, sel->route);
    return d;
}

#define LLMC_STAT_TYPE llmc_tier_stats_t
const llmc_stat_desc_t llmc_tier_stat_desc[] = {
    LLMC_TIER_STATS_TABLE(LLMC_STAT_DESC)
};
#undef LLMC_STAT_TYPE
_Static_assert(sizeof(llmc_tier_stat_desc) / sizeof(llmc_tier_stat_desc[0]) == LLMC_TIER_NSTATS, "a descriptor per field");
