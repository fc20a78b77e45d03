/*
 * The emulator itself, before anything is judged by it: barriers order
 * shared memory, a missing barrier shows, shuffles exchange lanes, every
 * thread of a 3-D grid runs once with its indices, and misuse (divergent
 * barriers, partial shuffles, impossible launch configurations, host
 * pointers given to kernels or to copies, bad frees, the host touching
 * device memory, a kernel running past an allocation) fails the way the
 * emulator promises. Runs in both thread orders (ELLE_CUDA_EMU_ORDER).
 */
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <setjmp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern "C" {
#include <cmocka.h>
}

#include "cuda_runtime.h"

#ifndef ELLE_LAUNCH
#error "the emulated cuda_runtime.h must define ELLE_LAUNCH"
#endif

namespace {

constexpr int kBlock = 64;

template <class T>
T *dev_alloc(size_t n)
{
    void *p = nullptr;
    assert_int_equal(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    return static_cast<T *>(p);
}

/* The host reads device memory only through copies (it faults otherwise). */
template <class T>
std::vector<T> to_host(const T *d, size_t n)
{
    std::vector<T> h(n);
    assert_int_equal(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
}

__global__ void rotate_synced(int *out)
{
    __shared__ int sh[kBlock];
    const int t = threadIdx.x;
    sh[t] = t + 1000 * (int)blockIdx.x;
    __syncthreads();
    out[blockIdx.x * kBlock + t] = sh[(t + 1) % kBlock];
}

__global__ void rotate_unsynced(int *out)
{
    __shared__ int sh[kBlock];
    const int t = threadIdx.x;
    sh[t] = t + 1000 * (int)blockIdx.x;
    out[blockIdx.x * kBlock + t] = sh[(t + 1) % kBlock]; /* the missing barrier */
}

void barrier_orders_shared_memory(void **state)
{
    (void)state;
    int *dd = dev_alloc<int>(3 * kBlock);
    ELLE_LAUNCH(3, kBlock, nullptr, rotate_synced)(dd);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    const std::vector<int> d = to_host(dd, 3 * kBlock);
    for (int b = 0; b < 3; b++)
        for (int t = 0; t < kBlock; t++)
            assert_int_equal(d[b * kBlock + t], (t + 1) % kBlock + 1000 * b);
    cudaFree(dd);
}

void missing_barrier_changes_the_result(void **state)
{
    (void)state;
    int *dd = dev_alloc<int>(3 * kBlock);
    ELLE_LAUNCH(3, kBlock, nullptr, rotate_unsynced)(dd);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    const std::vector<int> d = to_host(dd, 3 * kBlock);
    int wrong = 0;
    for (int b = 0; b < 3; b++)
        for (int t = 0; t < kBlock; t++)
            wrong += d[b * kBlock + t] != (t + 1) % kBlock + 1000 * b;
    assert_true(wrong > 0); /* a stale read, in either thread order */
    cudaFree(dd);
}

__global__ void warp_sums(double *out)
{
    double v = threadIdx.x + 0.5;
    for (int m = 16; m > 0; m >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, m);
    const float f = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1);
    out[threadIdx.x] = v;
    out[64 + threadIdx.x] = f;
}

void shuffle_exchanges_lanes(void **state)
{
    (void)state;
    double *dd = dev_alloc<double>(128);
    ELLE_LAUNCH(1, 64, nullptr, warp_sums)(dd);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    const std::vector<double> d = to_host(dd, 128);
    for (int t = 0; t < 64; t++) {
        const int w0 = t / 32 * 32;
        double want = 0;
        for (int l = 0; l < 32; l++)
            want += w0 + l + 0.5;
        assert_true(d[t] == want);
        assert_true(d[64 + t] == (double)(t ^ 1));
    }
    cudaFree(dd);
}

__global__ void write_ids(int *hits, uint3 *where)
{
    const unsigned bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned id = bx * (blockDim.x * blockDim.y * blockDim.z) + tx;
    hits[id] += 1;
    where[id] = uint3{threadIdx.x, threadIdx.y, threadIdx.z};
}

void every_thread_runs_once(void **state)
{
    (void)state;
    const dim3 grid(3, 2, 2), block(4, 3, 2);
    const size_t n = 3 * 2 * 2 * 4 * 3 * 2;
    int *dhits = dev_alloc<int>(n);
    uint3 *dwhere = dev_alloc<uint3>(n);
    assert_int_equal(cudaMemset(dhits, 0, n * sizeof(int)), cudaSuccess);
    ELLE_LAUNCH(grid, block, nullptr, write_ids)(dhits, dwhere);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    const std::vector<int> hits = to_host(dhits, n);
    const std::vector<uint3> where = to_host(dwhere, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(hits[i], 1);
        const size_t t = i % 24;
        assert_int_equal(where[i].x, t % 4);
        assert_int_equal(where[i].y, t / 4 % 3);
        assert_int_equal(where[i].z, t / 12);
    }
    cudaFree(dhits);
    cudaFree(dwhere);
}

__global__ void divergent_barrier(int *out)
{
    if (threadIdx.x < 16)
        __syncthreads();
    out[threadIdx.x] = 1;
}

__global__ void partial_shuffle(float *out)
{
    float v = 1.0f;
    if (threadIdx.x % 32 < 16)
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

__global__ void nothing(float *out)
{
    (void)out;
}

void misuse_fails_the_launch(void **state)
{
    (void)state;
    int *di = dev_alloc<int>(64);
    float *df = dev_alloc<float>(64);
    ELLE_LAUNCH(1, 64, nullptr, divergent_barrier)(di);
    assert_int_equal(cudaGetLastError(), cudaErrorLaunchFailure);
    ELLE_LAUNCH(1, 64, nullptr, partial_shuffle)(df);
    assert_int_equal(cudaGetLastError(), cudaErrorLaunchFailure);
    ELLE_LAUNCH(1, 2048, nullptr, nothing)(df);
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidConfiguration);
    ELLE_LAUNCH(dim3(1, 70000), 32, nullptr, nothing)(df);
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidConfiguration);
    ELLE_LAUNCH(0, 32, nullptr, nothing)(df);
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidConfiguration);
    float host[4];
    ELLE_LAUNCH(1, 32, nullptr, nothing)(host);
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidDevicePointer);
    ELLE_LAUNCH(1, 32, nullptr, nothing)(nullptr);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    cudaFree(di);
    cudaFree(df);
}

void runtime_checks_memory(void **state)
{
    (void)state;
    float *d = dev_alloc<float>(16);
    /* unwritten device memory reads as NaN */
    for (float v : to_host(d, 16))
        assert_true(std::isnan(v));
    float h[16] = {0};
    assert_int_equal(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(cudaMemcpy(h, d, sizeof h, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    assert_int_equal(cudaMemcpy(d, h, sizeof h, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    assert_int_equal(cudaMemcpy(d, h, 17 * sizeof(float), cudaMemcpyHostToDevice),
                     cudaErrorInvalidValue); /* past the end */
    assert_int_equal(cudaMemcpy(d + 2, d, 8 * sizeof(float), cudaMemcpyDeviceToDevice),
                     cudaErrorInvalidValue); /* overlap */
    assert_int_equal(cudaMemcpy(d + 8, d, 8 * sizeof(float), cudaMemcpyDeviceToDevice),
                     cudaSuccess);
    assert_int_equal(cudaMemsetAsync(d + 1, 0, 16 * sizeof(float), nullptr),
                     cudaErrorInvalidValue);
    assert_int_equal(cudaFree(d + 1), cudaErrorInvalidDevicePointer);
    (void)cudaGetLastError();
    const size_t live = elle_emu_live_allocations();
    assert_int_equal(cudaFree(d), cudaSuccess);
    assert_int_equal(elle_emu_live_allocations(), live - 1);
    void *huge = nullptr;
    assert_int_equal(cudaMalloc(&huge, (size_t)1 << 40), cudaErrorMemoryAllocation);
    assert_int_equal(cudaGetLastError(), cudaErrorMemoryAllocation);
    assert_int_equal(cudaGetLastError(), cudaSuccess); /* read and reset */
}

/* The host dereferencing a device pointer faults, as on a GPU: the bug
 * "host code reads device memory outside the API's copies" cannot pass. */
void host_cannot_touch_device_memory(void **state)
{
    (void)state;
    const char *e = std::getenv("ELLE_CUDA_EMU_PROTECT");
    if (e && e[0] == '0')
        skip();
    float *d = dev_alloc<float>(4);
    for (int write = 0; write <= 1; write++) {
        const pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            signal(SIGSEGV, SIG_DFL); /* not cmocka's handler */
            volatile float *p = d;
            if (write)
                p[1] = 1.0f;
            else
                (void)p[1];
            _exit(0);
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGSEGV);
    }
    /* while the device works on it (a copy), the same memory is reachable */
    const float h[4] = {1, 2, 3, 4};
    assert_int_equal(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice), cudaSuccess);
    assert_true(to_host(d, 4)[3] == 4.0f);
    cudaFree(d);
}

__global__ void write_at(float *p, int i)
{
    if (threadIdx.x == 0)
        p[i] = 1.0f;
}

/* A kernel that writes past the end of an allocation (a size with no
 * alignment slack) hits the guard page; the last element is fine. */
void overrun_faults(void **state)
{
    (void)state;
    float *d = dev_alloc<float>(64); /* 256 bytes: ends on the guard page */
    ELLE_LAUNCH(1, 32, nullptr, write_at)(d, 63);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        ELLE_LAUNCH(1, 32, nullptr, write_at)(d, 64);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSEGV);
    cudaFree(d);
}

} // namespace

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(barrier_orders_shared_memory),
        cmocka_unit_test(missing_barrier_changes_the_result),
        cmocka_unit_test(shuffle_exchanges_lanes),
        cmocka_unit_test(every_thread_runs_once),
        cmocka_unit_test(misuse_fails_the_launch),
        cmocka_unit_test(runtime_checks_memory),
        cmocka_unit_test(host_cannot_touch_device_memory),
        cmocka_unit_test(overrun_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
