/* Fuzz target: an IDX images file and its labels file, each plain or gzipped. The input
 * is split in two: its first two bytes (little-endian) give the images file's length,
 * the rest after it is the labels file; the third byte picks nclasses (0 = from labels). */
#include "data/dataset.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    size_t k = (size_t)data[0] | (size_t)data[1] << 8;
    int nclasses = data[2] % 12;
    data += 3;
    size -= 3;
    if (k > size) k = size;
    nac_dataset_t ds;
    if (nac_dataset_parse_idx("fuzz-images", data, k, "fuzz-labels", data + k, size - k, nclasses,
                              &ds) == NAC_OK) {
        int64_t counts[NAC_DATASET_MAX_CLASSES];
        nac_dataset_histogram(&ds, counts);
        nac_dataset_free(&ds);
    }
    return 0;
}
