/* The one loop driver of every training run (pretraining, VAE training): epochs and
 * resumable batches, metrics lines at a cadence, the progress line, interrupt-then-save,
 * checkpoints every so many epochs and at the end, NaN stops that keep the last good
 * checkpoint. A run supplies its step, metrics and save as a small table; the app supplies
 * the hooks: it owns files, terminals and signals, the loops only call these. */
#ifndef NAC_NN_LOOP_H
#define NAC_NN_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/status.h"
#include "dist/comm.h"

typedef struct nac_loop_hooks {
    void *ctx;
    /* one JSON object (no newline) for metrics.jsonl */
    nac_status (*log)(void *ctx, const char *json);
    /* progress within the whole run: steps done of total; extra = "loss 1.23" */
    void (*progress)(void *ctx, int64_t done, int64_t total, const char *extra);
    /* non-zero when the run must save and stop (SIGINT/SIGTERM) */
    int (*interrupted)(void *ctx);
} nac_loop_hooks;

/* What a run gives the driver. `self` is the run's trainer. */
typedef struct nac_loop_i {
    /* Position the batches at batch `first` of `epoch` (0-based). */
    nac_status (*start_epoch)(void *self, int epoch, int first);
    /* One training step on the next batch, its metrics accumulated; writes the progress
     * line's text ("epoch 3 loss 1.23") into text. NAC_ERR_NUMERIC stops the run. */
    nac_status (*step)(void *self, int epoch, char *text, size_t n);
    /* The metrics line of the steps since the last one (step: steps done). */
    nac_status (*log)(void *self, int epoch, int64_t step);
    /* After each pass over the epoch's batches: complete says the epoch ended there, done
     * is the epochs done. May be NULL. */
    nac_status (*epoch_end)(void *self, bool complete, int done);
    /* Write a checkpoint; its path into path. */
    nac_status (*save)(void *self, char *path, size_t n);
} nac_loop_i;

typedef struct nac_loop {
    const nac_loop_i *iface;
    void *self;
    const nac_loop_hooks *hooks;  /* may be NULL */
    int64_t *step;                /* the run's step counter (from a checkpoint when resumed) */
    int64_t total, steps_per_epoch;
    int log_every, ckpt_every;    /* steps between metrics lines; epochs between checkpoints */
    double ckpt_seconds;          /* > 0: also a checkpoint once this long after the last one
                                     (or the start), mid-epoch if need be: a long epoch is
                                     never lost whole */
    const char *resume_dir;       /* named in the interrupt message (--resume DIR), or NULL */
    nac_comm_t *comm;             /* data-parallel ranks (NULL: one process): rank 0's
                                     interrupt and clock decide, for every rank, when to save
                                     and stop, so all ranks stop at the same step */
    char *ckpt_path;              /* receives the last checkpoint's path */
    size_t ckpt_path_n;
} nac_loop;

/* Run steps until *step reaches total. */
nac_status nac_loop_run(const nac_loop *l);

/* Format one metrics line and hand it to hooks->log (nothing if there is no log hook). */
nac_status nac_hooks_log(const nac_loop_hooks *hooks, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Seconds on the monotonic clock, for timing runs. */
double nac_now(void);

#endif
