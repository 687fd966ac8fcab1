/* Two patterns above the communicator that the VAE stage and the evaluations share: work
 * split into contiguous slices of rows (rank r owns the rows nac_comm_slice gives it) and
 * put back together in row order on every rank; and a group of N emulated ranks run as
 * threads of this process, with the failure of one rank reported once. */
#ifndef NAC_DIST_RANKS_H
#define NAC_DIST_RANKS_H

#include <stddef.h>
#include <stdint.h>

#include "dist/comm.h"

/* rows holds n rows of row_bytes bytes; this rank has filled its own slice
 * (nac_comm_slice(n, rank, size)). Afterwards every rank holds every row, byte for byte
 * what its owner wrote (any element type: one broadcast of bytes a rank, in rank order). */
nac_status nac_comm_allgather_rows(nac_comm_t *c, void *rows, int64_t n, size_t row_bytes);

/* The ranks agree on a value (e.g. a digest of the trained weights): NAC_ERR_BACKEND,
 * naming `what` and the first rank that differs from rank 0, if they do not. */
nac_status nac_comm_check_same(nac_comm_t *c, uint64_t value, const char *what);

/* After a phase that can fail on one rank alone (its slice of an evaluation), before the
 * next collective: returns s where this rank failed, else the status of the first rank that
 * did ("another rank failed: rank r ..."), else NAC_OK; so every rank leaves together. */
nac_status nac_comm_agree_status(nac_comm_t *c, nac_status s);

/* One rank's work: called with its communicator (rank 0 on the caller's thread). */
typedef nac_status (*nac_rank_main_fn)(void *arg, nac_comm_t *comm);

/* Run fn on nranks emulated ranks (threads on an in-process group). A rank that fails
 * (other than an interrupt or a NaN loss, which every rank meets at the same step) aborts
 * the group, so the others' collectives fail instead of waiting. Returns the error of the
 * first rank that failed on its own ("rank r: ..." for r > 0), else rank 0's status. */
nac_status nac_comm_run_emulated(int nranks, nac_rank_main_fn fn, void *arg);

/* The config's data-parallel rules, checked before a run folder exists: "train.batch"
 * splits into equal slices for dist.emulate_ranks or for the MPI job's ranks (0 or 1:
 * none), and not both at once (NAC_ERR_CONFIG). */
nac_status nac_dist_check_batch(int batch, int emulate_ranks, int mpi_ranks);

/* A checkpoint at path written by `written` ranks (its "ranks" metadata; NULL: 1) resumed
 * by nranks: NAC_ERR_CONFIG with how to resume it when they differ. */
nac_status nac_dist_check_resume(const char *path, const char *written, int nranks);

/* FNV-1a over bytes, continuing from h (start with NAC_DIGEST_INIT). */
#define NAC_DIGEST_INIT 1469598103934665603ull
uint64_t nac_digest_bytes(uint64_t h, const void *p, size_t n);

#endif
