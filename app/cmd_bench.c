/* `nac bench`: images per second and peak memory of one stage of a Table 5 run, printed as
 * one JSON line: --stage pretrain (a full NAC step: two views, objective, backward, LARS),
 * vae (body + posterior head + decoder + likelihood + Adam) or is (importance-sampled
 * log p(x) with K samples in chunks, a test batch at a time), with the step's FLOP rate
 * against this machine's FP32 peak (app/peak.h). bench/bench_pytorch.py times the same
 * stages in PyTorch. */
#include <math.h>
#include <stddef.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "app/app.h"
#include "app/evalcmd.h"
#include "app/peak.h"
#include "backend/rng.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "dist/comm.h"
#include "encoders/encoder.h"
#include "nac/objective.h"
#include "nac/pretrain.h"
#include "nn/loop.h"
#include "nn/optim.h"
#include "vae/is.h"
#include "vae/vae.h"

typedef enum bench_stage { STAGE_PRETRAIN, STAGE_VAE, STAGE_IS } bench_stage;

/* The options of every stage; -1 / "" mean "the stage's default" (bench_defaults). */
typedef struct bench_opts {
    bench_stage stage;
    char arch[32], objective[16], backend[8], precision[8], likelihood[16];
    double width;
    int batch, size, channels, threads, steps, warmup;
    int latent, dec_width, dec_blocks, k, chunk;
    double lr, head_lr_mult, peak_s;
    int loader_workers; /* pretrain: the two-view loader's threads for the wait measurement */
} bench_opts;

/* pretrain: ResNet-18, 64 pairs of 32x32x3 (the CIFAR-10 step); vae and is: the quick
 * Table 5 configuration (configs/table5_quick.json): ResNet-18 at width 1/8 on 28x28x1,
 * latent 32, decoder width 16 with one block a stage, discretised logistic, Adam at 1e-3
 * with the head at 10x; vae batch 128; is: K 100 in one chunk of 100, 20 images a batch. */
static void bench_defaults(bench_opts *o) {
    bool pre = o->stage == STAGE_PRETRAIN;
    if (!o->arch[0]) snprintf(o->arch, sizeof o->arch, "resnet18");
    if (!o->objective[0]) snprintf(o->objective, sizeof o->objective, "nac");
    if (!o->backend[0]) snprintf(o->backend, sizeof o->backend, "cpu");
    if (!o->precision[0]) snprintf(o->precision, sizeof o->precision, "fp32");
    if (!o->likelihood[0]) snprintf(o->likelihood, sizeof o->likelihood, "logistic");
    if (o->width < 0) o->width = pre ? 1.0 : 0.125;
    if (o->batch < 0) o->batch = pre ? 64 : o->stage == STAGE_VAE ? 128 : 20;
    if (o->size < 0) o->size = pre ? 32 : 28;
    if (o->channels < 0) o->channels = pre ? 3 : 1;
    if (o->steps < 0) o->steps = o->stage == STAGE_IS ? 3 : 5;
    if (o->warmup < 0) o->warmup = o->stage == STAGE_IS ? 1 : 2;
    if (o->latent < 0) o->latent = 32;
    if (o->dec_width < 0) o->dec_width = 16;
    if (o->dec_blocks < 0) o->dec_blocks = 1;
    if (o->k < 0) o->k = 100;
    if (o->chunk < 0) o->chunk = o->k;
    if (o->lr < 0) o->lr = 1e-3;
    if (o->head_lr_mult < 0) o->head_lr_mult = 10;
    if (o->peak_s < 0) o->peak_s = 0.6;
    if (o->loader_workers < 0) o->loader_workers = 1;
}

static nac_status parse_stage(const char *v, bench_stage *out) {
    if (!strcmp(v, "pretrain")) *out = STAGE_PRETRAIN;
    else if (!strcmp(v, "vae")) *out = STAGE_VAE;
    else if (!strcmp(v, "is")) *out = STAGE_IS;
    else return nac_error(NAC_ERR_USAGE, "--stage %s: must be pretrain, vae or is", v);
    return NAC_OK;
}

/* Numeric options: strict parsing with ranges (app/evalcmd.h); the fields start unset
 * (-1) and bench_defaults fills what was not given. */
typedef struct int_opt {
    const char *name;
    size_t off;
    long lo, hi;
} int_opt;
typedef struct num_opt {
    const char *name;
    size_t off;
    double lo, hi;
    bool excl_lo;
} num_opt;

#define IOPT(n, f, lo, hi) {n, offsetof(bench_opts, f), lo, hi}
static const int_opt int_opts[] = {
    IOPT("--batch", batch, 1, 1 << 20),        IOPT("--size", size, 8, 4096),
    IOPT("--channels", channels, 1, 3),        IOPT("--threads", threads, 0, 1024),
    IOPT("--steps", steps, 1, 1 << 20),        IOPT("--warmup", warmup, 0, 1 << 20),
    IOPT("--latent", latent, 1, 1 << 16),      IOPT("--dec-width", dec_width, 1, 1 << 12),
    IOPT("--dec-blocks", dec_blocks, 1, 64),   IOPT("--k", k, 1, 1 << 20),
    IOPT("--chunk", chunk, 1, 1 << 20),        IOPT("--loader-workers", loader_workers, 0, 64),
};
#undef IOPT
static const num_opt num_opts[] = {
    {"--width", offsetof(bench_opts, width), 0, 64, true},
    {"--lr", offsetof(bench_opts, lr), 0, 1e3, true},
    {"--peak-seconds", offsetof(bench_opts, peak_s), 0, 600, false},
};

/* Option a with value v if it is numeric: *used says whether it was. */
static nac_status parse_number(bench_opts *o, const char *a, const char *v, bool *used) {
    *used = true;
    for (size_t i = 0; i < sizeof int_opts / sizeof int_opts[0]; i++)
        if (!strcmp(a, int_opts[i].name))
            return ev_opt_int(a, v, int_opts[i].lo, int_opts[i].hi,
                              (int *)((char *)o + int_opts[i].off));
    for (size_t i = 0; i < sizeof num_opts / sizeof num_opts[0]; i++)
        if (!strcmp(a, num_opts[i].name)) {
            float x;
            NAC_TRY(ev_opt_float(a, v, num_opts[i].lo, num_opts[i].hi, num_opts[i].excl_lo, &x));
            *(double *)((char *)o + num_opts[i].off) = x;
            return NAC_OK;
        }
    *used = false;
    return NAC_OK;
}

static nac_status parse_opts(int argc, char **argv, bench_opts *o) {
    memset(o, 0, sizeof *o);
    o->width = o->lr = o->head_lr_mult = o->peak_s = -1;
    o->batch = o->size = o->channels = o->steps = o->warmup = -1;
    o->latent = o->dec_width = o->dec_blocks = o->k = o->chunk = o->loader_workers = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return nac_error(NAC_ERR_USAGE, "option %s needs a value", a);
        i++;
        bool used;
        NAC_TRY(parse_number(o, a, v, &used));
        if (used) continue;
#define STR_OPT(name, field) else if (!strcmp(a, name)) snprintf(o->field, sizeof o->field, "%s", v)
        if (!strcmp(a, "--stage")) NAC_TRY(parse_stage(v, &o->stage));
        STR_OPT("--arch", arch);
        STR_OPT("--objective", objective);
        STR_OPT("--backend", backend);
        STR_OPT("--precision", precision);
        STR_OPT("--likelihood", likelihood);
#undef STR_OPT
        else return nac_error(NAC_ERR_USAGE, "unknown option %s (see nac bench --help)", a);
    }
    bench_defaults(o);
    return NAC_OK;
}

static nac_status check_opts(const bench_opts *o) {
    if (o->stage != STAGE_IS && o->batch < 2)
        return nac_error(NAC_ERR_USAGE, "--batch %d: training-mode batch norm needs >= 2",
                         o->batch);
    if (o->channels == 2) return nac_error(NAC_ERR_USAGE, "--channels must be 1 or 3");
    if (strcmp(o->precision, "fp32") && strcmp(o->precision, "bf16"))
        return nac_error(NAC_ERR_USAGE, "--precision %s: must be fp32 or bf16", o->precision);
    if (!nac_encoder_arch_known(o->arch) || !strcmp(o->arch, "mlp"))
        return nac_error(NAC_ERR_USAGE,
                         "--arch %s: nac bench times resnet18, resnet34, resnet50 or vgg16_bn",
                         o->arch);
    if (!strcmp(o->arch, "vgg16_bn") && o->size < 32)
        return nac_error(NAC_ERR_USAGE, "--arch vgg16_bn needs --size >= 32 (five max-pools)");
    if (o->stage == STAGE_PRETRAIN) {
        const nac_objective *obj = nac_objective_find(o->objective);
        if (!obj || obj->momentum) /* the bench times one step without a momentum copy */
            return nac_error(NAC_ERR_USAGE, "--objective must be nac or simclr");
        return NAC_OK;
    }
    if (strcmp(o->likelihood, "logistic") && strcmp(o->likelihood, "bernoulli") &&
        strcmp(o->likelihood, "gaussian"))
        return nac_error(NAC_ERR_USAGE, "--likelihood %s: must be logistic, gaussian or bernoulli",
                         o->likelihood);
    if (o->stage == STAGE_IS && o->k % o->chunk)
        return nac_error(NAC_ERR_USAGE, "--k %d, --chunk %d: need k >= 1 and chunk dividing k",
                         o->k, o->chunk);
    return NAC_OK;
}

/* What one timed stage measured. */
typedef struct stage_result {
    double images_per_s, step_s, peak_rss_mb, backend_peak_mb, flops_per_step;
    double images_per_s_rank; /* pretrain: one rank's share of images_per_s */
    int ranks;
    int64_t params;
    char precision[8]; /* what the backend ran (after any fallback) */
} stage_result;

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static nac_precision precision_of(const char *name) {
    return !strcmp(name, "bf16") ? NAC_PRECISION_BF16 : NAC_PRECISION_FP32;
}

/* ---- vae and is: the VAE of a Table 5 row on random images ---- */
typedef struct vae_bench {
    nac_backend_t *be;
    nac_encoder_t *enc;
    nac_vae_t *vae;
    nac_params_t all; /* view: body (group 0), head, decoder */
    nac_optim_t opt;
    nac_tensor_t *xin, *xraw, *dh;
    float *norm, *raw; /* host images: normalised input, pixels k/255 (or {0,1}) */
} vae_bench;

static void vae_bench_free(vae_bench *b) {
    nac_vae_free(b->vae);
    nac_encoder_free(b->enc);
    free(b->all.items);
    nac_tensor_free(b->xin);
    nac_tensor_free(b->xraw);
    nac_tensor_free(b->dh);
    free(b->norm);
    free(b->raw);
    nac_backend_free(b->be);
}

/* The model and optimiser as vae/train.c builds them for a run (random body). */
static nac_status vae_bench_build(const bench_opts *o, vae_bench *b) {
    nac_backend_options bo = {.threads = o->threads, .precision = precision_of(o->precision)};
    NAC_TRY(nac_backend_create(o->backend, &bo, &b->be));
    nac_encoder_config ec;
    nac_encoder_config_defaults(&ec);
    snprintf(ec.arch, sizeof ec.arch, "%s", o->arch);
    ec.in_channels = o->channels;
    ec.in_size = o->size;
    ec.width_mult = (float)o->width;
    NAC_TRY(nac_encoder_create(b->be, &ec, &b->enc));
    nac_vae_config vc = {.features = nac_encoder_features(b->enc), .latent = o->latent,
                         .channels = o->channels, .size = o->size, .width = o->dec_width,
                         .blocks = o->dec_blocks};
    vc.likelihood = !strcmp(o->likelihood, "logistic")   ? NAC_VAE_LIK_LOGISTIC
                    : !strcmp(o->likelihood, "gaussian") ? NAC_VAE_LIK_GAUSSIAN
                                                         : NAC_VAE_LIK_BERNOULLI;
    NAC_TRY(nac_vae_create(b->be, &vc, 17, &b->vae));
    nac_params_t *body = nac_encoder_params(b->enc);
    for (int i = 0; i < body->n; i++) body->items[i]->group = 0;
    NAC_TRY(nac_params_view_add(&b->all, body));
    NAC_TRY(nac_params_view_add(&b->all, &b->vae->params));
    nac_optim_config oc = nac_optim_defaults(NAC_OPT_ADAM);
    NAC_TRY(nac_optim_init(&b->opt, &oc));
    NAC_TRY(nac_optim_set_group(&b->opt, NAC_VAE_GROUP_HEAD, (float)o->head_lr_mult, 0.0f));
    NAC_TRY(nac_optim_set_group(&b->opt, NAC_VAE_GROUP_DECODER, 1.0f, 0.0f));
    int64_t n = (int64_t)o->batch * o->channels * o->size * o->size;
    b->xin = nac_tensor_new4(b->be, o->batch, o->channels, o->size, o->size);
    b->xraw = nac_tensor_new4(b->be, o->batch, o->channels, o->size, o->size);
    b->dh = nac_tensor_new2(b->be, o->batch, vc.features);
    b->norm = malloc((size_t)n * sizeof *b->norm);
    b->raw = malloc((size_t)n * sizeof *b->raw);
    if (!b->xin || !b->xraw || !b->dh || !b->norm || !b->raw)
        return nac_error(NAC_ERR_NOMEM, "nac bench: out of memory");
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(0, NAC_STREAM_USER, 0, 0));
    bool bin = vc.likelihood == NAC_VAE_LIK_BERNOULLI;
    for (int64_t i = 0; i < n; i++) {
        int px = (int)(nac_rng_uniform(&r) * 256.0) & 255;
        b->raw[i] = bin ? (float)(px >= 128) : (float)px / 255.0f;
        b->norm[i] = ((float)px / 255.0f - 0.5f) / 0.25f;
    }
    return NAC_OK;
}

/* One training step of vae/train.c on the bench's batch: upload, body forward (batch
 * statistics), the ELBO's forward and backward, body backward, Adam. */
static nac_status vae_train_step(vae_bench *b, const bench_opts *o, int64_t step) {
    NAC_TRY(nac_tensor_from_host(b->xin, b->norm));
    NAC_TRY(nac_tensor_from_host(b->xraw, b->raw));
    const nac_tensor_t *h;
    NAC_TRY(nac_encoder_forward(b->enc, b->xin, true, 1, &h));
    nac_vae_stats st;
    uint64_t key = nac_rng_key(0, NAC_STREAM_LATENT, (uint64_t)step, 0);
    NAC_TRY(nac_vae_forward(b->vae, h, b->xraw, key, 1.0f, &st));
    if (!isfinite(st.loss))
        return nac_error(NAC_ERR_NUMERIC, "nac bench: the VAE loss is %g at step %lld", st.loss,
                         (long long)step);
    NAC_TRY(nac_vae_backward(b->vae, b->dh));
    NAC_TRY(nac_encoder_backward(b->enc, b->dh, NULL));
    return nac_optim_step(&b->opt, &b->all, (float)o->lr);
}

/* One test batch of the evaluation: upload, body forward (running statistics), head,
 * K-sample importance sampling in chunks through the decoder and likelihood. */
static nac_status vae_is_batch(vae_bench *b, const bench_opts *o, int64_t step,
                               nac_vae_eval_t *e) {
    NAC_TRY(nac_tensor_from_host(b->xin, b->norm));
    NAC_TRY(nac_tensor_from_host(b->xraw, b->raw));
    const nac_tensor_t *h;
    NAC_TRY(nac_encoder_forward(b->enc, b->xin, false, 1, &h));
    (void)step; /* one key for the whole evaluation, as vae/train.c's (e->n numbers images) */
    uint64_t key = nac_rng_key(0, NAC_STREAM_LATENT, 1u << 30, 0);
    return nac_vae_eval_batch(b->vae, h, b->xraw, o->k, o->chunk, key, e);
}

static nac_status run_vae_stage(const bench_opts *o, stage_result *r) {
    vae_bench b;
    memset(&b, 0, sizeof b);
    nac_vae_eval_t e;
    memset(&e, 0, sizeof e);
    nac_status s = vae_bench_build(o, &b);
    bool is = o->stage == STAGE_IS;
    if (s == NAC_OK && is) {
        nac_vae_set_train(b.vae, false);
        s = nac_vae_eval_init(&e, o->latent, (int64_t)o->channels * o->size * o->size,
                              nac_vae_lik_discrete(b.vae->cfg.likelihood));
    }
    double t0 = 0, f0 = 0;
    for (int i = 0; s == NAC_OK && i < o->warmup + o->steps; i++) {
        if (i == o->warmup) {
            t0 = nac_now();
            f0 = nac_backend_flops(b.be);
        }
        s = is ? vae_is_batch(&b, o, i, &e) : vae_train_step(&b, o, i);
    }
    if (s == NAC_OK) s = nac_backend_synchronize(b.be);
    if (s == NAC_OK) {
        double dt = nac_now() - t0;
        r->step_s = dt / o->steps;
        r->images_per_s = (double)o->batch * o->steps / dt;
        r->peak_rss_mb = peak_rss_mb();
        r->backend_peak_mb = (double)nac_backend_memory_stats(b.be).peak / (1024.0 * 1024.0);
        r->flops_per_step = (nac_backend_flops(b.be) - f0) / o->steps;
        r->params = nac_params_numel(&b.all, true);
        snprintf(r->precision, sizeof r->precision, "%s",
                 b.be->precision == NAC_PRECISION_BF16 ? "bf16" : "fp32");
    }
    nac_vae_eval_free(&e);
    vae_bench_free(&b);
    return s;
}

/* ---- pretrain ---- */
static nac_status run_pretrain_stage(const bench_opts *o, nac_comm_t *comm, stage_result *r) {
    nac_pretrain_config cfg;
    nac_pretrain_defaults(&cfg);
    snprintf(cfg.arch, sizeof cfg.arch, "%s", o->arch);
    snprintf(cfg.objective, sizeof cfg.objective, "%s", o->objective);
    snprintf(cfg.backend, sizeof cfg.backend, "%s", o->backend);
    snprintf(cfg.precision, sizeof cfg.precision, "%s", o->precision);
    cfg.batch = o->batch;
    cfg.width_mult = o->width;
    cfg.threads = o->threads;
    cfg.lr = 0.1;
    cfg.warmup_epochs = 0;
    if (nac_comm_size(comm) > 1) { /* as nac pretrain under mpirun: the rank's GPU, NCCL */
        cfg.mpi_ranks = nac_comm_size(comm);
        NAC_TRY(nac_comm_local_rank(comm, &cfg.local_rank));
        cfg.nccl = !strcmp(cfg.backend, "cuda") && nac_comm_have_nccl();
    }
    nac_bench_result br;
    NAC_TRY(nac_pretrain_bench_comm(&cfg, comm, o->channels, o->size, o->warmup, o->steps, &br));
    *r = (stage_result){.images_per_s = br.images_per_s, .step_s = br.step_s,
                        .images_per_s_rank = br.images_per_s_rank, .ranks = br.ranks,
                        .peak_rss_mb = br.peak_rss_mb, .backend_peak_mb = br.backend_peak_mb,
                        .flops_per_step = br.flops_per_step, .params = br.params};
    snprintf(r->precision, sizeof r->precision, "%s", br.precision);
    return NAC_OK;
}

/* The step's time spent as the step spends it: `threads` threads busy for `seconds`. */
static void busy_step(int threads, double seconds) {
    double until = nac_now() + seconds;
#pragma omp parallel num_threads(threads)
    {
        volatile double x = 0;
        while (nac_now() < until) x = x + 1.0;
    }
}

/* The two-view loader at the measured step rate: a synthetic dataset of the bench's image
 * shape with the pretraining augmentations and `loader_workers` threads, consumed by a
 * stand-in step that keeps the compute threads busy for step_s per batch (so the workers
 * compete for the cores as in a run). The mean and longest wait in nac_loader_next over
 * three epochs of four batches, in milliseconds. */
static nac_status loader_wait(const bench_opts *o, int threads, double step_s, double *mean_ms,
                              double *max_ms) {
    nac_dataset_t ds;
    memset(&ds, 0, sizeof ds);
    NAC_TRY(nac_dataset_synthetic(4 * o->batch, 10, o->channels, o->size, o->size, 7, &ds));
    nac_loader_config lc;
    nac_loader_defaults(&lc);
    lc.batch = o->batch;
    lc.workers = o->loader_workers;
    nac_loader_t *l = NULL;
    nac_status s = nac_loader_create(&ds, &lc, &l);
    for (int epoch = 0; s == NAC_OK && epoch < 3; epoch++) {
        s = nac_loader_start_epoch(l, epoch, 0);
        for (int got = 1; s == NAC_OK && got > 0;) {
            float *batch;
            int *labels;
            s = nac_loader_next(l, &batch, &labels, &got);
            if (s == NAC_OK && got > 0) busy_step(threads, step_s);
        }
    }
    nac_loader_stats st = {0};
    if (s == NAC_OK) nac_loader_take_stats(l, &st);
    *mean_ms = st.batches > 0 ? 1e3 * st.wait_s / (double)st.batches : 0;
    *max_ms = 1e3 * st.max_wait_s;
    nac_loader_free(l);
    nac_dataset_free(&ds);
    return s;
}

/* Under mpirun (--stage pretrain only): every rank runs its slice of the step; a rank's
 * failure is reported with its rank and stops the job (the others would wait in a
 * collective). Rank 0 alone goes on to the yardsticks and prints. */
static nac_status bench_ranks(const bench_opts *o, nac_comm_t *comm, stage_result *r) {
    int rank = nac_comm_rank(comm);
    if (o->stage != STAGE_PRETRAIN)
        return nac_error(NAC_ERR_USAGE, "--stage %s under mpirun with %d ranks: only --stage "
                         "pretrain is data-parallel; start the others without mpirun",
                         o->stage == STAGE_VAE ? "vae" : "is", nac_comm_size(comm));
    nac_status s = run_pretrain_stage(o, comm, r);
    if (s != NAC_OK && nac_comm_size(comm) > 1) {
        fprintf(stderr, "nac bench: rank %d: %s\n", rank, nac_last_error());
        nac_comm_abort(comm, nac_status_exit_code(s));
    }
    return s;
}

static nac_status run_bench(int argc, char **argv) {
    bench_opts o;
    NAC_TRY(parse_opts(argc, argv, &o));
    NAC_TRY(check_opts(&o));
    stage_result r = {0};
    nac_comm_t *comm;
    NAC_TRY(nac_comm_world(&comm));
    int rank = nac_comm_rank(comm);
    nac_status s = nac_comm_size(comm) > 1 ? bench_ranks(&o, comm, &r)
                   : o.stage == STAGE_PRETRAIN ? run_pretrain_stage(&o, NULL, &r)
                                               : run_vae_stage(&o, &r);
    nac_comm_free(comm);
    if (s != NAC_OK || rank != 0) return s; /* one JSON line for the job: rank 0's */
    /* after the stage: the yardsticks' buffers are not in its peak memory */
    int threads = o.threads > 0 ? o.threads : omp_get_num_procs();
    double wait_ms = -1, wait_max_ms = -1;
    if (o.stage == STAGE_PRETRAIN && o.loader_workers > 0)
        NAC_TRY(loader_wait(&o, threads, r.step_s, &wait_ms, &wait_max_ms));
    nac_fp32_peak pk = {0};
    bool cpu = !strcmp(o.backend, "cpu");
    if (cpu && o.peak_s > 0) NAC_TRY(nac_fp32_peak_measure(threads, o.peak_s, 2048, &pk));
    char model[128];
    double mhz;
    nac_cpu_describe(model, sizeof model, &mhz);
    double gflops = r.flops_per_step / r.step_s / 1e9;
    static const char *names[] = {"pretrain", "vae", "is"};
    printf("{\"impl\":\"nacvae %s\",\"stage\":\"%s\",\"backend\":\"%s\",\"precision\":\"%s\","
           "\"arch\":\"%s\",\"width\":%g,\"batch\":%d,\"size\":%d,\"channels\":%d,"
           "\"threads\":%d,\"params\":%lld,",
           NAC_VERSION, names[o.stage], o.backend, r.precision, o.arch, o.width, o.batch,
           o.size, o.channels, threads, (long long)r.params);
    if (o.stage == STAGE_PRETRAIN) {
        printf("\"objective\":\"%s\",\"images_per_step\":%d,\"ranks\":%d,"
               "\"images_per_s_per_rank\":%.2f,\"loader_workers\":%d,",
               o.objective, 2 * o.batch, r.ranks, r.images_per_s_rank, o.loader_workers);
        if (wait_ms >= 0)
            printf("\"loader_wait_ms_per_step\":%.3f,\"loader_wait_max_ms\":%.3f,", wait_ms,
                   wait_max_ms);
        else /* --loader-workers 0: not measured */
            printf("\"loader_wait_ms_per_step\":null,\"loader_wait_max_ms\":null,");
    }
    else
        printf("\"latent\":%d,\"dec_width\":%d,\"dec_blocks\":%d,\"likelihood\":\"%s\",",
               o.latent, o.dec_width, o.dec_blocks, o.likelihood);
    if (o.stage == STAGE_IS) printf("\"k\":%d,\"chunk\":%d,", o.k, o.chunk);
    printf("\"images_per_s\":%.2f,\"step_s\":%.4f,\"peak_rss_mb\":%.1f,\"backend_peak_mb\":%.1f,"
           "\"gflop_per_step\":%.6g,\"gflop_per_s\":%.4g,\"fma_isa\":\"%s\","
           "\"fma_gflop_per_s\":%.1f,\"sgemm_n\":%lld,\"sgemm_gflop_per_s\":%.1f,"
           "\"peak_gflop_per_s\":%.1f,\"of_fp32_peak\":%.3g,\"cpu\":\"%s\",\"cpu_mhz\":%.0f}\n",
           r.images_per_s, r.step_s, r.peak_rss_mb, r.backend_peak_mb, r.flops_per_step / 1e9,
           gflops, pk.isa ? pk.isa : "not measured", pk.fma_gflops, (long long)pk.sgemm_n,
           pk.sgemm_gflops, pk.peak_gflops, pk.peak_gflops > 0 ? gflops / pk.peak_gflops : 0.0,
           model, mhz);
    return NAC_OK;
}

const nac_command nac_cmd_bench = {
    "bench",
    "time one stage (pretrain step, VAE step, IS evaluation) as one JSON line",
    "bench [--stage pretrain|vae|is] [--arch A] [--width W] [--batch B] [--size S]\n"
    "                 [--channels 1|3] [--threads 0] [--steps N] [--warmup N]\n"
    "                 [--precision fp32|bf16] [--peak-seconds 0.6] [--backend cpu|cuda]\n"
    "        pretrain: [--objective nac|simclr] [--loader-workers 1]\n"
    "        vae, is:  [--latent 32] [--dec-width 16] [--dec-blocks 1]\n"
    "                  [--likelihood logistic|gaussian|bernoulli] [--lr 1e-3]\n"
    "        is:       [--k 100] [--chunk 100]",
    "pretrain (default: resnet18, width 1, 64 pairs of 32x32x3): upload of 2 x batch\n"
    "images, encoder forward with per-view batch norm, heads, objective, backward, LARS;\n"
    "then the two-view loader fed at that step rate (loader_wait_ms_per_step: how long\n"
    "the step would wait for its batch; --loader-workers 0 skips it).\n"
    "Under mpirun -np N, pretrain is the data-parallel step of nac pretrain: --batch is\n"
    "the global batch, each rank runs batch/N images a view; rank 0 prints the line with\n"
    "images_per_s for the job, images_per_s_per_rank and ranks (step_s, gflop_per_step,\n"
    "peak memory and the yardsticks are rank 0's; --threads is a rank's).\n"
    "vae (default: the quick Table 5 row, resnet18 width 0.125 on 28x28x1, batch 128):\n"
    "body + posterior head + decoder + likelihood forward and backward, Adam.\n"
    "is (default: K 100, chunk 100, 20 images a batch): body in evaluation mode, head,\n"
    "importance-sampled log p(x) through the decoder in chunks.\n"
    "gflop_per_s counts the convolutions' and matrix products' work (two FLOPs a\n"
    "multiply-add); of_fp32_peak divides it by this machine's FP32 peak on the same\n"
    "threads: the higher of a register-resident FMA loop (fma_isa) and oneDNN's sgemm at\n"
    "2048^3, measured after the stage (--peak-seconds 0 skips it). --precision bf16 runs\n"
    "convolutions and matrix products in bf16 where the CPU has AVX512_BF16 or AMX\n"
    "(\"precision\" says what ran). Compare with the same stage of\n"
    "  bench/bench_pytorch.py --stage vae --threads 2\n"
    "(docs/performance.md lists the pairs of commands).",
    run_bench,
    NULL,
};
