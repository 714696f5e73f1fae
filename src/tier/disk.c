/*
 * disk.c: the on-disk cache tier (LMDB), see tier/disk.h.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Three named databases in one environment: "entries" (32-byte key ->
 *   record), "by_age" (created_ms big-endian + key -> empty) and "by_expiry"
 *   (expires_ms big-endian + key -> empty). Eviction walks by_age from the
 *   front (oldest first) and the sweep walks by_expiry from the front, so
 *   neither ever scans the whole file. An index entry whose record was
 *   replaced or is unreadable is an orphan; whoever meets one at the front
 *   of an index checks the record's own times and just drops the orphan.
 * - Only the writer thread writes. get() runs on any loop thread in a
 *   read-only transaction (MDB_NOTLS, so a transaction is not tied to a
 *   thread); read transactions are reset and kept in a pool, not freed,
 *   because renewing one skips taking a reader slot.
 * - The map size is max_bytes, so the file can never outgrow --disk-max;
 *   the writer keeps headroom below it. It counts pages in use (every
 *   database's pages, from mdb_stat), not the file's high-water mark, which
 *   never shrinks: LMDB reuses freed pages. When less than 15% (and at
 *   least 128 pages) is free it evicts the oldest entries until 10% more
 *   is. LMDB copies every page it changes and reuses a freed page only two
 *   transactions later, so the headroom must hold a few transactions: each
 *   one is kept to 1/64 of the map (size_txns). MDB_MAP_FULL can still
 *   happen (a reader pinning pages, big records wanting contiguous pages)
 *   and is answered by evicting and retrying, never by failing the gateway.
 * - Purges are asynchronous like writes, but a get() must not return what a
 *   queued purge removes: until the writer commits a purge, get() checks
 *   what it found against the pending purges, and a purge committed while a
 *   get() was reading makes that get() a miss (purges_done changed). A
 *   purge asked on an attached worker loop reports back there, through
 *   that loop's uv_async, once committed, with what it really removed (a
 *   scan's count is known only then); the queue keeps its own copy of the
 *   selector (llmc_purge_dup), strings and all.
 * - Quarantine (disk.h) happens only at open, on the main thread, with the
 *   flock held: nothing else can be using data.mdb. A file LMDB opens is
 *   also probed (the first and last key of every database: a root-to-leaf
 *   path each, constant time) so that a damaged root is found at start, not
 *   by the writer thread. LMDB's lock.mdb goes with the file: its reader
 *   table describes the old one.
 * - A record that fails its checksum, or a value LMDB hands over that does
 *   not fit the file (value_sound), is damage: never deleted (a delete goes
 *   through the damaged page, and LMDB crashes there), and the tier stops
 *   using the file (note_damage). The writer checks every value it is about
 *   to delete the same way.
 * - Durability: 'full' is LMDB's default (fsync per commit); 'periodic' and
 *   'none' open with MDB_NOSYNC, which survives kill -9 (the pages are in
 *   the OS) but not a power loss between syncs; 'periodic' syncs every
 *   interval from the writer thread, the only place that reads a clock.
 * - The dictionary census (disk.h) runs on the writer thread, a chunk of
 *   records per queued op, so writes go on between chunks. That is also
 *   what makes it sound: the writer packs a record and commits it in one
 *   batch, so every record packed before the census began is committed
 *   before its first read, and zdict offers as candidates only
 *   dictionaries no later record can name (llmc_zdict_census_begin). A
 *   record the census cannot read (damage, another format) makes it
 *   inconclusive: nothing is freed. Before files go, the deletes that
 *   freed them are synced (also with 'periodic' and 'none'): after a power
 *   loss no record may come back naming a deleted dictionary.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <uv.h>

#include "llmc/error.h"
#include "llmc/record.h"
#include "llmc/zdict.h"
#include "tier/disk.h"

#define BATCH_MAX       512      /* most entries committed in one transaction */
#define EVICT_MAX       8192     /* most entries evicted in one transaction */
#define TXN_SHARE       64       /* a transaction touches at most map pages / this */
#define EVICT_CHUNK     64       /* oldest entries removed between size checks */
#define HEADROOM_PCT    15       /* evict when less than this share of the map is free */
#define HEADROOM_PAGES  128      /* ... or fewer than this many pages */
#define EVICT_PCT       10       /* ... until this share more is free */
#define MAP_FULL_TRIES  4
#define SCAN_CHUNK      4096     /* records a purge scan reads per transaction */
#define CENSUS_CHUNK    4096     /* records a dictionary census reads per step */
#define IDX_LEN         (8 + LLMC_KEY_LEN)
#define LMDB_FREE_DBI   0        /* LMDB's own databases, as mdb_stat(1) reads them */
#define LMDB_MAIN_DBI   1
#define MARKER          "llmcached.open"  /* see check_marker */
#define DAMAGED         "damaged"         /* the marker's word after note_damage */

enum op_kind { OP_PUT, OP_DEL_FOREIGN, OP_PURGE, OP_SWEEP, OP_CENSUS };

typedef struct op {
    struct op *next;     /* queue, then a worker's list of purges to report */
    struct op *pnext;    /* pending purges */
    uint64_t seq;
    enum op_kind kind;
    bool bounded;        /* counts against queue_len */
    llmc_entry_t *e;     /* OP_PUT: our reference */
    llmc_key_t key;      /* OP_DEL_FOREIGN */
    int64_t now_ms;      /* OP_SWEEP */
    llmc_purge_t *sel;   /* OP_PURGE: our copy (llmc_purge_dup) */
    /* OP_PURGE reported when committed, on worker's loop (NULL: nobody
       waits, or detach already answered). Under mu. */
    llmc_tier_purge_cb done;
    void *done_arg;
    unsigned worker;
    size_t removed;      /* what the writer removed */
} op_t;

/* A worker loop that purges report to (attach/detach). */
typedef struct disk_worker {
    uv_async_t async;    /* wakes the loop for committed purges */
    struct disk *d;
    op_t *reports;       /* committed purges to report there; under mu */
    bool attached;       /* async may be sent to; under mu */
} disk_worker_t;

/* The dictionary census (disk.h), writer thread only. */
typedef struct census {
    bool running, inconclusive;
    size_t n, nseen;                    /* candidates ids[0..n), how many seen */
    uint32_t ids[LLMC_ZDICT_MAX];
    bool seen[LLMC_ZDICT_MAX];
    llmc_key_t at[LLMC_ZDICT_MAX];      /* where each seen one was seen */
    llmc_key_t from;                    /* the last key read, once started */
    bool started;
    /* Where the last census saw each dictionary: looked at first, so that
       a census whose candidates are all still there reads nothing more. */
    size_t nwit;
    uint32_t wit_id[LLMC_ZDICT_MAX];
    llmc_key_t wit_key[LLMC_ZDICT_MAX];
} census_t;

typedef struct disk {
    llmc_tier_t tier;
    MDB_env *env;
    MDB_dbi entries, by_age, by_exp;
    char *path;
    int lock_fd;
    llmc_disk_sync_t sync;
    int64_t sync_interval_ms, keep_stale_ms;
    uint64_t max_bytes;
    uint64_t psize;          /* LMDB's page size, read at open */
    const uint8_t *map;      /* LMDB's map of data.mdb and its length (find_map), */
    size_t map_len;          /* or NULL when /proc did not say */
    size_t queue_len, sweep_budget;
    size_t batch_max, batch_bytes, evict_max;   /* sized to the map, see size_txns() */
    uint64_t high_bytes, low_bytes;             /* eviction starts above high, stops at low */

    /* The queue; everything here is under mu. */
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* the writer waits for work (CLOCK_MONOTONIC) */
    pthread_cond_t done;     /* flushers wait for done_seq */
    op_t *head, *tail;
    op_t *pending;           /* queued purges, not yet committed */
    size_t nqueued;          /* bounded ops in the queue */
    uint64_t enq_seq, done_seq;
    bool stop, sweep_queued, sync_inited;
    bool census_queued;      /* a census is queued or running */
    int64_t census_next_ms;  /* when the next is due (tick's clock) */
    uint64_t censuses;       /* ended, conclusive or not (llmc_tier_disk_census) */
    pthread_t writer;
    bool writer_started;
    _Atomic size_t npending;
    _Atomic uint64_t purges_done;
    disk_worker_t **workers; /* by worker index, from attach (main thread) */
    unsigned nworkers;

    /* Reset read transactions, ready to renew; under pool_mu. */
    pthread_mutex_t pool_mu;
    MDB_txn **pool;
    unsigned npool, max_readers;

    /* Writer thread only. */
    bool dirty;
    int64_t last_sync_ms;
    census_t census;
    size_t census_chunk;     /* CENSUS_CHUNK; a test makes it small */
    int64_t census_ms;       /* set at open */

    _Atomic uint64_t hits, misses, stored, evicted_size, evicted_ttl, purged, errors, dropped;
    _Atomic uint64_t quarantined;
    _Atomic uint64_t raw_bytes, packed_bytes; /* answers written, before/after compression */
    _Atomic uint64_t census_runs, unpinned;   /* conclusive censuses; dictionaries they unpinned */
    _Atomic bool damage_seen; /* see note_damage */
    bool damage_marked;       /* the marker says so (writer thread, then close) */
    bool fail_on_corrupt;
    bool marker_written;      /* llmcached.open is ours: removed at a clean close */
} disk_t;

/* X(field, "name", KIND, "unit", "help"): this tier's own counters. */
#define DISK_XSTATS_TABLE(X)                                                                 \
    X(quarantined, "quarantined", COUNTER, "files",                                        \
      "Data files moved aside at start (data.mdb.corrupt-<time>): LMDB refused them, or "   \
      "the gateway kept crashing with them open.")                                         \
    X(raw_bytes, "stored_raw_bytes", COUNTER, "bytes",                                      \
      "Answer bytes written to the disk tier, before compression at rest.")                \
    X(packed_bytes, "stored_packed_bytes", COUNTER, "bytes",                                \
      "The same answers' bytes as written (compressed or not; --compress-at-rest).")         \
    X(dict_current, "dict_current", GAUGE, "id",                                            \
      "Id of the compression dictionary new records use (zdict-<id>; 0: none yet).")       \
    X(dicts, "dicts", GAUGE, "dictionaries",                                                \
      "Compression dictionaries held, by the disk records and memory entries that use "     \
      "them (the whole process's).")                                                        \
    X(dicts_pinned, "dicts_pinned", GAUGE, "dictionaries",                                  \
      "Of those, the ones kept because disk records may use them.")                         \
    X(dict_trainings, "dict_trainings", COUNTER, "dictionaries",                            \
      "Compression dictionaries trained by this process.")                                  \
    X(dict_censuses, "dict_censuses", COUNTER, "censuses",                                  \
      "Censuses of the dictionaries the disk records use that ended with an answer "        \
      "(--compress-dict-gc).")                                                              \
    X(dicts_unpinned, "dicts_unpinned", COUNTER, "dictionaries",                            \
      "Dictionaries a census found no disk record using: freed at once, or once no "        \
      "memory entry holds them.")                                                           \
    X(dicts_removed, "dicts_removed", COUNTER, "dictionaries",                              \
      "Dictionaries freed, their file deleted, because nothing used them any more.")

typedef struct disk_xstats {
    DISK_XSTATS_TABLE(LLMC_STAT_FIELD)
} disk_xstats_t;

#define LLMC_STAT_TYPE disk_xstats_t
static const llmc_stat_desc_t xstats_desc[] = {DISK_XSTATS_TABLE(LLMC_STAT_DESC)};
#undef LLMC_STAT_TYPE

static void count(_Atomic uint64_t *c, uint64_t n) { atomic_fetch_add_explicit(c, n, memory_order_relaxed); }

static uint64_t load(_Atomic uint64_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int from_mdb(int rc)
{
    switch (rc) {
    case 0: return 0;
    case MDB_NOTFOUND: return LLMC_ENOENT;
    case MDB_MAP_FULL: return LLMC_EFULL;
    case MDB_READERS_FULL: return LLMC_EAGAIN;
    case MDB_VERSION_MISMATCH: return LLMC_EVERSION;
    case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: case MDB_INVALID: return LLMC_ECORRUPT;
    case ENOMEM: return LLMC_ENOMEM;
    default: return LLMC_EIO;
    }
}

/* LMDB's word that the file is not a sound environment (as opposed to no
   memory, no space, no permission, which moving the file would not mend). */
static bool damaged(int rc)
{
    return rc == MDB_CORRUPTED || rc == MDB_INVALID || rc == MDB_PAGE_NOTFOUND ||
           rc == MDB_VERSION_MISMATCH || rc == MDB_INCOMPATIBLE || rc == MDB_BAD_DBI;
}

/* LMDB found damage while the file is in use (a page of the wrong type, a
   page past the end): from then on this run neither reads nor writes the
   file (a write through a damaged page can crash inside LMDB, and a crash
   loop follows), and the next start moves it aside (check_marker). Any
   thread; the marker is written by the writer thread or at close. */
static void note_damage(disk_t *d, int rc)
{
    if (damaged(rc) && !atomic_exchange(&d->damage_seen, true))
        count(&d->errors, 1);
}

/*
 * LMDB's page header as the file holds it (the 0.9 format; lmdb.h does not
 * export it): page number (8 bytes), pad (2), flags (2), then for an
 * overflow page the count of its pages (4).
 */
#define PAGE_HDR    16
#define P_BRANCH    0x01
#define P_LEAF      0x02
#define P_OVERFLOW  0x04
#define P_META      0x08
#define P_LEAF2     0x20

/*
 * Whether a value LMDB handed us (mdb_get, a cursor) may be read, and its
 * record deleted, without trusting damaged bytes. LMDB takes a value's
 * length and its overflow pages' header from the file as they are: a
 * length past the end of the file is a SIGBUS or SIGSEGV for whoever reads
 * the value, and deleting a value whose overflow header lies (its page
 * count, its flags) frees pages it should not, or trips an assertion in
 * mdb_ovpage_free: a crash in the writer, and again at every start. So:
 * the value must end inside the file, and a value at the start of an
 * overflow page (the only place PAGE_HDR bytes into a page a value can
 * be: in a leaf page a node's header comes first) must sit under a header
 * naming that page, as an overflow page, of exactly the pages the value
 * needs. A value outside the map is in a page the writer's own transaction
 * changed (LMDB keeps those in memory): ours, so sound. Any thread.
 */
static bool value_sound(disk_t *d, const MDB_val *v)
{
    MDB_envinfo info;
    const uint8_t *base = d->map, *p = v->mv_data;
    if (!base || p < base || p >= base + d->map_len)
        return true;
    if (mdb_env_info(d->env, &info) != 0)
        return false;
    uint64_t off = (uint64_t)(p - base), end = ((uint64_t)info.me_last_pgno + 1) * d->psize;
    if (off > end || v->mv_size > end - off)
        return false;
    if (off % d->psize != PAGE_HDR)
        return true;
    uint64_t pgno;
    uint16_t flags;
    uint32_t pages;
    memcpy(&pgno, p - PAGE_HDR, sizeof pgno);
    memcpy(&flags, p - PAGE_HDR + 10, sizeof flags);
    memcpy(&pages, p - PAGE_HDR + 12, sizeof pages);
    return pgno == off / d->psize &&
           (flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2)) == P_OVERFLOW &&
           pages == (PAGE_HDR - 1 + v->mv_size) / d->psize + 1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Saturating a + b for times that came off the disk. */
static int64_t add_ms(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    return a + b;
}

/* ---- index keys: time big-endian (sign bit flipped so order holds) + key ---- */

static void idx_make(uint8_t out[IDX_LEN], int64_t t, const uint8_t *key)
{
    uint64_t u = (uint64_t)t ^ (1ull << 63);
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(u >> (56 - 8 * i));
    memcpy(out + 8, key, LLMC_KEY_LEN);
}

static int64_t idx_time(const uint8_t *k)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = (u << 8) | k[i];
    return (int64_t)(u ^ (1ull << 63));
}

static int idx_put(MDB_txn *txn, MDB_dbi dbi, int64_t t, const uint8_t *key)
{
    uint8_t buf[IDX_LEN];
    idx_make(buf, t, key);
    MDB_val k = { IDX_LEN, buf }, v = { 0, NULL };
    return mdb_put(txn, dbi, &k, &v, 0);
}

static int idx_del(MDB_txn *txn, MDB_dbi dbi, int64_t t, const uint8_t *key)
{
    uint8_t buf[IDX_LEN];
    idx_make(buf, t, key);
    MDB_val k = { IDX_LEN, buf };
    int rc = mdb_del(txn, dbi, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- writes, all on the writer thread ---- */

/*
 * Removes the record under key and the index entries its header names.
 * A record too damaged to name them leaves orphans, dropped later.
 */
static int delete_entry(disk_t *d, MDB_txn *txn, const uint8_t *key, bool *existed)
{
    MDB_val k = { LLMC_KEY_LEN, (void *)key }, v;
    int64_t created, expires;
    *existed = false;
    int rc = mdb_get(txn, d->entries, &k, &v);
    if (rc)
        return rc == MDB_NOTFOUND ? 0 : rc;
    if (!value_sound(d, &v))
        return MDB_CORRUPTED; /* never deleted through a damaged page */
    if (llmc_record_peek(v.mv_data, v.mv_size, &created, &expires) == 0) {
        if ((rc = idx_del(txn, d->by_age, created, key)) ||
            (rc = idx_del(txn, d->by_exp, expires, key)))
            return rc;
    }
    *existed = true;
    return mdb_del(txn, d->entries, &k, NULL);
}

/* Writes one entry, replacing (and unindexing) any record under its key. */
static int put_entry(disk_t *d, MDB_txn *txn, const llmc_record_plan_t *pl)
{
    const llmc_entry_t *e = pl->e;
    size_t len = pl->size;
    bool existed;
    int rc = delete_entry(d, txn, e->key.b, &existed);
    if (rc)
        return rc;
    MDB_val k = { LLMC_KEY_LEN, (void *)e->key.b }, v = { len, NULL };
    if ((rc = mdb_put(txn, d->entries, &k, &v, MDB_RESERVE)))
        return rc;
    /* The record is encoded straight into the page LMDB reserved. */
    if (llmc_record_plan_write(pl, v.mv_data, len))
        return MDB_BAD_VALSIZE;
    if ((rc = idx_put(txn, d->by_age, e->created_ms, e->key.b)))
        return rc;
    return idx_put(txn, d->by_exp, e->expires_ms, e->key.b);
}

/*
 * Removes up to n entries from the front of index dbi (by_age or by_expiry,
 * the other one is other). With limit_ms, stops at the first index time
 * past it. A front entry whose record names another time is an orphan:
 * only the index entry goes. *removed counts records removed.
 */
static int drop_front(disk_t *d, MDB_txn *txn, MDB_dbi dbi, MDB_dbi other, size_t n,
                      const int64_t *limit_ms, size_t *removed)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    for (; rc == 0 && n > 0; n--) {
        if ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)))
            break;
        uint8_t ik[IDX_LEN];
        if (k.mv_size != IDX_LEN) {     /* not ours: drop it */
            rc = mdb_cursor_del(cur, 0);
            continue;
        }
        memcpy(ik, k.mv_data, IDX_LEN);
        int64_t t = idx_time(ik), created, expires;
        if (limit_ms && t > *limit_ms)
            break;
        if ((rc = mdb_cursor_del(cur, 0)))
            break;
        MDB_val rk = { LLMC_KEY_LEN, ik + 8 };
        if ((rc = mdb_get(txn, d->entries, &rk, &v))) {
            rc = rc == MDB_NOTFOUND ? 0 : rc;
            continue;
        }
        if (!value_sound(d, &v)) {
            rc = MDB_CORRUPTED; /* never deleted through a damaged page */
            break;
        }
        int pk = llmc_record_peek(v.mv_data, v.mv_size, &created, &expires);
        if (pk == 0 && (dbi == d->by_age ? created : expires) != t)
            continue;
        if (pk == 0 && (rc = idx_del(txn, other, dbi == d->by_age ? expires : created, ik + 8)))
            break;
        if ((rc = mdb_del(txn, d->entries, &rk, NULL)))
            break;
        (*removed)++;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Bytes of pages in use by every database, LMDB's own included. */
static uint64_t used_bytes(disk_t *d, MDB_txn *txn)
{
    MDB_dbi dbis[] = { LMDB_FREE_DBI, LMDB_MAIN_DBI, d->entries, d->by_age, d->by_exp };
    uint64_t pages = 2, psize = 4096;   /* the two meta pages */
    for (size_t i = 0; i < sizeof dbis / sizeof dbis[0]; i++) {
        MDB_stat st;
        if (mdb_stat(txn, dbis[i], &st) == 0) {
            pages += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
            psize = st.ms_psize;
        }
    }
    return pages * psize;
}

/*
 * About how many entries hold want bytes: want over the average record's
 * share of the entries database, at least 1. Eviction is asked for bytes,
 * and a count fixed in entries would take dozens of big answers where one
 * or two free enough.
 */
static size_t entries_for(disk_t *d, MDB_txn *txn, uint64_t want)
{
    MDB_stat st;
    if (mdb_stat(txn, d->entries, &st) || st.ms_entries == 0)
        return 1;
    uint64_t pages = st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    uint64_t avg = pages * st.ms_psize / st.ms_entries;
    uint64_t n = avg ? want / avg + 1 : st.ms_entries;
    return n > d->evict_max ? d->evict_max : (size_t)n;
}

/* One transaction that evicts the oldest entries holding about want bytes;
   *n says how many it tried. */
static int evict_txn(disk_t *d, uint64_t want, size_t *n)
{
    MDB_txn *txn;
    size_t removed = 0;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    *n = 1;
    if (rc)
        return rc;
    *n = entries_for(d, txn, want);
    if ((rc = drop_front(d, txn, d->by_age, d->by_exp, *n, NULL, &removed))) {
        mdb_txn_abort(txn);
        return rc;
    }
    if ((rc = mdb_txn_commit(txn)) == 0)
        count(&d->evicted_size, removed);
    return rc;
}

/* Empties the three databases in one transaction, adding what went to *counter. */
static int drop_all(disk_t *d, _Atomic uint64_t *counter)
{
    MDB_txn *txn;
    MDB_stat st;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc)
        return rc;
    if ((rc = mdb_stat(txn, d->entries, &st)) || (rc = mdb_drop(txn, d->entries, 0)) ||
        (rc = mdb_drop(txn, d->by_age, 0)) || (rc = mdb_drop(txn, d->by_exp, 0))) {
        mdb_txn_abort(txn);
        return rc;
    }
    if ((rc = mdb_txn_commit(txn)) == 0)
        count(counter, st.ms_entries);
    return rc;
}

/*
 * Frees about want bytes after MDB_MAP_FULL. Deleting needs fresh pages too
 * (LMDB copies on write), so when those deletions do not fit, fewer are
 * tried; when not even one fits, the file is emptied: a cache that can no
 * longer write is worse than an empty one.
 */
static void make_room(disk_t *d, uint64_t want)
{
    size_t n;
    for (;; want /= 2) {
        if (evict_txn(d, want, &n) != MDB_MAP_FULL)
            return;
        if (n <= 1)
            break;
    }
    if (drop_all(d, &d->evicted_size))
        count(&d->errors, 1);
}

/*
 * One transaction of bound enforcement: evicts oldest entries, a chunk at a
 * time, until pages in use fall to low_bytes or evict_max went. Sets *again
 * when more must go.
 */
static int evict_to_low(disk_t *d, bool *again)
{
    MDB_txn *txn;
    MDB_stat st;
    size_t removed = 0;
    uint64_t used;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc)
        return rc;
    *again = false;
    while ((used = used_bytes(d, txn)) > d->low_bytes) {
        /* Nothing left to evict by age: stop rather than spin. */
        if ((rc = mdb_stat(txn, d->by_age, &st)) || st.ms_entries == 0)
            break;
        if (removed >= d->evict_max) {
            *again = true;
            break;
        }
        size_t chunk = entries_for(d, txn, used - d->low_bytes);
        if ((rc = drop_front(d, txn, d->by_age, d->by_exp, chunk < EVICT_CHUNK ? chunk : EVICT_CHUNK,
                             NULL, &removed)))
            break;
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    if ((rc = mdb_txn_commit(txn)) == 0)
        count(&d->evicted_size, removed);
    return rc;
}

/*
 * Keeps pages in use under high_bytes, evicting down to low_bytes in
 * transactions of at most evict_max entries. The check runs in a write
 * transaction (uncontended: this is the only writer) so that it never needs
 * a reader slot.
 */
static int enforce_bound(disk_t *d)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc)
        return rc;
    bool again = used_bytes(d, txn) > d->high_bytes;
    mdb_txn_abort(txn);
    while (rc == 0 && again)
        rc = evict_to_low(d, &again);
    return rc;
}

/* Applies a run of puts and corrupt-record deletes in one transaction. */
static int write_batch(disk_t *d, op_t *batch, uint64_t *stored, uint64_t bytes[2])
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    *stored = 0;
    bytes[0] = bytes[1] = 0;
    if (rc)
        return rc;
    for (op_t *op = batch; rc == 0 && op; op = op->next) {
        if (op->kind == OP_PUT) {
            llmc_record_plan_t pl;
            /* A record that would crowd out most of the file is not kept. */
            if (llmc_record_plan(op->e, &pl))
                continue;
            if (pl.size <= d->max_bytes / 8 && (rc = put_entry(d, txn, &pl)) == 0) {
                (*stored)++;
                bytes[0] += op->e->body_len;
                bytes[1] += pl.z ? pl.z_len + LLMC_RECORD_ZHEAD : op->e->body_len;
            }
            llmc_record_plan_free(&pl);
        } else {
            MDB_val k = { LLMC_KEY_LEN, op->key.b }, v;
            llmc_entry_t *e = NULL;
            bool existed;
            /* Only a record that is still of another format: a good put
               may have replaced it. One that does not verify now is damage,
               never deleted (note_damage stops the tier). */
            int dec = mdb_get(txn, d->entries, &k, &v) == 0 ?
                      value_sound(d, &v) ? llmc_record_decode(&op->key, v.mv_data, v.mv_size, &e)
                                         : LLMC_ECORRUPT
                      : 0;
            if (dec == LLMC_EVERSION)
                rc = delete_entry(d, txn, op->key.b, &existed);
            else if (dec == LLMC_ECORRUPT)
                rc = MDB_CORRUPTED;
            llmc_entry_unref(e);
        }
    }
    if (rc == 0)
        return mdb_txn_commit(txn);
    mdb_txn_abort(txn);
    return rc;
}

/* The bytes to free for batch to fit: its records, and no less than a chunk
   of pages (small records free a page only once its neighbours went too). */
static uint64_t room_for(const op_t *batch)
{
    uint64_t want = 0;
    for (const op_t *op = batch; op; op = op->next)
        want += op->kind == OP_PUT ? llmc_record_size(op->e) : 0;
    return want > EVICT_CHUNK * 4096 ? want : EVICT_CHUNK * 4096;
}

static void run_writes(disk_t *d, op_t *batch, size_t nput)
{
    uint64_t stored = 0, bytes[2] = {0, 0};
    int rc = 0;
    for (int attempt = 0; attempt <= MAP_FULL_TRIES; attempt++) {
        rc = write_batch(d, batch, &stored, bytes);
        if (rc != MDB_MAP_FULL)
            break;
        /* Make room for at least this batch, more each time it fails. */
        make_room(d, room_for(batch) << attempt);
    }
    note_damage(d, rc);
    if (rc == 0) {
        count(&d->stored, stored);
        count(&d->raw_bytes, bytes[0]);
        count(&d->packed_bytes, bytes[1]);
        count(&d->errors, nput - stored);
        d->dirty = true;
    } else {
        count(&d->errors, nput);
    }
    if ((rc = enforce_bound(d)) != 0) {
        note_damage(d, rc);
        count(&d->errors, 1);
    }
}

static int sweep(disk_t *d, int64_t now_ms)
{
    MDB_txn *txn;
    size_t removed = 0;
    /* An entry is kept keep_stale_ms past expiry: get() stops serving it
       once now_ms >= expires_ms + keep, and the sweep removes the same ones. */
    int64_t limit = now_ms - d->keep_stale_ms;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc)
        return rc;
    if ((rc = drop_front(d, txn, d->by_exp, d->by_age, d->sweep_budget, &limit, &removed))) {
        mdb_txn_abort(txn);
        return rc;
    }
    if ((rc = mdb_txn_commit(txn)) == 0) {
        count(&d->evicted_ttl, removed);
        d->dirty = true;
    }
    return rc;
}

/* ---- purges ---- */

/* The one record under sel->key, when sel selects it: a key alone
   without reading the record, a key with more conditions after decoding
   it. *removed: 1 or 0. */
static int purge_key(disk_t *d, const llmc_purge_t *sel, size_t *removed)
{
    MDB_txn *txn;
    bool existed = false;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc)
        return rc;
    if (!llmc_purge_is_key(sel)) {
        MDB_val k = { LLMC_KEY_LEN, (void *)sel->key.b }, v;
        llmc_entry_t *e = NULL;
        bool match = mdb_get(txn, d->entries, &k, &v) == 0 &&
                     llmc_record_decode(&sel->key, v.mv_data, v.mv_size, &e) == 0 &&
                     llmc_purge_match(sel, e);
        llmc_entry_unref(e);
        if (!match) {
            mdb_txn_abort(txn);
            return 0;
        }
    }
    if ((rc = delete_entry(d, txn, sel->key.b, &existed))) {
        mdb_txn_abort(txn);
        return rc;
    }
    if ((rc = mdb_txn_commit(txn)) == 0 && existed) {
        count(&d->purged, 1);
        *removed = 1;
    }
    return rc;
}

/*
 * Reads up to SCAN_CHUNK records from *from (or the start) and collects the
 * keys of those sel selects at the front of keys[] (*nkeys), and of those
 * that fail to decode at its back (*nbad); keys holds SCAN_CHUNK. Sets
 * *from to the last key read, *more when records remain.
 */
static int scan_chunk(disk_t *d, MDB_txn *txn, const llmc_purge_t *sel, llmc_key_t *from,
                      bool *started, bool *more, llmc_key_t *keys, size_t *nkeys, size_t *nbad)
{
    MDB_cursor *cur;
    MDB_val k = { LLMC_KEY_LEN, from->b }, v;
    int rc = mdb_cursor_open(txn, d->entries, &cur);
    if (rc)
        return rc;
    rc = mdb_cursor_get(cur, &k, &v, *started ? MDB_SET_RANGE : MDB_FIRST);
    if (rc == 0 && *started && memcmp(k.mv_data, from->b, LLMC_KEY_LEN) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    size_t n = 0;
    for (; rc == 0 && n < SCAN_CHUNK; n++, rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        llmc_entry_t *e = NULL;
        if (k.mv_size != LLMC_KEY_LEN)
            continue;
        memcpy(from->b, k.mv_data, LLMC_KEY_LEN);
        if (!value_sound(d, &v)) {
            rc = MDB_CORRUPTED; /* reading it would leave the map; never deleted */
            break;
        }
        int dec = llmc_record_decode(from, v.mv_data, v.mv_size, &e);
        if (dec == LLMC_ENOMEM)
            continue;
        if (dec)
            keys[SCAN_CHUNK - ++*nbad] = *from;
        else if (llmc_purge_match(sel, e))
            keys[(*nkeys)++] = *from;
        llmc_entry_unref(e);
    }
    *started = true;
    *more = rc == 0;
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int delete_keys(disk_t *d, MDB_txn *txn, const llmc_key_t *keys, size_t n, size_t *removed)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        bool existed;
        if ((rc = delete_entry(d, txn, keys[i].b, &existed)) == 0)
            *removed += existed;
    }
    return rc;
}

/* Scans the whole file for a purge by anything but the key, a chunk per
   transaction; *total counts what went. */
static int purge_scan(disk_t *d, const llmc_purge_t *sel, size_t *total)
{
    llmc_key_t from = { { 0 } }, *keys = malloc(SCAN_CHUNK * sizeof *keys);
    bool started = false, more = true;
    int rc = keys ? 0 : ENOMEM;
    while (rc == 0 && more) {
        MDB_txn *txn;
        size_t nkeys = 0, nbad = 0, removed = 0;
        if ((rc = mdb_txn_begin(d->env, NULL, 0, &txn)))
            break;
        rc = scan_chunk(d, txn, sel, &from, &started, &more, keys, &nkeys, &nbad);
        if (rc == 0 && (rc = delete_keys(d, txn, keys, nkeys, &removed)) == 0)
            rc = delete_keys(d, txn, keys + SCAN_CHUNK - nbad, nbad, &(size_t){ 0 });
        if (rc == 0 && (rc = mdb_txn_commit(txn)) == 0) {
            count(&d->purged, removed);
            count(&d->errors, nbad);
            *total += removed;
        } else if (rc) {
            mdb_txn_abort(txn);
        }
    }
    free(keys);
    return rc;
}

/* Runs a purge; returns how many entries it removed. */
static size_t run_purge(disk_t *d, const llmc_purge_t *sel)
{
    int rc;
    size_t removed = 0;
    uint64_t before = load(&d->purged);
    if (llmc_purge_is_all(sel)) {
        rc = drop_all(d, &d->purged);
        removed = (size_t)(load(&d->purged) - before); /* only this thread adds to it */
    } else if (sel->conds & LLMC_PURGE_KEY) {
        rc = purge_key(d, sel, &removed);
    } else {
        rc = purge_scan(d, sel, &removed);
    }
    if (rc) {
        note_damage(d, rc);
        count(&d->errors, 1);
    }
    d->dirty = true;
    return removed;
}

static int path_in(const disk_t *d, const char *name, char *out, size_t cap);

/* Says in the marker that LMDB found damage (note_damage): the next start
   moves the file aside. Writer thread, or close after it stopped. */
static void mark_damaged(disk_t *d)
{
    char file[PATH_MAX];
    static const char word[] = DAMAGED "\n";
    d->damage_marked = true;
    if (!d->marker_written || path_in(d, MARKER, file, sizeof file) != 0)
        return;
    int fd = open(file, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    if (write(fd, word, sizeof word - 1) != (ssize_t)(sizeof word - 1) || fsync(fd) != 0) {
        /* the crash-loop count still catches what this misses */
    }
    close(fd);
    fprintf(stderr, "llmcached: disk tier: damage found in %s/data.mdb (by LMDB, or a record "
            "that does not verify): it is no longer used, and the next start moves it aside\n",
            d->path);
}

/* ---- the dictionary census (disk.h), on the writer thread ---- */

static int enqueue(disk_t *d, op_t *op, bool bounded);
static void queue_del_foreign(disk_t *d, const llmc_key_t *key);

/* Notes that candidate id is named by the record under key. */
static void census_mark(census_t *c, uint32_t id, const uint8_t *key)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->ids[i] == id && !c->seen[i]) {
            c->seen[i] = true;
            memcpy(c->at[i].b, key, LLMC_KEY_LEN);
            c->nseen++;
        }
    }
}

/*
 * The dictionary the record v under key names (*id, 0: none), read without
 * its checksum (llmc_record_peek_dict). False when that cannot be read:
 * the record is then decoded as a get would, damage stopping the tier
 * (note_damage) and one of another format queued for removal; either way
 * the census cannot conclude, since the record may name a candidate.
 */
static bool census_read(disk_t *d, const llmc_key_t *key, const MDB_val *v, uint32_t *id)
{
    if (!value_sound(d, v)) {
        note_damage(d, MDB_CORRUPTED);
        return false;
    }
    if (llmc_record_peek_dict(v->mv_data, v->mv_size, id) == 0)
        return true;
    llmc_entry_t *e = NULL;
    int dec = llmc_record_decode(key, v->mv_data, v->mv_size, &e);
    llmc_entry_unref(e);
    if (dec == LLMC_ECORRUPT)
        note_damage(d, MDB_CORRUPTED);
    else if (dec == LLMC_EVERSION)
        queue_del_foreign(d, key);
    return false;
}

/* Looks where the last census saw each dictionary. */
static int census_witnesses(disk_t *d, MDB_txn *txn)
{
    census_t *c = &d->census;
    for (size_t w = 0; w < c->nwit && !c->inconclusive && c->nseen < c->n; w++) {
        MDB_val k = { LLMC_KEY_LEN, c->wit_key[w].b }, v;
        uint32_t id;
        int rc = mdb_get(txn, d->entries, &k, &v);
        if (rc == MDB_NOTFOUND)
            continue;
        if (rc)
            return rc;
        if (!census_read(d, &c->wit_key[w], &v, &id))
            c->inconclusive = true;
        else if (id == c->wit_id[w])
            census_mark(c, id, c->wit_key[w].b);
    }
    return 0;
}

/* Reads up to census_chunk records after the last one read; *more when
   the census must read on. */
static int census_chunk(disk_t *d, MDB_txn *txn, bool *more)
{
    census_t *c = &d->census;
    MDB_cursor *cur;
    MDB_val k = { LLMC_KEY_LEN, c->from.b }, v;
    *more = false;
    int rc = mdb_cursor_open(txn, d->entries, &cur);
    if (rc)
        return rc;
    rc = mdb_cursor_get(cur, &k, &v, c->started ? MDB_SET_RANGE : MDB_FIRST);
    if (rc == 0 && c->started && k.mv_size == LLMC_KEY_LEN &&
        memcmp(k.mv_data, c->from.b, LLMC_KEY_LEN) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    for (size_t n = 0; rc == 0 && n < d->census_chunk; n++) {
        uint32_t id;
        if (k.mv_size == LLMC_KEY_LEN) {
            memcpy(c->from.b, k.mv_data, LLMC_KEY_LEN);
            c->started = true;
            if (!census_read(d, &c->from, &v, &id)) {
                c->inconclusive = true;
                break;
            }
            if (id)
                census_mark(c, id, c->from.b);
            if (c->nseen == c->n)
                break; /* every candidate is named: nothing more to learn */
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    *more = rc == 0 && !c->inconclusive && c->nseen < c->n;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * Ends the census: a conclusive one hands zdict what it saw, after syncing
 * the deletes that left a candidate unnamed (a power loss must not bring
 * back a record naming a deleted dictionary), and keeps where it saw each
 * candidate for the next one.
 */
static void census_end(disk_t *d)
{
    census_t *c = &d->census;
    bool conclusive = !c->inconclusive && !atomic_load(&d->damage_seen);
    if (conclusive && c->nseen < c->n && d->sync != LLMC_DISK_SYNC_FULL && d->dirty) {
        if (mdb_env_sync(d->env, 1) != 0) {
            count(&d->errors, 1);
            conclusive = false;
        } else {
            d->dirty = false;
            d->last_sync_ms = mono_ms();
        }
    }
    if (conclusive) {
        count(&d->unpinned, llmc_zdict_census_end(c->ids, c->seen, c->n));
        count(&d->census_runs, 1);
        c->nwit = 0;
        for (size_t i = 0; i < c->n; i++) {
            if (c->seen[i]) {
                c->wit_id[c->nwit] = c->ids[i];
                c->wit_key[c->nwit++] = c->at[i];
            }
        }
    }
    c->running = false;
    pthread_mutex_lock(&d->mu);
    d->census_queued = false;
    d->censuses++;
    pthread_cond_broadcast(&d->done);
    pthread_mutex_unlock(&d->mu);
}

/* Queues a step of the census (the first, or the next). */
static int census_queue(disk_t *d)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return LLMC_ENOMEM;
    op->kind = OP_CENSUS;
    if (enqueue(d, op, false)) {
        free(op);
        return LLMC_EFULL;
    }
    return 0;
}

/*
 * One step: begins the census (its candidates, where they were last seen)
 * or goes on reading, and ends it once every candidate is seen, every
 * record read, or it cannot conclude. True when there is more to read.
 */
static bool census_step(disk_t *d)
{
    census_t *c = &d->census;
    MDB_txn *txn;
    bool more = false, fresh = !c->running;
    if (fresh) {
        memset(c->seen, 0, sizeof c->seen);
        c->nseen = 0;
        c->started = c->inconclusive = false;
        c->running = true;
        c->n = llmc_zdict_census_begin(c->ids);
    }
    /* A damaged file is not read any more (note_damage): nothing is known. */
    c->inconclusive = c->inconclusive || atomic_load(&d->damage_seen);
    if (c->n == 0 || c->inconclusive) {
        census_end(d);
        return false;
    }
    /* The writer's own transaction, aborted: it needs no reader slot. */
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc == 0) {
        if (fresh)
            rc = census_witnesses(d, txn);
        if (rc == 0 && !c->inconclusive && c->nseen < c->n)
            rc = census_chunk(d, txn, &more);
        mdb_txn_abort(txn);
    }
    if (rc) {
        note_damage(d, rc);
        count(&d->errors, 1);
        c->inconclusive = true;
        more = false;
    }
    if (!more)
        census_end(d);
    return more;
}

/* Runs a step and queues the next one: writes queued meanwhile go first. */
static void census_run(disk_t *d)
{
    if (census_step(d) && census_queue(d) != 0) {
        d->census.inconclusive = true; /* stopping, or out of memory */
        census_end(d);
    }
}

/* ---- the writer thread ---- */

static void maybe_sync(disk_t *d, bool force)
{
    if (d->sync != LLMC_DISK_SYNC_PERIODIC || !d->dirty)
        return;
    int64_t now = mono_ms();
    if (!force && now - d->last_sync_ms < d->sync_interval_ms)
        return;
    if (mdb_env_sync(d->env, 1))
        count(&d->errors, 1);
    d->dirty = false;
    d->last_sync_ms = now;
}

/* Waits for work (syncing on time meanwhile); takes it off the queue. */
static op_t *next_batch(disk_t *d, size_t *nput)
{
    pthread_mutex_lock(&d->mu);
    while (!d->head && !d->stop) {
        if (d->sync == LLMC_DISK_SYNC_PERIODIC && d->dirty) {
            int64_t at = d->last_sync_ms + d->sync_interval_ms;
            struct timespec ts = { (time_t)(at / 1000), (long)(at % 1000) * 1000000 };
            if (pthread_cond_timedwait(&d->wake, &d->mu, &ts) == ETIMEDOUT) {
                pthread_mutex_unlock(&d->mu);
                maybe_sync(d, false);
                pthread_mutex_lock(&d->mu);
            }
        } else {
            pthread_cond_wait(&d->wake, &d->mu);
        }
    }
    op_t *batch = d->head, *last = batch;
    size_t n = 0, bytes = 0;
    *nput = 0;
    /* A purge or sweep goes alone; writes go in runs, bounded in count and size. */
    if (batch && (batch->kind == OP_PURGE || batch->kind == OP_SWEEP)) {
        n = 1;
    } else {
        for (op_t *op = batch; op && (op->kind == OP_PUT || op->kind == OP_DEL_FOREIGN) &&
                               n < d->batch_max && (n == 0 || bytes < d->batch_bytes); op = op->next) {
            last = op;
            n++;
            if (op->kind == OP_PUT) {
                (*nput)++;
                bytes += op->e->mem_bytes ? op->e->mem_bytes : op->e->body_len;
            }
        }
    }
    if (batch) {
        d->head = last->next;
        if (!d->head)
            d->tail = NULL;
        last->next = NULL;
        for (op_t *op = batch; op; op = op->next)
            d->nqueued -= op->bounded;
    }
    pthread_mutex_unlock(&d->mu);
    return batch;
}

static void op_free(op_t *op)
{
    llmc_entry_unref(op->e);
    free(op->sel);
    free(op);
}

/* Marks a batch done: wakes flushers and retires committed purges; a purge
   somebody waits for goes to its worker's reports instead of being freed. */
static void finish_batch(disk_t *d, op_t *batch)
{
    pthread_mutex_lock(&d->mu);
    for (op_t **pp = &batch; *pp;) {
        op_t *op = *pp;
        d->done_seq = op->seq;
        if (op->kind == OP_SWEEP)
            d->sweep_queued = false;
        if (op->kind != OP_PURGE) {
            pp = &op->next;
            continue;
        }
        /* purges_done first: a get() that no longer sees this purge pending
           must already see the new count (see hidden()). */
        atomic_fetch_add(&d->purges_done, 1);
        for (op_t **qq = &d->pending; *qq; qq = &(*qq)->pnext) {
            if (*qq == op) {
                *qq = op->pnext;
                break;
            }
        }
        atomic_fetch_sub(&d->npending, 1);
        disk_worker_t *dw = op->done ? d->workers[op->worker] : NULL;
        if (!dw || !dw->attached) {
            pp = &op->next;
            continue;
        }
        /* Out of the batch, onto the worker's reports. */
        *pp = op->next;
        op->next = dw->reports;
        dw->reports = op;
        uv_async_send(&dw->async); /* under mu: detach cannot close it meanwhile */
    }
    pthread_cond_broadcast(&d->done);
    pthread_mutex_unlock(&d->mu);
    while (batch) {
        op_t *next = batch->next;
        op_free(batch);
        batch = next;
    }
}

static void *writer_main(void *arg)
{
    disk_t *d = arg;
    op_t *batch;
    size_t nput;
    int rc;
    while ((batch = next_batch(d, &nput)) != NULL) {
        if (batch->kind == OP_CENSUS) {
            census_run(d); /* ends at once in a damaged file */
        } else if (atomic_load(&d->damage_seen)) {
            /* Nothing more goes through a damaged file: a write is a failed
               one, and a purge has nothing to do, get() serving nothing. */
            count(&d->errors, nput);
            if (!d->damage_marked)
                mark_damaged(d);
        } else if (batch->kind == OP_PURGE) {
            batch->removed = run_purge(d, batch->sel);
        } else if (batch->kind == OP_SWEEP && (rc = sweep(d, batch->now_ms)) != 0) {
            note_damage(d, rc);
            count(&d->errors, 1);
        } else if (batch->kind == OP_PUT || batch->kind == OP_DEL_FOREIGN) {
            run_writes(d, batch, nput);
        }
        finish_batch(d, batch);
        maybe_sync(d, false);
    }
    maybe_sync(d, true);
    return NULL;
}

/* Queues op; a bounded op is refused when queue_len are waiting. */
static int enqueue(disk_t *d, op_t *op, bool bounded)
{
    pthread_mutex_lock(&d->mu);
    if (d->stop || (bounded && d->nqueued >= d->queue_len)) {
        pthread_mutex_unlock(&d->mu);
        return LLMC_EFULL;
    }
    op->bounded = bounded;
    d->nqueued += bounded;
    op->seq = ++d->enq_seq;
    if (d->tail)
        d->tail->next = op;
    else
        d->head = op;
    d->tail = op;
    if (op->kind == OP_PURGE) {
        op->pnext = d->pending;
        d->pending = op;
        atomic_fetch_add(&d->npending, 1);
    }
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->mu);
    return 0;
}

/* ---- reads, on any thread ---- */

static int reader_begin(disk_t *d, MDB_txn **out)
{
    MDB_txn *txn = NULL;
    pthread_mutex_lock(&d->pool_mu);
    if (d->npool)
        txn = d->pool[--d->npool];
    pthread_mutex_unlock(&d->pool_mu);
    if (txn) {
        if (mdb_txn_renew(txn) == 0) {
            *out = txn;
            return 0;
        }
        mdb_txn_abort(txn);
    }
    return mdb_txn_begin(d->env, NULL, MDB_RDONLY, out);
}

static void reader_end(disk_t *d, MDB_txn *txn)
{
    mdb_txn_reset(txn);
    pthread_mutex_lock(&d->pool_mu);
    if (d->npool < d->max_readers) {
        d->pool[d->npool++] = txn;
        txn = NULL;
    }
    pthread_mutex_unlock(&d->pool_mu);
    if (txn)
        mdb_txn_abort(txn);
}

/* Queues the removal of a sound record of a format this build does not
   read (written by another version); best effort. */
static void queue_del_foreign(disk_t *d, const llmc_key_t *key)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->kind = OP_DEL_FOREIGN;
    op->key = *key;
    if (enqueue(d, op, true))
        free(op);
}

/*
 * True when a purge queued but not yet committed selects e, or one was
 * committed since purges_done read done0 (before the read transaction):
 * the snapshot may predate it, so the answer cannot be trusted.
 */
static bool hidden(disk_t *d, const llmc_entry_t *e, uint64_t done0)
{
    bool hide = false;
    if (atomic_load(&d->npending)) {
        pthread_mutex_lock(&d->mu);
        for (op_t *p = d->pending; p && !hide; p = p->pnext)
            hide = llmc_purge_match(p->sel, e);
        pthread_mutex_unlock(&d->mu);
    }
    return hide || atomic_load(&d->purges_done) != done0;
}

/*
 * Reads and decodes the record under key. One that fails its checksum, or
 * whose bytes LMDB places outside the file or under a false overflow
 * header (value_sound), is damage: it is left where it is (deleting it
 * would go through the damaged page) and the tier stops using the file
 * (note_damage), which the next start moves aside. One of another format
 * is sound and is queued for removal. Either is counted.
 */
static llmc_entry_t *read_entry(disk_t *d, MDB_txn *txn, const llmc_key_t *key)
{
    MDB_val k = { LLMC_KEY_LEN, (void *)key->b }, v;
    llmc_entry_t *e = NULL;
    int rc = mdb_get(txn, d->entries, &k, &v);
    note_damage(d, rc);
    if (rc == 0 && !value_sound(d, &v))
        rc = LLMC_ECORRUPT;
    else if (rc == 0)
        rc = llmc_record_decode(key, v.mv_data, v.mv_size, &e);
    if (rc == LLMC_ECORRUPT)
        note_damage(d, MDB_CORRUPTED); /* counted there, once */
    else if (rc == LLMC_EVERSION)
        queue_del_foreign(d, key);
    if (rc && rc != MDB_NOTFOUND && rc != LLMC_ECORRUPT)
        count(&d->errors, 1);
    return e;
}

static int disk_get(llmc_tier_t *t, const llmc_key_t *key, int64_t now_ms, llmc_entry_t **out)
{
    disk_t *d = t->impl;
    uint64_t done0 = atomic_load(&d->purges_done);
    MDB_txn *txn;
    llmc_entry_t *e = NULL;
    /* No reader slot (MDB_READERS_FULL) is a miss, never a failure. */
    if (atomic_load(&d->damage_seen)) {
        /* a damaged file serves nothing more (note_damage) */
    } else if (reader_begin(d, &txn)) {
        count(&d->errors, 1);
    } else {
        e = read_entry(d, txn, key);
        reader_end(d, txn);
    }
    if (e && (now_ms >= add_ms(e->expires_ms, d->keep_stale_ms) || hidden(d, e, done0))) {
        llmc_entry_unref(e);
        e = NULL;
    }
    if (!e) {
        count(&d->misses, 1);
        return LLMC_ENOENT;
    }
    count(&d->hits, 1);
    *out = e;
    return 0;
}

static int disk_put(llmc_tier_t *t, unsigned worker, llmc_entry_t *e, int64_t now_ms)
{
    disk_t *d = t->impl;
    if (now_ms >= add_ms(e->expires_ms, d->keep_stale_ms))
        return 0;   /* nothing left to keep */
    op_t *op = calloc(1, sizeof *op);
    if (!op) {
        count(&d->dropped, 1);
        return LLMC_ENOMEM;
    }
    op->kind = OP_PUT;
    op->e = llmc_entry_ref(e);
    if (enqueue(d, op, true)) {
        llmc_entry_unref(e);
        free(op);
        count(&d->dropped, 1);
        return LLMC_EFULL;
    }
    return 0;
}

/* How many entries sel removes now, as far as a snapshot can tell cheaply. */
static size_t purge_estimate(disk_t *d, const llmc_purge_t *sel)
{
    MDB_txn *txn;
    MDB_stat st;
    size_t n = 0;
    if (!llmc_purge_is_all(sel) && !llmc_purge_is_key(sel))
        return 0;
    if (reader_begin(d, &txn))
        return 0;
    if (llmc_purge_is_all(sel) && mdb_stat(txn, d->entries, &st) == 0)
        n = st.ms_entries;
    MDB_val k = { LLMC_KEY_LEN, (void *)sel->key.b }, v;
    if (llmc_purge_is_key(sel) && mdb_get(txn, d->entries, &k, &v) == 0)
        n = 1;
    reader_end(d, txn);
    return n;
}

/*
 * Queues the purge; it is never dropped. When worker's loop is attached,
 * done runs there once the writer has committed it, with what it removed.
 * Otherwise (no loop to report on: unit tests, or out of memory) done runs
 * at once: a queued purge already counts as done, since get() hides what a
 * pending purge selects; the count is then known only for ALL and KEY
 * (the rest show in stats: purged), and 0 is reported for them.
 */
static void disk_purge(llmc_tier_t *t, unsigned worker, const llmc_purge_t *sel,
                       llmc_tier_purge_cb done, void *arg)
{
    disk_t *d = t->impl;
    op_t *op = calloc(1, sizeof *op);
    if (!op || !(op->sel = llmc_purge_dup(sel))) {
        free(op);
        count(&d->errors, 1);
        done(arg, 0);
        return;
    }
    op->kind = OP_PURGE;
    op->worker = worker;
    bool later = worker < d->nworkers && d->workers[worker];
    if (later) {
        op->done = done;
        op->done_arg = arg;
    }
    size_t n = later ? 0 : purge_estimate(d, sel);
    if (enqueue(d, op, false)) {
        op_free(op);
        done(arg, 0);
        return;
    }
    if (!later)
        done(arg, n);
}

/* On a worker's loop: the purges the writer committed for it. */
static void on_reports(uv_async_t *h)
{
    disk_worker_t *dw = h->data;
    pthread_mutex_lock(&dw->d->mu);
    op_t *list = dw->reports;
    dw->reports = NULL;
    pthread_mutex_unlock(&dw->d->mu);
    while (list) {
        op_t *next = list->next;
        list->done(list->done_arg, list->removed);
        op_free(list);
        list = next;
    }
}

/* Main thread, before the loops run: worker's purges report on loop. */
static int disk_attach(llmc_tier_t *t, unsigned worker, struct uv_loop_s *loop)
{
    disk_t *d = t->impl;
    disk_worker_t *dw = calloc(1, sizeof *dw);
    if (!dw || uv_async_init(loop, &dw->async, on_reports) != 0) {
        free(dw);
        return LLMC_ENOMEM;
    }
    dw->d = d;
    dw->async.data = dw;
    dw->attached = true;
    /* The writer reads the array (finish_batch, under mu) from its own thread. */
    pthread_mutex_lock(&d->mu);
    if (worker >= d->nworkers) {
        disk_worker_t **w = realloc(d->workers, (worker + 1) * sizeof *w);
        if (!w) {
            pthread_mutex_unlock(&d->mu);
            uv_close((uv_handle_t *)&dw->async, (uv_close_cb)free);
            return LLMC_ENOMEM;
        }
        memset(w + d->nworkers, 0, (worker + 1 - d->nworkers) * sizeof *w);
        d->workers = w;
        d->nworkers = worker + 1;
    }
    d->workers[worker] = dw;
    pthread_mutex_unlock(&d->mu);
    return 0;
}

/* On worker's loop at shutdown: every purge that was to report here
   reports now, committed ones with their count and the rest with 0 (they
   still run; nobody hears of them), then the handle closes. */
static void disk_detach(llmc_tier_t *t, unsigned worker)
{
    disk_t *d = t->impl;
    disk_worker_t *dw = worker < d->nworkers ? d->workers[worker] : NULL;
    if (!dw)
        return;
    typedef struct { llmc_tier_purge_cb done; void *arg; } call_t;
    size_t ncalls = 0, cap = 0;
    call_t *calls = NULL;
    pthread_mutex_lock(&d->mu);
    dw->attached = false;
    op_t *reports = dw->reports;
    dw->reports = NULL;
    for (op_t *p = d->pending; p; p = p->pnext) {
        if (!p->done || p->worker != worker)
            continue;
        if (ncalls == cap) {
            call_t *c = realloc(calls, (cap = cap ? 2 * cap : 8) * sizeof *c);
            if (!c)
                break; /* those left keep done: finish_batch drops them (not attached) */
            calls = c;
        }
        calls[ncalls++] = (call_t){ p->done, p->done_arg };
        p->done = NULL;
    }
    d->workers[worker] = NULL;
    pthread_mutex_unlock(&d->mu);
    while (reports) {
        op_t *next = reports->next;
        reports->done(reports->done_arg, reports->removed);
        op_free(reports);
        reports = next;
    }
    for (size_t i = 0; i < ncalls; i++)
        calls[i].done(calls[i].arg, 0);
    free(calls);
    uv_close((uv_handle_t *)&dw->async, (uv_close_cb)free);
}

/* Queues a dictionary census every census_ms, unless one is queued or running. */
static void census_tick(disk_t *d, int64_t now_ms)
{
    if (d->census_ms <= 0)
        return;
    pthread_mutex_lock(&d->mu);
    /* A clock set back by more than the interval starts it over from now. */
    bool due = !d->census_queued && !d->stop &&
               (now_ms >= d->census_next_ms || now_ms < d->census_next_ms - d->census_ms);
    if (due) {
        d->census_queued = true;
        d->census_next_ms = now_ms + d->census_ms;
    }
    pthread_mutex_unlock(&d->mu);
    if (due && census_queue(d) != 0) {
        pthread_mutex_lock(&d->mu);
        d->census_queued = false;
        pthread_mutex_unlock(&d->mu);
    }
}

/* Queues one sweep of at most sweep_budget expired entries, unless one is waiting. */
static void disk_tick(llmc_tier_t *t, int64_t now_ms)
{
    disk_t *d = t->impl;
    pthread_mutex_lock(&d->mu);
    bool queued = d->sweep_queued;
    d->sweep_queued = true;
    pthread_mutex_unlock(&d->mu);
    if (queued)
        return;
    op_t *op = calloc(1, sizeof *op);
    if (op) {
        op->kind = OP_SWEEP;
        op->now_ms = now_ms;
    }
    if (!op || enqueue(d, op, false)) {
        free(op);
        pthread_mutex_lock(&d->mu);
        d->sweep_queued = false;
        pthread_mutex_unlock(&d->mu);
    }
    census_tick(d, now_ms);
}

static void disk_stats(llmc_tier_t *t, llmc_tier_stats_t *out)
{
    disk_t *d = t->impl;
    MDB_txn *txn;
    MDB_stat st;
    memset(out, 0, sizeof *out);
    out->max_bytes = d->max_bytes;
    out->hits = load(&d->hits);
    out->misses = load(&d->misses);
    out->stored = load(&d->stored);
    out->evicted_size = load(&d->evicted_size);
    out->evicted_ttl = load(&d->evicted_ttl);
    out->purged = load(&d->purged);
    out->errors = load(&d->errors);
    out->dropped = load(&d->dropped);
    if (reader_begin(d, &txn) == 0) {
        if (mdb_stat(txn, d->entries, &st) == 0)
            out->entries = st.ms_entries;
        out->bytes = used_bytes(d, txn);
        reader_end(d, txn);
    }
}

static void disk_xstats(llmc_tier_t *t, void *out)
{
    disk_t *d = t->impl;
    llmc_zdict_stats_t z;
    llmc_zdict_get_stats(&z);
    *(disk_xstats_t *)out = (disk_xstats_t){.quarantined = load(&d->quarantined),
                                       .raw_bytes = load(&d->raw_bytes),
                                       .packed_bytes = load(&d->packed_bytes),
                                       .dict_current = z.current,
                                       .dicts = z.count,
                                       .dicts_pinned = z.pinned,
                                       .dict_trainings = z.trainings,
                                       .dict_censuses = load(&d->census_runs),
                                       .dicts_unpinned = load(&d->unpinned),
                                       .dicts_removed = z.removed};
}

void llmc_tier_disk_flush(llmc_tier_t *t)
{
    disk_t *d = t->impl;
    pthread_mutex_lock(&d->mu);
    uint64_t target = d->enq_seq;
    while (d->done_seq < target && d->writer_started)
        pthread_cond_wait(&d->done, &d->mu);
    pthread_mutex_unlock(&d->mu);
}

void llmc_tier_disk_census(llmc_tier_t *t)
{
    disk_t *d = t->impl;
    pthread_mutex_lock(&d->mu);
    /* One queued or running now may have begun before the call: wait for the next. */
    uint64_t target = d->censuses + (d->census_queued ? 2 : 1);
    while (d->censuses < target && d->writer_started && !d->stop) {
        if (!d->census_queued) {
            d->census_queued = true;
            pthread_mutex_unlock(&d->mu);
            int rc = census_queue(d);
            pthread_mutex_lock(&d->mu);
            if (rc) {
                d->census_queued = false;
                break;
            }
            continue; /* it may have ended already */
        }
        pthread_cond_wait(&d->done, &d->mu);
    }
    pthread_mutex_unlock(&d->mu);
}

/* ---- open and close ---- */

/* DIR/name into out; LLMC_EINVAL when it does not fit. */
static int path_in(const disk_t *d, const char *name, char *out, size_t cap)
{
    return snprintf(out, cap, "%s/%s", d->path, name) < (int)cap ? 0 : LLMC_EINVAL;
}

static void unlink_in(const disk_t *d, const char *name)
{
    char file[PATH_MAX];
    if (path_in(d, name, file, sizeof file) == 0)
        unlink(file);
}


/* Frees whatever of d was set up; stops the writer after it drained the queue. */
static void disk_free(disk_t *d)
{
    if (d->writer_started) {
        pthread_mutex_lock(&d->mu);
        d->stop = true;
        pthread_cond_signal(&d->wake);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->writer, NULL);
    }
    while (d->npool)
        mdb_txn_abort(d->pool[--d->npool]);
    if (d->env)
        mdb_env_close(d->env);
    if (d->marker_written && atomic_load(&d->damage_seen)) {
        if (!d->damage_marked)
            mark_damaged(d);
    } else if (d->marker_written) { /* a clean close: not a crash */
        unlink_in(d, MARKER);
    }
    if (d->lock_fd >= 0)
        close(d->lock_fd);   /* releases the flock */
    if (d->sync_inited) {
        pthread_cond_destroy(&d->done);
        pthread_cond_destroy(&d->wake);
        pthread_mutex_destroy(&d->pool_mu);
        pthread_mutex_destroy(&d->mu);
    }
    /* A worker never detached (only a test that attached and stopped its
       loop): its handle may still be in that loop, so only the purges
       left to report go, not the struct. */
    for (unsigned i = 0; i < d->nworkers; i++) {
        for (op_t *op = d->workers[i] ? d->workers[i]->reports : NULL, *next; op; op = next) {
            next = op->next;
            op_free(op);
        }
    }
    free(d->workers);
    free(d->pool);
    free(d->path);
    free(d);
}

static void disk_destroy(llmc_tier_t *t)
{
    if (t)
        disk_free(t->impl);
}

static const llmc_tier_ops_t disk_ops = {
    .name = "disk",
    .get = disk_get,
    .put = disk_put,
    .purge = disk_purge,
    .attach = disk_attach,
    .detach = disk_detach,
    .tick = disk_tick,
    .stats = disk_stats,
    .xstats_desc = xstats_desc,
    .nxstats = sizeof(xstats_desc) / sizeof(xstats_desc[0]),
    .xstats = disk_xstats,
    .destroy = disk_destroy,
};

static int make_dir(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        seterr(err, errlen, "cannot create data dir %s: %s", path, strerror(errno));
        return LLMC_EIO;
    }
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        seterr(err, errlen, "data dir %s is not a directory", path);
        return LLMC_EINVAL;
    }
    if (st.st_uid != geteuid()) {
        seterr(err, errlen, "data dir %s belongs to uid %u, not to this process (uid %u)",
               path, (unsigned)st.st_uid, (unsigned)geteuid());
        return LLMC_EINVAL;
    }
    /* Whoever may write to the directory may replace data.mdb or the lock
       file under us, and make the gateway serve what they wrote. */
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        seterr(err, errlen, "data dir %s is writable by its %s (mode %03o): others could replace "
               "the cache files; make it private (chmod 700)", path,
               (st.st_mode & S_IWGRP) && (st.st_mode & S_IWOTH) ? "group and others"
               : st.st_mode & S_IWGRP ? "group" : "others",
               (unsigned)(st.st_mode & 0777));
        return LLMC_EINVAL;
    }
    return 0;
}

/* Takes the exclusive lock on DIR/llmcached.lock and writes our pid into it. */
static int take_lock(disk_t *d, char *err, size_t errlen)
{
    char file[PATH_MAX], pid[32] = "";
    if (snprintf(file, sizeof file, "%s/llmcached.lock", d->path) >= (int)sizeof file) {
        seterr(err, errlen, "data dir path too long: %s", d->path);
        return LLMC_EINVAL;
    }
    d->lock_fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->lock_fd < 0) {
        seterr(err, errlen, "cannot open %s: %s", file, strerror(errno));
        return LLMC_EIO;
    }
    if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t n = errno == EWOULDBLOCK ? pread(d->lock_fd, pid, sizeof pid - 1, 0) : -1;
        if (n < 0) {
            seterr(err, errlen, "cannot lock %s: %s", file, strerror(errno));
            return LLMC_EIO;
        }
        pid[n] = 0;
        long holder = strtol(pid, NULL, 10);
        if (holder > 0)
            seterr(err, errlen, "data dir %s is in use by another llmcached (pid %ld)", d->path, holder);
        else
            seterr(err, errlen, "data dir %s is in use by another llmcached (pid unknown)", d->path);
        return LLMC_ELOCKED;
    }
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(d->lock_fd, 0) != 0 || pwrite(d->lock_fd, pid, (size_t)n, 0) != n) {
        seterr(err, errlen, "cannot write %s: %s", file, strerror(errno));
        return LLMC_EIO;
    }
    return 0;
}

static int open_dbis(disk_t *d)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc)
        return rc;
    if ((rc = mdb_dbi_open(txn, "entries", MDB_CREATE, &d->entries)) ||
        (rc = mdb_dbi_open(txn, "by_age", MDB_CREATE, &d->by_age)) ||
        (rc = mdb_dbi_open(txn, "by_expiry", MDB_CREATE, &d->by_exp))) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/*
 * LMDB reads the file through a memory map and trusts the meta page: a page
 * it names past the end of a file cut short (a power loss between syncs on
 * a file system that kept the meta page but not the length, a partial copy)
 * is a SIGBUS on the first read that reaches it. A file may also be short
 * with nothing wrong, by pages LMDB freed in the transaction that took them
 * and so never wrote. Either way the file is extended, with zeros, to what
 * the meta page names: a free page is written before it is read, and a lost
 * one reads as zeros, which LMDB reports as MDB_CORRUPTED and the record
 * checksum as LLMC_ECORRUPT: a miss and an error counted, never a crash.
 */
static int extend_short_file(disk_t *d, char *err, size_t errlen)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fst;
    int fd;
    if (mdb_env_info(d->env, &info) || mdb_env_stat(d->env, &st) || mdb_env_get_fd(d->env, &fd) ||
        fstat(fd, &fst) != 0) {
        seterr(err, errlen, "cannot read the size of %s/data.mdb", d->path);
        return LLMC_EIO;
    }
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if ((uint64_t)fst.st_size >= need)
        return 0;
    if (need > (uint64_t)INT64_MAX || ftruncate(fd, (off_t)need) != 0) {
        seterr(err, errlen, "%s/data.mdb is shorter than its pages (%llu of %llu bytes) and cannot "
               "be extended: %s", d->path, (unsigned long long)fst.st_size,
               (unsigned long long)need, strerror(errno));
        return LLMC_EIO;
    }
    return 0;
}

/* The first and last key of each database: a root-to-leaf path each. A
   damaged root or spine shows here, at start, instead of in the writer. */
static int probe(disk_t *d)
{
    MDB_dbi dbis[] = {d->entries, d->by_age, d->by_exp};
    MDB_txn *txn = NULL;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_txn_begin(d->env, NULL, MDB_RDONLY, &txn);
    for (size_t i = 0; rc == 0 && i < sizeof dbis / sizeof dbis[0]; i++) {
        if ((rc = mdb_cursor_open(txn, dbis[i], &cur)) != 0)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (rc == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        mdb_cursor_close(cur);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (txn)
        mdb_txn_abort(txn);
    return rc;
}

/* One try at opening data.mdb: 0, LMDB's code in *mdb_rc (err set), or
   another LLMC_E* (err set). d->env is left for the caller to close. */
static int try_open_env(disk_t *d, int *mdb_rc, char *err, size_t errlen)
{
    /* NOSYNC survives a killed process, not a power loss: see the file header. */
    unsigned flags = MDB_NOTLS | (d->sync == LLMC_DISK_SYNC_FULL ? 0 : MDB_NOSYNC);
    int dead, rc = mdb_env_create(&d->env);
    if (rc == 0 && (rc = mdb_env_set_maxdbs(d->env, 4)) == 0 &&
        (rc = mdb_env_set_mapsize(d->env, (size_t)d->max_bytes)) == 0 &&
        (rc = mdb_env_set_maxreaders(d->env, d->max_readers)) == 0 &&
        (rc = mdb_env_open(d->env, d->path, flags, 0600)) == 0 &&
        (rc = mdb_reader_check(d->env, &dead)) == 0) {  /* slots left by a killed process */
        int bad = extend_short_file(d, err, errlen);
        if (bad)
            return bad;
        if ((rc = open_dbis(d)) == 0)
            rc = probe(d);
    }
    *mdb_rc = rc;
    if (rc)
        seterr(err, errlen, "cannot open LMDB environment in %s: %s", d->path, mdb_strerror(rc));
    return from_mdb(rc);
}

/*
 * Moves data.mdb aside as data.mdb.corrupt-<unix time> (".N" added when
 * that name is taken) and drops lock.mdb, so the next open starts an empty
 * environment. Says so on stderr, once. 0, or LLMC_EIO with err set.
 */
static int quarantine(disk_t *d, const char *why, char *err, size_t errlen)
{
    char from[PATH_MAX], to[PATH_MAX], name[64];
    struct stat st;
    long now = (long)time(NULL);
    if (d->env) {
        mdb_env_close(d->env);
        d->env = NULL;
    }
    if (path_in(d, "data.mdb", from, sizeof from) != 0)
        return LLMC_EINVAL;
    if (lstat(from, &st) != 0 && errno == ENOENT)
        return 0; /* nothing to move */
    for (int i = 0;; i++) {
        if (i == 0)
            snprintf(name, sizeof name, "data.mdb.corrupt-%ld", now);
        else
            snprintf(name, sizeof name, "data.mdb.corrupt-%ld.%d", now, i);
        if (path_in(d, name, to, sizeof to) != 0)
            return LLMC_EINVAL;
        if (lstat(to, &st) != 0 && errno == ENOENT)
            break;
        if (i == 1000) {
            seterr(err, errlen, "cannot find a free name to move %s aside", from);
            return LLMC_EIO;
        }
    }
    if (rename(from, to) != 0) {
        seterr(err, errlen, "%s: %s, and it cannot be moved aside: %s", from, why, strerror(errno));
        return LLMC_EIO;
    }
    unlink_in(d, "lock.mdb");
    count(&d->quarantined, 1);
    count(&d->errors, 1);
    fprintf(stderr, "llmcached: disk tier: %s: %s; moved aside as %s, starting with an empty "
            "disk tier\n", from, why, name);
    return 0;
}

/* Opens data.mdb; one that LMDB refuses is quarantined (or fails the open
   with fail_on_corrupt) and a fresh one opened in its place. */
static int open_env(disk_t *d, char *err, size_t errlen)
{
    int mdb_rc = 0, rc = try_open_env(d, &mdb_rc, err, errlen);
    if (rc == 0 || !damaged(mdb_rc))
        return rc;
    if (d->fail_on_corrupt) {
        seterr(err, errlen, "%s/data.mdb cannot be opened: %s (--disk-on-corrupt fail: move it "
               "away, or start with --disk-on-corrupt quarantine)", d->path, mdb_strerror(mdb_rc));
        return LLMC_ECORRUPT;
    }
    char why[160];
    snprintf(why, sizeof why, "LMDB refuses it (%s)", mdb_strerror(mdb_rc));
    if ((rc = quarantine(d, why, err, errlen)) != 0)
        return rc;
    return try_open_env(d, &mdb_rc, err, errlen);
}

/*
 * The crash-loop marker: MARKER holds how many runs in a row ended with the
 * tier open (no clean close removed it). Read, bumped and written back at
 * open; found at two starts in a row, the data file is moved aside (or only
 * reported, with fail_on_corrupt) and the count starts again.
 */
static int check_marker(disk_t *d, char *err, size_t errlen)
{
    char file[PATH_MAX], buf[32] = "";
    if (path_in(d, MARKER, file, sizeof file) != 0) {
        seterr(err, errlen, "data dir path too long: %s", d->path);
        return LLMC_EINVAL;
    }
    int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        seterr(err, errlen, "cannot open %s: %s", file, strerror(errno));
        return LLMC_EIO;
    }
    struct stat st;
    ssize_t n = fstat(fd, &st) == 0 && st.st_size > 0 ? pread(fd, buf, sizeof buf - 1, 0) : 0;
    long unclean = 0;
    bool was_damaged = false;
    if (n > 0) { /* there: the last run did not close; unreadable counts as one */
        buf[n] = 0;
        was_damaged = strncmp(buf, DAMAGED, sizeof DAMAGED - 1) == 0;
        unclean = was_damaged ? 0 : strtol(buf, NULL, 10);
        unclean = (unclean < 0 || unclean > 1000 ? 0 : unclean) + 1;
    }
    int rc = 0;
    if (unclean >= 2 || was_damaged) {
        char why[160];
        if (was_damaged)
            snprintf(why, sizeof why, "LMDB reported damage in it while the last run used it");
        else
            snprintf(why, sizeof why, "the gateway ended without closing it %ld times in a row "
                     "(a crash loop?)", unclean);
        if (d->fail_on_corrupt)
            fprintf(stderr, "llmcached: disk tier: %s/data.mdb: %s; kept (--disk-on-corrupt fail)\n",
                    d->path, why);
        else if ((rc = quarantine(d, why, err, errlen)) == 0)
            unclean = 0;
    }
    int len = snprintf(buf, sizeof buf, "%ld\n", unclean);
    if (rc == 0 && (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len ||
                    fsync(fd) != 0)) {
        seterr(err, errlen, "cannot write %s: %s", file, strerror(errno));
        rc = LLMC_EIO;
    }
    close(fd);
    d->marker_written = rc == 0;
    return rc;
}

static size_t clamp(size_t v, size_t lo, size_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/*
 * LMDB copies every page a transaction changes, and the pages it frees are
 * reusable only two transactions later, so the free headroom must hold what
 * a few transactions touch (a put or an eviction touches about one random
 * leaf page per entry, plus the branch pages above it). Each transaction is
 * kept to about 1/TXN_SHARE of the map's pages, and the headroom to at
 * least HEADROOM_PAGES, which in a small map is a large share of it.
 */
/*
 * Where LMDB mapped data.mdb: lmdb.h does not say (mdb_env_info's
 * me_mapaddr is only the address asked for with MDB_FIXEDMAP), so the
 * mapping of the file's inode is read from /proc/self/maps, once, at open;
 * LMDB never moves it (the map is --disk-max from the start). Not found:
 * value_sound cannot check, and says so by trusting (the crash-loop count
 * remains).
 */
static void find_map(disk_t *d)
{
    int fd;
    struct stat st;
    char line[PATH_MAX + 128];
    if (mdb_env_get_fd(d->env, &fd) || fstat(fd, &st) != 0)
        return;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        unsigned long long lo, hi, ino;
        if (sscanf(line, "%llx-%llx %*s %*s %*s %llu", &lo, &hi, &ino) == 3 &&
            ino == (unsigned long long)st.st_ino && strstr(line, "/data.mdb")) {
            d->map = (const uint8_t *)(uintptr_t)lo;
            d->map_len = (size_t)(hi - lo);
            break;
        }
    }
    fclose(f);
}

static void size_txns(disk_t *d)
{
    MDB_stat st;
    uint64_t psize = mdb_env_stat(d->env, &st) == 0 ? st.ms_psize : 4096;
    d->psize = psize;
    size_t pages = (size_t)(d->max_bytes / psize / TXN_SHARE);
    d->batch_max = clamp(pages, 8, BATCH_MAX);
    d->evict_max = clamp(pages, 8, EVICT_MAX);
    d->batch_bytes = (size_t)(d->max_bytes / TXN_SHARE);
    uint64_t room = d->max_bytes / 100 * HEADROOM_PCT;
    if (room < HEADROOM_PAGES * psize)
        room = HEADROOM_PAGES * psize;
    d->high_bytes = d->max_bytes > 2 * room ? d->max_bytes - room : d->max_bytes / 2;
    d->low_bytes = d->high_bytes - d->max_bytes / 100 * EVICT_PCT;
}

static int init_sync(disk_t *d)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca))
        return LLMC_ENOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_mutex_init(&d->mu, NULL) || pthread_mutex_init(&d->pool_mu, NULL) ||
             pthread_cond_init(&d->wake, &ca) || pthread_cond_init(&d->done, NULL);
    pthread_condattr_destroy(&ca);
    if (rc)
        return LLMC_ENOMEM;
    d->sync_inited = true;
    return 0;
}

static disk_t *disk_alloc(const llmc_disk_config_t *cfg)
{
    disk_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->lock_fd = -1;
    d->sync = cfg->sync;
    d->sync_interval_ms = cfg->sync_interval_ms > 0 ? cfg->sync_interval_ms : 1000;
    d->keep_stale_ms = cfg->keep_stale_ms > 0 ? cfg->keep_stale_ms : 0;
    d->max_bytes = cfg->max_bytes;
    d->queue_len = cfg->queue_len ? cfg->queue_len : 65536;
    d->sweep_budget = cfg->sweep_budget ? cfg->sweep_budget : 256;
    d->max_readers = cfg->max_readers ? cfg->max_readers : 512;
    d->fail_on_corrupt = cfg->fail_on_corrupt;
    d->census_ms = cfg->dict_census_ms > 0 ? cfg->dict_census_ms : 0;
    d->census_chunk = CENSUS_CHUNK;
    d->last_sync_ms = mono_ms();
    d->path = strdup(cfg->path);
    d->pool = calloc(d->max_readers, sizeof *d->pool);
    d->tier.ops = &disk_ops;
    d->tier.impl = d;
    if (!d->path || !d->pool) {
        disk_free(d);
        return NULL;
    }
    return d;
}

int llmc_tier_disk_open(const llmc_disk_config_t *cfg, llmc_tier_t **out, char *err, size_t errlen)
{
    disk_t *d = NULL;
    int rc = LLMC_EINVAL;
    if (!cfg || !cfg->path || !*cfg->path || cfg->max_bytes < 65536 ||
        (unsigned)cfg->sync > LLMC_DISK_SYNC_NONE) {
        seterr(err, errlen, "invalid disk tier configuration");
        return LLMC_EINVAL;
    }
    if (!(d = disk_alloc(cfg))) {
        seterr(err, errlen, "out of memory");
        return LLMC_ENOMEM;
    }
    if ((rc = init_sync(d)) || (rc = make_dir(d->path, err, errlen)) ||
        (rc = take_lock(d, err, errlen)) || (rc = check_marker(d, err, errlen)) ||
        (rc = open_env(d, err, errlen)))
        goto fail;
    size_txns(d);
    find_map(d);
    if (pthread_create(&d->writer, NULL, writer_main, d) != 0) {
        seterr(err, errlen, "cannot start the disk writer thread");
        rc = LLMC_ENOMEM;
        goto fail;
    }
    d->writer_started = true;
    *out = &d->tier;
    return 0;
fail:
    disk_free(d);
    return rc;
}
