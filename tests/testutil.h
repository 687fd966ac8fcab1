/* Shared helpers for the CMocka tests: random inputs, closeness checks that fail loudly
 * (naming the first mismatch), and the backend under test ($NAC_TEST_BACKEND). Header-only. */
#ifndef NAC_TESTUTIL_H
#define NAC_TESTUTIL_H

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>

#include "backend/backend.h"
#include "backend/rng.h"

static inline void tu_randn(float *x, int64_t n, uint64_t seed, float scale) {
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(seed, 77, 0, 0));
    for (int64_t i = 0; i < n; i++) x[i] = (float)nac_rng_normal(&r) * scale;
}

static inline void tu_randu(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(seed, 78, 0, 0));
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)nac_rng_uniform(&r);
}

/* |got - want| <= atol + rtol * |want| for every element, else fail naming the index. */
static inline void tu_close_f(const float *got, const float *want, int64_t n, double rtol,
                              double atol, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if (!(fabs(g - w) <= atol + rtol * fabs(w)))
            fail_msg("%s: element %lld: got %.9g, want %.9g (rtol %g, atol %g)", what,
                     (long long)i, g, w, rtol, atol);
    }
}

static inline void tu_close_d(const float *got, const double *want, int64_t n, double rtol,
                              double atol, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if (!(fabs(g - w) <= atol + rtol * fabs(w)))
            fail_msg("%s: element %lld: got %.9g, want %.9g (rtol %g, atol %g)", what,
                     (long long)i, g, w, rtol, atol);
    }
}

/* Largest |a-b| / max(|b|, floor) over the arrays: a relative error that ignores tiny values. */
static inline double tu_max_rel(const float *a, const double *b, int64_t n, double floor_) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]) / fmax(fabs(b[i]), floor_);
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

#define TU_OK(expr)                                                                  \
    do {                                                                             \
        nac_status tu_s_ = (expr);                                                   \
        if (tu_s_ != NAC_OK) fail_msg("%s failed: %s", #expr, nac_last_error());     \
    } while (0)

/* The backend every test runs on: $NAC_TEST_BACKEND, "cpu" when unset, so a new backend
 * runs the same tests (NAC_TEST_BACKEND=cuda ctest). The one place tests name a backend. */
static inline const char *tu_backend_name(void) {
    const char *e = getenv("NAC_TEST_BACKEND");
    return e && *e ? e : "cpu";
}

static inline nac_backend_t *tu_backend(void) {
    nac_backend_t *be = NULL;
    nac_backend_options o = {.threads = 2};
    TU_OK(nac_backend_create(tu_backend_name(), &o, &be));
    return be;
}

/* What the backend says about t's storage (layout, padding): the tests' only view of it. */
static inline nac_tensor_info tu_info(const nac_tensor_t *t) {
    nac_tensor_info i;
    TU_OK(nac_tensor_get_info(t, &i));
    return i;
}

/* Whether be offers physical layouts besides the plain one (nac_tensor_relayout). The
 * CUDA backend has the plain one only: there the op tests' blocked cases run plain. */
static inline bool tu_has_layouts(const nac_backend_t *be) {
    return be->iface->tensor_relayout != NULL;
}

/* Primitives / plans the backend has cached so far. */
static inline size_t tu_cached_ops(nac_backend_t *be) {
    return nac_backend_memory_stats(be).cached_ops;
}

/* Upload host data into a new tensor of the given shape. */
static inline nac_tensor_t *tu_tensor(nac_backend_t *be, int ndim, const int64_t *dim,
                                      const float *data) {
    nac_tensor_t *t = nac_tensor_new(be, ndim, dim);
    assert_non_null(t);
    if (data) TU_OK(nac_tensor_from_host(t, data));
    return t;
}

/* Parse the file at path as JSON; fails the test if it is missing or malformed. */
static inline cJSON *tu_load_json_path(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (!j) fail_msg("%s is not valid JSON", path);
    return j;
}

/* Parse tests/data/<name> as JSON. */
static inline cJSON *tu_load_json(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", NAC_TEST_DATA, name);
    return tu_load_json_path(path);
}

/* ---- temporary folders ---- */
static int tu_rm_entry_(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Remove a folder and everything below it; 0 on success. */
static inline int tu_rm_tree(const char *dir) {
    return nftw(dir, tu_rm_entry_, 16, FTW_DEPTH | FTW_PHYS);
}

/* Make a fresh folder /tmp/<tag>_XXXXXX into dir (n bytes); 0 on success. */
static inline int tu_mkdtemp(char *dir, size_t n, const char *tag) {
    int k = snprintf(dir, n, "/tmp/%s_XXXXXX", tag);
    if (k < 0 || (size_t)k >= n) return -1;
    return mkdtemp(dir) ? 0 : -1;
}

/* Whether a path exists. */
static inline bool tu_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* dir/name in one of eight rotating buffers (valid until eight more calls). */
static inline const char *tu_path(const char *dir, const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* Write n bytes to path (a test's hand-made file), failing the test on any error. */
static inline void tu_write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Run the program argv (argv[0] a path, NULL-terminated) with stdout to /dev/null and
 * stderr to dir/stderr.txt; its stderr into err (n bytes, NUL-terminated). Returns the
 * exit status, or 128 + the signal that ended it. */
static inline int tu_run_exe(const char *dir, char *const *argv, char *err, size_t n) {
    char errpath[512];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", dir);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fe = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644),
            fo = open("/dev/null", O_WRONLY);
        if (fe < 0 || fo < 0) _exit(127);
        dup2(fe, 2);
        dup2(fo, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    FILE *f = fopen(errpath, "r");
    assert_non_null(f);
    size_t k = fread(err, 1, n - 1, f);
    err[k] = 0;
    fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#endif
