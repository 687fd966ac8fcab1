/* The README's bad-input table, row by row, on the real `nac` binary: each bad input ends
 * with one message on stderr naming the file and the problem, and its sysexits code;
 * never a crash, and nothing created. Run with `-v`-style output: every row's message is
 * printed, so the table can be checked against it. */
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "testutil.h"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_dir, sizeof g_dir, "nac_bad_inputs");
}

static int teardown(void **state) {
    (void)state;
    tu_rm_tree(g_dir);
    return 0;
}

static const char *tpath(const char *name) { return tu_path(g_dir, name); }

static void write_text(const char *name, const char *text) {
    tu_write_bytes(tpath(name), text, strlen(text));
}

/* Run nac with argv (NULL-terminated, without the program); returns the exit code and the
 * first line of stderr in err. */
static int run_nac(char *const *args, char *err, size_t n) {
    char *argv[16] = {NAC_NAC_EXE};
    int k = 1;
    for (; args[k - 1] && k < 15; k++) argv[k] = args[k - 1];
    argv[k] = NULL;
    int code = tu_run_exe(g_dir, argv, err, n);
    err[strcspn(err, "\n")] = 0;
    if (code > 128) fail_msg("nac %s crashed with signal %d", args[0], code - 128);
    return code;
}

typedef struct row {
    const char *input;
    char *args[8];
    int code;
    const char *msg; /* a part of the message */
} row;

static void test_table(void **state) {
    (void)state;
    /* the files of the table */
    write_text("malformed.json", "{\"train\": {\"epochs\": 5,}}\n");
    write_text("unknown.json", "{\"train\": {\"epoch\": 5}}\n");
    write_text("ok.json", "{\"data\": {\"dataset\": \"synthetic\"}}\n");
    tu_write_bytes(tpath("nul.json"), "{\"train\": {}}\n\0{}", 17);
    write_text("latin1.json", "{\"description\": \"caf\xe9\"}\n");
    uint8_t idx[16 + 8] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
    tu_write_bytes(tpath("train-images-idx3-ubyte"), idx, sizeof idx);
    tu_write_bytes(tpath("train-labels-idx1-ubyte"), "\0\0\x08\x01\0\0\0\x02\x01\x02", 10);
    uint8_t hostile[16] = {0, 0, 8, 3, 0, 0, 4, 0, 8, 0, 0, 0, 8, 0, 0, 0};
    mkdir(tpath("hostile"), 0755);
    tu_write_bytes(tpath("hostile/train-images-idx3-ubyte"), hostile, sizeof hostile);
    tu_write_bytes(tpath("hostile/train-labels-idx1-ubyte"), "\0\0\x08\x01\0\0\x04\x00", 8);
    tu_write_bytes(tpath("corrupt.safetensors"), "\x40\0\0\0\0\0\0\0{\"a\":", 13);
    nac_st_writer *w = nac_st_writer_new();
    float x[4] = {0};
    TU_OK(nac_st_writer_add(w, "conv1.weight", NAC_DT_F32, 1, (int64_t[]){4}, x));
    TU_OK(nac_st_writer_meta(w, "arch", "resnet18"));
    TU_OK(nac_st_writer_save(w, tpath("encoder.safetensors")));
    nac_st_writer_free(w);
    char o_runs[160], o_enc[200];
    snprintf(o_runs, sizeof o_runs, "run.dir=%s", tpath("runs"));
    snprintf(o_enc, sizeof o_enc, "model.encoder=%s", tpath("encoder.safetensors"));
    mkfifo(tpath("fifo.safetensors"), 0600);
    char p[12][160];
    snprintf(p[0], 160, "%s", tpath("malformed.json"));
    snprintf(p[1], 160, "%s", tpath("unknown.json"));
    snprintf(p[2], 160, "%s", tpath("ok.json"));
    snprintf(p[3], 160, "%s", tpath("nul.json"));
    snprintf(p[4], 160, "%s", tpath("latin1.json"));
    snprintf(p[5], 160, "%s", tpath("train-images-idx3-ubyte"));
    snprintf(p[6], 160, "%s", tpath("hostile/train-images-idx3-ubyte"));
    snprintf(p[7], 160, "%s", tpath("corrupt.safetensors"));
    snprintf(p[8], 160, "%s", tpath("fifo.safetensors"));
    const row rows[] = {
        {"malformed config", {"pretrain", "-c", p[0], o_runs}, 78, "malformed.json: malformed JSON near line 1, column 24: a trailing comma before '}'"},
        {"unknown key", {"pretrain", "-c", p[1], o_runs}, 78, "unknown.json: unknown key \"train.epoch\""},
        {"missing config", {"pretrain", "-c", "/nonexistent/x.json", o_runs}, 66, "config /nonexistent/x.json: No such file or directory"},
        {"NUL byte in a config", {"pretrain", "-c", p[3], o_runs}, 78, "nul.json: a NUL byte at line 2, column 1 (byte 14)"},
        {"config not UTF-8", {"pretrain", "-c", p[4], o_runs}, 78, "latin1.json: not valid UTF-8 at line 1, column 21"},
        {"bad override (trailing text)", {"pretrain", "-c", p[2], o_runs, "train.epochs=5abc"}, 78, "override \"train.epochs=5abc\": \"5abc\" is not an integer"},
        {"bad override (not a number)", {"pretrain", "-c", p[2], o_runs, "optim.lr=0x10"}, 78, "\"0x10\" is not a number"},
        {"bad override (bool)", {"pretrain", "-c", p[2], o_runs, "augment.blur=trueish"}, 78, "\"trueish\" is not true or false"},
        {"override without =", {"pretrain", "-c", p[2], o_runs, "--epochs"}, 64, "unexpected argument \"--epochs\""},
        {"inconsistent config", {"pretrain", "-c", p[2], o_runs, "optim.warmup_epochs=9", "train.epochs=9"}, 78, "\"optim.warmup_epochs\" = 9 must be below \"train.epochs\" = 9"},
        {"missing data", {"data", "/nonexistent/fashion"}, 66, "/nonexistent/fashion: no such file or folder"},
        {"truncated data", {"data", p[5]}, 65, "train-images-idx3-ubyte: header says 2 images of 2x3 (28 bytes) but the file holds 24 bytes: truncated"},
        {"hostile IDX header", {"data", p[6]}, 65, "train-images-idx3-ubyte: dimension 1 is 134217728 (1..1024 allowed"},
        {"corrupt checkpoint", {"info", p[7]}, 65, "corrupt.safetensors: header length 64 runs past the end of the file (13 bytes)"},
        {"FIFO instead of a file", {"info", p[8]}, 74, "fifo.safetensors: is a FIFO (named pipe), not a regular file"},
        {"incompatible checkpoint", {"vae", "-c", p[2], o_runs, o_enc, "model.arch=resnet50"}, 78, "encoder.safetensors holds a resnet18 encoder, the config asks for resnet50"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        char err[1024];
        int code = run_nac(rows[i].args, err, sizeof err);
        print_message("| %s | `%s` | %d |\n", rows[i].input, err, code);
        if (code != rows[i].code) fail_msg("%s: exit %d, want %d (%s)", rows[i].input, code, rows[i].code, err);
        if (!strstr(err, rows[i].msg)) fail_msg("%s: message \"%s\" lacks \"%s\"", rows[i].input, err, rows[i].msg);
        struct stat st;
        if (stat(tpath("runs"), &st) == 0) fail_msg("%s: the run folder was created", rows[i].input);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_table)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
