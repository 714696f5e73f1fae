/*
 * fuzz_redis_url.c: libFuzzer driver for the --redis URL parser and its
 * redaction (src/tier/redis_url.c).
 *
 * Input: a URL (the seeds in corpus/redis_url/ are good and bad ones).
 *
 * What it checks, beyond ASan and UBSan:
 * - parse answers 0 or LLMC_EINVAL; on 0 the host is set, the port within
 *   1..65535 and the database not negative, every seed likewise (a
 *   Cluster's, database 0); on LLMC_EINVAL the struct is
 *   zeroed (no password left in it) and the message is "--redis ", the
 *   redacted URL, ": " and a short reason of the parser's own;
 * - redaction is the input with exactly that span replaced by "***", and
 *   never overruns or leaves its buffer unterminated, however small.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "tier/redis.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';

    llmc_redis_url_t u;
    char err[512];
    err[0] = '\0';
    int rc = llmc_redis_url_parse(url, &u, err, sizeof err);
    CHECK(rc == 0 || rc == LLMC_EINVAL);
    const char *scheme = strstr(url, "://");
    const char *start = scheme ? scheme + 3 : url;
    const char *at = strrchr(start, '@');
    if (rc == 0) {
        CHECK(u.host[0] != '\0');
        CHECK(u.port >= 1 && u.port <= 65535);
        CHECK(u.db >= 0);
        CHECK(u.nseeds >= 1 && u.nseeds <= LLMC_REDIS_SEEDS_MAX);
        CHECK(u.cluster == (u.nseeds > 1) && (!u.cluster || u.db == 0));
        CHECK(strcmp(u.host, u.seeds[0].host) == 0 && u.port == u.seeds[0].port);
        for (unsigned i = 0; i < u.nseeds; i++)
            CHECK(u.seeds[i].host[0] != '\0' && u.seeds[i].port >= 1 && u.seeds[i].port <= 65535);
    } else {
        /* The message is "--redis " + the redacted URL + ": " + a reason of
           our own: nothing else of the input. */
        static const llmc_redis_url_t zero;
        char shown[400];
        llmc_redis_url_redact(url, shown, sizeof shown);
        size_t n = strlen(shown);
        CHECK(memcmp(&u, &zero, sizeof u) == 0);
        CHECK(strncmp(err, "--redis ", 8) == 0);
        CHECK(strncmp(err + 8, shown, n) == 0);
        CHECK(strncmp(err + 8 + n, ": ", 2) == 0);
        CHECK(strlen(err + 8 + n) < 200 || strlen(err) == sizeof err - 1);
    }

    char out[600];
    llmc_redis_url_redact(url, out, sizeof out);
    if (at && strlen(url) + 4 < sizeof out) {
        size_t pre = (size_t)(start - url);
        CHECK(strncmp(out, url, pre) == 0);
        CHECK(strncmp(out + pre, "***", 3) == 0);
        CHECK(strcmp(out + pre + 3, at) == 0);
    } else if (!at && strlen(url) < sizeof out) {
        CHECK(strcmp(out, url) == 0);
    }
    for (size_t n = 1; n < 12; n++) {
        char small[12];
        memset(small, 'x', sizeof small);
        llmc_redis_url_redact(url, small, n);
        CHECK(memchr(small, '\0', n) != NULL);
        CHECK(small[n] == 'x' || n == sizeof small);
    }
    free(url);
    return 0;
}
