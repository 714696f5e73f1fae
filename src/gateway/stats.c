/*
 * gateway/stats.c: summing the counter tables, the /stats document and
 * the /metrics exposition, both made from one snapshot of the same tables.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Nothing here knows a counter by name except the few front-tier fields
 *   that /stats has always shown at its top level: the rest is walked
 *   through the descriptor tables (llmc/stat.h), so a counter added to a
 *   table appears in /stats without touching this file.
 * - Reading another worker's counters needs no lock: each is written by
 *   one thread with relaxed atomics, and /stats is a snapshot, not a
 *   transaction.
 * - /metrics (Prometheus text format 0.0.4) names are derived from the
 *   JSON names: llmcached_ + a table's prefix (tier_, entry_slab_) + the
 *   name, the unit where Prometheus puts it (_bytes, _seconds) and _total
 *   on counters. Rows named "group/class" are one family with a class
 *   label, and the tiers' table is one family per row with a tier label.
 *   Every value is an integer: the tables hold nothing else.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Everything /stats and /metrics show, read once. */
typedef struct gw_snapshot {
    llmc_counters_snap_t ctr;
    llmc_http_server_stats_t http;
    unsigned ntiers;
    const char *tier_names[LLMC_TIER_SET_MAX];
    llmc_tier_stats_t tiers[LLMC_TIER_SET_MAX];
    /* A tier's counters of its own (tier.h: xstats), beside the common ones. */
    unsigned nx[LLMC_TIER_SET_MAX];
    const llmc_stat_desc_t *xd[LLMC_TIER_SET_MAX];
    uint64_t xs[LLMC_TIER_SET_MAX][LLMC_TIER_XSTATS_MAX];
    llmc_slab_stats_t slab;
    proc_stats_t proc;
} gw_snapshot_t;

static void snapshot(llmc_gw_t *gw, gw_snapshot_t *s)
{
    memset(s, 0, sizeof(*s));
    for (unsigned i = 0; i < gw->nstarted; i++)
        llmc_counters_add(&s->ctr, &gw->workers[i].ctr);
    /* Each worker's servers (the admin listener's too), summed. A server is
       gone only at shutdown (its worker sets the pointer to NULL when it
       closed). */
    llmc_http_server_stats_t hs;
    for (unsigned i = 0; i < gw->nstarted; i++) {
        llmc_http_server_t *srv[2] = {gw->workers[i].server, gw->workers[i].admin_server};
        for (int j = 0; j < 2; j++) {
            if (!srv[j])
                continue;
            llmc_http_server_stats(srv[j], &hs);
            llmc_http_stats_add(&s->http, &hs);
        }
    }
    s->ntiers = llmc_tier_set_count(gw->tiers);
    for (unsigned i = 0; i < s->ntiers; i++) {
        s->tier_names[i] = llmc_tier_set_name(gw->tiers, i);
        llmc_tier_set_stats(gw->tiers, i, &s->tiers[i]);
        s->nx[i] = llmc_tier_set_xstats(gw->tiers, i, &s->xd[i], s->xs[i]);
    }
    llmc_entry_mem_stats(&s->slab);
    s->proc = (proc_stats_t){
        .in_flight = llmc_flight_table_count(gw->flights),
        .threads = gw->nworkers,
        .uptime_s = (uint64_t)((llmc_now_ms() - gw->started_ms) / 1000),
    };
}

#define NPROC (sizeof(proc_desc) / sizeof(proc_desc[0]))

json_t *llmc_gw_stats_json(llmc_gw_t *gw)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    gw_snapshot_t s;
    snapshot(gw, &s);
    llmc_stats_to_json(o, llmc_gw_stat_desc, LLMC_GW_NSTATS, &s.ctr, NULL);
    llmc_stats_to_json(o, llmc_http_stat_desc, LLMC_HTTP_NSTATS, &s.http, NULL);
    json_t *tiers = json_object();
    for (unsigned i = 0; i < s.ntiers; i++) {
        if (i == 0)
            llmc_stats_to_json(o, llmc_tier_stat_desc, LLMC_TIER_NSTATS, &s.tiers[i], front_fields);
        json_t *t = json_object();
        llmc_stats_to_json(t, llmc_tier_stat_desc, LLMC_TIER_NSTATS, &s.tiers[i], NULL);
        llmc_stats_to_json(t, s.xd[i], s.nx[i], s.xs[i], NULL);
        json_object_set_new(tiers, s.tier_names[i], t);
    }
    json_object_set_new(o, "tiers", tiers);
    json_t *slab = json_object();
    llmc_stats_to_json(slab, llmc_slab_stat_desc, LLMC_SLAB_NSTATS, &s.slab, NULL);
    json_object_set_new(o, "entry_slab", slab);
    llmc_stats_to_json(o, proc_desc, NPROC, &s.proc, NULL);
    return o;
}

/* ---- the Prometheus text format (0.0.4) ------------------------------------ */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf_t;

static void bput(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bput(buf_t *b, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* llmcached_<prefix><name>, the part of the name before a '/', with the
   unit where Prometheus wants it in the name (seconds, bytes) and _total on
   a counter: "uptime_s" is llmcached_uptime_seconds, "upstream_errors/io"
   llmcached_upstream_errors_total. */
static void prom_name(char *out, size_t cap, const char *prefix, const llmc_stat_desc_t *d)
{
    size_t n = strcspn(d->name, "/");
    if (strcmp(d->unit, "seconds") == 0 && ends_with(d->name, n, "_s"))
        n -= 2;
    int len = snprintf(out, cap, "llmcached_%s%.*s", prefix, (int)n, d->name);
    size_t l = len < 0 ? 0 : (size_t)len < cap ? (size_t)len : cap - 1;
    if (strcmp(d->unit, "seconds") == 0 && !ends_with(out, l, "_seconds"))
        l += (size_t)snprintf(out + l, cap - l, "_seconds");
    else if (strcmp(d->unit, "bytes") == 0 && !ends_with(out, l, "bytes"))
        l += (size_t)snprintf(out + l, cap - l, "_bytes");
    if (d->kind == LLMC_STAT_COUNTER && l < cap && !ends_with(out, l, "_total"))
        snprintf(out + l, cap - l, "_total");
}

/* HELP text: backslashes and newlines escaped (the format's rule). */
static void put_help(buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            bput(b, "\\\\");
        else if (*s == '\n')
            bput(b, "\\n");
        else
            bput(b, "%c", *s);
    }
}

/* A label value: backslashes, quotes and newlines escaped. */
static void put_label_value(buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            bput(b, "\\%c", *s);
        else if (*s == '\n')
            bput(b, "\\n");
        else
            bput(b, "%c", *s);
    }
}

/*
 * One table as metric families: a row, or the rows that share a name
 * before '/' (which becomes the label class="<after the />"), is one
 * family, written once for every source struct in srcs[0..nsrc), each
 * with the label label="values[k]" when label is not NULL.
 */
static void emit_table(buf_t *b, const char *prefix, const llmc_stat_desc_t *desc, size_t n,
                       const void *const *srcs, size_t nsrc, const char *label,
                       const char *const *values)
{
    char name[160];
    for (size_t i = 0; i < n;) {
        const char *slash = strchr(desc[i].name, '/');
        size_t glen = slash ? (size_t)(slash - desc[i].name) : 0, j = i + 1;
        while (slash && j < n && strncmp(desc[j].name, desc[i].name, glen + 1) == 0)
            j++;
        prom_name(name, sizeof(name), prefix, &desc[i]);
        bput(b, "# HELP %s ", name);
        if (!slash) {
            put_help(b, desc[i].help);
        } else {
            bput(b, "By class.");
            for (size_t k = i; k < j; k++) {
                bput(b, " %s: ", desc[k].name + glen + 1);
                put_help(b, desc[k].help);
            }
        }
        bput(b, "\n# TYPE %s %s\n", name, desc[i].kind == LLMC_STAT_COUNTER ? "counter" : "gauge");
        for (size_t k = i; k < j; k++) {
            for (size_t src = 0; src < nsrc; src++) {
                bput(b, "%s", name);
                if (label || slash) {
                    bput(b, "{");
                    if (label) {
                        bput(b, "%s=\"", label);
                        put_label_value(b, values[src]);
                        bput(b, "\"%s", slash ? "," : "");
                    }
                    if (slash) {
                        bput(b, "class=\"");
                        put_label_value(b, desc[k].name + glen + 1);
                        bput(b, "\"");
                    }
                    bput(b, "}");
                }
                bput(b, " %llu\n", (unsigned long long)llmc_stat_value(srcs[src], &desc[k]));
            }
        }
        i = j;
    }
}

char *llmc_gw_metrics_text(llmc_gw_t *gw, size_t *len)
{
    gw_snapshot_t s;
    buf_t b = {0};
    snapshot(gw, &s);
    const void *one[1];
    one[0] = &s.ctr;
    emit_table(&b, "", llmc_gw_stat_desc, LLMC_GW_NSTATS, one, 1, NULL, NULL);
    one[0] = &s.http;
    emit_table(&b, "", llmc_http_stat_desc, LLMC_HTTP_NSTATS, one, 1, NULL, NULL);
    const void *tiers[LLMC_TIER_SET_MAX];
    for (unsigned i = 0; i < s.ntiers; i++)
        tiers[i] = &s.tiers[i];
    if (s.ntiers)
        emit_table(&b, "tier_", llmc_tier_stat_desc, LLMC_TIER_NSTATS, tiers, s.ntiers, "tier",
                   s.tier_names);
    for (unsigned i = 0; i < s.ntiers; i++) {
        if (!s.nx[i])
            continue;
        one[0] = s.xs[i];
        emit_table(&b, "tier_", s.xd[i], s.nx[i], one, 1, "tier", &s.tier_names[i]);
    }
    one[0] = &s.slab;
    emit_table(&b, "entry_slab_", llmc_slab_stat_desc, LLMC_SLAB_NSTATS, one, 1, NULL, NULL);
    one[0] = &s.proc;
    emit_table(&b, "", proc_desc, NPROC, one, 1, NULL, NULL);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
