/* Index arithmetic of the CUDA backend (the kernels of kernels.cu, the cuBLAS calls of
 * dnn.c), as NAC_HOSTDEV inline functions so that tests/test_cuda.c checks it on the host
 * against brute force: the part easiest to get subtly wrong that needs no GPU to check. */
#ifndef NAC_BACKEND_CUDA_KERNEL_INDEX_H
#define NAC_BACKEND_CUDA_KERNEL_INDEX_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/hostdev.h"

/* The outputs [*lo, *hi] (along one axis of `on` outputs) whose pooling windows (kernel k,
 * stride st, padding pad) cover input coordinate i; empty when *lo > *hi. */
static inline NAC_HOSTDEV void cuk_covering(int64_t i, int k, int st, int pad, int64_t on,
                                            int64_t *lo, int64_t *hi) {
    int64_t a = i + pad - k + 1; /* a window starting at or after a covers i */
    *lo = a <= 0 ? 0 : (a + st - 1) / st;
    *hi = (i + pad) / st;
    if (*hi > on - 1) *hi = on - 1;
}

/* The real (unpadded) input elements of pooling window (oy, ox) over an h x w plane. */
static inline NAC_HOSTDEV int cuk_window_count(int64_t h, int64_t w, int k, int st, int pad,
                                               int64_t oy, int64_t ox) {
    int64_t y0 = oy * st - pad, x0 = ox * st - pad;
    int64_t y1 = y0 + k, x1 = x0 + k;
    y0 = y0 < 0 ? 0 : y0;
    x0 = x0 < 0 ? 0 : x0;
    y1 = y1 > h ? h : y1;
    x1 = x1 > w ? w : x1;
    return (int)((y1 - y0) * (x1 - x0));
}

/* Offset in x (n, c, hw) of element i of the slice of group g, channel ch: the images
 * g*n/groups .. (g+1)*n/groups - 1, plane ch, i running over images then positions. */
static inline NAC_HOSTDEV int64_t cuk_bn_at(int64_t n, int64_t c, int64_t hw, int groups,
                                            int64_t g, int64_t ch, int64_t i) {
    int64_t ng = n / groups;
    return ((g * ng + i / hw) * c + ch) * hw + i % hw;
}

/* The statistics row (group * c + channel) of element i of x (n, c, hw) in `groups`. */
static inline NAC_HOSTDEV int64_t cuk_bn_stat(int64_t n, int64_t c, int64_t hw, int groups,
                                              int64_t i) {
    return (i / (hw * c)) / (n / groups) * c + (i / hw) % c;
}

/* A row-major product C (m, n) = op(A) op(B) (A with row stride lda, B with ldb) as the
 * column-major GEMM cuBLAS computes: C^T = op(B)^T op(A)^T, so the first operand is B and
 * the second A, each transposed iff the row-major op transposes it. */
typedef struct cuk_gemm_call {
    bool t1, t2;         /* transpose the first (B) / second (A) operand */
    int64_t m, n, k;     /* column-major dimensions: (m, k) (k, n) -> (m, n) */
    int64_t ld1, ld2, ldc;
} cuk_gemm_call;

static inline NAC_HOSTDEV cuk_gemm_call cuk_gemm_colmajor(bool ta, bool tb, int64_t m,
                                                          int64_t n, int64_t k, int64_t lda,
                                                          int64_t ldb) {
    cuk_gemm_call c = {tb, ta, n, m, k, ldb, lda, n};
    return c;
}

/* ---- pooling ---- */
/* Pooling of planes (n*c, h, w) -> (n*c, oh, ow); square kernel k, stride st, padding pad. */
typedef struct cuk_pool {
    int64_t planes, h, w, oh, ow;
    int k, st, pad;
} cuk_pool;

/* Output (oy, ox) of one plane xp: the window's maximum (the first where tied; *at its
 * offset in the plane) or the mean of its real elements (padding excluded). */
static inline NAC_HOSTDEV float cuk_pool_one(const cuk_pool *p, bool max, const float *xp,
                                             int64_t oy, int64_t ox, int32_t *at) {
    float best = -INFINITY, sum = 0.0f;
    *at = -1;
    for (int i = 0; i < p->k; i++) {
        int64_t iy = oy * p->st - p->pad + i;
        if (iy < 0 || iy >= p->h) continue;
        for (int j = 0; j < p->k; j++) {
            int64_t ix = ox * p->st - p->pad + j;
            if (ix < 0 || ix >= p->w) continue;
            float v = xp[iy * p->w + ix];
            sum += v;
            if (*at < 0 || v > best) {
                best = v;
                *at = (int32_t)(iy * p->w + ix);
            }
        }
    }
    return max ? best : sum / (float)cuk_window_count(p->h, p->w, p->k, p->st, p->pad, oy, ox);
}

/* dx at input (iy, ix) of one plane: the sum over the windows covering it of dy (max: where
 * the window's arg-max is this input; average: divided by the window's real count). */
static inline NAC_HOSTDEV float cuk_pool_grad_one(const cuk_pool *p, bool max,
                                                  const int32_t *argmax, const float *dy,
                                                  int64_t iy, int64_t ix) {
    int64_t y0, y1, x0, x1;
    cuk_covering(iy, p->k, p->st, p->pad, p->oh, &y0, &y1);
    cuk_covering(ix, p->k, p->st, p->pad, p->ow, &x0, &x1);
    int32_t me = (int32_t)(iy * p->w + ix);
    float s = 0.0f;
    for (int64_t oy = y0; oy <= y1; oy++)
        for (int64_t ox = x0; ox <= x1; ox++) {
            int64_t o = oy * p->ow + ox;
            if (!max)
                s += dy[o] / (float)cuk_window_count(p->h, p->w, p->k, p->st, p->pad, oy, ox);
            else if (argmax[o] == me)
                s += dy[o];
        }
    return s;
}

/* ---- batch norm, per element (k_bn_apply, k_bn_running, k_bn_bwd_dx) ---- */
/* y = (x - mean) / sqrt(var + eps) gamma + beta, with the batch's biased variance */
static inline NAC_HOSTDEV float cuk_bn_y(float x, float mean, float var, float eps, float gamma,
                                         float beta) {
    float inv = 1.0f / sqrtf(var + eps);
    return (x - mean) * inv * gamma + beta;
}

/* whether the fused ReLU passes the element: the same float expression as cuk_bn_y */
static inline NAC_HOSTDEV bool cuk_bn_relu_on(float x, float mean, float var, float eps,
                                              float gamma, float beta) {
    return cuk_bn_y(x, mean, var, eps, gamma, beta) > 0.0f;
}

/* running = (1 - mom) running + mom batch, the variance made unbiased (x n / (n - 1)) */
static inline NAC_HOSTDEV void cuk_bn_running_one(float *rm, float *rv, float mean,
                                                  float var, float mom, float unbias) {
    *rm = (1.0f - mom) * *rm + mom * mean;
    *rv = (1.0f - mom) * *rv + mom * var * unbias;
}

/* dx = gamma inv (dy - sd / m - xhat sdx / m): sd = sum dy, sdx = sum dy xhat over the m
 * elements of the element's (group, channel) slice, dy already masked by the fused ReLU */
static inline NAC_HOSTDEV float cuk_bn_dx(float x, float dy, float mean, float var, float eps,
                                          float gamma, float sd, float sdx, float m) {
    float inv = 1.0f / sqrtf(var + eps);
    float xhat = (x - mean) * inv;
    return gamma * inv * (dy - sd / m - xhat * sdx / m);
}

/* ---- the activations of k_act_fwd / k_act_bwd ---- */
static inline NAC_HOSTDEV float cuk_act_f(int kind, float x, float alpha, float beta) {
    switch (kind) {
    case NAC_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case NAC_ACT_TANH: return tanhf(x);
    case NAC_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case NAC_ACT_EXP: return expf(x);
    case NAC_ACT_LOG: return logf(x);
    case NAC_ACT_SQUARE: return x * x;
    case NAC_ACT_SQRT: return sqrtf(x);
    case NAC_ACT_ABS: return fabsf(x);
    case NAC_ACT_SOFTPLUS: return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
    default: return alpha * x + beta; /* NAC_ACT_LINEAR */
    }
}

/* d = the datum the derivative reads: x for RELU/LOG/SQUARE/ABS/SOFTPLUS/LINEAR, y for
 * TANH/SIGMOID/EXP/SQRT */
static inline NAC_HOSTDEV float cuk_act_df(int kind, float d, float dy, float alpha) {
    switch (kind) {
    case NAC_ACT_RELU: return d > 0.0f ? dy : 0.0f;
    case NAC_ACT_TANH: return dy * (1.0f - d * d);
    case NAC_ACT_SIGMOID: return dy * d * (1.0f - d);
    case NAC_ACT_EXP: return dy * d;
    case NAC_ACT_LOG: return dy / d;
    case NAC_ACT_SQUARE: return dy * 2.0f * d;
    case NAC_ACT_SQRT: return dy / (2.0f * d);
    case NAC_ACT_ABS: return d > 0.0f ? dy : (d < 0.0f ? -dy : 0.0f);
    case NAC_ACT_SOFTPLUS: return dy / (1.0f + expf(-d));
    default: return dy * alpha; /* NAC_ACT_LINEAR */
    }
}

#endif
