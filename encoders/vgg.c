/* VGG16-BN (torchvision cfg "D" with batch norm): 13 conv3x3(+bias)/BN/ReLU units and five
 * 2x2 max-pools under torchvision's names (features.0.weight, features.1.running_mean, ...),
 * then a 1x1 adaptive average pool (the global average pool here) and no classifier:
 * 512 * width_mult features. Needs images of at least 32x32 (five halvings). */
#include <stdio.h>
#include <stdlib.h>

#include "encoders/encoder_impl.h"

#define VGG_POOL 0
static const int CFG_D[] = {64,  64,  VGG_POOL, 128, 128, VGG_POOL, 256, 256, 256, VGG_POOL,
                            512, 512, 512, VGG_POOL, 512, 512, 512, VGG_POOL};
#define NITEMS ((int)(sizeof CFG_D / sizeof CFG_D[0]))

/* Memory as in resnet.c: a unit keeps its convolution output; its batch-norm(+ReLU)
 * output lives in a shared buffer of its shape (a view keeping the ReLU mask), read at once
 * by the next convolution or max-pool and recomputed in the backward for the next
 * convolution's weight gradient (the max-pool's backward needs only its arg-max indices).
 * Pool outputs are kept. Gradients come from per-shape buffer pools. */
typedef struct vgg_item {
    bool pool;
    nac_convbn u;        /* a conv unit (pool == false) */
    nac_tensor_t p;      /* (N, C, H/2, W/2) the pool's output (pool == true) */
    nac_bufpool *pin, *pout; /* buffer pools of the item's input and output shapes */
} vgg_item;

typedef struct vgg {
    vgg_item items[NITEMS];
    nac_bufpools pools;
} vgg;

#define VGG(e) ((vgg *)(e)->arch)

static const nac_pool_params MAXPOOL = {.kind = NAC_POOL_MAX, .kernel = 2, .stride = 2, .pad = 0};

static nac_status vgg_build(nac_encoder_t *e) {
    int64_t s = e->cfg.in_size;
    for (int i = 0; i < NITEMS; i++)
        if (CFG_D[i] == VGG_POOL) s = nac_conv_out_size(s, 2, 2, 0);
    if (s < 1)
        return nac_error(NAC_ERR_INVALID,
                         "vgg16_bn needs images of at least 32x32 for its five max-pools, got "
                         "%dx%d",
                         e->cfg.in_size, e->cfg.in_size);
    vgg *v = calloc(1, sizeof *v);
    if (!v) return nac_error(NAC_ERR_NOMEM, "out of memory");
    e->arch = v;
    int cin = e->cfg.in_channels, idx = 0;
    nac_builder_t bld = enc_builder(e);
    for (int i = 0; i < NITEMS; i++) {
        vgg_item *it = &v->items[i];
        if (CFG_D[i] == VGG_POOL) {
            it->pool = true;
            idx += 1;
            continue;
        }
        int cout = enc_width(CFG_D[i], e->cfg.width_mult);
        char cn[32], bn[32];
        snprintf(cn, sizeof cn, "features.%d", idx);
        snprintf(bn, sizeof bn, "features.%d", idx + 1);
        NAC_TRY(nac_convbn_add(&bld, &it->u, cn, bn, cin, cout, 3, 1, 1, true, true));
        idx += 3; /* conv, bn, relu */
        cin = cout;
    }
    e->features = cin;
    return NAC_OK;
}

static void vgg_plan(nac_encoder_t *e, int64_t n, int groups) {
    vgg *v = VGG(e);
    int64_t h = e->cfg.in_size, w = e->cfg.in_size;
    int c = e->cfg.in_channels;
    v->pools.n = 0;
    for (int i = 0; i < NITEMS; i++) {
        vgg_item *it = &v->items[i];
        it->pin = nac_bufpools_get(&v->pools, e->be, n, c, h, w);
        if (it->pool) {
            h = nac_conv_out_size(h, MAXPOOL.kernel, MAXPOOL.stride, MAXPOOL.pad);
            w = nac_conv_out_size(w, MAXPOOL.kernel, MAXPOOL.stride, MAXPOOL.pad);
            nac_t4(&it->p, e->be, n, c, h, w);
        } else {
            nac_convbn_plan(&it->u, e->be, n, h, w, groups, &h, &w);
            c = it->u.conv.cout;
        }
        it->pout = nac_bufpools_get(&v->pools, e->be, n, c, h, w);
    }
}

static void vgg_release(nac_encoder_t *e) {
    vgg *v = VGG(e);
    for (int i = 0; i < NITEMS; i++) {
        nac_convbn_release(&v->items[i].u);
        nac_tensor_release(&v->items[i].p);
    }
    nac_bufpools_release(&v->pools);
}

static const nac_tensor_t *item_out(vgg_item *it) { return it->pool ? &it->p : &it->u.y; }

static nac_status vgg_forward(nac_encoder_t *e, const nac_tensor_t *x, bool train, int groups) {
    vgg *v = VGG(e);
    nac_bufpools_reset(&v->pools);
    const nac_tensor_t *in = x;
    nac_tensor_t *held = NULL; /* the previous unit's output, until the next item read it */
    nac_bufpool *heldp = NULL;
    for (int i = 0; i < NITEMS; i++) {
        vgg_item *it = &v->items[i];
        if (it->pool) {
            NAC_TRY(nac_pool_forward(in, &it->p, MAXPOOL));
            if (held) nac_bufpool_give(heldp, held);
            held = NULL;
        } else {
            NAC_TRY(nac_convbn_conv(&it->u, in));
            if (held) nac_bufpool_give(heldp, held);
            heldp = it->pout;
            NAC_TRY(nac_bufpool_take(heldp, &held));
            NAC_TRY(nac_convbn_norm_into(&it->u, held, train, groups));
        }
        in = item_out(it);
    }
    NAC_TRY(nac_gap_forward(in, &e->h));
    if (held) nac_bufpool_give(heldp, held);
    return NAC_OK;
}

static nac_status vgg_backward(nac_encoder_t *e, const nac_tensor_t *dh, nac_tensor_t *dx) {
    vgg *v = VGG(e);
    int g = e->groups;
    nac_bufpools_reset(&v->pools);
    nac_tensor_t *dy;
    NAC_TRY(nac_bufpool_take(v->items[NITEMS - 1].pout, &dy));
    NAC_TRY(nac_gap_backward(dh, dy));
    for (int i = NITEMS - 1; i >= 0; i--) {
        vgg_item *it = &v->items[i];
        nac_tensor_t *dst;
        if (it->pool) { /* item 0 is a convolution, so a pool has an item before it */
            NAC_TRY(nac_bufpool_take(it->pin, &dst));
            /* reads only the layout of its input, the unit output before it */
            NAC_TRY(nac_pool_backward(item_out(&v->items[i - 1]), &it->p, dy, dst, MAXPOOL));
            nac_bufpool_give(it->pout, dy);
            dy = dst;
            continue;
        }
        nac_tensor_t *dc;
        NAC_TRY(nac_bufpool_take(it->pout, &dc));
        NAC_TRY(nac_convbn_norm_backward(&it->u, dy, dc, g));
        nac_bufpool_give(it->pout, dy);
        const nac_tensor_t *in = e->x;
        nac_tensor_t *yprev = NULL;
        if (i) {
            vgg_item *prev = &v->items[i - 1];
            if (prev->pool) {
                in = &prev->p;
            } else { /* the previous unit's output, recomputed */
                NAC_TRY(nac_bufpool_take(it->pin, &yprev));
                NAC_TRY(nac_convbn_recompute(&prev->u, yprev, g));
                in = yprev;
            }
        }
        NAC_TRY(nac_convbn_conv_backward(&it->u, in, dc, NULL));
        if (yprev) nac_bufpool_give(it->pin, yprev);
        dst = dx;
        if (i) NAC_TRY(nac_bufpool_take(it->pin, &dst));
        if (dst) NAC_TRY(nac_conv2d_backward_data(dc, &it->u.conv.w->w, dst, it->u.conv.cp));
        nac_bufpool_give(it->pout, dc);
        dy = dst;
    }
    return NAC_OK;
}

static void vgg_destroy(nac_encoder_t *e) {
    free(e->arch);
    e->arch = NULL;
}

const enc_arch_i nac_enc_vgg_i = {
    /* .build    = */ vgg_build,
    /* .plan     = */ vgg_plan,
    /* .release  = */ vgg_release,
    /* .forward  = */ vgg_forward,
    /* .backward = */ vgg_backward,
    /* .destroy  = */ vgg_destroy,
};
