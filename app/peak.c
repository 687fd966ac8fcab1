/* The machine's FP32 limit (app/peak.h): a register-resident FMA loop per thread, chosen
 * by the CPU's instructions at run time, and oneDNN's best sgemm at a large shape. The
 * loop's vector code is compiled per function with target attributes, so the build's
 * baseline ISA (x86-64-v2) stays what it is. */
#include "app/peak.h"

#include <math.h>
#include <stdbool.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/hostblas.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PEAK_X86 1
#else
#define PEAK_X86 0
#endif

/* Independent accumulators: a Zen 5 or Sapphire Rapids core issues two vector FMAs a cycle
 * with a latency of 4, so at least 8 chains must be in flight; 12 leaves room for more
 * while staying inside the 16 (AVX2) or 32 (AVX-512) vector registers with m and a. */
#define NAC_FMA_ACC 12

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if PEAK_X86
#define FMA_BODY(T, FMADD, SET1, STORE, LANES)                                              \
    volatile float vm = 1.0f, va = 1.0f;                                                    \
    T m = SET1(vm), a = SET1(va);                                                           \
    T r0 = SET1(0.0f), r1 = r0, r2 = r0, r3 = r0, r4 = r0, r5 = r0, r6 = r0, r7 = r0,      \
      r8 = r0, r9 = r0, r10 = r0, r11 = r0;                                                 \
    for (int64_t i = 0; i < iters; i++) {                                                   \
        r0 = FMADD(r0, m, a);                                                               \
        r1 = FMADD(r1, m, a);                                                               \
        r2 = FMADD(r2, m, a);                                                               \
        r3 = FMADD(r3, m, a);                                                               \
        r4 = FMADD(r4, m, a);                                                               \
        r5 = FMADD(r5, m, a);                                                               \
        r6 = FMADD(r6, m, a);                                                               \
        r7 = FMADD(r7, m, a);                                                               \
        r8 = FMADD(r8, m, a);                                                               \
        r9 = FMADD(r9, m, a);                                                               \
        r10 = FMADD(r10, m, a);                                                             \
        r11 = FMADD(r11, m, a);                                                             \
    }                                                                                       \
    float out[NAC_FMA_ACC * (LANES)];                                                       \
    T all[NAC_FMA_ACC] = {r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11};               \
    for (int j = 0; j < NAC_FMA_ACC; j++) STORE(out + j * (LANES), all[j]);                \
    double s = 0;                                                                           \
    for (int j = 0; j < NAC_FMA_ACC * (LANES); j++) s += out[j];                            \
    *lane_sum = s;                                                                          \
    return iters * NAC_FMA_ACC * (LANES);

__attribute__((target("avx512f"))) static int64_t loop_avx512(int64_t iters, double *lane_sum) {
    FMA_BODY(__m512, _mm512_fmadd_ps, _mm512_set1_ps, _mm512_storeu_ps, 16)
}

__attribute__((target("avx2,fma"))) static int64_t loop_avx2(int64_t iters, double *lane_sum) {
    FMA_BODY(__m256, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_storeu_ps, 8)
}
#endif

nac_fma_isa nac_fma_isa_best(void) {
#if PEAK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return NAC_FMA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return NAC_FMA_AVX2;
#endif
    return NAC_FMA_NONE;
}

const char *nac_fma_isa_name(nac_fma_isa isa) {
    return isa == NAC_FMA_AVX512 ? "avx512f" : isa == NAC_FMA_AVX2 ? "avx2+fma" : "none";
}

int64_t nac_fma_loop(nac_fma_isa isa, int64_t iters, double *lane_sum) {
    *lane_sum = 0;
#if PEAK_X86
    if (isa == NAC_FMA_AVX512) return loop_avx512(iters, lane_sum);
    if (isa == NAC_FMA_AVX2) return loop_avx2(iters, lane_sum);
#else
    (void)iters;
#endif
    NAC_ASSERT(isa == NAC_FMA_NONE);
    return 0;
}

typedef struct fma_job {
    nac_fma_isa isa;
    int64_t iters, fmas;
    double sum;
    pthread_barrier_t *start;
} fma_job;

static void *fma_thread(void *p) {
    fma_job *j = p;
    pthread_barrier_wait(j->start);
    j->fmas = nac_fma_loop(j->isa, j->iters, &j->sum);
    return NULL;
}

/* GFLOP/s of `threads` threads running `iters` rounds each, from the common start to the
 * last finish. */
static nac_status fma_rate(nac_fma_isa isa, int threads, int64_t iters, double *gflops) {
    fma_job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    pthread_barrier_t start;
    if (!jobs || !tid || pthread_barrier_init(&start, NULL, (unsigned)threads + 1)) {
        free(jobs);
        free(tid);
        return nac_error(NAC_ERR_NOMEM, "FP32 peak: cannot set up %d threads", threads);
    }
    int started = 0;
    for (; started < threads; started++) {
        jobs[started] = (fma_job){.isa = isa, .iters = iters, .start = &start};
        if (pthread_create(&tid[started], NULL, fma_thread, &jobs[started])) break;
    }
    nac_status s = NAC_OK;
    if (started < threads) { /* release the barrier with stand-ins for the missing threads */
        s = nac_error(NAC_ERR_NOMEM, "FP32 peak: cannot start thread %d of %d", started + 1,
                      threads);
        for (int i = started; i < threads; i++) pthread_barrier_wait(&start);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s(), fmas = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(tid[i], NULL);
        fmas += (double)jobs[i].fmas;
    }
    double dt = now_s() - t0;
    pthread_barrier_destroy(&start);
    free(jobs);
    free(tid);
    *gflops = s == NAC_OK && dt > 0 ? 2.0 * fmas / dt / 1e9 : 0.0;
    return s;
}

static nac_status sgemm_best(int64_t n, double *gflops) {
    float *a = malloc((size_t)(n * n) * sizeof *a), *b = malloc((size_t)(n * n) * sizeof *b),
          *c = malloc((size_t)(n * n) * sizeof *c);
    nac_status s = a && b && c ? NAC_OK : nac_error(NAC_ERR_NOMEM, "FP32 peak: out of memory");
    for (int64_t i = 0; s == NAC_OK && i < n * n; i++) {
        a[i] = (float)(i % 13) * 0.01f;
        b[i] = (float)(i % 7) * 0.01f;
    }
    *gflops = 0;
    for (int r = 0; s == NAC_OK && r < 4; r++) {
        double t0 = now_s();
        s = nac_host_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = now_s() - t0, g = 2.0 * (double)n * (double)n * (double)n / dt / 1e9;
        if (r > 0 && g > *gflops) *gflops = g; /* the first run warms up */
    }
    free(a);
    free(b);
    free(c);
    return s;
}

nac_status nac_fp32_peak_measure(int threads, double seconds, int64_t sgemm_n,
                                 nac_fp32_peak *out) {
    memset(out, 0, sizeof *out);
    if (threads < 1 || !(seconds > 0) || sgemm_n < 0)
        return nac_error(NAC_ERR_INVALID,
                         "FP32 peak: need threads >= 1, seconds > 0, sgemm_n >= 0 (got %d, %g, "
                         "%lld)",
                         threads, seconds, (long long)sgemm_n);
    out->threads = threads;
    nac_fma_isa isa = nac_fma_isa_best();
    out->isa = nac_fma_isa_name(isa);
    if (isa != NAC_FMA_NONE) {
        double sum, t0 = now_s(); /* calibrate: rounds per second of one thread */
        int64_t probe = 1 << 18;
        nac_fma_loop(isa, probe, &sum);
        double dt = now_s() - t0;
        int64_t iters = (int64_t)(seconds / 3.0 * (double)probe / (dt > 1e-6 ? dt : 1e-6));
        if (iters < probe) iters = probe;
        for (int r = 0; r < 3; r++) {
            double g = 0;
            NAC_TRY(fma_rate(isa, threads, iters, &g));
            if (g > out->fma_gflops) out->fma_gflops = g;
        }
    }
    if (sgemm_n > 0) {
        int before = omp_get_max_threads();
        omp_set_num_threads(threads);
        out->sgemm_n = sgemm_n;
        nac_status s = sgemm_best(sgemm_n, &out->sgemm_gflops);
        omp_set_num_threads(before);
        NAC_TRY(s);
    }
    out->peak_gflops = fmax(out->fma_gflops, out->sgemm_gflops);
    return NAC_OK;
}

void nac_cpu_describe(char *model, size_t n, double *mhz) {
    snprintf(model, n, "unknown");
    *mhz = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    bool have_model = false, have_mhz = false;
    while ((!have_model || !have_mhz) && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        char *v = colon + 1;
        v += strspn(v, " \t");
        v[strcspn(v, "\n")] = '\0';
        if (!have_model && !strncmp(line, "model name", 10)) {
            snprintf(model, n, "%s", v);
            have_model = true;
        } else if (!have_mhz && !strncmp(line, "cpu MHz", 7)) {
            *mhz = atof(v);
            have_mhz = true;
        }
    }
    fclose(f);
}
