/* Benchmark of the hash-retrieval mAP (eval/hash.c): 10,000 queries against 50,000
 * database codes of 128 bits in 10 classes, mAP at R = all with the Hamming ranking.
 * `bench_hash [dump.bin]` also writes the codes for bench/bench_hash.py (the NumPy
 * version of the same ranking), so both report the same mAP. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "eval/hash.h"
#include "backend/rng.h"

enum { NQ = 10000, NDB = 50000, NBITS = 128, NCLS = 10 };

/* Each class has a random centre code; every code flips each bit of it with p 0.25. */
static void make_codes(uint8_t *bits, int32_t *lab, int64_t n, const uint8_t *centre, uint64_t seed) {
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(seed, NAC_STREAM_SYNTH, 0, 0));
    for (int64_t i = 0; i < n; i++) {
        lab[i] = (int32_t)nac_rng_below(&r, NCLS);
        for (int b = 0; b < NBITS; b++)
            bits[i * NBITS + b] = centre[lab[i] * NBITS + b] ^ (nac_rng_uniform(&r) < 0.25);
    }
}

static int dump(const char *path, const uint8_t *qb, const uint8_t *db, const int32_t *ql,
                const int32_t *dl) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    int64_t hdr[3] = {NQ, NDB, NBITS};
    int bad = fwrite(hdr, sizeof hdr, 1, f) != 1 || fwrite(qb, (size_t)NQ * NBITS, 1, f) != 1 ||
              fwrite(db, (size_t)NDB * NBITS, 1, f) != 1 || fwrite(ql, sizeof *ql * NQ, 1, f) != 1 ||
              fwrite(dl, sizeof *dl * NDB, 1, f) != 1;
    return fclose(f) != 0 || bad;
}

int main(int argc, char **argv) {
    uint8_t centre[NCLS * NBITS];
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(2021, NAC_STREAM_SYNTH, 1, 0));
    for (int i = 0; i < NCLS * NBITS; i++) centre[i] = (uint8_t)(nac_rng_u32(&r) & 1);
    uint8_t *qb = malloc((size_t)NQ * NBITS), *db = malloc((size_t)NDB * NBITS);
    int32_t *ql = malloc(NQ * sizeof *ql), *dl = malloc(NDB * sizeof *dl);
    if (!qb || !db || !ql || !dl) {
        fprintf(stderr, "bench_hash: out of memory\n");
        return 71;
    }
    make_codes(qb, ql, NQ, centre, 1);
    make_codes(db, dl, NDB, centre, 2);
    if (argc > 1 && dump(argv[1], qb, db, ql, dl)) {
        fprintf(stderr, "bench_hash: cannot write %s\n", argv[1]);
        return 74;
    }
    nac_hash_codes_t q = {0}, d = {0};
    double map = 0;
    if (nac_hash_pack_bits(qb, NQ, NBITS, &q) != NAC_OK || nac_hash_pack_bits(db, NDB, NBITS, &d) != NAC_OK ||
        nac_hash_map(&q, ql, &d, dl, NAC_HASH_RANK_HAMMING, 0, &map) != NAC_OK) { /* warm-up */
        fprintf(stderr, "bench_hash: %s\n", nac_last_error());
        return 70;
    }
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = omp_get_wtime();
        if (nac_hash_map(&q, ql, &d, dl, NAC_HASH_RANK_HAMMING, 0, &map) != NAC_OK) {
            fprintf(stderr, "bench_hash: %s\n", nac_last_error());
            return 70;
        }
        double t = omp_get_wtime() - t0;
        if (t < best) best = t;
    }
    printf("bench_hash: %d queries x %d database codes, %d bits, %d classes, %d threads\n", NQ, NDB,
           NBITS, NCLS, omp_get_max_threads());
    printf("mAP@all %.10f  seconds %.3f (best of 3)\n", map, best);
    nac_hash_codes_free(&q);
    nac_hash_codes_free(&d);
    free(qb), free(db), free(ql), free(dl);
    return 0;
}
