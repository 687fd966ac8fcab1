/* The libFuzzer entry point every tests/fuzz/fuzz_<name>.c defines; built either with
 * -fsanitize=fuzzer (NAC_FUZZ, clang) or with replay.c's main (every build). */
#ifndef NAC_FUZZ_H
#define NAC_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
