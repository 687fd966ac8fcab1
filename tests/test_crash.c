/* Crash safety end to end, on the real `nac` program: a pretraining run killed with SIGKILL
 * at random points (before its first checkpoint, mid-epoch, between checkpoints) and
 * resumed each time ends with the same weights and the same losses as an uninterrupted
 * run, every step logged once, and no temporary file left behind. A checkpoint write that
 * hits a file-size limit (a full disk) fails with an i/o error and leaves the previous
 * checkpoint intact. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "testutil.h"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_dir, sizeof g_dir, "nac_crash_test");
}

static int teardown(void **state) {
    (void)state;
    tu_rm_tree(g_dir);
    return 0;
}

static pid_t spawn(char *const argv[]) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid) {
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The step -> loss map of a run's "train" lines; fails on a step logged twice. */
static int read_losses(const char *run, double *loss, int max) {
    char path[256];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    int n = 0;
    for (int i = 0; i < max; i++) loss[i] = NAN;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"kind\":\"train\"")) continue;
        long step = strtol(strstr(line, "\"step\":") + 7, NULL, 10);
        assert_true(step >= 1 && step <= max);
        if (!isnan(loss[step - 1])) fail_msg("%s: step %ld logged twice", path, step);
        loss[step - 1] = atof(strstr(line, "\"loss\":") + 7);
        n++;
    }
    fclose(f);
    return n;
}

/* Every tensor of two checkpoints equal, byte for byte. */
static void same_tensors(const char *a, const char *b) {
    nac_st_file *fa, *fb;
    TU_OK(nac_st_load(a, &fa));
    TU_OK(nac_st_load(b, &fb));
    assert_int_equal(fa->ntensors, fb->ntensors);
    for (int i = 0; i < fa->ntensors; i++) {
        const nac_st_tensor *ta = &fa->tensors[i], *tb = nac_st_find(fb, ta->name);
        if (!tb) fail_msg("%s has no %s", b, ta->name);
        assert_int_equal(ta->end - ta->begin, tb->end - tb->begin);
        if (memcmp(nac_st_data(fa, ta), nac_st_data(fb, tb), ta->end - ta->begin))
            fail_msg("tensor %s differs after the kills", ta->name);
    }
    assert_string_equal(nac_st_meta(fa, "step"), nac_st_meta(fb, "step"));
    nac_st_free(fa);
    nac_st_free(fb);
}

static void no_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp"))
            fail_msg("%s: temporary file %s left behind", dir, e->d_name);
    closedir(d);
}

enum { STEPS = 36 }; /* 96 images / 16 = 6 steps an epoch, 6 epochs */

static void write_config(const char *path) {
    const char *cfg =
        "{\"data\": {\"dataset\": \"synthetic\", \"synthetic_n\": 96},"
        " \"augment\": {\"crop_min\": 0.5},"
        " \"model\": {\"arch\": \"resnet18\", \"width_mult\": 0.0625, \"proj_dim\": 32},"
        " \"method\": {\"objective\": \"nac\"},"
        " \"optim\": {\"lr\": 0.5, \"warmup_epochs\": 1},"
        " \"train\": {\"epochs\": 6, \"batch\": 16, \"workers\": 1, \"threads\": 1, \"log_every\": 1,"
        "            \"ckpt_every\": 1, \"stats_subset\": 16, \"knn_every\": 0}}";
    tu_write_bytes(path, cfg, strlen(cfg));
}

static void test_sigkill_resume(void **state) {
    (void)state;
    if (access(NAC_NAC_EXE, X_OK) != 0) {
        print_message("%s is not built: skipped\n", NAC_NAC_EXE);
        skip();
    }
    char cfg[128], rd[128], ref[192], run[192], a[300], b[300];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", g_dir);
    snprintf(rd, sizeof rd, "run.dir=%s", g_dir);
    snprintf(ref, sizeof ref, "%s/ref", g_dir);
    snprintf(run, sizeof run, "%s/killed", g_dir);
    write_config(cfg);
    char *full[] = {NAC_NAC_EXE, "pretrain", "-c", cfg, rd, "run.name=ref", NULL};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(wait_exit(spawn(full)), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* kills land anywhere in the first 90% of an uninterrupted run's time */
    long span_us = (long)((t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000) * 9 / 10;
    if (span_us < 1000) span_us = 1000;

    /* the killed run: the first kill once its folder exists, the next ones after resuming.
       A run that finishes before its first kill (a busy machine ran the reference slowly)
       is tried again in a new folder with kills twice as early. */
    srand(12345);
    int kills = 0;
    for (int attempt = 0; attempt < 8 && kills == 0; attempt++, span_us = span_us / 2 + 1) {
        snprintf(run, sizeof run, "%s/killed%d", g_dir, attempt);
        char name[64];
        snprintf(name, sizeof name, "run.name=killed%d", attempt);
        char *fresh[] = {NAC_NAC_EXE, "pretrain", "-c", cfg, rd, name, NULL};
        char *resume[] = {NAC_NAC_EXE, "pretrain", "--resume", run, NULL};
        snprintf(a, sizeof a, "%s/config.json", run);
        pid_t pid = spawn(fresh);
        for (int i = 0; i < 2000 && !tu_exists(a); i++) usleep(1000);
        int done = 0;
        for (int round = 0; round < 10; round++) {
            usleep((useconds_t)(rand() % span_us));
            kill(pid, SIGKILL);
            int rc = wait_exit(pid);
            if (rc == 0) {
                done = 1;
                break;
            }
            assert_int_equal(rc, 128 + SIGKILL);
            kills++;
            pid = spawn(resume);
        }
        if (!done) assert_int_equal(wait_exit(pid), 0);
    }
    print_message("tiny NAC run killed %d times and resumed\n", kills);
    assert_true(kills >= 1);

    double lr_[STEPS], lk[STEPS];
    assert_int_equal(read_losses(ref, lr_, STEPS), STEPS);
    assert_int_equal(read_losses(run, lk, STEPS), STEPS);
    for (int i = 0; i < STEPS; i++)
        if (lr_[i] != lk[i]) fail_msg("step %d: loss %.9g after kills, %.9g uninterrupted", i + 1, lk[i], lr_[i]);
    snprintf(a, sizeof a, "%s/checkpoint.safetensors", ref);
    snprintf(b, sizeof b, "%s/checkpoint.safetensors", run);
    same_tensors(a, b);
    no_temporaries(run);
    no_temporaries(g_dir);
}

/* A write that exceeds the file-size limit fails with NAC_ERR_IO (exit 74) and leaves the
 * previous file whole and no temporary file; run in a child so the limit stays there. */
static void test_full_disk_keeps_checkpoint(void **state) {
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/full/checkpoint.safetensors", g_dir);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/full", g_dir);
    assert_int_equal(mkdir(sub, 0777), 0);
    static unsigned char small[1000], big[200000];
    memset(small, 1, sizeof small);
    memset(big, 2, sizeof big);
    TU_OK(nac_write_file_atomic(path, small, sizeof small));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = 50000, .rlim_max = 50000};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(2);
        nac_status s = nac_write_file_atomic(path, big, sizeof big);
        _exit(s == NAC_ERR_IO && nac_status_exit_code(s) == 74 && strstr(nac_last_error(), path) ? 0 : 1);
    }
    assert_int_equal(wait_exit(pid), 0);
    unsigned char *back;
    size_t n;
    TU_OK(nac_read_file(path, &back, &n));
    assert_int_equal(n, sizeof small);
    assert_memory_equal(back, small, sizeof small);
    free(back);
    no_temporaries(sub);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_disk_keeps_checkpoint),
        cmocka_unit_test(test_sigkill_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
