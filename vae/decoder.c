/* The VAE's ResNet-style upsampling decoder: parameters, per-batch-size buffer plans,
 * forward (training or inference batch norm) and backward in exact reverse order.
 * Parameter gradients are written (=), as every op in the engine writes its outputs. */
#include "vae/decoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/rng.h"

#define GROUP_DECODER 2

static const nac_bn_params BN_RELU = {.eps = 1e-5f, .momentum = 0.1f, .groups = 1, .relu = true};

/* ---- initialisation ---- */
static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

nac_status nac_vae_init_uniform(nac_param_t *p, uint64_t seed, float bound) {
    int64_t n = nac_tensor_numel(&p->w);
    float *v = malloc((size_t)n * sizeof *v);
    if (!v) return nac_error(NAC_ERR_NOMEM, "initialising %s: out of memory", p->name);
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(seed, NAC_STREAM_INIT, name_hash(p->name), 0));
    for (int64_t i = 0; i < n; i++) v[i] = bound * (2.0f * nac_rng_uniformf(&r) - 1.0f);
    nac_status s = nac_tensor_from_host(&p->w, v);
    free(v);
    return s;
}

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
static nac_param_t *add_param(nac_params_t *ps, nac_backend_t *be, const char *prefix,
                              const char *leaf, int ndim, const int64_t *dim, unsigned flags) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", prefix, leaf);
    nac_param_t *p = nac_params_add(ps, be, name, ndim, dim, flags);
    if (p) p->group = GROUP_DECODER;
    return p;
}

static nac_status add_conv(nac_params_t *ps, nac_backend_t *be, uint64_t seed,
                           const char *prefix, int cout, int cin, int k, bool bias,
                           nac_vae_conv_t *c) {
    int64_t wd[4] = {cout, cin, k, k};
    c->p = (nac_conv_params){.stride = 1, .pad = k / 2};
    c->w = add_param(ps, be, prefix, "weight", 4, wd, 0);
    if (!c->w) return NAC_ERR_INVALID;
    float bound = 1.0f / sqrtf((float)(cin * k * k));
    NAC_TRY(nac_vae_init_uniform(c->w, seed, bound));
    c->b = NULL;
    if (!bias) return NAC_OK;
    int64_t bd = cout;
    c->b = add_param(ps, be, prefix, "bias", 1, &bd, NAC_PARAM_BIAS);
    if (!c->b) return NAC_ERR_INVALID;
    return nac_vae_init_uniform(c->b, seed, bound);
}

static nac_status add_bn(nac_params_t *ps, nac_backend_t *be, const char *prefix, int ch,
                         nac_vae_bn_t *b) {
    int64_t c = ch, sd[2] = {1, ch};
    b->gamma = add_param(ps, be, prefix, "weight", 1, &c, NAC_PARAM_BN);
    b->beta = add_param(ps, be, prefix, "bias", 1, &c, NAC_PARAM_BN);
    b->mean = add_param(ps, be, prefix, "running_mean", 1, &c, NAC_PARAM_BUFFER);
    b->var = add_param(ps, be, prefix, "running_var", 1, &c, NAC_PARAM_BUFFER);
    if (!b->gamma || !b->beta || !b->mean || !b->var) return NAC_ERR_INVALID;
    NAC_TRY(nac_tensor_fill(&b->gamma->w, 1.0f));
    NAC_TRY(nac_tensor_fill(&b->var->w, 1.0f));
    nac_tensor_init(&b->save_mean, be, 2, sd);
    nac_tensor_init(&b->save_var, be, 2, sd);
    return NAC_OK;
}

static nac_status add_block(nac_vae_decoder_t *d, nac_params_t *ps, uint64_t seed, int k,
                            nac_vae_block_t *b) {
    char pre[96], sub[128];
    snprintf(pre, sizeof pre, "decoder.blocks.%d", k);
    nac_backend_t *be = d->be;
    snprintf(sub, sizeof sub, "%s.bn1", pre);
    NAC_TRY(add_bn(ps, be, sub, b->cin, &b->bn1));
    snprintf(sub, sizeof sub, "%s.conv1", pre);
    NAC_TRY(add_conv(ps, be, seed, sub, b->cout, b->cin, 3, false, &b->conv1));
    snprintf(sub, sizeof sub, "%s.bn2", pre);
    NAC_TRY(add_bn(ps, be, sub, b->cout, &b->bn2));
    snprintf(sub, sizeof sub, "%s.conv2", pre);
    NAC_TRY(add_conv(ps, be, seed, sub, b->cout, b->cout, 3, false, &b->conv2));
    if (b->cin == b->cout) return NAC_OK;
    snprintf(sub, sizeof sub, "%s.shortcut", pre);
    return add_conv(ps, be, seed, sub, b->cout, b->cin, 1, false, &b->proj);
}

static nac_status build(nac_vae_decoder_t *d, uint64_t seed, nac_params_t *ps) {
    const nac_vae_decoder_config *c = &d->cfg;
    nac_backend_t *be = d->be;
    d->c0 = c->width << d->nup;
    int64_t fw[2] = {(int64_t)d->c0 * d->s * d->s, c->latent}, fb = fw[0];
    d->fc_w = add_param(ps, be, "decoder.fc", "weight", 2, fw, 0);
    d->fc_b = add_param(ps, be, "decoder.fc", "bias", 1, &fb, NAC_PARAM_BIAS);
    if (!d->fc_w || !d->fc_b) return NAC_ERR_INVALID;
    float bound = 1.0f / sqrtf((float)c->latent);
    NAC_TRY(nac_vae_init_uniform(d->fc_w, seed, bound));
    NAC_TRY(nac_vae_init_uniform(d->fc_b, seed, bound));

    int k = 0, cin = d->c0;
    for (int st = 0; st <= d->nup; st++) {
        int w = c->width << (d->nup - st), res = d->s << st;
        for (int j = 0; j < c->blocks; j++, k++) {
            nac_vae_block_t *b = &d->blocks[k];
            b->cin = cin;
            b->cout = w;
            b->res = res;
            b->up = st > 0 && j == 0;
            NAC_TRY(add_block(d, ps, seed, k, b));
            cin = w;
        }
    }
    NAC_TRY(add_bn(ps, be, "decoder.bn_out", cin, &d->bn_out));
    NAC_TRY(add_conv(ps, be, seed, "decoder.out", c->channels, cin, 3, true, &d->out));
    if (c->maps == 2)
        NAC_TRY(add_conv(ps, be, seed, "decoder.out_scale", c->channels, cin, 3, true,
                         &d->out_scale));
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
static void t4(nac_tensor_t *t, nac_backend_t *be, int64_t n, int64_t c, int64_t h) {
    int64_t dim[4] = {n, c, h, h};
    nac_tensor_init(t, be, 4, dim);
}

static void t2(nac_tensor_t *t, nac_backend_t *be, int64_t r, int64_t c) {
    int64_t dim[2] = {r, c};
    nac_tensor_init(t, be, 2, dim);
}

#define BLOCK_TENSORS(b) \
    {&(b)->xu, &(b)->a1, &(b)->c1, &(b)->a2, &(b)->c2, &(b)->sk, &(b)->y, &(b)->dxu, \
     &(b)->da1, &(b)->dc1, &(b)->da2, &(b)->dsk, &(b)->dxin}
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
    d->n = 0;
    d->trained_fwd = false;
}

static void plan(nac_vae_decoder_t *d, int64_t n) {
    if (d->n == n) return;
    release_plan(d);
    nac_backend_t *be = d->be;
    for (int k = 0; k < d->nblocks; k++) {
        nac_vae_block_t *b = &d->blocks[k];
        int rin = b->up ? b->res / 2 : b->res;
        t4(&b->xu, be, n, b->cin, b->res);
        t4(&b->a1, be, n, b->cin, b->res);
        t4(&b->c1, be, n, b->cout, b->res);
        t4(&b->a2, be, n, b->cout, b->res);
        t4(&b->c2, be, n, b->cout, b->res);
        t4(&b->sk, be, n, b->cout, b->res);
        t4(&b->y, be, n, b->cout, b->res);
        t4(&b->dxu, be, n, b->cin, b->res);
        t4(&b->da1, be, n, b->cin, b->res);
        t4(&b->dc1, be, n, b->cout, b->res);
        t4(&b->da2, be, n, b->cout, b->res);
        t4(&b->dsk, be, n, b->cin, b->res);
        t4(&b->dxin, be, n, b->cin, rin);
    }
    int64_t c = d->cfg.channels, hh = d->cfg.size, cl = d->blocks[d->nblocks - 1].cout;
    t2(&d->f, be, n, (int64_t)d->c0 * d->s * d->s);
    t2(&d->df, be, n, (int64_t)d->c0 * d->s * d->s);
    t4(&d->x0, be, n, d->c0, d->s);
    t4(&d->aout, be, n, cl, hh);
    t4(&d->daout, be, n, cl, hh);
    t4(&d->dtmp, be, n, cl, hh);
    t4(&d->dylast, be, n, cl, hh);
    t4(&d->loc4, be, n, c, hh);
    t4(&d->ls4, be, n, c, hh);
    t4(&d->dloc4, be, n, c, hh);
    t4(&d->dls4, be, n, c, hh);
    t2(&d->loc, be, n, c * hh * hh);
    t2(&d->ls, be, n, c * hh * hh);
    d->n = n;
}

void nac_vae_decoder_free(nac_vae_decoder_t *d) {
    if (!d) return;
    release_plan(d);
    for (int k = 0; d->blocks && k < d->nblocks; k++) {
        nac_vae_block_t *b = &d->blocks[k];
        nac_tensor_release(&b->bn1.save_mean);
        nac_tensor_release(&b->bn1.save_var);
        nac_tensor_release(&b->bn2.save_mean);
        nac_tensor_release(&b->bn2.save_var);
    }
    nac_tensor_release(&d->bn_out.save_mean);
    nac_tensor_release(&d->bn_out.save_var);
    free(d->blocks);
    free(d);
}

/* ---- forward ---- */
static nac_status bn_fwd(nac_vae_bn_t *b, const nac_tensor_t *x, nac_tensor_t *y, bool train) {
    if (train)
        return nac_bn_forward_train(x, &b->gamma->w, &b->beta->w, y, &b->mean->w, &b->var->w,
                                    &b->save_mean, &b->save_var, BN_RELU);
    return nac_bn_forward_infer(x, &b->gamma->w, &b->beta->w, &b->mean->w, &b->var->w, y,
                                BN_RELU);
}

static nac_status bn_bwd(nac_vae_bn_t *b, const nac_tensor_t *x, const nac_tensor_t *y,
                         const nac_tensor_t *dy, nac_tensor_t *dx) {
    return nac_bn_backward(x, y, dy, &b->gamma->w, &b->save_mean, &b->save_var, dx,
                           &b->gamma->g, &b->beta->g, BN_RELU);
}

static nac_status conv_fwd(const nac_vae_conv_t *c, const nac_tensor_t *x, nac_tensor_t *y) {
    return nac_conv2d_forward(x, &c->w->w, c->b ? &c->b->w : NULL, y, c->p);
}

static nac_status conv_bwd(const nac_vae_conv_t *c, const nac_tensor_t *x,
                           const nac_tensor_t *dy, nac_tensor_t *dx) {
    NAC_TRY(nac_conv2d_backward_weights(x, dy, &c->w->g, c->b ? &c->b->g : NULL, c->p));
    return nac_conv2d_backward_data(dy, &c->w->w, dx, c->p);
}

static const nac_tensor_t *block_input(const nac_vae_decoder_t *d, int k) {
    return k ? &d->blocks[k - 1].y : &d->x0;
}

static nac_status block_forward(nac_vae_block_t *b, const nac_tensor_t *xin, bool train) {
    const nac_tensor_t *x = xin;
    if (b->up) {
        NAC_TRY(nac_upsample_forward(xin, &b->xu));
        x = &b->xu;
    }
    NAC_TRY(bn_fwd(&b->bn1, x, &b->a1, train));
    NAC_TRY(conv_fwd(&b->conv1, &b->a1, &b->c1));
    NAC_TRY(bn_fwd(&b->bn2, &b->c1, &b->a2, train));
    NAC_TRY(conv_fwd(&b->conv2, &b->a2, &b->c2));
    const nac_tensor_t *skip = x;
    if (b->proj.w) {
        NAC_TRY(conv_fwd(&b->proj, x, &b->sk));
        skip = &b->sk;
    }
    return nac_binary(NAC_BIN_ADD, &b->c2, skip, &b->y);
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
    NAC_TRY(nac_linear_forward(z, &d->fc_w->w, &d->fc_b->w, &d->f));
    NAC_TRY(nac_reshape(&d->f, &d->x0));
    for (int k = 0; k < d->nblocks; k++)
        NAC_TRY(block_forward(&d->blocks[k], block_input(d, k), train));
    NAC_TRY(bn_fwd(&d->bn_out, &d->blocks[d->nblocks - 1].y, &d->aout, train));
    NAC_TRY(conv_fwd(&d->out, &d->aout, &d->loc4));
    NAC_TRY(nac_reshape(&d->loc4, &d->loc));
    *loc = &d->loc;
    if (log_scale) *log_scale = NULL;
    if (d->out_scale.w) {
        NAC_TRY(conv_fwd(&d->out_scale, &d->aout, &d->ls4));
        NAC_TRY(nac_reshape(&d->ls4, &d->ls));
        if (log_scale) *log_scale = &d->ls;
    }
    d->z = z;
    d->trained_fwd = train;
    return NAC_OK;
}

/* ---- backward ---- */
static nac_status block_backward(nac_vae_block_t *b, const nac_tensor_t *xin,
                                 const nac_tensor_t *dy) {
    const nac_tensor_t *x = b->up ? &b->xu : xin;
    nac_tensor_t *dx = b->up ? &b->dxu : &b->dxin;
    NAC_TRY(conv_bwd(&b->conv2, &b->a2, dy, &b->da2));
    NAC_TRY(bn_bwd(&b->bn2, &b->c1, &b->a2, &b->da2, &b->dc1));
    NAC_TRY(conv_bwd(&b->conv1, &b->a1, &b->dc1, &b->da1));
    NAC_TRY(bn_bwd(&b->bn1, x, &b->a1, &b->da1, dx));
    if (b->proj.w) {
        NAC_TRY(conv_bwd(&b->proj, x, dy, &b->dsk));
        NAC_TRY(nac_binary(NAC_BIN_ADD, dx, &b->dsk, dx));
    } else {
        NAC_TRY(nac_binary(NAC_BIN_ADD, dx, dy, dx));
    }
    if (b->up) NAC_TRY(nac_upsample_backward(&b->dxu, &b->dxin));
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
    NAC_TRY(conv_bwd(&d->out, &d->aout, &d->dloc4, &d->daout));
    if (dlog_scale) {
        NAC_TRY(nac_reshape(dlog_scale, &d->dls4));
        NAC_TRY(conv_bwd(&d->out_scale, &d->aout, &d->dls4, &d->dtmp));
        NAC_TRY(nac_binary(NAC_BIN_ADD, &d->daout, &d->dtmp, &d->daout));
    }
    int last = d->nblocks - 1;
    NAC_TRY(bn_bwd(&d->bn_out, &d->blocks[last].y, &d->aout, &d->daout, &d->dylast));
    for (int k = last; k >= 0; k--) {
        const nac_tensor_t *dy = k == last ? &d->dylast : &d->blocks[k + 1].dxin;
        NAC_TRY(block_backward(&d->blocks[k], block_input(d, k), dy));
    }
    NAC_TRY(nac_reshape(&d->blocks[0].dxin, &d->df));
    return nac_linear_backward(d->z, &d->fc_w->w, &d->df, dz, &d->fc_w->g, &d->fc_b->g);
}
