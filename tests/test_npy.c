/* NumPy .npy: the exact header NumPy writes (magic, version 1.0, dict text, 64-byte
 * alignment), bit-exact round trips for every dtype we export, and malformed files. */
#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/npy.h"
#include "testutil.h"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_dir, sizeof g_dir, "nac_npy_test");
}

static int teardown(void **state) {
    (void)state;
    tu_rm_tree(g_dir);
    return 0;
}

static const char *tpath(const char *name) { return tu_path(g_dir, name); }

/* Check the file's preamble and header against NumPy's format 1.0; return the header dict
 * text (without padding) and the data offset. */
static unsigned char *check_header(const char *path, const char *dict, size_t *data_off, size_t *n) {
    unsigned char *b;
    TU_OK(nac_read_file(path, &b, n));
    assert_true(*n >= 10);
    assert_memory_equal(b, "\x93NUMPY", 6);
    assert_int_equal(b[6], 1);
    assert_int_equal(b[7], 0);
    size_t hlen = b[8] | (size_t)b[9] << 8;
    assert_int_equal((10 + hlen) % 64, 0);
    size_t dl = strlen(dict);
    if (hlen < dl + 1 || memcmp(b + 10, dict, dl) != 0)
        fail_msg("header \"%.*s\" does not begin with \"%s\"", (int)hlen, b + 10, dict);
    for (size_t i = 10 + dl; i < 10 + hlen - 1; i++) assert_int_equal(b[i], ' ');
    assert_int_equal(b[10 + hlen - 1], '\n');
    *data_off = 10 + hlen;
    return b;
}

static bool dir_has_tmp(void) {
    DIR *d = opendir(g_dir);
    bool found = false;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) found = true;
    closedir(d);
    return found;
}

static void test_header_format_f32(void **state) {
    (void)state;
    float x[6] = {1, -2, 3.5f, -0.0f, 1e-40f, 6};
    const char *p = tpath("a.npy");
    TU_OK(nac_npy_write(p, NAC_DT_F32, 2, (int64_t[]){2, 3}, x));
    size_t off, n;
    unsigned char *b = check_header(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", &off, &n);
    /* NumPy's own np.save of a (2, 3) float32 array: header length 118, data at 128 */
    assert_int_equal(b[8], 118);
    assert_int_equal(b[9], 0);
    assert_int_equal(off, 128);
    assert_int_equal(n, 128 + sizeof x);
    assert_memory_equal(b + off, x, sizeof x);
    free(b);
    assert_false(dir_has_tmp());

    int nd;
    int64_t shape[NAC_ST_MAX_DIMS];
    float *y;
    TU_OK(nac_npy_read_f32(p, &nd, shape, &y));
    assert_int_equal(nd, 2);
    assert_int_equal(shape[0], 2);
    assert_int_equal(shape[1], 3);
    assert_memory_equal(y, x, sizeof x);
    free(y);
}

static void test_header_shapes_and_dtypes(void **state) {
    (void)state;
    size_t off, n;
    unsigned char *b;
    uint8_t u8[5] = {0, 1, 128, 254, 255};
    TU_OK(nac_npy_write(tpath("u8.npy"), NAC_DT_U8, 1, (int64_t[]){5}, u8));
    b = check_header(tpath("u8.npy"), "{'descr': '|u1', 'fortran_order': False, 'shape': (5,), }", &off, &n);
    assert_int_equal(n, off + 5);
    assert_memory_equal(b + off, u8, 5);
    free(b);

    int32_t i32[4] = {INT32_MIN, -1, 0, INT32_MAX};
    TU_OK(nac_npy_write(tpath("i4.npy"), NAC_DT_I32, 3, (int64_t[]){1, 2, 2}, i32));
    b = check_header(tpath("i4.npy"), "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 2, 2), }", &off, &n);
    assert_memory_equal(b + off, i32, sizeof i32);
    free(b);

    uint64_t codes[3] = {0, 0xdeadbeefcafef00dull, UINT64_MAX};
    TU_OK(nac_npy_write(tpath("u8b.npy"), NAC_DT_U64, 2, (int64_t[]){3, 1}, codes));
    b = check_header(tpath("u8b.npy"), "{'descr': '<u8', 'fortran_order': False, 'shape': (3, 1), }", &off, &n);
    assert_memory_equal(b + off, codes, sizeof codes);
    free(b);

    float s = 42.0f;
    TU_OK(nac_npy_write(tpath("scalar.npy"), NAC_DT_F32, 0, NULL, &s));
    b = check_header(tpath("scalar.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", &off, &n);
    assert_int_equal(n, off + 4);
    free(b);

    TU_OK(nac_npy_write(tpath("empty.npy"), NAC_DT_F64, 2, (int64_t[]){0, 7}, NULL));
    b = check_header(tpath("empty.npy"), "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 7), }", &off, &n);
    assert_int_equal(n, off);
    free(b);

    /* eight dimensions fit format 1.0 and stay 64-byte aligned */
    int64_t big[8] = {1, 1, 1, 1, 1, 1, 1, 1000000000000};
    assert_int_equal(nac_npy_write(tpath("rank8.npy"), NAC_DT_U8, 8, big, NULL), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "NULL data"));
    big[7] = 3;
    TU_OK(nac_npy_write(tpath("rank8.npy"), NAC_DT_U8, 8, big, u8));
    b = check_header(tpath("rank8.npy"), "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 3), }", &off, &n);
    free(b);

    assert_string_equal(nac_npy_descr(NAC_DT_F64), "<f8");
    assert_string_equal(nac_npy_descr(NAC_DT_BOOL), "|b1");
    assert_null(nac_npy_descr(NAC_DT_BF16));
    assert_int_equal(nac_npy_write(tpath("bf.npy"), NAC_DT_BF16, 1, (int64_t[]){1}, u8), NAC_ERR_INVALID);
    assert_int_equal(nac_npy_write(tpath("neg.npy"), NAC_DT_F32, 1, (int64_t[]){-1}, u8), NAC_ERR_INVALID);
    assert_false(dir_has_tmp());
}

static void test_roundtrip_load(void **state) {
    (void)state;
    uint64_t codes[6];
    for (int i = 0; i < 6; i++) codes[i] = 0x0123456789abcdefull * (uint64_t)(i + 1);
    const char *p = tpath("codes.npy");
    TU_OK(nac_npy_write(p, NAC_DT_U64, 2, (int64_t[]){3, 2}, codes));
    nac_npy a;
    TU_OK(nac_npy_load(p, &a));
    assert_int_equal(a.dtype, NAC_DT_U64);
    assert_int_equal(a.version, 1);
    assert_int_equal(a.ndim, 2);
    assert_int_equal(nac_npy_numel(&a), 6);
    assert_memory_equal(a.data, codes, sizeof codes);
    nac_npy_free(&a);
    nac_npy_free(NULL);

    /* float32 reading converts other dtypes */
    int32_t lab[3] = {7, -3, 0};
    TU_OK(nac_npy_write(p, NAC_DT_I32, 1, (int64_t[]){3}, lab));
    int nd;
    int64_t shape[NAC_ST_MAX_DIMS];
    float *y;
    TU_OK(nac_npy_read_f32(p, &nd, shape, &y));
    assert_int_equal(nd, 1);
    assert_true(y[0] == 7 && y[1] == -3 && y[2] == 0);
    free(y);

    /* a bigger random float32 matrix, bit-exact */
    int64_t m = 257, k = 33;
    float *x = malloc((size_t)(m * k) * sizeof *x);
    tu_randn(x, m * k, 5, 1.0f);
    TU_OK(nac_npy_write(p, NAC_DT_F32, 2, (int64_t[]){m, k}, x));
    TU_OK(nac_npy_read_f32(p, &nd, shape, &y));
    assert_true(nd == 2 && shape[0] == m && shape[1] == k);
    assert_memory_equal(y, x, (size_t)(m * k) * sizeof *x);
    free(x);
    free(y);
}

/* A hand-made file: preamble for `version`, header text padded to 64, then `ndata` bytes. */
static const char *make_npy(const char *name, int version, const char *dict, size_t ndata) {
    size_t pre = version == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64, hlen = total - pre;
    unsigned char *b = calloc(total + ndata + 1, 1);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)version;
    b[8] = (unsigned char)(hlen & 0xff);
    b[9] = (unsigned char)(hlen >> 8);
    memcpy(b + pre, dict, dl);
    memset(b + pre + dl, ' ', hlen - dl - 1);
    b[total - 1] = '\n';
    const char *p = tpath(name);
    tu_write_bytes(p, b, total + ndata);
    free(b);
    return p;
}

static void expect_bad(const char *path, nac_status want, const char *needle) {
    nac_npy a;
    nac_status s = nac_npy_load(path, &a);
    if (s != want)
        fail_msg("%s: status %s, want %s (%s)", path, nac_status_name(s), nac_status_name(want),
                 nac_last_error());
    assert_null(a.data);
    if (!strstr(nac_last_error(), needle)) fail_msg("message \"%s\" lacks \"%s\"", nac_last_error(), needle);
}

static void test_read_other_writers(void **state) {
    (void)state;
    /* key order, quotes and spacing may differ; version 2.0 has a 4-byte length */
    const char *p = make_npy("v2.npy", 2, "{\"shape\": (2,), 'fortran_order': False, 'descr': '<f8'}", 16);
    nac_npy a;
    TU_OK(nac_npy_load(p, &a));
    assert_int_equal(a.version, 2);
    assert_int_equal(a.dtype, NAC_DT_F64);
    assert_int_equal(a.shape[0], 2);
    nac_npy_free(&a);
    p = make_npy("eq.npy", 1, "{'descr':'=i8','fortran_order':False,'shape':(1,1,)}", 8);
    TU_OK(nac_npy_load(p, &a));
    assert_int_equal(a.dtype, NAC_DT_I64);
    nac_npy_free(&a);
}

static void test_bad_files(void **state) {
    (void)state;
    expect_bad(tpath("nothing.npy"), NAC_ERR_NOINPUT, "no such file");
    const char *p = tpath("magic.npy");
    tu_write_bytes(p, "\x93NUMPX\x01\x00\x10\x00{}", 12);
    expect_bad(p, NAC_ERR_DATA, "not a .npy file");
    expect_bad(make_npy("ver.npy", 4, "{}", 0), NAC_ERR_DATA, "unsupported .npy format version 4.0");
    const char *ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    expect_bad(make_npy("short.npy", 1, ok, 20), NAC_ERR_DATA,
               ".npy data is 20 bytes but F32 shape needs 24 (file truncated)");
    expect_bad(make_npy("long.npy", 1, ok, 28), NAC_ERR_DATA, "(trailing bytes)");
    expect_bad(make_npy("fortran.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24),
               NAC_ERR_DATA, "Fortran-ordered");
    expect_bad(make_npy("be.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24),
               NAC_ERR_DATA, "unsupported .npy dtype '>f4'");
    expect_bad(make_npy("obj.npy", 1, "{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }", 24),
               NAC_ERR_DATA, "unsupported .npy dtype '|O'");
    expect_bad(make_npy("key.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 24),
               NAC_ERR_DATA, "unknown key 'x'");
    expect_bad(make_npy("noshape.npy", 1, "{'descr': '<f4', 'fortran_order': False}", 24), NAC_ERR_DATA,
               "missing 'shape'");
    expect_bad(make_npy("negshape.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3)}", 24),
               NAC_ERR_DATA, "shape element is not a non-negative integer");
    expect_bad(make_npy("notdict.npy", 1, "['descr']", 0), NAC_ERR_DATA, "the header is not a dict");
    /* header length beyond the file */
    p = tpath("hlen.npy");
    tu_write_bytes(p, "\x93NUMPY\x01\x00\xff\x7f{}", 12);
    expect_bad(p, NAC_ERR_DATA, "header length 32767 runs past the end of the file");
}

/* Issue 15: a zero dimension must not hide an element count that overflows int64
 * ((2^62, 2, 0) has 0 bytes, but 2^63 non-zero elements: UB in nac_npy_numel). */
static void test_bad_shape_overflow(void **state) {
    (void)state;
    expect_bad(make_npy("zero_ovf.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (4611686018427387904, 2, 0), }", 0),
               NAC_ERR_DATA, "shape overflows 64 bits");
    expect_bad(make_npy("ovf.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 8),
               NAC_ERR_DATA, "shape overflows 64 bits");
    /* a legitimately empty array with large but representable dimensions loads */
    nac_npy a;
    TU_OK(nac_npy_load(make_npy("empty.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1099511627776, 0), }", 0), &a));
    assert_int_equal(nac_npy_numel(&a), 0);
    nac_npy_free(&a);
    /* the parser from memory (the fuzz target's entry point) says the same */
    assert_int_equal(nac_npy_parse("mem.npy", "\x93NUMPX", 6, &a), NAC_ERR_DATA);
    assert_non_null(strstr(nac_last_error(), "mem.npy: not a .npy file"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_format_f32),
        cmocka_unit_test(test_header_shapes_and_dtypes),
        cmocka_unit_test(test_roundtrip_load),
        cmocka_unit_test(test_read_other_writers),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_bad_shape_overflow),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
