/* The NAC training step (step.h): forwards, loss, backwards in reverse order, update, EMA;
 * with a communicator, the gathering of the loss's inputs and the gradients' all-reduce. */
#include "nac/step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/rng.h"

void nac_step_dist_free(nac_step_dist *d) {
    if (!d) return;
    nac_tensor_free(d->o);
    nac_tensor_free(d->l);
    nac_tensor_free(d->km);
    nac_tensor_free(d->lk);
    nac_tensor_free(d->grad_o);
    nac_tensor_free(d->grad_l);
    free(d->send);
    free(d->recv);
    free(d->glob);
    free(d->grads);
    free(d->images);
    free(d->xs);
    free(d->perm);
    nac_tensor_free(d->x_m);
    free(d);
}

nac_status nac_step_dist_create(nac_backend_t *be, nac_comm_t *comm, int64_t k, int64_t d,
                                const nac_params_t *all, bool shuffle_bn, int ndim,
                                const int64_t *x_shape, nac_step_dist **out) {
    *out = NULL;
    int n = nac_comm_size(comm);
    nac_step_dist *s = calloc(1, sizeof *s);
    if (!s) return nac_error(NAC_ERR_NOMEM, "data-parallel step: out of memory");
    s->comm = comm;
    s->k = k;
    s->kg = k * n;
    s->d = d;
    s->o = nac_tensor_new2(be, 2 * s->kg, d);
    s->l = nac_tensor_new2(be, 2 * s->kg, d);
    s->km = nac_tensor_new2(be, 2 * s->kg, d);
    s->lk = nac_tensor_new2(be, 2 * s->kg, d);
    s->grad_o = nac_tensor_new2(be, 2 * k, d);
    s->grad_l = nac_tensor_new2(be, 2 * k, d);
    s->send = malloc((size_t)(2 * k * d) * sizeof(float));
    s->recv = malloc((size_t)(2 * s->kg * d) * sizeof(float));
    s->glob = malloc((size_t)(2 * s->kg * d) * sizeof(float));
    s->grads = calloc((size_t)all->n + 1, sizeof *s->grads);
    for (int i = 0; s->grads && i < all->n; i++)
        if (!(all->items[i]->flags & NAC_PARAM_BUFFER)) s->grads[s->ngrads++] = &all->items[i]->g;
    bool shuffle_ok = true;
    if (shuffle_bn && n > 1) {
        s->img = 1;
        for (int i = 1; i < ndim; i++) s->img *= x_shape[i];
        s->images = malloc((size_t)(n * 2 * k * s->img) * sizeof(float));
        s->xs = malloc((size_t)(2 * k * s->img) * sizeof(float));
        s->perm = malloc((size_t)(2 * s->kg) * sizeof *s->perm);
        s->x_m = nac_tensor_new(be, ndim, x_shape); /* storage with the first upload */
        shuffle_ok = s->images && s->xs && s->perm && s->x_m;
    }
    if (!s->o || !s->l || !s->km || !s->lk || !s->grad_o || !s->grad_l || !s->send || !s->recv ||
        !s->glob || !s->grads || !shuffle_ok) {
        nac_step_dist_free(s);
        return nac_error(NAC_ERR_NOMEM, "data-parallel step: out of memory");
    }
    *out = s;
    return NAC_OK;
}

/* Rows (view v, rank p, image i) of the global batch sit at v K + p k + i; rank p sends
 * its (2k, D) rows as v k + i. With perm (the shuffled momentum encoder's codes), the row at
 * shuffled position j of view v belongs to image perm[v K + j]. */
static nac_status gather(nac_step_dist *s, const nac_tensor_t *local, nac_tensor_t *global,
                         const int64_t *perm) {
    int n = nac_comm_size(s->comm);
    int64_t kd = s->k * s->d, d = s->d;
    NAC_TRY(nac_tensor_to_host(local, s->send));
    NAC_TRY(nac_comm_allgather(s->comm, s->send, 2 * kd, s->recv));
    for (int v = 0; v < 2; v++)
        for (int p = 0; p < n; p++)
            for (int64_t i = 0; i < s->k; i++) {
                int64_t j = p * s->k + i, row = perm ? perm[v * s->kg + j] : j;
                memcpy(s->glob + (v * s->kg + row) * d, s->recv + ((2 * p + v) * s->k + i) * d,
                       (size_t)d * sizeof(float));
            }
    return nac_tensor_from_host(global, s->glob);
}

/* Shuffled BN: every rank's batch, a permutation of each view's K images from the step's
 * key, and this rank's slice of the shuffled batch on the backend (s->x_m). */
static nac_status shuffle_batch(nac_step_dist *s, const float *batch, uint64_t key) {
    int64_t k = s->k, kg = s->kg, img = s->img;
    NAC_TRY(nac_comm_allgather(s->comm, batch, 2 * k * img, s->images));
    nac_rng_t rng;
    nac_rng_init(&rng, nac_rng_key(key, NAC_STREAM_CHANNEL, 1, 1));
    int r = nac_comm_rank(s->comm);
    for (int v = 0; v < 2; v++) {
        int64_t *pv = s->perm + v * kg;
        for (int64_t j = 0; j < kg; j++) pv[j] = j;
        nac_rng_shuffle(&rng, pv, kg);
        for (int64_t i = 0; i < k; i++) {
            int64_t g = pv[r * k + i], p = g / k; /* image g of view v: rank p's row g % k */
            memcpy(s->xs + (v * k + i) * img, s->images + ((2 * p + v) * k + g % k) * img,
                   (size_t)img * sizeof(float));
        }
    }
    return nac_tensor_from_host(s->x_m, s->xs);
}

/* This rank's rows of a (2K, D) gradient into (2k, D). */
static nac_status scatter(nac_step_dist *s, const nac_tensor_t *global, nac_tensor_t *local) {
    int64_t kd = s->k * s->d, r = nac_comm_rank(s->comm);
    NAC_TRY(nac_tensor_to_host(global, s->glob));
    for (int v = 0; v < 2; v++)
        memcpy(s->send + v * kd, s->glob + v * s->kg * s->d + r * kd, (size_t)kd * sizeof(float));
    return nac_tensor_from_host(local, s->send);
}

static nac_status loss_forward(const nac_step_model *m, nac_loss_inputs *in) {
    nac_step_dist *s = m->dist;
    if (s) {
        const nac_tensor_t **src[4] = {&in->o, &in->l, &in->k, &in->lk};
        nac_tensor_t *dst[4] = {s->o, s->l, s->km, s->lk};
        for (int i = 0; i < 4; i++)
            if (*src[i]) {
                NAC_TRY(gather(s, *src[i], dst[i], i >= 2 && s->x_m ? s->perm : NULL));
                *src[i] = dst[i];
            }
    }
    return nac_loss_forward(m->loss, in);
}

/* dL/do and dL/dl of this rank's rows. */
static nac_status loss_grads(const nac_step_model *m, const nac_tensor_t **go, const nac_tensor_t **gl) {
    *go = nac_loss_grad_o(m->loss);
    *gl = m->r ? nac_loss_grad_l(m->loss) : NULL;
    if (!m->dist) return NAC_OK;
    NAC_TRY(scatter(m->dist, *go, m->dist->grad_o));
    *go = m->dist->grad_o;
    if (*gl) {
        NAC_TRY(scatter(m->dist, *gl, m->dist->grad_l));
        *gl = m->dist->grad_l;
    }
    return NAC_OK;
}

nac_status nac_step_train(const nac_step_model *m, const float *batch, uint64_t mask_key,
                          float lr, float *loss) {
    const nac_tensor_t *h, *o, *l = NULL, *hm, *k = NULL, *lk = NULL, *go, *gl;
    NAC_TRY(nac_tensor_from_host(m->x, batch));
    NAC_TRY(nac_encoder_forward(m->enc, m->x, true, 2, &h));
    NAC_TRY(nac_head_forward(m->g, h, &o));
    if (m->r) NAC_TRY(nac_head_forward(m->r, h, &l));
    if (m->enc_m) {
        const nac_tensor_t *xm = m->x;
        if (m->dist && m->dist->x_m) {
            NAC_TRY(shuffle_batch(m->dist, batch, mask_key));
            xm = m->dist->x_m;
        }
        NAC_TRY(nac_encoder_forward(m->enc_m, xm, true, 2, &hm));
        NAC_TRY(nac_head_forward(m->g_m, hm, &k));
        if (m->r_m) NAC_TRY(nac_head_forward(m->r_m, hm, &lk));
    }
    nac_loss_inputs in = {.o = o, .l = l, .k = k, .lk = lk, .mask = NULL, .key = mask_key};
    NAC_TRY(loss_forward(m, &in));
    NAC_TRY(nac_loss_item(m->loss, loss));
    if (!isfinite(*loss)) return nac_error(NAC_ERR_NUMERIC, "the loss is %g", (double)*loss);
    NAC_TRY(nac_loss_backward(m->loss));
    NAC_TRY(loss_grads(m, &go, &gl));
    NAC_TRY(nac_head_backward(m->g, go, m->dh));
    if (m->r && m->detach_r) {
        NAC_TRY(nac_head_backward(m->r, gl, NULL));
    } else if (m->r) {
        NAC_TRY(nac_head_backward(m->r, gl, m->dh_r));
        NAC_TRY(nac_binary(NAC_BIN_ADD, m->dh, m->dh_r, m->dh));
    }
    NAC_TRY(nac_encoder_backward(m->enc, m->dh, NULL));
    if (m->dist) NAC_TRY(nac_comm_allreduce_tensors(m->dist->comm, m->dist->grads, m->dist->ngrads));
    NAC_TRY(nac_optim_step(m->opt, m->all, lr));
    if (m->enc_m)
        for (int i = 0; i < m->all->n; i++)
            if (!(m->all->items[i]->flags & NAC_PARAM_BUFFER))
                NAC_TRY(nac_ema_update(&m->all_m->items[i]->w, &m->all->items[i]->w, m->ema));
    return NAC_OK;
}
