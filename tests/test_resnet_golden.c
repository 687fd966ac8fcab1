/* ResNet-18 (CIFAR stem, width 1/16: widths 4/8/16/32) against PyTorch: tests/data/
 * resnet18_w4.safetensors holds torchvision-named parameters, an input (3,3,16,16), the
 * features of a train-mode forward, d loss/d features, the gradient of every parameter and
 * of the input, and the running statistics after that forward. We load the parameters by
 * name, run forward + backward, and match all of it; then the evaluation-mode forward,
 * with running statistics set to the batch statistics, must give the same features. */
#include "tests/testutil.h"

#include "encoders/encoder.h"
#include "io/safetensors.h"

#define GOLDEN NAC_TEST_DATA "/resnet18_w4.safetensors"

static nac_backend_t *be;
static nac_st_file *gf;

static int setup(void **state) {
    (void)state;
    be = tu_backend();
    TU_OK(nac_st_load(GOLDEN, &gf));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    nac_st_free(gf);
    nac_backend_free(be);
    return 0;
}

static int64_t st_numel(const nac_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* The golden tensor `name` as floats (caller frees); its size must be n. */
static float *golden(const char *name, int64_t n) {
    const nac_st_tensor *t = nac_st_find(gf, name);
    if (!t) fail_msg("%s: tensor \"%s\" missing", GOLDEN, name);
    if (st_numel(t) != n)
        fail_msg("%s: \"%s\" has %lld elements, want %lld", GOLDEN, name,
                 (long long)st_numel(t), (long long)n);
    float *v = malloc((size_t)n * sizeof *v);
    assert_non_null(v);
    TU_OK(nac_st_read_f32(gf, name, v, n));
    return v;
}

/* Largest error relative to max(|want_i|, floor_rel * max_j |want_j|). */
static double rel_err(const float *got, const float *want, int64_t n, double floor_rel) {
    double amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmax(amax, fabs(want[i]));
    double *w = malloc((size_t)n * sizeof *w);
    assert_non_null(w);
    for (int64_t i = 0; i < n; i++) w[i] = want[i];
    double e = tu_max_rel(got, w, n, fmax(floor_rel * amax, 1e-30));
    free(w);
    return e;
}

/* Errors are measured relative to max(|want_i|, 10% of the tensor's largest |want|): the
 * gradients come out of float32 sums with heavy cancellation (train-mode batch norm
 * subtracts the means of dy and dy*xhat), so an element far below the tensor's scale
 * carries an absolute error of the tensor's scale times float rounding. Measured: features
 * 6e-6, input gradient 1.2e-5, parameter gradients <= 2.6e-5, running statistics 7e-6
 * (with a 1% floor the parameter gradients reach 1.5e-4). */
static void expect_close(const nac_tensor_t *t, const char *name, double tol, double *worst) {
    int64_t n = nac_tensor_numel(t);
    float *got = malloc((size_t)n * sizeof *got);
    assert_non_null(got);
    TU_OK(nac_tensor_to_host(t, got));
    float *want = golden(name, n);
    double e = rel_err(got, want, n, 0.1);
    if (e > tol) fail_msg("%s: relative error %.3g over the tolerance %.3g", name, e, tol);
    if (worst && e > *worst) *worst = e;
    free(got);
    free(want);
}

static nac_encoder_t *golden_encoder(void) {
    nac_encoder_config c;
    nac_encoder_config_defaults(&c);
    c.in_channels = 3;
    c.in_size = 16;
    c.width_mult = 1.0f / 16.0f;
    nac_encoder_t *enc = NULL;
    TU_OK(nac_encoder_create(be, &c, &enc));
    assert_int_equal(nac_encoder_features(enc), 32);
    /* parameters by name; running statistics keep their defaults (0, 1): the file's are
       the values after the forward */
    nac_params_t *ps = nac_encoder_params(enc);
    for (int i = 0; i < ps->n; i++) {
        nac_param_t *p = ps->items[i];
        if (p->flags & NAC_PARAM_BUFFER) continue;
        float *v = golden(p->name, nac_tensor_numel(&p->w));
        TU_OK(nac_tensor_from_host(&p->w, v));
        free(v);
    }
    return enc;
}

/* Every torchvision name in the file is one of ours and vice versa. */
static void test_names(void **state) {
    (void)state;
    nac_encoder_t *enc = golden_encoder();
    nac_params_t *ps = nac_encoder_params(enc);
    int nparams = 0;
    for (int i = 0; i < gf->ntensors; i++) {
        const char *name = gf->tensors[i].name;
        if (!strncmp(name, "grad.", 5) || !strcmp(name, "input") || !strcmp(name, "features") ||
            !strcmp(name, "dfeatures"))
            continue;
        nparams++;
        nac_param_t *p = nac_params_find(ps, name);
        if (!p) fail_msg("golden tensor \"%s\" is not an encoder parameter", name);
        const nac_st_tensor *t = &gf->tensors[i];
        assert_int_equal(t->ndim, p->w.ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], p->w.dim[d]);
        char gname[160];
        snprintf(gname, sizeof gname, "grad.%s", name);
        bool buffer = (p->flags & NAC_PARAM_BUFFER) != 0;
        assert_int_equal(nac_st_find(gf, gname) == NULL, buffer);
    }
    assert_int_equal(nparams, ps->n);
    nac_encoder_free(enc);
}

static void test_forward_backward(void **state) {
    (void)state;
    nac_encoder_t *enc = golden_encoder();
    int64_t xd[4] = {3, 3, 16, 16}, hd[2] = {3, 32};
    float *xv = golden("input", 3 * 3 * 16 * 16), *dhv = golden("dfeatures", 3 * 32);
    nac_tensor_t *x = tu_tensor(be, 4, xd, xv), *dh = tu_tensor(be, 2, hd, dhv);
    nac_tensor_t *dx = nac_tensor_new(be, 4, xd);

    const nac_tensor_t *h;
    TU_OK(nac_encoder_forward(enc, x, true, 1, &h));
    double worst_f = 0, worst_g = 0, worst_s = 0;
    expect_close(h, "features", 1e-4, &worst_f);
    TU_OK(nac_encoder_backward(enc, dh, dx));
    expect_close(dx, "grad.input", 1e-4, &worst_g);

    nac_params_t *ps = nac_encoder_params(enc);
    int ngrads = 0, nstats = 0;
    for (int i = 0; i < ps->n; i++) {
        nac_param_t *p = ps->items[i];
        if (p->flags & NAC_PARAM_BUFFER) {
            expect_close(&p->w, p->name, 1e-4, &worst_s);
            nstats++;
        } else {
            char gname[160];
            snprintf(gname, sizeof gname, "grad.%s", p->name);
            expect_close(&p->g, gname, 1e-4, &worst_g);
            ngrads++;
        }
    }
    assert_int_equal(ngrads, 60); /* 20 convolutions, 20 batch norms x (weight, bias) */
    assert_int_equal(nstats, 40);
    assert_int_equal(nac_encoder_batches_tracked(enc), 1);
    print_message("resnet18 w1/16 vs PyTorch: features %.2g, gradients %.2g, running stats %.2g "
                  "(max relative error, floor 10%% of each tensor's max)\n",
                  worst_f, worst_g, worst_s);

    nac_tensor_free(x);
    nac_tensor_free(dh);
    nac_tensor_free(dx);
    free(xv);
    free(dhv);
    nac_encoder_free(enc);
}

/* Evaluation mode: with every running mean / variance set to the batch mean / biased
 * variance of the golden forward (recovered from the file's updated running statistics:
 * mean = rm / 0.1, var = (rv - 0.9) / 0.1 * (n - 1) / n), the inference forward is the
 * training forward, so the features must match again. */
static void test_eval_mode(void **state) {
    (void)state;
    nac_encoder_t *enc = golden_encoder();
    nac_params_t *ps = nac_encoder_params(enc);
    for (int i = 0; i < ps->n; i++) {
        nac_param_t *p = ps->items[i];
        if (!(p->flags & NAC_PARAM_BUFFER)) continue;
        /* values per channel: 3 images of 16x16 (stem, layer1), 8x8, 4x4, 2x2 */
        int layer = !strncmp(p->name, "layer", 5) ? p->name[5] - '0' : 1;
        double cnt = 3.0 * (16 >> (layer - 1)) * (16 >> (layer - 1));
        int64_t c = p->w.dim[0];
        float *v = golden(p->name, c);
        bool var = strstr(p->name, "running_var") != NULL;
        for (int64_t j = 0; j < c; j++)
            v[j] = var ? (float)((v[j] - 0.9) / 0.1 * (cnt - 1) / cnt) : (float)(v[j] / 0.1);
        TU_OK(nac_tensor_from_host(&p->w, v));
        free(v);
    }
    int64_t xd[4] = {3, 3, 16, 16};
    float *xv = golden("input", 3 * 3 * 16 * 16);
    nac_tensor_t *x = tu_tensor(be, 4, xd, xv);
    const nac_tensor_t *h;
    TU_OK(nac_encoder_forward(enc, x, false, 1, &h));
    /* the variances pass through (rv - 0.9) / 0.1: float rounding of rv (6e-8) becomes up
       to ~1e-6 absolute in the variance, hence 1e-3 rather than 1e-4 */
    double worst = 0;
    expect_close(h, "features", 1e-3, &worst);
    print_message("eval mode with batch statistics: features %.2g\n", worst);
    /* and no backward after an evaluation forward */
    int64_t hd[2] = {3, 32};
    nac_tensor_t *dh = tu_tensor(be, 2, hd, NULL);
    TU_OK(nac_tensor_fill(dh, 1.0f));
    assert_int_equal(nac_encoder_backward(enc, dh, NULL), NAC_ERR_INVALID);
    nac_tensor_free(dh);
    nac_tensor_free(x);
    free(xv);
    nac_encoder_free(enc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_forward_backward),
        cmocka_unit_test(test_eval_mode),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
