/* Dataset readers (CIFAR-10 binary, IDX with or without gzip), the synthetic generator,
 * subsets and concatenation. Every reader checks the whole file before it hands back a
 * dataset: a short, oversized or inconsistent file is an error naming it, never a silently
 * smaller dataset. */
#include "data/dataset.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "backend/rng.h"
#include "io/safetensors.h"
#include "io/utf8.h"

const float nac_cifar10_mean[3] = {0.4914f, 0.4822f, 0.4465f};
const float nac_cifar10_std[3] = {0.2023f, 0.1994f, 0.2010f};
const char *const nac_cifar10_names[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                           "dog",      "frog",       "horse", "ship", "truck"};
const char *const nac_fashion_mnist_names[10] = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                                 "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                                 "Bag",         "Ankle boot"};

#define CIFAR_RECORD 3073
#define CIFAR_PIXELS 3072

nac_status nac_split_parse(const char *s, nac_split *out) {
    if (!strcmp(s, "train"))
        *out = NAC_SPLIT_TRAIN;
    else if (!strcmp(s, "test"))
        *out = NAC_SPLIT_TEST;
    else if (!strcmp(s, "both"))
        *out = NAC_SPLIT_BOTH;
    else
        return nac_error(NAC_ERR_INVALID, "unknown split \"%s\" (train, test or both)", s);
    return NAC_OK;
}

const char *nac_split_name(nac_split s) {
    return s == NAC_SPLIT_TRAIN ? "train" : s == NAC_SPLIT_TEST ? "test" : "both";
}

/* ---------------------------------------------------------------- small helpers */

static void copy_str(char *dst, size_t n, const char *src) {
    size_t k = strlen(src);
    if (k >= n) k = n - 1;
    memcpy(dst, src, k);
    dst[k] = 0;
}

static void join_path(char *dst, size_t n, const char *dir, const char *name) {
    size_t k = strlen(dir);
    bool slash = k > 0 && dir[k - 1] == '/';
    copy_str(dst, n, dir);
    size_t used = strlen(dst);
    if (!slash && used + 1 < n) {
        dst[used++] = '/';
        dst[used] = 0;
    }
    copy_str(dst + used, n - used, name);
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static nac_status ds_alloc(nac_dataset_t *out, int64_t n, int c, int h, int w) {
    memset(out, 0, sizeof *out);
    size_t bytes;
    if (n < 0 || n > INT_MAX || c < 0 || h < 0 || w < 0 ||
        __builtin_mul_overflow((size_t)n, (size_t)c, &bytes) ||
        __builtin_mul_overflow(bytes, (size_t)h, &bytes) ||
        __builtin_mul_overflow(bytes, (size_t)w, &bytes))
        return nac_error(NAC_ERR_INVALID, "%lld images of %dx%dx%d overflow memory sizes",
                         (long long)n, c, h, w);
    out->pixels = malloc(bytes ? bytes : 1);
    out->labels = malloc((size_t)(n ? n : 1) * sizeof(int));
    if (!out->pixels || !out->labels) {
        free(out->pixels);
        free(out->labels);
        memset(out, 0, sizeof *out);
        return nac_error(NAC_ERR_NOMEM, "out of memory for %lld images of %dx%dx%d", (long long)n,
                         c, h, w);
    }
    out->n = (int)n;
    out->c = c;
    out->h = h;
    out->w = w;
    return NAC_OK;
}

void nac_dataset_free(nac_dataset_t *ds) {
    if (!ds) return;
    free(ds->pixels);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* ---------------------------------------------------------------- reading files */

static nac_status read_raw(const char *path, uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    int fd;
    NAC_TRY(nac_open_regular(path, &fd, NULL)); /* a FIFO is refused, never waited on */
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return nac_error(NAC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return nac_error(NAC_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return nac_error(NAC_ERR_NOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    bool err = ferror(f);
    fclose(f);
    if (err || got != n) {
        free(buf);
        return nac_error(NAC_ERR_IO, "%s: read %zu of %zu bytes", path, got, n);
    }
    *data = buf;
    *len = n;
    return NAC_OK;
}

/* Inflate a gzip stream (one or more members) into a buffer that grows with the data
 * actually produced (never more than twice it), refusing more than `max` bytes: a size
 * declared in a header is never allocated before the stream has delivered it. */
static nac_status inflate_gzip(const char *path, const uint8_t *in, size_t inlen, size_t max,
                               uint8_t **data, size_t *len) {
    /* ISIZE (the last 4 bytes) is the size mod 2^32 of the last member: a first guess. */
    size_t cap = 1 << 16;
    if (inlen >= 18) {
        size_t isize = (size_t)in[inlen - 4] | (size_t)in[inlen - 3] << 8 |
                       (size_t)in[inlen - 2] << 16 | (size_t)in[inlen - 1] << 24;
        /* deflate expands at most ~1032:1; a larger ISIZE is a corrupt trailer, not a hint */
        if (isize + 1 > cap && isize / 1032 <= inlen && isize <= max) cap = isize + 1;
    }
    if (cap > max + 1) cap = max + 1;
    uint8_t *out = malloc(cap);
    if (!out) return nac_error(NAC_ERR_NOMEM, "%s: out of memory inflating", path);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        free(out);
        return nac_error(NAC_ERR_NOMEM, "%s: cannot start zlib", path);
    }
    size_t in_pos = 0, used = 0;
    nac_status st = NAC_OK;
    for (;;) {
        if (used == cap) {
            if (used > max) {
                st = nac_error(NAC_ERR_DATA, "%s: the gzip stream inflates to more than %zu bytes%s",
                               path, max, max == NAC_GZ_MAX_BYTES ? " (the limit)" : ", the size its header declares");
                break;
            }
            size_t bigger_cap = cap > (max + 1) / 2 ? max + 1 : cap * 2;
            uint8_t *bigger = realloc(out, bigger_cap);
            if (!bigger) {
                st = nac_error(NAC_ERR_NOMEM, "%s: out of memory inflating", path);
                break;
            }
            out = bigger;
            cap = bigger_cap;
        }
        size_t in_left = inlen - in_pos, out_left = cap - used;
        zs.next_in = (Bytef *)(in + in_pos);
        zs.avail_in = (uInt)(in_left > UINT_MAX ? UINT_MAX : in_left);
        zs.next_out = out + used;
        zs.avail_out = (uInt)(out_left > UINT_MAX ? UINT_MAX : out_left);
        uInt avail_in0 = zs.avail_in, avail_out0 = zs.avail_out;
        int ret = inflate(&zs, Z_NO_FLUSH);
        in_pos += avail_in0 - zs.avail_in;
        used += avail_out0 - zs.avail_out;
        if (ret == Z_STREAM_END) {
            if (in_pos == inlen) break;
            if (inlen - in_pos >= 2 && in[in_pos] == 0x1f && in[in_pos + 1] == 0x8b) {
                inflateReset(&zs); /* another gzip member follows */
                continue;
            }
            st = nac_error(NAC_ERR_DATA, "%s: %zu bytes of garbage after the gzip stream", path,
                           inlen - in_pos);
            break;
        }
        if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT) {
            st = nac_error(NAC_ERR_DATA, "%s: corrupt gzip stream at compressed byte %zu (%s)",
                           path, in_pos, zs.msg ? zs.msg : "invalid data");
            break;
        }
        if (ret == Z_MEM_ERROR) {
            st = nac_error(NAC_ERR_NOMEM, "%s: out of memory inflating", path);
            break;
        }
        if (in_pos == inlen && used < cap) {
            st = nac_error(NAC_ERR_DATA,
                           "%s: truncated gzip stream (the file ends after %zu compressed bytes, "
                           "before the end of the stream)",
                           path, inlen);
            break;
        }
    }
    inflateEnd(&zs);
    if (st != NAC_OK) {
        free(out);
        return st;
    }
    *data = out;
    *len = used;
    return NAC_OK;
}

/* The first min(n, available) inflated bytes of a gzip stream, for reading a header before
 * deciding how much the whole stream may hold. Returns how many bytes it got. */
static size_t inflate_peek(const uint8_t *in, size_t inlen, uint8_t *out, size_t n) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return 0;
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)(inlen > UINT_MAX ? UINT_MAX : inlen);
    zs.next_out = out;
    zs.avail_out = (uInt)n;
    while (zs.avail_out > 0) {
        uInt before = zs.avail_out;
        int ret = inflate(&zs, Z_SYNC_FLUSH);
        if (ret != Z_OK || zs.avail_out == before) break;
    }
    size_t got = n - zs.avail_out;
    inflateEnd(&zs);
    return got;
}

static bool is_gzip(const uint8_t *b, size_t n) { return n >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

/* Raw file bytes, inflated if gzipped (at most max bytes); *data is raw itself when plain. */
static nac_status maybe_inflate(const char *path, const uint8_t *raw, size_t n, size_t max,
                                uint8_t **data, size_t *len) {
    if (is_gzip(raw, n)) return inflate_gzip(path, raw, n, max, data, len);
    if (n > max)
        return nac_error(NAC_ERR_DATA, "%s: %zu bytes, more than the %zu this file may hold", path,
                         n, max);
    *data = (uint8_t *)raw;
    *len = n;
    return NAC_OK;
}

nac_status nac_read_file_maybe_gz(const char *path, uint8_t **data, size_t *len) {
    uint8_t *raw;
    size_t n;
    *data = NULL;
    NAC_TRY(read_raw(path, &raw, &n));
    nac_status st = maybe_inflate(path, raw, n, NAC_GZ_MAX_BYTES, data, len);
    if (st != NAC_OK || *data != raw) free(raw);
    return st;
}

/* ---------------------------------------------------------------- CIFAR-10 */

static void set_names(nac_dataset_t *ds, const char *const *names, int k) {
    ds->nclasses = k;
    for (int i = 0; i < k; i++) copy_str(ds->class_names[i], NAC_DATASET_NAME_LEN, names[i]);
}

static void set_number_names(nac_dataset_t *ds, int k) {
    ds->nclasses = k;
    for (int i = 0; i < k; i++) snprintf(ds->class_names[i], NAC_DATASET_NAME_LEN, "%d", i);
}

/* batches.meta.txt: one name a line; blank lines ignored; exactly 10 names. */
static nac_status cifar_read_meta(const char *dir, nac_dataset_t *ds) {
    char path[1024];
    join_path(path, sizeof path, dir, "batches.meta.txt");
    set_names(ds, nac_cifar10_names, 10);
    if (!is_file(path)) return NAC_OK;
    uint8_t *text;
    size_t len;
    NAC_TRY(read_raw(path, &text, &len));
    size_t bad = nac_utf8_check(text, len);
    for (size_t i = 0; i < bad; i++) /* names are printed: no control characters but line ends */
        if ((text[i] < 0x20 && !isspace(text[i])) || text[i] == 0x7f) bad = i;
    if (bad < len) {
        int line = 1;
        for (size_t i = 0; i < bad && i < len; i++) line += text[i] == '\n';
        free(text);
        return nac_error(NAC_ERR_DATA, "%s: line %d is not UTF-8 text without control characters",
                         path, line);
    }
    int k = 0;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && text[j] != '\n') j++;
        size_t a = i, b = j;
        while (a < b && isspace(text[a])) a++;
        while (b > a && isspace(text[b - 1])) b--;
        if (b > a) {
            if (k < 10) {
                size_t m = b - a < NAC_DATASET_NAME_LEN - 1 ? b - a : NAC_DATASET_NAME_LEN - 1;
                memcpy(ds->class_names[k], text + a, m);
                ds->class_names[k][m] = 0;
                /* cut long names on a character boundary, so they stay UTF-8 */
                ds->class_names[k][nac_utf8_prefix(ds->class_names[k], m)] = 0;
            }
            k++;
        }
        i = j + 1;
    }
    free(text);
    if (k != 10) {
        set_names(ds, nac_cifar10_names, 10);
        return nac_error(NAC_ERR_DATA, "%s: %d class names, expected 10", path, k);
    }
    return NAC_OK;
}

/* Check one batch file: whole records, labels 0..9. */
static nac_status cifar_check(const char *path, const uint8_t *buf, size_t len) {
    if (len == 0) return nac_error(NAC_ERR_DATA, "%s: empty file", path);
    if (len % CIFAR_RECORD != 0)
        return nac_error(NAC_ERR_DATA,
                         "%s: %zu bytes is not a whole number of %d-byte records (record %zu is "
                         "truncated: %zu of %d bytes)",
                         path, len, CIFAR_RECORD, len / CIFAR_RECORD, len % CIFAR_RECORD,
                         CIFAR_RECORD);
    if (len / CIFAR_RECORD > INT_MAX / 8)
        return nac_error(NAC_ERR_DATA, "%s: %zu records is too many", path, len / CIFAR_RECORD);
    for (size_t r = 0; r < len / CIFAR_RECORD; r++)
        if (buf[r * CIFAR_RECORD] > 9)
            return nac_error(NAC_ERR_DATA, "%s: record %zu has label %d, outside 0..9", path, r,
                             buf[r * CIFAR_RECORD]);
    return NAC_OK;
}

static nac_status cifar_load_files(char paths[][1024], int nfiles, nac_dataset_t *out) {
    uint8_t *bufs[8] = {0};
    size_t lens[8] = {0};
    size_t total = 0;
    nac_status st = NAC_OK;
    for (int f = 0; f < nfiles && st == NAC_OK; f++) {
        st = nac_read_file_maybe_gz(paths[f], &bufs[f], &lens[f]);
        if (st == NAC_OK) st = cifar_check(paths[f], bufs[f], lens[f]);
        total += lens[f] / CIFAR_RECORD;
    }
    if (st == NAC_OK && total > INT_MAX / 8)
        st = nac_error(NAC_ERR_DATA, "%s: %zu records in all is too many", paths[0], total);
    if (st == NAC_OK) st = ds_alloc(out, (int64_t)total, 3, 32, 32);
    if (st == NAC_OK) {
        size_t k = 0;
        for (int f = 0; f < nfiles; f++)
            for (size_t r = 0; r < lens[f] / CIFAR_RECORD; r++, k++) {
                const uint8_t *rec = bufs[f] + r * CIFAR_RECORD;
                out->labels[k] = rec[0];
                memcpy(out->pixels + k * CIFAR_PIXELS, rec + 1, CIFAR_PIXELS);
            }
        copy_str(out->format, sizeof out->format, "cifar10");
        set_names(out, nac_cifar10_names, 10);
    }
    for (int f = 0; f < nfiles; f++) free(bufs[f]);
    return st;
}

nac_status nac_dataset_parse_cifar10(const char *name, const uint8_t *raw, size_t n,
                                     nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    size_t len;
    NAC_TRY(maybe_inflate(name, raw, n, NAC_GZ_MAX_BYTES, &buf, &len));
    nac_status st = cifar_check(name, buf, len);
    if (st == NAC_OK) st = ds_alloc(out, (int64_t)(len / CIFAR_RECORD), 3, 32, 32);
    if (st == NAC_OK) {
        for (size_t r = 0; r < len / CIFAR_RECORD; r++) {
            out->labels[r] = buf[r * CIFAR_RECORD];
            memcpy(out->pixels + r * CIFAR_PIXELS, buf + r * CIFAR_RECORD + 1, CIFAR_PIXELS);
        }
        copy_str(out->format, sizeof out->format, "cifar10");
        copy_str(out->source, sizeof out->source, name);
        set_names(out, nac_cifar10_names, 10);
    }
    if (buf != raw) free(buf);
    return st;
}

nac_status nac_dataset_load_cifar10_file(const char *path, nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    char paths[1][1024];
    copy_str(paths[0], sizeof paths[0], path);
    NAC_TRY(cifar_load_files(paths, 1, out));
    copy_str(out->source, sizeof out->source, path);
    return NAC_OK;
}

static bool cifar_dir_has_batches(const char *dir) {
    char p[1024];
    join_path(p, sizeof p, dir, "data_batch_1.bin");
    if (is_file(p)) return true;
    join_path(p, sizeof p, dir, "test_batch.bin");
    return is_file(p);
}

nac_status nac_dataset_load_cifar10(const char *dir_in, nac_split split, nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    if (!is_dir(dir_in)) return nac_error(NAC_ERR_NOINPUT, "%s: no such folder", dir_in);
    char dir[1024];
    copy_str(dir, sizeof dir, dir_in);
    if (!cifar_dir_has_batches(dir)) {
        char sub[1024];
        join_path(sub, sizeof sub, dir_in, "cifar-10-batches-bin");
        if (is_dir(sub)) copy_str(dir, sizeof dir, sub);
    }
    char paths[6][1024];
    int nfiles = 0;
    if (split != NAC_SPLIT_TEST)
        for (int b = 1; b <= 5; b++) {
            char name[32];
            snprintf(name, sizeof name, "data_batch_%d.bin", b);
            join_path(paths[nfiles++], sizeof paths[0], dir, name);
        }
    if (split != NAC_SPLIT_TRAIN)
        join_path(paths[nfiles++], sizeof paths[0], dir, "test_batch.bin");
    NAC_TRY(cifar_load_files(paths, nfiles, out));
    nac_status st = cifar_read_meta(dir, out);
    if (st != NAC_OK) {
        nac_dataset_free(out);
        return st;
    }
    snprintf(out->source, sizeof out->source, "%.480s (%s)", dir, nac_split_name(split));
    return NAC_OK;
}

/* ---------------------------------------------------------------- IDX */

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Check the header of an IDX file of ubyte with `ndim` dimensions (the first len bytes of
 * it) and say how long the whole file must be. Every size is bounded before it is
 * multiplied: images at most NAC_DATASET_MAX_SIDE a side, at most INT_MAX / 8 items. */
static nac_status idx_header(const char *path, const uint8_t *buf, size_t len, int ndim,
                             uint32_t *dims, size_t *want_len) {
    const char *what = ndim == 3 ? "images" : "labels";
    uint32_t want = 0x00000800u | (uint32_t)ndim;
    if (len < 4)
        return nac_error(NAC_ERR_DATA, "%s: %zu bytes, too short for an IDX header", path, len);
    uint32_t magic = be32(buf);
    if (magic != want)
        return nac_error(NAC_ERR_DATA,
                         "%s: bad magic 0x%08x, expected 0x%08x (IDX %s: unsigned bytes, %d "
                         "dimensions)",
                         path, magic, want, what, ndim);
    size_t head = 4 + 4 * (size_t)ndim;
    if (len < head)
        return nac_error(NAC_ERR_DATA, "%s: truncated IDX header (%zu of %zu bytes)", path, len,
                         head);
    size_t total = head;
    size_t payload = 1;
    for (int d = 0; d < ndim; d++) {
        dims[d] = be32(buf + 4 + 4 * d);
        uint32_t limit = d == 0 ? (uint32_t)INT_MAX / 8 : NAC_DATASET_MAX_SIDE;
        if (dims[d] == 0 || dims[d] > limit)
            return nac_error(NAC_ERR_DATA, "%s: dimension %d is %u (1..%u allowed%s)", path, d,
                             dims[d], limit, d ? " for an image side" : "");
        if (__builtin_mul_overflow(payload, (size_t)dims[d], &payload))
            return nac_error(NAC_ERR_DATA, "%s: dimensions overflow", path);
    }
    if (__builtin_add_overflow(total, payload, &total) || total > NAC_GZ_MAX_BYTES)
        return nac_error(NAC_ERR_DATA, "%s: dimensions %s %zu bytes, more than the limit of %llu", path,
                         "need", payload, (unsigned long long)NAC_GZ_MAX_BYTES);
    *want_len = total;
    return NAC_OK;
}

static void idx_shape(char *shape, size_t n, int ndim, const uint32_t *dims) {
    if (ndim == 3)
        snprintf(shape, n, "%u images of %ux%u", dims[0], dims[1], dims[2]);
    else
        snprintf(shape, n, "%u labels", dims[0]);
}

/* One IDX file's bytes (gzipped or plain) -> its uncompressed bytes, which fill exactly the
 * size its header declares. A gzip stream is inflated no further than that size. *data is
 * raw itself for a plain file (do not free it then). */
static nac_status idx_decode(const char *path, const uint8_t *raw, size_t n, int ndim,
                             uint32_t *dims, uint8_t **data, size_t *len) {
    const uint8_t *hdr = raw;
    size_t hlen = n, want = 0;
    uint8_t peek[16];
    if (is_gzip(raw, n)) {
        size_t need = 4 + 4 * (size_t)ndim;
        hlen = inflate_peek(raw, n, peek, need);
        hdr = peek;
        if (hlen < need) { /* a short or corrupt stream: let the full inflate name the problem */
            uint8_t *tmp;
            size_t tl;
            NAC_TRY(inflate_gzip(path, raw, n, need, &tmp, &tl));
            free(tmp);
        }
    }
    NAC_TRY(idx_header(path, hdr, hlen, ndim, dims, &want));
    if (is_gzip(raw, n)) {
        NAC_TRY(inflate_gzip(path, raw, n, want, data, len));
    } else {
        *data = (uint8_t *)raw;
        *len = n;
    }
    char shape[96];
    idx_shape(shape, sizeof shape, ndim, dims);
    nac_status st = NAC_OK;
    if (*len < want)
        st = nac_error(NAC_ERR_DATA,
                       "%s: header says %s (%zu bytes) but the file holds %zu bytes: truncated",
                       path, shape, want, *len);
    else if (*len > want)
        st = nac_error(NAC_ERR_DATA,
                       "%s: header says %s (%zu bytes) but the file holds %zu bytes: the "
                       "dimensions do not match the file size",
                       path, shape, want, *len);
    if (st != NAC_OK) {
        if (*data != raw) free(*data);
        *data = NULL;
    }
    return st;
}

nac_status nac_dataset_parse_idx(const char *images_name, const uint8_t *img_raw, size_t img_n,
                                 const char *labels_name, const uint8_t *lab_raw, size_t lab_n,
                                 int nclasses, nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    if (nclasses < 0 || nclasses > NAC_DATASET_MAX_CLASSES)
        return nac_error(NAC_ERR_INVALID, "nclasses %d outside 0..%d", nclasses,
                         NAC_DATASET_MAX_CLASSES);
    uint8_t *img = NULL, *lab = NULL;
    size_t img_len = 0, lab_len = 0;
    uint32_t idim[3] = {0}, ldim[1] = {0};
    nac_status st = idx_decode(images_name, img_raw, img_n, 3, idim, &img, &img_len);
    if (st == NAC_OK) st = idx_decode(labels_name, lab_raw, lab_n, 1, ldim, &lab, &lab_len);
    if (st == NAC_OK && ldim[0] != idim[0])
        st = nac_error(NAC_ERR_DATA, "%s holds %u labels but %s holds %u images", labels_name,
                       ldim[0], images_name, idim[0]);
    int maxlab = 0;
    if (st == NAC_OK) {
        const uint8_t *l = lab + 8;
        for (uint32_t i = 0; i < ldim[0]; i++) {
            if (nclasses > 0 && l[i] >= nclasses) {
                st = nac_error(NAC_ERR_DATA, "%s: label %d of item %u is outside 0..%d",
                               labels_name, l[i], i, nclasses - 1);
                break;
            }
            if (l[i] > maxlab) maxlab = l[i];
        }
    }
    if (st == NAC_OK) st = ds_alloc(out, idim[0], 1, (int)idim[1], (int)idim[2]);
    if (st == NAC_OK) {
        memcpy(out->pixels, img + 16, img_len - 16);
        for (uint32_t i = 0; i < ldim[0]; i++) out->labels[i] = lab[8 + i];
        set_number_names(out, nclasses > 0 ? nclasses : maxlab + 1);
        copy_str(out->format, sizeof out->format, "idx");
        snprintf(out->source, sizeof out->source, "%.250s + %.250s", images_name, labels_name);
    }
    if (img != img_raw) free(img);
    if (lab != lab_raw) free(lab);
    return st;
}

nac_status nac_dataset_load_idx(const char *images_path, const char *labels_path, int nclasses,
                                nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    if (nclasses < 0 || nclasses > NAC_DATASET_MAX_CLASSES)
        return nac_error(NAC_ERR_INVALID, "nclasses %d outside 0..%d", nclasses,
                         NAC_DATASET_MAX_CLASSES);
    uint8_t *img = NULL, *lab = NULL;
    size_t img_n = 0, lab_n = 0;
    nac_status st = read_raw(images_path, &img, &img_n);
    if (st == NAC_OK) st = read_raw(labels_path, &lab, &lab_n);
    if (st == NAC_OK)
        st = nac_dataset_parse_idx(images_path, img, img_n, labels_path, lab, lab_n, nclasses, out);
    free(img);
    free(lab);
    return st;
}

/* dir/name.gz if present, else dir/name; NAC_ERR_NOINPUT naming both if neither. */
static nac_status find_gz_or_plain(const char *dir, const char *name, char *path, size_t n) {
    char gz[256];
    snprintf(gz, sizeof gz, "%s.gz", name);
    join_path(path, n, dir, gz);
    if (is_file(path)) return NAC_OK;
    join_path(path, n, dir, name);
    if (is_file(path)) return NAC_OK;
    return nac_error(NAC_ERR_NOINPUT, "%s: neither %s.gz nor %s found", dir, name, name);
}

static nac_status idx_split(const char *dir, const char *prefix, nac_dataset_t *out) {
    char ip[1024], lp[1024], iname[64], lname[64];
    snprintf(iname, sizeof iname, "%s-images-idx3-ubyte", prefix);
    snprintf(lname, sizeof lname, "%s-labels-idx1-ubyte", prefix);
    NAC_TRY(find_gz_or_plain(dir, iname, ip, sizeof ip));
    NAC_TRY(find_gz_or_plain(dir, lname, lp, sizeof lp));
    return nac_dataset_load_idx(ip, lp, 10, out);
}

static nac_status idx_dir(const char *dir, nac_split split, const char *const *names,
                          const char *format, nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    if (!is_dir(dir)) return nac_error(NAC_ERR_NOINPUT, "%s: no such folder", dir);
    if (split == NAC_SPLIT_BOTH) {
        nac_dataset_t tr, te;
        NAC_TRY(idx_split(dir, "train", &tr));
        nac_status st = idx_split(dir, "t10k", &te);
        if (st == NAC_OK) st = nac_dataset_concat(&tr, &te, out);
        nac_dataset_free(&tr);
        nac_dataset_free(&te);
        NAC_TRY(st);
    } else {
        NAC_TRY(idx_split(dir, split == NAC_SPLIT_TRAIN ? "train" : "t10k", out));
    }
    if (names) set_names(out, names, 10);
    copy_str(out->format, sizeof out->format, format);
    snprintf(out->source, sizeof out->source, "%.480s (%s)", dir, nac_split_name(split));
    return NAC_OK;
}

nac_status nac_dataset_load_fashion_mnist(const char *dir, nac_split split, nac_dataset_t *out) {
    return idx_dir(dir, split, nac_fashion_mnist_names, "idx", out);
}

nac_status nac_dataset_load_mnist(const char *dir, nac_split split, nac_dataset_t *out) {
    return idx_dir(dir, split, NULL, "idx", out);
}

nac_status nac_dataset_check_files(const char *name, const char *path, nac_split split) {
    bool nopath = !path || !path[0];
    if (!strcmp(name, "fashion-mnist") || !strcmp(name, "mnist")) {
        const char *dir = nopath ? NAC_FASHION_MNIST_DIR : path;
        if (nopath && !strcmp(name, "mnist")) return nac_error(NAC_ERR_INVALID, "dataset mnist needs a path");
        if (!is_dir(dir)) return nac_error(NAC_ERR_NOINPUT, "%s: no such folder", dir);
        char p[1024];
        const char *pre[2] = {"train", "t10k"};
        for (int i = 0; i < 2; i++) {
            if ((split == NAC_SPLIT_TRAIN && i == 1) || (split == NAC_SPLIT_TEST && i == 0)) continue;
            char n1[64], n2[64];
            snprintf(n1, sizeof n1, "%s-images-idx3-ubyte", pre[i]);
            snprintf(n2, sizeof n2, "%s-labels-idx1-ubyte", pre[i]);
            NAC_TRY(find_gz_or_plain(dir, n1, p, sizeof p));
            NAC_TRY(find_gz_or_plain(dir, n2, p, sizeof p));
        }
        return NAC_OK;
    }
    if (!strcmp(name, "cifar10")) {
        if (nopath) return nac_error(NAC_ERR_INVALID, "dataset cifar10 needs a path");
        if (!is_dir(path)) return nac_error(NAC_ERR_NOINPUT, "%s: no such folder", path);
        char dir[1024], sub[1024], p[1024];
        copy_str(dir, sizeof dir, path);
        if (!cifar_dir_has_batches(dir)) {
            join_path(sub, sizeof sub, path, "cifar-10-batches-bin");
            if (is_dir(sub)) copy_str(dir, sizeof dir, sub);
        }
        for (int b = split == NAC_SPLIT_TEST ? 6 : 1; b <= (split == NAC_SPLIT_TRAIN ? 5 : 6); b++) {
            char nm[32];
            if (b == 6) snprintf(nm, sizeof nm, "test_batch.bin");
            else snprintf(nm, sizeof nm, "data_batch_%d.bin", b);
            join_path(p, sizeof p, dir, nm);
            if (!is_file(p)) return nac_error(NAC_ERR_NOINPUT, "%s: no such file", p);
        }
        return NAC_OK;
    }
    return nac_error(NAC_ERR_INVALID, "unknown dataset \"%s\" (cifar10, fashion-mnist or mnist)", name);
}

nac_status nac_dataset_load_named(const char *name, const char *path, nac_split split,
                                  nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    bool nopath = !path || !path[0];
    if (!strcmp(name, "fashion-mnist"))
        return nac_dataset_load_fashion_mnist(nopath ? NAC_FASHION_MNIST_DIR : path, split, out);
    if (!strcmp(name, "mnist") || !strcmp(name, "cifar10")) {
        if (nopath) return nac_error(NAC_ERR_INVALID, "dataset %s needs a path", name);
        return !strcmp(name, "mnist") ? nac_dataset_load_mnist(path, split, out)
                                      : nac_dataset_load_cifar10(path, split, out);
    }
    return nac_error(NAC_ERR_INVALID, "unknown dataset \"%s\" (cifar10, fashion-mnist or mnist)",
                     name);
}

static bool has_idx_files(const char *dir) {
    static const char *const names[] = {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte"};
    char p[1024];
    for (int i = 0; i < 2; i++)
        if (find_gz_or_plain(dir, names[i], p, sizeof p) == NAC_OK) return true;
    nac_clear_error();
    return false;
}

static bool contains_ci(const char *s, const char *sub) {
    size_t n = strlen(sub);
    for (; *s; s++)
        if (!strncasecmp(s, sub, n)) return true;
    return false;
}

nac_status nac_dataset_load_auto(const char *path, nac_split split, nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(path, &st) != 0) return nac_error(NAC_ERR_NOINPUT, "%s: no such file or folder", path);
    if (S_ISDIR(st.st_mode)) {
        char sub[1024];
        join_path(sub, sizeof sub, path, "cifar-10-batches-bin");
        if (cifar_dir_has_batches(path) || is_dir(sub))
            return nac_dataset_load_cifar10(path, split, out);
        if (has_idx_files(path))
            return contains_ci(path, "fashion") ? nac_dataset_load_fashion_mnist(path, split, out)
                                                : nac_dataset_load_mnist(path, split, out);
        return nac_error(NAC_ERR_DATA,
                         "%s: neither CIFAR-10 batches (data_batch_1.bin, test_batch.bin, "
                         "cifar-10-batches-bin/) nor IDX files (train-images-idx3-ubyte[.gz], "
                         "t10k-images-idx3-ubyte[.gz]) in this folder",
                         path);
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *at = strstr(base, "images-idx3");
    if (at) {
        char lp[1024];
        if (strlen(path) >= sizeof lp)
            return nac_error(NAC_ERR_INVALID, "%.200s...: path too long", path);
        copy_str(lp, sizeof lp, path);
        memcpy(lp + (at - path), "labels-idx1", 11);
        if (!is_file(lp))
            return nac_error(NAC_ERR_NOINPUT, "%s: its labels file %s is missing", path, lp);
        NAC_TRY(nac_dataset_load_idx(path, lp, 0, out));
        if (contains_ci(path, "fashion") && out->nclasses <= 10)
            set_names(out, nac_fashion_mnist_names, 10);
        return NAC_OK;
    }
    if (strstr(base, "labels-idx1"))
        return nac_error(NAC_ERR_DATA, "%s: a labels file; name the images file (images-idx3)",
                         path);
    size_t n = strlen(base);
    if (n > 4 && !strcmp(base + n - 4, ".bin")) return nac_dataset_load_cifar10_file(path, out);
    return nac_error(NAC_ERR_DATA,
                     "%s: not a dataset this program reads (a CIFAR-10 .bin batch, an IDX "
                     "*-images-idx3-ubyte[.gz] file, or a folder of them)",
                     path);
}

/* ---------------------------------------------------------------- synthetic */

static const char *const shape_names[6] = {"square", "disc",  "triangle",
                                           "ring",   "cross", "stripes"};

static bool in_shape(int shape, float dx, float dy, float s) {
    float ax = fabsf(dx), ay = fabsf(dy), r2 = dx * dx + dy * dy;
    switch (shape) {
    case 0: return ax <= s && ay <= s;
    case 1: return r2 <= s * s;
    case 2: return dy >= -s && dy <= s && ax <= (dy + s) * 0.5f;
    case 3: return r2 <= s * s && r2 >= 0.36f * s * s;
    case 4: return (ax <= 0.3f * s && ay <= s) || (ay <= 0.3f * s && ax <= s);
    default: return ax <= s && ay <= s && ((int)floorf((dy + s) / (0.4f * s)) % 2 == 0);
    }
}

/* The class colour: hues spread by the golden ratio, full saturation, bright. */
static void class_colour(int k, int nclasses, int c, float *col) {
    if (c == 1) {
        col[0] = 110.f + 145.f * (nclasses > 1 ? (float)k / (float)(nclasses - 1) : 1.f);
        return;
    }
    float hue = fmodf((float)k * 0.618034f, 1.f) * 6.f, s = 0.85f, v = 235.f;
    int i = (int)hue;
    float f = hue - (float)i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    float rgb[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    for (int ch = 0; ch < c; ch++) col[ch] = rgb[i % 6][ch % 3];
}

nac_status nac_dataset_synthetic(int n, int nclasses, int c, int h, int w, uint64_t seed,
                                 nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    if (n < 1 || nclasses < 1 || nclasses > NAC_DATASET_MAX_CLASSES || c < 1 || c > 4 || h < 4 ||
        w < 4 || h > 4096 || w > 4096 || (int64_t)n * c * h * w > ((int64_t)1 << 34))
        return nac_error(NAC_ERR_INVALID,
                         "synthetic dataset: n %d, classes %d, shape %dx%dx%d out of range "
                         "(n >= 1, 1..%d classes, 1..4 channels, 4..4096 pixels a side)",
                         n, nclasses, c, h, w, NAC_DATASET_MAX_CLASSES);
    NAC_TRY(ds_alloc(out, n, c, h, w));
    size_t hw = (size_t)h * w;
    for (int i = 0; i < n; i++) {
        nac_rng_t r;
        nac_rng_init(&r, nac_rng_key(seed, NAC_STREAM_SYNTH, (uint64_t)i, 0));
        int k = i % nclasses, shape = k % 6;
        float col[4], bg[4];
        class_colour(k, nclasses, c, col);
        for (int ch = 0; ch < c; ch++) bg[ch] = 60.f * nac_rng_uniformf(&r);
        float m = (float)(h < w ? h : w);
        float s = (0.22f + 0.14f * nac_rng_uniformf(&r)) * m;
        float cx = 0.5f * w + (nac_rng_uniformf(&r) - 0.5f) * 0.25f * w;
        float cy = 0.5f * h + (nac_rng_uniformf(&r) - 0.5f) * 0.25f * h;
        uint8_t *img = out->pixels + (size_t)i * c * hw;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                bool in = in_shape(shape, (float)x + 0.5f - cx, (float)y + 0.5f - cy, s);
                for (int ch = 0; ch < c; ch++) {
                    float v = (in ? col[ch] : bg[ch]) + 24.f * (nac_rng_uniformf(&r) - 0.5f);
                    v = v < 0 ? 0 : v > 255 ? 255 : v;
                    img[ch * hw + (size_t)y * w + x] = (uint8_t)lrintf(v);
                }
            }
        out->labels[i] = k;
    }
    out->nclasses = nclasses;
    for (int k = 0; k < nclasses; k++)
        snprintf(out->class_names[k], NAC_DATASET_NAME_LEN, "%s-%d", shape_names[k % 6], k);
    copy_str(out->format, sizeof out->format, "synthetic");
    snprintf(out->source, sizeof out->source, "synthetic(n=%d, classes=%d, %dx%dx%d, seed=%llu)", n,
             nclasses, c, h, w, (unsigned long long)seed);
    return NAC_OK;
}

/* ---------------------------------------------------------------- subsets */

static void copy_meta(const nac_dataset_t *from, nac_dataset_t *to) {
    to->nclasses = from->nclasses;
    memcpy(to->class_names, from->class_names, sizeof to->class_names);
    memcpy(to->format, from->format, sizeof to->format);
    memcpy(to->source, from->source, sizeof to->source);
}

nac_status nac_dataset_select(const nac_dataset_t *ds, const int64_t *idx, int64_t n,
                              nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    if (n < 0 || n > INT_MAX / 8)
        return nac_error(NAC_ERR_INVALID, "select: %lld images", (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= ds->n)
            return nac_error(NAC_ERR_INVALID, "select: index %lld (position %lld) outside 0..%d",
                             (long long)idx[i], (long long)i, ds->n - 1);
    NAC_TRY(ds_alloc(out, n, ds->c, ds->h, ds->w));
    size_t img = (size_t)ds->c * ds->h * ds->w;
    for (int64_t i = 0; i < n; i++) {
        memcpy(out->pixels + (size_t)i * img, ds->pixels + (size_t)idx[i] * img, img);
        out->labels[i] = ds->labels[idx[i]];
    }
    copy_meta(ds, out);
    return NAC_OK;
}

nac_status nac_dataset_subset_per_class(const nac_dataset_t *ds, int per_class, uint64_t seed,
                                        nac_dataset_t *subset, nac_dataset_t *rest) {
    memset(subset, 0, sizeof *subset);
    if (rest) memset(rest, 0, sizeof *rest);
    if (per_class < 1)
        return nac_error(NAC_ERR_INVALID, "subset: %d images a class (need >= 1)", per_class);
    int64_t *counts = calloc((size_t)ds->nclasses, sizeof *counts);
    int64_t *order = malloc((size_t)(ds->n ? ds->n : 1) * sizeof *order);
    bool *chosen = calloc((size_t)(ds->n ? ds->n : 1), sizeof *chosen);
    int64_t *sel = malloc((size_t)(ds->n ? ds->n : 1) * sizeof *sel);
    nac_status st = NAC_OK;
    if (!counts || !order || !chosen || !sel)
        st = nac_error(NAC_ERR_NOMEM, "subset: out of memory");
    if (st == NAC_OK) {
        nac_dataset_histogram(ds, counts);
        for (int k = 0; k < ds->nclasses && st == NAC_OK; k++)
            if (counts[k] < per_class)
                st = nac_error(NAC_ERR_INVALID,
                               "subset: class %d (%s) of %s has %lld images, fewer than the %d "
                               "asked for",
                               k, ds->class_names[k], ds->source, (long long)counts[k], per_class);
    }
    for (int k = 0; k < ds->nclasses && st == NAC_OK; k++) {
        int64_t m = 0;
        for (int i = 0; i < ds->n; i++)
            if (ds->labels[i] == k) order[m++] = i;
        nac_rng_t r;
        nac_rng_init(&r, nac_rng_key(seed, NAC_STREAM_SPLIT, (uint64_t)k, 0));
        nac_rng_shuffle(&r, order, m);
        for (int64_t j = 0; j < per_class; j++) chosen[order[j]] = true;
    }
    if (st == NAC_OK) {
        int64_t m = 0;
        for (int i = 0; i < ds->n; i++)
            if (chosen[i]) sel[m++] = i;
        st = nac_dataset_select(ds, sel, m, subset);
        if (st == NAC_OK && rest) {
            m = 0;
            for (int i = 0; i < ds->n; i++)
                if (!chosen[i]) sel[m++] = i;
            st = nac_dataset_select(ds, sel, m, rest);
            if (st != NAC_OK) nac_dataset_free(subset);
        }
    }
    free(counts);
    free(order);
    free(chosen);
    free(sel);
    return st;
}

nac_status nac_dataset_concat(const nac_dataset_t *a, const nac_dataset_t *b, nac_dataset_t *out) {
    memset(out, 0, sizeof *out);
    if (a->c != b->c || a->h != b->h || a->w != b->w)
        return nac_error(NAC_ERR_INVALID, "concat: images of %dx%dx%d (%s) and %dx%dx%d (%s)", a->c,
                         a->h, a->w, a->source, b->c, b->h, b->w, b->source);
    if ((int64_t)a->n + b->n > INT_MAX / 8)
        return nac_error(NAC_ERR_INVALID, "concat: %d + %d images is too many", a->n, b->n);
    NAC_TRY(ds_alloc(out, (int64_t)a->n + b->n, a->c, a->h, a->w));
    size_t img = (size_t)a->c * a->h * a->w;
    memcpy(out->pixels, a->pixels, (size_t)a->n * img);
    memcpy(out->pixels + (size_t)a->n * img, b->pixels, (size_t)b->n * img);
    memcpy(out->labels, a->labels, (size_t)a->n * sizeof(int));
    memcpy(out->labels + a->n, b->labels, (size_t)b->n * sizeof(int));
    copy_meta(a, out);
    if (b->nclasses > a->nclasses) {
        out->nclasses = b->nclasses;
        for (int k = a->nclasses; k < b->nclasses; k++)
            memcpy(out->class_names[k], b->class_names[k], NAC_DATASET_NAME_LEN);
    }
    snprintf(out->source, sizeof out->source, "%.250s + %.250s", a->source, b->source);
    return NAC_OK;
}

void nac_dataset_histogram(const nac_dataset_t *ds, int64_t *counts) {
    for (int k = 0; k < ds->nclasses; k++) counts[k] = 0;
    for (int i = 0; i < ds->n; i++)
        if (ds->labels[i] >= 0 && ds->labels[i] < ds->nclasses) counts[ds->labels[i]]++;
}

void nac_dataset_channel_stats(const nac_dataset_t *ds, float *mean, float *std) {
    size_t hw = (size_t)ds->h * ds->w;
    for (int ch = 0; ch < ds->c; ch++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < ds->n; i++) {
            const uint8_t *p = nac_dataset_image(ds, i) + (size_t)ch * hw;
            uint64_t a = 0, a2 = 0;
            for (size_t j = 0; j < hw; j++) {
                a += p[j];
                a2 += (uint64_t)p[j] * p[j];
            }
            s += (double)a;
            s2 += (double)a2;
        }
        double cnt = (double)ds->n * (double)hw;
        double m = cnt > 0 ? s / cnt : 0, v = cnt > 0 ? s2 / cnt - m * m : 0;
        mean[ch] = (float)(m / 255.0);
        std[ch] = (float)(sqrt(v > 0 ? v : 0) / 255.0);
    }
}
