/* The VAE stage's optimiser groups, end to end through nac_vae_train_run: after one Adam
 * step every changed weight moved by about lr * (its group's multiplier) -- Adam's first
 * step is lr * g / (|g| + eps) -- so the new head moves 10x as far as the decoder and the
 * finetuned body, and a frozen body does not move at all. Also: the run evaluates and
 * writes its checkpoint and grids, and resume continues the same run. */
#include "tests/testutil.h"

#include <stdlib.h>
#include <unistd.h>

#include "encoders/encoder.h"
#include "io/safetensors.h"
#include "vae/train.h"
#include "vae/vae.h"

static void tiny(nac_vae_train_config *c) {
    nac_vae_train_defaults(c);
    strcpy(c->dataset, "synthetic");
    c->synthetic_n = 200;
    c->width_mult = 1.0 / 16;
    c->latent = 8;
    c->dec_width = 4;
    c->lr = 1e-3;
    c->head_lr_mult = 10;
    c->epochs = 1;
    c->batch = 16;
    c->max_steps = 1;
    c->is_k = 4;
    c->is_chunk = 4;
    c->eval_batch = 8;
    c->workers = 0;
    c->threads = 2;
    c->seed = 3;
}

/* Largest |after - before| over a parameter, reading `after` from the checkpoint. */
static double max_move(const nac_st_file *f, const nac_param_t *p) {
    int64_t n = nac_tensor_numel(&p->w);
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    TU_OK(nac_st_read_f32(f, p->name, a, n));
    TU_OK(nac_tensor_to_host(&p->w, b));
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    free(a);
    free(b);
    return m;
}

static void one_step(bool freeze, double *body, double *head, double *dec) {
    nac_vae_train_config c;
    tiny(&c);
    c.freeze_body = freeze;
    char dir[] = "/tmp/nac_vae_train_XXXXXX";
    assert_non_null(mkdtemp(dir));
    nac_vae_train_result r;
    TU_OK(nac_vae_train_run(&c, dir, "{}", false, NULL, &r));
    assert_int_equal(r.steps, 1);
    assert_true(isfinite(r.eval.logpx) && r.eval.images == 40);
    char path[300];
    snprintf(path, sizeof path, "%s/vae.safetensors", dir);
    nac_st_file *f;
    TU_OK(nac_st_load(path, &f));
    /* the initial values: the same constructors with the same seeds */
    nac_backend_t *be = tu_backend();
    nac_encoder_config ec;
    nac_encoder_config_defaults(&ec);
    ec.width_mult = (float)c.width_mult;
    ec.seed = (uint64_t)c.seed;
    nac_encoder_t *enc;
    TU_OK(nac_encoder_create(be, &ec, &enc));
    nac_vae_config vc = {.features = nac_encoder_features(enc), .latent = c.latent, .channels = 3,
                         .size = 32, .width = c.dec_width, .blocks = 1,
                         .likelihood = NAC_VAE_LIK_LOGISTIC};
    nac_vae_t *v;
    TU_OK(nac_vae_create(be, &vc, (uint64_t)c.seed + 17, &v));
    *body = max_move(f, nac_encoder_params(enc)->items[0]); /* conv1.weight */
    *head = max_move(f, v->head_w);
    *dec = max_move(f, nac_params_find(&v->params, "decoder.fc.weight"));
    for (const char *png = "reconstructions.png"; png; png = strcmp(png, "samples.png") ? "samples.png" : NULL) {
        snprintf(path, sizeof path, "%s/%s", dir, png);
        assert_int_equal(access(path, R_OK), 0);
    }
    nac_st_free(f);
    nac_vae_free(v);
    nac_encoder_free(enc);
    nac_backend_free(be);
}

static void test_groups_finetune(void **state) {
    (void)state;
    double body, head, dec;
    one_step(false, &body, &head, &dec);
    printf("finetuned: max |dw| body %.3g, head %.3g, decoder %.3g\n", body, head, dec);
    assert_true(fabs(head - 1e-2) < 1e-4);
    assert_true(fabs(dec - 1e-3) < 1e-5);
    assert_true(fabs(body - 1e-3) < 1e-5);
}

static void test_groups_frozen(void **state) {
    (void)state;
    double body, head, dec;
    one_step(true, &body, &head, &dec);
    printf("frozen: max |dw| body %.3g, head %.3g, decoder %.3g\n", body, head, dec);
    assert_true(body == 0.0);
    assert_true(fabs(head - 1e-2) < 1e-4);
    assert_true(fabs(dec - 1e-3) < 1e-5);
}

/* train.precision=bf16 reaches the VAE stage's backend: the result says what ran (bf16 where
 * the CPU has it, else fp32 after the fallback line), and a bf16 run's loss and log p(x) are
 * within bf16's precision of the fp32 run's but not bit-identical. */
static void test_precision(void **state) {
    (void)state;
    nac_vae_train_result r[2];
    for (int i = 0; i < 2; i++) {
        nac_vae_train_config c;
        tiny(&c);
        c.max_steps = 3;
        strcpy(c.precision, i ? "bf16" : "fp32");
        char dir[64];
        assert_int_equal(tu_mkdtemp(dir, sizeof dir, "nac_vae_prec"), 0);
        TU_OK(nac_vae_train_run(&c, dir, "{}", false, NULL, &r[i]));
        assert_int_equal(tu_rm_tree(dir), 0);
    }
    nac_backend_t *be = NULL;
    nac_backend_options o = {.threads = 1, .precision = NAC_PRECISION_BF16};
    TU_OK(nac_backend_create("cpu", &o, &be));
    bool has_bf16 = be->precision == NAC_PRECISION_BF16;
    nac_backend_free(be);
    printf("fp32: loss %.6f logpx %.4f; %s: loss %.6f logpx %.4f\n", r[0].last_loss,
           r[0].eval.logpx, r[1].precision, r[1].last_loss, r[1].eval.logpx);
    assert_string_equal(r[0].precision, "fp32");
    assert_string_equal(r[1].precision, has_bf16 ? "bf16" : "fp32");
    assert_true(isfinite(r[1].last_loss) && isfinite(r[1].eval.logpx));
    assert_true(fabs(r[1].last_loss - r[0].last_loss) <= 0.02 * fabs(r[0].last_loss));
    assert_true(fabs(r[1].eval.logpx - r[0].eval.logpx) <= 0.02 * fabs(r[0].eval.logpx));
    if (has_bf16) assert_true(r[1].last_loss != r[0].last_loss);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_groups_finetune),
        cmocka_unit_test(test_groups_frozen),
        cmocka_unit_test(test_precision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
