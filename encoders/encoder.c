/* The encoder registry and the architecture-independent half of the module: argument
 * checks, buffer planning per batch size, the train/eval bookkeeping that guards the
 * backward, batched feature extraction and torchvision's num_batches_tracked extras. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encoders/encoder_impl.h"

#include <math.h>

int enc_width(int base, float width_mult) {
    long w = lround((double)base * (double)width_mult);
    return w < 1 ? 1 : (int)w;
}

nac_builder_t enc_builder(nac_encoder_t *e) {
    return (nac_builder_t){.ps = &e->params, .be = e->be, .seed = e->cfg.seed,
                           .skip_init = e->cfg.skip_init, .group = 0, .bn_sync = &e->bn_sync};
}

static const enc_resnet_variant R18 = {{2, 2, 2, 2}, false};
static const enc_resnet_variant R34 = {{3, 4, 6, 3}, false};
static const enc_resnet_variant R50 = {{3, 4, 6, 3}, true};

static const struct arch_entry {
    const char *name;
    const enc_arch_i *iface;
    const void *variant;
} ARCHS[] = {
#define ARCH_ROW(name, builder, variant) {name, &builder, variant}
#define ARCH_COMMA() ,
    NAC_ENCODER_IMAGE_ARCHS(ARCH_ROW, ARCH_COMMA),
    {"mlp", &nac_enc_mlp_i, NULL},
};
#define NARCHS (sizeof ARCHS / sizeof ARCHS[0])

static const struct arch_entry *arch_find(const char *name) {
    for (size_t i = 0; i < NARCHS; i++)
        if (strcmp(ARCHS[i].name, name) == 0) return &ARCHS[i];
    return NULL;
}

bool nac_encoder_arch_known(const char *name) { return name && arch_find(name) != NULL; }

const char *nac_encoder_arch_list(void) { return NAC_ENCODER_IMAGE_ARCH_CHOICES "|mlp"; }

void nac_encoder_config_defaults(nac_encoder_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->arch, sizeof cfg->arch, "resnet18");
    cfg->in_channels = 3;
    cfg->in_size = 32;
    cfg->width_mult = 1.0f;
    cfg->mlp_sizes[0] = 2;
    cfg->mlp_sizes[1] = 64;
    cfg->mlp_sizes[2] = 64;
    cfg->mlp_nsizes = 3;
    cfg->seed = 0;
}

static bool is_mlp(const nac_encoder_t *e) { return e->iface == &nac_enc_mlp_i; }

static nac_status check_config(const nac_encoder_config *c) {
    if (!memchr(c->arch, '\0', sizeof c->arch) || !arch_find(c->arch))
        return nac_error(NAC_ERR_INVALID, "encoder: unknown architecture \"%.*s\" (known: %s)",
                         (int)sizeof c->arch, c->arch, nac_encoder_arch_list());
    if (strcmp(c->arch, "mlp") == 0) {
        if (c->mlp_nsizes < 2 || c->mlp_nsizes > NAC_MLP_MAX_SIZES)
            return nac_error(NAC_ERR_INVALID,
                             "encoder mlp: %d sizes given; need the input size and 1 to %d "
                             "layer widths",
                             c->mlp_nsizes, NAC_MLP_MAX_SIZES - 1);
        for (int i = 0; i < c->mlp_nsizes; i++)
            if (c->mlp_sizes[i] < 1 || c->mlp_sizes[i] > 1 << 20)
                return nac_error(NAC_ERR_INVALID, "encoder mlp: size %d is %d (1 to %d)", i,
                                 c->mlp_sizes[i], 1 << 20);
        return NAC_OK;
    }
    if (c->in_channels < 1 || c->in_channels > 64 || c->in_size < 1 || c->in_size > 4096)
        return nac_error(NAC_ERR_INVALID,
                         "encoder %s: %d input channels of %dx%d pixels is not an image size "
                         "it can take",
                         c->arch, c->in_channels, c->in_size, c->in_size);
    if (!(c->width_mult > 0.0f) || c->width_mult > 16.0f)
        return nac_error(NAC_ERR_INVALID, "encoder %s: width multiplier %g outside (0, 16]",
                         c->arch, (double)c->width_mult);
    return NAC_OK;
}

nac_status nac_encoder_create(nac_backend_t *be, const nac_encoder_config *cfg,
                              nac_encoder_t **out) {
    if (!be || !cfg || !out) return nac_error(NAC_ERR_INVALID, "nac_encoder_create: NULL argument");
    *out = NULL;
    NAC_TRY(check_config(cfg));
    const struct arch_entry *a = arch_find(cfg->arch);
    nac_encoder_t *e = calloc(1, sizeof *e);
    if (!e) return nac_error(NAC_ERR_NOMEM, "encoder %s: out of memory", cfg->arch);
    e->iface = a->iface;
    e->variant = a->variant;
    e->be = be;
    e->cfg = *cfg;
    nac_params_init(&e->params);
    nac_status s = e->iface->build(e);
    if (s != NAC_OK) {
        nac_error_prefix(s, "creating encoder %s: ", cfg->arch);
        nac_encoder_free(e);
        return s;
    }
    *out = e;
    return NAC_OK;
}

static void release_plan(nac_encoder_t *e) {
    if (e->arch) e->iface->release(e);
    nac_tensor_release(&e->h);
    e->n = 0;
    e->can_backward = false;
}

void nac_encoder_free(nac_encoder_t *e) {
    if (!e) return;
    release_plan(e);
    nac_tensor_release(&e->host_x);
    if (e->arch) e->iface->destroy(e);
    nac_params_free(&e->params);
    nac_bn_sync_release(&e->bn_sync);
    free(e);
}

void nac_encoder_set_bn_comm(nac_encoder_t *e, nac_comm_t *comm) {
    if (e) e->bn_sync.comm = comm;
}

nac_params_t *nac_encoder_params(nac_encoder_t *e) { return e ? &e->params : NULL; }
const nac_encoder_config *nac_encoder_get_config(const nac_encoder_t *e) {
    return e ? &e->cfg : NULL;
}
int nac_encoder_features(const nac_encoder_t *e) { return e ? e->features : 0; }
int64_t nac_encoder_batches_tracked(const nac_encoder_t *e) { return e ? e->tracked : 0; }

#define SHAPE(t) nac_tensor_shape_str((t), (char[64]){0}, 64)

static nac_status check_input(const nac_encoder_t *e, const nac_tensor_t *x) {
    const nac_encoder_config *c = &e->cfg;
    if (x->be != e->be)
        return nac_error(NAC_ERR_INVALID, "encoder %s: input lives on backend %s, not %s",
                         c->arch, nac_backend_name(x->be), nac_backend_name(e->be));
    if (is_mlp(e)) {
        int64_t d = c->mlp_sizes[0];
        if ((x->ndim != 2 && x->ndim != 4) || x->dim[0] < 1 ||
            nac_tensor_numel(x) != x->dim[0] * d)
            return nac_error(NAC_ERR_INVALID,
                             "encoder mlp: input %s is not (N, %" PRId64 ") or (N, C, H, W) "
                             "with C*H*W = %" PRId64,
                             SHAPE(x), d, d);
        return NAC_OK;
    }
    if (x->ndim != 4 || x->dim[0] < 1 || x->dim[1] != c->in_channels ||
        x->dim[2] != c->in_size || x->dim[3] != c->in_size)
        return nac_error(NAC_ERR_INVALID, "encoder %s: input %s is not (N, %d, %d, %d)", c->arch,
                         SHAPE(x), c->in_channels, c->in_size, c->in_size);
    return NAC_OK;
}

nac_status nac_encoder_forward(nac_encoder_t *e, const nac_tensor_t *x, bool train,
                               int bn_groups, const nac_tensor_t **h) {
    if (!e || !x || !h) return nac_error(NAC_ERR_INVALID, "nac_encoder_forward: NULL argument");
    *h = NULL;
    NAC_TRY(check_input(e, x));
    int64_t n = x->dim[0];
    if (train && (bn_groups < 1 || n % bn_groups != 0))
        return nac_error(NAC_ERR_INVALID,
                         "encoder %s: a batch of %" PRId64 " does not split into %d "
                         "batch-norm groups",
                         e->cfg.arch, n, bn_groups);
    int groups = train ? bn_groups : (e->groups ? e->groups : 1);
    if (n != e->n || groups != e->groups) {
        release_plan(e);
        e->iface->plan(e, n, groups);
        nac_t2(&e->h, e->be, n, e->features);
        e->n = n;
        e->groups = groups;
    }
    e->can_backward = false;
    nac_status s = e->iface->forward(e, x, train, groups);
    if (s != NAC_OK) return nac_error_prefix(s, "encoder %s forward: ", e->cfg.arch);
    if (train) {
        e->can_backward = true;
        e->x = x;
        e->tracked += groups;
    }
    *h = &e->h;
    return NAC_OK;
}

nac_status nac_encoder_backward(nac_encoder_t *e, const nac_tensor_t *dh, nac_tensor_t *dx) {
    if (!e || !dh) return nac_error(NAC_ERR_INVALID, "nac_encoder_backward: NULL argument");
    if (!e->can_backward)
        return nac_error(NAC_ERR_INVALID,
                         "encoder %s backward: the last forward was not a training forward",
                         e->cfg.arch);
    if (!nac_tensor_same_shape(dh, &e->h) || dh->be != e->be)
        return nac_error(NAC_ERR_INVALID, "encoder %s backward: dh is %s, the features are %s",
                         e->cfg.arch, SHAPE(dh), SHAPE(&e->h));
    if (dx && (!nac_tensor_same_shape(dx, e->x) || dx->be != e->be))
        return nac_error(NAC_ERR_INVALID, "encoder %s backward: dx is %s, the input was %s",
                         e->cfg.arch, SHAPE(dx), SHAPE(e->x));
    nac_status s = e->iface->backward(e, dh, dx);
    if (s != NAC_OK) return nac_error_prefix(s, "encoder %s backward: ", e->cfg.arch);
    return NAC_OK;
}

nac_status nac_encoder_features_host(nac_encoder_t *e, const float *images, int64_t n,
                                     int batch, float *out) {
    if (!e || (n > 0 && (!images || !out)))
        return nac_error(NAC_ERR_INVALID, "nac_encoder_features_host: NULL argument");
    if (batch < 1 || n < 0)
        return nac_error(NAC_ERR_INVALID, "encoder %s features: %" PRId64 " images in batches "
                         "of %d", e->cfg.arch, n, batch);
    if (n == 0) return NAC_OK;
    const nac_encoder_config *c = &e->cfg;
    int64_t per = is_mlp(e) ? c->mlp_sizes[0] : (int64_t)c->in_channels * c->in_size * c->in_size;
    int64_t f = e->features;
    if (e->host_x.ndim == 0 || e->host_x.dim[0] != batch) {
        nac_tensor_release(&e->host_x);
        if (is_mlp(e)) nac_t2(&e->host_x, e->be, batch, per);
        else nac_t4(&e->host_x, e->be, batch, c->in_channels, c->in_size, c->in_size);
    }
    float *in = malloc((size_t)batch * (size_t)per * sizeof *in);
    float *hb = malloc((size_t)batch * (size_t)f * sizeof *hb);
    nac_status s = in && hb ? NAC_OK : nac_error(NAC_ERR_NOMEM, "encoder features: out of memory");
    for (int64_t start = 0; s == NAC_OK && start < n; start += batch) {
        int64_t m = n - start < batch ? n - start : batch;
        for (int64_t i = 0; i < batch; i++)
            memcpy(in + i * per, images + (start + i % m) * per, (size_t)per * sizeof *in);
        const nac_tensor_t *h;
        s = nac_tensor_from_host(&e->host_x, in);
        if (s == NAC_OK) s = nac_encoder_forward(e, &e->host_x, false, 1, &h);
        if (s == NAC_OK) s = nac_tensor_to_host(h, hb);
        if (s == NAC_OK) memcpy(out + start * f, hb, (size_t)(m * f) * sizeof *out);
    }
    free(in);
    free(hb);
    return s;
}

/* The running statistics (buffers) of the encoder's batch norms. */
static int bn_buffers(const nac_encoder_t *e, nac_param_t **out) {
    int n = 0;
    for (int i = 0; i < e->params.n; i++)
        if (e->params.items[i]->flags & NAC_PARAM_BUFFER) {
            if (out) out[n] = e->params.items[i];
            n++;
        }
    return n;
}

nac_status nac_encoder_recalibrate_bn(nac_encoder_t *e, const float *images, int64_t n,
                                      int batch) {
    if (!e || !images || n < 1 || batch < 1)
        return nac_error(NAC_ERR_INVALID, "nac_encoder_recalibrate_bn: %s",
                         !e || !images ? "NULL argument" : "no images or batch < 1");
    int nb = bn_buffers(e, NULL);
    if (nb == 0) return NAC_OK;
    if (n < batch) batch = (int)n;
    const nac_encoder_config *c = &e->cfg;
    int64_t per = (int64_t)c->in_channels * c->in_size * c->in_size, total = 0;
    for (int i = 0; i < e->params.n; i++)
        if (e->params.items[i]->flags & NAC_PARAM_BUFFER) total += nac_tensor_numel(&e->params.items[i]->w);
    nac_param_t **bufs = malloc((size_t)nb * sizeof *bufs);
    float *host = malloc((size_t)total * sizeof *host), *zero = calloc((size_t)total, sizeof *zero);
    double *acc = calloc((size_t)total, sizeof *acc);
    nac_tensor_t x = {0};
    nac_status s = bufs && host && zero && acc ? NAC_OK
                                               : nac_error(NAC_ERR_NOMEM, "recalibrating batch norm: out of memory");
    if (s == NAC_OK) {
        bn_buffers(e, bufs);
        nac_t4(&x, e->be, batch, c->in_channels, c->in_size, c->in_size);
    }
    /* this rank's images only: its own statistics, no collective the others would miss */
    nac_comm_t *comm = e->bn_sync.comm;
    e->bn_sync.comm = NULL;
    /* Each batch starts from zero statistics, so after one momentum-0.1 update a buffer
       holds 0.1 x the batch's statistic; the batches are averaged in double precision. */
    int64_t batches = n / batch;
    for (int64_t t = 0; s == NAC_OK && t < batches; t++) {
        for (int i = 0, off = 0; s == NAC_OK && i < nb; off += (int)nac_tensor_numel(&bufs[i]->w), i++)
            s = nac_tensor_from_host(&bufs[i]->w, zero + off);
        const nac_tensor_t *h;
        if (s == NAC_OK) s = nac_tensor_from_host(&x, images + t * batch * per);
        if (s == NAC_OK) s = nac_encoder_forward(e, &x, true, 1, &h);
        for (int i = 0, off = 0; s == NAC_OK && i < nb; off += (int)nac_tensor_numel(&bufs[i]->w), i++)
            s = nac_tensor_to_host(&bufs[i]->w, host + off);
        for (int64_t j = 0; s == NAC_OK && j < total; j++)
            acc[j] += (10.0 * host[j] - acc[j]) / (double)(t + 1);
    }
    for (int64_t j = 0; s == NAC_OK && j < total; j++) host[j] = (float)acc[j];
    for (int i = 0, off = 0; s == NAC_OK && i < nb; off += (int)nac_tensor_numel(&bufs[i]->w), i++)
        s = nac_tensor_from_host(&bufs[i]->w, host + off);
    e->bn_sync.comm = comm;
    nac_tensor_release(&x);
    free(bufs);
    free(host);
    free(zero);
    free(acc);
    return s;
}

nac_status nac_encoder_write_extras(const nac_encoder_t *e, nac_st_writer *w,
                                    const char *prefix, int64_t tracked) {
    if (!e || !w) return nac_error(NAC_ERR_INVALID, "nac_encoder_write_extras: NULL argument");
    static const char suffix[] = ".running_mean";
    const size_t ls = sizeof suffix - 1;
    for (int i = 0; i < e->params.n; i++) {
        const char *name = e->params.items[i]->name;
        size_t len = strlen(name);
        if (len < ls || strcmp(name + len - ls, suffix) != 0) continue;
        char key[300];
        snprintf(key, sizeof key, "%s%.*s.num_batches_tracked", prefix ? prefix : "",
                 (int)(len - ls), name);
        int64_t dim0 = 1;
        NAC_TRY(nac_st_writer_add(w, key, NAC_DT_I64, 0, &dim0, &tracked));
    }
    return NAC_OK;
}
