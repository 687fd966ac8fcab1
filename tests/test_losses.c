/* The four pretraining losses (nac/loss.h): the PyTorch float64 references in tests/data
 * (loss, every gradient, the queue after the step), central finite differences of the
 * backend forward, the ring queue, the flip mask, and bad configurations and inputs. */
#include "tests/testutil.h"

#include <cjson/cJSON.h>

#include "nac/loss.h"
#include "nac/queue.h"

/* ---- golden files ---- */

static cJSON *load_golden(const char *name) { return tu_load_json(name); }

static double num(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v)) fail_msg("golden: %s is not a number", key);
    return v->valuedouble;
}

/* The array `key`, which must hold n numbers; malloc'ed. */
static double *arr(const cJSON *j, const char *key, int64_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        fail_msg("golden: %s is not an array of %lld numbers", key, (long long)n);
    double *out = malloc((size_t)n * sizeof *out);
    assert_non_null(out);
    int64_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) out[i++] = e->valuedouble;
    return out;
}

/* [a; b] of two (K, D) arrays in the file, as doubles (2K*D). */
static double *stacked(const cJSON *j, const char *a, const char *b, int64_t kd) {
    double *x = arr(j, a, kd), *y = arr(j, b, kd);
    double *out = malloc((size_t)(2 * kd) * sizeof *out);
    assert_non_null(out);
    memcpy(out, x, (size_t)kd * sizeof *out);
    memcpy(out + kd, y, (size_t)kd * sizeof *out);
    free(x);
    free(y);
    return out;
}

static nac_tensor_t *tensor_d(nac_backend_t *be, int64_t rows, int64_t cols, const double *v) {
    float *h = malloc((size_t)(rows * cols) * sizeof *h);
    assert_non_null(h);
    for (int64_t i = 0; i < rows * cols; i++) h[i] = (float)v[i];
    int64_t dim[2] = {rows, cols};
    nac_tensor_t *t = tu_tensor(be, 2, dim, h);
    free(h);
    return t;
}

static void set_tensor_d(nac_tensor_t *t, const double *v) {
    int64_t n = nac_tensor_numel(t);
    float *h = malloc((size_t)n * sizeof *h);
    assert_non_null(h);
    for (int64_t i = 0; i < n; i++) h[i] = (float)v[i];
    TU_OK(nac_tensor_from_host(t, h));
    free(h);
}

/* Compare a backend tensor with float64 reference values; prints the largest relative
 * error (elements below `floor_` in magnitude count relative to floor_). */
static void expect_tensor(const nac_tensor_t *t, const double *want, double rtol, double atol,
                          const char *what) {
    int64_t n = nac_tensor_numel(t);
    float *h = malloc((size_t)n * sizeof *h);
    assert_non_null(h);
    TU_OK(nac_tensor_to_host(t, h));
    printf("  %-22s max rel err %.3g\n", what, tu_max_rel(h, want, n, 1e-3));
    tu_close_d(h, want, n, rtol, atol, what);
    free(h);
}

static void expect_loss(const nac_loss_t *L, double want, const char *what) {
    float got;
    TU_OK(nac_loss_item(L, &got));
    printf("  %-22s %.9g (want %.9g, rel err %.3g)\n", what, (double)got, want,
           fabs(got - want) / fabs(want));
    tu_close_d(&got, &want, 1, 1e-5, 0.0, what);
}

/* Golden gradients are float64; ours are float32 sums of O(2K + D) float32 products, so
 * each element carries an absolute error of a few ulps of the gradient's scale, not of
 * its own size. Elements near zero (here down to 1e-5 of the largest) therefore get
 * atol = 1e-6 * max|grad| (about 20 float32 ulps at that scale) beside rtol 1e-5. */
static double grad_atol(const double *want, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(want[i]));
    return 1e-6 * m;
}

static void expect_grad(const nac_tensor_t *t, const double *want, const char *what) {
    int64_t n = nac_tensor_numel(t);
    expect_tensor(t, want, 1e-5, grad_atol(want, n), what);
}

/* ---- golden: NAC ---- */

static void test_nac_golden(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    cJSON *g = load_golden("nac_loss.json");
    int64_t K = (int64_t)num(g, "K"), D = (int64_t)num(g, "D"), n = 2 * K * D;
    nac_loss_config cfg = {.kind = NAC_LOSS_NAC, .k = K, .d = D, .p = (float)num(g, "p")};
    nac_loss_t *L = NULL;
    TU_OK(nac_loss_create(be, &cfg, &L));
    double *o = stacked(g, "o1", "o2", K * D), *l = stacked(g, "l1", "l2", K * D);
    double *mask = arr(g, "mask", n);
    nac_tensor_t *to = tensor_d(be, 2 * K, D, o), *tl = tensor_d(be, 2 * K, D, l);
    nac_tensor_t *tm = tensor_d(be, 2 * K, D, mask);
    nac_loss_inputs in = {.o = to, .l = tl, .mask = tm};
    TU_OK(nac_loss_forward(L, &in));
    assert_ptr_equal(nac_loss_mask(L), tm);
    expect_loss(L, num(g, "loss"), "nac loss");
    TU_OK(nac_loss_backward(L));
    double *go = stacked(g, "grad_o1", "grad_o2", K * D);
    double *gl = stacked(g, "grad_l1", "grad_l2", K * D);
    expect_grad(nac_loss_grad_o(L), go, "nac dL/do");
    expect_grad(nac_loss_grad_l(L), gl, "nac dL/dl");
    assert_null(nac_loss_queue(L));
    free(o), free(l), free(mask), free(go), free(gl);
    nac_tensor_free(to), nac_tensor_free(tl), nac_tensor_free(tm);
    nac_loss_free(L);
    cJSON_Delete(g);
    nac_backend_free(be);
}

/* ---- golden: NAC-MQ ---- */

static void test_nac_mq_golden(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    cJSON *g = load_golden("nac_mq_loss.json");
    int64_t K = (int64_t)num(g, "K"), D = (int64_t)num(g, "D"), M = (int64_t)num(g, "M");
    int64_t kd = K * D;
    nac_loss_config cfg = {.kind = NAC_LOSS_NAC_MQ, .k = K, .d = D, .m = M,
                           .p = (float)num(g, "p"), .lambda = (float)num(g, "lambda")};
    nac_loss_t *L = NULL;
    TU_OK(nac_loss_create(be, &cfg, &L));
    double *o = stacked(g, "o1", "o2", kd), *l = stacked(g, "l1", "l2", kd);
    double *k = stacked(g, "k1", "k2", kd), *lk = stacked(g, "lk1", "lk2", kd);
    double *mask = arr(g, "mask", 2 * kd);
    double *q0 = arr(g, "queue_before", M * D), *q1 = arr(g, "queue_after", M * D);
    nac_tensor_t *t[5] = {tensor_d(be, 2 * K, D, o), tensor_d(be, 2 * K, D, l),
                          tensor_d(be, 2 * K, D, k), tensor_d(be, 2 * K, D, lk),
                          tensor_d(be, 2 * K, D, mask)};
    nac_queue_t *q = nac_loss_queue(L);
    assert_non_null(q);
    assert_int_equal(nac_queue_size(q), M);
    set_tensor_d(q->keys, q0);
    q->ptr = 0;
    nac_loss_inputs in = {.o = t[0], .l = t[1], .k = t[2], .lk = t[3], .mask = t[4]};
    TU_OK(nac_loss_forward(L, &in));
    expect_loss(L, num(g, "loss"), "nac_mq loss");
    expect_tensor(q->keys, q1, 1e-6, 1e-7, "nac_mq queue after");
    assert_int_equal(q->ptr, (2 * K) % M);
    TU_OK(nac_loss_backward(L));
    double *go = stacked(g, "grad_o1", "grad_o2", kd), *gl = stacked(g, "grad_l1", "grad_l2", kd);
    expect_grad(nac_loss_grad_o(L), go, "nac_mq dL/do");
    expect_grad(nac_loss_grad_l(L), gl, "nac_mq dL/dl");
    expect_tensor(q->keys, q1, 1e-6, 1e-7, "nac_mq queue after bwd");
    assert_int_equal(q->ptr, (2 * K) % M);
    free(o), free(l), free(k), free(lk), free(mask), free(q0), free(q1), free(go), free(gl);
    for (int i = 0; i < 5; i++) nac_tensor_free(t[i]);
    nac_loss_free(L);
    cJSON_Delete(g);
    nac_backend_free(be);
}

/* ---- golden: SimCLR ---- */

static void test_simclr_golden(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    cJSON *g = load_golden("simclr_loss.json");
    int64_t K = (int64_t)num(g, "K"), D = (int64_t)num(g, "D");
    nac_loss_config cfg = {.kind = NAC_LOSS_SIMCLR, .k = K, .d = D, .tau = (float)num(g, "tau")};
    nac_loss_t *L = NULL;
    TU_OK(nac_loss_create(be, &cfg, &L));
    double *o = stacked(g, "o1", "o2", K * D);
    nac_tensor_t *to = tensor_d(be, 2 * K, D, o);
    nac_loss_inputs in = {.o = to};
    TU_OK(nac_loss_forward(L, &in));
    expect_loss(L, num(g, "loss"), "simclr loss");
    TU_OK(nac_loss_backward(L));
    double *go = stacked(g, "grad_o1", "grad_o2", K * D);
    expect_grad(nac_loss_grad_o(L), go, "simclr dL/do");
    assert_null(nac_loss_grad_l(L));
    assert_null(nac_loss_mask(L));
    free(o), free(go);
    nac_tensor_free(to);
    nac_loss_free(L);
    cJSON_Delete(g);
    nac_backend_free(be);
}

/* ---- golden: MoCo-v2 ---- */

static void test_moco_golden(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    cJSON *g = load_golden("mocov2_loss.json");
    int64_t K = (int64_t)num(g, "K"), D = (int64_t)num(g, "D"), M = (int64_t)num(g, "M");
    nac_loss_config cfg = {.kind = NAC_LOSS_MOCO, .k = K, .d = D, .m = M,
                           .tau = (float)num(g, "tau")};
    nac_loss_t *L = NULL;
    TU_OK(nac_loss_create(be, &cfg, &L));
    double *o = stacked(g, "o1", "o2", K * D), *k = stacked(g, "k1", "k2", K * D);
    double *q0 = arr(g, "queue_before", M * D), *q1 = arr(g, "queue_after", M * D);
    nac_tensor_t *to = tensor_d(be, 2 * K, D, o), *tk = tensor_d(be, 2 * K, D, k);
    nac_queue_t *q = nac_loss_queue(L);
    set_tensor_d(q->keys, q0);
    q->ptr = 0;
    nac_loss_inputs in = {.o = to, .k = tk};
    TU_OK(nac_loss_forward(L, &in));
    expect_loss(L, num(g, "loss"), "moco loss");
    expect_tensor(q->keys, q1, 1e-6, 1e-7, "moco queue after");
    assert_int_equal(q->ptr, (2 * K) % M);
    TU_OK(nac_loss_backward(L));
    double *go = stacked(g, "grad_o1", "grad_o2", K * D);
    expect_grad(nac_loss_grad_o(L), go, "moco dL/do");
    /* the backward borrows the old rows for its product and must put the new ones back */
    expect_tensor(q->keys, q1, 1e-6, 1e-7, "moco queue after bwd");
    assert_int_equal(q->ptr, (2 * K) % M);
    free(o), free(k), free(q0), free(q1), free(go);
    nac_tensor_free(to), nac_tensor_free(tk);
    nac_loss_free(L);
    cJSON_Delete(g);
    nac_backend_free(be);
}

/* ---- central finite differences of the backend forward ---- */

enum { FD_K = 3, FD_D = 5, FD_M = 8, FD_N = 2 * FD_K * FD_D, FD_PTR = 5 };

typedef struct fd_case {
    nac_loss_t *L;
    nac_tensor_t *t[5]; /* o, l, k, lk, mask */
    float h[4][FD_N];   /* host o, l, k, lk */
    float *queue0;      /* the queue every forward starts from (ptr FD_PTR: wraps) */
} fd_case;

static float fd_loss(fd_case *c) {
    nac_queue_t *q = nac_loss_queue(c->L);
    if (q) {
        TU_OK(nac_tensor_from_host(q->keys, c->queue0));
        q->ptr = FD_PTR;
    }
    for (int i = 0; i < 4; i++) TU_OK(nac_tensor_from_host(c->t[i], c->h[i]));
    nac_loss_inputs in = {.o = c->t[0], .l = c->t[1], .k = c->t[2], .lk = c->t[3],
                          .mask = c->t[4]};
    TU_OK(nac_loss_forward(c->L, &in));
    float v;
    TU_OK(nac_loss_item(c->L, &v));
    return v;
}

/* Richardson-extrapolated central difference: O(h^4) truncation, so h can be large
 * enough (0.05) that float32 rounding of the loss (~1e-6) costs only ~1e-5. */
static double fd_grad(fd_case *c, int which, int e) {
    const double h = 0.05;
    float x0 = c->h[which][e];
    double d[2];
    for (int s = 0; s < 2; s++) {
        double hh = s ? h / 2 : h;
        c->h[which][e] = (float)(x0 + hh);
        double hp = (double)c->h[which][e] - x0; /* the step float32 actually took */
        double lp = fd_loss(c);
        c->h[which][e] = (float)(x0 - hh);
        double hm = x0 - (double)c->h[which][e];
        double lm = fd_loss(c);
        d[s] = (lp - lm) / (hp + hm);
    }
    c->h[which][e] = x0;
    return (4 * d[1] - d[0]) / 3;
}

static void fd_run(nac_loss_kind kind) {
    nac_backend_t *be = tu_backend();
    nac_loss_config cfg = {.kind = kind, .k = FD_K, .d = FD_D, .m = FD_M, .p = 0.2f,
                           .lambda = 0.1f, .tau = kind == NAC_LOSS_MOCO ? 0.2f : 0.5f};
    fd_case c = {0};
    TU_OK(nac_loss_create(be, &cfg, &c.L));
    int64_t dim[2] = {2 * FD_K, FD_D};
    for (int i = 0; i < 4; i++) {
        tu_randn(c.h[i], FD_N, 1000 + (uint64_t)kind * 10 + (uint64_t)i, 1.0f);
        c.t[i] = tu_tensor(be, 2, dim, c.h[i]);
    }
    c.t[4] = tu_tensor(be, 2, dim, NULL);
    TU_OK(nac_tensor_rand(c.t[4], NAC_RAND_SIGN, cfg.p, 4242));
    nac_queue_t *q = nac_loss_queue(c.L);
    if (q) {
        TU_OK(nac_queue_reset(q, 1.0f, kind == NAC_LOSS_MOCO, 777));
        c.queue0 = malloc(FD_M * FD_D * sizeof(float));
        assert_non_null(c.queue0);
        TU_OK(nac_tensor_to_host(q->keys, c.queue0));
    }
    float l0 = fd_loss(&c);
    assert_true(isfinite(l0));
    TU_OK(nac_loss_backward(c.L));
    float g[2][FD_N];
    TU_OK(nac_tensor_to_host(nac_loss_grad_o(c.L), g[0]));
    int nin = (kind == NAC_LOSS_NAC || kind == NAC_LOSS_NAC_MQ) ? 2 : 1;
    if (nin == 2) TU_OK(nac_tensor_to_host(nac_loss_grad_l(c.L), g[1]));
    if (kind == NAC_LOSS_NAC_MQ) {
        /* Eq. 20's variational term uses z~ detached, so finite differences of the loss
         * value also see -(1/N) sum z~ * l_swapped through o: add that derivative,
         * -(1/N) mask * l_swapped * (1 - tanh(o)^2), to the backward's dL/do. */
        float m[FD_N];
        TU_OK(nac_tensor_to_host(c.t[4], m));
        for (int e = 0; e < FD_N; e++) {
            int row = e / FD_D, col = e % FD_D, other = (row + FD_K) % (2 * FD_K);
            double z = tanh(c.h[0][e]), lsw = c.h[1][other * FD_D + col];
            g[0][e] += (float)(-m[e] * lsw * (1 - z * z) / (2 * FD_K));
        }
    }
    double gmax = 0, worst = 0;
    for (int w = 0; w < nin; w++)
        for (int e = 0; e < FD_N; e++) gmax = fmax(gmax, fabs(g[w][e]));
    assert_true(gmax > 1e-3); /* a vanishing gradient would make the check vacuous */
    for (int w = 0; w < nin; w++)
        for (int e = 0; e < FD_N; e++) {
            double fd = fd_grad(&c, w, e), err = fabs(fd - g[w][e]);
            worst = fmax(worst, err / gmax);
            if (err > 2e-3 * gmax + 1e-2 * fabs(fd))
                fail_msg("%s: d/d%s[%d]: backward %.7g, finite differences %.7g",
                         nac_loss_kind_name(kind), w ? "l" : "o", e, (double)g[w][e], fd);
        }
    printf("  %-8s finite differences: max |fd - grad| / max|grad| = %.3g (max|grad| %.3g)\n",
           nac_loss_kind_name(kind), worst, gmax);
    /* the same inputs give the same loss again (determinism, queue restored) */
    assert_true(fd_loss(&c) == l0);
    free(c.queue0);
    for (int i = 0; i < 5; i++) nac_tensor_free(c.t[i]);
    nac_loss_free(c.L);
    nac_backend_free(be);
}

static void test_fd_nac(void **state) { (void)state; fd_run(NAC_LOSS_NAC); }
static void test_fd_nac_mq(void **state) { (void)state; fd_run(NAC_LOSS_NAC_MQ); }
static void test_fd_simclr(void **state) { (void)state; fd_run(NAC_LOSS_SIMCLR); }
static void test_fd_moco(void **state) { (void)state; fd_run(NAC_LOSS_MOCO); }

/* ---- the ring queue ---- */

static void test_queue_ring(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    enum { M = 5, D = 3, R = 2 };
    nac_queue_t *q = NULL;
    TU_OK(nac_queue_create(be, M, D, &q));
    float model[M * D] = {0}, rows[R * D], got[M * D];
    int64_t dim[2] = {R, D};
    nac_tensor_t *src = tu_tensor(be, 2, dim, NULL), *back = tu_tensor(be, 2, dim, NULL);
    int64_t ptr = 0;
    for (int step = 0; step < 4; step++) { /* 4 pushes of 2 into 5 rows: wraps twice */
        for (int i = 0; i < R * D; i++) rows[i] = (float)(100 * step + i);
        TU_OK(nac_tensor_from_host(src, rows));
        TU_OK(nac_queue_push(q, src));
        for (int r = 0; r < R; r++)
            memcpy(&model[((ptr + r) % M) * D], &rows[r * D], D * sizeof(float));
        ptr = (ptr + R) % M;
        assert_int_equal(q->ptr, ptr);
        TU_OK(nac_tensor_to_host(q->keys, got));
        tu_close_f(got, model, M * D, 0, 0, "queue contents");
    }
    /* reading the last write back (it wrapped: rows 4, 0) */
    TU_OK(nac_queue_read(q, (ptr + M - R) % M, back));
    TU_OK(nac_tensor_to_host(back, got));
    tu_close_f(got, rows, R * D, 0, 0, "queue read");
    /* more rows than the queue holds, or a start outside it, are errors */
    int64_t big[2] = {M + 1, D};
    nac_tensor_t *too_many = tu_tensor(be, 2, big, NULL);
    TU_OK(nac_tensor_fill(too_many, 1.0f));
    assert_int_equal(nac_queue_push(q, too_many), NAC_ERR_INVALID);
    assert_int_equal(nac_queue_write(q, M, src), NAC_ERR_INVALID);
    /* reset: normalised rows */
    TU_OK(nac_queue_reset(q, 1e-3f, true, 9));
    assert_int_equal(q->ptr, 0);
    TU_OK(nac_tensor_to_host(q->keys, got));
    for (int r = 0; r < M; r++) {
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)got[r * D + d] * got[r * D + d];
        assert_true(fabs(s - 1) < 1e-5);
    }
    nac_tensor_free(src), nac_tensor_free(back), nac_tensor_free(too_many);
    nac_queue_free(q);
    nac_backend_free(be);
}

/* The objectives' initial queues: NAC-MQ codes at the official 1e-3 scale, MoCo-v2 unit
 * keys. */
static void test_queue_initial_scale(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    enum { M = 4096, D = 128 };
    nac_queue_t *q;
    TU_OK(nac_queue_create(be, M, D, &q));
    float *got = malloc((size_t)M * D * sizeof *got);
    TU_OK(nac_queue_reset_for(q, false, 5));
    TU_OK(nac_tensor_to_host(q->keys, got));
    double ss = 0, mean = 0;
    for (int64_t i = 0; i < (int64_t)M * D; i++) {
        ss += (double)got[i] * got[i];
        mean += got[i];
    }
    double sd = sqrt(ss / ((double)M * D));
    if (!(fabs(sd - 1e-3) < 2e-5)) fail_msg("NAC-MQ queue sd %g, want 1e-3", sd);
    assert_true(fabs(mean / ((double)M * D)) < 2e-5);
    TU_OK(nac_queue_reset_for(q, true, 5));
    TU_OK(nac_tensor_to_host(q->keys, got));
    for (int r = 0; r < M; r += 97) {
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)got[r * D + d] * got[r * D + d];
        assert_true(fabs(s - 1) < 1e-5);
    }
    free(got);
    nac_queue_free(q);
    nac_backend_free(be);
}

/* ---- the flip mask ---- */

static void test_flip_mask(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    enum { R = 1000, D = 128 };
    const float p = 0.1f;
    int64_t dim[2] = {R, D};
    nac_tensor_t *a = tu_tensor(be, 2, dim, NULL), *b = tu_tensor(be, 2, dim, NULL);
    float *ha = malloc(R * D * sizeof *ha), *hb = malloc(R * D * sizeof *hb);
    assert_non_null(ha), assert_non_null(hb);
    TU_OK(nac_tensor_rand(a, NAC_RAND_SIGN, p, 31337));
    TU_OK(nac_tensor_rand(b, NAC_RAND_SIGN, p, 31337));
    TU_OK(nac_tensor_to_host(a, ha));
    TU_OK(nac_tensor_to_host(b, hb));
    assert_memory_equal(ha, hb, R * D * sizeof *ha);
    int64_t flips = 0;
    for (int i = 0; i < R * D; i++) {
        assert_true(ha[i] == 1.0f || ha[i] == -1.0f);
        flips += ha[i] < 0;
    }
    /* binomial: sd = sqrt(p(1-p)/n) = 8.4e-4; 6 sd */
    double frac = (double)flips / (R * D);
    printf("  P(-1) = %.5f for p = %.2f over %d draws\n", frac, (double)p, R * D);
    assert_true(fabs(frac - p) < 5e-3);
    TU_OK(nac_tensor_rand(b, NAC_RAND_SIGN, p, 31338));
    TU_OK(nac_tensor_to_host(b, hb));
    int differ = 0;
    for (int i = 0; i < R * D; i++) differ += ha[i] != hb[i];
    assert_true(differ > R * D / 10); /* another key, another mask (expect 18%) */

    /* a loss drawing its own mask from a key uses exactly that mask */
    enum { K = 4, LD = 8 };
    nac_loss_config cfg = {.kind = NAC_LOSS_NAC, .k = K, .d = LD, .p = 0.25f};
    nac_loss_t *L = NULL;
    TU_OK(nac_loss_create(be, &cfg, &L));
    int64_t idim[2] = {2 * K, LD};
    float ho[2 * K * LD], hl[2 * K * LD], hm[2 * K * LD], hm2[2 * K * LD];
    tu_randn(ho, 2 * K * LD, 5, 1.0f);
    tu_randn(hl, 2 * K * LD, 6, 1.0f);
    nac_tensor_t *to = tu_tensor(be, 2, idim, ho), *tl = tu_tensor(be, 2, idim, hl);
    nac_tensor_t *tm = tu_tensor(be, 2, idim, NULL);
    nac_loss_inputs in = {.o = to, .l = tl, .mask = NULL, .key = 99};
    TU_OK(nac_loss_forward(L, &in));
    float v_drawn, v_given;
    TU_OK(nac_loss_item(L, &v_drawn));
    TU_OK(nac_tensor_to_host(nac_loss_mask(L), hm));
    TU_OK(nac_tensor_rand(tm, NAC_RAND_SIGN, cfg.p, 99));
    TU_OK(nac_tensor_to_host(tm, hm2));
    assert_memory_equal(hm, hm2, sizeof hm);
    in.mask = tm;
    TU_OK(nac_loss_forward(L, &in));
    TU_OK(nac_loss_item(L, &v_given));
    assert_true(v_drawn == v_given);
    nac_tensor_free(to), nac_tensor_free(tl), nac_tensor_free(tm);
    nac_loss_free(L);
    free(ha), free(hb);
    nac_tensor_free(a), nac_tensor_free(b);
    nac_backend_free(be);
}

/* ---- bad configurations and inputs ---- */

static void test_errors(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    nac_loss_t *L = NULL;
    nac_loss_config bad[] = {
        {.kind = NAC_LOSS_NAC_MQ, .k = 4, .d = 8, .m = 7, .p = 0.1f}, /* M < 2K */
        {.kind = NAC_LOSS_NAC, .k = 4, .d = 8, .p = 0.5f},            /* c = 0 */
        {.kind = NAC_LOSS_NAC, .k = 4, .d = 8, .p = 0.0f},            /* log(1/0) */
        {.kind = NAC_LOSS_SIMCLR, .k = 4, .d = 8, .tau = 0.0f},
        {.kind = NAC_LOSS_MOCO, .k = 0, .d = 8, .m = 8, .tau = 0.2f},
        {.kind = NAC_LOSS_NAC_MQ, .k = 4, .d = 8, .m = 8, .p = 0.1f, .lambda = -1.0f},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(nac_loss_create(be, &bad[i], &L), NAC_ERR_INVALID);
        assert_null(L);
    }
    nac_loss_config cfg = {.kind = NAC_LOSS_NAC, .k = 4, .d = 8, .p = 0.1f};
    TU_OK(nac_loss_create(be, &cfg, &L));
    assert_int_equal(nac_loss_backward(L), NAC_ERR_INVALID); /* nothing to differentiate */
    int64_t good[2] = {8, 8}, wrong[2] = {4, 8};
    nac_tensor_t *o = tu_tensor(be, 2, wrong, NULL), *l = tu_tensor(be, 2, good, NULL);
    TU_OK(nac_tensor_fill(o, 0.5f));
    TU_OK(nac_tensor_fill(l, 0.5f));
    nac_loss_inputs in = {.o = o, .l = l, .key = 1};
    assert_int_equal(nac_loss_forward(L, &in), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "input o must be (2K, D) = (8, 8), got (4,8)"));
    in.o = l;
    in.l = NULL;
    assert_int_equal(nac_loss_forward(L, &in), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "input l is NULL"));
    assert_int_equal(nac_loss_backward(L), NAC_ERR_INVALID); /* the forward failed */
    nac_tensor_free(o), nac_tensor_free(l);
    nac_loss_free(L);
    nac_loss_free(NULL);
    nac_queue_free(NULL);
    nac_backend_free(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nac_golden),   cmocka_unit_test(test_nac_mq_golden),
        cmocka_unit_test(test_simclr_golden), cmocka_unit_test(test_moco_golden),
        cmocka_unit_test(test_fd_nac),       cmocka_unit_test(test_fd_nac_mq),
        cmocka_unit_test(test_fd_simclr),    cmocka_unit_test(test_fd_moco),
        cmocka_unit_test(test_queue_ring),   cmocka_unit_test(test_flip_mask),
        cmocka_unit_test(test_queue_initial_scale),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
