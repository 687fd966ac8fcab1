/* Hash retrieval (paper Section 4.3, DESIGN.md "Downstream checks"): binary codes from the
 * projection output, packed 64 bits a word; the database ranked for each query by Hamming
 * distance (popcount), ties by database index; mAP at R = all and at given R, precision@k
 * and a precision-recall curve by Hamming radius. Host arrays only; deterministic. */
#ifndef NAC_EVAL_HASH_H
#define NAC_EVAL_HASH_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/status.h"

/* Packed codes. Bit j of code i is bit (j % 64) of words[i * nwords + j / 64] (least
 * significant first); the padding bits of the last word (j >= nbits) are always zero. */
typedef struct nac_hash_codes {
    int64_t n;       /* number of codes */
    int nbits;       /* bits a code, 1..65535 (need not be a multiple of 64) */
    int nwords;      /* ceil(nbits / 64) */
    uint64_t *words; /* (n, nwords), owned */
} nac_hash_codes_t;

/* codes = sign(o) for o (n, nbits) row-major: bit 1 where o >= 0 (so an exact zero,
 * +0 or -0, is bit 1, like the +1 side of sign with sign(0) := +1), bit 0 where o < 0.
 * A NaN is an error (NAC_ERR_NUMERIC) naming its row and column. `out` is (re)filled;
 * free it with nac_hash_codes_free. */
nac_status nac_hash_pack(const float *o, int64_t n, int nbits, nac_hash_codes_t *out);
/* Codes from bytes that are already bits: bits (n, nbits), each 0 or 1 (anything else
 * is NAC_ERR_INVALID). */
nac_status nac_hash_pack_bits(const uint8_t *bits, int64_t n, int nbits, nac_hash_codes_t *out);
/* Frees the words and zeroes the struct; accepts NULL and an already freed struct. */
void nac_hash_codes_free(nac_hash_codes_t *c);

/* Hamming distance between two packed codes of nwords words. */
int nac_hash_distance(const uint64_t *a, const uint64_t *b, int nwords);

/* How the database is ordered for a query. Both orders break ties by database index
 * (ascending), so every ranking is a deterministic, stable order.
 *  - HAMMING: ascending Hamming distance (the metric of the paper and DESIGN.md).
 *  - DOT01:   descending dot product of the 0/1 codes, <q, d> = popcount(q AND d). This
 *    is what the official NAC evaluation script computes (argsort of -(q01 @ db01^T));
 *    it counts shared 1-bits only and ignores shared 0-bits, so it is NOT a Hamming
 *    ranking. Provided only to reproduce that script's numbers (whose numpy argsort
 *    leaves the order of ties unspecified; here they go by index). */
typedef enum nac_hash_rank { NAC_HASH_RANK_HAMMING = 0, NAC_HASH_RANK_DOT01 = 1 } nac_hash_rank;

/* The rank key of a database code: the Hamming distance, or nbits - <q, d> for DOT01;
 * in 0..nbits either way, smaller ranks first. */
int nac_hash_key(const uint64_t *q, const uint64_t *d, int nwords, int nbits, nac_hash_rank rank);

/* Order the whole database for one query (nwords words, as db): order (db->n) receives
 * the database indices best first; key (db->n, optional) the rank key of each, in the
 * same order. A counting sort over keys 0..nbits: O(n + nbits), stable. */
nac_status nac_hash_rank_db(const nac_hash_codes_t *db, const uint64_t *query, nac_hash_rank rank,
                            int64_t *order, int32_t *key);

typedef struct nac_hash_eval_opts {
    nac_hash_rank rank;
    int n_map_at;          /* extra mAP cutoffs: mAP@R for each R in map_at */
    const int64_t *map_at; /* R >= 1; R >= database size is the same as R = all */
    int n_prec_at;         /* precision@k for each k in prec_at */
    const int64_t *prec_at; /* k >= 1; a k above the database size gives the precision
                               of the whole database (divides by min(k, n)) */
    bool pr_curve;         /* fill pr_precision / pr_recall */
} nac_hash_eval_opts;

/* Results; the arrays are the caller's, of the sizes noted (NULL where not asked for). */
typedef struct nac_hash_eval_out {
    double map_all;       /* mAP with R = the whole database */
    double *map_at;       /* (n_map_at) */
    double *prec_at;      /* (n_prec_at), averaged over all queries */
    /* (nbits + 1): at radius r (rank key <= r) for r = 0..nbits. Precision averaged over
     * the queries that retrieve at least one item within r (a query retrieving nothing
     * has no precision there; the DeepHash pr_curve also drops queries whose precision
     * is 0); recall = relevant retrieved / relevant in the database, averaged over the
     * queries with at least one relevant item in the database. */
    double *pr_precision;
    double *pr_recall;
    int64_t *pr_nqueries; /* (nbits + 1), optional: the queries averaged for precision */
} nac_hash_eval_out;

/* Evaluate retrieval of `query` against `db` (same nbits), relevance = same label.
 * AP@R of a query = (1 / #relevant in the top R) * sum over ranks k <= R holding a
 * relevant item of precision@k; it is 0 when the top R holds no relevant item, and the
 * mAP is the mean over ALL queries (the DeepHash CalcTopMap / NAC definition). The
 * golden file's "skipped" wording agrees with it whenever every query finds one.
 * OpenMP over queries; partial sums are formed per fixed block of queries and added in
 * block order, so the result does not depend on the thread count. */
nac_status nac_hash_evaluate(const nac_hash_codes_t *query, const int32_t *query_labels,
                             const nac_hash_codes_t *db, const int32_t *db_labels,
                             const nac_hash_eval_opts *opts, nac_hash_eval_out *out);

/* Shorthand: mAP at R (R <= 0 means all) with the given ranking. */
nac_status nac_hash_map(const nac_hash_codes_t *query, const int32_t *query_labels,
                        const nac_hash_codes_t *db, const int32_t *db_labels, nac_hash_rank rank,
                        int64_t R, double *map);

#endif
