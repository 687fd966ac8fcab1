/* Linear regions of a ReLU MLP on 2-D input (paper Figure 1): the activation pattern of
 * a point is the on/off bit of every hidden unit; the number of distinct patterns over
 * the data or over a dense grid counts the linear regions the points fall in. Also the
 * toy 2-D data sets (two moons, circles, Gaussian mixture), seeded by nac_rng. */
#ifndef NAC_EVAL_REGIONS_H
#define NAC_EVAL_REGIONS_H

#include <stdint.h>

#include "backend/status.h"

/* One fully connected layer, host arrays: y = W x + b. */
typedef struct nac_region_layer {
    int in, out;
    const float *w; /* (out, in) row-major, as PyTorch's nn.Linear.weight */
    const float *b; /* (out) */
} nac_region_layer;

/* layers[0].in == 2; layers[l].in == layers[l - 1].out. A ReLU follows every layer but
 * the last; the last (the output layer) has no pattern bits and is not evaluated, so a
 * caller may pass the hidden layers only and set last_is_output = 0. */
typedef struct nac_region_mlp {
    int nlayers;
    const nac_region_layer *layers;
    int last_is_output; /* 1: the last layer is the linear output; 0: every layer is hidden */
} nac_region_mlp;

/* Count the distinct activation patterns of the n points pts (n, 2). A unit is on where
 * its pre-activation is > 0 (the ReLU's derivative; exactly 0 counts as off). region_id
 * (n, optional) receives each point's region, numbered 0, 1, ... in order of first
 * appearance among the points. A network with no hidden unit has one region. Patterns
 * are computed in parallel (float, as the network would) and numbered serially, so the
 * ids do not depend on the thread count. */
nac_status nac_regions_count(const nac_region_mlp *mlp, const float *pts, int64_t n,
                             int64_t *region_id, int64_t *count);

/* The same over an nx x ny grid of cell centres on the box [x0, x1] x [y0, y1]:
 * cell (iy, ix) is the point (x0 + (ix + 0.5) (x1 - x0) / nx, y0 + (iy + 0.5) (y1 - y0) / ny),
 * and region_id (ny, nx, optional) is row-major with iy = 0 at y0 (the bottom row; flip
 * it for an image whose first row is the top). */
nac_status nac_regions_grid(const nac_region_mlp *mlp, float x0, float x1, float y0, float y1,
                            int nx, int ny, int64_t *region_id, int64_t *count);

typedef enum nac_toy_kind {
    NAC_TOY_MOONS,   /* sklearn make_moons: two interleaved half circles, labels 0, 1 */
    NAC_TOY_CIRCLES, /* sklearn make_circles: outer circle (label 0), inner (label 1) */
    NAC_TOY_GAUSSIANS /* nclasses Gaussian blobs, centres evenly on the circle of radius 2 */
} nac_toy_kind;

typedef struct nac_toy_opts {
    nac_toy_kind kind;
    int64_t n;      /* points */
    float noise;    /* std of the Gaussian noise added to every coordinate (blob std for
                       GAUSSIANS) */
    float factor;   /* CIRCLES: inner radius / outer radius, in (0, 1); 0.5 if 0 */
    int nclasses;   /* GAUSSIANS: number of blobs (>= 1) */
    uint64_t seed;
} nac_toy_opts;

/* Fill pts (n, 2) and labels (n). As scikit-learn: MOONS and CIRCLES put floor(n / 2)
 * points on the outer curve (label 0) and the rest on the inner one, evenly spaced along
 * each curve, and shuffle; GAUSSIANS draws each point's class uniformly. Every random
 * number comes from the NAC_STREAM_SYNTH stream of seed, so the data is a pure
 * function of the options. */
nac_status nac_toy_generate(const nac_toy_opts *opts, float *pts, int32_t *labels);

#endif
