/* gateway/stats.c: summing and exporting the counter table of stats.h. */
#include <string.h>

#include "gateway/stats.h"

void llmc_counters_add(llmc_counters_t *dst, const llmc_counters_t *src)
{
#define X(f, name, desc)                                                           \
    atomic_store_explicit(&dst->f,                                                 \
        atomic_load_explicit(&dst->f, memory_order_relaxed) +                      \
        atomic_load_explicit(&src->f, memory_order_relaxed),                       \
        memory_order_relaxed);
    LLMC_COUNTER_TABLE(X)
#undef X
}

void llmc_counters_to_json(const llmc_counters_t *c, json_t *obj)
{
    json_t *errs = json_object();
#define X(f, name, desc)                                                           \
    json_object_set_new(strncmp(#f, "upstream_err_", 13) == 0 ? errs : obj, name,  \
        json_integer((json_int_t)atomic_load_explicit(&c->f, memory_order_relaxed)));
    LLMC_COUNTER_TABLE(X)
#undef X
    json_object_set_new(obj, "upstream_errors", errs);
}
