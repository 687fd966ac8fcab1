/* Synchronised batch norm (nn/layers.h's nac_bn_sync and the backend's nac_bn_stats,
 * nac_bn_backward_sums and nac_bn_backward_given): the three pieces against the backend's
 * own batch norm (whose forward and backward test_ops_dnn checks against double references
 * and finite differences) on one rank, in the channel-blocked layout a convolution leaves;
 * a conv+BN+ReLU unit on two emulated ranks, each with half of each view, against one
 * process with the whole batch (outputs, input gradients, parameter gradients summed over
 * the ranks, running statistics); and the argument checks. */
#include <pthread.h>

#include "tests/testutil.h"

#include "dist/comm.h"
#include "nn/layers.h"

/* float32 pieces against float32 oneDNN: sums of ~100 terms, so 1e-4 relative with a floor
 * of 1e-5 of the largest value (cancellation in dgamma/dbeta sums) */
#define RTOL 1e-4

static void close_f(const float *got, const float *want, int64_t n, const char *what) {
    double m = 1.0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(want[i]));
    tu_close_f(got, want, n, RTOL, 1e-5 * m, what);
}

static float *host(const nac_tensor_t *t) {
    float *h = malloc((size_t)nac_tensor_numel(t) * sizeof *h);
    assert_non_null(h);
    TU_OK(nac_tensor_to_host(t, h));
    return h;
}

static nac_tensor_t *randt(nac_backend_t *be, int ndim, const int64_t *dim, uint64_t seed,
                           float shift) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= dim[i];
    float *f = malloc((size_t)n * sizeof *f);
    assert_non_null(f);
    tu_randn(f, n, seed, 1.0f);
    for (int64_t i = 0; i < n; i++) f[i] += shift;
    nac_tensor_t *t = tu_tensor(be, ndim, dim, f);
    free(f);
    return t;
}

/* One rank: the pieces reproduce nac_bn_forward_train's statistics and nac_bn_backward's
 * gradients (x blocked as a convolution leaves it, 2 groups; with and without ReLU). */
static void check_pieces(bool relu) {
    nac_backend_t *be = tu_backend();
    const int g = 2;
    int64_t xd[4] = {8, 5, 3, 3}, c = xd[1], cd = c, sd[2] = {g, c}, s2[2] = {2 * g, c};
    double m = (double)(xd[0] / g) * (double)(xd[2] * xd[3]);
    nac_tensor_t *x = randt(be, 4, xd, 1, 0.5f), *dy = randt(be, 4, xd, 2, 0.0f);
    if (tu_has_layouts(be)) TU_OK(nac_tensor_relayout(x, NAC_LAYOUT_CHANNEL_BLOCKED));
    nac_tensor_t *gamma = randt(be, 1, &cd, 3, 1.0f), *beta = randt(be, 1, &cd, 4, 0.0f);
    nac_tensor_t *rm = nac_tensor_new(be, 1, &cd), *rv = nac_tensor_new(be, 1, &cd);
    TU_OK(nac_tensor_fill(rm, 0.0f));
    TU_OK(nac_tensor_fill(rv, 1.0f));
    nac_tensor_t *y = nac_tensor_new(be, 4, xd), *sm = nac_tensor_new(be, 2, sd),
                 *sv = nac_tensor_new(be, 2, sd), *dx = nac_tensor_new(be, 4, xd),
                 *dg = nac_tensor_new(be, 1, &cd), *db = nac_tensor_new(be, 1, &cd),
                 *mean = nac_tensor_new(be, 2, sd), *var = nac_tensor_new(be, 2, sd),
                 *sums = nac_tensor_new(be, 2, s2), *dx2 = nac_tensor_new(be, 4, xd);
    nac_bn_params p = {.eps = 1e-5f, .momentum = 0.1f, .groups = g, .relu = relu};
    TU_OK(nac_bn_forward_train(x, gamma, beta, y, rm, rv, sm, sv, p));
    TU_OK(nac_bn_backward(x, y, dy, gamma, sm, sv, dx, dg, db, p));

    TU_OK(nac_bn_stats(x, mean, var, p));
    float *mu = host(mean), *va = host(var), *want_m = host(sm), *want_v = host(sv);
    close_f(mu, want_m, g * c, "mean from nac_bn_stats");
    close_f(va, want_v, g * c, "variance from nac_bn_stats");
    TU_OK(nac_tensor_from_host(mean, want_m));
    TU_OK(nac_tensor_from_host(var, want_v));

    TU_OK(nac_bn_backward_sums(x, dy, gamma, beta, mean, var, sums, p));
    float *h = host(sums);
    float pg[5] = {0}, pb[5] = {0};
    for (int64_t gi = 0; gi < g; gi++)
        for (int64_t j = 0; j < c; j++) {
            pb[j] += h[gi * c + j];
            pg[j] += h[(g + gi) * c + j];
        }
    float *want_g = host(dg), *want_b = host(db);
    close_f(pg, want_g, c, "sum of dy' xhat (dgamma)");
    close_f(pb, want_b, c, "sum of dy' (dbeta)");
    for (int64_t i = 0; i < 2 * g * c; i++) h[i] = (float)(h[i] / m);
    TU_OK(nac_tensor_from_host(sums, h));
    TU_OK(nac_bn_backward_given(x, dy, gamma, beta, mean, var, sums, dx2, p));
    float *got = host(dx2), *want = host(dx);
    close_f(got, want, nac_tensor_numel(dx), "dx with the reductions given");
    free(got), free(want), free(h), free(mu), free(va), free(want_m), free(want_v), free(want_g), free(want_b);
    nac_tensor_t *all[] = {x, dy, gamma, beta, rm, rv, y, sm, sv, dx, dg, db, mean, var, sums, dx2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nac_tensor_free(all[i]);
    nac_backend_free(be);
}

static void test_pieces(void **s) { (void)s; check_pieces(false); }
static void test_pieces_relu(void **s) { (void)s; check_pieces(true); }

/* ---- a conv+BN+ReLU unit: two ranks (threads) against one process ---- */
enum { KV = 8, CIN = 3, COUT = 6, SZ = 4 }; /* KV images a view in one process */
#define IMG (CIN * SZ * SZ)
#define OUT (COUT * SZ * SZ)

typedef struct unit_run {
    nac_comm_t *comm;                /* NULL: one process, per-batch statistics */
    int64_t n;                       /* rows (both views) */
    const float *x, *dy;             /* (n, CIN, SZ, SZ), (n, COUT, SZ, SZ) */
    float y[2 * KV * OUT], dx[2 * KV * IMG], dw[COUT * CIN * 9], dg[COUT], db[COUT];
    float rm[COUT], rv[COUT];
    nac_status s;
    char err[512];
} unit_run;

/* Two training steps of the unit (the second sees the first's running statistics). */
static nac_status unit_steps(unit_run *r, nac_backend_t *be) {
    nac_params_t ps;
    nac_params_init(&ps);
    nac_bn_sync sync = {.comm = r->comm};
    nac_builder_t b = {.ps = &ps, .be = be, .seed = 7, .bn_sync = &sync};
    nac_convbn u = {0};
    nac_tensor_t *x = nac_tensor_new4(be, r->n, CIN, SZ, SZ);
    nac_tensor_t *dy = nac_tensor_new4(be, r->n, COUT, SZ, SZ);
    nac_tensor_t *dx = nac_tensor_new4(be, r->n, CIN, SZ, SZ);
    nac_status s = x && dy && dx ? NAC_OK : NAC_ERR_NOMEM;
    if (s == NAC_OK) s = nac_convbn_add(&b, &u, "conv", "bn", CIN, COUT, 3, 1, 1, false, true);
    int64_t ho, wo;
    if (s == NAC_OK) nac_convbn_plan(&u, be, r->n, SZ, SZ, 2, &ho, &wo);
    if (s == NAC_OK) s = nac_tensor_from_host(x, r->x);
    if (s == NAC_OK) s = nac_tensor_from_host(dy, r->dy);
    for (int step = 0; s == NAC_OK && step < 2; step++) {
        s = nac_convbn_forward(&u, x, true, 2);
        if (s == NAC_OK) s = nac_convbn_backward(&u, x, dy, dx, 2);
    }
    if (s == NAC_OK) s = nac_tensor_to_host(&u.y, r->y);
    if (s == NAC_OK) s = nac_tensor_to_host(dx, r->dx);
    if (s == NAC_OK) s = nac_tensor_to_host(&u.conv.w->g, r->dw);
    if (s == NAC_OK) s = nac_tensor_to_host(&u.bn.gamma->g, r->dg);
    if (s == NAC_OK) s = nac_tensor_to_host(&u.bn.beta->g, r->db);
    if (s == NAC_OK) s = nac_tensor_to_host(&u.bn.mean->w, r->rm);
    if (s == NAC_OK) s = nac_tensor_to_host(&u.bn.var->w, r->rv);
    if (s != NAC_OK) snprintf(r->err, sizeof r->err, "%s", nac_last_error());
    nac_convbn_release(&u);
    nac_tensor_free(x);
    nac_tensor_free(dy);
    nac_tensor_free(dx);
    nac_params_free(&ps);
    nac_bn_sync_release(&sync);
    return s;
}

static void *unit_thread(void *arg) {
    unit_run *r = arg;
    nac_backend_t *be = NULL;
    nac_backend_options o = {.threads = 1};
    r->s = nac_backend_create(tu_backend_name(), &o, &be);
    if (r->s == NAC_OK) r->s = unit_steps(r, be);
    else snprintf(r->err, sizeof r->err, "%s", nac_last_error());
    if (r->s != NAC_OK) nac_comm_abort(r->comm, 1);
    nac_backend_free(be);
    return NULL;
}

/* Rank r's rows of a (2 KV, per) batch: rows [r k, (r+1) k) of each view, k = KV / 2. */
static void slice(const float *all, int r, int64_t per, float *out) {
    int64_t k = KV / 2;
    for (int v = 0; v < 2; v++)
        memcpy(out + v * k * per, all + (v * KV + r * k) * per, (size_t)(k * per) * sizeof *out);
}

static void test_unit_two_ranks(void **state) {
    (void)state;
    static float x[2 * KV * IMG], dy[2 * KV * OUT], xs[2][KV * IMG], dys[2][KV * OUT];
    tu_randn(x, 2 * KV * IMG, 11, 1.0f);
    tu_randn(dy, 2 * KV * OUT, 12, 1.0f);
    for (int64_t i = 0; i < KV * IMG; i++) x[i] += 0.7f; /* the views differ in mean */
    static unit_run one, two[2];
    one = (unit_run){.n = 2 * KV, .x = x, .dy = dy};
    nac_backend_t *be = tu_backend();
    TU_OK(unit_steps(&one, be));
    nac_backend_free(be);

    nac_comm_group_t *g;
    TU_OK(nac_comm_group_create(2, &g));
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        slice(x, r, IMG, xs[r]);
        slice(dy, r, OUT, dys[r]);
        two[r] = (unit_run){.comm = nac_comm_group_rank(g, r), .n = KV, .x = xs[r], .dy = dys[r]};
        assert_int_equal(pthread_create(&th[r], NULL, unit_thread, &two[r]), 0);
    }
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    nac_comm_group_free(g);
    for (int r = 0; r < 2; r++)
        if (two[r].s != NAC_OK) fail_msg("rank %d: %s", r, two[r].err);

    /* each rank's rows of y and dx, the parameter gradients summed over the ranks, the
       running statistics equal on both ranks */
    static float y[2 * KV * OUT], dx[2 * KV * IMG], dw[COUT * CIN * 9], dg[COUT], db[COUT];
    int64_t k = KV / 2;
    for (int r = 0; r < 2; r++)
        for (int v = 0; v < 2; v++) {
            memcpy(y + (v * KV + r * k) * OUT, two[r].y + v * k * OUT, (size_t)(k * OUT) * 4);
            memcpy(dx + (v * KV + r * k) * IMG, two[r].dx + v * k * IMG, (size_t)(k * IMG) * 4);
        }
    for (int64_t i = 0; i < COUT * CIN * 9; i++) dw[i] = two[0].dw[i] + two[1].dw[i];
    for (int64_t i = 0; i < COUT; i++) {
        dg[i] = two[0].dg[i] + two[1].dg[i];
        db[i] = two[0].db[i] + two[1].db[i];
    }
    close_f(y, one.y, 2 * KV * OUT, "y on two ranks");
    close_f(dx, one.dx, 2 * KV * IMG, "dx on two ranks");
    close_f(dw, one.dw, COUT * CIN * 9, "conv weight gradient on two ranks");
    close_f(dg, one.dg, COUT, "gamma gradient on two ranks");
    close_f(db, one.db, COUT, "beta gradient on two ranks");
    for (int r = 0; r < 2; r++) {
        close_f(two[r].rm, one.rm, COUT, "running mean on two ranks");
        close_f(two[r].rv, one.rv, COUT, "running variance on two ranks");
    }
}

static void test_bad_args(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    int64_t xd[4] = {4, 3, 2, 2}, bad[2] = {2, 3}, good[2] = {4, 3}, c = 3, sd[2] = {2, 3};
    nac_tensor_t *x = randt(be, 4, xd, 1, 0.0f), *sums = nac_tensor_new(be, 2, bad);
    nac_bn_params p = {.eps = 1e-5f, .momentum = 0.1f, .groups = 2};
    assert_int_equal(nac_bn_backward_sums(x, x, x, x, x, x, sums, p), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "nac_bn_backward_sums: gamma must have shape (3), got (4,3,2,2)"));
    nac_tensor_t *s2 = nac_tensor_new(be, 2, good), *gm = randt(be, 1, &c, 2, 1.0f),
                 *mean = nac_tensor_new(be, 2, sd), *dx = nac_tensor_new(be, 4, xd);
    assert_int_equal(nac_bn_backward_given(x, x, gm, gm, mean, mean, s2, dx, p), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "nac_bn_backward_given: input mean"));
    TU_OK(nac_tensor_fill(mean, 1.0f));
    assert_int_equal(nac_bn_backward_sums(x, x, gm, gm, mean, mean, sums, p), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "nac_bn_backward_sums: sums must have shape (4,3), got (2,3)"));
    p.groups = 3;
    assert_int_equal(nac_bn_stats(x, mean, mean, p), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "does not split into 3 groups"));
    nac_tensor_t *all[] = {x, sums, s2, gm, mean, dx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nac_tensor_free(all[i]);
    nac_backend_free(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces),
        cmocka_unit_test(test_pieces_relu),
        cmocka_unit_test(test_unit_two_ranks),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
