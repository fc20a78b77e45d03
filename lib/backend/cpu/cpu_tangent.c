/*
 * Tangent ops of the CPU backend (forward-mode derivatives for the
 * second-order primitive, docs/second-order.md). oneDNN has no primitive for
 * them, so they are OpenMP loops that walk the blocked layouts directly:
 * element (n, c, h, w) of a tensor with channel block B (1 for plain, 8 or 16
 * for nChw8c / nChw16c) lives at ((n*CB + c/B)*H*W + h*W + w)*B + c%B, CB the
 * padded number of channel blocks. Padded channels hold zeros in every input
 * and get per-channel coefficients of zero, so outputs keep zero padding.
 *
 * Batch norm needs per-channel sums over (n, h, w). They are taken in
 * fixed chunks of SAMPLES_PER_CHUNK samples (one double partial per chunk and
 * channel) and the partials are added in chunk order, so the result does not
 * depend on the thread count. The elementwise pass then applies the closed
 * forms rearranged as per-channel coefficients:
 *
 *   forward tangent:  yt  = mask * (kt*t + kx*xhat + k0)
 *   backward tangent: dxt = kg*g + kgt*gt + kt*t + kx*xhat + k0
 *
 * (g, gt: dy and dyt masked by the fused ReLU; t = xt; xhat = (x-mean)*s),
 * which the tests compare with the reference backend's direct formulas.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/desc_check.h"
#include "core/error.h"

#define PAR_MIN 32768
#define SAMPLES_PER_CHUNK 4

typedef struct blk {
    int64_t b;  /* channel block */
    int64_t cb; /* channel blocks (padded channels / b) */
    int64_t hw; /* h*w */
} blk;

static blk blk_of(const elle__tensor *t)
{
    blk r;
    r.b = elle__cpu_layout_block(t->layout);
    r.cb = (t->c + r.b - 1) / r.b;
    r.hw = t->h * t->w;
    return r;
}

/* ---- batch norm ------------------------------------------------------------ */

static int check_bn_t(const char *op, const elle__bn_desc *bd, const elle__tensor *x,
                      const float *gamma, const float *mean, const float *var)
{
    ELLE_TRY(elle__cpu_check_tensor(op, "x", x));
    ELLE_TRY(elle__check_bn("cpu", op, bd, x));
    ELLE_TRY(elle__cpu_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__cpu_check_ptr(op, "mean", mean));
    ELLE_TRY(elle__cpu_check_ptr(op, "var", var));
    return ELLE_OK;
}

/* Scratch for a batch-norm tangent over x: per padded channel the mean and
 * inverse deviation (double), `nsum` partial sums per chunk and the `nsum`
 * totals (double), and five float coefficient arrays. */
typedef struct bn_scratch {
    double *mu, *s, *part, *sums;
    float *kg, *kgt, *kt, *kx, *k0;
    int64_t cp, chunks;
} bn_scratch;

static int bn_scratch_get(elle__backend *be, const elle__tensor *x, const elle__bn_desc *bd,
                          const float *mean, const float *var, int nsum, bn_scratch *sc)
{
    blk L = blk_of(x);
    sc->cp = L.cb * L.b;
    sc->chunks = (x->n + SAMPLES_PER_CHUNK - 1) / SAMPLES_PER_CHUNK;
    size_t doubles = (size_t)(2 * sc->cp + (sc->chunks + 1) * sc->cp * nsum);
    size_t bytes = doubles * sizeof(double) + 5 * (size_t)sc->cp * sizeof(float);
    void *p;
    ELLE_TRY(elle__cpu_loop_scratch(be, bytes, &p));
    memset(p, 0, bytes);
    sc->mu = p;
    sc->s = sc->mu + sc->cp;
    sc->part = sc->s + sc->cp;
    sc->sums = sc->part + sc->chunks * sc->cp * nsum;
    sc->kg = (float *)(sc->sums + sc->cp * nsum);
    sc->kgt = sc->kg + sc->cp;
    sc->kt = sc->kgt + sc->cp;
    sc->kx = sc->kt + sc->cp;
    sc->k0 = sc->kx + sc->cp;
    /* padded channels keep s = 0: their xhat, and every coefficient, is 0 */
    for (int64_t c = 0; c < x->c; c++) {
        sc->mu[c] = mean[c];
        sc->s[c] = 1.0 / sqrt((double)var[c] + (double)bd->eps);
    }
    return ELLE_OK;
}

/* Per-channel sums (into sums[c*NS + j], c < cp) of the products the
 * tangents need. With fwd_only, NS = 2: t, xhat*t. Otherwise NS = 7:
 * g, g*xhat, gt, gt*xhat, g*t, t, xhat*t. ym (fused relu mask source) may be
 * NULL; dy, dyt are NULL with fwd_only. */
static void bn_sums(const blk L, int64_t n, const double *mu, const double *s,
                    const float *x, const float *ym, const float *xt, const float *dy,
                    const float *dyt, int fwd_only, int64_t chunks, double *part, double *sums)
{
    const int ns = fwd_only ? 2 : 7;
    const int64_t cp = L.cb * L.b, tasks = chunks * L.cb;
#pragma omp parallel for schedule(static) if (n * cp * L.hw > PAR_MIN)
    for (int64_t task = 0; task < tasks; task++) {
        const int64_t ch = task / L.cb, k = task % L.cb;
        double acc[7][16];
        memset(acc, 0, sizeof acc);
        const int64_t n0 = ch * SAMPLES_PER_CHUNK;
        const int64_t n1 = n0 + SAMPLES_PER_CHUNK < n ? n0 + SAMPLES_PER_CHUNK : n;
        const double *m = mu + k * L.b, *sd = s + k * L.b;
        for (int64_t ni = n0; ni < n1; ni++) {
            const int64_t base0 = (ni * L.cb + k) * L.hw * L.b;
            for (int64_t p = 0; p < L.hw; p++) {
                const int64_t base = base0 + p * L.b;
                for (int64_t l = 0; l < L.b; l++) {
                    const int64_t i = base + l;
                    const double xh = ((double)x[i] - m[l]) * sd[l], t = xt[i];
                    acc[0][l] += t;
                    acc[1][l] += xh * t;
                    if (!fwd_only) {
                        const double mk = ym && !(ym[i] > 0.0f) ? 0.0 : 1.0;
                        const double g = mk * dy[i], gt = mk * dyt[i];
                        acc[2][l] += g;
                        acc[3][l] += g * xh;
                        acc[4][l] += gt;
                        acc[5][l] += gt * xh;
                        acc[6][l] += g * t;
                    }
                }
            }
        }
        for (int64_t l = 0; l < L.b; l++)
            for (int j = 0; j < ns; j++)
                part[(ch * cp + k * L.b + l) * ns + j] = acc[j][l];
    }
    /* chunk order, whatever the thread count */
    for (int64_t c = 0; c < cp; c++)
        for (int j = 0; j < ns; j++) {
            double v = 0.0;
            for (int64_t ch = 0; ch < chunks; ch++)
                v += part[(ch * cp + c) * ns + j];
            sums[c * ns + j] = v;
        }
}

/* Elementwise, mk the fused relu's mask (1 without ym):
 *   without dy: out = mk * (kt*t + kx*xhat + k0)                (forward tangent)
 *   with dy:    out = mk * (kg*dy + kgt*dyt) + kt*t + kx*xhat + k0 (backward's:
 *               only g = mk*dy and gt = mk*dyt carry the mask). */
static void bn_apply_t(const blk L, int64_t n, const bn_scratch *sc, const float *x,
                       const float *ym, const float *xt, const float *dy, const float *dyt,
                       float *out)
{
    const int64_t tasks = n * L.cb;
#pragma omp parallel for schedule(static) if (n * L.cb * L.b * L.hw > PAR_MIN)
    for (int64_t task = 0; task < tasks; task++) {
        const int64_t k = task % L.cb, c0 = k * L.b;
        float mu[16], s[16], kg[16], kgt[16], kt[16], kx[16], k0[16];
        for (int64_t l = 0; l < L.b; l++) {
            mu[l] = (float)sc->mu[c0 + l];
            s[l] = (float)sc->s[c0 + l];
            kg[l] = sc->kg[c0 + l];
            kgt[l] = sc->kgt[c0 + l];
            kt[l] = sc->kt[c0 + l];
            kx[l] = sc->kx[c0 + l];
            k0[l] = sc->k0[c0 + l];
        }
        const int64_t base0 = task * L.hw * L.b;
        for (int64_t p = 0; p < L.hw; p++) {
            const int64_t base = base0 + p * L.b;
            for (int64_t l = 0; l < L.b; l++) {
                const int64_t i = base + l;
                const float xh = (x[i] - mu[l]) * s[l];
                const float mk = ym && !(ym[i] > 0.0f) ? 0.0f : 1.0f;
                const float v = kt[l] * xt[i] + kx[l] * xh + k0[l];
                out[i] = dy ? v + mk * (kg[l] * dy[i] + kgt[l] * dyt[i]) : mk * v;
            }
        }
    }
}

int elle__cpu_bn_fwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                             const elle__tensor *x, const elle__tensor *y, const elle__tensor *xt,
                             const float *gamma, const float *mean, const float *var,
                             const void *ws, elle__tensor *yt)
{
    (void)ws; /* the fused relu's mask is y > 0, as the workspace's */
    const char *op = "bn_fwd_tangent";
    ELLE_TRY(check_bn_t(op, bd, x, gamma, mean, var));
    ELLE_TRY(elle__cpu_check_same_layout(op, "x", x, "xt", xt));
    ELLE_TRY(elle__cpu_check_same_layout(op, "x", x, "yt", yt));
    if (bd->fuse_relu)
        ELLE_TRY(elle__cpu_check_same_layout(op, "x", x, "y (fuse_relu)", y));
    const blk L = blk_of(x);
    bn_scratch sc;
    ELLE_TRY(bn_scratch_get(be, x, bd, mean, var, 2, &sc));
    if (training)
        bn_sums(L, x->n, sc.mu, sc.s, x->data, NULL, xt->data, NULL, NULL, 1, sc.chunks, sc.part,
                sc.sums);
    const double m_count = (double)(x->n * x->h * x->w);
    for (int64_t c = 0; c < x->c; c++) {
        const double gs = (double)gamma[c] * sc.s[c];
        /* yt = gamma s (t - mean(t) - xhat mean(xhat t)) in training */
        const double b = training ? sc.sums[c * 2 + 0] / m_count : 0.0;
        const double a = training ? sc.sums[c * 2 + 1] / m_count : 0.0;
        sc.kt[c] = (float)gs;
        sc.kx[c] = (float)(-gs * a);
        sc.k0[c] = (float)(-gs * b);
    }
    bn_apply_t(L, x->n, &sc, x->data, bd->fuse_relu ? y->data : NULL, xt->data, NULL, NULL,
               yt->data);
    return ELLE_OK;
}

int elle__cpu_bn_bwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                             const elle__tensor *x, const elle__tensor *y, const elle__tensor *xt,
                             const elle__tensor *dy, const elle__tensor *dyt, const float *gamma,
                             const float *mean, const float *var, const void *ws,
                             elle__tensor *dxt, float *dgamma_t, float *dbeta_t)
{
    (void)ws;
    const char *op = "bn_bwd_tangent";
    ELLE_TRY(check_bn_t(op, bd, x, gamma, mean, var));
    ELLE_TRY(elle__cpu_check_same_layout(op, "x", x, "xt", xt));
    ELLE_TRY(elle__cpu_check_same_layout(op, "x", x, "dy", dy));
    ELLE_TRY(elle__cpu_check_same_layout(op, "x", x, "dyt", dyt));
    if (dxt)
        ELLE_TRY(elle__cpu_check_same_layout(op, "x", x, "dxt", dxt));
    if (bd->fuse_relu)
        ELLE_TRY(elle__cpu_check_same_layout(op, "x", x, "y (fuse_relu)", y));
    const blk L = blk_of(x);
    const float *ym = bd->fuse_relu ? y->data : NULL;
    bn_scratch sc;
    ELLE_TRY(bn_scratch_get(be, x, bd, mean, var, 7, &sc));
    bn_sums(L, x->n, sc.mu, sc.s, x->data, ym, xt->data, dy->data, dyt->data, 0, sc.chunks,
            sc.part, sc.sums);
    const double m_count = (double)(x->n * x->h * x->w);
    for (int64_t c = 0; c < x->c; c++) {
        const double *S = sc.sums + c * 7; /* t, xhat t, g, g xhat, gt, gt xhat, g t */
        const double s = sc.s[c], gs = (double)gamma[c] * s;
        if (!training) {
            /* dxt = gamma s gt; dgamma_t = sum(gt xhat + g s t) */
            sc.kgt[c] = (float)gs;
            if (dgamma_t)
                dgamma_t[c] += (float)(S[5] + s * S[6]);
            if (dbeta_t)
                dbeta_t[c] += (float)S[4];
            continue;
        }
        const double b = S[0] / m_count, a = S[1] / m_count, mg = S[2] / m_count,
                     mgx = S[3] / m_count, mgt = S[4] / m_count, mgtx = S[5] / m_count;
        const double mg_xhat_t = s * (S[6] / m_count - b * mg - a * mgx);
        /* the reference's
         *   gamma s (-s a (g - mg - xhat mgx) + gt - mgt - xhat_t mgx - xhat (mgtx + mg_xhat_t))
         * with xhat_t = s (t - b - xhat a), collected by term */
        sc.kg[c] = (float)(-gs * s * a);
        sc.kgt[c] = (float)gs;
        sc.kt[c] = (float)(-gs * s * mgx);
        sc.kx[c] = (float)(gs * (2.0 * s * a * mgx - mgtx - mg_xhat_t));
        sc.k0[c] = (float)(gs * (s * a * mg - mgt + s * b * mgx));
        if (dgamma_t)
            dgamma_t[c] += (float)(S[5] + m_count * mg_xhat_t);
        if (dbeta_t)
            dbeta_t[c] += (float)S[4];
    }
    if (dxt)
        bn_apply_t(L, x->n, &sc, x->data, ym, xt->data, dy->data, dyt->data, dxt->data);
    return ELLE_OK;
}

/* ---- pooling ---------------------------------------------------------------- */

int elle__cpu_pool_fwd_tangent(elle__backend *be, const elle__pool_desc *pd,
                               const elle__tensor *x, const elle__tensor *y, const void *ws,
                               const elle__tensor *xt, elle__tensor *yt)
{
    const char *op = "pool_fwd_tangent";
    ELLE_TRY(elle__cpu_check_ptr(op, "pool descriptor", pd));
    ELLE_TRY(elle__cpu_check_same_layout(op, "x", x, "xt", xt));
    ELLE_TRY(elle__cpu_check_same_layout(op, "y", y, "yt", yt));
    if (pd->kind != ELLE__POOL_MAX)
        return elle__cpu_pool_fwd(be, pd, xt, yt, NULL); /* linear: the same average */
    (void)ws;
    if (pd->kh <= 0 || pd->kw <= 0 || pd->sh <= 0 || pd->sw <= 0 || pd->ph < 0 || pd->pw < 0 ||
        y->n != x->n || y->c != x->c || y->layout != x->layout ||
        y->h != elle__window_out(x->h, pd->kh, pd->sh, pd->ph) ||
        y->w != elle__window_out(x->w, pd->kw, pd->sw, pd->pw))
        ELLE_FAIL(ELLE_ESHAPE,
                  "cpu %s: y %s is not the max pooling of x %s (window %" PRId64 "x%" PRId64
                  ", stride %" PRId64 ", padding %" PRId64 ")",
                  op, elle__cpu_shape(y).s, elle__cpu_shape(x).s, pd->kh, pd->kw, pd->sh, pd->ph);
    /* oneDNN's workspace format belongs to its implementation, so the
     * routing is read back from (x, y) instead: the first position in scan
     * order whose value equals the window's maximum. That is the rule the
     * forward applied (strict > while scanning, in oneDNN's kernels as in
     * the reference), so it is the forward's argmax. Scanning backwards and
     * overwriting on equality leaves the first one. */
    const blk X = blk_of(x), Y = blk_of(y);
    const int64_t tasks = x->n * X.cb;
    const float *xs = x->data, *ys = y->data, *xts = xt->data;
    float *yts = yt->data;
#pragma omp parallel for schedule(static) if (tasks * Y.hw * Y.b * pd->kh * pd->kw > PAR_MIN)
    for (int64_t task = 0; task < tasks; task++) {
        const float *xp = xs + task * X.hw * X.b, *xtp = xts + task * X.hw * X.b;
        const float *yp = ys + task * Y.hw * Y.b;
        float *ytp = yts + task * Y.hw * Y.b;
        for (int64_t oy = 0; oy < y->h; oy++)
            for (int64_t ox = 0; ox < y->w; ox++) {
                const int64_t o = (oy * y->w + ox) * Y.b;
                float v[16] = {0};
                for (int64_t ky = pd->kh - 1; ky >= 0; ky--) {
                    const int64_t iy = oy * pd->sh - pd->ph + ky;
                    if (iy < 0 || iy >= x->h)
                        continue;
                    for (int64_t kx = pd->kw - 1; kx >= 0; kx--) {
                        const int64_t ix = ox * pd->sw - pd->pw + kx;
                        if (ix < 0 || ix >= x->w)
                            continue;
                        const int64_t i = (iy * x->w + ix) * X.b;
                        for (int64_t l = 0; l < X.b; l++)
                            v[l] = xp[i + l] == yp[o + l] ? xtp[i + l] : v[l];
                    }
                }
                for (int64_t l = 0; l < Y.b; l++)
                    ytp[o + l] = v[l];
            }
    }
    return ELLE_OK;
}

/* ---- softmax cross-entropy -------------------------------------------------- */

int elle__cpu_xent_tangent(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                           const float *coef, const float *gcoef, const elle__tensor *logits_t,
                           elle__tensor *dlogits_t, float *loss_t)
{
    (void)be;
    const char *op = "xent_tangent";
    ELLE_TRY(elle__cpu_check_tensor(op, "logits", logits));
    if (logits->h != 1 || logits->w != 1 || logits->layout != ELLE__LAYOUT_PLAIN)
        ELLE_FAIL(ELLE_ESHAPE, "cpu %s: logits are %s, expected plain (n, classes, 1, 1)", op,
                  elle__cpu_shape(logits).s);
    ELLE_TRY(elle__cpu_check_same_layout(op, "logits", logits, "logits_t", logits_t));
    ELLE_TRY(elle__cpu_check_same_layout(op, "logits", logits, "dlogits_t", dlogits_t));
    ELLE_TRY(elle__cpu_check_ptr(op, "labels", labels));
    ELLE_TRY(elle__cpu_check_ptr(op, "coef", coef));
    const int64_t k = logits->c, n = logits->n;
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            ELLE_FAIL(ELLE_EINVAL, "cpu %s: label %d of sample %" PRId64 " is outside [0, %" PRId64 ")",
                      op, (int)labels[i], i, k);
    const float *zs = logits->data, *zts = logits_t->data;
    float *dzts = dlogits_t->data;
#pragma omp parallel for schedule(static) if (n * k > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *z = zs + i * k, *zt = zts + i * k;
        float *dzt = dzts + i * k;
        double mx = z[0];
        for (int64_t j = 1; j < k; j++)
            mx = fmax(mx, (double)z[j]);
        double sum = 0.0;
        for (int64_t j = 0; j < k; j++)
            sum += exp((double)z[j] - mx);
        /* p . zt before any dzt[j] is written (dzt may alias zt) */
        double pz = 0.0;
        for (int64_t j = 0; j < k; j++)
            pz += exp((double)z[j] - mx) / sum * (double)zt[j];
        if (loss_t)
            loss_t[i] = (float)(pz - (double)zt[labels[i]]);
        const double cf = coef[i], gc = gcoef ? gcoef[i] : 0.0;
        for (int64_t j = 0; j < k; j++) {
            double p = exp((double)z[j] - mx) / sum;
            double onehot = j == labels[i] ? 1.0 : 0.0;
            dzt[j] = (float)(cf * p * ((double)zt[j] - pz) + gc * (p - onehot));
        }
    }
    return ELLE_OK;
}
