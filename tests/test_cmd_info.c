/* `nac info`: the text and JSON listings of a checkpoint (names, dtypes, shapes, counts,
 * totals, metadata) and of an .npy file, on files made here and on the golden ResNet-18. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/app.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "testutil.h"

#define GOLDEN NAC_TEST_DATA "/resnet18_w4.safetensors"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_dir, sizeof g_dir, "nac_info_test");
}

static int teardown(void **state) {
    (void)state;
    tu_rm_tree(g_dir);
    return 0;
}

/* Run `nac info args...` and return what it printed on stdout. */
static char *run_info(nac_status *st, int argc, char **argv) {
    char path[128];
    snprintf(path, sizeof path, "%s/stdout.txt", g_dir);
    fflush(stdout);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600), saved = dup(1);
    assert_true(fd >= 0 && saved >= 0);
    dup2(fd, 1);
    close(fd);
    nac_clear_error();
    *st = nac_cmd_info.run(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    unsigned char *b;
    size_t n;
    TU_OK(nac_read_file(path, &b, &n));
    char *s = realloc(b, n + 1);
    s[n] = 0;
    return s;
}

static void assert_has(const char *text, const char *needle) {
    if (!strstr(text, needle)) fail_msg("output lacks \"%s\":\n%s", needle, text);
}

static const char *make_ckpt(void) {
    static char p[128];
    snprintf(p, sizeof p, "%s/ck.safetensors", g_dir);
    nac_st_writer *w = nac_st_writer_new();
    float x[108] = {0};
    uint64_t rng[2] = {1, 2};
    TU_OK(nac_st_writer_add(w, "conv1.weight", NAC_DT_F32, 4, (int64_t[]){4, 3, 3, 3}, x));
    TU_OK(nac_st_writer_add(w, "rng.key", NAC_DT_U64, 1, (int64_t[]){2}, rng));
    TU_OK(nac_st_writer_meta(w, "step", "17"));
    TU_OK(nac_st_writer_meta(w, "config", "{\n  \"lr\": 3\n}"));
    TU_OK(nac_st_writer_save(w, p));
    nac_st_writer_free(w);
    return p;
}

static void test_text(void **state) {
    (void)state;
    nac_status st;
    char *out = run_info(&st, 2, (char *[]){"info", (char *)make_ckpt(), NULL});
    TU_OK(st);
    assert_has(out, "safetensors, 2 tensors, 110 elements, 448 bytes of data");
    assert_has(out, "conv1.weight  F32    [4,3,3,3]           108\n");
    assert_has(out, "rng.key       U64    [2]                   2\n");
    assert_has(out, "total: 2 tensors, 110 elements, 448 bytes\n");
    assert_has(out, "metadata: 2 entries\n");
    assert_has(out, "  step: 17\n");
    assert_has(out, "  config: {\n      \"lr\": 3\n    }\n");
    free(out);
}

static void test_json(void **state) {
    (void)state;
    nac_status st;
    char *out = run_info(&st, 3, (char *[]){"info", "--json", (char *)make_ckpt(), NULL});
    TU_OK(st);
    cJSON *doc = cJSON_Parse(out);
    if (!doc) fail_msg("not JSON:\n%s", out);
    assert_string_equal(cJSON_GetObjectItem(doc, "format")->valuestring, "safetensors");
    assert_int_equal(cJSON_GetObjectItem(doc, "ntensors")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(doc, "numel")->valueint, 110);
    assert_int_equal(cJSON_GetObjectItem(doc, "bytes")->valueint, 448);
    cJSON *t0 = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "tensors"), 0);
    assert_string_equal(cJSON_GetObjectItem(t0, "name")->valuestring, "conv1.weight");
    assert_string_equal(cJSON_GetObjectItem(t0, "dtype")->valuestring, "F32");
    cJSON *shape = cJSON_GetObjectItem(t0, "shape");
    assert_int_equal(cJSON_GetArraySize(shape), 4);
    assert_int_equal(cJSON_GetArrayItem(shape, 0)->valueint, 4);
    assert_int_equal(cJSON_GetObjectItem(t0, "numel")->valueint, 108);
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(t0, "data_offsets"), 1)->valueint, 432);
    cJSON *meta = cJSON_GetObjectItem(doc, "metadata");
    assert_string_equal(cJSON_GetObjectItem(meta, "config")->valuestring, "{\n  \"lr\": 3\n}");
    cJSON_Delete(doc);
    free(out);
}

static void test_golden(void **state) {
    (void)state;
    nac_status st;
    char *out = run_info(&st, 2, (char *[]){"info", GOLDEN, NULL});
    TU_OK(st);
    assert_has(out, "164 tensors");
    assert_has(out, "  conv1.weight ");
    assert_has(out, "[4,3,3,3]");
    assert_has(out, "metadata: 1 entry\n  doc: CIFAR-stem ResNet-18");
    free(out);
}

static void test_npy(void **state) {
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "%s/codes.npy", g_dir);
    uint64_t c[6] = {0};
    TU_OK(nac_npy_write(p, NAC_DT_U64, 2, (int64_t[]){3, 2}, c));
    nac_status st;
    char *out = run_info(&st, 2, (char *[]){"info", p, NULL});
    TU_OK(st);
    assert_has(out, "NumPy .npy version 1.0, dtype <u8 (U64), shape [3,2], 6 elements, 48 bytes of data");
    free(out);
    out = run_info(&st, 3, (char *[]){"info", p, "--json", NULL});
    TU_OK(st);
    cJSON *doc = cJSON_Parse(out);
    assert_non_null(doc);
    assert_string_equal(cJSON_GetObjectItem(doc, "format")->valuestring, "npy");
    assert_string_equal(cJSON_GetObjectItem(doc, "descr")->valuestring, "<u8");
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "shape"), 1)->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(doc, "numel")->valueint, 6);
    cJSON_Delete(doc);
    free(out);
}

static void test_errors(void **state) {
    (void)state;
    nac_status st;
    char p[128];
    snprintf(p, sizeof p, "%s/bad.safetensors", g_dir);
    FILE *f = fopen(p, "wb");
    fwrite("\x05\0\0\0\0\0\0\0[1,2]", 1, 13, f);
    fclose(f);
    free(run_info(&st, 2, (char *[]){"info", p, NULL}));
    assert_int_equal(st, NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "header is not a JSON object"));
    free(run_info(&st, 1, (char *[]){"info", NULL}));
    assert_int_equal(st, NAC_ERR_USAGE);
    free(run_info(&st, 3, (char *[]){"info", "--bogus", p, NULL}));
    assert_int_equal(st, NAC_ERR_USAGE);
    assert_non_null(strstr(nac_last_error(), "unknown option --bogus"));
    free(run_info(&st, 3, (char *[]){"info", p, p, NULL}));
    assert_int_equal(st, NAC_ERR_USAGE);
    snprintf(p, sizeof p, "%s/none.safetensors", g_dir);
    free(run_info(&st, 2, (char *[]){"info", p, NULL}));
    assert_int_equal(st, NAC_ERR_NOINPUT);
}

/* Issue 15: a FIFO is refused at once (it hung forever: alarm() kills a regression),
 * and names and metadata with escape sequences are printed escaped. */
static void test_fifo_and_escapes(void **state) {
    (void)state;
    char fifo[128];
    snprintf(fifo, sizeof fifo, "%s/pipe.safetensors", g_dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    nac_status st;
    alarm(20);
    char *out = run_info(&st, 2, (char *[]){"info", fifo, NULL});
    alarm(0);
    assert_int_equal(st, NAC_ERR_IO);
    assert_int_equal(nac_status_exit_code(st), 74);
    assert_non_null(strstr(nac_last_error(), "pipe.safetensors: is a FIFO (named pipe), not a regular file"));
    free(out);
    /* a device is refused the same way */
    out = run_info(&st, 2, (char *[]){"info", "/dev/zero", NULL});
    assert_int_equal(st, NAC_ERR_IO);
    assert_non_null(strstr(nac_last_error(), "/dev/zero: is a device, not a regular file"));
    free(out);
    char p[128];
    snprintf(p, sizeof p, "%s/evil.safetensors", g_dir);
    nac_st_writer *w = nac_st_writer_new();
    float x[2] = {0};
    TU_OK(nac_st_writer_add(w, "evil\x1b]0;pwned\x07", NAC_DT_F32, 1, (int64_t[]){2}, x));
    TU_OK(nac_st_writer_meta(w, "k\x1b[2J", "line1\n\x1b[31mred\xc2\x9b"));
    TU_OK(nac_st_writer_save(w, p));
    nac_st_writer_free(w);
    out = run_info(&st, 2, (char *[]){"info", p, NULL});
    TU_OK(st);
    if (strchr(out, 0x1b) || strchr(out, 0x07) || strstr(out, "\xc2\x9b"))
        fail_msg("raw control characters reach the terminal:\n%s", out);
    assert_has(out, "evil\\e]0;pwned\\x07");
    assert_has(out, "  k\\e[2J: line1\n    \\e[31mred\\u009b\n");
    free(out);
    /* --json: the same names, JSON-escaped, still valid JSON */
    out = run_info(&st, 3, (char *[]){"info", "--json", p, NULL});
    TU_OK(st);
    if (strchr(out, 0x1b) || strchr(out, 0x07) || strstr(out, "\xc2\x9b"))
        fail_msg("raw control characters reach the terminal:\n%s", out);
    cJSON *doc = cJSON_Parse(out);
    assert_non_null(doc);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(doc, "metadata");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "k\x1b[2J")->valuestring,
                        "line1\n\x1b[31mred\xc2\x9b");
    cJSON_Delete(doc);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_npy),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_fifo_and_escapes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
