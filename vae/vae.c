/* The VAE step: posterior head, reparameterised sample, analytic KL, decoder and
 * likelihood, the (beta-weighted) ELBO and its backward down to the encoder features.
 * Buffers are planned for one batch size; steady-state steps allocate nothing. */
#include "vae/vae.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/rng.h"

#define ACT(k, x, y, al, b_) NAC_TRY(nac_act_forward((k), (x), (y), (al), (b_)))
#define LIN(x, y, al, b_) ACT(NAC_ACT_LINEAR, (x), (y), (al), (b_))
#define BIN(k, a, b, y) NAC_TRY(nac_binary((k), (a), (b), (y)))

static void t2(nac_tensor_t *t, nac_backend_t *be, int64_t r, int64_t c) {
    int64_t d[2] = {r, c};
    nac_tensor_init(t, be, 2, d);
}

#define STEP_TENSORS(v) \
    {&(v)->hd, &(v)->mu, &(v)->lv, &(v)->sd, &(v)->var, &(v)->eps, &(v)->z, &(v)->kl, \
     &(v)->logp, &(v)->dloc, &(v)->dls, &(v)->dz, &(v)->dmu, &(v)->dlv, &(v)->dhd, &(v)->tl}

static void release_step(nac_vae_t *v) {
    nac_tensor_t *ts[] = STEP_TENSORS(v);
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) nac_tensor_release(ts[i]);
    free(v->eps_host);
    v->eps_host = NULL;
    v->n = 0;
    v->can_backward = false;
}

static void plan(nac_vae_t *v, int64_t n) {
    if (v->n == n) return;
    release_step(v);
    nac_backend_t *be = v->be;
    int64_t l = v->cfg.latent, dd = (int64_t)v->cfg.channels * v->cfg.size * v->cfg.size;
    t2(&v->hd, be, n, 2 * l);
    t2(&v->dhd, be, n, 2 * l);
    nac_tensor_t *nl[] = {&v->mu, &v->lv, &v->sd, &v->var, &v->eps, &v->z,
                          &v->dz, &v->dmu, &v->dlv, &v->tl};
    for (size_t i = 0; i < sizeof nl / sizeof nl[0]; i++) t2(nl[i], be, n, l);
    nac_tensor_init(&v->kl, be, 1, &n);
    nac_tensor_init(&v->logp, be, 1, &n);
    t2(&v->dloc, be, n, dd);
    t2(&v->dls, be, n, dd);
    v->n = n;
}

/* sel_mu / sel_lv (2L, L): mu = hd sel_mu, log var = hd sel_lv. A product with a 0/1
 * selection matrix is exact, and costs N*2L*L multiply-adds, nothing next to the decoder. */
static nac_status make_selections(nac_vae_t *v) {
    int64_t l = v->cfg.latent;
    float *s = calloc((size_t)(2 * l * l), sizeof *s);
    if (!s) return nac_error(NAC_ERR_NOMEM, "VAE: out of memory");
    t2(&v->sel_mu, v->be, 2 * l, l);
    t2(&v->sel_lv, v->be, 2 * l, l);
    for (int64_t j = 0; j < l; j++) s[j * l + j] = 1.0f;
    nac_status st = nac_tensor_from_host(&v->sel_mu, s);
    memset(s, 0, (size_t)(2 * l * l) * sizeof *s);
    for (int64_t j = 0; j < l; j++) s[(l + j) * l + j] = 1.0f;
    if (st == NAC_OK) st = nac_tensor_from_host(&v->sel_lv, s);
    free(s);
    return st;
}

static nac_status build(nac_vae_t *v, uint64_t seed) {
    const nac_vae_config *c = &v->cfg;
    /* nn.Linear's initialisation, or zeros (head_zero: nac_params_add leaves them zero) */
    const nac_builder_t bld = {.ps = &v->params, .be = v->be, .seed = seed,
                               .skip_init = c->head_zero, .group = NAC_VAE_GROUP_HEAD};
    nac_linear_unit head;
    NAC_TRY(nac_linear_unit_add(&bld, &head, "head", c->features, 2 * c->latent, true));
    v->head_w = head.w;
    v->head_b = head.b;
    nac_vae_decoder_config dc = {.latent = c->latent,
                                 .channels = c->channels,
                                 .size = c->size,
                                 .width = c->width,
                                 .blocks = c->blocks,
                                 .maps = nac_vae_lik_maps(c->likelihood),
                                 .bn_sync = &v->bn_sync};
    NAC_TRY(nac_vae_decoder_create(v->be, &dc, seed, &v->params, &v->dec));
    if (c->likelihood == NAC_VAE_LIK_GAUSSIAN) {
        int64_t ch = c->channels;
        v->log_sigma = nac_params_add(&v->params, v->be, "decoder.log_sigma", 1, &ch, 0);
        if (!v->log_sigma) return NAC_ERR_INVALID;
        v->log_sigma->group = NAC_VAE_GROUP_DECODER; /* starts at 0: sigma = 1 */
        if (c->sigma > 0) { /* a fixed-variance Gaussian: the optimiser skips it */
            v->log_sigma->flags |= NAC_PARAM_FROZEN;
            NAC_TRY(nac_tensor_fill(&v->log_sigma->w, logf(c->sigma)));
        }
    }
    NAC_TRY(nac_vae_lik_init(&v->lik, v->be, c->likelihood, c->channels,
                             (int64_t)c->size * c->size));
    NAC_TRY(make_selections(v));
    int64_t one = 1;
    nac_tensor_init(&v->sum, v->be, 1, &one);
    return NAC_OK;
}

nac_status nac_vae_head_standardize(nac_vae_t *v, const float *mean, const float *std) {
    if (!v || !mean || !std) return nac_error(NAC_ERR_INVALID, "nac_vae_head_standardize: NULL argument");
    int64_t f = v->cfg.features, rows = 2 * (int64_t)v->cfg.latent;
    for (int64_t j = 0; j < f; j++)
        if (!(std[j] > 0) || !isfinite(mean[j]))
            return nac_error(NAC_ERR_NUMERIC, "VAE head: feature %lld has std %g, mean %g",
                             (long long)j, (double)std[j], (double)mean[j]);
    float *w = malloc((size_t)(rows * f) * sizeof *w), *b = malloc((size_t)rows * sizeof *b);
    nac_status s = w && b ? NAC_OK : nac_error(NAC_ERR_NOMEM, "VAE head: out of memory");
    if (s == NAC_OK) s = nac_tensor_to_host(&v->head_w->w, w);
    if (s == NAC_OK) s = nac_tensor_to_host(&v->head_b->w, b);
    for (int64_t r = 0; s == NAC_OK && r < rows; r++) {
        double shift = 0;
        for (int64_t j = 0; j < f; j++) {
            w[r * f + j] /= std[j];
            shift += (double)w[r * f + j] * mean[j];
        }
        b[r] -= (float)shift;
    }
    if (s == NAC_OK) s = nac_tensor_from_host(&v->head_w->w, w);
    if (s == NAC_OK) s = nac_tensor_from_host(&v->head_b->w, b);
    free(w);
    free(b);
    return s;
}

nac_status nac_vae_create(nac_backend_t *be, const nac_vae_config *cfg, uint64_t seed,
                          nac_vae_t **out) {
    if (!be || !cfg || !out) return nac_error(NAC_ERR_INVALID, "nac_vae_create: NULL argument");
    *out = NULL;
    if (cfg->features < 1 || cfg->latent < 1 || cfg->channels < 1 ||
        cfg->likelihood < NAC_VAE_LIK_LOGISTIC || cfg->likelihood > NAC_VAE_LIK_BERNOULLI ||
        !(cfg->sigma >= 0 && cfg->sigma < 1e6f))
        return nac_error(NAC_ERR_INVALID,
                         "VAE: invalid configuration (features %d, latent %d, channels %d, "
                         "likelihood %d, sigma %g)",
                         cfg->features, cfg->latent, cfg->channels, (int)cfg->likelihood,
                         (double)cfg->sigma);
    nac_vae_t *v = calloc(1, sizeof *v);
    if (!v) return nac_error(NAC_ERR_NOMEM, "VAE: out of memory");
    v->cfg = *cfg;
    v->be = be;
    v->train = true;
    nac_params_init(&v->params);
    nac_status s = build(v, seed);
    if (s != NAC_OK) {
        nac_error_prefix(s, "creating the VAE: ");
        nac_vae_free(v);
        return s;
    }
    *out = v;
    return NAC_OK;
}

void nac_vae_free(nac_vae_t *v) {
    if (!v) return;
    release_step(v);
    nac_tensor_release(&v->sel_mu);
    nac_tensor_release(&v->sel_lv);
    nac_tensor_release(&v->sum);
    nac_vae_lik_free(&v->lik);
    nac_vae_decoder_free(v->dec);
    nac_params_free(&v->params);
    nac_bn_sync_release(&v->bn_sync);
    free(v);
}

void nac_vae_set_bn_comm(nac_vae_t *v, nac_comm_t *comm) {
    if (v) v->bn_sync.comm = comm;
}

void nac_vae_set_train(nac_vae_t *v, bool train) {
    if (v) v->train = train;
}

static nac_status check_h(const nac_vae_t *v, const char *op, const nac_tensor_t *h) {
    if (!h || h->ndim != 2 || h->dim[1] != v->cfg.features)
        return nac_error(NAC_ERR_INVALID, "%s: features h must be (N,%d), got %s", op,
                         v->cfg.features, nac_tensor_shape_str(h, (char[64]){0}, 64));
    return NAC_OK;
}

static nac_status head_forward(nac_vae_t *v, const nac_tensor_t *h, nac_tensor_t *hd,
                               nac_tensor_t *mu, nac_tensor_t *lv) {
    NAC_TRY(nac_linear_forward(h, &v->head_w->w, &v->head_b->w, hd));
    NAC_TRY(nac_gemm(false, false, 1.0f, hd, &v->sel_mu, 0.0f, mu));
    return nac_gemm(false, false, 1.0f, hd, &v->sel_lv, 0.0f, lv);
}

nac_status nac_vae_encode(nac_vae_t *v, const nac_tensor_t *h, nac_tensor_t *mu,
                          nac_tensor_t *logvar) {
    if (!v || !mu || !logvar) return nac_error(NAC_ERR_INVALID, "nac_vae_encode: NULL argument");
    NAC_TRY(check_h(v, "nac_vae_encode", h));
    nac_tensor_t hd;
    t2(&hd, v->be, h->dim[0], 2 * (int64_t)v->cfg.latent);
    nac_status s = head_forward(v, h, &hd, mu, logvar);
    nac_tensor_release(&hd);
    return s;
}

/* The noise of global rows eps_row0 .. eps_row0 + N - 1: the elements of the key's
 * stream that nac_tensor_rand would give those rows of the whole batch. */
static nac_status draw_eps(nac_vae_t *v, uint64_t key) {
    if (v->eps_row0 == 0) return nac_tensor_rand(&v->eps, NAC_RAND_NORMAL, 1.0f, key);
    int64_t m = v->n * v->cfg.latent, o = v->eps_row0 * v->cfg.latent;
    if (!v->eps_host && !(v->eps_host = malloc((size_t)m * sizeof *v->eps_host)))
        return nac_error(NAC_ERR_NOMEM, "VAE: out of memory for the noise");
    for (int64_t i = 0; i < m; i++) v->eps_host[i] = nac_rng_normal_at(key, (uint64_t)(o + i));
    return nac_tensor_from_host(&v->eps, v->eps_host);
}

static nac_status read_sum(const nac_tensor_t *t, nac_tensor_t *sum, double *out) {
    float f;
    NAC_TRY(nac_sum_all(t, sum));
    NAC_TRY(nac_tensor_item(sum, &f));
    *out = f;
    return NAC_OK;
}

nac_status nac_vae_forward(nac_vae_t *v, const nac_tensor_t *h, const nac_tensor_t *x,
                           uint64_t eps_key, float beta, nac_vae_stats *stats) {
    const char *op = "nac_vae_forward";
    if (!v || !x) return nac_error(NAC_ERR_INVALID, "%s: NULL argument", op);
    NAC_TRY(check_h(v, op, h));
    if (x->dim[0] != h->dim[0])
        return nac_error(NAC_ERR_INVALID, "%s: %lld feature rows but images %s", op,
                         (long long)h->dim[0], nac_tensor_shape_str(x, (char[64]){0}, 64));
    if (!(beta >= 0.0f) || !isfinite(beta))
        return nac_error(NAC_ERR_INVALID, "%s: KL weight %g must be finite and >= 0", op,
                         (double)beta);
    plan(v, h->dim[0]);
    v->can_backward = false;
    NAC_TRY(head_forward(v, h, &v->hd, &v->mu, &v->lv));
    /* z = mu + exp(lv/2) eps */
    LIN(&v->lv, &v->sd, 0.5f, 0.0f);
    ACT(NAC_ACT_EXP, &v->sd, &v->sd, 0, 0);
    NAC_TRY(draw_eps(v, eps_key));
    BIN(NAC_BIN_MUL, &v->sd, &v->eps, &v->z);
    BIN(NAC_BIN_ADD, &v->mu, &v->z, &v->z);
    /* KL = 0.5 sum (mu^2 + e^lv - 1 - lv) */
    ACT(NAC_ACT_EXP, &v->lv, &v->var, 0, 0);
    ACT(NAC_ACT_SQUARE, &v->mu, &v->tl, 0, 0);
    BIN(NAC_BIN_ADD, &v->tl, &v->var, &v->tl);
    BIN(NAC_BIN_SUB, &v->tl, &v->lv, &v->tl);
    LIN(&v->tl, &v->tl, 0.5f, -0.5f);
    NAC_TRY(nac_row_sum(&v->tl, &v->kl));

    const nac_tensor_t *loc, *ls;
    NAC_TRY(nac_vae_decoder_forward(v->dec, &v->z, v->train, &loc, &ls));
    NAC_TRY(nac_vae_lik_set_data(&v->lik, x, 1));
    NAC_TRY(nac_vae_lik_forward(&v->lik, loc, ls, v->log_sigma, &v->logp));
    v->h = h;
    v->beta = beta;
    v->can_backward = v->train;
    if (!stats) return NAC_OK;
    double slp, skl, n = (double)v->n;
    NAC_TRY(read_sum(&v->logp, &v->sum, &slp));
    NAC_TRY(read_sum(&v->kl, &v->sum, &skl));
    stats->rec = -slp / n;
    stats->kl = skl / n;
    stats->nelbo = stats->rec + stats->kl;
    stats->loss = stats->rec + beta * stats->kl;
    return NAC_OK;
}

/* loss = mean_n(-logp_n + beta kl_n):
 *   dmu = dz + (beta/N) mu
 *   dlv = 0.5 dz eps sd + (beta/2N)(e^lv - 1)
 *   dhd = dmu sel_mu^T + dlv sel_lv^T, then the head's linear backward. */
nac_status nac_vae_backward(nac_vae_t *v, nac_tensor_t *dh) {
    if (!v) return nac_error(NAC_ERR_INVALID, "nac_vae_backward: NULL VAE");
    if (!v->can_backward)
        return nac_error(NAC_ERR_INVALID,
                         "nac_vae_backward: needs a training-mode nac_vae_forward first");
    if (dh) NAC_TRY(check_h(v, "nac_vae_backward (dh)", dh));
    if (dh && dh->dim[0] != v->n)
        return nac_error(NAC_ERR_INVALID, "nac_vae_backward: dh must have %lld rows",
                         (long long)v->n);
    float n = (float)v->n, kb = v->beta / n;
    NAC_TRY(nac_vae_lik_backward(&v->lik, -1.0f / n, &v->dloc,
                                 v->cfg.likelihood == NAC_VAE_LIK_LOGISTIC ? &v->dls : NULL,
                                 v->log_sigma));
    NAC_TRY(nac_vae_decoder_backward(v->dec, &v->dloc,
                                     v->cfg.likelihood == NAC_VAE_LIK_LOGISTIC ? &v->dls : NULL,
                                     &v->dz));
    NAC_TRY(nac_tensor_copy(&v->dz, &v->dmu));
    NAC_TRY(nac_axpby(kb, &v->mu, 1.0f, &v->dmu));
    BIN(NAC_BIN_MUL, &v->dz, &v->eps, &v->dlv);
    BIN(NAC_BIN_MUL, &v->dlv, &v->sd, &v->dlv);
    LIN(&v->var, &v->tl, 0.5f * kb, -0.5f * kb);
    LIN(&v->dlv, &v->dlv, 0.5f, 0.0f);
    BIN(NAC_BIN_ADD, &v->dlv, &v->tl, &v->dlv);
    NAC_TRY(nac_gemm(false, true, 1.0f, &v->dmu, &v->sel_mu, 0.0f, &v->dhd));
    NAC_TRY(nac_gemm(false, true, 1.0f, &v->dlv, &v->sel_lv, 1.0f, &v->dhd));
    return nac_linear_backward(v->h, &v->head_w->w, &v->dhd, dh, &v->head_w->g,
                               &v->head_b->g);
}

nac_status nac_vae_decode_mean(nac_vae_t *v, const nac_tensor_t *z, float *out) {
    if (!v || !z || !out) return nac_error(NAC_ERR_INVALID, "nac_vae_decode_mean: NULL argument");
    const nac_tensor_t *loc, *ls;
    NAC_TRY(nac_vae_decoder_forward(v->dec, z, false, &loc, &ls));
    v->can_backward = false;
    NAC_TRY(nac_tensor_to_host(loc, out));
    int64_t n = nac_tensor_numel(loc);
    for (int64_t i = 0; i < n; i++) {
        float m = out[i];
        switch (v->cfg.likelihood) {
        case NAC_VAE_LIK_LOGISTIC: m = 0.5f * (m + 1.0f); break;
        case NAC_VAE_LIK_GAUSSIAN: break;
        case NAC_VAE_LIK_BERNOULLI: m = 1.0f / (1.0f + expf(-m)); break;
        }
        out[i] = m < 0.0f ? 0.0f : m > 1.0f ? 1.0f : m;
    }
    return NAC_OK;
}
