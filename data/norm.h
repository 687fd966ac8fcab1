/* The per-channel normalisation a run uses: CIFAR-10's constants of the official NAC code,
 * otherwise the statistics of the full training split (so pretraining and the VAE stage
 * normalise identically whatever subset they train on). */
#ifndef NAC_DATA_NORM_H
#define NAC_DATA_NORM_H

#include "data/dataset.h"

void nac_dataset_norm(const char *dataset_name, const nac_dataset_t *train, float mean[3],
                      float std[3]);

#endif
