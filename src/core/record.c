/*
 * record.c: the record codec of the disk tier (layout in llmc/record.h).
 *
 * Decisions a newcomer would otherwise get wrong:
 * - Every multi-byte field goes through the ld/st helpers below, byte by
 *   byte, so the format is little-endian on any host and LMDB values, which
 *   are not aligned, are never read through a wider pointer.
 * - Decoding walks the buffer with a cursor that refuses to move past the
 *   end; lengths are compared against what is left before they are used, so
 *   no sum of attacker-chosen lengths can wrap.
 * - Version 3 may hold the body zstd-compressed (header bytes 10-11 say
 *   how, LLMC_RECORD_ZSTD): the body section is then the dictionary id
 *   (u32, 0 for none), the decoded length (u64) and one zstd frame, and the
 *   header's body length is the section's. The checksum covers the stored
 *   bytes, so corruption is found before anything is decompressed.
 * - The decoder builds a llmc_entry_spec_t pointing into the buffer and lets
 *   llmc_entry_new copy it once; only the vector is copied first, because
 *   the floats in the buffer are unaligned.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "llmc/error.h"
#include "llmc/record.h"
#include "llmc/usage.h"
#include "llmc/zdict.h"

#define MAX_STACK_TAGS 16

static void st16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static void st32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void st64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t ld32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t ld64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* First 8 bytes of SHA-256(key || data), as a little-endian u64. */
static int checksum(const llmc_key_t *key, const uint8_t *data, size_t len, uint64_t *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, key->b, LLMC_KEY_LEN) &&
             EVP_DigestUpdate(ctx, data, len) && EVP_DigestFinal_ex(ctx, md, NULL);
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return LLMC_ENOMEM;
    *out = ld64(md);
    return 0;
}

static uint32_t tags_len(const llmc_entry_t *e)
{
    uint32_t n = 0;
    const char *t = llmc_entry_tag(e, 0);
    for (uint32_t i = 0; i < e->ntags; i++) {
        size_t len = strlen(t);
        n += 4 + (uint32_t)len + 1;
        t += len + 1;
    }
    return n;
}

static size_t size_with_body(const llmc_entry_t *e, uint64_t body_bytes)
{
    /* An entry's strings and tags are bounded (llmc/entry.h), far below the
       format's 32-bit lengths; only the body and vector can be large. */
    size_t ct = strlen(llmc_entry_content_type(e));
    uint64_t n = LLMC_RECORD_HEADER + (ct + 1) + (strlen(llmc_entry_ns(e)) + 1) +
                 (strlen(llmc_entry_model(e)) + 1) + (strlen(llmc_entry_route(e)) + 1) +
                 tags_len(e) + 4 * (uint64_t)e->dim +
                 body_bytes + LLMC_RECORD_TRAILER;
    return n > SIZE_MAX ? 0 : (size_t)n;
}

size_t llmc_record_size(const llmc_entry_t *e) { return size_with_body(e, e->body_len); }

static uint8_t *put_str(uint8_t *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    p[n] = 0;
    return p + n + 1;
}

/* How the body is stored: as it is, or one zstd frame (plan->z). */
static uint64_t stored_body_len(const llmc_record_plan_t *pl)
{
    return pl->z ? LLMC_RECORD_ZHEAD + (uint64_t)pl->z_len : pl->e->body_len;
}

static void write_header(const llmc_record_plan_t *pl, uint8_t *p)
{
    const llmc_entry_t *e = pl->e;
    memset(p, 0, LLMC_RECORD_HEADER);
    st16(p + 0, LLMC_RECORD_MAGIC);
    st16(p + 2, LLMC_RECORD_VERSION);
    st32(p + 4, e->flags);
    st16(p + 8, e->status);
    st16(p + 10, pl->z ? LLMC_RECORD_ZSTD : 0);
    st32(p + 12, e->ntags);
    st64(p + 16, (uint64_t)e->created_ms);
    st64(p + 24, (uint64_t)e->expires_ms);
    st32(p + 32, (uint32_t)strlen(llmc_entry_content_type(e)));
    st32(p + 36, (uint32_t)strlen(llmc_entry_ns(e)));
    st32(p + 40, (uint32_t)strlen(llmc_entry_model(e)));
    st32(p + 44, tags_len(e));
    st32(p + 48, e->dim);
    st32(p + 52, (uint32_t)strlen(llmc_entry_route(e)));
    st64(p + 56, stored_body_len(pl));
}

int llmc_record_plan_write(const llmc_record_plan_t *pl, uint8_t *buf, size_t len)
{
    const llmc_entry_t *e = pl->e;
    if (pl->size == 0 || pl->size != len)
        return LLMC_EINVAL;
    write_header(pl, buf);
    uint8_t *p = buf + LLMC_RECORD_HEADER;
    const char *ct = llmc_entry_content_type(e), *ns = llmc_entry_ns(e);
    const char *model = llmc_entry_model(e), *route = llmc_entry_route(e);
    const char *tag = llmc_entry_tag(e, 0);
    const float *vec = llmc_entry_vector(e);
    p = put_str(p, ct, strlen(ct));
    p = put_str(p, ns, strlen(ns));
    p = put_str(p, model, strlen(model));
    p = put_str(p, route, strlen(route));
    for (uint32_t i = 0; i < e->ntags; i++) {
        size_t n = strlen(tag);
        st32(p, (uint32_t)n);
        p = put_str(p + 4, tag, n);
        tag += n + 1;
    }
    for (uint32_t i = 0; i < e->dim; i++) {
        uint32_t bits;
        memcpy(&bits, &vec[i], 4);
        st32(p, bits);
        p += 4;
    }
    if (pl->z) {
        st32(p, pl->dict_id);
        st64(p + 4, e->body_len);
        memcpy(p + LLMC_RECORD_ZHEAD, pl->z, pl->z_len);
        p += LLMC_RECORD_ZHEAD + pl->z_len;
    } else {
        if (e->body_len)
            memcpy(p, e->body, e->body_len);
        p += e->body_len;
    }
    uint64_t sum;
    int rc = checksum(&e->key, buf, (size_t)(p - buf), &sum);
    if (rc)
        return rc;
    st64(p, sum);
    return 0;
}

int llmc_record_write(const llmc_entry_t *e, uint8_t *buf, size_t len)
{
    llmc_record_plan_t pl = { .e = e, .size = llmc_record_size(e) };
    return llmc_record_plan_write(&pl, buf, len);
}

int llmc_record_plan(const llmc_entry_t *e, llmc_record_plan_t *pl)
{
    *pl = (llmc_record_plan_t){ .e = e };
    int rc = llmc_zdict_pack(e->body, e->body_len, &pl->z, &pl->z_len, &pl->dict_id);
    if (rc < 0)
        return rc;
    pl->size = size_with_body(e, stored_body_len(pl));
    if (pl->size == 0) {
        llmc_record_plan_free(pl);
        return LLMC_E2BIG;
    }
    return 0;
}

void llmc_record_plan_free(llmc_record_plan_t *pl)
{
    free(pl->z);
    pl->z = NULL;
}

int llmc_record_encode(const llmc_entry_t *e, uint8_t **out, size_t *len)
{
    size_t n = llmc_record_size(e);
    if (n == 0)
        return LLMC_E2BIG;
    uint8_t *buf = malloc(n);
    if (!buf)
        return LLMC_ENOMEM;
    int rc = llmc_record_write(e, buf, n);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return 0;
}

static bool version_known(uint16_t v)
{
    return v >= LLMC_RECORD_VERSION_MIN && v <= LLMC_RECORD_VERSION;
}

int llmc_record_peek(const uint8_t *buf, size_t len, int64_t *created_ms, int64_t *expires_ms)
{
    if (len < LLMC_RECORD_HEADER + LLMC_RECORD_TRAILER || ld16(buf) != LLMC_RECORD_MAGIC)
        return LLMC_ECORRUPT;
    if (!version_known(ld16(buf + 2)))
        return LLMC_EVERSION;
    *created_ms = (int64_t)ld64(buf + 16);
    *expires_ms = (int64_t)ld64(buf + 24);
    return 0;
}

int llmc_record_peek_dict(const uint8_t *buf, size_t len, uint32_t *dict_id)
{
    int64_t created, expires;
    int rc = llmc_record_peek(buf, len, &created, &expires);
    if (rc)
        return rc;
    /* The body section is the last before the checksum (the layout above):
       its length alone locates it, whatever the strings before it hold. */
    uint16_t v = ld16(buf + 2), enc = ld16(buf + 10);
    uint64_t section = ld64(buf + 56);
    *dict_id = 0;
    if ((v < 3 && enc != 0) || enc > LLMC_RECORD_ZSTD ||
        section > len - LLMC_RECORD_HEADER - LLMC_RECORD_TRAILER)
        return LLMC_ECORRUPT;
    if (enc != LLMC_RECORD_ZSTD)
        return 0;
    if (section < LLMC_RECORD_ZHEAD)
        return LLMC_ECORRUPT;
    *dict_id = ld32(buf + len - LLMC_RECORD_TRAILER - section);
    return 0;
}

/* A read cursor over the variable part; take() fails instead of overrunning. */
typedef struct rd {
    const uint8_t *p;
    size_t left;
} rd_t;

static const uint8_t *take(rd_t *r, uint64_t n)
{
    if (n > r->left)
        return NULL;
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= (size_t)n;
    return p;
}

/* A string of n bytes followed by its NUL, with no NUL inside. */
static const char *take_str(rd_t *r, uint64_t n)
{
    const uint8_t *p = take(r, n + 1);
    if (!p || p[n] != 0 || memchr(p, 0, (size_t)n))
        return NULL;
    return (const char *)p;
}

/* Parses the tag section (exactly len bytes) into tags[0..ntags). */
static int take_tags(rd_t *r, uint32_t len, uint32_t ntags, const char **tags)
{
    rd_t sec = { r->p, 0 };
    if (!take(r, len))
        return LLMC_ECORRUPT;
    sec.left = len;
    for (uint32_t i = 0; i < ntags; i++) {
        const uint8_t *lp = take(&sec, 4);
        if (!lp || !(tags[i] = take_str(&sec, ld32(lp))))
            return LLMC_ECORRUPT;
    }
    return sec.left == 0 ? 0 : LLMC_ECORRUPT;
}

static int take_vector(rd_t *r, uint32_t dim, float **out)
{
    const uint8_t *p = take(r, 4 * (uint64_t)dim);
    if (!p)
        return LLMC_ECORRUPT;
    if (dim == 0)
        return 0;
    float *v = malloc((size_t)dim * sizeof *v);
    if (!v)
        return LLMC_ENOMEM;
    for (uint32_t i = 0; i < dim; i++) {
        uint32_t bits = ld32(p + 4 * (size_t)i);
        memcpy(&v[i], &bits, 4);
    }
    *out = v;
    return 0;
}

/* Checks everything that does not need the variable part. */
static int check_frame(const llmc_key_t *key, const uint8_t *buf, size_t len)
{
    if (len < LLMC_RECORD_HEADER + LLMC_RECORD_TRAILER)
        return LLMC_ECORRUPT;
    size_t body_end = len - LLMC_RECORD_TRAILER;
    uint64_t sum;
    int rc = checksum(key, buf, body_end, &sum);
    if (rc)
        return rc;
    if (sum != ld64(buf + body_end) || ld16(buf) != LLMC_RECORD_MAGIC)
        return LLMC_ECORRUPT;
    if (!version_known(ld16(buf + 2)))
        return LLMC_EVERSION;
    /* Version 1 has no route: its length field was reserved, 0. Before
       version 3 the body's encoding field was reserved, 0, too. */
    uint16_t v = ld16(buf + 2), enc = ld16(buf + 10);
    if ((v < 3 && enc != 0) || enc > LLMC_RECORD_ZSTD || (v == 1 && ld32(buf + 52) != 0))
        return LLMC_ECORRUPT;
    return 0;
}

/* Decompresses a zstd body section (r: exactly the section) into *raw. */
static int take_zbody(rd_t *r, llmc_entry_spec_t *s, char **raw)
{
    const uint8_t *h = take(r, LLMC_RECORD_ZHEAD);
    if (!h)
        return LLMC_ECORRUPT;
    uint32_t dict_id = ld32(h);
    uint64_t raw_len = ld64(h + 4);
    if (raw_len > LLMC_ENTRY_MAX_BODY || llmc_zdict_frame_fits(r->p, r->left, raw_len))
        return LLMC_ECORRUPT;
    /* One spare byte: the buffer is NUL-terminated like an entry body. */
    if (!(*raw = malloc((size_t)raw_len + 1)))
        return LLMC_ENOMEM;
    int rc = llmc_zdict_unpack(dict_id, r->p, r->left, *raw, (size_t)raw_len);
    if (rc)
        return rc;
    (*raw)[raw_len] = 0;
    s->body = *raw;
    s->body_len = (size_t)raw_len;
    return 0;
}

static int decode_into(const uint8_t *buf, size_t len, llmc_entry_spec_t *s,
                       const char **tags, float **vec, char **raw)
{
    rd_t r = { buf + LLMC_RECORD_HEADER, len - LLMC_RECORD_HEADER - LLMC_RECORD_TRAILER };
    if (!(s->content_type = take_str(&r, ld32(buf + 32))) ||
        !(s->ns = take_str(&r, ld32(buf + 36))) ||
        !(s->model = take_str(&r, ld32(buf + 40))) ||
        (ld16(buf + 2) >= 2 && !(s->route = take_str(&r, ld32(buf + 52)))))
        return LLMC_ECORRUPT;
    int rc = take_tags(&r, ld32(buf + 44), s->ntags, tags);
    if (rc == 0)
        rc = take_vector(&r, s->dim, vec);
    if (rc)
        return rc;
    s->vector = *vec;
    s->tags = tags;
    uint64_t body_len = ld64(buf + 56);
    if (body_len != r.left)
        return LLMC_ECORRUPT;
    if (ld16(buf + 10) == LLMC_RECORD_ZSTD)
        return take_zbody(&r, s, raw);
    s->body = (const char *)r.p;
    s->body_len = r.left;
    return 0;
}

int llmc_record_decode(const llmc_key_t *key, const uint8_t *buf, size_t len, llmc_entry_t **out)
{
    const char *stack_tags[MAX_STACK_TAGS], **tags = stack_tags;
    float *vec = NULL;
    char *raw = NULL;
    int rc = check_frame(key, buf, len);
    if (rc)
        return rc;
    llmc_entry_spec_t s = {
        .key = key, .flags = ld32(buf + 4), .status = ld16(buf + 8),
        .ntags = ld32(buf + 12), .created_ms = (int64_t)ld64(buf + 16),
        .expires_ms = (int64_t)ld64(buf + 24), .dim = ld32(buf + 48),
    };
    /* Each tag takes at least 5 bytes and the section lies inside the
       record, so a count the record cannot hold is refused before it sizes
       an allocation. */
    uint32_t tags_bytes = ld32(buf + 44);
    if ((uint64_t)s.ntags * 5 > tags_bytes || tags_bytes > len)
        return LLMC_ECORRUPT;
    if (s.ntags > MAX_STACK_TAGS && !(tags = malloc(s.ntags * sizeof *tags)))
        return LLMC_ENOMEM;
    rc = decode_into(buf, len, &s, tags, &vec, &raw);
    if (rc)
        goto done;
    /* Only entries become records, so one that no entry can hold was not
       written by us. */
    if (!llmc_entry_spec_fits(&s)) {
        rc = LLMC_ECORRUPT;
        goto done;
    }
    /* The token counts are read from the body again rather than kept in
       the record: once per entry read back, and the format stays as it is. */
    llmc_usage_t usage;
    if (llmc_usage_scan(s.body, s.body_len, &usage))
        s.usage = &usage;
    *out = llmc_entry_new(&s);
    if (!*out)
        rc = LLMC_ENOMEM;
done:
    free(raw);
    free(vec);
    if (tags != stack_tags)
        free(tags);
    return rc;
}
