/*
 * test_config.c: the option table, its parser, --help and docs/CONFIG.md
 * (src/config.c).
 *
 * config.c is included so that the BOOL parser can be reached: the table
 * has no BOOL option today, but the type is part of the contract.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.c"

#define MiB (1LL << 20)

/* Loads argv (argv[0] is the program name) and env, both NULL-terminated. */
static int load(llmc_config_t *cfg, const char *const *argv, const char *const *env,
                char *err, size_t errlen)
{
    int argc = 0;
    bool help = false, help_md = false;
    while (argv[argc])
        argc++;
    return llmc_config_load(cfg, argc, (char **)argv, (char **)env, &help, &help_md, err, errlen);
}

/* Asserts that loading argv fails with a message containing want. */
static void expect_error(const char *const *argv, const char *const *env, const char *want)
{
    llmc_config_t cfg;
    char err[512] = "";
    assert_int_equal(load(&cfg, argv, env, err, sizeof err), LLMC_EINVAL);
    if (!strstr(err, want))
        fail_msg("error is \"%s\", want \"%s\" in it", err, want);
    llmc_config_free(&cfg);
}

/* Writes text to a new temporary file; the caller unlinks and frees the path. */
static char *temp_file(const char *text)
{
    char *path = strdup("/tmp/llmc-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_defaults(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[256] = "";
    const char *argv[] = {"llmcached", NULL};
    assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), 0);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_int_equal(cfg.threads, 0);
    assert_int_equal(cfg.upstream, LLMC_CFG_UPSTREAM_URL);
    assert_string_equal(cfg.upstream_url, "https://api.openai.com/v1");
    assert_int_equal(cfg.ttl, 300000);
    assert_int_equal(cfg.connect_timeout, 10000);
    assert_int_equal(cfg.max_memory, 256 * MiB);
    assert_int_equal(cfg.max_header_bytes, 16384);
    assert_int_equal(cfg.cache_scope, LLMC_CFG_CACHE_SCOPE_AUTO);
    assert_int_equal(cfg.disk_sync, LLMC_CFG_DISK_SYNC_PERIODIC);
    assert_int_equal(cfg.disk_sync_interval, 1000);
    assert_int_equal(cfg.access_log, LLMC_CFG_ACCESS_LOG_STDOUT);
    assert_null(cfg.access_log_path);
    assert_int_equal(cfg.data_dir, LLMC_CFG_DATA_DIR_NONE);
    assert_null(cfg.data_dir_path);
    assert_null(cfg.config_file);
    llmc_config_free(&cfg);
}

static void test_flags_both_forms(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[256] = "";
    const char *argv[] = {"llmcached", "--ttl", "60", "--max-memory=1G", "--listen", "0.0.0.0:9000",
                          "--cache-scope=per-key", "--access-log", "-", "--threads=4", NULL};
    assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), 0);
    assert_int_equal(cfg.ttl, 60000);
    assert_int_equal(cfg.max_memory, 1024 * MiB);
    assert_string_equal(cfg.listen, "0.0.0.0:9000");
    assert_int_equal(cfg.cache_scope, LLMC_CFG_CACHE_SCOPE_PER_KEY);
    assert_int_equal(cfg.access_log, LLMC_CFG_ACCESS_LOG_STDOUT);
    assert_int_equal(cfg.threads, 4);
    llmc_config_free(&cfg);

    /* The last of a repeated flag wins; '=' may be followed by an '='. */
    const char *argv2[] = {"x", "--threads", "1", "--threads", "2", "--ask-model=a=b", NULL};
    assert_int_equal(load(&cfg, argv2, NULL, err, sizeof err), 0);
    assert_int_equal(cfg.threads, 2);
    assert_string_equal(cfg.ask_model, "a=b");
    llmc_config_free(&cfg);
}

static void test_precedence(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[512] = "";
    char *path = temp_file("ttl = 10\nthreads = 2\nlisten = 127.0.0.1:1\n");
    char cfgarg[256];
    snprintf(cfgarg, sizeof cfgarg, "--config=%s", path);
    const char *env[] = {"LLMC_TTL=20", "LLMC_THREADS=3", NULL};
    /* --ttl comes before --config on the line and still wins. */
    const char *argv[] = {"llmcached", "--ttl", "30", cfgarg, NULL};

    assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
    assert_int_equal(cfg.ttl, 30000);          /* flag over env over file */
    assert_int_equal(cfg.threads, 3);          /* env over file */
    assert_string_equal(cfg.listen, "127.0.0.1:1"); /* file over default */
    assert_string_equal(cfg.config_file, path);
    llmc_config_free(&cfg);
    unlink(path);
    free(path);
}

static void test_env(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[512] = "";
    const char *argv[] = {"llmcached", NULL};
    const char *env[] = {"PATH=/bin", "LLMC_MAX_MEMORY=1M", "LLMC_UPSTREAM_KEY=sk-secret",
                         "LLMC_NOT_AN_OPTION=1", "LLMC_TTL=", "LLMC_CACHE_SCOPE=shared",
                         "llmc_threads=9", "LLMC_ASK_MODEL=m1", NULL};
    assert_int_equal(load(&cfg, argv, env, err, sizeof err), 0);
    assert_int_equal(cfg.max_memory, MiB);
    assert_int_equal(cfg.cache_scope, LLMC_CFG_CACHE_SCOPE_SHARED);
    assert_string_equal(cfg.ask_model, "m1");
    assert_int_equal(cfg.ttl, 300000);   /* empty means unset */
    assert_int_equal(cfg.threads, 0);    /* names are upper case */
    llmc_config_free(&cfg);

    const char *bad[] = {"LLMC_MAX_MEMORY=lots", NULL};
    expect_error(argv, bad, "LLMC_MAX_MEMORY: --max-memory: 'lots' is not a size");
}

static void test_size(void **state)
{
    (void)state;
    static const struct { const char *s; int64_t v; } ok[] = {
        {"0", 0}, {"512", 512}, {"1b", 1}, {"1K", 1024}, {"1k", 1024}, {"1KB", 1024},
        {"1kib", 1024}, {"1 K", 1024}, {"1.5M", 3 * MiB / 2}, {"2G", 2048 * MiB},
        {"1T", 1024 * 1024 * MiB}, {"64MiB", 64 * MiB}, {"8388607T", 8388607LL << 40},
    };
    static const char *bad[] = {
        "", "-1", "-1K", "+1", "K", "1X", "1.2.3", "abc", "0x10", "1e3", " 1", "1K ", "1KK",
        "8388608T", "99999999999999999999", "1kibibyte",
    };
    int64_t v;
    for (size_t i = 0; i < countof(ok); i++) {
        if (llmc_config_parse_size(ok[i].s, &v) != 0)
            fail_msg("'%s' rejected", ok[i].s);
        assert_int_equal(v, ok[i].v);
    }
    for (size_t i = 0; i < countof(bad); i++)
        if (llmc_config_parse_size(bad[i], &v) != LLMC_EINVAL)
            fail_msg("'%s' accepted as %lld", bad[i], (long long)v);
}

static void test_secs(void **state)
{
    (void)state;
    static const struct { const char *s; int64_t ms; } ok[] = {
        {"10", 10000}, {"1.5", 1500}, {"0.001", 1}, {".25", 250}, {"250ms", 250},
        {"2s", 2000}, {"2m", 120000}, {"1h", 3600000}, {"1d", 86400000}, {"1H", 3600000},
        {"3MS", 3}, {"0", 0},
    };
    static const char *bad[] = {"", "-1", "1x", "s", "1 minute", "1e3", ".", "99999999999999999d"};
    int64_t v;
    for (size_t i = 0; i < countof(ok); i++) {
        if (llmc_config_parse_secs(ok[i].s, &v) != 0)
            fail_msg("'%s' rejected", ok[i].s);
        assert_int_equal(v, ok[i].ms);
    }
    for (size_t i = 0; i < countof(bad); i++)
        if (llmc_config_parse_secs(bad[i], &v) != LLMC_EINVAL)
            fail_msg("'%s' accepted as %lld", bad[i], (long long)v);
}

static void test_bad_values_name_the_option(void **state)
{
    (void)state;
    const char *a1[] = {"x", "--max-memory", "10", NULL};
    expect_error(a1, NULL, "--max-memory: 10 is below the minimum 64K");
    const char *a2[] = {"x", "--threads=300", NULL};
    expect_error(a2, NULL, "--threads: 300 is above the maximum 256");
    const char *a3[] = {"x", "--ttl", "0.5", NULL};
    expect_error(a3, NULL, "--ttl: 0.5 is below the minimum 1s");
    const char *a4[] = {"x", "--ttl", "400d", NULL};
    expect_error(a4, NULL, "--ttl: 400d is above the maximum 365d");
    const char *a5[] = {"x", "--threads", "abc", NULL};
    expect_error(a5, NULL, "--threads: 'abc' is not an integer");
    const char *a6[] = {"x", "--threads", "1.5", NULL};
    expect_error(a6, NULL, "--threads: '1.5' is not an integer");
    const char *a7[] = {"x", "--ttl", "soon", NULL};
    expect_error(a7, NULL, "--ttl: 'soon' is not a duration");
    const char *a8[] = {"x", "--max-body-bytes", "-5M", NULL};
    expect_error(a8, NULL, "--max-body-bytes: '-5M' is not a size");
    const char *a9[] = {"x", "--cache-scope", "per", NULL};
    expect_error(a9, NULL, "--cache-scope: 'per' is not one of auto|shared|per-key");
    const char *a10[] = {"x", "--disk-max", "99999999999999T", NULL};
    expect_error(a10, NULL, "--disk-max: '99999999999999T' is too large");
}

static void test_enum_case(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[256] = "";
    const char *argv[] = {"x", "--disk-sync", "FULL", "--cache-scope=Per-Key", NULL};
    assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), 0);
    assert_int_equal(cfg.disk_sync, LLMC_CFG_DISK_SYNC_FULL);
    assert_int_equal(cfg.cache_scope, LLMC_CFG_CACHE_SCOPE_PER_KEY);
    llmc_config_free(&cfg);
}

/* Every word of every ENUM is parsed to the enumerator config.h declares
   for it (its position in the list). */
static void test_enum_values(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[256] = "";
    const char *argv[] = {"x", NULL};
    assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), 0);
#define W(id, word)                                                                       \
    assert_int_equal(llmc_config_set(&cfg, "cache-scope", word, err, sizeof err), 0);     \
    assert_int_equal(cfg.cache_scope, id);
    LLMC_CFG_CACHE_SCOPE_WORDS(W, LLMC_CFG_NONE)
#undef W
#define W(id, word)                                                                       \
    assert_int_equal(llmc_config_set(&cfg, "disk-sync", word, err, sizeof err), 0);       \
    assert_int_equal(cfg.disk_sync, id);
    LLMC_CFG_DISK_SYNC_WORDS(W, LLMC_CFG_NONE)
#undef W
    assert_int_equal(cfg.cache_scope, LLMC_CFG_CACHE_SCOPE_PER_KEY);
    assert_int_equal(cfg.disk_sync, LLMC_CFG_DISK_SYNC_NONE);
    /* A rejected word leaves the value as it was. */
    assert_int_equal(llmc_config_set(&cfg, "disk-sync", "sometimes", err, sizeof err), LLMC_EINVAL);
    assert_string_equal(err, "--disk-sync: 'sometimes' is not one of full|periodic|none");
    assert_int_equal(cfg.disk_sync, LLMC_CFG_DISK_SYNC_NONE);
    llmc_config_free(&cfg);
}

/* A RATIO option: a fraction or a percentage, kept in thousandths. */
static void test_ratio(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[256] = "";
    const char *argv[] = {"x", NULL};
    assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), 0);
    assert_int_equal(cfg.semantic_threshold, 700); /* the default, "0.7" */
    static const struct { const char *s; int64_t v; } ok[] = {
        {"0.85", 850}, {"70%", 700}, {"1", 1000}, {".5", 500}, {"0.001", 1}, {"100%", 1000},
    };
    for (size_t i = 0; i < countof(ok); i++) {
        assert_int_equal(llmc_config_set(&cfg, "semantic-threshold", ok[i].s, err, sizeof err), 0);
        assert_int_equal(cfg.semantic_threshold, ok[i].v);
    }
    static const char *bad[] = {"0", "1.5", "101%", "-0.5", "abc", "0.7x", ""};
    for (size_t i = 0; i < countof(bad); i++)
        if (llmc_config_set(&cfg, "semantic-threshold", bad[i], err, sizeof err) != LLMC_EINVAL)
            fail_msg("'%s' accepted", bad[i]);
    assert_int_equal(llmc_config_set(&cfg, "semantic-threshold", "1.5", err, sizeof err),
                     LLMC_EINVAL);
    assert_string_equal(err, "--semantic-threshold: 1.5 is above the maximum 1");
    assert_int_equal(cfg.semantic_threshold, 1000); /* unchanged by the refusals */
    llmc_config_free(&cfg);
}

/* A WORD_OR_STR option: its words become their enumerators, spelled
   exactly; any other text is kept in the T field, which a word clears. */
static void test_word_or_str(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[256] = "";
    const char *argv[] = {"x", "--access-log", "off", "--data-dir=/var/cache/llmc",
                          "--upstream", "http://127.0.0.1:9/v1", NULL};
    assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), 0);
    assert_int_equal(cfg.access_log, LLMC_CFG_ACCESS_LOG_OFF);
    assert_null(cfg.access_log_path);
    assert_int_equal(cfg.data_dir, LLMC_CFG_DATA_DIR_PATH);
    assert_string_equal(cfg.data_dir_path, "/var/cache/llmc");
    assert_int_equal(cfg.upstream, LLMC_CFG_UPSTREAM_URL);
    assert_string_equal(cfg.upstream_url, "http://127.0.0.1:9/v1");

#define W(id, word)                                                                       \
    assert_int_equal(llmc_config_set(&cfg, "access-log", "/tmp/a.log", err, sizeof err), 0); \
    assert_int_equal(llmc_config_set(&cfg, "access-log", word, err, sizeof err), 0);      \
    assert_int_equal(cfg.access_log, id);                                                 \
    assert_null(cfg.access_log_path);
#define T(id, field)                                                                      \
    assert_int_equal(llmc_config_set(&cfg, "access-log", "/tmp/b.log", err, sizeof err), 0); \
    assert_int_equal(cfg.access_log, id);                                                 \
    assert_string_equal(cfg.field, "/tmp/b.log");
    LLMC_CFG_ACCESS_LOG_WORDS(W, T)
#undef T
#undef W
#define W(id, word)                                                                       \
    assert_int_equal(llmc_config_set(&cfg, "data-dir", word, err, sizeof err), 0);        \
    assert_int_equal(cfg.data_dir, id);                                                   \
    assert_null(cfg.data_dir_path);
#define T(id, field)                                                                      \
    assert_int_equal(llmc_config_set(&cfg, "data-dir", "/srv/llmc", err, sizeof err), 0); \
    assert_int_equal(cfg.data_dir, id);                                                   \
    assert_string_equal(cfg.field, "/srv/llmc");
    LLMC_CFG_DATA_DIR_WORDS(W, T)
#undef T
#undef W
#define W(id, word)                                                                       \
    assert_int_equal(llmc_config_set(&cfg, "upstream", word, err, sizeof err), 0);        \
    assert_int_equal(cfg.upstream, id);                                                   \
    assert_null(cfg.upstream_url);
#define T(id, field)                                                                      \
    assert_int_equal(llmc_config_set(&cfg, "upstream", "https://x/v1", err, sizeof err), 0); \
    assert_int_equal(cfg.upstream, id);                                                   \
    assert_string_equal(cfg.field, "https://x/v1");
    LLMC_CFG_UPSTREAM_WORDS(W, T)
#undef T
#undef W

    /* Words match only as spelled: a file may be called OFF or None. */
    assert_int_equal(llmc_config_set(&cfg, "access-log", "OFF", err, sizeof err), 0);
    assert_int_equal(cfg.access_log, LLMC_CFG_ACCESS_LOG_FILE);
    assert_string_equal(cfg.access_log_path, "OFF");
    assert_int_equal(llmc_config_set(&cfg, "data-dir", "None", err, sizeof err), 0);
    assert_int_equal(cfg.data_dir, LLMC_CFG_DATA_DIR_PATH);
    assert_string_equal(cfg.data_dir_path, "None");
    assert_int_equal(llmc_config_set(&cfg, "upstream", "MOCK", err, sizeof err), 0);
    assert_int_equal(cfg.upstream, LLMC_CFG_UPSTREAM_URL);
    assert_string_equal(cfg.upstream_url, "MOCK");
    llmc_config_free(&cfg);

    /* From the environment and a config file alike. */
    char *path = temp_file("access-log = off\ndata-dir = none\n");
    const char *argv2[] = {"x", "--config", path, NULL};
    const char *env[] = {"LLMC_UPSTREAM=mock", NULL};
    assert_int_equal(load(&cfg, argv2, env, err, sizeof err), 0);
    assert_int_equal(cfg.access_log, LLMC_CFG_ACCESS_LOG_OFF);
    assert_int_equal(cfg.data_dir, LLMC_CFG_DATA_DIR_NONE);
    assert_int_equal(cfg.upstream, LLMC_CFG_UPSTREAM_MOCK);
    llmc_config_free(&cfg);
    unlink(path);
    free(path);
}

static void test_bool(void **state)
{
    (void)state;
    static const struct { const char *s; bool v; } ok[] = {
        {"on", true}, {"off", false}, {"TRUE", true}, {"false", false},
        {"yes", true}, {"No", false}, {"1", true}, {"0", false},
    };
    bool b;
    for (size_t i = 0; i < countof(ok); i++) {
        assert_int_equal(parse_bool(ok[i].s, &b), 0);
        assert_int_equal(b, ok[i].v);
    }
    assert_int_equal(parse_bool("maybe", &b), LLMC_EINVAL);
    assert_int_equal(parse_bool("", &b), LLMC_EINVAL);
    assert_int_equal(parse_bool("2", &b), LLMC_EINVAL);

    /* A bare BOOL flag means true; a following boolean word is its value. */
    const opt_t flag = {.name = "fancy", .type = LLMC_OPT_BOOL, .def = "off", .desc = "test"};
    char *argv[] = {"x", "--fancy", "off", "--fancy", "--ttl", "1", "--fancy", NULL};
    const char *value;
    char err[128];
    int i = 1;
    assert_int_equal(flag_value(7, argv, &i, "fancy", 5, &flag, &value, err, sizeof err), 0);
    assert_string_equal(value, "off");
    assert_int_equal(i, 2);
    i = 3;
    assert_int_equal(flag_value(7, argv, &i, "fancy", 5, &flag, &value, err, sizeof err), 0);
    assert_string_equal(value, "true");
    assert_int_equal(i, 3);
    i = 6;
    assert_int_equal(flag_value(7, argv, &i, "fancy", 5, &flag, &value, err, sizeof err), 0);
    assert_string_equal(value, "true");
}

static void test_unknown_and_malformed_flags(void **state)
{
    (void)state;
    const char *a1[] = {"llmcached", "--bogus", "1", NULL};
    expect_error(a1, NULL, "--bogus: unknown option");
    const char *a2[] = {"llmcached", "--bogus=1", NULL};
    expect_error(a2, NULL, "--bogus: unknown option");
    const char *a3[] = {"llmcached", "-x", NULL};
    expect_error(a3, NULL, "-x: unknown option");
    const char *a4[] = {"llmcached", "serve", NULL};
    expect_error(a4, NULL, "unexpected argument 'serve'");
    const char *a5[] = {"llmcached", "--ttl", NULL};
    expect_error(a5, NULL, "--ttl: missing value");
    const char *a6[] = {"llmcached", "--ttl", "--threads", "2", NULL};
    expect_error(a6, NULL, "--ttl: missing value");
    const char *a7[] = {"llmcached", "--config", NULL};
    expect_error(a7, NULL, "--config: missing value");
    /* A positional argument after valid flags is still an error. */
    const char *a8[] = {"llmcached", "--threads", "2", "extra", NULL};
    expect_error(a8, NULL, "unexpected argument 'extra'");
}

static void test_help_flags(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[256] = "";
    bool help = false, help_md = false;
    char *a1[] = {"llmcached", "--help", NULL};
    assert_int_equal(llmc_config_load(&cfg, 2, a1, NULL, &help, &help_md, err, sizeof err), 0);
    assert_true(help);
    assert_false(help_md);
    llmc_config_free(&cfg);

    char *a2[] = {"llmcached", "-h", NULL};
    help = false;
    assert_int_equal(llmc_config_load(&cfg, 2, a2, NULL, &help, &help_md, err, sizeof err), 0);
    assert_true(help);
    llmc_config_free(&cfg);

    char *a3[] = {"llmcached", "--help-markdown", NULL};
    help = false;
    assert_int_equal(llmc_config_load(&cfg, 2, a3, NULL, &help, &help_md, err, sizeof err), 0);
    assert_false(help);
    assert_true(help_md);
    llmc_config_free(&cfg);
}

static void test_file_format(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[512] = "";
    char *path = temp_file(
        "# llmcached settings\n"
        "\n"
        "   listen   =   0.0.0.0:8081   \n"
        "ask-model = \"model # with hash\"  # a comment\n"
        "access-log = '/var/log/llmc log.json'\n"
        "upstream = http://localhost:9/v1#frag # trailing comment\n"
        "max-memory=2M\n"
        "\t# indented comment\n"
        "data-dir = \"\"\n");
    const char *argv[] = {"llmcached", "--config", path, NULL};
    assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), 0);
    assert_string_equal(cfg.listen, "0.0.0.0:8081");
    assert_string_equal(cfg.ask_model, "model # with hash");
    assert_int_equal(cfg.access_log, LLMC_CFG_ACCESS_LOG_FILE);
    assert_string_equal(cfg.access_log_path, "/var/log/llmc log.json");
    assert_string_equal(cfg.upstream_url, "http://localhost:9/v1#frag");
    assert_int_equal(cfg.max_memory, 2 * MiB);
    assert_int_equal(cfg.data_dir, LLMC_CFG_DATA_DIR_PATH); /* "" is no word */
    assert_string_equal(cfg.data_dir_path, "");
    llmc_config_free(&cfg);
    unlink(path);
    free(path);
}

/* Asserts that a config file holding text fails with "PATH:want". */
static void expect_file_error(const char *text, const char *want)
{
    char *path = temp_file(text);
    char expected[512];
    snprintf(expected, sizeof expected, "%s:%s", path, want);
    const char *argv[] = {"llmcached", "--config", path, NULL};
    expect_error(argv, NULL, expected);
    unlink(path);
    free(path);
}

static void test_file_errors(void **state)
{
    (void)state;
    expect_file_error("ttl = 10\n# fine\nbogus = 1\n", "3: unknown option 'bogus'");
    expect_file_error("\nttl = soon\n", "2: --ttl: 'soon' is not a duration");
    expect_file_error("listen\n", "1: expected 'name = value'");
    expect_file_error("ask-model = \"open\n", "1: --ask-model: unbalanced quotes");
    expect_file_error("ask-model = \"a\" b\n", "1: --ask-model: unbalanced quotes");
    expect_file_error("config = other.conf\n", "1: unknown option 'config'");
    expect_file_error("max-memory = 1K\n", "1: --max-memory: 1K is below the minimum 64K");

    const char *argv[] = {"llmcached", "--config", "/nonexistent/llmc.conf", NULL};
    expect_error(argv, NULL, "--config: cannot open /nonexistent/llmc.conf");
}

static void note_changed(const char *name, void *arg)
{
    char *out = arg;
    strcat(out, name);
    strcat(out, " ");
}

/* What a SIGHUP's reread reports: only the options whose values differ. */
static void test_config_diff(void **state)
{
    (void)state;
    llmc_config_t a, b;
    char err[256] = "", changed[512] = "";
    const char *argv[] = {"llmcached", NULL};
    assert_int_equal(load(&a, argv, NULL, err, sizeof err), 0);
    assert_int_equal(load(&b, argv, NULL, err, sizeof err), 0);
    llmc_config_diff(&a, &b, note_changed, changed);
    assert_string_equal(changed, "");
    assert_int_equal(llmc_config_set(&b, "ttl", "60", err, sizeof err), 0);
    assert_int_equal(llmc_config_set(&b, "admin-token", "t0ken", err, sizeof err), 0);
    assert_int_equal(llmc_config_set(&b, "access-log", "/tmp/x.log", err, sizeof err), 0);
    assert_int_equal(llmc_config_set(&b, "compress", "off", err, sizeof err), 0);
    assert_int_equal(llmc_config_set(&b, "semantic", "on", err, sizeof err), 0);
    llmc_config_diff(&a, &b, note_changed, changed);
    assert_string_equal(changed, "ttl access-log compress semantic admin-token ");
    /* The same text set again is no change; another file name is. */
    changed[0] = '\0';
    assert_int_equal(llmc_config_set(&a, "access-log", "/tmp/x.log", err, sizeof err), 0);
    assert_int_equal(llmc_config_set(&a, "ttl", "60", err, sizeof err), 0);
    assert_int_equal(llmc_config_set(&b, "access-log", "/tmp/y.log", err, sizeof err), 0);
    llmc_config_diff(&a, &b, note_changed, changed);
    assert_string_equal(changed, "access-log compress semantic admin-token ");
    llmc_config_free(&a);
    llmc_config_free(&b);
}

static void test_config_set(void **state)
{
    (void)state;
    llmc_config_t cfg;
    char err[256] = "";
    const char *argv[] = {"llmcached", NULL};
    assert_int_equal(load(&cfg, argv, NULL, err, sizeof err), 0);
    assert_int_equal(llmc_config_set(&cfg, "mock-latency", "250ms", err, sizeof err), 0);
    assert_int_equal(cfg.mock_latency, 250);
    assert_int_equal(llmc_config_set(&cfg, "upstream", "mock", err, sizeof err), 0);
    assert_int_equal(cfg.upstream, LLMC_CFG_UPSTREAM_MOCK);
    assert_null(cfg.upstream_url);
    assert_int_equal(llmc_config_set(&cfg, "nope", "1", err, sizeof err), LLMC_EINVAL);
    assert_string_equal(err, "--nope: unknown option (see --help)");
    /* A rejected value leaves the old one in place. */
    assert_int_equal(llmc_config_set(&cfg, "max-headers", "7", err, sizeof err), LLMC_EINVAL);
    assert_int_equal(cfg.max_headers, 100);
    llmc_config_free(&cfg);
}

static char *capture(void (*fn)(FILE *, void *), void *arg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    fn(f, arg);
    fclose(f);
    return text;
}

static void help_fn(FILE *f, void *arg) { llmc_config_help(f, arg); }
static void md_fn(FILE *f, void *arg) { (void)arg; llmc_config_markdown(f); }

static void test_help_text(void **state)
{
    (void)state;
    char *text = capture(help_fn, "llmcached");
    assert_non_null(strstr(text, "Usage: llmcached "));
    assert_non_null(strstr(text, "--max-memory SIZE (64K..1T)  [default: 256M]"));
    assert_non_null(strstr(text, "--cache-scope auto|shared|per-key  [default: auto]"));
    for (size_t i = 0; i < NOPTS; i++) {
        char want[128];
        snprintf(want, sizeof want, "\n  --%s ", opts[i].name);
        if (!strstr(text, want))
            fail_msg("--help lacks %s", opts[i].name);
    }
    /* Descriptions are wrapped for an 80-column terminal. */
    for (char *line = text; *line;) {
        size_t n = strcspn(line, "\n");
        if (n > 80)
            fail_msg("line too long: %.*s", (int)n, line);
        line += n + (line[n] == '\n');
    }
    free(text);
}

static void test_markdown_rows(void **state)
{
    (void)state;
    char *md = capture(md_fn, NULL);
    assert_non_null(strstr(md, "| `--max-memory` | `LLMC_MAX_MEMORY` | size, 64K..1T | `256M` |"));
    assert_non_null(strstr(md, "| `--cache-scope` | `LLMC_CACHE_SCOPE` | one of `auto`, `shared`, `per-key` |"));
    free(md);
}

/* docs/CONFIG.md is generated from the table; this fails when they drift.
   Regenerate with: build/llmcached --help-markdown > docs/CONFIG.md */
static void test_markdown_doc_in_sync(void **state)
{
    (void)state;
    FILE *f = fopen("docs/CONFIG.md", "r");
    if (!f) {
        fprintf(stderr, "docs/CONFIG.md not found: run this test from the repository root\n");
        skip();
    }
    char *doc = NULL;
    size_t cap = 0, len = 0;
    FILE *mem = open_memstream(&doc, &cap);
    char buf[4096];
    while ((len = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, len, mem);
    fclose(f);
    fclose(mem);

    char *md = capture(md_fn, NULL);
    if (strcmp(doc, md) != 0)
        fail_msg("docs/CONFIG.md differs from llmc_config_markdown(); regenerate it with "
                 "llmcached --help-markdown > docs/CONFIG.md");
    free(md);
    free(doc);
}

/* A LIST option's items: trimmed, empty ones skipped, NULL is empty. */
static void test_list_next(void **state)
{
    (void)state;
    const char *p = " a ,,\tbb\t, ,c", *item;
    size_t n;
    assert_true(llmc_config_list_next(&p, &item, &n));
    assert_int_equal(n, 1);
    assert_memory_equal(item, "a", 1);
    assert_true(llmc_config_list_next(&p, &item, &n));
    assert_int_equal(n, 2);
    assert_memory_equal(item, "bb", 2);
    assert_true(llmc_config_list_next(&p, &item, &n));
    assert_int_equal(n, 1);
    assert_memory_equal(item, "c", 1);
    assert_false(llmc_config_list_next(&p, &item, &n));
    assert_false(llmc_config_list_next(&p, &item, &n));
    const char *none = NULL, *blank = " , ";
    assert_false(llmc_config_list_next(&none, &item, &n));
    assert_false(llmc_config_list_next(&blank, &item, &n));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_flags_both_forms),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_ratio),
        cmocka_unit_test(test_secs),
        cmocka_unit_test(test_bad_values_name_the_option),
        cmocka_unit_test(test_enum_case),
        cmocka_unit_test(test_enum_values),
        cmocka_unit_test(test_word_or_str),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_unknown_and_malformed_flags),
        cmocka_unit_test(test_help_flags),
        cmocka_unit_test(test_file_format),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_config_set),
        cmocka_unit_test(test_config_diff),
        cmocka_unit_test(test_help_text),
        cmocka_unit_test(test_markdown_rows),
        cmocka_unit_test(test_markdown_doc_in_sync),
        cmocka_unit_test(test_list_next),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
