/* The two MLP heads of the method (DESIGN.md): projection g and inference network r, each
 * Linear(in, hidden) + ReLU + Linear(hidden, out) with the output scaled by 1/sqrt(out)
 * (o = g(h)/sqrt(D)). Names "<prefix>0.weight", "<prefix>0.bias", "<prefix>2.weight",
 * "<prefix>2.bias" (an nn.Sequential), e.g. prefix "g." or "r."; PyTorch's default Linear
 * initialisation from the seed. Buffers are planned for the batch size of the first call. */
#ifndef NAC_ENCODERS_HEAD_H
#define NAC_ENCODERS_HEAD_H

#include "backend/backend.h"
#include "nn/param.h"

typedef struct nac_head nac_head_t;

/* prefix may be NULL or "" (names "0.weight", ...). Parameter i of the head draws from
 * nac_rng_key(seed, NAC_STREAM_INIT, i, 0): weight and bias U(-1/sqrt(fan_in),
 * 1/sqrt(fan_in)). Biases are flagged NAC_PARAM_BIAS. */
nac_status nac_head_create(nac_backend_t *be, int in, int hidden, int out, const char *prefix,
                           uint64_t seed, nac_head_t **head);
void nac_head_free(nac_head_t *head); /* accepts NULL */
nac_params_t *nac_head_params(nac_head_t *head);
int nac_head_out(const nac_head_t *head);
/* The output scale 1/sqrt(out). */
float nac_head_scale(const nac_head_t *head);

/* x (N, in) -> *y (N, out), owned by the head, valid until its next forward. x must stay
 * unchanged until nac_head_backward. */
nac_status nac_head_forward(nac_head_t *head, const nac_tensor_t *x, const nac_tensor_t **y);
/* dy (N, out) -> every head parameter's gradient WRITTEN (=), and dx (N, in) written
 * (may be NULL). */
nac_status nac_head_backward(nac_head_t *head, const nac_tensor_t *dy, nac_tensor_t *dx);

#endif
