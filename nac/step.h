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
} nac_step_model;

/* One step on batch (host, 2K rows: view 1 then view 2) at learning rate lr; the channel's
 * flip mask draws from mask_key. *loss receives the loss; a NaN or Inf loss returns
 * NAC_ERR_NUMERIC ("the loss is nan") before any parameter changes. */
nac_status nac_step_train(const nac_step_model *m, const float *batch, uint64_t mask_key,
                          float lr, float *loss);

#endif
