/* Optimisers over parameter lists and learning-rate schedules (nn/optim.h): each step
 * maps a parameter's group and flags to the hyper-parameters of one fused backend update. */
#include "nn/optim.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

nac_optim_config nac_optim_defaults(nac_opt_kind kind) {
    nac_optim_config c = {.kind = kind, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                          .eta = 1e-3f};
    if (kind == NAC_OPT_LARS) {
        c.momentum = 0.9f;
        c.weight_decay = 1e-6f;
    } else if (kind == NAC_OPT_ADAMW) {
        c.weight_decay = 1e-2f;
    }
    return c;
}

static bool in_unit(float x) { return x >= 0.0f && x < 1.0f; } /* false for NaN */

static nac_status check_config(const nac_optim_config *c) {
    const char *op = "nac_optim_init";
    if (c->kind != NAC_OPT_SGD && c->kind != NAC_OPT_LARS && c->kind != NAC_OPT_ADAM &&
        c->kind != NAC_OPT_ADAMW)
        return nac_error(NAC_ERR_INVALID, "%s: unknown optimiser kind %d", op, (int)c->kind);
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return nac_error(NAC_ERR_INVALID, "%s: weight decay %g must be >= 0", op,
                         (double)c->weight_decay);
    bool adam = c->kind == NAC_OPT_ADAM || c->kind == NAC_OPT_ADAMW;
    if (!adam && !in_unit(c->momentum))
        return nac_error(NAC_ERR_INVALID, "%s: momentum %g outside [0, 1)", op,
                         (double)c->momentum);
    if (c->kind == NAC_OPT_SGD && c->nesterov && c->momentum == 0.0f)
        return nac_error(NAC_ERR_INVALID, "%s: Nesterov momentum needs momentum > 0", op);
    if (c->kind == NAC_OPT_LARS && !(c->eta > 0.0f && isfinite(c->eta)))
        return nac_error(NAC_ERR_INVALID, "%s: LARS trust coefficient eta %g must be > 0", op,
                         (double)c->eta);
    if (adam && (!in_unit(c->beta1) || !in_unit(c->beta2)))
        return nac_error(NAC_ERR_INVALID, "%s: Adam betas (%g, %g) outside [0, 1)", op,
                         (double)c->beta1, (double)c->beta2);
    if (adam && !(c->eps > 0.0f && isfinite(c->eps)))
        return nac_error(NAC_ERR_INVALID, "%s: Adam eps %g must be > 0", op, (double)c->eps);
    return NAC_OK;
}

nac_status nac_optim_init(nac_optim_t *opt, const nac_optim_config *cfg) {
    if (!opt || !cfg) return nac_error(NAC_ERR_INVALID, "nac_optim_init: NULL argument");
    NAC_TRY(check_config(cfg));
    memset(opt, 0, sizeof *opt);
    opt->cfg = *cfg;
    opt->ngroups = 1;
    opt->groups[0] = (nac_optim_group){.lr_mult = 1.0f, .weight_decay = cfg->weight_decay};
    return NAC_OK;
}

nac_status nac_optim_set_group(nac_optim_t *opt, int group, float lr_mult, float weight_decay) {
    const char *op = "nac_optim_set_group";
    if (!opt) return nac_error(NAC_ERR_INVALID, "%s: NULL optimiser", op);
    if (group < 0 || group >= NAC_OPTIM_MAX_GROUPS)
        return nac_error(NAC_ERR_INVALID, "%s: group %d outside [0, %d)", op, group,
                         NAC_OPTIM_MAX_GROUPS);
    if (!(lr_mult >= 0.0f && isfinite(lr_mult)) ||
        !(weight_decay >= 0.0f && isfinite(weight_decay)))
        return nac_error(NAC_ERR_INVALID,
                         "%s: group %d: lr multiplier %g and weight decay %g must be >= 0", op,
                         group, (double)lr_mult, (double)weight_decay);
    for (int i = opt->ngroups; i < group; i++)
        opt->groups[i] = (nac_optim_group){.lr_mult = 1.0f, .weight_decay = opt->cfg.weight_decay};
    if (group >= opt->ngroups) {
        opt->groups[group].t = 0;
        opt->ngroups = group + 1;
    }
    opt->groups[group].lr_mult = lr_mult;
    opt->groups[group].weight_decay = weight_decay;
    return NAC_OK;
}

static bool trainable(const nac_param_t *p) {
    return !(p->flags & (NAC_PARAM_BUFFER | NAC_PARAM_FROZEN));
}

nac_status nac_optim_step(nac_optim_t *opt, nac_params_t *ps, float lr) {
    const char *op = "nac_optim_step";
    if (!opt || !ps) return nac_error(NAC_ERR_INVALID, "%s: NULL argument", op);
    if (!(lr >= 0.0f && isfinite(lr)))
        return nac_error(NAC_ERR_INVALID, "%s: learning rate %g must be finite and >= 0", op,
                         (double)lr);
    /* check the groups first, so a bad list leaves every weight and counter as it was */
    bool used[NAC_OPTIM_MAX_GROUPS] = {false};
    for (int i = 0; i < ps->n; i++) {
        const nac_param_t *p = ps->items[i];
        if (!trainable(p)) continue;
        if (p->group < 0 || p->group >= opt->ngroups)
            return nac_error(NAC_ERR_INVALID,
                             "%s: parameter \"%s\" is in group %d; the optimiser has %d", op,
                             p->name, p->group, opt->ngroups);
        used[p->group] = true;
    }
    for (int k = 0; k < opt->ngroups; k++) opt->groups[k].t += used[k];
    opt->step++;

    const nac_optim_config *c = &opt->cfg;
    for (int i = 0; i < ps->n; i++) {
        nac_param_t *p = ps->items[i];
        if (!trainable(p)) continue;
        const nac_optim_group *g = &opt->groups[p->group];
        nac_opt_step h = {
            .kind = c->kind,
            .lr = lr * g->lr_mult,
            .momentum = c->momentum,
            .weight_decay = (p->flags & NAC_PARAM_NO_WD) ? 0.0f : g->weight_decay,
            .nesterov = c->nesterov,
            .eta = c->eta,
            .lars_adapt = !(p->flags & NAC_PARAM_NO_LARS),
            .beta1 = c->beta1,
            .beta2 = c->beta2,
            .eps = c->eps,
            .t = g->t,
        };
        nac_status s = nac_opt_update(&p->w, &p->g, &p->s1, &p->s2, &h);
        if (s != NAC_OK) return nac_error_prefix(s, "%s: parameter \"%s\": ", op, p->name);
    }
    return NAC_OK;
}

nac_status nac_optim_set_counters(nac_optim_t *opt, int64_t step, const int64_t *group_t,
                                  int ngroups) {
    const char *op = "nac_optim_set_counters";
    if (!opt || (ngroups > 0 && !group_t))
        return nac_error(NAC_ERR_INVALID, "%s: NULL argument", op);
    if (ngroups != opt->ngroups)
        return nac_error(NAC_ERR_INVALID, "%s: %d group counters for an optimiser of %d groups",
                         op, ngroups, opt->ngroups);
    if (step < 0) return nac_error(NAC_ERR_INVALID, "%s: step %" PRId64 " < 0", op, step);
    for (int k = 0; k < ngroups; k++)
        if (group_t[k] < 0 || group_t[k] > step)
            return nac_error(NAC_ERR_INVALID,
                             "%s: group %d counter %" PRId64 " outside [0, step %" PRId64 "]", op,
                             k, group_t[k], step);
    opt->step = step;
    for (int k = 0; k < ngroups; k++) opt->groups[k].t = group_t[k];
    return NAC_OK;
}

nac_status nac_optim_reset(nac_optim_t *opt, nac_params_t *ps) {
    if (!opt || !ps) return nac_error(NAC_ERR_INVALID, "nac_optim_reset: NULL argument");
    for (int i = 0; i < ps->n; i++) {
        nac_param_t *p = ps->items[i];
        if (p->s1.impl) NAC_TRY(nac_tensor_fill(&p->s1, 0.0f));
        if (p->s2.impl) NAC_TRY(nac_tensor_fill(&p->s2, 0.0f));
    }
    opt->step = 0;
    for (int k = 0; k < opt->ngroups; k++) opt->groups[k].t = 0;
    return NAC_OK;
}

/* ---- schedules ---- */
nac_status nac_schedule_validate(const nac_schedule_t *s) {
    const char *op = "nac_schedule_validate";
    if (!s) return nac_error(NAC_ERR_INVALID, "%s: NULL schedule", op);
    if (s->kind != NAC_SCHED_CONSTANT && s->kind != NAC_SCHED_COSINE)
        return nac_error(NAC_ERR_INVALID, "%s: unknown schedule kind %d", op, (int)s->kind);
    if (!(s->base_lr >= 0.0f && isfinite(s->base_lr)))
        return nac_error(NAC_ERR_INVALID, "%s: base lr %g must be finite and >= 0", op,
                         (double)s->base_lr);
    if (s->warmup_steps < 0)
        return nac_error(NAC_ERR_INVALID, "%s: warm-up of %" PRId64 " steps", op,
                         s->warmup_steps);
    if (s->kind == NAC_SCHED_COSINE) {
        if (s->total_steps <= s->warmup_steps)
            return nac_error(NAC_ERR_INVALID,
                             "%s: cosine schedule of %" PRId64 " steps leaves nothing after a "
                             "warm-up of %" PRId64,
                             op, s->total_steps, s->warmup_steps);
        if (!(s->final_lr >= 0.0f && isfinite(s->final_lr)))
            return nac_error(NAC_ERR_INVALID, "%s: final lr %g must be finite and >= 0", op,
                             (double)s->final_lr);
    }
    return NAC_OK;
}

float nac_schedule_lr(const nac_schedule_t *s, int64_t step) {
    NAC_ASSERT(s);
    double base = s->base_lr;
    if (step < 0) step = 0;
    if (step < s->warmup_steps) return (float)(base * (double)step / (double)s->warmup_steps);
    if (s->kind == NAC_SCHED_CONSTANT) return s->base_lr;
    if (step >= s->total_steps) return s->final_lr;
    double progress = (double)(step - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
    double fin = s->final_lr;
    return (float)(fin + (base - fin) * 0.5 * (1.0 + cos(M_PI * progress)));
}

void nac_optim_counters_format(const nac_optim_t *opt, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "%" PRId64, opt->step);
    for (int g = 0; g < opt->ngroups && k < n; g++)
        k += (size_t)snprintf(buf + k, n - k, " %" PRId64, opt->groups[g].t);
}

nac_status nac_optim_counters_parse(nac_optim_t *opt, const char *text) {
    int64_t v[1 + NAC_OPTIM_MAX_GROUPS];
    const char *p = text;
    for (int i = 0; i <= opt->ngroups; i++) {
        char *end;
        v[i] = p ? strtoll(p, &end, 10) : 0;
        if (!p || end == p)
            return nac_error(NAC_ERR_DATA, "optimiser counters \"%s\": want %d numbers", text ? text : "",
                             1 + opt->ngroups);
        p = end;
    }
    return nac_optim_set_counters(opt, v[0], v + 1, opt->ngroups);
}

bool nac_optim_kind_from_name(const char *name, nac_opt_kind *out) {
#define ROW(n, k) {n, k}
#define COMMA() ,
    static const struct {
        const char *name;
        nac_opt_kind kind;
    } rows[] = {NAC_OPTIMISERS(ROW, COMMA)};
#undef ROW
#undef COMMA
    for (size_t i = 0; name && i < sizeof rows / sizeof *rows; i++)
        if (!strcmp(rows[i].name, name)) {
            *out = rows[i].kind;
            return true;
        }
    return false;
}
