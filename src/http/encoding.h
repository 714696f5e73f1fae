/*
 * http/encoding.h: content codings on the wire: which one a client's
 * Accept-Encoding asks for, and compressing (and decompressing) a body.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The choice follows RFC 9110 12.5.3: a coding is acceptable when it or
 *   "*" is listed with a q above 0; the highest q wins; on a tie zstd
 *   beats br, and br beats gzip (zstd is the smallest of the three on the
 *   answers we hold at the levels we use and the fastest to decode; br is
 *   smaller than gzip), and any beats identity
 *   unless identity is listed with a higher q. "x-gzip" is gzip. Anything
 *   malformed counts as not listed, so a bad header gets identity, never
 *   an error.
 * - Compression happens once per entry (respond.c keeps the result as a
 *   derived entry), so the levels favour size over speed.
 * - gzip is the gzip format (RFC 1952), not raw deflate or zlib's: what
 *   "Content-Encoding: gzip" means to every client.
 */
#ifndef LLMC_GW_ENCODING_H
#define LLMC_GW_ENCODING_H

#include <stdbool.h>
#include <stddef.h>

typedef enum llmc_encoding {
    LLMC_ENC_IDENTITY,
    LLMC_ENC_GZIP,
    LLMC_ENC_ZSTD,
    LLMC_ENC_BR,        /* Brotli (RFC 7932) */
    LLMC_ENC_N
} llmc_encoding_t;

#define LLMC_ENC_MASK(e) (1u << (e))

/* The coding's token as Content-Encoding names it ("gzip", "zstd"; "identity"). */
const char *llmc_encoding_name(llmc_encoding_t enc);

/* The coding the Accept-Encoding value accept (NULL: header absent) asks
   for among those in mask (LLMC_ENC_MASK bits); LLMC_ENC_IDENTITY when
   none. Pure; any thread. */
llmc_encoding_t llmc_encoding_pick(const char *accept, unsigned mask);

/* Compresses in[0..len) with enc into a malloc'd *out (the caller frees
   it). 0, LLMC_EINVAL for identity or an unknown coding, LLMC_ENOMEM, or
   LLMC_EIO when the library fails. Any thread. */
int llmc_encoding_encode(llmc_encoding_t enc, const char *in, size_t len, char **out,
                         size_t *out_len);

/* Decompresses in[0..len) coded with enc into a malloc'd *out of at most
   max bytes. 0, LLMC_EINVAL, LLMC_ENOMEM, LLMC_E2BIG past max, or
   LLMC_ECORRUPT for bytes that are not a whole stream of that coding. */
int llmc_encoding_decode(llmc_encoding_t enc, const char *in, size_t len, size_t max,
                         char **out, size_t *out_len);

/*
 * A streaming encoder: one per streamed answer (an SSE relay or replay).
 * Each write compresses its bytes and flushes (gzip Z_SYNC_FLUSH, zstd
 * ZSTD_e_flush, br BROTLI_OPERATION_FLUSH), so that everything written so
 * far can be decoded from what it returned: a client's decoder hands each
 * event on as it arrives instead of waiting for a block to fill. The last
 * write ends the stream (its trailer). Levels are lower than for a form
 * built once: this work is paid per client and per event.
 */
typedef struct llmc_encoder llmc_encoder_t;

/* A new encoder for enc (not identity), or NULL when out of memory or enc
   is not a coding. Any thread; one thread at a time per encoder. */
llmc_encoder_t *llmc_encoder_new(llmc_encoding_t enc);
/* Compresses in[0..len), flushed (ended when last), into a malloc'd *out
   of *out_len bytes (NULL and 0 when nothing came out). 0, LLMC_ENOMEM,
   LLMC_EIO, or LLMC_EINVAL after the last write. */
int llmc_encoder_write(llmc_encoder_t *z, const char *in, size_t len, bool last, char **out,
                       size_t *out_len);
void llmc_encoder_free(llmc_encoder_t *z);

#endif
