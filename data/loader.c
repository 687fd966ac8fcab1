/* The threaded batch loader. A batch is split into chunks of images; workers claim chunks
 * in order (batch by batch) into a ring of prefetch+1 preallocated slots, and the caller
 * takes batches in order. Which thread fills a chunk changes nothing: every view is a pure
 * function of (seed, epoch, image index, view) and the order of (seed, epoch). */
#include "data/loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 16 /* images a work item */

typedef struct slot {
    float *data;  /* (views * n, C, H, W) */
    int *labels;  /* (n) */
    int64_t *idx; /* (n) dataset indices */
    int batch;    /* batch it holds or is being filled with; -1: free */
    int chunks_done;
    int n; /* images of that batch */
} slot_t;

typedef struct worker_arg {
    struct nac_loader *l;
    int id;
} worker_arg;

struct nac_loader {
    const nac_dataset_t *ds;
    nac_loader_config cfg;
    int c, oh, ow;
    size_t img_floats; /* c * oh * ow */
    int nbatches, cpb; /* batches an epoch, chunks a batch */
    int part_n, part_off; /* images a batch this loader hands out, and the first of them */
    int64_t *perm;     /* (ds->n) this epoch's order */
    int epoch;
    int nslots;
    slot_t *slots;
    int nthreads;
    pthread_t *threads;
    worker_arg *args;
    nac_augment_work_t **work; /* one per thread; the last for the caller's thread */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    /* under mu: */
    int64_t next_item, end_item; /* work items: batch * cpb + chunk */
    int cur;                     /* next batch to hand out */
    int held;                    /* slot handed out, -1 if none */
    int active;                  /* items being filled */
    bool started, paused, stop;
    nac_loader_stats stats;      /* the caller's waits since the last nac_loader_take_stats */
};

void nac_loader_defaults(nac_loader_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->batch = 256;
    cfg->views = 2;
    cfg->shuffle = true;
    cfg->drop_last = true;
    cfg->workers = 2;
    cfg->prefetch = 2;
    cfg->seed = 0;
    nac_augment_defaults(&cfg->augment);
}

static uint64_t view_key(uint64_t seed, int epoch, int64_t idx, int view) {
    return nac_rng_key(seed, NAC_STREAM_AUGMENT, (uint64_t)epoch,
                       ((uint64_t)idx << 2) | (uint64_t)view);
}

static void fill_views(const nac_dataset_t *ds, const nac_loader_config *cfg, int epoch,
                       const int64_t *idx, int i0, int i1, int n, size_t img_floats, float *dst,
                       nac_augment_work_t *work) {
    for (int i = i0; i < i1; i++)
        for (int v = 0; v < cfg->views; v++) {
            nac_rng_t r;
            nac_rng_init(&r, view_key(cfg->seed, epoch, idx[i], v));
            nac_augment_apply(&cfg->augment, nac_dataset_image(ds, idx[i]), &r,
                              dst + ((size_t)v * n + i) * img_floats, work);
        }
}

/* Fill chunk k of batch b into s (s->batch == b, s->n set). */
static void fill_chunk(nac_loader_t *l, slot_t *s, int b, int k, nac_augment_work_t *work) {
    int i0 = k * CHUNK, i1 = i0 + CHUNK < s->n ? i0 + CHUNK : s->n;
    const int64_t *order = l->perm + (int64_t)b * l->cfg.batch + l->part_off;
    for (int i = i0; i < i1; i++) {
        s->idx[i] = order[i];
        s->labels[i] = l->ds->labels[order[i]];
    }
    fill_views(l->ds, &l->cfg, l->epoch, s->idx, i0, i1, s->n, l->img_floats, s->data, work);
}

static void assign(nac_loader_t *l, slot_t *s, int b) {
    int64_t left = (int64_t)l->ds->n - (int64_t)b * l->cfg.batch;
    s->batch = b;
    s->n = (int)(left < l->part_n ? left : l->part_n);
    s->chunks_done = 0;
}

static bool claimable(const nac_loader_t *l) {
    if (l->paused || l->next_item >= l->end_item) return false;
    int b = (int)(l->next_item / l->cpb);
    const slot_t *s = &l->slots[b % l->nslots];
    return s->batch == -1 || s->batch == b;
}

static void *worker_main(void *p) {
    worker_arg *a = p;
    nac_loader_t *l = a->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && !claimable(l)) pthread_cond_wait(&l->cv_work, &l->mu);
        if (l->stop) break;
        int64_t t = l->next_item++;
        int b = (int)(t / l->cpb), k = (int)(t % l->cpb);
        slot_t *s = &l->slots[b % l->nslots];
        if (s->batch != b) assign(l, s, b);
        l->active++;
        pthread_mutex_unlock(&l->mu);
        fill_chunk(l, s, b, k, l->work[a->id]);
        pthread_mutex_lock(&l->mu);
        l->active--;
        if (++s->chunks_done == l->cpb || l->active == 0) pthread_cond_broadcast(&l->cv_done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static nac_status check_config(const nac_dataset_t *ds, const nac_loader_config *cfg) {
    if (!ds || ds->n < 1 || !ds->pixels) return nac_error(NAC_ERR_INVALID, "loader: empty dataset");
    if (cfg->batch < 1) return nac_error(NAC_ERR_INVALID, "loader: batch %d (>= 1)", cfg->batch);
    if (cfg->views != 1 && cfg->views != 2)
        return nac_error(NAC_ERR_INVALID, "loader: views %d (1 or 2)", cfg->views);
    if (cfg->workers < 0 || cfg->workers > 256)
        return nac_error(NAC_ERR_INVALID, "loader: workers %d outside 0..256", cfg->workers);
    if (cfg->prefetch < 0 || cfg->prefetch > 64)
        return nac_error(NAC_ERR_INVALID, "loader: prefetch %d outside 0..64", cfg->prefetch);
    if (cfg->parts > 1 && (!cfg->drop_last || cfg->batch % cfg->parts || cfg->part < 0 ||
                           cfg->part >= cfg->parts))
        return nac_error(NAC_ERR_INVALID, "loader: part %d of %d of a batch of %d (drop_last, "
                         "equal parts)", cfg->part, cfg->parts, cfg->batch);
    if (cfg->drop_last && ds->n < cfg->batch)
        return nac_error(NAC_ERR_INVALID,
                         "loader: %s holds %d images, fewer than one batch of %d (drop_last)",
                         ds->source, ds->n, cfg->batch);
    return nac_augment_check(&cfg->augment, ds->c, ds->h, ds->w);
}

static void stop_threads(nac_loader_t *l, int started) {
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < started; i++) pthread_join(l->threads[i], NULL);
}

static void free_buffers(nac_loader_t *l) {
    if (l->slots)
        for (int i = 0; i < l->nslots; i++) {
            free(l->slots[i].data);
            free(l->slots[i].labels);
            free(l->slots[i].idx);
        }
    if (l->work)
        for (int i = 0; i <= l->nthreads; i++) nac_augment_work_free(l->work[i]);
    free(l->slots);
    free(l->work);
    free(l->threads);
    free(l->args);
    free(l->perm);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv_work);
    pthread_cond_destroy(&l->cv_done);
    free(l);
}

void nac_loader_free(nac_loader_t *l) {
    if (!l) return;
    stop_threads(l, l->nthreads);
    free_buffers(l);
}

nac_status nac_loader_create(const nac_dataset_t *ds, const nac_loader_config *cfg,
                             nac_loader_t **out) {
    *out = NULL;
    NAC_TRY(check_config(ds, cfg));
    nac_loader_t *l = calloc(1, sizeof *l);
    if (!l) return nac_error(NAC_ERR_NOMEM, "loader: out of memory");
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_done, NULL);
    l->ds = ds;
    l->cfg = *cfg;
    l->c = ds->c;
    nac_augment_out_size(&cfg->augment, ds->h, ds->w, &l->oh, &l->ow);
    l->img_floats = (size_t)l->c * l->oh * l->ow;
    l->nbatches = cfg->drop_last ? ds->n / cfg->batch : (ds->n + cfg->batch - 1) / cfg->batch;
    l->part_n = cfg->parts > 1 ? cfg->batch / cfg->parts : cfg->batch;
    l->part_off = cfg->parts > 1 ? cfg->part * l->part_n : 0;
    l->cpb = (l->part_n + CHUNK - 1) / CHUNK;
    l->nthreads = cfg->workers;
    l->nslots = (cfg->prefetch > 0 ? cfg->prefetch : 2) + 1;
    l->held = -1;
    l->perm = malloc((size_t)ds->n * sizeof *l->perm);
    l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
    l->work = calloc((size_t)l->nthreads + 1, sizeof *l->work);
    l->threads = calloc((size_t)(l->nthreads ? l->nthreads : 1), sizeof *l->threads);
    l->args = calloc((size_t)(l->nthreads ? l->nthreads : 1), sizeof *l->args);
    bool ok = l->perm && l->slots && l->work && l->threads && l->args;
    size_t batch_floats = (size_t)cfg->views * l->part_n * l->img_floats;
    for (int i = 0; ok && i < l->nslots; i++) {
        slot_t *s = &l->slots[i];
        s->batch = -1;
        s->data = malloc(batch_floats * sizeof(float));
        s->labels = malloc((size_t)l->part_n * sizeof(int));
        s->idx = malloc((size_t)l->part_n * sizeof(int64_t));
        ok = s->data && s->labels && s->idx;
    }
    if (!ok) {
        l->nthreads = 0;
        free_buffers(l);
        return nac_error(NAC_ERR_NOMEM, "loader: out of memory for %d slots of %zu floats",
                         l->nslots, batch_floats);
    }
    for (int i = 0; i <= l->nthreads; i++) {
        nac_status st = nac_augment_work_create(&cfg->augment, ds->c, ds->h, ds->w, &l->work[i]);
        if (st != NAC_OK) {
            free_buffers(l);
            return st;
        }
    }
    for (int i = 0; i < l->nthreads; i++) {
        l->args[i] = (worker_arg){l, i};
        if (pthread_create(&l->threads[i], NULL, worker_main, &l->args[i]) != 0) {
            stop_threads(l, i);
            free_buffers(l);
            return nac_error(NAC_ERR_NOMEM, "loader: cannot start worker thread %d of %d", i + 1,
                             cfg->workers);
        }
    }
    *out = l;
    return NAC_OK;
}

int nac_loader_batches_per_epoch(const nac_loader_t *l) { return l->nbatches; }

void nac_loader_image_shape(const nac_loader_t *l, int *c, int *h, int *w) {
    *c = l->c;
    *h = l->oh;
    *w = l->ow;
}

nac_status nac_loader_start_epoch(nac_loader_t *l, int epoch, int first_batch) {
    if (epoch < 0 || first_batch < 0 || first_batch > l->nbatches)
        return nac_error(NAC_ERR_INVALID, "loader: start at epoch %d batch %d (0..%d batches)",
                         epoch, first_batch, l->nbatches);
    pthread_mutex_lock(&l->mu);
    l->paused = true;
    while (l->active > 0) pthread_cond_wait(&l->cv_done, &l->mu);
    for (int i = 0; i < l->nslots; i++) {
        l->slots[i].batch = -1;
        l->slots[i].chunks_done = 0;
    }
    l->held = -1;
    l->epoch = epoch;
    for (int64_t i = 0; i < l->ds->n; i++) l->perm[i] = i;
    if (l->cfg.shuffle) {
        nac_rng_t r;
        nac_rng_init(&r, nac_rng_key(l->cfg.seed, NAC_STREAM_SHUFFLE, (uint64_t)epoch, 0));
        nac_rng_shuffle(&r, l->perm, l->ds->n);
    }
    l->cur = first_batch;
    l->next_item = (int64_t)first_batch * l->cpb;
    l->end_item = (int64_t)l->nbatches * l->cpb;
    l->paused = false;
    l->started = true;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return NAC_OK;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

nac_status nac_loader_next(nac_loader_t *l, float **batch, int **labels, int *nimages) {
    *nimages = 0;
    double t0 = mono_s();
    if (!l->started)
        return nac_error(NAC_ERR_INVALID, "loader: nac_loader_next before nac_loader_start_epoch");
    pthread_mutex_lock(&l->mu);
    if (l->held >= 0) {
        l->slots[l->held].batch = -1;
        l->held = -1;
        pthread_cond_broadcast(&l->cv_work);
    }
    if (l->cur >= l->nbatches) {
        pthread_mutex_unlock(&l->mu);
        return NAC_OK;
    }
    int b = l->cur;
    slot_t *s = &l->slots[b % l->nslots];
    if (l->nthreads == 0) {
        assign(l, s, b);
        for (int k = 0; k < l->cpb; k++) fill_chunk(l, s, b, k, l->work[0]);
        s->chunks_done = l->cpb;
    }
    while (!(s->batch == b && s->chunks_done == l->cpb)) pthread_cond_wait(&l->cv_done, &l->mu);
    l->held = b % l->nslots;
    l->cur++;
    double waited = mono_s() - t0; /* with no workers: the time spent filling the batch */
    l->stats.batches++;
    l->stats.wait_s += waited;
    if (waited > l->stats.max_wait_s) l->stats.max_wait_s = waited;
    pthread_mutex_unlock(&l->mu);
    *batch = s->data;
    *labels = s->labels;
    *nimages = s->n;
    return NAC_OK;
}

void nac_loader_take_stats(nac_loader_t *l, nac_loader_stats *out) {
    pthread_mutex_lock(&l->mu);
    *out = l->stats;
    memset(&l->stats, 0, sizeof l->stats);
    pthread_mutex_unlock(&l->mu);
}

const int64_t *nac_loader_batch_indices(const nac_loader_t *l) {
    return l->held >= 0 ? l->slots[l->held].idx : NULL;
}

nac_status nac_loader_views(const nac_dataset_t *ds, const nac_loader_config *cfg, int epoch,
                            const int64_t *idx, int n, float *dst) {
    if (cfg->views != 1 && cfg->views != 2)
        return nac_error(NAC_ERR_INVALID, "loader: views %d (1 or 2)", cfg->views);
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= ds->n)
            return nac_error(NAC_ERR_INVALID, "loader: image index %lld outside 0..%d",
                             (long long)idx[i], ds->n - 1);
    nac_augment_work_t *work;
    NAC_TRY(nac_augment_work_create(&cfg->augment, ds->c, ds->h, ds->w, &work));
    int oh, ow;
    nac_augment_out_size(&cfg->augment, ds->h, ds->w, &oh, &ow);
    fill_views(ds, cfg, epoch, idx, 0, n, n, (size_t)ds->c * oh * ow, dst, work);
    nac_augment_work_free(work);
    return NAC_OK;
}
