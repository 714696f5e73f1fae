/*
 * fuzz_record.c: libFuzzer driver for the record decoder (llmc_record_decode).
 *
 * Build and run (from the repository root; see fuzz/README-record.md):
 *   mkdir -p build/fuzz
 *   clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *         -Iinclude -Isrc fuzz/fuzz_record.c src/core/record.c src/core/entry.c \
 *         src/core/error.c -lcrypto -o build/fuzz/fuzz_record
 *   build/fuzz/fuzz_record -max_total_time=60 build/fuzz/corpus-record fuzz/corpus/record
 *
 * Input: one mode byte, then the record. A record's checksum covers the
 * key and every byte, so random bytes almost never get past it; with bit 0
 * of the mode set, the driver reseals the record (writes the right checksum
 * over its last 8 bytes) so that the fuzzer also explores the length and
 * string checks behind it. The key is fixed: the seeds are encoded with it.
 *
 * Every input must decode to 0, LLMC_ECORRUPT, LLMC_EVERSION or
 * LLMC_ENOMEM, and a decoded entry must re-encode to the same bytes. The
 * dictionary peek (llmc_record_peek_dict) reads every input too, and must
 * answer 0 for each record that decodes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "llmc/error.h"
#include "llmc/record.h"

static void fixed_key(llmc_key_t *k)
{
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        k->b[i] = (uint8_t)(0xA0 + i);
}

static void reseal(const llmc_key_t *k, uint8_t *buf, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(ctx, k->b, LLMC_KEY_LEN) ||
        !EVP_DigestUpdate(ctx, buf, len - LLMC_RECORD_TRAILER) ||
        !EVP_DigestFinal_ex(ctx, md, NULL))
        abort();
    EVP_MD_CTX_free(ctx);
    memcpy(buf + len - LLMC_RECORD_TRAILER, md, LLMC_RECORD_TRAILER);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llmc_key_t key;
    llmc_entry_t *e = NULL;
    if (size < 1)
        return 0;
    fixed_key(&key);
    size_t len = size - 1;
    /* An exact-size copy, so that ASan catches a read past the end. */
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, len);
    if ((data[0] & 1) && len >= LLMC_RECORD_TRAILER)
        reseal(&key, buf, len);
    int rc = llmc_record_decode(&key, buf, len, &e);
    if (rc != 0 && rc != LLMC_ECORRUPT && rc != LLMC_EVERSION && rc != LLMC_ENOMEM)
        abort();
    /* The dictionary census reads every record's dictionary id this way,
       unchecked: it must stay inside the buffer, and a record that decodes
       must peek (this process has no dictionary, so it names none). */
    uint32_t dict_id;
    int pk = llmc_record_peek_dict(buf, len, &dict_id);
    if ((pk != 0 && pk != LLMC_ECORRUPT && pk != LLMC_EVERSION) ||
        (rc == 0 && (pk != 0 || dict_id != 0)))
        abort();
    if (rc == 0) {
        /* A record of the current version encodes back to its own bytes;
           an older one (still read) is written in the current version,
           which must decode to an entry that encodes to the same bytes. */
        uint16_t version = (uint16_t)(buf[2] | buf[3] << 8);
        uint8_t *again;
        size_t again_len;
        if (llmc_record_encode(e, &again, &again_len) != 0)
            abort();
        /* LLMC_ENTRY_USAGE is derived (an entry has it when it holds token
           counts) and LLMC_ENTRY_PACKED is the memory tier's alone
           (llmc_entry_pack), never taken from a record: a record that
           claims either encodes back without it. */
        const uint8_t derived = LLMC_ENTRY_USAGE | LLMC_ENTRY_PACKED;
        if (buf[4] & derived) {
            buf[4] &= (uint8_t)~derived;
            reseal(&key, buf, len);
        }
        if (version == LLMC_RECORD_VERSION && (again_len != len || memcmp(again, buf, len) != 0))
            abort();
        if (version != LLMC_RECORD_VERSION) {
            llmc_entry_t *e2 = NULL;
            uint8_t *third;
            size_t third_len;
            if (llmc_record_decode(&key, again, again_len, &e2) != 0 ||
                e2->body_len != e->body_len || memcmp(e2->body, e->body, e->body_len) != 0 ||
                llmc_record_encode(e2, &third, &third_len) != 0 || third_len != again_len ||
                memcmp(third, again, again_len) != 0)
                abort();
            free(third);
            llmc_entry_unref(e2);
        }
        free(again);
        llmc_entry_unref(e);
    }
    free(buf);
    return 0;
}
