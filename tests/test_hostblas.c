/* nac_host_sgemm against a naive double reference: the four transpose cases on odd sizes
 * with padded leading dimensions (padding left untouched), BLAS's alpha = 0 / beta = 0
 * rules (NaN in C or A must not leak), every bad argument, and the same checks re-run in
 * child processes on oneDNN's AVX2 and SSE4.1 code paths. */
#include "tests/testutil.h"

#include <spawn.h>
#include <stdbool.h>
#include <sys/wait.h>

#include "backend/hostblas.h"

extern char **environ;

static const float PAD = 12345.0f; /* what the ld padding of C holds, before and after */

typedef struct case_t {
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    float *a, *b, *c; /* stored A, B; C (m, ldc) */
    double *c0;       /* (m, n) C before the call */
} case_t;

/* Random A, B, C of the given shape, each leading dimension `extra` more than the minimum. */
static case_t case_new(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t extra,
                       uint64_t seed) {
    case_t t = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k};
    t.lda = (ta ? m : k) + extra;
    t.ldb = (tb ? k : n) + extra;
    t.ldc = n + extra + 1;
    int64_t na = (ta ? k : m) * t.lda, nb = (tb ? n : k) * t.ldb;
    t.a = malloc((size_t)na * sizeof *t.a);
    t.b = malloc((size_t)nb * sizeof *t.b);
    t.c = malloc((size_t)(m * t.ldc) * sizeof *t.c);
    t.c0 = malloc((size_t)(m * n) * sizeof *t.c0);
    assert_true(t.a && t.b && t.c && t.c0);
    tu_randn(t.a, na, seed, 1.0f);
    tu_randn(t.b, nb, seed + 1, 1.0f);
    tu_randn(t.c, m * t.ldc, seed + 2, 1.0f);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < t.ldc; j++) {
            if (j >= n) t.c[i * t.ldc + j] = PAD;
            else t.c0[i * n + j] = t.c[i * t.ldc + j];
        }
    return t;
}

static void case_free(case_t *t) {
    free(t->a);
    free(t->b);
    free(t->c);
    free(t->c0);
}

static float at_a(const case_t *t, int64_t i, int64_t p) {
    return t->ta ? t->a[p * t->lda + i] : t->a[i * t->lda + p];
}
static float at_b(const case_t *t, int64_t p, int64_t j) {
    return t->tb ? t->b[j * t->ldb + p] : t->b[p * t->ldb + j];
}

/* Run the case and compare C with alpha op(A) op(B) + beta C0 in double (beta 0: C0 unused). */
static void case_check(case_t *t, float alpha, float beta, const char *what) {
    TU_OK(nac_host_sgemm(t->ta, t->tb, t->m, t->n, t->k, alpha, t->a, t->lda, t->b, t->ldb, beta,
                         t->c, t->ldc));
    double *want = malloc((size_t)t->n * sizeof *want);
    float *got = malloc((size_t)t->n * sizeof *got);
    assert_true(want && got);
    char msg[160];
    for (int64_t i = 0; i < t->m; i++) {
        for (int64_t j = 0; j < t->n; j++) {
            double s = 0;
            for (int64_t p = 0; p < t->k; p++) s += (double)at_a(t, i, p) * at_b(t, p, j);
            want[j] = alpha * s + (beta == 0 ? 0.0 : beta * t->c0[i * t->n + j]);
            got[j] = t->c[i * t->ldc + j];
        }
        snprintf(msg, sizeof msg, "%s (%c%c %lldx%lldx%lld) row %lld", what, t->ta ? 'T' : 'N',
                 t->tb ? 'T' : 'N', (long long)t->m, (long long)t->n, (long long)t->k,
                 (long long)i);
        tu_close_d(got, want, t->n, 1e-5, 1e-5, msg);
        for (int64_t j = t->n; j < t->ldc; j++)
            if (t->c[i * t->ldc + j] != PAD)
                fail_msg("%s: padding column %lld was written", msg, (long long)j);
    }
    free(want);
    free(got);
}

static void test_transposes(void **state) {
    (void)state;
    static const int64_t shapes[][3] = {{7, 5, 3}, {1, 9, 4}, {6, 1, 5}, {37, 29, 53}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                case_t t =
                    case_new(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 3, 10 * s + 1);
                case_check(&t, 1.0f, 0.0f, "alpha 1, beta 0");
                case_free(&t);
                t = case_new(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 2, 10 * s + 5);
                case_check(&t, 1.5f, -0.5f, "alpha 1.5, beta -0.5");
                case_free(&t);
                t = case_new(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 0, 10 * s + 7);
                case_check(&t, -2.0f, 1.0f, "alpha -2, beta 1, tight ld");
                case_free(&t);
            }
}

/* beta = 0: C is write-only, NaN or Inf already there must vanish. */
static void test_beta0_ignores_c(void **state) {
    (void)state;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            case_t t = case_new(ta, tb, 7, 5, 3, 2, 40);
            for (int64_t i = 0; i < t.m; i++)
                for (int64_t j = 0; j < t.n; j++) t.c[i * t.ldc + j] = (i + j) % 2 ? NAN : INFINITY;
            case_check(&t, 0.75f, 0.0f, "beta 0 over NaN/Inf");
            case_free(&t);
        }
}

/* alpha = 0: C = beta C, A and B unread (NaN in them must not leak); beta 0 then zeroes C. */
static void test_alpha0(void **state) {
    (void)state;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            case_t t = case_new(ta, tb, 7, 5, 3, 2, 50);
            int64_t na = (ta ? t.k : t.m) * t.lda, nb = (tb ? t.n : t.k) * t.ldb;
            for (int64_t i = 0; i < na; i++) t.a[i] = NAN;
            for (int64_t i = 0; i < nb; i++) t.b[i] = NAN;
            TU_OK(nac_host_sgemm(ta, tb, t.m, t.n, t.k, 0.0f, t.a, t.lda, t.b, t.ldb, 0.5f, t.c,
                                 t.ldc));
            for (int64_t i = 0; i < t.m; i++)
                for (int64_t j = 0; j < t.ldc; j++) {
                    float want = j < t.n ? (float)(0.5 * t.c0[i * t.n + j]) : PAD;
                    assert_true(t.c[i * t.ldc + j] == want);
                }
            for (int64_t i = 0; i < t.m; i++)
                for (int64_t j = 0; j < t.n; j++) t.c[i * t.ldc + j] = NAN;
            TU_OK(nac_host_sgemm(ta, tb, t.m, t.n, t.k, 0.0f, t.a, t.lda, t.b, t.ldb, 0.0f, t.c,
                                 t.ldc));
            for (int64_t i = 0; i < t.m; i++)
                for (int64_t j = 0; j < t.ldc; j++)
                    assert_true(t.c[i * t.ldc + j] == (j < t.n ? 0.0f : PAD));
            case_free(&t);
        }
}

/* One bad call: NAC_ERR_INVALID, a message naming the op and the sizes, C untouched. */
static void expect_invalid(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a,
                           int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc,
                           const char *needle) {
    float before[64];
    if (c) memcpy(before, c, sizeof before);
    nac_clear_error();
    nac_status s = nac_host_sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
    if (s != NAC_ERR_INVALID)
        fail_msg(
            "m %lld n %lld k %lld lda %lld ldb %lld ldc %lld: got status %d (%s), want invalid",
            (long long)m, (long long)n, (long long)k, (long long)lda, (long long)ldb,
            (long long)ldc, (int)s, nac_last_error());
    char sizes[96];
    snprintf(sizes, sizeof sizes, "nac_host_sgemm(%c%c, m %lld, n %lld, k %lld)", ta ? 'T' : 'N',
             tb ? 'T' : 'N', (long long)m, (long long)n, (long long)k);
    const char *e = nac_last_error();
    if (!strstr(e, sizes) || !strstr(e, needle))
        fail_msg("message \"%s\" lacks \"%s\" or \"%s\"", e, sizes, needle);
    if (c) assert_memory_equal(before, c, sizeof before);
}

static void test_invalid(void **state) {
    (void)state;
    float a[64], b[64], c[64];
    tu_randn(a, 64, 60, 1.0f);
    tu_randn(b, 64, 61, 1.0f);
    tu_randn(c, 64, 62, 1.0f);
    /* m 4, n 3, k 2 fits every buffer below with the minimal leading dimensions */
    expect_invalid(false, false, 4, 3, 2, NULL, 2, b, 3, c, 3, "a is NULL");
    expect_invalid(false, false, 4, 3, 2, a, 2, NULL, 3, c, 3, "b is NULL");
    expect_invalid(false, false, 4, 3, 2, a, 2, b, 3, NULL, 3, "c is NULL");
    expect_invalid(false, false, 0, 3, 2, a, 2, b, 3, c, 3, ">= 1");
    expect_invalid(false, false, 4, 0, 2, a, 2, b, 3, c, 3, ">= 1");
    expect_invalid(false, false, 4, 3, 0, a, 2, b, 3, c, 3, ">= 1");
    expect_invalid(false, false, -4, 3, 2, a, 2, b, 3, c, 3, ">= 1");
    expect_invalid(false, false, 4, 3, -2, a, 2, b, 3, c, 3, ">= 1");
    expect_invalid(false, false, 4, 3, 2, a, 1, b, 3, c, 3, "lda 1 is less than 2");
    expect_invalid(true, false, 4, 3, 2, a, 3, b, 3, c, 3, "lda 3 is less than 4");
    expect_invalid(false, false, 4, 3, 2, a, 2, b, 2, c, 3, "ldb 2 is less than 3");
    expect_invalid(false, true, 4, 3, 2, a, 2, b, 1, c, 3, "ldb 1 is less than 2");
    expect_invalid(false, false, 4, 3, 2, a, 2, b, 3, c, 2, "ldc 2 is less than 3");
    expect_invalid(true, true, 4, 3, 2, a, 4, b, 2, c, -1, "ldc -1 is less than 3");
    expect_invalid(false, false, 4, 3, 2, a, INT64_MAX / 2, b, 3, c, 3, "too large");
    /* the minimal leading dimensions themselves are accepted */
    TU_OK(nac_host_sgemm(true, true, 4, 3, 2, 1.0f, a, 4, b, 2, 0.0f, c, 3));
}

#define CHILD_ENV "NAC_TEST_HOSTBLAS_ISA"

/* oneDNN picks its sgemm code by CPU (and its reference path reads C for alpha = 0): run
 * this program again, capped at older ISAs, so each path is held to the same contract. */
static void test_other_isas(void **state) {
    (void)state;
    static const char *isas[] = {"AVX2", "SSE41"};
    for (size_t i = 0; i < sizeof isas / sizeof *isas; i++) {
        size_t n = 0;
        while (environ[n]) n++;
        char **env = calloc(n + 3, sizeof *env);
        assert_non_null(env);
        char isa[64], mark[64];
        snprintf(isa, sizeof isa, "DNNL_MAX_CPU_ISA=%s", isas[i]);
        snprintf(mark, sizeof mark, CHILD_ENV "=%s", isas[i]);
        size_t e = 0;
        for (size_t j = 0; j < n; j++)
            if (strncmp(environ[j], "DNNL_MAX_CPU_ISA=", 17) &&
                strncmp(environ[j], CHILD_ENV "=", sizeof CHILD_ENV))
                env[e++] = environ[j];
        env[e++] = isa;
        env[e++] = mark;
        env[e] = NULL;
        char self[] = "/proc/self/exe";
        char *argv[] = {self, NULL};
        pid_t pid;
        int rc = posix_spawn(&pid, self, NULL, NULL, argv, env);
        free(env);
        if (rc != 0) fail_msg("posix_spawn %s: error %d", self, rc);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("the checks failed with DNNL_MAX_CPU_ISA=%s (wait status %d)", isas[i],
                     status);
    }
}

int main(void) {
    const struct CMUnitTest core[] = {
        cmocka_unit_test(test_transposes),
        cmocka_unit_test(test_beta0_ignores_c),
        cmocka_unit_test(test_alpha0),
        cmocka_unit_test(test_invalid),
    };
    const char *child = getenv(CHILD_ENV);
    if (child) {
        char name[64];
        snprintf(name, sizeof name, "hostblas (DNNL_MAX_CPU_ISA=%s)", child);
        return cmocka_run_group_tests_name(name, core, NULL, NULL);
    }
    const struct CMUnitTest all[] = {
        cmocka_unit_test(test_transposes),
        cmocka_unit_test(test_beta0_ignores_c),
        cmocka_unit_test(test_alpha0),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_other_isas),
    };
    return cmocka_run_group_tests_name("hostblas", all, NULL, NULL);
}
