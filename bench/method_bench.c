/*
 * elle-bench-methods: the cost of one adversarial training step per method,
 * through the public trainer, on PreActResNet-18 (32x32x3, 10 classes,
 * batch 128, training mode, SGD lr 0.01 momentum 0.9 wd 5e-4, eps 8/255).
 *
 *   fgsm            FGSM (alpha = eps)
 *   n-fgsm          N-FGSM (noise U[-2 eps, 2 eps], alpha = eps, no projection)
 *   pgd-10          PGD, 10 steps of eps/4 from a uniform start
 *   elle            FGSM + ELLE, lambda 1000 (3-point E_lin, one 3B forward)
 *   elle-a          FGSM + ELLE-A, timed with lambda > 0 throughout
 *                   (lambda_start = lambda_max): the regularizer's backward
 *                   is skipped while lambda is 0, so this is its full cost
 *   n-fgsm+elle-a   N-FGSM + ELLE-A, likewise
 *   gradalign       FGSM + GradAlign (ELLE repo version), lambda 0.2: double
 *                   backpropagation through the tangent passes
 *   llr             FGSM + LLR, adaptive as its script, lambda > 0 throughout
 *                   (lambda_start = lambda_max = 200)
 *   cure            FGSM + CURE, likewise (lambda_max 1000)
 *
 * Each method trains one epoch of warmup + iters batches of random images
 * (the trainer's step time metric: attack, regularizers, backward, SGD;
 * evaluation off); the first `warmup` steps are dropped and the median of
 * the rest is reported as <method>_step_ms, with <method>_vs_fgsm (and
 * <method>_vs_elle for the other regularizers). Keys use
 * underscores: n_fgsm_step_ms, pgd10_step_ms, n_fgsm_elle_a_step_ms; FGSM's
 * is fgsm_trainer_step_ms (elle-bench's fgsm_step_ms is the model-API loop).
 * `--only METHOD` runs one method and reports the process's peak RSS as
 * <method>_peak_rss_mib; `--methods A,B,...` runs those methods only.
 *
 * `--backend cuda` trains on the GPU (exit 77 when this build or machine has
 * no CUDA device). The trainer's step clock stops once the SGD step is
 * queued, so each step's time here is the trainer's plus the wait for a
 * small parameter copied to the host right after it (which waits for
 * everything queued; a no-op wait on the CPU backends). The same read-back
 * leaves the queue empty when the next step starts its clock, so each step
 * is charged its own work; the first step may also wait for the fit's setup
 * copies, which is why it is a warm-up step by default.
 *
 * Output: a table on stdout and a flat JSON object (--json PATH).
 * A benchmark, not a test: nothing is asserted about the times.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <jansson.h>

#include "bench.h"
#include "elle.h"

typedef struct method {
    const char *name; /* as `elle train --method` */
    const char *key;  /* JSON key prefix */
    elle_attack_kind attack;
    int steps;    /* PGD steps (0: the kind's) */
    int reg;      /* 0 none, 1 ELLE (fixed lambda), 2 ELLE-A, 3 GradAlign, 4 LLR, 5 CURE */
} method;

static const method methods[] = {
    {"fgsm", "fgsm_trainer", ELLE_ATTACK_FGSM, 0, 0},
    {"n-fgsm", "n_fgsm", ELLE_ATTACK_N_FGSM, 0, 0},
    {"pgd-10", "pgd10", ELLE_ATTACK_PGD, 10, 0},
    {"elle", "elle", ELLE_ATTACK_FGSM, 0, 1},
    {"elle-a", "elle_a", ELLE_ATTACK_FGSM, 0, 2},
    {"n-fgsm+elle-a", "n_fgsm_elle_a", ELLE_ATTACK_N_FGSM, 0, 2},
    {"gradalign", "gradalign", ELLE_ATTACK_FGSM, 0, 3},
    {"llr", "llr", ELLE_ATTACK_FGSM, 0, 4},
    {"cure", "cure", ELLE_ATTACK_FGSM, 0, 5},
};
#define N_METHODS ((int)(sizeof methods / sizeof methods[0]))

typedef struct opts {
    const char *json;
    int threads, batch, width, iters, warmup;
    const char *only;
    const char *list; /* --methods: comma-separated names */
    elle_backend backend;
} opts;

typedef struct step_log {
    double *ms;
    int n, cap;
    const elle_model *model;
    int64_t sync_state; /* the smallest float state entry: the cheapest read-back */
    float *sync_buf;
    int rc;             /* error of the read-back (reported when it happens) */
} step_log;

static int report(int rc, const char *what)
{
    fprintf(stderr, "elle-bench-methods: %s failed: %s (%s)\n", what, elle_status_name(rc),
            elle_error_last()->message);
    return rc;
}

static int on_step(const elle_train_metrics *m, void *user)
{
    step_log *log = user;
    double s = 0.0;
    double t0 = bench_now_ms();
    int rc = elle_model_state_get(log->model, log->sync_state, log->sync_buf);
    double wait_ms = bench_now_ms() - t0;
    if (rc < 0) {
        /* reported now: the trainer replaces the error with its own */
        report(rc, "read-back after a step");
        log->rc = rc;
        return 1;
    }
    if (elle_train_metrics_get(m, ELLE_TRAIN_METRIC_TIME, &s) == ELLE_OK && log->n < log->cap)
        log->ms[log->n++] = 1000.0 * s + wait_ms;
    return 0;
}

/* The float state entry with the fewest elements (counters are host-side
 * and would not wait for the device). */
static int smallest_float_state(const elle_model *model, int64_t *index, int64_t *numel)
{
    int64_t count = elle_model_state_count(model);
    *index = -1;
    for (int64_t i = 0; i < count; i++) {
        elle_state_kind kind;
        int64_t d[4];
        int rc = elle_model_state_info(model, i, NULL, &kind, NULL, d);
        if (rc < 0)
            return rc;
        int64_t e = d[0] * d[1] * d[2] * d[3];
        if (kind != ELLE_STATE_COUNTER && (*index < 0 || e < *numel)) {
            *index = i;
            *numel = e;
        }
    }
    return *index < 0 ? ELLE_ESTATE : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return 0.0;
    return (double)ru.ru_maxrss / 1024.0;
}

#define TRY(expr, what)                                                                      \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        if (rc_ < 0) {                                                                       \
            rc = report(rc_, what);                                                          \
            goto cleanup;                                                                    \
        }                                                                                    \
    } while (0)

/* Time one method; *median_ms receives the median step time. */
static int run_method(const opts *o, elle_context *ctx, elle_dataset *train, const method *me,
                      double *median_ms, double *rss_mib)
{
    int rc = 0;
    elle_model_config *cfg = NULL;
    elle_model *model = NULL;
    elle_attack *atk = NULL;
    elle_regularizer *reg = NULL;
    elle_trainer *t = NULL;
    const double eps = 8.0 / 255.0;
    step_log log = {.cap = o->warmup + o->iters};
    log.ms = calloc((size_t)log.cap, sizeof *log.ms);
    if (!log.ms)
        return report(ELLE_ENOMEM, "allocation");

    TRY(elle_model_config_create(&cfg, "preact_resnet18"), "model config");
    TRY(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, o->width), "width");
    TRY(elle_model_create(&model, ctx, cfg), "model");
    int64_t sync_numel = 0;
    TRY(smallest_float_state(model, &log.sync_state, &sync_numel), "model state");
    log.model = model;
    log.sync_buf = malloc((size_t)sync_numel * sizeof *log.sync_buf);
    if (!log.sync_buf) {
        rc = report(ELLE_ENOMEM, "allocation");
        goto cleanup;
    }
    TRY(elle_attack_create(&atk, model, me->attack), "attack");
    TRY(elle_attack_set_param(atk, ELLE_ATTACK_PARAM_EPS, eps), "attack eps");
    if (me->steps)
        TRY(elle_attack_set_param(atk, ELLE_ATTACK_PARAM_STEPS, me->steps), "attack steps");
    TRY(elle_trainer_create(&t, model), "trainer");
    TRY(elle_trainer_set_attack(t, atk), "trainer attack");
    if (me->reg) {
        static const elle_regularizer_kind kinds[] = {
            ELLE_REGULARIZER_ELLE,      ELLE_REGULARIZER_ELLE, ELLE_REGULARIZER_ELLE,
            ELLE_REGULARIZER_GRADALIGN, ELLE_REGULARIZER_LLR,  ELLE_REGULARIZER_CURE};
        /* lambda (constant) or lambda_max = lambda_start (adaptive, on throughout) */
        static const double lambdas[] = {0, 1000.0, 4000.0, 0.2, 200.0, 1000.0};
        static const int adaptive[] = {0, 0, 1, 0, 1, 1};
        TRY(elle_regularizer_create(&reg, model, kinds[me->reg]), "regularizer");
        TRY(elle_regularizer_set_param(reg, ELLE_REGULARIZER_PARAM_EPS, eps), "reg eps");
        if (!adaptive[me->reg]) {
            TRY(elle_regularizer_set_param(reg, ELLE_REGULARIZER_PARAM_LAMBDA, lambdas[me->reg]),
                "lambda");
        } else {
            TRY(elle_regularizer_set_param(reg, ELLE_REGULARIZER_PARAM_ADAPTIVE, 1), "adaptive");
            TRY(elle_regularizer_set_param(reg, ELLE_REGULARIZER_PARAM_LAMBDA_MAX,
                                           lambdas[me->reg]),
                "lambda_max");
            TRY(elle_regularizer_set_param(reg, ELLE_REGULARIZER_PARAM_LAMBDA_START,
                                           lambdas[me->reg]),
                "lambda_start");
        }
        TRY(elle_trainer_add_regularizer(t, reg), "trainer regularizer");
    }
    static const struct {
        elle_train_param p;
        double v;
    } params[] = {
        {ELLE_TRAIN_PARAM_EPOCHS, 1},          {ELLE_TRAIN_PARAM_SCHEDULE, ELLE_SCHEDULE_CONSTANT},
        {ELLE_TRAIN_PARAM_LR, 0.01},           {ELLE_TRAIN_PARAM_MOMENTUM, 0.9},
        {ELLE_TRAIN_PARAM_WEIGHT_DECAY, 5e-4}, {ELLE_TRAIN_PARAM_PGD_TEST_N, 0},
        {ELLE_TRAIN_PARAM_PGD_VAL, 0},         {ELLE_TRAIN_PARAM_SHUFFLE, 0},
    };
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        TRY(elle_trainer_set_param(t, params[i].p, params[i].v), "trainer parameter");
    TRY(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_BATCH_SIZE, o->batch), "batch");
    TRY(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_STEP, on_step, &log), "callback");
    int fit_rc = elle_trainer_fit(t, train, NULL, NULL);
    if (log.rc < 0) {
        rc = log.rc;
        goto cleanup;
    }
    TRY(fit_rc, me->name);

    if (log.n <= o->warmup) {
        fprintf(stderr, "elle-bench-methods: %s: only %d steps ran\n", me->name, log.n);
        rc = ELLE_ESTATE;
        goto cleanup;
    }
    int timed = log.n - o->warmup;
    qsort(log.ms + o->warmup, (size_t)timed, sizeof(double), cmp_double);
    *median_ms = timed % 2 ? log.ms[o->warmup + timed / 2]
                           : 0.5 * (log.ms[o->warmup + timed / 2 - 1] +
                                    log.ms[o->warmup + timed / 2]);
    *rss_mib = peak_rss_mib();
cleanup:
    elle_trainer_free(t);
    elle_regularizer_free(reg);
    elle_attack_free(atk);
    elle_model_free(model);
    elle_model_config_free(cfg);
    free(log.ms);
    free(log.sync_buf);
    return rc;
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out)
{
    char *end = NULL;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < lo || x > hi) {
        fprintf(stderr, "elle-bench-methods: %s wants an integer in [%d, %d]\n", flag, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int parse_backend(const char *v, elle_backend *out)
{
    if (!v || elle_backend_from_name(v, out) < 0) {
        fprintf(stderr, "elle-bench-methods: --backend takes cpu, reference or cuda\n");
        return -1;
    }
    return 0;
}

/* Whether `name` is one of the comma-separated words of `list`. */
static int in_list(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        size_t word = strcspn(p, ",");
        if (word == len && strncmp(p, name, len) == 0)
            return 1;
        p += word;
        if (*p == ',')
            p++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts o = {NULL, 2, 128, 64, 3, 1, NULL, NULL, ELLE_BACKEND_CPU};
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (strcmp(a, "--json") == 0 && v)
            o.json = argv[++i];
        else if (strcmp(a, "--only") == 0 && v)
            o.only = argv[++i];
        else if (strcmp(a, "--methods") == 0 && v)
            o.list = argv[++i];
        else if (strcmp(a, "--backend") == 0)
            bad = parse_backend(v, &o.backend), i++;
        else if (strcmp(a, "--threads") == 0)
            bad = parse_int(a, v, 1, 1024, &o.threads), i++;
        else if (strcmp(a, "--batch") == 0)
            bad = parse_int(a, v, 1, 4096, &o.batch), i++;
        else if (strcmp(a, "--width") == 0)
            bad = parse_int(a, v, 1, 512, &o.width), i++;
        else if (strcmp(a, "--iters") == 0)
            bad = parse_int(a, v, 1, 1000, &o.iters), i++;
        else if (strcmp(a, "--warmup") == 0)
            bad = parse_int(a, v, 0, 1000, &o.warmup), i++;
        else if (strcmp(a, "--quick") == 0)
            quick = 1;
        else {
            fprintf(stderr,
                    "usage: elle-bench-methods [--json PATH] [--threads N] [--batch B] "
                    "[--width W] [--iters K] [--warmup W] [--only METHOD] "
                    "[--methods M1,M2,...] [--backend cpu|reference|cuda] [--quick]\n"
                    "exit status 77: the backend is not available (not in this build, or "
                    "no CUDA device)\n");
            return 2;
        }
        if (bad)
            return 2;
    }
    if (quick) {
        o.batch = 4;
        o.width = 8;
        o.iters = 1;
        o.warmup = 1;
    }
    if (o.list) {
        for (const char *p = o.list; *p;) {
            size_t word = strcspn(p, ",");
            int known = 0;
            for (int i = 0; i < N_METHODS; i++)
                known |= strlen(methods[i].name) == word && strncmp(p, methods[i].name, word) == 0;
            if (!known) {
                fprintf(stderr, "elle-bench-methods: unknown method '%.*s' in --methods\n",
                        (int)word, p);
                return 2;
            }
            p += word;
            if (*p == ',')
                p++;
        }
    }
    int selected[N_METHODS], n_sel = 0;
    for (int i = 0; i < N_METHODS; i++)
        if ((!o.only || strcmp(o.only, methods[i].name) == 0) &&
            (!o.list || in_list(o.list, methods[i].name)))
            selected[n_sel++] = i;
    if (n_sel == 0) {
        fprintf(stderr, "elle-bench-methods: no method selected (--only '%s', --methods '%s')\n",
                o.only ? o.only : "", o.list ? o.list : "");
        return 2;
    }
    if (!elle_backend_available(o.backend)) {
        /* 77: the test harnesses' "skipped" */
        fprintf(stderr, "elle-bench-methods: backend '%s' is not available (not in this build%s); "
                        "skipped\n",
                elle_backend_name(o.backend),
                o.backend == ELLE_BACKEND_CUDA ? ", or no CUDA device" : "");
        return 77;
    }

    int rc = 0;
    elle_context *ctx = NULL;
    elle_dataset *train = NULL;
    float *images = NULL;
    int32_t *labels = NULL;
    json_t *doc = json_object();
    const int64_t n = (int64_t)(o.warmup + o.iters) * o.batch, d = 3 * 32 * 32;
    images = malloc((size_t)(n * d) * sizeof *images);
    labels = malloc((size_t)n * sizeof *labels);
    if (!doc || !images || !labels) {
        fprintf(stderr, "elle-bench-methods: out of memory\n");
        rc = 1;
        goto cleanup;
    }
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < n * d; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        images[i] = (float)((s >> 40) * (1.0 / 16777216.0));
    }
    for (int64_t i = 0; i < n; i++)
        labels[i] = (int32_t)(i % 10);
    TRY(elle_context_create(&ctx, o.backend, 0), "context");
    TRY(elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, o.threads), "threads");
    TRY(elle_dataset_from_host(&train, images, labels, n, 3, 32, 32, 10), "dataset");

    printf("Adversarial training step per method: PreActResNet-18 width %d, batch %d, "
           "32x32x3, backend %s, %d threads, median of %d steps after %d warm-up\n",
           o.width, o.batch, elle_backend_name(o.backend), o.threads, o.iters, o.warmup);
    printf("  %-16s %12s %10s %10s\n", "method", "ms / step", "vs FGSM", "vs ELLE");
    double fgsm_ms = 0.0, elle_ms = 0.0;
    for (int k = 0; k < n_sel; k++) {
        const method *me = &methods[selected[k]];
        double ms = 0.0, rss = 0.0;
        if ((rc = run_method(&o, ctx, train, me, &ms, &rss)) < 0)
            goto cleanup;
        char key[96];
        snprintf(key, sizeof key, "%s_step_ms", me->key);
        json_object_set_new(doc, key, json_real(ms));
        if (strcmp(me->name, "fgsm") == 0)
            fgsm_ms = ms;
        if (strcmp(me->name, "elle") == 0)
            elle_ms = ms;
        char vs_fgsm[32] = "-", vs_elle[32] = "-";
        if (fgsm_ms > 0.0) {
            snprintf(key, sizeof key, "%s_vs_fgsm", me->key);
            json_object_set_new(doc, key, json_real(ms / fgsm_ms));
            snprintf(vs_fgsm, sizeof vs_fgsm, "%.3f", ms / fgsm_ms);
        }
        if (elle_ms > 0.0 && me->reg >= 3) {
            snprintf(key, sizeof key, "%s_vs_elle", me->key);
            json_object_set_new(doc, key, json_real(ms / elle_ms));
            snprintf(vs_elle, sizeof vs_elle, "%.3f", ms / elle_ms);
        }
        printf("  %-16s %12.1f %10s %10s\n", me->name, ms, vs_fgsm, vs_elle);
        if (o.only) {
            snprintf(key, sizeof key, "%s_peak_rss_mib", me->key);
            json_object_set_new(doc, key, json_real(rss));
            printf("  peak RSS of this process: %.1f MiB\n", rss);
        }
        fflush(stdout);
    }
    json_object_set_new(doc, "methods_batch", json_integer(o.batch));
    json_object_set_new(doc, "methods_width", json_integer(o.width));
    json_object_set_new(doc, "methods_iters", json_integer(o.iters));
    json_object_set_new(doc, "methods_backend_cuda", json_integer(o.backend == ELLE_BACKEND_CUDA));
    if (o.json && json_dump_file(doc, o.json, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
        fprintf(stderr, "elle-bench-methods: cannot write %s\n", o.json);
        rc = 1;
    }
cleanup:
    elle_dataset_free(train);
    elle_context_free(ctx);
    json_decref(doc);
    free(images);
    free(labels);
    return rc < 0 ? 1 : rc;
}
