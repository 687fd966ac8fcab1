/* The CUDA backend's ops on its own kernels (kernels.cu): random fills, batch norm with
 * per-group statistics and a fused ReLU, pooling, resampling, element-wise, row-wise,
 * whole-tensor sums, the optimiser and the EMA. Host side only: shapes in, launches out;
 * nothing waits for the device (the stream orders everything). */
#include <math.h>
#include <stdlib.h>

#include "backend/cuda/cuda_impl.h"

#define STREAM(be) (CUDA_CTX(be)->stream)

/* ---- random ---- */
nac_status cuda_rand(nac_backend_t *be, nac_tensor_t *t, nac_rand kind, float param,
                     uint64_t key) {
    if (kind != NAC_RAND_UNIFORM && kind != NAC_RAND_NORMAL && kind != NAC_RAND_SIGN)
        return nac_error(NAC_ERR_INVALID, "nac_tensor_rand: unknown distribution %d", (int)kind);
    NAC_TRY(cuda_ensure(be, t));
    float scale = param != 0.0f ? param : 1.0f;
    CUDA_TRY(cuk_rand(STREAM(be), CUDA_P(t), nac_tensor_numel(t), (int)kind, param,
                      nextafterf(scale, 0.0f), key));
    return NAC_OK;
}

/* ---- batch norm ---- */
static cuk_bn bn_shape(const nac_tensor_t *x, const nac_bn_params *p) {
    return (cuk_bn){.n = x->dim[0], .c = x->dim[1], .hw = x->ndim == 4 ? x->dim[2] * x->dim[3] : 1,
                    .groups = p->groups, .eps = p->eps};
}

nac_status cuda_bn_fwd_train(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *gamma,
                             const nac_tensor_t *beta, nac_tensor_t *y, nac_tensor_t *running_mean,
                             nac_tensor_t *running_var, nac_tensor_t *save_mean,
                             nac_tensor_t *save_var, const nac_bn_params *p) {
    cuk_bn b = bn_shape(x, p);
    NAC_TRY(cuda_ensure(be, y));
    NAC_TRY(cuda_ensure(be, save_mean));
    NAC_TRY(cuda_ensure(be, save_var));
    unsigned char *mask = NULL;
    if (p->relu) { /* the ReLU mask lives with y, where nac_bn_backward finds it */
        NAC_TRY(cuda_tensor_ws(y, (size_t)nac_tensor_numel(y), CUDA_WS_RELU_MASK,
                               "nac_bn_forward_train"));
        mask = CUDA_T(y)->ws;
    }
    cudaStream_t s = STREAM(be);
    float *sm = CUDA_P(save_mean), *sv = CUDA_P(save_var);
    CUDA_TRY(cuk_bn_stats(s, &b, CUDA_P(x), sm, sv));
    CUDA_TRY(cuk_bn_apply(s, &b, CUDA_P(x), sm, sv, true, CUDA_P(gamma), CUDA_P(beta), CUDA_P(y),
                          p->relu, mask));
    CUDA_TRY(cuk_bn_running(s, &b, sm, sv, CUDA_P(running_mean), CUDA_P(running_var),
                            p->momentum));
    return NAC_OK;
}

nac_status cuda_bn_fwd_saved(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *gamma,
                             const nac_tensor_t *beta, const nac_tensor_t *save_mean,
                             const nac_tensor_t *save_var, nac_tensor_t *y,
                             const nac_bn_params *p) {
    cuk_bn b = bn_shape(x, p);
    NAC_TRY(cuda_ensure(be, y));
    CUDA_TRY(cuk_bn_apply(STREAM(be), &b, CUDA_P(x), CUDA_P(save_mean), CUDA_P(save_var), true,
                          CUDA_P(gamma), CUDA_P(beta), CUDA_P(y), p->relu, NULL));
    return NAC_OK;
}

nac_status cuda_bn_fwd_infer(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *gamma,
                             const nac_tensor_t *beta, const nac_tensor_t *running_mean,
                             const nac_tensor_t *running_var, nac_tensor_t *y,
                             const nac_bn_params *p) {
    cuk_bn b = bn_shape(x, p);
    b.groups = 1;
    NAC_TRY(cuda_ensure(be, y));
    CUDA_TRY(cuk_bn_apply(STREAM(be), &b, CUDA_P(x), CUDA_P(running_mean), CUDA_P(running_var),
                          false, CUDA_P(gamma), CUDA_P(beta), CUDA_P(y), p->relu, NULL));
    return NAC_OK;
}

nac_status cuda_bn_bwd(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *y,
                       const nac_tensor_t *dy, const nac_tensor_t *gamma,
                       const nac_tensor_t *save_mean, const nac_tensor_t *save_var,
                       nac_tensor_t *dx, nac_tensor_t *dgamma, nac_tensor_t *dbeta,
                       const nac_bn_params *p) {
    cuk_bn b = bn_shape(x, p);
    const unsigned char *mask = NULL;
    if (p->relu) {
        const cuda_tensor *cy = CUDA_T(y);
        if (cy->ws_kind != CUDA_WS_RELU_MASK || cy->ws_bytes != (size_t)nac_tensor_numel(y))
            return nac_error(NAC_ERR_INVALID,
                             "nac_bn_backward: y holds no ReLU mask from nac_bn_forward_train "
                             "with these shapes, groups=%d and relu",
                             p->groups);
        mask = cy->ws;
    }
    NAC_TRY(cuda_ensure(be, dx));
    NAC_TRY(cuda_ensure(be, dgamma));
    NAC_TRY(cuda_ensure(be, dbeta));
    void *part;
    NAC_TRY(cuda_workspace(be, 2 * (size_t)b.groups * (size_t)b.c * sizeof(float), &part));
    CUDA_TRY(cuk_bn_bwd(STREAM(be), &b, CUDA_P(x), CUDA_P(dy), mask, CUDA_P(save_mean),
                        CUDA_P(save_var), CUDA_P(gamma), CUDA_P(dx), CUDA_P(dgamma),
                        CUDA_P(dbeta), part));
    return NAC_OK;
}

/* ---- synchronised batch norm (the reductions summed over ranks by the caller) ---- */
nac_status cuda_bn_stats(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *mean,
                         nac_tensor_t *var, const nac_bn_params *p) {
    cuk_bn b = bn_shape(x, p);
    NAC_TRY(cuda_ensure(be, mean));
    NAC_TRY(cuda_ensure(be, var));
    CUDA_TRY(cuk_bn_stats(STREAM(be), &b, CUDA_P(x), CUDA_P(mean), CUDA_P(var)));
    return NAC_OK;
}

nac_status cuda_bn_bwd_sums(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *dy,
                            const nac_tensor_t *gamma, const nac_tensor_t *beta,
                            const nac_tensor_t *mean, const nac_tensor_t *var, nac_tensor_t *sums,
                            const nac_bn_params *p) {
    cuk_bn b = bn_shape(x, p);
    NAC_TRY(cuda_ensure(be, sums));
    CUDA_TRY(cuk_bn_sync_bwd_sums(STREAM(be), &b, CUDA_P(x), CUDA_P(dy), CUDA_P(mean),
                                  CUDA_P(var), CUDA_P(gamma), CUDA_P(beta), p->relu,
                                  CUDA_P(sums)));
    return NAC_OK;
}

nac_status cuda_bn_bwd_given(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *dy,
                             const nac_tensor_t *gamma, const nac_tensor_t *beta,
                             const nac_tensor_t *mean, const nac_tensor_t *var,
                             const nac_tensor_t *dmeans, nac_tensor_t *dx,
                             const nac_bn_params *p) {
    cuk_bn b = bn_shape(x, p);
    NAC_TRY(cuda_ensure(be, dx));
    CUDA_TRY(cuk_bn_sync_dx(STREAM(be), &b, CUDA_P(x), CUDA_P(dy), CUDA_P(mean), CUDA_P(var),
                            CUDA_P(gamma), CUDA_P(beta), p->relu, CUDA_P(dmeans), CUDA_P(dx)));
    return NAC_OK;
}

/* ---- pooling and resampling ---- */
static cuk_pool pool_shape(const nac_tensor_t *x, const nac_tensor_t *y, const nac_pool_params *p) {
    return (cuk_pool){.planes = x->dim[0] * x->dim[1], .h = x->dim[2], .w = x->dim[3],
                      .oh = y->dim[2], .ow = y->dim[3], .k = p->kernel, .st = p->stride,
                      .pad = p->pad};
}

static nac_status pool_kind(const char *op, nac_pool kind) {
    if (kind != NAC_POOL_MAX && kind != NAC_POOL_AVG)
        return nac_error(NAC_ERR_INVALID, "%s: unknown pooling kind %d", op, (int)kind);
    return NAC_OK;
}

nac_status cuda_pool_fwd(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y,
                         const nac_pool_params *p) {
    const char *op = "nac_pool_forward";
    NAC_TRY(pool_kind(op, p->kind));
    cuk_pool q = pool_shape(x, y, p);
    NAC_TRY(cuda_ensure(be, y));
    if (p->kind == NAC_POOL_AVG) {
        CUDA_TRY(cuk_avgpool_fwd(STREAM(be), &q, CUDA_P(x), CUDA_P(y)));
        return NAC_OK;
    }
    /* the arg-max indices stay with y for the backward */
    NAC_TRY(cuda_tensor_ws(y, (size_t)nac_tensor_numel(y) * sizeof(int32_t), CUDA_WS_ARGMAX, op));
    CUDA_TRY(cuk_maxpool_fwd(STREAM(be), &q, CUDA_P(x), CUDA_P(y), CUDA_T(y)->ws));
    return NAC_OK;
}

nac_status cuda_pool_bwd(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *y,
                         const nac_tensor_t *dy, nac_tensor_t *dx, const nac_pool_params *p) {
    const char *op = "nac_pool_backward";
    NAC_TRY(pool_kind(op, p->kind));
    cuk_pool q = pool_shape(x, y, p);
    NAC_TRY(cuda_ensure(be, dx));
    if (p->kind == NAC_POOL_AVG) {
        CUDA_TRY(cuk_avgpool_bwd(STREAM(be), &q, CUDA_P(dy), CUDA_P(dx)));
        return NAC_OK;
    }
    const cuda_tensor *cy = CUDA_T(y);
    if (cy->ws_kind != CUDA_WS_ARGMAX ||
        cy->ws_bytes != (size_t)nac_tensor_numel(y) * sizeof(int32_t))
        return nac_error(NAC_ERR_INVALID,
                         "%s: y holds no arg-max indices from nac_pool_forward with these shapes",
                         op);
    CUDA_TRY(cuk_maxpool_bwd(STREAM(be), &q, cy->ws, CUDA_P(dy), CUDA_P(dx)));
    return NAC_OK;
}

nac_status cuda_gap_fwd(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(cuda_ensure(be, y));
    CUDA_TRY(cuk_gap_fwd(STREAM(be), CUDA_P(x), CUDA_P(y), x->dim[0] * x->dim[1],
                         x->dim[2] * x->dim[3]));
    return NAC_OK;
}

nac_status cuda_gap_bwd(nac_backend_t *be, const nac_tensor_t *dy, nac_tensor_t *dx) {
    NAC_TRY(cuda_ensure(be, dx));
    CUDA_TRY(cuk_gap_bwd(STREAM(be), CUDA_P(dy), CUDA_P(dx), dx->dim[0] * dx->dim[1],
                         dx->dim[2] * dx->dim[3]));
    return NAC_OK;
}

nac_status cuda_upsample_fwd(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(cuda_ensure(be, y));
    CUDA_TRY(cuk_upsample_fwd(STREAM(be), CUDA_P(x), CUDA_P(y), x->dim[0] * x->dim[1], x->dim[2],
                              x->dim[3], (int)(y->dim[2] / x->dim[2])));
    return NAC_OK;
}

nac_status cuda_upsample_bwd(nac_backend_t *be, const nac_tensor_t *dy, nac_tensor_t *dx) {
    NAC_TRY(cuda_ensure(be, dx));
    CUDA_TRY(cuk_upsample_bwd(STREAM(be), CUDA_P(dy), CUDA_P(dx), dx->dim[0] * dx->dim[1],
                              dx->dim[2], dx->dim[3], (int)(dy->dim[2] / dx->dim[2])));
    return NAC_OK;
}

/* ---- element-wise ---- */
static nac_status act_kind(const char *op, nac_act kind) {
    if (kind < NAC_ACT_RELU || kind > NAC_ACT_LINEAR)
        return nac_error(NAC_ERR_INVALID, "%s: unknown activation %d", op, (int)kind);
    return NAC_OK;
}

nac_status cuda_act_fwd(nac_backend_t *be, nac_act kind, const nac_tensor_t *x, nac_tensor_t *y,
                        float alpha, float beta) {
    NAC_TRY(act_kind("nac_act_forward", kind));
    NAC_TRY(cuda_ensure(be, y));
    CUDA_TRY(cuk_act_fwd(STREAM(be), (int)kind, CUDA_P(x), CUDA_P(y), nac_tensor_numel(x), alpha,
                         beta));
    return NAC_OK;
}

nac_status cuda_act_bwd(nac_backend_t *be, nac_act kind, const nac_tensor_t *x,
                        const nac_tensor_t *y, const nac_tensor_t *dy, nac_tensor_t *dx,
                        float alpha, float beta) {
    (void)beta;
    NAC_TRY(act_kind("nac_act_backward", kind));
    bool uses_y = kind == NAC_ACT_TANH || kind == NAC_ACT_SIGMOID || kind == NAC_ACT_EXP ||
                  kind == NAC_ACT_SQRT;
    const nac_tensor_t *data = uses_y ? y : x;
    NAC_TRY(cuda_ensure(be, dx));
    CUDA_TRY(cuk_act_bwd(STREAM(be), (int)kind, CUDA_P(data), CUDA_P(dy), CUDA_P(dx),
                         nac_tensor_numel(dy), alpha));
    return NAC_OK;
}

static nac_status binop_kind(const char *op, nac_binop kind) {
    if (kind < NAC_BIN_ADD || kind > NAC_BIN_MAX)
        return nac_error(NAC_ERR_INVALID, "%s: unknown operation %d", op, (int)kind);
    return NAC_OK;
}

nac_status cuda_binary(nac_backend_t *be, nac_binop kind, const nac_tensor_t *a,
                       const nac_tensor_t *b, nac_tensor_t *y) {
    NAC_TRY(binop_kind("nac_binary", kind));
    NAC_TRY(cuda_ensure(be, y));
    CUDA_TRY(cuk_binary(STREAM(be), (int)kind, CUDA_P(a), CUDA_P(b), CUDA_P(y),
                        nac_tensor_numel(a)));
    return NAC_OK;
}

nac_status cuda_axpby(nac_backend_t *be, float alpha, const nac_tensor_t *x, float beta,
                      nac_tensor_t *y) {
    NAC_TRY(cuda_ensure(be, y));
    CUDA_TRY(cuk_axpby(STREAM(be), alpha, CUDA_P(x), beta, CUDA_P(y), nac_tensor_numel(x)));
    return NAC_OK;
}

/* ---- row-wise ---- */
static nac_status rows(nac_backend_t *be, int what, const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(cuda_ensure(be, y));
    CUDA_TRY(cuk_rows(STREAM(be), what, CUDA_P(x), CUDA_P(y), x->dim[0], x->dim[1]));
    return NAC_OK;
}

nac_status cuda_row_logsumexp(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    return rows(be, 0, x, y);
}

nac_status cuda_row_softmax(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    return rows(be, 1, x, y);
}

nac_status cuda_row_sum(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    return rows(be, 2, x, y);
}

static nac_status broadcast(nac_backend_t *be, const char *op, nac_binop kind,
                            const nac_tensor_t *x, const nac_tensor_t *v, nac_tensor_t *y,
                            bool by_col) {
    NAC_TRY(binop_kind(op, kind));
    NAC_TRY(cuda_ensure(be, y));
    CUDA_TRY(cuk_broadcast(STREAM(be), (int)kind, CUDA_P(x), CUDA_P(v), CUDA_P(y), x->dim[0],
                           x->dim[1], by_col));
    return NAC_OK;
}

nac_status cuda_row_broadcast(nac_backend_t *be, nac_binop kind, const nac_tensor_t *x,
                              const nac_tensor_t *v, nac_tensor_t *y) {
    return broadcast(be, "nac_row_broadcast", kind, x, v, y, true);
}

nac_status cuda_col_broadcast(nac_backend_t *be, nac_binop kind, const nac_tensor_t *x,
                              const nac_tensor_t *v, nac_tensor_t *y) {
    return broadcast(be, "nac_col_broadcast", kind, x, v, y, false);
}

static nac_status sum_all(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y,
                          bool squares) {
    NAC_TRY(cuda_ensure(be, y));
    void *part;
    NAC_TRY(cuda_workspace(be, CUK_RED_BLOCKS * sizeof(double), &part));
    CUDA_TRY(cuk_sum_all(STREAM(be), CUDA_P(x), nac_tensor_numel(x), squares, part, CUDA_P(y)));
    return NAC_OK;
}

nac_status cuda_sum_all(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    return sum_all(be, x, y, false);
}

nac_status cuda_sumsq_all(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    return sum_all(be, x, y, true);
}

/* ---- optimiser ---- */
nac_status cuda_opt_update(nac_backend_t *be, nac_tensor_t *w, const nac_tensor_t *g,
                           nac_tensor_t *s1, nac_tensor_t *s2, const nac_opt_step *h) {
    if (h->kind != NAC_OPT_SGD && h->kind != NAC_OPT_LARS && h->kind != NAC_OPT_ADAM &&
        h->kind != NAC_OPT_ADAMW)
        return nac_error(NAC_ERR_INVALID, "nac_opt_update: unknown optimiser kind %d",
                         (int)h->kind);
    bool uses_s1 = h->kind != NAC_OPT_SGD || h->momentum != 0.0f;
    bool uses_s2 = h->kind == NAC_OPT_ADAM || h->kind == NAC_OPT_ADAMW;
    if (uses_s1) NAC_TRY(cuda_ensure(be, s1));
    if (uses_s2) NAC_TRY(cuda_ensure(be, s2));
    cuk_opt o = {.kind = (int)h->kind, .lr = h->lr, .momentum = h->momentum,
                 .weight_decay = h->weight_decay, .eta = h->eta, .beta1 = h->beta1,
                 .beta2 = h->beta2, .eps = h->eps, .nesterov = h->nesterov,
                 .lars_adapt = h->lars_adapt};
    if (uses_s2) { /* the bias corrections in double on the host, as math.c */
        double bc1 = 1.0 - pow(h->beta1, (double)h->t), bc2 = 1.0 - pow(h->beta2, (double)h->t);
        o.step = (float)(h->lr / bc1);
        o.rbc2 = (float)(1.0 / sqrt(bc2));
    }
    void *part = NULL;
    if (h->kind == NAC_OPT_LARS && h->lars_adapt)
        NAC_TRY(cuda_workspace(be, 2 * CUK_RED_BLOCKS * sizeof(double) + sizeof(float), &part));
    CUDA_TRY(cuk_opt_update(STREAM(be), &o, CUDA_P(w), CUDA_P(g), uses_s1 ? CUDA_P(s1) : NULL,
                            uses_s2 ? CUDA_P(s2) : NULL, nac_tensor_numel(w), part));
    return NAC_OK;
}

nac_status cuda_ema(nac_backend_t *be, nac_tensor_t *wm, const nac_tensor_t *w, float decay) {
    CUDA_TRY(cuk_ema(STREAM(be), CUDA_P(wm), CUDA_P(w), decay, nac_tensor_numel(w)));
    return NAC_OK;
}
