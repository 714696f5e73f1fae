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

#include "gateway/bymodel.h"
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
    llmc_hist_snap_t hist[LLMC_GW_NHIST];
} gw_snapshot_t;

static void snapshot(llmc_gw_t *gw, gw_snapshot_t *s)
{
    memset(s, 0, sizeof(*s));
    for (unsigned i = 0; i < gw->nstarted; i++) {
        llmc_counters_add(&s->ctr, &gw->workers[i].ctr);
        for (unsigned h = 0; h < LLMC_GW_NHIST; h++)
            llmc_hist_add(&s->hist[h], &gw->workers[i].hist[h]);
    }
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

/* The histogram rows' names: the label, or the family for an unlabelled row. */
static const char *const hist_family[] = {
#define X(id, family, label, help) family,
    LLMC_HIST_TABLE(X)
#undef X
};
static const char *const hist_label[] = {
#define X(id, family, label, help) label,
    LLMC_HIST_TABLE(X)
#undef X
};
static const char *const hist_help[] = {
#define X(id, family, label, help) help,
    LLMC_HIST_TABLE(X)
#undef X
};

static json_t *ms(uint64_t ns)
{
    return json_real((double)ns / 1e6);
}

/* "latency": {"hit": {"count", "mean_ms", "p50_ms", "p90_ms", "p99_ms"}, ...}:
   the percentiles are estimates from the buckets (llmc_hist_quantile). */
static void latency_json(json_t *o, const gw_snapshot_t *s)
{
    json_t *lat = json_object();
    for (unsigned h = 0; h < LLMC_GW_NHIST; h++) {
        const llmc_hist_snap_t *hs = &s->hist[h];
        json_t *r = json_object();
        json_object_set_new(r, "count", json_integer((json_int_t)hs->count));
        json_object_set_new(r, "mean_ms", ms(hs->count ? hs->sum_ns / hs->count : 0));
        json_object_set_new(r, "p50_ms", ms(llmc_hist_quantile(hs, 0.5)));
        json_object_set_new(r, "p90_ms", ms(llmc_hist_quantile(hs, 0.9)));
        json_object_set_new(r, "p99_ms", ms(llmc_hist_quantile(hs, 0.99)));
        json_object_set_new(lat, hist_label[h] ? hist_label[h] : "upstream", r);
    }
    json_object_set_new(o, "latency", lat);
}

/* ---- by route and model ------------------------------------------------------ */

static void add_int(json_t *obj, const char *key, uint64_t v)
{
    json_t *cur = json_object_get(obj, key);
    json_int_t was = cur ? json_integer_value(cur) : 0;
    json_object_set_new(obj, key, json_integer(was + (json_int_t)v));
}

/* obj[name], made when missing. */
static json_t *child(json_t *obj, const char *name)
{
    json_t *c = json_object_get(obj, name);
    if (!c && json_object_set_new(obj, name, c = json_object()) < 0)
        return NULL;
    return c;
}

static void add_row(json_t *obj, const llmc_bymodel_row_t *row)
{
    for (size_t i = 0; obj && i < LLMC_BYMODEL_NSTATS; i++)
        add_int(obj, llmc_bymodel_desc[i].name, llmc_stat_value(row, &llmc_bymodel_desc[i]));
}

typedef struct bm_json {
    json_t *models, *routes, *total;
} bm_json_t;

static void bm_json_row(void *arg, const char *route, const char *model, bool priced,
                        const llmc_bymodel_row_t *row)
{
    bm_json_t *j = arg;
    json_t *m = child(j->models, model);
    add_row(m, row);
    if (m && strcmp(model, "other") != 0)
        json_object_set_new(m, "priced", json_boolean(priced));
    add_row(child(j->routes, route), row);
    add_row(j->total, row);
}

/* Money is summed in pico-units; shown in units. */
static void money_to_units(json_t *obj)
{
    json_t *v = json_object_get(obj, "money_saved");
    json_int_t pico = v ? json_integer_value(v) : 0;
    json_object_set_new(obj, "money_saved", json_real((double)pico / 1e12));
}

/* A namespace's row in "namespaces": its requests and tokens (no money). */
static void ns_json_row(void *arg, const char *ns, const llmc_bymodel_row_t *row)
{
    json_t *n = child(arg, ns);
    add_row(n, row);
    if (n)
        json_object_del(n, "money_saved");
}

/* "models" and "routes" (each row's counters summed over the other axis),
   and the totals: "tokens_saved": {"prompt", "completion"}, "money_saved",
   "prices" (rows in the price table), "prices_source" ("built-in", the
   --prices file, or null for none) and "prices_as_of" (the table's date,
   or null). */
static void bymodel_json(json_t *o, llmc_bymodel_t *bm)
{
    bm_json_t j = {json_object(), json_object(), json_object()};
    if (bm)
        llmc_bymodel_each(bm, bm_json_row, &j);
    const char *key;
    json_t *v;
    json_object_foreach(j.models, key, v)
        money_to_units(v);
    json_object_foreach(j.routes, key, v)
        money_to_units(v);
    money_to_units(j.total);
    json_t *tok = json_object();
    json_object_set_new(tok, "prompt", json_integer(json_integer_value(
                                           json_object_get(j.total, "prompt_tokens_saved"))));
    json_object_set_new(tok, "completion",
                        json_integer(json_integer_value(
                            json_object_get(j.total, "completion_tokens_saved"))));
    json_object_set_new(o, "tokens_saved", tok);
    json_object_set(o, "money_saved", json_object_get(j.total, "money_saved"));
    json_object_set_new(o, "prices", json_integer(bm ? (json_int_t)llmc_bymodel_prices(bm) : 0));
    const llmc_prices_t *pt = bm ? llmc_bymodel_price_table(bm) : NULL;
    json_object_set_new(o, "prices_source",
                        pt && pt->source ? json_string(pt->source) : json_null());
    json_object_set_new(o, "prices_as_of",
                        pt && pt->as_of[0] ? json_string(pt->as_of) : json_null());
    json_t *nss = json_object();
    if (bm)
        llmc_bymodel_each_ns(bm, ns_json_row, nss);
    json_object_set_new(o, "namespaces", nss);
    json_object_set_new(o, "models", j.models);
    json_object_set_new(o, "routes", j.routes);
    json_decref(j.total);
}

/* Tier i's rows of its own (a Redis Cluster's nodes), as a list of objects
   under the tier's name for them: {"name": ..., counters...}. */
static void xrows_json(json_t *t, llmc_tier_set_t *set, unsigned i)
{
    llmc_tier_row_t *rows = calloc(LLMC_TIER_ROWS_MAX, sizeof(*rows));
    const char *name;
    const llmc_stat_desc_t *desc;
    unsigned ndesc, n;

    if (!rows)
        return;
    n = llmc_tier_set_xrows(set, i, &name, &desc, &ndesc, rows, LLMC_TIER_ROWS_MAX);
    if (name) {
        json_t *list = json_array();
        for (unsigned r = 0; r < n; r++) {
            json_t *row = json_object();
            json_object_set_new(row, "name", json_string(rows[r].name));
            llmc_stats_to_json(row, desc, ndesc, rows[r].v, NULL);
            json_array_append_new(list, row);
        }
        json_object_set_new(t, name, list);
    }
    free(rows);
}

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
        xrows_json(t, gw->tiers, i);
        json_object_set_new(tiers, s.tier_names[i], t);
    }
    json_object_set_new(o, "tiers", tiers);
    json_t *slab = json_object();
    llmc_stats_to_json(slab, llmc_slab_stat_desc, LLMC_SLAB_NSTATS, &s.slab, NULL);
    json_object_set_new(o, "entry_slab", slab);
    llmc_stats_to_json(o, proc_desc, NPROC, &s.proc, NULL);
    latency_json(o, &s);
    bymodel_json(o, gw->bymodel);
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

/* A count of ns as seconds, exactly ("0.000250000"). */
static void put_seconds(buf_t *b, uint64_t ns)
{
    bput(b, "%llu.%09llu", (unsigned long long)(ns / 1000000000u),
         (unsigned long long)(ns % 1000000000u));
}

/* The histograms: per family HELP and TYPE, then for each row the
   cumulative buckets (le in seconds), _sum and _count. */
static void emit_hists(buf_t *b, const gw_snapshot_t *s)
{
    for (unsigned h = 0; h < LLMC_GW_NHIST; h++) {
        const char *fam = hist_family[h], *label = hist_label[h];
        if (h == 0 || strcmp(hist_family[h - 1], fam) != 0) {
            bput(b, "# HELP llmcached_%s_seconds ", fam);
            put_help(b, hist_help[h]);
            bput(b, "\n# TYPE llmcached_%s_seconds histogram\n", fam);
        }
        char lab[64] = "";
        if (label)
            snprintf(lab, sizeof(lab), "cache=\"%s\",", label);
        const llmc_hist_snap_t *hs = &s->hist[h];
        uint64_t cum = 0;
        for (unsigned i = 0; i < LLMC_HIST_NBUCKETS; i++) {
            cum += hs->bucket[i];
            bput(b, "llmcached_%s_seconds_bucket{%sle=\"", fam, lab);
            if (i < LLMC_HIST_NBOUNDS)
                bput(b, "%g", (double)llmc_hist_bounds_ns[i] / 1e9);
            else
                bput(b, "+Inf");
            bput(b, "\"} %llu\n", (unsigned long long)cum);
        }
        size_t l = strlen(lab);
        if (l)
            lab[l - 1] = '\0'; /* no trailing comma when alone */
        bput(b, "llmcached_%s_seconds_sum%s%s%s ", fam, l ? "{" : "", lab, l ? "}" : "");
        put_seconds(b, hs->sum_ns);
        bput(b, "\nllmcached_%s_seconds_count%s%s%s %llu\n", fam, l ? "{" : "", lab,
             l ? "}" : "", (unsigned long long)hs->count);
    }
}

/* The by-route-and-model rows, kept to be written family by family. */
typedef struct bm_rows {
    size_t n, cap;
    struct bm_row {
        const char *route, *model;
        llmc_bymodel_row_t row;
    } *r;
    bool oom;
} bm_rows_t;

static void bm_collect(void *arg, const char *route, const char *model, bool priced,
                       const llmc_bymodel_row_t *row)
{
    bm_rows_t *rs = arg;
    if (rs->n == rs->cap) {
        size_t nc = rs->cap ? rs->cap * 2 : 32;
        struct bm_row *nr = realloc(rs->r, nc * sizeof(*nr));
        if (!nr) {
            rs->oom = true;
            return;
        }
        rs->r = nr;
        rs->cap = nc;
    }
    rs->r[rs->n++] = (struct bm_row){route, model, *row};
}

static void put_route_model(buf_t *b, const struct bm_row *r)
{
    bput(b, "route=\"");
    put_label_value(b, r->route);
    bput(b, "\",model=\"");
    put_label_value(b, r->model);
    bput(b, "\"");
}

typedef struct kind_off {
    const char *cache;
    size_t off;
} kind_off_t;

typedef struct ns_emit {
    buf_t *b;
    const kind_off_t *kinds;
    size_t nkinds;
} ns_emit_t;

static void ns_prom_row(void *arg, const char *ns, const llmc_bymodel_row_t *row)
{
    ns_emit_t *e = arg;
    for (size_t k = 0; k < e->nkinds; k++) {
        uint64_t v;
        memcpy(&v, (const char *)row + e->kinds[k].off, sizeof(v));
        bput(e->b, "llmcached_namespace_requests_total{namespace=\"");
        put_label_value(e->b, ns);
        bput(e->b, "\",cache=\"%s\"} %llu\n", e->kinds[k].cache, (unsigned long long)v);
    }
}

/* llmcached_namespace_requests_total{namespace,cache}. */
static void emit_byns(buf_t *b, llmc_bymodel_t *bm, const kind_off_t *kinds, size_t nkinds)
{
    bput(b, "# HELP llmcached_namespace_requests_total Cached routes' requests by cache "
            "namespace (\"\" for none; the first --metrics-max-namespaces, then 'other') and "
            "how the cache answered.\n"
            "# TYPE llmcached_namespace_requests_total counter\n");
    ns_emit_t e = {b, kinds, nkinds};
    if (bm)
        llmc_bymodel_each_ns(bm, ns_prom_row, &e);
}

/* llmcached_model_requests_total{route,model,cache}, llmcached_tokens_saved_total{route,model,
   kind} and llmcached_money_saved_total{route,model}. */
static void emit_bymodel(buf_t *b, llmc_bymodel_t *bm)
{
    bm_rows_t rs = {0};
    if (bm)
        llmc_bymodel_each(bm, bm_collect, &rs);
    if (rs.oom)
        b->oom = true;
    static const kind_off_t kinds[] = {
        {"hit", offsetof(llmc_bymodel_row_t, hits)},
        {"stale", offsetof(llmc_bymodel_row_t, stale)},
        {"miss", offsetof(llmc_bymodel_row_t, misses)},
        {"coalesced", offsetof(llmc_bymodel_row_t, coalesced)},
        {"bypass", offsetof(llmc_bymodel_row_t, bypasses)},
    };
    bput(b, "# HELP llmcached_model_requests_total Cached routes' requests by route, model "
            "(the first --metrics-max-models, then 'other') and how the cache answered.\n"
            "# TYPE llmcached_model_requests_total counter\n");
    for (size_t i = 0; i < rs.n; i++)
        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
            uint64_t v;
            memcpy(&v, (const char *)&rs.r[i].row + kinds[k].off, sizeof(v));
            bput(b, "llmcached_model_requests_total{");
            put_route_model(b, &rs.r[i]);
            bput(b, ",cache=\"%s\"} %llu\n", kinds[k].cache, (unsigned long long)v);
        }
    bput(b, "# HELP llmcached_tokens_saved_total Tokens of the answers served from the cache "
            "(their stored usage), by route, model and kind (prompt, completion).\n"
            "# TYPE llmcached_tokens_saved_total counter\n");
    for (size_t i = 0; i < rs.n; i++) {
        bput(b, "llmcached_tokens_saved_total{");
        put_route_model(b, &rs.r[i]);
        bput(b, ",kind=\"prompt\"} %llu\nllmcached_tokens_saved_total{",
             (unsigned long long)rs.r[i].row.prompt_tokens_saved);
        put_route_model(b, &rs.r[i]);
        bput(b, ",kind=\"completion\"} %llu\n",
             (unsigned long long)rs.r[i].row.completion_tokens_saved);
    }
    bput(b, "# HELP llmcached_money_saved_total What the answers served from the cache would "
            "have cost at the --prices table's prices, in its currency, by route and model.\n"
            "# TYPE llmcached_money_saved_total counter\n");
    for (size_t i = 0; i < rs.n; i++) {
        uint64_t pico = rs.r[i].row.money_saved;
        bput(b, "llmcached_money_saved_total{");
        put_route_model(b, &rs.r[i]);
        bput(b, "} %llu.%012llu\n", (unsigned long long)(pico / 1000000000000ull),
             (unsigned long long)(pico % 1000000000000ull));
    }
    free(rs.r);
    emit_byns(b, bm, kinds, sizeof(kinds) / sizeof(kinds[0]));
}

/* Tier i's rows of its own as families llmcached_tier_<rows name>_<counter>,
   one series per row labelled name="<row>" (the semantic tier's namespaces,
   a Redis Cluster's nodes). */
static void emit_xrows(buf_t *b, llmc_tier_set_t *set, unsigned i)
{
    llmc_tier_row_t *rows = calloc(LLMC_TIER_ROWS_MAX, sizeof(*rows));
    const void *srcs[LLMC_TIER_ROWS_MAX];
    const char *names[LLMC_TIER_ROWS_MAX];
    const char *rname;
    const llmc_stat_desc_t *desc;
    unsigned ndesc, n;
    char prefix[96];

    if (!rows) {
        b->oom = true;
        return;
    }
    n = llmc_tier_set_xrows(set, i, &rname, &desc, &ndesc, rows, LLMC_TIER_ROWS_MAX);
    if (rname && n) {
        for (unsigned r = 0; r < n; r++) {
            srcs[r] = rows[r].v;
            names[r] = rows[r].name;
        }
        snprintf(prefix, sizeof(prefix), "tier_%s_", rname);
        emit_table(b, prefix, desc, ndesc, srcs, n, "name", names);
    }
    free(rows);
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
    for (unsigned i = 0; i < s.ntiers; i++)
        emit_xrows(&b, gw->tiers, i);
    one[0] = &s.slab;
    emit_table(&b, "entry_slab_", llmc_slab_stat_desc, LLMC_SLAB_NSTATS, one, 1, NULL, NULL);
    one[0] = &s.proc;
    emit_table(&b, "", proc_desc, NPROC, one, 1, NULL, NULL);
    emit_hists(&b, &s);
    emit_bymodel(&b, gw->bymodel);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
