/* Counter-based random numbers (Philox4x32-10): the number drawn is a pure function of
 * (key, counter), so a resumed run, any thread count and either backend draw the same
 * values. One run seed is split into independent streams with nac_rng_key().
 * The per-element core (nac_philox, nac_rng_uniform_at, nac_rng_normal_at) is static
 * inline and NAC_HOSTDEV, so the CUDA kernels compile the very same code. */
#ifndef NAC_RNG_H
#define NAC_RNG_H

#include <math.h>
#include <stdint.h>

#include "backend/hostdev.h"

/* Stream ids: one per use of randomness, so adding a use never shifts another's numbers. */
enum {
    NAC_STREAM_INIT = 1,     /* parameter initialisation */
    NAC_STREAM_SHUFFLE = 2,  /* data order per epoch */
    NAC_STREAM_AUGMENT = 3,  /* augmentations per (epoch, image, view) */
    NAC_STREAM_CHANNEL = 4,  /* NAC flip masks per step */
    NAC_STREAM_LATENT = 5,   /* VAE reparameterisation and importance samples */
    NAC_STREAM_SPLIT = 6,    /* dataset subsets and splits */
    NAC_STREAM_SYNTH = 7,    /* synthetic data */
    NAC_STREAM_USER = 100
};

typedef struct nac_rng {
    uint64_t key;
    uint64_t ctr;     /* index of the next 4-word block */
    uint32_t buf[4];
    int pos;          /* words of buf already used; 4 = empty */
} nac_rng_t;

/* Mix a seed with up to three stream coordinates into a 64-bit key (splitmix64). */
uint64_t nac_rng_key(uint64_t seed, uint64_t a, uint64_t b, uint64_t c);

/* One Philox4x32-10 block: out = philox(key, counter). */
static inline NAC_HOSTDEV void nac_philox(uint64_t key, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void nac_rng_init(nac_rng_t *r, uint64_t key);
uint32_t nac_rng_u32(nac_rng_t *r);
uint64_t nac_rng_u64(nac_rng_t *r);
double nac_rng_uniform(nac_rng_t *r);          /* [0, 1), 53 bits */
float nac_rng_uniformf(nac_rng_t *r);          /* [0, 1), 24 bits */
double nac_rng_normal(nac_rng_t *r);           /* N(0, 1), Box-Muller */
uint32_t nac_rng_below(nac_rng_t *r, uint32_t n); /* uniform in [0, n), unbiased */
void nac_rng_shuffle(nac_rng_t *r, int64_t *a, int64_t n); /* Fisher-Yates */

/* 2 pi as a double (equal to 2.0 * M_PI, which CUDA device code does not define). */
#define NAC_RNG_TWO_PI 6.283185307179586476925286766559

/* Element i of a counter-addressed stream: the value is independent of how many
 * elements are drawn or by which thread. Used by backends to fill tensors. */
static inline NAC_HOSTDEV float nac_rng_uniform_at(uint64_t key, uint64_t i) {
    uint32_t out[4];
    nac_philox(key, i, out);
    return (float)(out[0] >> 8) * 0x1.0p-24f;
}

static inline NAC_HOSTDEV float nac_rng_normal_at(uint64_t key, uint64_t i) {
    uint32_t out[4];
    nac_philox(key, i, out);
    double u1 = ((double)(out[0] >> 8) + 0.5) * 0x1.0p-24;
    double u2 = (double)(out[1] >> 8) * 0x1.0p-24;
    return (float)(sqrt(-2.0 * log(u1)) * cos(NAC_RNG_TWO_PI * u2));
}

#endif
