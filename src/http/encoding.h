/*
 * http/encoding.h: content codings on the wire: which one a client's
 * Accept-Encoding asks for, and compressing (and decompressing) a body.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The choice follows RFC 9110 12.5.3: a coding is acceptable when it or
 *   "*" is listed with a q above 0; the highest q wins; on a tie zstd
 *   beats gzip (smaller, faster to decode), and either beats identity
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

#include <stddef.h>

typedef enum llmc_encoding {
    LLMC_ENC_IDENTITY,
    LLMC_ENC_GZIP,
    LLMC_ENC_ZSTD,
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

#endif
