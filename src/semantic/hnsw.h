/*
 * semantic/hnsw.h: an HNSW graph (hierarchical navigable small world) over
 * L2-normalised float vectors, scored by cosine (a dot product). The
 * semantic index (semantic/index.c) puts one in a partition once the
 * partition outgrows an exact scan.
 *
 * Nodes are numbered slots; each carries the caller's 64-bit label. Deletes
 * are real: the node is unlinked, the nodes that linked to it are
 * reconnected from their own and its neighbours, and its slot is reused by
 * a later add.
 *
 * Threads: searches (llmc_hnsw_search and the reads below) may run side by
 * side, each on its own scratch area taken from the graph's pool; add,
 * remove, check and free must run alone, with no search in flight. A
 * reader-writer lock around the graph, read-held by searches and
 * write-held by the rest, is the discipline. Pure: no globals, no clock.
 */
#ifndef LLMC_SEMANTIC_HNSW_H
#define LLMC_SEMANTIC_HNSW_H

#include <stddef.h>
#include <stdint.h>

typedef struct llmc_hnsw llmc_hnsw_t;

typedef struct llmc_hnsw_opts {
    unsigned m;               /* links per node above layer 0, 2m at layer 0 (2..64; 0: 16) */
    unsigned ef_construction; /* beam width while linking a new node (0: 200) */
    unsigned ef_search;       /* beam width of a search that names none (0: 64) */
    uint64_t seed;            /* of the level draw (0: a fixed default), so a build repeats */
    /* Non-zero: each node also keeps an int8 code of its vector (dim bytes
       more), and searches walk the graph by codes, a quarter of the
       memory traffic, then score their finds again by float. Links are
       still chosen by float. */
    unsigned quantize;
} llmc_hnsw_opts_t;

typedef struct llmc_hnsw_hit {
    uint64_t label;
    uint32_t node;
    float score; /* cosine similarity */
} llmc_hnsw_hit_t;

/* A new empty graph of dim-dimensional vectors (1..4096), or NULL (bad
   dim or m, no memory). opts may be NULL (every default). */
llmc_hnsw_t *llmc_hnsw_new(unsigned dim, const llmc_hnsw_opts_t *opts);
void llmc_hnsw_free(llmc_hnsw_t *h);

/* Adds vec (dim floats, copied, normalised by the caller) under label; its
   node number into *node. 0 or LLMC_ENOMEM (the graph is unchanged). */
int llmc_hnsw_add(llmc_hnsw_t *h, uint64_t label, const float *vec, uint32_t *node);

/* Deletes live node node for real (see above). */
void llmc_hnsw_remove(llmc_hnsw_t *h, uint32_t node);

/* The (about) k nodes closest to q, best first, into out, searching with
   beam width ef (0: the graph's ef_search; never below k). Returns how
   many. */
size_t llmc_hnsw_search(const llmc_hnsw_t *h, const float *q, size_t k, unsigned ef,
                        llmc_hnsw_hit_t *out);

/*
 * How a search walks, for a caller that acts only on nodes scoring at least
 * some similarity (the semantic tier's threshold): most searches find
 * nothing near it, and a narrow beam tells that at a fraction of the cost.
 * With ef_lo (non-zero, under ef) the layer-0 walk runs at beam ef_lo, and
 * goes on at ef only when the best it found scores at least near (by the
 * walk's own measure: int8 codes in a quantized graph, so near should sit
 * below the caller's threshold by a margin). Widening keeps what the
 * narrow walk scored: the wide walk goes on from there.
 */
typedef struct llmc_hnsw_walk {
    unsigned ef;    /* the beam width (0: the graph's ef_search; never below k) */
    unsigned ef_lo; /* 0: walk at ef throughout */
    float near;
    int widened;    /* out: the narrow walk found something near and widened */
} llmc_hnsw_walk_t;
size_t llmc_hnsw_search_walk(const llmc_hnsw_t *h, const float *q, size_t k,
                             llmc_hnsw_walk_t *w, llmc_hnsw_hit_t *out);
/* Whether node is a live node (not a free slot). */
int llmc_hnsw_live(const llmc_hnsw_t *h, uint32_t node);

/* A live node's vector and label. */
const float *llmc_hnsw_vector(const llmc_hnsw_t *h, uint32_t node);
uint64_t llmc_hnsw_label(const llmc_hnsw_t *h, uint32_t node);

/* The dot product of two n-float vectors with the widest instructions this
   CPU runs (AVX-512, AVX2, else portable C), chosen at run time: for a
   caller's own exact scans (semantic/index.c). */
typedef float (*llmc_dot_fn)(const float *a, const float *b, unsigned n);
llmc_dot_fn llmc_hnsw_dot_fn(void);

/* Live nodes; bytes the graph holds (vectors, links, scratch). */
size_t llmc_hnsw_count(const llmc_hnsw_t *h);
size_t llmc_hnsw_bytes(const llmc_hnsw_t *h);
/* Of those, the bytes in the graph's own mappings (huge pages for a big
   graph, semantic/hnsw.c), which malloc's statistics do not see. */
size_t llmc_hnsw_mapped(const llmc_hnsw_t *h);

/*
 * Checks every invariant: each link points at a live node that has the
 * link's level, no self or repeated link, no list over its bound, the
 * stored in-degrees equal the links counted, each in-list names exactly
 * the nodes that link to its node one way (not those it links back to),
 * each node with levels owns its upper lists, the entry point is live and
 * on the top level, free slots are free and their stack ends. 0, or
 * LLMC_ECORRUPT (with what broke in why, when why is not NULL).
 */
int llmc_hnsw_check(const llmc_hnsw_t *h, char *why, size_t why_len);

#endif
