/* Hash retrieval metrics: packing sign codes, popcount rank keys, and mAP / precision@k /
 * PR curves computed from a counting sort of the keys, O(database) a query. The rank of
 * every database item follows from per-key histograms without materialising the order:
 * item j with key d sits at rank start[d] + (items before j with key d). */
#include "eval/hash.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define NAC_POPCNT_TARGET __attribute__((target("popcnt")))
#define NAC_HAVE_CPU_CHECK 1
#else
#define NAC_POPCNT_TARGET
#define NAC_HAVE_CPU_CHECK 0
#endif

enum { QUERY_BLOCK = 64, MAX_BITS = 65535 };

static nac_status codes_alloc(int64_t n, int nbits, nac_hash_codes_t *out, const char *fn) {
    if (!out) return nac_error(NAC_ERR_INVALID, "%s: out is NULL", fn);
    if (n < 0 || nbits < 1 || nbits > MAX_BITS)
        return nac_error(NAC_ERR_INVALID, "%s: need n >= 0 and 1 <= nbits <= %d, got n %lld, nbits %d",
                         fn, MAX_BITS, (long long)n, nbits);
    nac_hash_codes_free(out);
    int nw = (nbits + 63) / 64;
    uint64_t *w = calloc((size_t)(n > 0 ? n : 1) * (size_t)nw, sizeof *w);
    if (!w) return nac_error(NAC_ERR_NOMEM, "%s: %lld codes of %d bits", fn, (long long)n, nbits);
    *out = (nac_hash_codes_t){.n = n, .nbits = nbits, .nwords = nw, .words = w};
    return NAC_OK;
}

void nac_hash_codes_free(nac_hash_codes_t *c) {
    if (!c) return;
    free(c->words);
    *c = (nac_hash_codes_t){0};
}

nac_status nac_hash_pack(const float *o, int64_t n, int nbits, nac_hash_codes_t *out) {
    if (!o && n > 0) return nac_error(NAC_ERR_INVALID, "nac_hash_pack: o is NULL");
    NAC_TRY(codes_alloc(n, nbits, out, "nac_hash_pack"));
    for (int64_t i = 0; i < n; i++) {
        const float *row = o + i * nbits;
        uint64_t *w = out->words + i * out->nwords;
        for (int j = 0; j < nbits; j++) {
            if (isnan(row[j])) {
                nac_hash_codes_free(out);
                return nac_error(NAC_ERR_NUMERIC, "nac_hash_pack: o[%lld, %d] is NaN (o is (%lld, %d))",
                                 (long long)i, j, (long long)n, nbits);
            }
            w[j >> 6] |= (uint64_t)(row[j] >= 0.0f) << (j & 63);
        }
    }
    return NAC_OK;
}

nac_status nac_hash_pack_bits(const uint8_t *bits, int64_t n, int nbits, nac_hash_codes_t *out) {
    if (!bits && n > 0) return nac_error(NAC_ERR_INVALID, "nac_hash_pack_bits: bits is NULL");
    NAC_TRY(codes_alloc(n, nbits, out, "nac_hash_pack_bits"));
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *row = bits + i * nbits;
        uint64_t *w = out->words + i * out->nwords;
        for (int j = 0; j < nbits; j++) {
            if (row[j] > 1) {
                nac_hash_codes_free(out);
                return nac_error(NAC_ERR_INVALID, "nac_hash_pack_bits: bits[%lld, %d] = %d, not 0 or 1",
                                 (long long)i, j, row[j]);
            }
            w[j >> 6] |= (uint64_t)row[j] << (j & 63);
        }
    }
    return NAC_OK;
}

NAC_POPCNT_TARGET int nac_hash_distance(const uint64_t *a, const uint64_t *b, int nwords) {
    int d = 0;
    for (int w = 0; w < nwords; w++) d += __builtin_popcountll(a[w] ^ b[w]);
    return d;
}

NAC_POPCNT_TARGET int nac_hash_key(const uint64_t *q, const uint64_t *d, int nwords, int nbits,
                                   nac_hash_rank rank) {
    int s = 0;
    if (rank == NAC_HASH_RANK_DOT01) {
        for (int w = 0; w < nwords; w++) s += __builtin_popcountll(q[w] & d[w]);
        return nbits - s;
    }
    for (int w = 0; w < nwords; w++) s += __builtin_popcountll(q[w] ^ d[w]);
    return s;
}

/* key[j] for every database code (for nac_hash_rank_db; the evaluation fuses this loop
 * with its histograms in keys_hist below). */
static void query_keys(const uint64_t *q, const uint64_t *db, int64_t n, int nw, int nbits,
                       nac_hash_rank rank, uint16_t *key) {
    for (int64_t j = 0; j < n; j++) key[j] = (uint16_t)nac_hash_key(q, db + j * nw, nw, nbits, rank);
}

/* Keys plus the histogram h[2 * key + relevant] of one query. Items alternate between two
 * histograms (h and h + 2 * nk) so consecutive increments of the same bin do not wait on
 * each other. The 1- and 2-word Hamming cases get their own loops so the word loop
 * unrolls; the target attribute makes __builtin_popcountll one instruction even in a
 * build for a baseline without POPCNT (checked at run time by cpu_ok()). */
#define HAM1(j) __builtin_popcountll(q0 ^ db[(j)])
#define HAM2(j) (__builtin_popcountll(q0 ^ db[2 * (j)]) + __builtin_popcountll(q1 ^ db[2 * (j) + 1]))
#define ANY(j) nac_hash_key(q, db + (j) * nw, nw, nbits, rank)
#define KEYS_HIST_LOOP(KEY)                                                      \
    do {                                                                         \
        int64_t j = 0;                                                           \
        for (; j + 1 < n; j += 2) {                                              \
            int a = KEY(j), b = KEY(j + 1);                                      \
            key[j] = (uint16_t)a, key[j + 1] = (uint16_t)b;                      \
            h0[2 * a + (lab[j] == ql)]++, h1[2 * b + (lab[j + 1] == ql)]++;      \
        }                                                                        \
        if (j < n) {                                                             \
            int a = KEY(j);                                                      \
            key[j] = (uint16_t)a, h0[2 * a + (lab[j] == ql)]++;                  \
        }                                                                        \
    } while (0)

NAC_POPCNT_TARGET static void keys_hist(const uint64_t *q, const uint64_t *db, int64_t n, int nw,
                                        int nbits, nac_hash_rank rank, const int32_t *lab,
                                        int32_t ql, uint16_t *key, int64_t *h) {
    int64_t *h0 = h, *h1 = h + 2 * ((int64_t)nbits + 1);
    memset(h, 0, 4 * ((size_t)nbits + 1) * sizeof *h);
    uint64_t q0 = q[0], q1 = nw > 1 ? q[1] : 0;
    if (rank == NAC_HASH_RANK_HAMMING && nw == 2)
        KEYS_HIST_LOOP(HAM2);
    else if (rank == NAC_HASH_RANK_HAMMING && nw == 1)
        KEYS_HIST_LOOP(HAM1);
    else
        KEYS_HIST_LOOP(ANY);
}
#undef HAM1
#undef HAM2
#undef ANY
#undef KEYS_HIST_LOOP

static nac_status cpu_ok(const char *fn) {
#if NAC_HAVE_CPU_CHECK
    if (!__builtin_cpu_supports("popcnt"))
        return nac_error(NAC_ERR_INVALID, "%s: this CPU has no POPCNT instruction", fn);
#else
    (void)fn;
#endif
    return NAC_OK;
}

static nac_status check_codes(const nac_hash_codes_t *c, const char *what, const char *fn) {
    if (!c || (!c->words && c->n > 0) || c->n < 0 || c->nbits < 1 || c->nbits > MAX_BITS ||
        c->nwords != (c->nbits + 63) / 64)
        return nac_error(NAC_ERR_INVALID, "%s: %s is not a valid set of packed codes", fn, what);
    return NAC_OK;
}

static bool rank_valid(nac_hash_rank r) {
    return r == NAC_HASH_RANK_HAMMING || r == NAC_HASH_RANK_DOT01;
}

nac_status nac_hash_rank_db(const nac_hash_codes_t *db, const uint64_t *query, nac_hash_rank rank,
                            int64_t *order, int32_t *key) {
    static const char fn[] = "nac_hash_rank_db";
    NAC_TRY(check_codes(db, "db", fn));
    NAC_TRY(cpu_ok(fn));
    if (!query || (!order && db->n > 0) || !rank_valid(rank))
        return nac_error(NAC_ERR_INVALID, "%s: query and order must be non-NULL, rank %d valid", fn,
                         (int)rank);
    int64_t n = db->n, nk = db->nbits + 1;
    uint16_t *k = malloc((size_t)(n > 0 ? n : 1) * sizeof *k);
    int64_t *start = calloc((size_t)nk, sizeof *start);
    if (!k || !start) {
        free(k);
        free(start);
        return nac_error(NAC_ERR_NOMEM, "%s: scratch for %lld codes", fn, (long long)n);
    }
    query_keys(query, db->words, n, db->nwords, db->nbits, rank, k);
    for (int64_t j = 0; j < n; j++) start[k[j]]++;
    int64_t acc = 0;
    for (int64_t d = 0; d < nk; d++) {
        int64_t c = start[d];
        start[d] = acc;
        acc += c;
    }
    for (int64_t j = 0; j < n; j++) {
        int64_t p = start[k[j]]++;
        order[p] = j;
        if (key) key[p] = k[j];
    }
    free(k);
    free(start);
    return NAC_OK;
}

/* Per-thread scratch for one query at a time. */
typedef struct scratch {
    uint16_t *key;  /* (n) */
    int64_t *hist;  /* (2, nbits+1, 2): keys_hist's histograms */
    uint64_t *relrank; /* (n): rank << 16 | key of each relevant item */
    int64_t *tot;   /* (nbits+1): items with each key; then their first rank */
    int64_t *rel;   /* (nbits+1): relevant items with each key; then relevant ranked before */
    int64_t *rel0;  /* (nbits+1): copy of the relevant histogram for the PR curve */
    int64_t *hits;  /* (n_prec_at) */
    double *apsum;  /* (1 + n_map_at) */
    int64_t *apcnt; /* (1 + n_map_at) */
} scratch;

static void scratch_free(scratch *s) {
    free(s->key);
    free(s->hist);
    free(s->relrank);
    free(s->tot);
    free(s->rel);
    free(s->rel0);
    free(s->hits);
    free(s->apsum);
    free(s->apcnt);
}

static bool scratch_alloc(scratch *s, int64_t n, int nbits, int nr, int np) {
    size_t nk = (size_t)nbits + 1;
    s->key = malloc((size_t)(n > 0 ? n : 1) * sizeof *s->key);
    s->hist = malloc(4 * nk * sizeof *s->hist);
    s->relrank = malloc((size_t)(n > 0 ? n : 1) * sizeof *s->relrank);
    s->tot = malloc(nk * sizeof *s->tot);
    s->rel = malloc(nk * sizeof *s->rel);
    s->rel0 = malloc(nk * sizeof *s->rel0);
    s->hits = malloc((size_t)(np > 0 ? np : 1) * sizeof *s->hits);
    s->apsum = malloc((size_t)(1 + nr) * sizeof *s->apsum);
    s->apcnt = malloc((size_t)(1 + nr) * sizeof *s->apcnt);
    return s->key && s->hist && s->relrank && s->tot && s->rel && s->rel0 && s->hits && s->apsum && s->apcnt;
}

/* Partial sums of one block of queries, views into one row of the block table; reduced
 * in block order at the end. Counts are kept as doubles (exact below 2^53). */
typedef struct partial {
    double *ap;    /* (1 + n_map_at) */
    double *prec;  /* (n_prec_at) */
    double *pr_p;  /* (nbits+1) precision sums */
    double *pr_r;  /* (nbits+1) recall sums */
    double *pr_np; /* (nbits+1) queries in each precision sum */
    double *pr_nr; /* (1) queries with a relevant item in the database */
} partial;

static partial partial_at(double *row, int nr, int np, int64_t nk) {
    return (partial){.ap = row, .prec = row + nr, .pr_p = row + nr + np,
                     .pr_r = row + nr + np + nk, .pr_np = row + nr + np + 2 * nk,
                     .pr_nr = row + nr + np + 3 * nk};
}

typedef struct eval_ctx {
    const nac_hash_codes_t *db;
    const int32_t *db_labels;
    const nac_hash_eval_opts *o;
    int64_t *cut; /* (1 + n_map_at): the mAP cutoffs, all first, each clamped to n */
} eval_ctx;

/* The PR curve of one query from its key histograms: start[d] is the first rank of key d,
 * so the items within radius d are the start[d + 1] (n for the last) ranked first. */
static void pr_add(const int64_t *start, const int64_t *relhist, int64_t n, int64_t nk, int64_t nrel,
                   partial *pt) {
    int64_t hit = 0;
    if (nrel > 0) pt->pr_nr[0] += 1;
    for (int64_t d = 0; d < nk; d++) {
        int64_t ret = d + 1 < nk ? start[d + 1] : n;
        hit += relhist[d];
        if (ret > 0) pt->pr_p[d] += (double)hit / (double)ret, pt->pr_np[d] += 1;
        if (nrel > 0) pt->pr_r[d] += (double)hit / (double)nrel;
    }
}

/* All metrics of one query, added to the block's partial sums. */
static void eval_query(const eval_ctx *c, const uint64_t *q, int32_t ql, scratch *s, partial *pt) {
    const nac_hash_codes_t *db = c->db;
    const nac_hash_eval_opts *o = c->o;
    int64_t n = db->n, nk = db->nbits + 1;
    int nr = 1 + o->n_map_at, np = o->n_prec_at;
    const int32_t *lab = c->db_labels;
    uint16_t *key = s->key;
    int64_t *tot = s->tot, *rel = s->rel;

    keys_hist(q, db->words, n, db->nwords, db->nbits, o->rank, lab, ql, key, s->hist);
    const int64_t *h0 = s->hist, *h1 = s->hist + 2 * nk;
    int64_t acc = 0, racc = 0;
    for (int64_t d = 0; d < nk; d++) {
        int64_t r = h0[2 * d + 1] + h1[2 * d + 1], t = h0[2 * d] + h1[2 * d] + r;
        s->rel0[d] = r;
        tot[d] = acc;
        rel[d] = racc;
        acc += t;
        racc += r;
    }
    int64_t nrel = racc;
    if (o->pr_curve) pr_add(tot, s->rel0, n, nk, nrel, pt);

    for (int i = 0; i < nr; i++) s->apsum[i] = 0, s->apcnt[i] = 0;
    for (int i = 0; i < np; i++) s->hits[i] = 0;
    if (nrel > 0) {
        /* Ranks of the relevant items, in index order, appended without a branch (the
         * relevance of consecutive items is unpredictable); then the sums over them. */
        uint64_t *rk = s->relrank;
        int64_t cnt = 0;
        for (int64_t j = 0; j < n; j++) {
            int64_t p = tot[key[j]]++;
            rk[cnt] = (uint64_t)p << 16 | key[j];
            cnt += lab[j] == ql;
        }
        for (int64_t t = 0; t < cnt; t++) {
            int64_t p = (int64_t)(rk[t] >> 16);
            double prec = (double)(++rel[rk[t] & 0xFFFF]) / (double)(p + 1);
            for (int i = 0; i < nr; i++)
                if (p < c->cut[i]) s->apsum[i] += prec, s->apcnt[i]++;
            for (int i = 0; i < np; i++) s->hits[i] += p < o->prec_at[i];
        }
    }
    for (int i = 0; i < nr; i++)
        if (s->apcnt[i] > 0) pt->ap[i] += s->apsum[i] / (double)s->apcnt[i];
    for (int i = 0; i < np; i++) {
        int64_t k = o->prec_at[i] < n ? o->prec_at[i] : n;
        if (k > 0) pt->prec[i] += (double)s->hits[i] / (double)k;
    }
}

static nac_status check_eval_args(const nac_hash_codes_t *query, const int32_t *ql,
                                  const nac_hash_codes_t *db, const int32_t *dl,
                                  const nac_hash_eval_opts *o, const nac_hash_eval_out *out) {
    static const char fn[] = "nac_hash_evaluate";
    NAC_TRY(check_codes(query, "query", fn));
    NAC_TRY(check_codes(db, "db", fn));
    NAC_TRY(cpu_ok(fn));
    if (query->nbits != db->nbits)
        return nac_error(NAC_ERR_INVALID, "%s: query codes have %d bits, database codes %d", fn,
                         query->nbits, db->nbits);
    if (!o || !out || (!ql && query->n > 0) || (!dl && db->n > 0))
        return nac_error(NAC_ERR_INVALID, "%s: opts, out and the label arrays must be non-NULL", fn);
    if (!rank_valid(o->rank)) return nac_error(NAC_ERR_INVALID, "%s: unknown rank %d", fn, (int)o->rank);
    if (o->n_map_at < 0 || (o->n_map_at > 0 && (!o->map_at || !out->map_at)))
        return nac_error(NAC_ERR_INVALID, "%s: n_map_at %d needs opts->map_at and out->map_at", fn,
                         o->n_map_at);
    if (o->n_prec_at < 0 || (o->n_prec_at > 0 && (!o->prec_at || !out->prec_at)))
        return nac_error(NAC_ERR_INVALID, "%s: n_prec_at %d needs opts->prec_at and out->prec_at", fn,
                         o->n_prec_at);
    for (int i = 0; i < o->n_map_at; i++)
        if (o->map_at[i] < 1)
            return nac_error(NAC_ERR_INVALID, "%s: map_at[%d] = %lld, need R >= 1", fn, i,
                             (long long)o->map_at[i]);
    for (int i = 0; i < o->n_prec_at; i++)
        if (o->prec_at[i] < 1)
            return nac_error(NAC_ERR_INVALID, "%s: prec_at[%d] = %lld, need k >= 1", fn, i,
                             (long long)o->prec_at[i]);
    if (o->pr_curve && (!out->pr_precision || !out->pr_recall))
        return nac_error(NAC_ERR_INVALID, "%s: pr_curve needs out->pr_precision and out->pr_recall", fn);
    return NAC_OK;
}

nac_status nac_hash_evaluate(const nac_hash_codes_t *query, const int32_t *query_labels,
                             const nac_hash_codes_t *db, const int32_t *db_labels,
                             const nac_hash_eval_opts *opts, nac_hash_eval_out *out) {
    NAC_TRY(check_eval_args(query, query_labels, db, db_labels, opts, out));
    const nac_hash_eval_opts *o = opts;
    int64_t m = query->n, n = db->n, nk = db->nbits + 1;
    int nr = 1 + o->n_map_at, np = o->n_prec_at;
    int64_t nblk = (m + QUERY_BLOCK - 1) / QUERY_BLOCK;
    /* One allocation for the cutoffs and every block's partial sums. */
    size_t per = (size_t)nr + (size_t)np + 3 * (size_t)nk + 1;
    int64_t *cut = malloc((size_t)nr * sizeof *cut);
    double *sums = calloc((size_t)(nblk > 0 ? nblk : 1) * per, sizeof *sums);
    if (!cut || !sums) {
        free(cut);
        free(sums);
        return nac_error(NAC_ERR_NOMEM, "nac_hash_evaluate: partial sums for %lld queries", (long long)m);
    }
    cut[0] = n;
    for (int i = 1; i < nr; i++) cut[i] = o->map_at[i - 1] < n ? o->map_at[i - 1] : n;
    eval_ctx ctx = {.db = db, .db_labels = db_labels, .o = o, .cut = cut};
    int failed = 0;

#pragma omp parallel
    {
        scratch s = {0};
        bool ok = scratch_alloc(&s, n, db->nbits, nr - 1, np);
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < nblk; b++) {
            if (!ok) continue;
            partial pt = partial_at(sums + (size_t)b * per, nr, np, nk);
            int64_t end = (b + 1) * QUERY_BLOCK < m ? (b + 1) * QUERY_BLOCK : m;
            for (int64_t i = b * QUERY_BLOCK; i < end; i++)
                eval_query(&ctx, query->words + i * query->nwords, query_labels[i], &s, &pt);
        }
        scratch_free(&s);
    }
    if (failed) {
        free(cut);
        free(sums);
        return nac_error(NAC_ERR_NOMEM, "nac_hash_evaluate: per-thread scratch for %lld database codes",
                         (long long)n);
    }

    /* Reduce in block order: the same numbers for any thread count. */
    double *tot = calloc(per, sizeof *tot);
    if (!tot) {
        free(cut);
        free(sums);
        return nac_error(NAC_ERR_NOMEM, "nac_hash_evaluate: reduction buffer");
    }
    for (int64_t b = 0; b < nblk; b++)
        for (size_t i = 0; i < per; i++) tot[i] += sums[(size_t)b * per + i];
    double inv_m = m > 0 ? 1.0 / (double)m : 0.0;
    out->map_all = tot[0] * inv_m;
    for (int i = 1; i < nr; i++) out->map_at[i - 1] = tot[i] * inv_m;
    for (int i = 0; i < np; i++) out->prec_at[i] = tot[nr + i] * inv_m;
    if (o->pr_curve) {
        partial t = partial_at(tot, nr, np, nk);
        for (int64_t d = 0; d < nk; d++) {
            out->pr_precision[d] = t.pr_np[d] > 0 ? t.pr_p[d] / t.pr_np[d] : 0.0;
            out->pr_recall[d] = t.pr_nr[0] > 0 ? t.pr_r[d] / t.pr_nr[0] : 0.0;
            if (out->pr_nqueries) out->pr_nqueries[d] = (int64_t)t.pr_np[d];
        }
    }
    free(tot);
    free(cut);
    free(sums);
    return NAC_OK;
}

nac_status nac_hash_map(const nac_hash_codes_t *query, const int32_t *query_labels,
                        const nac_hash_codes_t *db, const int32_t *db_labels, nac_hash_rank rank,
                        int64_t R, double *map) {
    if (!map) return nac_error(NAC_ERR_INVALID, "nac_hash_map: map is NULL");
    nac_hash_eval_opts o = {.rank = rank};
    double at = 0;
    nac_hash_eval_out out = {0};
    if (R > 0) {
        o.n_map_at = 1;
        o.map_at = &R;
        out.map_at = &at;
    }
    NAC_TRY(nac_hash_evaluate(query, query_labels, db, db_labels, &o, &out));
    *map = R > 0 ? at : out.map_all;
    return NAC_OK;
}
