/* Per-element rules every backend applies in the same words: the binary operations of the
 * broadcasts and the three optimiser updates (backend.h's nac_opt_step). The CPU loops
 * (cpu/math.c) and the CUDA kernels (cuda/kernels.cu) call these, so a rule is written once. */
#ifndef NAC_RULES_H
#define NAC_RULES_H

#include <math.h>
#include <stdbool.h>

#include "backend/backend.h"
#include "backend/hostdev.h"

/* a (op) b; MAX propagates a NaN in a, as torch.maximum */
static inline NAC_HOSTDEV float nac_rule_binop(nac_binop k, float a, float b) {
    switch (k) {
    case NAC_BIN_ADD: return a + b;
    case NAC_BIN_SUB: return a - b;
    case NAC_BIN_MUL: return a * b;
    case NAC_BIN_DIV: return a / b;
    case NAC_BIN_MAX: return (a != a || a > b) ? a : b;
    }
    return NAN;
}

/* SGD with momentum mom (buffer v) and weight decay wd; Nesterov if asked. */
static inline NAC_HOSTDEV void nac_rule_sgd(float *w, float g, float *v, float lr, float wd,
                                            float mom, bool nesterov) {
    float gi = g + wd * *w;
    float vi = mom * *v + gi;
    *v = vi;
    *w -= lr * (nesterov ? gi + mom * vi : vi);
}

/* LARS's momentum step with the trust-scaled rate `scale` = lr * trust. */
static inline NAC_HOSTDEV void nac_rule_lars(float *w, float g, float *v, float wd, float mom,
                                             float scale) {
    float gi = g + wd * *w;
    float vi = mom * *v + scale * gi;
    *v = vi;
    *w -= vi;
}

/* Adam (wd as L2 in the gradient) or AdamW (decoupled: shrink = 1 - lr wd, wd = 0);
 * step = lr / (1 - beta1^t), rbc2 = 1 / sqrt(1 - beta2^t). */
static inline NAC_HOSTDEV void nac_rule_adam(float *w, float g, float *m, float *v, float wd,
                                             float shrink, float b1, float b2, float eps,
                                             float step, float rbc2) {
    float wi = *w * shrink;
    float gi = g + wd * *w;
    float mi = b1 * *m + (1.0f - b1) * gi;
    float vi = b2 * *v + (1.0f - b2) * gi * gi;
    *m = mi;
    *v = vi;
    *w = wi - step * mi / (sqrtf(vi) * rbc2 + eps);
}

#endif
