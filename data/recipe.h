/* The dataset recipe: from a dataset's name, path and the run's choices (synthetic size,
 * per-class subsets, test limit, seeds) to the train and test splits a stage works on. The
 * one place that rebuilds splits: pretraining, VAE training and evaluation all call it, so
 * the same recipe gives the same images everywhere. */
#ifndef NAC_DATA_RECIPE_H
#define NAC_DATA_RECIPE_H

#include <stdbool.h>
#include <stdint.h>

#include "data/dataset.h"

typedef struct nac_data_recipe {
    const char *dataset;   /* "fashion-mnist" | "mnist" | "cifar10" | "synthetic" */
    const char *path;      /* the dataset's folder (unused for synthetic) */
    int synthetic_n;       /* synthetic images (0: 2000): 10 classes of 3x32x32 */
    uint64_t seed;         /* the run seed: draws the synthetic images and their test fifth */
    bool want_test;        /* false: the training split only, and a synthetic set stays whole
                              (pretraining); true: a synthetic set gives a fixed fifth of each
                              class (at least one image) as its test split */
    int train_per_class;   /* > 0: keep this many training images a class ... */
    uint64_t train_key;    /* ... drawn with this key */
    int test_per_class;    /* > 0: keep this many test images a class (key test_key) */
    int test_limit;        /* > 0 and below the test images: keep test_limit / classes (at
                              least 1) a class (key test_key) */
    uint64_t test_key;
    int hash_queries;      /* > 0: the hashing protocol's gallery as the training split (train
                              and test pooled, this many queries a class held out, drawn with
                              hash_seed as `nac hash --seed`); needs a test split */
    uint64_t hash_seed;
} nac_data_recipe;

/* The splits of r. mean/std (may be NULL) receive the normalisation of the full training
 * split (nac_dataset_norm), before any subset is taken. On failure both splits are empty. */
nac_status nac_data_recipe_load(const nac_data_recipe *r, nac_dataset_t *train,
                                nac_dataset_t *test, float mean[3], float std[3]);

/* The NAC hashing protocol's split: train and test pooled (in that order); per class,
 * qpc rows chosen by the seed are queries and the rest the database (both lists ascending,
 * q and db each room for ds->n rows). A class with at most qpc images is NAC_ERR_USAGE. */
nac_status nac_hash_split(const nac_dataset_t *ds, int qpc, uint64_t seed, int64_t *q,
                          int64_t *nq, int64_t *db, int64_t *ndb);
/* The database (gallery) images of that split of train + test: what hashing pretraining
 * may train on, so that the queries of `nac hash` (same qpc and seed) are never seen. */
nac_status nac_hash_gallery(const nac_dataset_t *train, const nac_dataset_t *test, int qpc,
                            uint64_t seed, nac_dataset_t *gallery);

#endif
