/* The VAE on top of an encoder body: a new posterior head Linear(F, 2L) -> (mu, log
 * sigma^2), reparameterised sampling, the decoder, a pixel likelihood and the ELBO with a
 * KL weight (warm-up). The trainer runs body forward -> nac_vae_forward(h, x) ->
 * nac_vae_backward -> body backward with dh. Everything in the step is backend ops. */
#ifndef NAC_VAE_VAE_H
#define NAC_VAE_VAE_H

#include "nn/param.h"
#include "vae/decoder.h"
#include "vae/likelihood.h"

/* Optimiser groups of the VAE's parameters (the encoder body is group 0). */
enum { NAC_VAE_GROUP_HEAD = 1, NAC_VAE_GROUP_DECODER = 2 };

typedef struct nac_vae_config {
    int features;              /* F: the encoder's feature size */
    int latent;                /* L: latent size (128) */
    int channels, size;        /* images: C channels, H = W = size (3/32 or 1/28) */
    int width;                 /* decoder base width (64; smaller for CPU runs) */
    int blocks;                /* decoder residual blocks per stage (1) */
    nac_vae_lik_kind likelihood;
    float sigma;               /* GAUSSIAN: > 0 fixes sigma (every channel, not trained);
                                  0 learns log sigma per channel from 0 */
    bool head_zero;            /* the posterior head starts at zero (q(z|x) = N(0, I) for
                                  every x) instead of PyTorch's default Linear init */
} nac_vae_config;

/* Means over the batch, nats per image. */
typedef struct nac_vae_stats {
    double loss;  /* the objective: rec + beta * kl */
    double nelbo; /* -ELBO = rec + kl */
    double rec;   /* -log p(x|z), z one sample from q(z|x) */
    double kl;    /* KL(q(z|x) || N(0, I)), analytic */
} nac_vae_stats;

typedef struct nac_vae {
    nac_vae_config cfg;
    nac_backend_t *be;
    nac_params_t params;         /* "head.*" (group 1), "decoder.*" (group 2) */
    nac_param_t *head_w, *head_b; /* (2L, F), (2L): rows 0..L-1 give mu, L..2L-1 log var */
    nac_param_t *log_sigma;      /* "decoder.log_sigma" (C), Gaussian likelihood only */
    nac_vae_decoder_t *dec;
    nac_vae_lik_t lik;
    bool train;                  /* decoder batch norm mode (nac_vae_set_train) */
    int64_t eps_row0;            /* data parallelism: this rank's rows are rows eps_row0.. of
                                    the global batch, and draw that batch's noise (0: one
                                    process; see nac_vae_forward) */
    float *eps_host;             /* (N, L) host noise when eps_row0 > 0 */
    nac_bn_sync bn_sync;         /* the decoder's batch norm across ranks (nac_vae_set_bn_comm) */
    /* the step's buffers, planned per batch size n */
    int64_t n;
    bool can_backward;
    float beta;
    const nac_tensor_t *h;
    nac_tensor_t sel_mu, sel_lv;        /* (2L, L) column selections of the head output */
    nac_tensor_t hd, mu, lv, sd, var, eps, z, kl, logp, sum; /* forward */
    nac_tensor_t dloc, dls, dz, dmu, dlv, dhd, tl;            /* backward, (N, L) scratch */
} nac_vae_t;

/* Parameters drawn from (seed, NAC_STREAM_INIT, hash of the name); PyTorch's default
 * Linear/Conv2d initialisation. */
nac_status nac_vae_create(nac_backend_t *be, const nac_vae_config *cfg, uint64_t seed,
                          nac_vae_t **out);
void nac_vae_free(nac_vae_t *v); /* accepts NULL */
/* Re-express the head as if it read standardised features (h - mean) / std: W <- W / std
 * (per input column), b <- b - W' mean. At creation this makes the default-initialised head
 * act on z-scored features, whatever the body's feature scale. mean, std: (F) host arrays,
 * std > 0. */
nac_status nac_vae_head_standardize(nac_vae_t *v, const float *mean, const float *std);
/* Training (batch statistics) or evaluation (running statistics) batch norm in the
 * decoder; created in training mode. */
void nac_vae_set_train(nac_vae_t *v, bool train);
/* Synchronised batch norm for the decoder (nn/layers.h nac_bn_sync): with comm, every
 * training forward normalises with the statistics of all ranks' rows (and the backward
 * sums its reductions over them); NULL: each rank's own rows. Every rank must call the
 * training forward and backward together. */
void nac_vae_set_bn_comm(nac_vae_t *v, nac_comm_t *comm);

/* h (N, F) features, x (N, C, H, W) or (N, D) raw pixels in [0, 1] (k/255 for the
 * logistic, binarised {0, 1} for the Bernoulli). eps_key: the key of the noise, e.g.
 * nac_rng_key(run_seed, NAC_STREAM_LATENT, step, 0): row b, latent u draws element
 * (eps_row0 + b) L + u of its stream, so a rank holding rows [r0, r0 + N) of a global
 * batch (v->eps_row0 = r0) draws for each image the noise one process draws for it. beta: the KL weight. h must stay
 * unchanged until backward. stats may be NULL (then nothing is read back to the host). */
nac_status nac_vae_forward(nac_vae_t *v, const nac_tensor_t *h, const nac_tensor_t *x,
                           uint64_t eps_key, float beta, nac_vae_stats *stats);
/* Gradients of the mean loss (stats.loss) after a training-mode forward: written to every
 * head and decoder parameter's g, and to dh (N, F) for the encoder body (NULL: body
 * frozen, dh not computed). */
nac_status nac_vae_backward(nac_vae_t *v, nac_tensor_t *dh);

/* The posterior: mu and log sigma^2 (N, L) of q(z|h) (written). */
nac_status nac_vae_encode(nac_vae_t *v, const nac_tensor_t *h, nac_tensor_t *mu,
                          nac_tensor_t *logvar);
/* Mean images of p(x|z) for z (N, L), to the host as (N, C, H, W) floats in [0, 1], with
 * evaluation-mode batch norm (reconstructions from mu, samples from z ~ N(0, I)). */
nac_status nac_vae_decode_mean(nac_vae_t *v, const nac_tensor_t *z, float *out);

#endif
