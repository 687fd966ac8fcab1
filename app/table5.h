/* Shared between the app's commands: config loaders and the run functions that wrap the
 * training loops with run folders, metrics and progress. */
#ifndef NAC_APP_TABLE5_H
#define NAC_APP_TABLE5_H

#include "app/config.h"
#include "app/run.h"
#include "nac/pretrain.h"
#include "vae/train.h"

extern const nac_cfg_schema nac_pretrain_schema, nac_vae_schema;
nac_status nac_app_pretrain(const nac_pretrain_config *cfg, const char *resolved_json,
                            nac_run_t *run, bool resume, nac_pretrain_result *res);
nac_status nac_app_vae(const nac_vae_train_config *cfg, const char *resolved_json, nac_run_t *run,
                       bool resume, const char *label, nac_vae_train_result *res);
/* The same as rank nac_comm_rank(comm) of a data-parallel job (comm NULL: nac_app_vae):
 * rank 0 logs to the run and writes results.json, the others log to stderr. */
typedef struct nac_comm nac_comm_t;
nac_status nac_app_vae_ranks(const nac_vae_train_config *cfg, const char *resolved_json,
                             nac_run_t *run, bool resume, const char *label, nac_comm_t *comm,
                             nac_vae_train_result *res);
cJSON *nac_vae_result_json(const nac_vae_train_config *cfg, const nac_vae_train_result *r);

/* A row of a Table 5 figure: its name, mean and 95% interval. */
#define NAC_T5_MAX_ROWS 8
typedef struct nac_t5_point {
    const char *name;
    double mean, lo, hi;
} nac_t5_point;

/* Figures (table5_vs_random, table5_kl: PNG and SVG) and results.html into dir, from the
 * table's markdown, the config, the points of the two figures, and each row's VAE folder
 * relative to dir (NULL: none) with its label. */
nac_status nac_t5_report(const char *dir, const char *md, const char *config_json,
                         const nac_t5_point *vs_random, int nvs, const nac_t5_point *kl, int nkl,
                         const char *const *vae_dirs, const char *const *row_labels, int nrows);

#endif
