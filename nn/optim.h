/* Optimisers over a parameter list (SGD / Nesterov, LARS, Adam, AdamW) with parameter groups,
 * and learning-rate schedules (linear warm-up, then constant or cosine, per step).
 * The update itself is the backend's fused nac_opt_update; this layer picks the
 * hyper-parameters of each tensor from its group and flags.
 *
 * Checkpoints: the moment tensors live in the parameters (p->s1: momentum / Adam m,
 * p->s2: Adam v, allocated by the first step in the weight's layout), so saving the
 * parameter list saves them; the counters are the plain fields `step` and `groups[i].t`
 * of nac_optim_t, which a checkpoint stores beside them (nac_optim_set_counters restores). */
#ifndef NAC_OPTIM_H
#define NAC_OPTIM_H

#include "backend/backend.h"
#include "nn/param.h"

#define NAC_OPTIM_MAX_GROUPS 8

typedef struct nac_optim_config {
    nac_opt_kind kind;
    float momentum;          /* SGD (0 = plain SGD), LARS */
    bool nesterov;           /* SGD; needs momentum > 0 (as PyTorch) */
    float eta;               /* LARS trust coefficient */
    float beta1, beta2, eps; /* Adam / AdamW */
    float weight_decay;      /* the default of every group */
} nac_optim_config;

typedef struct nac_optim_group {
    float lr_mult;      /* the group's lr = the step's lr * lr_mult */
    float weight_decay; /* 0 for parameters flagged NAC_PARAM_NO_WD */
    int64_t t;          /* steps in which the group updated a parameter: Adam's bias
                           correction, so a group frozen at first starts from t = 1 when
                           it thaws, as PyTorch's per-parameter step does */
} nac_optim_group;

typedef struct nac_optim {
    nac_optim_config cfg;
    nac_optim_group groups[NAC_OPTIM_MAX_GROUPS];
    int ngroups;
    int64_t step; /* nac_optim_step calls so far */
} nac_optim_t;

/* PyTorch's defaults for a kind: SGD momentum 0; LARS momentum 0.9, eta 0.001, weight decay
 * 1e-6 (the paper's); Adam betas (0.9, 0.999), eps 1e-8, weight decay 0; AdamW as Adam
 * with weight decay 0.01. */
nac_optim_config nac_optim_defaults(nac_opt_kind kind);
/* Validate cfg and start with one group (lr_mult 1, cfg's weight decay) and zero counters. */
nac_status nac_optim_init(nac_optim_t *opt, const nac_optim_config *cfg);
/* Set group `group`'s lr multiplier and weight decay; groups up to it that did not exist
 * yet are created with the defaults. */
nac_status nac_optim_set_group(nac_optim_t *opt, int group, float lr_mult, float weight_decay);
/* One update of every trainable parameter (not NAC_PARAM_BUFFER / NAC_PARAM_FROZEN) from
 * its gradient p->g at learning rate lr * its group's multiplier. NAC_PARAM_NO_WD gives
 * weight decay 0, NAC_PARAM_NO_LARS plain momentum SGD inside LARS. */
nac_status nac_optim_step(nac_optim_t *opt, nac_params_t *ps, float lr);
/* Restore the counters from a checkpoint: step and one t per group (ngroups of them). */
nac_status nac_optim_set_counters(nac_optim_t *opt, int64_t step, const int64_t *group_t,
                                  int ngroups);
/* The optimisers by config name, X(name, kind), SEP() between: the configs' choices and
 * nac_optim_kind_from_name expand this one list. */
#define NAC_OPTIMISERS(X, SEP)                                                   \
    X("lars", NAC_OPT_LARS) SEP() X("sgd", NAC_OPT_SGD) SEP() X("adam", NAC_OPT_ADAM) SEP() \
    X("adamw", NAC_OPT_ADAMW)
#define NAC_OPTIM_NAME_(name, kind) name
#define NAC_OPTIM_SEP_() "|"
/* "lars|sgd|adam|adamw" */
#define NAC_OPTIM_CHOICES NAC_OPTIMISERS(NAC_OPTIM_NAME_, NAC_OPTIM_SEP_)
/* The kind named `name`; false if there is none. */
bool nac_optim_kind_from_name(const char *name, nac_opt_kind *out);

/* The counters as one line of checkpoint metadata ("optim_t"): "step t_0 ... t_{ngroups-1}". */
void nac_optim_counters_format(const nac_optim_t *opt, char *buf, size_t n);
/* Restore the counters from such a line (NAC_ERR_DATA if it lacks a number). */
nac_status nac_optim_counters_parse(nac_optim_t *opt, const char *text);
/* Forget everything learnt: counters to 0 and the allocated moment tensors to zero. */
nac_status nac_optim_reset(nac_optim_t *opt, nac_params_t *ps);

/* ---- learning-rate schedules, a function of the step (from 0) ----
 * Warm-up, as the official NAC code: lr = base * step / warmup_steps for step < warmup_steps
 * (so step 0 has lr 0). After it, CONSTANT stays at base; COSINE decays as
 * final + (base - final) (1 + cos(pi (step - warmup) / (total - warmup))) / 2 and holds
 * final_lr from total_steps on. */
typedef enum nac_sched_kind { NAC_SCHED_CONSTANT, NAC_SCHED_COSINE } nac_sched_kind;

typedef struct nac_schedule {
    nac_sched_kind kind;
    float base_lr;
    int64_t warmup_steps; /* 0: none */
    int64_t total_steps;  /* COSINE: the step where final_lr is reached (> warmup_steps) */
    float final_lr;       /* COSINE: 0 unless set */
} nac_schedule_t;

nac_status nac_schedule_validate(const nac_schedule_t *s);
/* The lr at `step` of a valid schedule (negative steps count as 0). */
float nac_schedule_lr(const nac_schedule_t *s, int64_t step);

#endif
