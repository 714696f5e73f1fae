/* fuzz/fuzz_check.h: the property check every driver uses. Unlike assert it
   never compiles out, and it names the file, line and condition before
   aborting, which libFuzzer reports as a crash with the input saved. */
#ifndef LLMC_FUZZ_CHECK_H
#define LLMC_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

#endif
