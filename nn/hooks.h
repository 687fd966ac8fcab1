/* How a training loop (pretraining, VAE training) talks to its caller: the app owns files,
 * terminals and signals, the loops only call these. Any member may be NULL. */
#ifndef NAC_HOOKS_H
#define NAC_HOOKS_H

#include <stdint.h>

#include "backend/status.h"

typedef struct nac_loop_hooks {
    void *ctx;
    /* one JSON object (no newline) for metrics.jsonl */
    nac_status (*log)(void *ctx, const char *json);
    /* progress within the whole run: steps done of total; extra = "loss 1.23" */
    void (*progress)(void *ctx, int64_t done, int64_t total, const char *extra);
    /* non-zero when the run must save and stop (SIGINT/SIGTERM) */
    int (*interrupted)(void *ctx);
} nac_loop_hooks;

/* Format one metrics line and hand it to hooks->log (nothing if there is no log hook). */
nac_status nac_hooks_log(const nac_loop_hooks *hooks, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Seconds on the monotonic clock, for timing runs. */
double nac_now(void);

#endif
