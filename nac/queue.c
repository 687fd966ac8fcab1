/* The key queue of NAC-MQ and MoCo-v2: an (M, D) backend tensor written as a ring with
 * nac_copy_rows (two copies where a write wraps past the end) and a host-side pointer. */
#include "nac/queue.h"

#include <inttypes.h>
#include <stdlib.h>

#include "nac/rowops.h"

nac_status nac_queue_create(nac_backend_t *be, int64_t m, int64_t d, nac_queue_t **out) {
    if (!be || !out || m < 1 || d < 1)
        return nac_error(NAC_ERR_INVALID,
                         "nac_queue_create: need a backend and M, D >= 1 (got M %" PRId64
                         ", D %" PRId64 ")",
                         m, d);
    *out = NULL;
    nac_queue_t *q = calloc(1, sizeof *q);
    if (!q || !(q->keys = nac_tensor_new2(be, m, d))) {
        free(q);
        return nac_error(NAC_ERR_NOMEM, "nac_queue_create: out of memory for a (%" PRId64
                                        ", %" PRId64 ") queue", m, d);
    }
    nac_status s = nac_tensor_alloc(q->keys);
    if (s == NAC_OK) s = nac_tensor_fill(q->keys, 0.0f);
    if (s != NAC_OK) {
        nac_queue_free(q);
        return s;
    }
    *out = q;
    return NAC_OK;
}

void nac_queue_free(nac_queue_t *q) {
    if (!q) return;
    nac_tensor_free(q->keys);
    free(q);
}

int64_t nac_queue_size(const nac_queue_t *q) { return q->keys->dim[0]; }

nac_status nac_queue_reset(nac_queue_t *q, float std, bool normalise, uint64_t key) {
    if (!q) return nac_error(NAC_ERR_INVALID, "nac_queue_reset: NULL queue");
    q->ptr = 0;
    if (!normalise) return nac_tensor_rand(q->keys, NAC_RAND_NORMAL, std, key);
    nac_backend_t *be = q->keys->be;
    nac_tensor_t *raw = nac_tensor_new(be, 2, q->keys->dim);
    nac_tensor_t *norm = nac_tensor_new1(be, q->keys->dim[0]);
    nac_status s = raw && norm ? NAC_OK
                               : nac_error(NAC_ERR_NOMEM, "nac_queue_reset: out of memory");
    if (s == NAC_OK) s = nac_tensor_rand(raw, NAC_RAND_NORMAL, std, key);
    if (s == NAC_OK) s = nac_rows_l2_normalize(raw, norm, q->keys);
    nac_tensor_free(raw);
    nac_tensor_free(norm);
    return s;
}

/* Check that n rows of width d fit the queue at `start`; the rows [start, start + n)
 * mod M are then the runs [start, start + first) and [0, n - first). */
static nac_status ring_span(const nac_tensor_t *keys, int64_t start, const nac_tensor_t *rows,
                            const char *op, int64_t *first) {
    int64_t m = keys->dim[0], n = rows->dim[0];
    if (rows->ndim != 2 || rows->dim[1] != keys->dim[1] || n > m || start < 0 || start >= m)
        return nac_error(NAC_ERR_INVALID,
                         "%s: %" PRId64 " rows of width %" PRId64 " at row %" PRId64
                         " do not fit a (%" PRId64 ", %" PRId64 ") queue",
                         op, n, rows->ndim == 2 ? rows->dim[1] : -1, start, m, keys->dim[1]);
    *first = n < m - start ? n : m - start;
    return NAC_OK;
}

nac_status nac_queue_write(nac_queue_t *q, int64_t start, const nac_tensor_t *src) {
    if (!q || !src) return nac_error(NAC_ERR_INVALID, "nac_queue_write: NULL argument");
    int64_t first;
    NAC_TRY(ring_span(q->keys, start, src, "nac_queue_write", &first));
    NAC_TRY(nac_copy_rows(src, 0, q->keys, start, first));
    return nac_copy_rows(src, first, q->keys, 0, src->dim[0] - first);
}

nac_status nac_queue_read(const nac_queue_t *q, int64_t start, nac_tensor_t *dst) {
    if (!q || !dst) return nac_error(NAC_ERR_INVALID, "nac_queue_read: NULL argument");
    int64_t first;
    NAC_TRY(ring_span(q->keys, start, dst, "nac_queue_read", &first));
    NAC_TRY(nac_copy_rows(q->keys, start, dst, 0, first));
    return nac_copy_rows(q->keys, 0, dst, first, dst->dim[0] - first);
}

nac_status nac_queue_push(nac_queue_t *q, const nac_tensor_t *src) {
    if (!q || !src) return nac_error(NAC_ERR_INVALID, "nac_queue_push: NULL argument");
    NAC_TRY(nac_queue_write(q, q->ptr, src));
    q->ptr = (q->ptr + src->dim[0]) % q->keys->dim[0];
    return NAC_OK;
}

nac_status nac_queue_reset_for(nac_queue_t *q, bool moco, uint64_t key) {
    return nac_queue_reset(q, moco ? 1.0f : NAC_QUEUE_NAC_MQ_STD, moco, key);
}
