/* `nac info FILE`: what a checkpoint (safetensors) or a NumPy .npy file holds: each
 * tensor's name, dtype, shape and element count, the totals and the metadata; --json
 * prints the same as one JSON document. The file is validated completely on the way. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "io/utf8.h"

#include <unistd.h>

static void shape_text(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? "," : "", shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static cJSON *shape_json(int ndim, const int64_t *shape) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < ndim; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)shape[i]));
    return a;
}

static nac_status print_json(cJSON *doc) {
    char *text = doc ? cJSON_Print(doc) : NULL;
    cJSON_Delete(doc);
    if (!text) return nac_error(NAC_ERR_NOMEM, "info: out of memory");
    /* cJSON escapes C0 controls; DEL and the C1 controls (U+0080..U+009F, which some
     * terminals obey) can only be inside strings: write them as \u escapes too */
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == 0x7f)
            fputs("\\u007f", stdout);
        else if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
            printf("\\u%04x", *++p);
        else
            putchar(*p);
    }
    putchar('\n');
    free(text);
    return NAC_OK;
}

/* Names and metadata come from the file: control characters and escape sequences are
 * printed escaped (io/utf8.h), never sent to the terminal raw. Returns a static buffer
 * (one of four, so a printf may take several). */
static const char *esc(const char *s) {
    static char buf[4][4096];
    static int k;
    return nac_escape_terminal(s, buf[k++ % 4], sizeof buf[0]);
}

/* A metadata value on one line per source line, continuation lines indented. */
static void print_value(const char *v) {
    char line[4096];
    for (const char *p = v;;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n >= sizeof line) n = sizeof line - 1;
        memcpy(line, p, n);
        line[n] = 0;
        fputs(esc(line), stdout);
        if (!nl || !nl[1]) break;
        fputs("\n    ", stdout);
        p = nl + 1;
    }
    putchar('\n');
}

static nac_status info_safetensors(const char *path, bool json) {
    nac_st_file *f;
    NAC_TRY(nac_st_load(path, &f));
    int64_t numel = 0;
    uint64_t bytes = 0;
    int wname = 4, wshape = 5;
    for (int i = 0; i < f->ntensors; i++) {
        const nac_st_tensor *t = &f->tensors[i];
        char shp[200];
        shape_text(t->ndim, t->shape, shp, sizeof shp);
        numel += nac_st_numel(t);
        bytes += t->end - t->begin;
        if ((int)strlen(esc(t->name)) > wname) wname = (int)strlen(esc(t->name));
        if ((int)strlen(shp) > wshape) wshape = (int)strlen(shp);
    }
    nac_status s = NAC_OK;
    if (json) {
        cJSON *doc = cJSON_CreateObject(), *ts = cJSON_CreateArray(), *meta = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "file", path);
        cJSON_AddStringToObject(doc, "format", "safetensors");
        for (int i = 0; i < f->ntensors; i++) {
            const nac_st_tensor *t = &f->tensors[i];
            cJSON *o = cJSON_CreateObject(), *off = cJSON_CreateArray();
            cJSON_AddStringToObject(o, "name", t->name);
            cJSON_AddStringToObject(o, "dtype", nac_dtype_name(t->dtype));
            cJSON_AddItemToObject(o, "shape", shape_json(t->ndim, t->shape));
            cJSON_AddNumberToObject(o, "numel", (double)nac_st_numel(t));
            cJSON_AddItemToArray(off, cJSON_CreateNumber((double)t->begin));
            cJSON_AddItemToArray(off, cJSON_CreateNumber((double)t->end));
            cJSON_AddItemToObject(o, "data_offsets", off);
            cJSON_AddItemToArray(ts, o);
        }
        cJSON_AddItemToObject(doc, "tensors", ts);
        cJSON_AddNumberToObject(doc, "ntensors", f->ntensors);
        cJSON_AddNumberToObject(doc, "numel", (double)numel);
        cJSON_AddNumberToObject(doc, "bytes", (double)bytes);
        for (int i = 0; i < f->nmeta; i++) cJSON_AddStringToObject(meta, f->meta_keys[i], f->meta_vals[i]);
        cJSON_AddItemToObject(doc, "metadata", meta);
        s = print_json(doc);
    } else {
        printf("%s: safetensors, %d tensors, %" PRId64 " elements, %" PRIu64 " bytes of data\n",
               esc(path), f->ntensors, numel, bytes);
        printf("  %-*s  %-5s  %-*s  %12s\n", wname, "name", "dtype", wshape, "shape", "elements");
        for (int i = 0; i < f->ntensors; i++) {
            const nac_st_tensor *t = &f->tensors[i];
            char shp[200];
            shape_text(t->ndim, t->shape, shp, sizeof shp);
            printf("  %-*s  %-5s  %-*s  %12" PRId64 "\n", wname, esc(t->name), nac_dtype_name(t->dtype),
                   wshape, shp, nac_st_numel(t));
        }
        printf("total: %d tensors, %" PRId64 " elements, %" PRIu64 " bytes\n", f->ntensors, numel,
               bytes);
        printf("metadata: %d entr%s\n", f->nmeta, f->nmeta == 1 ? "y" : "ies");
        for (int i = 0; i < f->nmeta; i++) {
            printf("  %s: ", esc(f->meta_keys[i]));
            print_value(f->meta_vals[i]);
        }
    }
    nac_st_free(f);
    return s;
}

static nac_status info_npy(const char *path, bool json) {
    nac_npy a;
    NAC_TRY(nac_npy_load(path, &a));
    char shp[200];
    shape_text(a.ndim, a.shape, shp, sizeof shp);
    int64_t n = nac_npy_numel(&a);
    uint64_t bytes = (uint64_t)n * nac_dtype_size(a.dtype);
    nac_status s = NAC_OK;
    if (json) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "file", path);
        cJSON_AddStringToObject(doc, "format", "npy");
        cJSON_AddNumberToObject(doc, "version", a.version);
        cJSON_AddStringToObject(doc, "descr", nac_npy_descr(a.dtype));
        cJSON_AddStringToObject(doc, "dtype", nac_dtype_name(a.dtype));
        cJSON_AddItemToObject(doc, "shape", shape_json(a.ndim, a.shape));
        cJSON_AddNumberToObject(doc, "numel", (double)n);
        cJSON_AddNumberToObject(doc, "bytes", (double)bytes);
        s = print_json(doc);
    } else {
        printf("%s: NumPy .npy version %d.0, dtype %s (%s), shape %s, %" PRId64 " elements, %" PRIu64 " bytes of data\n",
               esc(path), a.version, nac_npy_descr(a.dtype), nac_dtype_name(a.dtype), shp, n, bytes);
    }
    nac_npy_free(&a);
    return s;
}

/* Whether path holds a .npy file (by its magic); a FIFO or device is refused here,
 * without waiting on it. */
static nac_status is_npy(const char *path, bool *yes) {
    int fd;
    NAC_TRY(nac_open_regular(path, &fd, NULL));
    char m[6] = {0};
    *yes = read(fd, m, 6) == 6 && memcmp(m, "\x93NUMPY", 6) == 0;
    close(fd);
    return NAC_OK;
}

static nac_status run_info(int argc, char **argv) {
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (argv[i][0] == '-' && argv[i][1])
            return nac_error(NAC_ERR_USAGE, "unknown option %s (see nac info --help)", argv[i]);
        else if (path)
            return nac_error(NAC_ERR_USAGE, "one FILE at a time (got %s and %s)", path, argv[i]);
        else
            path = argv[i];
    }
    if (!path) return nac_error(NAC_ERR_USAGE, "no FILE given (usage: nac info [--json] FILE)");
    bool npy;
    NAC_TRY(is_npy(path, &npy));
    nac_status s = npy ? info_npy(path, json) : info_safetensors(path, json);
    fflush(stdout);
    return s;
}

const nac_command nac_cmd_info = {
    "info",
    "list a checkpoint's tensors and metadata, or an .npy file's shape",
    "info [--json] FILE",
    "FILE is a safetensors checkpoint or a NumPy .npy file (told apart by its first bytes).\n"
    "For a checkpoint: each tensor's name, dtype, shape and element count in file order,\n"
    "the totals, and the metadata (\"__metadata__\": config, step, ...). For .npy: format\n"
    "version, dtype and shape. The whole file is validated; a corrupt file is an error\n"
    "naming the problem (exit 65). --json prints one JSON document instead.",
    run_info,
    NULL,
};
