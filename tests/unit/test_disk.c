/*
 * test_disk.c: the LMDB disk tier (src/tier/disk.c).
 *
 * Each test gets a fresh directory under /tmp. The tier's file is included
 * so that a test can reach its LMDB environment: holding LMDB's write lock
 * is how a test stalls the writer thread deterministically (to fill the
 * queue, or to look at a purge before it is committed), and holding the
 * only reader slot is how it provokes MDB_READERS_FULL. Everything else is
 * asserted through the tier interface and the files on disk.
 */
#include <ftw.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tier/disk.c"
#include "tier_purge_now.h"

#define BODY_LEN 1024
#define NOW      1700000000000LL

typedef struct fixture {
    char root[64];
    char dir[96];
} fixture_t;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    strcpy(f->root, "/tmp/llmc-disk-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    /* A directory that does not exist yet: the tier must create it. */
    snprintf(f->dir, sizeof f->dir, "%s/data", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static llmc_disk_config_t config(const fixture_t *f)
{
    llmc_disk_config_t c = {
        .path = f->dir, .sync = LLMC_DISK_SYNC_NONE, .max_bytes = 64u << 20,
        .queue_len = 100000,
    };
    return c;
}

static llmc_tier_t *open_ok(const llmc_disk_config_t *c)
{
    llmc_tier_t *t = NULL;
    char err[256] = "";
    int rc = llmc_tier_disk_open(c, &t, err, sizeof err);
    if (rc)
        fail_msg("open: %s: %s", llmc_errname(rc), err);
    return t;
}

static llmc_key_t key_of(uint32_t i)
{
    llmc_key_t k;
    for (int j = 0; j < LLMC_KEY_LEN; j++)
        k.b[j] = (uint8_t)((i * 2654435761u) >> (j % 4 * 8)) ^ (uint8_t)j;
    memcpy(k.b, &i, sizeof i);
    return k;
}

/* Entry i: created NOW + i, fresh for ttl_ms, a 1 KB body that names i. */
static llmc_entry_t *entry(uint32_t i, int64_t ttl_ms, const char *ns, const char *tag)
{
    char body[BODY_LEN + 1];
    llmc_key_t k = key_of(i);
    const char *tags[] = { tag };
    memset(body, 'a' + i % 26, BODY_LEN);
    snprintf(body, sizeof body, "{\"i\":%u}", i);
    body[strlen(body)] = ' ';
    llmc_entry_spec_t s = {
        .key = &k, .status = 200, .created_ms = NOW + i, .expires_ms = NOW + i + ttl_ms,
        .content_type = "application/json", .ns = ns ? ns : "", .model = "m",
        .tags = tags, .ntags = tag ? 1 : 0, .body = body, .body_len = BODY_LEN,
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    assert_non_null(e);
    return e;
}

static int put(llmc_tier_t *t, uint32_t i, int64_t ttl_ms, const char *ns, const char *tag)
{
    llmc_entry_t *e = entry(i, ttl_ms, ns, tag);
    int rc = t->ops->put(t, 0, e, NOW);
    llmc_entry_unref(e);
    return rc;
}

/* True when entry i is served at now, after checking it is the one that was put. */
static bool has(llmc_tier_t *t, uint32_t i, int64_t now)
{
    llmc_key_t k = key_of(i);
    llmc_entry_t *e = NULL, *want;
    if (t->ops->get(t, &k, now, &e) != 0)
        return false;
    want = entry(i, e->expires_ms - e->created_ms, NULL, NULL);
    assert_memory_equal(e->key.b, k.b, LLMC_KEY_LEN);
    assert_int_equal(e->created_ms, want->created_ms);
    assert_int_equal(e->body_len, BODY_LEN);
    assert_memory_equal(e->body, want->body, BODY_LEN);
    llmc_entry_unref(want);
    llmc_entry_unref(e);
    return true;
}

static llmc_tier_stats_t stats(llmc_tier_t *t)
{
    llmc_tier_stats_t s;
    t->ops->stats(t, &s);
    return s;
}

/* Path of this test binary, to start it again as another process. */
static void self_path(char *out, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", out, len - 1);
    assert_true(n > 0);
    out[n] = 0;
}

static void test_put_flush_get(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    assert_string_equal(t->ops->name, "disk");
    for (uint32_t i = 0; i < 300; i++)
        assert_int_equal(put(t, i, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    for (uint32_t i = 0; i < 300; i++)
        assert_true(has(t, i, NOW));
    assert_false(has(t, 300, NOW));
    llmc_tier_stats_t s = stats(t);
    assert_int_equal(s.entries, 300);
    assert_int_equal(s.stored, 300);
    assert_int_equal(s.hits, 300);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.errors, 0);
    assert_true(s.bytes >= 300 * BODY_LEN);
    t->ops->destroy(t);
}

static void test_reopen_keeps_entries_and_times(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    for (uint32_t i = 0; i < 1000; i++)
        assert_int_equal(put(t, i, 30000 + i, "ns", "tag"), 0);
    t->ops->destroy(t);   /* commits what is queued: no flush */

    t = open_ok(&c);
    for (uint32_t i = 0; i < 1000; i++) {
        llmc_key_t k = key_of(i);
        llmc_entry_t *e = NULL;
        assert_int_equal(t->ops->get(t, &k, NOW, &e), 0);
        assert_int_equal(e->created_ms, NOW + i);
        assert_int_equal(e->expires_ms, NOW + i + 30000 + i);
        assert_string_equal(llmc_entry_ns(e), "ns");
        assert_int_equal(e->ntags, 1);
        assert_string_equal(llmc_entry_tag(e, 0), "tag");
        llmc_entry_unref(e);
    }
    assert_int_equal(stats(t).entries, 1000);
    t->ops->destroy(t);
}

static void test_replacing_keeps_one_record_and_index(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    disk_t *d = t->impl;
    assert_int_equal(put(t, 7, 1000, NULL, NULL), 0);
    assert_int_equal(put(t, 7, 5000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    llmc_key_t k = key_of(7);
    llmc_entry_t *e = NULL;
    assert_int_equal(t->ops->get(t, &k, NOW, &e), 0);
    assert_int_equal(e->expires_ms, NOW + 7 + 5000);
    llmc_entry_unref(e);
    MDB_txn *txn;
    MDB_stat st;
    assert_int_equal(mdb_txn_begin(d->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_stat(txn, d->by_age, &st), 0);
    assert_int_equal(st.ms_entries, 1);
    assert_int_equal(mdb_stat(txn, d->by_exp, &st), 0);
    assert_int_equal(st.ms_entries, 1);
    mdb_txn_abort(txn);
    t->ops->destroy(t);
}

static void test_expiry_keep_stale_and_sweep(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    c.keep_stale_ms = 5000;
    c.sweep_budget = 3;
    llmc_tier_t *t = open_ok(&c);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(put(t, i, 10000, NULL, NULL), 0);
    assert_int_equal(put(t, 100, 600000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);

    /* Past expiry but within the keep time: still served (stale). */
    assert_true(has(t, 0, NOW + 12000));
    /* Past the keep time: a miss, even before any sweep. */
    assert_false(has(t, 0, NOW + 15000));

    /* A sweep removes at most sweep_budget, oldest expiry first. */
    t->ops->tick(t, NOW + 60000);
    llmc_tier_disk_flush(t);
    assert_int_equal(stats(t).evicted_ttl, 3);
    assert_int_equal(stats(t).entries, 8);
    for (int n = 0; n < 5; n++) {
        t->ops->tick(t, NOW + 60000);
        llmc_tier_disk_flush(t);
    }
    llmc_tier_stats_t s = stats(t);
    assert_int_equal(s.evicted_ttl, 10);
    assert_int_equal(s.entries, 1);
    assert_true(has(t, 100, NOW + 60000));
    t->ops->destroy(t);
}

static void test_put_of_expired_entry_is_not_stored(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    llmc_entry_t *e = entry(1, 10, NULL, NULL);
    assert_int_equal(t->ops->put(t, 0, e, NOW + 100), 0);
    llmc_entry_unref(e);
    llmc_tier_disk_flush(t);
    assert_int_equal(stats(t).entries, 0);
    t->ops->destroy(t);
}

static void test_full_queue_drops_and_never_blocks(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    c.queue_len = 4;
    llmc_tier_t *t = open_ok(&c);
    disk_t *d = t->impl;
    MDB_txn *hold;
    bool accepted[20];
    int ndropped = 0;
    /* With LMDB's write lock held here, the writer cannot commit anything. */
    assert_int_equal(mdb_txn_begin(d->env, NULL, 0, &hold), 0);
    for (uint32_t i = 0; i < 20; i++) {
        int rc = put(t, i, 60000, NULL, NULL);
        assert_true(rc == 0 || rc == LLMC_EFULL);
        accepted[i] = rc == 0;
        ndropped += rc != 0;
    }
    /* At most one batch taken by the writer plus a full queue got in. */
    assert_true(ndropped >= 20 - 2 * 4);
    assert_int_equal(stats(t).dropped, ndropped);
    mdb_txn_abort(hold);
    llmc_tier_disk_flush(t);
    assert_int_equal(stats(t).stored, 20 - ndropped);
    for (uint32_t i = 0; i < 20; i++)
        assert_int_equal(has(t, i, NOW), accepted[i]);
    t->ops->destroy(t);
}

/* Size of DIR/name in bytes. */
static off_t file_size(const fixture_t *f, const char *name)
{
    char p[160];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", f->dir, name);
    assert_int_equal(stat(p, &st), 0);
    return st.st_size;
}

static void test_disk_bound_evicts_oldest_first(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    enum { N = 10000 };
    c.max_bytes = 2u << 20;
    llmc_tier_t *t = open_ok(&c);
    /* Ten times what fits, a flush now and then so the queue never drops. */
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(put(t, i, 3600000, NULL, NULL), 0);
        if (i % 1000 == 999)
            llmc_tier_disk_flush(t);
    }
    llmc_tier_disk_flush(t);
    llmc_tier_stats_t s = stats(t);
    assert_int_equal(s.stored, N);
    assert_int_equal(s.errors, 0);
    assert_int_equal(s.dropped, 0);
    assert_true(s.evicted_size > 0);
    assert_int_equal(s.entries + s.evicted_size, N);
    assert_true(s.bytes <= c.max_bytes);
    assert_true(file_size(f, "data.mdb") <= (off_t)c.max_bytes);
    /* What is left is the newest entries: once one is present, every later one is. */
    uint32_t first = N;
    for (uint32_t i = 0; i < N; i++) {
        bool here = has(t, i, NOW);
        if (here && first == N)
            first = i;
        assert_true(here == (first != N));
    }
    assert_int_equal(N - first, s.entries);
    /* The bound is not met by throwing everything away. LMDB splits a page
       in two when it fills and merges only below a quarter full, so a
       tree of 1 KB records holds only 1.5-2 per 4 KB page. */
    assert_true(s.entries >= 200);
    t->ops->destroy(t);
}

/* Entry i with a body of len bytes, created NOW + i, fresh for an hour. */
static llmc_entry_t *big_entry(uint32_t i, size_t len)
{
    char *body = malloc(len);
    llmc_key_t k = key_of(i);
    assert_non_null(body);
    memset(body, 'a' + i % 26, len);
    llmc_entry_spec_t s = {
        .key = &k, .status = 200, .created_ms = NOW + i, .expires_ms = NOW + i + 3600000,
        .content_type = "application/json", .model = "m", .body = body, .body_len = len,
    };
    llmc_entry_t *e = llmc_entry_new(&s);
    free(body);
    assert_non_null(e);
    return e;
}

/*
 * With answers of 200 KB in a 4 MB file, about a dozen fit under the low
 * mark. Crossing the bound must evict the oldest one or two, as with small
 * answers: eviction used to remove 64 entries between size checks, which
 * here emptied the whole file every time it filled.
 */
static void test_big_entries_evict_a_few_not_the_whole_file(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    c.max_bytes = 4u << 20;
    llmc_tier_t *t = open_ok(&c);
    uint64_t most = 0;
    for (uint32_t i = 0; i < 60; i++) {
        llmc_entry_t *e = big_entry(i, 200 << 10);
        assert_int_equal(t->ops->put(t, 0, e, NOW), 0);
        llmc_entry_unref(e);
        llmc_tier_disk_flush(t);
        llmc_tier_stats_t s = stats(t);
        assert_int_equal(s.errors, 0);
        assert_int_equal(s.entries + s.evicted_size, i + 1);
        assert_true(s.bytes <= c.max_bytes);
        if (s.entries > most)
            most = s.entries;
        /* Once the file has filled, it stays most of the way full. */
        if (s.evicted_size > 0)
            assert_true(s.entries >= most * 2 / 3);
    }
    assert_true(most >= 10);
    assert_true(stats(t).evicted_size > 0);
    t->ops->destroy(t);
}

static void write_garbage(const fixture_t *f, uint32_t i, const void *val, size_t len)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    llmc_key_t k = key_of(i);
    MDB_val mk = { LLMC_KEY_LEN, k.b }, mv = { len, (void *)val };
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "entries", 0, &dbi), 0);
    assert_int_equal(mdb_put(txn, dbi, &mk, &mv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static int count_aside(const fixture_t *f);
static uint64_t quarantined(llmc_tier_t *t);

/* Records in the "entries" database, read with LMDB directly. */
static size_t raw_entries(const fixture_t *f)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat st;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, f->dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "entries", 0, &dbi), 0);
    assert_int_equal(mdb_stat(txn, dbi, &st), 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return st.ms_entries;
}

/* Issue 14: a record that fails to verify is a miss, counted, and damage:
   it is left where it is (deleting it goes through its pages, and through
   a damaged page LMDB crashes), the tier stops using the file, and the next
   open moves the file aside. */
static void test_corrupt_record_is_miss_counted_left_and_stops_the_tier(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(put(t, i, 60000, NULL, NULL), 0);
    t->ops->destroy(t);

    /* Record 1 overwritten with junk; record 2 with a good record cut short. */
    write_garbage(f, 1, "not a record at all", 19);
    llmc_entry_t *e = entry(2, 60000, NULL, NULL);
    uint8_t *rec;
    size_t len;
    assert_int_equal(llmc_record_encode(e, &rec, &len), 0);
    write_garbage(f, 2, rec, len - 1);
    free(rec);
    llmc_entry_unref(e);

    t = open_ok(&c);
    assert_true(has(t, 0, NOW));
    assert_false(has(t, 2, NOW));
    assert_int_equal(stats(t).errors, 1);
    /* From now on the file is neither read nor written. */
    assert_false(has(t, 0, NOW));
    assert_false(has(t, 1, NOW));
    assert_int_equal(put(t, 1, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    assert_false(has(t, 1, NOW));
    t->ops->destroy(t);
    assert_int_equal(raw_entries(f), 3); /* nothing was deleted */

    /* The next open sets the file aside and starts empty. */
    t = open_ok(&c);
    assert_int_equal(count_aside(f), 1);
    assert_int_equal(quarantined(t), 1);
    assert_false(has(t, 0, NOW));
    assert_int_equal(put(t, 1, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    assert_true(has(t, 1, NOW));
    t->ops->destroy(t);
}

static void test_second_open_refused(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c), *t2 = NULL;
    char err[256], want[256];
    snprintf(want, sizeof want, "data dir %s is in use by another llmcached (pid %ld)",
             f->dir, (long)getpid());
    /* Another process (this binary, started with --open-child) tries the
       same directory. It is exec'd rather than only forked so that it holds
       no copy of this process's tier, as a second gateway would not. */
    char self[200], cmd[400], line[256] = "";
    self_path(self, sizeof self);
    snprintf(cmd, sizeof cmd, "%s --open-child %s", self, f->dir);
    FILE *child = popen(cmd, "r");
    assert_non_null(child);
    assert_non_null(fgets(line, sizeof line, child));
    line[strcspn(line, "\n")] = 0;
    int status = pclose(child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_string_equal(line, want);

    /* A second open in this process is refused too: LMDB forbids it. */
    assert_int_equal(llmc_tier_disk_open(&c, &t2, err, sizeof err), LLMC_ELOCKED);
    assert_string_equal(err, want);
    t->ops->destroy(t);
    /* Closed, the directory is free again. */
    t = open_ok(&c);
    t->ops->destroy(t);
}

static void assert_mode(const char *dir, const char *name, mode_t want)
{
    char p[160];
    struct stat st;
    snprintf(p, sizeof p, "%s%s%s", dir, *name ? "/" : "", name);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, want);
}

static void test_files_are_private(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    /* No umask to hide behind: the modes must come from the tier. */
    mode_t old = umask(0);
    llmc_tier_t *t = open_ok(&c);
    umask(old);
    assert_int_equal(put(t, 1, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    assert_mode(f->dir, "", 0700);
    assert_mode(f->dir, "data.mdb", 0600);
    assert_mode(f->dir, "lock.mdb", 0600);
    assert_mode(f->dir, "llmcached.lock", 0600);
    t->ops->destroy(t);
}

static void test_reader_slots_full_is_a_miss(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    c.max_readers = 1;
    llmc_tier_t *t = open_ok(&c);
    disk_t *d = t->impl;
    assert_int_equal(put(t, 1, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    MDB_txn *hold;
    assert_int_equal(mdb_txn_begin(d->env, NULL, MDB_RDONLY, &hold), 0);
    assert_false(has(t, 1, NOW));
    assert_int_equal(stats(t).errors, 1);
    mdb_txn_abort(hold);
    assert_true(has(t, 1, NOW));
    t->ops->destroy(t);
}

static void test_purge_hides_before_commit(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    disk_t *d = t->impl;
    for (uint32_t i = 0; i < 40; i++)
        assert_int_equal(put(t, i, 60000, i < 10 ? "a" : "b", i % 2 ? "odd" : "even"), 0);
    llmc_tier_disk_flush(t);

    MDB_txn *hold;
    assert_int_equal(mdb_txn_begin(d->env, NULL, 0, &hold), 0);
    llmc_purge_t tag = { .conds = LLMC_PURGE_TAG, .tag = "odd" };
    llmc_purge_t key = { .conds = LLMC_PURGE_KEY, .key = key_of(2) };
    llmc_purge_t ns = { .conds = LLMC_PURGE_NAMESPACE, .ns = "a" };
    assert_int_equal(purge_now(t, &tag), 0);
    assert_int_equal(purge_now(t, &key), 1);
    assert_int_equal(purge_now(t, &ns), 0);
    /* Nothing is committed yet, and still no purged entry is served. */
    assert_int_equal(stats(t).entries, 40);
    assert_false(has(t, 11, NOW));
    assert_false(has(t, 2, NOW));
    assert_false(has(t, 4, NOW));
    assert_true(has(t, 12, NOW));
    mdb_txn_abort(hold);
    llmc_tier_disk_flush(t);

    llmc_tier_stats_t s = stats(t);
    /* 20 odd, then key 2, then the 4 even left in namespace a (0,4,6,8). */
    assert_int_equal(s.purged, 20 + 1 + 4);
    assert_int_equal(s.entries, 15);
    for (uint32_t i = 0; i < 40; i++)
        assert_int_equal(has(t, i, NOW), i >= 10 && i % 2 == 0);

    llmc_purge_t all = { .all = true };
    assert_int_equal(purge_now(t, &all), 15);
    llmc_tier_disk_flush(t);
    assert_int_equal(stats(t).entries, 0);
    assert_false(has(t, 12, NOW));
    /* Entries put after a purge are kept. */
    assert_int_equal(put(t, 12, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    assert_true(has(t, 12, NOW));
    t->ops->destroy(t);
}

/* A purge records what it removed into *(size_t *)arg, and says so. */
typedef struct report {
    size_t removed;
    int calls;
} report_t;

static void reported(void *arg, size_t removed)
{
    report_t *r = arg;
    r->removed = removed;
    r->calls++;
}

/* On an attached loop a purge reports once committed, with what the writer
   really removed (a scan's count too, which is unknown when it is queued),
   and a purge by key and more conditions removes the key only when they
   hold. */
static void test_purge_reports_counts_on_attached_loop(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(t->ops->attach(t, 1, &loop), 0);   /* index 1: 0 stays unattached */
    for (uint32_t i = 0; i < 30; i++)
        assert_int_equal(put(t, i, 60000, i < 10 ? "a" : "b", i % 3 ? "x" : "y"), 0);
    llmc_tier_disk_flush(t);

    report_t r = {0};
    llmc_purge_t tag = { .conds = LLMC_PURGE_TAG, .tag = "y" };    /* 0,3,...,27 */
    t->ops->purge(t, 1, &tag, reported, &r);
    assert_int_equal(r.calls, 0);                   /* not before the writer ran */
    while (r.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.removed, 10);
    /* Key 1 AND namespace b: 1 is in a, so nothing; key 11 AND b: one. */
    llmc_purge_t kns = { .conds = LLMC_PURGE_KEY | LLMC_PURGE_NAMESPACE, .key = key_of(1), .ns = "b" };
    r = (report_t){0};
    t->ops->purge(t, 1, &kns, reported, &r);
    while (r.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(r.removed, 0);
    assert_true(has(t, 1, NOW));
    kns.key = key_of(11);
    r = (report_t){0};
    t->ops->purge(t, 1, &kns, reported, &r);
    while (r.calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(r.removed, 1);
    assert_false(has(t, 11, NOW));
    /* On the unattached worker 0 the answer is at once, as before. */
    llmc_purge_t all = { .all = true };
    r = (report_t){0};
    t->ops->purge(t, 0, &all, reported, &r);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.removed, 30 - 10 - 1);
    llmc_tier_disk_flush(t);
    assert_int_equal(stats(t).entries, 0);

    t->ops->detach(t, 1);
    uv_run(&loop, UV_RUN_DEFAULT);                  /* the handle's close */
    assert_int_equal(uv_loop_close(&loop), 0);
    t->ops->destroy(t);
}

/* Detach answers every purge still waiting to report on that loop (0 for
   one not committed yet), and the purge still runs. */
static void test_detach_answers_pending_purges(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    disk_t *d = t->impl;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(t->ops->attach(t, 0, &loop), 0);
    for (uint32_t i = 0; i < 5; i++)
        assert_int_equal(put(t, i, 60000, "a", NULL), 0);
    llmc_tier_disk_flush(t);
    MDB_txn *hold;   /* the writer cannot commit while we hold the write lock */
    assert_int_equal(mdb_txn_begin(d->env, NULL, 0, &hold), 0);
    report_t r = {0};
    llmc_purge_t ns = { .conds = LLMC_PURGE_NAMESPACE, .ns = "a" };
    t->ops->purge(t, 0, &ns, reported, &r);
    assert_false(has(t, 3, NOW));                   /* hidden while pending */
    t->ops->detach(t, 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.removed, 0);
    mdb_txn_abort(hold);
    llmc_tier_disk_flush(t);
    assert_int_equal(r.calls, 1);                   /* not twice */
    assert_int_equal(stats(t).entries, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    t->ops->destroy(t);
}

static void test_sync_modes_persist(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    const llmc_disk_sync_t modes[] = {
        LLMC_DISK_SYNC_FULL, LLMC_DISK_SYNC_PERIODIC, LLMC_DISK_SYNC_NONE,
    };
    for (uint32_t m = 0; m < 3; m++) {
        c.sync = modes[m];
        c.sync_interval_ms = 10;
        llmc_tier_t *t = open_ok(&c);
        assert_int_equal(put(t, m, 60000, NULL, NULL), 0);
        llmc_tier_disk_flush(t);
        usleep(30 * 1000);   /* lets a periodic sync fall due and run */
        t->ops->destroy(t);
        t = open_ok(&c);
        for (uint32_t i = 0; i <= m; i++)
            assert_true(has(t, i, NOW));
        t->ops->destroy(t);
    }
}

static void test_bad_config_and_dir(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = NULL;
    char err[256] = "";
    c.max_bytes = 100;
    assert_int_equal(llmc_tier_disk_open(&c, &t, err, sizeof err), LLMC_EINVAL);
    c = config(f);
    char file[128];
    snprintf(file, sizeof file, "%s/plain-file", f->root);
    FILE *fp = fopen(file, "w");
    fclose(fp);
    c.path = file;
    assert_int_equal(llmc_tier_disk_open(&c, &t, err, sizeof err), LLMC_EINVAL);
    assert_non_null(strstr(err, "not a directory"));
    assert_null(t);
}

/*
 * A data.mdb shorter than the pages its meta page names (a power loss with
 * --disk-sync periodic or none on a file system that kept the meta page
 * but not the file's length, a partial copy) used to open fine and then
 * kill the process with SIGBUS on the first lookup that touched a page past
 * the end. Now what was lost is a miss (and an error), what is left is
 * served unchanged, and the tier keeps running.
 */
static void test_file_cut_short_is_misses_not_sigbus(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    enum { N = 2000 };
    llmc_tier_t *t = open_ok(&c);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(put(t, i, 60000, NULL, NULL), 0);
    t->ops->destroy(t);
    char file[160];
    snprintf(file, sizeof file, "%s/data.mdb", f->dir);
    off_t size = file_size(f, "data.mdb");
    assert_true(size > (off_t)(1u << 20));
    assert_int_equal(truncate(file, size / 2), 0);

    t = open_ok(&c);
    int hits = 0;
    for (uint32_t i = 0; i < N; i++)
        hits += has(t, i, NOW);   /* has() checks every hit is entry i, byte for byte */
    llmc_tier_disk_flush(t);
    llmc_tier_stats_t s = stats(t);
    assert_true(hits < N);
    assert_true(s.errors > 0);
    /* The writer survives whatever it finds: new puts are stored or counted. */
    for (uint32_t i = N; i < N + 100; i++)
        assert_int_equal(put(t, i, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    s = stats(t);
    assert_true(s.stored + s.errors >= 100);
    t->ops->destroy(t);
}

/* ---- quarantine: a data file LMDB refuses, a crash loop ---- */

static void write_file(const fixture_t *f, const char *name, const void *buf, size_t len)
{
    char p[160];
    snprintf(p, sizeof p, "%s/%s", f->dir, name);
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
}

/* How many data.mdb.corrupt-* files the directory holds. */
static int count_aside(const fixture_t *f)
{
    DIR *dir = opendir(f->dir);
    struct dirent *de;
    int n = 0;
    assert_non_null(dir);
    while ((de = readdir(dir)))
        n += strncmp(de->d_name, "data.mdb.corrupt-", 17) == 0;
    closedir(dir);
    return n;
}

static uint64_t quarantined(llmc_tier_t *t)
{
    disk_xstats_t x;
    t->ops->xstats(t, &x);
    return x.quarantined;
}

static void test_unopenable_file_is_moved_aside(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    static char junk[64 << 10];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 2654435761u >> 13);
    assert_int_equal(mkdir(f->dir, 0700), 0);
    write_file(f, "data.mdb", junk, sizeof junk);

    /* fail_on_corrupt: refused, the file left as it is. */
    c.fail_on_corrupt = true;
    llmc_tier_t *t = NULL;
    char err[300] = "";
    assert_int_equal(llmc_tier_disk_open(&c, &t, err, sizeof err), LLMC_ECORRUPT);
    assert_non_null(strstr(err, "--disk-on-corrupt"));
    assert_int_equal(file_size(f, "data.mdb"), (off_t)sizeof junk);
    assert_int_equal(count_aside(f), 0);

    /* Otherwise moved aside, and an empty tier that works. */
    c.fail_on_corrupt = false;
    t = open_ok(&c);
    assert_int_equal(quarantined(t), 1);
    assert_int_equal(stats(t).errors, 1);
    assert_int_equal(count_aside(f), 1);
    assert_false(has(t, 1, NOW));
    assert_int_equal(put(t, 1, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    assert_true(has(t, 1, NOW));
    t->ops->destroy(t);
    t = open_ok(&c);
    assert_int_equal(quarantined(t), 0);
    assert_true(has(t, 1, NOW));
    t->ops->destroy(t);
}

static void test_crash_loop_marker(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    assert_int_equal(put(t, 7, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    assert_true(file_size(f, "llmcached.open") > 0);
    assert_mode(f->dir, "llmcached.open", 0600);
    t->ops->destroy(t);
    char marker[160];
    snprintf(marker, sizeof marker, "%s/llmcached.open", f->dir);
    assert_int_equal(access(marker, F_OK), -1); /* a clean close removes it */

    /* One run that ended without closing (the marker says 0 before it): kept. */
    write_file(f, "llmcached.open", "0\n", 2);
    t = open_ok(&c);
    assert_int_equal(quarantined(t), 0);
    assert_true(has(t, 7, NOW));
    t->ops->destroy(t);

    /* The second in a row: moved aside. */
    write_file(f, "llmcached.open", "1\n", 2);
    t = open_ok(&c);
    assert_int_equal(quarantined(t), 1);
    assert_int_equal(count_aside(f), 1);
    assert_false(has(t, 7, NOW));
    t->ops->destroy(t);

    /* With fail_on_corrupt a crash loop is only reported. */
    assert_int_equal(put(t = open_ok(&c), 8, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    t->ops->destroy(t);
    write_file(f, "llmcached.open", "5\n", 2);
    c.fail_on_corrupt = true;
    t = open_ok(&c);
    assert_int_equal(quarantined(t), 0);
    assert_true(has(t, 8, NOW));
    t->ops->destroy(t);
}

static void read_marker(const fixture_t *f, char *buf, size_t cap)
{
    char p[160];
    snprintf(p, sizeof p, "%s/llmcached.open", f->dir);
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    size_t n = fread(buf, 1, cap - 1, fp);
    buf[n] = 0;
    fclose(fp);
}

static void test_damage_seen_in_use_stops_use_and_quarantines_next_start(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(put(t, i, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    assert_true(has(t, 3, NOW));
    /* What read_entry or the writer do when LMDB answers MDB_CORRUPTED or
       MDB_PAGE_NOTFOUND (a page of the wrong type, one past the end). A
       record that fails its own checksum is not LMDB damage: no effect. */
    disk_t *d = t->impl;
    note_damage(d, LLMC_ECORRUPT);
    note_damage(d, MDB_NOTFOUND);
    assert_true(has(t, 3, NOW));
    uint64_t errors = stats(t).errors;
    note_damage(d, MDB_CORRUPTED);
    note_damage(d, MDB_PAGE_NOTFOUND);
    assert_int_equal(stats(t).errors, errors + 1);
    /* From then on nothing is read or written. */
    assert_false(has(t, 3, NOW));
    uint64_t stored = stats(t).stored;
    assert_int_equal(put(t, 100, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    assert_int_equal(stats(t).stored, stored);
    assert_true(stats(t).errors >= errors + 2);
    char buf[32];
    read_marker(f, buf, sizeof buf);
    assert_string_equal(buf, "damaged\n");
    t->ops->destroy(t);
    read_marker(f, buf, sizeof buf); /* kept at close: not a clean end */
    assert_string_equal(buf, "damaged\n");

    /* The next start moves the file aside, once. */
    t = open_ok(&c);
    assert_int_equal(quarantined(t), 1);
    assert_int_equal(count_aside(f), 1);
    assert_false(has(t, 3, NOW));
    assert_int_equal(put(t, 3, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    assert_true(has(t, 3, NOW));
    t->ops->destroy(t);
    t = open_ok(&c);
    assert_int_equal(quarantined(t), 0);
    assert_true(has(t, 3, NOW));
    t->ops->destroy(t);
}

static void test_dir_writable_by_others_is_refused(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = NULL;
    char err[300] = "";
    assert_int_equal(mkdir(f->dir, 0700), 0);
    assert_int_equal(chmod(f->dir, 0770), 0);
    assert_int_equal(llmc_tier_disk_open(&c, &t, err, sizeof err), LLMC_EINVAL);
    assert_non_null(strstr(err, "writable by its group"));
    assert_int_equal(chmod(f->dir, 0755), 0);
    t = open_ok(&c);
    t->ops->destroy(t);
}

typedef struct reader_arg {
    llmc_tier_t *t;
    int hits;
} reader_arg_t;

static void *reader(void *arg)
{
    reader_arg_t *a = arg;
    for (int round = 0; round < 20; round++)
        for (uint32_t i = 0; i < 200; i++)
            a->hits += has(a->t, i, NOW);
    return NULL;
}

static void test_gets_from_many_threads_while_writing(void **state)
{
    fixture_t *f = *state;
    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);
    for (uint32_t i = 0; i < 200; i++)
        assert_int_equal(put(t, i, 60000, NULL, NULL), 0);
    llmc_tier_disk_flush(t);
    pthread_t th[4];
    reader_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (reader_arg_t){ t, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
    }
    for (uint32_t i = 200; i < 2200; i++)
        assert_int_equal(put(t, i, 60000, NULL, NULL), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].hits, 20 * 200);
    }
    llmc_tier_disk_flush(t);
    assert_int_equal(stats(t).entries, 2200);
    assert_int_equal(stats(t).errors, 0);
    t->ops->destroy(t);
}

/*
 * The child of test_kill_9_loses_nothing_committed: puts entries without
 * end and, after each flush, prints how many are committed.
 */
static int flood_child(const char *dir)
{
    llmc_disk_config_t c = { .path = dir, .sync = LLMC_DISK_SYNC_NONE, .max_bytes = 256u << 20,
                             .queue_len = 100000 };
    llmc_tier_t *t = open_ok(&c);
    for (uint32_t i = 0; i < UINT32_MAX; i++) {
        put(t, i, 600000, NULL, NULL);
        if (i % 250 == 249) {
            llmc_tier_disk_flush(t);
            printf("%u\n", i + 1);
            fflush(stdout);
        }
    }
    return 1;   /* not reached: the parent kills this process */
}

static void test_kill_9_loses_nothing_committed(void **state)
{
    fixture_t *f = *state;
    char self[200], line[64];
    int fds[2];
    self_path(self, sizeof self);
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        execl(self, self, "--flood-child", f->dir, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    unsigned committed = 0;
    /* Killed in the middle of its writes, once a few thousand are in. */
    while (committed < 5000 && fgets(line, sizeof line, in))
        committed = (unsigned)strtoul(line, NULL, 10);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    fclose(in);
    assert_true(committed >= 5000);

    llmc_disk_config_t c = config(f);
    llmc_tier_t *t = open_ok(&c);   /* the dead child's lock went with it */
    for (uint32_t i = 0; i < committed; i++)
        assert_true(has(t, i, NOW));
    llmc_tier_stats_t s = stats(t);
    assert_true(s.entries >= committed);
    assert_int_equal(s.errors, 0);
    /* Every record in the file decodes: nothing half-written is visible. */
    disk_t *d = t->impl;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    size_t n = 0;
    assert_int_equal(mdb_txn_begin(d->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, d->entries, &cur), 0);
    while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0) {
        llmc_key_t key;
        llmc_entry_t *e = NULL;
        memcpy(key.b, k.mv_data, LLMC_KEY_LEN);
        assert_int_equal(llmc_record_decode(&key, v.mv_data, v.mv_size, &e), 0);
        llmc_entry_unref(e);
        n++;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    assert_int_equal(n, s.entries);
    t->ops->destroy(t);
}

/* The second process of test_second_open_refused: 0 when refused as expected. */
static int open_child(const char *dir)
{
    llmc_disk_config_t c = { .path = dir, .max_bytes = 64u << 20 };
    llmc_tier_t *t = NULL;
    char err[256] = "";
    int rc = llmc_tier_disk_open(&c, &t, err, sizeof err);
    printf("%s\n", err);
    if (rc == 0)
        t->ops->destroy(t);
    return rc == LLMC_ELOCKED ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--open-child") == 0)
        return open_child(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--flood-child") == 0)
        return flood_child(argv[2]);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_put_flush_get),
        T(test_reopen_keeps_entries_and_times),
        T(test_replacing_keeps_one_record_and_index),
        T(test_expiry_keep_stale_and_sweep),
        T(test_put_of_expired_entry_is_not_stored),
        T(test_full_queue_drops_and_never_blocks),
        T(test_disk_bound_evicts_oldest_first),
        T(test_big_entries_evict_a_few_not_the_whole_file),
        T(test_corrupt_record_is_miss_counted_left_and_stops_the_tier),
        T(test_second_open_refused),
        T(test_files_are_private),
        T(test_reader_slots_full_is_a_miss),
        T(test_purge_hides_before_commit),
        T(test_purge_reports_counts_on_attached_loop),
        T(test_detach_answers_pending_purges),
        T(test_sync_modes_persist),
        T(test_bad_config_and_dir),
        T(test_file_cut_short_is_misses_not_sigbus),
        T(test_unopenable_file_is_moved_aside),
        T(test_crash_loop_marker),
        T(test_damage_seen_in_use_stops_use_and_quarantines_next_start),
        T(test_dir_writable_by_others_is_refused),
        T(test_gets_from_many_threads_while_writing),
        T(test_kill_9_loses_nothing_committed),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
