/*
 * fuzz_config.c: libFuzzer driver for the configuration parser (src/config.c):
 * llmc_config_set on fuzzed "name=value" lines, and llmc_config_load with a
 * fuzzed config file, environment and argument list.
 *
 * Input: one mode byte, then text.
 * - mode even: every line of the text is "name=value" (or "name" alone,
 *   value ""), applied with llmc_config_set to a configuration that starts
 *   from the defaults;
 * - mode odd: the text is split at NUL bytes into up to three parts: the
 *   config file (written to a memfd, read through /proc/self/fd/N), the
 *   environment (one "NAME=value" per line), and the argument list (one
 *   argument per line, after "llmcached"). The fuzzer's own --config flags
 *   are dropped and "--config FILE" is added.
 *
 * What it checks, beyond ASan, UBSan and LeakSanitizer:
 * - every answer is 0 or LLMC_EINVAL/LLMC_ENOMEM, and an error comes with a
 *   NUL-terminated message;
 * - after any sequence of sets, successful or not, every INT, SIZE and SECS
 *   field is within the table's min..max, every ENUM field is the value of
 *   one of the table's words, every STR field is a string, and a
 *   WORD_OR_STR is a word's value with no text, or its text value with the
 *   text (so a failed set never leaves a half-written value);
 * - a SIZE or SECS value that was accepted prints back ("%lld" bytes or
 *   "%lldms") to text that parses to the same value;
 * - llmc_config_diff names at most the option a set changed, and nothing
 *   between a config and itself or one that took the same sets;
 * - llmc_config_free leaves nothing behind (LeakSanitizer).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "llmc/error.h"

#include "fuzz_check.h"

/* The number of words in an ENUM's or WORD_OR_STR's list, and a
   WORD_OR_STR's text field and text value. */
#define NONE(...)
#define PLUS_ONE(id, word) +1
#define NWORDS(words) (0 words(PLUS_ONE, NONE))
#define T_FIELD(id, field) field
#define T_VALUE(id, field) id

#define CK_STR(f, min, max, words)  CHECK(cfg->f != NULL);
#define CK_ENUM(f, min, max, words) CHECK((int)cfg->f >= 0 && (int)cfg->f < NWORDS(words));
/* A word's value, or the text value with the text kept (never a mix). */
#define CK_WORD_OR_STR(f, min, max, words)                                       \
    CHECK((cfg->words(NONE, T_FIELD) != NULL)                                    \
              ? (int)cfg->f == words(NONE, T_VALUE)                              \
              : (int)cfg->f >= 0 && (int)cfg->f < NWORDS(words));
#define CK_INT(f, min, max, words)  CHECK(cfg->f >= (int64_t)(min) && cfg->f <= (int64_t)(max));
#define CK_SIZE(f, min, max, words) CK_INT(f, min, max, words)
#define CK_SECS(f, min, max, words) CK_INT(f, min, max, words)
#define CK_RATIO(f, min, max, words) CK_INT(f, min, max, words) /* thousandths */
#define CK_BOOL(f, min, max, words)
#define CK_LIST(f, min, max, words) CHECK(cfg->f != NULL);

static void check_ranges(const llmc_config_t *cfg)
{
#define X(f, name, type, def, min, max, words, desc) CK_##type(f, min, max, words)
    LLMC_CONFIG_TABLE(X)
#undef X
}

/* The type of an option by name, or -1. */
static int type_of(const char *name)
{
#define X(f, n, type, def, min, max, words, desc) \
    if (strcmp(name, n) == 0)                     \
        return LLMC_OPT_##type;
    LLMC_CONFIG_TABLE(X)
#undef X
    return -1;
}

/* The int64 field of an option by name, or NULL. */
static const int64_t *num_field(const llmc_config_t *cfg, const char *name)
{
#define NF_STR(f) NULL
#define NF_ENUM(f) NULL
#define NF_WORD_OR_STR(f) NULL
#define NF_BOOL(f) NULL
#define NF_INT(f) &cfg->f
#define NF_SIZE(f) &cfg->f
#define NF_SECS(f) &cfg->f
#define NF_RATIO(f) &cfg->f
#define NF_LIST(f) NULL
#define X(f, n, type, def, min, max, words, desc) \
    if (strcmp(name, n) == 0)                     \
        return NF_##type(f);
    LLMC_CONFIG_TABLE(X)
#undef X
    return NULL;
}

static void check_err(int rc, const char *err, size_t errlen)
{
    if (rc == 0)
        return;
    CHECK(rc == LLMC_EINVAL || rc == LLMC_ENOMEM);
    CHECK(memchr(err, '\0', errlen) != NULL && err[0] != '\0');
}

/* After name was set to value successfully: the number prints back. */
static void check_roundtrip(llmc_config_t *cfg, const char *name)
{
    int t = type_of(name);
    const int64_t *slot = num_field(cfg, name);
    char text[64], err[512];
    if (!slot || (t != LLMC_OPT_SIZE && t != LLMC_OPT_SECS))
        return;
    int64_t v = *slot;
    snprintf(text, sizeof text, t == LLMC_OPT_SIZE ? "%lld" : "%lldms", (long long)v);
    int rc = llmc_config_set(cfg, name, text, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "%s=%s refused: %s\n", name, text, err);
    CHECK(rc == 0);
    CHECK(*slot == v);
}

/* llmc_config_diff's report: each name it gives must be the one expected
   (NULL: none may be given). */
static const char *diff_expect;

static void diff_changed(const char *name, void *arg)
{
    (void)arg;
    CHECK(diff_expect != NULL && strcmp(name, diff_expect) == 0);
}

static void run_lines(char *text)
{
    llmc_config_t cfg, prev;
    char err[512];
    char *argv[] = {"llmcached", NULL};

    int rc = llmc_config_load(&cfg, 1, argv, NULL, NULL, NULL, err, sizeof err);
    CHECK(rc == 0);
    CHECK(llmc_config_load(&prev, 1, argv, NULL, NULL, NULL, err, sizeof err) == 0);
    check_ranges(&cfg);
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        const char *value = "";
        if (eq) {
            *eq = '\0';
            value = eq + 1;
        }
        err[0] = '\0';
        rc = llmc_config_set(&cfg, line, value, err, sizeof err);
        check_err(rc, err, sizeof err);
        check_ranges(&cfg);
        if (rc == 0)
            check_roundtrip(&cfg, line);
        /* One set changes at most its own option, and a config never
           differs from itself; then prev takes the same step. */
        diff_expect = rc == 0 ? line : NULL;
        llmc_config_diff(&prev, &cfg, diff_changed, NULL);
        diff_expect = NULL;
        llmc_config_diff(&cfg, &cfg, diff_changed, NULL);
        if (rc == 0)
            CHECK(llmc_config_set(&prev, line, value, err, sizeof err) == 0);
        llmc_config_diff(&prev, &cfg, diff_changed, NULL);
    }
    llmc_config_free(&prev);
    llmc_config_free(&cfg);
}

static int memfd = -1;

/* Splits s at '\n' into a NULL-terminated vector (pointers into s), after
   `first` when it is not NULL. At most max entries. */
static size_t split_lines(char *s, char **v, size_t max, const char *first)
{
    size_t n = 0;
    if (first)
        v[n++] = (char *)first;
    for (char *p = s; p && n < max - 1;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl++ = '\0';
        if (*p || !first) /* an empty line is an empty argument only in argv */
            v[n++] = p;
        p = nl;
    }
    v[n] = NULL;
    return n;
}

static void run_load(const char *data, size_t size)
{
    const char *parts[3] = {"", "", ""};
    size_t lens[3] = {0, 0, 0};
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= size && k < 3; i++) {
        if (i == size || data[i] == '\0') {
            parts[k] = data + start;
            lens[k] = i - start;
            k++;
            start = i + 1;
        }
    }
    /* The file, bytes as they are (NULs could not reach here: they split). */
    if (memfd < 0) {
        memfd = memfd_create("fuzz-config", 0);
        CHECK(memfd >= 0);
    }
    CHECK(ftruncate(memfd, 0) == 0);
    if (lens[0])
        CHECK(pwrite(memfd, parts[0], lens[0], 0) == (ssize_t)lens[0]);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);

    char *env = strndup(parts[1], lens[1]), *args = strndup(parts[2], lens[2]);
    CHECK(env && args);
    char *envp[65], *argv[68];
    split_lines(env, envp, 65, NULL);
    size_t argc = split_lines(args, argv, 65, "llmcached");
    if (lens[2] == 0)
        argc = 1;
    /* The fuzzer never names the file: a path like /dev/zero would only
       test getline's patience. Its --config flags are dropped, ours added. */
    size_t kept = 1;
    for (size_t i = 1; i < argc; i++)
        if (strncmp(argv[i], "--config", 8) != 0)
            argv[kept++] = argv[i];
    argc = kept;
    argv[argc++] = "--config";
    argv[argc++] = path;
    argv[argc] = NULL;

    llmc_config_t cfg;
    char err[512] = "";
    bool help = false, help_md = false;
    int rc = llmc_config_load(&cfg, (int)argc, argv, envp, &help, &help_md, err, sizeof err);
    check_err(rc, err, sizeof err);
    if (rc == 0)
        check_ranges(&cfg);
    llmc_config_free(&cfg);
    free(env);
    free(args);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        run_load((const char *)data + 1, size - 1);
    } else {
        char *text = malloc(size);
        CHECK(text);
        memcpy(text, data + 1, size - 1);
        text[size - 1] = '\0'; /* a NUL in the input ends the text early: fine */
        run_lines(text);
        free(text);
    }
    return 0;
}
