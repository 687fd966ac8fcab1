/* `nac probe | knn | hash RUN|ENCODER` evaluate a pretrained encoder file (features in
 * evaluation mode, normalised as its metadata says, on the dataset its config names) and
 * write a results JSON; `nac regions` counts the linear regions of a small ReLU MLP on 2-D
 * toy data before and after a short NAC training and draws them (paper Figure 1). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "app/app.h"
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

/* ---- command-line helpers ---- */

static nac_status opt_int(const char *opt, const char *v, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return nac_error(NAC_ERR_USAGE, "%s needs an integer in %ld..%ld, got \"%s\"", opt, lo, hi, v);
    *out = (int)x;
    return NAC_OK;
}

static nac_status opt_float(const char *opt, const char *v, double lo, double hi, bool excl_lo,
                            float *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi || (excl_lo && x == lo))
        return nac_error(NAC_ERR_USAGE, "%s needs a number in %s%g..%g, got \"%s\"", opt,
                         excl_lo ? "(" : "", lo, hi, v);
    *out = (float)x;
    return NAC_OK;
}

/* "a,b,c" -> up to max numbers (each checked with lo/hi), at least one. */
static nac_status opt_list(const char *opt, const char *v, double lo, double hi, int max,
                           float *vals, int *n) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == max) return nac_error(NAC_ERR_USAGE, "%s takes at most %d values", opt, max);
        NAC_TRY(opt_float(opt, tok, lo, hi, true, &vals[(*n)++]));
    }
    if (*n == 0) return nac_error(NAC_ERR_USAGE, "%s needs a comma-separated list of numbers", opt);
    return NAC_OK;
}

/* Options every encoder evaluation takes. */
typedef struct eval_opts {
    const char *target;  /* RUN folder or encoder file */
    const char *out;     /* results file (default: next to the encoder) */
    const char *data;    /* dataset folder, overriding the config's */
    const char *dataset; /* dataset name, overriding the config's */
    const char *backend;
    int threads, batch, seed;
    int train_per_class, test_per_class; /* 0: all */
} eval_opts;

static void eval_opts_defaults(eval_opts *o) {
    memset(o, 0, sizeof *o);
    o->backend = "cpu";
    o->batch = 256;
}

#define EVAL_OPTS_USAGE \
    " [--out FILE] [--data PATH] [--dataset NAME] [--batch N] [--seed N]\n" \
    "        [--train-per-class N] [--test-per-class N] [--backend cpu|cuda] [--threads N]"
#define EVAL_OPTS_HELP                                                                        \
    "RUN is a run folder of `nac pretrain` (its encoder.safetensors is used) or ENCODER an\n" \
    "encoder file. Features come from the encoder in evaluation mode, without augmentation,\n" \
    "normalised with the file's norm_mean/norm_std, on the dataset named in its config.\n"    \
    "  --out FILE            results JSON (default: beside the encoder)\n"                     \
    "  --data PATH           dataset folder instead of the config's data.path\n"             \
    "  --dataset NAME        fashion-mnist|mnist|cifar10|synthetic instead of data.dataset\n" \
    "  --batch N             images an encoder forward (256)\n"                              \
    "  --seed N              seed of the splits and subsets (0)\n"                           \
    "  --train-per-class N   use N training images a class (0: all)\n"                       \
    "  --test-per-class N    use N test images a class (0: all)\n"                           \
    "  --backend cpu|cuda, --threads N (0: all cores)\n"

/* Consume argv[*i] (and its value) if it is a common option; *used says whether it was. */
static nac_status eval_opt(eval_opts *o, int argc, char **argv, int *i, bool *used) {
    const char *a = argv[*i];
    *used = true;
    bool has = *i + 1 < argc;
    const char *v = has ? argv[*i + 1] : NULL;
    static const char *const with_value[] = {"--out", "--data", "--dataset", "--batch", "--seed",
                                             "--train-per-class", "--test-per-class",
                                             "--backend", "--threads"};
    bool known = false;
    for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= !strcmp(a, with_value[k]);
    if (!known) {
        *used = false;
        return NAC_OK;
    }
    if (!has) return nac_error(NAC_ERR_USAGE, "%s needs a value", a);
    ++*i;
    if (!strcmp(a, "--out")) o->out = v;
    else if (!strcmp(a, "--data")) o->data = v;
    else if (!strcmp(a, "--dataset")) o->dataset = v;
    else if (!strcmp(a, "--backend")) o->backend = v;
    else if (!strcmp(a, "--batch")) return opt_int(a, v, 1, 1 << 20, &o->batch);
    else if (!strcmp(a, "--seed")) return opt_int(a, v, 0, 2147483647, &o->seed);
    else if (!strcmp(a, "--train-per-class")) return opt_int(a, v, 0, 1 << 30, &o->train_per_class);
    else if (!strcmp(a, "--test-per-class")) return opt_int(a, v, 0, 1 << 30, &o->test_per_class);
    else return opt_int(a, v, 0, 1024, &o->threads);
    return NAC_OK;
}

/* An option the command did not take: one it knows but without its value, or unknown. */
static nac_status bad_option(const char *a, const char *known, const char *cmd) {
    char pat[64];
    snprintf(pat, sizeof pat, "|%s|", a);
    if (strstr(known, pat)) return nac_error(NAC_ERR_USAGE, "%s needs a value", a);
    return nac_error(NAC_ERR_USAGE, "unknown option \"%s\" (see nac %s --help)", a, cmd);
}

static nac_status positional(eval_opts *o, const char *a, const char *cmd) {
    if (a[0] == '-' || o->target)
        return nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac %s --help)", a, cmd);
    o->target = a;
    return NAC_OK;
}

/* ---- the encoder under evaluation and its data ---- */

typedef struct eval_model {
    char file[600];  /* the encoder file */
    char dir[600];   /* where results go by default: the run folder or the file's folder */
    nac_backend_t *be;
    nac_encoder_t *enc;
    nac_head_t *g;   /* projection head (NULL if the file has none) */
    int features, code_bits;
    float mean[3], std[3];
    char arch[NAC_ENCODER_ARCH_LEN], objective[32];
    char dataset[32], data_path[512];
    int synthetic_n, config_seed;
    nac_dataset_t train, test;
} eval_model;

static void model_free(eval_model *m) {
    nac_head_free(m->g);
    nac_encoder_free(m->enc);
    nac_backend_free(m->be);
    nac_dataset_free(&m->train);
    nac_dataset_free(&m->test);
    memset(m, 0, sizeof *m);
}

/* data.dataset, data.path, data.synthetic_n and train.seed of the pretraining config. */
static nac_status read_config(eval_model *m, const char *json) {
    cJSON *root = cJSON_Parse(json);
    if (!root) return nac_error(NAC_ERR_DATA, "%s: metadata \"config\" is not valid JSON", m->file);
    cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    cJSON *train = cJSON_GetObjectItemCaseSensitive(root, "train");
    cJSON *ds = cJSON_GetObjectItemCaseSensitive(data, "dataset");
    cJSON *path = cJSON_GetObjectItemCaseSensitive(data, "path");
    cJSON *sn = cJSON_GetObjectItemCaseSensitive(data, "synthetic_n");
    cJSON *seed = cJSON_GetObjectItemCaseSensitive(train, "seed");
    nac_status s = NAC_OK;
    if (!cJSON_IsString(ds))
        s = nac_error(NAC_ERR_DATA, "%s: the config has no string \"data.dataset\"", m->file);
    else {
        snprintf(m->dataset, sizeof m->dataset, "%s", ds->valuestring);
        if (cJSON_IsString(path)) snprintf(m->data_path, sizeof m->data_path, "%s", path->valuestring);
        if (cJSON_IsNumber(sn)) m->synthetic_n = sn->valueint;
        if (cJSON_IsNumber(seed)) m->config_seed = seed->valueint;
    }
    cJSON_Delete(root);
    return s;
}

/* The encoder file, opened and validated by encoders/encfile, its encoder and head g built
 * on the backend, and its dataset named by its config or the options. */
static nac_status load_encoder_file(eval_model *m, const eval_opts *o) {
    nac_encfile_t *f;
    NAC_TRY(nac_encfile_open(m->file, &f));
    const nac_encfile_meta *meta = nac_encfile_get_meta(f);
    snprintf(m->arch, sizeof m->arch, "%s", meta->arch);
    snprintf(m->objective, sizeof m->objective, "%s", meta->objective);
    memcpy(m->mean, meta->mean, sizeof m->mean);
    memcpy(m->std, meta->std, sizeof m->std);
    nac_status s = NAC_OK;
    if (meta->config) s = read_config(m, meta->config);
    if (s == NAC_OK && o->dataset) snprintf(m->dataset, sizeof m->dataset, "%s", o->dataset);
    if (s == NAC_OK && o->data) snprintf(m->data_path, sizeof m->data_path, "%s", o->data);
    if (s == NAC_OK && !m->dataset[0])
        s = nac_error(NAC_ERR_DATA, "%s has no \"config\" metadata naming its dataset: give --dataset "
                      "and --data", m->file);
    nac_backend_options bo = {.threads = o->threads};
    if (s == NAC_OK) s = nac_backend_create(o->backend, &bo, &m->be);
    if (s == NAC_OK) s = nac_encfile_create_encoder(f, m->be, &m->enc);
    if (s == NAC_OK) {
        m->features = nac_encoder_features(m->enc);
        s = nac_encfile_load_head(f, m->be, "g.", m->features, &m->g);
    }
    if (s == NAC_OK && m->g) m->code_bits = nac_head_out(m->g);
    nac_encfile_close(f);
    return s;
}

/* The splits of the encoder's dataset (as its pretraining config named them), subsets as
 * the options ask, checked against the encoder's input. */
static nac_status load_data(eval_model *m, const eval_opts *o) {
    nac_data_recipe r = {.dataset = m->dataset, .path = m->data_path,
                         .synthetic_n = m->synthetic_n, .seed = (uint64_t)m->config_seed,
                         .want_test = true, .train_per_class = o->train_per_class,
                         .train_key = nac_rng_key((uint64_t)o->seed, NAC_STREAM_SPLIT, 11, 0),
                         .test_per_class = o->test_per_class,
                         .test_key = nac_rng_key((uint64_t)o->seed, NAC_STREAM_SPLIT, 12, 0)};
    NAC_TRY(nac_data_recipe_load(&r, &m->train, &m->test, NULL, NULL));
    const nac_dataset_t *full = &m->train;
    const nac_encoder_config *ec = nac_encoder_get_config(m->enc);
    bool mlp = !strcmp(ec->arch, "mlp");
    if (!mlp && (full->c != ec->in_channels || full->h != ec->in_size || full->w != ec->in_size))
        return nac_error(NAC_ERR_DATA, "%s takes %dx%dx%d images; dataset %s (%s) has %dx%dx%d",
                         m->file, ec->in_channels, ec->in_size, ec->in_size, m->dataset,
                         full->source, full->c, full->h, full->w);
    if (mlp && full->c * full->h * full->w != ec->mlp_sizes[0])
        return nac_error(NAC_ERR_DATA, "%s: the mlp takes %d inputs; dataset %s has %dx%dx%d images",
                         m->file, ec->mlp_sizes[0], m->dataset, full->c, full->h, full->w);
    for (int i = 0; i < full->c && i < 3; i++) /* the MLP's channels come from the data */
        if (!(m->std[i] > 0))
            return nac_error(NAC_ERR_DATA, "%s: norm_std of channel %d is %g", m->file, i,
                             (double)m->std[i]);
    return NAC_OK;
}

static nac_status model_open(eval_model *m, const eval_opts *o, const char *cmd) {
    memset(m, 0, sizeof *m);
    if (!o->target) return nac_error(NAC_ERR_USAGE, "give a run folder or an encoder file (see nac %s --help)", cmd);
    struct stat st;
    if (stat(o->target, &st) != 0)
        return nac_error(NAC_ERR_NOINPUT, "%s: no such run folder or encoder file", o->target);
    if (S_ISDIR(st.st_mode)) {
        snprintf(m->dir, sizeof m->dir, "%s", o->target);
        snprintf(m->file, sizeof m->file, "%s/encoder.safetensors", o->target);
        if (stat(m->file, &st) != 0)
            return nac_error(NAC_ERR_NOINPUT, "%s: no encoder.safetensors (has `nac pretrain` finished?)",
                             o->target);
    } else {
        snprintf(m->file, sizeof m->file, "%s", o->target);
        const char *slash = strrchr(o->target, '/');
        if (slash) snprintf(m->dir, sizeof m->dir, "%.*s", (int)(slash - o->target), o->target);
        else snprintf(m->dir, sizeof m->dir, ".");
    }
    nac_status s = load_encoder_file(m, o);
    if (s == NAC_OK) s = load_data(m, o);
    if (s != NAC_OK) model_free(m);
    return s;
}

/* Features (n, F) of every image of ds, evaluation mode, normalised, no augmentation. */
static nac_status features_of(eval_model *m, const nac_dataset_t *ds, int batch, const char *label,
                              float **out) {
    nac_loader_config lc;
    nac_loader_defaults(&lc);
    lc.views = 1;
    nac_augment_none(&lc.augment);
    nac_augment_set_norm(&lc.augment, ds->c, m->mean, m->std);
    int64_t per = (int64_t)ds->c * ds->h * ds->w, f = m->features;
    int chunk = batch * 4 < ds->n ? batch * 4 : ds->n;
    float *x = malloc((size_t)chunk * (size_t)per * sizeof *x);
    int64_t *idx = malloc((size_t)chunk * sizeof *idx);
    *out = malloc((size_t)ds->n * (size_t)f * sizeof **out);
    nac_status s = x && idx && *out ? NAC_OK
                                    : nac_error(NAC_ERR_NOMEM, "features of %d images: out of memory", ds->n);
    nac_progress_t prog;
    nac_progress_start(&prog, label, ds->n, 0);
    for (int start = 0; s == NAC_OK && start < ds->n; start += chunk) {
        int n = ds->n - start < chunk ? ds->n - start : chunk;
        for (int i = 0; i < n; i++) idx[i] = start + i;
        s = nac_loader_views(ds, &lc, 0, idx, n, x);
        if (s == NAC_OK) s = nac_encoder_features_host(m->enc, x, n, batch, *out + (int64_t)start * f);
        if (s == NAC_OK && start + n < ds->n) nac_progress_update(&prog, start + n, NULL);
    }
    if (s == NAC_OK) nac_progress_finish(&prog, NULL);
    free(x);
    free(idx);
    if (s != NAC_OK) {
        free(*out);
        *out = NULL;
    }
    return s;
}

/* o = g(h) / sqrt(D) for n rows of h (n, F) into o (n, D), `batch` rows at a time. */
static nac_status project(eval_model *m, const float *h, int64_t n, int batch, float *o) {
    int64_t f = m->features, d = m->code_bits, b = batch;
    nac_tensor_t *x = nac_tensor_new2(m->be, b, f);
    float *hb = malloc((size_t)(b * f) * sizeof *hb), *ob = malloc((size_t)(b * d) * sizeof *ob);
    nac_status s = x && hb && ob ? NAC_OK : nac_error(NAC_ERR_NOMEM, "projection: out of memory");
    for (int64_t start = 0; s == NAC_OK && start < n; start += b) {
        int64_t k = n - start < b ? n - start : b;
        for (int64_t i = 0; i < b; i++)
            memcpy(hb + i * f, h + (start + (i < k ? i : 0)) * f, (size_t)f * sizeof *hb);
        const nac_tensor_t *y;
        s = nac_tensor_from_host(x, hb);
        if (s == NAC_OK) s = nac_head_forward(m->g, x, &y);
        if (s == NAC_OK) s = nac_tensor_to_host(y, ob);
        if (s == NAC_OK) memcpy(o + start * d, ob, (size_t)(k * d) * sizeof *o);
    }
    nac_tensor_free(x);
    free(hb);
    free(ob);
    return s;
}

static void results_path(const eval_model *m, const eval_opts *o, const char *name, char *buf,
                         size_t n) {
    if (o->out) snprintf(buf, n, "%s", o->out);
    else snprintf(buf, n, "%s/%s", m->dir, name);
}

static nac_status write_json(const char *path, const cJSON *doc) {
    char *text = cJSON_Print(doc);
    if (!text) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    size_t n = strlen(text);
    char *t2 = realloc(text, n + 2);
    if (!t2) {
        free(text);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    }
    t2[n] = '\n';
    t2[n + 1] = 0;
    nac_status s = nac_write_file_atomic(path, t2, n + 1);
    free(t2);
    return s;
}

/* A float as the double of its shortest decimal form, so JSON shows 0.1, not 0.100000001. */
static double f2d(float x) {
    char b[32];
    snprintf(b, sizeof b, "%.7g", (double)x);
    return strtod(b, NULL);
}

/* The header every results file shares. */
static cJSON *results_doc(const eval_model *m, const char *what) {
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "eval", what);
    cJSON_AddStringToObject(d, "encoder", m->file);
    cJSON_AddStringToObject(d, "arch", m->arch);
    cJSON_AddStringToObject(d, "objective", m->objective);
    cJSON_AddStringToObject(d, "dataset", m->dataset);
    cJSON_AddNumberToObject(d, "features", m->features);
    cJSON_AddNumberToObject(d, "train_images", m->train.n);
    cJSON_AddNumberToObject(d, "test_images", m->test.n);
    return d;
}

static cJSON *class_names(const nac_dataset_t *ds) {
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; k < ds->nclasses; k++) cJSON_AddItemToArray(a, cJSON_CreateString(ds->class_names[k]));
    return a;
}

/* ---- nac probe ---- */

static nac_status run_probe(int argc, char **argv) {
    eval_opts o;
    eval_opts_defaults(&o);
    nac_probe_config pc;
    nac_probe_defaults(&pc);
    for (int i = 1; i < argc; i++) {
        bool used;
        NAC_TRY(eval_opt(&o, argc, argv, &i, &used));
        if (used) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--epochs") && v) NAC_TRY(opt_int(a, argv[++i], 1, 100000, &pc.epochs));
        else if (!strcmp(a, "--probe-batch") && v) NAC_TRY(opt_int(a, argv[++i], 1, 1 << 20, &pc.batch));
        else if (!strcmp(a, "--lrs") && v) NAC_TRY(opt_list(a, argv[++i], 0, 1e6, NAC_PROBE_MAX_LRS, pc.lrs, &pc.nlrs));
        else if (!strcmp(a, "--val-frac") && v) NAC_TRY(opt_float(a, argv[++i], 0, 0.9, true, &pc.val_frac));
        else if (!strcmp(a, "--standardize")) pc.standardize = true;
        else if (!strncmp(a, "--", 2)) return bad_option(a, "|--epochs|--probe-batch|--lrs|--val-frac|", "probe");
        else NAC_TRY(positional(&o, a, "probe"));
    }
    pc.seed = (uint64_t)o.seed;
    eval_model m;
    NAC_TRY(model_open(&m, &o, "probe"));
    float *ftr = NULL, *fte = NULL;
    nac_probe_result r = {0};
    printf("linear probe of %s (%s, %s) on %s: %d train / %d test images, %d features\n", m.file,
           m.arch, m.objective, m.dataset, m.train.n, m.test.n, m.features);
    nac_status s = features_of(&m, &m.train, o.batch, "train features", &ftr);
    if (s == NAC_OK) s = features_of(&m, &m.test, o.batch, "test features", &fte);
    if (s == NAC_OK)
        s = nac_probe_run(m.be, ftr, m.train.labels, m.train.n, fte, m.test.labels, m.test.n,
                          m.features, m.train.nclasses, &pc, &r);
    char path[700];
    results_path(&m, &o, "probe_results.json", path, sizeof path);
    if (s == NAC_OK) {
        cJSON *d = results_doc(&m, "linear_probe");
        cJSON_AddNumberToObject(d, "epochs", pc.epochs);
        cJSON_AddNumberToObject(d, "batch", pc.batch);
        cJSON_AddNumberToObject(d, "momentum", f2d(pc.momentum));
        cJSON_AddBoolToObject(d, "nesterov", true);
        cJSON_AddNumberToObject(d, "val_frac", f2d(pc.val_frac));
        cJSON_AddBoolToObject(d, "standardize", pc.standardize);
        cJSON_AddNumberToObject(d, "seed", o.seed);
        cJSON *search = cJSON_AddArrayToObject(d, "lr_search");
        for (int k = 0; k < r.nlrs; k++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "lr", f2d(r.lrs[k]));
            cJSON_AddNumberToObject(e, "val_top1", r.val_top1[k]);
            cJSON_AddBoolToObject(e, "diverged", r.val_diverged[k]);
            cJSON_AddItemToArray(search, e);
        }
        cJSON_AddNumberToObject(d, "search_train_rows", (double)r.nsearch);
        cJSON_AddNumberToObject(d, "val_rows", (double)r.nval);
        cJSON_AddNumberToObject(d, "lr", f2d(r.lr));
        cJSON_AddNumberToObject(d, "train_top1", r.train_top1);
        cJSON_AddNumberToObject(d, "final_train_loss", r.final_loss);
        cJSON_AddNumberToObject(d, "top1", r.test_top1);
        cJSON_AddNumberToObject(d, "top5", r.test_top5);
        cJSON_AddItemToObject(d, "class_names", class_names(&m.train));
        cJSON *conf = cJSON_AddArrayToObject(d, "confusion");
        for (int k = 0; k < r.nclasses; k++) {
            cJSON *row = cJSON_CreateArray();
            for (int j = 0; j < r.nclasses; j++)
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)r.confusion[k * r.nclasses + j]));
            cJSON_AddItemToArray(conf, row);
        }
        cJSON_AddNumberToObject(d, "seconds", r.seconds);
        s = write_json(path, d);
        cJSON_Delete(d);
    }
    if (s == NAC_OK) {
        printf("lr search (validation top-1):");
        for (int k = 0; k < r.nlrs; k++)
            printf(" %g: %s%.2f%%", (double)r.lrs[k], r.val_diverged[k] ? "diverged " : "",
                   100 * r.val_top1[k]);
        printf("\nlinear probe: top-1 %.2f%%, top-5 %.2f%% on %" PRId64 " test images (lr %g, %d "
               "epochs; train top-1 %.2f%%)\nwrote %s\n", 100 * r.test_top1, 100 * r.test_top5,
               r.ntest, (double)r.lr, pc.epochs, 100 * r.train_top1, path);
    }
    nac_probe_result_free(&r);
    free(ftr);
    free(fte);
    model_free(&m);
    return s;
}

/* ---- nac knn ---- */

static nac_status run_knn(int argc, char **argv) {
    eval_opts o;
    eval_opts_defaults(&o);
    int k = 200;
    float temp = 0.1f;
    for (int i = 1; i < argc; i++) {
        bool used;
        NAC_TRY(eval_opt(&o, argc, argv, &i, &used));
        if (used) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--k") && v) NAC_TRY(opt_int(a, argv[++i], 1, 1 << 20, &k));
        else if (!strcmp(a, "--temperature") && v) NAC_TRY(opt_float(a, argv[++i], 0, 1e6, true, &temp));
        else if (!strncmp(a, "--", 2)) return bad_option(a, "|--k|--temperature|", "knn");
        else NAC_TRY(positional(&o, a, "knn"));
    }
    eval_model m;
    NAC_TRY(model_open(&m, &o, "knn"));
    printf("kNN (k %d, T %g) of %s (%s, %s) on %s: %d train / %d test images\n", k, (double)temp,
           m.file, m.arch, m.objective, m.dataset, m.train.n, m.test.n);
    float *ftr = NULL, *fte = NULL;
    double top1 = 0, top5 = 0;
    nac_status s = features_of(&m, &m.train, o.batch, "train features", &ftr);
    if (s == NAC_OK) s = features_of(&m, &m.test, o.batch, "test features", &fte);
    if (s == NAC_OK)
        s = nac_knn_accuracy(ftr, m.train.labels, m.train.n, fte, m.test.labels, m.test.n, m.features,
                             m.train.nclasses, k, temp, &top1, &top5);
    char path[700];
    results_path(&m, &o, "knn_results.json", path, sizeof path);
    if (s == NAC_OK) {
        cJSON *d = results_doc(&m, "knn");
        cJSON_AddNumberToObject(d, "k", k);
        cJSON_AddNumberToObject(d, "temperature", f2d(temp));
        cJSON_AddNumberToObject(d, "top1", top1);
        cJSON_AddNumberToObject(d, "top5", top5);
        s = write_json(path, d);
        cJSON_Delete(d);
    }
    if (s == NAC_OK)
        printf("kNN: top-1 %.2f%%, top-5 %.2f%% on %d test images\nwrote %s\n", 100 * top1, 100 * top5,
               m.test.n, path);
    free(ftr);
    free(fte);
    model_free(&m);
    return s;
}

/* ---- nac hash ---- */

/* Per class, qpc rows chosen by the seed are queries, the rest the database; both lists
 * in ascending row order. */
static nac_status hash_split(const nac_dataset_t *ds, int qpc, uint64_t seed, int64_t *q,
                             int64_t *nq, int64_t *db, int64_t *ndb) {
    int64_t *rows = malloc((size_t)ds->n * sizeof *rows);
    unsigned char *isq = calloc((size_t)ds->n, 1);
    if (!rows || !isq) {
        free(rows);
        free(isq);
        return nac_error(NAC_ERR_NOMEM, "hash split: out of memory");
    }
    nac_status s = NAC_OK;
    for (int k = 0; s == NAC_OK && k < ds->nclasses; k++) {
        int64_t c = 0;
        for (int64_t i = 0; i < ds->n; i++)
            if (ds->labels[i] == k) rows[c++] = i;
        if (c == 0) continue;
        if (c <= qpc) {
            s = nac_error(NAC_ERR_USAGE, "class %d (%s) has %" PRId64 " images: %d queries a class "
                          "leave none for the database (use --queries-per-class)", k,
                          ds->class_names[k], c, qpc);
            break;
        }
        nac_rng_t r;
        nac_rng_init(&r, nac_rng_key(seed, NAC_STREAM_SPLIT, 0x68617368ull /* "hash" */, (uint64_t)k));
        nac_rng_shuffle(&r, rows, c);
        for (int64_t j = 0; j < qpc; j++) isq[rows[j]] = 1;
    }
    *nq = *ndb = 0;
    for (int64_t i = 0; s == NAC_OK && i < ds->n; i++) {
        if (isq[i]) q[(*nq)++] = i;
        else db[(*ndb)++] = i;
    }
    free(rows);
    free(isq);
    return s;
}

static nac_status gather(const float *src, int64_t d, const int64_t *idx, int64_t n, float **out) {
    *out = malloc((size_t)(n * d) * sizeof **out);
    if (!*out) return nac_error(NAC_ERR_NOMEM, "out of memory (%" PRId64 " x %" PRId64 ")", n, d);
    for (int64_t i = 0; i < n; i++) memcpy(*out + i * d, src + idx[i] * d, (size_t)d * sizeof **out);
    return NAC_OK;
}

static nac_status ensure_dir(const char *dir) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return nac_error(NAC_ERR_IO, "cannot create folder %s: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return nac_error(NAC_ERR_IO, "%s is not a folder", dir);
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
    eval_opts_defaults(&o);
    int qpc = 1000, R = 1000;
    const char *rank = "hamming", *export_dir = NULL;
    for (int i = 1; i < argc; i++) {
        bool used;
        NAC_TRY(eval_opt(&o, argc, argv, &i, &used));
        if (used) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--queries-per-class") && v) NAC_TRY(opt_int(a, argv[++i], 1, 1 << 30, &qpc));
        else if (!strcmp(a, "--R") && v) NAC_TRY(opt_int(a, argv[++i], 1, 2147483647, &R));
        else if (!strcmp(a, "--rank") && v) rank = argv[++i];
        else if (!strcmp(a, "--export") && v) export_dir = argv[++i];
        else if (!strncmp(a, "--", 2))
            return bad_option(a, "|--queries-per-class|--R|--rank|--export|", "hash");
        else NAC_TRY(positional(&o, a, "hash"));
    }
    if (strcmp(rank, "hamming") && strcmp(rank, "dot01"))
        return nac_error(NAC_ERR_USAGE, "--rank is hamming or dot01, got \"%s\"", rank);
    nac_hash_rank rk = !strcmp(rank, "dot01") ? NAC_HASH_RANK_DOT01 : NAC_HASH_RANK_HAMMING;
    eval_model m;
    NAC_TRY(model_open(&m, &o, "hash"));
    if (!m.g) {
        model_free(&m);
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
    if (s == NAC_OK)
        printf("hash retrieval of %s (%s, %s): %d-bit codes, %s train+test pooled (%d images), "
               "%d queries a class\n", m.file, m.arch, m.objective, nbits, m.dataset, pool.n, qpc);
    if (s == NAC_OK) {
        proj = malloc((size_t)pool.n * (size_t)nbits * sizeof *proj);
        qi = malloc((size_t)pool.n * sizeof *qi);
        dbi = malloc((size_t)pool.n * sizeof *dbi);
        if (!proj || !qi || !dbi) s = nac_error(NAC_ERR_NOMEM, "hash: out of memory");
    }
    if (s == NAC_OK) s = hash_split(&pool, qpc, (uint64_t)o.seed, qi, &nq, dbi, &ndb);
    if (s == NAC_OK) s = features_of(&m, &pool, o.batch, "features", &h);
    if (s == NAC_OK) s = project(&m, h, pool.n, o.batch, proj);
    if (s == NAC_OK) s = gather(proj, nbits, qi, nq, &qo);
    if (s == NAC_OK) s = gather(proj, nbits, dbi, ndb, &dbo);
    if (s == NAC_OK) {
        ql = malloc((size_t)nq * sizeof *ql);
        dbl = malloc((size_t)ndb * sizeof *dbl);
        if (!ql || !dbl) s = nac_error(NAC_ERR_NOMEM, "hash: out of memory");
        for (int64_t i = 0; s == NAC_OK && i < nq; i++) ql[i] = pool.labels[qi[i]];
        for (int64_t i = 0; s == NAC_OK && i < ndb; i++) dbl[i] = pool.labels[dbi[i]];
    }
    if (s == NAC_OK) s = nac_hash_pack(qo, nq, nbits, &qc);
    if (s == NAC_OK) s = nac_hash_pack(dbo, ndb, nbits, &dbc);
    int64_t Rv = R;
    nac_hash_eval_opts ho_opts = {.rank = rk, .n_map_at = 1, .map_at = &Rv, .n_prec_at = 4,
                                  .prec_at = prec_k, .pr_curve = true};
    if (s == NAC_OK) s = nac_hash_evaluate(&qc, ql, &dbc, dbl, &ho_opts, &ho);
    if (s == NAC_OK && export_dir) {
        s = ensure_dir(export_dir);
        if (s == NAC_OK) s = gather(h, m.features, qi, nq, &qh);
        if (s == NAC_OK) s = gather(h, m.features, dbi, ndb, &dbh);
        if (s == NAC_OK) s = hash_export(export_dir, "query", qo, nbits, qh, m.features, ql, nq);
        if (s == NAC_OK) s = hash_export(export_dir, "db", dbo, nbits, dbh, m.features, dbl, ndb);
    }
    char path[700];
    results_path(&m, &o, "hash_results.json", path, sizeof path);
    if (s == NAC_OK) {
        cJSON *d = results_doc(&m, "hash");
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
        s = write_json(path, d);
        cJSON_Delete(d);
    }
    if (s == NAC_OK) {
        printf("hash (%s ranking): mAP@all %.4f, mAP@%d %.4f; P@1 %.4f, P@10 %.4f, P@100 %.4f, "
               "P@1000 %.4f (%" PRId64 " queries, %" PRId64 " database)\n", rank, ho.map_all, R, map_at,
               prec[0], prec[1], prec[2], prec[3], nq, ndb);
        if (export_dir) printf("exported codes, projections, features and labels to %s\n", export_dir);
        printf("wrote %s\n", path);
    }
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
    model_free(&m);
    return s;
}

/* ---- nac regions ---- */

typedef struct regions_opts {
    nac_toy_opts toy;
    int sizes[NAC_MLP_MAX_SIZES], nsizes;
    int steps, batch, proj_dim, grid, seed, threads;
    float lr, p, view_noise;
    const char *runs_dir, *name, *backend;
} regions_opts;

typedef struct regions_counts {
    int64_t data, grid;         /* the network: the encoder, g's hidden layer, the code bits */
    int64_t enc_data, enc_grid; /* the encoder's hidden units alone */
} regions_counts;

typedef struct regions_model {
    nac_backend_t *be;
    nac_encoder_t *enc;
    nac_head_t *g, *r;
    nac_loss_t *loss;
    nac_params_t all; /* view */
    nac_tensor_t *x, *dh, *dh_r;
} regions_model;

static void rmodel_free(regions_model *rm) {
    nac_tensor_free(rm->x);
    nac_tensor_free(rm->dh);
    nac_tensor_free(rm->dh_r);
    nac_loss_free(rm->loss);
    nac_head_free(rm->g);
    nac_head_free(rm->r);
    nac_encoder_free(rm->enc);
    free(rm->all.items);
    nac_backend_free(rm->be);
    memset(rm, 0, sizeof *rm);
}

static nac_status rmodel_create(const regions_opts *o, int k, regions_model *rm) {
    memset(rm, 0, sizeof *rm);
    nac_backend_options bo = {.threads = o->threads};
    NAC_TRY(nac_backend_create(o->backend, &bo, &rm->be));
    nac_encoder_config ec;
    nac_encoder_config_defaults(&ec);
    snprintf(ec.arch, sizeof ec.arch, "mlp");
    memcpy(ec.mlp_sizes, o->sizes, sizeof ec.mlp_sizes);
    ec.mlp_nsizes = o->nsizes;
    ec.seed = (uint64_t)o->seed;
    NAC_TRY(nac_encoder_create(rm->be, &ec, &rm->enc));
    int f = nac_encoder_features(rm->enc);
    NAC_TRY(nac_head_create(rm->be, f, f, o->proj_dim, "g.", (uint64_t)o->seed + 1, &rm->g));
    NAC_TRY(nac_head_create(rm->be, f, f, o->proj_dim, "r.", (uint64_t)o->seed + 2, &rm->r));
    NAC_TRY(nac_params_view_add(&rm->all, nac_encoder_params(rm->enc)));
    NAC_TRY(nac_params_view_add(&rm->all, nac_head_params(rm->g)));
    NAC_TRY(nac_params_view_add(&rm->all, nac_head_params(rm->r)));
    nac_loss_config lc = {.kind = NAC_LOSS_NAC, .k = k, .d = o->proj_dim, .p = o->p};
    NAC_TRY(nac_loss_create(rm->be, &lc, &rm->loss));
    rm->x = nac_tensor_new2(rm->be, 2 * k, 2);
    rm->dh = nac_tensor_new2(rm->be, 2 * k, f);
    rm->dh_r = nac_tensor_new2(rm->be, 2 * k, f);
    if (!rm->x || !rm->dh || !rm->dh_r) return nac_error(NAC_ERR_NOMEM, "regions: out of memory");
    return NAC_OK;
}

/* One Linear layer of a parameter list as host arrays for eval/regions. */
static nac_status host_layer(nac_params_t *ps, const char *wname, const char *bname,
                             nac_region_layer *L, float **wb, float **bb) {
    nac_param_t *w = nac_params_find(ps, wname), *b = nac_params_find(ps, bname);
    if (!w || !b || w->w.ndim != 2) return nac_error(NAC_ERR_INVALID, "regions: no layer %s", wname);
    int out = (int)w->w.dim[0], in = (int)w->w.dim[1];
    *wb = malloc((size_t)in * out * sizeof(float));
    *bb = malloc((size_t)out * sizeof(float));
    if (!*wb || !*bb) return nac_error(NAC_ERR_NOMEM, "regions: out of memory");
    NAC_TRY(nac_tensor_to_host(&w->w, *wb));
    NAC_TRY(nac_tensor_to_host(&b->w, *bb));
    *L = (nac_region_layer){.in = in, .out = out, .w = *wb, .b = *bb};
    return NAC_OK;
}

/* The network as host layers: the encoder's hidden layers, then (with_code) the head g's
 * hidden layer and its output, whose sign is the activation code c = sign(o) (the 1/sqrt(D)
 * scale does not change a sign). Returns the number of layers in *nl. */
static nac_status rmodel_layers(regions_model *rm, const regions_opts *o, bool with_code,
                                nac_region_layer *L, float **bufs, int *nl) {
    nac_params_t *ps = nac_encoder_params(rm->enc);
    *nl = 0;
    for (int i = 0; i + 1 < o->nsizes; i++, ++*nl) {
        char wn[64], bn[64];
        snprintf(wn, sizeof wn, "layers.%d.weight", i);
        snprintf(bn, sizeof bn, "layers.%d.bias", i);
        NAC_TRY(host_layer(ps, wn, bn, &L[*nl], &bufs[2 * *nl], &bufs[2 * *nl + 1]));
    }
    if (!with_code) return NAC_OK;
    nac_params_t *gp = nac_head_params(rm->g);
    NAC_TRY(host_layer(gp, "g.0.weight", "g.0.bias", &L[*nl], &bufs[2 * *nl], &bufs[2 * *nl + 1]));
    ++*nl;
    NAC_TRY(host_layer(gp, "g.2.weight", "g.2.bias", &L[*nl], &bufs[2 * *nl], &bufs[2 * *nl + 1]));
    ++*nl;
    return NAC_OK;
}

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void put_px(uint8_t *img, int n, int row, int col, uint8_t v) {
    if (row < 0 || row >= n || col < 0 || col >= n) return;
    for (int ch = 0; ch < 3; ch++) img[(size_t)ch * n * n + (size_t)row * n + col] = v;
}

/* Regions as colours (a hash of the region id, kept light), points on top: label 0 black,
 * others white with a black ring. ids (n, n), bottom row first. */
static nac_status draw_regions(const char *path, const int64_t *ids, int n, const float *box,
                               const float *pts, const int32_t *labels, int64_t np) {
    uint8_t *img = malloc((size_t)3 * n * n);
    if (!img) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    for (int iy = 0; iy < n; iy++)
        for (int ix = 0; ix < n; ix++) {
            uint64_t hsh = mix64((uint64_t)ids[(size_t)iy * n + ix]);
            int row = n - 1 - iy;
            for (int ch = 0; ch < 3; ch++)
                img[(size_t)ch * n * n + (size_t)row * n + ix] = (uint8_t)(96 + ((hsh >> (8 * ch)) & 0xFF) * 150 / 255);
        }
    for (int64_t i = 0; i < np; i++) {
        int col = (int)floorf((pts[2 * i] - box[0]) / (box[1] - box[0]) * (float)n);
        int row = n - 1 - (int)floorf((pts[2 * i + 1] - box[2]) / (box[3] - box[2]) * (float)n);
        bool white = labels[i] % 2 != 0;
        for (int dy = -2; dy <= 2; dy++)
            for (int dx = -2; dx <= 2; dx++) {
                int d2 = dx * dx + dy * dy;
                if (d2 > 5) continue;
                put_px(img, n, row + dy, col + dx, white && d2 <= 2 ? 255 : 0);
            }
    }
    nac_status s = nac_png_write(path, img, 3, n, n);
    free(img);
    return s;
}

/* Count the regions on the data and on the grid, of the network up to the code (drawn
 * into dir/<stage>.png) and of the encoder alone (dir/<stage>_encoder.png). */
static nac_status regions_measure(regions_model *rm, const regions_opts *o, const float *pts,
                                  const int32_t *labels, const float *box, const char *dir,
                                  const char *stage, regions_counts *c) {
    enum { MAXL = NAC_MLP_MAX_SIZES + 2 };
    nac_region_layer L[MAXL];
    float *bufs[2 * MAXL] = {0};
    int64_t *ids = malloc((size_t)o->grid * o->grid * sizeof *ids);
    nac_status s = ids ? NAC_OK : nac_error(NAC_ERR_NOMEM, "regions: out of memory");
    for (int pass = 0; s == NAC_OK && pass < 2; pass++) {
        bool code = pass == 0;
        int nl = 0;
        s = rmodel_layers(rm, o, code, L, bufs, &nl);
        nac_region_mlp mlp = {.nlayers = nl, .layers = L, .last_is_output = 0};
        if (s == NAC_OK) s = nac_regions_count(&mlp, pts, o->toy.n, NULL, code ? &c->data : &c->enc_data);
        if (s == NAC_OK)
            s = nac_regions_grid(&mlp, box[0], box[1], box[2], box[3], o->grid, o->grid, ids,
                                 code ? &c->grid : &c->enc_grid);
        char path[700];
        snprintf(path, sizeof path, "%s/%s%s.png", dir, stage, code ? "" : "_encoder");
        if (s == NAC_OK) s = draw_regions(path, ids, o->grid, box, pts, labels, o->toy.n);
        for (int i = 0; i < 2 * MAXL; i++) {
            free(bufs[i]);
            bufs[i] = NULL;
        }
    }
    free(ids);
    return s;
}

/* `steps` NAC steps: K points a step (a fresh random subset each step), two views each =
 * the point plus N(0, view_noise^2) noise, Adam at lr. The loss of each step goes to
 * loss_out (steps entries). */
static nac_status regions_train(regions_model *rm, const regions_opts *o, const float *pts, int k,
                                nac_run_t *run, float *loss_out) {
    nac_optim_config oc = nac_optim_defaults(NAC_OPT_ADAM);
    nac_optim_t opt;
    NAC_TRY(nac_optim_init(&opt, &oc));
    int64_t n = o->toy.n;
    int64_t *perm = malloc((size_t)n * sizeof *perm);
    float *xb = malloc((size_t)4 * k * sizeof *xb);
    nac_status s = perm && xb ? NAC_OK : nac_error(NAC_ERR_NOMEM, "regions: out of memory");
    for (int step = 0; s == NAC_OK && step < o->steps; step++) {
        nac_rng_t r;
        for (int64_t i = 0; i < n; i++) perm[i] = i;
        nac_rng_init(&r, nac_rng_key((uint64_t)o->seed, NAC_STREAM_SHUFFLE, (uint64_t)step, 0));
        nac_rng_shuffle(&r, perm, n);
        nac_rng_init(&r, nac_rng_key((uint64_t)o->seed, NAC_STREAM_AUGMENT, (uint64_t)step, 0));
        for (int v = 0; v < 2; v++)
            for (int i = 0; i < k; i++)
                for (int j = 0; j < 2; j++)
                    xb[((int64_t)v * k + i) * 2 + j] =
                        pts[perm[i] * 2 + j] + o->view_noise * (float)nac_rng_normal(&r);
        const nac_tensor_t *h = NULL, *og = NULL, *lr_ = NULL;
        s = nac_tensor_from_host(rm->x, xb);
        if (s == NAC_OK) s = nac_encoder_forward(rm->enc, rm->x, true, 2, &h);
        if (s == NAC_OK) s = nac_head_forward(rm->g, h, &og);
        if (s == NAC_OK) s = nac_head_forward(rm->r, h, &lr_);
        nac_loss_inputs in = {.o = og, .l = lr_,
                              .key = nac_rng_key((uint64_t)o->seed, NAC_STREAM_CHANNEL, (uint64_t)step, 0)};
        if (s == NAC_OK) s = nac_loss_forward(rm->loss, &in);
        if (s == NAC_OK) s = nac_loss_item(rm->loss, &loss_out[step]);
        if (s == NAC_OK && !isfinite(loss_out[step]))
            s = nac_error(NAC_ERR_NUMERIC, "regions: the NAC loss is %g at step %d (lower --lr)",
                          (double)loss_out[step], step);
        if (s == NAC_OK) s = nac_loss_backward(rm->loss);
        if (s == NAC_OK) s = nac_head_backward(rm->g, nac_loss_grad_o(rm->loss), rm->dh);
        if (s == NAC_OK) s = nac_head_backward(rm->r, nac_loss_grad_l(rm->loss), rm->dh_r);
        if (s == NAC_OK) s = nac_binary(NAC_BIN_ADD, rm->dh, rm->dh_r, rm->dh);
        if (s == NAC_OK) s = nac_encoder_backward(rm->enc, rm->dh, NULL);
        if (s == NAC_OK) s = nac_optim_step(&opt, &rm->all, o->lr);
        if (s == NAC_OK && (step % 10 == 0 || step + 1 == o->steps)) {
            cJSON *line = cJSON_CreateObject();
            cJSON_AddNumberToObject(line, "step", step);
            cJSON_AddNumberToObject(line, "loss", loss_out[step]);
            s = nac_run_log(run, line);
        }
    }
    free(perm);
    free(xb);
    return s;
}

static nac_status parse_sizes(const char *v, regions_opts *o) {
    float vals[NAC_MLP_MAX_SIZES];
    int n;
    NAC_TRY(opt_list("--sizes", v, 0, 4096, NAC_MLP_MAX_SIZES, vals, &n));
    if (n < 2 || vals[0] != 2)
        return nac_error(NAC_ERR_USAGE, "--sizes starts with the input size 2 and has at least one "
                         "layer, e.g. 2,32,32; got \"%s\"", v);
    for (int i = 0; i < n; i++) {
        if (vals[i] != floorf(vals[i]) || vals[i] < 1)
            return nac_error(NAC_ERR_USAGE, "--sizes holds whole numbers >= 1; got \"%s\"", v);
        o->sizes[i] = (int)vals[i];
    }
    o->nsizes = n;
    return NAC_OK;
}

static nac_status regions_parse(int argc, char **argv, regions_opts *o) {
    memset(o, 0, sizeof *o);
    o->toy.kind = NAC_TOY_MOONS;
    o->toy.n = 300;
    o->toy.nclasses = 4;
    float noise = -1;
    int n = 300;
    o->sizes[0] = 2, o->sizes[1] = 32, o->sizes[2] = 32, o->nsizes = 3;
    o->steps = 800;
    o->batch = 512;
    o->proj_dim = 128;
    o->grid = 400;
    o->lr = 3e-3f;
    o->p = 0.1f;
    o->view_noise = 0.02f;
    o->runs_dir = "runs";
    o->name = "regions";
    o->backend = "cpu";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac regions --help)", a);
        i++;
        if (!strcmp(a, "--data")) {
            if (!strcmp(v, "moons")) o->toy.kind = NAC_TOY_MOONS;
            else if (!strcmp(v, "circles")) o->toy.kind = NAC_TOY_CIRCLES;
            else if (!strcmp(v, "blobs")) o->toy.kind = NAC_TOY_GAUSSIANS;
            else return nac_error(NAC_ERR_USAGE, "--data is moons, circles or blobs; got \"%s\"", v);
        } else if (!strcmp(a, "--n")) NAC_TRY(opt_int(a, v, 4, 1 << 24, &n));
        else if (!strcmp(a, "--noise")) NAC_TRY(opt_float(a, v, 0, 10, false, &noise));
        else if (!strcmp(a, "--classes")) NAC_TRY(opt_int(a, v, 1, 64, &o->toy.nclasses));
        else if (!strcmp(a, "--sizes")) NAC_TRY(parse_sizes(v, o));
        else if (!strcmp(a, "--steps")) NAC_TRY(opt_int(a, v, 0, 10000000, &o->steps));
        else if (!strcmp(a, "--batch")) NAC_TRY(opt_int(a, v, 2, 1 << 20, &o->batch));
        else if (!strcmp(a, "--proj-dim")) NAC_TRY(opt_int(a, v, 1, 65536, &o->proj_dim));
        else if (!strcmp(a, "--grid")) NAC_TRY(opt_int(a, v, 8, 4096, &o->grid));
        else if (!strcmp(a, "--seed")) NAC_TRY(opt_int(a, v, 0, 2147483647, &o->seed));
        else if (!strcmp(a, "--threads")) NAC_TRY(opt_int(a, v, 0, 1024, &o->threads));
        else if (!strcmp(a, "--lr")) NAC_TRY(opt_float(a, v, 0, 10, true, &o->lr));
        else if (!strcmp(a, "--p")) NAC_TRY(opt_float(a, v, 0, 0.5, true, &o->p));
        else if (!strcmp(a, "--view-noise")) NAC_TRY(opt_float(a, v, 0, 10, false, &o->view_noise));
        else if (!strcmp(a, "--runs-dir")) o->runs_dir = v;
        else if (!strcmp(a, "--name")) o->name = v;
        else if (!strcmp(a, "--backend")) o->backend = v;
        else return nac_error(NAC_ERR_USAGE, "unknown option \"%s\" (see nac regions --help)", a);
    }
    if (o->p >= 0.5f) return nac_error(NAC_ERR_USAGE, "--p must lie in (0, 0.5)");
    o->toy.n = n;
    o->toy.noise = noise >= 0 ? noise : o->toy.kind == NAC_TOY_MOONS ? 0.1f
                                         : o->toy.kind == NAC_TOY_CIRCLES ? 0.05f : 0.3f;
    o->toy.factor = 0.5f;
    o->toy.seed = (uint64_t)o->seed;
    return NAC_OK;
}

static const char *toy_name(nac_toy_kind k) {
    return k == NAC_TOY_MOONS ? "moons" : k == NAC_TOY_CIRCLES ? "circles" : "blobs";
}

static cJSON *counts_json(const regions_counts *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "data_regions", (double)c->data);
    cJSON_AddNumberToObject(o, "grid_regions", (double)c->grid);
    cJSON_AddNumberToObject(o, "encoder_data_regions", (double)c->enc_data);
    cJSON_AddNumberToObject(o, "encoder_grid_regions", (double)c->enc_grid);
    return o;
}

static nac_status run_regions(int argc, char **argv) {
    regions_opts o;
    NAC_TRY(regions_parse(argc, argv, &o));
    int64_t n = o.toy.n;
    int k = o.batch < n ? o.batch : (int)n;
    float *pts = malloc((size_t)n * 2 * sizeof *pts), *losses = malloc((size_t)(o.steps + 1) * sizeof *losses);
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    if (!pts || !labels || !losses) {
        free(pts);
        free(labels);
        free(losses);
        return nac_error(NAC_ERR_NOMEM, "regions: out of memory (%" PRId64 " points)", n);
    }
    nac_run_t run = {0};
    regions_model rm = {0};
    regions_counts before = {0}, after = {0};
    nac_status s = nac_toy_generate(&o.toy, pts, labels);
    /* the box: the data's bounding box with a quarter of its extent around it */
    float box[4] = {INFINITY, -INFINITY, INFINITY, -INFINITY};
    for (int64_t i = 0; i < n; i++) {
        box[0] = fminf(box[0], pts[2 * i]);
        box[1] = fmaxf(box[1], pts[2 * i]);
        box[2] = fminf(box[2], pts[2 * i + 1]);
        box[3] = fmaxf(box[3], pts[2 * i + 1]);
    }
    float ex = box[1] - box[0], ey = box[3] - box[2], e = fmaxf(fmaxf(ex, ey), 1e-3f);
    float cx = 0.5f * (box[0] + box[1]), cy = 0.5f * (box[2] + box[3]);
    box[0] = cx - 0.75f * e, box[1] = cx + 0.75f * e, box[2] = cy - 0.75f * e, box[3] = cy + 0.75f * e;
    if (s == NAC_OK) s = nac_run_create(o.runs_dir, o.name, &run);
    if (s == NAC_OK) s = rmodel_create(&o, k, &rm);
    if (s == NAC_OK) s = regions_measure(&rm, &o, pts, labels, box, run.dir, "before", &before);
    if (s == NAC_OK) s = regions_train(&rm, &o, pts, k, &run, losses);
    if (s == NAC_OK) s = regions_measure(&rm, &o, pts, labels, box, run.dir, "after", &after);
    if (s == NAC_OK) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "eval", "linear_regions");
        cJSON_AddStringToObject(d, "data", toy_name(o.toy.kind));
        cJSON_AddNumberToObject(d, "points", (double)n);
        cJSON_AddNumberToObject(d, "noise", f2d(o.toy.noise));
        cJSON *sz = cJSON_AddArrayToObject(d, "sizes");
        for (int i = 0; i < o.nsizes; i++) cJSON_AddItemToArray(sz, cJSON_CreateNumber(o.sizes[i]));
        cJSON_AddNumberToObject(d, "proj_dim", o.proj_dim);
        cJSON_AddNumberToObject(d, "steps", o.steps);
        cJSON_AddNumberToObject(d, "batch", k);
        cJSON_AddStringToObject(d, "optimizer", "adam");
        cJSON_AddNumberToObject(d, "lr", f2d(o.lr));
        cJSON_AddNumberToObject(d, "p", f2d(o.p));
        cJSON_AddNumberToObject(d, "view_noise", f2d(o.view_noise));
        cJSON_AddNumberToObject(d, "seed", o.seed);
        cJSON_AddNumberToObject(d, "grid", o.grid);
        cJSON *b = cJSON_AddArrayToObject(d, "box");
        for (int i = 0; i < 4; i++) cJSON_AddItemToArray(b, cJSON_CreateNumber(f2d(box[i])));
        if (o.steps > 0) {
            cJSON_AddNumberToObject(d, "loss_first", f2d(losses[0]));
            cJSON_AddNumberToObject(d, "loss_last", f2d(losses[o.steps - 1]));
        }
        cJSON_AddItemToObject(d, "before", counts_json(&before));
        cJSON_AddItemToObject(d, "after", counts_json(&after));
        s = nac_run_write_json(&run, "regions_results.json", d);
        cJSON_Delete(d);
    }
    if (s == NAC_OK) {
        printf("linear regions of a ReLU MLP (");
        for (int i = 0; i < o.nsizes; i++) printf("%s%d", i ? "-" : "", o.sizes[i]);
        printf(") on %s (%" PRId64 " points), %d NAC steps:\n", toy_name(o.toy.kind), n, o.steps);
        printf("  network up to the code: %" PRId64 " -> %" PRId64 " regions on the data, %" PRId64
               " -> %" PRId64 " on the %dx%d grid\n", before.data, after.data, before.grid, after.grid,
               o.grid, o.grid);
        printf("  encoder hidden units:   %" PRId64 " -> %" PRId64 " on the data, %" PRId64 " -> %" PRId64
               " on the grid\n", before.enc_data, after.enc_data, before.enc_grid, after.enc_grid);
        if (o.steps > 0)
            printf("  NAC loss %.4f -> %.4f\n", (double)losses[0], (double)losses[o.steps - 1]);
        printf("wrote %s/before.png, after.png (and *_encoder.png), regions_results.json\n", run.dir);
    }
    rmodel_free(&rm);
    nac_run_close(&run);
    free(pts);
    free(labels);
    free(losses);
    return s;
}

/* ---- the command table entries ---- */

const nac_command nac_cmd_probe = {
    "probe",
    "linear-probe accuracy of a pretrained encoder (lr searched on a validation split)",
    "probe RUN|ENCODER [--epochs N] [--lrs a,b,..] [--val-frac F] [--probe-batch N] [--standardize]\n"
    "       " EVAL_OPTS_USAGE,
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
    "                        (not the paper's protocol; for badly scaled features)\n" EVAL_OPTS_HELP,
    run_probe,
    NULL,
};

const nac_command nac_cmd_knn = {
    "knn",
    "weighted kNN accuracy of a pretrained encoder's features",
    "knn RUN|ENCODER [--k N] [--temperature T]\n       " EVAL_OPTS_USAGE,
    "Each test image's k nearest training images (cosine similarity of the features) vote\n"
    "for their class with weight exp(similarity / T) (InstDisc). Writes knn_results.json\n"
    "(top-1, top-5).\n"
    "  --k N                 neighbours (200)\n"
    "  --temperature T       T (0.1)\n" EVAL_OPTS_HELP,
    run_knn,
    NULL,
};

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

const nac_command nac_cmd_regions = {
    "regions",
    "linear regions of a ReLU MLP on 2-D toy data before and after NAC training",
    "regions [--data moons|circles|blobs] [--n N] [--noise S] [--classes N] [--sizes 2,32,32]\n"
    "        [--steps N] [--batch K] [--lr F] [--p F] [--view-noise S] [--proj-dim D]\n"
    "        [--grid N] [--seed N] [--runs-dir DIR] [--name NAME] [--backend cpu|cuda]\n"
    "        [--threads N]",
    "Paper Figure 1: a ReLU MLP encoder (--sizes: input 2, then each layer's width) with the\n"
    "heads g and r is trained with the NAC objective (Adam) on two views of the toy points\n"
    "(each point plus N(0, view-noise^2) noise). Before and after, the distinct activation\n"
    "patterns are counted on the data and on a grid x grid lattice over the data's box: of\n"
    "the network up to the code (the encoder's hidden units, g's hidden units and the code\n"
    "bits c = sign(o), the patterns NAC makes distinct) and of the encoder's hidden units\n"
    "alone. The regions are drawn (each its own colour; label-0 points black, others white)\n"
    "into before.png / after.png (network) and before_encoder.png / after_encoder.png of a\n"
    "new run folder RUNS_DIR/NAME (runs/regions), with regions_results.json and the loss in\n"
    "metrics.jsonl.\n"
    "  --data                moons (default), circles or blobs (--classes Gaussian blobs, 4)\n"
    "  --n, --noise          points (300) and their noise (0.1 moons, 0.05 circles, 0.3 blobs)\n"
    "  --sizes               the encoder MLP (2,32,32); g and r are Linear(F,F)+ReLU+Linear(F,D)\n"
    "  --steps, --batch      NAC steps (800) and points a step (512, at most all of them)\n"
    "  --lr, --p             Adam rate (0.003) and NAC flip probability (0.1)\n"
    "  --view-noise          std of the view noise (0.02); --proj-dim D code length (128)\n"
    "  --grid N              grid resolution, also the PNG size (400)\n",
    run_regions,
    NULL,
};
