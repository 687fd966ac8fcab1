/* The CPU backend's oneDNN primitives: convolution, batch norm (per-group statistics, fused
 * ReLU), pooling, global average pooling, nearest upsampling, activations, binary ops and
 * axpby. Each primitive is created once per shape and cached; 4-D tensors take the layouts
 * the primitives prefer, and an input in another layout is reordered into a buffer of the
 * backend's arena (cpu_arena: a few buffers shared by every op, holding a copy for the
 * duration of one op). A bf16 backend makes the convolutions read bf16 and write f32: the
 * same reorders then also cast their f32 inputs, into the same arena. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_impl.h"

/* Loops below this many elements run on one thread: the team start costs more. */
#define PAR_MIN 32768

/* ---- cache keys: op id, parameters, dims and layout ids of the inputs ---- */
enum dnn_op {
    OP_CONV_FWD = 1,
    OP_CONV_BWD_DATA,
    OP_CONV_BWD_WEIGHTS,
    OP_BN_TRAIN,
    OP_BN_INFER,
    OP_BN_SAVED,
    OP_BN_BWD,
    OP_BN_SYNC,
    OP_POOL_FWD,
    OP_POOL_BWD,
    OP_GAP_FWD,
    OP_GAP_BWD,
    OP_GAP_MEMO,
    OP_UP_FWD,
    OP_UP_BWD,
    OP_ACT_FWD,
    OP_ACT_PRECISE,
    OP_ACT_BWD,
    OP_BINARY,
    OP_AXPBY
};

#define KEY_MAX 40
typedef struct dnn_key {
    int64_t v[KEY_MAX];
    int n;
} dnn_key;

static void key_add(dnn_key *k, int64_t x) {
    NAC_ASSERT(k->n < KEY_MAX);
    k->v[k->n++] = x;
}

/* Keys are whole multiples of 8 bytes starting with a tag, so they never equal the
 * 12-byte reorder keys or the 20-byte math temporaries sharing the cache. */
static void key_init(dnn_key *k, enum dnn_op op) {
    k->n = 0;
    key_add(k, ((int64_t)0x646e6e << 16) | op);
}

static void key_float(dnn_key *k, float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    key_add(k, u);
}

static void key_dims(dnn_key *k, const nac_tensor_t *t) {
    key_add(k, t->ndim);
    for (int i = 0; i < t->ndim; i++) key_add(k, t->dim[i]);
}

static void key_layout(dnn_key *k, const nac_tensor_t *t) {
    key_add(k, t->impl ? CPU_T(t)->layout_id : -1);
}

static void key_tensor(dnn_key *k, const nac_tensor_t *t) {
    key_dims(k, t);
    key_layout(k, t);
}

static cpu_cache_entry *key_find(nac_backend_t *be, const dnn_key *k) {
    return cpu_cache_find(CPU_CTX(be), k->v, (size_t)k->n * sizeof k->v[0]);
}

/* ---- per-entry state ---- */
enum { NSLOT = 4, NVIEW = 8 };
_Static_assert((int)NSLOT <= (int)CPU_NARENA, "every slot needs an arena buffer");
typedef struct dnn_extra {
    dnnl_primitive_desc_t hint; /* the forward pd a backward pd was made with: outlives it */
    dnnl_memory_t slot[NSLOT];  /* operands in another layout, over the arena (slot_mem) */
    dnnl_memory_t view[NVIEW];  /* memories without storage, pointed at data per call */
    float *acc;                 /* batch norm: per-group dgamma, dbeta before summing */
    bool ready;                 /* views made (an entry whose setup failed half-way retries) */
} dnn_extra;

static void dnn_extra_free(void *p) {
    dnn_extra *ex = p;
    if (!ex) return;
    if (ex->hint) dnnl_primitive_desc_destroy(ex->hint);
    for (int i = 0; i < NSLOT; i++)
        if (ex->slot[i]) dnnl_memory_destroy(ex->slot[i]);
    for (int i = 0; i < NVIEW; i++)
        if (ex->view[i]) dnnl_memory_destroy(ex->view[i]);
    free(ex->acc);
    free(ex);
}

static const dnnl_memory_desc_t *qmd(const_dnnl_primitive_desc_t pd, dnnl_query_t what,
                                     int index) {
    return dnnl_primitive_desc_query_md(pd, what, index);
}

/* A primitive descriptor with the backend's attributes (user scratchpad). */
static nac_status pd_make(nac_backend_t *be, const_dnnl_op_desc_t desc,
                          const_dnnl_primitive_desc_t hint, const char *op,
                          dnnl_primitive_desc_t *pd) {
    dnnl_primitive_attr_t attr;
    NAC_TRY(cpu_attr_create(&attr));
    dnnl_status_t s = dnnl_primitive_desc_create(pd, desc, attr, CPU_CTX(be)->engine, hint);
    dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        *pd = NULL;
        return nac_error(NAC_ERR_BACKEND,
                         "%s: oneDNN has no implementation for these shapes and layouts "
                         "(status %d)",
                         op, (int)s);
    }
    return NAC_OK;
}

/* Create pd's primitive and cache it under k with a fresh extra. Takes pd and hint
 * (destroyed on failure too). */
static nac_status entry_add(nac_backend_t *be, const dnn_key *k, dnnl_primitive_desc_t pd,
                            dnnl_primitive_desc_t hint, const char *op, cpu_cache_entry **out) {
    dnn_extra *ex = calloc(1, sizeof *ex);
    dnnl_primitive_t prim = NULL;
    if (!ex || dnnl_primitive_create(&prim, pd) != dnnl_success) {
        free(ex);
        dnnl_primitive_desc_destroy(pd);
        if (hint) dnnl_primitive_desc_destroy(hint);
        return ex ? nac_error(NAC_ERR_BACKEND, "%s: oneDNN primitive creation failed", op)
                  : nac_error(NAC_ERR_NOMEM, "%s: out of memory", op);
    }
    ex->hint = hint;
    cpu_cache_entry *e =
        cpu_cache_insert(CPU_CTX(be), k->v, (size_t)k->n * sizeof k->v[0], pd, prim, NULL);
    if (!e) {
        dnn_extra_free(ex);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory for the primitive cache", op);
    }
    e->extra = ex;
    e->extra_free = dnn_extra_free;
    *out = e;
    return NAC_OK;
}

/* An entry without a primitive, holding only buffers (axpby's reorder target). */
/* The end of making a backward primitive: with s the status of making pd, cache it with
 * the forward primitive `hint` it was made from (the entry keeps both), or destroy hint
 * and return the failure. */
static nac_status entry_add_hinted(nac_backend_t *be, const dnn_key *k, nac_status s,
                                   dnnl_primitive_desc_t pd, dnnl_primitive_desc_t hint,
                                   const char *op, cpu_cache_entry **out) {
    if (s != NAC_OK) {
        dnnl_primitive_desc_destroy(hint);
        return s;
    }
    return entry_add(be, k, pd, hint, op, out);
}

/* The same from an op descriptor whose init returned `init`. */
static nac_status entry_add_bwd(nac_backend_t *be, const dnn_key *k, dnnl_status_t init,
                                const_dnnl_op_desc_t desc, dnnl_primitive_desc_t hint,
                                const char *op, cpu_cache_entry **out) {
    dnnl_primitive_desc_t pd = NULL;
    nac_status s = init == dnnl_success
                       ? pd_make(be, desc, hint, op, &pd)
                       : nac_error(NAC_ERR_BACKEND, "%s: invalid oneDNN descriptor", op);
    return entry_add_hinted(be, k, s, pd, hint, op, out);
}

static nac_status entry_bare(nac_backend_t *be, const dnn_key *k, const char *op,
                             cpu_cache_entry **out) {
    dnn_extra *ex = calloc(1, sizeof *ex);
    cpu_cache_entry *e =
        ex ? cpu_cache_insert(CPU_CTX(be), k->v, (size_t)k->n * sizeof k->v[0], NULL, NULL,
                              NULL)
           : NULL;
    if (!e) {
        free(ex);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory for the primitive cache", op);
    }
    e->extra = ex;
    e->extra_free = dnn_extra_free;
    *out = e;
    return NAC_OK;
}

/* ---- memory descriptors ---- */
static void md_tag_dt(dnnl_memory_desc_t *md, int nd, const int64_t *dims, dnnl_data_type_t dt,
                      dnnl_format_tag_t tag) {
    dnnl_dims_t d;
    for (int i = 0; i < nd; i++) d[i] = dims[i];
    dnnl_status_t s = dnnl_memory_desc_init_by_tag(md, nd, d, dt, tag);
    NAC_ASSERT(s == dnnl_success);
    (void)s;
}

static void md_tag(dnnl_memory_desc_t *md, int nd, const int64_t *dims, dnnl_format_tag_t tag) {
    md_tag_dt(md, nd, dims, dnnl_f32, tag);
}

/* A convolution's activation (N,C,H,W) as the convolution may choose it ("any"), or, with
 * `narrow` and exactly 8 channels, in 8-channel blocks: oneDNN's AVX-512 kernels would pad
 * 8 channels to 16 (twice the traffic) while its weight-gradient kernels for them want
 * 8-blocks, so every step would reorder between the two. A ResNet at width 1/8 (the CPU
 * configurations) keeps one layout this way. Other channel counts (image inputs, odd
 * widths) get oneDNN's choice, where 8-blocks can mean a slow fallback kernel. */
static bool act_narrow(int64_t c) { return c == 8; }

/* Convolutions between at most 8 channels take the narrow layout; one from 8 channels to
 * more keeps oneDNN's choice (its kernels want one blocking on both sides). */
static bool conv_narrow(int64_t cin, int64_t cout) { return (cin > cout ? cin : cout) == 8; }

/* In a bf16 backend, a convolution runs in bf16 unless both sides have at most 8 channels:
 * oneDNN 2.6's bf16 kernels block channels by 16 or 32, so an 8-channel layer pads to twice
 * its work and more reorders, and ran slower than in f32 (the VAE's width-1/8 first stage;
 * docs/performance.md). Such a layer keeps f32 operands: no casts, no bf16 copies. */
static bool conv_bf16(const nac_backend_t *be, int64_t cin, int64_t cout) {
    return be->precision == NAC_PRECISION_BF16 && (cin > cout ? cin : cout) > 8;
}

enum conv_pass { CONV_FWD, CONV_BWD_DATA, CONV_BWD_WEIGHTS };

/* The algorithm a pass asks for. oneDNN's "auto" takes its Winograd F(4x4, 3x3) kernels
 * (fp32, AVX-512: 3x3 stride-1 convolutions, all three passes) where it has them and
 * judges them faster, direct convolution otherwise. Winograd does the same sums in fewer
 * multiplications with other rounding (relative error ~1e-6 against direct's ~3e-7,
 * test_ops_dnn's test_conv_winograd), and its transforms take scratchpad memory in
 * proportion to the images of a call. The default, measured on the ResNet-18 NAC step
 * (64 pairs of 32x32; docs/performance.md): oneDNN's choice for the forward and
 * backward-data passes, in slices of at most WINO_IMAGES images (conv_images), direct for
 * the weight gradient (its Winograd scratchpad is large at every size and cannot be sliced:
 * the gradient sums over the batch); "winograd": oneDNN's choice for all three passes (the
 * weight gradient's on the whole batch: fastest, most memory); "direct": the exact-rounding reference. bf16 has
 * no Winograd kernels: always direct. */
static dnnl_alg_kind_t conv_alg(const nac_backend_t *be, enum conv_pass pass, bool lp) {
    if (lp) return dnnl_convolution_direct;
    switch (((const cpu_context *)be->context)->conv) {
    case CPU_CONV_DIRECT: return dnnl_convolution_direct;
    case CPU_CONV_WINOGRAD: return dnnl_convolution_auto;
    case CPU_CONV_DEFAULT: break;
    }
    return pass != CONV_BWD_WEIGHTS ? dnnl_convolution_auto : dnnl_convolution_direct;
}

/* A narrow-layout primitive is kept only if oneDNN has a real kernel for it: its
 * reference implementation would be far slower than the default layout plus reorders. */
static nac_status narrow_pd(nac_backend_t *be, const_dnnl_op_desc_t d,
                            const_dnnl_primitive_desc_t hint, const char *op, bool narrow,
                            dnnl_primitive_desc_t *pd) {
    NAC_TRY(pd_make(be, d, hint, op, pd));
    const char *impl = NULL;
    if (narrow && dnnl_primitive_desc_query(*pd, dnnl_query_impl_info_str, 0, &impl) ==
                      dnnl_success &&
        impl && strstr(impl, "ref")) {
        dnnl_primitive_desc_destroy(*pd);
        *pd = NULL;
        return nac_error(NAC_ERR_BACKEND, "%s: only a reference kernel for 8-channel blocks", op);
    }
    return NAC_OK;
}

static void md_act(dnnl_memory_desc_t *md, const int64_t *dims, bool narrow, dnnl_data_type_t dt) {
    md_tag_dt(md, 4, dims, dt, narrow && act_narrow(dims[1]) ? dnnl_aBcd8b : dnnl_format_tag_any);
}

static void md_plain(dnnl_memory_desc_t *md, int nd, const int64_t *dims) {
    static const dnnl_format_tag_t tags[] = {dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc,
                                             dnnl_abcd};
    md_tag(md, nd, dims, tags[nd]);
}

/* The layout of `like` (its order of dimensions and inner blocks) for other dims: a slice
 * of a batch, a pooled or upsampled activation in its input's format. Dimensions with
 * equal strides keep their logical order, which reproduces oneDNN's own strides. */
static void md_like(const dnnl_memory_desc_t *like, const int64_t *dims, dnnl_memory_desc_t *out) {
    NAC_ASSERT(like->format_kind == dnnl_blocked);
    const dnnl_blocking_desc_t *lb = &like->format_desc.blocking;
    int nd = like->ndims;
    memset(out, 0, sizeof *out);
    out->ndims = nd;
    out->data_type = dnnl_f32;
    out->format_kind = dnnl_blocked;
    dnnl_blocking_desc_t *b = &out->format_desc.blocking;
    int64_t blk[DNNL_MAX_NDIMS], inner = 1;
    for (int d = 0; d < nd; d++) blk[d] = 1;
    b->inner_nblks = lb->inner_nblks;
    for (int i = 0; i < lb->inner_nblks; i++) {
        b->inner_blks[i] = lb->inner_blks[i];
        b->inner_idxs[i] = lb->inner_idxs[i];
        blk[lb->inner_idxs[i]] *= lb->inner_blks[i];
        inner *= lb->inner_blks[i];
    }
    int order[DNNL_MAX_NDIMS]; /* outermost first; stable in the logical order */
    for (int d = 0; d < nd; d++) {
        out->dims[d] = dims[d];
        out->padded_dims[d] = (dims[d] + blk[d] - 1) / blk[d] * blk[d];
        order[d] = d;
        for (int j = d; j > 0 && lb->strides[order[j]] > lb->strides[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    }
    int64_t s = inner;
    for (int i = nd - 1; i >= 0; i--) {
        int d = order[i];
        b->strides[d] = s;
        s *= out->padded_dims[d] / blk[d];
    }
}

/* Whether the batch axis is outermost and unblocked, so that a run of images is one
 * contiguous piece of memory (nchw, nhwc, nChw16c, plain 2-D). */
static bool batch_outermost(const dnnl_memory_desc_t *md) {
    if (md->format_kind != dnnl_blocked) return false;
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    for (int i = 0; i < b->inner_nblks; i++)
        if (b->inner_idxs[i] == 0) return false;
    return md->padded_dims[0] == md->dims[0] &&
           (size_t)b->strides[0] * (size_t)md->dims[0] * sizeof(float) ==
               dnnl_memory_desc_get_size(md);
}

/* ---- operands ---- */
/* Slot i of the entry as a memory of layout md over the backend's arena buffer i (shared
 * by every entry: the contents live for this op only). Setting the handle zero-fills the
 * layout's padding (oneDNN's contract for padded blocked layouts), so a buffer another
 * op left dirty reads as this layout's zero padding. */
static nac_status slot_mem(nac_backend_t *be, dnn_extra *ex, int i, const dnnl_memory_desc_t *md,
                           dnnl_memory_t *out) {
    if (ex->slot[i]) {
        const dnnl_memory_desc_t *have;
        DNNL_TRY(dnnl_memory_get_memory_desc(ex->slot[i], &have));
        if (!dnnl_memory_desc_equal(have, md)) {
            dnnl_memory_destroy(ex->slot[i]);
            ex->slot[i] = NULL;
        }
    }
    if (!ex->slot[i] &&
        dnnl_memory_create(&ex->slot[i], md, CPU_CTX(be)->engine, DNNL_MEMORY_NONE) != dnnl_success) {
        ex->slot[i] = NULL;
        return nac_error(NAC_ERR_BACKEND, "oneDNN: dnnl_memory_create failed");
    }
    void *buf;
    NAC_TRY(cpu_arena(CPU_CTX(be), i, dnnl_memory_desc_get_size(md), &buf));
    DNNL_TRY(dnnl_memory_set_data_handle(ex->slot[i], buf));
    *out = ex->slot[i];
    return NAC_OK;
}

/* t's data in layout md: t's own memory, or a reorder into slot i. */
static nac_status in_as(nac_backend_t *be, dnn_extra *ex, int i, const nac_tensor_t *t,
                        const dnnl_memory_desc_t *md, dnnl_memory_t *out) {
    cpu_tensor *ct = CPU_T(t);
    if (dnnl_memory_desc_equal(&ct->md, md)) {
        *out = ct->mem;
        return NAC_OK;
    }
    NAC_TRY(slot_mem(be, ex, i, md, out));
    return cpu_reorder(be, ct->mem, *out);
}

/* Where an op writes t when its primitive produces layout md: t itself (an unallocated
 * 4-D t is allocated with md, a 1-D/2-D one plain), or slot i, reordered into t by
 * out_end. */
typedef struct dnn_out {
    nac_tensor_t *t;
    dnnl_memory_t mem;
    bool via_slot;
} dnn_out;

static nac_status out_begin(nac_backend_t *be, dnn_extra *ex, int i, nac_tensor_t *t,
                            const dnnl_memory_desc_t *md, dnn_out *o) {
    o->t = t;
    o->via_slot = false;
    if (!t->impl) {
        if (t->ndim <= 2) NAC_TRY(cpu_tensor_ensure_plain(be, t));
        else NAC_TRY(cpu_tensor_ensure(be, t, md));
    }
    if (dnnl_memory_desc_equal(&CPU_T(t)->md, md)) {
        o->mem = CPU_T(t)->mem;
        return NAC_OK;
    }
    o->via_slot = true;
    return slot_mem(be, ex, i, md, &o->mem);
}

static nac_status out_end(nac_backend_t *be, const dnn_out *o) {
    return o->via_slot ? cpu_reorder(be, o->mem, CPU_T(o->t)->mem) : NAC_OK;
}

static void *mem_ptr(dnnl_memory_t m) {
    void *p = NULL;
    dnnl_status_t s = dnnl_memory_get_data_handle(m, &p);
    NAC_ASSERT(s == dnnl_success);
    (void)s;
    return p;
}

static nac_status view_make(nac_backend_t *be, dnn_extra *ex, int i,
                            const dnnl_memory_desc_t *md) {
    if (ex->view[i]) return NAC_OK;
    DNNL_TRY(dnnl_memory_create(&ex->view[i], md, CPU_CTX(be)->engine, DNNL_MEMORY_NONE));
    return NAC_OK;
}

static dnnl_memory_t view_at(dnn_extra *ex, int i, void *p) {
    dnnl_status_t s = dnnl_memory_set_data_handle(ex->view[i], p);
    NAC_ASSERT(s == dnnl_success);
    (void)s;
    return ex->view[i];
}

/* Execute the entry's primitive with the shared scratchpad (args needs one spare slot). */
static nac_status run(nac_backend_t *be, const cpu_cache_entry *e, int n, dnnl_exec_arg_t *args) {
    dnnl_memory_t sp;
    NAC_TRY(cpu_scratchpad(be, e->pd, &sp));
    if (sp) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, sp};
    return cpu_execute(be, e->prim, n, args);
}

/* The workspace an op leaves in its output tensor for the backward (grown once). */
static nac_status ws_ensure(cpu_tensor *ct, size_t bytes, const char *op) {
    if (ct->ws && ct->ws_bytes == bytes) return NAC_OK;
    if (ct->ws_mem) dnnl_memory_destroy(ct->ws_mem);
    ct->ws_mem = NULL;
    if (ct->ws) cpu_mem_count(ct->ctx, cpu_alloc_size(ct->ws_bytes), false);
    free(ct->ws);
    size_t alloc = (bytes + 63) / 64 * 64;
    ct->ws = aligned_alloc(64, alloc ? alloc : 64);
    ct->ws_bytes = ct->ws ? bytes : 0;
    if (!ct->ws) return nac_error(NAC_ERR_NOMEM, "%s: workspace of %zu bytes", op, bytes);
    memset(ct->ws, 0, alloc ? alloc : 64);
    cpu_mem_count(ct->ctx, cpu_alloc_size(bytes), true);
    return NAC_OK;
}

/* ---- convolution ---- */

/* The primitive of one pass of a convolution of an input with dims xd by weights wd (a
 * backward pass with the forward's primitive as hint): the narrow layout first where it
 * applies, oneDNN's own choice otherwise. */
static nac_status conv_pd(nac_backend_t *be, enum conv_pass pass, const int64_t *xd,
                          const int64_t *wd, bool bias, const nac_conv_params *p, const char *op,
                          const_dnnl_primitive_desc_t hint, dnnl_primitive_desc_t *pd) {
    int64_t yd[4] = {xd[0], wd[0], nac_conv_out_size(xd[2], (int)wd[2], p->stride, p->pad),
                     nac_conv_out_size(xd[3], (int)wd[3], p->stride, p->pad)};
    /* bf16: the operands the pass reads in bf16 (forward: src and weights; backward data:
       diff_dst and weights; backward weights: src and diff_dst), what it writes in f32 */
    bool lp = conv_bf16(be, xd[1], wd[0]);
    dnnl_data_type_t in_dt = lp ? dnnl_bf16 : dnnl_f32;
    dnnl_data_type_t src_dt = pass == CONV_BWD_DATA ? dnnl_f32 : in_dt;
    dnnl_data_type_t dst_dt = pass == CONV_FWD ? dnnl_f32 : in_dt;
    dnnl_data_type_t wei_dt = pass == CONV_BWD_WEIGHTS ? dnnl_f32 : in_dt;
    dnnl_memory_desc_t src, wei, bia, dst;
    md_tag_dt(&wei, 4, wd, wei_dt, dnnl_format_tag_any);
    md_plain(&bia, 1, wd);
    const dnnl_memory_desc_t *b = bias ? &bia : NULL;
    dnnl_dims_t st = {p->stride, p->stride}, pad = {p->pad, p->pad};
    for (int narrow = conv_narrow(xd[1], yd[1]);; narrow = 0) {
        md_act(&src, xd, narrow, src_dt);
        md_act(&dst, yd, narrow, dst_dt);
        dnnl_convolution_desc_t d;
        dnnl_alg_kind_t alg = conv_alg(be, pass, lp);
        dnnl_status_t ds =
            pass == CONV_FWD
                ? dnnl_convolution_forward_desc_init(&d, dnnl_forward_training, alg, &src, &wei,
                                                     b, &dst, st, pad, pad)
            : pass == CONV_BWD_DATA
                ? dnnl_convolution_backward_data_desc_init(&d, alg, &src, &wei, &dst, st, pad,
                                                           pad)
                : dnnl_convolution_backward_weights_desc_init(&d, alg, &src, &wei, b, &dst, st,
                                                              pad, pad);
        nac_status s = ds == dnnl_success
                           ? narrow_pd(be, &d, hint, op, narrow, pd)
                           : nac_error(NAC_ERR_BACKEND, "%s: invalid oneDNN descriptor", op);
        if (s == NAC_OK || !narrow) return s;
    }
}

static nac_status conv_fwd_pd(nac_backend_t *be, const int64_t *xd, const int64_t *wd,
                              bool bias, const nac_conv_params *p, const char *op,
                              dnnl_primitive_desc_t *pd) {
    return conv_pd(be, CONV_FWD, xd, wd, bias, p, op, NULL, pd);
}

/* Winograd's transforms take scratchpad in proportion to the images of a call (84 MB for
 * 128 images of 16x16x128), so a pass that may run Winograd takes at most WINO_IMAGES
 * images a call: the largest divisor of the batch up to that, run batch slice by batch
 * slice (each image's result does not depend on the others). Direct passes take the batch.
 * Measured on the ResNet-18 step (128 images a pass, Winograd forward and backward data):
 * slices of 16: 118-122 images/s at 841 MB; 32: 114-132 at 862 MB; 64: 132 at 870 MB;
 * the whole batch: 142-144 at 915 MB; direct 87-107 at 817 MB (docs/performance.md). */
enum { WINO_IMAGES = 16, WINO_MIN_IMAGES = 4 };

static int64_t conv_images(const nac_backend_t *be, enum conv_pass pass, const int64_t *xd,
                           const int64_t *wd) {
    bool lp = conv_bf16(be, xd[1], wd[0]);
    if (conv_alg(be, pass, lp) == dnnl_convolution_direct || xd[0] <= WINO_IMAGES)
        return xd[0];
    for (int64_t c = WINO_IMAGES; c >= WINO_MIN_IMAGES; c--)
        if (xd[0] % c == 0) return c;
    return xd[0];
}

/* The primitive of a forward or backward-data pass for batch slices of `images` images
 * (conv_images), or for the whole batch where a slice's layouts would not be contiguous
 * runs of images (batch_outermost). */
static nac_status conv_sliced_pd(nac_backend_t *be, enum conv_pass pass, const int64_t *xd,
                                 const int64_t *wd, bool bias, const nac_conv_params *p,
                                 const char *op, dnnl_primitive_desc_t *hint,
                                 dnnl_primitive_desc_t *pd) {
    int64_t n = conv_images(be, pass, xd, wd);
    for (;; n = xd[0]) {
        int64_t xs[4] = {n, xd[1], xd[2], xd[3]};
        *hint = NULL;
        if (pass != CONV_FWD) NAC_TRY(conv_fwd_pd(be, xs, wd, bias, p, op, hint));
        nac_status s = conv_pd(be, pass, xs, wd, bias, p, op, *hint, pd);
        if (s != NAC_OK) {
            if (*hint) dnnl_primitive_desc_destroy(*hint);
            *hint = NULL;
            return s;
        }
        dnnl_query_t xq = pass == CONV_FWD ? dnnl_query_src_md : dnnl_query_diff_src_md;
        dnnl_query_t yq = pass == CONV_FWD ? dnnl_query_dst_md : dnnl_query_diff_dst_md;
        if (n == xd[0] || (batch_outermost(qmd(*pd, xq, 0)) && batch_outermost(qmd(*pd, yq, 0))))
            return NAC_OK;
        dnnl_primitive_desc_destroy(*pd);
        if (*hint) dnnl_primitive_desc_destroy(*hint);
    }
}

/* Run a forward (in = src, out = dst) or backward-data (in = diff_dst, out = diff_src)
 * primitive over x's batch in the slices it was made for: `in` and `out` hold the whole
 * batch in the slice layouts' batch-wide versions, the slices are views into them. */
static nac_status conv_run_sliced(nac_backend_t *be, const cpu_cache_entry *e, int in_arg,
                                  dnnl_memory_t in, int out_arg, dnnl_memory_t out,
                                  dnnl_memory_t w, dnnl_memory_t bias, int64_t slices,
                                  const dnnl_memory_desc_t *in_md, const dnnl_memory_desc_t *out_md) {
    dnn_extra *ex = e->extra;
    if (slices > 1) {
        NAC_TRY(view_make(be, ex, 0, in_md));
        NAC_TRY(view_make(be, ex, 1, out_md));
    }
    char *pi = mem_ptr(in), *po = mem_ptr(out);
    size_t bi = dnnl_memory_desc_get_size(in_md), bo = dnnl_memory_desc_get_size(out_md);
    for (int64_t i = 0; i < slices; i++) {
        dnnl_exec_arg_t a[5] = {{in_arg, slices > 1 ? view_at(ex, 0, pi + i * bi) : in},
                                {DNNL_ARG_WEIGHTS, w},
                                {out_arg, slices > 1 ? view_at(ex, 1, po + i * bo) : out}};
        int n = 3;
        if (bias) a[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bias};
        NAC_TRY(run(be, e, n, a));
    }
    return NAC_OK;
}

/* The batch-wide version of a slice layout (the same, for a primitive of the whole batch). */
static const dnnl_memory_desc_t *conv_batch_md(const dnnl_memory_desc_t *slice_md, int64_t n,
                                                dnnl_memory_desc_t *buf) {
    if (slice_md->dims[0] == n) return slice_md;
    int64_t d[4] = {n, slice_md->dims[1], slice_md->dims[2], slice_md->dims[3]};
    md_like(slice_md, d, buf);
    return buf;
}

/* Multiply-adds of a direct convolution: output elements x (input channels x kernel). */
static double conv_macs(const nac_tensor_t *out, const nac_tensor_t *w) {
    return (double)nac_tensor_numel(out) * (double)(w->dim[1] * w->dim[2] * w->dim[3]);
}

nac_status cpu_conv_fwd(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *w,
                        const nac_tensor_t *b, nac_tensor_t *y, const nac_conv_params *p) {
    const char *op = "nac_conv2d_forward";
    dnn_key k;
    key_init(&k, OP_CONV_FWD);
    key_add(&k, p->stride);
    key_add(&k, p->pad);
    key_dims(&k, x);
    key_dims(&k, w);
    key_add(&k, b != NULL);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_primitive_desc_t pd, hint;
        NAC_TRY(conv_sliced_pd(be, CONV_FWD, x->dim, w->dim, b != NULL, p, op, &hint, &pd));
        NAC_TRY(entry_add(be, &k, pd, NULL, op, &e));
    }
    dnn_extra *ex = e->extra;
    const dnnl_memory_desc_t *wmd = qmd(e->pd, dnnl_query_weights_md, 0);
    /* Plain (OIHW) weights move to the convolution's layout once, for good: the
     * optimiser updates them in place there and to_host still returns OIHW. In bf16 the
     * fp32 master weights take that layout in f32, and each call casts them into a bf16
     * copy (slot 1) of the same blocking. */
    nac_tensor_t *wt = (nac_tensor_t *)w;
    dnnl_memory_desc_t wmd32 = *wmd;
    wmd32.data_type = dnnl_f32;
    if (CPU_T(wt)->plain && !dnnl_memory_desc_equal(&CPU_T(wt)->md, &wmd32))
        NAC_TRY(cpu_tensor_ensure(be, wt, &wmd32));
    dnnl_memory_t ms, mw;
    dnn_out o;
    const dnnl_memory_desc_t *smd = qmd(e->pd, dnnl_query_src_md, 0),
                             *dmd = qmd(e->pd, dnnl_query_dst_md, 0);
    dnnl_memory_desc_t sbuf, dbuf;
    NAC_TRY(in_as(be, ex, 0, x, conv_batch_md(smd, x->dim[0], &sbuf), &ms));
    NAC_TRY(in_as(be, ex, 1, w, wmd, &mw));
    NAC_TRY(out_begin(be, ex, 2, y, conv_batch_md(dmd, x->dim[0], &dbuf), &o));
    cpu_flops_count(be, conv_macs(y, w));
    NAC_TRY(conv_run_sliced(be, e, DNNL_ARG_SRC, ms, DNNL_ARG_DST, o.mem, mw,
                            b ? CPU_T(b)->mem : NULL, x->dim[0] / smd->dims[0], smd, dmd));
    return out_end(be, &o);
}

nac_status cpu_conv_bwd_data(nac_backend_t *be, const nac_tensor_t *dy, const nac_tensor_t *w,
                             nac_tensor_t *dx, const nac_conv_params *p) {
    const char *op = "nac_conv2d_backward_data";
    dnn_key k;
    key_init(&k, OP_CONV_BWD_DATA);
    key_add(&k, p->stride);
    key_add(&k, p->pad);
    key_dims(&k, dx);
    key_dims(&k, w);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_primitive_desc_t hint, pd;
        NAC_TRY(conv_sliced_pd(be, CONV_BWD_DATA, dx->dim, w->dim, false, p, op, &hint, &pd));
        NAC_TRY(entry_add(be, &k, pd, hint, op, &e));
    }
    dnn_extra *ex = e->extra;
    dnnl_memory_t mdy, mw;
    dnn_out o;
    const dnnl_memory_desc_t *ymd = qmd(e->pd, dnnl_query_diff_dst_md, 0),
                             *xmd = qmd(e->pd, dnnl_query_diff_src_md, 0);
    dnnl_memory_desc_t ybuf, xbuf;
    NAC_TRY(in_as(be, ex, 0, dy, conv_batch_md(ymd, dx->dim[0], &ybuf), &mdy));
    /* the backward-data kernels may want another weight layout: a cached reorder */
    NAC_TRY(in_as(be, ex, 1, w, qmd(e->pd, dnnl_query_weights_md, 0), &mw));
    NAC_TRY(out_begin(be, ex, 2, dx, conv_batch_md(xmd, dx->dim[0], &xbuf), &o));
    cpu_flops_count(be, conv_macs(dy, w));
    NAC_TRY(conv_run_sliced(be, e, DNNL_ARG_DIFF_DST, mdy, DNNL_ARG_DIFF_SRC, o.mem, mw, NULL,
                            dx->dim[0] / xmd->dims[0], ymd, xmd));
    return out_end(be, &o);
}

nac_status cpu_conv_bwd_weights(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *dy,
                                nac_tensor_t *dw, nac_tensor_t *db, const nac_conv_params *p) {
    const char *op = "nac_conv2d_backward_weights";
    dnn_key k;
    key_init(&k, OP_CONV_BWD_WEIGHTS);
    key_add(&k, p->stride);
    key_add(&k, p->pad);
    key_dims(&k, x);
    key_dims(&k, dw);
    key_add(&k, db != NULL);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_primitive_desc_t hint, pd;
        NAC_TRY(conv_fwd_pd(be, x->dim, dw->dim, db != NULL, p, op, &hint));
        nac_status s =
            conv_pd(be, CONV_BWD_WEIGHTS, x->dim, dw->dim, db != NULL, p, op, hint, &pd);
        NAC_TRY(entry_add_hinted(be, &k, s, pd, hint, op, &e));
    }
    dnn_extra *ex = e->extra;
    const dnnl_memory_desc_t *dwmd = qmd(e->pd, dnnl_query_diff_weights_md, 0);
    /* the gradient follows the weights out of OIHW once, so the optimiser pairs them
       without a reorder */
    if (dw->impl && CPU_T(dw)->plain && !dnnl_memory_desc_equal(&CPU_T(dw)->md, dwmd))
        NAC_TRY(cpu_tensor_ensure(be, dw, dwmd));
    dnnl_memory_t mx, mdy;
    dnn_out o;
    NAC_TRY(in_as(be, ex, 0, x, qmd(e->pd, dnnl_query_src_md, 0), &mx));
    NAC_TRY(in_as(be, ex, 1, dy, qmd(e->pd, dnnl_query_diff_dst_md, 0), &mdy));
    NAC_TRY(out_begin(be, ex, 2, dw, dwmd, &o));
    cpu_flops_count(be, conv_macs(dy, dw));
    dnnl_exec_arg_t a[6] = {
        {DNNL_ARG_SRC, mx}, {DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_DIFF_WEIGHTS, o.mem}};
    int n = 3;
    if (db) {
        NAC_TRY(cpu_tensor_ensure_plain(be, db));
        a[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, CPU_T(db)->mem};
    }
    NAC_TRY(run(be, e, n, a));
    return out_end(be, &o);
}

/* ---- batch norm ---- */
static unsigned bn_flags(const nac_bn_params *p, bool global_stats) {
    unsigned f = dnnl_use_scale | dnnl_use_shift;
    if (p->relu) f |= dnnl_fuse_norm_relu;
    if (global_stats) f |= dnnl_use_global_stats;
    return f;
}

/* One group's slice of x: x's layout with N/groups images, starting slice_bytes apart. */
static nac_status bn_slice(const nac_tensor_t *x, int groups, const char *op,
                           dnnl_memory_desc_t *smd, size_t *slice_bytes) {
    const dnnl_memory_desc_t *xmd = &CPU_T(x)->md;
    if (groups > 1 && !batch_outermost(xmd))
        return nac_error(NAC_ERR_INVALID,
                         "%s: x is in a layout whose batch slices are not contiguous; "
                         "groups=%d needs them to be",
                         op, groups);
    int64_t d[NAC_MAX_DIMS] = {x->dim[0] / groups};
    for (int i = 1; i < x->ndim; i++) d[i] = x->dim[i];
    if (groups == 1) *smd = *xmd;
    else md_like(xmd, d, smd);
    *slice_bytes = dnnl_memory_desc_get_size(smd);
    return NAC_OK;
}

static nac_status bn_fwd_pd(nac_backend_t *be, const dnnl_memory_desc_t *md, float eps,
                            unsigned flags, dnnl_prop_kind_t prop, const char *op,
                            dnnl_primitive_desc_t *pd) {
    dnnl_batch_normalization_desc_t d;
    DNNL_TRY(dnnl_batch_normalization_forward_desc_init(&d, prop, md, eps, flags));
    return pd_make(be, &d, NULL, op, pd);
}

static void bn_key(dnn_key *k, enum dnn_op op, const nac_tensor_t *x, const nac_bn_params *p) {
    key_init(k, op);
    key_tensor(k, x);
    key_add(k, p->groups);
    key_add(k, p->relu);
    key_float(k, p->eps);
}

/* Batch norm per group slice with the group's statistics: a training forward that
 * computes them into save_mean/save_var (and, with relu, leaves the ReLU mask with y) and
 * folds them into the running statistics; or (train false) an inference-mode pass that
 * normalises with them as saved, recomputing that forward's output. */
static nac_status bn_fwd_groups(nac_backend_t *be, const nac_tensor_t *x,
                                const nac_tensor_t *gamma, const nac_tensor_t *beta,
                                nac_tensor_t *y, nac_tensor_t *running_mean,
                                nac_tensor_t *running_var, const nac_tensor_t *save_mean,
                                const nac_tensor_t *save_var, const nac_bn_params *p,
                                bool train) {
    const char *op = train ? "nac_bn_forward_train" : "nac_bn_forward_saved";
    int g = p->groups;
    bool mask = train && p->relu;
    dnnl_memory_desc_t smd;
    size_t sbytes;
    NAC_TRY(bn_slice(x, g, op, &smd, &sbytes));
    dnn_key k;
    bn_key(&k, train ? OP_BN_TRAIN : OP_BN_SAVED, x, p);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_primitive_desc_t pd;
        NAC_TRY(bn_fwd_pd(be, &smd, p->eps, bn_flags(p, !train),
                          train ? dnnl_forward_training : dnnl_forward_inference, op, &pd));
        NAC_TRY(entry_add(be, &k, pd, NULL, op, &e));
    }
    dnn_extra *ex = e->extra;
    if (!ex->ready) {
        dnnl_memory_desc_t cmd;
        md_plain(&cmd, 1, &x->dim[1]);
        NAC_TRY(view_make(be, ex, 0, &smd));
        NAC_TRY(view_make(be, ex, 1, &smd));
        NAC_TRY(view_make(be, ex, 2, &cmd));
        NAC_TRY(view_make(be, ex, 3, &cmd));
        if (mask) NAC_TRY(view_make(be, ex, 4, qmd(e->pd, dnnl_query_workspace_md, 0)));
        ex->ready = true;
    }
    if (train) {
        NAC_TRY(cpu_tensor_ensure_plain(be, (nac_tensor_t *)save_mean));
        NAC_TRY(cpu_tensor_ensure_plain(be, (nac_tensor_t *)save_var));
    } else if (!CPU_T(save_mean)->plain || !CPU_T(save_var)->plain) {
        return nac_error(NAC_ERR_INVALID,
                         "%s: save_mean/save_var (%d, %lld) are not in the plain layout a "
                         "training forward writes",
                         op, g, (long long)x->dim[1]);
    }
    dnn_out o;
    NAC_TRY(out_begin(be, ex, 0, y, &CPU_T(x)->md, &o));
    size_t wsb = 0;
    if (mask) { /* the ReLU mask lives with y, where nac_bn_backward finds it */
        wsb = dnnl_memory_desc_get_size(qmd(e->pd, dnnl_query_workspace_md, 0));
        NAC_TRY(ws_ensure(CPU_T(y), wsb * (size_t)g, op));
    }
    int64_t c = x->dim[1];
    double n = (double)(x->dim[0] / g) * (x->ndim == 4 ? (double)(x->dim[2] * x->dim[3]) : 1.0);
    float m = p->momentum, unbias = (float)(n / (n - 1.0));
    char *px = (char *)CPU_T(x)->ptr, *py = mem_ptr(o.mem);
    float *sm = CPU_T(save_mean)->ptr, *sv = CPU_T(save_var)->ptr;
    for (int i = 0; i < g; i++) {
        dnnl_exec_arg_t a[9] = {
            {DNNL_ARG_SRC, view_at(ex, 0, px + (size_t)i * sbytes)},
            {DNNL_ARG_DST, view_at(ex, 1, py + (size_t)i * sbytes)},
            {DNNL_ARG_MEAN, view_at(ex, 2, sm + i * c)},
            {DNNL_ARG_VARIANCE, view_at(ex, 3, sv + i * c)},
            {DNNL_ARG_SCALE, CPU_T(gamma)->mem},
            {DNNL_ARG_SHIFT, CPU_T(beta)->mem},
        };
        int na = 6;
        if (mask)
            a[na++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE,
                                        view_at(ex, 4, (char *)CPU_T(y)->ws + (size_t)i * wsb)};
        NAC_TRY(run(be, e, na, a));
        if (!train) continue;
        /* PyTorch: one train-mode forward per group, the unbiased variance for the running
           estimate, the biased one for normalising */
        float *rm = CPU_T(running_mean)->ptr, *rv = CPU_T(running_var)->ptr;
        for (int64_t j = 0; j < c; j++) {
            rm[j] = (1.0f - m) * rm[j] + m * sm[i * c + j];
            rv[j] = (1.0f - m) * rv[j] + m * sv[i * c + j] * unbias;
        }
    }
    return out_end(be, &o);
}

nac_status cpu_bn_fwd_train(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *gamma,
                            const nac_tensor_t *beta, nac_tensor_t *y, nac_tensor_t *running_mean,
                            nac_tensor_t *running_var, nac_tensor_t *save_mean,
                            nac_tensor_t *save_var, const nac_bn_params *p) {
    return bn_fwd_groups(be, x, gamma, beta, y, running_mean, running_var, save_mean, save_var,
                         p, true);
}

nac_status cpu_bn_fwd_saved(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *gamma,
                            const nac_tensor_t *beta, const nac_tensor_t *save_mean,
                            const nac_tensor_t *save_var, nac_tensor_t *y,
                            const nac_bn_params *p) {
    return bn_fwd_groups(be, x, gamma, beta, y, NULL, NULL, save_mean, save_var, p, false);
}

nac_status cpu_bn_fwd_infer(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *gamma,
                            const nac_tensor_t *beta, const nac_tensor_t *running_mean,
                            const nac_tensor_t *running_var, nac_tensor_t *y,
                            const nac_bn_params *p) {
    const char *op = "nac_bn_forward_infer";
    dnn_key k;
    bn_key(&k, OP_BN_INFER, x, p);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_primitive_desc_t pd;
        NAC_TRY(bn_fwd_pd(be, &CPU_T(x)->md, p->eps, bn_flags(p, true), dnnl_forward_inference,
                          op, &pd));
        NAC_TRY(entry_add(be, &k, pd, NULL, op, &e));
    }
    dnn_out o;
    NAC_TRY(out_begin(be, e->extra, 0, y, &CPU_T(x)->md, &o));
    dnnl_exec_arg_t a[8] = {
        {DNNL_ARG_SRC, CPU_T(x)->mem},
        {DNNL_ARG_DST, o.mem},
        {DNNL_ARG_MEAN, CPU_T(running_mean)->mem},
        {DNNL_ARG_VARIANCE, CPU_T(running_var)->mem},
        {DNNL_ARG_SCALE, CPU_T(gamma)->mem},
        {DNNL_ARG_SHIFT, CPU_T(beta)->mem},
    };
    NAC_TRY(run(be, e, 6, a));
    return out_end(be, &o);
}

nac_status cpu_bn_bwd(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *y,
                      const nac_tensor_t *dy, const nac_tensor_t *gamma,
                      const nac_tensor_t *save_mean, const nac_tensor_t *save_var,
                      nac_tensor_t *dx, nac_tensor_t *dgamma, nac_tensor_t *dbeta,
                      const nac_bn_params *p) {
    const char *op = "nac_bn_backward";
    int g = p->groups;
    int64_t c = x->dim[1];
    dnnl_memory_desc_t smd;
    size_t sbytes;
    NAC_TRY(bn_slice(x, g, op, &smd, &sbytes));
    dnn_key k;
    bn_key(&k, OP_BN_BWD, x, p);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_primitive_desc_t hint;
        unsigned flags = bn_flags(p, false);
        NAC_TRY(bn_fwd_pd(be, &smd, p->eps, flags, dnnl_forward_training, op, &hint));
        dnnl_batch_normalization_desc_t d;
        dnnl_status_t init = dnnl_batch_normalization_backward_desc_init(&d, dnnl_backward, &smd,
                                                                         &smd, p->eps, flags);
        NAC_TRY(entry_add_bwd(be, &k, init, &d, hint, op, &e));
    }
    dnn_extra *ex = e->extra;
    if (!ex->ready) {
        dnnl_memory_desc_t cmd;
        md_plain(&cmd, 1, &c);
        for (int i = 0; i < 3; i++) NAC_TRY(view_make(be, ex, i, &smd));
        for (int i = 3; i < 5; i++) NAC_TRY(view_make(be, ex, i, &cmd));
        for (int i = 6; i < 8; i++) NAC_TRY(view_make(be, ex, i, &cmd));
        if (p->relu) NAC_TRY(view_make(be, ex, 5, qmd(e->pd, dnnl_query_workspace_md, 0)));
        if (g > 1 && !(ex->acc = malloc(2 * (size_t)c * sizeof(float))))
            return nac_error(NAC_ERR_NOMEM, "%s: out of memory", op);
        ex->ready = true;
    }
    size_t wsb = 0;
    if (p->relu) {
        wsb = dnnl_memory_desc_get_size(qmd(e->pd, dnnl_query_workspace_md, 0));
        if (!CPU_T(y)->ws || CPU_T(y)->ws_bytes != wsb * (size_t)g)
            return nac_error(NAC_ERR_INVALID,
                             "%s: y holds no ReLU mask from nac_bn_forward_train with these "
                             "shapes, groups=%d and relu",
                             op, g);
    }
    const dnnl_memory_desc_t *xmd = &CPU_T(x)->md;
    dnnl_memory_t mdy;
    dnn_out o;
    NAC_TRY(in_as(be, ex, 0, dy, xmd, &mdy));
    NAC_TRY(out_begin(be, ex, 1, dx, xmd, &o));
    NAC_TRY(cpu_tensor_ensure_plain(be, dgamma));
    NAC_TRY(cpu_tensor_ensure_plain(be, dbeta));
    char *px = (char *)CPU_T(x)->ptr, *pdy = mem_ptr(mdy), *pdx = mem_ptr(o.mem);
    float *sm = CPU_T(save_mean)->ptr, *sv = CPU_T(save_var)->ptr;
    float *dgm = CPU_T(dgamma)->ptr, *dbt = CPU_T(dbeta)->ptr;
    for (int i = 0; i < g; i++) {
        /* group 0 writes the parameter gradients, later groups add theirs */
        float *pg = i ? ex->acc : dgm, *pb = i ? ex->acc + c : dbt;
        dnnl_exec_arg_t a[12] = {
            {DNNL_ARG_SRC, view_at(ex, 0, px + (size_t)i * sbytes)},
            {DNNL_ARG_DIFF_DST, view_at(ex, 1, pdy + (size_t)i * sbytes)},
            {DNNL_ARG_DIFF_SRC, view_at(ex, 2, pdx + (size_t)i * sbytes)},
            {DNNL_ARG_MEAN, view_at(ex, 3, sm + i * c)},
            {DNNL_ARG_VARIANCE, view_at(ex, 4, sv + i * c)},
            {DNNL_ARG_SCALE, CPU_T(gamma)->mem},
            /* oneDNN 2.6 insists on a shift argument it never reads in the backward */
            {DNNL_ARG_SHIFT, CPU_T(gamma)->mem},
            {DNNL_ARG_DIFF_SCALE, view_at(ex, 6, pg)},
            {DNNL_ARG_DIFF_SHIFT, view_at(ex, 7, pb)},
        };
        int na = 9;
        if (p->relu)
            a[na++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE,
                                        view_at(ex, 5, (char *)CPU_T(y)->ws + (size_t)i * wsb)};
        NAC_TRY(run(be, e, na, a));
        for (int64_t j = 0; i && j < c; j++) {
            dgm[j] += pg[j];
            dbt[j] += pb[j];
        }
    }
    return out_end(be, &o);
}

/* ---- synchronised batch norm: plain loops over (N, C, HW), one channel of one group at
 * a time summed in double in image order (thread-count independent) ---- */
typedef struct bn_plain {
    const float *x, *dy;      /* (N, C, HW) */
    const float *gamma, *beta, *mean, *var;
    int64_t n, c, hw;
    int groups;
    float eps;
    bool relu;
} bn_plain;

/* x and dy (if not NULL) in the plain layout, through the entry's buffers when they are
 * in another; the entry of x's shape and layouts in *ex. */
static nac_status bn_plain_in(nac_backend_t *be, const char *op, const nac_tensor_t *x,
                              const nac_tensor_t *dy, const nac_bn_params *p, bn_plain *b,
                              dnn_extra **ex) {
    dnn_key k;
    key_init(&k, OP_BN_SYNC);
    key_tensor(&k, x);
    if (dy) key_tensor(&k, dy);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) NAC_TRY(entry_bare(be, &k, op, &e));
    *ex = e->extra;
    dnnl_memory_desc_t pmd;
    md_plain(&pmd, x->ndim, x->dim);
    dnnl_memory_t m;
    NAC_TRY(in_as(be, *ex, 0, x, &pmd, &m));
    *b = (bn_plain){.x = mem_ptr(m), .n = x->dim[0], .c = x->dim[1],
                    .hw = x->ndim == 4 ? x->dim[2] * x->dim[3] : 1, .groups = p->groups,
                    .eps = p->eps, .relu = p->relu};
    if (dy) {
        NAC_TRY(in_as(be, *ex, 1, dy, &pmd, &m));
        b->dy = mem_ptr(m);
    }
    return NAC_OK;
}

static void bn_plain_stats(bn_plain *b, const nac_tensor_t *gamma, const nac_tensor_t *beta,
                           const nac_tensor_t *mean, const nac_tensor_t *var) {
    b->gamma = CPU_T(gamma)->ptr;
    b->beta = CPU_T(beta)->ptr;
    b->mean = CPU_T(mean)->ptr;
    b->var = CPU_T(var)->ptr;
}

/* The element (image i of group g, channel ch, position j). */
static int64_t bn_plain_at(const bn_plain *b, int64_t g, int64_t ch, int64_t i, int64_t j) {
    return ((g * (b->n / b->groups) + i) * b->c + ch) * b->hw + j;
}

/* dy masked by the fused ReLU, the mask recomputed from x and the statistics */
static float bn_plain_dy(const bn_plain *b, int64_t s, int64_t ch, int64_t at, float inv) {
    if (b->relu && !((b->x[at] - b->mean[s]) * inv * b->gamma[ch] + b->beta[ch] > 0.0f))
        return 0.0f;
    return b->dy[at];
}

/* Channel ch of group g, s = g C + ch: forward (dy NULL) the mean and the mean square
 * around it (two passes); backward sums rows g, groups + g: sum dy', sum dy' xhat. */
static void bn_plain_channel(const bn_plain *b, int64_t s, double *r1, double *r2) {
    int64_t g = s / b->c, ch = s % b->c, ng = b->n / b->groups;
    double s1 = 0, s2 = 0, cnt = (double)ng * (double)b->hw;
    if (!b->dy) {
        for (int64_t i = 0; i < ng; i++)
            for (int64_t j = 0; j < b->hw; j++) s1 += b->x[bn_plain_at(b, g, ch, i, j)];
        double mu = s1 / cnt;
        for (int64_t i = 0; i < ng; i++)
            for (int64_t j = 0; j < b->hw; j++) {
                double d = b->x[bn_plain_at(b, g, ch, i, j)] - mu;
                s2 += d * d;
            }
        *r1 = mu;
        *r2 = s2 / cnt;
        return;
    }
    double mu = b->mean[s], dinv = 1.0 / sqrt((double)b->var[s] + b->eps);
    float inv = 1.0f / sqrtf(b->var[s] + b->eps);
    for (int64_t i = 0; i < ng; i++)
        for (int64_t j = 0; j < b->hw; j++) {
            int64_t at = bn_plain_at(b, g, ch, i, j);
            double d = bn_plain_dy(b, s, ch, at, inv);
            s1 += d;
            s2 += d * (b->x[at] - mu) * dinv;
        }
    *r1 = s1;
    *r2 = s2;
}

/* every (group, channel): r1[s], r2[s] of bn_plain_channel */
static void bn_plain_reduce(const bn_plain *b, float *r1, float *r2) {
    int64_t gc = (int64_t)b->groups * b->c;
#pragma omp parallel for if (b->n * b->c * b->hw > PAR_MIN)
    for (int64_t s = 0; s < gc; s++) {
        double a, q;
        bn_plain_channel(b, s, &a, &q);
        r1[s] = (float)a;
        r2[s] = (float)q;
    }
}

static nac_status bn_plain_check(const char *op, const nac_tensor_t *const *t, int n) {
    for (int i = 0; i < n; i++)
        if (!CPU_T(t[i])->plain)
            return nac_error(NAC_ERR_INVALID, "%s: statistics tensor %d is not plain", op, i);
    return NAC_OK;
}

nac_status cpu_bn_stats(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *mean,
                        nac_tensor_t *var, const nac_bn_params *p) {
    bn_plain b;
    dnn_extra *ex;
    NAC_TRY(bn_plain_in(be, "nac_bn_stats", x, NULL, p, &b, &ex));
    NAC_TRY(cpu_tensor_ensure_plain(be, mean));
    NAC_TRY(cpu_tensor_ensure_plain(be, var));
    bn_plain_reduce(&b, CPU_T(mean)->ptr, CPU_T(var)->ptr);
    return NAC_OK;
}

nac_status cpu_bn_bwd_sums(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *dy,
                           const nac_tensor_t *gamma, const nac_tensor_t *beta,
                           const nac_tensor_t *mean, const nac_tensor_t *var, nac_tensor_t *sums,
                           const nac_bn_params *p) {
    const char *op = "nac_bn_backward_sums";
    const nac_tensor_t *st[] = {gamma, beta, mean, var};
    NAC_TRY(bn_plain_check(op, st, 4));
    bn_plain b;
    dnn_extra *ex;
    NAC_TRY(bn_plain_in(be, op, x, dy, p, &b, &ex));
    bn_plain_stats(&b, gamma, beta, mean, var);
    NAC_TRY(cpu_tensor_ensure_plain(be, sums));
    float *ps = CPU_T(sums)->ptr;
    bn_plain_reduce(&b, ps, ps + (int64_t)b.groups * b.c);
    return NAC_OK;
}

nac_status cpu_bn_bwd_given(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *dy,
                            const nac_tensor_t *gamma, const nac_tensor_t *beta,
                            const nac_tensor_t *mean, const nac_tensor_t *var,
                            const nac_tensor_t *dmeans, nac_tensor_t *dx,
                            const nac_bn_params *p) {
    const char *op = "nac_bn_backward_given";
    const nac_tensor_t *st[] = {gamma, beta, mean, var, dmeans};
    NAC_TRY(bn_plain_check(op, st, 5));
    bn_plain b;
    dnn_extra *ex;
    NAC_TRY(bn_plain_in(be, op, x, dy, p, &b, &ex));
    bn_plain_stats(&b, gamma, beta, mean, var);
    if (!dx->impl) NAC_TRY(cpu_tensor_ensure(be, dx, &CPU_T(x)->md));
    dnnl_memory_desc_t pmd;
    md_plain(&pmd, x->ndim, x->dim);
    dnn_out o;
    NAC_TRY(out_begin(be, ex, 2, dx, &pmd, &o));
    float *pdx = mem_ptr(o.mem);
    const float *dm = CPU_T(dmeans)->ptr;
    int64_t gc = (int64_t)b.groups * b.c, total = b.n * b.c * b.hw;
#pragma omp parallel for if (total > PAR_MIN)
    for (int64_t at = 0; at < total; at++) {
        int64_t ch = (at / b.hw) % b.c, s = at / (b.hw * b.c) / (b.n / b.groups) * b.c + ch;
        float inv = 1.0f / sqrtf(b.var[s] + b.eps), xhat = (b.x[at] - b.mean[s]) * inv;
        pdx[at] = b.gamma[ch] * inv * (bn_plain_dy(&b, s, ch, at, inv) - dm[s] - xhat * dm[gc + s]);
    }
    return out_end(be, &o);
}

/* ---- pooling, global average pooling, upsampling ---- */
static nac_status pool_fwd_pd(nac_backend_t *be, dnnl_alg_kind_t alg,
                              const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst,
                              const dnnl_dim_t *kernel, const dnnl_dim_t *stride, int pad,
                              const char *op, dnnl_primitive_desc_t *pd) {
    dnnl_dims_t kr = {kernel[0], kernel[1]}, st = {stride[0], stride[1]}, pd_ = {pad, pad};
    dnnl_pooling_desc_t d;
    DNNL_TRY(dnnl_pooling_forward_desc_init(&d, dnnl_forward_training, alg, src, dst, st, kr,
                                            pd_, pd_));
    return pd_make(be, &d, NULL, op, pd);
}

static dnnl_alg_kind_t pool_alg(nac_pool kind) {
    return kind == NAC_POOL_MAX ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding;
}

static void pool_key(dnn_key *k, enum dnn_op op, const nac_pool_params *p, const nac_tensor_t *x) {
    key_init(k, op);
    key_add(k, p->kind);
    key_add(k, p->kernel);
    key_add(k, p->stride);
    key_add(k, p->pad);
    key_tensor(k, x);
}

nac_status cpu_pool_fwd(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y,
                        const nac_pool_params *p) {
    const char *op = "nac_pool_forward";
    if (p->kind != NAC_POOL_MAX && p->kind != NAC_POOL_AVG)
        return nac_error(NAC_ERR_INVALID, "%s: unknown pooling kind %d", op, (int)p->kind);
    dnn_key k;
    pool_key(&k, OP_POOL_FWD, p, x);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_memory_desc_t ymd;
        md_like(&CPU_T(x)->md, y->dim, &ymd);
        dnnl_dims_t kr = {p->kernel, p->kernel}, st = {p->stride, p->stride};
        dnnl_primitive_desc_t pd;
        NAC_TRY(pool_fwd_pd(be, pool_alg(p->kind), &CPU_T(x)->md, &ymd, kr, st, p->pad, op, &pd));
        NAC_TRY(entry_add(be, &k, pd, NULL, op, &e));
    }
    dnn_out o;
    NAC_TRY(out_begin(be, e->extra, 0, y, qmd(e->pd, dnnl_query_dst_md, 0), &o));
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, CPU_T(x)->mem}, {DNNL_ARG_DST, o.mem}};
    int n = 2;
    if (p->kind == NAC_POOL_MAX) { /* the arg-max indices stay with y for the backward */
        const dnnl_memory_desc_t *wmd = qmd(e->pd, dnnl_query_workspace_md, 0);
        cpu_tensor *cy = CPU_T(y);
        NAC_TRY(ws_ensure(cy, dnnl_memory_desc_get_size(wmd), op));
        const dnnl_memory_desc_t *have = NULL;
        if (cy->ws_mem) DNNL_TRY(dnnl_memory_get_memory_desc(cy->ws_mem, &have));
        if (!have || !dnnl_memory_desc_equal(have, wmd)) {
            if (cy->ws_mem) dnnl_memory_destroy(cy->ws_mem);
            cy->ws_mem = NULL;
            DNNL_TRY(dnnl_memory_create(&cy->ws_mem, wmd, CPU_CTX(be)->engine, cy->ws));
        }
        a[n++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, cy->ws_mem};
    }
    NAC_TRY(run(be, e, n, a));
    return out_end(be, &o);
}

nac_status cpu_pool_bwd(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *y,
                        const nac_tensor_t *dy, nac_tensor_t *dx, const nac_pool_params *p) {
    const char *op = "nac_pool_backward";
    if (p->kind != NAC_POOL_MAX && p->kind != NAC_POOL_AVG)
        return nac_error(NAC_ERR_INVALID, "%s: unknown pooling kind %d", op, (int)p->kind);
    dnn_key k;
    pool_key(&k, OP_POOL_BWD, p, x);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        const dnnl_memory_desc_t *xmd = &CPU_T(x)->md;
        dnnl_memory_desc_t ymd;
        md_like(xmd, y->dim, &ymd);
        dnnl_dims_t kr = {p->kernel, p->kernel}, st = {p->stride, p->stride};
        dnnl_dims_t pad = {p->pad, p->pad};
        dnnl_primitive_desc_t hint;
        NAC_TRY(pool_fwd_pd(be, pool_alg(p->kind), xmd, &ymd, kr, st, p->pad, op, &hint));
        dnnl_pooling_desc_t d;
        dnnl_status_t init =
            dnnl_pooling_backward_desc_init(&d, pool_alg(p->kind), xmd, &ymd, st, kr, pad, pad);
        NAC_TRY(entry_add_bwd(be, &k, init, &d, hint, op, &e));
    }
    dnn_extra *ex = e->extra;
    dnnl_memory_t mdy;
    dnn_out o;
    NAC_TRY(in_as(be, ex, 0, dy, qmd(e->pd, dnnl_query_diff_dst_md, 0), &mdy));
    NAC_TRY(out_begin(be, ex, 1, dx, qmd(e->pd, dnnl_query_diff_src_md, 0), &o));
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_DIFF_SRC, o.mem}};
    int n = 2;
    if (p->kind == NAC_POOL_MAX) {
        const dnnl_memory_desc_t *wmd = qmd(e->pd, dnnl_query_workspace_md, 0), *have = NULL;
        cpu_tensor *cy = CPU_T(y);
        if (cy->ws_mem) DNNL_TRY(dnnl_memory_get_memory_desc(cy->ws_mem, &have));
        if (!have || !dnnl_memory_desc_equal(have, wmd))
            return nac_error(NAC_ERR_INVALID,
                             "%s: y holds no arg-max indices from nac_pool_forward with these "
                             "shapes",
                             op);
        a[n++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, cy->ws_mem};
    }
    NAC_TRY(run(be, e, n, a));
    return out_end(be, &o);
}

/* gap_fwd remembers the layout of its input per shape, so that gap_bwd gives an
 * unallocated dx the layout the forward pass used. */
static nac_status gap_memo(nac_backend_t *be, const nac_tensor_t *x, const dnnl_memory_desc_t *set,
                           const dnnl_memory_desc_t **get) {
    dnn_key k;
    key_init(&k, OP_GAP_MEMO);
    key_dims(&k, x);
    cpu_cache_entry *e = key_find(be, &k);
    if (get) {
        *get = e ? e->extra : NULL;
        return NAC_OK;
    }
    if (!e) {
        dnnl_memory_desc_t *m = malloc(sizeof *m);
        e = m ? cpu_cache_insert(CPU_CTX(be), k.v, (size_t)k.n * sizeof k.v[0], NULL, NULL, m)
              : NULL;
        if (!e) return nac_error(NAC_ERR_NOMEM, "nac_gap_forward: out of memory");
    }
    memcpy(e->extra, set, sizeof *set);
    return NAC_OK;
}

nac_status cpu_gap_fwd(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    const char *op = "nac_gap_forward";
    const dnnl_memory_desc_t *xmd = &CPU_T(x)->md;
    int64_t d1[4] = {x->dim[0], x->dim[1], 1, 1};
    dnn_key k;
    key_init(&k, OP_GAP_FWD);
    key_tensor(&k, x);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_memory_desc_t pmd;
        md_like(xmd, d1, &pmd);
        dnnl_dims_t kr = {x->dim[2], x->dim[3]};
        dnnl_primitive_desc_t pd;
        NAC_TRY(pool_fwd_pd(be, dnnl_pooling_avg_exclude_padding, xmd, &pmd, kr, kr, 0, op, &pd));
        NAC_TRY(entry_add(be, &k, pd, NULL, op, &e));
    }
    dnn_extra *ex = e->extra;
    if (!ex->ready) { /* y (N,C) seen as (N,C,1,1) */
        dnnl_memory_desc_t ymd;
        md_plain(&ymd, 4, d1);
        NAC_TRY(view_make(be, ex, 0, &ymd));
        ex->ready = true;
    }
    NAC_TRY(gap_memo(be, x, xmd, NULL));
    NAC_TRY(cpu_tensor_ensure_plain(be, y));
    dnnl_memory_t yv = view_at(ex, 0, CPU_T(y)->ptr), dst = yv;
    const dnnl_memory_desc_t *pmd = qmd(e->pd, dnnl_query_dst_md, 0), *vmd;
    DNNL_TRY(dnnl_memory_get_memory_desc(yv, &vmd));
    if (!dnnl_memory_desc_equal(pmd, vmd)) NAC_TRY(slot_mem(be, ex, 0, pmd, &dst));
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_SRC, CPU_T(x)->mem}, {DNNL_ARG_DST, dst}};
    NAC_TRY(run(be, e, 2, a));
    return dst == yv ? NAC_OK : cpu_reorder(be, dst, yv);
}

nac_status cpu_gap_bwd(nac_backend_t *be, const nac_tensor_t *dy, nac_tensor_t *dx) {
    const char *op = "nac_gap_backward";
    if (!dx->impl) {
        const dnnl_memory_desc_t *seen;
        NAC_TRY(gap_memo(be, dx, NULL, &seen));
        if (seen) NAC_TRY(cpu_tensor_ensure(be, dx, seen));
        else NAC_TRY(cpu_tensor_ensure_plain(be, dx));
    }
    const dnnl_memory_desc_t *xmd = &CPU_T(dx)->md;
    int64_t d1[4] = {dx->dim[0], dx->dim[1], 1, 1};
    dnn_key k;
    key_init(&k, OP_GAP_BWD);
    key_tensor(&k, dx);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_memory_desc_t pmd;
        md_like(xmd, d1, &pmd);
        dnnl_dims_t kr = {dx->dim[2], dx->dim[3]};
        dnnl_dims_t st = {kr[0], kr[1]}, pad = {0, 0};
        dnnl_primitive_desc_t hint;
        NAC_TRY(pool_fwd_pd(be, dnnl_pooling_avg_exclude_padding, xmd, &pmd, kr, kr, 0, op,
                            &hint));
        dnnl_pooling_desc_t d;
        dnnl_status_t init = dnnl_pooling_backward_desc_init(&d, dnnl_pooling_avg_exclude_padding,
                                                             xmd, &pmd, st, st, pad, pad);
        NAC_TRY(entry_add_bwd(be, &k, init, &d, hint, op, &e));
    }
    dnn_extra *ex = e->extra;
    if (!ex->ready) { /* dy (N,C) seen as (N,C,1,1) */
        dnnl_memory_desc_t ymd;
        md_plain(&ymd, 4, d1);
        NAC_TRY(view_make(be, ex, 0, &ymd));
        ex->ready = true;
    }
    dnnl_memory_t yv = view_at(ex, 0, CPU_T(dy)->ptr), src = yv;
    const dnnl_memory_desc_t *pmd = qmd(e->pd, dnnl_query_diff_dst_md, 0), *vmd;
    DNNL_TRY(dnnl_memory_get_memory_desc(yv, &vmd));
    if (!dnnl_memory_desc_equal(pmd, vmd)) {
        NAC_TRY(slot_mem(be, ex, 0, pmd, &src));
        NAC_TRY(cpu_reorder(be, yv, src));
    }
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_DIFF_DST, src}, {DNNL_ARG_DIFF_SRC, CPU_T(dx)->mem}};
    return run(be, e, 2, a);
}

static nac_status up_fwd_pd(nac_backend_t *be, const dnnl_memory_desc_t *src,
                            const dnnl_memory_desc_t *dst, const char *op,
                            dnnl_primitive_desc_t *pd) {
    dnnl_resampling_desc_t d;
    DNNL_TRY(dnnl_resampling_forward_desc_init(&d, dnnl_forward_training, dnnl_resampling_nearest,
                                               NULL, src, dst));
    return pd_make(be, &d, NULL, op, pd);
}

nac_status cpu_upsample_fwd(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    const char *op = "nac_upsample_forward";
    dnn_key k;
    key_init(&k, OP_UP_FWD);
    key_tensor(&k, x);
    key_dims(&k, y);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_memory_desc_t ymd;
        md_like(&CPU_T(x)->md, y->dim, &ymd);
        dnnl_primitive_desc_t pd;
        NAC_TRY(up_fwd_pd(be, &CPU_T(x)->md, &ymd, op, &pd));
        NAC_TRY(entry_add(be, &k, pd, NULL, op, &e));
    }
    dnn_out o;
    NAC_TRY(out_begin(be, e->extra, 0, y, qmd(e->pd, dnnl_query_dst_md, 0), &o));
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_SRC, CPU_T(x)->mem}, {DNNL_ARG_DST, o.mem}};
    NAC_TRY(run(be, e, 2, a));
    return out_end(be, &o);
}

nac_status cpu_upsample_bwd(nac_backend_t *be, const nac_tensor_t *dy, nac_tensor_t *dx) {
    const char *op = "nac_upsample_backward";
    dnn_key k;
    key_init(&k, OP_UP_BWD);
    key_tensor(&k, dy);
    key_dims(&k, dx);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        const dnnl_memory_desc_t *ymd = &CPU_T(dy)->md;
        dnnl_memory_desc_t xmd;
        md_like(ymd, dx->dim, &xmd);
        dnnl_primitive_desc_t hint;
        NAC_TRY(up_fwd_pd(be, &xmd, ymd, op, &hint));
        dnnl_resampling_desc_t d;
        dnnl_status_t init =
            dnnl_resampling_backward_desc_init(&d, dnnl_resampling_nearest, NULL, &xmd, ymd);
        NAC_TRY(entry_add_bwd(be, &k, init, &d, hint, op, &e));
    }
    dnn_out o;
    NAC_TRY(out_begin(be, e->extra, 0, dx, qmd(e->pd, dnnl_query_diff_src_md, 0), &o));
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_DIFF_DST, CPU_T(dy)->mem}, {DNNL_ARG_DIFF_SRC, o.mem}};
    NAC_TRY(run(be, e, 2, a));
    return out_end(be, &o);
}

/* ---- element-wise ---- */
/* The _use_dst_for_bwd variants for the kinds whose backward reads y (backend.h). */
static dnnl_alg_kind_t act_alg(nac_act kind) {
    switch (kind) {
    case NAC_ACT_RELU: return dnnl_eltwise_relu;
    case NAC_ACT_TANH: return dnnl_eltwise_tanh_use_dst_for_bwd;
    case NAC_ACT_SIGMOID: return dnnl_eltwise_logistic_use_dst_for_bwd;
    case NAC_ACT_EXP: return dnnl_eltwise_exp_use_dst_for_bwd;
    case NAC_ACT_LOG: return dnnl_eltwise_log;
    case NAC_ACT_SQUARE: return dnnl_eltwise_square;
    case NAC_ACT_SQRT: return dnnl_eltwise_sqrt_use_dst_for_bwd;
    case NAC_ACT_ABS: return dnnl_eltwise_abs;
    case NAC_ACT_SOFTPLUS: return dnnl_eltwise_soft_relu;
    case NAC_ACT_LINEAR: return dnnl_eltwise_linear;
    }
    return dnnl_alg_kind_undef;
}

static bool act_uses_y(nac_act kind) {
    return kind == NAC_ACT_TANH || kind == NAC_ACT_SIGMOID || kind == NAC_ACT_EXP ||
           kind == NAC_ACT_SQRT;
}

static nac_status act_fwd_pd(nac_backend_t *be, dnnl_alg_kind_t alg, const dnnl_memory_desc_t *md,
                             float alpha, float beta, const char *op, dnnl_primitive_desc_t *pd) {
    dnnl_eltwise_desc_t d;
    DNNL_TRY(dnnl_eltwise_forward_desc_init(&d, dnnl_forward_training, alg, md, alpha, beta));
    return pd_make(be, &d, NULL, op, pd);
}

static void act_key(dnn_key *k, enum dnn_op op, nac_act kind, float alpha, float beta,
                    const nac_tensor_t *t) {
    key_init(k, op);
    key_add(k, kind);
    key_float(k, alpha);
    key_float(k, beta);
    key_tensor(k, t);
}

static void precise_loop(nac_act kind, const float *x, float *y, int64_t n) {
    if (kind == NAC_ACT_LOG) {
#pragma omp parallel for if (n > PAR_MIN / 8)
        for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]);
    } else {
#pragma omp parallel for if (n > PAR_MIN / 8)
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] > 0.0f ? x[i] + log1pf(expf(-x[i])) : log1pf(expf(x[i]));
    }
}

/* LOG and SOFTPLUS forwards in libm precision: oneDNN 2.6's vectorised log errs by up to
 * 4e-6 absolutely (30% relatively near x = 1) and its soft_relu by 2e-6 where the result
 * is ~1e-8 (x << 0), which the losses' log-likelihood terms would feel. Element-wise over
 * the physical buffer when the layout has no padding (f(0) != 0 would fill it), else
 * through a plain copy. */
static nac_status act_fwd_precise(nac_backend_t *be, nac_act kind, const nac_tensor_t *x,
                                  nac_tensor_t *y) {
    const char *op = "nac_act_forward";
    const dnnl_memory_desc_t *xmd = &CPU_T(x)->md;
    dnn_key k;
    key_init(&k, OP_ACT_PRECISE);
    key_add(&k, kind);
    key_tensor(&k, x);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) NAC_TRY(entry_bare(be, &k, op, &e));
    dnn_extra *ex = e->extra;
    dnn_out o;
    NAC_TRY(out_begin(be, ex, 0, y, xmd, &o));
    bool padded = false;
    for (int i = 0; i < xmd->ndims; i++) padded |= xmd->dims[i] != xmd->padded_dims[i];
    if (!padded) {
        precise_loop(kind, CPU_T(x)->ptr, mem_ptr(o.mem), (int64_t)(CPU_T(x)->bytes / sizeof(float)));
    } else {
        dnnl_memory_desc_t pmd;
        cpu_plain_md(x, &pmd);
        dnnl_memory_t m;
        NAC_TRY(in_as(be, ex, 1, x, &pmd, &m));
        float *p = mem_ptr(m);
        precise_loop(kind, p, p, nac_tensor_numel(x));
        NAC_TRY(cpu_reorder(be, m, o.mem));
    }
    return out_end(be, &o);
}

nac_status cpu_act_fwd(nac_backend_t *be, nac_act kind, const nac_tensor_t *x, nac_tensor_t *y,
                       float alpha, float beta) {
    const char *op = "nac_act_forward";
    dnnl_alg_kind_t alg = act_alg(kind);
    if (alg == dnnl_alg_kind_undef)
        return nac_error(NAC_ERR_INVALID, "%s: unknown activation %d", op, (int)kind);
    if (kind == NAC_ACT_LOG || kind == NAC_ACT_SOFTPLUS) return act_fwd_precise(be, kind, x, y);
    if (kind != NAC_ACT_LINEAR) alpha = beta = 0.0f; /* RELU: no leak, whatever was passed */
    dnn_key k;
    act_key(&k, OP_ACT_FWD, kind, alpha, beta, x);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_primitive_desc_t pd;
        NAC_TRY(act_fwd_pd(be, alg, &CPU_T(x)->md, alpha, beta, op, &pd));
        NAC_TRY(entry_add(be, &k, pd, NULL, op, &e));
    }
    dnn_out o;
    NAC_TRY(out_begin(be, e->extra, 0, y, &CPU_T(x)->md, &o));
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_SRC, CPU_T(x)->mem}, {DNNL_ARG_DST, o.mem}};
    NAC_TRY(run(be, e, 2, a));
    return out_end(be, &o);
}

nac_status cpu_act_bwd(nac_backend_t *be, nac_act kind, const nac_tensor_t *x,
                       const nac_tensor_t *y, const nac_tensor_t *dy, nac_tensor_t *dx,
                       float alpha, float beta) {
    const char *op = "nac_act_backward";
    dnnl_alg_kind_t alg = act_alg(kind);
    if (alg == dnnl_alg_kind_undef)
        return nac_error(NAC_ERR_INVALID, "%s: unknown activation %d", op, (int)kind);
    if (kind != NAC_ACT_LINEAR) alpha = beta = 0.0f;
    const nac_tensor_t *data = act_uses_y(kind) ? y : x;
    const dnnl_memory_desc_t *md = &CPU_T(data)->md;
    dnn_key k;
    act_key(&k, OP_ACT_BWD, kind, alpha, beta, data);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_primitive_desc_t hint;
        NAC_TRY(act_fwd_pd(be, alg, md, alpha, beta, op, &hint));
        dnnl_eltwise_desc_t d;
        dnnl_status_t init = dnnl_eltwise_backward_desc_init(&d, alg, md, md, alpha, beta);
        NAC_TRY(entry_add_bwd(be, &k, init, &d, hint, op, &e));
    }
    dnn_extra *ex = e->extra;
    dnnl_memory_t mdy;
    dnn_out o;
    NAC_TRY(in_as(be, ex, 0, dy, md, &mdy)); /* gradients follow the data's layout */
    NAC_TRY(out_begin(be, ex, 1, dx, md, &o));
    dnnl_exec_arg_t a[4] = {{act_uses_y(kind) ? DNNL_ARG_DST : DNNL_ARG_SRC, CPU_T(data)->mem},
                            {DNNL_ARG_DIFF_DST, mdy},
                            {DNNL_ARG_DIFF_SRC, o.mem}};
    NAC_TRY(run(be, e, 3, a));
    return out_end(be, &o);
}

nac_status cpu_binary(nac_backend_t *be, nac_binop kind, const nac_tensor_t *a,
                      const nac_tensor_t *b, nac_tensor_t *y) {
    const char *op = "nac_binary";
    static const dnnl_alg_kind_t algs[] = {dnnl_binary_add, dnnl_binary_sub, dnnl_binary_mul,
                                           dnnl_binary_div, dnnl_binary_max};
    if (kind < NAC_BIN_ADD || kind > NAC_BIN_MAX)
        return nac_error(NAC_ERR_INVALID, "%s: unknown operation %d", op, (int)kind);
    if (!y->impl) NAC_TRY(cpu_tensor_ensure(be, y, &CPU_T(a)->md));
    cpu_tensor *ca = CPU_T(a), *cb = CPU_T(b), *cy = CPU_T(y);
    if (kind != NAC_BIN_DIV && ca->layout_id == cy->layout_id) {
        /* one layout: a flat loop over the storage, padding included (zero op zero stays
           zero for these four), any aliasing allowed; b first into that layout through a
           cached buffer if it has another. oneDNN 2.6 has no JIT kernel for mixed or some
           blocked layouts (8-channel blocks) and falls back to its reference one. */
        const float *pa = ca->ptr, *pb = cb->ptr;
        if (cb->layout_id != ca->layout_id) {
            dnn_key k;
            key_init(&k, OP_BINARY);
            key_add(&k, -1);
            key_tensor(&k, a);
            key_tensor(&k, b);
            cpu_cache_entry *e = key_find(be, &k);
            if (!e) NAC_TRY(entry_bare(be, &k, op, &e));
            dnnl_memory_t mb;
            NAC_TRY(in_as(be, e->extra, 0, b, &ca->md, &mb));
            pb = mem_ptr(mb);
        }
        float *py = cy->ptr;
        int64_t n = (int64_t)(cy->bytes / sizeof(float));
        switch (kind) {
        case NAC_BIN_ADD:
#pragma omp parallel for simd if (n > 32768)
            for (int64_t i = 0; i < n; i++) py[i] = pa[i] + pb[i];
            break;
        case NAC_BIN_SUB:
#pragma omp parallel for simd if (n > 32768)
            for (int64_t i = 0; i < n; i++) py[i] = pa[i] - pb[i];
            break;
        case NAC_BIN_MUL:
#pragma omp parallel for simd if (n > 32768)
            for (int64_t i = 0; i < n; i++) py[i] = pa[i] * pb[i];
            break;
        default:
#pragma omp parallel for simd if (n > 32768)
            for (int64_t i = 0; i < n; i++) py[i] = pa[i] > pb[i] ? pa[i] : pb[i];
            break;
        }
        return NAC_OK;
    }
    /* oneDNN computes in place over src0 only: y == b goes through a buffer unless the
       operation commutes */
    bool over_b = CPU_T(y)->ptr == CPU_T(b)->ptr && CPU_T(y)->ptr != CPU_T(a)->ptr;
    if (over_b && kind != NAC_BIN_SUB && kind != NAC_BIN_DIV) {
        const nac_tensor_t *t = a;
        a = b;
        b = t;
        over_b = false;
    }
    dnn_key k;
    key_init(&k, OP_BINARY);
    key_add(&k, kind);
    key_tensor(&k, a);
    key_tensor(&k, b);
    key_tensor(&k, y);
    cpu_cache_entry *e = key_find(be, &k);
    if (!e) {
        dnnl_binary_desc_t d;
        DNNL_TRY(dnnl_binary_desc_init(&d, algs[kind], &CPU_T(a)->md, &CPU_T(b)->md,
                                       &CPU_T(y)->md));
        dnnl_primitive_desc_t pd;
        NAC_TRY(pd_make(be, &d, NULL, op, &pd));
        NAC_TRY(entry_add(be, &k, pd, NULL, op, &e));
    }
    dnnl_memory_t dst = CPU_T(y)->mem;
    if (over_b) NAC_TRY(slot_mem(be, e->extra, 0, &CPU_T(y)->md, &dst));
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_SRC_0, CPU_T(a)->mem}, {DNNL_ARG_SRC_1, CPU_T(b)->mem}, {DNNL_ARG_DST, dst}};
    NAC_TRY(run(be, e, 3, args));
    if (over_b) memcpy(CPU_T(y)->ptr, mem_ptr(dst), CPU_T(y)->bytes);
    return NAC_OK;
}

nac_status cpu_axpby(nac_backend_t *be, float alpha, const nac_tensor_t *x, float beta,
                     nac_tensor_t *y) {
    const char *op = "nac_axpby";
    if (!y->impl) NAC_TRY(cpu_tensor_ensure(be, y, &CPU_T(x)->md));
    cpu_tensor *cx = CPU_T(x), *cy = CPU_T(y);
    const float *px = cx->ptr;
    if (cx->layout_id != cy->layout_id) { /* x in y's layout, through a cached buffer */
        dnn_key k;
        key_init(&k, OP_AXPBY);
        key_tensor(&k, x);
        key_tensor(&k, y);
        cpu_cache_entry *e = key_find(be, &k);
        if (!e) NAC_TRY(entry_bare(be, &k, op, &e));
        dnnl_memory_t m;
        NAC_TRY(slot_mem(be, e->extra, 0, &cy->md, &m));
        NAC_TRY(cpu_reorder(be, cx->mem, m));
        px = mem_ptr(m);
    }
    /* over the physical elements: zero padding stays zero (alpha*0 + beta*0) */
    int64_t n = (int64_t)(cy->bytes / sizeof(float));
    float *py = cy->ptr;
    if (beta == 0.0f) { /* overwrite: never read y, which may hold anything */
#pragma omp parallel for if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) py[i] = alpha * px[i];
    } else {
#pragma omp parallel for if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) py[i] = alpha * px[i] + beta * py[i];
    }
    return NAC_OK;
}
