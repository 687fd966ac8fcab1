/* `nac table5` end to end on a tiny synthetic config with two seeds: every (row, seed) runs,
 * each VAE leaves its per-image log p(x), and the table's paired differences and seed
 * summaries equal what the per-image files give when recomputed here by hand. A second
 * run of the same config keeps the finished rows and writes the same results. */
#include <cjson/cJSON.h>
#include <sys/stat.h>

#include "app/app.h"
#include "io/npy.h"
#include "testutil.h"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_dir, sizeof g_dir, "nac_t5_test");
}

static int teardown(void **state) {
    (void)state;
    tu_rm_tree(g_dir);
    return 0;
}

static double num(const cJSON *d, const char *a) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(d, a);
    if (!cJSON_IsNumber(x)) fail_msg("no number %s", a);
    return x->valuedouble;
}

static double *load_lp(const char *dir, const char *row, int seed, int64_t *n) {
    char path[256];
    snprintf(path, sizeof path, "%s/t/vae-%s-s%d/logpx.npy", dir, row, seed);
    nac_npy a;
    TU_OK(nac_npy_load(path, &a));
    assert_int_equal(a.dtype, NAC_DT_F64);
    assert_int_equal(a.ndim, 1);
    *n = a.shape[0];
    return a.data;
}

static const cJSON *row_of(const cJSON *doc, const char *name) {
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(doc, "rows")) {
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(r, "init");
        if (cJSON_IsString(i) && !strcmp(i->valuestring, name)) return r;
    }
    fail_msg("no row %s", name);
    return NULL;
}

/* Same structure, strings and booleans; numbers within 1e-9 relative (the kept rows' numbers
 * come back through their JSON files, so the last digit of a derived value may differ). */
static void same_json(const cJSON *a, const cJSON *b, const char *where) {
    if ((a->type & 0xff) != (b->type & 0xff)) fail_msg("%s: types differ", where);
    if (cJSON_IsNumber(a)) {
        if (!(fabs(a->valuedouble - b->valuedouble) <= 1e-9 * (1 + fabs(a->valuedouble))))
            fail_msg("%s: %.17g != %.17g", where, a->valuedouble, b->valuedouble);
    } else if (cJSON_IsString(a)) {
        if (strcmp(a->valuestring, b->valuestring)) fail_msg("%s: \"%s\" != \"%s\"", where, a->valuestring, b->valuestring);
    } else if (cJSON_IsArray(a) || cJSON_IsObject(a)) {
        if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) fail_msg("%s: sizes differ", where);
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next) {
            if (x->string && (!y->string || strcmp(x->string, y->string))) fail_msg("%s: keys differ", where);
            char w[256];
            snprintf(w, sizeof w, "%s.%s", where, x->string ? x->string : "[]");
            same_json(x, y, w);
        }
    }
}

static void run_table(const char *cfg) {
    char *argv[] = {"table5", "-c", (char *)cfg};
    nac_clear_error();
    nac_status s = nac_cmd_table5.run(3, argv);
    if (s != NAC_OK) fail_msg("table5: %s", nac_last_error());
}

static void test_seeds_and_paired_differences(void **state) {
    (void)state;
    char cfg[128], res[128];
    snprintf(cfg, sizeof cfg, "%s/t5.json", g_dir);
    char text[1024];
    snprintf(text, sizeof text,
             "{\"rows\": \"random,nac\", \"seeds\": \"3,5\","
             " \"data\": {\"dataset\": \"synthetic\", \"synthetic_n\": 200, \"test_limit\": 40},"
             " \"model\": {\"arch\": \"resnet18\", \"width_mult\": 0.0625},"
             " \"pretrain\": {\"epochs\": 1, \"batch\": 50, \"lr\": 1.0, \"warmup_epochs\": 0},"
             " \"vae\": {\"latent\": 4, \"dec_width\": 4, \"epochs\": 1, \"batch\": 50, \"diag_images\": 20},"
             " \"eval\": {\"k\": 4, \"chunk\": 4, \"batch\": 10},"
             " \"train\": {\"threads\": 1, \"workers\": 1},"
             " \"run\": {\"dir\": \"%s\", \"name\": \"t\"}}", g_dir);
    tu_write_bytes(cfg, text, strlen(text));
    run_table(cfg);
    snprintf(res, sizeof res, "%s/t/results.json", g_dir);
    cJSON *doc = tu_load_json_path(res);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "seeds")), 2);
    const cJSON *rnd = row_of(doc, "random"), *nac = row_of(doc, "nac");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(nac, "per_seed")), 2);
    assert_null(cJSON_GetObjectItemCaseSensitive(rnd, "vs_random"));
    assert_null(cJSON_GetObjectItemCaseSensitive(nac, "vs_nac"));

    /* recompute nac - random from the per-image files */
    int64_t n3, n5, m3, m5;
    double *r3 = load_lp(g_dir, "random", 3, &n3), *r5 = load_lp(g_dir, "random", 5, &n5);
    double *a3 = load_lp(g_dir, "nac", 3, &m3), *a5 = load_lp(g_dir, "nac", 5, &m5);
    assert_true(n3 == 40 && n5 == 40 && m3 == 40 && m5 == 40);
    double d3 = 0, d5 = 0, dbar[40], mean = 0;
    for (int i = 0; i < 40; i++) {
        d3 += (a3[i] - r3[i]) / 40;
        d5 += (a5[i] - r5[i]) / 40;
        dbar[i] = 0.5 * (a3[i] + a5[i]) - 0.5 * (r3[i] + r5[i]);
        mean += dbar[i] / 40;
    }
    double ss = 0;
    for (int i = 0; i < 40; i++) ss += (dbar[i] - mean) * (dbar[i] - mean);
    double img_se = sqrt(ss / 39) / sqrt(40.0);
    const cJSON *vs = cJSON_GetObjectItemCaseSensitive(nac, "vs_random");
    assert_non_null(vs);
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(vs, "per_seed");
    assert_true(fabs(num(cJSON_GetArrayItem(ps, 0), "mean") - d3) < 1e-9);
    assert_true(fabs(num(cJSON_GetArrayItem(ps, 1), "mean") - d5) < 1e-9);
    const cJSON *over = cJSON_GetObjectItemCaseSensitive(vs, "seeds");
    double sd = fabs(d3 - d5) / sqrt(2.0); /* two values: sd = |a - b| / sqrt(2) */
    assert_true(fabs(num(over, "mean") - 0.5 * (d3 + d5)) < 1e-9);
    assert_true(fabs(num(over, "sd") - sd) < 1e-9);
    assert_true(fabs(num(over, "hi95") - (0.5 * (d3 + d5) + 12.7062 * sd / sqrt(2.0))) < 1e-6);
    const cJSON *img = cJSON_GetObjectItemCaseSensitive(vs, "images");
    assert_true(fabs(num(img, "mean") - mean) < 1e-9);
    assert_true(fabs(num(img, "se") - img_se) < 1e-9);
    /* the random row's mean over seeds is the mean of its per-seed means */
    double rm = 0;
    for (int i = 0; i < 40; i++) rm += (r3[i] + r5[i]) / 80;
    assert_true(fabs(num(cJSON_GetObjectItemCaseSensitive(rnd, "log_likelihood_nats"), "mean") - rm) < 1e-3);

    /* the figures and results.html; every file the page references exists */
    static const char *const figs[] = {"table5_vs_random.png", "table5_vs_random.svg", "table5_kl.png",
                                       "table5_kl.svg", "results.html"};
    char p2[256];
    for (size_t i = 0; i < sizeof figs / sizeof *figs; i++) {
        snprintf(p2, sizeof p2, "%s/t/%s", g_dir, figs[i]);
        struct stat st;
        if (stat(p2, &st) != 0 || st.st_size == 0) fail_msg("%s missing or empty", p2);
    }
    snprintf(p2, sizeof p2, "%s/t/results.html", g_dir);
    unsigned char *html;
    size_t hn;
    TU_OK(nac_read_file(p2, &html, &hn));
    html = realloc(html, hn + 1);
    html[hn] = 0;
    int refs = 0;
    for (const char *q = (const char *)html; (q = strstr(q, "src=\"")); refs++) {
        q += 5;
        const char *e = strchr(q, '"');
        assert_non_null(e);
        char rel[128], full[320];
        snprintf(rel, sizeof rel, "%.*s", (int)(e - q), q);
        assert_null(strstr(rel, "://")); /* nothing from the network */
        snprintf(full, sizeof full, "%s/t/%s", g_dir, rel);
        struct stat st;
        if (stat(full, &st) != 0) fail_msg("results.html references %s, which does not exist", rel);
    }
    assert_int_equal(refs, 2 + 2 * 2); /* two figures, reconstructions and samples of two rows */
    assert_non_null(strstr((const char *)html, "<table>"));
    assert_non_null(strstr((const char *)html, "&quot;seeds&quot;")); /* the config, escaped */
    free(html);

    /* again: every row is kept from the first run, the results are the same */
    run_table(cfg);
    cJSON *again = tu_load_json_path(res);
    same_json(doc, again, "results");
    cJSON_Delete(again);
    cJSON_Delete(doc);
    free(r3);
    free(r5);
    free(a3);
    free(a5);
}

static void test_bad_seeds(void **state) {
    (void)state;
    const char *bad[] = {"1,1", "1,", "a", "1;2", "-1"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        char cfg[128], text[512];
        snprintf(cfg, sizeof cfg, "%s/bad%zu.json", g_dir, k);
        snprintf(text, sizeof text,
                 "{\"seeds\": \"%s\", \"data\": {\"dataset\": \"synthetic\"},"
                 " \"run\": {\"dir\": \"%s/never\", \"name\": \"x\"}}", bad[k], g_dir);
        tu_write_bytes(cfg, text, strlen(text));
        char *argv[] = {"table5", "-c", cfg};
        nac_clear_error();
        assert_int_equal(nac_cmd_table5.run(3, argv), NAC_ERR_CONFIG);
        assert_non_null(strstr(nac_last_error(), "seeds"));
    }
    struct stat st;
    assert_int_not_equal(stat(g_dir, &st), -1);
    char never[128];
    snprintf(never, sizeof never, "%s/never", g_dir);
    assert_int_equal(stat(never, &st), -1); /* nothing created for a bad config */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seeds_and_paired_differences),
        cmocka_unit_test(test_bad_seeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
