/*
 * The emulated CUDA runtime (cuda_runtime_api.h): devices, memory, copies,
 * streams and the last-error slot, on the host.
 *
 * Every call checks what the real runtime checks, and a little more that a
 * GPU would only punish later: copies must name the right sides (a host
 * pointer where the device one belongs, or the reverse, is refused), device
 * ranges must lie inside one live allocation, device-to-device copies must
 * not overlap (cudaMemcpy's are undefined then), and cudaFree must get what
 * cudaMalloc gave. Refusals are printed to stderr and returned as the
 * runtime's error codes.
 *
 * Device memory is mmap'd, and PROT_NONE whenever the emulated device is
 * not working on it (cuda_runtime_api.h): host code that dereferences a
 * device pointer faults as it would on a GPU. Each allocation ends at a
 * guard page, so running past its end faults too.
 *
 * ELLE_CUDA_EMU_DEVICES sets the device count (default 1; 0 emulates a
 * machine without a GPU); ELLE_CUDA_EMU_PROTECT=0 leaves device memory
 * readable by the host.
 */
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <set>

#include "cuda_runtime_api.h"
#include "emu_internal.h"

struct CUstream_st {
    unsigned flags;
};

namespace {

/* Emulated device memory: more than the tests use, less than a host can
 * back, so "out of device memory" paths can be taken on purpose. */
constexpr size_t kDeviceBytes = (size_t)16 << 30;

std::mutex mu;
std::map<uintptr_t, size_t> allocations; /* start -> bytes */
size_t allocated = 0;
size_t malloc_calls = 0;
size_t launches = 0;
size_t fail_malloc_in = 0, fail_launch_in = 0; /* countdowns of the injection, 0 = off */
std::set<cudaStream_t> streams;
std::set<void *> host_allocations;
thread_local cudaError_t last_error = cudaSuccess;
int device_depth = 0; /* nesting of elle_emu_device_begin; under mu */
thread_local int current_device = 0;

cudaError_t fail(cudaError_t err, const char *call, const char *message)
{
    elle_emu_report("CUDA", call, message);
    last_error = err;
    return err;
}

int device_count()
{
    const char *e = std::getenv("ELLE_CUDA_EMU_DEVICES");
    return e ? std::atoi(e) : 1;
}

/* The allocation holding [p, p + bytes), or allocations.end(). Caller
 * holds mu. */
std::map<uintptr_t, size_t>::const_iterator find_range(const void *p, size_t bytes)
{
    const uintptr_t a = (uintptr_t)p;
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin())
        return allocations.end();
    --it;
    if (a - it->first > it->second || bytes > it->second - (a - it->first))
        return allocations.end();
    return it;
}

bool is_device(const void *p, size_t bytes)
{
    std::lock_guard<std::mutex> lock(mu);
    return find_range(p, bytes ? bytes : 1) != allocations.end();
}

/* Any byte of [p, p + bytes) in device memory. */
bool touches_device(const void *p, size_t bytes)
{
    std::lock_guard<std::mutex> lock(mu);
    const uintptr_t a = (uintptr_t)p, end = a + (bytes ? bytes : 1);
    auto it = allocations.lower_bound(end);
    if (it == allocations.begin())
        return false;
    --it;
    return it->first + it->second > a;
}

bool protecting()
{
    static int on = -1;
    if (on < 0) {
        const char *e = std::getenv("ELLE_CUDA_EMU_PROTECT");
        on = !(e && e[0] == '0');
    }
    return on == 1;
}

size_t page_bytes()
{
    static const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

/* An allocation's layout: [guard page][data pages][guard page], the data
 * placed at the END of its pages (256-aligned, as cudaMalloc promises), so
 * a kernel or library that runs past the end of an allocation by more than
 * the alignment slack hits the guard page and faults. The guards are never
 * opened. */
size_t data_span(size_t size)
{
    const size_t page = page_bytes(), r = (size + 255) / 256 * 256;
    return (r + page - 1) / page * page;
}

uintptr_t data_pages(uintptr_t p)
{
    return p & ~(uintptr_t)(page_bytes() - 1);
}

/* Caller holds mu. */
void protect(uintptr_t start, size_t size, bool open)
{
    if (protecting() && mprotect((void *)data_pages(start), data_span(size),
                                 open ? PROT_READ | PROT_WRITE : PROT_NONE)) {
        std::perror("cuda emulator: mprotect");
        std::abort();
    }
}

/* Opens device memory to the emulated device for its lifetime. */
struct DeviceWork {
    DeviceWork() { elle_emu_device_begin(); }
    ~DeviceWork() { elle_emu_device_end(); }
};

bool stream_ok(cudaStream_t s)
{
    std::lock_guard<std::mutex> lock(mu);
    return s == nullptr || streams.count(s) > 0;
}

} // namespace

namespace elle_emu {
void set_last_error(cudaError_t err)
{
    last_error = err;
}

bool launch_should_fail()
{
    std::lock_guard<std::mutex> lock(mu);
    launches++;
    return fail_launch_in > 0 && --fail_launch_in == 0;
}
} // namespace elle_emu

extern "C" {

int elle_emu_is_device_range(const void *p, size_t bytes)
{
    return p && is_device(p, bytes);
}

void elle_emu_report(const char *lib, const char *call, const char *message)
{
    std::fprintf(stderr, "cuda emulator: %s %s: %s\n", lib, call, message);
}

void elle_emu_device_begin(void)
{
    std::lock_guard<std::mutex> lock(mu);
    if (device_depth++ == 0)
        for (const auto &a : allocations)
            protect(a.first, a.second, true);
}

void elle_emu_device_end(void)
{
    std::lock_guard<std::mutex> lock(mu);
    if (--device_depth == 0)
        for (const auto &a : allocations)
            protect(a.first, a.second, false);
}

size_t elle_emu_live_allocations(void)
{
    std::lock_guard<std::mutex> lock(mu);
    return allocations.size();
}

void elle_emu_fail_nth_malloc(size_t nth)
{
    std::lock_guard<std::mutex> lock(mu);
    fail_malloc_in = nth;
}

void elle_emu_fail_nth_launch(size_t nth)
{
    std::lock_guard<std::mutex> lock(mu);
    fail_launch_in = nth;
}

size_t elle_emu_launches(void)
{
    std::lock_guard<std::mutex> lock(mu);
    return launches;
}

size_t elle_emu_malloc_calls(void)
{
    std::lock_guard<std::mutex> lock(mu);
    return malloc_calls;
}

size_t elle_emu_live_streams(void)
{
    std::lock_guard<std::mutex> lock(mu);
    return streams.size();
}

const char *cudaGetErrorName(cudaError_t error)
{
    switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t error)
{
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return last_error;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    if (!count)
        return fail(cudaErrorInvalidValue, "cudaGetDeviceCount", "count is NULL");
    const int n = device_count();
    *count = n > 0 ? n : 0;
    if (n <= 0)
        return fail(cudaErrorNoDevice, "cudaGetDeviceCount", "ELLE_CUDA_EMU_DEVICES=0");
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    if (!device)
        return fail(cudaErrorInvalidValue, "cudaGetDevice", "device is NULL");
    if (device_count() <= 0)
        return fail(cudaErrorNoDevice, "cudaGetDevice", "no emulated device");
    *device = current_device;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    if (device < 0 || device >= device_count())
        return fail(cudaErrorInvalidDevice, "cudaSetDevice", "no such device");
    current_device = device;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t size)
{
    if (!ptr)
        return fail(cudaErrorInvalidValue, "cudaMalloc", "ptr is NULL");
    if (device_count() <= 0)
        return fail(cudaErrorNoDevice, "cudaMalloc", "no emulated device");
    *ptr = nullptr;
    if (size == 0)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> lock(mu);
        if (fail_malloc_in > 0 && --fail_malloc_in == 0) {
            last_error = cudaErrorMemoryAllocation;
            return cudaErrorMemoryAllocation; /* injected */
        }
        if (size > kDeviceBytes - allocated) {
            last_error = cudaErrorMemoryAllocation;
            return cudaErrorMemoryAllocation; /* an expected outcome: no report */
        }
    }
    const size_t page = page_bytes(), span = data_span(size);
    char *base = static_cast<char *>(mmap(nullptr, span + 2 * page, PROT_NONE,
                                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (base == MAP_FAILED) {
        last_error = cudaErrorMemoryAllocation;
        return cudaErrorMemoryAllocation;
    }
    void *p = base + page + span - (size + 255) / 256 * 256;
    if (mprotect(base + page, span, PROT_READ | PROT_WRITE)) {
        munmap(base, span + 2 * page);
        last_error = cudaErrorMemoryAllocation;
        return cudaErrorMemoryAllocation;
    }
    std::memset(p, 0xFF, size); /* NaN: reading unwritten memory shows */
    std::lock_guard<std::mutex> lock(mu);
    allocations[(uintptr_t)p] = size;
    allocated += size;
    malloc_calls++;
    protect((uintptr_t)p, size, device_depth > 0);
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    if (!ptr)
        return cudaSuccess;
    std::lock_guard<std::mutex> lock(mu);
    auto it = allocations.find((uintptr_t)ptr);
    if (it == allocations.end())
        return fail(cudaErrorInvalidDevicePointer, "cudaFree",
                    "not the start of a live cudaMalloc allocation");
    allocated -= it->second;
    munmap((void *)(data_pages((uintptr_t)ptr) - page_bytes()),
           data_span(it->second) + 2 * page_bytes());
    allocations.erase(it);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t size)
{
    if (!ptr)
        return fail(cudaErrorInvalidValue, "cudaMallocHost", "ptr is NULL");
    *ptr = std::malloc(size ? size : 1);
    if (!*ptr)
        return fail(cudaErrorMemoryAllocation, "cudaMallocHost", "out of host memory");
    std::lock_guard<std::mutex> lock(mu);
    host_allocations.insert(*ptr);
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *ptr)
{
    if (!ptr)
        return cudaSuccess;
    std::lock_guard<std::mutex> lock(mu);
    if (!host_allocations.erase(ptr))
        return fail(cudaErrorInvalidValue, "cudaFreeHost", "not from cudaMallocHost");
    std::free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream)
{
    if (!stream_ok(stream))
        return fail(cudaErrorInvalidValue, "cudaMemcpyAsync", "unknown stream");
    if (count == 0)
        return cudaSuccess;
    if (!dst || !src)
        return fail(cudaErrorInvalidValue, "cudaMemcpyAsync", "NULL pointer");
    const bool dst_dev = is_device(dst, count), src_dev = is_device(src, count);
    const bool dst_touch = touches_device(dst, count), src_touch = touches_device(src, count);
    const char *why = nullptr;
    switch (kind) {
    case cudaMemcpyHostToDevice:
        why = !dst_dev ? "dst is not device memory of that size"
              : src_touch ? "src is device memory, the kind says host" : nullptr;
        break;
    case cudaMemcpyDeviceToHost:
        why = !src_dev ? "src is not device memory of that size"
              : dst_touch ? "dst is device memory, the kind says host" : nullptr;
        break;
    case cudaMemcpyDeviceToDevice:
        why = !src_dev ? "src is not device memory of that size"
              : !dst_dev ? "dst is not device memory of that size" : nullptr;
        break;
    case cudaMemcpyHostToHost:
        why = src_touch || dst_touch ? "device memory in a host-to-host copy" : nullptr;
        break;
    case cudaMemcpyDefault:
        why = (src_touch && !src_dev) || (dst_touch && !dst_dev)
                  ? "a range runs past the end of its allocation"
                  : nullptr;
        break;
    default:
        return fail(cudaErrorInvalidMemcpyDirection, "cudaMemcpyAsync", "unknown kind");
    }
    if (why)
        return fail(cudaErrorInvalidValue, "cudaMemcpyAsync", why);
    const uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src;
    if (d < s + count && s < d + count)
        return fail(cudaErrorInvalidValue, "cudaMemcpyAsync",
                    "overlapping source and destination (undefined for cudaMemcpy)");
    DeviceWork work;
    std::memcpy(dst, src, count);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, cudaMemcpyKind kind)
{
    return cudaMemcpyAsync(dst, src, count, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t count, cudaStream_t stream)
{
    if (!stream_ok(stream))
        return fail(cudaErrorInvalidValue, "cudaMemsetAsync", "unknown stream");
    if (count == 0)
        return cudaSuccess;
    if (!is_device(ptr, count))
        return fail(cudaErrorInvalidValue, "cudaMemsetAsync",
                    "not device memory of that size");
    DeviceWork work;
    std::memset(ptr, value, count);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *ptr, int value, size_t count)
{
    return cudaMemsetAsync(ptr, value, count, nullptr);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    if (!stream)
        return fail(cudaErrorInvalidValue, "cudaStreamCreateWithFlags", "stream is NULL");
    if (device_count() <= 0)
        return fail(cudaErrorNoDevice, "cudaStreamCreateWithFlags", "no emulated device");
    *stream = new CUstream_st{flags};
    std::lock_guard<std::mutex> lock(mu);
    streams.insert(*stream);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    std::lock_guard<std::mutex> lock(mu);
    if (!stream || !streams.erase(stream)) {
        last_error = cudaErrorInvalidValue;
        elle_emu_report("CUDA", "cudaStreamDestroy", "unknown stream");
        return cudaErrorInvalidValue;
    }
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    if (!stream_ok(stream))
        return fail(cudaErrorInvalidValue, "cudaStreamSynchronize", "unknown stream");
    return cudaSuccess;
}

} // extern "C"
