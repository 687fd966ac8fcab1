/* PNG files of images and image grids (libpng), written to a temporary file and renamed, so
 * a failed write never leaves a half-written PNG. Images are CHW, 1 (grey) or 3 (RGB)
 * channels, as the datasets and the loader hold them. */
#ifndef NAC_DATA_PNG_H
#define NAC_DATA_PNG_H

#include <stdint.h>

#include "backend/status.h"

/* One uint8 image (c, h, w), c 1 or 3. */
nac_status nac_png_write(const char *path, const uint8_t *chw, int c, int h, int w);

/* n uint8 images (n, c, h, w) in a grid of `cols` columns with `pad` pixels of grey
 * (128) between and around them. */
nac_status nac_png_write_grid_u8(const char *path, const uint8_t *images, int n, int c, int h,
                                 int w, int cols, int pad);

/* n float images (n, c, h, w): each value x becomes x * std[ch] + mean[ch] (mean and std
 * may be NULL: 0 and 1), then clamp(round(255 x)) -- values in [0, 1] map to 0..255. */
nac_status nac_png_write_grid_f32(const char *path, const float *images, int n, int c, int h, int w,
                                  int cols, int pad, const float *mean, const float *std);

/* Read a PNG back as 8-bit CHW (grey or RGB; alpha dropped, palettes expanded): for tests
 * and tools. Caller frees *pixels. */
nac_status nac_png_read(const char *path, uint8_t **pixels, int *c, int *h, int *w);

#endif
