/* Data parallelism under `mpirun -np 2` (registered by CMake with the MPI launcher, never
 * run alone): tiny NAC, SimCLR and MoCo-v2 runs on two MPI ranks give bit-identical losses
 * and weights to the same runs on two emulated ranks in one process (each with its own
 * batch-norm statistics, gradients summed in the same order), agree within rounding with
 * the one-process run at the same global batch (a model without batch norm), and an
 * interrupted two-rank run resumed under mpirun equals the uninterrupted one. Every
 * collective is reached by both ranks; the comparisons run on rank 0 after them. */
#include "tests/dist_util.h"

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nac),
        cmocka_unit_test(test_simclr),
        cmocka_unit_test(test_mocov2),
        cmocka_unit_test(test_resnet_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
