/* NumPy .npy writing (format 1.0, exactly the header NumPy writes: the dict's keys sorted,
 * a trailing ", }", spaces and a newline up to a 64-byte boundary) and strict reading. */
#include "io/npy.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

static const struct {
    nac_dtype dt;
    const char *descr;
} descrs[] = {
    {NAC_DT_F32, "<f4"}, {NAC_DT_F64, "<f8"}, {NAC_DT_F16, "<f2"}, {NAC_DT_I64, "<i8"},
    {NAC_DT_I32, "<i4"}, {NAC_DT_I16, "<i2"}, {NAC_DT_I8, "|i1"},  {NAC_DT_U8, "|u1"},
    {NAC_DT_U16, "<u2"}, {NAC_DT_U32, "<u4"}, {NAC_DT_U64, "<u8"}, {NAC_DT_BOOL, "|b1"},
};
#define NDESCR ((int)(sizeof descrs / sizeof *descrs))

const char *nac_npy_descr(nac_dtype d) {
    for (int i = 0; i < NDESCR; i++)
        if (descrs[i].dt == d) return descrs[i].descr;
    return NULL;
}

/* A descr NumPy may write for a little-endian array: '<' (or '|' / '=' on this
 * little-endian host; any order for one-byte types) + kind + size. */
static bool descr_parse(const char *s, nac_dtype *out) {
    if (strlen(s) != 3 || !strchr("<|=>", s[0])) return false;
    for (int i = 0; i < NDESCR; i++) {
        const char *d = descrs[i].descr;
        if (s[1] != d[1] || s[2] != d[2]) continue;
        if (s[0] == '>' && s[2] != '1') return false; /* big-endian data */
        *out = descrs[i].dt;
        return true;
    }
    return false;
}

/* Loading refuses shapes whose non-zero dimensions multiply past INT64_MAX, so no partial
 * product here can overflow. */
int64_t nac_npy_numel(const nac_npy *a) {
    int64_t n = 1;
    for (int i = 0; i < a->ndim; i++) {
        bool overflow = __builtin_mul_overflow(n, a->shape[i], &n);
        NAC_ASSERT(!overflow);
        (void)overflow;
    }
    return n;
}

nac_status nac_npy_write(const char *path, nac_dtype dtype, int ndim, const int64_t *shape,
                         const void *data) {
    NAC_ASSERT(path);
    const char *descr = nac_npy_descr(dtype);
    if (!descr)
        return nac_error(NAC_ERR_INVALID, "%s: NumPy has no dtype for %s", path, nac_dtype_name(dtype));
    if (ndim < 0 || ndim > NAC_ST_MAX_DIMS || (ndim > 0 && !shape))
        return nac_error(NAC_ERR_INVALID, "%s: %d dimensions (0..%d allowed)", path, ndim,
                         NAC_ST_MAX_DIMS);
    size_t nbytes = nac_dtype_size(dtype);
    char h[512];
    int k = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && nbytes > SIZE_MAX / (size_t)shape[i]))
            return nac_error(NAC_ERR_INVALID, "%s: bad dimension %" PRId64, path, shape[i]);
        nbytes *= (size_t)shape[i];
        k += snprintf(h + k, sizeof h - (size_t)k, "%s%" PRId64, i ? ", " : "", shape[i]);
    }
    k += snprintf(h + k, sizeof h - (size_t)k, "%s), }", ndim == 1 ? "," : "");
    if (nbytes > 0 && !data) return nac_error(NAC_ERR_INVALID, "%s: NULL data", path);
    /* magic(6) + version(2) + length(2) + dict + padding + '\n' = a multiple of 64 */
    int total = (10 + k + 1 + 63) / 64 * 64;
    NAC_ASSERT(total <= (int)sizeof h);
    memset(h + k, ' ', (size_t)(total - 10 - k - 1));
    h[total - 10 - 1] = '\n';
    unsigned hlen = (unsigned)(total - 10);
    unsigned char pre[10];
    memcpy(pre, magic, 6);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(hlen & 0xff);
    pre[9] = (unsigned char)(hlen >> 8);
    const void *parts[3] = {pre, h, data};
    size_t lens[3] = {10, hlen, nbytes};
    return nac_write_file_atomicv(path, nbytes ? 3 : 2, parts, lens);
}

/* ---- reading: a small parser for the Python literal dict NumPy writes ---- */

typedef struct lex {
    const char *p, *end, *path;
} lex;

static void skip_ws(lex *l) {
    while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r')) l->p++;
}

static bool eat(lex *l, char c) {
    skip_ws(l);
    if (l->p < l->end && *l->p == c) {
        l->p++;
        return true;
    }
    return false;
}

static nac_status bad(const lex *l, const char *what) {
    int k = l->end - l->p < 20 ? (int)(l->end - l->p) : 20;
    return nac_error(NAC_ERR_DATA, "%s: malformed .npy header: %s (at \"%.*s\")", l->path, what, k,
                     l->p);
}

static nac_status parse_str(lex *l, char *out, size_t n) {
    skip_ws(l);
    if (l->p >= l->end || (*l->p != '\'' && *l->p != '"')) return bad(l, "expected a string");
    char q = *l->p++;
    size_t k = 0;
    while (l->p < l->end && *l->p != q) {
        if (k + 1 >= n) return bad(l, "string too long");
        out[k++] = *l->p++;
    }
    if (l->p >= l->end) return bad(l, "unterminated string");
    l->p++;
    out[k] = 0;
    return NAC_OK;
}

static nac_status parse_shape(lex *l, nac_npy *a) {
    if (!eat(l, '(')) return bad(l, "shape is not a tuple");
    a->ndim = 0;
    for (;;) {
        if (eat(l, ')')) break;
        skip_ws(l);
        int64_t v = 0;
        const char *s = l->p;
        while (l->p < l->end && *l->p >= '0' && *l->p <= '9') {
            if (v > (INT64_MAX - 9) / 10) return bad(l, "shape element too large");
            v = v * 10 + (*l->p++ - '0');
        }
        if (l->p == s) return bad(l, "shape element is not a non-negative integer");
        if (a->ndim == NAC_ST_MAX_DIMS) return bad(l, "more than 8 dimensions");
        a->shape[a->ndim++] = v;
        if (eat(l, ')')) break;
        if (!eat(l, ',')) return bad(l, "expected ',' or ')' in the shape");
    }
    return NAC_OK;
}

static nac_status parse_dict(lex *l, nac_npy *a) {
    bool have_descr = false, have_order = false, have_shape = false;
    if (!eat(l, '{')) return bad(l, "the header is not a dict");
    for (;;) {
        if (eat(l, '}')) break;
        char key[32], val[32];
        NAC_TRY(parse_str(l, key, sizeof key));
        if (!eat(l, ':')) return bad(l, "expected ':'");
        if (!strcmp(key, "descr")) {
            NAC_TRY(parse_str(l, val, sizeof val));
            if (!descr_parse(val, &a->dtype))
                return nac_error(NAC_ERR_DATA, "%s: unsupported .npy dtype '%s' (little-endian bool, int, uint or float expected)",
                                 l->path, val);
            have_descr = true;
        } else if (!strcmp(key, "fortran_order")) {
            skip_ws(l);
            if ((size_t)(l->end - l->p) >= 5 && !memcmp(l->p, "False", 5))
                l->p += 5;
            else if ((size_t)(l->end - l->p) >= 4 && !memcmp(l->p, "True", 4))
                return nac_error(NAC_ERR_DATA, "%s: Fortran-ordered .npy arrays are not supported", l->path);
            else
                return bad(l, "fortran_order is not True or False");
            have_order = true;
        } else if (!strcmp(key, "shape")) {
            NAC_TRY(parse_shape(l, a));
            have_shape = true;
        } else
            return nac_error(NAC_ERR_DATA, "%s: malformed .npy header: unknown key '%s'", l->path, key);
        if (eat(l, '}')) break;
        if (!eat(l, ',')) return bad(l, "expected ',' or '}'");
    }
    skip_ws(l);
    if (l->p != l->end) return bad(l, "text after the dict");
    if (!have_descr || !have_order || !have_shape)
        return nac_error(NAC_ERR_DATA, "%s: malformed .npy header: missing '%s'", l->path,
                         !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    return NAC_OK;
}

static nac_status parse_npy(const char *path, const unsigned char *b, size_t n, nac_npy *a) {
    if (n < 10 || memcmp(b, magic, 6) != 0)
        return nac_error(NAC_ERR_DATA, "%s: not a .npy file (no \\x93NUMPY magic)", path);
    int major = b[6];
    if (major < 1 || major > 3 || b[7] != 0)
        return nac_error(NAC_ERR_DATA, "%s: unsupported .npy format version %d.%d", path, b[6], b[7]);
    size_t pre = major == 1 ? 10 : 12;
    if (n < pre) return nac_error(NAC_ERR_DATA, "%s: .npy file truncated in its preamble", path);
    uint64_t hlen = major == 1 ? (uint64_t)b[8] | (uint64_t)b[9] << 8
                               : (uint64_t)b[8] | (uint64_t)b[9] << 8 | (uint64_t)b[10] << 16 |
                                     (uint64_t)b[11] << 24;
    if (hlen > n - pre)
        return nac_error(NAC_ERR_DATA, "%s: .npy header length %" PRIu64 " runs past the end of the file (%zu bytes)",
                         path, hlen, n);
    a->version = major;
    lex l = {(const char *)b + pre, (const char *)b + pre + hlen, path};
    NAC_TRY(parse_dict(&l, a));
    size_t es = nac_dtype_size(a->dtype), want = es, have = n - pre - (size_t)hlen;
    /* the non-zero dimensions must multiply (by the element size too) within int64: a zero
     * dimension must not hide an overflow, as in shape (2^62, 2, 0) */
    int64_t nonzero = (int64_t)es;
    for (int i = 0; i < a->ndim; i++) {
        if (a->shape[i] && __builtin_mul_overflow(nonzero, a->shape[i], &nonzero))
            return nac_error(NAC_ERR_DATA, "%s: .npy shape overflows 64 bits", path);
        want *= (size_t)a->shape[i];
    }
    if (have != want)
        return nac_error(NAC_ERR_DATA, "%s: .npy data is %zu bytes but %s shape needs %zu (%s)", path,
                         have, nac_dtype_name(a->dtype), want,
                         have < want ? "file truncated" : "trailing bytes");
    a->data = malloc(want ? want : 1);
    if (!a->data) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    if (want) memcpy(a->data, b + pre + hlen, want);
    return NAC_OK;
}

nac_status nac_npy_parse(const char *name, const void *bytes, size_t n, nac_npy *out) {
    NAC_ASSERT(name && out && (bytes || n == 0));
    memset(out, 0, sizeof *out);
    nac_status s = parse_npy(name, bytes, n, out);
    if (s != NAC_OK) nac_npy_free(out);
    return s;
}

nac_status nac_npy_load(const char *path, nac_npy *out) {
    NAC_ASSERT(path && out);
    memset(out, 0, sizeof *out);
    unsigned char *b;
    size_t n;
    NAC_TRY(nac_read_file(path, &b, &n));
    nac_status s = parse_npy(path, b, n, out);
    free(b);
    if (s != NAC_OK) nac_npy_free(out);
    return s;
}

void nac_npy_free(nac_npy *a) {
    if (!a) return;
    free(a->data);
    a->data = NULL;
}

nac_status nac_npy_read_f32(const char *path, int *ndim, int64_t shape[NAC_ST_MAX_DIMS],
                            float **data) {
    NAC_ASSERT(ndim && shape && data);
    nac_npy a;
    NAC_TRY(nac_npy_load(path, &a));
    int64_t n = nac_npy_numel(&a);
    float *f = a.dtype == NAC_DT_F32 ? a.data : malloc((size_t)(n ? n : 1) * sizeof *f);
    if (!f) {
        nac_npy_free(&a);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory", path);
    }
    if (a.dtype != NAC_DT_F32) {
        nac_dtype_to_f32(a.dtype, a.data, f, n);
        nac_npy_free(&a);
    }
    *ndim = a.ndim;
    memcpy(shape, a.shape, sizeof a.shape);
    *data = f;
    return NAC_OK;
}
