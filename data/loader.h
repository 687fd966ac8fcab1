/* The batch loader: one or two independently augmented views per image as float NCHW in
 * host memory, shuffled per epoch, prepared by worker threads while the caller trains on
 * the current batch. The bytes depend only on (seed, epoch, batch), never on the number of
 * workers: image i's view v is drawn from the Philox key (seed, epoch, i, v) and the order
 * from (seed, epoch). A run can resume at any (epoch, batch). */
#ifndef NAC_DATA_LOADER_H
#define NAC_DATA_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include "data/augment.h"
#include "data/dataset.h"
#include "backend/status.h"

typedef struct nac_loader_config {
    int batch;      /* images a batch (B) */
    int views;      /* 1 or 2 */
    bool shuffle;   /* new order each epoch from (seed, epoch); false: dataset order */
    bool drop_last; /* training: only full batches; evaluation: false, every image once */
    int workers;    /* threads; 0 prepares each batch in the caller's thread */
    int prefetch;   /* batches prepared ahead of the caller (0: 2) */
    uint64_t seed;
    nac_augment_config augment; /* nac_augment_none() for normalisation only */
    int part, parts; /* data parallelism: parts > 1 hands out only images [part * B / parts,
                        (part + 1) * B / parts) of each batch of B (drop_last, parts divides
                        B), the same bytes as those rows of the whole batch; 0, 0: all */
} nac_loader_config;

/* batch 256, 2 views, shuffle, drop_last, 2 workers, seed 0, nac_augment_defaults. */
void nac_loader_defaults(nac_loader_config *cfg);

typedef struct nac_loader nac_loader_t;

/* The loader borrows ds, which must outlive it. Allocates every buffer now. */
nac_status nac_loader_create(const nac_dataset_t *ds, const nac_loader_config *cfg,
                             nac_loader_t **out);
void nac_loader_free(nac_loader_t *l);

int nac_loader_batches_per_epoch(const nac_loader_t *l);
/* The shape of one view of one image after augmentation. */
void nac_loader_image_shape(const nac_loader_t *l, int *c, int *h, int *w);

/* Start (or restart) epoch `epoch` at batch first_batch (0 <= first_batch <= batches per
 * epoch); batches in flight for the old position are dropped. */
nac_status nac_loader_start_epoch(nac_loader_t *l, int epoch, int first_batch);

/* The next batch of the epoch: *batch is (views * n, C, H, W), the n images of view 1 then
 * the same images' view 2; *labels is (n). *nimages is 0 at the end of the epoch. The
 * buffers stay valid until the next call of nac_loader_next, _start_epoch or _free. */
nac_status nac_loader_next(nac_loader_t *l, float **batch, int **labels, int *nimages);
/* How long the caller waited in nac_loader_next for the batches it took (from the call to
 * the batch in hand; with no workers, the time it spent preparing them): the measure of a
 * loader that does not keep up with the step. */
typedef struct nac_loader_stats {
    int64_t batches;   /* batches handed out */
    double wait_s;     /* total wait */
    double max_wait_s; /* the longest single wait */
} nac_loader_stats;
/* The waits since the loader's creation or the last call, then start counting afresh. */
void nac_loader_take_stats(nac_loader_t *l, nac_loader_stats *out);

/* Dataset indices of the images of the batch last returned by nac_loader_next. */
const int64_t *nac_loader_batch_indices(const nac_loader_t *l);

/* Fill dst (views * n, C, H, W) with the views of images idx[0..n) for `epoch`, exactly as
 * the loader would, in the caller's thread (for tests, tools and small evaluations). */
nac_status nac_loader_views(const nac_dataset_t *ds, const nac_loader_config *cfg, int epoch,
                            const int64_t *idx, int n, float *dst);

#endif
