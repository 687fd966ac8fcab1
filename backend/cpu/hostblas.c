/* Host-side sgemm for evaluation code on host arrays (kNN similarity blocks); model code
 * uses the backend's nac_gemm. Besides the backend, the one file that calls oneDNN: it
 * checks the arguments, and keeps BLAS's alpha = 0 / beta = 0 rules where oneDNN does not. */
#include "backend/hostblas.h"

#include <oneapi/dnnl/dnnl.h>

/* A stored matrix of rows x cols (row-major) with leading dimension ld: ld >= cols, and
 * every element addressable by an int64 offset. */
static nac_status check_matrix(const char *name, const float *p, int64_t rows, int64_t cols,
                               int64_t ld) {
    if (!p) return nac_error(NAC_ERR_INVALID, "%s is NULL", name);
    if (ld < cols)
        return nac_error(NAC_ERR_INVALID,
                         "ld%s %lld is less than %lld, the columns of %s as stored (%lld x %lld)",
                         name, (long long)ld, (long long)cols, name, (long long)rows,
                         (long long)cols);
    if (ld > INT64_MAX / rows)
        return nac_error(NAC_ERR_INVALID,
                         "%s as stored (%lld rows, ld%s %lld) is too large for int64 offsets", name,
                         (long long)rows, name, (long long)ld);
    return NAC_OK;
}

static nac_status check_args(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a,
                             int64_t lda, const float *b, int64_t ldb, const float *c,
                             int64_t ldc) {
    if (m < 1 || n < 1 || k < 1) return nac_error(NAC_ERR_INVALID, "m, n and k must be >= 1");
    NAC_TRY(check_matrix("a", a, ta ? k : m, ta ? m : k, lda));
    NAC_TRY(check_matrix("b", b, tb ? n : k, tb ? k : n, ldb));
    return check_matrix("c", c, m, n, ldc);
}

/* C = beta C, writing zeros for beta = 0. oneDNN 2.6 without AVX reads C when alpha = 0 even
 * for beta = 0 (a NaN there survives), and would read A and B; BLAS reads none of them. */
static void scale_c(int64_t m, int64_t n, float beta, float *c, int64_t ldc) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
}

nac_status nac_host_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                          const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                          float *c, int64_t ldc) {
    char opa = ta ? 'T' : 'N', opb = tb ? 'T' : 'N';
    nac_status s = check_args(ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
    if (s != NAC_OK)
        return nac_error_prefix(s, "nac_host_sgemm(%c%c, m %lld, n %lld, k %lld): ", opa, opb,
                                (long long)m, (long long)n, (long long)k);
    if (alpha == 0.0f) {
        scale_c(m, n, beta, c, ldc);
        return NAC_OK;
    }
    /* With alpha != 0, every oneDNN 2.6 CPU path (SSE4.1 to AVX-512) treats beta = 0 as a
     * write-only C, as BLAS does; tests/test_hostblas.c checks it on several ISAs. */
    dnnl_status_t st = dnnl_sgemm(opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (st != dnnl_success)
        return nac_error(NAC_ERR_BACKEND,
                         "nac_host_sgemm(%c%c, m %lld, n %lld, k %lld, lda %lld, ldb %lld, ldc "
                         "%lld): dnnl_sgemm failed with status %d",
                         opa, opb, (long long)m, (long long)n, (long long)k, (long long)lda,
                         (long long)ldb, (long long)ldc, (int)st);
    return NAC_OK;
}
