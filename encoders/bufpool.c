/* Activation-shaped buffers that a network's forward and backward take and give back in
 * the order they are born and die (encoders/encoder_impl.h, "buffer pools"), so a pass
 * needs a few buffers per resolution instead of one per layer. */
#include "encoders/encoder_impl.h"

enc_pool *enc_pools_get(enc_pools *ps, nac_backend_t *be, int64_t n, int64_t c, int64_t h,
                        int64_t w) {
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].n == n && ps->p[i].c == c && ps->p[i].h == h && ps->p[i].w == w)
            return &ps->p[i];
    NAC_ASSERT(ps->n < ENC_POOLS_MAX);
    enc_pool *p = &ps->p[ps->n++];
    p->n = n;
    p->c = c;
    p->h = h;
    p->w = w;
    p->busy = 0;
    for (int i = 0; i < ENC_POOL_MAX; i++) enc_t4(&p->t[i], be, n, c, h, w);
    return p;
}

nac_status enc_pool_take(enc_pool *p, nac_tensor_t **out) {
    for (int i = 0; i < ENC_POOL_MAX; i++)
        if (!(p->busy & 1u << i)) {
            nac_tensor_t *t = &p->t[i];
            /* a new buffer takes the layout of the pool's others, whichever op writes it
               first, so buffers can change roles without reorders */
            for (int j = 0; !t->impl && j < ENC_POOL_MAX; j++)
                if (p->t[j].impl) NAC_TRY(nac_tensor_alloc_like(t, &p->t[j]));
            p->busy |= 1u << i;
            *out = t;
            return NAC_OK;
        }
    /* a network holds at most a handful of one shape at a time: a broken contract */
    NAC_ASSERT(!"encoder buffer pool exhausted: more than ENC_POOL_MAX buffers in use");
    return NAC_ERR_INVALID;
}

void enc_pool_give(enc_pool *p, const nac_tensor_t *t) {
    ptrdiff_t i = t - p->t;
    NAC_ASSERT(i >= 0 && i < ENC_POOL_MAX && (p->busy & 1u << i));
    p->busy &= ~(1u << i);
}

void enc_pools_reset(enc_pools *ps) {
    for (int i = 0; i < ps->n; i++) ps->p[i].busy = 0;
}

void enc_pools_release(enc_pools *ps) {
    for (int i = 0; i < ps->n; i++)
        for (int j = 0; j < ENC_POOL_MAX; j++) nac_tensor_release(&ps->p[i].t[j]);
    ps->n = 0;
}

int enc_pool_allocated(const enc_pool *p) {
    int k = 0;
    for (int j = 0; j < ENC_POOL_MAX; j++) k += p->t[j].impl != NULL;
    return k;
}

nac_status enc_convbn_norm_into(enc_convbn *u, nac_tensor_t *t, bool train, int groups) {
    NAC_TRY(nac_tensor_alloc_like(t, &u->c));
    NAC_TRY(nac_tensor_share(&u->y, t));
    return enc_convbn_norm(u, train, groups);
}
