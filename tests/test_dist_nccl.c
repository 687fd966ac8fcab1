/* The NCCL communicator on a GPU (built where NCCL is; CTest runs it as one MPI rank):
 * the bootstrap through MPI, an in-place all-reduce of device buffers handed over by a
 * device-pointer accessor (a fake one, and the CUDA backend's nac_tensor_device_ptr on
 * its own tensors), and the message for a tensor without device storage. Without a
 * CUDA device it skips, unless NAC_TEST_GPU=1 says one must be there (scripts/gpu-check.sh).
 * With G >= 2 GPUs, `mpirun -np G` sums over G ranks, rank r on device r. */
#include "tests/testutil.h"

#include <cuda_runtime.h>

#include "dist/comm.h"

/* The fake tensors below keep their device pointer in impl. */
static void *impl_ptr(const nac_tensor_t *t) { return t->impl; }

static void test_allreduce(void **state) {
    (void)state;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        if (getenv("NAC_TEST_GPU")) fail_msg("NAC_TEST_GPU is set but there is no CUDA device");
        skip();
    }
    nac_comm_t *world, *nc;
    TU_OK(nac_comm_world(&world));
    int rank = nac_comm_rank(world), size = nac_comm_size(world);
    if (size > devices) fail_msg("%d ranks on %d GPUs: one GPU a rank", size, devices);
    TU_OK(nac_comm_nccl_create(world, rank, impl_ptr, &nc));
    enum { N0 = 1000, N1 = 7 };
    float host[N0 + N1], back[N0 + N1], want[N0 + N1];
    for (int i = 0; i < N0 + N1; i++) {
        host[i] = (float)(i % 13) + 0.25f * (float)rank;
        want[i] = 0;
        for (int r = 0; r < size; r++) want[i] += (float)(i % 13) + 0.25f * (float)r;
    }
    float *dev;
    assert_int_equal(cudaMalloc((void **)&dev, sizeof host), cudaSuccess);
    assert_int_equal(cudaMemcpy(dev, host, sizeof host, cudaMemcpyHostToDevice), cudaSuccess);
    nac_tensor_t t[2] = {{.ndim = 1, .dim = {N0}, .impl = dev}, {.ndim = 1, .dim = {N1}, .impl = dev + N0}};
    nac_tensor_t *ts[2] = {&t[0], &t[1]};
    /* the table's device path itself (the wrapper skips a one-rank job) */
    TU_OK(nc->iface->allreduce_tensors(nc, ts, 2));
    assert_int_equal(cudaMemcpy(back, dev, sizeof back, cudaMemcpyDeviceToHost), cudaSuccess);
    tu_close_f(back, want, N0 + N1, 0, 1e-6, "NCCL all-reduce");
    /* host collectives go through MPI */
    float x[2] = {1, (float)rank}, g[64];
    TU_OK(nac_comm_allgather(nc, x, 2, g));
    assert_true(g[2 * (size - 1) + 1] == (float)(size - 1));
    cudaFree(dev);
    nac_comm_free(nc);
    nac_comm_free(world);
}

/* The CUDA backend's own tensors through its accessor (nac_tensor_device_ptr, what
 * nac pretrain hands NCCL): written on the backend's stream, summed, read back. */
static void test_backend_tensors(void **state) {
    (void)state;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) skip();
    nac_comm_t *world, *nc;
    TU_OK(nac_comm_world(&world));
    int rank = nac_comm_rank(world), size = nac_comm_size(world);
    nac_backend_t *be;
    nac_backend_options o = {.pick_device = true, .device = rank};
    TU_OK(nac_backend_create("cuda", &o, &be));
    TU_OK(nac_comm_nccl_create(world, rank, nac_tensor_device_ptr, &nc));
    enum { N = 300 };
    int64_t d = N;
    float host[N], back[N], want[N];
    for (int i = 0; i < N; i++) {
        host[i] = (float)(i % 7) - 0.5f * (float)rank;
        want[i] = 0;
        for (int r = 0; r < size; r++) want[i] += (float)(i % 7) - 0.5f * (float)r;
    }
    nac_tensor_t *t = nac_tensor_new(be, 1, &d);
    TU_OK(nac_tensor_from_host(t, host));
    TU_OK(nac_axpby(1.0f, t, 1.0f, t)); /* doubled on the backend's stream */
    for (int i = 0; i < N; i++) want[i] *= 2.0f;
    assert_non_null(nac_tensor_device_ptr(t));
    TU_OK(nc->iface->allreduce_tensors(nc, &t, 1));
    TU_OK(nac_tensor_to_host(t, back));
    tu_close_f(back, want, N, 0, 1e-6, "NCCL all-reduce of CUDA backend tensors");
    nac_tensor_free(t);
    nac_comm_free(nc);
    nac_backend_free(be);
    nac_comm_free(world);
}

static void test_no_device_storage(void **state) {
    (void)state;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) skip();
    nac_comm_t *world, *nc;
    TU_OK(nac_comm_world(&world));
    TU_OK(nac_comm_nccl_create(world, nac_comm_rank(world), impl_ptr, &nc));
    nac_backend_t *be = tu_backend();
    nac_tensor_t plain = {.be = be, .ndim = 1, .dim = {4}, .impl = NULL}, *ts[1] = {&plain};
    assert_int_equal(nc->iface->allreduce_tensors(nc, ts, 1), NAC_ERR_INVALID);
    assert_non_null(strstr(nac_last_error(), "not a plain device tensor"));
    nac_backend_free(be);
    nac_comm_free(nc);
    nac_comm_free(world);
    assert_int_equal(nac_comm_nccl_create(NULL, 0, NULL, &nc), NAC_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allreduce),
        cmocka_unit_test(test_backend_tensors),
        cmocka_unit_test(test_no_device_storage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
