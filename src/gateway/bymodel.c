/*
 * bymodel.c: counters by route and model (gateway/bymodel.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A name's index is found by a scan of the published names: the list is
 *   bounded (--metrics-max-models) and a scan of a few dozen short strings
 *   costs less than hashing on every hit would save. Only adding a name
 *   takes the mutex, once per name for the life of the process.
 * - Each writer's rows form one matrix [route][model], "other" last on both
 *   axes, allocated up front: counting is an index and a store, never an
 *   allocation, so it cannot fail on the hit path.
 */
#include "gateway/bymodel.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"

#define LLMC_STAT_TYPE llmc_bymodel_row_t
const llmc_stat_desc_t llmc_bymodel_desc[] = {LLMC_BYMODEL_TABLE(LLMC_STAT_DESC)};
#undef LLMC_STAT_TYPE

#define ATOMIC_FIELD(f, name, kind, unit, help) _Atomic uint64_t f;
typedef struct arow {
    LLMC_BYMODEL_TABLE(ATOMIC_FIELD)
} arow_t;
#undef ATOMIC_FIELD

/* An append-only list of names read without a lock (the header says how). */
typedef struct names {
    unsigned cap;
    _Atomic unsigned n;
    char **name;                 /* [cap] */
    size_t *len;                 /* [cap]: compared first, so a scan is mostly integer compares */
    _Atomic(const llmc_price_t *) *price; /* [cap], models only; a reload swaps them */
} names_t;

struct llmc_bymodel {
    unsigned nwriters;
    names_t routes, models;
    names_t nss;                 /* namespaces; cap 0 until llmc_bymodel_namespaces */
    arow_t *ns_rows;             /* [nwriters][nss.cap + 1]: money stays 0 */
    pthread_mutex_t mu;          /* adding a name */
    _Atomic(llmc_prices_t *) prices; /* the current table (NULL: none) */
    llmc_prices_t **retired;     /* tables a reload replaced: a writer may still read one */
    size_t nretired;
    arow_t *rows;                /* [nwriters][ROUTES + 1][max_models + 1] */
};

static size_t stride(const llmc_bymodel_t *bm)
{
    return (size_t)(bm->routes.cap + 1) * (bm->models.cap + 1);
}

static bool names_init(names_t *l, unsigned cap, bool priced)
{
    l->cap = cap;
    atomic_init(&l->n, 0);
    l->name = calloc(cap, sizeof(*l->name));
    l->len = calloc(cap, sizeof(*l->len));
    l->price = priced ? calloc(cap, sizeof(*l->price)) : NULL;
    return l->name && l->len && (!priced || l->price);
}

static void names_free(names_t *l)
{
    unsigned n = atomic_load(&l->n);
    for (unsigned i = 0; l->name && i < n; i++)
        free(l->name[i]);
    free(l->name);
    free(l->len);
    free(l->price);
}

llmc_bymodel_t *llmc_bymodel_new(unsigned nwriters, unsigned max_models, llmc_prices_t *prices)
{
    assert(nwriters > 0 && max_models > 0);
    llmc_bymodel_t *bm = calloc(1, sizeof(*bm));
    if (!bm) {
        llmc_prices_free(prices);
        return NULL;
    }
    bm->nwriters = nwriters;
    atomic_init(&bm->prices, prices);
    pthread_mutex_init(&bm->mu, NULL);
    if (!names_init(&bm->routes, LLMC_BYMODEL_ROUTES, false) ||
        !names_init(&bm->models, max_models, true) ||
        !(bm->rows = calloc((size_t)nwriters * stride(bm), sizeof(arow_t)))) {
        llmc_bymodel_free(bm);
        return NULL;
    }
    return bm;
}

void llmc_bymodel_free(llmc_bymodel_t *bm)
{
    if (!bm)
        return;
    names_free(&bm->routes);
    names_free(&bm->models);
    names_free(&bm->nss);
    free(bm->ns_rows);
    pthread_mutex_destroy(&bm->mu);
    llmc_prices_free(atomic_load(&bm->prices));
    for (size_t i = 0; i < bm->nretired; i++)
        llmc_prices_free(bm->retired[i]);
    free(bm->retired);
    free(bm->rows);
    free(bm);
}

size_t llmc_bymodel_prices(llmc_bymodel_t *bm)
{
    llmc_prices_t *p = atomic_load_explicit(&bm->prices, memory_order_acquire);
    return p ? p->n : 0;
}

const llmc_prices_t *llmc_bymodel_price_table(llmc_bymodel_t *bm)
{
    return atomic_load_explicit(&bm->prices, memory_order_acquire);
}

int llmc_bymodel_set_prices(llmc_bymodel_t *bm, llmc_prices_t *prices)
{
    pthread_mutex_lock(&bm->mu);
    llmc_prices_t **r = realloc(bm->retired, (bm->nretired + 1) * sizeof(*r));
    if (!r) {
        pthread_mutex_unlock(&bm->mu);
        llmc_prices_free(prices);
        return LLMC_ENOMEM;
    }
    bm->retired = r;
    bm->retired[bm->nretired++] = atomic_load_explicit(&bm->prices, memory_order_relaxed);
    atomic_store_explicit(&bm->prices, prices, memory_order_release);
    /* Each known model priced anew; a hit counted meanwhile used the old
       row, which stays valid (retired, not freed). */
    unsigned n = atomic_load_explicit(&bm->models.n, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++)
        atomic_store_explicit(&bm->models.price[i],
                              llmc_prices_find(prices, bm->models.name[i]), memory_order_release);
    pthread_mutex_unlock(&bm->mu);
    return 0;
}

/* name cut to at most LLMC_BYMODEL_NAME_MAX bytes without splitting a
   UTF-8 sequence (the JSON of /stats must stay valid). */
static size_t cut_len(const char *name)
{
    size_t n = strnlen(name, LLMC_BYMODEL_NAME_MAX + 1);
    if (n <= LLMC_BYMODEL_NAME_MAX)
        return n;
    n = LLMC_BYMODEL_NAME_MAX;
    while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80)
        n--; /* name[n] continues a sequence: cut before its lead byte */
    return n;
}

static unsigned find(const names_t *l, unsigned n, const char *name, size_t len)
{
    for (unsigned i = 0; i < n; i++)
        if (l->len[i] == len && memcmp(l->name[i], name, len) == 0)
            return i;
    return l->cap;
}

/* name's index in l, adding it while there is room; l->cap: "other". */
static unsigned index_of(llmc_bymodel_t *bm, names_t *l, const char *name)
{
    size_t len = cut_len(name);
    unsigned n = atomic_load_explicit(&l->n, memory_order_acquire);
    unsigned i = find(l, n, name, len);
    if (i < l->cap || n == l->cap)
        return i;
    pthread_mutex_lock(&bm->mu);
    n = atomic_load_explicit(&l->n, memory_order_relaxed);
    i = find(l, n, name, len); /* another thread may have added it meanwhile */
    if (i == l->cap && n < l->cap && (l->name[n] = strndup(name, len))) {
        l->len[n] = len;
        if (l->price)
            atomic_store_explicit(&l->price[n],
                                  llmc_prices_find(atomic_load_explicit(&bm->prices,
                                                                        memory_order_relaxed),
                                                   l->name[n]),
                                  memory_order_relaxed);
        atomic_store_explicit(&l->n, n + 1, memory_order_release);
        i = n;
    }
    pthread_mutex_unlock(&bm->mu);
    return i;
}

static void bump(_Atomic uint64_t *c, uint64_t by)
{
    uint64_t v = atomic_load_explicit(c, memory_order_relaxed);
    atomic_store_explicit(c, v > UINT64_MAX - by ? UINT64_MAX : v + by, memory_order_relaxed);
}

void llmc_bymodel_count(llmc_bymodel_t *bm, unsigned writer, const char *route,
                        const char *model, llmc_by_kind_t kind, const llmc_usage_t *saved)
{
    if (!bm)
        return; /* a gateway put together by hand (unit tests) counts nothing here */
    assert(writer < bm->nwriters);
    if (!model || !*model)
        model = "unknown";
    if (!route || !*route)
        route = "unknown";
    unsigned r = index_of(bm, &bm->routes, route), m = index_of(bm, &bm->models, model);
    arow_t *row = &bm->rows[writer * stride(bm) + (size_t)r * (bm->models.cap + 1) + m];
    switch (kind) {
    case LLMC_BY_HIT: bump(&row->hits, 1); break;
    case LLMC_BY_STALE: bump(&row->stale, 1); break;
    case LLMC_BY_MISS: bump(&row->misses, 1); return;
    case LLMC_BY_COALESCED: bump(&row->coalesced, 1); return;
    case LLMC_BY_BYPASS: bump(&row->bypasses, 1); return;
    }
    if (!saved)
        return;
    bump(&row->prompt_tokens_saved, saved->prompt_tokens);
    bump(&row->completion_tokens_saved, saved->completion_tokens);
    const llmc_price_t *p =
        m < bm->models.cap
            ? atomic_load_explicit(&bm->models.price[m], memory_order_acquire)
            : llmc_prices_find(atomic_load_explicit(&bm->prices, memory_order_acquire), model);
    if (p)
        bump(&row->money_saved, llmc_price_cost(p, saved->prompt_tokens,
                                                saved->completion_tokens));
}

int llmc_bymodel_namespaces(llmc_bymodel_t *bm, unsigned max_namespaces)
{
    assert(max_namespaces > 0 && bm->nss.cap == 0);
    if (!names_init(&bm->nss, max_namespaces, false) ||
        !(bm->ns_rows = calloc((size_t)bm->nwriters * (max_namespaces + 1), sizeof(arow_t)))) {
        names_free(&bm->nss);
        memset(&bm->nss, 0, sizeof(bm->nss));
        return LLMC_ENOMEM;
    }
    return 0;
}

void llmc_bymodel_count_ns(llmc_bymodel_t *bm, unsigned writer, const char *ns,
                           llmc_by_kind_t kind, const llmc_usage_t *saved)
{
    if (!bm || !bm->ns_rows)
        return;
    assert(writer < bm->nwriters);
    unsigned i = index_of(bm, &bm->nss, ns ? ns : "");
    arow_t *row = &bm->ns_rows[(size_t)writer * (bm->nss.cap + 1) + i];
    switch (kind) {
    case LLMC_BY_HIT: bump(&row->hits, 1); break;
    case LLMC_BY_STALE: bump(&row->stale, 1); break;
    case LLMC_BY_MISS: bump(&row->misses, 1); return;
    case LLMC_BY_COALESCED: bump(&row->coalesced, 1); return;
    case LLMC_BY_BYPASS: bump(&row->bypasses, 1); return;
    }
    if (saved) {
        bump(&row->prompt_tokens_saved, saved->prompt_tokens);
        bump(&row->completion_tokens_saved, saved->completion_tokens);
    }
}

static bool all_zero(const llmc_bymodel_row_t *r)
{
    for (size_t i = 0; i < LLMC_BYMODEL_NSTATS; i++)
        if (llmc_stat_value(r, &llmc_bymodel_desc[i]))
            return false;
    return true;
}

unsigned llmc_bymodel_each(llmc_bymodel_t *bm, llmc_bymodel_fn fn, void *arg)
{
    unsigned nr = atomic_load_explicit(&bm->routes.n, memory_order_acquire);
    unsigned nm = atomic_load_explicit(&bm->models.n, memory_order_acquire);
    unsigned shown = 0;
    /* Names below nr and nm are published; rows of names published later
       are zero in this pass, or counted by the next one. */
    for (unsigned r = 0; r <= bm->routes.cap; r++) {
        if (r >= nr && r < bm->routes.cap)
            continue;
        for (unsigned m = 0; m <= bm->models.cap; m++) {
            if (m >= nm && m < bm->models.cap)
                continue;
            llmc_bymodel_row_t sum;
            memset(&sum, 0, sizeof(sum));
            size_t at = (size_t)r * (bm->models.cap + 1) + m;
            for (unsigned w = 0; w < bm->nwriters; w++) {
                const arow_t *a = &bm->rows[w * stride(bm) + at];
#define ADD(f, name, kind, unit, help) \
    sum.f += atomic_load_explicit(&a->f, memory_order_relaxed);
                LLMC_BYMODEL_TABLE(ADD)
#undef ADD
            }
            if (all_zero(&sum))
                continue;
            fn(arg, r < bm->routes.cap ? bm->routes.name[r] : "other",
               m < bm->models.cap ? bm->models.name[m] : "other",
               m < bm->models.cap && atomic_load(&bm->models.price[m]) != NULL, &sum);
            shown++;
        }
    }
    return shown;
}

unsigned llmc_bymodel_each_ns(llmc_bymodel_t *bm, llmc_bymodel_ns_fn fn, void *arg)
{
    if (!bm->ns_rows)
        return 0;
    unsigned n = atomic_load_explicit(&bm->nss.n, memory_order_acquire), shown = 0;
    for (unsigned i = 0; i <= bm->nss.cap; i++) {
        if (i >= n && i < bm->nss.cap)
            continue;
        llmc_bymodel_row_t sum;
        memset(&sum, 0, sizeof(sum));
        for (unsigned w = 0; w < bm->nwriters; w++) {
            const arow_t *a = &bm->ns_rows[(size_t)w * (bm->nss.cap + 1) + i];
#define ADD(f, name, kind, unit, help) \
    sum.f += atomic_load_explicit(&a->f, memory_order_relaxed);
            LLMC_BYMODEL_TABLE(ADD)
#undef ADD
        }
        if (all_zero(&sum))
            continue;
        fn(arg, i < bm->nss.cap ? bm->nss.name[i] : "other", &sum);
        shown++;
    }
    return shown;
}
