/* The CUDA backend's kernels: element-wise ops, row reductions, batch norm with per-group
 * statistics, pooling, resampling, the optimiser rules and the counter-based random fills.
 * Kept plain on purpose (one thread per element with grid-stride loops, or one block per
 * row / channel with a fixed-shape tree reduction): every result is a fixed function of
 * the inputs (no atomics), and each formula is the CPU backend's (backend/cpu/math.c). */
#include <float.h>
#include <math.h>

#include "backend/cuda/cuda_impl.h"
#include "backend/cuda/kernel_index.h"
#include "backend/rng.h"
#include "backend/rules.h"

namespace {

constexpr int kThreads = 256;       /* element-wise blocks */
constexpr int kRedThreads = 256;    /* reduction blocks (a power of two) */
constexpr int64_t kMaxBlocks = 65535 * 8;

int64_t blocks_for(int64_t n) {
    int64_t b = (n + kThreads - 1) / kThreads;
    return b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b);
}

cudaError_t launched() { return cudaGetLastError(); }

#define GRID_LOOP(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)blockDim.x * gridDim.x)

/* Sum of v over the block (kRedThreads threads), in a fixed tree order; every thread
 * gets the result. sh: kRedThreads doubles of shared memory. */
__device__ double block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int off = kRedThreads / 2; off > 0; off >>= 1) {
        if ((int)threadIdx.x < off) sh[threadIdx.x] += sh[threadIdx.x + off];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

__device__ float block_max(float v, float *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int off = kRedThreads / 2; off > 0; off >>= 1) {
        if ((int)threadIdx.x < off) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + off]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

/* ---- fills ---- */
__global__ void k_fill(float *y, int64_t n, float v) {
    GRID_LOOP(i, n) y[i] = v;
}

__global__ void k_rand(float *y, int64_t n, int kind, float param, float below, uint64_t key) {
    float scale = param != 0.0f ? param : 1.0f;
    GRID_LOOP(i, n) {
        if (kind == NAC_RAND_UNIFORM) {
            float v = nac_rng_uniform_at(key, (uint64_t)i) * scale;
            y[i] = v < scale ? v : below;
        } else if (kind == NAC_RAND_NORMAL) {
            y[i] = nac_rng_normal_at(key, (uint64_t)i) * scale;
        } else {
            y[i] = nac_rng_uniform_at(key, (uint64_t)i) < param ? -1.0f : 1.0f;
        }
    }
}

/* ---- element-wise ---- */
__global__ void k_act_fwd(int kind, const float *x, float *y, int64_t n, float alpha,
                          float beta) {
    GRID_LOOP(i, n) y[i] = cuk_act_f(kind, x[i], alpha, beta);
}

__global__ void k_act_bwd(int kind, const float *d, const float *dy, float *dx, int64_t n,
                          float alpha) {
    GRID_LOOP(i, n) dx[i] = cuk_act_df(kind, d[i], dy[i], alpha);
}

/* MAX as the CPU backend's flat loop (a > b ? a : b); the broadcasts use the rule as is */
__device__ float flat_binop(int k, float a, float b) {
    return k == NAC_BIN_MAX ? (a > b ? a : b) : nac_rule_binop((nac_binop)k, a, b);
}

__global__ void k_binary(int kind, const float *a, const float *b, float *y, int64_t n) {
    GRID_LOOP(i, n) y[i] = flat_binop(kind, a[i], b[i]);
}

__global__ void k_axpby(float alpha, const float *x, float beta, float *y, int64_t n) {
    if (beta == 0.0f) {
        GRID_LOOP(i, n) y[i] = alpha * x[i];
    } else {
        GRID_LOOP(i, n) y[i] = alpha * x[i] + beta * y[i];
    }
}

__global__ void k_broadcast(int kind, const float *x, const float *v, float *y, int64_t rows,
                            int64_t cols, bool by_col) {
    GRID_LOOP(i, rows * cols)
        y[i] = nac_rule_binop((nac_binop)kind, x[i], v[by_col ? i % cols : i / cols]);
}

__global__ void k_rows_set(float *y, const float *v, int64_t rows, int64_t cols) {
    GRID_LOOP(i, rows * cols) y[i] = v[i % cols];
}

/* one thread per column, top to bottom in double (as math.c's col_sums) */
__global__ void k_col_sums(const float *dy, float *db, int64_t rows, int64_t cols) {
    GRID_LOOP(j, cols) {
        double acc = 0;
        for (int64_t i = 0; i < rows; i++) acc += dy[i * cols + j];
        db[j] = (float)acc;
    }
}

/* ---- row-wise: one block per row ---- */
__global__ void k_rows(int what, const float *x, float *y, int64_t cols) {
    __shared__ double shd[kRedThreads];
    __shared__ float shf[kRedThreads];
    const float *r = x + (int64_t)blockIdx.x * cols;
    if (what == 2) {
        double s = 0;
        for (int64_t j = threadIdx.x; j < cols; j += kRedThreads) s += r[j];
        s = block_sum(s, shd);
        if (threadIdx.x == 0) y[blockIdx.x] = (float)s;
        return;
    }
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < cols; j += kRedThreads) mx = fmaxf(mx, r[j]);
    mx = block_max(mx, shf);
    if (what == 0 && isinf(mx)) { /* all -inf gives -inf; any +inf gives +inf */
        if (threadIdx.x == 0) y[blockIdx.x] = mx;
        return;
    }
    double s = 0; /* a NaN in the row makes s NaN */
    for (int64_t j = threadIdx.x; j < cols; j += kRedThreads)
        s += (what == 1 && mx == -INFINITY) ? 1.0f : expf(r[j] - mx);
    s = block_sum(s, shd); /* every read of the row is done: y may now overwrite x */
    if (what == 0) {
        if (threadIdx.x == 0) y[blockIdx.x] = (float)(mx + log(s));
        return;
    }
    float inv = (float)(1.0 / s);
    float *o = y + (int64_t)blockIdx.x * cols;
    for (int64_t j = threadIdx.x; j < cols; j += kRedThreads) {
        float e = mx == -INFINITY ? 1.0f : expf(r[j] - mx);
        o[j] = e * inv;
    }
}

/* ---- whole-tensor sums: fixed blocks of partial sums, then one block over them ---- */
__global__ void k_sum_part(const float *x, int64_t n, bool squares, double *part) {
    __shared__ double sh[kRedThreads];
    double s = 0;
    for (int64_t i = (int64_t)blockIdx.x * kRedThreads + threadIdx.x; i < n;
         i += (int64_t)kRedThreads * gridDim.x)
        s += squares ? (double)x[i] * x[i] : (double)x[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void k_sum_final(const double *part, int nparts, float *y) {
    __shared__ double sh[kRedThreads];
    double s = 0;
    for (int i = threadIdx.x; i < nparts; i += kRedThreads) s += part[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) y[0] = (float)s;
}

/* ---- per-channel planes ---- */
__global__ void k_bias_add(float *y, const float *b, int64_t n, int64_t c, int64_t hw) {
    GRID_LOOP(i, n * c * hw) y[i] += b[(i / hw) % c];
}

/* one block per channel */
__global__ void k_bias_grad(const float *dy, float *db, int64_t n, int64_t c, int64_t hw) {
    __shared__ double sh[kRedThreads];
    int64_t ch = blockIdx.x;
    double s = 0;
    for (int64_t i = threadIdx.x; i < n * hw; i += kRedThreads)
        s += dy[((i / hw) * c + ch) * hw + i % hw];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) db[ch] = (float)s;
}

/* ---- batch norm ---- */
/* one block per (group, channel): mean, then the biased variance around it */
__global__ void k_bn_stats(cuk_bn b, const float *x, float *mean, float *var) {
    __shared__ double sh[kRedThreads];
    int64_t g = blockIdx.x / b.c, ch = blockIdx.x % b.c;
    int64_t m = b.n / b.groups * b.hw;
    double s = 0;
    for (int64_t i = threadIdx.x; i < m; i += kRedThreads)
        s += x[cuk_bn_at(b.n, b.c, b.hw, b.groups, g, ch, i)];
    double mu = block_sum(s, sh) / (double)m;
    double q = 0;
    for (int64_t i = threadIdx.x; i < m; i += kRedThreads) {
        double d = x[cuk_bn_at(b.n, b.c, b.hw, b.groups, g, ch, i)] - mu;
        q += d * d;
    }
    double v = block_sum(q, sh) / (double)m;
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = (float)mu;
        var[blockIdx.x] = (float)v;
    }
}

/* one thread per channel, groups in order (as cpu/dnn.c's bn_fwd_groups) */
__global__ void k_bn_running(cuk_bn b, const float *mean, const float *var, float *rm, float *rv,
                             float m, float unbias) {
    GRID_LOOP(ch, b.c) {
        for (int g = 0; g < b.groups; g++) {
            cuk_bn_running_one(&rm[ch], &rv[ch], mean[g * b.c + ch], var[g * b.c + ch], m,
                               unbias);
        }
    }
}

__global__ void k_bn_apply(cuk_bn b, const float *x, const float *mean, const float *var,
                           bool per_group, const float *gamma, const float *beta, float *y,
                           bool relu, unsigned char *mask) {
    GRID_LOOP(i, b.n * b.c * b.hw) {
        int64_t ch = (i / b.hw) % b.c;
        int64_t s = per_group ? cuk_bn_stat(b.n, b.c, b.hw, b.groups, i) : ch;
        float v = cuk_bn_y(x[i], mean[s], var[s], b.eps, gamma[ch], beta[ch]);
        if (relu) {
            bool on = v > 0.0f;
            if (mask) mask[i] = on;
            v = on ? v : 0.0f;
        }
        y[i] = v;
    }
}

/* The ReLU of a fused BN+ReLU: the forward's mask (per-rank backward), or the mask
 * recomputed from x and the statistics (the synchronised backward, whose forward left
 * none: cuk_bn_relu_on is the forward's own float expression). */
typedef struct bn_relu {
    const unsigned char *mask;   /* not NULL: the forward's mask */
    const float *beta;           /* not NULL: recompute from x, mean, var, gamma, beta */
} bn_relu;

/* dy at element i of statistics row s, channel ch, masked by the ReLU */
__device__ float bn_dy(const cuk_bn &b, const float *x, const float *dy, bn_relu r,
                       const float *mean, const float *var, const float *gamma, int64_t s,
                       int64_t ch, int64_t i) {
    if (r.mask && !r.mask[i]) return 0.0f;
    if (r.beta && !cuk_bn_relu_on(x[i], mean[s], var[s], b.eps, gamma[ch], r.beta[ch]))
        return 0.0f;
    return dy[i];
}

/* one block per (group, channel): part[0][g,c] = sum dy, part[1][g,c] = sum dy * xhat */
__global__ void k_bn_bwd_sums(cuk_bn b, const float *x, const float *dy, bn_relu r,
                              const float *mean, const float *var, const float *gamma,
                              float *part) {
    __shared__ double sh[kRedThreads];
    int64_t g = blockIdx.x / b.c, ch = blockIdx.x % b.c;
    int64_t m = b.n / b.groups * b.hw;
    double mu = mean[blockIdx.x], inv = 1.0 / sqrt((double)var[blockIdx.x] + b.eps);
    double sd = 0, sdx = 0;
    for (int64_t i = threadIdx.x; i < m; i += kRedThreads) {
        int64_t at = cuk_bn_at(b.n, b.c, b.hw, b.groups, g, ch, i);
        double d = bn_dy(b, x, dy, r, mean, var, gamma, blockIdx.x, ch, at);
        sd += d;
        sdx += d * (x[at] - mu) * inv;
    }
    sd = block_sum(sd, sh);
    sdx = block_sum(sdx, sh);
    if (threadIdx.x == 0) {
        part[blockIdx.x] = (float)sd;
        part[(int64_t)b.groups * b.c + blockIdx.x] = (float)sdx;
    }
}

/* the parameter gradients: group 0's, then each later group's added, per channel */
__global__ void k_bn_bwd_params(cuk_bn b, const float *part, float *dgamma, float *dbeta) {
    int64_t gc = (int64_t)b.groups * b.c;
    GRID_LOOP(ch, b.c) {
        float sg = part[gc + ch], sb = part[ch];
        for (int g = 1; g < b.groups; g++) {
            sg += part[gc + g * b.c + ch];
            sb += part[g * b.c + ch];
        }
        dgamma[ch] = sg;
        dbeta[ch] = sb;
    }
}

/* dx from the group's sums over m elements (cuk_bn_dx; the synchronised backward passes
 * the global means and m = 1) */
__global__ void k_bn_bwd_dx(cuk_bn b, const float *x, const float *dy, bn_relu r,
                            const float *mean, const float *var, const float *gamma,
                            const float *part, float m, float *dx) {
    int64_t gc = (int64_t)b.groups * b.c;
    GRID_LOOP(i, b.n * b.c * b.hw) {
        int64_t ch = (i / b.hw) % b.c, s = cuk_bn_stat(b.n, b.c, b.hw, b.groups, i);
        dx[i] = cuk_bn_dx(x[i], bn_dy(b, x, dy, r, mean, var, gamma, s, ch, i), mean[s], var[s],
                          b.eps, gamma[ch], part[s], part[gc + s], m);
    }
}

/* ---- pooling: one thread per output (forward) or per input (backward, gathering from the
 * windows that cover it, so no two threads write one element) ---- */
__global__ void k_pool_fwd(cuk_pool p, bool max, const float *x, float *y, int32_t *argmax) {
    GRID_LOOP(o, p.planes * p.oh * p.ow) {
        int64_t pl = o / (p.oh * p.ow), oy = (o / p.ow) % p.oh, ox = o % p.ow;
        int32_t at;
        y[o] = cuk_pool_one(&p, max, x + pl * p.h * p.w, oy, ox, &at);
        if (max) argmax[o] = at;
    }
}

__global__ void k_pool_bwd(cuk_pool p, bool max, const int32_t *argmax, const float *dy,
                           float *dx) {
    GRID_LOOP(i, p.planes * p.h * p.w) {
        int64_t pl = i / (p.h * p.w), iy = (i / p.w) % p.h, ix = i % p.w;
        int64_t plane = pl * p.oh * p.ow;
        dx[i] = cuk_pool_grad_one(&p, max, max ? argmax + plane : nullptr, dy + plane, iy, ix);
    }
}

__global__ void k_upsample_fwd(const float *x, float *y, int64_t planes, int64_t h, int64_t w,
                               int f) {
    int64_t oh = h * f, ow = w * f;
    GRID_LOOP(o, planes * oh * ow) {
        int64_t pl = o / (oh * ow), oy = (o / ow) % oh, ox = o % ow;
        y[o] = x[(pl * h + oy / f) * w + ox / f];
    }
}

__global__ void k_upsample_bwd(const float *dy, float *dx, int64_t planes, int64_t h, int64_t w,
                               int f) {
    int64_t ow = w * f;
    GRID_LOOP(i, planes * h * w) {
        int64_t pl = i / (h * w), iy = (i / w) % h, ix = i % w;
        float s = 0.0f;
        for (int a = 0; a < f; a++)
            for (int c = 0; c < f; c++) s += dy[(pl * h * f + iy * f + a) * ow + ix * f + c];
        dx[i] = s;
    }
}

__global__ void k_gap_fwd(const float *x, float *y, int64_t planes, int64_t hw) {
    GRID_LOOP(pl, planes) {
        double s = 0;
        for (int64_t j = 0; j < hw; j++) s += x[pl * hw + j];
        y[pl] = (float)(s / (double)hw);
    }
}

__global__ void k_gap_bwd(const float *dy, float *dx, int64_t planes, int64_t hw) {
    GRID_LOOP(i, planes * hw) dx[i] = dy[i / hw] / (float)hw;
}

/* ---- optimiser: the rules of backend/rules.h, as cpu/math.c applies them ---- */
__global__ void k_sgd(cuk_opt h, float *w, const float *g, float *v, int64_t n) {
    float lr = h.lr, wd = h.weight_decay, mom = h.momentum;
    GRID_LOOP(i, n) {
        if (mom == 0.0f || !v) {
            w[i] -= lr * (g[i] + wd * w[i]);
            continue;
        }
        nac_rule_sgd(&w[i], g[i], &v[i], lr, wd, mom, h.nesterov);
    }
}

/* partial sums of ||w||^2 and ||g + wd w||^2: part[0..B) and part[B..2B) */
__global__ void k_lars_norms(const float *w, const float *g, float wd, int64_t n, double *part) {
    __shared__ double sh[kRedThreads];
    double sw = 0, sg = 0;
    for (int64_t i = (int64_t)blockIdx.x * kRedThreads + threadIdx.x; i < n;
         i += (int64_t)kRedThreads * gridDim.x) {
        float gi = g[i] + wd * w[i];
        sw += (double)w[i] * w[i];
        sg += (double)gi * gi;
    }
    sw = block_sum(sw, sh);
    sg = block_sum(sg, sh);
    if (threadIdx.x == 0) {
        part[blockIdx.x] = sw;
        part[gridDim.x + blockIdx.x] = sg;
    }
}

/* scale = lr * trust, trust = eta ||w|| / ||g + wd w|| (1 where a norm is 0) */
__global__ void k_lars_scale(const double *part, int nparts, float lr, float eta, float *scale) {
    __shared__ double sh[kRedThreads];
    double sw = 0, sg = 0;
    for (int i = threadIdx.x; i < nparts; i += kRedThreads) {
        sw += part[i];
        sg += part[nparts + i];
    }
    sw = block_sum(sw, sh);
    sg = block_sum(sg, sh);
    if (threadIdx.x == 0) {
        double nw = sqrt(sw), ng = sqrt(sg), trust = 1.0;
        if (nw > 0 && ng > 0) trust = eta * nw / ng;
        *scale = (float)(lr * trust);
    }
}

__global__ void k_lars_apply(float *w, const float *g, float *v, int64_t n, float wd, float mom,
                             const float *scale_p, float scale_h) {
    float scale = scale_p ? *scale_p : scale_h;
    GRID_LOOP(i, n) nac_rule_lars(&w[i], g[i], &v[i], wd, mom, scale);
}

__global__ void k_adam(cuk_opt h, float *w, const float *g, float *m, float *v, int64_t n) {
    bool decoupled = h.kind == NAC_OPT_ADAMW;
    float wd = decoupled ? 0.0f : h.weight_decay;
    float shrink = decoupled ? 1.0f - h.lr * h.weight_decay : 1.0f;
    GRID_LOOP(i, n)
        nac_rule_adam(&w[i], g[i], &m[i], &v[i], wd, shrink, h.beta1, h.beta2, h.eps, h.step, h.rbc2);
}

__global__ void k_ema(float *wm, const float *w, float decay, float keep, int64_t n) {
    GRID_LOOP(i, n) wm[i] = decay * wm[i] + keep * w[i];
}

} // namespace

#define LAUNCH(kernel, n, s, ...)                                               \
    do {                                                                        \
        kernel<<<(unsigned)blocks_for(n), kThreads, 0, (s)>>>(__VA_ARGS__);     \
        return launched();                                                      \
    } while (0)

extern "C" {

cudaError_t cuk_fill(cudaStream_t s, float *y, int64_t n, float v) { LAUNCH(k_fill, n, s, y, n, v); }

cudaError_t cuk_rand(cudaStream_t s, float *y, int64_t n, int kind, float param, float below,
                     uint64_t key) {
    LAUNCH(k_rand, n, s, y, n, kind, param, below, key);
}

cudaError_t cuk_act_fwd(cudaStream_t s, int kind, const float *x, float *y, int64_t n,
                        float alpha, float beta) {
    LAUNCH(k_act_fwd, n, s, kind, x, y, n, alpha, beta);
}

cudaError_t cuk_act_bwd(cudaStream_t s, int kind, const float *data, const float *dy,
                        float *dx, int64_t n, float alpha) {
    LAUNCH(k_act_bwd, n, s, kind, data, dy, dx, n, alpha);
}

cudaError_t cuk_binary(cudaStream_t s, int kind, const float *a, const float *b, float *y,
                       int64_t n) {
    LAUNCH(k_binary, n, s, kind, a, b, y, n);
}

cudaError_t cuk_axpby(cudaStream_t s, float alpha, const float *x, float beta, float *y,
                      int64_t n) {
    LAUNCH(k_axpby, n, s, alpha, x, beta, y, n);
}

cudaError_t cuk_broadcast(cudaStream_t s, int kind, const float *x, const float *v, float *y,
                          int64_t rows, int64_t cols, bool by_col) {
    LAUNCH(k_broadcast, rows * cols, s, kind, x, v, y, rows, cols, by_col);
}

cudaError_t cuk_rows_set(cudaStream_t s, float *y, const float *v, int64_t rows, int64_t cols) {
    LAUNCH(k_rows_set, rows * cols, s, y, v, rows, cols);
}

cudaError_t cuk_col_sums(cudaStream_t s, const float *dy, float *db, int64_t rows,
                         int64_t cols) {
    LAUNCH(k_col_sums, cols, s, dy, db, rows, cols);
}

cudaError_t cuk_rows(cudaStream_t s, int what, const float *x, float *y, int64_t rows,
                     int64_t cols) {
    k_rows<<<(unsigned)rows, kRedThreads, 0, s>>>(what, x, y, cols);
    return launched();
}

cudaError_t cuk_sum_all(cudaStream_t s, const float *x, int64_t n, bool squares, double *part,
                        float *y) {
    k_sum_part<<<CUK_RED_BLOCKS, kRedThreads, 0, s>>>(x, n, squares, part);
    cudaError_t e = launched();
    if (e != cudaSuccess) return e;
    k_sum_final<<<1, kRedThreads, 0, s>>>(part, CUK_RED_BLOCKS, y);
    return launched();
}

cudaError_t cuk_bias_add(cudaStream_t s, float *y, const float *b, int64_t n, int64_t c,
                         int64_t hw) {
    LAUNCH(k_bias_add, n * c * hw, s, y, b, n, c, hw);
}

cudaError_t cuk_bias_grad(cudaStream_t s, const float *dy, float *db, int64_t n, int64_t c,
                          int64_t hw) {
    k_bias_grad<<<(unsigned)c, kRedThreads, 0, s>>>(dy, db, n, c, hw);
    return launched();
}

cudaError_t cuk_bn_stats(cudaStream_t s, const cuk_bn *b, const float *x, float *mean,
                         float *var) {
    k_bn_stats<<<(unsigned)(b->groups * b->c), kRedThreads, 0, s>>>(*b, x, mean, var);
    return launched();
}

cudaError_t cuk_bn_running(cudaStream_t s, const cuk_bn *b, const float *mean, const float *var,
                           float *rmean, float *rvar, float momentum) {
    double m = (double)(b->n / b->groups) * (double)b->hw;
    float unbias = (float)(m / (m - 1.0));
    LAUNCH(k_bn_running, b->c, s, *b, mean, var, rmean, rvar, momentum, unbias);
}

cudaError_t cuk_bn_apply(cudaStream_t s, const cuk_bn *b, const float *x, const float *mean,
                         const float *var, bool per_group, const float *gamma,
                         const float *beta, float *y, bool relu, unsigned char *mask) {
    LAUNCH(k_bn_apply, b->n * b->c * b->hw, s, *b, x, mean, var, per_group, gamma, beta, y, relu,
           mask);
}

cudaError_t cuk_bn_bwd(cudaStream_t s, const cuk_bn *b, const float *x, const float *dy,
                       const unsigned char *mask, const float *mean, const float *var,
                       const float *gamma, float *dx, float *dgamma, float *dbeta, float *part) {
    bn_relu r = {mask, NULL};
    k_bn_bwd_sums<<<(unsigned)(b->groups * b->c), kRedThreads, 0, s>>>(*b, x, dy, r, mean, var,
                                                                       gamma, part);
    cudaError_t e = launched();
    if (e != cudaSuccess) return e;
    k_bn_bwd_params<<<(unsigned)blocks_for(b->c), kThreads, 0, s>>>(*b, part, dgamma, dbeta);
    if ((e = launched()) != cudaSuccess) return e;
    float m = (float)(b->n / b->groups * b->hw);
    LAUNCH(k_bn_bwd_dx, b->n * b->c * b->hw, s, *b, x, dy, r, mean, var, gamma, part, m, dx);
}

cudaError_t cuk_bn_sync_bwd_sums(cudaStream_t s, const cuk_bn *b, const float *x, const float *dy,
                                 const float *mean, const float *var, const float *gamma,
                                 const float *beta, bool relu, float *sums) {
    bn_relu r = {NULL, relu ? beta : NULL};
    k_bn_bwd_sums<<<(unsigned)(b->groups * b->c), kRedThreads, 0, s>>>(*b, x, dy, r, mean, var,
                                                                       gamma, sums);
    return launched();
}

cudaError_t cuk_bn_sync_dx(cudaStream_t s, const cuk_bn *b, const float *x, const float *dy,
                           const float *mean, const float *var, const float *gamma,
                           const float *beta, bool relu, const float *dmeans, float *dx) {
    bn_relu r = {NULL, relu ? beta : NULL};
    LAUNCH(k_bn_bwd_dx, b->n * b->c * b->hw, s, *b, x, dy, r, mean, var, gamma, dmeans, 1.0f, dx);
}

cudaError_t cuk_maxpool_fwd(cudaStream_t s, const cuk_pool *p, const float *x, float *y,
                            int32_t *argmax) {
    LAUNCH(k_pool_fwd, p->planes * p->oh * p->ow, s, *p, true, x, y, argmax);
}

cudaError_t cuk_maxpool_bwd(cudaStream_t s, const cuk_pool *p, const int32_t *argmax,
                            const float *dy, float *dx) {
    LAUNCH(k_pool_bwd, p->planes * p->h * p->w, s, *p, true, argmax, dy, dx);
}

cudaError_t cuk_avgpool_fwd(cudaStream_t s, const cuk_pool *p, const float *x, float *y) {
    LAUNCH(k_pool_fwd, p->planes * p->oh * p->ow, s, *p, false, x, y, nullptr);
}

cudaError_t cuk_avgpool_bwd(cudaStream_t s, const cuk_pool *p, const float *dy, float *dx) {
    LAUNCH(k_pool_bwd, p->planes * p->h * p->w, s, *p, false, nullptr, dy, dx);
}

cudaError_t cuk_upsample_fwd(cudaStream_t s, const float *x, float *y, int64_t planes,
                             int64_t h, int64_t w, int f) {
    LAUNCH(k_upsample_fwd, planes * h * w * f * f, s, x, y, planes, h, w, f);
}

cudaError_t cuk_upsample_bwd(cudaStream_t s, const float *dy, float *dx, int64_t planes,
                             int64_t h, int64_t w, int f) {
    LAUNCH(k_upsample_bwd, planes * h * w, s, dy, dx, planes, h, w, f);
}

cudaError_t cuk_gap_fwd(cudaStream_t s, const float *x, float *y, int64_t planes, int64_t hw) {
    LAUNCH(k_gap_fwd, planes, s, x, y, planes, hw);
}

cudaError_t cuk_gap_bwd(cudaStream_t s, const float *dy, float *dx, int64_t planes, int64_t hw) {
    LAUNCH(k_gap_bwd, planes * hw, s, dy, dx, planes, hw);
}

cudaError_t cuk_opt_update(cudaStream_t s, const cuk_opt *h, float *w, const float *g,
                           float *s1, float *s2, int64_t n, void *part) {
    switch (h->kind) {
    case NAC_OPT_SGD: LAUNCH(k_sgd, n, s, *h, w, g, s1, n);
    case NAC_OPT_LARS: {
        if (!h->lars_adapt)
            LAUNCH(k_lars_apply, n, s, w, g, s1, n, h->weight_decay, h->momentum, nullptr, h->lr);
        double *pd = (double *)part;
        float *scale = (float *)(pd + 2 * CUK_RED_BLOCKS);
        k_lars_norms<<<CUK_RED_BLOCKS, kRedThreads, 0, s>>>(w, g, h->weight_decay, n, pd);
        cudaError_t e = launched();
        if (e != cudaSuccess) return e;
        k_lars_scale<<<1, kRedThreads, 0, s>>>(pd, CUK_RED_BLOCKS, h->lr, h->eta, scale);
        if ((e = launched()) != cudaSuccess) return e;
        LAUNCH(k_lars_apply, n, s, w, g, s1, n, h->weight_decay, h->momentum, scale, 0.0f);
    }
    default: LAUNCH(k_adam, n, s, *h, w, g, s1, s2, n);
    }
}

cudaError_t cuk_ema(cudaStream_t s, float *wm, const float *w, float decay, int64_t n) {
    LAUNCH(k_ema, n, s, wm, w, decay, 1.0f - decay, n);
}

} // extern "C"
