/* Shared by the data-parallel VAE and evaluation tests (test_dist_vae.c in one process,
 * test_dist_vae_mpi.c under mpirun): a tiny VAE config, a logbook of its metrics lines,
 * the per-image files of a run, and a small dataset and encoder for feature tests.
 * Header-only; builds on dist_util.h (folders, checkpoint comparisons). */
#ifndef NAC_TESTS_DIST_VAE_UTIL_H
#define NAC_TESTS_DIST_VAE_UTIL_H

#include "tests/dist_util.h"

#include "backend/rng.h"
#include "dist/ranks.h"
#include "eval/features.h"
#include "io/npy.h"
#include "vae/train.h"

#define DV_MAXLOG 32
typedef struct dv_log {
    double nelbo[DV_MAXLOG];
    int n;
    int64_t stop_at, done; /* interrupt once stop_at steps are done (0: never) */
    bool training;         /* progress counts steps until the evaluation starts */
} dv_log;

static nac_status dv_on_log(void *ctx, const char *json) {
    dv_log *b = ctx;
    const char *p = strstr(json, "\"nelbo\":");
    if (strstr(json, "\"kind\":\"train\"") && p && b->n < DV_MAXLOG) b->nelbo[b->n++] = atof(p + 8);
    return NAC_OK;
}
static void dv_on_progress(void *ctx, int64_t done, int64_t total, const char *extra) {
    (void)total;
    if (!strstr(extra, "evaluating")) ((dv_log *)ctx)->done = done;
}
static int dv_on_interrupted(void *ctx) {
    dv_log *b = ctx;
    return b->stop_at > 0 && b->done >= b->stop_at;
}
static inline nac_loop_hooks dv_hooks(dv_log *b) {
    return (nac_loop_hooks){b, dv_on_log, dv_on_progress, dv_on_interrupted};
}

/* 200 synthetic images (160 train, 40 test), K = 16 (2 ranks: 8 each), 4 steps, a metrics
 * line a step; K = 4 importance samples a test image. */
static inline void dv_config(nac_vae_train_config *c) {
    nac_vae_train_defaults(c);
    strcpy(c->dataset, "synthetic");
    c->synthetic_n = 200;
    c->width_mult = 1.0 / 16;
    c->latent = 8;
    c->dec_width = 4;
    c->epochs = 1;
    c->batch = 16;
    c->max_steps = 4;
    c->is_k = 4;
    c->is_chunk = 4;
    c->eval_batch = 8;
    c->diag_images = 16;
    c->workers = 0;
    c->threads = 1;
    c->seed = 3;
    c->log_every = 1;
    c->ckpt_minutes = 0;
}

static inline nac_status dv_run(const nac_vae_train_config *c, const char *dir, bool resume,
                                dv_log *b, nac_vae_train_result *r) {
    nac_loop_hooks h = dv_hooks(b);
    return nac_vae_train_run(c, dir, "{\"test\":true}", resume, &h, r);
}

/* dir/name (float64, 1-D) into a malloc'ed array. */
static inline double *dv_load(const char *dir, const char *name, int64_t *n) {
    char path[1100];
    snprintf(path, sizeof path, "%.512s/%.512s", dir, name);
    nac_npy a;
    TU_OK(nac_npy_load(path, &a));
    assert_int_equal(a.dtype, NAC_DT_F64);
    assert_int_equal(a.ndim, 1);
    *n = a.shape[0];
    return a.data;
}

/* Two runs' per-image files agree: bit for bit (rtol 0) or within rtol. */
static inline void dv_same_images(const char *dir_a, const char *dir_b, double rtol, const char *what) {
    const char *files[2] = {"logpx.npy", "kl.npy"};
    for (int f = 0; f < 2; f++) {
        int64_t na, nb;
        double *a = dv_load(dir_a, files[f], &na), *b = dv_load(dir_b, files[f], &nb);
        assert_int_equal(na, nb);
        for (int64_t i = 0; i < na; i++)
            if (rtol == 0 ? memcmp(&a[i], &b[i], sizeof *a) != 0
                          : !(fabs(a[i] - b[i]) <= rtol * fabs(b[i]) + 1e-9))
                fail_msg("%s: %s[%lld]: %.17g vs %.17g", what, files[f], (long long)i, a[i], b[i]);
        free(a);
        free(b);
    }
}

static inline void dv_same_losses(const dv_log *a, const dv_log *b, double rtol, const char *what) {
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++)
        if (rtol == 0 ? a->nelbo[i] != b->nelbo[i]
                      : !(fabs(a->nelbo[i] - b->nelbo[i]) <= rtol * fabs(b->nelbo[i])))
            fail_msg("%s: step %d: -elbo %.9g vs %.9g", what, i + 1, a->nelbo[i], b->nelbo[i]);
}

/* Two runs equal bit for bit: losses, checkpoint, per-image files. */
static inline void dv_same_run(const dv_log *a, const char *dir_a, const dv_log *b, const char *dir_b,
                               const char *what) {
    dv_same_losses(a, b, 0, what);
    du_same_checkpoint(dir_a, dir_b, "vae.safetensors", 0, what);
    dv_same_images(dir_a, dir_b, 0, what);
}

/* Features of a small synthetic set (n images, not a multiple of the ranks) through a
 * random ResNet-18 (width 1/16) in evaluation mode, on the communicator given. */
typedef struct dv_feat {
    int n;
    bool pixels;       /* the raw-pixel baseline instead of the encoder */
    float *out;        /* rank 0's result (malloc'ed) */
    int64_t dim;
} dv_feat;

static nac_status dv_features(void *arg, nac_comm_t *comm) {
    dv_feat *j = arg;
    nac_dataset_t ds;
    NAC_TRY(nac_dataset_synthetic(j->n, 10, 3, 32, 32, nac_rng_key(7, NAC_STREAM_SYNTH, 0, 0), &ds));
    nac_backend_t *be = NULL;
    nac_encoder_t *enc = NULL;
    nac_backend_options bo = {.threads = 1};
    nac_encoder_config ec;
    nac_encoder_config_defaults(&ec);
    ec.width_mult = 1.0f / 16;
    float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.25f, 0.25f, 0.25f}, *f = NULL;
    int64_t dim = 0;
    nac_status s = nac_backend_create("cpu", &bo, &be);
    if (s == NAC_OK && !j->pixels) s = nac_encoder_create(be, &ec, &enc);
    if (s == NAC_OK) s = nac_features_compute_comm(comm, enc, &ds, mean, std, 8, NULL, NULL, &f, &dim);
    if (s == NAC_OK && nac_comm_rank(comm) == 0) {
        j->out = f;
        j->dim = dim;
    } else {
        free(f);
    }
    nac_encoder_free(enc);
    nac_backend_free(be);
    nac_dataset_free(&ds);
    return s;
}

#endif
