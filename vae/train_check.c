/* The VAE config's cross-field rules, checked from the config alone, so a run folder is
 * created only for a config that can run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dist/ranks.h"
#include "nac/pretrain.h"
#include "vae/train.h"

nac_status nac_vae_encoder_compatible(const nac_vae_train_config *c, const nac_st_file *f) {
    const char *arch = nac_st_meta(f, "arch"), *wm = nac_st_meta(f, "width_mult");
    if (!arch || strcmp(arch, c->arch))
        return nac_error(NAC_ERR_CONFIG, "%s holds a %s encoder, the config asks for %s", c->encoder,
                         arch ? arch : "(unnamed)", c->arch);
    if (wm && fabs(strtod(wm, NULL) - c->width_mult) > 1e-6)
        return nac_error(NAC_ERR_CONFIG, "%s has width_mult %s, the config asks for %g", c->encoder,
                         wm, c->width_mult);
    return NAC_OK;
}

nac_status nac_vae_config_check(const nac_vae_train_config *c) {
    if (c->encoder[0]) {
        struct stat st;
        if (stat(c->encoder, &st) != 0)
            return nac_error(NAC_ERR_NOINPUT, "\"model.encoder\" %s: no such file", c->encoder);
        /* the whole file is validated, and its architecture matched, before a run begins */
        nac_st_file *f;
        NAC_TRY(nac_st_load(c->encoder, &f));
        nac_status s = nac_vae_encoder_compatible(c, f);
        nac_st_free(f);
        NAC_TRY(s);
    }
    NAC_TRY(nac_dist_check_batch(c->batch, c->emulate_ranks, c->mpi_ranks));
    /* the most training images there can be (a fifth of a synthetic set is the test split) */
    int64_t most = !strcmp(c->dataset, "synthetic") ? c->synthetic_n - 10 * (c->synthetic_n / 50)
                                                    : INT64_MAX;
    if (c->per_class > 0 && (int64_t)c->per_class * 10 < most) most = (int64_t)c->per_class * 10;
    if (c->batch > most)
        return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d is larger than the dataset (at most %lld images)",
                         c->batch, (long long)most);
    NAC_TRY(nac_data_path_check(c->dataset, c->data_path, true));
    return nac_backend_check(c->backend); /* e.g. "cuda" on a machine without a GPU */
}
