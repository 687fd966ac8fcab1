/* The encoders and heads (encoders/): torchvision's feature sizes, parameter counts and
 * names; initialisation statistics and determinism; input and parameter gradients of
 * small ResNet-18/50, VGG16-BN and MLP encoders against central differences; per-group
 * batch norm (bn_groups = 2) against two separate forwards; batched host feature
 * extraction and re-planning; the heads' forward against a host reference (1/sqrt(D)
 * scaling included) and their backward against central differences; bad arguments. */
#include "tests/testutil.h"

#include <unistd.h>

#include "encoders/encoder.h"
#include "encoders/head.h"
#include "nn/safetensors.h"

static nac_backend_t *be;

static int setup(void **state) {
    (void)state;
    be = tu_backend();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    nac_backend_free(be);
    return 0;
}

static nac_encoder_t *make(const char *arch, int ch, int size, float mult, uint64_t seed) {
    nac_encoder_config c;
    nac_encoder_config_defaults(&c);
    snprintf(c.arch, sizeof c.arch, "%s", arch);
    c.in_channels = ch;
    c.in_size = size;
    c.width_mult = mult;
    c.seed = seed;
    nac_encoder_t *e = NULL;
    TU_OK(nac_encoder_create(be, &c, &e));
    return e;
}

static nac_encoder_t *make_mlp(const int *sizes, int n, uint64_t seed) {
    nac_encoder_config c;
    nac_encoder_config_defaults(&c);
    snprintf(c.arch, sizeof c.arch, "mlp");
    for (int i = 0; i < n; i++) c.mlp_sizes[i] = sizes[i];
    c.mlp_nsizes = n;
    c.seed = seed;
    nac_encoder_t *e = NULL;
    TU_OK(nac_encoder_create(be, &c, &e));
    return e;
}

static float *host_of(const nac_tensor_t *t) {
    float *v = malloc((size_t)nac_tensor_numel(t) * sizeof *v);
    assert_non_null(v);
    TU_OK(nac_tensor_to_host(t, v));
    return v;
}

static nac_param_t *param(nac_encoder_t *e, const char *name) {
    nac_param_t *p = nac_params_find(nac_encoder_params(e), name);
    if (!p) fail_msg("no parameter \"%s\"", name);
    return p;
}

/* ---- sizes, counts, names (no forward) ---- */
static void check_arch(const char *arch, int ch, int64_t want_params, int want_f,
                       const char *const *names, int nnames) {
    nac_encoder_t *e = make(arch, ch, 32, 1.0f, 0);
    assert_int_equal(nac_encoder_features(e), want_f);
    int64_t n = nac_params_numel(nac_encoder_params(e), true);
    if (n != want_params)
        fail_msg("%s (%d channels): %lld trainable parameters, torchvision has %lld", arch, ch,
                 (long long)n, (long long)want_params);
    for (int i = 0; i < nnames; i++) param(e, names[i]);
    nac_encoder_free(e);
}

static void test_sizes_and_counts(void **state) {
    (void)state;
    /* torchvision without the classifier, CIFAR stem (3x3 conv1 instead of 7x7) */
    const char *r18[] = {"conv1.weight", "bn1.running_var", "layer1.1.bn2.bias",
                         "layer2.0.downsample.0.weight", "layer4.1.conv2.weight"};
    const char *r34[] = {"layer3.5.conv2.weight", "layer4.0.downsample.1.running_mean"};
    const char *r50[] = {"layer1.0.downsample.0.weight", "layer1.2.conv3.weight",
                         "layer4.2.bn3.running_var"};
    const char *vgg[] = {"features.0.weight", "features.0.bias", "features.1.running_var",
                         "features.40.weight", "features.41.bias"};
    check_arch("resnet18", 3, 11168832, 512, r18, 5);
    check_arch("resnet18", 1, 11168832 - 2 * 64 * 9, 512, r18, 5);
    check_arch("resnet34", 3, 21276992, 512, r34, 2);
    check_arch("resnet50", 3, 23500352, 2048, r50, 3);
    check_arch("vgg16_bn", 3, 14723136, 512, vgg, 5);

    nac_encoder_t *e = make("resnet18", 3, 16, 1.0f / 16, 0);
    assert_int_equal(nac_encoder_features(e), 32);
    nac_param_t *p = param(e, "layer4.0.conv1.weight");
    assert_int_equal(p->w.dim[0], 32);
    assert_int_equal(p->w.dim[1], 16);
    assert_int_equal(param(e, "bn1.weight")->flags, NAC_PARAM_BN);
    assert_int_equal(param(e, "bn1.running_mean")->flags, NAC_PARAM_BUFFER);
    assert_int_equal(param(e, "conv1.weight")->flags, 0);
    nac_encoder_free(e);

    const int sizes[] = {2, 16, 12};
    e = make_mlp(sizes, 3, 0);
    assert_int_equal(nac_encoder_features(e), 12);
    assert_int_equal(nac_params_numel(nac_encoder_params(e), true), 2 * 16 + 16 + 16 * 12 + 12);
    assert_int_equal(param(e, "layers.1.bias")->flags, NAC_PARAM_BIAS);
    nac_encoder_free(e);

    assert_true(nac_encoder_arch_known("resnet50"));
    assert_true(nac_encoder_arch_known("mlp"));
    assert_false(nac_encoder_arch_known("resnet101"));
    assert_non_null(strstr(nac_encoder_arch_list(), "vgg16_bn"));
}

/* ---- initialisation ---- */
static void test_init(void **state) {
    (void)state;
    nac_encoder_t *e = make("resnet18", 3, 32, 0.25f, 7);
    nac_params_t *ps = nac_encoder_params(e);
    int nconv = 0;
    for (int i = 0; i < ps->n; i++) {
        nac_param_t *p = ps->items[i];
        int64_t n = nac_tensor_numel(&p->w);
        float *v = host_of(&p->w);
        if (p->w.ndim == 4) {
            /* Kaiming normal, fan_out: std sqrt(2 / (out * k * k)) */
            double want = sqrt(2.0 / (double)(p->w.dim[0] * p->w.dim[2] * p->w.dim[3]));
            double s = 0, s2 = 0;
            for (int64_t j = 0; j < n; j++) s += v[j], s2 += (double)v[j] * v[j];
            double mean = s / n, sd = sqrt(s2 / n - mean * mean);
            /* sampling error of the std ~ want / sqrt(2n), of the mean ~ want / sqrt(n) */
            if (fabs(sd / want - 1) > 5 / sqrt(2.0 * n) || fabs(mean) > 5 * want / sqrt(n))
                fail_msg("%s: mean %g std %g, want 0 and %g (%lld values)", p->name, mean, sd,
                         want, (long long)n);
            nconv++;
        } else {
            bool ones = strstr(p->name, ".weight") || strstr(p->name, "running_var");
            for (int64_t j = 0; j < n; j++)
                if (v[j] != (ones ? 1.0f : 0.0f)) fail_msg("%s[%lld] = %g", p->name, (long long)j, v[j]);
        }
        free(v);
    }
    assert_int_equal(nconv, 20);

    /* determinism: the same seed gives the same numbers, another seed others; two tensors
       of one shape draw from different streams */
    nac_encoder_t *same = make("resnet18", 3, 32, 0.25f, 7), *other = make("resnet18", 3, 32, 0.25f, 8);
    float *a = host_of(&param(e, "layer1.0.conv1.weight")->w);
    float *b = host_of(&param(same, "layer1.0.conv1.weight")->w);
    float *c = host_of(&param(other, "layer1.0.conv1.weight")->w);
    float *d = host_of(&param(e, "layer1.0.conv2.weight")->w);
    int64_t n = nac_tensor_numel(&param(e, "layer1.0.conv1.weight")->w);
    assert_memory_equal(a, b, (size_t)n * sizeof *a);
    int diff_c = 0, diff_d = 0;
    for (int64_t j = 0; j < n; j++) diff_c += a[j] != c[j], diff_d += a[j] != d[j];
    assert_true(diff_c > n * 9 / 10 && diff_d > n * 9 / 10);
    free(a), free(b), free(c), free(d);
    nac_encoder_free(e);
    nac_encoder_free(same);
    nac_encoder_free(other);

    /* VGG: conv biases 0; Linear (MLP): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    e = make("vgg16_bn", 3, 32, 0.125f, 1);
    float *bias = host_of(&param(e, "features.3.bias")->w);
    for (int j = 0; j < 8; j++) assert_true(bias[j] == 0.0f);
    free(bias);
    nac_encoder_free(e);
    const int sizes[] = {400, 300};
    e = make_mlp(sizes, 2, 3);
    float *w = host_of(&param(e, "layers.0.weight")->w);
    double bound = 1 / sqrt(400.0), s2 = 0, amax = 0;
    for (int j = 0; j < 120000; j++) s2 += (double)w[j] * w[j], amax = fmax(amax, fabs(w[j]));
    assert_true(amax <= bound && amax > 0.99 * bound);
    assert_true(fabs(s2 / 120000 / (bound * bound / 3) - 1) < 0.02);
    free(w);
    nac_encoder_free(e);
}

/* ---- gradients against central differences ---- */
typedef struct fd_case {
    nac_encoder_t *e;
    nac_tensor_t *x;
    float *xv, *r; /* input and the loss weights: loss = sum(h * r) */
    int groups;
} fd_case;

static double fd_loss(fd_case *c) {
    const nac_tensor_t *h;
    TU_OK(nac_tensor_from_host(c->x, c->xv));
    TU_OK(nac_encoder_forward(c->e, c->x, true, c->groups, &h));
    float *hv = host_of(h);
    double l = 0;
    for (int64_t i = 0; i < nac_tensor_numel(h); i++) l += (double)hv[i] * c->r[i];
    free(hv);
    return l;
}

/* Central difference of the loss along one input value. */
static double fd_along(fd_case *c, float *v, float eps) {
    float keep = *v;
    *v = keep + eps;
    double lp = fd_loss(c);
    *v = keep - eps;
    double lm = fd_loss(c);
    *v = keep;
    return (lp - lm) / (2.0 * eps);
}

/* Forward + backward once, then compare `count` input coordinates (spread over the input)
 * and a few coordinates of the named parameters with central differences. Float
 * throughout: with a loss of order 1-10 and eps 1e-2 the rounding error of a difference is
 * ~1e-4 absolute, and the O(eps^2) term is small away from ReLU kinks, so we allow
 * 1e-2 relative with a floor of 1e-2 * the largest gradient checked. */
static void fd_check(const char *what, nac_encoder_t *e, const int64_t *xdim, int xnd,
                     int groups, int count, const char *const *pnames, int np) {
    fd_case c = {.e = e, .groups = groups};
    c.x = nac_tensor_new(be, xnd, xdim);
    int64_t nx = nac_tensor_numel(c.x), n = xdim[0], f = nac_encoder_features(e);
    c.xv = malloc((size_t)nx * sizeof *c.xv);
    c.r = malloc((size_t)(n * f) * sizeof *c.r);
    tu_randn(c.xv, nx, 11, 1.0f);
    tu_randn(c.r, n * f, 12, 1.0f);
    int64_t hd[2] = {n, f};
    nac_tensor_t *dh = tu_tensor(be, 2, hd, c.r), *dx = nac_tensor_new(be, xnd, xdim);
    (void)fd_loss(&c);
    TU_OK(nac_encoder_backward(e, dh, dx));
    float *g = host_of(dx);

    int total = count + 2 * np;
    double *an = malloc((size_t)total * sizeof *an), *num = malloc((size_t)total * sizeof *num);
    int k = 0;
    for (int i = 0; i < count; i++, k++) {
        int64_t j = (int64_t)((double)i * (double)nx / count + 3) % nx;
        an[k] = g[j];
        num[k] = fd_along(&c, &c.xv[j], 1e-2f);
    }
    for (int i = 0; i < np; i++) {
        nac_param_t *p = param(e, pnames[i]);
        float *w = host_of(&p->w), *pg = host_of(&p->g);
        int64_t m = nac_tensor_numel(&p->w);
        for (int t = 0; t < 2; t++, k++) {
            int64_t j = t ? m - 1 : m / 3;
            an[k] = pg[j];
            float keep = w[j];
            w[j] = keep + 1e-2f;
            TU_OK(nac_tensor_from_host(&p->w, w));
            double lp = fd_loss(&c);
            w[j] = keep - 1e-2f;
            TU_OK(nac_tensor_from_host(&p->w, w));
            double lm = fd_loss(&c);
            w[j] = keep;
            TU_OK(nac_tensor_from_host(&p->w, w));
            num[k] = (lp - lm) / 2e-2;
        }
        free(w);
        free(pg);
    }
    double amax = 0, worst = 0;
    for (int i = 0; i < total; i++) amax = fmax(amax, fabs(num[i]));
    for (int i = 0; i < total; i++) {
        double e_ = fabs(an[i] - num[i]) / fmax(fabs(num[i]), 1e-2 * amax);
        worst = fmax(worst, e_);
        if (e_ > 1e-2)
            fail_msg("%s: gradient %d: backward %.6g, central difference %.6g", what, i, an[i],
                     num[i]);
    }
    print_message("%s: %d gradients vs central differences, worst relative error %.2g\n", what,
                  total, worst);
    assert_true(amax > 0);
    free(an), free(num), free(g), free(c.xv), free(c.r);
    nac_tensor_free(c.x);
    nac_tensor_free(dh);
    nac_tensor_free(dx);
}

static void test_fd_resnet18(void **state) {
    (void)state;
    nac_encoder_t *e = make("resnet18", 3, 8, 1.0f / 16, 5);
    int64_t xd[4] = {4, 3, 8, 8};
    const char *ps[] = {"conv1.weight", "layer2.0.downsample.0.weight", "layer3.1.bn1.weight",
                        "layer4.1.bn2.bias"};
    fd_check("resnet18 w1/16 8x8", e, xd, 4, 1, 12, ps, 4);
    nac_encoder_free(e);
}

static void test_fd_resnet50(void **state) {
    (void)state;
    nac_encoder_t *e = make("resnet50", 1, 8, 1.0f / 16, 6);
    assert_int_equal(nac_encoder_features(e), 128);
    int64_t xd[4] = {4, 1, 8, 8};
    const char *ps[] = {"layer1.0.downsample.0.weight", "layer3.2.conv2.weight",
                        "layer4.0.bn3.weight"};
    fd_check("resnet50 w1/16 8x8 grey", e, xd, 4, 1, 10, ps, 3);
    nac_encoder_free(e);
}

static void test_fd_vgg(void **state) {
    (void)state;
    nac_encoder_t *e = make("vgg16_bn", 3, 32, 1.0f / 16, 7);
    assert_int_equal(nac_encoder_features(e), 32);
    int64_t xd[4] = {2, 3, 32, 32};
    const char *ps[] = {"features.0.weight", "features.24.weight", "features.41.weight"};
    fd_check("vgg16_bn w1/16 32x32", e, xd, 4, 1, 10, ps, 3);
    /* a convolution bias feeding a training-mode batch norm has no effect on the loss */
    float *db = host_of(&param(e, "features.10.bias")->g);
    float *dw = host_of(&param(e, "features.10.weight")->g);
    double bmax = 0, wmax = 0;
    for (int i = 0; i < 8; i++) bmax = fmax(bmax, fabs(db[i]));
    for (int i = 0; i < 8 * 8 * 9; i++) wmax = fmax(wmax, fabs(dw[i]));
    assert_true(bmax < 1e-4 * wmax);
    free(db), free(dw);
    nac_encoder_free(e);
}

static void test_fd_mlp(void **state) {
    (void)state;
    const int sizes[] = {2, 16, 16, 8};
    nac_encoder_t *e = make_mlp(sizes, 4, 8);
    int64_t xd[2] = {6, 2};
    const char *ps[] = {"layers.0.weight", "layers.1.bias", "layers.2.weight"};
    fd_check("mlp 2-16-16-8", e, xd, 2, 1, 8, ps, 3);
    /* a (N, 1, 1, 2) input is the same as (N, 2) */
    const char *none[] = {NULL};
    int64_t x4[4] = {6, 1, 1, 2};
    fd_check("mlp on (N,1,1,2)", e, x4, 4, 1, 6, none, 0);
    nac_encoder_free(e);
}

/* ---- bn_groups = 2: one 2K batch == two K batches, one after the other ---- */
static void test_bn_groups(void **state) {
    (void)state;
    const int K = 4;
    nac_encoder_t *a = make("resnet18", 3, 8, 1.0f / 16, 9), *b = make("resnet18", 3, 8, 1.0f / 16, 9);
    int64_t xd2[4] = {2 * K, 3, 8, 8}, xd1[4] = {K, 3, 8, 8};
    int64_t per = 3 * 8 * 8, f = 32;
    float *xv = malloc((size_t)(2 * K * per) * sizeof *xv), *r = malloc((size_t)(2 * K * f) * sizeof *r);
    tu_randn(xv, 2 * K * per, 21, 1.0f);
    tu_randn(r, 2 * K * f, 22, 1.0f);
    int64_t hd2[2] = {2 * K, f}, hd1[2] = {K, f};
    nac_tensor_t *x2 = tu_tensor(be, 4, xd2, xv), *dh2 = tu_tensor(be, 2, hd2, r);
    nac_tensor_t *dx2 = nac_tensor_new(be, 4, xd2);
    const nac_tensor_t *h;
    TU_OK(nac_encoder_forward(a, x2, true, 2, &h));
    float *ha = host_of(h);
    TU_OK(nac_encoder_backward(a, dh2, dx2));
    float *dxa = host_of(dx2);
    assert_int_equal(nac_encoder_batches_tracked(a), 2);

    nac_params_t *pa = nac_encoder_params(a), *pb = nac_encoder_params(b);
    float **gsum = calloc((size_t)pb->n, sizeof *gsum);
    for (int half = 0; half < 2; half++) {
        nac_tensor_t *x1 = tu_tensor(be, 4, xd1, xv + half * K * per);
        nac_tensor_t *dh1 = tu_tensor(be, 2, hd1, r + half * K * f), *dx1 = nac_tensor_new(be, 4, xd1);
        TU_OK(nac_encoder_forward(b, x1, true, 1, &h));
        float *hb = host_of(h);
        tu_close_f(hb, ha + half * K * f, K * f, 1e-5, 1e-6, "features of one view");
        TU_OK(nac_encoder_backward(b, dh1, dx1));
        float *dxb = host_of(dx1);
        tu_close_f(dxb, dxa + half * K * per, K * per, 1e-4, 1e-6, "input gradient of one view");
        for (int i = 0; i < pb->n; i++) {
            nac_param_t *p = pb->items[i];
            if (p->flags & NAC_PARAM_BUFFER) continue;
            float *g = host_of(&p->g);
            if (!gsum[i]) gsum[i] = g;
            else {
                for (int64_t j = 0; j < nac_tensor_numel(&p->g); j++) gsum[i][j] += g[j];
                free(g);
            }
        }
        free(hb), free(dxb);
        nac_tensor_free(x1), nac_tensor_free(dh1), nac_tensor_free(dx1);
    }
    for (int i = 0; i < pa->n; i++) {
        nac_param_t *p = pa->items[i], *q = pb->items[i];
        int64_t n = nac_tensor_numel(&p->w);
        if (p->flags & NAC_PARAM_BUFFER) {
            /* running statistics: updated view after view */
            float *va = host_of(&p->w), *vb = host_of(&q->w);
            tu_close_f(va, vb, n, 1e-5, 1e-7, p->name);
            free(va), free(vb);
        } else {
            float *ga = host_of(&p->g);
            double amax = 0;
            for (int64_t j = 0; j < n; j++) amax = fmax(amax, fabs(gsum[i][j]));
            tu_close_f(ga, gsum[i], n, 1e-4, 1e-5 * amax, p->name);
            free(ga);
            free(gsum[i]);
        }
    }
    free(gsum), free(ha), free(dxa), free(xv), free(r);
    nac_tensor_free(x2), nac_tensor_free(dh2), nac_tensor_free(dx2);
    nac_encoder_free(a);
    nac_encoder_free(b);
}

/* ---- evaluation-mode features in batches; re-planning on a new batch size ---- */
static void test_features_host(void **state) {
    (void)state;
    nac_encoder_t *e = make("resnet18", 1, 8, 1.0f / 16, 3);
    const int n = 5;
    int64_t per = 8 * 8, f = 32;
    float *imgs = malloc((size_t)(n * per) * sizeof *imgs);
    tu_randn(imgs, n * per, 31, 1.0f);
    /* a training forward first, so the running statistics are not the defaults */
    int64_t xd[4] = {n, 1, 8, 8};
    nac_tensor_t *x = tu_tensor(be, 4, xd, imgs);
    const nac_tensor_t *h;
    TU_OK(nac_encoder_forward(e, x, true, 1, &h));
    float *all = malloc((size_t)(n * f) * sizeof *all), *two = malloc((size_t)(n * f) * sizeof *two);
    TU_OK(nac_encoder_features_host(e, imgs, n, n, all));
    TU_OK(nac_encoder_forward(e, x, false, 1, &h));
    float *direct = host_of(h);
    tu_close_f(all, direct, n * f, 0, 0, "features_host == eval forward");
    TU_OK(nac_encoder_features_host(e, imgs, n, 2, two)); /* batches 2, 2, 1 (padded) */
    tu_close_f(two, all, n * f, 1e-5, 1e-6, "features in batches of 2");
    /* evaluation mode: an image's features do not depend on its batch */
    TU_OK(nac_encoder_features_host(e, imgs + 3 * per, 1, 1, two));
    tu_close_f(two, all + 3 * f, f, 1e-5, 1e-6, "features of one image");
    /* and the training forward still works after the re-plans */
    TU_OK(nac_encoder_forward(e, x, true, 1, &h));
    int64_t hd[2] = {n, f};
    nac_tensor_t *dh = tu_tensor(be, 2, hd, NULL);
    TU_OK(nac_tensor_fill(dh, 1.0f));
    TU_OK(nac_encoder_backward(e, dh, NULL));
    free(imgs), free(all), free(two), free(direct);
    nac_tensor_free(x), nac_tensor_free(dh);
    nac_encoder_free(e);
}

/* ---- heads ---- */
static void test_head(void **state) {
    (void)state;
    const int N = 5, IN = 12, HID = 10, D = 16;
    nac_head_t *hd = NULL;
    TU_OK(nac_head_create(be, IN, HID, D, "g.", 4, &hd));
    nac_params_t *ps = nac_head_params(hd);
    assert_int_equal(ps->n, 4);
    assert_string_equal(ps->items[0]->name, "g.0.weight");
    assert_string_equal(ps->items[1]->name, "g.0.bias");
    assert_string_equal(ps->items[2]->name, "g.2.weight");
    assert_string_equal(ps->items[3]->name, "g.2.bias");
    assert_true(fabsf(nac_head_scale(hd) - 0.25f) < 1e-7f);
    float *w0 = host_of(&ps->items[0]->w), *b0 = host_of(&ps->items[1]->w);
    float *w2 = host_of(&ps->items[2]->w), *b2 = host_of(&ps->items[3]->w);
    for (int i = 0; i < HID * IN; i++) assert_true(fabsf(w0[i]) <= 1 / sqrtf(IN));
    for (int i = 0; i < D * HID; i++) assert_true(fabsf(w2[i]) <= 1 / sqrtf(HID));

    float xv[5 * 12], r[5 * 16];
    tu_randn(xv, N * IN, 41, 1.0f);
    tu_randn(r, N * D, 42, 1.0f);
    int64_t xd[2] = {N, IN}, yd[2] = {N, D};
    nac_tensor_t *x = tu_tensor(be, 2, xd, xv), *dy = tu_tensor(be, 2, yd, r);
    nac_tensor_t *dx = nac_tensor_new(be, 2, xd);
    const nac_tensor_t *y;
    TU_OK(nac_head_forward(hd, x, &y));
    float *yv = host_of(y);
    /* host reference: (relu(x w0^T + b0) w2^T + b2) / sqrt(D) */
    for (int n = 0; n < N; n++)
        for (int o = 0; o < D; o++) {
            double acc = b2[o];
            for (int j = 0; j < HID; j++) {
                double a = b0[j];
                for (int i = 0; i < IN; i++) a += (double)xv[n * IN + i] * w0[j * IN + i];
                acc += (a > 0 ? a : 0) * w2[o * HID + j];
            }
            double want = acc / sqrt((double)D), got = yv[n * D + o];
            if (fabs(got - want) > 1e-5 * (1 + fabs(want)))
                fail_msg("head output (%d,%d): %.7g, want %.7g", n, o, got, want);
        }
    TU_OK(nac_head_backward(hd, dy, dx));
    float *gx = host_of(dx);
    /* central differences of sum(y * r) along inputs and parameters */
    for (int k = 0; k < 5 + 4 * 3; k++) {
        float *v;
        nac_tensor_t *t;
        float *gv;
        float *pg = NULL;
        int64_t j;
        if (k < 5) {
            j = (k * 13 + 2) % (N * IN);
            v = xv, t = x, gv = gx;
        } else {
            nac_param_t *p = ps->items[(k - 5) / 3];
            int64_t m = nac_tensor_numel(&p->w);
            j = ((k - 5) % 3) * (m - 1) / 2;
            v = host_of(&p->w), t = &p->w;
            gv = pg = host_of(&p->g);
        }
        double lv[2];
        float keep = v[j];
        for (int s = 0; s < 2; s++) {
            v[j] = keep + (s ? -1e-2f : 1e-2f);
            TU_OK(nac_tensor_from_host(t, v));
            TU_OK(nac_head_forward(hd, x, &y));
            float *yy = host_of(y);
            lv[s] = 0;
            for (int i = 0; i < N * D; i++) lv[s] += (double)yy[i] * r[i];
            free(yy);
        }
        v[j] = keep;
        TU_OK(nac_tensor_from_host(t, v));
        double num = (lv[0] - lv[1]) / 2e-2;
        if (fabs(num - gv[j]) > 1e-3 * (1 + fabs(num)))
            fail_msg("head gradient %d: backward %.6g, central difference %.6g", k, gv[j], num);
        if (k >= 5) free(v), free(pg);
    }
    /* dx may be NULL */
    TU_OK(nac_head_forward(hd, x, &y));
    TU_OK(nac_head_backward(hd, dy, NULL));
    /* bad shapes */
    int64_t bd[2] = {N, IN + 1};
    nac_tensor_t *bad = tu_tensor(be, 2, bd, NULL);
    TU_OK(nac_tensor_fill(bad, 0.0f));
    assert_int_equal(nac_head_forward(hd, bad, &y), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "head"));
    free(w0), free(b0), free(w2), free(b2), free(yv), free(gx);
    nac_tensor_free(x), nac_tensor_free(dy), nac_tensor_free(dx), nac_tensor_free(bad);
    nac_head_free(hd);
    nac_head_free(NULL);
}

/* ---- bad arguments and torchvision's num_batches_tracked ---- */
static void test_errors_and_extras(void **state) {
    (void)state;
    nac_encoder_config c;
    nac_encoder_config_defaults(&c);
    nac_encoder_t *e = NULL;
    snprintf(c.arch, sizeof c.arch, "resnet101");
    assert_int_equal(nac_encoder_create(be, &c, &e), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "resnet101"));
    assert_null(e);
    nac_encoder_config_defaults(&c);
    snprintf(c.arch, sizeof c.arch, "vgg16_bn");
    c.in_size = 28;
    assert_int_equal(nac_encoder_create(be, &c, &e), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "32x32"));
    nac_encoder_config_defaults(&c);
    c.width_mult = 0;
    assert_int_equal(nac_encoder_create(be, &c, &e), NAC_ERR_INVALID);
    nac_encoder_config_defaults(&c);
    snprintf(c.arch, sizeof c.arch, "mlp");
    c.mlp_nsizes = 1;
    assert_int_equal(nac_encoder_create(be, &c, &e), NAC_ERR_INVALID);

    e = make("resnet18", 3, 8, 1.0f / 16, 0);
    const nac_tensor_t *h;
    int64_t wrong[4] = {2, 1, 8, 8}, odd[4] = {3, 3, 8, 8}, hd[2] = {3, 32};
    nac_tensor_t *x = tu_tensor(be, 4, wrong, NULL), *y = tu_tensor(be, 4, odd, NULL);
    nac_tensor_t *dh = tu_tensor(be, 2, hd, NULL);
    TU_OK(nac_tensor_fill(x, 0.5f));
    TU_OK(nac_tensor_fill(y, 0.5f));
    TU_OK(nac_tensor_fill(dh, 1.0f));
    assert_int_equal(nac_encoder_forward(e, x, true, 1, &h), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "(N, 3, 8, 8)"));
    assert_int_equal(nac_encoder_forward(e, y, true, 2, &h), NAC_ERR_INVALID);
    assert_int_equal(nac_encoder_backward(e, dh, NULL), NAC_ERR_INVALID); /* no forward yet */
    TU_OK(nac_encoder_forward(e, y, true, 1, &h));
    assert_int_equal(nac_encoder_backward(e, y, NULL), NAC_ERR_INVALID); /* dh shape */
    assert_int_equal(nac_encoder_backward(e, dh, x), NAC_ERR_INVALID);   /* dx shape */
    TU_OK(nac_encoder_forward(e, y, true, 1, &h));
    TU_OK(nac_encoder_forward(e, y, true, 1, &h));
    assert_int_equal(nac_encoder_batches_tracked(e), 3);

    /* num_batches_tracked for torchvision's strict loading */
    nac_st_writer *w = nac_st_writer_new();
    assert_non_null(w);
    TU_OK(nac_encoder_write_extras(e, w, "enc.", nac_encoder_batches_tracked(e)));
    char path[] = "/tmp/nac_test_encoders_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    TU_OK(nac_st_writer_save(w, path));
    nac_st_writer_free(w);
    nac_st_file *f = NULL;
    TU_OK(nac_st_load(path, &f));
    unlink(path);
    assert_int_equal(f->ntensors, 20); /* one per batch norm */
    const nac_st_tensor *t = nac_st_find(f, "enc.layer3.0.downsample.1.num_batches_tracked");
    assert_non_null(t);
    assert_int_equal(t->dtype, NAC_DT_I64);
    assert_int_equal(t->ndim, 0);
    int64_t v;
    memcpy(&v, nac_st_data(f, t), sizeof v);
    assert_int_equal(v, 3);
    nac_st_free(f);

    nac_tensor_free(x), nac_tensor_free(y), nac_tensor_free(dh);
    nac_encoder_free(e);
    nac_encoder_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_and_counts),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_fd_resnet18),
        cmocka_unit_test(test_fd_resnet50),
        cmocka_unit_test(test_fd_vgg),
        cmocka_unit_test(test_fd_mlp),
        cmocka_unit_test(test_bn_groups),
        cmocka_unit_test(test_features_host),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_errors_and_extras),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
