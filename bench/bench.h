/*
 * elle-bench internals shared between its source files.
 */
#ifndef ELLE_BENCH_H
#define ELLE_BENCH_H

/* Which instruction set the FMA peak kernel used. */
enum { BENCH_ISA_AVX512 = 1, BENCH_ISA_AVX2 = 2, BENCH_ISA_NONE = 0 };

typedef struct bench_peak {
    double gflops;   /* all threads together */
    double seconds;  /* wall time of the timed run */
    int isa;         /* BENCH_ISA_* actually used */
    int threads;
} bench_peak;

/* Best FMA ISA this CPU (and OS) supports: BENCH_ISA_AVX512, _AVX2 or _NONE. */
int bench_fma_best_isa(void);

/*
 * Measure the FMA throughput of `threads` OpenMP threads running independent
 * FMA chains in `isa` simultaneously for about `seconds` (best of three
 * runs). Returns 0, or -1 when the ISA is not available (out->gflops is
 * then 0).
 */
int bench_fma_peak(int isa, int threads, double seconds, bench_peak *out);

/* Milliseconds on CLOCK_MONOTONIC. */
double bench_now_ms(void);

#endif /* ELLE_BENCH_H */
