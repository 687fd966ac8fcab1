/* What the encoder-evaluation commands (nac probe, knn, hash; app/cmd_probe.c, cmd_knn.c,
 * cmd_hash.c) share: their common options and the encoder under evaluation with its data
 * (opened through encoders/encfile and data/recipe), features and projections of it, and the
 * results-file header. Private to app/. */
#ifndef NAC_APP_EVALCMD_H
#define NAC_APP_EVALCMD_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "backend/backend.h"
#include "data/dataset.h"
#include "encoders/encoder.h"
#include "encoders/head.h"
#include "dist/comm.h"
#include "eval/probe.h"

/* Options every encoder evaluation takes. */
typedef struct eval_opts {
    const char *target;  /* RUN folder or encoder file */
    const char *out;     /* results file (default: next to the encoder) */
    const char *data;    /* dataset folder, overriding the config's */
    const char *dataset; /* dataset name, overriding the config's */
    const char *backend;
    int threads, batch, seed;
    int train_per_class, test_per_class; /* 0: all */
    bool baselines;      /* probe/knn: also raw pixels and a random encoder (BN recalibrated) */
    int recal_images;    /* training images the random baseline's BN statistics come from */
    nac_comm_t *comm;    /* data-parallel ranks (NULL: one process): every rank computes its
                            slice of each feature set, rank 0 evaluates and writes */
} eval_opts;

#define EVAL_OPTS_USAGE \
    " [--out FILE] [--data PATH] [--dataset NAME] [--batch N] [--seed N]\n" \
    "        [--train-per-class N] [--test-per-class N] [--backend cpu|cuda] [--threads N]"
#define EVAL_OPTS_HELP                                                                        \
    "RUN is a run folder of `nac pretrain` (its encoder.safetensors is used) or ENCODER an\n" \
    "encoder file. Features come from the encoder in evaluation mode, without augmentation,\n" \
    "normalised with the file's norm_mean/norm_std, on the dataset named in its config.\n"    \
    "  --out FILE            results JSON (default: beside the encoder)\n"                     \
    "  --data PATH           dataset folder instead of the config's data.path\n"             \
    "  --dataset NAME        fashion-mnist|mnist|cifar10|synthetic instead of data.dataset\n" \
    "  --batch N             images an encoder forward (256)\n"                              \
    "  --seed N              seed of the splits and subsets (0)\n"                           \
    "  --train-per-class N   use N training images a class (0: all)\n"                       \
    "  --test-per-class N    use N test images a class (0: all)\n"                           \
    "  --backend cpu|cuda, --threads N (0: all cores)\n"

#define BASELINE_USAGE " [--no-baselines] [--recal-images N]"
#define BASELINE_HELP                                                                          \
    "Beside the encoder, the same protocol runs on two baselines: raw pixels (normalised as\n" \
    "the encoder's input) and a random-init encoder of the same architecture and seed whose\n" \
    "batch-norm statistics are recalibrated on training images (no gradients).\n"             \
    "  --no-baselines        evaluate the encoder only\n"                                     \
    "  --recal-images N      training images for the random baseline's statistics (10000)\n"

/* ---- the encoder under evaluation and its data ---- */

typedef struct eval_model {
    char file[600];  /* the encoder file */
    char dir[600];   /* where results go by default: the run folder or the file's folder */
    nac_backend_t *be;
    nac_encoder_t *enc;
    nac_head_t *g;   /* projection head (NULL if the file has none) */
    int features, code_bits;
    float mean[3], std[3];
    char arch[NAC_ENCODER_ARCH_LEN], objective[32];
    char dataset[32], data_path[512];
    int synthetic_n, config_seed;
    nac_dataset_t train, test;
    nac_comm_t *comm; /* from the options */
    bool lead;        /* rank 0 (or one process): evaluates, prints and writes */
} eval_model;

nac_status ev_opt_int(const char *opt, const char *v, long lo, long hi, int *out);
nac_status ev_opt_float(const char *opt, const char *v, double lo, double hi, bool excl_lo,
                            float *out);
nac_status ev_opt_list(const char *opt, const char *v, double lo, double hi, int max,
                           float *vals, int *n);
void ev_eval_opts_defaults(eval_opts *o);
nac_status ev_eval_opt(eval_opts *o, int argc, char **argv, int *i, bool *used);
nac_status ev_bad_option(const char *a, const char *known, const char *cmd);
nac_status ev_positional(eval_opts *o, const char *a, const char *cmd);
void ev_model_free(eval_model *m);
nac_status ev_model_open(eval_model *m, const eval_opts *o, const char *cmd);
nac_status ev_features_of(eval_model *m, const nac_dataset_t *ds, int batch, const char *label,
                              float **out);
/* The rows every probe and kNN evaluation reports: the encoder, then its baselines. */
enum { EV_ROW_ENCODER, EV_ROW_PIXELS, EV_ROW_RANDOM, EV_NROWS };
extern const char *const ev_row_names[EV_NROWS];
/* Train and test features (malloc'ed) of one row and their width. */
nac_status ev_row_features(eval_model *m, const eval_opts *o, int row, float **tr, float **te,
                           int64_t *dim);
/* "baselines": {"pixels": {...}, "random_bn": {...}} into doc for rows 1..nrows-1 (features,
 * top1, top5; lr and train_top1 when given), with "recal_images"; nothing for one row. */
void ev_baselines_json(cJSON *doc, const eval_opts *o, int nrows, const int64_t *dims,
                       const double *top1, const double *top5, const double *lr,
                       const double *train_top1);
/* The rows' top-1 / top-5 as a small table on stdout. */
void ev_print_rows(const char *what, int nrows, const double *top1, const double *top5,
                   const int64_t *dims);
nac_status ev_project(eval_model *m, const float *h, int64_t n, int batch, float *o);
void ev_results_path(const eval_model *m, const eval_opts *o, const char *name, char *buf,
                         size_t n);
nac_status ev_write_json(const char *path, const cJSON *doc);
double ev_f2d(float x);
cJSON *ev_results_doc(const eval_model *m, const char *what);
cJSON *ev_class_names(const nac_dataset_t *ds);
nac_status ev_ensure_dir(const char *dir);

/* A command's start under mpirun: o->comm is the MPI job's communicator when the process
 * is one of several ranks (else stays NULL); ev_world_close frees it and, after a failure of
 * this rank, prints it and aborts the job (a lone failure would leave the others waiting). */
nac_status ev_world_open(eval_opts *o);
nac_status ev_world_close(eval_opts *o, const char *cmd, nac_status s);

/* ---- the commands as calls (nac sweep runs them this way) ---- */

/* nac probe on o->target: writes probe_results.json, prints the summary; *top1 (may be NULL)
 * receives the test top-1. */
nac_status ev_probe(const eval_opts *o, const nac_probe_config *pc, double *top1);

typedef struct ev_hash_opts {
    int qpc, R;             /* queries a class; the cutoff of mAP@R */
    const char *rank;       /* "hamming" or "dot01" */
    const char *export_dir; /* .npy exports, or NULL */
} ev_hash_opts;
#define EV_HASH_OPTS_DEFAULT {.qpc = 1000, .R = 1000, .rank = "hamming", .export_dir = NULL}

/* nac hash on o->target: writes hash_results.json, prints the summary; *map_all (may be NULL)
 * receives mAP over the whole ranking. */
nac_status ev_hash(const eval_opts *o, const ev_hash_opts *h, double *map_all);

#endif
