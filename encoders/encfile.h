/* The encoder file (encoder.safetensors): an encoder's weights under torchvision names, the
 * heads g and r if kept, and the metadata a reader needs to rebuild it (arch, width, input
 * shape, normalisation, objective, the pretraining config). One writer (nac pretrain) and one
 * reader with one strict validation (nac vae, nac probe/hash/knn, table5): every problem is
 * one message naming the file and the key. Files written since format nacvae-encoder-1 load. */
#ifndef NAC_ENCODERS_ENCFILE_H
#define NAC_ENCODERS_ENCFILE_H

#include "encoders/encoder.h"
#include "encoders/head.h"
#include "io/safetensors.h"

#define NAC_ENCFILE_FORMAT "nacvae-encoder-1"

typedef struct nac_encfile_meta {
    char arch[NAC_ENCODER_ARCH_LEN];
    double width_mult;      /* written with %.9g (ignored by the MLP) */
    int in_channels;        /* image channels and height = width (ignored by the MLP) */
    int in_size;
    float mean[3], std[3];  /* the input normalisation the encoder was trained with */
    char objective[32];     /* "nac", "simclr", ...; "unknown" when the file has none */
    const char *config;     /* the resolved pretraining config (JSON) or NULL: borrowed when
                               saving, owned by the nac_encfile_t when read */
} nac_encfile_meta;

typedef struct nac_encfile nac_encfile_t;

/* Write enc's parameters (and num_batches_tracked), then each head's, then the metadata,
 * atomically to path. */
nac_status nac_encfile_save(const char *path, nac_encoder_t *enc, nac_head_t *const *heads,
                            int nheads, const nac_encfile_meta *meta);

/* Read path and validate its metadata: arch one of the registry's; width_mult in (0, 64],
 * in_channels 1..3 and in_size 1..4096 (not for the MLP, whose sizes come from the shapes of
 * layers.<i>.weight); norm_mean and norm_std three finite numbers each, norm_std > 0 on
 * every input channel. */
nac_status nac_encfile_open(const char *path, nac_encfile_t **out);
void nac_encfile_close(nac_encfile_t *f); /* accepts NULL */
const char *nac_encfile_path(const nac_encfile_t *f);
const nac_encfile_meta *nac_encfile_get_meta(const nac_encfile_t *f);
/* The encoder configuration the file describes (the rest nac_encoder_config_defaults). */
const nac_encoder_config *nac_encfile_encoder_config(const nac_encfile_t *f);

/* The file's encoder must be `want` (arch, width, and for images in_channels and in_size):
 * otherwise NAC_ERR_CONFIG, "<file> holds a resnet34 encoder, the config asks for resnet18". */
nac_status nac_encfile_expect(const nac_encfile_t *f, const nac_encoder_config *want);

/* Load the file's weights into enc (built from a matching configuration). */
nac_status nac_encfile_load_encoder(const nac_encfile_t *f, nac_encoder_t *enc);
/* Build an encoder on be from the file and load its weights. */
nac_status nac_encfile_create_encoder(const nac_encfile_t *f, nac_backend_t *be,
                                      nac_encoder_t **out);
/* The head "<prefix>0/2.weight" (e.g. "g.") on top of `features`, loaded; *out = NULL when the
 * file has no such head, an error when it has one that does not fit. */
nac_status nac_encfile_load_head(const nac_encfile_t *f, nac_backend_t *be, const char *prefix,
                                 int features, nac_head_t **out);

#endif
