/* Activation-pattern counting for ReLU MLPs on 2-D points, and the toy 2-D data sets.
 * Points are processed in chunks: patterns in parallel (one bit a hidden unit, packed),
 * then numbered serially through an open-addressing hash table of the distinct patterns,
 * so region ids follow the order of first appearance whatever the thread count. */
#include "eval/regions.h"

#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backend/rng.h"

enum { CHUNK = 1 << 15 };

/* Where the points come from: an array, or the centres of a grid's cells. */
typedef struct point_src {
    const float *pts; /* (n, 2), or NULL for the grid */
    float x0, y0, dx, dy;
    int nx;
} point_src;

static void point_at(const point_src *src, int64_t i, float p[2]) {
    if (src->pts) {
        p[0] = src->pts[2 * i], p[1] = src->pts[2 * i + 1];
        return;
    }
    int64_t iy = i / src->nx, ix = i % src->nx;
    p[0] = src->x0 + ((float)ix + 0.5f) * src->dx;
    p[1] = src->y0 + ((float)iy + 0.5f) * src->dy;
}

typedef struct mlp_info {
    int nhidden_layers;
    int hidden_units; /* pattern bits */
    int nwords;
    int max_width;
} mlp_info;

static nac_status check_mlp(const nac_region_mlp *mlp, mlp_info *info, const char *fn) {
    if (!mlp || mlp->nlayers < 1 || !mlp->layers)
        return nac_error(NAC_ERR_INVALID, "%s: the MLP needs at least one layer", fn);
    int prev = 2, units = 0, width = 2;
    int nh = mlp->nlayers - (mlp->last_is_output ? 1 : 0);
    for (int l = 0; l < mlp->nlayers; l++) {
        const nac_region_layer *L = &mlp->layers[l];
        if (L->in != prev || L->out < 1 || !L->w || !L->b)
            return nac_error(NAC_ERR_INVALID,
                             "%s: layer %d is (out %d, in %d) with w %s, b %s; its input must be %d wide",
                             fn, l, L->out, L->in, L->w ? "set" : "NULL", L->b ? "set" : "NULL", prev);
        prev = L->out;
        if (l < nh) units += L->out, width = L->out > width ? L->out : width;
    }
    *info = (mlp_info){.nhidden_layers = nh, .hidden_units = units, .nwords = (units + 63) / 64,
                       .max_width = width};
    return NAC_OK;
}

/* Pattern of one point: the hidden layers forward in float, one bit a unit (pre > 0). */
static void pattern(const nac_region_mlp *mlp, const mlp_info *info, const float p[2], float *a,
                    float *b, uint64_t *bits) {
    memset(bits, 0, (size_t)info->nwords * sizeof *bits);
    a[0] = p[0], a[1] = p[1];
    int bit = 0;
    for (int l = 0; l < info->nhidden_layers; l++) {
        const nac_region_layer *L = &mlp->layers[l];
        for (int o = 0; o < L->out; o++, bit++) {
            float s = L->b[o];
            for (int i = 0; i < L->in; i++) s += L->w[(int64_t)o * L->in + i] * a[i];
            bits[bit >> 6] |= (uint64_t)(s > 0.0f) << (bit & 63);
            b[o] = s > 0.0f ? s : 0.0f;
        }
        float *t = a;
        a = b, b = t;
    }
}

/* Distinct patterns, numbered in order of insertion. */
typedef struct ptable {
    int nw;
    int64_t cap;   /* slots, a power of two */
    int64_t *slot; /* (cap): region id, or -1 */
    uint64_t *pat; /* (patcap, nw) */
    int64_t count, patcap;
} ptable;

static uint64_t hash_words(const uint64_t *w, int nw) {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < nw; i++) {
        h ^= w[i];
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    return h;
}

static bool ptable_grow(ptable *t) {
    int64_t cap = t->cap ? 2 * t->cap : 1024;
    int64_t *slot = malloc((size_t)cap * sizeof *slot);
    uint64_t *pat = realloc(t->pat, (size_t)(cap / 2) * (size_t)t->nw * sizeof *pat);
    if (!slot || !pat) {
        free(slot);
        if (pat) t->pat = pat;
        return false;
    }
    t->pat = pat;
    t->patcap = cap / 2;
    for (int64_t i = 0; i < cap; i++) slot[i] = -1;
    for (int64_t r = 0; r < t->count; r++) {
        int64_t h = (int64_t)(hash_words(pat + r * t->nw, t->nw) & (uint64_t)(cap - 1));
        while (slot[h] >= 0) h = (h + 1) & (cap - 1);
        slot[h] = r;
    }
    free(t->slot);
    t->slot = slot;
    t->cap = cap;
    return true;
}

/* The id of pattern w, inserting it if new; -1 when out of memory. */
static int64_t ptable_id(ptable *t, const uint64_t *w) {
    if (t->count >= t->patcap && !ptable_grow(t)) return -1; /* load stays <= 1/2 */
    size_t bytes = (size_t)t->nw * sizeof *w;
    int64_t h = (int64_t)(hash_words(w, t->nw) & (uint64_t)(t->cap - 1));
    while (t->slot[h] >= 0) {
        if (memcmp(t->pat + t->slot[h] * t->nw, w, bytes) == 0) return t->slot[h];
        h = (h + 1) & (t->cap - 1);
    }
    memcpy(t->pat + t->count * t->nw, w, bytes);
    t->slot[h] = t->count;
    return t->count++;
}

static nac_status count_points(const nac_region_mlp *mlp, const point_src *src, int64_t n,
                               int64_t *region_id, int64_t *count, const char *fn) {
    mlp_info info;
    NAC_TRY(check_mlp(mlp, &info, fn));
    if (!count || n < 0) return nac_error(NAC_ERR_INVALID, "%s: count is NULL or n %lld < 0", fn, (long long)n);
    if (info.hidden_units == 0) { /* no hidden unit: one region, the whole plane */
        for (int64_t i = 0; region_id && i < n; i++) region_id[i] = 0;
        *count = n > 0;
        return NAC_OK;
    }
    int nw = info.nwords;
    int64_t chunk = n < CHUNK ? n : CHUNK;
    uint64_t *pats = malloc((size_t)(chunk > 0 ? chunk : 1) * (size_t)nw * sizeof *pats);
    ptable t = {.nw = nw};
    nac_status s = NAC_OK;
    if (!pats || !ptable_grow(&t)) {
        s = nac_error(NAC_ERR_NOMEM, "%s: patterns of %d units", fn, info.hidden_units);
        goto done;
    }
    int failed = 0;
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        int64_t cn = n - c0 < chunk ? n - c0 : chunk;
#pragma omp parallel
        {
            float *a = malloc(2 * (size_t)info.max_width * sizeof *a);
            if (!a) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (int64_t i = 0; i < cn; i++) {
                if (!a) continue;
                float p[2];
                point_at(src, c0 + i, p);
                pattern(mlp, &info, p, a, a + info.max_width, pats + i * nw);
            }
            free(a);
        }
        if (failed) {
            s = nac_error(NAC_ERR_NOMEM, "%s: activations of width %d", fn, info.max_width);
            goto done;
        }
        for (int64_t i = 0; i < cn; i++) {
            int64_t id = ptable_id(&t, pats + i * nw);
            if (id < 0) {
                s = nac_error(NAC_ERR_NOMEM, "%s: table of %lld distinct patterns", fn, (long long)t.count);
                goto done;
            }
            if (region_id) region_id[c0 + i] = id;
        }
    }
    *count = t.count;
done:
    free(pats);
    free(t.slot);
    free(t.pat);
    return s;
}

nac_status nac_regions_count(const nac_region_mlp *mlp, const float *pts, int64_t n,
                             int64_t *region_id, int64_t *count) {
    if (!pts && n > 0) return nac_error(NAC_ERR_INVALID, "nac_regions_count: pts is NULL");
    for (int64_t i = 0; i < 2 * n; i++)
        if (!isfinite(pts[i]))
            return nac_error(NAC_ERR_NUMERIC, "nac_regions_count: point %lld is not finite", (long long)(i / 2));
    point_src src = {.pts = pts};
    return count_points(mlp, &src, n, region_id, count, "nac_regions_count");
}

nac_status nac_regions_grid(const nac_region_mlp *mlp, float x0, float x1, float y0, float y1,
                            int nx, int ny, int64_t *region_id, int64_t *count) {
    if (nx < 1 || ny < 1 || !(x1 > x0) || !(y1 > y0) || !isfinite(x1 - x0) || !isfinite(y1 - y0))
        return nac_error(NAC_ERR_INVALID,
                         "nac_regions_grid: need nx, ny >= 1 and a finite box with x1 > x0, y1 > y0; got %d x %d on [%g, %g] x [%g, %g]",
                         nx, ny, x0, x1, y0, y1);
    point_src src = {.x0 = x0, .y0 = y0, .dx = (x1 - x0) / (float)nx, .dy = (y1 - y0) / (float)ny, .nx = nx};
    return count_points(mlp, &src, (int64_t)nx * ny, region_id, count, "nac_regions_grid");
}

/* ---- toy data ---- */

/* t_i of numpy.linspace(0, end, k, endpoint): evenly spaced, i = 0..k-1 */
static double linspace(double end, int64_t k, int64_t i, bool endpoint) {
    int64_t div = endpoint ? k - 1 : k;
    return div > 0 ? end * (double)i / (double)div : 0.0;
}

nac_status nac_toy_generate(const nac_toy_opts *o, float *pts, int32_t *labels) {
    static const double PI = 3.14159265358979323846;
    if (!o || (o->n > 0 && (!pts || !labels)) || o->n < 0 || !(o->noise >= 0) || !isfinite(o->noise))
        return nac_error(NAC_ERR_INVALID, "nac_toy_generate: need opts, pts, labels, n >= 0 and a finite noise >= 0");
    double factor = o->factor == 0 ? 0.5 : o->factor;
    if (o->kind == NAC_TOY_CIRCLES && !(factor > 0 && factor < 1))
        return nac_error(NAC_ERR_INVALID, "nac_toy_generate: circles need 0 < factor < 1, got %g", factor);
    if (o->kind == NAC_TOY_GAUSSIANS && o->nclasses < 1)
        return nac_error(NAC_ERR_INVALID, "nac_toy_generate: gaussians need nclasses >= 1, got %d", o->nclasses);
    if (o->kind != NAC_TOY_MOONS && o->kind != NAC_TOY_CIRCLES && o->kind != NAC_TOY_GAUSSIANS)
        return nac_error(NAC_ERR_INVALID, "nac_toy_generate: unknown kind %d", (int)o->kind);
    int64_t n = o->n, nout = n / 2, nin = n - nout;
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(o->seed, NAC_STREAM_SYNTH, 0x746F79u /* "toy" */, (uint64_t)o->kind));

    if (o->kind == NAC_TOY_GAUSSIANS) {
        for (int64_t i = 0; i < n; i++) {
            int c = (int)nac_rng_below(&r, (uint32_t)o->nclasses);
            double a = 2 * PI * c / o->nclasses;
            labels[i] = c;
            pts[2 * i] = (float)(2 * cos(a) + o->noise * nac_rng_normal(&r));
            pts[2 * i + 1] = (float)(2 * sin(a) + o->noise * nac_rng_normal(&r));
        }
        return NAC_OK;
    }
    int64_t *perm = malloc((size_t)(n > 0 ? n : 1) * sizeof *perm);
    if (!perm) return nac_error(NAC_ERR_NOMEM, "nac_toy_generate: %lld points", (long long)n);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    nac_rng_shuffle(&r, perm, n);
    for (int64_t p = 0; p < n; p++) {
        int64_t i = perm[p]; /* the i-th point in curve order goes to position p */
        bool inner = i >= nout;
        int64_t k = inner ? i - nout : i, len = inner ? nin : nout;
        double x, y;
        if (o->kind == NAC_TOY_MOONS) {
            double t = linspace(PI, len, k, true);
            x = inner ? 1 - cos(t) : cos(t);
            y = inner ? 1 - sin(t) - 0.5 : sin(t);
        } else {
            double t = linspace(2 * PI, len, k, false), s = inner ? factor : 1.0;
            x = s * cos(t), y = s * sin(t);
        }
        labels[p] = inner;
        pts[2 * p] = (float)(x + o->noise * nac_rng_normal(&r));
        pts[2 * p + 1] = (float)(y + o->noise * nac_rng_normal(&r));
    }
    free(perm);
    return NAC_OK;
}
