/* The thread-local error message behind nac_error(), and the status -> exit code map. */
#include "backend/status.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[1024];

nac_status nac_error(nac_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return s;
}

nac_status nac_error_prefix(nac_status s, const char *fmt, ...) {
    char prefix[512], old[sizeof g_msg];
    size_t k;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    k = strlen(prefix);
    if (k >= sizeof g_msg) k = sizeof g_msg - 1;
    memcpy(g_msg, prefix, k);
    size_t rest = strnlen(old, sizeof old - 1);
    if (rest > sizeof g_msg - 1 - k) rest = sizeof g_msg - 1 - k;
    memcpy(g_msg + k, old, rest);
    g_msg[k + rest] = 0;
    return s;
}

const char *nac_last_error(void) { return g_msg[0] ? g_msg : "no error message was set"; }

void nac_clear_error(void) { g_msg[0] = 0; }

const char *nac_status_name(nac_status s) {
    switch (s) {
    case NAC_OK: return "ok";
    case NAC_ERR_USAGE: return "usage error";
    case NAC_ERR_INVALID: return "invalid argument";
    case NAC_ERR_DATA: return "bad data";
    case NAC_ERR_NOINPUT: return "missing input";
    case NAC_ERR_NOMEM: return "out of memory";
    case NAC_ERR_BACKEND: return "backend error";
    case NAC_ERR_IO: return "i/o error";
    case NAC_ERR_CONFIG: return "bad config";
    case NAC_ERR_NUMERIC: return "non-finite value";
    case NAC_ERR_INTERRUPTED: return "interrupted";
    case NAC_ERR_UNAVAILABLE: return "unavailable";
    }
    return "unknown status";
}

int nac_status_exit_code(nac_status s) {
    switch (s) {
    case NAC_OK: return 0;
    case NAC_ERR_USAGE: return 64;
    case NAC_ERR_INVALID: return 65;
    case NAC_ERR_DATA: return 65;
    case NAC_ERR_NOINPUT: return 66;
    case NAC_ERR_NOMEM: return 71;
    case NAC_ERR_BACKEND: return 70;
    case NAC_ERR_IO: return 74;
    case NAC_ERR_CONFIG: return 78;
    case NAC_ERR_NUMERIC: return 70;
    case NAC_ERR_INTERRUPTED: return 130;
    case NAC_ERR_UNAVAILABLE: return 69;
    }
    return 1;
}
