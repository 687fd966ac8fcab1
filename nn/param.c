/* The parameter list: ownership of values, gradients and optimiser state. */
#include "nn/param.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nac_params_init(nac_params_t *ps) { memset(ps, 0, sizeof *ps); }

static void param_free(nac_param_t *p) {
    if (!p) return;
    nac_tensor_release(&p->w);
    nac_tensor_release(&p->g);
    nac_tensor_release(&p->s1);
    nac_tensor_release(&p->s2);
    free(p);
}

void nac_params_free(nac_params_t *ps) {
    if (!ps) return;
    for (int i = 0; i < ps->n; i++) param_free(ps->items[i]);
    free(ps->items);
    memset(ps, 0, sizeof *ps);
}

nac_param_t *nac_params_find(const nac_params_t *ps, const char *name) {
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->items[i]->name, name) == 0) return ps->items[i];
    return NULL;
}

static nac_status params_push(nac_params_t *ps, nac_param_t *p) {
    if (ps->n == ps->cap) {
        int cap = ps->cap ? ps->cap * 2 : 64;
        nac_param_t **items = realloc(ps->items, (size_t)cap * sizeof *items);
        if (!items) return nac_error(NAC_ERR_NOMEM, "parameter list: out of memory");
        ps->items = items;
        ps->cap = cap;
    }
    ps->items[ps->n++] = p;
    return NAC_OK;
}

nac_param_t *nac_params_add(nac_params_t *ps, nac_backend_t *be, const char *name, int ndim,
                            const int64_t *dim, unsigned flags) {
    if (strlen(name) >= sizeof(((nac_param_t *)0)->name)) {
        nac_error(NAC_ERR_INVALID, "parameter name \"%s\" is too long", name);
        return NULL;
    }
    if (nac_params_find(ps, name)) {
        nac_error(NAC_ERR_INVALID, "parameter \"%s\" defined twice", name);
        return NULL;
    }
    nac_param_t *p = calloc(1, sizeof *p);
    if (!p) {
        nac_error(NAC_ERR_NOMEM, "parameter \"%s\": out of memory", name);
        return NULL;
    }
    snprintf(p->name, sizeof p->name, "%s", name);
    p->flags = flags;
    nac_tensor_init(&p->w, be, ndim, dim);
    nac_tensor_init(&p->g, be, ndim, dim);
    nac_tensor_init(&p->s1, be, ndim, dim);
    nac_tensor_init(&p->s2, be, ndim, dim);
    if (nac_tensor_alloc(&p->w) != NAC_OK ||
        (!(flags & NAC_PARAM_BUFFER) && nac_tensor_alloc(&p->g) != NAC_OK) ||
        params_push(ps, p) != NAC_OK) {
        nac_error_prefix(NAC_ERR_NOMEM, "parameter \"%s\": ", name);
        param_free(p);
        return NULL;
    }
    return p;
}

int64_t nac_params_numel(const nac_params_t *ps, bool trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < ps->n; i++)
        if (!trainable_only || !(ps->items[i]->flags & NAC_PARAM_BUFFER))
            n += nac_tensor_numel(&ps->items[i]->w);
    return n;
}

nac_status nac_params_append(nac_params_t *dst, nac_params_t *src, const char *prefix) {
    for (int i = 0; i < src->n; i++) {
        nac_param_t *p = src->items[i];
        if (prefix && *prefix) {
            char name[sizeof p->name];
            int k = snprintf(name, sizeof name, "%s%s", prefix, p->name);
            if (k < 0 || (size_t)k >= sizeof name)
                return nac_error(NAC_ERR_INVALID, "parameter name %s%s is too long", prefix,
                                 p->name);
            memcpy(p->name, name, sizeof name);
        }
        if (nac_params_find(dst, p->name))
            return nac_error(NAC_ERR_INVALID, "parameter \"%s\" defined twice", p->name);
        NAC_TRY(params_push(dst, p));
        src->items[i] = NULL;
    }
    free(src->items);
    memset(src, 0, sizeof *src);
    return NAC_OK;
}

nac_status nac_params_copy_values(const nac_params_t *src, nac_params_t *dst) {
    for (int i = 0; i < dst->n; i++) {
        nac_param_t *d = dst->items[i];
        nac_param_t *s = nac_params_find(src, d->name);
        if (!s) return nac_error(NAC_ERR_INVALID, "parameter \"%s\" missing in the source", d->name);
        NAC_TRY(nac_tensor_copy(&s->w, &d->w));
    }
    return NAC_OK;
}

nac_status nac_params_view_add(nac_params_t *dst, const nac_params_t *src) {
    for (int i = 0; i < src->n; i++) {
        if (dst->n == dst->cap) {
            int cap = dst->cap ? dst->cap * 2 : 128;
            nac_param_t **it = realloc(dst->items, (size_t)cap * sizeof *it);
            if (!it) return nac_error(NAC_ERR_NOMEM, "out of memory");
            dst->items = it;
            dst->cap = cap;
        }
        dst->items[dst->n++] = src->items[i];
    }
    return NAC_OK;
}
