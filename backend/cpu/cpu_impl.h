/* Private to the CPU backend (the files of backend/cpu/): the tensor record, the context with its
 * primitive cache and scratchpad, and the functions the backend's files share.
 * Only these files include oneDNN.
 *
 * Layout rule: 1-D and 2-D tensors are always plain row-major (cpu_tensor.plain).
 * 4-D tensors take the layout the first op writing them prefers (blocked nChw16c etc.);
 * their layout is interned as a small integer (layout_id) so cache keys stay short. */
#ifndef NAC_BACKEND_CPU_IMPL_H
#define NAC_BACKEND_CPU_IMPL_H

#include <dnnl.h>

#include "backend/backend.h"

typedef struct cpu_tensor {
    dnnl_memory_desc_t md; /* physical layout */
    dnnl_memory_t mem;     /* wraps ptr */
    float *ptr;            /* 64-byte aligned, md's size (padding included, zeroed) */
    size_t bytes;
    int layout_id;         /* interned md: equal ids <=> equal layouts */
    bool plain;            /* md is the dense logical row-major layout */
    bool borrowed;         /* ptr belongs to another tensor (nac_tensor_share) */
    struct cpu_context *ctx; /* whose memory count the storage and workspace are in */
    /* workspace of the op that wrote this tensor (fused BN+ReLU mask, max-pool indices) */
    dnnl_memory_t ws_mem;
    void *ws;
    size_t ws_bytes;
} cpu_tensor;

typedef struct cpu_cache_entry {
    uint64_t hash;
    unsigned char *key;
    size_t key_len;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    void *extra;                    /* op-specific, freed with extra_free or free() */
    void (*extra_free)(void *extra); /* NULL: free(); set by ops whose extra owns oneDNN objects */
    struct cpu_cache_entry *next;
} cpu_cache_entry;

/* Buffers shared by every op for the operand copies an op makes and drops within the call:
 * a convolution's bf16 casts of its inputs and weights, an operand reordered into the
 * primitive's layout, an output written in another layout and reordered back. */
enum { CPU_NARENA = 4 };

/* Which algorithms the convolutions ask oneDNN for (NAC_CPU_CONV; docs/performance.md):
 * the measured default, direct everywhere, or oneDNN's choice (Winograd) everywhere. */
typedef enum cpu_conv_policy { CPU_CONV_DEFAULT, CPU_CONV_DIRECT, CPU_CONV_WINOGRAD } cpu_conv_policy;

typedef struct cpu_context {
    size_t mem_live, mem_peak;   /* bytes held: storage, workspaces, operand copies, scratch */
    double flops;                /* convolution and matrix-product FLOPs issued */
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    cpu_cache_entry **buckets;
    size_t nbuckets, nentries;
    dnnl_memory_desc_t *layouts; /* interned layouts, index = layout_id */
    int nlayouts, cap_layouts;
    void *scratch;               /* the one user-managed scratchpad, grow-only */
    size_t scratch_bytes;
    dnnl_memory_t scratch_mem;   /* wraps scratch for the md last asked for */
    cpu_conv_policy conv;        /* NAC_CPU_CONV, read at creation */
    void *arena[CPU_NARENA];     /* operand copies that live for one op (cpu_arena) */
    size_t arena_bytes[CPU_NARENA];
} cpu_context;

#define CPU_CTX(be) ((cpu_context *)(be)->context)

/* What aligned_alloc is asked for to hold `bytes` (64-byte multiples, never 0). */
static inline size_t cpu_alloc_size(size_t bytes) { return bytes ? (bytes + 63) / 64 * 64 : 64; }
/* Count the FLOPs of a product with `macs` multiply-adds (two FLOPs each). */
static inline void cpu_flops_count(nac_backend_t *be, double macs) {
    ((cpu_context *)be->context)->flops += 2.0 * macs;
}
/* Count `bytes` more (grow) or fewer (!grow) held by the backend. */
static inline void cpu_mem_count(cpu_context *ctx, size_t bytes, bool grow) {
    if (!ctx) return;
    if (grow) {
        ctx->mem_live += bytes;
        if (ctx->mem_live > ctx->mem_peak) ctx->mem_peak = ctx->mem_live;
    } else {
        ctx->mem_live -= bytes < ctx->mem_live ? bytes : ctx->mem_live;
    }
}
#define CPU_T(t) ((cpu_tensor *)(t)->impl)

/* Evaluate a oneDNN call once; on failure return NAC_ERR_BACKEND naming the call. */
#define DNNL_TRY(expr)                                                                   \
    do {                                                                                 \
        dnnl_status_t dnnl_s_ = (expr);                                                  \
        if (dnnl_s_ != dnnl_success)                                                     \
            return nac_error(NAC_ERR_BACKEND, "oneDNN: %s failed (status %d) at %s:%d", \
                             #expr, (int)dnnl_s_, __FILE__, __LINE__);                   \
    } while (0)

/* ---- shared helpers (cpu.c) ---- */
/* Plain (logical row-major) md of a tensor's logical shape. */
void cpu_plain_md(const nac_tensor_t *t, dnnl_memory_desc_t *md);
/* Allocate t with layout md (zeroed). If t is allocated with another layout, it is
 * re-laid out (contents preserved); if with the same, nothing happens. */
nac_status cpu_tensor_ensure(nac_backend_t *be, nac_tensor_t *t, const dnnl_memory_desc_t *md);
/* Allocate t plain if unallocated; fail if it holds a non-plain layout. */
nac_status cpu_tensor_ensure_plain(nac_backend_t *be, nac_tensor_t *t);
int cpu_layout_intern(cpu_context *ctx, const dnnl_memory_desc_t *md);
/* Make `src` available in layout md: returns src's memory if it already has it, else
 * reorders into *tmp (a cached buffer owned by the caller's cache entry). */
nac_status cpu_reorder(nac_backend_t *be, dnnl_memory_t from, dnnl_memory_t to);
/* Primitive cache: find by key bytes; NULL if absent. */
cpu_cache_entry *cpu_cache_find(cpu_context *ctx, const void *key, size_t len);
/* Insert (takes ownership of pd, prim, extra). Returns the entry or NULL (out of memory). */
cpu_cache_entry *cpu_cache_insert(cpu_context *ctx, const void *key, size_t len,
                                  dnnl_primitive_desc_t pd, dnnl_primitive_t prim, void *extra);
/* The shared scratchpad as a memory of the pd's scratchpad md (grown if needed). */
nac_status cpu_scratchpad(nac_backend_t *be, const_dnnl_primitive_desc_t pd, dnnl_memory_t *out);
/* Arena buffer i (0 <= i < CPU_NARENA) of at least `bytes`, grow-only, shared by every op:
 * its contents are valid only until the next op that asks for buffer i. */
nac_status cpu_arena(cpu_context *ctx, int i, size_t bytes, void **out);
/* A primitive attr with user scratchpad mode (caller destroys it). */
nac_status cpu_attr_create(dnnl_primitive_attr_t *attr);
/* Run a primitive on the backend's stream and wait. */
nac_status cpu_execute(nac_backend_t *be, dnnl_primitive_t prim, int nargs,
                       const dnnl_exec_arg_t *args);

/* ---- dnn.c: oneDNN primitives ---- */
nac_status cpu_conv_fwd(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                        const nac_tensor_t *, nac_tensor_t *, const nac_conv_params *);
nac_status cpu_conv_bwd_data(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                             nac_tensor_t *, const nac_conv_params *);
nac_status cpu_conv_bwd_weights(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                                nac_tensor_t *, nac_tensor_t *, const nac_conv_params *);
nac_status cpu_bn_fwd_train(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                            const nac_tensor_t *, nac_tensor_t *, nac_tensor_t *, nac_tensor_t *,
                            nac_tensor_t *, nac_tensor_t *, const nac_bn_params *);
nac_status cpu_bn_fwd_saved(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                            const nac_tensor_t *, const nac_tensor_t *, const nac_tensor_t *,
                            nac_tensor_t *, const nac_bn_params *);
nac_status cpu_bn_fwd_infer(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                            const nac_tensor_t *, const nac_tensor_t *, const nac_tensor_t *,
                            nac_tensor_t *, const nac_bn_params *);
nac_status cpu_bn_bwd(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                      const nac_tensor_t *, const nac_tensor_t *, const nac_tensor_t *,
                      const nac_tensor_t *, nac_tensor_t *, nac_tensor_t *, nac_tensor_t *,
                      const nac_bn_params *);
nac_status cpu_bn_stats(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *, nac_tensor_t *,
                        const nac_bn_params *);
nac_status cpu_bn_bwd_sums(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                           const nac_tensor_t *, const nac_tensor_t *, const nac_tensor_t *,
                           const nac_tensor_t *, nac_tensor_t *, const nac_bn_params *);
nac_status cpu_bn_bwd_given(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                            const nac_tensor_t *, const nac_tensor_t *, const nac_tensor_t *,
                            const nac_tensor_t *, const nac_tensor_t *, nac_tensor_t *,
                            const nac_bn_params *);
nac_status cpu_pool_fwd(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *,
                        const nac_pool_params *);
nac_status cpu_pool_bwd(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                        const nac_tensor_t *, nac_tensor_t *, const nac_pool_params *);
nac_status cpu_gap_fwd(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_gap_bwd(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_upsample_fwd(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_upsample_bwd(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_act_fwd(nac_backend_t *, nac_act, const nac_tensor_t *, nac_tensor_t *, float,
                       float);
nac_status cpu_act_bwd(nac_backend_t *, nac_act, const nac_tensor_t *, const nac_tensor_t *,
                       const nac_tensor_t *, nac_tensor_t *, float, float);
nac_status cpu_binary(nac_backend_t *, nac_binop, const nac_tensor_t *, const nac_tensor_t *,
                      nac_tensor_t *);
nac_status cpu_axpby(nac_backend_t *, float, const nac_tensor_t *, float, nac_tensor_t *);

/* ---- math.c: dense, row-wise, random, optimiser ---- */
nac_status cpu_rand(nac_backend_t *, nac_tensor_t *, nac_rand, float, uint64_t);
nac_status cpu_gemm(nac_backend_t *, bool, bool, float, const nac_tensor_t *,
                    const nac_tensor_t *, float, nac_tensor_t *);
nac_status cpu_linear_fwd(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                          const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_linear_bwd(nac_backend_t *, const nac_tensor_t *, const nac_tensor_t *,
                          const nac_tensor_t *, nac_tensor_t *, nac_tensor_t *, nac_tensor_t *);
nac_status cpu_row_logsumexp(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_row_softmax(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_row_sum(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_row_broadcast(nac_backend_t *, nac_binop, const nac_tensor_t *,
                             const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_col_broadcast(nac_backend_t *, nac_binop, const nac_tensor_t *,
                             const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_sum_all(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_sumsq_all(nac_backend_t *, const nac_tensor_t *, nac_tensor_t *);
nac_status cpu_opt_update(nac_backend_t *, nac_tensor_t *, const nac_tensor_t *, nac_tensor_t *,
                          nac_tensor_t *, const nac_opt_step *);
nac_status cpu_ema(nac_backend_t *, nac_tensor_t *, const nac_tensor_t *, float);

#endif
