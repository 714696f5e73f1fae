/*
 * llmc/record.h: the on-disk form of one entry (the disk tier's record codec).
 *
 * A record is a fixed little-endian layout, independent of the host:
 *
 *   off  size  field
 *     0   u16  magic 0x524C ("LR" on disk)
 *     2   u16  format version (LLMC_RECORD_VERSION)
 *     4   u32  flags (LLMC_ENTRY_*)
 *     8   u16  status
 *    10   u16  body encoding: 0 as it is, 1 LLMC_RECORD_ZSTD (before version 3: reserved, 0)
 *    12   u32  ntags
 *    16   i64  created_ms
 *    24   i64  expires_ms
 *    32   u32  content_type length   (without its NUL)
 *    36   u32  ns length             (without its NUL)
 *    40   u32  model length          (without its NUL)
 *    44   u32  tags section length   (bytes)
 *    48   u32  dim (vector floats)
 *    52   u32  route length          (without its NUL; version 1: reserved, 0)
 *    56   u64  body section length
 *    64        content_type NUL, ns NUL, model NUL, route NUL (version 2 only),
 *              tags: ntags times (u32 length, bytes, NUL),
 *              vector: dim IEEE-754 floats, little-endian,
 *              body section: the body, or with LLMC_RECORD_ZSTD the dictionary
 *              id (u32, 0: none), the body's length (u64) and one zstd frame
 *   end-8 u64  checksum
 *
 * Version 2 added the route (the endpoint an answer was stored for, which
 * purges select by). Version 1 records still decode, with no route: the
 * field that holds its length was reserved and 0 there, so both versions
 * share one decoder. Version 3 added the body encoding (compression at
 * rest, llmc/zdict.h); records are always written as version 3, and
 * versions 1 and 2 still decode.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - The checksum is the first 8 bytes of SHA-256 over the 32-byte cache key
 *   followed by every record byte before the checksum. Hashing the key in
 *   means a record that ends up under another key (a bug, a hand edit) fails
 *   to decode instead of answering the wrong question.
 * - The checksum trailer is the same in every format version and is checked
 *   before anything else, so a damaged byte anywhere (the version field
 *   included) reads as LLMC_ECORRUPT, and only an intact record written by
 *   another format version reads as LLMC_EVERSION.
 * - Strings are stored with their NUL so that decoding can point into the
 *   buffer; a string holding a NUL of its own is corrupt, since an entry's
 *   strings are C strings.
 * - Decoding never trusts a length: every one is checked against the bytes
 *   that are left, in 64-bit arithmetic, and the sections must add up to the
 *   buffer's length exactly.
 */
#ifndef LLMC_RECORD_H
#define LLMC_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "llmc/entry.h"

#define LLMC_RECORD_MAGIC   0x524Cu
#define LLMC_RECORD_VERSION 3u    /* what is written */
#define LLMC_RECORD_VERSION_MIN 1u  /* the oldest that still decodes */
#define LLMC_RECORD_HEADER  64u   /* fixed header bytes */
#define LLMC_RECORD_TRAILER 8u    /* checksum bytes */
#define LLMC_RECORD_ZSTD    1u    /* header bytes 10-11: the body is a zstd frame */
#define LLMC_RECORD_ZHEAD   12u   /* before that frame: dictionary id u32, length u64 */

/*
 * A record about to be written, with its body compressed at rest when the
 * options say so (llmc/zdict.h): llmc_record_plan compresses once, size is
 * the record's length, llmc_record_plan_write encodes it into exactly that
 * many bytes (an LMDB reservation), llmc_record_plan_free frees the frame.
 * The entry must outlive the plan. Any thread; the disk tier's writer calls
 * it, never the event loop.
 */
typedef struct llmc_record_plan {
    const llmc_entry_t *e;
    uint8_t *z;           /* the compressed body, or NULL: stored as it is */
    size_t z_len;
    uint32_t dict_id;     /* dictionary of z; 0: none */
    size_t size;          /* the whole record's bytes */
} llmc_record_plan_t;

int llmc_record_plan(const llmc_entry_t *e, llmc_record_plan_t *pl);
int llmc_record_plan_write(const llmc_record_plan_t *pl, uint8_t *buf, size_t len);
void llmc_record_plan_free(llmc_record_plan_t *pl);

/*
 * Returns the exact size of e's record, or 0 when it would not fit in a
 * size_t (possible only on a 32-bit host: an entry's limits in llmc/entry.h
 * keep every length within the format's). Any thread.
 */
size_t llmc_record_size(const llmc_entry_t *e);

/*
 * Writes e's record into buf, which must be exactly llmc_record_size(e)
 * bytes (len). Returns 0 or LLMC_EINVAL when len is not that size. Lets the
 * disk tier encode straight into space LMDB reserved. Any thread.
 */
int llmc_record_write(const llmc_entry_t *e, uint8_t *buf, size_t len);

/*
 * Encodes e into a new malloc'd buffer (*out, *len), owned by the caller.
 * Returns 0, LLMC_ENOMEM or LLMC_E2BIG (see llmc_record_size). Any thread.
 */
int llmc_record_encode(const llmc_entry_t *e, uint8_t **out, size_t *len);

/*
 * Decodes the record buf[0..len) stored under key into a new entry (*out,
 * refcnt 1, owned by the caller). buf need not be aligned and is not kept.
 * Returns 0; LLMC_ECORRUPT when the record is truncated, its checksum does
 * not match, or any length or field is inconsistent; LLMC_EVERSION for an
 * intact record of a version this code does not read; LLMC_ENOMEM. Never reads outside
 * buf, whatever its bytes. Any thread.
 */
int llmc_record_decode(const llmc_key_t *key, const uint8_t *buf, size_t len, llmc_entry_t **out);

/*
 * Reads created_ms and expires_ms from a record's header without checking
 * the checksum (the disk tier uses it to find a record's index entries,
 * and must be able to remove those even for a damaged record). Returns 0,
 * LLMC_ECORRUPT when buf is too short or has the wrong magic, or
 * LLMC_EVERSION for a version outside LLMC_RECORD_VERSION_MIN..VERSION.
 * Any thread.
 */
int llmc_record_peek(const uint8_t *buf, size_t len, int64_t *created_ms, int64_t *expires_ms);

/*
 * Reads the id of the dictionary a record's body was compressed with
 * (*dict_id; 0: none, the body stored as it is or plain zstd, or a version
 * before 3) without checking the checksum: the disk tier's census of the
 * dictionaries its records use (llmc/zdict.h) reads it from every record,
 * where checksums would hash the whole file. Every record llmc_record_decode
 * takes peeks to 0 with the id it decodes with. Returns 0, LLMC_ECORRUPT
 * (as llmc_record_peek, or an encoding or body section length the record
 * cannot hold) or LLMC_EVERSION (as llmc_record_peek). Never reads outside
 * buf. Any thread.
 */
int llmc_record_peek_dict(const uint8_t *buf, size_t len, uint32_t *dict_id);

#endif
