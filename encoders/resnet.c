/* ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, expansion 4, stride on the 3x3
 * conv as torchvision) with the CIFAR stem: conv1 3x3 stride 1, bn1, ReLU, no max-pool,
 * layer1-4 (strides 1, 2, 2, 2), global average pooling, no classifier. Forward and
 * backward per block in exact reverse order; the residual gradient flows to both branches
 * and is summed into the block's input gradient. */
#include <stdio.h>
#include <stdlib.h>

#include "encoders/encoder_impl.h"

/* Memory. A training step keeps, per convolution + batch norm unit, the convolution output
 * c (the batch norm's input). The batch norm's output y is kept only where it is a block's
 * output (the next block's input and the residual sum's ReLU mask) and for the stem. Inside
 * a block, y lives in a buffer shared by every unit of that shape: the next convolution
 * reads it at once in the forward, and the backward recomputes it from c and the saved
 * batch statistics when that convolution's weight gradient needs it (one elementwise pass;
 * the fused ReLU's mask stays with the unit's own y tensor, a view of the shared buffer).
 * Gradients and recomputed activations come from per-shape pools, taken and given back in
 * the backward's order, so a ResNet needs about three buffers of each resolution there. */
typedef struct rn_block {
    nac_convbn u[3];          /* conv1/bn1, conv2/bn2 (, conv3/bn3 for Bottleneck) */
    int nu;
    bool has_ds;
    nac_convbn ds;            /* downsample.0 (1x1 conv) / downsample.1 (BN) */
    nac_bufpool *pin, *pu[3];    /* pools of the block input's shape and of each unit's output */
} rn_block;

/* The block's output: the last unit's batch-norm output, onto which the shortcut is added
 * and the ReLU applied in place (its batch norm has no fused ReLU, so its backward does
 * not read that tensor). */
static nac_tensor_t *block_out(rn_block *b) { return &b->u[b->nu - 1].y; }

typedef struct resnet {
    nac_convbn stem;
    rn_block *blocks;
    int nblocks;
    nac_bufpool *pstem, *plast;  /* the stem's output shape; the last block's */
    nac_bufpools pools;
} resnet;

#define RN(e) ((resnet *)(e)->arch)

static nac_status add_block(nac_encoder_t *e, rn_block *b, int layer, int idx, int cin,
                            int planes, int stride, bool bottleneck) {
    char pre[64], cn[96], bn[96];
    snprintf(pre, sizeof pre, "layer%d.%d", layer, idx);
    nac_builder_t bld = enc_builder(e);
    int cout = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
        int k[3] = {1, 3, 1}, ci[3] = {cin, planes, planes}, co[3] = {planes, planes, cout};
        b->nu = 3;
        for (int i = 0; i < 3; i++) {
            snprintf(cn, sizeof cn, "%s.conv%d", pre, i + 1);
            snprintf(bn, sizeof bn, "%s.bn%d", pre, i + 1);
            NAC_TRY(nac_convbn_add(&bld, &b->u[i], cn, bn, ci[i], co[i], k[i], i == 1 ? stride : 1,
                                   k[i] / 2, false, i < 2));
        }
    } else {
        b->nu = 2;
        for (int i = 0; i < 2; i++) {
            snprintf(cn, sizeof cn, "%s.conv%d", pre, i + 1);
            snprintf(bn, sizeof bn, "%s.bn%d", pre, i + 1);
            NAC_TRY(nac_convbn_add(&bld, &b->u[i], cn, bn, i ? planes : cin, planes, 3,
                                   i ? 1 : stride, 1, false, i == 0));
        }
    }
    b->has_ds = stride != 1 || cin != cout;
    if (b->has_ds) {
        snprintf(cn, sizeof cn, "%s.downsample.0", pre);
        snprintf(bn, sizeof bn, "%s.downsample.1", pre);
        NAC_TRY(nac_convbn_add(&bld, &b->ds, cn, bn, cin, cout, 1, stride, 0, false, false));
    }
    return NAC_OK;
}

static nac_status rn_build(nac_encoder_t *e) {
    const enc_resnet_variant *v = e->variant;
    resnet *r = calloc(1, sizeof *r);
    if (!r) return nac_error(NAC_ERR_NOMEM, "out of memory");
    e->arch = r;
    int nblocks = 0;
    for (int l = 0; l < 4; l++) nblocks += v->blocks[l];
    r->blocks = calloc((size_t)nblocks, sizeof *r->blocks);
    if (!r->blocks) return nac_error(NAC_ERR_NOMEM, "out of memory");
    r->nblocks = nblocks;
    float m = e->cfg.width_mult;
    int cin = enc_width(64, m);
    nac_builder_t bld = enc_builder(e);
    NAC_TRY(nac_convbn_add(&bld, &r->stem, "conv1", "bn1", e->cfg.in_channels, cin, 3, 1, 1, false,
                           true));
    int k = 0;
    for (int l = 0; l < 4; l++) {
        int planes = enc_width(64 << l, m);
        for (int j = 0; j < v->blocks[l]; j++, k++) {
            NAC_TRY(add_block(e, &r->blocks[k], l + 1, j, cin, planes, j == 0 && l > 0 ? 2 : 1,
                              v->bottleneck));
            cin = v->bottleneck ? planes * 4 : planes;
        }
    }
    e->features = cin;
    return NAC_OK;
}

static void rn_plan(nac_encoder_t *e, int64_t n, int groups) {
    resnet *r = RN(e);
    nac_backend_t *be = e->be;
    int64_t h, w;
    nac_convbn_plan(&r->stem, be, n, e->cfg.in_size, e->cfg.in_size, groups, &h, &w);
    r->pools.n = 0;
    r->pstem = nac_bufpools_get(&r->pools, be, n, r->stem.conv.cout, h, w);
    int cin = r->stem.conv.cout;
    for (int k = 0; k < r->nblocks; k++) {
        rn_block *b = &r->blocks[k];
        int64_t hi = h, wi = w;
        b->pin = nac_bufpools_get(&r->pools, be, n, cin, hi, wi);
        for (int i = 0; i < b->nu; i++) {
            nac_convbn_plan(&b->u[i], be, n, h, w, groups, &h, &w);
            b->pu[i] = nac_bufpools_get(&r->pools, be, n, b->u[i].conv.cout, h, w);
        }
        if (b->has_ds) {
            int64_t hd, wd;
            nac_convbn_plan(&b->ds, be, n, hi, wi, groups, &hd, &wd);
        }
        cin = b->u[b->nu - 1].conv.cout;
    }
    r->plast = nac_bufpools_get(&r->pools, be, n, cin, h, w);
}

static void rn_release(nac_encoder_t *e) {
    resnet *r = RN(e);
    nac_convbn_release(&r->stem);
    for (int k = 0; k < r->nblocks; k++) {
        rn_block *b = &r->blocks[k];
        for (int i = 0; i < b->nu; i++) nac_convbn_release(&b->u[i]);
        if (b->has_ds) nac_convbn_release(&b->ds);
    }
    nac_bufpools_release(&r->pools);
}

static nac_status block_forward(rn_block *b, const nac_tensor_t *x, bool train, int groups) {
    const nac_tensor_t *in = x;
    nac_tensor_t *held = NULL; /* the previous inner unit's output, until the next conv */
    nac_bufpool *heldp = NULL;
    for (int i = 0; i < b->nu; i++) {
        nac_convbn *u = &b->u[i];
        NAC_TRY(nac_convbn_conv(u, in));
        if (held) nac_bufpool_give(heldp, held);
        held = NULL;
        if (i < b->nu - 1) {
            heldp = b->pu[i];
            NAC_TRY(nac_bufpool_take(heldp, &held));
            NAC_TRY(nac_convbn_norm_into(u, held, train, groups));
        } else {
            NAC_TRY(nac_convbn_norm(u, train, groups));
        }
        in = &u->y;
    }
    nac_tensor_t *out = block_out(b);
    if (b->has_ds) {
        nac_bufpool *po = b->pu[b->nu - 1];
        nac_tensor_t *t;
        NAC_TRY(nac_bufpool_take(po, &t));
        NAC_TRY(nac_convbn_conv(&b->ds, x));
        NAC_TRY(nac_convbn_norm_into(&b->ds, t, train, groups));
        NAC_TRY(nac_binary(NAC_BIN_ADD, out, &b->ds.y, out));
        nac_bufpool_give(po, t);
    } else {
        NAC_TRY(nac_binary(NAC_BIN_ADD, out, x, out));
    }
    return nac_act_forward(NAC_ACT_RELU, out, out, 1.0f, 0.0f);
}

/* dout: d loss / d block output, a buffer of the output's pool; overwritten (it becomes
 * d loss / d residual sum) and given back. *dx: d loss / d block input, taken from the
 * input's pool. */
static nac_status block_backward(rn_block *b, const nac_tensor_t *x, nac_tensor_t *dout,
                                 int groups, nac_tensor_t **dx) {
    /* ReLU'(sum) = [out > 0]: the output itself serves as the ReLU's input */
    NAC_TRY(nac_act_backward(NAC_ACT_RELU, block_out(b), NULL, dout, dout, 1.0f, 0.0f));
    nac_tensor_t *dy = dout;
    for (int i = b->nu - 1; i >= 0; i--) {
        nac_convbn *u = &b->u[i];
        nac_tensor_t *dc;
        NAC_TRY(nac_bufpool_take(b->pu[i], &dc));
        NAC_TRY(nac_convbn_norm_backward(u, dy, dc, groups));
        if (dy != dout) nac_bufpool_give(b->pu[i], dy);
        const nac_tensor_t *in = x;
        nac_tensor_t *yprev = NULL;
        if (i > 0) { /* the previous unit's output, recomputed for the weight gradient */
            NAC_TRY(nac_bufpool_take(b->pu[i - 1], &yprev));
            NAC_TRY(nac_convbn_recompute(&b->u[i - 1], yprev, groups));
            in = yprev;
        }
        NAC_TRY(nac_convbn_conv_backward(u, in, dc, NULL));
        if (yprev) nac_bufpool_give(b->pu[i - 1], yprev);
        nac_tensor_t *dst;
        NAC_TRY(nac_bufpool_take(i ? b->pu[i - 1] : b->pin, &dst));
        NAC_TRY(nac_conv2d_backward_data(dc, &u->conv.w->w, dst, u->conv.cp));
        nac_bufpool_give(b->pu[i], dc);
        dy = dst;
    }
    if (b->has_ds) {
        nac_bufpool *po = b->pu[b->nu - 1];
        nac_tensor_t *dc, *d2;
        NAC_TRY(nac_bufpool_take(po, &dc));
        NAC_TRY(nac_convbn_norm_backward(&b->ds, dout, dc, groups));
        NAC_TRY(nac_bufpool_take(b->pin, &d2));
        NAC_TRY(nac_convbn_conv_backward(&b->ds, x, dc, d2));
        nac_bufpool_give(po, dc);
        NAC_TRY(nac_binary(NAC_BIN_ADD, dy, d2, dy));
        nac_bufpool_give(b->pin, d2);
    } else {
        NAC_TRY(nac_binary(NAC_BIN_ADD, dy, dout, dy));
    }
    nac_bufpool_give(b->pu[b->nu - 1], dout);
    *dx = dy;
    return NAC_OK;
}

static nac_status rn_forward(nac_encoder_t *e, const nac_tensor_t *x, bool train, int groups) {
    resnet *r = RN(e);
    nac_bufpools_reset(&r->pools);
    NAC_TRY(nac_convbn_forward(&r->stem, x, train, groups));
    const nac_tensor_t *in = &r->stem.y;
    for (int k = 0; k < r->nblocks; k++) {
        NAC_TRY(block_forward(&r->blocks[k], in, train, groups));
        in = block_out(&r->blocks[k]);
    }
    return nac_gap_forward(in, &e->h);
}

static nac_status rn_backward(nac_encoder_t *e, const nac_tensor_t *dh, nac_tensor_t *dx) {
    resnet *r = RN(e);
    int g = e->groups;
    nac_bufpools_reset(&r->pools);
    nac_tensor_t *dout;
    NAC_TRY(nac_bufpool_take(r->plast, &dout));
    NAC_TRY(nac_gap_backward(dh, dout));
    for (int k = r->nblocks - 1; k >= 0; k--) {
        const nac_tensor_t *in = k ? block_out(&r->blocks[k - 1]) : &r->stem.y;
        NAC_TRY(block_backward(&r->blocks[k], in, dout, g, &dout));
    }
    nac_tensor_t *dc;
    NAC_TRY(nac_bufpool_take(r->pstem, &dc));
    NAC_TRY(nac_convbn_norm_backward(&r->stem, dout, dc, g));
    nac_bufpool_give(r->pstem, dout);
    NAC_TRY(nac_convbn_conv_backward(&r->stem, e->x, dc, dx));
    nac_bufpool_give(r->pstem, dc);
    return NAC_OK;
}

static void rn_destroy(nac_encoder_t *e) {
    resnet *r = RN(e);
    free(r->blocks);
    free(r);
    e->arch = NULL;
}

const enc_arch_i nac_enc_resnet_i = {
    /* .build    = */ rn_build,
    /* .plan     = */ rn_plan,
    /* .release  = */ rn_release,
    /* .forward  = */ rn_forward,
    /* .backward = */ rn_backward,
    /* .destroy  = */ rn_destroy,
};
