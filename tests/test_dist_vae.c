/* The VAE stage and the evaluations on emulated ranks (one process, N threads on the
 * in-process communicator) against one process: training at the same global batch agrees
 * within what per-rank batch norm changes (the decoder always has batch norm) and takes
 * the average, not the sum, of the ranks' gradients; the importance-sampled evaluation
 * split over ranks gives the one-process per-image log p(x) and KL of the same weights; an
 * interrupted two-rank run resumed equals the uninterrupted one and refuses one rank;
 * features split over ranks equal one process's. */
#include "tests/dist_vae_util.h"

#include <pthread.h>

#include "vae/vae.h"

/* Two emulated ranks vs one process at the same global batch: same images, same noise per
 * image, gradients averaged; what differs is batch norm over 8 rows per rank instead of
 * 16 (body and decoder), which moves the -ELBO by about 1e-4 of itself here. */
static void test_two_ranks_vs_one(void **state) {
    (void)state;
    char *one = du_tmpdir(), *two = du_tmpdir();
    nac_vae_train_config c;
    dv_config(&c);
    dv_log a = {0}, b = {0};
    nac_vae_train_result ra, rb;
    TU_OK(dv_run(&c, one, false, &a, &ra));
    c.emulate_ranks = 2;
    TU_OK(dv_run(&c, two, false, &b, &rb));
    assert_int_equal(a.n, 4);
    dv_same_losses(&b, &a, 2e-3, "two emulated ranks vs one process");
    assert_int_equal(rb.eval.images, 40);
    assert_int_equal(rb.steps, 4);
    /* rank 0 alone wrote the checkpoint, which records the ranks */
    char path[600];
    snprintf(path, sizeof path, "%s/vae.safetensors", two);
    nac_st_file *f;
    TU_OK(nac_st_load(path, &f));
    assert_string_equal(nac_st_meta(f, "ranks"), "2");
    nac_st_free(f);
    tu_rm_tree(one);
    tu_rm_tree(two);
    free(one);
    free(two);
}

/* Largest relative difference of the -ELBO between two runs, step by step. */
static double max_rel_diff(const dv_log *a, const dv_log *b) {
    assert_int_equal(a->n, b->n);
    double m = 0;
    for (int i = 0; i < a->n; i++)
        m = fmax(m, fabs(a->nelbo[i] - b->nelbo[i]) / fabs(b->nelbo[i]));
    return m;
}

/* dist.sync_bn: with the body's and the decoder's batch norm over both ranks' rows, two
 * emulated ranks are the one-process computation up to rounding: far closer to it than
 * per-rank batch norm, which is what the flag changes. */
static void test_sync_bn_two_ranks_vs_one(void **state) {
    (void)state;
    char *dir[3] = {du_tmpdir(), du_tmpdir(), du_tmpdir()};
    nac_vae_train_config c;
    dv_config(&c);
    dv_log log[3];
    memset(log, 0, sizeof log);
    nac_vae_train_result r;
    TU_OK(dv_run(&c, dir[0], false, &log[0], &r));
    c.emulate_ranks = 2;
    TU_OK(dv_run(&c, dir[1], false, &log[1], &r));
    c.sync_bn = true;
    TU_OK(dv_run(&c, dir[2], false, &log[2], &r));
    double per_rank = max_rel_diff(&log[1], &log[0]), synced = max_rel_diff(&log[2], &log[0]);
    printf("-elbo vs one process, largest relative difference: per-rank BN %.3g, sync BN %.3g\n",
           per_rank, synced);
    assert_true(synced <= 5e-5); /* rounding: sums in another order (1.1e-5 here) */
    assert_true(per_rank > 10 * synced);
    for (int i = 0; i < 3; i++) {
        tu_rm_tree(dir[i]);
        free(dir[i]);
    }
}

/* ||m|| and m . m' over the head's and the decoder's Adam first moments after one step. */
static void first_moments(const char *dir_a, const char *dir_b, double *na, double *nb, double *dot) {
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/vae.safetensors", dir_a);
    snprintf(pb, sizeof pb, "%s/vae.safetensors", dir_b);
    nac_st_file *a, *b;
    TU_OK(nac_st_load(pa, &a));
    TU_OK(nac_st_load(pb, &b));
    *na = *nb = *dot = 0;
    for (int i = 0; i < a->ntensors; i++) {
        const char *name = a->tensors[i].name;
        size_t l = strlen(name);
        if (strncmp(name, "optim.", 6) || l < 3 || strcmp(name + l - 3, ".s1") ||
            (strncmp(name + 6, "head.", 5) && strncmp(name + 6, "decoder.", 8)))
            continue;
        int64_t n = nac_st_numel(&a->tensors[i]);
        float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
        TU_OK(nac_st_read_f32(a, name, x, n));
        TU_OK(nac_st_read_f32(b, name, y, n));
        for (int64_t j = 0; j < n; j++) {
            *na += (double)x[j] * x[j];
            *nb += (double)y[j] * y[j];
            *dot += (double)x[j] * y[j];
        }
        free(x);
        free(y);
    }
    nac_st_free(a);
    nac_st_free(b);
    *na = sqrt(*na);
    *nb = sqrt(*nb);
}

/* After one step Adam's first moment is (1 - beta1) g: the two-rank gradient must have
 * the one-process gradient's size and direction (the mean of the global batch's loss).
 * Summing the ranks' gradients without dividing would double it; skipping the all-reduce
 * leaves the ranks with different weights, which the run reports before its evaluation. */
static void test_gradient_is_the_global_mean(void **state) {
    (void)state;
    char *one = du_tmpdir(), *two = du_tmpdir();
    nac_vae_train_config c;
    dv_config(&c);
    c.max_steps = 1;
    dv_log a = {0}, b = {0};
    nac_vae_train_result r;
    TU_OK(dv_run(&c, one, false, &a, &r));
    c.emulate_ranks = 2;
    TU_OK(dv_run(&c, two, false, &b, &r));
    double n1, n2, dot;
    first_moments(one, two, &n1, &n2, &dot);
    assert_true(n1 > 0);
    double ratio = n2 / n1, cosine = dot / (n1 * n2);
    if (!(ratio > 0.9 && ratio < 1.1 && cosine > 0.95))
        fail_msg("two-rank gradient vs one process: norm ratio %.4f, cosine %.4f", ratio, cosine);
    tu_rm_tree(one);
    tu_rm_tree(two);
    free(one);
    free(two);
}

/* A finished run may be evaluated again with any number of ranks: trained on 1, 2 and 3
 * ranks, evaluated again on 3, 1 and 2 (40 test images: slices of 14, 13 and 13 on three
 * ranks), the gathered per-image log p(x) and KL equal the first evaluation's. */
static void test_evaluation_split(void **state) {
    (void)state;
    char *dir = du_tmpdir();
    char keep[600];
    snprintf(keep, sizeof keep, "%s/keep", dir);
    assert_int_equal(mkdir(keep, 0777), 0);
    const int train_on[3] = {1, 2, 3}, eval_on[3] = {3, 1, 2};
    for (int k = 0; k < 3; k++) {
        nac_vae_train_config c;
        dv_config(&c);
        c.batch = 24; /* splits over 1, 2 and 3 ranks */
        c.emulate_ranks = train_on[k];
        dv_log b = {0};
        nac_vae_train_result r1, r2;
        TU_OK(dv_run(&c, dir, false, &b, &r1));
        char cmd[1400], what[64];
        snprintf(cmd, sizeof cmd, "cp %s/logpx.npy %s/kl.npy %s/", dir, dir, keep);
        assert_int_equal(system(cmd), 0);
        c.emulate_ranks = eval_on[k]; /* evaluation only: the run is finished */
        TU_OK(dv_run(&c, dir, true, &b, &r2));
        assert_int_equal(r2.steps, 0);
        snprintf(what, sizeof what, "trained on %d ranks, evaluated on %d", train_on[k], eval_on[k]);
        dv_same_images(dir, keep, 1e-5, what);
        assert_true(fabs(r1.eval.logpx - r2.eval.logpx) <= 1e-5 * fabs(r1.eval.logpx));
        assert_true(fabs(r1.eval.kl - r2.eval.kl) <= 1e-5 * fabs(r1.eval.kl) + 1e-9);
        assert_int_equal(r1.eval.active_units, r2.eval.active_units);
        assert_int_equal(r2.eval.images, 40);
        snprintf(cmd, sizeof cmd, "rm -f %s/vae.safetensors", dir);
        assert_int_equal(system(cmd), 0);
    }
    tu_rm_tree(dir);
    free(dir);
}

/* An interrupted two-rank run resumed with two ranks equals the uninterrupted one bit
 * for bit; resuming it with one rank is refused while steps remain. */
static void test_resume(void **state) {
    (void)state;
    char *full = du_tmpdir(), *part = du_tmpdir();
    nac_vae_train_config c;
    dv_config(&c);
    c.emulate_ranks = 2;
    dv_log f = {0}, p = {.stop_at = 2};
    nac_vae_train_result r;
    TU_OK(dv_run(&c, full, false, &f, &r));
    assert_int_equal(dv_run(&c, part, false, &p, &r), NAC_ERR_INTERRUPTED);
    c.emulate_ranks = 1;
    dv_log q = {0};
    assert_int_equal(dv_run(&c, part, true, &q, &r), NAC_ERR_CONFIG);
    assert_non_null(strstr(nac_last_error(), "written by 2 ranks; this run has 1"));
    c.emulate_ranks = 2;
    p.stop_at = 0;
    TU_OK(dv_run(&c, part, true, &p, &r));
    dv_same_run(&p, part, &f, full, "resumed on two ranks");
    tu_rm_tree(full);
    tu_rm_tree(part);
    free(full);
    free(part);
}

static void test_batch_must_split(void **state) {
    (void)state;
    nac_vae_train_config c;
    dv_config(&c);
    c.emulate_ranks = 3;
    assert_int_equal(nac_vae_config_check(&c), NAC_ERR_CONFIG);
    assert_non_null(strstr(nac_last_error(), "does not split into 3 equal slices"));
    c.emulate_ranks = 0;
    c.mpi_ranks = 5;
    assert_int_equal(nac_vae_config_check(&c), NAC_ERR_CONFIG);
    assert_non_null(strstr(nac_last_error(), "5 MPI ranks"));
}

/* Features split over 3 emulated ranks (37 images: slices of 13, 12, 12) equal one
 * process's, through an encoder and as raw pixels. */
static void test_features_split(void **state) {
    (void)state;
    for (int pixels = 0; pixels < 2; pixels++) {
        dv_feat one = {.n = 37, .pixels = pixels}, three = one;
        TU_OK(dv_features(&one, NULL));
        TU_OK(nac_comm_run_emulated(3, dv_features, &three));
        assert_int_equal(one.dim, three.dim);
        tu_close_f(three.out, one.out, 37 * one.dim, 1e-5, 1e-6, pixels ? "pixels on 3 ranks" : "features on 3 ranks");
        free(one.out);
        free(three.out);
    }
}

/* The row gather: rows of any size back in order on every rank, uneven slices included. */
typedef struct gather_job {
    int64_t n;
    int bad; /* rows that differ from the expected, over all ranks */
    pthread_mutex_t mu;
} gather_job;

static nac_status gather_rank(void *arg, nac_comm_t *comm) {
    gather_job *j = arg;
    double *rows = calloc((size_t)(3 * j->n), sizeof *rows);
    if (!rows) return nac_error(NAC_ERR_NOMEM, "out of memory");
    int64_t first, count;
    nac_comm_slice(j->n, nac_comm_rank(comm), nac_comm_size(comm), &first, &count);
    for (int64_t i = first; i < first + count; i++)
        for (int k = 0; k < 3; k++) rows[3 * i + k] = 1000.0 * i + k + 0.5;
    nac_status s = nac_comm_allgather_rows(comm, rows, j->n, 3 * sizeof *rows);
    int bad = 0;
    for (int64_t i = 0; i < 3 * j->n; i++) bad += rows[i] != 1000.0 * (i / 3) + (i % 3) + 0.5;
    pthread_mutex_lock(&j->mu);
    j->bad += bad;
    pthread_mutex_unlock(&j->mu);
    free(rows);
    return s;
}

static void test_allgather_rows(void **state) {
    (void)state;
    for (int64_t n = 0; n <= 7; n++) {
        gather_job j = {.n = n, .mu = PTHREAD_MUTEX_INITIALIZER};
        TU_OK(nac_comm_run_emulated(3, gather_rank, &j));
        assert_int_equal(j.bad, 0);
    }
}

/* A failure of one rank in its slice reaches the others at the next agreement, and the
 * group reports the rank that failed on its own. */
static nac_status fail_on_rank1(void *arg, nac_comm_t *comm) {
    (void)arg;
    nac_status s = nac_comm_rank(comm) == 1 ? nac_error(NAC_ERR_NOMEM, "slice of rank 1: out of memory")
                                            : NAC_OK;
    return nac_comm_agree_status(comm, s);
}

static void test_agree_status(void **state) {
    (void)state;
    assert_int_equal(nac_comm_run_emulated(3, fail_on_rank1, NULL), NAC_ERR_NOMEM);
    assert_non_null(strstr(nac_last_error(), "rank 1: slice of rank 1: out of memory"));
}

/* The reparameterisation noise of a rank's rows is that of the same rows of the global
 * batch: with evaluation-mode batch norm (every row alone), the reconstruction terms of
 * rows [0, 5) and [5, 12) computed apart (eps_row0 0 and 5) add up to the whole batch's. */
static void test_noise_of_global_rows(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    nac_vae_config vc = {.features = 16, .latent = 4, .channels = 1, .size = 8, .width = 4,
                         .blocks = 1, .likelihood = NAC_VAE_LIK_LOGISTIC};
    nac_vae_t *v;
    TU_OK(nac_vae_create(be, &vc, 11, &v));
    nac_vae_set_train(v, false);
    enum { N = 12, K = 5, D = 64 };
    float h[N * 16], x[N * D];
    tu_randn(h, N * 16, 1, 1.0f);
    nac_rng_t r;
    nac_rng_init(&r, 5);
    for (int i = 0; i < N * D; i++) x[i] = (float)nac_rng_below(&r, 256) / 255.0f;
    uint64_t key = nac_rng_key(3, NAC_STREAM_LATENT, 7, 0);
    double rec[3];
    const int first[3] = {0, 0, K}, rows[3] = {N, K, N - K};
    for (int k = 0; k < 3; k++) {
        nac_tensor_t *th = nac_tensor_new2(be, rows[k], 16), *tx = nac_tensor_new2(be, rows[k], D);
        TU_OK(nac_tensor_from_host(th, h + first[k] * 16));
        TU_OK(nac_tensor_from_host(tx, x + first[k] * D));
        v->eps_row0 = first[k];
        nac_vae_stats st;
        TU_OK(nac_vae_forward(v, th, tx, key, 1.0f, &st));
        rec[k] = st.rec * rows[k];
        nac_tensor_free(th);
        nac_tensor_free(tx);
    }
    if (!(fabs(rec[1] + rec[2] - rec[0]) <= 1e-5 * fabs(rec[0])))
        fail_msg("rows apart %.9g + %.9g != whole batch %.9g", rec[1], rec[2], rec[0]);
    nac_vae_free(v);
    nac_backend_free(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_ranks_vs_one),
        cmocka_unit_test(test_sync_bn_two_ranks_vs_one),
        cmocka_unit_test(test_gradient_is_the_global_mean),
        cmocka_unit_test(test_evaluation_split),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_batch_must_split),
        cmocka_unit_test(test_features_split),
        cmocka_unit_test(test_allgather_rows),
        cmocka_unit_test(test_noise_of_global_rows),
        cmocka_unit_test(test_agree_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
