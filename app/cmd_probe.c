/* `nac probe RUN|ENCODER`: linear-probe accuracy of a pretrained encoder (eval/probe.c)
 * on features of its dataset; writes probe_results.json. */
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

/* ---- nac probe ---- */

static nac_status run_probe(int argc, char **argv) {
    eval_opts o;
    ev_eval_opts_defaults(&o);
    nac_probe_config pc;
    nac_probe_defaults(&pc);
    for (int i = 1; i < argc; i++) {
        bool used;
        NAC_TRY(ev_eval_opt(&o, argc, argv, &i, &used));
        if (used) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--epochs") && v) NAC_TRY(ev_opt_int(a, argv[++i], 1, 100000, &pc.epochs));
        else if (!strcmp(a, "--probe-batch") && v) NAC_TRY(ev_opt_int(a, argv[++i], 1, 1 << 20, &pc.batch));
        else if (!strcmp(a, "--lrs") && v) NAC_TRY(ev_opt_list(a, argv[++i], 0, 1e6, NAC_PROBE_MAX_LRS, pc.lrs, &pc.nlrs));
        else if (!strcmp(a, "--val-frac") && v) NAC_TRY(ev_opt_float(a, argv[++i], 0, 0.9, true, &pc.val_frac));
        else if (!strcmp(a, "--standardize")) pc.standardize = true;
        else if (!strncmp(a, "--", 2)) return ev_bad_option(a, "|--epochs|--probe-batch|--lrs|--val-frac|", "probe");
        else NAC_TRY(ev_positional(&o, a, "probe"));
    }
    NAC_TRY(ev_world_open(&o));
    return ev_world_close(&o, "probe", ev_probe(&o, &pc, NULL));
}

nac_status ev_probe(const eval_opts *opts, const nac_probe_config *pcfg, double *top1) {
    const eval_opts o = *opts;
    nac_probe_config pc = *pcfg;
    pc.seed = (uint64_t)o.seed;
    eval_model m;
    NAC_TRY(ev_model_open(&m, &o, "probe"));
    nac_probe_result r = {0}, rb[EV_NROWS] = {{0}};
    double r1[EV_NROWS] = {0}, r5[EV_NROWS] = {0};
    int64_t dims[EV_NROWS] = {0};
    int nrows = o.baselines ? EV_NROWS : 1;
    if (m.lead)
        printf("linear probe of %s (%s, %s) on %s: %d train / %d test images, %d features%s\n", m.file,
               m.arch, m.objective, m.dataset, m.train.n, m.test.n, m.features,
               o.comm ? " (features on the job's ranks)" : "");
    nac_status s = NAC_OK;
    for (int row = 0; s == NAC_OK && row < nrows; row++) {
        float *ftr = NULL, *fte = NULL;
        nac_probe_result *x = row ? &rb[row] : &r;
        s = ev_row_features(&m, &o, row, &ftr, &fte, &dims[row]);
        if (s == NAC_OK && m.lead)
            s = nac_probe_run(m.be, ftr, m.train.labels, m.train.n, fte, m.test.labels, m.test.n,
                              (int)dims[row], m.train.nclasses, &pc, x);
        if (s == NAC_OK) {
            r1[row] = x->test_top1;
            r5[row] = x->test_top5;
        }
        free(ftr);
        free(fte);
    }
    char path[700];
    ev_results_path(&m, &o, "probe_results.json", path, sizeof path);
    if (s == NAC_OK && m.lead) {
        cJSON *d = ev_results_doc(&m, "linear_probe");
        cJSON_AddNumberToObject(d, "epochs", pc.epochs);
        cJSON_AddNumberToObject(d, "batch", pc.batch);
        cJSON_AddNumberToObject(d, "momentum", ev_f2d(pc.momentum));
        cJSON_AddBoolToObject(d, "nesterov", true);
        cJSON_AddNumberToObject(d, "val_frac", ev_f2d(pc.val_frac));
        cJSON_AddBoolToObject(d, "standardize", pc.standardize);
        cJSON_AddNumberToObject(d, "seed", o.seed);
        cJSON *search = cJSON_AddArrayToObject(d, "lr_search");
        for (int k = 0; k < r.nlrs; k++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "lr", ev_f2d(r.lrs[k]));
            cJSON_AddNumberToObject(e, "val_top1", r.val_top1[k]);
            cJSON_AddBoolToObject(e, "diverged", r.val_diverged[k]);
            cJSON_AddItemToArray(search, e);
        }
        cJSON_AddNumberToObject(d, "search_train_rows", (double)r.nsearch);
        cJSON_AddNumberToObject(d, "val_rows", (double)r.nval);
        cJSON_AddNumberToObject(d, "lr", ev_f2d(r.lr));
        cJSON_AddNumberToObject(d, "train_top1", r.train_top1);
        cJSON_AddNumberToObject(d, "final_train_loss", r.final_loss);
        cJSON_AddNumberToObject(d, "top1", r.test_top1);
        cJSON_AddNumberToObject(d, "top5", r.test_top5);
        cJSON_AddItemToObject(d, "class_names", ev_class_names(&m.train));
        cJSON *conf = cJSON_AddArrayToObject(d, "confusion");
        for (int k = 0; k < r.nclasses; k++) {
            cJSON *row = cJSON_CreateArray();
            for (int j = 0; j < r.nclasses; j++)
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)r.confusion[k * r.nclasses + j]));
            cJSON_AddItemToArray(conf, row);
        }
        cJSON_AddNumberToObject(d, "seconds", r.seconds);
        double lr[EV_NROWS] = {0}, t1[EV_NROWS] = {0};
        for (int k = 1; k < nrows; k++) lr[k] = ev_f2d(rb[k].lr), t1[k] = rb[k].train_top1;
        ev_baselines_json(d, &o, nrows, dims, r1, r5, lr, t1);
        s = ev_write_json(path, d);
        cJSON_Delete(d);
    }
    if (s == NAC_OK && m.lead) {
        printf("lr search (validation top-1):");
        for (int k = 0; k < r.nlrs; k++)
            printf(" %g: %s%.2f%%", (double)r.lrs[k], r.val_diverged[k] ? "diverged " : "",
                   100 * r.val_top1[k]);
        printf("\nlinear probe: top-1 %.2f%%, top-5 %.2f%% on %" PRId64 " test images (lr %g, %d "
               "epochs; train top-1 %.2f%%)\n", 100 * r.test_top1, 100 * r.test_top5,
               r.ntest, (double)r.lr, pc.epochs, 100 * r.train_top1);
        if (nrows > 1) ev_print_rows("probe", nrows, r1, r5, dims);
        printf("wrote %s\n", path);
    }
    if (s == NAC_OK && top1) *top1 = r.test_top1;
    nac_probe_result_free(&r);
    for (int k = 1; k < EV_NROWS; k++) nac_probe_result_free(&rb[k]);
    ev_model_free(&m);
    return s;
}

const nac_command nac_cmd_probe = {
    "probe",
    "linear-probe accuracy of a pretrained encoder (lr searched on a validation split)",
    "probe RUN|ENCODER [--epochs N] [--lrs a,b,..] [--val-frac F] [--probe-batch N] [--standardize]\n"
    "       " BASELINE_USAGE EVAL_OPTS_USAGE,
    "Paper Section 4.2: the encoder frozen in evaluation mode, features of the train and test\n"
    "splits computed once, one Linear layer trained with softmax cross-entropy, Nesterov SGD\n"
    "(momentum 0.9), cosine schedule, no regularisation. The learning rate is chosen from\n"
    "--lrs on a per-class validation split of the training set, then the layer is retrained\n"
    "on the whole training set and scored on the test set. Writes probe_results.json (top-1,\n"
    "top-5, chosen lr, validation accuracy of each lr, confusion matrix).\n"
    "  --epochs N            epochs of every fit (100)\n"
    "  --lrs a,b,..          learning rates searched (0.01,0.1,1,10)\n"
    "  --val-frac F          validation share of each class (0.1)\n"
    "  --probe-batch N       rows a step of the linear layer (256)\n"
    "  --standardize         z-score each feature with the training set's mean and std first\n"
    "                        (not the paper's protocol; for badly scaled features)\n" BASELINE_HELP
    EVAL_OPTS_HELP,
    run_probe,
    NULL,
};
