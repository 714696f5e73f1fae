/*
 * semantic/index.c: the vector index (see index.h): exact flat search in
 * each small partition, an HNSW graph (semantic/hnsw.c) in each big one.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A partition is every question asked with one system prompt, model, set
 *   of earlier turns and namespace, so most partitions hold a handful of
 *   vectors, where a scan of contiguous floats is exact and beats any
 *   graph. One that reaches hnsw_threshold vectors moves into a graph (its
 *   vectors then live in the graph's nodes, the flat arrays are freed) and
 *   never moves back: a partition that shrank is still one that grew.
 * - Deletes are real: in a scanned partition the last vector moves into
 *   the freed slot (swap-remove), so a partition never holds dead vectors
 *   that a scan must skip, and memory follows what is stored; in a graph
 *   the node is unlinked and its slot reused. A record's slot is the node
 *   number there. The id record of the
 *   moved vector is updated in the same call, which is why ids live in one
 *   table for the whole index (id -> partition, slot) rather than in each
 *   partition: a delete by id needs no partition key and no scan.
 * - Both tables are open addressing with linear probing and backward-shift
 *   deletion (no tombstones to pile up under churn), kept at most half full.
 * - Insert takes every allocation it may need before changing anything, so
 *   LLMC_ENOMEM leaves the index as it was.
 * - Vectors must be normalised on the way in (checked), so a search's
 *   cosine is a dot product.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "semantic/index.h"

typedef struct part {
    llmc_key_t key;
    uint32_t n, cap;
    uint64_t *ids;   /* ids[slot] */
    float *vecs;     /* vecs[slot * dim ...] */
    llmc_hnsw_t *g;  /* non-NULL: the vectors live here, ids and vecs are NULL */
} part_t;

typedef struct idrec {
    uint64_t id;
    part_t *p;       /* NULL: the record is empty */
    uint32_t slot;
} idrec_t;

struct llmc_vindex {
    unsigned dim;
    llmc_dot_fn dot; /* the CPU's widest: a scan of 999 x 512 floats is 4x faster than plain C */
    llmc_vindex_opts_t o;
    part_t **parts;  /* open addressing by key; NULL: empty */
    size_t pcap, pcount;
    idrec_t *recs;   /* open addressing by id */
    size_t rcap, rcount;
};

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static uint64_t key_hash(const llmc_key_t *k)
{
    uint64_t h = 0x9e3779b97f4a7c15ull, w;
    for (size_t i = 0; i < LLMC_KEY_LEN; i += 8) {
        memcpy(&w, k->b + i, 8);
        h = mix64(h ^ w);
    }
    return h;
}

/* ---- the partition table -------------------------------------------------------- */

static size_t part_find(const llmc_vindex_t *ix, const llmc_key_t *key)
{
    size_t mask = ix->pcap - 1, i = key_hash(key) & mask;
    while (ix->parts[i] && memcmp(ix->parts[i]->key.b, key->b, LLMC_KEY_LEN) != 0)
        i = (i + 1) & mask;
    return i;
}

static int parts_grow(llmc_vindex_t *ix)
{
    size_t cap = ix->pcap * 2;
    part_t **old = ix->parts, **v = calloc(cap, sizeof(*v));
    size_t ocap = ix->pcap;
    if (!v)
        return LLMC_ENOMEM;
    ix->parts = v;
    ix->pcap = cap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i])
            ix->parts[part_find(ix, &old[i]->key)] = old[i];
    free(old);
    return 0;
}

/* Removes the partition at table slot i (backward shift) and frees it. */
static void part_remove(llmc_vindex_t *ix, size_t i)
{
    size_t mask = ix->pcap - 1, j = i;
    part_t *p = ix->parts[i];
    for (;;) {
        j = (j + 1) & mask;
        if (!ix->parts[j])
            break;
        size_t home = key_hash(&ix->parts[j]->key) & mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            ix->parts[i] = ix->parts[j];
            i = j;
        }
    }
    ix->parts[i] = NULL;
    ix->pcount--;
    llmc_hnsw_free(p->g);
    free(p->ids);
    free(p->vecs);
    free(p);
}

/* ---- the id table --------------------------------------------------------------- */

static size_t rec_find(const llmc_vindex_t *ix, uint64_t id)
{
    size_t mask = ix->rcap - 1, i = mix64(id) & mask;
    while (ix->recs[i].p && ix->recs[i].id != id)
        i = (i + 1) & mask;
    return i;
}

static int recs_grow(llmc_vindex_t *ix)
{
    size_t cap = ix->rcap * 2, ocap = ix->rcap;
    idrec_t *old = ix->recs, *v = calloc(cap, sizeof(*v));
    if (!v)
        return LLMC_ENOMEM;
    ix->recs = v;
    ix->rcap = cap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].p)
            ix->recs[rec_find(ix, old[i].id)] = old[i];
    free(old);
    return 0;
}

static void rec_remove(llmc_vindex_t *ix, size_t i)
{
    size_t mask = ix->rcap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!ix->recs[j].p)
            break;
        size_t home = mix64(ix->recs[j].id) & mask;
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            ix->recs[i] = ix->recs[j];
            i = j;
        }
    }
    ix->recs[i] = (idrec_t){0};
    ix->rcount--;
}

/* ---- the index ------------------------------------------------------------------ */

llmc_vindex_t *llmc_vindex_new(unsigned dim)
{
    return llmc_vindex_new_opts(dim, NULL);
}

llmc_vindex_t *llmc_vindex_new_opts(unsigned dim, const llmc_vindex_opts_t *opts)
{
    llmc_vindex_t *ix;
    llmc_vindex_opts_t o = opts ? *opts : (llmc_vindex_opts_t){0};
    if (dim == 0 || dim > 4096 || (o.m && (o.m < 2 || o.m > 64)))
        return NULL;
    if (!(ix = calloc(1, sizeof(*ix))))
        return NULL;
    if (!o.hnsw_threshold)
        o.hnsw_threshold = 1000;
    ix->o = o;
    ix->dim = dim;
    ix->dot = llmc_hnsw_dot_fn();
    ix->pcap = 16;
    ix->rcap = 64;
    ix->parts = calloc(ix->pcap, sizeof(*ix->parts));
    ix->recs = calloc(ix->rcap, sizeof(*ix->recs));
    if (!ix->parts || !ix->recs) {
        llmc_vindex_free(ix);
        return NULL;
    }
    return ix;
}

void llmc_vindex_free(llmc_vindex_t *ix)
{
    if (!ix)
        return;
    for (size_t i = 0; ix->parts && i < ix->pcap; i++)
        if (ix->parts[i]) {
            llmc_hnsw_free(ix->parts[i]->g);
            free(ix->parts[i]->ids);
            free(ix->parts[i]->vecs);
            free(ix->parts[i]);
        }
    free(ix->parts);
    free(ix->recs);
    free(ix);
}

static bool normalised(const float *v, unsigned dim)
{
    double ss = 0;
    for (unsigned i = 0; i < dim; i++) {
        if (!isfinite(v[i]))
            return false;
        ss += (double)v[i] * v[i];
    }
    return fabs(sqrt(ss) - 1.0) <= 1e-3;
}

/* Takes slot's vector out of p: the last one moves in, its record follows. */
static void slot_remove(llmc_vindex_t *ix, part_t *p, uint32_t slot)
{
    uint32_t last = p->n - 1;
    if (p->g) {
        llmc_hnsw_remove(p->g, slot);
        p->n--;
        return;
    }
    if (slot != last) {
        p->ids[slot] = p->ids[last];
        memcpy(p->vecs + (size_t)slot * ix->dim, p->vecs + (size_t)last * ix->dim,
               ix->dim * sizeof(float));
        ix->recs[rec_find(ix, p->ids[slot])].slot = slot;
    }
    p->n--;
}

int llmc_vindex_delete(llmc_vindex_t *ix, uint64_t id)
{
    size_t r = rec_find(ix, id);
    part_t *p = ix->recs[r].p;
    if (!p)
        return LLMC_ENOENT;
    uint32_t slot = ix->recs[r].slot;
    rec_remove(ix, r);
    slot_remove(ix, p, slot);
    if (p->n == 0)
        part_remove(ix, part_find(ix, &p->key));
    return 0;
}

/* The graph's options from the index's. */
static llmc_hnsw_opts_t graph_opts(const llmc_vindex_t *ix)
{
    return (llmc_hnsw_opts_t){.m = ix->o.m,
                              .ef_construction = ix->o.ef_construction,
                              .ef_search = ix->o.ef_search,
                              .quantize = ix->o.quantize};
}

/*
 * Moves scanned partition p into a new graph, once it reached the
 * threshold. A failure (no memory) leaves it scanned, to be tried again at
 * the next insert; the index stays correct either way.
 */
static void to_graph(llmc_vindex_t *ix, part_t *p)
{
    llmc_hnsw_opts_t go = graph_opts(ix);
    llmc_hnsw_t *g = llmc_hnsw_new(ix->dim, &go);
    uint32_t *nodes = malloc(p->n * sizeof(*nodes));
    for (uint32_t s = 0; g && nodes && s < p->n; s++)
        if (llmc_hnsw_add(g, p->ids[s], p->vecs + (size_t)s * ix->dim, &nodes[s]) < 0) {
            llmc_hnsw_free(g);
            g = NULL;
        }
    if (g && nodes) {
        for (uint32_t s = 0; s < p->n; s++)
            ix->recs[rec_find(ix, p->ids[s])].slot = nodes[s];
        free(p->ids);
        free(p->vecs);
        p->ids = NULL;
        p->vecs = NULL;
        p->cap = 0;
        p->g = g;
    } else {
        llmc_hnsw_free(g);
    }
    free(nodes);
}

/* Room for one more vector in scanned partition p. */
static int flat_reserve(llmc_vindex_t *ix, part_t *p)
{
    if (p->n < p->cap)
        return 0;
    uint32_t cap = p->cap ? p->cap * 2 : 4;
    uint64_t *ids = realloc(p->ids, cap * sizeof(*ids));
    if (!ids)
        return LLMC_ENOMEM;
    p->ids = ids;
    float *vecs = realloc(p->vecs, (size_t)cap * ix->dim * sizeof(float));
    if (!vecs)
        return LLMC_ENOMEM; /* ids grew, harmless */
    p->vecs = vecs;
    p->cap = cap;
    return 0;
}

int llmc_vindex_insert(llmc_vindex_t *ix, const llmc_key_t *part, uint64_t id, const float *vec)
{
    size_t r, pi;
    part_t *p;
    bool made = false;
    uint32_t slot;

    if (!normalised(vec, ix->dim))
        return LLMC_EINVAL;
    r = rec_find(ix, id);
    if (ix->recs[r].p && memcmp(ix->recs[r].p->key.b, part->b, LLMC_KEY_LEN) == 0) {
        /* Same id, same partition: the vector is replaced in place (in a
           graph: a new node, then the old one goes). */
        p = ix->recs[r].p;
        if (!p->g) {
            memcpy(p->vecs + (size_t)ix->recs[r].slot * ix->dim, vec, ix->dim * sizeof(float));
            return 0;
        }
        if (llmc_hnsw_add(p->g, id, vec, &slot) < 0)
            return LLMC_ENOMEM;
        llmc_hnsw_remove(p->g, ix->recs[r].slot);
        ix->recs[r].slot = slot;
        return 0;
    }
    /* Every allocation first, so that a failure changes nothing. */
    if ((ix->rcount + 1) * 2 > ix->rcap && recs_grow(ix) < 0)
        return LLMC_ENOMEM;
    if ((ix->pcount + 1) * 2 > ix->pcap && parts_grow(ix) < 0)
        return LLMC_ENOMEM;
    r = rec_find(ix, id); /* the table may have grown */
    pi = part_find(ix, part);
    if (!(p = ix->parts[pi])) {
        if (!(p = calloc(1, sizeof(*p))))
            return LLMC_ENOMEM;
        p->key = *part;
        made = true;
    }
    if (p->g) {
        if (llmc_hnsw_add(p->g, id, vec, &slot) < 0)
            return LLMC_ENOMEM; /* a graph partition was never just made */
    } else {
        if (flat_reserve(ix, p) < 0) {
            if (made) {
                free(p->ids);
                free(p);
            }
            return LLMC_ENOMEM;
        }
        slot = p->n;
        p->ids[slot] = id;
        memcpy(p->vecs + (size_t)slot * ix->dim, vec, ix->dim * sizeof(float));
    }
    if (made) {
        ix->parts[pi] = p;
        ix->pcount++;
    }
    /* The id moves from another partition: out of there first. */
    if (ix->recs[r].p)
        (void)llmc_vindex_delete(ix, id);
    p->n++;
    r = rec_find(ix, id);
    ix->recs[r] = (idrec_t){.id = id, .p = p, .slot = slot};
    ix->rcount++;
    if (!p->g && p->n >= ix->o.hnsw_threshold)
        to_graph(ix, p);
    return 0;
}

static bool better(float sa, uint64_t ia, float sb, uint64_t ib)
{
    return sa > sb || (sa == sb && ia < ib);
}

/* A graph's best k, ordered as a scan would order them. */
static size_t graph_search(const llmc_hnsw_t *g, const float *q, size_t k, llmc_hnsw_walk_t *w,
                           llmc_vindex_hit_t *out)
{
    llmc_hnsw_hit_t stack[32], *hits = k <= 32 ? stack : malloc(k * sizeof(*hits));
    if (!hits)
        k = 32, hits = stack; /* fewer answers rather than none */
    size_t n = llmc_hnsw_search_walk(g, q, k, w, hits);
    for (size_t i = 0; i < n; i++) {
        llmc_vindex_hit_t h = {.id = hits[i].label, .score = hits[i].score};
        size_t j = i;
        while (j > 0 && better(h.score, h.id, out[j - 1].score, out[j - 1].id)) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = h;
    }
    if (hits != stack)
        free(hits);
    return n;
}

size_t llmc_vindex_search(const llmc_vindex_t *ix, const llmc_key_t *part, const float *q,
                          size_t k, llmc_vindex_hit_t *out)
{
    return llmc_vindex_search_ef(ix, part, q, k, 0, out);
}

size_t llmc_vindex_search_ef(const llmc_vindex_t *ix, const llmc_key_t *part, const float *q,
                             size_t k, unsigned ef, llmc_vindex_hit_t *out)
{
    return llmc_vindex_search_near(ix, part, q, k, &(llmc_hnsw_walk_t){.ef = ef}, out);
}

size_t llmc_vindex_search_near(const llmc_vindex_t *ix, const llmc_key_t *part, const float *q,
                               size_t k, llmc_hnsw_walk_t *w, llmc_vindex_hit_t *out)
{
    const part_t *p = ix->parts[part_find(ix, part)];
    size_t n = 0;
    w->widened = 0;
    if (!p || k == 0)
        return 0;
    if (p->g)
        return graph_search(p->g, q, k, w, out);
    for (uint32_t s = 0; s < p->n; s++) {
        float sc = ix->dot(q, p->vecs + (size_t)s * ix->dim, ix->dim);
        uint64_t id = p->ids[s];
        if (n == k && !better(sc, id, out[n - 1].score, out[n - 1].id))
            continue;
        size_t i = n < k ? n++ : n - 1;
        while (i > 0 && better(sc, id, out[i - 1].score, out[i - 1].id)) {
            out[i] = out[i - 1];
            i--;
        }
        out[i] = (llmc_vindex_hit_t){.id = id, .score = sc};
    }
    return n;
}

size_t llmc_vindex_count(const llmc_vindex_t *ix)
{
    return ix->rcount;
}

size_t llmc_vindex_partitions(const llmc_vindex_t *ix)
{
    return ix->pcount;
}

size_t llmc_vindex_partition_count(const llmc_vindex_t *ix, const llmc_key_t *part)
{
    const part_t *p = ix->parts[part_find(ix, part)];
    return p ? p->n : 0;
}

#define BAD(...) (why ? (void)snprintf(why, why_len, __VA_ARGS__) : (void)0, LLMC_ECORRUPT)

int llmc_vindex_check(const llmc_vindex_t *ix, char *why, size_t why_len)
{
    size_t parts = 0, vectors = 0, recs = 0;
    for (size_t i = 0; i < ix->pcap; i++) {
        const part_t *p = ix->parts[i];
        if (!p)
            continue;
        parts++;
        if (part_find(ix, &p->key) != i)
            return BAD("partition at %zu not found by its key", i);
        if (p->g) {
            char gw[120] = "";
            if (llmc_hnsw_check(p->g, gw, sizeof(gw)) < 0)
                return BAD("partition at %zu: graph: %s", i, gw);
            if (p->n == 0 || llmc_hnsw_count(p->g) != p->n || p->ids || p->vecs)
                return BAD("partition at %zu holds %u, its graph %zu", i, p->n,
                           llmc_hnsw_count(p->g));
            vectors += p->n;
            continue;
        }
        if (p->n == 0 || p->n > p->cap)
            return BAD("partition at %zu holds %u of %u", i, p->n, p->cap);
        for (uint32_t s = 0; s < p->n; s++) {
            const idrec_t *rec = &ix->recs[rec_find(ix, p->ids[s])];
            if (rec->p != p || rec->slot != s)
                return BAD("id %llu in slot %u has a record for another place",
                           (unsigned long long)p->ids[s], s);
            if (!normalised(p->vecs + (size_t)s * ix->dim, ix->dim))
                return BAD("id %llu: vector not normalised", (unsigned long long)p->ids[s]);
        }
        vectors += p->n;
    }
    for (size_t i = 0; i < ix->rcap; i++) {
        const idrec_t *rec = &ix->recs[i];
        if (!rec->p)
            continue;
        recs++;
        if (rec_find(ix, rec->id) != i)
            return BAD("id %llu not found by its hash", (unsigned long long)rec->id);
        if (rec->p->g) {
            /* Records point at distinct live nodes carrying their ids and
               match the graph's count in number: one record per node. */
            if (!llmc_hnsw_live(rec->p->g, rec->slot) ||
                llmc_hnsw_label(rec->p->g, rec->slot) != rec->id)
                return BAD("id %llu's record points at a node without it",
                           (unsigned long long)rec->id);
            if (!normalised(llmc_hnsw_vector(rec->p->g, rec->slot), ix->dim))
                return BAD("id %llu: vector not normalised", (unsigned long long)rec->id);
            continue;
        }
        if (rec->slot >= rec->p->n || rec->p->ids[rec->slot] != rec->id)
            return BAD("id %llu's record points at a slot without it", (unsigned long long)rec->id);
    }
    if (parts != ix->pcount || recs != ix->rcount || vectors != recs)
        return BAD("counts disagree: %zu/%zu partitions, %zu vectors, %zu/%zu records", parts,
                   ix->pcount, vectors, recs, ix->rcount);
    if (ix->pcount * 2 > ix->pcap || ix->rcount * 2 > ix->rcap)
        return BAD("a table is over half full");
    return 0;
}
