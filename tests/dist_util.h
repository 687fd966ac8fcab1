/* Shared by the data-parallel tests (test_dist.c in one process, test_dist_mpi.c under
 * mpirun): a tiny pretraining config, a logbook of the metrics lines, and comparisons of
 * two runs' losses and checkpoints, bit for bit or within a tolerance. Header-only. */
#ifndef NAC_TESTS_DIST_UTIL_H
#define NAC_TESTS_DIST_UTIL_H

#include "tests/testutil.h"

#include <dirent.h>

#include "app/app.h"
#include "app/config.h"
#include "dist/comm.h"
#include "io/safetensors.h"
#include "nac/pretrain.h"

#define DU_MAXLOG 64
typedef struct du_log {
    double loss[DU_MAXLOG];
    int n;
    int64_t stop_at, done; /* interrupt once stop_at steps are done (0: never) */
} du_log;

static nac_status du_on_log(void *ctx, const char *json) {
    du_log *b = ctx;
    const char *p = strstr(json, "\"loss\":");
    if (strstr(json, "\"kind\":\"train\"") && p && b->n < DU_MAXLOG) b->loss[b->n++] = atof(p + 7);
    return NAC_OK;
}
static void du_on_progress(void *ctx, int64_t done, int64_t total, const char *extra) {
    (void)total, (void)extra;
    ((du_log *)ctx)->done = done;
}
static int du_on_interrupted(void *ctx) {
    du_log *b = ctx;
    return b->stop_at > 0 && b->done >= b->stop_at;
}
static inline nac_loop_hooks du_hooks(du_log *b) {
    return (nac_loop_hooks){b, du_on_log, du_on_progress, du_on_interrupted};
}

/* 64 synthetic images, K = 16 (4 steps an epoch), 2 epochs, a step per metrics line, one
 * thread; arch "mlp" has no batch norm (per-rank statistics then change nothing). */
static inline void du_config(nac_pretrain_config *c, const char *objective, const char *arch) {
    nac_pretrain_defaults(c);
    strcpy(c->dataset, "synthetic");
    c->synthetic_n = 64;
    snprintf(c->objective, sizeof c->objective, "%s", objective);
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    c->width_mult = 1.0 / 16;
    c->proj_dim = 16;
    c->batch = 16;
    c->epochs = 2;
    c->warmup_epochs = 1;
    c->optim[0] = 0;
    strcpy(c->optim, "sgd");
    c->lr = 0.5;
    c->queue = 64;
    c->workers = 1;
    c->threads = 1;
    c->log_every = 1;
    c->ckpt_every = 1;
    c->ckpt_minutes = 0;
    c->stats_every = 100;
    c->stats_subset = 16;
    c->knn_every = 0;
    c->crop_min = 0.5;
}

/* A fresh folder (tu_mkdtemp) the caller frees. */
static inline char *du_tmpdir(void) {
    char *d = malloc(64);
    assert_non_null(d);
    assert_int_equal(tu_mkdtemp(d, 64, "nac_dist"), 0);
    return d;
}

/* Every tensor of dir_a/file equals dir_b's: bit for bit (tol 0) or within rtol. */
static inline void du_same_checkpoint(const char *dir_a, const char *dir_b, const char *file,
                                      double rtol, const char *what) {
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/%s", dir_a, file);
    snprintf(pb, sizeof pb, "%s/%s", dir_b, file);
    nac_st_file *a, *b;
    TU_OK(nac_st_load(pa, &a));
    TU_OK(nac_st_load(pb, &b));
    assert_int_equal(a->ntensors, b->ntensors);
    for (int i = 0; i < a->ntensors; i++) {
        const nac_st_tensor *ta = &a->tensors[i], *tb = nac_st_find(b, ta->name);
        if (!tb) fail_msg("%s: %s missing in %s", what, ta->name, pb);
        int64_t n = nac_st_numel(ta);
        assert_int_equal(n, nac_st_numel(tb));
        float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
        assert_non_null(x);
        assert_non_null(y);
        TU_OK(nac_st_read_f32(a, ta->name, x, n));
        TU_OK(nac_st_read_f32(b, ta->name, y, n));
        char name[300];
        snprintf(name, sizeof name, "%s: %s", what, ta->name);
        if (rtol == 0) {
            for (int64_t j = 0; j < n; j++)
                if (memcmp(&x[j], &y[j], sizeof *x))
                    fail_msg("%s: element %lld: %.9g != %.9g", name, (long long)j, (double)x[j],
                             (double)y[j]);
        } else {
            tu_close_f(x, y, n, rtol, rtol, name);
        }
        free(x);
        free(y);
    }
    nac_st_free(a);
    nac_st_free(b);
}

/* Losses equal (rtol 0: bit for bit). */
static inline void du_same_losses(const du_log *a, const du_log *b, double rtol, const char *what) {
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++)
        if (rtol == 0 ? a->loss[i] != b->loss[i]
                      : !(fabs(a->loss[i] - b->loss[i]) <= rtol * (1 + fabs(b->loss[i]))))
            fail_msg("%s: step %d: loss %.9g vs %.9g", what, i + 1, a->loss[i], b->loss[i]);
}

/* Runs that may differ only by rounding, measured against the reference run's own
 * sensitivity to it: s is within noise of a if |s - a| <= k |b - a| + floor |a|, where b
 * is a re-run of a with another summation order (another thread count). Losses step by
 * step; false (with the step in *why) when one is not. */
static inline bool du_losses_within_noise(const du_log *s, const du_log *a, const du_log *b,
                                          double k, double floor, char *why, size_t n) {
    assert_int_equal(s->n, a->n);
    assert_int_equal(b->n, a->n);
    for (int i = 0; i < a->n; i++) {
        double d = fabs(s->loss[i] - a->loss[i]), noise = fabs(b->loss[i] - a->loss[i]);
        if (!(d <= k * noise + floor * fabs(a->loss[i]))) {
            snprintf(why, n, "step %d: loss %.9g vs %.9g (re-run %.9g)", i + 1, s->loss[i],
                     a->loss[i], b->loss[i]);
            return false;
        }
    }
    return true;
}

/* The same for every tensor of a checkpoint, by the largest difference in each tensor. */
static inline void du_checkpoint_within_noise(const char *dir_s, const char *dir_a,
                                              const char *dir_b, const char *file, double k,
                                              double floor, const char *what) {
    const char *dirs[3] = {dir_s, dir_a, dir_b};
    nac_st_file *f[3];
    for (int i = 0; i < 3; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dirs[i], file);
        TU_OK(nac_st_load(p, &f[i]));
    }
    assert_int_equal(f[0]->ntensors, f[1]->ntensors);
    for (int t = 0; t < f[1]->ntensors; t++) {
        const char *name = f[1]->tensors[t].name;
        int64_t n = nac_st_numel(&f[1]->tensors[t]);
        float *v[3];
        for (int i = 0; i < 3; i++) {
            if (!nac_st_find(f[i], name)) fail_msg("%s: %s missing in %s", what, name, dirs[i]);
            v[i] = malloc((size_t)n * sizeof *v[i]);
            assert_non_null(v[i]);
            TU_OK(nac_st_read_f32(f[i], name, v[i], n));
        }
        double ds = 0, db = 0, ma = 0;
        for (int64_t j = 0; j < n; j++) {
            ds = fmax(ds, fabs((double)v[0][j] - v[1][j]));
            db = fmax(db, fabs((double)v[2][j] - v[1][j]));
            ma = fmax(ma, fabs((double)v[1][j]));
        }
        if (!(ds <= k * db + floor * ma))
            fail_msg("%s: %s: largest difference %.3g, re-run's %.3g, largest value %.3g", what,
                     name, ds, db, ma);
        for (int i = 0; i < 3; i++) free(v[i]);
    }
    for (int i = 0; i < 3; i++) nac_st_free(f[i]);
}

/* Under mpirun: the world communicator, which must have two ranks (-1 otherwise, for a
 * CMocka group setup), and one folder for both ranks (rank 0's, broadcast). */
static inline int du_world_setup(nac_comm_t **world, const char *test) {
    if (nac_comm_world(world) != NAC_OK) return -1;
    if (nac_comm_size(*world) == 2) return 0;
    fprintf(stderr, "%s: run it under mpirun -np 2 (got %d ranks)\n", test, nac_comm_size(*world));
    return -1;
}
static inline void du_shared_dir(nac_comm_t *world, char dir[64]) {
    memset(dir, 0, 64);
    if (nac_comm_rank(world) == 0) {
        char *d = du_tmpdir();
        snprintf(dir, 64, "%s", d);
        free(d);
    }
    TU_OK(nac_comm_broadcast(world, dir, 64, 0));
}

/* A command run by both ranks (the mpirun path of `nac pretrain`, `nac vae`): rank 0
 * writes dir/cfg.json from fmt (one %s: the runs folder dir/runs), both run
 * `nac NAME -c dir/cfg.json`, and a rank's failure fails the test. */
static inline void du_command_on_ranks(nac_comm_t *world, const nac_command *cmd, const char *dir,
                                       const char *fmt) {
    char cfg[128], runs[128];
    snprintf(cfg, sizeof cfg, "%s/cfg.json", dir);
    snprintf(runs, sizeof runs, "%s/runs", dir);
    if (nac_comm_rank(world) == 0) {
        FILE *f = fopen(cfg, "w");
        assert_non_null(f);
        fprintf(f, fmt, runs);
        assert_int_equal(fclose(f), 0);
    }
    TU_OK(nac_comm_barrier(world));
    char *argv[] = {(char *)cmd->name, "-c", cfg, NULL};
    nac_status s = cmd->run(3, argv);
    TU_OK(nac_comm_barrier(world));
    if (s != NAC_OK) fail_msg("rank %d: %s", nac_comm_rank(world), nac_last_error());
}

/* Entries of a folder (not . or ..). */
static inline int du_entries(const char *dir) {
    int n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Occurrences of needle in a text file. */
static inline int du_count(const char *path, const char *needle) {
    char *text;
    size_t n;
    TU_OK(nac_read_text_file(path, &text, &n));
    int k = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++) k++;
    free(text);
    return k;
}

#endif
