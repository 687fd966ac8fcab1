/* Validating public wrappers over the backend table: every op checks NULLs, backends,
 * ranks and shapes and names the op and the shapes in its message, then dispatches. */
#include "backend/backend.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- backends ---- */
nac_status nac_backend_create(const char *name, const nac_backend_options *opt,
                              nac_backend_t **out) {
    if (!name || !out) return nac_error(NAC_ERR_INVALID, "nac_backend_create: NULL argument");
    *out = NULL;
    if (strcmp(name, "cpu") == 0) return nac_backend_cpu_create(opt, out);
#ifdef NAC_HAVE_CUDA
    if (strcmp(name, "cuda") == 0) return nac_backend_cuda_create(opt, out);
    return nac_error(NAC_ERR_INVALID, "unknown backend \"%s\" (known: cpu, cuda)", name);
#else
    if (strcmp(name, "cuda") == 0)
        return nac_error(NAC_ERR_INVALID,
                         "backend \"cuda\" is not built into this binary (CPU build: use \"cpu\")");
    return nac_error(NAC_ERR_INVALID, "unknown backend \"%s\" (known: cpu)", name);
#endif
}

nac_status nac_backend_check(const char *name) {
    if (!name) return nac_error(NAC_ERR_INVALID, "nac_backend_check: NULL argument");
    if (strcmp(name, "cpu") == 0) return NAC_OK;
#ifdef NAC_HAVE_CUDA
    if (strcmp(name, "cuda") == 0) return nac_backend_cuda_check();
#endif
    nac_backend_t *none = NULL; /* the unknown and not-built messages of nac_backend_create */
    return nac_backend_create(name, NULL, &none);
}

void nac_backend_free(nac_backend_t *be) {
    if (be && be->iface->free) be->iface->free(be);
}

const char *nac_backend_name(const nac_backend_t *be) { return be ? be->iface->name : "(null)"; }

nac_backend_memory nac_backend_memory_stats(nac_backend_t *be) {
    nac_backend_memory m = {0};
    if (be && be->iface->memory) be->iface->memory(be, &m, false);
    return m;
}

double nac_backend_flops(nac_backend_t *be) {
    return be && be->iface->flops ? be->iface->flops(be) : 0.0;
}

void nac_backend_memory_reset_peak(nac_backend_t *be) {
    if (be && be->iface->memory) be->iface->memory(be, NULL, true);
}

nac_status nac_backend_synchronize(nac_backend_t *be) {
    if (!be) return nac_error(NAC_ERR_INVALID, "nac_backend_synchronize: NULL backend");
    return be->iface->synchronize ? be->iface->synchronize(be) : NAC_OK;
}

/* ---- tensors ---- */
void nac_tensor_init(nac_tensor_t *t, nac_backend_t *be, int ndim, const int64_t *dim) {
    NAC_ASSERT(t && ndim >= 1 && ndim <= NAC_MAX_DIMS);
    memset(t, 0, sizeof *t);
    t->be = be;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->dim[i] = dim[i];
}

nac_tensor_t *nac_tensor_new(nac_backend_t *be, int ndim, const int64_t *dim) {
    if (ndim < 1 || ndim > NAC_MAX_DIMS) return NULL;
    nac_tensor_t *t = calloc(1, sizeof *t);
    if (t) nac_tensor_init(t, be, ndim, dim);
    return t;
}

nac_tensor_t *nac_tensor_new4(nac_backend_t *be, int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t d[4] = {n, c, h, w};
    return nac_tensor_new(be, 4, d);
}
nac_tensor_t *nac_tensor_new2(nac_backend_t *be, int64_t rows, int64_t cols) {
    int64_t d[2] = {rows, cols};
    return nac_tensor_new(be, 2, d);
}
nac_tensor_t *nac_tensor_new1(nac_backend_t *be, int64_t n) { return nac_tensor_new(be, 1, &n); }

void nac_tensor_release(nac_tensor_t *t) {
    if (t && t->impl && t->be) t->be->iface->tensor_release(t->be, t);
    if (t) t->impl = NULL;
}

void nac_tensor_free(nac_tensor_t *t) {
    if (!t) return;
    nac_tensor_release(t);
    free(t);
}

int64_t nac_tensor_numel(const nac_tensor_t *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->dim[i];
    return n;
}

bool nac_tensor_same_shape(const nac_tensor_t *a, const nac_tensor_t *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->dim[i] != b->dim[i]) return false;
    return true;
}

const char *nac_tensor_shape_str(const nac_tensor_t *t, char *buf, size_t n) {
    if (!t) {
        snprintf(buf, n, "NULL");
        return buf;
    }
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ",%" PRId64 : "%" PRId64, t->dim[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

/* A slot a backend leaves NULL is an op it does not implement: say so instead of crashing.
 * DISPATCH evaluates `be` more than once; callers pass a plain tensor's backend. */
static nac_status unsupported(const nac_backend_t *be, const char *op) {
    return nac_error(NAC_ERR_BACKEND, "op %s is not supported by backend %s", op,
                     nac_backend_name(be));
}
#define DISPATCH(be, slot, ...) \
    ((be)->iface->slot ? (be)->iface->slot((be), __VA_ARGS__) : unsupported((be), #slot))

/* Validation helpers: each returns a status naming the op and the offending tensor. */
#define SHAPE(t) nac_tensor_shape_str((t), (char[64]){0}, 64)

static nac_status check_tensor(const char *op, const char *arg, const nac_tensor_t *t) {
    if (!t) return nac_error(NAC_ERR_INVALID, "%s: %s is NULL", op, arg);
    if (!t->be) return nac_error(NAC_ERR_INVALID, "%s: %s has no backend", op, arg);
    if (t->ndim < 1 || t->ndim > NAC_MAX_DIMS)
        return nac_error(NAC_ERR_INVALID, "%s: %s has rank %d", op, arg, t->ndim);
    for (int i = 0; i < t->ndim; i++)
        if (t->dim[i] <= 0)
            return nac_error(NAC_ERR_INVALID, "%s: %s has shape %s with a non-positive dimension",
                             op, arg, SHAPE(t));
    return NAC_OK;
}

static nac_status check_rank(const char *op, const char *arg, const nac_tensor_t *t, int ndim) {
    NAC_TRY(check_tensor(op, arg, t));
    if (t->ndim != ndim)
        return nac_error(NAC_ERR_INVALID, "%s: %s must be %d-D, got %s", op, arg, ndim, SHAPE(t));
    return NAC_OK;
}

static nac_status check_same_be(const char *op, const nac_tensor_t *a, const nac_tensor_t *b) {
    if (b && a->be != b->be)
        return nac_error(NAC_ERR_INVALID, "%s: tensors live on different backends (%s, %s)", op,
                         nac_backend_name(a->be), nac_backend_name(b->be));
    return NAC_OK;
}

static nac_status check_shape(const char *op, const char *arg, const nac_tensor_t *t, int ndim,
                              const int64_t *want) {
    NAC_TRY(check_tensor(op, arg, t));
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->dim[i] == want[i];
    if (!ok) {
        nac_tensor_t w;
        nac_tensor_init(&w, t->be, ndim, want);
        return nac_error(NAC_ERR_INVALID, "%s: %s must have shape %s, got %s", op, arg,
                         SHAPE(&w), SHAPE(t));
    }
    return NAC_OK;
}

static nac_status check_like(const char *op, const char *arg, const nac_tensor_t *t,
                             const nac_tensor_t *ref) {
    NAC_TRY(check_shape(op, arg, t, ref->ndim, ref->dim));
    return check_same_be(op, ref, t);
}

static nac_status check_written(const char *op, const char *arg, const nac_tensor_t *t) {
    if (!t->impl)
        return nac_error(NAC_ERR_INVALID, "%s: input %s %s was never written", op, arg, SHAPE(t));
    return NAC_OK;
}

#define IN(op, name, t) \
    do { NAC_TRY(check_tensor(op, name, t)); NAC_TRY(check_written(op, name, t)); } while (0)

nac_status nac_tensor_alloc(nac_tensor_t *t) {
    NAC_TRY(check_tensor("nac_tensor_alloc", "t", t));
    if (t->impl) return NAC_OK;
    return DISPATCH(t->be, tensor_alloc, t);
}

nac_status nac_tensor_alloc_like(nac_tensor_t *t, const nac_tensor_t *like) {
    const char *op = "nac_tensor_alloc_like";
    NAC_TRY(check_tensor(op, "t", t));
    IN(op, "like", like);
    NAC_TRY(check_like(op, "t", t, like));
    if (t->impl) return NAC_OK;
    return DISPATCH(t->be, tensor_alloc_like, t, like);
}

nac_status nac_tensor_share(nac_tensor_t *t, const nac_tensor_t *owner) {
    const char *op = "nac_tensor_share";
    NAC_TRY(check_tensor(op, "t", t));
    IN(op, "owner", owner);
    NAC_TRY(check_like(op, "t", t, owner));
    if (t == owner) return nac_error(NAC_ERR_INVALID, "%s: a tensor cannot view itself", op);
    return DISPATCH(t->be, tensor_share, t, owner);
}

void *nac_tensor_device_ptr(const nac_tensor_t *t) {
    if (!t || !t->be || !t->impl || !t->be->iface->device_ptr) return NULL;
    return t->be->iface->device_ptr(t);
}

nac_status nac_tensor_to_host(const nac_tensor_t *t, float *dst) {
    NAC_TRY(check_tensor("nac_tensor_to_host", "t", t));
    if (!dst) return nac_error(NAC_ERR_INVALID, "nac_tensor_to_host: dst is NULL");
    if (!t->impl)
        return nac_error(NAC_ERR_INVALID, "nac_tensor_to_host: tensor %s was never written",
                         SHAPE(t));
    return DISPATCH(t->be, to_host, t, dst);
}

nac_status nac_tensor_from_host(nac_tensor_t *t, const float *src) {
    NAC_TRY(check_tensor("nac_tensor_from_host", "t", t));
    if (!src) return nac_error(NAC_ERR_INVALID, "nac_tensor_from_host: src is NULL");
    return DISPATCH(t->be, from_host, t, src);
}

nac_status nac_tensor_copy(const nac_tensor_t *src, nac_tensor_t *dst) {
    const char *op = "nac_tensor_copy";
    IN(op, "src", src);
    NAC_TRY(check_like(op, "dst", dst, src));
    if (src == dst) return NAC_OK;
    return DISPATCH(src->be, copy, src, dst);
}

nac_status nac_tensor_fill(nac_tensor_t *t, float value) {
    NAC_TRY(check_tensor("nac_tensor_fill", "t", t));
    return DISPATCH(t->be, fill, t, value);
}

nac_status nac_tensor_rand(nac_tensor_t *t, nac_rand kind, float param, uint64_t key) {
    NAC_TRY(check_tensor("nac_tensor_rand", "t", t));
    if (kind == NAC_RAND_SIGN && !(param >= 0.0f && param <= 1.0f))
        return nac_error(NAC_ERR_INVALID, "nac_tensor_rand: flip probability %g outside [0, 1]",
                         (double)param);
    return DISPATCH(t->be, rand, t, kind, param, key);
}

nac_status nac_copy_rows(const nac_tensor_t *src, int64_t src_row, nac_tensor_t *dst,
                         int64_t dst_row, int64_t nrows) {
    const char *op = "nac_copy_rows";
    IN(op, "src", src);
    NAC_TRY(check_tensor(op, "dst", dst));
    NAC_TRY(check_same_be(op, src, dst));
    bool ok = src->ndim == dst->ndim;
    for (int i = 1; ok && i < src->ndim; i++) ok = src->dim[i] == dst->dim[i];
    if (!ok)
        return nac_error(NAC_ERR_INVALID, "%s: src %s and dst %s differ beyond the first axis",
                         op, SHAPE(src), SHAPE(dst));
    if (nrows < 0 || src_row < 0 || dst_row < 0 || src_row + nrows > src->dim[0] ||
        dst_row + nrows > dst->dim[0])
        return nac_error(NAC_ERR_INVALID,
                         "%s: rows [%" PRId64 ", +%" PRId64 ") of %s into row %" PRId64
                         " of %s are out of range",
                         op, src_row, nrows, SHAPE(src), dst_row, SHAPE(dst));
    if (nrows == 0) return NAC_OK;
    return DISPATCH(src->be, copy_rows, src, src_row, dst, dst_row, nrows);
}

nac_status nac_reshape(const nac_tensor_t *src, nac_tensor_t *dst) {
    const char *op = "nac_reshape";
    IN(op, "src", src);
    NAC_TRY(check_tensor(op, "dst", dst));
    NAC_TRY(check_same_be(op, src, dst));
    if (nac_tensor_numel(src) != nac_tensor_numel(dst))
        return nac_error(NAC_ERR_INVALID, "%s: %s and %s hold different numbers of elements",
                         op, SHAPE(src), SHAPE(dst));
    return DISPATCH(src->be, reshape, src, dst);
}

/* ---- convolution ---- */
int64_t nac_conv_out_size(int64_t in, int kernel, int stride, int pad) {
    if (stride <= 0) return -1;
    int64_t span = in + 2 * (int64_t)pad - kernel;
    return span < 0 ? -1 : span / stride + 1;
}

static nac_status check_conv(const char *op, const nac_tensor_t *x, const nac_tensor_t *w,
                             const nac_tensor_t *y, const nac_conv_params *p) {
    NAC_TRY(check_rank(op, "x", x, 4));
    NAC_TRY(check_rank(op, "w", w, 4));
    NAC_TRY(check_rank(op, "y", y, 4));
    NAC_TRY(check_same_be(op, x, w));
    NAC_TRY(check_same_be(op, x, y));
    if (p->stride < 1 || p->pad < 0)
        return nac_error(NAC_ERR_INVALID, "%s: stride %d / padding %d invalid", op, p->stride,
                         p->pad);
    if (w->dim[1] != x->dim[1] || w->dim[2] != w->dim[3])
        return nac_error(NAC_ERR_INVALID, "%s: weight %s does not fit input %s", op, SHAPE(w),
                         SHAPE(x));
    int64_t oh = nac_conv_out_size(x->dim[2], (int)w->dim[2], p->stride, p->pad);
    int64_t ow = nac_conv_out_size(x->dim[3], (int)w->dim[3], p->stride, p->pad);
    if (oh < 1 || ow < 1 || y->dim[0] != x->dim[0] || y->dim[1] != w->dim[0] ||
        y->dim[2] != oh || y->dim[3] != ow)
        return nac_error(NAC_ERR_INVALID,
                         "%s: input %s, weight %s, stride %d, padding %d give (%" PRId64
                         ",%" PRId64 ",%" PRId64 ",%" PRId64 "), not %s",
                         op, SHAPE(x), SHAPE(w), p->stride, p->pad, x->dim[0], w->dim[0], oh, ow,
                         SHAPE(y));
    return NAC_OK;
}

nac_status nac_conv2d_forward(const nac_tensor_t *x, const nac_tensor_t *w,
                              const nac_tensor_t *b, nac_tensor_t *y, nac_conv_params p) {
    const char *op = "nac_conv2d_forward";
    NAC_TRY(check_conv(op, x, w, y, &p));
    IN(op, "x", x);
    IN(op, "w", w);
    if (b) {
        int64_t o = w->dim[0];
        NAC_TRY(check_shape(op, "b", b, 1, &o));
        NAC_TRY(check_same_be(op, x, b));
        IN(op, "b", b);
    }
    return DISPATCH(x->be, conv_fwd, x, w, b, y, &p);
}

nac_status nac_conv2d_backward_data(const nac_tensor_t *dy, const nac_tensor_t *w,
                                    nac_tensor_t *dx, nac_conv_params p) {
    const char *op = "nac_conv2d_backward_data";
    NAC_TRY(check_conv(op, dx, w, dy, &p));
    IN(op, "dy", dy);
    IN(op, "w", w);
    return DISPATCH(dy->be, conv_bwd_data, dy, w, dx, &p);
}

nac_status nac_conv2d_backward_weights(const nac_tensor_t *x, const nac_tensor_t *dy,
                                       nac_tensor_t *dw, nac_tensor_t *db, nac_conv_params p) {
    const char *op = "nac_conv2d_backward_weights";
    NAC_TRY(check_conv(op, x, dw, dy, &p));
    IN(op, "x", x);
    IN(op, "dy", dy);
    if (db) {
        int64_t o = dw->dim[0];
        NAC_TRY(check_shape(op, "db", db, 1, &o));
        NAC_TRY(check_same_be(op, x, db));
    }
    return DISPATCH(x->be, conv_bwd_weights, x, dy, dw, db, &p);
}

/* ---- batch norm ---- */
static nac_status check_bn(const char *op, const nac_tensor_t *x, const nac_bn_params *p,
                           int nvec, const nac_tensor_t *const *vecs, const char *const *names) {
    NAC_TRY(check_tensor(op, "x", x));
    if (x->ndim != 4 && x->ndim != 2)
        return nac_error(NAC_ERR_INVALID, "%s: x must be (N,C,H,W) or (N,C), got %s", op,
                         SHAPE(x));
    if (p->groups < 1 || x->dim[0] % p->groups != 0)
        return nac_error(NAC_ERR_INVALID, "%s: batch %s does not split into %d groups", op,
                         SHAPE(x), p->groups);
    if (!(p->eps > 0.0f) || p->momentum < 0.0f || p->momentum > 1.0f)
        return nac_error(NAC_ERR_INVALID, "%s: eps %g / momentum %g out of range", op,
                         (double)p->eps, (double)p->momentum);
    int64_t c = x->dim[1];
    for (int i = 0; i < nvec; i++) {
        NAC_TRY(check_shape(op, names[i], vecs[i], 1, &c));
        NAC_TRY(check_same_be(op, x, vecs[i]));
    }
    return NAC_OK;
}

nac_status nac_bn_forward_train(const nac_tensor_t *x, const nac_tensor_t *gamma,
                                const nac_tensor_t *beta, nac_tensor_t *y,
                                nac_tensor_t *running_mean, nac_tensor_t *running_var,
                                nac_tensor_t *save_mean, nac_tensor_t *save_var,
                                nac_bn_params p) {
    const char *op = "nac_bn_forward_train";
    const nac_tensor_t *v[] = {gamma, beta, running_mean, running_var};
    const char *n[] = {"gamma", "beta", "running_mean", "running_var"};
    NAC_TRY(check_bn(op, x, &p, 4, v, n));
    IN(op, "x", x);
    IN(op, "gamma", gamma);
    IN(op, "beta", beta);
    IN(op, "running_mean", running_mean);
    IN(op, "running_var", running_var);
    NAC_TRY(check_like(op, "y", y, x));
    int64_t s[2] = {p.groups, x->dim[1]};
    NAC_TRY(check_shape(op, "save_mean", save_mean, 2, s));
    NAC_TRY(check_shape(op, "save_var", save_var, 2, s));
    int64_t per = x->dim[0] / p.groups * (x->ndim == 4 ? x->dim[2] * x->dim[3] : 1);
    if (per < 2)
        return nac_error(NAC_ERR_INVALID,
                         "%s: %s in %d groups leaves one value per channel and group; "
                         "training-mode batch norm needs at least two",
                         op, SHAPE(x), p.groups);
    return DISPATCH(x->be, bn_fwd_train, x, gamma, beta, y, running_mean, running_var,
                                      save_mean, save_var, &p);
}

nac_status nac_bn_forward_infer(const nac_tensor_t *x, const nac_tensor_t *gamma,
                                const nac_tensor_t *beta, const nac_tensor_t *running_mean,
                                const nac_tensor_t *running_var, nac_tensor_t *y,
                                nac_bn_params p) {
    const char *op = "nac_bn_forward_infer";
    const nac_tensor_t *v[] = {gamma, beta, running_mean, running_var};
    const char *n[] = {"gamma", "beta", "running_mean", "running_var"};
    p.groups = 1;
    NAC_TRY(check_bn(op, x, &p, 4, v, n));
    IN(op, "x", x);
    NAC_TRY(check_like(op, "y", y, x));
    return DISPATCH(x->be, bn_fwd_infer, x, gamma, beta, running_mean, running_var, y, &p);
}

nac_status nac_bn_forward_saved(const nac_tensor_t *x, const nac_tensor_t *gamma,
                                const nac_tensor_t *beta, const nac_tensor_t *save_mean,
                                const nac_tensor_t *save_var, nac_tensor_t *y,
                                nac_bn_params p) {
    const char *op = "nac_bn_forward_saved";
    const nac_tensor_t *v[] = {gamma, beta};
    const char *n[] = {"gamma", "beta"};
    NAC_TRY(check_bn(op, x, &p, 2, v, n));
    IN(op, "x", x);
    IN(op, "gamma", gamma);
    IN(op, "beta", beta);
    IN(op, "save_mean", save_mean);
    IN(op, "save_var", save_var);
    NAC_TRY(check_like(op, "y", y, x));
    if (y == x) return nac_error(NAC_ERR_INVALID, "%s: y must not be x", op);
    int64_t s[2] = {p.groups, x->dim[1]};
    NAC_TRY(check_shape(op, "save_mean", save_mean, 2, s));
    NAC_TRY(check_shape(op, "save_var", save_var, 2, s));
    return DISPATCH(x->be, bn_fwd_saved, x, gamma, beta, save_mean, save_var, y, &p);
}

nac_status nac_bn_backward(const nac_tensor_t *x, const nac_tensor_t *y,
                           const nac_tensor_t *dy, const nac_tensor_t *gamma,
                           const nac_tensor_t *save_mean, const nac_tensor_t *save_var,
                           nac_tensor_t *dx, nac_tensor_t *dgamma, nac_tensor_t *dbeta,
                           nac_bn_params p) {
    const char *op = "nac_bn_backward";
    const nac_tensor_t *v[] = {gamma, dgamma, dbeta};
    const char *n[] = {"gamma", "dgamma", "dbeta"};
    NAC_TRY(check_bn(op, x, &p, 3, v, n));
    IN(op, "x", x);
    IN(op, "y", y);
    IN(op, "dy", dy);
    NAC_TRY(check_like(op, "y", y, x));
    NAC_TRY(check_like(op, "dy", dy, x));
    NAC_TRY(check_like(op, "dx", dx, x));
    int64_t s[2] = {p.groups, x->dim[1]};
    NAC_TRY(check_shape(op, "save_mean", save_mean, 2, s));
    NAC_TRY(check_shape(op, "save_var", save_var, 2, s));
    return DISPATCH(x->be, bn_bwd, x, y, dy, gamma, save_mean, save_var, dx, dgamma, dbeta,
                                &p);
}

/* The common checks of the synchronised backward: x, dy, gamma, beta, the (groups, C)
 * statistics and a (2 groups, C) tensor `two` (an input if two_in). */
static nac_status check_bn_sync(const char *op, const nac_tensor_t *x, const nac_tensor_t *dy,
                                const nac_tensor_t *gamma, const nac_tensor_t *beta,
                                const nac_tensor_t *mean, const nac_tensor_t *var,
                                const char *two_name, const nac_tensor_t *two, bool two_in,
                                const nac_bn_params *p) {
    const nac_tensor_t *v[] = {gamma, beta};
    const char *n[] = {"gamma", "beta"};
    NAC_TRY(check_bn(op, x, p, 2, v, n));
    IN(op, "x", x);
    IN(op, "dy", dy);
    NAC_TRY(check_like(op, "dy", dy, x));
    int64_t s[2] = {p->groups, x->dim[1]}, s2[2] = {2 * (int64_t)p->groups, x->dim[1]};
    IN(op, "gamma", gamma);
    IN(op, "beta", beta);
    IN(op, "mean", mean);
    IN(op, "var", var);
    NAC_TRY(check_shape(op, "mean", mean, 2, s));
    NAC_TRY(check_shape(op, "var", var, 2, s));
    NAC_TRY(check_same_be(op, x, mean));
    NAC_TRY(check_same_be(op, x, var));
    if (two_in) IN(op, two_name, two);
    NAC_TRY(check_shape(op, two_name, two, 2, s2));
    return check_same_be(op, x, two);
}

nac_status nac_bn_stats(const nac_tensor_t *x, nac_tensor_t *mean, nac_tensor_t *var,
                        nac_bn_params p) {
    const char *op = "nac_bn_stats";
    NAC_TRY(check_bn(op, x, &p, 0, NULL, NULL));
    IN(op, "x", x);
    int64_t s[2] = {p.groups, x->dim[1]};
    NAC_TRY(check_shape(op, "mean", mean, 2, s));
    NAC_TRY(check_shape(op, "var", var, 2, s));
    NAC_TRY(check_same_be(op, x, mean));
    NAC_TRY(check_same_be(op, x, var));
    return DISPATCH(x->be, bn_stats, x, mean, var, &p);
}

nac_status nac_bn_backward_sums(const nac_tensor_t *x, const nac_tensor_t *dy,
                                const nac_tensor_t *gamma, const nac_tensor_t *beta,
                                const nac_tensor_t *mean, const nac_tensor_t *var,
                                nac_tensor_t *sums, nac_bn_params p) {
    const char *op = "nac_bn_backward_sums";
    NAC_TRY(check_bn_sync(op, x, dy, gamma, beta, mean, var, "sums", sums, false, &p));
    return DISPATCH(x->be, bn_bwd_sums, x, dy, gamma, beta, mean, var, sums, &p);
}

nac_status nac_bn_backward_given(const nac_tensor_t *x, const nac_tensor_t *dy,
                                 const nac_tensor_t *gamma, const nac_tensor_t *beta,
                                 const nac_tensor_t *mean, const nac_tensor_t *var,
                                 const nac_tensor_t *dmeans, nac_tensor_t *dx, nac_bn_params p) {
    const char *op = "nac_bn_backward_given";
    NAC_TRY(check_bn_sync(op, x, dy, gamma, beta, mean, var, "dmeans", dmeans, true, &p));
    NAC_TRY(check_like(op, "dx", dx, x));
    if (dx == x) return nac_error(NAC_ERR_INVALID, "%s: dx must not be x", op);
    return DISPATCH(x->be, bn_bwd_given, x, dy, gamma, beta, mean, var, dmeans, dx, &p);
}

/* ---- pooling ---- */
static nac_status check_pool(const char *op, const nac_tensor_t *x, const nac_tensor_t *y,
                             const nac_pool_params *p) {
    NAC_TRY(check_rank(op, "x", x, 4));
    NAC_TRY(check_rank(op, "y", y, 4));
    NAC_TRY(check_same_be(op, x, y));
    if (p->kernel < 1 || p->stride < 1 || p->pad < 0 || p->pad * 2 > p->kernel)
        return nac_error(NAC_ERR_INVALID, "%s: kernel %d, stride %d, padding %d invalid", op,
                         p->kernel, p->stride, p->pad);
    int64_t oh = nac_conv_out_size(x->dim[2], p->kernel, p->stride, p->pad);
    int64_t ow = nac_conv_out_size(x->dim[3], p->kernel, p->stride, p->pad);
    if (oh < 1 || ow < 1 || y->dim[0] != x->dim[0] || y->dim[1] != x->dim[1] ||
        y->dim[2] != oh || y->dim[3] != ow)
        return nac_error(NAC_ERR_INVALID,
                         "%s: input %s with kernel %d, stride %d, padding %d does not give %s",
                         op, SHAPE(x), p->kernel, p->stride, p->pad, SHAPE(y));
    return NAC_OK;
}

nac_status nac_pool_forward(const nac_tensor_t *x, nac_tensor_t *y, nac_pool_params p) {
    const char *op = "nac_pool_forward";
    NAC_TRY(check_pool(op, x, y, &p));
    IN(op, "x", x);
    return DISPATCH(x->be, pool_fwd, x, y, &p);
}

nac_status nac_pool_backward(const nac_tensor_t *x, const nac_tensor_t *y,
                             const nac_tensor_t *dy, nac_tensor_t *dx, nac_pool_params p) {
    const char *op = "nac_pool_backward";
    NAC_TRY(check_pool(op, x, y, &p));
    IN(op, "x", x);
    IN(op, "y", y);
    IN(op, "dy", dy);
    NAC_TRY(check_like(op, "dy", dy, y));
    NAC_TRY(check_like(op, "dx", dx, x));
    return DISPATCH(x->be, pool_bwd, x, y, dy, dx, &p);
}

static nac_status check_gap(const char *op, const nac_tensor_t *x, const nac_tensor_t *y) {
    NAC_TRY(check_rank(op, "x", x, 4));
    int64_t s[2] = {x->dim[0], x->dim[1]};
    NAC_TRY(check_shape(op, "y", y, 2, s));
    return check_same_be(op, x, y);
}

nac_status nac_gap_forward(const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(check_gap("nac_gap_forward", x, y));
    IN("nac_gap_forward", "x", x);
    return DISPATCH(x->be, gap_fwd, x, y);
}

nac_status nac_gap_backward(const nac_tensor_t *dy, nac_tensor_t *dx) {
    NAC_TRY(check_gap("nac_gap_backward", dx, dy));
    IN("nac_gap_backward", "dy", dy);
    return DISPATCH(dy->be, gap_bwd, dy, dx);
}

static nac_status check_upsample(const char *op, const nac_tensor_t *x, const nac_tensor_t *y) {
    NAC_TRY(check_rank(op, "x", x, 4));
    NAC_TRY(check_rank(op, "y", y, 4));
    NAC_TRY(check_same_be(op, x, y));
    if (y->dim[0] != x->dim[0] || y->dim[1] != x->dim[1] || y->dim[2] % x->dim[2] ||
        y->dim[3] % x->dim[3] || y->dim[2] / x->dim[2] != y->dim[3] / x->dim[3])
        return nac_error(NAC_ERR_INVALID, "%s: %s is not an integer upsampling of %s", op,
                         SHAPE(y), SHAPE(x));
    return NAC_OK;
}

nac_status nac_upsample_forward(const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(check_upsample("nac_upsample_forward", x, y));
    IN("nac_upsample_forward", "x", x);
    return DISPATCH(x->be, upsample_fwd, x, y);
}

nac_status nac_upsample_backward(const nac_tensor_t *dy, nac_tensor_t *dx) {
    NAC_TRY(check_upsample("nac_upsample_backward", dx, dy));
    IN("nac_upsample_backward", "dy", dy);
    return DISPATCH(dy->be, upsample_bwd, dy, dx);
}

/* ---- element-wise ---- */
nac_status nac_act_forward(nac_act kind, const nac_tensor_t *x, nac_tensor_t *y, float alpha,
                           float beta) {
    const char *op = "nac_act_forward";
    IN(op, "x", x);
    NAC_TRY(check_like(op, "y", y, x));
    if (kind < NAC_ACT_RELU || kind > NAC_ACT_LINEAR)
        return nac_error(NAC_ERR_INVALID, "%s: unknown activation %d", op, (int)kind);
    return DISPATCH(x->be, act_fwd, kind, x, y, alpha, beta);
}

nac_status nac_act_backward(nac_act kind, const nac_tensor_t *x, const nac_tensor_t *y,
                            const nac_tensor_t *dy, nac_tensor_t *dx, float alpha, float beta) {
    const char *op = "nac_act_backward";
    IN(op, "dy", dy);
    bool needs_y = kind == NAC_ACT_TANH || kind == NAC_ACT_SIGMOID || kind == NAC_ACT_EXP ||
                   kind == NAC_ACT_SQRT;
    const nac_tensor_t *need = needs_y ? y : x;
    if (!need)
        return nac_error(NAC_ERR_INVALID, "%s: activation %d needs %s", op, (int)kind,
                         needs_y ? "its output y" : "its input x");
    IN(op, needs_y ? "y" : "x", need);
    NAC_TRY(check_like(op, needs_y ? "y" : "x", need, dy));
    NAC_TRY(check_like(op, "dx", dx, dy));
    return DISPATCH(dy->be, act_bwd, kind, x, y, dy, dx, alpha, beta);
}

nac_status nac_binary(nac_binop kind, const nac_tensor_t *a, const nac_tensor_t *b,
                      nac_tensor_t *y) {
    const char *op = "nac_binary";
    IN(op, "a", a);
    IN(op, "b", b);
    NAC_TRY(check_like(op, "b", b, a));
    NAC_TRY(check_like(op, "y", y, a));
    return DISPATCH(a->be, binary, kind, a, b, y);
}

nac_status nac_axpby(float alpha, const nac_tensor_t *x, float beta, nac_tensor_t *y) {
    const char *op = "nac_axpby";
    IN(op, "x", x);
    NAC_TRY(check_like(op, "y", y, x));
    if (beta != 0.0f) IN(op, "y", y);
    return DISPATCH(x->be, axpby, alpha, x, beta, y);
}

/* ---- dense ---- */
nac_status nac_gemm(bool ta, bool tb, float alpha, const nac_tensor_t *a, const nac_tensor_t *b,
                    float beta, nac_tensor_t *c) {
    const char *op = "nac_gemm";
    NAC_TRY(check_rank(op, "a", a, 2));
    NAC_TRY(check_rank(op, "b", b, 2));
    NAC_TRY(check_rank(op, "c", c, 2));
    NAC_TRY(check_same_be(op, a, b));
    NAC_TRY(check_same_be(op, a, c));
    IN(op, "a", a);
    IN(op, "b", b);
    if (beta != 0.0f) IN(op, "c", c);
    int64_t m = ta ? a->dim[1] : a->dim[0], k = ta ? a->dim[0] : a->dim[1];
    int64_t kb = tb ? b->dim[1] : b->dim[0], n = tb ? b->dim[0] : b->dim[1];
    if (k != kb || c->dim[0] != m || c->dim[1] != n)
        return nac_error(NAC_ERR_INVALID, "%s: op(a) of %s%s times op(b) of %s%s does not give %s",
                         op, SHAPE(a), ta ? "^T" : "", SHAPE(b), tb ? "^T" : "", SHAPE(c));
    return DISPATCH(a->be, gemm, ta, tb, alpha, a, b, beta, c);
}

static nac_status check_linear(const char *op, const nac_tensor_t *x, const nac_tensor_t *w,
                               const nac_tensor_t *b, const nac_tensor_t *y) {
    NAC_TRY(check_rank(op, "x", x, 2));
    NAC_TRY(check_rank(op, "w", w, 2));
    NAC_TRY(check_same_be(op, x, w));
    if (w->dim[1] != x->dim[1])
        return nac_error(NAC_ERR_INVALID, "%s: weight %s does not take input %s", op, SHAPE(w),
                         SHAPE(x));
    int64_t ys[2] = {x->dim[0], w->dim[0]};
    NAC_TRY(check_shape(op, "y", y, 2, ys));
    NAC_TRY(check_same_be(op, x, y));
    if (b) {
        NAC_TRY(check_shape(op, "b", b, 1, &w->dim[0]));
        NAC_TRY(check_same_be(op, x, b));
    }
    return NAC_OK;
}

nac_status nac_linear_forward(const nac_tensor_t *x, const nac_tensor_t *w,
                              const nac_tensor_t *b, nac_tensor_t *y) {
    const char *op = "nac_linear_forward";
    NAC_TRY(check_linear(op, x, w, b, y));
    IN(op, "x", x);
    IN(op, "w", w);
    if (b) IN(op, "b", b);
    return DISPATCH(x->be, linear_fwd, x, w, b, y);
}

nac_status nac_linear_backward(const nac_tensor_t *x, const nac_tensor_t *w,
                               const nac_tensor_t *dy, nac_tensor_t *dx, nac_tensor_t *dw,
                               nac_tensor_t *db) {
    const char *op = "nac_linear_backward";
    NAC_TRY(check_linear(op, x, w, db, dy));
    IN(op, "x", x);
    IN(op, "w", w);
    IN(op, "dy", dy);
    if (dx) NAC_TRY(check_like(op, "dx", dx, x));
    NAC_TRY(check_like(op, "dw", dw, w));
    return DISPATCH(x->be, linear_bwd, x, w, dy, dx, dw, db);
}

static nac_status check_rows(const char *op, const nac_tensor_t *x, const nac_tensor_t *y,
                             bool vector_out) {
    NAC_TRY(check_rank(op, "x", x, 2));
    IN(op, "x", x);
    if (vector_out) NAC_TRY(check_shape(op, "y", y, 1, &x->dim[0]));
    else NAC_TRY(check_like(op, "y", y, x));
    return check_same_be(op, x, y);
}

nac_status nac_row_logsumexp(const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(check_rows("nac_row_logsumexp", x, y, true));
    return DISPATCH(x->be, row_logsumexp, x, y);
}

nac_status nac_row_softmax(const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(check_rows("nac_row_softmax", x, y, false));
    return DISPATCH(x->be, row_softmax, x, y);
}

nac_status nac_row_sum(const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(check_rows("nac_row_sum", x, y, true));
    return DISPATCH(x->be, row_sum, x, y);
}

nac_status nac_row_broadcast(nac_binop kind, const nac_tensor_t *x, const nac_tensor_t *v,
                             nac_tensor_t *y) {
    const char *op = "nac_row_broadcast";
    NAC_TRY(check_rows(op, x, y, false));
    NAC_TRY(check_shape(op, "v", v, 1, &x->dim[1]));
    IN(op, "v", v);
    NAC_TRY(check_same_be(op, x, v));
    return DISPATCH(x->be, row_broadcast, kind, x, v, y);
}

nac_status nac_col_broadcast(nac_binop kind, const nac_tensor_t *x, const nac_tensor_t *v,
                             nac_tensor_t *y) {
    const char *op = "nac_col_broadcast";
    NAC_TRY(check_rows(op, x, y, false));
    NAC_TRY(check_shape(op, "v", v, 1, &x->dim[0]));
    IN(op, "v", v);
    NAC_TRY(check_same_be(op, x, v));
    return DISPATCH(x->be, col_broadcast, kind, x, v, y);
}

nac_status nac_sum_all(const nac_tensor_t *x, nac_tensor_t *y) {
    int64_t one = 1;
    IN("nac_sum_all", "x", x);
    NAC_TRY(check_shape("nac_sum_all", "y", y, 1, &one));
    NAC_TRY(check_same_be("nac_sum_all", x, y));
    return DISPATCH(x->be, sum_all, x, y);
}

nac_status nac_sumsq_all(const nac_tensor_t *x, nac_tensor_t *y) {
    int64_t one = 1;
    IN("nac_sumsq_all", "x", x);
    NAC_TRY(check_shape("nac_sumsq_all", "y", y, 1, &one));
    NAC_TRY(check_same_be("nac_sumsq_all", x, y));
    return DISPATCH(x->be, sumsq_all, x, y);
}

nac_status nac_opt_update(nac_tensor_t *w, const nac_tensor_t *g, nac_tensor_t *s1,
                          nac_tensor_t *s2, const nac_opt_step *h) {
    const char *op = "nac_opt_update";
    IN(op, "w", w);
    IN(op, "g", g);
    if (!h) return nac_error(NAC_ERR_INVALID, "%s: NULL hyper-parameters", op);
    NAC_TRY(check_like(op, "g", g, w));
    bool adam = h->kind == NAC_OPT_ADAM || h->kind == NAC_OPT_ADAMW;
    if (s1) NAC_TRY(check_like(op, "s1", s1, w));
    if (s2) NAC_TRY(check_like(op, "s2", s2, w));
    if ((h->momentum != 0.0f || adam || h->kind == NAC_OPT_LARS) && !s1)
        return nac_error(NAC_ERR_INVALID, "%s: this optimiser needs a momentum buffer", op);
    if (adam && (!s2 || h->t < 1))
        return nac_error(NAC_ERR_INVALID, "%s: Adam needs a second-moment buffer and t >= 1", op);
    return DISPATCH(w->be, opt_update, w, g, s1, s2, h);
}

nac_status nac_ema_update(nac_tensor_t *wm, const nac_tensor_t *w, float decay) {
    IN("nac_ema_update", "w", w);
    IN("nac_ema_update", "wm", wm);
    NAC_TRY(check_like("nac_ema_update", "wm", wm, w));
    return DISPATCH(w->be, ema, wm, w, decay);
}

nac_status nac_tensor_item(const nac_tensor_t *t, float *out) {
    NAC_TRY(check_tensor("nac_tensor_item", "t", t));
    if (nac_tensor_numel(t) != 1)
        return nac_error(NAC_ERR_INVALID, "nac_tensor_item: tensor %s has more than one element",
                         SHAPE(t));
    return nac_tensor_to_host(t, out);
}

/* ---- introspection ---- */
nac_status nac_tensor_relayout(nac_tensor_t *t, nac_layout layout) {
    NAC_TRY(check_tensor("nac_tensor_relayout", "t", t));
    return DISPATCH(t->be, tensor_relayout, t, layout);
}

nac_status nac_tensor_get_info(const nac_tensor_t *t, nac_tensor_info *out) {
    NAC_TRY(check_tensor("nac_tensor_get_info", "t", t));
    if (!out) return nac_error(NAC_ERR_INVALID, "nac_tensor_get_info: out is NULL");
    return DISPATCH(t->be, tensor_info, t, out);
}
