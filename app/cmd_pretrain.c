/* `nac pretrain -c CONFIG [key=value ...]` and `nac pretrain --resume RUN`: JSON config
 * -> nac_pretrain_config, a new run folder (never overwriting one), metrics.jsonl,
 * progress, signals, and the exit codes of DESIGN.md's failure behaviour. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/config.h"
#include "app/run.h"
#include "app/table5.h"
#include "dist/comm.h"
#include "encoders/encoder.h"
#include "nn/optim.h"
#include "nac/objective.h"
#include "nac/pretrain.h"

#define PC nac_pretrain_config
static const nac_cfg_field pretrain_fields[] = {
    NAC_CFG_STR_F(PC, "description", description, NULL, "free text, kept in the run"),
    NAC_CFG_STR_F(PC, "data.dataset", dataset, "fashion-mnist|mnist|cifar10|synthetic", "dataset"),
    NAC_CFG_STR_F(PC, "data.path", data_path, NULL, "dataset folder"),
    NAC_CFG_INT_F(PC, "data.synthetic_n", synthetic_n, 10, 1e7, "images of the synthetic dataset"),
    NAC_CFG_INT_F(PC, "data.per_class", per_class, 0, 1e7, "training images a class (0: all)"),
    NAC_CFG_FLOAT_F(PC, "augment.crop_min", crop_min, 0, 1, true, false, "RandomResizedCrop min scale"),
    NAC_CFG_FLOAT_F(PC, "augment.flip_p", flip_p, 0, 1, false, false, "horizontal flip probability"),
    NAC_CFG_FLOAT_F(PC, "augment.jitter_p", jitter_p, 0, 1, false, false, "ColorJitter probability"),
    NAC_CFG_FLOAT_F(PC, "augment.brightness", brightness, 0, 10, false, false, "ColorJitter brightness"),
    NAC_CFG_FLOAT_F(PC, "augment.contrast", contrast, 0, 10, false, false, "ColorJitter contrast"),
    NAC_CFG_FLOAT_F(PC, "augment.saturation", saturation, 0, 10, false, false, "ColorJitter saturation"),
    NAC_CFG_FLOAT_F(PC, "augment.hue", hue, 0, 0.5, false, false, "ColorJitter hue"),
    NAC_CFG_FLOAT_F(PC, "augment.gray_p", gray_p, 0, 1, false, false, "RandomGrayscale probability"),
    NAC_CFG_BOOL_F(PC, "augment.blur", blur, "Gaussian blur (ImageNet recipe)"),
    NAC_CFG_STR_F(PC, "model.arch", arch, NAC_ENCODER_IMAGE_ARCH_CHOICES, "encoder"),
    NAC_CFG_FLOAT_F(PC, "model.width_mult", width_mult, 0, 4, true, false, "width multiplier"),
    NAC_CFG_INT_F(PC, "model.proj_dim", proj_dim, 1, 65536, "code length D"),
    NAC_CFG_STR_F(PC, "method.objective", objective, NAC_OBJECTIVE_CHOICES, "objective"),
    NAC_CFG_FLOAT_F(PC, "method.p", p, 0, 0.5, true, true, "NAC channel flip probability"),
    NAC_CFG_FLOAT_F(PC, "method.tau", tau, 0, 100, true, false, "SimCLR/MoCo temperature"),
    NAC_CFG_FLOAT_F(PC, "method.ema", ema, 0, 1, false, true, "momentum-encoder decay"),
    NAC_CFG_FLOAT_F(PC, "method.lambda", lambda, 0, 100, false, false, "NAC-MQ weight of ||z||^2"),
    NAC_CFG_INT_F(PC, "method.queue", queue, 1, 1e7, "queue length (NAC-MQ, MoCo-v2)"),
    NAC_CFG_STR_F(PC, "optim.kind", optim, NAC_OPTIM_CHOICES, "optimiser"),
    NAC_CFG_FLOAT_F(PC, "optim.lr", lr, 0, 1e4, true, false, "base learning rate"),
    NAC_CFG_FLOAT_F(PC, "optim.momentum", momentum, 0, 1, false, true, "momentum"),
    NAC_CFG_FLOAT_F(PC, "optim.weight_decay", weight_decay, 0, 1, false, false, "weight decay"),
    NAC_CFG_FLOAT_F(PC, "optim.eta", eta, 0, 1, true, false, "LARS trust coefficient"),
    NAC_CFG_BOOL_F(PC, "optim.nesterov", nesterov, "Nesterov momentum (SGD)"),
    NAC_CFG_INT_F(PC, "optim.warmup_epochs", warmup_epochs, 0, 1e6, "linear warm-up epochs"),
    NAC_CFG_BOOL_F(PC, "optim.exclude_bias_bn_wd", exclude_bias_bn_wd, "no weight decay on biases and BN"),
    NAC_CFG_BOOL_F(PC, "optim.exclude_bias_bn_lars", exclude_bias_bn_lars, "no LARS adaptation on biases and BN"),
    NAC_CFG_INT_F(PC, "train.epochs", epochs, 1, 1e6, "epochs"),
    NAC_CFG_INT_F(PC, "train.batch", batch, 2, 1e6, "images a step (two views each)"),
    NAC_CFG_INT_F(PC, "train.seed", seed, 0, 2147483647, "the run's seed"),
    NAC_CFG_INT_F(PC, "train.workers", workers, 0, 64, "data loader threads"),
    NAC_CFG_INT_F(PC, "train.threads", threads, 0, 1024, "compute threads (0: all cores)"),
    NAC_CFG_STR_F(PC, "train.backend", backend, "cpu|cuda", "compute backend"),
    NAC_CFG_STR_F(PC, "train.precision", precision, "fp32|bf16",
                  "convolutions and matrix products: fp32, or bf16 with fp32 accumulation "
                  "(AVX512_BF16/AMX CPUs; others fall back to fp32 with a message)"),
    NAC_CFG_INT_F(PC, "train.log_every", log_every, 1, 1e9, "steps between metrics lines"),
    NAC_CFG_INT_F(PC, "train.ckpt_every", ckpt_every, 1, 1e6, "epochs between checkpoints"),
    NAC_CFG_FLOAT_F(PC, "train.ckpt_minutes", ckpt_minutes, 0, 1e6, false, false,
                    "also a checkpoint this many minutes after the last (0: epochs only)"),
    NAC_CFG_INT_F(PC, "train.stats_every", stats_every, 1, 1e6, "epochs between code statistics"),
    NAC_CFG_INT_F(PC, "train.stats_subset", stats_subset, 2, 1e6, "images for code statistics"),
    NAC_CFG_INT_F(PC, "data.hash_queries", hash_queries, 0, 1e7,
                  "hashing protocol: queries a class held out of train+test (0: off)"),
    NAC_CFG_INT_F(PC, "data.hash_seed", hash_seed, 0, 2147483647,
                  "hashing protocol: seed of the query split (nac hash --seed)"),
    NAC_CFG_BOOL_F(PC, "method.mq_detach", mq_detach,
                   "NAC-MQ: variational term trains the inference head only (official code)"),
    NAC_CFG_INT_F(PC, "train.knn_every", knn_every, 0, 1e6,
                  "epochs between kNN monitor evaluations (0: none)"),
    NAC_CFG_INT_F(PC, "train.knn_bank", knn_bank, 1, 1e6, "kNN monitor: training images a class"),
    NAC_CFG_INT_F(PC, "train.knn_queries", knn_queries, 1, 1e6,
                  "kNN monitor: held-out (test split) images a class"),
    NAC_CFG_INT_F(PC, "train.max_steps", max_steps, 0, 2147483647, "stop after this many steps (0: none)"),
    NAC_CFG_INT_F(PC, "dist.emulate_ranks", emulate_ranks, 0, 64,
                  "run that many data-parallel ranks as threads of this process (0, 1: off)"),
    NAC_CFG_BOOL_F(PC, "dist.shuffle_bn", shuffle_bn,
                   "data-parallel NAC-MQ/MoCo-v2: momentum encoder's batch shuffled across ranks"),
    NAC_CFG_BOOL_F(PC, "dist.sync_bn", sync_bn,
                   "data-parallel: batch norm statistics of each view over all ranks (global BN)"),
    NAC_CFG_STR_F(PC, "run.dir", runs_dir, NULL, "folder of run folders"),
    NAC_CFG_STR_F(PC, "run.name", name, NULL, "run folder name"),
};
#undef PC
static nac_status pretrain_check(const void *cfg) { return nac_pretrain_config_check(cfg); }
const nac_cfg_schema nac_pretrain_schema = {pretrain_fields,
                                            sizeof pretrain_fields / sizeof *pretrain_fields,
                                            pretrain_check};

nac_status nac_app_pretrain(const nac_pretrain_config *cfg, const char *resolved_json,
                            nac_run_t *run, bool resume, nac_pretrain_result *res) {
    nac_run_hooks_ctx ctx;
    nac_loop_hooks hooks = nac_run_hooks(&ctx, run, "pretrain");
    return nac_pretrain_run(cfg, run->dir, resolved_json, resume, &hooks, res);
}

static void print_pretrain_keys(void) {
    nac_pretrain_config d;
    nac_pretrain_defaults(&d);
    nac_config_print_help(&nac_pretrain_schema, &d);
}

/* ---- under mpirun: rank 0 starts (or reopens) the run folder and hands the others its
 * folder and resolved config; every rank trains its slice; the others log to stderr ---- */
static nac_status rank_log(void *ctx, const char *json) {
    fprintf(stderr, "[rank %d] %s\n", *(const int *)ctx, json);
    return NAC_OK;
}

/* Rank 0's outcome of starting the run, its folder, resume flag and config, on every rank. */
static nac_status share_start(nac_comm_t *comm, nac_status started, nac_run_t *run, bool *resume,
                              char **text) {
    int32_t head[3] = {(int32_t)started, *resume, *text ? (int32_t)strlen(*text) + 1 : 0};
    NAC_TRY(nac_comm_broadcast(comm, head, sizeof head, 0));
    if (head[0] != NAC_OK)
        return nac_comm_rank(comm) ? nac_error((nac_status)head[0], "rank 0 could not start the run")
                                   : (nac_status)head[0];
    *resume = head[1];
    NAC_TRY(nac_comm_broadcast(comm, run->dir, sizeof run->dir, 0));
    if (nac_comm_rank(comm) && !(*text = malloc((size_t)head[2])))
        return nac_error(NAC_ERR_NOMEM, "out of memory");
    return nac_comm_broadcast(comm, *text, head[2], 0);
}

static nac_status run_pretrain_ranks(nac_comm_t *comm, int argc, char **argv) {
    int rank = nac_comm_rank(comm);
    nac_pretrain_config cfg;
    nac_pretrain_defaults(&cfg);
    cfg.mpi_ranks = nac_comm_size(comm); /* checked with the config, before the run folder */
    nac_run_t run;
    memset(&run, 0, sizeof run);
    bool resume = false;
    char *text = NULL;
    nac_status s = rank == 0 ? nac_run_start(argc, argv, "pretrain", &nac_pretrain_schema, &cfg, &run,
                                             &resume, &text)
                             : NAC_OK;
    s = share_start(comm, s, &run, &resume, &text);
    if (s != NAC_OK) { /* every rank knows: rank 0 reports it (main), the others return */
        free(text);
        return s;
    }
    if (rank)
        s = nac_config_parse(text, "the run's config (from rank 0)", &nac_pretrain_schema, 0, NULL, &cfg);
    /* a rank's GPU is its index on its machine; the CUDA backend's gradients go through
       NCCL where it was built (else staged through the host and MPI) */
    int local = rank;
    nac_status ls = nac_comm_local_rank(comm, &local); /* collective: every rank calls it */
    if (s == NAC_OK) s = ls;
    cfg.local_rank = local;
    cfg.nccl = !strcmp(cfg.backend, "cuda") && nac_comm_have_nccl();
    nac_pretrain_result res;
    if (s == NAC_OK) {
        nac_run_hooks_ctx ctx;
        nac_loop_hooks hooks = {.ctx = &rank, .log = rank_log};
        if (rank == 0) hooks = nac_run_hooks(&ctx, &run, "pretrain");
        else nac_signals_install(); /* rank 0's interrupt stops everyone at one step */
        s = nac_pretrain_run_comm(&cfg, run.dir, text, resume, &hooks, comm, &res);
    }
    if (s == NAC_OK && rank == 0)
        printf("done: %d ranks, %lld steps, last loss %.4f, checkpoint %s\n"
               "speed: %.1f images/s (both views) for the job, %.1f a rank, over %lld steps\n",
               nac_comm_size(comm), (long long)res.steps, res.last_loss, res.last_checkpoint,
               res.images_per_s, res.images_per_s / nac_comm_size(comm), (long long)res.timed_steps);
    free(text);
    if (rank == 0) nac_run_close(&run);
    /* a failure of this rank alone would leave the others waiting in a collective: say
     * why here (main cannot any more) and stop the job; an interrupt or a NaN loss stops
     * every rank at the same step by itself */
    if (s != NAC_OK && s != NAC_ERR_INTERRUPTED && s != NAC_ERR_NUMERIC) {
        fprintf(stderr, "nac pretrain: rank %d: %s\n", rank, nac_last_error());
        nac_comm_abort(comm, nac_status_exit_code(s));
    }
    return s;
}

static nac_status run_pretrain(int argc, char **argv) {
    nac_comm_t *comm;
    NAC_TRY(nac_comm_world(&comm));
    if (nac_comm_size(comm) > 1) {
        nac_status s = run_pretrain_ranks(comm, argc, argv);
        nac_comm_free(comm);
        return s;
    }
    nac_comm_free(comm);
    nac_pretrain_config cfg;
    nac_pretrain_defaults(&cfg);
    nac_run_t run;
    bool resume;
    char *text;
    NAC_TRY(nac_run_start(argc, argv, "pretrain", &nac_pretrain_schema, &cfg, &run, &resume, &text));
    nac_pretrain_result res;
    nac_status s = nac_app_pretrain(&cfg, text, &run, resume, &res);
    if (s == NAC_OK)
        printf("done: %lld steps, last loss %.4f, checkpoint %s\nspeed: %.1f images/s (both views) "
               "over %lld steps\n", (long long)res.steps, res.last_loss, res.last_checkpoint,
               res.images_per_s, (long long)res.timed_steps);
    free(text);
    nac_run_close(&run);
    return s;
}

const nac_command nac_cmd_pretrain = {
    "pretrain",
    "pretrain an encoder with NAC, NAC-MQ, SimCLR or MoCo-v2",
    "pretrain -c CONFIG [key=value ...] | pretrain key=value ... | pretrain --resume RUN",
    "Creates a run folder (run.dir/run.name, never overwriting one) with the resolved\n"
    "config.json, metrics.jsonl, checkpoint.safetensors (every train.ckpt_every epochs\n"
    "and at the end) and encoder.safetensors (torchvision names). --resume RUN continues\n"
    "from the last checkpoint with the same data order, augmentations and channel noise.\n"
    "SIGINT/SIGTERM save a checkpoint and exit 130/143. Config keys:",
    run_pretrain,
    print_pretrain_keys,
};
