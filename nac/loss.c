/* The four pretraining objectives, forward and backward, composed from the public backend
 * ops (no op was added for them). Every buffer is allocated at create; the loss stays on
 * the device in a 1-element tensor. Formulas: nac/loss.h; derivations beside each step. */
#include "nac/loss.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "nac/rowops.h"

/* The similarity-matrix entry that the diagonal mask adds (SimCLR excludes i = j): far
 * below any similarity / tau, so its exp is exactly 0 in float32, yet finite, so no
 * backend meets an inf. */
#define DIAG_MASK (-1e9f)

/* The buffers of a loss, by role; each kind allocates the ones it uses. N = 2K. */
enum {
    B_Z,     /* (N, D) tanh(o)  |  u = o/||o|| (SimCLR), q (MoCo) */
    B_ZT,    /* (N, D) z~ = mask * z */
    B_MASK,  /* (N, D) the drawn flip mask */
    B_LSW,   /* (N, D) l with the views swapped  |  u or kn swapped (SimCLR, MoCo) */
    B_LKSW,  /* (N, D) lk with the views swapped */
    B_ZK,    /* (N, D) tanh(k) (NAC-MQ)  |  kn = k/||k|| (MoCo) */
    B_EVICT, /* (N, D) the queue rows the MoCo-v2 enqueue replaced */
    B_E,     /* (N, D) scratch */
    B_E2,    /* (N, D) scratch */
    B_E3,    /* (N, D) scratch */
    B_DZ,    /* (N, D) dL/dz (or dL/du, dL/dq) */
    B_DZT,   /* (N, D) dL/dz~ */
    B_DO,    /* (N, D) dL/do */
    B_DL,    /* (N, D) dL/dl */
    B_S,     /* (N, N) or (N, M) similarities */
    B_P,     /* (N, N) or (N, M) their row softmax, then dL/dS */
    B_DIAG,  /* (N, N) DIAG_MASK on the diagonal, 0 elsewhere (SimCLR) */
    B_NORM,  /* (N) row norms of o */
    B_KNORM, /* (N) row norms of k */
    B_LSE,   /* (N) row logsumexp of S */
    B_ROW,   /* (N) per-row terms */
    B_ROW2,  /* (N) per-row scratch */
    B_SUM,   /* (1) */
    B_LOSS,  /* (1) the value */
    B_COUNT
};

struct nac_loss {
    nac_loss_config cfg;
    nac_backend_t *be;
    int64_t n;  /* 2K rows */
    float c;    /* (1/2) log((1-p)/p) */
    nac_tensor_t *b[B_COUNT];
    nac_queue_t *queue;
    const nac_tensor_t *mask;  /* the mask the last forward used (maybe the caller's) */
    int64_t moco_slot;         /* first queue row the last MoCo enqueue wrote */
    bool forward_done;
};

const char *nac_loss_kind_name(nac_loss_kind kind) {
    switch (kind) {
    case NAC_LOSS_NAC: return "nac";
    case NAC_LOSS_NAC_MQ: return "nac_mq";
    case NAC_LOSS_SIMCLR: return "simclr";
    case NAC_LOSS_MOCO: return "moco";
    }
    return "unknown";
}

static bool has_queue(nac_loss_kind k) { return k == NAC_LOSS_NAC_MQ || k == NAC_LOSS_MOCO; }
static bool has_logits(nac_loss_kind k) { return k == NAC_LOSS_NAC || k == NAC_LOSS_NAC_MQ; }

static nac_status check_config(const nac_loss_config *c) {
    const char *name = nac_loss_kind_name(c->kind);
    if (c->kind < NAC_LOSS_NAC || c->kind > NAC_LOSS_MOCO)
        return nac_error(NAC_ERR_INVALID, "nac_loss_create: unknown loss kind %d", (int)c->kind);
    if (c->k < 1 || c->d < 1)
        return nac_error(NAC_ERR_INVALID,
                         "nac_loss_create (%s): K %" PRId64 " and D %" PRId64 " must be >= 1",
                         name, c->k, c->d);
    if (has_queue(c->kind) && c->m < 2 * c->k)
        return nac_error(NAC_ERR_INVALID,
                         "nac_loss_create (%s): queue length M %" PRId64
                         " must hold one step's 2K = %" PRId64 " keys",
                         name, c->m, 2 * c->k);
    if (has_logits(c->kind) && !(c->p > 0.0f && c->p < 0.5f))
        return nac_error(NAC_ERR_INVALID,
                         "nac_loss_create (%s): flip probability p %g must lie in (0, 0.5)", name,
                         (double)c->p);
    if (c->kind == NAC_LOSS_NAC_MQ && !(c->lambda >= 0.0f && isfinite(c->lambda)))
        return nac_error(NAC_ERR_INVALID, "nac_loss_create (%s): lambda %g must be >= 0", name,
                         (double)c->lambda);
    if ((c->kind == NAC_LOSS_SIMCLR || c->kind == NAC_LOSS_MOCO) &&
        !(c->tau > 0.0f && isfinite(c->tau)))
        return nac_error(NAC_ERR_INVALID, "nac_loss_create (%s): temperature %g must be > 0",
                         name, (double)c->tau);
    return NAC_OK;
}

/* Allocate buffer `which` as (rows, cols), or (rows) when cols is 0. */
static nac_status need(nac_loss_t *L, int which, int64_t rows, int64_t cols) {
    nac_tensor_t *t = cols ? nac_tensor_new2(L->be, rows, cols) : nac_tensor_new1(L->be, rows);
    if (!t)
        return nac_error(NAC_ERR_NOMEM, "nac_loss_create (%s): out of memory",
                         nac_loss_kind_name(L->cfg.kind));
    L->b[which] = t;
    return nac_tensor_alloc(t);
}

static nac_status fill_diag_mask(nac_loss_t *L) {
    int64_t n = L->n;
    float *h = calloc((size_t)(n * n), sizeof *h);
    if (!h) return nac_error(NAC_ERR_NOMEM, "nac_loss_create (simclr): out of memory");
    for (int64_t i = 0; i < n; i++) h[i * n + i] = DIAG_MASK;
    nac_status s = nac_tensor_from_host(L->b[B_DIAG], h);
    free(h);
    return s;
}

static nac_status create_buffers(nac_loss_t *L) {
    const nac_loss_config *c = &L->cfg;
    int64_t n = L->n, d = c->d, cols = has_queue(c->kind) ? c->m : n;
    int nd[] = {B_Z, B_E, B_E2, B_DZ, B_DO};
    for (size_t i = 0; i < sizeof nd / sizeof nd[0]; i++) NAC_TRY(need(L, nd[i], n, d));
    NAC_TRY(need(L, B_S, n, cols));
    NAC_TRY(need(L, B_P, n, cols));
    int vec[] = {B_LSE, B_ROW, B_ROW2};
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) NAC_TRY(need(L, vec[i], n, 0));
    NAC_TRY(need(L, B_SUM, 1, 0));
    NAC_TRY(need(L, B_LOSS, 1, 0));
    NAC_TRY(need(L, B_LSW, n, d));
    if (has_logits(c->kind)) {
        int more[] = {B_ZT, B_MASK, B_DZT, B_DL};
        for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) NAC_TRY(need(L, more[i], n, d));
    }
    if (c->kind == NAC_LOSS_NAC_MQ) {
        NAC_TRY(need(L, B_LKSW, n, d));
        NAC_TRY(need(L, B_E3, n, d));
    }
    if (has_queue(c->kind)) {
        NAC_TRY(need(L, B_ZK, n, d));
        NAC_TRY(nac_queue_create(L->be, c->m, d, &L->queue));
    }
    if (c->kind == NAC_LOSS_SIMCLR || c->kind == NAC_LOSS_MOCO) NAC_TRY(need(L, B_NORM, n, 0));
    if (c->kind == NAC_LOSS_SIMCLR) {
        NAC_TRY(need(L, B_DIAG, n, n));
        NAC_TRY(fill_diag_mask(L));
    }
    if (c->kind == NAC_LOSS_MOCO) {
        NAC_TRY(need(L, B_KNORM, n, 0));
        NAC_TRY(need(L, B_EVICT, n, d));
    }
    return NAC_OK;
}

nac_status nac_loss_create(nac_backend_t *be, const nac_loss_config *cfg, nac_loss_t **out) {
    if (!be || !cfg || !out) return nac_error(NAC_ERR_INVALID, "nac_loss_create: NULL argument");
    *out = NULL;
    NAC_TRY(check_config(cfg));
    nac_loss_t *L = calloc(1, sizeof *L);
    if (!L) return nac_error(NAC_ERR_NOMEM, "nac_loss_create: out of memory");
    L->cfg = *cfg;
    L->be = be;
    L->n = 2 * cfg->k;
    L->c = has_logits(cfg->kind) ? 0.5f * (float)log((1.0 - cfg->p) / cfg->p) : 0.0f;
    nac_status s = create_buffers(L);
    if (s != NAC_OK) {
        nac_loss_free(L);
        return s;
    }
    *out = L;
    return NAC_OK;
}

void nac_loss_free(nac_loss_t *L) {
    if (!L) return;
    for (int i = 0; i < B_COUNT; i++) nac_tensor_free(L->b[i]);
    nac_queue_free(L->queue);
    free(L);
}

/* ---- shared pieces ---- */

static nac_status check_input(const nac_loss_t *L, const char *name, const nac_tensor_t *t) {
    const char *kind = nac_loss_kind_name(L->cfg.kind);
    if (!t) return nac_error(NAC_ERR_INVALID, "nac_loss_forward (%s): input %s is NULL", kind, name);
    if (t->be != L->be)
        return nac_error(NAC_ERR_INVALID,
                         "nac_loss_forward (%s): input %s lives on another backend", kind, name);
    if (t->ndim != 2 || t->dim[0] != L->n || t->dim[1] != L->cfg.d) {
        char buf[64];
        return nac_error(NAC_ERR_INVALID,
                         "nac_loss_forward (%s): input %s must be (2K, D) = (%" PRId64
                         ", %" PRId64 "), got %s",
                         kind, name, L->n, L->cfg.d, nac_tensor_shape_str(t, buf, sizeof buf));
    }
    return NAC_OK;
}

/* E = z~ * lsw + log(s(lsw)(1 - s(lsw))), element-wise; scratch gets -2 softplus(-lsw) - lsw,
 * the stable form of the log (log s(x) = -softplus(-x), log(1 - s(x)) = -x - softplus(-x)).
 * Summed over a row, (E - log(1/4)) / 2 is the positive term G_i. */
static nac_status positive_terms(const nac_tensor_t *zt, const nac_tensor_t *lsw,
                                 nac_tensor_t *scratch, nac_tensor_t *e) {
    NAC_TRY(nac_act_forward(NAC_ACT_LINEAR, lsw, scratch, -1.0f, 0.0f));
    NAC_TRY(nac_act_forward(NAC_ACT_SOFTPLUS, scratch, scratch, 0.0f, 0.0f));
    NAC_TRY(nac_axpby(-1.0f, lsw, -2.0f, scratch));
    NAC_TRY(nac_binary(NAC_BIN_MUL, zt, lsw, e));
    return nac_binary(NAC_BIN_ADD, e, scratch, e);
}

/* z = tanh(o), z~ = mask * z, with the caller's mask or one drawn from the key. */
static nac_status flipped_codes(nac_loss_t *L, const nac_loss_inputs *in) {
    if (in->mask) {
        NAC_TRY(check_input(L, "mask", in->mask));
        L->mask = in->mask;
    } else {
        NAC_TRY(nac_tensor_rand(L->b[B_MASK], NAC_RAND_SIGN, L->cfg.p, in->key));
        L->mask = L->b[B_MASK];
    }
    NAC_TRY(nac_act_forward(NAC_ACT_TANH, in->o, L->b[B_Z], 0.0f, 0.0f));
    return nac_binary(NAC_BIN_MUL, L->mask, L->b[B_Z], L->b[B_ZT]);
}

/* loss = scale * sum_i row_i + offset, on the device. */
static nac_status finish(nac_loss_t *L, const nac_tensor_t *row, float scale, float offset) {
    NAC_TRY(nac_sum_all(row, L->b[B_SUM]));
    return nac_act_forward(NAC_ACT_LINEAR, L->b[B_SUM], L->b[B_LOSS], scale, offset);
}

/* dL/dl for the positive term(s): with s = sigmoid(lsw), d/dlsw of -w G_i(z~, lsw) summed
 * and averaged over rows is (w / 2N) (2s - 1 - z~); swapping the views back gives dL/dl. */
static nac_status logits_grad(nac_loss_t *L, float w) {
    float a = w / (2.0f * (float)L->n);
    nac_tensor_t *e = L->b[B_E];
    NAC_TRY(nac_act_forward(NAC_ACT_SIGMOID, L->b[B_LSW], e, 0.0f, 0.0f));
    NAC_TRY(nac_act_forward(NAC_ACT_LINEAR, e, e, 2.0f * a, -a));
    NAC_TRY(nac_axpby(-a, L->b[B_ZT], 1.0f, e));
    return nac_rows_swap_halves(e, L->b[B_DL]);
}

/* ---- NAC (Eq. 19/23) ---- */

static nac_status batch_forward(nac_loss_t *L, const nac_loss_inputs *in) {
    nac_tensor_t **b = L->b;
    float n = (float)L->n, d = (float)L->cfg.d;
    NAC_TRY(check_input(L, "l", in->l));
    NAC_TRY(flipped_codes(L, in));
    /* S = c z~ z^T (N, N), diagonal included */
    NAC_TRY(nac_gemm(false, true, L->c, b[B_ZT], b[B_Z], 0.0f, b[B_S]));
    NAC_TRY(nac_row_logsumexp(b[B_S], b[B_LSE]));
    NAC_TRY(nac_rows_swap_halves(in->l, b[B_LSW]));
    NAC_TRY(positive_terms(b[B_ZT], b[B_LSW], b[B_E2], b[B_E]));
    NAC_TRY(nac_row_sum(b[B_E], b[B_ROW]));
    /* row_i = lse_i - (1/2) sum_d E_id; the -(1/2) D (-log(1/4)) of -G_i goes in the offset */
    NAC_TRY(nac_axpby(1.0f, b[B_LSE], -0.5f, b[B_ROW]));
    return finish(L, b[B_ROW], 1.0f / n, 0.5f * d * (float)log(0.25));
}

/* dL/dS = P / N with P = softmax_rows(S); S = c z~ z^T gives
 *   dL/dz~ = (c/N) P z - (1/2N) lsw        (the second from -G_i)
 *   dL/dz  = mask * dL/dz~ + (c/N) P^T z~   (z as the keys of S)
 *   dL/do  = dL/dz (1 - z^2) */
static nac_status batch_backward(nac_loss_t *L) {
    nac_tensor_t **b = L->b;
    float n = (float)L->n;
    NAC_TRY(nac_row_softmax(b[B_S], b[B_P]));
    NAC_TRY(nac_gemm(false, false, L->c / n, b[B_P], b[B_Z], 0.0f, b[B_DZT]));
    NAC_TRY(nac_axpby(-0.5f / n, b[B_LSW], 1.0f, b[B_DZT]));
    NAC_TRY(nac_gemm(true, false, L->c / n, b[B_P], b[B_ZT], 0.0f, b[B_DZ]));
    NAC_TRY(nac_binary(NAC_BIN_MUL, L->mask, b[B_DZT], b[B_DZT]));
    NAC_TRY(nac_binary(NAC_BIN_ADD, b[B_DZ], b[B_DZT], b[B_DZ]));
    NAC_TRY(nac_act_backward(NAC_ACT_TANH, NULL, b[B_Z], b[B_DZ], b[B_DO], 0.0f, 0.0f));
    return logits_grad(L, 1.0f);
}

/* ---- NAC-MQ (Eq. 20) ----
 * The similarity is MULTIPLIED by c = (1/2) log((1-p)/p) as the paper writes it. The
 * official train_moco_symmetric DIVIDES by c, i.e. uses temperature c where the derivation
 * gives 1/c; we treat that as the official code's bug (DESIGN.md). Its batch train()
 * multiplies at HEAD 7d706c0 (only commits up to e4d6dc8 divided). For p = 0.1 the two
 * differ by c^2 = 1.21 in the scale of the logits. */

static nac_status mq_forward(nac_loss_t *L, const nac_loss_inputs *in) {
    nac_tensor_t **b = L->b;
    float n = (float)L->n, d = (float)L->cfg.d;
    NAC_TRY(check_input(L, "l", in->l));
    NAC_TRY(check_input(L, "k", in->k));
    NAC_TRY(check_input(L, "lk", in->lk));
    /* this step's momentum codes go in first, replacing the oldest */
    NAC_TRY(nac_act_forward(NAC_ACT_TANH, in->k, b[B_ZK], 0.0f, 0.0f));
    NAC_TRY(nac_queue_push(L->queue, b[B_ZK]));
    NAC_TRY(flipped_codes(L, in));
    /* S = c z~ Q^T (N, M) */
    NAC_TRY(nac_gemm(false, true, L->c, b[B_ZT], L->queue->keys, 0.0f, b[B_S]));
    NAC_TRY(nac_row_logsumexp(b[B_S], b[B_LSE]));
    NAC_TRY(nac_rows_swap_halves(in->lk, b[B_LKSW]));
    NAC_TRY(nac_rows_swap_halves(in->l, b[B_LSW]));
    /* row_i = lse_i - (1/2) sum E(z~, lksw) - sum E(z~, lsw) + lambda ||z_i||^2;
       the constants of -G_i and -2 G_i (VI) give 1.5 D log(1/4) */
    NAC_TRY(positive_terms(b[B_ZT], b[B_LKSW], b[B_E2], b[B_E]));
    NAC_TRY(positive_terms(b[B_ZT], b[B_LSW], b[B_E2], b[B_E3]));
    NAC_TRY(nac_axpby(-1.0f, b[B_E3], -0.5f, b[B_E]));
    NAC_TRY(nac_binary(NAC_BIN_MUL, b[B_Z], b[B_Z], b[B_E3]));
    NAC_TRY(nac_axpby(L->cfg.lambda, b[B_E3], 1.0f, b[B_E]));
    NAC_TRY(nac_row_sum(b[B_E], b[B_ROW]));
    NAC_TRY(nac_axpby(1.0f, b[B_LSE], 1.0f, b[B_ROW]));
    return finish(L, b[B_ROW], 1.0f / n, 1.5f * d * (float)log(0.25));
}

/* dL/dz~ = (c/N) P Q - (1/2N) lksw      (the VI term's z~ is detached)
 * dL/dz  = mask * dL/dz~ + (2 lambda/N) z
 * dL/dl from -2 G_i(z~, l): weight 2 in logits_grad. The queue is detached. */
static nac_status mq_backward(nac_loss_t *L) {
    nac_tensor_t **b = L->b;
    float n = (float)L->n;
    NAC_TRY(nac_row_softmax(b[B_S], b[B_P]));
    NAC_TRY(nac_gemm(false, false, L->c / n, b[B_P], L->queue->keys, 0.0f, b[B_DZT]));
    NAC_TRY(nac_axpby(-0.5f / n, b[B_LKSW], 1.0f, b[B_DZT]));
    NAC_TRY(nac_binary(NAC_BIN_MUL, L->mask, b[B_DZT], b[B_DZ]));
    NAC_TRY(nac_axpby(2.0f * L->cfg.lambda / n, b[B_Z], 1.0f, b[B_DZ]));
    NAC_TRY(nac_act_backward(NAC_ACT_TANH, NULL, b[B_Z], b[B_DZ], b[B_DO], 0.0f, 0.0f));
    return logits_grad(L, 2.0f);
}

/* ---- SimCLR NT-Xent ---- */

static nac_status simclr_forward(nac_loss_t *L, const nac_loss_inputs *in) {
    nac_tensor_t **b = L->b;
    float n = (float)L->n, it = 1.0f / L->cfg.tau;
    NAC_TRY(nac_rows_l2_normalize(in->o, b[B_NORM], b[B_Z]));
    /* S = u u^T / tau with the diagonal pushed to DIAG_MASK (excluded) */
    NAC_TRY(nac_gemm(false, true, it, b[B_Z], b[B_Z], 0.0f, b[B_S]));
    NAC_TRY(nac_binary(NAC_BIN_ADD, b[B_S], b[B_DIAG], b[B_S]));
    NAC_TRY(nac_row_logsumexp(b[B_S], b[B_LSE]));
    NAC_TRY(nac_rows_swap_halves(b[B_Z], b[B_LSW]));
    NAC_TRY(nac_rows_dot(b[B_Z], b[B_LSW], b[B_E], b[B_ROW]));
    NAC_TRY(nac_axpby(1.0f, b[B_LSE], -it, b[B_ROW]));
    return finish(L, b[B_ROW], 1.0f / n, 0.0f);
}

/* S is symmetric in u, so dL/du = (1/(tau N)) [(P + P^T) u - 2 u_swapped] (each positive
 * pair appears in two rows); then back through the normalisation. */
static nac_status simclr_backward(nac_loss_t *L) {
    nac_tensor_t **b = L->b;
    float a = 1.0f / (L->cfg.tau * (float)L->n);
    NAC_TRY(nac_row_softmax(b[B_S], b[B_P]));
    NAC_TRY(nac_gemm(false, false, a, b[B_P], b[B_Z], 0.0f, b[B_DZ]));
    NAC_TRY(nac_gemm(true, false, a, b[B_P], b[B_Z], 1.0f, b[B_DZ]));
    NAC_TRY(nac_axpby(-2.0f * a, b[B_LSW], 1.0f, b[B_DZ]));
    return nac_rows_l2_normalize_backward(b[B_Z], b[B_NORM], b[B_DZ], b[B_E], b[B_ROW2],
                                          b[B_DO]);
}

/* ---- symmetric MoCo-v2 ----
 * Row i has logits [a_i, n_i1 .. n_iM] with a_i = q_i.kn_j(i) / tau and n = q Q^T / tau;
 * its cross-entropy with target 0 is logsumexp - a_i = softplus(t_i) with
 * t_i = logsumexp_m n_im - a_i, which needs no column concatenation. Both directions'
 * means over K rows are summed: L = (1/K) sum_i softplus(t_i). */

static nac_status moco_forward(nac_loss_t *L, const nac_loss_inputs *in) {
    nac_tensor_t **b = L->b;
    float it = 1.0f / L->cfg.tau;
    NAC_TRY(check_input(L, "k", in->k));
    NAC_TRY(nac_rows_l2_normalize(in->o, b[B_NORM], b[B_Z]));
    NAC_TRY(nac_rows_l2_normalize(in->k, b[B_KNORM], b[B_ZK]));
    NAC_TRY(nac_rows_swap_halves(b[B_ZK], b[B_LSW]));
    NAC_TRY(nac_rows_dot(b[B_Z], b[B_LSW], b[B_E], b[B_ROW]));
    NAC_TRY(nac_gemm(false, true, it, b[B_Z], L->queue->keys, 0.0f, b[B_S]));
    NAC_TRY(nac_row_logsumexp(b[B_S], b[B_LSE]));
    NAC_TRY(nac_axpby(1.0f, b[B_LSE], -it, b[B_ROW])); /* t */
    NAC_TRY(nac_act_forward(NAC_ACT_SOFTPLUS, b[B_ROW], b[B_ROW2], 0.0f, 0.0f));
    NAC_TRY(finish(L, b[B_ROW2], 1.0f / (float)L->cfg.k, 0.0f));
    /* enqueue [k1n; k2n] after the loss; keep the rows it replaces for the backward */
    L->moco_slot = L->queue->ptr;
    NAC_TRY(nac_queue_read(L->queue, L->moco_slot, b[B_EVICT]));
    return nac_queue_push(L->queue, b[B_ZK]);
}

/* With w_i = sigmoid(t_i) / K: dL/dn_im = w_i softmax(n_i)_m, dL/da_i = -w_i, so
 * dL/dq = (1/tau) [ (w P) Q - w kn_swapped ]. Q is the queue before the enqueue: the
 * evicted rows are put back for the product and the new keys rewritten after it. */
static nac_status moco_backward(nac_loss_t *L) {
    nac_tensor_t **b = L->b;
    float a = 1.0f / (L->cfg.tau * (float)L->cfg.k);
    NAC_TRY(nac_row_softmax(b[B_S], b[B_P]));
    NAC_TRY(nac_act_forward(NAC_ACT_SIGMOID, b[B_ROW], b[B_ROW2], 0.0f, 0.0f));
    NAC_TRY(nac_col_broadcast(NAC_BIN_MUL, b[B_P], b[B_ROW2], b[B_S])); /* S is spent */
    NAC_TRY(nac_queue_write(L->queue, L->moco_slot, b[B_EVICT]));
    nac_status s = nac_gemm(false, false, a, b[B_S], L->queue->keys, 0.0f, b[B_DZ]);
    nac_status s2 = nac_queue_write(L->queue, L->moco_slot, b[B_ZK]);
    NAC_TRY(s);
    NAC_TRY(s2);
    NAC_TRY(nac_col_broadcast(NAC_BIN_MUL, b[B_LSW], b[B_ROW2], b[B_E]));
    NAC_TRY(nac_axpby(-a, b[B_E], 1.0f, b[B_DZ]));
    return nac_rows_l2_normalize_backward(b[B_Z], b[B_NORM], b[B_DZ], b[B_E], b[B_ROW2],
                                          b[B_DO]);
}

/* ---- public ---- */

nac_status nac_loss_forward(nac_loss_t *L, const nac_loss_inputs *in) {
    if (!L || !in) return nac_error(NAC_ERR_INVALID, "nac_loss_forward: NULL argument");
    L->forward_done = false;
    NAC_TRY(check_input(L, "o", in->o));
    switch (L->cfg.kind) {
    case NAC_LOSS_NAC: NAC_TRY(batch_forward(L, in)); break;
    case NAC_LOSS_NAC_MQ: NAC_TRY(mq_forward(L, in)); break;
    case NAC_LOSS_SIMCLR: NAC_TRY(simclr_forward(L, in)); break;
    case NAC_LOSS_MOCO: NAC_TRY(moco_forward(L, in)); break;
    }
    L->forward_done = true;
    return NAC_OK;
}

nac_status nac_loss_backward(nac_loss_t *L) {
    if (!L) return nac_error(NAC_ERR_INVALID, "nac_loss_backward: NULL loss");
    if (!L->forward_done)
        return nac_error(NAC_ERR_INVALID,
                         "nac_loss_backward (%s): no successful forward to differentiate",
                         nac_loss_kind_name(L->cfg.kind));
    switch (L->cfg.kind) {
    case NAC_LOSS_NAC: return batch_backward(L);
    case NAC_LOSS_NAC_MQ: return mq_backward(L);
    case NAC_LOSS_SIMCLR: return simclr_backward(L);
    case NAC_LOSS_MOCO: return moco_backward(L);
    }
    return nac_error(NAC_ERR_INVALID, "nac_loss_backward: unknown loss kind");
}

const nac_tensor_t *nac_loss_value(const nac_loss_t *L) { return L->b[B_LOSS]; }

nac_status nac_loss_item(const nac_loss_t *L, float *out) {
    if (!L || !out) return nac_error(NAC_ERR_INVALID, "nac_loss_item: NULL argument");
    return nac_tensor_item(L->b[B_LOSS], out);
}

const nac_tensor_t *nac_loss_grad_o(const nac_loss_t *L) { return L->b[B_DO]; }
const nac_tensor_t *nac_loss_grad_l(const nac_loss_t *L) { return L->b[B_DL]; }
const nac_tensor_t *nac_loss_mask(const nac_loss_t *L) { return L->mask; }
nac_queue_t *nac_loss_queue(nac_loss_t *L) { return L->queue; }
const nac_loss_config *nac_loss_get_config(const nac_loss_t *L) { return &L->cfg; }
