/* libnacvae's public API: open an encoder file written by `nac pretrain`
 * (encoder.safetensors), embed images with it, and read their 128-bit activation codes.
 * Self-contained: a program includes only this header and links with
 * `pkg-config --cflags --libs nacvae`. Functions return 0 on success, else a sysexits code
 * (64 usage, 65 bad data, 66 missing file, 70 internal, 74 i/o), with the message in
 * nacvae_error(). Not thread-safe per encoder; one encoder per thread is fine. */
#ifndef NACVAE_H
#define NACVAE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nacvae_encoder nacvae_encoder;

typedef struct nacvae_info {
    char arch[32];      /* "resnet18", "vgg16_bn", ... */
    char objective[32]; /* what it was pretrained with: "nac", "simclr", ... */
    int channels, size; /* the images it takes: channels x size x size */
    int features;       /* F, the embedding size */
    int code_bits;      /* D, the code length (0: the file has no projection head) */
} nacvae_info;

/* Open an encoder file on a backend ("cpu", or NULL for the default) with `threads` compute
 * threads (0: all cores). */
int nacvae_open(const char *path, const char *backend, int threads, nacvae_encoder **out);
void nacvae_close(nacvae_encoder *enc); /* accepts NULL */
void nacvae_get_info(const nacvae_encoder *enc, nacvae_info *info);

/* n images, 8-bit pixels (n, C, H, W) in channel planes, normalised as the encoder was
 * trained, in evaluation mode. features (n, F) may be NULL; codes (n, ceil(D / 64)) may be
 * NULL: bit j of image i's code is bit j % 64 of codes[i * words + j / 64], set where the
 * projection o_j >= 0 (the sign of the activation code). */
int nacvae_embed(nacvae_encoder *enc, const uint8_t *pixels, int n, float *features,
                 uint64_t *codes);

/* The message of the last failure in this thread. */
const char *nacvae_error(void);

#ifdef __cplusplus
}
#endif

#endif
