/* cuBLAS, loaded when the CUDA backend is created rather than when the program starts.
 * Linking libcublas (and with it libcublasLt, 540 MB on disk) costs every process about
 * 210 MB of resident memory at start-up, before main, whether or not it ever touches a GPU:
 * measured here, an empty program linked with -lcublasLt holds 211 MB, with -lcudart 1.3 MB,
 * with -lcudnn 2.6 MB (cuDNN 9 loads its engine libraries itself, on first use). So the
 * handful of cuBLAS entry points the backend calls are resolved with dlopen/dlsym on the
 * first nac_backend_cuda_create, once per process, and a CPU run never maps the library.
 * See docs/cuda.md ("Start-up memory"). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "backend/cuda/blas.h"

#define STR_(x) #x
#define STR(x) STR_(x)

static cuda_blas_fns fns;
static char load_error[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void *sym(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (!p && !load_error[0])
        snprintf(load_error, sizeof load_error, "libcublas has no symbol %s", name);
    return p;
}

static void load(void) {
    /* by soname first (the program's run path, LD_LIBRARY_PATH, ld.so.cache), then the
       file CMake linked against when the program was built */
    const char *names[] = {("libcublas.so." STR(CUBLAS_VER_MAJOR)),
#ifdef NAC_CUBLAS_PATH
                           NAC_CUBLAS_PATH,
#endif
                           "libcublas.so"};
    void *lib = NULL;
    char first[256] = ""; /* dlerror() of the first name tried */
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++) {
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        const char *why = lib ? NULL : dlerror();
        if (why && !first[0]) snprintf(first, sizeof first, "%s", why);
    }
    if (!lib) {
        snprintf(load_error, sizeof load_error, "cannot load cuBLAS (%s)",
                 first[0] ? first : "libcublas.so." STR(CUBLAS_VER_MAJOR) " not found");
        return;
    }
    fns.create = (cublasStatus_t(*)(cublasHandle_t *))sym(lib, "cublasCreate_v2");
    fns.destroy = (cublasStatus_t(*)(cublasHandle_t))sym(lib, "cublasDestroy_v2");
    fns.set_stream = (cublasStatus_t(*)(cublasHandle_t, cudaStream_t))sym(lib, "cublasSetStream_v2");
    fns.set_math_mode =
        (cublasStatus_t(*)(cublasHandle_t, cublasMath_t))sym(lib, "cublasSetMathMode");
    fns.sgemm = (cuda_sgemm_fn)sym(lib, "cublasSgemm_v2");
    fns.status_name = (const char *(*)(cublasStatus_t))sym(lib, "cublasGetStatusName");
    fns.status_string = (const char *(*)(cublasStatus_t))sym(lib, "cublasGetStatusString");
    if (load_error[0]) dlclose(lib); /* the library stays loaded otherwise, for the process */
}

const cuda_blas_fns *cuda_blas(const char **why) {
    pthread_once(&once, load);
    if (load_error[0]) {
        if (why) *why = load_error;
        return NULL;
    }
    return &fns;
}
