/*
 * fuzz_prices.c: libFuzzer driver for the --prices file parser and lookup
 * (src/gateway/prices.c).
 *
 * Input: a price file's text (the seeds in corpus/prices/ are good and bad ones).
 *
 * What it checks, beyond ASan and UBSan:
 * - parse answers 0 or LLMC_EINVAL ("line N: ..." in err, the table left
 *   NULL); never anything else for text that fits in memory;
 * - on 0 every row has a name without '*' of at most LLMC_PRICE_MODEL_MAX
 *   bytes and prices within the bound; no (name, prefix) pair twice;
 * - an exact row is found by its own name with its own prices, and a
 *   prefix row's name finds a row (exact or prefix) that matches it;
 * - llmc_price_cost never wraps below either part.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/prices.h"
#include "llmc/error.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llmc_prices_t *p = NULL;
    char err[256];
    err[0] = '\0';
    int rc = llmc_prices_parse((const char *)data, size, &p, err, sizeof err);
    CHECK(rc == 0 || rc == LLMC_EINVAL);
    if (rc < 0) {
        CHECK(p == NULL);
        CHECK(strncmp(err, "line ", 5) == 0);
        return 0;
    }
    const uint64_t max = (uint64_t)LLMC_PRICE_MAX_PER_M * 1000000;
    for (size_t i = 0; i < p->n; i++) {
        const llmc_price_t *r = &p->rows[i];
        size_t len = strlen(r->model);
        CHECK(len <= LLMC_PRICE_MODEL_MAX);
        CHECK(strchr(r->model, '*') == NULL);
        CHECK(r->in_pico <= max && r->out_pico <= max);
        for (size_t j = 0; j < i; j++)
            CHECK(p->rows[j].prefix != r->prefix || strcmp(p->rows[j].model, r->model) != 0);
        const llmc_price_t *f = llmc_prices_find(p, r->model);
        CHECK(f != NULL);
        if (!r->prefix)
            CHECK(f == r);
        else
            CHECK(strncmp(r->model, f->model, strlen(f->model)) == 0);
        uint64_t c = llmc_price_cost(r, UINT32_MAX, UINT32_MAX);
        CHECK(c >= r->in_pico && c >= r->out_pico);
    }
    llmc_prices_free(p);
    return 0;
}
