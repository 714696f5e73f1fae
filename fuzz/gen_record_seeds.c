/*
 * gen_record_seeds.c: writes the seed corpus of fuzz_record.c from real
 * encodes (fuzz/corpus/record/). Each seed is the driver's mode byte and a
 * record encoded under the driver's fixed key.
 *
 *   make build/libllmc.a
 *   cc -std=c11 -D_GNU_SOURCE -Iinclude -Isrc fuzz/gen_record_seeds.c build/libllmc.a \
 *      -lcrypto -o build/fuzz/gen_record_seeds
 *   build/fuzz/gen_record_seeds fuzz/corpus/record
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmc/record.h"

static int write_seed(const char *dir, const char *name, unsigned mode, const llmc_entry_spec_t *s)
{
    char path[512];
    uint8_t *rec;
    size_t len;
    llmc_entry_t *e = llmc_entry_new(s);
    if (!e || llmc_record_encode(e, &rec, &len) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s-%u", dir, name, mode);
    FILE *f = fopen(path, "wb");
    int ok = f && fputc((int)mode, f) != EOF && fwrite(rec, 1, len, f) == len;
    if (f)
        ok &= fclose(f) == 0;
    free(rec);
    llmc_entry_unref(e);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    llmc_key_t k;
    for (int i = 0; i < LLMC_KEY_LEN; i++)
        k.b[i] = (uint8_t)(0xA0 + i);   /* the driver's fixed key */
    const char *tags[] = { "team-a", "", "release-2" };
    const float vec[] = { 0.25f, -1.5f, 3.0f };
    const char *body = "{\"id\":\"chatcmpl-1\",\"choices\":[{\"message\":{\"content\":\"hi\"}}]}";
    llmc_entry_spec_t full = {
        .key = &k, .status = 200, .flags = 3, .created_ms = 1700000000000LL,
        .expires_ms = 1700000300000LL, .content_type = "application/json", .ns = "tenant",
        .model = "gpt-4o-mini", .tags = tags, .ntags = 3, .vector = vec, .dim = 3,
        .body = body, .body_len = strlen(body),
    };
    llmc_entry_spec_t empty = { .key = &k, .status = 200, .content_type = "", .body = "" };
    llmc_entry_spec_t sse = full;
    sse.content_type = "text/event-stream";
    sse.body = "data: {\"x\":1}\n\ndata: [DONE]\n\n";
    sse.body_len = strlen(sse.body);
    sse.ntags = 0;
    sse.dim = 0;
    if (argc != 2)
        return 2;
    for (unsigned mode = 0; mode < 2; mode++) {
        if (write_seed(argv[1], "full", mode, &full) || write_seed(argv[1], "empty", mode, &empty) ||
            write_seed(argv[1], "sse", mode, &sse)) {
            perror("seed");
            return 1;
        }
    }
    return 0;
}
