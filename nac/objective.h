/* The pretraining objectives as one table: a config's name, the loss it computes, whether it
 * trains the inference head r, keeps a momentum copy of encoder and heads, and a queue of
 * codes. The pretraining step, config validation and --help all read this table. */
#ifndef NAC_NAC_OBJECTIVE_H
#define NAC_NAC_OBJECTIVE_H

#include <stdbool.h>

#include "nac/loss.h"

/* X(name, loss, head_r, momentum, queue), SEP() between. The config spelling "mocov2" is
 * MoCo-v2 (the loss calls itself "moco"). */
#define NAC_OBJECTIVES(X, SEP)                                                    \
    X("nac", NAC_LOSS_NAC, true, false, false) SEP()                              \
    X("nac_mq", NAC_LOSS_NAC_MQ, true, true, true) SEP()                          \
    X("simclr", NAC_LOSS_SIMCLR, false, false, false) SEP()                       \
    X("mocov2", NAC_LOSS_MOCO, false, true, true)
#define NAC_OBJECTIVE_NAME_(name, loss, head_r, momentum, queue) name
#define NAC_OBJECTIVE_SEP_() "|"
/* "nac|nac_mq|simclr|mocov2": the choices of a config's "method.objective". */
#define NAC_OBJECTIVE_CHOICES NAC_OBJECTIVES(NAC_OBJECTIVE_NAME_, NAC_OBJECTIVE_SEP_)

typedef struct nac_objective {
    const char *name;
    nac_loss_kind loss;
    bool head_r;   /* the inference network r is trained (and saved) */
    bool momentum; /* a momentum copy of encoder and heads (EMA after each step) */
    bool queue;    /* the loss keeps a queue of codes: method.queue >= 2 batches */
} nac_objective;

/* The row named `name`, or NULL. */
const nac_objective *nac_objective_find(const char *name);

#endif
