/* Linear probe: the per-class validation split, scores on hand-made logits, one and two
 * SGD steps against a host softmax cross-entropy (padding of the last batch included),
 * separable features reaching 100%, the lr search picking the best validation rate, and
 * Fashion-MNIST raw pixels landing where a linear classifier on pixels does. */
#include "tests/testutil.h"

#include <sys/stat.h>

#include "data/dataset.h"
#include "data/norm.h"
#include "eval/probe.h"

static nac_backend_t *g_be;

/* One thread: the probe's ops are tiny, and a second spinning OpenMP thread only costs time
 * on a busy machine. */
static int setup(void **state) {
    (void)state;
    nac_backend_options o = {.threads = 1};
    return nac_backend_create(tu_backend_name(), &o, &g_be) == NAC_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    nac_backend_free(g_be);
    return 0;
}

static void test_split(void **state) {
    (void)state;
    enum { N = 103 };
    int32_t labels[N];
    int64_t counts[3] = {0};
    for (int i = 0; i < N; i++) labels[i] = i < 50 ? 0 : i < 100 ? 1 : 2; /* 50, 50, 3 */
    int64_t tr[N], va[N], ntr, nva;
    TU_OK(nac_probe_split(labels, N, 4, 0.1f, 7, tr, &ntr, va, &nva));
    /* 5 + 5 + round(0.3) -> at least 1; class 3 is empty */
    assert_int_equal(nva, 11);
    assert_int_equal(ntr, N - 11);
    unsigned char seen[N] = {0};
    for (int64_t i = 0; i < nva; i++) {
        counts[labels[va[i]]]++;
        seen[va[i]]++;
        if (i) assert_true(va[i] > va[i - 1]);
    }
    for (int64_t i = 0; i < ntr; i++) {
        seen[tr[i]]++;
        if (i) assert_true(tr[i] > tr[i - 1]);
    }
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);
    assert_int_equal(counts[0], 5);
    assert_int_equal(counts[1], 5);
    assert_int_equal(counts[2], 1);
    /* the same seed gives the same split, another seed another one */
    int64_t tr2[N], va2[N], ntr2, nva2;
    TU_OK(nac_probe_split(labels, N, 4, 0.1f, 7, tr2, &ntr2, va2, &nva2));
    assert_memory_equal(va, va2, (size_t)nva * sizeof *va);
    TU_OK(nac_probe_split(labels, N, 4, 0.1f, 8, tr2, &ntr2, va2, &nva2));
    assert_int_equal(nva2, nva);
    assert_true(memcmp(va, va2, (size_t)nva * sizeof *va) != 0);
    labels[3] = 4;
    assert_int_equal(nac_probe_split(labels, N, 4, 0.1f, 7, tr, &ntr, va, &nva), NAC_ERR_INVALID);
}

/* The layer with w = identity (6 features, 6 classes) and b = 0 scores a row by its
 * features; hand-checked top-1, top-5 (ties to the lower class) and confusion. */
static void test_score(void **state) {
    (void)state;
    enum { C = 6, N = 4 };
    float w[C * C] = {0}, b[C] = {0};
    for (int i = 0; i < C; i++) w[i * C + i] = 1;
    nac_probe_linear lin = {.dim = C, .nclasses = C, .w = w, .b = b};
    float x[N * C] = {
        0, 5, 1, 2, 3, 4, /* ranks: 1 5 4 3 2 0 ; label 1 -> top-1 */
        9, 8, 7, 6, 5, 4, /* label 5 ranks 6th -> miss top-5 */
        1, 1, 1, 1, 1, 1, /* ties: label 4 has 4 classes before it -> top-5, not top-1 */
        0, 0, 0, 3, 0, 0, /* label 0 ties with 1,2,4,5 and is first of them: 2nd -> top-5 */
    };
    int32_t y[N] = {1, 5, 4, 0}, pred[N];
    int64_t conf[C * C] = {0};
    double t1, t5;
    TU_OK(nac_probe_score(g_be, &lin, x, y, NULL, N, 3, &t1, &t5, pred, conf));
    assert_true(t1 == 0.25);
    assert_true(t5 == 0.75);
    int32_t want[N] = {1, 0, 0, 3};
    assert_memory_equal(pred, want, sizeof want);
    assert_int_equal(conf[1 * C + 1], 1);
    assert_int_equal(conf[5 * C + 0], 1);
    assert_int_equal(conf[4 * C + 0], 1);
    assert_int_equal(conf[0 * C + 3], 1);
    int64_t total = 0;
    for (int i = 0; i < C * C; i++) total += conf[i];
    assert_int_equal(total, N);
    /* rows by index */
    int64_t idx[2] = {3, 0};
    TU_OK(nac_probe_score(g_be, &lin, x, y, idx, 2, 8, &t1, &t5, pred, NULL));
    assert_true(t1 == 0.5 && t5 == 1.0);
    assert_int_equal(pred[0], 3);
    assert_int_equal(pred[1], 1);
}

/* Host softmax cross-entropy of one row and its gradient (added into dw, db with weight s). */
static double ce_row(const float *w, const float *b, const float *x, int y, int dim, int c,
                     double s, double *dw, double *db) {
    double z[16], mx = -1e300, sum = 0;
    for (int k = 0; k < c; k++) {
        z[k] = b[k];
        for (int j = 0; j < dim; j++) z[k] += (double)w[k * dim + j] * x[j];
        if (z[k] > mx) mx = z[k];
    }
    for (int k = 0; k < c; k++) sum += exp(z[k] - mx);
    double lse = mx + log(sum);
    for (int k = 0; k < c && dw; k++) {
        double g = (exp(z[k] - lse) - (k == y)) * s;
        db[k] += g;
        for (int j = 0; j < dim; j++) dw[k * dim + j] += g * x[j];
    }
    return lse - z[y];
}

static void test_sgd_steps(void **state) {
    (void)state;
    enum { D = 5, C = 3, N = 7 };
    float x[N * D];
    int32_t y[N];
    tu_randn(x, N * D, 11, 1.0f);
    for (int i = 0; i < N; i++) y[i] = i % C;
    int64_t idx[N];
    for (int i = 0; i < N; i++) idx[i] = i;
    nac_probe_config cfg;
    nac_probe_defaults(&cfg);
    cfg.epochs = 1;
    cfg.momentum = 0;
    cfg.batch = N;
    /* lr ~ 0: the initial layer; its loss is the mean cross-entropy over the rows */
    nac_probe_linear l0, l1;
    TU_OK(nac_probe_train(g_be, x, y, idx, N, D, C, 1e-12f, &cfg, &l0));
    double want = 0;
    for (int i = 0; i < N; i++) want += ce_row(l0.w, l0.b, x + i * D, y[i], D, C, 0, NULL, NULL) / N;
    assert_true(fabs(l0.final_loss - want) < 1e-5);
    assert_false(l0.diverged);
    /* one full-batch step at lr 0.5: w1 = w0 - lr * mean gradient */
    TU_OK(nac_probe_train(g_be, x, y, idx, N, D, C, 0.5f, &cfg, &l1));
    double dw[C * D] = {0}, db[C] = {0};
    for (int i = 0; i < N; i++) ce_row(l0.w, l0.b, x + i * D, y[i], D, C, 1.0 / N, dw, db);
    for (int i = 0; i < C * D; i++) dw[i] = l0.w[i] - 0.5 * dw[i];
    for (int i = 0; i < C; i++) db[i] = l0.b[i] - 0.5 * db[i];
    tu_close_d(l1.w, dw, C * D, 1e-4, 1e-6, "w after one step");
    tu_close_d(l1.b, db, C, 1e-4, 1e-6, "b after one step");
    nac_probe_linear_free(&l1);

    /* identical rows, batch 4 of 7: the second batch holds 3 rows and 1 padding row; the
     * cosine schedule over 2 steps gives lr, then lr / 2. A padded row that counted, or a
     * mean over 4 instead of 3, would change the second step. */
    float xs[N * D];
    int32_t ys[N];
    for (int i = 0; i < N; i++) {
        memcpy(xs + i * D, x, D * sizeof *x);
        ys[i] = 2;
    }
    cfg.batch = 4;
    TU_OK(nac_probe_train(g_be, xs, ys, idx, N, D, C, 0.8f, &cfg, &l1));
    double w1[C * D], b1[C], g[C * D] = {0}, gb[C] = {0};
    float w1f[C * D], b1f[C];
    double loss0 = ce_row(l0.w, l0.b, x, 2, D, C, 1.0, g, gb);
    for (int i = 0; i < C * D; i++) w1f[i] = (float)(w1[i] = l0.w[i] - 0.8 * g[i]);
    for (int i = 0; i < C; i++) b1f[i] = (float)(b1[i] = l0.b[i] - 0.8 * gb[i]);
    memset(g, 0, sizeof g);
    memset(gb, 0, sizeof gb);
    double loss1 = ce_row(w1f, b1f, x, 2, D, C, 1.0, g, gb);
    for (int i = 0; i < C * D; i++) w1[i] -= 0.4 * g[i];
    for (int i = 0; i < C; i++) b1[i] -= 0.4 * gb[i];
    tu_close_d(l1.w, w1, C * D, 1e-4, 1e-6, "w after two steps");
    tu_close_d(l1.b, b1, C, 1e-4, 1e-6, "b after two steps");
    assert_true(fabs(l1.final_loss - (4 * loss0 + 3 * loss1) / 7) < 1e-5);
    nac_probe_linear_free(&l1);
    nac_probe_linear_free(&l0);
}

/* Gaussian clusters: class k centred at scale * e_k (plus noise). */
static void clusters(float *x, int32_t *y, int n, int dim, int c, float scale, float noise,
                     uint64_t seed) {
    tu_randn(x, (int64_t)n * dim, seed, noise);
    for (int i = 0; i < n; i++) {
        y[i] = i % c;
        x[(int64_t)i * dim + y[i]] += scale;
    }
}

static void test_separable(void **state) {
    (void)state;
    enum { D = 16, C = 4, N = 400, M = 200 };
    float *xtr = malloc(N * D * sizeof(float)), *xte = malloc(M * D * sizeof(float));
    int32_t ytr[N], yte[M];
    clusters(xtr, ytr, N, D, C, 4.0f, 0.3f, 1);
    clusters(xte, yte, M, D, C, 4.0f, 0.3f, 2);
    nac_probe_config cfg;
    nac_probe_defaults(&cfg);
    cfg.epochs = 10;
    cfg.batch = 64;
    nac_probe_result r;
    TU_OK(nac_probe_run(g_be, xtr, ytr, N, xte, yte, M, D, C, &cfg, &r));
    assert_true(r.test_top1 == 1.0);
    assert_true(r.test_top5 == 1.0);
    assert_true(r.train_top1 == 1.0);
    assert_int_equal(r.ntrain, N);
    assert_int_equal(r.nval, 40);
    assert_int_equal(r.nsearch, 360);
    for (int k = 0; k < C; k++)
        for (int j = 0; j < C; j++) assert_int_equal(r.confusion[k * C + j], k == j ? M / C : 0);
    nac_probe_result_free(&r);
    /* the same clusters moved far from the origin, with a constant feature: standardised,
     * they are as easy as before */
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < D; j++) xtr[i * D + j] = 40.0f + 0.5f * xtr[i * D + j];
        xtr[i * D + D - 1] = 7.0f;
    }
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < D; j++) xte[i * D + j] = 40.0f + 0.5f * xte[i * D + j];
        xte[i * D + D - 1] = 7.0f;
    }
    cfg.standardize = true;
    TU_OK(nac_probe_run(g_be, xtr, ytr, N, xte, yte, M, D, C, &cfg, &r));
    assert_true(r.test_top1 == 1.0);
    nac_probe_result_free(&r);
    /* non-finite features are refused, naming the row */
    xtr[5 * D + 3] = NAN;
    assert_int_equal(nac_probe_run(g_be, xtr, ytr, N, xte, yte, M, D, C, &cfg, &r), NAC_ERR_NUMERIC);
    assert_non_null(strstr(nac_last_error(), "row 5"));
    free(xtr);
    free(xte);
}

/* Weakly scaled, overlapping clusters and 2 epochs: lr 0.01 barely moves the layer from
 * its random start, so the search must prefer a larger rate -- and the chosen rate is the
 * one of best validation accuracy. */
static void test_lr_search(void **state) {
    (void)state;
    enum { D = 32, C = 8, N = 1600, M = 400 };
    float *xtr = malloc(N * D * sizeof(float)), *xte = malloc(M * D * sizeof(float));
    int32_t ytr[N], yte[M];
    clusters(xtr, ytr, N, D, C, 0.6f, 0.2f, 3);
    clusters(xte, yte, M, D, C, 0.6f, 0.2f, 4);
    nac_probe_config cfg;
    nac_probe_defaults(&cfg);
    cfg.epochs = 2;
    cfg.batch = 128;
    nac_probe_result r;
    TU_OK(nac_probe_run(g_be, xtr, ytr, N, xte, yte, M, D, C, &cfg, &r));
    int best = 0;
    for (int k = 1; k < r.nlrs; k++)
        if (r.val_top1[k] > r.val_top1[best]) best = k;
    print_message("val top-1 by lr: %.3f %.3f %.3f %.3f -> lr %g, test %.3f\n", r.val_top1[0],
                  r.val_top1[1], r.val_top1[2], r.val_top1[3], (double)r.lr, r.test_top1);
    assert_true(r.lr == r.lrs[best]);
    assert_true(r.lr > 0.01f);
    assert_true(r.val_top1[0] < r.val_top1[best] - 0.2);
    assert_true(r.test_top1 > 0.9);
    nac_probe_result_free(&r);
    free(xtr);
    free(xte);
}

/* Normalised pixels of a per-class subset as features (the identity "encoder"). */
static float *pixels(const nac_dataset_t *ds, const float *mean, const float *std, int32_t *y) {
    int64_t dim = (int64_t)ds->c * ds->h * ds->w;
    float *x = malloc((size_t)(ds->n * dim) * sizeof *x);
    for (int64_t i = 0; i < ds->n; i++) {
        const uint8_t *p = nac_dataset_image(ds, i);
        for (int64_t j = 0; j < dim; j++) x[i * dim + j] = (p[j] / 255.0f - mean[0]) / std[0];
        y[i] = ds->labels[i];
    }
    return x;
}

static void test_fashion_pixels(void **state) {
    (void)state;
    struct stat st;
    if (stat(NAC_FASHION_MNIST_DIR, &st) != 0) skip();
    nac_dataset_t full_tr, full_te, tr, te;
    TU_OK(nac_dataset_load_fashion_mnist(NAC_FASHION_MNIST_DIR, NAC_SPLIT_TRAIN, &full_tr));
    TU_OK(nac_dataset_load_fashion_mnist(NAC_FASHION_MNIST_DIR, NAC_SPLIT_TEST, &full_te));
    float mean[3], std[3];
    nac_dataset_norm("fashion-mnist", &full_tr, mean, std);
    TU_OK(nac_dataset_subset_per_class(&full_tr, 1000, 1, &tr, NULL));
    TU_OK(nac_dataset_subset_per_class(&full_te, 200, 2, &te, NULL));
    nac_dataset_free(&full_tr);
    nac_dataset_free(&full_te);
    int32_t *ytr = malloc((size_t)tr.n * sizeof *ytr), *yte = malloc((size_t)te.n * sizeof *yte);
    float *xtr = pixels(&tr, mean, std, ytr), *xte = pixels(&te, mean, std, yte);
    nac_probe_config cfg;
    nac_probe_defaults(&cfg);
    cfg.epochs = 5;
    nac_probe_result r;
    TU_OK(nac_probe_run(g_be, xtr, ytr, tr.n, xte, yte, te.n, 784, 10, &cfg, &r));
    print_message("fashion-mnist pixels (10k/2k, 5 epochs): test top-1 %.4f top-5 %.4f, lr %g, "
                  "val %.3f %.3f %.3f %.3f%s%s%s%s, %.1f s\n", r.test_top1, r.test_top5,
                  (double)r.lr, r.val_top1[0], r.val_top1[1], r.val_top1[2], r.val_top1[3],
                  r.val_diverged[0] ? " d0" : "", r.val_diverged[1] ? " d1" : "",
                  r.val_diverged[2] ? " d2" : "", r.val_diverged[3] ? " d3" : "", r.seconds);
    assert_true(r.test_top1 > 0.79 && r.test_top1 < 0.87);
    assert_true(r.test_top5 > 0.97);
    nac_probe_result_free(&r);
    free(xtr);
    free(xte);
    free(ytr);
    free(yte);
    nac_dataset_free(&tr);
    nac_dataset_free(&te);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),         cmocka_unit_test(test_score),
        cmocka_unit_test(test_sgd_steps),     cmocka_unit_test(test_separable),
        cmocka_unit_test(test_lr_search),     cmocka_unit_test(test_fashion_pixels),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
