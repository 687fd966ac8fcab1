/* The VAE's pixel likelihoods as compositions of backend element-wise and row ops, so the
 * training step never leaves the backend. The discretised logistic is written in
 * log-sigmoid / softplus forms that stay finite for any mean and scale (see below). */
#include "vae/likelihood.h"

#include <math.h>
#include <string.h>

#define HALF_BIN (1.0f / 255.0f) /* half a bin on the [-1, 1] scale */
#define LOG_SCALE_MIN (-7.0f)
#define LOG_2PI 1.8378770664093453

#define ACT(k, x, y, al, be_) NAC_TRY(nac_act_forward((k), (x), (y), (al), (be_)))
#define LIN(x, y, al, be_) ACT(NAC_ACT_LINEAR, (x), (y), (al), (be_))
#define BIN(k, a, b, y) NAC_TRY(nac_binary((k), (a), (b), (y)))

const char *nac_vae_lik_name(nac_vae_lik_kind kind) {
    switch (kind) {
    case NAC_VAE_LIK_LOGISTIC: return "logistic";
    case NAC_VAE_LIK_GAUSSIAN: return "gaussian";
    case NAC_VAE_LIK_BERNOULLI: return "bernoulli";
    }
    return "?";
}

int nac_vae_lik_maps(nac_vae_lik_kind kind) { return kind == NAC_VAE_LIK_LOGISTIC ? 2 : 1; }

int nac_vae_lik_discrete(nac_vae_lik_kind kind) { return kind != NAC_VAE_LIK_GAUSSIAN; }

static void t2(nac_tensor_t *t, nac_backend_t *be, int64_t r, int64_t c) {
    int64_t d[2] = {r, c};
    nac_tensor_init(t, be, 2, d);
}

static void t1(nac_tensor_t *t, nac_backend_t *be, int64_t n) { nac_tensor_init(t, be, 1, &n); }

/* Tensors whose shape depends on the batch size. */
static nac_tensor_t *per_batch(nac_vae_lik_t *lk, int i) {
    nac_tensor_t *all[] = {&lk->x,  &lk->xs, &lk->nlo, &lk->nhi, &lk->mid, &lk->lsp,
                           &lk->u,  &lk->a,  &lk->b,   &lk->d,   &lk->th,  &lk->zg,
                           &lk->t0, &lk->t1, &lk->t2,  &lk->t3,  &lk->lpix, &lk->ones_n};
    return i < (int)(sizeof all / sizeof all[0]) ? all[i] : NULL;
}

static void release_batch(nac_vae_lik_t *lk) {
    for (int i = 0; per_batch(lk, i); i++) nac_tensor_release(per_batch(lk, i));
    lk->n = 0;
    lk->have_fwd = false;
}

static nac_status plan_batch(nac_vae_lik_t *lk, int64_t n) {
    if (lk->n == n) return NAC_OK;
    release_batch(lk);
    int64_t dd = lk->c * lk->hw;
    for (int i = 0; per_batch(lk, i); i++) t2(per_batch(lk, i), lk->be, n, dd);
    t2(&lk->ones_n, lk->be, n, 1);
    NAC_TRY(nac_tensor_fill(&lk->ones_n, 1.0f));
    lk->n = n;
    return NAC_OK;
}

nac_status nac_vae_lik_init(nac_vae_lik_t *lk, nac_backend_t *be, nac_vae_lik_kind kind,
                            int64_t c, int64_t hw) {
    memset(lk, 0, sizeof *lk);
    if (!be || c < 1 || hw < 1 || kind < NAC_VAE_LIK_LOGISTIC || kind > NAC_VAE_LIK_BERNOULLI)
        return nac_error(NAC_ERR_INVALID,
                         "nac_vae_lik_init: invalid arguments (kind %d, %lld channels, %lld "
                         "pixels per channel)",
                         (int)kind, (long long)c, (long long)hw);
    lk->kind = kind;
    lk->be = be;
    lk->c = c;
    lk->hw = hw;
    t2(&lk->ones_hw, be, 1, hw);
    t1(&lk->lsv, be, c * hw);
    t1(&lk->inv, be, c * hw);
    t2(&lk->lscol, be, c, 1);
    t2(&lk->lsmat, be, c, hw);
    t2(&lk->colsum, be, 1, c * hw);
    t2(&lk->csmat, be, c, hw);
    return nac_tensor_fill(&lk->ones_hw, 1.0f);
}

void nac_vae_lik_free(nac_vae_lik_t *lk) {
    if (!lk || !lk->be) return;
    release_batch(lk);
    nac_tensor_t *fixed[] = {&lk->xb,    &lk->ones_hw, &lk->lsv,    &lk->inv,
                             &lk->lscol, &lk->lsmat,   &lk->colsum, &lk->csmat};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) nac_tensor_release(fixed[i]);
    memset(lk, 0, sizeof *lk);
}

/* Masks from the pixel grid k/255: nlo = 1 - [k = 0], nhi = 1 - [k = 255], mid =
 * [0 < k < 255]. relu(0.5 - 255x) is exactly 0.5 at x = 0 and exactly 0 from k = 1 on
 * (255 * (k/255) rounds to k within 1e-5), so the masks are exact 0/1 on the grid. */
static nac_status logistic_masks(nac_vae_lik_t *lk) {
    LIN(&lk->x, &lk->xs, 2.0f, -1.0f);
    LIN(&lk->x, &lk->t0, -255.0f, 0.5f);
    ACT(NAC_ACT_RELU, &lk->t0, &lk->t0, 0, 0);
    LIN(&lk->t0, &lk->nlo, -2.0f, 1.0f);
    LIN(&lk->x, &lk->t0, 255.0f, -254.5f);
    ACT(NAC_ACT_RELU, &lk->t0, &lk->t0, 0, 0);
    LIN(&lk->t0, &lk->nhi, -2.0f, 1.0f);
    BIN(NAC_BIN_ADD, &lk->nlo, &lk->nhi, &lk->mid);
    LIN(&lk->mid, &lk->mid, 1.0f, -1.0f);
    return NAC_OK;
}

nac_status nac_vae_lik_set_data(nac_vae_lik_t *lk, const nac_tensor_t *x, int reps) {
    if (!lk || !lk->be || !x || reps < 1)
        return nac_error(NAC_ERR_INVALID, "nac_vae_lik_set_data: NULL argument or reps %d",
                         reps);
    int64_t dd = lk->c * lk->hw, b = x->dim[0];
    if (nac_tensor_numel(x) != b * dd)
        return nac_error(NAC_ERR_INVALID,
                         "nac_vae_lik_set_data: images %s do not have %lld values each",
                         nac_tensor_shape_str(x, (char[64]){0}, 64), (long long)dd);
    NAC_TRY(plan_batch(lk, b * reps));
    if (reps == 1) {
        NAC_TRY(nac_reshape(x, &lk->x));
    } else {
        if (lk->xb.dim[0] != b) {
            nac_tensor_release(&lk->xb);
            t2(&lk->xb, lk->be, b, dd);
        }
        NAC_TRY(nac_reshape(x, &lk->xb));
        for (int r = 0; r < reps; r++) NAC_TRY(nac_copy_rows(&lk->xb, 0, &lk->x, r * b, b));
    }
    lk->have_fwd = false;
    return lk->kind == NAC_VAE_LIK_LOGISTIC ? logistic_masks(lk) : NAC_OK;
}

/* Discretised logistic, per subpixel with t = x - m, u = exp(-max(ls, -7)), half-bin e:
 *   a = u (t + e), b = u (t - e), d = a - b = 2 e u
 *   k = 0:   log sigmoid(a)                      = a - softplus(a)
 *   k = 255: log(1 - sigmoid(b))                 = -softplus(b)
 *   else:    log(sigmoid(a) - sigmoid(b))        = a - softplus(a) - softplus(b)
 *                                                  + log(1 - e^-d)
 * with log(1 - e^-d) = log tanh(d/2) + softplus(-d), accurate for small d where
 * 1 - e^-d would cancel. So logp = nhi (a - sp(a)) - nlo sp(b) + mid g(d). The bin
 * difference never cancels, so no PixelCNN++-style fallback to the density is needed. */
static nac_status logistic_forward(nac_vae_lik_t *lk, const nac_tensor_t *m,
                                   const nac_tensor_t *ls, nac_tensor_t *logp) {
    LIN(ls, &lk->lsp, 1.0f, -LOG_SCALE_MIN);
    ACT(NAC_ACT_RELU, &lk->lsp, &lk->t0, 0, 0);
    LIN(&lk->t0, &lk->t0, -1.0f, -LOG_SCALE_MIN);
    ACT(NAC_ACT_EXP, &lk->t0, &lk->u, 0, 0);
    BIN(NAC_BIN_SUB, &lk->xs, m, &lk->t0);
    LIN(&lk->t0, &lk->t1, 1.0f, HALF_BIN);
    BIN(NAC_BIN_MUL, &lk->u, &lk->t1, &lk->a);
    LIN(&lk->t0, &lk->t1, 1.0f, -HALF_BIN);
    BIN(NAC_BIN_MUL, &lk->u, &lk->t1, &lk->b);
    LIN(&lk->u, &lk->d, 2.0f * HALF_BIN, 0.0f);

    ACT(NAC_ACT_SOFTPLUS, &lk->a, &lk->t0, 0, 0);
    BIN(NAC_BIN_SUB, &lk->a, &lk->t0, &lk->t0);
    BIN(NAC_BIN_MUL, &lk->t0, &lk->nhi, &lk->t2);
    ACT(NAC_ACT_SOFTPLUS, &lk->b, &lk->t0, 0, 0);
    BIN(NAC_BIN_MUL, &lk->t0, &lk->nlo, &lk->t0);
    BIN(NAC_BIN_SUB, &lk->t2, &lk->t0, &lk->t2);
    LIN(&lk->d, &lk->t0, 0.5f, 0.0f);
    ACT(NAC_ACT_TANH, &lk->t0, &lk->th, 0, 0);
    ACT(NAC_ACT_LOG, &lk->th, &lk->t0, 0, 0);
    LIN(&lk->d, &lk->t1, -1.0f, 0.0f);
    ACT(NAC_ACT_SOFTPLUS, &lk->t1, &lk->t1, 0, 0);
    BIN(NAC_BIN_ADD, &lk->t0, &lk->t1, &lk->t0);
    BIN(NAC_BIN_MUL, &lk->t0, &lk->mid, &lk->t0);
    BIN(NAC_BIN_ADD, &lk->t2, &lk->t0, &lk->lpix);
    return nac_row_sum(&lk->lpix, logp);
}

/* d logp / dm  = -u (nhi sigmoid(-a) - nlo sigmoid(b))   (the 1/(e^d - 1) terms of the
 *                                                          interior bins cancel exactly)
 * d logp / dls = -(nhi a sigmoid(-a) - nlo b sigmoid(b) + mid d/(e^d - 1)) where ls > -7,
 * with d/(e^d - 1) = d / (tanh(d/2) (1 + e^d)), accurate for small d. */
static nac_status logistic_backward(nac_vae_lik_t *lk, float scale, nac_tensor_t *dm,
                                    nac_tensor_t *dls) {
    LIN(&lk->a, &lk->t0, -1.0f, 0.0f);
    ACT(NAC_ACT_SIGMOID, &lk->t0, &lk->t0, 0, 0);
    ACT(NAC_ACT_SIGMOID, &lk->b, &lk->t1, 0, 0);
    BIN(NAC_BIN_MUL, &lk->t0, &lk->nhi, &lk->t2);
    BIN(NAC_BIN_MUL, &lk->t1, &lk->nlo, &lk->t3);
    BIN(NAC_BIN_SUB, &lk->t2, &lk->t3, &lk->t2);
    BIN(NAC_BIN_MUL, &lk->t2, &lk->u, &lk->t2);
    LIN(&lk->t2, dm, -scale, 0.0f);

    BIN(NAC_BIN_MUL, &lk->a, &lk->t0, &lk->t2);
    BIN(NAC_BIN_MUL, &lk->t2, &lk->nhi, &lk->t2);
    BIN(NAC_BIN_MUL, &lk->b, &lk->t1, &lk->t3);
    BIN(NAC_BIN_MUL, &lk->t3, &lk->nlo, &lk->t3);
    BIN(NAC_BIN_SUB, &lk->t2, &lk->t3, &lk->t2);
    ACT(NAC_ACT_EXP, &lk->d, &lk->t0, 0, 0);
    LIN(&lk->t0, &lk->t0, 1.0f, 1.0f);
    BIN(NAC_BIN_MUL, &lk->t0, &lk->th, &lk->t0);
    BIN(NAC_BIN_DIV, &lk->d, &lk->t0, &lk->t0);
    BIN(NAC_BIN_MUL, &lk->t0, &lk->mid, &lk->t0);
    BIN(NAC_BIN_ADD, &lk->t2, &lk->t0, &lk->t2);
    LIN(&lk->t2, &lk->t2, -scale, 0.0f);
    return nac_act_backward(NAC_ACT_RELU, &lk->lsp, NULL, &lk->t2, dls, 0, 0);
}

/* Per element: -0.5 ((x - m)/sigma)^2 - log sigma - 0.5 log 2 pi. */
static nac_status gaussian_forward(nac_vae_lik_t *lk, const nac_tensor_t *m,
                                   const nac_param_t *log_sigma, nac_tensor_t *logp) {
    NAC_TRY(nac_reshape(&log_sigma->w, &lk->lscol));
    NAC_TRY(nac_gemm(false, false, 1.0f, &lk->lscol, &lk->ones_hw, 0.0f, &lk->lsmat));
    NAC_TRY(nac_reshape(&lk->lsmat, &lk->lsv));
    LIN(&lk->lsv, &lk->inv, -1.0f, 0.0f);
    ACT(NAC_ACT_EXP, &lk->inv, &lk->inv, 0, 0);
    BIN(NAC_BIN_SUB, &lk->x, m, &lk->t0);
    NAC_TRY(nac_row_broadcast(NAC_BIN_MUL, &lk->t0, &lk->inv, &lk->zg));
    ACT(NAC_ACT_SQUARE, &lk->zg, &lk->t0, 0, 0);
    LIN(&lk->t0, &lk->t0, -0.5f, (float)(-0.5 * LOG_2PI));
    NAC_TRY(nac_row_broadcast(NAC_BIN_SUB, &lk->t0, &lk->lsv, &lk->lpix));
    return nac_row_sum(&lk->lpix, logp);
}

/* d/dm = z / sigma; d/dlog_sigma_c = sum over the channel's pixels (and the batch) of
 * z^2 - 1, with z = (x - m)/sigma. */
static nac_status gaussian_backward(nac_vae_lik_t *lk, float scale, nac_tensor_t *dm,
                                    nac_param_t *log_sigma) {
    NAC_TRY(nac_row_broadcast(NAC_BIN_MUL, &lk->zg, &lk->inv, &lk->t0));
    LIN(&lk->t0, dm, scale, 0.0f);
    ACT(NAC_ACT_SQUARE, &lk->zg, &lk->t0, 0, 0);
    LIN(&lk->t0, &lk->t0, 1.0f, -1.0f);
    NAC_TRY(nac_gemm(true, false, 1.0f, &lk->ones_n, &lk->t0, 0.0f, &lk->colsum));
    NAC_TRY(nac_reshape(&lk->colsum, &lk->csmat));
    NAC_TRY(nac_row_sum(&lk->csmat, &log_sigma->g));
    LIN(&log_sigma->g, &log_sigma->g, scale, 0.0f);
    return NAC_OK;
}

/* Per element: x l - softplus(l); gradient x - sigmoid(l). */
static nac_status bernoulli_forward(nac_vae_lik_t *lk, const nac_tensor_t *l, nac_tensor_t *logp) {
    BIN(NAC_BIN_MUL, &lk->x, l, &lk->t0);
    ACT(NAC_ACT_SOFTPLUS, l, &lk->t1, 0, 0);
    BIN(NAC_BIN_SUB, &lk->t0, &lk->t1, &lk->lpix);
    return nac_row_sum(&lk->lpix, logp);
}

static nac_status bernoulli_backward(nac_vae_lik_t *lk, float scale, nac_tensor_t *dl) {
    ACT(NAC_ACT_SIGMOID, lk->loc, &lk->t0, 0, 0);
    BIN(NAC_BIN_SUB, &lk->x, &lk->t0, &lk->t0);
    LIN(&lk->t0, dl, scale, 0.0f);
    return NAC_OK;
}

static nac_status check_map(const nac_vae_lik_t *lk, const char *op, const char *what,
                            const nac_tensor_t *t) {
    int64_t dd = lk->c * lk->hw;
    if (!t || t->ndim != 2 || t->dim[0] != lk->n || t->dim[1] != dd)
        return nac_error(NAC_ERR_INVALID, "%s (%s likelihood): %s must be (%lld,%lld), got %s",
                         op, nac_vae_lik_name(lk->kind), what, (long long)lk->n,
                         (long long)dd, nac_tensor_shape_str(t, (char[64]){0}, 64));
    return NAC_OK;
}

static nac_status check_args(const nac_vae_lik_t *lk, const char *op, const nac_tensor_t *loc,
                             const nac_tensor_t *ls, const nac_param_t *log_sigma) {
    if (!lk || !lk->be) return nac_error(NAC_ERR_INVALID, "%s: likelihood not initialised", op);
    if (!lk->n) return nac_error(NAC_ERR_INVALID, "%s: no data (call nac_vae_lik_set_data)", op);
    NAC_TRY(check_map(lk, op, "loc", loc));
    bool logistic = lk->kind == NAC_VAE_LIK_LOGISTIC, gauss = lk->kind == NAC_VAE_LIK_GAUSSIAN;
    if (logistic) NAC_TRY(check_map(lk, op, "log_scale", ls));
    else if (ls)
        return nac_error(NAC_ERR_INVALID, "%s: a log-scale map is only for the logistic", op);
    if (gauss != (log_sigma != NULL) ||
        (gauss && (log_sigma->w.ndim != 1 || log_sigma->w.dim[0] != lk->c)))
        return nac_error(NAC_ERR_INVALID, "%s: the %s likelihood %s", op,
                         nac_vae_lik_name(lk->kind),
                         gauss ? "needs a log_sigma parameter of one value per channel"
                               : "takes no log_sigma parameter");
    return NAC_OK;
}

nac_status nac_vae_lik_forward(nac_vae_lik_t *lk, const nac_tensor_t *loc,
                               const nac_tensor_t *log_scale, const nac_param_t *log_sigma,
                               nac_tensor_t *logp) {
    const char *op = "nac_vae_lik_forward";
    NAC_TRY(check_args(lk, op, loc, log_scale, log_sigma));
    lk->have_fwd = false;
    switch (lk->kind) {
    case NAC_VAE_LIK_LOGISTIC: NAC_TRY(logistic_forward(lk, loc, log_scale, logp)); break;
    case NAC_VAE_LIK_GAUSSIAN: NAC_TRY(gaussian_forward(lk, loc, log_sigma, logp)); break;
    case NAC_VAE_LIK_BERNOULLI: NAC_TRY(bernoulli_forward(lk, loc, logp)); break;
    }
    lk->loc = loc;
    lk->have_fwd = true;
    return NAC_OK;
}

const nac_tensor_t *nac_vae_lik_pixels(const nac_vae_lik_t *lk) {
    return lk && lk->have_fwd ? &lk->lpix : NULL;
}

nac_status nac_vae_lik_backward(nac_vae_lik_t *lk, float scale, nac_tensor_t *dloc,
                                nac_tensor_t *dlog_scale, nac_param_t *log_sigma) {
    const char *op = "nac_vae_lik_backward";
    NAC_TRY(check_args(lk, op, dloc, dlog_scale, log_sigma));
    if (!lk->have_fwd) return nac_error(NAC_ERR_INVALID, "%s: no forward on this data", op);
    switch (lk->kind) {
    case NAC_VAE_LIK_LOGISTIC: return logistic_backward(lk, scale, dloc, dlog_scale);
    case NAC_VAE_LIK_GAUSSIAN: return gaussian_backward(lk, scale, dloc, log_sigma);
    case NAC_VAE_LIK_BERNOULLI: return bernoulli_backward(lk, scale, dloc);
    }
    return NAC_OK;
}
