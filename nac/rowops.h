/* Row-wise compositions the losses share, built only from the public backend ops:
 * swapping the two views of a stacked (2K, D) batch, row dot products and l2
 * normalisation with its backward. Every temporary is passed in by the caller. */
#ifndef NAC_ROWOPS_H
#define NAC_ROWOPS_H

#include "backend/backend.h"

/* dst (2K, D) = [src rows K..2K-1; src rows 0..K-1]: row i of dst is the other view of
 * row i of src. dst must not be src. */
nac_status nac_rows_swap_halves(const nac_tensor_t *src, nac_tensor_t *dst);

/* out (N) = sum_d a_nd * b_nd; tmp (N, D) is scratch (may be a or b). */
nac_status nac_rows_dot(const nac_tensor_t *a, const nac_tensor_t *b, nac_tensor_t *tmp,
                        nac_tensor_t *out);

/* y = x / ||x|| row by row, with ||x|| = sqrt(sum x^2 + 1e-24) kept in norm (N). The tiny
 * term inside the root (instead of PyTorch's max(||x||, 1e-12)) keeps an all-zero row
 * finite and makes the backward below exact for every row; it is below float32
 * resolution for any row of norm above 1e-10. y must not be x. */
nac_status nac_rows_l2_normalize(const nac_tensor_t *x, nac_tensor_t *norm, nac_tensor_t *y);
/* dx = (dy - y * <y, dy>) / ||x||, from the forward's y and norm; tmp (N, D) and
 * dot (N) are scratch; dx may be dy but not y or tmp. */
nac_status nac_rows_l2_normalize_backward(const nac_tensor_t *y, const nac_tensor_t *norm,
                                          const nac_tensor_t *dy, nac_tensor_t *tmp,
                                          nac_tensor_t *dot, nac_tensor_t *dx);

#endif
