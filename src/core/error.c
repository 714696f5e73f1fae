/* error.c: messages and names for the LLMC_E* table in llmc/error.h. */
#include "llmc/error.h"

const char *llmc_strerror(int err)
{
    switch (err) {
    case LLMC_OK: return "success";
#define X(name, val, msg) case LLMC_##name: return msg;
    LLMC_ERRNO_MAP(X)
#undef X
    }
    return "unknown error";
}

const char *llmc_errname(int err)
{
    switch (err) {
    case LLMC_OK: return "OK";
#define X(name, val, msg) case LLMC_##name: return #name;
    LLMC_ERRNO_MAP(X)
#undef X
    }
    return "EUNKNOWN";
}
