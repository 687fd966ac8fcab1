/* The cuBLAS entry points the CUDA backend calls, resolved at run time (blas.c says why). */
#ifndef NAC_BACKEND_CUDA_BLAS_H
#define NAC_BACKEND_CUDA_BLAS_H

#include <cublas_v2.h>

typedef cublasStatus_t (*cuda_sgemm_fn)(cublasHandle_t, cublasOperation_t, cublasOperation_t,
                                        int, int, int, const float *, const float *, int,
                                        const float *, int, const float *, float *, int);

typedef struct cuda_blas_fns {
    cublasStatus_t (*create)(cublasHandle_t *);
    cublasStatus_t (*destroy)(cublasHandle_t);
    cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
    cublasStatus_t (*set_math_mode)(cublasHandle_t, cublasMath_t);
    cuda_sgemm_fn sgemm;
    const char *(*status_name)(cublasStatus_t);
    const char *(*status_string)(cublasStatus_t);
} cuda_blas_fns;

/* The loaded functions (once per process), or NULL with *why saying what failed. */
const cuda_blas_fns *cuda_blas(const char **why);

#endif
