/* The batch loader: identical bytes for 0, 1 and 3 workers; every image once per epoch (or
 * the full batches with drop_last); the view layout; normalisation only; resuming at
 * (epoch, batch) and restarting mid-epoch; bad configs; and the two-view throughput on
 * 32x32 colour images. */
#include <time.h>

#include "data/loader.h"
#include "tests/testutil.h"

typedef struct epoch_out {
    int nbatches;
    float *data; /* every batch's floats, concatenated */
    int *labels;
    int64_t *idx;
    int sizes[64];
    size_t nfloats, nimages;
} epoch_out;

static void run_epoch(nac_loader_t *l, int epoch, int first, epoch_out *o) {
    memset(o, 0, sizeof *o);
    int c, h, w;
    nac_loader_image_shape(l, &c, &h, &w);
    size_t img = (size_t)c * h * w;
    TU_OK(nac_loader_start_epoch(l, epoch, first));
    for (;;) {
        float *batch;
        int *labels, n;
        TU_OK(nac_loader_next(l, &batch, &labels, &n));
        if (n == 0) break;
        assert_true(o->nbatches < 64);
        const int64_t *idx = nac_loader_batch_indices(l);
        assert_non_null(idx);
        size_t nf = 2 * (size_t)n * img;
        o->data = realloc(o->data, (o->nfloats + nf) * sizeof(float));
        o->labels = realloc(o->labels, (o->nimages + n) * sizeof(int));
        o->idx = realloc(o->idx, (o->nimages + n) * sizeof(int64_t));
        memcpy(o->data + o->nfloats, batch, nf * sizeof(float));
        memcpy(o->labels + o->nimages, labels, n * sizeof(int));
        memcpy(o->idx + o->nimages, idx, n * sizeof(int64_t));
        o->nfloats += nf;
        o->nimages += n;
        o->sizes[o->nbatches++] = n;
    }
    float *batch;
    int *labels, n = -1; /* stays at the end */
    TU_OK(nac_loader_next(l, &batch, &labels, &n));
    assert_int_equal(n, 0);
}

static void free_epoch(epoch_out *o) {
    free(o->data);
    free(o->labels);
    free(o->idx);
}

static void base_config(nac_loader_config *cfg, int workers) {
    nac_loader_defaults(cfg);
    cfg->batch = 16;
    cfg->views = 2;
    cfg->drop_last = false;
    cfg->workers = workers;
    cfg->seed = 1234;
}

static void test_determinism_and_coverage(void **state) {
    (void)state;
    nac_dataset_t ds;
    TU_OK(nac_dataset_synthetic(100, 10, 3, 12, 12, 4, &ds));
    const int workers[3] = {0, 1, 3};
    epoch_out ref[2], got[2];
    for (int k = 0; k < 3; k++) {
        nac_loader_config cfg;
        base_config(&cfg, workers[k]);
        nac_loader_t *l;
        TU_OK(nac_loader_create(&ds, &cfg, &l));
        assert_int_equal(nac_loader_batches_per_epoch(l), 7);
        for (int e = 0; e < 2; e++) {
            epoch_out *o = k == 0 ? &ref[e] : &got[e];
            run_epoch(l, e, 0, o);
            assert_int_equal(o->nbatches, 7);
            assert_int_equal(o->sizes[6], 4); /* 100 = 6 * 16 + 4 */
            int seen[100] = {0};
            for (size_t i = 0; i < o->nimages; i++) {
                seen[o->idx[i]]++;
                assert_int_equal(o->labels[i], ds.labels[o->idx[i]]);
            }
            for (int i = 0; i < 100; i++) assert_int_equal(seen[i], 1);
            if (k > 0) {
                if (memcmp(o->data, ref[e].data, o->nfloats * sizeof(float)) != 0)
                    fail_msg("epoch %d: %d workers differ from 0 workers", e, workers[k]);
                assert_memory_equal(o->idx, ref[e].idx, 100 * sizeof(int64_t));
                free_epoch(o);
            }
        }
        nac_loader_free(l);
    }
    /* the order and the views change with the epoch */
    assert_true(memcmp(ref[0].idx, ref[1].idx, 100 * sizeof(int64_t)) != 0);
    /* each batch is view 1 of its images then view 2; the views match nac_loader_views */
    nac_loader_config cfg;
    base_config(&cfg, 0);
    float *views = malloc(2 * 16 * 432 * sizeof(float));
    TU_OK(nac_loader_views(&ds, &cfg, 1, ref[1].idx + 16, 16, views));
    assert_memory_equal(views, ref[1].data + 2 * 16 * 432, 2 * 16 * 432 * sizeof(float));
    assert_true(memcmp(views, views + 16 * 432, 432 * sizeof(float)) != 0);
    free(views);
    free_epoch(&ref[0]);
    free_epoch(&ref[1]);
    nac_dataset_free(&ds);
}

static void test_resume_and_restart(void **state) {
    (void)state;
    nac_dataset_t ds;
    TU_OK(nac_dataset_synthetic(90, 3, 1, 10, 10, 2, &ds));
    nac_loader_config cfg;
    base_config(&cfg, 2);
    cfg.drop_last = true;
    cfg.prefetch = 1;
    nac_loader_t *l;
    TU_OK(nac_loader_create(&ds, &cfg, &l));
    assert_int_equal(nac_loader_batches_per_epoch(l), 5); /* 90 / 16, the last 10 dropped */
    epoch_out full, part;
    run_epoch(l, 3, 0, &full);
    assert_int_equal(full.nimages, 80);
    int seen[90] = {0};
    for (int i = 0; i < 80; i++) assert_int_equal(seen[full.idx[i]]++, 0);
    /* resuming at (3, 2) gives batches 2.. of epoch 3 */
    run_epoch(l, 3, 2, &part);
    assert_int_equal(part.nbatches, 3);
    size_t off = 2 * 2 * 16 * 100;
    assert_memory_equal(part.data, full.data + off, part.nfloats * sizeof(float));
    free_epoch(&part);
    /* restart while workers are busy, from a fresh loader too */
    float *batch;
    int *labels, n;
    TU_OK(nac_loader_start_epoch(l, 0, 0));
    TU_OK(nac_loader_next(l, &batch, &labels, &n));
    TU_OK(nac_loader_start_epoch(l, 3, 4));
    TU_OK(nac_loader_next(l, &batch, &labels, &n));
    assert_int_equal(n, 16);
    assert_memory_equal(batch, full.data + 4 * 2 * 16 * 100, 2 * 16 * 100 * sizeof(float));
    TU_OK(nac_loader_start_epoch(l, 3, 5)); /* at the end: nothing left */
    TU_OK(nac_loader_next(l, &batch, &labels, &n));
    assert_int_equal(n, 0);
    nac_loader_free(l);
    TU_OK(nac_loader_create(&ds, &cfg, &l));
    run_epoch(l, 3, 1, &part);
    assert_memory_equal(part.data, full.data + 2 * 16 * 100, part.nfloats * sizeof(float));
    free_epoch(&part);
    free_epoch(&full);
    nac_loader_free(l);
    nac_dataset_free(&ds);
}

static void test_plain_normalised(void **state) {
    (void)state;
    nac_dataset_t ds;
    TU_OK(nac_dataset_synthetic(20, 4, 3, 8, 8, 9, &ds));
    nac_loader_config cfg;
    base_config(&cfg, 1);
    cfg.views = 1;
    cfg.shuffle = false;
    cfg.batch = 8;
    nac_augment_none(&cfg.augment);
    nac_loader_t *l;
    TU_OK(nac_loader_create(&ds, &cfg, &l));
    TU_OK(nac_loader_start_epoch(l, 0, 0));
    int start = 0;
    for (;;) {
        float *batch;
        int *labels, n;
        TU_OK(nac_loader_next(l, &batch, &labels, &n));
        if (!n) break;
        for (int i = 0; i < n; i++) {
            assert_int_equal(nac_loader_batch_indices(l)[i], start + i); /* no shuffle */
            const uint8_t *src = nac_dataset_image(&ds, start + i);
            for (int j = 0; j < 192; j++) {
                float want =
                    ((float)src[j] / 255.f - nac_cifar10_mean[j / 64]) / nac_cifar10_std[j / 64];
                assert_true(batch[i * 192 + j] == want);
            }
        }
        start += n;
    }
    assert_int_equal(start, 20);
    nac_loader_free(l);
    nac_dataset_free(&ds);
}

static void test_bad_configs(void **state) {
    (void)state;
    nac_dataset_t ds;
    TU_OK(nac_dataset_synthetic(20, 4, 3, 8, 8, 9, &ds));
    nac_loader_config cfg;
    nac_loader_t *l;
    base_config(&cfg, 1);
    cfg.views = 3;
    assert_int_equal(nac_loader_create(&ds, &cfg, &l), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "views 3"));
    assert_null(l);
    base_config(&cfg, 1);
    cfg.batch = 32;
    cfg.drop_last = true;
    assert_int_equal(nac_loader_create(&ds, &cfg, &l), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "fewer than one batch of 32"));
    base_config(&cfg, 1);
    cfg.augment.gray_p = -1;
    assert_int_equal(nac_loader_create(&ds, &cfg, &l), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "gray_p"));
    base_config(&cfg, 2);
    TU_OK(nac_loader_create(&ds, &cfg, &l));
    float *batch;
    int *labels, n;
    assert_int_equal(nac_loader_next(l, &batch, &labels, &n), NAC_ERR_INVALID);
    assert_int_equal(nac_loader_start_epoch(l, 0, 3), NAC_ERR_INVALID); /* 2 batches */
    assert_int_equal(nac_loader_start_epoch(l, -1, 0), NAC_ERR_INVALID);
    nac_loader_free(l);
    nac_loader_free(NULL);
    nac_dataset_free(&ds);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The two-view SimCLR pipeline over two epochs with 2 workers: every image arrives; the
 * images a second are printed for information only (timing belongs in benchmarks:
 * `nac data synthetic --bench`). */
static void test_throughput(void **state) {
    (void)state;
    nac_dataset_t ds;
    TU_OK(nac_dataset_synthetic(1024, 10, 3, 32, 32, 1, &ds));
    nac_loader_config cfg;
    nac_loader_defaults(&cfg);
    cfg.batch = 256;
    cfg.workers = 2;
    nac_loader_t *l;
    TU_OK(nac_loader_create(&ds, &cfg, &l));
    double t0 = now_s();
    int images = 0;
    for (int e = 0; e < 2; e++) {
        TU_OK(nac_loader_start_epoch(l, e, 0));
        float *batch;
        int *labels, n;
        do {
            TU_OK(nac_loader_next(l, &batch, &labels, &n));
            images += n;
        } while (n);
    }
    double dt = now_s() - t0;
    printf("loader: %d images (two 3x32x32 views each) in %.3f s: %.0f images/s, 2 workers\n",
           images, dt, images / dt);
    assert_int_equal(images, 2048);
    nac_loader_free(l);
    nac_dataset_free(&ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_determinism_and_coverage),
        cmocka_unit_test(test_resume_and_restart),
        cmocka_unit_test(test_plain_normalised),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
