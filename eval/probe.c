/* The linear probe (see probe.h): softmax regression trained on the backend with
 * nac_linear_forward/backward and row-wise ops, a fixed batch shape (the last partial batch
 * is padded and masked, so nothing is re-planned), Nesterov SGD from nn/optim, and the
 * learning-rate search on a per-class validation split. */
#include "eval/probe.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/optim.h"
#include "nn/param.h"
#include "backend/rng.h"

void nac_probe_defaults(nac_probe_config *c) {
    memset(c, 0, sizeof *c);
    c->epochs = 100;
    c->batch = 256;
    c->nlrs = 4;
    c->lrs[0] = 0.01f;
    c->lrs[1] = 0.1f;
    c->lrs[2] = 1.0f;
    c->lrs[3] = 10.0f;
    c->val_frac = 0.1f;
    c->momentum = 0.9f;
    c->seed = 0;
}

void nac_probe_linear_free(nac_probe_linear *lin) {
    if (!lin) return;
    free(lin->w);
    free(lin->b);
    memset(lin, 0, sizeof *lin);
}

void nac_probe_result_free(nac_probe_result *r) {
    if (!r) return;
    free(r->confusion);
    r->confusion = NULL;
}

static nac_status check_labels(const int32_t *labels, int64_t n, int nclasses, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= nclasses)
            return nac_error(NAC_ERR_INVALID, "linear probe: %s label %d of row %" PRId64
                             " is outside 0..%d", what, labels[i], i, nclasses - 1);
    return NAC_OK;
}

static nac_status check_cfg(const nac_probe_config *c) {
    if (!c || c->epochs < 1 || c->batch < 1 || c->nlrs < 1 || c->nlrs > NAC_PROBE_MAX_LRS ||
        !(c->val_frac > 0 && c->val_frac < 1) || !(c->momentum >= 0 && c->momentum < 1))
        return nac_error(NAC_ERR_INVALID, "linear probe: bad config (epochs >= 1, batch >= 1, "
                         "1..%d learning rates, 0 < val_frac < 1, 0 <= momentum < 1)",
                         NAC_PROBE_MAX_LRS);
    for (int i = 0; i < c->nlrs; i++)
        if (!(c->lrs[i] > 0) || !isfinite(c->lrs[i]))
            return nac_error(NAC_ERR_INVALID, "linear probe: learning rate %d is %g (must be > 0)",
                             i, (double)c->lrs[i]);
    return NAC_OK;
}

nac_status nac_probe_split(const int32_t *labels, int64_t n, int nclasses, float val_frac,
                           uint64_t seed, int64_t *train_idx, int64_t *ntrain, int64_t *val_idx,
                           int64_t *nval) {
    if (!labels || !train_idx || !val_idx || !ntrain || !nval || n < 0 || nclasses < 1 ||
        !(val_frac > 0 && val_frac < 1))
        return nac_error(NAC_ERR_INVALID, "nac_probe_split: bad arguments (n %" PRId64
                         ", %d classes, val_frac %g)", n, nclasses, (double)val_frac);
    NAC_TRY(check_labels(labels, n, nclasses, "training"));
    int64_t *rows = malloc((size_t)(n > 0 ? n : 1) * sizeof *rows);
    unsigned char *is_val = calloc((size_t)(n > 0 ? n : 1), 1);
    if (!rows || !is_val) {
        free(rows);
        free(is_val);
        return nac_error(NAC_ERR_NOMEM, "nac_probe_split: %" PRId64 " rows", n);
    }
    for (int k = 0; k < nclasses; k++) {
        int64_t c = 0;
        for (int64_t i = 0; i < n; i++)
            if (labels[i] == k) rows[c++] = i;
        if (c < 2) continue;
        int64_t v = llround((double)val_frac * (double)c);
        if (v < 1) v = 1;
        if (v > c - 1) v = c - 1;
        nac_rng_t r;
        nac_rng_init(&r, nac_rng_key(seed, NAC_STREAM_SPLIT, 0x70726F6265ull /* "probe" */,
                                     (uint64_t)k));
        nac_rng_shuffle(&r, rows, c);
        for (int64_t j = 0; j < v; j++) is_val[rows[j]] = 1;
    }
    *ntrain = *nval = 0;
    for (int64_t i = 0; i < n; i++) {
        if (is_val[i]) val_idx[(*nval)++] = i;
        else train_idx[(*ntrain)++] = i;
    }
    free(rows);
    free(is_val);
    return NAC_OK;
}

/* ---- the batch workspace: every tensor of one step, planned for `batch` rows ---- */
typedef struct probe_ws {
    int64_t b, dim;
    int c;
    nac_params_t ps;      /* "weight" (C, dim), "bias" (C) */
    nac_tensor_t *x;      /* (B, dim) */
    nac_tensor_t *y;      /* (B, C) one-hot of the labels, zero rows for padding */
    nac_tensor_t *mask;   /* (B) 1/m for the m real rows, 0 for padding */
    nac_tensor_t *logits, *p, *diff, *dl, *tmp; /* (B, C) */
    nac_tensor_t *lse, *picked, *lrow, *lrow_m; /* (B) */
    nac_tensor_t *sum, *acc;                    /* (1) */
    float *xh, *yh, *mh;                        /* host staging */
} probe_ws;

static void ws_free(probe_ws *w) {
    nac_params_free(&w->ps);
    nac_tensor_t *ts[] = {w->x, w->y, w->mask, w->logits, w->p, w->diff, w->dl, w->tmp,
                          w->lse, w->picked, w->lrow, w->lrow_m, w->sum, w->acc};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) nac_tensor_free(ts[i]);
    free(w->xh);
    free(w->yh);
    free(w->mh);
    memset(w, 0, sizeof *w);
}

static nac_status ws_create(nac_backend_t *be, int64_t b, int64_t dim, int c, probe_ws *w) {
    memset(w, 0, sizeof *w);
    w->b = b;
    w->dim = dim;
    w->c = c;
    nac_params_init(&w->ps);
    int64_t wd[2] = {c, dim}, bd = c;
    if (!nac_params_add(&w->ps, be, "weight", 2, wd, 0) ||
        !nac_params_add(&w->ps, be, "bias", 1, &bd, NAC_PARAM_BIAS)) {
        nac_status s = nac_error_prefix(NAC_ERR_NOMEM, "linear probe (%d x %" PRId64 "): ", c, dim);
        ws_free(w);
        return s;
    }
    w->x = nac_tensor_new2(be, b, dim);
    w->y = nac_tensor_new2(be, b, c);
    w->mask = nac_tensor_new1(be, b);
    w->logits = nac_tensor_new2(be, b, c);
    w->p = nac_tensor_new2(be, b, c);
    w->diff = nac_tensor_new2(be, b, c);
    w->dl = nac_tensor_new2(be, b, c);
    w->tmp = nac_tensor_new2(be, b, c);
    w->lse = nac_tensor_new1(be, b);
    w->picked = nac_tensor_new1(be, b);
    w->lrow = nac_tensor_new1(be, b);
    w->lrow_m = nac_tensor_new1(be, b);
    w->sum = nac_tensor_new1(be, 1);
    w->acc = nac_tensor_new1(be, 1);
    w->xh = malloc((size_t)(b * dim) * sizeof *w->xh);
    w->yh = malloc((size_t)(b * c) * sizeof *w->yh);
    w->mh = malloc((size_t)b * sizeof *w->mh);
    if (!w->x || !w->y || !w->mask || !w->logits || !w->p || !w->diff || !w->dl || !w->tmp ||
        !w->lse || !w->picked || !w->lrow || !w->lrow_m || !w->sum || !w->acc || !w->xh ||
        !w->yh || !w->mh) {
        ws_free(w);
        return nac_error(NAC_ERR_NOMEM, "linear probe: out of memory (batch %" PRId64 ", %" PRId64
                         " features, %d classes)", b, dim, c);
    }
    return NAC_OK;
}

/* Upload rows order[0..m) (indices into idx, or rows of x directly when idx is NULL),
 * padded to B by repeating the first row; labels as one-hot rows and the 1/m mask. */
static nac_status ws_load(probe_ws *w, const float *x, const int32_t *labels, const int64_t *idx,
                          const int64_t *pos, int64_t m, bool with_targets) {
    for (int64_t i = 0; i < w->b; i++) {
        int64_t k = i < m ? pos[i] : pos[0];
        int64_t row = idx ? idx[k] : k;
        memcpy(w->xh + i * w->dim, x + row * w->dim, (size_t)w->dim * sizeof *w->xh);
        if (!with_targets) continue;
        float *y = w->yh + i * w->c;
        memset(y, 0, (size_t)w->c * sizeof *y);
        if (i < m) y[labels[row]] = 1.0f;
        w->mh[i] = i < m ? 1.0f / (float)m : 0.0f;
    }
    NAC_TRY(nac_tensor_from_host(w->x, w->xh));
    if (with_targets) {
        NAC_TRY(nac_tensor_from_host(w->y, w->yh));
        NAC_TRY(nac_tensor_from_host(w->mask, w->mh));
    }
    return NAC_OK;
}

/* One step on the loaded batch: logits, the softmax cross-entropy gradient into the
 * parameters' g, the optimiser update at lr. With `loss`, the batch's masked mean loss,
 * times m, is also added to acc (the loss costs seven more ops, so only the last epoch,
 * which reports it, pays for them). */
static nac_status ws_step(probe_ws *w, nac_optim_t *opt, float lr, int64_t m, bool loss) {
    nac_tensor_t *W = &w->ps.items[0]->w, *B = &w->ps.items[1]->w;
    NAC_TRY(nac_linear_forward(w->x, W, B, w->logits));          /* (B, C) */
    NAC_TRY(nac_row_softmax(w->logits, w->p));                   /* (B, C) */
    NAC_TRY(nac_binary(NAC_BIN_SUB, w->p, w->y, w->diff));       /* p - onehot */
    NAC_TRY(nac_col_broadcast(NAC_BIN_MUL, w->diff, w->mask, w->dl)); /* / m, 0 on padding */
    NAC_TRY(nac_linear_backward(w->x, W, w->dl, NULL, &w->ps.items[0]->g, &w->ps.items[1]->g));
    if (loss) { /* loss_i = logsumexp_j logits_ij - logits_i,y_i */
        NAC_TRY(nac_row_logsumexp(w->logits, w->lse));
        NAC_TRY(nac_binary(NAC_BIN_MUL, w->logits, w->y, w->tmp));
        NAC_TRY(nac_row_sum(w->tmp, w->picked));
        NAC_TRY(nac_binary(NAC_BIN_SUB, w->lse, w->picked, w->lrow));
        NAC_TRY(nac_binary(NAC_BIN_MUL, w->lrow, w->mask, w->lrow_m));
        NAC_TRY(nac_sum_all(w->lrow_m, w->sum));
        NAC_TRY(nac_axpby((float)m, w->sum, 1.0f, w->acc));
    }
    return nac_optim_step(opt, &w->ps, lr);
}

/* Whether every weight and bias is finite (read back once an epoch: a diverged fit stops). */
static nac_status ws_finite(probe_ws *w, float *wh, float *bh, bool *finite) {
    NAC_TRY(nac_tensor_to_host(&w->ps.items[0]->w, wh));
    NAC_TRY(nac_tensor_to_host(&w->ps.items[1]->w, bh));
    *finite = true;
    for (int64_t i = 0; i < (int64_t)w->c * w->dim && *finite; i++) *finite = isfinite(wh[i]);
    for (int i = 0; i < w->c && *finite; i++) *finite = isfinite(bh[i]);
    return NAC_OK;
}

static nac_status init_linear(probe_ws *w, uint64_t seed) {
    int64_t nw = (int64_t)w->c * w->dim;
    float *v = malloc((size_t)(nw + w->c) * sizeof *v);
    if (!v) return nac_error(NAC_ERR_NOMEM, "linear probe: out of memory");
    double bound = 1.0 / sqrt((double)w->dim); /* PyTorch's nn.Linear default */
    for (int p = 0; p < 2; p++) {
        nac_rng_t r;
        nac_rng_init(&r, nac_rng_key(seed, NAC_STREAM_INIT, 0x70726F6265ull, (uint64_t)p));
        int64_t cnt = p == 0 ? nw : w->c;
        float *dst = p == 0 ? v : v + nw;
        for (int64_t i = 0; i < cnt; i++) dst[i] = (float)((2 * nac_rng_uniform(&r) - 1) * bound);
    }
    nac_status s = nac_tensor_from_host(&w->ps.items[0]->w, v);
    if (s == NAC_OK) s = nac_tensor_from_host(&w->ps.items[1]->w, v + nw);
    free(v);
    return s;
}

nac_status nac_probe_train(nac_backend_t *be, const float *x, const int32_t *labels,
                           const int64_t *idx, int64_t n, int64_t dim, int nclasses, float lr,
                           const nac_probe_config *cfg, nac_probe_linear *out) {
    if (!be || !x || !labels || !idx || !out || n < 1 || dim < 1 || nclasses < 1)
        return nac_error(NAC_ERR_INVALID, "nac_probe_train: bad arguments (%" PRId64 " rows of %"
                         PRId64 " features, %d classes)", n, dim, nclasses);
    NAC_TRY(check_cfg(cfg));
    if (!(lr > 0) || !isfinite(lr))
        return nac_error(NAC_ERR_INVALID, "nac_probe_train: learning rate %g", (double)lr);
    memset(out, 0, sizeof *out);
    for (int64_t i = 0; i < n; i++)
        if (labels[idx[i]] < 0 || labels[idx[i]] >= nclasses)
            return nac_error(NAC_ERR_INVALID, "linear probe: label %d of row %" PRId64
                             " is outside 0..%d", labels[idx[i]], idx[i], nclasses - 1);
    int64_t b = cfg->batch < n ? cfg->batch : n;
    int64_t spe = (n + b - 1) / b;
    probe_ws w;
    NAC_TRY(ws_create(be, b, dim, nclasses, &w));
    int64_t *order = malloc((size_t)n * sizeof *order);
    nac_status s = order ? NAC_OK : nac_error(NAC_ERR_NOMEM, "linear probe: out of memory");
    nac_optim_t opt;
    nac_optim_config oc = nac_optim_defaults(NAC_OPT_SGD);
    oc.momentum = cfg->momentum;
    oc.nesterov = cfg->momentum > 0;
    oc.weight_decay = 0.0f;
    if (s == NAC_OK) s = nac_optim_init(&opt, &oc);
    nac_schedule_t sched = {.kind = NAC_SCHED_COSINE, .base_lr = lr, .warmup_steps = 0,
                            .total_steps = spe * cfg->epochs, .final_lr = 0.0f};
    if (s == NAC_OK) s = nac_schedule_validate(&sched);
    if (s == NAC_OK) s = init_linear(&w, cfg->seed);
    float *wh = malloc((size_t)(nclasses * dim) * sizeof *wh);
    float *bh = malloc((size_t)nclasses * sizeof *bh);
    if (s == NAC_OK && (!wh || !bh)) s = nac_error(NAC_ERR_NOMEM, "linear probe: out of memory");
    double loss = NAN;
    bool diverged = false;
    int64_t step = 0;
    for (int e = 0; s == NAC_OK && e < cfg->epochs && !diverged; e++) {
        bool last = e == cfg->epochs - 1;
        for (int64_t i = 0; i < n; i++) order[i] = i;
        nac_rng_t r;
        nac_rng_init(&r, nac_rng_key(cfg->seed, NAC_STREAM_SHUFFLE, 0x70726F6265ull, (uint64_t)e));
        nac_rng_shuffle(&r, order, n);
        if (last) s = nac_tensor_fill(w.acc, 0.0f);
        for (int64_t start = 0; s == NAC_OK && start < n; start += b, step++) {
            int64_t m = n - start < b ? n - start : b;
            s = ws_load(&w, x, labels, idx, order + start, m, true);
            if (s == NAC_OK) s = ws_step(&w, &opt, nac_schedule_lr(&sched, step), m, last);
        }
        bool finite = true;
        if (s == NAC_OK) s = ws_finite(&w, wh, bh, &finite);
        if (s == NAC_OK && last) {
            float acc = 0;
            s = nac_tensor_item(w.acc, &acc);
            loss = (double)acc / (double)n;
        }
        if (s == NAC_OK && (!finite || (last && !isfinite(loss)))) {
            diverged = true;
            loss = NAN;
        }
    }
    if (s == NAC_OK) {
        out->dim = dim;
        out->nclasses = nclasses;
        out->w = wh;
        out->b = bh;
        out->final_loss = loss;
        out->diverged = diverged;
    } else {
        free(wh);
        free(bh);
    }
    free(order);
    ws_free(&w);
    return s;
}

/* Rank of the label among the logits: the number of classes ranked before it (larger
 * logit, or equal logit and lower index). NaN logits rank the label last. */
static int label_rank(const float *z, int c, int label) {
    float zl = z[label];
    if (isnan(zl)) return c;
    int r = 0;
    for (int k = 0; k < c; k++)
        if (k != label && (isnan(z[k]) || z[k] > zl || (z[k] == zl && k < label))) r++;
    return r;
}

static int argmax_row(const float *z, int c) {
    int best = 0;
    for (int k = 1; k < c; k++)
        if (z[k] > z[best] || (isnan(z[best]) && !isnan(z[k]))) best = k;
    return best;
}

nac_status nac_probe_score(nac_backend_t *be, const nac_probe_linear *lin, const float *x,
                           const int32_t *labels, const int64_t *idx, int64_t n, int batch,
                           double *top1, double *top5, int32_t *pred, int64_t *confusion) {
    if (!be || !lin || !lin->w || !lin->b || !x || !labels || n < 1 || batch < 1)
        return nac_error(NAC_ERR_INVALID, "nac_probe_score: bad arguments (%" PRId64
                         " rows, batch %d)", n, batch);
    int c = lin->nclasses;
    for (int64_t i = 0; i < n; i++) {
        int64_t row = idx ? idx[i] : i;
        if (labels[row] < 0 || labels[row] >= c)
            return nac_error(NAC_ERR_INVALID, "linear probe: label %d of row %" PRId64
                             " is outside 0..%d", labels[row], row, c - 1);
    }
    int64_t b = batch < n ? batch : n;
    probe_ws w;
    NAC_TRY(ws_create(be, b, lin->dim, c, &w));
    int64_t *pos = malloc((size_t)b * sizeof *pos);
    float *z = malloc((size_t)(b * c) * sizeof *z);
    nac_status s = pos && z ? NAC_OK : nac_error(NAC_ERR_NOMEM, "linear probe: out of memory");
    if (s == NAC_OK) s = nac_tensor_from_host(&w.ps.items[0]->w, lin->w);
    if (s == NAC_OK) s = nac_tensor_from_host(&w.ps.items[1]->w, lin->b);
    int64_t hit1 = 0, hit5 = 0;
    int k5 = c < 5 ? c : 5;
    for (int64_t start = 0; s == NAC_OK && start < n; start += b) {
        int64_t m = n - start < b ? n - start : b;
        for (int64_t i = 0; i < m; i++) pos[i] = start + i;
        s = ws_load(&w, x, labels, idx, pos, m, false);
        if (s == NAC_OK)
            s = nac_linear_forward(w.x, &w.ps.items[0]->w, &w.ps.items[1]->w, w.logits);
        if (s == NAC_OK) s = nac_tensor_to_host(w.logits, z);
        for (int64_t i = 0; s == NAC_OK && i < m; i++) {
            int64_t row = idx ? idx[start + i] : start + i;
            const float *zi = z + i * c;
            int y = labels[row], r = label_rank(zi, c, y), p = argmax_row(zi, c);
            hit1 += r == 0;
            hit5 += r < k5;
            if (pred) pred[start + i] = p;
            if (confusion) confusion[(int64_t)y * c + p]++;
        }
    }
    if (s == NAC_OK) {
        if (top1) *top1 = (double)hit1 / (double)n;
        if (top5) *top5 = (double)hit5 / (double)n;
    }
    free(pos);
    free(z);
    ws_free(&w);
    return s;
}

static nac_status check_finite(const float *x, int64_t n, int64_t dim, const char *what) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++)
            if (!isfinite(x[i * dim + j]))
                return nac_error(NAC_ERR_NUMERIC, "linear probe: %s feature %" PRId64 " of row %"
                                 PRId64 " is %g", what, j, i, (double)x[i * dim + j]);
    return NAC_OK;
}

/* z-score copies of train (n, dim) and test (m, dim) with the training rows' statistics. */
static nac_status standardize(const float *train, int64_t n, const float *test, int64_t m,
                              int64_t dim, float **tr_out, float **te_out) {
    double *mu = calloc((size_t)dim, sizeof *mu), *var = calloc((size_t)dim, sizeof *var);
    *tr_out = malloc((size_t)(n * dim) * sizeof **tr_out);
    *te_out = malloc((size_t)(m * dim) * sizeof **te_out);
    if (!mu || !var || !*tr_out || !*te_out) {
        free(mu);
        free(var);
        free(*tr_out);
        free(*te_out);
        *tr_out = *te_out = NULL;
        return nac_error(NAC_ERR_NOMEM, "linear probe: standardising %" PRId64 " x %" PRId64
                         " features: out of memory", n + m, dim);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++) mu[j] += train[i * dim + j];
    for (int64_t j = 0; j < dim; j++) mu[j] /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++) {
            double d = train[i * dim + j] - mu[j];
            var[j] += d * d;
        }
    for (int64_t j = 0; j < dim; j++) {
        double sd = sqrt(var[j] / (double)n);
        var[j] = sd > 1e-12 ? 1.0 / sd : 1.0; /* now the scale */
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++)
            (*tr_out)[i * dim + j] = (float)((train[i * dim + j] - mu[j]) * var[j]);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < dim; j++)
            (*te_out)[i * dim + j] = (float)((test[i * dim + j] - mu[j]) * var[j]);
    free(mu);
    free(var);
    return NAC_OK;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

nac_status nac_probe_run(nac_backend_t *be, const float *train, const int32_t *train_labels,
                         int64_t n, const float *test, const int32_t *test_labels, int64_t m,
                         int64_t dim, int nclasses, const nac_probe_config *cfg,
                         nac_probe_result *out) {
    if (!be || !train || !train_labels || !test || !test_labels || !out || n < 2 || m < 1 ||
        dim < 1 || nclasses < 1)
        return nac_error(NAC_ERR_INVALID, "nac_probe_run: bad arguments (%" PRId64 " training rows, %"
                         PRId64 " test rows, %" PRId64 " features, %d classes)", n, m, dim, nclasses);
    NAC_TRY(check_cfg(cfg));
    NAC_TRY(check_labels(train_labels, n, nclasses, "training"));
    NAC_TRY(check_labels(test_labels, m, nclasses, "test"));
    NAC_TRY(check_finite(train, n, dim, "training"));
    NAC_TRY(check_finite(test, m, dim, "test"));
    double t0 = now_s();
    memset(out, 0, sizeof *out);
    float *ztr = NULL, *zte = NULL;
    if (cfg->standardize) {
        NAC_TRY(standardize(train, n, test, m, dim, &ztr, &zte));
        train = ztr;
        test = zte;
    }
    out->nlrs = cfg->nlrs;
    memcpy(out->lrs, cfg->lrs, sizeof out->lrs);
    out->nclasses = nclasses;
    out->ntest = m;
    int64_t *tr = malloc((size_t)n * sizeof *tr), *va = malloc((size_t)n * sizeof *va);
    out->confusion = calloc((size_t)nclasses * (size_t)nclasses, sizeof *out->confusion);
    nac_status s = tr && va && out->confusion ? NAC_OK
                                              : nac_error(NAC_ERR_NOMEM, "linear probe: out of memory");
    if (s == NAC_OK)
        s = nac_probe_split(train_labels, n, nclasses, cfg->val_frac, cfg->seed, tr, &out->nsearch,
                            va, &out->nval);
    if (s == NAC_OK && (out->nval == 0 || out->nsearch == 0))
        s = nac_error(NAC_ERR_INVALID, "linear probe: %" PRId64 " training rows leave no validation "
                      "split (every class needs at least 2 rows)", n);
    int best = -1;
    for (int k = 0; s == NAC_OK && k < cfg->nlrs; k++) {
        nac_probe_linear lin;
        s = nac_probe_train(be, train, train_labels, tr, out->nsearch, dim, nclasses, cfg->lrs[k],
                            cfg, &lin);
        if (s != NAC_OK) break;
        out->val_diverged[k] = lin.diverged;
        if (!lin.diverged)
            s = nac_probe_score(be, &lin, train, train_labels, va, out->nval, cfg->batch,
                                &out->val_top1[k], NULL, NULL, NULL);
        nac_probe_linear_free(&lin);
        if (s == NAC_OK && !out->val_diverged[k] && (best < 0 || out->val_top1[k] > out->val_top1[best]))
            best = k;
    }
    if (s == NAC_OK && best < 0)
        s = nac_error(NAC_ERR_NUMERIC, "linear probe: the loss diverged at every learning rate "
                      "searched (%d of them, the smallest %g)", cfg->nlrs, (double)cfg->lrs[0]);
    nac_probe_linear fin = {0};
    if (s == NAC_OK) {
        out->lr = cfg->lrs[best];
        for (int64_t i = 0; i < n; i++) tr[i] = i;
        s = nac_probe_train(be, train, train_labels, tr, n, dim, nclasses, out->lr, cfg, &fin);
    }
    if (s == NAC_OK && fin.diverged)
        s = nac_error(NAC_ERR_NUMERIC, "linear probe: the final fit at lr %g diverged (loss %g)",
                      (double)out->lr, fin.final_loss);
    if (s == NAC_OK)
        s = nac_probe_score(be, &fin, train, train_labels, NULL, n, cfg->batch, &out->train_top1,
                            NULL, NULL, NULL);
    if (s == NAC_OK)
        s = nac_probe_score(be, &fin, test, test_labels, NULL, m, cfg->batch, &out->test_top1,
                            &out->test_top5, NULL, out->confusion);
    out->final_loss = fin.final_loss;
    nac_probe_linear_free(&fin);
    free(tr);
    free(va);
    free(ztr);
    free(zte);
    out->ntrain = n;
    out->seconds = now_s() - t0;
    if (s != NAC_OK) nac_probe_result_free(out);
    return s;
}
