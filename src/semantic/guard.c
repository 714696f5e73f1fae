/*
 * semantic/guard.c: the guards (see guard.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Every guard errs towards "different": a false rejection costs one
 *   model call, a false pass serves a wrong answer. So a word one question
 *   has and the other lacks rejects unless the tokeniser marked it a filler
 *   (inflections and British/American spellings are already one stem there).
 * - Quotes, code spans and URLs are compared byte for byte (case matters in
 *   a string or a URL); identifiers (CamelCase, snake_case, paths, dotted
 *   names, flags) are compared case-folded, and an identifier on one side
 *   must appear among the other's words, detected as one or not, so
 *   "HashMap" matches "hashmap" but not "HashSet".
 * - Quotes and code are cut out of the text before the other guards look
 *   at it (tokens, numbers, identifiers), so one difference is named once,
 *   by the guard that owns it.
 * - A single quote opens only after a space or punctuation and closes only
 *   before one, so apostrophes ("don't", "the users' files") never open
 *   a quote.
 * - Numbers are compared in order with their units ("5 km to miles" is not
 *   "5 miles to km"); a unit is the letters glued to the number, a symbol
 *   beside it ($5, 5%) or a known unit word after it.
 * - Roles: the content word after each role word ("to", "from", "into",
 *   "than", "vs") must be the same on both sides, in order, whenever both
 *   use that role word: "English to French" vs "French to English" differ
 *   after "to"; "reverse a list in Python" vs "in Python, reverse a list"
 *   has no role word and passes on its (equal) content words.
 * - Order: with no role word to go by, "can dogs eat chocolate" and "can
 *   chocolate eat dogs" have the same words. The content words must come in
 *   the same order but for one phrase moved elsewhere (two neighbouring runs
 *   swapped: "in Python, reverse a list" / "reverse a list in Python", "why
 *   not my code" / "why my code not"); anything more is another question.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/error.h"
#include "semantic/guard.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

typedef struct strs {
    char **v;
    size_t n, cap;
} strs_t;

/* Antonym pairs: one side's word must not be the other side's opposite. */
static const char *const antonyms[][2] = {
    {"enable", "disable"}, {"on", "off"}, {"increase", "decrease"}, {"add", "remove"},
    {"install", "uninstall"}, {"allow", "deny"}, {"allow", "block"}, {"show", "hide"},
    {"start", "stop"}, {"open", "close"}, {"encrypt", "decrypt"}, {"lock", "unlock"},
    {"accept", "reject"}, {"include", "exclude"}, {"maximum", "minimum"}, {"max", "min"},
    {"before", "after"}, {"above", "below"}, {"upper", "lower"}, {"import", "export"},
    {"buy", "sell"}, {"push", "pull"}, {"true", "false"}, {"win", "lose"},
    {"connect", "disconnect"}, {"mount", "unmount"}, {"compress", "decompress"},
    {"encode", "decode"}, {"subscribe", "unsubscribe"}, {"follow", "unfollow"},
    {"login", "logout"}, {"upload", "download"}, {"increment", "decrement"},
    {"inner", "outer"}, {"ascending", "descending"}, {"best", "worst"}, {"pros", "cons"},
    {"advantage", "disadvantage"}, {"like", "dislike"}, {"agree", "disagree"},
    {"legal", "illegal"}, {"possible", "impossible"}, {"valid", "invalid"},
    {"safe", "unsafe"}, {"visible", "invisible"}, {"fastest", "slowest"},
    {"cheapest", "expensive"}, {"largest", "smallest"}, {"biggest", "smallest"},
    {"highest", "lowest"}, {"longest", "shortest"}, {"oldest", "youngest"},
    {"oldest", "newest"}, {"left", "right"}, {"north", "south"},
    {"east", "west"}, {"input", "output"}, {"inbound", "outbound"}, {"send", "receive"},
    {"sunrise", "sunset"}, {"hot", "cold"}, {"early", "late"},
};

#define NANT NELEM(antonyms)

/* The antonyms' stems, made once: stemming the table for every question
   cost more than everything else the guards do. Written only inside
   pthread_once, then read-only; ant_ready false (no memory for a stemmer)
   makes each question stem the table itself. */
static char ant_stems[NANT][2][LLMC_LEX_TOKMAX];
static bool ant_ready;
static pthread_once_t ant_once = PTHREAD_ONCE_INIT;

static void ant_init(void)
{
    llmc_lex_t *lx = llmc_lex_new();
    bool ok = lx != NULL;
    for (size_t p = 0; ok && p < NANT; p++)
        for (int side = 0; ok && side < 2; side++)
            ok = llmc_lex_stem(lx, antonyms[p][side], ant_stems[p][side]) == 0;
    llmc_lex_free(lx);
    ant_ready = ok;
}

/* Unit words after a number -> the unit they name. */
static const struct { const char *word, *unit; } units[] = {
    {"km", "km"}, {"kilometer", "km"}, {"kilometers", "km"}, {"kms", "km"},
    {"mi", "mi"}, {"mile", "mi"}, {"miles", "mi"}, {"m", "m"}, {"meter", "m"}, {"meters", "m"},
    {"cm", "cm"}, {"centimeter", "cm"}, {"centimeters", "cm"}, {"mm", "mm"},
    {"millimeter", "mm"}, {"millimeters", "mm"}, {"kg", "kg"}, {"kilogram", "kg"},
    {"kilograms", "kg"}, {"kilo", "kg"}, {"kilos", "kg"}, {"g", "g"}, {"gram", "g"},
    {"grams", "g"}, {"lb", "lb"}, {"lbs", "lb"}, {"pound", "lb"}, {"pounds", "lb"},
    {"oz", "oz"}, {"ounce", "oz"}, {"ounces", "oz"}, {"ft", "ft"}, {"foot", "ft"},
    {"feet", "ft"}, {"inch", "in"}, {"inches", "in"}, {"yard", "yd"}, {"yards", "yd"},
    {"c", "c"}, {"celsius", "c"}, {"f", "f"}, {"fahrenheit", "f"}, {"k", "k"}, {"kelvin", "k"},
    {"percent", "%"}, {"%", "%"}, {"$", "$"}, {"dollar", "$"}, {"dollars", "$"}, {"usd", "$"},
    {"\xe2\x82\xac", "eur"}, {"euro", "eur"}, {"euros", "eur"}, {"eur", "eur"},
    {"\xc2\xa3", "gbp"}, {"gbp", "gbp"}, {"\xc2\xb0", "deg"}, {"degree", "deg"},
    {"degrees", "deg"}, {"gb", "gb"}, {"gigabyte", "gb"}, {"gigabytes", "gb"}, {"mb", "mb"},
    {"megabyte", "mb"}, {"megabytes", "mb"}, {"kb", "kb"}, {"kilobyte", "kb"},
    {"kilobytes", "kb"}, {"tb", "tb"}, {"terabyte", "tb"}, {"terabytes", "tb"},
    {"ms", "ms"}, {"millisecond", "ms"}, {"milliseconds", "ms"}, {"s", "s"}, {"sec", "s"},
    {"secs", "s"}, {"second", "s"}, {"seconds", "s"}, {"min", "min"}, {"mins", "min"},
    {"minute", "min"}, {"minutes", "min"}, {"h", "h"}, {"hr", "h"}, {"hrs", "h"},
    {"hour", "h"}, {"hours", "h"}, {"day", "d"}, {"days", "d"}, {"week", "wk"},
    {"weeks", "wk"}, {"month", "mo"}, {"months", "mo"}, {"year", "y"}, {"years", "y"},
    {"yr", "y"}, {"yrs", "y"}, {"w", "w"}, {"watt", "w"}, {"watts", "w"}, {"kw", "kw"},
    {"kwh", "kwh"}, {"v", "v"}, {"volt", "v"}, {"volts", "v"}, {"hz", "hz"}, {"khz", "khz"},
    {"mhz", "mhz"}, {"ghz", "ghz"}, {"mph", "mph"}, {"kph", "kmh"}, {"kmh", "kmh"},
    {"l", "l"}, {"liter", "l"}, {"liters", "l"}, {"ml", "ml"}, {"milliliter", "ml"},
    {"milliliters", "ml"}, {"gallon", "gal"}, {"gallons", "gal"}, {"cup", "cup"},
    {"cups", "cup"}, {"x", "x"}, {"times", "x"},
};

/* A token the numbers guard took as a number's unit ("5 kilometers"): the
   content guard leaves it to that guard. The lexer's flags use the low bits. */
#define TOK_UNIT 0x80u

static const char *const role_words[] = {"to", "from", "into", "onto", "than", "vs", "versus"};

struct llmc_guard_q {
    llmc_lex_toks_t toks;
    strs_t numbers;  /* "value unit", in order */
    strs_t quotes;   /* sorted */
    strs_t code;     /* sorted */
    strs_t urls;     /* sorted, exact */
    strs_t idents;   /* sorted, lower-cased */
    strs_t words;    /* every whitespace-separated word outside quotes and code, lower-cased */
    unsigned negs;
    uint8_t ant[NANT]; /* bit 0: has the pair's first word, bit 1: its second */
};

/* ---- small helpers -------------------------------------------------------------- */

static int strs_add(strs_t *s, const char *p, size_t n)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 8;
        char **v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return LLMC_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strndup(p, n)))
        return LLMC_ENOMEM;
    s->n++;
    return 0;
}

static void strs_free(strs_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

static int cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void strs_sort(strs_t *s)
{
    if (s->n > 1)
        qsort(s->v, s->n, sizeof(*s->v), cmpstr);
}

static bool strs_has(const strs_t *s, const char *w)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], w) == 0)
            return true;
    return false;
}

/* Index of the first difference of two lists compared in order, or -1 when
   equal; a list that ends first differs at its length. */
static long strs_diff(const strs_t *a, const strs_t *b)
{
    size_t n = a->n < b->n ? a->n : b->n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return (long)i;
    return a->n == b->n ? -1 : (long)n;
}

static const char *at(const strs_t *s, long i)
{
    return i >= 0 && (size_t)i < s->n ? s->v[i] : "(none)";
}

/* ---- extraction ----------------------------------------------------------------- */

/* Numbers from the tokens: "3.50km" -> "3.5 km"; "$ 5" -> "5 $"; "1st" stays. */
static int extract_numbers(llmc_guard_q_t *q)
{
    const llmc_lex_tok_t *t = q->toks.v;
    for (size_t i = 0; i < q->toks.n; i++) {
        if (!(t[i].flags & LLMC_LEX_NUM))
            continue;
        char val[LLMC_LEX_TOKMAX], out[2 * LLMC_LEX_TOKMAX + 2];
        const char *w = t[i].word, *unit = "";
        size_t n = 0;
        if (isdigit((unsigned char)w[0])) {
            while (isdigit((unsigned char)w[n]) || w[n] == '.')
                n++;
        } else {
            n = strlen(w); /* "python3": the whole word is the value */
        }
        memcpy(val, w, n);
        val[n] = '\0';
        if (strchr(val, '.')) {
            /* "3.50" is "3.5", "2.0" is "2". */
            size_t e = n;
            while (e > 0 && val[e - 1] == '0')
                e--;
            if (e > 0 && val[e - 1] == '.')
                e--;
            val[e] = '\0';
        }
        const char *rest = w + n;
        static const char *const ordinal[] = {"st", "nd", "rd", "th"};
        bool is_ord = false;
        for (size_t k = 0; k < NELEM(ordinal); k++)
            is_ord |= strcmp(rest, ordinal[k]) == 0;
        if (is_ord) {
            snprintf(out, sizeof(out), "%s%s", val, rest);
        } else {
            llmc_lex_tok_t *ut = NULL;
            const char *cand = rest;
            if (!*rest && i > 0 && (t[i - 1].flags & LLMC_LEX_SYM))
                ut = &q->toks.v[i - 1]; /* $5 */
            else if (!*rest && i + 1 < q->toks.n)
                ut = &q->toks.v[i + 1]; /* 5 km, 5 % */
            if (ut)
                cand = ut->word;
            for (size_t k = 0; k < NELEM(units); k++)
                if (strcmp(cand, units[k].word) == 0) {
                    unit = units[k].unit;
                    if (ut)
                        ut->flags |= TOK_UNIT;
                    break;
                }
            if (*rest && !*unit)
                unit = rest; /* glued letters: a unit we have no name for ("2fa") */
            snprintf(out, sizeof(out), "%s%s%s", val, *unit ? " " : "", unit);
        }
        int rc = strs_add(&q->numbers, out, strlen(out));
        if (rc < 0)
            return rc;
    }
    return 0;
}

static bool word_byte(unsigned char c)
{
    return isalnum(c) || c >= 0x80;
}

/* Cuts quoted strings and code spans out of s (overwritten with spaces),
   collecting their contents. */
static int extract_spans(llmc_guard_q_t *q, char *s, size_t n)
{
    int rc;
    /* Code first: a quote inside code is code. */
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '`')
            continue;
        size_t fence = (i + 2 < n && s[i + 1] == '`' && s[i + 2] == '`') ? 3 : 1;
        size_t j = i + fence;
        char *end = NULL;
        for (; j + fence <= n; j++)
            if (memcmp(s + j, fence == 3 ? "```" : "`", fence) == 0) {
                end = s + j;
                break;
            }
        if (!end)
            break;
        size_t b = i + fence, e = j;
        while (b < e && isspace((unsigned char)s[b]))
            b++;
        while (e > b && isspace((unsigned char)s[e - 1]))
            e--;
        if ((rc = strs_add(&q->code, s + b, e - b)) < 0)
            return rc;
        memset(s + i, ' ', j + fence - i);
        i = j + fence - 1;
    }
    static const struct { const char *open, *close; bool apos; } pairs[] = {
        {"\"", "\"", false},
        {"\xe2\x80\x9c", "\xe2\x80\x9d", false}, /* “ ” */
        {"\xe2\x80\x9e", "\xe2\x80\x9c", false}, /* „ “ */
        {"\xc2\xab", "\xc2\xbb", false},         /* « » */
        {"\xe2\x80\x98", "\xe2\x80\x99", true},  /* ‘ ’ (’ is an apostrophe too) */
        {"'", "'", true},
    };
    for (size_t p = 0; p < NELEM(pairs); p++) {
        size_t ol = strlen(pairs[p].open), cl = strlen(pairs[p].close);
        for (size_t i = 0; i + ol <= n; i++) {
            if (memcmp(s + i, pairs[p].open, ol) != 0)
                continue;
            if (pairs[p].apos && i > 0 && word_byte((unsigned char)s[i - 1]))
                continue;
            size_t j = i + ol;
            bool found = false;
            for (; j + cl <= n; j++) {
                if (memcmp(s + j, pairs[p].close, cl) != 0)
                    continue;
                if (pairs[p].apos &&
                    ((j + cl < n && word_byte((unsigned char)s[j + cl])) || j == i + ol ||
                     isspace((unsigned char)s[j - 1])))
                    continue;
                found = true;
                break;
            }
            if (!found)
                continue;
            if ((rc = strs_add(&q->quotes, s + i + ol, j - i - ol)) < 0)
                return rc;
            memset(s + i, ' ', j + cl - i);
            i = j + cl - 1;
        }
    }
    return 0;
}

static bool is_ident(const char *w, size_t n)
{
    size_t alpha = 0;
    for (size_t i = 0; i < n; i++)
        alpha += isalpha((unsigned char)w[i]) != 0;
    if (!alpha)
        return false; /* 3.5, 10:30, 1/2: the numbers guard's */
    if (n >= 2 && (w[0] == '-' || w[0] == '$' || w[0] == '@' || w[0] == '#') &&
        isalnum((unsigned char)w[n - 1]))
        return true; /* --flag, -rf, $VAR, @user, #tag */
    for (size_t i = 1; i < n; i++) {
        unsigned char a = (unsigned char)w[i - 1], b = (unsigned char)w[i];
        if (islower(a) && isupper(b))
            return true; /* CamelCase, camelCase, iPhone */
        if (i + 1 < n && isalnum(a) && isalnum((unsigned char)w[i + 1]) &&
            (b == '_' || b == '.' || b == '/' || b == '\\' || b == ':'))
            return true; /* snake_case, os.path, a/b, C:\x, std::vector */
        if ((b == '/' || b == '\\') && (a == '.' || a == '~' || i == 1))
            return true; /* ./run, ~/x, /etc */
    }
    return n > 1 && (w[0] == '/' || w[0] == '\\') && isalnum((unsigned char)w[1]);
}

static int extract_words(llmc_guard_q_t *q, const char *s, size_t n)
{
    static const char lead[] = "([{<\"'", trail[] = ".,;:!?)]}>\"'";
    size_t i = 0;
    int rc;
    while (i < n) {
        while (i < n && isspace((unsigned char)s[i]))
            i++;
        size_t b = i;
        while (i < n && !isspace((unsigned char)s[i]))
            i++;
        size_t e = i;
        while (b < e && strchr(lead, s[b]))
            b++;
        while (e > b && strchr(trail, s[e - 1]))
            e--;
        if (b == e)
            continue;
        const char *w = s + b;
        size_t wl = e - b;
        if (memmem(w, wl, "://", 3) || (wl > 4 && strncasecmp(w, "www.", 4) == 0)) {
            if ((rc = strs_add(&q->urls, w, wl)) < 0)
                return rc;
            continue;
        }
        char low[256];
        if (wl >= sizeof(low))
            wl = sizeof(low) - 1;
        for (size_t k = 0; k < wl; k++)
            low[k] = (char)tolower((unsigned char)w[k]);
        if ((rc = strs_add(&q->words, low, wl)) < 0)
            return rc;
        if (is_ident(w, wl) && (rc = strs_add(&q->idents, low, wl)) < 0)
            return rc;
    }
    return 0;
}

int llmc_guard_q_new(llmc_lex_t *lx, const char *text, size_t len, llmc_guard_q_t **out)
{
    llmc_guard_q_t *q = calloc(1, sizeof(*q));
    char *copy = NULL;
    int rc;

    *out = NULL;
    if (!q)
        return LLMC_ENOMEM;
    if (!(copy = malloc(len + 1))) {
        rc = LLMC_ENOMEM;
        goto fail;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    /* Quotes and code are compared whole; the rest of the guards see the
       text without them. */
    if ((rc = extract_spans(q, copy, len)) < 0 || (rc = extract_words(q, copy, len)) < 0)
        goto fail;
    if ((rc = llmc_lex_tokenize(lx, copy, len, &q->toks)) < 0)
        goto fail;
    if ((rc = extract_numbers(q)) < 0)
        goto fail;
    strs_sort(&q->quotes);
    strs_sort(&q->code);
    strs_sort(&q->urls);
    strs_sort(&q->idents);
    for (size_t i = 0; i < q->toks.n; i++)
        q->negs += (q->toks.v[i].flags & LLMC_LEX_NEG) != 0;
    pthread_once(&ant_once, ant_init);
    for (size_t p = 0; p < NANT; p++)
        for (int side = 0; side < 2; side++) {
            char own[LLMC_LEX_TOKMAX];
            const char *st = ant_stems[p][side];
            if (!ant_ready) {
                if ((rc = llmc_lex_stem(lx, antonyms[p][side], own)) < 0)
                    goto fail;
                st = own;
            }
            for (size_t i = 0; i < q->toks.n; i++)
                if (q->toks.v[i].stem[0] == st[0] && strcmp(q->toks.v[i].stem, st) == 0)
                    q->ant[p] |= (uint8_t)(1u << side);
        }
    free(copy);
    *out = q;
    return 0;
fail:
    free(copy);
    llmc_guard_q_free(q);
    return rc;
}

void llmc_guard_q_free(llmc_guard_q_t *q)
{
    if (!q)
        return;
    llmc_lex_toks_free(&q->toks);
    strs_free(&q->numbers);
    strs_free(&q->quotes);
    strs_free(&q->code);
    strs_free(&q->urls);
    strs_free(&q->idents);
    strs_free(&q->words);
    free(q);
}

/* ---- the guards ----------------------------------------------------------------- */

typedef bool (*guard_fn)(const llmc_guard_q_t *a, const llmc_guard_q_t *b, char *why);

#define WHY(...) (snprintf(why, LLMC_GUARD_REASON, __VA_ARGS__), false)

static bool g_list(const strs_t *a, const strs_t *b, const char *what, char *why)
{
    long d = strs_diff(a, b);
    return d < 0 ? true : WHY("%s differ: \"%s\" vs \"%s\"", what, at(a, d), at(b, d));
}

static bool g_numbers(const llmc_guard_q_t *a, const llmc_guard_q_t *b, char *why)
{
    return g_list(&a->numbers, &b->numbers, "numbers", why);
}

static bool g_quotes(const llmc_guard_q_t *a, const llmc_guard_q_t *b, char *why)
{
    return g_list(&a->quotes, &b->quotes, "quoted strings", why);
}

static bool g_code(const llmc_guard_q_t *a, const llmc_guard_q_t *b, char *why)
{
    return g_list(&a->code, &b->code, "code spans", why);
}

static bool idents_in(const llmc_guard_q_t *x, const llmc_guard_q_t *y, char *why)
{
    for (size_t i = 0; i < x->idents.n; i++)
        if (!strs_has(&y->words, x->idents.v[i]))
            return WHY("identifier \"%s\" only on one side", x->idents.v[i]);
    return true;
}

static bool g_idents(const llmc_guard_q_t *a, const llmc_guard_q_t *b, char *why)
{
    return g_list(&a->urls, &b->urls, "URLs", why) && idents_in(a, b, why) &&
           idents_in(b, a, why);
}

static bool g_negation(const llmc_guard_q_t *a, const llmc_guard_q_t *b, char *why)
{
    if (a->negs != b->negs)
        return WHY("negations differ: %u vs %u", a->negs, b->negs);
    for (size_t p = 0; p < NANT; p++)
        if (a->ant[p] && b->ant[p] && a->ant[p] != b->ant[p])
            return WHY("antonyms: \"%s\" vs \"%s\"", antonyms[p][a->ant[p] == 1 ? 0 : 1],
                       antonyms[p][b->ant[p] == 1 ? 0 : 1]);
    return true;
}

/* The tokens the content and order guards compare: numbers and their units
   are the numbers guard's (in order), fillers nobody's. */
static bool is_content(const llmc_lex_tok_t *t)
{
    return !(t->flags & (LLMC_LEX_FILLER | LLMC_LEX_NUM | LLMC_LEX_SYM | TOK_UNIT));
}

static bool has_stem(const llmc_guard_q_t *q, const char *stem)
{
    for (size_t i = 0; i < q->toks.n; i++)
        if (!(q->toks.v[i].flags & LLMC_LEX_FILLER) && strcmp(q->toks.v[i].stem, stem) == 0)
            return true;
    return false;
}

static bool content_in(const llmc_guard_q_t *x, const llmc_guard_q_t *y, char *why)
{
    for (size_t i = 0; i < x->toks.n; i++) {
        const llmc_lex_tok_t *t = &x->toks.v[i];
        if (!is_content(t))
            continue;
        if (!has_stem(y, t->stem))
            return WHY("word \"%s\" only on one side", t->word);
    }
    return true;
}

static bool g_content(const llmc_guard_q_t *a, const llmc_guard_q_t *b, char *why)
{
    return content_in(a, b, why) && content_in(b, a, why);
}

/* Words between a role word and its object that say nothing of which
   object it is ("from my phone to my laptop": the objects are phone, laptop). */
static const char *const determiners[] = {
    "my", "your", "his", "her", "its", "our", "their", "this", "that", "these", "those", "some",
    "any", "every", "each",
};

static bool skip_to_object(const llmc_lex_tok_t *t)
{
    if (t->flags & LLMC_LEX_FILLER)
        return true;
    for (size_t i = 0; i < NELEM(determiners); i++)
        if (strcmp(t->word, determiners[i]) == 0)
            return true;
    return false;
}

/* The stems after each occurrence of role word r, in order. */
static size_t role_objects(const llmc_guard_q_t *q, const char *r, const char **obj, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < q->toks.n && n < max; i++) {
        if (strcmp(q->toks.v[i].word, r) != 0)
            continue;
        size_t j = i + 1;
        while (j < q->toks.n && skip_to_object(&q->toks.v[j]))
            j++;
        obj[n++] = j < q->toks.n ? q->toks.v[j].stem : "";
    }
    return n;
}

static bool g_roles(const llmc_guard_q_t *a, const llmc_guard_q_t *b, char *why)
{
    enum { MAXOBJ = 16 };
    for (size_t r = 0; r < NELEM(role_words); r++) {
        const char *oa[MAXOBJ], *ob[MAXOBJ];
        size_t na = role_objects(a, role_words[r], oa, MAXOBJ);
        size_t nb = role_objects(b, role_words[r], ob, MAXOBJ);
        if (!na || !nb)
            continue;
        if (na != nb)
            return WHY("\"%s\" used %zu vs %zu times", role_words[r], na, nb);
        for (size_t i = 0; i < na; i++)
            if (strcmp(oa[i], ob[i]) != 0)
                return WHY("roles differ: \"%s %s\" vs \"%s %s\"", role_words[r], oa[i],
                           role_words[r], ob[i]);
    }
    return true;
}

/* Whether a and b have the same content stems in the same order. */
static bool same_sequence(const llmc_guard_q_t *a, const llmc_guard_q_t *b)
{
    size_t i = 0, j = 0;
    for (;;) {
        while (i < a->toks.n && !is_content(&a->toks.v[i]))
            i++;
        while (j < b->toks.n && !is_content(&b->toks.v[j]))
            j++;
        if (i == a->toks.n || j == b->toks.n)
            return i == a->toks.n && j == b->toks.n;
        if (strcmp(a->toks.v[i++].stem, b->toks.v[j++].stem) != 0)
            return false;
    }
}

/* The content stems of q in order, at most max (max + 1: more). */
static size_t content_seq(const llmc_guard_q_t *q, const char **seq, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < q->toks.n; i++)
        if (is_content(&q->toks.v[i])) {
            if (n == max)
                return max + 1;
            seq[n++] = q->toks.v[i].stem;
        }
    return n;
}

/* a[0,i) a[j,k) a[i,j) a[k,n) equals b: the runs [i,j) and [j,k) swapped. */
static bool swapped_equal(const char **a, const char **b, size_t n, size_t i, size_t j, size_t k)
{
    size_t o = 0;
    for (size_t x = 0; x < i; x++)
        if (strcmp(a[x], b[o++]) != 0)
            return false;
    for (size_t x = j; x < k; x++)
        if (strcmp(a[x], b[o++]) != 0)
            return false;
    for (size_t x = i; x < j; x++)
        if (strcmp(a[x], b[o++]) != 0)
            return false;
    for (size_t x = k; x < n; x++)
        if (strcmp(a[x], b[o++]) != 0)
            return false;
    return true;
}

static bool g_order(const llmc_guard_q_t *a, const llmc_guard_q_t *b, char *why)
{
    enum { MAXSEQ = 48 };
    const char *sa[MAXSEQ], *sb[MAXSEQ];
    if (same_sequence(a, b))
        return true;
    size_t na = content_seq(a, sa, MAXSEQ), nb = content_seq(b, sb, MAXSEQ);
    if (na > MAXSEQ || nb > MAXSEQ)
        return WHY("too many words to look for a moved phrase");
    if (na != nb)
        return WHY("a content word repeated on one side only");
    for (size_t i = 0; i < na; i++)
        for (size_t j = i + 1; j < na; j++)
            for (size_t k = j + 1; k <= na; k++)
                if (swapped_equal(sa, sb, na, i, j, k))
                    return true;
    return WHY("words in another order");
}

static const char *const guard_names[LLMC_GUARD_N] = {
#define LLMC_GUARD_NAME(id, nm, what) [LLMC_GUARD_##id] = nm,
    LLMC_GUARD_TABLE(LLMC_GUARD_NAME)
#undef LLMC_GUARD_NAME
};

static const guard_fn guard_fns[LLMC_GUARD_N] = {
    [LLMC_GUARD_NUMBERS] = g_numbers,   [LLMC_GUARD_QUOTES] = g_quotes,
    [LLMC_GUARD_CODE] = g_code,         [LLMC_GUARD_IDENTS] = g_idents,
    [LLMC_GUARD_NEGATION] = g_negation, [LLMC_GUARD_CONTENT] = g_content,
    [LLMC_GUARD_ROLES] = g_roles,       [LLMC_GUARD_ORDER] = g_order,
};

const char *llmc_guard_name(int id)
{
    return id >= 0 && id < LLMC_GUARD_N ? guard_names[id] : "?";
}

bool llmc_guard_one(int id, const llmc_guard_q_t *a, const llmc_guard_q_t *b,
                    char reason[LLMC_GUARD_REASON])
{
    char scratch[LLMC_GUARD_REASON];
    if (id < 0 || id >= LLMC_GUARD_N)
        return false;
    return guard_fns[id](a, b, reason ? reason : scratch);
}

int llmc_guard_check(const llmc_guard_q_t *a, const llmc_guard_q_t *b,
                     char reason[LLMC_GUARD_REASON])
{
    for (int id = 0; id < LLMC_GUARD_N; id++)
        if (!llmc_guard_one(id, a, b, reason))
            return id;
    return -1;
}
