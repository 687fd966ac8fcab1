/* Evaluation features and their baselines (eval/features.h). */
#include "eval/features.h"

#include <stdlib.h>
#include <string.h>

#include "data/loader.h"
#include "dist/ranks.h"

nac_status nac_features_images(const nac_dataset_t *ds, const float *mean, const float *std,
                               int64_t start, int64_t n, float *x) {
    if (!ds || !mean || !std || !x || start < 0 || n < 0 || start + n > ds->n)
        return nac_error(NAC_ERR_INVALID, "nac_features_images: bad arguments");
    nac_loader_config lc;
    nac_loader_defaults(&lc);
    lc.views = 1;
    nac_augment_none(&lc.augment);
    nac_augment_set_norm(&lc.augment, ds->c, mean, std);
    enum { CHUNK = 1024 };
    int64_t idx[CHUNK], per = (int64_t)ds->c * ds->h * ds->w;
    for (int64_t done = 0; done < n; done += CHUNK) {
        int64_t k = n - done < CHUNK ? n - done : CHUNK;
        for (int64_t i = 0; i < k; i++) idx[i] = start + done + i;
        NAC_TRY(nac_loader_views(ds, &lc, 0, idx, (int)k, x + done * per));
    }
    return NAC_OK;
}

/* Features of images [first, first + count) of ds into rows first.. of feat (n, f). */
static nac_status features_range(nac_encoder_t *enc, const nac_dataset_t *ds, const float *mean,
                                 const float *std, int batch, int64_t first, int64_t count,
                                 nac_features_progress_fn progress, void *ctx, float *feat) {
    int64_t per = (int64_t)ds->c * ds->h * ds->w, f = enc ? nac_encoder_features(enc) : per;
    int64_t chunk = enc ? (batch * 4 < count ? batch * 4 : count) : count;
    if (count == 0) return NAC_OK;
    float *x = enc ? malloc((size_t)chunk * (size_t)per * sizeof *x) : NULL;
    nac_status s = x || !enc ? NAC_OK
                             : nac_error(NAC_ERR_NOMEM, "features of %lld images: out of memory",
                                         (long long)count);
    for (int64_t start = first; s == NAC_OK && start < first + count; start += chunk) {
        int64_t n = first + count - start < chunk ? first + count - start : chunk;
        if (!enc) { /* the pixels are the features */
            s = nac_features_images(ds, mean, std, start, n, feat + start * f);
        } else {
            s = nac_features_images(ds, mean, std, start, n, x);
            if (s == NAC_OK) s = nac_encoder_features_host(enc, x, n, batch, feat + start * f);
        }
        if (s == NAC_OK && progress) progress(ctx, start + n - first, count);
    }
    free(x);
    return s;
}

nac_status nac_features_compute(nac_encoder_t *enc, const nac_dataset_t *ds, const float *mean,
                                const float *std, int batch, nac_features_progress_fn progress,
                                void *ctx, float **out, int64_t *dim) {
    return nac_features_compute_comm(NULL, enc, ds, mean, std, batch, progress, ctx, out, dim);
}

nac_status nac_features_compute_comm(nac_comm_t *comm, nac_encoder_t *enc, const nac_dataset_t *ds,
                                     const float *mean, const float *std, int batch,
                                     nac_features_progress_fn progress, void *ctx, float **out,
                                     int64_t *dim) {
    if (!ds || !out || !dim || batch < 1)
        return nac_error(NAC_ERR_INVALID, "nac_features_compute: bad arguments");
    int64_t f = enc ? nac_encoder_features(enc) : (int64_t)ds->c * ds->h * ds->w, first, count;
    *out = NULL;
    *dim = f;
    float *feat = malloc((size_t)ds->n * (size_t)f * sizeof *feat);
    if (!feat) return nac_error(NAC_ERR_NOMEM, "features of %d images: out of memory", ds->n);
    nac_comm_slice(ds->n, nac_comm_rank(comm), nac_comm_size(comm), &first, &count);
    nac_status s = features_range(enc, ds, mean, std, batch, first, count, progress, ctx, feat);
    s = nac_comm_agree_status(comm, s); /* a slice's failure stops every rank here */
    if (s == NAC_OK) s = nac_comm_allgather_rows(comm, feat, ds->n, (size_t)f * sizeof *feat);
    if (s != NAC_OK) {
        free(feat);
        return s;
    }
    *out = feat;
    return NAC_OK;
}

nac_status nac_features_random_encoder(nac_backend_t *be, const nac_encoder_config *cfg,
                                       const nac_dataset_t *train, const float *mean,
                                       const float *std, int64_t recal_n, int batch,
                                       nac_encoder_t **out) {
    if (!be || !cfg || !train || !out || recal_n < 1 || batch < 1)
        return nac_error(NAC_ERR_INVALID, "nac_features_random_encoder: bad arguments");
    nac_encoder_config c = *cfg;
    c.skip_init = false;
    NAC_TRY(nac_encoder_create(be, &c, out));
    int64_t n = recal_n < train->n ? recal_n : train->n;
    int64_t per = (int64_t)train->c * train->h * train->w;
    float *x = malloc((size_t)n * (size_t)per * sizeof *x);
    nac_status s = x ? NAC_OK : nac_error(NAC_ERR_NOMEM, "random baseline: out of memory");
    if (s == NAC_OK) s = nac_features_images(train, mean, std, 0, n, x);
    if (s == NAC_OK) s = nac_encoder_recalibrate_bn(*out, x, n, batch);
    free(x);
    if (s != NAC_OK) {
        nac_encoder_free(*out);
        *out = NULL;
    }
    return s;
}
