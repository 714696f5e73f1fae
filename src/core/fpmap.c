/* core/fpmap.c: the direct-mapped fingerprint -> key table of llmc/fpmap.h. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/fpmap.h"

#define SLOTS_PER_LOCK 64

typedef struct slot {
    llmc_key_t fp;
    llmc_key_t key;
    uint32_t flags;
    bool used;
} slot_t;

struct llmc_fpmap {
    size_t mask;
    slot_t *slots;
    pthread_mutex_t *locks;
};

llmc_fpmap_t *llmc_fpmap_new(size_t slots)
{
    size_t n = SLOTS_PER_LOCK;
    while (n < slots)
        n *= 2;
    llmc_fpmap_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->mask = n - 1;
    m->slots = calloc(n, sizeof(slot_t));
    m->locks = calloc(n / SLOTS_PER_LOCK, sizeof(pthread_mutex_t));
    if (!m->slots || !m->locks) {
        free(m->slots);
        free(m->locks);
        free(m);
        return NULL;
    }
    for (size_t i = 0; i < n / SLOTS_PER_LOCK; i++)
        pthread_mutex_init(&m->locks[i], NULL);
    return m;
}

void llmc_fpmap_free(llmc_fpmap_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i <= m->mask / SLOTS_PER_LOCK; i++)
        pthread_mutex_destroy(&m->locks[i]);
    free(m->slots);
    free(m->locks);
    free(m);
}

static size_t slot_of(const llmc_fpmap_t *m, const llmc_key_t *fp)
{
    uint64_t h;
    memcpy(&h, fp->b, sizeof(h)); /* SHA-256 output: any 8 bytes are uniform */
    return (size_t)h & m->mask;
}

bool llmc_fpmap_get(llmc_fpmap_t *m, const llmc_key_t *fp, llmc_key_t *key, uint32_t *flags)
{
    size_t i = slot_of(m, fp);
    pthread_mutex_t *l = &m->locks[i / SLOTS_PER_LOCK];
    pthread_mutex_lock(l);
    const slot_t *s = &m->slots[i];
    bool hit = s->used && memcmp(s->fp.b, fp->b, LLMC_KEY_LEN) == 0;
    if (hit) {
        *key = s->key;
        *flags = s->flags;
    }
    pthread_mutex_unlock(l);
    return hit;
}

void llmc_fpmap_put(llmc_fpmap_t *m, const llmc_key_t *fp, const llmc_key_t *key, uint32_t flags)
{
    size_t i = slot_of(m, fp);
    pthread_mutex_t *l = &m->locks[i / SLOTS_PER_LOCK];
    pthread_mutex_lock(l);
    slot_t *s = &m->slots[i];
    s->fp = *fp;
    s->key = *key;
    s->flags = flags;
    s->used = true;
    pthread_mutex_unlock(l);
}
