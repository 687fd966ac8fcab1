/* The dataset recipe (recipe.h): load or synthesise, split, normalise, subset. */
#include "data/recipe.h"

#include <string.h>

#include "backend/rng.h"
#include "data/norm.h"

/* Replace *ds by its per_class-a-class subset drawn with key. */
static nac_status subset(nac_dataset_t *ds, int per_class, uint64_t key) {
    nac_dataset_t sub = {0};
    nac_status s = nac_dataset_subset_per_class(ds, per_class, key, &sub, NULL);
    nac_dataset_free(ds);
    if (s == NAC_OK) *ds = sub;
    else nac_dataset_free(&sub);
    return s;
}

static nac_status load_splits(const nac_data_recipe *r, nac_dataset_t *train, nac_dataset_t *test) {
    if (!strcmp(r->dataset, "synthetic")) {
        int n = r->synthetic_n > 0 ? r->synthetic_n : 2000;
        uint64_t key = nac_rng_key(r->seed, NAC_STREAM_SYNTH, 0, 0);
        if (!r->want_test) return nac_dataset_synthetic(n, 10, 3, 32, 32, key, train);
        nac_dataset_t all;
        NAC_TRY(nac_dataset_synthetic(n, 10, 3, 32, 32, key, &all));
        nac_status s = nac_dataset_subset_per_class(&all, n / 50 > 0 ? n / 50 : 1,
                                                    nac_rng_key(r->seed, NAC_STREAM_SPLIT, 7, 0),
                                                    test, train);
        nac_dataset_free(&all);
        return s;
    }
    NAC_TRY(nac_dataset_load_named(r->dataset, r->path, NAC_SPLIT_TRAIN, train));
    return r->want_test ? nac_dataset_load_named(r->dataset, r->path, NAC_SPLIT_TEST, test) : NAC_OK;
}

nac_status nac_data_recipe_load(const nac_data_recipe *r, nac_dataset_t *train,
                                nac_dataset_t *test, float mean[3], float std[3]) {
    if (!r || !r->dataset || !train || (r->want_test && !test))
        return nac_error(NAC_ERR_INVALID, "nac_data_recipe_load: NULL argument");
    memset(train, 0, sizeof *train);
    if (test) memset(test, 0, sizeof *test);
    nac_status s = load_splits(r, train, test);
    if (s == NAC_OK && mean && std) nac_dataset_norm(r->dataset, train, mean, std);
    if (s == NAC_OK && r->train_per_class > 0) s = subset(train, r->train_per_class, r->train_key);
    if (s == NAC_OK && r->want_test && r->test_per_class > 0)
        s = subset(test, r->test_per_class, r->test_key);
    if (s == NAC_OK && r->want_test && r->test_limit > 0 && r->test_limit < test->n) {
        int per = r->test_limit / (test->nclasses > 0 ? test->nclasses : 1);
        s = subset(test, per > 0 ? per : 1, r->test_key);
    }
    if (s != NAC_OK) {
        nac_dataset_free(train);
        if (test) nac_dataset_free(test);
    }
    return s;
}
