/* See param_io.h. */
#include "nn/param_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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


nac_status nac_params_write(nac_st_writer *w, const nac_params_t *ps, const char *prefix,
                             bool optim) {
    for (int i = 0; i < ps->n; i++) {
        nac_param_t *p = ps->items[i];
        nac_tensor_t *ts[3] = {&p->w, optim ? &p->s1 : NULL, optim ? &p->s2 : NULL};
        const char *suffix[3] = {"", ".s1", ".s2"};
        for (int j = 0; j < 3; j++) {
            if (!ts[j] || !ts[j]->impl) continue;
            char name[300];
            if (j) snprintf(name, sizeof name, "optim.%s%s%s", prefix, p->name, suffix[j]);
            else snprintf(name, sizeof name, "%s%s", prefix, p->name);
            int64_t n = nac_tensor_numel(ts[j]);
            float *buf = malloc((size_t)n * sizeof *buf);
            if (!buf) return nac_error(NAC_ERR_NOMEM, "checkpoint: out of memory");
            nac_status s = nac_tensor_to_host(ts[j], buf);
            if (s == NAC_OK) s = nac_st_writer_add(w, name, NAC_DT_F32, ts[j]->ndim, ts[j]->dim, buf);
            free(buf);
            NAC_TRY(s);
        }
    }
    return NAC_OK;
}


nac_status nac_params_read(const nac_st_file *f, nac_params_t *ps, const char *prefix,
                              bool optim) {
    /* validate every name and shape first: all or nothing */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < ps->n; i++) {
            nac_param_t *p = ps->items[i];
            nac_tensor_t *ts[3] = {&p->w, optim ? &p->s1 : NULL, optim ? &p->s2 : NULL};
            for (int j = 0; j < 3; j++) {
                if (!ts[j]) continue;
                char name[300];
                if (j) snprintf(name, sizeof name, "optim.%s%s.s%d", prefix, p->name, j);
                else snprintf(name, sizeof name, "%s%s", prefix, p->name);
                const nac_st_tensor *st = nac_st_find(f, name);
                if (!st) {
                    if (j) continue; /* optimiser state not yet created */
                    return nac_error(NAC_ERR_DATA, "%s: tensor \"%s\" is missing", f->path, name);
                }
                bool ok = st->ndim == ts[j]->ndim;
                for (int d = 0; ok && d < st->ndim; d++) ok = st->shape[d] == ts[j]->dim[d];
                if (!ok)
                    return nac_error(NAC_ERR_DATA, "%s: tensor \"%s\" has another shape than the model's",
                                     f->path, name);
                if (pass == 0) continue;
                int64_t n = nac_tensor_numel(ts[j]);
                float *buf = malloc((size_t)n * sizeof *buf);
                if (!buf) return nac_error(NAC_ERR_NOMEM, "out of memory");
                nac_status s = nac_st_read_f32(f, name, buf, n);
                if (s == NAC_OK) s = nac_tensor_from_host(ts[j], buf);
                free(buf);
                NAC_TRY(s);
            }
        }
    return NAC_OK;
}

