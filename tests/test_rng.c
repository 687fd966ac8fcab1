/* Philox: the known-answer vector from the Random123 paper's test suite, determinism,
 * stream independence, and the moments of the distributions. */
#include "tests/testutil.h"

static void test_known_answer(void **state) {
    (void)state;
    /* Random123 kat_vectors: philox4x32_10, counter 0, key 0 */
    uint32_t out[4];
    nac_philox(0, 0, out);
    assert_int_equal(out[0], 0x6627e8d5u);
    assert_int_equal(out[1], 0xe169c58du);
    assert_int_equal(out[2], 0xbc57ac4cu);
    assert_int_equal(out[3], 0x9b00dbd8u);
}

static void test_determinism_and_moments(void **state) {
    (void)state;
    nac_rng_t a, b;
    nac_rng_init(&a, nac_rng_key(42, 1, 2, 3));
    nac_rng_init(&b, nac_rng_key(42, 1, 2, 3));
    for (int i = 0; i < 1000; i++) assert_int_equal(nac_rng_u32(&a), nac_rng_u32(&b));
    nac_rng_init(&b, nac_rng_key(42, 1, 2, 4));
    int same = 0;
    for (int i = 0; i < 1000; i++) same += nac_rng_u32(&a) == nac_rng_u32(&b);
    assert_true(same < 3);
    double s = 0, s2 = 0, u = 0;
    int n = 200000;
    nac_rng_init(&a, 7);
    for (int i = 0; i < n; i++) {
        double x = nac_rng_normal(&a);
        s += x;
        s2 += x * x;
        double v = nac_rng_uniform(&a);
        assert_true(v >= 0 && v < 1);
        u += v;
    }
    assert_true(fabs(s / n) < 0.01);
    assert_true(fabs(s2 / n - 1) < 0.02);
    assert_true(fabs(u / n - 0.5) < 0.005);
    for (uint64_t i = 0; i < 1000; i++) {
        float x = nac_rng_uniform_at(99, i);
        assert_true(x >= 0 && x < 1);
        assert_true(x == nac_rng_uniform_at(99, i));
    }
    int counts[5] = {0};
    for (int i = 0; i < 50000; i++) counts[nac_rng_below(&a, 5)]++;
    for (int i = 0; i < 5; i++) assert_true(abs(counts[i] - 10000) < 500);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_determinism_and_moments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
