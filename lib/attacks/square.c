/*
 * Square Attack, L-inf, margin loss (spec/autoattack.md §5), as the
 * AutoAttack PyTorch port runs it, random draws included: one MT19937
 * stream seeded once per chunk (mt19937.h), consumed as
 *   init:       N*C*W uniforms (one sign per sample, channel and column:
 *               vertical stripes x_best = clip01(x + eps sgn)),
 *   iteration:  1 (vh) + 1 (vw) + C (channel signs), whatever the number
 *               of active samples; the window and the signs are shared by
 *               the whole batch.
 * Per iteration, on the samples with margin > 0: inside the s x s window at
 * (vh, vw) each channel becomes Proj(x_best + 2 eps sgn_c) (x +- eps
 * clipped, or x_best when sgn_c = 0); one forward gives the margin m;
 * improved = m < loss_min (strict), accepted = improved or m <= 0. The run
 * stops when every margin is <= 0, and returns at once when every initial
 * margin is < 0.
 *
 * p follows the raw iteration (resc_schedule = False) and s is capped at
 * min(h, w). vh = trunc(float(h - s) * u), so the last row and column
 * never start a window (inherited quirk).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attacks/autoattack_internal.h"
#include "core/error.h"

double elle__square_p_selection(double p_init, int i_iter)
{
    static const struct {
        int upto;
        double div;
    } sched[] = {{10, 1},     {50, 2},     {200, 4},     {500, 8},   {1000, 16},
                 {2000, 32}, {4000, 64}, {6000, 128}, {8000, 256}};
    for (size_t k = 0; k < sizeof sched / sizeof sched[0]; k++)
        if (i_iter <= sched[k].upto)
            return p_init / sched[k].div;
    return p_init / 512;
}

int64_t elle__square_side(double p, int64_t c, int64_t h, int64_t w)
{
    /* Python: max(int(round(sqrt(p * n_features / c))), 1), round half to
     * even (nearbyint in the default rounding mode), then min(s, min(h, w)) */
    const double v = sqrt(p * (double)(c * h * w) / (double)c);
    int64_t s = (int64_t)nearbyint(v);
    if (s < 1)
        s = 1;
    const int64_t m = h < w ? h : w;
    return s < m ? s : m;
}

/* The Python double a float parameter was rounded from (its shortest
 * round-tripping decimal: 0.8f -> 0.8), so that p * h * w is computed from
 * the same double as the reference's p_init. */
static double float_as_decimal(float f)
{
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        const double d = strtod(buf, NULL);
        if ((float)d == f)
            return d;
    }
    return (double)f;
}

/* torch.sign(2u - 1) */
static float draw_sign(elle__mt19937 *g)
{
    const float t = 2.0f * elle__mt19937_uniform(g) - 1.0f;
    return (float)((t > 0.0f) - (t < 0.0f));
}

/* z_y - max_{j != y} z_j */
static float margin_of(const float *z, int64_t classes, int32_t y)
{
    float best = -INFINITY;
    for (int64_t k = 0; k < classes; k++)
        if (k != y && z[k] > best)
            best = z[k];
    return z[y] - best;
}

typedef struct sq_ws {
    float *xs, *x_best, *x_new; /* (n, numel) */
    float *logits;              /* (n, K) */
    float *margin_min, *loss_min, *u, *sgn; /* (n), (n), (n*C*W), (C) */
    int32_t *ys;                /* (n) */
    int64_t *idx, *act;         /* (n) */
} sq_ws;

static void sq_ws_free(sq_ws *ws)
{
    free(ws->xs);
    free(ws->x_best);
    free(ws->x_new);
    free(ws->logits);
    free(ws->margin_min);
    free(ws->loss_min);
    free(ws->u);
    free(ws->sgn);
    free(ws->ys);
    free(ws->idx);
    free(ws->act);
}

/* attack_single_run on ns points (ws->xs, ws->ys): leaves x_best and
 * margin_min in ws. */
static int square_single_run(elle__aa_model *am, const elle__aa_params *p, sq_ws *ws, int64_t ns,
                             int64_t C, int64_t H, int64_t W, elle__mt19937 *g,
                             elle__square_trace *trace)
{
    const int64_t D = am->numel, K = am->classes;
    const float eps = p->eps;
    const float two_eps = 2.0f * eps; /* float(2. * eps) == 2 * float(eps) exactly */
    const double p_init = float_as_decimal(p->p_init);

    /* vertical stripes: one sign per (sample, channel, column), C order */
    elle__mt19937_fill(g, ws->u, ns * C * W);
    for (int64_t i = 0; i < ns; i++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t col = 0; col < W; col++) {
                const float t = 2.0f * ws->u[(i * C + c) * W + col] - 1.0f;
                const float sg = (float)((t > 0.0f) - (t < 0.0f));
                for (int64_t row = 0; row < H; row++) {
                    const int64_t j = i * D + (c * H + row) * W + col;
                    ws->x_best[j] = fminf(fmaxf(ws->xs[j] + eps * sg, 0.0f), 1.0f);
                }
            }
    ELLE_TRY(elle__aa_forward(am, ws->x_best, ns, ws->logits));
    int all_negative = 1;
    for (int64_t i = 0; i < ns; i++) {
        ws->margin_min[i] = ws->loss_min[i] = margin_of(ws->logits + i * K, K, ws->ys[i]);
        all_negative &= ws->margin_min[i] < 0.0f;
    }
    if (all_negative) {
        if (trace)
            trace->early_return = 1;
        return ELLE_OK;
    }

    for (int it = 0; it < p->n_queries; it++) {
        if (trace)
            trace->iterations++;
        int64_t na = 0;
        for (int64_t i = 0; i < ns; i++)
            if (ws->margin_min[i] > 0.0f)
                ws->act[na++] = i;

        const int64_t s = elle__square_side(elle__square_p_selection(p_init, it), C, H, W);
        const int64_t vh = (int64_t)((float)(H - s) * elle__mt19937_uniform(g));
        const int64_t vw = (int64_t)((float)(W - s) * elle__mt19937_uniform(g));
        for (int64_t c = 0; c < C; c++)
            ws->sgn[c] = draw_sign(g);

        if (na > 0) {
            for (int64_t a = 0; a < na; a++) {
                const int64_t i = ws->act[a];
                float *xn = ws->x_new + a * D;
                const float *xb = ws->x_best + i * D, *x0 = ws->xs + i * D;
                memcpy(xn, xb, (size_t)D * sizeof(float));
                for (int64_t c = 0; c < C; c++) {
                    const float delta = two_eps * ws->sgn[c];
                    for (int64_t row = vh; row < vh + s; row++)
                        for (int64_t col = vw; col < vw + s; col++) {
                            const int64_t j = (c * H + row) * W + col;
                            float v = xb[j] + delta;
                            v = fminf(fmaxf(v, x0[j] - eps), x0[j] + eps);
                            xn[j] = fminf(fmaxf(v, 0.0f), 1.0f);
                        }
                }
            }
            ELLE_TRY(elle__aa_forward(am, ws->x_new, na, ws->logits));
            for (int64_t a = 0; a < na; a++) {
                const int64_t i = ws->act[a];
                const float m = margin_of(ws->logits + a * K, K, ws->ys[i]);
                const int improved = m < ws->loss_min[i];
                if (improved)
                    ws->loss_min[i] = m;
                if (improved || m <= 0.0f) {
                    ws->margin_min[i] = m;
                    memcpy(ws->x_best + i * D, ws->x_new + a * D, (size_t)D * sizeof(float));
                }
            }
        }

        int all_done = 1;
        for (int64_t i = 0; i < ns; i++)
            all_done &= ws->margin_min[i] <= 0.0f;
        if (all_done)
            break;
    }
    return ELLE_OK;
}

int elle__square_perturb_traced(elle__aa_model *am, const elle__aa_params *p, const float *x,
                                const int32_t *y, int64_t n, float *x_adv,
                                elle__square_trace *trace)
{
    ELLE_CHECK_ARG(am != NULL && p != NULL && x != NULL && y != NULL && x_adv != NULL);
    if (n < 1 || n > am->max_batch)
        ELLE_FAIL(ELLE_ESHAPE, "square: chunk of %lld outside [1, %lld]", (long long)n,
                  (long long)am->max_batch);
    if (p->n_queries < 0 || !(p->p_init > 0.0f) || !(p->eps >= 0.0f))
        ELLE_FAIL(ELLE_EINVAL, "square: n_queries = %d, p_init = %g, eps = %g", p->n_queries,
                  (double)p->p_init, (double)p->eps);
    const int64_t D = am->numel, K = am->classes;
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= K)
            ELLE_FAIL(ELLE_EINVAL, "square: label[%lld] = %d outside [0, %lld)", (long long)i,
                      (int)y[i], (long long)K);
    int64_t C, H, W;
    ELLE_TRY(elle_model_input_shape(am->model, &C, &H, &W));

    sq_ws ws = {0};
    int rc = ELLE_OK;
    const size_t nd = (size_t)n * (size_t)D * sizeof(float);
    ws.xs = malloc(nd);
    ws.x_best = malloc(nd);
    ws.x_new = malloc(nd);
    ws.logits = malloc((size_t)n * (size_t)K * sizeof(float));
    ws.margin_min = malloc((size_t)n * sizeof(float));
    ws.loss_min = malloc((size_t)n * sizeof(float));
    ws.u = malloc((size_t)(n * C * W) * sizeof(float));
    ws.sgn = malloc((size_t)C * sizeof(float));
    ws.ys = malloc((size_t)n * sizeof(int32_t));
    ws.idx = malloc((size_t)n * sizeof(int64_t));
    ws.act = malloc((size_t)n * sizeof(int64_t));
    if (!ws.xs || !ws.x_best || !ws.x_new || !ws.logits || !ws.margin_min || !ws.loss_min ||
        !ws.u || !ws.sgn || !ws.ys || !ws.idx || !ws.act) {
        rc = elle__error_set(ELLE_ENOMEM, "square: out of memory for a chunk of %lld x %lld",
                             (long long)n, (long long)D);
        goto cleanup;
    }
    elle__mt19937 g_local;
    elle__mt19937 *g = trace ? &trace->g : &g_local;
    if (trace) {
        trace->iterations = 0;
        trace->early_return = 0;
        if (trace->x_best)
            memcpy(trace->x_best, x, nd);
        if (trace->margin)
            for (int64_t i = 0; i < n; i++)
                trace->margin[i] = NAN;
    }

    memcpy(x_adv, x, nd);
    ELLE_TRY_GOTO(rc, elle__aa_forward(am, x, n, ws.logits));
    int64_t ns = 0;
    for (int64_t i = 0; i < n; i++) {
        if (elle__aa_argmax(ws.logits + i * K, K) != y[i])
            continue;
        ws.idx[ns] = i;
        ws.ys[ns] = y[i];
        memcpy(ws.xs + ns * D, x + i * D, (size_t)D * sizeof(float));
        ns++;
    }
    elle__mt19937_seed(g, p->seed);
    if (ns == 0)
        goto cleanup;
    ELLE_TRY_GOTO(rc, square_single_run(am, p, &ws, ns, C, H, W, g, trace));

    /* a fresh forward decides which points are returned */
    ELLE_TRY_GOTO(rc, elle__aa_forward(am, ws.x_best, ns, ws.logits));
    for (int64_t s = 0; s < ns; s++) {
        const int64_t i = ws.idx[s];
        if (trace && trace->x_best)
            memcpy(trace->x_best + i * D, ws.x_best + s * D, (size_t)D * sizeof(float));
        if (trace && trace->margin)
            trace->margin[i] = ws.margin_min[s];
        if (elle__aa_argmax(ws.logits + s * K, K) != ws.ys[s])
            memcpy(x_adv + i * D, ws.x_best + s * D, (size_t)D * sizeof(float));
    }

cleanup:
    sq_ws_free(&ws);
    return rc;
}

int elle__square_perturb(elle__aa_model *am, const elle__aa_params *p, const float *x,
                         const int32_t *y, int64_t n, float *x_adv)
{
    return elle__square_perturb_traced(am, p, x, y, n, x_adv, NULL);
}
