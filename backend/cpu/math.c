/* The CPU backend's dense and row-wise ops: counter-based random fills, GEMM and linear
 * layers on oneDNN's sgemm (a bf16 backend: its matmul on bf16 copies, fp32 accumulation),
 * row-wise logsumexp / softmax / sums / broadcasts, whole-tensor sums, the fused optimiser
 * updates and the EMA. Reductions use a fixed chunking combined
 * in order, so results do not depend on the thread count. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_impl.h"
#include "backend/rng.h"
#include "backend/rules.h"

/* Loops below this many elements run on one thread: the team start costs more. */
#define PAR_MIN 32768
/* Reductions split [0, n) into this many fixed chunks whatever the thread count. */
#define RED_CHUNKS 64

static float *fptr(const nac_tensor_t *t) { return CPU_T(t)->ptr; }

/* The physical element count of an allocated tensor (padding of blocked layouts included). */
static int64_t phys_numel(const nac_tensor_t *t) {
    return (int64_t)(CPU_T(t)->bytes / sizeof(float));
}

/* 1-D and 2-D inputs are plain by the layout rule; say so loudly if that ever breaks. */
static nac_status need_plain(const char *op, const nac_tensor_t *t) {
    if (!CPU_T(t) || !CPU_T(t)->plain)
        return nac_error(NAC_ERR_INVALID, "cpu backend: %s needs plain row-major inputs", op);
    return NAC_OK;
}

static inline int64_t chunk_lo(int64_t n, int c) { return n * c / RED_CHUNKS; }

/* One grow-only temporary per slot, kept in the primitive cache so it is allocated once
 * (the data starts 64 bytes in; the first 8 bytes hold the capacity). */
enum { TMP_RAND = 0, TMP_OPT_G = 1, TMP_EMA_W = 2 };

static nac_status math_temp(nac_backend_t *be, int slot, size_t bytes, float **out) {
    cpu_context *ctx = CPU_CTX(be);
    struct { char tag[16]; int slot; } key;
    memset(&key, 0, sizeof key);
    memcpy(key.tag, "cpu_math.temp", 13);
    key.slot = slot;
    cpu_cache_entry *e = cpu_cache_find(ctx, &key, sizeof key);
    if (e && *(size_t *)e->extra >= bytes) {
        *out = (float *)((char *)e->extra + 64);
        return NAC_OK;
    }
    size_t alloc = (64 + bytes + 63) / 64 * 64;
    void *buf = aligned_alloc(64, alloc);
    if (!buf) return nac_error(NAC_ERR_NOMEM, "cpu backend: temporary of %zu bytes", bytes);
    *(size_t *)buf = bytes;
    if (e) {
        cpu_mem_count(ctx, (64 + *(size_t *)e->extra + 63) / 64 * 64, false);
        free(e->extra);
        e->extra = buf;
    } else if (!cpu_cache_insert(ctx, &key, sizeof key, NULL, NULL, buf)) {
        return nac_error(NAC_ERR_NOMEM, "cpu backend: temporary of %zu bytes", bytes);
    }
    cpu_mem_count(ctx, alloc, true);
    *out = (float *)((char *)buf + 64);
    return NAC_OK;
}

/* src's data in dst's layout: src's own buffer when the layouts agree, else a reorder
 * into the temporary `slot`. */
static nac_status in_layout_of(nac_backend_t *be, const nac_tensor_t *src,
                               const nac_tensor_t *dst, int slot, const float **out) {
    cpu_tensor *cs = CPU_T(src), *cd = CPU_T(dst);
    if (cs->layout_id == cd->layout_id) {
        *out = cs->ptr;
        return NAC_OK;
    }
    float *tmp;
    NAC_TRY(math_temp(be, slot, cd->bytes, &tmp));
    dnnl_memory_t m;
    DNNL_TRY(dnnl_memory_create(&m, &cd->md, CPU_CTX(be)->engine, tmp));
    nac_status s = cpu_reorder(be, cs->mem, m);
    dnnl_memory_destroy(m);
    *out = tmp;
    return s;
}

/* ---- random ---- */
static void rand_fill(float *p, int64_t n, nac_rand kind, float param, uint64_t key) {
    float scale = param != 0.0f ? param : 1.0f;
    float below = nextafterf(scale, 0.0f); /* keeps u*scale inside [0, scale) */
    switch (kind) {
    case NAC_RAND_UNIFORM:
#pragma omp parallel for if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            float v = nac_rng_uniform_at(key, (uint64_t)i) * scale;
            p[i] = v < scale ? v : below;
        }
        break;
    case NAC_RAND_NORMAL:
#pragma omp parallel for if (n > PAR_MIN / 8)
        for (int64_t i = 0; i < n; i++) p[i] = nac_rng_normal_at(key, (uint64_t)i) * scale;
        break;
    case NAC_RAND_SIGN:
#pragma omp parallel for if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            p[i] = nac_rng_uniform_at(key, (uint64_t)i) < param ? -1.0f : 1.0f;
        break;
    }
}

nac_status cpu_rand(nac_backend_t *be, nac_tensor_t *t, nac_rand kind, float param,
                    uint64_t key) {
    if (kind != NAC_RAND_UNIFORM && kind != NAC_RAND_NORMAL && kind != NAC_RAND_SIGN)
        return nac_error(NAC_ERR_INVALID, "nac_tensor_rand: unknown distribution %d", (int)kind);
    if (!t->impl) NAC_TRY(cpu_tensor_ensure_plain(be, t));
    int64_t n = nac_tensor_numel(t);
    if (CPU_T(t)->plain) {
        rand_fill(fptr(t), n, kind, param, key);
        return NAC_OK;
    }
    /* A blocked tensor: draw in logical order, then lay out (padding stays zero). */
    float *tmp;
    NAC_TRY(math_temp(be, TMP_RAND, (size_t)n * sizeof(float), &tmp));
    rand_fill(tmp, n, kind, param, key);
    return be->iface->from_host(be, t, tmp);
}

/* ---- dense: every product is C (m,n) = alpha op(A) op(B) + beta C on row-major
 * storage; fp32 through oneDNN's sgemm, bf16 through its matmul primitive on bf16 copies of
 * A and B (fp32 accumulation, C written in fp32) ---- */

/* src (rows, cols) with leading dimension ld -> dst, dense (rows, cols), bf16 by
 * round-to-nearest-even (NaN kept quiet), as oneDNN's own f32 -> bf16 conversion. */
static void to_bf16(const float *src, int64_t rows, int64_t cols, int64_t ld, uint16_t *dst) {
#pragma omp parallel for if (rows * cols > PAR_MIN)
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            uint32_t u;
            memcpy(&u, &src[i * ld + j], sizeof u);
            dst[i * cols + j] = (u & 0x7fffffffu) > 0x7f800000u
                                    ? (uint16_t)((u >> 16) | 0x40u)
                                    : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        }
}

typedef struct lp_key {
    char tag[16];
    int64_t m, n, k, ldc;
    int32_t ta, tb;
    float alpha, beta;
} lp_key;

/* The cached matmul of one product shape (its bf16 operand copies go to the backend's
 * arena buffers 0 and 1 for the call: cpu_arena). */
static nac_status lp_entry(nac_backend_t *be, const lp_key *key, cpu_cache_entry **out) {
    cpu_context *ctx = CPU_CTX(be);
    cpu_cache_entry *e = cpu_cache_find(ctx, key, sizeof *key);
    if (e) {
        *out = e;
        return NAC_OK;
    }
    int64_t m = key->m, n = key->n, k = key->k;
    dnnl_memory_desc_t a, b, c;
    dnnl_dims_t ad = {m, k}, bd = {k, n}, cd = {m, n};
    dnnl_dims_t as = {key->ta ? 1 : k, key->ta ? m : 1}, bs = {key->tb ? 1 : n, key->tb ? k : 1};
    dnnl_dims_t cs = {key->ldc, 1};
    DNNL_TRY(dnnl_memory_desc_init_by_strides(&a, 2, ad, dnnl_bf16, as));
    DNNL_TRY(dnnl_memory_desc_init_by_strides(&b, 2, bd, dnnl_bf16, bs));
    DNNL_TRY(dnnl_memory_desc_init_by_strides(&c, 2, cd, dnnl_f32, cs));
    dnnl_matmul_desc_t d;
    DNNL_TRY(dnnl_matmul_desc_init(&d, &a, &b, NULL, &c));
    dnnl_primitive_attr_t attr;
    NAC_TRY(cpu_attr_create(&attr));
    dnnl_post_ops_t po = NULL;
    dnnl_status_t st = key->alpha != 1.0f
                           ? dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha)
                           : dnnl_success;
    if (st == dnnl_success && key->beta != 0.0f) {
        st = dnnl_post_ops_create(&po);
        if (st == dnnl_success) st = dnnl_post_ops_append_sum(po, key->beta);
        if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, po);
        if (po) dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &d, attr, ctx->engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (st == dnnl_success) st = dnnl_primitive_create(&prim, pd);
    if (st != dnnl_success) {
        if (prim) dnnl_primitive_destroy(prim);
        if (pd) dnnl_primitive_desc_destroy(pd);
        return nac_error(NAC_ERR_BACKEND,
                         "bf16 matmul (%lld x %lld x %lld): oneDNN has no implementation "
                         "(status %d)",
                         (long long)m, (long long)n, (long long)k, (int)st);
    }
    e = cpu_cache_insert(ctx, key, sizeof *key, pd, prim, NULL); /* owns them, even on failure */
    if (!e) return nac_error(NAC_ERR_NOMEM, "bf16 matmul: out of memory for the primitive cache");
    *out = e;
    return NAC_OK;
}

static nac_status gemm_bf16(nac_backend_t *be, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                            float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                            float beta, float *c, int64_t ldc) {
    lp_key key;
    memset(&key, 0, sizeof key);
    memcpy(key.tag, "cpu_math.bf16mm", 15);
    key.m = m, key.n = n, key.k = k, key.ldc = ldc, key.ta = ta, key.tb = tb;
    key.alpha = alpha, key.beta = beta;
    cpu_cache_entry *e;
    NAC_TRY(lp_entry(be, &key, &e));
    void *a16, *b16;
    NAC_TRY(cpu_arena(CPU_CTX(be), 0, (size_t)(m * k) * 2, &a16));
    NAC_TRY(cpu_arena(CPU_CTX(be), 1, (size_t)(k * n) * 2, &b16));
    to_bf16(a, ta ? k : m, ta ? m : k, lda, a16); /* A as stored: dense, same orientation */
    to_bf16(b, tb ? n : k, tb ? k : n, ldb, b16);
    cpu_context *ctx = CPU_CTX(be);
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, sp;
    nac_status s = cpu_scratchpad(be, e->pd, &sp);
    const dnnl_memory_desc_t *amd = dnnl_primitive_desc_query_md(e->pd, dnnl_query_src_md, 0),
                             *bmd = dnnl_primitive_desc_query_md(e->pd, dnnl_query_weights_md, 0),
                             *cmd = dnnl_primitive_desc_query_md(e->pd, dnnl_query_dst_md, 0);
    if (s == NAC_OK && (dnnl_memory_create(&ma, amd, ctx->engine, a16) != dnnl_success ||
                        dnnl_memory_create(&mb, bmd, ctx->engine, b16) != dnnl_success ||
                        dnnl_memory_create(&mc, cmd, ctx->engine, c) != dnnl_success))
        s = nac_error(NAC_ERR_BACKEND, "bf16 matmul: oneDNN memory creation failed");
    if (s == NAC_OK) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
        int nargs = 3;
        if (sp) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, sp};
        s = cpu_execute(be, e->prim, nargs, args);
    }
    if (ma) dnnl_memory_destroy(ma);
    if (mb) dnnl_memory_destroy(mb);
    if (mc) dnnl_memory_destroy(mc);
    return s;
}

/* The one entry of every dense product of the backend, in its precision. */
static nac_status dense(nac_backend_t *be, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                        float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                        float beta, float *c, int64_t ldc) {
    if (be->precision == NAC_PRECISION_BF16 && alpha != 0.0f)
        return gemm_bf16(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    DNNL_TRY(dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c,
                        ldc));
    return NAC_OK;
}

/* ---- dense ---- */
nac_status cpu_gemm(nac_backend_t *be, bool ta, bool tb, float alpha, const nac_tensor_t *a,
                    const nac_tensor_t *b, float beta, nac_tensor_t *c) {
    NAC_TRY(need_plain("nac_gemm", a));
    NAC_TRY(need_plain("nac_gemm", b));
    NAC_TRY(cpu_tensor_ensure_plain(be, c));
    int64_t m = c->dim[0], n = c->dim[1], k = ta ? a->dim[0] : a->dim[1];
    cpu_flops_count(be, (double)m * (double)n * (double)k);
    return dense(be, ta, tb, m, n, k, alpha, fptr(a), a->dim[1], fptr(b), b->dim[1], beta,
                 fptr(c), n);
}

nac_status cpu_linear_fwd(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *w,
                          const nac_tensor_t *b, nac_tensor_t *y) {
    NAC_TRY(need_plain("nac_linear_forward", x));
    NAC_TRY(need_plain("nac_linear_forward", w));
    if (b) NAC_TRY(need_plain("nac_linear_forward", b));
    NAC_TRY(cpu_tensor_ensure_plain(be, y));
    int64_t n = x->dim[0], in = x->dim[1], o = w->dim[0];
    float *py = fptr(y);
    if (b) { /* y starts as the bias rows; the GEMM accumulates onto them */
        const float *pb = fptr(b);
#pragma omp parallel for if (n * o > PAR_MIN)
        for (int64_t i = 0; i < n; i++) memcpy(py + i * o, pb, (size_t)o * sizeof(float));
    }
    cpu_flops_count(be, (double)n * (double)o * (double)in);
    /* y (N,O) = x (N,I) w^T (I,O) [+ y] */
    return dense(be, false, true, n, o, in, 1.0f, fptr(x), in, fptr(w), in, b ? 1.0f : 0.0f,
                 py, o);
}

/* db (O) = column sums of dy (N,O), each column summed top to bottom in double. */
static void col_sums(const float *dy, int64_t n, int64_t o, float *db) {
    enum { BLK = 64 };
    int64_t nblk = (o + BLK - 1) / BLK;
#pragma omp parallel for if (n * o > PAR_MIN)
    for (int64_t blk = 0; blk < nblk; blk++) {
        double acc[BLK] = {0};
        int64_t j0 = blk * BLK, nj = o - j0 < BLK ? o - j0 : BLK;
        for (int64_t i = 0; i < n; i++) {
            const float *row = dy + i * o + j0;
            for (int64_t j = 0; j < nj; j++) acc[j] += row[j];
        }
        for (int64_t j = 0; j < nj; j++) db[j0 + j] = (float)acc[j];
    }
}

nac_status cpu_linear_bwd(nac_backend_t *be, const nac_tensor_t *x, const nac_tensor_t *w,
                          const nac_tensor_t *dy, nac_tensor_t *dx, nac_tensor_t *dw,
                          nac_tensor_t *db) {
    NAC_TRY(need_plain("nac_linear_backward", x));
    NAC_TRY(need_plain("nac_linear_backward", w));
    NAC_TRY(need_plain("nac_linear_backward", dy));
    int64_t n = x->dim[0], in = x->dim[1], o = w->dim[0];
    cpu_flops_count(be, (double)n * (double)o * (double)in * (dx ? 2.0 : 1.0));
    if (dx) { /* dx (N,I) = dy (N,O) w (O,I) */
        NAC_TRY(cpu_tensor_ensure_plain(be, dx));
        NAC_TRY(dense(be, false, false, n, in, o, 1.0f, fptr(dy), o, fptr(w), in, 0.0f,
                      fptr(dx), in));
    }
    /* dw (O,I) = dy^T (O,N) x (N,I) */
    NAC_TRY(cpu_tensor_ensure_plain(be, dw));
    NAC_TRY(dense(be, true, false, o, in, n, 1.0f, fptr(dy), o, fptr(x), in, 0.0f, fptr(dw), in));
    if (db) {
        NAC_TRY(cpu_tensor_ensure_plain(be, db));
        col_sums(fptr(dy), n, o, fptr(db));
    }
    return NAC_OK;
}

/* ---- row-wise ---- */
static float row_max(const float *r, int64_t m) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < m; j++) mx = fmaxf(mx, r[j]);
    return mx;
}

nac_status cpu_row_logsumexp(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(need_plain("nac_row_logsumexp", x));
    NAC_TRY(cpu_tensor_ensure_plain(be, y));
    int64_t n = x->dim[0], m = x->dim[1];
    const float *px = fptr(x);
    float *py = fptr(y);
#pragma omp parallel for if (n * m > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *r = px + i * m;
        float mx = row_max(r, m);
        if (isinf(mx)) { /* all -inf gives -inf; any +inf gives +inf */
            py[i] = mx;
            continue;
        }
        double s = 0; /* a NaN in the row makes s, and so y, NaN */
        for (int64_t j = 0; j < m; j++) s += expf(r[j] - mx);
        py[i] = (float)(mx + log(s));
    }
    return NAC_OK;
}

/* y may alias x: each element is read before it is written. */
nac_status cpu_row_softmax(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(need_plain("nac_row_softmax", x));
    NAC_TRY(cpu_tensor_ensure_plain(be, y));
    int64_t n = x->dim[0], m = x->dim[1];
    const float *px = fptr(x);
    float *py = fptr(y);
#pragma omp parallel for if (n * m > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *r = px + i * m;
        float *o = py + i * m;
        float mx = row_max(r, m);
        double s = 0;
        for (int64_t j = 0; j < m; j++) {
            float e = mx == -INFINITY ? 1.0f : expf(r[j] - mx);
            o[j] = e;
            s += e;
        }
        float inv = (float)(1.0 / s);
        for (int64_t j = 0; j < m; j++) o[j] *= inv;
    }
    return NAC_OK;
}

nac_status cpu_row_sum(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    NAC_TRY(need_plain("nac_row_sum", x));
    NAC_TRY(cpu_tensor_ensure_plain(be, y));
    int64_t n = x->dim[0], m = x->dim[1];
    const float *px = fptr(x);
    float *py = fptr(y);
#pragma omp parallel for if (n * m > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t j = 0; j < m; j++) s += px[i * m + j];
        py[i] = (float)s;
    }
    return NAC_OK;
}

static bool binop_known(nac_binop k) { return k >= NAC_BIN_ADD && k <= NAC_BIN_MAX; }

/* Shared body of the broadcasts: v is indexed by column (row_bcast) or by row. y may alias x. */
static nac_status broadcast(nac_backend_t *be, const char *op, nac_binop kind,
                            const nac_tensor_t *x, const nac_tensor_t *v, nac_tensor_t *y,
                            bool row_bcast) {
    if (!binop_known(kind))
        return nac_error(NAC_ERR_INVALID, "%s: unknown binary op %d", op, (int)kind);
    NAC_TRY(need_plain(op, x));
    NAC_TRY(need_plain(op, v));
    NAC_TRY(cpu_tensor_ensure_plain(be, y));
    int64_t n = x->dim[0], m = x->dim[1];
    const float *px = fptr(x), *pv = fptr(v);
    float *py = fptr(y);
#pragma omp parallel for if (n * m > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *r = px + i * m;
        float *o = py + i * m;
        if (row_bcast) {
            for (int64_t j = 0; j < m; j++) o[j] = nac_rule_binop(kind, r[j], pv[j]);
        } else {
            float c = pv[i];
            for (int64_t j = 0; j < m; j++) o[j] = nac_rule_binop(kind, r[j], c);
        }
    }
    return NAC_OK;
}

nac_status cpu_row_broadcast(nac_backend_t *be, nac_binop kind, const nac_tensor_t *x,
                             const nac_tensor_t *v, nac_tensor_t *y) {
    return broadcast(be, "nac_row_broadcast", kind, x, v, y, true);
}

nac_status cpu_col_broadcast(nac_backend_t *be, nac_binop kind, const nac_tensor_t *x,
                             const nac_tensor_t *v, nac_tensor_t *y) {
    return broadcast(be, "nac_col_broadcast", kind, x, v, y, false);
}

/* ---- whole-tensor reductions: over the physical buffer (blocked padding is zero) ---- */
static double reduce(const float *p, int64_t n, bool squares) {
    double part[RED_CHUNKS];
#pragma omp parallel for if (n > PAR_MIN)
    for (int c = 0; c < RED_CHUNKS; c++) {
        double s = 0;
        int64_t hi = chunk_lo(n, c + 1);
        if (squares)
            for (int64_t i = chunk_lo(n, c); i < hi; i++) s += (double)p[i] * p[i];
        else
            for (int64_t i = chunk_lo(n, c); i < hi; i++) s += p[i];
        part[c] = s;
    }
    double s = 0;
    for (int c = 0; c < RED_CHUNKS; c++) s += part[c];
    return s;
}

static nac_status reduce_op(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y,
                            bool squares) {
    NAC_TRY(cpu_tensor_ensure_plain(be, y));
    fptr(y)[0] = (float)reduce(fptr(x), phys_numel(x), squares);
    return NAC_OK;
}

nac_status cpu_sum_all(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    return reduce_op(be, x, y, false);
}

nac_status cpu_sumsq_all(nac_backend_t *be, const nac_tensor_t *x, nac_tensor_t *y) {
    return reduce_op(be, x, y, true);
}

/* ---- optimiser ----
 * Every rule below maps (w, g, s1, s2) = 0 to 0, so running it over the physical buffer
 * keeps a blocked layout's zero padding zero. */
static void sgd_update(float *w, const float *g, float *v, int64_t n, const nac_opt_step *h) {
    float lr = h->lr, wd = h->weight_decay, mom = h->momentum;
    if (mom == 0.0f || !v) {
#pragma omp parallel for if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) w[i] -= lr * (g[i] + wd * w[i]);
        return;
    }
    bool nesterov = h->nesterov;
#pragma omp parallel for if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) nac_rule_sgd(&w[i], g[i], &v[i], lr, wd, mom, nesterov);
}

/* LARS: trust = eta ||w|| / ||g + wd w|| (1 where a norm is 0 or adaptation is off). */
static void lars_update(float *w, const float *g, float *v, int64_t n, const nac_opt_step *h) {
    float wd = h->weight_decay, mom = h->momentum;
    double trust = 1.0;
    if (h->lars_adapt) {
        double pw[RED_CHUNKS], pg[RED_CHUNKS];
#pragma omp parallel for if (n > PAR_MIN)
        for (int c = 0; c < RED_CHUNKS; c++) {
            double sw = 0, sg = 0;
            int64_t hi = chunk_lo(n, c + 1);
            for (int64_t i = chunk_lo(n, c); i < hi; i++) {
                float gi = g[i] + wd * w[i];
                sw += (double)w[i] * w[i];
                sg += (double)gi * gi;
            }
            pw[c] = sw;
            pg[c] = sg;
        }
        double nw = 0, ng = 0;
        for (int c = 0; c < RED_CHUNKS; c++) {
            nw += pw[c];
            ng += pg[c];
        }
        nw = sqrt(nw);
        ng = sqrt(ng);
        if (nw > 0 && ng > 0) trust = h->eta * nw / ng;
    }
    float scale = (float)(h->lr * trust);
#pragma omp parallel for if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) nac_rule_lars(&w[i], g[i], &v[i], wd, mom, scale);
}

static void adam_update(float *w, const float *g, float *m, float *v, int64_t n,
                        const nac_opt_step *h) {
    bool decoupled = h->kind == NAC_OPT_ADAMW;
    float wd = decoupled ? 0.0f : h->weight_decay;
    float shrink = decoupled ? 1.0f - h->lr * h->weight_decay : 1.0f;
    float b1 = h->beta1, b2 = h->beta2, eps = h->eps;
    double bc1 = 1.0 - pow(h->beta1, (double)h->t), bc2 = 1.0 - pow(h->beta2, (double)h->t);
    float step = (float)(h->lr / bc1), rbc2 = (float)(1.0 / sqrt(bc2));
#pragma omp parallel for if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        nac_rule_adam(&w[i], g[i], &m[i], &v[i], wd, shrink, b1, b2, eps, step, rbc2);
}

nac_status cpu_opt_update(nac_backend_t *be, nac_tensor_t *w, const nac_tensor_t *g,
                          nac_tensor_t *s1, nac_tensor_t *s2, const nac_opt_step *h) {
    const char *op = "nac_opt_update";
    if (h->kind != NAC_OPT_SGD && h->kind != NAC_OPT_LARS && h->kind != NAC_OPT_ADAM &&
        h->kind != NAC_OPT_ADAMW)
        return nac_error(NAC_ERR_INVALID, "%s: unknown optimiser kind %d", op, (int)h->kind);
    const dnnl_memory_desc_t *md = &CPU_T(w)->md;
    bool uses_s1 = h->kind != NAC_OPT_SGD || h->momentum != 0.0f;
    bool uses_s2 = h->kind == NAC_OPT_ADAM || h->kind == NAC_OPT_ADAMW;
    /* optimiser state follows the weight's layout (re-laid out once if it was not) */
    if (uses_s1) NAC_TRY(cpu_tensor_ensure(be, s1, md));
    if (uses_s2) NAC_TRY(cpu_tensor_ensure(be, s2, md));
    const float *pg;
    NAC_TRY(in_layout_of(be, g, w, TMP_OPT_G, &pg));
    float *pw = fptr(w), *p1 = uses_s1 ? fptr(s1) : NULL, *p2 = uses_s2 ? fptr(s2) : NULL;
    int64_t n = phys_numel(w);
    switch (h->kind) {
    case NAC_OPT_SGD: sgd_update(pw, pg, p1, n, h); break;
    case NAC_OPT_LARS: lars_update(pw, pg, p1, n, h); break;
    case NAC_OPT_ADAM:
    case NAC_OPT_ADAMW: adam_update(pw, pg, p1, p2, n, h); break;
    }
    return NAC_OK;
}

nac_status cpu_ema(nac_backend_t *be, nac_tensor_t *wm, const nac_tensor_t *w, float decay) {
    const float *pw;
    NAC_TRY(in_layout_of(be, w, wm, TMP_EMA_W, &pw));
    float *pm = fptr(wm), keep = 1.0f - decay;
    int64_t n = phys_numel(wm);
#pragma omp parallel for if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) pm[i] = decay * pm[i] + keep * pw[i];
    return NAC_OK;
}
