/* safetensors reading (validated the way the reference implementation does: header size,
 * UTF-8, JSON, dtypes, shapes, contiguous in-bounds offsets, no duplicates) and writing
 * (insertion order, "__metadata__" first, header padded to 8 bytes), plus the atomic file
 * replacement (temporary file, fsync, rename, fsync of the folder) every writer uses. */
#include "io/safetensors.h"
#include "io/utf8.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

/* ---- dtypes ---- */

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [NAC_DT_F32] = {"F32", 4}, [NAC_DT_F64] = {"F64", 8},  [NAC_DT_F16] = {"F16", 2},
    [NAC_DT_BF16] = {"BF16", 2}, [NAC_DT_I64] = {"I64", 8}, [NAC_DT_I32] = {"I32", 4},
    [NAC_DT_I16] = {"I16", 2}, [NAC_DT_I8] = {"I8", 1},    [NAC_DT_U8] = {"U8", 1},
    [NAC_DT_U16] = {"U16", 2}, [NAC_DT_U32] = {"U32", 4},  [NAC_DT_U64] = {"U64", 8},
    [NAC_DT_BOOL] = {"BOOL", 1},
};
#define NDTYPES ((int)(sizeof dtypes / sizeof *dtypes))

static bool dtype_ok(nac_dtype d) { return (int)d >= 0 && (int)d < NDTYPES; }

const char *nac_dtype_name(nac_dtype d) { return dtype_ok(d) ? dtypes[d].name : "?"; }
size_t nac_dtype_size(nac_dtype d) { return dtype_ok(d) ? dtypes[d].size : 0; }

bool nac_dtype_parse(const char *name, nac_dtype *out) {
    for (int i = 0; i < NDTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = (nac_dtype)i;
            return true;
        }
    return false;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f)
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
    else if (exp != 0)
        bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0)
        bits = sign;
    else { /* subnormal: normalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void nac_dtype_to_f32(nac_dtype d, const void *src, float *dst, int64_t n) {
    const unsigned char *s = src;
    size_t k = nac_dtype_size(d);
    NAC_ASSERT(k > 0);
    if (d == NAC_DT_F32) {
        memcpy(dst, s, (size_t)n * 4);
        return;
    }
    for (int64_t i = 0; i < n; i++, s += k) {
        /* memcpy: the data section need not be aligned */
        union {
            double f64;
            uint16_t u16;
            int64_t i64;
            int32_t i32;
            int16_t i16;
            int8_t i8;
            uint8_t u8;
            uint32_t u32;
            uint64_t u64;
        } v;
        memcpy(&v, s, k);
        switch (d) {
        case NAC_DT_F64: dst[i] = (float)v.f64; break;
        case NAC_DT_F16: dst[i] = half_to_float(v.u16); break;
        case NAC_DT_BF16: {
            uint32_t bits = (uint32_t)v.u16 << 16;
            memcpy(&dst[i], &bits, 4);
            break;
        }
        case NAC_DT_I64: dst[i] = (float)v.i64; break;
        case NAC_DT_I32: dst[i] = (float)v.i32; break;
        case NAC_DT_I16: dst[i] = (float)v.i16; break;
        case NAC_DT_I8: dst[i] = (float)v.i8; break;
        case NAC_DT_U8: dst[i] = (float)v.u8; break;
        case NAC_DT_BOOL: dst[i] = v.u8 ? 1.0f : 0.0f; break;
        case NAC_DT_U16: dst[i] = (float)v.u16; break;
        case NAC_DT_U32: dst[i] = (float)v.u32; break;
        case NAC_DT_U64: dst[i] = (float)v.u64; break;
        case NAC_DT_F32: break;
        }
    }
}

/* Loading refuses shapes whose non-zero dimensions multiply past INT64_MAX, so no partial
 * product here can overflow, in any order. */
int64_t nac_st_numel(const nac_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        bool overflow = __builtin_mul_overflow(n, t->shape[i], &n);
        NAC_ASSERT(!overflow);
        (void)overflow;
    }
    return n;
}

/* ---- reading ---- */

void nac_st_free(nac_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->ntensors; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->by_name);
    free(f->bytes);
    free(f->path);
    free(f);
}

nac_status nac_open_regular(const char *path, int *fd_out, size_t *size) {
    NAC_ASSERT(path && fd_out);
    /* O_NONBLOCK: opening a FIFO for reading must not wait for a writer */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            return nac_error(NAC_ERR_NOINPUT, "%s: no such file", path);
        return nac_error(NAC_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return nac_error(NAC_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return nac_error(NAC_ERR_IO, "%s: %s, not a regular file", path,
                         S_ISDIR(sb.st_mode)    ? "is a folder"
                         : S_ISFIFO(sb.st_mode) ? "is a FIFO (named pipe)"
                         : S_ISSOCK(sb.st_mode) ? "is a socket"
                                                : "is a device");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return nac_error(NAC_ERR_IO, "%s: fcntl: %s", path, strerror(e));
    }
    *fd_out = fd;
    if (size) *size = (size_t)sb.st_size;
    return NAC_OK;
}

nac_status nac_read_file(const char *path, unsigned char **out, size_t *size) {
    NAC_ASSERT(path && out && size);
    int fd;
    size_t st_size;
    NAC_TRY(nac_open_regular(path, &fd, &st_size));
    size_t n = st_size, got = 0;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        close(fd);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            free(buf);
            close(fd);
            return nac_error(NAC_ERR_IO, "%s: read failed at byte %zu of %zu%s%s", path, got, n,
                             e ? ": " : " (file shrank)", e ? strerror(e) : "");
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *size = n;
    return NAC_OK;
}

/* A JSON number that is an integer in [0, 2^53] (exact in a double, as cJSON stores it). */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

static void shape_str(const nac_st_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? "," : "", t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Parse one tensor entry of the header into t (name already set). */
static nac_status parse_entry(const char *path, const cJSON *e, nac_st_tensor *t) {
    const char *nm = t->name;
    if (!cJSON_IsObject(e))
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": entry is not a JSON object", path, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": \"dtype\" missing or not a string",
                         path, nm);
    if (!nac_dtype_parse(dt->valuestring, &t->dtype))
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": unknown dtype \"%.40s\"", path, nm,
                         dt->valuestring);
    if (!cJSON_IsArray(sh))
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": \"shape\" missing or not an array",
                         path, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > NAC_ST_MAX_DIMS)
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": shape has %d dimensions, more than the %d supported",
                         path, nm, nd, NAC_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1, nonzero = 1; /* nonzero: the product of the non-zero dimensions */
    bool overflow = false;
    for (int i = 0; i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(sh, i);
        uint64_t v;
        if (!json_uint(d, &v)) {
            char txt[48] = "not a number";
            if (cJSON_IsNumber(d)) snprintf(txt, sizeof txt, "%.17g", d->valuedouble);
            return nac_error(NAC_ERR_DATA,
                             "%s: tensor \"%.200s\": shape element %d is %s, not a non-negative integer",
                             path, nm, i, txt);
        }
        t->shape[i] = (int64_t)v;
        /* a zero dimension must not hide an overflow: [2^53, 1024, 0] is refused */
        if (v && (__builtin_mul_overflow(nonzero, v, &nonzero) || nonzero > INT64_MAX))
            overflow = true;
        numel *= v;
    }
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": \"data_offsets\" missing or not a pair [begin,end]",
                         path, nm);
    const cJSON *b = cJSON_GetArrayItem(of, 0), *en = cJSON_GetArrayItem(of, 1);
    if (!json_uint(b, &t->begin) || !json_uint(en, &t->end))
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": data_offsets out of range: [%.17g,%.17g] are not two integers in [0, 2^53]",
                         path, nm, cJSON_IsNumber(b) ? b->valuedouble : NAN,
                         cJSON_IsNumber(en) ? en->valuedouble : NAN);
    if (t->end < t->begin)
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": data_offsets [%" PRIu64 ",%" PRIu64 "] out of range: end before begin",
                         path, nm, t->begin, t->end);
    size_t es = nac_dtype_size(t->dtype);
    char shp[160];
    shape_str(t, shp, sizeof shp);
    if (overflow || nonzero > (uint64_t)INT64_MAX / es)
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": %s shape %s overflows 64 bits", path,
                         nm, dtypes[t->dtype].name, shp);
    if (t->end - t->begin != numel * es)
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": data_offsets [%" PRIu64 ",%" PRIu64 "] hold %" PRIu64 " bytes but %s shape %s needs %" PRIu64,
                         path, nm, t->begin, t->end, t->end - t->begin, dtypes[t->dtype].name,
                         shp, numel * es);
    return NAC_OK;
}

static int cmp_strp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static nac_status parse_meta(const char *path, const cJSON *m, nac_st_file *f) {
    if (!cJSON_IsObject(m))
        return nac_error(NAC_ERR_DATA, "%s: \"__metadata__\" is not a JSON object", path);
    int n = cJSON_GetArraySize(m);
    f->meta_keys = calloc((size_t)n + 1, sizeof *f->meta_keys);
    f->meta_vals = calloc((size_t)n + 1, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    for (const cJSON *it = m->child; it; it = it->next) {
        if (!cJSON_IsString(it))
            return nac_error(NAC_ERR_DATA, "%s: \"__metadata__\" value of \"%.200s\" is not a string",
                             path, it->string);
        char *k = strdup(it->string), *v = strdup(it->valuestring);
        if (!k || !v) {
            free(k);
            free(v);
            return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
        }
        f->meta_keys[f->nmeta] = k;
        f->meta_vals[f->nmeta++] = v;
    }
    /* duplicates: sort a copy of the keys (n log n; 100k keys must not take minutes) */
    char **sorted = malloc(((size_t)f->nmeta + 1) * sizeof *sorted);
    if (!sorted) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    memcpy(sorted, f->meta_keys, (size_t)f->nmeta * sizeof *sorted);
    qsort(sorted, (size_t)f->nmeta, sizeof *sorted, cmp_strp);
    nac_status s = NAC_OK;
    for (int i = 1; i < f->nmeta && s == NAC_OK; i++)
        if (strcmp(sorted[i], sorted[i - 1]) == 0)
            s = nac_error(NAC_ERR_DATA, "%s: \"__metadata__\" key \"%.200s\" appears twice", path,
                          sorted[i]);
    free(sorted);
    return s;
}

static int cmp_offsets(const void *a, const void *b) {
    const nac_st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* qsort has no context argument in C17 */
static _Thread_local const nac_st_tensor *g_sort_tensors;

static int cmp_names(const void *a, const void *b) {
    return strcmp(g_sort_tensors[*(const int *)a].name, g_sort_tensors[*(const int *)b].name);
}

/* Sort by offset, then check the tensors tile the data section exactly. */
static nac_status check_layout(const char *path, nac_st_file *f, size_t data_size) {
    qsort(f->tensors, (size_t)f->ntensors, sizeof *f->tensors, cmp_offsets);
    uint64_t end = 0;
    for (int i = 0; i < f->ntensors; i++) {
        const nac_st_tensor *t = &f->tensors[i], *p = i ? &f->tensors[i - 1] : NULL;
        if (t->begin < end)
            return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": data_offsets [%" PRIu64 ",%" PRIu64 "] overlap tensor \"%.200s\" [%" PRIu64 ",%" PRIu64 "]",
                             path, t->name, t->begin, t->end, p->name, p->begin, p->end);
        if (t->begin > end) {
            if (!p)
                return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": data_offsets [%" PRIu64 ",%" PRIu64 "] leave a gap: the first tensor must begin at 0",
                                 path, t->name, t->begin, t->end);
            return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\": data_offsets [%" PRIu64 ",%" PRIu64 "] leave a gap of %" PRIu64 " bytes after tensor \"%.200s\" (ends at %" PRIu64 ")",
                             path, t->name, t->begin, t->end, t->begin - end, p->name, end);
        }
        end = t->end;
    }
    if (end > data_size)
        return nac_error(NAC_ERR_DATA, "%s: file truncated: tensor \"%.200s\" ends at byte %" PRIu64 " of the data section, which holds %zu bytes",
                         path, f->tensors[f->ntensors - 1].name, end, data_size);
    if (end < data_size)
        return nac_error(NAC_ERR_DATA, "%s: %" PRIu64 " trailing bytes after the last tensor (tensors end at %" PRIu64 ", data section holds %zu bytes)",
                         path, (uint64_t)data_size - end, end, data_size);
    return NAC_OK;
}

static nac_status parse_header(nac_st_file *f) {
    const char *path = f->path;
    if (f->size < 8)
        return nac_error(NAC_ERR_DATA, "%s: file is %zu bytes, too short for the 8-byte header length",
                         path, f->size);
    uint64_t n;
    memcpy(&n, f->bytes, 8);
    if (n > NAC_ST_MAX_HEADER)
        return nac_error(NAC_ERR_DATA, "%s: header length %" PRIu64 " exceeds the limit of %u bytes (not a safetensors file?)",
                         path, n, NAC_ST_MAX_HEADER);
    if (n > f->size - 8)
        return nac_error(NAC_ERR_DATA, "%s: header length %" PRIu64 " runs past the end of the file (%zu bytes)",
                         path, n, f->size);
    const char *hdr = (const char *)f->bytes + 8;
    size_t bad = nac_utf8_check(hdr, (size_t)n);
    if (bad < n)
        return nac_error(NAC_ERR_DATA, "%s: header is not valid UTF-8 (byte %zu of the header is 0x%02x)",
                         path, bad, (unsigned char)hdr[bad]);
    if (n == 0 || hdr[0] != '{')
        return nac_error(NAC_ERR_DATA, "%s: header is not a JSON object (it does not begin with '{')",
                         path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
    size_t at = end ? (size_t)(end - hdr) : (size_t)n;
    if (root) /* serde_json accepts trailing whitespace (writers pad with spaces) */
        while (at < n && (hdr[at] == ' ' || hdr[at] == '\t' || hdr[at] == '\n' || hdr[at] == '\r'))
            at++;
    if (!root || at < n) {
        if (!root && cJSON_GetErrorPtr()) at = (size_t)(cJSON_GetErrorPtr() - hdr);
        if (at > n) at = (size_t)n;
        cJSON_Delete(root);
        int show = n - at < 20 ? (int)(n - at) : 20;
        return nac_error(NAC_ERR_DATA, "%s: header is not valid JSON (at byte %zu of %" PRIu64 ": \"%.*s\")",
                         path, at, n, show, hdr + at);
    }
    if (!cJSON_IsObject(root)) { /* unreachable after the '{' check; kept as a guard */
        cJSON_Delete(root);
        return nac_error(NAC_ERR_DATA, "%s: header is not a JSON object", path);
    }
    nac_status s = NAC_OK;
    int cap = cJSON_GetArraySize(root), nmeta_seen = 0;
    f->tensors = calloc((size_t)cap + 1, sizeof *f->tensors);
    f->by_name = calloc((size_t)cap + 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) s = nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    for (const cJSON *it = root->child; it && s == NAC_OK; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (nmeta_seen++)
                s = nac_error(NAC_ERR_DATA, "%s: \"__metadata__\" appears twice in the header", path);
            else
                s = parse_meta(path, it, f);
            continue;
        }
        nac_st_tensor *t = &f->tensors[f->ntensors];
        t->name = strdup(it->string);
        if (!t->name) {
            s = nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        f->ntensors++;
        s = parse_entry(path, it, t);
    }
    cJSON_Delete(root);
    NAC_TRY(s);
    /* duplicate names: cJSON keeps every member, the reference's map would silently keep one */
    for (int i = 0; i < f->ntensors; i++) f->by_name[i] = i;
    g_sort_tensors = f->tensors;
    qsort(f->by_name, (size_t)f->ntensors, sizeof *f->by_name, cmp_names);
    for (int i = 1; i < f->ntensors; i++)
        if (strcmp(f->tensors[f->by_name[i]].name, f->tensors[f->by_name[i - 1]].name) == 0)
            return nac_error(NAC_ERR_DATA, "%s: tensor name \"%.200s\" appears twice in the header",
                             path, f->tensors[f->by_name[i]].name);
    f->data = f->bytes + 8 + n;
    NAC_TRY(check_layout(path, f, f->size - 8 - (size_t)n));
    /* offsets order changed the array: rebuild the name index */
    for (int i = 0; i < f->ntensors; i++) f->by_name[i] = i;
    g_sort_tensors = f->tensors;
    qsort(f->by_name, (size_t)f->ntensors, sizeof *f->by_name, cmp_names);
    return NAC_OK;
}

nac_status nac_st_load(const char *path, nac_st_file **out) {
    NAC_ASSERT(path && out);
    *out = NULL;
    nac_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    }
    nac_status s = nac_read_file(path, &f->bytes, &f->size);
    if (s == NAC_OK) s = parse_header(f);
    if (s != NAC_OK) {
        nac_st_free(f);
        return s;
    }
    *out = f;
    return NAC_OK;
}

nac_status nac_st_load_mem(const char *name, const void *bytes, size_t n, nac_st_file **out) {
    NAC_ASSERT(name && out && (bytes || n == 0));
    *out = NULL;
    nac_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name)) || !(f->bytes = malloc(n ? n : 1))) {
        nac_st_free(f);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory", name);
    }
    if (n) memcpy(f->bytes, bytes, n);
    f->size = n;
    nac_status s = parse_header(f);
    if (s != NAC_OK) {
        nac_st_free(f);
        return s;
    }
    *out = f;
    return NAC_OK;
}

const nac_st_tensor *nac_st_find(const nac_st_file *f, const char *name) {
    int lo = 0, hi = f->ntensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const nac_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

const char *nac_st_meta(const nac_st_file *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

const void *nac_st_data(const nac_st_file *f, const nac_st_tensor *t) { return f->data + t->begin; }

nac_status nac_st_read_f32(const nac_st_file *f, const char *name, float *dst, int64_t n) {
    const nac_st_tensor *t = nac_st_find(f, name);
    if (!t) return nac_error(NAC_ERR_DATA, "%s: no tensor \"%.200s\"", f->path, name);
    if (nac_st_numel(t) != n) {
        char shp[160];
        shape_str(t, shp, sizeof shp);
        return nac_error(NAC_ERR_DATA, "%s: tensor \"%.200s\" has shape %s (%" PRId64 " elements), %" PRId64 " expected",
                         f->path, name, shp, nac_st_numel(t), n);
    }
    nac_dtype_to_f32(t->dtype, nac_st_data(f, t), dst, n);
    return NAC_OK;
}

/* ---- writing ---- */

typedef struct st_entry {
    char *name;
    nac_dtype dtype;
    int ndim;
    int64_t shape[NAC_ST_MAX_DIMS];
    void *data;
    size_t nbytes;
} st_entry;

struct nac_st_writer {
    st_entry *t;
    int n, cap;
    char **keys, **vals;
    int nmeta, metacap;
};

nac_st_writer *nac_st_writer_new(void) { return calloc(1, sizeof(nac_st_writer)); }

void nac_st_writer_clear(nac_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    for (int i = 0; i < w->nmeta; i++) {
        free(w->keys[i]);
        free(w->vals[i]);
    }
    w->n = w->nmeta = 0;
}

void nac_st_writer_free(nac_st_writer *w) {
    if (!w) return;
    nac_st_writer_clear(w);
    free(w->t);
    free(w->keys);
    free(w->vals);
    free(w);
}

static bool valid_utf8(const char *s) { return nac_utf8_valid(s); }

static int writer_find(const nac_st_writer *w, const char *name) {
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0) return i;
    return -1;
}

static nac_status writer_reserve(nac_st_writer *w, int more) {
    if (w->n + more <= w->cap) return NAC_OK;
    int cap = w->cap ? w->cap : 16;
    while (cap < w->n + more) cap *= 2;
    st_entry *t = realloc(w->t, (size_t)cap * sizeof *t);
    if (!t) return nac_error(NAC_ERR_NOMEM, "safetensors writer: out of memory");
    w->t = t;
    w->cap = cap;
    return NAC_OK;
}

nac_status nac_st_writer_add(nac_st_writer *w, const char *name, nac_dtype dtype, int ndim,
                             const int64_t *shape, const void *data) {
    NAC_ASSERT(w && name);
    const char *op = "safetensors writer";
    if (!dtype_ok(dtype))
        return nac_error(NAC_ERR_INVALID, "%s: tensor \"%.200s\": bad dtype %d", op, name, (int)dtype);
    if (ndim < 0 || ndim > NAC_ST_MAX_DIMS || (ndim > 0 && !shape))
        return nac_error(NAC_ERR_INVALID, "%s: tensor \"%.200s\": %d dimensions (0..%d allowed)", op,
                         name, ndim, NAC_ST_MAX_DIMS);
    if (!valid_utf8(name) || strcmp(name, "__metadata__") == 0)
        return nac_error(NAC_ERR_INVALID, "%s: tensor name \"%.200s\" is not allowed (must be UTF-8, not \"__metadata__\")",
                         op, name);
    if (writer_find(w, name) >= 0)
        return nac_error(NAC_ERR_INVALID, "%s: tensor \"%.200s\" added twice", op, name);
    size_t nbytes = nac_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && nbytes > SIZE_MAX / (size_t)shape[i]))
            return nac_error(NAC_ERR_INVALID, "%s: tensor \"%.200s\": bad dimension %" PRId64, op,
                             name, shape[i]);
        nbytes *= (size_t)shape[i];
    }
    if (nbytes > 0 && !data)
        return nac_error(NAC_ERR_INVALID, "%s: tensor \"%.200s\": NULL data", op, name);
    NAC_TRY(writer_reserve(w, 1));
    st_entry e = {.dtype = dtype, .ndim = ndim, .nbytes = nbytes};
    e.name = strdup(name);
    e.data = malloc(nbytes ? nbytes : 1);
    if (!e.name || !e.data) {
        free(e.name);
        free(e.data);
        return nac_error(NAC_ERR_NOMEM, "%s: tensor \"%.200s\": out of memory (%zu bytes)", op, name,
                         nbytes);
    }
    if (nbytes) memcpy(e.data, data, nbytes);
    for (int i = 0; i < ndim; i++) e.shape[i] = shape[i];
    w->t[w->n++] = e;
    return NAC_OK;
}

nac_status nac_st_writer_meta(nac_st_writer *w, const char *key, const char *value) {
    NAC_ASSERT(w && key && value);
    if (!valid_utf8(key) || !valid_utf8(value))
        return nac_error(NAC_ERR_INVALID, "safetensors writer: metadata \"%.200s\" is not valid UTF-8",
                         key);
    char *v = strdup(value);
    if (!v) return nac_error(NAC_ERR_NOMEM, "safetensors writer: out of memory");
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->keys[i], key) == 0) {
            free(w->vals[i]);
            w->vals[i] = v;
            return NAC_OK;
        }
    if (w->nmeta == w->metacap) {
        int cap = w->metacap ? 2 * w->metacap : 8;
        char **k = realloc(w->keys, (size_t)cap * sizeof *k);
        if (k) w->keys = k;
        char **vv = k ? realloc(w->vals, (size_t)cap * sizeof *vv) : NULL;
        if (vv) w->vals = vv;
        if (!k || !vv) {
            free(v);
            return nac_error(NAC_ERR_NOMEM, "safetensors writer: out of memory");
        }
        w->metacap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return nac_error(NAC_ERR_NOMEM, "safetensors writer: out of memory");
    }
    w->keys[w->nmeta] = k;
    w->vals[w->nmeta++] = v;
    return NAC_OK;
}

nac_status nac_st_writer_move(nac_st_writer *dst, nac_st_writer *src) {
    NAC_ASSERT(dst && src && dst != src);
    for (int i = 0; i < src->n; i++)
        if (writer_find(dst, src->t[i].name) >= 0)
            return nac_error(NAC_ERR_INVALID, "safetensors writer: tensor \"%.200s\" is in both writers",
                             src->t[i].name);
    NAC_TRY(writer_reserve(dst, src->n));
    for (int i = 0; i < src->nmeta; i++) NAC_TRY(nac_st_writer_meta(dst, src->keys[i], src->vals[i]));
    memcpy(dst->t + dst->n, src->t, (size_t)src->n * sizeof *src->t);
    dst->n += src->n;
    src->n = 0;
    nac_st_writer_clear(src);
    return NAC_OK;
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    NAC_ASSERT(k >= 0 && (size_t)k < sizeof tmp);
    sb_put(b, tmp, (size_t)k);
}

/* A JSON string: quotes, backslashes and control characters escaped, UTF-8 kept as is. */
static void sb_json_str(sbuf *b, const char *s) {
    sb_puts(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20)
            sb_printf(b, "\\u%04x", c);
        else
            sb_put(b, (const char *)&c, 1);
    }
    sb_puts(b, "\"");
}

typedef struct part {
    const void *p;
    size_t n;
} part;

static nac_status write_atomic_parts(const char *path, const part *parts, int nparts);

nac_status nac_st_writer_save(nac_st_writer *w, const char *path) {
    NAC_ASSERT(w && path);
    sbuf h = {0};
    sb_puts(&h, "{");
    if (w->nmeta) {
        sb_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) sb_puts(&h, ",");
            sb_json_str(&h, w->keys[i]);
            sb_puts(&h, ":");
            sb_json_str(&h, w->vals[i]);
        }
        sb_puts(&h, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const st_entry *e = &w->t[i];
        if (i || w->nmeta) sb_puts(&h, ",");
        sb_json_str(&h, e->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtypes[e->dtype].name);
        for (int d = 0; d < e->ndim; d++) sb_printf(&h, "%s%" PRId64, d ? "," : "", e->shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + e->nbytes);
        off += e->nbytes;
    }
    sb_puts(&h, "}");
    while (!h.oom && h.n % 8) sb_puts(&h, " ");
    if (h.oom) {
        free(h.p);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory building the header", path);
    }
    if (h.n > NAC_ST_MAX_HEADER) {
        free(h.p);
        return nac_error(NAC_ERR_INVALID, "%s: header of %zu bytes exceeds the %u-byte limit", path,
                         h.n, NAC_ST_MAX_HEADER);
    }
    part *parts = malloc(((size_t)w->n + 2) * sizeof *parts);
    if (!parts) {
        free(h.p);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    }
    uint64_t len = h.n;
    unsigned char len8[8];
    memcpy(len8, &len, 8);
    parts[0] = (part){len8, 8};
    parts[1] = (part){h.p, h.n};
    for (int i = 0; i < w->n; i++) parts[i + 2] = (part){w->t[i].data, w->t[i].nbytes};
    nac_status s = write_atomic_parts(path, parts, w->n + 2);
    free(parts);
    free(h.p);
    return s;
}

/* ---- atomic replacement ---- */

static nac_status write_fd_all(int fd, const void *data, size_t n) {
    const unsigned char *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return NAC_ERR_IO;
        p += k;
        n -= (size_t)k;
    }
    return NAC_OK;
}

static nac_status fsync_parent(const char *path) {
    char *dir = strdup(path);
    if (!dir) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    char *slash = strrchr(dir, '/');
    const char *d = !slash ? "." : slash == dir ? "/" : (*slash = 0, dir);
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    nac_status s = NAC_OK;
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP))
        s = nac_error(NAC_ERR_IO, "%s: fsync of folder %s failed: %s", path, d, strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return s;
}

static nac_status write_atomic_parts(const char *path, const part *parts, int nparts) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return nac_error(NAC_ERR_IO, "%s: cannot create a temporary file beside it: %s", path,
                         strerror(e));
    }
    const char *what = NULL;
    for (int i = 0; i < nparts && !what; i++)
        if (write_fd_all(fd, parts[i].p, parts[i].n) != NAC_OK) what = "write";
    if (!what && fsync(fd) != 0) what = "fsync";
    int e = errno;
    if (close(fd) != 0 && !what) {
        what = "close";
        e = errno;
    }
    if (!what && rename(tmp, path) != 0) {
        what = "rename";
        e = errno;
    }
    if (what) {
        unlink(tmp);
        free(tmp);
        return nac_error(NAC_ERR_IO, "%s: %s failed: %s (the old file, if any, is unchanged)", path,
                         what, strerror(e));
    }
    free(tmp);
    return fsync_parent(path);
}

nac_status nac_write_file_atomic(const char *path, const void *data, size_t n) {
    NAC_ASSERT(path && (data || n == 0));
    part p = {data, n};
    return write_atomic_parts(path, &p, 1);
}

nac_status nac_write_file_atomicv(const char *path, int nparts, const void *const *data,
                                  const size_t *n) {
    NAC_ASSERT(path && nparts >= 0 && (nparts == 0 || (data && n)));
    part *parts = malloc(((size_t)nparts + 1) * sizeof *parts);
    if (!parts) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < nparts; i++) {
        NAC_ASSERT(data[i] || n[i] == 0);
        parts[i] = (part){data[i], n[i]};
    }
    nac_status s = write_atomic_parts(path, parts, nparts);
    free(parts);
    return s;
}
