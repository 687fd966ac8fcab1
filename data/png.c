/* PNG writing and reading with libpng. Writes go to path.tmp-XXXXXX in the same folder,
 * are flushed and closed, and only then renamed over path. libpng reports errors by
 * longjmp; each setjmp frame touches only variables that do not change after it. */
#include "data/png.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct png_err {
    jmp_buf jb;
    char msg[256];
} png_err;

static void on_error(png_structp png, png_const_charp msg) {
    png_err *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    longjmp(e->jb, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* Encode interleaved 8-bit rows (h rows of w*c bytes) to f. */
static nac_status encode(FILE *f, const char *path, const uint8_t *hwc, int c, int h, int w) {
    png_err e;
    e.msg[0] = 0;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &e, on_error, on_warning);
    if (!png) return nac_error(NAC_ERR_NOMEM, "%s: cannot start libpng", path);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return nac_error(NAC_ERR_NOMEM, "%s: cannot start libpng", path);
    }
    if (setjmp(e.jb)) {
        png_destroy_write_struct(&png, &info);
        return nac_error(NAC_ERR_IO, "%s: writing PNG: %s", path, e.msg);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, hwc + (size_t)y * w * c);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return NAC_OK;
}

/* The process umask, read without changing it (/proc/self/status, Linux >= 4.7); the
 * umask(0)/umask(m) pair is the fallback. */
static mode_t current_umask(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[128];
    unsigned m;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Umask: %o", &m) == 1) {
            fclose(f);
            return (mode_t)m;
        }
    if (f) fclose(f);
    mode_t old = umask(0);
    umask(old);
    return old;
}

static nac_status write_hwc(const char *path, const uint8_t *hwc, int c, int h, int w) {
    if ((c != 1 && c != 3) || h < 1 || w < 1 || h > 1000000 || w > 1000000)
        return nac_error(NAC_ERR_INVALID, "%s: cannot write a PNG of %dx%dx%d", path, c, h, w);
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, n + 16, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        nac_status st =
            nac_error(NAC_ERR_IO, "%s: cannot create a file there: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    /* mkstemp makes the file 0600; give it the mode every other output gets */
    FILE *f = fchmod(fd, 0666 & ~current_umask()) == 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        close(fd);
        unlink(tmp);
        free(tmp);
        return nac_error(NAC_ERR_IO, "%s: %s", path, strerror(errno));
    }
    nac_status st = encode(f, path, hwc, c, h, w);
    if (fflush(f) != 0 && st == NAC_OK) st = nac_error(NAC_ERR_IO, "%s: %s", path, strerror(errno));
    if (fclose(f) != 0 && st == NAC_OK) st = nac_error(NAC_ERR_IO, "%s: %s", path, strerror(errno));
    if (st == NAC_OK && rename(tmp, path) != 0)
        st = nac_error(NAC_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp,
                       strerror(errno));
    if (st != NAC_OK) unlink(tmp);
    free(tmp);
    return st;
}

nac_status nac_png_write(const char *path, const uint8_t *chw, int c, int h, int w) {
    return nac_png_write_grid_u8(path, chw, 1, c, h, w, 1, 0);
}

/* The grid's geometry, and a canvas filled with the pad grey. */
static nac_status grid_canvas(const char *path, int n, int c, int h, int w, int cols, int pad,
                              uint8_t **canvas, int *gh, int *gw) {
    if (n < 1 || cols < 1 || pad < 0 || (c != 1 && c != 3) || h < 1 || w < 1)
        return nac_error(NAC_ERR_INVALID, "%s: grid of %d images of %dx%dx%d in %d columns", path,
                         n, c, h, w, cols);
    if (cols > n) cols = n;
    int rows = (n + cols - 1) / cols;
    int64_t H = (int64_t)rows * (h + pad) + pad, W = (int64_t)cols * (w + pad) + pad;
    if (H > 1000000 || W > 1000000)
        return nac_error(NAC_ERR_INVALID, "%s: grid of %lldx%lld pixels is too large", path,
                         (long long)H, (long long)W);
    *canvas = malloc((size_t)H * (size_t)W * (size_t)c);
    if (!*canvas) return nac_error(NAC_ERR_NOMEM, "%s: out of memory for the grid", path);
    memset(*canvas, 128, (size_t)H * (size_t)W * (size_t)c);
    *gh = (int)H;
    *gw = (int)W;
    return NAC_OK;
}

static uint8_t *cell(uint8_t *canvas, int i, int c, int h, int w, int cols, int pad, int gw) {
    int r = i / cols, q = i % cols;
    size_t y0 = (size_t)r * (h + pad) + pad, x0 = (size_t)q * (w + pad) + pad;
    return canvas + (y0 * gw + x0) * c;
}

nac_status nac_png_write_grid_u8(const char *path, const uint8_t *images, int n, int c, int h,
                                 int w, int cols, int pad) {
    uint8_t *canvas;
    int gh, gw;
    NAC_TRY(grid_canvas(path, n, c, h, w, cols, pad, &canvas, &gh, &gw));
    if (cols > n) cols = n;
    size_t hw = (size_t)h * w;
    for (int i = 0; i < n; i++) {
        const uint8_t *img = images + (size_t)i * c * hw;
        uint8_t *dst = cell(canvas, i, c, h, w, cols, pad, gw);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++)
                    dst[((size_t)y * gw + x) * c + ch] = img[ch * hw + (size_t)y * w + x];
    }
    nac_status st = write_hwc(path, canvas, c, gh, gw);
    free(canvas);
    return st;
}

nac_status nac_png_write_grid_f32(const char *path, const float *images, int n, int c, int h, int w,
                                  int cols, int pad, const float *mean, const float *std) {
    uint8_t *canvas;
    int gh, gw;
    NAC_TRY(grid_canvas(path, n, c, h, w, cols, pad, &canvas, &gh, &gw));
    if (cols > n) cols = n;
    size_t hw = (size_t)h * w;
    for (int i = 0; i < n; i++) {
        const float *img = images + (size_t)i * c * hw;
        uint8_t *dst = cell(canvas, i, c, h, w, cols, pad, gw);
        for (int ch = 0; ch < c; ch++) {
            float m = mean ? mean[ch] : 0.f, s = std ? std[ch] : 1.f;
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    float v = (img[ch * hw + (size_t)y * w + x] * s + m) * 255.f;
                    v = v > 0.f ? v : 0.f; /* also maps NaN to 0 */
                    v = v < 255.f ? v : 255.f;
                    dst[((size_t)y * gw + x) * c + ch] = (uint8_t)lrintf(v);
                }
        }
    }
    nac_status st = write_hwc(path, canvas, c, gh, gw);
    free(canvas);
    return st;
}

/* Decode f into interleaved rows; *buf allocated before setjmp and freed by the caller. */
static nac_status decode(FILE *f, const char *path, uint8_t **hwc, int *c, int *h, int *w) {
    png_err e;
    e.msg[0] = 0;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &e, on_error, on_warning);
    if (!png) return nac_error(NAC_ERR_NOMEM, "%s: cannot start libpng", path);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return nac_error(NAC_ERR_NOMEM, "%s: cannot start libpng", path);
    }
    uint8_t *volatile buf = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(e.jb)) {
        png_destroy_read_struct(&png, &info, NULL);
        free(buf);
        free(rows);
        return nac_error(NAC_ERR_DATA, "%s: reading PNG: %s", path, e.msg);
    }
    png_init_io(png, f);
    png_read_info(png, info);
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    int ww = (int)png_get_image_width(png, info), hh = (int)png_get_image_height(png, info);
    if ((ch != 1 && ch != 3) || png_get_rowbytes(png, info) != (size_t)ww * ch)
        png_error(png, "unsupported colour layout");
    buf = malloc((size_t)ww * hh * ch);
    rows = malloc((size_t)hh * sizeof *rows);
    if (!buf || !rows) png_error(png, "out of memory");
    for (int y = 0; y < hh; y++) rows[y] = buf + (size_t)y * ww * ch;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *hwc = buf;
    *c = ch;
    *h = hh;
    *w = ww;
    return NAC_OK;
}

nac_status nac_png_read(const char *path, uint8_t **pixels, int *c, int *h, int *w) {
    *pixels = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return nac_error(NAC_ERR_NOINPUT, "%s: no such file", path);
        return nac_error(NAC_ERR_IO, "%s: %s", path, strerror(errno));
    }
    uint8_t *hwc;
    nac_status st = decode(f, path, &hwc, c, h, w);
    fclose(f);
    NAC_TRY(st);
    size_t hw = (size_t)*h * *w;
    uint8_t *chw = malloc(hw * *c);
    if (!chw) {
        free(hwc);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    }
    for (size_t i = 0; i < hw; i++)
        for (int ch = 0; ch < *c; ch++) chw[ch * hw + i] = hwc[i * *c + ch];
    free(hwc);
    *pixels = chw;
    return NAC_OK;
}
