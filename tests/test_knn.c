/* kNN monitor: separated clusters give 100%, a k = 3 case worked by hand (where the
 * temperature changes the answer), ties, scale invariance, a naive double-precision
 * reference across several sgemm blocks, and bad arguments. */
#include "tests/testutil.h"

#include "eval/knn.h"

static void test_clusters(void **state) {
    (void)state;
    enum { C = 4, D = 16, NTR = 400, NTE = 120 };
    float cent[C * D] = {0};
    for (int c = 0; c < C; c++) cent[c * D + 3 * c] = 1.0f, cent[c * D + 3 * c + 1] = 1.0f;
    float *tr = malloc(NTR * D * sizeof *tr), *te = malloc(NTE * D * sizeof *te);
    int32_t ltr[NTR], lte[NTE];
    tu_randn(tr, NTR * D, 1, 0.1f);
    tu_randn(te, NTE * D, 2, 0.1f);
    for (int i = 0; i < NTR; i++) {
        ltr[i] = (i * 7) % C;
        for (int d = 0; d < D; d++) tr[i * D + d] += cent[ltr[i] * D + d];
    }
    for (int i = 0; i < NTE; i++) {
        lte[i] = (i * 3) % C;
        for (int d = 0; d < D; d++) te[i * D + d] = 2.5f * (te[i * D + d] + cent[lte[i] * D + d]);
    }
    double top1 = -1, top5 = -1;
    TU_OK(nac_knn_accuracy(tr, ltr, NTR, te, lte, NTE, D, C, 200, 0.1f, &top1, &top5));
    assert_true(top1 == 1.0);
    assert_true(top5 == 1.0);
    /* Labels shuffled against the clusters: the same neighbours now vote for the wrong class. */
    int32_t wrong[NTE];
    for (int i = 0; i < NTE; i++) wrong[i] = (lte[i] + 1) % C;
    TU_OK(nac_knn_accuracy(tr, ltr, NTR, te, wrong, NTE, D, C, 200, 0.1f, &top1, &top5));
    assert_true(top1 == 0.0);
    assert_true(top5 == 1.0); /* 4 classes: every class is in the top 5 */
    free(tr);
    free(te);
}

/* Train (label): a (1,0) 0, b (0,1) 1, c (1,1) 1, d (-1,0) 2, e (0.6,0.8) 1.
 * Test x = (1, 0.2): cosines a 0.98058, c 0.83205, e 0.74524, b 0.19612, d -0.98058;
 * k = 3 takes a, c, e. T = 0.1: class 0 gets e^9.806 = 18139, class 1 e^8.321 + e^7.452 = 5831
 * -> class 0. T = 1: class 0 2.666 < class 1 2.298 + 2.107 -> class 1. */
static const float HAND_TR[10] = {1, 0, 0, 1, 1, 1, -1, 0, 0.6f, 0.8f};
static const int32_t HAND_LTR[5] = {0, 1, 1, 2, 1};

static void test_hand_k3(void **state) {
    (void)state;
    float te[4] = {1, 0.2f, -2, 0.1f}; /* second: nearest d (-1,0), then b, then e */
    int32_t pred[2];
    double sc[6];
    TU_OK(nac_knn_predict(HAND_TR, HAND_LTR, 5, te, 2, 2, 3, 3, 0.1f, pred, sc));
    double nx = sqrt(1.04);
    double sa = 1 / nx, sc_ = 1.2 / (nx * sqrt(2.0)), se = (0.6 + 0.16) / nx;
    double want0[3] = {exp(sa / 0.1), exp(sc_ / 0.1) + exp(se / 0.1), 0};
    for (int c = 0; c < 3; c++) assert_true(fabs(sc[c] - want0[c]) <= 1e-5 * fmax(want0[c], 1));
    assert_true(fabs(want0[0] - 18139.0) < 1 && fabs(want0[1] - 5831.0) < 1); /* the numbers above */
    assert_int_equal(pred[0], 0);
    /* second test row (-2, 0.1): cos with d = 0.99875, b = 0.04994, e = (-1.2+0.08)/2.0025 = -0.55930 */
    double n2 = sqrt(4.01);
    double want1[3] = {0, exp(0.1 / n2 / 0.1) + exp(-1.12 / n2 / 0.1), exp(2 / n2 / 0.1)};
    for (int c = 0; c < 3; c++) assert_true(fabs(sc[3 + c] - want1[c]) <= 1e-5 * fmax(want1[c], 1));
    assert_int_equal(pred[1], 2);

    TU_OK(nac_knn_predict(HAND_TR, HAND_LTR, 5, te, 2, 2, 3, 3, 1.0f, pred, sc));
    assert_int_equal(pred[0], 1);
    assert_true(fabs(sc[0] - exp(sa)) < 1e-5 && fabs(sc[1] - exp(sc_) - exp(se)) < 1e-5);

    int32_t lte[2] = {0, 2};
    double top1, top5;
    TU_OK(nac_knn_accuracy(HAND_TR, HAND_LTR, 5, te, lte, 2, 2, 3, 3, 0.1f, &top1, &top5));
    assert_true(top1 == 1.0 && top5 == 1.0);
    TU_OK(nac_knn_accuracy(HAND_TR, HAND_LTR, 5, te, lte, 2, 2, 3, 3, 1.0f, &top1, &top5));
    assert_true(top1 == 0.5 && top5 == 1.0);
    /* k = 1: only the nearest; class 0 for row 0 */
    TU_OK(nac_knn_predict(HAND_TR, HAND_LTR, 5, te, 2, 2, 3, 1, 1.0f, pred, sc));
    assert_int_equal(pred[0], 0);
    assert_true(sc[1] == 0.0 && sc[2] == 0.0);
    /* k beyond n: all five vote */
    TU_OK(nac_knn_predict(HAND_TR, HAND_LTR, 5, te, 1, 2, 3, 50, 1.0f, pred, sc));
    double all = exp(sa) + exp(sc_) + exp(se) + exp(0.2 / nx) + exp(-1 / nx);
    assert_true(fabs(sc[0] + sc[1] + sc[2] - all) < 1e-5);
}

static void test_ties_scale_top5(void **state) {
    (void)state;
    /* identical training rows with labels 2 and 0: k = 1 keeps the lower index (label 2) */
    float tr[6] = {1, 1, 1, 1, 0, 1};
    int32_t ltr[3] = {2, 0, 1};
    float te[2] = {3, 3};
    int32_t pred;
    TU_OK(nac_knn_predict(tr, ltr, 3, te, 1, 2, 3, 1, 0.1f, &pred, NULL));
    assert_int_equal(pred, 2);
    /* scaling any row changes nothing (cosine) */
    float tr2[6] = {5, 5, 5, 5, 0, 0.01f}; /* identical rows stay identical */
    double s1[3], s2[3];
    int32_t p1, p2;
    TU_OK(nac_knn_predict(tr, ltr, 3, te, 1, 2, 3, 3, 0.1f, &p1, s1));
    TU_OK(nac_knn_predict(tr2, ltr, 3, te, 1, 2, 3, 3, 0.1f, &p2, s2));
    assert_int_equal(p1, p2);
    for (int c = 0; c < 3; c++) assert_true(fabs(s1[c] - s2[c]) <= 1e-5 * s1[c]);
    /* equal scores of classes 0 and 2: the prediction is the lower class */
    assert_true(s1[0] == s1[2]);
    assert_int_equal(p1, 0);
    /* top-5 with 7 classes: true class ranked 6th of 7 by score is a top-5 miss */
    enum { C = 7 };
    float tr7[C * 2];
    int32_t l7[C];
    for (int c = 0; c < C; c++) {
        double a = 0.2 * c; /* class c at angle 0.2c: similarity to (1,0) falls with c */
        tr7[2 * c] = (float)cos(a), tr7[2 * c + 1] = (float)sin(a), l7[c] = c;
    }
    float q[2] = {1, 0};
    double t1, t5;
    int32_t y = 5;
    TU_OK(nac_knn_accuracy(tr7, l7, C, q, &y, 1, 2, C, C, 0.1f, &t1, &t5));
    assert_true(t1 == 0.0 && t5 == 0.0);
    y = 4;
    TU_OK(nac_knn_accuracy(tr7, l7, C, q, &y, 1, 2, C, C, 0.1f, &t1, &t5));
    assert_true(t1 == 0.0 && t5 == 1.0);
}

/* Naive reference in double: every similarity, a full sort, the votes. */
static void naive_scores(const float *tr, const int32_t *ltr, int64_t n, const float *te, int64_t m,
                         int64_t d, int nc, int k, double T, double *scores) {
    double *sim = malloc((size_t)n * sizeof *sim);
    int64_t *idx = malloc((size_t)n * sizeof *idx);
    for (int64_t i = 0; i < m; i++) {
        double nq = 0;
        for (int64_t t = 0; t < d; t++) nq += (double)te[i * d + t] * te[i * d + t];
        for (int64_t j = 0; j < n; j++) {
            double dot = 0, nt = 0;
            for (int64_t t = 0; t < d; t++) dot += (double)te[i * d + t] * tr[j * d + t], nt += (double)tr[j * d + t] * tr[j * d + t];
            sim[j] = dot / sqrt(nq * nt);
            idx[j] = j;
        }
        for (int t = 0; t < k; t++) { /* selection of the k best */
            int64_t b = t;
            for (int64_t j = t + 1; j < n; j++)
                if (sim[idx[j]] > sim[idx[b]]) b = j;
            int64_t tmp = idx[t];
            idx[t] = idx[b], idx[b] = tmp;
        }
        for (int c = 0; c < nc; c++) scores[i * nc + c] = 0;
        for (int t = 0; t < k; t++) scores[i * nc + ltr[idx[t]]] += exp(sim[idx[t]] / T);
    }
    free(sim);
    free(idx);
}

static void test_vs_naive(void **state) {
    (void)state;
    enum { N = 9000, M = 300, D = 33, C = 10, K = 200 }; /* 3 training blocks, 2 test blocks */
    float *tr = malloc((size_t)N * D * sizeof *tr), *te = malloc((size_t)M * D * sizeof *te);
    int32_t *ltr = malloc(N * sizeof *ltr), *pred = malloc(M * sizeof *pred);
    double *sc = malloc((size_t)M * C * sizeof *sc), *want = malloc((size_t)M * C * sizeof *want);
    tu_randn(tr, (int64_t)N * D, 5, 1.0f);
    tu_randn(te, (int64_t)M * D, 6, 1.0f);
    for (int i = 0; i < N; i++) {
        ltr[i] = i % C;
        tr[(int64_t)i * D + ltr[i]] += 4.0f; /* some class structure */
    }
    for (int i = 0; i < M; i++) te[(int64_t)i * D + i % C] += 4.0f;
    TU_OK(nac_knn_predict(tr, ltr, N, te, M, D, C, K, 0.1f, pred, sc));
    naive_scores(tr, ltr, N, te, M, D, C, K, 0.1, want);
    int correct = 0;
    for (int i = 0; i < M; i++) {
        int best = 0;
        for (int c = 0; c < C; c++) {
            double w = want[i * C + c], g = sc[i * C + c];
            if (!(fabs(g - w) <= 1e-4 * fmax(w, 1.0)))
                fail_msg("row %d class %d: score %.9g, naive %.9g", i, c, g, w);
            if (w > want[i * C + best]) best = c;
        }
        assert_int_equal(pred[i], best);
        correct += pred[i] == i % C;
    }
    assert_true(correct > M / 2); /* the structure is found */
    free(tr), free(te), free(ltr), free(pred), free(sc), free(want);
}

static void test_bad_args(void **state) {
    (void)state;
    int32_t pred[1];
    float te[2] = {1, 0};
    assert_int_equal(nac_knn_predict(HAND_TR, HAND_LTR, 5, te, 1, 2, 2, 3, 0.1f, pred, NULL), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "train label 3 is 2"));
    assert_int_equal(nac_knn_predict(HAND_TR, HAND_LTR, 5, te, 1, 2, 3, 0, 0.1f, pred, NULL), NAC_ERR_INVALID);
    assert_int_equal(nac_knn_predict(HAND_TR, HAND_LTR, 5, te, 1, 2, 3, 3, 0.0f, pred, NULL), NAC_ERR_INVALID);
    te[1] = NAN;
    assert_int_equal(nac_knn_predict(HAND_TR, HAND_LTR, 5, te, 1, 2, 3, 3, 0.1f, pred, NULL), NAC_ERR_NUMERIC);
    assert_non_null(strstr(nac_last_error(), "test row 0"));
    te[1] = 0;
    int32_t bad = 3;
    double t1, t5;
    assert_int_equal(nac_knn_accuracy(HAND_TR, HAND_LTR, 5, te, &bad, 1, 2, 3, 3, 0.1f, &t1, &t5), NAC_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clusters),        cmocka_unit_test(test_hand_k3),
        cmocka_unit_test(test_ties_scale_top5), cmocka_unit_test(test_vs_naive),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
