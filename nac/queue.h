/* The ring buffer of keys that NAC-MQ and MoCo-v2 draw their negatives from: a backend
 * tensor (M, D) and a write pointer. Writes wrap around the end, so M need not be a
 * multiple of the batch; the checkpoint saves `keys` and `ptr`, nothing else. */
#ifndef NAC_QUEUE_H
#define NAC_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"

typedef struct nac_queue {
    nac_tensor_t *keys; /* (M, D), one key a row */
    int64_t ptr;        /* next row to write, in [0, M) */
} nac_queue_t;

/* An (M, D) queue, zeroed, pointer 0. */
nac_status nac_queue_create(nac_backend_t *be, int64_t m, int64_t d, nac_queue_t **out);
void nac_queue_free(nac_queue_t *q); /* accepts NULL */
int64_t nac_queue_size(const nac_queue_t *q); /* M */

/* Start afresh as the official code does: keys ~ std * N(0, 1) from `key`, each row
 * l2-normalised when `normalise` (MoCo-v2), pointer 0. Allocates temporaries: call it
 * at set-up, not in the step. */
nac_status nac_queue_reset(nac_queue_t *q, float std, bool normalise, uint64_t key);

/* The official initial queue of an objective: NAC-MQ 1e-3 * N(0, 1) (codes, not
 * normalised: the official momentum-queue code's scale), MoCo-v2 l2-normalised N(0, 1)
 * keys. */
#define NAC_QUEUE_NAC_MQ_STD 1e-3f
nac_status nac_queue_reset_for(nac_queue_t *q, bool moco, uint64_t key);

/* Overwrite rows start, start+1, ... (mod M) with the rows of src (n, D), n <= M;
 * read them into dst (n, D). Neither moves the pointer. */
nac_status nac_queue_write(nac_queue_t *q, int64_t start, const nac_tensor_t *src);
nac_status nac_queue_read(const nac_queue_t *q, int64_t start, nac_tensor_t *dst);

/* Enqueue: write src at the pointer (replacing the oldest keys), then advance it. */
nac_status nac_queue_push(nac_queue_t *q, const nac_tensor_t *src);

#endif
