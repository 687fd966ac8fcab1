/* `nac pretrain -c CONFIG [key=value ...]` and `nac pretrain --resume RUN`: JSON config
 * -> nac_pretrain_config, a new run folder (never overwriting one), metrics.jsonl,
 * progress, signals, and the exit codes of DESIGN.md's failure behaviour. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/config.h"
#include "app/run.h"
#include "app/table5.h"
#include "nac/pretrain.h"

#define PC nac_pretrain_config
static const nac_cfg_field pretrain_fields[] = {
    NAC_CFG_STR_F(PC, "description", description, NULL, "free text, kept in the run"),
    NAC_CFG_STR_F(PC, "data.dataset", dataset, "fashion-mnist|mnist|cifar10|synthetic", "dataset"),
    NAC_CFG_STR_F(PC, "data.path", data_path, NULL, "dataset folder"),
    NAC_CFG_INT_F(PC, "data.synthetic_n", synthetic_n, 10, 1e7, "images of the synthetic dataset"),
    NAC_CFG_INT_F(PC, "data.per_class", per_class, 0, 1e7, "training images a class (0: all)"),
    NAC_CFG_FLOAT_F(PC, "augment.crop_min", crop_min, 0, 1, true, false, "RandomResizedCrop min scale"),
    NAC_CFG_FLOAT_F(PC, "augment.flip_p", flip_p, 0, 1, false, false, "horizontal flip probability"),
    NAC_CFG_FLOAT_F(PC, "augment.jitter_p", jitter_p, 0, 1, false, false, "ColorJitter probability"),
    NAC_CFG_FLOAT_F(PC, "augment.brightness", brightness, 0, 10, false, false, "ColorJitter brightness"),
    NAC_CFG_FLOAT_F(PC, "augment.contrast", contrast, 0, 10, false, false, "ColorJitter contrast"),
    NAC_CFG_FLOAT_F(PC, "augment.saturation", saturation, 0, 10, false, false, "ColorJitter saturation"),
    NAC_CFG_FLOAT_F(PC, "augment.hue", hue, 0, 0.5, false, false, "ColorJitter hue"),
    NAC_CFG_FLOAT_F(PC, "augment.gray_p", gray_p, 0, 1, false, false, "RandomGrayscale probability"),
    NAC_CFG_BOOL_F(PC, "augment.blur", blur, "Gaussian blur (ImageNet recipe)"),
    NAC_CFG_STR_F(PC, "model.arch", arch, "resnet18|resnet34|resnet50|vgg16_bn", "encoder"),
    NAC_CFG_FLOAT_F(PC, "model.width_mult", width_mult, 0, 4, true, false, "width multiplier"),
    NAC_CFG_INT_F(PC, "model.proj_dim", proj_dim, 1, 65536, "code length D"),
    NAC_CFG_STR_F(PC, "method.objective", objective, "nac|nac_mq|simclr|mocov2", "objective"),
    NAC_CFG_FLOAT_F(PC, "method.p", p, 0, 0.5, true, true, "NAC channel flip probability"),
    NAC_CFG_FLOAT_F(PC, "method.tau", tau, 0, 100, true, false, "SimCLR/MoCo temperature"),
    NAC_CFG_FLOAT_F(PC, "method.ema", ema, 0, 1, false, true, "momentum-encoder decay"),
    NAC_CFG_FLOAT_F(PC, "method.lambda", lambda, 0, 100, false, false, "NAC-MQ weight of ||z||^2"),
    NAC_CFG_INT_F(PC, "method.queue", queue, 1, 1e7, "queue length (NAC-MQ, MoCo-v2)"),
    NAC_CFG_STR_F(PC, "optim.kind", optim, "lars|sgd|adam|adamw", "optimiser"),
    NAC_CFG_FLOAT_F(PC, "optim.lr", lr, 0, 1e4, true, false, "base learning rate"),
    NAC_CFG_FLOAT_F(PC, "optim.momentum", momentum, 0, 1, false, true, "momentum"),
    NAC_CFG_FLOAT_F(PC, "optim.weight_decay", weight_decay, 0, 1, false, false, "weight decay"),
    NAC_CFG_FLOAT_F(PC, "optim.eta", eta, 0, 1, true, false, "LARS trust coefficient"),
    NAC_CFG_BOOL_F(PC, "optim.nesterov", nesterov, "Nesterov momentum (SGD)"),
    NAC_CFG_INT_F(PC, "optim.warmup_epochs", warmup_epochs, 0, 1e6, "linear warm-up epochs"),
    NAC_CFG_BOOL_F(PC, "optim.exclude_bias_bn_wd", exclude_bias_bn_wd, "no weight decay on biases and BN"),
    NAC_CFG_BOOL_F(PC, "optim.exclude_bias_bn_lars", exclude_bias_bn_lars, "no LARS adaptation on biases and BN"),
    NAC_CFG_INT_F(PC, "train.epochs", epochs, 1, 1e6, "epochs"),
    NAC_CFG_INT_F(PC, "train.batch", batch, 2, 1e6, "images a step (two views each)"),
    NAC_CFG_INT_F(PC, "train.seed", seed, 0, 2147483647, "the run's seed"),
    NAC_CFG_INT_F(PC, "train.workers", workers, 0, 64, "data loader threads"),
    NAC_CFG_INT_F(PC, "train.threads", threads, 0, 1024, "compute threads (0: all cores)"),
    NAC_CFG_STR_F(PC, "train.backend", backend, "cpu|cuda", "compute backend"),
    NAC_CFG_INT_F(PC, "train.log_every", log_every, 1, 1e9, "steps between metrics lines"),
    NAC_CFG_INT_F(PC, "train.ckpt_every", ckpt_every, 1, 1e6, "epochs between checkpoints"),
    NAC_CFG_INT_F(PC, "train.stats_every", stats_every, 1, 1e6, "epochs between code statistics"),
    NAC_CFG_INT_F(PC, "train.stats_subset", stats_subset, 2, 1e6, "images for code statistics"),
    NAC_CFG_INT_F(PC, "train.max_steps", max_steps, 0, 2147483647, "stop after this many steps (0: none)"),
    NAC_CFG_STR_F(PC, "run.dir", runs_dir, NULL, "folder of run folders"),
    NAC_CFG_STR_F(PC, "run.name", name, NULL, "run folder name"),
};
#undef PC
const nac_cfg_schema nac_pretrain_schema = {pretrain_fields,
                                            sizeof pretrain_fields / sizeof *pretrain_fields};

typedef struct app_ctx {
    nac_run_t *run;
    nac_progress_t prog;
    bool started;
} app_ctx;

static nac_status hook_log(void *ctx, const char *json) {
    app_ctx *a = ctx;
    cJSON *obj = cJSON_Parse(json);
    if (!obj) return nac_error(NAC_ERR_INVALID, "internal: bad metrics line %s", json);
    return nac_run_log(a->run, obj);
}

static void hook_progress(void *ctx, int64_t done, int64_t total, const char *extra) {
    app_ctx *a = ctx;
    if (!a->started) {
        nac_progress_start(&a->prog, "pretrain", total, done);
        a->started = true;
    }
    a->prog.total = total;
    if (done >= total) nac_progress_finish(&a->prog, extra);
    else nac_progress_update(&a->prog, done, extra);
}

static int hook_interrupted(void *ctx) {
    (void)ctx;
    return nac_interrupted();
}

nac_status nac_app_pretrain(const nac_pretrain_config *cfg, const char *resolved_json,
                            nac_run_t *run, bool resume, nac_pretrain_result *res) {
    app_ctx a = {.run = run};
    nac_pretrain_hooks hooks = {&a, hook_log, hook_progress, hook_interrupted};
    nac_signals_install();
    return nac_pretrain_run(cfg, run->dir, resolved_json, resume, &hooks, res);
}

/* Load a config file + overrides onto the defaults and write nothing yet. */
nac_status nac_app_load_pretrain_config(const char *path, int nov, char *const *ov,
                                        nac_pretrain_config *cfg) {
    nac_pretrain_defaults(cfg);
    return nac_config_load(path, &nac_pretrain_schema, nov, ov, cfg);
}

static void print_pretrain_keys(void) {
    nac_pretrain_config d;
    nac_pretrain_defaults(&d);
    nac_config_print_help(&nac_pretrain_schema, &d);
}

static nac_status run_pretrain(int argc, char **argv) {
    const char *config = NULL, *resume = NULL;
    char *ov[64];
    int nov = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            config = argv[++i];
        else if (!strcmp(argv[i], "--resume") && i + 1 < argc)
            resume = argv[++i];
        else if (strchr(argv[i], '=') && argv[i][0] != '-' && nov < 64)
            ov[nov++] = argv[i];
        else
            return nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac pretrain --help)",
                             argv[i]);
    }
    if (!config == !resume)
        return nac_error(NAC_ERR_USAGE, "give either -c CONFIG or --resume RUN");
    nac_pretrain_config cfg;
    nac_run_t run;
    char path[700];
    if (resume) {
        if (nov) return nac_error(NAC_ERR_USAGE, "--resume takes no overrides: the run's config is fixed");
        NAC_TRY(nac_run_open(resume, &run));
        nac_status s = nac_app_load_pretrain_config(nac_run_path(&run, "config.json", path, sizeof path),
                                                    0, NULL, &cfg);
        if (s != NAC_OK) {
            nac_run_close(&run);
            return s;
        }
    } else {
        NAC_TRY(nac_app_load_pretrain_config(config, nov, ov, &cfg));
        NAC_TRY(nac_run_create(cfg.runs_dir, cfg.name, &run));
    }
    cJSON *doc = nac_config_to_json(&nac_pretrain_schema, &cfg);
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    nac_status s = doc && text ? NAC_OK : nac_error(NAC_ERR_NOMEM, "out of memory");
    if (s == NAC_OK && !resume) s = nac_run_write_json(&run, "config.json", doc);
    if (s == NAC_OK) {
        printf("run folder: %s\n", run.dir);
        nac_pretrain_result res;
        s = nac_app_pretrain(&cfg, text, &run, resume != NULL, &res);
        if (s == NAC_OK)
            printf("done: %lld steps, last loss %.4f, checkpoint %s\n", (long long)res.steps,
                   res.last_loss, res.last_checkpoint);
    }
    free(text);
    cJSON_Delete(doc);
    nac_run_close(&run);
    return s;
}

const nac_command nac_cmd_pretrain = {
    "pretrain",
    "pretrain an encoder with NAC, NAC-MQ, SimCLR or MoCo-v2",
    "pretrain -c CONFIG [key=value ...] | pretrain --resume RUN",
    "Creates a run folder (run.dir/run.name, never overwriting one) with the resolved\n"
    "config.json, metrics.jsonl, checkpoint.safetensors (every train.ckpt_every epochs\n"
    "and at the end) and encoder.safetensors (torchvision names). --resume RUN continues\n"
    "from the last checkpoint with the same data order, augmentations and channel noise.\n"
    "SIGINT/SIGTERM save a checkpoint and exit 130/143. Config keys:",
    run_pretrain,
    print_pretrain_keys,
};
