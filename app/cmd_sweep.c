/* `nac sweep -c CONFIG`: the paper's Figure 4, flip probability against downstream quality.
 * For each p, pretrain with NAC from one pretraining config (sub-run p<value>), then run
 * `nac probe` and `nac hash` on its encoder; write results.json, results.md (the table)
 * and sweep.png (probe top-1 in blue and mAP@all in red against p). Finished p's are kept
 * when the same sweep runs again. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/app.h"
#include "app/table5.h"
#include "data/png.h"
#include "nn/safetensors.h"

typedef struct sweep_config {
    char description[256];
    char pretrain[512];   /* a pretraining config file (its method.p is overridden) */
    char ps[128];         /* comma-separated flip probabilities */
    int probe_epochs, queries_per_class, threads;
    char runs_dir[256], name[64];
} sweep_config;

static const nac_cfg_field sweep_fields[] = {
    NAC_CFG_STR_F(sweep_config, "description", description, NULL, "free text"),
    NAC_CFG_STR_F(sweep_config, "pretrain_config", pretrain, NULL, "pretraining config file"),
    NAC_CFG_STR_F(sweep_config, "p", ps, NULL, "flip probabilities, comma-separated, in (0, 0.5)"),
    NAC_CFG_INT_F(sweep_config, "probe_epochs", probe_epochs, 1, 100000, "linear probe epochs"),
    NAC_CFG_INT_F(sweep_config, "hash_queries_per_class", queries_per_class, 1, 1e6, "hash queries a class"),
    NAC_CFG_INT_F(sweep_config, "threads", threads, 0, 1024, "threads of probe and hash (0: all)"),
    NAC_CFG_STR_F(sweep_config, "run.dir", runs_dir, NULL, "folder of run folders"),
    NAC_CFG_STR_F(sweep_config, "run.name", name, NULL, "run folder name"),
};
static const nac_cfg_schema sweep_schema = {sweep_fields, sizeof sweep_fields / sizeof *sweep_fields};

static void sweep_defaults(sweep_config *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->pretrain, "configs/pretrain_fmnist_nac.json");
    strcpy(c->ps, "0.05,0.1,0.2,0.3,0.4");
    c->probe_epochs = 100;
    c->queries_per_class = 1000;
    strcpy(c->runs_dir, "runs");
    strcpy(c->name, "sweep-p");
}

static bool exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Run another command of this program in-process, then read one number from its JSON. */
static nac_status run_eval(const nac_command *cmd, char **argv, int argc, const char *json_path,
                           const char *key, double *out) {
    if (!exists(json_path)) NAC_TRY(cmd->run(argc, argv));
    char *text;
    NAC_TRY(nac_read_text_file(json_path, &text, NULL));
    cJSON *d = cJSON_Parse(text);
    free(text);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, key);
    nac_status s = cJSON_IsNumber(v) ? NAC_OK : nac_error(NAC_ERR_DATA, "%s: no number \"%s\"", json_path, key);
    if (s == NAC_OK) *out = v->valuedouble;
    cJSON_Delete(d);
    return s;
}

/* A plain line plot: x = p over [0, 0.5], y over [0, 1], one polyline a series. */
static void plot_line(uint8_t *img, int w, int h, int x0, int y0, int x1, int y1, const uint8_t rgb[3]) {
    int n = abs(x1 - x0) > abs(y1 - y0) ? abs(x1 - x0) : abs(y1 - y0);
    for (int i = 0; i <= n; i++) {
        int x = x0 + (n ? (x1 - x0) * i / n : 0), y = y0 + (n ? (y1 - y0) * i / n : 0);
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int xx = x + dx, yy = y + dy;
                if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
                for (int c = 0; c < 3; c++) img[(size_t)c * w * h + (size_t)yy * w + xx] = rgb[c];
            }
    }
}

static nac_status write_plot(const char *path, const double *p, const double *a, const double *b, int n) {
    enum { W = 480, H = 320, M = 30 };
    uint8_t *img = malloc((size_t)3 * W * H);
    if (!img) return nac_error(NAC_ERR_NOMEM, "out of memory");
    memset(img, 255, (size_t)3 * W * H);
    const uint8_t black[3] = {0, 0, 0}, grey[3] = {210, 210, 210}, blue[3] = {30, 90, 200}, red[3] = {200, 40, 40};
    for (int k = 0; k <= 10; k++) { /* grid every 0.1 in y, every 0.05 in p */
        int y = H - M - (H - 2 * M) * k / 10, x = M + (W - 2 * M) * k / 10;
        plot_line(img, W, H, M, y, W - M, y, grey);
        plot_line(img, W, H, x, M, x, H - M, grey);
    }
    plot_line(img, W, H, M, H - M, W - M, H - M, black);
    plot_line(img, W, H, M, M, M, H - M, black);
    const double *series[2] = {a, b};
    const uint8_t *colour[2] = {blue, red};
    for (int s = 0; s < 2; s++)
        for (int i = 0; i + 1 < n; i++) {
            int xa = M + (int)((W - 2 * M) * p[i] / 0.5), xb = M + (int)((W - 2 * M) * p[i + 1] / 0.5);
            int ya = H - M - (int)((H - 2 * M) * series[s][i]), yb = H - M - (int)((H - 2 * M) * series[s][i + 1]);
            plot_line(img, W, H, xa, ya, xb, yb, colour[s]);
        }
    nac_status st = nac_png_write(path, img, 3, H, W);
    free(img);
    return st;
}

static nac_status run_sweep(int argc, char **argv) {
    const char *config = NULL;
    char *ov[32];
    int nov = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) config = argv[++i];
        else if (strchr(argv[i], '=') && argv[i][0] != '-' && nov < 32) ov[nov++] = argv[i];
        else return nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac sweep --help)", argv[i]);
    }
    if (!config) return nac_error(NAC_ERR_USAGE, "give -c CONFIG");
    sweep_config c;
    sweep_defaults(&c);
    NAC_TRY(nac_config_load(config, &sweep_schema, nov, ov, &c));
    double ps[16], top1[16], map[16];
    int n = 0;
    char list[128];
    snprintf(list, sizeof list, "%s", c.ps);
    for (char *tok = strtok(list, ", "); tok; tok = strtok(NULL, ", ")) {
        char *end;
        double p = strtod(tok, &end);
        if (*end || !(p > 0 && p < 0.5) || n == 16)
            return nac_error(NAC_ERR_CONFIG, "%s: \"p\" entry \"%s\" is not in (0, 0.5) (at most 16 values)", config, tok);
        ps[n++] = p;
    }
    char dir[512], path[700], threads[16], epochs[16], qpc[16];
    if (snprintf(dir, sizeof dir, "%s/%s", c.runs_dir, c.name) >= (int)sizeof dir)
        return nac_error(NAC_ERR_CONFIG, "%s: run.dir/run.name is too long", config);
    mkdir(c.runs_dir, 0777);
    mkdir(dir, 0777);
    snprintf(threads, sizeof threads, "%d", c.threads);
    snprintf(epochs, sizeof epochs, "%d", c.probe_epochs);
    snprintf(qpc, sizeof qpc, "%d", c.queries_per_class);
    for (int i = 0; i < n; i++) {
        char name[64], o_dir[600], o_name[96], o_p[64], sub[600];
        snprintf(name, sizeof name, "p%g", ps[i]);
        snprintf(sub, sizeof sub, "%s/%s", dir, name);
        snprintf(path, sizeof path, "%s/encoder.safetensors", sub);
        if (!exists(path)) {
            if (exists(sub))
                return nac_error(NAC_ERR_CONFIG, "%s exists without an encoder: resume it with nac pretrain --resume %s, or remove it", sub, sub);
            nac_pretrain_config pc;
            nac_pretrain_defaults(&pc);
            snprintf(o_dir, sizeof o_dir, "run.dir=%s", dir);
            snprintf(o_name, sizeof o_name, "run.name=%s", name);
            snprintf(o_p, sizeof o_p, "method.p=%.17g", ps[i]);
            char *pov[4] = {o_dir, o_name, o_p, "method.objective=nac"};
            NAC_TRY(nac_config_load(c.pretrain, &nac_pretrain_schema, 4, pov, &pc));
            nac_run_t run;
            NAC_TRY(nac_run_create(pc.runs_dir, pc.name, &run));
            cJSON *doc = nac_config_to_json(&nac_pretrain_schema, &pc);
            char *text = cJSON_PrintUnformatted(doc);
            nac_status s = nac_run_write_json(&run, "config.json", doc);
            printf("[p=%g] pretraining in %s\n", ps[i], run.dir);
            nac_pretrain_result res;
            if (s == NAC_OK) s = nac_app_pretrain(&pc, text, &run, false, &res);
            free(text);
            cJSON_Delete(doc);
            nac_run_close(&run);
            NAC_TRY(s);
        }
        char *pa[] = {"probe", sub, "--epochs", epochs, "--threads", threads};
        snprintf(path, sizeof path, "%s/probe_results.json", sub);
        NAC_TRY(run_eval(&nac_cmd_probe, pa, 6, path, "top1", &top1[i]));
        char *ha[] = {"hash", sub, "--queries-per-class", qpc, "--threads", threads};
        snprintf(path, sizeof path, "%s/hash_results.json", sub);
        NAC_TRY(run_eval(&nac_cmd_hash, ha, 6, path, "map_all", &map[i]));
    }
    char *md = NULL;
    size_t mdn = 0;
    FILE *f = open_memstream(&md, &mdn);
    if (!f) return nac_error(NAC_ERR_NOMEM, "out of memory");
    fprintf(f, "# Flip probability sweep (pretraining config %s)\n\n| p | probe top-1 | hash mAP@all |\n|---|---|---|\n",
            c.pretrain);
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(doc, "rows");
    for (int i = 0; i < n; i++) {
        fprintf(f, "| %g | %.4f | %.4f |\n", ps[i], top1[i], map[i]);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "p", ps[i]);
        cJSON_AddNumberToObject(o, "probe_top1", top1[i]);
        cJSON_AddNumberToObject(o, "map_all", map[i]);
        cJSON_AddItemToArray(arr, o);
    }
    fprintf(f, "\nsweep.png: probe top-1 (blue) and mAP@all (red) against p in [0, 0.5]; y from 0 to 1.\n");
    fclose(f);
    printf("\n%s", md);
    nac_run_t top;
    memset(&top, 0, sizeof top);
    snprintf(top.dir, sizeof top.dir, "%s", dir);
    nac_status s = nac_run_write_json(&top, "results.json", doc);
    if (s == NAC_OK) s = nac_write_file_atomic(nac_run_path(&top, "results.md", path, sizeof path), md, mdn);
    if (s == NAC_OK) s = write_plot(nac_run_path(&top, "sweep.png", path, sizeof path), ps, top1, map, n);
    cJSON_Delete(doc);
    free(md);
    return s;
}

static void print_sweep_keys(void) {
    sweep_config d;
    sweep_defaults(&d);
    nac_config_print_help(&sweep_schema, &d);
}

const nac_command nac_cmd_sweep = {
    "sweep",
    "the paper's Figure 4: NAC at several flip probabilities, probe accuracy and mAP for each",
    "sweep -c CONFIG [key=value ...]",
    "Pretrains with NAC at each p (sub-runs p<value> of run.dir/run.name), then runs nac probe\n"
    "and nac hash on each encoder, and writes results.json, results.md and sweep.png. Runs\n"
    "again on the same folder reuse finished encoders and results. Config keys:",
    run_sweep,
    print_sweep_keys,
};
