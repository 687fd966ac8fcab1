/* Batch-norm recalibration of a frozen encoder (nac_encoder_recalibrate_bn): after it, the
 * evaluation-mode output of a random body equals a training-mode pass over the same data;
 * batches are averaged; trained parameters are untouched. */
#include "testutil.h"

#include "encoders/encoder.h"

enum { N = 16, C = 1, S = 32 };

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

static nac_encoder_t *make(void) {
    nac_encoder_config c;
    nac_encoder_config_defaults(&c);
    c.in_channels = C;
    c.in_size = S;
    c.width_mult = 1.0f / 16;
    c.seed = 3;
    nac_encoder_t *e = NULL;
    TU_OK(nac_encoder_create(be, &c, &e));
    return e;
}

/* Largest |a - b| / (max|b| over the array). */
static double rel_diff(const float *a, const float *b, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return d / m;
}

static float *buffers(nac_encoder_t *e, int64_t *count) {
    nac_params_t *ps = nac_encoder_params(e);
    int64_t total = 0;
    for (int i = 0; i < ps->n; i++)
        if (ps->items[i]->flags & NAC_PARAM_BUFFER) total += nac_tensor_numel(&ps->items[i]->w);
    float *v = malloc((size_t)total * sizeof *v);
    assert_non_null(v);
    for (int i = 0, off = 0; i < ps->n; i++)
        if (ps->items[i]->flags & NAC_PARAM_BUFFER) {
            TU_OK(nac_tensor_to_host(&ps->items[i]->w, v + off));
            off += (int)nac_tensor_numel(&ps->items[i]->w);
        }
    *count = total;
    return v;
}

static void test_eval_equals_train_pass(void **state) {
    (void)state;
    nac_encoder_t *e = make();
    int f = nac_encoder_features(e);
    static float img[N * C * S * S], htrain[N * 64], heval[N * 64], hbefore[N * 64];
    tu_randu(img, N * C * S * S, 5, 0.0f, 1.0f);
    nac_tensor_t x;
    int64_t d[4] = {N, C, S, S};
    nac_tensor_init(&x, be, 4, d);
    TU_OK(nac_tensor_from_host(&x, img));
    const nac_tensor_t *h;
    TU_OK(nac_encoder_forward(e, &x, true, 1, &h));
    TU_OK(nac_tensor_to_host(h, htrain));
    /* statistics 0/1 and one momentum step: evaluation mode is far from the train pass */
    TU_OK(nac_encoder_features_host(e, img, N, N, hbefore));
    double r0 = rel_diff(hbefore, htrain, (int64_t)N * f);
    if (!(r0 > 0.2)) fail_msg("evaluation before recalibration is already close (%g)", r0);

    nac_param_t *w = nac_params_find(nac_encoder_params(e), "layer1.0.conv1.weight");
    assert_non_null(w);
    int64_t nw = nac_tensor_numel(&w->w);
    float *w0 = malloc((size_t)nw * sizeof *w0), *w1 = malloc((size_t)nw * sizeof *w1);
    TU_OK(nac_tensor_to_host(&w->w, w0));
    TU_OK(nac_encoder_recalibrate_bn(e, img, N, N));
    TU_OK(nac_tensor_to_host(&w->w, w1));
    assert_memory_equal(w0, w1, (size_t)nw * sizeof *w0);
    TU_OK(nac_encoder_features_host(e, img, N, N, heval));
    /* equal up to the unbiased variance kept (m/(m-1) per layer, m = 16 images x 4x4 =
       256 values in the last stage: about 0.2% a layer in scale, under 1% over the body) */
    double r = rel_diff(heval, htrain, (int64_t)N * f);
    if (!(r < 1.5e-2)) fail_msg("evaluation after recalibration differs from the train pass by %g", r);
    free(w0);
    free(w1);
    nac_tensor_release(&x);
    nac_encoder_free(e);
}

static void test_batches_are_averaged(void **state) {
    (void)state;
    static float img[N * C * S * S];
    tu_randu(img, N * C * S * S, 6, 0.0f, 1.0f);
    int64_t n1, n2, n3;
    nac_encoder_t *e = make();
    TU_OK(nac_encoder_recalibrate_bn(e, img, N / 2, N / 2));
    float *a = buffers(e, &n1);
    TU_OK(nac_encoder_recalibrate_bn(e, img + N / 2 * C * S * S, N / 2, N / 2));
    float *b = buffers(e, &n2);
    /* all N in two batches of N/2 (and a ragged tail is dropped: N + 3 images) */
    TU_OK(nac_encoder_recalibrate_bn(e, img, N, N / 2));
    float *both = buffers(e, &n3);
    assert_true(n1 == n2 && n2 == n3 && n1 > 0);
    for (int64_t i = 0; i < n1; i++) {
        double want = 0.5 * ((double)a[i] + b[i]);
        if (!(fabs(both[i] - want) <= 1e-5 * (1 + fabs(want))))
            fail_msg("statistic %lld: got %g, want the batches' average %g", (long long)i, both[i], want);
    }
    assert_int_equal(nac_encoder_recalibrate_bn(e, NULL, N, N), NAC_ERR_INVALID);
    assert_int_equal(nac_encoder_recalibrate_bn(e, img, 0, N), NAC_ERR_INVALID);
    free(a);
    free(b);
    free(both);
    nac_encoder_free(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_equals_train_pass),
        cmocka_unit_test(test_batches_are_averaged),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
