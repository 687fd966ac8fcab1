/* Strict config loading: values land in the struct, overrides apply, and every kind of
 * bad config (unknown key, wrong type, out of range, bad choice, malformed JSON) is
 * rejected with NAC_ERR_CONFIG and a message naming the key and the file. */
#include "tests/testutil.h"

#include "app/config.h"

typedef struct cfg {
    int epochs;
    double lr, p;
    bool nesterov;
    char objective[16];
    char name[32];
} cfg;

static const nac_cfg_field fields[] = {
    NAC_CFG_INT_F(cfg, "train.epochs", epochs, 1, 100000, "epochs"),
    NAC_CFG_FLOAT_F(cfg, "optim.lr", lr, 0, 1e6, true, false, "learning rate"),
    NAC_CFG_FLOAT_F(cfg, "method.p", p, 0, 0.5, true, true, "flip probability"),
    NAC_CFG_BOOL_F(cfg, "optim.nesterov", nesterov, "nesterov"),
    NAC_CFG_STR_F(cfg, "method.objective", objective, "nac|nac_mq|simclr|mocov2", "objective"),
    NAC_CFG_STR_F(cfg, "run.name", name, NULL, "name"),
};
static const nac_cfg_schema schema = {fields, sizeof fields / sizeof *fields, NULL};

static cfg defaults(void) {
    cfg c = {.epochs = 10, .lr = 3.0, .p = 0.1, .nesterov = false};
    strcpy(c.objective, "nac");
    strcpy(c.name, "run");
    return c;
}

static void test_values_and_overrides(void **state) {
    (void)state;
    cfg c = defaults();
    char *ov[] = {"optim.lr=0.5", "run.name=hello world", "method.objective=simclr"};
    TU_OK(nac_config_parse("{\"train\": {\"epochs\": 7}, \"optim\": {\"nesterov\": true}}", "x.json",
                           &schema, 3, ov, &c));
    assert_int_equal(c.epochs, 7);
    assert_true(c.nesterov);
    assert_true(c.lr == 0.5);
    assert_true(c.p == 0.1); /* default kept */
    assert_string_equal(c.name, "hello world");
    assert_string_equal(c.objective, "simclr");
    cJSON *j = nac_config_to_json(&schema, &c);
    char *text = cJSON_PrintUnformatted(j);
    assert_non_null(strstr(text, "\"epochs\":7"));
    /* the resolved JSON reads back into the same struct */
    cfg d = defaults();
    d.epochs = 1;
    TU_OK(nac_config_parse(text, "resolved", &schema, 0, NULL, &d));
    assert_memory_equal(&c, &d, sizeof c);
    free(text);
    cJSON_Delete(j);
}

static void expect_bad(const char *json, int nov, char **ov, const char *want) {
    cfg c = defaults();
    nac_status s = nac_config_parse(json, "bad.json", &schema, nov, ov, &c);
    if (s == NAC_OK) fail_msg("accepted %s", json);
    if (!strstr(nac_last_error(), want))
        fail_msg("message \"%s\" does not contain \"%s\"", nac_last_error(), want);
    if (nov == 0) assert_non_null(strstr(nac_last_error(), "bad.json"));
}

static void test_rejections(void **state) {
    (void)state;
    expect_bad("{\"train\": {\"epochz\": 7}}", 0, NULL, "unknown key \"train.epochz\"");
    expect_bad("{\"tran\": {}}", 0, NULL, "unknown key \"tran\"");
    expect_bad("{\"train\": {\"epochs\": \"7\"}}", 0, NULL, "\"train.epochs\" must be an integer");
    expect_bad("{\"train\": {\"epochs\": 7.5}}", 0, NULL, "must be an integer");
    expect_bad("{\"train\": {\"epochs\": 0}}", 0, NULL, "out of range");
    expect_bad("{\"method\": {\"p\": 0.5}}", 0, NULL, "\"method.p\" = 0.5 is out of range (0, 0.5)");
    expect_bad("{\"method\": {\"p\": 0}}", 0, NULL, "out of range");
    expect_bad("{\"optim\": {\"lr\": -1}}", 0, NULL, "\"optim.lr\" = -1 is out of range");
    expect_bad("{\"optim\": {\"nesterov\": 1}}", 0, NULL, "must be true or false");
    expect_bad("{\"method\": {\"objective\": \"byol\"}}", 0, NULL, "is not one of nac|nac_mq");
    expect_bad("{\"train\": 5}", 0, NULL, "\"train\" must be an object");
    expect_bad("{\"train\": {\"epochs\": 1, \"epochs\": 2}}", 0, NULL, "appears twice");
    expect_bad("{\"train\": {\"epochs\": 1,}", 0, NULL, "malformed JSON near line 1, column 24: a trailing comma before '}'");
    expect_bad("[1, 2]", 0, NULL, "top level must be a JSON object");
    char *ov1[] = {"train.epoch=3"};
    expect_bad("{}", 1, ov1, "unknown key \"train.epoch\"");
    char *ov2[] = {"train.epochs=abc"};
    expect_bad("{}", 1, ov2, "is not an integer");
    char *ov3[] = {"noequals"};
    expect_bad("{}", 1, ov3, "expected key=value");
}

/* Issue 15: an override is exactly one value of its key's type; nothing after it. */
static void test_overrides_strict(void **state) {
    (void)state;
    struct {
        const char *ov, *want;
    } cases[] = {
        {"train.epochs=5abc", "override \"train.epochs=5abc\": \"5abc\" is not an integer"},
        {"train.epochs=1,2", "\"1,2\" is not an integer"},
        {"train.epochs=5 6", "\"5 6\" is not an integer"},
        {"train.epochs=[5]", "\"[5]\" is not an integer"},
        {"train.epochs=\"5\"", "is not an integer"},
        {"optim.nesterov=trueish", "\"trueish\" is not true or false"},
        {"optim.nesterov=1", "must be true or false"},
        {"optim.lr=0x10", "\"0x10\" is not a number"},
        {"optim.lr=nan", "\"nan\" is not a number"},
        {"optim.lr=", "override \"optim.lr=\": empty value"},
        {"optim.nesterov=", "override \"optim.nesterov=\": empty value (\"optim.nesterov\" must be true or false)"},
        {"run.name=caf\xc3", "not valid UTF-8 (byte 12 is 0xc3)"},
        {"method.objective=nac\x1b[31m", "is not one of"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *ov[] = {(char *)cases[i].ov};
        cfg c = defaults();
        nac_status st = nac_config_parse("{}", "x.json", &schema, 1, ov, &c);
        if (st != NAC_ERR_CONFIG)
            fail_msg("%s: status %s (%s), want NAC_ERR_CONFIG", cases[i].ov, nac_status_name(st),
                     nac_last_error());
        if (!strstr(nac_last_error(), cases[i].want))
            fail_msg("%s: message \"%s\" lacks \"%s\"", cases[i].ov, nac_last_error(), cases[i].want);
    }
    /* what is valid stays valid */
    char *ok[] = {"train.epochs=5", "optim.lr=1e-3", "optim.nesterov=false", "run.name=caf\xc3\xa9 x",
                  "optim.lr= 2.5 "};
    cfg c = defaults();
    TU_OK(nac_config_parse("{}", "x.json", &schema, 5, ok, &c));
    assert_int_equal(c.epochs, 5);
    assert_true(c.lr == 2.5);
    assert_string_equal(c.name, "caf\xc3\xa9 x");
}

/* Issue 15: a config file with a NUL byte or bytes that are not UTF-8 is refused up front,
 * naming the file, line and column; malformed JSON says where and why. */
static void test_file_text_checks(void **state) {
    (void)state;
    cfg c = defaults();
    const char nul[] = "{\"train\": {\"epochs\": 3}}\n\0{\"run\": 1}";
    assert_int_equal(nac_config_parse_n(nul, sizeof nul - 1, "nul.json", &schema, 0, NULL, &c),
                     NAC_ERR_CONFIG);
    assert_non_null(strstr(nac_last_error(), "nul.json: a NUL byte at line 2, column 1 (byte 25)"));
    /* through the file reader too */
    char dir[64], path[128];
    assert_int_equal(tu_mkdtemp(dir, sizeof dir, "nac_cfg"), 0);
    snprintf(path, sizeof path, "%s/nul.json", dir);
    tu_write_bytes(path, nul, sizeof nul - 1);
    assert_int_equal(nac_config_load(path, &schema, 0, NULL, &c), NAC_ERR_CONFIG);
    assert_non_null(strstr(nac_last_error(), "a NUL byte at line 2"));
    assert_non_null(strstr(nac_last_error(), path));
    const char *latin1 = "{\"run\": {\"name\": \"caf\xe9\"}}";
    snprintf(path, sizeof path, "%s/latin1.json", dir);
    tu_write_bytes(path, latin1, strlen(latin1));
    assert_int_equal(nac_config_load(path, &schema, 0, NULL, &c), NAC_ERR_CONFIG);
    assert_non_null(strstr(nac_last_error(), "not valid UTF-8 at line 1, column 22 (byte 21 is 0xe9)"));
    assert_int_equal(tu_rm_tree(dir), 0);
    expect_bad("{\n  \"train\": {\"epochs\": 3},\n}", 0, NULL,
               "malformed JSON near line 3, column 1: a trailing comma before '}'");
    expect_bad("{\n  'train': 1}", 0, NULL, "line 2, column 3: a single quote");
    expect_bad("{\"train\": {\"epochs\": 3}", 0, NULL, "line 1, column 24: the text ends before 1 closing");
    expect_bad("{} x", 0, NULL, "line 1, column 4: text after the end of the JSON value");
    expect_bad("{// c\n}", 0, NULL, "a comment (JSON has none)");
}

static void test_missing_file(void **state) {
    (void)state;
    cfg c = defaults();
    nac_status s = nac_config_load("/nonexistent/x.json", &schema, 0, NULL, &c);
    assert_int_equal(s, NAC_ERR_NOINPUT);
    assert_non_null(strstr(nac_last_error(), "/nonexistent/x.json"));
    assert_int_equal(nac_status_exit_code(NAC_ERR_CONFIG), 78);
    assert_int_equal(nac_status_exit_code(NAC_ERR_NOINPUT), 66);
    assert_int_equal(nac_status_exit_code(NAC_ERR_DATA), 65);
    assert_int_equal(nac_status_exit_code(NAC_ERR_USAGE), 64);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_and_overrides),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_overrides_strict),
        cmocka_unit_test(test_file_text_checks),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
