/* Image augmentations with torchvision's semantics (RandomResizedCrop, RandomHorizontalFlip,
 * RandomApply(ColorJitter), RandomGrayscale, GaussianBlur, Normalize), so results compare
 * with papers: uint8 CHW in, float CHW out. Randomness comes from a caller-supplied Philox
 * stream, so an image's views depend only on its key, never on threads or order. */
#ifndef NAC_DATA_AUGMENT_H
#define NAC_DATA_AUGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/rng.h"
#include "backend/status.h"

/* The luma weights of RandomGrayscale, contrast and saturation (ITU-R 601, PIL's "L"). */
#define NAC_GRAY_R 0.299f
#define NAC_GRAY_G 0.587f
#define NAC_GRAY_B 0.114f

typedef struct nac_augment_config {
    int out_h, out_w;            /* output size; 0: the input's */
    bool crop;                   /* RandomResizedCrop; false: the whole image (resized if needed) */
    double scale_min, scale_max; /* crop area / image area, uniform (0.08, 1) */
    double ratio_min, ratio_max; /* crop width / height, log-uniform (3/4, 4/3) */
    double flip_p;               /* RandomHorizontalFlip */
    double jitter_p;             /* RandomApply([ColorJitter], p) */
    double brightness, contrast, saturation, hue; /* ColorJitter; 0 leaves that one out */
    double gray_p;                                /* RandomGrayscale */
    double blur_p;                                /* RandomApply([GaussianBlur], p) */
    int blur_kernel; /* odd; 0: 10% of the output's smaller side, made odd */
    double blur_sigma_min, blur_sigma_max;
    bool normalize; /* (x - mean) / std per channel */
    float mean[3], std[3];
} nac_augment_config;

/* The SimCLR recipe of the official NAC code for CIFAR-10: crop (0.08-1, 3/4-4/3), flip 0.5,
 * ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale 0.2, no blur, CIFAR-10 mean/std. */
void nac_augment_defaults(nac_augment_config *cfg);
/* No augmentation: the whole image, normalised with CIFAR-10 mean/std until set. */
void nac_augment_none(nac_augment_config *cfg);
/* Normalisation statistics for c channels (1 or 3). */
void nac_augment_set_norm(nac_augment_config *cfg, int c, const float *mean, const float *std);
/* Check ranges for images of c x h x w (c 1 or 3); the message names the field. */
nac_status nac_augment_check(const nac_augment_config *cfg, int c, int h, int w);
void nac_augment_out_size(const nac_augment_config *cfg, int h, int w, int *oh, int *ow);

/* One draw of the random parameters, in torchvision's order. */
typedef struct nac_augment_params {
    int top, left, crop_h, crop_w; /* source box */
    bool flip;
    bool jitter;
    int order[4];                                /* 0 brightness, 1 contrast, 2 saturation, 3 hue */
    float brightness, contrast, saturation, hue; /* factors (1, 1, 1, 0 are neutral) */
    bool gray;
    bool blur;
    float sigma;
} nac_augment_params;

/* torchvision RandomResizedCrop.get_params: ten tries of a uniform area fraction and a
 * log-uniform aspect ratio, rounded half to even, then the centre-crop fallback. */
void nac_augment_crop_box(nac_rng_t *rng, int h, int w, double scale_min, double scale_max,
                          double ratio_min, double ratio_max, int *top, int *left, int *crop_h,
                          int *crop_w);
void nac_augment_draw(const nac_augment_config *cfg, int c, int h, int w, nac_rng_t *rng,
                      nac_augment_params *p);

/* Buffers for one thread: created once per (config, input shape); no allocation per image. */
typedef struct nac_augment_work nac_augment_work_t;
nac_status nac_augment_work_create(const nac_augment_config *cfg, int c, int h, int w,
                                   nac_augment_work_t **out);
void nac_augment_work_free(nac_augment_work_t *work);

/* Apply drawn parameters: src (c, h, w) uint8 -> dst (c, out_h, out_w) float. */
void nac_augment_run(const nac_augment_config *cfg, const nac_augment_params *p, const uint8_t *src,
                     float *dst, nac_augment_work_t *work);
/* Draw and apply. */
void nac_augment_apply(const nac_augment_config *cfg, const uint8_t *src, nac_rng_t *rng,
                       float *dst, nac_augment_work_t *work);

/* The building blocks, on float CHW images with values in [0, 1] (c 1 or 3), in place;
 * they follow torchvision's tensor functional ops (blend = f*a + (1-f)*b, clamped). */
void nac_image_resized_crop(const uint8_t *src, int c, int h, int w, int top, int left, int crop_h,
                            int crop_w, float *dst, int oh, int ow,
                            nac_augment_work_t *work); /* bilinear, antialiased when shrinking */
void nac_image_hflip(float *x, int c, int h, int w);
void nac_image_brightness(float *x, int c, int h, int w, float f);
void nac_image_contrast(float *x, int c, int h, int w, float f);
void nac_image_saturation(float *x, int c, int h, int w, float f);
void nac_image_hue(float *x, int c, int h, int w, float hue);
void nac_image_grayscale(float *x, int c, int h, int w);
/* kernel k (odd) of exp(-x^2 / (2 sigma^2)) over x = -(k-1)/2 .. (k-1)/2, normalised. */
void nac_gaussian_kernel(int k, float sigma, float *kernel);
/* Separable Gaussian blur with reflect padding; tmp holds c*h*w floats. */
void nac_image_blur(float *x, int c, int h, int w, int k, float sigma, float *tmp);
void nac_image_normalize(float *x, int c, int h, int w, const float *mean, const float *std);
void nac_image_denormalize(float *x, int c, int h, int w, const float *mean, const float *std);

#endif
