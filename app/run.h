/* Run folders (never overwritten), the metrics log (metrics.jsonl), a progress line that
 * redraws on a terminal and prints plain periodic lines otherwise, and SIGINT/SIGTERM
 * turned into a flag the training loops poll so they can save and exit cleanly. */
#ifndef NAC_APP_RUN_H
#define NAC_APP_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "app/config.h"
#include "nn/loop.h"
#include "backend/status.h"

typedef struct nac_run {
    char dir[512];
    FILE *metrics; /* metrics.jsonl, appended */
} nac_run_t;

/* Create runs_dir/name (or name-2, name-3, ... if taken): never reuses a folder. */
nac_status nac_run_create(const char *runs_dir, const char *name, nac_run_t *run);
/* Open an existing run folder (for --resume); NAC_ERR_NOINPUT if it is not one. */
nac_status nac_run_open(const char *dir, nac_run_t *run);
void nac_run_close(nac_run_t *run);
/* dir/file into buf. */
const char *nac_run_path(const nac_run_t *run, const char *file, char *buf, size_t n);
/* Write a JSON document atomically into the run folder. */
nac_status nac_run_write_json(const nac_run_t *run, const char *file, const cJSON *doc);
/* Append one JSON object as a line of metrics.jsonl (flushed). Takes ownership of obj. */
nac_status nac_run_log(nac_run_t *run, cJSON *obj);

/* Progress: call nac_progress_update after each step. */
typedef struct nac_progress {
    const char *label;
    int64_t total, done;
    double t0, last_print;
    bool tty;
    int plain_every_s; /* seconds between plain lines when not a terminal */
} nac_progress_t;

void nac_progress_start(nac_progress_t *p, const char *label, int64_t total, int64_t done);
void nac_progress_update(nac_progress_t *p, int64_t done, const char *extra);
void nac_progress_finish(nac_progress_t *p, const char *extra);

/* Loop hooks that log to the run's metrics.jsonl, draw progress labelled `label` and
 * report SIGINT/SIGTERM; the context lives in *ctx. Installs the signal handlers. */
typedef struct nac_run_hooks_ctx {
    nac_run_t *run;
    nac_progress_t prog;
    bool started;
    const char *label;
} nac_run_hooks_ctx;
nac_loop_hooks nac_run_hooks(nac_run_hooks_ctx *ctx, nac_run_t *run, const char *label);

/* The common start of `nac pretrain` / `nac vae`: parse `-c CONFIG [key=value ...]` or
 * `--resume RUN`, load the config onto cfg (which holds the defaults), create the run
 * folder (or open the resumed one) with config.json, and return the resolved config as
 * JSON text (free() it). */
nac_status nac_run_start(int argc, char **argv, const char *cmd, const nac_cfg_schema *schema,
                         void *cfg, nac_run_t *run, bool *resume, char **resolved);

/* The same under mpirun (comm with more than one rank; see docs/distributed.md): rank 0
 * starts (or reopens) the run folder with nac_run_start; every rank then gets rank 0's
 * outcome (the others fail with "rank 0 could not start the run", rank 0 keeps its own
 * message), its folder (run->dir; only rank 0's run has metrics open), the resume flag
 * and the resolved config text, which the other ranks parse onto cfg. */
typedef struct nac_comm nac_comm_t;
nac_status nac_run_start_ranks(nac_comm_t *comm, int argc, char **argv, const char *cmd,
                               const nac_cfg_schema *schema, void *cfg, nac_run_t *run,
                               bool *resume, char **resolved);
/* Hooks of a rank other than 0: metrics lines to stderr as "[rank r] {...}", no progress,
 * SIGINT/SIGTERM handlers installed (rank 0's flag is the one the loop broadcasts).
 * *rank must outlive the hooks. */
nac_loop_hooks nac_run_rank_hooks(const int *rank);
/* After this rank failed with s under mpirun: a failure of one rank alone would leave the
 * others waiting in a collective, so print "nac CMD: rank r: message" and abort the job
 * with s's exit code; an interrupt or a NaN loss (every rank meets it at the same step)
 * returns. */
void nac_run_rank_failed(nac_comm_t *comm, const char *cmd, nac_status s);

/* Signals: install once; nac_interrupted() returns the signal number (0 if none). */
void nac_signals_install(void);
int nac_interrupted(void);
/* Exit code for the interrupting signal: 130 for SIGINT, 143 for SIGTERM. */
int nac_interrupt_exit_code(void);

#endif
