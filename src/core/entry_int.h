/*
 * entry_int.h: what the memory cache needs from entry.c beyond llmc/entry.h.
 *
 * The cache drops its reference on an evicted entry while it holds a shard
 * lock, but frees the block only after unlocking, so that free() (which may
 * munmap a large body) never runs inside the lock. That needs a way to free
 * an entry whose count has already reached zero.
 */
#ifndef LLMC_ENTRY_INT_H
#define LLMC_ENTRY_INT_H

#include "llmc/entry.h"

/* Frees e, whose refcnt has reached zero; the caller had the last reference. */
void llmc__entry_free(llmc_entry_t *e);

#endif
