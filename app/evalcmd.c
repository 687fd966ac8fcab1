/* The encoder-evaluation commands' shared half (evalcmd.h): options, the encoder file and
 * its data, features, projections and results files. */
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
#include "eval/features.h"
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

nac_status ev_opt_int(const char *opt, const char *v, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return nac_error(NAC_ERR_USAGE, "%s needs an integer in %ld..%ld, got \"%s\"", opt, lo, hi, v);
    *out = (int)x;
    return NAC_OK;
}

nac_status ev_opt_float(const char *opt, const char *v, double lo, double hi, bool excl_lo,
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
nac_status ev_opt_list(const char *opt, const char *v, double lo, double hi, int max,
                           float *vals, int *n) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", v);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == max) return nac_error(NAC_ERR_USAGE, "%s takes at most %d values", opt, max);
        NAC_TRY(ev_opt_float(opt, tok, lo, hi, true, &vals[(*n)++]));
    }
    if (*n == 0) return nac_error(NAC_ERR_USAGE, "%s needs a comma-separated list of numbers", opt);
    return NAC_OK;
}


void ev_eval_opts_defaults(eval_opts *o) {
    memset(o, 0, sizeof *o);
    o->backend = "cpu";
    o->batch = 256;
    o->baselines = true;
    o->recal_images = 10000;
}



/* Consume argv[*i] (and its value) if it is a common option; *used says whether it was. */
nac_status ev_eval_opt(eval_opts *o, int argc, char **argv, int *i, bool *used) {
    const char *a = argv[*i];
    *used = true;
    bool has = *i + 1 < argc;
    const char *v = has ? argv[*i + 1] : NULL;
    if (!strcmp(a, "--no-baselines")) {
        o->baselines = false;
        return NAC_OK;
    }
    static const char *const with_value[] = {"--recal-images", "--out", "--data", "--dataset", "--batch", "--seed",
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
    else if (!strcmp(a, "--batch")) return ev_opt_int(a, v, 1, 1 << 20, &o->batch);
    else if (!strcmp(a, "--seed")) return ev_opt_int(a, v, 0, 2147483647, &o->seed);
    else if (!strcmp(a, "--train-per-class")) return ev_opt_int(a, v, 0, 1 << 30, &o->train_per_class);
    else if (!strcmp(a, "--test-per-class")) return ev_opt_int(a, v, 0, 1 << 30, &o->test_per_class);
    else if (!strcmp(a, "--recal-images")) return ev_opt_int(a, v, 1, 1 << 30, &o->recal_images);
    else return ev_opt_int(a, v, 0, 1024, &o->threads);
    return NAC_OK;
}

/* An option the command did not take: one it knows but without its value, or unknown. */
nac_status ev_bad_option(const char *a, const char *known, const char *cmd) {
    char pat[64];
    snprintf(pat, sizeof pat, "|%s|", a);
    if (strstr(known, pat)) return nac_error(NAC_ERR_USAGE, "%s needs a value", a);
    return nac_error(NAC_ERR_USAGE, "unknown option \"%s\" (see nac %s --help)", a, cmd);
}

nac_status ev_positional(eval_opts *o, const char *a, const char *cmd) {
    if (a[0] == '-' || o->target)
        return nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac %s --help)", a, cmd);
    o->target = a;
    return NAC_OK;
}

/* ---- the encoder under evaluation and its data ---- */


nac_status ev_world_open(eval_opts *o) {
    nac_comm_t *comm;
    NAC_TRY(nac_comm_world(&comm));
    if (nac_comm_size(comm) > 1) o->comm = comm;
    else nac_comm_free(comm);
    return NAC_OK;
}

nac_status ev_world_close(eval_opts *o, const char *cmd, nac_status s) {
    if (o->comm) nac_run_rank_failed(o->comm, cmd, s);
    nac_comm_free(o->comm);
    o->comm = NULL;
    return s;
}

void ev_model_free(eval_model *m) {
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

nac_status ev_model_open(eval_model *m, const eval_opts *o, const char *cmd) {
    memset(m, 0, sizeof *m);
    m->comm = o->comm;
    m->lead = nac_comm_rank(o->comm) == 0;
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
    if (s != NAC_OK) ev_model_free(m);
    return s;
}

static void progress_cb(void *ctx, int64_t done, int64_t total) {
    if (done < total) nac_progress_update(ctx, done, NULL);
}

/* Features (n, dim) of every image of ds, evaluation mode, normalised, no augmentation:
 * through enc, or the pixels themselves when enc is NULL. */
static nac_status features_with(eval_model *m, nac_encoder_t *enc, const nac_dataset_t *ds,
                                int batch, const char *label, float **out, int64_t *dim) {
    if (!m->lead) /* its slice, quietly */
        return nac_features_compute_comm(m->comm, enc, ds, m->mean, m->std, batch, NULL, NULL, out, dim);
    nac_progress_t prog;
    nac_progress_start(&prog, label, ds->n, 0);
    nac_status s = nac_features_compute_comm(m->comm, enc, ds, m->mean, m->std, batch, progress_cb,
                                             &prog, out, dim);
    if (s == NAC_OK) nac_progress_finish(&prog, NULL);
    return s;
}

nac_status ev_features_of(eval_model *m, const nac_dataset_t *ds, int batch, const char *label,
                          float **out) {
    int64_t dim;
    return features_with(m, m->enc, ds, batch, label, out, &dim);
}

const char *const ev_row_names[EV_NROWS] = {"encoder", "pixels", "random_bn"};

nac_status ev_row_features(eval_model *m, const eval_opts *o, int row, float **tr, float **te,
                           int64_t *dim) {
    *tr = *te = NULL;
    nac_encoder_t *enc = row == EV_ROW_PIXELS ? NULL : m->enc, *rnd = NULL;
    if (row == EV_ROW_RANDOM) {
        NAC_TRY(nac_features_random_encoder(m->be, nac_encoder_get_config(m->enc), &m->train, m->mean,
                                            m->std, o->recal_images, o->batch, &rnd));
        enc = rnd;
    }
    char l1[64], l2[64];
    snprintf(l1, sizeof l1, "%s train features", ev_row_names[row]);
    snprintf(l2, sizeof l2, "%s test features", ev_row_names[row]);
    nac_status s = features_with(m, enc, &m->train, o->batch, l1, tr, dim);
    if (s == NAC_OK) s = features_with(m, enc, &m->test, o->batch, l2, te, dim);
    nac_encoder_free(rnd);
    if (s != NAC_OK) {
        free(*tr);
        free(*te);
        *tr = *te = NULL;
    }
    return s;
}

void ev_baselines_json(cJSON *doc, const eval_opts *o, int nrows, const int64_t *dims,
                       const double *top1, const double *top5, const double *lr,
                       const double *train_top1) {
    if (nrows < 2) return;
    cJSON *b = cJSON_AddObjectToObject(doc, "baselines");
    for (int k = 1; k < nrows; k++) {
        cJSON *e = cJSON_AddObjectToObject(b, ev_row_names[k]);
        cJSON_AddNumberToObject(e, "features", (double)dims[k]);
        if (lr) cJSON_AddNumberToObject(e, "lr", lr[k]);
        if (train_top1) cJSON_AddNumberToObject(e, "train_top1", train_top1[k]);
        cJSON_AddNumberToObject(e, "top1", top1[k]);
        cJSON_AddNumberToObject(e, "top5", top5[k]);
    }
    cJSON_AddNumberToObject(doc, "recal_images", o->recal_images);
}

void ev_print_rows(const char *what, int nrows, const double *top1, const double *top5,
                   const int64_t *dims) {
    printf("%-10s %9s %8s %8s\n", what, "features", "top-1", "top-5");
    for (int k = 0; k < nrows; k++)
        printf("%-10s %9" PRId64 " %7.2f%% %7.2f%%\n", ev_row_names[k], dims[k], 100 * top1[k],
               100 * top5[k]);
}

/* o = g(h) / sqrt(D) for n rows of h (n, F) into o (n, D), `batch` rows at a time. */
nac_status ev_project(eval_model *m, const float *h, int64_t n, int batch, float *o) {
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

void ev_results_path(const eval_model *m, const eval_opts *o, const char *name, char *buf,
                         size_t n) {
    if (o->out) snprintf(buf, n, "%s", o->out);
    else snprintf(buf, n, "%s/%s", m->dir, name);
}

nac_status ev_write_json(const char *path, const cJSON *doc) {
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
double ev_f2d(float x) {
    char b[32];
    snprintf(b, sizeof b, "%.7g", (double)x);
    return strtod(b, NULL);
}

/* The header every results file shares. */
cJSON *ev_results_doc(const eval_model *m, const char *what) {
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

cJSON *ev_class_names(const nac_dataset_t *ds) {
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; k < ds->nclasses; k++) cJSON_AddItemToArray(a, cJSON_CreateString(ds->class_names[k]));
    return a;
}

nac_status ev_ensure_dir(const char *dir) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return nac_error(NAC_ERR_IO, "cannot create folder %s: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return nac_error(NAC_ERR_IO, "%s is not a folder", dir);
    return NAC_OK;
}
