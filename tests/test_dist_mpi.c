/* Data parallelism under `mpirun -np 2` (registered by CMake with the MPI launcher, never
 * run alone): tiny NAC, SimCLR and MoCo-v2 runs on two MPI ranks give bit-identical losses
 * and weights to the same runs on two emulated ranks in one process (each with its own
 * batch-norm statistics, gradients summed in the same order), agree within rounding with
 * the one-process run at the same global batch (a model without batch norm), and an
 * interrupted two-rank run resumed under mpirun equals the uninterrupted one; the same
 * bit-identity with synchronised batch norm. Every
 * collective is reached by both ranks; the comparisons run on rank 0 after them. */
#include "tests/dist_util.h"

#include <dirent.h>

#include "app/app.h"
#include "app/config.h"
#include "dist/comm.h"

static nac_comm_t *world;

static int setup(void **state) {
    (void)state;
    if (nac_comm_world(&world) != NAC_OK) return -1;
    if (nac_comm_size(world) != 2) {
        fprintf(stderr, "test_dist_mpi: run it under mpirun -np 2 (got %d ranks)\n",
                nac_comm_size(world));
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    nac_comm_free(world);
    return 0;
}

/* One folder for both ranks: rank 0's, broadcast. */
static void shared_dir(char dir[64]) {
    memset(dir, 0, 64);
    if (nac_comm_rank(world) == 0) {
        char *d = du_tmpdir();
        snprintf(dir, 64, "%s", d);
        free(d);
    }
    TU_OK(nac_comm_broadcast(world, dir, 64, 0));
}

static nac_status run_mpi(const nac_pretrain_config *c, const char *dir, bool resume, du_log *b) {
    nac_loop_hooks h = du_hooks(b);
    nac_pretrain_result r;
    nac_status s = nac_pretrain_run_comm(c, dir, "{\"test\":true}", resume, &h, world, &r);
    nac_status all = nac_comm_barrier(world);
    return s != NAC_OK ? s : all;
}

static void run_local(const nac_pretrain_config *c, const char *dir, du_log *b) {
    nac_loop_hooks h = du_hooks(b);
    nac_pretrain_result r;
    nac_status s = nac_pretrain_run(c, dir, "{\"test\":true}", false, &h, &r);
    if (s != NAC_OK) fail_msg("one-process run: %s", nac_last_error());
}

static void check_objective(const char *objective) {
    char dir[64];
    shared_dir(dir);
    nac_pretrain_config c;
    du_config(&c, objective, "mlp");
    du_log mpi = {0};
    nac_status s = run_mpi(&c, dir, false, &mpi);
    if (s != NAC_OK) fail_msg("rank %d: %s", nac_comm_rank(world), nac_last_error());
    if (nac_comm_rank(world) != 0) return;
    char *emu = du_tmpdir(), *one = du_tmpdir();
    du_log e = {0}, o = {0};
    c.emulate_ranks = 2;
    run_local(&c, emu, &e);
    du_same_losses(&mpi, &e, 0, "mpirun -np 2 vs two emulated ranks");
    du_same_checkpoint(dir, emu, "checkpoint.safetensors", 0, "mpirun -np 2 vs two emulated ranks");
    c.emulate_ranks = 0;
    run_local(&c, one, &o);
    du_same_losses(&mpi, &o, 1e-5, "mpirun -np 2 vs one process");
    du_same_checkpoint(dir, one, "checkpoint.safetensors", 1e-4, "mpirun -np 2 vs one process");
    free(emu);
    free(one);
}

static void test_nac(void **s) { (void)s; check_objective("nac"); }
static void test_simclr(void **s) { (void)s; check_objective("simclr"); }
static void test_mocov2(void **s) { (void)s; check_objective("mocov2"); }

/* ResNet (per-rank batch norm): mpirun equals the emulation bit for bit, and an
 * interrupted run resumed under mpirun equals the uninterrupted one. */
static void test_resnet_resume(void **state) {
    (void)state;
    char full_dir[64], part_dir[64];
    shared_dir(full_dir);
    shared_dir(part_dir);
    nac_pretrain_config c;
    du_config(&c, "nac", "resnet18");
    du_log full = {0}, part = {.stop_at = 3};
    nac_status s = run_mpi(&c, full_dir, false, &full);
    if (s != NAC_OK) fail_msg("rank %d: %s", nac_comm_rank(world), nac_last_error());
    s = run_mpi(&c, part_dir, false, &part);
    if (s != NAC_ERR_INTERRUPTED) fail_msg("rank %d: %s", nac_comm_rank(world), nac_last_error());
    part.stop_at = 0;
    s = run_mpi(&c, part_dir, true, &part);
    if (s != NAC_OK) fail_msg("rank %d: %s", nac_comm_rank(world), nac_last_error());
    if (nac_comm_rank(world) != 0) return;
    du_same_losses(&part, &full, 0, "resumed under mpirun");
    du_same_checkpoint(part_dir, full_dir, "checkpoint.safetensors", 0, "resumed under mpirun");
    char *emu = du_tmpdir();
    du_log e = {0};
    c.emulate_ranks = 2;
    run_local(&c, emu, &e);
    du_same_losses(&full, &e, 0, "resnet: mpirun -np 2 vs two emulated ranks");
    du_same_checkpoint(full_dir, emu, "checkpoint.safetensors", 0,
                       "resnet: mpirun -np 2 vs two emulated ranks");
    free(emu);
}

/* c under mpirun -np 2 equals two emulated ranks bit for bit (losses, every checkpoint
 * tensor); the comparison on rank 0. */
static void check_mpi_vs_emulated(nac_pretrain_config *c, const char *what) {
    char dir[64];
    shared_dir(dir);
    du_log mpi = {0};
    nac_status s = run_mpi(c, dir, false, &mpi);
    if (s != NAC_OK) fail_msg("rank %d: %s", nac_comm_rank(world), nac_last_error());
    if (nac_comm_rank(world) != 0) return;
    char *emu = du_tmpdir();
    du_log e = {0};
    c->emulate_ranks = 2;
    run_local(c, emu, &e);
    char msg[120];
    snprintf(msg, sizeof msg, "%s: mpirun -np 2 vs two emulated ranks", what);
    du_same_losses(&mpi, &e, 0, msg);
    du_same_checkpoint(dir, emu, "checkpoint.safetensors", 0, msg);
    free(emu);
}

/* Synchronised BN (dist.sync_bn) on a ResNet: the statistics' all-gather and the
 * backward's all-reduce in rank order on both. */
static void test_sync_bn(void **state) {
    (void)state;
    static const char *objectives[] = {"nac", "simclr", "mocov2"};
    for (int i = 0; i < 3; i++) {
        nac_pretrain_config c;
        du_config(&c, objectives[i], "resnet18");
        c.sync_bn = true;
        char what[64];
        snprintf(what, sizeof what, "%s, synchronised BN", objectives[i]);
        check_mpi_vs_emulated(&c, what);
    }
}

/* MoCo-v2 on a ResNet with shuffled BN. */
static void test_mocov2_shuffle_bn(void **state) {
    (void)state;
    nac_pretrain_config c;
    du_config(&c, "mocov2", "resnet18");
    c.epochs = 1;
    c.warmup_epochs = 0;
    check_mpi_vs_emulated(&c, "shuffled BN");
}

/* `nac pretrain -c CFG` on both ranks: one run folder (rank 0's), its metrics, and a
 * checkpoint that records two ranks. */
static void test_command(void **state) {
    (void)state;
    char dir[64];
    shared_dir(dir);
    char cfg[128], runs[128], ckpt[256], metrics[256];
    snprintf(cfg, sizeof cfg, "%s/cfg.json", dir);
    snprintf(runs, sizeof runs, "%s/runs", dir);
    if (nac_comm_rank(world) == 0) {
        FILE *f = fopen(cfg, "w");
        assert_non_null(f);
        fprintf(f, "{\"data\": {\"dataset\": \"synthetic\", \"synthetic_n\": 32},"
                   " \"model\": {\"width_mult\": 0.0625, \"proj_dim\": 8},"
                   " \"train\": {\"batch\": 8, \"epochs\": 2, \"threads\": 1, \"workers\": 1,"
                   " \"log_every\": 1, \"knn_every\": 0, \"stats_subset\": 8},"
                   " \"optim\": {\"warmup_epochs\": 1},"
                   " \"run\": {\"dir\": \"%s\", \"name\": \"two\"}}\n", runs);
        assert_int_equal(fclose(f), 0);
    }
    TU_OK(nac_comm_barrier(world));
    char *argv[] = {"pretrain", "-c", cfg, NULL};
    nac_status s = nac_cmd_pretrain.run(3, argv);
    TU_OK(nac_comm_barrier(world));
    if (s != NAC_OK) fail_msg("rank %d: %s", nac_comm_rank(world), nac_last_error());
    if (nac_comm_rank(world) != 0) return;
    int folders = 0;
    DIR *d = opendir(runs);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) folders += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(folders, 1); /* rank 0's alone */
    snprintf(ckpt, sizeof ckpt, "%s/two/checkpoint.safetensors", runs);
    nac_st_file *f;
    TU_OK(nac_st_load(ckpt, &f));
    assert_string_equal(nac_st_meta(f, "ranks"), "2");
    assert_string_equal(nac_st_meta(f, "step"), "8");
    nac_st_free(f);
    snprintf(metrics, sizeof metrics, "%s/two/metrics.jsonl", runs);
    char *text;
    size_t n;
    TU_OK(nac_read_text_file(metrics, &text, &n));
    int lines = 0;
    for (const char *p = text; (p = strstr(p, "\"kind\":\"train\"")); p++) lines++;
    assert_int_equal(lines, 8); /* 4 steps an epoch, 2 epochs, once each (not once a rank) */
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nac),
        cmocka_unit_test(test_simclr),
        cmocka_unit_test(test_mocov2),
        cmocka_unit_test(test_resnet_resume),
        cmocka_unit_test(test_mocov2_shuffle_bn),
        cmocka_unit_test(test_sync_bn),
        cmocka_unit_test(test_command),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
