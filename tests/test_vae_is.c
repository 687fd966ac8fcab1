/* Importance-sampled log-likelihood on a linear-Gaussian model with a closed form
 * (p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I), log p(x) = log N(x; b, WW^T + s^2 I)):
 * exact for any K with the exact posterior as proposal, converging as K grows with a
 * perturbed one. Plus the test-set totals on hand data and the VAE's own evaluation. */
#include "testutil.h"

#include "vae/is.h"
#include "vae/vae.h"

enum { D = 5, L = 3, MAXB = 16 };

typedef struct lg_model {
    double w[D][L], b[D], s;
    double x[MAXB][D];
    int nb;
} lg_model;

/* Columns of W orthogonal (Gram-Schmidt, then scaled), so the exact posterior is a
 * diagonal Gaussian: var_j = 1 / (1 + c_j^2 / s^2), mu = var * W^T (x - b) / s^2. */
static void lg_init(lg_model *m, int nb) {
    const double c[L] = {1.5, 0.8, 2.0};
    double a[D * L], bb[D], noise[MAXB * (D + L)];
    float f[D * L + D + MAXB * (D + L)];
    tu_randn(f, D * L + D + MAXB * (D + L), 21, 1.0f);
    for (int i = 0; i < D * L; i++) a[i] = f[i];
    for (int i = 0; i < D; i++) bb[i] = f[D * L + i];
    for (int i = 0; i < MAXB * (D + L); i++) noise[i] = f[D * L + D + i];
    for (int j = 0; j < L; j++) {
        double col[D];
        for (int i = 0; i < D; i++) col[i] = a[i * L + j];
        for (int k = 0; k < j; k++) {
            double dot = 0;
            for (int i = 0; i < D; i++) dot += col[i] * m->w[i][k] / c[k];
            for (int i = 0; i < D; i++) col[i] -= dot * m->w[i][k] / c[k];
        }
        double nrm = 0;
        for (int i = 0; i < D; i++) nrm += col[i] * col[i];
        for (int i = 0; i < D; i++) m->w[i][j] = c[j] * col[i] / sqrt(nrm);
    }
    for (int i = 0; i < D; i++) m->b[i] = bb[i];
    m->s = 0.5;
    m->nb = nb;
    for (int n = 0; n < nb; n++) { /* x drawn from the model */
        const double *z = noise + n * (D + L), *e = z + L;
        for (int i = 0; i < D; i++) {
            double v = m->b[i] + m->s * e[i];
            for (int j = 0; j < L; j++) v += m->w[i][j] * z[j];
            m->x[n][i] = v;
        }
    }
}

static void lg_posterior(const lg_model *m, int n, double *mu, double *lv) {
    for (int j = 0; j < L; j++) {
        double c2 = 0, proj = 0;
        for (int i = 0; i < D; i++) {
            c2 += m->w[i][j] * m->w[i][j];
            proj += m->w[i][j] * (m->x[n][i] - m->b[i]);
        }
        double var = 1.0 / (1.0 + c2 / (m->s * m->s));
        mu[j] = var * proj / (m->s * m->s);
        lv[j] = log(var);
    }
}

/* log N(x; b, WW^T + s^2 I) by Cholesky. */
static double lg_logpx(const lg_model *m, int n) {
    double a[D][D], r[D];
    for (int i = 0; i < D; i++) {
        r[i] = m->x[n][i] - m->b[i];
        for (int k = 0; k < D; k++) {
            double v = i == k ? m->s * m->s : 0.0;
            for (int j = 0; j < L; j++) v += m->w[i][j] * m->w[k][j];
            a[i][k] = v;
        }
    }
    double logdet = 0;
    for (int j = 0; j < D; j++) {
        for (int k = 0; k < j; k++) a[j][j] -= a[j][k] * a[j][k];
        a[j][j] = sqrt(a[j][j]);
        logdet += 2 * log(a[j][j]);
        for (int i = j + 1; i < D; i++) {
            for (int k = 0; k < j; k++) a[i][j] -= a[i][k] * a[j][k];
            a[i][j] /= a[j][j];
        }
    }
    double y[D], q = 0; /* solve L y = r; r^T S^-1 r = |y|^2 */
    for (int i = 0; i < D; i++) {
        y[i] = r[i];
        for (int k = 0; k < i; k++) y[i] -= a[i][k] * y[k];
        y[i] /= a[i][i];
        q += y[i] * y[i];
    }
    return -0.5 * (D * log(2 * M_PI) + logdet + q);
}

/* The callback: log N(x_b; W z + b, s^2 I) in double on the host, row r = image r % B. */
static nac_status lg_loglik(void *ctx, const nac_tensor_t *z, nac_tensor_t *logp) {
    const lg_model *m = ctx;
    int64_t rows = z->dim[0];
    float *hz = malloc(rows * L * sizeof *hz), *lp = malloc(rows * sizeof *lp);
    assert_non_null(hz);
    assert_non_null(lp);
    TU_OK(nac_tensor_to_host(z, hz));
    for (int64_t r = 0; r < rows; r++) {
        const double *x = m->x[r % m->nb];
        double acc = -D * (log(m->s) + 0.5 * log(2 * M_PI));
        for (int i = 0; i < D; i++) {
            double mean = m->b[i];
            for (int j = 0; j < L; j++) mean += m->w[i][j] * hz[r * L + j];
            double t = (x[i] - mean) / m->s;
            acc -= 0.5 * t * t;
        }
        lp[r] = (float)acc;
    }
    nac_status s = nac_tensor_from_host(logp, lp);
    free(hz);
    free(lp);
    return s;
}

/* Proposal tensors for every image: the exact posterior, optionally shifted by `shift`
 * posterior standard deviations (alternating sign) and widened by `widen` in log var. */
static void proposal(nac_backend_t *be, const lg_model *m, double shift, double widen,
                     nac_tensor_t **mu, nac_tensor_t **lv) {
    float hm[MAXB * L], hv[MAXB * L];
    for (int n = 0; n < m->nb; n++) {
        double pm[L], pv[L];
        lg_posterior(m, n, pm, pv);
        for (int j = 0; j < L; j++) {
            double sgn = (n + j) % 2 ? -1.0 : 1.0;
            hm[n * L + j] = (float)(pm[j] + sgn * shift * exp(0.5 * pv[j]));
            hv[n * L + j] = (float)(pv[j] + widen);
        }
    }
    int64_t d[2] = {m->nb, L};
    *mu = tu_tensor(be, 2, d, hm);
    *lv = tu_tensor(be, 2, d, hv);
}

static void test_exact_posterior(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    lg_model m;
    lg_init(&m, 6);
    nac_tensor_t *mu, *lv;
    proposal(be, &m, 0.0, 0.0, &mu, &lv);
    const int ks[][2] = {{1, 1}, {10, 5}, {1000, 100}};
    for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
        double est[MAXB], elbo[MAXB];
        TU_OK(nac_vae_is_estimate(mu, lv, ks[c][0], ks[c][1], 1234 + c, 0, lg_loglik, &m, est,
                                  elbo));
        for (int n = 0; n < m.nb; n++) {
            double want = lg_logpx(&m, n);
            /* every log weight equals log p(x); float z and log q give ~1e-6 each */
            if (fabs(est[n] - want) > 2e-4 || fabs(elbo[n] - want) > 2e-4)
                fail_msg("K=%d image %d: estimate %.8f, ELBO %.8f, log p(x) %.8f", ks[c][0], n,
                         est[n], elbo[n], want);
        }
    }
    nac_tensor_free(mu);
    nac_tensor_free(lv);
    nac_backend_free(be);
}

static double mean_abs_err(nac_tensor_t *mu, nac_tensor_t *lv, lg_model *m, int k, int chunk,
                           uint64_t key, double *elbo_out) {
    double est[MAXB], elbo[MAXB], e = 0;
    TU_OK(nac_vae_is_estimate(mu, lv, k, chunk, key, 0, lg_loglik, m, est, elbo));
    for (int n = 0; n < m->nb; n++) {
        e += fabs(est[n] - lg_logpx(m, n));
        assert_true(est[n] >= elbo[n] - 1e-9); /* log-mean-exp >= mean */
        if (elbo_out) elbo_out[n] = elbo[n] - est[n];
    }
    return e / m->nb;
}

static void test_perturbed_proposal_converges(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    lg_model m;
    lg_init(&m, MAXB);
    nac_tensor_t *mu, *lv;
    /* 0.3 posterior sds off, variance 1.5x: chi^2 divergence ~0.36, so the K=1000
       estimate's sd is ~sqrt(0.36/1000) = 0.02; the K=1 error is ~KL + noise ~ 0.3. */
    proposal(be, &m, 0.3, 0.4, &mu, &lv);
    double gap[MAXB];
    double e1 = mean_abs_err(mu, lv, &m, 1, 1, 77, gap);
    for (int n = 0; n < m.nb; n++) assert_true(fabs(gap[n]) < 1e-12); /* K=1: IS = ELBO */
    double e1000 = mean_abs_err(mu, lv, &m, 1000, 125, 78, NULL);
    double e10 = mean_abs_err(mu, lv, &m, 10, 10, 79, NULL);
    print_message("mean |error|: K=1 %.4f, K=10 %.4f, K=1000 %.4f nats\n", e1, e10, e1000);
    assert_true(e1 > 0.05);
    assert_true(e1000 < 0.1 * e1);
    assert_true(e1000 < 0.05);
    assert_true(e1000 < e10);
    /* the same key draws the same samples */
    double a = mean_abs_err(mu, lv, &m, 20, 4, 5, NULL), b = mean_abs_err(mu, lv, &m, 20, 4, 5, NULL);
    assert_true(a == b);
    double est[MAXB];
    assert_int_equal(nac_vae_is_estimate(mu, lv, 1000, 300, 1, 0, lg_loglik, &m, est, NULL),
                     NAC_ERR_INVALID);
    nac_tensor_free(mu);
    nac_tensor_free(lv);
    nac_backend_free(be);
}

/* An image's estimate depends on its index in the evaluation, not on the chunk or on the
 * batch it came in: the same K in chunks of 1, 4 and 20 gives the same numbers, and so do
 * the images evaluated in two batches with their offsets. */
static void test_chunk_and_batch_invariance(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    lg_model m;
    lg_init(&m, 8);
    nac_tensor_t *mu, *lv;
    proposal(be, &m, 0.3, 0.4, &mu, &lv);
    double ref[MAXB], el[MAXB];
    TU_OK(nac_vae_is_estimate(mu, lv, 20, 20, 42, 0, lg_loglik, &m, ref, el));
    const int chunks[] = {1, 4, 10};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        double est[MAXB], e2[MAXB];
        TU_OK(nac_vae_is_estimate(mu, lv, 20, chunks[c], 42, 0, lg_loglik, &m, est, e2));
        for (int n = 0; n < m.nb; n++)
            if (fabs(est[n] - ref[n]) > 1e-9 || fabs(e2[n] - el[n]) > 1e-9)
                fail_msg("chunk %d image %d: %.12f vs %.12f", chunks[c], n, est[n], ref[n]);
    }
    /* images 0..4 and 5..7 as two batches, told their offsets */
    float hm[MAXB * L], hv[MAXB * L];
    TU_OK(nac_tensor_to_host(mu, hm));
    TU_OK(nac_tensor_to_host(lv, hv));
    const int split[3] = {0, 5, 8};
    for (int part = 0; part < 2; part++) {
        int first = split[part], nb = split[part + 1] - first;
        lg_model sub = m;
        sub.nb = nb;
        for (int n = 0; n < nb; n++)
            for (int i = 0; i < D; i++) sub.x[n][i] = m.x[first + n][i];
        int64_t dl[2] = {nb, L};
        nac_tensor_t *smu = tu_tensor(be, 2, dl, hm + first * L),
                     *slv = tu_tensor(be, 2, dl, hv + first * L);
        double est[MAXB];
        TU_OK(nac_vae_is_estimate(smu, slv, 20, 4, 42, first, lg_loglik, &sub, est, NULL));
        for (int n = 0; n < nb; n++)
            if (fabs(est[n] - ref[first + n]) > 1e-9)
                fail_msg("image %d in a batch from %d: %.12f vs %.12f", first + n, first,
                         est[n], ref[first + n]);
        nac_tensor_free(smu);
        nac_tensor_free(slv);
    }
    /* another offset is another image's noise */
    double other[MAXB];
    TU_OK(nac_vae_is_estimate(mu, lv, 20, 20, 42, 1, lg_loglik, &m, other, NULL));
    assert_true(fabs(other[0] - ref[0]) > 1e-9);
    nac_tensor_free(mu);
    nac_tensor_free(lv);
    nac_backend_free(be);
}

/* Totals on hand data. */
static void test_eval_totals(void **state) {
    (void)state;
    nac_vae_eval_t e;
    TU_OK(nac_vae_eval_init(&e, 2, 10, true));
    const float mu[8] = {0.0f, 0.01f, 0.5f, 0.02f, -0.5f, 0.0f, 1.0f, 0.01f};
    const float lv[8] = {0.0f, -1.0f, 0.5f, 0.0f, -0.2f, 0.3f, 0.0f, 0.0f};
    const double lp[4] = {-10, -12, -11, -13}, el[4] = {-10.5, -12.5, -11.2, -13.9};
    TU_OK(nac_vae_eval_add(&e, 2, mu, lv, lp, el));
    TU_OK(nac_vae_eval_add(&e, 2, mu + 4, lv + 4, lp + 2, el + 2));
    nac_vae_eval_result_t r;
    nac_vae_eval_get(&e, &r);
    double kl = 0;
    for (int i = 0; i < 8; i++) kl += 0.5 * (mu[i] * (double)mu[i] + exp(lv[i]) - 1 - lv[i]);
    assert_int_equal(r.images, 4);
    assert_true(fabs(r.logpx - -11.5) < 1e-12);
    assert_true(fabs(r.logpx_se - sqrt(5.0 / 3.0) / 2.0) < 1e-12);
    assert_true(fabs(r.bpd - 11.5 / (10 * log(2.0))) < 1e-12);
    assert_true(fabs(r.bpd_se - r.logpx_se / (10 * log(2.0))) < 1e-12);
    assert_true(fabs(r.elbo - (-48.1 / 4)) < 1e-12);
    assert_true(fabs(r.kl - kl / 4) < 1e-6);
    assert_int_equal(r.active_units, 1); /* unit 0 varies (var 0.42), unit 1 does not */
    assert_true(r.discrete);
    /* per image, in the order added */
    const double *ilp = nac_vae_eval_logpx(&e), *ikl = nac_vae_eval_kl(&e);
    double kls = 0;
    for (int i = 0; i < 4; i++) {
        assert_true(ilp[i] == lp[i]);
        double k1 = 0;
        for (int u = 0; u < 2; u++)
            k1 += 0.5 * (mu[2 * i + u] * (double)mu[2 * i + u] + exp(lv[2 * i + u]) - 1 - lv[2 * i + u]);
        assert_true(fabs(ikl[i] - k1) < 1e-12);
        kls += ikl[i];
    }
    assert_true(fabs(kls / 4 - r.kl) < 1e-12);
    nac_vae_eval_free(&e);
}

/* The VAE's own evaluation end to end on a tiny model. */
static void test_vae_eval_batch(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    nac_vae_config cfg = {.features = 6, .latent = 4, .channels = 1, .size = 8, .width = 2,
                          .blocks = 1, .likelihood = NAC_VAE_LIK_LOGISTIC};
    nac_vae_t *v = NULL;
    TU_OK(nac_vae_create(be, &cfg, 3, &v));
    enum { B = 3 };
    float h[B * 6], x[B * 64];
    tu_randn(h, B * 6, 4, 1.0f);
    tu_randu(x, B * 64, 5, 0.0f, 1.0f);
    for (int i = 0; i < B * 64; i++) x[i] = floorf(x[i] * 255.0f + 0.5f) / 255.0f;
    int64_t dx[4] = {B, 1, 8, 8}, dh[2] = {B, 6};
    nac_tensor_t *th = tu_tensor(be, 2, dh, h), *tx = tu_tensor(be, 4, dx, x);
    nac_tensor_t *tdh = nac_tensor_new(be, 2, dh);
    /* a training step first, so the running statistics are not the initial ones */
    TU_OK(nac_vae_forward(v, th, tx, 1, 1.0f, NULL));
    TU_OK(nac_vae_backward(v, tdh));
    nac_vae_eval_t e1, e20, again;
    TU_OK(nac_vae_eval_init(&e1, 4, 64, true));
    TU_OK(nac_vae_eval_init(&e20, 4, 64, true));
    TU_OK(nac_vae_eval_init(&again, 4, 64, true));
    TU_OK(nac_vae_eval_batch(v, th, tx, 1, 1, 9, &e1));
    TU_OK(nac_vae_eval_batch(v, th, tx, 20, 5, 9, &e20));
    TU_OK(nac_vae_eval_batch(v, th, tx, 20, 5, 9, &again));
    nac_vae_eval_result_t r1, r20, ra;
    nac_vae_eval_get(&e1, &r1);
    nac_vae_eval_get(&e20, &r20);
    nac_vae_eval_get(&again, &ra);
    assert_true(fabs(r1.logpx - r1.elbo) < 1e-9);
    assert_true(r20.logpx >= r20.elbo);
    assert_true(isfinite(r20.logpx) && r20.logpx < 0 && r20.bpd > 0);
    assert_true(r20.logpx == ra.logpx);
    assert_true(fabs(r20.kl - r1.kl) < 1e-12); /* analytic, independent of the samples */
    /* chunks of 1 and 20 (decoder batches of 3 and 60), and the images one at a time:
       the same estimates up to float rounding of the convolutions */
    nac_vae_eval_t ec, eb;
    TU_OK(nac_vae_eval_init(&ec, 4, 64, true));
    TU_OK(nac_vae_eval_init(&eb, 4, 64, true));
    TU_OK(nac_vae_eval_batch(v, th, tx, 20, 20, 9, &ec));
    int64_t d1x[4] = {1, 1, 8, 8}, d1h[2] = {1, 6};
    for (int i = 0; i < B; i++) {
        nac_tensor_t *h1 = tu_tensor(be, 2, d1h, h + i * 6), *x1 = tu_tensor(be, 4, d1x, x + i * 64);
        TU_OK(nac_vae_eval_batch(v, h1, x1, 20, 1, 9, &eb));
        nac_tensor_free(h1);
        nac_tensor_free(x1);
    }
    const double *l20 = nac_vae_eval_logpx(&e20), *lc = nac_vae_eval_logpx(&ec),
                 *lb = nac_vae_eval_logpx(&eb);
    for (int i = 0; i < B; i++) {
        if (fabs(lc[i] - l20[i]) > 1e-4 * fabs(l20[i]) || fabs(lb[i] - l20[i]) > 1e-4 * fabs(l20[i]))
            fail_msg("image %d: log p(x) %.6f (chunk 5), %.6f (chunk 20), %.6f (alone)", i,
                     l20[i], lc[i], lb[i]);
    }
    nac_vae_eval_free(&ec);
    nac_vae_eval_free(&eb);
    /* the ELBO from a training-mode forward is in the same range */
    nac_vae_stats st;
    nac_vae_set_train(v, false);
    TU_OK(nac_vae_forward(v, th, tx, 2, 1.0f, &st));
    assert_true(fabs(-st.nelbo - r20.elbo) < 0.2 * fabs(r20.elbo));
    assert_int_equal(nac_vae_backward(v, tdh), NAC_ERR_INVALID); /* eval mode */
    nac_vae_set_train(v, true);
    TU_OK(nac_vae_forward(v, th, tx, 1, 1.0f, &st));
    TU_OK(nac_vae_backward(v, tdh));
    print_message("tiny VAE: log p(x) %.3f +- %.3f (K=20), ELBO %.3f, KL %.4f, %d active\n",
                  r20.logpx, r20.logpx_se, r20.elbo, r20.kl, r20.active_units);
    nac_vae_eval_free(&e1);
    nac_vae_eval_free(&e20);
    nac_vae_eval_free(&again);
    nac_tensor_free(th);
    nac_tensor_free(tx);
    nac_tensor_free(tdh);
    nac_vae_free(v);
    nac_backend_free(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_posterior),
        cmocka_unit_test(test_perturbed_proposal_converges),
        cmocka_unit_test(test_chunk_and_batch_invariance),
        cmocka_unit_test(test_eval_totals),
        cmocka_unit_test(test_vae_eval_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
