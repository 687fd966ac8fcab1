/* `nac bench` end to end: each stage prints one JSON line with its rate, memory and work;
 * the vae and is stages time the quick Table 5 VAE (394,970 parameters, the count the
 * PyTorch mirror bench/bench_pytorch.py must print too); the loader's wait and the FP32
 * peak are reported; bad options get one message and EX_USAGE. */
#include "tests/testutil.h"

#include <sysexits.h>

#include "data/dataset.h"
#include "data/loader.h"

/* Run nac bench with args (a string of options), parse its one stdout line. */
static cJSON *bench(const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s bench %s", NAC_NAC_EXE, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[8192] = {0};
    char *got = fgets(line, sizeof line, p);
    int rc = pclose(p);
    if (!got || rc != 0) fail_msg("%s: exit %d, output \"%s\"", cmd, rc, line);
    cJSON *j = cJSON_Parse(line);
    if (!j) fail_msg("%s: not JSON: %s", cmd, line);
    return j;
}

static double num(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v)) fail_msg("no number \"%s\" in the bench line", key);
    return v->valuedouble;
}

static const char *str(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsString(v)) fail_msg("no string \"%s\" in the bench line", key);
    return v->valuestring;
}

/* What every stage reports. */
static void check_common(const cJSON *j, const char *stage) {
    assert_string_equal(str(j, "stage"), stage);
    assert_true(num(j, "images_per_s") > 0);
    assert_true(num(j, "step_s") > 0);
    assert_true(num(j, "peak_rss_mb") > 0);
    assert_true(num(j, "backend_peak_mb") > 0);
    assert_true(num(j, "gflop_per_step") > 0);
    assert_true(num(j, "params") > 0);
}

static void test_is_stage(void **state) {
    (void)state;
    /* the quick Table 5 VAE at its defaults, one image, K = 2 in chunks of 1 */
    cJSON *j = bench("--stage is --batch 1 --k 2 --chunk 1 --steps 1 --warmup 0 --threads 1 "
                     "--peak-seconds 0");
    check_common(j, "is");
    assert_int_equal((int64_t)num(j, "params"), 394970);
    assert_int_equal((int)num(j, "k"), 2);
    assert_int_equal((int)num(j, "latent"), 32);
    assert_string_equal(str(j, "precision"), "fp32");
    assert_true(num(j, "peak_gflop_per_s") == 0); /* --peak-seconds 0 skips the yardstick */
    cJSON_Delete(j);
}

static void test_vae_stage_and_peak(void **state) {
    (void)state;
    cJSON *j = bench("--stage vae --batch 4 --width 0.0625 --dec-width 4 --latent 8 --steps 1 "
                     "--warmup 0 --threads 1 --peak-seconds 0.05");
    check_common(j, "vae");
    assert_int_equal((int)num(j, "batch"), 4);
    /* the yardstick: the higher of the FMA loop and the sgemm, and the fraction of it */
    double peak = num(j, "peak_gflop_per_s");
    assert_true(peak > 0 && peak >= num(j, "sgemm_gflop_per_s") &&
                peak >= num(j, "fma_gflop_per_s"));
    double frac = num(j, "of_fp32_peak"), rate = num(j, "gflop_per_s");
    assert_true(fabs(frac - rate / peak) <= 0.01 * frac + 1e-3);
    assert_true(strlen(str(j, "cpu")) > 0);
    cJSON_Delete(j);
}

static void test_pretrain_stage_loader(void **state) {
    (void)state;
    cJSON *j = bench("--stage pretrain --batch 4 --width 0.0625 --size 16 --steps 1 --warmup 0 "
                     "--threads 1 --peak-seconds 0 --loader-workers 1");
    check_common(j, "pretrain");
    assert_int_equal((int)num(j, "images_per_step"), 8);
    double wait = num(j, "loader_wait_ms_per_step"), most = num(j, "loader_wait_max_ms");
    assert_true(wait >= 0 && most >= wait);
    cJSON_Delete(j);
}

/* The loader's wait counter: every batch handed out is counted once, its wait is positive
 * when the caller prepares it (no workers), and taking the counts starts them afresh. */
static void test_loader_wait_counter(void **state) {
    (void)state;
    nac_dataset_t ds;
    TU_OK(nac_dataset_synthetic(32, 4, 3, 16, 16, 1, &ds));
    nac_loader_config lc;
    nac_loader_defaults(&lc);
    lc.batch = 8;
    lc.workers = 0;
    nac_loader_t *l;
    TU_OK(nac_loader_create(&ds, &lc, &l));
    TU_OK(nac_loader_start_epoch(l, 0, 0));
    float *batch;
    int *labels, got, batches = 0;
    do {
        TU_OK(nac_loader_next(l, &batch, &labels, &got));
        batches += got > 0;
    } while (got > 0);
    nac_loader_stats st;
    nac_loader_take_stats(l, &st);
    assert_int_equal(batches, 4);
    assert_int_equal(st.batches, 4); /* the end-of-epoch call hands out nothing */
    assert_true(st.wait_s > 0 && st.max_wait_s > 0 && st.max_wait_s <= st.wait_s);
    nac_loader_take_stats(l, &st);
    assert_int_equal(st.batches, 0);
    assert_true(st.wait_s == 0 && st.max_wait_s == 0);
    nac_loader_free(l);
    nac_dataset_free(&ds);
}

static void test_bad_options(void **state) {
    (void)state;
    char dir[64], err[2048];
    assert_int_equal(tu_mkdtemp(dir, sizeof dir, "nac_bench"), 0);
    struct {
        char *argv[10];
        const char *msg;
    } cases[] = {
        {{NAC_NAC_EXE, "bench", "--stage", "train", NULL},
         "--stage train: must be pretrain, vae or is"},
        {{NAC_NAC_EXE, "bench", "--stage", "is", "--k", "10", "--chunk", "3"}, "chunk dividing k"},
        {{NAC_NAC_EXE, "bench", "--precision", "fp16", NULL},
         "--precision fp16: must be fp32 or bf16"},
        {{NAC_NAC_EXE, "bench", "--stage", "vae", "--likelihood", "poisson", NULL},
         "--likelihood poisson"},
        {{NAC_NAC_EXE, "bench", "--batch", "0", NULL}, "--batch needs an integer in 1.."},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = tu_run_exe(dir, cases[i].argv, err, sizeof err);
        assert_int_equal(rc, EX_USAGE);
        if (!strstr(err, cases[i].msg))
            fail_msg("case %zu: stderr \"%s\" lacks \"%s\"", i, err, cases[i].msg);
    }
    tu_rm_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_stage),
        cmocka_unit_test(test_vae_stage_and_peak),
        cmocka_unit_test(test_pretrain_stage_loader),
        cmocka_unit_test(test_loader_wait_counter),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
