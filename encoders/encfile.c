/* The encoder file: one writer, one reader, one validation (encfile.h). Messages name the
 * file and the metadata key, one problem each. */
#include "encoders/encfile.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"

struct nac_encfile {
    char *path;
    nac_st_file *st;
    nac_encfile_meta meta;
    nac_encoder_config ec;
};

/* ---- writing ---- */

nac_status nac_encfile_save(const char *path, nac_encoder_t *enc, nac_head_t *const *heads,
                            int nheads, const nac_encfile_meta *m) {
    if (!path || !enc || !m || (nheads > 0 && !heads))
        return nac_error(NAC_ERR_INVALID, "nac_encfile_save: NULL argument");
    nac_st_writer *w = nac_st_writer_new();
    if (!w) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    nac_params_t hp = {0};
    nac_status s = nac_ckpt_add_params(w, nac_encoder_params(enc), "", false);
    if (s == NAC_OK) s = nac_encoder_write_extras(enc, w, "", nac_encoder_batches_tracked(enc));
    for (int i = 0; s == NAC_OK && i < nheads; i++)
        if (heads[i]) s = nac_params_view_add(&hp, nac_head_params(heads[i]));
    if (s == NAC_OK) s = nac_ckpt_add_params(w, &hp, "", false);
    free(hp.items);
    char v[160];
    if (s == NAC_OK) s = nac_st_writer_meta(w, "format", NAC_ENCFILE_FORMAT);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "arch", m->arch);
    snprintf(v, sizeof v, "%.9g", m->width_mult);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "width_mult", v);
    snprintf(v, sizeof v, "%d", m->in_channels);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "in_channels", v);
    snprintf(v, sizeof v, "%d", m->in_size);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "in_size", v);
    snprintf(v, sizeof v, "%.9g %.9g %.9g", m->mean[0], m->mean[1], m->mean[2]);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "norm_mean", v);
    snprintf(v, sizeof v, "%.9g %.9g %.9g", m->std[0], m->std[1], m->std[2]);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "norm_std", v);
    if (s == NAC_OK) s = nac_st_writer_meta(w, "objective", m->objective);
    if (s == NAC_OK && m->config) s = nac_st_writer_meta(w, "config", m->config);
    if (s == NAC_OK) s = nac_st_writer_save(w, path);
    nac_st_writer_free(w);
    return s;
}

/* ---- reading ---- */

static nac_status meta_three(const nac_encfile_t *f, const char *key, float v[3]) {
    const char *s = nac_st_meta(f->st, key);
    if (!s) return nac_error(NAC_ERR_DATA, "%s: metadata \"%s\" is missing", f->path, key);
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        char *end;
        v[i] = strtof(p, &end);
        if (end == p || !isfinite(v[i]))
            return nac_error(NAC_ERR_DATA, "%s: metadata \"%s\" = \"%s\" is not three numbers",
                             f->path, key, s);
        p = end;
    }
    return NAC_OK;
}

static nac_status meta_int(const nac_encfile_t *f, const char *key, int lo, int hi, int *out) {
    const char *s = nac_st_meta(f->st, key);
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || end == s || *end || v < lo || v > hi)
        return nac_error(NAC_ERR_DATA, "%s: metadata \"%s\" %s%s%s (want an integer in %d..%d)",
                         f->path, key, s ? "= \"" : "is missing", s ? s : "", s ? "\"" : "", lo,
                         hi);
    *out = (int)v;
    return NAC_OK;
}

/* MLP sizes from the shapes of "layers.<i>.weight". */
static nac_status mlp_sizes(const nac_encfile_t *f, nac_encoder_config *ec) {
    ec->mlp_nsizes = 0;
    for (int i = 0; i < NAC_MLP_MAX_SIZES - 1; i++) {
        char name[64];
        snprintf(name, sizeof name, "layers.%d.weight", i);
        const nac_st_tensor *t = nac_st_find(f->st, name);
        if (!t) break;
        if (t->ndim != 2) return nac_error(NAC_ERR_DATA, "%s: %s is not 2-D", f->path, name);
        if (i == 0) ec->mlp_sizes[ec->mlp_nsizes++] = (int)t->shape[1];
        else if (t->shape[1] != ec->mlp_sizes[i])
            return nac_error(NAC_ERR_DATA,
                             "%s: %s takes %" PRId64 " inputs, the layer before gives %d", f->path,
                             name, t->shape[1], ec->mlp_sizes[i]);
        ec->mlp_sizes[ec->mlp_nsizes++] = (int)t->shape[0];
    }
    if (ec->mlp_nsizes < 2)
        return nac_error(NAC_ERR_DATA, "%s: an mlp encoder without layers.0.weight", f->path);
    return NAC_OK;
}

static nac_status validate(nac_encfile_t *f) {
    nac_encfile_meta *m = &f->meta;
    nac_encoder_config *ec = &f->ec;
    const char *arch = nac_st_meta(f->st, "arch"), *wm = nac_st_meta(f->st, "width_mult");
    const char *obj = nac_st_meta(f->st, "objective");
    if (!arch || !nac_encoder_arch_known(arch))
        return nac_error(NAC_ERR_DATA,
                         "%s: metadata \"arch\" is %s%s%s (want %s): not an encoder file of "
                         "`nac pretrain`",
                         f->path, arch ? "\"" : "missing", arch ? arch : "", arch ? "\"" : "",
                         nac_encoder_arch_list());
    snprintf(m->arch, sizeof m->arch, "%s", arch);
    snprintf(ec->arch, sizeof ec->arch, "%s", arch);
    snprintf(m->objective, sizeof m->objective, "%s", obj ? obj : "unknown");
    m->config = nac_st_meta(f->st, "config");
    bool mlp = !strcmp(arch, "mlp");
    int channels = 1;
    if (mlp) {
        NAC_TRY(mlp_sizes(f, ec));
    } else {
        char *end = NULL;
        double w = wm ? strtod(wm, &end) : 0;
        if (!wm || end == wm || !(w > 0 && w <= 64))
            return nac_error(NAC_ERR_DATA, "%s: metadata \"width_mult\" is %s", f->path,
                             wm ? wm : "missing");
        m->width_mult = w;
        ec->width_mult = (float)w;
        NAC_TRY(meta_int(f, "in_channels", 1, 3, &m->in_channels));
        NAC_TRY(meta_int(f, "in_size", 1, 4096, &m->in_size));
        ec->in_channels = m->in_channels;
        ec->in_size = m->in_size;
        channels = m->in_channels;
    }
    NAC_TRY(meta_three(f, "norm_mean", m->mean));
    NAC_TRY(meta_three(f, "norm_std", m->std));
    for (int i = 0; i < channels; i++)
        if (!(m->std[i] > 0))
            return nac_error(NAC_ERR_DATA, "%s: norm_std of channel %d is %g", f->path, i,
                             (double)m->std[i]);
    return NAC_OK;
}

nac_status nac_encfile_open(const char *path, nac_encfile_t **out) {
    if (!path || !out) return nac_error(NAC_ERR_INVALID, "nac_encfile_open: NULL argument");
    *out = NULL;
    nac_encfile_t *f = calloc(1, sizeof *f);
    if (f) f->path = strdup(path);
    if (!f || !f->path) {
        nac_encfile_close(f);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    }
    nac_encoder_config_defaults(&f->ec);
    nac_status s = nac_st_load(path, &f->st);
    if (s == NAC_OK) s = validate(f);
    if (s != NAC_OK) {
        nac_encfile_close(f);
        return s;
    }
    *out = f;
    return NAC_OK;
}

void nac_encfile_close(nac_encfile_t *f) {
    if (!f) return;
    nac_st_free(f->st);
    free(f->path);
    free(f);
}

const char *nac_encfile_path(const nac_encfile_t *f) { return f->path; }
const nac_encfile_meta *nac_encfile_get_meta(const nac_encfile_t *f) { return &f->meta; }
const nac_encoder_config *nac_encfile_encoder_config(const nac_encfile_t *f) { return &f->ec; }

nac_status nac_encfile_expect(const nac_encfile_t *f, const nac_encoder_config *want) {
    const nac_encoder_config *ec = &f->ec;
    if (strcmp(ec->arch, want->arch))
        return nac_error(NAC_ERR_CONFIG, "%s holds a %s encoder, the config asks for %s", f->path,
                         ec->arch, want->arch);
    if (!strcmp(ec->arch, "mlp")) return NAC_OK;
    if (fabs(f->meta.width_mult - want->width_mult) > 1e-6)
        return nac_error(NAC_ERR_CONFIG, "%s has width_mult %.9g, the config asks for %g",
                         f->path, f->meta.width_mult, (double)want->width_mult);
    if (ec->in_channels != want->in_channels || ec->in_size != want->in_size)
        return nac_error(NAC_ERR_CONFIG, "%s takes %dx%dx%d images; the data has %dx%dx%d",
                         f->path, ec->in_channels, ec->in_size, ec->in_size, want->in_channels,
                         want->in_size, want->in_size);
    return NAC_OK;
}

nac_status nac_encfile_load_encoder(const nac_encfile_t *f, nac_encoder_t *enc) {
    nac_status s = nac_ckpt_load_params(f->st, nac_encoder_params(enc), "", false, false);
    return s == NAC_OK ? NAC_OK : nac_error_prefix(s, "%s: ", f->path);
}

nac_status nac_encfile_create_encoder(const nac_encfile_t *f, nac_backend_t *be,
                                      nac_encoder_t **out) {
    NAC_TRY(nac_encoder_create(be, &f->ec, out));
    nac_status s = nac_encfile_load_encoder(f, *out);
    if (s != NAC_OK) {
        nac_encoder_free(*out);
        *out = NULL;
    }
    return s;
}

nac_status nac_encfile_load_head(const nac_encfile_t *f, nac_backend_t *be, const char *prefix,
                                 int features, nac_head_t **out) {
    *out = NULL;
    char n0[64], n2[64];
    snprintf(n0, sizeof n0, "%s0.weight", prefix);
    snprintf(n2, sizeof n2, "%s2.weight", prefix);
    const nac_st_tensor *w0 = nac_st_find(f->st, n0), *w2 = nac_st_find(f->st, n2);
    if (!w0 && !w2) return NAC_OK;
    if (!w0 || !w2 || w0->ndim != 2 || w2->ndim != 2 || w0->shape[1] != features ||
        w2->shape[1] != w0->shape[0])
        return nac_error(NAC_ERR_DATA, "%s: the head %s/%s does not fit an encoder of %d features",
                         f->path, n0, n2, features);
    NAC_TRY(nac_head_create(be, features, (int)w0->shape[0], (int)w2->shape[0], prefix, 0, out));
    nac_status s = nac_ckpt_load_params(f->st, nac_head_params(*out), "", false, false);
    if (s != NAC_OK) {
        nac_head_free(*out);
        *out = NULL;
        return nac_error_prefix(s, "%s: ", f->path);
    }
    return NAC_OK;
}
