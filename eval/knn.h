/* Weighted k-nearest-neighbour monitor (InstDisc / solo-learn): features l2-normalised,
 * cosine similarity, each of the k nearest training items votes for its class with
 * weight exp(sim / T); the prediction is the class of largest summed weight. Host arrays;
 * similarities by blocked sgemm, top-k by a bounded heap; deterministic. */
#ifndef NAC_EVAL_KNN_H
#define NAC_EVAL_KNN_H

#include <stdint.h>

#include "backend/status.h"

/* Predictions for every test row.
 *   train (n, dim), train_labels (n) in [0, nclasses); test (m, dim).
 *   k >= 1 (clamped to n), temperature > 0 (0.1 in InstDisc and solo-learn).
 *   pred (m): the class of largest score, ties to the lower class index.
 *   scores (m, nclasses), optional: the summed weights.
 * Rows are normalised as x / max(||x||, 1e-12) (F.normalize); a NaN or Inf feature is
 * NAC_ERR_NUMERIC. Neighbours tie by the lower training index; the weights of the k
 * neighbours are added in the order (similarity descending, index ascending). */
nac_status nac_knn_predict(const float *train, const int32_t *train_labels, int64_t n,
                           const float *test, int64_t m, int64_t dim, int nclasses, int k,
                           float temperature, int32_t *pred, double *scores);

/* Top-1 and top-5 accuracy (fractions in [0, 1]) of nac_knn_predict on the test set with
 * test_labels (m). Top-5: the true class is among the min(5, nclasses) classes of
 * largest score, ordered by score and then class index. */
nac_status nac_knn_accuracy(const float *train, const int32_t *train_labels, int64_t n,
                            const float *test, const int32_t *test_labels, int64_t m, int64_t dim,
                            int nclasses, int k, float temperature, double *top1, double *top5);

#endif
