/* `nac bench`: images per second and peak memory of a full NAC training step (forward of
 * two views, the objective, backward, LARS update) for an encoder, batch and input size,
 * printed as one JSON line. bench/bench_pytorch.py times the same step in PyTorch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "encoders/encoder.h"
#include "nac/objective.h"
#include "nac/pretrain.h"
#include "nn/loop.h"
#include "backend/hostblas.h"

/* The machine's sgemm rate on the threads the step used: the best of a few 1536^3 products
 * (about a second), the yardstick for the step's FLOP rate. */
static nac_status sgemm_peak(double *gflops) {
    const int64_t n = 1536;
    float *a = malloc((size_t)(n * n) * sizeof *a), *b = malloc((size_t)(n * n) * sizeof *b),
          *c = malloc((size_t)(n * n) * sizeof *c);
    nac_status s = a && b && c ? NAC_OK : nac_error(NAC_ERR_NOMEM, "nac bench: out of memory");
    for (int64_t i = 0; s == NAC_OK && i < n * n; i++) {
        a[i] = (float)(i % 13) * 0.01f;
        b[i] = (float)(i % 7) * 0.01f;
    }
    *gflops = 0;
    for (int r = 0; s == NAC_OK && r < 4; r++) {
        double t0 = nac_now();
        s = nac_host_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = nac_now() - t0, g = 2.0 * (double)n * (double)n * (double)n / dt / 1e9;
        if (r > 0 && g > *gflops) *gflops = g; /* the first run warms up */
    }
    free(a);
    free(b);
    free(c);
    return s;
}

static nac_status run_bench(int argc, char **argv) {
    nac_pretrain_config cfg;
    nac_pretrain_defaults(&cfg);
    cfg.batch = 64;
    cfg.threads = 0;
    int channels = 3, size = 32, warmup = 2, steps = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return nac_error(NAC_ERR_USAGE, "option %s needs a value", a);
        i++;
        if (!strcmp(a, "--arch")) snprintf(cfg.arch, sizeof cfg.arch, "%s", v);
        else if (!strcmp(a, "--batch")) cfg.batch = atoi(v);
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--channels")) channels = atoi(v);
        else if (!strcmp(a, "--width")) cfg.width_mult = atof(v);
        else if (!strcmp(a, "--threads")) cfg.threads = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--objective")) snprintf(cfg.objective, sizeof cfg.objective, "%s", v);
        else if (!strcmp(a, "--backend")) snprintf(cfg.backend, sizeof cfg.backend, "%s", v);
        else return nac_error(NAC_ERR_USAGE, "unknown option %s (see nac bench --help)", a);
    }
    if (cfg.batch < 2 || size < 8 || (channels != 1 && channels != 3) || steps < 1 || warmup < 0 ||
        !(cfg.width_mult > 0))
        return nac_error(NAC_ERR_USAGE, "need --batch >= 2, --size >= 8, --channels 1|3, --steps >= 1");
    const nac_objective *obj = nac_objective_find(cfg.objective);
    if (!obj || obj->momentum) /* the bench times one step without a momentum copy */
        return nac_error(NAC_ERR_USAGE, "--objective must be nac or simclr");
    if (!nac_encoder_arch_known(cfg.arch) || !strcmp(cfg.arch, "mlp"))
        return nac_error(NAC_ERR_USAGE,
                         "--arch %s: nac bench times resnet18, resnet34, resnet50 or vgg16_bn",
                         cfg.arch);
    if (!strcmp(cfg.arch, "vgg16_bn") && size < 32)
        return nac_error(NAC_ERR_USAGE, "--arch vgg16_bn needs --size >= 32 (five max-pools)");
    cfg.lr = 0.1;
    cfg.warmup_epochs = 0;
    nac_bench_result r;
    NAC_TRY(nac_pretrain_bench(&cfg, channels, size, warmup, steps, &r));
    double step_gflops = r.flops_per_step / r.step_s / 1e9, peak = 0;
    if (!strcmp(cfg.backend, "cpu")) NAC_TRY(sgemm_peak(&peak));
    printf("{\"impl\":\"nacvae %s\",\"backend\":\"%s\",\"arch\":\"%s\",\"width\":%g,\"objective\":\"%s\","
           "\"batch_per_view\":%d,\"images_per_step\":%d,\"size\":%d,\"threads\":%d,"
           "\"params\":%lld,\"images_per_s\":%.2f,\"step_s\":%.4f,\"peak_rss_mb\":%.1f,"
           "\"backend_peak_mb\":%.1f,\"gflop_per_step\":%.6g,\"gflop_per_s\":%.4g,"
           "\"sgemm_gflop_per_s\":%.1f,\"of_sgemm_peak\":%.3g}\n",
           NAC_VERSION, cfg.backend, cfg.arch, cfg.width_mult, cfg.objective, cfg.batch,
           2 * cfg.batch, size, cfg.threads, (long long)r.params, r.images_per_s, r.step_s,
           r.peak_rss_mb, r.backend_peak_mb, r.flops_per_step / 1e9, step_gflops, peak,
           peak > 0 ? step_gflops / peak : 0.0);
    return NAC_OK;
}

const nac_command nac_cmd_bench = {
    "bench",
    "time a full training step (images/s, peak memory) as one JSON line",
    "bench [--arch resnet18] [--batch 64] [--size 32] [--channels 3] [--width 1]\n"
    "                 [--threads 0] [--steps 5] [--warmup 2] [--objective nac|simclr]",
    "One step = upload of 2 x batch images, encoder forward with per-view batch norm,\n"
    "heads, the objective, backward, LARS update. gflop_per_s counts the convolutions'\n"
    "and matrix products' work (two FLOPs a multiply-add); of_sgemm_peak divides it by\n"
    "this machine's sgemm rate on the same threads (measured after the step). Compare with\n"
    "  bench/bench_pytorch.py --arch resnet18 --batch 64 --size 32 --threads 2\n"
    "on the same machine (Debian's python3-torch).",
    run_bench,
    NULL,
};
