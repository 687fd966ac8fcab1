/* Augmentations against torchvision's definitions on constructed images: flip, crop boxes
 * (bounds, and their distribution against a numerical integral), the bilinear resize,
 * grayscale weights, normalisation, brightness/contrast/saturation/hue against reference
 * formulas written out in double (functional_tensor.py) and hand-computed pixels, blur,
 * the pipeline's order, the parameter draws, and config checks. */
#include "data/augment.h"
#include "data/dataset.h"
#include "tests/testutil.h"

static void rand_image(float *x, int n, uint64_t seed) { tu_randu(x, n, seed, 0.f, 1.f); }

static void test_flip(void **state) {
    (void)state;
    float x[3 * 4 * 5], y[3 * 4 * 5];
    rand_image(x, 60, 1);
    memcpy(y, x, sizeof x);
    nac_image_hflip(y, 3, 4, 5);
    for (int c = 0; c < 3; c++)
        for (int r = 0; r < 4; r++)
            for (int q = 0; q < 5; q++)
                assert_true(y[(c * 4 + r) * 5 + q] == x[(c * 4 + r) * 5 + (4 - q)]);
    nac_image_hflip(y, 3, 4, 5);
    assert_memory_equal(x, y, sizeof x);
}

/* The boxes' distribution as an integral over the draws: scale uniform on [0.08, 1], log
 * ratio uniform on [log 3/4, log 4/3], sides rounded, a draw kept when the box fits (the
 * first kept draw of the ten tries is distributed as one kept draw). */
static void crop_reference(int H, int W, double *mean_s, double *p_small) {
    double lo = log(3.0 / 4.0), hi = log(4.0 / 3.0), mass = 0, ms = 0, small = 0;
    int N = 1500;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.08 + 0.92 * (i + 0.5) / N, r = exp(lo + (hi - lo) * (j + 0.5) / N);
            double w = floor(sqrt(s * H * W * r) + 0.5), h = floor(sqrt(s * H * W / r) + 0.5);
            if (w < 1 || w > W || h < 1 || h > H) continue;
            mass += 1;
            ms += w * h / (H * W);
            small += w * h / (H * W) < 0.3;
        }
    *mean_s = ms / mass;
    *p_small = small / mass;
}

static void test_crop_boxes(void **state) {
    (void)state;
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(11, 0, 0, 0));
    int n = 40000, H = 32, W = 32;
    double ms = 0, small = 0, mlr = 0, mtop = 0, mleft = 0;
    int nt = 0, nl = 0;
    for (int i = 0; i < n; i++) {
        int top, left, ch, cw;
        nac_augment_crop_box(&r, H, W, 0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0, &top, &left, &ch, &cw);
        assert_true(ch >= 1 && cw >= 1 && top >= 0 && left >= 0);
        assert_true(top + ch <= H && left + cw <= W);
        double s = (double)ch * cw / (H * W), ratio = (double)cw / ch;
        /* some unrounded sides within half a pixel of these met the scale and ratio bounds */
        assert_true((cw + 0.5) * (ch + 0.5) >= 0.08 * H * W && (cw - 0.5) * (ch - 0.5) <= H * W);
        assert_true((cw + 0.5) / (ch - 0.5) >= 0.75 && (cw - 0.5) / (ch + 0.5) <= 4.0 / 3.0);
        ms += s;
        small += s < 0.3;
        mlr += log(ratio);
        if (ch < H) mtop += (double)top / (H - ch), nt++;
        if (cw < W) mleft += (double)left / (W - cw), nl++;
    }
    double ref_s, ref_small;
    crop_reference(H, W, &ref_s, &ref_small);
    printf("crop: mean scale %.4f (integral %.4f), P(scale < 0.3) %.4f (integral %.4f)\n", ms / n,
           ref_s, small / n, ref_small);
    assert_true(fabs(ms / n - ref_s) < 0.006);
    assert_true(fabs(small / n - ref_small) < 0.012);
    assert_true(fabs(mlr / n) < 0.006); /* log-uniform ratio: symmetric about 1 */
    assert_true(fabs(mtop / nt - 0.5) < 0.01 && fabs(mleft / nl - 0.5) < 0.01);

    /* ten failed tries then the centre crop: ratio (2, 3) never fits a whole square */
    int top, left, ch, cw;
    nac_augment_crop_box(&r, 32, 32, 1.0, 1.0, 2.0, 3.0, &top, &left, &ch, &cw);
    assert_int_equal(cw, 32);
    assert_int_equal(ch, 16);
    assert_int_equal(top, 8);
    assert_int_equal(left, 0);
    nac_augment_crop_box(&r, 20, 40, 1.0, 1.0, 0.25, 0.5, &top, &left, &ch, &cw); /* too wide */
    assert_int_equal(ch, 20);
    assert_int_equal(cw, 10);
    assert_int_equal(left, 15);
    nac_augment_crop_box(&r, 30, 40, 1.0, 1.0, 1.0, 2.0, &top, &left, &ch, &cw); /* fits whole */
    assert_true(ch == 30 && cw == 40 && top == 0 && left == 0);
}

static nac_augment_work_t *work_for(const nac_augment_config *cfg, int c, int h, int w) {
    nac_augment_work_t *wk;
    TU_OK(nac_augment_work_create(cfg, c, h, w, &wk));
    return wk;
}

static void test_resize(void **state) {
    (void)state;
    nac_augment_config cfg;
    nac_augment_none(&cfg);
    uint8_t src[3 * 6 * 8];
    for (int i = 0; i < 144; i++) src[i] = (uint8_t)(i * 17 + 3);
    /* the whole image at its own size: exactly v / 255 */
    nac_augment_work_t *wk = work_for(&cfg, 3, 6, 8);
    float out[3 * 6 * 8];
    nac_image_resized_crop(src, 3, 6, 8, 0, 0, 6, 8, out, 6, 8, wk);
    for (int i = 0; i < 144; i++) assert_true(out[i] == (float)src[i] / 255.f);
    nac_augment_work_free(wk);

    /* upsampling a 3x4 box at (2, 3) to 6x8: bilinear, half-pixel centres, edges clamped */
    cfg.out_h = 6;
    cfg.out_w = 8;
    uint8_t big[3 * 10 * 12];
    for (int i = 0; i < 360; i++) big[i] = (uint8_t)((i * 53) % 251);
    wk = work_for(&cfg, 3, 10, 12);
    nac_image_resized_crop(big, 3, 10, 12, 2, 3, 3, 4, out, 6, 8, wk);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 6; y++)
            for (int x = 0; x < 8; x++) {
                double sy = fmax((y + 0.5) * 0.5 - 0.5, 0), sx = fmax((x + 0.5) * 0.5 - 0.5, 0);
                int y0 = (int)sy, x0 = (int)sx, y1 = y0 + 1 < 3 ? y0 + 1 : 2,
                    x1 = x0 + 1 < 4 ? x0 + 1 : 3;
                double fy = sy - y0, fx = sx - x0;
#define P(yy, xx) (big[(c * 10 + 2 + (yy)) * 12 + 3 + (xx)] / 255.0)
                double want = (1 - fy) * ((1 - fx) * P(y0, x0) + fx * P(y0, x1)) +
                              fy * ((1 - fx) * P(y1, x0) + fx * P(y1, x1));
#undef P
                double got = out[(c * 6 + y) * 8 + x];
                if (fabs(got - want) > 1e-6)
                    fail_msg("(%d,%d,%d): %g, want %g", c, y, x, got, want);
            }
    nac_augment_work_free(wk);

    /* shrinking 1x4 -> 1x2 (PIL's antialiased bilinear): output 0 reads pixels 0, 1, 2
     * with triangle weights 0.75, 0.75, 0.25 over the doubled support */
    cfg.out_h = 1;
    cfg.out_w = 2;
    uint8_t row[4] = {0, 51, 102, 255};
    wk = work_for(&cfg, 1, 1, 4);
    nac_image_resized_crop(row, 1, 1, 4, 0, 0, 1, 4, out, 1, 2, wk);
    double w0 = (0.75 * 0 + 0.75 * 0.2 + 0.25 * 0.4) / 1.75;
    double w1 = (0.25 * 0.2 + 0.75 * 0.4 + 0.75 * 1.0) / 1.75;
    assert_true(fabs(out[0] - w0) < 1e-6 && fabs(out[1] - w1) < 1e-6);
    nac_augment_work_free(wk);
}

/* ------------------------------------------------------------- colour ops, in double */

static double clampd(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }
static double grayd(const double *p) { return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]; }

/* colorsys.rgb_to_hsv / hsv_to_rgb (Python's standard library), the textbook formulas. */
static void rgb2hsv(const double *c, double *hsv) {
    double mx = fmax(c[0], fmax(c[1], c[2])), mn = fmin(c[0], fmin(c[1], c[2]));
    hsv[2] = mx;
    if (mx == mn) {
        hsv[0] = hsv[1] = 0;
        return;
    }
    hsv[1] = (mx - mn) / mx;
    double rc = (mx - c[0]) / (mx - mn), gc = (mx - c[1]) / (mx - mn), bc = (mx - c[2]) / (mx - mn);
    double h = c[0] == mx ? bc - gc : c[1] == mx ? 2 + rc - bc : 4 + gc - rc;
    hsv[0] = fmod(h / 6.0 + 1.0, 1.0);
}

static void hsv2rgb(const double *hsv, double *c) {
    double h = hsv[0], s = hsv[1], v = hsv[2];
    int i = (int)floor(h * 6.0);
    double f = h * 6.0 - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    double tab[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    for (int k = 0; k < 3; k++) c[k] = tab[((i % 6) + 6) % 6][k];
}

/* An image of n pixels (planes of r, g, b) -> double pixels (n, 3). */
static void to_pixels(const float *x, int n, double (*p)[3]) {
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) p[i][k] = x[k * n + i];
}

static void expect_pixels(const float *x, int n, double (*want)[3], double tol, const char *what) {
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++)
            if (fabs(x[k * n + i] - want[i][k]) > tol)
                fail_msg("%s: pixel %d channel %d: %.9g, want %.9g", what, i, k, x[k * n + i],
                         want[i][k]);
}

#define NPIX 64

static void test_colour_ops(void **state) {
    (void)state;
    float x[3 * NPIX];
    double p[NPIX][3], want[NPIX][3];
    rand_image(x, 3 * NPIX, 5);
    for (int i = 0; i < 4; i++) x[i] = x[NPIX + i] = x[2 * NPIX + i] = 0.25f * i; /* greys */
    x[4] = 1, x[NPIX + 4] = 0, x[2 * NPIX + 4] = 0;                               /* pure red */
    to_pixels(x, NPIX, p);
    float y[3 * NPIX];
    const float factors[] = {0.0f, 0.6f, 1.37f, 2.5f};
    for (int fi = 0; fi < 4; fi++) {
        float f = factors[fi];
        /* brightness = blend(img, 0, f) */
        memcpy(y, x, sizeof x);
        nac_image_brightness(y, 3, 8, 8, f);
        for (int i = 0; i < NPIX; i++)
            for (int k = 0; k < 3; k++) want[i][k] = clampd(f * p[i][k]);
        expect_pixels(y, NPIX, want, 1e-6, "brightness");
        /* contrast = blend(img, mean(grayscale(img)), f) */
        double m = 0;
        for (int i = 0; i < NPIX; i++) m += grayd(p[i]) / NPIX;
        memcpy(y, x, sizeof x);
        nac_image_contrast(y, 3, 8, 8, f);
        for (int i = 0; i < NPIX; i++)
            for (int k = 0; k < 3; k++) want[i][k] = clampd(f * p[i][k] + (1 - f) * m);
        expect_pixels(y, NPIX, want, 1e-6, "contrast");
        /* saturation = blend(img, grayscale(img), f) */
        memcpy(y, x, sizeof x);
        nac_image_saturation(y, 3, 8, 8, f);
        for (int i = 0; i < NPIX; i++)
            for (int k = 0; k < 3; k++) want[i][k] = clampd(f * p[i][k] + (1 - f) * grayd(p[i]));
        expect_pixels(y, NPIX, want, 1e-6, "saturation");
    }
    const float shifts[] = {-0.5f, -0.1f, 0.0f, 0.03f, 0.25f, 0.5f};
    for (int si = 0; si < 6; si++) {
        memcpy(y, x, sizeof x);
        nac_image_hue(y, 3, 8, 8, shifts[si]);
        for (int i = 0; i < NPIX; i++) {
            double hsv[3];
            rgb2hsv(p[i], hsv);
            hsv[0] = fmod(hsv[0] + shifts[si], 1.0);
            if (hsv[0] < 0) hsv[0] += 1;
            hsv2rgb(hsv, want[i]);
        }
        expect_pixels(y, NPIX, want, 2e-6, "hue");
        for (int i = 0; i < 4; i++) /* grey pixels are unchanged, exactly */
            assert_true(y[i] == x[i] && y[NPIX + i] == x[NPIX + i] &&
                        y[2 * NPIX + i] == x[2 * NPIX + i]);
    }
}

static void test_hand_pixels(void **state) {
    (void)state;
    /* two pixels: (0.8, 0.2, 0.4) and (0.1, 0.5, 0.9) */
    float x[6] = {0.8f, 0.1f, 0.2f, 0.5f, 0.4f, 0.9f}, y[6];
    memcpy(y, x, sizeof x);
    nac_image_brightness(y, 3, 1, 2, 1.5f);
    float b[6] = {1.0f, 0.15f, 0.3f, 0.75f, 0.6f, 1.0f};
    tu_close_f(y, b, 6, 0, 1e-6, "brightness 1.5");
    /* greys 0.299*0.8+0.587*0.2+0.114*0.4 = 0.4022 and 0.4260, mean 0.4141 */
    memcpy(y, x, sizeof x);
    nac_image_contrast(y, 3, 1, 2, 0.5f);
    float c[6] = {0.60705f, 0.25705f, 0.30705f, 0.45705f, 0.40705f, 0.65705f};
    tu_close_f(y, c, 6, 0, 1e-6, "contrast 0.5");
    memcpy(y, x, sizeof x);
    nac_image_saturation(y, 3, 1, 2, 0.f);
    float s[6] = {0.4022f, 0.426f, 0.4022f, 0.426f, 0.4022f, 0.426f};
    tu_close_f(y, s, 6, 0, 1e-6, "saturation 0");
    memcpy(y, x, sizeof x);
    nac_image_saturation(y, 3, 1, 2, 2.f); /* 2x - grey, clamped */
    float s2[6] = {1.0f, 0.0f, 0.0f, 0.574f, 0.3978f, 1.0f};
    tu_close_f(y, s2, 6, 0, 1e-6, "saturation 2");
    /* hue: red turns green at +1/3, cyan at +1/2, magenta at -1/6 */
    float red[3] = {1, 0, 0};
    const float sh[3] = {1.f / 3.f, 0.5f, -1.f / 6.f};
    const float res[3][3] = {{0, 1, 0}, {0, 1, 1}, {1, 0, 1}};
    for (int k = 0; k < 3; k++) {
        float z[3];
        memcpy(z, red, sizeof z);
        nac_image_hue(z, 3, 1, 1, sh[k]);
        tu_close_f(z, res[k], 3, 0, 1e-6, "hue of red");
    }
    /* (0.8, 0.2, 0.4): h = (0.2 - 0.4) / 0.6 / 6 mod 1 = 17/18, s = 0.75, v = 0.8; +0.1
     * -> h = 1/18 + ... = 0.0444..: sector 0, f = 0.2667: (v, v(1 - s(1 - f)), v(1 - s)) */
    float z[3] = {0.8f, 0.2f, 0.4f};
    nac_image_hue(z, 3, 1, 1, 0.1f);
    double hh = fmod(17.0 / 18.0 + 0.1, 1.0), f = hh * 6;
    float want[3] = {0.8f, (float)(0.8 * (1 - 0.75 * (1 - f))), 0.2f};
    tu_close_f(z, want, 3, 0, 1e-6, "hue of (0.8, 0.2, 0.4)");
    /* grayscale: the 0.299 / 0.587 / 0.114 weights, on every channel */
    float g[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}; /* pixels red, green, blue */
    nac_image_grayscale(g, 3, 1, 3);
    float gw[9] = {0.299f, 0.587f, 0.114f, 0.299f, 0.587f, 0.114f, 0.299f, 0.587f, 0.114f};
    tu_close_f(g, gw, 9, 0, 1e-7, "grayscale");
    /* grey images: saturation, hue and grayscale leave them; contrast uses their mean */
    float grey[4] = {0.1f, 0.2f, 0.3f, 0.8f}, gy[4];
    memcpy(gy, grey, sizeof gy);
    nac_image_saturation(gy, 1, 2, 2, 0.f);
    nac_image_hue(gy, 1, 2, 2, 0.3f);
    nac_image_grayscale(gy, 1, 2, 2);
    assert_memory_equal(gy, grey, sizeof gy);
    nac_image_contrast(gy, 1, 2, 2, 0.f);
    for (int i = 0; i < 4; i++) assert_true(fabsf(gy[i] - 0.35f) < 1e-6f);
}

static void test_normalize_blur(void **state) {
    (void)state;
    float x[3 * 50], y[3 * 50];
    rand_image(x, 150, 9);
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2023f, 0.1994f, 0.2010f};
    memcpy(y, x, sizeof x);
    nac_image_normalize(y, 3, 5, 10, mean, std);
    for (int i = 0; i < 150; i++) assert_true(y[i] == (x[i] - mean[i / 50]) / std[i / 50]);
    nac_image_denormalize(y, 3, 5, 10, mean, std);
    tu_close_f(y, x, 150, 0, 2e-7, "denormalize(normalize(x))");
    /* exactly when every step is exact: x - m and (x - m) + m by Sterbenz's lemma (x in
     * [m/2, 2m]), the scaling by a power of two */
    const float m2[3] = {0.5f, 0.5f, 0.5f}, s2[3] = {0.25f, 0.5f, 2.0f};
    tu_randu(x, 150, 10, 0.25f, 1.0f);
    memcpy(y, x, sizeof x);
    nac_image_normalize(y, 3, 5, 10, m2, s2);
    for (int i = 0; i < 150; i++) assert_true(y[i] == (x[i] - 0.5f) / s2[i / 50]);
    nac_image_denormalize(y, 3, 5, 10, m2, s2);
    assert_memory_equal(y, x, sizeof x);

    float k[7];
    nac_gaussian_kernel(7, 1.3f, k);
    double sum = 0;
    for (int i = 0; i < 7; i++) sum += k[i];
    assert_true(fabs(sum - 1) < 1e-6);
    for (int i = 0; i < 7; i++)
        assert_true(fabs(k[i] / k[3] - exp(-0.5 * (i - 3) * (i - 3) / (1.3 * 1.3))) < 1e-6);
    /* an impulse in the middle of 11x11 spreads into the outer product of the kernel */
    float img[121] = {0}, tmp[121];
    img[60] = 1;
    nac_image_blur(img, 1, 11, 11, 7, 1.3f, tmp);
    for (int r = 0; r < 11; r++)
        for (int q = 0; q < 11; q++) {
            double want = abs(r - 5) <= 3 && abs(q - 5) <= 3 ? (double)k[r - 2] * k[q - 2] : 0;
            assert_true(fabs(img[r * 11 + q] - want) < 1e-7);
        }
    /* reflect padding: a constant image stays constant; at a corner, (0,0) of a ramp */
    float ramp[16];
    for (int i = 0; i < 16; i++) ramp[i] = (float)(i % 4);
    float k3[3];
    nac_gaussian_kernel(3, 1.0f, k3);
    nac_image_blur(ramp, 1, 4, 4, 3, 1.0f, tmp);
    assert_true(fabs(ramp[0] - 2 * k3[0] * 1.0) < 1e-6); /* row: k0*x[1] + k1*x[0] + k2*x[1] */
    assert_true(fabs(ramp[1] - 1.0) < 1e-6);
}

/* nac_augment_run applies crop, flip, jitter in the drawn order, grayscale, normalise. */
static void test_pipeline_order(void **state) {
    (void)state;
    nac_augment_config cfg;
    nac_augment_defaults(&cfg);
    uint8_t src[3 * 12 * 10];
    for (int i = 0; i < 360; i++) src[i] = (uint8_t)((i * 97 + 13) % 256);
    nac_augment_work_t *wk = work_for(&cfg, 3, 12, 10);
    nac_augment_params p = {.top = 2,
                            .left = 1,
                            .crop_h = 9,
                            .crop_w = 7,
                            .flip = true,
                            .jitter = true,
                            .order = {3, 0, 2, 1},
                            .brightness = 1.2f,
                            .contrast = 0.7f,
                            .saturation = 1.3f,
                            .hue = 0.07f,
                            .gray = false};
    float got[360], want[360];
    nac_augment_run(&cfg, &p, src, got, wk);
    nac_image_resized_crop(src, 3, 12, 10, 2, 1, 9, 7, want, 12, 10, wk);
    nac_image_hflip(want, 3, 12, 10);
    nac_image_hue(want, 3, 12, 10, 0.07f);
    nac_image_brightness(want, 3, 12, 10, 1.2f);
    nac_image_saturation(want, 3, 12, 10, 1.3f);
    nac_image_contrast(want, 3, 12, 10, 0.7f);
    nac_image_normalize(want, 3, 12, 10, nac_cifar10_mean, nac_cifar10_std);
    assert_memory_equal(got, want, sizeof got);
    /* another order gives another image */
    p.order[0] = 1, p.order[3] = 3;
    nac_augment_run(&cfg, &p, src, want, wk);
    assert_true(memcmp(got, want, sizeof got) != 0);
    p.gray = true;
    cfg.normalize = false;
    nac_augment_run(&cfg, &p, src, got, wk);
    for (int i = 0; i < 120; i++) assert_true(got[i] == got[120 + i] && got[i] == got[240 + i]);
    nac_augment_work_free(wk);
}

static void test_draws(void **state) {
    (void)state;
    nac_augment_config cfg;
    nac_augment_defaults(&cfg);
    nac_rng_t r;
    nac_rng_init(&r, 77);
    int n = 20000, flips = 0, jit = 0, gray = 0, perms[24] = {0};
    for (int i = 0; i < n; i++) {
        nac_augment_params p;
        nac_augment_draw(&cfg, 3, 32, 32, &r, &p);
        flips += p.flip;
        gray += p.gray;
        assert_false(p.blur);
        if (!p.jitter) {
            assert_true(p.brightness == 1 && p.contrast == 1 && p.saturation == 1 && p.hue == 0);
            continue;
        }
        jit++;
        assert_true(p.brightness >= 0.6f && p.brightness <= 1.4f);
        assert_true(p.contrast >= 0.6f && p.contrast <= 1.4f);
        assert_true(p.saturation >= 0.6f && p.saturation <= 1.4f);
        assert_true(p.hue >= -0.1f && p.hue <= 0.1f);
        int seen = 0;
        for (int k = 0; k < 4; k++) seen |= 1 << p.order[k];
        assert_int_equal(seen, 15);
        int lehmer = 0; /* index of the permutation */
        for (int a = 0; a < 4; a++) {
            int smaller = 0;
            for (int b = a + 1; b < 4; b++) smaller += p.order[b] < p.order[a];
            lehmer = lehmer * (4 - a) + smaller;
        }
        perms[lehmer]++;
    }
    assert_true(fabs(flips / (double)n - 0.5) < 0.015);
    assert_true(fabs(jit / (double)n - 0.8) < 0.012);
    assert_true(fabs(gray / (double)n - 0.2) < 0.012);
    for (int k = 0; k < 24; k++) assert_true(abs(perms[k] - jit / 24) < jit / 24 / 4);
    /* same key, same views; pixels within [0, 1] without normalisation */
    cfg.normalize = false;
    cfg.blur_p = 0.5;
    uint8_t src[3 * 32 * 32];
    for (int i = 0; i < 3072; i++) src[i] = (uint8_t)(i * 7);
    nac_augment_work_t *wk = work_for(&cfg, 3, 32, 32);
    float a[3072], b[3072];
    for (int t = 0; t < 50; t++) {
        nac_rng_t r1, r2;
        nac_rng_init(&r1, nac_rng_key(1, 2, 3, (uint64_t)t));
        nac_rng_init(&r2, nac_rng_key(1, 2, 3, (uint64_t)t));
        nac_augment_apply(&cfg, src, &r1, a, wk);
        nac_augment_apply(&cfg, src, &r2, b, wk);
        assert_memory_equal(a, b, sizeof a);
        for (int i = 0; i < 3072; i++) assert_true(a[i] >= 0.f && a[i] <= 1.f);
    }
    nac_augment_work_free(wk);
    /* grey input through the whole recipe */
    nac_augment_defaults(&cfg);
    cfg.out_h = cfg.out_w = 24;
    const float gm = 0.286f, gs = 0.353f;
    nac_augment_set_norm(&cfg, 1, &gm, &gs);
    assert_true(cfg.mean[0] == gm && cfg.std[0] == gs);
    wk = work_for(&cfg, 1, 28, 28);
    uint8_t gsrc[784];
    for (int i = 0; i < 784; i++) gsrc[i] = (uint8_t)(i % 256);
    nac_rng_init(&r, 3);
    nac_augment_apply(&cfg, gsrc, &r, a, wk);
    for (int i = 0; i < 576; i++)
        assert_true(a[i] >= -gm / gs - 1e-5f && a[i] <= (1 - gm) / gs + 1e-5f);
    nac_augment_work_free(wk);
}

static void test_config_checks(void **state) {
    (void)state;
    nac_augment_config cfg;
    nac_augment_work_t *wk;
    nac_augment_defaults(&cfg);
    assert_int_equal(nac_augment_work_create(&cfg, 2, 8, 8, &wk), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "2 channels"));
    assert_null(wk);
    cfg.flip_p = 1.5;
    assert_int_equal(nac_augment_check(&cfg, 3, 8, 8), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "flip_p 1.5"));
    nac_augment_defaults(&cfg);
    cfg.scale_min = 0;
    assert_int_equal(nac_augment_check(&cfg, 3, 8, 8), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "crop scale"));
    nac_augment_defaults(&cfg);
    cfg.hue = 0.7;
    assert_int_equal(nac_augment_check(&cfg, 3, 8, 8), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "hue 0.7"));
    nac_augment_defaults(&cfg);
    cfg.blur_p = 0.5;
    cfg.blur_kernel = 4;
    assert_int_equal(nac_augment_check(&cfg, 3, 8, 8), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "blur kernel 4"));
    nac_augment_defaults(&cfg);
    cfg.std[1] = 0;
    assert_int_equal(nac_augment_check(&cfg, 3, 8, 8), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "channel 1"));
    assert_int_equal(nac_augment_check(&cfg, 1, 8, 8), NAC_OK); /* grey uses channel 0 only */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flip),           cmocka_unit_test(test_crop_boxes),
        cmocka_unit_test(test_resize),         cmocka_unit_test(test_colour_ops),
        cmocka_unit_test(test_hand_pixels),    cmocka_unit_test(test_normalize_blur),
        cmocka_unit_test(test_pipeline_order), cmocka_unit_test(test_draws),
        cmocka_unit_test(test_config_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
