/* Raster plots (see plot.h): pixels, rectangles, clipped lines, a 5x7 bitmap font for
 * printable ASCII, and a line chart with ticks, labels and a legend. Coordinates are
 * 64-bit and clipped before any loop, so far-off or huge coordinates cost nothing. */
#include "app/plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/png.h"

/* Printable ASCII from ' ' (32) to '~' (126): 7 rows of 5 columns, '#' is ink. g, p, q and
 * y are drawn DESCENT rows lower, so their tails hang below the baseline. */
enum { DESCENT = 2 };
static const char font[95][NAC_FONT_H][NAC_FONT_W + 1] = {
    {".....", ".....", ".....", ".....", ".....", ".....", "....."}, /* ' ' */
    {"..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."}, /* ! */
    {".#.#.", ".#.#.", ".#.#.", ".....", ".....", ".....", "....."}, /* " */
    {".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."}, /* # */
    {"..#..", ".####", "#.#..", ".###.", "..#.#", "####.", "..#.."}, /* $ */
    {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"}, /* % */
    {".##..", "#..#.", "#.#..", ".#...", "#.#.#", "#..#.", ".##.#"}, /* & */
    {"..#..", "..#..", "..#..", ".....", ".....", ".....", "....."}, /* ' */
    {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."}, /* ( */
    {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."}, /* ) */
    {".....", "..#..", "#.#.#", ".###.", "#.#.#", "..#..", "....."}, /* * */
    {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."}, /* + */
    {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."}, /* , */
    {".....", ".....", ".....", "#####", ".....", ".....", "....."}, /* - */
    {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}, /* . */
    {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."}, /* / */
    {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}, /* 0 */
    {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}, /* 1 */
    {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}, /* 2 */
    {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."}, /* 3 */
    {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}, /* 4 */
    {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}, /* 5 */
    {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}, /* 6 */
    {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}, /* 7 */
    {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}, /* 8 */
    {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}, /* 9 */
    {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}, /* : */
    {".....", ".##..", ".##..", ".....", ".##..", "..#..", ".#..."}, /* ; */
    {"...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."}, /* < */
    {".....", ".....", "#####", ".....", "#####", ".....", "....."}, /* = */
    {".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."}, /* > */
    {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."}, /* ? */
    {".###.", "#...#", "....#", ".##.#", "#.#.#", "#.#.#", ".###."}, /* @ */
    {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}, /* A */
    {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."}, /* B */
    {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."}, /* C */
    {"###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."}, /* D */
    {"#####", "#....", "#....", "####.", "#....", "#....", "#####"}, /* E */
    {"#####", "#....", "#....", "####.", "#....", "#....", "#...."}, /* F */
    {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"}, /* G */
    {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}, /* H */
    {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}, /* I */
    {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."}, /* J */
    {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"}, /* K */
    {"#....", "#....", "#....", "#....", "#....", "#....", "#####"}, /* L */
    {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"}, /* M */
    {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"}, /* N */
    {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}, /* O */
    {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."}, /* P */
    {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"}, /* Q */
    {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"}, /* R */
    {".####", "#....", "#....", ".###.", "....#", "....#", "####."}, /* S */
    {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."}, /* T */
    {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}, /* U */
    {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."}, /* V */
    {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."}, /* W */
    {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"}, /* X */
    {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."}, /* Y */
    {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"}, /* Z */
    {".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."}, /* [ */
    {".....", "#....", ".#...", "..#..", "...#.", "....#", "....."}, /* \ */
    {".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."}, /* ] */
    {"..#..", ".#.#.", "#...#", ".....", ".....", ".....", "....."}, /* ^ */
    {".....", ".....", ".....", ".....", ".....", ".....", "#####"}, /* _ */
    {".#...", "..#..", "...#.", ".....", ".....", ".....", "....."}, /* ` */
    {".....", ".....", ".###.", "....#", ".####", "#...#", ".####"}, /* a */
    {"#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."}, /* b */
    {".....", ".....", ".###.", "#....", "#....", "#...#", ".###."}, /* c */
    {"....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"}, /* d */
    {".....", ".....", ".###.", "#...#", "#####", "#....", ".###."}, /* e */
    {"..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#..."}, /* f */
    {".####", "#...#", "#...#", "#...#", ".####", "....#", ".###."}, /* g */
    {"#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"}, /* h */
    {"..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."}, /* i */
    {"...#.", ".....", "..##.", "...#.", "...#.", "#..#.", ".##.."}, /* j */
    {"#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."}, /* k */
    {".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}, /* l */
    {".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"}, /* m */
    {".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"}, /* n */
    {".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."}, /* o */
    {"####.", "#...#", "#...#", "#...#", "####.", "#....", "#...."}, /* p */
    {".####", "#...#", "#...#", "#...#", ".####", "....#", "....#"}, /* q */
    {".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."}, /* r */
    {".....", ".....", ".###.", "#....", ".###.", "....#", "####."}, /* s */
    {".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."}, /* t */
    {".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"}, /* u */
    {".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."}, /* v */
    {".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."}, /* w */
    {".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"}, /* x */
    {"#...#", "#...#", "#...#", "#...#", ".####", "....#", ".###."}, /* y */
    {".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"}, /* z */
    {"...#.", "..#..", "..#..", ".#...", "..#..", "..#..", "...#."}, /* { */
    {"..#..", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."}, /* | */
    {".#...", "..#..", "..#..", "...#.", "..#..", "..#..", ".#..."}, /* } */
    {".....", ".....", ".#...", "#.#.#", "...#.", ".....", "....."}, /* ~ */
};

nac_status nac_plot_image_create(nac_plot_image *img, int w, int h) {
    memset(img, 0, sizeof *img);
    if (w < 1 || h < 1 || w > 100000 || h > 100000)
        return nac_error(NAC_ERR_INVALID, "plot image of %d x %d pixels", w, h);
    img->px = malloc((size_t)3 * w * h);
    if (!img->px) return nac_error(NAC_ERR_NOMEM, "plot image of %d x %d: out of memory", w, h);
    memset(img->px, 255, (size_t)3 * w * h);
    img->w = w;
    img->h = h;
    nac_plot_clip_reset(img);
    return NAC_OK;
}

void nac_plot_image_free(nac_plot_image *img) {
    if (!img) return;
    free(img->px);
    memset(img, 0, sizeof *img);
}

void nac_plot_clip(nac_plot_image *img, int x0, int y0, int x1, int y1) {
    img->clip_x0 = x0 < 0 ? 0 : x0;
    img->clip_y0 = y0 < 0 ? 0 : y0;
    img->clip_x1 = x1 > img->w ? img->w : x1;
    img->clip_y1 = y1 > img->h ? img->h : y1;
}

void nac_plot_clip_reset(nac_plot_image *img) { nac_plot_clip(img, 0, 0, img->w, img->h); }

nac_status nac_plot_image_write_png(const nac_plot_image *img, const char *path) {
    return nac_png_write(path, img->px, 3, img->h, img->w);
}

void nac_plot_pixel(nac_plot_image *img, int64_t x, int64_t y, const uint8_t rgb[3]) {
    if (x < img->clip_x0 || y < img->clip_y0 || x >= img->clip_x1 || y >= img->clip_y1) return;
    size_t plane = (size_t)img->w * img->h, at = (size_t)y * img->w + (size_t)x;
    for (int c = 0; c < 3; c++) img->px[c * plane + at] = rgb[c];
}

void nac_plot_rect(nac_plot_image *img, int64_t x, int64_t y, int64_t w, int64_t h,
                   const uint8_t rgb[3]) {
    if (w <= 0 || h <= 0) return;
    int64_t xa = x > img->clip_x0 ? x : img->clip_x0, ya = y > img->clip_y0 ? y : img->clip_y0;
    /* w, h > 0: x + w can overflow only for x > 0 */
    int64_t xb = x > 0 && w > INT64_MAX - x ? INT64_MAX : x + w;
    int64_t yb = y > 0 && h > INT64_MAX - y ? INT64_MAX : y + h;
    if (xb > img->clip_x1) xb = img->clip_x1;
    if (yb > img->clip_y1) yb = img->clip_y1;
    for (int64_t yy = ya; yy < yb; yy++)
        for (int64_t xx = xa; xx < xb; xx++) nac_plot_pixel(img, xx, yy, rgb);
}

/* Liang-Barsky: clip the segment to [lo, hi] in x and y; false if nothing is left. */
static bool clip_segment(double *x0, double *y0, double *x1, double *y1, double xlo, double ylo,
                         double xhi, double yhi) {
    double t0 = 0, t1 = 1, dx = *x1 - *x0, dy = *y1 - *y0;
    const double p[4] = {-dx, dx, -dy, dy};
    const double q[4] = {*x0 - xlo, xhi - *x0, *y0 - ylo, yhi - *y0};
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) {
            if (q[i] < 0) return false;
            continue;
        }
        double t = q[i] / p[i];
        if (p[i] < 0) {
            if (t > t1) return false;
            if (t > t0) t0 = t;
        } else {
            if (t < t0) return false;
            if (t < t1) t1 = t;
        }
    }
    double ax = *x0 + t0 * dx, ay = *y0 + t0 * dy, bx = *x0 + t1 * dx, by = *y0 + t1 * dy;
    *x0 = ax, *y0 = ay, *x1 = bx, *y1 = by;
    return true;
}

/* A segment in double coordinates, clipped to the clip rectangle grown by the brush. */
static void line_d(nac_plot_image *img, double x0, double y0, double x1, double y1, int thick,
                   const uint8_t rgb[3]) {
    if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1) || thick < 1) return;
    double m = thick;
    if (!clip_segment(&x0, &y0, &x1, &y1, img->clip_x0 - m, img->clip_y0 - m, img->clip_x1 + m,
                      img->clip_y1 + m))
        return;
    int xa = (int)lround(x0), ya = (int)lround(y0), xb = (int)lround(x1), yb = (int)lround(y1);
    int n = abs(xb - xa) > abs(yb - ya) ? abs(xb - xa) : abs(yb - ya);
    int lo = -(thick - 1) / 2;
    for (int i = 0; i <= n; i++) {
        int x = xa + (n ? (xb - xa) * i / n : 0), y = ya + (n ? (yb - ya) * i / n : 0);
        nac_plot_rect(img, x + lo, y + lo, thick, thick, rgb);
    }
}

void nac_plot_line(nac_plot_image *img, int x0, int y0, int x1, int y1, int thick,
                   const uint8_t rgb[3]) {
    line_d(img, x0, y0, x1, y1, thick, rgb);
}

bool nac_plot_has_glyph(char c) { return c >= ' ' && c <= '~'; }

int nac_plot_text_width(const char *s, int scale) {
    size_t n = strlen(s);
    if (n == 0 || scale < 1) return 0;
    if (n > (size_t)(INT32_MAX / NAC_FONT_ADVANCE / scale)) return INT32_MAX;
    return (int)(n * NAC_FONT_ADVANCE - 1) * scale;
}

void nac_plot_text(nac_plot_image *img, int64_t x, int64_t y, const char *s, int scale,
                   bool vertical, const uint8_t rgb[3]) {
    const int64_t far = (int64_t)1 << 40; /* beyond any image: keeps the sums below exact */
    if (scale < 1 || x > far || x < -far || y > far || y < -far) return;
    int64_t len = nac_plot_text_width(s, scale);
    for (int64_t i = 0; s[i]; i++) {
        int64_t u0 = i * NAC_FONT_ADVANCE * scale; /* the glyph's offset along the text */
        if (u0 >= len) break;                      /* past INT32_MAX pixels: off any image */
        /* the rest is off the right edge (horizontal) or the top edge (vertical) */
        if (!vertical ? x + u0 >= img->clip_x1 : y + len - u0 <= img->clip_y0) break;
        char ch = nac_plot_has_glyph(s[i]) ? s[i] : '?';
        const char(*g)[NAC_FONT_W + 1] = font[ch - ' '];
        int drop = strchr("gpqy", ch) ? DESCENT : 0;
        for (int r = 0; r < NAC_FONT_H; r++)
            for (int col = 0; col < NAC_FONT_W; col++) {
                if (g[r][col] != '#') continue;
                int64_t u = u0 + (int64_t)col * scale, v = (int64_t)(r + drop) * scale;
                if (vertical) nac_plot_rect(img, x + v, y + len - u - scale, scale, scale, rgb);
                else nac_plot_rect(img, x + u, y + v, scale, scale, rgb);
            }
    }
}

/* ---- the chart ---- */

static const uint8_t BLACK[3] = {0, 0, 0}, GRID[3] = {220, 220, 220};

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

static int clampi(double v) {
    if (!(v > -1e6)) return -1000000;
    if (v > 1e6) return 1000000;
    return (int)lround(v);
}

nac_status nac_plot_chart(nac_plot_image *img, const nac_plot_axes *a,
                          const nac_plot_series *series, int nseries, nac_plot_area *area) {
    int nx = ticks(a->xmin, a->xmax, a->xstep), ny = ticks(a->ymin, a->ymax, a->ystep);
    if (!isfinite(a->xmin) || !isfinite(a->xmax) || !isfinite(a->ymin) || !isfinite(a->ymax) ||
        !(a->xmax > a->xmin) || !(a->ymax > a->ymin) || !(a->xstep > 0) || !(a->ystep > 0) ||
        nx < 1 || ny < 1)
        return nac_error(NAC_ERR_INVALID,
                         "plot axes: x [%g, %g] step %g, y [%g, %g] step %g (need a range and "
                         "1 to 101 ticks each)", a->xmin, a->xmax, a->xstep, a->ymin, a->ymax,
                         a->ystep);
    if (img->w < 200 || img->h < 150)
        return nac_error(NAC_ERR_INVALID, "plot image of %d x %d is under 200 x 150", img->w,
                         img->h);
    if (nseries < 0 || (nseries > 0 && !series))
        return nac_error(NAC_ERR_INVALID, "plot: %d series", nseries);
    for (int i = 0; i < nseries; i++)
        if (series[i].n < 0 || (series[i].n > 0 && (!series[i].x || !series[i].y)))
            return nac_error(NAC_ERR_INVALID, "plot: series %d has %d points and no data", i,
                             series[i].n);
    const int s = img->w >= 400 && img->h >= 300 ? 2 : 1, th = NAC_FONT_H * s, pad = 5 * s;
    bool legend = false;
    for (int i = 0; i < nseries; i++) legend |= series[i].label && *series[i].label;
    char buf[64];
    int ylw = 0, xlw_last;
    for (int k = 0; k < ny; k++) {
        tick_label(buf, sizeof buf, a->ymin, a->ystep, k);
        int tw = nac_plot_text_width(buf, s);
        if (tw > ylw) ylw = tw;
    }
    tick_label(buf, sizeof buf, a->xmin, a->xstep, nx - 1);
    xlw_last = nac_plot_text_width(buf, s);

    nac_plot_area r;
    int top = pad + (a->title ? th + pad : 0) + (legend ? th + pad : 0);
    r.x0 = pad + (a->ylabel ? th + 2 * pad : 0) + ylw + 2 * pad;
    r.y0 = top + pad;
    r.x1 = img->w - (xlw_last / 2 > 3 * pad ? xlw_last / 2 + pad : 4 * pad);
    r.y1 = img->h - (pad + th + (a->xlabel ? th + 2 * pad : 0) + 2 * pad);
    if (r.x1 - r.x0 < 40 || r.y1 - r.y0 < 40)
        return nac_error(NAC_ERR_INVALID, "plot image of %d x %d leaves no room for the plot",
                         img->w, img->h);
    if (area) *area = r;
    const double sx = (r.x1 - r.x0) / (a->xmax - a->xmin), sy = (r.y1 - r.y0) / (a->ymax - a->ymin);

    /* grid, axes, ticks and tick values */
    nac_plot_clip_reset(img);
    for (int k = 0; k < nx; k++) {
        int x = clampi(r.x0 + k * a->xstep * sx);
        nac_plot_line(img, x, r.y0, x, r.y1, 1, GRID);
        nac_plot_line(img, x, r.y1, x, r.y1 + pad, 2, BLACK);
        tick_label(buf, sizeof buf, a->xmin, a->xstep, k);
        nac_plot_text(img, x - nac_plot_text_width(buf, s) / 2, r.y1 + 2 * pad, buf, s, false,
                      BLACK);
    }
    for (int k = 0; k < ny; k++) {
        int y = clampi(r.y1 - k * a->ystep * sy);
        nac_plot_line(img, r.x0, y, r.x1, y, 1, GRID);
        nac_plot_line(img, r.x0 - pad, y, r.x0, y, 2, BLACK);
        tick_label(buf, sizeof buf, a->ymin, a->ystep, k);
        nac_plot_text(img, r.x0 - 2 * pad - nac_plot_text_width(buf, s), y - th / 2, buf, s, false,
                      BLACK);
    }
    nac_plot_line(img, r.x0, r.y1, r.x1, r.y1, 2, BLACK);
    nac_plot_line(img, r.x0, r.y0, r.x0, r.y1, 2, BLACK);

    /* labels, title and legend */
    if (a->xlabel)
        nac_plot_text(img, (r.x0 + r.x1 - nac_plot_text_width(a->xlabel, s)) / 2,
                      r.y1 + 3 * pad + th, a->xlabel, s, false, BLACK);
    if (a->ylabel)
        nac_plot_text(img, pad, (r.y0 + r.y1 - nac_plot_text_width(a->ylabel, s)) / 2, a->ylabel,
                      s, true, BLACK);
    if (a->title)
        nac_plot_text(img, (img->w - nac_plot_text_width(a->title, s)) / 2, pad, a->title, s,
                      false, BLACK);
    if (legend) {
        int ly = pad + (a->title ? th + pad : 0), lx = r.x1, key = 4 * th / 2;
        for (int i = nseries - 1; i >= 0; i--) { /* right-aligned: place from the right */
            const char *lab = series[i].label;
            if (!lab || !*lab) continue;
            lx -= nac_plot_text_width(lab, s);
            nac_plot_text(img, lx, ly, lab, s, false, BLACK);
            lx -= pad + key;
            nac_plot_rect(img, lx, ly + th / 2 - s, key, 2 * s + 1, series[i].rgb);
            lx -= 4 * pad;
        }
    }

    /* the series, clipped to the plot area grown by half a marker */
    const int mk = 3 * s + 1; /* marker side */
    nac_plot_clip(img, r.x0 - mk / 2, r.y0 - mk / 2, r.x1 + mk / 2 + 1, r.y1 + mk / 2 + 1);
    for (int i = 0; i < nseries; i++) {
        const nac_plot_series *se = &series[i];
        for (int j = 0; j < se->n; j++) {
            double px = r.x0 + (se->x[j] - a->xmin) * sx, py = r.y1 - (se->y[j] - a->ymin) * sy;
            if (!isfinite(px) || !isfinite(py)) continue;
            if (j + 1 < se->n) {
                double qx = r.x0 + (se->x[j + 1] - a->xmin) * sx;
                double qy = r.y1 - (se->y[j + 1] - a->ymin) * sy;
                line_d(img, px, py, qx, qy, s + 1, se->rgb);
            }
        }
        for (int j = 0; j < se->n; j++) { /* markers over the lines */
            double px = r.x0 + (se->x[j] - a->xmin) * sx, py = r.y1 - (se->y[j] - a->ymin) * sy;
            if (!isfinite(px) || !isfinite(py)) continue;
            nac_plot_rect(img, clampi(px) - mk / 2, clampi(py) - mk / 2, mk, mk, se->rgb);
        }
    }
    nac_plot_clip_reset(img);
    return NAC_OK;
}
