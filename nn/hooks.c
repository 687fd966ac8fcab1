/* The loops' side of nac_loop_hooks: formatted metrics lines, and the clock they time with. */
#include "nn/hooks.h"

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
