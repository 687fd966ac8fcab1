/* The dense and row-wise ops of the backend under test ($NAC_TEST_BACKEND; the CPU
 * backend's backend/cpu/math.c) against naive double references, in the spirit of ggml's
 * test-backend-ops: GEMM, linear forward/backward (and central finite differences), row-wise
 * logsumexp / softmax / sums / broadcasts, whole-tensor sums, counter-based random fills,
 * the optimiser updates (hand-computed steps, the LARS golden from PyTorch, blocked
 * weight layouts through nac_tensor_relayout) and the EMA, and shape errors through the public wrappers. */
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <omp.h>


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

/* ---- helpers ---- */
static nac_tensor_t *t1(int64_t n, const float *data) { return tu_tensor(be, 1, &n, data); }

static nac_tensor_t *t2(int64_t r, int64_t c, const float *data) {
    int64_t d[2] = {r, c};
    return tu_tensor(be, 2, d, data);
}

static float *fbuf(int64_t n) {
    float *p = calloc((size_t)n, sizeof *p);
    assert_non_null(p);
    return p;
}

static float *host(const nac_tensor_t *t) {
    float *p = fbuf(nac_tensor_numel(t));
    TU_OK(nac_tensor_to_host(t, p));
    return p;
}

/* ---- GEMM and linear ---- */
static void test_gemm(void **state) {
    (void)state;
    const int64_t M = 7, N = 5, K = 9;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float a[63], b[45], c0[35];
            tu_randn(a, M * K, 1 + ta, 1.0f);
            tu_randn(b, K * N, 3 + tb, 1.0f);
            tu_randn(c0, M * N, 5, 1.0f);
            nac_tensor_t *A = ta ? t2(K, M, a) : t2(M, K, a);
            nac_tensor_t *B = tb ? t2(N, K, b) : t2(K, N, b);
            nac_tensor_t *C = t2(M, N, c0), *C0 = t2(M, N, NULL);
            TU_OK(nac_gemm(ta, tb, 0.7f, A, B, 0.3f, C));
            TU_OK(nac_gemm(ta, tb, 1.0f, A, B, 0.0f, C0)); /* unallocated output */
            double want[35], want0[35];
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    double s = 0;
                    for (int64_t k = 0; k < K; k++)
                        s += (double)(ta ? a[k * M + i] : a[i * K + k]) *
                             (tb ? b[j * K + k] : b[k * N + j]);
                    want0[i * N + j] = s;
                    want[i * N + j] = 0.7 * s + 0.3 * c0[i * N + j];
                }
            float *got = host(C), *got0 = host(C0);
            tu_close_d(got, want, M * N, 1e-5, 1e-5, "gemm alpha/beta");
            tu_close_d(got0, want0, M * N, 1e-5, 1e-5, "gemm beta 0");
            free(got), free(got0);
            nac_tensor_free(A), nac_tensor_free(B), nac_tensor_free(C), nac_tensor_free(C0);
        }
}

enum { LN = 6, LI = 11, LO = 5 };

static void linear_ref(const float *x, const float *w, const float *b, double *y) {
    for (int i = 0; i < LN; i++)
        for (int o = 0; o < LO; o++) {
            double s = b ? b[o] : 0.0;
            for (int k = 0; k < LI; k++) s += (double)x[i * LI + k] * w[o * LI + k];
            y[i * LO + o] = s;
        }
}

static void test_linear_forward(void **state) {
    (void)state;
    float x[LN * LI], w[LO * LI], b[LO];
    tu_randn(x, LN * LI, 10, 1.0f);
    tu_randn(w, LO * LI, 11, 0.5f);
    tu_randn(b, LO, 12, 1.0f);
    nac_tensor_t *X = t2(LN, LI, x), *W = t2(LO, LI, w), *B = t1(LO, b);
    nac_tensor_t *Y = t2(LN, LO, NULL), *Y0 = t2(LN, LO, NULL);
    TU_OK(nac_linear_forward(X, W, B, Y));
    TU_OK(nac_linear_forward(X, W, NULL, Y0));
    double want[LN * LO], want0[LN * LO];
    linear_ref(x, w, b, want);
    linear_ref(x, w, NULL, want0);
    float *got = host(Y), *got0 = host(Y0);
    tu_close_d(got, want, LN * LO, 1e-5, 1e-5, "linear with bias");
    tu_close_d(got0, want0, LN * LO, 1e-5, 1e-5, "linear without bias");
    /* a second call on the now allocated output overwrites it */
    TU_OK(nac_linear_forward(X, W, B, Y));
    free(got);
    got = host(Y);
    tu_close_d(got, want, LN * LO, 1e-5, 1e-5, "linear, second call");
    free(got), free(got0);
    nac_tensor_free(X), nac_tensor_free(W), nac_tensor_free(B);
    nac_tensor_free(Y), nac_tensor_free(Y0);
}

/* L = sum_ij r_ij y_ij for the linear layer at (x, w, b): dL/dy = r. */
static double linear_loss(nac_tensor_t *X, nac_tensor_t *W, nac_tensor_t *B, nac_tensor_t *Y,
                          const float *r) {
    float y[LN * LO];
    TU_OK(nac_linear_forward(X, W, B, Y));
    TU_OK(nac_tensor_to_host(Y, y));
    double s = 0;
    for (int i = 0; i < LN * LO; i++) s += (double)r[i] * y[i];
    return s;
}

/* Central differences of L in every element of one of x, w, b (held in host copy v). */
static void fd_check(nac_tensor_t *T, float *v, int64_t n, const float *grad, nac_tensor_t *X,
                     nac_tensor_t *W, nac_tensor_t *B, nac_tensor_t *Y, const float *r,
                     const char *what) {
    const float h = 1e-2f;
    for (int64_t i = 0; i < n; i++) {
        float keep = v[i];
        v[i] = keep + h;
        TU_OK(nac_tensor_from_host(T, v));
        double lp = linear_loss(X, W, B, Y, r);
        v[i] = keep - h;
        TU_OK(nac_tensor_from_host(T, v));
        double lm = linear_loss(X, W, B, Y, r);
        v[i] = keep;
        TU_OK(nac_tensor_from_host(T, v));
        double fd = (lp - lm) / (2.0 * h);
        if (!(fabs(fd - grad[i]) <= 2e-3 + 2e-3 * fabs(fd)))
            fail_msg("%s: element %lld: backward %.7g, finite difference %.7g", what,
                     (long long)i, (double)grad[i], fd);
    }
}

static void test_linear_backward(void **state) {
    (void)state;
    float x[LN * LI], w[LO * LI], b[LO], r[LN * LO];
    tu_randn(x, LN * LI, 20, 1.0f);
    tu_randn(w, LO * LI, 21, 0.5f);
    tu_randn(b, LO, 22, 1.0f);
    tu_randn(r, LN * LO, 23, 1.0f);
    nac_tensor_t *X = t2(LN, LI, x), *W = t2(LO, LI, w), *B = t1(LO, b), *R = t2(LN, LO, r);
    nac_tensor_t *Y = t2(LN, LO, NULL), *DX = t2(LN, LI, NULL), *DW = t2(LO, LI, NULL);
    nac_tensor_t *DB = t1(LO, NULL), *DW2 = t2(LO, LI, NULL);
    TU_OK(nac_linear_backward(X, W, R, DX, DW, DB));
    TU_OK(nac_linear_backward(X, W, R, NULL, DW2, NULL)); /* dx and db are optional */

    double dx[LN * LI] = {0}, dw[LO * LI] = {0}, db[LO] = {0};
    for (int i = 0; i < LN; i++)
        for (int o = 0; o < LO; o++) {
            db[o] += r[i * LO + o];
            for (int k = 0; k < LI; k++) {
                dx[i * LI + k] += (double)r[i * LO + o] * w[o * LI + k];
                dw[o * LI + k] += (double)r[i * LO + o] * x[i * LI + k];
            }
        }
    float *gdx = host(DX), *gdw = host(DW), *gdb = host(DB), *gdw2 = host(DW2);
    tu_close_d(gdx, dx, LN * LI, 1e-5, 1e-5, "linear dx");
    tu_close_d(gdw, dw, LO * LI, 1e-5, 1e-5, "linear dw");
    tu_close_d(gdb, db, LO, 1e-5, 1e-5, "linear db");
    tu_close_f(gdw2, gdw, LO * LI, 0, 0, "linear dw without dx/db");

    fd_check(X, x, LN * LI, gdx, X, W, B, Y, r, "finite differences dx");
    fd_check(W, w, LO * LI, gdw, X, W, B, Y, r, "finite differences dw");
    fd_check(B, b, LO, gdb, X, W, B, Y, r, "finite differences db");
    free(gdx), free(gdw), free(gdb), free(gdw2);
    nac_tensor_free(X), nac_tensor_free(W), nac_tensor_free(B), nac_tensor_free(R);
    nac_tensor_free(Y), nac_tensor_free(DX), nac_tensor_free(DW), nac_tensor_free(DB);
    nac_tensor_free(DW2);
}

/* ---- row-wise ---- */
static void rows_ref(const float *x, int64_t n, int64_t m, double *lse, double *sm,
                     double *sum) {
    for (int64_t i = 0; i < n; i++) {
        const float *r = x + i * m;
        double mx = -INFINITY, s = 0, t = 0;
        for (int64_t j = 0; j < m; j++) mx = fmax(mx, r[j]);
        for (int64_t j = 0; j < m; j++) s += exp(r[j] - mx), t += r[j];
        lse[i] = mx + log(s);
        sum[i] = t;
        for (int64_t j = 0; j < m; j++) sm[i * m + j] = exp(r[j] - mx) / s;
    }
}

static void test_row_ops(void **state) {
    (void)state;
    enum { N = 7, M = 13 };
    float x[N * M];
    tu_randn(x, N * M, 30, 3.0f);
    /* stability: huge rows of both signs */
    for (int j = 0; j < M; j++) {
        x[4 * M + j] = 1e4f - (float)j;
        x[5 * M + j] = -1e4f + 0.5f * (float)j;
    }
    nac_tensor_t *X = t2(N, M, x), *L = t1(N, NULL), *S = t2(N, M, NULL), *R = t1(N, NULL);
    TU_OK(nac_row_logsumexp(X, L));
    TU_OK(nac_row_softmax(X, S));
    TU_OK(nac_row_sum(X, R));
    double lse[N], sm[N * M], sum[N];
    rows_ref(x, N, M, lse, sm, sum);
    float *gl = host(L), *gs = host(S), *gr = host(R);
    tu_close_d(gl, lse, N, 1e-6, 1e-5, "row_logsumexp");
    tu_close_d(gs, sm, N * M, 1e-5, 1e-7, "row_softmax");
    tu_close_d(gr, sum, N, 1e-5, 1e-5, "row_sum");
    /* the huge rows by hand: lse = 1e4 + log sum_j e^-j, softmax finite and normalised */
    double s = 0;
    for (int j = 0; j < M; j++) s += exp(-(double)j);
    assert_true(fabs(gl[4] - (1e4 + log(s))) < 2e-3);
    assert_true(isfinite(gl[5]) && gl[5] > -1e4f + 6.0f - 1e-3f);
    for (int i = 4; i <= 5; i++) {
        double t = 0;
        for (int j = 0; j < M; j++) {
            assert_true(isfinite(gs[i * M + j]));
            t += gs[i * M + j];
        }
        assert_true(fabs(t - 1.0) < 1e-6);
    }
    /* softmax in place */
    TU_OK(nac_row_softmax(X, X));
    float *gi = host(X);
    tu_close_f(gi, gs, N * M, 0, 0, "row_softmax in place");
    free(gl), free(gs), free(gr), free(gi);
    nac_tensor_free(X), nac_tensor_free(L), nac_tensor_free(S), nac_tensor_free(R);
}

static void test_row_infinities(void **state) {
    (void)state;
    const float ninf = -INFINITY;
    float x[3 * 3] = {0.0f, ninf, 1.0f, ninf, ninf, ninf, 2.0f, INFINITY, 1.0f};
    nac_tensor_t *X = t2(3, 3, x), *L = t1(3, NULL);
    TU_OK(nac_row_logsumexp(X, L));
    float l[3];
    TU_OK(nac_tensor_to_host(L, l));
    assert_true(fabs(l[0] - log(1.0 + exp(1.0))) < 1e-6); /* masked entries drop out */
    assert_true(isinf(l[1]) && l[1] < 0);
    assert_true(isinf(l[2]) && l[2] > 0);
    nac_tensor_free(X), nac_tensor_free(L);
}

static double binop_ref(nac_binop k, double a, double b) {
    switch (k) {
    case NAC_BIN_ADD: return a + b;
    case NAC_BIN_SUB: return a - b;
    case NAC_BIN_MUL: return a * b;
    case NAC_BIN_DIV: return a / b;
    case NAC_BIN_MAX: return fmax(a, b);
    }
    return NAN;
}

static void test_broadcasts(void **state) {
    (void)state;
    enum { N = 5, M = 7 };
    float x[N * M], vr[M], vc[N];
    tu_randn(x, N * M, 40, 1.0f);
    tu_randu(vr, M, 41, 0.5f, 2.0f); /* away from 0 for DIV */
    tu_randu(vc, N, 42, -2.0f, -0.5f);
    nac_tensor_t *X = t2(N, M, x), *VR = t1(M, vr), *VC = t1(N, vc);
    for (int k = NAC_BIN_ADD; k <= NAC_BIN_MAX; k++) {
        nac_tensor_t *Y = t2(N, M, NULL), *Z = t2(N, M, NULL), *I = t2(N, M, x);
        TU_OK(nac_row_broadcast((nac_binop)k, X, VR, Y));
        TU_OK(nac_col_broadcast((nac_binop)k, X, VC, Z));
        TU_OK(nac_row_broadcast((nac_binop)k, I, VR, I)); /* in place */
        double wy[N * M], wz[N * M];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < M; j++) {
                wy[i * M + j] = binop_ref((nac_binop)k, x[i * M + j], vr[j]);
                wz[i * M + j] = binop_ref((nac_binop)k, x[i * M + j], vc[i]);
            }
        float *gy = host(Y), *gz = host(Z), *gi = host(I);
        char what[64];
        snprintf(what, sizeof what, "row_broadcast op %d", k);
        tu_close_d(gy, wy, N * M, 1e-6, 1e-7, what);
        snprintf(what, sizeof what, "col_broadcast op %d", k);
        tu_close_d(gz, wz, N * M, 1e-6, 1e-7, what);
        tu_close_f(gi, gy, N * M, 0, 0, "row_broadcast in place");
        free(gy), free(gz), free(gi);
        nac_tensor_free(Y), nac_tensor_free(Z), nac_tensor_free(I);
    }
    nac_tensor_free(X), nac_tensor_free(VR), nac_tensor_free(VC);
}

/* ---- whole-tensor sums ---- */
static void test_sum_all(void **state) {
    (void)state;
    const int64_t sizes[] = {9 * 31, 300001};
    for (int c = 0; c < 2; c++) {
        int64_t n = sizes[c];
        float *x = fbuf(n);
        tu_randn(x, n, 50 + c, 1.0f);
        for (int64_t i = 0; i < n; i++) x[i] += 0.25f; /* a sum well away from 0 */
        double s = 0, q = 0;
        for (int64_t i = 0; i < n; i++) s += x[i], q += (double)x[i] * x[i];
        nac_tensor_t *X = c == 0 ? t2(9, 31, x) : t1(n, x), *Y = t1(1, NULL);
        float got[4];
        TU_OK(nac_sum_all(X, Y));
        TU_OK(nac_tensor_item(Y, &got[0]));
        TU_OK(nac_sumsq_all(X, Y));
        TU_OK(nac_tensor_item(Y, &got[1]));
        assert_true(fabs(got[0] - s) <= 1e-6 * fabs(s));
        assert_true(fabs(got[1] - q) <= 1e-6 * q);
        /* the same bits with one thread and with three */
        omp_set_num_threads(1);
        TU_OK(nac_sum_all(X, Y));
        TU_OK(nac_tensor_item(Y, &got[2]));
        omp_set_num_threads(3);
        TU_OK(nac_sum_all(X, Y));
        TU_OK(nac_tensor_item(Y, &got[3]));
        omp_set_num_threads(2);
        assert_memory_equal(&got[2], &got[0], sizeof(float));
        assert_memory_equal(&got[3], &got[0], sizeof(float));
        free(x);
        nac_tensor_free(X), nac_tensor_free(Y);
    }
}

/* ---- random ---- */
static void test_rand_determinism(void **state) {
    (void)state;
    const int64_t n = 200003;
    const uint64_t key = nac_rng_key(7, NAC_STREAM_CHANNEL, 3, 0);
    const nac_rand kinds[] = {NAC_RAND_UNIFORM, NAC_RAND_NORMAL, NAC_RAND_SIGN};
    const float params[] = {2.0f, 0.5f, 0.3f};
    for (int k = 0; k < 3; k++) {
        nac_tensor_t *A = t1(n, NULL), *B = t1(n, NULL), *C = t1(n, NULL), *D = t1(n, NULL);
        omp_set_num_threads(1);
        TU_OK(nac_tensor_rand(A, kinds[k], params[k], key));
        omp_set_num_threads(3);
        TU_OK(nac_tensor_rand(B, kinds[k], params[k], key));
        omp_set_num_threads(2);
        TU_OK(nac_tensor_rand(C, kinds[k], params[k], key));
        TU_OK(nac_tensor_rand(D, kinds[k], params[k], key + 1));
        float *a = host(A), *b = host(B), *c = host(C), *d = host(D);
        assert_memory_equal(a, b, (size_t)n * sizeof(float));
        assert_memory_equal(a, c, (size_t)n * sizeof(float));
        int64_t same = 0;
        for (int64_t i = 0; i < n; i++) same += a[i] == d[i];
        assert_true(same < (kinds[k] == NAC_RAND_SIGN ? n * 3 / 4 : 10)); /* another key */
        /* element i is (key, i)'s draw, whichever backend or thread made it */
        for (int64_t i = 0; i < n; i += 997) {
            float want = kinds[k] == NAC_RAND_UNIFORM  ? nac_rng_uniform_at(key, i) * 2.0f
                         : kinds[k] == NAC_RAND_NORMAL ? nac_rng_normal_at(key, i) * 0.5f
                         : nac_rng_uniform_at(key, i) < 0.3f ? -1.0f
                                                             : 1.0f;
            assert_true(a[i] == want);
        }
        free(a), free(b), free(c), free(d);
        nac_tensor_free(A), nac_tensor_free(B), nac_tensor_free(C), nac_tensor_free(D);
    }
    /* a 4-D tensor draws in logical (N,C,H,W) order: the same numbers as a flat one */
    nac_tensor_t *T4 = nac_tensor_new4(be, 3, 5, 7, 11), *T1 = t1(3 * 5 * 7 * 11, NULL);
    TU_OK(nac_tensor_rand(T4, NAC_RAND_NORMAL, 0.0f, key));
    TU_OK(nac_tensor_rand(T1, NAC_RAND_NORMAL, 1.0f, key)); /* std 0 means 1 */
    float *a = host(T4), *b = host(T1);
    assert_memory_equal(a, b, 3 * 5 * 7 * 11 * sizeof(float));
    free(a), free(b);
    nac_tensor_free(T4), nac_tensor_free(T1);
}

static void test_rand_statistics(void **state) {
    (void)state;
    const int64_t n = 100000;
    nac_tensor_t *T = t1(n, NULL);
    float *x = fbuf(n);
    /* SIGN: frequency of -1 within 5 standard deviations of p; p = 0 and 1 exact */
    const float ps[] = {0.1f, 0.5f, 0.0f, 1.0f};
    for (int k = 0; k < 4; k++) {
        TU_OK(nac_tensor_rand(T, NAC_RAND_SIGN, ps[k], 100 + (uint64_t)k));
        TU_OK(nac_tensor_to_host(T, x));
        int64_t neg = 0;
        for (int64_t i = 0; i < n; i++) {
            assert_true(x[i] == 1.0f || x[i] == -1.0f);
            neg += x[i] < 0;
        }
        double f = (double)neg / n, sd = sqrt(ps[k] * (1.0 - ps[k]) / n);
        if (!(fabs(f - ps[k]) <= 5 * sd))
            fail_msg("SIGN p=%g: frequency of -1 is %g", (double)ps[k], f);
    }
    /* NORMAL std 2: mean 0, variance 4 */
    TU_OK(nac_tensor_rand(T, NAC_RAND_NORMAL, 2.0f, 200));
    TU_OK(nac_tensor_to_host(T, x));
    double m = 0, v = 0;
    for (int64_t i = 0; i < n; i++) m += x[i];
    m /= n;
    for (int64_t i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
    v /= n - 1;
    if (!(fabs(m) < 0.04 && fabs(v - 4.0) < 0.1)) fail_msg("NORMAL: mean %g, variance %g", m, v);
    /* UNIFORM in [0, 3): range and mean 1.5 */
    TU_OK(nac_tensor_rand(T, NAC_RAND_UNIFORM, 3.0f, 300));
    TU_OK(nac_tensor_to_host(T, x));
    m = 0;
    for (int64_t i = 0; i < n; i++) {
        assert_true(x[i] >= 0.0f && x[i] < 3.0f);
        m += x[i];
    }
    m /= n;
    if (!(fabs(m - 1.5) < 0.02)) fail_msg("UNIFORM [0,3): mean %g", m);
    free(x);
    nac_tensor_free(T);
}

/* ---- optimiser: hand-computed steps ---- */
static void opt_steps(nac_opt_step h, const float *w0, const float *g, int64_t n, int steps,
                      float *out) {
    nac_tensor_t *W = t1(n, w0), *G = t1(n, g), *S1 = t1(n, NULL), *S2 = t1(n, NULL);
    for (int s = 1; s <= steps; s++) {
        h.t = s;
        TU_OK(nac_opt_update(W, G, S1, S2, &h));
    }
    TU_OK(nac_tensor_to_host(W, out));
    nac_tensor_free(W), nac_tensor_free(G), nac_tensor_free(S1), nac_tensor_free(S2);
}

static void test_sgd_hand(void **state) {
    (void)state;
    const float w0[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.25f};
    float got[2];
    nac_opt_step h = {.kind = NAC_OPT_SGD, .lr = 0.1f, .momentum = 0.9f};
    /* v1 = g, w1 = w0 - 0.1 g; v2 = 0.9 g + g, w2 = w1 - 0.1 v2 */
    opt_steps(h, w0, g, 2, 2, got);
    tu_close_f(got, (const float[]){0.855f, -2.0725f}, 2, 1e-6, 0, "SGD momentum, 2 steps");
    /* Nesterov: update = g + 0.9 v */
    h.nesterov = true;
    opt_steps(h, w0, g, 2, 1, got);
    tu_close_f(got, (const float[]){0.905f, -2.0475f}, 2, 1e-6, 0, "Nesterov, 1 step");
    opt_steps(h, w0, g, 2, 2, got);
    tu_close_f(got, (const float[]){0.7695f, -2.11525f}, 2, 1e-6, 0, "Nesterov, 2 steps");
    /* no momentum, weight decay 0.1: g' = (0.6, 0.05) */
    nac_opt_step p = {.kind = NAC_OPT_SGD, .lr = 0.1f, .weight_decay = 0.1f};
    nac_tensor_t *W = t1(2, w0), *G = t1(2, g);
    TU_OK(nac_opt_update(W, G, NULL, NULL, &p)); /* no state needed */
    TU_OK(nac_tensor_to_host(W, got));
    tu_close_f(got, (const float[]){0.94f, -2.005f}, 2, 1e-6, 0, "SGD weight decay");
    nac_tensor_free(W), nac_tensor_free(G);
}

static void test_adam_hand(void **state) {
    (void)state;
    /* with a constant gradient m^ = g and v^ = g^2 at every step: w -= lr sign(g) */
    const float w0[2] = {1.0f, -2.0f}, g[2] = {0.5f, -0.25f};
    float got[2];
    nac_opt_step h = {.kind = NAC_OPT_ADAM, .lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f,
                      .eps = 1e-8f};
    opt_steps(h, w0, g, 2, 1, got);
    tu_close_f(got, (const float[]){0.9f, -1.9f}, 2, 1e-6, 0, "Adam, 1 step");
    opt_steps(h, w0, g, 2, 2, got);
    tu_close_f(got, (const float[]){0.8f, -1.8f}, 2, 1e-6, 0, "Adam, 2 steps");
    /* Adam, weight decay 0.5 in the gradient: g' = (1.0, -1.25), same signs */
    h.weight_decay = 0.5f;
    opt_steps(h, w0, g, 2, 1, got);
    tu_close_f(got, (const float[]){0.9f, -1.9f}, 2, 1e-6, 0, "Adam with L2");
    /* AdamW: w *= 1 - 0.1*0.5 first, then the Adam step on g */
    h.kind = NAC_OPT_ADAMW;
    opt_steps(h, w0, g, 2, 1, got);
    tu_close_f(got, (const float[]){0.85f, -1.8f}, 2, 1e-6, 0, "AdamW, 1 step");
}

/* Several steps of every rule on odd-sized random tensors against a double reference. */
static void opt_ref(const nac_opt_step *h, double *w, const float *g, double *v1, double *v2,
                    int64_t n) {
    double wd = h->weight_decay, mom = h->momentum, lr = h->lr;
    if (h->kind == NAC_OPT_SGD) {
        for (int64_t i = 0; i < n; i++) {
            double gi = g[i] + wd * w[i];
            v1[i] = mom * v1[i] + gi;
            w[i] -= lr * (h->nesterov ? gi + mom * v1[i] : v1[i]);
        }
    } else if (h->kind == NAC_OPT_LARS) {
        double nw = 0, ng = 0, trust = 1;
        for (int64_t i = 0; i < n; i++) {
            double gi = g[i] + wd * w[i];
            nw += w[i] * w[i], ng += gi * gi;
        }
        if (h->lars_adapt && nw > 0 && ng > 0) trust = h->eta * sqrt(nw) / sqrt(ng);
        for (int64_t i = 0; i < n; i++) {
            v1[i] = mom * v1[i] + lr * trust * (g[i] + wd * w[i]);
            w[i] -= v1[i];
        }
    } else {
        bool dec = h->kind == NAC_OPT_ADAMW;
        double b1 = h->beta1, b2 = h->beta2;
        double bc1 = 1 - pow(b1, (double)h->t), bc2 = 1 - pow(b2, (double)h->t);
        for (int64_t i = 0; i < n; i++) {
            double gi = g[i] + (dec ? 0 : wd * w[i]);
            if (dec) w[i] *= 1 - lr * wd;
            v1[i] = b1 * v1[i] + (1 - b1) * gi;
            v2[i] = b2 * v2[i] + (1 - b2) * gi * gi;
            w[i] -= lr * (v1[i] / bc1) / (sqrt(v2[i] / bc2) + h->eps);
        }
    }
}

static void test_opt_random(void **state) {
    (void)state;
    enum { N = 37, STEPS = 4 };
    const nac_opt_step hs[] = {
        {.kind = NAC_OPT_SGD, .lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-2f},
        {.kind = NAC_OPT_SGD, .lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-2f,
         .nesterov = true},
        {.kind = NAC_OPT_LARS, .lr = 3.0f, .momentum = 0.9f, .weight_decay = 1e-6f,
         .eta = 1e-3f, .lars_adapt = true},
        {.kind = NAC_OPT_LARS, .lr = 0.1f, .momentum = 0.9f, .weight_decay = 1e-6f,
         .eta = 1e-3f, .lars_adapt = false},
        {.kind = NAC_OPT_ADAM, .lr = 1e-2f, .weight_decay = 1e-2f, .beta1 = 0.9f,
         .beta2 = 0.999f, .eps = 1e-8f},
        {.kind = NAC_OPT_ADAMW, .lr = 1e-2f, .weight_decay = 0.1f, .beta1 = 0.8f,
         .beta2 = 0.99f, .eps = 1e-6f},
    };
    for (size_t c = 0; c < sizeof hs / sizeof hs[0]; c++) {
        float w0[N], g[STEPS][N], got[N];
        tu_randn(w0, N, 60, 1.0f);
        double w[N], v1[N] = {0}, v2[N] = {0};
        for (int i = 0; i < N; i++) w[i] = w0[i];
        nac_tensor_t *W = t1(N, w0), *G = t1(N, NULL), *S1 = t1(N, NULL), *S2 = t1(N, NULL);
        nac_opt_step h = hs[c];
        for (int s = 0; s < STEPS; s++) {
            tu_randn(g[s], N, 61 + (uint64_t)s, 1.0f);
            TU_OK(nac_tensor_from_host(G, g[s]));
            h.t = s + 1;
            TU_OK(nac_opt_update(W, G, S1, S2, &h));
            opt_ref(&h, w, g[s], v1, v2, N);
        }
        TU_OK(nac_tensor_to_host(W, got));
        char what[64];
        snprintf(what, sizeof what, "optimiser case %zu after %d steps", c, STEPS);
        tu_close_d(got, w, N, 1e-5, 1e-6, what);
        nac_tensor_free(W), nac_tensor_free(G), nac_tensor_free(S1), nac_tensor_free(S2);
    }
}

/* ---- LARS against the PyTorch float64 golden ---- */
static cJSON *load_json(const char *name) { return tu_load_json(name); }

static double jnum(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v)) fail_msg("lars_step.json: %s is not a number", key);
    return v->valuedouble;
}

/* A JSON array of numbers into out (at most cap); returns the count. */
static int jvec(const cJSON *a, double *out, int cap) {
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > cap)
        fail_msg("lars_step.json: expected an array of at most %d numbers", cap);
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!cJSON_IsNumber(e)) fail_msg("lars_step.json: a non-number in an array");
        out[k++] = e->valuedouble;
    }
    return k;
}

static void test_lars_golden(void **state) {
    (void)state;
    cJSON *j = load_json("lars_step.json");
    nac_opt_step h = {.kind = NAC_OPT_LARS, .lr = (float)jnum(j, "lr"),
                      .momentum = (float)jnum(j, "momentum"),
                      .weight_decay = (float)jnum(j, "weight_decay"),
                      .eta = (float)jnum(j, "eeta"), .lars_adapt = true};
    const cJSON *w0 = cJSON_GetObjectItemCaseSensitive(j, "w0");
    const cJSON *grads = cJSON_GetObjectItemCaseSensitive(j, "grads");
    const cJSON *w3 = cJSON_GetObjectItemCaseSensitive(j, "w3");
    int np = cJSON_GetArraySize(w0), nsteps = cJSON_GetArraySize(grads);
    assert_int_equal(np, 3);
    assert_int_equal(nsteps, 3);
    assert_int_equal(cJSON_GetArraySize(w3), np);
    for (int p = 0; p < np; p++) {
        double buf[64], want[64];
        float f[64];
        int n = jvec(cJSON_GetArrayItem(w0, p), buf, 64);
        for (int i = 0; i < n; i++) f[i] = (float)buf[i];
        nac_tensor_t *W = t1(n, f), *G = t1(n, NULL), *V = t1(n, NULL);
        for (int s = 0; s < nsteps; s++) {
            const cJSON *gs = cJSON_GetArrayItem(grads, s);
            assert_int_equal(jvec(cJSON_GetArrayItem(gs, p), buf, 64), n);
            for (int i = 0; i < n; i++) f[i] = (float)buf[i];
            TU_OK(nac_tensor_from_host(G, f));
            TU_OK(nac_opt_update(W, G, V, NULL, &h));
        }
        assert_int_equal(jvec(cJSON_GetArrayItem(w3, p), want, 64), n);
        TU_OK(nac_tensor_to_host(W, f));
        char what[64];
        snprintf(what, sizeof what, "LARS golden, param %d after 3 steps", p);
        tu_close_d(f, want, n, 1e-6, 1e-7, what);
        nac_tensor_free(W), nac_tensor_free(G), nac_tensor_free(V);
    }
    cJSON_Delete(j);
}

/* ---- blocked weight layouts ---- */
/* A conv weight (5,3,3,3) in the backend's blocked weight layout (OIhw16i16o on the CPU:
 * 16x16x3x3 physical, mostly zero padding). */
static nac_tensor_t *blocked_weight(const float *data) {
    nac_tensor_t *t = nac_tensor_new4(be, 5, 3, 3, 3);
    assert_non_null(t);
    TU_OK(nac_tensor_relayout(t, NAC_LAYOUT_WEIGHT_BLOCKED));
    assert_false(tu_info(t).plain);
    assert_true(tu_info(t).bytes > 5 * 3 * 3 * 3 * sizeof(float));
    if (data) TU_OK(nac_tensor_from_host(t, data));
    return t;
}

/* The padding of a blocked tensor is zero iff its physical sum of |x| is the logical one. */
static void assert_padding_zero(const nac_tensor_t *t, const char *what) {
    float *h = host(t);
    double logical = 0, phys = 0;
    for (int64_t i = 0; i < nac_tensor_numel(t); i++) logical += fabs(h[i]);
    phys = tu_info(t).abs_sum;
    if (!(fabs(phys - logical) <= 1e-6 * logical)) fail_msg("%s: padding is not zero", what);
    free(h);
}

static void test_blocked_layouts(void **state) {
    (void)state;
    if (!tu_has_layouts(be)) {
        printf("skipped: backend %s has one layout only\n", nac_backend_name(be));
        skip();
    }
    enum { N = 5 * 3 * 3 * 3 };
    const int64_t dim[4] = {5, 3, 3, 3};
    float w0[N], g[N];
    tu_randn(w0, N, 70, 1.0f);
    tu_randn(g, N, 71, 1.0f);
    const nac_opt_step hs[] = {
        {.kind = NAC_OPT_SGD, .lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-2f,
         .nesterov = true},
        {.kind = NAC_OPT_LARS, .lr = 3.0f, .momentum = 0.9f, .weight_decay = 1e-6f,
         .eta = 1e-3f, .lars_adapt = true},
        {.kind = NAC_OPT_ADAM, .lr = 1e-2f, .weight_decay = 1e-2f, .beta1 = 0.9f,
         .beta2 = 0.999f, .eps = 1e-8f},
        {.kind = NAC_OPT_ADAMW, .lr = 1e-2f, .weight_decay = 0.1f, .beta1 = 0.9f,
         .beta2 = 0.999f, .eps = 1e-8f},
    };
    for (size_t c = 0; c < sizeof hs / sizeof hs[0]; c++) {
        /* reference: the same update on plain 4-D tensors */
        nac_tensor_t *PW = tu_tensor(be, 4, dim, w0), *PG = tu_tensor(be, 4, dim, g);
        nac_tensor_t *P1 = nac_tensor_new(be, 4, dim), *P2 = nac_tensor_new(be, 4, dim);
        /* blocked w and g; state unallocated; a second g plain (reordered on the fly) */
        nac_tensor_t *BW = blocked_weight(w0), *BG = blocked_weight(g);
        nac_tensor_t *B1 = nac_tensor_new(be, 4, dim), *B2 = nac_tensor_new(be, 4, dim);
        nac_tensor_t *XW = blocked_weight(w0);
        nac_tensor_t *X1 = nac_tensor_new(be, 4, dim), *X2 = nac_tensor_new(be, 4, dim);
        nac_opt_step h = hs[c];
        for (int s = 1; s <= 3; s++) {
            h.t = s;
            TU_OK(nac_opt_update(PW, PG, P1, P2, &h));
            TU_OK(nac_opt_update(BW, BG, B1, B2, &h));
            TU_OK(nac_opt_update(XW, PG, X1, X2, &h));
        }
        assert_int_equal(tu_info(B1).layout_id, tu_info(BW).layout_id);
        if (c >= 2) assert_int_equal(tu_info(B2).layout_id, tu_info(BW).layout_id);
        float *want = host(PW), *got = host(BW), *got2 = host(XW);
        char what[64];
        snprintf(what, sizeof what, "blocked optimiser case %zu", c);
        tu_close_f(got, want, N, 1e-6, 1e-7, what);
        tu_close_f(got2, want, N, 1e-6, 1e-7, "blocked w, plain g");
        assert_padding_zero(BW, what);
        assert_padding_zero(B1, "blocked momentum");
        free(want), free(got), free(got2);
        nac_tensor_t *all[] = {PW, PG, P1, P2, BW, BG, B1, B2, XW, X1, X2};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nac_tensor_free(all[i]);
    }

    /* sums, EMA and random fills over a blocked tensor see only the logical elements */
    nac_tensor_t *BW = blocked_weight(w0), *Y = t1(1, NULL);
    double s = 0, q = 0;
    for (int i = 0; i < N; i++) s += w0[i], q += (double)w0[i] * w0[i];
    float got;
    TU_OK(nac_sum_all(BW, Y));
    TU_OK(nac_tensor_item(Y, &got));
    assert_true(fabs(got - s) < 1e-5);
    TU_OK(nac_sumsq_all(BW, Y));
    TU_OK(nac_tensor_item(Y, &got));
    assert_true(fabs(got - q) < 1e-5 * q);

    nac_tensor_t *PW = tu_tensor(be, 4, dim, g);
    TU_OK(nac_ema_update(BW, PW, 0.9f)); /* blocked EMA copy, plain source */
    float *e = host(BW);
    double ew[N];
    for (int i = 0; i < N; i++) ew[i] = 0.9 * w0[i] + 0.1 * (double)g[i];
    tu_close_d(e, ew, N, 1e-6, 1e-7, "EMA into a blocked tensor");
    assert_padding_zero(BW, "EMA");
    free(e);

    const uint64_t key = 4242;
    TU_OK(nac_tensor_rand(BW, NAC_RAND_NORMAL, 0.1f, key));
    float *r = host(BW);
    for (int i = 0; i < N; i++) assert_true(r[i] == nac_rng_normal_at(key, (uint64_t)i) * 0.1f);
    assert_padding_zero(BW, "rand");
    free(r);
    nac_tensor_free(BW), nac_tensor_free(Y), nac_tensor_free(PW);
}

static void test_ema(void **state) {
    (void)state;
    enum { N = 29 };
    float wm[N], w[N], got[N];
    tu_randn(wm, N, 80, 1.0f);
    tu_randn(w, N, 81, 1.0f);
    nac_tensor_t *WM = t1(N, wm), *W = t1(N, w);
    TU_OK(nac_ema_update(WM, W, 0.99f));
    TU_OK(nac_ema_update(WM, W, 0.99f));
    double want[N];
    for (int i = 0; i < N; i++) {
        double m = 0.99 * wm[i] + 0.01 * (double)w[i];
        want[i] = 0.99 * m + 0.01 * (double)w[i];
    }
    TU_OK(nac_tensor_to_host(WM, got));
    tu_close_d(got, want, N, 1e-6, 1e-7, "EMA, 2 steps");
    nac_tensor_free(WM), nac_tensor_free(W);
}

/* ---- bad shapes through the public wrappers ---- */
#define EXPECT_INVALID(expr, text)                                                        \
    do {                                                                                  \
        nac_status s_ = (expr);                                                           \
        if (s_ != NAC_ERR_INVALID) fail_msg("%s returned %d, not NAC_ERR_INVALID", #expr, \
                                             (int)s_);                                    \
        if (!strstr(nac_last_error(), text))                                              \
            fail_msg("%s: message \"%s\" lacks \"%s\"", #expr, nac_last_error(), text);   \
    } while (0)

static void test_shape_errors(void **state) {
    (void)state;
    nac_tensor_t *A = t2(3, 4, NULL), *B = t2(5, 6, NULL), *C = t2(3, 6, NULL);
    nac_tensor_t *V3 = t1(3, NULL), *V4 = t1(4, NULL), *V5 = t1(5, NULL), *S2 = t1(2, NULL);
    nac_tensor_t *W = t2(5, 4, NULL), *Y = t2(3, 5, NULL), *DW = t2(4, 5, NULL);
    nac_tensor_t *X34 = t2(3, 4, NULL), *M1 = t2(3, 4, NULL), *M2 = t2(3, 4, NULL);
    nac_tensor_t *all[] = {A, B, C, V3, V4, V5, S2, W, Y, DW, X34, M1, M2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) TU_OK(nac_tensor_fill(all[i], 1.0f));

    EXPECT_INVALID(nac_gemm(false, false, 1, A, B, 0, C), "nac_gemm");
    EXPECT_INVALID(nac_gemm(false, false, 1, V3, B, 0, C), "must be 2-D");
    EXPECT_INVALID(nac_linear_forward(A, B, NULL, C), "does not take input");
    EXPECT_INVALID(nac_linear_forward(A, W, V4, Y), "b must have shape (5)");
    EXPECT_INVALID(nac_linear_forward(A, W, NULL, C), "y must have shape (3,5)");
    EXPECT_INVALID(nac_linear_backward(A, W, Y, NULL, DW, NULL), "dw must have shape (5,4)");
    EXPECT_INVALID(nac_linear_backward(A, W, Y, B, W, NULL), "dx must have shape (3,4)");
    EXPECT_INVALID(nac_row_logsumexp(A, V4), "nac_row_logsumexp");
    EXPECT_INVALID(nac_row_softmax(A, C), "nac_row_softmax");
    EXPECT_INVALID(nac_row_sum(A, V5), "nac_row_sum");
    EXPECT_INVALID(nac_row_broadcast(NAC_BIN_ADD, A, V3, M1), "v must have shape (4)");
    EXPECT_INVALID(nac_col_broadcast(NAC_BIN_ADD, A, V4, M1), "v must have shape (3)");
    EXPECT_INVALID(nac_row_broadcast((nac_binop)99, A, V4, M1), "unknown binary op");
    EXPECT_INVALID(nac_sum_all(A, S2), "nac_sum_all");
    EXPECT_INVALID(nac_sumsq_all(A, V3), "nac_sumsq_all");
    EXPECT_INVALID(nac_ema_update(A, B, 0.9f), "nac_ema_update");
    EXPECT_INVALID(nac_tensor_rand(A, NAC_RAND_SIGN, 1.5f, 1), "flip probability");
    EXPECT_INVALID(nac_tensor_rand(A, (nac_rand)7, 0.0f, 1), "unknown distribution");
    nac_opt_step adam = {.kind = NAC_OPT_ADAM, .lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f,
                         .eps = 1e-8f, .t = 1};
    nac_opt_step lars = {.kind = NAC_OPT_LARS, .lr = 0.1f, .momentum = 0.9f, .eta = 1e-3f};
    nac_opt_step bad = {.kind = (nac_opt_kind)9, .lr = 0.1f};
    EXPECT_INVALID(nac_opt_update(A, B, NULL, NULL, &lars), "g must have shape (3,4)");
    EXPECT_INVALID(nac_opt_update(X34, A, NULL, NULL, &lars), "momentum buffer");
    EXPECT_INVALID(nac_opt_update(X34, A, M1, NULL, &adam), "second-moment");
    EXPECT_INVALID(nac_opt_update(X34, A, M1, V3, &adam), "s2 must have shape (3,4)");
    EXPECT_INVALID(nac_opt_update(X34, A, M1, M2, &bad), "unknown optimiser kind");
    adam.t = 0;
    EXPECT_INVALID(nac_opt_update(X34, A, M1, M2, &adam), "t >= 1");
    /* nothing was changed by the failed calls */
    float h[12];
    TU_OK(nac_tensor_to_host(X34, h));
    for (int i = 0; i < 12; i++) assert_true(h[i] == 1.0f);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nac_tensor_free(all[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_linear_forward),
        cmocka_unit_test(test_linear_backward),
        cmocka_unit_test(test_row_ops),
        cmocka_unit_test(test_row_infinities),
        cmocka_unit_test(test_broadcasts),
        cmocka_unit_test(test_sum_all),
        cmocka_unit_test(test_rand_determinism),
        cmocka_unit_test(test_rand_statistics),
        cmocka_unit_test(test_sgd_hand),
        cmocka_unit_test(test_adam_hand),
        cmocka_unit_test(test_opt_random),
        cmocka_unit_test(test_lars_golden),
        cmocka_unit_test(test_blocked_layouts),
        cmocka_unit_test(test_ema),
        cmocka_unit_test(test_shape_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
