/* Line charts for the app's figures, drawn with cairo (docs/plots.md says why cairo): axes,
 * grid, tick values, axis labels, a title, a legend, lines and markers, in real fonts. The
 * same drawing goes to an RGB image (written as PNG) or to an SVG file; every file is written
 * to a temporary file and renamed (nac_write_file_atomic), so a failed write leaves none. */
#ifndef NAC_APP_PLOT_H
#define NAC_APP_PLOT_H

#include <stdint.h>

#include "backend/status.h"

/* A w x h RGB raster (a cairo image surface, kept opaque here). */
typedef struct nac_plot_image {
    int w, h;
    void *surface; /* cairo_surface_t * */
} nac_plot_image;

/* A white w x h image; NAC_ERR_INVALID for a size outside 1..16384. */
nac_status nac_plot_image_create(nac_plot_image *img, int w, int h);
void nac_plot_image_free(nac_plot_image *img); /* accepts a zeroed or freed image */
nac_status nac_plot_image_write_png(const nac_plot_image *img, const char *path);
/* The colour of pixel (x, y), which must lie inside the image (for tests and tools). */
void nac_plot_image_rgb(const nac_plot_image *img, int x, int y, uint8_t rgb[3]);

/* A line chart: series drawn as lines with square markers at the points (markers only for
 * series of up to NAC_PLOT_MAX_MARKERS points, where they still show; a non-finite value
 * leaves a gap), over a grid at the tick spacing; tick values below and left of the axes
 * (printed with %g), the x label under them, the y label turned along the left side, a
 * title and a legend (a line of each series' colour and its label, wrapping onto more rows)
 * above the plot. */
enum { NAC_PLOT_MAX_MARKERS = 60 };
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
 * 101, or an image too small for the margins (under 200 x 150, or a legend of so many rows
 * that the plot area would be under 40 x 40). */
nac_status nac_plot_chart(nac_plot_image *img, const nac_plot_axes *axes,
                          const nac_plot_series *series, int nseries, nac_plot_area *area);

/* The same chart as a w x h SVG file at path. cairo writes text as glyph outlines, so the
 * file also carries the title and the legend's labels as <title> and <desc> text (for
 * search and screen readers). The same errors as nac_plot_chart, NAC_ERR_IO from writing. */
nac_status nac_plot_chart_svg(const char *path, int w, int h, const nac_plot_axes *axes,
                              const nac_plot_series *series, int nseries);

/* Colour i of the series palette (ten colours that stay apart, then round again). */
void nac_plot_palette(int i, uint8_t rgb[3]);

/* "Nice" axes for data in [lo, hi]: a range containing it with about `nticks` ticks on
 * 1, 2 or 5 times a power of ten (a flat or empty range is widened). */
void nac_plot_nice_range(double lo, double hi, int nticks, double *min, double *max,
                         double *step);

#endif
