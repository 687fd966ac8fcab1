/* The machine's FP32 limit for `nac bench`: a register-resident FMA loop on every thread
 * (AVX-512, else AVX2+FMA, chosen at run time) and the best oneDNN sgemm at a large shape;
 * the peak is the higher of the two. Also the CPU's model name and clock (/proc/cpuinfo). */
#ifndef NAC_APP_PEAK_H
#define NAC_APP_PEAK_H

#include <stddef.h>
#include <stdint.h>

#include "backend/status.h"

typedef enum nac_fma_isa { NAC_FMA_NONE = 0, NAC_FMA_AVX2 = 1, NAC_FMA_AVX512 = 2 } nac_fma_isa;

/* The widest FMA instructions this CPU runs ("avx512f", "avx2+fma", or none). */
nac_fma_isa nac_fma_isa_best(void);
const char *nac_fma_isa_name(nac_fma_isa isa);

/* One thread's register-resident loop: `iters` rounds of NAC_FMA_ACC independent vector
 * FMAs acc = acc * m + a, m and a read through volatile so nothing folds. Returns the FMAs
 * issued (iters x accumulators x lanes); with m = a = 1 every lane ends at iters, and
 * *lane_sum (the sum of every lane of every accumulator) equals the returned count: the
 * check that the count is the work done. isa must be one this CPU runs. */
int64_t nac_fma_loop(nac_fma_isa isa, int64_t iters, double *lane_sum);

typedef struct nac_fp32_peak {
    int threads;
    const char *isa;         /* the FMA loop's instructions */
    double fma_gflops;       /* FMA loop on `threads` threads: 2 FLOPs a lane-FMA */
    double sgemm_gflops;     /* best oneDNN sgemm (n^3, on the backend's threads) */
    int64_t sgemm_n;
    double peak_gflops;      /* the higher of the two */
} nac_fp32_peak;

/* Run the FMA loop on `threads` threads (about `seconds` of wall time, best of three) and
 * oneDNN's sgemm at n = sgemm_n (best of three after a warm-up; 0 skips it). */
nac_status nac_fp32_peak_measure(int threads, double seconds, int64_t sgemm_n,
                                 nac_fp32_peak *out);

/* The CPU's model name and current clock of the first core from /proc/cpuinfo ("unknown"
 * and 0 when it cannot be read). */
void nac_cpu_describe(char *model, size_t n, double *mhz);

#endif
