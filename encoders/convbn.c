/* Building blocks shared by the encoders: parameter creation with torchvision's
 * initialisation drawn from the run seed (one counter-based stream per parameter index),
 * and the convolution + batch norm (+ fused ReLU) unit with its forward and backward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "encoders/encoder_impl.h"
#include "backend/rng.h"

int enc_width(int base, float width_mult) {
    long w = lround((double)base * (double)width_mult);
    return w < 1 ? 1 : (int)w;
}

void enc_t4(nac_tensor_t *t, nac_backend_t *be, int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t d[4] = {n, c, h, w};
    nac_tensor_init(t, be, 4, d);
}

void enc_t2(nac_tensor_t *t, nac_backend_t *be, int64_t rows, int64_t cols) {
    int64_t d[2] = {rows, cols};
    nac_tensor_init(t, be, 2, d);
}

nac_param_t *enc_param_add(nac_params_t *ps, nac_backend_t *be, const char *prefix,
                           const char *leaf, int ndim, const int64_t *dim, unsigned flags) {
    char name[sizeof(((nac_param_t *)0)->name)];
    int k = prefix && *prefix ? snprintf(name, sizeof name, "%s.%s", prefix, leaf)
                              : snprintf(name, sizeof name, "%s", leaf);
    if (k < 0 || (size_t)k >= sizeof name) {
        nac_error(NAC_ERR_INVALID, "parameter name %s.%s is too long", prefix ? prefix : "",
                  leaf);
        return NULL;
    }
    return nac_params_add(ps, be, name, ndim, dim, flags);
}

static int param_index(const nac_params_t *ps, const nac_param_t *p) {
    for (int i = 0; i < ps->n; i++)
        if (ps->items[i] == p) return i;
    NAC_ASSERT(!"parameter not in its list");
    return -1;
}

/* Draw every element on the host from the parameter's own counter-addressed stream
 * (element i from (key, i), so the values do not depend on the thread count), upload. */
static nac_status init_host(const nac_params_t *ps, nac_param_t *p, uint64_t seed, bool normal,
                            double scale) {
    int64_t n = nac_tensor_numel(&p->w);
    float *v = malloc((size_t)n * sizeof *v);
    if (!v) return nac_error(NAC_ERR_NOMEM, "initialising %s: out of memory", p->name);
    uint64_t key = nac_rng_key(seed, NAC_STREAM_INIT, (uint64_t)param_index(ps, p), 0);
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        v[i] = normal ? (float)(scale * nac_rng_normal_at(key, (uint64_t)i))
                      : (float)(scale * (2.0 * nac_rng_uniform_at(key, (uint64_t)i) - 1.0));
    nac_status s = nac_tensor_from_host(&p->w, v);
    free(v);
    if (s != NAC_OK) nac_error_prefix(s, "initialising %s: ", p->name);
    return s;
}

nac_status enc_init_normal(const nac_params_t *ps, nac_param_t *p, uint64_t seed, double std) {
    return init_host(ps, p, seed, true, std);
}

nac_status enc_init_uniform(const nac_params_t *ps, nac_param_t *p, uint64_t seed,
                            double bound) {
    return init_host(ps, p, seed, false, bound);
}

nac_status enc_init_normal_e(nac_encoder_t *e, nac_param_t *p, double std) {
    return e->cfg.skip_init ? NAC_OK : init_host(&e->params, p, e->cfg.seed, true, std);
}

nac_status enc_init_uniform_e(nac_encoder_t *e, nac_param_t *p, double bound) {
    return e->cfg.skip_init ? NAC_OK : init_host(&e->params, p, e->cfg.seed, false, bound);
}

/* ---- convolution + batch norm ---- */
static nac_bn_params bn_params(int groups, bool relu) {
    return (nac_bn_params){.eps = 1e-5f, .momentum = 0.1f, .groups = groups, .relu = relu};
}

nac_status enc_convbn_add(nac_encoder_t *e, enc_convbn *u, const char *conv_name,
                          const char *bn_name, int cin, int cout, int k, int stride, int pad,
                          bool bias, bool relu) {
    nac_params_t *ps = &e->params;
    nac_backend_t *be = e->be;
    int64_t wd[4] = {cout, cin, k, k}, c = cout;
    u->cp = (nac_conv_params){.stride = stride, .pad = pad};
    u->relu = relu;
    u->cin = cin;
    u->cout = cout;
    u->k = k;
    u->dc = &u->dc_own;
    u->w = enc_param_add(ps, be, conv_name, "weight", 4, wd, 0);
    if (!u->w) return NAC_ERR_INVALID;
    /* torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") */
    NAC_TRY(enc_init_normal_e(e, u->w, sqrt(2.0 / ((double)cout * k * k))));
    u->b = NULL;
    if (bias) {
        u->b = enc_param_add(ps, be, conv_name, "bias", 1, &c, NAC_PARAM_BIAS);
        if (!u->b) return NAC_ERR_INVALID; /* zero from nac_params_add: torchvision's init */
    }
    u->gamma = enc_param_add(ps, be, bn_name, "weight", 1, &c, NAC_PARAM_BN);
    u->beta = enc_param_add(ps, be, bn_name, "bias", 1, &c, NAC_PARAM_BN);
    u->mean = enc_param_add(ps, be, bn_name, "running_mean", 1, &c, NAC_PARAM_BUFFER);
    u->var = enc_param_add(ps, be, bn_name, "running_var", 1, &c, NAC_PARAM_BUFFER);
    if (!u->gamma || !u->beta || !u->mean || !u->var) return NAC_ERR_INVALID;
    NAC_TRY(nac_tensor_fill(&u->gamma->w, 1.0f));
    NAC_TRY(nac_tensor_fill(&u->var->w, 1.0f));
    return NAC_OK; /* beta and running_mean are zero from nac_params_add */
}

void enc_convbn_plan(enc_convbn *u, nac_backend_t *be, int64_t n, int64_t hin, int64_t win,
                     int groups, int64_t *hout, int64_t *wout) {
    int64_t ho = nac_conv_out_size(hin, u->k, u->cp.stride, u->cp.pad);
    int64_t wo = nac_conv_out_size(win, u->k, u->cp.stride, u->cp.pad);
    enc_t4(&u->c, be, n, u->cout, ho, wo);
    enc_t4(&u->y, be, n, u->cout, ho, wo);
    enc_t4(&u->dc_own, be, n, u->cout, ho, wo);
    enc_t2(&u->save_mean, be, groups, u->cout);
    enc_t2(&u->save_var, be, groups, u->cout);
    *hout = ho;
    *wout = wo;
}

void enc_convbn_release(enc_convbn *u) {
    nac_tensor_release(&u->c);
    nac_tensor_release(&u->y);
    nac_tensor_release(&u->dc_own);
    nac_tensor_release(&u->save_mean);
    nac_tensor_release(&u->save_var);
}

nac_status enc_convbn_conv(enc_convbn *u, const nac_tensor_t *x) {
    return nac_conv2d_forward(x, &u->w->w, u->b ? &u->b->w : NULL, &u->c, u->cp);
}

nac_status enc_convbn_norm(enc_convbn *u, bool train, int groups) {
    if (train)
        return nac_bn_forward_train(&u->c, &u->gamma->w, &u->beta->w, &u->y, &u->mean->w,
                                    &u->var->w, &u->save_mean, &u->save_var,
                                    bn_params(groups, u->relu));
    return nac_bn_forward_infer(&u->c, &u->gamma->w, &u->beta->w, &u->mean->w, &u->var->w,
                                &u->y, bn_params(1, u->relu));
}

nac_status enc_convbn_recompute(enc_convbn *u, nac_tensor_t *y, int groups) {
    return nac_bn_forward_saved(&u->c, &u->gamma->w, &u->beta->w, &u->save_mean, &u->save_var,
                                y, bn_params(groups, u->relu));
}

nac_status enc_convbn_norm_backward(enc_convbn *u, const nac_tensor_t *dy, nac_tensor_t *dc,
                                    int groups) {
    return nac_bn_backward(&u->c, &u->y, dy, &u->gamma->w, &u->save_mean, &u->save_var, dc,
                           &u->gamma->g, &u->beta->g, bn_params(groups, u->relu));
}

nac_status enc_convbn_conv_backward(enc_convbn *u, const nac_tensor_t *x,
                                    const nac_tensor_t *dc, nac_tensor_t *dx) {
    NAC_TRY(nac_conv2d_backward_weights(x, dc, &u->w->g, u->b ? &u->b->g : NULL, u->cp));
    if (dx) NAC_TRY(nac_conv2d_backward_data(dc, &u->w->w, dx, u->cp));
    return NAC_OK;
}

nac_status enc_convbn_forward(enc_convbn *u, const nac_tensor_t *x, bool train, int groups) {
    NAC_TRY(enc_convbn_conv(u, x));
    return enc_convbn_norm(u, train, groups);
}

nac_status enc_convbn_backward(enc_convbn *u, const nac_tensor_t *x, const nac_tensor_t *dy,
                               nac_tensor_t *dx, int groups) {
    NAC_TRY(enc_convbn_norm_backward(u, dy, u->dc, groups));
    return enc_convbn_conv_backward(u, x, u->dc, dx);
}
