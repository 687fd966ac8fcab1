/* Start-up memory of a build with the CUDA backend: cuBLAS is not a link-time dependency
 * (linking it costs every process ~210 MB resident before main) but is loaded by the
 * backend when it is created (backend/cuda/blas.c). Checked in-process through
 * /proc/self/maps: no libcublas before, and, in a CUDA build on a machine that has the
 * library (the CUDA toolkit, GPU or not), every entry point resolved after loading it. */
#include "tests/testutil.h"

#ifdef NAC_HAVE_CUDA
#include "backend/cuda/blas.h"
#endif

static bool mapped(const char *lib) {
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, lib) != NULL;
    fclose(f);
    return found;
}

static void test_cublas_not_loaded_at_start(void **state) {
    (void)state;
    /* this test program links libnacvae like `nac` does */
    assert_false(mapped("libcublas"));
    assert_false(mapped("libcublasLt"));
}

static void test_cpu_backend_leaves_cublas_unloaded(void **state) {
    (void)state;
    nac_backend_t *be = NULL;
    nac_backend_options o = {.threads = 1};
    assert_int_equal(nac_backend_create("cpu", &o, &be), NAC_OK);
    nac_backend_free(be);
    assert_false(mapped("libcublas"));
}

#ifdef NAC_HAVE_CUDA
static void test_cublas_loads_at_run_time(void **state) {
    (void)state;
    const char *why = NULL;
    const cuda_blas_fns *bl = cuda_blas(&why);
    if (!bl) { /* a CUDA build run where the toolkit's libraries are absent */
        print_message("skipped: %s\n", why);
        assert_non_null(why);
        return;
    }
    assert_true(mapped("libcublas"));
    assert_non_null(bl->create);
    assert_non_null(bl->destroy);
    assert_non_null(bl->set_stream);
    assert_non_null(bl->set_math_mode);
    assert_non_null(bl->sgemm);
    assert_string_equal(bl->status_name(CUBLAS_STATUS_NOT_INITIALIZED),
                        "CUBLAS_STATUS_NOT_INITIALIZED");
    assert_non_null(bl->status_string(CUBLAS_STATUS_SUCCESS));
    assert_ptr_equal(cuda_blas(NULL), bl); /* once per process */
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cublas_not_loaded_at_start),
        cmocka_unit_test(test_cpu_backend_leaves_cublas_unloaded),
#ifdef NAC_HAVE_CUDA
        cmocka_unit_test(test_cublas_loads_at_run_time),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
