/* Private to encoders/: the encoder record, the per-architecture function table, and the
 * building blocks the architectures share (a convolution followed by batch norm, with its
 * buffers; parameter creation and initialisation from the run seed). */
#ifndef NAC_ENCODERS_ENCODER_IMPL_H
#define NAC_ENCODERS_ENCODER_IMPL_H

#include "encoders/encoder.h"

/* One architecture family. The encoder calls build once, plan/release around batch-size
 * changes, forward/backward per step. */
typedef struct enc_arch_i {
    nac_status (*build)(nac_encoder_t *e);            /* add and initialise parameters */
    void (*plan)(nac_encoder_t *e, int64_t n, int groups); /* describe buffers for batch n */
    void (*release)(nac_encoder_t *e);                /* free every buffer's storage */
    nac_status (*forward)(nac_encoder_t *e, const nac_tensor_t *x, bool train, int groups);
    nac_status (*backward)(nac_encoder_t *e, const nac_tensor_t *dh, nac_tensor_t *dx);
    void (*destroy)(nac_encoder_t *e);                /* free the architecture's record */
} enc_arch_i;

struct nac_encoder {
    const enc_arch_i *iface;
    const void *variant;       /* the registry entry's data (ResNet depth, ...) */
    nac_backend_t *be;
    nac_encoder_config cfg;
    nac_params_t params;
    int features;
    int64_t n;                 /* planned batch size (0: none) */
    int groups;                /* batch-norm groups the statistics buffers are planned for */
    bool can_backward;         /* the last forward was a training forward */
    const nac_tensor_t *x;     /* input of the last training forward */
    nac_tensor_t h;            /* (N, F) features */
    nac_tensor_t host_x;       /* nac_encoder_features_host's input batch */
    int64_t tracked;           /* batch-norm statistics updates so far */
    void *arch;                /* the architecture's record */
};

/* Architecture tables (resnet.c, vgg.c, mlp.c). */
extern const enc_arch_i nac_enc_resnet_i;
extern const enc_arch_i nac_enc_vgg_i;
extern const enc_arch_i nac_enc_mlp_i;

typedef struct enc_resnet_variant {
    int blocks[4];
    bool bottleneck;
} enc_resnet_variant;

/* Round base * width_mult to a positive integer width. */
int enc_width(int base, float width_mult);

/* ---- parameters ---- */
/* Add "<prefix>.<leaf>" (or just leaf with an empty prefix); group 0. */
nac_param_t *enc_param_add(nac_params_t *ps, nac_backend_t *be, const char *prefix,
                           const char *leaf, int ndim, const int64_t *dim, unsigned flags);
/* Fill from the stream nac_rng_key(seed, NAC_STREAM_INIT, index of p in ps, 0): element i
 * is nac_rng_normal_at / nac_rng_uniform_at(key, i) (std * N(0,1); U(-bound, bound)). */
nac_status enc_init_normal(const nac_params_t *ps, nac_param_t *p, uint64_t seed, double std);
nac_status enc_init_uniform(const nac_params_t *ps, nac_param_t *p, uint64_t seed,
                            double bound);
/* The same for an encoder's parameter p with its seed; nothing when cfg.skip_init. */
nac_status enc_init_normal_e(nac_encoder_t *e, nac_param_t *p, double std);
nac_status enc_init_uniform_e(nac_encoder_t *e, nac_param_t *p, double bound);

/* ---- convolution + batch norm (+ fused ReLU) ---- */
typedef struct enc_convbn {
    nac_param_t *w, *b;                     /* (O, I, k, k); conv bias (O) or NULL */
    nac_param_t *gamma, *beta, *mean, *var; /* (O) */
    nac_conv_params cp;
    bool relu;                              /* ReLU fused into the batch norm */
    int cin, cout, k;
    nac_tensor_t c;                         /* (N, O, H', W') convolution output */
    nac_tensor_t y;                         /* (N, O, H', W') batch norm (+ReLU) output */
    nac_tensor_t save_mean, save_var;       /* (groups, O) batch statistics */
    nac_tensor_t dc_own;                    /* (N, O, H', W') d loss / d c ... */
    nac_tensor_t *dc;                       /* ... or another unit's buffer of that shape */
} enc_convbn;

/* Create "<conv>.weight" (and ".bias" if bias), "<bn>.weight/.bias/.running_mean/
 * .running_var", initialised as torchvision: Kaiming-normal fan_out, bias 0, BN 1/0/0/1. */
nac_status enc_convbn_add(nac_encoder_t *e, enc_convbn *u, const char *conv_name,
                          const char *bn_name, int cin, int cout, int k, int stride, int pad,
                          bool bias, bool relu);
/* Describe the buffers for a batch of n inputs of size hin x win (storage comes with the
 * first write). Returns the output size through hout/wout. */
void enc_convbn_plan(enc_convbn *u, nac_backend_t *be, int64_t n, int64_t hin, int64_t win,
                     int groups, int64_t *hout, int64_t *wout);
void enc_convbn_release(enc_convbn *u);
nac_status enc_convbn_forward(enc_convbn *u, const nac_tensor_t *x, bool train, int groups);
/* dy: d loss / d y. Writes the unit's parameter gradients and, if dx, d loss / d x. */
nac_status enc_convbn_backward(enc_convbn *u, const nac_tensor_t *x, const nac_tensor_t *dy,
                               nac_tensor_t *dx, int groups);

/* The same in pieces, for networks that keep y in a shared buffer and recompute it:
 * conv: x -> c; norm: c -> y; recompute: y again from c and the saved statistics, into
 * any tensor of y's shape (train forwards only); norm_backward: dy -> dc (parameter
 * gradients of the batch norm; the ReLU mask is y's own, wherever its values live);
 * conv_backward: weight gradient from x and dc, and d loss / d x if dx. */
nac_status enc_convbn_conv(enc_convbn *u, const nac_tensor_t *x);
nac_status enc_convbn_norm(enc_convbn *u, bool train, int groups);
nac_status enc_convbn_recompute(enc_convbn *u, nac_tensor_t *y, int groups);
nac_status enc_convbn_norm_backward(enc_convbn *u, const nac_tensor_t *dy, nac_tensor_t *dc,
                                    int groups);
nac_status enc_convbn_conv_backward(enc_convbn *u, const nac_tensor_t *x,
                                    const nac_tensor_t *dc, nac_tensor_t *dx);

/* ---- buffer pools ----
 * Buffers of one activation shape (N, C, H, W), taken and given back in a pass's order:
 * storage comes with a buffer's first use, so a pool holds as many as were ever in use at
 * once. Networks keep in such pools the gradients of the backward and the activations
 * they do not keep for it (recomputed there with enc_convbn_recompute). */
enum { ENC_POOL_MAX = 8, ENC_POOLS_MAX = 32 };
typedef struct enc_pool {
    int64_t n, c, h, w;
    nac_tensor_t t[ENC_POOL_MAX];
    unsigned busy;
} enc_pool;
typedef struct enc_pools {
    enc_pool p[ENC_POOLS_MAX];
    int n;
} enc_pools;

/* The pool of shape (n, c, h, w), created on first request. */
enc_pool *enc_pools_get(enc_pools *ps, nac_backend_t *be, int64_t n, int64_t c, int64_t h,
                        int64_t w);
/* The lowest free buffer, in the layout of the pool's other buffers if it has storage. */
nac_status enc_pool_take(enc_pool *p, nac_tensor_t **out);
void enc_pool_give(enc_pool *p, const nac_tensor_t *t);
void enc_pools_reset(enc_pools *ps);              /* everything free (start of a pass) */
void enc_pools_release(enc_pools *ps);            /* free all storage; forget the shapes */
int enc_pool_allocated(const enc_pool *p);      /* buffers with storage */
/* u's batch-norm output written into buffer t: u->y becomes a view of t that keeps its own
 * ReLU mask, and u's output is recomputed from u->c when the backward needs it again. */
nac_status enc_convbn_norm_into(enc_convbn *u, nac_tensor_t *t, bool train, int groups);

/* Shorthands for buffer descriptions. */
void enc_t4(nac_tensor_t *t, nac_backend_t *be, int64_t n, int64_t c, int64_t h, int64_t w);
void enc_t2(nac_tensor_t *t, nac_backend_t *be, int64_t rows, int64_t cols);

#endif
