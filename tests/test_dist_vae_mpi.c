/* The VAE stage and the evaluations under `mpirun -np 2` (registered by CMake with the MPI
 * launcher, never run alone): a tiny VAE trained and evaluated on two MPI ranks gives
 * bit-identical losses, weights and per-image log p(x) and KL to two emulated ranks; an
 * interrupted two-rank run resumed under mpirun equals the uninterrupted one; features
 * split over the two ranks equal one process's; `nac vae -c CFG` on both ranks leaves one
 * run folder whose metrics have one line a step; `nac table5` trains every row on both. Every collective is
 * reached by both ranks; the comparisons run on rank 0 after them. */
#include "tests/dist_vae_util.h"

#include "app/app.h"
#include "app/config.h"
#include "dist/comm.h"

static nac_comm_t *world;

static int setup(void **state) {
    (void)state;
    return du_world_setup(&world, "test_dist_vae_mpi");
}

static int teardown(void **state) {
    (void)state;
    nac_comm_free(world);
    return 0;
}

static nac_status run_mpi(const nac_vae_train_config *c, const char *dir, bool resume, dv_log *b) {
    nac_loop_hooks h = dv_hooks(b);
    nac_vae_train_result r;
    nac_status s = nac_vae_train_run_comm(c, dir, "{\"test\":true}", resume, &h, world, &r);
    nac_status all = nac_comm_barrier(world);
    return s != NAC_OK ? s : all;
}

/* mpirun -np 2 vs two emulated ranks: bit for bit, training and evaluation; and an
 * interrupted run resumed under mpirun equals the uninterrupted one. */
static void test_vae_vs_emulated(void **state) {
    (void)state;
    char dir[64], part[64];
    du_shared_dir(world, dir);
    du_shared_dir(world, part);
    nac_vae_train_config c;
    dv_config(&c);
    dv_log mpi = {0}, p = {.stop_at = 2};
    nac_status s = run_mpi(&c, dir, false, &mpi);
    if (s != NAC_OK) fail_msg("rank %d: %s", nac_comm_rank(world), nac_last_error());
    s = run_mpi(&c, part, false, &p);
    if (s != NAC_ERR_INTERRUPTED) fail_msg("rank %d: %s", nac_comm_rank(world), nac_last_error());
    p.stop_at = 0;
    s = run_mpi(&c, part, true, &p);
    if (s != NAC_OK) fail_msg("rank %d: %s", nac_comm_rank(world), nac_last_error());
    if (nac_comm_rank(world) != 0) return;
    assert_int_equal(mpi.n, 4);
    dv_same_run(&p, part, &mpi, dir, "resumed under mpirun");
    char *emu = du_tmpdir();
    dv_log e = {0};
    nac_vae_train_result r;
    c.emulate_ranks = 2;
    TU_OK(dv_run(&c, emu, false, &e, &r));
    dv_same_run(&mpi, dir, &e, emu, "vae: mpirun -np 2 vs two emulated ranks");
    tu_rm_tree(emu);
    free(emu);
}

/* Features on the two MPI ranks (37 images: 19 and 18) equal one process's. */
static void test_features(void **state) {
    (void)state;
    dv_feat two = {.n = 37};
    TU_OK(dv_features(&two, world));
    if (nac_comm_rank(world) != 0) return;
    dv_feat one = {.n = 37};
    TU_OK(dv_features(&one, NULL));
    assert_int_equal(one.dim, two.dim);
    tu_close_f(two.out, one.out, 37 * one.dim, 1e-5, 1e-6, "features: mpirun -np 2 vs one process");
    free(one.out);
    free(two.out);
}

/* `nac vae -c CFG` on both ranks: one run folder (rank 0's) with results.json, one
 * metrics line a step, and a checkpoint recording two ranks. */
static void test_command(void **state) {
    (void)state;
    char dir[64];
    du_shared_dir(world, dir);
    du_command_on_ranks(world, &nac_cmd_vae, dir,
                        "{\"data\": {\"dataset\": \"synthetic\", \"synthetic_n\": 200},"
                        " \"model\": {\"width_mult\": 0.0625},"
                        " \"vae\": {\"latent\": 4, \"dec_width\": 4},"
                        " \"eval\": {\"k\": 2, \"chunk\": 2, \"batch\": 8},"
                        " \"train\": {\"batch\": 16, \"epochs\": 1, \"max_steps\": 3, \"threads\": 1,"
                        " \"workers\": 0, \"log_every\": 1, \"diag_images\": 8},"
                        " \"run\": {\"dir\": \"%s\", \"name\": \"two\"}}\n");
    if (nac_comm_rank(world) != 0) return;
    char runs[128], path[256];
    snprintf(runs, sizeof runs, "%s/runs", dir);
    assert_int_equal(du_entries(runs), 1); /* rank 0's folder alone */
    snprintf(path, sizeof path, "%s/two/vae.safetensors", runs);
    nac_st_file *f;
    TU_OK(nac_st_load(path, &f));
    assert_string_equal(nac_st_meta(f, "ranks"), "2");
    assert_string_equal(nac_st_meta(f, "step"), "3");
    nac_st_free(f);
    snprintf(path, sizeof path, "%s/two/results.json", runs);
    cJSON *doc = tu_load_json_path(path);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(doc, "test_images")->valueint, 40);
    cJSON_Delete(doc);
    snprintf(path, sizeof path, "%s/two/metrics.jsonl", runs);
    assert_int_equal(du_count(path, "\"kind\":\"train\""), 3); /* once a step, not once a rank */
    assert_int_equal(du_count(path, "\"kind\":\"eval\""), 1);
    tu_rm_tree(dir);
}

/* `nac table5` on both ranks: rank 0 drives, every pretraining and VAE runs on both ranks
 * (their checkpoints record 2), and rank 0 writes one table. */
static void test_table5(void **state) {
    (void)state;
    char dir[64];
    du_shared_dir(world, dir);
    du_command_on_ranks(world, &nac_cmd_table5, dir,
                        "{\"rows\": \"random,nac\","
                        " \"data\": {\"dataset\": \"synthetic\", \"synthetic_n\": 200, \"test_limit\": 40},"
                        " \"model\": {\"arch\": \"resnet18\", \"width_mult\": 0.0625},"
                        " \"pretrain\": {\"epochs\": 1, \"batch\": 50, \"lr\": 1.0, \"warmup_epochs\": 0},"
                        " \"vae\": {\"latent\": 4, \"dec_width\": 4, \"epochs\": 1, \"batch\": 50,"
                        " \"diag_images\": 20},"
                        " \"eval\": {\"k\": 4, \"chunk\": 4, \"batch\": 10},"
                        " \"train\": {\"threads\": 1, \"workers\": 0},"
                        " \"run\": {\"dir\": \"%s\", \"name\": \"t\"}}\n");
    if (nac_comm_rank(world) != 0) return;
    const char *files[3] = {"pretrain-nac/checkpoint.safetensors", "vae-random/vae.safetensors",
                            "vae-nac/vae.safetensors"};
    char path[256];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/runs/t/%s", dir, files[i]);
        nac_st_file *f;
        TU_OK(nac_st_load(path, &f));
        assert_string_equal(nac_st_meta(f, "ranks"), "2");
        nac_st_free(f);
    }
    snprintf(path, sizeof path, "%s/runs/t/results.md", dir);
    assert_int_equal(du_count(path, "| nac |"), 1);
    snprintf(path, sizeof path, "%s/runs/t/vae-nac/metrics.jsonl", dir);
    assert_int_equal(du_count(path, "\"kind\":\"eval\""), 1);
    snprintf(path, sizeof path, "%s/runs", dir);
    assert_int_equal(du_entries(path), 1);
    tu_rm_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vae_vs_emulated),
        cmocka_unit_test(test_features),
        cmocka_unit_test(test_command),
        cmocka_unit_test(test_table5),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
