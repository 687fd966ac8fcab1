/* Parameter-list checkpoints: bit-exact save -> load (4-D convolution weights in OIHW,
 * optimiser state, extra tensors and metadata), strict and prefixed loading, and the
 * messages for missing or mis-shaped parameters, which must leave the model unchanged. */
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "testutil.h"

static char g_dir[64];
static nac_backend_t *g_be;

static int setup(void **state) {
    (void)state;
    if (tu_mkdtemp(g_dir, sizeof g_dir, "nac_ckpt_test")) return -1;
    g_be = tu_backend();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tu_rm_tree(g_dir);
    nac_backend_free(g_be);
    return 0;
}

static const char *tpath(const char *name) { return tu_path(g_dir, name); }

typedef struct pspec {
    const char *name;
    int ndim;
    int64_t dim[4];
    unsigned flags;
} pspec;

/* A small model: a conv stem (OIHW), batch norm with buffers, a linear layer. */
static const pspec model[] = {
    {"conv1.weight", 4, {4, 3, 3, 3}, 0},
    {"bn1.weight", 1, {4}, NAC_PARAM_BN | NAC_PARAM_NO_WD},
    {"bn1.bias", 1, {4}, NAC_PARAM_BN | NAC_PARAM_NO_WD},
    {"bn1.running_mean", 1, {4}, NAC_PARAM_BUFFER},
    {"bn1.running_var", 1, {4}, NAC_PARAM_BUFFER},
    {"layer1.0.conv1.weight", 4, {8, 4, 3, 3}, 0},
    {"fc.weight", 2, {10, 8}, 0},
    {"fc.bias", 1, {10}, NAC_PARAM_BIAS},
};
#define NMODEL ((int)(sizeof model / sizeof *model))

static void build(nac_params_t *ps, const pspec *spec, int n) {
    nac_params_init(ps);
    for (int i = 0; i < n; i++)
        assert_non_null(nac_params_add(ps, g_be, spec[i].name, spec[i].ndim, spec[i].dim, spec[i].flags));
}

static float *host(const nac_tensor_t *t) {
    float *x = malloc((size_t)nac_tensor_numel(t) * sizeof *x);
    TU_OK(nac_tensor_to_host(t, x));
    return x;
}

static void set_random(nac_tensor_t *t, uint64_t seed) {
    TU_OK(nac_tensor_alloc(t));
    int64_t n = nac_tensor_numel(t);
    float *x = malloc((size_t)n * sizeof *x);
    tu_randn(x, n, seed, 1.0f);
    TU_OK(nac_tensor_from_host(t, x));
    free(x);
}

static void set_all(nac_params_t *ps, float v) {
    for (int i = 0; i < ps->n; i++) TU_OK(nac_tensor_fill(&ps->items[i]->w, v));
}

/* Every value of ps equals v (nothing was loaded). */
static void assert_all(const nac_params_t *ps, float v) {
    for (int i = 0; i < ps->n; i++) {
        float *x = host(&ps->items[i]->w);
        for (int64_t k = 0; k < nac_tensor_numel(&ps->items[i]->w); k++)
            if (x[k] != v) fail_msg("%s[%lld] = %g, want %g", ps->items[i]->name, (long long)k, x[k], v);
        free(x);
    }
}

static void assert_same_tensor(const nac_tensor_t *a, const nac_tensor_t *b, const char *what) {
    assert_true(nac_tensor_same_shape(a, b));
    float *x = host(a), *y = host(b);
    if (memcmp(x, y, (size_t)nac_tensor_numel(a) * sizeof *x))
        fail_msg("%s differs after the round trip", what);
    free(x);
    free(y);
}

/* The source model: random values, momentum for the trainable tensors, Adam's v for fc. */
static void build_source(nac_params_t *ps) {
    build(ps, model, NMODEL);
    for (int i = 0; i < ps->n; i++) {
        nac_param_t *p = ps->items[i];
        set_random(&p->w, 100 + (uint64_t)i);
        if (!(p->flags & NAC_PARAM_BUFFER)) set_random(&p->s1, 200 + (uint64_t)i);
    }
    set_random(&nac_params_find(ps, "fc.weight")->s2, 300);
}

static void test_save_load_bit_exact(void **state) {
    (void)state;
    nac_params_t src, dst;
    build_source(&src);
    nac_st_writer *extra = nac_st_writer_new();
    uint64_t rng[2] = {0x0123456789abcdefull, 42};
    int64_t step = 1234;
    TU_OK(nac_st_writer_add(extra, "rng.key", NAC_DT_U64, 1, (int64_t[]){2}, rng));
    TU_OK(nac_st_writer_add(extra, "train.step", NAC_DT_I64, 0, NULL, &step));
    const char *config = "{\"optim\": {\"lr\": 3.0, \"kind\": \"lars\"}, \"note\": \"\\\"q\\\" ✓\"}";
    TU_OK(nac_st_writer_meta(extra, "config", config));
    TU_OK(nac_st_writer_meta(extra, "step", "1234"));
    TU_OK(nac_st_writer_meta(extra, "epoch", "3"));
    const char *p = tpath("full.safetensors");
    TU_OK(nac_ckpt_save(p, &src, NULL, true, extra));
    /* extra was emptied into the file */
    const char *p2 = tpath("extra_left.safetensors");
    TU_OK(nac_st_writer_save(extra, p2));
    nac_st_writer_free(extra);
    nac_st_file *f;
    TU_OK(nac_st_load(p2, &f));
    assert_int_equal(f->ntensors + f->nmeta, 0);
    nac_st_free(f);

    /* the file: parameters first in list order (values in OIHW), then state, then extras */
    TU_OK(nac_st_load(p, &f));
    assert_string_equal(f->tensors[0].name, "conv1.weight");
    const nac_st_tensor *t = nac_st_find(f, "conv1.weight");
    assert_int_equal(t->dtype, NAC_DT_F32);
    assert_int_equal(t->ndim, 4);
    assert_true(t->shape[0] == 4 && t->shape[1] == 3 && t->shape[2] == 3 && t->shape[3] == 3);
    float *w = host(&src.items[0]->w);
    assert_memory_equal(nac_st_data(f, t), w, 108 * sizeof(float));
    free(w);
    assert_non_null(nac_st_find(f, "optim.conv1.weight.s1"));
    assert_null(nac_st_find(f, "optim.conv1.weight.s2"));          /* never allocated */
    assert_null(nac_st_find(f, "optim.bn1.running_mean.s1"));      /* buffers have none */
    assert_non_null(nac_st_find(f, "optim.fc.weight.s2"));
    assert_non_null(nac_st_find(f, "rng.key"));
    assert_int_equal(nac_st_find(f, "rng.key")->dtype, NAC_DT_U64);
    assert_memory_equal(nac_st_data(f, nac_st_find(f, "rng.key")), rng, sizeof rng);
    assert_memory_equal(nac_st_data(f, nac_st_find(f, "train.step")), &step, 8);
    assert_string_equal(nac_st_meta(f, "config"), config);
    assert_string_equal(nac_st_meta(f, "step"), "1234");
    assert_string_equal(nac_st_meta(f, "epoch"), "3");
    assert_int_equal(f->ntensors, NMODEL + 6 + 1 + 2);

    /* load into a fresh model: values and optimiser state come back bit for bit */
    build(&dst, model, NMODEL);
    TU_OK(nac_ckpt_load_params(f, &dst, "", false, true));
    for (int i = 0; i < NMODEL; i++) {
        nac_param_t *a = src.items[i], *b = dst.items[i];
        assert_same_tensor(&a->w, &b->w, a->name);
        if (a->s1.impl) {
            assert_non_null(b->s1.impl);
            assert_same_tensor(&a->s1, &b->s1, "s1");
        }
        if (a->s2.impl) assert_same_tensor(&a->s2, &b->s2, "s2");
    }
    /* state the file lacks is zeroed: conv1.weight's s2 was allocated only in dst */
    nac_param_t *c = nac_params_find(&dst, "conv1.weight");
    set_random(&c->s2, 5);
    TU_OK(nac_ckpt_load_params(f, &dst, NULL, false, true));
    float *z = host(&c->s2);
    for (int k = 0; k < 108; k++) assert_true(z[k] == 0.0f);
    free(z);
    nac_st_free(f);

    /* strict: extras in the file under the prefix are an error; without optim, the
     * optimiser entries are ignored */
    assert_int_equal(nac_ckpt_load(p, &dst, "", true, false), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "tensor \"rng.key\" is not a parameter of the model (strict loading)"));
    nac_params_free(&src);
    nac_params_free(&dst);
}

static void test_encoder_file_strict_and_prefix(void **state) {
    (void)state;
    nac_params_t src, dst;
    build_source(&src);
    const char *p = tpath("encoder.safetensors");
    TU_OK(nac_ckpt_save(p, &src, "", false, NULL));
    build(&dst, model, NMODEL);
    TU_OK(nac_ckpt_load(p, &dst, "", true, false));
    for (int i = 0; i < NMODEL; i++) assert_same_tensor(&src.items[i]->w, &dst.items[i]->w, src.items[i]->name);
    nac_st_file *f;
    TU_OK(nac_st_load(p, &f));
    assert_int_equal(f->ntensors, NMODEL);
    assert_null(nac_st_find(f, "optim.conv1.weight.s1"));
    nac_st_free(f);

    /* a prefix sets a model apart inside a bigger file */
    const char *q = tpath("prefixed.safetensors");
    nac_st_writer *extra = nac_st_writer_new();
    float one = 1;
    TU_OK(nac_st_writer_add(extra, "head.w", NAC_DT_F32, 1, (int64_t[]){1}, &one));
    TU_OK(nac_ckpt_save(q, &src, "encoder.", true, extra));
    nac_st_writer_free(extra);
    TU_OK(nac_st_load(q, &f));
    assert_non_null(nac_st_find(f, "encoder.conv1.weight"));
    assert_non_null(nac_st_find(f, "optim.encoder.fc.weight.s2"));
    nac_st_free(f);
    nac_params_t fresh;
    build(&fresh, model, NMODEL);
    TU_OK(nac_ckpt_load(q, &fresh, "encoder.", true, true)); /* head.w is outside the prefix */
    assert_same_tensor(&src.items[5]->w, &fresh.items[5]->w, "layer1.0.conv1.weight");
    assert_same_tensor(&nac_params_find(&src, "fc.weight")->s2, &nac_params_find(&fresh, "fc.weight")->s2, "s2");
    set_all(&fresh, 7.0f);
    assert_int_equal(nac_ckpt_load(q, &fresh, "", false, false), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "tensor \"conv1.weight\" (shape [4,3,3,3]) is missing (and 7 more parameters)"));
    assert_all(&fresh, 7.0f);

    /* torchvision's num_batches_tracked counters do not break strict loading */
    nac_st_writer *w = nac_st_writer_new();
    TU_OK(nac_ckpt_add_params(w, &src, "", false));
    int64_t nbt = 5;
    TU_OK(nac_st_writer_add(w, "bn1.num_batches_tracked", NAC_DT_I64, 0, NULL, &nbt));
    TU_OK(nac_st_writer_save(w, p));
    nac_st_writer_free(w);
    TU_OK(nac_ckpt_load(p, &dst, "", true, false));

    /* but any other unknown tensor does, and nothing is loaded */
    w = nac_st_writer_new();
    TU_OK(nac_ckpt_add_params(w, &src, "", true));
    TU_OK(nac_st_writer_add(w, "fc2.weight", NAC_DT_F32, 1, (int64_t[]){1}, &one));
    TU_OK(nac_st_writer_add(w, "optim.fc3.weight.s1", NAC_DT_F32, 1, (int64_t[]){1}, &one));
    TU_OK(nac_st_writer_save(w, p));
    nac_st_writer_free(w);
    set_all(&dst, 7.0f);
    assert_int_equal(nac_ckpt_load(p, &dst, "", true, false), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "tensor \"fc2.weight\" is not a parameter of the model"));
    assert_all(&dst, 7.0f);
    TU_OK(nac_ckpt_load(p, &dst, "", false, true)); /* not strict: extras ignored */
    assert_same_tensor(&src.items[0]->w, &dst.items[0]->w, "conv1.weight");
    /* strict with optimiser state: an "optim." entry of no parameter is an error */
    nac_st_writer *w2 = nac_st_writer_new();
    TU_OK(nac_ckpt_add_params(w2, &src, "", true));
    TU_OK(nac_st_writer_add(w2, "optim.fc3.weight.s1", NAC_DT_F32, 1, (int64_t[]){1}, &one));
    TU_OK(nac_st_writer_save(w2, p));
    nac_st_writer_free(w2);
    assert_int_equal(nac_ckpt_load(p, &dst, "", true, true), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "\"optim.fc3.weight.s1\" is not a parameter"));
    TU_OK(nac_ckpt_load(p, &dst, "", true, false));

    nac_params_free(&src);
    nac_params_free(&dst);
    nac_params_free(&fresh);
}

static void test_mismatch_messages(void **state) {
    (void)state;
    nac_params_t src;
    build_source(&src);
    const char *p = tpath("m.safetensors");
    TU_OK(nac_ckpt_save(p, &src, "", true, NULL));

    /* the LAST parameter has another shape: the ones before it must stay untouched */
    pspec wide[NMODEL];
    memcpy(wide, model, sizeof wide);
    wide[NMODEL - 1].dim[0] = 12; /* fc.bias [12] */
    nac_params_t dst;
    build(&dst, wide, NMODEL);
    set_all(&dst, 7.0f);
    char want[512];
    snprintf(want, sizeof want,
             "%s: tensor \"fc.bias\" has shape [10], but the model's parameter \"fc.bias\" has [12]", p);
    assert_int_equal(nac_ckpt_load(p, &dst, "", false, false), NAC_ERR_DATA);
    assert_string_equal(nac_last_error(), want);
    assert_all(&dst, 7.0f);
    nac_params_free(&dst);

    /* a 4-D weight with its dimensions in another order (OHWI instead of OIHW) */
    memcpy(wide, model, sizeof wide);
    wide[5].dim[1] = 3;
    wide[5].dim[3] = 4;
    build(&dst, wide, NMODEL);
    set_all(&dst, 7.0f);
    assert_int_equal(nac_ckpt_load(p, &dst, "", false, false), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(),
                           "tensor \"layer1.0.conv1.weight\" has shape [8,4,3,3], but the model's parameter \"layer1.0.conv1.weight\" has [8,3,3,4]"));
    assert_all(&dst, 7.0f);
    nac_params_free(&dst);

    /* rank differs */
    memcpy(wide, model, sizeof wide);
    wide[1] = (pspec){"bn1.weight", 2, {4, 1}, 0};
    build(&dst, wide, NMODEL);
    assert_int_equal(nac_ckpt_load(p, &dst, "", false, false), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "has shape [4], but the model's parameter \"bn1.weight\" has [4,1]"));
    nac_params_free(&dst);

    /* a parameter the file lacks */
    pspec more[NMODEL + 2];
    memcpy(more, model, sizeof model);
    more[NMODEL] = (pspec){"fc2.weight", 2, {3, 10}, 0};
    build(&dst, more, NMODEL + 1);
    set_all(&dst, 7.0f);
    snprintf(want, sizeof want, "%s: tensor \"fc2.weight\" (shape [3,10]) is missing", p);
    assert_int_equal(nac_ckpt_load(p, &dst, "", false, false), NAC_ERR_DATA);
    assert_string_equal(nac_last_error(), want);
    assert_all(&dst, 7.0f);
    nac_params_free(&dst);
    more[NMODEL + 1] = (pspec){"fc2.bias", 1, {3}, 0};
    build(&dst, more, NMODEL + 2);
    assert_int_equal(nac_ckpt_load(p, &dst, "", false, false), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "is missing (and 1 more parameter)"));
    nac_params_free(&dst);

    /* optimiser state with the wrong shape is caught before anything is loaded */
    nac_st_writer *w = nac_st_writer_new();
    TU_OK(nac_ckpt_add_params(w, &src, "", false));
    float bad[3] = {0};
    TU_OK(nac_st_writer_add(w, "optim.fc.bias.s1", NAC_DT_F32, 1, (int64_t[]){3}, bad));
    TU_OK(nac_st_writer_save(w, p));
    nac_st_writer_free(w);
    build(&dst, model, NMODEL);
    set_all(&dst, 7.0f);
    assert_int_equal(nac_ckpt_load(p, &dst, "", false, true), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "tensor \"optim.fc.bias.s1\" has shape [3], but the model's parameter \"fc.bias\" has [10]"));
    assert_all(&dst, 7.0f);
    TU_OK(nac_ckpt_load(p, &dst, "", false, false)); /* without optim it is not looked at */

    /* integer data for a parameter is refused; F64 and F16 are converted */
    w = nac_st_writer_new();
    int32_t ints[4] = {1, 2, 3, 4};
    double d4[4] = {0.5, -1.25, 3, 4};
    uint16_t h4[4] = {0x3c00, 0xc000, 0x0000, 0x3800}; /* 1, -2, 0, 0.5 */
    TU_OK(nac_ckpt_add_params(w, &src, "", false));
    TU_OK(nac_st_writer_add(w, "x.bn1.weight", NAC_DT_I32, 1, (int64_t[]){4}, ints));
    TU_OK(nac_st_writer_add(w, "y.bn1.weight", NAC_DT_F64, 1, (int64_t[]){4}, d4));
    TU_OK(nac_st_writer_add(w, "z.bn1.weight", NAC_DT_F16, 1, (int64_t[]){4}, h4));
    TU_OK(nac_st_writer_save(w, p));
    nac_st_writer_free(w);
    nac_params_t one;
    nac_params_init(&one);
    nac_param_t *bw = nac_params_add(&one, g_be, "bn1.weight", 1, (int64_t[]){4}, 0);
    assert_non_null(bw);
    assert_int_equal(nac_ckpt_load(p, &one, "x.", false, false), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "tensor \"x.bn1.weight\" is I32; parameter \"bn1.weight\" needs a float dtype"));
    TU_OK(nac_ckpt_load(p, &one, "y.", false, false));
    float *v = host(&bw->w);
    assert_true(v[0] == 0.5f && v[1] == -1.25f && v[2] == 3.0f && v[3] == 4.0f);
    free(v);
    TU_OK(nac_ckpt_load(p, &one, "z.", false, false));
    v = host(&bw->w);
    assert_true(v[0] == 1.0f && v[1] == -2.0f && v[2] == 0.0f && v[3] == 0.5f);
    free(v);

    assert_int_equal(nac_ckpt_load(tpath("absent.safetensors"), &one, "", false, false), NAC_ERR_NOINPUT);
    nac_params_free(&one);
    nac_params_free(&dst);
    nac_params_free(&src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_save_load_bit_exact),
        cmocka_unit_test(test_encoder_file_strict_and_prefix),
        cmocka_unit_test(test_mismatch_messages),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
