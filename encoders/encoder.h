/* Image (and toy 2-D) encoders f: x -> h, with llm.c-style forward/backward pairs:
 * ResNet-18/34/50 with the CIFAR stem (3x3 conv, no max-pool), VGG16-BN and a ReLU MLP,
 * under torchvision's parameter names, initialised as torchvision does from the run seed,
 * and a registry by name. Activations live in buffers owned by the encoder, planned for
 * the batch size of the first call (re-planned only when it changes). */
#ifndef NAC_ENCODERS_ENCODER_H
#define NAC_ENCODERS_ENCODER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "dist/comm.h"
#include "nn/param.h"
#include "io/safetensors.h"

#define NAC_ENCODER_ARCH_LEN 32
#define NAC_MLP_MAX_SIZES 16

typedef struct nac_encoder_config {
    char arch[NAC_ENCODER_ARCH_LEN]; /* "resnet18" "resnet34" "resnet50" "vgg16_bn" "mlp" */
    int in_channels;  /* image channels: 1 grey, 3 colour (ignored by the MLP) */
    int in_size;      /* image height = width (ignored by the MLP) */
    float width_mult; /* ResNet/VGG: stage widths (64,128,256,512) * width_mult, rounded,
                         at least 1 (1/16 gives 4, 8, 16, 32) */
    int mlp_sizes[NAC_MLP_MAX_SIZES]; /* MLP: input size, then each layer's width; the */
    int mlp_nsizes;                   /* features are the last width (ReLU after every layer) */
    uint64_t seed;    /* initialisation: nac_rng_key(seed, NAC_STREAM_INIT, param index, 0) */
    bool skip_init;   /* leave weights zero (BN 1/0/0/1 still set): for counting parameters
                         or when a checkpoint is loaded next */
} nac_encoder_config;

typedef struct nac_encoder nac_encoder_t;

/* resnet18, 3 channels, 32x32, width 1, MLP sizes {2, 64, 64}, seed 0. */
void nac_encoder_config_defaults(nac_encoder_config *cfg);
/* The registry's image architectures, X(name, builder, variant) in order, SEP() between:
 * the registry table (encoder.c), nac_encoder_arch_list and every config's choices of
 * "model.arch" expand this one list. builder/variant name encoder.c's private tables. */
#define NAC_ENCODER_IMAGE_ARCHS(X, SEP)                                                    \
    X("resnet18", nac_enc_resnet_i, &R18) SEP() X("resnet34", nac_enc_resnet_i, &R34) SEP() \
    X("resnet50", nac_enc_resnet_i, &R50) SEP() X("vgg16_bn", nac_enc_vgg_i, NULL)
#define NAC_ENCODER_ARCH_NAME_(name, builder, variant) name
#define NAC_ENCODER_ARCH_SEP_() "|"
/* "resnet18|resnet34|resnet50|vgg16_bn": the choices of a config's "model.arch". */
#define NAC_ENCODER_IMAGE_ARCH_CHOICES \
    NAC_ENCODER_IMAGE_ARCHS(NAC_ENCODER_ARCH_NAME_, NAC_ENCODER_ARCH_SEP_)
bool nac_encoder_arch_known(const char *name);
/* "resnet18|resnet34|resnet50|vgg16_bn|mlp", for --help and error messages. */
const char *nac_encoder_arch_list(void);

/* Parameters (torchvision names, e.g. "layer2.0.downsample.1.running_var") are created and
 * initialised: convolutions Kaiming-normal fan_out (std sqrt(2 / (out * k * k))), conv
 * biases 0 (VGG), BN weight 1, bias 0, running mean 0, var 1; Linear layers PyTorch's
 * default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. Parameter number i of the
 * list draws element j from nac_rng_normal_at / nac_rng_uniform_at(nac_rng_key(seed,
 * NAC_STREAM_INIT, i, 0), j) on the host (thread-count independent). Flags: BN weight/bias
 * NAC_PARAM_BN, conv/linear biases NAC_PARAM_BIAS, running statistics NAC_PARAM_BUFFER;
 * the optimiser configuration decides what is excluded from decay or LARS.
 * torchvision's int64 buffers bn*.num_batches_tracked are not parameters here; see
 * nac_encoder_write_extras. */
nac_status nac_encoder_create(nac_backend_t *be, const nac_encoder_config *cfg,
                              nac_encoder_t **out);
void nac_encoder_free(nac_encoder_t *enc); /* accepts NULL */

nac_params_t *nac_encoder_params(nac_encoder_t *enc);
const nac_encoder_config *nac_encoder_get_config(const nac_encoder_t *enc);
/* F, the feature size: 512 * width_mult (ResNet-18/34, VGG16-BN), 2048 * width_mult
 * (ResNet-50), the last MLP width. */
int nac_encoder_features(const nac_encoder_t *enc);

/* x: (N, C, H, W) with C = in_channels and H = W = in_size; the MLP takes (N, D) or any
 * (N, C, H, W) with C*H*W = D. *h: (N, F), owned by the encoder, valid until its next
 * forward. train: batch statistics (batch norm over each of bn_groups equal slices of the
 * batch, the running statistics updated slice after slice, as bn_groups successive
 * PyTorch forwards would) and buffers kept for the backward; x and *h must then stay
 * unchanged until nac_encoder_backward. Otherwise running statistics (bn_groups ignored).
 * A new batch size (or number of groups) frees and re-plans the buffers; an unchanged one
 * allocates nothing after the first call. */
nac_status nac_encoder_forward(nac_encoder_t *enc, const nac_tensor_t *x, bool train,
                               int bn_groups, const nac_tensor_t **h);
/* After a training forward: dh (N, F) -> every parameter's gradient g is WRITTEN (=), and
 * dx (same shape as x; may be NULL when the input gradient is not needed). */
nac_status nac_encoder_backward(nac_encoder_t *enc, const nac_tensor_t *dh, nac_tensor_t *dx);

/* Features of n host images (n, C, H, W) (the MLP: (n, D)) in evaluation mode, `batch`
 * at a time, into out (n, F). The last partial batch is padded by repeating images, so the
 * planned batch size never changes (pass the training batch size to avoid a re-plan). */
nac_status nac_encoder_features_host(nac_encoder_t *enc, const float *images, int64_t n,
                                     int batch, float *out);

/* Recalibrate every batch-norm layer's running statistics on n host images (as
 * nac_encoder_features_host takes them), without gradients and without touching any
 * trained parameter: floor(n / batch) training-mode forwards of `batch` images each (all n
 * when n < batch), and running mean and variance set to the average of the batches'
 * statistics (torch.optim.swa_utils.update_bn: a cumulative average, not the 0.1
 * momentum). With one batch holding all the images, the evaluation-mode output then equals
 * a training-mode forward over them, up to the unbiased variance PyTorch stores
 * (factor m/(m-1), m the values each channel's statistics see). No-op for the MLP. */
nac_status nac_encoder_recalibrate_bn(nac_encoder_t *enc, const float *images, int64_t n,
                                      int batch);

/* Synchronised batch norm (nn/layers.h's nac_bn_sync): with comm, every training forward
 * and backward of enc normalises each group with the statistics of that group's rows on
 * all of comm's ranks (every rank must run them in step); NULL (the default): each rank's
 * own rows. nac_encoder_recalibrate_bn always uses the rank's own images. */
void nac_encoder_set_bn_comm(nac_encoder_t *enc, nac_comm_t *comm);

/* Number of batch-norm statistics updates so far (bn_groups per training forward): what
 * torchvision counts in num_batches_tracked. */
int64_t nac_encoder_batches_tracked(const nac_encoder_t *enc);
/* Add torchvision's "<bn>.num_batches_tracked" int64 scalars (one per batch-norm layer,
 * value `tracked`, e.g. nac_encoder_batches_tracked) under `prefix`, so that a checkpoint
 * holding the parameters loads into torchvision with strict=True. No-op for the MLP. */
nac_status nac_encoder_write_extras(const nac_encoder_t *enc, nac_st_writer *w,
                                    const char *prefix, int64_t tracked);

#endif
