/* Small raster plots for the app's PNGs: an RGB image (CHW, as nac_png_write takes it),
 * lines, filled rectangles, text in a built-in 5x7 bitmap font (printable ASCII), and a
 * line chart with tick values, axis labels and a legend. Every drawing call clips at the
 * image edge (and at the image's clip rectangle), so nothing drawn can write outside it. */
#ifndef NAC_APP_PLOT_H
#define NAC_APP_PLOT_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/status.h"

typedef struct nac_plot_image {
    int w, h;
    uint8_t *px;                  /* (3, h, w) */
    int clip_x0, clip_y0, clip_x1, clip_y1; /* drawing is limited to [x0, x1) x [y0, y1) */
} nac_plot_image;

/* A white w x h image, clip rectangle the whole image. */
nac_status nac_plot_image_create(nac_plot_image *img, int w, int h);
void nac_plot_image_free(nac_plot_image *img); /* accepts a zeroed or freed image */
/* Limit drawing to [x0, x1) x [y0, y1) (intersected with the image); reset: the whole image. */
void nac_plot_clip(nac_plot_image *img, int x0, int y0, int x1, int y1);
void nac_plot_clip_reset(nac_plot_image *img);
nac_status nac_plot_image_write_png(const nac_plot_image *img, const char *path);

void nac_plot_pixel(nac_plot_image *img, int64_t x, int64_t y, const uint8_t rgb[3]);
/* A filled rectangle with its top-left corner at (x, y). */
void nac_plot_rect(nac_plot_image *img, int64_t x, int64_t y, int64_t w, int64_t h,
                   const uint8_t rgb[3]);
/* A line from (x0, y0) to (x1, y1), `thick` pixels wide (a square brush). */
void nac_plot_line(nac_plot_image *img, int x0, int y0, int x1, int y1, int thick,
                   const uint8_t rgb[3]);

/* The font: 5x7 glyphs on a 6-pixel advance, times `scale` (>= 1). Characters without a
 * glyph draw as '?'. The tails of g, p, q and y hang 2 rows (times scale) below the box. */
enum { NAC_FONT_W = 5, NAC_FONT_H = 7, NAC_FONT_ADVANCE = 6 };
bool nac_plot_has_glyph(char c);
/* Width in pixels of s drawn at `scale`: (6 n - 1) scale for n characters, 0 for "". */
int nac_plot_text_width(const char *s, int scale);
/* Draw s with the top-left corner of its box at (x, y); the box is text_width x 7 scale.
 * vertical: turned a quarter anticlockwise (reads bottom to top), the box 7 scale wide and
 * text_width tall, (x, y) still its top-left corner. */
void nac_plot_text(nac_plot_image *img, int64_t x, int64_t y, const char *s, int scale,
                   bool vertical, const uint8_t rgb[3]);

/* A line chart: series drawn as lines with square markers at the points (a non-finite
 * value leaves a gap), over a grid at the tick spacing; tick values below and left of the
 * axes (printed with %g), the x label under them, the y label turned along the left side,
 * a title and a legend (a line of each series' colour and its label) above the plot. */
typedef struct nac_plot_series {
    const char *label;
    const double *x, *y;
    int n;
    uint8_t rgb[3];
} nac_plot_series;

typedef struct nac_plot_axes {
    const char *title, *xlabel, *ylabel; /* may be NULL */
    double xmin, xmax, xstep;            /* range and tick spacing; ticks at xmin + k xstep */
    double ymin, ymax, ystep;
} nac_plot_axes;

/* The plot area in pixels: value x maps to x0 + (x - xmin) / (xmax - xmin) (x1 - x0),
 * value y to y1 - (y - ymin) / (ymax - ymin) (y1 - y0). */
typedef struct nac_plot_area {
    int x0, y0, x1, y1;
} nac_plot_area;

/* Draw the chart over the whole image; *area (may be NULL) receives the plot area.
 * NAC_ERR_INVALID for an empty or inverted range, a step that gives no tick or more than
 * 100, or an image too small for the margins (under 200 x 150). */
nac_status nac_plot_chart(nac_plot_image *img, const nac_plot_axes *axes,
                          const nac_plot_series *series, int nseries, nac_plot_area *area);

#endif
