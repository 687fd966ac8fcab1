/* The VAE stage's loop and evaluation (see train.h). One step: upload the normalised
 * batch (encoder input) and its raw pixels (likelihood target), body forward (training
 * mode unless frozen), nac_vae_forward/backward, body backward, Adam over the groups
 * body / head / decoder. All noise derives from (seed, stream, step). */
#include "vae/train.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/recipe.h"
#include "data/png.h"
#include "encoders/encfile.h"
#include "encoders/encoder.h"
#include "nn/optim.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "backend/rng.h"
#include "dist/comm.h"
#include "dist/ranks.h"
#include "eval/features.h"
#include "vae/vae.h"

void nac_vae_train_defaults(nac_vae_train_config *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->dataset, "fashion-mnist");
    strcpy(c->data_path, "/usr/share/datasets/fashion-mnist");
    c->synthetic_n = 2000;
    strcpy(c->arch, "resnet18");
    c->width_mult = 1.0;
    strcpy(c->init_name, "random");
    c->latent = 128;
    c->dec_width = 64;
    c->dec_blocks = 1;
    strcpy(c->likelihood, "logistic");
    c->lr = 1e-3;
    c->head_lr_mult = 10.0;
    c->body_lr_mult = 1.0;
    c->recal_bn = true;
    strcpy(c->head_init, "default");
    c->diag_images = 500;
    c->epochs = 100;
    c->batch = 128;
    c->workers = 2;
    strcpy(c->backend, "cpu");
    strcpy(c->precision, "fp32");
    c->is_k = 1000;
    c->is_chunk = 100;
    c->eval_batch = 20; /* eval_batch x is_chunk latents are decoded at once */
    c->log_every = 20;
    c->ckpt_every = 5;
    c->ckpt_minutes = 30;
    strcpy(c->runs_dir, "runs");
    strcpy(c->name, "vae");
}

typedef struct vtrainer {
    const nac_vae_train_config *cfg;
    const nac_loop_hooks *hooks;
    const char *dir, *config_json;
    nac_backend_t *be;
    nac_dataset_t train, test;
    float mean[3], std[3];
    nac_loader_t *loader;
    nac_loader_config lcfg;
    nac_encoder_t *enc;
    nac_vae_t *vae;
    nac_params_t all;            /* view: body (group 0), head (1), decoder (2) */
    nac_comm_t *comm;            /* NULL: one process */
    int rank, nranks;
    nac_tensor_t **grads;        /* every trained parameter's gradient, body first */
    int ngrads, nbody;           /* of which the body's (skipped while it is frozen) */
    nac_optim_t opt;
    nac_tensor_t *xin, *xraw, *dh;
    float *raw_host;
    int c, h, w, b;              /* b: images a step on this rank (train.batch / ranks) */
    int64_t step, spe, total;
    bool body_frozen;
    double sum, sum_kl, sum_rec; /* since the last metrics line */
    int nsum;
    nac_vae_train_result *res;
} vtrainer;

static nac_status load_data(vtrainer *t) {
    const nac_vae_train_config *c = t->cfg;
    uint64_t seed = (uint64_t)c->seed;
    nac_data_recipe r = {.dataset = c->dataset, .path = c->data_path,
                         .synthetic_n = c->synthetic_n, .seed = seed, .want_test = true,
                         .train_per_class = c->per_class,
                         .train_key = nac_rng_key(seed, NAC_STREAM_SPLIT, 0, 0),
                         .test_limit = c->test_limit,
                         .test_key = nac_rng_key(seed, NAC_STREAM_SPLIT, 2, 0)};
    NAC_TRY(nac_data_recipe_load(&r, &t->train, &t->test, t->mean, t->std));
    if (c->batch > t->train.n)
        return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d is larger than the dataset (%d images)",
                         c->batch, t->train.n);
    return NAC_OK;
}

/* Open the encoder file (one strict validation), check it is the encoder the config and
 * the data ask for, take its normalisation and load its weights. */
static nac_status load_encoder(vtrainer *t, const nac_encoder_config *ec) {
    nac_encfile_t *f;
    NAC_TRY(nac_encfile_open(t->cfg->encoder, &f));
    nac_status s = nac_encfile_expect(f, ec);
    if (s == NAC_OK) {
        const nac_encfile_meta *m = nac_encfile_get_meta(f);
        memcpy(t->mean, m->mean, sizeof t->mean); /* normalise as the encoder was trained */
        memcpy(t->std, m->std, sizeof t->std);
        s = nac_encfile_load_encoder(f, t->enc);
    }
    nac_encfile_close(f);
    return s;
}

static nac_status build(vtrainer *t) {
    const nac_vae_train_config *c = t->cfg;
    nac_encoder_config ec;
    nac_encoder_config_defaults(&ec);
    snprintf(ec.arch, sizeof ec.arch, "%s", c->arch);
    ec.in_channels = t->train.c;
    ec.in_size = t->train.h;
    ec.width_mult = (float)c->width_mult;
    ec.seed = (uint64_t)c->seed;
    NAC_TRY(nac_encoder_create(t->be, &ec, &t->enc));
    if (c->encoder[0]) NAC_TRY(load_encoder(t, &ec));
    nac_vae_config vc = {0};
    vc.features = nac_encoder_features(t->enc);
    vc.latent = c->latent;
    vc.channels = t->train.c;
    vc.size = t->train.h;
    vc.width = c->dec_width;
    vc.blocks = c->dec_blocks;
    vc.likelihood = !strcmp(c->likelihood, "logistic")   ? NAC_VAE_LIK_LOGISTIC
                    : !strcmp(c->likelihood, "gaussian") ? NAC_VAE_LIK_GAUSSIAN
                                                         : NAC_VAE_LIK_BERNOULLI;
    vc.sigma = vc.likelihood == NAC_VAE_LIK_GAUSSIAN ? (float)c->sigma : 0.0f;
    vc.head_zero = !strcmp(c->head_init, "zero");
    NAC_TRY(nac_vae_create(t->be, &vc, (uint64_t)c->seed + 17, &t->vae));
    nac_params_t *body = nac_encoder_params(t->enc);
    for (int i = 0; i < body->n; i++) body->items[i]->group = 0;
    NAC_TRY(nac_params_view_add(&t->all, body));
    NAC_TRY(nac_params_view_add(&t->all, &t->vae->params));
    nac_optim_config oc = nac_optim_defaults(NAC_OPT_ADAM);
    oc.weight_decay = (float)c->weight_decay;
    NAC_TRY(nac_optim_init(&t->opt, &oc));
    NAC_TRY(nac_optim_set_group(&t->opt, NAC_VAE_GROUP_HEAD, (float)c->head_lr_mult,
                                (float)c->weight_decay));
    NAC_TRY(nac_optim_set_group(&t->opt, NAC_VAE_GROUP_DECODER, 1.0f, (float)c->weight_decay));
    if (c->body_lr_mult != 1.0)
        NAC_TRY(nac_optim_set_group(&t->opt, 0, (float)c->body_lr_mult, (float)c->weight_decay));
    nac_loader_defaults(&t->lcfg);
    t->lcfg.batch = c->batch;
    t->lcfg.views = 1;
    t->lcfg.shuffle = true;
    t->lcfg.drop_last = true;
    t->lcfg.workers = c->workers;
    t->lcfg.seed = (uint64_t)c->seed;
    if (t->nranks > 1) {
        if (c->batch % t->nranks)
            return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d does not split into %d equal "
                             "slices, one a rank", c->batch, t->nranks);
        t->lcfg.part = t->rank;
        t->lcfg.parts = t->nranks;
        if (c->sync_bn) { /* the one-process computation: statistics of the global batch */
            nac_encoder_set_bn_comm(t->enc, t->comm);
            nac_vae_set_bn_comm(t->vae, t->comm);
        }
    }
    nac_augment_none(&t->lcfg.augment);
    nac_augment_set_norm(&t->lcfg.augment, t->train.c, t->mean, t->std);
    NAC_TRY(nac_loader_create(&t->train, &t->lcfg, &t->loader));
    t->c = t->train.c;
    t->h = t->train.h;
    t->w = t->train.w;
    t->b = c->batch / t->nranks;
    t->vae->eps_row0 = (int64_t)t->rank * t->b; /* this rank's rows of the global batch */
    t->spe = nac_loader_batches_per_epoch(t->loader);
    t->total = t->spe * c->epochs;
    if (c->max_steps > 0 && c->max_steps < t->total) t->total = c->max_steps;
    t->xin = nac_tensor_new4(t->be, t->b, t->c, t->h, t->w);
    t->xraw = nac_tensor_new4(t->be, t->b, t->c, t->h, t->w);
    t->dh = nac_tensor_new2(t->be, t->b, vc.features);
    t->raw_host = malloc((size_t)t->b * t->c * t->h * t->w * sizeof(float));
    if (!t->xin || !t->xraw || !t->dh || !t->raw_host)
        return nac_error(NAC_ERR_NOMEM, "out of memory");
    if (t->nranks == 1) return NAC_OK;
    /* the gradients to average each step, the body's first */
    t->grads = calloc((size_t)t->all.n + 1, sizeof *t->grads);
    if (!t->grads) return nac_error(NAC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < t->all.n; i++) {
        nac_param_t *p = t->all.items[i];
        if (p->flags & NAC_PARAM_BUFFER) continue;
        t->grads[t->ngrads++] = &p->g;
        if (p->group == 0) t->nbody = t->ngrads;
    }
    return NAC_OK;
}

/* Every rank's gradient is that of its slice's mean loss; the global batch's mean loss has
 * their mean as its gradient: sum in rank order, then divide by the ranks. */
static nac_status average_grads(vtrainer *t, bool frozen) {
    int skip = frozen ? t->nbody : 0; /* a frozen body has no gradient this step */
    NAC_TRY(nac_comm_allreduce_tensors(t->comm, t->grads + skip, t->ngrads - skip));
    for (int i = skip; i < t->ngrads; i++)
        NAC_TRY(nac_act_forward(NAC_ACT_LINEAR, t->grads[i], t->grads[i], 1.0f / (float)t->nranks, 0.0f));
    return NAC_OK;
}

/* The global batch's mean losses on every rank (equal slices: the mean of the ranks'
 * means), so that every rank logs, and stops on a non-finite loss, alike. */
static nac_status average_stats(vtrainer *t, nac_vae_stats *st) {
    float v[4] = {(float)st->loss, (float)st->nelbo, (float)st->rec, (float)st->kl};
    NAC_TRY(nac_comm_allreduce_sum(t->comm, v, 4));
    double n = (double)t->nranks;
    *st = (nac_vae_stats){.loss = v[0] / n, .nelbo = v[1] / n, .rec = v[2] / n, .kl = v[3] / n};
    return NAC_OK;
}

/* Raw pixels of dataset images idx[0..n) as the likelihood's targets. */
static void raw_pixels(const nac_dataset_t *ds, const int64_t *idx, int n, bool binarise,
                       float *out) {
    size_t per = (size_t)ds->c * ds->h * ds->w;
    for (int i = 0; i < n; i++) {
        const uint8_t *p = nac_dataset_image(ds, idx[i]);
        for (size_t j = 0; j < per; j++)
            out[(size_t)i * per + j] = binarise ? (p[j] >= 128 ? 1.0f : 0.0f) : (float)p[j] / 255.0f;
    }
}

static void set_body_frozen(vtrainer *t, bool frozen) {
    nac_params_t *body = nac_encoder_params(t->enc);
    for (int i = 0; i < body->n; i++) {
        if (frozen) body->items[i]->flags |= NAC_PARAM_FROZEN;
        else body->items[i]->flags &= ~(unsigned)NAC_PARAM_FROZEN;
    }
    t->body_frozen = frozen;
}

static bool frozen_at(const vtrainer *t, int64_t step) {
    return t->cfg->freeze_body || step < (int64_t)t->cfg->freeze_epochs * t->spe;
}

static nac_status train_step(vtrainer *t, const float *batch, const int64_t *idx,
                             nac_vae_stats *st) {
    const nac_vae_train_config *c = t->cfg;
    bool frozen = frozen_at(t, t->step);
    if (frozen != t->body_frozen) set_body_frozen(t, frozen);
    raw_pixels(&t->train, idx, t->b, t->vae->cfg.likelihood == NAC_VAE_LIK_BERNOULLI, t->raw_host);
    NAC_TRY(nac_tensor_from_host(t->xin, batch));
    NAC_TRY(nac_tensor_from_host(t->xraw, t->raw_host));
    const nac_tensor_t *h;
    /* a frozen body is a fixed feature extractor: evaluation-mode batch norm */
    NAC_TRY(nac_encoder_forward(t->enc, t->xin, !frozen, 1, &h));
    float beta = 1.0f;
    if (c->kl_warmup_epochs > 0) {
        double b = (double)(t->step + 1) / ((double)c->kl_warmup_epochs * t->spe);
        beta = b < 1.0 ? (float)b : 1.0f;
    }
    uint64_t key = nac_rng_key((uint64_t)c->seed, NAC_STREAM_LATENT, (uint64_t)t->step, 0);
    NAC_TRY(nac_vae_forward(t->vae, h, t->xraw, key, beta, st));
    if (t->nranks > 1) NAC_TRY(average_stats(t, st));
    if (!isfinite(st->loss))
        return nac_error(NAC_ERR_NUMERIC, "the loss is %g at step %" PRId64, st->loss, t->step);
    NAC_TRY(nac_vae_backward(t->vae, frozen ? NULL : t->dh));
    if (!frozen) NAC_TRY(nac_encoder_backward(t->enc, t->dh, NULL));
    if (t->nranks > 1) NAC_TRY(average_grads(t, frozen));
    return nac_optim_step(&t->opt, &t->all, (float)c->lr);
}

static nac_status save_ckpt(vtrainer *t, char *path, size_t n) {
    snprintf(path, n, "%s/vae.safetensors", t->dir);
    if (t->rank != 0) return NAC_OK; /* rank 0 owns the run folder */
    nac_st_writer *w = nac_st_writer_new();
    if (!w) return nac_error(NAC_ERR_NOMEM, "out of memory");
    char buf[128];
    nac_status s = nac_ckpt_add_params(w, &t->all, "", true);
    snprintf(buf, sizeof buf, "%" PRId64, t->step);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "step", buf);
    nac_optim_counters_format(&t->opt, buf, sizeof buf);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "optim_t", buf);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "format", "nacvae-vae-1");
    if (s == NAC_OK) s = nac_st_writer_meta(w, "init", t->cfg->init_name);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "config", t->config_json);
    snprintf(buf, sizeof buf, "%d", t->nranks);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "ranks", buf);
    if (s == NAC_OK) s = nac_st_writer_save(w, path);
    nac_st_writer_free(w);
    return s;
}

static nac_status load_ckpt(vtrainer *t, const char *path) {
    nac_st_file *f;
    NAC_TRY(nac_st_load(path, &f));
    const char *fmt = nac_st_meta(f, "format"), *step = nac_st_meta(f, "step");
    const char *ot = nac_st_meta(f, "optim_t");
    nac_status s = NAC_OK;
    if (!fmt || strcmp(fmt, "nacvae-vae-1") || !step || !ot)
        s = nac_error(NAC_ERR_DATA, "%s: not a VAE checkpoint of nacvae", path);
    if (s == NAC_OK) s = nac_ckpt_load_params(f, &t->all, "", false, true);
    if (s == NAC_OK) {
        s = nac_optim_counters_parse(&t->opt, ot);
        t->step = strtoll(step, NULL, 10);
    }
    /* per-rank batch-norm statistics make training depend on N: an unfinished run resumes
     * with as many ranks; a finished one is only evaluated, with any number */
    if (s == NAC_OK && t->step < t->total) s = nac_dist_check_resume(path, nac_st_meta(f, "ranks"), t->nranks);
    nac_st_free(f);
    return s;
}

/* The encoder input and likelihood target of test images idx[0..m) into xin, xraw. */
static nac_status upload_test(vtrainer *t, const nac_loader_config *lc, const int64_t *idx, int m,
                              float *norm, float *raw, nac_tensor_t *xin, nac_tensor_t *xraw) {
    NAC_TRY(nac_loader_views(&t->test, lc, 0, idx, m, norm));
    raw_pixels(&t->test, idx, m, t->vae->cfg.likelihood == NAC_VAE_LIK_BERNOULLI, raw);
    NAC_TRY(nac_tensor_from_host(xin, norm));
    return xraw ? nac_tensor_from_host(xraw, raw) : NAC_OK;
}

/* Per-image IS results of test images [first, first + count) into rows first.. of mu, lv
 * (n, L), lp, el (n): batches of eval_batch within the slice, each image's noise keyed by
 * its index in the test split. */
static nac_status is_slice(vtrainer *t, const nac_loader_config *lc, int64_t first, int64_t count,
                           float *mu, float *lv, double *lp, double *el) {
    const nac_vae_train_config *c = t->cfg;
    int eb = c->eval_batch, l = c->latent;
    int64_t dims = (int64_t)t->c * t->h * t->w;
    nac_tensor_t *xin = NULL, *xraw = NULL;
    float *norm = malloc((size_t)eb * dims * sizeof *norm);
    float *raw = malloc((size_t)eb * dims * sizeof *raw);
    int64_t *idx = malloc((size_t)eb * sizeof *idx);
    nac_status s = norm && raw && idx ? NAC_OK : nac_error(NAC_ERR_NOMEM, "out of memory");
    uint64_t key = nac_rng_key((uint64_t)c->seed, NAC_STREAM_LATENT, 1u << 30, 0);
    for (int64_t start = first; s == NAC_OK && start < first + count; start += eb) {
        int m = first + count - start < eb ? (int)(first + count - start) : eb;
        if (!xin || m != xin->dim[0]) { /* a short last batch: new shapes (outside training) */
            nac_tensor_free(xin);
            nac_tensor_free(xraw);
            xin = nac_tensor_new4(t->be, m, t->c, t->h, t->w);
            xraw = nac_tensor_new4(t->be, m, t->c, t->h, t->w);
            if (!xin || !xraw) {
                s = nac_error(NAC_ERR_NOMEM, "out of memory");
                break;
            }
        }
        for (int i = 0; i < m; i++) idx[i] = start + i;
        const nac_tensor_t *h;
        s = upload_test(t, lc, idx, m, norm, raw, xin, xraw);
        if (s == NAC_OK) s = nac_encoder_forward(t->enc, xin, false, 1, &h);
        if (s == NAC_OK)
            s = nac_vae_eval_rows(t->vae, h, xraw, c->is_k, c->is_chunk, key, start, mu + start * l,
                                  lv + start * l, lp + start, el + start);
        if (t->hooks && t->hooks->progress) {
            char extra[96];
            snprintf(extra, sizeof extra, "evaluating, K=%d%s", c->is_k,
                     t->nranks > 1 ? ", this rank's slice" : "");
            t->hooks->progress(t->hooks->ctx, start + m - first, count, extra);
        }
    }
    nac_tensor_free(xin);
    nac_tensor_free(xraw);
    free(norm);
    free(raw);
    free(idx);
    return s;
}

/* Importance-sampled evaluation on the test split: each rank its contiguous slice, the
 * per-image rows gathered in image order and added up as one process adds them. */
static nac_status evaluate_is(vtrainer *t, const nac_loader_config *lc, nac_vae_eval_result_t *r) {
    int64_t n = t->test.n, l = t->cfg->latent, first, count;
    nac_comm_slice(n, t->rank, t->nranks, &first, &count);
    float *mu = malloc((size_t)(n * l) * sizeof *mu), *lv = malloc((size_t)(n * l) * sizeof *lv);
    double *lp = malloc((size_t)n * sizeof *lp), *el = malloc((size_t)n * sizeof *el);
    nac_vae_eval_t e;
    nac_status s = nac_vae_eval_init(&e, (int)l, (int64_t)t->c * t->h * t->w,
                                     nac_vae_lik_discrete(t->vae->cfg.likelihood));
    if (s == NAC_OK && !(mu && lv && lp && el))
        s = nac_error(NAC_ERR_NOMEM, "evaluation of %lld test images: out of memory", (long long)n);
    if (s == NAC_OK) s = is_slice(t, lc, first, count, mu, lv, lp, el);
    s = nac_comm_agree_status(t->comm, s); /* a slice's failure stops every rank here */
    if (s == NAC_OK) s = nac_comm_allgather_rows(t->comm, mu, n, (size_t)l * sizeof *mu);
    if (s == NAC_OK) s = nac_comm_allgather_rows(t->comm, lv, n, (size_t)l * sizeof *lv);
    if (s == NAC_OK) s = nac_comm_allgather_rows(t->comm, lp, n, sizeof *lp);
    if (s == NAC_OK) s = nac_comm_allgather_rows(t->comm, el, n, sizeof *el);
    if (s == NAC_OK) s = nac_vae_eval_add(&e, n, mu, lv, lp, el);
    if (s == NAC_OK) nac_vae_eval_get(&e, r);
    if (s == NAC_OK && t->rank == 0) { /* per image, in the test split's order: paired comparisons */
        char path[700];
        int64_t shape[1] = {e.n};
        snprintf(path, sizeof path, "%s/logpx.npy", t->dir);
        s = nac_npy_write(path, NAC_DT_F64, 1, shape, nac_vae_eval_logpx(&e));
        snprintf(path, sizeof path, "%s/kl.npy", t->dir);
        if (s == NAC_OK) s = nac_npy_write(path, NAC_DT_F64, 1, shape, nac_vae_eval_kl(&e));
    }
    nac_vae_eval_free(&e);
    free(mu);
    free(lv);
    free(lp);
    free(el);
    return s;
}

/* The grids: the first 32 test images beside their reconstructions, and 64 prior samples. */
static nac_status write_grids(vtrainer *t, const nac_loader_config *lc) {
    const nac_vae_train_config *c = t->cfg;
    int eb = c->eval_batch, n = t->test.n, g = eb < 32 ? eb : 32;
    int64_t dims = (int64_t)t->c * t->h * t->w;
    nac_tensor_t *xin = nac_tensor_new4(t->be, eb, t->c, t->h, t->w);
    nac_tensor_t *mu = nac_tensor_new2(t->be, eb, c->latent), *lv = nac_tensor_new2(t->be, eb, c->latent);
    float *norm = malloc((size_t)eb * dims * sizeof *norm), *raw = malloc((size_t)eb * dims * sizeof *raw);
    float *rec = malloc((size_t)eb * dims * sizeof *rec);
    float *pair = malloc((size_t)2 * g * dims * sizeof *pair);
    int64_t *idx = malloc((size_t)eb * sizeof *idx);
    nac_status s = xin && mu && lv && norm && raw && rec && pair && idx
                       ? NAC_OK : nac_error(NAC_ERR_NOMEM, "out of memory");
    const nac_tensor_t *h;
    for (int i = 0; s == NAC_OK && i < eb; i++) idx[i] = i % n;
    if (s == NAC_OK) s = upload_test(t, lc, idx, eb, norm, raw, xin, NULL);
    if (s == NAC_OK) s = nac_encoder_forward(t->enc, xin, false, 1, &h);
    if (s == NAC_OK) s = nac_vae_encode(t->vae, h, mu, lv);
    if (s == NAC_OK) s = nac_vae_decode_mean(t->vae, mu, rec);
    char path[700];
    float zero[3] = {0, 0, 0}, one[3] = {1, 1, 1};
    if (s == NAC_OK) {
        /* rows of 8: originals, then their reconstructions */
        for (int row = 0; row < g / 8; row++)
            for (int k = 0; k < 8; k++) {
                memcpy(pair + ((size_t)(2 * row) * 8 + k) * dims, raw + ((size_t)row * 8 + k) * dims,
                       (size_t)dims * sizeof(float));
                memcpy(pair + ((size_t)(2 * row + 1) * 8 + k) * dims, rec + ((size_t)row * 8 + k) * dims,
                       (size_t)dims * sizeof(float));
            }
        snprintf(path, sizeof path, "%s/reconstructions.png", t->dir);
        s = nac_png_write_grid_f32(path, pair, (g / 8) * 16, t->c, t->h, t->w, 8, 2, zero, one);
    }
    if (s == NAC_OK) s = nac_tensor_rand(mu, NAC_RAND_NORMAL, 1.0f,
                                         nac_rng_key((uint64_t)c->seed, NAC_STREAM_LATENT, 1u << 31, 0));
    if (s == NAC_OK) s = nac_vae_decode_mean(t->vae, mu, rec);
    if (s == NAC_OK) {
        snprintf(path, sizeof path, "%s/samples.png", t->dir);
        s = nac_png_write_grid_f32(path, rec, eb < 64 ? eb : 64, t->c, t->h, t->w, 8, 2, zero, one);
    }
    nac_tensor_free(xin);
    nac_tensor_free(mu);
    nac_tensor_free(lv);
    free(norm);
    free(raw);
    free(rec);
    free(pair);
    free(idx);
    return s;
}

/* Before a data-parallel evaluation: the trained weights must be the same on every rank
 * (a broken gradient average would not be), and rank 0's batch-norm running statistics
 * (those of the checkpoint) go to every rank, so that every slice is evaluated by one model. */
static nac_status sync_for_eval(vtrainer *t) {
    if (t->nranks == 1) return NAC_OK;
    int64_t most = 0;
    for (int i = 0; i < t->all.n; i++)
        if (nac_tensor_numel(&t->all.items[i]->w) > most) most = nac_tensor_numel(&t->all.items[i]->w);
    float *buf = malloc((size_t)most * sizeof *buf);
    if (!buf) return nac_error(NAC_ERR_NOMEM, "out of memory");
    uint64_t digest = NAC_DIGEST_INIT;
    nac_status s = NAC_OK;
    for (int i = 0; s == NAC_OK && i < t->all.n; i++) {
        nac_param_t *p = t->all.items[i];
        int64_t m = nac_tensor_numel(&p->w);
        s = nac_tensor_to_host(&p->w, buf);
        if (s == NAC_OK && !(p->flags & NAC_PARAM_BUFFER))
            digest = nac_digest_bytes(digest, buf, (size_t)m * sizeof *buf);
        if (s == NAC_OK && (p->flags & NAC_PARAM_BUFFER)) {
            s = nac_comm_broadcast(t->comm, buf, m * (int64_t)sizeof *buf, 0);
            if (s == NAC_OK) s = nac_tensor_from_host(&p->w, buf);
        }
    }
    free(buf);
    NAC_TRY(s);
    return nac_comm_check_same(t->comm, digest, "the trained weights (the gradient average failed)");
}

/* Importance-sampled evaluation on the test split, plus the PNG grids (rank 0). */
static nac_status evaluate(vtrainer *t, nac_vae_eval_result_t *r) {
    nac_loader_config lc = t->lcfg;
    lc.batch = t->cfg->eval_batch;
    lc.shuffle = false;
    lc.drop_last = false;
    lc.part = lc.parts = 0;
    nac_vae_set_train(t->vae, false);
    nac_status s = sync_for_eval(t);
    if (s == NAC_OK) s = evaluate_is(t, &lc, r);
    if (s == NAC_OK && t->rank == 0) s = write_grids(t, &lc);
    nac_vae_set_train(t->vae, true);
    return s;
}

/* KL, active units and the mean feature norm on the first diag_images test images
 * (evaluation mode, no sampling): whether the posterior is being used, epoch by epoch. */
static nac_status log_diag(vtrainer *t) {
    const nac_vae_train_config *c = t->cfg;
    int n = c->diag_images < t->test.n ? c->diag_images : t->test.n, b = t->b;
    if (n <= 0 || t->rank != 0) return NAC_OK; /* rank 0's model (its BN statistics) */
    nac_dataset_t sub = t->test;
    sub.n = n; /* the first n images: a view, not a copy */
    float *feat = NULL;
    int64_t f = 0;
    NAC_TRY(nac_features_compute(t->enc, &sub, t->mean, t->std, b, NULL, NULL, &feat, &f));
    nac_vae_eval_t e;
    int l = c->latent;
    nac_status s = nac_vae_eval_init(&e, l, 1, true);
    nac_tensor_t *h = nac_tensor_new2(t->be, b, f), *mu = nac_tensor_new2(t->be, b, l),
                 *lv = nac_tensor_new2(t->be, b, l);
    float *hb = calloc((size_t)(b * f), sizeof *hb), *m = malloc((size_t)(b * l) * sizeof *m),
          *v = malloc((size_t)(b * l) * sizeof *v);
    double *zero = calloc((size_t)b, sizeof *zero), norm = 0;
    if (s == NAC_OK && !(h && mu && lv && hb && m && v && zero))
        s = nac_error(NAC_ERR_NOMEM, "diagnostics: out of memory");
    for (int64_t i = 0; s == NAC_OK && i < n; i++) {
        double q = 0;
        for (int64_t j = 0; j < f; j++) q += (double)feat[i * f + j] * feat[i * f + j];
        norm += sqrt(q) / n;
    }
    for (int start = 0; s == NAC_OK && start < n; start += b) {
        int k = n - start < b ? n - start : b;
        memcpy(hb, feat + (int64_t)start * f, (size_t)(k * f) * sizeof *hb);
        s = nac_tensor_from_host(h, hb);
        if (s == NAC_OK) s = nac_vae_encode(t->vae, h, mu, lv);
        if (s == NAC_OK) s = nac_tensor_to_host(mu, m);
        if (s == NAC_OK) s = nac_tensor_to_host(lv, v);
        if (s == NAC_OK) s = nac_vae_eval_add(&e, k, m, v, zero, zero);
    }
    nac_vae_eval_result_t r;
    if (s == NAC_OK) nac_vae_eval_get(&e, &r);
    if (s == NAC_OK)
        s = nac_hooks_log(t->hooks, "{\"kind\":\"diag\",\"epochs_done\":%d,\"step\":%" PRId64
                          ",\"images\":%d,\"kl\":%.4f,\"active_units\":%d,\"feature_norm\":%.4f}",
                          (int)(t->step / t->spe), t->step, n, r.kl, r.active_units, norm);
    nac_vae_eval_free(&e);
    nac_tensor_free(h);
    nac_tensor_free(mu);
    nac_tensor_free(lv);
    free(feat);
    free(hb);
    free(m);
    free(v);
    free(zero);
    return s;
}

/* Before the first step of a new run: a body that will be frozen gets batch-norm
 * statistics of the VAE's own training images (a random body would otherwise run with
 * 0/1); a "standardize" head is re-expressed for z-scored features. */
static nac_status prepare(vtrainer *t) {
    const nac_vae_train_config *c = t->cfg;
    enum { RECAL_IMAGES = 10000, STAT_IMAGES = 5000 };
    nac_dataset_t sub = t->train;
    if ((c->freeze_body || c->freeze_epochs > 0) && c->recal_bn) {
        sub.n = t->train.n < RECAL_IMAGES ? t->train.n : RECAL_IMAGES;
        int64_t per = (int64_t)sub.c * sub.h * sub.w;
        float *x = malloc((size_t)sub.n * (size_t)per * sizeof *x);
        nac_status s = x ? nac_features_images(&sub, t->mean, t->std, 0, sub.n, x)
                         : nac_error(NAC_ERR_NOMEM, "recalibration: out of memory");
        if (s == NAC_OK) s = nac_encoder_recalibrate_bn(t->enc, x, sub.n, t->b);
        free(x);
        NAC_TRY(s);
        NAC_TRY(nac_hooks_log(t->hooks, "{\"kind\":\"recal_bn\",\"images\":%d}", sub.n));
    }
    if (!strcmp(c->head_init, "standardize")) {
        sub.n = t->train.n < STAT_IMAGES ? t->train.n : STAT_IMAGES;
        float *feat = NULL;
        int64_t f = 0;
        NAC_TRY(nac_features_compute(t->enc, &sub, t->mean, t->std, t->b, NULL, NULL, &feat, &f));
        float *mean = calloc((size_t)f, sizeof *mean), *sd = calloc((size_t)f, sizeof *sd);
        nac_status s = mean && sd ? NAC_OK : nac_error(NAC_ERR_NOMEM, "out of memory");
        for (int64_t j = 0; s == NAC_OK && j < f; j++) {
            double m = 0, q = 0;
            for (int i = 0; i < sub.n; i++) m += feat[(int64_t)i * f + j];
            m /= sub.n;
            for (int i = 0; i < sub.n; i++) {
                double d = feat[(int64_t)i * f + j] - m;
                q += d * d;
            }
            mean[j] = (float)m;
            sd[j] = (float)sqrt(q / sub.n + 1e-10); /* a dead feature: scale 1e-5, no blow-up */
            if (sd[j] < 1e-5f) sd[j] = 1.0f;
        }
        if (s == NAC_OK) s = nac_vae_head_standardize(t->vae, mean, sd);
        free(feat);
        free(mean);
        free(sd);
        NAC_TRY(s);
    }
    return NAC_OK;
}

static void vtrainer_free(vtrainer *t) {
    nac_loader_free(t->loader);
    nac_vae_free(t->vae);
    nac_encoder_free(t->enc);
    free(t->all.items);
    free(t->grads);
    nac_tensor_free(t->xin);
    nac_tensor_free(t->xraw);
    nac_tensor_free(t->dh);
    free(t->raw_host);
    nac_dataset_free(&t->train);
    nac_dataset_free(&t->test);
    nac_backend_free(t->be);
}

/* ---- the run's side of the loop driver (nn/loop.h) ---- */

static nac_status loop_start_epoch(void *self, int epoch, int first) {
    vtrainer *t = self;
    return nac_loader_start_epoch(t->loader, epoch, first);
}

static nac_status loop_step(void *self, int epoch, char *text, size_t n) {
    vtrainer *t = self;
    float *batch;
    int *labels, k;
    NAC_TRY(nac_loader_next(t->loader, &batch, &labels, &k));
    nac_vae_stats st;
    NAC_TRY(train_step(t, batch, nac_loader_batch_indices(t->loader), &st));
    t->sum += st.nelbo;
    t->sum_kl += st.kl;
    t->sum_rec += st.rec;
    t->nsum++;
    t->res->steps = t->step + 1;
    snprintf(text, n, "epoch %d -elbo %.2f", epoch + 1, st.nelbo);
    return NAC_OK;
}

static nac_status loop_log(void *self, int epoch, int64_t step) {
    vtrainer *t = self;
    t->res->last_loss = t->sum / t->nsum;
    nac_status s = nac_hooks_log(t->hooks, "{\"kind\":\"train\",\"epoch\":%d,\"step\":%" PRId64
                                 ",\"nelbo\":%.4f,\"rec\":%.4f,\"kl\":%.4f,\"body_frozen\":%s}",
                                 epoch, step, t->sum / t->nsum, t->sum_rec / t->nsum,
                                 t->sum_kl / t->nsum, t->body_frozen ? "true" : "false");
    t->sum = t->sum_kl = t->sum_rec = 0;
    t->nsum = 0;
    return s;
}

static nac_status loop_save(void *self, char *path, size_t n) { return save_ckpt(self, path, n); }

static nac_status loop_epoch_end(void *self, bool complete, int done) {
    (void)done;
    return complete ? log_diag(self) : NAC_OK;
}

static const nac_loop_i vae_loop_i = {
    .start_epoch = loop_start_epoch,
    .step = loop_step,
    .log = loop_log,
    .epoch_end = loop_epoch_end,
    .save = loop_save,
};

static nac_status loop(vtrainer *t, nac_vae_train_result *res) {
    t->res = res;
    double t0 = nac_now();
    if (t->step == 0) NAC_TRY(log_diag(t));
    nac_loop l = {.iface = &vae_loop_i, .self = t, .hooks = t->hooks, .step = &t->step,
                  .total = t->total, .steps_per_epoch = t->spe, .log_every = t->cfg->log_every,
                  .ckpt_every = t->cfg->ckpt_every, .ckpt_path = res->checkpoint,
                  .ckpt_seconds = 60.0 * t->cfg->ckpt_minutes, .comm = t->comm,
                  .ckpt_path_n = sizeof res->checkpoint};
    NAC_TRY(nac_loop_run(&l));
    res->train_s = nac_now() - t0;
    return NAC_OK;
}

/* ---- N ranks in one process ---- */
typedef struct vae_job {
    const nac_vae_train_config *cfg;
    const char *dir, *config_json;
    bool resume;
    const nac_loop_hooks *hooks;
    nac_vae_train_result *res; /* rank 0's */
} vae_job;

static nac_status vae_rank_main(void *arg, nac_comm_t *comm) {
    const vae_job *j = arg;
    nac_vae_train_result mine;
    bool zero = nac_comm_rank(comm) == 0;
    return nac_vae_train_run_comm(j->cfg, j->dir, j->config_json, j->resume, zero ? j->hooks : NULL,
                                  comm, zero ? j->res : &mine);
}

nac_status nac_vae_train_run(const nac_vae_train_config *cfg, const char *dir,
                             const char *config_json, bool resume, const nac_loop_hooks *hooks,
                             nac_vae_train_result *res) {
    if (cfg->emulate_ranks <= 1)
        return nac_vae_train_run_comm(cfg, dir, config_json, resume, hooks, NULL, res);
    memset(res, 0, sizeof *res);
    vae_job j = {.cfg = cfg, .dir = dir, .config_json = config_json, .resume = resume,
                 .hooks = hooks, .res = res};
    return nac_comm_run_emulated(cfg->emulate_ranks, vae_rank_main, &j);
}

nac_status nac_vae_train_run_comm(const nac_vae_train_config *cfg, const char *dir,
                                  const char *config_json, bool resume,
                                  const nac_loop_hooks *hooks, nac_comm_t *comm,
                                  nac_vae_train_result *res) {
    vtrainer t;
    memset(&t, 0, sizeof t);
    memset(res, 0, sizeof *res);
    t.comm = comm;
    t.rank = nac_comm_rank(comm);
    t.nranks = nac_comm_size(comm);
    t.cfg = cfg;
    t.hooks = hooks;
    t.dir = dir;
    t.config_json = config_json;
    nac_backend_options bo = {.threads = cfg->threads,
                              .precision = !strcmp(cfg->precision, "bf16") ? NAC_PRECISION_BF16
                                                                           : NAC_PRECISION_FP32};
    nac_status s = nac_backend_create(cfg->backend, &bo, &t.be);
    if (s == NAC_OK)
        snprintf(res->precision, sizeof res->precision, "%s",
                 t.be->precision == NAC_PRECISION_BF16 ? "bf16" : "fp32");
    if (s == NAC_OK) s = load_data(&t);
    if (s == NAC_OK) s = build(&t);
    if (s == NAC_OK && resume) {
        char path[700];
        snprintf(path, sizeof path, "%s/vae.safetensors", dir);
        s = load_ckpt(&t, path);
    } else if (s == NAC_OK) {
        s = prepare(&t);
    }
    if (s == NAC_OK) s = loop(&t, res);
    if (s == NAC_OK) {
        double t0 = nac_now();
        s = evaluate(&t, &res->eval);
        res->eval_s = nac_now() - t0;
        if (s == NAC_OK)
            s = nac_hooks_log(t.hooks, "{\"kind\":\"eval\",\"images\":%" PRId64 ",\"logpx\":%.4f,\"logpx_se\":%.4f,"
                         "\"bpd\":%.5f,\"elbo\":%.4f,\"kl\":%.4f,\"active_units\":%d,\"k\":%d}",
                     res->eval.images, res->eval.logpx, res->eval.logpx_se, res->eval.bpd,
                     res->eval.elbo, res->eval.kl, res->eval.active_units, cfg->is_k);
    }
    vtrainer_free(&t);
    return s;
}
