/* The NAC training step, public: one step of any objective of the table (objective.h) on a
 * 2K batch of two views, for the pretraining loop and for experiments built on it (the
 * linear regions of `nac regions`). Encoder forward with per-view batch norm, heads g (and
 * r), momentum copies if the objective keeps them, the loss, the backward in reverse order,
 * the optimiser step and the EMA. Allocates nothing once the buffers are planned. */
#ifndef NAC_NAC_STEP_H
#define NAC_NAC_STEP_H

#include "encoders/encoder.h"
#include "encoders/head.h"
#include "nac/loss.h"
#include "nn/optim.h"
#include "dist/comm.h"

/* Data parallelism over the ranks of a communicator: each rank runs the encoder on its
 * slice of k = K / N images (both views, its own batch-norm statistics), the codes and
 * logits of all ranks are gathered into the global (2K, D) batch in the one-process row
 * order, every rank computes the same global loss, keeps its rows of the loss gradient,
 * and the parameter gradients (each rank's share of the global loss's gradient) are summed
 * over the ranks before the identical optimiser step. Planned once; nothing allocated in
 * the step. */
typedef struct nac_step_dist {
    nac_comm_t *comm;
    int64_t k, kg, d;                  /* images a rank, images a step (K = N k), D */
    nac_tensor_t *o, *l, *km, *lk;     /* (2K, D) the gathered inputs of the loss */
    nac_tensor_t *grad_o, *grad_l;     /* (2k, D) this rank's rows of dL/do, dL/dl */
    float *send, *recv, *glob;         /* host staging: (2k D), (N 2k D), (2K D) */
    nac_tensor_t **grads;              /* the trained parameters' gradients, in list order */
    int ngrads;
    /* shuffled batch norm of the momentum encoder (MoCo): NULL unless asked for */
    int64_t img;                       /* floats an image */
    float *images, *xs;                /* (N 2k img) all ranks' batches, (2k img) this rank's
                                          shuffled slice */
    nac_tensor_t *x_m;                 /* (2k, C, H, W) the shuffled slice on the backend */
    int64_t *perm;                     /* (2K) per view: shuffled position -> image */
} nac_step_dist;

/* For k images a rank of the step, codes of length d, the gradients of `all`; shuffle_bn:
 * the momentum encoder sees a slice of each view drawn across all ranks by a permutation
 * from the step's key (the same on every rank), and its codes are put back in the images'
 * order after the gather, as MoCo's shuffled BN does (x_shape: (2k, C, H, W) or (2k, D)). */
nac_status nac_step_dist_create(nac_backend_t *be, nac_comm_t *comm, int64_t k, int64_t d,
                                const nac_params_t *all, bool shuffle_bn, int ndim,
                                const int64_t *x_shape, nac_step_dist **out);
void nac_step_dist_free(nac_step_dist *d); /* accepts NULL */

typedef struct nac_step_model {
    nac_encoder_t *enc;
    nac_head_t *g, *r;         /* r NULL when the objective has no inference head */
    nac_encoder_t *enc_m;      /* momentum copies, NULL when the objective has none */
    nac_head_t *g_m, *r_m;
    nac_params_t *all, *all_m; /* every parameter of the online / momentum network, in order */
    nac_loss_t *loss;
    nac_optim_t *opt;
    float ema;                 /* momentum decay */
    nac_tensor_t *x;           /* (2K, C, H, W) or (2K, D): the batch, both views */
    nac_tensor_t *dh, *dh_r;   /* (2K, F) each */
    bool detach_r;             /* r's gradient trains r only, not the encoder (the official
                                  NAC-MQ momentum-queue path detaches its prediction) */
    nac_step_dist *dist;       /* NULL: one process (x holds the whole batch) */
} nac_step_model;

/* One step on batch (host, 2K rows: view 1 then view 2; with dist, this rank's 2k rows) at
 * learning rate lr; the channel's
 * flip mask draws from mask_key. *loss receives the loss; a NaN or Inf loss returns
 * NAC_ERR_NUMERIC ("the loss is nan") before any parameter changes. */
nac_status nac_step_train(const nac_step_model *m, const float *batch, uint64_t mask_key,
                          float lr, float *loss);

#endif
