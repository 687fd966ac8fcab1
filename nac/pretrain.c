/* The pretraining loop (see pretrain.h). One step: upload the two views as one 2K batch,
 * encoder forward with per-view batch norm (groups = 2), heads g and r, the objective,
 * backward through heads and encoder, LARS/SGD/Adam at the scheduled rate, momentum
 * update. All randomness derives from (seed, stream, epoch/step), so a resumed run
 * repeats the uninterrupted one exactly. */
#include "nac/pretrain.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/recipe.h"
#include "dist/comm.h"
#include "dist/ranks.h"
#include "encoders/encfile.h"
#include "encoders/encoder.h"
#include "encoders/head.h"
#include "eval/features.h"
#include "eval/hash.h"
#include "eval/knn.h"
#include "nac/loss.h"
#include "nac/objective.h"
#include "nac/step.h"
#include "nn/optim.h"
#include "backend/rng.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"

void nac_pretrain_defaults(nac_pretrain_config *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->dataset, "fashion-mnist");
    strcpy(c->data_path, "/usr/share/datasets/fashion-mnist");
    c->synthetic_n = 2000;
    c->crop_min = 0.08;
    c->flip_p = 0.5;
    c->jitter_p = 0.8;
    c->brightness = c->contrast = c->saturation = 0.4;
    c->hue = 0.1;
    c->gray_p = 0.2;
    strcpy(c->arch, "resnet18");
    c->width_mult = 1.0;
    c->proj_dim = 128;
    strcpy(c->objective, "nac");
    c->p = 0.1;
    c->tau = 0.5;
    c->ema = 0.99;
    c->lambda = 0.1;
    c->queue = 50000;
    strcpy(c->optim, "lars");
    c->lr = 3.0;
    c->momentum = 0.9;
    c->weight_decay = 1e-6;
    c->eta = 0.001;
    c->warmup_epochs = 10;
    c->exclude_bias_bn_wd = true;
    c->exclude_bias_bn_lars = true;
    c->epochs = 1000;
    c->batch = 1000;
    c->workers = 2;
    strcpy(c->backend, "cpu");
    strcpy(c->precision, "fp32");
    c->log_every = 10;
    c->ckpt_every = 10;
    c->ckpt_minutes = 30;
    c->stats_every = 1;
    c->stats_subset = 1000;
    c->knn_every = 1;
    c->mq_detach = true;
    c->shuffle_bn = true;
    c->knn_bank = 500;
    c->knn_queries = 100;
    strcpy(c->runs_dir, "runs");
    strcpy(c->name, "pretrain");
}

/* ---- the trainer's state ---- */
typedef struct trainer {
    const nac_pretrain_config *cfg;
    const nac_pretrain_hooks *hooks;
    const char *dir;
    const char *config_json;
    nac_backend_t *be;
    nac_dataset_t train, stats;   /* stats: the fixed evaluation subset */
    nac_dataset_t knn_bank, knn_q; /* kNN monitor: training images, held-out queries */
    nac_loader_t *loader;
    nac_loader_config lcfg;
    int c, h, w, k;               /* image shape; k images a step on this rank */
    int kg;                       /* K images a step over all ranks (k N) */
    nac_comm_t *comm;             /* NULL: one process */
    int rank, nranks;
    nac_step_dist *dist;          /* the data-parallel step's buffers (nranks > 1) */
    float mean[3], std[3];        /* input normalisation */
    nac_encoder_t *enc, *enc_m;   /* enc_m: momentum copy (NAC-MQ, MoCo-v2) */
    nac_head_t *g, *r, *g_m, *r_m;
    nac_loss_t *loss;
    nac_params_t all;             /* a view over every trained parameter (not owning) */
    nac_params_t all_m;           /* the momentum copies, in the same order */
    nac_optim_t opt;
    nac_schedule_t sched;
    nac_tensor_t *x, *dh, *dh_r;  /* (2K, C, H, W), (2K, F), (2K, F) */
    float *stats_x;               /* (2K, C, H, W) host staging for the statistics */
    int64_t step, steps_per_epoch, total_steps;
    int epoch;
    bool warm;                    /* a step has run in this call */
    double loss_sum;              /* the losses since the last metrics line */
    int loss_n;
    nac_pretrain_result *res;
} trainer;

static int min_class_count(const nac_dataset_t *ds) {
    int counts[NAC_DATASET_MAX_CLASSES] = {0}, m = ds->n;
    for (int i = 0; i < ds->n; i++) counts[ds->labels[i]]++;
    for (int k = 0; k < ds->nclasses; k++)
        if (counts[k] < m) m = counts[k];
    return m > 0 ? m : 1;
}

/* The kNN monitor's data (solo-learn's online kNN): a fixed per-class subset of the
 * training images as the memory bank, and held-out queries: a per-class subset of the test
 * split, or for the synthetic dataset fresh images from its generator (another key). */
static nac_status load_knn_data(trainer *t) {
    const nac_pretrain_config *c = t->cfg;
    nac_dataset_t held;
    if (!strcmp(c->dataset, "synthetic"))
        NAC_TRY(nac_dataset_synthetic(c->knn_queries * 10, 10, 3, 32, 32,
                                      nac_rng_key((uint64_t)c->seed, NAC_STREAM_SYNTH, 1, 0), &held));
    else
        NAC_TRY(nac_dataset_load_named(c->dataset, c->data_path, NAC_SPLIT_TEST, &held));
    /* at most what the smallest class holds */
    int qmin = min_class_count(&held), bmin = min_class_count(&t->train);
    nac_status s = nac_dataset_subset_per_class(&held, c->knn_queries < qmin ? c->knn_queries : qmin,
                                                nac_rng_key((uint64_t)c->seed, NAC_STREAM_SPLIT, 2, 0),
                                                &t->knn_q, NULL);
    nac_dataset_free(&held);
    if (s == NAC_OK)
        s = nac_dataset_subset_per_class(&t->train, c->knn_bank < bmin ? c->knn_bank : bmin,
                                         nac_rng_key((uint64_t)c->seed, NAC_STREAM_SPLIT, 3, 0),
                                         &t->knn_bank, NULL);
    return s;
}

static nac_status load_data(trainer *t) {
    const nac_pretrain_config *c = t->cfg;
    nac_data_recipe r = {.dataset = c->dataset, .path = c->data_path,
                         .synthetic_n = c->synthetic_n, .seed = (uint64_t)c->seed,
                         .train_per_class = c->per_class,
                         .train_key = nac_rng_key((uint64_t)c->seed, NAC_STREAM_SPLIT, 0, 0),
                         .hash_queries = c->hash_queries, .hash_seed = (uint64_t)c->hash_seed};
    NAC_TRY(nac_data_recipe_load(&r, &t->train, NULL, t->mean, t->std));
    if (c->batch > t->train.n)
        return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d is larger than the dataset (%d images)",
                         c->batch, t->train.n);
    /* the statistics subset: the first stats_subset images of a fixed permutation */
    int n = c->stats_subset < t->train.n ? c->stats_subset : t->train.n;
    int64_t *idx = malloc((size_t)t->train.n * sizeof *idx);
    if (!idx) return nac_error(NAC_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < t->train.n; i++) idx[i] = i;
    nac_rng_t rng;
    nac_rng_init(&rng, nac_rng_key((uint64_t)c->seed, NAC_STREAM_SPLIT, 1, 0));
    nac_rng_shuffle(&rng, idx, t->train.n);
    nac_status s = nac_dataset_select(&t->train, idx, n, &t->stats);
    free(idx);
    if (s == NAC_OK && c->knn_every > 0) s = load_knn_data(t);
    return s;
}

static nac_status make_loader(trainer *t) {
    const nac_pretrain_config *c = t->cfg;
    nac_loader_config *l = &t->lcfg;
    nac_loader_defaults(l);
    l->batch = c->batch;
    l->views = 2;
    l->shuffle = true;
    l->drop_last = true;
    l->workers = c->workers;
    l->seed = (uint64_t)c->seed;
    if (t->nranks > 1) {
        if (c->batch % t->nranks)
            return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d does not split into %d equal "
                             "slices, one a rank", c->batch, t->nranks);
        l->part = t->rank;
        l->parts = t->nranks;
    }
    nac_augment_defaults(&l->augment);
    l->augment.scale_min = c->crop_min;
    l->augment.flip_p = c->flip_p;
    l->augment.jitter_p = c->jitter_p;
    l->augment.brightness = c->brightness;
    l->augment.contrast = c->contrast;
    l->augment.saturation = c->saturation;
    l->augment.hue = t->train.c == 3 ? c->hue : 0.0;
    l->augment.gray_p = t->train.c == 3 ? c->gray_p : 0.0;
    l->augment.blur_p = c->blur ? 0.5 : 0.0;
    nac_augment_set_norm(&l->augment, t->train.c, t->mean, t->std);
    NAC_TRY(nac_augment_check(&l->augment, t->train.c, t->train.h, t->train.w));
    NAC_TRY(nac_loader_create(&t->train, l, &t->loader));
    nac_loader_image_shape(t->loader, &t->c, &t->h, &t->w);
    t->kg = c->batch;
    t->k = c->batch / (t->nranks > 1 ? t->nranks : 1);
    t->steps_per_epoch = nac_loader_batches_per_epoch(t->loader);
    t->total_steps = t->steps_per_epoch * c->epochs;
    if (c->max_steps > 0 && c->max_steps < t->total_steps) t->total_steps = c->max_steps;
    return NAC_OK;
}

static nac_status build_model(trainer *t) {
    const nac_pretrain_config *c = t->cfg;
    uint64_t seed = (uint64_t)c->seed;
    nac_encoder_config ec;
    nac_encoder_config_defaults(&ec);
    snprintf(ec.arch, sizeof ec.arch, "%s", c->arch);
    ec.in_channels = t->c;
    ec.in_size = t->h;
    ec.width_mult = (float)c->width_mult;
    ec.seed = seed;
    if (!strcmp(c->arch, "mlp")) { /* images as rows: two hidden layers, no batch norm */
        int wdt = (int)lround(512 * c->width_mult);
        ec.mlp_sizes[0] = t->c * t->h * t->w;
        ec.mlp_sizes[1] = ec.mlp_sizes[2] = wdt > 0 ? wdt : 1;
        ec.mlp_nsizes = 3;
    }
    const nac_objective *obj = nac_objective_find(c->objective);
    if (!obj)
        return nac_error(NAC_ERR_CONFIG, "\"method.objective\" = \"%s\" (want one of %s)",
                         c->objective, NAC_OBJECTIVE_CHOICES);
    NAC_TRY(nac_encoder_create(t->be, &ec, &t->enc));
    int f = nac_encoder_features(t->enc);
    NAC_TRY(nac_head_create(t->be, f, f, c->proj_dim, "g.", seed + 1, &t->g));
    bool uses_r = obj->head_r;
    if (uses_r) NAC_TRY(nac_head_create(t->be, f, f, c->proj_dim, "r.", seed + 2, &t->r));
    NAC_TRY(nac_params_view_add(&t->all, nac_encoder_params(t->enc)));
    NAC_TRY(nac_params_view_add(&t->all, nac_head_params(t->g)));
    if (uses_r) NAC_TRY(nac_params_view_add(&t->all, nac_head_params(t->r)));
    if (obj->momentum) {
        NAC_TRY(nac_encoder_create(t->be, &ec, &t->enc_m));
        NAC_TRY(nac_head_create(t->be, f, f, c->proj_dim, "g.", seed + 1, &t->g_m));
        if (uses_r) NAC_TRY(nac_head_create(t->be, f, f, c->proj_dim, "r.", seed + 2, &t->r_m));
        NAC_TRY(nac_params_view_add(&t->all_m, nac_encoder_params(t->enc_m)));
        NAC_TRY(nac_params_view_add(&t->all_m, nac_head_params(t->g_m)));
        if (uses_r) NAC_TRY(nac_params_view_add(&t->all_m, nac_head_params(t->r_m)));
        /* the momentum copy starts equal to the online network (MoCo) */
        for (int i = 0; i < t->all.n; i++)
            NAC_TRY(nac_tensor_copy(&t->all.items[i]->w, &t->all_m.items[i]->w));
    }
    /* flags for the official exclusion options */
    for (int i = 0; i < t->all.n; i++) {
        nac_param_t *p = t->all.items[i];
        bool bias_bn = p->w.ndim == 1;
        if (bias_bn && c->exclude_bias_bn_wd) p->flags |= NAC_PARAM_NO_WD;
        if (bias_bn && c->exclude_bias_bn_lars) p->flags |= NAC_PARAM_NO_LARS;
    }
    nac_loss_config lc = {0};
    lc.kind = obj->loss;
    lc.k = t->kg;
    lc.d = c->proj_dim;
    lc.m = c->queue;
    lc.p = (float)c->p;
    lc.lambda = (float)c->lambda;
    lc.tau = (float)c->tau;
    if (obj->queue && lc.m < 2 * lc.k)
        return nac_error(NAC_ERR_CONFIG, "\"method.queue\" = %d must be at least two batches (%d)",
                         c->queue, 2 * t->kg);
    NAC_TRY(nac_loss_create(t->be, &lc, &t->loss));
    if (nac_loss_queue(t->loss))
        NAC_TRY(nac_queue_reset_for(nac_loss_queue(t->loss), lc.kind == NAC_LOSS_MOCO,
                                    nac_rng_key(seed, NAC_STREAM_INIT, 999, 0)));
    t->x = nac_tensor_new4(t->be, 2 * t->k, t->c, t->h, t->w);
    t->dh = nac_tensor_new2(t->be, 2 * t->k, f);
    t->dh_r = nac_tensor_new2(t->be, 2 * t->k, f);
    t->stats_x = malloc((size_t)2 * t->k * t->c * t->h * t->w * sizeof(float));
    if (!t->x || !t->dh || !t->dh_r || !t->stats_x) return nac_error(NAC_ERR_NOMEM, "out of memory");
    if (t->nranks > 1 && c->sync_bn) { /* the key encoder too: its keys then see the one-process
                                           statistics, and shuffling them is pointless */
        nac_encoder_set_bn_comm(t->enc, t->comm);
        nac_encoder_set_bn_comm(t->enc_m, t->comm);
    }
    if (t->nranks > 1)
        NAC_TRY(nac_step_dist_create(t->be, t->comm, t->k, c->proj_dim, &t->all,
                                     c->shuffle_bn && !c->sync_bn && obj->momentum, t->x->ndim,
                                     t->x->dim, &t->dist));
    return NAC_OK;
}

static nac_status setup_optim(trainer *t) {
    const nac_pretrain_config *c = t->cfg;
    nac_opt_kind kind;
    if (!nac_optim_kind_from_name(c->optim, &kind))
        return nac_error(NAC_ERR_CONFIG, "\"optim.kind\" = \"%s\" (want one of %s)", c->optim,
                         NAC_OPTIM_CHOICES);
    nac_optim_config oc = nac_optim_defaults(kind);
    if (kind == NAC_OPT_SGD || kind == NAC_OPT_LARS) oc.momentum = (float)c->momentum;
    oc.nesterov = kind == NAC_OPT_SGD && c->nesterov;
    oc.eta = (float)c->eta;
    oc.weight_decay = (float)c->weight_decay;
    NAC_TRY(nac_optim_init(&t->opt, &oc));
    t->sched.kind = NAC_SCHED_COSINE;
    t->sched.base_lr = (float)c->lr;
    t->sched.warmup_steps = t->steps_per_epoch * c->warmup_epochs;
    t->sched.total_steps = t->steps_per_epoch * c->epochs;
    t->sched.final_lr = 0.0f;
    if (t->sched.warmup_steps >= t->sched.total_steps)
        return nac_error(NAC_ERR_CONFIG, "\"optim.warmup_epochs\" = %d must be below \"train.epochs\" = %d",
                         c->warmup_epochs, c->epochs);
    return nac_schedule_validate(&t->sched);
}

/* ---- one step ---- */
static nac_status train_step(trainer *t, const float *batch, float *loss_out) {
    nac_step_model m = {.enc = t->enc, .g = t->g, .r = t->r, .enc_m = t->enc_m, .g_m = t->g_m,
                        .r_m = t->r_m, .all = &t->all, .all_m = &t->all_m, .loss = t->loss,
                        .opt = &t->opt, .ema = (float)t->cfg->ema, .x = t->x, .dh = t->dh,
                        .dh_r = t->dh_r, .dist = t->dist};
    uint64_t key = nac_rng_key((uint64_t)t->cfg->seed, NAC_STREAM_CHANNEL, (uint64_t)t->step, 0);
    nac_status s = nac_step_train(&m, batch, key, nac_schedule_lr(&t->sched, t->step), loss_out);
    if (s == NAC_ERR_NUMERIC)
        return nac_error(NAC_ERR_NUMERIC, "the loss is %g at step %" PRId64 " (epoch %d)",
                         (double)*loss_out, t->step, t->epoch);
    return s;
}

/* ---- code statistics on the fixed subset (eval-mode encoder, no augmentation) ---- */
static nac_status code_stats(trainer *t, nac_code_stats *out) {
    int n = t->stats.n, b = 2 * t->k, d = t->cfg->proj_dim;
    float *codes = malloc((size_t)n * d * sizeof *codes);
    float *o_host = malloc((size_t)b * d * sizeof *o_host);
    int64_t *idx = malloc((size_t)b * sizeof *idx);
    nac_loader_config plain = t->lcfg;
    nac_augment_none(&plain.augment);
    nac_augment_set_norm(&plain.augment, t->c, t->lcfg.augment.mean, t->lcfg.augment.std);
    plain.views = 1;
    nac_status s = codes && o_host && idx ? NAC_OK : nac_error(NAC_ERR_NOMEM, "out of memory");
    for (int start = 0; s == NAC_OK && start < n; start += b) {
        int m = n - start < b ? n - start : b;
        /* pad the last chunk by repeating images, so the planned batch size never changes */
        for (int i = 0; i < b; i++) idx[i] = start + (i < m ? i : i % m);
        const nac_tensor_t *h, *o;
        s = nac_loader_views(&t->stats, &plain, 0, idx, b, t->stats_x);
        if (s == NAC_OK) s = nac_tensor_from_host(t->x, t->stats_x);
        if (s == NAC_OK) s = nac_encoder_forward(t->enc, t->x, false, 1, &h);
        if (s == NAC_OK) s = nac_head_forward(t->g, h, &o);
        if (s == NAC_OK) s = nac_tensor_to_host(o, o_host);
        if (s == NAC_OK) memcpy(codes + (size_t)start * d, o_host, (size_t)m * d * sizeof *codes);
    }
    if (s == NAC_OK) nac_code_stats_compute(codes, n, d, out);
    free(codes);
    free(o_host);
    free(idx);
    return s;
}

/* ---- checkpoints ---- */
static nac_status save_checkpoint(trainer *t, char *path_out, size_t n) {
    snprintf(path_out, n, "%s/checkpoint.safetensors", t->dir);
    if (t->rank != 0) return NAC_OK; /* rank 0 owns the run folder */
    nac_st_writer *w = nac_st_writer_new();
    if (!w) return nac_error(NAC_ERR_NOMEM, "checkpoint: out of memory");
    char buf[64];
    nac_status s = nac_ckpt_add_params(w, &t->all, "", true);
    if (s == NAC_OK && t->enc_m) s = nac_ckpt_add_params(w, &t->all_m, "momentum.", false);
    nac_queue_t *q = t->loss ? nac_loss_queue(t->loss) : NULL;
    if (s == NAC_OK && q) {
        int64_t m = nac_tensor_numel(q->keys);
        float *keys = malloc((size_t)m * sizeof *keys);
        s = keys ? nac_tensor_to_host(q->keys, keys) : nac_error(NAC_ERR_NOMEM, "out of memory");
        if (s == NAC_OK) s = nac_st_writer_add(w, "queue.keys", NAC_DT_F32, 2, q->keys->dim, keys);
        free(keys);
        snprintf(buf, sizeof buf, "%" PRId64, q->ptr);
        if (s == NAC_OK) s = nac_st_writer_meta(w, "queue_ptr", buf);
    }
    snprintf(buf, sizeof buf, "%" PRId64, t->step);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "step", buf);
    nac_optim_counters_format(&t->opt, buf, sizeof buf);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "optim_t", buf);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "format", "nacvae-pretrain-1");
    if (s == NAC_OK) s = nac_st_writer_meta(w, "config", t->config_json);
    snprintf(buf, sizeof buf, "%d", t->nranks);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "ranks", buf);
    if (s == NAC_OK) s = nac_st_writer_save(w, path_out);
    nac_st_writer_free(w);
    return s;
}

/* The encoder alone, torchvision names, for `nac vae`, probes and PyTorch. */
static nac_status save_encoder(trainer *t) {
    if (t->rank != 0) return NAC_OK;
    nac_encfile_meta m = {.width_mult = t->cfg->width_mult, .in_channels = t->c,
                          .in_size = t->h, .config = t->config_json};
    snprintf(m.arch, sizeof m.arch, "%s", t->cfg->arch);
    snprintf(m.objective, sizeof m.objective, "%s", t->cfg->objective);
    memcpy(m.mean, t->mean, sizeof m.mean);
    memcpy(m.std, t->std, sizeof m.std);
    nac_head_t *heads[2] = {t->g, t->r};
    char path[700];
    snprintf(path, sizeof path, "%s/encoder.safetensors", t->dir);
    return nac_encfile_save(path, t->enc, heads, 2, &m);
}

static nac_status load_checkpoint(trainer *t, const char *path) {
    nac_st_file *f;
    NAC_TRY(nac_st_load(path, &f));
    nac_status s = NAC_OK;
    const char *fmt = nac_st_meta(f, "format"), *step = nac_st_meta(f, "step");
    const char *ot = nac_st_meta(f, "optim_t");
    if (!fmt || strcmp(fmt, "nacvae-pretrain-1") || !step || !ot)
        s = nac_error(NAC_ERR_DATA, "%s: not a pretraining checkpoint of nacvae", path);
    /* per-rank batch-norm statistics make the run depend on N: resume with the same N */
    const char *rk = nac_st_meta(f, "ranks");
    int ranks = rk ? atoi(rk) : 1;
    if (s == NAC_OK && ranks != t->nranks)
        s = nac_error(NAC_ERR_CONFIG, "%s was written by %d rank%s; this run has %d (resume it with "
                      "%d rank%s: mpirun -np %d, or dist.emulate_ranks = %d)", path, ranks,
                      ranks == 1 ? "" : "s", t->nranks, ranks, ranks == 1 ? "" : "s", ranks, ranks);
    if (s == NAC_OK) s = nac_ckpt_load_params(f, &t->all, "", false, true);
    if (s == NAC_OK && t->enc_m) s = nac_ckpt_load_params(f, &t->all_m, "momentum.", false, false);
    nac_queue_t *q = nac_loss_queue(t->loss);
    if (s == NAC_OK && q) {
        const char *ptr = nac_st_meta(f, "queue_ptr");
        int64_t m = nac_tensor_numel(q->keys);
        float *keys = malloc((size_t)m * sizeof *keys);
        s = keys && ptr ? nac_st_read_f32(f, "queue.keys", keys, m)
                        : nac_error(NAC_ERR_DATA, "%s: the queue is missing", path);
        if (s == NAC_OK) s = nac_tensor_from_host(q->keys, keys);
        if (s == NAC_OK) q->ptr = strtoll(ptr, NULL, 10);
        free(keys);
    }
    if (s == NAC_OK) {
        t->step = strtoll(step, NULL, 10);
        s = nac_optim_counters_parse(&t->opt, ot);
        t->epoch = (int)(t->step / t->steps_per_epoch);
    }
    nac_st_free(f);
    return s;
}

static void trainer_free(trainer *t) {
    nac_loader_free(t->loader);
    nac_loss_free(t->loss);
    nac_head_free(t->g);
    nac_head_free(t->r);
    nac_head_free(t->g_m);
    nac_head_free(t->r_m);
    nac_encoder_free(t->enc);
    nac_encoder_free(t->enc_m);
    free(t->all.items);
    free(t->all_m.items);
    nac_tensor_free(t->x);
    nac_tensor_free(t->dh);
    nac_tensor_free(t->dh_r);
    nac_step_dist_free(t->dist);
    free(t->stats_x);
    nac_dataset_free(&t->train);
    nac_dataset_free(&t->stats);
    nac_dataset_free(&t->knn_bank);
    nac_dataset_free(&t->knn_q);
    nac_backend_free(t->be);
}


static nac_status log_stats(trainer *t) {
    if (t->rank != 0) return NAC_OK; /* the weights are the same on every rank */
    nac_code_stats cs;
    NAC_TRY(code_stats(t, &cs));
    return nac_hooks_log(t->hooks,
                    "{\"kind\":\"codes\",\"epochs_done\":%d,\"step\":%" PRId64
                    ",\"distinct_codes\":%d,\"subset\":%d,\"mean_hamming\":%.4f,\"balanced_bits\":%.4f}",
                    (int)(t->step / t->steps_per_epoch), t->step, cs.distinct, t->stats.n,
                    cs.mean_hamming, cs.balanced);
}

/* kNN monitor: k 200, T 0.1 on the encoder's features (evaluation mode, no augmentation),
 * in batches of the training batch so the encoder's buffers are not re-planned. */
static nac_status log_knn(trainer *t) {
    if (t->rank != 0) return NAC_OK;
    float *fb = NULL, *fq = NULL;
    int64_t dim = 0;
    double top1 = 0, top5 = 0;
    nac_status s = nac_features_compute(t->enc, &t->knn_bank, t->mean, t->std, 2 * t->k, NULL, NULL,
                                        &fb, &dim);
    if (s == NAC_OK)
        s = nac_features_compute(t->enc, &t->knn_q, t->mean, t->std, 2 * t->k, NULL, NULL, &fq, &dim);
    if (s == NAC_OK)
        s = nac_knn_accuracy(fb, t->knn_bank.labels, t->knn_bank.n, fq, t->knn_q.labels, t->knn_q.n,
                             dim, t->knn_bank.nclasses, 200, 0.1f, &top1, &top5);
    free(fb);
    free(fq);
    NAC_TRY(s);
    return nac_hooks_log(t->hooks,
                         "{\"kind\":\"knn\",\"epochs_done\":%d,\"step\":%" PRId64
                         ",\"k\":200,\"temperature\":0.1,\"bank\":%d,\"queries\":%d,\"top1\":%.4f,"
                         "\"top5\":%.4f}",
                         (int)(t->step / t->steps_per_epoch), t->step, t->knn_bank.n, t->knn_q.n, top1,
                         top5);
}

/* ---- the run's side of the loop driver (nn/loop.h) ---- */

static nac_status loop_start_epoch(void *self, int epoch, int first) {
    trainer *t = self;
    t->epoch = epoch;
    return nac_loader_start_epoch(t->loader, epoch, first);
}

static nac_status loop_step(void *self, int epoch, char *text, size_t n) {
    trainer *t = self;
    float *batch, loss = NAN;
    int *labels, k;
    double t0 = nac_now();
    NAC_TRY(nac_loader_next(t->loader, &batch, &labels, &k));
    if (k != t->k) return nac_error(NAC_ERR_INVALID, "internal: the loader gave %d images", k);
    NAC_TRY(train_step(t, batch, &loss));
    if (t->warm) { /* the first step of a call plans the primitives: not timed */
        t->res->step_seconds += nac_now() - t0;
        t->res->timed_steps++;
        t->res->images_per_s = 2.0 * t->kg * (double)t->res->timed_steps / t->res->step_seconds;
    }
    t->warm = true;
    t->loss_sum += loss;
    t->loss_n++;
    t->res->last_loss = loss;
    t->res->steps = t->step + 1;
    snprintf(text, n, "epoch %d loss %.4f", epoch + 1, (double)loss);
    return NAC_OK;
}

static nac_status loop_log(void *self, int epoch, int64_t step) {
    trainer *t = self;
    nac_loader_stats ls; /* how long the steps since the last line waited for their batch */
    nac_loader_take_stats(t->loader, &ls);
    nac_status s = nac_hooks_log(t->hooks, "{\"kind\":\"train\",\"epoch\":%d,\"step\":%" PRId64
                                 ",\"loss\":%.6f,\"lr\":%.6g,\"loader_wait_ms\":%.3f}",
                                 epoch, step, t->loss_sum / t->loss_n,
                                 (double)nac_schedule_lr(&t->sched, step - 1),
                                 ls.batches ? 1e3 * ls.wait_s / (double)ls.batches : 0.0);
    t->loss_sum = 0;
    t->loss_n = 0;
    return s;
}

static nac_status loop_epoch_end(void *self, bool complete, int done) {
    trainer *t = self;
    t->res->epochs_done = done;
    if (complete && done % t->cfg->stats_every == 0) NAC_TRY(log_stats(t));
    if (complete && t->cfg->knn_every > 0 && done % t->cfg->knn_every == 0) NAC_TRY(log_knn(t));
    return NAC_OK;
}

static nac_status loop_save(void *self, char *path, size_t n) {
    return save_checkpoint(self, path, n);
}

static const nac_loop_i pretrain_loop_i = {
    .start_epoch = loop_start_epoch,
    .step = loop_step,
    .log = loop_log,
    .epoch_end = loop_epoch_end,
    .save = loop_save,
};

static nac_status run_loop(trainer *t, nac_pretrain_result *res) {
    t->res = res;
    if (t->step == 0) NAC_TRY(log_stats(t));
    if (t->step == 0 && t->cfg->knn_every > 0) NAC_TRY(log_knn(t));
    nac_loop l = {.iface = &pretrain_loop_i, .self = t, .hooks = t->hooks, .step = &t->step,
                  .total = t->total_steps, .steps_per_epoch = t->steps_per_epoch,
                  .log_every = t->cfg->log_every, .ckpt_every = t->cfg->ckpt_every,
                  .ckpt_seconds = 60.0 * t->cfg->ckpt_minutes,
                  .resume_dir = t->dir, .comm = t->comm, .ckpt_path = res->last_checkpoint,
                  .ckpt_path_n = sizeof res->last_checkpoint};
    NAC_TRY(nac_loop_run(&l));
    return save_encoder(t);
}

nac_status nac_pretrain_run(const nac_pretrain_config *cfg, const char *dir,
                            const char *config_json, bool resume,
                            const nac_pretrain_hooks *hooks, nac_pretrain_result *res) {
    if (cfg->emulate_ranks > 1)
        return nac_pretrain_run_emulated(cfg, dir, config_json, resume, hooks, cfg->emulate_ranks, res);
    return nac_pretrain_run_comm(cfg, dir, config_json, resume, hooks, NULL, res);
}

/* The trainer's backend: under mpirun (cfg->mpi_ranks > 1) on the rank's machine-local
 * device; with cfg->nccl, an NCCL communicator on it (*nccl, freed after the trainer) takes
 * over t->comm: gradients on the device, host collectives through the original. */
static nac_status make_backend(trainer *t, nac_comm_t **nccl) {
    const nac_pretrain_config *c = t->cfg;
    nac_backend_options bo = {.threads = c->threads,
                              .precision = !strcmp(c->precision, "bf16") ? NAC_PRECISION_BF16
                                                                         : NAC_PRECISION_FP32,
                              .pick_device = c->mpi_ranks > 1, .device = c->local_rank};
    NAC_TRY(nac_backend_create(c->backend, &bo, &t->be));
    if (!c->nccl || t->nranks < 2) return NAC_OK;
    NAC_TRY(nac_comm_nccl_create(t->comm, c->local_rank, nac_tensor_device_ptr, nccl));
    t->comm = *nccl;
    return NAC_OK;
}

nac_status nac_pretrain_run_comm(const nac_pretrain_config *cfg, const char *dir,
                                 const char *config_json, bool resume,
                                 const nac_pretrain_hooks *hooks, nac_comm_t *comm,
                                 nac_pretrain_result *res) {
    trainer t;
    memset(&t, 0, sizeof t);
    memset(res, 0, sizeof *res);
    t.comm = comm;
    t.rank = nac_comm_rank(comm);
    t.nranks = nac_comm_size(comm);
    t.cfg = cfg;
    t.hooks = hooks;
    t.dir = dir;
    t.config_json = config_json;
    nac_comm_t *nccl = NULL;
    nac_status s = make_backend(&t, &nccl);
    if (s == NAC_OK) s = load_data(&t);
    if (s == NAC_OK) s = make_loader(&t);
    if (s == NAC_OK) s = build_model(&t);
    if (s == NAC_OK) s = setup_optim(&t);
    if (s == NAC_OK && resume) {
        char path[700];
        snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
        s = load_checkpoint(&t, path);
    }
    if (s == NAC_OK) s = run_loop(&t, res);
    trainer_free(&t);
    nac_comm_free(nccl);
    return s;
}


nac_status nac_pretrain_bench(const nac_pretrain_config *cfg, int channels, int size,
                              int warmup, int steps, nac_bench_result *out) {
    return nac_pretrain_bench_comm(cfg, NULL, channels, size, warmup, steps, out);
}

nac_status nac_pretrain_bench_comm(const nac_pretrain_config *cfg, nac_comm_t *comm, int channels,
                                   int size, int warmup, int steps, nac_bench_result *out) {
    trainer t;
    memset(&t, 0, sizeof t);
    memset(out, 0, sizeof *out);
    t.cfg = cfg;
    t.c = channels;
    t.h = t.w = size;
    t.comm = comm;
    t.rank = nac_comm_rank(comm);
    t.nranks = nac_comm_size(comm);
    if (cfg->batch % t.nranks)
        return nac_error(NAC_ERR_CONFIG, "batch %d does not split into %d ranks: give a multiple "
                         "of %d", cfg->batch, t.nranks, t.nranks);
    t.kg = cfg->batch;
    t.k = t.kg / t.nranks;
    t.steps_per_epoch = 1000;
    t.total_steps = 1000;
    float *batch = NULL;
    nac_comm_t *nccl = NULL;
    nac_status s = make_backend(&t, &nccl);
    if (s == NAC_OK) s = build_model(&t);
    if (s == NAC_OK) s = setup_optim(&t);
    int64_t n = (int64_t)2 * t.k * channels * size * size;
    if (s == NAC_OK && !(batch = malloc((size_t)n * sizeof *batch)))
        s = nac_error(NAC_ERR_NOMEM, "out of memory");
    if (s == NAC_OK) {
        nac_rng_t r;
        nac_rng_init(&r, nac_rng_key((uint64_t)cfg->seed, NAC_STREAM_USER, (uint64_t)t.rank, 0));
        for (int64_t i = 0; i < n; i++) batch[i] = (float)nac_rng_normal(&r);
    }
    float loss;
    double t0 = 0, f0 = 0;
    for (int i = 0; s == NAC_OK && i < warmup + steps; i++) {
        if (i == warmup) { /* every rank starts the clock together */
            s = nac_comm_barrier(comm);
            t0 = nac_now();
            f0 = nac_backend_flops(t.be);
        }
        if (s == NAC_OK) s = train_step(&t, batch, &loss);
        t.step++;
    }
    if (s == NAC_OK) s = nac_comm_barrier(comm); /* ... and stops it when the last is done */
    if (s == NAC_OK) {
        double dt = nac_now() - t0;
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        out->step_s = dt / steps;
        out->images_per_s = 2.0 * t.kg * steps / dt;
        out->images_per_s_rank = 2.0 * t.k * steps / dt;
        out->ranks = t.nranks;
        out->peak_rss_mb = (double)ru.ru_maxrss / 1024.0;
        out->backend_peak_mb = (double)nac_backend_memory_stats(t.be).peak / (1024.0 * 1024.0);
        out->flops_per_step = (nac_backend_flops(t.be) - f0) / steps;
        out->params = nac_params_numel(&t.all, true);
        snprintf(out->precision, sizeof out->precision, "%s",
                 t.be->precision == NAC_PRECISION_BF16 ? "bf16" : "fp32");
    }
    free(batch);
    trainer_free(&t);
    nac_comm_free(nccl);
    return s;
}

/* ---- N ranks in one process: a thread a rank on the emulated communicator ---- */
typedef struct emu_job {
    const nac_pretrain_config *cfg;
    const char *dir, *config_json;
    bool resume;
    const nac_pretrain_hooks *hooks;
    nac_pretrain_result *res; /* rank 0's */
} emu_job;

static nac_status emu_rank_main(void *arg, nac_comm_t *comm) {
    const emu_job *j = arg;
    nac_pretrain_result mine;
    bool zero = nac_comm_rank(comm) == 0;
    return nac_pretrain_run_comm(j->cfg, j->dir, j->config_json, j->resume, zero ? j->hooks : NULL,
                                 comm, zero ? j->res : &mine);
}

nac_status nac_pretrain_run_emulated(const nac_pretrain_config *cfg, const char *dir,
                                     const char *config_json, bool resume,
                                     const nac_pretrain_hooks *hooks, int nranks,
                                     nac_pretrain_result *res) {
    memset(res, 0, sizeof *res);
    emu_job j = {.cfg = cfg, .dir = dir, .config_json = config_json, .resume = resume,
                 .hooks = hooks, .res = res};
    return nac_comm_run_emulated(nranks, emu_rank_main, &j);
}
