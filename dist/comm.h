/* The communicator of data-parallel training: rank, size and the five collectives a run
 * needs (sum all-reduce of floats in a fixed rank order, all-gather, broadcast, barrier,
 * all-reduce of backend tensors). Implementations: one process (size 1, no-ops), MPI
 * (dist/mpi.c, where built with MPI), NCCL for device tensors (dist/nccl.c, where built
 * with NCCL) and an in-process emulation of N ranks as threads (dist/emu.c) for tests and
 * the "one process, N ranks" mode. Every collective is called by every rank in the same
 * order; a rank that fails calls nac_comm_abort so that the others stop instead of waiting. */
#ifndef NAC_DIST_COMM_H
#define NAC_DIST_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

typedef struct nac_comm nac_comm_t;

typedef struct nac_comm_i {
    const char *name; /* "single", "mpi", "emulated", "nccl" */
    /* buf (n) <- sum over ranks of buf, added in rank order 0, 1, ..., size-1 (bit-identical
     * on every rank and in every implementation of this table, NCCL excepted) */
    nac_status (*allreduce_sum)(nac_comm_t *c, float *buf, int64_t n);
    /* recv (size * n) <- every rank's send (n), in rank order */
    nac_status (*allgather)(nac_comm_t *c, const float *send, int64_t n, float *recv);
    /* buf (bytes) on every rank <- root's */
    nac_status (*broadcast)(nac_comm_t *c, void *buf, int64_t bytes, int root);
    nac_status (*barrier)(nac_comm_t *c);
    /* optional: sum-all-reduce of n backend tensors in place on the device (NCCL); NULL:
     * nac_comm_allreduce_tensors stages them through the host and allreduce_sum */
    nac_status (*allreduce_tensors)(nac_comm_t *c, nac_tensor_t *const *t, int n);
    /* optional: this rank's index among the ranks on its machine (MPI: by
     * MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)); NULL: every rank is on one machine */
    nac_status (*local_rank)(nac_comm_t *c, int *out);
    /* optional: tell the other ranks that this one failed (MPI_Abort, the emulation's flag) */
    void (*abort)(nac_comm_t *c, int code);
    void (*free)(nac_comm_t *c);
} nac_comm_i;

struct nac_comm {
    const nac_comm_i *iface;
    void *ctx;
    int rank, size;
    float *staging;       /* host staging of nac_comm_allreduce_tensors (grow-only) */
    int64_t staging_n;
};

/* One process: rank 0 of 1; every collective copies or does nothing. */
nac_status nac_comm_single(nac_comm_t **out);
/* The communicator of this process: MPI_COMM_WORLD where built with MPI and the process
 * was started by an MPI launcher or has initialised MPI itself (MPI initialised once,
 * finalised at exit), else single: a plain start never initialises MPI. */
nac_status nac_comm_world(nac_comm_t **out);
/* True where this build has the MPI communicator. */
bool nac_comm_have_mpi(void);
void nac_comm_free(nac_comm_t *c); /* accepts NULL */

/* An in-process group of n ranks (threads): nac_comm_emu_rank(g, r) is rank r's
 * communicator, used by one thread each. The group outlives its communicators. */
typedef struct nac_comm_group nac_comm_group_t;
nac_status nac_comm_group_create(int n, nac_comm_group_t **out);
nac_comm_t *nac_comm_group_rank(nac_comm_group_t *g, int rank);
void nac_comm_group_free(nac_comm_group_t *g); /* accepts NULL */

/* NCCL for device tensors (where built with NCCL), bootstrapped through `host` (rank 0's
 * ncclGetUniqueId broadcast over MPI, as llm.c does) on CUDA device `device`. A backend
 * tensor's storage is private to its backend, so the backend that owns device tensors
 * hands over the accessor `device_ptr` (the float* of a plain, contiguous device tensor,
 * or NULL when it has none): nac_comm_allreduce_tensors then sums every tensor in place
 * with ncclAllReduce (one group, ncclFloat, ncclSum) on the default stream and waits.
 * The other collectives are host ones and go to `host`, which must outlive the result.
 * NCCL's reduction order is its own: results match the host path to rounding, not bits. */
typedef void *(*nac_comm_device_ptr_fn)(const nac_tensor_t *t);
nac_status nac_comm_nccl_create(nac_comm_t *host, int device, nac_comm_device_ptr_fn device_ptr,
                                nac_comm_t **out);
bool nac_comm_have_nccl(void);

/* The validating wrappers (a NULL communicator acts as single). */
int nac_comm_rank(const nac_comm_t *c);
int nac_comm_size(const nac_comm_t *c);
nac_status nac_comm_allreduce_sum(nac_comm_t *c, float *buf, int64_t n);
nac_status nac_comm_allgather(nac_comm_t *c, const float *send, int64_t n, float *recv);
nac_status nac_comm_broadcast(nac_comm_t *c, void *buf, int64_t bytes, int root);
nac_status nac_comm_barrier(nac_comm_t *c);
/* Sum every tensor over the ranks, in place (the gradients of a step): the table's device
 * path where it has one, else one host buffer holding all n tensors back to back. */
nac_status nac_comm_allreduce_tensors(nac_comm_t *c, nac_tensor_t *const *t, int n);
/* This rank's index among the ranks of its machine (the GPU it should use): the table's
 * local_rank, else the rank itself (one process, emulated ranks). Collective under MPI. */
nac_status nac_comm_local_rank(nac_comm_t *c, int *out);
/* After a failure on this rank: the others' collectives fail too (size 1: nothing). */
void nac_comm_abort(nac_comm_t *c, int code);

/* Rows [*first, *first + *count) of n rows that rank `rank` of `size` owns: equal slices
 * when size divides n, else the first n % size ranks one row more. */
void nac_comm_slice(int64_t n, int rank, int size, int64_t *first, int64_t *count);

/* The fixed-order sum every implementation uses: dst[i] = ((src[0][i] + src[1][i]) + ...)
 * over `parts` buffers of n floats, src[p] = base + p * stride. */
void nac_comm_sum_ordered(float *dst, const float *base, int64_t stride, int parts, int64_t n);

#endif
