/* The bf16 precision of the CPU backend (backend.h nac_precision): convolutions (forward,
 * backward data, backward weights), GEMM in every transpose with alpha and beta, and
 * linear layers against the fp32 backend. Two checks each: on operands exactly
 * representable in bf16 the results agree to fp32 rounding (so the bf16 copies are laid
 * out and transposed right), and on random operands they agree within bf16's precision
 * but not bit for bit (so bf16 really ran). Also: a short bf16 pretraining run's losses
 * are finite and close to fp32's, and a CPU without bf16 says so in one line and runs fp32
 * (forced by NAC_CPU_NO_BF16=1). Skipped where the CPU has no bf16 instructions. */
#include "tests/testutil.h"

#include "nac/pretrain.h"

static nac_backend_t *backend(nac_precision p) {
    nac_backend_t *be = NULL;
    nac_backend_options o = {.threads = 2, .precision = p};
    TU_OK(nac_backend_create("cpu", &o, &be));
    return be;
}

/* Values with at most 8 significant bits (k/16, |k| <= 64): exact in bf16, and their
 * products summed over a few hundred terms exact in fp32. */
static void exact_values(float *x, int64_t n, uint64_t seed) {
    tu_randu(x, n, seed, -4.0f, 4.0f);
    for (int64_t i = 0; i < n; i++) x[i] = roundf(x[i] * 16.0f) / 16.0f;
}

/* ||got - want|| / ||want|| */
static double rel_err(const float *got, const float *want, int64_t n) {
    double d = 0, w = 0;
    for (int64_t i = 0; i < n; i++) {
        d += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        w += (double)want[i] * want[i];
    }
    return sqrt(d / (w > 0 ? w : 1));
}

/* The three passes of one convolution on backend be: y, dx, dw (host arrays). */
typedef struct conv_case {
    int64_t xd[4], wd[4];
    nac_conv_params p;
    bool f32; /* at most 8 channels on both sides: a bf16 backend runs it in f32 */
} conv_case;

static int64_t numel4(const int64_t *d) { return d[0] * d[1] * d[2] * d[3]; }

static void conv_out_dims(const conv_case *c, int64_t *yd) {
    yd[0] = c->xd[0];
    yd[1] = c->wd[0];
    for (int i = 2; i < 4; i++)
        yd[i] = nac_conv_out_size(c->xd[i], (int)c->wd[i], c->p.stride, c->p.pad);
}

static void conv_run_on(nac_backend_t *be, const conv_case *c, const float *x, const float *w,
                        const float *dy, float *y, float *dx, float *dw) {
    int64_t yd[4];
    conv_out_dims(c, yd);
    nac_tensor_t *tx = tu_tensor(be, 4, c->xd, x), *tw = tu_tensor(be, 4, c->wd, w);
    nac_tensor_t *tdy = tu_tensor(be, 4, yd, dy), *ty = nac_tensor_new(be, 4, yd);
    nac_tensor_t *tdx = nac_tensor_new(be, 4, c->xd), *tdw = nac_tensor_new(be, 4, c->wd);
    TU_OK(nac_conv2d_forward(tx, tw, NULL, ty, c->p));
    TU_OK(nac_conv2d_backward_data(tdy, tw, tdx, c->p));
    TU_OK(nac_conv2d_backward_weights(tx, tdy, tdw, NULL, c->p));
    TU_OK(nac_tensor_to_host(ty, y));
    TU_OK(nac_tensor_to_host(tdx, dx));
    TU_OK(nac_tensor_to_host(tdw, dw));
    nac_tensor_free(tx);
    nac_tensor_free(tw);
    nac_tensor_free(tdy);
    nac_tensor_free(ty);
    nac_tensor_free(tdx);
    nac_tensor_free(tdw);
}

static void conv_run(nac_precision prec, const conv_case *c, const float *x, const float *w,
                     const float *dy, float *y, float *dx, float *dw) {
    nac_backend_t *be = backend(prec);
    conv_run_on(be, c, x, w, dy, y, dx, dw);
    nac_backend_free(be);
}

static void conv_check(const conv_case *c, bool exact) {
    int64_t yd[4];
    conv_out_dims(c, yd);
    int64_t nx = numel4(c->xd), nw = numel4(c->wd), ny = numel4(yd);
    float *x = malloc((size_t)nx * 4), *w = malloc((size_t)nw * 4), *dy = malloc((size_t)ny * 4);
    float *buf = malloc((size_t)(ny + nx + nw) * 2 * 4);
    assert_non_null(x && w && dy && buf);
    float *y32 = buf, *dx32 = y32 + ny, *dw32 = dx32 + nx;
    float *y16 = dw32 + nw, *dx16 = y16 + ny, *dw16 = dx16 + nx;
    if (exact) {
        exact_values(x, nx, 1);
        exact_values(w, nw, 2);
        exact_values(dy, ny, 3);
    } else {
        tu_randn(x, nx, 1, 1.0f);
        tu_randn(w, nw, 2, 0.2f);
        tu_randn(dy, ny, 3, 1.0f);
    }
    conv_run(NAC_PRECISION_FP32, c, x, w, dy, y32, dx32, dw32);
    conv_run(NAC_PRECISION_BF16, c, x, w, dy, y16, dx16, dw16);
    const float *got[3] = {y16, dx16, dw16}, *want[3] = {y32, dx32, dw32};
    const int64_t n[3] = {ny, nx, nw};
    const char *name[3] = {"forward", "backward data", "backward weights"};
    for (int i = 0; i < 3; i++) {
        double e = rel_err(got[i], want[i], n[i]);
        /* random operands: a bf16 error (not 0, within bf16's), or none where it stays f32 */
        if (exact || c->f32 ? e > 1e-6 : (e > 1e-2 || e < 1e-5))
            fail_msg("conv %lldx%lld %s (%s operands%s): relative error %.3g",
                     (long long)c->wd[1], (long long)c->wd[0], name[i],
                     exact ? "bf16-exact" : "random", c->f32 ? ", kept f32" : "", e);
    }
    free(x);
    free(w);
    free(dy);
    free(buf);
}

static const conv_case conv_cases[] = {
        {{4, 16, 8, 8}, {32, 16, 3, 3}, {1, 1}, false},  /* blocked channels */
        {{4, 8, 8, 8}, {8, 8, 3, 3}, {1, 1}, true}, /* the 8-channel layout: kept f32 */
        {{4, 8, 8, 8}, {16, 8, 3, 3}, {1, 1}, false},    /* 8 -> 16 channels: bf16 */
        {{3, 3, 9, 9}, {16, 3, 3, 3}, {2, 1}, false},    /* image input, stride 2 */
        {{2, 32, 4, 4}, {16, 32, 1, 1}, {1, 0}, false},  /* 1x1 projection */
};
enum { NCONV = sizeof conv_cases / sizeof conv_cases[0] };

static void test_conv(void **state) {
    (void)state;
    for (size_t i = 0; i < NCONV; i++) {
        conv_check(&conv_cases[i], true);
        conv_check(&conv_cases[i], false);
    }
}

/* The casts and reorders of every op share a few arena buffers (backend/cpu): one op's
 * leftovers must never show through another's (padded) layout, and two copies an op holds
 * at once must never share a buffer (with every slot on one buffer this fails, checked).
 * Every case, run one after another on one bf16 backend, forwards then backwards through
 * the list, equals the same case run alone on a fresh backend bit for bit. */
static void test_conv_shared_buffers(void **state) {
    (void)state;
    float *in[NCONV][3], *alone[NCONV][3], *got[3];
    int64_t n[NCONV][3];
    for (int i = 0; i < NCONV; i++) {
        const conv_case *c = &conv_cases[i];
        int64_t yd[4];
        conv_out_dims(c, yd);
        n[i][0] = numel4(c->xd), n[i][1] = numel4(c->wd), n[i][2] = numel4(yd);
        for (int j = 0; j < 3; j++) {
            in[i][j] = malloc((size_t)n[i][j] * sizeof(float));
            alone[i][j] = malloc((size_t)n[i][j] * sizeof(float));
            assert_non_null(in[i][j]);
            assert_non_null(alone[i][j]);
            tu_randn(in[i][j], n[i][j], 10 * (uint64_t)i + (uint64_t)j, 1.0f);
        }
        /* outputs: y (n[2]), dx (n[0]), dw (n[1]) */
        conv_run(NAC_PRECISION_BF16, c, in[i][0], in[i][1], in[i][2], alone[i][2], alone[i][0],
                 alone[i][1]);
    }
    for (int j = 0; j < 3; j++) {
        got[j] = malloc(8192 * sizeof(float)); /* the largest operand: case 0's y */
        assert_non_null(got[j]);
        for (int i = 0; i < NCONV; i++) assert_true(n[i][j] <= 8192);
    }
    nac_backend_t *be = backend(NAC_PRECISION_BF16);
    for (int pass = 0; pass < 2; pass++)
        for (int r = 0; r < NCONV; r++) {
            int i = pass ? NCONV - 1 - r : r;
            conv_run_on(be, &conv_cases[i], in[i][0], in[i][1], in[i][2], got[2], got[0], got[1]);
            for (int j = 0; j < 3; j++)
                if (memcmp(got[j], alone[i][j], (size_t)n[i][j] * sizeof(float)))
                    fail_msg("conv case %d (pass %d): output %d differs from the case run alone",
                             i, pass, j);
        }
    nac_backend_free(be);
    for (int j = 0; j < 3; j++) free(got[j]);
    for (int i = 0; i < NCONV; i++)
        for (int j = 0; j < 3; j++) {
            free(in[i][j]);
            free(alone[i][j]);
        }
}

/* C = alpha op(A) op(B) + beta C for every transpose, on both backends. */
static void gemm_run(nac_precision prec, bool ta, bool tb, float alpha, float beta, int64_t m,
                     int64_t n, int64_t k, const float *a, const float *b, const float *c0,
                     float *c) {
    nac_backend_t *be = backend(prec);
    int64_t ad[2] = {ta ? k : m, ta ? m : k}, bd[2] = {tb ? n : k, tb ? k : n}, cd[2] = {m, n};
    nac_tensor_t *A = tu_tensor(be, 2, ad, a), *B = tu_tensor(be, 2, bd, b);
    nac_tensor_t *C = tu_tensor(be, 2, cd, c0);
    TU_OK(nac_gemm(ta, tb, alpha, A, B, beta, C));
    TU_OK(nac_tensor_to_host(C, c));
    nac_tensor_free(A);
    nac_tensor_free(B);
    nac_tensor_free(C);
    nac_backend_free(be);
}

static void test_gemm(void **state) {
    (void)state;
    const int64_t m = 37, n = 29, k = 70;
    float a[37 * 70], b[70 * 29], c0[37 * 29], c32[37 * 29], c16[37 * 29];
    const float ab[3][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-2.0f, 0.25f}};
    for (int exact = 0; exact < 2; exact++) {
        if (exact) {
            exact_values(a, m * k, 4);
            exact_values(b, k * n, 5);
            exact_values(c0, m * n, 6);
        } else {
            tu_randn(a, m * k, 4, 1.0f);
            tu_randn(b, k * n, 5, 1.0f);
            tu_randn(c0, m * n, 6, 1.0f);
        }
        for (int t = 0; t < 4; t++)
            for (int s = 0; s < 3; s++) {
                bool ta = t & 1, tb = t & 2;
                gemm_run(NAC_PRECISION_FP32, ta, tb, ab[s][0], ab[s][1], m, n, k, a, b, c0, c32);
                gemm_run(NAC_PRECISION_BF16, ta, tb, ab[s][0], ab[s][1], m, n, k, a, b, c0, c16);
                double e = rel_err(c16, c32, m * n);
                if (exact ? e > 1e-6 : (e > 1e-2 || e < 1e-5))
                    fail_msg("gemm ta=%d tb=%d alpha %g beta %g (%s): relative error %.3g", ta,
                             tb, (double)ab[s][0], (double)ab[s][1],
                             exact ? "bf16-exact" : "random", e);
            }
    }
}

/* Linear forward (with bias) and backward (dx, dw, db) on both backends. */
static void linear_run(nac_precision prec, const float *x, const float *w, const float *bias,
                       const float *dy, float *out) {
    enum { N = 24, I = 40, O = 12 };
    nac_backend_t *be = backend(prec);
    int64_t xd[2] = {N, I}, wd[2] = {O, I}, bd[1] = {O}, yd[2] = {N, O};
    nac_tensor_t *tx = tu_tensor(be, 2, xd, x), *tw = tu_tensor(be, 2, wd, w);
    nac_tensor_t *tb = tu_tensor(be, 1, bd, bias), *tdy = tu_tensor(be, 2, yd, dy);
    nac_tensor_t *ty = nac_tensor_new(be, 2, yd), *tdx = nac_tensor_new(be, 2, xd);
    nac_tensor_t *tdw = nac_tensor_new(be, 2, wd), *tdb = nac_tensor_new(be, 1, bd);
    TU_OK(nac_linear_forward(tx, tw, tb, ty));
    TU_OK(nac_linear_backward(tx, tw, tdy, tdx, tdw, tdb));
    TU_OK(nac_tensor_to_host(ty, out));
    TU_OK(nac_tensor_to_host(tdx, out + N * O));
    TU_OK(nac_tensor_to_host(tdw, out + N * O + N * I));
    TU_OK(nac_tensor_to_host(tdb, out + N * O + N * I + O * I));
    nac_tensor_t *all[] = {tx, tw, tb, tdy, ty, tdx, tdw, tdb};
    for (size_t i = 0; i < 8; i++) nac_tensor_free(all[i]);
    nac_backend_free(be);
}

static void test_linear(void **state) {
    (void)state;
    enum { N = 24, I = 40, O = 12, TOTAL = N * O + N * I + O * I + O };
    float x[N * I], w[O * I], b[O], dy[N * O], r32[TOTAL], r16[TOTAL];
    tu_randn(x, N * I, 7, 1.0f);
    tu_randn(w, O * I, 8, 0.3f);
    tu_randn(b, O, 9, 1.0f);
    tu_randn(dy, N * O, 10, 1.0f);
    linear_run(NAC_PRECISION_FP32, x, w, b, dy, r32);
    linear_run(NAC_PRECISION_BF16, x, w, b, dy, r16);
    const int64_t off[5] = {0, N * O, N * O + N * I, N * O + N * I + O * I, TOTAL};
    const char *name[4] = {"y", "dx", "dw", "db"};
    for (int i = 0; i < 4; i++) {
        double e = rel_err(r16 + off[i], r32 + off[i], off[i + 1] - off[i]);
        bool want_diff = i < 3; /* db is a column sum in fp32 in both */
        if (e > 1e-2 || (want_diff && e < 1e-5) || (!want_diff && e > 1e-6))
            fail_msg("linear %s: relative error %.3g", name[i], e);
    }
}

/* ---- a short pretraining run in both precisions ---- */
typedef struct losses {
    double v[64];
    int n;
} losses;

static nac_status on_log(void *ctx, const char *json) {
    losses *l = ctx;
    const char *p = strstr(json, "\"loss\":");
    if (strstr(json, "\"kind\":\"train\"") && p && l->n < 64) l->v[l->n++] = atof(p + 7);
    return NAC_OK;
}

static void pretrain(const char *precision, losses *out) {
    nac_pretrain_config c;
    nac_pretrain_defaults(&c);
    strcpy(c.dataset, "synthetic");
    c.synthetic_n = 64;
    c.width_mult = 1.0 / 16;
    c.batch = 16;
    c.epochs = 2;
    c.warmup_epochs = 1;
    c.lr = 0.5;
    c.workers = 1;
    c.threads = 2;
    c.log_every = 1;
    c.knn_every = 0;
    c.stats_subset = 32;
    snprintf(c.precision, sizeof c.precision, "%s", precision);
    char dir[64];
    assert_int_equal(tu_mkdtemp(dir, sizeof dir, "nac_bf16"), 0);
    nac_loop_hooks h = {.ctx = out, .log = on_log};
    nac_pretrain_result r;
    TU_OK(nac_pretrain_run(&c, dir, "{\"test\":true}", false, &h, &r));
    tu_rm_tree(dir);
}

static void test_pretrain_close(void **state) {
    (void)state;
    losses f = {.n = 0}, b = {.n = 0};
    pretrain("fp32", &f);
    pretrain("bf16", &b);
    assert_int_equal(f.n, 8); /* 64/16 = 4 steps an epoch, 2 epochs */
    assert_int_equal(b.n, f.n);
    bool differ = false;
    for (int i = 0; i < f.n; i++) {
        printf("step %d: loss fp32 %.6f bf16 %.6f\n", i + 1, f.v[i], b.v[i]);
        assert_true(isfinite(b.v[i]));
        if (fabs(b.v[i] - f.v[i]) > 0.02 * fabs(f.v[i]) + 1e-3)
            fail_msg("step %d: bf16 loss %.6f is not within 2%% of fp32's %.6f", i + 1, b.v[i],
                     f.v[i]);
        differ |= b.v[i] != f.v[i];
    }
    assert_true(differ); /* bf16 ran */
}

/* ---- no bf16 hardware: one line, then fp32 ---- */
static void test_fallback(void **state) {
    (void)state;
    char dir[64], err[4096];
    assert_int_equal(tu_mkdtemp(dir, sizeof dir, "nac_bf16_fb"), 0);
    setenv("NAC_CPU_NO_BF16", "1", 1);
    nac_backend_t *be = backend(NAC_PRECISION_BF16);
    assert_int_equal(be->precision, NAC_PRECISION_FP32);
    nac_backend_free(be);
    char *argv[] = {NAC_NAC_EXE, "bench", "--stage", "is", "--precision", "bf16", "--batch", "2",
                    "--width", "0.0625", "--latent", "4", "--dec-width", "4", "--k", "2",
                    "--chunk", "1", "--steps", "1", "--warmup", "0", "--threads", "1",
                    "--peak-seconds", "0", NULL};
    int rc = tu_run_exe(dir, argv, err, sizeof err);
    unsetenv("NAC_CPU_NO_BF16");
    if (rc != 0) fail_msg("nac bench exited %d: %s", rc, err);
    const char *msg = "precision bf16 asked for, but this CPU has neither AVX512_BF16 nor AMX";
    if (!strstr(err, msg)) fail_msg("stderr lacks the fallback line: %s", err);
    assert_null(strchr(strchr(err, '\n') + 1, '\n')); /* exactly one line */
    tu_rm_tree(dir);
}

int main(void) {
    const struct CMUnitTest hw[] = {
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_conv_shared_buffers),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_pretrain_close),
    };
    const struct CMUnitTest any[] = {cmocka_unit_test(test_fallback)};
    int failed = cmocka_run_group_tests(any, NULL, NULL);
    nac_backend_t *be = backend(NAC_PRECISION_BF16);
    bool have = be->precision == NAC_PRECISION_BF16;
    nac_backend_free(be);
    if (!have) {
        printf("this CPU has no bf16 instructions: the bf16 op tests are skipped\n");
        return failed;
    }
    return failed + cmocka_run_group_tests(hw, NULL, NULL);
}
