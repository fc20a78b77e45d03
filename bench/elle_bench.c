/*
 * elle-bench: the numbers behind the foundation issue's performance target.
 *
 *   1. PreActResNet-18 through the public API (batch 128, training mode):
 *      forward, forward + backward with parameter gradients, and the
 *      input-gradient-only backward attacks use.
 *   2. Every distinct conv2d of that network as isolated backend primitives
 *      (fwd, bwd_data, bwd_weights) in the layouts the network uses, as
 *      GFLOP/s and % of the measured FMA peak, and the network time over the
 *      sum of its conv primitives (target: fwd+bwd <= 1.2x the conv sum;
 *      the rest is batch norm, residual adds, copies and overhead).
 *   3. An instrumented training step on a net built with the same builder,
 *      timing every layer, so the gap between the network and its convs can
 *      be pinned on layer kinds.
 *   4. The machine's FMA peak, measured here (bench/fma_peak.c).
 *   5. The steps scripts/bench.sh compares with PyTorch (bench/torch_bench.py),
 *      through the public API: a training step (zero grad, forward, mean
 *      cross-entropy, backward, SGD with lr 0.01, momentum 0.9, weight decay
 *      5e-4) and an FGSM-AT step (elle_model_input_grad, x + eps*sign(g) on
 *      the host with eps = 8/255, then a training step on that point).
 *      `--only fwd|train|fgsm` runs one of these workloads and nothing else,
 *      so the process's peak RSS (getrusage ru_maxrss) is that workload's.
 *
 * `--backend cuda` runs the same parts on the GPU (exit 77 when this build or
 * machine has no CUDA device). A CUDA backend queues work and returns, so
 * every timed region starts and ends with the backend's sync (a no-op on the
 * CPU backends) before the clock is read; the FMA peak, a CPU figure, is
 * then not measured and the conv rows have no % of peak.
 *
 * Output: a human-readable table, and one flat JSON object name -> number.
 * With --json PATH the table goes to stdout and the JSON to PATH; without
 * --json the JSON goes to stdout and the table to stderr, so a caller that
 * captures stdout gets a clean document either way.
 *
 * This is a benchmark, not a test: nothing is asserted about the times.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#ifdef ELLE_BENCH_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

#include "bench.h"
#include "core/context.h"     /* struct elle_context: the backend behind a context */
#include "elle/context.h"
#include "elle/error.h"
#include "elle/model.h"
#include "elle/optim.h"
#include "elle/version.h"
#include "nn/models/models.h" /* struct elle_model_config, the architecture builders */
#include "nn/net.h"

/* ---- options ----------------------------------------------------------------- */

/* Workloads of part 5; --only selects one of them. */
enum { STEP_FWD = 1, STEP_TRAIN = 2, STEP_FGSM = 4 };

typedef struct opts {
    const char *json_path; /* NULL: JSON on stdout */
    int threads;
    int batch;
    int iters;
    int warmup;
    int width; /* PreActResNet-18 stem width (64; --quick narrows it) */
    int quick;
    int layers; /* print the per-layer table */
    int only;   /* 0: everything; else one STEP_* workload alone */
    elle_backend backend;
    double peak_seconds;
} opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: elle-bench [options]\n"
            "  --json PATH     write the results as one JSON object to PATH (directories are\n"
            "                  created); without it the JSON goes to stdout, the table to stderr\n"
            "  --threads N     compute threads (default: online CPUs)\n"
            "  --batch B       batch size (default 128)\n"
            "  --iters K       timed iterations (default 5)\n"
            "  --warmup W      untimed warm-up iterations (default 2)\n"
            "  --width W       PreActResNet-18 stem width (default 64)\n"
            "  --backend NAME  cpu (default), reference or cuda\n"
            "  --layers        also print every layer's time\n"
            "  --only NAME     run only this workload, through the public API, and report the\n"
            "                  process's peak RSS: fwd, train (training step) or fgsm (FGSM-AT\n"
            "                  step)\n"
            "  --quick         smoke-test sizes: batch 4, width 8, 2 iterations, 1 warm-up\n"
            "exit status: 0 success, 1 failure, 2 bad arguments, 77 backend not available (not\n"
            "             in this build, or no CUDA device)\n");
}

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "elle-bench: %s needs an integer in [%d, %d], got '%s'\n", flag, lo, hi,
                s ? s : "");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, opts *o)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (opts){.threads = online > 0 ? (int)online : 1, .batch = 128, .iters = 5, .warmup = 2,
                .width = 64, .backend = ELLE_BACKEND_CPU, .peak_seconds = 0.3};
    int batch = -1, iters = -1, warmup = -1, width = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(a, "--json") == 0) {
            if (!v) {
                fprintf(stderr, "elle-bench: --json needs a path\n");
                return -1;
            }
            o->json_path = v;
            i++;
        } else if (strcmp(a, "--threads") == 0) {
            rc = parse_int(a, v, 1, 4096, &o->threads), i++;
        } else if (strcmp(a, "--batch") == 0) {
            rc = parse_int(a, v, 1, 1 << 16, &batch), i++;
        } else if (strcmp(a, "--iters") == 0) {
            rc = parse_int(a, v, 1, 100000, &iters), i++;
        } else if (strcmp(a, "--warmup") == 0) {
            rc = parse_int(a, v, 0, 100000, &warmup), i++;
        } else if (strcmp(a, "--width") == 0) {
            rc = parse_int(a, v, 1, 4096, &width), i++;
        } else if (strcmp(a, "--backend") == 0) {
            if (!v || elle_backend_from_name(v, &o->backend) < 0) {
                fprintf(stderr, "elle-bench: --backend takes cpu, reference or cuda\n");
                return -1;
            }
            i++;
        } else if (strcmp(a, "--only") == 0) {
            if (v && strcmp(v, "fwd") == 0)
                o->only = STEP_FWD;
            else if (v && strcmp(v, "train") == 0)
                o->only = STEP_TRAIN;
            else if (v && strcmp(v, "fgsm") == 0)
                o->only = STEP_FGSM;
            else {
                fprintf(stderr, "elle-bench: --only takes fwd, train or fgsm\n");
                return -1;
            }
            i++;
        } else if (strcmp(a, "--quick") == 0) {
            o->quick = 1;
        } else if (strcmp(a, "--layers") == 0) {
            o->layers = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "elle-bench: unknown argument '%s'\n", a);
            usage(stderr);
            return -1;
        }
        if (rc < 0)
            return -1;
    }
    if (o->quick) {
        /* Small enough for `meson test` (a few seconds even on two busy
         * cores), large enough to run every code path of the full run. */
        o->batch = 4;
        o->width = 8;
        o->iters = 2;
        o->warmup = 1;
        o->peak_seconds = 0.1;
    }
    /* explicit flags win over --quick */
    if (batch > 0)
        o->batch = batch;
    if (iters > 0)
        o->iters = iters;
    if (warmup >= 0)
        o->warmup = warmup;
    if (width > 0)
        o->width = width;
    return 0;
}

/* ---- results: an ordered list of name -> number -------------------------------- */

typedef struct result {
    char name[96];
    double value;
    int integer;
} result;

typedef struct results {
    result *r;
    int n, cap;
} results;

static void put_value(results *rs, const char *name, double v, int integer)
{
    if (rs->n == rs->cap) {
        int cap = rs->cap ? 2 * rs->cap : 128;
        result *p = realloc(rs->r, (size_t)cap * sizeof *p);
        if (!p) {
            fprintf(stderr, "elle-bench: out of memory\n");
            exit(1);
        }
        rs->r = p;
        rs->cap = cap;
    }
    result *e = &rs->r[rs->n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->value = v;
    e->integer = integer;
}

static void put(results *rs, const char *name, double v)
{
    put_value(rs, name, v, 0);
}

static void put_int(results *rs, const char *name, long long v)
{
    put_value(rs, name, (double)v, 1);
}

static void putf(results *rs, double v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void putf(results *rs, double v, const char *fmt, ...)
{
    char name[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    put(rs, name, v);
}

/* ---- helpers --------------------------------------------------------------------- */

static int fail(int rc, const char *what)
{
    const elle_error *e = elle_error_last();
    fprintf(stderr, "elle-bench: %s failed: %s: %s\n", what, elle_status_name(rc),
            e->message[0] ? e->message : "(no message)");
    return rc;
}

#define BENCH_TRY(expr)                  \
    do {                                 \
        int bench_rc_ = (expr);          \
        if (bench_rc_ < 0)               \
            return fail(bench_rc_, #expr); \
    } while (0)

#define BENCH_TRY_GOTO(rc, expr)     \
    do {                             \
        (rc) = (expr);               \
        if ((rc) < 0) {              \
            fail((rc), #expr);       \
            goto cleanup;            \
        }                            \
    } while (0)

/*
 * Wait for the backend's queued work. A CUDA backend returns from an op once
 * the work is queued, so a clock read without this would time the queueing;
 * the CPU backends answer at once.
 */
static int dev_sync(elle__backend *be)
{
    return be->ops->sync ? be->ops->sync(be) : 0;
}

typedef struct stat2 {
    double med, min;
} stat2;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median and minimum of n samples (n <= 4096). */
static stat2 stats(const double *v, int n)
{
    double s[4096];
    stat2 r = {0.0, 0.0};
    if (n < 1)
        return r;
    if (n > 4096)
        n = 4096;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    r.min = s[0];
    r.med = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    return r;
}

/* Deterministic inputs: images uniform in [0, 1), labels uniform in [0, k). */
static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void fill_batch(float *x, int64_t count, int32_t *labels, int64_t n, int64_t k)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < count; i++)
        x[i] = (float)(xorshift(&s) >> 40) * (1.0f / 16777216.0f);
    for (int64_t i = 0; i < n; i++)
        labels[i] = (int32_t)(xorshift(&s) % (uint64_t)k);
}

/* mkdir -p of the directory part of `path`. */
static int make_parent_dirs(const char *path)
{
    char buf[4096];
    if (strlen(path) >= sizeof buf)
        return -1;
    strcpy(buf, path);
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return 0;
    *slash = '\0';
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* ---- machine information ------------------------------------------------------- */

static void cpu_model(char *out, size_t size)
{
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        const char *v = strchr(line, ':');
        if (!v)
            break;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        snprintf(out, size, "%s", v);
        out[strcspn(out, "\n")] = '\0';
        break;
    }
    fclose(f);
}

#ifdef ELLE_BENCH_HAVE_DNNL
static const char *dnnl_isa_name(int isa)
{
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    default: return "other";
    }
}
#endif

static void machine_info(const opts *o, results *rs, FILE *tbl)
{
    char model[256];
    cpu_model(model, sizeof model);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    fprintf(tbl, "elle-bench, libelle %s (headers %s)\n", elle_version_string(),
            ELLE_VERSION_STRING);
    fprintf(tbl, "machine   %s, %ld CPUs online, %d compute threads\n", model, online,
            o->threads);
    put_int(rs, "elle_version_number", elle_version_number());
    put_int(rs, "threads", o->threads);
    put_int(rs, "cpus_online", online);
#ifdef ELLE_BENCH_HAVE_DNNL
    const dnnl_version_t *v = dnnl_version();
    int isa = (int)dnnl_get_effective_cpu_isa();
    fprintf(tbl, "oneDNN    %d.%d.%d, effective ISA %s (0x%x)\n", v->major, v->minor, v->patch,
            dnnl_isa_name(isa), (unsigned)isa);
    put_int(rs, "onednn_version_number", v->major * 10000 + v->minor * 100 + v->patch);
    put_int(rs, "onednn_isa", isa);
#else
    fprintf(tbl, "oneDNN    (headers not found at build time)\n");
#endif
    double load[3];
    if (getloadavg(load, 3) == 3) {
        fprintf(tbl, "load      %.2f %.2f %.2f (1/5/15 min) at start\n", load[0], load[1],
                load[2]);
        put(rs, "loadavg_1min_start", load[0]);
    }
    fprintf(tbl, "settings  backend %s, batch %d, %d timed iterations after %d warm-up%s\n",
            elle_backend_name(o->backend), o->batch, o->iters, o->warmup,
            o->quick ? ", --quick" : "");
    put_int(rs, "backend_cpu", o->backend == ELLE_BACKEND_CPU);
    put_int(rs, "backend_cuda", o->backend == ELLE_BACKEND_CUDA);
    put_int(rs, "batch", o->batch);
    put_int(rs, "iters", o->iters);
    put_int(rs, "warmup", o->warmup);
    put_int(rs, "width", o->width);
    put_int(rs, "quick", o->quick);
}

/* ---- 3. FMA peak ---------------------------------------------------------------- */

static double measure_peak(const opts *o, results *rs, FILE *tbl)
{
    int isa = bench_fma_best_isa();
    if (isa == BENCH_ISA_NONE) {
        fprintf(tbl, "FMA peak  no AVX2/AVX-512 FMA on this CPU; %% of peak not reported\n");
        put_int(rs, "fma_peak_isa_avx512", 0);
        return 0.0;
    }
    bench_peak all, one, avx2 = {0};
    bench_fma_peak(isa, o->threads, o->peak_seconds, &all);
    bench_fma_peak(isa, 1, o->peak_seconds, &one);
    fprintf(tbl, "FMA peak  %.1f GFLOP/s on %d threads with %s (1 thread: %.1f)", all.gflops,
            all.threads, isa == BENCH_ISA_AVX512 ? "AVX-512" : "AVX2+FMA", one.gflops);
    if (isa == BENCH_ISA_AVX512) {
        /* Some cores (AMD Zen 4, Intel parts with one 512-bit FMA port)
         * reach the same FLOP rate with 256-bit vectors: worth knowing when
         * judging which ISA oneDNN should dispatch to. */
        bench_fma_peak(BENCH_ISA_AVX2, o->threads, o->peak_seconds, &avx2);
        fprintf(tbl, "; AVX2 on %d threads: %.1f", avx2.threads, avx2.gflops);
    }
    fprintf(tbl, "\n");
    put(rs, "fma_peak_gflops", all.gflops);
    put_int(rs, "fma_peak_isa_avx512", isa == BENCH_ISA_AVX512);
    put(rs, "fma_peak_1t_gflops", one.gflops);
    if (isa == BENCH_ISA_AVX512)
        put(rs, "fma_peak_avx2_gflops", avx2.gflops);
    return all.gflops;
}

/*
 * Other processes' CPU use: on a shared machine it is what makes a timing
 * meaningless (the 1-minute load average lags and counts this process too).
 * Busy time of all CPUs from /proc/stat (user, nice, system, irq, softirq,
 * steal) minus this process's own user + system time, over an interval.
 */
typedef struct cpu_snap {
    double busy_s; /* all CPUs, seconds; < 0 when /proc/stat is unreadable */
    double own_s;  /* this process, all threads */
    double wall_ms;
} cpu_snap;

static void cpu_snap_take(cpu_snap *c)
{
    unsigned long long v[8] = {0};
    c->busy_s = -1.0;
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) == 8) {
            long hz = sysconf(_SC_CLK_TCK);
            /* user nice system [idle iowait] irq softirq steal */
            c->busy_s = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) /
                        (double)(hz > 0 ? hz : 100);
        }
        fclose(f);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    c->own_s = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
               (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
    c->wall_ms = bench_now_ms();
}

/* Other processes' share of the machine's CPU time between a and b, in %
 * (-1: unknown). */
static double other_cpu_pct(const cpu_snap *a, const cpu_snap *b)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    double wall_s = 1e-3 * (b->wall_ms - a->wall_ms);
    if (a->busy_s < 0.0 || b->busy_s < 0.0 || wall_s <= 0.0 || cpus < 1)
        return -1.0;
    double other = (b->busy_s - a->busy_s) - (b->own_s - a->own_s);
    double pct = 100.0 * other / (wall_s * (double)cpus);
    return pct < 0.0 ? 0.0 : pct;
}

/* ---- 1. the model through the public API --------------------------------------- */

enum { MODE_FWD, MODE_FWD_BWD, MODE_INPUT_GRAD, N_MODES };
static const char *const mode_key[N_MODES] = {"prn18_fwd", "prn18_fwd_bwd", "prn18_input_grad"};
static const char *const mode_label[N_MODES] = {"forward", "forward + backward (param grads)",
                                                 "forward + input-gradient backward"};

static int config_for(const opts *o, elle_model_config **cfg)
{
    BENCH_TRY(elle_model_config_create(cfg, "preact_resnet18"));
    int rc = elle_model_config_set_param(*cfg, ELLE_MODEL_PARAM_WIDTH, o->width);
    if (rc < 0) {
        elle_model_config_free(*cfg);
        *cfg = NULL;
        return fail(rc, "elle_model_config_set_param(width)");
    }
    return 0;
}

static int bench_model_api(const opts *o, elle_context *ctx, results *rs, FILE *tbl,
                           double med[N_MODES])
{
    elle_model_config *cfg = NULL;
    elle_model *model = NULL;
    float *x = NULL, *logits = NULL, *dx = NULL, *loss = NULL;
    int32_t *labels = NULL;
    double *t = NULL;
    int rc = 0;
    BENCH_TRY(config_for(o, &cfg));
    BENCH_TRY_GOTO(rc, elle_model_create(&model, ctx, cfg));
    BENCH_TRY_GOTO(rc, elle_model_reserve(model, o->batch));
    BENCH_TRY_GOTO(rc, elle_model_set_training(model, 1));

    int64_t c, h, w, n = o->batch;
    BENCH_TRY_GOTO(rc, elle_model_input_shape(model, &c, &h, &w));
    int64_t k = elle_model_num_classes(model);
    x = malloc((size_t)(n * c * h * w) * sizeof *x);
    dx = malloc((size_t)(n * c * h * w) * sizeof *dx);
    logits = malloc((size_t)(n * k) * sizeof *logits);
    loss = malloc((size_t)n * sizeof *loss);
    labels = malloc((size_t)n * sizeof *labels);
    t = malloc((size_t)o->iters * sizeof *t);
    if (!x || !dx || !logits || !loss || !labels || !t) {
        fprintf(stderr, "elle-bench: out of memory\n");
        rc = ELLE_ENOMEM;
        goto cleanup;
    }
    fill_batch(x, n * c * h * w, labels, n, k);

    fprintf(tbl, "\nPreActResNet-18 (width %d, %lldx%lldx%lld, %lld classes, %lld parameters), "
                 "batch %d, training mode, public API\n",
            o->width, (long long)c, (long long)h, (long long)w, (long long)k,
            (long long)elle_model_num_params(model), o->batch);
    fprintf(tbl, "  %-36s %10s %10s %10s %10s\n", "", "median ms", "min ms", "img/s",
            "other CPU");
    BENCH_TRY_GOTO(rc, dev_sync(&ctx->be));
    for (int m = 0; m < N_MODES; m++) {
        cpu_snap c0, c1;
        cpu_snap_take(&c0);
        for (int it = 0; it < o->warmup + o->iters; it++) {
            double t0 = bench_now_ms();
            switch (m) {
            case MODE_FWD:
                rc = elle_model_forward(model, x, n, logits);
                break;
            case MODE_FWD_BWD:
                /* parameter gradients accumulate; zero_grad is not part of
                 * the timed step (an optimiser would do it once per step) */
                rc = elle_model_backward(model, x, labels, n, loss, NULL);
                break;
            default:
                rc = elle_model_input_grad(model, x, labels, n, dx, loss);
                break;
            }
            if (rc >= 0)
                rc = dev_sync(&ctx->be);
            double dt = bench_now_ms() - t0;
            if (rc < 0) {
                fail(rc, mode_key[m]);
                goto cleanup;
            }
            if (it >= o->warmup)
                t[it - o->warmup] = dt;
        }
        cpu_snap_take(&c1);
        double other = other_cpu_pct(&c0, &c1);
        stat2 s = stats(t, o->iters);
        med[m] = s.med;
        fprintf(tbl, "  %-36s %10.2f %10.2f %10.1f %9.1f%%\n", mode_label[m], s.med, s.min,
                (double)n * 1e3 / s.med, other);
        putf(rs, s.med, "%s_ms", mode_key[m]);
        if (other >= 0.0)
            putf(rs, other, "%s_other_cpu_pct", mode_key[m]);
        putf(rs, s.min, "%s_min_ms", mode_key[m]);
        putf(rs, (double)n * 1e3 / s.med, "%s_img_per_s", mode_key[m]);
    }
    put_int(rs, "prn18_params", elle_model_num_params(model));
    rc = 0;
cleanup:
    elle_model_free(model);
    elle_model_config_free(cfg);
    free(x);
    free(dx);
    free(logits);
    free(loss);
    free(labels);
    free(t);
    return rc;
}

/* ---- 5. training and FGSM-AT steps (compared with PyTorch) ----------------------- */

/* Peak resident set of this process so far, MiB (Linux: ru_maxrss in KiB). */
static double peak_rss_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return 0.0;
    return (double)ru.ru_maxrss / 1024.0;
}

/* x + eps*sign(g), sign(0) = 0 as torch.sign; no clamp (the reference CIFAR code). */
static void fgsm_point(const float *x, const float *g, float eps, int64_t count, float *out)
{
    for (int64_t i = 0; i < count; i++)
        out[i] = x[i] + (g[i] > 0.0f ? eps : g[i] < 0.0f ? -eps : 0.0f);
}

enum { ROW_FWD, ROW_TRAIN, ROW_FGSM, ROW_ZERO_GRAD, ROW_SGD, ROW_SIGN, N_ROWS };
static const char *const row_key[N_ROWS] = {"prn18_fwd", "train_step", "fgsm_step",
                                            "zero_grad", "sgd_step", "fgsm_sign"};
static const char *const row_label[N_ROWS] = {
    "forward",
    "training step (zero grad, fwd, CE, bwd, SGD)",
    "FGSM-AT step (input grad, x+eps*sign, train step)",
    "  part: elle_model_zero_grad",
    "  part: elle_optimizer_step (SGD)",
    "  part: x + eps*sign(g) on the host"};

/*
 * Time the workloads in `which` (STEP_* bits) on one model with an SGD
 * optimizer. The full run (which = TRAIN|FGSM) also times the parts the
 * other rows of the comparison do not cover (zero grad, SGD step, the host
 * sign loop). With o->only the process's peak RSS is reported as
 * <workload>_peak_rss_mib.
 */
static int bench_steps(const opts *o, elle_context *ctx, int which, results *rs, FILE *tbl)
{
    elle_model_config *cfg = NULL;
    elle_model *model = NULL;
    elle_optimizer *opt = NULL;
    float *x = NULL, *xadv = NULL, *dx = NULL, *logits = NULL;
    int32_t *labels = NULL;
    double *t = NULL;
    int rc = 0;
    const float eps = 8.0f / 255.0f;
    double rss_before = peak_rss_mib();
    BENCH_TRY(config_for(o, &cfg));
    BENCH_TRY_GOTO(rc, elle_model_create(&model, ctx, cfg));
    BENCH_TRY_GOTO(rc, elle_model_reserve(model, o->batch));
    BENCH_TRY_GOTO(rc, elle_model_set_training(model, 1));
    BENCH_TRY_GOTO(rc, elle_optimizer_create_sgd(&opt, model));
    BENCH_TRY_GOTO(rc, elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_LR, 0.01));
    BENCH_TRY_GOTO(rc, elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_MOMENTUM, 0.9));
    BENCH_TRY_GOTO(rc, elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_WEIGHT_DECAY, 5e-4));

    int64_t c, h, w, n = o->batch;
    BENCH_TRY_GOTO(rc, elle_model_input_shape(model, &c, &h, &w));
    int64_t k = elle_model_num_classes(model);
    int64_t count = n * c * h * w;
    x = malloc((size_t)count * sizeof *x);
    xadv = malloc((size_t)count * sizeof *xadv);
    dx = malloc((size_t)count * sizeof *dx);
    logits = malloc((size_t)(n * k) * sizeof *logits);
    labels = malloc((size_t)n * sizeof *labels);
    t = malloc((size_t)o->iters * sizeof *t);
    if (!x || !xadv || !dx || !logits || !labels || !t) {
        fprintf(stderr, "elle-bench: out of memory\n");
        rc = ELLE_ENOMEM;
        goto cleanup;
    }
    fill_batch(x, count, labels, n, k);
    double rss_model = peak_rss_mib();

    fprintf(tbl, "\nSteps compared with PyTorch (bench/torch_bench.py): width %d, batch %d, "
                 "training mode, SGD lr 0.01 momentum 0.9 wd 5e-4, eps 8/255\n",
            o->width, o->batch);
    fprintf(tbl, "  %-52s %10s %10s %10s\n", "", "median ms", "min ms", "other CPU");
    int rows[N_ROWS], n_rows = 0;
    if (which & STEP_FWD)
        rows[n_rows++] = ROW_FWD;
    if (which & STEP_TRAIN)
        rows[n_rows++] = ROW_TRAIN;
    if (which & STEP_FGSM)
        rows[n_rows++] = ROW_FGSM;
    if (!o->only) {
        rows[n_rows++] = ROW_ZERO_GRAD;
        rows[n_rows++] = ROW_SGD;
        rows[n_rows++] = ROW_SIGN;
    }
    BENCH_TRY_GOTO(rc, dev_sync(&ctx->be));
    for (int r = 0; r < n_rows; r++) {
        int row = rows[r];
        cpu_snap c0, c1;
        cpu_snap_take(&c0);
        for (int it = 0; it < o->warmup + o->iters; it++) {
            double t0 = bench_now_ms();
            switch (row) {
            case ROW_FWD:
                rc = elle_model_forward(model, x, n, logits);
                break;
            case ROW_TRAIN:
                rc = elle_model_zero_grad(model);
                if (rc >= 0)
                    rc = elle_model_backward(model, x, labels, n, NULL, NULL);
                if (rc >= 0)
                    rc = elle_optimizer_step(opt);
                break;
            case ROW_FGSM:
                rc = elle_model_input_grad(model, x, labels, n, dx, NULL);
                if (rc < 0)
                    break;
                fgsm_point(x, dx, eps, count, xadv);
                rc = elle_model_zero_grad(model);
                if (rc >= 0)
                    rc = elle_model_backward(model, xadv, labels, n, NULL, NULL);
                if (rc >= 0)
                    rc = elle_optimizer_step(opt);
                break;
            case ROW_ZERO_GRAD:
                rc = elle_model_zero_grad(model);
                break;
            case ROW_SGD:
                rc = elle_optimizer_step(opt);
                break;
            default:
                fgsm_point(x, dx, eps, count, xadv);
                break;
            }
            /* zero grad, backward without a loss and the SGD step only queue work */
            if (rc >= 0)
                rc = dev_sync(&ctx->be);
            double dt = bench_now_ms() - t0;
            if (rc < 0) {
                fail(rc, row_key[row]);
                goto cleanup;
            }
            if (it >= o->warmup)
                t[it - o->warmup] = dt;
        }
        cpu_snap_take(&c1);
        double other = other_cpu_pct(&c0, &c1);
        stat2 s = stats(t, o->iters);
        fprintf(tbl, "  %-52s %10.2f %10.2f %9.1f%%\n", row_label[row], s.med, s.min, other);
        fflush(tbl);
        putf(rs, s.med, "%s_ms", row_key[row]);
        putf(rs, s.min, "%s_min_ms", row_key[row]);
        if (other >= 0.0 && row <= ROW_FGSM)
            putf(rs, other, "%s_other_cpu_pct", row_key[row]);
    }
    if (o->only) {
        const char *name = o->only == STEP_FWD ? "prn18_fwd" : o->only == STEP_TRAIN
                                                                  ? "train_step"
                                                                  : "fgsm";
        double rss = peak_rss_mib();
        fprintf(tbl, "  peak RSS of this process: %.1f MiB (before the model: %.1f MiB, after "
                     "reserve and host buffers: %.1f MiB); elle_model_memory_size %.1f MiB\n",
                rss, rss_before, rss_model,
                (double)elle_model_memory_size(model) / (1024.0 * 1024.0));
        putf(rs, rss, "%s_peak_rss_mib", name);
        put(rs, "rss_before_model_mib", rss_before);
        put(rs, "model_memory_mib", (double)elle_model_memory_size(model) / (1024.0 * 1024.0));
    }
    rc = 0;
cleanup:
    elle_optimizer_free(opt);
    elle_model_free(model);
    elle_model_config_free(cfg);
    free(x);
    free(xadv);
    free(dx);
    free(logits);
    free(labels);
    free(t);
    return rc;
}

/* ---- 3b. an instrumented step on a net of our own --------------------------------- */

enum { K_CONV, K_BN, K_RELU, K_ADD, K_POOL, K_LINEAR, K_NORM, K_OTHER, K_LOSS, K_ACCUM, N_KINDS };
static const char *const kind_name[N_KINDS] = {
    "conv2d", "batchnorm", "relu", "add", "pool", "linear", "normalize", "other",
    "loss", /* cross-entropy forward, coefficient fill, cross-entropy backward */
    "grad_accum" /* second gradient into a value: scratch + add (net.c grad_commit) */
};

static int kind_of(const elle__layer *l)
{
    for (int k = 0; k < K_OTHER; k++)
        if (strcmp(l->ops->kind, kind_name[k]) == 0)
            return k;
    return K_OTHER;
}

typedef struct step_times {
    double fwd[N_KINDS];
    double bwd[N_KINDS];
    double total;
} step_times;

/*
 * One training step as elle_model_backward / elle_model_input_grad run it
 * (forward, loss, backward), with a clock around every layer. The backward
 * sweep mirrors elle__net_backward in lib/nn/net.c and must be kept in step
 * with it; the step total is printed next to the public API's time, so a
 * divergence shows up as a mismatch.
 */
static int timed_step(elle__net *net, int64_t n, int param_grads, int input_grad, step_times *st,
                      double *lay_fwd, double *lay_bwd)
{
    elle__backend *be = net->be;
    memset(st, 0, sizeof *st);
    /* On a queueing backend every layer is synchronised so its time is its
     * own; the step total then includes those waits (the API rows do not). */
    BENCH_TRY(dev_sync(be));
    double start = bench_now_ms();
    for (int i = 0; i < net->n_layers; i++) {
        elle__layer *l = &net->layers[i];
        double t0 = bench_now_ms();
        BENCH_TRY(l->ops->forward(net, l, n));
        BENCH_TRY(dev_sync(be));
        double dt = bench_now_ms() - t0;
        st->fwd[kind_of(l)] += dt;
        lay_fwd[i] = dt;
    }

    double t0 = bench_now_ms();
    BENCH_TRY(elle__net_loss(net, n));
    BENCH_TRY(be->ops->fill(be, n, 1.0f / (float)n, net->coef));
    for (int v = 0; v < net->n_values; v++)
        net->values[v].grad_written = 0;
    int last = net->n_values - 1;
    elle__tensor z = elle__net_logits(net, n);
    elle__tensor dz = elle__net_grad(net, last, n);
    BENCH_TRY(be->ops->xent_bwd(be, &z, net->labels, net->coef, &dz));
    net->values[last].grad_written = 1;
    BENCH_TRY(dev_sync(be));
    st->bwd[K_LOSS] += bench_now_ms() - t0;

    for (int i = net->n_layers - 1; i >= 0; i--) {
        elle__layer *l = &net->layers[i];
        lay_bwd[i] = 0.0;
        if (!net->values[l->out].grad_written)
            continue;
        elle__tensor targets[2];
        elle__tensor *dx[2] = {NULL, NULL};
        int via_scratch[2] = {0, 0};
        for (int k = 0; k < 2; k++) {
            int v = l->in[k];
            if (v < 0 || (v == 0 && !input_grad))
                continue;
            if (net->values[v].grad_written) {
                const elle__value *val = &net->values[v];
                targets[k] = elle__tensor_make(net->scratch_grad[k], n, val->c, val->h, val->w,
                                               val->layout);
                via_scratch[k] = 1;
            } else {
                targets[k] = elle__net_grad(net, v, n);
            }
            dx[k] = &targets[k];
        }
        t0 = bench_now_ms();
        BENCH_TRY(l->ops->backward(net, l, n, dx, param_grads));
        BENCH_TRY(dev_sync(be));
        double dt = bench_now_ms() - t0;
        st->bwd[kind_of(l)] += dt;
        lay_bwd[i] = dt;
        t0 = bench_now_ms();
        for (int k = 0; k < 2; k++) {
            if (!dx[k])
                continue;
            int v = l->in[k];
            if (via_scratch[k]) {
                elle__tensor g = elle__net_grad(net, v, n);
                BENCH_TRY(be->ops->add(be, &g, dx[k], &g));
            }
            net->values[v].grad_written = 1;
        }
        BENCH_TRY(dev_sync(be));
        st->bwd[K_ACCUM] += bench_now_ms() - t0;
    }
    st->total = bench_now_ms() - start;
    return 0;
}

/* ---- 2. conv primitives ------------------------------------------------------------ */

typedef struct conv_shape {
    elle__conv_desc cd;
    int64_t h, w, oh, ow;
    int in_layout, out_layout;
    int count;          /* conv layers of this shape */
    int count_bwd_data; /* of which compute bwd_data in a param-grad step (input not the image) */
    int layer;          /* first layer of this shape (its buffers are used) */
    double flops;       /* per pass, at the benchmark batch: 2*N*OC*OH*OW*IC*KH*KW */
    double eff_flops;   /* the same without the taps that fall on zero padding */
    stat2 fwd, bwd_data, bwd_weights;
} conv_shape;

enum { MAX_SHAPES = 64 };

static int same_shape(const conv_shape *s, const elle__conv_desc *cd, int64_t h, int64_t w,
                      int in_layout, int out_layout)
{
    const elle__conv_desc *a = &s->cd;
    return a->ic == cd->ic && a->oc == cd->oc && a->kh == cd->kh && a->kw == cd->kw &&
           a->sh == cd->sh && a->sw == cd->sw && a->ph == cd->ph && a->pw == cd->pw &&
           a->has_bias == cd->has_bias && s->h == h && s->w == w && s->in_layout == in_layout &&
           s->out_layout == out_layout;
}

/*
 * Kernel taps along one dimension that land inside the input, summed over
 * the output positions. Direct convolutions (oneDNN's jit kernels) skip the
 * taps on zero padding, so on small maps the nominal FLOP count overstates
 * the work: a 3x3 conv on 4x4 does 100 of the nominal 144 taps per channel
 * pair, and its nominal GFLOP/s can exceed the FMA peak.
 */
static int64_t inside_taps(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad)
{
    int64_t taps = 0;
    for (int64_t o = 0; o < out; o++)
        for (int64_t j = 0; j < k; j++) {
            int64_t i = o * stride - pad + j;
            taps += i >= 0 && i < in;
        }
    return taps;
}

/* The distinct conv shapes of the net; *layer_shape maps each layer to one (-1: not a conv). */
static int collect_shapes(const elle__net *net, int64_t n, conv_shape *shapes, int *n_shapes,
                          int *layer_shape)
{
    *n_shapes = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const elle__layer *l = &net->layers[i];
        layer_shape[i] = -1;
        if (kind_of(l) != K_CONV)
            continue;
        const elle__value *x = &net->values[l->in[0]];
        const elle__value *y = &net->values[l->out];
        int s = 0;
        while (s < *n_shapes && !same_shape(&shapes[s], &l->d.conv, x->h, x->w, x->layout,
                                            y->layout))
            s++;
        if (s == *n_shapes) {
            if (s == MAX_SHAPES) {
                fprintf(stderr, "elle-bench: more than %d conv shapes\n", MAX_SHAPES);
                return ELLE_ERROR;
            }
            conv_shape *c = &shapes[s];
            memset(c, 0, sizeof *c);
            c->cd = l->d.conv;
            c->h = x->h;
            c->w = x->w;
            c->oh = y->h;
            c->ow = y->w;
            c->in_layout = x->layout;
            c->out_layout = y->layout;
            c->layer = i;
            c->flops = 2.0 * (double)n * (double)(c->cd.oc * c->oh * c->ow) *
                       (double)(c->cd.ic * c->cd.kh * c->cd.kw);
            c->eff_flops = 2.0 * (double)n * (double)(c->cd.oc * c->cd.ic) *
                           (double)(inside_taps(c->h, c->oh, c->cd.kh, c->cd.sh, c->cd.ph) *
                                    inside_taps(c->w, c->ow, c->cd.kw, c->cd.sw, c->cd.pw));
            (*n_shapes)++;
        }
        shapes[s].count++;
        if (l->in[0] != 0)
            shapes[s].count_bwd_data++;
        layer_shape[i] = s;
    }
    return 0;
}

/*
 * Time the three conv ops of one shape on the buffers of its first layer
 * (after a training step they hold real activations and gradients, in the
 * layouts the net uses). Warm-up calls build and cache the primitives.
 */
static int time_conv_shape(const opts *o, elle__net *net, conv_shape *s, double *t)
{
    elle__backend *be = net->be;
    const elle__layer *l = &net->layers[s->layer];
    int64_t n = o->batch;
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__tensor dy = elle__net_grad(net, l->out, n);
    elle__tensor dx = elle__net_grad(net, l->in[0], n);
    const elle__state *ws = &net->states[l->state[0]];
    const float *b = s->cd.has_bias ? net->states[l->state[1]].data : NULL;
    float *db = s->cd.has_bias ? net->states[l->state[1]].grad : NULL;
    BENCH_TRY(dev_sync(be));
    for (int op = 0; op < 3; op++) {
        for (int it = 0; it < o->warmup + o->iters; it++) {
            double t0 = bench_now_ms();
            if (op == 0)
                BENCH_TRY(be->ops->conv2d_fwd(be, &s->cd, &x, ws->data, b, &y));
            else if (op == 1)
                BENCH_TRY(be->ops->conv2d_bwd_data(be, &s->cd, &dy, ws->data, &dx));
            else
                BENCH_TRY(be->ops->conv2d_bwd_weights(be, &s->cd, &x, &dy, ws->grad, db));
            BENCH_TRY(be->ops->sync(be));
            double dt = bench_now_ms() - t0;
            if (it >= o->warmup)
                t[it - o->warmup] = dt;
        }
        stat2 st = stats(t, o->iters);
        if (op == 0)
            s->fwd = st;
        else if (op == 1)
            s->bwd_data = st;
        else
            s->bwd_weights = st;
    }
    return 0;
}

static double gflops(double flops, double ms)
{
    return ms > 0.0 ? flops / (ms * 1e6) : 0.0;
}

static double pct(double gf, double peak)
{
    return peak > 0.0 ? 100.0 * gf / peak : 0.0;
}

typedef struct conv_sums {
    double fwd_ms;       /* sum over conv layers of fwd */
    double fwd_bwd_ms;   /* fwd + bwd_weights + bwd_data where a param-grad step runs it */
    double igrad_ms;     /* fwd + bwd_data (input-gradient step: no bwd_weights) */
    double bwd_data_ms;  /* all layers, stem included */
    double bwd_weights_ms;
    double flops;        /* per pass, all layers */
    double eff_flops;    /* the same without padding taps */
    int layers;
} conv_sums;

static void report_convs(const opts *o, const conv_shape *shapes, int n_shapes, double peak,
                         results *rs, FILE *tbl, conv_sums *sum)
{
    memset(sum, 0, sizeof *sum);
    fprintf(tbl, "\nConv primitives, isolated, batch %d (median ms | GFLOP/s | %% of FMA peak; "
                 "FLOPs = 2*N*OC*OH*OW*IC*KH*KW;\n  eff = share of those taps not on zero "
                 "padding)\n",
            o->batch);
    fprintf(tbl, "  %-24s %3s %4s %8s %7s %5s | %8s %7s %5s | %8s %7s %5s\n",
            "input -> oc, kernel", "n", "eff", "fwd", "GF/s", "%pk", "bwd_data", "GF/s", "%pk",
            "bwd_w", "GF/s", "%pk");
    for (int i = 0; i < n_shapes; i++) {
        const conv_shape *s = &shapes[i];
        char label[64], key[64];
        snprintf(label, sizeof label, "%lldx%lldx%lld -> %lld k%llds%lld",
                 (long long)s->cd.ic, (long long)s->h, (long long)s->w, (long long)s->cd.oc,
                 (long long)s->cd.kh, (long long)s->cd.sh);
        snprintf(key, sizeof key, "conv_i%lldx%lldx%lld_o%lld_k%llds%lld", (long long)s->cd.ic,
                 (long long)s->h, (long long)s->w, (long long)s->cd.oc, (long long)s->cd.kh,
                 (long long)s->cd.sh);
        double gf_f = gflops(s->flops, s->fwd.med);
        double gf_d = gflops(s->flops, s->bwd_data.med);
        double gf_w = gflops(s->flops, s->bwd_weights.med);
        fprintf(tbl,
                "  %-24s %3d %4.2f %8.3f %7.1f %5.1f | %8.3f %7.1f %5.1f | %8.3f %7.1f %5.1f\n",
                label, s->count, s->eff_flops / s->flops, s->fwd.med, gf_f, pct(gf_f, peak),
                s->bwd_data.med, gf_d,
                pct(gf_d, peak), s->bwd_weights.med, gf_w, pct(gf_w, peak));
        putf(rs, s->count, "%s_count", key);
        putf(rs, s->eff_flops / s->flops, "%s_eff_frac", key);
        putf(rs, s->fwd.med, "%s_fwd_ms", key);
        putf(rs, s->bwd_data.med, "%s_bwd_data_ms", key);
        putf(rs, s->bwd_weights.med, "%s_bwd_weights_ms", key);
        putf(rs, gf_f, "%s_fwd_gflops", key);
        putf(rs, gf_d, "%s_bwd_data_gflops", key);
        putf(rs, gf_w, "%s_bwd_weights_gflops", key);

        sum->layers += s->count;
        sum->flops += s->count * s->flops;
        sum->eff_flops += s->count * s->eff_flops;
        sum->fwd_ms += s->count * s->fwd.med;
        sum->bwd_data_ms += s->count * s->bwd_data.med;
        sum->bwd_weights_ms += s->count * s->bwd_weights.med;
        sum->fwd_bwd_ms += s->count * (s->fwd.med + s->bwd_weights.med) +
                           s->count_bwd_data * s->bwd_data.med;
        sum->igrad_ms += s->count * (s->fwd.med + s->bwd_data.med);
    }
    /* Overall rates weight every layer by its time, as the network does. */
    double gf_f = gflops(sum->flops, sum->fwd_ms);
    double gf_d = gflops(sum->flops, sum->bwd_data_ms);
    double gf_w = gflops(sum->flops, sum->bwd_weights_ms);
    double eff = sum->eff_flops / sum->flops;
    fprintf(tbl, "  %-24s %3d %4.2f %8.2f %7.1f %5.1f | %8.2f %7.1f %5.1f | %8.2f %7.1f %5.1f\n",
            "all conv layers", sum->layers, eff, sum->fwd_ms, gf_f, pct(gf_f, peak),
            sum->bwd_data_ms, gf_d, pct(gf_d, peak), sum->bwd_weights_ms, gf_w, pct(gf_w, peak));
    fprintf(tbl, "  %.2f GFLOP per pass over all conv layers (%.2f without padding taps); on "
                 "the padding-free count\n  the convs run at %.1f%% (fwd), %.1f%% (bwd_data), "
                 "%.1f%% (bwd_weights) of the FMA peak\n",
            sum->flops * 1e-9, sum->eff_flops * 1e-9, pct(gf_f * eff, peak),
            pct(gf_d * eff, peak), pct(gf_w * eff, peak));
    put_int(rs, "conv_layers", sum->layers);
    put_int(rs, "conv_shapes", n_shapes);
    put(rs, "conv_gflop_per_pass", sum->flops * 1e-9);
    put(rs, "conv_fwd_gflops", gf_f);
    put(rs, "conv_bwd_data_gflops", gf_d);
    put(rs, "conv_bwd_weights_gflops", gf_w);
    if (peak > 0.0) {
        put(rs, "conv_fwd_pct_peak", pct(gf_f, peak));
        put(rs, "conv_bwd_data_pct_peak", pct(gf_d, peak));
        put(rs, "conv_bwd_weights_pct_peak", pct(gf_w, peak));
        put(rs, "conv_fwd_eff_pct_peak", pct(gf_f * eff, peak));
        put(rs, "conv_bwd_data_eff_pct_peak", pct(gf_d * eff, peak));
        put(rs, "conv_bwd_weights_eff_pct_peak", pct(gf_w * eff, peak));
    }
    put(rs, "conv_eff_frac", eff);
    put(rs, "conv_sum_fwd_ms", sum->fwd_ms);
    put(rs, "conv_sum_bwd_data_ms", sum->bwd_data_ms);
    put(rs, "conv_sum_bwd_weights_ms", sum->bwd_weights_ms);
    put(rs, "conv_sum_fwd_bwd_ms", sum->fwd_bwd_ms);
    put(rs, "conv_sum_input_grad_ms", sum->igrad_ms);
}

/* ---- the net-level part: instrumented steps and conv primitives ------------------- */

static int bench_net(const opts *o, elle_context *ctx, double peak, const double api[N_MODES],
                     results *rs, FILE *tbl)
{
    elle_model_config *cfg = NULL;
    elle__net net;
    int have_net = 0;
    float *x = NULL;
    int32_t *labels = NULL;
    double *t = NULL, *lay = NULL;
    step_times *st = NULL;
    conv_shape *shapes = NULL;
    int *layer_shape = NULL;
    int rc = 0;
    int64_t n = o->batch;
    BENCH_TRY(config_for(o, &cfg));

    /* Built as elle_model_create builds it (lib/nn/model.c), without the
     * optional normalisation layer, which the benchmark config leaves off. */
    BENCH_TRY_GOTO(rc, elle__net_init(&net, &ctx->be, ELLE__P(cfg, ELLE_MODEL_PARAM_IN_CHANNELS),
                                      ELLE__P(cfg, ELLE_MODEL_PARAM_IN_HEIGHT),
                                      ELLE__P(cfg, ELLE_MODEL_PARAM_IN_WIDTH)));
    have_net = 1;
    int logits;
    BENCH_TRY_GOTO(rc, cfg->arch->build(&net, cfg, 0, &logits));
    BENCH_TRY_GOTO(rc, elle__net_finalize(&net, 0));
    BENCH_TRY_GOTO(rc, elle__net_reserve(&net, n));
    net.training = 1;

    const elle__value *in = &net.values[0];
    int64_t count = n * in->c * in->h * in->w;
    int64_t k = elle__net_num_classes(&net);
    int nl = net.n_layers;
    x = malloc((size_t)count * sizeof *x);
    labels = malloc((size_t)n * sizeof *labels);
    t = malloc((size_t)o->iters * sizeof *t);
    lay = calloc((size_t)(4 * nl) * (size_t)o->iters, sizeof *lay);
    st = calloc(2 * (size_t)o->iters, sizeof *st);
    shapes = calloc(MAX_SHAPES, sizeof *shapes);
    layer_shape = calloc((size_t)nl, sizeof *layer_shape);
    if (!x || !labels || !t || !lay || !st || !shapes || !layer_shape) {
        fprintf(stderr, "elle-bench: out of memory\n");
        rc = ELLE_ENOMEM;
        goto cleanup;
    }
    fill_batch(x, count, labels, n, k);
    elle__backend *be = net.be;
    elle__tensor input = elle__net_input(&net, n);
    BENCH_TRY_GOTO(rc, be->ops->copy_to_device(be, input.data, x, (size_t)count * sizeof *x));
    BENCH_TRY_GOTO(rc, be->ops->copy_to_device(be, net.labels, labels,
                                               (size_t)n * sizeof *labels));

    /* Instrumented steps: mode 0 as elle_model_backward (param grads),
     * mode 1 as elle_model_input_grad. */
    for (int mode = 0; mode < 2; mode++) {
        for (int it = 0; it < o->warmup + o->iters; it++) {
            int slot = it >= o->warmup ? it - o->warmup : 0;
            double *lf = lay + ((size_t)mode * 2 * nl) * (size_t)o->iters + (size_t)slot * nl;
            double *lb = lf + (size_t)nl * (size_t)o->iters;
            BENCH_TRY_GOTO(rc, timed_step(&net, n, mode == 0, mode == 1,
                                          &st[(size_t)mode * o->iters + slot], lf, lb));
        }
    }

    fprintf(tbl, "\nInstrumented training step (own net, same builder), median ms by layer "
                 "kind\n");
    fprintf(tbl, "  %-12s %10s %14s %16s\n", "kind", "forward", "bwd (params)", "bwd (input grad)");
    double fwd_kind_sum = 0.0, bwd_kind_sum = 0.0, ig_kind_sum = 0.0;
    for (int kd = 0; kd < N_KINDS; kd++) {
        stat2 f, b, g;
        for (int it = 0; it < o->iters; it++)
            t[it] = st[it].fwd[kd];
        f = stats(t, o->iters);
        for (int it = 0; it < o->iters; it++)
            t[it] = st[it].bwd[kd];
        b = stats(t, o->iters);
        for (int it = 0; it < o->iters; it++)
            t[it] = st[o->iters + it].bwd[kd];
        g = stats(t, o->iters);
        if (f.med == 0.0 && b.med == 0.0 && g.med == 0.0)
            continue;
        fprintf(tbl, "  %-12s %10.2f %14.2f %16.2f\n", kind_name[kd], f.med, b.med, g.med);
        if (kd < K_LOSS) /* loss and gradient accumulation are timed in the backward only */
            putf(rs, f.med, "step_fwd_%s_ms", kind_name[kd]);
        putf(rs, b.med, "step_bwd_%s_ms", kind_name[kd]);
        putf(rs, g.med, "step_igrad_bwd_%s_ms", kind_name[kd]);
        fwd_kind_sum += f.med;
        bwd_kind_sum += b.med;
        ig_kind_sum += g.med;
    }
    for (int it = 0; it < o->iters; it++)
        t[it] = st[it].total;
    stat2 total = stats(t, o->iters);
    for (int it = 0; it < o->iters; it++)
        t[it] = st[o->iters + it].total;
    stat2 ig_total = stats(t, o->iters);
    fprintf(tbl, "  %-12s %10.2f %14.2f %16.2f\n", "sum", fwd_kind_sum, bwd_kind_sum, ig_kind_sum);
    fprintf(tbl, "  step total: %.2f ms with param grads (API: %.2f), %.2f ms input grad "
                 "(API: %.2f)\n",
            total.med, api[MODE_FWD_BWD], ig_total.med, api[MODE_INPUT_GRAD]);
    put(rs, "step_fwd_bwd_ms", total.med);
    put(rs, "step_input_grad_ms", ig_total.med);

    if (o->layers) {
        fprintf(tbl, "\n  per layer, median ms\n  %-20s %-9s %-14s %9s %9s %9s\n", "layer", "kind",
                "output c h w", "fwd", "bwd", "bwd ig");
        for (int i = 0; i < nl; i++) {
            const elle__layer *l = &net.layers[i];
            const elle__value *y = &net.values[l->out];
            double v[3];
            for (int m = 0; m < 3; m++) {
                /* m 0: fwd (mode 0); 1: bwd (mode 0); 2: bwd (mode 1) */
                size_t base = m == 2 ? (size_t)2 * nl * (size_t)o->iters + (size_t)nl * o->iters
                                     : (size_t)m * nl * (size_t)o->iters;
                for (int it = 0; it < o->iters; it++)
                    t[it] = lay[base + (size_t)it * nl + (size_t)i];
                v[m] = stats(t, o->iters).med;
            }
            char shape[48];
            snprintf(shape, sizeof shape, "%lld %lld %lld", (long long)y->c, (long long)y->h,
                     (long long)y->w);
            fprintf(tbl, "  %-20s %-9s %-14s %9.3f %9.3f %9.3f\n",
                    l->name[0] ? l->name : "-", l->ops->kind, shape, v[0], v[1], v[2]);
        }
    }

    /* Conv primitives on the step's buffers. */
    int n_shapes = 0;
    BENCH_TRY_GOTO(rc, collect_shapes(&net, n, shapes, &n_shapes, layer_shape));
    for (int s = 0; s < n_shapes; s++)
        BENCH_TRY_GOTO(rc, time_conv_shape(o, &net, &shapes[s], t));
    conv_sums sum;
    report_convs(o, shapes, n_shapes, peak, rs, tbl, &sum);

    /* The figures: the network over its conv primitives. */
    double r_fwd = api[MODE_FWD] / sum.fwd_ms;
    double r_fb = api[MODE_FWD_BWD] / sum.fwd_bwd_ms;
    double r_ig = api[MODE_INPUT_GRAD] / sum.igrad_ms;
    fprintf(tbl, "\nNetwork time over the sum of its conv primitives (issue target: fwd+bwd "
                 "<= 1.2)\n");
    fprintf(tbl, "  forward            %9.2f ms / conv fwd sum %9.2f ms = %.3f\n", api[MODE_FWD],
            sum.fwd_ms, r_fwd);
    fprintf(tbl, "  forward+backward   %9.2f ms / conv sum     %9.2f ms = %.3f   "
                 "(fwd + bwd_weights + bwd_data except the stem's)\n",
            api[MODE_FWD_BWD], sum.fwd_bwd_ms, r_fb);
    fprintf(tbl, "  input gradient     %9.2f ms / conv sum     %9.2f ms = %.3f   "
                 "(fwd + bwd_data)\n",
            api[MODE_INPUT_GRAD], sum.igrad_ms, r_ig);
    /* In-network conv time against the isolated sum: > 1 means the convs
     * themselves run slower inside the step (cold caches, reorders). */
    double in_step_conv = 0.0;
    for (int it = 0; it < o->iters; it++)
        t[it] = st[it].fwd[K_CONV] + st[it].bwd[K_CONV];
    in_step_conv = stats(t, o->iters).med;
    fprintf(tbl, "  conv layers inside the step: %.2f ms (%.3f x the isolated sum); "
                 "everything else: %.2f ms\n",
            in_step_conv, in_step_conv / sum.fwd_bwd_ms, total.med - in_step_conv);
    put(rs, "prn18_fwd_over_conv_sum", r_fwd);
    put(rs, "prn18_fwd_bwd_over_conv_sum", r_fb);
    put(rs, "prn18_input_grad_over_conv_sum", r_ig);
    put(rs, "step_conv_ms", in_step_conv);
    put(rs, "step_conv_over_conv_sum", in_step_conv / sum.fwd_bwd_ms);
    put(rs, "step_non_conv_ms", total.med - in_step_conv);
    rc = 0;
cleanup:
    if (have_net)
        elle__net_release(&net);
    elle_model_config_free(cfg);
    free(x);
    free(labels);
    free(t);
    free(lay);
    free(st);
    free(shapes);
    free(layer_shape);
    return rc;
}

/* ---- JSON ------------------------------------------------------------------------- */

static json_t *to_json(const results *rs)
{
    json_t *obj = json_object();
    if (!obj)
        return NULL;
    for (int i = 0; i < rs->n; i++) {
        const result *e = &rs->r[i];
        json_t *v;
        if (!isfinite(e->value)) {
            /* JSON has no NaN/Inf; a missing key is clearer than a fake number */
            fprintf(stderr, "elle-bench: %s is not finite, left out of the JSON\n", e->name);
            continue;
        }
        v = e->integer ? json_integer((json_int_t)e->value) : json_real(e->value);
        if (!v || json_object_set_new(obj, e->name, v) < 0) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

/* Read the file back: one object whose every value is a number. */
static int check_json_file(const char *path)
{
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    if (!doc) {
        fprintf(stderr, "elle-bench: %s does not parse: %s (line %d)\n", path, err.text,
                err.line);
        return -1;
    }
    int ok = json_is_object(doc) && json_object_size(doc) > 0;
    const char *key;
    json_t *value;
    json_object_foreach(doc, key, value)
    {
        if (!json_is_number(value)) {
            fprintf(stderr, "elle-bench: %s: '%s' is not a number\n", path, key);
            ok = 0;
        }
    }
    json_decref(doc);
    return ok ? 0 : -1;
}

static int write_json(const opts *o, const results *rs)
{
    json_t *obj = to_json(rs);
    if (!obj) {
        fprintf(stderr, "elle-bench: could not build the JSON document\n");
        return -1;
    }
    size_t flags = JSON_INDENT(2) | JSON_REAL_PRECISION(6);
    int rc = 0;
    if (!o->json_path || strcmp(o->json_path, "-") == 0) {
        rc = json_dumpf(obj, stdout, flags) < 0 || fputc('\n', stdout) == EOF ? -1 : 0;
        fflush(stdout);
    } else {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", o->json_path);
        if (make_parent_dirs(o->json_path) < 0) {
            fprintf(stderr, "elle-bench: cannot create the directory of %s: %s\n", o->json_path,
                    strerror(errno));
            rc = -1;
        } else if (json_dump_file(obj, tmp, flags) < 0 || rename(tmp, o->json_path) < 0) {
            /* written to a temporary and renamed: a failed run never leaves a
             * truncated result where the last good one was */
            fprintf(stderr, "elle-bench: cannot write %s\n", o->json_path);
            remove(tmp);
            rc = -1;
        } else {
            rc = check_json_file(o->json_path);
        }
    }
    json_decref(obj);
    return rc;
}

/* ---- main ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    opts o;
    if (parse_args(argc, argv, &o) < 0)
        return 2;
    if (!elle_backend_available(o.backend)) {
        /* 77: the test harnesses' "skipped" */
        fprintf(stderr, "elle-bench: backend '%s' is not available (not in this build%s); "
                        "skipped\n",
                elle_backend_name(o.backend),
                o.backend == ELLE_BACKEND_CUDA ? ", or no CUDA device" : "");
        return 77;
    }
    FILE *tbl = o.json_path && strcmp(o.json_path, "-") != 0 ? stdout : stderr;
    results rs = {0};
    elle_context *ctx = NULL;
    double api[N_MODES] = {0};
    int rc;

    machine_info(&o, &rs, tbl);
    rc = elle_context_create(&ctx, o.backend, 0);
    if (rc < 0) {
        fail(rc, "elle_context_create");
        /* 77: the test harnesses' "skipped" -- this build has no such backend */
        return rc == ELLE_EUNSUPPORTED ? 77 : 1;
    }
    rc = elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, o.threads);
    if (rc < 0) {
        fail(rc, "elle_context_set_param(threads)");
        goto done;
    }
    fflush(tbl);
    if (o.only) {
        put_int(&rs, "only_workload", o.only);
        rc = bench_steps(&o, ctx, o.only, &rs, tbl);
    } else {
        /* the CPU's FMA peak says nothing about GPU convs */
        double peak = o.backend == ELLE_BACKEND_CUDA ? 0.0 : measure_peak(&o, &rs, tbl);
        fflush(tbl);
        rc = bench_model_api(&o, ctx, &rs, tbl, api);
        fflush(tbl);
        if (rc >= 0)
            rc = bench_steps(&o, ctx, STEP_TRAIN | STEP_FGSM, &rs, tbl);
        fflush(tbl);
        if (rc >= 0)
            rc = bench_net(&o, ctx, peak, api, &rs, tbl);
    }
    fflush(tbl);
    double load[3];
    if (rc >= 0 && getloadavg(load, 3) == 3) {
        fprintf(tbl, "\nload %.2f %.2f %.2f at the end (other work on the machine makes the "
                     "numbers noisy)\n",
                load[0], load[1], load[2]);
        put(&rs, "loadavg_1min_end", load[0]);
    }
done:
    elle_context_free(ctx);
    if (rc >= 0)
        rc = write_json(&o, &rs);
    free(rs.r);
    return rc < 0 ? 1 : 0;
}
