/* The NCCL communicator (comm.h): device tensors summed in place with ncclAllReduce, host
 * collectives through the MPI communicator it was bootstrapped from. Built only where
 * nccl.h, libnccl and libcudart are found (CMake NAC_NCCL); the only file outside
 * backend/ that sees CUDA types, because NCCL's API takes a cudaStream_t. */
#include <nccl.h>
#include <cuda_runtime.h>
#include <stdlib.h>

#include "dist/comm_impl.h"

typedef struct nccl_ctx {
    nac_comm_t *host;
    ncclComm_t comm;
    cudaStream_t stream;
    nac_comm_device_ptr_fn device_ptr;
} nccl_ctx;

#define CTX(c) ((nccl_ctx *)(c)->ctx)

static nac_status nccl_check(ncclResult_t r, const char *what) {
    if (r == ncclSuccess) return NAC_OK;
    return nac_error(NAC_ERR_BACKEND, "NCCL %s failed: %s", what, ncclGetErrorString(r));
}

static nac_status cuda_check(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return NAC_OK;
    return nac_error(NAC_ERR_BACKEND, "CUDA %s failed: %s", what, cudaGetErrorString(e));
}

static nac_status nccl_allreduce_host(nac_comm_t *c, float *buf, int64_t n) {
    return nac_comm_allreduce_sum(CTX(c)->host, buf, n);
}
static nac_status nccl_allgather(nac_comm_t *c, const float *send, int64_t n, float *recv) {
    return nac_comm_allgather(CTX(c)->host, send, n, recv);
}
static nac_status nccl_broadcast(nac_comm_t *c, void *buf, int64_t bytes, int root) {
    return nac_comm_broadcast(CTX(c)->host, buf, bytes, root);
}
static nac_status nccl_barrier(nac_comm_t *c) { return nac_comm_barrier(CTX(c)->host); }
static nac_status nccl_local_rank(nac_comm_t *c, int *out) {
    return nac_comm_local_rank(CTX(c)->host, out);
}

static nac_status nccl_allreduce_tensors(nac_comm_t *c, nac_tensor_t *const *t, int n) {
    nccl_ctx *x = CTX(c);
    for (int i = 0; i < n; i++)
        if (!x->device_ptr(t[i]))
            return nac_error(NAC_ERR_INVALID, "NCCL allreduce: tensor %d of %d is not a plain "
                             "device tensor of the %s backend", i, n, nac_backend_name(t[i]->be));
    /* the CUDA backend computes on a non-blocking stream of its own, which the default
       stream does not wait for: its work (the gradients) is finished first */
    for (int i = 0; i < n; i++)
        if (t[i]->be && (i == 0 || t[i]->be != t[i - 1]->be))
            NAC_TRY(nac_backend_synchronize(t[i]->be));
    NAC_TRY(nccl_check(ncclGroupStart(), "GroupStart"));
    nac_status s = NAC_OK;
    for (int i = 0; i < n && s == NAC_OK; i++) {
        float *p = x->device_ptr(t[i]);
        s = nccl_check(ncclAllReduce(p, p, (size_t)nac_tensor_numel(t[i]), ncclFloat, ncclSum,
                                     x->comm, x->stream), "AllReduce");
    }
    nac_status e = nccl_check(ncclGroupEnd(), "GroupEnd");
    NAC_TRY(s);
    NAC_TRY(e);
    return cuda_check(cudaStreamSynchronize(x->stream), "StreamSynchronize");
}

static void nccl_abort(nac_comm_t *c, int code) {
    nccl_ctx *x = CTX(c);
    ncclCommAbort(x->comm);
    x->comm = NULL;
    nac_comm_abort(x->host, code);
}

static void nccl_free(nac_comm_t *c) {
    nccl_ctx *x = CTX(c);
    if (!x) return;
    if (x->comm) ncclCommDestroy(x->comm);
    free(x);
}

static const nac_comm_i nccl_i = {
    .name = "nccl",
    .allreduce_sum = nccl_allreduce_host,
    .allgather = nccl_allgather,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .local_rank = nccl_local_rank,
    .allreduce_tensors = nccl_allreduce_tensors,
    .abort = nccl_abort,
    .free = nccl_free,
};

nac_status nac_comm_nccl_create(nac_comm_t *host, int device, nac_comm_device_ptr_fn device_ptr,
                                nac_comm_t **out) {
    *out = NULL;
    if (!device_ptr) return nac_error(NAC_ERR_INVALID, "NCCL communicator: no device-pointer accessor");
    ncclUniqueId id;
    if (nac_comm_rank(host) == 0) NAC_TRY(nccl_check(ncclGetUniqueId(&id), "GetUniqueId"));
    NAC_TRY(nac_comm_broadcast(host, &id, sizeof id, 0));
    NAC_TRY(cuda_check(cudaSetDevice(device), "SetDevice"));
    nccl_ctx *x = calloc(1, sizeof *x);
    if (!x) return nac_error(NAC_ERR_NOMEM, "NCCL communicator: out of memory");
    x->host = host;
    x->device_ptr = device_ptr;
    x->stream = 0; /* the default stream; the backend's is waited for (nccl_allreduce_tensors) */
    nac_status s = nccl_check(ncclCommInitRank(&x->comm, nac_comm_size(host), id, nac_comm_rank(host)),
                              "CommInitRank");
    if (s == NAC_OK) s = nac_comm_new(&nccl_i, x, nac_comm_rank(host), nac_comm_size(host), out);
    if (s != NAC_OK) {
        if (x->comm) ncclCommDestroy(x->comm);
        free(x);
    }
    return s;
}
