/* libnacvae example: embed the first few Fashion-MNIST test images with an encoder file of
 * `nac pretrain` and print each one's embedding (first values) and 128-bit activation code.
 * Build against an installed nacvae:
 *   cc embed.c $(pkg-config --cflags --libs nacvae) -o embed
 *   ./embed runs/pretrain-fmnist-nac/encoder.safetensors \
 *       /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz 4 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#include <nacvae.h>

/* The first n 28x28 images of a gzipped IDX file (magic 2051). */
static uint8_t *read_idx(const char *path, int n) {
    gzFile f = gzopen(path, "rb");
    unsigned char hdr[16];
    if (!f || gzread(f, hdr, 16) != 16 || hdr[2] != 8 || hdr[3] != 3) {
        fprintf(stderr, "%s: not an IDX image file\n", path);
        if (f) gzclose(f);
        return NULL;
    }
    uint8_t *px = malloc((size_t)n * 784);
    if (px && gzread(f, px, (unsigned)n * 784) != n * 784) {
        fprintf(stderr, "%s: fewer than %d images\n", path, n);
        free(px);
        px = NULL;
    }
    gzclose(f);
    return px;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s ENCODER.safetensors IMAGES-idx3-ubyte.gz N\n", argv[0]);
        return 64;
    }
    int n = atoi(argv[3]);
    nacvae_encoder *enc;
    int rc = nacvae_open(argv[1], "cpu", 0, &enc);
    if (rc) {
        fprintf(stderr, "%s\n", nacvae_error());
        return rc;
    }
    nacvae_info info;
    nacvae_get_info(enc, &info);
    printf("%s (%s): %dx%dx%d images -> %d features, %d-bit codes\n", info.arch, info.objective,
           info.channels, info.size, info.size, info.features, info.code_bits);
    uint8_t *px = n > 0 && info.channels == 1 && info.size == 28 ? read_idx(argv[2], n) : NULL;
    int words = (info.code_bits + 63) / 64;
    float *feat = malloc((size_t)n * info.features * sizeof *feat);
    uint64_t *codes = malloc((size_t)n * (words ? words : 1) * sizeof *codes);
    if (!px || !feat || !codes) {
        fprintf(stderr, "cannot read %d images of %s for this encoder\n", n, argv[2]);
        return 65;
    }
    rc = nacvae_embed(enc, px, n, feat, info.code_bits ? codes : NULL);
    for (int i = 0; !rc && i < n; i++) {
        printf("image %d: embedding [%.4f %.4f %.4f %.4f ...] code ", i, feat[i * info.features],
               feat[i * info.features + 1], feat[i * info.features + 2], feat[i * info.features + 3]);
        for (int w = words - 1; w >= 0; w--) printf("%016" PRIx64, codes[i * words + w]);
        printf("\n");
    }
    if (rc) fprintf(stderr, "%s\n", nacvae_error());
    free(px);
    free(feat);
    free(codes);
    nacvae_close(enc);
    return rc;
}
