/* Row-wise compositions the losses share (view swap, row dots, l2 normalisation),
 * written in the public backend ops so they run on every backend unchanged. */
#include "nac/rowops.h"

nac_status nac_rows_swap_halves(const nac_tensor_t *src, nac_tensor_t *dst) {
    NAC_ASSERT(src != dst);
    if (!src || src->ndim != 2 || src->dim[0] % 2 != 0)
        return nac_error(NAC_ERR_INVALID,
                         "nac_rows_swap_halves: src must be a (2K, D) tensor of stacked views");
    int64_t k = src->dim[0] / 2;
    NAC_TRY(nac_copy_rows(src, 0, dst, k, k));
    return nac_copy_rows(src, k, dst, 0, k);
}

nac_status nac_rows_dot(const nac_tensor_t *a, const nac_tensor_t *b, nac_tensor_t *tmp,
                        nac_tensor_t *out) {
    NAC_TRY(nac_binary(NAC_BIN_MUL, a, b, tmp));
    return nac_row_sum(tmp, out);
}

nac_status nac_rows_l2_normalize(const nac_tensor_t *x, nac_tensor_t *norm, nac_tensor_t *y) {
    NAC_ASSERT(x != y);
    NAC_TRY(nac_binary(NAC_BIN_MUL, x, x, y)); /* y is scratch for the squares */
    NAC_TRY(nac_row_sum(y, norm));
    NAC_TRY(nac_act_forward(NAC_ACT_LINEAR, norm, norm, 1.0f, 1e-24f));
    NAC_TRY(nac_act_forward(NAC_ACT_SQRT, norm, norm, 0.0f, 0.0f));
    return nac_col_broadcast(NAC_BIN_DIV, x, norm, y);
}

nac_status nac_rows_l2_normalize_backward(const nac_tensor_t *y, const nac_tensor_t *norm,
                                          const nac_tensor_t *dy, nac_tensor_t *tmp,
                                          nac_tensor_t *dot, nac_tensor_t *dx) {
    NAC_ASSERT(dx != y && dx != tmp && tmp != dy);
    NAC_TRY(nac_rows_dot(y, dy, tmp, dot));
    NAC_TRY(nac_col_broadcast(NAC_BIN_MUL, y, dot, tmp));
    NAC_TRY(nac_binary(NAC_BIN_SUB, dy, tmp, tmp));
    return nac_col_broadcast(NAC_BIN_DIV, tmp, norm, dx);
}
