/* The layer ops of the backend under test ($NAC_TEST_BACKEND; on the CPU backend its oneDNN
 * ops, backend/cpu/dnn.c), in the spirit of ggml's test-backend-ops: every forward against a
 * naive double-precision reference, every backward against central finite differences
 * of that reference, batch-norm running statistics against PyTorch's formulas, blocked
 * layouts (round trips, zero padding, copy_rows, reshape; layouts chosen with
 * nac_tensor_relayout and seen through nac_tensor_get_info), primitive reuse and errors. */
#include "tests/testutil.h"

/* Tolerances. The backend computes in float32, the references in double. A float32 sum
 * of K products of O(1) values errs by about K * 6e-8 * sum|terms| (K <= ~300 here), so
 * results are compared with rtol 1e-3 and an absolute floor of 1e-4 times the largest
 * reference magnitude (cancellation can make single outputs much smaller than the terms
 * that formed them). Finite differences of the double references are exact up to
 * ~1e-9 relative (linear ops; h^2 terms for the smooth ones), far below that. */
#define RTOL 1e-3
#define AFLOOR 1e-4

/* ---- helpers ---- */
static float *dl(const nac_tensor_t *t) {
    float *h = malloc((size_t)nac_tensor_numel(t) * sizeof *h);
    assert_non_null(h);
    TU_OK(nac_tensor_to_host(t, h));
    return h;
}

static double *dbl(const float *f, int64_t n) {
    double *d = malloc((size_t)n * sizeof *d);
    assert_non_null(d);
    for (int64_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

static float *randn(int64_t n, uint64_t seed, float scale) {
    float *f = malloc((size_t)n * sizeof *f);
    assert_non_null(f);
    tu_randn(f, n, seed, scale);
    return f;
}

static void check(const float *got, const double *want, int64_t n, const char *what) {
    double m = 1.0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(want[i]));
    tu_close_d(got, want, n, RTOL, AFLOOR * m, what);
}

static void check_t(const nac_tensor_t *t, const double *want, const char *what) {
    float *g = dl(t);
    check(g, want, nac_tensor_numel(t), what);
    free(g);
}

/* Give a 4-D tensor the backend's channel-blocked layout (contents kept), as a convolution
 * would (oneDNN's nChw16c on the CPU backend). */
static void make_blocked(nac_backend_t *be, nac_tensor_t *t) {
    if (!tu_has_layouts(be)) return; /* one layout only: the case runs plain */
    TU_OK(nac_tensor_relayout(t, NAC_LAYOUT_CHANNEL_BLOCKED));
    assert_false(tu_info(t).plain);
}

static void make_nhwc(nac_backend_t *be, nac_tensor_t *t) {
    if (!tu_has_layouts(be)) return;
    TU_OK(nac_tensor_relayout(t, NAC_LAYOUT_CHANNELS_LAST));
}

static nac_tensor_t *upload(nac_backend_t *be, int nd, const int64_t *dim, const float *data,
                            bool blocked) {
    nac_tensor_t *t = tu_tensor(be, nd, dim, data);
    if (blocked) make_blocked(be, t);
    return t;
}

/* The padding of a blocked layout must stay zero (optimisers and norms read the whole
 * buffer): the sum of |physical elements| equals the sum of |logical elements|. */
static void assert_pad_zero(const nac_tensor_t *t, const char *what) {
    float *h = dl(t);
    double sl = 0, sp = tu_info(t).abs_sum;
    for (int64_t i = 0; i < nac_tensor_numel(t); i++) sl += fabs(h[i]);
    free(h);
    if (!(fabs(sp - sl) <= 1e-9 * sl))
        fail_msg("%s: padding of the blocked layout is not zero (|phys| %g, |logical| %g)", what,
                 sp, sl);
}

static size_t nentries(nac_backend_t *be) { return tu_cached_ops(be); }

/* Central differences of a scalar loss with respect to v (perturbed in place). */
typedef double (*loss_fn)(void *ctx);
static double *fd(loss_fn f, void *ctx, double *v, int64_t n, double h) {
    double *g = malloc((size_t)n * sizeof *g);
    assert_non_null(g);
    for (int64_t i = 0; i < n; i++) {
        double s = v[i];
        v[i] = s + h;
        double lp = f(ctx);
        v[i] = s - h;
        double lm = f(ctx);
        v[i] = s;
        g[i] = (lp - lm) / (2 * h);
    }
    return g;
}

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---- convolution ---- */
typedef struct conv_case {
    int n, c, h, w, o, k, s, p;
    bool bias, blocked;
} conv_case;

typedef struct conv_ref {
    conv_case cc;
    int oh, ow;
    double *x, *w, *b, *r, *y;
} conv_ref;

static void ref_conv(const conv_ref *q, double *y) {
    const conv_case *c = &q->cc;
    for (int n = 0; n < c->n; n++)
        for (int o = 0; o < c->o; o++)
            for (int i = 0; i < q->oh; i++)
                for (int j = 0; j < q->ow; j++) {
                    double s = c->bias ? q->b[o] : 0.0;
                    for (int ci = 0; ci < c->c; ci++)
                        for (int u = 0; u < c->k; u++)
                            for (int v = 0; v < c->k; v++) {
                                int hi = i * c->s - c->p + u, wi = j * c->s - c->p + v;
                                if (hi < 0 || hi >= c->h || wi < 0 || wi >= c->w) continue;
                                s += q->x[((n * c->c + ci) * c->h + hi) * c->w + wi] *
                                     q->w[((o * c->c + ci) * c->k + u) * c->k + v];
                            }
                    y[((n * c->o + o) * q->oh + i) * q->ow + j] = s;
                }
}

static double conv_loss(void *ctx) {
    conv_ref *q = ctx;
    ref_conv(q, q->y);
    return dot(q->y, q->r, (int64_t)q->cc.n * q->cc.o * q->oh * q->ow);
}

static void run_conv_case(nac_backend_t *be, const conv_case *c, uint64_t seed) {
    conv_ref q = {.cc = *c};
    q.oh = (int)nac_conv_out_size(c->h, c->k, c->s, c->p);
    q.ow = (int)nac_conv_out_size(c->w, c->k, c->s, c->p);
    int64_t xd[4] = {c->n, c->c, c->h, c->w}, wd[4] = {c->o, c->c, c->k, c->k}, bd = c->o;
    int64_t yd[4] = {c->n, c->o, q.oh, q.ow};
    int64_t nx = xd[0] * xd[1] * xd[2] * xd[3], nw = wd[0] * wd[1] * wd[2] * wd[3];
    int64_t ny = yd[0] * yd[1] * yd[2] * yd[3];
    float *fx = randn(nx, seed, 1.0f), *fw = randn(nw, seed + 1, 0.5f), *fb = randn(bd, seed + 2, 1.0f);
    float *fr = randn(ny, seed + 3, 1.0f);
    q.x = dbl(fx, nx);
    q.w = dbl(fw, nw);
    q.b = dbl(fb, bd);
    q.r = dbl(fr, ny);
    q.y = malloc((size_t)ny * sizeof(double));
    double *want = malloc((size_t)ny * sizeof(double));
    ref_conv(&q, want);

    nac_tensor_t *x = upload(be, 4, xd, fx, c->blocked), *w = upload(be, 4, wd, fw, false);
    nac_tensor_t *b = c->bias ? upload(be, 1, &bd, fb, false) : NULL;
    nac_tensor_t *y = nac_tensor_new(be, 4, yd), *dy = upload(be, 4, yd, fr, c->blocked);
    nac_tensor_t *dx = nac_tensor_new(be, 4, xd), *dw = nac_tensor_new(be, 4, wd);
    nac_tensor_t *db = c->bias ? nac_tensor_new1(be, c->o) : NULL;
    if (c->blocked) TU_OK(nac_tensor_alloc(dw)); /* a plain OIHW gradient moves to w's layout */
    nac_conv_params p = {.stride = c->s, .pad = c->p};
    size_t before = 0;
    for (int round = 0; round < 2; round++) { /* the second round reuses every primitive */
        TU_OK(nac_conv2d_forward(x, w, b, y, p));
        TU_OK(nac_conv2d_backward_data(dy, w, dx, p));
        TU_OK(nac_conv2d_backward_weights(x, dy, dw, db, p));
        if (round == 0) before = nentries(be);
        else assert_int_equal(nentries(be), before);
    }
    check_t(y, want, "conv forward");
    assert_pad_zero(y, "conv y");
    /* weights live in the convolution's layout now, their gradient in the same one, and
       to_host still hands back OIHW */
    if (c->c >= 16) /* (first-layer convolutions may have no gradient kernel for the
                       forward's weight layout: oneDNN picks another, the optimiser reorders) */
        assert_int_equal(tu_info(dw).layout_id, tu_info(w).layout_id);
    float *hw = dl(w);
    tu_close_f(hw, fw, nw, 0, 0, "weights read back");
    free(hw);

    double *gx = fd(conv_loss, &q, q.x, nx, 1e-3), *gw = fd(conv_loss, &q, q.w, nw, 1e-3);
    check_t(dx, gx, "conv dx");
    check_t(dw, gw, "conv dw");
    assert_pad_zero(dx, "conv dx");
    assert_pad_zero(dw, "conv dw");
    if (c->bias) {
        double *gb = fd(conv_loss, &q, q.b, bd, 1e-3);
        check_t(db, gb, "conv db");
        free(gb);
    }
    free(gx);
    free(gw);
    nac_tensor_t *ts[] = {x, w, b, y, dy, dx, dw, db};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) nac_tensor_free(ts[i]);
    free(fx), free(fw), free(fb), free(fr);
    free(q.x), free(q.w), free(q.b), free(q.r), free(q.y), free(want);
}

static void test_conv(void **state) {
    (void)state;
    static const conv_case cases[] = {
        {2, 3, 5, 5, 4, 3, 1, 1, true, false},   /* RGB-like input, padding 1 */
        {2, 5, 7, 6, 17, 3, 2, 1, false, false}, /* odd sizes, stride 2 */
        {1, 16, 6, 6, 32, 1, 1, 0, true, true},  /* 1x1, blocked input */
        {3, 20, 9, 7, 7, 1, 2, 0, true, true},   /* 1x1 stride 2 (a downsample) */
        {2, 17, 6, 5, 18, 3, 2, 0, false, true}, /* C, O not multiples of 16 */
        {2, 8, 4, 4, 16, 3, 1, 0, true, false},  /* no padding */
    };
    nac_backend_t *be = tu_backend();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_conv_case(be, &cases[i], 100 + i * 10);
    nac_backend_free(be);
}

/* The convolution algorithms of the CPU backend (NAC_CPU_CONV, read when a backend is
 * created): a 3x3 stride-1 convolution of 32 images at 16x16 with 64 channels in and out
 * (Winograd passes run in two slices of 16 images, backend/cpu/dnn.c conv_images),
 * all three passes, under "direct", "winograd" and the default, against double references
 * of y, dx and dw: direct within 1e-5 of the largest value (measured 3e-7..1.4e-6),
 * Winograd, whose arithmetic differs, within 2e-5 (measured 1.5e-6..1.7e-6), and its forward and backward data must differ from direct's
 * (so it ran; at this shape oneDNN keeps direct for the weight gradient, its choice); the
 * default takes Winograd's forward and backward data and direct's weight gradient, bit for
 * bit. */
static double ws_rel(const float *got, const double *want, int64_t n) {
    double m = 0, e = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs(got[i] - want[i]));
    return e / m;
}

static void test_conv_winograd(void **state) {
    (void)state;
    if (strcmp(tu_backend_name(), "cpu")) {
        print_message("skipped: the CPU backend's algorithm policy\n");
        return;
    }
    enum { N = 32, C = 64, H = 16, O = 64 }; /* two slices of 16 images */
    const conv_case cc = {N, C, H, H, O, 3, 1, 1, false, true};
    conv_ref q = {.cc = cc, .oh = H, .ow = H};
    int64_t xd[4] = {N, C, H, H}, wd[4] = {O, C, 3, 3}, yd[4] = {N, O, H, H};
    int64_t nx = N * C * H * H, nw = O * C * 9, ny = N * O * H * H;
    float *fx = randn(nx, 7, 1.0f), *fw = randn(nw, 8, 0.1f), *fr = randn(ny, 9, 1.0f);
    q.x = dbl(fx, nx), q.w = dbl(fw, nw), q.r = dbl(fr, ny);
    double *y = calloc((size_t)ny, sizeof *y), *gx = calloc((size_t)nx, sizeof *gx),
           *gw = calloc((size_t)nw, sizeof *gw);
    assert_non_null(y && gx && gw);
    ref_conv(&q, y);
    /* dx[n,c,hi,wi] += w[o,c,u,v] dy[n,o,i,j]; dw[o,c,u,v] += x[n,c,hi,wi] dy[n,o,i,j] */
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < H; j++) {
                    double r = q.r[((n * O + o) * H + i) * H + j];
                    for (int c = 0; c < C; c++)
                        for (int u = 0; u < 3; u++)
                            for (int v = 0; v < 3; v++) {
                                int hi = i - 1 + u, wi = j - 1 + v;
                                if (hi < 0 || hi >= H || wi < 0 || wi >= H) continue;
                                int64_t xi = ((n * C + c) * H + hi) * H + wi;
                                int64_t wi_ = ((o * C + c) * 3 + u) * 3 + v;
                                gx[xi] += q.w[wi_] * r;
                                gw[wi_] += q.x[xi] * r;
                            }
                }
    const char *policy[3] = {"direct", "winograd", "default"};
    float *out[3][3];
    for (int k = 0; k < 3; k++) {
        assert_int_equal(setenv("NAC_CPU_CONV", policy[k], 1), 0);
        nac_backend_t *be = NULL;
        nac_backend_options o = {.threads = 2};
        TU_OK(nac_backend_create("cpu", &o, &be));
        nac_tensor_t *x = upload(be, 4, xd, fx, true), *w = upload(be, 4, wd, fw, false);
        nac_tensor_t *dy = upload(be, 4, yd, fr, true), *ty = nac_tensor_new(be, 4, yd);
        nac_tensor_t *dx = nac_tensor_new(be, 4, xd), *dw = nac_tensor_new(be, 4, wd);
        nac_conv_params p = {.stride = 1, .pad = 1};
        TU_OK(nac_conv2d_forward(x, w, NULL, ty, p));
        TU_OK(nac_conv2d_backward_data(dy, w, dx, p));
        TU_OK(nac_conv2d_backward_weights(x, dy, dw, NULL, p));
        out[k][0] = dl(ty), out[k][1] = dl(dx), out[k][2] = dl(dw);
        nac_tensor_t *ts[] = {x, w, dy, ty, dx, dw};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) nac_tensor_free(ts[i]);
        nac_backend_free(be);
    }
    assert_int_equal(unsetenv("NAC_CPU_CONV"), 0);
    const double *want[3] = {y, gx, gw};
    const int64_t n[3] = {ny, nx, nw};
    const char *pass[3] = {"forward", "backward data", "backward weights"};
    for (int i = 0; i < 3; i++) {
        double ed = ws_rel(out[0][i], want[i], n[i]), ew = ws_rel(out[1][i], want[i], n[i]);
        print_message("%s: direct %.2g, winograd %.2g of the largest value\n", pass[i], ed, ew);
        if (ed > 1e-5) fail_msg("direct %s: error %.3g", pass[i], ed);
        if (ew > 2e-5) fail_msg("winograd %s: error %.3g", pass[i], ew);
        if (i < 2 && !memcmp(out[0][i], out[1][i], (size_t)n[i] * sizeof(float)))
            fail_msg("winograd %s equals direct bit for bit: Winograd did not run", pass[i]);
        int same = i < 2 ? 1 : 0; /* the default: Winograd's forward and backward data */
        if (memcmp(out[2][i], out[same][i], (size_t)n[i] * sizeof(float)))
            fail_msg("default %s is not %s's", pass[i], policy[same]);
    }
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 3; i++) free(out[k][i]);
    free(fx), free(fw), free(fr), free(q.x), free(q.w), free(q.r), free(y), free(gx), free(gw);
}

/* ---- batch norm ---- */
typedef struct bn_case {
    int ndim, n, c, h, w, groups;
    bool relu, blocked;
} bn_case;

typedef struct bn_ref {
    bn_case bc;
    double eps;
    double *x, *g, *b, *r, *y;
} bn_ref;

static int64_t bn_hw(const bn_case *c) { return c->ndim == 4 ? (int64_t)c->h * c->w : 1; }

/* y = gamma (x - mean_g) / sqrt(var_g + eps) + beta per group g, biased var; mean/var
 * (groups, C) when asked. */
static void ref_bn(const bn_ref *q, double *y, double *mean, double *var) {
    const bn_case *c = &q->bc;
    int64_t hw = bn_hw(c), per = c->n / c->groups;
    for (int g = 0; g < c->groups; g++)
        for (int ch = 0; ch < c->c; ch++) {
            double s = 0, ss = 0, cnt = (double)(per * hw);
            for (int64_t n = g * per; n < (g + 1) * per; n++)
                for (int64_t i = 0; i < hw; i++) s += q->x[(n * c->c + ch) * hw + i];
            double m = s / cnt;
            for (int64_t n = g * per; n < (g + 1) * per; n++)
                for (int64_t i = 0; i < hw; i++) {
                    double d = q->x[(n * c->c + ch) * hw + i] - m;
                    ss += d * d;
                }
            double v = ss / cnt, inv = 1.0 / sqrt(v + q->eps);
            if (mean) mean[g * c->c + ch] = m;
            if (var) var[g * c->c + ch] = v;
            for (int64_t n = g * per; n < (g + 1) * per; n++)
                for (int64_t i = 0; i < hw; i++) {
                    int64_t k = (n * c->c + ch) * hw + i;
                    double o = q->g[ch] * (q->x[k] - m) * inv + q->b[ch];
                    y[k] = c->relu && o < 0 ? 0 : o;
                }
        }
}

static double bn_loss(void *ctx) {
    bn_ref *q = ctx;
    ref_bn(q, q->y, NULL, NULL);
    return dot(q->y, q->r, (int64_t)q->bc.n * q->bc.c * bn_hw(&q->bc));
}

/* PyTorch's update, one group after the other (as `groups` train-mode forwards). */
static void ref_running(const bn_case *c, const double *mean, const double *var, double m,
                        double *rm, double *rv) {
    double cnt = (double)(c->n / c->groups * bn_hw(c));
    for (int g = 0; g < c->groups; g++)
        for (int ch = 0; ch < c->c; ch++) {
            rm[ch] = (1 - m) * rm[ch] + m * mean[g * c->c + ch];
            rv[ch] = (1 - m) * rv[ch] + m * var[g * c->c + ch] * cnt / (cnt - 1);
        }
}

static void run_bn_case(nac_backend_t *be, const bn_case *c, uint64_t seed) {
    int64_t dim[4] = {c->n, c->c, c->h, c->w}, C = c->c, sd[2] = {c->groups, c->c};
    int64_t nx = c->n * c->c * bn_hw(c), ns = (int64_t)c->groups * c->c;
    nac_bn_params p = {.eps = 1e-5f, .momentum = 0.1f, .groups = c->groups, .relu = c->relu};
    float *fx1 = randn(nx, seed, 2.0f), *fx2 = randn(nx, seed + 1, 1.5f), *fr = randn(nx, seed + 2, 1.0f);
    float *fg = randn(C, seed + 3, 0.3f), *fb = randn(C, seed + 4, 0.5f);
    float *frm = randn(C, seed + 5, 0.1f), *frv = malloc((size_t)C * sizeof(float));
    for (int64_t i = 0; i < C; i++) fg[i] += 1.0f;
    for (int64_t i = 0; i < nx; i++) fx2[i] += 0.7f; /* a non-zero mean */
    tu_randu(frv, C, seed + 6, 0.5f, 1.5f);

    nac_tensor_t *x = upload(be, c->ndim, dim, fx1, c->blocked);
    nac_tensor_t *gamma = upload(be, 1, &C, fg, false), *beta = upload(be, 1, &C, fb, false);
    nac_tensor_t *rm = upload(be, 1, &C, frm, false), *rv = upload(be, 1, &C, frv, false);
    nac_tensor_t *y = nac_tensor_new(be, c->ndim, dim), *sm = nac_tensor_new(be, 2, sd),
                 *sv = nac_tensor_new(be, 2, sd);
    bn_ref q = {.bc = *c, .eps = 1e-5};
    q.g = dbl(fg, C);
    q.b = dbl(fb, C);
    q.r = dbl(fr, nx);
    q.y = malloc((size_t)nx * sizeof(double));
    double *want = malloc((size_t)nx * sizeof(double)), *mean = malloc((size_t)ns * sizeof(double)),
           *var = malloc((size_t)ns * sizeof(double));
    double *rmw = dbl(frm, C), *rvw = dbl(frv, C);

    /* forward 1 and 2: outputs, saved batch statistics, running statistics */
    for (int it = 0; it < 2; it++) {
        const float *fx = it ? fx2 : fx1;
        if (it) TU_OK(nac_tensor_from_host(x, fx));
        TU_OK(nac_bn_forward_train(x, gamma, beta, y, rm, rv, sm, sv, p));
        free(q.x);
        q.x = dbl(fx, nx);
        ref_bn(&q, want, mean, var);
        ref_running(c, mean, var, 0.1, rmw, rvw);
        check_t(y, want, "bn forward y");
        check_t(sm, mean, "bn save_mean");
        check_t(sv, var, "bn save_var");
        check_t(rm, rmw, it ? "running_mean after 2 forwards" : "running_mean after 1 forward");
        check_t(rv, rvw, it ? "running_var after 2 forwards" : "running_var after 1 forward");
        if (c->blocked) assert_pad_zero(y, "bn y");
    }

    /* backward against finite differences of the reference at x2 */
    nac_tensor_t *dy = upload(be, c->ndim, dim, fr, c->blocked), *dx = nac_tensor_new(be, c->ndim, dim);
    nac_tensor_t *dg = nac_tensor_new1(be, C), *dbt = nac_tensor_new1(be, C);
    TU_OK(nac_bn_backward(x, y, dy, gamma, sm, sv, dx, dg, dbt, p));
    size_t before = nentries(be);
    TU_OK(nac_bn_forward_train(x, gamma, beta, y, rm, rv, sm, sv, p)); /* same batch again */
    TU_OK(nac_bn_backward(x, y, dy, gamma, sm, sv, dx, dg, dbt, p));
    assert_int_equal(nentries(be), before);
    double *gx = fd(bn_loss, &q, q.x, nx, 1e-5), *gg = fd(bn_loss, &q, q.g, C, 1e-5),
           *gb = fd(bn_loss, &q, q.b, C, 1e-5);
    check_t(dx, gx, c->relu ? "bn+relu dx" : "bn dx");
    check_t(dg, gg, c->relu ? "bn+relu dgamma" : "bn dgamma");
    check_t(dbt, gb, c->relu ? "bn+relu dbeta" : "bn dbeta");
    if (c->blocked) assert_pad_zero(dx, "bn dx");

    /* inference with the running statistics the backend holds */
    float *hrm = dl(rm), *hrv = dl(rv);
    nac_tensor_t *yi = nac_tensor_new(be, c->ndim, dim);
    TU_OK(nac_bn_forward_infer(x, gamma, beta, rm, rv, yi, p));
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t i = 0; i < bn_hw(c); i++) {
                int64_t k = (n * C + ch) * bn_hw(c) + i;
                double o = q.g[ch] * (q.x[k] - hrm[ch]) / sqrt((double)hrv[ch] + 1e-5) + q.b[ch];
                want[k] = c->relu && o < 0 ? 0 : o;
            }
    check_t(yi, want, "bn inference");
    /* a fused-ReLU backward needs the mask of a training forward in y */
    if (c->relu) {
        assert_int_equal(nac_bn_backward(x, yi, dy, gamma, sm, sv, dx, dg, dbt, p),
                         NAC_ERR_INVALID);
        assert_non_null(strstr(nac_last_error(), "nac_bn_backward"));
    }

    nac_tensor_t *ts[] = {x, gamma, beta, rm, rv, y, sm, sv, dy, dx, dg, dbt, yi};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) nac_tensor_free(ts[i]);
    free(fx1), free(fx2), free(fr), free(fg), free(fb), free(frm), free(frv), free(hrm), free(hrv);
    free(q.x), free(q.g), free(q.b), free(q.r), free(q.y), free(want), free(mean), free(var);
    free(rmw), free(rvw), free(gx), free(gg), free(gb);
}

static void test_batchnorm(void **state) {
    (void)state;
    static const bn_case cases[] = {
        {4, 4, 3, 3, 5, 1, false, false},  /* plain, one group */
        {4, 4, 3, 3, 5, 2, false, true},   /* two views, blocked, C=3 padded to 16 */
        {4, 6, 20, 2, 3, 3, true, true},   /* three groups, fused ReLU */
        {4, 2, 16, 4, 4, 1, true, false},  /* fused ReLU, one group */
        {2, 8, 5, 1, 1, 2, true, false},   /* (N,C) features, two groups, ReLU */
        {2, 6, 7, 1, 1, 1, false, false},  /* (N,C) features */
    };
    nac_backend_t *be = tu_backend();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_bn_case(be, &cases[i], 200 + i * 10);
    nac_backend_free(be);
}

static void enc4(nac_tensor_t *t, nac_backend_t *be, int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t d[4] = {n, c, h, w};
    nac_tensor_init(t, be, 4, d);
}

/* A training forward's output recomputed from its saved statistics equals the original;
 * a view (nac_tensor_share) writes its owner's storage yet keeps its own ReLU mask, so a
 * backward through the view matches one through a tensor with storage of its own, after
 * the owner was overwritten. */
static void test_bn_saved_and_share(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    for (int relu = 0; relu < 2; relu++)
        for (int groups = 1; groups <= 2; groups++) {
            int64_t n = 4, c = 5, h = 6, w = 3, numel = n * c * h * w;
            nac_tensor_t x, y, yv, owner, y2, dy, dx, dxv, st[4], gb[2], dg[2];
            enc4(&x, be, n, c, h, w);
            float *hx = randn(numel, 901 + (uint64_t)(relu * 2 + groups), 1.5f);
            TU_OK(nac_tensor_from_host(&x, hx));
            make_blocked(be, &x);
            for (int i = 0; i < 2; i++) {
                nac_tensor_init(&gb[i], be, 1, &c);
                nac_tensor_init(&dg[i], be, 1, &c);
            }
            float gam[5] = {1.2f, -0.7f, 0.4f, 2.0f, 1.0f}, bet[5] = {0.1f, -0.3f, 0.5f, 0.0f, 0.2f};
            TU_OK(nac_tensor_from_host(&gb[0], gam));
            TU_OK(nac_tensor_from_host(&gb[1], bet));
            int64_t sd[2] = {groups, c};
            for (int i = 0; i < 4; i++) nac_tensor_init(&st[i], be, i < 2 ? 1 : 2, i < 2 ? &c : sd);
            TU_OK(nac_tensor_fill(&st[0], 0.0f));
            TU_OK(nac_tensor_fill(&st[1], 1.0f));
            nac_bn_params p = {.eps = 1e-5f, .momentum = 0.1f, .groups = groups, .relu = relu};
            enc4(&y, be, n, c, h, w);
            TU_OK(nac_bn_forward_train(&x, &gb[0], &gb[1], &y, &st[0], &st[1], &st[2], &st[3], p));
            /* the same forward into a view of a buffer laid out like x */
            enc4(&owner, be, n, c, h, w);
            enc4(&yv, be, n, c, h, w);
            TU_OK(nac_tensor_alloc_like(&owner, &x));
            assert_int_equal(tu_info(&owner).layout_id, tu_info(&x).layout_id);
            TU_OK(nac_tensor_share(&yv, &owner));
            TU_OK(nac_tensor_share(&yv, &owner)); /* rebinding to the same owner: no-op */
            TU_OK(nac_bn_forward_train(&x, &gb[0], &gb[1], &yv, &st[0], &st[1], &st[2], &st[3],
                                       p));
            float *a = dl(&y), *b = dl(&owner);
            for (int64_t i = 0; i < numel; i++) assert_float_equal(a[i], b[i], 0.0f);
            /* recomputed from the saved statistics */
            enc4(&y2, be, n, c, h, w);
            TU_OK(nac_bn_forward_saved(&x, &gb[0], &gb[1], &st[2], &st[3], &y2, p));
            float *r = dl(&y2);
            for (int64_t i = 0; i < numel; i++)
                assert_true(fabsf(r[i] - a[i]) <= 1e-5f * (1.0f + fabsf(a[i])));
            /* overwrite the owner; the view's mask must survive */
            TU_OK(nac_tensor_fill(&owner, -3.0f));
            float *hdy = randn(numel, 77, 1.0f);
            enc4(&dy, be, n, c, h, w);
            TU_OK(nac_tensor_from_host(&dy, hdy));
            enc4(&dx, be, n, c, h, w);
            enc4(&dxv, be, n, c, h, w);
            TU_OK(nac_bn_backward(&x, &y, &dy, &gb[0], &st[2], &st[3], &dx, &dg[0], &dg[1], p));
            float *g1 = dl(&dx), *gg1 = dl(&dg[0]);
            TU_OK(nac_bn_backward(&x, &yv, &dy, &gb[0], &st[2], &st[3], &dxv, &dg[0], &dg[1], p));
            float *g2 = dl(&dxv), *gg2 = dl(&dg[0]);
            for (int64_t i = 0; i < numel; i++) assert_float_equal(g1[i], g2[i], 0.0f);
            for (int64_t i = 0; i < c; i++) assert_float_equal(gg1[i], gg2[i], 0.0f);
            /* the view's release leaves the owner's storage alone */
            nac_tensor_release(&yv);
            float *o = dl(&owner);
            assert_float_equal(o[0], -3.0f, 0.0f);
            /* errors: a view of an unwritten tensor, of another shape, of itself */
            nac_tensor_t fresh, other;
            enc4(&fresh, be, n, c, h, w);
            enc4(&other, be, n, c, h, w + 1);
            assert_int_equal(nac_tensor_share(&yv, &fresh), NAC_ERR_INVALID);
            assert_int_equal(nac_tensor_share(&other, &owner), NAC_ERR_INVALID);
            assert_int_equal(nac_tensor_share(&owner, &owner), NAC_ERR_INVALID);
            /* a tensor with storage of its own (which others may view) cannot become a view */
            assert_int_equal(nac_tensor_share(&y, &owner), NAC_ERR_INVALID);
            assert_int_equal(nac_bn_forward_saved(&x, &gb[0], &gb[1], &st[2], &st[3], &x, p),
                             NAC_ERR_INVALID);
            free(hx), free(a), free(b), free(r), free(hdy), free(g1), free(g2), free(gg1),
                free(gg2), free(o);
            nac_tensor_t *all[] = {&x, &y, &owner, &y2, &dy, &dx, &dxv, &st[0], &st[1], &st[2],
                                   &st[3], &gb[0], &gb[1], &dg[0], &dg[1]};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nac_tensor_release(all[i]);
        }
    nac_backend_free(be);
}

/* The backend's memory count: storage in 64-byte multiples, views counted once, the peak
 * kept until reset. */
static void test_memory_stats(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    nac_backend_memory m0 = nac_backend_memory_stats(be);
    nac_tensor_t a, b, v;
    enc4(&a, be, 2, 3, 5, 7); /* 210 floats = 840 bytes -> 896 */
    enc4(&b, be, 2, 3, 5, 7);
    enc4(&v, be, 2, 3, 5, 7);
    TU_OK(nac_tensor_fill(&a, 1.0f));
    nac_backend_memory m1 = nac_backend_memory_stats(be);
    assert_int_equal(m1.live - m0.live, 896);
    TU_OK(nac_tensor_share(&v, &a));
    assert_int_equal(nac_backend_memory_stats(be).live, m1.live);
    TU_OK(nac_tensor_alloc_like(&b, &a));
    assert_int_equal(nac_backend_memory_stats(be).live - m0.live, 2 * 896);
    nac_tensor_release(&v);
    nac_tensor_release(&b);
    nac_backend_memory m2 = nac_backend_memory_stats(be);
    assert_int_equal(m2.live, m1.live);
    assert_int_equal(m2.peak - m0.live, 2 * 896);
    nac_backend_memory_reset_peak(be);
    assert_int_equal(nac_backend_memory_stats(be).peak, m2.live);
    nac_tensor_release(&a);
    assert_int_equal(nac_backend_memory_stats(be).live, m0.live);
    nac_backend_free(be);
}

/* The FLOP count: 2 x multiply-adds of each convolution pass and matrix product. */
static void test_flops_count(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    int64_t xd[4] = {2, 3, 8, 8}, wd[4] = {5, 3, 3, 3}, yd[4] = {2, 5, 4, 4};
    nac_tensor_t *x = nac_tensor_new(be, 4, xd), *w = nac_tensor_new(be, 4, wd);
    nac_tensor_t *y = nac_tensor_new(be, 4, yd), *dx = nac_tensor_new(be, 4, xd);
    nac_tensor_t *dw = nac_tensor_new(be, 4, wd);
    TU_OK(nac_tensor_rand(x, NAC_RAND_NORMAL, 1.0f, 1));
    TU_OK(nac_tensor_rand(w, NAC_RAND_NORMAL, 1.0f, 2));
    nac_conv_params p = {2, 1};
    double macs = 2.0 * 5 * 4 * 4 * 3 * 3 * 3, f0 = nac_backend_flops(be);
    TU_OK(nac_conv2d_forward(x, w, NULL, y, p));
    assert_true(nac_backend_flops(be) - f0 == 2.0 * macs);
    TU_OK(nac_conv2d_backward_data(y, w, dx, p));
    TU_OK(nac_conv2d_backward_weights(x, y, dw, NULL, p));
    assert_true(nac_backend_flops(be) - f0 == 6.0 * macs);
    nac_tensor_t *a = nac_tensor_new2(be, 7, 4), *b = nac_tensor_new2(be, 4, 3);
    nac_tensor_t *c = nac_tensor_new2(be, 7, 3);
    TU_OK(nac_tensor_rand(a, NAC_RAND_NORMAL, 1.0f, 3));
    TU_OK(nac_tensor_rand(b, NAC_RAND_NORMAL, 1.0f, 4));
    f0 = nac_backend_flops(be);
    TU_OK(nac_gemm(false, false, 1.0f, a, b, 0.0f, c));
    assert_true(nac_backend_flops(be) - f0 == 2.0 * 7 * 3 * 4);
    nac_tensor_t *all[] = {x, w, y, dx, dw, a, b, c};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nac_tensor_free(all[i]);
    nac_backend_free(be);
}

/* ---- pooling ---- */
typedef struct pool_case {
    nac_pool kind;
    int n, c, h, w, k, s, p;
    bool blocked;
} pool_case;

typedef struct pool_ref {
    pool_case pc;
    int oh, ow;
    double *x, *r, *y;
} pool_ref;

static void ref_pool(const pool_ref *q, double *y) {
    const pool_case *c = &q->pc;
    for (int nc = 0; nc < c->n * c->c; nc++)
        for (int i = 0; i < q->oh; i++)
            for (int j = 0; j < q->ow; j++) {
                double acc = c->kind == NAC_POOL_MAX ? -INFINITY : 0.0;
                int cnt = 0;
                for (int u = 0; u < c->k; u++)
                    for (int v = 0; v < c->k; v++) {
                        int hi = i * c->s - c->p + u, wi = j * c->s - c->p + v;
                        if (hi < 0 || hi >= c->h || wi < 0 || wi >= c->w) continue;
                        double xv = q->x[(nc * c->h + hi) * c->w + wi];
                        acc = c->kind == NAC_POOL_MAX ? fmax(acc, xv) : acc + xv;
                        cnt++;
                    }
                y[(nc * q->oh + i) * q->ow + j] = c->kind == NAC_POOL_MAX ? acc : acc / cnt;
            }
}

static double pool_loss(void *ctx) {
    pool_ref *q = ctx;
    ref_pool(q, q->y);
    return dot(q->y, q->r, (int64_t)q->pc.n * q->pc.c * q->oh * q->ow);
}

static void test_pool(void **state) {
    (void)state;
    static const pool_case cases[] = {
        {NAC_POOL_MAX, 2, 3, 7, 7, 3, 2, 1, true},   {NAC_POOL_AVG, 2, 3, 7, 7, 3, 2, 1, true},
        {NAC_POOL_MAX, 1, 17, 6, 5, 2, 2, 0, false}, {NAC_POOL_AVG, 2, 5, 5, 6, 3, 1, 1, false},
        {NAC_POOL_AVG, 2, 16, 4, 4, 2, 2, 0, true},  {NAC_POOL_MAX, 2, 20, 5, 5, 3, 1, 1, true},
    };
    nac_backend_t *be = tu_backend();
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const pool_case *c = &cases[ci];
        pool_ref q = {.pc = *c};
        q.oh = (int)nac_conv_out_size(c->h, c->k, c->s, c->p);
        q.ow = (int)nac_conv_out_size(c->w, c->k, c->s, c->p);
        int64_t xd[4] = {c->n, c->c, c->h, c->w}, yd[4] = {c->n, c->c, q.oh, q.ow};
        int64_t nx = xd[0] * xd[1] * xd[2] * xd[3], ny = yd[0] * yd[1] * yd[2] * yd[3];
        float *fx = randn(nx, 300 + ci, 1.0f), *fr = randn(ny, 350 + ci, 1.0f);
        q.x = dbl(fx, nx);
        q.r = dbl(fr, ny);
        q.y = malloc((size_t)ny * sizeof(double));
        double *want = malloc((size_t)ny * sizeof(double));
        ref_pool(&q, want);
        nac_pool_params p = {.kind = c->kind, .kernel = c->k, .stride = c->s, .pad = c->p};
        nac_tensor_t *x = upload(be, 4, xd, fx, c->blocked), *y = nac_tensor_new(be, 4, yd);
        nac_tensor_t *dy = upload(be, 4, yd, fr, false), *dx = nac_tensor_new(be, 4, xd);
        TU_OK(nac_pool_forward(x, y, p));
        TU_OK(nac_pool_backward(x, y, dy, dx, p));
        size_t before = nentries(be);
        TU_OK(nac_pool_forward(x, y, p));
        TU_OK(nac_pool_backward(x, y, dy, dx, p));
        assert_int_equal(nentries(be), before);
        check_t(y, want, c->kind == NAC_POOL_MAX ? "max pool forward" : "avg pool forward");
        /* max pooling is piecewise linear: a tiny step never moves the arg-max */
        double *gx = fd(pool_loss, &q, q.x, nx, 1e-7);
        check_t(dx, gx, c->kind == NAC_POOL_MAX ? "max pool dx" : "avg pool dx");
        if (c->blocked) {
            assert_pad_zero(y, "pool y");
            assert_pad_zero(dx, "pool dx");
            assert_int_equal(tu_info(dx).layout_id, tu_info(x).layout_id);
        }
        nac_tensor_free(x), nac_tensor_free(y), nac_tensor_free(dy), nac_tensor_free(dx);
        free(fx), free(fr), free(q.x), free(q.r), free(q.y), free(want), free(gx);
    }
    nac_backend_free(be);
}

/* ---- global average pooling and upsampling ---- */
typedef struct gu_ref {
    int n, c, h, w, f; /* x (n,c,h,w); upsampling factor f (0: global average pooling) */
    double *x, *r, *y;
} gu_ref;

static void ref_gu(const gu_ref *q, double *y) {
    int64_t hw = (int64_t)q->h * q->w;
    for (int64_t nc = 0; nc < (int64_t)q->n * q->c; nc++) {
        if (!q->f) {
            double s = 0;
            for (int64_t i = 0; i < hw; i++) s += q->x[nc * hw + i];
            y[nc] = s / (double)hw;
            continue;
        }
        int oh = q->h * q->f, ow = q->w * q->f;
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++)
                y[(nc * oh + i) * ow + j] = q->x[nc * hw + (i / q->f) * q->w + j / q->f];
    }
}

static int64_t gu_ny(const gu_ref *q) {
    return (int64_t)q->n * q->c * (q->f ? (int64_t)q->h * q->w * q->f * q->f : 1);
}

static double gu_loss(void *ctx) {
    gu_ref *q = ctx;
    ref_gu(q, q->y);
    return dot(q->y, q->r, gu_ny(q));
}

static void test_gap_upsample(void **state) {
    (void)state;
    static const int cases[][6] = {/* n, c, h, w, factor (0 = gap), blocked */
                                   {2, 3, 5, 4, 0, 1}, {3, 20, 3, 3, 0, 0}, {2, 16, 1, 1, 0, 1},
                                   {2, 3, 3, 4, 2, 1}, {1, 17, 2, 3, 3, 0}, {2, 32, 2, 2, 2, 1}};
    nac_backend_t *be = tu_backend();
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int *c = cases[ci];
        gu_ref q = {.n = c[0], .c = c[1], .h = c[2], .w = c[3], .f = c[4]};
        bool blocked = c[5], gap = !q.f;
        int64_t xd[4] = {q.n, q.c, q.h, q.w};
        int64_t yd[4] = {q.n, q.c, (int64_t)q.h * q.f, (int64_t)q.w * q.f};
        int64_t nx = xd[0] * xd[1] * xd[2] * xd[3], ny = gu_ny(&q);
        float *fx = randn(nx, 400 + ci, 1.0f), *fr = randn(ny, 450 + ci, 1.0f);
        q.x = dbl(fx, nx);
        q.r = dbl(fr, ny);
        q.y = malloc((size_t)ny * sizeof(double));
        double *want = malloc((size_t)ny * sizeof(double));
        ref_gu(&q, want);
        nac_tensor_t *x = upload(be, 4, xd, fx, blocked);
        nac_tensor_t *y = gap ? nac_tensor_new2(be, q.n, q.c) : nac_tensor_new(be, 4, yd);
        nac_tensor_t *dy = gap ? upload(be, 2, xd, fr, false) : upload(be, 4, yd, fr, false);
        nac_tensor_t *dx = nac_tensor_new(be, 4, xd);
        for (int round = 0; round < 2; round++) {
            size_t before = nentries(be);
            if (gap) {
                TU_OK(nac_gap_forward(x, y));
                TU_OK(nac_gap_backward(dy, dx));
            } else {
                TU_OK(nac_upsample_forward(x, y));
                TU_OK(nac_upsample_backward(dy, dx));
            }
            if (round) assert_int_equal(nentries(be), before);
        }
        check_t(y, want, gap ? "gap forward" : "upsample forward");
        assert_true(tu_info(y).plain || !gap); /* (N,C) stays plain */
        double *gx = fd(gu_loss, &q, q.x, nx, 1e-3);
        check_t(dx, gx, gap ? "gap backward" : "upsample backward");
        /* an unallocated gradient takes the layout the forward saw */
        if (gap) assert_int_equal(tu_info(dx).layout_id, tu_info(x).layout_id);
        if (blocked) {
            assert_pad_zero(dx, "gap/upsample dx");
            if (!gap) assert_pad_zero(y, "upsample y");
        }
        nac_tensor_free(x), nac_tensor_free(y), nac_tensor_free(dy), nac_tensor_free(dx);
        free(fx), free(fr), free(q.x), free(q.r), free(q.y), free(want), free(gx);
    }
    nac_backend_free(be);
}

/* ---- activations ---- */
static double ref_act(nac_act k, double x, double a, double b) {
    switch (k) {
    case NAC_ACT_RELU: return x > 0 ? x : 0;
    case NAC_ACT_TANH: return tanh(x);
    case NAC_ACT_SIGMOID: return 1 / (1 + exp(-x));
    case NAC_ACT_EXP: return exp(x);
    case NAC_ACT_LOG: return log(x);
    case NAC_ACT_SQUARE: return x * x;
    case NAC_ACT_SQRT: return sqrt(x);
    case NAC_ACT_ABS: return fabs(x);
    case NAC_ACT_SOFTPLUS: return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
    case NAC_ACT_LINEAR: return a * x + b;
    }
    return NAN;
}

static const char *act_name(nac_act k) {
    static const char *n[] = {"relu", "tanh", "sigmoid", "exp",      "log",
                              "square", "sqrt", "abs",   "softplus", "linear"};
    return n[k];
}

static void run_act(nac_backend_t *be, nac_act k, int nd, const int64_t *dim, bool blocked,
                    bool in_place, uint64_t seed) {
    const float a = 0.7f, b = -0.3f;
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= dim[i];
    float *fx = malloc((size_t)n * sizeof *fx), *fr = randn(n, seed + 1, 1.0f);
    if (k == NAC_ACT_LOG || k == NAC_ACT_SQRT) tu_randu(fx, n, seed, 0.2f, 3.0f);
    else tu_randn(fx, n, seed, 2.0f);
    if (k == NAC_ACT_SOFTPLUS && n >= 4) { /* stable far out on both sides */
        fx[0] = 30.0f, fx[1] = -30.0f, fx[2] = 90.0f, fx[3] = -90.0f;
    }
    double *want = malloc((size_t)n * sizeof *want), *dwant = malloc((size_t)n * sizeof *dwant);
    for (int64_t i = 0; i < n; i++) {
        double x = fx[i], h = 1e-6 * fmax(1.0, fabs(x));
        want[i] = ref_act(k, x, a, b);
        dwant[i] = fr[i] * (ref_act(k, x + h, a, b) - ref_act(k, x - h, a, b)) / (2 * h);
    }
    nac_tensor_t *x = upload(be, nd, dim, fx, blocked);
    nac_tensor_t *y = in_place ? x : nac_tensor_new(be, nd, dim);
    nac_tensor_t *dy = upload(be, nd, dim, fr, blocked);
    nac_tensor_t *dx = in_place ? dy : nac_tensor_new(be, nd, dim);
    nac_tensor_t *xkeep = NULL;
    bool uses_y = k == NAC_ACT_TANH || k == NAC_ACT_SIGMOID || k == NAC_ACT_EXP || k == NAC_ACT_SQRT;
    if (in_place && !uses_y) { /* the backward needs x, which the forward overwrites */
        xkeep = nac_tensor_new(be, nd, dim);
        TU_OK(nac_tensor_copy(x, xkeep));
    }
    char what[64];
    snprintf(what, sizeof what, "%s forward (%dD%s%s)", act_name(k), nd, blocked ? ", blocked" : "",
             in_place ? ", in place" : "");
    TU_OK(nac_act_forward(k, x, y, a, b));
    float *got = dl(y);
    /* oneDNN's vectorised transcendentals are accurate to a few ulp */
    tu_close_d(got, want, n, 2e-5, 1e-6, what);
    free(got);
    if (blocked) assert_pad_zero(y, what);
    const nac_tensor_t *xin = in_place && !uses_y ? xkeep : x;
    TU_OK(nac_act_backward(k, uses_y ? NULL : xin, uses_y ? y : NULL, dy, dx, a, b));
    snprintf(what, sizeof what, "%s backward (%dD%s%s)", act_name(k), nd, blocked ? ", blocked" : "",
             in_place ? ", in place" : "");
    got = dl(dx);
    tu_close_d(got, dwant, n, 1e-4, 1e-5, what);
    free(got);
    if (blocked) assert_pad_zero(dx, what);
    nac_tensor_free(x);
    if (!in_place) nac_tensor_free(y), nac_tensor_free(dx);
    nac_tensor_free(dy);
    nac_tensor_free(xkeep);
    free(fx), free(fr), free(want), free(dwant);
}

static void test_activations(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    int64_t d2[2] = {7, 13}, d4[4] = {2, 3, 4, 5}, d1 = 11;
    for (int k = NAC_ACT_RELU; k <= NAC_ACT_LINEAR; k++) {
        run_act(be, (nac_act)k, 2, d2, false, false, 500 + k);
        run_act(be, (nac_act)k, 4, d4, true, false, 520 + k);
        run_act(be, (nac_act)k, 1, &d1, false, true, 540 + k);
        run_act(be, (nac_act)k, 4, d4, true, true, 560 + k);
    }
    /* the same call again reuses its primitives */
    nac_tensor_t *x = nac_tensor_new(be, 4, d4), *y = nac_tensor_new(be, 4, d4);
    TU_OK(nac_tensor_fill(x, 0.5f));
    TU_OK(nac_act_forward(NAC_ACT_TANH, x, y, 0, 0));
    size_t before = nentries(be);
    TU_OK(nac_act_forward(NAC_ACT_TANH, x, y, 0, 0));
    TU_OK(nac_act_forward(NAC_ACT_RELU, x, y, 1.0f, 0.0f)); /* RELU ignores alpha: one entry */
    size_t mid = nentries(be);
    TU_OK(nac_act_forward(NAC_ACT_RELU, x, y, 0.0f, 0.0f));
    assert_int_equal(before + 1, mid);
    assert_int_equal(nentries(be), mid);
    nac_tensor_free(x), nac_tensor_free(y);
    nac_backend_free(be);
}

/* ---- binary and axpby ---- */
static double ref_bin(nac_binop k, double a, double b) {
    switch (k) {
    case NAC_BIN_ADD: return a + b;
    case NAC_BIN_SUB: return a - b;
    case NAC_BIN_MUL: return a * b;
    case NAC_BIN_DIV: return a / b;
    case NAC_BIN_MAX: return fmax(a, b);
    }
    return NAN;
}

/* layouts: 0 both plain, 1 both blocked, 2 a blocked + b plain, 3 a nhwc + b blocked;
 * alias: 0 new y, 1 y = a, 2 y = b */
static void run_bin(nac_backend_t *be, nac_binop k, int nd, const int64_t *dim, int layouts,
                    int alias, uint64_t seed) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= dim[i];
    float *fa = randn(n, seed, 1.0f), *fb = randn(n, seed + 1, 1.0f);
    if (k == NAC_BIN_DIV)
        for (int64_t i = 0; i < n; i++) fb[i] = fb[i] < 0 ? fb[i] - 0.5f : fb[i] + 0.5f;
    double *want = malloc((size_t)n * sizeof *want);
    for (int64_t i = 0; i < n; i++) want[i] = ref_bin(k, fa[i], fb[i]);
    nac_tensor_t *a = upload(be, nd, dim, fa, layouts == 1 || layouts == 2);
    nac_tensor_t *b = upload(be, nd, dim, fb, layouts == 1 || layouts == 3);
    if (layouts == 3) make_nhwc(be, a);
    nac_tensor_t *y = alias == 1 ? a : alias == 2 ? b : nac_tensor_new(be, nd, dim);
    TU_OK(nac_binary(k, a, b, y));
    char what[64];
    snprintf(what, sizeof what, "binary %d (%dD, layouts %d, alias %d)", (int)k, nd, layouts, alias);
    float *got = dl(y);
    tu_close_d(got, want, n, 1e-6, 1e-7, what);
    free(got);
    if (!tu_info(y).plain) assert_pad_zero(y, what);
    if (alias == 0 && layouts == 2) /* an unallocated output takes a's layout */
        assert_int_equal(tu_info(y).layout_id, tu_info(a).layout_id);
    if (alias == 0) nac_tensor_free(y);
    nac_tensor_free(a), nac_tensor_free(b);
    free(fa), free(fb), free(want);
}

static void test_binary(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    int64_t d2[2] = {5, 7}, d4[4] = {2, 3, 4, 5};
    for (int k = NAC_BIN_ADD; k <= NAC_BIN_MAX; k++)
        for (int alias = 0; alias < 3; alias++) {
            run_bin(be, (nac_binop)k, 2, d2, 0, alias, 600 + k * 10 + alias);
            for (int layouts = 0; layouts < 4; layouts++)
                run_bin(be, (nac_binop)k, 4, d4, layouts, alias, 700 + k * 10 + alias);
        }
    nac_backend_free(be);
}

static void test_axpby(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    int64_t d4[4] = {2, 3, 4, 5}, n = 120;
    float *fx = randn(n, 800, 1.0f), *fy = randn(n, 801, 1.0f), *nan = malloc(n * sizeof(float));
    for (int64_t i = 0; i < n; i++) nan[i] = NAN;
    double *want = malloc(n * sizeof(double));
    /* cases: x layout, y layout (0 plain, 1 blocked, 2 unallocated, 3 NaN-filled plain), beta */
    static const struct { int xl, yl; float beta; } cases[] = {
        {1, 2, 0.0f}, {0, 3, 0.0f}, {1, 1, -0.5f}, {0, 1, 2.0f}, {1, 0, 0.25f}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        float alpha = 1.5f, beta = cases[ci].beta;
        nac_tensor_t *x = upload(be, 4, d4, fx, cases[ci].xl == 1);
        nac_tensor_t *y = nac_tensor_new(be, 4, d4);
        if (cases[ci].yl != 2) TU_OK(nac_tensor_from_host(y, cases[ci].yl == 3 ? nan : fy));
        if (cases[ci].yl == 1) make_blocked(be, y);
        for (int64_t i = 0; i < n; i++)
            want[i] = alpha * (double)fx[i] + (beta != 0.0f ? beta * (double)fy[i] : 0.0);
        TU_OK(nac_axpby(alpha, x, beta, y));
        check_t(y, want, "axpby");
        if (!tu_info(y).plain) assert_pad_zero(y, "axpby");
        nac_tensor_free(x), nac_tensor_free(y);
    }
    /* x and y the same tensor: y = (alpha + beta) y */
    nac_tensor_t *x = upload(be, 4, d4, fx, true);
    TU_OK(nac_axpby(2.0f, x, -0.5f, x));
    for (int64_t i = 0; i < n; i++) want[i] = 1.5 * fx[i];
    check_t(x, want, "axpby x == y");
    nac_tensor_free(x);
    free(fx), free(fy), free(nan), free(want);
    nac_backend_free(be);
}

/* ---- layouts ---- */
static void test_layout_round_trips(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    if (!tu_has_layouts(be)) {
        printf("skipped: backend %s has one layout only\n", nac_backend_name(be));
        nac_backend_free(be);
        skip();
    }
    conv_case cc = {2, 5, 6, 6, 20, 3, 1, 1, false, false};
    conv_ref q = {.cc = cc, .oh = 6, .ow = 6};
    int64_t xd[4] = {2, 5, 6, 6}, wd[4] = {20, 5, 3, 3}, yd[4] = {2, 20, 6, 6}, ny = 2 * 20 * 36;
    float *fx = randn(2 * 5 * 36, 900, 1.0f), *fw = randn(20 * 45, 901, 0.3f);
    q.x = dbl(fx, 2 * 5 * 36);
    q.w = dbl(fw, 20 * 45);
    double *want = malloc(ny * sizeof(double));
    ref_conv(&q, want);
    nac_tensor_t *x = upload(be, 4, xd, fx, false), *w = upload(be, 4, wd, fw, false);
    nac_tensor_t *y = nac_tensor_new(be, 4, yd);
    nac_conv_params p = {1, 1};
    TU_OK(nac_conv2d_forward(x, w, NULL, y, p));
    /* oneDNN's direct convolution picks a blocked activation layout (nChw16c / nChw8c) */
    assert_false(tu_info(y).plain);
    check_t(y, want, "plain -> blocked conv output -> to_host");
    float *hy = dl(y);

    /* from_host into the blocked weights, then the convolution sees the new values */
    for (int64_t i = 0; i < 20 * 45; i++) fw[i] *= -2.0f;
    TU_OK(nac_tensor_from_host(w, fw));
    assert_false(tu_info(w).plain);
    TU_OK(nac_conv2d_forward(x, w, NULL, y, p));
    for (int64_t i = 0; i < ny; i++) want[i] *= -2.0;
    check_t(y, want, "conv after from_host into blocked weights");
    free(hy);
    hy = dl(y);

    /* copy_rows: blocked into an unallocated tensor (takes the layout), into a blocked one
       and into a plain one (a reorder) */
    int64_t d3[4] = {3, 20, 6, 6}, row = 20 * 36;
    nac_tensor_t *c3 = nac_tensor_new(be, 4, d3), *c3p = nac_tensor_new(be, 4, d3);
    TU_OK(nac_tensor_alloc(c3p));
    TU_OK(nac_copy_rows(y, 0, c3, 1, 2));
    TU_OK(nac_copy_rows(y, 1, c3, 0, 1));
    assert_int_equal(tu_info(c3).inner_blocks,
                     tu_info(y).inner_blocks);
    TU_OK(nac_copy_rows(y, 0, c3p, 1, 2));
    TU_OK(nac_copy_rows(c3, 0, c3p, 0, 1));
    float *h3 = dl(c3), *h3p = dl(c3p);
    float *e3 = malloc(3 * row * sizeof(float));
    memcpy(e3, hy + row, row * sizeof(float));
    memcpy(e3 + row, hy, 2 * row * sizeof(float));
    tu_close_f(h3, e3, 3 * row, 0, 0, "copy_rows blocked -> blocked");
    tu_close_f(h3p, e3, 3 * row, 0, 0, "copy_rows blocked -> plain");
    assert_pad_zero(c3, "copy_rows dst");

    /* reshape of a blocked tensor: (N,C,H,W) -> (N,CHW) and (N,C,1,1) -> (N,C) */
    int64_t d2[2] = {2, row};
    nac_tensor_t *flat = nac_tensor_new(be, 2, d2);
    TU_OK(nac_reshape(y, flat));
    float *hf = dl(flat);
    tu_close_f(hf, hy, ny, 0, 0, "reshape blocked -> 2-D");
    int64_t dc[4] = {2, 20, 1, 1}, dv[2] = {2, 20};
    nac_tensor_t *col = upload(be, 4, dc, hy, true), *vec = nac_tensor_new(be, 2, dv);
    TU_OK(nac_reshape(col, vec));
    assert_true(tu_info(vec).plain);
    float *hv = dl(vec);
    tu_close_f(hv, hy, 40, 0, 0, "reshape (N,C,1,1) blocked -> (N,C)");

    /* copy: blocked into a plain, allocated tensor and into an unallocated one */
    nac_tensor_t *yp = nac_tensor_new(be, 4, yd), *yb = nac_tensor_new(be, 4, yd);
    TU_OK(nac_tensor_alloc(yp));
    TU_OK(nac_tensor_copy(y, yp));
    TU_OK(nac_tensor_copy(y, yb));
    assert_true(tu_info(yp).plain);
    assert_int_equal(tu_info(yb).layout_id, tu_info(y).layout_id);
    float *hp = dl(yp), *hb = dl(yb);
    tu_close_f(hp, hy, ny, 0, 0, "copy blocked -> plain");
    tu_close_f(hb, hy, ny, 0, 0, "copy blocked -> unallocated");

    nac_tensor_t *ts[] = {x, w, y, c3, c3p, flat, col, vec, yp, yb};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) nac_tensor_free(ts[i]);
    free(fx), free(fw), free(q.x), free(q.w), free(want), free(hy), free(h3), free(h3p), free(e3);
    free(hf), free(hv), free(hp), free(hb);
    nac_backend_free(be);
}

/* A small network's step twice: after the first, no primitive or buffer is created. */
static void test_cache_reuse(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    int64_t xd[4] = {4, 3, 8, 8}, wd[4] = {16, 3, 3, 3}, cd[4] = {4, 16, 8, 8},
            pd[4] = {4, 16, 4, 4}, sd[2] = {2, 16}, C = 16;
    float *fx = randn(4 * 3 * 64, 950, 1.0f), *fw = randn(16 * 27, 951, 0.3f);
    nac_tensor_t *x = upload(be, 4, xd, fx, false), *w = upload(be, 4, wd, fw, false);
    nac_tensor_t *gamma = nac_tensor_new1(be, C), *beta = nac_tensor_new1(be, C),
                 *rm = nac_tensor_new1(be, C), *rv = nac_tensor_new1(be, C);
    TU_OK(nac_tensor_fill(gamma, 1.0f));
    TU_OK(nac_tensor_fill(beta, 0.1f));
    TU_OK(nac_tensor_fill(rm, 0.0f));
    TU_OK(nac_tensor_fill(rv, 1.0f));
    nac_tensor_t *c = nac_tensor_new(be, 4, cd), *a = nac_tensor_new(be, 4, cd),
                 *pl = nac_tensor_new(be, 4, pd), *h = nac_tensor_new2(be, 4, 16),
                 *sm = nac_tensor_new(be, 2, sd), *sv = nac_tensor_new(be, 2, sd);
    nac_tensor_t *dh = nac_tensor_new2(be, 4, 16), *dpl = nac_tensor_new(be, 4, pd),
                 *da = nac_tensor_new(be, 4, cd), *dc = nac_tensor_new(be, 4, cd),
                 *dw = nac_tensor_new(be, 4, wd), *dg = nac_tensor_new1(be, C),
                 *db = nac_tensor_new1(be, C), *dx = nac_tensor_new(be, 4, xd);
    TU_OK(nac_tensor_fill(dh, 0.25f));
    nac_conv_params cp = {1, 1};
    nac_bn_params bp = {.eps = 1e-5f, .momentum = 0.1f, .groups = 2, .relu = true};
    nac_pool_params pp = {NAC_POOL_MAX, 2, 2, 0};
    size_t counts[3];
    float *first = NULL;
    for (int it = 0; it < 3; it++) {
        TU_OK(nac_conv2d_forward(x, w, NULL, c, cp));
        TU_OK(nac_bn_forward_train(c, gamma, beta, a, rm, rv, sm, sv, bp));
        TU_OK(nac_pool_forward(a, pl, pp));
        TU_OK(nac_gap_forward(pl, h));
        TU_OK(nac_gap_backward(dh, dpl));
        TU_OK(nac_pool_backward(a, pl, dpl, da, pp));
        TU_OK(nac_bn_backward(c, a, da, gamma, sm, sv, dc, dg, db, bp));
        TU_OK(nac_conv2d_backward_weights(x, dc, dw, NULL, cp));
        TU_OK(nac_conv2d_backward_data(dc, w, dx, cp));
        TU_OK(nac_act_forward(NAC_ACT_RELU, a, a, 0, 0));
        TU_OK(nac_binary(NAC_BIN_ADD, a, c, a));
        float *g = dl(dw);
        if (!first) first = g;
        else { /* the same inputs give the same gradient, bit for bit */
            tu_close_f(g, first, 16 * 27, 0, 0, "dw of a repeated step");
            free(g);
        }
        counts[it] = nentries(be);
    }
    assert_int_equal(counts[1], counts[0]);
    assert_int_equal(counts[2], counts[0]);
    /* the activations stayed in the blocked layout all the way to the global pool */
    if (tu_has_layouts(be)) assert_false(tu_info(c).plain);
    assert_int_equal(tu_info(a).layout_id, tu_info(c).layout_id);
    assert_int_equal(tu_info(dc).layout_id, tu_info(c).layout_id);
    assert_int_equal(tu_info(dpl).layout_id, tu_info(pl).layout_id);
    nac_tensor_t *ts[] = {x, w, gamma, beta, rm, rv, c, a, pl, h, sm, sv,
                          dh, dpl, da, dc, dw, dg, db, dx};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) nac_tensor_free(ts[i]);
    free(fx), free(fw), free(first);
    nac_backend_free(be);
}

/* ---- errors through the public wrappers ---- */
#define EXPECT_INVALID(expr, opname)                                                      \
    do {                                                                                  \
        assert_int_equal((expr), NAC_ERR_INVALID);                                        \
        if (!strstr(nac_last_error(), opname))                                            \
            fail_msg("%s: message \"%s\" does not name %s", #expr, nac_last_error(), opname); \
    } while (0)

static void test_errors(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    nac_tensor_t *x = nac_tensor_new4(be, 2, 3, 8, 8), *w = nac_tensor_new4(be, 4, 3, 3, 3);
    nac_tensor_t *wbad = nac_tensor_new4(be, 4, 5, 3, 3), *y = nac_tensor_new4(be, 2, 4, 8, 8);
    nac_tensor_t *ybad = nac_tensor_new4(be, 2, 4, 7, 8), *zero = nac_tensor_new4(be, 0, 3, 8, 8);
    nac_tensor_t *g3 = nac_tensor_new1(be, 3), *g4 = nac_tensor_new1(be, 4);
    nac_tensor_t *s13 = nac_tensor_new2(be, 1, 3), *x2 = nac_tensor_new4(be, 2, 3, 4, 4);
    nac_tensor_t *v = nac_tensor_new2(be, 2, 3), *vbad = nac_tensor_new2(be, 3, 2);
    nac_tensor_t *x1 = nac_tensor_new4(be, 1, 3, 1, 1);
    TU_OK(nac_tensor_fill(x, 1.0f));
    TU_OK(nac_tensor_fill(w, 1.0f));
    TU_OK(nac_tensor_fill(wbad, 1.0f));
    TU_OK(nac_tensor_fill(g3, 1.0f));
    TU_OK(nac_tensor_fill(g4, 1.0f));
    TU_OK(nac_tensor_fill(x1, 1.0f));
    nac_conv_params cp = {1, 1};
    EXPECT_INVALID(nac_conv2d_forward(x, wbad, NULL, y, cp), "nac_conv2d_forward");
    EXPECT_INVALID(nac_conv2d_forward(x, w, NULL, ybad, cp), "nac_conv2d_forward");
    EXPECT_INVALID(nac_conv2d_forward(NULL, w, NULL, y, cp), "nac_conv2d_forward");
    EXPECT_INVALID(nac_conv2d_forward(zero, w, NULL, y, cp), "nac_conv2d_forward");
    EXPECT_INVALID(nac_conv2d_forward(x, w, g3, y, cp), "nac_conv2d_forward"); /* bias size */
    EXPECT_INVALID(nac_conv2d_forward(x, w, NULL, y, (nac_conv_params){0, 1}),
                   "nac_conv2d_forward");
    EXPECT_INVALID(nac_conv2d_backward_data(ybad, w, x, cp), "nac_conv2d_backward_data");
    EXPECT_INVALID(nac_conv2d_backward_weights(x, y, wbad, NULL, cp),
                   "nac_conv2d_backward_weights");
    EXPECT_INVALID(nac_conv2d_backward_weights(x, NULL, w, NULL, cp),
                   "nac_conv2d_backward_weights");

    nac_bn_params bp = {.eps = 1e-5f, .momentum = 0.1f, .groups = 1};
    nac_tensor_t *sm = nac_tensor_new2(be, 1, 3), *sv = nac_tensor_new2(be, 1, 3);
    EXPECT_INVALID(nac_bn_forward_train(x, g4, g3, y, g3, g3, sm, sv, bp), "nac_bn_forward_train");
    EXPECT_INVALID(nac_bn_forward_train(x, g3, g3, ybad, g3, g3, sm, sv, bp),
                   "nac_bn_forward_train");
    bp.groups = 3; /* 2 images do not split into 3 */
    EXPECT_INVALID(nac_bn_forward_train(x, g3, g3, x2, g3, g3, s13, s13, bp),
                   "nac_bn_forward_train");
    bp.groups = 1;
    EXPECT_INVALID(nac_bn_forward_train(x1, g3, g3, x1, g3, g3, sm, sv, bp),
                   "nac_bn_forward_train"); /* one value per channel */
    EXPECT_INVALID(nac_bn_forward_infer(x, g3, g3, g3, NULL, y, bp), "nac_bn_forward_infer");
    EXPECT_INVALID(nac_bn_backward(x, x, x, g3, sm, sv, x2, g3, g3, bp), "nac_bn_backward");

    EXPECT_INVALID(nac_pool_forward(x, x2, (nac_pool_params){NAC_POOL_MAX, 3, 1, 1}),
                   "nac_pool_forward"); /* gives 8x8, not 4x4 */
    EXPECT_INVALID(nac_pool_forward(x, y, (nac_pool_params){NAC_POOL_AVG, 2, 2, 0}),
                   "nac_pool_forward");
    EXPECT_INVALID(nac_pool_forward(x, x2, (nac_pool_params){NAC_POOL_AVG, 2, 2, 2}),
                   "nac_pool_forward"); /* padding larger than half the kernel */
    /* max-pool backward needs the indices of a forward into y */
    nac_tensor_t *py = nac_tensor_new4(be, 2, 3, 4, 4), *pdx = nac_tensor_new4(be, 2, 3, 8, 8);
    TU_OK(nac_tensor_fill(py, 0.0f));
    EXPECT_INVALID(nac_pool_backward(x, py, py, pdx, (nac_pool_params){NAC_POOL_MAX, 2, 2, 0}),
                   "nac_pool_backward");
    EXPECT_INVALID(nac_gap_forward(x, vbad), "nac_gap_forward");
    EXPECT_INVALID(nac_gap_backward(v, y), "nac_gap_backward");
    EXPECT_INVALID(nac_upsample_forward(x, ybad), "nac_upsample_forward");
    EXPECT_INVALID(nac_upsample_forward(x, x2), "nac_upsample_forward"); /* a downsampling */
    EXPECT_INVALID(nac_upsample_backward(x2, x), "nac_upsample_backward");
    EXPECT_INVALID(nac_act_forward(NAC_ACT_TANH, x, y, 0, 0), "nac_act_forward");
    EXPECT_INVALID(nac_act_forward((nac_act)42, x, x, 0, 0), "nac_act_forward");
    EXPECT_INVALID(nac_act_backward(NAC_ACT_TANH, x, NULL, x, x, 0, 0), "nac_act_backward");
    EXPECT_INVALID(nac_binary(NAC_BIN_ADD, x, y, x), "nac_binary");
    EXPECT_INVALID(nac_binary(NAC_BIN_ADD, x, NULL, x), "nac_binary");
    EXPECT_INVALID(nac_binary((nac_binop)9, x, x, x), "nac_binary");
    EXPECT_INVALID(nac_axpby(1.0f, x, 0.0f, y), "nac_axpby");
    EXPECT_INVALID(nac_axpby(1.0f, zero, 0.0f, zero), "nac_axpby");
    nac_tensor_t *ts[] = {x, w, wbad, y, ybad, zero, g3, g4, s13, x2, v, vbad, x1, sm, sv, py, pdx};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) nac_tensor_free(ts[i]);
    nac_backend_free(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_conv_winograd),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_bn_saved_and_share),
        cmocka_unit_test(test_memory_stats),
        cmocka_unit_test(test_flops_count),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_gap_upsample),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_axpby),
        cmocka_unit_test(test_layout_round_trips),
        cmocka_unit_test(test_cache_reuse),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
