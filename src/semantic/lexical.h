/*
 * semantic/lexical.h: the built-in lexical embedder. A question's text ->
 * canonical tokens -> a fixed-size, L2-normalised vector of hashed word and
 * character n-grams, in microseconds, with no network and no model.
 *
 * The tokens are public too: the guards (semantic/guard.h) compare the
 * canonical words and stems of two questions, so both see one tokeniser.
 * Pure: no server header, no globals, no clock.
 */
#ifndef LLMC_SEMANTIC_LEXICAL_H
#define LLMC_SEMANTIC_LEXICAL_H

#include <stddef.h>
#include <stdint.h>

/* Dimensions of every lexical vector. */
#define LLMC_LEX_DIM 512
/* Bytes kept of one canonical word or stem, NUL included. A longer word
   keeps its first bytes and a hash of the whole, so two long words that
   differ only past the cut never compare equal. */
#define LLMC_LEX_TOKMAX 48
/* Texts longer than this are refused (LLMC_E2BIG): a question this long is
   not one to answer by similarity, and the bound keeps the work small. */
#define LLMC_LEX_MAX_TEXT 8192

enum llmc_lex_flag {
    LLMC_LEX_FILLER = 1u << 0, /* carries no meaning here ("please", "the", "can you") */
    LLMC_LEX_NEG    = 1u << 1, /* a negation ("not", "never", "without"; "n't" becomes "not") */
    LLMC_LEX_NUM    = 1u << 2, /* has a digit (number words are written as digits) */
    LLMC_LEX_SYM    = 1u << 3, /* a symbol kept as a token: % $ € £ ° */
};

typedef struct llmc_lex_tok {
    /* The canonical word: NFKC case-folded, contractions expanded ("what's"
       -> "what" "is"), number words as digits ("two" -> "2", "second" ->
       "2nd"), British spellings as American ("colour" -> "color"). */
    char word[LLMC_LEX_TOKMAX];
    /* The Snowball (english) stem of word; word itself when it has a digit. */
    char stem[LLMC_LEX_TOKMAX];
    uint8_t flags; /* LLMC_LEX_* */
} llmc_lex_tok_t;

/* A growable token list; zero-initialise it, free with llmc_lex_toks_free. */
typedef struct llmc_lex_toks {
    llmc_lex_tok_t *v;
    size_t n, cap;
} llmc_lex_toks_t;

/* An embedder: it owns a Snowball stemmer, which is not thread-safe, so
   each thread uses its own llmc_lex_t. */
typedef struct llmc_lex llmc_lex_t;

/* A new embedder, or NULL when out of memory. Any thread; then used by
   one thread at a time. */
llmc_lex_t *llmc_lex_new(void);
void llmc_lex_free(llmc_lex_t *lx);

/*
 * Tokenises text (UTF-8, len bytes) into out, replacing what it held.
 * 0, LLMC_EINVAL (not valid UTF-8), LLMC_E2BIG (over LLMC_LEX_MAX_TEXT) or
 * LLMC_ENOMEM. out stays the caller's; free it with llmc_lex_toks_free.
 */
int llmc_lex_tokenize(llmc_lex_t *lx, const char *text, size_t len, llmc_lex_toks_t *out);
void llmc_lex_toks_free(llmc_lex_toks_t *t);

/* The Snowball (english) stem of one canonical word into out
   (LLMC_LEX_TOKMAX bytes), as a token's stem would be: for tables of words
   compared against stems. 0 or LLMC_ENOMEM. */
int llmc_lex_stem(llmc_lex_t *lx, const char *word, char *out);

/*
 * Embeds text into vec (LLMC_LEX_DIM floats, written whole). Returns the
 * number of features hashed (>= 0; 0 leaves vec all zeros: nothing to
 * compare, e.g. an empty or all-filler text), or the errors of
 * llmc_lex_tokenize. A vector with features has L2 norm 1.
 */
int llmc_lex_embed(llmc_lex_t *lx, const char *text, size_t len, float *vec);

/* The dot product of two n-float vectors: their cosine when both are
   normalised (0 against an all-zero vector). */
float llmc_lex_dot(const float *a, const float *b, size_t n);

#endif
