/* safetensors files: an 8-byte little-endian header length, a UTF-8 JSON header
 * ({"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}), then raw
 * little-endian tensor bytes. Loading validates the header the way the reference
 * implementation does and names the first problem; saving is atomic (temporary file in
 * the same folder, fsync, rename, fsync of the folder). */
#ifndef NAC_SAFETENSORS_H
#define NAC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "nn/status.h"

typedef enum nac_dtype {
    NAC_DT_F32, NAC_DT_F64, NAC_DT_F16, NAC_DT_BF16, NAC_DT_I64, NAC_DT_I32, NAC_DT_I16,
    NAC_DT_I8, NAC_DT_U8, NAC_DT_U16, NAC_DT_U32, NAC_DT_U64, NAC_DT_BOOL
} nac_dtype;

#define NAC_ST_MAX_DIMS 8

typedef struct nac_st_tensor {
    char *name;
    nac_dtype dtype;
    int ndim;
    int64_t shape[NAC_ST_MAX_DIMS];
    uint64_t begin, end;   /* byte offsets into the data section */
} nac_st_tensor;

typedef struct nac_st_file {
    char *path;
    unsigned char *bytes;  /* the whole file */
    size_t size;
    const unsigned char *data; /* start of the data section */
    nac_st_tensor *tensors;    /* in file order */
    int ntensors;
    char **meta_keys, **meta_vals;
    int nmeta;
} nac_st_file;

const char *nac_dtype_name(nac_dtype d);  /* "F32" ... */
size_t nac_dtype_size(nac_dtype d);

/* Read and validate a file. Errors name the path and the problem:
 * NAC_ERR_NOINPUT (missing), NAC_ERR_DATA (corrupt), NAC_ERR_IO. */
nac_status nac_st_load(const char *path, nac_st_file **out);
void nac_st_free(nac_st_file *f); /* accepts NULL */
const nac_st_tensor *nac_st_find(const nac_st_file *f, const char *name);
const char *nac_st_meta(const nac_st_file *f, const char *key); /* NULL if absent */
/* Copy a tensor out as float32 (from F32, F64, F16, BF16 or integer dtypes); n must equal
 * its element count. */
nac_status nac_st_read_f32(const nac_st_file *f, const char *name, float *dst, int64_t n);
/* Raw bytes of a tensor (little-endian, its own dtype). */
const void *nac_st_data(const nac_st_file *f, const nac_st_tensor *t);

/* Writer: collect tensors (the writer copies their bytes) and metadata, then save. */
typedef struct nac_st_writer nac_st_writer;
nac_st_writer *nac_st_writer_new(void);
void nac_st_writer_free(nac_st_writer *w);
nac_status nac_st_writer_add(nac_st_writer *w, const char *name, nac_dtype dtype, int ndim,
                             const int64_t *shape, const void *data);
nac_status nac_st_writer_meta(nac_st_writer *w, const char *key, const char *value);
/* Write atomically: path.tmp.<pid> in the same folder, fsync, rename, fsync(folder). */
nac_status nac_st_writer_save(nac_st_writer *w, const char *path);

/* Atomic file replacement shared by every writer of the project: write `n` bytes to
 * path via a temporary file in the same folder, fsync, rename, fsync of the folder. */
nac_status nac_write_file_atomic(const char *path, const void *data, size_t n);

#endif
