/*
 * The emulated GPU: runs a kernel's grid on the CPU with CUDA's execution
 * model (cuda_runtime.h says what is emulated and what is not).
 *
 * Blocks run one after another. Within a block each thread is a coroutine
 * (ucontext) with its own stack, scheduled round-robin: it runs until it
 * returns or reaches __syncthreads (waits for the whole block) or a shuffle
 * (waits for its warp). When every live thread waits, the scheduler
 * releases a warp whose 32 lanes all wait at a shuffle (after exchanging
 * their values), or else the block when all its threads wait at
 * __syncthreads; anything else (a barrier some threads skip, a shuffle with
 * a lane at __syncthreads, a lane that exited) is a divergence the GPU would
 * hang on or compute garbage from, and fails the launch.
 *
 * Speed: a kernel whose first launch never reached a barrier runs later
 * launches as plain calls, one thread after another, without coroutines
 * (our grid-stride elementwise kernels). Should such a kernel reach a
 * barrier after all, the emulator stops the program with a message: it
 * cannot suspend a plain call.
 */
#include <ucontext.h>

#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <set>
#include <string_view>
#include <vector>

#include "cuda_runtime.h"
#include "emu_internal.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace elle_emu {
namespace {

enum State { RUN, AT_SYNC, AT_SHFL, DONE };

struct Thread {
    ucontext_t ctx;
    State state;
    uint3 idx;
    /* the pending shuffle */
    unsigned mask;
    int lane_mask, width;
    uint64_t value, result;
};

constexpr size_t kStackBytes = 128 * 1024;
constexpr unsigned kMaxThreads = 1024;

struct Block {
    std::vector<Thread> threads;
    std::vector<char *> stacks;
    ucontext_t scheduler;
    int current = -1;     /* index of the running thread, -1 outside coroutines */
    bool direct = false;  /* running plain calls */
    bool barrier_seen = false;
    void (*body)(void *) = nullptr;
    void *body_ctx = nullptr;
};

Block blk;
std::set<const void *> barrier_free; /* kernels that ran without barriers */
/* A launch in progress: blocks run on shared state, so one at a time. Set
 * while the grid runs; still set at the next launch only when the last one
 * never returned (a fault inside a kernel, caught by a test framework's
 * signal handler), and then nothing can be trusted any more. */
std::atomic<bool> in_launch{false};

bool reverse_order()
{
    static int rev = -1;
    if (rev < 0) {
        const char *e = std::getenv("ELLE_CUDA_EMU_ORDER");
        rev = e && std::string_view(e) == "reverse";
    }
    return rev == 1;
}

void trampoline()
{
    blk.body(blk.body_ctx);
    blk.threads[blk.current].state = DONE;
    /* returning resumes the scheduler through uc_link */
}

void ensure_stacks(size_t n)
{
    while (blk.stacks.size() < n) {
        void *p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "cuda emulator: cannot map a thread stack\n");
            std::abort();
        }
        blk.stacks.push_back(static_cast<char *>(p));
    }
}

void switch_in(int t)
{
    blk.current = t;
    threadIdx = blk.threads[t].idx;
    swapcontext(&blk.scheduler, &blk.threads[t].ctx);
    blk.current = -1;
}

/* Yield from the running thread back to the scheduler in state s. */
void wait_as(State s)
{
    if (blk.direct) {
        std::fprintf(stderr,
                     "cuda emulator: a kernel that ran without barriers before reached one; "
                     "it cannot be suspended (run it in coroutine mode)\n");
        std::abort();
    }
    if (blk.current < 0) {
        std::fprintf(stderr, "cuda emulator: barrier or shuffle outside a kernel\n");
        std::abort();
    }
    blk.barrier_seen = true;
    Thread &th = blk.threads[blk.current];
    th.state = s;
    swapcontext(&th.ctx, &blk.scheduler);
}

const char *state_name(State s)
{
    return s == RUN ? "running" : s == AT_SYNC ? "__syncthreads" : s == AT_SHFL ? "a shuffle" : "exited";
}

/* Release what can be released; false on a divergence (message given). */
bool release(unsigned nthreads)
{
    bool released = false;
    for (unsigned w0 = 0; w0 < nthreads; w0 += 32) {
        const unsigned lanes = nthreads - w0 < 32 ? nthreads - w0 : 32;
        unsigned at_shfl = 0;
        for (unsigned l = 0; l < lanes; l++)
            at_shfl += blk.threads[w0 + l].state == AT_SHFL;
        if (at_shfl == 0)
            continue;
        for (unsigned l = 0; l < lanes; l++) {
            const Thread &th = blk.threads[w0 + l];
            if (th.state != AT_SHFL) {
                std::fprintf(stderr,
                             "cuda emulator: warp %u: lanes wait at a shuffle while lane %u is "
                             "at %s\n",
                             w0 / 32, l, state_name(th.state));
                return false;
            }
            const unsigned full = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
            if ((th.mask & full) != full) {
                std::fprintf(stderr,
                             "cuda emulator: warp %u lane %u: shuffle mask 0x%08x leaves out "
                             "lanes that take part\n",
                             w0 / 32, l, th.mask);
                return false;
            }
        }
        for (unsigned l = 0; l < lanes; l++) {
            Thread &th = blk.threads[w0 + l];
            const int width = th.width;
            if (width <= 0 || width > 32 || (width & (width - 1))) {
                std::fprintf(stderr, "cuda emulator: shuffle width %d is not a power of 2 <= 32\n",
                             width);
                return false;
            }
            /* CUDA: the source lane is lane ^ lane_mask within the lane's
             * segment of `width` lanes; outside the segment it keeps its own */
            unsigned src = l ^ (unsigned)th.lane_mask;
            if (src / (unsigned)width != l / (unsigned)width)
                src = l;
            if (src >= lanes) {
                std::fprintf(stderr, "cuda emulator: shuffle reads lane %u of a %u-lane warp\n",
                             src, lanes);
                return false;
            }
            th.result = blk.threads[w0 + src].value;
        }
        for (unsigned l = 0; l < lanes; l++)
            blk.threads[w0 + l].state = RUN;
        released = true;
    }
    if (released)
        return true;
    unsigned at_sync = 0, done = 0;
    for (unsigned t = 0; t < nthreads; t++) {
        at_sync += blk.threads[t].state == AT_SYNC;
        done += blk.threads[t].state == DONE;
    }
    if (at_sync > 0 && done > 0) {
        std::fprintf(stderr,
                     "cuda emulator: %u threads wait at __syncthreads while %u have exited: a "
                     "barrier not every thread of the block reaches\n",
                     at_sync, done);
        return false;
    }
    for (unsigned t = 0; t < nthreads; t++)
        if (blk.threads[t].state == AT_SYNC)
            blk.threads[t].state = RUN;
    return at_sync > 0;
}

bool run_block_coroutines(unsigned nthreads, const dim3 &block)
{
    ensure_stacks(nthreads);
    blk.threads.resize(nthreads);
    for (unsigned t = 0; t < nthreads; t++) {
        Thread &th = blk.threads[t];
        th.state = RUN;
        th.idx = uint3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
        getcontext(&th.ctx);
        th.ctx.uc_stack.ss_sp = blk.stacks[t];
        th.ctx.uc_stack.ss_size = kStackBytes;
        th.ctx.uc_link = &blk.scheduler;
        makecontext(&th.ctx, trampoline, 0);
    }
    const bool rev = reverse_order();
    for (;;) {
        for (unsigned k = 0; k < nthreads; k++) {
            const unsigned t = rev ? nthreads - 1 - k : k;
            if (blk.threads[t].state == RUN)
                switch_in((int)t);
        }
        bool all_done = true;
        for (unsigned t = 0; t < nthreads; t++)
            all_done = all_done && blk.threads[t].state == DONE;
        if (all_done)
            return true;
        if (!release(nthreads))
            return false;
    }
}

void run_block_direct(unsigned nthreads, const dim3 &block)
{
    blk.direct = true;
    const bool rev = reverse_order();
    for (unsigned k = 0; k < nthreads; k++) {
        const unsigned t = rev ? nthreads - 1 - k : k;
        threadIdx = uint3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
        blk.body(blk.body_ctx);
    }
    blk.direct = false;
}

} // namespace

void syncthreads()
{
    wait_as(AT_SYNC);
}

uint64_t shfl_xor_bits(unsigned mask, uint64_t bits, int lane_mask, int width)
{
    if (blk.current >= 0) {
        Thread &th = blk.threads[blk.current];
        th.mask = mask;
        th.value = bits;
        th.lane_mask = lane_mask;
        th.width = width;
    }
    wait_as(AT_SHFL);
    return blk.threads[blk.current].result;
}

void check_kernel_pointer(const void *key, int index, const void *p)
{
    if (p && !elle_emu_is_device_range(p, 1)) {
        char msg[160];
        std::snprintf(msg, sizeof msg,
                      "kernel %p: argument %d (%p) is not NULL and not device memory", key, index,
                      p);
        elle_emu_report("CUDA", "kernel launch", msg);
        set_last_error(cudaErrorInvalidDevicePointer);
    }
}

void run_grid(dim3 grid, dim3 block, const void *key, void (*body)(void *), void *ctx)
{
    if (in_launch.exchange(true)) {
        std::fprintf(stderr, "cuda emulator: a kernel launch began while another was running "
                             "(a fault inside the previous kernel, or launches from two "
                             "threads); stopping\n");
        std::abort();
    }
    const uint64_t nthreads = (uint64_t)block.x * block.y * block.z;
    if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 ||
        block.z > 64 || nthreads > kMaxThreads || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        char msg[160];
        std::snprintf(msg, sizeof msg, "invalid configuration: grid (%u, %u, %u), block (%u, %u, %u)",
                      grid.x, grid.y, grid.z, block.x, block.y, block.z);
        elle_emu_report("CUDA", "kernel launch", msg);
        set_last_error(cudaErrorInvalidConfiguration);
        in_launch = false;
        return;
    }
    if (launch_should_fail()) {
        set_last_error(cudaErrorLaunchFailure); /* injected */
        in_launch = false;
        return;
    }
    elle_emu_device_begin();
    blk.body = body;
    blk.body_ctx = ctx;
    blockDim = block;
    gridDim = grid;
    const bool direct = barrier_free.count(key) > 0;
    blk.barrier_seen = false;
    const uint64_t nblocks = (uint64_t)grid.x * grid.y * grid.z;
    const bool rev = reverse_order();
    for (uint64_t k = 0; k < nblocks; k++) {
        const uint64_t b = rev ? nblocks - 1 - k : k;
        blockIdx = uint3{(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                         (unsigned)(b / ((uint64_t)grid.x * grid.y))};
        if (direct) {
            run_block_direct((unsigned)nthreads, block);
        } else if (!run_block_coroutines((unsigned)nthreads, block)) {
            elle_emu_report("CUDA", "kernel launch", "divergent barrier or shuffle (see above)");
            set_last_error(cudaErrorLaunchFailure);
            elle_emu_device_end();
            in_launch = false;
            return;
        }
    }
    if (!direct && !blk.barrier_seen)
        barrier_free.insert(key);
    elle_emu_device_end();
    in_launch = false;
}

} // namespace elle_emu
