/* The projection / inference heads: Linear + ReLU + Linear, output scaled by 1/sqrt(D),
 * with forward and backward on backend ops and buffers planned per batch size. */
#include "encoders/head.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "encoders/encoder_impl.h"

struct nac_head {
    nac_backend_t *be;
    int in, hidden, out;
    float scale;             /* 1/sqrt(out) */
    nac_params_t params;
    nac_linear_unit l0, l2;  /* "<prefix>0" and "<prefix>2" (nn.Sequential indices) */
    int64_t n;               /* planned batch size */
    bool can_backward;
    const nac_tensor_t *x;   /* (N, in) input of the last forward */
    nac_tensor_t a;          /* (N, hidden) ReLU output */
    nac_tensor_t y;          /* (N, out) scaled output */
    nac_tensor_t dz;         /* (N, out) d loss / d (unscaled) second linear output */
    nac_tensor_t da;         /* (N, hidden) d loss / d a, then / d first linear output */
};

#define SHAPE(t) nac_tensor_shape_str((t), (char[64]){0}, 64)

static nac_status add_linear(nac_head_t *hd, const char *prefix, int idx, int in, int out,
                             uint64_t seed, nac_linear_unit *u) {
    char pre[128];
    snprintf(pre, sizeof pre, "%s%d", prefix ? prefix : "", idx);
    nac_builder_t bld = {.ps = &hd->params, .be = hd->be, .seed = seed};
    return nac_linear_unit_add(&bld, u, pre, in, out, true);
}

nac_status nac_head_create(nac_backend_t *be, int in, int hidden, int out, const char *prefix,
                           uint64_t seed, nac_head_t **head) {
    if (!be || !head) return nac_error(NAC_ERR_INVALID, "nac_head_create: NULL argument");
    *head = NULL;
    if (in < 1 || hidden < 1 || out < 1)
        return nac_error(NAC_ERR_INVALID, "head %s: sizes %d -> %d -> %d must be positive",
                         prefix ? prefix : "", in, hidden, out);
    nac_head_t *hd = calloc(1, sizeof *hd);
    if (!hd) return nac_error(NAC_ERR_NOMEM, "head: out of memory");
    hd->be = be;
    hd->in = in;
    hd->hidden = hidden;
    hd->out = out;
    hd->scale = (float)(1.0 / sqrt((double)out));
    nac_params_init(&hd->params);
    nac_status s = add_linear(hd, prefix, 0, in, hidden, seed, &hd->l0);
    if (s == NAC_OK) s = add_linear(hd, prefix, 2, hidden, out, seed, &hd->l2);
    if (s != NAC_OK) {
        nac_error_prefix(s, "creating head %s: ", prefix ? prefix : "");
        nac_head_free(hd);
        return s;
    }
    *head = hd;
    return NAC_OK;
}

static void release_plan(nac_head_t *hd) {
    nac_tensor_release(&hd->a);
    nac_tensor_release(&hd->y);
    nac_tensor_release(&hd->dz);
    nac_tensor_release(&hd->da);
    hd->n = 0;
    hd->can_backward = false;
}

void nac_head_free(nac_head_t *hd) {
    if (!hd) return;
    release_plan(hd);
    nac_params_free(&hd->params);
    free(hd);
}

nac_params_t *nac_head_params(nac_head_t *hd) { return hd ? &hd->params : NULL; }
int nac_head_out(const nac_head_t *hd) { return hd ? hd->out : 0; }
float nac_head_scale(const nac_head_t *hd) { return hd ? hd->scale : 0.0f; }

nac_status nac_head_forward(nac_head_t *hd, const nac_tensor_t *x, const nac_tensor_t **y) {
    if (!hd || !x || !y) return nac_error(NAC_ERR_INVALID, "nac_head_forward: NULL argument");
    *y = NULL;
    if (x->ndim != 2 || x->dim[1] != hd->in || x->be != hd->be)
        return nac_error(NAC_ERR_INVALID, "head forward: input %s is not (N, %d) on backend %s",
                         SHAPE(x), hd->in, nac_backend_name(hd->be));
    int64_t n = x->dim[0];
    if (n != hd->n) {
        release_plan(hd);
        nac_t2(&hd->a, hd->be, n, hd->hidden);
        nac_t2(&hd->da, hd->be, n, hd->hidden);
        nac_t2(&hd->y, hd->be, n, hd->out);
        nac_t2(&hd->dz, hd->be, n, hd->out);
        hd->n = n;
    }
    hd->can_backward = false;
    NAC_TRY(nac_linear_unit_forward(&hd->l0, x, &hd->a));
    NAC_TRY(nac_act_forward(NAC_ACT_RELU, &hd->a, &hd->a, 1.0f, 0.0f));
    NAC_TRY(nac_linear_unit_forward(&hd->l2, &hd->a, &hd->y));
    NAC_TRY(nac_act_forward(NAC_ACT_LINEAR, &hd->y, &hd->y, hd->scale, 0.0f));
    hd->x = x;
    hd->can_backward = true;
    *y = &hd->y;
    return NAC_OK;
}

nac_status nac_head_backward(nac_head_t *hd, const nac_tensor_t *dy, nac_tensor_t *dx) {
    if (!hd || !dy) return nac_error(NAC_ERR_INVALID, "nac_head_backward: NULL argument");
    if (!hd->can_backward)
        return nac_error(NAC_ERR_INVALID, "head backward: no forward to go back through");
    if (!nac_tensor_same_shape(dy, &hd->y))
        return nac_error(NAC_ERR_INVALID, "head backward: dy is %s, the output is %s", SHAPE(dy),
                         SHAPE(&hd->y));
    if (dx && !nac_tensor_same_shape(dx, hd->x))
        return nac_error(NAC_ERR_INVALID, "head backward: dx is %s, the input was %s", SHAPE(dx),
                         SHAPE(hd->x));
    NAC_TRY(nac_act_backward(NAC_ACT_LINEAR, &hd->y, NULL, dy, &hd->dz, hd->scale, 0.0f));
    NAC_TRY(nac_linear_unit_backward(&hd->l2, &hd->a, &hd->dz, &hd->da));
    /* ReLU'(z) = [a > 0]: the output serves as the ReLU's input */
    NAC_TRY(nac_act_backward(NAC_ACT_RELU, &hd->a, NULL, &hd->da, &hd->da, 1.0f, 0.0f));
    return nac_linear_unit_backward(&hd->l0, hd->x, &hd->da, dx);
}
