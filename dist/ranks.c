/* Row-sliced gathers, a cross-rank agreement check and emulated rank groups (ranks.h). */
#include "dist/ranks.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

nac_status nac_comm_allgather_rows(nac_comm_t *c, void *rows, int64_t n, size_t row_bytes) {
    if (n < 0 || (n > 0 && (!rows || row_bytes == 0)))
        return nac_error(NAC_ERR_INVALID, "nac_comm_allgather_rows: %lld rows of %zu bytes at %p",
                         (long long)n, row_bytes, rows);
    for (int r = 0; r < nac_comm_size(c); r++) {
        int64_t first, count;
        nac_comm_slice(n, r, nac_comm_size(c), &first, &count);
        if (count > 0)
            NAC_TRY(nac_comm_broadcast(c, (char *)rows + (size_t)first * row_bytes,
                                       count * (int64_t)row_bytes, r));
    }
    return NAC_OK;
}

nac_status nac_comm_check_same(nac_comm_t *c, uint64_t value, const char *what) {
    int size = nac_comm_size(c);
    if (size == 1) return NAC_OK;
    uint64_t *all = calloc((size_t)size, sizeof *all);
    if (!all) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", what);
    all[nac_comm_rank(c)] = value;
    nac_status s = nac_comm_allgather_rows(c, all, size, sizeof *all);
    for (int r = 1; s == NAC_OK && r < size; r++)
        if (all[r] != all[0])
            s = nac_error(NAC_ERR_BACKEND, "%s differ between rank 0 and rank %d of %d", what, r, size);
    free(all);
    return s;
}

nac_status nac_dist_check_batch(int batch, int emulate_ranks, int mpi_ranks) {
    if (emulate_ranks > 1 && batch % emulate_ranks)
        return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d does not split into %d equal slices "
                         "(\"dist.emulate_ranks\" = %d)", batch, emulate_ranks, emulate_ranks);
    if (mpi_ranks > 1 && batch % mpi_ranks)
        return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d does not split into %d equal slices, "
                         "one for each of the %d MPI ranks", batch, mpi_ranks, mpi_ranks);
    if (mpi_ranks > 1 && emulate_ranks > 1)
        return nac_error(NAC_ERR_CONFIG, "\"dist.emulate_ranks\" = %d under mpirun with %d ranks: "
                         "use one or the other", emulate_ranks, mpi_ranks);
    return NAC_OK;
}

nac_status nac_comm_agree_status(nac_comm_t *c, nac_status s) {
    int size = nac_comm_size(c);
    if (size == 1) return s;
    int32_t *all = calloc((size_t)size, sizeof *all);
    if (!all) return nac_error(NAC_ERR_NOMEM, "out of memory");
    all[nac_comm_rank(c)] = (int32_t)s;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", nac_last_error()); /* this rank's own, kept */
    nac_status g = nac_comm_allgather_rows(c, all, size, sizeof *all);
    nac_status out = s != NAC_OK ? nac_error(s, "%s", msg) : g;
    for (int r = 0; out == NAC_OK && r < size; r++)
        if (all[r] != NAC_OK)
            out = nac_error((nac_status)all[r], "another rank failed: rank %d (its message is its own)", r);
    free(all);
    return out;
}

nac_status nac_dist_check_resume(const char *path, const char *written, int nranks) {
    int ranks = written ? atoi(written) : 1;
    if (ranks == nranks) return NAC_OK;
    return nac_error(NAC_ERR_CONFIG, "%s was written by %d rank%s; this run has %d (resume it with "
                     "%d rank%s: mpirun -np %d, or dist.emulate_ranks = %d)", path, ranks,
                     ranks == 1 ? "" : "s", nranks, ranks, ranks == 1 ? "" : "s", ranks, ranks);
}

uint64_t nac_digest_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* ---- emulated rank groups ---- */
typedef struct rank_job {
    nac_rank_main_fn fn;
    void *arg;
    nac_comm_t *comm;
    nac_status status;
    char msg[1024];
} rank_job;

static void *rank_thread(void *p) {
    rank_job *j = p;
    j->status = j->fn(j->arg, j->comm);
    if (j->status != NAC_OK && j->status != NAC_ERR_INTERRUPTED && j->status != NAC_ERR_NUMERIC)
        nac_comm_abort(j->comm, nac_status_exit_code(j->status));
    snprintf(j->msg, sizeof j->msg, "%s", nac_last_error());
    return NULL;
}

nac_status nac_comm_run_emulated(int nranks, nac_rank_main_fn fn, void *arg) {
    if (nranks < 1 || !fn)
        return nac_error(NAC_ERR_INVALID, "nac_comm_run_emulated: %d ranks", nranks);
    nac_comm_group_t *g;
    NAC_TRY(nac_comm_group_create(nranks, &g));
    rank_job *jobs = calloc((size_t)nranks, sizeof *jobs);
    pthread_t *th = calloc((size_t)nranks, sizeof *th);
    char *started = calloc((size_t)nranks, 1);
    nac_status s = jobs && th && started ? NAC_OK : nac_error(NAC_ERR_NOMEM, "emulated ranks: out of memory");
    for (int r = 0; s == NAC_OK && r < nranks; r++)
        jobs[r] = (rank_job){.fn = fn, .arg = arg, .comm = nac_comm_group_rank(g, r)};
    for (int r = 1; s == NAC_OK && r < nranks; r++) {
        started[r] = pthread_create(&th[r], NULL, rank_thread, &jobs[r]) == 0;
        if (!started[r]) {
            nac_comm_abort(jobs[r].comm, 1);
            s = nac_error(NAC_ERR_NOMEM, "emulated ranks: cannot start rank %d's thread", r);
        }
    }
    if (s == NAC_OK) rank_thread(&jobs[0]); /* rank 0 on the caller's thread: its signals */
    for (int r = 1; started && r < nranks; r++)
        if (started[r]) pthread_join(th[r], NULL);
    if (s == NAC_OK) {
        int who = 0; /* the first rank that failed on its own, else rank 0 */
        for (int r = 0; r < nranks; r++)
            if (jobs[r].status != NAC_OK && !strstr(jobs[r].msg, "another rank failed")) {
                who = r;
                break;
            }
        s = jobs[who].status;
        if (s != NAC_OK && who) nac_error(s, "rank %d: %s", who, jobs[who].msg);
        else if (s != NAC_OK) nac_error(s, "%s", jobs[0].msg);
    }
    free(jobs);
    free(th);
    free(started);
    nac_comm_group_free(g);
    return s;
}
