/* The evaluation commands end to end (on one thread: tiny ops, and a busy machine makes
 * spinning OpenMP threads expensive): `nac regions` raises the region count of the network
 * up to the code on two moons and draws its PNGs; `nac probe`, `nac knn` and `nac hash` on
 * an encoder file made here (a small ResNet-18 with heads, metadata as `nac pretrain`
 * writes it, the synthetic dataset) write results whose numbers agree with the exported
 * codes and the library; bad inputs end with the right status and a message naming them. */
#include <cjson/cJSON.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/app.h"
#include "data/png.h"
#include "encoders/encoder.h"
#include "encoders/head.h"
#include "eval/hash.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "testutil.h"

static char g_dir[64];
static nac_backend_t *g_be;

static int setup(void **state) {
    (void)state;
    g_be = tu_backend();
    return tu_mkdtemp(g_dir, sizeof g_dir, "nac_eval_test");
}

static int teardown(void **state) {
    (void)state;
    nac_backend_free(g_be);
    tu_rm_tree(g_dir);
    return 0;
}

static nac_status run_cmd(const nac_command *c, int argc, char **argv) {
    nac_clear_error();
    fflush(stdout);
    return c->run(argc, argv);
}

static double num(const cJSON *d, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(d, a);
    if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
    if (!cJSON_IsNumber(x)) fail_msg("no number %s%s%s", a, b ? "." : "", b ? b : "");
    return x->valuedouble;
}

static void test_regions(void **state) {
    (void)state;
    char runs[128], path[256];
    snprintf(runs, sizeof runs, "%s/runs", g_dir);
    char *argv[] = {"regions", "--data", "moons", "--n", "200", "--steps", "500", "--grid", "100",
                    "--proj-dim", "64", "--seed", "0", "--runs-dir", runs, "--name", "moons",
                    "--threads", "1", "--sizes", "2,32,32"};
    TU_OK(run_cmd(&nac_cmd_regions, sizeof argv / sizeof *argv, argv));
    snprintf(path, sizeof path, "%s/moons/regions_results.json", runs);
    cJSON *d = tu_load_json_path(path);
    double bd = num(d, "before", "data_regions"), ad = num(d, "after", "data_regions");
    double bg = num(d, "before", "grid_regions"), ag = num(d, "after", "grid_regions");
    print_message("regions on two moons (200 points, 500 steps): data %g -> %g, grid %g -> %g; "
                  "encoder alone: data %g -> %g, grid %g -> %g\n", bd, ad, bg, ag,
                  num(d, "before", "encoder_data_regions"), num(d, "after", "encoder_data_regions"),
                  num(d, "before", "encoder_grid_regions"), num(d, "after", "encoder_grid_regions"));
    assert_true(ad > bd + 10);
    assert_true(ag > bg * 1.1);
    assert_true(ad <= 200 && bd >= 1);
    assert_true(num(d, "loss_last", NULL) < num(d, "loss_first", NULL));
    cJSON_Delete(d);
    static const char *const pngs[] = {"before.png", "after.png", "before_encoder.png", "after_encoder.png"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/moons/%s", runs, pngs[i]);
        uint8_t *px;
        int c, h, w;
        TU_OK(nac_png_read(path, &px, &c, &h, &w));
        assert_int_equal(c, 3);
        assert_int_equal(h, 100);
        assert_int_equal(w, 100);
        free(px);
    }
    /* the same seed again gives a new folder (never overwriting) with the same counts */
    TU_OK(run_cmd(&nac_cmd_regions, sizeof argv / sizeof *argv, argv));
    snprintf(path, sizeof path, "%s/moons-2/regions_results.json", runs);
    d = tu_load_json_path(path);
    assert_true(num(d, "after", "data_regions") == ad);
    assert_true(num(d, "after", "grid_regions") == ag);
    cJSON_Delete(d);
    /* by default the paper's Figure 1 network: two hidden layers of width 4 */
    char *dflt[] = {"regions", "--steps", "20", "--grid", "50", "--runs-dir", runs, "--name", "fig1",
                    "--threads", "1"};
    TU_OK(run_cmd(&nac_cmd_regions, sizeof dflt / sizeof *dflt, dflt));
    snprintf(path, sizeof path, "%s/fig1/regions_results.json", runs);
    d = tu_load_json_path(path);
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(d, "sizes");
    assert_int_equal(cJSON_GetArraySize(sz), 3);
    assert_true(cJSON_GetArrayItem(sz, 0)->valuedouble == 2 && cJSON_GetArrayItem(sz, 1)->valuedouble == 4 &&
                cJSON_GetArrayItem(sz, 2)->valuedouble == 4);
    cJSON_Delete(d);
    char *bad[] = {"regions", "--data", "spirals"};
    assert_int_equal(run_cmd(&nac_cmd_regions, 3, bad), NAC_ERR_USAGE);
    char *bad2[] = {"regions", "--sizes", "3,8"};
    assert_int_equal(run_cmd(&nac_cmd_regions, 3, bad2), NAC_ERR_USAGE);
}

/* An encoder file as `nac pretrain` writes it: a random ResNet-18 at 1/16 width for 3x32x32
 * images, heads g and r (16 bits), metadata naming the synthetic dataset of 300 images. */
static void make_encoder(const char *path, const char *config) {
    nac_encoder_config ec;
    nac_encoder_config_defaults(&ec);
    ec.width_mult = 0.0625f;
    ec.seed = 3;
    nac_encoder_t *enc;
    nac_head_t *g, *r;
    TU_OK(nac_encoder_create(g_be, &ec, &enc));
    int f = nac_encoder_features(enc);
    TU_OK(nac_head_create(g_be, f, f, 16, "g.", 4, &g));
    TU_OK(nac_head_create(g_be, f, f, 16, "r.", 5, &r));
    nac_st_writer *w = nac_st_writer_new();
    TU_OK(nac_ckpt_add_params(w, nac_encoder_params(enc), "", false));
    TU_OK(nac_encoder_write_extras(enc, w, "", 0));
    TU_OK(nac_ckpt_add_params(w, nac_head_params(g), "", false));
    TU_OK(nac_ckpt_add_params(w, nac_head_params(r), "", false));
    TU_OK(nac_st_writer_meta(w, "format", "nacvae-encoder-1"));
    TU_OK(nac_st_writer_meta(w, "arch", "resnet18"));
    TU_OK(nac_st_writer_meta(w, "width_mult", "0.0625"));
    TU_OK(nac_st_writer_meta(w, "in_channels", "3"));
    TU_OK(nac_st_writer_meta(w, "in_size", "32"));
    TU_OK(nac_st_writer_meta(w, "norm_mean", "0.5 0.5 0.5"));
    TU_OK(nac_st_writer_meta(w, "norm_std", "0.25 0.25 0.25"));
    TU_OK(nac_st_writer_meta(w, "objective", "nac"));
    if (config) TU_OK(nac_st_writer_meta(w, "config", config));
    TU_OK(nac_st_writer_save(w, path));
    nac_st_writer_free(w);
    nac_head_free(g);
    nac_head_free(r);
    nac_encoder_free(enc);
}

static const char *const CONFIG =
    "{\"data\": {\"dataset\": \"synthetic\", \"path\": \"\", \"synthetic_n\": 300}, "
    "\"train\": {\"seed\": 1}}";

static void test_probe_knn(void **state) {
    (void)state;
    char run[128], enc[192], path[256];
    snprintf(run, sizeof run, "%s/pre", g_dir);
    assert_int_equal(mkdir(run, 0777), 0);
    snprintf(enc, sizeof enc, "%s/encoder.safetensors", run);
    make_encoder(enc, CONFIG);
    /* a random encoder's features are far from zero-mean: standardise them */
    char *argv[] = {"probe", run, "--epochs", "10", "--lrs", "0.1,1", "--batch", "64", "--standardize",
                    "--threads", "1"};
    TU_OK(run_cmd(&nac_cmd_probe, sizeof argv / sizeof *argv, argv));
    snprintf(path, sizeof path, "%s/probe_results.json", run);
    cJSON *d = tu_load_json_path(path);
    /* 300 synthetic images, a fifth of each class the test split: 240 / 60 */
    assert_true(num(d, "train_images", NULL) == 240);
    assert_true(num(d, "test_images", NULL) == 60);
    assert_true(num(d, "features", NULL) == 32);
    assert_true(num(d, "val_rows", NULL) == 20); /* round(0.1 * 24) a class */
    double top1 = num(d, "top1", NULL), top5 = num(d, "top5", NULL), lr = num(d, "lr", NULL);
    print_message("probe of a random ResNet-18/16 on synthetic: top-1 %.3f top-5 %.3f lr %g\n", top1,
                  top5, lr);
    assert_true(top1 > 0.3 && top1 <= top5 && top5 <= 1); /* chance is 0.1 */
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "standardize")));
    assert_true(lr == 0.1 || lr == 1);
    const cJSON *search = cJSON_GetObjectItemCaseSensitive(d, "lr_search");
    assert_int_equal(cJSON_GetArraySize(search), 2);
    double best = -1, best_lr = 0;
    for (int i = 0; i < 2; i++) {
        const cJSON *e = cJSON_GetArrayItem(search, i);
        double v = num(e, "val_top1", NULL);
        if (v > best) best = v, best_lr = num(e, "lr", NULL);
    }
    assert_true(best_lr == lr);
    const cJSON *conf = cJSON_GetObjectItemCaseSensitive(d, "confusion");
    assert_int_equal(cJSON_GetArraySize(conf), 10);
    double total = 0, diag = 0;
    for (int k = 0; k < 10; k++)
        for (int j = 0; j < 10; j++) {
            double v = cJSON_GetArrayItem(cJSON_GetArrayItem(conf, k), j)->valuedouble;
            total += v;
            if (k == j) diag += v;
        }
    assert_true(total == 60);
    assert_true(fabs(diag / 60 - top1) < 1e-12);
    /* the two baselines, same protocol: raw pixels (3x32x32) and a random encoder */
    const cJSON *bl = cJSON_GetObjectItemCaseSensitive(d, "baselines");
    const cJSON *px = cJSON_GetObjectItemCaseSensitive(bl, "pixels");
    const cJSON *rb = cJSON_GetObjectItemCaseSensitive(bl, "random_bn");
    assert_non_null(px);
    assert_non_null(rb);
    assert_true(num(px, "features", NULL) == 3 * 32 * 32);
    assert_true(num(rb, "features", NULL) == 32);
    assert_true(num(px, "top1", NULL) > 0.3 && num(px, "top1", NULL) <= num(px, "top5", NULL));
    assert_true(num(rb, "top1", NULL) > 0.1 && num(rb, "top1", NULL) <= 1);
    cJSON_Delete(d);

    /* kNN on the encoder file itself, results to --out */
    snprintf(path, sizeof path, "%s/knn.json", g_dir);
    char *kargv[] = {"knn", enc, "--k", "20", "--out", path, "--threads", "1", "--no-baselines"};
    TU_OK(run_cmd(&nac_cmd_knn, 9, kargv));
    d = tu_load_json_path(path);
    assert_null(cJSON_GetObjectItemCaseSensitive(d, "baselines"));
    double k1 = num(d, "top1", NULL), k5 = num(d, "top5", NULL);
    print_message("kNN (k 20): top-1 %.3f top-5 %.3f\n", k1, k5);
    assert_true(k1 > 0.2 && k1 <= k5);
    assert_true(num(d, "k", NULL) == 20);
    cJSON_Delete(d);
}

static void test_hash(void **state) {
    (void)state;
    char enc[192], path[256], exp[192];
    snprintf(enc, sizeof enc, "%s/hash_encoder.safetensors", g_dir);
    snprintf(exp, sizeof exp, "%s/export", g_dir);
    make_encoder(enc, CONFIG);
    char *argv[] = {"hash", enc, "--queries-per-class", "5", "--R", "50", "--export", exp,
                    "--threads", "1"};
    TU_OK(run_cmd(&nac_cmd_hash, sizeof argv / sizeof *argv, argv));
    snprintf(path, sizeof path, "%s/hash_results.json", g_dir);
    cJSON *d = tu_load_json_path(path);
    assert_true(num(d, "queries", NULL) == 50);
    assert_true(num(d, "database", NULL) == 250);
    assert_true(num(d, "bits", NULL) == 16);
    double map_all = num(d, "map_all", NULL), map_r = num(d, "map_at_R", NULL);
    print_message("hash (16 bits, random encoder): mAP@all %.4f mAP@50 %.4f P@1 %.3f\n", map_all, map_r,
                  num(d, "precision_at", "1"));
    assert_true(map_all > 0 && map_all <= 1 && map_r > 0 && map_r <= 1);
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(d, "pr_curve");
    const cJSON *recall = cJSON_GetObjectItemCaseSensitive(pr, "recall");
    assert_int_equal(cJSON_GetArraySize(recall), 17);
    assert_true(fabs(cJSON_GetArrayItem(recall, 16)->valuedouble - 1) < 1e-12);

    /* the exported arrays: codes = (proj >= 0), labels 5 queries a class, and the mAP the
     * library computes from the exported codes is the reported one */
    nac_npy qc, qp, ql, dc, dl, qf;
    snprintf(path, sizeof path, "%s/query_codes.npy", exp);
    TU_OK(nac_npy_load(path, &qc));
    snprintf(path, sizeof path, "%s/query_proj.npy", exp);
    TU_OK(nac_npy_load(path, &qp));
    snprintf(path, sizeof path, "%s/query_labels.npy", exp);
    TU_OK(nac_npy_load(path, &ql));
    snprintf(path, sizeof path, "%s/query_features.npy", exp);
    TU_OK(nac_npy_load(path, &qf));
    snprintf(path, sizeof path, "%s/db_codes.npy", exp);
    TU_OK(nac_npy_load(path, &dc));
    snprintf(path, sizeof path, "%s/db_labels.npy", exp);
    TU_OK(nac_npy_load(path, &dl));
    assert_int_equal(qc.dtype, NAC_DT_U8);
    assert_int_equal(qc.shape[0], 50);
    assert_int_equal(qc.shape[1], 16);
    assert_int_equal(qf.shape[1], 32);
    assert_int_equal(dc.shape[0], 250);
    assert_int_equal(ql.dtype, NAC_DT_I32);
    const uint8_t *bits = qc.data;
    const float *proj = qp.data;
    for (int i = 0; i < 50 * 16; i++) assert_int_equal(bits[i], proj[i] >= 0);
    int counts[10] = {0};
    for (int i = 0; i < 50; i++) counts[((const int32_t *)ql.data)[i]]++;
    for (int k = 0; k < 10; k++) assert_int_equal(counts[k], 5);
    nac_hash_codes_t hq = {0}, hd = {0};
    TU_OK(nac_hash_pack_bits(qc.data, 50, 16, &hq));
    TU_OK(nac_hash_pack_bits(dc.data, 250, 16, &hd));
    double m;
    TU_OK(nac_hash_map(&hq, ql.data, &hd, dl.data, NAC_HASH_RANK_HAMMING, 0, &m));
    assert_true(fabs(m - map_all) < 1e-12);
    TU_OK(nac_hash_map(&hq, ql.data, &hd, dl.data, NAC_HASH_RANK_HAMMING, 50, &m));
    assert_true(fabs(m - map_r) < 1e-12);
    cJSON_Delete(d);

    /* --rank dot01 is the official script's ranking */
    snprintf(path, sizeof path, "%s/hash_dot.json", g_dir);
    char *dargv[] = {"hash", enc, "--queries-per-class", "5", "--rank", "dot01", "--out", path,
                     "--threads", "1"};
    TU_OK(run_cmd(&nac_cmd_hash, 10, dargv));
    d = tu_load_json_path(path);
    TU_OK(nac_hash_map(&hq, ql.data, &hd, dl.data, NAC_HASH_RANK_DOT01, 0, &m));
    assert_true(fabs(m - num(d, "map_all", NULL)) < 1e-12);
    cJSON_Delete(d);
    nac_hash_codes_free(&hq);
    nac_hash_codes_free(&hd);
    nac_npy *all[] = {&qc, &qp, &ql, &dc, &dl, &qf};
    for (int i = 0; i < 6; i++) nac_npy_free(all[i]);

    /* 30 images a class cannot give 1000 queries a class */
    char *qargv[] = {"hash", enc, "--out", path};
    assert_int_equal(run_cmd(&nac_cmd_hash, 4, qargv), NAC_ERR_USAGE);
    assert_non_null(strstr(nac_last_error(), "--queries-per-class"));
}

static void test_bad_inputs(void **state) {
    (void)state;
    char path[192], enc[192];
    snprintf(path, sizeof path, "%s/missing", g_dir);
    char *a1[] = {"probe", path};
    assert_int_equal(run_cmd(&nac_cmd_probe, 2, a1), NAC_ERR_NOINPUT);
    assert_non_null(strstr(nac_last_error(), path));
    /* a folder that is not a run */
    char *a2[] = {"knn", g_dir};
    assert_int_equal(run_cmd(&nac_cmd_knn, 2, a2), NAC_ERR_NOINPUT);
    /* a truncated file */
    snprintf(enc, sizeof enc, "%s/trunc.safetensors", g_dir);
    FILE *f = fopen(enc, "wb");
    fwrite("\x10\x00\x00\x00\x00\x00\x00\x00{", 1, 9, f);
    fclose(f);
    char *a3[] = {"probe", enc};
    assert_int_equal(run_cmd(&nac_cmd_probe, 2, a3), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "trunc.safetensors"));
    /* no config: the dataset must be named */
    snprintf(enc, sizeof enc, "%s/noconfig.safetensors", g_dir);
    make_encoder(enc, NULL);
    char *a4[] = {"knn", enc};
    assert_int_equal(run_cmd(&nac_cmd_knn, 2, a4), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "--dataset"));
    /* the wrong image size for the encoder */
    char *a5[] = {"knn", enc, "--dataset", "fashion-mnist"};
    struct stat st;
    if (stat("/usr/share/datasets/fashion-mnist", &st) == 0) {
        assert_int_equal(run_cmd(&nac_cmd_knn, 4, a5), NAC_ERR_DATA);
        assert_non_null(strstr(nac_last_error(), "3x32x32"));
    }
    /* usage */
    char *a6[] = {"probe", enc, "--epochs"};
    assert_int_equal(run_cmd(&nac_cmd_probe, 3, a6), NAC_ERR_USAGE);
    char *a7[] = {"probe", enc, "--bogus", "1"};
    assert_int_equal(run_cmd(&nac_cmd_probe, 4, a7), NAC_ERR_USAGE);
    assert_non_null(strstr(nac_last_error(), "unknown option"));
    char *a8[] = {"hash", enc, "--rank", "cosine"};
    assert_int_equal(run_cmd(&nac_cmd_hash, 4, a8), NAC_ERR_USAGE);
    char *a9[] = {"probe", enc, "--lrs", "0.1,-1"};
    assert_int_equal(run_cmd(&nac_cmd_probe, 4, a9), NAC_ERR_USAGE);
}

/* `nac bench`: one JSON line with the step's rate, memory and work; bad options are usage
 * errors. */
static void test_bench_cli(void **state) {
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/bench.json", g_dir);
    char *argv[] = {"bench", "--arch", "resnet18", "--width", "0.0625", "--size", "8",
                    "--batch", "2", "--steps", "2", "--warmup", "1", "--threads", "1",
                    "--peak-seconds", "0.1"};
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(dup2(fileno(f), STDOUT_FILENO) >= 0);
    nac_status st = run_cmd(&nac_cmd_bench, sizeof argv / sizeof *argv, argv);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    fclose(f);
    TU_OK(st);
    cJSON *d = tu_load_json_path(path);
    const char *keys[] = {"images_per_s", "step_s", "peak_rss_mb", "backend_peak_mb",
                          "gflop_per_step", "gflop_per_s", "sgemm_gflop_per_s", "fma_gflop_per_s",
                          "peak_gflop_per_s", "of_fp32_peak"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        cJSON *v = cJSON_GetObjectItem(d, keys[i]);
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0))
            fail_msg("nac bench: %s missing or not positive", keys[i]);
    }
    assert_true(cJSON_GetObjectItem(d, "of_fp32_peak")->valuedouble <= 1.0);
    assert_int_equal(cJSON_GetObjectItem(d, "images_per_step")->valueint, 4);
    cJSON_Delete(d);
    char *bad1[] = {"bench", "--arch", "nope"};
    char *bad2[] = {"bench", "--arch", "vgg16_bn", "--size", "16"};
    char *bad3[] = {"bench", "--batch"};
    char *bad4[] = {"bench", "--frobnicate", "1"};
    assert_int_equal(run_cmd(&nac_cmd_bench, 3, bad1), NAC_ERR_USAGE);
    assert_int_equal(run_cmd(&nac_cmd_bench, 5, bad2), NAC_ERR_USAGE);
    assert_int_equal(run_cmd(&nac_cmd_bench, 2, bad3), NAC_ERR_USAGE);
    assert_int_equal(run_cmd(&nac_cmd_bench, 3, bad4), NAC_ERR_USAGE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regions),
        cmocka_unit_test(test_probe_knn),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_bench_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
