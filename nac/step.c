/* The NAC training step (step.h): forwards, loss, backwards in reverse order, update, EMA. */
#include "nac/step.h"

#include <math.h>

nac_status nac_step_train(const nac_step_model *m, const float *batch, uint64_t mask_key,
                          float lr, float *loss) {
    const nac_tensor_t *h, *o, *l = NULL, *hm, *k = NULL, *lk = NULL;
    NAC_TRY(nac_tensor_from_host(m->x, batch));
    NAC_TRY(nac_encoder_forward(m->enc, m->x, true, 2, &h));
    NAC_TRY(nac_head_forward(m->g, h, &o));
    if (m->r) NAC_TRY(nac_head_forward(m->r, h, &l));
    if (m->enc_m) {
        NAC_TRY(nac_encoder_forward(m->enc_m, m->x, true, 2, &hm));
        NAC_TRY(nac_head_forward(m->g_m, hm, &k));
        if (m->r_m) NAC_TRY(nac_head_forward(m->r_m, hm, &lk));
    }
    nac_loss_inputs in = {.o = o, .l = l, .k = k, .lk = lk, .mask = NULL, .key = mask_key};
    NAC_TRY(nac_loss_forward(m->loss, &in));
    NAC_TRY(nac_loss_item(m->loss, loss));
    if (!isfinite(*loss)) return nac_error(NAC_ERR_NUMERIC, "the loss is %g", (double)*loss);
    NAC_TRY(nac_loss_backward(m->loss));
    NAC_TRY(nac_head_backward(m->g, nac_loss_grad_o(m->loss), m->dh));
    if (m->r && m->detach_r) {
        NAC_TRY(nac_head_backward(m->r, nac_loss_grad_l(m->loss), NULL));
    } else if (m->r) {
        NAC_TRY(nac_head_backward(m->r, nac_loss_grad_l(m->loss), m->dh_r));
        NAC_TRY(nac_binary(NAC_BIN_ADD, m->dh, m->dh_r, m->dh));
    }
    NAC_TRY(nac_encoder_backward(m->enc, m->dh, NULL));
    NAC_TRY(nac_optim_step(m->opt, m->all, lr));
    if (m->enc_m)
        for (int i = 0; i < m->all->n; i++)
            if (!(m->all->items[i]->flags & NAC_PARAM_BUFFER))
                NAC_TRY(nac_ema_update(&m->all_m->items[i]->w, &m->all->items[i]->w, m->ema));
    return NAC_OK;
}
