/* Paired differences and seed summaries (eval/stats.h). Two-pass mean and variance in
 * double precision, so the result does not depend on the order of accumulation tricks. */
#include "eval/stats.h"

#include <math.h>
#include <stddef.h>

double nac_stats_t975(int64_t df) {
    static const double table[31] = {
        NAN,   12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423};
    if (df < 1) return NAN;
    if (df <= 30) return table[df];
    double z = 1.959963984540054, v = (double)df, z3 = z * z * z, z5 = z3 * z * z;
    return z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v);
}

static nac_status summarize(const double *a, const double *b, int64_t n, nac_stats_summary *o) {
    if (!a || !o || n < 1)
        return nac_error(NAC_ERR_INVALID, "nac_stats: %s", !a || !o ? "NULL argument" : "no items");
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = b ? a[i] - b[i] : a[i];
        if (!isfinite(d)) return nac_error(NAC_ERR_NUMERIC, "nac_stats: item %lld is not finite", (long long)i);
        sum += d;
    }
    double mean = sum / (double)n, ss = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (b ? a[i] - b[i] : a[i]) - mean;
        ss += d * d;
    }
    o->n = n;
    o->mean = mean;
    o->sd = n > 1 ? sqrt(ss / (double)(n - 1)) : 0.0;
    o->se = o->sd / sqrt((double)n);
    double half = n > 1 ? nac_stats_t975(n - 1) * o->se : 0.0;
    o->lo = mean - half;
    o->hi = mean + half;
    return NAC_OK;
}

nac_status nac_stats_summarize(const double *x, int64_t n, nac_stats_summary *out) {
    return summarize(x, NULL, n, out);
}

nac_status nac_stats_paired(const double *a, const double *b, int64_t n, nac_stats_summary *out) {
    if (!b) return nac_error(NAC_ERR_INVALID, "nac_stats_paired: NULL argument");
    return summarize(a, b, n, out);
}
