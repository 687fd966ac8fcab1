/* eval/stats: paired differences and seed summaries on hand-checked cases. */
#include "testutil.h"

#include "eval/stats.h"

static void test_paired_hand_case(void **state) {
    (void)state;
    /* d = {1, 2, 2, 3}: mean 2, sum of squares 2, sd sqrt(2/3), se sd/2, t(3) 3.1824 */
    const double a[4] = {1, 2, 3, 4}, b[4] = {0, 0, 1, 1};
    nac_stats_summary s;
    assert_int_equal(nac_stats_paired(a, b, 4, &s), NAC_OK);
    assert_int_equal(s.n, 4);
    assert_true(fabs(s.mean - 2.0) < 1e-12);
    assert_true(fabs(s.sd - sqrt(2.0 / 3.0)) < 1e-12);
    assert_true(fabs(s.se - sqrt(2.0 / 3.0) / 2.0) < 1e-12);
    assert_true(fabs(s.hi - (2.0 + 3.1824 * sqrt(2.0 / 3.0) / 2.0)) < 1e-9);
    assert_true(fabs(s.lo - (2.0 - 3.1824 * sqrt(2.0 / 3.0) / 2.0)) < 1e-9);
}

static void test_paired_removes_item_variance(void **state) {
    (void)state;
    /* Items vary a lot (1..1000), the difference is a constant 0.5 plus tiny noise: the
       paired se is tiny, the se of either mean is large. */
    enum { N = 1000 };
    static double a[N], b[N];
    for (int i = 0; i < N; i++) {
        b[i] = -(double)(i + 1);
        a[i] = b[i] + 0.5 + ((i % 2) ? 1e-3 : -1e-3);
    }
    nac_stats_summary p, sa;
    assert_int_equal(nac_stats_paired(a, b, N, &p), NAC_OK);
    assert_int_equal(nac_stats_summarize(a, N, &sa), NAC_OK);
    assert_true(fabs(p.mean - 0.5) < 1e-12);
    assert_true(p.se < 1e-4);
    assert_true(sa.se > 5.0);
    assert_true(p.lo > 0.499 && p.hi < 0.501);
}

static void test_summary_hand_case(void **state) {
    (void)state;
    const double x[8] = {2, 4, 4, 4, 5, 5, 7, 9}; /* mean 5, sum of squares 32 */
    nac_stats_summary s;
    assert_int_equal(nac_stats_summarize(x, 8, &s), NAC_OK);
    assert_true(fabs(s.mean - 5.0) < 1e-12);
    assert_true(fabs(s.sd - sqrt(32.0 / 7.0)) < 1e-12);
    assert_true(fabs(s.hi - 5.0 - 2.3646 * sqrt(32.0 / 7.0) / sqrt(8.0)) < 1e-9);
    /* one seed: no spread, the interval collapses to the mean */
    assert_int_equal(nac_stats_summarize(x, 1, &s), NAC_OK);
    assert_true(s.sd == 0 && s.lo == 2.0 && s.hi == 2.0);
}

static void test_t_quantiles(void **state) {
    (void)state;
    assert_true(fabs(nac_stats_t975(1) - 12.7062) < 1e-4);
    assert_true(fabs(nac_stats_t975(2) - 4.3027) < 1e-4);
    assert_true(fabs(nac_stats_t975(30) - 2.0423) < 1e-4);
    /* beyond the table: scipy.stats.t.ppf(0.975, df) */
    assert_true(fabs(nac_stats_t975(40) - 2.021075) < 2e-4);
    assert_true(fabs(nac_stats_t975(100) - 1.983972) < 1e-4);
    assert_true(fabs(nac_stats_t975(1000000) - 1.959966) < 1e-4);
    assert_true(isnan(nac_stats_t975(0)));
}

static void test_bad_input(void **state) {
    (void)state;
    const double x[2] = {1, NAN};
    nac_stats_summary s;
    assert_int_equal(nac_stats_summarize(x, 2, &s), NAC_ERR_NUMERIC);
    assert_int_equal(nac_stats_summarize(x, 0, &s), NAC_ERR_INVALID);
    assert_int_equal(nac_stats_paired(x, NULL, 1, &s), NAC_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paired_hand_case), cmocka_unit_test(test_paired_removes_item_variance),
        cmocka_unit_test(test_summary_hand_case), cmocka_unit_test(test_t_quantiles),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
