/*
 * llmc/jscan.h: what a JSON text will cost to parse, found without parsing
 * it: the number of values it holds, by one pass over its bytes that
 * allocates nothing.
 *
 * A request body's parse and canonical form cost time and memory per value
 * (jansson allocates a json_t for each), not per byte: 4 MB of "{}," is
 * 1.3 million objects. The gateway counts a body's values with this scan
 * before it parses it, and refuses one over --max-json-values, so the
 * expensive work is bounded by the option, not by what a client sends.
 */
#ifndef LLMC_JSCAN_H
#define LLMC_JSCAN_H

#include <stddef.h>

/*
 * The values in the JSON text p[0..len): each object, array, string that
 * is not an object's member name, number, true, false and null counts one.
 * Stops as soon as the count passes limit and returns limit + 1 (so the
 * cost of a refusal is bounded by where the limit is passed, not by len).
 *
 * For a text jansson parses (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES) the
 * count is exactly the number of json_t values in its tree (fuzz_jscan
 * checks it). For anything else it is some count that the parse then
 * refuses anyway: it checks no grammar. Pure; any thread.
 */
size_t llmc_json_count_values(const char *p, size_t len, size_t limit);

#endif
