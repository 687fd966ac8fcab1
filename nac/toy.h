/* NAC on 2-D toy points (the paper's Figure 1): a ReLU MLP encoder with the heads g and r,
 * trained by the public NAC step (step.h) on two noisy views of K points a step, Adam. The
 * linear-regions experiment (`nac regions`) counts the model's activation patterns with
 * eval/regions before and after. */
#ifndef NAC_NAC_TOY_H
#define NAC_NAC_TOY_H

#include "encoders/encoder.h"
#include "encoders/head.h"
#include "nac/loss.h"

typedef struct nac_toy_config {
    int sizes[NAC_MLP_MAX_SIZES], nsizes; /* the MLP: input 2, then each layer's width */
    int k;                                /* points a step (2K rows with both views) */
    int proj_dim;                         /* code bits D */
    int seed;                             /* init (encoder seed, g seed+1, r seed+2), data order, noise */
    float lr, p, view_noise;              /* Adam lr; flip probability; view noise std */
} nac_toy_config;

typedef struct nac_toy_model {
    nac_backend_t *be; /* owned */
    nac_encoder_t *enc;
    nac_head_t *g, *r;
    nac_loss_t *loss;
    nac_params_t all; /* view: encoder, g, r */
    nac_tensor_t *x, *dh, *dh_r;
} nac_toy_model;

/* A backend by name (threads, 0: all) and the model on it. */
nac_status nac_toy_create(const char *backend, int threads, const nac_toy_config *c,
                          nac_toy_model *m);
void nac_toy_free(nac_toy_model *m);

/* `steps` NAC steps on the n points pts (n, 2): each step a fresh random subset of K points,
 * two views each = the point plus N(0, view_noise^2) noise. loss_out[step] receives each
 * step's loss; on_step (may be NULL) is called after each with it. */
nac_status nac_toy_train(nac_toy_model *m, const nac_toy_config *c, const float *pts, int64_t n,
                         int steps, float *loss_out,
                         nac_status (*on_step)(void *ctx, int step, float loss), void *ctx);

#endif
