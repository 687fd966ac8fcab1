/* `nac plot RUN [RUN ...]`: the curves of runs' metrics.jsonl, overlaid with a legend, one
 * figure per quantity (PREFIX_<quantity>.png/.svg). Runs still being written can be plotted:
 * an unterminated or malformed last line is ignored; any line before it that is not a JSON
 * object is an error naming the file and line. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/app.h"
#include "app/config.h"
#include "app/plot.h"

/* What a figure shows: the number `key` of the lines whose "kind" is `kind`, against "step". */
typedef struct quantity {
    const char *name, *kind, *key, *title, *ylabel;
} quantity;

static const quantity QUANTITIES[] = {
    {"loss", "train", "loss", "training loss", "loss"},
    {"lr", "train", "lr", "learning rate", "learning rate"},
    {"knn_top1", "knn", "top1", "kNN monitor: top-1 accuracy", "top-1 accuracy"},
    {"distinct_codes", "codes", "distinct_codes", "distinct 128-bit codes", "distinct codes"},
    {"mean_hamming", "codes", "mean_hamming", "mean Hamming distance between codes",
     "mean Hamming distance"},
    {"balanced_bits", "codes", "balanced_bits", "balanced bits", "balanced bits"},
    {"nelbo", "train", "nelbo", "-ELBO (training)", "-ELBO"},
    {"kl", "train", "kl", "KL (training)", "KL"},
    {"active_units", "diag", "active_units", "active units", "active units"},
};
enum { NQ = sizeof QUANTITIES / sizeof *QUANTITIES, FIG_W = 800, FIG_H = 500 };

typedef struct curve {
    double *x, *y; /* (n) steps and values */
    int n, cap;
} curve;

typedef struct run_curves {
    char label[256]; /* the run folder's name */
    curve q[NQ];
} run_curves;

static nac_status curve_add(curve *c, double x, double y) {
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        double *nx = realloc(c->x, (size_t)cap * sizeof *nx);
        if (nx) c->x = nx;
        double *ny = nx ? realloc(c->y, (size_t)cap * sizeof *ny) : NULL;
        if (!ny) return nac_error(NAC_ERR_NOMEM, "out of memory");
        c->y = ny, c->cap = cap;
    }
    c->x[c->n] = x, c->y[c->n] = y, c->n++;
    return NAC_OK;
}

static void run_curves_free(run_curves *r) {
    for (int q = 0; q < NQ; q++) free(r->q[q].x), free(r->q[q].y);
}

/* The folder's last path component (trailing slashes dropped). */
static void folder_name(const char *dir, char *out, size_t n) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    snprintf(out, n, "%.*s", (int)(len - start), dir + start);
}

static nac_status add_line(run_curves *r, const cJSON *o) {
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(o, "step");
    if (!cJSON_IsString(kind) || !cJSON_IsNumber(step)) return NAC_OK; /* not a curve's point */
    for (int q = 0; q < NQ; q++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, QUANTITIES[q].key);
        if (strcmp(kind->valuestring, QUANTITIES[q].kind) || !cJSON_IsNumber(v)) continue;
        NAC_TRY(curve_add(&r->q[q], step->valuedouble, v->valuedouble));
    }
    return NAC_OK;
}

/* Only blanks from s on. */
static int blank(const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    return !*s;
}

/* Parse the lines of text (the file `path`) into r. The last line is the one a running
 * program may be writing: unterminated or not JSON, it is left out. */
static nac_status parse_metrics(const char *path, char *text, run_curves *r) {
    int lineno = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        lineno++;
        if (!nl) break; /* unterminated: the run is writing it now */
        *nl = '\0';
        const char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (*p) {
            cJSON *o = cJSON_Parse(line);
            if (!cJSON_IsObject(o)) {
                cJSON_Delete(o);
                if (blank(nl + 1)) break; /* the last line */
                return nac_error(NAC_ERR_DATA, "%s:%d: not a JSON object (every complete line of "
                                 "metrics.jsonl must be one)", path, lineno);
            }
            nac_status s = add_line(r, o);
            cJSON_Delete(o);
            NAC_TRY(s);
        }
        line = nl + 1;
    }
    return NAC_OK;
}

static nac_status read_run(const char *dir, run_curves *r) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return nac_error(NAC_ERR_NOINPUT, "%s: no such run folder", dir);
    folder_name(dir, r->label, sizeof r->label);
    char path[1024];
    if (snprintf(path, sizeof path, "%s/metrics.jsonl", dir) >= (int)sizeof path)
        return nac_error(NAC_ERR_USAGE, "%s: run folder path too long", dir);
    char *text;
    NAC_TRY(nac_read_text_file(path, &text, NULL));
    nac_status s = parse_metrics(path, text, r);
    free(text);
    return s;
}

/* One figure: quantity q of every run; *written is set when some run has a point. */
static nac_status plot_quantity(const run_curves *runs, int nruns, int q, const char *prefix,
                                int png, int svg, int *written) {
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    nac_plot_series *se = calloc((size_t)nruns, sizeof *se);
    if (!se) return nac_error(NAC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nruns; i++) {
        const curve *c = &runs[i].q[q];
        /* a run without this quantity keeps its colour but has no legend entry */
        se[i] = (nac_plot_series){c->n ? runs[i].label : NULL, c->x, c->y, c->n, {0, 0, 0}};
        nac_plot_palette(i, se[i].rgb);
        for (int j = 0; j < c->n; j++) {
            if (!isfinite(c->x[j]) || !isfinite(c->y[j])) continue;
            xlo = fmin(xlo, c->x[j]), xhi = fmax(xhi, c->x[j]);
            ylo = fmin(ylo, c->y[j]), yhi = fmax(yhi, c->y[j]);
        }
    }
    *written = xlo <= xhi;
    nac_status s = NAC_OK;
    if (*written) {
        const quantity *qu = &QUANTITIES[q];
        nac_plot_axes ax = {qu->title, "step", qu->ylabel, 0, 0, 0, 0, 0, 0};
        nac_plot_nice_range(fmin(0, xlo), xhi, 8, &ax.xmin, &ax.xmax, &ax.xstep);
        nac_plot_nice_range(ylo, yhi, 6, &ax.ymin, &ax.ymax, &ax.ystep);
        char path[1100];
        if (png) {
            nac_plot_image img;
            snprintf(path, sizeof path, "%s_%s.png", prefix, qu->name);
            s = nac_plot_image_create(&img, FIG_W, FIG_H);
            if (s == NAC_OK) s = nac_plot_chart(&img, &ax, se, nruns, NULL);
            if (s == NAC_OK) s = nac_plot_image_write_png(&img, path);
            nac_plot_image_free(&img);
            if (s == NAC_OK) printf("wrote %s\n", path);
        }
        if (svg && s == NAC_OK) {
            snprintf(path, sizeof path, "%s_%s.svg", prefix, qu->name);
            s = nac_plot_chart_svg(path, FIG_W, FIG_H, &ax, se, nruns);
            if (s == NAC_OK) printf("wrote %s\n", path);
        }
    }
    free(se);
    return s;
}

static nac_status run_plot(int argc, char **argv) {
    const char *out = NULL, *format = "both";
    int nruns = 0;
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    if (!dirs) return nac_error(NAC_ERR_NOMEM, "out of memory");
    nac_status s = NAC_OK;
    for (int i = 1; i < argc && s == NAC_OK; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--format") && i + 1 < argc) format = argv[++i];
        else if (argv[i][0] == '-')
            s = nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac plot --help)",
                          argv[i]);
        else dirs[nruns++] = argv[i];
    }
    int png = !strcmp(format, "png") || !strcmp(format, "both");
    int svg = !strcmp(format, "svg") || !strcmp(format, "both");
    if (s == NAC_OK && !png && !svg)
        s = nac_error(NAC_ERR_USAGE, "--format %s (want png, svg or both)", format);
    if (s == NAC_OK && nruns == 0) s = nac_error(NAC_ERR_USAGE, "give at least one RUN folder");
    run_curves *runs = s == NAC_OK ? calloc((size_t)nruns, sizeof *runs) : NULL;
    if (s == NAC_OK && !runs) s = nac_error(NAC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nruns && s == NAC_OK; i++) s = read_run(dirs[i], &runs[i]);
    char prefix[1024];
    if (s == NAC_OK && snprintf(prefix, sizeof prefix, "%s%s", out ? out : dirs[0],
                                out ? "" : "/plot") >= (int)sizeof prefix)
        s = nac_error(NAC_ERR_USAGE, "output prefix too long");
    int figures = 0;
    for (int q = 0; q < NQ && s == NAC_OK; q++) {
        int w = 0;
        s = plot_quantity(runs, nruns, q, prefix, png, svg, &w);
        figures += w;
    }
    if (s == NAC_OK && figures == 0)
        s = nac_error(NAC_ERR_DATA, "%s: no curves in metrics.jsonl (no train, knn, codes or "
                      "diag lines with a step yet)", dirs[0]);
    for (int i = 0; runs && i < nruns; i++) run_curves_free(&runs[i]);
    free(runs);
    free(dirs);
    return s;
}

const nac_command nac_cmd_plot = {
    "plot",
    "draw the curves of one or several runs' metrics.jsonl, overlaid, as PNG and SVG",
    "plot RUN [RUN ...] [--out PREFIX] [--format png|svg|both]",
    "Reads RUN/metrics.jsonl of each run folder and draws one figure per quantity with a\n"
    "curve per run against the step: one colour each, labelled by the folder's name in the\n"
    "legend (a run without the quantity keeps its colour and has no entry). Pretraining:\n"
    "loss, lr, knn_top1, distinct_codes, mean_hamming, balanced_bits; VAE: nelbo, kl (of the\n"
    "training lines), active_units (diagnostics). A figure is drawn when some run has a\n"
    "point of it. Files: PREFIX_<quantity>.png and .svg (800 x 500), PREFIX by default the\n"
    "first RUN followed by /plot. Runs still being written can be plotted: an unterminated\n"
    "or malformed last line is ignored. A line before it that is not a JSON object is an\n"
    "error naming the file and line (exit 65); a missing run folder or metrics.jsonl exits 66.",
    run_plot,
    NULL,
};
