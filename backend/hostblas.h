/* Host-side matrix products for evaluation code that works on plain host arrays (kNN over
 * features already on the host, ...). Model code uses the backend's nac_gemm on tensors;
 * this entry exists so that such code need not include oneDNN (STYLE.md). */
#ifndef NAC_HOSTBLAS_H
#define NAC_HOSTBLAS_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/status.h"

/* C = alpha op(A) op(B) + beta C, row-major, like dnnl_sgemm / cblas_sgemm(CblasRowMajor).
 *   op(A) is (m, k): A is stored (m, k) with lda >= k, or (k, m) with lda >= m when ta.
 *   op(B) is (k, n): B is stored (k, n) with ldb >= n, or (n, k) with ldb >= k when tb.
 *   C is (m, n) with ldc >= n; it must not overlap A or B.
 * m, n, k >= 1 and a, b, c non-NULL, else NAC_ERR_INVALID naming the sizes.
 * As in BLAS: beta = 0 makes C write-only (NaN or Inf already in C does not propagate);
 * alpha = 0 does not read A or B (C = beta C). Runs on oneDNN's OpenMP threads (on the
 * calling thread alone when called inside a parallel region). */
nac_status nac_host_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                          const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                          float *c, int64_t ldc);

#endif
