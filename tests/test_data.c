/* Datasets: CIFAR-10 and IDX files (plain and gzipped) written into a temporary folder and
 * read back exactly; every kind of bad file rejected with its own message; the real
 * Fashion-MNIST when installed; synthetic data, subsets, concatenation; PNG round trips;
 * the `nac data` command. */
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "app/app.h"
#include "data/dataset.h"
#include "data/png.h"
#include "tests/testutil.h"

static char g_dir[256];

static int setup(void **state) {
    (void)state;
    return tu_mkdtemp(g_dir, sizeof g_dir, "nac_test_data");
}

static int teardown(void **state) {
    (void)state;
    return tu_rm_tree(g_dir);
}

static const char *tpath(const char *name) { return tu_path(g_dir, name); }

static void write_gz(const char *path, const uint8_t *b, size_t n) {
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, b, (unsigned)n), (int)n);
    assert_int_equal(gzclose(g), Z_OK);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* The call failed with status `want`, a message containing `what` (and the file name
 * `file` when given), and left the dataset empty. */
static void expect_fail(nac_status got, nac_status want, const char *what, const char *file,
                        const nac_dataset_t *ds) {
    const char *msg = nac_last_error();
    if (got != want) fail_msg("status %d, want %d (%s)", got, want, msg);
    if (!strstr(msg, what)) fail_msg("message \"%s\" lacks \"%s\"", msg, what);
    if (file && !strstr(msg, file)) fail_msg("message \"%s\" lacks the file \"%s\"", msg, file);
    assert_int_equal(ds->n, 0);
    assert_null(ds->pixels);
    assert_null(ds->labels);
}

/* ------------------------------------------------------------------ CIFAR-10 */

static uint8_t cifar_pix(int file, int rec, int j) {
    return (uint8_t)(rec * 7 + file * 13 + j * 3);
}
static int cifar_label(int file, int rec) { return (file + 2 * rec) % 10; }

/* file 0..4: data_batch_1..5, 5: test_batch; 3 records each. */
static void write_cifar_file(const char *path, int file, int nrec) {
    uint8_t *b = malloc((size_t)nrec * 3073);
    for (int r = 0; r < nrec; r++) {
        b[r * 3073] = (uint8_t)cifar_label(file, r);
        for (int j = 0; j < 3072; j++) b[r * 3073 + 1 + j] = cifar_pix(file, r, j);
    }
    tu_write_bytes(path, b, (size_t)nrec * 3073);
    free(b);
}

static void make_cifar_dir(const char *dir) {
    mkdir(dir, 0755);
    char p[600];
    for (int f = 0; f < 6; f++) {
        char name[64];
        if (f < 5)
            snprintf(name, sizeof name, "data_batch_%d.bin", f + 1);
        else
            snprintf(name, sizeof name, "test_batch.bin");
        snprintf(p, sizeof p, "%s/%s", dir, name);
        write_cifar_file(p, f, 3);
    }
    snprintf(p, sizeof p, "%s/batches.meta.txt", dir);
    const char *meta = "c0\nc1\nc2\nc3\nc4\nc5\nc6\nc7\nc8\nc9\n\n";
    tu_write_bytes(p, (const uint8_t *)meta, strlen(meta));
}

static void check_cifar_records(const nac_dataset_t *ds, int first_file, int nfiles) {
    assert_int_equal(ds->n, nfiles * 3);
    assert_int_equal(ds->c, 3);
    assert_int_equal(ds->h, 32);
    assert_int_equal(ds->w, 32);
    for (int f = 0; f < nfiles; f++)
        for (int r = 0; r < 3; r++) {
            int i = f * 3 + r;
            assert_int_equal(ds->labels[i], cifar_label(first_file + f, r));
            const uint8_t *img = nac_dataset_image(ds, i);
            for (int j = 0; j < 3072; j++)
                if (img[j] != cifar_pix(first_file + f, r, j))
                    fail_msg("image %d byte %d: %d, want %d", i, j, img[j],
                             cifar_pix(first_file + f, r, j));
        }
}

static void test_cifar_roundtrip(void **state) {
    (void)state;
    char root[600], dir[700];
    snprintf(root, sizeof root, "%s/cifar", g_dir);
    mkdir(root, 0755);
    snprintf(dir, sizeof dir, "%s/cifar-10-batches-bin", root);
    make_cifar_dir(dir);
    nac_dataset_t ds;
    TU_OK(nac_dataset_load_cifar10(dir, NAC_SPLIT_TRAIN, &ds));
    check_cifar_records(&ds, 0, 5);
    assert_int_equal(ds.nclasses, 10);
    assert_string_equal(ds.class_names[3], "c3");
    assert_string_equal(ds.format, "cifar10");
    nac_dataset_free(&ds);
    assert_null(ds.pixels);
    TU_OK(nac_dataset_load_cifar10(dir, NAC_SPLIT_TEST, &ds));
    check_cifar_records(&ds, 5, 1);
    nac_dataset_free(&ds);
    /* the parent folder works too; BOTH = train then test */
    TU_OK(nac_dataset_load_cifar10(root, NAC_SPLIT_BOTH, &ds));
    check_cifar_records(&ds, 0, 6);
    nac_dataset_free(&ds);
    TU_OK(nac_dataset_load_auto(dir, NAC_SPLIT_TRAIN, &ds));
    check_cifar_records(&ds, 0, 5);
    nac_dataset_free(&ds);
    char one[800];
    snprintf(one, sizeof one, "%s/test_batch.bin", dir);
    TU_OK(nac_dataset_load_auto(one, NAC_SPLIT_TRAIN, &ds));
    check_cifar_records(&ds, 5, 1);
    nac_dataset_free(&ds);
    /* without batches.meta.txt: the standard names */
    snprintf(one, sizeof one, "%s/batches.meta.txt", dir);
    unlink(one);
    TU_OK(nac_dataset_load_cifar10(dir, NAC_SPLIT_TEST, &ds));
    assert_string_equal(ds.class_names[0], "airplane");
    assert_string_equal(ds.class_names[9], "truck");
    nac_dataset_free(&ds);
}

static void test_cifar_bad(void **state) {
    (void)state;
    char dir[600], p[700];
    snprintf(dir, sizeof dir, "%s/cifar_bad", g_dir);
    make_cifar_dir(dir);
    nac_dataset_t ds;
    expect_fail(nac_dataset_load_cifar10(tpath("nowhere"), NAC_SPLIT_TRAIN, &ds), NAC_ERR_NOINPUT,
                "no such folder", "nowhere", &ds);
    /* a missing batch */
    snprintf(p, sizeof p, "%s/data_batch_3.bin", dir);
    unlink(p);
    expect_fail(nac_dataset_load_cifar10(dir, NAC_SPLIT_TRAIN, &ds), NAC_ERR_NOINPUT,
                "no such file", "data_batch_3.bin", &ds);
    TU_OK(nac_dataset_load_cifar10(dir, NAC_SPLIT_TEST, &ds)); /* the test split is intact */
    nac_dataset_free(&ds);
    write_cifar_file(p, 2, 3);
    /* a truncated record */
    size_t n;
    uint8_t *b = read_bytes(p, &n);
    tu_write_bytes(p, b, n - 100);
    expect_fail(nac_dataset_load_cifar10(dir, NAC_SPLIT_TRAIN, &ds), NAC_ERR_DATA,
                "record 2 is truncated", "data_batch_3.bin", &ds);
    /* a label out of range */
    b[3073] = 10;
    tu_write_bytes(p, b, n);
    expect_fail(nac_dataset_load_cifar10(dir, NAC_SPLIT_TRAIN, &ds), NAC_ERR_DATA,
                "record 1 has label 10", "data_batch_3.bin", &ds);
    free(b);
    tu_write_bytes(p, (const uint8_t *)"", 0);
    expect_fail(nac_dataset_load_cifar10(dir, NAC_SPLIT_TRAIN, &ds), NAC_ERR_DATA, "empty file",
                "data_batch_3.bin", &ds);
    write_cifar_file(p, 2, 3);
    /* nine class names */
    snprintf(p, sizeof p, "%s/batches.meta.txt", dir);
    tu_write_bytes(p, (const uint8_t *)"a\nb\nc\nd\ne\nf\ng\nh\ni\n", 18);
    expect_fail(nac_dataset_load_cifar10(dir, NAC_SPLIT_TRAIN, &ds), NAC_ERR_DATA,
                "9 class names, expected 10", "batches.meta.txt", &ds);
    /* class names are printed: not UTF-8, or with escape sequences, is refused (issue 15) */
    tu_write_bytes(p, (const uint8_t *)"a\nb\x1b[2J\nc\nd\ne\nf\ng\nh\ni\nj\n", 24);
    expect_fail(nac_dataset_load_cifar10(dir, NAC_SPLIT_TRAIN, &ds), NAC_ERR_DATA,
                "line 2 is not UTF-8 text without control characters", "batches.meta.txt", &ds);
    tu_write_bytes(p, (const uint8_t *)"a\nb\nc\xe9\nd\ne\nf\ng\nh\ni\nj\n", 21);
    expect_fail(nac_dataset_load_cifar10(dir, NAC_SPLIT_TRAIN, &ds), NAC_ERR_DATA,
                "line 3 is not UTF-8 text", "batches.meta.txt", &ds);
}

/* ------------------------------------------------------------------ IDX */

static size_t idx_images(uint8_t *b, int n, int h, int w, int salt) {
    uint32_t d[4] = {0x803, (uint32_t)n, (uint32_t)h, (uint32_t)w};
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 4; k++) b[4 * i + k] = (uint8_t)(d[i] >> (24 - 8 * k));
    for (int i = 0; i < n * h * w; i++) b[16 + i] = (uint8_t)(i * 31 + salt);
    return 16 + (size_t)n * h * w;
}

static size_t idx_labels(uint8_t *b, int n, int salt) {
    uint32_t d[2] = {0x801, (uint32_t)n};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) b[4 * i + k] = (uint8_t)(d[i] >> (24 - 8 * k));
    for (int i = 0; i < n; i++) b[8 + i] = (uint8_t)((i * 3 + salt) % 10);
    return 8 + (size_t)n;
}

static void check_idx(const nac_dataset_t *ds, int n, int h, int w, int salt) {
    assert_int_equal(ds->n, n);
    assert_int_equal(ds->c, 1);
    assert_int_equal(ds->h, h);
    assert_int_equal(ds->w, w);
    for (int i = 0; i < n * h * w; i++) assert_int_equal(ds->pixels[i], (uint8_t)(i * 31 + salt));
    for (int i = 0; i < n; i++) assert_int_equal(ds->labels[i], (i * 3 + salt) % 10);
}

static void test_idx_roundtrip(void **state) {
    (void)state;
    uint8_t img[16 + 7 * 5 * 4], lab[8 + 7];
    size_t ni = idx_images(img, 7, 5, 4, 0), nl = idx_labels(lab, 7, 0);
    nac_dataset_t ds;
    tu_write_bytes(tpath("a-images"), img, ni);
    tu_write_bytes(tpath("a-labels"), lab, nl);
    TU_OK(nac_dataset_load_idx(tpath("a-images"), tpath("a-labels"), 0, &ds));
    check_idx(&ds, 7, 5, 4, 0);
    assert_int_equal(ds.nclasses, 10); /* labels 0..9 appear: max + 1 */
    assert_string_equal(ds.class_names[4], "4");
    nac_dataset_free(&ds);
    write_gz(tpath("a-images.gz"), img, ni);
    write_gz(tpath("a-labels.gz"), lab, nl);
    TU_OK(nac_dataset_load_idx(tpath("a-images.gz"), tpath("a-labels.gz"), 10, &ds));
    check_idx(&ds, 7, 5, 4, 0);
    nac_dataset_free(&ds);

    /* a (Fashion-)MNIST folder: train gzipped, test plain */
    char dir[600];
    snprintf(dir, sizeof dir, "%s/fashion", g_dir);
    mkdir(dir, 0755);
    uint8_t timg[16 + 3 * 5 * 4], tlab[8 + 3];
    size_t tni = idx_images(timg, 3, 5, 4, 9), tnl = idx_labels(tlab, 3, 9);
    write_gz(tpath("fashion/train-images-idx3-ubyte.gz"), img, ni);
    write_gz(tpath("fashion/train-labels-idx1-ubyte.gz"), lab, nl);
    tu_write_bytes(tpath("fashion/t10k-images-idx3-ubyte"), timg, tni);
    tu_write_bytes(tpath("fashion/t10k-labels-idx1-ubyte"), tlab, tnl);
    TU_OK(nac_dataset_load_fashion_mnist(dir, NAC_SPLIT_TRAIN, &ds));
    check_idx(&ds, 7, 5, 4, 0);
    assert_string_equal(ds.class_names[9], "Ankle boot");
    nac_dataset_free(&ds);
    TU_OK(nac_dataset_load_fashion_mnist(dir, NAC_SPLIT_TEST, &ds));
    check_idx(&ds, 3, 5, 4, 9);
    nac_dataset_free(&ds);
    TU_OK(nac_dataset_load_auto(dir, NAC_SPLIT_BOTH, &ds)); /* "fashion" in the path */
    assert_int_equal(ds.n, 10);
    assert_string_equal(ds.class_names[0], "T-shirt/top");
    assert_memory_equal(ds.pixels, img + 16, 7 * 20);
    assert_memory_equal(ds.pixels + 7 * 20, timg + 16, 3 * 20);
    assert_int_equal(ds.labels[7], tlab[8]);
    nac_dataset_free(&ds);
    TU_OK(nac_dataset_load_mnist(dir, NAC_SPLIT_TRAIN, &ds));
    assert_string_equal(ds.class_names[3], "3");
    nac_dataset_free(&ds);
    TU_OK(nac_dataset_load_auto(tpath("fashion/t10k-images-idx3-ubyte"), NAC_SPLIT_TRAIN, &ds));
    check_idx(&ds, 3, 5, 4, 9);
    nac_dataset_free(&ds);
    /* a multi-member gzip stream (cat a.gz b.gz) reads as one */
    gzFile g = gzopen(tpath("m.gz"), "wb");
    assert_int_equal(gzwrite(g, img, 20), 20);
    gzclose(g);
    size_t n1, n2;
    uint8_t *m1 = read_bytes(tpath("m.gz"), &n1);
    write_gz(tpath("m2.gz"), img + 20, (unsigned)(ni - 20));
    uint8_t *m2 = read_bytes(tpath("m2.gz"), &n2);
    uint8_t *cat = malloc(n1 + n2);
    memcpy(cat, m1, n1);
    memcpy(cat + n1, m2, n2);
    tu_write_bytes(tpath("m.gz"), cat, n1 + n2);
    TU_OK(nac_dataset_load_idx(tpath("m.gz"), tpath("a-labels"), 10, &ds));
    check_idx(&ds, 7, 5, 4, 0);
    nac_dataset_free(&ds);
    free(m1);
    free(m2);
    free(cat);
}

static void test_idx_bad(void **state) {
    (void)state;
    uint8_t img[16 + 7 * 5 * 4 + 8], lab[8 + 7];
    size_t ni = idx_images(img, 7, 5, 4, 0), nl = idx_labels(lab, 7, 0);
    const char *ip = tpath("b-images"), *lp = tpath("b-labels");
    nac_dataset_t ds;
    tu_write_bytes(lp, lab, nl);
    expect_fail(nac_dataset_load_idx(ip, lp, 10, &ds), NAC_ERR_NOINPUT, "no such file", "b-images",
                &ds);
    /* wrong magic: the labels file given as images */
    expect_fail(nac_dataset_load_idx(lp, lp, 10, &ds), NAC_ERR_DATA,
                "bad magic 0x00000801, expected 0x00000803", "b-labels", &ds);
    img[2] = 0x0D; /* float data */
    tu_write_bytes(ip, img, ni);
    expect_fail(nac_dataset_load_idx(ip, lp, 10, &ds), NAC_ERR_DATA, "bad magic 0x00000d03",
                "b-images", &ds);
    img[2] = 0x08;
    /* truncated payload, and extra bytes */
    tu_write_bytes(ip, img, ni - 3);
    expect_fail(nac_dataset_load_idx(ip, lp, 10, &ds), NAC_ERR_DATA,
                "7 images of 5x4 (156 bytes) but the file holds 153 bytes: truncated", "b-images",
                &ds);
    tu_write_bytes(ip, img, 10);
    expect_fail(nac_dataset_load_idx(ip, lp, 10, &ds), NAC_ERR_DATA, "truncated IDX header",
                "b-images", &ds);
    tu_write_bytes(ip, img, ni + 8);
    expect_fail(nac_dataset_load_idx(ip, lp, 10, &ds), NAC_ERR_DATA,
                "the dimensions do not match the file size", "b-images", &ds);
    tu_write_bytes(ip, img, ni);
    /* a label out of range */
    lab[8 + 5] = 12;
    tu_write_bytes(lp, lab, nl);
    expect_fail(nac_dataset_load_idx(ip, lp, 10, &ds), NAC_ERR_DATA,
                "label 12 of item 5 is outside 0..9", "b-labels", &ds);
    lab[8 + 5] = 1;
    /* counts that disagree */
    uint8_t lab6[8 + 6];
    tu_write_bytes(lp, lab6, idx_labels(lab6, 6, 0));
    expect_fail(nac_dataset_load_idx(ip, lp, 10, &ds), NAC_ERR_DATA, "holds 6 labels but",
                "b-images", &ds);
    tu_write_bytes(lp, lab, nl);
    /* a corrupt gzip stream, and a truncated one */
    const char *gp = tpath("b-images.gz");
    write_gz(gp, img, ni);
    size_t gn;
    uint8_t *gz = read_bytes(gp, &gn);
    gz[gn - 6] ^= 0xFF; /* the CRC-32 */
    tu_write_bytes(gp, gz, gn);
    expect_fail(nac_dataset_load_idx(gp, lp, 10, &ds), NAC_ERR_DATA, "corrupt gzip stream",
                "b-images.gz", &ds);
    gz[gn - 6] ^= 0xFF;
    for (size_t k = 12; k < gn - 8; k++) gz[k] = 0xFF; /* the deflate data */
    tu_write_bytes(gp, gz, gn);
    expect_fail(nac_dataset_load_idx(gp, lp, 10, &ds), NAC_ERR_DATA, "corrupt gzip stream",
                "b-images.gz", &ds);
    free(gz);
    write_gz(gp, img, ni);
    gz = read_bytes(gp, &gn);
    tu_write_bytes(gp, gz, gn - 12);
    expect_fail(nac_dataset_load_idx(gp, lp, 10, &ds), NAC_ERR_DATA, "truncated gzip stream",
                "b-images.gz", &ds);
    free(gz);
    /* folders and files that are not datasets */
    char dir[600];
    snprintf(dir, sizeof dir, "%s/empty", g_dir);
    mkdir(dir, 0755);
    expect_fail(nac_dataset_load_auto(dir, NAC_SPLIT_TRAIN, &ds), NAC_ERR_DATA,
                "neither CIFAR-10 batches", "empty", &ds);
    expect_fail(nac_dataset_load_fashion_mnist(dir, NAC_SPLIT_TRAIN, &ds), NAC_ERR_NOINPUT,
                "neither train-images-idx3-ubyte.gz nor train-images-idx3-ubyte", "empty", &ds);
    expect_fail(nac_dataset_load_auto(tpath("none"), NAC_SPLIT_TRAIN, &ds), NAC_ERR_NOINPUT,
                "no such file or folder", "none", &ds);
    expect_fail(nac_dataset_load_auto(lp, NAC_SPLIT_TRAIN, &ds), NAC_ERR_DATA,
                "not a dataset this program reads", "b-labels", &ds);
    expect_fail(nac_dataset_load_named("imagenet", NULL, NAC_SPLIT_TRAIN, &ds), NAC_ERR_INVALID,
                "unknown dataset \"imagenet\"", NULL, &ds);
}

/* Hostile IDX headers (issue 15): sizes whose product wraps, images larger than
 * NAC_DATASET_MAX_SIDE, and gzip streams that hold more or less than their header says.
 * Each is refused with a message naming the file, without a huge allocation. */
static void put_be32(uint8_t *b, uint32_t v) {
    for (int k = 0; k < 4; k++) b[k] = (uint8_t)(v >> (24 - 8 * k));
}

static void test_idx_hostile(void **state) {
    (void)state;
    nac_dataset_t ds;
    uint8_t lab[8 + 1024];
    memset(lab, 0, sizeof lab);
    put_be32(lab, 0x801);
    put_be32(lab + 4, 1024);
    const char *lp = tpath("h-labels"), *ip = tpath("h-images");
    tu_write_bytes(lp, lab, sizeof lab);
    /* 1024 x 2^27 x 2^27 wraps to 0 in 64 bits: the header "matched" a 16-byte file */
    uint8_t hdr[16];
    put_be32(hdr, 0x803);
    put_be32(hdr + 4, 1024);
    put_be32(hdr + 8, 1u << 27);
    put_be32(hdr + 12, 1u << 27);
    tu_write_bytes(ip, hdr, sizeof hdr);
    expect_fail(nac_dataset_load_idx(ip, lp, 10, &ds), NAC_ERR_DATA, "dimension 1 is 134217728",
                "h-images", &ds);
    /* one 2048x2048 image in a small .gz: refused from its header, before inflating */
    uint8_t *big = calloc(1, 16 + 2048 * 2048);
    assert_non_null(big);
    put_be32(big, 0x803);
    put_be32(big + 4, 1);
    put_be32(big + 8, 2048);
    put_be32(big + 12, 2048);
    const char *gp = tpath("h-images.gz");
    write_gz(gp, big, 16 + 2048 * 2048);
    put_be32(lab + 4, 1);
    tu_write_bytes(lp, lab, 9);
    expect_fail(nac_dataset_load_idx(gp, lp, 10, &ds), NAC_ERR_DATA, "dimension 1 is 2048",
                "h-images.gz", &ds);
    /* a header of 1x1000x1000 followed by 4 MB: inflating stops at the declared size */
    put_be32(big + 8, 1000);
    put_be32(big + 12, 1000);
    write_gz(gp, big, 16 + 2048 * 2048);
    expect_fail(nac_dataset_load_idx(gp, lp, 10, &ds), NAC_ERR_DATA,
                "inflates to more than 1000016 bytes", "h-images.gz", &ds);
    /* ... and the same header with only 10 bytes of pixels is truncated */
    write_gz(gp, big, 26);
    expect_fail(nac_dataset_load_idx(gp, lp, 10, &ds), NAC_ERR_DATA,
                "1 images of 1000x1000 (1000016 bytes) but the file holds 26 bytes: truncated",
                "h-images.gz", &ds);
    /* the exact size loads */
    write_gz(gp, big, 16 + 1000 * 1000);
    TU_OK(nac_dataset_load_idx(gp, lp, 10, &ds));
    assert_int_equal(ds.h, 1000);
    nac_dataset_free(&ds);
    free(big);
}

/* The parsers from memory (the fuzz targets' entry points) say what the file ones say. */
static void test_parse_mem(void **state) {
    (void)state;
    nac_dataset_t ds;
    uint8_t img[16 + 7 * 5 * 4], lab[8 + 7];
    size_t ni = idx_images(img, 7, 5, 4, 0), nl = idx_labels(lab, 7, 0);
    TU_OK(nac_dataset_parse_idx("mem-images", img, ni, "mem-labels", lab, nl, 10, &ds));
    check_idx(&ds, 7, 5, 4, 0);
    nac_dataset_free(&ds);
    expect_fail(nac_dataset_parse_idx("mem-images", img, 3, "mem-labels", lab, nl, 10, &ds),
                NAC_ERR_DATA, "too short for an IDX header", "mem-images", &ds);
    expect_fail(nac_dataset_parse_cifar10("mem.bin", lab, 9, &ds), NAC_ERR_DATA,
                "not a whole number of 3073-byte records", "mem.bin", &ds);
}

static void test_fashion_mnist_installed(void **state) {
    (void)state;
    struct stat st;
    if (stat(NAC_FASHION_MNIST_DIR, &st) != 0) {
        printf("skipping: %s is not installed (Debian package dataset-fashion-mnist)\n",
               NAC_FASHION_MNIST_DIR);
        skip();
    }
    nac_dataset_t ds;
    int64_t counts[10];
    TU_OK(nac_dataset_load_named("fashion-mnist", NULL, NAC_SPLIT_TRAIN, &ds));
    assert_int_equal(ds.n, 60000);
    assert_int_equal(ds.c, 1);
    assert_int_equal(ds.h, 28);
    assert_int_equal(ds.w, 28);
    assert_int_equal(ds.nclasses, 10);
    nac_dataset_histogram(&ds, counts);
    for (int k = 0; k < 10; k++) assert_int_equal(counts[k], 6000);
    float mean, std;
    nac_dataset_channel_stats(&ds, &mean, &std);
    assert_true(fabsf(mean - 0.2860f) < 1e-3f && fabsf(std - 0.3530f) < 1e-3f);
    nac_dataset_free(&ds);
    TU_OK(nac_dataset_load_fashion_mnist(NAC_FASHION_MNIST_DIR, NAC_SPLIT_TEST, &ds));
    assert_int_equal(ds.n, 10000);
    nac_dataset_histogram(&ds, counts);
    for (int k = 0; k < 10; k++) assert_int_equal(counts[k], 1000);
    nac_dataset_free(&ds);
}

/* ------------------------------------------------------------------ synthetic, subsets */

static void test_synthetic(void **state) {
    (void)state;
    nac_dataset_t a, b, c;
    TU_OK(nac_dataset_synthetic(400, 10, 3, 16, 16, 5, &a));
    TU_OK(nac_dataset_synthetic(400, 10, 3, 16, 16, 5, &b));
    TU_OK(nac_dataset_synthetic(400, 10, 3, 16, 16, 6, &c));
    assert_memory_equal(a.pixels, b.pixels, 400 * 768);
    assert_true(memcmp(a.pixels, c.pixels, 400 * 768) != 0);
    for (int i = 0; i < 400; i++) assert_int_equal(a.labels[i], i % 10);
    /* class-dependent: nearest class mean (from the first half) classifies the second half */
    static double mean[10][768];
    memset(mean, 0, sizeof mean);
    for (int i = 0; i < 200; i++)
        for (int j = 0; j < 768; j++) mean[a.labels[i]][j] += nac_dataset_image(&a, i)[j] / 20.0;
    int right = 0;
    for (int i = 200; i < 400; i++) {
        int best = -1;
        double bd = 1e300;
        for (int k = 0; k < 10; k++) {
            double d = 0;
            for (int j = 0; j < 768; j++) {
                double e = nac_dataset_image(&a, i)[j] - mean[k][j];
                d += e * e;
            }
            if (d < bd) bd = d, best = k;
        }
        right += best == a.labels[i];
    }
    assert_true(right > 150); /* chance is 20 */
    nac_dataset_free(&a);
    nac_dataset_free(&b);
    nac_dataset_free(&c);
    TU_OK(nac_dataset_synthetic(20, 4, 1, 8, 8, 1, &a));
    assert_int_equal(a.c, 1);
    nac_dataset_free(&a);
    expect_fail(nac_dataset_synthetic(10, 0, 3, 8, 8, 1, &a), NAC_ERR_INVALID, "out of range", NULL,
                &a);
}

static void test_subset_concat_stats(void **state) {
    (void)state;
    nac_dataset_t ds, sub, rest, sub2, rest2, cat;
    TU_OK(nac_dataset_synthetic(300, 10, 1, 8, 8, 3, &ds));
    for (int i = 0; i < 300; i++) { /* stamp each image with its index */
        ds.pixels[i * 64] = (uint8_t)(i & 255);
        ds.pixels[i * 64 + 1] = (uint8_t)(i >> 8);
    }
    TU_OK(nac_dataset_subset_per_class(&ds, 12, 7, &sub, &rest));
    assert_int_equal(sub.n, 120);
    assert_int_equal(rest.n, 180);
    int64_t counts[10];
    nac_dataset_histogram(&sub, counts);
    for (int k = 0; k < 10; k++) assert_int_equal(counts[k], 12);
    nac_dataset_histogram(&rest, counts);
    for (int k = 0; k < 10; k++) assert_int_equal(counts[k], 18);
    int seen[300] = {0}, prev = -1;
    for (int i = 0; i < sub.n; i++) {
        int id = sub.pixels[i * 64] | sub.pixels[i * 64 + 1] << 8;
        assert_true(id > prev); /* dataset order */
        prev = id;
        seen[id]++;
        assert_int_equal(sub.labels[i], ds.labels[id]);
        assert_memory_equal(sub.pixels + i * 64, ds.pixels + id * 64, 64);
    }
    prev = -1;
    for (int i = 0; i < rest.n; i++) {
        int id = rest.pixels[i * 64] | rest.pixels[i * 64 + 1] << 8;
        assert_true(id > prev);
        prev = id;
        seen[id]++;
    }
    for (int i = 0; i < 300; i++) assert_int_equal(seen[i], 1); /* a partition */
    /* the seed decides: same seed same subset, another seed another */
    TU_OK(nac_dataset_subset_per_class(&ds, 12, 7, &sub2, NULL));
    assert_memory_equal(sub.pixels, sub2.pixels, 120 * 64);
    nac_dataset_free(&sub2);
    TU_OK(nac_dataset_subset_per_class(&ds, 12, 8, &sub2, &rest2));
    assert_true(memcmp(sub.pixels, sub2.pixels, 120 * 64) != 0);
    nac_dataset_free(&sub2);
    nac_dataset_free(&rest2);
    expect_fail(nac_dataset_subset_per_class(&ds, 31, 7, &sub2, &rest2), NAC_ERR_INVALID,
                "has 30 images, fewer than the 31 asked for", NULL, &sub2);
    assert_null(rest2.pixels);

    TU_OK(nac_dataset_concat(&sub, &rest, &cat));
    assert_int_equal(cat.n, 300);
    assert_memory_equal(cat.pixels, sub.pixels, 120 * 64);
    assert_memory_equal(cat.pixels + 120 * 64, rest.pixels, 180 * 64);
    assert_int_equal(cat.labels[120], rest.labels[0]);
    nac_dataset_free(&cat);
    nac_dataset_t other;
    TU_OK(nac_dataset_synthetic(5, 2, 3, 8, 8, 1, &other));
    expect_fail(nac_dataset_concat(&sub, &other, &cat), NAC_ERR_INVALID, "concat: images of 1x8x8",
                NULL, &cat);
    nac_dataset_free(&other);

    int64_t idx[3] = {5, 0, 299};
    TU_OK(nac_dataset_select(&ds, idx, 3, &cat));
    assert_memory_equal(cat.pixels + 64, ds.pixels, 64);
    assert_int_equal(cat.labels[2], ds.labels[299]);
    nac_dataset_free(&cat);
    idx[1] = 300;
    expect_fail(nac_dataset_select(&ds, idx, 3, &cat), NAC_ERR_INVALID, "index 300", NULL, &cat);

    /* channel statistics of a hand-made dataset: values 0 and 255 in equal numbers */
    nac_dataset_t two;
    TU_OK(nac_dataset_synthetic(2, 1, 3, 4, 4, 1, &two));
    for (int i = 0; i < 2 * 48; i++)
        two.pixels[i] = (uint8_t)((i / 16) % 3 == 1 ? 51 : (i & 1) * 255);
    float m[3], s[3];
    nac_dataset_channel_stats(&two, m, s);
    assert_true(fabsf(m[0] - 0.5f) < 1e-6f && fabsf(s[0] - 0.5f) < 1e-6f);
    assert_true(fabsf(m[1] - 0.2f) < 1e-6f && fabsf(s[1]) < 1e-6f);
    nac_dataset_free(&two);
    nac_dataset_free(&sub);
    nac_dataset_free(&rest);
    nac_dataset_free(&ds);
}

/* ------------------------------------------------------------------ PNG */

/* Issue 15: PNGs (written through mkstemp, which makes files 0600) get the umask's mode,
 * as every other output does. */
static void test_png_mode(void **state) {
    (void)state;
    uint8_t grey[4 * 4] = {0};
    mode_t old = umask(022);
    TU_OK(nac_png_write(tpath("mode644.png"), grey, 1, 4, 4));
    umask(027);
    TU_OK(nac_png_write(tpath("mode640.png"), grey, 1, 4, 4));
    umask(old);
    struct stat st;
    assert_int_equal(stat(tpath("mode644.png"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    assert_int_equal(stat(tpath("mode640.png"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
}

static void test_png(void **state) {
    (void)state;
    uint8_t rgb[3 * 5 * 7], grey[5 * 7];
    for (int i = 0; i < 105; i++) rgb[i] = (uint8_t)(i * 37);
    for (int i = 0; i < 35; i++) grey[i] = (uint8_t)(i * 11);
    uint8_t *back;
    int c, h, w;
    TU_OK(nac_png_write(tpath("rgb.png"), rgb, 3, 5, 7));
    TU_OK(nac_png_read(tpath("rgb.png"), &back, &c, &h, &w));
    assert_int_equal(c, 3);
    assert_int_equal(h, 5);
    assert_int_equal(w, 7);
    assert_memory_equal(back, rgb, sizeof rgb);
    free(back);
    TU_OK(nac_png_write(tpath("grey.png"), grey, 1, 5, 7));
    TU_OK(nac_png_read(tpath("grey.png"), &back, &c, &h, &w));
    assert_int_equal(c, 1);
    assert_memory_equal(back, grey, sizeof grey);
    free(back);
    /* a grid of 5 images, 3 columns, 1 pixel of grey around them */
    uint8_t imgs[5 * 3 * 5 * 7];
    for (int i = 0; i < 5; i++) memcpy(imgs + i * 105, rgb, 105), imgs[i * 105] = (uint8_t)i;
    TU_OK(nac_png_write_grid_u8(tpath("grid.png"), imgs, 5, 3, 5, 7, 3, 1));
    TU_OK(nac_png_read(tpath("grid.png"), &back, &c, &h, &w));
    assert_int_equal(h, 2 * 6 + 1);
    assert_int_equal(w, 3 * 8 + 1);
    size_t hw = (size_t)h * w;
    assert_int_equal(back[0], 128);                      /* padding */
    assert_int_equal(back[1 * w + 1], 0);                /* image 0, R, (0,0) */
    assert_int_equal(back[7 * w + 9], 4);                /* image 4 (row 1, col 1), R, (0,0) */
    assert_int_equal(back[hw + 1 * w + 2], rgb[35 + 1]); /* image 0, G, (0,1) */
    assert_int_equal(back[2 * hw + 7 * w + 17], 128);    /* the empty sixth cell */
    free(back);
    /* floats: x * std + mean, scaled, rounded and clamped */
    float f[4] = {0.f, 1.f, -5.f, 5.f}, mean = 0.5f, sd = 0.25f;
    TU_OK(nac_png_write_grid_f32(tpath("f.png"), f, 1, 1, 2, 2, 1, 0, &mean, &sd));
    TU_OK(nac_png_read(tpath("f.png"), &back, &c, &h, &w));
    assert_int_equal(back[0], 128); /* 127.5 rounds to even */
    assert_int_equal(back[1], 191); /* 0.75 * 255 = 191.25 */
    assert_int_equal(back[2], 0);
    assert_int_equal(back[3], 255);
    free(back);
    nac_status s = nac_png_write(tpath("nofolder/x.png"), grey, 1, 5, 7);
    assert_int_equal(s, NAC_ERR_IO);
    assert_non_null(strstr(nac_last_error(), "nofolder/x.png"));
    struct stat st;
    assert_int_not_equal(stat(tpath("nofolder"), &st), 0);
    tu_write_bytes(tpath("bad.png"), rgb, 20);
    assert_int_equal(nac_png_read(tpath("bad.png"), &back, &c, &h, &w), NAC_ERR_DATA);
}

/* ------------------------------------------------------------------ nac data */

static void test_cmd_data(void **state) {
    (void)state;
    char out[600];
    snprintf(out, sizeof out, "%s/cmd", g_dir); /* the command creates it */
    char *argv[] = {"data", "--out",   out, "--n",    "60", "--samples",
                    "8",    "--pairs", "4", "--seed", "3",  "synthetic"};
    TU_OK(nac_cmd_data.run(12, argv));
    uint8_t *back;
    int c, h, w;
    TU_OK(nac_png_read(tpath("cmd/samples.png"), &back, &c, &h, &w));
    assert_int_equal(c, 3);
    assert_int_equal(h, 34 + 2);
    assert_int_equal(w, 8 * 34 + 2);
    free(back);
    TU_OK(nac_png_read(tpath("cmd/pairs.png"), &back, &c, &h, &w));
    assert_int_equal(h, 2 * 34 + 2); /* 12 images, 6 a row */
    assert_int_equal(w, 6 * 34 + 2);
    free(back);
    char *bad[] = {"data", "--no-png", (char *)tpath("missing")};
    assert_int_equal(nac_cmd_data.run(3, bad), NAC_ERR_NOINPUT);
    char *usage[] = {"data", "--seed", "x", "synthetic"};
    assert_int_equal(nac_cmd_data.run(4, usage), NAC_ERR_USAGE);
    char *split[] = {"data", "--split", "validation", "synthetic"};
    assert_int_equal(nac_cmd_data.run(4, split), NAC_ERR_USAGE);
    assert_non_null(strstr(nac_last_error(), "--split validation"));
    char *nopath[] = {"data", "--no-png"};
    assert_int_equal(nac_cmd_data.run(2, nopath), NAC_ERR_USAGE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cifar_roundtrip),
        cmocka_unit_test(test_cifar_bad),
        cmocka_unit_test(test_idx_roundtrip),
        cmocka_unit_test(test_idx_bad),
        cmocka_unit_test(test_idx_hostile),
        cmocka_unit_test(test_parse_mem),
        cmocka_unit_test(test_fashion_mnist_installed),
        cmocka_unit_test(test_synthetic),
        cmocka_unit_test(test_subset_concat_stats),
        cmocka_unit_test(test_png),
        cmocka_unit_test(test_png_mode),
        cmocka_unit_test(test_cmd_data),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
