/*
 * test_flight.c: the single-flight table and the shared answer
 * (src/gateway/flight.c).
 *
 * A waiter here is a recorder: its notify() only counts the call and notes
 * what the flight showed at that moment, which is all flight.h allows (it
 * runs with the flight lock held). It also checks that the lock is held,
 * with a trylock that must fail. Memory is checked by the sanitizer build:
 * every flight and entry a test makes is released by the end of it, so a
 * reference too many shows as a leak and one too few as a use after free.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/flight.h"
#include "llmc/error.h"

typedef struct rec {
    llmc_flight_waiter_t w; /* first: notify gets &rec->w */
    llmc_flight_t *f;
    int calls;
    int lock_free_calls;    /* calls made without the flight lock held */
    bool saw_done, saw_head;
    size_t saw_body_len;
} rec_t;

static void rec_notify(llmc_flight_waiter_t *w)
{
    rec_t *r = (rec_t *)w;
    r->calls++;
    /* The lock must be held (by this thread): a trylock fails. */
    if (pthread_mutex_trylock(&r->f->mu) == 0) {
        r->lock_free_calls++;
        pthread_mutex_unlock(&r->f->mu);
    }
    r->saw_done = r->f->done;
    r->saw_head = r->f->head_known;
    r->saw_body_len = r->f->body_len;
}

static void rec_init(rec_t *r, llmc_flight_t *f, bool wants_data)
{
    memset(r, 0, sizeof(*r));
    r->f = f;
    r->w.wants_data = wants_data;
    r->w.notify = rec_notify;
}

static llmc_key_t key_of(uint8_t seed)
{
    llmc_key_t k;
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        k.b[i] = (uint8_t)(seed * 31 + i);
    return k;
}

static int refs(llmc_flight_t *f)
{
    return atomic_load(&f->refcnt);
}

static llmc_entry_t *mk_entry(const llmc_key_t *k)
{
    llmc_entry_spec_t spec = {.key = k, .status = 200, .created_ms = 0, .expires_ms = 1000,
                              .body = "{}", .body_len = 2};
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);
    return e;
}

static void test_join_creates_then_joins(void **state)
{
    (void)state;
    llmc_flight_table_t *t = llmc_flight_table_new(4);
    assert_non_null(t);
    assert_int_equal(llmc_flight_table_count(t), 0);
    llmc_key_t k = key_of(1);
    bool created = false;
    llmc_flight_t *f = llmc_flight_join(t, &k, true, &created);
    assert_non_null(f);
    assert_true(created);
    assert_true(f->in_table);
    assert_ptr_equal(f->table, t);
    assert_true(f->is_stream);
    assert_memory_equal(f->key.b, k.b, LLMC_KEY_LEN);
    assert_int_equal(refs(f), 2); /* the caller's and the table's */
    assert_int_equal(llmc_flight_table_count(t), 1);

    created = true;
    llmc_flight_t *g = llmc_flight_join(t, &k, false, &created);
    assert_ptr_equal(g, f);
    assert_false(created);
    assert_true(f->is_stream); /* set at creation, not by a joiner */
    assert_int_equal(refs(f), 3);
    assert_int_equal(llmc_flight_table_count(t), 1);

    llmc_flight_finish(f, 0, NULL, false, NULL);
    assert_int_equal(refs(f), 2);
    llmc_flight_unref(g);
    llmc_flight_unref(f);
    llmc_flight_table_free(t);
}

/* One key, other callers (the credential a shared cache sends upstream
   but does not key): flights apart, so one caller's error is not another's. */
static void test_same_key_other_callers_different_flights(void **state)
{
    (void)state;
    llmc_flight_table_t *t = llmc_flight_table_new(4);
    llmc_key_t k = key_of(7), a = key_of(1), b = key_of(2);
    bool c1, c2, c3, c4;
    llmc_flight_t *fa = llmc_flight_join_as(t, &k, &a, false, &c1);
    llmc_flight_t *fb = llmc_flight_join_as(t, &k, &b, false, &c2);
    llmc_flight_t *fn = llmc_flight_join(t, &k, false, &c3);
    llmc_flight_t *fa2 = llmc_flight_join_as(t, &k, &a, false, &c4);
    assert_true(c1 && c2 && c3);
    assert_false(c4);
    assert_ptr_not_equal(fa, fb);
    assert_ptr_not_equal(fa, fn);
    assert_ptr_not_equal(fb, fn);
    assert_ptr_equal(fa, fa2);
    assert_int_equal(llmc_flight_table_count(t), 3);
    llmc_flight_finish(fb, 0, NULL, false, NULL);
    assert_int_equal(llmc_flight_table_count(t), 2);
    llmc_flight_finish(fa, 0, NULL, false, NULL);
    llmc_flight_finish(fn, 0, NULL, false, NULL);
    assert_int_equal(llmc_flight_table_count(t), 0);
    llmc_flight_unref(fa2);
    llmc_flight_unref(fa);
    llmc_flight_unref(fb);
    llmc_flight_unref(fn);
    llmc_flight_table_free(t);
}

static void test_different_keys_different_flights(void **state)
{
    (void)state;
    llmc_flight_table_t *t = llmc_flight_table_new(0); /* 0: the default shard count */
    assert_non_null(t);
    llmc_key_t k1 = key_of(1), k2 = key_of(2);
    bool c1, c2;
    llmc_flight_t *f1 = llmc_flight_join(t, &k1, false, &c1);
    llmc_flight_t *f2 = llmc_flight_join(t, &k2, false, &c2);
    assert_true(c1);
    assert_true(c2);
    assert_ptr_not_equal(f1, f2);
    assert_int_equal(llmc_flight_table_count(t), 2);
    llmc_flight_finish(f1, 0, NULL, false, NULL);
    assert_int_equal(llmc_flight_table_count(t), 1);
    llmc_flight_finish(f2, 0, NULL, false, NULL);
    assert_int_equal(llmc_flight_table_count(t), 0);
    llmc_flight_unref(f1);
    llmc_flight_unref(f2);
    llmc_flight_table_free(t);
}

/* Keys that hash alike (the table hashes bytes 8..15) share a chain, yet are
   different flights, and taking one out of the middle keeps the rest. */
static void test_same_chain_keys(void **state)
{
    (void)state;
    llmc_flight_table_t *t = llmc_flight_table_new(1);
    assert_non_null(t);
    llmc_key_t k[3];
    llmc_flight_t *f[3];
    bool created;
    for (int i = 0; i < 3; i++) {
        k[i] = key_of(9);
        k[i].b[0] = (uint8_t)i;  /* outside the hashed bytes */
        k[i].b[31] = (uint8_t)i;
        f[i] = llmc_flight_join(t, &k[i], false, &created);
        assert_true(created);
    }
    assert_ptr_not_equal(f[0], f[1]);
    assert_ptr_not_equal(f[1], f[2]);
    assert_int_equal(llmc_flight_table_count(t), 3);
    llmc_flight_finish(f[1], 0, NULL, false, NULL);
    assert_int_equal(llmc_flight_table_count(t), 2);
    for (int i = 0; i < 3; i += 2) {
        llmc_flight_t *g = llmc_flight_join(t, &k[i], false, &created);
        assert_false(created);
        assert_ptr_equal(g, f[i]);
        llmc_flight_unref(g);
    }
    llmc_flight_t *g = llmc_flight_join(t, &k[1], false, &created);
    assert_true(created);
    assert_ptr_not_equal(g, f[1]);
    llmc_flight_finish(g, 0, NULL, false, NULL);
    llmc_flight_unref(g);
    for (int i = 0; i < 3; i += 2)
        llmc_flight_finish(f[i], 0, NULL, false, NULL);
    assert_int_equal(llmc_flight_table_count(t), 0);
    for (int i = 0; i < 3; i++)
        llmc_flight_unref(f[i]);
    llmc_flight_table_free(t);
}

static void test_attach_detach(void **state)
{
    (void)state;
    llmc_key_t k = key_of(3);
    llmc_flight_t *f = llmc_flight_new_private(&k, false);
    rec_t a, b, c;
    rec_init(&a, f, false);
    rec_init(&b, f, false);
    rec_init(&c, f, false);
    assert_true(llmc_flight_attach(f, &a.w));
    assert_true(llmc_flight_attach(f, &b.w));
    assert_true(llmc_flight_attach(f, &c.w));
    assert_true(a.w.attached);
    assert_int_equal(f->nwaiters, 3);
    /* From the middle of the list, then its head, and twice. */
    llmc_flight_detach(f, &b.w);
    assert_false(b.w.attached);
    assert_int_equal(f->nwaiters, 2);
    llmc_flight_detach(f, &b.w);
    assert_int_equal(f->nwaiters, 2);
    llmc_flight_detach(f, &c.w);
    assert_int_equal(f->nwaiters, 1);
    /* A waiter that left is not told. */
    llmc_flight_finish(f, 0, NULL, false, NULL);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 0);
    assert_int_equal(c.calls, 0);
    /* Detaching after the end still unlinks. */
    llmc_flight_detach(f, &a.w);
    assert_false(a.w.attached);
    assert_int_equal(f->nwaiters, 0);
    assert_null(f->waiters);
    llmc_flight_unref(f);
}

static void test_finish_notifies_each_once(void **state)
{
    (void)state;
    llmc_flight_table_t *t = llmc_flight_table_new(4);
    llmc_key_t k = key_of(4);
    bool created;
    llmc_flight_t *f = llmc_flight_join(t, &k, false, &created);
    enum { N = 5 };
    rec_t r[N];
    for (int i = 0; i < N; i++) {
        rec_init(&r[i], f, false);
        assert_true(llmc_flight_attach(f, &r[i].w));
    }
    /* A plain answer: head and data tell nobody. */
    llmc_flight_head(f, 200, "application/json", NULL, 0);
    assert_int_equal(llmc_flight_data(f, "{}", 2), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(r[i].calls, 0);
    llmc_flight_finish(f, LLMC_EUPSTREAM, "boom", true, NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].lock_free_calls, 0);
        assert_true(r[i].saw_done); /* done is set before anyone is told */
    }
    assert_true(f->done);
    assert_int_equal(f->err, LLMC_EUPSTREAM);
    assert_string_equal(f->errmsg, "boom");
    assert_true(f->invalid);
    assert_null(f->entry);
    for (int i = 0; i < N; i++)
        llmc_flight_detach(f, &r[i].w);
    llmc_flight_unref(f);
    llmc_flight_table_free(t);
}

static void test_attach_after_finish(void **state)
{
    (void)state;
    llmc_key_t k = key_of(5);
    llmc_flight_t *f = llmc_flight_new_private(&k, false);
    rec_t early, late;
    rec_init(&early, f, true);
    rec_init(&late, f, true);
    assert_true(llmc_flight_attach(f, &early.w));
    llmc_flight_finish(f, 0, NULL, false, NULL);
    /* Too late: nothing is linked, the caller reads the result now. */
    assert_false(llmc_flight_attach(f, &late.w));
    assert_false(late.w.attached);
    assert_int_equal(f->nwaiters, 1);
    assert_ptr_equal(f->waiters, &early.w);
    assert_int_equal(late.calls, 0);
    assert_int_equal(early.calls, 1);
    llmc_flight_detach(f, &early.w);
    llmc_flight_unref(f);
}

static void test_finished_flight_leaves_table(void **state)
{
    (void)state;
    llmc_flight_table_t *t = llmc_flight_table_new(4);
    llmc_key_t k = key_of(6);
    bool created;
    llmc_flight_t *f = llmc_flight_join(t, &k, false, &created);
    llmc_flight_finish(f, 0, NULL, false, NULL);
    assert_false(f->in_table);
    assert_int_equal(llmc_flight_table_count(t), 0);
    /* The next miss starts a call of its own instead of reading an old one. */
    llmc_flight_t *g = llmc_flight_join(t, &k, false, &created);
    assert_true(created);
    assert_ptr_not_equal(g, f);
    assert_false(g->done);
    assert_int_equal(llmc_flight_table_count(t), 1);
    llmc_flight_finish(g, 0, NULL, false, NULL);
    llmc_flight_unref(g);
    llmc_flight_unref(f);
    llmc_flight_table_free(t);
}

static void test_unpublish(void **state)
{
    (void)state;
    llmc_flight_table_t *t = llmc_flight_table_new(4);
    llmc_key_t k = key_of(7);
    bool created;
    llmc_flight_t *f = llmc_flight_join(t, &k, false, &created);
    assert_int_equal(refs(f), 2);
    llmc_flight_unpublish(f);
    assert_false(f->in_table);
    assert_int_equal(refs(f), 1); /* the table's reference went with it */
    assert_int_equal(llmc_flight_table_count(t), 0);
    llmc_flight_unpublish(f); /* twice: nothing more */
    assert_int_equal(refs(f), 1);
    /* Still in the air, but no longer joinable. */
    llmc_flight_t *g = llmc_flight_join(t, &k, false, &created);
    assert_true(created);
    assert_ptr_not_equal(g, f);
    llmc_flight_finish(f, 0, NULL, false, NULL); /* finish after unpublish */
    assert_int_equal(refs(f), 1);
    assert_int_equal(llmc_flight_table_count(t), 1); /* g's */
    llmc_flight_finish(g, 0, NULL, false, NULL);
    llmc_flight_unref(g);
    llmc_flight_unref(f);
    llmc_flight_table_free(t);
}

static void test_private_not_joinable(void **state)
{
    (void)state;
    llmc_flight_table_t *t = llmc_flight_table_new(4);
    llmc_key_t k = key_of(8);
    llmc_flight_t *p = llmc_flight_new_private(&k, true);
    assert_non_null(p);
    assert_null(p->table);
    assert_false(p->in_table);
    assert_int_equal(refs(p), 1);
    assert_int_equal(llmc_flight_table_count(t), 0);
    bool created;
    llmc_flight_t *f = llmc_flight_join(t, &k, false, &created);
    assert_true(created);
    assert_ptr_not_equal(f, p);
    /* Finishing the private flight touches no table. */
    llmc_flight_finish(p, 0, NULL, false, NULL);
    assert_int_equal(refs(p), 1);
    assert_int_equal(llmc_flight_table_count(t), 1);
    llmc_flight_unpublish(p); /* harmless */
    llmc_flight_finish(f, 0, NULL, false, NULL);
    llmc_flight_unref(f);
    llmc_flight_unref(p);
    llmc_flight_table_free(t);
}

/* The flight outlives its place in the table while anyone holds it: the
   answer stays readable after finish, and the stored entry stays alive
   through the flight's reference. */
static void test_refcounts_outlive_table(void **state)
{
    (void)state;
    llmc_flight_table_t *t = llmc_flight_table_new(2);
    llmc_key_t k = key_of(10);
    bool created;
    llmc_flight_t *leader = llmc_flight_join(t, &k, false, &created);
    llmc_flight_t *joiner = llmc_flight_join(t, &k, false, &created);
    assert_ptr_equal(leader, joiner);
    assert_int_equal(refs(leader), 3);
    llmc_flight_head(leader, 200, "application/json", "X-A: b\r\n", 8);
    assert_int_equal(llmc_flight_data(leader, "{\"ok\":true}", 11), 0);
    llmc_entry_t *e = mk_entry(&k);
    llmc_flight_finish(leader, 0, NULL, false, e);
    assert_ptr_equal(leader->entry, e);
    assert_int_equal(atomic_load(&e->refcnt), 2); /* ours and the flight's */
    llmc_entry_unref(e);                           /* the cache lets go */
    assert_int_equal(refs(leader), 2);
    assert_int_equal(llmc_flight_table_count(t), 0);
    /* The table can go first: a finished flight no longer needs it. */
    llmc_flight_table_free(t);
    llmc_flight_unref(leader);
    /* The joiner still reads all of it. */
    assert_int_equal(refs(joiner), 1);
    assert_int_equal(joiner->status, 200);
    assert_memory_equal(joiner->pass_hdrs, "X-A: b\r\n", 8);
    assert_string_equal(joiner->body, "{\"ok\":true}");
    assert_string_equal(joiner->entry->body, "{}");
    assert_int_equal(atomic_load(&joiner->entry->refcnt), 1);
    llmc_flight_unref(joiner); /* frees the flight and the entry */
    llmc_flight_unref(NULL);   /* ignored */
}

static void test_wants_data_waiters(void **state)
{
    (void)state;
    llmc_key_t k = key_of(11);
    llmc_flight_t *f = llmc_flight_new_private(&k, true);
    rec_t s, p;
    rec_init(&s, f, true);  /* a stream reader: every step */
    rec_init(&p, f, false); /* a plain reader: the end only */
    assert_true(llmc_flight_attach(f, &s.w));
    assert_true(llmc_flight_attach(f, &p.w));
    llmc_flight_head(f, 200, "text/event-stream", NULL, 0);
    assert_int_equal(s.calls, 1);
    assert_true(s.saw_head);
    assert_int_equal(p.calls, 0);
    assert_int_equal(llmc_flight_data(f, "data: 1\n\n", 9), 0);
    assert_int_equal(s.calls, 2);
    assert_int_equal(s.saw_body_len, 9);
    assert_int_equal(llmc_flight_data(f, "data: 2\n\n", 9), 0);
    assert_int_equal(s.calls, 3);
    assert_int_equal(s.saw_body_len, 18);
    assert_int_equal(p.calls, 0);
    llmc_flight_finish(f, 0, NULL, false, NULL);
    assert_int_equal(s.calls, 4);
    assert_true(s.saw_done);
    assert_int_equal(p.calls, 1);
    assert_int_equal(s.lock_free_calls + p.lock_free_calls, 0);
    llmc_flight_detach(f, &s.w);
    llmc_flight_detach(f, &p.w);
    llmc_flight_unref(f);
}

static void test_head(void **state)
{
    (void)state;
    llmc_key_t k = key_of(12);
    llmc_flight_t *f = llmc_flight_new_private(&k, false);
    assert_false(f->head_known);
    assert_int_equal(f->status, 0);
    char pass[] = "X-Request-Id: 1\r\nRetry-After: 2\r\n";
    char ctype[300];
    memset(ctype, 'c', sizeof ctype - 1);
    ctype[sizeof ctype - 1] = '\0';
    llmc_flight_head(f, 429, ctype, pass, strlen(pass));
    assert_true(f->head_known);
    assert_int_equal(f->status, 429);
    /* A content type too long for the field is cut, still terminated. */
    assert_int_equal(strlen(f->content_type), sizeof f->content_type - 1);
    /* The headers are copied, not borrowed. */
    assert_int_equal(f->pass_len, strlen(pass));
    assert_ptr_not_equal(f->pass_hdrs, pass);
    memset(pass, 'Z', strlen(pass));
    assert_memory_equal(f->pass_hdrs, "X-Request-Id: 1\r\nRetry-After: 2\r\n", f->pass_len);
    llmc_flight_unref(f);

    f = llmc_flight_new_private(&k, false);
    llmc_flight_head(f, 200, NULL, NULL, 0);
    assert_string_equal(f->content_type, "");
    assert_null(f->pass_hdrs);
    assert_int_equal(f->pass_len, 0);
    llmc_flight_unref(f);
}

static void test_data_appends(void **state)
{
    (void)state;
    llmc_key_t k = key_of(13);
    llmc_flight_t *f = llmc_flight_new_private(&k, false);
    assert_int_equal(llmc_flight_data(f, "abc", 3), 0);
    assert_int_equal(llmc_flight_data(f, "", 0), 0);
    assert_int_equal(llmc_flight_data(f, "de\0f", 4), 0); /* bytes, not strings */
    assert_int_equal(f->body_len, 7);
    assert_memory_equal(f->body, "abcde\0f", 7);
    assert_int_equal(f->body[7], '\0'); /* terminated for convenience */
    /* Growth well past the first buffer keeps every byte in order. */
    char chunk[1000];
    for (int i = 0; i < 100; i++) {
        memset(chunk, 'a' + i % 26, sizeof chunk);
        assert_int_equal(llmc_flight_data(f, chunk, sizeof chunk), 0);
    }
    assert_int_equal(f->body_len, 7 + 100 * 1000);
    assert_true(f->body_cap > f->body_len);
    for (int i = 0; i < 100; i++)
        assert_int_equal(f->body[7 + i * 1000 + 999], 'a' + i % 26);
    assert_int_equal(f->body[f->body_len], '\0');
    llmc_flight_unref(f);
}

static void test_set_assembled(void **state)
{
    (void)state;
    llmc_key_t k = key_of(14);
    llmc_flight_t *f = llmc_flight_new_private(&k, true);
    assert_null(f->assembled);
    char *a = strdup("{\"first\":1}");
    llmc_flight_set_assembled(f, a, strlen(a));
    assert_ptr_equal(f->assembled, a);
    assert_int_equal(f->assembled_len, strlen(a));
    /* A second one replaces the first, which the flight frees. */
    char *b = strdup("{\"second\":2}");
    llmc_flight_set_assembled(f, b, strlen(b));
    assert_ptr_equal(f->assembled, b);
    assert_int_equal(f->assembled_len, 12);
    llmc_flight_finish(f, 0, NULL, false, NULL);
    assert_string_equal(f->assembled, "{\"second\":2}");
    llmc_flight_unref(f); /* frees b */
}

/* Many threads missing on one key at once: one leads, the others join it. */
typedef struct {
    llmc_flight_table_t *t;
    llmc_key_t k;
    pthread_barrier_t *go;
    llmc_flight_t *got;
    bool created;
} racer_t;

static void *racer(void *arg)
{
    racer_t *r = arg;
    pthread_barrier_wait(r->go);
    r->got = llmc_flight_join(r->t, &r->k, false, &r->created);
    return NULL;
}

static void test_concurrent_join_one_leader(void **state)
{
    (void)state;
    enum { N = 8, ROUNDS = 50 };
    llmc_flight_table_t *t = llmc_flight_table_new(4);
    for (int round = 0; round < ROUNDS; round++) {
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, N);
        racer_t r[N];
        pthread_t th[N];
        for (int i = 0; i < N; i++) {
            r[i] = (racer_t){.t = t, .k = key_of((uint8_t)round), .go = &go};
            assert_int_equal(pthread_create(&th[i], NULL, racer, &r[i]), 0);
        }
        int leaders = 0;
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            leaders += r[i].created;
            assert_ptr_equal(r[i].got, r[0].got);
        }
        pthread_barrier_destroy(&go);
        assert_int_equal(leaders, 1);
        assert_int_equal(refs(r[0].got), N + 1);
        assert_int_equal(llmc_flight_table_count(t), 1);
        llmc_flight_finish(r[0].got, 0, NULL, false, NULL);
        for (int i = 0; i < N; i++)
            llmc_flight_unref(r[i].got);
    }
    assert_int_equal(llmc_flight_table_count(t), 0);
    llmc_flight_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_creates_then_joins),
        cmocka_unit_test(test_different_keys_different_flights),
        cmocka_unit_test(test_same_key_other_callers_different_flights),
        cmocka_unit_test(test_same_chain_keys),
        cmocka_unit_test(test_attach_detach),
        cmocka_unit_test(test_finish_notifies_each_once),
        cmocka_unit_test(test_attach_after_finish),
        cmocka_unit_test(test_finished_flight_leaves_table),
        cmocka_unit_test(test_unpublish),
        cmocka_unit_test(test_private_not_joinable),
        cmocka_unit_test(test_refcounts_outlive_table),
        cmocka_unit_test(test_wants_data_waiters),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_data_appends),
        cmocka_unit_test(test_set_assembled),
        cmocka_unit_test(test_concurrent_join_one_leader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
