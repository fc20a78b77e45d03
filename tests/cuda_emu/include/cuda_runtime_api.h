/*
 * Host emulation of the CUDA runtime API: the subset libelle's CUDA backend
 * calls, with the real header's names and signatures, implemented on the
 * CPU by emu_runtime.cc. Only the emulated build (tests/cuda_emu) puts this
 * folder on the include path; the real build uses the toolkit's header.
 *
 * "Device" memory is host memory from cudaMalloc, recorded in a registry so
 * copies, memsets and the emulated cuDNN / cuBLAS calls can check that a
 * pointer they are given is device memory of sufficient extent (a host
 * pointer passed where the GPU would need a device pointer is the bug this
 * catches). New allocations are filled with 0xFF bytes (NaN floats), so code
 * that reads memory it never wrote sees NaN, not a lucky zero.
 *
 * As on a real GPU, the host cannot touch device memory: its pages are
 * mapped PROT_NONE except while the emulated device works on them (a
 * kernel, a copy or memset, an emulated cuDNN / cuBLAS call, each between
 * elle_emu_device_begin and _end), so host code that dereferences a device
 * pointer faults (SIGSEGV) instead of silently working.
 * ELLE_CUDA_EMU_PROTECT=0 turns this off, to debug.
 *
 * Streams are accepted and ignored: every call completes before it returns,
 * which is one legal schedule of the asynchronous API.
 */
#ifndef ELLE_CUDA_EMU_RUNTIME_API_H
#define ELLE_CUDA_EMU_RUNTIME_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ELLE_CUDA_HOST_EMU 1

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorLaunchFailure = 719
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;

typedef struct CUstream_st *cudaStream_t;
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01

const char *cudaGetErrorString(cudaError_t error);
const char *cudaGetErrorName(cudaError_t error);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceSynchronize(void);

cudaError_t cudaMalloc(void **ptr, size_t size);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMallocHost(void **ptr, size_t size);
cudaError_t cudaFreeHost(void *ptr);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaMemsetAsync(void *ptr, int value, size_t count, cudaStream_t stream);
cudaError_t cudaMemset(void *ptr, int value, size_t count);

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);

/* ---- emulator services (not CUDA API) -------------------------------- */

/* 1 when [p, p + bytes) lies inside one live cudaMalloc allocation. */
int elle_emu_is_device_range(const void *p, size_t bytes);
/* Record an error of the emulated vendor libraries: printed to stderr with
 * the call's name, so a failing test shows why the emulator refused. */
void elle_emu_report(const char *lib, const char *call, const char *message);
/* Open / close the device's access to device memory (nested; the
 * emulated GPU's own work only). */
void elle_emu_device_begin(void);
void elle_emu_device_end(void);
/* Set by the runtime when a stream was created and not destroyed, etc.:
 * the number of live allocations (cudaMalloc) and streams, for the leak
 * check of the emulated tests. */
size_t elle_emu_live_allocations(void);
/* Successful cudaMalloc calls, and kernel launches, since the program
 * started. */
size_t elle_emu_malloc_calls(void);
size_t elle_emu_launches(void);
/* Fault injection: the nth cudaMalloc (or kernel launch) from now on fails
 * once, with cudaErrorMemoryAllocation (cudaErrorLaunchFailure); 0 turns
 * the injection off. For the tests of the error paths. */
void elle_emu_fail_nth_malloc(size_t nth);
void elle_emu_fail_nth_launch(size_t nth);
size_t elle_emu_live_streams(void);

#ifdef __cplusplus
}
#endif

#endif /* ELLE_CUDA_EMU_RUNTIME_API_H */
