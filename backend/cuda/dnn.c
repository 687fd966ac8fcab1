/* The CUDA backend's library calls: convolutions through cuDNN's legacy convolution API
 * (descriptors and one algorithm per pass chosen once per shape and cached as a plan) and
 * matrix products through cuBLAS. Default: FMA math (no TF32) and deterministic
 * algorithms, so results match the CPU backend to float rounding; NAC_CUDA_FAST=1 lifts
 * both. Why the legacy API and not the graph API: docs/cuda.md. The calls are thin (one
 * plan struct, three run functions) so a graph-API version can replace them. */
#include <cudnn.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/blas.h"
#include "backend/cuda/cuda_impl.h"
#include "backend/cuda/kernel_index.h"

#define DNN(ctx) ((cudnnHandle_t)(ctx)->dnn)
#define BLAS(ctx) ((cublasHandle_t)(ctx)->blas)

#define CUDNN_TRY(expr)                                                                    \
    do {                                                                                   \
        cudnnStatus_t cudnn_s_ = (expr);                                                   \
        if (cudnn_s_ != CUDNN_STATUS_SUCCESS)                                              \
            return nac_error(NAC_ERR_BACKEND, "cuDNN: %s failed: %s at %s:%d", #expr,      \
                             cudnnGetErrorString(cudnn_s_), __FILE__, __LINE__);           \
    } while (0)

#define CUBLAS_TRY(expr)                                                                   \
    do {                                                                                   \
        cublasStatus_t cublas_s_ = (expr);                                                 \
        if (cublas_s_ != CUBLAS_STATUS_SUCCESS)                                            \
            return nac_error(NAC_ERR_BACKEND, "cuBLAS: %s failed: %s (%s) at %s:%d", #expr, \
                             ctx->blas_fns->status_name(cublas_s_),                \
                             ctx->blas_fns->status_string(cublas_s_),              \
                             __FILE__, __LINE__);                                          \
    } while (0)

/* ---- handles ---- */
nac_status cuda_dnn_init(cuda_context *ctx) {
    cublasHandle_t blas = NULL;
    cudnnHandle_t dnn = NULL;
    const char *why = NULL;
    const cuda_blas_fns *bl = cuda_blas(&why);
    if (!bl) return nac_error(NAC_ERR_UNAVAILABLE, "backend \"cuda\": %s", why);
    ctx->blas_fns = bl;
    cublasStatus_t bs = bl->create(&blas);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return nac_error(NAC_ERR_UNAVAILABLE, "backend \"cuda\": cublasCreate failed: %s",
                         bl->status_string(bs));
    ctx->blas = blas;
    cudnnStatus_t ds = cudnnCreate(&dnn);
    if (ds != CUDNN_STATUS_SUCCESS)
        return nac_error(NAC_ERR_UNAVAILABLE, "backend \"cuda\": cudnnCreate failed: %s",
                         cudnnGetErrorString(ds));
    ctx->dnn = dnn;
    CUBLAS_TRY(bl->set_stream(blas, ctx->stream));
    /* CUBLAS_DEFAULT_MATH keeps float32 products in float32 (no TF32) */
    CUBLAS_TRY(bl->set_math_mode(blas, ctx->fast ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    CUDNN_TRY(cudnnSetStream(dnn, ctx->stream));
    return NAC_OK;
}

/* ---- convolution plans ---- */
typedef struct cuda_conv_plan {
    int64_t xd[4], wd[4];
    int stride, pad;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    bool have_fwd, have_bwd_data, have_bwd_filter;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    size_t ws_fwd, ws_bwd_data, ws_bwd_filter;
    cudnnMathType_t math_fwd, math_bwd_data, math_bwd_filter; /* each pass's chosen math */
    struct cuda_conv_plan *next;
} cuda_conv_plan;

static void plan_free(cuda_conv_plan *p) {
    if (p->x) cudnnDestroyTensorDescriptor(p->x);
    if (p->y) cudnnDestroyTensorDescriptor(p->y);
    if (p->w) cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
    free(p);
}

void cuda_dnn_free(cuda_context *ctx) {
    for (cuda_conv_plan *p = ctx->plans, *n; p; p = n) {
        n = p->next;
        plan_free(p);
    }
    ctx->plans = NULL;
    ctx->nplans = 0;
    if (ctx->dnn) cudnnDestroy(DNN(ctx));
    if (ctx->blas) ctx->blas_fns->destroy(BLAS(ctx));
    ctx->dnn = ctx->blas = NULL;
}

static nac_status plan_make(cuda_context *ctx, const int64_t *xd, const int64_t *wd,
                            const nac_conv_params *cp, cuda_conv_plan *p) {
    for (int i = 0; i < 4; i++)
        if (xd[i] > 0x7fffffff || wd[i] > 0x7fffffff)
            return nac_error(NAC_ERR_INVALID, "cuda backend: convolution dimension too large");
    int oh = (int)((xd[2] + 2 * cp->pad - wd[2]) / cp->stride + 1);
    int ow = (int)((xd[3] + 2 * cp->pad - wd[3]) / cp->stride + 1);
    CUDNN_TRY(cudnnCreateTensorDescriptor(&p->x));
    CUDNN_TRY(cudnnCreateTensorDescriptor(&p->y));
    CUDNN_TRY(cudnnCreateFilterDescriptor(&p->w));
    CUDNN_TRY(cudnnCreateConvolutionDescriptor(&p->conv));
    CUDNN_TRY(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)xd[0],
                                         (int)xd[1], (int)xd[2], (int)xd[3]));
    CUDNN_TRY(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)xd[0],
                                         (int)wd[0], oh, ow));
    CUDNN_TRY(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)wd[0],
                                         (int)wd[1], (int)wd[2], (int)wd[3]));
    /* cross-correlation, as PyTorch and oneDNN */
    CUDNN_TRY(cudnnSetConvolution2dDescriptor(p->conv, cp->pad, cp->pad, cp->stride, cp->stride,
                                              1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, ctx->fast ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    return NAC_OK;
}

static nac_status plan_get(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *w,
                           const nac_conv_params *cp, cuda_conv_plan **out) {
    cuda_context *ctx = CUDA_CTX(be);
    for (cuda_conv_plan *p = ctx->plans; p; p = p->next)
        if (!memcmp(p->xd, x->dim, sizeof p->xd) && !memcmp(p->wd, w->dim, sizeof p->wd) &&
            p->stride == cp->stride && p->pad == cp->pad) {
            *out = p;
            return NAC_OK;
        }
    cuda_conv_plan *p = calloc(1, sizeof *p);
    if (!p) return nac_error(NAC_ERR_NOMEM, "cuda backend: out of memory for a convolution plan");
    memcpy(p->xd, x->dim, sizeof p->xd);
    memcpy(p->wd, w->dim, sizeof p->wd);
    p->stride = cp->stride;
    p->pad = cp->pad;
    nac_status s = plan_make(ctx, x->dim, w->dim, cp, p);
    if (s != NAC_OK) {
        plan_free(p);
        return s;
    }
    p->next = ctx->plans;
    ctx->plans = p;
    ctx->nplans++;
    *out = p;
    return NAC_OK;
}

/* An algorithm result is usable when it ran, and (unless fast) is deterministic and needs
 * no tensor-core math (the descriptor searched with CUDNN_FMA_MATH; results may report the
 * default math type for plain float kernels). */
static bool usable(const cuda_context *ctx, cudnnStatus_t st, cudnnDeterminism_t det,
                   cudnnMathType_t math) {
    if (st != CUDNN_STATUS_SUCCESS) return false;
    return ctx->fast || (det == CUDNN_DETERMINISTIC &&
                         (math == CUDNN_FMA_MATH || math == CUDNN_DEFAULT_MATH));
}

/* The math type a pass runs with: FMA only (no TF32) unless fast. */
static cudnnMathType_t run_math(const cuda_context *ctx, cudnnMathType_t found) {
    return ctx->fast ? found : CUDNN_FMA_MATH;
}

static nac_status no_algo(const char *op, const cuda_conv_plan *p, const cuda_context *ctx) {
    return nac_error(NAC_ERR_BACKEND,
                     "%s: cuDNN offers no %s algorithm for input (%lld,%lld,%lld,%lld), weight "
                     "(%lld,%lld,%lld,%lld), stride %d, padding %d",
                     op, ctx->fast ? "usable" : "deterministic FMA-math", (long long)p->xd[0],
                     (long long)p->xd[1], (long long)p->xd[2], (long long)p->xd[3],
                     (long long)p->wd[0], (long long)p->wd[1], (long long)p->wd[2],
                     (long long)p->wd[3], p->stride, p->pad);
}

/* Algorithms are chosen by cudnnFind* (timed runs on cuDNN's own buffers) the first time a
 * shape meets a pass; the fastest usable one is kept with its workspace size. */
static nac_status choose_fwd(cuda_context *ctx, cuda_conv_plan *p) {
    cudnnConvolutionFwdAlgoPerf_t r[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    CUDNN_TRY(cudnnFindConvolutionForwardAlgorithm(DNN(ctx), p->x, p->w, p->conv, p->y,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, r));
    for (int i = 0; i < n; i++)
        if (usable(ctx, r[i].status, r[i].determinism, r[i].mathType)) {
            p->fwd = r[i].algo;
            p->ws_fwd = r[i].memory;
            p->math_fwd = run_math(ctx, r[i].mathType);
            p->have_fwd = true;
            return NAC_OK;
        }
    return no_algo("nac_conv2d_forward", p, ctx);
}

static nac_status choose_bwd_data(cuda_context *ctx, cuda_conv_plan *p) {
    cudnnConvolutionBwdDataAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int n = 0;
    CUDNN_TRY(cudnnFindConvolutionBackwardDataAlgorithm(DNN(ctx), p->w, p->y, p->conv, p->x,
                                                        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                        &n, r));
    for (int i = 0; i < n; i++)
        if (usable(ctx, r[i].status, r[i].determinism, r[i].mathType)) {
            p->bwd_data = r[i].algo;
            p->ws_bwd_data = r[i].memory;
            p->math_bwd_data = run_math(ctx, r[i].mathType);
            p->have_bwd_data = true;
            return NAC_OK;
        }
    return no_algo("nac_conv2d_backward_data", p, ctx);
}

static nac_status choose_bwd_filter(cuda_context *ctx, cuda_conv_plan *p) {
    cudnnConvolutionBwdFilterAlgoPerf_t r[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int n = 0;
    CUDNN_TRY(cudnnFindConvolutionBackwardFilterAlgorithm(
        DNN(ctx), p->x, p->y, p->conv, p->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, r));
    for (int i = 0; i < n; i++)
        if (usable(ctx, r[i].status, r[i].determinism, r[i].mathType)) {
            p->bwd_filter = r[i].algo;
            p->ws_bwd_filter = r[i].memory;
            p->math_bwd_filter = run_math(ctx, r[i].mathType);
            p->have_bwd_filter = true;
            return NAC_OK;
        }
    return no_algo("nac_conv2d_backward_weights", p, ctx);
}

/* Multiply-adds of a direct convolution: output elements x (input channels x kernel). */
static void count_conv(nac_backend_t *be, const nac_tensor_t *out, const nac_tensor_t *w) {
    CUDA_CTX(be)->flops += 2.0 * (double)nac_tensor_numel(out) *
                           (double)(w->dim[1] * w->dim[2] * w->dim[3]);
}

static const float k_one = 1.0f, k_zero = 0.0f;

nac_status cuda_conv_fwd(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *w,
                         const nac_tensor_t *b, nac_tensor_t *y, const nac_conv_params *cp) {
    cuda_context *ctx = CUDA_CTX(be);
    cuda_conv_plan *p;
    NAC_TRY(plan_get(be, x, w, cp, &p));
    if (!p->have_fwd) NAC_TRY(choose_fwd(ctx, p));
    NAC_TRY(cuda_ensure(be, y));
    void *ws = NULL;
    NAC_TRY(cuda_workspace(be, p->ws_fwd, &ws));
    count_conv(be, y, w);
    CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, p->math_fwd));
    CUDNN_TRY(cudnnConvolutionForward(DNN(ctx), &k_one, p->x, CUDA_P(x), p->w, CUDA_P(w), p->conv,
                                      p->fwd, ws, p->ws_fwd, &k_zero, p->y, CUDA_P(y)));
    if (b)
        CUDA_TRY(cuk_bias_add(ctx->stream, CUDA_P(y), CUDA_P(b), y->dim[0], y->dim[1],
                              y->dim[2] * y->dim[3]));
    return NAC_OK;
}

nac_status cuda_conv_bwd_data(nac_backend_t *be, const nac_tensor_t *dy, const nac_tensor_t *w,
                              nac_tensor_t *dx, const nac_conv_params *cp) {
    cuda_context *ctx = CUDA_CTX(be);
    cuda_conv_plan *p;
    NAC_TRY(plan_get(be, dx, w, cp, &p));
    if (!p->have_bwd_data) NAC_TRY(choose_bwd_data(ctx, p));
    NAC_TRY(cuda_ensure(be, dx));
    void *ws = NULL;
    NAC_TRY(cuda_workspace(be, p->ws_bwd_data, &ws));
    count_conv(be, dy, w);
    CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, p->math_bwd_data));
    CUDNN_TRY(cudnnConvolutionBackwardData(DNN(ctx), &k_one, p->w, CUDA_P(w), p->y, CUDA_P(dy),
                                           p->conv, p->bwd_data, ws, p->ws_bwd_data, &k_zero,
                                           p->x, CUDA_P(dx)));
    return NAC_OK;
}

nac_status cuda_conv_bwd_weights(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *dy,
                                 nac_tensor_t *dw, nac_tensor_t *db, const nac_conv_params *cp) {
    cuda_context *ctx = CUDA_CTX(be);
    cuda_conv_plan *p;
    NAC_TRY(plan_get(be, x, dw, cp, &p));
    if (!p->have_bwd_filter) NAC_TRY(choose_bwd_filter(ctx, p));
    NAC_TRY(cuda_ensure(be, dw));
    void *ws = NULL;
    NAC_TRY(cuda_workspace(be, p->ws_bwd_filter, &ws));
    count_conv(be, dy, dw);
    CUDNN_TRY(cudnnSetConvolutionMathType(p->conv, p->math_bwd_filter));
    CUDNN_TRY(cudnnConvolutionBackwardFilter(DNN(ctx), &k_one, p->x, CUDA_P(x), p->y, CUDA_P(dy),
                                             p->conv, p->bwd_filter, ws, p->ws_bwd_filter,
                                             &k_zero, p->w, CUDA_P(dw)));
    if (db) {
        NAC_TRY(cuda_ensure(be, db));
        CUDA_TRY(cuk_bias_grad(ctx->stream, CUDA_P(dy), CUDA_P(db), dy->dim[0], dy->dim[1],
                               dy->dim[2] * dy->dim[3]));
    }
    return NAC_OK;
}

/* ---- products: row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T ---- */
static nac_status sgemm_rm(nac_backend_t *be, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                           float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                           float beta, float *c, int64_t ldc) {
    cuda_context *ctx = CUDA_CTX(be);
    if (m > 0x7fffffff || n > 0x7fffffff || k > 0x7fffffff || lda > 0x7fffffff ||
        ldb > 0x7fffffff)
        return nac_error(NAC_ERR_INVALID, "cuda backend: matrix dimension beyond cuBLAS's int range");
    ctx->flops += 2.0 * (double)m * (double)n * (double)k;
    cuk_gemm_call g = cuk_gemm_colmajor(ta, tb, m, n, k, lda, ldb);
    NAC_ASSERT(g.ldc == ldc);
    CUBLAS_TRY(ctx->blas_fns->sgemm(BLAS(ctx), g.t1 ? CUBLAS_OP_T : CUBLAS_OP_N,
                           g.t2 ? CUBLAS_OP_T : CUBLAS_OP_N, (int)g.m, (int)g.n, (int)g.k, &alpha,
                           b, (int)g.ld1, a, (int)g.ld2, &beta, c, (int)g.ldc));
    return NAC_OK;
}

nac_status cuda_gemm(nac_backend_t *be, bool ta, bool tb, float alpha, const nac_tensor_t *a,
                     const nac_tensor_t *b, float beta, nac_tensor_t *c) {
    NAC_TRY(cuda_ensure(be, c));
    int64_t m = c->dim[0], n = c->dim[1], k = ta ? a->dim[0] : a->dim[1];
    return sgemm_rm(be, ta, tb, m, n, k, alpha, CUDA_P(a), a->dim[1], CUDA_P(b), b->dim[1], beta,
                    CUDA_P(c), n);
}

nac_status cuda_linear_fwd(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *w,
                           const nac_tensor_t *b, nac_tensor_t *y) {
    NAC_TRY(cuda_ensure(be, y));
    int64_t n = x->dim[0], in = x->dim[1], o = w->dim[0];
    if (b) /* y starts as the bias rows; the product accumulates onto them */
        CUDA_TRY(cuk_rows_set(CUDA_CTX(be)->stream, CUDA_P(y), CUDA_P(b), n, o));
    /* y (N,O) = x (N,I) w^T (I,O) [+ y] */
    return sgemm_rm(be, false, true, n, o, in, 1.0f, CUDA_P(x), in, CUDA_P(w), in,
                    b ? 1.0f : 0.0f, CUDA_P(y), o);
}

nac_status cuda_linear_bwd(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *w,
                           const nac_tensor_t *dy, nac_tensor_t *dx, nac_tensor_t *dw,
                           nac_tensor_t *db) {
    int64_t n = x->dim[0], in = x->dim[1], o = w->dim[0];
    if (dx) { /* dx (N,I) = dy (N,O) w (O,I) */
        NAC_TRY(cuda_ensure(be, dx));
        NAC_TRY(sgemm_rm(be, false, false, n, in, o, 1.0f, CUDA_P(dy), o, CUDA_P(w), in, 0.0f,
                         CUDA_P(dx), in));
    }
    /* dw (O,I) = dy^T (O,N) x (N,I) */
    NAC_TRY(cuda_ensure(be, dw));
    NAC_TRY(sgemm_rm(be, true, false, o, in, n, 1.0f, CUDA_P(dy), o, CUDA_P(x), in, 0.0f,
                     CUDA_P(dw), in));
    if (db) {
        NAC_TRY(cuda_ensure(be, db));
        CUDA_TRY(cuk_col_sums(CUDA_CTX(be)->stream, CUDA_P(dy), CUDA_P(db), n, o));
    }
    return NAC_OK;
}
