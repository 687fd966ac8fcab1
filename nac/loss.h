/* The four pretraining objectives (NAC, NAC-MQ, SimCLR NT-Xent, symmetric MoCo-v2) with
 * their backward, on backend tensors. A loss object is created once per (K, D, M) and
 * owns every intermediate, its 1-element loss value and its gradients: a step allocates
 * nothing and reads the value to the host only when the caller asks (nac_loss_item).
 *
 * Inputs are the two views stacked, rows [view 1 (K); view 2 (K)] = (2K, D):
 *   o   projection outputs, already divided by sqrt(D)            (all four)
 *   l   inference-network logits, already divided by sqrt(D)      (NAC, NAC-MQ)
 *   k   momentum projection outputs, already / sqrt(D)            (NAC-MQ, MoCo-v2)
 *   lk  momentum logits, already / sqrt(D)                        (NAC-MQ)
 *   mask the flip mask (+-1), or NULL to draw one from `key`      (NAC, NAC-MQ)
 * With N = 2K, z = tanh(o), z~ = mask * z, c = (1/2) log((1-p)/p), g(x) = log(s(x)(1-s(x))),
 * j(i) the other view of row i, and G_i(z~, l) = (1/2) sum_d [z~_id l_j(i)d + g(l_j(i)d) - log(1/4)]:
 *   NAC     L = mean_i [ logsumexp_j c z~_i.z_j (j over all N rows) - G_i(z~, l) ]
 *   NAC-MQ  enqueue tanh(k) first; L = mean_i [ logsumexp_m c z~_i.Q_m - G_i(z~, lk)
 *             + lambda ||z_i||^2 - 2 G_i(stopgrad z~, l) ]      (paper Eq. 20)
 *   SimCLR  u = o/||o||; L = mean_i [ logsumexp_{j != i} u_i.u_j/tau - u_i.u_j(i)/tau ]
 *   MoCo-v2 q = o/||o||, kn = k/||k||; row i: logits [q_i.kn_j(i), q_i.Q_m] / tau, target 0;
 *             L = sum of the two directions' mean cross-entropies = (1/K) sum_i CE_i;
 *             then [kn] is enqueued (Q above is the queue before this step).
 * Gradients: dL/do for all four, dL/dl for NAC and NAC-MQ; k, lk, mask and the queue
 * get none. */
#ifndef NAC_LOSS_H
#define NAC_LOSS_H

#include <stdint.h>

#include "nac/queue.h"
#include "backend/backend.h"

typedef enum nac_loss_kind {
    NAC_LOSS_NAC,    /* Eq. 19/23, negatives from the batch */
    NAC_LOSS_NAC_MQ, /* Eq. 20, negatives from a momentum queue */
    NAC_LOSS_SIMCLR, /* NT-Xent */
    NAC_LOSS_MOCO    /* symmetric MoCo-v2 */
} nac_loss_kind;

typedef struct nac_loss_config {
    nac_loss_kind kind;
    int64_t k;    /* images per step (2K rows) */
    int64_t d;    /* code length (128) */
    int64_t m;    /* queue length, >= 2K (NAC-MQ, MoCo-v2) */
    float p;      /* flip probability in (0, 1/2) (NAC, NAC-MQ) */
    float lambda; /* weight of mean ||z||^2 (NAC-MQ; the paper uses 0.1) */
    float tau;    /* temperature (SimCLR 0.5, MoCo-v2 0.2) */
} nac_loss_config;

typedef struct nac_loss_inputs {
    const nac_tensor_t *o, *l, *k, *lk; /* (2K, D) each; unused ones may be NULL */
    const nac_tensor_t *mask;           /* (2K, D) of +-1, or NULL: drawn from key */
    uint64_t key;                       /* the flip mask's key when mask is NULL */
} nac_loss_inputs;

typedef struct nac_loss nac_loss_t;

const char *nac_loss_kind_name(nac_loss_kind kind); /* "nac", "nac_mq", "simclr", "moco" */

/* Validate the config and allocate everything a step needs (queue included, zeroed:
 * initialise it with nac_queue_reset or by writing its keys). */
nac_status nac_loss_create(nac_backend_t *be, const nac_loss_config *cfg, nac_loss_t **out);
void nac_loss_free(nac_loss_t *loss); /* accepts NULL */

/* Compute the loss into nac_loss_value(). NAC-MQ and MoCo-v2 advance the queue here
 * (NAC-MQ before its negatives, MoCo-v2 after). The backward keeps what it needs of the
 * inputs, except a caller's mask: that one must stay unchanged until the backward. */
nac_status nac_loss_forward(nac_loss_t *loss, const nac_loss_inputs *in);
/* Gradients of the last forward's loss into nac_loss_grad_o / nac_loss_grad_l.
 * Leaves the queue as the forward left it. */
nac_status nac_loss_backward(nac_loss_t *loss);

const nac_tensor_t *nac_loss_value(const nac_loss_t *loss);  /* (1) */
nac_status nac_loss_item(const nac_loss_t *loss, float *out); /* copies the value to host */
const nac_tensor_t *nac_loss_grad_o(const nac_loss_t *loss);  /* (2K, D) */
const nac_tensor_t *nac_loss_grad_l(const nac_loss_t *loss);  /* (2K, D); NULL for SimCLR/MoCo */
/* The flip mask the last forward used (the caller's or the drawn one); NULL for
 * SimCLR/MoCo-v2 or before the first forward. */
const nac_tensor_t *nac_loss_mask(const nac_loss_t *loss);
/* The queue (NAC-MQ, MoCo-v2; else NULL): checkpoint it, reset it, or set it. */
nac_queue_t *nac_loss_queue(nac_loss_t *loss);
const nac_loss_config *nac_loss_get_config(const nac_loss_t *loss);

#endif
