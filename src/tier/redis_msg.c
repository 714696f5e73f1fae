/*
 * tier/redis_msg.c: a purge selector on the wire between gateways
 * (tier/redis_int.h), inside the invalidation messages the Redis tier
 * publishes.
 *
 * Every field of llmc_purge_t is written as it is, so that the peer's
 * purge selects exactly what ours did: the condition bits as a number, the
 * key and the key prefix in hex, the age bound in milliseconds, the
 * strings as JSON strings (absent for NULL, which selects nothing). The
 * reader trusts nothing: an unknown bit, a bad digit, a string with a NUL,
 * or a selector with neither a condition nor "all" is refused, so a
 * garbled message can never turn into "purge everything".
 */
#include <string.h>

#include <jansson.h>

#include "tier/redis_int.h"

static void hex_of(const uint8_t *b, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < LLMC_KEY_LEN; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * LLMC_KEY_LEN] = '\0';
}

static int nibble(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int llmc__redis_key_unhex(const char *hex, llmc_key_t *key)
{
    for (size_t i = 0; i < LLMC_KEY_LEN; i++) {
        int hi = nibble(hex[2 * i]), lo = hi < 0 ? -1 : nibble(hex[2 * i + 1]);
        if (lo < 0)
            return -1;
        key->b[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* jansson's *_new calls consume the value even when they fail. */
static int put_str(json_t *o, const char *name, const char *s)
{
    return s ? json_object_set_new(o, name, json_string(s)) : 0;
}

char *llmc__redis_sel_encode(const llmc_purge_t *sel)
{
    char key[2 * LLMC_KEY_LEN + 1], prefix[2 * LLMC_KEY_LEN + 1];
    json_t *o = json_object();
    char *out = NULL;

    if (!o)
        return NULL;
    hex_of(sel->key.b, key);
    hex_of(sel->prefix.b, prefix);
    if (json_object_set_new(o, "all", json_boolean(sel->all)) == 0 &&
        json_object_set_new(o, "conds", json_integer(sel->conds)) == 0 &&
        json_object_set_new(o, "key", json_string(key)) == 0 &&
        json_object_set_new(o, "prefix", json_string(prefix)) == 0 &&
        json_object_set_new(o, "prefix_digits", json_integer(sel->prefix_digits)) == 0 &&
        json_object_set_new(o, "before_ms", json_integer(sel->created_before_ms)) == 0 &&
        put_str(o, "ns", sel->ns) == 0 && put_str(o, "tag", sel->tag) == 0 &&
        put_str(o, "model", sel->model) == 0 && put_str(o, "route", sel->route) == 0)
        out = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return out;
}

/* The string member name of o (NULL when absent); -1 when it is there but
   not a string without NULs. */
static int get_str(const json_t *o, const char *name, const char **out)
{
    const json_t *v = json_object_get(o, name);
    *out = NULL;
    if (!v)
        return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return -1;
    *out = json_string_value(v);
    return 0;
}

static int get_key(const json_t *o, const char *name, llmc_key_t *out)
{
    const json_t *v = json_object_get(o, name);
    if (!json_is_string(v) || json_string_length(v) != 2 * LLMC_KEY_LEN)
        return -1;
    return llmc__redis_key_unhex(json_string_value(v), out);
}

void *llmc__redis_sel_decode(const char *s, size_t len, llmc_purge_t *out)
{
    json_t *o = json_loadb(s, len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *all, *conds, *digits, *before;
    const uint32_t known = LLMC_PURGE_KEY | LLMC_PURGE_NAMESPACE | LLMC_PURGE_TAG |
                           LLMC_PURGE_MODEL | LLMC_PURGE_KEY_PREFIX | LLMC_PURGE_OLDER |
                           LLMC_PURGE_ROUTE;

    memset(out, 0, sizeof(*out));
    if (!json_is_object(o))
        goto fail;
    all = json_object_get(o, "all");
    conds = json_object_get(o, "conds");
    digits = json_object_get(o, "prefix_digits");
    before = json_object_get(o, "before_ms");
    if (!json_is_boolean(all) || !json_is_integer(conds) || !json_is_integer(digits) ||
        !json_is_integer(before))
        goto fail;
    if (json_integer_value(conds) < 0 || (json_integer_value(conds) & ~(json_int_t)known) ||
        json_integer_value(digits) < 0 || json_integer_value(digits) > 2 * LLMC_KEY_LEN)
        goto fail;
    out->all = json_is_true(all);
    out->conds = (uint32_t)json_integer_value(conds);
    out->prefix_digits = (uint8_t)json_integer_value(digits);
    out->created_before_ms = (int64_t)json_integer_value(before);
    if (get_key(o, "key", &out->key) < 0 || get_key(o, "prefix", &out->prefix) < 0 ||
        get_str(o, "ns", &out->ns) < 0 || get_str(o, "tag", &out->tag) < 0 ||
        get_str(o, "model", &out->model) < 0 || get_str(o, "route", &out->route) < 0)
        goto fail;
    if ((out->conds == 0) != out->all)
        goto fail; /* all alone, or conditions alone: nothing else is a selector */
    return o;
fail:
    json_decref(o);
    memset(out, 0, sizeof(*out));
    return NULL;
}

void llmc__redis_sel_free(void *handle)
{
    json_decref(handle);
}
