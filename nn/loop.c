/* The loop driver (loop.h), formatted metrics lines, and the clock runs time with. */
#include "nn/loop.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

nac_status nac_hooks_log(const nac_loop_hooks *hooks, const char *fmt, ...) {
    if (!hooks || !hooks->log) return NAC_OK;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        return nac_error(NAC_ERR_INVALID, "internal: metrics line longer than %zu bytes", sizeof buf);
    return hooks->log(hooks->ctx, buf);
}

double nac_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum { TIMED_SAVE = 1, INTERRUPTED = 2 };

/* What to do after a step: a timed checkpoint, an interrupt. Rank 0 decides for all. */
static int actions(const nac_loop *l, double last_save) {
    const nac_loop_hooks *h = l->hooks;
    int32_t act = 0;
    if (l->ckpt_seconds > 0 && *l->step < l->total && nac_now() - last_save >= l->ckpt_seconds)
        act |= TIMED_SAVE;
    if (h && h->interrupted && h->interrupted(h->ctx)) act |= INTERRUPTED;
    if (nac_comm_broadcast(l->comm, &act, sizeof act, 0) != NAC_OK) return -1;
    return act;
}

nac_status nac_loop_run(const nac_loop *l) {
    if (l->steps_per_epoch < 1 || l->log_every < 1 || l->ckpt_every < 1)
        return nac_error(NAC_ERR_INVALID,
                         "training loop: steps per epoch %lld, log_every %d and ckpt_every %d "
                         "must each be at least 1",
                         (long long)l->steps_per_epoch, l->log_every, l->ckpt_every);
    const nac_loop_i *f = l->iface;
    const nac_loop_hooks *h = l->hooks;
    bool has_ckpt = *l->step > 0;
    double last_save = nac_now();
    while (*l->step < l->total) {
        int first = (int)(*l->step % l->steps_per_epoch);
        int epoch = (int)(*l->step / l->steps_per_epoch);
        NAC_TRY(f->start_epoch(l->self, epoch, first));
        for (int b = first; b < l->steps_per_epoch && *l->step < l->total; b++) {
            char text[96] = "";
            nac_status s = f->step(l->self, epoch, text, sizeof text);
            if (s == NAC_ERR_NUMERIC && has_ckpt)
                return nac_error_prefix(s, "stopped; the last good checkpoint is kept: ");
            NAC_TRY(s);
            ++*l->step;
            if (*l->step % l->log_every == 0 || *l->step == l->total)
                NAC_TRY(f->log(l->self, epoch, *l->step));
            if (h && h->progress) h->progress(h->ctx, *l->step, l->total, text);
            int act = actions(l, last_save);
            if (act < 0) return NAC_ERR_BACKEND;
            if (act & TIMED_SAVE) {
                NAC_TRY(f->save(l->self, l->ckpt_path, l->ckpt_path_n));
                has_ckpt = true;
                last_save = nac_now();
            }
            if (act & INTERRUPTED) {
                NAC_TRY(f->save(l->self, l->ckpt_path, l->ckpt_path_n));
                return nac_error(NAC_ERR_INTERRUPTED,
                                 "interrupted at step %" PRId64 "; saved %s%s%s%s", *l->step,
                                 l->ckpt_path, l->resume_dir ? " (continue with --resume " : "",
                                 l->resume_dir ? l->resume_dir : "", l->resume_dir ? ")" : "");
            }
        }
        bool complete = *l->step % l->steps_per_epoch == 0;
        int done = (int)(*l->step / l->steps_per_epoch);
        if (f->epoch_end) NAC_TRY(f->epoch_end(l->self, complete, done));
        if ((complete && done % l->ckpt_every == 0) || *l->step == l->total) {
            NAC_TRY(f->save(l->self, l->ckpt_path, l->ckpt_path_n));
            has_ckpt = true;
            last_save = nac_now();
        }
    }
    return NAC_OK;
}
