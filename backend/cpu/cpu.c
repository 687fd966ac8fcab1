/* The CPU backend on oneDNN: context, tensor storage and layouts, host copies, the
 * primitive cache and the shared scratchpad, and the function table. The ops live in
 * dnn.c (oneDNN primitives) and math.c (dense and row-wise). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_impl.h"

/* ---- layouts ---- */
void cpu_plain_md(const nac_tensor_t *t, dnnl_memory_desc_t *md) {
    static const dnnl_format_tag_t tags[] = {dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc,
                                             dnnl_abcd};
    dnnl_dims_t dims;
    for (int i = 0; i < t->ndim; i++) dims[i] = t->dim[i];
    dnnl_status_t s = dnnl_memory_desc_init_by_tag(md, t->ndim, dims, dnnl_f32, tags[t->ndim]);
    NAC_ASSERT(s == dnnl_success);
    (void)s;
}

int cpu_layout_intern(cpu_context *ctx, const dnnl_memory_desc_t *md) {
    for (int i = 0; i < ctx->nlayouts; i++)
        if (dnnl_memory_desc_equal(&ctx->layouts[i], md)) return i;
    if (ctx->nlayouts == ctx->cap_layouts) {
        int cap = ctx->cap_layouts ? ctx->cap_layouts * 2 : 64;
        dnnl_memory_desc_t *l = realloc(ctx->layouts, (size_t)cap * sizeof *l);
        if (!l) return -1;
        ctx->layouts = l;
        ctx->cap_layouts = cap;
    }
    ctx->layouts[ctx->nlayouts] = *md;
    return ctx->nlayouts++;
}

static void tensor_storage_free(cpu_tensor *ct) {
    if (!ct) return;
    if (ct->mem) dnnl_memory_destroy(ct->mem);
    if (ct->ws_mem) dnnl_memory_destroy(ct->ws_mem);
    if (!ct->borrowed && ct->ptr) cpu_mem_count(ct->ctx, cpu_alloc_size(ct->bytes), false);
    if (ct->ws) cpu_mem_count(ct->ctx, cpu_alloc_size(ct->ws_bytes), false);
    if (!ct->borrowed) free(ct->ptr);
    free(ct->ws);
    free(ct);
}

static nac_status tensor_storage_new(nac_backend_t *be, const dnnl_memory_desc_t *md,
                                     cpu_tensor **out, bool plain) {
    cpu_context *ctx = CPU_CTX(be);
    cpu_tensor *ct = calloc(1, sizeof *ct);
    if (!ct) return nac_error(NAC_ERR_NOMEM, "cpu backend: out of memory for a tensor");
    ct->md = *md;
    ct->bytes = dnnl_memory_desc_get_size(md);
    size_t alloc = (ct->bytes + 63) / 64 * 64;
    ct->ptr = aligned_alloc(64, alloc ? alloc : 64);
    ct->layout_id = cpu_layout_intern(ctx, md);
    ct->plain = plain;
    if (!ct->ptr || ct->layout_id < 0) {
        tensor_storage_free(ct);
        return nac_error(NAC_ERR_NOMEM, "cpu backend: out of memory for a tensor of %zu bytes",
                         ct->bytes);
    }
    memset(ct->ptr, 0, alloc);
    ct->ctx = ctx;
    cpu_mem_count(ctx, cpu_alloc_size(ct->bytes), true);
    if (dnnl_memory_create(&ct->mem, md, ctx->engine, ct->ptr) != dnnl_success) {
        tensor_storage_free(ct);
        return nac_error(NAC_ERR_BACKEND, "cpu backend: dnnl_memory_create failed");
    }
    *out = ct;
    return NAC_OK;
}

nac_status cpu_reorder(nac_backend_t *be, dnnl_memory_t from, dnnl_memory_t to) {
    cpu_context *ctx = CPU_CTX(be);
    const dnnl_memory_desc_t *fmd, *tmd;
    DNNL_TRY(dnnl_memory_get_memory_desc(from, &fmd));
    DNNL_TRY(dnnl_memory_get_memory_desc(to, &tmd));
    struct { int op, a, b; } key = {1, cpu_layout_intern(ctx, fmd), cpu_layout_intern(ctx, tmd)};
    if (key.a < 0 || key.b < 0) return nac_error(NAC_ERR_NOMEM, "cpu backend: out of memory");
    cpu_cache_entry *e = cpu_cache_find(ctx, &key, sizeof key);
    if (!e) {
        dnnl_primitive_desc_t pd;
        dnnl_primitive_t prim;
        DNNL_TRY(dnnl_reorder_primitive_desc_create(&pd, fmd, ctx->engine, tmd, ctx->engine,
                                                    NULL));
        if (dnnl_primitive_create(&prim, pd) != dnnl_success) {
            dnnl_primitive_desc_destroy(pd);
            return nac_error(NAC_ERR_BACKEND, "oneDNN: reorder primitive creation failed");
        }
        e = cpu_cache_insert(ctx, &key, sizeof key, pd, prim, NULL);
        if (!e) return nac_error(NAC_ERR_NOMEM, "cpu backend: out of memory");
    }
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    return cpu_execute(be, e->prim, 2, args);
}

nac_status cpu_tensor_ensure(nac_backend_t *be, nac_tensor_t *t, const dnnl_memory_desc_t *md) {
    cpu_tensor *old = CPU_T(t);
    if (old && dnnl_memory_desc_equal(&old->md, md)) return NAC_OK;
    /* a view's storage is its owner's: ops write views only in their own layout */
    NAC_ASSERT(!old || !old->borrowed);
    dnnl_memory_desc_t plain;
    cpu_plain_md(t, &plain);
    cpu_tensor *ct = NULL;
    NAC_TRY(tensor_storage_new(be, md, &ct, dnnl_memory_desc_equal(&plain, md) != 0));
    if (old) {
        nac_status s = cpu_reorder(be, old->mem, ct->mem);
        if (s != NAC_OK) {
            tensor_storage_free(ct);
            return s;
        }
        tensor_storage_free(old);
    }
    t->impl = ct;
    return NAC_OK;
}

nac_status cpu_tensor_ensure_plain(nac_backend_t *be, nac_tensor_t *t) {
    cpu_tensor *ct = CPU_T(t);
    if (ct) {
        if (!ct->plain)
            return nac_error(NAC_ERR_INVALID,
                             "cpu backend: a %d-D tensor in a blocked layout where a plain one "
                             "is needed",
                             t->ndim);
        return NAC_OK;
    }
    dnnl_memory_desc_t md;
    cpu_plain_md(t, &md);
    return cpu_tensor_ensure(be, t, &md);
}

/* ---- primitive cache ---- */
static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

cpu_cache_entry *cpu_cache_find(cpu_context *ctx, const void *key, size_t len) {
    if (!ctx->nbuckets) return NULL;
    uint64_t h = hash_bytes(key, len);
    for (cpu_cache_entry *e = ctx->buckets[h % ctx->nbuckets]; e; e = e->next)
        if (e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0) return e;
    return NULL;
}

cpu_cache_entry *cpu_cache_insert(cpu_context *ctx, const void *key, size_t len,
                                  dnnl_primitive_desc_t pd, dnnl_primitive_t prim, void *extra) {
    cpu_cache_entry *e = calloc(1, sizeof *e);
    if (e) e->key = malloc(len ? len : 1);
    if (!e || !e->key) {
        if (e) free(e);
        if (prim) dnnl_primitive_destroy(prim);
        if (pd) dnnl_primitive_desc_destroy(pd);
        free(extra);
        return NULL;
    }
    if (ctx->nentries + 1 > ctx->nbuckets) { /* grow: keep the load factor under 1 */
        size_t nb = ctx->nbuckets ? ctx->nbuckets * 2 : 256;
        cpu_cache_entry **b = calloc(nb, sizeof *b);
        if (b) {
            for (size_t i = 0; i < ctx->nbuckets; i++)
                for (cpu_cache_entry *x = ctx->buckets[i], *nx; x; x = nx) {
                    nx = x->next;
                    x->next = b[x->hash % nb];
                    b[x->hash % nb] = x;
                }
            free(ctx->buckets);
            ctx->buckets = b;
            ctx->nbuckets = nb;
        } else if (!ctx->nbuckets) {
            free(e->key);
            free(e);
            return NULL;
        }
    }
    memcpy(e->key, key, len);
    e->key_len = len;
    e->hash = hash_bytes(key, len);
    e->pd = pd;
    e->prim = prim;
    e->extra = extra;
    e->next = ctx->buckets[e->hash % ctx->nbuckets];
    ctx->buckets[e->hash % ctx->nbuckets] = e;
    ctx->nentries++;
    return e;
}

nac_status cpu_attr_create(dnnl_primitive_attr_t *attr) {
    DNNL_TRY(dnnl_primitive_attr_create(attr));
    if (dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user) != dnnl_success) {
        dnnl_primitive_attr_destroy(*attr);
        *attr = NULL;
        return nac_error(NAC_ERR_BACKEND, "oneDNN: setting the user scratchpad mode failed");
    }
    return NAC_OK;
}

nac_status cpu_scratchpad(nac_backend_t *be, const_dnnl_primitive_desc_t pd, dnnl_memory_t *out) {
    cpu_context *ctx = CPU_CTX(be);
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t need = md ? dnnl_memory_desc_get_size(md) : 0;
    if (need > ctx->scratch_bytes) {
        free(ctx->scratch);
        cpu_mem_count(ctx, ctx->scratch_bytes, false);
        ctx->scratch_bytes = 0;
        ctx->scratch = aligned_alloc(64, cpu_alloc_size(need));
        if (!ctx->scratch)
            return nac_error(NAC_ERR_NOMEM, "cpu backend: scratchpad of %zu bytes", need);
        ctx->scratch_bytes = cpu_alloc_size(need);
        cpu_mem_count(ctx, ctx->scratch_bytes, true);
    }
    if (!md) {
        *out = NULL;
        return NAC_OK;
    }
    if (ctx->scratch_mem) dnnl_memory_destroy(ctx->scratch_mem);
    ctx->scratch_mem = NULL;
    DNNL_TRY(dnnl_memory_create(&ctx->scratch_mem, md, ctx->engine, ctx->scratch));
    *out = ctx->scratch_mem;
    return NAC_OK;
}

nac_status cpu_arena(cpu_context *ctx, int i, size_t bytes, void **out) {
    NAC_ASSERT(i >= 0 && i < CPU_NARENA);
    if (bytes > ctx->arena_bytes[i] || !ctx->arena[i]) {
        size_t alloc = cpu_alloc_size(bytes);
        void *buf = aligned_alloc(64, alloc);
        if (!buf) return nac_error(NAC_ERR_NOMEM, "cpu backend: operand buffer of %zu bytes", bytes);
        free(ctx->arena[i]);
        cpu_mem_count(ctx, ctx->arena_bytes[i], false);
        ctx->arena[i] = buf;
        ctx->arena_bytes[i] = alloc;
        cpu_mem_count(ctx, alloc, true);
    }
    *out = ctx->arena[i];
    return NAC_OK;
}

nac_status cpu_execute(nac_backend_t *be, dnnl_primitive_t prim, int nargs,
                       const dnnl_exec_arg_t *args) {
    cpu_context *ctx = CPU_CTX(be);
    DNNL_TRY(dnnl_primitive_execute(prim, ctx->stream, nargs, args));
    DNNL_TRY(dnnl_stream_wait(ctx->stream));
    return NAC_OK;
}

/* ---- tensors and host copies ---- */
static nac_status cpu_tensor_alloc(nac_backend_t *be, nac_tensor_t *t) {
    return cpu_tensor_ensure_plain(be, t);
}

static void cpu_tensor_release(nac_backend_t *be, nac_tensor_t *t) {
    (void)be;
    tensor_storage_free(CPU_T(t));
    t->impl = NULL;
}

static nac_status cpu_tensor_alloc_like(nac_backend_t *be, nac_tensor_t *t,
                                        const nac_tensor_t *like) {
    return cpu_tensor_ensure(be, t, &CPU_T(like)->md);
}

/* t's storage becomes owner's; t's workspace (a ReLU mask, pooling indices) stays t's. */
static nac_status cpu_tensor_share(nac_backend_t *be, nac_tensor_t *t, const nac_tensor_t *owner) {
    cpu_tensor *co = CPU_T(owner), *ct = CPU_T(t);
    if (ct && ct->ptr == co->ptr && dnnl_memory_desc_equal(&ct->md, &co->md)) return NAC_OK;
    if (ct && !ct->borrowed)
        return nac_error(NAC_ERR_INVALID,
                         "nac_tensor_share: t (%lld,...) has storage of its own, which other "
                         "tensors may view; only an unwritten tensor or a view can become a view",
                         (long long)t->dim[0]);
    if (!ct) {
        if (!(ct = calloc(1, sizeof *ct)))
            return nac_error(NAC_ERR_NOMEM, "nac_tensor_share: out of memory for a view");
        ct->ctx = CPU_CTX(be);
        t->impl = ct;
    } else if (ct->mem) {
        dnnl_memory_destroy(ct->mem);
    }
    ct->mem = NULL;
    ct->md = co->md;
    ct->ptr = co->ptr;
    ct->bytes = co->bytes;
    ct->layout_id = co->layout_id;
    ct->plain = co->plain;
    ct->borrowed = true;
    if (dnnl_memory_create(&ct->mem, &ct->md, CPU_CTX(be)->engine, ct->ptr) != dnnl_success) {
        tensor_storage_free(ct);
        t->impl = NULL;
        return nac_error(NAC_ERR_BACKEND, "nac_tensor_share: dnnl_memory_create failed");
    }
    return NAC_OK;
}

/* A temporary memory object over host data in the tensor's plain logical layout. */
static nac_status host_mem(nac_backend_t *be, const nac_tensor_t *t, const float *p,
                           dnnl_memory_t *out) {
    dnnl_memory_desc_t md;
    cpu_plain_md(t, &md);
    DNNL_TRY(dnnl_memory_create(out, &md, CPU_CTX(be)->engine, (void *)p));
    return NAC_OK;
}

static nac_status cpu_to_host(nac_backend_t *be, const nac_tensor_t *t, float *dst) {
    cpu_tensor *ct = CPU_T(t);
    if (ct->plain) {
        memcpy(dst, ct->ptr, (size_t)nac_tensor_numel(t) * sizeof(float));
        return NAC_OK;
    }
    dnnl_memory_t m;
    NAC_TRY(host_mem(be, t, dst, &m));
    nac_status s = cpu_reorder(be, ct->mem, m);
    dnnl_memory_destroy(m);
    return s;
}

static nac_status cpu_from_host(nac_backend_t *be, nac_tensor_t *t, const float *src) {
    if (!t->impl) NAC_TRY(cpu_tensor_ensure_plain(be, t));
    cpu_tensor *ct = CPU_T(t);
    if (ct->plain) {
        memcpy(ct->ptr, src, (size_t)nac_tensor_numel(t) * sizeof(float));
        return NAC_OK;
    }
    dnnl_memory_t m;
    NAC_TRY(host_mem(be, t, src, &m));
    nac_status s = cpu_reorder(be, m, ct->mem);
    dnnl_memory_destroy(m);
    return s;
}

static nac_status cpu_copy(nac_backend_t *be, const nac_tensor_t *src, nac_tensor_t *dst) {
    cpu_tensor *cs = CPU_T(src);
    if (!dst->impl) NAC_TRY(cpu_tensor_ensure(be, dst, &cs->md));
    cpu_tensor *cd = CPU_T(dst);
    if (cd->layout_id == cs->layout_id) {
        memcpy(cd->ptr, cs->ptr, cs->bytes);
        return NAC_OK;
    }
    return cpu_reorder(be, cs->mem, cd->mem);
}

static nac_status cpu_fill(nac_backend_t *be, nac_tensor_t *t, float v) {
    if (!t->impl) NAC_TRY(cpu_tensor_ensure_plain(be, t));
    cpu_tensor *ct = CPU_T(t);
    int64_t n = nac_tensor_numel(t);
    if (ct->plain || v == 0.0f) { /* zero keeps a blocked layout's padding zero */
        float *p = ct->ptr;
        if (ct->plain) {
#pragma omp parallel for if (n > 65536)
            for (int64_t i = 0; i < n; i++) p[i] = v;
        } else {
            memset(p, 0, ct->bytes);
        }
        return NAC_OK;
    }
    float *tmp = malloc((size_t)n * sizeof *tmp);
    if (!tmp) return nac_error(NAC_ERR_NOMEM, "cpu backend: fill: out of memory");
    for (int64_t i = 0; i < n; i++) tmp[i] = v;
    nac_status s = cpu_from_host(be, t, tmp);
    free(tmp);
    return s;
}

/* Rows of a tensor along its first axis are contiguous when that axis is outermost and
 * unblocked, as in every layout oneDNN picks for activations (nchw, nhwc, nChw16c). */
static bool rows_contiguous(const cpu_tensor *ct, int64_t n, size_t *row_bytes) {
    if (ct->md.format_kind != dnnl_blocked) return false;
    const dnnl_blocking_desc_t *b = &ct->md.format_desc.blocking;
    for (int i = 0; i < b->inner_nblks; i++)
        if (b->inner_idxs[i] == 0) return false;
    if (ct->md.padded_dims[0] != n || (size_t)b->strides[0] * sizeof(float) * (size_t)n != ct->bytes)
        return false;
    *row_bytes = (size_t)b->strides[0] * sizeof(float);
    return true;
}

/* The layout of one row of a tensor: rows of src and dst with equal row layouts are copied
 * as bytes (nchw/nChw16c rows with the same padding, plain 2-D rows). */
static void row_md(const cpu_tensor *ct, dnnl_memory_desc_t *md) {
    *md = ct->md;
    md->dims[0] = md->padded_dims[0] = 1;
}

/* Rows between different layouts: one reorder between sub-memories. Created per call and
 * not cached (offsets vary); the fast path above is what steady-state code takes. */
static nac_status copy_rows_reorder(nac_backend_t *be, const nac_tensor_t *src, int64_t sr,
                                    nac_tensor_t *dst, int64_t dr, int64_t nrows) {
    cpu_context *ctx = CPU_CTX(be);
    cpu_tensor *cs = CPU_T(src), *cd = CPU_T(dst);
    dnnl_dims_t dims = {nrows}, so = {sr}, dof = {dr};
    for (int i = 1; i < src->ndim; i++) dims[i] = src->dim[i];
    dnnl_memory_desc_t ms, md;
    if (dnnl_memory_desc_init_submemory(&ms, &cs->md, dims, so) != dnnl_success ||
        dnnl_memory_desc_init_submemory(&md, &cd->md, dims, dof) != dnnl_success)
        return nac_error(NAC_ERR_INVALID,
                         "nac_copy_rows: rows of these layouts cannot be addressed (cpu backend)");
    dnnl_memory_t m_s = NULL, m_d = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    nac_status s = NAC_OK;
    if (dnnl_memory_create(&m_s, &ms, ctx->engine, cs->ptr) != dnnl_success ||
        dnnl_memory_create(&m_d, &md, ctx->engine, cd->ptr) != dnnl_success ||
        dnnl_reorder_primitive_desc_create(&pd, &ms, ctx->engine, &md, ctx->engine, NULL) !=
            dnnl_success ||
        dnnl_primitive_create(&prim, pd) != dnnl_success)
        s = nac_error(NAC_ERR_BACKEND, "nac_copy_rows: oneDNN reorder between layouts failed");
    if (s == NAC_OK) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, m_s}, {DNNL_ARG_TO, m_d}};
        s = cpu_execute(be, prim, 2, args);
    }
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (m_s) dnnl_memory_destroy(m_s);
    if (m_d) dnnl_memory_destroy(m_d);
    return s;
}

static nac_status cpu_copy_rows(nac_backend_t *be, const nac_tensor_t *src, int64_t sr,
                                nac_tensor_t *dst, int64_t dr, int64_t nrows) {
    cpu_tensor *cs = CPU_T(src);
    if (!dst->impl) {
        dnnl_memory_desc_t md = cs->md;
        md.dims[0] = md.padded_dims[0] = dst->dim[0];
        NAC_TRY(cpu_tensor_ensure(be, dst, &md));
    }
    cpu_tensor *cd = CPU_T(dst);
    size_t rb_s, rb_d;
    dnnl_memory_desc_t rs, rd;
    row_md(cs, &rs);
    row_md(cd, &rd);
    if (!rows_contiguous(cs, src->dim[0], &rb_s) || !rows_contiguous(cd, dst->dim[0], &rb_d) ||
        rb_s != rb_d || !dnnl_memory_desc_equal(&rs, &rd))
        return copy_rows_reorder(be, src, sr, dst, dr, nrows);
    memcpy((char *)cd->ptr + (size_t)dr * rb_d, (const char *)cs->ptr + (size_t)sr * rb_s,
           (size_t)nrows * rb_s);
    return NAC_OK;
}

static nac_status cpu_reshape(nac_backend_t *be, const nac_tensor_t *src, nac_tensor_t *dst) {
    cpu_tensor *cs = CPU_T(src);
    NAC_TRY(cpu_tensor_ensure_plain(be, dst));
    cpu_tensor *cd = CPU_T(dst);
    if (cs->plain) {
        memcpy(cd->ptr, cs->ptr, (size_t)nac_tensor_numel(src) * sizeof(float));
        return NAC_OK;
    }
    dnnl_memory_t m;
    NAC_TRY(host_mem(be, src, cd->ptr, &m));
    nac_status s = cpu_reorder(be, cs->mem, m);
    dnnl_memory_destroy(m);
    return s;
}

static void cpu_memory(nac_backend_t *be, nac_backend_memory *m, bool reset_peak) {
    cpu_context *ctx = CPU_CTX(be);
    if (reset_peak) ctx->mem_peak = ctx->mem_live;
    if (m)
        *m = (nac_backend_memory){.live = ctx->mem_live, .peak = ctx->mem_peak,
                                  .cached_ops = ctx->nentries};
}

/* ---- introspection (tests) ---- */
static nac_status cpu_tensor_relayout(nac_backend_t *be, nac_tensor_t *t, nac_layout layout) {
    if (t->ndim != 4)
        return nac_error(NAC_ERR_BACKEND, "op tensor_relayout is not supported by backend cpu for "
                         "a %d-D tensor", t->ndim);
    dnnl_format_tag_t tag = layout == NAC_LAYOUT_CHANNEL_BLOCKED ? dnnl_aBcd16b
                            : layout == NAC_LAYOUT_CHANNELS_LAST ? dnnl_acdb
                                                                 : dnnl_OIhw16i16o;
    dnnl_memory_desc_t md;
    dnnl_dims_t d = {t->dim[0], t->dim[1], t->dim[2], t->dim[3]};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&md, 4, d, dnnl_f32, tag));
    return cpu_tensor_ensure(be, t, &md);
}

static nac_status cpu_tensor_info(nac_backend_t *be, const nac_tensor_t *t, nac_tensor_info *out) {
    (void)be;
    const cpu_tensor *c = CPU_T(t);
    *out = (nac_tensor_info){0};
    if (!c) return NAC_OK;
    out->allocated = true;
    out->plain = c->plain;
    out->layout_id = c->layout_id;
    out->inner_blocks = c->md.format_kind == dnnl_blocked ? c->md.format_desc.blocking.inner_nblks : 0;
    out->bytes = c->bytes;
    for (size_t i = 0; i < c->bytes / sizeof(float); i++) out->abs_sum += fabs(c->ptr[i]);
    return NAC_OK;
}

static double cpu_flops(nac_backend_t *be) { return CPU_CTX(be)->flops; }

static nac_status cpu_synchronize(nac_backend_t *be) {
    DNNL_TRY(dnnl_stream_wait(CPU_CTX(be)->stream));
    return NAC_OK;
}

static void cpu_free(nac_backend_t *be) {
    cpu_context *ctx = CPU_CTX(be);
    if (ctx) {
        for (size_t i = 0; i < ctx->nbuckets; i++)
            for (cpu_cache_entry *e = ctx->buckets[i], *n; e; e = n) {
                n = e->next;
                if (e->prim) dnnl_primitive_destroy(e->prim);
                if (e->pd) dnnl_primitive_desc_destroy(e->pd);
                if (e->extra_free) e->extra_free(e->extra);
                else free(e->extra);
                free(e->key);
                free(e);
            }
        free(ctx->buckets);
        free(ctx->layouts);
        if (ctx->scratch_mem) dnnl_memory_destroy(ctx->scratch_mem);
        free(ctx->scratch);
        for (int i = 0; i < CPU_NARENA; i++) free(ctx->arena[i]);
        if (ctx->stream) dnnl_stream_destroy(ctx->stream);
        if (ctx->engine) dnnl_engine_destroy(ctx->engine);
        free(ctx);
    }
    free(be);
}

static const nac_backend_i cpu_iface = {
    .name = "cpu",
    .free = cpu_free,
    .synchronize = cpu_synchronize,
    .memory = cpu_memory,
    .flops = cpu_flops,
    .tensor_alloc = cpu_tensor_alloc,
    .tensor_release = cpu_tensor_release,
    .tensor_alloc_like = cpu_tensor_alloc_like,
    .tensor_share = cpu_tensor_share,
    .to_host = cpu_to_host,
    .from_host = cpu_from_host,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .rand = cpu_rand,
    .copy_rows = cpu_copy_rows,
    .conv_fwd = cpu_conv_fwd,
    .conv_bwd_data = cpu_conv_bwd_data,
    .conv_bwd_weights = cpu_conv_bwd_weights,
    .bn_fwd_train = cpu_bn_fwd_train,
    .bn_fwd_infer = cpu_bn_fwd_infer,
    .bn_fwd_saved = cpu_bn_fwd_saved,
    .bn_bwd = cpu_bn_bwd,
    .bn_stats = cpu_bn_stats,
    .bn_bwd_sums = cpu_bn_bwd_sums,
    .bn_bwd_given = cpu_bn_bwd_given,
    .pool_fwd = cpu_pool_fwd,
    .pool_bwd = cpu_pool_bwd,
    .gap_fwd = cpu_gap_fwd,
    .gap_bwd = cpu_gap_bwd,
    .upsample_fwd = cpu_upsample_fwd,
    .upsample_bwd = cpu_upsample_bwd,
    .reshape = cpu_reshape,
    .act_fwd = cpu_act_fwd,
    .act_bwd = cpu_act_bwd,
    .binary = cpu_binary,
    .axpby = cpu_axpby,
    .gemm = cpu_gemm,
    .linear_fwd = cpu_linear_fwd,
    .linear_bwd = cpu_linear_bwd,
    .row_logsumexp = cpu_row_logsumexp,
    .row_softmax = cpu_row_softmax,
    .row_sum = cpu_row_sum,
    .row_broadcast = cpu_row_broadcast,
    .col_broadcast = cpu_col_broadcast,
    .sum_all = cpu_sum_all,
    .sumsq_all = cpu_sumsq_all,
    .opt_update = cpu_opt_update,
    .ema = cpu_ema,
    .tensor_relayout = cpu_tensor_relayout,
    .tensor_info = cpu_tensor_info,
};

/* Whether oneDNN runs bf16 kernels here: its effective ISA includes AVX512_BF16 (AMX's
 * includes it too). NAC_CPU_NO_BF16=1 says no, to exercise the fallback. */
static bool bf16_forced_off(void) {
    const char *no = getenv("NAC_CPU_NO_BF16");
    return no && no[0] && strcmp(no, "0");
}

static bool cpu_has_bf16(void) {
    if (bf16_forced_off()) return false;
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa(), want = dnnl_cpu_isa_avx512_core_bf16;
    return (isa & want) == want;
}

/* NAC_CPU_CONV: unset or "default", "direct", "winograd"; anything else is refused. */
static nac_status conv_policy(cpu_conv_policy *out) {
    const char *v = getenv("NAC_CPU_CONV");
    static const char *names[] = {"default", "direct", "winograd"};
    *out = CPU_CONV_DEFAULT;
    if (!v || !*v) return NAC_OK;
    for (int i = 0; i < 3; i++)
        if (!strcmp(v, names[i])) {
            *out = (cpu_conv_policy)i;
            return NAC_OK;
        }
    return nac_error(NAC_ERR_CONFIG,
                     "NAC_CPU_CONV=\"%s\": expected default, direct or winograd", v);
}

nac_status nac_backend_cpu_create(const nac_backend_options *opt, nac_backend_t **out) {
    cpu_conv_policy conv;
    NAC_TRY(conv_policy(&conv));
    nac_backend_t *be = calloc(1, sizeof *be);
    cpu_context *ctx = calloc(1, sizeof *ctx);
    if (!be || !ctx) {
        free(be);
        free(ctx);
        return nac_error(NAC_ERR_NOMEM, "cpu backend: out of memory");
    }
    be->iface = &cpu_iface;
    be->context = ctx;
    ctx->conv = conv;
    int threads = opt && opt->threads > 0 ? opt->threads : omp_get_num_procs();
    omp_set_num_threads(threads);
    be->threads = threads;
    be->precision = NAC_PRECISION_FP32;
    if (opt && opt->precision == NAC_PRECISION_BF16) {
        if (cpu_has_bf16()) {
            be->precision = NAC_PRECISION_BF16;
        } else { /* the one line the options promise; the run goes on in fp32 */
            fprintf(stderr, "nacvae: precision bf16 asked for, but this CPU has neither "
                            "AVX512_BF16 nor AMX (oneDNN ISA %#x%s): running fp32\n",
                    (unsigned)dnnl_get_effective_cpu_isa(),
                    bf16_forced_off() ? ", as NAC_CPU_NO_BF16 says" : "");
        }
    }
    if (dnnl_engine_create(&ctx->engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&ctx->stream, ctx->engine, dnnl_stream_default_flags) != dnnl_success) {
        cpu_free(be);
        return nac_error(NAC_ERR_BACKEND, "cpu backend: oneDNN engine or stream creation failed");
    }
    *out = be;
    return NAC_OK;
}
