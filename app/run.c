/* Run folders, metrics.jsonl, progress display and signal flags (see run.h). */
#include "app/run.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dist/comm.h"
#include "io/safetensors.h"

static nac_status mkdir_p(const char *path) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return nac_error(NAC_ERR_IO, "cannot create folder %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return nac_error(NAC_ERR_IO, "cannot create folder %s: %s", buf, strerror(errno));
    return NAC_OK;
}

nac_status nac_run_create(const char *runs_dir, const char *name, nac_run_t *run) {
    memset(run, 0, sizeof *run);
    /* checked before anything is created: "" made runs/-2, "a/b" a nested folder */
    if (!runs_dir[0]) return nac_error(NAC_ERR_CONFIG, "\"run.dir\" is empty");
    if (!name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return nac_error(NAC_ERR_CONFIG, "\"run.name\" = \"%s\" is not a folder name (non-empty, no '/', not . or ..)",
                         name);
    NAC_TRY(mkdir_p(runs_dir));
    for (int i = 1; i < 10000; i++) {
        if (i == 1) snprintf(run->dir, sizeof run->dir, "%s/%s", runs_dir, name);
        else snprintf(run->dir, sizeof run->dir, "%s/%s-%d", runs_dir, name, i);
        if (mkdir(run->dir, 0777) == 0) {
            char p[600];
            run->metrics = fopen(nac_run_path(run, "metrics.jsonl", p, sizeof p), "a");
            if (!run->metrics)
                return nac_error(NAC_ERR_IO, "cannot create %s: %s", p, strerror(errno));
            return NAC_OK;
        }
        if (errno != EEXIST)
            return nac_error(NAC_ERR_IO, "cannot create run folder %s: %s", run->dir,
                             strerror(errno));
    }
    return nac_error(NAC_ERR_IO, "too many runs named %s in %s", name, runs_dir);
}

nac_status nac_run_open(const char *dir, nac_run_t *run) {
    memset(run, 0, sizeof *run);
    snprintf(run->dir, sizeof run->dir, "%s", dir);
    char p[600];
    struct stat st;
    if (stat(nac_run_path(run, "config.json", p, sizeof p), &st) != 0)
        return nac_error(NAC_ERR_NOINPUT, "%s is not a run folder (no config.json)", dir);
    run->metrics = fopen(nac_run_path(run, "metrics.jsonl", p, sizeof p), "a");
    if (!run->metrics) return nac_error(NAC_ERR_IO, "cannot open %s: %s", p, strerror(errno));
    return NAC_OK;
}

void nac_run_close(nac_run_t *run) {
    if (run->metrics) fclose(run->metrics);
    run->metrics = NULL;
}

const char *nac_run_path(const nac_run_t *run, const char *file, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", run->dir, file);
    return buf;
}

nac_status nac_run_write_json(const nac_run_t *run, const char *file, const cJSON *doc) {
    char *text = cJSON_Print(doc);
    if (!text) return nac_error(NAC_ERR_NOMEM, "%s: out of memory", file);
    char p[600];
    size_t n = strlen(text);
    text[n] = '\n'; /* cJSON_Print leaves room for the NUL only; rewrite with a newline */
    nac_status s = nac_write_file_atomic(nac_run_path(run, file, p, sizeof p), text, n + 1);
    free(text);
    return s;
}

nac_status nac_run_log(nac_run_t *run, cJSON *obj) {
    char *text = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!text) return nac_error(NAC_ERR_NOMEM, "metrics log: out of memory");
    int bad = run->metrics ? fprintf(run->metrics, "%s\n", text) < 0 || fflush(run->metrics) : 1;
    free(text);
    if (bad) return nac_error(NAC_ERR_IO, "%s/metrics.jsonl: write failed", run->dir);
    return NAC_OK;
}


static void fmt_time(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, n, "--:--");
        return;
    }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%02d:%02d", t / 60, t % 60);
}

void nac_progress_start(nac_progress_t *p, const char *label, int64_t total, int64_t done) {
    p->label = label;
    p->total = total;
    p->done = done;
    p->t0 = nac_now();
    p->last_print = 0;
    p->tty = isatty(STDOUT_FILENO);
    p->plain_every_s = 10;
}

static void progress_print(nac_progress_t *p, int64_t done, const char *extra, bool final) {
    double el = nac_now() - p->t0;
    int64_t did = done - p->done;
    double rate = el > 0.5 ? (double)did / el : 0; /* no rate from a blink of time */
    char left[32], used[32], speed[32];
    fmt_time(rate > 0 ? (double)(p->total - done) / rate : -1, left, sizeof left);
    if (rate > 0) snprintf(speed, sizeof speed, "%.2f it/s", rate);
    else snprintf(speed, sizeof speed, "-- it/s");
    fmt_time(el, used, sizeof used);
    if (p->tty) {
        int w = 24, fill = p->total ? (int)(w * done / p->total) : 0;
        char bar[32];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        printf("\r%s [%s] %lld/%lld %s %s<%s %s\033[K%s", p->label, bar, (long long)done,
               (long long)p->total, speed, used, left, extra ? extra : "", final ? "\n" : "");
    } else {
        printf("%s %lld/%lld %s elapsed %s left %s %s\n", p->label, (long long)done,
               (long long)p->total, speed, used, left, extra ? extra : "");
    }
    fflush(stdout);
}

void nac_progress_update(nac_progress_t *p, int64_t done, const char *extra) {
    double now = nac_now();
    double every = p->tty ? 0.2 : p->plain_every_s;
    if (now - p->last_print < every && done < p->total) return;
    p->last_print = now;
    progress_print(p, done, extra, false);
}

void nac_progress_finish(nac_progress_t *p, const char *extra) {
    progress_print(p, p->total, extra, true);
}

static volatile sig_atomic_t g_signal;

static void on_signal(int sig) { g_signal = sig; }

void nac_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int nac_interrupted(void) { return g_signal; }

int nac_interrupt_exit_code(void) { return g_signal == SIGTERM ? 143 : 130; }

static nac_status hooks_log(void *ctx, const char *json) {
    nac_run_hooks_ctx *a = ctx;
    cJSON *obj = cJSON_Parse(json);
    if (!obj) return nac_error(NAC_ERR_INVALID, "internal: bad metrics line %s", json);
    return nac_run_log(a->run, obj);
}

static void hooks_progress(void *ctx, int64_t done, int64_t total, const char *extra) {
    nac_run_hooks_ctx *a = ctx;
    if (!a->started || a->prog.total != total) {
        nac_progress_start(&a->prog, a->label, total, done > 0 ? done - 1 : 0);
        a->started = true;
    }
    if (done >= total) {
        nac_progress_finish(&a->prog, extra);
        a->started = false;
    } else {
        nac_progress_update(&a->prog, done, extra);
    }
}

static int hooks_interrupted(void *ctx) {
    (void)ctx;
    return nac_interrupted();
}

nac_loop_hooks nac_run_hooks(nac_run_hooks_ctx *ctx, nac_run_t *run, const char *label) {
    memset(ctx, 0, sizeof *ctx);
    ctx->run = run;
    ctx->label = label;
    nac_signals_install();
    return (nac_loop_hooks){ctx, hooks_log, hooks_progress, hooks_interrupted};
}

/* The checkpoint a command's runs resume from. */
static const char *ckpt_file(const char *cmd) {
    return !strcmp(cmd, "vae") ? "vae.safetensors" : "checkpoint.safetensors";
}

/* Keep the metrics lines a resumed run will not write again: those whose "step" is at most
 * upto (-1: none that has a step) and those without a step; a partial last line goes too.
 * Rewritten atomically, so a kill here loses nothing. */
static nac_status trim_metrics(const nac_run_t *run, int64_t upto) {
    char path[700];
    nac_run_path(run, "metrics.jsonl", path, sizeof path);
    char *text = NULL;
    size_t n = 0;
    struct stat st;
    if (stat(path, &st) != 0) return NAC_OK;
    NAC_TRY(nac_read_text_file(path, &text, &n));
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        char *nl = memchr(text + i, '\n', n - i);
        if (!nl) break; /* a partial last line: the write that was killed */
        size_t len = (size_t)(nl - (text + i)) + 1;
        *nl = 0;
        const char *p = strstr(text + i, "\"step\":");
        bool keep = !p || strtoll(p + 7, NULL, 10) <= upto;
        *nl = '\n';
        if (keep) {
            memmove(text + w, text + i, len);
            w += len;
        }
        i += len;
    }
    nac_status s = w == n ? NAC_OK : nac_write_file_atomic(path, text, w);
    free(text);
    return s;
}

/* A write killed half way leaves "<file>.tmp.<pid>" (io/safetensors.c writes beside the file,
 * then renames): the resumed run removes them, since nothing else writes into its folder. */
static void remove_temporaries(const nac_run_t *run) {
    DIR *d = opendir(run->dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.") && unlinkat(dirfd(d), e->d_name, 0) == 0)
            printf("removed %s/%s, left by a write that was killed\n", run->dir, e->d_name);
    closedir(d);
}

/* --resume: from the checkpoint's step, or from step 0 when the run was stopped before its
 * first checkpoint; metrics.jsonl keeps each step once either way. */
static nac_status prepare_resume(nac_run_t *run, const char *cmd, bool *resume) {
    char ck[700];
    nac_run_path(run, ckpt_file(cmd), ck, sizeof ck);
    struct stat st;
    int64_t upto = -1;
    if (stat(ck, &st) != 0) {
        *resume = false;
        printf("%s has no checkpoint yet: starting it from step 0 with its saved config\n", run->dir);
    } else {
        nac_st_file *f;
        NAC_TRY(nac_st_load(ck, &f));
        const char *step = nac_st_meta(f, "step");
        char *end = NULL;
        upto = step ? strtoll(step, &end, 10) : -1;
        bool ok = step && end != step && !*end && upto >= 0;
        nac_st_free(f);
        if (!ok) return nac_error(NAC_ERR_DATA, "%s: no valid \"step\" in its metadata", ck);
    }
    nac_run_close(run);
    remove_temporaries(run);
    NAC_TRY(trim_metrics(run, upto));
    char p[700];
    run->metrics = fopen(nac_run_path(run, "metrics.jsonl", p, sizeof p), "a");
    if (!run->metrics) return nac_error(NAC_ERR_IO, "cannot open %s: %s", p, strerror(errno));
    return NAC_OK;
}

nac_status nac_run_start(int argc, char **argv, const char *cmd, const nac_cfg_schema *schema,
                         void *cfg, nac_run_t *run, bool *resume, char **resolved) {
    const char *config = NULL, *from = NULL;
    char *ov[64];
    int nov = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            config = argv[++i];
        else if (!strcmp(argv[i], "--resume") && i + 1 < argc)
            from = argv[++i];
        else if (strchr(argv[i], '=') && argv[i][0] != '-' && nov < 64)
            ov[nov++] = argv[i];
        else
            return nac_error(NAC_ERR_USAGE, "unexpected argument \"%s\" (see nac %s --help)", argv[i], cmd);
    }
    if (config && from) return nac_error(NAC_ERR_USAGE, "give either -c CONFIG or --resume RUN, not both");
    if (!config && !from && nov == 0)
        return nac_error(NAC_ERR_USAGE, "give -c CONFIG, key=value overrides of the defaults (nac %s "
                         "--help lists them), or --resume RUN", cmd);
    *resume = from != NULL;
    char path[700];
    if (from) {
        if (nov) return nac_error(NAC_ERR_USAGE, "--resume takes no overrides: the run's config is fixed");
        NAC_TRY(nac_run_open(from, run));
        nac_status s = nac_config_load(nac_run_path(run, "config.json", path, sizeof path), schema, 0, NULL, cfg);
        if (s == NAC_OK) s = prepare_resume(run, cmd, resume);
        if (s != NAC_OK) {
            nac_run_close(run);
            return s;
        }
    } else {
        NAC_TRY(nac_config_load(config, schema, nov, ov, cfg));
        /* run.dir / run.name are in every run schema */
        cJSON *tmp = nac_config_to_json(schema, cfg);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(tmp, "run");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(r, "dir"), *n = cJSON_GetObjectItemCaseSensitive(r, "name");
        nac_status s = cJSON_IsString(d) && cJSON_IsString(n) ? nac_run_create(d->valuestring, n->valuestring, run)
                                                              : nac_error(NAC_ERR_INVALID, "internal: schema without run.dir/run.name");
        cJSON_Delete(tmp);
        NAC_TRY(s);
    }
    cJSON *doc = nac_config_to_json(schema, cfg);
    *resolved = doc ? cJSON_PrintUnformatted(doc) : NULL;
    nac_status s = *resolved ? NAC_OK : nac_error(NAC_ERR_NOMEM, "out of memory");
    if (s == NAC_OK && !from) s = nac_run_write_json(run, "config.json", doc);
    cJSON_Delete(doc);
    if (s != NAC_OK) {
        free(*resolved);
        *resolved = NULL;
        nac_run_close(run);
        return s;
    }
    printf("run folder: %s\n", run->dir);
    return NAC_OK;
}

/* ---- under mpirun ---- */
nac_status nac_run_start_ranks(nac_comm_t *comm, int argc, char **argv, const char *cmd,
                               const nac_cfg_schema *schema, void *cfg, nac_run_t *run,
                               bool *resume, char **resolved) {
    int rank = nac_comm_rank(comm);
    memset(run, 0, sizeof *run);
    *resume = false;
    *resolved = NULL;
    nac_status s = rank == 0 ? nac_run_start(argc, argv, cmd, schema, cfg, run, resume, resolved)
                             : NAC_OK;
    int32_t head[3] = {(int32_t)s, *resume, *resolved ? (int32_t)strlen(*resolved) + 1 : 0};
    NAC_TRY(nac_comm_broadcast(comm, head, sizeof head, 0));
    if (head[0] != NAC_OK) /* every rank knows: rank 0 reports it (main), the others return */
        return rank ? nac_error((nac_status)head[0], "rank 0 could not start the run") : s;
    *resume = head[1];
    s = nac_comm_broadcast(comm, run->dir, sizeof run->dir, 0);
    if (s == NAC_OK && rank && !(*resolved = malloc((size_t)head[2])))
        s = nac_error(NAC_ERR_NOMEM, "out of memory");
    if (s == NAC_OK) s = nac_comm_broadcast(comm, *resolved, head[2], 0);
    if (s == NAC_OK && rank) s = nac_config_parse(*resolved, "the run's config (from rank 0)", schema, 0, NULL, cfg);
    if (s != NAC_OK && rank == 0) nac_run_close(run);
    if (s != NAC_OK) {
        free(*resolved);
        *resolved = NULL;
    }
    return s;
}

static nac_status rank_log(void *ctx, const char *json) {
    fprintf(stderr, "[rank %d] %s\n", *(const int *)ctx, json);
    return NAC_OK;
}

nac_loop_hooks nac_run_rank_hooks(const int *rank) {
    nac_signals_install();
    return (nac_loop_hooks){.ctx = (void *)rank, .log = rank_log};
}

void nac_run_rank_failed(nac_comm_t *comm, const char *cmd, nac_status s) {
    if (s == NAC_OK || s == NAC_ERR_INTERRUPTED || s == NAC_ERR_NUMERIC) return;
    fprintf(stderr, "nac %s: rank %d: %s\n", cmd, nac_comm_rank(comm), nac_last_error());
    nac_comm_abort(comm, nac_status_exit_code(s));
}
