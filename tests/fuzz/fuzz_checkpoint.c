/* Fuzz target: a checkpoint loaded into a model's parameter list (names, shapes, dtypes,
 * optimiser state; strict and not), on the CPU backend. */
#include <stdlib.h>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "nn/param.h"
#include "tests/fuzz/fuzz.h"

static nac_backend_t *g_be;
static nac_params_t g_ps;

static void setup(void) {
    nac_backend_options o = {.threads = 1};
    if (nac_backend_create("cpu", &o, &g_be) != NAC_OK) abort();
    nac_params_init(&g_ps);
    if (!nac_params_add(&g_ps, g_be, "conv1.weight", 4, (int64_t[]){2, 1, 3, 3}, 0) ||
        !nac_params_add(&g_ps, g_be, "bn1.weight", 1, (int64_t[]){2}, 0) ||
        !nac_params_add(&g_ps, g_be, "fc.bias", 1, (int64_t[]){3}, 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_be) setup();
    if (size < 1) return 0;
    int mode = data[0];
    nac_st_file *f;
    if (nac_st_load_mem("fuzz.safetensors", data + 1, size - 1, &f) != NAC_OK) return 0;
    (void)nac_ckpt_load_params(f, &g_ps, (mode & 4) ? "enc." : "", mode & 1, (mode & 2) != 0);
    nac_st_free(f);
    return 0;
}
