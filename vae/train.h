/* VAE training from a pretrained (or random) encoder body and its evaluation: the ELBO with
 * Adam over three parameter groups (body at the base rate, frozen for a number of epochs
 * or throughout; the new posterior head at a multiplied rate; the decoder), optional KL
 * warm-up, checkpoints and resume; then importance-sampled log p(x), KL, bits/dim and
 * active units on the test split, and PNG grids of reconstructions and prior samples. */
#ifndef NAC_VAE_TRAIN_H
#define NAC_VAE_TRAIN_H

#include <stdbool.h>

#include "nn/loop.h"
#include "io/safetensors.h"
#include "vae/is.h"

typedef struct nac_vae_train_config {
    char description[256];
    /* data */
    char dataset[16];
    char data_path[512];
    int synthetic_n;
    int per_class;          /* training images a class (0: all) */
    int test_limit;         /* test images evaluated (0: all) */
    /* encoder body */
    char arch[32];
    double width_mult;
    char encoder[512];      /* encoder.safetensors of a pretraining run; "" = random init */
    char init_name[16];     /* the row's label: random | simclr | mocov2 | nac | ... */
    /* VAE */
    int latent, dec_width, dec_blocks;
    char likelihood[16];    /* logistic | gaussian | bernoulli */
    double sigma;           /* gaussian: > 0 a fixed sigma (pixels in [0, 1]); 0 learned */
    char head_init[16];     /* default (PyTorch Linear) | zero | standardize (as if the head
                               read z-scored features, from the training images' features) */
    /* optimisation */
    double lr, head_lr_mult, body_lr_mult, weight_decay;
    bool recal_bn;          /* a frozen body's batch-norm statistics recalibrated on the
                               training images first (nac_encoder_recalibrate_bn) */
    int freeze_epochs;      /* body frozen for this many epochs first */
    bool freeze_body;       /* body frozen throughout */
    int kl_warmup_epochs;
    int epochs, batch, seed, workers, threads;
    char backend[8];
    char precision[8];      /* fp32 | bf16 (convolutions and matrix products; docs/performance.md) */
    /* evaluation */
    int is_k, is_chunk, eval_batch;
    int log_every, ckpt_every, max_steps;
    double ckpt_minutes;    /* > 0: also a checkpoint this many minutes after the last */
    int diag_images;        /* test images of the per-epoch diagnostics (KL, active units) */
    char runs_dir[256];
    char name[64];
    /* data parallelism (docs/distributed.md) */
    int emulate_ranks;      /* > 1: this one process runs that many ranks as threads */
    bool sync_bn;           /* batch norm (body and decoder) over all ranks' rows */
    int mpi_ranks;          /* not a config key: the ranks of the MPI job, set by the app
                               so that the batch split is checked before a run folder exists */
} nac_vae_train_config;

void nac_vae_train_defaults(nac_vae_train_config *cfg);
/* The rules between fields that need no data (the encoder file exists, a batch the
 * dataset can fill, a data path that exists): checked before a run folder is created. */
nac_status nac_vae_config_check(const nac_vae_train_config *cfg);
/* The encoder file's metadata matches the config (arch, width_mult): NAC_ERR_CONFIG. */
nac_status nac_vae_encoder_compatible(const nac_vae_train_config *cfg, const nac_st_file *f);

typedef struct nac_vae_train_result {
    nac_vae_eval_result_t eval;
    int64_t steps;
    double last_loss;       /* mean negative ELBO of the last logged steps, nats */
    double train_s, eval_s;
    char checkpoint[600];
    char precision[8];      /* what the backend ran: fp32, or bf16 where asked and supported */
} nac_vae_train_result;

/* Train (or with resume, continue) in run folder dir, then evaluate; writes
 * dir/vae.safetensors, dir/reconstructions.png, dir/samples.png, and per test image (in the
 * test split's order, so runs on the same split pair up) dir/logpx.npy and dir/kl.npy
 * (float64, nats); the evaluation's numbers are returned (the app writes results.json).
 * metrics.jsonl gets, besides the training lines (with the mean norm of the features
 * entering the head), a "diag" line at step 0 and after every epoch: mean KL, active
 * units and feature norm on diag_images test images. */
nac_status nac_vae_train_run(const nac_vae_train_config *cfg, const char *dir,
                             const char *config_json, bool resume, const nac_loop_hooks *hooks,
                             nac_vae_train_result *res);

/* The same on rank nac_comm_rank(comm) of nac_comm_size(comm) data-parallel ranks (comm
 * NULL: one process); nac_vae_train_run calls it through nac_comm_run_emulated when
 * cfg->emulate_ranks > 1. Every rank calls it with the same config and folder. Training:
 * rank r takes its slice of each global batch (train.batch must split into equal slices),
 * with its own batch-norm statistics (body and decoder), the reparameterisation noise of
 * its images' rows of the global batch, and the gradients averaged over the ranks (the
 * gradient of the global batch's mean loss), so every rank takes the same Adam step; the
 * logged losses are the global batch's means. Rank 0 alone writes the checkpoint (it
 * records the number of ranks; an unfinished run resumes only with as many; a finished one
 * may be evaluated again with any number), the diagnostics and the evaluation's files.
 * Evaluation: rank 0's batch-norm statistics go to every rank, each rank evaluates a
 * contiguous slice of the test images, and the per-image results are gathered in image
 * order, so the files and numbers equal a one-process evaluation of the same weights (to
 * the rounding of batch composition). Every rank's res holds the evaluation. */
typedef struct nac_comm nac_comm_t;
nac_status nac_vae_train_run_comm(const nac_vae_train_config *cfg, const char *dir,
                                  const char *config_json, bool resume,
                                  const nac_loop_hooks *hooks, nac_comm_t *comm,
                                  nac_vae_train_result *res);

#endif
