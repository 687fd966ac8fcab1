/* The FP32 limit of `nac bench` (app/peak.c): the FMA loop's count is the work it did
 * (every lane of every accumulator ends at the number of rounds), and the measured peak
 * is a positive finite rate at least as high as each of its two parts. */
#include "testutil.h"

#include "app/peak.h"

static void loop_count_is_the_work(void **state) {
    (void)state;
    nac_fma_isa isa = nac_fma_isa_best();
    if (isa == NAC_FMA_NONE) skip();
    for (nac_fma_isa i = NAC_FMA_AVX2; i <= isa; i++) {
        for (int64_t iters = 0; iters <= 7; iters += 7) {
            double sum = -1;
            int64_t fmas = nac_fma_loop(i, iters, &sum);
            int lanes = i == NAC_FMA_AVX512 ? 16 : 8;
            assert_int_equal(fmas, iters * 12 * lanes); /* 12 accumulators of `lanes` */
            assert_true(sum == (double)fmas);          /* each lane counted its FMAs */
        }
    }
    assert_string_equal(nac_fma_isa_name(NAC_FMA_AVX512), "avx512f");
}

static void peak_is_positive_and_finite(void **state) {
    (void)state;
    nac_fp32_peak p;
    assert_int_equal(nac_fp32_peak_measure(2, 0.05, 256, &p), NAC_OK);
    assert_true(isfinite(p.sgemm_gflops) && p.sgemm_gflops > 0);
    assert_true(isfinite(p.peak_gflops) && p.peak_gflops > 0);
    assert_true(p.peak_gflops >= p.sgemm_gflops && p.peak_gflops >= p.fma_gflops);
    if (nac_fma_isa_best() != NAC_FMA_NONE)
        assert_true(isfinite(p.fma_gflops) && p.fma_gflops > 0);
    assert_int_equal(p.threads, 2);
    assert_int_equal(p.sgemm_n, 256);
}

static void bad_arguments_are_named(void **state) {
    (void)state;
    nac_fp32_peak p;
    assert_int_equal(nac_fp32_peak_measure(0, 0.1, 0, &p), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "threads >= 1"));
}

static void cpu_is_described(void **state) {
    (void)state;
    char model[128];
    double mhz;
    nac_cpu_describe(model, sizeof model, &mhz);
    assert_true(model[0] != '\0');
    assert_true(mhz >= 0 && isfinite(mhz));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loop_count_is_the_work),
        cmocka_unit_test(peak_is_positive_and_finite),
        cmocka_unit_test(bad_arguments_are_named),
        cmocka_unit_test(cpu_is_described),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
