/* Issue 15: a config is validated whole (every key, every override, the rules between
 * fields, the data and encoder paths, the run name) before a run folder is created; a
 * config error leaves nothing on disk. */
#include <sys/stat.h>

#include "app/app.h"
#include "testutil.h"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_dir, sizeof g_dir, "nac_run_start");
}

static int teardown(void **state) {
    (void)state;
    tu_rm_tree(g_dir);
    return 0;
}

typedef struct bad_case {
    const char *ov[3];
    nac_status want;
    const char *msg;
} bad_case;

static void check_cases(const nac_command *cmd, const bad_case *cases, size_t n) {
    char cfg[128], runs[128], o_runs[160];
    snprintf(cfg, sizeof cfg, "%s/c.json", g_dir);
    const char *text = "{\"data\": {\"dataset\": \"synthetic\"}}\n";
    tu_write_bytes(cfg, text, strlen(text));
    snprintf(runs, sizeof runs, "%s/runs", g_dir);
    snprintf(o_runs, sizeof o_runs, "run.dir=%s", runs);
    for (size_t i = 0; i < n; i++) {
        char *argv[8] = {(char *)cmd->name, "-c", cfg, o_runs};
        int argc = 4;
        for (int k = 0; k < 3 && cases[i].ov[k]; k++) argv[argc++] = (char *)cases[i].ov[k];
        nac_clear_error();
        nac_status s = cmd->run(argc, argv);
        if (s != cases[i].want)
            fail_msg("%s %s: status %s (%s), want %s", cmd->name, cases[i].ov[0], nac_status_name(s),
                     nac_last_error(), nac_status_name(cases[i].want));
        if (!strstr(nac_last_error(), cases[i].msg))
            fail_msg("%s %s: message \"%s\" lacks \"%s\"", cmd->name, cases[i].ov[0], nac_last_error(),
                     cases[i].msg);
        if (tu_exists(runs)) fail_msg("%s %s: %s was created", cmd->name, cases[i].ov[0], runs);
    }
}

static void test_pretrain_validates_first(void **state) {
    (void)state;
    const bad_case cases[] = {
        {{"optim.warmup_epochs=5", "train.epochs=5"}, NAC_ERR_CONFIG, "\"optim.warmup_epochs\" = 5 must be below \"train.epochs\" = 5"},
        {{"method.objective=mocov2", "method.queue=6", "train.batch=4"}, NAC_ERR_CONFIG, "\"method.queue\" = 6 must be at least two batches (8)"},
        {{"data.synthetic_n=10", "train.batch=64"}, NAC_ERR_CONFIG, "\"train.batch\" = 64 is larger than the dataset (at most 10 images)"},
        {{"data.dataset=mnist", "data.path=/nonexistent/mnist"}, NAC_ERR_NOINPUT, "\"data.path\": /nonexistent/mnist: no such folder"},
        {{"data.dataset=cifar10", "data.path="}, NAC_ERR_CONFIG, "\"data.dataset\" = \"cifar10\" needs \"data.path\""},
        {{"data.dataset=cifar10"}, NAC_ERR_NOINPUT, "data_batch_1.bin: no such file"},
        {{"run.name="}, NAC_ERR_CONFIG, "\"run.name\" = \"\" is not a folder name"},
        {{"run.name=a/b"}, NAC_ERR_CONFIG, "\"run.name\" = \"a/b\" is not a folder name"},
        {{"description=caf\xe9"}, NAC_ERR_CONFIG, "not valid UTF-8"},
        {{"train.epochs=5abc"}, NAC_ERR_CONFIG, "\"5abc\" is not an integer"},
    };
    check_cases(&nac_cmd_pretrain, cases, sizeof cases / sizeof *cases);
}

static void test_vae_validates_first(void **state) {
    (void)state;
    const bad_case cases[] = {
        {{"model.encoder=/nonexistent/encoder.safetensors"}, NAC_ERR_NOINPUT, "\"model.encoder\" /nonexistent/encoder.safetensors: no such file"},
        {{"data.synthetic_n=100", "train.batch=99"}, NAC_ERR_CONFIG, "\"train.batch\" = 99 is larger than the dataset (at most 80 images)"},
        {{"run.name=.."}, NAC_ERR_CONFIG, "is not a folder name"},
    };
    check_cases(&nac_cmd_vae, cases, sizeof cases / sizeof *cases);
}

/* key=value without -c starts from the defaults --help lists; nothing at all is a usage
 * error; -c and --resume together are one too. */
static void test_defaults_without_config(void **state) {
    (void)state;
    char o_runs[160], path[256];
    snprintf(o_runs, sizeof o_runs, "run.dir=%s/dflt", g_dir);
    char *argv[] = {"pretrain", o_runs, "data.dataset=synthetic", "data.synthetic_n=100",
                    "model.width_mult=0.0625", "train.batch=20", "train.epochs=1",
                    "train.threads=1", "train.workers=1", "train.knn_every=0", "train.stats_subset=20",
                    "optim.warmup_epochs=0", "run.name=d"};
    nac_clear_error();
    nac_status s = nac_cmd_pretrain.run(sizeof argv / sizeof *argv, argv);
    if (s != NAC_OK) fail_msg("pretrain from defaults: %s", nac_last_error());
    snprintf(path, sizeof path, "%s/dflt/d/config.json", g_dir);
    cJSON *c = tu_load_json_path(path);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "method");
    /* untouched keys hold the defaults: nac, p 0.1, LARS momentum 0.9 */
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(m, "objective")->valuestring, "nac");
    assert_true(cJSON_GetObjectItemCaseSensitive(m, "p")->valuedouble == 0.1);
    assert_true(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "optim"), "momentum")->valuedouble == 0.9);
    assert_true(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "train"), "epochs")->valuedouble == 1);
    cJSON_Delete(c);
    snprintf(path, sizeof path, "%s/dflt/d/encoder.safetensors", g_dir);
    assert_true(tu_exists(path));
    char *none[] = {"pretrain"};
    nac_clear_error();
    assert_int_equal(nac_cmd_pretrain.run(1, none), NAC_ERR_USAGE);
    assert_non_null(strstr(nac_last_error(), "key=value"));
    char *both[] = {"pretrain", "-c", "x.json", "--resume", "y"};
    nac_clear_error();
    assert_int_equal(nac_cmd_pretrain.run(5, both), NAC_ERR_USAGE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pretrain_validates_first),
        cmocka_unit_test(test_vae_validates_first),
        cmocka_unit_test(test_defaults_without_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
