/* Named parameters with their gradients, optimiser state and flags, kept in one list so
 * that optimisers, checkpoints and momentum copies treat a model as one thing.
 * Names are torchvision's ("layer1.0.conv1.weight"); buffers (BN running statistics)
 * live in the same list, flagged, so checkpoints hold them too. */
#ifndef NAC_PARAM_H
#define NAC_PARAM_H

#include "backend/backend.h"

enum nac_param_flags {
    NAC_PARAM_NO_WD = 1u << 0,   /* excluded from weight decay (biases, BN; an option) */
    NAC_PARAM_NO_LARS = 1u << 1, /* excluded from LARS adaptation (an option) */
    NAC_PARAM_BUFFER = 1u << 2,  /* not trained: running statistics; saved and loaded */
    NAC_PARAM_FROZEN = 1u << 3,  /* trained parameter held fixed for now */
    NAC_PARAM_BN = 1u << 4,      /* a batch-norm weight or bias */
    NAC_PARAM_BIAS = 1u << 5     /* a bias (of a conv or linear layer) */
};

typedef struct nac_param {
    char name[128];
    nac_tensor_t w;   /* the value */
    nac_tensor_t g;   /* its gradient (unallocated for buffers) */
    nac_tensor_t s1;  /* optimiser state: momentum / Adam m (allocated by the optimiser) */
    nac_tensor_t s2;  /* optimiser state: Adam v */
    unsigned flags;
    int group;        /* optimiser group: its own lr multiplier and weight decay */
} nac_param_t;

typedef struct nac_params {
    nac_param_t **items;
    int n, cap;
} nac_params_t;

void nac_params_init(nac_params_t *ps);
void nac_params_free(nac_params_t *ps); /* frees every tensor and the list */
/* Add a parameter; its value and gradient are allocated (zeroed). Returns NULL with a
 * message on failure (duplicate name, out of memory). */
nac_param_t *nac_params_add(nac_params_t *ps, nac_backend_t *be, const char *name, int ndim,
                            const int64_t *dim, unsigned flags);
nac_param_t *nac_params_find(const nac_params_t *ps, const char *name);
int64_t nac_params_numel(const nac_params_t *ps, bool trainable_only);
/* Move all of src's entries to the end of dst (prefixing names with `prefix`). */
nac_status nac_params_append(nac_params_t *dst, nac_params_t *src, const char *prefix);
/* Append src's parameters to dst without taking ownership: free only dst->items. */
nac_status nac_params_view_add(nac_params_t *dst, const nac_params_t *src);
/* Copy values (and buffers) from src to dst by matching names and shapes. */
nac_status nac_params_copy_values(const nac_params_t *src, nac_params_t *dst);

#endif
