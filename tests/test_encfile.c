/* The encoder file (encoders/encfile.h): a file written by `nac pretrain` at e95ecd1, before
 * the module existed, still loads; save then open gives the same encoder, heads and metadata;
 * each malformed metadata entry is one message naming the file and the key; a file that is
 * not the encoder a config asks for is refused by name. */
#include "tests/testutil.h"

#include "encoders/encfile.h"
#include "io/checkpoint.h"

static nac_backend_t *g_be; /* made by main, freed at its end */

static const char *old_file(void) { return NAC_TEST_DATA "/encoder_e95ecd1.safetensors"; }

/* Host copy of parameter `name` of ps. */
static float *param_host(nac_params_t *ps, const char *name, int64_t *n) {
    nac_param_t *p = nac_params_find(ps, name);
    assert_non_null(p);
    *n = nac_tensor_numel(&p->w);
    float *h = malloc((size_t)*n * sizeof *h);
    assert_non_null(h);
    TU_OK(nac_tensor_to_host(&p->w, h));
    return h;
}

static void test_old_file_loads(void **state) {
    (void)state;
    nac_encfile_t *f;
    TU_OK(nac_encfile_open(old_file(), &f));
    const nac_encfile_meta *m = nac_encfile_get_meta(f);
    assert_string_equal(m->arch, "resnet18");
    assert_true(m->width_mult == 0.0625);
    assert_int_equal(m->in_channels, 3);
    assert_int_equal(m->in_size, 32);
    assert_string_equal(m->objective, "nac");
    assert_non_null(m->config);
    assert_non_null(strstr(m->config, "\"synthetic\""));
    for (int i = 0; i < 3; i++) assert_true(m->std[i] > 0);
    nac_encoder_t *enc;
    TU_OK(nac_encfile_create_encoder(f, g_be, &enc));
    int features = nac_encoder_features(enc);
    assert_int_equal(features, 32);
    nac_head_t *g, *r, *none;
    TU_OK(nac_encfile_load_head(f, g_be, "g.", features, &g));
    TU_OK(nac_encfile_load_head(f, g_be, "r.", features, &r));
    TU_OK(nac_encfile_load_head(f, g_be, "q.", features, &none));
    assert_non_null(g);
    assert_non_null(r);
    assert_null(none);
    assert_int_equal(nac_head_out(g), 8);
    /* the weights are the file's: a direct checkpoint load of the same file agrees */
    nac_encoder_t *strict;
    nac_encoder_config ec = *nac_encfile_encoder_config(f);
    ec.seed = 99;
    TU_OK(nac_encoder_create(g_be, &ec, &strict));
    TU_OK(nac_ckpt_load(old_file(), nac_encoder_params(strict), "", false, false));
    int64_t n1, n2;
    float *a = param_host(nac_encoder_params(enc), "layer4.1.conv2.weight", &n1);
    float *b = param_host(nac_encoder_params(strict), "layer4.1.conv2.weight", &n2);
    assert_int_equal(n1, n2);
    tu_close_f(a, b, n1, 0, 0, "layer4.1.conv2.weight");
    free(a);
    free(b);
    nac_encoder_free(strict);
    nac_head_free(g);
    nac_head_free(r);
    nac_encoder_free(enc);
    nac_encfile_close(f);
}

static void test_round_trip(void **state) {
    (void)state;
    char dir[64];
    assert_int_equal(tu_mkdtemp(dir, sizeof dir, "encfile"), 0);
    nac_encfile_t *f;
    TU_OK(nac_encfile_open(old_file(), &f));
    nac_encoder_t *enc;
    nac_head_t *heads[2];
    TU_OK(nac_encfile_create_encoder(f, g_be, &enc));
    TU_OK(nac_encfile_load_head(f, g_be, "g.", 32, &heads[0]));
    TU_OK(nac_encfile_load_head(f, g_be, "r.", 32, &heads[1]));
    const char *path = tu_path(dir, "e.safetensors");
    TU_OK(nac_encfile_save(path, enc, heads, 2, nac_encfile_get_meta(f)));
    nac_encfile_t *f2;
    TU_OK(nac_encfile_open(path, &f2));
    const nac_encfile_meta *m1 = nac_encfile_get_meta(f), *m2 = nac_encfile_get_meta(f2);
    assert_string_equal(m1->arch, m2->arch);
    assert_true(m1->width_mult == m2->width_mult);
    assert_int_equal(m1->in_channels, m2->in_channels);
    assert_int_equal(m1->in_size, m2->in_size);
    assert_memory_equal(m1->mean, m2->mean, sizeof m1->mean);
    assert_memory_equal(m1->std, m2->std, sizeof m1->std);
    assert_string_equal(m1->objective, m2->objective);
    assert_string_equal(m1->config, m2->config);
    nac_encoder_t *enc2;
    nac_head_t *g2;
    TU_OK(nac_encfile_create_encoder(f2, g_be, &enc2));
    TU_OK(nac_encfile_load_head(f2, g_be, "g.", 32, &g2));
    nac_params_t *p1 = nac_encoder_params(enc), *p2 = nac_encoder_params(enc2);
    assert_int_equal(p1->n, p2->n);
    for (int i = 0; i < p1->n; i++) {
        int64_t n1, n2;
        float *a = param_host(p1, p1->items[i]->name, &n1);
        float *b = param_host(p2, p1->items[i]->name, &n2);
        assert_int_equal(n1, n2);
        tu_close_f(b, a, n1, 0, 0, p1->items[i]->name);
        free(a);
        free(b);
    }
    int64_t n1, n2;
    float *a = param_host(nac_head_params(heads[0]), "g.2.weight", &n1);
    float *b = param_host(nac_head_params(g2), "g.2.weight", &n2);
    tu_close_f(b, a, n1, 0, 0, "g.2.weight");
    free(a);
    free(b);
    nac_head_free(g2);
    nac_encoder_free(enc2);
    nac_encfile_close(f2);
    nac_head_free(heads[0]);
    nac_head_free(heads[1]);
    nac_encoder_free(enc);
    nac_encfile_close(f);
    assert_int_equal(tu_rm_tree(dir), 0);
}

/* A file with the old file's encoder and the given metadata (key NULL ends the list;
 * value NULL leaves the key out). */
static void write_meta(const char *path, const char *const kv[][2]) {
    nac_encfile_t *f;
    TU_OK(nac_encfile_open(old_file(), &f));
    nac_encoder_t *enc;
    TU_OK(nac_encfile_create_encoder(f, g_be, &enc));
    nac_st_writer *w = nac_st_writer_new();
    assert_non_null(w);
    TU_OK(nac_ckpt_add_params(w, nac_encoder_params(enc), "", false));
    for (int i = 0; kv[i][0]; i++)
        if (kv[i][1]) TU_OK(nac_st_writer_meta(w, kv[i][0], kv[i][1]));
    TU_OK(nac_st_writer_save(w, path));
    nac_st_writer_free(w);
    nac_encoder_free(enc);
    nac_encfile_close(f);
}

static void test_bad_metadata(void **state) {
    (void)state;
    char dir[64];
    assert_int_equal(tu_mkdtemp(dir, sizeof dir, "encfile"), 0);
    const char *path = tu_path(dir, "bad.safetensors");
    enum { ARCH, WIDTH, CH, SIZE, MEAN, STD };
    static const struct {
        int key;
        const char *value, *want; /* the message names the key and this */
    } cases[] = {
        {ARCH, NULL, "\"arch\" is missing"},
        {ARCH, "resnet99", "\"arch\" is \"resnet99\""},
        {WIDTH, NULL, "\"width_mult\" is missing"},
        {WIDTH, "0", "\"width_mult\" is 0"},
        {CH, "7", "\"in_channels\" = \"7\""},
        {CH, NULL, "\"in_channels\" is missing"},
        {SIZE, "32x", "\"in_size\" = \"32x\""},
        {MEAN, "0.5 0.5", "\"norm_mean\" = \"0.5 0.5\" is not three numbers"},
        {STD, NULL, "\"norm_std\" is missing"},
        {STD, "0.2 0 0.2", "norm_std of channel 1 is 0"},
        {STD, "0.2 nan 0.2", "\"norm_std\" = \"0.2 nan 0.2\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *kv[][2] = {{"arch", "resnet18"},       {"width_mult", "0.0625"},
                               {"in_channels", "3"},       {"in_size", "32"},
                               {"norm_mean", "0.5 0.5 0.5"}, {"norm_std", "0.2 0.2 0.2"},
                               {NULL, NULL}};
        kv[cases[i].key][1] = cases[i].value;
        write_meta(path, kv);
        nac_encfile_t *f = (nac_encfile_t *)1;
        nac_status s = nac_encfile_open(path, &f);
        const char *msg = nac_last_error();
        if (s != NAC_ERR_DATA || f || !strstr(msg, path) || !strstr(msg, cases[i].want))
            fail_msg("case %zu: status %d, message \"%s\" (want %s and \"%s\")", i, (int)s, msg,
                     path, cases[i].want);
    }
    assert_int_equal(tu_rm_tree(dir), 0);
}

static void test_expect(void **state) {
    (void)state;
    nac_encfile_t *f;
    TU_OK(nac_encfile_open(old_file(), &f));
    nac_encoder_config want = *nac_encfile_encoder_config(f);
    TU_OK(nac_encfile_expect(f, &want));
    static const struct {
        const char *arch;
        float width;
        int ch, size;
        const char *msg;
    } cases[] = {
        {"resnet34", 0.0625f, 3, 32, "holds a resnet18 encoder, the config asks for resnet34"},
        {"resnet18", 0.125f, 3, 32, "has width_mult 0.0625, the config asks for 0.125"},
        {"resnet18", 0.0625f, 1, 28, "takes 3x32x32 images; the data has 1x28x28"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        nac_encoder_config c = want;
        snprintf(c.arch, sizeof c.arch, "%s", cases[i].arch);
        c.width_mult = cases[i].width;
        c.in_channels = cases[i].ch;
        c.in_size = cases[i].size;
        assert_int_equal(nac_encfile_expect(f, &c), NAC_ERR_CONFIG);
        if (!strstr(nac_last_error(), cases[i].msg) || !strstr(nac_last_error(), old_file()))
            fail_msg("case %zu: \"%s\"", i, nac_last_error());
    }
    nac_encfile_close(f);
    /* not a safetensors file at all: the reader below says so, naming the file */
    nac_encfile_t *g = NULL;
    assert_int_not_equal(nac_encfile_open(NAC_TEST_DATA "/nac_loss.json", &g), NAC_OK);
    assert_null(g);
    assert_non_null(strstr(nac_last_error(), "nac_loss.json"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_old_file_loads),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_expect),
    };
    g_be = tu_backend();
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    nac_backend_free(g_be);
    return failed;
}
