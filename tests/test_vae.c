/* The VAE stage: pixel likelihoods against hand values (the 256-bin logistic sums to 1
 * over its bins), their gradients and the whole ELBO's gradients against central finite
 * differences, the analytic KL, and the decoder's geometry for 32x32x3 and 28x28x1. */
#include "testutil.h"

#include "nn/param.h"
#include "vae/decoder.h"
#include "vae/likelihood.h"
#include "vae/vae.h"

static int64_t d2[2];
static const int64_t *dims2(int64_t r, int64_t c) {
    d2[0] = r;
    d2[1] = c;
    return d2;
}

static double softplus_d(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Reference log-probability of pixel k under the discretised logistic, in double, from
 * the CDF difference (fine for the moderate cases it is used on). */
static double logistic_ref(int k, double m, double ls) {
    if (ls < -7) ls = -7;
    double s = exp(ls), x = 2.0 * k / 255.0 - 1.0, e = 1.0 / 255.0;
    double up = k == 255 ? 1.0 : sigmoid_d((x + e - m) / s);
    double lo = k == 0 ? 0.0 : sigmoid_d((x - e - m) / s);
    return log(up - lo);
}

/* One pixel per row: logp of every bin for a set of (mean, log-scale) pairs. */
static void test_logistic_sums_to_one(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    const double pairs[][2] = {{0.0, -3.0},  {0.3, -7.0},   {-1.0, -7.0},
                               {1.0, -7.0},  {3.0, 0.0},    {-5.0, -2.0},
                               {0.2, 4.0},   {0.0, -12.0},  {2.0 * 100 / 255 - 1, -7.0},
                               {-0.99, -5.0}, {40.0, -7.0}, {0.5, 8.0}};
    const int np = sizeof pairs / sizeof pairs[0], n = np * 256;
    float *x = malloc(n * sizeof *x), *m = malloc(n * sizeof *m), *ls = malloc(n * sizeof *ls);
    float *lp = malloc(n * sizeof *lp);
    for (int p = 0; p < np; p++)
        for (int k = 0; k < 256; k++) {
            x[p * 256 + k] = (float)k / 255.0f;
            m[p * 256 + k] = (float)pairs[p][0];
            ls[p * 256 + k] = (float)pairs[p][1];
        }
    nac_vae_lik_t lk;
    TU_OK(nac_vae_lik_init(&lk, be, NAC_VAE_LIK_LOGISTIC, 1, 1));
    nac_tensor_t *tx = tu_tensor(be, 2, dims2(n, 1), x), *tm = tu_tensor(be, 2, dims2(n, 1), m);
    nac_tensor_t *tl = tu_tensor(be, 2, dims2(n, 1), ls), *tp = nac_tensor_new1(be, n);
    TU_OK(nac_vae_lik_set_data(&lk, tx, 1));
    TU_OK(nac_vae_lik_forward(&lk, tm, tl, NULL, tp));
    TU_OK(nac_tensor_to_host(tp, lp));
    for (int p = 0; p < np; p++) {
        double total = 0;
        for (int k = 0; k < 256; k++) {
            float v = lp[p * 256 + k];
            if (!isfinite(v))
                fail_msg("pair %d bin %d: log p = %g", p, k, (double)v);
            if (v > 1e-6f) fail_msg("pair %d bin %d: log p = %g > 0", p, k, (double)v);
            total += exp((double)v);
        }
        /* float log-probabilities, each with relative error ~1e-6 */
        if (fabs(total - 1.0) > 2e-5)
            fail_msg("pair %d (mean %g, log-scale %g): bins sum to %.9f", p, pairs[p][0],
                     pairs[p][1], total);
    }
    /* hand values where the CDF difference is well conditioned */
    const int ks[] = {0, 1, 77, 128, 200, 254, 255};
    for (int p = 0; p < 6; p++)
        for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++) {
            int k = ks[j];
            double want = logistic_ref(k, pairs[p][0], pairs[p][1]);
            if (want < -20) continue; /* the double reference itself cancels there */
            double got = lp[p * 256 + k];
            if (fabs(got - want) > 1e-5 + 2e-6 * fabs(want))
                fail_msg("pair %d bin %d: got %.9g, want %.9g", p, k, got, want);
        }
    /* a sharp logistic centred on a bin: nearly all its mass there, the tails exact */
    double c = lp[8 * 256 + 100], lo = lp[8 * 256 + 99], ud = exp(7.0) / 255.0;
    double want_c = log(sigmoid_d(ud) - sigmoid_d(-ud)); /* -0.027: 4.3 scales each side */
    assert_true(fabs(c - want_c) < 1e-5);
    double want_lo = log(sigmoid_d(-ud) - sigmoid_d(-3.0 * ud));
    assert_true(fabs(lo - want_lo) < 1e-4 * fabs(want_lo));
    nac_vae_lik_free(&lk);
    nac_tensor_free(tx);
    nac_tensor_free(tm);
    nac_tensor_free(tl);
    nac_tensor_free(tp);
    free(x);
    free(m);
    free(ls);
    free(lp);
    nac_backend_free(be);
}

/* Gaussian (per-channel sigma) and Bernoulli against hand-computed sums. */
static void test_gaussian_bernoulli_values(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    /* 2 images, 2 channels, 3 pixels per channel */
    const float x[12] = {0.0f, 0.5f, 1.0f, 0.25f, 0.75f, 0.1f, 0.9f, 0.3f, 0.6f, 0.2f, 0.4f, 1.0f};
    const float m[12] = {0.1f, 0.4f, 0.7f, 0.3f, 0.5f, 0.0f, 1.2f, 0.3f, 0.2f, -0.1f, 0.5f, 0.8f};
    const float lsig[2] = {-1.0f, 0.5f};
    nac_params_t ps;
    nac_params_init(&ps);
    int64_t c = 2;
    nac_param_t *p = nac_params_add(&ps, be, "decoder.log_sigma", 1, &c, 0);
    assert_non_null(p);
    TU_OK(nac_tensor_from_host(&p->w, lsig));
    nac_tensor_t *tx = tu_tensor(be, 2, dims2(2, 6), x), *tm = tu_tensor(be, 2, dims2(2, 6), m);
    nac_tensor_t *tp = nac_tensor_new1(be, 2);
    float got[2];
    double want[2] = {0, 0};
    for (int i = 0; i < 12; i++) {
        double s = exp(lsig[(i % 6) / 3]), z = (x[i] - m[i]) / s;
        want[i / 6] += -0.5 * z * z - log(s) - 0.5 * log(2 * M_PI);
    }
    nac_vae_lik_t lk;
    TU_OK(nac_vae_lik_init(&lk, be, NAC_VAE_LIK_GAUSSIAN, 2, 3));
    TU_OK(nac_vae_lik_set_data(&lk, tx, 1));
    TU_OK(nac_vae_lik_forward(&lk, tm, NULL, p, tp));
    TU_OK(nac_tensor_to_host(tp, got));
    tu_close_d(got, want, 2, 1e-6, 1e-5, "gaussian log p");
    /* the Gaussian needs its parameter; the others refuse one */
    assert_int_equal(nac_vae_lik_forward(&lk, tm, NULL, NULL, tp), NAC_ERR_INVALID);
    nac_vae_lik_free(&lk);

    const float xb[12] = {0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 0};
    nac_tensor_t *txb = tu_tensor(be, 2, dims2(2, 6), xb);
    double wb[2] = {0, 0};
    for (int i = 0; i < 12; i++) {
        double l = 6.0 * m[i] - 2.0; /* logits, some large */
        wb[i / 6] += xb[i] * l - softplus_d(l);
    }
    float ml[12];
    for (int i = 0; i < 12; i++) ml[i] = 6.0f * m[i] - 2.0f;
    TU_OK(nac_tensor_from_host(tm, ml));
    TU_OK(nac_vae_lik_init(&lk, be, NAC_VAE_LIK_BERNOULLI, 2, 3));
    TU_OK(nac_vae_lik_set_data(&lk, txb, 1));
    TU_OK(nac_vae_lik_forward(&lk, tm, NULL, NULL, tp));
    TU_OK(nac_tensor_to_host(tp, got));
    tu_close_d(got, wb, 2, 1e-6, 1e-5, "bernoulli log p");
    assert_int_equal(nac_vae_lik_forward(&lk, tm, NULL, p, tp), NAC_ERR_INVALID);
    nac_vae_lik_free(&lk);
    nac_tensor_free(tx);
    nac_tensor_free(txb);
    nac_tensor_free(tm);
    nac_tensor_free(tp);
    nac_params_free(&ps);
    nac_backend_free(be);
}

/* ---- likelihood gradients by central differences ---- */
static double lik_total(nac_vae_lik_t *lk, nac_tensor_t *loc, nac_tensor_t *ls, nac_param_t *p,
                        nac_tensor_t *lp, int n) {
    float v[16];
    TU_OK(nac_vae_lik_forward(lk, loc, ls, p, lp));
    TU_OK(nac_tensor_to_host(lp, v));
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return s;
}

/* Perturb element i of t by delta (host round trip). */
static void bump(nac_tensor_t *t, int64_t i, float delta) {
    int64_t n = nac_tensor_numel(t);
    float *v = malloc(n * sizeof *v);
    TU_OK(nac_tensor_to_host(t, v));
    v[i] += delta;
    TU_OK(nac_tensor_from_host(t, v));
    free(v);
}

static void check_lik_grad(nac_backend_t *be, nac_vae_lik_kind kind) {
    enum { N = 3, C = 2, HW = 4, D = C * HW };
    float x[N * D], m[N * D], ls[N * D], g[N * D], gs[N * D];
    tu_randu(m, N * D, 11, -1.2f, 1.2f);
    tu_randu(ls, N * D, 12, -4.0f, 0.5f);
    for (int i = 0; i < N * D; i++) {
        int k = (int)(((i * 37) % 256 + 256) % 256);
        if (i % 7 == 0) k = 0;
        if (i % 7 == 1) k = 255;
        x[i] = kind == NAC_VAE_LIK_BERNOULLI ? (float)(k > 127) : (float)k / 255.0f;
        if (kind == NAC_VAE_LIK_GAUSSIAN) m[i] = 0.5f + 0.4f * m[i];
        if (kind == NAC_VAE_LIK_BERNOULLI) m[i] *= 3.0f;
    }
    ls[5] = -9.0f; /* clamped: no gradient */
    nac_params_t ps;
    nac_params_init(&ps);
    int64_t c = C;
    nac_param_t *p = NULL;
    if (kind == NAC_VAE_LIK_GAUSSIAN) {
        p = nac_params_add(&ps, be, "decoder.log_sigma", 1, &c, 0);
        const float l0[C] = {-1.3f, -0.4f};
        TU_OK(nac_tensor_from_host(&p->w, l0));
    }
    bool logistic = kind == NAC_VAE_LIK_LOGISTIC;
    nac_tensor_t *tx = tu_tensor(be, 2, dims2(N, D), x), *tm = tu_tensor(be, 2, dims2(N, D), m);
    nac_tensor_t *tl = logistic ? tu_tensor(be, 2, dims2(N, D), ls) : NULL;
    nac_tensor_t *dm = nac_tensor_new2(be, N, D), *dl = logistic ? nac_tensor_new2(be, N, D) : NULL;
    nac_tensor_t *lp = nac_tensor_new1(be, N);
    nac_vae_lik_t lk;
    TU_OK(nac_vae_lik_init(&lk, be, kind, C, HW));
    TU_OK(nac_vae_lik_set_data(&lk, tx, 1));
    const float scale = -0.5f;
    lik_total(&lk, tm, tl, p, lp, N);
    TU_OK(nac_vae_lik_backward(&lk, scale, dm, dl, p));
    TU_OK(nac_tensor_to_host(dm, g));
    if (dl) TU_OK(nac_tensor_to_host(dl, gs));
    float gp[C] = {0, 0};
    if (p) TU_OK(nac_tensor_to_host(&p->g, gp));
    /* Central differences of a float sum of ~N*D terms of size ~5: rounding ~1e-5 over
       2h = 2e-2 gives ~1e-3; truncation h^2 f'''/6 is of the same order. */
    const float h = 1e-2f;
    char what[64];
    for (int which = 0; which < 3; which++) {
        nac_tensor_t *t = which == 0 ? tm : which == 1 ? tl : p ? &p->w : NULL;
        if (!t) continue;
        const float *an = which == 0 ? g : which == 1 ? gs : gp;
        for (int64_t i = 0; i < nac_tensor_numel(t); i++) {
            bump(t, i, h);
            double fp = lik_total(&lk, tm, tl, p, lp, N);
            bump(t, i, -2 * h);
            double fm = lik_total(&lk, tm, tl, p, lp, N);
            bump(t, i, h);
            double fd = scale * (fp - fm) / (2 * h);
            snprintf(what, sizeof what, "%s d/d%s", nac_vae_lik_name(kind),
                     which == 0 ? "loc" : which == 1 ? "log_scale" : "log_sigma");
            tu_close_d(&an[i], &fd, 1, 2e-3, 2e-3, what);
        }
    }
    if (logistic) assert_true(gs[5] == 0.0f);
    nac_vae_lik_free(&lk);
    nac_tensor_free(tx);
    nac_tensor_free(tm);
    nac_tensor_free(tl);
    nac_tensor_free(dm);
    nac_tensor_free(dl);
    nac_tensor_free(lp);
    nac_params_free(&ps);
}

static void test_likelihood_gradients(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    check_lik_grad(be, NAC_VAE_LIK_LOGISTIC);
    check_lik_grad(be, NAC_VAE_LIK_GAUSSIAN);
    check_lik_grad(be, NAC_VAE_LIK_BERNOULLI);
    nac_backend_free(be);
}

/* ---- the VAE ---- */
static nac_vae_t *tiny_vae(nac_backend_t *be, nac_vae_lik_kind kind, int c) {
    nac_vae_config cfg = {.features = 5, .latent = 3, .channels = c, .size = 8, .width = 2,
                          .blocks = 1, .likelihood = kind};
    nac_vae_t *v = NULL;
    TU_OK(nac_vae_create(be, &cfg, 42, &v));
    return v;
}

static void pixels(float *x, int64_t n, nac_vae_lik_kind kind, uint64_t seed) {
    tu_randu(x, n, seed, 0.0f, 1.0f);
    for (int64_t i = 0; i < n; i++)
        x[i] = kind == NAC_VAE_LIK_BERNOULLI ? (float)(x[i] > 0.5f)
                                             : floorf(x[i] * 255.0f + 0.5f) / 255.0f;
}

/* Head weights 0 and bias (mu; log var): every image gets the same posterior. */
static void test_kl(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    nac_vae_t *v = tiny_vae(be, NAC_VAE_LIK_LOGISTIC, 1);
    const float bias[6] = {0.5f, -1.0f, 0.0f, -0.5f, 0.3f, -2.0f};
    const double want = 0.5 * ((0.25 + exp(-0.5) - 1 + 0.5) + (1 + exp(0.3) - 1 - 0.3) +
                               (0 + exp(-2.0) - 1 + 2.0));
    TU_OK(nac_tensor_fill(&v->head_w->w, 0.0f));
    TU_OK(nac_tensor_from_host(&v->head_b->w, bias));
    enum { N = 4 };
    float h[N * 5], x[N * 64];
    tu_randn(h, N * 5, 1, 1.0f);
    pixels(x, N * 64, NAC_VAE_LIK_LOGISTIC, 2);
    int64_t dx[4] = {N, 1, 8, 8};
    nac_tensor_t *th = tu_tensor(be, 2, dims2(N, 5), h), *tx = tu_tensor(be, 4, dx, x);
    nac_vae_stats st;
    TU_OK(nac_vae_forward(v, th, tx, 7, 1.0f, &st));
    assert_true(fabs(st.kl - want) < 1e-5 * want);
    assert_true(fabs(st.nelbo - (st.rec + st.kl)) < 1e-9);
    /* Monte Carlo: KL = E_q[log q(z) - log p(z)] = E_eps[sum_j -0.5 eps^2 - lv/2 + 0.5 z^2] */
    nac_rng_t r;
    nac_rng_init(&r, nac_rng_key(3, 0, 0, 0));
    const int S = 400000;
    double sum = 0, sq = 0;
    for (int s = 0; s < S; s++) {
        double kl = 0;
        for (int j = 0; j < 3; j++) {
            double e = nac_rng_normal(&r), z = bias[j] + exp(0.5 * bias[3 + j]) * e;
            kl += -0.5 * e * e - 0.5 * bias[3 + j] + 0.5 * z * z;
        }
        sum += kl;
        sq += kl * kl;
    }
    double mc = sum / S, se = sqrt((sq / S - mc * mc) / S);
    if (fabs(mc - st.kl) > 4 * se)
        fail_msg("KL %g vs Monte Carlo %g +- %g", st.kl, mc, se);
    /* beta weights the KL in the objective only */
    TU_OK(nac_vae_forward(v, th, tx, 7, 0.25f, &st));
    assert_true(fabs(st.loss - (st.rec + 0.25 * st.kl)) < 1e-9);
    nac_tensor_free(th);
    nac_tensor_free(tx);
    nac_vae_free(v);
    nac_backend_free(be);
}

/* The loss summed in double from the per-pixel log-probabilities and per-image KLs, so
 * that a finite difference sees the float rounding of ~1e-6 per pixel, not that of a
 * ~1000-nat total. */
static double vae_loss(nac_vae_t *v, nac_tensor_t *h, nac_tensor_t *x, float beta) {
    TU_OK(nac_vae_forward(v, h, x, 99, beta, NULL));
    const nac_tensor_t *px = nac_vae_lik_pixels(&v->lik);
    assert_non_null(px);
    int64_t n = nac_tensor_numel(px);
    float *a = malloc(n * sizeof *a), kl[16];
    TU_OK(nac_tensor_to_host(px, a));
    TU_OK(nac_tensor_to_host(&v->kl, kl));
    double s = 0;
    for (int64_t i = 0; i < n; i++) s -= a[i];
    for (int64_t i = 0; i < v->n; i++) s += beta * (double)kl[i];
    free(a);
    return s / (double)v->n;
}

/* Central differences through a float ReLU network: with step h, some of the ~10^4
 * BN-ReLU units of the tiny decoder sit within reach of their kink (error O(h) when
 * one is crossed), while the per-pixel rounding (~1e-6 x 200 pixels) gives noise
 * ~1e-5 / h. No single h is safe for every element, so each element is tried at three
 * steps and must match at one of them within 2% + 0.01: a wiring error (a missing term,
 * a wrong factor or sign) misses at every step. */
static void check_fd(nac_vae_t *v, nac_tensor_t *t, const float *an, int64_t i, nac_tensor_t *h,
                     nac_tensor_t *x, float beta, const char *what) {
    const float steps[3] = {1e-3f, 3e-4f, 1e-4f};
    double fd[3], best = INFINITY;
    for (int k = 0; k < 3; k++) {
        bump(t, i, steps[k]);
        double fp = vae_loss(v, h, x, beta);
        bump(t, i, -2 * steps[k]);
        double fm = vae_loss(v, h, x, beta);
        bump(t, i, steps[k]);
        fd[k] = (fp - fm) / (2 * steps[k]);
        best = fmin(best, fabs(fd[k] - an[i]));
    }
    if (!(best <= 0.02 * fabs(an[i]) + 0.01))
        fail_msg("dloss/d%s[%lld]: analytic %.6g, central differences %.6g %.6g %.6g", what,
                 (long long)i, an[i], fd[0], fd[1], fd[2]);
}

static void check_vae_grads(nac_backend_t *be, nac_vae_lik_kind kind, int c) {
    nac_vae_t *v = tiny_vae(be, kind, c);
    enum { N = 4, F = 5 };
    int64_t d = (int64_t)c * 64, dx4[4] = {N, c, 8, 8};
    float hh[N * F], *x = malloc(N * d * sizeof *x), dh[N * F];
    tu_randn(hh, N * F, 5, 1.0f);
    pixels(x, N * d, kind, 6);
    nac_tensor_t *h = tu_tensor(be, 2, dims2(N, F), hh), *tx = tu_tensor(be, 4, dx4, x);
    nac_tensor_t *tdh = nac_tensor_new2(be, N, F);
    const float beta = 0.7f;
    vae_loss(v, h, tx, beta);
    TU_OK(nac_vae_backward(v, tdh));
    TU_OK(nac_tensor_to_host(tdh, dh));
    const char *names[] = {"head.weight", "head.bias", "decoder.fc.weight",
                           "decoder.blocks.1.conv1.weight", "decoder.blocks.1.shortcut.weight",
                           "decoder.blocks.0.bn2.weight", "decoder.out.weight",
                           "decoder.out_scale.bias", "decoder.log_sigma"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        nac_param_t *p = nac_params_find(&v->params, names[k]);
        if (!p) {
            bool optional = strstr(names[k], "scale") || strstr(names[k], "sigma");
            if (!optional) fail_msg("no parameter %s", names[k]);
            continue;
        }
        int64_t n = nac_tensor_numel(&p->w);
        float *g = malloc(n * sizeof *g);
        TU_OK(nac_tensor_to_host(&p->g, g));
        for (int64_t i = 0; i < n; i += (n > 6 ? n / 5 : 1))
            check_fd(v, &p->w, g, i, h, tx, beta, names[k]);
        free(g);
    }
    for (int64_t i = 0; i < N * F; i += 3) check_fd(v, h, dh, i, h, tx, beta, "h");
    /* backward without dh (frozen body) still gives the parameters' gradients */
    vae_loss(v, h, tx, beta);
    TU_OK(nac_vae_backward(v, NULL));
    nac_tensor_free(h);
    nac_tensor_free(tx);
    nac_tensor_free(tdh);
    free(x);
    nac_vae_free(v);
}

/* Set a batch-norm unit's running statistics to the batch statistics its last training
 * forward saved (groups 1): an evaluation forward then normalises exactly as it did. */
static void running_from_saved(nac_bn_unit *u) {
    float m[64], v[64];
    assert_true(u->c <= 64);
    TU_OK(nac_tensor_to_host(&u->save_mean, m));
    TU_OK(nac_tensor_to_host(&u->save_var, v));
    TU_OK(nac_tensor_from_host(&u->mean->w, m));
    TU_OK(nac_tensor_from_host(&u->var->w, v));
}

/* The evaluation forward keeps its activations in buffer pools (a few per shape, reused
 * across blocks) while the training forward keeps every one: with the running statistics
 * set to a training batch's own, both give the same output on that batch. Two stages with an
 * upsampling and a width change (1x1 shortcut), two blocks a stage (identity skips), two maps. */
static void test_decoder_eval_path_matches_train(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    nac_vae_config cfg = {.features = 6, .latent = 5, .channels = 2, .size = 8, .width = 3,
                          .blocks = 2, .likelihood = NAC_VAE_LIK_LOGISTIC};
    nac_vae_t *v = NULL;
    TU_OK(nac_vae_create(be, &cfg, 4, &v));
    enum { N = 7 };
    float z[N * 5];
    tu_randn(z, N * 5, 11, 1.0f);
    nac_tensor_t *tz = tu_tensor(be, 2, dims2(N, 5), z);
    nac_vae_decoder_t *d = v->dec;
    int64_t dd = 2 * 8 * 8;
    float *want = malloc(2 * N * dd * sizeof *want), *got = malloc(2 * N * dd * sizeof *got);
    assert_non_null(want);
    assert_non_null(got);
    const nac_tensor_t *loc, *ls;
    TU_OK(nac_vae_decoder_forward(d, tz, true, &loc, &ls));
    TU_OK(nac_tensor_to_host(loc, want));
    TU_OK(nac_tensor_to_host(ls, want + N * dd));
    for (int k = 0; k < d->nblocks; k++) {
        running_from_saved(&d->blocks[k].bn1);
        running_from_saved(&d->blocks[k].bn2);
    }
    running_from_saved(&d->bn_out);
    for (int rep = 0; rep < 2; rep++) { /* the second pass reuses the pools' buffers */
        TU_OK(nac_vae_decoder_forward(d, tz, false, &loc, &ls));
        TU_OK(nac_tensor_to_host(loc, got));
        TU_OK(nac_tensor_to_host(ls, got + N * dd));
        tu_close_f(got, want, 2 * N * dd, 1e-4, 1e-4, "evaluation vs training forward");
    }
    /* each shape's pool holds what one block needs at once: at most 3 buffers */
    for (int i = 0; i < d->pools.n; i++) assert_true(nac_bufpool_allocated(&d->pools.p[i]) <= 3);
    assert_true(d->pools.n > 0);
    free(want);
    free(got);
    nac_tensor_free(tz);
    nac_vae_free(v);
    nac_backend_free(be);
}

static void test_elbo_gradients_logistic(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    check_vae_grads(be, NAC_VAE_LIK_LOGISTIC, 3);
    nac_backend_free(be);
}

static void test_elbo_gradients_gaussian_bernoulli(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    check_vae_grads(be, NAC_VAE_LIK_GAUSSIAN, 1);
    check_vae_grads(be, NAC_VAE_LIK_BERNOULLI, 1);
    nac_backend_free(be);
}

/* Decoder geometry and output shapes for CIFAR-10 and (Fashion-)MNIST. */
static void check_shapes(nac_backend_t *be, int c, int size, int s_want, int nup_want,
                         nac_vae_lik_kind kind) {
    nac_vae_config cfg = {.features = 16, .latent = 8, .channels = c, .size = size, .width = 2,
                          .blocks = 1, .likelihood = kind};
    nac_vae_t *v = NULL;
    TU_OK(nac_vae_create(be, &cfg, 1, &v));
    assert_int_equal(v->dec->s, s_want);
    assert_int_equal(v->dec->nup, nup_want);
    assert_int_equal(v->dec->nblocks, nup_want + 1);
    assert_int_equal(v->dec->c0, 2 << nup_want);
    assert_int_equal(v->head_w->group, NAC_VAE_GROUP_HEAD);
    nac_param_t *fc = nac_params_find(&v->params, "decoder.fc.weight");
    assert_non_null(fc);
    assert_int_equal(fc->group, NAC_VAE_GROUP_DECODER);
    assert_int_equal(fc->w.dim[0], (int64_t)(2 << nup_want) * s_want * s_want);
    assert_non_null(nac_params_find(&v->params, "decoder.blocks.0.conv1.weight"));
    assert_non_null(nac_params_find(&v->params, "decoder.blocks.0.bn1.running_var"));
    enum { N = 2 };
    float z[N * 8];
    tu_randn(z, N * 8, 9, 1.0f);
    nac_tensor_t *tz = tu_tensor(be, 2, dims2(N, 8), z), *dz = nac_tensor_new2(be, N, 8);
    const nac_tensor_t *loc, *ls;
    int64_t d = (int64_t)c * size * size;
    for (int train = 1; train >= 0; train--) {
        TU_OK(nac_vae_decoder_forward(v->dec, tz, train, &loc, &ls));
        assert_int_equal(loc->ndim, 2);
        assert_int_equal(loc->dim[0], N);
        assert_int_equal(loc->dim[1], d);
        if (kind == NAC_VAE_LIK_LOGISTIC) {
            assert_non_null(ls);
            assert_int_equal(ls->dim[1], d);
        } else {
            assert_null(ls);
        }
        if (train) {
            nac_tensor_t *g = nac_tensor_new2(be, N, d), *gs = nac_tensor_new2(be, N, d);
            TU_OK(nac_tensor_fill(g, 0.01f));
            TU_OK(nac_tensor_fill(gs, -0.01f));
            TU_OK(nac_vae_decoder_backward(v->dec, g, ls ? gs : NULL, dz));
            float hz[N * 8];
            TU_OK(nac_tensor_to_host(dz, hz));
            for (int i = 0; i < N * 8; i++) assert_true(isfinite(hz[i]));
            nac_tensor_free(g);
            nac_tensor_free(gs);
        } else {
            /* an inference-mode forward cannot be differentiated */
            assert_int_equal(nac_vae_decoder_backward(v->dec, loc, ls, dz), NAC_ERR_INVALID);
        }
    }
    float *img = malloc(N * d * sizeof *img);
    TU_OK(nac_vae_decode_mean(v, tz, img));
    for (int64_t i = 0; i < N * d; i++) assert_true(img[i] >= 0.0f && img[i] <= 1.0f);
    free(img);
    nac_tensor_free(tz);
    nac_tensor_free(dz);
    nac_vae_free(v);
}

/* Fixed-variance Gaussian (frozen log sigma at log(sigma)), a zero head, and a head
 * re-expressed for standardised features. */
static void test_vae_options(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    nac_vae_config cfg = {.features = 3, .latent = 2, .channels = 1, .size = 8, .width = 2,
                          .blocks = 1, .likelihood = NAC_VAE_LIK_GAUSSIAN, .sigma = 0.25f,
                          .head_zero = true};
    nac_vae_t *v = NULL;
    TU_OK(nac_vae_create(be, &cfg, 1, &v));
    float ls = 0, hw[12], hb[4];
    TU_OK(nac_tensor_to_host(&v->log_sigma->w, &ls));
    assert_true(fabsf(ls - logf(0.25f)) < 1e-6f);
    assert_true(v->log_sigma->flags & NAC_PARAM_FROZEN);
    TU_OK(nac_tensor_to_host(&v->head_w->w, hw));
    TU_OK(nac_tensor_to_host(&v->head_b->w, hb));
    for (int i = 0; i < 12; i++) assert_true(hw[i] == 0.0f);
    for (int i = 0; i < 4; i++) assert_true(hb[i] == 0.0f);
    nac_vae_free(v);
    cfg.sigma = -1;
    assert_int_equal(nac_vae_create(be, &cfg, 1, &v), NAC_ERR_INVALID);
    /* standardised head: W' h + b' == W ((h - mean) / std) + b for any h */
    cfg.sigma = 0;
    cfg.head_zero = false;
    TU_OK(nac_vae_create(be, &cfg, 1, &v));
    assert_false(v->log_sigma->flags & NAC_PARAM_FROZEN);
    float w0[12], b0[4], w1[12], b1[4];
    const float mean[3] = {1.0f, -2.0f, 0.5f}, sd[3] = {2.0f, 0.5f, 4.0f}, h[3] = {0.3f, 7.0f, -1.0f};
    TU_OK(nac_tensor_to_host(&v->head_w->w, w0));
    TU_OK(nac_tensor_to_host(&v->head_b->w, b0));
    TU_OK(nac_vae_head_standardize(v, mean, sd));
    TU_OK(nac_tensor_to_host(&v->head_w->w, w1));
    TU_OK(nac_tensor_to_host(&v->head_b->w, b1));
    for (int r = 0; r < 4; r++) {
        double want = b0[r], got = b1[r];
        for (int j = 0; j < 3; j++) {
            want += (double)w0[r * 3 + j] * (h[j] - mean[j]) / sd[j];
            got += (double)w1[r * 3 + j] * h[j];
        }
        assert_true(fabs(got - want) < 1e-5);
    }
    const float bad[3] = {1.0f, 0.0f, 1.0f};
    assert_int_equal(nac_vae_head_standardize(v, mean, bad), NAC_ERR_NUMERIC);
    nac_vae_free(v);
    nac_backend_free(be);
}

static void test_decoder_shapes(void **state) {
    (void)state;
    nac_backend_t *be = tu_backend();
    check_shapes(be, 3, 32, 4, 3, NAC_VAE_LIK_LOGISTIC);
    check_shapes(be, 1, 28, 7, 2, NAC_VAE_LIK_BERNOULLI);
    check_shapes(be, 1, 28, 7, 2, NAC_VAE_LIK_GAUSSIAN);
    int s, nup;
    assert_int_equal(nac_vae_decoder_geometry(3, &s, &nup), NAC_ERR_INVALID);
    nac_vae_config bad = {.features = 0, .latent = 8, .channels = 1, .size = 28, .width = 2,
                          .blocks = 1};
    nac_vae_t *v = NULL;
    assert_int_equal(nac_vae_create(be, &bad, 1, &v), NAC_ERR_INVALID);
    assert_null(v);
    nac_backend_free(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logistic_sums_to_one),
        cmocka_unit_test(test_gaussian_bernoulli_values),
        cmocka_unit_test(test_likelihood_gradients),
        cmocka_unit_test(test_kl),
        cmocka_unit_test(test_elbo_gradients_logistic),
        cmocka_unit_test(test_elbo_gradients_gaussian_bernoulli),
        cmocka_unit_test(test_decoder_shapes),
        cmocka_unit_test(test_decoder_eval_path_matches_train),
        cmocka_unit_test(test_vae_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
