/*
 * semantic/index.h: the vector index of the semantic tier. Vectors live in
 * partitions (a 32-byte partition key: everything of a request but its last
 * question, hashed), and a search looks in one partition only, so two
 * questions under different system prompts, models or namespaces can never
 * meet. Each vector carries the caller's 64-bit id, unique across the index.
 *
 * Threads: many searches, one writer. llmc_vindex_search(_ef), _count,
 * _partitions and _partition_count only read (a graph's search takes its
 * own scratch area, semantic/hnsw.h), so any number may run at once;
 * insert, delete, check and free change the index and must run alone. A
 * pthread_rwlock_t around the index, read-held for searches and
 * write-held for the rest (writer-preferring, or a stream of searches can
 * starve the writer on glibc), is the discipline; measured by
 * bench/hnsw_bench.cc -threads. Pure: no server header, no globals, no
 * clock.
 */
#ifndef LLMC_SEMANTIC_INDEX_H
#define LLMC_SEMANTIC_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "llmc/entry.h"
#include "semantic/hnsw.h"

typedef struct llmc_vindex llmc_vindex_t;

typedef struct llmc_vindex_hit {
    uint64_t id;
    float score; /* cosine similarity, -1..1 */
} llmc_vindex_hit_t;

/* How partitions are searched. Zero fields take the defaults. */
typedef struct llmc_vindex_opts {
    /* A partition that reaches this many vectors moves from an exact scan
       to an HNSW graph (semantic/hnsw.h), and stays there (0: 1,000;
       UINT32_MAX: never). */
    uint32_t hnsw_threshold;
    unsigned m, ef_construction, ef_search; /* the graph's (0: 16, 200, 64) */
    unsigned quantize; /* non-zero: graphs walk by int8 codes (hnsw.h) */
} llmc_vindex_opts_t;

/* A new index of dim-dimensional vectors (1..4096), or NULL (bad dim or
   options, no memory). llmc_vindex_new takes every default. */
llmc_vindex_t *llmc_vindex_new(unsigned dim);
llmc_vindex_t *llmc_vindex_new_opts(unsigned dim, const llmc_vindex_opts_t *opts);
void llmc_vindex_free(llmc_vindex_t *ix);

/*
 * Stores vec (dim floats, copied; L2 norm 1 within 1e-3) under id in
 * partition part, replacing what id held before, in whichever partition.
 * 0, LLMC_EINVAL (a vector not normalised or not finite; nothing changes)
 * or LLMC_ENOMEM (nothing changes).
 */
int llmc_vindex_insert(llmc_vindex_t *ix, const llmc_key_t *part, uint64_t id, const float *vec);

/* Removes id and its vector, for real: the partition shrinks (in a scanned
   partition the last vector takes its slot; in a graph the node is
   unlinked and its neighbours reconnected) and an emptied partition is
   freed. 0 or LLMC_ENOENT. */
int llmc_vindex_delete(llmc_vindex_t *ix, uint64_t id);

/*
 * The k vectors of partition part closest to q (dim floats, normalised) by
 * cosine, best first (ties: lower id first), into out. Returns how many
 * (0 for an unknown partition). Exact in a scanned partition; in a graph
 * the best k found by a beam of ef_search (recall@10 >= 0.95 at the
 * defaults, measured by make bench-hnsw).
 */
size_t llmc_vindex_search(const llmc_vindex_t *ix, const llmc_key_t *part, const float *q,
                          size_t k, llmc_vindex_hit_t *out);

/* The same with the graph's beam width named: ef (0: ef_search). A caller
   that needs only the few best above a similarity threshold can search far
   narrower than recall@10 would need (bench/semantic_bench.c measures). */
size_t llmc_vindex_search_ef(const llmc_vindex_t *ix, const llmc_key_t *part, const float *q,
                             size_t k, unsigned ef, llmc_vindex_hit_t *out);

/*
 * The same for a caller that acts only on vectors scoring at least some
 * similarity: in a graph, the walk w describes (semantic/hnsw.h: a narrow
 * walk at w->ef_lo first, widened to w->ef only when its best find scores
 * at least w->near; w->widened says it did). A scanned partition is
 * scanned whole, as ever, and never widens.
 */
size_t llmc_vindex_search_near(const llmc_vindex_t *ix, const llmc_key_t *part, const float *q,
                               size_t k, llmc_hnsw_walk_t *w, llmc_vindex_hit_t *out);

/* The beam width for a caller that wants only the few best above a
   similarity threshold (the semantic tier: 4 candidates at 0.70). At 32,
   of the stored vectors the tier would act on, make bench-semantic found
   all for near-duplicates of stored questions at 10,000 and 100,000, and
   99.8% (10,000) and 96.9% (100,000) for new questions (64: 99.1%). */
#define LLMC_VINDEX_FEW_EF 32

/* How many vectors the index holds, and in how many partitions. */
size_t llmc_vindex_count(const llmc_vindex_t *ix);
size_t llmc_vindex_partitions(const llmc_vindex_t *ix);
/* How many vectors partition part holds. */
size_t llmc_vindex_partition_count(const llmc_vindex_t *ix, const llmc_key_t *part);

/*
 * Checks every invariant: each id's record points at a slot that holds that
 * id, each slot's id has that record, counts agree, each partition is
 * found by its key, no partition is empty, every vector is finite and
 * normalised, and each graph passes llmc_hnsw_check. 0, or LLMC_ECORRUPT (with what broke in why, when why is not
 * NULL, up to why_len bytes).
 */
int llmc_vindex_check(const llmc_vindex_t *ix, char *why, size_t why_len);

#endif
