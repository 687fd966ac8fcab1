/* Image datasets held in memory as uint8 (n, c, h, w) with integer labels and class names:
 * CIFAR-10 binary batches, IDX files (MNIST, Fashion-MNIST; gzipped or not), a synthetic
 * generator, and subsets, splits and concatenation. A load either succeeds completely or
 * leaves `out` empty and sets one message naming the file and the problem. */
#ifndef NAC_DATA_DATASET_H
#define NAC_DATA_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "backend/status.h"

#define NAC_DATASET_MAX_CLASSES 256
#define NAC_DATASET_NAME_LEN 32
/* Images read from files are at most this many pixels a side (IDX headers above it are
 * refused before anything is allocated). */
#define NAC_DATASET_MAX_SIDE 1024u
/* No file, gzipped or not, may hold (or inflate to) more than this many bytes. */
#define NAC_GZ_MAX_BYTES ((size_t)1 << 32)

typedef enum nac_split { NAC_SPLIT_TRAIN = 0, NAC_SPLIT_TEST = 1, NAC_SPLIT_BOTH = 2 } nac_split;

typedef struct nac_dataset {
    int n, c, h, w;
    uint8_t *pixels; /* (n, c, h, w): each image's channel planes, rows top to bottom */
    int *labels;     /* (n), each in [0, nclasses) */
    int nclasses;
    char class_names[NAC_DATASET_MAX_CLASSES][NAC_DATASET_NAME_LEN];
    char format[16];  /* "cifar10", "idx", "synthetic", or that of the parent for subsets */
    char source[512]; /* where it came from (folder, files, generator arguments) */
} nac_dataset_t;

/* The mean and standard deviation the official NAC code normalises CIFAR-10 with. */
extern const float nac_cifar10_mean[3], nac_cifar10_std[3];
extern const char *const nac_cifar10_names[10];
extern const char *const nac_fashion_mnist_names[10];

/* "train", "test", "both" -> split; NAC_ERR_INVALID otherwise. */
nac_status nac_split_parse(const char *s, nac_split *out);
const char *nac_split_name(nac_split s);

/* CIFAR-10 binary: dir is cifar-10-batches-bin (or a folder that contains it). TRAIN reads
 * data_batch_1..5.bin, TEST test_batch.bin, BOTH the train files then the test file. Class
 * names come from batches.meta.txt when present (the standard names otherwise). */
nac_status nac_dataset_load_cifar10(const char *dir, nac_split split, nac_dataset_t *out);
/* One CIFAR-10 binary file of any whole number of records. */
nac_status nac_dataset_load_cifar10_file(const char *path, nac_dataset_t *out);

/* An IDX images file (magic 0x00000803, n x h x w ubyte) and its labels file (0x00000801,
 * n ubyte), each gzipped or plain. nclasses: labels must lie below it (0: max label + 1,
 * at most 256). Class names are the label numbers. */
nac_status nac_dataset_load_idx(const char *images_path, const char *labels_path, int nclasses,
                                nac_dataset_t *out);
/* The four standard (Fashion-)MNIST files in dir, name.gz or name: train-images-idx3-ubyte,
 * train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte. BOTH = train
 * then test. Fashion-MNIST gets its class names, MNIST the digits. */
nac_status nac_dataset_load_fashion_mnist(const char *dir, nac_split split, nac_dataset_t *out);
nac_status nac_dataset_load_mnist(const char *dir, nac_split split, nac_dataset_t *out);
/* Where Debian's dataset-fashion-mnist package installs the files. */
#define NAC_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Whether the files nac_dataset_load_named would read are there (without reading them):
 * for checking a config before anything is created. NAC_ERR_NOINPUT naming the first
 * missing one. */
nac_status nac_dataset_check_files(const char *name, const char *path, nac_split split);

/* The same from files already in memory (for fuzzing and tests); names are used in
 * messages. The bytes may be gzipped; a gzip stream is inflated no further than the size
 * the IDX header declares (and never beyond NAC_GZ_MAX_BYTES). */
nac_status nac_dataset_parse_idx(const char *images_name, const uint8_t *images, size_t images_n,
                                 const char *labels_name, const uint8_t *labels, size_t labels_n,
                                 int nclasses, nac_dataset_t *out);
nac_status nac_dataset_parse_cifar10(const char *name, const uint8_t *bytes, size_t n,
                                     nac_dataset_t *out);

/* By name: "cifar10" | "fashion-mnist" | "mnist"; path NULL or "" uses the default folder
 * (NAC_FASHION_MNIST_DIR for fashion-mnist; none for the others). */
nac_status nac_dataset_load_named(const char *name, const char *path, nac_split split,
                                  nac_dataset_t *out);
/* Whatever `path` is: a CIFAR-10 folder or batch file, an IDX folder (Fashion-MNIST when the
 * path says "fashion", MNIST otherwise) or an IDX images file with its labels file beside
 * it. The message names what was looked for when nothing matches. */
nac_status nac_dataset_load_auto(const char *path, nac_split split, nac_dataset_t *out);

/* n images of c x h x w, label i % nclasses: a class-dependent shape (square, disc,
 * triangle, ring, cross, stripes...) in a class-dependent colour (grey level for c == 1)
 * at a random position and size over a noisy background; a pure function of the seed. */
nac_status nac_dataset_synthetic(int n, int nclasses, int c, int h, int w, uint64_t seed,
                                 nac_dataset_t *out);

/* Copy images idx[0..n) (in that order) into out. */
nac_status nac_dataset_select(const nac_dataset_t *ds, const int64_t *idx, int64_t n,
                              nac_dataset_t *out);
/* per_class images of every class, chosen by the seed (a uniform random subset, kept in
 * dataset order); rest (may be NULL) gets all the others, in dataset order. A class with
 * fewer than per_class images is an error naming it. */
nac_status nac_dataset_subset_per_class(const nac_dataset_t *ds, int per_class, uint64_t seed,
                                        nac_dataset_t *subset, nac_dataset_t *rest);
/* a's images then b's; shapes must match (class names from a). */
nac_status nac_dataset_concat(const nac_dataset_t *a, const nac_dataset_t *b, nac_dataset_t *out);
/* Frees and zeroes; accepts NULL and an empty dataset. */
void nac_dataset_free(nac_dataset_t *ds);

/* counts[k] = images of class k, for k < nclasses. */
void nac_dataset_histogram(const nac_dataset_t *ds, int64_t *counts);
/* Per-channel mean and standard deviation of the pixels scaled to [0, 1] (c values each). */
void nac_dataset_channel_stats(const nac_dataset_t *ds, float *mean, float *std);
/* The bytes of image i: (c, h, w). */
static inline const uint8_t *nac_dataset_image(const nac_dataset_t *ds, int64_t i) {
    return ds->pixels + (size_t)i * (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
}

/* Read a whole file, inflating it when it is gzip (multi-member streams included). The
 * message names the file: missing (NAC_ERR_NOINPUT), unreadable (NAC_ERR_IO), corrupt or
 * truncated gzip (NAC_ERR_DATA). Caller frees *data. */
nac_status nac_read_file_maybe_gz(const char *path, uint8_t **data, size_t *len);

#endif
