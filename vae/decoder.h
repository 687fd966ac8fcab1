/* The VAE decoder: a ResNet-style upsampling network z (N, L) -> per-pixel likelihood
 * parameters. Linear(L, C0*s*s) -> (N, C0, s, s) -> stages of pre-activation residual
 * blocks [BN-ReLU-conv3x3-BN-ReLU-conv3x3 + skip] with nearest x2 upsampling between
 * stages -> BN-ReLU -> conv3x3 to the output maps. Forward and backward run as backend
 * ops; buffers are planned per batch size. */
#ifndef NAC_VAE_DECODER_H
#define NAC_VAE_DECODER_H

#include "nn/layers.h"

typedef struct nac_vae_decoder_config {
    int latent;   /* L: the size of z */
    int channels; /* C: image channels (3 for CIFAR-10, 1 for (Fashion-)MNIST) */
    int size;     /* H = W of the image: s * 2^k with s >= 4 (32: s = 4, k = 3; 28: 7, 2) */
    int width;    /* base width w: stage widths w*2^k, ..., 2w, w (64; 8-16 for CPU runs) */
    int blocks;   /* residual blocks per stage (>= 1) */
    int maps;     /* output maps per channel: 1 (mean or logits), 2 (and a log-scale) */
    nac_bn_sync *bn_sync; /* the batch-norm units' synchronisation (NULL: per rank) */
} nac_vae_decoder_config;

/* One residual block at resolution res: optional x2 upsampling of its input first; a
 * 1x1 convolution on the skip where the width changes. */
typedef struct nac_vae_block {
    int cin, cout, res;
    bool up;
    nac_bn_unit bn1, bn2;
    nac_conv_unit conv1, conv2, proj; /* proj.w NULL: identity skip */
    /* activations a training forward keeps for the backward (N, *, res, res); the
       backward's gradients come from the decoder's buffer pools */
    nac_tensor_t xu, a1, c1, a2, c2, sk, y;
} nac_vae_block_t;

typedef struct nac_vae_decoder {
    nac_vae_decoder_config cfg;
    nac_backend_t *be;
    int s, nup, c0;    /* first resolution, upsamplings, first width */
    int nblocks;
    nac_vae_block_t *blocks;
    nac_linear_unit fc;
    nac_bn_unit bn_out;
    nac_conv_unit out, out_scale; /* out_scale.w NULL unless maps == 2 */
    int64_t n;         /* planned batch size (0: none) */
    bool trained_fwd;  /* the last forward was in training mode (backward allowed) */
    const nac_tensor_t *z;
    nac_tensor_t f, x0, aout, loc4, ls4, loc, ls;      /* forward */
    nac_tensor_t dloc4, dls4, daout, dtmp, dylast, df; /* backward */
    nac_bufpools pools;   /* an evaluation forward's activations and a backward's
                             gradients: a few per shape */
} nac_vae_decoder_t;

/* Adds the decoder's parameters to params (names "decoder.fc.weight",
 * "decoder.blocks.0.conv1.weight", ..., "decoder.out.weight"; group 2), initialised by the
 * layers tier's scheme (nn/layers.h) from the seed with PyTorch's module defaults, as the
 * PyTorch decoder this mirrors: convolutions and linear layers uniform(+-1/sqrt(fan_in)) for
 * weight and bias, batch norm weight 1, bias 0, running mean 0, variance 1. */
nac_status nac_vae_decoder_create(nac_backend_t *be, const nac_vae_decoder_config *cfg,
                                  uint64_t seed, nac_params_t *params, nac_vae_decoder_t **out);
void nac_vae_decoder_free(nac_vae_decoder_t *d); /* accepts NULL; parameters stay in the list */

/* z (N, L) -> loc (N, D) and, for maps == 2, log_scale (N, D), D = C*H*W in NCHW order
 * (plain 2-D tensors owned by the decoder, valid until the next forward). train selects
 * batch statistics (and updates the running ones) and keeps every activation for the
 * backward; an evaluation forward (running statistics) keeps none: its activations live in
 * buffer pools, a few per shape, so its memory does not grow with the depth. z must stay
 * unchanged until backward. */
nac_status nac_vae_decoder_forward(nac_vae_decoder_t *d, const nac_tensor_t *z, bool train,
                                   const nac_tensor_t **loc, const nac_tensor_t **log_scale);
/* From dloc (N, D) (and dlog_scale for maps == 2): writes every decoder parameter's
 * gradient and dz (N, L). Needs a training-mode forward. */
nac_status nac_vae_decoder_backward(nac_vae_decoder_t *d, const nac_tensor_t *dloc,
                                    const nac_tensor_t *dlog_scale, nac_tensor_t *dz);

/* Stages for an image size: the first resolution s and the number of upsamplings, or
 * an error naming the size. */
nac_status nac_vae_decoder_geometry(int size, int *s, int *nup);

#endif
