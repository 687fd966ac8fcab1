/* NAC on 2-D toy points (toy.h): the model and its training on the public NAC step. */
#include "nac/toy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/rng.h"
#include "nac/step.h"
#include "nn/optim.h"

void nac_toy_free(nac_toy_model *m) {
    nac_tensor_free(m->x);
    nac_tensor_free(m->dh);
    nac_tensor_free(m->dh_r);
    nac_loss_free(m->loss);
    nac_head_free(m->g);
    nac_head_free(m->r);
    nac_encoder_free(m->enc);
    free(m->all.items);
    nac_backend_free(m->be);
    memset(m, 0, sizeof *m);
}

nac_status nac_toy_create(const char *backend, int threads, const nac_toy_config *c,
                          nac_toy_model *m) {
    memset(m, 0, sizeof *m);
    nac_backend_options bo = {.threads = threads};
    NAC_TRY(nac_backend_create(backend, &bo, &m->be));
    nac_encoder_config ec;
    nac_encoder_config_defaults(&ec);
    snprintf(ec.arch, sizeof ec.arch, "mlp");
    memcpy(ec.mlp_sizes, c->sizes, sizeof ec.mlp_sizes);
    ec.mlp_nsizes = c->nsizes;
    ec.seed = (uint64_t)c->seed;
    NAC_TRY(nac_encoder_create(m->be, &ec, &m->enc));
    int f = nac_encoder_features(m->enc), k = c->k;
    NAC_TRY(nac_head_create(m->be, f, f, c->proj_dim, "g.", (uint64_t)c->seed + 1, &m->g));
    NAC_TRY(nac_head_create(m->be, f, f, c->proj_dim, "r.", (uint64_t)c->seed + 2, &m->r));
    NAC_TRY(nac_params_view_add(&m->all, nac_encoder_params(m->enc)));
    NAC_TRY(nac_params_view_add(&m->all, nac_head_params(m->g)));
    NAC_TRY(nac_params_view_add(&m->all, nac_head_params(m->r)));
    nac_loss_config lc = {.kind = NAC_LOSS_NAC, .k = k, .d = c->proj_dim, .p = c->p};
    NAC_TRY(nac_loss_create(m->be, &lc, &m->loss));
    m->x = nac_tensor_new2(m->be, 2 * k, 2);
    m->dh = nac_tensor_new2(m->be, 2 * k, f);
    m->dh_r = nac_tensor_new2(m->be, 2 * k, f);
    if (!m->x || !m->dh || !m->dh_r) return nac_error(NAC_ERR_NOMEM, "regions: out of memory");
    return NAC_OK;
}

nac_status nac_toy_train(nac_toy_model *m, const nac_toy_config *c, const float *pts, int64_t n,
                         int steps, float *loss_out,
                         nac_status (*on_step)(void *ctx, int step, float loss), void *ctx) {
    nac_optim_config oc = nac_optim_defaults(NAC_OPT_ADAM);
    nac_optim_t opt;
    NAC_TRY(nac_optim_init(&opt, &oc));
    int k = c->k;
    int64_t *perm = malloc((size_t)n * sizeof *perm);
    float *xb = malloc((size_t)4 * k * sizeof *xb);
    nac_status s = perm && xb ? NAC_OK : nac_error(NAC_ERR_NOMEM, "regions: out of memory");
    nac_step_model sm = {.enc = m->enc, .g = m->g, .r = m->r, .all = &m->all, .loss = m->loss,
                         .opt = &opt, .x = m->x, .dh = m->dh, .dh_r = m->dh_r};
    for (int step = 0; s == NAC_OK && step < steps; step++) {
        nac_rng_t r;
        for (int64_t i = 0; i < n; i++) perm[i] = i;
        nac_rng_init(&r, nac_rng_key((uint64_t)c->seed, NAC_STREAM_SHUFFLE, (uint64_t)step, 0));
        nac_rng_shuffle(&r, perm, n);
        nac_rng_init(&r, nac_rng_key((uint64_t)c->seed, NAC_STREAM_AUGMENT, (uint64_t)step, 0));
        for (int v = 0; v < 2; v++)
            for (int i = 0; i < k; i++)
                for (int j = 0; j < 2; j++)
                    xb[((int64_t)v * k + i) * 2 + j] =
                        pts[perm[i] * 2 + j] + c->view_noise * (float)nac_rng_normal(&r);
        uint64_t key = nac_rng_key((uint64_t)c->seed, NAC_STREAM_CHANNEL, (uint64_t)step, 0);
        s = nac_step_train(&sm, xb, key, c->lr, &loss_out[step]);
        if (s == NAC_ERR_NUMERIC)
            s = nac_error(NAC_ERR_NUMERIC, "regions: the NAC loss is %g at step %d (lower --lr)",
                          (double)loss_out[step], step);
        if (s == NAC_OK && on_step) s = on_step(ctx, step, loss_out[step]);
    }
    free(perm);
    free(xb);
    return s;
}
