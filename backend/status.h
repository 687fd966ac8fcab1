/* Status codes and the error message every failing function leaves behind.
 * Functions that can fail return nac_status and set a message naming what and where;
 * only main() prints and exits (STYLE.md). The message is thread-local. */
#ifndef NAC_STATUS_H
#define NAC_STATUS_H

#include <assert.h>
#include <stdarg.h>

typedef enum nac_status {
    NAC_OK = 0,
    NAC_ERR_USAGE,      /* bad command-line usage                          -> 64 */
    NAC_ERR_INVALID,    /* bad argument to an API: shape, NULL, range      -> 65 */
    NAC_ERR_DATA,       /* malformed or corrupt input data / checkpoint    -> 65 */
    NAC_ERR_NOINPUT,    /* a file or folder that does not exist            -> 66 */
    NAC_ERR_NOMEM,      /* allocation failed                               -> 71 */
    NAC_ERR_BACKEND,    /* the compute library reported an error           -> 70 */
    NAC_ERR_IO,         /* reading or writing failed (disk full, ...)      -> 74 */
    NAC_ERR_CONFIG,     /* bad config: unknown key, wrong type, range      -> 78 */
    NAC_ERR_NUMERIC,    /* NaN or Inf where a finite number was needed     -> 70 */
    NAC_ERR_INTERRUPTED,/* SIGINT/SIGTERM arrived; work was saved          -> 130/143 */
    NAC_ERR_UNAVAILABLE /* a device or service is not there (no GPU/driver) -> 69 */
} nac_status;

/* Set the thread's message (printf-style) and return s, so `return nac_error(...)` works. */
nac_status nac_error(nac_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with more context ("loading x.safetensors: " + old). */
nac_status nac_error_prefix(nac_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *nac_last_error(void);
void nac_clear_error(void);
const char *nac_status_name(nac_status s);
/* sysexits(3) code for a status: 64 usage, 65 data, 66 no input, 78 config, ... */
int nac_status_exit_code(nac_status s);

/* Evaluate expr once; return its status from the enclosing function if it failed. */
#define NAC_TRY(expr)                       \
    do {                                    \
        nac_status nac_try_s_ = (expr);     \
        if (nac_try_s_ != NAC_OK)           \
            return nac_try_s_;              \
    } while (0)

/* Contracts: stay on in release builds (CMake strips -DNDEBUG). */
#define NAC_ASSERT(cond) assert(cond)

#endif
