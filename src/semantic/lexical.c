/*
 * semantic/lexical.c: the lexical embedder (see lexical.h).
 *
 * text --utf8proc NFKC_Casefold--> folded --split--> raw tokens
 *      --contractions, number words, spelling--> canonical words --Snowball--> stems
 *      --fillers marked--> tokens --hashed n-grams--> vector
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Canonicalisation happens on the tokens, before anything is hashed or
 *   compared, so the embedder and the guards agree on what a word is:
 *   "what's" is "what is", "colours" is "colors", "two" is "2". The British
 *   spellings are matched as word prefixes ("organis" -> "organiz" covers
 *   organise, organised, organising, organisation); both questions go
 *   through the same table, so a prefix that also catches an American word
 *   maps it the same way on both sides and never splits a pair.
 * - Fillers are marked, not dropped: the guards still see them (a role
 *   marker like "to" is never a filler) and the embedder skips them.
 *   Multi-word fillers ("can you", "tell me") are a phrase table, because
 *   "you" alone is not a filler ("what do you think" is not "what do I think").
 * - Feature hashing is signed (the top bit picks +1 or -1), so unrelated
 *   texts score near 0 instead of a positive floor; the hash is seeded and
 *   fixed, so a vector computed today matches one stored last year.
 * - Character 3/4-grams of each word are weighted by 1/sqrt(count), so a
 *   long word does not outweigh the word unigrams; they make typos and
 *   inflections the stemmer misses land close.
 * - Apostrophes are ' U+2019 U+02BC alike, inside a word only; '.' and ','
 *   between digits stay in the number ("3.5", "1,000" -> "1000").
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <libstemmer.h>
#include <utf8proc.h>

#include "llmc/error.h"
#include "semantic/lexical.h"

struct llmc_lex {
    struct sb_stemmer *stem;
};

#define LEX_SEED 0x6c6c6d6373656d31ull /* "llmcsem1": changing it changes every vector */

/* ---- tables --------------------------------------------------------------------- */

static const char *const fillers[] = {
    "a", "an", "the", "please", "pls", "plz", "kindly", "hey", "hi", "hello", "just", "really",
    "actually", "basically", "quickly", "simply", "um", "uh", "ok", "okay", "thanks", "thank", "me", "is", "are", "am", "be", "do", "does", "of",
};

/* Phrases whose every word is a filler where they occur together. */
static const char *const filler_phrases[][5] = {
    {"can", "you"}, {"could", "you"}, {"would", "you"}, {"will", "you"}, {"can", "u"},
    {"do", "you", "know"}, {"tell", "me"}, {"let", "me", "know"}, {"i", "wonder"},
    {"i", "want", "to", "know"}, {"i", "would", "like", "to", "know"}, {"quick", "question"},
    {"help", "me"}, {"i", "need", "to", "know"}, {"thank", "you"}, {"ok", "so"}, {"okay", "so"},
};

static const char *const negations[] = {
    "not", "no", "never", "without", "none", "nothing", "nobody", "neither", "nor", "nowhere",
};

/* Bases before 's that make it "is" ("what's"); after any other word 's is
   a possessive and goes ("france's" -> "france"). */
static const char *const is_bases[] = {
    "what", "that", "it", "there", "here", "who", "where", "how", "when", "why", "she", "he",
    "this", "which", "everything", "nothing", "something", "let",
};

static const struct { const char *from, *to; } number_words[] = {
    {"zero", "0"}, {"two", "2"}, {"three", "3"}, {"four", "4"}, {"five", "5"}, {"six", "6"},
    {"seven", "7"}, {"eight", "8"}, {"nine", "9"}, {"ten", "10"}, {"eleven", "11"},
    {"twelve", "12"}, {"thirteen", "13"}, {"fourteen", "14"}, {"fifteen", "15"},
    {"sixteen", "16"}, {"seventeen", "17"}, {"eighteen", "18"}, {"nineteen", "19"},
    {"twenty", "20"}, {"thirty", "30"}, {"forty", "40"}, {"fifty", "50"}, {"hundred", "100"},
    {"thousand", "1000"}, {"million", "1000000"}, {"billion", "1000000000"},
    /* Not "second": "wait one second" is a unit, not an ordinal. */
    {"first", "1st"}, {"third", "3rd"}, {"fourth", "4th"}, {"fifth", "5th"},
    {"sixth", "6th"}, {"seventh", "7th"}, {"eighth", "8th"}, {"ninth", "9th"}, {"tenth", "10th"},
};

/* British prefix -> American prefix; never longer (rewritten in place). */
static const struct { const char *gb, *us; } spellings[] = {
    {"colour", "color"}, {"favour", "favor"}, {"honour", "honor"}, {"neighbour", "neighbor"},
    {"behaviour", "behavior"}, {"flavour", "flavor"}, {"humour", "humor"}, {"labour", "labor"},
    {"rumour", "rumor"}, {"harbour", "harbor"}, {"vapour", "vapor"}, {"armour", "armor"},
    {"centre", "center"}, {"theatre", "theater"}, {"metre", "meter"}, {"litre", "liter"},
    {"fibre", "fiber"}, {"kilometre", "kilometer"}, {"centimetre", "centimeter"},
    {"millimetre", "millimeter"}, {"calibre", "caliber"}, {"tyre", "tire"},
    {"defence", "defense"}, {"licence", "license"}, {"offence", "offense"},
    {"catalogue", "catalog"}, {"dialogue", "dialog"}, {"analogue", "analog"},
    {"programme", "program"}, {"aluminium", "aluminum"}, {"grey", "gray"},
    {"judgement", "judgment"}, {"ageing", "aging"}, {"artefact", "artifact"},
    {"travell", "travel"}, {"cancell", "cancel"}, {"modell", "model"}, {"labell", "label"},
    {"levell", "level"}, {"signall", "signal"}, {"fuell", "fuel"}, {"jewell", "jewel"},
    {"analys", "analyz"}, {"paralys", "paralyz"}, {"catalys", "catalyz"},
    {"organis", "organiz"}, {"optimis", "optimiz"}, {"realis", "realiz"}, {"recognis", "recogniz"},
    {"normalis", "normaliz"}, {"initialis", "initializ"}, {"serialis", "serializ"},
    {"customis", "customiz"}, {"summaris", "summariz"}, {"apologis", "apologiz"},
    {"capitalis", "capitaliz"}, {"minimis", "minimiz"}, {"maximis", "maximiz"},
    {"prioritis", "prioritiz"}, {"authoris", "authoriz"}, {"visualis", "visualiz"},
    {"utilis", "utiliz"}, {"standardis", "standardiz"}, {"synchronis", "synchroniz"},
    {"categoris", "categoriz"}, {"emphasis", "emphasiz"}, {"memoris", "memoriz"},
    {"localis", "localiz"}, {"finalis", "finaliz"}, {"tokenis", "tokeniz"},
    {"parallelis", "paralleliz"}, {"virtualis", "virtualiz"}, {"specialis", "specializ"},
    {"criticis", "criticiz"}, {"characteris", "characteriz"}, {"stabilis", "stabiliz"},
    {"paediatric", "pediatric"}, {"anaesthe", "anesthe"}, {"oestrogen", "estrogen"},
    {"manoeuvr", "maneuver"}, {"plough", "plow"}, {"mould", "mold"}, {"sceptic", "skeptic"},
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Whether a and b are the same word. The first byte decides most table
   probes without a call: each word is compared with a hundred table
   entries or more, which was half the embedding's time. */
static inline bool same(const char *a, const char *b)
{
    return a[0] == b[0] && strcmp(a, b) == 0;
}

static bool in_list(const char *const *list, size_t n, const char *w)
{
    for (size_t i = 0; i < n; i++)
        if (same(list[i], w))
            return true;
    return false;
}

/* ---- hashing -------------------------------------------------------------------- */

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t hash_kind(unsigned kind)
{
    return fnv(0xcbf29ce484222325ull ^ LEX_SEED, &kind, sizeof(kind));
}

/* ---- tokens --------------------------------------------------------------------- */

/* Copies n bytes of s into a token field, keeping a hash of the whole when
   it must cut (see LLMC_LEX_TOKMAX). */
static void set_field(char *dst, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (n < LLMC_LEX_TOKMAX) {
        memcpy(dst, s, n);
        dst[n] = '\0';
        return;
    }
    uint64_t h = mix64(fnv(LEX_SEED, s, n));
    size_t keep = LLMC_LEX_TOKMAX - 10;
    memcpy(dst, s, keep);
    dst[keep] = '#';
    for (int i = 0; i < 8; i++)
        dst[keep + 1 + i] = hex[(h >> (4 * i)) & 15];
    dst[keep + 9] = '\0';
}

static int push_word(llmc_lex_t *lx, llmc_lex_toks_t *out, const char *w, size_t n, uint8_t sym)
{
    char buf[LLMC_LEX_MAX_TEXT + 1];
    llmc_lex_tok_t *t;

    if (n == 0)
        return 0;
    if (n > LLMC_LEX_MAX_TEXT)
        return LLMC_E2BIG;
    memcpy(buf, w, n);
    buf[n] = '\0';
    for (size_t i = 0; i < NELEM(number_words); i++)
        if (same(buf, number_words[i].from)) {
            n = strlen(number_words[i].to);
            memcpy(buf, number_words[i].to, n + 1);
            break;
        }
    for (size_t i = 0; i < NELEM(spellings); i++) {
        if (buf[0] != spellings[i].gb[0])
            continue;
        size_t gl = strlen(spellings[i].gb), ul = strlen(spellings[i].us);
        if (n >= gl && memcmp(buf, spellings[i].gb, gl) == 0) {
            memcpy(buf, spellings[i].us, ul);
            memmove(buf + ul, buf + gl, n - gl + 1);
            n -= gl - ul;
            break;
        }
    }
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 32;
        llmc_lex_tok_t *v = realloc(out->v, cap * sizeof(*v));
        if (!v)
            return LLMC_ENOMEM;
        out->v = v;
        out->cap = cap;
    }
    t = &out->v[out->n];
    memset(t, 0, sizeof(*t));
    set_field(t->word, buf, n);
    t->flags = sym ? LLMC_LEX_SYM : 0;
    if (strpbrk(buf, "0123456789"))
        t->flags |= LLMC_LEX_NUM;
    if (t->flags & (LLMC_LEX_NUM | LLMC_LEX_SYM)) {
        set_field(t->stem, buf, n);
    } else {
        const sb_symbol *s = sb_stemmer_stem(lx->stem, (const sb_symbol *)buf, (int)n);
        if (!s)
            return LLMC_ENOMEM;
        set_field(t->stem, (const char *)s, (size_t)sb_stemmer_length(lx->stem));
    }
    if (in_list(fillers, NELEM(fillers), buf))
        t->flags |= LLMC_LEX_FILLER;
    if (in_list(negations, NELEM(negations), buf))
        t->flags |= LLMC_LEX_NEG;
    out->n++;
    return 0;
}

/* One raw token (apostrophes already plain '): contractions expanded, then
   pushed as one or two words. */
static int push_raw(llmc_lex_t *lx, llmc_lex_toks_t *out, char *w, size_t n)
{
    static const struct { const char *suffix, *word; } tails[] = {
        {"re", "are"}, {"m", "am"}, {"ll", "will"}, {"ve", "have"}, {"d", "would"},
    };
    static const struct { const char *base, *word; } nt_bases[] = {
        {"ca", "can"}, {"wo", "will"}, {"sha", "shall"}, {"ai", "is"},
    };
    char *apos = memrchr(w, '\'', n);
    int rc;

    if (n == 6 && memcmp(w, "cannot", 6) == 0) {
        if ((rc = push_word(lx, out, "can", 3, 0)) < 0)
            return rc;
        return push_word(lx, out, "not", 3, 0);
    }
    if (!apos)
        return push_word(lx, out, w, n, 0);

    size_t bl = (size_t)(apos - w), sl = n - bl - 1;
    const char *suffix = apos + 1, *second = NULL;
    /* Other apostrophes in the base ("o'clock") just go. */
    size_t k = 0;
    for (size_t i = 0; i < bl; i++)
        if (w[i] != '\'')
            w[k++] = w[i];
    bl = k;
    w[bl] = '\0';

    if (sl == 1 && suffix[0] == 't' && bl > 0 && w[bl - 1] == 'n') {
        bl--;
        w[bl] = '\0';
        second = "not";
        for (size_t i = 0; i < NELEM(nt_bases); i++)
            if (same(w, nt_bases[i].base)) {
                if ((rc = push_word(lx, out, nt_bases[i].word, strlen(nt_bases[i].word), 0)) < 0)
                    return rc;
                return push_word(lx, out, "not", 3, 0);
            }
    } else if (sl == 1 && suffix[0] == 's') {
        second = in_list(is_bases, NELEM(is_bases), w) ? "is" : NULL;
    } else {
        for (size_t i = 0; i < NELEM(tails); i++)
            if (strlen(tails[i].suffix) == sl && memcmp(suffix, tails[i].suffix, sl) == 0)
                second = tails[i].word;
        if (!second) {
            /* Not a contraction: the apostrophe goes, the word stays whole. */
            memmove(w + bl, suffix, sl);
            bl += sl;
        }
    }
    if ((rc = push_word(lx, out, w, bl, 0)) < 0)
        return rc;
    return second ? push_word(lx, out, second, strlen(second), 0) : 0;
}

static bool is_wordcp(utf8proc_int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return true;
    default:
        return false;
    }
}

static bool is_apos(utf8proc_int32_t c)
{
    return c == '\'' || c == 0x2019 || c == 0x02bc;
}

static bool is_digitcp(utf8proc_int32_t c)
{
    return c >= 0 && utf8proc_category(c) == UTF8PROC_CATEGORY_ND;
}

/* Marks the words of filler phrases; "the second" is the ordinal "2nd"
   (alone, "second" is as often a unit: "wait one second"). */
static void mark_phrases(llmc_lex_toks_t *t)
{
    for (size_t i = 1; i < t->n; i++)
        if (same(t->v[i].word, "second") && same(t->v[i - 1].word, "the")) {
            strcpy(t->v[i].word, "2nd");
            strcpy(t->v[i].stem, "2nd");
            t->v[i].flags |= LLMC_LEX_NUM;
        }
    for (size_t i = 0; i < t->n; i++)
        for (size_t p = 0; p < NELEM(filler_phrases); p++) {
            size_t len = 0;
            while (len < 5 && filler_phrases[p][len])
                len++;
            if (i + len > t->n)
                continue;
            size_t j = 0;
            while (j < len && same(t->v[i + j].word, filler_phrases[p][j]))
                j++;
            if (j == len)
                for (j = 0; j < len; j++)
                    t->v[i + j].flags |= LLMC_LEX_FILLER;
        }
}

int llmc_lex_tokenize(llmc_lex_t *lx, const char *text, size_t len, llmc_lex_toks_t *out)
{
    utf8proc_uint8_t *folded = NULL;
    utf8proc_ssize_t fl;
    char *raw = NULL;
    size_t rn = 0;
    int rc = 0;

    out->n = 0;
    if (len > LLMC_LEX_MAX_TEXT)
        return LLMC_E2BIG;
    if (len == 0)
        return 0;
    fl = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &folded,
                      UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT | UTF8PROC_CASEFOLD |
                          UTF8PROC_IGNORE);
    if (fl < 0)
        return fl == UTF8PROC_ERROR_NOMEM ? LLMC_ENOMEM : LLMC_EINVAL;
    raw = malloc((size_t)fl + 1);
    if (!raw) {
        rc = LLMC_ENOMEM;
        goto done;
    }
    utf8proc_int32_t prev = -1;
    for (utf8proc_ssize_t i = 0; i < fl;) {
        utf8proc_int32_t c, next = -1;
        utf8proc_ssize_t n = utf8proc_iterate(folded + i, fl - i, &c);
        if (n <= 0) {
            rc = LLMC_EINVAL;
            goto done;
        }
        if (i + n < fl)
            (void)utf8proc_iterate(folded + i + n, fl - i - n, &next);
        bool inword = rn > 0;
        if (is_wordcp(c)) {
            memcpy(raw + rn, folded + i, (size_t)n);
            rn += (size_t)n;
        } else if (inword && is_apos(c) && next >= 0 && is_wordcp(next) && !is_digitcp(prev)) {
            raw[rn++] = '\'';
        } else if (inword && c == '.' && is_digitcp(prev) && is_digitcp(next)) {
            raw[rn++] = '.';
        } else if (inword && c == ',' && is_digitcp(prev) && is_digitcp(next)) {
            /* A thousands separator: "1,000" is "1000". */
        } else {
            if (rn && (rc = push_raw(lx, out, raw, rn)) < 0)
                goto done;
            rn = 0;
            if (c == '%' || c == '$' || c == 0x20ac || c == 0xa3 || c == 0xb0) {
                if ((rc = push_word(lx, out, (const char *)folded + i, (size_t)n, 1)) < 0)
                    goto done;
            }
        }
        prev = c;
        i += n;
    }
    if (rn && (rc = push_raw(lx, out, raw, rn)) < 0)
        goto done;
    mark_phrases(out);
done:
    free(raw);
    free(folded);
    if (rc < 0)
        out->n = 0;
    return rc;
}

void llmc_lex_toks_free(llmc_lex_toks_t *t)
{
    free(t->v);
    *t = (llmc_lex_toks_t){0};
}

int llmc_lex_stem(llmc_lex_t *lx, const char *word, char *out)
{
    const sb_symbol *s = sb_stemmer_stem(lx->stem, (const sb_symbol *)word, (int)strlen(word));
    if (!s)
        return LLMC_ENOMEM;
    set_field(out, (const char *)s, (size_t)sb_stemmer_length(lx->stem));
    return 0;
}

/* ---- vectors -------------------------------------------------------------------- */

static void add(float *vec, uint64_t h, float w)
{
    h = mix64(h);
    vec[h & (LLMC_LEX_DIM - 1)] += (h >> 63) ? -w : w;
}

_Static_assert((LLMC_LEX_DIM & (LLMC_LEX_DIM - 1)) == 0, "LLMC_LEX_DIM is a power of two");

/* Character 3- and 4-grams of "\2word\3", weighted 1/sqrt(count) in all. */
static int add_chars(float *vec, const char *word)
{
    char b[LLMC_LEX_TOKMAX + 2];
    size_t n = strlen(word), count = 0;

    b[0] = '\2';
    memcpy(b + 1, word, n);
    b[n + 1] = '\3';
    n += 2;
    for (size_t g = 3; g <= 4; g++)
        if (n >= g)
            count += n - g + 1;
    if (!count)
        return 0;
    float w = 0.6f / sqrtf((float)count);
    for (size_t g = 3; g <= 4; g++)
        for (size_t i = 0; i + g <= n; i++)
            add(vec, fnv(hash_kind((unsigned)g), b + i, g), w);
    return (int)count;
}

int llmc_lex_embed(llmc_lex_t *lx, const char *text, size_t len, float *vec)
{
    llmc_lex_toks_t t = {0};
    const char *prev = NULL;
    int rc, nfeat = 0;

    memset(vec, 0, LLMC_LEX_DIM * sizeof(*vec));
    if ((rc = llmc_lex_tokenize(lx, text, len, &t)) < 0)
        goto done;
    for (size_t i = 0; i < t.n; i++) {
        const llmc_lex_tok_t *k = &t.v[i];
        if (k->flags & LLMC_LEX_FILLER)
            continue;
        add(vec, fnv(hash_kind(1), k->stem, strlen(k->stem)), 1.0f);
        nfeat++;
        if (prev) {
            uint64_t h = fnv(hash_kind(2), prev, strlen(prev) + 1); /* the NUL separates */
            add(vec, fnv(h, k->stem, strlen(k->stem)), 0.5f);
            nfeat++;
        }
        nfeat += add_chars(vec, k->word);
        prev = k->stem;
    }
    double ss = 0;
    for (size_t i = 0; i < LLMC_LEX_DIM; i++)
        ss += (double)vec[i] * vec[i];
    if (ss > 0) {
        float inv = (float)(1.0 / sqrt(ss));
        for (size_t i = 0; i < LLMC_LEX_DIM; i++)
            vec[i] *= inv;
    } else {
        nfeat = 0; /* features that cancelled out entirely compare as nothing */
    }
    rc = nfeat;
done:
    llmc_lex_toks_free(&t);
    return rc;
}

float llmc_lex_dot(const float *a, const float *b, size_t n)
{
    float s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

llmc_lex_t *llmc_lex_new(void)
{
    llmc_lex_t *lx = calloc(1, sizeof(*lx));
    if (!lx)
        return NULL;
    lx->stem = sb_stemmer_new("english", "UTF_8");
    if (!lx->stem) {
        free(lx);
        return NULL;
    }
    return lx;
}

void llmc_lex_free(llmc_lex_t *lx)
{
    if (!lx)
        return;
    sb_stemmer_delete(lx->stem);
    free(lx);
}
