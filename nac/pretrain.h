/* The pretraining loop: two augmented views per image, an encoder with the projection g
 * and inference network r, one of the four objectives, LARS/SGD/Adam with warm-up and
 * cosine, momentum copies for NAC-MQ and MoCo-v2, code statistics, checkpoints and an
 * exact resume. The app maps a JSON config onto nac_pretrain_config. */
#ifndef NAC_PRETRAIN_H
#define NAC_PRETRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "dist/comm.h"
#include "nn/loop.h"
#include "backend/status.h"

typedef struct nac_pretrain_config {
    char description[256];
    /* data */
    char dataset[16];        /* fashion-mnist | mnist | cifar10 | synthetic */
    char data_path[512];
    int synthetic_n;         /* images of the synthetic dataset */
    int per_class;           /* 0: all training images; else this many a class */
    int hash_queries;        /* > 0: the hashing protocol: train + test pooled, this many
                                queries a class held out (as `nac hash` with the same number
                                and hash_seed), training only on the rest (the gallery) */
    int hash_seed;
    /* augmentations (torchvision semantics) */
    double crop_min;         /* RandomResizedCrop scale lower bound (0.08) */
    double flip_p, jitter_p, gray_p;
    double brightness, contrast, saturation, hue;
    bool blur;
    /* model */
    char arch[32];
    double width_mult;
    int proj_dim;            /* D = 128 */
    /* method */
    char objective[16];      /* nac | nac_mq | simclr | mocov2 */
    double p, tau, ema, lambda;
    int queue;
    bool mq_detach;          /* NAC-MQ: the variational term trains the inference head only,
                                not the encoder (the official momentum-queue code) */
    /* optimiser */
    char optim[8];           /* lars | sgd | adam | adamw */
    double lr, momentum, weight_decay, eta;
    bool nesterov;
    int warmup_epochs;
    bool exclude_bias_bn_wd, exclude_bias_bn_lars;
    /* training */
    int epochs, batch, seed, workers, threads;
    char backend[8];
    char precision[8];       /* fp32 | bf16 (convolutions and matrix products) */
    int log_every;           /* steps between metrics.jsonl lines */
    int ckpt_every;          /* epochs between checkpoints (and one at the end) */
    double ckpt_minutes;     /* > 0: also a checkpoint this many minutes after the last */
    int stats_every;         /* epochs between code statistics */
    int stats_subset;        /* images for the code statistics */
    int knn_every;           /* epochs between kNN monitor evaluations (0: none) */
    int knn_bank;            /* kNN memory bank: training images a class */
    int knn_queries;         /* kNN queries: held-out (test split) images a class */
    int max_steps;           /* stop after this many steps in total (0: no limit) */
    int emulate_ranks;       /* > 1: this one process runs that many data-parallel ranks as
                                threads (bit-identical to mpirun -np N); 0 or 1: off */
    bool shuffle_bn;         /* N > 1 ranks, NAC-MQ and MoCo-v2: the momentum encoder's batch
                                norm sees a slice shuffled across the ranks (MoCo) */
    bool sync_bn;            /* N > 1 ranks: batch norm of the encoder (and its momentum copy)
                                with each view's statistics over all ranks (SimCLR's global
                                BN; shuffle_bn then has no effect); false: per rank */
    int mpi_ranks;           /* not a config key: the ranks of the MPI job, set by the app
                                before the config is checked (0, 1: one process) */
    int local_rank;          /* not a config key: under mpirun (mpi_ranks > 1), this rank's
                                index on its machine, set by the app: its CUDA device */
    bool nccl;               /* not a config key: the app asks nac_pretrain_run_comm to sum
                                the gradients with NCCL (mpirun, train.backend=cuda, a build
                                with NCCL), bootstrapped through the run's communicator */
    char runs_dir[256];
    char name[64];
} nac_pretrain_config;

void nac_pretrain_defaults(nac_pretrain_config *cfg);
/* The rules between fields that need no data (warm-up below the epochs, a queue of two
 * batches, a batch the dataset can fill, a data path that exists): checked before a run
 * folder is created. NAC_ERR_CONFIG naming the keys, or NAC_ERR_NOINPUT for the path. */
nac_status nac_pretrain_config_check(const nac_pretrain_config *cfg);
/* data.dataset / data.path: a dataset that needs a folder names one, and the files it
 * reads (the training split; with_test also the test split) are there. */
nac_status nac_data_path_check(const char *dataset, const char *path, bool with_test);

typedef nac_loop_hooks nac_pretrain_hooks;

typedef struct nac_pretrain_result {
    int64_t steps;           /* steps done in total */
    int epochs_done;
    double last_loss;
    char last_checkpoint[600];
    int64_t timed_steps;     /* steps of this call after its first (which plans buffers) */
    double step_seconds;     /* their wall time: batch, step, all-reduce (no evaluations) */
    double images_per_s;     /* images (both views) of the whole job per second of steps */
} nac_pretrain_result;

/* Run (or, with resume, continue) pretraining in the run folder `dir`, which holds the
 * resolved config as config_json (stored in every checkpoint's metadata). Checkpoints:
 * dir/checkpoint.safetensors (latest, atomic) and dir/encoder.safetensors (the encoder
 * alone, torchvision names, at the end). Returns NAC_ERR_INTERRUPTED after saving when
 * hooks->interrupted fires, NAC_ERR_NUMERIC (last good checkpoint kept) on a NaN/Inf loss. */
nac_status nac_pretrain_run(const nac_pretrain_config *cfg, const char *dir,
                            const char *config_json, bool resume,
                            const nac_pretrain_hooks *hooks, nac_pretrain_result *res);

/* The same on rank nac_comm_rank(comm) of nac_comm_size(comm) data-parallel ranks (comm
 * NULL: one process): every rank calls it with the same config and folder; rank r trains
 * on its slice of each global batch (train.batch must split into equal slices), rank 0
 * alone writes checkpoints (recording the number of ranks; a checkpoint resumes only with
 * as many), the encoder file, code statistics and kNN lines; every rank calls its own
 * hooks (the interrupt of rank 0's hooks stops all ranks at the same step). */
typedef struct nac_comm nac_comm_t;
nac_status nac_pretrain_run_comm(const nac_pretrain_config *cfg, const char *dir,
                                 const char *config_json, bool resume,
                                 const nac_pretrain_hooks *hooks, nac_comm_t *comm,
                                 nac_pretrain_result *res);
/* nranks ranks in this process, one thread each (rank 0 on the caller's thread, with
 * hooks; the others without): what nac_pretrain_run does when cfg->emulate_ranks > 1. A
 * rank that fails stops the others; the first such rank's error is returned. */
nac_status nac_pretrain_run_emulated(const nac_pretrain_config *cfg, const char *dir,
                                     const char *config_json, bool resume,
                                     const nac_pretrain_hooks *hooks, int nranks,
                                     nac_pretrain_result *res);

/* Code statistics on a fixed evaluation subset. */
typedef struct nac_code_stats {
    int distinct;            /* distinct sign patterns of the projection output */
    double mean_hamming;     /* mean pairwise Hamming distance (bits) */
    double balanced;         /* fraction of bits whose P(1) is within 0.5 +- 0.1 */
} nac_code_stats;

/* Distinct codes / Hamming / balance of n codes given as (n, d) floats (sign taken). */
void nac_code_stats_compute(const float *o, int n, int d, nac_code_stats *out);

/* Time full training steps (upload, forward of both views, objective, backward,
 * optimiser update) on random images of c x size x size: no dataset, no loader. With a
 * communicator of N ranks (nac_pretrain_bench_comm, every rank calls it): cfg->batch is
 * the global batch, each rank times the data-parallel step (nac_step_dist) on its slice
 * of batch / N images a view, between barriers, so every rank measures the job's time. */
typedef struct nac_bench_result {
    double images_per_s;  /* images (both views) per second, of the whole job */
    double images_per_s_rank; /* the same for one rank's slice (images_per_s / ranks) */
    int ranks;
    double step_s;
    double peak_rss_mb;   /* peak resident memory of the process */
    double backend_peak_mb; /* most the backend held at once (tensors, workspaces, scratch) */
    double flops_per_step;  /* convolution and matrix-product FLOPs of one step */
    int64_t params;
    char precision[8];      /* what the backend ran: fp32, or bf16 where asked and supported */
} nac_bench_result;
nac_status nac_pretrain_bench(const nac_pretrain_config *cfg, int channels, int size,
                              int warmup, int steps, nac_bench_result *out);
nac_status nac_pretrain_bench_comm(const nac_pretrain_config *cfg, nac_comm_t *comm, int channels,
                                   int size, int warmup, int steps, nac_bench_result *out);

#endif
