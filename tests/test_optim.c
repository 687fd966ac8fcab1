/* The optimiser layer (nn/optim.h): groups (lr multiplier, weight decay), parameter flags
 * (buffer, frozen, no weight decay, no LARS), per-group Adam step counters, the LARS golden
 * through a parameter list, resuming from saved state bit-for-bit, reset, bad arguments,
 * and the learning-rate schedules against their closed forms. */
#include "tests/testutil.h"

#include <cjson/cJSON.h>

#include "nn/optim.h"
#include "nn/param.h"

static nac_backend_t *be;

static int setup(void **state) {
    (void)state;
    be = tu_backend();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    nac_backend_free(be);
    return 0;
}

/* Add a 1-D parameter of n elements holding w (gradient zero). */
static nac_param_t *add(nac_params_t *ps, const char *name, int64_t n, const float *w,
                        unsigned flags, int group) {
    nac_param_t *p = nac_params_add(ps, be, name, 1, &n, flags);
    if (!p) fail_msg("nac_params_add(%s): %s", name, nac_last_error());
    p->group = group;
    if (w) TU_OK(nac_tensor_from_host(&p->w, w));
    return p;
}

static void set_grad(nac_param_t *p, const float *g) { TU_OK(nac_tensor_from_host(&p->g, g)); }

static void get_w(const nac_param_t *p, float *out) { TU_OK(nac_tensor_to_host(&p->w, out)); }

/* ---- groups and flags with plain SGD: every value by hand ---- */
static void test_groups_and_flags(void **state) {
    (void)state;
    nac_params_t ps;
    nac_params_init(&ps);
    const float w[4] = {1.0f, -2.0f, 0.5f, 4.0f}, g[4] = {0.5f, 0.5f, -1.0f, 2.0f};
    nac_param_t *a = add(&ps, "l1.weight", 4, w, 0, 0);
    nac_param_t *b = add(&ps, "l1.bias", 4, w, NAC_PARAM_NO_WD | NAC_PARAM_BIAS, 0);
    nac_param_t *h = add(&ps, "head.weight", 4, w, 0, 1);
    nac_param_t *r = add(&ps, "bn.running_mean", 4, w, NAC_PARAM_BUFFER, 0);
    nac_param_t *f = add(&ps, "enc.frozen", 4, w, NAC_PARAM_FROZEN, 1);
    set_grad(a, g), set_grad(b, g), set_grad(h, g), set_grad(f, g);

    nac_optim_config cfg = nac_optim_defaults(NAC_OPT_SGD);
    cfg.weight_decay = 0.01f;
    nac_optim_t opt;
    TU_OK(nac_optim_init(&opt, &cfg));
    TU_OK(nac_optim_set_group(&opt, 1, 10.0f, 0.1f));
    TU_OK(nac_optim_step(&opt, &ps, 0.1f));

    float got[4], want[4];
    get_w(a, got); /* w - 0.1 (g + 0.01 w) */
    for (int i = 0; i < 4; i++) want[i] = w[i] - 0.1f * (g[i] + 0.01f * w[i]);
    tu_close_f(got, want, 4, 1e-6, 0, "group 0 with weight decay");
    get_w(b, got); /* NO_WD: w - 0.1 g */
    for (int i = 0; i < 4; i++) want[i] = w[i] - 0.1f * g[i];
    tu_close_f(got, want, 4, 1e-6, 0, "NO_WD");
    get_w(h, got); /* group 1: lr 0.1 * 10, weight decay 0.1 */
    for (int i = 0; i < 4; i++) want[i] = w[i] - 1.0f * (g[i] + 0.1f * w[i]);
    tu_close_f(got, want, 4, 1e-6, 0, "group 1");
    get_w(r, got);
    tu_close_f(got, w, 4, 0, 0, "buffer untouched");
    get_w(f, got);
    tu_close_f(got, w, 4, 0, 0, "frozen untouched");
    assert_null(r->s1.impl); /* skipped params get no state; plain SGD needs none */
    assert_null(f->s1.impl);
    assert_null(a->s1.impl);
    assert_int_equal(opt.step, 1);
    assert_int_equal(opt.groups[0].t, 1);
    assert_int_equal(opt.groups[1].t, 1);
    nac_params_free(&ps);
}

/* ---- LARS flags: NO_LARS gives trust 1, NO_WD no decay; state lands in p->s1 ---- */
static void test_lars_flags(void **state) {
    (void)state;
    enum { N = 5 };
    float w[N], g[N];
    tu_randn(w, N, 1, 1.0f);
    tu_randn(g, N, 2, 1.0f);
    nac_params_t ps;
    nac_params_init(&ps);
    nac_param_t *p[3] = {add(&ps, "a", N, w, 0, 0), add(&ps, "b", N, w, NAC_PARAM_NO_LARS, 0),
                         add(&ps, "c", N, w, NAC_PARAM_NO_WD, 0)};
    for (int k = 0; k < 3; k++) set_grad(p[k], g);
    nac_optim_config cfg = nac_optim_defaults(NAC_OPT_LARS);
    cfg.weight_decay = 0.05f; /* large enough to tell apart */
    nac_optim_t opt;
    TU_OK(nac_optim_init(&opt, &cfg));
    const float lr = 0.5f;
    double ref[3][N], v[3][N] = {{0}};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < N; i++) ref[k][i] = w[i];
    for (int s = 0; s < 2; s++) {
        TU_OK(nac_optim_step(&opt, &ps, lr));
        for (int k = 0; k < 3; k++) {
            double wd = k == 2 ? 0.0 : 0.05, nw = 0, ng = 0, gg[N];
            for (int i = 0; i < N; i++) {
                gg[i] = g[i] + wd * ref[k][i];
                nw += ref[k][i] * ref[k][i], ng += gg[i] * gg[i];
            }
            double trust = k == 1 ? 1.0 : 1e-3 * sqrt(nw) / sqrt(ng);
            for (int i = 0; i < N; i++) {
                v[k][i] = 0.9 * v[k][i] + lr * trust * gg[i];
                ref[k][i] -= v[k][i];
            }
        }
    }
    for (int k = 0; k < 3; k++) {
        float got[N];
        get_w(p[k], got);
        char what[160];
        snprintf(what, sizeof what, "LARS param %s", p[k]->name);
        tu_close_d(got, ref[k], N, 1e-6, 1e-7, what);
        assert_non_null(p[k]->s1.impl);
        assert_null(p[k]->s2.impl); /* LARS has no second moment */
    }
    nac_params_free(&ps);
}

/* ---- LARS golden (PyTorch float64) through a parameter list ---- */
static cJSON *load_json(const char *name) { return tu_load_json(name); }

static int jvec(const cJSON *a, float *out, int cap) {
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > cap)
        fail_msg("lars_step.json: expected an array of at most %d numbers", cap);
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!cJSON_IsNumber(e)) fail_msg("lars_step.json: a non-number in an array");
        out[k++] = (float)e->valuedouble;
    }
    return k;
}

static double jnum(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v)) fail_msg("lars_step.json: %s is not a number", key);
    return v->valuedouble;
}

static void test_lars_golden_list(void **state) {
    (void)state;
    cJSON *j = load_json("lars_step.json");
    const cJSON *w0 = cJSON_GetObjectItemCaseSensitive(j, "w0");
    const cJSON *grads = cJSON_GetObjectItemCaseSensitive(j, "grads");
    const cJSON *w3 = cJSON_GetObjectItemCaseSensitive(j, "w3");
    assert_int_equal(cJSON_GetArraySize(w0), 3);
    nac_params_t ps;
    nac_params_init(&ps);
    float buf[64];
    for (int k = 0; k < 3; k++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", k);
        int n = jvec(cJSON_GetArrayItem(w0, k), buf, 64);
        add(&ps, name, n, buf, 0, 0);
    }
    nac_optim_config cfg = nac_optim_defaults(NAC_OPT_LARS);
    cfg.momentum = (float)jnum(j, "momentum");
    cfg.weight_decay = (float)jnum(j, "weight_decay");
    cfg.eta = (float)jnum(j, "eeta");
    nac_optim_t opt;
    TU_OK(nac_optim_init(&opt, &cfg));
    assert_int_equal(cJSON_GetArraySize(grads), 3);
    for (int s = 0; s < 3; s++) {
        for (int k = 0; k < 3; k++) {
            int n = jvec(cJSON_GetArrayItem(cJSON_GetArrayItem(grads, s), k), buf, 64);
            assert_int_equal(n, nac_tensor_numel(&ps.items[k]->w));
            set_grad(ps.items[k], buf);
        }
        TU_OK(nac_optim_step(&opt, &ps, (float)jnum(j, "lr")));
    }
    for (int k = 0; k < 3; k++) {
        const cJSON *wk = cJSON_GetArrayItem(w3, k);
        int n = cJSON_GetArraySize(wk);
        assert_int_equal(n, nac_tensor_numel(&ps.items[k]->w));
        double want[64];
        for (int i = 0; i < n; i++) want[i] = cJSON_GetArrayItem(wk, i)->valuedouble;
        float got[64];
        get_w(ps.items[k], got);
        tu_close_d(got, want, n, 1e-6, 1e-7, "LARS golden through nac_optim_step");
    }
    cJSON_Delete(j);
    nac_params_free(&ps);
}

/* ---- Adam: per-group step counters ---- */
static void test_adam_group_thaw(void **state) {
    (void)state;
    /* A constant gradient makes every bias-corrected Adam step exactly lr * sign(g), as long
     * as the step counter matches the moments: a thawed group must restart at t = 1. */
    const float w[3] = {1.0f, -1.0f, 2.0f}, g[3] = {0.5f, -0.25f, 1.0f};
    nac_params_t ps;
    nac_params_init(&ps);
    nac_param_t *body = add(&ps, "body.w", 3, w, NAC_PARAM_FROZEN, 0);
    nac_param_t *head = add(&ps, "head.w", 3, w, 0, 1);
    set_grad(body, g), set_grad(head, g);
    nac_optim_config cfg = nac_optim_defaults(NAC_OPT_ADAM);
    nac_optim_t opt;
    TU_OK(nac_optim_init(&opt, &cfg));
    TU_OK(nac_optim_set_group(&opt, 1, 2.0f, 0.0f));
    for (int s = 0; s < 2; s++) TU_OK(nac_optim_step(&opt, &ps, 0.1f));
    assert_int_equal(opt.groups[0].t, 0);
    assert_int_equal(opt.groups[1].t, 2);
    body->flags &= ~(unsigned)NAC_PARAM_FROZEN;
    TU_OK(nac_optim_step(&opt, &ps, 0.1f));
    assert_int_equal(opt.step, 3);
    assert_int_equal(opt.groups[0].t, 1);
    assert_int_equal(opt.groups[1].t, 3);
    float got[3];
    get_w(body, got);
    tu_close_f(got, (const float[]){0.9f, -0.9f, 1.9f}, 3, 1e-6, 0, "thawed body, first step");
    get_w(head, got); /* three steps of 0.2 */
    tu_close_f(got, (const float[]){0.4f, -0.4f, 1.4f}, 3, 1e-6, 0, "head, three steps");
    nac_params_free(&ps);
}

/* ---- AdamW through the list against a double reference; NO_WD gets plain Adam ---- */
static void test_adamw_steps(void **state) {
    (void)state;
    enum { N = 7, STEPS = 3 };
    float w[N];
    tu_randn(w, N, 10, 1.0f);
    nac_params_t ps;
    nac_params_init(&ps);
    nac_param_t *p[2] = {add(&ps, "w", N, w, 0, 0), add(&ps, "b", N, w, NAC_PARAM_NO_WD, 0)};
    nac_optim_config cfg = nac_optim_defaults(NAC_OPT_ADAMW);
    cfg.weight_decay = 0.1f;
    nac_optim_t opt;
    TU_OK(nac_optim_init(&opt, &cfg));
    double ref[2][N], m[2][N] = {{0}}, v[2][N] = {{0}};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N; i++) ref[k][i] = w[i];
    const double lr = 0.01;
    for (int s = 1; s <= STEPS; s++) {
        float g[N];
        tu_randn(g, N, 20 + (uint64_t)s, 1.0f);
        set_grad(p[0], g), set_grad(p[1], g);
        TU_OK(nac_optim_step(&opt, &ps, (float)lr));
        double bc1 = 1 - pow(0.9, s), bc2 = 1 - pow(0.999, s);
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < N; i++) {
                ref[k][i] *= 1 - lr * (k == 0 ? 0.1 : 0.0);
                m[k][i] = 0.9 * m[k][i] + 0.1 * g[i];
                v[k][i] = 0.999 * v[k][i] + 0.001 * (double)g[i] * g[i];
                ref[k][i] -= lr * (m[k][i] / bc1) / (sqrt(v[k][i] / bc2) + 1e-8);
            }
    }
    for (int k = 0; k < 2; k++) {
        float got[N];
        get_w(p[k], got);
        tu_close_d(got, ref[k], N, 1e-5, 1e-6, k ? "AdamW, NO_WD" : "AdamW");
        assert_non_null(p[k]->s2.impl);
    }
    nac_params_free(&ps);
}

/* ---- resume: the state in the params plus the counters continue bit-for-bit ---- */
static void make_list(nac_params_t *ps) {
    float w[11];
    nac_params_init(ps);
    tu_randn(w, 11, 30, 1.0f);
    add(ps, "enc.w", 11, w, 0, 0);
    tu_randn(w, 11, 31, 1.0f);
    add(ps, "head.w", 11, w, NAC_PARAM_NO_WD, 1);
}

static void grads_for_step(nac_params_t *ps, int s) {
    for (int k = 0; k < ps->n; k++) {
        float g[11];
        tu_randn(g, 11, 100 + (uint64_t)(s * 10 + k), 1.0f);
        set_grad(ps->items[k], g);
    }
}

static void copy_tensor(const nac_tensor_t *src, nac_tensor_t *dst) {
    float buf[11];
    TU_OK(nac_tensor_to_host(src, buf)); /* as a checkpoint would: through the host */
    TU_OK(nac_tensor_from_host(dst, buf));
}

static void test_resume(void **state) {
    (void)state;
    const nac_opt_kind kinds[] = {NAC_OPT_SGD, NAC_OPT_LARS, NAC_OPT_ADAM, NAC_OPT_ADAMW};
    for (int c = 0; c < 4; c++) {
        nac_optim_config cfg = nac_optim_defaults(kinds[c]);
        if (kinds[c] == NAC_OPT_SGD) cfg.momentum = 0.9f, cfg.nesterov = true;
        nac_params_t a, b, r;
        nac_optim_t oa, ob, orr;
        make_list(&a), make_list(&b), make_list(&r);
        TU_OK(nac_optim_init(&oa, &cfg));
        TU_OK(nac_optim_init(&ob, &cfg));
        TU_OK(nac_optim_set_group(&oa, 1, 5.0f, 0.0f));
        TU_OK(nac_optim_set_group(&ob, 1, 5.0f, 0.0f));
        for (int s = 0; s < 4; s++) { /* uninterrupted */
            grads_for_step(&a, s);
            TU_OK(nac_optim_step(&oa, &a, 0.05f));
        }
        for (int s = 0; s < 2; s++) { /* two steps, then "saved" */
            grads_for_step(&b, s);
            TU_OK(nac_optim_step(&ob, &b, 0.05f));
        }
        /* "loaded" into a fresh list and a fresh optimiser */
        for (int k = 0; k < b.n; k++) {
            copy_tensor(&b.items[k]->w, &r.items[k]->w);
            copy_tensor(&b.items[k]->s1, &r.items[k]->s1);
            if (b.items[k]->s2.impl) copy_tensor(&b.items[k]->s2, &r.items[k]->s2);
        }
        TU_OK(nac_optim_init(&orr, &cfg));
        TU_OK(nac_optim_set_group(&orr, 1, 5.0f, 0.0f));
        int64_t t[2] = {ob.groups[0].t, ob.groups[1].t};
        TU_OK(nac_optim_set_counters(&orr, ob.step, t, 2));
        for (int s = 2; s < 4; s++) {
            grads_for_step(&r, s);
            TU_OK(nac_optim_step(&orr, &r, 0.05f));
        }
        for (int k = 0; k < a.n; k++) {
            float x[11], y[11];
            get_w(a.items[k], x);
            get_w(r.items[k], y);
            assert_memory_equal(x, y, sizeof x);
        }
        nac_params_free(&a), nac_params_free(&b), nac_params_free(&r);
    }
}

/* ---- reset: the next step is a first step again ---- */
static void test_reset(void **state) {
    (void)state;
    nac_params_t a, b;
    make_list(&a), make_list(&b);
    nac_optim_config cfg = nac_optim_defaults(NAC_OPT_ADAM);
    nac_optim_t oa, ob;
    TU_OK(nac_optim_init(&oa, &cfg));
    TU_OK(nac_optim_init(&ob, &cfg));
    TU_OK(nac_optim_set_group(&oa, 1, 1.0f, 0.0f));
    TU_OK(nac_optim_set_group(&ob, 1, 1.0f, 0.0f));
    for (int s = 0; s < 3; s++) {
        grads_for_step(&a, s);
        TU_OK(nac_optim_step(&oa, &a, 0.01f));
    }
    TU_OK(nac_optim_reset(&oa, &a));
    assert_int_equal(oa.step, 0);
    assert_int_equal(oa.groups[0].t, 0);
    assert_int_equal(oa.groups[1].t, 0);
    TU_OK(nac_params_copy_values(&a, &b)); /* same weights, fresh optimiser */
    grads_for_step(&a, 9), grads_for_step(&b, 9);
    TU_OK(nac_optim_step(&oa, &a, 0.01f));
    TU_OK(nac_optim_step(&ob, &b, 0.01f));
    for (int k = 0; k < a.n; k++) {
        float x[11], y[11];
        get_w(a.items[k], x);
        get_w(b.items[k], y);
        assert_memory_equal(x, y, sizeof x);
    }
    nac_params_free(&a), nac_params_free(&b);
}

/* ---- bad arguments ---- */
#define EXPECT_INVALID(expr, text)                                                        \
    do {                                                                                  \
        nac_status s_ = (expr);                                                           \
        if (s_ != NAC_ERR_INVALID) fail_msg("%s returned %d, not NAC_ERR_INVALID", #expr, \
                                             (int)s_);                                    \
        if (!strstr(nac_last_error(), text))                                              \
            fail_msg("%s: message \"%s\" lacks \"%s\"", #expr, nac_last_error(), text);   \
    } while (0)

static void test_errors(void **state) {
    (void)state;
    nac_optim_t opt;
    nac_optim_config c = nac_optim_defaults(NAC_OPT_SGD);
    c.momentum = 1.5f;
    EXPECT_INVALID(nac_optim_init(&opt, &c), "momentum 1.5");
    c = nac_optim_defaults(NAC_OPT_SGD);
    c.nesterov = true;
    EXPECT_INVALID(nac_optim_init(&opt, &c), "Nesterov");
    c = nac_optim_defaults(NAC_OPT_LARS);
    c.eta = 0.0f;
    EXPECT_INVALID(nac_optim_init(&opt, &c), "eta");
    c = nac_optim_defaults(NAC_OPT_ADAM);
    c.beta2 = 1.0f;
    EXPECT_INVALID(nac_optim_init(&opt, &c), "betas");
    c = nac_optim_defaults(NAC_OPT_ADAMW);
    c.eps = 0.0f;
    EXPECT_INVALID(nac_optim_init(&opt, &c), "eps");
    c.eps = 1e-8f;
    c.weight_decay = -1.0f;
    EXPECT_INVALID(nac_optim_init(&opt, &c), "weight decay");
    c = nac_optim_defaults((nac_opt_kind)17);
    EXPECT_INVALID(nac_optim_init(&opt, &c), "unknown optimiser kind");
    EXPECT_INVALID(nac_optim_init(NULL, &c), "NULL");

    c = nac_optim_defaults(NAC_OPT_SGD);
    TU_OK(nac_optim_init(&opt, &c));
    EXPECT_INVALID(nac_optim_set_group(&opt, NAC_OPTIM_MAX_GROUPS, 1.0f, 0.0f), "group 8");
    EXPECT_INVALID(nac_optim_set_group(&opt, 1, -1.0f, 0.0f), "lr multiplier");
    TU_OK(nac_optim_set_group(&opt, 2, 3.0f, 0.5f)); /* group 1 comes with defaults */
    assert_int_equal(opt.ngroups, 3);
    assert_true(opt.groups[1].lr_mult == 1.0f && opt.groups[1].weight_decay == 0.0f);

    nac_params_t ps;
    nac_params_init(&ps);
    const float w[2] = {1.0f, 2.0f}, g[2] = {1.0f, 1.0f};
    set_grad(add(&ps, "ok", 2, w, 0, 0), g);
    set_grad(add(&ps, "layer.weight", 2, w, 0, 5), g);
    EXPECT_INVALID(nac_optim_step(&opt, &ps, 0.1f), "parameter \"layer.weight\" is in group 5");
    float got[2];
    get_w(ps.items[0], got); /* nothing moved, nothing counted */
    tu_close_f(got, w, 2, 0, 0, "weights after a refused step");
    assert_int_equal(opt.step, 0);
    ps.items[1]->group = 0;
    EXPECT_INVALID(nac_optim_step(&opt, &ps, NAN), "learning rate");
    EXPECT_INVALID(nac_optim_step(&opt, &ps, -0.1f), "learning rate");
    int64_t t[3] = {1, 1, 1};
    EXPECT_INVALID(nac_optim_set_counters(&opt, 5, t, 2), "2 group counters");
    EXPECT_INVALID(nac_optim_set_counters(&opt, 0, t, 3), "outside [0, step 0]");
    nac_params_free(&ps);

    nac_schedule_t s = {.kind = NAC_SCHED_COSINE, .base_lr = 1.0f, .warmup_steps = 10,
                        .total_steps = 10};
    EXPECT_INVALID(nac_schedule_validate(&s), "leaves nothing after a warm-up");
    s.total_steps = 20;
    s.warmup_steps = -1;
    EXPECT_INVALID(nac_schedule_validate(&s), "warm-up");
    s.warmup_steps = 0;
    s.base_lr = -1.0f;
    EXPECT_INVALID(nac_schedule_validate(&s), "base lr");
    s.base_lr = 1.0f;
    s.final_lr = NAN;
    EXPECT_INVALID(nac_schedule_validate(&s), "final lr");
    s.kind = (nac_sched_kind)5;
    EXPECT_INVALID(nac_schedule_validate(&s), "unknown schedule");
}

/* ---- schedules against closed forms ---- */
static void test_schedules(void **state) {
    (void)state;
    /* the paper's CIFAR-10 shape: lr 3.0, warm-up 10 epochs, then cosine to 0 */
    nac_schedule_t s = {.kind = NAC_SCHED_COSINE, .base_lr = 3.0f, .warmup_steps = 10,
                        .total_steps = 110};
    TU_OK(nac_schedule_validate(&s));
    const struct { int64_t step; double lr; } cases[] = {
        {-3, 0.0},  {0, 0.0},   {1, 0.3},   {5, 1.5},   {9, 2.7},   {10, 3.0},
        {35, 1.5 * (1 + cos(M_PI / 4))},    {60, 1.5},  {85, 1.5 * (1 + cos(3 * M_PI / 4))},
        {109, 1.5 * (1 + cos(M_PI * 99 / 100))},        {110, 0.0}, {1000, 0.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float lr = nac_schedule_lr(&s, cases[i].step);
        if (!(fabs(lr - cases[i].lr) <= 1e-6 * 3.0))
            fail_msg("cosine step %lld: lr %.9g, want %.9g", (long long)cases[i].step, (double)lr,
                     cases[i].lr);
    }
    /* a final lr, no warm-up */
    s = (nac_schedule_t){.kind = NAC_SCHED_COSINE, .base_lr = 1.0f, .total_steps = 4,
                         .final_lr = 0.2f};
    TU_OK(nac_schedule_validate(&s));
    const double fin[] = {1.0, 0.2 + 0.4 * (1 + cos(M_PI / 4)), 0.6,
                          0.2 + 0.4 * (1 + cos(3 * M_PI / 4)), 0.2, 0.2};
    for (int k = 0; k < 6; k++)
        assert_true(fabs(nac_schedule_lr(&s, k) - fin[k]) < 1e-6);
    /* constant, with and without warm-up */
    s = (nac_schedule_t){.kind = NAC_SCHED_CONSTANT, .base_lr = 0.4f, .warmup_steps = 4};
    TU_OK(nac_schedule_validate(&s));
    const double con[] = {0.0, 0.1, 0.2, 0.3, 0.4, 0.4};
    for (int k = 0; k < 6; k++)
        assert_true(fabs(nac_schedule_lr(&s, k) - con[k]) < 1e-7);
    s.warmup_steps = 0;
    assert_true(nac_schedule_lr(&s, 0) == 0.4f && nac_schedule_lr(&s, 1 << 20) == 0.4f);
    /* monotone: never rises after the warm-up */
    s = (nac_schedule_t){.kind = NAC_SCHED_COSINE, .base_lr = 3.0f, .warmup_steps = 7,
                         .total_steps = 1000};
    for (int64_t k = 8; k < 1000; k++)
        assert_true(nac_schedule_lr(&s, k) <= nac_schedule_lr(&s, k - 1));
}

static void test_defaults(void **state) {
    (void)state;
    nac_optim_config l = nac_optim_defaults(NAC_OPT_LARS), a = nac_optim_defaults(NAC_OPT_ADAMW);
    assert_true(l.momentum == 0.9f && l.eta == 1e-3f && l.weight_decay == 1e-6f);
    assert_true(a.beta1 == 0.9f && a.beta2 == 0.999f && a.eps == 1e-8f &&
                a.weight_decay == 1e-2f);
    nac_optim_t opt;
    TU_OK(nac_optim_init(&opt, &l));
    assert_int_equal(opt.ngroups, 1);
    assert_true(opt.groups[0].lr_mult == 1.0f && opt.groups[0].weight_decay == 1e-6f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_groups_and_flags), cmocka_unit_test(test_lars_flags),
        cmocka_unit_test(test_lars_golden_list), cmocka_unit_test(test_adam_group_thaw),
        cmocka_unit_test(test_adamw_steps),      cmocka_unit_test(test_resume),
        cmocka_unit_test(test_reset),            cmocka_unit_test(test_errors),
        cmocka_unit_test(test_schedules),        cmocka_unit_test(test_defaults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
