/* Parameter lists in safetensors checkpoints. Values are stored as F32 in logical order
 * (PyTorch's OIHW for convolutions) under their torchvision names, so an encoder file
 * loads into torchvision with load_state_dict(strict=True); optimiser state, RNG state,
 * counters and metadata ride along in the same file. Loading is all-or-nothing. */
#ifndef NAC_CHECKPOINT_H
#define NAC_CHECKPOINT_H

#include <stdbool.h>

#include "nn/param.h"
#include "io/safetensors.h"

/* Add every value of ps to w as "<prefix><name>" (F32); with `with_optim` also every
 * allocated optimiser state tensor as "optim.<prefix><name>.s1" / ".s2". prefix may be
 * NULL (""). */
nac_status nac_ckpt_add_params(nac_st_writer *w, const nac_params_t *ps, const char *prefix,
                               bool with_optim);

/* Write ps (as nac_ckpt_add_params) and then everything in `extra` (extra tensors such as
 * RNG state or counters, and metadata such as "config", "step", "epoch"; may be NULL)
 * atomically to path. extra's entries are moved into the file: it is left empty either
 * way, and the caller still frees it. */
nac_status nac_ckpt_save(const char *path, const nac_params_t *ps, const char *prefix,
                         bool with_optim, nac_st_writer *extra);

/* Load every parameter "<prefix><name>" of ps from f (F32, F64, F16 or BF16, converted).
 * Every parameter must be present with exactly its shape; the message names the first
 * problem (the tensor, expected and found shapes) and how many more are missing.
 * strict: additionally every tensor of f whose name begins with prefix must be a
 * parameter (except "optim." state, and torchvision's "*.num_batches_tracked" counters);
 * use it with files that hold only this list, or with a prefix that sets it apart.
 * with_optim: optimiser state "optim.<prefix><name>.s1/.s2" present in the file is
 * loaded (allocating the state), state absent from the file is zeroed; with strict,
 * every "optim.<prefix>..." tensor must belong to a parameter.
 * All names, shapes and dtypes are checked before anything is written: on a data error
 * the parameters are unchanged. */
nac_status nac_ckpt_load_params(const nac_st_file *f, nac_params_t *ps, const char *prefix,
                                bool strict, bool with_optim);

/* nac_st_load + nac_ckpt_load_params + nac_st_free. */
nac_status nac_ckpt_load(const char *path, nac_params_t *ps, const char *prefix, bool strict,
                         bool with_optim);

#endif
