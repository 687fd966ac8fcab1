/* The VAE's ResNet-style upsampling decoder: parameters, per-batch-size buffer plans,
 * forward (training or inference batch norm) and backward in exact reverse order.
 * Parameter gradients are written (=), as every op in the engine writes its outputs. */
#include "vae/decoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae/vae.h"

nac_status nac_vae_decoder_geometry(int size, int *s, int *nup) {
    if (size < 4)
        return nac_error(NAC_ERR_INVALID,
                         "VAE decoder: image size %d is too small (at least 4 pixels)", size);
    *s = size;
    *nup = 0;
    while (*s % 2 == 0 && *s / 2 >= 4) {
        *s /= 2;
        (*nup)++;
    }
    return NAC_OK;
}

/* ---- parameters ---- */
static nac_status add_block(const nac_builder_t *bld, int k, nac_vae_block_t *b) {
    char pre[96], sub[128];
    snprintf(pre, sizeof pre, "decoder.blocks.%d", k);
    snprintf(sub, sizeof sub, "%s.bn1", pre);
    NAC_TRY(nac_bn_unit_add(bld, &b->bn1, sub, b->cin, true));
    snprintf(sub, sizeof sub, "%s.conv1", pre);
    NAC_TRY(nac_conv_unit_add(bld, &b->conv1, sub, b->cin, b->cout, 3, 1, 1, false));
    snprintf(sub, sizeof sub, "%s.bn2", pre);
    NAC_TRY(nac_bn_unit_add(bld, &b->bn2, sub, b->cout, true));
    snprintf(sub, sizeof sub, "%s.conv2", pre);
    NAC_TRY(nac_conv_unit_add(bld, &b->conv2, sub, b->cout, b->cout, 3, 1, 1, false));
    if (b->cin == b->cout) return NAC_OK;
    snprintf(sub, sizeof sub, "%s.shortcut", pre);
    return nac_conv_unit_add(bld, &b->proj, sub, b->cin, b->cout, 1, 1, 0, false);
}

static nac_status build(nac_vae_decoder_t *d, uint64_t seed, nac_params_t *ps) {
    const nac_vae_decoder_config *c = &d->cfg;
    const nac_builder_t bld = {.ps = ps, .be = d->be, .seed = seed,
                               .group = NAC_VAE_GROUP_DECODER, .bn_sync = c->bn_sync,
                               .conv_init = NAC_CONV_INIT_TORCH_DEFAULT};
    d->c0 = c->width << d->nup;
    NAC_TRY(nac_linear_unit_add(&bld, &d->fc, "decoder.fc", c->latent, d->c0 * d->s * d->s,
                                true));
    int k = 0, cin = d->c0;
    for (int st = 0; st <= d->nup; st++) {
        int w = c->width << (d->nup - st), res = d->s << st;
        for (int j = 0; j < c->blocks; j++, k++) {
            nac_vae_block_t *b = &d->blocks[k];
            b->cin = cin;
            b->cout = w;
            b->res = res;
            b->up = st > 0 && j == 0;
            NAC_TRY(add_block(&bld, k, b));
            cin = w;
        }
    }
    NAC_TRY(nac_bn_unit_add(&bld, &d->bn_out, "decoder.bn_out", cin, true));
    NAC_TRY(nac_conv_unit_add(&bld, &d->out, "decoder.out", cin, c->channels, 3, 1, 1, true));
    if (c->maps == 2)
        NAC_TRY(nac_conv_unit_add(&bld, &d->out_scale, "decoder.out_scale", cin, c->channels, 3,
                                  1, 1, true));
    return NAC_OK;
}

nac_status nac_vae_decoder_create(nac_backend_t *be, const nac_vae_decoder_config *cfg,
                                  uint64_t seed, nac_params_t *params, nac_vae_decoder_t **out) {
    if (!be || !cfg || !params || !out)
        return nac_error(NAC_ERR_INVALID, "nac_vae_decoder_create: NULL argument");
    *out = NULL;
    if (cfg->latent < 1 || cfg->channels < 1 || cfg->width < 1 || cfg->blocks < 1 ||
        cfg->maps < 1 || cfg->maps > 2)
        return nac_error(NAC_ERR_INVALID,
                         "VAE decoder: invalid configuration (latent %d, channels %d, width %d, "
                         "blocks %d, maps %d)",
                         cfg->latent, cfg->channels, cfg->width, cfg->blocks, cfg->maps);
    nac_vae_decoder_t *d = calloc(1, sizeof *d);
    if (!d) return nac_error(NAC_ERR_NOMEM, "VAE decoder: out of memory");
    d->cfg = *cfg;
    d->be = be;
    nac_status s = nac_vae_decoder_geometry(cfg->size, &d->s, &d->nup);
    if (s == NAC_OK && (int64_t)cfg->width << d->nup > 65536)
        s = nac_error(NAC_ERR_INVALID, "VAE decoder: width %d is too large", cfg->width);
    if (s == NAC_OK) {
        d->nblocks = (d->nup + 1) * cfg->blocks;
        d->blocks = calloc((size_t)d->nblocks, sizeof *d->blocks);
        if (!d->blocks) s = nac_error(NAC_ERR_NOMEM, "VAE decoder: out of memory");
    }
    if (s == NAC_OK) s = build(d, seed, params);
    if (s != NAC_OK) {
        nac_error_prefix(s, "creating the VAE decoder: ");
        nac_vae_decoder_free(d);
        return s;
    }
    *out = d;
    return NAC_OK;
}

/* ---- buffer plans ---- */
#define BLOCK_TENSORS(b) {&(b)->xu, &(b)->a1, &(b)->c1, &(b)->a2, &(b)->c2, &(b)->sk, &(b)->y}
#define HEAD_TENSORS(d) \
    {&(d)->f, &(d)->x0, &(d)->aout, &(d)->loc4, &(d)->ls4, &(d)->loc, &(d)->ls, &(d)->dloc4, \
     &(d)->dls4, &(d)->daout, &(d)->dtmp, &(d)->dylast, &(d)->df}

static void release_plan(nac_vae_decoder_t *d) {
    for (int k = 0; k < d->nblocks; k++) {
        nac_tensor_t *ts[] = BLOCK_TENSORS(&d->blocks[k]);
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) nac_tensor_release(ts[i]);
    }
    nac_tensor_t *hs[] = HEAD_TENSORS(d);
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) nac_tensor_release(hs[i]);
    nac_bufpools_release(&d->pools);
    d->n = 0;
    d->trained_fwd = false;
}

static void plan(nac_vae_decoder_t *d, int64_t n) {
    if (d->n == n) return;
    release_plan(d);
    nac_backend_t *be = d->be;
    for (int k = 0; k < d->nblocks; k++) {
        nac_vae_block_t *b = &d->blocks[k];
        int64_t r = b->res;
        nac_t4(&b->xu, be, n, b->cin, r, r);
        nac_t4(&b->a1, be, n, b->cin, r, r);
        nac_tensor_t *out_w[] = {&b->c1, &b->a2, &b->c2, &b->sk, &b->y};
        for (size_t i = 0; i < sizeof out_w / sizeof out_w[0]; i++)
            nac_t4(out_w[i], be, n, b->cout, r, r);
    }
    int64_t c = d->cfg.channels, hh = d->cfg.size, cl = d->blocks[d->nblocks - 1].cout;
    nac_t2(&d->f, be, n, (int64_t)d->c0 * d->s * d->s);
    nac_t2(&d->df, be, n, (int64_t)d->c0 * d->s * d->s);
    nac_t4(&d->x0, be, n, d->c0, d->s, d->s);
    nac_tensor_t *last[] = {&d->aout, &d->daout, &d->dtmp, &d->dylast};
    for (size_t i = 0; i < sizeof last / sizeof last[0]; i++) nac_t4(last[i], be, n, cl, hh, hh);
    nac_tensor_t *maps[] = {&d->loc4, &d->ls4, &d->dloc4, &d->dls4};
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) nac_t4(maps[i], be, n, c, hh, hh);
    nac_t2(&d->loc, be, n, c * hh * hh);
    nac_t2(&d->ls, be, n, c * hh * hh);
    d->n = n;
}

void nac_vae_decoder_free(nac_vae_decoder_t *d) {
    if (!d) return;
    release_plan(d);
    for (int k = 0; d->blocks && k < d->nblocks; k++) {
        nac_bn_unit_release(&d->blocks[k].bn1);
        nac_bn_unit_release(&d->blocks[k].bn2);
    }
    nac_bn_unit_release(&d->bn_out);
    free(d->blocks);
    free(d);
}

/* ---- training forward: every activation kept for the backward ---- */
static const nac_tensor_t *block_input(const nac_vae_decoder_t *d, int k) {
    return k ? &d->blocks[k - 1].y : &d->x0;
}

static nac_status block_forward_train(nac_vae_block_t *b, const nac_tensor_t *xin) {
    const nac_tensor_t *x = xin;
    if (b->up) {
        NAC_TRY(nac_upsample_forward(xin, &b->xu));
        x = &b->xu;
    }
    NAC_TRY(nac_bn_unit_forward(&b->bn1, x, &b->a1, true, 1));
    NAC_TRY(nac_conv_unit_forward(&b->conv1, &b->a1, &b->c1));
    NAC_TRY(nac_bn_unit_forward(&b->bn2, &b->c1, &b->a2, true, 1));
    NAC_TRY(nac_conv_unit_forward(&b->conv2, &b->a2, &b->c2));
    const nac_tensor_t *skip = x;
    if (b->proj.w) {
        NAC_TRY(nac_conv_unit_forward(&b->proj, x, &b->sk));
        skip = &b->sk;
    }
    return nac_binary(NAC_BIN_ADD, &b->c2, skip, &b->y);
}

/* ---- evaluation forward: activations from the pools, given back once consumed ---- */
typedef struct pooled {
    nac_tensor_t *t;
    nac_bufpool *pool; /* NULL: not the pools' (the decoder's own x0) */
} pooled;

static nac_status take(nac_vae_decoder_t *d, int64_t c, int64_t r, pooled *out) {
    out->pool = nac_bufpools_get(&d->pools, d->be, d->n, c, r, r);
    return nac_bufpool_take(out->pool, &out->t);
}

static void give(pooled *p) {
    if (p->pool) nac_bufpool_give(p->pool, p->t);
    p->pool = NULL;
}

/* x -> the block's output, which replaces x (x's buffer goes back to its pool). */
static nac_status block_forward_eval(nac_vae_decoder_t *d, nac_vae_block_t *b, pooled *x) {
    int64_t r = b->res;
    pooled a, c, t;
    if (b->up) {
        NAC_TRY(take(d, b->cin, r, &a));
        NAC_TRY(nac_upsample_forward(x->t, a.t));
        give(x);
        *x = a;
    }
    NAC_TRY(take(d, b->cin, r, &a));
    NAC_TRY(nac_bn_unit_forward(&b->bn1, x->t, a.t, false, 1));
    NAC_TRY(take(d, b->cout, r, &c));
    NAC_TRY(nac_conv_unit_forward(&b->conv1, a.t, c.t));
    give(&a);
    NAC_TRY(take(d, b->cout, r, &a));
    NAC_TRY(nac_bn_unit_forward(&b->bn2, c.t, a.t, false, 1));
    NAC_TRY(nac_conv_unit_forward(&b->conv2, a.t, c.t));
    give(&a);
    if (b->proj.w) {
        NAC_TRY(take(d, b->cout, r, &t));
        NAC_TRY(nac_conv_unit_forward(&b->proj, x->t, t.t));
        NAC_TRY(nac_binary(NAC_BIN_ADD, c.t, t.t, c.t));
        give(&t);
    } else {
        NAC_TRY(nac_binary(NAC_BIN_ADD, c.t, x->t, c.t));
    }
    give(x);
    *x = c;
    return NAC_OK;
}

nac_status nac_vae_decoder_forward(nac_vae_decoder_t *d, const nac_tensor_t *z, bool train,
                                   const nac_tensor_t **loc, const nac_tensor_t **log_scale) {
    if (!d || !z || !loc)
        return nac_error(NAC_ERR_INVALID, "nac_vae_decoder_forward: NULL argument");
    if (z->ndim != 2 || z->dim[1] != d->cfg.latent)
        return nac_error(NAC_ERR_INVALID, "VAE decoder: z must be (N,%d), got %s",
                         d->cfg.latent, nac_tensor_shape_str(z, (char[64]){0}, 64));
    if (train && z->dim[0] < 2)
        return nac_error(NAC_ERR_INVALID,
                         "VAE decoder: training-mode batch norm needs at least 2 latents, got %s",
                         nac_tensor_shape_str(z, (char[64]){0}, 64));
    plan(d, z->dim[0]);
    d->trained_fwd = false;
    NAC_TRY(nac_linear_unit_forward(&d->fc, z, &d->f));
    NAC_TRY(nac_reshape(&d->f, &d->x0));
    const nac_tensor_t *ylast = NULL;
    pooled x = {.t = &d->x0, .pool = NULL};
    if (train) {
        for (int k = 0; k < d->nblocks; k++)
            NAC_TRY(block_forward_train(&d->blocks[k], block_input(d, k)));
        ylast = &d->blocks[d->nblocks - 1].y;
    } else {
        nac_bufpools_reset(&d->pools);
        for (int k = 0; k < d->nblocks; k++) NAC_TRY(block_forward_eval(d, &d->blocks[k], &x));
        ylast = x.t;
    }
    NAC_TRY(nac_bn_unit_forward(&d->bn_out, ylast, &d->aout, train, 1));
    give(&x);
    NAC_TRY(nac_conv_unit_forward(&d->out, &d->aout, &d->loc4));
    NAC_TRY(nac_reshape(&d->loc4, &d->loc));
    *loc = &d->loc;
    if (log_scale) *log_scale = NULL;
    if (d->out_scale.w) {
        NAC_TRY(nac_conv_unit_forward(&d->out_scale, &d->aout, &d->ls4));
        NAC_TRY(nac_reshape(&d->ls4, &d->ls));
        if (log_scale) *log_scale = &d->ls;
    }
    d->z = z;
    d->trained_fwd = train;
    return NAC_OK;
}

/* ---- backward: gradients from the pools, given back once consumed ---- */
/* dy (pooled, or the decoder's dylast) -> d loss / d the block's input, which replaces dy. */
static nac_status block_backward(nac_vae_decoder_t *d, nac_vae_block_t *b,
                                 const nac_tensor_t *xin, pooled *dy) {
    const nac_tensor_t *x = b->up ? &b->xu : xin;
    int64_t r = b->res;
    pooled da2, dc1, da1, dx, t;
    NAC_TRY(take(d, b->cout, r, &da2));
    NAC_TRY(nac_conv_unit_backward(&b->conv2, &b->a2, dy->t, da2.t));
    NAC_TRY(take(d, b->cout, r, &dc1));
    NAC_TRY(nac_bn_unit_backward(&b->bn2, &b->c1, &b->a2, da2.t, dc1.t, 1));
    give(&da2);
    NAC_TRY(take(d, b->cin, r, &da1));
    NAC_TRY(nac_conv_unit_backward(&b->conv1, &b->a1, dc1.t, da1.t));
    give(&dc1);
    NAC_TRY(take(d, b->cin, r, &dx));
    NAC_TRY(nac_bn_unit_backward(&b->bn1, x, &b->a1, da1.t, dx.t, 1));
    give(&da1);
    if (b->proj.w) {
        NAC_TRY(take(d, b->cin, r, &t));
        NAC_TRY(nac_conv_unit_backward(&b->proj, x, dy->t, t.t));
        NAC_TRY(nac_binary(NAC_BIN_ADD, dx.t, t.t, dx.t));
        give(&t);
    } else {
        NAC_TRY(nac_binary(NAC_BIN_ADD, dx.t, dy->t, dx.t));
    }
    give(dy);
    if (b->up) {
        NAC_TRY(take(d, b->cin, r / 2, &t));
        NAC_TRY(nac_upsample_backward(dx.t, t.t));
        give(&dx);
        dx = t;
    }
    *dy = dx;
    return NAC_OK;
}

nac_status nac_vae_decoder_backward(nac_vae_decoder_t *d, const nac_tensor_t *dloc,
                                    const nac_tensor_t *dlog_scale, nac_tensor_t *dz) {
    if (!d || !dloc || !dz)
        return nac_error(NAC_ERR_INVALID, "nac_vae_decoder_backward: NULL argument");
    if (!d->trained_fwd)
        return nac_error(NAC_ERR_INVALID,
                         "VAE decoder backward: the last forward was not in training mode");
    if ((d->out_scale.w != NULL) != (dlog_scale != NULL))
        return nac_error(NAC_ERR_INVALID, "VAE decoder backward: this decoder %s a log-scale "
                         "gradient", d->out_scale.w ? "needs" : "has no");
    NAC_TRY(nac_reshape(dloc, &d->dloc4));
    NAC_TRY(nac_conv_unit_backward(&d->out, &d->aout, &d->dloc4, &d->daout));
    if (dlog_scale) {
        NAC_TRY(nac_reshape(dlog_scale, &d->dls4));
        NAC_TRY(nac_conv_unit_backward(&d->out_scale, &d->aout, &d->dls4, &d->dtmp));
        NAC_TRY(nac_binary(NAC_BIN_ADD, &d->daout, &d->dtmp, &d->daout));
    }
    int last = d->nblocks - 1;
    NAC_TRY(nac_bn_unit_backward(&d->bn_out, &d->blocks[last].y, &d->aout, &d->daout,
                                 &d->dylast, 1));
    nac_bufpools_reset(&d->pools);
    pooled dy = {.t = &d->dylast, .pool = NULL};
    for (int k = last; k >= 0; k--) NAC_TRY(block_backward(d, &d->blocks[k], block_input(d, k), &dy));
    NAC_TRY(nac_reshape(dy.t, &d->df));
    give(&dy);
    return nac_linear_unit_backward(&d->fc, d->z, &d->df, dz);
}
