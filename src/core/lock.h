/*
 * core/lock.h: asserting that a lock is held.
 *
 * memcached's do_x() convention (x() takes the lock, do_x() runs with it
 * held) is a promise in a name; LLMC_ASSERT_LOCKED makes it checked in
 * debug and sanitizer builds. A default pthread mutex cannot say who holds
 * it, so the check is that someone does: it catches the common mistake, a
 * do_ function called with no lock at all. Compiled out with NDEBUG (the
 * benchmark build).
 */
#ifndef LLMC_CORE_LOCK_H
#define LLMC_CORE_LOCK_H

#include <assert.h>
#include <errno.h>
#include <pthread.h>

#ifdef NDEBUG
#define LLMC_ASSERT_LOCKED(mu) ((void)0)
#else
/* trylock on a free mutex takes it, and the assertion then fails anyway. */
#define LLMC_ASSERT_LOCKED(mu) assert(pthread_mutex_trylock(mu) == EBUSY)
#endif

#endif
