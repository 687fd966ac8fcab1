/* The pretraining loop end to end on a tiny model and synthetic data: it lowers the loss,
 * writes checkpoints and the encoder file, and an interrupted run resumed from its
 * checkpoint reproduces the uninterrupted run's losses exactly (same data order,
 * augmentations and channel noise). Also: code statistics on hand-made codes. */
#include "tests/testutil.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nac/pretrain.h"
#include "io/safetensors.h"

#define MAXLOG 256
typedef struct logbook {
    double loss[MAXLOG];
    int64_t step[MAXLOG];
    int n;
    int distinct_first, distinct_last;
    int64_t stop_at;   /* interrupt once this many steps are done (0: never) */
    int64_t done;
    int knn_lines;     /* kNN monitor lines, and the last one's top-1 */
    double knn_top1;
} logbook;

static nac_status on_log(void *ctx, const char *json) {
    logbook *b = ctx;
    const char *p = strstr(json, "\"loss\":");
    if (strstr(json, "\"kind\":\"train\"") && p && b->n < MAXLOG) {
        b->loss[b->n] = atof(p + 7);
        b->step[b->n] = atoll(strstr(json, "\"step\":") + 7);
        b->n++;
    }
    const char *k = strstr(json, "\"top1\":");
    if (strstr(json, "\"kind\":\"knn\"") && k) {
        b->knn_lines++;
        b->knn_top1 = atof(k + 7);
    }
    const char *d = strstr(json, "\"distinct_codes\":");
    if (d) {
        int v = atoi(d + 17);
        if (b->distinct_first < 0) b->distinct_first = v;
        b->distinct_last = v;
    }
    return NAC_OK;
}

static void on_progress(void *ctx, int64_t done, int64_t total, const char *extra) {
    (void)total;
    (void)extra;
    ((logbook *)ctx)->done = done;
}

static int on_interrupted(void *ctx) {
    logbook *b = ctx;
    return b->stop_at > 0 && b->done >= b->stop_at;
}

static void tiny_config(nac_pretrain_config *c, const char *objective) {
    nac_pretrain_defaults(c);
    strcpy(c->dataset, "synthetic");
    c->synthetic_n = 96;
    snprintf(c->objective, sizeof c->objective, "%s", objective);
    c->width_mult = 1.0 / 16;
    c->batch = 16;
    c->epochs = 3;
    c->warmup_epochs = 1;
    c->lr = 0.5;
    c->queue = 64;
    c->workers = 1;
    c->threads = 2;
    c->log_every = 1;
    c->ckpt_every = 1;
    c->stats_subset = 48;
    c->crop_min = 0.5;
    c->knn_bank = 8;    /* 8 training images a class as the bank, */
    c->knn_queries = 3; /* 3 fresh synthetic images a class as queries */
}

static char *tmpdir(void) {
    char *d = strdup("/tmp/nac_pretrain_XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void run(const nac_pretrain_config *c, const char *dir, bool resume, logbook *b,
                nac_status want) {
    nac_loop_hooks h = {b, on_log, on_progress, on_interrupted};
    nac_pretrain_result r;
    nac_status s = nac_pretrain_run(c, dir, "{\"test\":true}", resume, &h, &r);
    if (s != want) fail_msg("pretrain returned %s: %s", nac_status_name(s), nac_last_error());
}

static void check_resume(const char *objective) {
    nac_pretrain_config c;
    tiny_config(&c, objective);
    char *d1 = tmpdir(), *d2 = tmpdir();
    logbook full = {.distinct_first = -1}, part = {.distinct_first = -1};
    run(&c, d1, false, &full, NAC_OK);
    assert_int_equal(full.n, 18); /* 96/16 = 6 steps a epoch, 3 epochs */
    part.stop_at = 8;             /* interrupted mid-epoch 2 */
    run(&c, d2, false, &part, NAC_ERR_INTERRUPTED);
    assert_int_equal(part.n, 8);
    part.stop_at = 0;
    run(&c, d2, true, &part, NAC_OK);
    assert_int_equal(part.n, 18);
    for (int i = 0; i < 18; i++) {
        assert_int_equal(part.step[i], full.step[i]);
        if (part.loss[i] != full.loss[i])
            fail_msg("%s: step %lld: resumed loss %.9g != uninterrupted %.9g", objective,
                     (long long)full.step[i], part.loss[i], full.loss[i]);
    }
    /* the encoder file loads and holds torchvision names */
    char path[512];
    snprintf(path, sizeof path, "%s/encoder.safetensors", d1);
    nac_st_file *f;
    TU_OK(nac_st_load(path, &f));
    assert_non_null(nac_st_find(f, "layer4.1.bn2.running_var"));
    assert_non_null(nac_st_find(f, "g.2.weight"));
    assert_string_equal(nac_st_meta(f, "arch"), "resnet18");
    nac_st_free(f);
    free(d1);
    free(d2);
}

static void test_nac_resume_exact(void **s) { (void)s; check_resume("nac"); }
static void test_mocov2_resume_exact(void **s) { (void)s; check_resume("mocov2"); }

static void test_nac_learns(void **state) {
    (void)state;
    nac_pretrain_config c;
    tiny_config(&c, "nac");
    c.epochs = 8;
    c.synthetic_n = 128;
    c.batch = 32;
    c.stats_subset = 128;
    char *d = tmpdir();
    logbook b = {.distinct_first = -1};
    run(&c, d, false, &b, NAC_OK);
    /* the kNN monitor: before the first step and after every epoch, accuracies in [0, 1] */
    assert_int_equal(b.knn_lines, 1 + 8);
    assert_true(b.knn_top1 >= 0 && b.knn_top1 <= 1);
    double first = (b.loss[0] + b.loss[1] + b.loss[2] + b.loss[3]) / 4;
    double last = (b.loss[b.n - 1] + b.loss[b.n - 2] + b.loss[b.n - 3] + b.loss[b.n - 4]) / 4;
    printf("NAC tiny run: loss %.4f -> %.4f, distinct codes %d -> %d of 128\n", first, last,
           b.distinct_first, b.distinct_last);
    assert_true(last < first);
    assert_true(b.distinct_last > b.distinct_first);
    free(d);
}

/* nac bench's measurement: a step's rate, memory and work. The network's FLOPs scale with
 * the batch K; the objective's 2K x 2K similarity products with K^2, so a step at 2K
 * does a little more than twice the work of one at K. */
static void test_bench(void **state) {
    (void)state;
    nac_pretrain_config c;
    tiny_config(&c, "nac");
    c.batch = 4;
    c.warmup_epochs = 0;
    nac_bench_result r1, r2;
    TU_OK(nac_pretrain_bench(&c, 3, 16, 1, 2, &r1));
    c.batch = 8;
    TU_OK(nac_pretrain_bench(&c, 3, 16, 1, 2, &r2));
    assert_true(r1.images_per_s > 0 && r1.step_s > 0);
    assert_true(r1.backend_peak_mb > 0 && r1.backend_peak_mb <= r1.peak_rss_mb);
    assert_true(r2.backend_peak_mb > r1.backend_peak_mb);
    assert_true(r1.params > 0 && r1.params == r2.params);
    assert_true(r1.flops_per_step > 0);
    double quad = r2.flops_per_step - 2.0 * r1.flops_per_step;
    assert_true(quad > 0 && quad < 0.01 * r2.flops_per_step);
}

static void test_bad_config(void **state) {
    (void)state;
    nac_pretrain_config c;
    tiny_config(&c, "nac");
    c.batch = 1000; /* larger than the 96 images */
    char *d = tmpdir();
    logbook b = {.distinct_first = -1};
    run(&c, d, false, &b, NAC_ERR_CONFIG);
    assert_non_null(strstr(nac_last_error(), "train.batch"));
    tiny_config(&c, "nac_mq");
    c.queue = 16; /* below two batches of codes */
    run(&c, d, false, &b, NAC_ERR_CONFIG);
    assert_non_null(strstr(nac_last_error(), "method.queue"));
    /* the library's callers are not the config schema: a zero cadence is refused, not a
       division by zero */
    tiny_config(&c, "nac");
    c.ckpt_every = 0;
    run(&c, d, false, &b, NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "ckpt_every 0"));
    free(d);
}

static void test_code_stats(void **state) {
    (void)state;
    /* four codes of 3 bits: +++, ++-, +++, --- */
    float o[12] = {1, 1, 1, 1, 2, -1, 0.5f, 3, 2, -1, -2, -3};
    nac_code_stats cs;
    nac_code_stats_compute(o, 4, 3, &cs);
    assert_int_equal(cs.distinct, 3);
    /* pairwise distances: 1,0,3,1,2,3 -> mean 10/6 */
    assert_true(fabs(cs.mean_hamming - 10.0 / 6) < 1e-12);
    /* P(1) per bit: 3/4, 3/4, 2/4 -> one balanced bit of three */
    assert_true(fabs(cs.balanced - 1.0 / 3) < 1e-12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_stats),
        cmocka_unit_test(test_bench),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_nac_resume_exact),
        cmocka_unit_test(test_mocov2_resume_exact),
        cmocka_unit_test(test_nac_learns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
