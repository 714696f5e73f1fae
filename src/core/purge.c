/*
 * purge.c: which entries a purge selector picks (llmc_purge_match in
 * llmc/tier.h).
 *
 * Every tier applies the same predicate, so that a purge removes the same
 * answers from memory, disk and any later tier. Namespace, model and tag
 * compare whole strings, byte for byte: "gpt-4o" does not select
 * "gpt-4o-mini". A selector that needs a value but has none selects nothing,
 * so a malformed admin request can never turn into "purge everything".
 */
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

bool llmc_purge_match(const llmc_purge_t *sel, const llmc_entry_t *e)
{
    switch (sel->kind) {
    case LLMC_PURGE_ALL:
        return true;
    case LLMC_PURGE_KEY:
        return memcmp(sel->key.b, e->key.b, LLMC_KEY_LEN) == 0;
    case LLMC_PURGE_NAMESPACE:
        return sel->value && strcmp(llmc_entry_ns(e), sel->value) == 0;
    case LLMC_PURGE_TAG:
        return sel->value && has_tag(e, sel->value);
    case LLMC_PURGE_MODEL:
        return sel->value && strcmp(llmc_entry_model(e), sel->value) == 0;
    }
    return false;
}

#define LLMC_STAT_TYPE llmc_tier_stats_t
const llmc_stat_desc_t llmc_tier_stat_desc[] = {
    LLMC_TIER_STATS_TABLE(LLMC_STAT_DESC)
};
#undef LLMC_STAT_TYPE
_Static_assert(sizeof(llmc_tier_stat_desc) / sizeof(llmc_tier_stat_desc[0]) == LLMC_TIER_NSTATS, "a descriptor per field");
