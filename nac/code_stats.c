/* What NAC does to the codes: how many distinct sign patterns the projection produces on
 * a fixed subset, how far apart they are, and how many bits are balanced. */
#include <stdlib.h>
#include <string.h>

#include "nac/pretrain.h"

static int g_words; /* qsort has no context argument; set before each sort */

static int cmp_codes(const void *a, const void *b) {
    return memcmp(a, b, (size_t)g_words * sizeof(uint64_t));
}

void nac_code_stats_compute(const float *o, int n, int d, nac_code_stats *out) {
    memset(out, 0, sizeof *out);
    if (n <= 0 || d <= 0) return;
    int words = (d + 63) / 64;
    uint64_t *codes = calloc((size_t)n * (size_t)words, sizeof *codes);
    int *ones = calloc((size_t)d, sizeof *ones);
    if (!codes || !ones) {
        free(codes);
        free(ones);
        return;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            if (o[(size_t)i * d + j] >= 0.0f) {
                codes[(size_t)i * words + j / 64] |= 1ull << (j % 64);
                ones[j]++;
            }
    double ham = 0;
    for (int i = 0; i < n; i++)
        for (int k = i + 1; k < n; k++) {
            int h = 0;
            for (int w = 0; w < words; w++)
                h += __builtin_popcountll(codes[(size_t)i * words + w] ^ codes[(size_t)k * words + w]);
            ham += h;
        }
    out->mean_hamming = n > 1 ? ham / ((double)n * (n - 1) / 2) : 0;
    int bal = 0;
    for (int j = 0; j < d; j++) {
        double f = (double)ones[j] / n;
        bal += f >= 0.4 && f <= 0.6;
    }
    out->balanced = (double)bal / d;
    g_words = words;
    qsort(codes, (size_t)n, (size_t)words * sizeof(uint64_t), cmp_codes);
    int distinct = 1;
    for (int i = 1; i < n; i++)
        distinct += memcmp(codes + (size_t)i * words, codes + (size_t)(i - 1) * words,
                           (size_t)words * sizeof(uint64_t)) != 0;
    out->distinct = distinct;
    free(codes);
    free(ones);
}
