/* Philox4x32-10 (Salmon et al., SC'11) streams and the distributions built on them; the
 * per-element core is inline in rng.h (shared with the CUDA kernels). */
#include "backend/rng.h"

#include <math.h>

uint64_t nac_rng_key(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t x = seed;
    uint64_t parts[3] = {a, b, c};
    for (int i = 0; i < 4; i++) {
        x += 0x9E3779B97F4A7C15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        x = z + (i < 3 ? parts[i] * 0xD1B54A32D192ED03ull : 0);
    }
    return x;
}

void nac_rng_init(nac_rng_t *r, uint64_t key) {
    r->key = key;
    r->ctr = 0;
    r->pos = 4;
}

uint32_t nac_rng_u32(nac_rng_t *r) {
    if (r->pos >= 4) {
        nac_philox(r->key, r->ctr++, r->buf);
        r->pos = 0;
    }
    return r->buf[r->pos++];
}

uint64_t nac_rng_u64(nac_rng_t *r) {
    uint64_t hi = nac_rng_u32(r);
    return (hi << 32) | nac_rng_u32(r);
}

double nac_rng_uniform(nac_rng_t *r) { return (double)(nac_rng_u64(r) >> 11) * 0x1.0p-53; }

float nac_rng_uniformf(nac_rng_t *r) { return (float)(nac_rng_u32(r) >> 8) * 0x1.0p-24f; }

double nac_rng_normal(nac_rng_t *r) {
    double u1 = nac_rng_uniform(r), u2 = nac_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

uint32_t nac_rng_below(nac_rng_t *r, uint32_t n) {
    if (n <= 1) return 0;
    uint32_t limit = (uint32_t)(-n) % n; /* reject the low values that would bias */
    for (;;) {
        uint64_t m = (uint64_t)nac_rng_u32(r) * n;
        if ((uint32_t)m >= limit) return (uint32_t)(m >> 32);
    }
}

void nac_rng_shuffle(nac_rng_t *r, int64_t *a, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(nac_rng_u64(r) % (uint64_t)(i + 1));
        int64_t t = a[i]; a[i] = a[j]; a[j] = t;
    }
}
