/* Parameter lists to and from safetensors files (see checkpoint.h): host copies in logical
 * order, optimiser state under "optim.", and loading that checks everything first. */
#include "io/checkpoint.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 512

/* "<optim.><prefix><name><.sK>" into buf; NAC_ERR_INVALID if it does not fit. */
static nac_status tensor_name(char *buf, const char *prefix, const char *name, int state) {
    int k = state ? snprintf(buf, NAME_MAX_LEN, "optim.%s%s.s%d", prefix, name, state)
                  : snprintf(buf, NAME_MAX_LEN, "%s%s", prefix, name);
    if (k < 0 || k >= NAME_MAX_LEN)
        return nac_error(NAC_ERR_INVALID, "checkpoint: name \"%s%s\" is too long", prefix, name);
    return NAC_OK;
}

static nac_tensor_t *state_of(nac_param_t *p, int k) { return k == 0 ? &p->w : k == 1 ? &p->s1 : &p->s2; }

nac_status nac_ckpt_add_params(nac_st_writer *w, const nac_params_t *ps, const char *prefix,
                               bool with_optim) {
    NAC_ASSERT(w && ps);
    if (!prefix) prefix = "";
    float *buf = NULL;
    int64_t cap = 0;
    nac_status s = NAC_OK;
    for (int i = 0; i < ps->n && s == NAC_OK; i++) {
        nac_param_t *p = ps->items[i];
        for (int k = 0; k < (with_optim ? 3 : 1) && s == NAC_OK; k++) {
            const nac_tensor_t *t = state_of(p, k);
            if (!t->impl) {
                if (k == 0)
                    s = nac_error(NAC_ERR_INVALID, "checkpoint: parameter \"%s\" has no value", p->name);
                continue;
            }
            char name[NAME_MAX_LEN];
            if ((s = tensor_name(name, prefix, p->name, k)) != NAC_OK) break;
            int64_t n = nac_tensor_numel(t);
            if (n > cap) {
                float *nb = realloc(buf, (size_t)n * sizeof *nb);
                if (!nb) {
                    s = nac_error(NAC_ERR_NOMEM, "checkpoint: out of memory for \"%s\"", name);
                    break;
                }
                buf = nb;
                cap = n;
            }
            s = nac_tensor_to_host(t, buf);
            if (s != NAC_OK) {
                nac_error_prefix(s, "checkpoint: \"%s\": ", name);
                break;
            }
            s = nac_st_writer_add(w, name, NAC_DT_F32, t->ndim, t->dim, buf);
        }
    }
    free(buf);
    return s;
}

nac_status nac_ckpt_save(const char *path, const nac_params_t *ps, const char *prefix,
                         bool with_optim, nac_st_writer *extra) {
    NAC_ASSERT(path && ps);
    nac_st_writer *w = nac_st_writer_new();
    nac_status s = w ? nac_ckpt_add_params(w, ps, prefix, with_optim)
                     : nac_error(NAC_ERR_NOMEM, "out of memory");
    if (s == NAC_OK && extra) s = nac_st_writer_move(w, extra);
    if (s != NAC_OK)
        nac_error_prefix(s, "%s: ", path);
    else
        s = nac_st_writer_save(w, path);
    if (extra) nac_st_writer_clear(extra);
    nac_st_writer_free(w);
    return s;
}

static void shape_text(int ndim, const int64_t *dim, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? "," : "", dim[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static bool same_shape(const nac_st_tensor *st, const nac_tensor_t *t) {
    if (st->ndim != t->ndim) return false;
    for (int d = 0; d < t->ndim; d++)
        if (st->shape[d] != t->dim[d]) return false;
    return true;
}

static bool is_float(nac_dtype d) {
    return d == NAC_DT_F32 || d == NAC_DT_F64 || d == NAC_DT_F16 || d == NAC_DT_BF16;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* strict: every tensor under prefix (and under "optim.<prefix>" with optimiser state) must
 * belong to ps. */
static nac_status check_no_extras(const nac_st_file *f, const nac_params_t *ps,
                                  const char *prefix, bool with_optim) {
    size_t pl = strlen(prefix);
    char optim_prefix[NAME_MAX_LEN];
    snprintf(optim_prefix, sizeof optim_prefix, "optim.%s", prefix);
    size_t opl = strlen(optim_prefix);
    for (int i = 0; i < f->ntensors; i++) {
        const char *name = f->tensors[i].name;
        bool found;
        if (strncmp(name, "optim.", 6) == 0) {
            if (!with_optim || strncmp(name, optim_prefix, opl) != 0) continue;
            char base[NAME_MAX_LEN];
            size_t bl = strlen(name + opl);
            found = bl > 3 && bl < sizeof base && (ends_with(name, ".s1") || ends_with(name, ".s2"));
            if (found) {
                memcpy(base, name + opl, bl - 3);
                base[bl - 3] = 0;
                found = nac_params_find(ps, base) != NULL;
            }
        } else {
            if (strncmp(name, prefix, pl) != 0 || ends_with(name, ".num_batches_tracked")) continue;
            found = nac_params_find(ps, name + pl) != NULL;
        }
        if (!found)
            return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\" is not a parameter of the model (strict loading)",
                             f->path, name);
    }
    return NAC_OK;
}

/* Check every value (and optimiser state) that would be loaded; count what is missing. */
static nac_status check_params(const nac_st_file *f, const nac_params_t *ps, const char *prefix,
                               bool with_optim, int64_t *maxn) {
    int missing = 0;
    char first[NAME_MAX_LEN] = "", first_shape[160] = "";
    *maxn = 0;
    for (int i = 0; i < ps->n; i++) {
        nac_param_t *p = ps->items[i];
        for (int k = 0; k < (with_optim ? 3 : 1); k++) {
            char name[NAME_MAX_LEN], want[160], got[160];
            NAC_TRY(tensor_name(name, prefix, p->name, k));
            const nac_tensor_t *t = state_of(p, k);
            const nac_st_tensor *st = nac_st_find(f, name);
            if (!st) {
                if (k == 0 && missing++ == 0) {
                    memcpy(first, name, sizeof first);
                    shape_text(t->ndim, t->dim, first_shape, sizeof first_shape);
                }
                continue;
            }
            shape_text(t->ndim, t->dim, want, sizeof want);
            if (!same_shape(st, t)) {
                shape_text(st->ndim, st->shape, got, sizeof got);
                return nac_error(NAC_ERR_DATA, "%s: tensor \"%s\" has shape %s, but the model's parameter \"%s\" has %s",
                                 f->path, name, got, p->name, want);
            }
            if (!is_float(st->dtype))
                return nac_error(NAC_ERR_DATA, "%s: tensor \"%s\" is %s; parameter \"%s\" needs a float dtype",
                                 f->path, name, nac_dtype_name(st->dtype), p->name);
            if (nac_tensor_numel(t) > *maxn) *maxn = nac_tensor_numel(t);
        }
    }
    if (missing) {
        char more[64] = "";
        if (missing > 1)
            snprintf(more, sizeof more, " (and %d more parameter%s)", missing - 1, missing > 2 ? "s" : "");
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%s\" (shape %s) is missing%s", f->path, first,
                         first_shape, more);
    }
    return NAC_OK;
}

nac_status nac_ckpt_load_params(const nac_st_file *f, nac_params_t *ps, const char *prefix,
                                bool strict, bool with_optim) {
    NAC_ASSERT(f && ps);
    if (!prefix) prefix = "";
    int64_t maxn;
    NAC_TRY(check_params(f, ps, prefix, with_optim, &maxn));
    if (strict) NAC_TRY(check_no_extras(f, ps, prefix, with_optim));
    float *buf = malloc((size_t)(maxn ? maxn : 1) * sizeof *buf);
    if (!buf) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", f->path);
    /* state tensors the file brings are allocated first, so no allocation can fail midway */
    nac_status s = NAC_OK;
    for (int i = 0; i < ps->n && s == NAC_OK && with_optim; i++)
        for (int k = 1; k < 3 && s == NAC_OK; k++) {
            char name[NAME_MAX_LEN];
            nac_tensor_t *t = state_of(ps->items[i], k);
            if (tensor_name(name, prefix, ps->items[i]->name, k) == NAC_OK && nac_st_find(f, name) &&
                !t->impl)
                s = nac_tensor_alloc(t);
        }
    for (int i = 0; i < ps->n && s == NAC_OK; i++) {
        nac_param_t *p = ps->items[i];
        for (int k = 0; k < (with_optim ? 3 : 1) && s == NAC_OK; k++) {
            char name[NAME_MAX_LEN];
            nac_tensor_t *t = state_of(p, k);
            s = tensor_name(name, prefix, p->name, k);
            const nac_st_tensor *st = s == NAC_OK ? nac_st_find(f, name) : NULL;
            if (!st) { /* optimiser state the file does not have: it was still zero */
                if (s == NAC_OK && t->impl) s = nac_tensor_fill(t, 0.0f);
                continue;
            }
            nac_dtype_to_f32(st->dtype, nac_st_data(f, st), buf, nac_tensor_numel(t));
            s = nac_tensor_from_host(t, buf);
        }
    }
    free(buf);
    if (s != NAC_OK) nac_error_prefix(s, "%s: ", f->path);
    return s;
}

nac_status nac_ckpt_load(const char *path, nac_params_t *ps, const char *prefix, bool strict,
                         bool with_optim) {
    nac_st_file *f;
    NAC_TRY(nac_st_load(path, &f));
    nac_status s = nac_ckpt_load_params(f, ps, prefix, strict, with_optim);
    nac_st_free(f);
    return s;
}
