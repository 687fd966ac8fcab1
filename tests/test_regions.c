/* Linear regions: arrangements of lines whose region count is known by hand (two lines
 * crossing, three in general position, three parallel, one outside the box, a two-layer
 * net bending its second hyperplane), random MLPs against a brute-force comparison of
 * patterns, thread independence, the toy data sets and bad arguments. */
#include "tests/testutil.h"

#include <omp.h>

#include "eval/regions.h"

/* A one-hidden-layer net whose hidden units are the lines a x + b y + c = 0. */
static int64_t lines_grid(const float *w, const float *b, int nlines, int n, int64_t *ids) {
    float wo[8] = {1, 1, 1, 1, 1, 1, 1, 1}, bo[1] = {0};
    nac_region_layer L[2] = {{.in = 2, .out = nlines, .w = w, .b = b},
                             {.in = nlines, .out = 1, .w = wo, .b = bo}};
    nac_region_mlp mlp = {.nlayers = 2, .layers = L, .last_is_output = 1};
    int64_t count = -1;
    TU_OK(nac_regions_grid(&mlp, -1, 1, -1, 1, n, n, ids, &count));
    return count;
}

static void test_two_lines(void **state) {
    (void)state;
    enum { G = 100 };
    float w[4] = {1, 0, 0, 1}, b[2] = {0, 0}; /* x = 0 and y = 0 */
    int64_t *ids = malloc(G * G * sizeof *ids);
    assert_int_equal(lines_grid(w, b, 2, G, ids), 4);
    /* ids by first appearance, bottom row first: (-,-) 0, (+,-) 1, (-,+) 2, (+,+) 3 */
    for (int iy = 0; iy < G; iy++)
        for (int ix = 0; ix < G; ix++) {
            int64_t want = (ix >= G / 2) + 2 * (iy >= G / 2);
            if (ids[iy * G + ix] != want)
                fail_msg("cell (%d, %d): region %lld, want %lld", iy, ix, (long long)ids[iy * G + ix], (long long)want);
        }
    free(ids);
}

static void test_line_arrangements(void **state) {
    (void)state;
    /* x = 0, y = 0, x + y = 0.5: three lines meeting pairwise inside the box -> 7 */
    float w3[6] = {1, 0, 0, 1, 1, 1}, b3[3] = {0, 0, -0.5f};
    assert_int_equal(lines_grid(w3, b3, 3, 200, NULL), 7);
    /* x = -0.5, 0, 0.5: parallel -> 4 */
    float wp[6] = {1, 0, 1, 0, 1, 0}, bp[3] = {0.5f, 0, -0.5f};
    assert_int_equal(lines_grid(wp, bp, 3, 200, NULL), 4);
    /* x = 0 and x + 0.01 y = 2, which misses the box -> 2 */
    float wo[4] = {1, 0, 1, 0.01f}, bo[2] = {0, -2};
    assert_int_equal(lines_grid(wo, bo, 2, 200, NULL), 2);
    /* the same line twice (and its flip): still 2 regions; patterns differ in no cell */
    float wd[6] = {1, 0, 2, 0, -1, 0}, bd[3] = {0, 0, 0};
    assert_int_equal(lines_grid(wd, bd, 3, 64, NULL), 2);
    /* four lines in general position through the box: 1 + 4 + 6 = 11 */
    float w4[8] = {1, 0, 0, 1, 1, 1, 1, -1}, b4[4] = {-0.1f, -0.2f, -0.6f, 0.05f};
    assert_int_equal(lines_grid(w4, b4, 4, 400, NULL), 11);
}

/* Hidden 1: (relu x, relu y); hidden 2: relu(x) + relu(y) - 0.5. Quadrant (+,+) is cut by
 * x + y = 0.5, (+,-) by x = 0.5, (-,+) by y = 0.5, (-,-) not at all: 2 + 2 + 2 + 1 = 7. */
static void test_two_layers(void **state) {
    (void)state;
    float w1[4] = {1, 0, 0, 1}, b1[2] = {0, 0}, w2[2] = {1, 1}, b2[1] = {-0.5f};
    nac_region_layer L[2] = {{2, 2, w1, b1}, {2, 1, w2, b2}};
    nac_region_mlp mlp = {.nlayers = 2, .layers = L, .last_is_output = 0};
    int64_t count;
    TU_OK(nac_regions_grid(&mlp, -1, 1, -1, 1, 300, 300, NULL, &count));
    assert_int_equal(count, 7);
    /* the data: four points in four regions, one repeated */
    float pts[10] = {0.9f, 0.9f, 0.1f, 0.1f, -0.5f, -0.5f, 0.9f, 0.9f, 0.7f, -0.2f};
    int64_t ids[5];
    TU_OK(nac_regions_count(&mlp, pts, 5, ids, &count));
    assert_int_equal(count, 4);
    int64_t want[5] = {0, 1, 2, 0, 3};
    for (int i = 0; i < 5; i++) assert_int_equal(ids[i], want[i]);
    /* only the output layer: no hidden unit, one region */
    nac_region_mlp lin = {.nlayers = 1, .layers = L, .last_is_output = 1};
    TU_OK(nac_regions_count(&lin, pts, 5, ids, &count));
    assert_int_equal(count, 1);
    assert_int_equal(ids[4], 0);
}

/* ---- brute force: patterns as byte arrays, compared one by one ---- */
static void naive_ids(const nac_region_layer *L, int nh, const float *pts, int64_t n, int units,
                      int64_t *ids, int64_t *count) {
    uint8_t *pat = malloc((size_t)n * units);
    float a[64], b[64];
    for (int64_t i = 0; i < n; i++) {
        a[0] = pts[2 * i], a[1] = pts[2 * i + 1];
        int u = 0;
        for (int l = 0; l < nh; l++) {
            for (int o = 0; o < L[l].out; o++) {
                float s = L[l].b[o];
                for (int k = 0; k < L[l].in; k++) s += L[l].w[o * L[l].in + k] * a[k];
                pat[i * units + u++] = s > 0.0f;
                b[o] = s > 0.0f ? s : 0.0f;
            }
            memcpy(a, b, sizeof a);
        }
    }
    int64_t *first = malloc((size_t)n * sizeof *first), c = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = 0;
        while (r < c && memcmp(pat + first[r] * units, pat + i * units, (size_t)units) != 0) r++;
        if (r == c) first[c++] = i;
        ids[i] = r;
    }
    *count = c;
    free(first);
    free(pat);
}

static void check_random_mlp(int w1, int w2, uint64_t seed) {
    enum { G = 120 };
    float *W1 = malloc((size_t)w1 * 2 * sizeof *W1), *B1 = malloc((size_t)w1 * sizeof *B1);
    float *W2 = malloc((size_t)w2 * w1 * sizeof *W2), *B2 = malloc((size_t)w2 * sizeof *B2);
    float W3[64], B3[1] = {0.1f};
    tu_randn(W1, w1 * 2, seed, 1.0f);
    tu_randn(B1, w1, seed + 1, 0.5f);
    tu_randn(W2, w2 * w1, seed + 2, 1.0f / sqrtf((float)w1));
    tu_randn(B2, w2, seed + 3, 0.5f);
    tu_randn(W3, w2, seed + 4, 1.0f);
    nac_region_layer L[3] = {{2, w1, W1, B1}, {w1, w2, W2, B2}, {w2, 1, W3, B3}};
    nac_region_mlp mlp = {.nlayers = 3, .layers = L, .last_is_output = 1};

    /* the grid, as explicit points for the brute force */
    int64_t n = G * G;
    float *pts = malloc((size_t)n * 2 * sizeof *pts);
    for (int iy = 0; iy < G; iy++)
        for (int ix = 0; ix < G; ix++) {
            pts[2 * (iy * G + ix)] = -2.0f + ((float)ix + 0.5f) * (4.0f / G);
            pts[2 * (iy * G + ix) + 1] = -1.5f + ((float)iy + 0.5f) * (3.0f / G);
        }
    int64_t *ids = malloc((size_t)n * sizeof *ids), *gids = malloc((size_t)n * sizeof *gids),
            *want = malloc((size_t)n * sizeof *want);
    int64_t count, gcount, wcount;
    TU_OK(nac_regions_count(&mlp, pts, n, ids, &count));
    TU_OK(nac_regions_grid(&mlp, -2, 2, -1.5f, 1.5f, G, G, gids, &gcount));
    naive_ids(L, 2, pts, n, w1 + w2, want, &wcount);
    assert_int_equal(count, wcount);
    assert_int_equal(gcount, wcount);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] != want[i] || gids[i] != want[i])
            fail_msg("point %lld: ids %lld / %lld, brute force %lld", (long long)i, (long long)ids[i],
                     (long long)gids[i], (long long)want[i]);
    assert_true(count > 20); /* a random net cuts the box into many pieces */

    /* thread count does not change the numbering */
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    TU_OK(nac_regions_grid(&mlp, -2, 2, -1.5f, 1.5f, G, G, gids, &gcount));
    omp_set_num_threads(saved);
    assert_int_equal(gcount, wcount);
    assert_memory_equal(gids, want, (size_t)n * sizeof *want);
    free(W1), free(B1), free(W2), free(B2), free(pts), free(ids), free(gids), free(want);
}

static void test_random_vs_brute_force(void **state) {
    (void)state;
    check_random_mlp(8, 8, 10);   /* 16 bits, one word */
    check_random_mlp(40, 30, 20); /* 70 bits, two words */
}

static void test_toy_data(void **state) {
    (void)state;
    enum { N = 101 };
    float p[2 * N], q[2 * N];
    int32_t l[N], m[N];
    nac_toy_opts o = {.kind = NAC_TOY_MOONS, .n = N, .noise = 0, .seed = 7};
    TU_OK(nac_toy_generate(&o, p, l));
    int n1 = 0;
    for (int i = 0; i < N; i++) {
        double x = p[2 * i], y = p[2 * i + 1];
        if (l[i] == 0) /* upper moon: unit circle, y >= 0 */
            assert_true(fabs(x * x + y * y - 1) < 1e-5 && y > -1e-6);
        else /* lower moon: circle about (1, 0.5), y <= 0.5 */
            assert_true(fabs((x - 1) * (x - 1) + (y - 0.5) * (y - 0.5) - 1) < 1e-5 && y < 0.5 + 1e-6);
        n1 += l[i];
    }
    assert_int_equal(n1, N - N / 2);
    assert_true(l[0] != l[1] || l[1] != l[2] || l[2] != l[3] || l[3] != l[4]); /* shuffled */
    TU_OK(nac_toy_generate(&o, q, m));
    assert_memory_equal(p, q, sizeof p); /* a pure function of the options */
    o.seed = 8;
    TU_OK(nac_toy_generate(&o, q, m));
    assert_true(memcmp(p, q, sizeof p) != 0);
    o.noise = 0.1f;
    TU_OK(nac_toy_generate(&o, q, m));
    double dev = 0;
    for (int i = 0; i < N; i++) {
        double x = q[2 * i], y = q[2 * i + 1];
        dev += m[i] == 0 ? fabs(sqrt(x * x + y * y) - 1) : fabs(sqrt((x - 1) * (x - 1) + (y - 0.5) * (y - 0.5)) - 1);
    }
    assert_true(dev / N > 0.02 && dev / N < 0.2); /* noise of std 0.1 moves points off the curves */

    o = (nac_toy_opts){.kind = NAC_TOY_CIRCLES, .n = N, .noise = 0, .factor = 0.3f, .seed = 1};
    TU_OK(nac_toy_generate(&o, p, l));
    for (int i = 0; i < N; i++)
        assert_true(fabs(hypot(p[2 * i], p[2 * i + 1]) - (l[i] ? 0.3 : 1.0)) < 1e-5);

    enum { NG = 4000 };
    float *g = malloc(2 * NG * sizeof *g);
    int32_t *lg = malloc(NG * sizeof *lg);
    o = (nac_toy_opts){.kind = NAC_TOY_GAUSSIANS, .n = NG, .noise = 0.1f, .nclasses = 4, .seed = 3};
    TU_OK(nac_toy_generate(&o, g, lg));
    double sx[4] = {0}, sy[4] = {0};
    int cnt[4] = {0};
    for (int i = 0; i < NG; i++) {
        assert_true(lg[i] >= 0 && lg[i] < 4);
        sx[lg[i]] += g[2 * i], sy[lg[i]] += g[2 * i + 1], cnt[lg[i]]++;
    }
    double cx[4] = {2, 0, -2, 0}, cy[4] = {0, 2, 0, -2}; /* centres at angles 0, 90, 180, 270 */
    for (int c = 0; c < 4; c++) {
        assert_true(cnt[c] > NG / 4 - 200 && cnt[c] < NG / 4 + 200);
        assert_true(fabs(sx[c] / cnt[c] - cx[c]) < 0.02 && fabs(sy[c] / cnt[c] - cy[c]) < 0.02);
    }
    free(g);
    free(lg);
    o.nclasses = 0;
    assert_int_equal(nac_toy_generate(&o, p, l), NAC_ERR_INVALID);
}

static void test_bad_args(void **state) {
    (void)state;
    float w[4] = {1, 0, 0, 1}, b[2] = {0, 0}, w3[3] = {1, 1, 1};
    nac_region_layer L[2] = {{2, 2, w, b}, {3, 1, w3, b}}; /* second layer expects 3 inputs */
    nac_region_mlp mlp = {.nlayers = 2, .layers = L, .last_is_output = 1};
    int64_t count;
    assert_int_equal(nac_regions_grid(&mlp, -1, 1, -1, 1, 10, 10, NULL, &count), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "layer 1"));
    mlp.nlayers = 1;
    assert_int_equal(nac_regions_grid(&mlp, -1, 1, -1, 1, 0, 10, NULL, &count), NAC_ERR_INVALID);
    assert_int_equal(nac_regions_grid(&mlp, 1, -1, -1, 1, 10, 10, NULL, &count), NAC_ERR_INVALID);
    float pts[2] = {0, NAN};
    assert_int_equal(nac_regions_count(&mlp, pts, 1, NULL, &count), NAC_ERR_NUMERIC);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_lines),   cmocka_unit_test(test_line_arrangements),
        cmocka_unit_test(test_two_layers),  cmocka_unit_test(test_random_vs_brute_force),
        cmocka_unit_test(test_toy_data),    cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
