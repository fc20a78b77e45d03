/*
 * The machine's FMA peak, measured rather than looked up: clock rates under
 * load, SMT sharing and virtualisation make nominal figures unreliable, and
 * the conv numbers are judged as a fraction of what this machine actually
 * sustains right now.
 *
 * Each thread runs CHAINS independent dependency chains a = a*m + c. With at
 * least latency x throughput chains in flight (4-cycle FMA latency, 1-2 FMA
 * ports) the FMA units never wait, so FLOPs / time is the issue-rate limit.
 * The kernels are compiled for their ISA with target attributes (the rest of
 * the build stays generic) and dispatched on __builtin_cpu_supports.
 */
#include <omp.h>
#include <stdint.h>
#include <time.h>

#include "bench.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BENCH_X86 1
#endif

double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Written at the end of every kernel run so the chains are live results the
 * compiler must compute. */
static volatile float fma_sink;

#ifdef BENCH_X86

/* 24 zmm accumulators + 2 constants fit the 32 zmm registers without spills. */
#define CHAINS512 24
#define ACC24(X)                                                                            \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) \
    X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)

__attribute__((target("avx512f"))) static float fma_chains_avx512(int64_t iters, float seed)
{
    /* a -> a*m + c converges to c/(1-m) = 1: no overflow and no denormals,
     * which would slow the chains down on some cores. */
    const __m512 m = _mm512_set1_ps(0.9999999f);
    const __m512 c = _mm512_set1_ps(1e-7f);
#define DECL(i) __m512 a##i = _mm512_set1_ps(seed + (float)(i));
    ACC24(DECL)
#undef DECL
    for (int64_t k = 0; k < iters; k++) {
#define STEP(i) a##i = _mm512_fmadd_ps(a##i, m, c);
        ACC24(STEP)
#undef STEP
    }
    __m512 s = _mm512_setzero_ps();
#define SUM(i) s = _mm512_add_ps(s, a##i);
    ACC24(SUM)
#undef SUM
    return _mm512_reduce_add_ps(s);
}

/* Only 16 ymm registers: 12 accumulators + 2 constants, still 3x the
 * latency-throughput product of two 4-cycle FMA ports (8). */
#define CHAINS256 12
#define ACC12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

__attribute__((target("avx2,fma"))) static float fma_chains_avx2(int64_t iters, float seed)
{
    const __m256 m = _mm256_set1_ps(0.9999999f);
    const __m256 c = _mm256_set1_ps(1e-7f);
#define DECL(i) __m256 a##i = _mm256_set1_ps(seed + (float)(i));
    ACC12(DECL)
#undef DECL
    for (int64_t k = 0; k < iters; k++) {
#define STEP(i) a##i = _mm256_fmadd_ps(a##i, m, c);
        ACC12(STEP)
#undef STEP
    }
    __m256 s = _mm256_setzero_ps();
#define SUM(i) s = _mm256_add_ps(s, a##i);
    ACC12(SUM)
#undef SUM
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    float t = 0.0f;
    for (int i = 0; i < 8; i++)
        t += lanes[i];
    return t;
}

int bench_fma_best_isa(void)
{
    __builtin_cpu_init();
    /* libgcc's avx512f / avx2 answers include the OS (XCR0) support check. */
    if (__builtin_cpu_supports("avx512f"))
        return BENCH_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return BENCH_ISA_AVX2;
    return BENCH_ISA_NONE;
}

static float run_kernel(int isa, int64_t iters, float seed)
{
    return isa == BENCH_ISA_AVX512 ? fma_chains_avx512(iters, seed)
                                   : fma_chains_avx2(iters, seed);
}

/* FLOPs of one iteration of one thread's kernel (an FMA is 2 FLOPs). */
static double flops_per_iter(int isa)
{
    return isa == BENCH_ISA_AVX512 ? 2.0 * 16 * CHAINS512 : 2.0 * 8 * CHAINS256;
}

int bench_fma_peak(int isa, int threads, double seconds, bench_peak *out)
{
    out->gflops = 0.0;
    out->seconds = 0.0;
    out->isa = isa;
    out->threads = threads;
    int best = bench_fma_best_isa();
    if (isa == BENCH_ISA_NONE || (isa == BENCH_ISA_AVX512 && best != BENCH_ISA_AVX512) ||
        (isa == BENCH_ISA_AVX2 && best == BENCH_ISA_NONE))
        return -1;
    if (threads < 1)
        threads = 1;

    /* Calibrate on one thread (after a short run that brings the vector
     * units up to speed), then size the run so each thread takes ~seconds. */
    float acc = run_kernel(isa, 100000, 1.0f);
    int64_t probe = 200000;
    double t0 = bench_now_ms();
    acc += run_kernel(isa, probe, 2.0f);
    double dt = bench_now_ms() - t0;
    if (dt < 1e-3)
        dt = 1e-3;
    int64_t iters = (int64_t)((double)probe * seconds * 1e3 / dt);
    if (iters < probe)
        iters = probe;

    /* A peak is a maximum: on a machine shared with other work, a run that
     * lost a time slice says nothing about the hardware. Best of three
     * runs of a third of the time each. */
    iters = iters / 3 > probe / 3 ? iters / 3 : probe / 3;
    for (int rep = 0; rep < 3; rep++) {
        double start = 0.0, stop = 0.0;
        float total = 0.0f;
        int actual = threads;
#pragma omp parallel num_threads(threads) reduction(+ : total)
        {
            /* All threads start together, so the measured interval is time
             * with every core busy (the situation of a multi-threaded conv). */
#pragma omp barrier
#pragma omp master
            {
                actual = omp_get_num_threads(); /* the runtime may give fewer */
                start = bench_now_ms();
            }
            total += run_kernel(isa, iters, 3.0f + (float)omp_get_thread_num());
#pragma omp barrier
#pragma omp master
            stop = bench_now_ms();
        }
        acc += total;
        double ms = stop - start;
        double gf = flops_per_iter(isa) * (double)iters * (double)actual / (ms * 1e6);
        if (gf > out->gflops) {
            out->gflops = gf;
            out->threads = actual;
            out->seconds = ms * 1e-3;
        }
    }
    fma_sink = acc;
    return 0;
}

#else /* not x86 */

int bench_fma_best_isa(void)
{
    return BENCH_ISA_NONE;
}

int bench_fma_peak(int isa, int threads, double seconds, bench_peak *out)
{
    (void)seconds;
    out->gflops = 0.0;
    out->seconds = 0.0;
    out->isa = isa;
    out->threads = threads;
    fma_sink = 0.0f;
    return -1;
}

#endif
