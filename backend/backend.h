/* The backend interface: tensors owned by a backend and the ops every layer, loss and
 * loop is written in. A backend is a table of function pointers (nac_backend_i) plus a
 * context; the public nac_* wrappers below validate shapes and NULLs, then dispatch.
 * Nothing here assumes a tensor's memory is addressable by the CPU: host code sees data
 * only through nac_tensor_to_host / nac_tensor_from_host.
 *
 * Conventions (llm.c style):
 *  - Logical shapes: 4-D activations are (N, C, H, W); convolution weights (O, I, kH, kW);
 *    2-D tensors are (rows, cols) row-major; 1-D (C). The physical layout is the backend's
 *    business (oneDNN blocked formats on CPU) and may be chosen at the first write.
 *  - Every op WRITES its outputs (=), gradients included: each parameter is used once per
 *    step because the two views of a batch travel through the network as one 2K batch,
 *    with batch norm computing statistics per view (nac_bn_params.groups = 2).
 *  - Outputs may be unallocated tensors of the right logical shape: the backend then
 *    allocates them in the layout it prefers on the first call (the step's buffers are
 *    planned by the first step; no allocation after that).
 *  - `d` prefix for gradients: dx, dw, dy. */
#ifndef NAC_BACKEND_H
#define NAC_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/status.h"

#define NAC_MAX_DIMS 4

typedef struct nac_backend nac_backend_t;

typedef struct nac_tensor {
    nac_backend_t *be;
    int ndim;
    int64_t dim[NAC_MAX_DIMS];
    void *impl; /* backend-private: storage, layout, workspaces */
} nac_tensor_t;

typedef enum nac_act {
    NAC_ACT_RELU,
    NAC_ACT_TANH,
    NAC_ACT_SIGMOID,
    NAC_ACT_EXP,
    NAC_ACT_LOG,
    NAC_ACT_SQUARE,
    NAC_ACT_SQRT,
    NAC_ACT_ABS,
    NAC_ACT_SOFTPLUS, /* log(1 + e^x), stable for large |x| */
    NAC_ACT_LINEAR    /* y = alpha * x + beta (scaling) */
} nac_act;

typedef enum nac_binop { NAC_BIN_ADD, NAC_BIN_SUB, NAC_BIN_MUL, NAC_BIN_DIV, NAC_BIN_MAX } nac_binop;

typedef enum nac_pool { NAC_POOL_MAX, NAC_POOL_AVG } nac_pool;

typedef enum nac_rand { NAC_RAND_UNIFORM, NAC_RAND_NORMAL, NAC_RAND_SIGN } nac_rand;

typedef struct nac_conv_params {
    int stride, pad; /* square; kernel size from the weight; dilation 1; groups 1 */
} nac_conv_params;

typedef struct nac_bn_params {
    float eps;      /* 1e-5 as PyTorch */
    float momentum; /* 0.1 as PyTorch: running = (1-m) running + m batch (unbiased var) */
    int groups;     /* the batch is `groups` equal slices with their own statistics,
                       applied to the running statistics one slice after another, as
                       `groups` separate forward passes would in PyTorch */
    bool relu;      /* fuse a ReLU after the normalisation (its backward included) */
} nac_bn_params;

typedef struct nac_pool_params {
    nac_pool kind;
    int kernel, stride, pad; /* average pooling excludes padding from the count */
} nac_pool_params;

/* Hyper-parameters of one fused optimiser update of one parameter tensor. */
typedef enum nac_opt_kind { NAC_OPT_SGD, NAC_OPT_LARS, NAC_OPT_ADAM, NAC_OPT_ADAMW } nac_opt_kind;
typedef struct nac_opt_step {
    nac_opt_kind kind;
    float lr, momentum, weight_decay;
    bool nesterov;                   /* SGD */
    float eta;                       /* LARS trust coefficient (0.001) */
    bool lars_adapt;                 /* LARS: false = plain momentum SGD for this tensor */
    float beta1, beta2, eps;         /* Adam/AdamW */
    int64_t t;                       /* Adam: step number, from 1 */
} nac_opt_step;

/* Bytes a backend holds for tensors, op workspaces, cached operand copies and scratch. */
typedef struct nac_backend_memory {
    size_t live; /* now */
    size_t peak; /* most at once since creation or the last nac_backend_memory_reset_peak */
    size_t cached_ops; /* primitives / plans cached by shape (created once, reused) */
} nac_backend_memory;

/* Physical layouts a backend may offer besides the plain one, so that the op tests run
 * every op on every layout the backend's ops produce (nac_tensor_relayout). */
typedef enum nac_layout {
    NAC_LAYOUT_CHANNEL_BLOCKED, /* 4-D activations in channel blocks (oneDNN nChw16c) */
    NAC_LAYOUT_CHANNELS_LAST,   /* 4-D activations NHWC */
    NAC_LAYOUT_WEIGHT_BLOCKED   /* 4-D convolution weights in blocks (oneDNN OIhw16i16o) */
} nac_layout;

/* What a backend says about a tensor's storage: for tests and diagnostics only. */
typedef struct nac_tensor_info {
    bool allocated;
    bool plain;        /* the logical row-major order */
    int layout_id;     /* equal ids <=> equal physical layouts (within one backend) */
    int inner_blocks;  /* blocking levels of the layout (0 when plain) */
    size_t bytes;      /* physical size, padding included */
    double abs_sum;    /* sum of |x| over the physical storage, padding included */
} nac_tensor_info;

/* The table a backend fills, with designated initialisers (`.conv_fwd = cpu_conv_fwd`) so
 * the compiler checks every name. Wrappers have validated everything before these run.
 * Required: name, free, tensor_alloc, tensor_release. Any op slot may be NULL: its wrapper
 * then returns NAC_ERR_BACKEND, "op conv_fwd is not supported by backend X". */
typedef struct nac_backend_i {
    const char *name;
    void (*free)(nac_backend_t *be);
    nac_status (*synchronize)(nac_backend_t *be);
    void (*memory)(nac_backend_t *be, nac_backend_memory *m, bool reset_peak);
    double (*flops)(nac_backend_t *be);

    /* tensors */
    nac_status (*tensor_alloc)(nac_backend_t *be, nac_tensor_t *t); /* plain layout */
    void (*tensor_release)(nac_backend_t *be, nac_tensor_t *t);
    nac_status (*tensor_alloc_like)(nac_backend_t *be, nac_tensor_t *t, const nac_tensor_t *like);
    nac_status (*tensor_share)(nac_backend_t *be, nac_tensor_t *t, const nac_tensor_t *owner);
    nac_status (*to_host)(nac_backend_t *be, const nac_tensor_t *t, float *dst);
    /* optional: the device address of a plain, contiguous device tensor (NULL if t has
       none), for device collectives (NCCL); host backends leave it NULL */
    void *(*device_ptr)(const nac_tensor_t *t);
    nac_status (*from_host)(nac_backend_t *be, nac_tensor_t *t, const float *src);
    nac_status (*copy)(nac_backend_t *be, const nac_tensor_t *src, nac_tensor_t *dst);
    nac_status (*fill)(nac_backend_t *be, nac_tensor_t *t, float value);
    nac_status (*rand)(nac_backend_t *be, nac_tensor_t *t, nac_rand kind, float param,
                       uint64_t key);
    nac_status (*copy_rows)(nac_backend_t *be, const nac_tensor_t *src, int64_t src_row,
                            nac_tensor_t *dst, int64_t dst_row, int64_t nrows);

    /* convolution */
    nac_status (*conv_fwd)(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *w,
                           const nac_tensor_t *b, nac_tensor_t *y, const nac_conv_params *p);
    nac_status (*conv_bwd_data)(nac_backend_t *be, const nac_tensor_t *dy,
                                const nac_tensor_t *w, nac_tensor_t *dx,
                                const nac_conv_params *p);
    nac_status (*conv_bwd_weights)(nac_backend_t *be, const nac_tensor_t *x,
                                   const nac_tensor_t *dy, nac_tensor_t *dw, nac_tensor_t *db,
                                   const nac_conv_params *p);
    /* batch norm */
    nac_status (*bn_fwd_train)(nac_backend_t *be, const nac_tensor_t *x,
                               const nac_tensor_t *gamma, const nac_tensor_t *beta,
                               nac_tensor_t *y, nac_tensor_t *running_mean,
                               nac_tensor_t *running_var, nac_tensor_t *save_mean,
                               nac_tensor_t *save_var, const nac_bn_params *p);
    nac_status (*bn_fwd_infer)(nac_backend_t *be, const nac_tensor_t *x,
                               const nac_tensor_t *gamma, const nac_tensor_t *beta,
                               const nac_tensor_t *running_mean,
                               const nac_tensor_t *running_var, nac_tensor_t *y,
                               const nac_bn_params *p);
    nac_status (*bn_fwd_saved)(nac_backend_t *be, const nac_tensor_t *x,
                               const nac_tensor_t *gamma, const nac_tensor_t *beta,
                               const nac_tensor_t *save_mean, const nac_tensor_t *save_var,
                               nac_tensor_t *y, const nac_bn_params *p);
    nac_status (*bn_bwd)(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *y,
                         const nac_tensor_t *dy, const nac_tensor_t *gamma,
                         const nac_tensor_t *save_mean, const nac_tensor_t *save_var,
                         nac_tensor_t *dx, nac_tensor_t *dgamma, nac_tensor_t *dbeta,
                         const nac_bn_params *p);
    /* optional, synchronised batch norm (the caller sums the partial sums over ranks):
     * see nac_bn_stats, nac_bn_backward_sums and nac_bn_backward_given */
    nac_status (*bn_stats)(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *mean,
                           nac_tensor_t *var, const nac_bn_params *p);
    nac_status (*bn_bwd_sums)(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *dy,
                              const nac_tensor_t *gamma, const nac_tensor_t *beta,
                              const nac_tensor_t *mean, const nac_tensor_t *var,
                              nac_tensor_t *sums, const nac_bn_params *p);
    nac_status (*bn_bwd_given)(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *dy,
                               const nac_tensor_t *gamma, const nac_tensor_t *beta,
                               const nac_tensor_t *mean, const nac_tensor_t *var,
                               const nac_tensor_t *dmeans, nac_tensor_t *dx,
                               const nac_bn_params *p);
    /* pooling and resampling */
    nac_status (*pool_fwd)(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y,
                           const nac_pool_params *p);
    nac_status (*pool_bwd)(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *y,
                           const nac_tensor_t *dy, nac_tensor_t *dx, const nac_pool_params *p);
    nac_status (*gap_fwd)(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y);
    nac_status (*gap_bwd)(nac_backend_t *be, const nac_tensor_t *dy, nac_tensor_t *dx);
    nac_status (*upsample_fwd)(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y);
    nac_status (*upsample_bwd)(nac_backend_t *be, const nac_tensor_t *dy, nac_tensor_t *dx);
    nac_status (*reshape)(nac_backend_t *be, const nac_tensor_t *src, nac_tensor_t *dst);

    /* element-wise */
    nac_status (*act_fwd)(nac_backend_t *be, nac_act kind, const nac_tensor_t *x,
                          nac_tensor_t *y, float alpha, float beta);
    nac_status (*act_bwd)(nac_backend_t *be, nac_act kind, const nac_tensor_t *x,
                          const nac_tensor_t *y, const nac_tensor_t *dy, nac_tensor_t *dx,
                          float alpha, float beta);
    nac_status (*binary)(nac_backend_t *be, nac_binop kind, const nac_tensor_t *a,
                         const nac_tensor_t *b, nac_tensor_t *y);
    nac_status (*axpby)(nac_backend_t *be, float alpha, const nac_tensor_t *x, float beta,
                        nac_tensor_t *y);

    /* dense and row-wise (2-D, row-major) */
    nac_status (*gemm)(nac_backend_t *be, bool ta, bool tb, float alpha,
                       const nac_tensor_t *a, const nac_tensor_t *b, float beta,
                       nac_tensor_t *c);
    nac_status (*linear_fwd)(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *w,
                             const nac_tensor_t *b, nac_tensor_t *y);
    nac_status (*linear_bwd)(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *w,
                             const nac_tensor_t *dy, nac_tensor_t *dx, nac_tensor_t *dw,
                             nac_tensor_t *db);
    nac_status (*row_logsumexp)(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y);
    nac_status (*row_softmax)(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y);
    nac_status (*row_sum)(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y);
    nac_status (*row_broadcast)(nac_backend_t *be, nac_binop kind, const nac_tensor_t *x,
                                const nac_tensor_t *v, nac_tensor_t *y);
    nac_status (*col_broadcast)(nac_backend_t *be, nac_binop kind, const nac_tensor_t *x,
                                const nac_tensor_t *v, nac_tensor_t *y);
    nac_status (*sum_all)(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y);
    nac_status (*sumsq_all)(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y);

    /* optimiser: one fused update of w from g with state s1 (momentum / Adam m) and
       s2 (Adam v; may be NULL otherwise) */
    nac_status (*opt_update)(nac_backend_t *be, nac_tensor_t *w, const nac_tensor_t *g,
                             nac_tensor_t *s1, nac_tensor_t *s2, const nac_opt_step *h);
    /* ema: w_m = decay * w_m + (1 - decay) * w  (momentum encoders) */
    nac_status (*ema)(nac_backend_t *be, nac_tensor_t *wm, const nac_tensor_t *w, float decay);

    /* introspection, for tests: optional */
    nac_status (*tensor_relayout)(nac_backend_t *be, nac_tensor_t *t, nac_layout layout);
    nac_status (*tensor_info)(nac_backend_t *be, const nac_tensor_t *t, nac_tensor_info *out);
} nac_backend_i;

/* What convolutions and matrix products compute in. BF16: their operands rounded to bf16,
 * products accumulated and written in fp32; weights, gradients, optimiser state, batch-norm
 * statistics and every other op stay fp32. */
typedef enum nac_precision { NAC_PRECISION_FP32 = 0, NAC_PRECISION_BF16 = 1 } nac_precision;

struct nac_backend {
    const nac_backend_i *iface;
    void *context;
    int threads;
    nac_precision precision; /* what the ops run in: FP32 where BF16 was asked for on a
                                machine without bf16 instructions */
};

/* ---- backends ---- */
typedef struct nac_backend_options {
    int threads; /* 0 = all cores */
    /* BF16 where the CPU has AVX512_BF16 or AMX (the environment variable NAC_CPU_NO_BF16=1
       makes the CPU backend act as if it had neither); otherwise the backend prints one
       line on stderr saying so and runs FP32. */
    nac_precision precision;
    /* CUDA: use device `device` (the local rank's GPU under mpirun); false: the device
       $NAC_CUDA_DEVICE names, else 0. Other backends ignore both. */
    bool pick_device;
    int device;
} nac_backend_options;

/* "cpu" (oneDNN); "cuda" where built with CUDA. */
nac_status nac_backend_create(const char *name, const nac_backend_options *opt,
                              nac_backend_t **out);
void nac_backend_free(nac_backend_t *be);
const char *nac_backend_name(const nac_backend_t *be);
nac_status nac_backend_synchronize(nac_backend_t *be);
nac_backend_memory nac_backend_memory_stats(nac_backend_t *be);
void nac_backend_memory_reset_peak(nac_backend_t *be);
/* FLOPs of the convolutions (forward, backward-data, backward-weights) and matrix products
 * issued so far, two per multiply-add: the work a step does, for rates against the
 * machine's sgemm peak. 0 for a backend that does not count. */
double nac_backend_flops(nac_backend_t *be);
nac_status nac_backend_cpu_create(const nac_backend_options *opt, nac_backend_t **out);
/* Only in a build with the CUDA backend (NAC_HAVE_CUDA): NAC_ERR_UNAVAILABLE when the
 * machine has no usable GPU or driver. */
nac_status nac_backend_cuda_create(const nac_backend_options *opt, nac_backend_t **out);
nac_status nac_backend_cuda_check(void); /* a device is there (no context is made) */
/* Whether nac_backend_create(name, ...) would find what it needs -- the backend built into
 * this binary and, for "cuda", a usable device -- without creating it: what a command
 * checks before it makes a run folder. The same errors as nac_backend_create. */
nac_status nac_backend_check(const char *name);

/* ---- tensors ---- */
/* Describe a tensor; storage comes with the first write or an explicit alloc. */
void nac_tensor_init(nac_tensor_t *t, nac_backend_t *be, int ndim, const int64_t *dim);
nac_tensor_t *nac_tensor_new(nac_backend_t *be, int ndim, const int64_t *dim); /* unallocated */
nac_tensor_t *nac_tensor_new4(nac_backend_t *be, int64_t n, int64_t c, int64_t h, int64_t w);
nac_tensor_t *nac_tensor_new2(nac_backend_t *be, int64_t rows, int64_t cols);
nac_tensor_t *nac_tensor_new1(nac_backend_t *be, int64_t n);
void nac_tensor_free(nac_tensor_t *t); /* accepts NULL */
void nac_tensor_release(nac_tensor_t *t); /* frees storage of an init'ed tensor */
nac_status nac_tensor_alloc(nac_tensor_t *t); /* plain layout, zeroed; no-op if allocated */
/* Allocate t (zeroed) in the physical layout of `like`, a written tensor of t's shape, so
 * that ops writing t's shape write it without a reorder; no-op if t is allocated. */
nac_status nac_tensor_alloc_like(nac_tensor_t *t, const nac_tensor_t *like);
/* Make t a view of `owner`'s storage (same shape, owner written): what is written into one
 * is read from the other. t keeps what is its own: the workspace an op leaves with its
 * output (the fused BN+ReLU mask nac_bn_backward reads). Releasing t leaves the storage to
 * owner; owner must outlive every use of t and never be re-laid out while viewed. t must be
 * unwritten or already a view (calling it again rebinds t to the same or another owner).
 * This is how a network keeps a per-layer ReLU mask while the activation itself lives in a
 * shared buffer. */
nac_status nac_tensor_share(nac_tensor_t *t, const nac_tensor_t *owner);
int64_t nac_tensor_numel(const nac_tensor_t *t);
bool nac_tensor_same_shape(const nac_tensor_t *a, const nac_tensor_t *b);
/* "(2,3,32,32)" into buf; returns buf. */
const char *nac_tensor_shape_str(const nac_tensor_t *t, char *buf, size_t n);

nac_status nac_tensor_to_host(const nac_tensor_t *t, float *dst);      /* logical order */
/* t's float* on its device where its backend has device storage (the CUDA backend), for
 * NCCL (nac_comm_nccl_create's accessor); NULL for host backends and unallocated tensors. */
void *nac_tensor_device_ptr(const nac_tensor_t *t);
nac_status nac_tensor_from_host(nac_tensor_t *t, const float *src);    /* logical order */
nac_status nac_tensor_copy(const nac_tensor_t *src, nac_tensor_t *dst);
nac_status nac_tensor_fill(nac_tensor_t *t, float value);
/* Fill from the counter-based generator: element i draws from (key, i). UNIFORM in
 * [0, param) (param 0 means 1), NORMAL with std param (0 means 1), SIGN: -1 with
 * probability param, else +1 (the NAC channel's flip mask). */
nac_status nac_tensor_rand(nac_tensor_t *t, nac_rand kind, float param, uint64_t key);
/* Copy nrows rows of a 2-D (or, along N, 4-D) tensor: concatenation and splitting. */
nac_status nac_copy_rows(const nac_tensor_t *src, int64_t src_row, nac_tensor_t *dst,
                         int64_t dst_row, int64_t nrows);
/* Same elements, new logical shape (e.g. (N,C,1,1) <-> (N,C), (N,C*H*W) <-> (N,C,H,W)). */
nac_status nac_reshape(const nac_tensor_t *src, nac_tensor_t *dst);

/* ---- layers ---- */
nac_status nac_conv2d_forward(const nac_tensor_t *x, const nac_tensor_t *w,
                              const nac_tensor_t *b, nac_tensor_t *y, nac_conv_params p);
nac_status nac_conv2d_backward_data(const nac_tensor_t *dy, const nac_tensor_t *w,
                                    nac_tensor_t *dx, nac_conv_params p);
nac_status nac_conv2d_backward_weights(const nac_tensor_t *x, const nac_tensor_t *dy,
                                       nac_tensor_t *dw, nac_tensor_t *db, nac_conv_params p);
/* Output size of a convolution / pooling along one axis. */
int64_t nac_conv_out_size(int64_t in, int kernel, int stride, int pad);

/* save_mean/save_var: (groups, C), the batch statistics the backward needs. */
nac_status nac_bn_forward_train(const nac_tensor_t *x, const nac_tensor_t *gamma,
                                const nac_tensor_t *beta, nac_tensor_t *y,
                                nac_tensor_t *running_mean, nac_tensor_t *running_var,
                                nac_tensor_t *save_mean, nac_tensor_t *save_var,
                                nac_bn_params p);
nac_status nac_bn_forward_infer(const nac_tensor_t *x, const nac_tensor_t *gamma,
                                const nac_tensor_t *beta, const nac_tensor_t *running_mean,
                                const nac_tensor_t *running_var, nac_tensor_t *y,
                                nac_bn_params p);
/* y = BN(x) normalised with the per-group statistics a training forward saved
 * (save_mean/save_var: (groups, C)), ReLU fused if p.relu: recomputes that forward's
 * output from its input. Updates no running statistics and leaves y's ReLU mask as is. */
nac_status nac_bn_forward_saved(const nac_tensor_t *x, const nac_tensor_t *gamma,
                                const nac_tensor_t *beta, const nac_tensor_t *save_mean,
                                const nac_tensor_t *save_var, nac_tensor_t *y,
                                nac_bn_params p);
nac_status nac_bn_backward(const nac_tensor_t *x, const nac_tensor_t *y,
                           const nac_tensor_t *dy, const nac_tensor_t *gamma,
                           const nac_tensor_t *save_mean, const nac_tensor_t *save_var,
                           nac_tensor_t *dx, nac_tensor_t *dgamma, nac_tensor_t *dbeta,
                           nac_bn_params p);
/* Synchronised batch norm in three pieces, for statistics combined over ranks in between
 * (nn/layers.c's nac_bn_unit with a communicator). x: (N,C,H,W) or (N,C) in p.groups
 * slices; mean/var: (groups, C) statistics the slices are normalised with (the global
 * batch's); a fused ReLU's mask is taken from x and them (gamma xhat + beta > 0), not from
 * a forward's output. Every reduction is accumulated in double in a fixed order.
 * nac_bn_stats: each slice's mean and biased variance (two passes: the mean, then the
 * squares around it), as a training forward computes them, without touching anything else. */
nac_status nac_bn_stats(const nac_tensor_t *x, nac_tensor_t *mean, nac_tensor_t *var,
                        nac_bn_params p);
/* sums (2 groups, C): row g = sum of dy' over slice g, row groups + g = sum of dy' xhat,
 * dy' = dy masked by the ReLU, xhat = (x - mean) / sqrt(var + eps). */
nac_status nac_bn_backward_sums(const nac_tensor_t *x, const nac_tensor_t *dy,
                                const nac_tensor_t *gamma, const nac_tensor_t *beta,
                                const nac_tensor_t *mean, const nac_tensor_t *var,
                                nac_tensor_t *sums, nac_bn_params p);
/* dx = gamma / sqrt(var + eps) (dy' - dmeans[g] - xhat dmeans[groups + g]) with dmeans
 * (2 groups, C) the means of those sums over the global slice (the batch norm backward
 * with reductions given). */
nac_status nac_bn_backward_given(const nac_tensor_t *x, const nac_tensor_t *dy,
                                 const nac_tensor_t *gamma, const nac_tensor_t *beta,
                                 const nac_tensor_t *mean, const nac_tensor_t *var,
                                 const nac_tensor_t *dmeans, nac_tensor_t *dx, nac_bn_params p);

nac_status nac_pool_forward(const nac_tensor_t *x, nac_tensor_t *y, nac_pool_params p);
nac_status nac_pool_backward(const nac_tensor_t *x, const nac_tensor_t *y,
                             const nac_tensor_t *dy, nac_tensor_t *dx, nac_pool_params p);
/* Global average pooling (N,C,H,W) -> (N,C). */
nac_status nac_gap_forward(const nac_tensor_t *x, nac_tensor_t *y);
nac_status nac_gap_backward(const nac_tensor_t *dy, nac_tensor_t *dx);
/* Nearest-neighbour upsampling by an integer factor (y's H, W over x's). */
nac_status nac_upsample_forward(const nac_tensor_t *x, nac_tensor_t *y);
nac_status nac_upsample_backward(const nac_tensor_t *dy, nac_tensor_t *dx);

/* y = f(x); ACT_LINEAR: y = alpha*x + beta. act_backward takes x and y (either may be
 * the one the kind needs: RELU/LINEAR/SQUARE/SOFTPLUS/LOG/ABS need x; TANH/SIGMOID/EXP/
 * SQRT need y) and writes dx = dy * f'(x). dx may alias dy. y may alias x in forward. */
nac_status nac_act_forward(nac_act kind, const nac_tensor_t *x, nac_tensor_t *y, float alpha,
                           float beta);
nac_status nac_act_backward(nac_act kind, const nac_tensor_t *x, const nac_tensor_t *y,
                            const nac_tensor_t *dy, nac_tensor_t *dx, float alpha, float beta);
/* y = a (op) b, same logical shapes; y may alias a or b. */
nac_status nac_binary(nac_binop kind, const nac_tensor_t *a, const nac_tensor_t *b,
                      nac_tensor_t *y);
/* y = alpha*x + beta*y (beta 0 overwrites y). */
nac_status nac_axpby(float alpha, const nac_tensor_t *x, float beta, nac_tensor_t *y);

/* C (M,N) = alpha op(A) op(B) + beta C on 2-D tensors. */
nac_status nac_gemm(bool ta, bool tb, float alpha, const nac_tensor_t *a,
                    const nac_tensor_t *b, float beta, nac_tensor_t *c);
/* y (N,O) = x (N,I) w^T (w: (O,I), PyTorch layout) + b (O, may be NULL). */
nac_status nac_linear_forward(const nac_tensor_t *x, const nac_tensor_t *w,
                              const nac_tensor_t *b, nac_tensor_t *y);
/* dx (may be NULL) = dy w; dw = dy^T x; db = column sums of dy (may be NULL). */
nac_status nac_linear_backward(const nac_tensor_t *x, const nac_tensor_t *w,
                               const nac_tensor_t *dy, nac_tensor_t *dx, nac_tensor_t *dw,
                               nac_tensor_t *db);
/* Row-wise on (N,M): y (N) = log sum_j exp x_ij; softmax y (N,M); sum y (N). */
nac_status nac_row_logsumexp(const nac_tensor_t *x, nac_tensor_t *y);
nac_status nac_row_softmax(const nac_tensor_t *x, nac_tensor_t *y);
nac_status nac_row_sum(const nac_tensor_t *x, nac_tensor_t *y);
/* y_ij = x_ij (op) v_j (v: (M)) -- a row vector applied to every row. */
nac_status nac_row_broadcast(nac_binop kind, const nac_tensor_t *x, const nac_tensor_t *v,
                             nac_tensor_t *y);
/* y_ij = x_ij (op) v_i (v: (N)) -- a column vector applied to every column. */
nac_status nac_col_broadcast(nac_binop kind, const nac_tensor_t *x, const nac_tensor_t *v,
                             nac_tensor_t *y);
/* y (1) = sum of all elements / of their squares. */
nac_status nac_sum_all(const nac_tensor_t *x, nac_tensor_t *y);
nac_status nac_sumsq_all(const nac_tensor_t *x, nac_tensor_t *y);

nac_status nac_opt_update(nac_tensor_t *w, const nac_tensor_t *g, nac_tensor_t *s1,
                          nac_tensor_t *s2, const nac_opt_step *h);
nac_status nac_ema_update(nac_tensor_t *wm, const nac_tensor_t *w, float decay);

/* ---- introspection (tests, diagnostics) ---- */
/* Store t in the backend's `layout`, contents kept, as an op producing it would: "op
 * tensor_relayout is not supported" when the backend has no such layout for t. */
nac_status nac_tensor_relayout(nac_tensor_t *t, nac_layout layout);
nac_status nac_tensor_get_info(const nac_tensor_t *t, nac_tensor_info *out);

/* Convenience: read a one-element tensor. */
nac_status nac_tensor_item(const nac_tensor_t *t, float *out);

#endif
