/* NumPy .npy files, for features and codes that users take on in Python: written as
 * format 1.0 (little-endian, C order, header padded so the data starts on a 64-byte
 * boundary), atomically; read back (formats 1.0-3.0) with every field checked. */
#ifndef NAC_NPY_H
#define NAC_NPY_H

#include <stdint.h>

#include "io/safetensors.h"
#include "backend/status.h"

typedef struct nac_npy {
    nac_dtype dtype;
    int ndim;                          /* 0 for a scalar */
    int64_t shape[NAC_ST_MAX_DIMS];
    void *data;                        /* numel * nac_dtype_size(dtype) bytes, C order, LE */
    int version;                       /* major format version of the file read: 1, 2 or 3 */
} nac_npy;

/* NumPy's type string for a dtype ("<f4", "|u1", ...); NULL for BF16 (NumPy has none). */
const char *nac_npy_descr(nac_dtype d);
/* Write an array (little-endian data in C order, numel * dtype-size bytes) to path via
 * nac_write_file_atomicv. NAC_ERR_INVALID for a dtype NumPy lacks or a bad shape. */
nac_status nac_npy_write(const char *path, nac_dtype dtype, int ndim, const int64_t *shape,
                         const void *data);
/* Read and validate a file (magic, version, header dict, dtype, shape, data size).
 * Errors: NAC_ERR_NOINPUT missing, NAC_ERR_DATA malformed, NAC_ERR_IO. */
nac_status nac_npy_load(const char *path, nac_npy *out);
/* The same from a file already in memory (n bytes); name is used in messages. */
nac_status nac_npy_parse(const char *name, const void *bytes, size_t n, nac_npy *out);
void nac_npy_free(nac_npy *a); /* frees a->data; accepts NULL */
int64_t nac_npy_numel(const nac_npy *a);
/* Read an array converted to float32 (from any dtype); *data is malloc'ed, caller frees. */
nac_status nac_npy_read_f32(const char *path, int *ndim, int64_t shape[NAC_ST_MAX_DIMS],
                            float **data);

#endif
