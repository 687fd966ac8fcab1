/* `nac vae -c CONFIG [key=value ...]` / `nac vae --resume RUN`: train a VAE from an encoder
 * checkpoint (or a random encoder) and evaluate it; writes results.json into the run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/config.h"
#include "app/run.h"
#include "app/table5.h"
#include "dist/comm.h"
#include "encoders/encoder.h"
#include "vae/train.h"

#define VC nac_vae_train_config
static const nac_cfg_field vae_fields[] = {
    NAC_CFG_STR_F(VC, "description", description, NULL, "free text, kept in the run"),
    NAC_CFG_STR_F(VC, "data.dataset", dataset, "fashion-mnist|mnist|cifar10|synthetic", "dataset"),
    NAC_CFG_STR_F(VC, "data.path", data_path, NULL, "dataset folder"),
    NAC_CFG_INT_F(VC, "data.synthetic_n", synthetic_n, 100, 1e7, "images of the synthetic dataset"),
    NAC_CFG_INT_F(VC, "data.per_class", per_class, 0, 1e7, "training images a class (0: all)"),
    NAC_CFG_INT_F(VC, "data.test_limit", test_limit, 0, 1e7, "test images evaluated (0: all)"),
    NAC_CFG_STR_F(VC, "model.arch", arch, NAC_ENCODER_IMAGE_ARCH_CHOICES, "encoder body"),
    NAC_CFG_FLOAT_F(VC, "model.width_mult", width_mult, 0, 4, true, false, "width multiplier"),
    NAC_CFG_STR_F(VC, "model.encoder", encoder, NULL, "encoder.safetensors to start from (\"\": random)"),
    NAC_CFG_STR_F(VC, "model.init_name", init_name, NULL, "label of this initialisation"),
    NAC_CFG_INT_F(VC, "vae.latent", latent, 1, 4096, "latent size L"),
    NAC_CFG_INT_F(VC, "vae.dec_width", dec_width, 1, 1024, "decoder base width"),
    NAC_CFG_INT_F(VC, "vae.dec_blocks", dec_blocks, 1, 16, "decoder residual blocks a stage"),
    NAC_CFG_STR_F(VC, "vae.likelihood", likelihood, "logistic|gaussian|bernoulli", "pixel likelihood"),
    NAC_CFG_FLOAT_F(VC, "vae.sigma", sigma, 0, 1e3, false, false,
                    "gaussian: fixed sigma of pixels in [0, 1] (0: learned per channel)"),
    NAC_CFG_STR_F(VC, "vae.head_init", head_init, "default|zero|standardize",
                  "posterior head init (standardize: as if fed z-scored features)"),
    NAC_CFG_FLOAT_F(VC, "optim.lr", lr, 0, 10, true, false, "Adam learning rate (body, decoder)"),
    NAC_CFG_FLOAT_F(VC, "optim.head_lr_mult", head_lr_mult, 0, 1e4, true, false, "head lr multiplier"),
    NAC_CFG_FLOAT_F(VC, "optim.body_lr_mult", body_lr_mult, 0, 1e4, true, false, "body lr multiplier"),
    NAC_CFG_BOOL_F(VC, "optim.recal_bn", recal_bn,
                   "recalibrate a frozen body's BN statistics on the training images first"),
    NAC_CFG_FLOAT_F(VC, "optim.weight_decay", weight_decay, 0, 1, false, false, "weight decay"),
    NAC_CFG_INT_F(VC, "optim.freeze_epochs", freeze_epochs, 0, 1e6, "epochs with the body frozen first"),
    NAC_CFG_BOOL_F(VC, "optim.freeze_body", freeze_body, "body frozen throughout"),
    NAC_CFG_INT_F(VC, "optim.kl_warmup_epochs", kl_warmup_epochs, 0, 1e6, "KL weight warm-up epochs"),
    NAC_CFG_INT_F(VC, "train.epochs", epochs, 1, 1e6, "epochs"),
    NAC_CFG_INT_F(VC, "train.batch", batch, 2, 1e6, "batch size"),
    NAC_CFG_INT_F(VC, "train.seed", seed, 0, 2147483647, "the run's seed"),
    NAC_CFG_INT_F(VC, "train.workers", workers, 0, 64, "data loader threads"),
    NAC_CFG_INT_F(VC, "train.threads", threads, 0, 1024, "compute threads (0: all cores)"),
    NAC_CFG_STR_F(VC, "train.backend", backend, "cpu|cuda", "compute backend"),
    NAC_CFG_STR_F(VC, "train.precision", precision, "fp32|bf16",
                  "convolutions and matrix products: fp32, or bf16 with fp32 accumulation "
                  "(AVX512_BF16/AMX CPUs; others fall back to fp32 with a message)"),
    NAC_CFG_INT_F(VC, "train.log_every", log_every, 1, 1e9, "steps between metrics lines"),
    NAC_CFG_INT_F(VC, "train.ckpt_every", ckpt_every, 1, 1e6, "epochs between checkpoints"),
    NAC_CFG_FLOAT_F(VC, "train.ckpt_minutes", ckpt_minutes, 0, 1e6, false, false,
                    "also a checkpoint this many minutes after the last (0: epochs only)"),
    NAC_CFG_INT_F(VC, "train.max_steps", max_steps, 0, 2147483647, "stop after this many steps (0: none)"),
    NAC_CFG_INT_F(VC, "train.diag_images", diag_images, 0, 1e7,
                  "test images of the per-epoch KL / active-unit diagnostics (0: none)"),
    NAC_CFG_INT_F(VC, "eval.k", is_k, 1, 1e6, "importance samples a test image"),
    NAC_CFG_INT_F(VC, "eval.chunk", is_chunk, 1, 1e6, "samples decoded at once"),
    NAC_CFG_INT_F(VC, "eval.batch", eval_batch, 1, 1e5, "test images a batch"),
    NAC_CFG_INT_F(VC, "dist.emulate_ranks", emulate_ranks, 0, 64,
                  "run that many data-parallel ranks as threads of this process (0, 1: off)"),
    NAC_CFG_BOOL_F(VC, "dist.sync_bn", sync_bn,
                   "data-parallel: batch norm statistics (body and decoder) over all ranks"),
    NAC_CFG_STR_F(VC, "run.dir", runs_dir, NULL, "folder of run folders"),
    NAC_CFG_STR_F(VC, "run.name", name, NULL, "run folder name"),
};
#undef VC
static nac_status vae_check(const void *cfg) { return nac_vae_config_check(cfg); }
const nac_cfg_schema nac_vae_schema = {vae_fields, sizeof vae_fields / sizeof *vae_fields, vae_check};

cJSON *nac_vae_result_json(const nac_vae_train_config *cfg, const nac_vae_train_result *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "init", cfg->init_name);
    cJSON_AddStringToObject(o, "encoder", cfg->encoder);
    cJSON_AddStringToObject(o, "likelihood", cfg->likelihood);
    cJSON_AddNumberToObject(o, "test_images", (double)r->eval.images);
    cJSON_AddNumberToObject(o, "importance_samples", cfg->is_k);
    cJSON_AddNumberToObject(o, "log_likelihood_nats", r->eval.logpx);
    cJSON_AddNumberToObject(o, "log_likelihood_se", r->eval.logpx_se);
    cJSON_AddNumberToObject(o, "bits_per_dim", r->eval.bpd);
    cJSON_AddNumberToObject(o, "bits_per_dim_se", r->eval.bpd_se);
    cJSON_AddBoolToObject(o, "bits_per_dim_comparable", r->eval.discrete);
    cJSON_AddNumberToObject(o, "elbo_nats", r->eval.elbo);
    cJSON_AddNumberToObject(o, "kl_nats", r->eval.kl);
    cJSON_AddNumberToObject(o, "active_units", r->eval.active_units);
    cJSON_AddNumberToObject(o, "latent", cfg->latent);
    cJSON_AddNumberToObject(o, "train_steps", (double)r->steps);
    cJSON_AddNumberToObject(o, "train_seconds", r->train_s);
    cJSON_AddNumberToObject(o, "eval_seconds", r->eval_s);
    cJSON_AddStringToObject(o, "precision", r->precision);
    return o;
}

static nac_status write_results(nac_run_t *run, const nac_vae_train_config *cfg,
                                const nac_vae_train_result *res) {
    cJSON *doc = nac_vae_result_json(cfg, res);
    nac_status s = nac_run_write_json(run, "results.json", doc);
    cJSON_Delete(doc);
    return s;
}

static void print_vae_keys(void) {
    nac_vae_train_config d;
    nac_vae_train_defaults(&d);
    nac_config_print_help(&nac_vae_schema, &d);
}

static void print_result(const nac_vae_train_config *cfg, const nac_vae_train_result *res) {
    printf("%s: log p(x) %.2f +- %.2f nats, %.4f bits/dim%s, KL %.2f, active units %d/%d\n",
           cfg->init_name, res->eval.logpx, res->eval.logpx_se, res->eval.bpd,
           res->eval.discrete ? "" : " (density)", res->eval.kl, res->eval.active_units, cfg->latent);
}

nac_status nac_app_vae_ranks(const nac_vae_train_config *cfg, const char *resolved_json,
                             nac_run_t *run, bool resume, const char *label, nac_comm_t *comm,
                             nac_vae_train_result *res) {
    int rank = nac_comm_rank(comm);
    nac_run_hooks_ctx ctx;
    nac_loop_hooks hooks = rank == 0 ? nac_run_hooks(&ctx, run, label) : nac_run_rank_hooks(&rank);
    NAC_TRY(comm ? nac_vae_train_run_comm(cfg, run->dir, resolved_json, resume, &hooks, comm, res)
                 : nac_vae_train_run(cfg, run->dir, resolved_json, resume, &hooks, res));
    return rank == 0 ? write_results(run, cfg, res) : NAC_OK;
}

nac_status nac_app_vae(const nac_vae_train_config *cfg, const char *resolved_json, nac_run_t *run,
                       bool resume, const char *label, nac_vae_train_result *res) {
    return nac_app_vae_ranks(cfg, resolved_json, run, resume, label, NULL, res);
}

/* Under mpirun: rank 0 owns the run folder, every rank trains and evaluates its slices. */
static nac_status run_vae_ranks(nac_comm_t *comm, int argc, char **argv) {
    nac_vae_train_config cfg;
    nac_vae_train_defaults(&cfg);
    cfg.mpi_ranks = nac_comm_size(comm); /* checked with the config, before the run folder */
    nac_run_t run;
    bool resume;
    char *text;
    nac_status s = nac_run_start_ranks(comm, argc, argv, "vae", &nac_vae_schema, &cfg, &run, &resume,
                                       &text);
    if (s != NAC_OK) return s;
    nac_vae_train_result res;
    s = nac_app_vae_ranks(&cfg, text, &run, resume, "vae", comm, &res);
    if (s == NAC_OK && nac_comm_rank(comm) == 0) {
        print_result(&cfg, &res);
        printf("(%d ranks)\n", nac_comm_size(comm));
    }
    free(text);
    if (nac_comm_rank(comm) == 0) nac_run_close(&run);
    nac_run_rank_failed(comm, "vae", s);
    return s;
}

static nac_status run_vae(int argc, char **argv) {
    nac_comm_t *comm;
    NAC_TRY(nac_comm_world(&comm));
    if (nac_comm_size(comm) > 1) {
        nac_status s = run_vae_ranks(comm, argc, argv);
        nac_comm_free(comm);
        return s;
    }
    nac_comm_free(comm);
    nac_vae_train_config cfg;
    nac_vae_train_defaults(&cfg);
    nac_run_t run;
    bool resume;
    char *text;
    NAC_TRY(nac_run_start(argc, argv, "vae", &nac_vae_schema, &cfg, &run, &resume, &text));
    nac_vae_train_result res;
    nac_status s = nac_app_vae(&cfg, text, &run, resume, "vae", &res);
    if (s == NAC_OK) print_result(&cfg, &res);
    free(text);
    nac_run_close(&run);
    return s;
}

const nac_command nac_cmd_vae = {
    "vae",
    "train a VAE from an encoder checkpoint (or random) and evaluate log p(x)",
    "vae -c CONFIG [key=value ...] | vae key=value ... | vae --resume RUN",
    "Trains on the ELBO with Adam (new posterior head at optim.head_lr_mult times the rate,\n"
    "body finetuned, or frozen for optim.freeze_epochs / throughout), then estimates\n"
    "log p(x) on the test split by importance sampling with eval.k samples, the KL, bits/dim\n"
    "and active units; writes results.json, reconstructions.png and samples.png. Config keys:",
    run_vae,
    print_vae_keys,
};
