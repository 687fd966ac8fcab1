/* `nac data PATH|synthetic`: says what a dataset is (format, count, shape, class histogram,
 * pixel statistics), writes a PNG grid of samples and one of augmented pairs so a user can
 * see what the augmentations do, and with --bench measures the two-view pipeline. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/app.h"
#include "app/run.h"
#include "data/augment.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/png.h"

typedef struct data_opts {
    const char *path, *out;
    nac_split split;
    uint64_t seed;
    int samples, pairs;
    bool png, bench;
    int workers, batch;
    double bench_s;
    int syn_n, syn_classes, syn_c, syn_h, syn_w;
} data_opts;

static nac_status parse_int(const char *flag, const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v < lo || v > hi)
        return nac_error(NAC_ERR_USAGE, "%s %s: expected an integer in %d..%d", flag, s, lo, hi);
    *out = (int)v;
    return NAC_OK;
}

static nac_status parse_args(int argc, char **argv, data_opts *o) {
    *o = (data_opts){.out = ".",
                     .split = NAC_SPLIT_TRAIN,
                     .samples = 64,
                     .pairs = 16,
                     .png = true,
                     .workers = 2,
                     .batch = 256,
                     .bench_s = 2.0,
                     .syn_n = 1000,
                     .syn_classes = 10,
                     .syn_c = 3,
                     .syn_h = 32,
                     .syn_w = 32};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int seed = 0;
        if (!strcmp(a, "--no-png"))
            o->png = false;
        else if (!strcmp(a, "--bench"))
            o->bench = true;
        else if (a[0] == '-' && a[1] != 0 && !v)
            return nac_error(NAC_ERR_USAGE, "%s needs a value (see nac data --help)", a);
        else if (!strcmp(a, "--out"))
            o->out = argv[++i];
        else if (!strcmp(a, "--split")) {
            if (nac_split_parse(argv[++i], &o->split) != NAC_OK)
                return nac_error(NAC_ERR_USAGE, "--split %s: expected train, test or both",
                                 argv[i]);
        } else if (!strcmp(a, "--seed")) {
            NAC_TRY(parse_int(a, argv[++i], 0, INT_MAX, &seed));
            o->seed = (uint64_t)seed;
        } else if (!strcmp(a, "--samples"))
            NAC_TRY(parse_int(a, argv[++i], 1, 1024, &o->samples));
        else if (!strcmp(a, "--pairs"))
            NAC_TRY(parse_int(a, argv[++i], 1, 256, &o->pairs));
        else if (!strcmp(a, "--workers"))
            NAC_TRY(parse_int(a, argv[++i], 0, 256, &o->workers));
        else if (!strcmp(a, "--batch"))
            NAC_TRY(parse_int(a, argv[++i], 1, 65536, &o->batch));
        else if (!strcmp(a, "--n"))
            NAC_TRY(parse_int(a, argv[++i], 1, 10000000, &o->syn_n));
        else if (!strcmp(a, "--classes"))
            NAC_TRY(parse_int(a, argv[++i], 1, NAC_DATASET_MAX_CLASSES, &o->syn_classes));
        else if (!strcmp(a, "--shape")) {
            if (sscanf(argv[++i], "%dx%dx%d", &o->syn_c, &o->syn_h, &o->syn_w) != 3)
                return nac_error(NAC_ERR_USAGE, "--shape %s: expected CxHxW, e.g. 3x32x32",
                                 argv[i]);
        } else if (a[0] == '-' && a[1] != 0)
            return nac_error(NAC_ERR_USAGE, "unknown option \"%s\" (see nac data --help)", a);
        else if (o->path)
            return nac_error(NAC_ERR_USAGE, "one dataset at a time (\"%s\" and \"%s\")", o->path,
                             a);
        else
            o->path = a;
    }
    if (!o->path) return nac_error(NAC_ERR_USAGE, "name a dataset file or folder, or synthetic");
    return NAC_OK;
}

static void describe(const nac_dataset_t *ds) {
    printf("dataset: %s\n", ds->source);
    printf("format:  %s\n", ds->format);
    printf("images:  %d of %dx%dx%d (channels x height x width, uint8)\n", ds->n, ds->c, ds->h,
           ds->w);
    int64_t counts[NAC_DATASET_MAX_CLASSES];
    nac_dataset_histogram(ds, counts);
    printf("classes: %d\n", ds->nclasses);
    for (int k = 0; k < ds->nclasses; k++)
        printf("  %3d %-16s %8" PRId64 " (%5.2f%%)\n", k, ds->class_names[k], counts[k],
               100.0 * (double)counts[k] / ds->n);
    float mean[4], std[4];
    nac_dataset_channel_stats(ds, mean, std);
    printf("pixels:  mean");
    for (int ch = 0; ch < ds->c; ch++) printf(" %.4f", mean[ch]);
    printf(", std");
    for (int ch = 0; ch < ds->c; ch++) printf(" %.4f", std[ch]);
    printf(" (scaled to [0, 1])\n");
}

/* The augmentation the pretraining uses, with normalisation for this dataset. */
static void augment_for(const nac_dataset_t *ds, nac_augment_config *aug) {
    nac_augment_defaults(aug);
    if (strcmp(ds->format, "cifar10") != 0) {
        float mean[3] = {0}, std[3] = {0};
        nac_dataset_channel_stats(ds, mean, std);
        for (int ch = 0; ch < ds->c; ch++)
            if (!(std[ch] > 0)) std[ch] = 1;
        nac_augment_set_norm(aug, ds->c, mean, std);
    }
}

static void pick(const nac_dataset_t *ds, int n, uint64_t seed, int64_t *idx) {
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(seed, NAC_STREAM_USER, 1, 0));
    for (int i = 0; i < n; i++) idx[i] = (int64_t)nac_rng_below(&r, (uint32_t)ds->n);
}

static nac_status write_pngs(const nac_dataset_t *ds, const data_opts *o) {
    char path[1024];
    if (mkdir(o->out, 0755) != 0 && errno != EEXIST)
        return nac_error(NAC_ERR_IO, "%s: cannot create the folder: %s", o->out, strerror(errno));
    int n = o->samples > o->pairs ? o->samples : o->pairs;
    int64_t *idx = malloc((size_t)n * sizeof *idx);
    size_t img = (size_t)ds->c * ds->h * ds->w;
    uint8_t *pix = malloc((size_t)o->samples * img);
    float *grid = malloc((size_t)3 * o->pairs * img * sizeof(float));
    float *views = malloc((size_t)2 * o->pairs * img * sizeof(float));
    nac_status st =
        idx && pix && grid && views ? NAC_OK : nac_error(NAC_ERR_NOMEM, "out of memory");
    if (st == NAC_OK) {
        pick(ds, n, o->seed, idx);
        for (int i = 0; i < o->samples; i++)
            memcpy(pix + i * img, nac_dataset_image(ds, idx[i]), img);
        snprintf(path, sizeof path, "%s/samples.png", o->out);
        st = nac_png_write_grid_u8(path, pix, o->samples, ds->c, ds->h, ds->w, 8, 2);
        if (st == NAC_OK) printf("wrote %s (%d random images)\n", path, o->samples);
    }
    if (st == NAC_OK) {
        nac_loader_config lc;
        nac_loader_defaults(&lc);
        lc.seed = o->seed;
        augment_for(ds, &lc.augment);
        lc.augment.normalize = false; /* show the pixels before normalisation */
        st = nac_loader_views(ds, &lc, 0, idx, o->pairs, views);
        for (int i = 0; st == NAC_OK && i < o->pairs; i++) {
            const uint8_t *src = nac_dataset_image(ds, idx[i]);
            for (size_t j = 0; j < img; j++) grid[(3 * i) * img + j] = (float)src[j] / 255.f;
            memcpy(grid + (3 * i + 1) * img, views + i * img, img * sizeof(float));
            memcpy(grid + (3 * i + 2) * img, views + (o->pairs + i) * img, img * sizeof(float));
        }
        snprintf(path, sizeof path, "%s/pairs.png", o->out);
        if (st == NAC_OK)
            st = nac_png_write_grid_f32(path, grid, 3 * o->pairs, ds->c, ds->h, ds->w, 6, 2, NULL,
                                        NULL);
        if (st == NAC_OK)
            printf("wrote %s (%d images: original, view 1, view 2; SimCLR/NAC augmentations, "
                   "seed %" PRIu64 ")\n",
                   path, o->pairs, o->seed);
    }
    free(idx);
    free(pix);
    free(grid);
    free(views);
    return st;
}

/* Images per second of the two-view pipeline: one thread alone, then the loader. */
static nac_status bench(const nac_dataset_t *ds, const data_opts *o) {
    nac_augment_config aug;
    augment_for(ds, &aug);
    nac_augment_work_t *work;
    NAC_TRY(nac_augment_work_create(&aug, ds->c, ds->h, ds->w, &work));
    int oh, ow;
    nac_augment_out_size(&aug, ds->h, ds->w, &oh, &ow);
    float *dst = malloc((size_t)2 * ds->c * oh * ow * sizeof(float));
    if (!dst) {
        nac_augment_work_free(work);
        return nac_error(NAC_ERR_NOMEM, "out of memory");
    }
    int64_t done = 0;
    double t0 = nac_now(), t = 0;
    while ((t = nac_now() - t0) < o->bench_s / 2) {
        for (int k = 0; k < 256; k++, done++) {
            int64_t i = done % ds->n;
            for (int v = 0; v < 2; v++) {
                nac_rng_t r;
                nac_rng_init(&r,
                             nac_rng_key(o->seed, NAC_STREAM_AUGMENT, (uint64_t)i, (uint64_t)v));
                nac_augment_apply(&aug, nac_dataset_image(ds, i), &r,
                                  dst + (size_t)v * ds->c * oh * ow, work);
            }
        }
    }
    nac_augment_work_free(work);
    free(dst);
    printf("bench: one thread: %.0f images/s (two %dx%dx%d views each, %.1f us an image)\n",
           (double)done / t, ds->c, oh, ow, 1e6 * t / (double)done);

    nac_loader_config lc;
    nac_loader_defaults(&lc);
    lc.seed = o->seed;
    lc.workers = o->workers;
    lc.batch = o->batch < ds->n ? o->batch : ds->n;
    lc.augment = aug;
    nac_loader_t *l;
    NAC_TRY(nac_loader_create(ds, &lc, &l));
    done = 0;
    t0 = nac_now();
    nac_status st = NAC_OK;
    for (int epoch = 0; st == NAC_OK && (t = nac_now() - t0) < o->bench_s / 2; epoch++) {
        st = nac_loader_start_epoch(l, epoch, 0);
        float *batch;
        int *labels, n = 1;
        while (st == NAC_OK && n > 0 && (t = nac_now() - t0) < o->bench_s / 2) {
            st = nac_loader_next(l, &batch, &labels, &n);
            done += n;
        }
    }
    nac_loader_free(l);
    NAC_TRY(st);
    printf("bench: loader, %d worker%s, batch %d: %.0f images/s (%.0f views/s)\n", o->workers,
           o->workers == 1 ? "" : "s", lc.batch, (double)done / t, 2.0 * (double)done / t);
    return NAC_OK;
}

static nac_status run_data(int argc, char **argv) {
    data_opts o;
    NAC_TRY(parse_args(argc, argv, &o));
    nac_dataset_t ds;
    if (!strcmp(o.path, "synthetic"))
        NAC_TRY(
            nac_dataset_synthetic(o.syn_n, o.syn_classes, o.syn_c, o.syn_h, o.syn_w, o.seed, &ds));
    else
        NAC_TRY(nac_dataset_load_auto(o.path, o.split, &ds));
    describe(&ds);
    nac_status st = NAC_OK;
    if (o.png) st = write_pngs(&ds, &o);
    if (st == NAC_OK && o.bench) st = bench(&ds, &o);
    nac_dataset_free(&ds);
    return st;
}

const nac_command nac_cmd_data = {
    "data",
    "describe a dataset, write PNGs of samples and augmented pairs, bench the loader",
    "data [--split train|test|both] [--out DIR] [--no-png] [--seed N] [--samples N]\n"
    "         [--pairs N] [--bench] [--workers N] [--batch N] PATH\n"
    "       nac data [--n N] [--classes K] [--shape CxHxW] [options] synthetic",
    "PATH is a CIFAR-10 folder (cifar-10-batches-bin, or one holding it) or .bin batch, a\n"
    "folder of (Fashion-)MNIST IDX files (e.g. " NAC_FASHION_MNIST_DIR "), or an\n"
    "*-images-idx3-ubyte[.gz] file with its labels file beside it; `synthetic` generates\n"
    "shapes (default 1000 images of 3x32x32, 10 classes).\n"
    "Prints the format, count, shape, class histogram and pixel statistics, and writes\n"
    "DIR/samples.png (random images, 8 a row) and DIR/pairs.png (an original and its two\n"
    "augmented views, two triples a row: RandomResizedCrop, flip, ColorJitter, grayscale;\n"
    "shown before normalisation). DIR (created if missing) defaults to the current folder.\n"
    "--bench measures images/s of the two-view pipeline, one thread alone and through the\n"
    "loader with --workers threads (default 2) and --batch images (default 256).",
    run_data,
    NULL,
};
