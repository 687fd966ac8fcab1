/* safetensors files: an 8-byte little-endian header length, a UTF-8 JSON header
 * ({"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}), then raw
 * little-endian tensor bytes. Loading validates the header the way the reference
 * implementation does and names the first problem; saving is atomic (temporary file in
 * the same folder, fsync, rename, fsync of the folder). */
#ifndef NAC_SAFETENSORS_H
#define NAC_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/status.h"

typedef enum nac_dtype {
    NAC_DT_F32, NAC_DT_F64, NAC_DT_F16, NAC_DT_BF16, NAC_DT_I64, NAC_DT_I32, NAC_DT_I16,
    NAC_DT_I8, NAC_DT_U8, NAC_DT_U16, NAC_DT_U32, NAC_DT_U64, NAC_DT_BOOL
} nac_dtype;

#define NAC_ST_MAX_DIMS 8
/* Largest header accepted, as in the reference implementation (huggingface safetensors). */
#define NAC_ST_MAX_HEADER 100000000u

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
    int *by_name;              /* tensor indices sorted by name, for nac_st_find */
} nac_st_file;

const char *nac_dtype_name(nac_dtype d);  /* "F32" ... */
size_t nac_dtype_size(nac_dtype d);
/* The dtype called `name` ("F32", ...); false if there is none. */
bool nac_dtype_parse(const char *name, nac_dtype *out);
/* Convert n little-endian elements of dtype d (any of them) to float32. */
void nac_dtype_to_f32(nac_dtype d, const void *src, float *dst, int64_t n);
int64_t nac_st_numel(const nac_st_tensor *t); /* 1 for a scalar (ndim 0) */

/* Read and validate a file. Errors name the path and the problem:
 * NAC_ERR_NOINPUT (missing), NAC_ERR_DATA (corrupt), NAC_ERR_IO. */
nac_status nac_st_load(const char *path, nac_st_file **out);
/* The same from a file already in memory (copied); name is used in messages. */
nac_status nac_st_load_mem(const char *name, const void *bytes, size_t n, nac_st_file **out);
void nac_st_free(nac_st_file *f); /* accepts NULL */
const nac_st_tensor *nac_st_find(const nac_st_file *f, const char *name);
const char *nac_st_meta(const nac_st_file *f, const char *key); /* NULL if absent */
/* Copy a tensor out as float32 (from F32, F64, F16, BF16 or integer dtypes); n must equal
 * its element count. */
nac_status nac_st_read_f32(const nac_st_file *f, const char *name, float *dst, int64_t n);
/* Raw bytes of a tensor (little-endian, its own dtype; not necessarily aligned). */
const void *nac_st_data(const nac_st_file *f, const nac_st_tensor *t);

/* Writer: collect tensors (the writer copies their bytes) and metadata, then save. The file
 * keeps the order tensors were added in; its header puts "__metadata__" first and is padded
 * with spaces to a multiple of 8 bytes. Names must be unique UTF-8 (not "__metadata__"). */
typedef struct nac_st_writer nac_st_writer;
nac_st_writer *nac_st_writer_new(void);
void nac_st_writer_free(nac_st_writer *w);
void nac_st_writer_clear(nac_st_writer *w); /* drop every tensor and metadata entry */
nac_status nac_st_writer_add(nac_st_writer *w, const char *name, nac_dtype dtype, int ndim,
                             const int64_t *shape, const void *data);
/* Set a metadata entry (a later call with the same key replaces the value). */
nac_status nac_st_writer_meta(nac_st_writer *w, const char *key, const char *value);
/* Move every tensor and metadata entry of src to the end of dst, leaving src empty.
 * A tensor name present in both is an error and moves nothing; src's metadata values
 * replace dst's. */
nac_status nac_st_writer_move(nac_st_writer *dst, nac_st_writer *src);
/* Write atomically: path.tmp.<pid> in the same folder, fsync, rename, fsync(folder). */
nac_status nac_st_writer_save(nac_st_writer *w, const char *path);

/* Read a whole regular file into a malloc'ed buffer (*out, *n bytes). NAC_ERR_NOINPUT if it
 * does not exist, NAC_ERR_IO if it cannot be read or is a folder. */
/* Open path for reading if it is a regular file; a FIFO, socket, device or folder is
 * refused at once (opened with O_NONBLOCK, then fstat), never waited on. *size: its size. */
nac_status nac_open_regular(const char *path, int *fd, size_t *size);
nac_status nac_read_file(const char *path, unsigned char **out, size_t *n);

/* Atomic file replacement shared by every writer of the project: write `n` bytes to
 * path via a temporary file in the same folder, fsync, rename, fsync of the folder. */
nac_status nac_write_file_atomic(const char *path, const void *data, size_t n);
/* The same for a file made of `nparts` pieces written one after another (no copy). */
nac_status nac_write_file_atomicv(const char *path, int nparts, const void *const *data,
                                  const size_t *n);

#endif
