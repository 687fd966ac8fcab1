/* `nac table5 -c CONFIG`: the paper's Table 5. For each initialisation (random, simclr,
 * mocov2, nac; each pretrained here or taken from a given checkpoint) train a VAE from the
 * encoder and evaluate it; print the table and write results.json and results.md. A failed
 * row is reported as failed and the others still run; running the same config again
 * continues in the same folder and keeps the rows already finished. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/app.h"
#include "app/table5.h"
#include "dist/comm.h"
#include "dist/ranks.h"
#include "encoders/encoder.h"
#include "eval/stats.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "nn/optim.h"

#define NROWS 4
#define MAX_SEEDS 16
static const char *const row_names[NROWS] = {"random", "simclr", "mocov2", "nac"};

typedef struct t5_config {
    char description[256];
    char rows[64];                    /* comma-separated subset of random,simclr,mocov2,nac */
    char ckpt[NROWS][512];            /* given encoder checkpoints ("" = pretrain here) */
    nac_pretrain_config pre;          /* shared pretraining settings */
    double nac_p, simclr_tau, moco_tau, moco_ema;
    int moco_queue;
    nac_vae_train_config vae;
    char seeds[128];                  /* comma-separated VAE seeds ("": train.seed only) */
    bool pretrain_per_seed;           /* pretrain each row once per seed, with that seed */
    char runs_dir[256], name[64];
} t5_config;

#define T nac_vae_train_config
#define F(k, m) NAC_CFG_FLOAT_F(t5_config, k, m
static const nac_cfg_field t5_fields[] = {
    NAC_CFG_STR_F(t5_config, "description", description, NULL, "free text"),
    NAC_CFG_STR_F(t5_config, "rows", rows, NULL, "initialisations, comma-separated"),
    NAC_CFG_STR_F(t5_config, "checkpoints.simclr", ckpt[1], NULL, "given SimCLR encoder (\"\": pretrain)"),
    NAC_CFG_STR_F(t5_config, "checkpoints.mocov2", ckpt[2], NULL, "given MoCo-v2 encoder (\"\": pretrain)"),
    NAC_CFG_STR_F(t5_config, "checkpoints.nac", ckpt[3], NULL, "given NAC encoder (\"\": pretrain)"),
    NAC_CFG_STR_F(t5_config, "data.dataset", pre.dataset, "fashion-mnist|mnist|cifar10|synthetic", "dataset"),
    NAC_CFG_STR_F(t5_config, "data.path", pre.data_path, NULL, "dataset folder"),
    NAC_CFG_INT_F(t5_config, "data.synthetic_n", pre.synthetic_n, 100, 1e7, "synthetic images"),
    NAC_CFG_INT_F(t5_config, "data.test_limit", vae.test_limit, 0, 1e7, "test images evaluated (0: all)"),
    NAC_CFG_STR_F(t5_config, "model.arch", pre.arch, NAC_ENCODER_IMAGE_ARCH_CHOICES, "encoder"),
    F("model.width_mult", pre.width_mult), 0, 4, true, false, "width multiplier"),
    NAC_CFG_INT_F(t5_config, "pretrain.per_class", pre.per_class, 0, 1e7, "pretraining images a class (0: all)"),
    NAC_CFG_INT_F(t5_config, "pretrain.epochs", pre.epochs, 1, 1e6, "pretraining epochs"),
    NAC_CFG_INT_F(t5_config, "pretrain.batch", pre.batch, 2, 1e6, "pretraining images a step"),
    NAC_CFG_STR_F(t5_config, "pretrain.optim", pre.optim, NAC_OPTIM_CHOICES, "pretraining optimiser"),
    F("pretrain.lr", pre.lr), 0, 1e4, true, false, "pretraining base lr"),
    F("pretrain.weight_decay", pre.weight_decay), 0, 1, false, false, "pretraining weight decay"),
    NAC_CFG_INT_F(t5_config, "pretrain.warmup_epochs", pre.warmup_epochs, 0, 1e6, "warm-up epochs"),
    NAC_CFG_INT_F(t5_config, "pretrain.knn_every", pre.knn_every, 0, 1e6,
                  "epochs between kNN monitor evaluations (0: none)"),
    F("pretrain.crop_min", pre.crop_min), 0, 1, true, false, "RandomResizedCrop min scale"),
    F("pretrain.nac_p", nac_p), 0, 0.5, true, true, "NAC flip probability"),
    F("pretrain.simclr_tau", simclr_tau), 0, 100, true, false, "SimCLR temperature"),
    F("pretrain.moco_tau", moco_tau), 0, 100, true, false, "MoCo-v2 temperature"),
    F("pretrain.moco_ema", moco_ema), 0, 1, false, true, "MoCo-v2 momentum"),
    NAC_CFG_INT_F(t5_config, "pretrain.moco_queue", moco_queue, 2, 1e7, "MoCo-v2 queue"),
    NAC_CFG_INT_F(t5_config, "vae.per_class", vae.per_class, 0, 1e7, "VAE training images a class (0: all)"),
    NAC_CFG_INT_F(t5_config, "vae.latent", vae.latent, 1, 4096, "latent size"),
    NAC_CFG_INT_F(t5_config, "vae.dec_width", vae.dec_width, 1, 1024, "decoder base width"),
    NAC_CFG_INT_F(t5_config, "vae.dec_blocks", vae.dec_blocks, 1, 16, "decoder blocks a stage"),
    NAC_CFG_STR_F(t5_config, "vae.likelihood", vae.likelihood, "logistic|gaussian|bernoulli", "likelihood"),
    F("vae.lr", vae.lr), 0, 10, true, false, "Adam lr"),
    F("vae.head_lr_mult", vae.head_lr_mult), 0, 1e4, true, false, "posterior head lr multiplier"),
    F("vae.body_lr_mult", vae.body_lr_mult), 0, 1e4, true, false, "body lr multiplier"),
    F("vae.sigma", vae.sigma), 0, 1e3, false, false, "gaussian: fixed sigma (0: learned)"),
    NAC_CFG_STR_F(t5_config, "vae.head_init", vae.head_init, "default|zero|standardize", "head init"),
    NAC_CFG_BOOL_F(t5_config, "vae.recal_bn", vae.recal_bn, "recalibrate a frozen body's BN first"),
    NAC_CFG_INT_F(t5_config, "vae.diag_images", vae.diag_images, 0, 1e7, "test images of the diagnostics"),
    NAC_CFG_INT_F(t5_config, "vae.freeze_epochs", vae.freeze_epochs, 0, 1e6, "body frozen first"),
    NAC_CFG_BOOL_F(t5_config, "vae.freeze_body", vae.freeze_body, "body frozen throughout"),
    NAC_CFG_INT_F(t5_config, "vae.kl_warmup_epochs", vae.kl_warmup_epochs, 0, 1e6, "KL warm-up epochs"),
    NAC_CFG_INT_F(t5_config, "vae.epochs", vae.epochs, 1, 1e6, "VAE epochs"),
    NAC_CFG_INT_F(t5_config, "vae.batch", vae.batch, 2, 1e6, "VAE batch"),
    NAC_CFG_INT_F(t5_config, "eval.k", vae.is_k, 1, 1e6, "importance samples"),
    NAC_CFG_INT_F(t5_config, "eval.chunk", vae.is_chunk, 1, 1e6, "samples decoded at once"),
    NAC_CFG_INT_F(t5_config, "eval.batch", vae.eval_batch, 1, 1e5, "test images a batch"),
    NAC_CFG_INT_F(t5_config, "train.seed", pre.seed, 0, 2147483647, "seed"),
    NAC_CFG_STR_F(t5_config, "seeds", seeds, NULL,
                  "VAE seeds, comma-separated: every row runs once per seed (\"\": train.seed)"),
    NAC_CFG_BOOL_F(t5_config, "pretrain_per_seed", pretrain_per_seed,
                   "pretrain every row once per seed too (else once, with train.seed)"),
    NAC_CFG_INT_F(t5_config, "train.threads", pre.threads, 0, 1024, "compute threads (0: all)"),
    NAC_CFG_INT_F(t5_config, "train.workers", pre.workers, 0, 64, "loader threads"),
    NAC_CFG_STR_F(t5_config, "train.backend", pre.backend, "cpu|cuda", "backend"),
    NAC_CFG_STR_F(t5_config, "train.precision", pre.precision, "fp32|bf16",
                  "pretraining and VAEs: fp32, or bf16 convolutions and matrix products"),
    NAC_CFG_BOOL_F(t5_config, "dist.sync_bn", pre.sync_bn,
                   "under mpirun: batch norm over all ranks in the pretraining and the VAEs"),
    NAC_CFG_STR_F(t5_config, "run.dir", runs_dir, NULL, "folder of run folders"),
    NAC_CFG_STR_F(t5_config, "run.name", name, NULL, "run folder name"),
};
#undef F
#undef T
static const nac_cfg_schema t5_schema = {t5_fields, sizeof t5_fields / sizeof *t5_fields, NULL};

static void t5_defaults(t5_config *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->rows, "random,simclr,mocov2,nac");
    nac_pretrain_defaults(&c->pre);
    nac_vae_train_defaults(&c->vae);
    c->nac_p = 0.1;
    c->simclr_tau = 0.5;
    c->moco_tau = 0.2;
    c->moco_ema = 0.99;
    c->moco_queue = 4096;
    strcpy(c->runs_dir, "runs");
    strcpy(c->name, "table5");
}

static void print_t5_keys(void) {
    t5_config d;
    t5_defaults(&d);
    nac_config_print_help(&t5_schema, &d);
}

typedef struct row_result {
    bool wanted, ok, resumed;
    char error[512];
    cJSON *json;
    nac_vae_train_result r;
    char vae_dir[600];  /* where its logpx.npy / kl.npy are */
} row_result;

/* The seeds list: "" -> {train.seed}; at most MAX_SEEDS distinct integers. */
static nac_status parse_seeds(const t5_config *c, const char *file, int *seeds, int *n) {
    *n = 0;
    if (!c->seeds[0]) {
        seeds[(*n)++] = c->pre.seed;
        return NAC_OK;
    }
    const char *p = c->seeds;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 2147483647 || (*end && *end != ','))
            return nac_error(NAC_ERR_CONFIG, "%s: \"seeds\" = \"%s\": want comma-separated integers "
                             "in 0..2147483647", file, c->seeds);
        for (int i = 0; i < *n; i++)
            if (seeds[i] == v)
                return nac_error(NAC_ERR_CONFIG, "%s: \"seeds\" lists %ld twice", file, v);
        if (*n == MAX_SEEDS)
            return nac_error(NAC_ERR_CONFIG, "%s: \"seeds\" lists more than %d seeds", file, MAX_SEEDS);
        seeds[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return nac_error(NAC_ERR_CONFIG, "%s: \"seeds\" ends with a comma", file);
    }
    return NAC_OK;
}

/* The row's pretraining config, from the shared settings. */
static void row_pretrain_config(const t5_config *c, int row, nac_pretrain_config *p) {
    *p = c->pre;
    snprintf(p->objective, sizeof p->objective, "%s", row_names[row]);
    p->p = c->nac_p;
    p->tau = row == 1 ? c->simclr_tau : c->moco_tau;
    p->ema = c->moco_ema;
    p->queue = c->moco_queue;
    p->stats_every = 1;
    p->ckpt_every = p->epochs;
}

static nac_status subrun(const char *parent, const char *name, const nac_cfg_schema *schema,
                         const void *cfg, nac_run_t *run, bool *existed, char **json_text) {
    memset(run, 0, sizeof *run);
    snprintf(run->dir, sizeof run->dir, "%s/%s", parent, name);
    *existed = mkdir(run->dir, 0777) != 0;
    if (*existed && errno != EEXIST)
        return nac_error(NAC_ERR_IO, "cannot create %s: %s", run->dir, strerror(errno));
    cJSON *doc = nac_config_to_json(schema, cfg);
    *json_text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    nac_status s = *json_text ? NAC_OK : nac_error(NAC_ERR_NOMEM, "out of memory");
    char path[700];
    if (s == NAC_OK) s = nac_run_write_json(run, "config.json", doc);
    cJSON_Delete(doc);
    if (s == NAC_OK) {
        run->metrics = fopen(nac_run_path(run, "metrics.jsonl", path, sizeof path), "a");
        if (!run->metrics) s = nac_error(NAC_ERR_IO, "cannot open %s", path);
    }
    return s;
}

/* ---- under mpirun: rank 0 drives the table; for every pretraining and VAE it runs, it
 * hands the other ranks the job (kind, folder, resume flag, resolved config), and every
 * rank trains (and evaluates) its slices. The other ranks loop on jobs until JOB_DONE. ---- */
enum { JOB_DONE, JOB_PRETRAIN, JOB_VAE };
static nac_comm_t *t5_comm;     /* the MPI job (NULL: one process) */
static bool t5_workers_gone;   /* the ranks stopped with an interrupt in a job */

static nac_status send_job(int kind, const char *dir, const char *text, bool resume) {
    int32_t head[4] = {kind, resume, dir ? (int32_t)strlen(dir) + 1 : 0,
                       text ? (int32_t)strlen(text) + 1 : 0};
    NAC_TRY(nac_comm_broadcast(t5_comm, head, sizeof head, 0));
    if (head[2]) NAC_TRY(nac_comm_broadcast(t5_comm, (void *)dir, head[2], 0));
    return head[3] ? nac_comm_broadcast(t5_comm, (void *)text, head[3], 0) : NAC_OK;
}

/* One job on this rank (run: rank 0's folder with metrics; the others' has only dir). */
static nac_status run_job(int kind, void *cfg, const char *text, nac_run_t *run, bool resume,
                          const char *label, void *res) {
    int rank = nac_comm_rank(t5_comm);
    nac_status s;
    if (kind == JOB_VAE) {
        s = nac_app_vae_ranks(cfg, text, run, resume, label, t5_comm, res);
    } else {
        nac_run_hooks_ctx ctx;
        nac_loop_hooks hooks = rank == 0 ? nac_run_hooks(&ctx, run, "pretrain") : nac_run_rank_hooks(&rank);
        s = nac_pretrain_run_comm(cfg, run->dir, text, resume, &hooks, t5_comm, res);
    }
    if (s == NAC_ERR_INTERRUPTED) t5_workers_gone = true; /* every rank stopped at one step */
    nac_run_rank_failed(t5_comm, "table5", s); /* a lone failure would leave the others waiting */
    return s;
}

/* Rank 0's side of a job: hand it out, then run it. */
static nac_status t5_pretrain(const nac_pretrain_config *p, const char *text, nac_run_t *run,
                              bool resume, nac_pretrain_result *res) {
    if (!t5_comm) return nac_app_pretrain(p, text, run, resume, res);
    NAC_TRY(send_job(JOB_PRETRAIN, run->dir, text, resume));
    return run_job(JOB_PRETRAIN, (void *)p, text, run, resume, NULL, res);
}

static nac_status t5_vae(const nac_vae_train_config *v, const char *text, nac_run_t *run, bool resume,
                         const char *label, nac_vae_train_result *res) {
    if (!t5_comm) return nac_app_vae(v, text, run, resume, label, res);
    NAC_TRY(send_job(JOB_VAE, run->dir, text, resume));
    return run_job(JOB_VAE, (void *)v, text, run, resume, label, res);
}

/* The other ranks: jobs until JOB_DONE (or a job stopped by an interrupt). */
static nac_status t5_worker(void) {
    for (;;) {
        int32_t head[4];
        NAC_TRY(nac_comm_broadcast(t5_comm, head, sizeof head, 0));
        if (head[0] == JOB_DONE) return NAC_OK;
        nac_run_t run;
        memset(&run, 0, sizeof run);
        char *text = malloc((size_t)head[3]);
        if (!text || head[2] > (int32_t)sizeof run.dir) {
            free(text);
            return nac_error(NAC_ERR_NOMEM, "table5 job: out of memory");
        }
        nac_status s = nac_comm_broadcast(t5_comm, run.dir, head[2], 0);
        if (s == NAC_OK) s = nac_comm_broadcast(t5_comm, text, head[3], 0);
        nac_pretrain_config p;
        nac_vae_train_config v;
        nac_pretrain_defaults(&p);
        nac_vae_train_defaults(&v);
        bool vae = head[0] == JOB_VAE;
        if (s == NAC_OK)
            s = nac_config_parse(text, "a table5 job (from rank 0)", vae ? &nac_vae_schema : &nac_pretrain_schema,
                                 0, NULL, vae ? (void *)&v : (void *)&p);
        union { nac_pretrain_result p; nac_vae_train_result v; } res;
        if (s == NAC_OK) s = run_job(head[0], vae ? (void *)&v : (void *)&p, text, &run, head[1], "vae", &res);
        free(text);
        if (s == NAC_ERR_NUMERIC) /* rank 0 records the row as failed and goes on, as we do */
            fprintf(stderr, "nac table5: rank %d: %s\n", nac_comm_rank(t5_comm), nac_last_error());
        if (s == NAC_ERR_INTERRUPTED || (s != NAC_OK && s != NAC_ERR_NUMERIC)) return s;
    }
}

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* One row: pretrain (unless given or finished), then the VAE (unless finished). */
/* suffix: "" for a one-seed table (the folder names of earlier versions), else "-s<seed>". */
static nac_status run_row(const t5_config *c, const char *dir, int row, int seed, const char *suffix,
                          row_result *out) {
    char enc[512] = "";
    char path[700];
    if (row > 0) {
        if (c->ckpt[row][0]) {
            snprintf(enc, sizeof enc, "%s", c->ckpt[row]);
        } else {
            nac_pretrain_config p;
            row_pretrain_config(c, row, &p);
            char name[64];
            if (c->pretrain_per_seed) {
                p.seed = seed;
                snprintf(name, sizeof name, "pretrain-%s%s", row_names[row], suffix);
            } else {
                snprintf(name, sizeof name, "pretrain-%s", row_names[row]);
            }
            nac_run_t run;
            bool existed;
            char *text = NULL;
            nac_status s = subrun(dir, name, &nac_pretrain_schema, &p, &run, &existed, &text);
            if (snprintf(enc, sizeof enc, "%s/encoder.safetensors", run.dir) >= (int)sizeof enc)
                s = nac_error(NAC_ERR_USAGE, "run folder path %s is too long", run.dir);
            if (s == NAC_OK && !file_exists(enc)) {
                bool resume = existed && file_exists(nac_run_path(&run, "checkpoint.safetensors", path, sizeof path));
                printf("[%s] pretraining (%s) in %s\n", row_names[row], resume ? "resumed" : "new", run.dir);
                nac_pretrain_result pr;
                s = t5_pretrain(&p, text, &run, resume, &pr);
            }
            free(text);
            nac_run_close(&run);
            NAC_TRY(s);
        }
    }
    nac_vae_train_config v = c->vae;
    snprintf(v.dataset, sizeof v.dataset, "%s", c->pre.dataset);
    snprintf(v.data_path, sizeof v.data_path, "%s", c->pre.data_path);
    v.synthetic_n = c->pre.synthetic_n;
    snprintf(v.arch, sizeof v.arch, "%s", c->pre.arch);
    v.width_mult = c->pre.width_mult;
    snprintf(v.encoder, sizeof v.encoder, "%s", enc);
    snprintf(v.init_name, sizeof v.init_name, "%s", row_names[row]);
    v.seed = seed;
    v.threads = c->pre.threads;
    v.workers = c->pre.workers;
    snprintf(v.backend, sizeof v.backend, "%s", c->pre.backend);
    snprintf(v.precision, sizeof v.precision, "%s", c->pre.precision);
    v.sync_bn = c->pre.sync_bn;
    v.ckpt_every = v.epochs;
    char name[64];
    snprintf(name, sizeof name, "vae-%s%s", row_names[row], suffix);
    nac_run_t run;
    bool existed;
    char *text = NULL;
    nac_status s = subrun(dir, name, &nac_vae_schema, &v, &run, &existed, &text);
    snprintf(out->vae_dir, sizeof out->vae_dir, "%s", run.dir);
    const char *results = nac_run_path(&run, "results.json", path, sizeof path);
    if (s == NAC_OK && existed && file_exists(results)) {
        char *doc;
        s = nac_read_text_file(results, &doc, NULL);
        if (s == NAC_OK) {
            out->json = cJSON_Parse(doc);
            free(doc);
            if (!out->json) s = nac_error(NAC_ERR_DATA, "%s: not valid JSON", results);
        }
        out->resumed = true;
        printf("[%s] finished earlier: %s\n", row_names[row], results);
    } else if (s == NAC_OK) {
        char vae_ckpt[700];
        bool resume = existed && file_exists(nac_run_path(&run, "vae.safetensors", vae_ckpt, sizeof vae_ckpt));
        printf("[%s] VAE training (%s) in %s\n", row_names[row], resume ? "resumed" : "new", run.dir);
        s = t5_vae(&v, text, &run, resume, row_names[row], &out->r);
        if (s == NAC_OK) out->json = nac_vae_result_json(&v, &out->r);
    }
    free(text);
    nac_run_close(&run);
    return s;
}

static double jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0 / 0.0;
}

/* A finished (row, seed): its per-image log p(x) and KL, read back from the VAE folder. */
typedef struct cell {
    bool ok;
    double *lp, *kl; /* (n) */
    int64_t n;
} cell;

static nac_status load_vec(const char *dir, const char *name, double **out, int64_t *n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    nac_npy a;
    NAC_TRY(nac_npy_load(path, &a));
    if (a.dtype != NAC_DT_F64 || a.ndim != 1 || a.shape[0] < 1) {
        nac_npy_free(&a);
        return nac_error(NAC_ERR_DATA, "%s: want a float64 vector of per-image values", path);
    }
    *out = a.data;
    *n = a.shape[0];
    return NAC_OK;
}

static nac_status load_cell(const row_result *r, cell *c) {
    memset(c, 0, sizeof *c);
    if (!r->wanted || !r->ok) return NAC_OK;
    int64_t n2 = 0;
    NAC_TRY(load_vec(r->vae_dir, "logpx.npy", &c->lp, &c->n));
    nac_status s = load_vec(r->vae_dir, "kl.npy", &c->kl, &n2);
    if (s == NAC_OK && n2 != c->n)
        s = nac_error(NAC_ERR_DATA, "%s: logpx.npy has %lld values, kl.npy %lld", r->vae_dir,
                      (long long)c->n, (long long)n2);
    c->ok = s == NAC_OK;
    return s;
}

static void cell_free(cell *c) {
    free(c->lp);
    free(c->kl);
    memset(c, 0, sizeof *c);
}

static cJSON *summary_json(const nac_stats_summary *x) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", (double)x->n);
    cJSON_AddNumberToObject(o, "mean", x->mean);
    cJSON_AddNumberToObject(o, "sd", x->sd);
    cJSON_AddNumberToObject(o, "se", x->se);
    cJSON_AddNumberToObject(o, "lo95", x->lo);
    cJSON_AddNumberToObject(o, "hi95", x->hi);
    return o;
}

/* The paired comparison of row a with row b over the seeds where both finished:
 *   per_seed   paired mean and se over the same test images, per seed
 *   seeds      the per-seed paired means summarised over seeds (95% t interval)
 *   images     per image, each row's mean over those seeds, then paired over images
 * *interval: the 95% interval shown in the table (over seeds when >= 2, else over images),
 * *img_se the pooled paired se over images. Returns NULL when no seed has both. */
static cJSON *paired_json(cell cells[][MAX_SEEDS], int a, int b, int nseeds, const int *seeds,
                          double *mean, double *lo, double *hi, double *img_se) {
    double means[MAX_SEEDS];
    int used[MAX_SEEDS], k = 0;
    int64_t n = 0;
    for (int i = 0; i < nseeds; i++)
        if (cells[a][i].ok && cells[b][i].ok && cells[a][i].n == cells[b][i].n &&
            (k == 0 || cells[a][i].n == n)) {
            n = cells[a][i].n;
            used[k++] = i;
        }
    if (k == 0) return NULL;
    cJSON *o = cJSON_CreateObject(), *ps = cJSON_AddArrayToObject(o, "per_seed");
    double *pa = calloc((size_t)n, sizeof *pa), *pb = calloc((size_t)n, sizeof *pb);
    if (!pa || !pb) {
        free(pa);
        free(pb);
        cJSON_Delete(o);
        return NULL;
    }
    for (int j = 0; j < k; j++) {
        const cell *ca = &cells[a][used[j]], *cb = &cells[b][used[j]];
        nac_stats_summary d;
        if (nac_stats_paired(ca->lp, cb->lp, n, &d) != NAC_OK) continue;
        means[j] = d.mean;
        cJSON *e = summary_json(&d);
        cJSON_AddNumberToObject(e, "seed", seeds[used[j]]);
        cJSON_AddItemToArray(ps, e);
        for (int64_t t = 0; t < n; t++) {
            pa[t] += ca->lp[t] / k;
            pb[t] += cb->lp[t] / k;
        }
    }
    nac_stats_summary over_seeds, over_images;
    nac_stats_summarize(means, k, &over_seeds);
    nac_stats_paired(pa, pb, n, &over_images);
    cJSON_AddItemToObject(o, "seeds", summary_json(&over_seeds));
    cJSON_AddItemToObject(o, "images", summary_json(&over_images));
    const nac_stats_summary *shown = k >= 2 ? &over_seeds : &over_images;
    cJSON_AddStringToObject(o, "interval", k >= 2 ? "seeds" : "images");
    *mean = shown->mean;
    *lo = shown->lo;
    *hi = shown->hi;
    *img_se = over_images.se;
    free(pa);
    free(pb);
    return o;
}

static nac_status write_tables(const t5_config *c, const char *dir, row_result rows[][MAX_SEEDS],
                               const int *seeds, int nseeds) {
    static cell cells[NROWS][MAX_SEEDS];
    nac_status s = NAC_OK;
    for (int i = 0; i < NROWS; i++)
        for (int k = 0; k < nseeds; k++) {
            nac_status ls = load_cell(&rows[i][k], &cells[i][k]);
            if (ls != NAC_OK) { /* a finished row without its per-image file: say so */
                fprintf(stderr, "[%s] %s\n", row_names[i], nac_last_error());
                cell_free(&cells[i][k]);
            }
        }
    char *md = NULL;
    size_t mdn = 0;
    FILE *f = open_memstream(&md, &mdn);
    if (!f) return nac_error(NAC_ERR_NOMEM, "out of memory");
    fprintf(f, "# Table 5 (%s, %s width x%g, latent %d, %s likelihood, K = %d importance samples)\n\n",
            c->pre.dataset, c->pre.arch, c->pre.width_mult, c->vae.latent, c->vae.likelihood,
            c->vae.is_k);
    fprintf(f, "Seeds:");
    for (int k = 0; k < nseeds; k++) fprintf(f, " %d", seeds[k]);
    fprintf(f, "\n\n| Encoder | log-likelihood (nats) | vs random (nats) | vs NAC (nats) | KL (nats) | "
               "bits/dim | active units |\n|---|---|---|---|---|---|---|\n");
    cJSON *doc = cJSON_CreateObject();
    cJSON *sl = cJSON_AddArrayToObject(doc, "seeds");
    for (int k = 0; k < nseeds; k++) cJSON_AddItemToArray(sl, cJSON_CreateNumber(seeds[k]));
    cJSON *arr = cJSON_AddArrayToObject(doc, "rows");
    nac_t5_point vsr[NROWS], klp[NROWS];
    const char *vdirs[NROWS] = {0}, *labels[NROWS] = {0};
    int nvs = 0, nkl = 0, nrep = 0;
    for (int i = 0; i < NROWS; i++) {
        if (!rows[i][0].wanted) continue;
        cJSON *o = cJSON_CreateObject(), *per = cJSON_AddArrayToObject(o, "per_seed");
        cJSON_AddStringToObject(o, "init", row_names[i]);
        double lp[MAX_SEEDS], kl[MAX_SEEDS], bpd[MAX_SEEDS], au[MAX_SEEDS], se1 = 0;
        int nok = 0;
        const char *err = NULL;
        for (int k = 0; k < nseeds; k++) {
            row_result *r = &rows[i][k];
            cJSON *e = r->json ? cJSON_Duplicate(r->json, 1) : cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "seed", seeds[k]);
            if (!r->ok) {
                cJSON_AddStringToObject(e, "status", "failed");
                cJSON_AddStringToObject(e, "error", r->error);
                err = r->error;
            } else {
                cJSON_AddStringToObject(e, "status", "ok");
                lp[nok] = jnum(e, "log_likelihood_nats");
                kl[nok] = jnum(e, "kl_nats");
                bpd[nok] = jnum(e, "bits_per_dim");
                au[nok] = jnum(e, "active_units");
                se1 = jnum(e, "log_likelihood_se");
                nok++;
            }
            cJSON_AddItemToArray(per, e);
        }
        cJSON_AddStringToObject(o, "status", nok == nseeds ? "ok" : nok ? "partial" : "failed");
        if (nok == 0) {
            fprintf(f, "| %s | failed: %s | | | | | |\n", row_names[i], err ? err : "");
            cJSON_AddItemToArray(arr, o);
            continue;
        }
        nac_stats_summary slp, skl, sbpd, sau;
        nac_stats_summarize(lp, nok, &slp);
        nac_stats_summarize(kl, nok, &skl);
        nac_stats_summarize(bpd, nok, &sbpd);
        nac_stats_summarize(au, nok, &sau);
        cJSON_AddItemToObject(o, "log_likelihood_nats", summary_json(&slp));
        cJSON_AddItemToObject(o, "kl_nats", summary_json(&skl));
        cJSON_AddItemToObject(o, "bits_per_dim", summary_json(&sbpd));
        cJSON_AddItemToObject(o, "active_units", summary_json(&sau));
        char vs[2][96];
        const int base[2] = {0, 3};
        const char *key[2] = {"vs_random", "vs_nac"};
        for (int b = 0; b < 2; b++) {
            double m = 0, lo = 0, hi = 0, ise = 0;
            cJSON *pj = i == base[b] ? NULL : paired_json(cells, i, base[b], nseeds, seeds, &m, &lo, &hi, &ise);
            if (pj && b == 0) vsr[nvs++] = (nac_t5_point){row_names[i], m, lo, hi};
            if (pj) {
                cJSON_AddItemToObject(o, key[b], pj);
                snprintf(vs[b], sizeof vs[b], "%+.2f ± %.2f [%+.2f, %+.2f]", m, ise, lo, hi);
            } else {
                snprintf(vs[b], sizeof vs[b], "%s", i == base[b] ? "—" : "n/a");
            }
        }
        klp[nkl++] = (nac_t5_point){row_names[i], skl.mean, skl.lo, skl.hi};
        for (int k = 0; k < nseeds && !vdirs[nrep]; k++)
            if (rows[i][k].ok) {
                const char *slash = strrchr(rows[i][k].vae_dir, '/');
                vdirs[nrep] = slash ? slash + 1 : rows[i][k].vae_dir;
            }
        labels[nrep++] = row_names[i];
        if (nseeds == 1)
            fprintf(f, "| %s | %.2f ± %.2f | %s | %s | %.2f | %.4f | %.0f / %d |\n", row_names[i], slp.mean,
                    se1, vs[0], vs[1], skl.mean, sbpd.mean, sau.mean, c->vae.latent);
        else
            fprintf(f, "| %s | %.2f ± %.2f | %s | %s | %.2f ± %.2f | %.4f | %.1f / %d |\n", row_names[i],
                    slp.mean, slp.sd, vs[0], vs[1], skl.mean, skl.sd, sbpd.mean, sau.mean, c->vae.latent);
        cJSON_AddItemToArray(arr, o);
    }
    if (nseeds == 1)
        fprintf(f, "\nlog-likelihood: mean ± standard error over the test images. vs random / vs NAC: "
                   "the paired difference of log p(x) over the same test images, ± its paired "
                   "standard error, [95%% interval]; positive means higher likelihood than the "
                   "baseline row.\n");
    else
        fprintf(f, "\nlog-likelihood and KL: mean ± standard deviation over %d seeds. vs random / vs "
                   "NAC: the mean over seeds of the paired difference of log p(x) over the same test "
                   "images, ± the paired standard error over images of the seed-averaged values, "
                   "[95%% t interval over seeds]; positive means higher likelihood than the baseline "
                   "row.\n", nseeds);
    fclose(f);
    printf("\n%s\n", md);
    nac_run_t run;
    memset(&run, 0, sizeof run);
    snprintf(run.dir, sizeof run.dir, "%s", dir);
    char path[700];
    s = nac_run_write_json(&run, "results.json", doc);
    if (s == NAC_OK) s = nac_write_file_atomic(nac_run_path(&run, "results.md", path, sizeof path), md, mdn);
    if (s == NAC_OK) {
        cJSON *cj = nac_config_to_json(&t5_schema, c);
        char *ctext = cj ? cJSON_Print(cj) : NULL;
        s = ctext ? nac_t5_report(dir, md, ctext, vsr, nvs, klp, nkl, vdirs, labels, nrep)
                  : nac_error(NAC_ERR_NOMEM, "out of memory");
        free(ctext);
        cJSON_Delete(cj);
    }
    cJSON_Delete(doc);
    free(md);
    for (int i = 0; i < NROWS; i++)
        for (int k = 0; k < nseeds; k++) cell_free(&cells[i][k]);
    return s;
}

static nac_status table5(int argc, char **argv) {
    const char *config = NULL;
    char *ov[64];
    int nov = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) config = argv[++i];
        else if (strchr(argv[i], '=') && argv[i][0] != '-' && nov < 64) ov[nov++] = argv[i];
        else return nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac table5 --help)", argv[i]);
    }
    if (!config) return nac_error(NAC_ERR_USAGE, "give -c CONFIG");
    t5_config c;
    t5_defaults(&c);
    NAC_TRY(nac_config_load(config, &t5_schema, nov, ov, &c));
    int ranks = nac_comm_size(t5_comm);
    NAC_TRY(nac_dist_check_batch(c.pre.batch, 0, ranks));
    NAC_TRY(nac_dist_check_batch(c.vae.batch, 0, ranks));
    static row_result rows[NROWS][MAX_SEEDS];
    memset(rows, 0, sizeof rows);
    int seeds[MAX_SEEDS], nseeds = 0;
    NAC_TRY(parse_seeds(&c, config, seeds, &nseeds));
    char list[64];
    snprintf(list, sizeof list, "%s", c.rows);
    for (char *tok = strtok(list, ", "); tok; tok = strtok(NULL, ", ")) {
        int k = -1;
        for (int i = 0; i < NROWS; i++)
            if (!strcmp(tok, row_names[i])) k = i;
        if (k < 0)
            return nac_error(NAC_ERR_CONFIG, "%s: \"rows\" names \"%s\"; known: random, simclr, mocov2, nac",
                             config, tok);
        for (int j = 0; j < nseeds; j++) rows[k][j].wanted = true;
    }
    /* the run folder: created, or continued when it holds this very config */
    cJSON *doc = nac_config_to_json(&t5_schema, &c);
    char *text = cJSON_PrintUnformatted(doc);
    char dir[512], path[700];
    if (snprintf(dir, sizeof dir, "%s/%s", c.runs_dir, c.name) >= (int)sizeof dir)
        return nac_error(NAC_ERR_CONFIG, "%s: run.dir/run.name is too long", config);
    nac_run_t top;
    memset(&top, 0, sizeof top);
    snprintf(top.dir, sizeof top.dir, "%s", dir);
    nac_status s = NAC_OK;
    if (file_exists(nac_run_path(&top, "config.json", path, sizeof path))) {
        char *old = NULL;
        s = nac_read_text_file(path, &old, NULL);
        cJSON *oj = s == NAC_OK ? cJSON_Parse(old) : NULL;
        free(old);
        if (s == NAC_OK && (!oj || !cJSON_Compare(oj, doc, 1)))
            s = nac_error(NAC_ERR_CONFIG, "%s holds a table5 run with another config; set run.name to start a new one",
                          dir);
        cJSON_Delete(oj);
        if (s == NAC_OK) printf("continuing %s (finished rows are kept)\n", dir);
    } else {
        nac_run_t created;
        s = nac_run_create(c.runs_dir, c.name, &created);
        if (s == NAC_OK) {
            memcpy(dir, created.dir, sizeof dir);
            dir[sizeof dir - 1] = 0;
            snprintf(top.dir, sizeof top.dir, "%s", dir);
            s = nac_run_write_json(&created, "config.json", doc);
            nac_run_close(&created);
        }
    }
    free(text);
    cJSON_Delete(doc);
    NAC_TRY(s);
    printf("run folder: %s\n", dir);
    int failed = 0;
    for (int k = 0; k < nseeds; k++)
        for (int i = 0; i < NROWS; i++) {
            row_result *r = &rows[i][k];
            if (!r->wanted) continue;
            char suffix[24] = "";
            if (c.seeds[0]) snprintf(suffix, sizeof suffix, "-s%d", seeds[k]);
            if (nseeds > 1) printf("[%s] seed %d\n", row_names[i], seeds[k]);
            nac_status rs = run_row(&c, dir, i, seeds[k], suffix, r);
            r->ok = rs == NAC_OK;
            if (rs == NAC_ERR_INTERRUPTED) {
                write_tables(&c, dir, rows, seeds, nseeds);
                return rs;
            }
            if (!r->ok) {
                snprintf(r->error, sizeof r->error, "%s", nac_last_error());
                fprintf(stderr, "[%s] seed %d failed: %s\n", row_names[i], seeds[k], r->error);
                failed++;
            }
        }
    s = write_tables(&c, dir, rows, seeds, nseeds);
    for (int i = 0; i < NROWS; i++)
        for (int k = 0; k < nseeds; k++) cJSON_Delete(rows[i][k].json);
    NAC_TRY(s);
    if (failed) return nac_error(NAC_ERR_NUMERIC, "%d row(s) failed; see %s/results.md", failed, dir);
    return NAC_OK;
}

static nac_status run_table5(int argc, char **argv) {
    nac_comm_t *comm;
    NAC_TRY(nac_comm_world(&comm));
    if (nac_comm_size(comm) == 1) {
        nac_comm_free(comm);
        return table5(argc, argv);
    }
    t5_comm = comm;
    t5_workers_gone = false;
    nac_status s = nac_comm_rank(comm) == 0 ? table5(argc, argv) : t5_worker();
    if (nac_comm_rank(comm) == 0 && !t5_workers_gone) { /* also after an early error */
        nac_status d = send_job(JOB_DONE, NULL, NULL, false);
        if (s == NAC_OK) s = d;
    }
    t5_comm = NULL;
    nac_comm_free(comm);
    return s;
}

const nac_command nac_cmd_table5 = {
    "table5",
    "the paper's Table 5: VAEs from random, SimCLR, MoCo-v2 and NAC encoders",
    "table5 -c CONFIG [key=value ...]",
    "For each row (random, simclr, mocov2, nac) pretrain the encoder (or take\n"
    "checkpoints.<row>), train a VAE from it and evaluate log p(x) by importance sampling,\n"
    "once per seed of \"seeds\". Each row is compared with the random and the NAC rows by\n"
    "the paired difference of log p(x) over the same test images (each VAE writes its\n"
    "per-image logpx.npy), with standard errors and 95% intervals (over seeds when there\n"
    "are several). Prints the table and writes results.json (every seed, every paired\n"
    "statistic) and results.md into run.dir/run.name.\n"
    "Running the same config again continues there and keeps the finished rows. Config keys:",
    run_table5,
    print_t5_keys,
};
