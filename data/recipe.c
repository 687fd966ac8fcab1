/* The dataset recipe (recipe.h): load or synthesise, split, normalise, subset. */
#include "data/recipe.h"

#include <inttypes.h>
#include <stdlib.h>
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
    if (s == NAC_OK && r->hash_queries > 0) { /* the gallery replaces the training split */
        nac_dataset_t held = {0}, gallery;
        if (!strcmp(r->dataset, "synthetic"))
            s = nac_error(NAC_ERR_CONFIG, "the hashing protocol (hash_queries) needs a dataset with a "
                          "test split, not synthetic");
        if (s == NAC_OK && !r->want_test)
            s = nac_dataset_load_named(r->dataset, r->path, NAC_SPLIT_TEST, &held);
        if (s == NAC_OK)
            s = nac_hash_gallery(train, r->want_test ? test : &held, r->hash_queries, r->hash_seed,
                                 &gallery);
        nac_dataset_free(&held);
        if (s == NAC_OK) {
            nac_dataset_free(train);
            *train = gallery;
        }
    }
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

/* Per class, qpc rows chosen by the seed are queries, the rest the database; both lists
 * in ascending row order. */
nac_status nac_hash_split(const nac_dataset_t *ds, int qpc, uint64_t seed, int64_t *q,
                             int64_t *nq, int64_t *db, int64_t *ndb) {
    int64_t *rows = malloc((size_t)ds->n * sizeof *rows);
    unsigned char *isq = calloc((size_t)ds->n, 1);
    if (!rows || !isq) {
        free(rows);
        free(isq);
        return nac_error(NAC_ERR_NOMEM, "hash split: out of memory");
    }
    nac_status s = NAC_OK;
    for (int k = 0; s == NAC_OK && k < ds->nclasses; k++) {
        int64_t c = 0;
        for (int64_t i = 0; i < ds->n; i++)
            if (ds->labels[i] == k) rows[c++] = i;
        if (c == 0) continue;
        if (c <= qpc) {
            s = nac_error(NAC_ERR_USAGE, "class %d (%s) has %" PRId64 " images: %d queries a class "
                          "leave none for the database (use --queries-per-class)", k,
                          ds->class_names[k], c, qpc);
            break;
        }
        nac_rng_t r;
        nac_rng_init(&r, nac_rng_key(seed, NAC_STREAM_SPLIT, 0x68617368ull /* "hash" */, (uint64_t)k));
        nac_rng_shuffle(&r, rows, c);
        for (int64_t j = 0; j < qpc; j++) isq[rows[j]] = 1;
    }
    *nq = *ndb = 0;
    for (int64_t i = 0; s == NAC_OK && i < ds->n; i++) {
        if (isq[i]) q[(*nq)++] = i;
        else db[(*ndb)++] = i;
    }
    free(rows);
    free(isq);
    return s;
}

nac_status nac_hash_gallery(const nac_dataset_t *train, const nac_dataset_t *test, int qpc,
                            uint64_t seed, nac_dataset_t *gallery) {
    if (!train || !test || !gallery || qpc < 1)
        return nac_error(NAC_ERR_INVALID, "nac_hash_gallery: bad arguments");
    nac_dataset_t pool;
    NAC_TRY(nac_dataset_concat(train, test, &pool));
    int64_t *q = malloc((size_t)pool.n * sizeof *q), *db = malloc((size_t)pool.n * sizeof *db), nq, ndb;
    nac_status s = q && db ? NAC_OK : nac_error(NAC_ERR_NOMEM, "hash gallery: out of memory");
    if (s == NAC_OK) s = nac_hash_split(&pool, qpc, seed, q, &nq, db, &ndb);
    if (s == NAC_OK) s = nac_dataset_select(&pool, db, ndb, gallery);
    free(q);
    free(db);
    nac_dataset_free(&pool);
    return s;
}
