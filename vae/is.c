/* Importance-sampled log-likelihood: the proposal's samples and log p(z) - log q(z|x)
 * run on the backend, a chunk of samples at a time; the per-image running logsumexp is
 * kept on the host in double precision. Plus the test-set totals (KL, active units). */
#include "vae/is.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/rng.h"

#define ACT(k, x, y, al, b_) nac_act_forward((k), (x), (y), (al), (b_))

typedef struct is_buf {
    nac_tensor_t mur, lvr, sdr, eps, z, t, prior, logp;
    float *hp, *hl, *heps;
    double *mx, *se, *sum;
} is_buf;

static void is_buf_free(is_buf *b) {
    nac_tensor_t *ts[] = {&b->mur, &b->lvr, &b->sdr, &b->eps, &b->z, &b->t, &b->prior, &b->logp};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) nac_tensor_release(ts[i]);
    free(b->hp);
    free(b->hl);
    free(b->heps);
    free(b->mx);
    free(b->se);
    free(b->sum);
}

/* Repeat mu and log var chunk times (row s*B + b = image b) and take sd = exp(lv/2). */
static nac_status is_setup(is_buf *b, const nac_tensor_t *mu, const nac_tensor_t *lv,
                           int chunk) {
    nac_backend_t *be = mu->be;
    int64_t nb = mu->dim[0], m = nb * chunk, l = mu->dim[1], dl[2] = {m, l};
    nac_tensor_t *ml[] = {&b->mur, &b->lvr, &b->sdr, &b->eps, &b->z, &b->t};
    for (size_t i = 0; i < sizeof ml / sizeof ml[0]; i++) nac_tensor_init(ml[i], be, 2, dl);
    nac_tensor_init(&b->prior, be, 1, &m);
    nac_tensor_init(&b->logp, be, 1, &m);
    b->hp = malloc((size_t)m * sizeof *b->hp);
    b->hl = malloc((size_t)m * sizeof *b->hl);
    b->heps = malloc((size_t)(m * l) * sizeof *b->heps);
    b->mx = malloc((size_t)nb * sizeof *b->mx);
    b->se = calloc((size_t)nb, sizeof *b->se);
    b->sum = calloc((size_t)nb, sizeof *b->sum);
    if (!b->hp || !b->hl || !b->heps || !b->mx || !b->se || !b->sum)
        return nac_error(NAC_ERR_NOMEM, "importance sampling: out of memory for %lld samples",
                         (long long)m);
    for (int64_t i = 0; i < nb; i++) b->mx[i] = -INFINITY;
    for (int s = 0; s < chunk; s++) {
        NAC_TRY(nac_copy_rows(mu, 0, &b->mur, s * nb, nb));
        NAC_TRY(nac_copy_rows(lv, 0, &b->lvr, s * nb, nb));
    }
    NAC_TRY(ACT(NAC_ACT_LINEAR, &b->lvr, &b->sdr, 0.5f, 0.0f));
    return ACT(NAC_ACT_EXP, &b->sdr, &b->sdr, 0, 0);
}

/* The noise of samples s0 .. s0+chunk-1: row s*B + b, latent u is element s*L + u of image
 * first+b's stream, so each image's samples depend neither on the chunk nor on the batch. */
static nac_status is_noise(is_buf *b, int64_t nb, int64_t l, int chunk, int64_t s0,
                           uint64_t key, int64_t first) {
#pragma omp parallel for if (nb * chunk * l > 65536)
    for (int64_t j = 0; j < nb; j++) {
        uint64_t kj = nac_rng_key(key, (uint64_t)(first + j), 0, 0);
        for (int64_t s = 0; s < chunk; s++)
            for (int64_t u = 0; u < l; u++)
                b->heps[(s * nb + j) * l + u] = nac_rng_normal_at(kj, (uint64_t)((s0 + s) * l + u));
    }
    return nac_tensor_from_host(&b->eps, b->heps);
}

/* One chunk: z = mu + sd eps; log p(z) - log q(z|x) = 0.5 sum(eps^2 - z^2 + lv) (the
 * 2 pi terms cancel); log weights folded into the running logsumexp per image. */
static nac_status is_chunk(is_buf *b, int64_t nb, int chunk, nac_vae_loglik_fn fn, void *ctx) {
    NAC_TRY(nac_binary(NAC_BIN_MUL, &b->sdr, &b->eps, &b->z));
    NAC_TRY(nac_binary(NAC_BIN_ADD, &b->mur, &b->z, &b->z));
    NAC_TRY(ACT(NAC_ACT_SQUARE, &b->eps, &b->t, 0, 0));
    NAC_TRY(nac_binary(NAC_BIN_ADD, &b->t, &b->lvr, &b->t));
    NAC_TRY(ACT(NAC_ACT_SQUARE, &b->z, &b->eps, 0, 0)); /* eps is redrawn next chunk */
    NAC_TRY(nac_binary(NAC_BIN_SUB, &b->t, &b->eps, &b->t));
    NAC_TRY(nac_row_sum(&b->t, &b->prior));
    NAC_TRY(fn(ctx, &b->z, &b->logp));
    NAC_TRY(nac_tensor_to_host(&b->prior, b->hp));
    NAC_TRY(nac_tensor_to_host(&b->logp, b->hl));
    for (int64_t i = 0; i < nb * chunk; i++) {
        int64_t j = i % nb;
        double w = (double)b->hl[i] + 0.5 * (double)b->hp[i];
        if (!isfinite(w))
            return nac_error(NAC_ERR_NUMERIC,
                             "importance sampling: log weight %g for image %lld of the batch",
                             w, (long long)j);
        if (w > b->mx[j]) {
            b->se[j] = b->se[j] * exp(b->mx[j] - w) + 1.0;
            b->mx[j] = w;
        } else {
            b->se[j] += exp(w - b->mx[j]);
        }
        b->sum[j] += w;
    }
    return NAC_OK;
}

nac_status nac_vae_is_estimate(const nac_tensor_t *mu, const nac_tensor_t *logvar, int k,
                               int chunk, uint64_t key, int64_t first, nac_vae_loglik_fn fn,
                               void *ctx, double *logpx, double *elbo) {
    const char *op = "nac_vae_is_estimate";
    if (!mu || !logvar || !fn || !logpx) return nac_error(NAC_ERR_INVALID, "%s: NULL argument", op);
    if (mu->ndim != 2 || !nac_tensor_same_shape(mu, logvar))
        return nac_error(NAC_ERR_INVALID, "%s: mu %s and logvar %s must be the same (B, L)", op,
                         nac_tensor_shape_str(mu, (char[64]){0}, 64),
                         nac_tensor_shape_str(logvar, (char[64]){0}, 64));
    if (k < 1 || chunk < 1 || k % chunk)
        return nac_error(NAC_ERR_INVALID,
                         "%s: %d samples in chunks of %d (the chunk must divide the samples)",
                         op, k, chunk);
    if (first < 0) return nac_error(NAC_ERR_INVALID, "%s: first image %lld", op, (long long)first);
    int64_t nb = mu->dim[0], l = mu->dim[1];
    is_buf b;
    memset(&b, 0, sizeof b);
    nac_status s = is_setup(&b, mu, logvar, chunk);
    for (int j = 0; s == NAC_OK && j < k / chunk; j++) {
        s = is_noise(&b, nb, l, chunk, (int64_t)j * chunk, key, first);
        if (s == NAC_OK) s = is_chunk(&b, nb, chunk, fn, ctx);
    }
    for (int64_t i = 0; s == NAC_OK && i < nb; i++) {
        logpx[i] = b.mx[i] + log(b.se[i]) - log((double)k);
        if (elbo) elbo[i] = b.sum[i] / k;
    }
    is_buf_free(&b);
    return s;
}

/* ---- test-set totals ---- */
nac_status nac_vae_eval_init(nac_vae_eval_t *e, int latent, int64_t dims, bool discrete) {
    memset(e, 0, sizeof *e);
    if (latent < 1 || dims < 1)
        return nac_error(NAC_ERR_INVALID, "nac_vae_eval_init: latent %d, dims %lld", latent,
                         (long long)dims);
    e->latent = latent;
    e->dims = dims;
    e->discrete = discrete;
    e->mu_mean = calloc((size_t)latent, sizeof *e->mu_mean);
    e->mu_m2 = calloc((size_t)latent, sizeof *e->mu_m2);
    if (!e->mu_mean || !e->mu_m2) {
        nac_vae_eval_free(e);
        return nac_error(NAC_ERR_NOMEM, "nac_vae_eval_init: out of memory");
    }
    return NAC_OK;
}

void nac_vae_eval_free(nac_vae_eval_t *e) {
    if (!e) return;
    free(e->mu_mean);
    free(e->mu_m2);
    free(e->img_logpx);
    free(e->img_kl);
    memset(e, 0, sizeof *e);
}

nac_status nac_vae_eval_add(nac_vae_eval_t *e, int64_t b, const float *mu, const float *logvar,
                            const double *logpx, const double *elbo) {
    if (!e || !e->mu_mean || !mu || !logvar || !logpx || !elbo || b < 0)
        return nac_error(NAC_ERR_INVALID, "nac_vae_eval_add: NULL argument");
    int l = e->latent;
    if (e->n + b > e->img_cap) {
        int64_t cap = e->img_cap ? e->img_cap : 256;
        while (cap < e->n + b) cap *= 2;
        double *lp = realloc(e->img_logpx, (size_t)cap * sizeof *lp);
        if (lp) e->img_logpx = lp;
        double *kp = lp ? realloc(e->img_kl, (size_t)cap * sizeof *kp) : NULL;
        if (kp) e->img_kl = kp;
        if (!lp || !kp) return nac_error(NAC_ERR_NOMEM, "nac_vae_eval_add: out of memory");
        e->img_cap = cap;
    }
    for (int64_t i = 0; i < b; i++) {
        e->img_logpx[e->n] = logpx[i];
        double n = (double)++e->n, kl = 0;
        const float *m = mu + i * l, *lv = logvar + i * l;
        for (int u = 0; u < l; u++) {
            kl += 0.5 * ((double)m[u] * m[u] + exp((double)lv[u]) - 1.0 - lv[u]);
            double dm = m[u] - e->mu_mean[u];
            e->mu_mean[u] += dm / n;
            e->mu_m2[u] += dm * (m[u] - e->mu_mean[u]);
        }
        double d = logpx[i] - e->lp_mean;
        e->lp_mean += d / n;
        e->lp_m2 += d * (logpx[i] - e->lp_mean);
        e->elbo_sum += elbo[i];
        e->kl_sum += kl;
        e->img_kl[e->n - 1] = kl;
    }
    return NAC_OK;
}

void nac_vae_eval_get(const nac_vae_eval_t *e, nac_vae_eval_result_t *r) {
    memset(r, 0, sizeof *r);
    r->images = e->n;
    r->discrete = e->discrete;
    if (e->n == 0) return;
    double n = (double)e->n, per_bit = (double)e->dims * log(2.0);
    r->logpx = e->lp_mean;
    r->logpx_se = e->n > 1 ? sqrt(e->lp_m2 / (n - 1) / n) : 0.0;
    r->bpd = -r->logpx / per_bit;
    r->bpd_se = r->logpx_se / per_bit;
    r->elbo = e->elbo_sum / n;
    r->kl = e->kl_sum / n;
    r->elbo_bpd = -r->elbo / per_bit;
    for (int u = 0; e->n > 1 && u < e->latent; u++)
        if (e->mu_m2[u] / (n - 1) > NAC_VAE_ACTIVE_THRESHOLD) r->active_units++;
}

const double *nac_vae_eval_logpx(const nac_vae_eval_t *e) { return e->img_logpx; }
const double *nac_vae_eval_kl(const nac_vae_eval_t *e) { return e->img_kl; }

/* ---- the VAE's own decoder as the callback ---- */
/* The decoder sees at most NAC_VAE_DECODE_ROWS latents at a time (or one sample of every
 * image, if the batch is larger): a chunk's samples are decoded `sub` at a time, so the
 * decoder's and the likelihood's buffers are planned once for sub*B rows, whatever the
 * chunk. Evaluation-mode batch norm treats every row alone, so this changes no number. */
typedef struct vae_ctx {
    nac_vae_t *v;
    int64_t nb;        /* images in the batch */
    int sub;           /* samples a decoder pass (divides the chunk) */
    nac_tensor_t zs;   /* (sub*B, L) a slice of the chunk's latents */
    nac_tensor_t lps;  /* (sub*B) their log-likelihoods */
    float *hl;         /* (chunk*B) on the host */
} vae_ctx;

static int decode_samples(int chunk, int64_t nb) {
    int sub = 1;
    for (int d = 1; d <= chunk; d++)
        if (chunk % d == 0 && (int64_t)d * nb <= NAC_VAE_DECODE_ROWS) sub = d;
    return sub;
}

static nac_status vae_decode_loglik(nac_vae_t *v, const nac_tensor_t *z, nac_tensor_t *logp) {
    const nac_tensor_t *loc, *ls;
    NAC_TRY(nac_vae_decoder_forward(v->dec, z, false, &loc, &ls));
    return nac_vae_lik_forward(&v->lik, loc, ls, v->log_sigma, logp);
}

static nac_status vae_loglik(void *ctx, const nac_tensor_t *z, nac_tensor_t *logp) {
    vae_ctx *c = ctx;
    int64_t rows = z->dim[0], m = (int64_t)c->sub * c->nb;
    if (rows == m) return vae_decode_loglik(c->v, z, logp);
    for (int64_t r0 = 0; r0 < rows; r0 += m) {
        NAC_TRY(nac_copy_rows(z, r0, &c->zs, 0, m));
        NAC_TRY(vae_decode_loglik(c->v, &c->zs, &c->lps));
        NAC_TRY(nac_tensor_to_host(&c->lps, c->hl + r0));
    }
    return nac_tensor_from_host(logp, c->hl);
}

nac_status nac_vae_eval_rows(nac_vae_t *v, const nac_tensor_t *h, const nac_tensor_t *x, int k,
                             int chunk, uint64_t key, int64_t first, float *mu_out,
                             float *logvar_out, double *logpx, double *elbo) {
    if (!v || !h || !x || !mu_out || !logvar_out || !logpx || !elbo)
        return nac_error(NAC_ERR_INVALID, "nac_vae_eval_rows: NULL argument");
    if (x->dim[0] != h->dim[0])
        return nac_error(NAC_ERR_INVALID, "nac_vae_eval_rows: %lld feature rows, %lld images",
                         (long long)h->dim[0], (long long)x->dim[0]);
    int64_t nb = h->dim[0], l = v->cfg.latent, dl[2] = {nb, l};
    v->can_backward = false;
    nac_tensor_t mu, lv;
    nac_tensor_init(&mu, v->be, 2, dl);
    nac_tensor_init(&lv, v->be, 2, dl);
    nac_status s = nac_vae_encode(v, h, &mu, &lv);
    if (s == NAC_OK) s = nac_tensor_to_host(&mu, mu_out);
    if (s == NAC_OK) s = nac_tensor_to_host(&lv, logvar_out);
    vae_ctx c = {.v = v, .nb = nb, .sub = decode_samples(chunk, nb)};
    int64_t dz[2] = {c.sub * nb, l}, m = c.sub * nb;
    nac_tensor_init(&c.zs, v->be, 2, dz);
    nac_tensor_init(&c.lps, v->be, 1, &m);
    c.hl = malloc((size_t)(chunk * nb) * sizeof *c.hl);
    if (s == NAC_OK && !c.hl) s = nac_error(NAC_ERR_NOMEM, "nac_vae_eval_rows: out of memory");
    if (s == NAC_OK) s = nac_vae_lik_set_data(&v->lik, x, c.sub);
    if (s == NAC_OK) s = nac_vae_is_estimate(&mu, &lv, k, chunk, key, first, vae_loglik, &c, logpx, elbo);
    nac_tensor_release(&c.zs);
    nac_tensor_release(&c.lps);
    free(c.hl);
    nac_tensor_release(&mu);
    nac_tensor_release(&lv);
    return s;
}

nac_status nac_vae_eval_batch(nac_vae_t *v, const nac_tensor_t *h, const nac_tensor_t *x, int k,
                              int chunk, uint64_t key, nac_vae_eval_t *e) {
    if (!v || !h || !x || !e || !e->mu_mean)
        return nac_error(NAC_ERR_INVALID, "nac_vae_eval_batch: NULL or uninitialised argument");
    if (e->latent != v->cfg.latent)
        return nac_error(NAC_ERR_INVALID, "nac_vae_eval_batch: totals for %d latents, VAE has %d",
                         e->latent, v->cfg.latent);
    int64_t nb = h->dim[0], l = v->cfg.latent;
    float *hm = malloc((size_t)(nb * l) * sizeof *hm), *hv = malloc((size_t)(nb * l) * sizeof *hv);
    double *lp = malloc((size_t)nb * sizeof *lp), *el = malloc((size_t)nb * sizeof *el);
    nac_status s = hm && hv && lp && el ? NAC_OK
                                        : nac_error(NAC_ERR_NOMEM, "nac_vae_eval_batch: out of memory");
    if (s == NAC_OK) s = nac_vae_eval_rows(v, h, x, k, chunk, key, e->n, hm, hv, lp, el);
    if (s == NAC_OK) s = nac_vae_eval_add(e, nb, hm, hv, lp, el);
    free(hm);
    free(hv);
    free(lp);
    free(el);
    return s;
}
