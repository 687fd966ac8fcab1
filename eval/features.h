/* Features for the evaluations (probe, kNN, hashing) and their two baselines (DESIGN.md
 * "Evidence"): every image of a dataset through an encoder in evaluation mode, normalised
 * as the encoder file says, without augmentation; or the same normalised pixels flattened
 * (the raw-pixel baseline); or a random-init encoder of the same architecture whose
 * batch-norm statistics were recalibrated on training images (the random baseline: a
 * random body with statistics 0/1 is not a fair one). */
#ifndef NAC_EVAL_FEATURES_H
#define NAC_EVAL_FEATURES_H

#include <stdint.h>

#include "data/dataset.h"
#include "encoders/encoder.h"

/* Called after each chunk of images: done of total. */
typedef void (*nac_features_progress_fn)(void *ctx, int64_t done, int64_t total);

/* Every image of ds as the encoder sees it: (n, C, H, W) normalised with mean/std (per
 * channel), rows [start, start + n) into x. */
nac_status nac_features_images(const nac_dataset_t *ds, const float *mean, const float *std,
                               int64_t start, int64_t n, float *x);

/* Features (ds->n, dim) into *out (malloc'ed; free it). enc NULL: the raw-pixel baseline,
 * dim = C*H*W. Otherwise dim = the encoder's feature size, `batch` images a forward.
 * progress may be NULL. */
nac_status nac_features_compute(nac_encoder_t *enc, const nac_dataset_t *ds, const float *mean,
                                const float *std, int batch, nac_features_progress_fn progress,
                                void *ctx, float **out, int64_t *dim);

/* The same split over data-parallel ranks (comm NULL: one process): rank r computes the
 * features of its contiguous slice of ds (nac_comm_slice), and every rank receives all
 * rows in image order, each row the bytes its owner computed. Every rank calls it. */
typedef struct nac_comm nac_comm_t;
nac_status nac_features_compute_comm(nac_comm_t *comm, nac_encoder_t *enc, const nac_dataset_t *ds,
                                     const float *mean, const float *std, int batch,
                                     nac_features_progress_fn progress, void *ctx, float **out,
                                     int64_t *dim);

/* The random baseline: an encoder made from cfg (its seed; skip_init ignored) with every
 * batch-norm layer recalibrated (nac_encoder_recalibrate_bn) on up to recal_n images of
 * train (the first ones, in batches of `batch`). */
nac_status nac_features_random_encoder(nac_backend_t *be, const nac_encoder_config *cfg,
                                       const nac_dataset_t *train, const float *mean,
                                       const float *std, int64_t recal_n, int batch,
                                       nac_encoder_t **out);

#endif
