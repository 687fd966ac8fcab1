/* `nac hash RUN|ENCODER`: hash-retrieval mAP of the sign codes of the projection head
 * (eval/hash.c); writes hash_results.json and optionally .npy exports. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "app/app.h"
#include "app/evalcmd.h"
#include "app/run.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/recipe.h"
#include "data/png.h"
#include "encoders/encfile.h"
#include "encoders/encoder.h"
#include "encoders/head.h"
#include "eval/hash.h"
#include "eval/knn.h"
#include "eval/probe.h"
#include "eval/regions.h"
#include "nac/loss.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "nn/optim.h"
#include "backend/rng.h"
#include "io/safetensors.h"

/* ---- nac hash ---- */


static nac_status gather(const float *src, int64_t d, const int64_t *idx, int64_t n, float **out) {
    *out = malloc((size_t)(n * d) * sizeof **out);
    if (!*out) return nac_error(NAC_ERR_NOMEM, "out of memory (%" PRId64 " x %" PRId64 ")", n, d);
    for (int64_t i = 0; i < n; i++) memcpy(*out + i * d, src + idx[i] * d, (size_t)d * sizeof **out);
    return NAC_OK;
}


/* query_/db_ codes (uint8 0/1), proj (o), features (h) and labels as .npy in dir. */
static nac_status hash_export(const char *dir, const char *which, const float *o, int64_t d,
                              const float *h, int64_t f, const int32_t *labels, int64_t n) {
    char p[700];
    uint8_t *bits = malloc((size_t)(n * d > 0 ? n * d : 1));
    if (!bits) return nac_error(NAC_ERR_NOMEM, "export: out of memory");
    for (int64_t i = 0; i < n * d; i++) bits[i] = o[i] >= 0;
    snprintf(p, sizeof p, "%s/%s_codes.npy", dir, which);
    nac_status s = nac_npy_write(p, NAC_DT_U8, 2, (int64_t[]){n, d}, bits);
    free(bits);
    snprintf(p, sizeof p, "%s/%s_proj.npy", dir, which);
    if (s == NAC_OK) s = nac_npy_write(p, NAC_DT_F32, 2, (int64_t[]){n, d}, o);
    snprintf(p, sizeof p, "%s/%s_features.npy", dir, which);
    if (s == NAC_OK) s = nac_npy_write(p, NAC_DT_F32, 2, (int64_t[]){n, f}, h);
    snprintf(p, sizeof p, "%s/%s_labels.npy", dir, which);
    if (s == NAC_OK) s = nac_npy_write(p, NAC_DT_I32, 1, (int64_t[]){n}, labels);
    return s;
}

static nac_status run_hash(int argc, char **argv) {
    eval_opts o;
    ev_eval_opts_defaults(&o);
    int qpc = 1000, R = 1000;
    const char *rank = "hamming", *export_dir = NULL;
    for (int i = 1; i < argc; i++) {
        bool used;
        NAC_TRY(ev_eval_opt(&o, argc, argv, &i, &used));
        if (used) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--queries-per-class") && v) NAC_TRY(ev_opt_int(a, argv[++i], 1, 1 << 30, &qpc));
        else if (!strcmp(a, "--R") && v) NAC_TRY(ev_opt_int(a, argv[++i], 1, 2147483647, &R));
        else if (!strcmp(a, "--rank") && v) rank = argv[++i];
        else if (!strcmp(a, "--export") && v) export_dir = argv[++i];
        else if (!strncmp(a, "--", 2))
            return ev_bad_option(a, "|--queries-per-class|--R|--rank|--export|", "hash");
        else NAC_TRY(ev_positional(&o, a, "hash"));
    }
    ev_hash_opts hopt = {.qpc = qpc, .R = R, .rank = rank, .export_dir = export_dir};
    NAC_TRY(ev_world_open(&o));
    return ev_world_close(&o, "hash", ev_hash(&o, &hopt, NULL));
}

nac_status ev_hash(const eval_opts *opts, const ev_hash_opts *hopts, double *map_all) {
    const eval_opts o = *opts;
    const int qpc = hopts->qpc, R = hopts->R;
    const char *rank = hopts->rank, *export_dir = hopts->export_dir;
    if (strcmp(rank, "hamming") && strcmp(rank, "dot01"))
        return nac_error(NAC_ERR_USAGE, "--rank is hamming or dot01, got \"%s\"", rank);
    nac_hash_rank rk = !strcmp(rank, "dot01") ? NAC_HASH_RANK_DOT01 : NAC_HASH_RANK_HAMMING;
    eval_model m;
    NAC_TRY(ev_model_open(&m, &o, "hash"));
    if (!m.g) {
        ev_model_free(&m);
        return nac_error(NAC_ERR_DATA, "%s has no projection head g (g.0.weight, g.2.weight): no codes "
                         "to evaluate", o.target);
    }
    nac_dataset_t pool = {0};
    float *h = NULL, *proj = NULL, *qo = NULL, *dbo = NULL, *qh = NULL, *dbh = NULL;
    int64_t *qi = NULL, *dbi = NULL, nq = 0, ndb = 0;
    int32_t *ql = NULL, *dbl = NULL;
    nac_hash_codes_t qc = {0}, dbc = {0};
    int nbits = m.code_bits;
    static const int64_t prec_k[4] = {1, 10, 100, 1000};
    double map_at = 0, prec[4] = {0};
    double *prp = malloc((size_t)(nbits + 1) * sizeof *prp), *prr = malloc((size_t)(nbits + 1) * sizeof *prr);
    int64_t *prn = malloc((size_t)(nbits + 1) * sizeof *prn);
    nac_hash_eval_out ho = {.map_at = &map_at, .prec_at = prec, .pr_precision = prp,
                            .pr_recall = prr, .pr_nqueries = prn};
    nac_status s = prp && prr && prn ? NAC_OK : nac_error(NAC_ERR_NOMEM, "hash: out of memory");
    if (s == NAC_OK) s = nac_dataset_concat(&m.train, &m.test, &pool);
    if (s == NAC_OK && m.lead)
        printf("hash retrieval of %s (%s, %s): %d-bit codes, %s train+test pooled (%d images), "
               "%d queries a class\n", m.file, m.arch, m.objective, nbits, m.dataset, pool.n, qpc);
    if (s == NAC_OK) {
        proj = malloc((size_t)pool.n * (size_t)nbits * sizeof *proj);
        qi = malloc((size_t)pool.n * sizeof *qi);
        dbi = malloc((size_t)pool.n * sizeof *dbi);
        if (!proj || !qi || !dbi) s = nac_error(NAC_ERR_NOMEM, "hash: out of memory");
    }
    if (s == NAC_OK) s = nac_hash_split(&pool, qpc, (uint64_t)o.seed, qi, &nq, dbi, &ndb);
    if (s == NAC_OK) s = ev_features_of(&m, &pool, o.batch, "features", &h);
    /* the features on every rank (each its slice); the rest, cheap, on rank 0 */
    if (s == NAC_OK && m.lead) s = ev_project(&m, h, pool.n, o.batch, proj);
    if (s == NAC_OK && m.lead) s = gather(proj, nbits, qi, nq, &qo);
    if (s == NAC_OK && m.lead) s = gather(proj, nbits, dbi, ndb, &dbo);
    if (s == NAC_OK && m.lead) {
        ql = malloc((size_t)nq * sizeof *ql);
        dbl = malloc((size_t)ndb * sizeof *dbl);
        if (!ql || !dbl) s = nac_error(NAC_ERR_NOMEM, "hash: out of memory");
        for (int64_t i = 0; s == NAC_OK && i < nq; i++) ql[i] = pool.labels[qi[i]];
        for (int64_t i = 0; s == NAC_OK && i < ndb; i++) dbl[i] = pool.labels[dbi[i]];
    }
    if (s == NAC_OK && m.lead) s = nac_hash_pack(qo, nq, nbits, &qc);
    if (s == NAC_OK && m.lead) s = nac_hash_pack(dbo, ndb, nbits, &dbc);
    int64_t Rv = R;
    nac_hash_eval_opts ho_opts = {.rank = rk, .n_map_at = 1, .map_at = &Rv, .n_prec_at = 4,
                                  .prec_at = prec_k, .pr_curve = true};
    if (s == NAC_OK && m.lead) s = nac_hash_evaluate(&qc, ql, &dbc, dbl, &ho_opts, &ho);
    if (s == NAC_OK && m.lead && export_dir) {
        s = ev_ensure_dir(export_dir);
        if (s == NAC_OK) s = gather(h, m.features, qi, nq, &qh);
        if (s == NAC_OK) s = gather(h, m.features, dbi, ndb, &dbh);
        if (s == NAC_OK) s = hash_export(export_dir, "query", qo, nbits, qh, m.features, ql, nq);
        if (s == NAC_OK) s = hash_export(export_dir, "db", dbo, nbits, dbh, m.features, dbl, ndb);
    }
    char path[700];
    ev_results_path(&m, &o, "hash_results.json", path, sizeof path);
    if (s == NAC_OK && m.lead) {
        cJSON *d = ev_results_doc(&m, "hash");
        cJSON_AddStringToObject(d, "protocol", "train+test pooled; per class, queries_per_class "
                                "queries chosen by the seed, the rest the database");
        cJSON_AddNumberToObject(d, "bits", nbits);
        cJSON_AddStringToObject(d, "rank", rank);
        cJSON_AddStringToObject(d, "rank_note", rk == NAC_HASH_RANK_DOT01
                                ? "dot product of 0/1 codes, as the official NAC script; NOT a Hamming ranking"
                                : "Hamming distance, ties by database index");
        cJSON_AddNumberToObject(d, "seed", o.seed);
        cJSON_AddNumberToObject(d, "queries_per_class", qpc);
        cJSON_AddNumberToObject(d, "queries", (double)nq);
        cJSON_AddNumberToObject(d, "database", (double)ndb);
        cJSON_AddNumberToObject(d, "map_all", ho.map_all);
        cJSON_AddNumberToObject(d, "R", R);
        cJSON_AddNumberToObject(d, "map_at_R", map_at);
        cJSON *pa = cJSON_AddObjectToObject(d, "precision_at");
        for (int i = 0; i < 4; i++) {
            char key[24];
            snprintf(key, sizeof key, "%" PRId64, prec_k[i]);
            cJSON_AddNumberToObject(pa, key, prec[i]);
        }
        cJSON *pr = cJSON_AddObjectToObject(d, "pr_curve");
        cJSON *rad = cJSON_AddArrayToObject(pr, "radius"), *pp = cJSON_AddArrayToObject(pr, "precision");
        cJSON *rr = cJSON_AddArrayToObject(pr, "recall"), *nn = cJSON_AddArrayToObject(pr, "queries");
        for (int r = 0; r <= nbits; r++) {
            cJSON_AddItemToArray(rad, cJSON_CreateNumber(r));
            cJSON_AddItemToArray(pp, cJSON_CreateNumber(isfinite(prp[r]) ? prp[r] : 0));
            cJSON_AddItemToArray(rr, cJSON_CreateNumber(isfinite(prr[r]) ? prr[r] : 0));
            cJSON_AddItemToArray(nn, cJSON_CreateNumber((double)prn[r]));
        }
        if (export_dir) cJSON_AddStringToObject(d, "export", export_dir);
        s = ev_write_json(path, d);
        cJSON_Delete(d);
    }
    if (s == NAC_OK && m.lead) {
        printf("hash (%s ranking): mAP@all %.4f, mAP@%d %.4f; P@1 %.4f, P@10 %.4f, P@100 %.4f, "
               "P@1000 %.4f (%" PRId64 " queries, %" PRId64 " database)\n", rank, ho.map_all, R, map_at,
               prec[0], prec[1], prec[2], prec[3], nq, ndb);
        if (export_dir) printf("exported codes, projections, features and labels to %s\n", export_dir);
        printf("wrote %s\n", path);
    }
    if (s == NAC_OK && map_all) *map_all = ho.map_all;
    nac_hash_codes_free(&qc);
    nac_hash_codes_free(&dbc);
    free(prp);
    free(prr);
    free(prn);
    free(h);
    free(proj);
    free(qo);
    free(dbo);
    free(qh);
    free(dbh);
    free(qi);
    free(dbi);
    free(ql);
    free(dbl);
    nac_dataset_free(&pool);
    ev_model_free(&m);
    return s;
}

const nac_command nac_cmd_hash = {
    "hash",
    "hash retrieval mAP of the sign codes of a pretrained encoder's projection",
    "hash RUN|ENCODER [--queries-per-class N] [--R N] [--rank hamming|dot01] [--export DIR]\n"
    "       " EVAL_OPTS_USAGE,
    "Codes are sign(o), o = g(h)/sqrt(D) the projection head's output (D bits). The NAC\n"
    "protocol: train and test pooled, --queries-per-class images of each class (chosen by\n"
    "--seed) are queries, the rest the database; relevance = same class. Reports mAP over\n"
    "the whole ranking and at --R, precision@1/10/100/1000 and the precision-recall curve by\n"
    "Hamming radius into hash_results.json.\n"
    "  --queries-per-class N queries a class (1000; lower it for small datasets)\n"
    "  --R N                 cutoff of the second mAP (1000)\n"
    "  --rank hamming|dot01  hamming: ascending Hamming distance, ties by database index.\n"
    "                        dot01: descending dot product of the 0/1 codes, as the official\n"
    "                        NAC script ranks; it ignores shared 0-bits, so it is NOT a\n"
    "                        Hamming ranking (use it only to reproduce that script)\n"
    "  --export DIR          write query_/db_ codes (uint8 0/1), proj (o), features (h) and\n"
    "                        labels as .npy files into DIR\n" EVAL_OPTS_HELP,
    run_hash,
    NULL,
};
