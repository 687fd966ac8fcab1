/* Line charts with cairo (see plot.h): one drawing function for every surface, so the PNG
 * and the SVG of a chart are the same picture. Files are rendered into memory and written
 * with nac_write_file_atomic (temporary file, rename; mode 0666 less the umask). */
#include "app/plot.h"

#include <cairo-svg.h>
#include <cairo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

enum { MAX_SIDE = 16384 };

/* ---- bytes in memory, for cairo's stream writers ---- */

typedef struct membuf {
    unsigned char *p;
    size_t n, cap;
    int failed;
} membuf;

static cairo_status_t membuf_write(void *closure, const unsigned char *data, unsigned int len) {
    membuf *b = closure;
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->n + len) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return CAIRO_STATUS_WRITE_ERROR;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
    return CAIRO_STATUS_SUCCESS;
}

static nac_status cairo_failed(cairo_status_t cs, const char *what, const char *path) {
    return nac_error(cs == CAIRO_STATUS_NO_MEMORY ? NAC_ERR_NOMEM : NAC_ERR_IO, "%s %s: cairo: %s",
                     what, path ? path : "", cairo_status_to_string(cs));
}

/* ---- the image ---- */

nac_status nac_plot_image_create(nac_plot_image *img, int w, int h) {
    memset(img, 0, sizeof *img);
    if (w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE)
        return nac_error(NAC_ERR_INVALID, "plot image of %d x %d (want 1 to %d a side)", w, h,
                         MAX_SIDE);
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
        cairo_status_t cs = cairo_surface_status(s);
        cairo_surface_destroy(s);
        return cairo_failed(cs, "creating a plot image", NULL);
    }
    cairo_t *cr = cairo_create(s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_destroy(cr);
    img->w = w, img->h = h, img->surface = s;
    return NAC_OK;
}

void nac_plot_image_free(nac_plot_image *img) {
    if (img->surface) cairo_surface_destroy(img->surface);
    img->surface = NULL;
}

void nac_plot_image_rgb(const nac_plot_image *img, int x, int y, uint8_t rgb[3]) {
    NAC_ASSERT(img->surface && x >= 0 && y >= 0 && x < img->w && y < img->h);
    cairo_surface_flush(img->surface);
    const unsigned char *d = cairo_image_surface_get_data(img->surface);
    int stride = cairo_image_surface_get_stride(img->surface);
    uint32_t p;
    memcpy(&p, d + (size_t)y * stride + (size_t)x * 4, 4); /* xRGB in a native uint32 */
    rgb[0] = (uint8_t)(p >> 16), rgb[1] = (uint8_t)(p >> 8), rgb[2] = (uint8_t)p;
}

nac_status nac_plot_image_write_png(const nac_plot_image *img, const char *path) {
    if (!img->surface) return nac_error(NAC_ERR_INVALID, "%s: no plot image to write", path);
    membuf b = {0};
    cairo_status_t cs = cairo_surface_write_to_png_stream(img->surface, membuf_write, &b);
    nac_status s = cs == CAIRO_STATUS_SUCCESS ? nac_write_file_atomic(path, b.p, b.n)
                   : b.failed                 ? nac_error(NAC_ERR_NOMEM, "%s: out of memory", path)
                                              : cairo_failed(cs, "writing", path);
    free(b.p);
    return s;
}

/* ---- the chart ---- */

static int ticks(double lo, double hi, double step) {
    double k = (hi - lo) / step;
    if (!(k >= 0) || k > 100.5) return -1;
    return (int)floor(k + 1e-9) + 1;
}

static void tick_label(char *buf, size_t n, double lo, double step, int k) {
    double v = lo + k * step;
    if (fabs(v) < 1e-9 * step) v = 0; /* not "1e-17" where 0 is meant */
    snprintf(buf, n, "%g", v);
}

static nac_status check_chart(int w, int h, const nac_plot_axes *a, const nac_plot_series *series,
                              int nseries) {
    int nx = ticks(a->xmin, a->xmax, a->xstep), ny = ticks(a->ymin, a->ymax, a->ystep);
    if (!isfinite(a->xmin) || !isfinite(a->xmax) || !isfinite(a->ymin) || !isfinite(a->ymax) ||
        !(a->xmax > a->xmin) || !(a->ymax > a->ymin) || !(a->xstep > 0) || !(a->ystep > 0) ||
        nx < 1 || ny < 1)
        return nac_error(NAC_ERR_INVALID,
                         "plot axes: x [%g, %g] step %g, y [%g, %g] step %g (need a range and "
                         "1 to 101 ticks each)", a->xmin, a->xmax, a->xstep, a->ymin, a->ymax,
                         a->ystep);
    if (w < 200 || h < 150 || w > MAX_SIDE || h > MAX_SIDE)
        return nac_error(NAC_ERR_INVALID, "plot image of %d x %d is under 200 x 150 or over %d",
                         w, h, MAX_SIDE);
    if (nseries < 0 || (nseries > 0 && !series))
        return nac_error(NAC_ERR_INVALID, "plot: %d series", nseries);
    for (int i = 0; i < nseries; i++)
        if (series[i].n < 0 || (series[i].n > 0 && (!series[i].x || !series[i].y)))
            return nac_error(NAC_ERR_INVALID, "plot: series %d has %d points and no data", i,
                             series[i].n);
    return NAC_OK;
}

static double text_w(cairo_t *cr, const char *s) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    return e.x_advance;
}

/* s with the top-left corner of its box at (x, y); the box is one line (ascent + descent)
 * tall. vertical: turned a quarter anticlockwise, (x, y) still the box's top-left corner. */
static void text_at(cairo_t *cr, double x, double y, const char *s, int vertical) {
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    cairo_save(cr);
    if (vertical) {
        cairo_translate(cr, x + fe.ascent, y + text_w(cr, s));
        cairo_rotate(cr, -M_PI / 2);
        cairo_move_to(cr, 0, 0);
    } else {
        cairo_move_to(cr, x, y + fe.ascent);
    }
    cairo_show_text(cr, s);
    cairo_restore(cr);
}

static void set_rgb(cairo_t *cr, const uint8_t c[3]) {
    cairo_set_source_rgb(cr, c[0] / 255.0, c[1] / 255.0, c[2] / 255.0);
}

static void line(cairo_t *cr, double x0, double y0, double x1, double y1, double width) {
    cairo_set_line_width(cr, width);
    cairo_move_to(cr, x0, y0);
    cairo_line_to(cr, x1, y1);
    cairo_stroke(cr);
}

/* The legend's entries left to right from x0, wrapping at x1: the rows it takes, and each
 * entry's position when pos is not NULL. */
static int legend_layout(cairo_t *cr, const nac_plot_series *series, int nseries, double x0,
                         double x1, double key, double gap, double (*pos)[2], double th) {
    int rows = 0;
    double x = x0;
    for (int i = 0; i < nseries; i++) {
        const char *lab = series[i].label;
        if (!lab || !*lab) continue;
        double ew = key + gap + text_w(cr, lab);
        if (rows == 0 || (x > x0 && x + ew > x1)) x = x0, rows++;
        if (pos) pos[i][0] = x, pos[i][1] = (rows - 1) * (th + gap / 2);
        x += ew + 2 * gap;
    }
    return rows;
}

static nac_status draw_chart(cairo_t *cr, int w, int h, const nac_plot_axes *a,
                             const nac_plot_series *series, int nseries, nac_plot_area *area) {
    static const uint8_t BLACK[3] = {0, 0, 0}, GRID[3] = {220, 220, 220};
    const int nx = ticks(a->xmin, a->xmax, a->xstep), ny = ticks(a->ymin, a->ymax, a->ystep);
    double fs = h / 30.0 < 10 ? 10 : h / 30.0 > 20 ? 20 : h / 30.0;
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, fs);
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    const double th = ceil(fe.ascent + fe.descent), pad = ceil(fs / 2), key = 2 * fs;
    char buf[64];
    double ylw = 0;
    for (int k = 0; k < ny; k++) {
        tick_label(buf, sizeof buf, a->ymin, a->ystep, k);
        ylw = fmax(ylw, text_w(cr, buf));
    }
    tick_label(buf, sizeof buf, a->xmin, a->xstep, nx - 1);
    const double xlw_last = text_w(cr, buf);
    nac_plot_area r;
    r.x0 = (int)(pad + (a->ylabel ? th + pad : 0) + ylw + 2 * pad);
    /* the legend starts above the plot area's left edge */
    double (*pos)[2] = nseries > 0 ? calloc((size_t)nseries, sizeof *pos) : NULL;
    int lrows = legend_layout(cr, series, nseries, r.x0, w - pad, key, pad, pos, th);
    double top = pad + (a->title ? th + pad : 0), ltop = top;
    top += lrows ? lrows * (th + pad / 2) + pad / 2 : 0;
    r.y0 = (int)(top + pad);
    r.x1 = w - (int)(xlw_last / 2 > 3 * pad ? xlw_last / 2 + pad : 4 * pad);
    r.y1 = h - (int)(pad + th + (a->xlabel ? th + 2 * pad : 0) + 2 * pad);
    if (r.x1 - r.x0 < 40 || r.y1 - r.y0 < 40) {
        free(pos);
        return nac_error(NAC_ERR_INVALID, "plot image of %d x %d leaves no room for the plot "
                         "(%d rows of legend)", w, h, lrows);
    }
    if (area) *area = r;
    const double sx = (r.x1 - r.x0) / (a->xmax - a->xmin), sy = (r.y1 - r.y0) / (a->ymax - a->ymin);

    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_SQUARE);
    /* grid, ticks and tick values (lines on pixel centres, so 1-pixel lines stay sharp) */
    for (int k = 0; k < nx; k++) {
        double x = floor(r.x0 + k * a->xstep * sx) + 0.5;
        set_rgb(cr, GRID), line(cr, x, r.y0, x, r.y1, 1);
        set_rgb(cr, BLACK), line(cr, x, r.y1, x, r.y1 + pad, 1);
        tick_label(buf, sizeof buf, a->xmin, a->xstep, k);
        text_at(cr, x - text_w(cr, buf) / 2, r.y1 + 1.5 * pad, buf, 0);
    }
    for (int k = 0; k < ny; k++) {
        double y = floor(r.y1 - k * a->ystep * sy) + 0.5;
        set_rgb(cr, GRID), line(cr, r.x0, y, r.x1, y, 1);
        set_rgb(cr, BLACK), line(cr, r.x0 - pad, y, r.x0, y, 1);
        tick_label(buf, sizeof buf, a->ymin, a->ystep, k);
        text_at(cr, r.x0 - 1.5 * pad - text_w(cr, buf), y - th / 2, buf, 0);
    }
    set_rgb(cr, BLACK);
    line(cr, r.x0, r.y1 + 0.5, r.x1, r.y1 + 0.5, 1.5);
    line(cr, r.x0 - 0.5, r.y0, r.x0 - 0.5, r.y1, 1.5);

    /* labels, title and legend */
    if (a->xlabel)
        text_at(cr, (r.x0 + r.x1 - text_w(cr, a->xlabel)) / 2, r.y1 + 2.5 * pad + th, a->xlabel, 0);
    if (a->ylabel) text_at(cr, pad, (r.y0 + r.y1 - text_w(cr, a->ylabel)) / 2, a->ylabel, 1);
    if (a->title) text_at(cr, (w - text_w(cr, a->title)) / 2, pad, a->title, 0);
    for (int i = 0; pos && i < nseries; i++) {
        const char *lab = series[i].label;
        if (!lab || !*lab) continue;
        double lx = pos[i][0], ly = ltop + pos[i][1];
        set_rgb(cr, series[i].rgb);
        line(cr, lx, ly + th / 2, lx + key, ly + th / 2, 3);
        set_rgb(cr, BLACK);
        text_at(cr, lx + key + pad, ly, lab, 0);
    }
    free(pos);

    /* the series, clipped to the plot area grown by half a marker */
    const double mk = fs / 2 < 5 ? 5 : fs / 2; /* marker side */
    cairo_save(cr);
    cairo_rectangle(cr, r.x0 - mk / 2, r.y0 - mk / 2, r.x1 - r.x0 + mk, r.y1 - r.y0 + mk);
    cairo_clip(cr);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
    cairo_set_line_width(cr, fs / 6 < 2 ? 2 : fs / 6);
    for (int i = 0; i < nseries; i++) {
        const nac_plot_series *se = &series[i];
        set_rgb(cr, se->rgb);
        int pen = 0; /* a path is open */
        for (int j = 0; j < se->n; j++) {
            double px = r.x0 + (se->x[j] - a->xmin) * sx, py = r.y1 - (se->y[j] - a->ymin) * sy;
            /* far-off points are clamped so cairo's fixed point does not overflow */
            if (!isfinite(px) || !isfinite(py)) {
                pen = 0;
                continue;
            }
            px = fmin(fmax(px, -4.0 * w), 5.0 * w), py = fmin(fmax(py, -4.0 * h), 5.0 * h);
            if (pen) cairo_line_to(cr, px, py);
            else cairo_move_to(cr, px, py);
            pen = 1;
        }
        cairo_stroke(cr);
        for (int j = 0; j < se->n && se->n <= NAC_PLOT_MAX_MARKERS; j++) { /* over the lines */
            double px = r.x0 + (se->x[j] - a->xmin) * sx, py = r.y1 - (se->y[j] - a->ymin) * sy;
            if (!isfinite(px) || !isfinite(py) || fabs(px) > 5.0 * w || fabs(py) > 5.0 * h)
                continue;
            cairo_rectangle(cr, px - mk / 2, py - mk / 2, mk, mk);
        }
        cairo_fill(cr);
    }
    cairo_restore(cr);
    return NAC_OK;
}

nac_status nac_plot_chart(nac_plot_image *img, const nac_plot_axes *a,
                          const nac_plot_series *series, int nseries, nac_plot_area *area) {
    if (!img->surface) return nac_error(NAC_ERR_INVALID, "plot: no image to draw on");
    NAC_TRY(check_chart(img->w, img->h, a, series, nseries));
    cairo_t *cr = cairo_create(img->surface);
    nac_status s = draw_chart(cr, img->w, img->h, a, series, nseries, area);
    cairo_status_t cs = cairo_status(cr);
    cairo_destroy(cr);
    if (s == NAC_OK && cs != CAIRO_STATUS_SUCCESS) s = cairo_failed(cs, "drawing a chart", NULL);
    return s;
}

/* ---- SVG ---- */

static void xml_escaped(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '&') fputs("&amp;", f);
        else if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '"') fputs("&quot;", f);
        else if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
    }
}

/* <title> and <desc> (the legend's labels, one a line) right after the <svg ...> tag. */
static nac_status svg_write(const char *path, const membuf *b, const nac_plot_axes *a,
                            const nac_plot_series *series, int nseries) {
    const char *svg = NULL, *end = NULL;
    for (size_t i = 0; i + 4 < b->n && !svg; i++)
        if (!memcmp(b->p + i, "<svg", 4)) svg = (const char *)b->p + i;
    if (svg) end = memchr(svg, '>', b->n - (size_t)(svg - (const char *)b->p));
    if (!end) return nac_error(NAC_ERR_IO, "%s: cairo wrote no <svg> element", path);
    size_t head = (size_t)(end + 1 - (const char *)b->p);
    char *meta = NULL;
    size_t mn = 0;
    FILE *f = open_memstream(&meta, &mn);
    if (!f) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    fputs("\n<title>", f);
    xml_escaped(f, a->title ? a->title : "chart");
    fputs("</title>\n<desc>", f);
    for (int i = 0; i < nseries; i++)
        if (series[i].label && *series[i].label) {
            fputs("\n", f);
            xml_escaped(f, series[i].label);
        }
    fputs("\n</desc>", f);
    if (fclose(f) != 0) {
        free(meta);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    }
    const void *parts[3] = {b->p, meta, b->p + head};
    const size_t n[3] = {head, mn, b->n - head};
    nac_status s = nac_write_file_atomicv(path, 3, parts, n);
    free(meta);
    return s;
}

nac_status nac_plot_chart_svg(const char *path, int w, int h, const nac_plot_axes *a,
                              const nac_plot_series *series, int nseries) {
    NAC_TRY(check_chart(w, h, a, series, nseries));
    membuf b = {0};
    cairo_surface_t *sf = cairo_svg_surface_create_for_stream(membuf_write, &b, w, h);
    /* pixels, so a browser shows the SVG at the PNG's size (cairo's default unit changed) */
    cairo_svg_surface_set_document_unit(sf, CAIRO_SVG_UNIT_PX);
    cairo_t *cr = cairo_create(sf);
    nac_status s = draw_chart(cr, w, h, a, series, nseries, NULL);
    cairo_status_t cs = cairo_status(cr);
    cairo_destroy(cr);
    cairo_surface_finish(sf); /* writes the document */
    if (cs == CAIRO_STATUS_SUCCESS) cs = cairo_surface_status(sf);
    cairo_surface_destroy(sf);
    if (s == NAC_OK)
        s = b.failed                     ? nac_error(NAC_ERR_NOMEM, "%s: out of memory", path)
            : cs != CAIRO_STATUS_SUCCESS ? cairo_failed(cs, "writing", path)
                                         : svg_write(path, &b, a, series, nseries);
    free(b.p);
    return s;
}

/* ---- colours and axes ---- */

void nac_plot_palette(int i, uint8_t rgb[3]) {
    static const uint8_t tab10[10][3] = { /* Tableau 10, matplotlib's default cycle */
        {31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
        {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
    const uint8_t *c = tab10[(i % 10 + 10) % 10];
    rgb[0] = c[0], rgb[1] = c[1], rgb[2] = c[2];
}

void nac_plot_nice_range(double lo, double hi, int nticks, double *min, double *max,
                         double *step) {
    if (!isfinite(lo) || !isfinite(hi) || lo > hi) lo = 0, hi = 1;
    if (nticks < 2) nticks = 2;
    if (hi - lo <= 1e-12 * fmax(1, fabs(lo))) { /* flat: a range around the value */
        double d = lo == 0 ? 1 : fabs(lo) * 0.1;
        lo -= d, hi += d;
    }
    double raw = (hi - lo) / nticks, p = pow(10, floor(log10(raw))), f = raw / p;
    double st = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
    *min = floor(lo / st + 1e-9) * st;
    *max = ceil(hi / st - 1e-9) * st;
    if (!(*max > *min)) *max = *min + st;
    *step = st;
}
