/*
 * zdict.h: zstd compression of stored answers at rest, with dictionaries
 * trained from the cache's own answers (issue 18).
 *
 * One registry per process (like the allocator): the record codec reads
 * records written by any tier and thread, and a record names its dictionary
 * by id, so the dictionaries must be findable from anywhere. Ids start at
 * 1; 0 means "no dictionary". A dictionary, once made current, is never
 * freed before llmc_zdict_shutdown: records that name it may still be read.
 * With a directory, each dictionary is written there (zdict-<id>) before
 * anything is compressed with it, so every record on disk can be read after
 * a restart.
 *
 * Lifecycle: a dictionary is kept while anything may need it, and freed
 * (its file removed) when nothing does. Packed memory entries hold theirs
 * (llmc_zdict_pack_held, llmc_zdict_drop when the entry is freed); a
 * dictionary a disk record was written with (llmc_zdict_pack), or loaded
 * from the directory, is pinned: kept until the disk tier's census
 * (llmc_zdict_census_begin/_end) finds that no committed record names it.
 * A dictionary that is not current, not pinned and held by no entry is
 * freed at once; the current one never is.
 *
 * Training: llmc_zdict_pack keeps a sample of what it compresses; once
 * train_samples samples are held (and again after each retrain_every new
 * ones) a background thread trains a new dictionary (ZDICT_trainFromBuffer)
 * and makes it current. Packing never waits for training.
 */
#ifndef LLMC_ZDICT_H
#define LLMC_ZDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LLMC_ZDICT_MAX 64u          /* dictionaries held at most; training waits for one to go */
#define LLMC_ZDICT_SIZE (64u << 10) /* bytes of one trained dictionary */

typedef struct llmc_zdict_opts {
    bool on;               /* compress at rest at all */
    size_t min_bytes;      /* bodies below this stay as they are */
    size_t train_samples;  /* samples before the first dictionary; 0: never train */
    size_t retrain_every;  /* new samples before the next one; 0: train once */
    bool sample_held_only; /* sample only what llmc_zdict_pack_held packs: the memory
                              tier packs every answer the disk tier writes, which
                              sampled twice would count double and train on twins */
} llmc_zdict_opts_t;

typedef struct llmc_zdict_stats {
    uint32_t current;      /* id of the dictionary new records use; 0: none */
    uint32_t count;        /* dictionaries held */
    uint64_t trainings;    /* dictionaries trained by this process */
    uint64_t removed;      /* dictionaries freed once nothing used them */
    uint32_t pinned;       /* dictionaries held because disk records may use them */
    uint64_t unpinned;     /* dictionaries a census found no disk record using */
} llmc_zdict_stats_t;

/* Sets the options and loads the dictionaries in dir (NULL: keep them in
   memory only). Returns 0 or an LLMC_E* code with err filled in. Call once,
   before any pack; llmc_zdict_shutdown undoes it. */
int llmc_zdict_init(const llmc_zdict_opts_t *o, const char *dir, char *err, size_t errlen);

/* Waits for a training in progress and frees every dictionary. */
void llmc_zdict_shutdown(void);

/* Compresses src when the options say so and it pays: returns 1 with *out
   (malloc'd, *out_len bytes) and *dict_id, 0 when src should be stored as
   it is, or a negative LLMC_E* code. Also samples src for training. Any
   thread. */
int llmc_zdict_pack(const void *src, size_t len, uint8_t **out, size_t *out_len, uint32_t *dict_id);

/* As llmc_zdict_pack, for data kept in memory: on 1 with *dict_id not 0,
   the caller holds that dictionary until it calls llmc_zdict_drop(*dict_id)
   (when the packed data is freed), and the dictionary is not pinned. */
int llmc_zdict_pack_held(const void *src, size_t len, uint8_t **out, size_t *out_len,
                         uint32_t *dict_id);

/* Samples src for training as llmc_zdict_pack_held would, without packing
   it (an answer a tier keeps as it came). Any thread. */
void llmc_zdict_sample(const void *src, size_t len);

/* Gives back a hold taken by llmc_zdict_pack_held; 0 is ignored. The last
   hold on a dictionary that is not current nor pinned frees it. Any thread. */
void llmc_zdict_drop(uint32_t dict_id);

/* Decompresses exactly raw_len bytes into dst. LLMC_ECORRUPT when the frame
   is bad or its size differs; LLMC_EVERSION when dictionary dict_id is
   unknown (a sound record this process cannot read). Any thread; holds the
   dictionary while it decompresses, so a census may unpin it meanwhile. */
int llmc_zdict_unpack(uint32_t dict_id, const void *src, size_t len, void *dst, size_t raw_len);

/* Whether src (len bytes) can be a frame of raw_len bytes, checked before
   anything is allocated for it: the frame's own size field, when it has
   one, must agree, and no zstd frame expands more than
   LLMC_ZDICT_MAX_EXPANSION times (a block of up to 128 KiB takes at least
   a 3-byte header and a byte). 0 or LLMC_ECORRUPT: a damaged or forged
   record must not size a multi-gigabyte buffer. */
int llmc_zdict_frame_fits(const void *src, size_t len, uint64_t raw_len);
#define LLMC_ZDICT_MAX_EXPANSION 32768u

/*
 * The census of the dictionaries disk records use, which unpins those no
 * record names (the disk tier's writer thread runs it over its committed
 * records, tier/disk.c). llmc_zdict_census_begin writes into ids (room for
 * LLMC_ZDICT_MAX) the pinned dictionaries that are not current, and returns
 * how many: the only ones this census may unpin. No record packed from then
 * on can name one of them (llmc_zdict_pack uses the current dictionary, and
 * a dictionary never becomes current again), so the caller need only make
 * sure that every record packed before the call is committed, visible to
 * what it reads next. Having read every record, it calls
 * llmc_zdict_census_end(ids, seen, n), seen[i] saying whether a record
 * names ids[i]: the others are unpinned, and freed with their file unless a
 * memory entry still holds them. Returns how many it unpinned. Any thread;
 * one census at a time (one disk tier per process).
 */
size_t llmc_zdict_census_begin(uint32_t ids[LLMC_ZDICT_MAX]);
size_t llmc_zdict_census_end(const uint32_t *ids, const bool *seen, size_t n);

/* Trains a dictionary now from the samples held, synchronously (tests,
   bench). 0 or an LLMC_E* code. */
int llmc_zdict_train_now(void);

void llmc_zdict_get_stats(llmc_zdict_stats_t *s);

#endif
