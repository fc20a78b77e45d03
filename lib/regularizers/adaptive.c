/*
 * ELLE-A's adaptive lambda (see adaptive.h for the rule).
 *
 * The whole history is kept, as the reference keeps its Python list: the
 * window can then change at any time, the statistics are the plain two-pass
 * mean and population std of the stored values (what numpy computes, up to
 * summation order), and a checkpoint holds exactly what the reference
 * would. At 8 bytes a step this is ~100 KB for the 11,490 steps of a
 * 30-epoch CIFAR-10 run; the O(window) pass per step is noise beside a
 * forward pass.
 */
#include "regularizers/adaptive.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

void elle__adaptive_init(elle__adaptive *a)
{
    memset(a, 0, sizeof *a);
    a->lambda_max = 4000.0;
    a->decay = 0.99;
    a->sensitivity = 2.0;
}

void elle__adaptive_release(elle__adaptive *a)
{
    free(a->hist);
    a->hist = NULL;
    a->count = a->cap = 0;
}

void elle__adaptive_reset(elle__adaptive *a)
{
    a->count = 0;
    a->detections = 0;
    a->lambda = 0.0;
}

double elle__adaptive_lambda_adaptive(const elle__adaptive *a)
{
    /* lambda_start is read live until the first observation, so setting it
     * after creation (but before training) needs no extra bookkeeping */
    return a->count > 0 ? a->lambda : a->lambda_start;
}

double elle__adaptive_lambda(const elle__adaptive *a)
{
    return a->enabled ? elle__adaptive_lambda_adaptive(a) : a->lambda_const;
}

void elle__adaptive_stats(const elle__adaptive *a, double *mean, double *std)
{
    int64_t w = (a->window > 0 && a->window < a->count) ? a->window : a->count;
    if (w == 0) {
        *mean = 0.0;
        *std = 0.0;
        return;
    }
    const double *h = a->hist + (a->count - w);
    double s = 0.0;
    for (int64_t i = 0; i < w; i++)
        s += h[i];
    double m = s / (double)w;
    double v = 0.0;
    for (int64_t i = 0; i < w; i++)
        v += (h[i] - m) * (h[i] - m);
    *mean = m;
    *std = sqrt(v / (double)w); /* population std: numpy's np.std, ddof = 0 */
}

static int reserve(elle__adaptive *a, int64_t need)
{
    if (need <= a->cap)
        return ELLE_OK;
    int64_t cap = a->cap ? a->cap : 1024;
    while (cap < need)
        cap *= 2;
    double *h = realloc(a->hist, (size_t)cap * sizeof *h);
    if (!h)
        ELLE_FAIL(ELLE_ENOMEM, "ELLE-A history: cannot grow to %lld values", (long long)cap);
    a->hist = h;
    a->cap = cap;
    return ELLE_OK;
}

int elle__adaptive_observe(elle__adaptive *a, double value, int *detected)
{
    if (!isfinite(value))
        ELLE_FAIL(ELLE_EINVAL, "ELLE-A: observed value %g is not finite", value);
    ELLE_TRY(reserve(a, a->count + 1));
    int det = 0;
    /* the current value is tested against the history before it joins it;
     * "more than 2 values" counts the whole history (len(elle_values) > 2
     * in both reference codes, also when the ImageNet code windows the
     * statistics) */
    if (a->count > 2) {
        double mean, std;
        elle__adaptive_stats(a, &mean, &std);
        det = value > mean + a->sensitivity * std;
    }
    double prev = elle__adaptive_lambda_adaptive(a);
    a->lambda = det ? a->lambda_max : a->decay * prev;
    a->detections += det;
    a->hist[a->count++] = value;
    if (detected)
        *detected = det;
    return ELLE_OK;
}

/* ---- serialization --------------------------------------------------------------- */

void elle__reg_put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

uint64_t elle__reg_get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void elle__reg_put_f64(unsigned char *p, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    elle__reg_put_u64(p, u);
}

double elle__reg_get_f64(const unsigned char *p)
{
    uint64_t u = elle__reg_get_u64(p);
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

enum { HEADER_BYTES = 24 }; /* lambda, detections, count */

size_t elle__adaptive_state_bytes(const elle__adaptive *a)
{
    return HEADER_BYTES + 8 * (size_t)a->count;
}

void elle__adaptive_state_write(const elle__adaptive *a, unsigned char *out)
{
    elle__reg_put_f64(out, elle__adaptive_lambda_adaptive(a));
    elle__reg_put_u64(out + 8, (uint64_t)a->detections);
    elle__reg_put_u64(out + 16, (uint64_t)a->count);
    for (int64_t i = 0; i < a->count; i++)
        elle__reg_put_f64(out + HEADER_BYTES + 8 * i, a->hist[i]);
}

int elle__adaptive_state_read(elle__adaptive *a, const unsigned char *in, size_t size,
                              const char *who)
{
    if (size < HEADER_BYTES)
        ELLE_FAIL(ELLE_EFORMAT, "%s: ELLE-A state of %zu bytes, need at least %d", who, size,
                  (int)HEADER_BYTES);
    double lambda = elle__reg_get_f64(in);
    uint64_t det = elle__reg_get_u64(in + 8);
    uint64_t count = elle__reg_get_u64(in + 16);
    if (count > (size - HEADER_BYTES) / 8 || size != HEADER_BYTES + 8 * count)
        ELLE_FAIL(ELLE_EFORMAT, "%s: ELLE-A state says %llu values but holds %zu bytes", who,
                  (unsigned long long)count, size);
    if (!isfinite(lambda) || lambda < 0.0)
        ELLE_FAIL(ELLE_EFORMAT, "%s: ELLE-A state has lambda = %g", who, lambda);
    if (det > count)
        ELLE_FAIL(ELLE_EFORMAT, "%s: ELLE-A state has %llu detections in %llu values", who,
                  (unsigned long long)det, (unsigned long long)count);
    for (uint64_t i = 0; i < count; i++) {
        double v = elle__reg_get_f64(in + HEADER_BYTES + 8 * i);
        if (!isfinite(v))
            ELLE_FAIL(ELLE_EFORMAT, "%s: ELLE-A history value %llu is %g", who,
                      (unsigned long long)i, v);
    }
    /* everything checked: only an allocation failure remains, before any change */
    ELLE_TRY(reserve(a, (int64_t)count));
    for (uint64_t i = 0; i < count; i++)
        a->hist[i] = elle__reg_get_f64(in + HEADER_BYTES + 8 * i);
    a->count = (int64_t)count;
    a->detections = (int64_t)det;
    a->lambda = lambda;
    return ELLE_OK;
}
