/* `nac sweep` end to end on tiny synthetic data (a ResNet-18 at 1/16 width, 100 images, one
 * epoch a p): results.json, results.md and sweep.png are written and agree with the sub-runs'
 * probe and hash results; running again keeps finished p's (same files, untouched) and does
 * only the missing work; bad p's end with NAC_ERR_CONFIG (exit 78) naming the key. Also the
 * plot code behind sweep.png: the 5x7 font pixel by pixel, clipping, and the chart layout. */
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

static const uint8_t BLACK[3] = {0, 0, 0};
static const uint8_t BLUE[3] = {30, 90, 200}, RED[3] = {200, 40, 40}; /* the sweep's colours */

/* ---- the font ---- */

static bool inked(const nac_plot_image *im, int x, int y) {
    size_t plane = (size_t)im->w * im->h, at = (size_t)y * im->w + x;
    return im->px[at] != 255 || im->px[plane + at] != 255 || im->px[2 * plane + at] != 255;
}

static bool has_rgb(const nac_plot_image *im, int x, int y, const uint8_t rgb[3]) {
    size_t plane = (size_t)im->w * im->h, at = (size_t)y * im->w + x;
    return im->px[at] == rgb[0] && im->px[plane + at] == rgb[1] && im->px[2 * plane + at] == rgb[2];
}

static int count_ink(const nac_plot_image *im) {
    int n = 0;
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++) n += inked(im, x, y);
    return n;
}

/* Ink bounding box: x0, y0, x1, y1 inclusive; false if blank. */
static bool ink_box(const nac_plot_image *im, int box[4]) {
    box[0] = box[1] = INT_MAX, box[2] = box[3] = -1;
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++)
            if (inked(im, x, y)) {
                if (x < box[0]) box[0] = x;
                if (y < box[1]) box[1] = y;
                if (x > box[2]) box[2] = x;
                if (y > box[3]) box[3] = y;
            }
    return box[2] >= 0;
}

static void clear(nac_plot_image *im) { memset(im->px, 255, (size_t)3 * im->w * im->h); }

/* The image at scale 1, origin (ox, oy), must show exactly the pattern (rows of '#'/'.'). */
static void expect_pattern(const nac_plot_image *im, int ox, int oy, const char *const *rows,
                           int nrows, const char *what) {
    int n = 0;
    for (int r = 0; r < nrows; r++)
        for (int c = 0; rows[r][c]; c++) {
            bool want = rows[r][c] == '#';
            n += want;
            if (inked(im, ox + c, oy + r) != want)
                fail_msg("%s: pixel (%d, %d) of the glyph is %s", what, c, r,
                         want ? "blank" : "inked");
        }
    assert_int_equal(count_ink(im), n); /* nothing outside the pattern */
}

static void test_font(void **state) {
    (void)state;
    assert_int_equal(nac_plot_text_width("", 1), 0);
    assert_int_equal(nac_plot_text_width("0.5", 1), 17);
    assert_int_equal(nac_plot_text_width("mAP@all", 2), 82);
    const char *needed = "0123456789.-p (flip probability)top-1mAP@allaccuracyhashNAC,";
    for (const char *c = needed; *c; c++) assert_true(nac_plot_has_glyph(*c));
    assert_false(nac_plot_has_glyph('\t'));

    nac_plot_image im;
    TU_OK(nac_plot_image_create(&im, 16, 16));
    /* two glyphs, pixel by pixel, at scale 1 */
    static const char *const one[] = {"..#..", ".##..", "..#..", "..#..",
                                      "..#..", "..#..", ".###."};
    nac_plot_text(&im, 3, 2, "1", 1, false, BLACK);
    expect_pattern(&im, 3, 2, one, 7, "'1'");
    clear(&im);
    static const char *const A[] = {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"};
    nac_plot_text(&im, 0, 0, "A", 1, false, BLACK);
    expect_pattern(&im, 0, 0, A, 7, "'A'");
    clear(&im);
    /* p hangs two rows below the box */
    static const char *const p[] = {".....", ".....", "####.", "#...#", "#...#", "#...#",
                                    "####.", "#....", "#...."};
    nac_plot_text(&im, 4, 4, "p", 1, false, BLACK);
    expect_pattern(&im, 4, 4, p, 9, "'p'");
    clear(&im);
    /* a vertical 'L' reads bottom to top: its stem is the bottom row, its foot the right column */
    static const char *const Lv[] = {".......", "......#", "......#", "......#", "......#",
                                     "#######"};
    nac_plot_text(&im, 2, 1, "L", 1, true, BLACK);
    expect_pattern(&im, 2, 0, Lv, 6, "vertical 'L'");
    clear(&im);

    /* every visible glyph: non-empty, inside its 5x7 box (g p q y: 2 rows lower), and no two
     * alike; digits and wide capitals span exactly 5 x 7 */
    static uint8_t bitmaps[95][9][5];
    for (int ch = '!'; ch <= '~'; ch++) {
        char s[2] = {(char)ch, 0};
        nac_plot_text(&im, 5, 3, s, 1, false, BLACK);
        int b[4];
        if (!ink_box(&im, b)) fail_msg("glyph '%c' is empty", ch);
        int drop = strchr("gpqy", ch) ? 2 : 0;
        if (b[0] < 5 || b[2] > 9 || b[1] < 3 + drop || b[3] > 9 + drop)
            fail_msg("glyph '%c' inks (%d..%d, %d..%d), outside its box", ch, b[0], b[2], b[1],
                     b[3]);
        if (strchr("0234568ABEHMNOUWZ", ch) && (b[2] - b[0] != 4 || b[3] - b[1] != 6))
            fail_msg("glyph '%c' is %d x %d, want 5 x 7", ch, b[2] - b[0] + 1, b[3] - b[1] + 1);
        for (int y = 0; y < 9; y++)
            for (int x = 0; x < 5; x++) bitmaps[ch - ' '][y][x] = inked(&im, 5 + x, 3 + y);
        for (int o = '!'; o < ch; o++)
            if (!memcmp(bitmaps[o - ' '], bitmaps[ch - ' '], sizeof bitmaps[0]))
                fail_msg("glyphs '%c' and '%c' are the same", o, ch);
        clear(&im);
    }
    /* a character without a glyph draws as '?'; ' ' draws nothing */
    nac_plot_text(&im, 5, 3, "\t ", 1, false, BLACK);
    for (int y = 0; y < 9; y++)
        for (int x = 0; x < 5; x++)
            assert_int_equal(inked(&im, 5 + x, 3 + y), bitmaps['?' - ' '][y][x]);
    clear(&im);
    /* scale 2: a 10 x 14 box of 2 x 2 blocks; the second character 12 pixels on */
    nac_plot_text(&im, 1, 1, "EE", 2, false, BLACK);
    int b[4];
    assert_true(ink_box(&im, b));
    assert_int_equal(b[0], 1);
    assert_int_equal(b[1], 1);
    assert_int_equal(b[3], 14);
    assert_int_equal(b[2], 15); /* the second E is cut by the edge at 16 */
    for (int y = 1; y < 15; y++)
        for (int x = 1; x < 11; x++) {
            bool want = bitmaps['E' - ' '][(y - 1) / 2][(x - 1) / 2];
            assert_int_equal(inked(&im, x, y), want);
            if (x + 12 < 16) assert_int_equal(inked(&im, x + 12, y), want);
        }
    nac_plot_image_free(&im);
    nac_plot_image_free(&im); /* freeing twice is harmless */
}

static void test_clipping(void **state) {
    (void)state;
    nac_plot_image im;
    TU_OK(nac_plot_image_create(&im, 20, 10));
    /* 'E' two columns off the left edge: its last three columns show */
    nac_plot_text(&im, -2, 0, "E", 1, false, BLACK);
    static const char *const Ecut[] = {"###", "...", "...", "##.", "...", "...", "###"};
    expect_pattern(&im, 0, 0, Ecut, 7, "'E' cut at the left edge");
    clear(&im);
    /* a long string off the right and bottom edges: what fits is drawn */
    nac_plot_text(&im, 14, 0, "probe top-1, hash mAP@all", 2, false, BLACK);
    /* 'p' at scale 2: the top of its bowl is row 2 of the box: pixel rows 4-5 */
    assert_true(inked(&im, 14, 4) && inked(&im, 19, 5) && inked(&im, 15, 9));
    assert_false(inked(&im, 13, 4) || inked(&im, 14, 3) || inked(&im, 16, 6));
    clear(&im);
    nac_plot_text(&im, 0, -100, "a long vertical label", 1, true, BLACK);
    nac_plot_text(&im, 3, 5, "vertical", 3, true, BLACK);
    assert_true(count_ink(&im) > 0);
    clear(&im);
    /* far away, huge or degenerate: nothing drawn, no crash */
    const int64_t far[][2] = {{INT_MAX, 0}, {INT_MIN, 5}, {0, INT_MAX}, {INT64_MAX, INT64_MAX},
                              {INT64_MIN, INT64_MIN}, {-1000000, 3}, {20, 0}, {0, 10}};
    for (size_t i = 0; i < sizeof far / sizeof *far; i++) {
        nac_plot_text(&im, far[i][0], far[i][1], "mAP@all", 4, false, BLACK);
        nac_plot_text(&im, far[i][0], far[i][1], "mAP@all", 4, true, BLACK);
        nac_plot_rect(&im, far[i][0], far[i][1], 50, 50, BLACK);
    }
    nac_plot_text(&im, 0, 0, "x", 0, false, BLACK);
    nac_plot_text(&im, 0, 0, "E", INT_MAX, false, BLACK); /* one block covering everything */
    assert_int_equal(count_ink(&im), 20 * 10);
    clear(&im);
    assert_int_equal(count_ink(&im), 0);
    nac_plot_rect(&im, INT64_MAX - 3, INT64_MAX - 3, INT64_MAX, INT64_MAX, BLACK);
    nac_plot_line(&im, INT_MIN, INT_MIN, INT_MAX, INT_MIN, 3, BLACK);
    assert_int_equal(count_ink(&im), 0);
    /* a line through the image from far outside: clipped, the diagonal inked */
    nac_plot_line(&im, -1000, -1000, 1000, 1000, 1, BLACK);
    for (int k = 0; k < 10; k++) assert_true(inked(&im, k, k));
    assert_int_equal(count_ink(&im), 10);
    nac_plot_line(&im, INT_MIN, INT_MIN, INT_MAX, INT_MAX, 1, BLACK); /* the same diagonal */
    assert_int_equal(count_ink(&im), 10);
    /* the clip rectangle */
    clear(&im);
    nac_plot_clip(&im, 5, 2, 8, 4);
    nac_plot_rect(&im, 0, 0, 20, 10, RED);
    assert_int_equal(count_ink(&im), 6);
    assert_true(has_rgb(&im, 5, 2, RED) && has_rgb(&im, 7, 3, RED));
    nac_plot_clip_reset(&im);
    nac_plot_image_free(&im);
    assert_int_equal(nac_plot_image_create(&im, 0, 10), NAC_ERR_INVALID);
}

static void test_chart(void **state) {
    (void)state;
    nac_plot_image im;
    TU_OK(nac_plot_image_create(&im, 640, 440));
    const double x[5] = {0.1, 0.3, 0.35, 0.4, 0.45}, y[5] = {0.5, 0.8, NAN, 0.2, 7.0};
    const double y2[2] = {0.25, 0.25};
    const nac_plot_series s[2] = {{"probe top-1", x, y, 5, {30, 90, 200}},
                                  {"mAP@all", x, y2, 2, {200, 40, 40}}};
    const nac_plot_axes ax = {"title", "p (flip probability)", "accuracy", 0, 0.5, 0.1, 0, 1, 0.2};
    nac_plot_area a;
    TU_OK(nac_plot_chart(&im, &ax, s, 2, &a));
    assert_true(a.x0 > 40 && a.x1 < 640 && a.y0 > 40 && a.y1 < 440 - 40);
    assert_true(a.x1 - a.x0 > 400 && a.y1 - a.y0 > 250);
#define PX(v) (a.x0 + (int)lround((v) / 0.5 * (a.x1 - a.x0)))
#define PY(v) (a.y1 - (int)lround((v) * (a.y1 - a.y0)))
    /* markers at the points, the line between the first two, nothing for NaN */
    assert_true(has_rgb(&im, PX(0.1), PY(0.5), BLUE));
    assert_true(has_rgb(&im, PX(0.3), PY(0.8), BLUE));
    assert_true(has_rgb(&im, PX(0.4), PY(0.2), BLUE));
    assert_true(has_rgb(&im, (PX(0.1) + PX(0.3)) / 2, (PY(0.5) + PY(0.8)) / 2, BLUE));
    assert_true(has_rgb(&im, PX(0.2), PY(0.25), RED));
    assert_false(has_rgb(&im, PX(0.35), PY(0.5), BLUE));
    /* the point at y = 7 is clipped: no blue above the plot area except the legend's key */
    for (int yy = a.y0 - 20; yy < a.y0 - 6; yy++)
        for (int xx = PX(0.4); xx <= PX(0.45) + 3; xx++) assert_false(has_rgb(&im, xx, yy, BLUE));
    /* tick values under the x ticks and left of the y ticks; labels in the margins */
    for (int k = 0; k <= 5; k++) {
        int xt = PX(0.1 * k), ink = 0;
        for (int yy = a.y1 + 12; yy < a.y1 + 40; yy++)
            for (int xx = xt - 20; xx <= xt + 20; xx++) ink += has_rgb(&im, xx, yy, BLACK);
        if (ink < 20) fail_msg("no tick value under x tick %d (%d black pixels)", k, ink);
    }
    for (int k = 0; k <= 5; k++) {
        int yt = PY(0.2 * k), ink = 0;
        for (int yy = yt - 8; yy <= yt + 8; yy++)
            for (int xx = a.x0 - 60; xx < a.x0 - 12; xx++) ink += has_rgb(&im, xx, yy, BLACK);
        if (ink < 20) fail_msg("no tick value left of y tick %d (%d black pixels)", k, ink);
    }
    int xlab = 0, ylab = 0, legend_blue = 0, legend_red = 0;
    for (int yy = a.y1 + 40; yy < 440; yy++)
        for (int xx = a.x0; xx < a.x1; xx++) xlab += has_rgb(&im, xx, yy, BLACK);
    for (int yy = a.y0; yy < a.y1; yy++)
        for (int xx = 0; xx < 25; xx++) ylab += has_rgb(&im, xx, yy, BLACK);
    for (int yy = 0; yy < a.y0 - 6; yy++)
        for (int xx = 0; xx < 640; xx++) {
            legend_blue += has_rgb(&im, xx, yy, BLUE);
            legend_red += has_rgb(&im, xx, yy, RED);
        }
    print_message("chart: plot area (%d, %d)-(%d, %d); x label %d px, y label %d px, legend keys "
                  "%d + %d px\n", a.x0, a.y0, a.x1, a.y1, xlab, ylab, legend_blue, legend_red);
    assert_true(xlab > 100 && ylab > 50 && legend_blue > 40 && legend_red > 40);
    /* bad axes and images */
    nac_plot_axes bad = ax;
    bad.xmax = bad.xmin;
    assert_int_equal(nac_plot_chart(&im, &bad, s, 2, NULL), NAC_ERR_INVALID);
    bad = ax;
    bad.ystep = 1e-6; /* a million ticks */
    assert_int_equal(nac_plot_chart(&im, &bad, s, 2, NULL), NAC_ERR_INVALID);
    bad = ax;
    bad.xstep = NAN;
    assert_int_equal(nac_plot_chart(&im, &bad, s, 2, NULL), NAC_ERR_INVALID);
    nac_plot_image_free(&im);
    TU_OK(nac_plot_image_create(&im, 150, 100));
    assert_int_equal(nac_plot_chart(&im, &ax, s, 2, NULL), NAC_ERR_INVALID);
    nac_plot_image_free(&im);
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

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
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
    nac_plot_image im = {pw, ph, px, 0, 0, pw, ph};
    int blue = 0, red = 0, black_low = 0;
    for (int y = 0; y < ph; y++)
        for (int x = 0; x < pw; x++) {
            blue += has_rgb(&im, x, y, BLUE);
            red += has_rgb(&im, x, y, RED);
            black_low += y > ph - 60 && has_rgb(&im, x, y, BLACK); /* tick values, x label */
        }
    print_message("sweep.png: %d blue, %d red, %d black pixels in the bottom 60 rows\n", blue, red,
                  black_low);
    assert_true(blue > 200 && red > 200 && black_low > 300);
    free(px);
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
    assert_false(exists(path));

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
static int run_exe(char *const *argv, char *err, size_t n) {
    char errpath[128];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", g_dir);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fe = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644),
            fo = open("/dev/null", O_WRONLY);
        if (fe < 0 || fo < 0) _exit(127);
        dup2(fe, 2);
        dup2(fo, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    FILE *f = fopen(errpath, "r");
    assert_non_null(f);
    size_t k = fread(err, 1, n - 1, f);
    err[k] = 0;
    fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

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
    assert_false(exists(runs)); /* nothing written */
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
    assert_int_equal(run_exe(eargv, err, sizeof err), 78);
    if (!strstr(err, "\"p\"") || !strstr(err, "0.6")) fail_msg("stderr: %s", err);
    assert_false(exists(runs));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_font),
        cmocka_unit_test(test_clipping),
        cmocka_unit_test(test_chart),
        cmocka_unit_test(test_bad_p),
        cmocka_unit_test(test_sweep),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
