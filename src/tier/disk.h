/*
 * tier/disk.h: the on-disk cache tier, an LMDB environment in a directory.
 *
 * It implements llmc/tier.h. get() reads LMDB's memory map in a read-only
 * transaction on the caller's thread and never waits for the writer. put(),
 * purge() and tick() only queue work for one writer thread, which commits
 * many entries per transaction; a full queue drops the write (counted), so
 * no event loop ever blocks on the disk.
 *
 * The directory holds data.mdb and lock.mdb (LMDB's) and llmcached.lock,
 * which this tier holds an exclusive flock on for as long as it is open: a
 * second gateway on the same directory is refused (LLMC_ELOCKED). A
 * directory others may write to (group or world write bits) is refused
 * (LLMC_EINVAL): they could swap the files under the gateway.
 *
 * The cache is a cache: a data.mdb LMDB refuses (MDB_INVALID, MDB_CORRUPTED,
 * ...) is moved aside as data.mdb.corrupt-<unix time>, kept for inspection,
 * logged once on stderr and counted (xstats "quarantined", and "errors"),
 * and the tier starts empty, unless cfg->fail_on_corrupt. llmcached.open,
 * a marker written at open and removed at a clean close, counts the runs in
 * a row that ended without closing the tier: found at two starts in a row
 * (a crash loop, which damaged pages can cause inside LMDB itself), the data
 * file is moved aside too. Damage LMDB reports while the file is in use
 * (MDB_CORRUPTED, MDB_PAGE_NOTFOUND) stops all use of it for the rest of the
 * run (every get a miss, every write a counted error: a write through a
 * damaged page can crash inside LMDB) and is noted in the marker, so the
 * next start moves it aside.
 *
 * Records compressed at rest name their zstd dictionary (llmc/zdict.h),
 * which stays pinned while a record may use it. Every dict_census_ms the
 * writer takes a census of the dictionaries its committed records name,
 * between its other work, and hands it to zdict, which frees (and deletes
 * the file of) a dictionary that is not current, that no record names and
 * no memory entry holds. The census reads only what it must: first the
 * record each candidate was last seen in, then records in key order until
 * every candidate is seen; a full read of the file happens only when a
 * dictionary is about to be freed.
 */
#ifndef LLMC_TIER_DISK_H
#define LLMC_TIER_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmc/tier.h"

typedef enum llmc_disk_sync {
    LLMC_DISK_SYNC_FULL,      /* fsync every commit: a power loss loses nothing committed */
    LLMC_DISK_SYNC_PERIODIC,  /* fsync every sync_interval_ms: a power loss loses that much */
    LLMC_DISK_SYNC_NONE,      /* never fsync: the OS writes back when it likes */
} llmc_disk_sync_t;

typedef struct llmc_disk_config {
    const char *path;          /* data directory; created 0700 when missing */
    llmc_disk_sync_t sync;
    int64_t sync_interval_ms;  /* with LLMC_DISK_SYNC_PERIODIC; 0 means 1000 */
    uint64_t max_bytes;        /* LMDB map size: the file never grows past it */
    size_t queue_len;          /* writes waiting for the writer; 0 means 65536 */
    int64_t keep_stale_ms;     /* entries are kept (and served as stale) this long past expiry */
    unsigned max_readers;      /* concurrent get() calls; 0 means 512 */
    size_t sweep_budget;       /* expired entries removed per tick(); 0 means 256 */
    bool fail_on_corrupt;      /* a data file LMDB refuses fails the open instead of being
                                  moved aside (and a crash loop is only reported) */
    int64_t dict_census_ms;    /* between censuses of the compression dictionaries the
                                  records use; 0: none (dictionaries kept for good) */
} llmc_disk_config_t;

/*
 * Opens (creating when missing) the disk tier in cfg->path and starts its
 * writer thread. Start-up reads no entry: it costs the same for a million
 * entries as for none. Returns 0 and the tier in *out, or LLMC_EINVAL,
 * LLMC_ELOCKED (another process holds the directory), LLMC_ECORRUPT (a data
 * file LMDB refuses, with fail_on_corrupt), LLMC_EIO or LLMC_ENOMEM with a
 * message for the operator in err (errlen bytes). A data file moved aside
 * is reported on stderr, once, not as an error.
 * Call from the main thread before the loops start.
 */
int llmc_tier_disk_open(const llmc_disk_config_t *cfg, llmc_tier_t **out, char *err, size_t errlen);

/*
 * Blocks until every write, purge and sweep queued before the call is
 * committed (or has failed and been counted). For tests and shutdown; never
 * from an event loop.
 */
void llmc_tier_disk_flush(llmc_tier_t *t);

/*
 * Runs a census of the compression dictionaries this tier's records use (as
 * every dict_census_ms does), and blocks until one that began after the
 * call has ended: afterwards, a dictionary no committed record named, not
 * current and held by no memory entry is freed and its file deleted. For
 * tests and tools; never from an event loop.
 */
void llmc_tier_disk_census(llmc_tier_t *t);

#endif
