/* `nac regions`: linear regions of a small ReLU MLP on 2-D toy data before and after a
 * short NAC training, counted and drawn (paper Figure 1). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "app/app.h"
#include "app/evalcmd.h"
#include "app/run.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/recipe.h"
#include "data/png.h"
#include "encoders/encfile.h"
#include "encoders/encoder.h"
#include "encoders/head.h"
#include "eval/hash.h"
#include "eval/knn.h"
#include "eval/probe.h"
#include "eval/regions.h"
#include "nac/loss.h"
#include "nac/toy.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "nn/optim.h"
#include "backend/rng.h"
#include "io/safetensors.h"

/* ---- nac regions ---- */

typedef struct regions_opts {
    nac_toy_opts toy;
    int sizes[NAC_MLP_MAX_SIZES], nsizes;
    int steps, batch, proj_dim, grid, seed, threads;
    float lr, p, view_noise;
    const char *runs_dir, *name, *backend;
} regions_opts;

typedef struct regions_counts {
    int64_t data, grid;         /* the network: the encoder, g's hidden layer, the code bits */
    int64_t enc_data, enc_grid; /* the encoder's hidden units alone */
} regions_counts;

typedef nac_toy_model regions_model;

/* One Linear layer of a parameter list as host arrays for eval/regions. */
static nac_status host_layer(nac_params_t *ps, const char *wname, const char *bname,
                             nac_region_layer *L, float **wb, float **bb) {
    nac_param_t *w = nac_params_find(ps, wname), *b = nac_params_find(ps, bname);
    if (!w || !b || w->w.ndim != 2) return nac_error(NAC_ERR_INVALID, "regions: no layer %s", wname);
    int out = (int)w->w.dim[0], in = (int)w->w.dim[1];
    *wb = malloc((size_t)in * out * sizeof(float));
    *bb = malloc((size_t)out * sizeof(float));
    if (!*wb || !*bb) return nac_error(NAC_ERR_NOMEM, "regions: out of memory");
    NAC_TRY(nac_tensor_to_host(&w->w, *wb));
    NAC_TRY(nac_tensor_to_host(&b->w, *bb));
    *L = (nac_region_layer){.in = in, .out = out, .w = *wb, .b = *bb};
    return NAC_OK;
}

/* The network as host layers: the encoder's hidden layers, then (with_code) the head g's
 * hidden layer and its output, whose sign is the activation code c = sign(o) (the 1/sqrt(D)
 * scale does not change a sign). Returns the number of layers in *nl. */
static nac_status rmodel_layers(regions_model *rm, const regions_opts *o, bool with_code,
                                nac_region_layer *L, float **bufs, int *nl) {
    nac_params_t *ps = nac_encoder_params(rm->enc);
    *nl = 0;
    for (int i = 0; i + 1 < o->nsizes; i++, ++*nl) {
        char wn[64], bn[64];
        snprintf(wn, sizeof wn, "layers.%d.weight", i);
        snprintf(bn, sizeof bn, "layers.%d.bias", i);
        NAC_TRY(host_layer(ps, wn, bn, &L[*nl], &bufs[2 * *nl], &bufs[2 * *nl + 1]));
    }
    if (!with_code) return NAC_OK;
    nac_params_t *gp = nac_head_params(rm->g);
    NAC_TRY(host_layer(gp, "g.0.weight", "g.0.bias", &L[*nl], &bufs[2 * *nl], &bufs[2 * *nl + 1]));
    ++*nl;
    NAC_TRY(host_layer(gp, "g.2.weight", "g.2.bias", &L[*nl], &bufs[2 * *nl], &bufs[2 * *nl + 1]));
    ++*nl;
    return NAC_OK;
}

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void put_px(uint8_t *img, int n, int row, int col, uint8_t v) {
    if (row < 0 || row >= n || col < 0 || col >= n) return;
    for (int ch = 0; ch < 3; ch++) img[(size_t)ch * n * n + (size_t)row * n + col] = v;
}

/* Regions as colours (a hash of the region id, kept light), points on top: label 0 black,
 * others white with a black ring. ids (n, n), bottom row first. */
static nac_status draw_regions(const char *path, const int64_t *ids, int n, const float *box,
                               const float *pts, const int32_t *labels, int64_t np) {
    uint8_t *img = malloc((size_t)3 * n * n);
    if (!img) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    for (int iy = 0; iy < n; iy++)
        for (int ix = 0; ix < n; ix++) {
            uint64_t hsh = mix64((uint64_t)ids[(size_t)iy * n + ix]);
            int row = n - 1 - iy;
            for (int ch = 0; ch < 3; ch++)
                img[(size_t)ch * n * n + (size_t)row * n + ix] = (uint8_t)(96 + ((hsh >> (8 * ch)) & 0xFF) * 150 / 255);
        }
    for (int64_t i = 0; i < np; i++) {
        int col = (int)floorf((pts[2 * i] - box[0]) / (box[1] - box[0]) * (float)n);
        int row = n - 1 - (int)floorf((pts[2 * i + 1] - box[2]) / (box[3] - box[2]) * (float)n);
        bool white = labels[i] % 2 != 0;
        for (int dy = -2; dy <= 2; dy++)
            for (int dx = -2; dx <= 2; dx++) {
                int d2 = dx * dx + dy * dy;
                if (d2 > 5) continue;
                put_px(img, n, row + dy, col + dx, white && d2 <= 2 ? 255 : 0);
            }
    }
    nac_status s = nac_png_write(path, img, 3, n, n);
    free(img);
    return s;
}

/* Count the regions on the data and on the grid, of the network up to the code (drawn
 * into dir/<stage>.png) and of the encoder alone (dir/<stage>_encoder.png). */
static nac_status regions_measure(regions_model *rm, const regions_opts *o, const float *pts,
                                  const int32_t *labels, const float *box, const char *dir,
                                  const char *stage, regions_counts *c) {
    enum { MAXL = NAC_MLP_MAX_SIZES + 2 };
    nac_region_layer L[MAXL];
    float *bufs[2 * MAXL] = {0};
    int64_t *ids = malloc((size_t)o->grid * o->grid * sizeof *ids);
    nac_status s = ids ? NAC_OK : nac_error(NAC_ERR_NOMEM, "regions: out of memory");
    for (int pass = 0; s == NAC_OK && pass < 2; pass++) {
        bool code = pass == 0;
        int nl = 0;
        s = rmodel_layers(rm, o, code, L, bufs, &nl);
        nac_region_mlp mlp = {.nlayers = nl, .layers = L, .last_is_output = 0};
        if (s == NAC_OK) s = nac_regions_count(&mlp, pts, o->toy.n, NULL, code ? &c->data : &c->enc_data);
        if (s == NAC_OK)
            s = nac_regions_grid(&mlp, box[0], box[1], box[2], box[3], o->grid, o->grid, ids,
                                 code ? &c->grid : &c->enc_grid);
        char path[700];
        snprintf(path, sizeof path, "%s/%s%s.png", dir, stage, code ? "" : "_encoder");
        if (s == NAC_OK) s = draw_regions(path, ids, o->grid, box, pts, labels, o->toy.n);
        for (int i = 0; i < 2 * MAXL; i++) {
            free(bufs[i]);
            bufs[i] = NULL;
        }
    }
    free(ids);
    return s;
}

/* The toy model's configuration from the options. */
static nac_toy_config toy_config(const regions_opts *o, int k) {
    nac_toy_config c = {.nsizes = o->nsizes, .k = k, .proj_dim = o->proj_dim, .seed = o->seed,
                        .lr = o->lr, .p = o->p, .view_noise = o->view_noise};
    memcpy(c.sizes, o->sizes, sizeof c.sizes);
    return c;
}

/* A metrics line every 10 steps and at the last. */
typedef struct train_log {
    nac_run_t *run;
    int steps;
} train_log;

static nac_status log_step(void *ctx, int step, float loss) {
    const train_log *tl = ctx;
    if (step % 10 != 0 && step + 1 != tl->steps) return NAC_OK;
    cJSON *line = cJSON_CreateObject();
    cJSON_AddNumberToObject(line, "step", step);
    cJSON_AddNumberToObject(line, "loss", loss);
    return nac_run_log(tl->run, line);
}

static nac_status parse_sizes(const char *v, regions_opts *o) {
    float vals[NAC_MLP_MAX_SIZES];
    int n;
    NAC_TRY(ev_opt_list("--sizes", v, 0, 4096, NAC_MLP_MAX_SIZES, vals, &n));
    if (n < 2 || vals[0] != 2)
        return nac_error(NAC_ERR_USAGE, "--sizes starts with the input size 2 and has at least one "
                         "layer, e.g. 2,32,32; got \"%s\"", v);
    for (int i = 0; i < n; i++) {
        if (vals[i] != floorf(vals[i]) || vals[i] < 1)
            return nac_error(NAC_ERR_USAGE, "--sizes holds whole numbers >= 1; got \"%s\"", v);
        o->sizes[i] = (int)vals[i];
    }
    o->nsizes = n;
    return NAC_OK;
}

static nac_status regions_parse(int argc, char **argv, regions_opts *o) {
    memset(o, 0, sizeof *o);
    o->toy.kind = NAC_TOY_MOONS;
    o->toy.n = 300;
    o->toy.nclasses = 4;
    float noise = -1;
    int n = 300;
    o->sizes[0] = 2, o->sizes[1] = 4, o->sizes[2] = 4, o->nsizes = 3; /* the paper's Figure 1 */
    o->steps = 800;
    o->batch = 512;
    o->proj_dim = 128;
    o->grid = 400;
    o->lr = 3e-3f;
    o->p = 0.1f;
    o->view_noise = 0.02f;
    o->runs_dir = "runs";
    o->name = "regions";
    o->backend = "cpu";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac regions --help)", a);
        i++;
        if (!strcmp(a, "--data")) {
            if (!strcmp(v, "moons")) o->toy.kind = NAC_TOY_MOONS;
            else if (!strcmp(v, "circles")) o->toy.kind = NAC_TOY_CIRCLES;
            else if (!strcmp(v, "blobs")) o->toy.kind = NAC_TOY_GAUSSIANS;
            else return nac_error(NAC_ERR_USAGE, "--data is moons, circles or blobs; got \"%s\"", v);
        } else if (!strcmp(a, "--n")) NAC_TRY(ev_opt_int(a, v, 4, 1 << 24, &n));
        else if (!strcmp(a, "--noise")) NAC_TRY(ev_opt_float(a, v, 0, 10, false, &noise));
        else if (!strcmp(a, "--classes")) NAC_TRY(ev_opt_int(a, v, 1, 64, &o->toy.nclasses));
        else if (!strcmp(a, "--sizes")) NAC_TRY(parse_sizes(v, o));
        else if (!strcmp(a, "--steps")) NAC_TRY(ev_opt_int(a, v, 0, 10000000, &o->steps));
        else if (!strcmp(a, "--batch")) NAC_TRY(ev_opt_int(a, v, 2, 1 << 20, &o->batch));
        else if (!strcmp(a, "--proj-dim")) NAC_TRY(ev_opt_int(a, v, 1, 65536, &o->proj_dim));
        else if (!strcmp(a, "--grid")) NAC_TRY(ev_opt_int(a, v, 8, 4096, &o->grid));
        else if (!strcmp(a, "--seed")) NAC_TRY(ev_opt_int(a, v, 0, 2147483647, &o->seed));
        else if (!strcmp(a, "--threads")) NAC_TRY(ev_opt_int(a, v, 0, 1024, &o->threads));
        else if (!strcmp(a, "--lr")) NAC_TRY(ev_opt_float(a, v, 0, 10, true, &o->lr));
        else if (!strcmp(a, "--p")) NAC_TRY(ev_opt_float(a, v, 0, 0.5, true, &o->p));
        else if (!strcmp(a, "--view-noise")) NAC_TRY(ev_opt_float(a, v, 0, 10, false, &o->view_noise));
        else if (!strcmp(a, "--runs-dir")) o->runs_dir = v;
        else if (!strcmp(a, "--name")) o->name = v;
        else if (!strcmp(a, "--backend")) o->backend = v;
        else return nac_error(NAC_ERR_USAGE, "unknown option \"%s\" (see nac regions --help)", a);
    }
    if (o->p >= 0.5f) return nac_error(NAC_ERR_USAGE, "--p must lie in (0, 0.5)");
    o->toy.n = n;
    o->toy.noise = noise >= 0 ? noise : o->toy.kind == NAC_TOY_MOONS ? 0.1f
                                         : o->toy.kind == NAC_TOY_CIRCLES ? 0.05f : 0.3f;
    o->toy.factor = 0.5f;
    o->toy.seed = (uint64_t)o->seed;
    return NAC_OK;
}

static const char *toy_name(nac_toy_kind k) {
    return k == NAC_TOY_MOONS ? "moons" : k == NAC_TOY_CIRCLES ? "circles" : "blobs";
}

static cJSON *counts_json(const regions_counts *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "data_regions", (double)c->data);
    cJSON_AddNumberToObject(o, "grid_regions", (double)c->grid);
    cJSON_AddNumberToObject(o, "encoder_data_regions", (double)c->enc_data);
    cJSON_AddNumberToObject(o, "encoder_grid_regions", (double)c->enc_grid);
    return o;
}

static nac_status run_regions(int argc, char **argv) {
    regions_opts o;
    NAC_TRY(regions_parse(argc, argv, &o));
    int64_t n = o.toy.n;
    int k = o.batch < n ? o.batch : (int)n;
    float *pts = malloc((size_t)n * 2 * sizeof *pts), *losses = malloc((size_t)(o.steps + 1) * sizeof *losses);
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    if (!pts || !labels || !losses) {
        free(pts);
        free(labels);
        free(losses);
        return nac_error(NAC_ERR_NOMEM, "regions: out of memory (%" PRId64 " points)", n);
    }
    nac_run_t run = {0};
    regions_model rm = {0};
    regions_counts before = {0}, after = {0};
    nac_status s = nac_toy_generate(&o.toy, pts, labels);
    /* the box: the data's bounding box with a quarter of its extent around it */
    float box[4] = {INFINITY, -INFINITY, INFINITY, -INFINITY};
    for (int64_t i = 0; i < n; i++) {
        box[0] = fminf(box[0], pts[2 * i]);
        box[1] = fmaxf(box[1], pts[2 * i]);
        box[2] = fminf(box[2], pts[2 * i + 1]);
        box[3] = fmaxf(box[3], pts[2 * i + 1]);
    }
    float ex = box[1] - box[0], ey = box[3] - box[2], e = fmaxf(fmaxf(ex, ey), 1e-3f);
    float cx = 0.5f * (box[0] + box[1]), cy = 0.5f * (box[2] + box[3]);
    box[0] = cx - 0.75f * e, box[1] = cx + 0.75f * e, box[2] = cy - 0.75f * e, box[3] = cy + 0.75f * e;
    if (s == NAC_OK) s = nac_run_create(o.runs_dir, o.name, &run);
    nac_toy_config tc = toy_config(&o, k);
    train_log tl = {.run = &run, .steps = o.steps};
    if (s == NAC_OK) s = nac_toy_create(o.backend, o.threads, &tc, &rm);
    if (s == NAC_OK) s = regions_measure(&rm, &o, pts, labels, box, run.dir, "before", &before);
    if (s == NAC_OK) s = nac_toy_train(&rm, &tc, pts, n, o.steps, losses, log_step, &tl);
    if (s == NAC_OK) s = regions_measure(&rm, &o, pts, labels, box, run.dir, "after", &after);
    if (s == NAC_OK) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "eval", "linear_regions");
        cJSON_AddStringToObject(d, "data", toy_name(o.toy.kind));
        cJSON_AddNumberToObject(d, "points", (double)n);
        cJSON_AddNumberToObject(d, "noise", ev_f2d(o.toy.noise));
        cJSON *sz = cJSON_AddArrayToObject(d, "sizes");
        for (int i = 0; i < o.nsizes; i++) cJSON_AddItemToArray(sz, cJSON_CreateNumber(o.sizes[i]));
        cJSON_AddNumberToObject(d, "proj_dim", o.proj_dim);
        cJSON_AddNumberToObject(d, "steps", o.steps);
        cJSON_AddNumberToObject(d, "batch", k);
        cJSON_AddStringToObject(d, "optimizer", "adam");
        cJSON_AddNumberToObject(d, "lr", ev_f2d(o.lr));
        cJSON_AddNumberToObject(d, "p", ev_f2d(o.p));
        cJSON_AddNumberToObject(d, "view_noise", ev_f2d(o.view_noise));
        cJSON_AddNumberToObject(d, "seed", o.seed);
        cJSON_AddNumberToObject(d, "grid", o.grid);
        cJSON *b = cJSON_AddArrayToObject(d, "box");
        for (int i = 0; i < 4; i++) cJSON_AddItemToArray(b, cJSON_CreateNumber(ev_f2d(box[i])));
        if (o.steps > 0) {
            cJSON_AddNumberToObject(d, "loss_first", ev_f2d(losses[0]));
            cJSON_AddNumberToObject(d, "loss_last", ev_f2d(losses[o.steps - 1]));
        }
        cJSON_AddItemToObject(d, "before", counts_json(&before));
        cJSON_AddItemToObject(d, "after", counts_json(&after));
        s = nac_run_write_json(&run, "regions_results.json", d);
        cJSON_Delete(d);
    }
    if (s == NAC_OK) {
        printf("linear regions of a ReLU MLP (");
        for (int i = 0; i < o.nsizes; i++) printf("%s%d", i ? "-" : "", o.sizes[i]);
        printf(") on %s (%" PRId64 " points), %d NAC steps:\n", toy_name(o.toy.kind), n, o.steps);
        printf("  network up to the code: %" PRId64 " -> %" PRId64 " regions on the data, %" PRId64
               " -> %" PRId64 " on the %dx%d grid\n", before.data, after.data, before.grid, after.grid,
               o.grid, o.grid);
        printf("  encoder hidden units:   %" PRId64 " -> %" PRId64 " on the data, %" PRId64 " -> %" PRId64
               " on the grid\n", before.enc_data, after.enc_data, before.enc_grid, after.enc_grid);
        if (o.steps > 0)
            printf("  NAC loss %.4f -> %.4f\n", (double)losses[0], (double)losses[o.steps - 1]);
        printf("wrote %s/before.png, after.png (and *_encoder.png), regions_results.json\n", run.dir);
    }
    nac_toy_free(&rm);
    nac_run_close(&run);
    free(pts);
    free(labels);
    free(losses);
    return s;
}

const nac_command nac_cmd_regions = {
    "regions",
    "linear regions of a ReLU MLP on 2-D toy data before and after NAC training",
    "regions [--data moons|circles|blobs] [--n N] [--noise S] [--classes N] [--sizes 2,32,32]\n"
    "        [--steps N] [--batch K] [--lr F] [--p F] [--view-noise S] [--proj-dim D]\n"
    "        [--grid N] [--seed N] [--runs-dir DIR] [--name NAME] [--backend cpu|cuda]\n"
    "        [--threads N]",
    "Paper Figure 1: a ReLU MLP encoder (--sizes: input 2, then each layer's width) with the\n"
    "heads g and r is trained with the NAC objective (Adam) on two views of the toy points\n"
    "(each point plus N(0, view-noise^2) noise). Before and after, the distinct activation\n"
    "patterns are counted on the data and on a grid x grid lattice over the data's box: of\n"
    "the network up to the code (the encoder's hidden units, g's hidden units and the code\n"
    "bits c = sign(o), the patterns NAC makes distinct) and of the encoder's hidden units\n"
    "alone. The regions are drawn (each its own colour; label-0 points black, others white)\n"
    "into before.png / after.png (network) and before_encoder.png / after_encoder.png of a\n"
    "new run folder RUNS_DIR/NAME (runs/regions), with regions_results.json and the loss in\n"
    "metrics.jsonl.\n"
    "  --data                moons (default), circles or blobs (--classes Gaussian blobs, 4)\n"
    "  --n, --noise          points (300) and their noise (0.1 moons, 0.05 circles, 0.3 blobs)\n"
    "  --sizes               the encoder MLP (2,4,4: Figure 1's two layers of width 4);\n"
    "                        g and r are Linear(F,F)+ReLU+Linear(F,D)\n"
    "  --steps, --batch      NAC steps (800) and points a step (512, at most all of them)\n"
    "  --lr, --p             Adam rate (0.003) and NAC flip probability (0.1)\n"
    "  --view-noise          std of the view noise (0.02); --proj-dim D code length (128)\n"
    "  --grid N              grid resolution, also the PNG size (400)\n",
    run_regions,
    NULL,
};
