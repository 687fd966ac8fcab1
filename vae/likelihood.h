/* Per-pixel likelihoods p(x | decoder output) of the VAE: the 256-bin discretised
 * logistic (PixelCNN++), a Gaussian with a learned per-channel scale, and a Bernoulli.
 * Forward gives log p(x|z) per image; backward its gradient w.r.t. the decoder output.
 * Everything runs as backend ops on plain (N, D) tensors, D = C*H*W in NCHW order. */
#ifndef NAC_VAE_LIKELIHOOD_H
#define NAC_VAE_LIKELIHOOD_H

#include "nn/param.h"

typedef enum nac_vae_lik_kind {
    /* 256 bins of width 2/255 on [-1, 1] (pixels x in {0, 1/255, ..., 1} mapped by 2x-1),
       edge bins take the tails; the decoder gives a mean and a log-scale per subpixel
       (log-scale clamped at -7). A probability: bits/dim comparable to the literature. */
    NAC_VAE_LIK_LOGISTIC = 0,
    /* N(x; mean, sigma_c^2) on x in [0, 1] with sigma_c = exp(log_sigma[c]), a learned
       parameter per channel. A continuous density: its "bits/dim" is not comparable. */
    NAC_VAE_LIK_GAUSSIAN = 1,
    /* Bernoulli(x; sigmoid(logit)) on binarised pixels x in {0, 1}. */
    NAC_VAE_LIK_BERNOULLI = 2
} nac_vae_lik_kind;

const char *nac_vae_lik_name(nac_vae_lik_kind kind); /* "logistic", "gaussian", "bernoulli" */
/* Decoder output maps per pixel: 2 (mean, log-scale) for LOGISTIC, else 1. */
int nac_vae_lik_maps(nac_vae_lik_kind kind);
/* True where log p(x) is a probability of discrete data, so bits/dim is comparable. */
int nac_vae_lik_discrete(nac_vae_lik_kind kind);

/* State of one likelihood: the batch's data and what forward keeps for backward.
 * Buffers are planned for one batch size N and re-planned when it changes. */
typedef struct nac_vae_lik {
    nac_vae_lik_kind kind;
    nac_backend_t *be;
    int64_t c, hw, n;              /* channels, pixels per channel, planned batch (0: none) */
    bool have_fwd;                 /* forward ran on the current data */
    const nac_tensor_t *loc;       /* forward's decoder output (BERNOULLI backward reads it) */
    nac_tensor_t x;                /* (N, D) pixels of the batch */
    nac_tensor_t xb;               /* (B, D) staging for repeated data */
    nac_tensor_t xs, nlo, nhi, mid; /* LOGISTIC: 2x-1, 1-[x=0], 1-[x=1], [0<x<1] */
    nac_tensor_t lsp, u, a, b, d, th; /* LOGISTIC forward: ls+7, 1/s, upper/lower bin edge
                                         (standardised), their gap, tanh(gap/2) */
    nac_tensor_t zg;               /* GAUSSIAN: (x - mean) / sigma, (N, D) */
    nac_tensor_t lsv, inv, lscol, lsmat; /* GAUSSIAN: log sigma and 1/sigma per element (D),
                                            log sigma as (C,1), expanded (C,HW) */
    nac_tensor_t ones_hw, ones_n;  /* (1, HW), (N, 1) */
    nac_tensor_t colsum, csmat;    /* GAUSSIAN backward: (1, D), (C, HW) */
    nac_tensor_t lpix;             /* (N, D) log p per pixel of the last forward */
    nac_tensor_t t0, t1, t2, t3;   /* (N, D) scratch */
} nac_vae_lik_t;

/* c channels, hw = H*W pixels per channel. */
nac_status nac_vae_lik_init(nac_vae_lik_t *lk, nac_backend_t *be, nac_vae_lik_kind kind,
                            int64_t c, int64_t hw);
void nac_vae_lik_free(nac_vae_lik_t *lk); /* accepts NULL and zeroed structs */

/* The batch's pixels: x is (B, C, H, W) or (B, D), values in [0, 1] (exactly k/255 for
 * LOGISTIC, {0, 1} for BERNOULLI: the caller binarises). reps > 1 repeats the batch:
 * row r*B + b of the planned batch (N = reps*B) holds image b. */
nac_status nac_vae_lik_set_data(nac_vae_lik_t *lk, const nac_tensor_t *x, int reps);

/* logp (N) = log p(x_n | out_n) summed over pixels. loc (N, D): means (LOGISTIC, on the
 * [-1, 1] scale; GAUSSIAN, on [0, 1]) or logits (BERNOULLI); log_scale (N, D) for
 * LOGISTIC only (else NULL); log_sigma the (C) parameter for GAUSSIAN only (else NULL).
 * loc must stay unchanged until backward. */
nac_status nac_vae_lik_forward(nac_vae_lik_t *lk, const nac_tensor_t *loc,
                               const nac_tensor_t *log_scale, const nac_param_t *log_sigma,
                               nac_tensor_t *logp);
/* The per-pixel log-probabilities (N, D) of the last forward (logp is their row sums):
 * likelihood maps, and a loss summed in double precision for finite-difference checks. */
const nac_tensor_t *nac_vae_lik_pixels(const nac_vae_lik_t *lk);
/* Gradient of scale * sum_n logp_n: dloc (N, D) and dlog_scale (N, D) (LOGISTIC) are
 * written; for GAUSSIAN the gradient w.r.t. log_sigma is written to log_sigma->g. */
nac_status nac_vae_lik_backward(nac_vae_lik_t *lk, float scale, nac_tensor_t *dloc,
                                nac_tensor_t *dlog_scale, nac_param_t *log_sigma);

#endif
