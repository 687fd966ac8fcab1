/* The VAE config's cross-field rules, checked from the config alone, so a run folder is
 * created only for a config that can run. */
#include <string.h>
#include <sys/stat.h>

#include "nac/pretrain.h"
#include "vae/train.h"

nac_status nac_vae_config_check(const nac_vae_train_config *c) {
    if (c->encoder[0]) {
        struct stat st;
        if (stat(c->encoder, &st) != 0)
            return nac_error(NAC_ERR_NOINPUT, "\"model.encoder\" %s: no such file", c->encoder);
        if (!S_ISREG(st.st_mode))
            return nac_error(NAC_ERR_CONFIG, "\"model.encoder\" %s: not a regular file", c->encoder);
    }
    /* the most training images there can be (a fifth of a synthetic set is the test split) */
    int64_t most = !strcmp(c->dataset, "synthetic") ? c->synthetic_n - 10 * (c->synthetic_n / 50)
                                                    : INT64_MAX;
    if (c->per_class > 0 && (int64_t)c->per_class * 10 < most) most = (int64_t)c->per_class * 10;
    if (c->batch > most)
        return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d is larger than the dataset (at most %lld images)",
                         c->batch, (long long)most);
    return nac_data_path_check(c->dataset, c->data_path, true);
}
