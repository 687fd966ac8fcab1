/* Fuzz target: a CIFAR-10 binary batch (records of label + 3072 pixels), plain or gzipped. */
#include "data/dataset.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nac_dataset_t ds;
    if (nac_dataset_parse_cifar10("fuzz.bin", data, size, &ds) == NAC_OK) {
        int64_t counts[NAC_DATASET_MAX_CLASSES];
        nac_dataset_histogram(&ds, counts);
        nac_dataset_free(&ds);
    }
    return 0;
}
