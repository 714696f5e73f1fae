/*
 * config.c: the option table of config.h turned into a parser, --help and
 * docs/CONFIG.md.
 *
 * Decisions a newcomer would otherwise get wrong:
 *
 * - One descriptor array is generated from LLMC_CONFIG_TABLE, and every
 *   source (defaults, file, environment, flags) goes through set_opt(), so
 *   a value is checked the same way wherever it came from, defaults
 *   included: a bad default in the table fails the unit tests.
 *
 * - argv is walked twice: once to find --config and catch unknown or
 *   incomplete flags, then again to apply them last, so flags beat the
 *   environment, which beats the file, whatever their order on the line.
 *
 * - The environment is read only for names in the table. Other LLMC_*
 *   variables (LLMC_UPSTREAM_KEY is a secret, not an option) are none of
 *   this parser's business and are ignored, as are empty values, so that
 *   `LLMC_TTL= llmcached` means "not set".
 *
 * - Every option takes a value, except that a BOOL flag given bare
 *   (--flag, not followed by a boolean word) means true. A flag followed
 *   by another --flag is missing its value rather than taking "--x" as one.
 *
 * - SIZE and SECS accept fractions ("1.5G", "0.25") and round to the
 *   nearest byte or millisecond; min/max in the table are in those units
 *   and are printed back with the largest suffix that divides them.
 *
 * - An ENUM is stored as its word's position in the option's word list,
 *   which is its enum value: config.h makes the enum from the same list, so
 *   the words and the enumerators cannot drift apart. A WORD_OR_STR is the
 *   same for its words, and any other text sets the list's T value and is
 *   copied to the T field.
 *
 * - ENUM words match in any case, WORD_OR_STR words only as spelled: 'FULL'
 *   can only mean full, but 'OFF' or 'None' may be the name of a file.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llmc/error.h"

typedef struct opt {
    const char *name;
    llmc_opt_type_t type;
    size_t off;
    const char *def;
    int64_t min, max;
    const char *words;   /* ENUM, WORD_OR_STR: "a|b|c", in the enum's order */
    const char *desc;
    size_t text_off;     /* WORD_OR_STR: the field that keeps any other text */
    int text_value;      /* WORD_OR_STR: the enum's value for any other text */
} opt_t;

/* The descriptor's parts made from a word list: the words as "a|b|c" ("|a"
   "|b" "|c" joined by the compiler, from past its first '|'), then for a
   WORD_OR_STR the T field's offset and the T value. */
#define JOIN_WORD(id, word) "|" word
#define T_FIELD(id, field) field
#define T_VALUE(id, field) id
#define WORDS_ENUM(list) .words = &(list(JOIN_WORD, LLMC_CFG_NONE))[1]
#define WORDS_WORD_OR_STR(list)                                        \
    WORDS_ENUM(list),                                                  \
    .text_off = offsetof(llmc_config_t, list(LLMC_CFG_NONE, T_FIELD)), \
    .text_value = list(LLMC_CFG_NONE, T_VALUE)
#define WORDS_STR(list)  .words = NULL
#define WORDS_INT(list)  .words = NULL
#define WORDS_BOOL(list) .words = NULL
#define WORDS_SIZE(list) .words = NULL
#define WORDS_SECS(list) .words = NULL
#define WORDS_RATIO(list) .words = NULL
#define WORDS_LIST(list) .words = NULL

static const opt_t opts[] = {
/* The parameters are not named after the fields: .name = name would not
   survive the expansion. */
#define X(f, name_, type_, def_, min_, max_, words_, desc_)                       \
    {.name = name_, .type = LLMC_OPT_##type_, .off = offsetof(llmc_config_t, f), \
     .def = def_, .min = min_, .max = max_, .desc = desc_, WORDS_##type_(words_)},
    LLMC_CONFIG_TABLE(X)
#undef X
};

#define NOPTS (sizeof opts / sizeof opts[0])

typedef struct unit {
    const char *suffix;
    int64_t mult;
} unit_t;

/* Sizes are powers of 1024 whatever the spelling: nobody sizes a cache in
   powers of 1000 on purpose. */
static const unit_t size_units[] = {
    {"", 1}, {"b", 1},
    {"k", 1LL << 10}, {"kb", 1LL << 10}, {"kib", 1LL << 10},
    {"m", 1LL << 20}, {"mb", 1LL << 20}, {"mib", 1LL << 20},
    {"g", 1LL << 30}, {"gb", 1LL << 30}, {"gib", 1LL << 30},
    {"t", 1LL << 40}, {"tb", 1LL << 40}, {"tib", 1LL << 40},
};

/* Durations, in milliseconds; a bare number is seconds. */
static const unit_t secs_units[] = {
    {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
};

/* Fractions, in thousandths: 0.7 or 70%. */
static const unit_t ratio_units[] = {
    {"", 1000}, {"%", 10},
};

/* Suffixes for printing amounts, largest first. */
static const unit_t size_show[] = {
    {"T", 1LL << 40}, {"G", 1LL << 30}, {"M", 1LL << 20}, {"K", 1LL << 10},
};
static const unit_t secs_show[] = {
    {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1},
};

static const struct {
    const char *word;
    bool value;
} bool_words[] = {
    {"on", true}, {"off", false}, {"true", true}, {"false", false},
    {"yes", true}, {"no", false}, {"1", true}, {"0", false},
};

#define countof(a) (sizeof(a) / sizeof((a)[0]))

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const opt_t *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

/* --- value parsers ------------------------------------------------------ */

static int parse_bool(const char *s, bool *out)
{
    for (size_t i = 0; i < countof(bool_words); i++) {
        if (strcasecmp(s, bool_words[i].word) == 0) {
            *out = bool_words[i].value;
            return 0;
        }
    }
    return LLMC_EINVAL;
}

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)s[0]) && !((s[0] == '-' || s[0] == '+') && isdigit((unsigned char)s[1])))
        return LLMC_EINVAL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return LLMC_EINVAL;
    *out = v;
    return 0;
}

/*
 * Parses "DIGITS[.DIGITS] [SUFFIX]" scaled by the suffix's multiplier.
 * Returns 0, or LLMC_EINVAL with *too_big telling overflow from garbage.
 * Signs are garbage: no size or duration is negative.
 */
static int parse_scaled(const char *s, const unit_t *units, size_t nunits,
                        int64_t *out, bool *too_big)
{
    const char *p = s;
    long double v = 0, scale = 0.1L;
    int digits = 0;

    *too_big = false;
    for (; isdigit((unsigned char)*p); p++, digits++)
        v = v * 10 + (*p - '0');
    if (*p == '.')
        for (p++; isdigit((unsigned char)*p); p++, digits++, scale /= 10)
            v += (*p - '0') * scale;
    if (digits == 0)
        return LLMC_EINVAL;
    while (*p == ' ')
        p++;
    for (size_t i = 0; i < nunits; i++) {
        if (strcasecmp(p, units[i].suffix) != 0)
            continue;
        long double r = roundl(v * units[i].mult);
        if (!(r < 9223372036854775808.0L)) { /* 2^63, exact in any long double */
            *too_big = true;
            return LLMC_EINVAL;
        }
        *out = (int64_t)r;
        return 0;
    }
    return LLMC_EINVAL;
}

int llmc_config_parse_size(const char *s, int64_t *out)
{
    bool too_big;
    return parse_scaled(s, size_units, countof(size_units), out, &too_big);
}

int llmc_config_parse_secs(const char *s, int64_t *out_ms)
{
    bool too_big;
    return parse_scaled(s, secs_units, countof(secs_units), out_ms, &too_big);
}

/* The position of s among the |-separated words, or -1. Case counts only
   when exact. */
static int enum_word(const char *words, const char *s, bool exact)
{
    size_t slen = strlen(s);
    int i = 0;
    for (const char *w = words; *w; i++) {
        size_t n = strcspn(w, "|");
        if (n == slen && (exact ? strncmp(w, s, n) : strncasecmp(w, s, n)) == 0)
            return i;
        w += n + (w[n] == '|');
    }
    return -1;
}

/* --- printing amounts ---------------------------------------------------- */

/* Writes v with the largest suffix of show[] that divides it exactly. */
static void fmt_scaled(char *buf, size_t len, int64_t v, const unit_t *show, size_t n,
                       const char *bare)
{
    for (size_t i = 0; i < n && v != 0; i++) {
        if (v % show[i].mult == 0) {
            snprintf(buf, len, "%lld%s", (long long)(v / show[i].mult), show[i].suffix);
            return;
        }
    }
    snprintf(buf, len, "%lld%s", (long long)v, v == 0 ? "" : bare);
}

/* Thousandths as a decimal without trailing zeros: 700 -> "0.7", 1000 -> "1". */
static void fmt_ratio(char *buf, size_t len, int64_t v)
{
    snprintf(buf, len, "%lld.%03lld", (long long)(v / 1000), (long long)(v % 1000));
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '0')
        buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '.')
        buf[--n] = '\0';
}

static void fmt_amount(char *buf, size_t len, const opt_t *o, int64_t v)
{
    if (o->type == LLMC_OPT_SIZE)
        fmt_scaled(buf, len, v, size_show, countof(size_show), "");
    else if (o->type == LLMC_OPT_SECS)
        fmt_scaled(buf, len, v, secs_show, countof(secs_show), "ms");
    else if (o->type == LLMC_OPT_RATIO)
        fmt_ratio(buf, len, v);
    else
        snprintf(buf, len, "%lld", (long long)v);
}

/* --- setting one option ------------------------------------------------- */

static int check_range(const opt_t *o, const char *text, int64_t v, char *err, size_t errlen)
{
    char bound[32];
    if (v < o->min) {
        fmt_amount(bound, sizeof bound, o, o->min);
        errf(err, errlen, "--%s: %s is below the minimum %s", o->name, text, bound);
        return LLMC_EINVAL;
    }
    if (v > o->max) {
        fmt_amount(bound, sizeof bound, o, o->max);
        errf(err, errlen, "--%s: %s is above the maximum %s", o->name, text, bound);
        return LLMC_EINVAL;
    }
    return 0;
}

static int parse_number(const opt_t *o, const char *s, int64_t *v, char *err, size_t errlen)
{
    bool too_big = false;
    int rc;

    if (o->type == LLMC_OPT_INT) {
        if ((rc = parse_int(s, v)) != 0)
            errf(err, errlen, "--%s: '%s' is not an integer", o->name, s);
        return rc;
    }
    if (o->type == LLMC_OPT_SIZE)
        rc = parse_scaled(s, size_units, countof(size_units), v, &too_big);
    else if (o->type == LLMC_OPT_RATIO)
        rc = parse_scaled(s, ratio_units, countof(ratio_units), v, &too_big);
    else
        rc = parse_scaled(s, secs_units, countof(secs_units), v, &too_big);
    if (rc != 0 && too_big)
        errf(err, errlen, "--%s: '%s' is too large", o->name, s);
    else if (rc != 0 && o->type == LLMC_OPT_RATIO)
        errf(err, errlen, "--%s: '%s' is not a fraction (0.7, or a percentage: 70%%)", o->name, s);
    else if (rc != 0 && o->type == LLMC_OPT_SIZE)
        errf(err, errlen, "--%s: '%s' is not a size (bytes, optionally with a K, M, G or T suffix)",
             o->name, s);
    else if (rc != 0)
        errf(err, errlen, "--%s: '%s' is not a duration (seconds, optionally with an ms, s, m, h "
             "or d suffix)", o->name, s);
    return rc;
}

static int set_string(char **slot, const char *s, size_t len, char *err, size_t errlen)
{
    char *copy = strndup(s, len);
    if (!copy) {
        errf(err, errlen, "out of memory");
        return LLMC_ENOMEM;
    }
    free(*slot);
    *slot = copy;
    return 0;
}

/* A LIST occurrence: s's items joined to what *slot holds with a comma
   ("" adds nothing; the first set, the default, makes the string). */
static int add_items(char **slot, const char *s, char *err, size_t errlen)
{
    if (!*slot || **slot == '\0')
        return set_string(slot, s, strlen(s), err, errlen);
    if (*s == '\0')
        return 0;
    size_t a = strlen(*slot), b = strlen(s);
    char *joined = malloc(a + 1 + b + 1);
    if (!joined) {
        errf(err, errlen, "out of memory");
        return LLMC_ENOMEM;
    }
    memcpy(joined, *slot, a);
    joined[a] = ',';
    memcpy(joined + a + 1, s, b + 1);
    free(*slot);
    *slot = joined;
    return 0;
}

/* The field of o that holds a string cfg owns, or NULL. */
static char **owned_text(llmc_config_t *cfg, const opt_t *o)
{
    if (o->type == LLMC_OPT_STR || o->type == LLMC_OPT_LIST)
        return (char **)((char *)cfg + o->off);
    if (o->type == LLMC_OPT_WORD_OR_STR)
        return (char **)((char *)cfg + o->text_off);
    return NULL;
}

static int set_opt(llmc_config_t *cfg, const opt_t *o, const char *s, char *err, size_t errlen)
{
    void *slot = (char *)cfg + o->off;
    char **text = owned_text(cfg, o);
    int64_t v;
    int word, rc;
    bool b;

    switch (o->type) {
    case LLMC_OPT_STR:
        return set_string(text, s, strlen(s), err, errlen);
    case LLMC_OPT_LIST:
        return add_items(text, s, err, errlen);
    case LLMC_OPT_ENUM:
        if ((word = enum_word(o->words, s, false)) < 0) {
            errf(err, errlen, "--%s: '%s' is not one of %s", o->name, s, o->words);
            return LLMC_EINVAL;
        }
        memcpy(slot, &word, sizeof word); /* an enum field the size of an int (config.h) */
        return 0;
    case LLMC_OPT_WORD_OR_STR:
        if ((word = enum_word(o->words, s, true)) >= 0) {
            free(*text);
            *text = NULL;
        } else if ((rc = set_string(text, s, strlen(s), err, errlen)) != 0) {
            return rc;
        } else {
            word = o->text_value;
        }
        memcpy(slot, &word, sizeof word);
        return 0;
    case LLMC_OPT_BOOL:
        if (parse_bool(s, &b) != 0) {
            errf(err, errlen, "--%s: '%s' is not a boolean (on/off, true/false, yes/no, 1/0)",
                 o->name, s);
            return LLMC_EINVAL;
        }
        *(bool *)slot = b;
        return 0;
    case LLMC_OPT_INT:
    case LLMC_OPT_SIZE:
    case LLMC_OPT_SECS:
    case LLMC_OPT_RATIO:
        if (parse_number(o, s, &v, err, errlen) != 0 || check_range(o, s, v, err, errlen) != 0)
            return LLMC_EINVAL;
        *(int64_t *)slot = v;
        return 0;
    }
    return LLMC_EINVAL;
}

int llmc_config_set(llmc_config_t *cfg, const char *name, const char *value, char *err, size_t errlen)
{
    const opt_t *o = find_opt(name, strlen(name));
    if (!o) {
        errf(err, errlen, "--%s: unknown option (see --help)", name);
        return LLMC_EINVAL;
    }
    return set_opt(cfg, o, value, err, errlen);
}

void llmc_config_free(llmc_config_t *cfg)
{
    for (size_t i = 0; i < NOPTS; i++) {
        char **slot = owned_text(cfg, &opts[i]);
        if (slot) {
            free(*slot);
            *slot = NULL;
        }
    }
    free(cfg->config_file);
    cfg->config_file = NULL;
}

static bool same_text(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

void llmc_config_diff(const llmc_config_t *a, const llmc_config_t *b,
                      void (*changed)(const char *name, void *arg), void *arg)
{
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &opts[i];
        const char *pa = (const char *)a + o->off, *pb = (const char *)b + o->off;
        bool same;
        switch (o->type) {
        case LLMC_OPT_STR:
        case LLMC_OPT_LIST: /* the items joined, in order */
            same = same_text(*(char *const *)pa, *(char *const *)pb);
            break;
        case LLMC_OPT_ENUM:
            same = memcmp(pa, pb, sizeof(int)) == 0;
            break;
        case LLMC_OPT_WORD_OR_STR:
            same = memcmp(pa, pb, sizeof(int)) == 0 &&
                   same_text(*(char *const *)((const char *)a + o->text_off),
                             *(char *const *)((const char *)b + o->text_off));
            break;
        case LLMC_OPT_BOOL:
            same = *(const bool *)pa == *(const bool *)pb;
            break;
        default: /* INT, SIZE, SECS, RATIO */
            same = *(const int64_t *)pa == *(const int64_t *)pb;
            break;
        }
        if (!same)
            changed(o->name, arg);
    }
}

/* --- the config file ----------------------------------------------------- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Cuts a value at its trailing comment and strips matching quotes.
   Returns NULL when a quote is left open or text follows the closing one. */
static char *file_value(char *v)
{
    if (*v == '"' || *v == '\'') {
        char *close = strchr(v + 1, *v);
        if (!close)
            return NULL;
        char *rest = trim(close + 1);
        if (*rest != '\0' && *rest != '#')
            return NULL;
        *close = '\0';
        return v + 1;
    }
    for (char *p = v; *p; p++) {
        if (*p == '#' && p > v && isspace((unsigned char)p[-1])) {
            *p = '\0';
            break;
        }
    }
    return trim(v);
}

/* Applies one line of a config file. The message in err has no location. */
static int file_line(llmc_config_t *cfg, char *line, char *err, size_t errlen)
{
    char *s = trim(line);
    if (*s == '\0' || *s == '#')
        return 0;
    char *eq = strchr(s, '=');
    if (!eq) {
        errf(err, errlen, "expected 'name = value'");
        return LLMC_EINVAL;
    }
    *eq = '\0';
    char *name = trim(s);
    const opt_t *o = find_opt(name, strlen(name));
    if (!o) {
        errf(err, errlen, "unknown option '%s'", name);
        return LLMC_EINVAL;
    }
    char *value = file_value(trim(eq + 1));
    if (!value) {
        errf(err, errlen, "--%s: unbalanced quotes", o->name);
        return LLMC_EINVAL;
    }
    return set_opt(cfg, o, value, err, errlen);
}

static int load_file(llmc_config_t *cfg, const char *path, char *err, size_t errlen)
{
    char msg[512];
    char *line = NULL;
    size_t cap = 0;
    int rc = 0, lineno = 0;

    FILE *f = fopen(path, "r");
    if (!f) {
        errf(err, errlen, "--config: cannot open %s: %s", path, strerror(errno));
        return LLMC_EINVAL;
    }
    while (getline(&line, &cap, f) != -1) {
        lineno++;
        if ((rc = file_line(cfg, line, msg, sizeof msg)) != 0) {
            errf(err, errlen, "%s:%d: %s", path, lineno, msg);
            goto fail;
        }
    }
    if (ferror(f)) {
        errf(err, errlen, "--config: cannot read %s: %s", path, strerror(errno));
        rc = LLMC_EINVAL;
    }
fail:
    free(line);
    fclose(f);
    return rc;
}

/* --- the environment ----------------------------------------------------- */

/* Writes LLMC_NAME for o: uppercase, dashes become underscores. */
static void env_name(const opt_t *o, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "LLMC_%s", o->name);
    for (size_t i = 5; i < n && i < len; i++)
        buf[i] = buf[i] == '-' ? '_' : (char)toupper((unsigned char)buf[i]);
}

static int load_env(llmc_config_t *cfg, char **envp, char *err, size_t errlen)
{
    char name[64], msg[512];

    for (; envp && *envp; envp++) {
        const char *e = *envp, *eq = strchr(e, '=');
        if (strncmp(e, "LLMC_", 5) != 0 || !eq || eq[1] == '\0')
            continue;
        for (size_t i = 0; i < NOPTS; i++) {
            env_name(&opts[i], name, sizeof name);
            if (strlen(name) != (size_t)(eq - e) || memcmp(name, e, (size_t)(eq - e)) != 0)
                continue;
            if (set_opt(cfg, &opts[i], eq + 1, msg, sizeof msg) != 0) {
                errf(err, errlen, "%s: %s", name, msg);
                return LLMC_EINVAL;
            }
        }
    }
    return 0;
}

/* --- flags --------------------------------------------------------------- */

enum flag_kind { FLAG_OPT, FLAG_CONFIG, FLAG_HELP, FLAG_HELP_MD };

typedef struct flag {
    enum flag_kind kind;
    const opt_t *opt;   /* for FLAG_OPT */
    const char *value;  /* for FLAG_OPT and FLAG_CONFIG */
} flag_t;

/* The value of the flag at argv[*i] when not given with '='. */
static int flag_value(int argc, char **argv, int *i, const char *name, size_t nlen,
                      const opt_t *o, const char **value, char *err, size_t errlen)
{
    const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
    bool b;

    if (o && o->type == LLMC_OPT_BOOL) {
        *value = "true";
        if (next && parse_bool(next, &b) == 0) {
            *value = next;
            (*i)++;
        }
        return 0;
    }
    if (!next || strncmp(next, "--", 2) == 0) {
        errf(err, errlen, "--%.*s: missing value", (int)nlen, name);
        return LLMC_EINVAL;
    }
    *value = next;
    (*i)++;
    return 0;
}

/* Reads the flag at argv[*i] into f and moves *i past it and its value. */
static int next_flag(int argc, char **argv, int *i, flag_t *f, char *err, size_t errlen)
{
    const char *a = argv[*i];

    memset(f, 0, sizeof *f);
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "--help-markdown") == 0) {
        f->kind = strcmp(a, "--help-markdown") == 0 ? FLAG_HELP_MD : FLAG_HELP;
        (*i)++;
        return 0;
    }
    if (a[0] == '-' && a[1] != '-' && a[1] != '\0') {
        errf(err, errlen, "%s: unknown option (options start with --, see --help)", a);
        return LLMC_EINVAL;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
        errf(err, errlen, "unexpected argument '%s' (options start with --, see --help)", a);
        return LLMC_EINVAL;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    bool is_config = nlen == 6 && memcmp(name, "config", 6) == 0;
    f->kind = is_config ? FLAG_CONFIG : FLAG_OPT;
    f->opt = is_config ? NULL : find_opt(name, nlen);
    if (!is_config && !f->opt) {
        errf(err, errlen, "--%.*s: unknown option (see --help)", (int)nlen, name);
        return LLMC_EINVAL;
    }
    if (eq)
        f->value = eq + 1;
    else if (flag_value(argc, argv, i, name, nlen, f->opt, &f->value, err, errlen) != 0)
        return LLMC_EINVAL;
    (*i)++;
    return 0;
}

/* First pass: checks every flag and picks out --config and the help flags. */
static int scan_flags(int argc, char **argv, const char **config, bool *help, bool *help_md,
                      char *err, size_t errlen)
{
    flag_t f;
    for (int i = 1; i < argc;) {
        if (next_flag(argc, argv, &i, &f, err, errlen) != 0)
            return LLMC_EINVAL;
        if (f.kind == FLAG_CONFIG)
            *config = f.value;
        else if (f.kind == FLAG_HELP)
            *help = true;
        else if (f.kind == FLAG_HELP_MD)
            *help_md = true;
    }
    return 0;
}

/* Second pass: applies the options; scan_flags has already vetted argv. */
static int apply_flags(llmc_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    flag_t f;
    for (int i = 1; i < argc;) {
        if (next_flag(argc, argv, &i, &f, err, errlen) != 0)
            return LLMC_EINVAL;
        if (f.kind == FLAG_OPT && set_opt(cfg, f.opt, f.value, err, errlen) != 0)
            return LLMC_EINVAL;
    }
    return 0;
}

static int load_defaults(llmc_config_t *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (set_opt(cfg, &opts[i], opts[i].def, err, errlen) != 0)
            return LLMC_EINVAL;
    return 0;
}

int llmc_config_load(llmc_config_t *cfg, int argc, char **argv, char **envp,
                     bool *help, bool *help_md, char *err, size_t errlen)
{
    const char *config = NULL;
    bool h = false, hm = false;
    int rc;

    memset(cfg, 0, sizeof *cfg);
    if ((rc = load_defaults(cfg, err, errlen)) != 0)
        return rc;
    if ((rc = scan_flags(argc, argv, &config, &h, &hm, err, errlen)) != 0)
        return rc;
    if (help)
        *help = h;
    if (help_md)
        *help_md = hm;
    if (config) {
        if ((rc = set_string(&cfg->config_file, config, strlen(config), err, errlen)) != 0)
            return rc;
        if ((rc = load_file(cfg, config, err, errlen)) != 0)
            return rc;
    }
    if ((rc = load_env(cfg, envp, err, errlen)) != 0)
        return rc;
    return apply_flags(cfg, argc, argv, err, errlen);
}

/* --- --help and Markdown ------------------------------------------------- */

static const char *type_word(llmc_opt_type_t t)
{
    switch (t) {
    case LLMC_OPT_STR:  return "TEXT";
    case LLMC_OPT_INT:  return "N";
    case LLMC_OPT_BOOL: return "on|off";
    case LLMC_OPT_SIZE: return "SIZE";
    case LLMC_OPT_SECS: return "SECS";
    case LLMC_OPT_ENUM: return "WORD";
    case LLMC_OPT_WORD_OR_STR: return "TEXT";  /* the words are in the description */
    case LLMC_OPT_RATIO: return "RATIO";
    case LLMC_OPT_LIST: return "LIST";
    }
    return "VALUE";
}

/* "0..256", "64K..1T", "1s..365d"; "" for types without a range. */
static void range_text(char *buf, size_t len, const opt_t *o)
{
    char lo[32], hi[32];
    buf[0] = '\0';
    if (o->type != LLMC_OPT_INT && o->type != LLMC_OPT_SIZE && o->type != LLMC_OPT_SECS &&
        o->type != LLMC_OPT_RATIO)
        return;
    fmt_amount(lo, sizeof lo, o, o->min);
    fmt_amount(hi, sizeof hi, o, o->max);
    snprintf(buf, len, "%s..%s", lo, hi);
}

/* Writes text word-wrapped to width columns, each line indented. */
static void wrap(FILE *out, const char *text, int indent, int width)
{
    int col = 0;
    while (*text) {
        size_t n = strcspn(text, " ");
        if (col > 0 && col + 1 + (int)n > width) {
            fputc('\n', out);
            col = 0;
        }
        if (col == 0)
            col = fprintf(out, "%*s", indent, "");
        else
            col += fprintf(out, " ");
        col += fprintf(out, "%.*s", (int)n, text);
        text += n;
        while (*text == ' ')
            text++;
    }
    fputc('\n', out);
}

void llmc_config_help(FILE *out, const char *prog)
{
    char range[80];

    fprintf(out, "Usage: %s [--config FILE] [--OPTION VALUE | --OPTION=VALUE]...\n\n", prog);
    wrap(out, "A caching gateway for OpenAI-compatible LLM APIs. Every option can also be set "
         "as an environment variable LLMC_OPTION (upper case, dashes become underscores) or as "
         "an 'option = value' line in the --config file. Flags override the environment, which "
         "overrides the file. SIZE takes K, M, G or T (powers of 1024); SECS is seconds, "
         "fractions allowed, or a number with ms, s, m, h or d.", 0, 78);
    fprintf(out, "\n  --config FILE\n");
    wrap(out, "Read options from FILE ('name = value' lines, # comments).", 6, 78);
    fprintf(out, "  --help, -h\n");
    wrap(out, "Print this help and exit.", 6, 78);
    fprintf(out, "  --help-markdown\n");
    wrap(out, "Print the option reference as Markdown (docs/CONFIG.md) and exit.", 6, 78);
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &opts[i];
        range_text(range, sizeof range, o);
        fprintf(out, "\n  --%s %s", o->name, o->type == LLMC_OPT_ENUM ? o->words : type_word(o->type));
        if (range[0])
            fprintf(out, " (%s)", range);
        fprintf(out, "  [default: %s]\n", o->def[0] ? o->def : "\"\""); /* empty: "" */
        wrap(out, o->desc, 6, 78);
    }
}

/* Writes s for a Markdown table cell: a | would end the cell. */
static void md_cell(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            fputc('\\', out);
        fputc(*s, out);
    }
}

static void md_type(FILE *out, const opt_t *o)
{
    char range[80];
    static const char *const names[] = {
        [LLMC_OPT_STR] = "text", [LLMC_OPT_INT] = "integer", [LLMC_OPT_BOOL] = "boolean",
        [LLMC_OPT_SIZE] = "size", [LLMC_OPT_SECS] = "duration", [LLMC_OPT_ENUM] = "one of",
        [LLMC_OPT_WORD_OR_STR] = "text", [LLMC_OPT_RATIO] = "fraction",
        [LLMC_OPT_LIST] = "list (repeatable)",
    };
    fputs(names[o->type], out);
    if (o->type == LLMC_OPT_ENUM) {
        for (const char *w = o->words; *w;) {
            size_t n = strcspn(w, "|");
            fprintf(out, "%s`%.*s`", w == o->words ? " " : ", ", (int)n, w);
            w += n + (w[n] == '|');
        }
    }
    range_text(range, sizeof range, o);
    if (range[0])
        fprintf(out, ", %s", range);
}

void llmc_config_markdown(FILE *out)
{
    char env[64];

    fputs("# llmcached configuration\n\n"
          "<!-- Generated from the table in src/config.h by `llmcached --help-markdown`;"
          " do not edit by hand. -->\n\n"
          "Every option can be given as a flag (`--name value` or `--name=value`), as an\n"
          "environment variable (`LLMC_NAME`: upper case, dashes become underscores) or as a\n"
          "`name = value` line in the file named by `--config FILE` (`#` starts a comment;\n"
          "the value may be quoted). Flags override the environment, which overrides the\n"
          "file, which overrides the defaults. A bad value stops start-up with a message\n"
          "naming the option.\n\n"
          "Types: *size* is bytes with an optional `K`, `M`, `G` or `T` suffix (powers of\n"
          "1024; `KB`, `KiB` and so on are read the same); *duration* is seconds, fractions\n"
          "allowed, or a number with an `ms`, `s`, `m`, `h` or `d` suffix; *boolean* is\n"
          "`on`/`off`, `true`/`false`, `yes`/`no` or `1`/`0`. Ranges are inclusive.\n\n"
          "| Option | Environment | Type | Default | Description |\n"
          "| --- | --- | --- | --- | --- |\n", out);
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &opts[i];
        env_name(o, env, sizeof env);
        fprintf(out, "| `--%s` | `%s` | ", o->name, env);
        md_type(out, o);
        fputs(" | `", out);
        md_cell(out, o->def[0] ? o->def : "\"\""); /* an empty code span would not show */
        fputs("` | ", out);
        md_cell(out, o->desc);
        fputs(" |\n", out);
    }
}

bool llmc_config_list_next(const char **cursor, const char **item, size_t *len)
{
    const char *p = *cursor ? *cursor : "";
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *s = p, *e = p + n;
        p += n + (p[n] == ',');
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > s) {
            *cursor = p;
            *item = s;
            *len = (size_t)(e - s);
            return true;
        }
    }
    *cursor = p;
    return false;
}
