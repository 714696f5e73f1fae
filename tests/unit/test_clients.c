/*
 * test_clients.c: the client keys file (src/gateway/clients.c): comments,
 * attributes and their defaults, bad lines refused with their line number,
 * repeated keys, lookups (listed, unlisted, a prefix of a listed key), the
 * credential a request presents, a key's rights held against a request's
 * cache policy, and loading from a file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gateway/clients.h"
#include "llmc/error.h"

#define KA "key-a-0123456789abcdef"
#define KB "key-b-0123456789abcdef"
#define KC "key-c-0123456789abcdef"

static llmc_clients_t *parse_ok(const char *text)
{
    llmc_clients_t *t = NULL;
    char err[256] = "";
    int rc = llmc_clients_parse(text, strlen(text), &t, err, sizeof(err));
    if (rc != 0)
        fail_msg("parse failed: %s", err);
    assert_non_null(t);
    return t;
}

static void parse_bad(const char *text, const char *want)
{
    llmc_clients_t *t = (llmc_clients_t *)1;
    char err[256] = "";
    assert_int_equal(llmc_clients_parse(text, strlen(text), &t, err, sizeof(err)), LLMC_EINVAL);
    assert_null(t);
    if (!strstr(err, want))
        fail_msg("message \"%s\" lacks \"%s\"", err, want);
}

static const llmc_client_t *find(const llmc_clients_t *t, const char *k)
{
    return llmc_clients_find(t, k, strlen(k));
}

static void test_comments_and_attributes(void **state)
{
    (void)state;
    llmc_clients_t *t = parse_ok("# the keys\n"
                                 "\n"
                                 "   # indented comment\n"
                                 KA "\n"
                                 KB " namespace=team-b refresh=yes   # the batch job\n"
                                 "\t" KC "\tttl=YES refresh=no\r\n");
    assert_int_equal(llmc_clients_count(t), 3);
    const llmc_client_t *a = find(t, KA), *b = find(t, KB), *c = find(t, KC);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    /* Defaults: no namespace, no refresh, no TTL. */
    assert_string_equal(a->ns, "");
    assert_false(a->refresh);
    assert_false(a->ttl);
    assert_int_equal(a->line, 4);
    assert_string_equal(b->ns, "team-b");
    assert_true(b->refresh);
    assert_false(b->ttl);
    assert_int_equal(b->line, 5);
    assert_string_equal(c->ns, "");
    assert_false(c->refresh);
    assert_true(c->ttl);
    llmc_clients_unref(t);
}

static void test_a_hash_inside_a_key_is_part_of_it(void **state)
{
    (void)state;
    llmc_clients_t *t = parse_ok("key#with#hashes-0123456789 # but this is a comment\n");
    assert_non_null(find(t, "key#with#hashes-0123456789"));
    assert_null(find(t, "key"));
    llmc_clients_unref(t);
}

static void test_lookup(void **state)
{
    (void)state;
    llmc_clients_t *t = parse_ok(KA "\n" KB "\n" KC "\n");
    assert_ptr_equal(find(t, KA), find(t, KA));
    assert_ptr_not_equal(find(t, KA), find(t, KB));
    assert_null(find(t, "key-d-0123456789abcdef"));
    assert_null(find(t, "key-a-0123456789abcde"));  /* a prefix */
    assert_null(find(t, KA "0"));                   /* longer */
    assert_null(find(t, ""));
    assert_null(llmc_clients_find(t, NULL, 0));
    assert_null(llmc_clients_find(NULL, KA, strlen(KA)));
    llmc_clients_unref(t);
}

static void test_many_keys_all_found(void **state)
{
    (void)state;
    char *text = malloc(1000 * 40);
    size_t n = 0;
    for (int i = 0; i < 1000; i++)
        n += (size_t)sprintf(text + n, "client-key-number-%04d\n", i);
    llmc_clients_t *t = parse_ok(text);
    assert_int_equal(llmc_clients_count(t), 1000);
    char k[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof(k), "client-key-number-%04d", i);
        const llmc_client_t *c = find(t, k);
        assert_non_null(c);
        assert_int_equal(c->line, (unsigned)i + 1);
    }
    assert_null(find(t, "client-key-number-1000"));
    free(text);
    llmc_clients_unref(t);
}

static void test_empty_file_lists_nobody(void **state)
{
    (void)state;
    llmc_clients_t *t = parse_ok("# nobody yet\n");
    assert_int_equal(llmc_clients_count(t), 0);
    assert_null(find(t, KA));
    llmc_clients_unref(t);
}

static void test_bad_lines_name_their_number(void **state)
{
    (void)state;
    parse_bad(KA "\nshort\n", "line 2: a key must be 16 to 512 bytes");
    parse_bad("# c\n" KA " colour=blue\n", "line 2: unknown attribute");
    parse_bad(KA " refresh=maybe\n", "line 1: refresh and ttl take yes or no");
    parse_bad("\n\n" KA " namespace=\n", "line 3: namespace must be 1 to 127 bytes");
    parse_bad(KA " refresh\n", "line 1: an attribute must be name=value");
    parse_bad(KA "\n" KB "\n" KA " refresh=yes\n", "line 3: the key of line 1 again");
    parse_bad("key-\x01-0123456789abcdef\n", "line 1: a key must be printable ASCII");
    parse_bad("key-\xc3\xa9-0123456789abcdef\n", "line 1: a key must be printable ASCII");
    char big[700];
    memset(big, 'k', sizeof(big) - 2);
    big[sizeof(big) - 2] = '\n';
    big[sizeof(big) - 1] = '\0';
    parse_bad(big, "line 1: a key must be 16 to 512 bytes");
    char ns[300];
    snprintf(ns, sizeof(ns), KA " namespace=%0200d\n", 0);
    parse_bad(ns, "line 1: namespace must be 1 to 127 bytes");
}

static void test_message_never_shows_the_key(void **state)
{
    (void)state;
    llmc_clients_t *t = NULL;
    char err[256] = "";
    const char *text = "secret-key-0123456789abcdef refresh=sometimes\n";
    assert_int_equal(llmc_clients_parse(text, strlen(text), &t, err, sizeof(err)), LLMC_EINVAL);
    assert_null(strstr(err, "secret"));
}

static void test_nul_byte_is_refused(void **state)
{
    (void)state;
    llmc_clients_t *t = NULL;
    char err[256] = "";
    static const char text[] = KA "\nkey-\0-0123456789abcdef\n";
    assert_int_equal(llmc_clients_parse(text, sizeof(text) - 1, &t, err, sizeof(err)),
                     LLMC_EINVAL);
    assert_non_null(strstr(err, "line 2: a NUL byte"));
}

static void test_refcount(void **state)
{
    (void)state;
    llmc_clients_t *t = parse_ok(KA "\n");
    assert_ptr_equal(llmc_clients_ref(t), t);
    llmc_clients_unref(t);
    assert_non_null(find(t, KA)); /* one reference left */
    llmc_clients_unref(t);
    llmc_clients_unref(NULL);
}

static void test_credential(void **state)
{
    (void)state;
    size_t n;
    const char *c = llmc_clients_credential("Bearer  " KA " ", NULL, &n);
    assert_non_null(c);
    assert_int_equal(n, strlen(KA));
    assert_memory_equal(c, KA, n);
    c = llmc_clients_credential("bearer\t" KA, "other", &n);
    assert_int_equal(n, strlen(KA));
    assert_memory_equal(c, KA, n);
    /* Not a bearer credential: x-api-key (the Anthropic SDKs') is taken. */
    c = llmc_clients_credential("Basic abc", KB, &n);
    assert_int_equal(n, strlen(KB));
    assert_memory_equal(c, KB, n);
    c = llmc_clients_credential(NULL, KB, &n);
    assert_memory_equal(c, KB, n);
    assert_null(llmc_clients_credential("Bearer ", NULL, &n));
    assert_int_equal(n, 0);
    assert_null(llmc_clients_credential("Bearerx" KA, NULL, &n));
    assert_null(llmc_clients_credential(NULL, "", &n));
    assert_null(llmc_clients_credential(NULL, NULL, &n));
}

static llmc_policy_t pol(const char *cc, const char *ttl, const char *ns)
{
    llmc_policy_t p;
    char err[256] = "";
    assert_int_equal(llmc_policy_parse(&p, cc, NULL, ttl, ns, NULL, 300000, 86400000, err,
                                       sizeof(err)), 0);
    return p;
}

static void test_apply_namespace(void **state)
{
    (void)state;
    llmc_client_t c = {.ns = "team-a"};
    unsigned denied;
    char err[256] = "";
    llmc_policy_t p = pol(NULL, NULL, NULL);
    assert_int_equal(llmc_clients_apply(&c, &p, 300000, &denied, err, sizeof(err)), 0);
    assert_string_equal(p.ns, "team-a");
    p = pol(NULL, NULL, "team-a"); /* its own, named: fine */
    assert_int_equal(llmc_clients_apply(&c, &p, 300000, &denied, err, sizeof(err)), 0);
    assert_string_equal(p.ns, "team-a");
    p = pol(NULL, NULL, "team-b");
    assert_int_equal(llmc_clients_apply(&c, &p, 300000, &denied, err, sizeof(err)), LLMC_EINVAL);
    assert_non_null(strstr(err, "bound"));
    /* An unbound key chooses freely, as without keys. */
    llmc_client_t free_key = {.ns = ""};
    p = pol(NULL, NULL, "team-b");
    assert_int_equal(llmc_clients_apply(&free_key, &p, 300000, &denied, err, sizeof(err)), 0);
    assert_string_equal(p.ns, "team-b");
    assert_int_equal(denied, 0);
}

static void test_apply_refresh(void **state)
{
    (void)state;
    llmc_client_t no = {.refresh = false}, yes = {.refresh = true};
    unsigned denied;
    char err[256] = "";
    static const char *const refreshes[] = {"no-cache", "max-age=0", "min-fresh=60"};
    for (size_t i = 0; i < sizeof(refreshes) / sizeof(refreshes[0]); i++) {
        llmc_policy_t p = pol(refreshes[i], NULL, NULL);
        assert_int_equal(llmc_clients_apply(&no, &p, 300000, &denied, err, sizeof(err)), 0);
        assert_int_equal(denied, LLMC_CLIENT_DENIED_REFRESH);
        assert_true(p.read);
        assert_true(p.write);
        assert_int_equal(p.max_age_ms, LLMC_POLICY_UNSET);
        assert_int_equal(p.min_fresh_ms, 0);
        p = pol(refreshes[i], NULL, NULL);
        llmc_policy_t before = p;
        assert_int_equal(llmc_clients_apply(&yes, &p, 300000, &denied, err, sizeof(err)), 0);
        assert_int_equal(denied, 0);
        assert_memory_equal(&p, &before, sizeof(p));
    }
    /* no-store stores nothing: a bypass, left alone. */
    llmc_policy_t p = pol("no-store", NULL, NULL);
    assert_int_equal(llmc_clients_apply(&no, &p, 300000, &denied, err, sizeof(err)), 0);
    assert_int_equal(denied, 0);
    assert_false(p.read);
    assert_false(p.write);
}

static void test_apply_ttl(void **state)
{
    (void)state;
    llmc_client_t no = {.ttl = false}, yes = {.ttl = true};
    unsigned denied;
    char err[256] = "";
    llmc_policy_t p = pol(NULL, "86400", NULL);
    assert_int_equal(llmc_clients_apply(&no, &p, 300000, &denied, err, sizeof(err)), 0);
    assert_int_equal(denied, LLMC_CLIENT_DENIED_TTL);
    assert_int_equal(p.ttl_ms, 300000);
    p = pol(NULL, "86400", NULL);
    assert_int_equal(llmc_clients_apply(&yes, &p, 300000, &denied, err, sizeof(err)), 0);
    assert_int_equal(denied, 0);
    assert_int_equal(p.ttl_ms, 86400000);
    p = pol(NULL, NULL, NULL); /* none asked: nothing denied */
    assert_int_equal(llmc_clients_apply(&no, &p, 300000, &denied, err, sizeof(err)), 0);
    assert_int_equal(denied, 0);
    p = pol("no-cache", "600", NULL); /* both at once */
    assert_int_equal(llmc_clients_apply(&no, &p, 300000, &denied, err, sizeof(err)), 0);
    assert_int_equal(denied, LLMC_CLIENT_DENIED_REFRESH | LLMC_CLIENT_DENIED_TTL);
}

static void test_load(void **state)
{
    (void)state;
    char path[] = "/tmp/llmc-test-clients-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = KA " namespace=a\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    llmc_clients_t *t = NULL;
    char err[256] = "";
    assert_int_equal(llmc_clients_load(path, &t, err, sizeof(err)), 0);
    assert_string_equal(find(t, KA)->ns, "a");
    llmc_clients_unref(t);
    unlink(path);
    assert_int_equal(llmc_clients_load(path, &t, err, sizeof(err)), LLMC_EIO);
    assert_null(t);
    assert_non_null(strstr(err, path));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_comments_and_attributes),
        cmocka_unit_test(test_a_hash_inside_a_key_is_part_of_it),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_many_keys_all_found),
        cmocka_unit_test(test_empty_file_lists_nobody),
        cmocka_unit_test(test_bad_lines_name_their_number),
        cmocka_unit_test(test_message_never_shows_the_key),
        cmocka_unit_test(test_nul_byte_is_refused),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_credential),
        cmocka_unit_test(test_apply_namespace),
        cmocka_unit_test(test_apply_refresh),
        cmocka_unit_test(test_apply_ttl),
        cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
