/*
 * gateway/stats.c: summing the counter tables and the /stats document.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Nothing here knows a counter by name except the few front-tier fields
 *   that /stats has always shown at its top level: the rest is walked
 *   through the descriptor tables (llmc/stat.h), so a counter added to a
 *   table appears in /stats without touching this file.
 * - Reading another worker's counters needs no lock: each is written by
 *   one thread with relaxed atomics, and /stats is a snapshot, not a
 *   transaction.
 */
#include <string.h>

#include "gateway/gateway.h"
#include "gateway/stats.h"
#include "llmc/entry.h"

#define LLMC_STAT_TYPE llmc_counters_snap_t
const llmc_stat_desc_t llmc_gw_stat_desc[] = {LLMC_COUNTER_TABLE(LLMC_STAT_DESC)};
#undef LLMC_STAT_TYPE
_Static_assert(sizeof(llmc_gw_stat_desc) / sizeof(llmc_gw_stat_desc[0]) == LLMC_GW_NSTATS,
               "a descriptor per counter");

/* The process gauges, a table like the others. */
#define PROC_STATS_TABLE(X)                                                        \
    X(in_flight, "in_flight", GAUGE, "calls", "Upstream calls in the flight table.") \
    X(threads, "threads", GAUGE, "threads", "Event-loop threads.")                 \
    X(uptime_s, "uptime_s", GAUGE, "seconds", "Seconds since start.")

typedef struct proc_stats {
    PROC_STATS_TABLE(LLMC_STAT_FIELD)
} proc_stats_t;

#define LLMC_STAT_TYPE proc_stats_t
static const llmc_stat_desc_t proc_desc[] = {PROC_STATS_TABLE(LLMC_STAT_DESC)};
#undef LLMC_STAT_TYPE

/* The front tier's fields /stats shows at its top level too: the memory
   bound users watch first. */
static const char *const front_fields[] = {
    "entries", "bytes", "max_bytes", "evicted_size", "evicted_ttl", NULL,
};

void llmc_counters_add(llmc_counters_snap_t *dst, const llmc_counters_t *src)
{
#define X(f, name, kind, unit, help) \
    dst->f += atomic_load_explicit(&src->f, memory_order_relaxed);
    LLMC_COUNTER_TABLE(X)
#undef X
}

void llmc_stats_sum(const llmc_stat_desc_t *desc, size_t n, void *dst, const void *src)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = llmc_stat_value(dst, &desc[i]) + llmc_stat_value(src, &desc[i]);
        memcpy((char *)dst + desc[i].offset, &v, sizeof(v));
    }
}

static bool listed(const char *name, const char *const *only)
{
    for (; *only; only++)
        if (strcmp(*only, name) == 0)
            return true;
    return false;
}

void llmc_stats_to_json(json_t *obj, const llmc_stat_desc_t *desc, size_t n, const void *src,
                        const char *const *only)
{
    for (size_t i = 0; i < n; i++) {
        const char *name = desc[i].name, *slash = strchr(name, '/');
        if (only && !listed(name, only))
            continue;
        json_t *v = json_integer((json_int_t)llmc_stat_value(src, &desc[i]));
        if (!slash) {
            json_object_set_new(obj, name, v);
            continue;
        }
        char group[64];
        size_t glen = (size_t)(slash - name) < sizeof(group) ? (size_t)(slash - name)
                                                              : sizeof(group) - 1;
        memcpy(group, name, glen);
        group[glen] = '\0';
        json_t *g = json_object_get(obj, group);
        if (!g)
            json_object_set_new(obj, group, g = json_object());
        json_object_set_new(g, slash + 1, v);
    }
}

static void tiers_json(llmc_gw_t *gw, json_t *o)
{
    json_t *tiers = json_object();
    for (unsigned i = 0; i < llmc_tier_set_count(gw->tiers); i++) {
        llmc_tier_stats_t ts;
        memset(&ts, 0, sizeof(ts));
        llmc_tier_set_stats(gw->tiers, i, &ts);
        if (i == 0)
            llmc_stats_to_json(o, llmc_tier_stat_desc, LLMC_TIER_NSTATS, &ts, front_fields);
        json_t *t = json_object();
        llmc_stats_to_json(t, llmc_tier_stat_desc, LLMC_TIER_NSTATS, &ts, NULL);
        uint64_t xs[LLMC_TIER_XSTATS_MAX];
        const llmc_stat_desc_t *xd;
        unsigned nx = llmc_tier_set_xstats(gw->tiers, i, &xd, xs);
        llmc_stats_to_json(t, xd, nx, xs, NULL);
        json_object_set_new(tiers, llmc_tier_set_name(gw->tiers, i), t);
    }
    json_object_set_new(o, "tiers", tiers);
}

json_t *llmc_gw_stats_json(llmc_gw_t *gw)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    llmc_counters_snap_t sum;
    memset(&sum, 0, sizeof(sum));
    for (unsigned i = 0; i < gw->nstarted; i++)
        llmc_counters_add(&sum, &gw->workers[i].ctr);
    llmc_stats_to_json(o, llmc_gw_stat_desc, LLMC_GW_NSTATS, &sum, NULL);
    /* Each worker's server, summed. A server is gone only at shutdown
       (its worker sets server to NULL when it closed). */
    llmc_http_server_stats_t hs, hsum;
    memset(&hsum, 0, sizeof(hsum));
    for (unsigned i = 0; i < gw->nstarted; i++) {
        llmc_http_server_t *srv = gw->workers[i].server;
        if (!srv)
            continue;
        llmc_http_server_stats(srv, &hs);
        llmc_http_stats_add(&hsum, &hs);
    }
    llmc_stats_to_json(o, llmc_http_stat_desc, LLMC_HTTP_NSTATS, &hsum, NULL);
    tiers_json(gw, o);
    llmc_slab_stats_t ss;
    llmc_entry_mem_stats(&ss);
    json_t *slab = json_object();
    llmc_stats_to_json(slab, llmc_slab_stat_desc, LLMC_SLAB_NSTATS, &ss, NULL);
    json_object_set_new(o, "entry_slab", slab);
    proc_stats_t ps = {
        .in_flight = llmc_flight_table_count(gw->flights),
        .threads = gw->nworkers,
        .uptime_s = (uint64_t)((llmc_now_ms() - gw->started_ms) / 1000),
    };
    llmc_stats_to_json(o, proc_desc, sizeof(proc_desc) / sizeof(proc_desc[0]), &ps, NULL);
    return o;
}
