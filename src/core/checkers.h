/*
 * core/checkers.h: whether the code runs under a memory checker.
 *
 * AddressSanitizer and Valgrind see malloc blocks, not blocks carved from
 * our own pages or kept on spare lists, so code that recycles memory turns
 * that off under them and a use after free is still caught.
 */
#ifndef LLMC_CORE_CHECKERS_H
#define LLMC_CORE_CHECKERS_H

/* LLMC_UNDER_ASAN: 1 when built with AddressSanitizer (gcc's or clang's
   spelling), else 0. Known at compile time. */
#if defined(__SANITIZE_ADDRESS__)
#define LLMC_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LLMC_UNDER_ASAN 1
#endif
#endif
#ifndef LLMC_UNDER_ASAN
#define LLMC_UNDER_ASAN 0
#endif

/* LLMC_UNDER_VALGRIND(): true when running under Valgrind (a run-time
   check; valgrind.h only defines macros, nothing to link). */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define LLMC_UNDER_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#endif
#endif
#ifndef LLMC_UNDER_VALGRIND
#define LLMC_UNDER_VALGRIND() 0
#endif

#endif
