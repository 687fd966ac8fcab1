/* libnacvae's public API (lib/nacvae.h) over the encoder file, the encoder and its head. */
#include "lib/nacvae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "encoders/encfile.h"
#include "encoders/encoder.h"
#include "encoders/head.h"
#include "eval/hash.h"

struct nacvae_encoder {
    nac_backend_t *be;
    nac_encoder_t *enc;
    nac_head_t *g;
    nacvae_info info;
    float mean[3], std[3];
};

static int code(nac_status s) { return s == NAC_OK ? 0 : nac_status_exit_code(s); }

const char *nacvae_error(void) { return nac_last_error(); }

void nacvae_close(nacvae_encoder *e) {
    if (!e) return;
    nac_head_free(e->g);
    nac_encoder_free(e->enc);
    nac_backend_free(e->be);
    free(e);
}

int nacvae_open(const char *path, const char *backend, int threads, nacvae_encoder **out) {
    if (!path || !out) return code(nac_error(NAC_ERR_USAGE, "nacvae_open: NULL argument"));
    *out = NULL;
    nacvae_encoder *e = calloc(1, sizeof *e);
    if (!e) return code(nac_error(NAC_ERR_NOMEM, "nacvae_open: out of memory"));
    nac_encfile_t *f = NULL;
    nac_backend_options bo = {.threads = threads};
    nac_status s = nac_encfile_open(path, &f);
    if (s == NAC_OK) s = nac_backend_create(backend ? backend : "cpu", &bo, &e->be);
    if (s == NAC_OK) s = nac_encfile_create_encoder(f, e->be, &e->enc);
    if (s == NAC_OK) {
        const nac_encfile_meta *m = nac_encfile_get_meta(f);
        e->info.features = nac_encoder_features(e->enc);
        s = nac_encfile_load_head(f, e->be, "g.", e->info.features, &e->g);
        snprintf(e->info.arch, sizeof e->info.arch, "%s", m->arch);
        snprintf(e->info.objective, sizeof e->info.objective, "%s", m->objective);
        e->info.channels = m->in_channels;
        e->info.size = m->in_size;
        memcpy(e->mean, m->mean, sizeof e->mean);
        memcpy(e->std, m->std, sizeof e->std);
    }
    if (s == NAC_OK && e->g) e->info.code_bits = nac_head_out(e->g);
    nac_encfile_close(f);
    if (s != NAC_OK) {
        nacvae_close(e);
        return code(s);
    }
    *out = e;
    return 0;
}

void nacvae_get_info(const nacvae_encoder *e, nacvae_info *info) {
    if (e && info) *info = e->info;
}

int nacvae_embed(nacvae_encoder *e, const uint8_t *pixels, int n, float *features, uint64_t *codes) {
    if (!e || !pixels || n < 1) return code(nac_error(NAC_ERR_USAGE, "nacvae_embed: bad arguments"));
    if (codes && !e->g)
        return code(nac_error(NAC_ERR_USAGE, "nacvae_embed: this encoder file has no projection head"));
    int c = e->info.channels, hw = e->info.size * e->info.size;
    int64_t per = (int64_t)c * hw, f = e->info.features, d = e->info.code_bits;
    float *x = calloc((size_t)(n * per), sizeof *x), *h = calloc((size_t)(n * f), sizeof *h);
    float *o = codes ? calloc((size_t)(n * d), sizeof *o) : NULL;
    nac_tensor_t *hx = codes ? nac_tensor_new2(e->be, n, f) : NULL;
    if (!x || !h || (codes && (!o || !hx))) {
        free(x);
        free(h);
        free(o);
        nac_tensor_free(hx);
        return code(nac_error(NAC_ERR_NOMEM, "nacvae_embed: out of memory"));
    }
    nac_status s = NAC_OK;
    for (int64_t i = 0; i < n * per; i++) {
        int ch = (int)((i / hw) % c);
        x[i] = ((float)pixels[i] / 255.0f - e->mean[ch]) / e->std[ch];
    }
    s = nac_encoder_features_host(e->enc, x, n, n, h);
    if (s == NAC_OK && codes) { /* o = g(h), whose signs are the code */
        const nac_tensor_t *y;
        s = nac_tensor_from_host(hx, h);
        if (s == NAC_OK) s = nac_head_forward(e->g, hx, &y);
        if (s == NAC_OK) s = nac_tensor_to_host(y, o);
    }
    if (s == NAC_OK && codes) {
        nac_hash_codes_t hc = {0};
        s = nac_hash_pack(o, n, (int)d, &hc);
        if (s == NAC_OK) memcpy(codes, hc.words, (size_t)n * (size_t)hc.nwords * sizeof *codes);
        nac_hash_codes_free(&hc);
    }
    if (s == NAC_OK && features) memcpy(features, h, (size_t)(n * f) * sizeof *features);
    free(x);
    free(h);
    free(o);
    nac_tensor_free(hx);
    return code(s);
}
