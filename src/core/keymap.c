/* core/keymap.c: the open-addressing key -> value map of llmc/keymap.h. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "llmc/keymap.h"

#define MIN_CAP 16

void llmc_keymap_init(llmc_keymap_t *m, size_t vsize, size_t max)
{
    assert(vsize >= 1 && vsize <= LLMC_KEYMAP_MAX_VALUE && max >= 1);
    *m = (llmc_keymap_t){.vsize = vsize, .stride = (vsize + 7) & ~(size_t)7, .max = max};
}

void llmc_keymap_fini(llmc_keymap_t *m)
{
    free(m->keys);
    free(m->vals);
    free(m->used);
    *m = (llmc_keymap_t){.vsize = m->vsize, .stride = m->stride, .max = m->max};
}

/* The home slot: a key is a SHA-256, so its first 8 bytes are uniform; the
   multiply still spreads keys that differ only there into the top bits
   (tests build such keys by hand). */
static size_t home(const llmc_keymap_t *m, const llmc_key_t *k)
{
    uint64_t h;
    memcpy(&h, k->b, sizeof(h));
    return (size_t)((h * 0x9e3779b97f4a7c15ull) >> m->shift);
}

static void *val_at(const llmc_keymap_t *m, size_t i)
{
    return m->vals + i * m->stride;
}

/* The slot holding k, or the free slot that ends its run. Needs a table. */
static size_t probe(const llmc_keymap_t *m, const llmc_key_t *k)
{
    size_t mask = m->cap - 1, i = home(m, k);
    while (m->used[i] && memcmp(m->keys[i].b, k->b, LLMC_KEY_LEN) != 0)
        i = (i + 1) & mask;
    return i;
}

void *llmc_keymap_find(const llmc_keymap_t *m, const llmc_key_t *key)
{
    if (!m->cap)
        return NULL;
    size_t i = probe(m, key);
    return m->used[i] ? val_at(m, i) : NULL;
}

static int grow(llmc_keymap_t *m)
{
    size_t cap = m->cap ? 2 * m->cap : MIN_CAP;
    unsigned bits = 0;
    while (((size_t)1 << bits) < cap)
        bits++;
    llmc_keymap_t n = *m;
    n.cap = cap;
    n.shift = 64 - bits;
    n.keys = malloc(cap * sizeof(*n.keys));
    n.vals = malloc(cap * n.stride);
    n.used = calloc(cap, 1);
    if (!n.keys || !n.vals || !n.used) {
        free(n.keys);
        free(n.vals);
        free(n.used);
        return LLMC_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->used[i])
            continue;
        size_t j = probe(&n, &m->keys[i]);
        n.used[j] = 1;
        n.keys[j] = m->keys[i];
        memcpy(val_at(&n, j), val_at(m, i), m->stride);
    }
    free(m->keys);
    free(m->vals);
    free(m->used);
    *m = n;
    return 0;
}

int llmc_keymap_insert(llmc_keymap_t *m, const llmc_key_t *key, void **val)
{
    if (m->cap) {
        size_t i = probe(m, key);
        if (m->used[i]) {
            *val = val_at(m, i);
            return LLMC_EEXIST;
        }
    }
    if (m->count >= m->max)
        return LLMC_EFULL;
    if ((m->count + 1) * 2 > m->cap) {
        int rc = grow(m);
        if (rc < 0)
            return rc;
    }
    size_t i = probe(m, key);
    assert(!m->used[i]);
    m->used[i] = 1;
    m->keys[i] = *key;
    memset(val_at(m, i), 0, m->stride);
    m->count++;
    *val = val_at(m, i);
    return 0;
}

bool llmc_keymap_delete(llmc_keymap_t *m, const llmc_key_t *key)
{
    if (!m->cap)
        return false;
    size_t mask = m->cap - 1, i = probe(m, key), j = i;
    if (!m->used[i])
        return false;
    /* Backward shift: a later entry of the run whose home is not cyclically
       after the hole (its distance from home reaches back to i or beyond)
       could no longer be found past the hole, so it moves into it, and the
       hole moves on to where it was. The run's first free slot ends it. */
    for (;;) {
        j = (j + 1) & mask;
        if (!m->used[j])
            break;
        size_t h = home(m, &m->keys[j]);
        if (((j - h) & mask) >= ((j - i) & mask)) {
            m->keys[i] = m->keys[j];
            memcpy(val_at(m, i), val_at(m, j), m->stride);
            i = j;
        }
    }
    m->used[i] = 0;
    m->count--;
    return true;
}

bool llmc_keymap_next(const llmc_keymap_t *m, size_t *pos, const llmc_key_t **key, void **val)
{
    for (size_t i = *pos; i < m->cap; i++)
        if (m->used[i]) {
            *pos = i + 1;
            *key = &m->keys[i];
            *val = val_at(m, i);
            return true;
        }
    *pos = m->cap;
    return false;
}
