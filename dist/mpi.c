/* The MPI communicator (comm.h) on MPI_COMM_WORLD. MPI is initialised once per process
 * (MPI_THREAD_FUNNELED: only the thread that trains calls MPI) and finalised at exit, so
 * that a process may run several trainings. The sum all-reduce is a reduce-scatter by
 * MPI_Alltoallv, a local sum in rank order and an MPI_Allgatherv: the volume of a ring
 * all-reduce (2 (N-1)/N of the buffer a rank) with a result that does not depend on the
 * MPI library's reduction order, so it is bit-identical to the emulated ranks. */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/comm_impl.h"

typedef struct mpi_ctx {
    float *scratch;   /* (size * chunk) received chunks */
    int64_t scratch_n;
    int *counts, *displs, *rcounts, *rdispls; /* (size) each */
} mpi_ctx;

static nac_status mpi_check(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return NAC_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return nac_error(NAC_ERR_BACKEND, "MPI %s failed: %s", what, msg);
}

static nac_status fits_int(int64_t n, const char *what) {
    if (n > INT_MAX)
        return nac_error(NAC_ERR_INVALID, "MPI %s: %lld elements is more than one call takes",
                         what, (long long)n);
    return NAC_OK;
}

static nac_status mpi_allreduce(nac_comm_t *c, float *buf, int64_t n) {
    mpi_ctx *m = c->ctx;
    int size = c->size;
    NAC_TRY(fits_int(n, "allreduce"));
    int64_t first, mine;
    nac_comm_slice(n, c->rank, size, &first, &mine);
    if ((int64_t)size * mine > m->scratch_n) {
        float *s = realloc(m->scratch, (size_t)size * (size_t)mine * sizeof *s);
        if (!s) return nac_error(NAC_ERR_NOMEM, "MPI allreduce: out of memory");
        m->scratch = s;
        m->scratch_n = (int64_t)size * mine;
    }
    /* reduce-scatter: rank p receives every rank's copy of slice p */
    for (int p = 0; p < size; p++) {
        int64_t f, k;
        nac_comm_slice(n, p, size, &f, &k);
        m->counts[p] = (int)k;
        m->displs[p] = (int)f;
        m->rcounts[p] = (int)mine;
        m->rdispls[p] = (int)(p * mine);
    }
    NAC_TRY(mpi_check(MPI_Alltoallv(buf, m->counts, m->displs, MPI_FLOAT, m->scratch, m->rcounts,
                                    m->rdispls, MPI_FLOAT, MPI_COMM_WORLD), "Alltoallv"));
    nac_comm_sum_ordered(buf + first, m->scratch, mine, size, mine);
    return mpi_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, m->counts, m->displs,
                                    MPI_FLOAT, MPI_COMM_WORLD), "Allgatherv");
}

static nac_status mpi_allgather(nac_comm_t *c, const float *send, int64_t n, float *recv) {
    (void)c;
    NAC_TRY(fits_int(n, "allgather"));
    return mpi_check(MPI_Allgather(send, (int)n, MPI_FLOAT, recv, (int)n, MPI_FLOAT, MPI_COMM_WORLD),
                     "Allgather");
}

static nac_status mpi_broadcast(nac_comm_t *c, void *buf, int64_t bytes, int root) {
    (void)c;
    NAC_TRY(fits_int(bytes, "broadcast"));
    return mpi_check(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD), "Bcast");
}

static nac_status mpi_barrier(nac_comm_t *c) {
    (void)c;
    return mpi_check(MPI_Barrier(MPI_COMM_WORLD), "Barrier");
}

static nac_status mpi_local_rank(nac_comm_t *c, int *out) {
    MPI_Comm node;
    NAC_TRY(mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank,
                                          MPI_INFO_NULL, &node), "Comm_split_type"));
    nac_status s = mpi_check(MPI_Comm_rank(node, out), "Comm_rank");
    MPI_Comm_free(&node);
    return s;
}

static void mpi_abort(nac_comm_t *c, int code) {
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, code);
}

static void mpi_free(nac_comm_t *c) {
    mpi_ctx *m = c->ctx;
    if (!m) return;
    free(m->scratch);
    free(m->counts);
    free(m->displs);
    free(m->rcounts);
    free(m->rdispls);
    free(m);
}

static const nac_comm_i mpi_i = {
    .name = "mpi",
    .allreduce_sum = mpi_allreduce,
    .allgather = mpi_allgather,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .local_rank = mpi_local_rank,
    .abort = mpi_abort,
    .free = mpi_free,
};

static void finalize_at_exit(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

/* Whether an MPI launcher (mpirun, mpiexec, srun --mpi=pmix|pmi2) started this process:
 * each leaves its process-management interface's rank variable. Only this yes/no is read
 * from the environment; rank and size come from MPI. A plain start never initialises MPI
 * (no "singleton" start: it costs a fraction of a second and forks a helper daemon). */
static bool launched_by_mpi(void) {
    return getenv("PMIX_RANK") || getenv("PMI_RANK") || getenv("OMPI_COMM_WORLD_RANK");
}

nac_status nac_comm_mpi_world(nac_comm_t **out) {
    *out = NULL;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (fin) return nac_error(NAC_ERR_BACKEND, "MPI was finalised already in this process");
    if (!init && !launched_by_mpi()) return nac_comm_single(out);
    if (!init) {
        int provided = 0;
        NAC_TRY(mpi_check(MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided), "Init"));
        atexit(finalize_at_exit);
    }
    /* errors come back as codes, so that the caller can name what failed */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    mpi_ctx *m = calloc(1, sizeof *m);
    if (m) {
        m->counts = calloc((size_t)size, sizeof(int));
        m->displs = calloc((size_t)size, sizeof(int));
        m->rcounts = calloc((size_t)size, sizeof(int));
        m->rdispls = calloc((size_t)size, sizeof(int));
    }
    nac_comm_t tmp = {.ctx = m};
    if (!m || !m->counts || !m->displs || !m->rcounts || !m->rdispls) {
        mpi_free(&tmp);
        return nac_error(NAC_ERR_NOMEM, "MPI communicator: out of memory");
    }
    nac_status s = nac_comm_new(&mpi_i, m, rank, size, out);
    if (s != NAC_OK) mpi_free(&tmp);
    return s;
}
