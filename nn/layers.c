/* The layers tier (nn/layers.h): parameter creation and the one initialisation scheme,
 * the convolution, batch-norm, linear and conv+BN units, and buffer pools. */
#include "nn/layers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/rng.h"

void nac_t4(nac_tensor_t *t, nac_backend_t *be, int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t d[4] = {n, c, h, w};
    nac_tensor_init(t, be, 4, d);
}

void nac_t2(nac_tensor_t *t, nac_backend_t *be, int64_t rows, int64_t cols) {
    int64_t d[2] = {rows, cols};
    nac_tensor_init(t, be, 2, d);
}

/* ---- parameters and their initialisation ---- */
nac_param_t *nac_build_param(const nac_builder_t *b, const char *prefix, const char *leaf,
                             int ndim, const int64_t *dim, unsigned flags) {
    char name[sizeof(((nac_param_t *)0)->name)];
    int k = prefix && *prefix ? snprintf(name, sizeof name, "%s.%s", prefix, leaf)
                              : snprintf(name, sizeof name, "%s", leaf);
    if (k < 0 || (size_t)k >= sizeof name) {
        nac_error(NAC_ERR_INVALID, "parameter name %s.%s is too long", prefix ? prefix : "",
                  leaf);
        return NULL;
    }
    nac_param_t *p = nac_params_add(b->ps, b->be, name, ndim, dim, flags);
    if (p) p->group = b->group;
    return p;
}

static int param_index(const nac_params_t *ps, const nac_param_t *p) {
    for (int i = 0; i < ps->n; i++)
        if (ps->items[i] == p) return i;
    NAC_ASSERT(!"parameter not in its list");
    return -1;
}

/* Draw every element on the host from the parameter's own counter-addressed stream
 * (element i from (key, i), so the values do not depend on the thread count), upload. */
static nac_status init_host(const nac_builder_t *b, nac_param_t *p, bool normal, double scale) {
    if (b->skip_init) return NAC_OK;
    int64_t n = nac_tensor_numel(&p->w);
    float *v = malloc((size_t)n * sizeof *v);
    if (!v) return nac_error(NAC_ERR_NOMEM, "initialising %s: out of memory", p->name);
    uint64_t key = nac_rng_key(b->seed, NAC_STREAM_INIT, (uint64_t)param_index(b->ps, p), 0);
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        v[i] = normal ? (float)(scale * nac_rng_normal_at(key, (uint64_t)i))
                      : (float)(scale * (2.0 * nac_rng_uniform_at(key, (uint64_t)i) - 1.0));
    nac_status s = nac_tensor_from_host(&p->w, v);
    free(v);
    if (s != NAC_OK) nac_error_prefix(s, "initialising %s: ", p->name);
    return s;
}

nac_status nac_build_init_normal(const nac_builder_t *b, nac_param_t *p, double std) {
    return init_host(b, p, true, std);
}

nac_status nac_build_init_uniform(const nac_builder_t *b, nac_param_t *p, double bound) {
    return init_host(b, p, false, bound);
}

/* ---- convolution ---- */
nac_status nac_conv_unit_add(const nac_builder_t *b, nac_conv_unit *u, const char *name,
                             int cin, int cout, int k, int stride, int pad, bool bias) {
    int64_t wd[4] = {cout, cin, k, k}, c = cout;
    u->cp = (nac_conv_params){.stride = stride, .pad = pad};
    u->cin = cin;
    u->cout = cout;
    u->k = k;
    u->w = nac_build_param(b, name, "weight", 4, wd, 0);
    if (!u->w) return NAC_ERR_INVALID;
    double bound = 1.0 / sqrt((double)cin * k * k);
    if (b->conv_init == NAC_CONV_INIT_KAIMING_OUT) /* kaiming_normal_(fan_out, relu) */
        NAC_TRY(nac_build_init_normal(b, u->w, sqrt(2.0 / ((double)cout * k * k))));
    else /* kaiming_uniform_(a=sqrt(5)): bound sqrt(6 / ((1 + 5) fan_in)) */
        NAC_TRY(nac_build_init_uniform(b, u->w, bound));
    u->b = NULL;
    if (!bias) return NAC_OK;
    u->b = nac_build_param(b, name, "bias", 1, &c, NAC_PARAM_BIAS);
    if (!u->b) return NAC_ERR_INVALID;
    /* torchvision zeroes conv biases (nac_params_add did); nn.Conv2d draws them */
    return b->conv_init == NAC_CONV_INIT_KAIMING_OUT ? NAC_OK
                                                      : nac_build_init_uniform(b, u->b, bound);
}

nac_status nac_conv_unit_forward(const nac_conv_unit *u, const nac_tensor_t *x, nac_tensor_t *y) {
    return nac_conv2d_forward(x, &u->w->w, u->b ? &u->b->w : NULL, y, u->cp);
}

nac_status nac_conv_unit_backward(const nac_conv_unit *u, const nac_tensor_t *x,
                                  const nac_tensor_t *dy, nac_tensor_t *dx) {
    NAC_TRY(nac_conv2d_backward_weights(x, dy, &u->w->g, u->b ? &u->b->g : NULL, u->cp));
    if (dx) NAC_TRY(nac_conv2d_backward_data(dy, &u->w->w, dx, u->cp));
    return NAC_OK;
}

/* ---- batch norm ---- */
static nac_bn_params bn_params(int groups, bool relu) {
    return (nac_bn_params){.eps = 1e-5f, .momentum = 0.1f, .groups = groups, .relu = relu};
}

nac_status nac_bn_unit_add(const nac_builder_t *b, nac_bn_unit *u, const char *name, int c,
                           bool relu) {
    int64_t d = c;
    u->relu = relu;
    u->c = c;
    u->gamma = nac_build_param(b, name, "weight", 1, &d, NAC_PARAM_BN);
    u->beta = nac_build_param(b, name, "bias", 1, &d, NAC_PARAM_BN);
    u->mean = nac_build_param(b, name, "running_mean", 1, &d, NAC_PARAM_BUFFER);
    u->var = nac_build_param(b, name, "running_var", 1, &d, NAC_PARAM_BUFFER);
    if (!u->gamma || !u->beta || !u->mean || !u->var) return NAC_ERR_INVALID;
    u->sync = b->bn_sync;
    nac_bn_unit_plan(u, b->be, 1);
    NAC_TRY(nac_tensor_fill(&u->gamma->w, 1.0f));
    return nac_tensor_fill(&u->var->w, 1.0f); /* beta and running_mean: zero from add */
}

void nac_bn_unit_plan(nac_bn_unit *u, nac_backend_t *be, int groups) {
    nac_bn_unit_release(u);
    nac_t2(&u->save_mean, be, groups, u->c);
    nac_t2(&u->save_var, be, groups, u->c);
    nac_t2(&u->sums, be, 2 * (int64_t)groups, u->c);
}

void nac_bn_unit_release(nac_bn_unit *u) {
    nac_tensor_release(&u->save_mean);
    nac_tensor_release(&u->save_var);
    nac_tensor_release(&u->sums);
}

void nac_bn_sync_release(nac_bn_sync *s) {
    if (!s) return;
    free(s->host);
    s->host = NULL;
    s->host_n = 0;
}

static bool bn_synced(const nac_bn_unit *u) { return u->sync && u->sync->comm; }

/* The staging of n floats (grown once, on the first synchronised pass of a shape). */
static nac_status bn_sync_host(nac_bn_sync *s, int64_t n, float **out) {
    if (s->host_n < n) {
        float *h = realloc(s->host, (size_t)n * sizeof *h);
        if (!h) return nac_error(NAC_ERR_NOMEM, "synchronised batch norm: out of memory");
        s->host = h;
        s->host_n = n;
    }
    *out = s->host;
    return NAC_OK;
}

/* Values a channel's statistics see in one group, on all ranks together. */
static double bn_sync_count(const nac_bn_unit *u, const nac_tensor_t *x, int groups) {
    double hw = x->ndim == 4 ? (double)(x->dim[2] * x->dim[3]) : 1.0;
    return (double)(x->dim[0] / groups) * hw * (double)nac_comm_size(u->sync->comm);
}

/* Training forward with the global statistics: every rank's mean and biased variance of
 * each group (two passes over its rows), all-gathered and combined in rank order (equal
 * counts: the mean of the means, the mean of var_r + (mean_r - mean)^2; a sum of squares
 * minus the squared mean would cancel badly for channels of small variance), normalise x
 * and are folded into the running statistics group after group, as bn_fwd_train does. */
static nac_status bn_sync_forward(nac_bn_unit *u, const nac_tensor_t *x, nac_tensor_t *y,
                                  int groups) {
    nac_bn_params p = bn_params(groups, u->relu);
    int n = nac_comm_size(u->sync->comm);
    int64_t c = u->c, gc = groups * c;
    float *h = NULL;
    NAC_TRY(bn_sync_host(u->sync, (2 + 2 * (int64_t)n) * gc + 2 * c, &h));
    float *all = h + 2 * gc, *rm = all + 2 * gc * n, *rv = rm + c;
    NAC_TRY(nac_bn_stats(x, &u->save_mean, &u->save_var, p));
    NAC_TRY(nac_tensor_to_host(&u->save_mean, h));
    NAC_TRY(nac_tensor_to_host(&u->save_var, h + gc));
    NAC_TRY(nac_comm_allgather(u->sync->comm, h, 2 * gc, all));
    NAC_TRY(nac_tensor_to_host(&u->mean->w, rm));
    NAC_TRY(nac_tensor_to_host(&u->var->w, rv));
    double m = bn_sync_count(u, x, groups), unbias = m / (m - 1.0), mom = p.momentum;
    for (int64_t g = 0; g < groups; g++)
        for (int64_t j = 0; j < c; j++) {
            int64_t s = g * c + j;
            double mu = 0, v = 0;
            for (int r = 0; r < n; r++) mu += all[r * 2 * gc + s];
            mu /= n;
            for (int r = 0; r < n; r++) {
                double d = all[r * 2 * gc + s] - mu;
                v += all[r * 2 * gc + gc + s] + d * d;
            }
            h[s] = (float)mu;
            h[gc + s] = (float)(v / n);
            rm[j] = (float)((1.0 - mom) * rm[j] + mom * h[s]);
            rv[j] = (float)((1.0 - mom) * rv[j] + mom * h[gc + s] * unbias);
        }
    NAC_TRY(nac_tensor_from_host(&u->save_mean, h));
    NAC_TRY(nac_tensor_from_host(&u->save_var, h + gc));
    NAC_TRY(nac_tensor_from_host(&u->mean->w, rm));
    NAC_TRY(nac_tensor_from_host(&u->var->w, rv));
    return nac_bn_forward_saved(x, &u->gamma->w, &u->beta->w, &u->save_mean, &u->save_var, y, p);
}

/* Backward with the global reductions: gamma/beta gradients from the rank's own sums
 * (groups added in order, as bn_bwd does), dx from the sums over all ranks. */
static nac_status bn_sync_backward(nac_bn_unit *u, const nac_tensor_t *x, const nac_tensor_t *dy,
                                   nac_tensor_t *dx, int groups) {
    nac_bn_params p = bn_params(groups, u->relu);
    int64_t c = u->c, gc = groups * c;
    float *h = NULL;
    NAC_TRY(bn_sync_host(u->sync, 2 * gc + 2 * c, &h));
    float *dg = h + 2 * gc, *db = dg + c;
    NAC_TRY(nac_bn_backward_sums(x, dy, &u->gamma->w, &u->beta->w, &u->save_mean, &u->save_var,
                                 &u->sums, p));
    NAC_TRY(nac_tensor_to_host(&u->sums, h));
    for (int64_t j = 0; j < c; j++) {
        dg[j] = h[gc + j];
        db[j] = h[j];
        for (int64_t g = 1; g < groups; g++) {
            dg[j] += h[gc + g * c + j];
            db[j] += h[g * c + j];
        }
    }
    NAC_TRY(nac_tensor_from_host(&u->gamma->g, dg));
    NAC_TRY(nac_tensor_from_host(&u->beta->g, db));
    NAC_TRY(nac_comm_allreduce_sum(u->sync->comm, h, 2 * gc));
    double m = bn_sync_count(u, x, groups);
    for (int64_t i = 0; i < 2 * gc; i++) h[i] = (float)(h[i] / m);
    NAC_TRY(nac_tensor_from_host(&u->sums, h));
    return nac_bn_backward_given(x, dy, &u->gamma->w, &u->beta->w, &u->save_mean, &u->save_var,
                                 &u->sums, dx, p);
}

nac_status nac_bn_unit_forward(nac_bn_unit *u, const nac_tensor_t *x, nac_tensor_t *y,
                               bool train, int groups) {
    if (train && bn_synced(u)) return bn_sync_forward(u, x, y, groups);
    if (train)
        return nac_bn_forward_train(x, &u->gamma->w, &u->beta->w, y, &u->mean->w, &u->var->w,
                                    &u->save_mean, &u->save_var, bn_params(groups, u->relu));
    return nac_bn_forward_infer(x, &u->gamma->w, &u->beta->w, &u->mean->w, &u->var->w, y,
                                bn_params(1, u->relu));
}

nac_status nac_bn_unit_recompute(nac_bn_unit *u, const nac_tensor_t *x, nac_tensor_t *y,
                                 int groups) {
    return nac_bn_forward_saved(x, &u->gamma->w, &u->beta->w, &u->save_mean, &u->save_var, y,
                                bn_params(groups, u->relu));
}

nac_status nac_bn_unit_backward(nac_bn_unit *u, const nac_tensor_t *x, const nac_tensor_t *y,
                                const nac_tensor_t *dy, nac_tensor_t *dx, int groups) {
    if (bn_synced(u)) return bn_sync_backward(u, x, dy, dx, groups);
    return nac_bn_backward(x, y, dy, &u->gamma->w, &u->save_mean, &u->save_var, dx,
                           &u->gamma->g, &u->beta->g, bn_params(groups, u->relu));
}

/* ---- linear ---- */
nac_status nac_linear_unit_add(const nac_builder_t *b, nac_linear_unit *u, const char *name,
                               int in, int out, bool bias) {
    int64_t wd[2] = {out, in}, bd = out;
    u->in = in;
    u->out = out;
    u->w = nac_build_param(b, name, "weight", 2, wd, 0);
    if (!u->w) return NAC_ERR_INVALID;
    double bound = 1.0 / sqrt((double)in); /* PyTorch's nn.Linear default */
    NAC_TRY(nac_build_init_uniform(b, u->w, bound));
    u->b = NULL;
    if (!bias) return NAC_OK;
    u->b = nac_build_param(b, name, "bias", 1, &bd, NAC_PARAM_BIAS);
    if (!u->b) return NAC_ERR_INVALID;
    return nac_build_init_uniform(b, u->b, bound);
}

nac_status nac_linear_unit_forward(const nac_linear_unit *u, const nac_tensor_t *x,
                                   nac_tensor_t *y) {
    return nac_linear_forward(x, &u->w->w, u->b ? &u->b->w : NULL, y);
}

nac_status nac_linear_unit_backward(const nac_linear_unit *u, const nac_tensor_t *x,
                                    const nac_tensor_t *dy, nac_tensor_t *dx) {
    return nac_linear_backward(x, &u->w->w, dy, dx, &u->w->g, u->b ? &u->b->g : NULL);
}

/* ---- convolution + batch norm ---- */
nac_status nac_convbn_add(const nac_builder_t *b, nac_convbn *u, const char *conv_name,
                          const char *bn_name, int cin, int cout, int k, int stride, int pad,
                          bool bias, bool relu) {
    u->dc = &u->dc_own;
    NAC_TRY(nac_conv_unit_add(b, &u->conv, conv_name, cin, cout, k, stride, pad, bias));
    return nac_bn_unit_add(b, &u->bn, bn_name, cout, relu);
}

void nac_convbn_plan(nac_convbn *u, nac_backend_t *be, int64_t n, int64_t hin, int64_t win,
                     int groups, int64_t *hout, int64_t *wout) {
    const nac_conv_unit *cv = &u->conv;
    int64_t ho = nac_conv_out_size(hin, cv->k, cv->cp.stride, cv->cp.pad);
    int64_t wo = nac_conv_out_size(win, cv->k, cv->cp.stride, cv->cp.pad);
    nac_t4(&u->c, be, n, cv->cout, ho, wo);
    nac_t4(&u->y, be, n, cv->cout, ho, wo);
    nac_t4(&u->dc_own, be, n, cv->cout, ho, wo);
    nac_bn_unit_plan(&u->bn, be, groups);
    *hout = ho;
    *wout = wo;
}

void nac_convbn_release(nac_convbn *u) {
    nac_tensor_release(&u->c);
    nac_tensor_release(&u->y);
    nac_tensor_release(&u->dc_own);
    nac_bn_unit_release(&u->bn);
}

nac_status nac_convbn_conv(nac_convbn *u, const nac_tensor_t *x) {
    return nac_conv_unit_forward(&u->conv, x, &u->c);
}

nac_status nac_convbn_norm(nac_convbn *u, bool train, int groups) {
    return nac_bn_unit_forward(&u->bn, &u->c, &u->y, train, groups);
}

nac_status nac_convbn_recompute(nac_convbn *u, nac_tensor_t *y, int groups) {
    return nac_bn_unit_recompute(&u->bn, &u->c, y, groups);
}

nac_status nac_convbn_norm_backward(nac_convbn *u, const nac_tensor_t *dy, nac_tensor_t *dc,
                                    int groups) {
    return nac_bn_unit_backward(&u->bn, &u->c, &u->y, dy, dc, groups);
}

nac_status nac_convbn_conv_backward(nac_convbn *u, const nac_tensor_t *x,
                                    const nac_tensor_t *dc, nac_tensor_t *dx) {
    return nac_conv_unit_backward(&u->conv, x, dc, dx);
}

nac_status nac_convbn_forward(nac_convbn *u, const nac_tensor_t *x, bool train, int groups) {
    NAC_TRY(nac_convbn_conv(u, x));
    return nac_convbn_norm(u, train, groups);
}

nac_status nac_convbn_backward(nac_convbn *u, const nac_tensor_t *x, const nac_tensor_t *dy,
                               nac_tensor_t *dx, int groups) {
    NAC_TRY(nac_convbn_norm_backward(u, dy, u->dc, groups));
    return nac_convbn_conv_backward(u, x, u->dc, dx);
}

nac_status nac_convbn_norm_into(nac_convbn *u, nac_tensor_t *t, bool train, int groups) {
    NAC_TRY(nac_tensor_alloc_like(t, &u->c));
    NAC_TRY(nac_tensor_share(&u->y, t));
    return nac_convbn_norm(u, train, groups);
}

/* ---- buffer pools ---- */
nac_bufpool *nac_bufpools_get(nac_bufpools *ps, nac_backend_t *be, int64_t n, int64_t c, int64_t h,
                        int64_t w) {
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].n == n && ps->p[i].c == c && ps->p[i].h == h && ps->p[i].w == w)
            return &ps->p[i];
    NAC_ASSERT(ps->n < NAC_BUFPOOLS_MAX);
    nac_bufpool *p = &ps->p[ps->n++];
    p->n = n;
    p->c = c;
    p->h = h;
    p->w = w;
    p->busy = 0;
    for (int i = 0; i < NAC_BUFPOOL_MAX; i++) nac_t4(&p->t[i], be, n, c, h, w);
    return p;
}

nac_status nac_bufpool_take(nac_bufpool *p, nac_tensor_t **out) {
    for (int i = 0; i < NAC_BUFPOOL_MAX; i++)
        if (!(p->busy & 1u << i)) {
            nac_tensor_t *t = &p->t[i];
            /* a new buffer takes the layout of the pool's others, whichever op writes it
               first, so buffers can change roles without reorders */
            for (int j = 0; !t->impl && j < NAC_BUFPOOL_MAX; j++)
                if (p->t[j].impl) NAC_TRY(nac_tensor_alloc_like(t, &p->t[j]));
            p->busy |= 1u << i;
            *out = t;
            return NAC_OK;
        }
    /* a network holds at most a handful of one shape at a time: a broken contract */
    NAC_ASSERT(!"buffer pool exhausted: more than NAC_BUFPOOL_MAX buffers in use");
    return NAC_ERR_INVALID;
}

void nac_bufpool_give(nac_bufpool *p, const nac_tensor_t *t) {
    ptrdiff_t i = t - p->t;
    NAC_ASSERT(i >= 0 && i < NAC_BUFPOOL_MAX && (p->busy & 1u << i));
    p->busy &= ~(1u << i);
}

void nac_bufpools_reset(nac_bufpools *ps) {
    for (int i = 0; i < ps->n; i++) ps->p[i].busy = 0;
}

void nac_bufpools_release(nac_bufpools *ps) {
    for (int i = 0; i < ps->n; i++)
        for (int j = 0; j < NAC_BUFPOOL_MAX; j++) nac_tensor_release(&ps->p[i].t[j]);
    ps->n = 0;
}

int nac_bufpool_allocated(const nac_bufpool *p) {
    int k = 0;
    for (int j = 0; j < NAC_BUFPOOL_MAX; j++) k += p->t[j].impl != NULL;
    return k;
}
