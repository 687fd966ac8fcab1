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
cJSON *nac_vae_result_json(const nac_vae_train_config *cfg, const nac_vae_train_result *r);

#endif
