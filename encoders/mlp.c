/* A plain ReLU MLP encoder for toy 2-D data (the linear-region experiment): Linear layers
 * "layers.<i>.weight/.bias" (an nn.ModuleList of nn.Linear), a ReLU after every layer, so
 * every unit is a hidden unit with an on/off bit; the features are the last layer's ReLU
 * outputs. PyTorch's default Linear initialisation. */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>

#include "encoders/encoder_impl.h"

typedef struct mlp_layer {
    nac_linear_unit lin; /* "layers.<i>": (out, in), (out) */
    nac_tensor_t a;     /* (N, out) ReLU output (the last layer writes the encoder's h) */
    nac_tensor_t g;     /* (N, out) d loss / d pre-activation, after d loss / d a */
} mlp_layer;

typedef struct mlp {
    int nlayers;
    mlp_layer layers[NAC_MLP_MAX_SIZES - 1];
    nac_tensor_t xflat, dxflat; /* (N, D): 4-D inputs seen as rows */
} mlp;

#define MLP(e) ((mlp *)(e)->arch)

static nac_status mlp_build(nac_encoder_t *e) {
    mlp *m = calloc(1, sizeof *m);
    if (!m) return nac_error(NAC_ERR_NOMEM, "out of memory");
    e->arch = m;
    const int *sz = e->cfg.mlp_sizes;
    m->nlayers = e->cfg.mlp_nsizes - 1;
    nac_builder_t bld = enc_builder(e);
    for (int i = 0; i < m->nlayers; i++) {
        mlp_layer *l = &m->layers[i];
        char pre[32];
        snprintf(pre, sizeof pre, "layers.%d", i);
        NAC_TRY(nac_linear_unit_add(&bld, &l->lin, pre, sz[i], sz[i + 1], true));
    }
    e->features = sz[m->nlayers];
    return NAC_OK;
}

static void mlp_plan(nac_encoder_t *e, int64_t n, int groups) {
    (void)groups;
    mlp *m = MLP(e);
    for (int i = 0; i < m->nlayers; i++) {
        nac_t2(&m->layers[i].a, e->be, n, e->cfg.mlp_sizes[i + 1]);
        nac_t2(&m->layers[i].g, e->be, n, e->cfg.mlp_sizes[i + 1]);
    }
    nac_t2(&m->xflat, e->be, n, e->cfg.mlp_sizes[0]);
    nac_t2(&m->dxflat, e->be, n, e->cfg.mlp_sizes[0]);
}

static void mlp_release(nac_encoder_t *e) {
    mlp *m = MLP(e);
    for (int i = 0; i < m->nlayers; i++) {
        nac_tensor_release(&m->layers[i].a);
        nac_tensor_release(&m->layers[i].g);
    }
    nac_tensor_release(&m->xflat);
    nac_tensor_release(&m->dxflat);
}

static nac_tensor_t *layer_out(nac_encoder_t *e, int i) {
    mlp *m = MLP(e);
    return i == m->nlayers - 1 ? &e->h : &m->layers[i].a;
}

static nac_status mlp_forward(nac_encoder_t *e, const nac_tensor_t *x, bool train, int groups) {
    (void)train;
    (void)groups;
    mlp *m = MLP(e);
    const nac_tensor_t *in = x;
    if (x->ndim != 2) {
        NAC_TRY(nac_reshape(x, &m->xflat));
        in = &m->xflat;
    }
    for (int i = 0; i < m->nlayers; i++) {
        mlp_layer *l = &m->layers[i];
        nac_tensor_t *out = layer_out(e, i);
        NAC_TRY(nac_linear_unit_forward(&l->lin, in, out));
        NAC_TRY(nac_act_forward(NAC_ACT_RELU, out, out, 1.0f, 0.0f));
        in = out;
    }
    return NAC_OK;
}

static nac_status mlp_backward(nac_encoder_t *e, const nac_tensor_t *dh, nac_tensor_t *dx) {
    mlp *m = MLP(e);
    bool flat = e->x->ndim != 2;
    const nac_tensor_t *x = flat ? &m->xflat : e->x;
    nac_tensor_t *dxrows = dx && flat ? &m->dxflat : dx;
    const nac_tensor_t *dy = dh;
    for (int i = m->nlayers - 1; i >= 0; i--) {
        mlp_layer *l = &m->layers[i];
        /* ReLU'(z) = [a > 0]: the output serves as the ReLU's input */
        NAC_TRY(nac_act_backward(NAC_ACT_RELU, layer_out(e, i), NULL, dy, &l->g, 1.0f, 0.0f));
        const nac_tensor_t *in = i ? layer_out(e, i - 1) : x;
        nac_tensor_t *dst = i ? &m->layers[i - 1].g : dxrows;
        NAC_TRY(nac_linear_unit_backward(&l->lin, in, &l->g, dst));
        dy = dst;
    }
    if (dx && flat) NAC_TRY(nac_reshape(&m->dxflat, dx));
    return NAC_OK;
}

static void mlp_destroy(nac_encoder_t *e) {
    free(e->arch);
    e->arch = NULL;
}

const enc_arch_i nac_enc_mlp_i = {
    /* .build    = */ mlp_build,
    /* .plan     = */ mlp_plan,
    /* .release  = */ mlp_release,
    /* .forward  = */ mlp_forward,
    /* .backward = */ mlp_backward,
    /* .destroy  = */ mlp_destroy,
};
