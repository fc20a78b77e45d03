/*
 * Learning-rate and momentum schedules, as pure functions of the optimizer
 * step. Each shape reproduces the PyTorch scheduler the reference code uses,
 * evaluated in double with PyTorch's formula and operation order, so the
 * values agree with torch to the last bit or so (the optimizer then rounds
 * them to float, as PyTorch does when it applies them to float32 tensors):
 *
 *   short     torch.optim.lr_scheduler.CyclicLR(base_lr, max_lr,
 *             step_size_up = f*N, step_size_down = N - f*N, mode='triangular',
 *             cycle_momentum, base_momentum, max_momentum), stepped per batch
 *             (N = epochs * batches_per_epoch)
 *   long      MultiStepLR(gamma, milestones = [int(m1*E), int(m2*E)]), per epoch
 *   long-cos  OneCycleLR(max_lr, total_steps = E, pct_start, anneal 'cos',
 *             div_factor, final_div_factor, cycle_momentum, base/max momentum),
 *             per epoch
 *   constant  lr_max, momentum
 *
 * Which scheduler counter an optimizer step sees (the released ELLE code
 * takes two optimizer steps per batch and steps a per-batch scheduler between
 * them, a per-epoch scheduler after the epoch) is decided in one place,
 * elle_schedule_at. docs/training.md has the formulas with worked numbers.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/params.h"
#include "elle/optim.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846 /* Python's math.pi */
#endif

#define N_PARAMS 15 /* ids 1 .. 14 */
#define LR_HI 3.4e38 /* largest learning rate: must stay a finite float */

struct elle_schedule {
    int kind;
    double p[N_PARAMS];
};

/* Bounds and names; the default column is unused (defaults depend on the
 * kind: kind_defaults). */
static const elle__param_spec sched_params[] = {
    {ELLE_SCHEDULE_PARAM_LR_MAX, "lr_max", 0.0, LR_HI, 0, 0},
    {ELLE_SCHEDULE_PARAM_EPOCHS, "epochs", 1.0, 1e6, 1, 0},
    {ELLE_SCHEDULE_PARAM_BATCHES_PER_EPOCH, "batches_per_epoch", 1.0, 1099511627776.0, 1, 0},
    {ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH, "steps_per_batch", 1.0, 2.0, 1, 0},
    {ELLE_SCHEDULE_PARAM_UP_FRACTION, "up_fraction", 0.0, 1.0, 0, 0},
    {ELLE_SCHEDULE_PARAM_BASE_LR, "base_lr", 0.0, LR_HI, 0, 0},
    {ELLE_SCHEDULE_PARAM_MOMENTUM, "momentum", 0.0, 1.0, 0, 0},
    {ELLE_SCHEDULE_PARAM_BASE_MOMENTUM, "base_momentum", 0.0, 1.0, 0, 0},
    {ELLE_SCHEDULE_PARAM_CYCLE_MOMENTUM, "cycle_momentum", 0.0, 1.0, 1, 0},
    {ELLE_SCHEDULE_PARAM_GAMMA, "gamma", 0.0, 1.0, 0, 0},
    {ELLE_SCHEDULE_PARAM_MILESTONE_1, "milestone_1", 0.0, 1.0, 0, 0},
    {ELLE_SCHEDULE_PARAM_MILESTONE_2, "milestone_2", 0.0, 1.0, 0, 0},
    {ELLE_SCHEDULE_PARAM_DIV_FACTOR, "div_factor", 1.0, 1e12, 0, 0},
    {ELLE_SCHEDULE_PARAM_FINAL_DIV_FACTOR, "final_div_factor", 1.0, 1e12, 0, 0},
};
#define N_SPECS (sizeof sched_params / sizeof sched_params[0])

static const char *const kind_names[] = {"constant", "short", "long", "long-cos"};
#define N_KINDS 4

static void kind_defaults(int kind, double *p)
{
    p[ELLE_SCHEDULE_PARAM_LR_MAX] = kind == ELLE_SCHEDULE_SHORT ? 0.2 : 0.1;
    p[ELLE_SCHEDULE_PARAM_EPOCHS] = 1;
    p[ELLE_SCHEDULE_PARAM_BATCHES_PER_EPOCH] = 1;
    p[ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH] = 1;
    /* CyclicLR half up / half down (ELLE CIFAR scripts); OneCycleLR pct_start
     * of the 'cosinew' scheduler */
    p[ELLE_SCHEDULE_PARAM_UP_FRACTION] = kind == ELLE_SCHEDULE_LONG_COS ? 0.025 : 0.5;
    p[ELLE_SCHEDULE_PARAM_BASE_LR] = 0.0;
    /* CyclicLR defaults base 0.8 / max 0.9; OneCycleLR defaults 0.85 / 0.95 */
    p[ELLE_SCHEDULE_PARAM_MOMENTUM] = kind == ELLE_SCHEDULE_LONG_COS ? 0.95 : 0.9;
    p[ELLE_SCHEDULE_PARAM_BASE_MOMENTUM] = kind == ELLE_SCHEDULE_LONG_COS ? 0.85 : 0.8;
    p[ELLE_SCHEDULE_PARAM_CYCLE_MOMENTUM] =
        kind == ELLE_SCHEDULE_SHORT || kind == ELLE_SCHEDULE_LONG_COS ? 1 : 0;
    p[ELLE_SCHEDULE_PARAM_GAMMA] = 0.1;
    p[ELLE_SCHEDULE_PARAM_MILESTONE_1] = 0.5;
    p[ELLE_SCHEDULE_PARAM_MILESTONE_2] = 0.75;
    p[ELLE_SCHEDULE_PARAM_DIV_FACTOR] = 25.0;
    p[ELLE_SCHEDULE_PARAM_FINAL_DIV_FACTOR] = 1e4;
}

int elle_schedule_create(elle_schedule **out, elle_schedule_kind kind)
{
    ELLE_CHECK_ARG(out != NULL);
    if ((int)kind < 0 || (int)kind >= N_KINDS)
        ELLE_FAIL(ELLE_EINVAL, "elle_schedule_create: unknown schedule kind %d", (int)kind);
    elle_schedule *s = calloc(1, sizeof *s);
    if (!s)
        ELLE_FAIL(ELLE_ENOMEM, "elle_schedule_create: out of memory");
    s->kind = (int)kind;
    kind_defaults(s->kind, s->p);
    *out = s;
    return ELLE_OK;
}

void elle_schedule_free(elle_schedule *s)
{
    free(s);
}

int elle_schedule_get_kind(const elle_schedule *s)
{
    return s ? s->kind : -1;
}

const char *elle_schedule_kind_name(elle_schedule_kind kind)
{
    return (int)kind >= 0 && (int)kind < N_KINDS ? kind_names[kind] : NULL;
}

int elle_schedule_kind_from_name(const char *name, elle_schedule_kind *out)
{
    ELLE_CHECK_ARG(name != NULL);
    ELLE_CHECK_ARG(out != NULL);
    for (int k = 0; k < N_KINDS; k++) {
        if (strcmp(name, kind_names[k]) == 0) {
            *out = (elle_schedule_kind)k;
            return ELLE_OK;
        }
    }
    if (strcmp(name, "long_cos") == 0) {
        *out = ELLE_SCHEDULE_LONG_COS;
        return ELLE_OK;
    }
    ELLE_FAIL(ELLE_EINVAL,
              "elle_schedule_kind_from_name: unknown schedule '%s' (constant, short, long, "
              "long-cos)",
              name);
}

int elle_schedule_set_param(elle_schedule *s, elle_schedule_param param, double value)
{
    ELLE_CHECK_ARG(s != NULL);
    ELLE_TRY(elle__param_check(sched_params, N_SPECS, (int)param, value,
                               "elle_schedule_set_param"));
    s->p[param] = value;
    return ELLE_OK;
}

int elle_schedule_get_param(const elle_schedule *s, elle_schedule_param param, double *out)
{
    ELLE_CHECK_ARG(s != NULL);
    ELLE_CHECK_ARG(out != NULL);
    if (!elle__param_find(sched_params, N_SPECS, (int)param))
        ELLE_FAIL(ELLE_EINVAL, "elle_schedule_get_param: unknown parameter %d", (int)param);
    *out = s->p[param];
    return ELLE_OK;
}

int elle_schedule_param_bounds(elle_schedule_param param, double *lo, double *hi)
{
    const elle__param_spec *r = elle__param_find(sched_params, N_SPECS, (int)param);
    if (!r)
        ELLE_FAIL(ELLE_EINVAL, "elle_schedule_param_bounds: unknown parameter %d", (int)param);
    if (lo)
        *lo = r->lo;
    if (hi)
        *hi = r->hi;
    return ELLE_OK;
}

int elle_schedule_param_from_name(const char *name, elle_schedule_param *out)
{
    int id;
    ELLE_CHECK_ARG(out != NULL);
    ELLE_TRY(elle__param_lookup(sched_params, N_SPECS, name, &id,
                                "elle_schedule_param_from_name"));
    *out = (elle_schedule_param)id;
    return ELLE_OK;
}

const char *elle_schedule_param_name(elle_schedule_param param)
{
    const elle__param_spec *r = elle__param_find(sched_params, N_SPECS, (int)param);
    return r ? r->name : NULL;
}

/* Counts are integral and bounded (epochs <= 1e6, batches <= 2^40,
 * steps <= 2), so the products fit int64 exactly. */
static int64_t iparam(const elle_schedule *s, elle_schedule_param p)
{
    return (int64_t)s->p[p];
}

int64_t elle_schedule_total_steps(const elle_schedule *s)
{
    if (!s)
        return -1;
    return iparam(s, ELLE_SCHEDULE_PARAM_EPOCHS) *
           iparam(s, ELLE_SCHEDULE_PARAM_BATCHES_PER_EPOCH) *
           iparam(s, ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH);
}

/* CyclicLR.get_lr, mode 'triangular' (scale_fn = 1), at counter t. */
static int short_at(const elle_schedule *s, int64_t t, int64_t n_iter, double *lr, double *m)
{
    const double *p = s->p;
    double f = p[ELLE_SCHEDULE_PARAM_UP_FRACTION];
    if (!(f > 0.0))
        ELLE_FAIL(ELLE_EINVAL, "elle_schedule_at: the short schedule needs up_fraction > 0 "
                               "(got %g)", f);
    double up = f * (double)n_iter;
    double down = (double)n_iter - up;
    double total = up + down;
    double ratio = up / total;
    double cycle = floor(1.0 + (double)t / total);
    double x = 1.0 + (double)t / total - cycle;
    double scale = x <= ratio ? x / ratio : (x - 1.0) / (ratio - 1.0);
    double base = p[ELLE_SCHEDULE_PARAM_BASE_LR], top = p[ELLE_SCHEDULE_PARAM_LR_MAX];
    *lr = base + (top - base) * scale;
    if (p[ELLE_SCHEDULE_PARAM_CYCLE_MOMENTUM] != 0.0) {
        double mmax = p[ELLE_SCHEDULE_PARAM_MOMENTUM], mbase = p[ELLE_SCHEDULE_PARAM_BASE_MOMENTUM];
        *m = mmax - (mmax - mbase) * scale;
    } else {
        *m = p[ELLE_SCHEDULE_PARAM_MOMENTUM];
    }
    return ELLE_OK;
}

/* MultiStepLR at epoch e: one factor gamma per milestone reached, milestone
 * j at int(fraction_j * epochs) (Python's int truncates; both are >= 0). */
static void long_at(const elle_schedule *s, int64_t e, double *lr, double *m)
{
    const double *p = s->p;
    double epochs = p[ELLE_SCHEDULE_PARAM_EPOCHS];
    double m1 = floor(p[ELLE_SCHEDULE_PARAM_MILESTONE_1] * epochs);
    double m2 = floor(p[ELLE_SCHEDULE_PARAM_MILESTONE_2] * epochs);
    double v = p[ELLE_SCHEDULE_PARAM_LR_MAX];
    if ((double)e >= m1)
        v *= p[ELLE_SCHEDULE_PARAM_GAMMA];
    if ((double)e >= m2)
        v *= p[ELLE_SCHEDULE_PARAM_GAMMA];
    *lr = v;
    *m = p[ELLE_SCHEDULE_PARAM_MOMENTUM];
}

/* OneCycleLR._annealing_cos */
static double anneal_cos(double start, double end, double pct)
{
    double cos_out = cos(M_PI * pct) + 1.0;
    return end + (start - end) / 2.0 * cos_out;
}

/* OneCycleLR.get_lr (two phases, cosine) at counter e of total_steps = epochs. */
static void long_cos_at(const elle_schedule *s, int64_t e, double *lr, double *m)
{
    const double *p = s->p;
    double total = p[ELLE_SCHEDULE_PARAM_EPOCHS];
    double max_lr = p[ELLE_SCHEDULE_PARAM_LR_MAX];
    double initial_lr = max_lr / p[ELLE_SCHEDULE_PARAM_DIV_FACTOR];
    double min_lr = initial_lr / p[ELLE_SCHEDULE_PARAM_FINAL_DIV_FACTOR];
    double mmax = p[ELLE_SCHEDULE_PARAM_MOMENTUM], mbase = p[ELLE_SCHEDULE_PARAM_BASE_MOMENTUM];
    const struct {
        double end_step, start_lr, end_lr, start_m, end_m;
    } phase[2] = {
        {p[ELLE_SCHEDULE_PARAM_UP_FRACTION] * total - 1.0, initial_lr, max_lr, mmax, mbase},
        {total - 1.0, max_lr, min_lr, mbase, mmax},
    };
    double start_step = 0.0;
    for (int i = 0; i < 2; i++) {
        double end_step = phase[i].end_step;
        if ((double)e <= end_step || i == 1) {
            /* a phase of zero length (pct_start * epochs == 1) makes torch
             * divide 0 by 0; it is taken as finished (pct = 1) here */
            double len = end_step - start_step;
            double pct = len != 0.0 ? ((double)e - start_step) / len : 1.0;
            *lr = anneal_cos(phase[i].start_lr, phase[i].end_lr, pct);
            *m = p[ELLE_SCHEDULE_PARAM_CYCLE_MOMENTUM] != 0.0
                     ? anneal_cos(phase[i].start_m, phase[i].end_m, pct)
                     : mmax;
            return;
        }
        start_step = end_step;
    }
}

int elle_schedule_at(const elle_schedule *s, int64_t step, double *lr_out, double *momentum_out)
{
    ELLE_CHECK_ARG(s != NULL);
    int64_t total = elle_schedule_total_steps(s);
    if (step < 0 || step >= total)
        ELLE_FAIL(ELLE_EINVAL, "elle_schedule_at: step %lld outside the run [0, %lld) "
                               "(epochs x batches_per_epoch x steps_per_batch)",
                  (long long)step, (long long)total);
    int64_t spb = iparam(s, ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH);
    int64_t bpe = iparam(s, ELLE_SCHEDULE_PARAM_BATCHES_PER_EPOCH);
    int64_t batch = step / spb; /* 0-based over the run */
    int64_t k = step % spb;     /* place of the step in its batch */
    int64_t epoch = batch / bpe;
    double lr = 0.0, m = 0.0;
    switch (s->kind) {
    case ELLE_SCHEDULE_SHORT:
        /* the per-batch scheduler is stepped once per batch, after the
         * batch's first optimizer step: step k of batch i sees counter i + k
         * (k <= 1) */
        ELLE_TRY(short_at(s, batch + k, bpe * iparam(s, ELLE_SCHEDULE_PARAM_EPOCHS), &lr, &m));
        break;
    case ELLE_SCHEDULE_LONG:
        long_at(s, epoch, &lr, &m);
        break;
    case ELLE_SCHEDULE_LONG_COS:
        long_cos_at(s, epoch, &lr, &m);
        break;
    default:
        lr = s->p[ELLE_SCHEDULE_PARAM_LR_MAX];
        m = s->p[ELLE_SCHEDULE_PARAM_MOMENTUM];
    }
    if (lr_out)
        *lr_out = lr;
    if (momentum_out)
        *momentum_out = m;
    return ELLE_OK;
}
