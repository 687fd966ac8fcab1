/* `nac plot` on hand-made metrics.jsonl files: two pretraining runs (one still being written,
 * its last line cut off) give one PNG and SVG per quantity, 800 x 500, with each run's
 * colour where its curve is and only there, and a legend entry per run; a VAE run gives its
 * own figures; a malformed line before the last is NAC_ERR_DATA naming file and line (exit
 * 65), a malformed last line is left out; a missing run folder is NAC_ERR_NOINPUT (exit 66). */
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app/app.h"
#include "app/config.h"
#include "app/plot.h"
#include "data/png.h"
#include "testutil.h"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_dir, sizeof g_dir, "nac_plot_test");
}

static int teardown(void **state) {
    (void)state;
    tu_rm_tree(g_dir);
    return 0;
}

static const char *path_in(const char *a, const char *b, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", a, b);
    return buf;
}

/* A run folder dir/name with metrics.jsonl holding text. */
static void make_run(const char *name, const char *text) {
    char dir[256], p[300];
    path_in(g_dir, name, dir, sizeof dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    tu_write_bytes(path_in(dir, "metrics.jsonl", p, sizeof p), text, strlen(text));
}

static nac_status run_cmd(int argc, char **argv) {
    nac_clear_error();
    fflush(stdout);
    return nac_cmd_plot.run(argc, argv);
}

/* Pixels of the PNG within 12 per channel of rgb; the PNG must be 800 x 500 RGB. */
static int count_rgb(const char *path, const uint8_t rgb[3]) {
    uint8_t *px;
    int c, h, w;
    TU_OK(nac_png_read(path, &px, &c, &h, &w));
    assert_int_equal(c, 3);
    assert_int_equal(h, 500);
    assert_int_equal(w, 800);
    size_t plane = (size_t)w * h;
    int n = 0;
    for (size_t i = 0; i < plane; i++)
        n += abs(px[i] - rgb[0]) <= 12 && abs(px[plane + i] - rgb[1]) <= 12 &&
             abs(px[2 * plane + i] - rgb[2]) <= 12;
    free(px);
    return n;
}

static const char RUN_A[] =
    "{\"kind\":\"codes\",\"epochs_done\":0,\"step\":0,\"distinct_codes\":10,\"subset\":200,"
    "\"mean_hamming\":3.5,\"balanced_bits\":0.1}\n"
    "{\"kind\":\"knn\",\"epochs_done\":0,\"step\":0,\"k\":200,\"top1\":0.3,\"top5\":0.7}\n"
    "{\"kind\":\"train\",\"epoch\":1,\"step\":10,\"loss\":5.0,\"lr\":0.1}\n"
    "\n"
    "{\"kind\":\"codes\",\"epochs_done\":1,\"step\":10,\"distinct_codes\":150,\"subset\":200,"
    "\"mean_hamming\":40.0,\"balanced_bits\":0.6}\n"
    "{\"kind\":\"knn\",\"epochs_done\":1,\"step\":10,\"k\":200,\"top1\":0.6,\"top5\":0.9}\n"
    "{\"kind\":\"train\",\"epoch\":2,\"step\":20,\"loss\":4.0,\"lr\":0.05}\n"
    "{\"kind\":\"train\",\"epoch\":3,\"step\":30,\"loss\":3.5,\"lr\":0.01}\n";

/* still being written: the last line is cut in the middle */
static const char RUN_B[] =
    "{\"kind\":\"codes\",\"epochs_done\":0,\"step\":0,\"distinct_codes\":5,\"subset\":200,"
    "\"mean_hamming\":1.5,\"balanced_bits\":0.05}\n"
    "{\"kind\":\"train\",\"epoch\":1,\"step\":10,\"loss\":6.0,\"lr\":0.1}\n"
    "{\"kind\":\"train\",\"epoch\":2,\"step\":20,\"loss\":5.5,\"lr\":0.05}\n"
    "{\"kind\":\"train\",\"epoch\":3,\"st";

static const char *const PRETRAIN_Q[] = {"loss",           "lr",           "knn_top1",
                                         "distinct_codes", "mean_hamming", "balanced_bits"};

static void test_two_runs(void **state) {
    (void)state;
    make_run("runA", RUN_A);
    make_run("runB", RUN_B);
    char a[256], b[256], out[256], p[400];
    path_in(g_dir, "runA", a, sizeof a);
    path_in(g_dir, "runB", b, sizeof b);
    path_in(g_dir, "fig", out, sizeof out);
    char *argv[] = {"plot", a, b, "--out", out};
    TU_OK(run_cmd(5, argv));
    uint8_t ca[3], cb[3];
    nac_plot_palette(0, ca);
    nac_plot_palette(1, cb);
    for (size_t q = 0; q < sizeof PRETRAIN_Q / sizeof *PRETRAIN_Q; q++) {
        snprintf(p, sizeof p, "%s_%s.png", out, PRETRAIN_Q[q]);
        int na = count_rgb(p, ca), nb = count_rgb(p, cb);
        print_message("%s: %d pixels of runA's colour, %d of runB's\n", p, na, nb);
        assert_true(na > 100); /* a curve and its legend key */
        if (!strcmp(PRETRAIN_Q[q], "knn_top1")) assert_int_equal(nb, 0); /* runB has no kNN */
        else assert_true(nb > 100);
        snprintf(p, sizeof p, "%s_%s.svg", out, PRETRAIN_Q[q]);
        char *t;
        TU_OK(nac_read_text_file(p, &t, NULL));
        assert_non_null(strstr(t, "<svg"));
        assert_non_null(strstr(t, "runA"));
        if (strcmp(PRETRAIN_Q[q], "knn_top1")) assert_non_null(strstr(t, "runB"));
        else assert_null(strstr(t, "runB"));
        free(t);
    }
    /* no VAE figures for pretraining runs */
    snprintf(p, sizeof p, "%s_nelbo.png", out);
    assert_false(tu_exists(p));

    /* the curve is where its points are: runA's loss 5.0 at step 10 and 3.5 at step 30 lie on
     * a line, so between them (x 20, y 4.25 in data units) the picture shows runA's colour
     * somewhere on that column of the plot, and runB's where its loss is */
    snprintf(p, sizeof p, "%s_loss.png", out);
    uint8_t *px;
    int c, h, w, cols_a = 0;
    TU_OK(nac_png_read(p, &px, &c, &h, &w));
    size_t plane = (size_t)w * h;
    for (int x = w / 3; x < 2 * w / 3; x++)
        for (int y = h / 5; y < h; y++) {
            size_t i = (size_t)y * w + x;
            if (abs(px[i] - ca[0]) <= 12 && abs(px[plane + i] - ca[1]) <= 12 &&
                abs(px[2 * plane + i] - ca[2]) <= 12) {
                cols_a++;
                break;
            }
        }
    free(px);
    assert_true(cols_a > w / 4); /* runA's line crosses the middle third of the figure */

    /* the default prefix and one format */
    char *argv2[] = {"plot", b, "--format", "svg"};
    TU_OK(run_cmd(4, argv2));
    assert_true(tu_exists(path_in(b, "plot_loss.svg", p, sizeof p)));
    assert_false(tu_exists(path_in(b, "plot_loss.png", p, sizeof p)));
    assert_false(tu_exists(path_in(b, "plot_knn_top1.svg", p, sizeof p)));
}

static void test_vae_run(void **state) {
    (void)state;
    make_run("vae", "{\"kind\":\"diag\",\"epochs_done\":0,\"step\":0,\"images\":100,\"kl\":1.0,"
                    "\"active_units\":3,\"feature_norm\":1.0}\n"
                    "{\"kind\":\"train\",\"epoch\":1,\"step\":50,\"nelbo\":300.5,\"rec\":290.0,"
                    "\"kl\":10.5,\"body_frozen\":true}\n"
                    "{\"kind\":\"diag\",\"epochs_done\":1,\"step\":50,\"images\":100,\"kl\":9.0,"
                    "\"active_units\":12,\"feature_norm\":1.0}\n"
                    "{\"kind\":\"train\",\"epoch\":2,\"step\":100,\"nelbo\":280.0,\"rec\":268.0,"
                    "\"kl\":12.0,\"body_frozen\":false}\n"
                    "{\"kind\":\"eval\",\"images\":100,\"logpx\":-270.0}\n");
    char d[256], p[400];
    path_in(g_dir, "vae", d, sizeof d);
    char *argv[] = {"plot", d, "--format", "png"};
    TU_OK(run_cmd(4, argv));
    uint8_t ca[3];
    nac_plot_palette(0, ca);
    const char *const q[] = {"plot_nelbo.png", "plot_kl.png", "plot_active_units.png"};
    for (int i = 0; i < 3; i++) assert_true(count_rgb(path_in(d, q[i], p, sizeof p), ca) > 100);
    assert_false(tu_exists(path_in(d, "plot_loss.png", p, sizeof p)));
    assert_false(tu_exists(path_in(d, "plot_knn_top1.png", p, sizeof p)));
}

static void test_bad_input(void **state) {
    (void)state;
    make_run("good", RUN_A);
    make_run("bad", "{\"kind\":\"train\",\"epoch\":1,\"step\":10,\"loss\":5.0,\"lr\":0.1}\n"
                    "{\"kind\":\"train\",\"epoch\":2,\"step\":20,\"loss\":4.0,\"lr\n"
                    "{\"kind\":\"train\",\"epoch\":3,\"step\":30,\"loss\":3.5,\"lr\":0.01}\n");
    make_run("empty", "");
    char good[256], bad[256], missing[256], empty[256], out[256];
    path_in(g_dir, "good", good, sizeof good);
    path_in(g_dir, "bad", bad, sizeof bad);
    path_in(g_dir, "missing", missing, sizeof missing);
    path_in(g_dir, "empty", empty, sizeof empty);
    path_in(g_dir, "badfig", out, sizeof out);

    char *a1[] = {"plot", good, bad, "--out", out};
    assert_int_equal(run_cmd(5, a1), NAC_ERR_DATA);
    print_message("malformed line: %s\n", nac_last_error());
    assert_non_null(strstr(nac_last_error(), "bad/metrics.jsonl:2"));
    char p[400];
    snprintf(p, sizeof p, "%s_loss.png", out);
    assert_false(tu_exists(p)); /* nothing drawn from half the runs */

    /* a malformed last line, even a terminated one, is the line being written: left out */
    make_run("badlast", "{\"kind\":\"train\",\"epoch\":1,\"step\":10,\"loss\":5.0,\"lr\":0.1}\n"
                        "{\"kind\":\"train\",\"epoch\":2,\"st\n\n");
    char badlast[256];
    path_in(g_dir, "badlast", badlast, sizeof badlast);
    char *a1b[] = {"plot", badlast, "--format", "svg"};
    TU_OK(run_cmd(4, a1b));
    assert_true(tu_exists(path_in(badlast, "plot_loss.svg", p, sizeof p)));

    char *a2[] = {"plot", good, missing};
    assert_int_equal(run_cmd(3, a2), NAC_ERR_NOINPUT);
    assert_non_null(strstr(nac_last_error(), "missing"));
    char *a3[] = {"plot", empty};
    assert_int_equal(run_cmd(2, a3), NAC_ERR_DATA); /* no curves */
    char *a4[] = {"plot", good, "--format", "gif"};
    assert_int_equal(run_cmd(4, a4), NAC_ERR_USAGE);
    char *a5[] = {"plot"};
    assert_int_equal(run_cmd(1, a5), NAC_ERR_USAGE);
    char *a6[] = {"plot", good, "--bogus"};
    assert_int_equal(run_cmd(3, a6), NAC_ERR_USAGE);

    /* the program: exit codes 65 and 66 with the message on stderr */
    if (access(NAC_NAC_EXE, X_OK) != 0) {
        print_message("%s is not built: the exit-code check is skipped\n", NAC_NAC_EXE);
        return;
    }
    char err[1024];
    char *e1[] = {NAC_NAC_EXE, "plot", bad, NULL};
    assert_int_equal(tu_run_exe(g_dir, e1, err, sizeof err), 65);
    if (!strstr(err, "metrics.jsonl:2")) fail_msg("stderr: %s", err);
    char *e2[] = {NAC_NAC_EXE, "plot", missing, NULL};
    assert_int_equal(tu_run_exe(g_dir, e2, err, sizeof err), 66);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vae_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
