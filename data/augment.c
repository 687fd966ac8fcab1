/* torchvision's augmentations in C: the parameter draws follow transforms.py, the pixel ops
 * follow functional_tensor.py (float images in [0, 1]), and the resize follows PIL's
 * bilinear filter (a triangle widened by the shrink factor, so it antialiases). */
#include "data/augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"

struct nac_augment_work {
    int c, h, w, oh, ow;
    int maxtx, maxty;       /* taps a output pixel reads at most, per axis */
    float lut[256];         /* v / 255 */
    float *tmp;             /* (c, h, ow): the horizontal pass */
    float *wx, *wy;         /* (ow, maxtx), (oh, maxty) */
    int *x0, *nx, *y0, *ny; /* first tap and tap count per output column / row */
    float *blur_tmp;        /* (c, oh, ow) */
    float *kernel;          /* the blur kernel */
    int kmax;
};

void nac_augment_defaults(nac_augment_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->crop = true;
    cfg->scale_min = 0.08;
    cfg->scale_max = 1.0;
    cfg->ratio_min = 3.0 / 4.0;
    cfg->ratio_max = 4.0 / 3.0;
    cfg->flip_p = 0.5;
    cfg->jitter_p = 0.8;
    cfg->brightness = 0.4;
    cfg->contrast = 0.4;
    cfg->saturation = 0.4;
    cfg->hue = 0.1;
    cfg->gray_p = 0.2;
    cfg->blur_p = 0;
    cfg->blur_kernel = 0;
    cfg->blur_sigma_min = 0.1;
    cfg->blur_sigma_max = 2.0;
    cfg->normalize = true;
    nac_augment_set_norm(cfg, 3, nac_cifar10_mean, nac_cifar10_std);
}

void nac_augment_none(nac_augment_config *cfg) {
    nac_augment_defaults(cfg);
    cfg->crop = false;
    cfg->flip_p = cfg->jitter_p = cfg->gray_p = cfg->blur_p = 0;
}

void nac_augment_set_norm(nac_augment_config *cfg, int c, const float *mean, const float *std) {
    for (int i = 0; i < 3; i++) {
        cfg->mean[i] = mean[c == 1 ? 0 : i];
        cfg->std[i] = std[c == 1 ? 0 : i];
    }
}

void nac_augment_out_size(const nac_augment_config *cfg, int h, int w, int *oh, int *ow) {
    *oh = cfg->out_h > 0 ? cfg->out_h : h;
    *ow = cfg->out_w > 0 ? cfg->out_w : w;
}

static int blur_k(const nac_augment_config *cfg, int oh, int ow) {
    if (cfg->blur_kernel > 0) return cfg->blur_kernel;
    int k = (int)(0.1 * (oh < ow ? oh : ow));
    return k % 2 ? k : k + 1;
}

static nac_status prob(const char *name, double p) {
    if (!(p >= 0 && p <= 1))
        return nac_error(NAC_ERR_INVALID, "augment: %s %g outside [0, 1]", name, p);
    return NAC_OK;
}

nac_status nac_augment_check(const nac_augment_config *cfg, int c, int h, int w) {
    if (c != 1 && c != 3)
        return nac_error(NAC_ERR_INVALID, "augment: images of %d channels (1 or 3 supported)", c);
    if (h < 1 || w < 1) return nac_error(NAC_ERR_INVALID, "augment: image size %dx%d", h, w);
    if (cfg->out_h < 0 || cfg->out_w < 0 || cfg->out_h > 8192 || cfg->out_w > 8192)
        return nac_error(NAC_ERR_INVALID, "augment: output size %dx%d outside 0..8192", cfg->out_h,
                         cfg->out_w);
    if (cfg->crop) {
        if (!(cfg->scale_min > 0 && cfg->scale_min <= cfg->scale_max && cfg->scale_max <= 1))
            return nac_error(NAC_ERR_INVALID,
                             "augment: crop scale (%g, %g) must satisfy 0 < min <= max <= 1",
                             cfg->scale_min, cfg->scale_max);
        if (!(cfg->ratio_min > 0 && cfg->ratio_min <= cfg->ratio_max && isfinite(cfg->ratio_max)))
            return nac_error(NAC_ERR_INVALID,
                             "augment: crop ratio (%g, %g) must satisfy 0 < min <= max",
                             cfg->ratio_min, cfg->ratio_max);
    }
    NAC_TRY(prob("flip_p", cfg->flip_p));
    NAC_TRY(prob("jitter_p", cfg->jitter_p));
    NAC_TRY(prob("gray_p", cfg->gray_p));
    NAC_TRY(prob("blur_p", cfg->blur_p));
    const double jit[3] = {cfg->brightness, cfg->contrast, cfg->saturation};
    const char *jn[3] = {"brightness", "contrast", "saturation"};
    for (int i = 0; i < 3; i++)
        if (!(jit[i] >= 0 && jit[i] <= 100))
            return nac_error(NAC_ERR_INVALID, "augment: %s %g outside [0, 100]", jn[i], jit[i]);
    if (!(cfg->hue >= 0 && cfg->hue <= 0.5))
        return nac_error(NAC_ERR_INVALID, "augment: hue %g outside [0, 0.5]", cfg->hue);
    if (cfg->blur_p > 0) {
        int oh, ow;
        nac_augment_out_size(cfg, h, w, &oh, &ow);
        int k = blur_k(cfg, oh, ow);
        if (k < 1 || k % 2 == 0 || k / 2 >= (oh < ow ? oh : ow))
            return nac_error(NAC_ERR_INVALID,
                             "augment: blur kernel %d must be odd and its half below the "
                             "output size %dx%d",
                             k, oh, ow);
        if (!(cfg->blur_sigma_min > 0 && cfg->blur_sigma_min <= cfg->blur_sigma_max &&
              cfg->blur_sigma_max < 1e3))
            return nac_error(NAC_ERR_INVALID,
                             "augment: blur sigma (%g, %g) must satisfy 0 < min <= max",
                             cfg->blur_sigma_min, cfg->blur_sigma_max);
    }
    if (cfg->normalize)
        for (int i = 0; i < c; i++)
            if (!(cfg->std[i] > 0) || !isfinite(cfg->mean[i]) || !isfinite(cfg->std[i]))
                return nac_error(NAC_ERR_INVALID, "augment: channel %d mean %g std %g (std > 0)", i,
                                 cfg->mean[i], cfg->std[i]);
    return NAC_OK;
}

/* ---------------------------------------------------------------- parameter draws */

static double uniform(nac_rng_t *r, double a, double b) { return a + (b - a) * nac_rng_uniform(r); }

void nac_augment_crop_box(nac_rng_t *rng, int h, int w, double scale_min, double scale_max,
                          double ratio_min, double ratio_max, int *top, int *left, int *crop_h,
                          int *crop_w) {
    double area = (double)h * w, lr0 = log(ratio_min), lr1 = log(ratio_max);
    for (int t = 0; t < 10; t++) {
        double target = area * uniform(rng, scale_min, scale_max);
        double ar = exp(uniform(rng, lr0, lr1));
        /* Python's round(): half to even, which nearbyint does in the default mode. */
        int cw = (int)nearbyint(sqrt(target * ar));
        int ch = (int)nearbyint(sqrt(target / ar));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            *top = (int)nac_rng_below(rng, (uint32_t)(h - ch + 1));
            *left = (int)nac_rng_below(rng, (uint32_t)(w - cw + 1));
            *crop_h = ch;
            *crop_w = cw;
            return;
        }
    }
    double in_ratio = (double)w / h;
    int cw = w, ch = h;
    if (in_ratio < ratio_min)
        ch = (int)nearbyint(cw / ratio_min);
    else if (in_ratio > ratio_max)
        cw = (int)nearbyint(ch * ratio_max);
    *crop_h = ch;
    *crop_w = cw;
    *top = (h - ch) / 2;
    *left = (w - cw) / 2;
}

void nac_augment_draw(const nac_augment_config *cfg, int c, int h, int w, nac_rng_t *rng,
                      nac_augment_params *p) {
    (void)c;
    memset(p, 0, sizeof *p);
    p->brightness = p->contrast = p->saturation = 1.f;
    for (int i = 0; i < 4; i++) p->order[i] = i;
    if (cfg->crop)
        nac_augment_crop_box(rng, h, w, cfg->scale_min, cfg->scale_max, cfg->ratio_min,
                             cfg->ratio_max, &p->top, &p->left, &p->crop_h, &p->crop_w);
    else {
        p->crop_h = h;
        p->crop_w = w;
    }
    if (cfg->flip_p > 0) p->flip = nac_rng_uniform(rng) < cfg->flip_p;
    if (cfg->jitter_p > 0) p->jitter = nac_rng_uniform(rng) < cfg->jitter_p;
    if (p->jitter) {
        for (int i = 3; i > 0; i--) { /* torch.randperm(4) */
            int j = (int)nac_rng_below(rng, (uint32_t)(i + 1));
            int t = p->order[i];
            p->order[i] = p->order[j];
            p->order[j] = t;
        }
        double b = cfg->brightness, ct = cfg->contrast, s = cfg->saturation;
        if (b > 0) p->brightness = (float)uniform(rng, fmax(0, 1 - b), 1 + b);
        if (ct > 0) p->contrast = (float)uniform(rng, fmax(0, 1 - ct), 1 + ct);
        if (s > 0) p->saturation = (float)uniform(rng, fmax(0, 1 - s), 1 + s);
        if (cfg->hue > 0) p->hue = (float)uniform(rng, -cfg->hue, cfg->hue);
    }
    if (cfg->gray_p > 0) p->gray = nac_rng_uniform(rng) < cfg->gray_p;
    if (cfg->blur_p > 0) {
        p->blur = nac_rng_uniform(rng) < cfg->blur_p;
        if (p->blur) p->sigma = (float)uniform(rng, cfg->blur_sigma_min, cfg->blur_sigma_max);
    }
}

/* ---------------------------------------------------------------- work buffers */

void nac_augment_work_free(nac_augment_work_t *wk) {
    if (!wk) return;
    free(wk->tmp);
    free(wk->wx);
    free(wk->wy);
    free(wk->x0);
    free(wk->nx);
    free(wk->y0);
    free(wk->ny);
    free(wk->blur_tmp);
    free(wk->kernel);
    free(wk);
}

static int max_taps(int in, int out) {
    double s = (double)in / out;
    return (int)ceil(2.0 * (s > 1 ? s : 1)) + 2;
}

nac_status nac_augment_work_create(const nac_augment_config *cfg, int c, int h, int w,
                                   nac_augment_work_t **out) {
    *out = NULL;
    NAC_TRY(nac_augment_check(cfg, c, h, w));
    nac_augment_work_t *wk = calloc(1, sizeof *wk);
    if (!wk) return nac_error(NAC_ERR_NOMEM, "augment: out of memory");
    wk->c = c;
    wk->h = h;
    wk->w = w;
    nac_augment_out_size(cfg, h, w, &wk->oh, &wk->ow);
    wk->maxtx = max_taps(w, wk->ow);
    wk->maxty = max_taps(h, wk->oh);
    wk->kmax = cfg->blur_p > 0 ? blur_k(cfg, wk->oh, wk->ow) : 1;
    for (int v = 0; v < 256; v++) wk->lut[v] = (float)v / 255.f;
    size_t oplane = (size_t)wk->oh * wk->ow;
    wk->tmp = malloc((size_t)c * h * wk->ow * sizeof(float));
    wk->wx = malloc((size_t)wk->ow * wk->maxtx * sizeof(float));
    wk->wy = malloc((size_t)wk->oh * wk->maxty * sizeof(float));
    wk->x0 = malloc((size_t)wk->ow * sizeof(int));
    wk->nx = malloc((size_t)wk->ow * sizeof(int));
    wk->y0 = malloc((size_t)wk->oh * sizeof(int));
    wk->ny = malloc((size_t)wk->oh * sizeof(int));
    wk->blur_tmp = malloc((size_t)c * oplane * sizeof(float));
    wk->kernel = malloc((size_t)wk->kmax * sizeof(float));
    if (!wk->tmp || !wk->wx || !wk->wy || !wk->x0 || !wk->nx || !wk->y0 || !wk->ny ||
        !wk->blur_tmp || !wk->kernel) {
        nac_augment_work_free(wk);
        return nac_error(NAC_ERR_NOMEM, "augment: out of memory for %dx%dx%d images", c, h, w);
    }
    *out = wk;
    return NAC_OK;
}

/* ---------------------------------------------------------------- pixel ops */

/* PIL's bilinear resample weights for one axis: output o reads inputs [start, start+n) of
 * the crop [off, off+in) of the image. */
static void axis_weights(int in, int out, int off, int maxtaps, float *wts, int *start, int *n) {
    double scale = (double)in / out, fs = scale > 1 ? scale : 1, support = fs;
    for (int o = 0; o < out; o++) {
        double center = (o + 0.5) * scale;
        int lo = (int)floor(center - support + 0.5), hi = (int)floor(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        int m = hi - lo;
        NAC_ASSERT(m >= 1 && m <= maxtaps);
        float *wo = wts + (size_t)o * maxtaps;
        double sum = 0;
        for (int j = 0; j < m; j++) {
            double d = fabs((lo + j - center + 0.5) / fs);
            wo[j] = (float)(d < 1 ? 1 - d : 0); /* the triangle (bilinear) filter */
            sum += wo[j];
        }
        for (int j = 0; j < m; j++) wo[j] = (float)(wo[j] / sum);
        start[o] = off + lo;
        n[o] = m;
    }
}

void nac_image_resized_crop(const uint8_t *src, int c, int h, int w, int top, int left, int crop_h,
                            int crop_w, float *dst, int oh, int ow, nac_augment_work_t *wk) {
    NAC_ASSERT(wk->c == c && wk->h == h && wk->w == w && wk->oh == oh && wk->ow == ow);
    NAC_ASSERT(top >= 0 && left >= 0 && crop_h >= 1 && crop_w >= 1 && top + crop_h <= h &&
               left + crop_w <= w);
    const float *lut = wk->lut;
    if (crop_h == oh && crop_w == ow) { /* the weights would be exactly one tap of 1 */
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < oh; y++) {
                const uint8_t *s = src + ((size_t)ch * h + top + y) * w + left;
                float *d = dst + ((size_t)ch * oh + y) * ow;
                for (int x = 0; x < ow; x++) d[x] = lut[s[x]];
            }
        return;
    }
    axis_weights(crop_w, ow, left, wk->maxtx, wk->wx, wk->x0, wk->nx);
    axis_weights(crop_h, oh, top, wk->maxty, wk->wy, wk->y0, wk->ny);
    for (int ch = 0; ch < c; ch++) { /* horizontal: rows top..top+crop_h -> tmp (crop_h, ow) */
        for (int y = 0; y < crop_h; y++) {
            const uint8_t *s = src + ((size_t)ch * h + top + y) * w;
            float *t = wk->tmp + ((size_t)ch * h + y) * ow;
            for (int x = 0; x < ow; x++) {
                const float *wt = wk->wx + (size_t)x * wk->maxtx;
                const uint8_t *sx = s + wk->x0[x];
                float acc = 0;
                for (int j = 0; j < wk->nx[x]; j++) acc += wt[j] * lut[sx[j]];
                t[x] = acc;
            }
        }
        for (int y = 0; y < oh; y++) { /* vertical */
            const float *wt = wk->wy + (size_t)y * wk->maxty;
            float *d = dst + ((size_t)ch * oh + y) * ow;
            const float *t0 = wk->tmp + ((size_t)ch * h + (wk->y0[y] - top)) * ow;
            for (int x = 0; x < ow; x++) d[x] = wt[0] * t0[x];
            for (int j = 1; j < wk->ny[y]; j++) {
                const float *tj = t0 + (size_t)j * ow;
                for (int x = 0; x < ow; x++) d[x] += wt[j] * tj[x];
            }
        }
    }
}

void nac_image_hflip(float *x, int c, int h, int w) {
    for (int r = 0; r < c * h; r++) {
        float *row = x + (size_t)r * w;
        for (int i = 0, j = w - 1; i < j; i++, j--) {
            float t = row[i];
            row[i] = row[j];
            row[j] = t;
        }
    }
}

static inline float clamp01(float v) { return v < 0.f ? 0.f : v > 1.f ? 1.f : v; }

void nac_image_brightness(float *x, int c, int h, int w, float f) {
    size_t n = (size_t)c * h * w;
    for (size_t i = 0; i < n; i++) x[i] = clamp01(f * x[i]); /* blend with black */
}

void nac_image_contrast(float *x, int c, int h, int w, float f) {
    size_t hw = (size_t)h * w;
    double sum = 0;
    if (c == 3)
        for (size_t i = 0; i < hw; i++)
            sum += NAC_GRAY_R * x[i] + NAC_GRAY_G * x[hw + i] + NAC_GRAY_B * x[2 * hw + i];
    else
        for (size_t i = 0; i < hw * c; i++) sum += x[i];
    float mean = (float)(sum / (double)(c == 3 ? hw : hw * c)), bias = (1.f - f) * mean;
    for (size_t i = 0; i < hw * c; i++) x[i] = clamp01(f * x[i] + bias);
}

void nac_image_saturation(float *x, int c, int h, int w, float f) {
    if (c != 3) return; /* torchvision: a grey image is left as it is */
    size_t hw = (size_t)h * w;
    float *r = x, *g = x + hw, *b = x + 2 * hw;
    for (size_t i = 0; i < hw; i++) {
        float l = NAC_GRAY_R * r[i] + NAC_GRAY_G * g[i] + NAC_GRAY_B * b[i], k = (1.f - f) * l;
        r[i] = clamp01(f * r[i] + k);
        g[i] = clamp01(f * g[i] + k);
        b[i] = clamp01(f * b[i] + k);
    }
}

/* HSV -> RGB for one channel: v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6 with
 * n = 5, 3, 1 for R, G, B: torchvision's six-sector table (_hsv2rgb) without branches. */
static inline float hsv_channel(float n, float h6, float v, float vs) {
    float k = n + h6, k6 = k - 6.f; /* every operand computed first: selects, not branches */
    k = k >= 6.f ? k6 : k;
    float k4 = 4.f - k;
    float m = k < k4 ? k : k4;
    m = m < 0.f ? 0.f : m;
    m = m > 1.f ? 1.f : m;
    return v - vs * m;
}

/* functional_tensor.adjust_hue: _rgb2hsv, h = (h + shift) mod 1, _hsv2rgb, with the
 * differences taken before the division ((g - b) / cr for bc - gc) and selects instead of
 * branches (random colours would mispredict them); equal to torchvision up to float
 * rounding. A grey pixel (max == min, s = 0) comes back unchanged. */
void nac_image_hue(float *x, int c, int h, int w, float hue) {
    if (c != 3) return;
    size_t hw = (size_t)h * w;
    float *pr = x, *pg = x + hw, *pb = x + 2 * hw;
    for (size_t i = 0; i < hw; i++) {
        float r = pr[i], g = pg[i], b = pb[i];
        float maxc = r > g ? r : g, minc = r < g ? r : g;
        maxc = maxc > b ? maxc : b;
        minc = minc < b ? minc : b;
        float cr = maxc - minc, crd = cr > 0.f ? cr : 1.f;
        float s = cr / (maxc > 0.f ? maxc : 1.f);
        float hr = (g - b) / crd, hg = 2.f + (b - r) / crd, hb = 4.f + (r - g) / crd;
        float hh = maxc == r ? hr : maxc == g ? hg : hb;
        hh = hh / 6.f + 1.f; /* in [5/6, 11/6): fmod(., 1) is one exact subtraction */
        float hm = hh - 1.f;
        hh = hh >= 1.f ? hm : hh;
        hh += hue; /* hue in [-0.5, 0.5]: Python's % 1.0 is one correction */
        float hp = hh + 1.f;
        hm = hh - 1.f;
        hh = hh < 0.f ? hp : hh;
        hh = hh >= 1.f ? hm : hh;
        float h6 = hh * 6.f, vs = maxc * s;
        pr[i] = hsv_channel(5.f, h6, maxc, vs);
        pg[i] = hsv_channel(3.f, h6, maxc, vs);
        pb[i] = hsv_channel(1.f, h6, maxc, vs);
    }
}

void nac_image_grayscale(float *x, int c, int h, int w) {
    if (c != 3) return;
    size_t hw = (size_t)h * w;
    for (size_t i = 0; i < hw; i++) {
        float l = NAC_GRAY_R * x[i] + NAC_GRAY_G * x[hw + i] + NAC_GRAY_B * x[2 * hw + i];
        x[i] = x[hw + i] = x[2 * hw + i] = l;
    }
}

void nac_gaussian_kernel(int k, float sigma, float *kernel) {
    double half = (k - 1) * 0.5, sum = 0;
    for (int i = 0; i < k; i++) {
        double xv = k > 1 ? -half + 2 * half * i / (k - 1) : 0,
               v = exp(-0.5 * (xv / sigma) * (xv / sigma));
        kernel[i] = (float)v;
        sum += v;
    }
    for (int i = 0; i < k; i++) kernel[i] = (float)(kernel[i] / sum);
}

static inline int reflect(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) {
        if (i < 0) i = -i;
        if (i >= n) i = 2 * n - 2 - i;
    }
    return i;
}

static void blur_with(float *x, int c, int h, int w, int k, const float *ker, float *tmp) {
    int r = k / 2;
    for (int ch = 0; ch < c; ch++) {
        float *img = x + (size_t)ch * h * w, *t = tmp + (size_t)ch * h * w;
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                float acc = 0;
                for (int j = 0; j < k; j++)
                    acc += ker[j] * img[(size_t)y * w + reflect(xx + j - r, w)];
                t[(size_t)y * w + xx] = acc;
            }
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                float acc = 0;
                for (int j = 0; j < k; j++)
                    acc += ker[j] * t[(size_t)reflect(y + j - r, h) * w + xx];
                img[(size_t)y * w + xx] = acc;
            }
    }
}

void nac_image_blur(float *x, int c, int h, int w, int k, float sigma, float *tmp) {
    float ker[257];
    NAC_ASSERT(k >= 1 && k % 2 == 1 && k <= 257);
    nac_gaussian_kernel(k, sigma, ker);
    blur_with(x, c, h, w, k, ker, tmp);
}

void nac_image_normalize(float *x, int c, int h, int w, const float *mean, const float *std) {
    size_t hw = (size_t)h * w;
    for (int ch = 0; ch < c; ch++) {
        float m = mean[ch], s = std[ch], *p = x + ch * hw;
        for (size_t i = 0; i < hw; i++) p[i] = (p[i] - m) / s;
    }
}

void nac_image_denormalize(float *x, int c, int h, int w, const float *mean, const float *std) {
    size_t hw = (size_t)h * w;
    for (int ch = 0; ch < c; ch++) {
        float m = mean[ch], s = std[ch], *p = x + ch * hw;
        for (size_t i = 0; i < hw; i++) p[i] = p[i] * s + m;
    }
}

/* ---------------------------------------------------------------- the pipeline */

void nac_augment_run(const nac_augment_config *cfg, const nac_augment_params *p, const uint8_t *src,
                     float *dst, nac_augment_work_t *wk) {
    int c = wk->c, oh = wk->oh, ow = wk->ow;
    nac_image_resized_crop(src, c, wk->h, wk->w, p->top, p->left, p->crop_h, p->crop_w, dst, oh, ow,
                           wk);
    if (p->flip) nac_image_hflip(dst, c, oh, ow);
    if (p->jitter)
        for (int i = 0; i < 4; i++) switch (p->order[i]) {
            case 0:
                if (p->brightness != 1.f) nac_image_brightness(dst, c, oh, ow, p->brightness);
                break;
            case 1:
                if (p->contrast != 1.f) nac_image_contrast(dst, c, oh, ow, p->contrast);
                break;
            case 2:
                if (p->saturation != 1.f) nac_image_saturation(dst, c, oh, ow, p->saturation);
                break;
            default:
                if (p->hue != 0.f) nac_image_hue(dst, c, oh, ow, p->hue);
                break;
            }
    if (p->gray) nac_image_grayscale(dst, c, oh, ow);
    if (p->blur) {
        int k = blur_k(cfg, oh, ow);
        NAC_ASSERT(k <= wk->kmax);
        nac_gaussian_kernel(k, p->sigma, wk->kernel);
        blur_with(dst, c, oh, ow, k, wk->kernel, wk->blur_tmp);
    }
    if (cfg->normalize) nac_image_normalize(dst, c, oh, ow, cfg->mean, cfg->std);
}

void nac_augment_apply(const nac_augment_config *cfg, const uint8_t *src, nac_rng_t *rng,
                       float *dst, nac_augment_work_t *wk) {
    nac_augment_params p;
    nac_augment_draw(cfg, wk->c, wk->h, wk->w, rng, &p);
    nac_augment_run(cfg, &p, src, dst, wk);
}
