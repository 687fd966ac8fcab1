/* Private to encoders/: the encoder record, the per-architecture function table, and the
 * builder the architectures add their units (nn/layers.h) with. */
#ifndef NAC_ENCODERS_ENCODER_IMPL_H
#define NAC_ENCODERS_ENCODER_IMPL_H

#include "encoders/encoder.h"
#include "nn/layers.h"

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
    nac_bn_sync bn_sync;       /* every batch-norm unit's synchronisation (enc_builder) */
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

/* The builder the encoder's units add their parameters with: its list, backend and seed,
 * group 0; no initialisation when the values will be loaded (cfg.skip_init). */
nac_builder_t enc_builder(nac_encoder_t *e);

#endif
