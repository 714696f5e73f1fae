/* The semantic tier under threads: several workers look up at once (their
   searches run side by side under the tier's read lock) while another
   stores, indexes peers' questions, purges, sweeps expired answers and
   evicts. TSan is not available here, so the test checks what a client
   would see: no lookup is ever answered with another question's answer
   (a slot freed and reused under a search would do that), nothing
   crashes (run it under make SAN=1), and the index and the records agree
   at the end. The .c is included to reach the partition hash and the
   records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tier/semantic.c"

#define NOW 1000000
#define PREFILL 1200 /* past the index's 1,000: the partition is a graph, searched at once */
#define TOPICS 2000  /* questions 0..TOPICS-1 may be stored; TOPICS.. never are */
#define CAP 1400     /* fewer than TOPICS: stores evict */
#define READERS 4
#define STEPS 1500

/* Question id's text in one of four wordings (a near-duplicate of the
   others); the number tells every question apart, and the numbers guard
   refuses any two with different numbers. */
static void question(unsigned id, unsigned form, char *out, size_t cap)
{
    static const char *const who[] = {"people", "teachers", "doctors", "farmers",
                                      "children", "nurses", "bakers", "drivers"};
    static const char *const forms[] = {"How many %s lived in district %u in 1990?",
                                        "how many %s lived in district %u in 1990",
                                        "Please, how many %s lived in district %u in 1990?",
                                        "HOW MANY %s LIVED IN DISTRICT %u IN 1990"};
    snprintf(out, cap, forms[form % 4], who[id % 8], id);
}

typedef struct req {
    llmc_tier_query_t q;
    char body[300];
} req_t;

/* The request asking id in form; its key names (id, form, salt). */
static void request(req_t *r, unsigned id, unsigned form, uint32_t salt)
{
    char q[160];
    question(id, form, q, sizeof(q));
    memset(r, 0, sizeof(*r));
    snprintf(r->body, sizeof(r->body),
             "{\"messages\":[{\"content\":\"%s\",\"role\":\"user\"}],\"model\":\"m\"}", q);
    memcpy(r->q.key.b, &id, sizeof(id));
    r->q.key.b[4] = (uint8_t)form;
    memcpy(r->q.key.b + 8, &salt, sizeof(salt));
    r->q.key.b[31] = 1;
    r->q.path = "/v1/chat/completions";
    r->q.body = r->body;
    r->q.body_len = strlen(r->body);
    r->q.scope = "";
    r->q.ns = "";
    r->q.model = "m";
    r->q.similar = true;
}

static llmc_entry_t *answer_for(const req_t *r, unsigned id, int64_t now, int64_t ttl)
{
    char text[64];
    int n = snprintf(text, sizeof(text), "{\"answer\":%u}", id);
    llmc_entry_spec_t spec = {
        .key = &r->q.key, .status = 200, .created_ms = now, .expires_ms = now + ttl,
        .route = "/v1/chat/completions", .model = "m", .ns = "", .body = text,
        .body_len = (size_t)n,
    };
    llmc_entry_t *e = llmc_entry_new(&spec);
    assert_non_null(e);
    return e;
}

/* The question an answer answers (its body says), or -1. */
static long answered(const llmc_entry_t *e)
{
    unsigned id;
    char tail;
    if (sscanf((const char *)e->body, "{\"answer\":%u%c", &id, &tail) != 2 || tail != '}')
        return -1;
    return id;
}

typedef struct shared {
    llmc_tier_t *t;
    _Atomic int64_t now;
    _Atomic bool done;
} shared_t;

typedef struct reader {
    shared_t *sh;
    unsigned worker;
    uint64_t rng;
    /* results, read after join */
    unsigned lookups, hits, wrong, never_stored_hits;
} reader_t;

static unsigned draw(uint64_t *rng, unsigned n)
{
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    return (unsigned)(*rng % n);
}

static void *reader_main(void *arg)
{
    reader_t *rd = arg;
    req_t r;
    uint32_t salt = 0;
    /* a last round after the writer stops: lookups of a still tier count too */
    for (int last = 0; last < 50; last += atomic_load(&rd->sh->done)) {
        /* Mostly stored questions in another wording; some never stored. */
        bool fresh = draw(&rd->rng, 8) == 0;
        unsigned id = fresh ? TOPICS + draw(&rd->rng, 1000) : draw(&rd->rng, TOPICS);
        /* a key per (id, form) and a few salts: aliases are made and used */
        request(&r, id, 1 + draw(&rd->rng, 3), rd->worker * 16 + (salt++ % 4));
        llmc_tier_lookup_t lk = {.query = &r.q, .now_ms = atomic_load(&rd->sh->now),
                                 .worker = rd->worker};
        int rc = rd->sh->t->ops->lookup(rd->sh->t, &lk);
        rd->lookups++;
        if (rc != 0) {
            if (lk.entry)
                rd->wrong++; /* a miss holds nothing */
            continue;
        }
        rd->hits++;
        rd->never_stored_hits += fresh;
        if (!lk.entry || answered(lk.entry) != (long)id)
            rd->wrong++;
        if (lk.entry)
            llmc_entry_unref(lk.entry);
    }
    return NULL;
}

/* The writer's store of question id: a lookup that misses, then its
   answer's put, as the gateway does; or a peer's question. */
static void store(shared_t *sh, unsigned id, uint64_t *rng, bool peer)
{
    req_t r;
    int64_t now = atomic_load(&sh->now);
    int64_t ttl = draw(rng, 4) == 0 ? 5 + draw(rng, 200) : 1000000; /* some expire soon */
    request(&r, id, 0, 0);
    if (peer) {
        char *text = NULL;
        llmc_key_t part;
        assert_int_equal(split_query(&r.q, &text, &part), 0);
        llmc_semq_t q = {.key = r.q.key, .part = part, .text = text, .len = strlen(text)};
        llmc_entry_t *e = answer_for(&r, id, now, ttl);
        (void)llmc_tier_semantic_add_peer(sh->t, &q, e, now, false);
        llmc_entry_unref(e);
        free(text);
        return;
    }
    llmc_tier_lookup_t lk = {.query = &r.q, .now_ms = now, .worker = 0};
    if (sh->t->ops->lookup(sh->t, &lk) == 0) {
        assert_int_equal(answered(lk.entry), (long)id);
        llmc_entry_unref(lk.entry);
        return;
    }
    llmc_entry_t *e = answer_for(&r, id, now, ttl);
    assert_int_equal(sh->t->ops->put(sh->t, 0, e, now), 0);
    llmc_entry_unref(e);
}

static void noop(void *arg, size_t removed)
{
    (void)arg;
    (void)removed;
}

static void test_lookups_beside_stores_and_purges(void **state)
{
    (void)state;
    llmc_semantic_config_t cfg = {.max_entries = CAP};
    shared_t sh = {.t = llmc_tier_semantic_new(&cfg), .now = NOW};
    llmc_tier_t *t = sh.t;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    assert_non_null(t);
    /* Workers 0 (the writer) .. READERS-1 have their own embedders; the last
       reader says a worker never attached: it shares the tier's, under mu. */
    for (unsigned w = 0; w < READERS; w++)
        assert_int_equal(t->ops->attach(t, w, NULL), 0);
    for (unsigned id = 0; id < PREFILL; id++)
        store(&sh, id, &rng, id % 5 == 0);
    assert_true(llmc_vindex_count(impl(t)->ix) >= PREFILL * 9 / 10);

    pthread_t th[READERS];
    reader_t rd[READERS];
    for (unsigned i = 0; i < READERS; i++) {
        rd[i] = (reader_t){.sh = &sh, .worker = i + 1 < READERS ? i + 1 : 99,
                           .rng = 0x2545f4914f6cdd1dull * (i + 1)};
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
    }
    unsigned purges = 0;
    for (unsigned step = 0; step < STEPS; step++) {
        atomic_fetch_add(&sh.now, 1);
        unsigned op = draw(&rng, 20);
        if (op < 14) {
            store(&sh, draw(&rng, TOPICS), &rng, op == 0);
        } else if (op < 18) {
            /* a key purge: the record of a stored wording, or an alias */
            req_t r;
            request(&r, draw(&rng, TOPICS), 0, 0);
            llmc_purge_t sel = {.conds = LLMC_PURGE_KEY, .key = r.q.key};
            t->ops->purge(t, 0, &sel, noop, NULL);
            purges++;
        } else if (op == 18) {
            t->ops->tick(t, atomic_load(&sh.now));
        } else if (step % 100 == 19) {
            /* a purge by selector (every record looked at): the oldest ones */
            llmc_purge_t sel = {.conds = LLMC_PURGE_OLDER,
                                .created_before_ms = atomic_load(&sh.now) - 400};
            t->ops->purge(t, 0, &sel, noop, NULL);
            purges++;
        }
    }
    atomic_store(&sh.done, true);
    unsigned lookups = 0, hits = 0, wrong = 0, never = 0;
    for (unsigned i = 0; i < READERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        lookups += rd[i].lookups;
        hits += rd[i].hits;
        wrong += rd[i].wrong;
        never += rd[i].never_stored_hits;
    }
    printf("  %u lookups beside %u steps (%u purges): %u hits, %u wrong\n", lookups, STEPS,
           purges, hits, wrong);
    assert_int_equal(wrong, 0);
    assert_int_equal(never, 0);
    assert_true(hits > 0); /* the lookups did reach stored answers */
    assert_true(purges > 0);

    /* The records and the index agree. */
    sem_tier_t *s = impl(t);
    char why[200];
    if (llmc_vindex_check(s->ix, why, sizeof(why)) != 0)
        fail_msg("index: %s", why);
    assert_int_equal(llmc_vindex_count(s->ix), s->live);
    assert_int_equal(llmc_keymap_count(&s->recmap), s->live);
    assert_int_equal(s->live + s->nfree, s->cap);
    for (size_t i = 0; i < s->cap; i++)
        if (s->recs[i].e)
            assert_int_equal(do_rec_find(s, &s->recs[i].e->key), (long)i);
    for (unsigned w = 0; w < READERS; w++)
        t->ops->detach(t, w);
    t->ops->destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookups_beside_stores_and_purges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
