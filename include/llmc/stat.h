/*
 * llmc/stat.h: how a table of counters describes itself.
 *
 * Every group of counters (the gateway's, the HTTP server's, each tier's,
 * the entry slab's) is one X-macro table: X(field, "name", KIND, "unit",
 * "help"). The table makes the struct (one uint64_t per field) and an
 * array of llmc_stat_desc_t, so that /stats and a Prometheus exporter walk
 * the same descriptions and a counter cannot be added in one place and
 * forgotten in another.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - A descriptor points into its struct by offset: one emitter serves
 *   every table, and a snapshot struct is read without knowing its type.
 * - "name" is the JSON field name clients and tests already read; a
 *   Prometheus name is derived from it (prefix + name + unit suffix).
 * - KIND says how a reader may treat the number: a COUNTER only grows
 *   (rates make sense), a GAUGE goes up and down (entries, bytes held).
 */
#ifndef LLMC_STAT_H
#define LLMC_STAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum llmc_stat_kind { LLMC_STAT_COUNTER, LLMC_STAT_GAUGE } llmc_stat_kind_t;

typedef struct llmc_stat_desc {
    const char *name;        /* JSON field name */
    llmc_stat_kind_t kind;
    const char *unit;        /* "requests", "bytes", "entries", "connections", ... */
    const char *help;        /* one line */
    size_t offset;           /* of a 64-bit unsigned field in the described struct */
} llmc_stat_desc_t;

/* Makes a struct field from a table row. Every field is a uint64_t, so a
   table's length is sizeof(struct) / sizeof(uint64_t). */
#define LLMC_STAT_FIELD(field, name, kind, unit, help) uint64_t field;
/* Makes a descriptor from a table row; TYPE must be #defined to the struct. */
#define LLMC_STAT_DESC(field, name, kind, unit, help) \
    {name, LLMC_STAT_##kind, unit, help, offsetof(LLMC_STAT_TYPE, field)},

/* The value a descriptor names in a struct it describes. */
static inline uint64_t llmc_stat_value(const void *base, const llmc_stat_desc_t *d)
{
    uint64_t v;
    memcpy(&v, (const char *)base + d->offset, sizeof(v));
    return v;
}

#endif
