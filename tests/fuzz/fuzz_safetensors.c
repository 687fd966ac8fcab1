/* Fuzz target: a safetensors file (header, metadata, offsets), then every tensor read
 * back as float32 and every metadata key looked up. */
#include <stdlib.h>

#include "io/safetensors.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nac_st_file *f;
    if (nac_st_load_mem("fuzz.safetensors", data, size, &f) != NAC_OK) return 0;
    for (int i = 0; i < f->ntensors; i++) {
        const nac_st_tensor *t = &f->tensors[i];
        int64_t n = nac_st_numel(t);
        if (n > (1 << 20)) continue;
        float *x = malloc((size_t)(n ? n : 1) * sizeof *x);
        if (x && nac_st_read_f32(f, t->name, x, n) != NAC_OK) abort(); /* a loaded tensor must read */
        free(x);
        if (nac_st_find(f, t->name) == NULL) abort();
    }
    for (int i = 0; i < f->nmeta; i++)
        if (!nac_st_meta(f, f->meta_keys[i])) abort();
    nac_st_free(f);
    return 0;
}
