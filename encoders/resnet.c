/* ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, expansion 4, stride on the 3x3
 * conv as torchvision) with the CIFAR stem: conv1 3x3 stride 1, bn1, ReLU, no max-pool,
 * layer1-4 (strides 1, 2, 2, 2), global average pooling, no classifier. Forward and
 * backward per block in exact reverse order; the residual gradient flows to both branches
 * and is summed into the block's input gradient. */
#include <stdio.h>
#include <stdlib.h>

#include "encoders/encoder_impl.h"

typedef struct rn_block {
    enc_convbn u[3];        /* conv1/bn1, conv2/bn2 (, conv3/bn3 for Bottleneck) */
    int nu;
    bool has_ds;
    enc_convbn ds;          /* downsample.0 (1x1 conv) / downsample.1 (BN) */
    /* gradients live in the shape pools below: a block's are dead once its backward ends */
    nac_tensor_t *dmid[2];  /* d loss / d u[i].y for the inner units */
    nac_tensor_t *dx;       /* (N, Cin, H, W) d loss / d block input */
    nac_tensor_t *dx2;      /* (N, Cin, H, W) the downsample branch's share of dx */
} rn_block;

/* Gradient buffers shared by every block whose tensors have one shape: two for block
 * input gradients (alternating, since block k reads block k+1's while writing its own),
 * two for inner-unit gradients (the first also takes the downsample branch's share), one
 * for d loss / d conv output. Buffers are allocated on first write, so unused ones cost
 * nothing. This keeps the backward's memory to a few tensors per resolution. */
enum { POOL_DX0, POOL_DX1, POOL_MID0, POOL_MID1, POOL_DC, POOL_N };
typedef struct rn_pool {
    int64_t c, h, w;
    nac_tensor_t t[POOL_N];
    int flip;
} rn_pool;

/* The block's output: the last unit's batch-norm output, onto which the shortcut is added
 * and the ReLU applied in place (its batch norm has no fused ReLU, so its backward does
 * not read that tensor). */
static nac_tensor_t *block_out(rn_block *b) { return &b->u[b->nu - 1].y; }

typedef struct resnet {
    enc_convbn stem;
    rn_block *blocks;
    int nblocks;
    nac_tensor_t dlast;     /* (N, F, h, w) d loss / d last block output */
    rn_pool pools[32];
    int npools;
} resnet;

static rn_pool *pool_get(resnet *r, nac_backend_t *be, int64_t n, int64_t c, int64_t h, int64_t w) {
    for (int i = 0; i < r->npools; i++)
        if (r->pools[i].c == c && r->pools[i].h == h && r->pools[i].w == w) return &r->pools[i];
    NAC_ASSERT(r->npools < (int)(sizeof r->pools / sizeof r->pools[0]));
    rn_pool *p = &r->pools[r->npools++];
    p->c = c;
    p->h = h;
    p->w = w;
    p->flip = 0;
    for (int i = 0; i < POOL_N; i++) enc_t4(&p->t[i], be, n, c, h, w);
    return p;
}

#define RN(e) ((resnet *)(e)->arch)

static nac_status add_block(nac_encoder_t *e, rn_block *b, int layer, int idx, int cin,
                            int planes, int stride, bool bottleneck) {
    char pre[64], cn[96], bn[96];
    snprintf(pre, sizeof pre, "layer%d.%d", layer, idx);
    int cout = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
        int k[3] = {1, 3, 1}, ci[3] = {cin, planes, planes}, co[3] = {planes, planes, cout};
        b->nu = 3;
        for (int i = 0; i < 3; i++) {
            snprintf(cn, sizeof cn, "%s.conv%d", pre, i + 1);
            snprintf(bn, sizeof bn, "%s.bn%d", pre, i + 1);
            NAC_TRY(enc_convbn_add(e, &b->u[i], cn, bn, ci[i], co[i], k[i], i == 1 ? stride : 1,
                                   k[i] / 2, false, i < 2));
        }
    } else {
        b->nu = 2;
        for (int i = 0; i < 2; i++) {
            snprintf(cn, sizeof cn, "%s.conv%d", pre, i + 1);
            snprintf(bn, sizeof bn, "%s.bn%d", pre, i + 1);
            NAC_TRY(enc_convbn_add(e, &b->u[i], cn, bn, i ? planes : cin, planes, 3,
                                   i ? 1 : stride, 1, false, i == 0));
        }
    }
    b->has_ds = stride != 1 || cin != cout;
    if (b->has_ds) {
        snprintf(cn, sizeof cn, "%s.downsample.0", pre);
        snprintf(bn, sizeof bn, "%s.downsample.1", pre);
        NAC_TRY(enc_convbn_add(e, &b->ds, cn, bn, cin, cout, 1, stride, 0, false, false));
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
    NAC_TRY(enc_convbn_add(e, &r->stem, "conv1", "bn1", e->cfg.in_channels, cin, 3, 1, 1, false,
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
    enc_convbn_plan(&r->stem, be, n, e->cfg.in_size, e->cfg.in_size, groups, &h, &w);
    r->npools = 0;
    r->stem.dc = &pool_get(r, be, n, r->stem.cout, h, w)->t[POOL_DC];
    int cin = r->stem.cout;
    for (int k = 0; k < r->nblocks; k++) {
        rn_block *b = &r->blocks[k];
        int64_t hi = h, wi = w;
        for (int i = 0; i < b->nu; i++) {
            enc_convbn_plan(&b->u[i], be, n, h, w, groups, &h, &w);
            rn_pool *p = pool_get(r, be, n, b->u[i].cout, h, w);
            b->u[i].dc = &p->t[POOL_DC];
            if (i < b->nu - 1) b->dmid[i] = &p->t[POOL_MID0 + i];
        }
        rn_pool *pin = pool_get(r, be, n, cin, hi, wi);
        if (b->has_ds) {
            int64_t hd, wd;
            enc_convbn_plan(&b->ds, be, n, hi, wi, groups, &hd, &wd);
            b->ds.dc = &pool_get(r, be, n, b->ds.cout, hd, wd)->t[POOL_DC];
            /* the downsample's backward runs after the whole main branch, when the
               inner-gradient buffer of the input shape is free again */
            b->dx2 = &pin->t[POOL_MID0];
        }
        cin = b->u[b->nu - 1].cout;
        /* consecutive blocks of one input shape alternate: block k writes its dx while
           reading block k+1's */
        b->dx = &pin->t[pin->flip ? POOL_DX1 : POOL_DX0];
        pin->flip ^= 1;
    }
    enc_t4(&r->dlast, be, n, cin, h, w);
}

static void rn_release(nac_encoder_t *e) {
    resnet *r = RN(e);
    enc_convbn_release(&r->stem);
    for (int k = 0; k < r->nblocks; k++) {
        rn_block *b = &r->blocks[k];
        for (int i = 0; i < b->nu; i++) enc_convbn_release(&b->u[i]);
        if (b->has_ds) enc_convbn_release(&b->ds);
    }
    for (int i = 0; i < r->npools; i++)
        for (int j = 0; j < POOL_N; j++) nac_tensor_release(&r->pools[i].t[j]);
    r->npools = 0;
    nac_tensor_release(&r->dlast);
}

static nac_status block_forward(rn_block *b, const nac_tensor_t *x, bool train, int groups) {
    const nac_tensor_t *in = x;
    for (int i = 0; i < b->nu; i++) {
        NAC_TRY(enc_convbn_forward(&b->u[i], in, train, groups));
        in = &b->u[i].y;
    }
    const nac_tensor_t *shortcut = x;
    if (b->has_ds) {
        NAC_TRY(enc_convbn_forward(&b->ds, x, train, groups));
        shortcut = &b->ds.y;
    }
    nac_tensor_t *out = block_out(b);
    NAC_TRY(nac_binary(NAC_BIN_ADD, out, shortcut, out));
    return nac_act_forward(NAC_ACT_RELU, out, out, 1.0f, 0.0f);
}

/* dout: d loss / d block output; overwritten (it becomes d loss / d residual sum). */
static nac_status block_backward(rn_block *b, const nac_tensor_t *x, nac_tensor_t *dout,
                                 int groups) {
    /* ReLU'(sum) = [out > 0]: the output itself serves as the ReLU's input */
    NAC_TRY(nac_act_backward(NAC_ACT_RELU, block_out(b), NULL, dout, dout, 1.0f, 0.0f));
    const nac_tensor_t *dy = dout;
    for (int i = b->nu - 1; i >= 0; i--) {
        const nac_tensor_t *in = i ? &b->u[i - 1].y : x;
        nac_tensor_t *dst = i ? b->dmid[i - 1] : b->dx;
        NAC_TRY(enc_convbn_backward(&b->u[i], in, dy, dst, groups));
        dy = dst;
    }
    if (b->has_ds) {
        NAC_TRY(enc_convbn_backward(&b->ds, x, dout, b->dx2, groups));
        return nac_binary(NAC_BIN_ADD, b->dx, b->dx2, b->dx);
    }
    return nac_binary(NAC_BIN_ADD, b->dx, dout, b->dx);
}

static nac_status rn_forward(nac_encoder_t *e, const nac_tensor_t *x, bool train, int groups) {
    resnet *r = RN(e);
    NAC_TRY(enc_convbn_forward(&r->stem, x, train, groups));
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
    NAC_TRY(nac_gap_backward(dh, &r->dlast));
    nac_tensor_t *dout = &r->dlast;
    for (int k = r->nblocks - 1; k >= 0; k--) {
        const nac_tensor_t *in = k ? block_out(&r->blocks[k - 1]) : &r->stem.y;
        NAC_TRY(block_backward(&r->blocks[k], in, dout, g));
        dout = r->blocks[k].dx;
    }
    return enc_convbn_backward(&r->stem, e->x, dout, dx, g);
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
