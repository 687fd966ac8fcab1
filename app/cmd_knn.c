/* `nac knn RUN|ENCODER`: weighted kNN accuracy of a pretrained encoder's features
 * (eval/knn.c); writes knn_results.json. */
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

/* ---- nac knn ---- */

static nac_status knn(const eval_opts *opts, int k, float temp);

static nac_status run_knn(int argc, char **argv) {
    eval_opts o;
    ev_eval_opts_defaults(&o);
    int k = 200;
    float temp = 0.1f;
    for (int i = 1; i < argc; i++) {
        bool used;
        NAC_TRY(ev_eval_opt(&o, argc, argv, &i, &used));
        if (used) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--k") && v) NAC_TRY(ev_opt_int(a, argv[++i], 1, 1 << 20, &k));
        else if (!strcmp(a, "--temperature") && v) NAC_TRY(ev_opt_float(a, argv[++i], 0, 1e6, true, &temp));
        else if (!strncmp(a, "--", 2)) return ev_bad_option(a, "|--k|--temperature|", "knn");
        else NAC_TRY(ev_positional(&o, a, "knn"));
    }
    NAC_TRY(ev_world_open(&o));
    return ev_world_close(&o, "knn", knn(&o, k, temp));
}

/* Features on every rank (each its slice), the kNN on rank 0. */
static nac_status knn(const eval_opts *opts, int k, float temp) {
    const eval_opts o = *opts;
    eval_model m;
    NAC_TRY(ev_model_open(&m, &o, "knn"));
    if (m.lead)
        printf("kNN (k %d, T %g) of %s (%s, %s) on %s: %d train / %d test images\n", k, (double)temp,
               m.file, m.arch, m.objective, m.dataset, m.train.n, m.test.n);
    double top1[EV_NROWS] = {0}, top5[EV_NROWS] = {0};
    int64_t dims[EV_NROWS] = {0};
    int nrows = o.baselines ? EV_NROWS : 1;
    nac_status s = NAC_OK;
    for (int row = 0; s == NAC_OK && row < nrows; row++) {
        float *ftr = NULL, *fte = NULL;
        s = ev_row_features(&m, &o, row, &ftr, &fte, &dims[row]);
        if (s == NAC_OK && m.lead)
            s = nac_knn_accuracy(ftr, m.train.labels, m.train.n, fte, m.test.labels, m.test.n,
                                 dims[row], m.train.nclasses, k, temp, &top1[row], &top5[row]);
        free(ftr);
        free(fte);
    }
    char path[700];
    ev_results_path(&m, &o, "knn_results.json", path, sizeof path);
    if (s == NAC_OK && m.lead) {
        cJSON *d = ev_results_doc(&m, "knn");
        cJSON_AddNumberToObject(d, "k", k);
        cJSON_AddNumberToObject(d, "temperature", ev_f2d(temp));
        cJSON_AddNumberToObject(d, "top1", top1[0]);
        cJSON_AddNumberToObject(d, "top5", top5[0]);
        ev_baselines_json(d, &o, nrows, dims, top1, top5, NULL, NULL);
        s = ev_write_json(path, d);
        cJSON_Delete(d);
    }
    if (s == NAC_OK && m.lead) {
        printf("kNN: top-1 %.2f%%, top-5 %.2f%% on %d test images\n", 100 * top1[0], 100 * top5[0],
               m.test.n);
        if (nrows > 1) ev_print_rows("kNN", nrows, top1, top5, dims);
        printf("wrote %s\n", path);
    }
    ev_model_free(&m);
    return s;
}

const nac_command nac_cmd_knn = {
    "knn",
    "weighted kNN accuracy of a pretrained encoder's features",
    "knn RUN|ENCODER [--k N] [--temperature T]" BASELINE_USAGE "\n       " EVAL_OPTS_USAGE,
    "Each test image's k nearest training images (cosine similarity of the features) vote\n"
    "for their class with weight exp(similarity / T) (InstDisc). Writes knn_results.json\n"
    "(top-1, top-5).\n"
    "  --k N                 neighbours (200)\n"
    "  --temperature T       T (0.1)\n" BASELINE_HELP EVAL_OPTS_HELP,
    run_knn,
    NULL,
};
