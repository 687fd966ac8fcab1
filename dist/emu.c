/* The in-process emulation of N ranks (comm.h): one thread a rank, a shared table of the
 * ranks' buffers and a generation barrier. Every collective computes exactly what the MPI
 * communicator computes (the same fixed-order sum), so a run on N emulated ranks is
 * bit-identical to the same run under `mpirun -np N`. A rank's abort wakes the others and
 * fails their collectives. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "dist/comm_impl.h"

struct nac_comm_group {
    int n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    uint64_t gen;
    int failed;          /* a rank aborted (its code + 1) */
    const void **ptr;    /* (n) each rank's buffer of the collective in progress */
    float **scratch;     /* (n) each rank's all-reduce result, grow-only */
    int64_t *scratch_n;
    nac_comm_t **comms;  /* (n) */
};

typedef struct emu_rank {
    nac_comm_group_t *g;
} emu_rank;

#define GROUP(c) (((emu_rank *)(c)->ctx)->g)

/* Wait until every rank has arrived; fails on every rank once one has aborted. */
static nac_status group_wait(nac_comm_group_t *g, int rank) {
    pthread_mutex_lock(&g->mu);
    uint64_t gen = g->gen;
    if (!g->failed && ++g->arrived == g->n) {
        g->arrived = 0;
        g->gen++;
        pthread_cond_broadcast(&g->cv);
    }
    while (gen == g->gen && !g->failed) pthread_cond_wait(&g->cv, &g->mu);
    int failed = gen == g->gen ? g->failed : 0; /* every rank arrived: done, whatever came after */
    pthread_mutex_unlock(&g->mu);
    if (failed)
        return nac_error(NAC_ERR_BACKEND, "emulated rank %d: another rank failed (code %d)", rank,
                         failed - 1);
    return NAC_OK;
}

static nac_status emu_allreduce(nac_comm_t *c, float *buf, int64_t n) {
    nac_comm_group_t *g = GROUP(c);
    int r = c->rank;
    if (n > g->scratch_n[r]) {
        float *s = realloc(g->scratch[r], (size_t)n * sizeof *s);
        if (!s) {
            nac_comm_abort(c, 1);
            return nac_error(NAC_ERR_NOMEM, "emulated allreduce: out of memory");
        }
        g->scratch[r] = s;
        g->scratch_n[r] = n;
    }
    g->ptr[r] = buf;
    NAC_TRY(group_wait(g, r));
    float *dst = g->scratch[r];
    memcpy(dst, g->ptr[0], (size_t)n * sizeof *dst);
    for (int p = 1; p < g->n; p++) {
        const float *s = g->ptr[p];
        for (int64_t i = 0; i < n; i++) dst[i] += s[i];
    }
    NAC_TRY(group_wait(g, r)); /* every rank has read every buffer */
    memcpy(buf, dst, (size_t)n * sizeof *buf);
    return NAC_OK;
}

static nac_status emu_allgather(nac_comm_t *c, const float *send, int64_t n, float *recv) {
    nac_comm_group_t *g = GROUP(c);
    g->ptr[c->rank] = send;
    NAC_TRY(group_wait(g, c->rank));
    for (int p = 0; p < g->n; p++) memcpy(recv + (int64_t)p * n, g->ptr[p], (size_t)n * sizeof *recv);
    return group_wait(g, c->rank);
}

static nac_status emu_broadcast(nac_comm_t *c, void *buf, int64_t bytes, int root) {
    nac_comm_group_t *g = GROUP(c);
    g->ptr[c->rank] = buf;
    NAC_TRY(group_wait(g, c->rank));
    if (c->rank != root) memcpy(buf, g->ptr[root], (size_t)bytes);
    return group_wait(g, c->rank);
}

static nac_status emu_barrier(nac_comm_t *c) { return group_wait(GROUP(c), c->rank); }

static void emu_abort(nac_comm_t *c, int code) {
    nac_comm_group_t *g = GROUP(c);
    pthread_mutex_lock(&g->mu);
    if (!g->failed) g->failed = code + 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void emu_free(nac_comm_t *c) { free(c->ctx); }

static const nac_comm_i emu_i = {
    .name = "emulated",
    .allreduce_sum = emu_allreduce,
    .allgather = emu_allgather,
    .broadcast = emu_broadcast,
    .barrier = emu_barrier,
    .abort = emu_abort,
    .free = emu_free,
};

void nac_comm_group_free(nac_comm_group_t *g) {
    if (!g) return;
    for (int r = 0; r < g->n; r++) {
        if (g->comms) nac_comm_free(g->comms[r]);
        if (g->scratch) free(g->scratch[r]);
    }
    free(g->comms);
    free(g->scratch);
    free(g->scratch_n);
    free(g->ptr);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

nac_status nac_comm_group_create(int n, nac_comm_group_t **out) {
    *out = NULL;
    if (n < 1 || n > 4096) return nac_error(NAC_ERR_INVALID, "emulated ranks: %d (1 to 4096)", n);
    nac_comm_group_t *g = calloc(1, sizeof *g);
    if (!g) return nac_error(NAC_ERR_NOMEM, "emulated ranks: out of memory");
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->n = n;
    g->ptr = calloc((size_t)n, sizeof *g->ptr);
    g->scratch = calloc((size_t)n, sizeof *g->scratch);
    g->scratch_n = calloc((size_t)n, sizeof *g->scratch_n);
    g->comms = calloc((size_t)n, sizeof *g->comms);
    nac_status s = g->ptr && g->scratch && g->scratch_n && g->comms
                       ? NAC_OK : nac_error(NAC_ERR_NOMEM, "emulated ranks: out of memory");
    for (int r = 0; s == NAC_OK && r < n; r++) {
        emu_rank *e = calloc(1, sizeof *e);
        if (!e) s = nac_error(NAC_ERR_NOMEM, "emulated ranks: out of memory");
        else {
            e->g = g;
            s = nac_comm_new(&emu_i, e, r, n, &g->comms[r]);
            if (s != NAC_OK) free(e);
        }
    }
    if (s != NAC_OK) {
        nac_comm_group_free(g);
        return s;
    }
    *out = g;
    return NAC_OK;
}

nac_comm_t *nac_comm_group_rank(nac_comm_group_t *g, int rank) {
    return g && rank >= 0 && rank < g->n ? g->comms[rank] : NULL;
}
