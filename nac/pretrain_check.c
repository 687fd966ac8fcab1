/* The pretraining config's cross-field rules, checked from the config alone (no data,
 * no model), so a run folder is created only for a config that can run. */
#include <stdbool.h>
#include <string.h>

#include "data/dataset.h"
#include "nac/pretrain.h"

nac_status nac_data_path_check(const char *dataset, const char *path, bool with_test) {
    if (!strcmp(dataset, "synthetic")) return NAC_OK;
    if (!path[0] && strcmp(dataset, "fashion-mnist") != 0)
        return nac_error(NAC_ERR_CONFIG, "\"data.dataset\" = \"%s\" needs \"data.path\" (its folder)",
                         dataset);
    nac_status s = nac_dataset_check_files(dataset, path, with_test ? NAC_SPLIT_BOTH : NAC_SPLIT_TRAIN);
    return s == NAC_OK ? NAC_OK : nac_error_prefix(s, "\"data.path\": ");
}

nac_status nac_pretrain_config_check(const nac_pretrain_config *c) {
    if (c->warmup_epochs >= c->epochs)
        return nac_error(NAC_ERR_CONFIG, "\"optim.warmup_epochs\" = %d must be below \"train.epochs\" = %d",
                         c->warmup_epochs, c->epochs);
    bool momentum = !strcmp(c->objective, "nac_mq") || !strcmp(c->objective, "mocov2");
    if (momentum && (int64_t)c->queue < 2 * (int64_t)c->batch)
        return nac_error(NAC_ERR_CONFIG, "\"method.queue\" = %d must be at least two batches (%lld)",
                         c->queue, 2 * (long long)c->batch);
    if (c->emulate_ranks > 1 && c->batch % c->emulate_ranks)
        return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d does not split into %d equal slices "
                         "(\"dist.emulate_ranks\" = %d)", c->batch, c->emulate_ranks, c->emulate_ranks);
    if (c->mpi_ranks > 1 && c->batch % c->mpi_ranks)
        return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d does not split into %d equal slices, "
                         "one for each of the %d MPI ranks", c->batch, c->mpi_ranks, c->mpi_ranks);
    if (c->mpi_ranks > 1 && c->emulate_ranks > 1)
        return nac_error(NAC_ERR_CONFIG, "\"dist.emulate_ranks\" = %d under mpirun with %d ranks: "
                         "use one or the other", c->emulate_ranks, c->mpi_ranks);
    /* the most images the training set can have (10 classes in every dataset here) */
    int64_t most = !strcmp(c->dataset, "synthetic") ? c->synthetic_n : INT64_MAX;
    if (c->per_class > 0 && (int64_t)c->per_class * 10 < most) most = (int64_t)c->per_class * 10;
    if (c->batch > most)
        return nac_error(NAC_ERR_CONFIG, "\"train.batch\" = %d is larger than the dataset (at most %lld images)",
                         c->batch, (long long)most);
    NAC_TRY(nac_data_path_check(c->dataset, c->data_path, false));
    return nac_backend_check(c->backend); /* e.g. "cuda" on a machine without a GPU */
}
