/*
 * llmc/error.h: the error codes every llmcached module returns.
 *
 * Functions return int: 0 on success, a negative LLMC_E* code otherwise.
 * errno, CURLcode, MDB_* and hiredis errors are translated at the module
 * edge, so callers above that edge only ever see these codes. The table is
 * an X-macro so that the enum and the messages cannot drift apart.
 */
#ifndef LLMC_ERROR_H
#define LLMC_ERROR_H

/*     name        value  message */
#define LLMC_ERRNO_MAP(X)                                                  \
    X(ENOMEM,      -1,  "out of memory")                                   \
    X(EINVAL,      -2,  "invalid argument")                                \
    X(ENOENT,      -3,  "not found")                                       \
    X(EEXIST,      -4,  "already exists")                                  \
    X(E2BIG,       -5,  "too large")                                       \
    X(EJSON,       -6,  "invalid JSON")                                    \
    X(EAGAIN,      -7,  "try again later")                                 \
    X(EIO,         -8,  "input/output error")                              \
    X(ECORRUPT,    -9,  "corrupt record")                                  \
    X(ETIMEDOUT,   -10, "upstream timed out")                              \
    X(ECONNECT,    -11, "could not connect to upstream")                   \
    X(EUPSTREAM,   -12, "upstream failed")                                 \
    X(EBADRESP,    -13, "upstream sent an invalid response")               \
    X(ECANCELED,   -14, "canceled")                                        \
    X(EFULL,       -15, "full")                                            \
    X(ELOCKED,     -16, "in use by another process")                       \
    X(EVERSION,    -17, "unsupported format version")                      \
    X(ENOTSUP,     -18, "not supported")

enum {
    LLMC_OK = 0,
#define LLMC_ERR_ENUM(name, val, msg) LLMC_##name = (val),
    LLMC_ERRNO_MAP(LLMC_ERR_ENUM)
#undef LLMC_ERR_ENUM
};

/* Returns a static, human-readable message for an LLMC_E* code (or 0). */
const char *llmc_strerror(int err);

/* Returns the short name of an LLMC_E* code ("ETIMEDOUT"), static. */
const char *llmc_errname(int err);

#endif
