/* `nac sweep` end to end on tiny synthetic data (a ResNet-18 at 1/16 width, 100 images, one
 * epoch a p): results.json, results.md and sweep.png are written and agree with the sub-runs'
 * probe and hash results; running again keeps finished p's (same files, untouched) and does
 * only the missing work; bad p's end with NAC_ERR_CONFIG (exit 78) naming the key. Also the
 * plot code behind sweep.png and sweep.svg (cairo): the image, the chart's layout, curves,
 * ticks, labels and legend, the SVG's legend text. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app/app.h"
#include "app/config.h"
#include "app/plot.h"
#include "data/png.h"
#include "io/safetensors.h"
#include "testutil.h"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_dir, sizeof g_dir, "nac_sweep_test");
}

static int teardown(void **state) {
    (void)state;
    tu_rm_tree(g_dir);
    return 0;
}

static const uint8_t BLUE[3] = {30, 90, 200}, RED[3] = {200, 40, 40}; /* the sweep's colours */

/* ---- the renderer (cairo; anti-aliased, so colours are matched within a tolerance) ---- */

typedef struct raster {
    int w, h;
    uint8_t *px; /* (3, h, w) */
} raster;

static raster from_image(const nac_plot_image *im) {
    raster r = {im->w, im->h, malloc((size_t)3 * im->w * im->h)};
    assert_non_null(r.px);
    size_t plane = (size_t)im->w * im->h;
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++) {
            uint8_t c[3];
            nac_plot_image_rgb(im, x, y, c);
            for (int k = 0; k < 3; k++) r.px[k * plane + (size_t)y * im->w + x] = c[k];
        }
    return r;
}

/* Pixel (x, y) has colour rgb (each channel within 12: the inside of a line or marker). */
static bool has_rgb(const raster *im, int x, int y, const uint8_t rgb[3]) {
    if (x < 0 || y < 0 || x >= im->w || y >= im->h) return false;
    size_t plane = (size_t)im->w * im->h, at = (size_t)y * im->w + x;
    for (int k = 0; k < 3; k++)
        if (abs((int)im->px[k * plane + at] - rgb[k]) > 12) return false;
    return true;
}

/* Some pixel within 1 of (x, y) has colour rgb. */
static bool near_rgb(const raster *im, int x, int y, const uint8_t rgb[3]) {
    for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++)
            if (has_rgb(im, x + dx, y + dy, rgb)) return true;
    return false;
}

/* Dark ink: text and axes (every channel under 110). */
static bool dark(const raster *im, int x, int y) {
    size_t plane = (size_t)im->w * im->h, at = (size_t)y * im->w + x;
    return im->px[at] < 110 && im->px[plane + at] < 110 && im->px[2 * plane + at] < 110;
}

static void test_image(void **state) {
    (void)state;
    nac_plot_image im;
    assert_int_equal(nac_plot_image_create(&im, 0, 10), NAC_ERR_INVALID);
    assert_int_equal(nac_plot_image_create(&im, 10, 100000), NAC_ERR_INVALID);
    TU_OK(nac_plot_image_create(&im, 17, 9));
    uint8_t c[3];
    nac_plot_image_rgb(&im, 16, 8, c);
    assert_true(c[0] == 255 && c[1] == 255 && c[2] == 255); /* white */
    /* written atomically, mode 0666 less the umask, readable by the project's PNG reader */
    char path[256];
    snprintf(path, sizeof path, "%s/blank.png", g_dir);
    mode_t old = umask(027);
    nac_status st = nac_plot_image_write_png(&im, path);
    umask(old);
    TU_OK(st);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0640);
    uint8_t *px;
    int ch, h, w;
    TU_OK(nac_png_read(path, &px, &ch, &h, &w));
    assert_true(ch == 3 && h == 9 && w == 17);
    for (int i = 0; i < 3 * 9 * 17; i++) assert_int_equal(px[i], 255);
    free(px);
    snprintf(path, sizeof path, "%s/no/such/dir/x.png", g_dir);
    assert_int_not_equal(nac_plot_image_write_png(&im, path), NAC_OK);
    nac_plot_image_free(&im);
    nac_plot_image_free(&im); /* freeing twice is harmless */
    /* nice axes */
    double lo, hi, step;
    nac_plot_nice_range(0.13, 0.87, 5, &lo, &hi, &step);
    assert_true(fabs(step - 0.2) < 1e-12 && fabs(lo) < 1e-12 && fabs(hi - 1) < 1e-12);
    nac_plot_nice_range(3, 3, 5, &lo, &hi, &step); /* flat */
    assert_true(lo <= 3 && hi >= 3 && hi > lo && step > 0);
    nac_plot_nice_range(NAN, 1, 5, &lo, &hi, &step);
    assert_true(hi > lo && step > 0);
}

static void test_chart(void **state) {
    (void)state;
    nac_plot_image img;
    TU_OK(nac_plot_image_create(&img, 640, 440));
    const double x[5] = {0.1, 0.3, 0.35, 0.4, 0.45}, y[5] = {0.5, 0.8, NAN, 0.2, 7.0};
    const double y2[2] = {0.25, 0.25};
    const nac_plot_series s[2] = {{"probe top-1", x, y, 5, {30, 90, 200}},
                                  {"mAP@all", x, y2, 2, {200, 40, 40}}};
    const nac_plot_axes ax = {"title", "p (flip probability)", "accuracy", 0, 0.5, 0.1, 0, 1, 0.2};
    nac_plot_area a;
    TU_OK(nac_plot_chart(&img, &ax, s, 2, &a));
    raster rr = from_image(&img), *im = &rr;
    assert_true(a.x0 > 30 && a.x1 < 640 && a.y0 > 30 && a.y1 < 440 - 40);
    assert_true(a.x1 - a.x0 > 400 && a.y1 - a.y0 > 250);
#define PX(v) (a.x0 + (int)lround((v) / 0.5 * (a.x1 - a.x0)))
#define PY(v) (a.y1 - (int)lround((v) * (a.y1 - a.y0)))
    /* markers at the points, the line between the first two, nothing for NaN */
    assert_true(has_rgb(im, PX(0.1), PY(0.5), BLUE));
    assert_true(has_rgb(im, PX(0.3), PY(0.8), BLUE));
    assert_true(has_rgb(im, PX(0.4), PY(0.2), BLUE));
    assert_true(near_rgb(im, (PX(0.1) + PX(0.3)) / 2, (PY(0.5) + PY(0.8)) / 2, BLUE));
    assert_true(near_rgb(im, PX(0.2), PY(0.25), RED));
    assert_false(near_rgb(im, PX(0.35), PY(0.5), BLUE));
    assert_false(near_rgb(im, PX(0.25), PY(0.65), BLUE)); /* empty space stays white */
    assert_true(has_rgb(im, PX(0.25), PY(0.65), (const uint8_t[3]){255, 255, 255}));
    /* the point at y = 7 is clipped: no blue above the plot area except the legend's key */
    for (int yy = a.y0 - 20; yy < a.y0 - 6; yy++)
        for (int xx = PX(0.4); xx <= PX(0.45) + 3; xx++) assert_false(has_rgb(im, xx, yy, BLUE));
    /* tick values under the x ticks and left of the y ticks; labels in the margins */
    for (int k = 0; k <= 5; k++) {
        int xt = PX(0.1 * k), ink = 0;
        for (int yy = a.y1 + 8; yy < a.y1 + 32; yy++)
            for (int xx = xt - 20; xx <= xt + 20; xx++) ink += dark(im, xx, yy);
        if (ink < 10) fail_msg("no tick value under x tick %d (%d dark pixels)", k, ink);
    }
    for (int k = 0; k <= 5; k++) {
        int yt = PY(0.2 * k), ink = 0;
        for (int yy = yt - 8; yy <= yt + 8; yy++)
            for (int xx = a.x0 - 50; xx < a.x0 - 8; xx++) ink += dark(im, xx, yy);
        if (ink < 10) fail_msg("no tick value left of y tick %d (%d dark pixels)", k, ink);
    }
    int xlab = 0, ylab = 0, legend_blue = 0, legend_red = 0;
    for (int yy = a.y1 + 35; yy < 440; yy++)
        for (int xx = a.x0; xx < a.x1; xx++) xlab += dark(im, xx, yy);
    for (int yy = a.y0; yy < a.y1; yy++)
        for (int xx = 0; xx < 25; xx++) ylab += dark(im, xx, yy);
    for (int yy = 0; yy < a.y0 - 6; yy++)
        for (int xx = 0; xx < 640; xx++) {
            legend_blue += has_rgb(im, xx, yy, BLUE);
            legend_red += has_rgb(im, xx, yy, RED);
        }
    print_message("chart: plot area (%d, %d)-(%d, %d); x label %d px, y label %d px, legend keys "
                  "%d + %d px\n", a.x0, a.y0, a.x1, a.y1, xlab, ylab, legend_blue, legend_red);
    assert_true(xlab > 50 && ylab > 30 && legend_blue > 40 && legend_red > 40);
    free(rr.px);
    /* the SVG of the same chart: a document of that size with the legend's labels as text */
    char path[256];
    snprintf(path, sizeof path, "%s/chart.svg", g_dir);
    TU_OK(nac_plot_chart_svg(path, 640, 440, &ax, s, 2));
    char *t;
    TU_OK(nac_read_text_file(path, &t, NULL));
    assert_non_null(strstr(t, "<svg"));
    assert_non_null(strstr(t, "width=\"640px\""));
    assert_non_null(strstr(t, "<title>title</title>"));
    assert_non_null(strstr(t, "probe top-1"));
    assert_non_null(strstr(t, "mAP@all"));
    assert_non_null(strstr(t, "</svg>"));
    free(t);
    /* bad axes and images */
    nac_plot_axes bad = ax;
    bad.xmax = bad.xmin;
    assert_int_equal(nac_plot_chart(&img, &bad, s, 2, NULL), NAC_ERR_INVALID);
    assert_int_equal(nac_plot_chart_svg(path, 640, 440, &bad, s, 2), NAC_ERR_INVALID);
    bad = ax;
    bad.ystep = 1e-6; /* a million ticks */
    assert_int_equal(nac_plot_chart(&img, &bad, s, 2, NULL), NAC_ERR_INVALID);
    bad = ax;
    bad.xstep = NAN;
    assert_int_equal(nac_plot_chart(&img, &bad, s, 2, NULL), NAC_ERR_INVALID);
    /* a legend that wraps: more rows push the plot down; too many leave no room */
    nac_plot_series many[40];
    for (int i = 0; i < 40; i++)
        many[i] = (nac_plot_series){"a rather long legend label", x, y2, 2, {0, 0, 0}};
    nac_plot_area a3;
    TU_OK(nac_plot_chart(&img, &ax, many, 3, &a3));
    assert_true(a3.y0 > a.y0 && a3.x0 == a.x0);
    assert_int_equal(nac_plot_chart(&img, &ax, many, 40, NULL), NAC_ERR_INVALID);
    assert_int_equal(nac_plot_chart_svg(path, 640, 440, &ax, many, 40), NAC_ERR_INVALID);
    nac_plot_image_free(&img);
    TU_OK(nac_plot_image_create(&img, 150, 100));
    assert_int_equal(nac_plot_chart(&img, &ax, s, 2, NULL), NAC_ERR_INVALID);
    nac_plot_image_free(&img);
#undef PX
#undef PY
}

/* ---- the command ---- */

static nac_status run_cmd(int argc, char **argv) {
    nac_clear_error();
    fflush(stdout);
    return nac_cmd_sweep.run(argc, argv);
}

static cJSON *load_json(const char *path) {
    char *t;
    TU_OK(nac_read_text_file(path, &t, NULL));
    cJSON *d = cJSON_Parse(t);
    free(t);
    if (!d) fail_msg("%s is not JSON", path);
    return d;
}

static double num(const cJSON *d, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, key);
    if (!cJSON_IsNumber(v)) fail_msg("no number \"%s\"", key);
    return v->valuedouble;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The sweep config (p overridable on the command line) and its tiny pretraining config. */
static void write_configs(char *sweep_path, size_t n) {
    char pre[128], text[1024];
    snprintf(pre, sizeof pre, "%s/pre.json", g_dir);
    write_text(
        pre,
        "{\"data\": {\"dataset\": \"synthetic\", \"path\": \"\", \"synthetic_n\": 100},\n"
        " \"model\": {\"arch\": \"resnet18\", \"width_mult\": 0.0625, \"proj_dim\": 16},\n"
        " \"augment\": {\"crop_min\": 0.5},\n"
        " \"optim\": {\"warmup_epochs\": 0},\n"
        " \"train\": {\"epochs\": 1, \"batch\": 20, \"seed\": 0, \"workers\": 1, \"threads\": 1,\n"
        "           \"log_every\": 1, \"stats_subset\": 20},\n"
        " \"run\": {\"dir\": \"unused\", \"name\": \"unused\"}}\n");
    snprintf(text, sizeof text,
             "{\"pretrain_config\": \"%s\", \"p\": \"0.3, 0.1\", \"probe_epochs\": 2,\n"
             " \"hash_queries_per_class\": 2, \"threads\": 1,\n"
             " \"run\": {\"dir\": \"%s/runs\", \"name\": \"sw\"}}\n", pre, g_dir);
    snprintf(sweep_path, n, "%s/sweep.json", g_dir);
    write_text(sweep_path, text);
}

typedef struct file_id {
    ino_t ino;
    struct timespec mtime;
    off_t size;
} file_id;

static file_id id_of(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) fail_msg("%s is missing", path);
    return (file_id){st.st_ino, st.st_mtim, st.st_size};
}

static bool same_file(file_id a, file_id b) {
    return a.ino == b.ino && a.size == b.size && a.mtime.tv_sec == b.mtime.tv_sec &&
           a.mtime.tv_nsec == b.mtime.tv_nsec;
}

/* results.json has these p's in order; each row's numbers are those of its sub-run. */
static void check_results(const char *sw, const double *want_p, int n) {
    char path[256];
    snprintf(path, sizeof path, "%s/results.json", sw);
    cJSON *d = load_json(path);
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(d, "rows");
    assert_int_equal(cJSON_GetArraySize(rows), n);
    for (int i = 0; i < n; i++) {
        const cJSON *r = cJSON_GetArrayItem(rows, i);
        double p = num(r, "p"), top1 = num(r, "probe_top1"), map = num(r, "map_all");
        assert_true(p == want_p[i]);
        if (!(top1 >= 0 && top1 <= 1 && map > 0 && map <= 1))
            fail_msg("p %g: top-1 %g, mAP %g not in [0, 1]", p, top1, map);
        const char *run = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "run"));
        char want_run[32];
        snprintf(want_run, sizeof want_run, "p%g", p);
        assert_non_null(run);
        assert_string_equal(run, want_run);
        snprintf(path, sizeof path, "%s/%s/probe_results.json", sw, run);
        cJSON *pr = load_json(path);
        assert_true(num(pr, "top1") == top1);
        cJSON_Delete(pr);
        snprintf(path, sizeof path, "%s/%s/hash_results.json", sw, run);
        cJSON *hr = load_json(path);
        assert_true(num(hr, "map_all") == map);
        assert_true(num(hr, "queries") == 20);
        cJSON_Delete(hr);
    }
    cJSON_Delete(d);
    /* results.md: one table row a p, in the same order */
    snprintf(path, sizeof path, "%s/results.md", sw);
    char *md;
    TU_OK(nac_read_text_file(path, &md, NULL));
    const char *at = md;
    for (int i = 0; i < n; i++) {
        char row[32];
        snprintf(row, sizeof row, "\n| %g | ", want_p[i]);
        const char *hit = strstr(at, row);
        if (!hit) fail_msg("results.md lacks the row for p %g in order:\n%s", want_p[i], md);
        at = hit + 1;
    }
    free(md);
}

/* sweep.png: a PNG (signature, IHDR 640 x 440 RGB 8-bit) with both series' colours. */
static void check_png(const char *sw) {
    char path[256];
    snprintf(path, sizeof path, "%s/sweep.png", sw);
    unsigned char *b;
    size_t n;
    TU_OK(nac_read_file(path, &b, &n));
    assert_true(n > 33);
    assert_memory_equal(b, "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
    uint32_t w = (uint32_t)b[16] << 24 | b[17] << 16 | b[18] << 8 | b[19];
    uint32_t h = (uint32_t)b[20] << 24 | b[21] << 16 | b[22] << 8 | b[23];
    assert_int_equal(w, 640);
    assert_int_equal(h, 440);
    assert_int_equal(b[24], 8); /* bit depth */
    assert_int_equal(b[25], 2); /* RGB */
    free(b);
    uint8_t *px;
    int c, ph, pw;
    TU_OK(nac_png_read(path, &px, &c, &ph, &pw));
    assert_int_equal(c, 3);
    assert_int_equal(ph, 440);
    assert_int_equal(pw, 640);
    raster rr = {pw, ph, px}, *im = &rr;
    int blue = 0, red = 0, black_low = 0;
    for (int y = 0; y < ph; y++)
        for (int x = 0; x < pw; x++) {
            blue += has_rgb(im, x, y, BLUE);
            red += has_rgb(im, x, y, RED);
            black_low += y > ph - 60 && dark(im, x, y); /* tick values, x label */
        }
    print_message("sweep.png: %d blue, %d red, %d black pixels in the bottom 60 rows\n", blue, red,
                  black_low);
    assert_true(blue > 200 && red > 200 && black_low > 150);
    free(px);
    snprintf(path, sizeof path, "%s/sweep.svg", sw);
    char *t;
    TU_OK(nac_read_text_file(path, &t, NULL));
    assert_non_null(strstr(t, "probe top-1"));
    free(t);
}

static void test_sweep(void **state) {
    (void)state;
    char cfg[128], sw[128], path[256];
    write_configs(cfg, sizeof cfg);
    snprintf(sw, sizeof sw, "%s/runs/sw", g_dir);
    char *argv[] = {"sweep", "-c", cfg};
    TU_OK(run_cmd(3, argv));
    const double two[2] = {0.1, 0.3};
    check_results(sw, two, 2); /* rows in increasing p, whatever the config's order */
    check_png(sw);

    /* the same command again: every file of the finished p's is kept, the results agree */
    const char *kept[] = {"encoder.safetensors", "probe_results.json", "hash_results.json",
                          "metrics.jsonl"};
    file_id before[2][4];
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) {
            snprintf(path, sizeof path, "%s/p%g/%s", sw, two[i], kept[k]);
            before[i][k] = id_of(path);
        }
    snprintf(path, sizeof path, "%s/results.json", sw);
    char *first, *again;
    TU_OK(nac_read_text_file(path, &first, NULL));
    TU_OK(run_cmd(3, argv));
    TU_OK(nac_read_text_file(path, &again, NULL));
    assert_string_equal(first, again);
    free(again);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) {
            snprintf(path, sizeof path, "%s/p%g/%s", sw, two[i], kept[k]);
            if (!same_file(before[i][k], id_of(path))) fail_msg("%s was rewritten", path);
        }
    snprintf(path, sizeof path, "%s/p0.1-2", sw);
    assert_false(tu_exists(path));

    /* a p added later: only it is pretrained; a lost probe result is redone on the kept encoder */
    snprintf(path, sizeof path, "%s/p0.3/probe_results.json", sw);
    assert_int_equal(remove(path), 0);
    char *argv3[] = {"sweep", "-c", cfg, "p=0.1,0.3,0.2"};
    TU_OK(run_cmd(4, argv3));
    const double three[3] = {0.1, 0.2, 0.3};
    check_results(sw, three, 3);
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s/p0.1/%s", sw, kept[k]);
        if (!same_file(before[0][k], id_of(path))) fail_msg("%s was rewritten", path);
        snprintf(path, sizeof path, "%s/p0.3/%s", sw, kept[k]);
        if (k == 0 || k == 2) assert_true(same_file(before[1][k], id_of(path)));
        if (k == 1) assert_false(same_file(before[1][k], id_of(path))); /* probed again */
    }
    /* the re-probed encoder is the same, so is its (deterministic) result */
    snprintf(path, sizeof path, "%s/results.json", sw);
    cJSON *d = load_json(path);
    cJSON *f = cJSON_Parse(first);
    const cJSON *now = cJSON_GetObjectItemCaseSensitive(d, "rows");
    const cJSON *then = cJSON_GetObjectItemCaseSensitive(f, "rows");
    assert_true(num(cJSON_GetArrayItem(now, 2), "probe_top1") ==
                num(cJSON_GetArrayItem(then, 1), "probe_top1"));
    cJSON_Delete(d);
    cJSON_Delete(f);
    free(first);
    snprintf(path, sizeof path, "%s/p0.2/config.json", sw);
    d = load_json(path);
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(d, "method");
    assert_true(num(method, "p") == 0.2);
    const cJSON *objective = cJSON_GetObjectItemCaseSensitive(method, "objective");
    assert_string_equal(cJSON_GetStringValue(objective), "nac");
    cJSON_Delete(d);
    check_png(sw);

    /* a sub-run folder without an encoder (an interrupted pretraining) is not overwritten */
    snprintf(path, sizeof path, "%s/p0.4", sw);
    assert_int_equal(mkdir(path, 0777), 0);
    char *argv4[] = {"sweep", "-c", cfg, "p=0.4"};
    assert_int_equal(run_cmd(4, argv4), NAC_ERR_CONFIG);
    assert_non_null(strstr(nac_last_error(), path));
    assert_non_null(strstr(nac_last_error(), "--resume"));
}

/* Run the real program; its exit status, stderr into err. */
static void test_bad_p(void **state) {
    (void)state;
    char cfg[128], runs[128], o_runs[160];
    write_configs(cfg, sizeof cfg);
    snprintf(runs, sizeof runs, "%s/badruns", g_dir);
    snprintf(o_runs, sizeof o_runs, "run.dir=%s", runs);
    static const char seventeen[] =
        "p=0.01,0.02,0.03,0.04,0.05,0.06,0.07,0.08,0.09,0.11,0.12,0.13,0.14,0.15,0.16,0.17,0.18";
    const char *bad[] = {"p=0.6", "p=0", "p=0.5", "p=-0.1", "p=0.1,abc", "p=nan", "p=", "p= , ",
                         "p=0.1,0.10", seventeen};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *argv[] = {"sweep", "-c", cfg, o_runs, (char *)bad[i]};
        nac_status s = run_cmd(5, argv);
        if (s != NAC_ERR_CONFIG) fail_msg("%s: got %s", bad[i], nac_status_name(s));
        assert_int_equal(nac_status_exit_code(s), 78);
        const char *msg = nac_last_error();
        if (!strstr(msg, "\"p\"") || !strstr(msg, cfg)) fail_msg("%s: message \"%s\"", bad[i], msg);
        print_message("%-12.12s -> %s\n", bad[i], msg + strlen(cfg) + 2);
    }
    assert_false(tu_exists(runs)); /* nothing written */
    /* a wrong key in the config names it */
    char typo[128];
    snprintf(typo, sizeof typo, "%s/typo.json", g_dir);
    write_text(typo, "{\"p\": \"0.1\", \"probe_epoch\": 3}");
    char *argv[] = {"sweep", "-c", typo};
    assert_int_equal(run_cmd(3, argv), NAC_ERR_CONFIG);
    assert_non_null(strstr(nac_last_error(), "probe_epoch"));
    char *usage[] = {"sweep", "--bogus"};
    assert_int_equal(run_cmd(2, usage), NAC_ERR_USAGE);

    /* the program itself: exit code 78 and the message on stderr */
    if (access(NAC_NAC_EXE, X_OK) != 0) {
        print_message("%s is not built: the exit-code check of the program is skipped\n",
                      NAC_NAC_EXE);
        return;
    }
    char err[1024];
    char *eargv[] = {NAC_NAC_EXE, "sweep", "-c", cfg, o_runs, "p=0.1,0.6", NULL};
    assert_int_equal(tu_run_exe(g_dir, eargv, err, sizeof err), 78);
    if (!strstr(err, "\"p\"") || !strstr(err, "0.6")) fail_msg("stderr: %s", err);
    assert_false(tu_exists(runs));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image),
        cmocka_unit_test(test_chart),
        cmocka_unit_test(test_bad_p),
        cmocka_unit_test(test_sweep),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
