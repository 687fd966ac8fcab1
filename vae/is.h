/* Evaluation of a VAE: log p(x) by importance sampling with q(z|x) as the proposal,
 *   log p(x) ~= logsumexp_k(log p(x|z_k) + log p(z_k) - log q(z_k|x)) - log K,
 * batched over samples; the K-sample ELBO, the analytic KL and the active units of
 * Burda et al. (2016) accumulated over a test set. The estimator takes any decoder
 * log-likelihood as a callback, so it can be checked on models with a closed form. */
#ifndef NAC_VAE_IS_H
#define NAC_VAE_IS_H

#include <stdbool.h>

#include "vae/vae.h"

/* log p(x_b | z) for a chunk of latents: z (S*B, L), row s*B + b a sample for image b;
 * writes logp (S*B). */
typedef nac_status (*nac_vae_loglik_fn)(void *ctx, const nac_tensor_t *z, nac_tensor_t *logp);

/* For each row b of mu, logvar (B, L) (a diagonal Gaussian q(z|x_b)): draws k samples,
 * chunk at a time (chunk must divide k; the callback sees chunk*B latents). Row b is image
 * first+b of the evaluation: its sample s, latent u draws element s*L + u of the stream
 * nac_rng_key(key, first + b, 0, 0), so an image's estimate is the same whatever the chunk
 * and however the images are batched. Writes logpx[b] (the estimate, nats) and, if elbo is
 * not NULL, elbo[b] = the mean over the k samples of the log weight. */
nac_status nac_vae_is_estimate(const nac_tensor_t *mu, const nac_tensor_t *logvar, int k,
                               int chunk, uint64_t key, int64_t first, nac_vae_loglik_fn fn,
                               void *ctx, double *logpx, double *elbo);

/* Running totals over a test set. */
typedef struct nac_vae_eval {
    int latent;
    int64_t dims;       /* C*H*W, for bits/dim */
    bool discrete;      /* log p(x) is a probability (false: a density, Gaussian) */
    int64_t n;          /* images so far */
    double lp_mean, lp_m2; /* Welford mean and sum of squared deviations of log p(x) */
    double elbo_sum, kl_sum;
    double *mu_mean, *mu_m2; /* (latent) Welford statistics of E_q[z|x] = mu over images */
    double *img_logpx, *img_kl; /* (n) per image, in the order added: paired comparisons */
    int64_t img_cap;
} nac_vae_eval_t;

typedef struct nac_vae_eval_result {
    int64_t images;
    double logpx, logpx_se; /* mean log p(x) and its standard error, nats per image */
    double bpd, bpd_se;     /* -log p(x) / (C*H*W ln 2) */
    double elbo, kl;        /* mean ELBO (K-sample average) and mean KL, nats per image */
    double elbo_bpd;        /* -ELBO in bits/dim */
    int active_units;       /* units with Var_x(mu_u) > 0.01 (unbiased variance) */
    bool discrete;          /* false: Gaussian density, bits/dim not comparable */
} nac_vae_eval_result_t;

#define NAC_VAE_ACTIVE_THRESHOLD 0.01

nac_status nac_vae_eval_init(nac_vae_eval_t *e, int latent, int64_t dims, bool discrete);
void nac_vae_eval_free(nac_vae_eval_t *e); /* accepts NULL and zeroed structs */
/* Add b images: mu, logvar (b, latent) host arrays; logpx and elbo (b). The KL is
 * computed here (analytic, double precision). */
nac_status nac_vae_eval_add(nac_vae_eval_t *e, int64_t b, const float *mu, const float *logvar,
                            const double *logpx, const double *elbo);
/* Latents a decoder pass of the IS evaluation takes at most (more only when one sample of
 * every image of a batch is more): bounds the evaluation's memory whatever K and chunk. */
#define NAC_VAE_DECODE_ROWS 256

/* One test batch: h (B, F) the encoder's features (evaluation mode), x (B, C, H, W)
 * pixels as for training. Runs the head, the IS estimate with k samples in chunks of
 * `chunk` (noise drawn and log weights folded chunk*B at a time; the decoder, with
 * evaluation-mode batch norm, decodes them in passes of at most NAC_VAE_DECODE_ROWS) and
 * adds the batch to e. key: one key for the whole evaluation (e.g. nac_rng_key(seed,
 * NAC_STREAM_LATENT, 1 << 30, 0)); the batch's images are images e->n, e->n + 1, ... of it
 * (nac_vae_is_estimate's `first`), so the result does not depend on the batch size. */
nac_status nac_vae_eval_batch(nac_vae_t *v, const nac_tensor_t *h, const nac_tensor_t *x, int k,
                              int chunk, uint64_t key, nac_vae_eval_t *e);
/* The per-image part of nac_vae_eval_batch without the totals: for the batch's images,
 * images first, first + 1, ... of the evaluation (the IS noise key), mu and log var
 * (B, L) and the estimate and K-sample ELBO (B) to the host. The totals are then
 * nac_vae_eval_add of these rows in image order, wherever (on whichever rank) they were
 * computed. */
nac_status nac_vae_eval_rows(nac_vae_t *v, const nac_tensor_t *h, const nac_tensor_t *x, int k,
                             int chunk, uint64_t key, int64_t first, float *mu, float *logvar,
                             double *logpx, double *elbo);
void nac_vae_eval_get(const nac_vae_eval_t *e, nac_vae_eval_result_t *r);
/* Per-image log p(x) and KL (nats) of the e->n images added so far, in the order they were
 * added (the test split's order): two rows evaluated on the same split pair up by index. */
const double *nac_vae_eval_logpx(const nac_vae_eval_t *e);
const double *nac_vae_eval_kl(const nac_vae_eval_t *e);

#endif
