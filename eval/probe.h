/* Linear probe (paper Section 4.2, DESIGN.md "Downstream checks"): one Linear layer on
 * frozen features, softmax cross-entropy, Nesterov SGD (momentum 0.9) with a cosine
 * schedule and no regularisation, trained on the backend; the learning rate is chosen on
 * a per-class validation split carved from the training set, then the layer is retrained
 * on the whole training set and scored on the test set. Host feature arrays in, numbers
 * out; every random choice (split, init, order) comes from the seed. */
#ifndef NAC_EVAL_PROBE_H
#define NAC_EVAL_PROBE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/status.h"

#define NAC_PROBE_MAX_LRS 16

typedef struct nac_probe_config {
    int epochs;      /* passes over the training rows per fit (100) */
    int batch;       /* rows a step (256); the last partial batch is masked, not dropped */
    int nlrs;        /* learning rates searched (4) */
    float lrs[NAC_PROBE_MAX_LRS]; /* {0.01, 0.1, 1, 10} */
    float val_frac;  /* validation share of every class, in (0, 1) (0.1) */
    float momentum;  /* Nesterov momentum (0.9) */
    bool standardize; /* z-score every feature with the training rows' mean and std before
                         fitting (and the test rows with the same numbers); off in the
                         paper's protocol, useful for badly scaled features */
    uint64_t seed;
} nac_probe_config;

/* The protocol's values: 100 epochs, batch 256, lrs {0.01, 0.1, 1, 10}, 10% validation,
 * momentum 0.9, no standardisation, seed 0. */
void nac_probe_defaults(nac_probe_config *cfg);

/* One trained layer: w (nclasses, dim) row-major (PyTorch's Linear.weight), b (nclasses). */
typedef struct nac_probe_linear {
    int64_t dim;
    int nclasses;
    float *w, *b; /* owned */
    double final_loss; /* mean training loss over the last epoch (NaN if diverged) */
    bool diverged;     /* a weight or the loss became non-finite: training stopped at the
                          end of that epoch */
} nac_probe_linear;

void nac_probe_linear_free(nac_probe_linear *lin); /* accepts NULL and a freed one */

/* Split rows 0..n-1 per class: of each class with c rows, round(val_frac * c) rows (at
 * least 1 when c >= 2, never all c) chosen by the seed go to val, the rest to train; both
 * lists are in ascending row order. train_idx and val_idx hold n entries each. */
nac_status nac_probe_split(const int32_t *labels, int64_t n, int nclasses, float val_frac,
                           uint64_t seed, int64_t *train_idx, int64_t *ntrain, int64_t *val_idx,
                           int64_t *nval);

/* Train a fresh layer on the rows idx[0..n) of x (rows of `dim` floats) with labels (per
 * row of x) at base rate lr: PyTorch's default Linear init from (seed), rows shuffled each
 * epoch from (seed, epoch), cosine decay to 0 over all steps. Non-finite weights (checked
 * after every epoch) or loss stop the fit and mark it diverged (not an error: a too-large
 * lr is a valid search outcome). */
nac_status nac_probe_train(nac_backend_t *be, const float *x, const int32_t *labels,
                           const int64_t *idx, int64_t n, int64_t dim, int nclasses, float lr,
                           const nac_probe_config *cfg, nac_probe_linear *out);

/* Scores of the layer on rows idx[0..n) of x (idx NULL: rows 0..n-1), computed on the
 * backend: top-1 and top-5 accuracy (top-5: the label among the min(5, nclasses) largest
 * logits, ties to the lower class) and, optional, pred (n) and the confusion matrix
 * confusion (nclasses, nclasses) += [true][predicted]. */
nac_status nac_probe_score(nac_backend_t *be, const nac_probe_linear *lin, const float *x,
                           const int32_t *labels, const int64_t *idx, int64_t n, int batch,
                           double *top1, double *top5, int32_t *pred, int64_t *confusion);

typedef struct nac_probe_result {
    int nlrs;
    float lrs[NAC_PROBE_MAX_LRS];
    double val_top1[NAC_PROBE_MAX_LRS]; /* validation accuracy of each lr (0 if diverged) */
    bool val_diverged[NAC_PROBE_MAX_LRS];
    float lr;          /* the chosen rate: best validation top-1, ties to the earlier */
    int64_t ntrain;    /* rows of the final fit: the whole training set */
    int64_t nsearch, nval; /* rows of the search fits, and of the validation split */
    int64_t ntest;
    double train_top1; /* of the final layer on the whole training set */
    double test_top1, test_top5;
    double final_loss;
    int nclasses;
    int64_t *confusion; /* (nclasses, nclasses), [true][predicted] on the test set; owned */
    double seconds;
} nac_probe_result;

void nac_probe_result_free(nac_probe_result *r); /* accepts NULL */

/* The whole protocol on given host features (the encoder's, or raw pixels):
 * train (n, dim) with train_labels, test (m, dim) with test_labels, labels in
 * [0, nclasses). Search cfg->lrs on the split of the training rows, retrain on all of
 * them with the best rate, score on the test rows. Features must be finite
 * (NAC_ERR_NUMERIC names the first bad row). With cfg->standardize the features are
 * z-scored on a copy (a feature constant over the training rows is only centred). */
nac_status nac_probe_run(nac_backend_t *be, const float *train, const int32_t *train_labels,
                         int64_t n, const float *test, const int32_t *test_labels, int64_t m,
                         int64_t dim, int nclasses, const nac_probe_config *cfg,
                         nac_probe_result *out);

#endif
