/* The CUDA backend: context (device, stream, handles), tensor storage in cudaMalloc'd
 * memory (plain NCHW / row-major float32, zeroed at allocation), host copies, the one
 * grow-only workspace, memory accounting and the function table. The ops live in dnn.c
 * (cuDNN convolutions, cuBLAS products) and ops.c (the kernels of kernels.cu). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_impl.h"

/* cudaMalloc hands out 256-byte aligned blocks; count what it reserves */
static size_t alloc_size(size_t bytes) { return bytes ? (bytes + 255) / 256 * 256 : 256; }

void cuda_mem_count(cuda_context *ctx, size_t bytes, bool grow) {
    if (!ctx) return;
    if (grow) {
        ctx->mem_live += bytes;
        if (ctx->mem_live > ctx->mem_peak) ctx->mem_peak = ctx->mem_live;
    } else {
        ctx->mem_live -= bytes < ctx->mem_live ? bytes : ctx->mem_live;
    }
}

/* Device memory of `bytes`, zeroed on the stream, counted. */
static nac_status dev_alloc(cuda_context *ctx, size_t bytes, const char *what, void **out) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, alloc_size(bytes));
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky-free error state of a failed allocation */
        return nac_error(NAC_ERR_NOMEM, "cuda backend: cudaMalloc of %zu bytes for %s failed: %s",
                         bytes, what, cudaGetErrorString(e));
    }
    e = cudaMemsetAsync(p, 0, alloc_size(bytes), ctx->stream);
    if (e != cudaSuccess) {
        cudaFree(p);
        return nac_error(NAC_ERR_BACKEND, "cuda backend: cudaMemsetAsync for %s failed: %s", what,
                         cudaGetErrorString(e));
    }
    cuda_mem_count(ctx, alloc_size(bytes), true);
    *out = p;
    return NAC_OK;
}

/* Free device memory; the stream is drained first, as work queued on it may still read it. */
static void dev_free(cuda_context *ctx, void *p, size_t bytes) {
    if (!p) return;
    cudaStreamSynchronize(ctx->stream);
    cudaFree(p);
    cuda_mem_count(ctx, alloc_size(bytes), false);
}

static void tensor_storage_free(cuda_tensor *ct) {
    if (!ct) return;
    if (!ct->borrowed) dev_free(ct->ctx, ct->ptr, ct->bytes);
    dev_free(ct->ctx, ct->ws, ct->ws_bytes);
    free(ct);
}

nac_status cuda_ensure(nac_backend_t *be, nac_tensor_t *t) {
    if (t->impl) return NAC_OK;
    cuda_context *ctx = CUDA_CTX(be);
    cuda_tensor *ct = calloc(1, sizeof *ct);
    if (!ct) return nac_error(NAC_ERR_NOMEM, "cuda backend: out of memory for a tensor record");
    ct->ctx = ctx;
    ct->bytes = (size_t)nac_tensor_numel(t) * sizeof(float);
    nac_status s = dev_alloc(ctx, ct->bytes, "a tensor", (void **)&ct->ptr);
    if (s != NAC_OK) {
        free(ct);
        return s;
    }
    t->impl = ct;
    return NAC_OK;
}

nac_status cuda_workspace(nac_backend_t *be, size_t bytes, void **out) {
    cuda_context *ctx = CUDA_CTX(be);
    if (bytes > ctx->ws_bytes || !ctx->ws) {
        dev_free(ctx, ctx->ws, ctx->ws_bytes);
        ctx->ws = NULL;
        ctx->ws_bytes = 0;
        size_t want = bytes < 4096 ? 4096 : bytes;
        NAC_TRY(dev_alloc(ctx, want, "the workspace", &ctx->ws));
        ctx->ws_bytes = want;
    }
    *out = ctx->ws;
    return NAC_OK;
}

nac_status cuda_tensor_ws(nac_tensor_t *t, size_t bytes, int kind, const char *op) {
    cuda_tensor *ct = CUDA_T(t);
    if (ct->ws && ct->ws_bytes == bytes) {
        ct->ws_kind = kind;
        return NAC_OK;
    }
    dev_free(ct->ctx, ct->ws, ct->ws_bytes);
    ct->ws = NULL;
    ct->ws_bytes = 0;
    ct->ws_kind = CUDA_WS_NONE;
    nac_status s = dev_alloc(ct->ctx, bytes, "an op workspace", &ct->ws);
    if (s != NAC_OK) return nac_error_prefix(s, "%s: ", op);
    ct->ws_bytes = bytes;
    ct->ws_kind = kind;
    return NAC_OK;
}

/* ---- tensors and host copies ---- */
static nac_status cuda_tensor_alloc(nac_backend_t *be, nac_tensor_t *t) {
    return cuda_ensure(be, t);
}

static void cuda_tensor_release(nac_backend_t *be, nac_tensor_t *t) {
    (void)be;
    tensor_storage_free(CUDA_T(t));
    t->impl = NULL;
}

/* one layout only: alloc_like is a plain allocation */
static nac_status cuda_tensor_alloc_like(nac_backend_t *be, nac_tensor_t *t,
                                         const nac_tensor_t *like) {
    (void)like;
    return cuda_ensure(be, t);
}

/* t's storage becomes owner's; t's workspace (a ReLU mask, pooling indices) stays t's. */
static nac_status cuda_tensor_share(nac_backend_t *be, nac_tensor_t *t, const nac_tensor_t *owner) {
    cuda_tensor *co = CUDA_T(owner), *ct = CUDA_T(t);
    if (ct && ct->ptr == co->ptr) return NAC_OK;
    if (ct && !ct->borrowed)
        return nac_error(NAC_ERR_INVALID,
                         "nac_tensor_share: t (%lld,...) has storage of its own, which other "
                         "tensors may view; only an unwritten tensor or a view can become a view",
                         (long long)t->dim[0]);
    if (!ct) {
        if (!(ct = calloc(1, sizeof *ct)))
            return nac_error(NAC_ERR_NOMEM, "nac_tensor_share: out of memory for a view");
        ct->ctx = CUDA_CTX(be);
        t->impl = ct;
    }
    ct->ptr = co->ptr;
    ct->bytes = co->bytes;
    ct->borrowed = true;
    return NAC_OK;
}

static nac_status cuda_to_host(nac_backend_t *be, const nac_tensor_t *t, float *dst) {
    cuda_context *ctx = CUDA_CTX(be);
    CUDA_TRY(cudaMemcpyAsync(dst, CUDA_P(t), CUDA_T(t)->bytes, cudaMemcpyDeviceToHost,
                             ctx->stream));
    CUDA_TRY(cudaStreamSynchronize(ctx->stream));
    return NAC_OK;
}

static nac_status cuda_from_host(nac_backend_t *be, nac_tensor_t *t, const float *src) {
    cuda_context *ctx = CUDA_CTX(be);
    NAC_TRY(cuda_ensure(be, t));
    CUDA_TRY(cudaMemcpyAsync(CUDA_P(t), src, CUDA_T(t)->bytes, cudaMemcpyHostToDevice,
                             ctx->stream));
    CUDA_TRY(cudaStreamSynchronize(ctx->stream)); /* src may be freed when we return */
    return NAC_OK;
}

static nac_status d2d(nac_backend_t *be, void *dst, const void *src, size_t bytes) {
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, CUDA_CTX(be)->stream));
    return NAC_OK;
}

static nac_status cuda_copy(nac_backend_t *be, const nac_tensor_t *src, nac_tensor_t *dst) {
    NAC_TRY(cuda_ensure(be, dst));
    if (CUDA_P(dst) == CUDA_P(src)) return NAC_OK;
    return d2d(be, CUDA_P(dst), CUDA_P(src), CUDA_T(src)->bytes);
}

static nac_status cuda_fill(nac_backend_t *be, nac_tensor_t *t, float v) {
    NAC_TRY(cuda_ensure(be, t));
    CUDA_TRY(cuk_fill(CUDA_CTX(be)->stream, CUDA_P(t), nac_tensor_numel(t), v));
    return NAC_OK;
}

static nac_status cuda_copy_rows(nac_backend_t *be, const nac_tensor_t *src, int64_t sr,
                                 nac_tensor_t *dst, int64_t dr, int64_t nrows) {
    NAC_TRY(cuda_ensure(be, dst));
    size_t row = (size_t)(nac_tensor_numel(src) / src->dim[0]) * sizeof(float);
    return d2d(be, (char *)CUDA_P(dst) + (size_t)dr * row, (const char *)CUDA_P(src) + (size_t)sr * row,
               (size_t)nrows * row);
}

static nac_status cuda_reshape(nac_backend_t *be, const nac_tensor_t *src, nac_tensor_t *dst) {
    return cuda_copy(be, src, dst); /* same element count, one layout */
}

static void cuda_memory(nac_backend_t *be, nac_backend_memory *m, bool reset_peak) {
    cuda_context *ctx = CUDA_CTX(be);
    if (reset_peak) ctx->mem_peak = ctx->mem_live;
    if (m)
        *m = (nac_backend_memory){.live = ctx->mem_live, .peak = ctx->mem_peak,
                                  .cached_ops = ctx->nplans};
}

static nac_status cuda_tensor_info(nac_backend_t *be, const nac_tensor_t *t, nac_tensor_info *out) {
    *out = (nac_tensor_info){0};
    const cuda_tensor *c = CUDA_T(t);
    if (!c) return NAC_OK;
    out->allocated = true;
    out->plain = true;
    out->bytes = c->bytes;
    int64_t n = nac_tensor_numel(t);
    float *h = malloc((size_t)n * sizeof *h);
    if (!h) return nac_error(NAC_ERR_NOMEM, "nac_tensor_get_info: out of memory");
    nac_status s = cuda_to_host(be, t, h);
    for (int64_t i = 0; s == NAC_OK && i < n; i++) out->abs_sum += fabs(h[i]);
    free(h);
    return s;
}

static double cuda_flops(nac_backend_t *be) { return CUDA_CTX(be)->flops; }

static nac_status cuda_synchronize(nac_backend_t *be) {
    CUDA_TRY(cudaStreamSynchronize(CUDA_CTX(be)->stream));
    return NAC_OK;
}

static void cuda_free(nac_backend_t *be) {
    cuda_context *ctx = CUDA_CTX(be);
    if (ctx) {
        if (ctx->stream) cudaStreamSynchronize(ctx->stream);
        cuda_dnn_free(ctx);
        dev_free(ctx, ctx->ws, ctx->ws_bytes);
        if (ctx->stream) cudaStreamDestroy(ctx->stream);
        free(ctx);
    }
    free(be);
}

/* Every CUDA tensor is plain and contiguous (cuda_impl.h): its storage is the address. */
void *nac_cuda_tensor_device_ptr(const nac_tensor_t *t) {
    return t && t->impl ? CUDA_T(t)->ptr : NULL;
}

static const nac_backend_i cuda_iface = {
    .name = "cuda",
    .free = cuda_free,
    .synchronize = cuda_synchronize,
    .memory = cuda_memory,
    .flops = cuda_flops,
    .device_ptr = nac_cuda_tensor_device_ptr,
    .tensor_alloc = cuda_tensor_alloc,
    .tensor_release = cuda_tensor_release,
    .tensor_alloc_like = cuda_tensor_alloc_like,
    .tensor_share = cuda_tensor_share,
    .to_host = cuda_to_host,
    .from_host = cuda_from_host,
    .copy = cuda_copy,
    .fill = cuda_fill,
    .rand = cuda_rand,
    .copy_rows = cuda_copy_rows,
    .conv_fwd = cuda_conv_fwd,
    .conv_bwd_data = cuda_conv_bwd_data,
    .conv_bwd_weights = cuda_conv_bwd_weights,
    .bn_fwd_train = cuda_bn_fwd_train,
    .bn_fwd_infer = cuda_bn_fwd_infer,
    .bn_fwd_saved = cuda_bn_fwd_saved,
    .bn_bwd = cuda_bn_bwd,
    .bn_stats = cuda_bn_stats,
    .bn_bwd_sums = cuda_bn_bwd_sums,
    .bn_bwd_given = cuda_bn_bwd_given,
    .pool_fwd = cuda_pool_fwd,
    .pool_bwd = cuda_pool_bwd,
    .gap_fwd = cuda_gap_fwd,
    .gap_bwd = cuda_gap_bwd,
    .upsample_fwd = cuda_upsample_fwd,
    .upsample_bwd = cuda_upsample_bwd,
    .reshape = cuda_reshape,
    .act_fwd = cuda_act_fwd,
    .act_bwd = cuda_act_bwd,
    .binary = cuda_binary,
    .axpby = cuda_axpby,
    .gemm = cuda_gemm,
    .linear_fwd = cuda_linear_fwd,
    .linear_bwd = cuda_linear_bwd,
    .row_logsumexp = cuda_row_logsumexp,
    .row_softmax = cuda_row_softmax,
    .row_sum = cuda_row_sum,
    .row_broadcast = cuda_row_broadcast,
    .col_broadcast = cuda_col_broadcast,
    .sum_all = cuda_sum_all,
    .sumsq_all = cuda_sumsq_all,
    .opt_update = cuda_opt_update,
    .ema = cuda_ema,
    .tensor_relayout = NULL, /* one layout: plain NCHW / row-major */
    .tensor_info = cuda_tensor_info,
};

/* Device: opt->device if opt->pick_device (a rank's local rank under mpirun), else
 * $NAC_CUDA_DEVICE (default 0). Fast mode: $NAC_CUDA_FAST=1 (TF32 products and
 * convolutions, non-deterministic cuDNN algorithms); off by default so CPU parity holds. */
/* The number of devices, or NAC_ERR_UNAVAILABLE naming why there is none. */
static nac_status cuda_devices(int *count) {
    *count = 0;
    cudaError_t e = cudaGetDeviceCount(count);
    if (e != cudaSuccess || *count == 0) {
        if (e != cudaSuccess) cudaGetLastError();
        return nac_error(NAC_ERR_UNAVAILABLE,
                         "backend \"cuda\": no usable CUDA device (%s); this binary has the "
                         "CUDA backend, the machine has no GPU or driver for it (use the cpu "
                         "backend)",
                         e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0");
    }
    return NAC_OK;
}

nac_status nac_backend_cuda_check(void) {
    int count;
    return cuda_devices(&count);
}

nac_status nac_backend_cuda_create(const nac_backend_options *opt, nac_backend_t **out) {
    int count = 0;
    NAC_TRY(cuda_devices(&count));
    const char *dev = getenv("NAC_CUDA_DEVICE");
    int device = dev && *dev ? atoi(dev) : 0;
    if (opt && opt->pick_device) {
        device = opt->device;
        if (device < 0 || device >= count)
            return nac_error(NAC_ERR_UNAVAILABLE,
                             "backend \"cuda\": device %d asked for (a rank's GPU is its rank "
                             "on the machine), but this machine has %d: start at most %d ranks "
                             "a machine",
                             device, count, count);
    } else if (device < 0 || device >= count) {
        return nac_error(NAC_ERR_UNAVAILABLE,
                         "backend \"cuda\": NAC_CUDA_DEVICE=%s names no device (this machine has %d)",
                         dev, count);
    }
    nac_backend_t *be = calloc(1, sizeof *be);
    cuda_context *ctx = calloc(1, sizeof *ctx);
    if (!be || !ctx) {
        free(be);
        free(ctx);
        return nac_error(NAC_ERR_NOMEM, "cuda backend: out of memory");
    }
    be->iface = &cuda_iface;
    be->context = ctx;
    be->threads = opt && opt->threads > 0 ? opt->threads : 1;
    ctx->device = device;
    const char *fast = getenv("NAC_CUDA_FAST");
    ctx->fast = fast && !strcmp(fast, "1");
    nac_status s = NAC_OK;
    cudaError_t e;
    if ((e = cudaSetDevice(device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking)) != cudaSuccess)
        s = nac_error(NAC_ERR_UNAVAILABLE, "backend \"cuda\": device %d cannot be used: %s",
                      device, cudaGetErrorString(e));
    if (s == NAC_OK) s = cuda_dnn_init(ctx);
    if (s != NAC_OK) {
        cuda_free(be);
        return s;
    }
    *out = be;
    return NAC_OK;
}
