/* What `nac table5` draws and publishes beside results.json: figures of each row's paired
 * difference from the random row and of its KL, with their intervals (table5_vs_random and
 * table5_kl, PNG and SVG), and results.html, a self-contained page (no network: the images
 * are files beside it, referenced by relative paths) with the table, the figures, each
 * row's reconstructions and samples, and the config. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/plot.h"
#include "app/table5.h"
#include "io/safetensors.h"

/* One figure: per row (x = its index), a vertical interval [lo, hi] with the mean marked. */
static nac_status interval_figure(const char *dir, const char *name, const char *title,
                                  const char *ylabel, const nac_t5_point *pts, int n, bool diff) {
    double x[NAC_T5_MAX_ROWS][3], y[NAC_T5_MAX_ROWS][3], lo = 0, hi = 0;
    nac_plot_series ser[NAC_T5_MAX_ROWS];
    char labels[NAC_T5_MAX_ROWS][96];
    for (int i = 0; i < n; i++) {
        x[i][0] = x[i][1] = x[i][2] = i + 1;
        y[i][0] = pts[i].lo, y[i][1] = pts[i].mean, y[i][2] = pts[i].hi;
        if (i == 0 || pts[i].lo < lo) lo = pts[i].lo;
        if (i == 0 || pts[i].hi > hi) hi = pts[i].hi;
        snprintf(labels[i], sizeof labels[i], diff ? "%s %+.1f [%+.1f, %+.1f]" : "%s %.1f [%.1f, %.1f]",
                 pts[i].name, pts[i].mean, pts[i].lo, pts[i].hi);
        ser[i] = (nac_plot_series){.label = labels[i], .x = x[i], .y = y[i], .n = 3};
        nac_plot_palette(i, ser[i].rgb);
    }
    nac_plot_axes ax = {.title = title, .xlabel = "row (1 = first in the legend)", .ylabel = ylabel,
                        .xmin = 0, .xmax = n + 1, .xstep = 1};
    nac_plot_nice_range(lo, hi, 6, &ax.ymin, &ax.ymax, &ax.ystep);
    char path[700];
    nac_plot_image img;
    NAC_TRY(nac_plot_image_create(&img, 800, 500));
    nac_status s = nac_plot_chart(&img, &ax, ser, n, NULL);
    snprintf(path, sizeof path, "%s/%s.png", dir, name);
    if (s == NAC_OK) s = nac_plot_image_write_png(&img, path);
    nac_plot_image_free(&img);
    snprintf(path, sizeof path, "%s/%s.svg", dir, name);
    if (s == NAC_OK) s = nac_plot_chart_svg(path, 800, 500, &ax, ser, n);
    return s;
}

/* Text for HTML: &, <, > and quotes escaped. */
static void put_escaped(FILE *f, const char *t) {
    for (; *t; t++) {
        switch (*t) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*t, f);
        }
    }
}

/* A markdown table row "| a | b |" as an HTML row (cells escaped). */
static void md_row_html(FILE *f, const char *line, const char *cell) {
    fputs("<tr>", f);
    const char *p = strchr(line, '|');
    while (p && p[1] && p[1] != '\n') {
        const char *q = strchr(p + 1, '|');
        if (!q) break;
        char buf[256];
        size_t k = (size_t)(q - p - 1) < sizeof buf - 1 ? (size_t)(q - p - 1) : sizeof buf - 1;
        memcpy(buf, p + 1, k);
        buf[k] = 0;
        fprintf(f, "<%s>", cell);
        put_escaped(f, buf);
        fprintf(f, "</%s>", cell);
        p = q;
    }
    fputs("</tr>\n", f);
}

nac_status nac_t5_report(const char *dir, const char *md, const char *config_json,
                         const nac_t5_point *vs_random, int nvs, const nac_t5_point *kl, int nkl,
                         const char *const *vae_dirs, const char *const *row_labels, int nrows) {
    if (nvs > 0)
        NAC_TRY(interval_figure(dir, "table5_vs_random", "log p(x) minus the random row's (paired)",
                                "nats", vs_random, nvs, true));
    if (nkl > 0) NAC_TRY(interval_figure(dir, "table5_kl", "KL(q(z|x) || p(z))", "nats", kl, nkl, false));
    char *html = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&html, &n);
    if (!f) return nac_error(NAC_ERR_NOMEM, "results.html: out of memory");
    fputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Table 5</title>\n"
          "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
          "img{max-width:100%}pre{background:#f4f4f4;padding:1em;overflow:auto}</style>"
          "</head><body>\n",
          f);
    bool in_table = false;
    for (const char *line = md; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        size_t k = len < sizeof buf - 1 ? len : sizeof buf - 1;
        memcpy(buf, line, k);
        buf[k] = 0;
        if (buf[0] == '|') {
            if (!in_table) fputs("<table>\n", f);
            if (strncmp(buf, "|---", 4) != 0) md_row_html(f, buf, in_table ? "td" : "th");
            in_table = true;
        } else {
            if (in_table) fputs("</table>\n", f);
            in_table = false;
            if (buf[0] == '#') {
                fputs("<h1>", f);
                put_escaped(f, buf + 2);
                fputs("</h1>\n", f);
            } else if (buf[0]) {
                fputs("<p>", f);
                put_escaped(f, buf);
                fputs("</p>\n", f);
            }
        }
        line = end ? end + 1 : NULL;
    }
    if (in_table) fputs("</table>\n", f);
    if (nvs > 0) fputs("<h2>Paired difference from random</h2><img src=\"table5_vs_random.png\" alt=\"vs random\">\n", f);
    if (nkl > 0) fputs("<h2>KL</h2><img src=\"table5_kl.png\" alt=\"KL\">\n", f);
    fputs("<h2>Reconstructions (each pair of rows: test images, then their reconstructions) and "
          "prior samples</h2>\n",
          f);
    for (int i = 0; i < nrows; i++) {
        if (!vae_dirs[i]) continue;
        fputs("<h3>", f);
        put_escaped(f, row_labels[i]);
        fputs("</h3>\n", f);
        fprintf(f, "<img src=\"%s/reconstructions.png\" alt=\"reconstructions\"> "
                   "<img src=\"%s/samples.png\" alt=\"samples\">\n", vae_dirs[i], vae_dirs[i]);
    }
    fputs("<h2>Config</h2><pre>", f);
    put_escaped(f, config_json ? config_json : "");
    fputs("</pre>\n</body></html>\n", f);
    fclose(f);
    char path[700];
    snprintf(path, sizeof path, "%s/results.html", dir);
    nac_status s = nac_write_file_atomic(path, html, n);
    free(html);
    return s;
}
