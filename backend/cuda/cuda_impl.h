/* Private to the CUDA backend (backend/cuda/): the tensor record, the context (stream,
 * cuBLAS and cuDNN handles, the one grow-only workspace, the convolution plan cache, memory
 * counts), the check macros and the kernel launchers kernels.cu defines for the host side.
 * Tensors are plain row-major (NCHW) float32 in cudaMalloc'd device memory, always. */
#ifndef NAC_BACKEND_CUDA_IMPL_H
#define NAC_BACKEND_CUDA_IMPL_H

#include <cuda_runtime_api.h>

#include "backend/backend.h"
#include "backend/cuda/kernel_index.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuda_tensor {
    float *ptr;             /* device, numel floats */
    size_t bytes;
    bool borrowed;          /* ptr is another tensor's storage (nac_tensor_share) */
    struct cuda_context *ctx;
    /* workspace of the op that wrote this tensor: the fused BN+ReLU mask (one byte per
       element) or the max-pooling arg-max (one int32 per output element) */
    void *ws;
    size_t ws_bytes;
    int ws_kind;            /* CUDA_WS_* of what ws holds */
} cuda_tensor;

enum { CUDA_WS_NONE = 0, CUDA_WS_RELU_MASK = 1, CUDA_WS_ARGMAX = 2 };

struct cuda_conv_plan; /* dnn.c */

typedef struct cuda_context {
    int device;
    bool fast;                     /* NAC_CUDA_FAST=1: TF32 and non-deterministic algorithms */
    cudaStream_t stream;
    void *blas;                    /* cublasHandle_t */
    const struct cuda_blas_fns *blas_fns; /* cuBLAS, loaded at run time (blas.c) */
    void *dnn;                     /* cudnnHandle_t */
    size_t mem_live, mem_peak;     /* bytes held: storage, op workspaces, the workspace */
    double flops;
    void *ws;                      /* the one grow-only workspace (cuDNN, reductions) */
    size_t ws_bytes;
    struct cuda_conv_plan *plans;  /* convolution plans by shape (dnn.c) */
    size_t nplans;
} cuda_context;

#define CUDA_CTX(be) ((cuda_context *)(be)->context)
#define CUDA_T(t) ((cuda_tensor *)(t)->impl)
/* the backend table's device_ptr (NCCL's accessor, docs/distributed.md) */
void *nac_cuda_tensor_device_ptr(const nac_tensor_t *t);
#define CUDA_P(t) (CUDA_T(t)->ptr)

/* Evaluate a CUDA runtime call once; on failure return NAC_ERR_BACKEND naming it. */
#define CUDA_TRY(expr)                                                                  \
    do {                                                                                \
        cudaError_t cuda_s_ = (expr);                                                   \
        if (cuda_s_ != cudaSuccess)                                                     \
            return nac_error(NAC_ERR_BACKEND, "CUDA: %s failed: %s (%s) at %s:%d", #expr, \
                             cudaGetErrorString(cuda_s_), cudaGetErrorName(cuda_s_),    \
                             __FILE__, __LINE__);                                       \
    } while (0)

/* ---- cuda.c ---- */
/* Count `bytes` more (grow) or fewer (!grow) held by the backend. */
void cuda_mem_count(cuda_context *ctx, size_t bytes, bool grow);
/* Allocate t (zeroed) if it has no storage yet. */
nac_status cuda_ensure(nac_backend_t *be, nac_tensor_t *t);
/* The workspace, grown to at least `bytes` (never shrinks; stream-ordered reuse). */
nac_status cuda_workspace(nac_backend_t *be, size_t bytes, void **out);
/* A tensor's op workspace of `bytes` of kind `kind` (reallocated, zeroed, if it differs). */
nac_status cuda_tensor_ws(nac_tensor_t *t, size_t bytes, int kind, const char *op);

/* ---- dnn.c: cuDNN convolutions, cuBLAS products ---- */
nac_status cuda_conv_fwd(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                         const nac_tensor_t *, nac_tensor_t *, const nac_conv_params *);
nac_status cuda_conv_bwd_data(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                              nac_tensor_t *, const nac_conv_params *);
nac_status cuda_conv_bwd_weights(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                                 nac_tensor_t *, nac_tensor_t *, const nac_conv_params *);
nac_status cuda_gemm(nac_backend_t *, bool, bool, float, const nac_tensor_t *,
                     const nac_tensor_t *, float, nac_tensor_t *);
nac_status cuda_linear_fwd(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                           const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_linear_bwd(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                           const nac_tensor_t *, nac_tensor_t *, nac_tensor_t *, nac_tensor_t *);
nac_status cuda_dnn_init(cuda_context *ctx);
void cuda_dnn_free(cuda_context *ctx);

/* ---- ops.c: the other ops, on the kernels below ---- */
nac_status cuda_rand(nac_backend_t *, nac_tensor_t *, nac_rand, float, uint64_t);
nac_status cuda_bn_fwd_train(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                             const nac_tensor_t *, nac_tensor_t *, nac_tensor_t *,
                             nac_tensor_t *, nac_tensor_t *, nac_tensor_t *,
                             const nac_bn_params *);
nac_status cuda_bn_fwd_saved(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                             const nac_tensor_t *, const nac_tensor_t *, const nac_tensor_t *,
                             nac_tensor_t *, const nac_bn_params *);
nac_status cuda_bn_fwd_infer(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                             const nac_tensor_t *, const nac_tensor_t *, const nac_tensor_t *,
                             nac_tensor_t *, const nac_bn_params *);
nac_status cuda_bn_bwd(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                       const nac_tensor_t *, const nac_tensor_t *, const nac_tensor_t *,
                       const nac_tensor_t *, nac_tensor_t *, nac_tensor_t *, nac_tensor_t *,
                       const nac_bn_params *);
nac_status cuda_bn_stats(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *, nac_tensor_t *,
                         const nac_bn_params *);
nac_status cuda_bn_bwd_sums(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                            const nac_tensor_t *, const nac_tensor_t *, const nac_tensor_t *,
                            const nac_tensor_t *, nac_tensor_t *, const nac_bn_params *);
nac_status cuda_bn_bwd_given(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                             const nac_tensor_t *, const nac_tensor_t *, const nac_tensor_t *,
                             const nac_tensor_t *, const nac_tensor_t *, nac_tensor_t *,
                             const nac_bn_params *);
nac_status cuda_pool_fwd(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *,
                         const nac_pool_params *);
nac_status cuda_pool_bwd(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                         const nac_tensor_t *, nac_tensor_t *, const nac_pool_params *);
nac_status cuda_gap_fwd(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_gap_bwd(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_upsample_fwd(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_upsample_bwd(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_act_fwd(nac_backend_t *, nac_act, const nac_tensor_t *, nac_tensor_t *, float,
                        float);
nac_status cuda_act_bwd(nac_backend_t *, nac_act, const nac_tensor_t *, const nac_tensor_t *,
                        const nac_tensor_t *, nac_tensor_t *, float, float);
nac_status cuda_binary(nac_backend_t *, nac_binop, const nac_tensor_t *, const nac_tensor_t *,
                       nac_tensor_t *);
nac_status cuda_axpby(nac_backend_t *, float, const nac_tensor_t *, float, nac_tensor_t *);
nac_status cuda_row_logsumexp(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_row_softmax(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_row_sum(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_row_broadcast(nac_backend_t *, nac_binop, const nac_tensor_t *,
                              const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_col_broadcast(nac_backend_t *, nac_binop, const nac_tensor_t *,
                              const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_sum_all(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_sumsq_all(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cuda_opt_update(nac_backend_t *, nac_tensor_t *, const nac_tensor_t *,
                           nac_tensor_t *, nac_tensor_t *, const nac_opt_step *);
nac_status cuda_ema(nac_backend_t *, nac_tensor_t *, const nac_tensor_t *, float);

/* ---- kernels.cu: launchers. Each enqueues on `s` and returns the launch status.
 * n counts elements; every pointer is device memory. ---- */
cudaError_t cuk_fill(cudaStream_t s, float *y, int64_t n, float v);
cudaError_t cuk_rand(cudaStream_t s, float *y, int64_t n, int kind, float param, float below,
                     uint64_t key);
cudaError_t cuk_act_fwd(cudaStream_t s, int kind, const float *x, float *y, int64_t n,
                        float alpha, float beta);
/* data: x or y, whichever the kind's derivative reads (backend.h) */
cudaError_t cuk_act_bwd(cudaStream_t s, int kind, const float *data, const float *dy,
                        float *dx, int64_t n, float alpha);
cudaError_t cuk_binary(cudaStream_t s, int kind, const float *a, const float *b, float *y,
                       int64_t n);
cudaError_t cuk_axpby(cudaStream_t s, float alpha, const float *x, float beta, float *y,
                      int64_t n);
/* y (rows, cols) = x op v, v indexed by column (by_col) or by row */
cudaError_t cuk_broadcast(cudaStream_t s, int kind, const float *x, const float *v, float *y,
                          int64_t rows, int64_t cols, bool by_col);
/* y (rows, cols) = v (cols) in every row: a bias before a product accumulates onto it */
cudaError_t cuk_rows_set(cudaStream_t s, float *y, const float *v, int64_t rows, int64_t cols);
/* db (cols) = column sums of dy (rows, cols) */
cudaError_t cuk_col_sums(cudaStream_t s, const float *dy, float *db, int64_t rows,
                         int64_t cols);
/* what: 0 logsumexp (y (rows)), 1 softmax (y (rows, cols), may alias x), 2 sum (y (rows)) */
cudaError_t cuk_rows(cudaStream_t s, int what, const float *x, float *y, int64_t rows,
                     int64_t cols);
/* y[0] = sum of x (or of x^2), in a fixed order; part: workspace of CUK_RED_BLOCKS doubles */
enum { CUK_RED_BLOCKS = 256 };
cudaError_t cuk_sum_all(cudaStream_t s, const float *x, int64_t n, bool squares, double *part,
                        float *y);
/* 4-D (n, c, hw) channel planes: y[n,c,:] += b[c]; db[c] = sum over n, hw of dy */
cudaError_t cuk_bias_add(cudaStream_t s, float *y, const float *b, int64_t n, int64_t c,
                         int64_t hw);
cudaError_t cuk_bias_grad(cudaStream_t s, const float *dy, float *db, int64_t n, int64_t c,
                          int64_t hw);

/* Batch norm over x (n, c, hw) in `groups` equal batch slices, statistics (groups, c). */
typedef struct cuk_bn {
    int64_t n, c, hw;
    int groups;
    float eps;
} cuk_bn;
/* mean, var (groups, c): biased batch statistics of each group slice */
cudaError_t cuk_bn_stats(cudaStream_t s, const cuk_bn *b, const float *x, float *mean,
                         float *var);
/* running = (1-m) running + m batch, group after group (the variance made unbiased) */
cudaError_t cuk_bn_running(cudaStream_t s, const cuk_bn *b, const float *mean, const float *var,
                           float *rmean, float *rvar, float momentum);
/* y = (x - mean[g]) / sqrt(var[g] + eps) gamma + beta, mean/var (groups, c) or (c) when
   per_group is false; relu: y = max(y, 0) and, if mask is not NULL, mask = y > 0 */
cudaError_t cuk_bn_apply(cudaStream_t s, const cuk_bn *b, const float *x, const float *mean,
                         const float *var, bool per_group, const float *gamma,
                         const float *beta, float *y, bool relu, unsigned char *mask);
/* dx, dgamma, dbeta from dy (masked by the ReLU mask when mask is not NULL); part:
   workspace of 2 * groups * c floats */
cudaError_t cuk_bn_bwd(cudaStream_t s, const cuk_bn *b, const float *x, const float *dy,
                       const unsigned char *mask, const float *mean, const float *var,
                       const float *gamma, float *dx, float *dgamma, float *dbeta, float *part);

/* Synchronised batch norm's backward (the caller sums over ranks between the pieces), the
   fused ReLU's mask recomputed from x and the statistics */
/* sums (2 groups, c): sum dy', sum dy' xhat per group (dy' = dy masked by the ReLU) */
cudaError_t cuk_bn_sync_bwd_sums(cudaStream_t s, const cuk_bn *b, const float *x, const float *dy,
                                 const float *mean, const float *var, const float *gamma,
                                 const float *beta, bool relu, float *sums);
/* dx = gamma inv (dy' - dmeans[g] - xhat dmeans[groups + g]) */
cudaError_t cuk_bn_sync_dx(cudaStream_t s, const cuk_bn *b, const float *x, const float *dy,
                           const float *mean, const float *var, const float *gamma,
                           const float *beta, bool relu, const float *dmeans, float *dx);

/* Pooling of planes (n*c, h, w) -> (n*c, oh, ow): cuk_pool in kernel_index.h. */
cudaError_t cuk_maxpool_fwd(cudaStream_t s, const cuk_pool *p, const float *x, float *y,
                            int32_t *argmax);
cudaError_t cuk_maxpool_bwd(cudaStream_t s, const cuk_pool *p, const int32_t *argmax,
                            const float *dy, float *dx);
cudaError_t cuk_avgpool_fwd(cudaStream_t s, const cuk_pool *p, const float *x, float *y);
cudaError_t cuk_avgpool_bwd(cudaStream_t s, const cuk_pool *p, const float *dy, float *dx);
/* nearest-neighbour upsampling of planes (planes, h, w) by factor f, and its adjoint */
cudaError_t cuk_upsample_fwd(cudaStream_t s, const float *x, float *y, int64_t planes,
                             int64_t h, int64_t w, int f);
cudaError_t cuk_upsample_bwd(cudaStream_t s, const float *dy, float *dx, int64_t planes,
                             int64_t h, int64_t w, int f);
/* global average pooling planes (planes, hw) -> (planes) and back */
cudaError_t cuk_gap_fwd(cudaStream_t s, const float *x, float *y, int64_t planes, int64_t hw);
cudaError_t cuk_gap_bwd(cudaStream_t s, const float *dy, float *dx, int64_t planes, int64_t hw);

/* Optimiser updates, exactly math.c's rules. */
typedef struct cuk_opt {
    int kind; /* nac_opt_kind */
    float lr, momentum, weight_decay, eta, beta1, beta2, eps;
    bool nesterov, lars_adapt;
    float step, rbc2; /* Adam: lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t) */
} cuk_opt;
/* part: workspace of 2 * CUK_RED_BLOCKS doubles + 1 float (LARS norms and scale) */
cudaError_t cuk_opt_update(cudaStream_t s, const cuk_opt *h, float *w, const float *g,
                           float *s1, float *s2, int64_t n, void *part);
cudaError_t cuk_ema(cudaStream_t s, float *wm, const float *w, float decay, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
