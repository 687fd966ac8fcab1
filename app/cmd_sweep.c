/* `nac sweep -c CONFIG`: the paper's Figure 4, flip probability against downstream quality.
 * For each p, pretrain with NAC from one pretraining config (sub-run p<value>), then run
 * `nac probe` and `nac hash` on its encoder; write results.json, results.md (the table, in
 * increasing p), sweep.png and sweep.svg (640 x 440, drawn with cairo: probe top-1 in blue
 * and mAP@all in red against p, with tick values, axis labels and a legend). Finished p's
 * (encoder and results files) are kept when the sweep runs again on the same folder; only
 * missing work is done. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/app.h"
#include "app/evalcmd.h"
#include "app/plot.h"
#include "app/table5.h"
#include "io/safetensors.h"

enum { NAC_SWEEP_MAX_P = 16, NAC_SWEEP_PNG_W = 640, NAC_SWEEP_PNG_H = 440 };

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
    NAC_CFG_INT_F(sweep_config, "hash_queries_per_class", queries_per_class, 1, 1e6,
                  "hash queries a class"),
    NAC_CFG_INT_F(sweep_config, "threads", threads, 0, 1024, "threads of probe and hash (0: all)"),
    NAC_CFG_STR_F(sweep_config, "run.dir", runs_dir, NULL, "folder of run folders"),
    NAC_CFG_STR_F(sweep_config, "run.name", name, NULL, "run folder name"),
};
static const nac_cfg_schema sweep_schema = {sweep_fields,
                                            sizeof sweep_fields / sizeof *sweep_fields, NULL};

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
/* The number `key` of a results file an earlier run of the sweep left (resuming). */
static nac_status read_result(const char *json_path, const char *key, double *out) {
    char *text;
    NAC_TRY(nac_read_text_file(json_path, &text, NULL));
    cJSON *d = cJSON_Parse(text);
    free(text);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(d, key);
    nac_status s = cJSON_IsNumber(v)
                       ? NAC_OK
                       : nac_error(NAC_ERR_DATA, "%s: no number \"%s\"", json_path, key);
    if (s == NAC_OK) *out = v->valuedouble;
    cJSON_Delete(d);
    return s;
}

/* The shortest %g form of p that reads back as p: sub-run names and table entries, so two
 * different p's never share a sub-run (plain %g would give 0.1 and 0.1000001 both "p0.1"). */
static void p_text(double p, char *buf, size_t n) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, p);
        if (strtod(buf, NULL) == p) return;
    }
}

/* The "p" entry: 1 to NAC_SWEEP_MAX_P distinct values in (0, 0.5). */
static nac_status parse_ps(const char *config, const char *text, double *ps, int *n) {
    char list[sizeof ((sweep_config *)0)->ps], *save = NULL;
    snprintf(list, sizeof list, "%s", text);
    *n = 0;
    for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        char *end;
        double p = strtod(tok, &end);
        if (*end || !(p > 0 && p < 0.5))
            return nac_error(NAC_ERR_CONFIG, "%s: \"p\" entry \"%s\" is not a number in (0, 0.5)",
                             config, tok);
        if (*n == NAC_SWEEP_MAX_P)
            return nac_error(NAC_ERR_CONFIG, "%s: \"p\" lists more than %d values", config,
                             NAC_SWEEP_MAX_P);
        for (int i = 0; i < *n; i++)
            if (ps[i] == p)
                return nac_error(NAC_ERR_CONFIG, "%s: \"p\" lists %g twice", config, p);
        ps[(*n)++] = p;
    }
    if (*n == 0)
        return nac_error(NAC_ERR_CONFIG, "%s: \"p\" lists no flip probability (\"%s\")", config,
                         text);
    return NAC_OK;
}

/* mkdir -p, naming the folder that could not be made. */
static nac_status make_dirs(const char *path) {
    char buf[512];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return nac_error(NAC_ERR_CONFIG, "folder name too long: %s", path);
    for (char *q = buf + 1;; q++) {
        if (*q != '/' && *q) continue;
        char was = *q;
        *q = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return nac_error(NAC_ERR_IO, "cannot create folder %s: %s", buf, strerror(errno));
        if (!was) return NAC_OK;
        *q = was;
    }
}

/* NAC pretraining at one p into dir/name, from the sweep's pretraining config. */
static nac_status pretrain_p(const sweep_config *c, const char *dir, const char *name, double p) {
    char o_dir[600], o_name[96], o_p[64];
    snprintf(o_dir, sizeof o_dir, "run.dir=%s", dir);
    snprintf(o_name, sizeof o_name, "run.name=%s", name);
    snprintf(o_p, sizeof o_p, "method.p=%.17g", p);
    char *pov[4] = {o_dir, o_name, o_p, "method.objective=nac"};
    nac_pretrain_config pc;
    nac_pretrain_defaults(&pc);
    NAC_TRY(nac_config_load(c->pretrain, &nac_pretrain_schema, 4, pov, &pc));
    nac_run_t run;
    NAC_TRY(nac_run_create(pc.runs_dir, pc.name, &run));
    cJSON *doc = nac_config_to_json(&nac_pretrain_schema, &pc);
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    nac_status s = text ? nac_run_write_json(&run, "config.json", doc)
                        : nac_error(NAC_ERR_NOMEM, "%s: out of memory", run.dir);
    printf("[p=%g] pretraining in %s\n", p, run.dir);
    nac_pretrain_result res;
    if (s == NAC_OK) s = nac_app_pretrain(&pc, text, &run, false, &res);
    free(text);
    cJSON_Delete(doc);
    nac_run_close(&run);
    return s;
}

/* sweep.png and sweep.svg: probe top-1 and mAP@all against p (in increasing p). */
static nac_status write_plot(nac_run_t *top, const double *p, const double *top1,
                             const double *map, int n) {
    char path[700];
    nac_plot_image img;
    NAC_TRY(nac_plot_image_create(&img, NAC_SWEEP_PNG_W, NAC_SWEEP_PNG_H));
    const nac_plot_series s[2] = {{"probe top-1", p, top1, n, {30, 90, 200}},
                                  {"mAP@all", p, map, n, {200, 40, 40}}};
    const nac_plot_axes ax = {"NAC flip probability sweep", "p (flip probability)",
                              "probe top-1, hash mAP@all", 0, 0.5, 0.1, 0, 1, 0.2};
    nac_status st = nac_plot_chart(&img, &ax, s, 2, NULL);
    if (st == NAC_OK)
        st = nac_plot_image_write_png(&img, nac_run_path(top, "sweep.png", path, sizeof path));
    nac_plot_image_free(&img);
    if (st == NAC_OK)
        st = nac_plot_chart_svg(nac_run_path(top, "sweep.svg", path, sizeof path),
                                NAC_SWEEP_PNG_W, NAC_SWEEP_PNG_H, &ax, s, 2);
    return st;
}

/* results.json, results.md, sweep.png and sweep.svg in dir, rows in increasing p. */
static nac_status write_results(const sweep_config *c, const char *dir, const double *ps,
                                const double *top1, const double *map, int n) {
    int order[NAC_SWEEP_MAX_P];
    for (int i = 0; i < n; i++) { /* insertion sort of the indices by p */
        int j = i;
        for (; j > 0 && ps[order[j - 1]] > ps[i]; j--) order[j] = order[j - 1];
        order[j] = i;
    }
    double sp[NAC_SWEEP_MAX_P], st1[NAC_SWEEP_MAX_P], smap[NAC_SWEEP_MAX_P];
    char *md = NULL, name[32], path[700];
    size_t mdn = 0;
    FILE *f = open_memstream(&md, &mdn);
    if (!f) return nac_error(NAC_ERR_NOMEM, "out of memory");
    fprintf(f, "# Flip probability sweep (pretraining config %s)\n\n"
               "| p | probe top-1 | hash mAP@all |\n|---|---|---|\n", c->pretrain);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "pretrain_config", c->pretrain);
    cJSON *arr = cJSON_AddArrayToObject(doc, "rows");
    for (int k = 0; k < n; k++) {
        int i = order[k];
        sp[k] = ps[i], st1[k] = top1[i], smap[k] = map[i];
        p_text(ps[i], name, sizeof name);
        fprintf(f, "| %s | %.4f | %.4f |\n", name, top1[i], map[i]);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "p", ps[i]);
        cJSON_AddNumberToObject(o, "probe_top1", top1[i]);
        cJSON_AddNumberToObject(o, "map_all", map[i]);
        snprintf(path, sizeof path, "p%s", name);
        cJSON_AddStringToObject(o, "run", path);
        cJSON_AddItemToArray(arr, o);
    }
    fprintf(f, "\nsweep.png: probe top-1 (blue) and hash mAP@all (red) against p.\n");
    fclose(f);
    printf("\n%s", md);
    nac_run_t top;
    memset(&top, 0, sizeof top);
    snprintf(top.dir, sizeof top.dir, "%s", dir);
    nac_status s = nac_run_write_json(&top, "results.json", doc);
    if (s == NAC_OK)
        s = nac_write_file_atomic(nac_run_path(&top, "results.md", path, sizeof path), md, mdn);
    if (s == NAC_OK)
        s = write_plot(&top, sp, st1, smap, n);
    cJSON_Delete(doc);
    free(md);
    return s;
}

static nac_status run_sweep(int argc, char **argv) {
    const char *config = NULL;
    char *ov[32];
    int nov = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            config = argv[++i];
        else if (strchr(argv[i], '=') && argv[i][0] != '-' && nov < 32) ov[nov++] = argv[i];
        else
            return nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac sweep --help)",
                             argv[i]);
    }
    if (!config) return nac_error(NAC_ERR_USAGE, "give -c CONFIG");
    sweep_config c;
    sweep_defaults(&c);
    NAC_TRY(nac_config_load(config, &sweep_schema, nov, ov, &c));
    double ps[NAC_SWEEP_MAX_P], top1[NAC_SWEEP_MAX_P], map[NAC_SWEEP_MAX_P];
    int n;
    NAC_TRY(parse_ps(config, c.ps, ps, &n));
    char dir[512], path[700];
    if (snprintf(dir, sizeof dir, "%s/%s", c.runs_dir, c.name) >= (int)sizeof dir)
        return nac_error(NAC_ERR_CONFIG, "%s: run.dir/run.name is too long", config);
    NAC_TRY(make_dirs(dir));
    for (int i = 0; i < n; i++) {
        char name[40], sub[600];
        p_text(ps[i], name + 1, sizeof name - 1);
        name[0] = 'p';
        snprintf(sub, sizeof sub, "%s/%s", dir, name);
        snprintf(path, sizeof path, "%s/encoder.safetensors", sub);
        if (!exists(path)) {
            if (exists(sub))
                return nac_error(NAC_ERR_CONFIG,
                                 "%s exists without an encoder: resume it with nac pretrain "
                                 "--resume %s, or remove it",
                                 sub, sub);
            NAC_TRY(pretrain_p(&c, dir, name, ps[i]));
        } else {
            printf("[p=%s] keeping the finished encoder in %s\n", name + 1, sub);
        }
        eval_opts eo;
        ev_eval_opts_defaults(&eo);
        eo.target = sub;
        eo.threads = c.threads;
        eo.baselines = false; /* the same for every p: run `nac probe` once for them */
        nac_probe_config pc;
        nac_probe_defaults(&pc);
        pc.epochs = c.probe_epochs;
        snprintf(path, sizeof path, "%s/probe_results.json", sub);
        NAC_TRY(exists(path) ? read_result(path, "top1", &top1[i]) : ev_probe(&eo, &pc, &top1[i]));
        ev_hash_opts ho = EV_HASH_OPTS_DEFAULT;
        ho.qpc = c.queries_per_class;
        snprintf(path, sizeof path, "%s/hash_results.json", sub);
        NAC_TRY(exists(path) ? read_result(path, "map_all", &map[i]) : ev_hash(&eo, &ho, &map[i]));
    }
    return write_results(&c, dir, ps, top1, map, n);
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
    "and nac hash on each encoder, and writes results.json, results.md, sweep.png and sweep.svg\n"
    "(640 x 440, probe top-1 in blue and hash mAP@all in red against p). Runs again on the\n"
    "same folder reuse finished encoders and results, so p's can be added later. Config keys:",
    run_sweep,
    print_sweep_keys,
};
