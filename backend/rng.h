/* Counter-based random numbers (Philox4x32-10): the number drawn is a pure function of
 * (key, counter), so a resumed run, any thread count and either backend draw the same
 * values. One run seed is split into independent streams with nac_rng_key(). */
#ifndef NAC_RNG_H
#define NAC_RNG_H

#include <stdint.h>

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
void nac_philox(uint64_t key, uint64_t counter, uint32_t out[4]);

void nac_rng_init(nac_rng_t *r, uint64_t key);
uint32_t nac_rng_u32(nac_rng_t *r);
uint64_t nac_rng_u64(nac_rng_t *r);
double nac_rng_uniform(nac_rng_t *r);          /* [0, 1), 53 bits */
float nac_rng_uniformf(nac_rng_t *r);          /* [0, 1), 24 bits */
double nac_rng_normal(nac_rng_t *r);           /* N(0, 1), Box-Muller */
uint32_t nac_rng_below(nac_rng_t *r, uint32_t n); /* uniform in [0, n), unbiased */
void nac_rng_shuffle(nac_rng_t *r, int64_t *a, int64_t n); /* Fisher-Yates */

/* Element i of a counter-addressed stream: the value is independent of how many
 * elements are drawn or by which thread. Used by backends to fill tensors. */
float nac_rng_uniform_at(uint64_t key, uint64_t i);
float nac_rng_normal_at(uint64_t key, uint64_t i);

#endif
