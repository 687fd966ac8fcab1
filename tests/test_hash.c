/* Hash retrieval metrics: the golden mAP values (hash_map.json, a Python reference), hand
 * cases (ties by index, no relevant item, R beyond the database, the DOT01 ranking), a
 * naive reference on random codes, thread-count independence and bad arguments. */
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <omp.h>

#include "data/recipe.h"
#include "eval/hash.h"


static double jnum(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v)) fail_msg("golden: %s is not a number", key);
    return v->valuedouble;
}

/* An integer array of the golden file; its length goes to *n. */
static int32_t *jints(const cJSON *j, const char *key, int64_t *n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsArray(v)) fail_msg("golden: %s is not an array", key);
    *n = cJSON_GetArraySize(v);
    int32_t *out = malloc((size_t)*n * sizeof *out);
    assert_non_null(out);
    int64_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) out[i++] = (int32_t)e->valueint;
    return out;
}

static uint8_t *to_bytes(const int32_t *a, int64_t n) {
    uint8_t *b = malloc((size_t)n);
    assert_non_null(b);
    for (int64_t i = 0; i < n; i++) b[i] = (uint8_t)a[i];
    return b;
}

static void test_golden(void **state) {
    (void)state;
    cJSON *g = tu_load_json("hash_map.json");
    int nbits = (int)jnum(g, "bits");
    int64_t ndb, nq, ndl, nql;
    int32_t *dbc = jints(g, "db_codes", &ndb), *qc = jints(g, "query_codes", &nq);
    int32_t *dl = jints(g, "db_labels", &ndl), *ql = jints(g, "query_labels", &nql);
    assert_int_equal(ndb, ndl * nbits);
    assert_int_equal(nq, nql * nbits);
    uint8_t *dbb = to_bytes(dbc, ndb), *qb = to_bytes(qc, nq);
    nac_hash_codes_t db = {0}, q = {0}, qf = {0};
    TU_OK(nac_hash_pack_bits(dbb, ndl, nbits, &db));
    TU_OK(nac_hash_pack_bits(qb, nql, nbits, &q));

    /* The same codes through the sign path: 1 -> o = 0 (an exact zero is bit 1), 0 -> o < 0. */
    float *o = malloc((size_t)nq * sizeof *o);
    assert_non_null(o);
    for (int64_t i = 0; i < nq; i++) o[i] = qc[i] ? 0.0f : -0.25f;
    TU_OK(nac_hash_pack(o, nql, nbits, &qf));
    assert_memory_equal(qf.words, q.words, (size_t)nql * (size_t)q.nwords * sizeof *q.words);

    int64_t cuts[2] = {100, 10};
    double at[2];
    nac_hash_eval_opts opts = {.rank = NAC_HASH_RANK_HAMMING, .n_map_at = 2, .map_at = cuts};
    nac_hash_eval_out out = {.map_at = at};
    TU_OK(nac_hash_evaluate(&q, ql, &db, dl, &opts, &out));
    double want_all = jnum(g, "map_all"), want100 = jnum(g, "map_at_100"), want10 = jnum(g, "map_at_10");
    if (fabs(out.map_all - want_all) > 1e-9) fail_msg("map_all %.12f want %.12f", out.map_all, want_all);
    if (fabs(at[0] - want100) > 1e-9) fail_msg("map@100 %.12f want %.12f", at[0], want100);
    if (fabs(at[1] - want10) > 1e-9) fail_msg("map@10 %.12f want %.12f", at[1], want10);

    double m10;
    TU_OK(nac_hash_map(&q, ql, &db, dl, NAC_HASH_RANK_HAMMING, 10, &m10));
    assert_true(m10 == at[1]);

    free(o);
    free(dbb);
    free(qb);
    free(dbc);
    free(qc);
    free(dl);
    free(ql);
    nac_hash_codes_free(&db);
    nac_hash_codes_free(&q);
    nac_hash_codes_free(&qf);
    cJSON_Delete(g);
}

static void test_pack_convention(void **state) {
    (void)state;
    /* 70 bits: two words, 58 padding bits that must stay zero. */
    enum { NB = 70 };
    float o[2 * NB];
    for (int j = 0; j < 2 * NB; j++) o[j] = -1.0f;
    o[0] = 0.0f;          /* +0 -> 1 */
    o[1] = -0.0f;         /* -0 -> 1 */
    o[2] = -1e-30f;       /* tiny negative -> 0 */
    o[3] = 1e-30f;        /* tiny positive -> 1 */
    o[64] = 2.0f;         /* first bit of the second word */
    o[69] = INFINITY;     /* last bit */
    o[NB + 5] = 3.0f;
    nac_hash_codes_t c = {0};
    TU_OK(nac_hash_pack(o, 2, NB, &c));
    assert_int_equal(c.nwords, 2);
    assert_int_equal(c.words[0], 0xBu);
    assert_int_equal(c.words[1], (1u << 0) | (1u << 5));
    assert_int_equal(c.words[2], 1u << 5);
    assert_int_equal(c.words[3], 0);
    assert_int_equal(nac_hash_distance(c.words, c.words + 2, 2), 3 + 2 + 1);

    o[NB + 7] = NAN;
    assert_int_equal(nac_hash_pack(o, 2, NB, &c), NAC_ERR_NUMERIC);
    assert_non_null(strstr(nac_last_error(), "o[1, 7]"));
    assert_null(c.words);
    uint8_t bad[4] = {0, 1, 2, 0};
    assert_int_equal(nac_hash_pack_bits(bad, 1, 4, &c), NAC_ERR_INVALID);
    assert_int_equal(nac_hash_pack(o, 1, 0, &c), NAC_ERR_INVALID);
    nac_hash_codes_free(&c);
    nac_hash_codes_free(NULL);
}

/* Query 1100; database 0000 (d 2), 1000 (d 1), 1100 (d 0), 1110 (d 1): items 1 and 3 tie. */
static const uint8_t HAND_Q[4] = {1, 1, 0, 0};
static const uint8_t HAND_DB[16] = {0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0};

static void test_ties_by_index(void **state) {
    (void)state;
    nac_hash_codes_t q = {0}, db = {0};
    TU_OK(nac_hash_pack_bits(HAND_Q, 1, 4, &q));
    TU_OK(nac_hash_pack_bits(HAND_DB, 4, 4, &db));
    int64_t order[4];
    int32_t key[4];
    TU_OK(nac_hash_rank_db(&db, q.words, NAC_HASH_RANK_HAMMING, order, key));
    int64_t want[4] = {2, 1, 3, 0};
    int32_t wkey[4] = {0, 1, 1, 2};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(order[i], want[i]);
        assert_int_equal(key[i], wkey[i]);
    }
    /* DOT01 = the official script's order: <q,d> = 0, 1, 2, 2 -> items 2, 3 (tie by index), 1, 0.
     * Hamming puts item 1 before item 3; the dot product ignores the 0-bits they differ in. */
    TU_OK(nac_hash_rank_db(&db, q.words, NAC_HASH_RANK_DOT01, order, key));
    int64_t want_dot[4] = {2, 3, 1, 0};
    int32_t wkey_dot[4] = {2, 2, 3, 4};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(order[i], want_dot[i]);
        assert_int_equal(key[i], wkey_dot[i]);
    }
    /* Two identical database codes: always the lower index first. */
    uint8_t same[8] = {1, 0, 1, 0, 1, 0, 1, 0};
    nac_hash_codes_t db2 = {0};
    TU_OK(nac_hash_pack_bits(same, 2, 4, &db2));
    TU_OK(nac_hash_rank_db(&db2, q.words, NAC_HASH_RANK_HAMMING, order, NULL));
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
    nac_hash_codes_free(&q);
    nac_hash_codes_free(&db);
    nac_hash_codes_free(&db2);
}

/* Hamming list for HAND_Q: items 2 (rel), 1 (not), 3 (rel), 0 (rel) with labels 0,1,0,0. */
static void test_hand_metrics(void **state) {
    (void)state;
    nac_hash_codes_t q = {0}, db = {0};
    uint8_t q2[8] = {1, 1, 0, 0, 1, 1, 0, 0};
    TU_OK(nac_hash_pack_bits(q2, 2, 4, &q));
    TU_OK(nac_hash_pack_bits(HAND_DB, 4, 4, &db));
    int32_t dl[4] = {0, 1, 0, 0};
    int32_t ql1[1] = {0};

    int64_t cuts[4] = {1, 2, 3, 1000};
    int64_t ks[4] = {1, 2, 3, 10};
    double at[4], pk[4], pp[5], pr[5];
    int64_t pn[5];
    nac_hash_eval_opts o = {.rank = NAC_HASH_RANK_HAMMING, .n_map_at = 4, .map_at = cuts,
                            .n_prec_at = 4, .prec_at = ks, .pr_curve = true};
    nac_hash_eval_out out = {.map_at = at, .prec_at = pk, .pr_precision = pp, .pr_recall = pr,
                             .pr_nqueries = pn};
    nac_hash_codes_t q1 = {.n = 1, .nbits = 4, .nwords = 1, .words = q.words};
    TU_OK(nac_hash_evaluate(&q1, ql1, &db, dl, &o, &out));
    double ap_all = (1.0 + 2.0 / 3.0 + 3.0 / 4.0) / 3.0;
    assert_true(fabs(out.map_all - ap_all) < 1e-15);
    assert_true(fabs(at[0] - 1.0) < 1e-15);               /* top 1: item 2, relevant */
    assert_true(fabs(at[1] - 1.0) < 1e-15);               /* top 2: only item 2 relevant */
    assert_true(fabs(at[2] - (1.0 + 2.0 / 3.0) / 2) < 1e-15);
    assert_true(fabs(at[3] - ap_all) < 1e-15);            /* R beyond the database = all */
    double wpk[4] = {1.0, 0.5, 2.0 / 3.0, 0.75};          /* k = 10 > 4 divides by 4 */
    for (int i = 0; i < 4; i++) assert_true(fabs(pk[i] - wpk[i]) < 1e-15);
    /* radius 0: {2}; 1: {2,1,3}; 2..4: all four */
    double wpp[5] = {1.0, 2.0 / 3.0, 0.75, 0.75, 0.75};
    double wpr[5] = {1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0, 1.0};
    for (int i = 0; i < 5; i++) {
        assert_true(fabs(pp[i] - wpp[i]) < 1e-15);
        assert_true(fabs(pr[i] - wpr[i]) < 1e-15);
        assert_int_equal(pn[i], 1);
    }

    /* A second query with label 7, found nowhere: AP 0 and precision 0, recall not averaged. */
    int32_t ql2[2] = {0, 7};
    TU_OK(nac_hash_evaluate(&q, ql2, &db, dl, &o, &out));
    assert_true(fabs(out.map_all - ap_all / 2) < 1e-15);
    assert_true(fabs(at[0] - 0.5) < 1e-15);
    assert_true(fabs(pk[3] - 0.375) < 1e-15);
    for (int i = 0; i < 5; i++) {
        assert_true(fabs(pp[i] - wpp[i] / 2) < 1e-15); /* both queries retrieve something */
        assert_true(fabs(pr[i] - wpr[i]) < 1e-15);     /* only the first has relevant items */
        assert_int_equal(pn[i], 2);
    }
    /* Only the query without relevant items: everything 0. */
    nac_hash_codes_t qn = {.n = 1, .nbits = 4, .nwords = 1, .words = q.words + 1};
    TU_OK(nac_hash_evaluate(&qn, ql2 + 1, &db, dl, &o, &out));
    assert_true(out.map_all == 0.0 && at[3] == 0.0 && pk[0] == 0.0 && pr[4] == 0.0);

    /* DOT01 list: items 2, 3, 1, 0 -> rel, rel, not, rel. */
    o.rank = NAC_HASH_RANK_DOT01;
    TU_OK(nac_hash_evaluate(&q1, ql1, &db, dl, &o, &out));
    assert_true(fabs(out.map_all - (1.0 + 1.0 + 3.0 / 4.0) / 3.0) < 1e-15);
    nac_hash_codes_free(&q);
    nac_hash_codes_free(&db);
}

/* ---- naive reference: unpacked bits, qsort by (key, index), metrics from the list ---- */
typedef struct kv {
    int key;
    int64_t idx;
} kv;

static int kv_cmp(const void *a, const void *b) {
    const kv *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static void naive_metrics(const uint8_t *qb, const int32_t *ql, int64_t m, const uint8_t *db,
                          const int32_t *dl, int64_t n, int nbits, nac_hash_rank rank,
                          const int64_t *cuts, int ncut, const int64_t *ks, int nk, double *map,
                          double *prec, double *pp, double *pr) {
    kv *list = malloc((size_t)n * sizeof *list);
    assert_non_null(list);
    double *ppn = calloc((size_t)nbits + 1, sizeof *ppn);
    int64_t nq_rel = 0;
    for (int i = 0; i < ncut; i++) map[i] = 0;
    for (int i = 0; i < nk; i++) prec[i] = 0;
    for (int r = 0; r <= nbits; r++) pp[r] = pr[r] = 0;
    for (int64_t i = 0; i < m; i++) {
        int64_t nrel = 0;
        for (int64_t j = 0; j < n; j++) {
            int s = 0;
            for (int b = 0; b < nbits; b++) {
                int x = qb[i * nbits + b], y = db[j * nbits + b];
                s += rank == NAC_HASH_RANK_HAMMING ? x != y : x * y;
            }
            list[j] = (kv){rank == NAC_HASH_RANK_HAMMING ? s : nbits - s, j};
            nrel += dl[j] == ql[i];
        }
        qsort(list, (size_t)n, sizeof *list, kv_cmp);
        for (int c = 0; c < ncut; c++) {
            double s = 0;
            int64_t hit = 0;
            for (int64_t p = 0; p < n && p < cuts[c]; p++)
                if (dl[list[p].idx] == ql[i]) s += (double)++hit / (double)(p + 1);
            map[c] += hit ? s / (double)hit : 0.0;
        }
        for (int c = 0; c < nk; c++) {
            int64_t hit = 0, k = ks[c] < n ? ks[c] : n;
            for (int64_t p = 0; p < k; p++) hit += dl[list[p].idx] == ql[i];
            prec[c] += (double)hit / (double)k;
        }
        nq_rel += nrel > 0;
        for (int r = 0; r <= nbits; r++) {
            int64_t ret = 0, hit = 0;
            for (int64_t p = 0; p < n; p++)
                if (list[p].key <= r) ret++, hit += dl[list[p].idx] == ql[i];
            if (ret) pp[r] += (double)hit / (double)ret, ppn[r]++;
            if (nrel) pr[r] += (double)hit / (double)nrel;
        }
    }
    for (int i = 0; i < ncut; i++) map[i] /= (double)m;
    for (int i = 0; i < nk; i++) prec[i] /= (double)m;
    for (int r = 0; r <= nbits; r++) {
        pp[r] = ppn[r] ? pp[r] / ppn[r] : 0;
        pr[r] = nq_rel ? pr[r] / (double)nq_rel : 0;
    }
    free(ppn);
    free(list);
}

/* Random clustered codes: every class has a centre, codes flip each bit with p 0.3. */
static void random_codes(uint8_t *bits, int32_t *lab, int64_t n, int nbits, int ncls, uint64_t seed,
                         const uint8_t *centres) {
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(seed, 1, 2, 3));
    for (int64_t i = 0; i < n; i++) {
        lab[i] = (int32_t)nac_rng_below(&r, (uint32_t)ncls);
        for (int b = 0; b < nbits; b++)
            bits[i * nbits + b] = centres[lab[i] * nbits + b] ^ (nac_rng_uniform(&r) < 0.3);
    }
}

static void check_random(int nbits, nac_hash_rank rank) {
    enum { M = 37, N = 411, NC = 5 };
    uint8_t *cent = malloc((size_t)NC * nbits), *qb = malloc((size_t)M * nbits),
            *dbb = malloc((size_t)N * nbits);
    int32_t ql[M], dl[N];
    assert_true(cent && qb && dbb);
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(5, (uint64_t)nbits, 0, 0));
    for (int i = 0; i < NC * nbits; i++) cent[i] = (uint8_t)(nac_rng_u32(&r) & 1);
    random_codes(qb, ql, M, nbits, NC, 11, cent);
    random_codes(dbb, dl, N, nbits, NC, 12, cent);
    ql[3] = 99; /* a query with no relevant item */

    nac_hash_codes_t q = {0}, db = {0};
    TU_OK(nac_hash_pack_bits(qb, M, nbits, &q));
    TU_OK(nac_hash_pack_bits(dbb, N, nbits, &db));
    int64_t cuts[4] = {N, 1, 50, 100000}, ks[3] = {1, 17, 1000};
    double at[3], pk[3], *pp = malloc((size_t)(nbits + 1) * sizeof *pp),
                         *pr = malloc((size_t)(nbits + 1) * sizeof *pr);
    double wmap[4], wpk[3], *wpp = malloc((size_t)(nbits + 1) * sizeof *wpp),
                            *wpr = malloc((size_t)(nbits + 1) * sizeof *wpr);
    nac_hash_eval_opts o = {.rank = rank, .n_map_at = 3, .map_at = cuts + 1, .n_prec_at = 3,
                            .prec_at = ks, .pr_curve = true};
    nac_hash_eval_out out = {.map_at = at, .prec_at = pk, .pr_precision = pp, .pr_recall = pr};
    TU_OK(nac_hash_evaluate(&q, ql, &db, dl, &o, &out));
    naive_metrics(qb, ql, M, dbb, dl, N, nbits, rank, cuts, 4, ks, 3, wmap, wpk, wpp, wpr);
    if (fabs(out.map_all - wmap[0]) > 1e-12) fail_msg("map_all %.15f want %.15f", out.map_all, wmap[0]);
    for (int i = 0; i < 3; i++) {
        if (fabs(at[i] - wmap[i + 1]) > 1e-12) fail_msg("map@%lld %.15f want %.15f", (long long)cuts[i + 1], at[i], wmap[i + 1]);
        if (fabs(pk[i] - wpk[i]) > 1e-12) fail_msg("P@%lld %.15f want %.15f", (long long)ks[i], pk[i], wpk[i]);
    }
    for (int d = 0; d <= nbits; d++)
        if (fabs(pp[d] - wpp[d]) > 1e-12 || fabs(pr[d] - wpr[d]) > 1e-12)
            fail_msg("PR at radius %d: (%.15f, %.15f) want (%.15f, %.15f)", d, pp[d], pr[d], wpp[d], wpr[d]);
    assert_true(out.map_all > 0.2 && out.map_all < 1.0); /* the data has structure */
    /* rank_db agrees with the naive order too (query 0) */
    int64_t *order = malloc(N * sizeof *order);
    TU_OK(nac_hash_rank_db(&db, q.words, rank, order, NULL));
    int prev = -1;
    for (int64_t p = 0; p < N; p++) {
        int k = nac_hash_key(q.words, db.words + order[p] * db.nwords, db.nwords, nbits, rank);
        assert_true(k > prev || (k == prev && order[p] > order[p - 1]));
        prev = k;
    }
    free(order);
    free(cent), free(qb), free(dbb), free(pp), free(pr), free(wpp), free(wpr);
    nac_hash_codes_free(&q);
    nac_hash_codes_free(&db);
}

static void test_random_vs_naive(void **state) {
    (void)state;
    check_random(100, NAC_HASH_RANK_HAMMING); /* two words, 28 padding bits */
    check_random(128, NAC_HASH_RANK_HAMMING); /* the specialised 2-word loop */
    check_random(64, NAC_HASH_RANK_HAMMING);  /* the specialised 1-word loop */
    check_random(200, NAC_HASH_RANK_HAMMING);
    check_random(100, NAC_HASH_RANK_DOT01);
}

static void test_thread_independent(void **state) {
    (void)state;
    enum { M = 300, N = 2000, NB = 128, NC = 10 };
    float *o = malloc((size_t)(M + N) * NB * sizeof *o);
    int32_t *lab = malloc((M + N) * sizeof *lab);
    assert_true(o && lab);
    tu_randn(o, (int64_t)(M + N) * NB, 3, 1.0f);
    for (int i = 0; i < M + N; i++) {
        lab[i] = i % NC;
        for (int b = 0; b < NB; b++) o[(int64_t)i * NB + b] += (float)((b * 7 + lab[i]) % 3) - 1.0f;
    }
    nac_hash_codes_t q = {0}, db = {0};
    TU_OK(nac_hash_pack(o, M, NB, &q));
    TU_OK(nac_hash_pack(o + (int64_t)M * NB, N, NB, &db));
    int64_t cut = 100;
    double at1, at2, pp1[NB + 1], pp2[NB + 1], pr1[NB + 1], pr2[NB + 1];
    nac_hash_eval_opts opts = {.n_map_at = 1, .map_at = &cut, .pr_curve = true};
    nac_hash_eval_out o1 = {.map_at = &at1, .pr_precision = pp1, .pr_recall = pr1};
    nac_hash_eval_out o2 = {.map_at = &at2, .pr_precision = pp2, .pr_recall = pr2};
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    TU_OK(nac_hash_evaluate(&q, lab, &db, lab + M, &opts, &o1));
    omp_set_num_threads(3);
    TU_OK(nac_hash_evaluate(&q, lab, &db, lab + M, &opts, &o2));
    omp_set_num_threads(saved);
    assert_memory_equal(&o1.map_all, &o2.map_all, sizeof(double));
    assert_memory_equal(&at1, &at2, sizeof(double));
    assert_memory_equal(pp1, pp2, sizeof pp1);
    assert_memory_equal(pr1, pr2, sizeof pr1);
    assert_true(pr1[NB] == 1.0); /* every relevant item lies within the full radius */
    free(o);
    free(lab);
    nac_hash_codes_free(&q);
    nac_hash_codes_free(&db);
}

static void test_bad_args(void **state) {
    (void)state;
    nac_hash_codes_t q = {0}, db = {0};
    TU_OK(nac_hash_pack_bits(HAND_Q, 1, 4, &q));
    uint8_t d5[5] = {1, 0, 1, 0, 1};
    TU_OK(nac_hash_pack_bits(d5, 1, 5, &db));
    int32_t l[1] = {0};
    double m;
    assert_int_equal(nac_hash_map(&q, l, &db, l, NAC_HASH_RANK_HAMMING, 0, &m), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "4 bits"));
    nac_hash_codes_free(&db);
    TU_OK(nac_hash_pack_bits(HAND_DB, 4, 4, &db));
    int32_t dl[4] = {0, 0, 0, 0};
    int64_t zero = 0;
    double at;
    nac_hash_eval_opts o = {.n_map_at = 1, .map_at = &zero};
    nac_hash_eval_out out = {.map_at = &at};
    assert_int_equal(nac_hash_evaluate(&q, l, &db, dl, &o, &out), NAC_ERR_INVALID);
    o = (nac_hash_eval_opts){.rank = (nac_hash_rank)5};
    assert_int_equal(nac_hash_evaluate(&q, l, &db, dl, &o, &out), NAC_ERR_INVALID);
    o = (nac_hash_eval_opts){.pr_curve = true};
    assert_int_equal(nac_hash_evaluate(&q, l, &db, dl, &o, &out), NAC_ERR_INVALID);
    /* every database item relevant: mAP 1 */
    TU_OK(nac_hash_map(&q, l, &db, dl, NAC_HASH_RANK_HAMMING, 0, &m));
    assert_true(m == 1.0);
    nac_hash_codes_free(&q);
    nac_hash_codes_free(&db);
}

/* The hashing protocol: the gallery pretraining may use never holds a query of the same
 * split (train + test pooled, qpc queries a class), and holds everything else. */
static void test_gallery_excludes_queries(void **state) {
    (void)state;
    nac_dataset_t tr, te, pool, gal;
    TU_OK(nac_dataset_synthetic(200, 10, 1, 6, 6, 11, &tr));
    TU_OK(nac_dataset_synthetic(60, 10, 1, 6, 6, 12, &te));
    TU_OK(nac_dataset_concat(&tr, &te, &pool));
    enum { QPC = 3 };
    int64_t q[260], db[260], nq, ndb;
    TU_OK(nac_hash_split(&pool, QPC, 4, q, &nq, db, &ndb));
    TU_OK(nac_hash_gallery(&tr, &te, QPC, 4, &gal));
    assert_int_equal(nq, 10 * QPC);
    assert_int_equal(gal.n, pool.n - nq);
    assert_int_equal(ndb, gal.n);
    size_t per = (size_t)pool.c * pool.h * pool.w;
    for (int64_t i = 0; i < gal.n; i++) {
        /* the gallery is the database, in order */
        assert_memory_equal(nac_dataset_image(&gal, i), nac_dataset_image(&pool, db[i]), per);
        assert_int_equal(gal.labels[i], pool.labels[db[i]]);
        for (int64_t j = 0; j < nq; j++)
            if (!memcmp(nac_dataset_image(&gal, i), nac_dataset_image(&pool, q[j]), per))
                fail_msg("gallery image %lld is query %lld", (long long)i, (long long)q[j]);
    }
    /* a class too small for its queries */
    int64_t q2[260], db2[260], n2, m2;
    assert_int_equal(nac_hash_split(&pool, 26, 4, q2, &n2, db2, &m2), NAC_ERR_USAGE);
    nac_dataset_free(&tr);
    nac_dataset_free(&te);
    nac_dataset_free(&pool);
    nac_dataset_free(&gal);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),           cmocka_unit_test(test_pack_convention),
        cmocka_unit_test(test_gallery_excludes_queries),
        cmocka_unit_test(test_ties_by_index),    cmocka_unit_test(test_hand_metrics),
        cmocka_unit_test(test_random_vs_naive),  cmocka_unit_test(test_thread_independent),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
