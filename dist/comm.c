/* The communicator's wrappers (comm.h), the one-process communicator, the host-staged
 * all-reduce of tensors and the fixed-order sum every implementation shares. */
#include "dist/comm.h"

#include <stdlib.h>
#include <string.h>

#include "dist/comm_impl.h"

void nac_comm_sum_ordered(float *dst, const float *base, int64_t stride, int parts, int64_t n) {
    memmove(dst, base, (size_t)n * sizeof *dst);
    for (int p = 1; p < parts; p++) {
        const float *s = base + (int64_t)p * stride;
        for (int64_t i = 0; i < n; i++) dst[i] += s[i];
    }
}

void nac_comm_slice(int64_t n, int rank, int size, int64_t *first, int64_t *count) {
    int64_t q = n / size, r = n % size;
    *count = q + (rank < r ? 1 : 0);
    *first = (int64_t)rank * q + (rank < r ? rank : r);
}

/* ---- one process ---- */
static nac_status single_allreduce(nac_comm_t *c, float *buf, int64_t n) {
    (void)c, (void)buf, (void)n;
    return NAC_OK;
}
static nac_status single_allgather(nac_comm_t *c, const float *send, int64_t n, float *recv) {
    (void)c;
    memmove(recv, send, (size_t)n * sizeof *recv);
    return NAC_OK;
}
static nac_status single_broadcast(nac_comm_t *c, void *buf, int64_t bytes, int root) {
    (void)c, (void)buf, (void)bytes, (void)root;
    return NAC_OK;
}
static nac_status single_barrier(nac_comm_t *c) {
    (void)c;
    return NAC_OK;
}
static void single_free(nac_comm_t *c) { (void)c; }

static const nac_comm_i single_i = {
    .name = "single",
    .allreduce_sum = single_allreduce,
    .allgather = single_allgather,
    .broadcast = single_broadcast,
    .barrier = single_barrier,
    .free = single_free,
};

nac_status nac_comm_new(const nac_comm_i *iface, void *ctx, int rank, int size, nac_comm_t **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return nac_error(NAC_ERR_NOMEM, "communicator: out of memory");
    (*out)->iface = iface;
    (*out)->ctx = ctx;
    (*out)->rank = rank;
    (*out)->size = size;
    return NAC_OK;
}

nac_status nac_comm_single(nac_comm_t **out) { return nac_comm_new(&single_i, NULL, 0, 1, out); }

void nac_comm_free(nac_comm_t *c) {
    if (!c) return;
    if (c->iface->free) c->iface->free(c);
    free(c->staging);
    free(c);
}

/* ---- wrappers ---- */
int nac_comm_rank(const nac_comm_t *c) { return c ? c->rank : 0; }
int nac_comm_size(const nac_comm_t *c) { return c ? c->size : 1; }

static nac_status check_n(const char *op, int64_t n, const void *p) {
    if (n < 0) return nac_error(NAC_ERR_INVALID, "%s: %lld elements", op, (long long)n);
    if (n > 0 && !p) return nac_error(NAC_ERR_INVALID, "%s: NULL buffer", op);
    return NAC_OK;
}

nac_status nac_comm_allreduce_sum(nac_comm_t *c, float *buf, int64_t n) {
    NAC_TRY(check_n("allreduce", n, buf));
    if (!c || c->size == 1 || n == 0) return NAC_OK;
    return c->iface->allreduce_sum(c, buf, n);
}

nac_status nac_comm_allgather(nac_comm_t *c, const float *send, int64_t n, float *recv) {
    NAC_TRY(check_n("allgather", n, send));
    NAC_TRY(check_n("allgather", n, recv));
    if (!c || c->size == 1) return single_allgather(c, send, n, recv);
    return c->iface->allgather(c, send, n, recv);
}

nac_status nac_comm_broadcast(nac_comm_t *c, void *buf, int64_t bytes, int root) {
    NAC_TRY(check_n("broadcast", bytes, buf));
    if (!c || c->size == 1) return NAC_OK;
    if (root < 0 || root >= c->size)
        return nac_error(NAC_ERR_INVALID, "broadcast: root %d of %d ranks", root, c->size);
    return c->iface->broadcast(c, buf, bytes, root);
}

nac_status nac_comm_barrier(nac_comm_t *c) {
    if (!c || c->size == 1) return NAC_OK;
    return c->iface->barrier(c);
}

nac_status nac_comm_local_rank(nac_comm_t *c, int *out) {
    *out = nac_comm_rank(c);
    if (!c || c->size == 1 || !c->iface->local_rank) return NAC_OK;
    return c->iface->local_rank(c, out);
}

void nac_comm_abort(nac_comm_t *c, int code) {
    if (c && c->size > 1 && c->iface->abort) c->iface->abort(c, code);
}

nac_status nac_comm_allreduce_tensors(nac_comm_t *c, nac_tensor_t *const *t, int n) {
    if (!c || c->size == 1 || n == 0) return NAC_OK;
    if (c->iface->allreduce_tensors) return c->iface->allreduce_tensors(c, t, n);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += nac_tensor_numel(t[i]);
    if (total > c->staging_n) {
        float *s = realloc(c->staging, (size_t)total * sizeof *s);
        if (!s) return nac_error(NAC_ERR_NOMEM, "allreduce: out of memory for %lld floats",
                                 (long long)total);
        c->staging = s;
        c->staging_n = total;
    }
    int64_t off = 0;
    for (int i = 0; i < n; off += nac_tensor_numel(t[i]), i++)
        NAC_TRY(nac_tensor_to_host(t[i], c->staging + off));
    NAC_TRY(c->iface->allreduce_sum(c, c->staging, total));
    off = 0;
    for (int i = 0; i < n; off += nac_tensor_numel(t[i]), i++)
        NAC_TRY(nac_tensor_from_host(t[i], c->staging + off));
    return NAC_OK;
}

bool nac_comm_have_mpi(void) {
#ifdef NAC_HAVE_MPI
    return true;
#else
    return false;
#endif
}

nac_status nac_comm_world(nac_comm_t **out) {
#ifdef NAC_HAVE_MPI
    return nac_comm_mpi_world(out);
#else
    return nac_comm_single(out);
#endif
}

bool nac_comm_have_nccl(void) {
#ifdef NAC_HAVE_NCCL
    return true;
#else
    return false;
#endif
}

#ifndef NAC_HAVE_NCCL
nac_status nac_comm_nccl_create(nac_comm_t *host, int device, nac_comm_device_ptr_fn device_ptr,
                                nac_comm_t **out) {
    (void)host, (void)device, (void)device_ptr;
    *out = NULL;
    return nac_error(NAC_ERR_CONFIG, "this build of nacvae has no NCCL (configure with MPI and "
                     "NCCL found: cmake -DNAC_NCCL=ON)");
}
#endif
