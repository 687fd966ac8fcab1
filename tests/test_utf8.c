/* nn/utf8: strict validation, character-boundary prefixes and terminal escaping. */
#include "io/utf8.h"
#include "testutil.h"

static void test_check(void **state) {
    (void)state;
    assert_int_equal(nac_utf8_check("abc", 3), 3);
    assert_int_equal(nac_utf8_check("caf\xc3\xa9", 5), 5);
    assert_int_equal(nac_utf8_check("caf\xe9", 4), 3);           /* Latin-1 */
    assert_int_equal(nac_utf8_check("\xc0\xaf", 2), 0);           /* overlong */
    assert_int_equal(nac_utf8_check("a\xed\xa0\x80", 4), 1);      /* surrogate */
    assert_int_equal(nac_utf8_check("\xf4\x90\x80\x80", 4), 0);   /* > U+10FFFF */
    assert_int_equal(nac_utf8_check("ab\xe2\x82", 4), 2);         /* cut */
    assert_true(nac_utf8_valid("\xf0\x9f\x98\x80"));
    assert_false(nac_utf8_valid("\xff"));
}

static void test_prefix(void **state) {
    (void)state;
    assert_int_equal(nac_utf8_prefix("caf\xc3\xa9", 4), 3); /* does not cut the e-acute */
    assert_int_equal(nac_utf8_prefix("caf\xc3\xa9", 5), 5);
    assert_int_equal(nac_utf8_prefix("abc", 10), 3);
}

static void test_escape(void **state) {
    (void)state;
    char b[64];
    assert_string_equal(nac_escape_terminal("plain caf\xc3\xa9", b, sizeof b), "plain caf\xc3\xa9");
    assert_string_equal(nac_escape_terminal("a\x1b[2Jb", b, sizeof b), "a\\e[2Jb");
    assert_string_equal(nac_escape_terminal("t\tn\nbs\\", b, sizeof b), "t\\tn\\nbs\\\\");
    assert_string_equal(nac_escape_terminal("\x07\x7f", b, sizeof b), "\\x07\\x7f");
    assert_string_equal(nac_escape_terminal("\xc2\x9b" "31m", b, sizeof b), "\\u009b31m"); /* C1 CSI */
    assert_string_equal(nac_escape_terminal("x\xff", b, sizeof b), "x\\xff");
    /* truncation never splits an escape or a character */
    assert_string_equal(nac_escape_terminal("ab\x1b", b, 4), "ab");
    assert_string_equal(nac_escape_terminal("a\xc3\xa9", b, 3), "a");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
