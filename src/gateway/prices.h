/*
 * gateway/prices.h: the price table --prices FILE gives, for the money a
 * cache hit saved.
 *
 * The file is text, one model a line:
 *
 *     # prices per 1M tokens; lines starting with '#' and blank lines are skipped
 *     gpt-4o-mini      0.15   0.60
 *     claude-3-5-*     3      15
 *
 * a model name, its input (prompt) price and its output (completion)
 * price, each per million tokens, in whatever currency the operator
 * counts in, with at most six decimals. A name ending in '*' is a prefix:
 * it prices every model that starts with the part before it
 * ("gpt-4o-2024-08-06" by "gpt-4o-*"); an exact name wins over a prefix,
 * and a longer prefix over a shorter one. A model the file does not
 * price saves tokens and no money.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Prices are kept as integers: micro-units per million tokens, which is
 *   pico-units per token, so tokens x price is exact integer arithmetic and
 *   a sum of many hits never drifts. The decimals are read as digits, not
 *   through a double.
 * - A table is built in (src/gateway/prices.default, compiled in by
 *   tools/embed.sh) and used when --prices is not given. Prices change, so
 *   the file carries its date ("# prices as of YYYY-MM-DD"), which the
 *   parser keeps (as_of) and /stats shows beside the table's source: a
 *   stale table is visible, not silent.
 */
#ifndef LLMC_GW_PRICES_H
#define LLMC_GW_PRICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest price accepted, per million tokens. */
#define LLMC_PRICE_MAX_PER_M 1000000

/* The longest model name (or prefix) a line may have. */
#define LLMC_PRICE_MODEL_MAX 200

typedef struct llmc_price {
    char *model;          /* the name, without a trailing '*' */
    bool prefix;          /* the line's name ended in '*' */
    uint64_t in_pico;     /* per prompt token, 1e-12 units (= micro-units per 1M) */
    uint64_t out_pico;    /* per completion token */
} llmc_price_t;

typedef struct llmc_prices {
    llmc_price_t *rows;
    size_t n;
    char as_of[11];       /* "YYYY-MM-DD" from a "# prices as of" line; "" when none */
    char *source;         /* "built-in" or the file's path; NULL from llmc_prices_parse */
} llmc_prices_t;

/* What /stats calls the compiled-in table. */
#define LLMC_PRICES_BUILTIN "built-in"


/*
 * Parses a price file's text text[0, len) into a new table (*out, freed
 * with llmc_prices_free). The first comment line "# prices as of
 * YYYY-MM-DD" (any case) sets as_of. 0; LLMC_EINVAL with "line N: why" in err for a
 * line that is not "model input output" with valid prices, or a model
 * named twice; LLMC_ENOMEM. Pure.
 */
int llmc_prices_parse(const char *text, size_t len, llmc_prices_t **out, char *err,
                      size_t errlen);

/* The built-in table (prices.default), parsed; as llmc_prices_parse,
   source LLMC_PRICES_BUILTIN. */
int llmc_prices_builtin(llmc_prices_t **out, char *err, size_t errlen);

/* Reads and parses the file at path (source: path); as llmc_prices_parse, and LLMC_EIO
   (err names the file and the reason) when it cannot be read. */
int llmc_prices_load(const char *path, llmc_prices_t **out, char *err, size_t errlen);

/* The row that prices model (exact name first, else the longest prefix),
   or NULL. p may be NULL (no table). The row lives as long as p. */
const llmc_price_t *llmc_prices_find(const llmc_prices_t *p, const char *model);

/* What tokens cost at a row's prices, in pico-units (1e-12). Saturates at
   UINT64_MAX instead of wrapping. */
uint64_t llmc_price_cost(const llmc_price_t *r, uint64_t prompt_tokens,
                         uint64_t completion_tokens);

void llmc_prices_free(llmc_prices_t *p);

#endif
