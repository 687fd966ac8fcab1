/* The layers tier: the units every network is built from (encoders/, vae/decoder.c, the
 * heads), each a set of named parameters with a forward/backward pair over backend ops, and
 * one initialisation scheme for all of them.
 *
 * Initialisation: a parameter's values are drawn on the host from its own counter-based
 * stream, nac_rng_key(seed, NAC_STREAM_INIT, index of the parameter in its list, 0), element
 * i from (key, i), so they depend neither on the thread count nor on the backend. The
 * distributions are those of the PyTorch module each network mirrors, named by the builder:
 * torchvision's ResNet/VGG convolutions Kaiming-normal (fan_out, ReLU gain) with biases 0,
 * or plain nn.Conv2d's default uniform(+-1/sqrt(fan_in)) for weight and bias (the VAE
 * decoder); linear layers nn.Linear's default uniform(+-1/sqrt(fan_in)) for weight and bias;
 * batch norm weight 1, bias 0, running mean 0, running variance 1.
 *
 * Buffers: units describe the tensors their pass needs (storage comes with the first write)
 * and write every output (=), parameter gradients included. Buffer pools (below) hold the
 * activations a network does not keep, a few per shape instead of one per layer. */
#ifndef NAC_NN_LAYERS_H
#define NAC_NN_LAYERS_H

#include "dist/comm.h"
#include "nn/param.h"

typedef enum nac_conv_init {
    NAC_CONV_INIT_KAIMING_OUT,   /* torchvision: kaiming_normal_(fan_out, relu), bias 0 */
    NAC_CONV_INIT_TORCH_DEFAULT  /* nn.Conv2d: uniform(+-1/sqrt(fan_in)), bias too */
} nac_conv_init;

/* Synchronised batch norm (SimCLR's global BN), shared by the batch-norm units of one
 * network: with comm set, a training forward normalises each group (view) with the
 * statistics of that group's rows on all ranks together (sum and sum of squares summed in
 * rank order), the running statistics take the global batch's (unbiased variance over the
 * global count, as PyTorch's SyncBatchNorm), and the backward sums its two per-channel
 * reductions over the ranks the same way; gamma/beta gradients stay the rank's own share
 * (the gradient all-reduce adds them). Every rank must run the same units in the same
 * order. comm NULL: statistics of the rank's own rows. */
typedef struct nac_bn_sync {
    nac_comm_t *comm;
    float *host;      /* grow-only host staging of the sums */
    int64_t host_n;
} nac_bn_sync;
void nac_bn_sync_release(nac_bn_sync *s); /* frees the staging; accepts NULL */

/* Where a network's units put their parameters and how they initialise them. */
typedef struct nac_builder {
    nac_params_t *ps;
    nac_backend_t *be;
    uint64_t seed;
    bool skip_init; /* values will be loaded: leave them as nac_params_add made them */
    int group;      /* optimiser group of every parameter added */
    nac_conv_init conv_init;
    nac_bn_sync *bn_sync; /* the batch-norm units' synchronisation (NULL: never synced) */
} nac_builder_t;

/* Add "<prefix>.<leaf>" (or just leaf with an empty prefix) to b->ps in group b->group.
 * NULL with a message if the name is too long or the add fails. */
nac_param_t *nac_build_param(const nac_builder_t *b, const char *prefix, const char *leaf,
                             int ndim, const int64_t *dim, unsigned flags);
/* std * N(0, 1) / uniform(-bound, bound) from p's stream (see above); nothing if skip_init. */
nac_status nac_build_init_normal(const nac_builder_t *b, nac_param_t *p, double std);
nac_status nac_build_init_uniform(const nac_builder_t *b, nac_param_t *p, double bound);

/* Shorthands for buffer descriptions. */
void nac_t4(nac_tensor_t *t, nac_backend_t *be, int64_t n, int64_t c, int64_t h, int64_t w);
void nac_t2(nac_tensor_t *t, nac_backend_t *be, int64_t rows, int64_t cols);

/* ---- convolution: "<name>.weight" (O, I, k, k), optional "<name>.bias" (O) ---- */
typedef struct nac_conv_unit {
    nac_param_t *w, *b; /* b NULL without bias */
    nac_conv_params cp;
    int cin, cout, k;
} nac_conv_unit;

nac_status nac_conv_unit_add(const nac_builder_t *b, nac_conv_unit *u, const char *name,
                             int cin, int cout, int k, int stride, int pad, bool bias);
nac_status nac_conv_unit_forward(const nac_conv_unit *u, const nac_tensor_t *x, nac_tensor_t *y);
/* Weight (and bias) gradients from x and dy; d loss / d x into dx unless dx is NULL. */
nac_status nac_conv_unit_backward(const nac_conv_unit *u, const nac_tensor_t *x,
                                  const nac_tensor_t *dy, nac_tensor_t *dx);

/* ---- batch norm (+ fused ReLU): "<name>.weight/.bias/.running_mean/.running_var" ---- */
typedef struct nac_bn_unit {
    nac_param_t *gamma, *beta, *mean, *var;
    bool relu;
    int c;
    nac_tensor_t save_mean, save_var; /* (groups, C) batch statistics of the last training pass */
    nac_bn_sync *sync;                /* the builder's; synchronised while sync->comm is set */
    nac_tensor_t sums;                /* (2 groups, C) partial sums of a synchronised pass */
} nac_bn_unit;

nac_status nac_bn_unit_add(const nac_builder_t *b, nac_bn_unit *u, const char *name, int c,
                           bool relu);
void nac_bn_unit_plan(nac_bn_unit *u, nac_backend_t *be, int groups);
void nac_bn_unit_release(nac_bn_unit *u);
/* train: batch statistics per group (running statistics updated); else the running ones. */
nac_status nac_bn_unit_forward(nac_bn_unit *u, const nac_tensor_t *x, nac_tensor_t *y,
                               bool train, int groups);
/* y again from x and the saved statistics of the last training forward. */
nac_status nac_bn_unit_recompute(nac_bn_unit *u, const nac_tensor_t *x, nac_tensor_t *y,
                                 int groups);
/* From the training forward's x and y (its ReLU mask): dx, gamma and beta gradients. */
nac_status nac_bn_unit_backward(nac_bn_unit *u, const nac_tensor_t *x, const nac_tensor_t *y,
                                const nac_tensor_t *dy, nac_tensor_t *dx, int groups);

/* ---- linear: "<name>.weight" (out, in) PyTorch layout, optional "<name>.bias" (out) ---- */
typedef struct nac_linear_unit {
    nac_param_t *w, *b;
    int in, out;
} nac_linear_unit;

nac_status nac_linear_unit_add(const nac_builder_t *b, nac_linear_unit *u, const char *name,
                               int in, int out, bool bias);
nac_status nac_linear_unit_forward(const nac_linear_unit *u, const nac_tensor_t *x,
                                   nac_tensor_t *y);
/* dx may be NULL. */
nac_status nac_linear_unit_backward(const nac_linear_unit *u, const nac_tensor_t *x,
                                    const nac_tensor_t *dy, nac_tensor_t *dx);

/* ---- convolution + batch norm (+ fused ReLU), with its buffers ---- */
typedef struct nac_convbn {
    nac_conv_unit conv;
    nac_bn_unit bn;
    nac_tensor_t c;       /* (N, O, H', W') convolution output */
    nac_tensor_t y;       /* (N, O, H', W') batch norm (+ReLU) output */
    nac_tensor_t dc_own;  /* (N, O, H', W') d loss / d c ... */
    nac_tensor_t *dc;     /* ... or another unit's buffer of that shape */
} nac_convbn;

/* "<conv_name>.weight" (and ".bias" if bias) and the batch norm "<bn_name>.*". */
nac_status nac_convbn_add(const nac_builder_t *b, nac_convbn *u, const char *conv_name,
                          const char *bn_name, int cin, int cout, int k, int stride, int pad,
                          bool bias, bool relu);
/* Describe the buffers for a batch of n inputs of size hin x win; output size out. */
void nac_convbn_plan(nac_convbn *u, nac_backend_t *be, int64_t n, int64_t hin, int64_t win,
                     int groups, int64_t *hout, int64_t *wout);
void nac_convbn_release(nac_convbn *u);
nac_status nac_convbn_forward(nac_convbn *u, const nac_tensor_t *x, bool train, int groups);
/* dy: d loss / d y. Parameter gradients, and d loss / d x if dx. */
nac_status nac_convbn_backward(nac_convbn *u, const nac_tensor_t *x, const nac_tensor_t *dy,
                               nac_tensor_t *dx, int groups);
/* The same in pieces, for networks that keep y in a shared buffer and recompute it:
 * conv: x -> c; norm: c -> y; recompute: y again from c into any tensor of y's shape (after
 * a training forward); norm_backward: dy -> dc (the ReLU mask is y's own, wherever its values
 * live); conv_backward: weight gradient from x and dc, and d loss / d x if dx. */
nac_status nac_convbn_conv(nac_convbn *u, const nac_tensor_t *x);
nac_status nac_convbn_norm(nac_convbn *u, bool train, int groups);
nac_status nac_convbn_recompute(nac_convbn *u, nac_tensor_t *y, int groups);
nac_status nac_convbn_norm_backward(nac_convbn *u, const nac_tensor_t *dy, nac_tensor_t *dc,
                                    int groups);
nac_status nac_convbn_conv_backward(nac_convbn *u, const nac_tensor_t *x,
                                    const nac_tensor_t *dc, nac_tensor_t *dx);

/* ---- buffer pools ----
 * Buffers of one activation shape (N, C, H, W), taken and given back in a pass's order:
 * storage comes with a buffer's first use, so a pool holds as many as were ever in use at
 * once. */
enum { NAC_BUFPOOL_MAX = 8, NAC_BUFPOOLS_MAX = 32 };
typedef struct nac_bufpool {
    int64_t n, c, h, w;
    nac_tensor_t t[NAC_BUFPOOL_MAX];
    unsigned busy;
} nac_bufpool;
typedef struct nac_bufpools {
    nac_bufpool p[NAC_BUFPOOLS_MAX];
    int n;
} nac_bufpools;

/* The pool of shape (n, c, h, w), created on first request. */
nac_bufpool *nac_bufpools_get(nac_bufpools *ps, nac_backend_t *be, int64_t n, int64_t c, int64_t h,
                        int64_t w);
/* The lowest free buffer, in the layout of the pool's other buffers if it has storage. */
nac_status nac_bufpool_take(nac_bufpool *p, nac_tensor_t **out);
void nac_bufpool_give(nac_bufpool *p, const nac_tensor_t *t);
void nac_bufpools_reset(nac_bufpools *ps);   /* everything free (start of a pass) */
void nac_bufpools_release(nac_bufpools *ps); /* free all storage; forget the shapes */
int nac_bufpool_allocated(const nac_bufpool *p); /* buffers with storage */
/* u's batch-norm output written into buffer t: u->y becomes a view of t that keeps its own
 * ReLU mask, and u's output is recomputed from u->c when the backward needs it again. */
nac_status nac_convbn_norm_into(nac_convbn *u, nac_tensor_t *t, bool train, int groups);

#endif
