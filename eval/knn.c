/* Weighted kNN monitor: similarities of a block of test rows against a block of training
 * rows by one sgemm, scaled by the inverse row norms, streamed into a bounded heap of
 * the k best per test row; then the exp(sim / T) votes. Host arrays, no backend tensors:
 * the sgemm is backend/hostblas.h's host entry. */
#include "eval/knn.h"

#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backend/hostblas.h"

enum { TEST_BLOCK = 256, TRAIN_BLOCK = 4096 };

typedef struct nb {
    float s;   /* cosine similarity */
    int64_t i; /* training index */
} nb;

/* a ranks after b: lower similarity, or the same similarity and a higher index */
static inline bool worse(nb a, nb b) { return a.s < b.s || (a.s == b.s && a.i > b.i); }

/* Keep the k best in a heap whose root is the worst of them. */
static void heap_push(nb *h, int *size, int k, nb x) {
    if (*size < k) {
        int c = (*size)++;
        while (c > 0) {
            int p = (c - 1) / 2;
            if (!worse(x, h[p])) break;
            h[c] = h[p];
            c = p;
        }
        h[c] = x;
        return;
    }
    if (!worse(h[0], x)) return;
    int c = 0;
    for (;;) {
        int l = 2 * c + 1, r = l + 1;
        if (l >= k) break;
        int w = (r < k && worse(h[r], h[l])) ? r : l;
        if (!worse(h[w], x)) break;
        h[c] = h[w];
        c = w;
    }
    h[c] = x;
}

static int better_first(const void *pa, const void *pb) {
    nb a = *(const nb *)pa, b = *(const nb *)pb;
    return worse(b, a) ? -1 : worse(a, b) ? 1 : 0;
}

/* inv[i] = 1 / max(||x_i||, 1e-12); -1 marks a row with a NaN or Inf. */
static void inverse_norms(const float *x, int64_t rows, int64_t dim, float *inv) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
        double ss = 0;
        for (int64_t d = 0; d < dim; d++) ss += (double)x[i * dim + d] * x[i * dim + d];
        inv[i] = isfinite(ss) ? (float)(1.0 / fmax(sqrt(ss), 1e-12)) : -1.0f;
    }
}

typedef struct knn_job {
    const float *train, *test;
    const int32_t *train_labels, *test_labels;
    int64_t n, m, dim;
    int nclasses, k;
    double temperature;
    int32_t *pred;   /* (m) optional */
    double *scores;  /* (m, nclasses) optional */
    uint8_t *hit;    /* (m) optional: bit 0 top-1 correct, bit 1 top-5 correct */
} knn_job;

/* Votes of one test row from its k neighbours (sorted in place, best first). */
static void finish_row(const knn_job *jb, int64_t row, nb *h, int kk, double *sc) {
    int nc = jb->nclasses;
    qsort(h, (size_t)kk, sizeof *h, better_first);
    for (int c = 0; c < nc; c++) sc[c] = 0;
    for (int t = 0; t < kk; t++)
        sc[jb->train_labels[h[t].i]] += exp((double)h[t].s / jb->temperature);
    int best = 0;
    for (int c = 1; c < nc; c++)
        if (sc[c] > sc[best]) best = c;
    if (jb->pred) jb->pred[row] = best;
    if (jb->scores) memcpy(jb->scores + row * nc, sc, (size_t)nc * sizeof *sc);
    if (jb->hit) {
        int y = jb->test_labels[row], above = 0;
        for (int c = 0; c < nc; c++) above += sc[c] > sc[y] || (sc[c] == sc[y] && c < y);
        jb->hit[row] = (uint8_t)((best == y) | ((above < (nc < 5 ? nc : 5)) << 1));
    }
}

static nac_status check_args(const knn_job *jb, const char *fn) {
    if (!jb->train || !jb->train_labels || !jb->test || jb->n < 1 || jb->m < 0 || jb->dim < 1)
        return nac_error(
            NAC_ERR_INVALID,
            "%s: need train (n >= 1, dim >= 1), labels and test, got n %lld, m %lld, dim %lld", fn,
            (long long)jb->n, (long long)jb->m, (long long)jb->dim);
    if (jb->nclasses < 1 || jb->k < 1 || !(jb->temperature > 0) || !isfinite(jb->temperature))
        return nac_error(NAC_ERR_INVALID,
                         "%s: need nclasses >= 1, k >= 1, temperature > 0, got %d, %d, %g", fn,
                         jb->nclasses, jb->k, jb->temperature);
    for (int64_t i = 0; i < jb->n; i++)
        if (jb->train_labels[i] < 0 || jb->train_labels[i] >= jb->nclasses)
            return nac_error(NAC_ERR_INVALID, "%s: train label %lld is %d, outside [0, %d)", fn,
                             (long long)i, jb->train_labels[i], jb->nclasses);
    for (int64_t i = 0; jb->test_labels && i < jb->m; i++)
        if (jb->test_labels[i] < 0 || jb->test_labels[i] >= jb->nclasses)
            return nac_error(NAC_ERR_INVALID, "%s: test label %lld is %d, outside [0, %d)", fn,
                             (long long)i, jb->test_labels[i], jb->nclasses);
    return NAC_OK;
}

static nac_status first_bad_row(const float *inv, int64_t rows, const char *what, const char *fn) {
    for (int64_t i = 0; i < rows; i++)
        if (inv[i] < 0)
            return nac_error(NAC_ERR_NUMERIC, "%s: %s row %lld has a NaN or Inf", fn, what,
                             (long long)i);
    return NAC_OK;
}

/* One block of test rows against every training block. */
static nac_status run_block(const knn_job *jb, int64_t i0, int64_t bm, const float *itest,
                            const float *itrain, float *sim, nb *heaps, int *sizes,
                            const char *fn) {
    int64_t n = jb->n, dim = jb->dim;
    int k = jb->k;
    memset(sizes, 0, (size_t)bm * sizeof *sizes);
    for (int64_t j0 = 0; j0 < n; j0 += TRAIN_BLOCK) {
        int64_t bn = n - j0 < TRAIN_BLOCK ? n - j0 : TRAIN_BLOCK;
        nac_status st = nac_host_sgemm(false, true, bm, bn, dim, 1.0f, jb->test + i0 * dim, dim,
                                       jb->train + j0 * dim, dim, 0.0f, sim, bn);
        if (st != NAC_OK)
            return nac_error_prefix(
                st, "%s: similarities of test rows [%lld, %lld) and train rows [%lld, %lld): ", fn,
                (long long)i0, (long long)(i0 + bm), (long long)j0, (long long)(j0 + bn));
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < bm; r++) {
            nb *h = heaps + r * k;
            const float *row = sim + r * bn;
            float it = itest[i0 + r];
            for (int64_t c = 0; c < bn; c++) {
                float s = row[c] * it * itrain[j0 + c];
                if (sizes[r] == k && s < h[0].s) continue; /* the common case, cheaply */
                heap_push(h, &sizes[r], k, (nb){s, j0 + c});
            }
        }
    }
    return NAC_OK;
}

static nac_status knn_run(knn_job *jb, const char *fn) {
    NAC_TRY(check_args(jb, fn));
    if (jb->k > jb->n) jb->k = (int)jb->n;
    int64_t n = jb->n, m = jb->m;
    int k = jb->k;
    float *itrain = malloc((size_t)n * sizeof *itrain);
    float *itest = malloc((size_t)(m > 0 ? m : 1) * sizeof *itest);
    float *sim = malloc((size_t)TEST_BLOCK * TRAIN_BLOCK * sizeof *sim);
    nb *heaps = malloc((size_t)TEST_BLOCK * (size_t)k * sizeof *heaps);
    int *sizes = malloc(TEST_BLOCK * sizeof *sizes);
    nac_status s = NAC_OK;
    if (!itrain || !itest || !sim || !heaps || !sizes) {
        s = nac_error(NAC_ERR_NOMEM, "%s: buffers for n %lld, m %lld, k %d", fn, (long long)n,
                      (long long)m, k);
        goto done;
    }
    inverse_norms(jb->train, n, jb->dim, itrain);
    inverse_norms(jb->test, m, jb->dim, itest);
    if ((s = first_bad_row(itrain, n, "train", fn)) != NAC_OK) goto done;
    if ((s = first_bad_row(itest, m, "test", fn)) != NAC_OK) goto done;

    int failed = 0;
    for (int64_t i0 = 0; i0 < m && s == NAC_OK; i0 += TEST_BLOCK) {
        int64_t bm = m - i0 < TEST_BLOCK ? m - i0 : TEST_BLOCK;
        if ((s = run_block(jb, i0, bm, itest, itrain, sim, heaps, sizes, fn)) != NAC_OK) break;
#pragma omp parallel
        {
            double *sc = malloc((size_t)jb->nclasses * sizeof *sc);
            if (!sc) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (int64_t r = 0; r < bm; r++)
                if (sc) finish_row(jb, i0 + r, heaps + r * k, sizes[r], sc);
            free(sc);
        }
        if (failed) s = nac_error(NAC_ERR_NOMEM, "%s: scores of %d classes", fn, jb->nclasses);
    }
done:
    free(itrain);
    free(itest);
    free(sim);
    free(heaps);
    free(sizes);
    return s;
}

nac_status nac_knn_predict(const float *train, const int32_t *train_labels, int64_t n,
                           const float *test, int64_t m, int64_t dim, int nclasses, int k,
                           float temperature, int32_t *pred, double *scores) {
    if (!pred && m > 0) return nac_error(NAC_ERR_INVALID, "nac_knn_predict: pred is NULL");
    knn_job jb = {.train = train, .test = test, .train_labels = train_labels, .n = n, .m = m,
                  .dim = dim, .nclasses = nclasses, .k = k, .temperature = temperature,
                  .pred = pred, .scores = scores};
    return knn_run(&jb, "nac_knn_predict");
}

nac_status nac_knn_accuracy(const float *train, const int32_t *train_labels, int64_t n,
                            const float *test, const int32_t *test_labels, int64_t m, int64_t dim,
                            int nclasses, int k, float temperature, double *top1, double *top5) {
    if (!test_labels || !top1 || !top5 || m < 1)
        return nac_error(NAC_ERR_INVALID,
                         "nac_knn_accuracy: need test labels, top1, top5 and m >= 1 (m %lld)",
                         (long long)m);
    uint8_t *hit = malloc((size_t)m);
    if (!hit) return nac_error(NAC_ERR_NOMEM, "nac_knn_accuracy: %lld flags", (long long)m);
    knn_job jb = {.train = train,
                  .test = test,
                  .train_labels = train_labels,
                  .test_labels = test_labels,
                  .n = n,
                  .m = m,
                  .dim = dim,
                  .nclasses = nclasses,
                  .k = k,
                  .temperature = temperature,
                  .hit = hit};
    nac_status s = knn_run(&jb, "nac_knn_accuracy");
    if (s == NAC_OK) {
        int64_t h1 = 0, h5 = 0;
        for (int64_t i = 0; i < m; i++) h1 += hit[i] & 1, h5 += hit[i] >> 1;
        *top1 = (double)h1 / (double)m;
        *top5 = (double)h5 / (double)m;
    }
    free(hit);
    return s;
}
