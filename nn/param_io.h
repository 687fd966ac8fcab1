/* Parameter lists to and from safetensors files (host copies in logical order: PyTorch's
 * OIHW for convolutions, so files load into torchvision with strict=True), and
 * non-owning views over several modules' parameters. */
#ifndef NAC_PARAM_IO_H
#define NAC_PARAM_IO_H

#include "nn/param.h"
#include "nn/safetensors.h"

/* Append src's parameters to dst without taking ownership: free only dst->items. */
nac_status nac_params_view_add(nac_params_t *dst, const nac_params_t *src);
/* Add each value as "<prefix><name>" (F32), and with `optim` each allocated optimiser
 * state as "optim.<prefix><name>.s1" / ".s2". */
nac_status nac_params_write(nac_st_writer *w, const nac_params_t *ps, const char *prefix,
                            bool optim);
/* Load every value "<prefix><name>" (and optimiser state present in the file when
 * `optim`). All names and shapes are checked before any tensor is written: on error the
 * parameters are unchanged and the message names the file and the tensor. */
nac_status nac_params_read(const nac_st_file *f, nac_params_t *ps, const char *prefix,
                           bool optim);

#endif
