/* The statistics behind every comparison nacvae prints: a paired difference over the same
 * test items (mean, standard error, 95% interval), and a summary over seeds (mean, sample
 * standard deviation, 95% t interval). Host arrays, double precision, no allocation. */
#ifndef NAC_EVAL_STATS_H
#define NAC_EVAL_STATS_H

#include <stdint.h>

#include "backend/status.h"

typedef struct nac_stats_summary {
    int64_t n;       /* items (test images, or seeds) */
    double mean;
    double sd;       /* sample standard deviation (n - 1); 0 when n < 2 */
    double se;       /* sd / sqrt(n) */
    double lo, hi;   /* mean -+ t_{0.975, n-1} * se; both = mean when n < 2 */
} nac_stats_summary;

/* Two-sided 97.5% quantile of Student's t with df degrees of freedom (df >= 1): a table
 * for df <= 30, the Cornish-Fisher expansion beyond (error below 1e-4); 1.96 as df -> inf. */
double nac_stats_t975(int64_t df);

/* Mean, sd, se and 95% t interval of x (n >= 1). A NaN or Inf entry is NAC_ERR_NUMERIC. */
nac_status nac_stats_summarize(const double *x, int64_t n, nac_stats_summary *out);

/* The paired difference d_i = a_i - b_i over the same n items, summarised as above: its
 * se is the paired standard error, sd(d)/sqrt(n), which removes the between-item
 * variance that an unpaired comparison of two means would carry. */
nac_status nac_stats_paired(const double *a, const double *b, int64_t n, nac_stats_summary *out);

#endif
