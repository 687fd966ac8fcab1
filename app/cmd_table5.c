/* `nac table5 -c CONFIG`: the paper's Table 5. For each initialisation (random, simclr,
 * mocov2, nac; each pretrained here or taken from a given checkpoint) train a VAE from the
 * encoder and evaluate it; print the table and write results.json and results.md. A failed
 * row is reported as failed and the others still run; running the same config again
 * continues in the same folder and keeps the rows already finished. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/app.h"
#include "app/table5.h"
#include "nn/safetensors.h"

#define NROWS 4
static const char *const row_names[NROWS] = {"random", "simclr", "mocov2", "nac"};

typedef struct t5_config {
    char description[256];
    char rows[64];                    /* comma-separated subset of random,simclr,mocov2,nac */
    char ckpt[NROWS][512];            /* given encoder checkpoints ("" = pretrain here) */
    nac_pretrain_config pre;          /* shared pretraining settings */
    double nac_p, simclr_tau, moco_tau, moco_ema;
    int moco_queue;
    nac_vae_train_config vae;
    char runs_dir[256], name[64];
} t5_config;

#define T nac_vae_train_config
#define F(k, m) NAC_CFG_FLOAT_F(t5_config, k, m
static const nac_cfg_field t5_fields[] = {
    NAC_CFG_STR_F(t5_config, "description", description, NULL, "free text"),
    NAC_CFG_STR_F(t5_config, "rows", rows, NULL, "initialisations, comma-separated"),
    NAC_CFG_STR_F(t5_config, "checkpoints.simclr", ckpt[1], NULL, "given SimCLR encoder (\"\": pretrain)"),
    NAC_CFG_STR_F(t5_config, "checkpoints.mocov2", ckpt[2], NULL, "given MoCo-v2 encoder (\"\": pretrain)"),
    NAC_CFG_STR_F(t5_config, "checkpoints.nac", ckpt[3], NULL, "given NAC encoder (\"\": pretrain)"),
    NAC_CFG_STR_F(t5_config, "data.dataset", pre.dataset, "fashion-mnist|mnist|cifar10|synthetic", "dataset"),
    NAC_CFG_STR_F(t5_config, "data.path", pre.data_path, NULL, "dataset folder"),
    NAC_CFG_INT_F(t5_config, "data.synthetic_n", pre.synthetic_n, 100, 1e7, "synthetic images"),
    NAC_CFG_INT_F(t5_config, "data.test_limit", vae.test_limit, 0, 1e7, "test images evaluated (0: all)"),
    NAC_CFG_STR_F(t5_config, "model.arch", pre.arch, "resnet18|resnet34|resnet50|vgg16_bn", "encoder"),
    F("model.width_mult", pre.width_mult), 0, 4, true, false, "width multiplier"),
    NAC_CFG_INT_F(t5_config, "pretrain.per_class", pre.per_class, 0, 1e7, "pretraining images a class (0: all)"),
    NAC_CFG_INT_F(t5_config, "pretrain.epochs", pre.epochs, 1, 1e6, "pretraining epochs"),
    NAC_CFG_INT_F(t5_config, "pretrain.batch", pre.batch, 2, 1e6, "pretraining images a step"),
    NAC_CFG_STR_F(t5_config, "pretrain.optim", pre.optim, "lars|sgd|adam|adamw", "pretraining optimiser"),
    F("pretrain.lr", pre.lr), 0, 1e4, true, false, "pretraining base lr"),
    F("pretrain.weight_decay", pre.weight_decay), 0, 1, false, false, "pretraining weight decay"),
    NAC_CFG_INT_F(t5_config, "pretrain.warmup_epochs", pre.warmup_epochs, 0, 1e6, "warm-up epochs"),
    F("pretrain.crop_min", pre.crop_min), 0, 1, true, false, "RandomResizedCrop min scale"),
    F("pretrain.nac_p", nac_p), 0, 0.5, true, true, "NAC flip probability"),
    F("pretrain.simclr_tau", simclr_tau), 0, 100, true, false, "SimCLR temperature"),
    F("pretrain.moco_tau", moco_tau), 0, 100, true, false, "MoCo-v2 temperature"),
    F("pretrain.moco_ema", moco_ema), 0, 1, false, true, "MoCo-v2 momentum"),
    NAC_CFG_INT_F(t5_config, "pretrain.moco_queue", moco_queue, 2, 1e7, "MoCo-v2 queue"),
    NAC_CFG_INT_F(t5_config, "vae.per_class", vae.per_class, 0, 1e7, "VAE training images a class (0: all)"),
    NAC_CFG_INT_F(t5_config, "vae.latent", vae.latent, 1, 4096, "latent size"),
    NAC_CFG_INT_F(t5_config, "vae.dec_width", vae.dec_width, 1, 1024, "decoder base width"),
    NAC_CFG_INT_F(t5_config, "vae.dec_blocks", vae.dec_blocks, 1, 16, "decoder blocks a stage"),
    NAC_CFG_STR_F(t5_config, "vae.likelihood", vae.likelihood, "logistic|gaussian|bernoulli", "likelihood"),
    F("vae.lr", vae.lr), 0, 10, true, false, "Adam lr"),
    F("vae.head_lr_mult", vae.head_lr_mult), 0, 1e4, true, false, "posterior head lr multiplier"),
    NAC_CFG_INT_F(t5_config, "vae.freeze_epochs", vae.freeze_epochs, 0, 1e6, "body frozen first"),
    NAC_CFG_BOOL_F(t5_config, "vae.freeze_body", vae.freeze_body, "body frozen throughout"),
    NAC_CFG_INT_F(t5_config, "vae.kl_warmup_epochs", vae.kl_warmup_epochs, 0, 1e6, "KL warm-up epochs"),
    NAC_CFG_INT_F(t5_config, "vae.epochs", vae.epochs, 1, 1e6, "VAE epochs"),
    NAC_CFG_INT_F(t5_config, "vae.batch", vae.batch, 2, 1e6, "VAE batch"),
    NAC_CFG_INT_F(t5_config, "eval.k", vae.is_k, 1, 1e6, "importance samples"),
    NAC_CFG_INT_F(t5_config, "eval.chunk", vae.is_chunk, 1, 1e6, "samples decoded at once"),
    NAC_CFG_INT_F(t5_config, "eval.batch", vae.eval_batch, 1, 1e5, "test images a batch"),
    NAC_CFG_INT_F(t5_config, "train.seed", pre.seed, 0, 2147483647, "seed"),
    NAC_CFG_INT_F(t5_config, "train.threads", pre.threads, 0, 1024, "compute threads (0: all)"),
    NAC_CFG_INT_F(t5_config, "train.workers", pre.workers, 0, 64, "loader threads"),
    NAC_CFG_STR_F(t5_config, "train.backend", pre.backend, "cpu|cuda", "backend"),
    NAC_CFG_STR_F(t5_config, "run.dir", runs_dir, NULL, "folder of run folders"),
    NAC_CFG_STR_F(t5_config, "run.name", name, NULL, "run folder name"),
};
#undef F
#undef T
static const nac_cfg_schema t5_schema = {t5_fields, sizeof t5_fields / sizeof *t5_fields, NULL};

static void t5_defaults(t5_config *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->rows, "random,simclr,mocov2,nac");
    nac_pretrain_defaults(&c->pre);
    nac_vae_train_defaults(&c->vae);
    c->nac_p = 0.1;
    c->simclr_tau = 0.5;
    c->moco_tau = 0.2;
    c->moco_ema = 0.99;
    c->moco_queue = 4096;
    strcpy(c->runs_dir, "runs");
    strcpy(c->name, "table5");
}

static void print_t5_keys(void) {
    t5_config d;
    t5_defaults(&d);
    nac_config_print_help(&t5_schema, &d);
}

typedef struct row_result {
    bool wanted, ok, resumed;
    char error[512];
    cJSON *json;
    nac_vae_train_result r;
} row_result;

/* The row's pretraining config, from the shared settings. */
static void row_pretrain_config(const t5_config *c, int row, nac_pretrain_config *p) {
    *p = c->pre;
    snprintf(p->objective, sizeof p->objective, "%s", row_names[row]);
    p->p = c->nac_p;
    p->tau = row == 1 ? c->simclr_tau : c->moco_tau;
    p->ema = c->moco_ema;
    p->queue = c->moco_queue;
    p->stats_every = 1;
    p->ckpt_every = p->epochs;
}

static nac_status subrun(const char *parent, const char *name, const nac_cfg_schema *schema,
                         const void *cfg, nac_run_t *run, bool *existed, char **json_text) {
    memset(run, 0, sizeof *run);
    snprintf(run->dir, sizeof run->dir, "%s/%s", parent, name);
    *existed = mkdir(run->dir, 0777) != 0;
    if (*existed && errno != EEXIST)
        return nac_error(NAC_ERR_IO, "cannot create %s: %s", run->dir, strerror(errno));
    cJSON *doc = nac_config_to_json(schema, cfg);
    *json_text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    nac_status s = *json_text ? NAC_OK : nac_error(NAC_ERR_NOMEM, "out of memory");
    char path[700];
    if (s == NAC_OK) s = nac_run_write_json(run, "config.json", doc);
    cJSON_Delete(doc);
    if (s == NAC_OK) {
        run->metrics = fopen(nac_run_path(run, "metrics.jsonl", path, sizeof path), "a");
        if (!run->metrics) s = nac_error(NAC_ERR_IO, "cannot open %s", path);
    }
    return s;
}

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* One row: pretrain (unless given or finished), then the VAE (unless finished). */
static nac_status run_row(const t5_config *c, const char *dir, int row, row_result *out) {
    char enc[512] = "";
    char path[700];
    if (row > 0) {
        if (c->ckpt[row][0]) {
            snprintf(enc, sizeof enc, "%s", c->ckpt[row]);
        } else {
            nac_pretrain_config p;
            row_pretrain_config(c, row, &p);
            char name[64];
            snprintf(name, sizeof name, "pretrain-%s", row_names[row]);
            nac_run_t run;
            bool existed;
            char *text = NULL;
            nac_status s = subrun(dir, name, &nac_pretrain_schema, &p, &run, &existed, &text);
            if (snprintf(enc, sizeof enc, "%s/encoder.safetensors", run.dir) >= (int)sizeof enc)
                s = nac_error(NAC_ERR_USAGE, "run folder path %s is too long", run.dir);
            if (s == NAC_OK && !file_exists(enc)) {
                bool resume = existed && file_exists(nac_run_path(&run, "checkpoint.safetensors", path, sizeof path));
                printf("[%s] pretraining (%s) in %s\n", row_names[row], resume ? "resumed" : "new", run.dir);
                nac_pretrain_result pr;
                s = nac_app_pretrain(&p, text, &run, resume, &pr);
            }
            free(text);
            nac_run_close(&run);
            NAC_TRY(s);
        }
    }
    nac_vae_train_config v = c->vae;
    snprintf(v.dataset, sizeof v.dataset, "%s", c->pre.dataset);
    snprintf(v.data_path, sizeof v.data_path, "%s", c->pre.data_path);
    v.synthetic_n = c->pre.synthetic_n;
    snprintf(v.arch, sizeof v.arch, "%s", c->pre.arch);
    v.width_mult = c->pre.width_mult;
    snprintf(v.encoder, sizeof v.encoder, "%s", enc);
    snprintf(v.init_name, sizeof v.init_name, "%s", row_names[row]);
    v.seed = c->pre.seed;
    v.threads = c->pre.threads;
    v.workers = c->pre.workers;
    snprintf(v.backend, sizeof v.backend, "%s", c->pre.backend);
    v.ckpt_every = v.epochs;
    char name[64];
    snprintf(name, sizeof name, "vae-%s", row_names[row]);
    nac_run_t run;
    bool existed;
    char *text = NULL;
    nac_status s = subrun(dir, name, &nac_vae_schema, &v, &run, &existed, &text);
    const char *results = nac_run_path(&run, "results.json", path, sizeof path);
    if (s == NAC_OK && existed && file_exists(results)) {
        char *doc;
        s = nac_read_text_file(results, &doc, NULL);
        if (s == NAC_OK) {
            out->json = cJSON_Parse(doc);
            free(doc);
            if (!out->json) s = nac_error(NAC_ERR_DATA, "%s: not valid JSON", results);
        }
        out->resumed = true;
        printf("[%s] finished earlier: %s\n", row_names[row], results);
    } else if (s == NAC_OK) {
        char vae_ckpt[700];
        bool resume = existed && file_exists(nac_run_path(&run, "vae.safetensors", vae_ckpt, sizeof vae_ckpt));
        printf("[%s] VAE training (%s) in %s\n", row_names[row], resume ? "resumed" : "new", run.dir);
        s = nac_app_vae(&v, text, &run, resume, row_names[row], &out->r);
        if (s == NAC_OK) out->json = nac_vae_result_json(&v, &out->r);
    }
    free(text);
    nac_run_close(&run);
    return s;
}

static double jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0 / 0.0;
}

static nac_status write_tables(const t5_config *c, const char *dir, row_result *rows) {
    char *md = NULL;
    size_t mdn = 0;
    FILE *f = open_memstream(&md, &mdn);
    if (!f) return nac_error(NAC_ERR_NOMEM, "out of memory");
    fprintf(f, "# Table 5 (%s, %s width x%g, latent %d, %s likelihood, K = %d importance samples)\n\n",
            c->pre.dataset, c->pre.arch, c->pre.width_mult, c->vae.latent, c->vae.likelihood,
            c->vae.is_k);
    fprintf(f, "| Encoder | log-likelihood (nats) | KL (nats) | bits/dim | active units |\n");
    fprintf(f, "|---|---|---|---|---|\n");
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "rows");
    for (int i = 0; i < NROWS; i++) {
        if (!rows[i].wanted) continue;
        cJSON *o = rows[i].json ? cJSON_Duplicate(rows[i].json, 1) : cJSON_CreateObject();
        if (!rows[i].ok) {
            cJSON_AddStringToObject(o, "init", row_names[i]);
            cJSON_AddStringToObject(o, "status", "failed");
            cJSON_AddStringToObject(o, "error", rows[i].error);
            fprintf(f, "| %s | failed: %s | | | |\n", row_names[i], rows[i].error);
        } else {
            cJSON_AddStringToObject(o, "status", "ok");
            fprintf(f, "| %s | %.2f ± %.2f | %.2f | %.4f | %.0f / %d |\n", row_names[i],
                    jnum(o, "log_likelihood_nats"), jnum(o, "log_likelihood_se"), jnum(o, "kl_nats"),
                    jnum(o, "bits_per_dim"), jnum(o, "active_units"), c->vae.latent);
        }
        cJSON_AddItemToArray(arr, o);
    }
    fclose(f);
    printf("\n%s\n", md);
    nac_run_t run;
    memset(&run, 0, sizeof run);
    snprintf(run.dir, sizeof run.dir, "%s", dir);
    char path[700];
    nac_status s = nac_run_write_json(&run, "results.json", doc);
    if (s == NAC_OK) s = nac_write_file_atomic(nac_run_path(&run, "results.md", path, sizeof path), md, mdn);
    cJSON_Delete(doc);
    free(md);
    return s;
}

static nac_status run_table5(int argc, char **argv) {
    const char *config = NULL;
    char *ov[64];
    int nov = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) config = argv[++i];
        else if (strchr(argv[i], '=') && argv[i][0] != '-' && nov < 64) ov[nov++] = argv[i];
        else return nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac table5 --help)", argv[i]);
    }
    if (!config) return nac_error(NAC_ERR_USAGE, "give -c CONFIG");
    t5_config c;
    t5_defaults(&c);
    NAC_TRY(nac_config_load(config, &t5_schema, nov, ov, &c));
    row_result rows[NROWS];
    memset(rows, 0, sizeof rows);
    char list[64];
    snprintf(list, sizeof list, "%s", c.rows);
    for (char *tok = strtok(list, ", "); tok; tok = strtok(NULL, ", ")) {
        int k = -1;
        for (int i = 0; i < NROWS; i++)
            if (!strcmp(tok, row_names[i])) k = i;
        if (k < 0)
            return nac_error(NAC_ERR_CONFIG, "%s: \"rows\" names \"%s\"; known: random, simclr, mocov2, nac",
                             config, tok);
        rows[k].wanted = true;
    }
    /* the run folder: created, or continued when it holds this very config */
    cJSON *doc = nac_config_to_json(&t5_schema, &c);
    char *text = cJSON_PrintUnformatted(doc);
    char dir[512], path[700];
    if (snprintf(dir, sizeof dir, "%s/%s", c.runs_dir, c.name) >= (int)sizeof dir)
        return nac_error(NAC_ERR_CONFIG, "%s: run.dir/run.name is too long", config);
    nac_run_t top;
    memset(&top, 0, sizeof top);
    snprintf(top.dir, sizeof top.dir, "%s", dir);
    nac_status s = NAC_OK;
    if (file_exists(nac_run_path(&top, "config.json", path, sizeof path))) {
        char *old = NULL;
        s = nac_read_text_file(path, &old, NULL);
        cJSON *oj = s == NAC_OK ? cJSON_Parse(old) : NULL;
        free(old);
        if (s == NAC_OK && (!oj || !cJSON_Compare(oj, doc, 1)))
            s = nac_error(NAC_ERR_CONFIG, "%s holds a table5 run with another config; set run.name to start a new one",
                          dir);
        cJSON_Delete(oj);
        if (s == NAC_OK) printf("continuing %s (finished rows are kept)\n", dir);
    } else {
        nac_run_t created;
        s = nac_run_create(c.runs_dir, c.name, &created);
        if (s == NAC_OK) {
            memcpy(dir, created.dir, sizeof dir);
            dir[sizeof dir - 1] = 0;
            snprintf(top.dir, sizeof top.dir, "%s", dir);
            s = nac_run_write_json(&created, "config.json", doc);
            nac_run_close(&created);
        }
    }
    free(text);
    cJSON_Delete(doc);
    NAC_TRY(s);
    printf("run folder: %s\n", dir);
    int failed = 0;
    for (int i = 0; i < NROWS; i++) {
        if (!rows[i].wanted) continue;
        nac_status rs = run_row(&c, dir, i, &rows[i]);
        rows[i].ok = rs == NAC_OK;
        if (rs == NAC_ERR_INTERRUPTED) {
            write_tables(&c, dir, rows);
            return rs;
        }
        if (!rows[i].ok) {
            snprintf(rows[i].error, sizeof rows[i].error, "%s", nac_last_error());
            fprintf(stderr, "[%s] failed: %s\n", row_names[i], rows[i].error);
            failed++;
        }
    }
    s = write_tables(&c, dir, rows);
    for (int i = 0; i < NROWS; i++) cJSON_Delete(rows[i].json);
    NAC_TRY(s);
    if (failed) return nac_error(NAC_ERR_NUMERIC, "%d row(s) failed; see %s/results.md", failed, dir);
    return NAC_OK;
}

const nac_command nac_cmd_table5 = {
    "table5",
    "the paper's Table 5: VAEs from random, SimCLR, MoCo-v2 and NAC encoders",
    "table5 -c CONFIG [key=value ...]",
    "For each row (random, simclr, mocov2, nac) pretrain the encoder (or take\n"
    "checkpoints.<row>), train a VAE from it and evaluate log p(x) by importance sampling.\n"
    "Prints the table and writes results.json and results.md into run.dir/run.name.\n"
    "Running the same config again continues there and keeps the finished rows. Config keys:",
    run_table5,
    print_t5_keys,
};
