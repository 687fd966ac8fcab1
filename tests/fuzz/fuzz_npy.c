/* Fuzz target: a NumPy .npy file (preamble, header dict, dtype, shape, data size). */
#include <stdlib.h>
#include <string.h>

#include "io/npy.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nac_npy a;
    if (nac_npy_parse("fuzz.npy", data, size, &a) != NAC_OK) return 0;
    int64_t n = nac_npy_numel(&a);
    if (n <= (1 << 20)) {
        float *x = malloc((size_t)(n ? n : 1) * sizeof *x);
        if (x) nac_dtype_to_f32(a.dtype, a.data, x, n);
        free(x);
    }
    nac_npy_free(&a);
    return 0;
}
