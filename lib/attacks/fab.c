/*
 * FAB-T, L-inf (spec/autoattack.md §4.1-4.2): the targeted Fast Adaptive
 * Boundary attack of the standard AutoAttack, no random start.
 *
 * For target ranks r = 2 .. n_target_classes+1 (capped at the number of
 * classes), on the points not yet fooled, with t the class of the r-th
 * largest clean logit, 100 iterations of
 *   f = z_t - z_y at x1, w = grad_x f           (one forward, one vjp)
 *   hyperplane <w, v> = b, b = <w, x1> - f       (the linearisation of f = 0)
 *   d1 = proj(x1), d2 = proj(x0)                 (fab_projection.c)
 *   alpha = min(max(a1 / (a1 + a2), 0), alpha_max), a = max(||d||_inf, 1e-8)
 *   x1 = clip01((1 - alpha)(x1 + eta d1) + alpha (x0 + eta d2))
 *   one forward: where pred(x1) != y, keep x1 if ||x1 - x0||_inf < res
 *   (strict) and step back x1 = x0 + beta (x1 - x0).
 * A point is fooled by a target iff a fresh forward of the returned point
 * misclassifies it and NOT(||x_adv - x||_inf > eps): FAB minimises the
 * norm and never projects onto the ball, so a success beyond eps is no
 * success.
 *
 * Two forwards the reference repeats are taken from earlier ones, since
 * in eval mode a sample's logits do not depend on its batch: the clean
 * logits of the not-yet-fooled subset (its prediction and the target
 * ranks) come from one clean forward of the chunk, and when no point was
 * adversarial in an iteration the classification forward at x1 is the
 * next iteration's forward (x1 did not move).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attacks/autoattack_internal.h"
#include "core/error.h"

typedef struct fab_ws {
    int64_t n, numel, classes;
    float *clean;    /* (n, K) clean logits of the chunk */
    float *logits;   /* (n, K) */
    float *dlogits;  /* (n, K) */
    float *x0, *x1, *adv, *grad; /* (n, numel) each, the subset's rows */
    float *d1, *d2;  /* (numel) */
    float *res;      /* (n) */
    int64_t *idx;    /* (n) chunk index of each subset row */
    int32_t *y2, *t2; /* (n) labels and targets of the subset */
    unsigned char *acc; /* (n) not yet fooled */
    void *scratch;   /* projection */
} fab_ws;

static void fab_ws_free(fab_ws *ws)
{
    free(ws->clean);
    free(ws->logits);
    free(ws->dlogits);
    free(ws->x0);
    free(ws->x1);
    free(ws->adv);
    free(ws->grad);
    free(ws->d1);
    free(ws->d2);
    free(ws->res);
    free(ws->idx);
    free(ws->y2);
    free(ws->t2);
    free(ws->acc);
    free(ws->scratch);
}

static int fab_ws_alloc(fab_ws *ws, int64_t n, int64_t numel, int64_t classes)
{
    memset(ws, 0, sizeof *ws);
    ws->n = n;
    ws->numel = numel;
    ws->classes = classes;
    const size_t nk = (size_t)n * (size_t)classes * sizeof(float);
    const size_t nd = (size_t)n * (size_t)numel * sizeof(float);
    ws->clean = malloc(nk);
    ws->logits = malloc(nk);
    ws->dlogits = malloc(nk);
    ws->x0 = malloc(nd);
    ws->x1 = malloc(nd);
    ws->adv = malloc(nd);
    ws->grad = malloc(nd);
    ws->d1 = malloc((size_t)numel * sizeof(float));
    ws->d2 = malloc((size_t)numel * sizeof(float));
    ws->res = malloc((size_t)n * sizeof(float));
    ws->idx = malloc((size_t)n * sizeof(int64_t));
    ws->y2 = malloc((size_t)n * sizeof(int32_t));
    ws->t2 = malloc((size_t)n * sizeof(int32_t));
    ws->acc = malloc((size_t)n);
    ws->scratch = malloc(elle__fab_projection_scratch_bytes(numel));
    if (!ws->clean || !ws->logits || !ws->dlogits || !ws->x0 || !ws->x1 || !ws->adv ||
        !ws->grad || !ws->d1 || !ws->d2 || !ws->res || !ws->idx || !ws->y2 || !ws->t2 ||
        !ws->acc || !ws->scratch) {
        fab_ws_free(ws);
        ELLE_FAIL(ELLE_ENOMEM, "fab-t: out of memory for a chunk of %lld x %lld", (long long)n,
                  (long long)numel);
    }
    return ELLE_OK;
}

typedef struct rank_entry {
    float v;
    int32_t k;
} rank_entry;

static int cmp_rank(const void *pa, const void *pb)
{
    const rank_entry *a = pa, *b = pb;
    if (a->v != b->v)
        return a->v < b->v ? -1 : 1;
    return a->k < b->k ? -1 : (a->k > b->k);
}

/* The class of the r-th largest logit: position K - r of the ascending sort
 * (the reference's sort(...)[1][:, -r]; ties broken by index, the reference's
 * sort being unstable). buf holds K entries. */
static int32_t rank_class(const float *z, int64_t classes, int r, rank_entry *buf)
{
    for (int64_t k = 0; k < classes; k++) {
        buf[k].v = z[k];
        buf[k].k = (int32_t)k;
    }
    qsort(buf, (size_t)classes, sizeof *buf, cmp_rank);
    return buf[classes - r].k;
}

static float linf_dist(const float *a, const float *b, int64_t numel)
{
    float m = 0.0f;
    for (int64_t j = 0; j < numel; j++) {
        const float v = fabsf(a[j] - b[j]);
        if (v > m)
            m = v;
    }
    return m;
}

/* attack_single_run on the ns subset rows of ws (x0, y2, t2 filled): leaves
 * in ws->adv row i the smallest-norm adversarial point found when res[i] <
 * 1e10, else x0. */
static int fab_single_run(elle__aa_model *am, const elle__aa_params *p, fab_ws *ws, int64_t ns)
{
    const int64_t D = ws->numel, K = ws->classes;
    const float eta = p->fab_eta, beta = p->fab_beta, alpha_max = p->fab_alpha_max;
    const float res_init = 1e10f;

    memcpy(ws->x1, ws->x0, (size_t)ns * (size_t)D * sizeof(float));
    memcpy(ws->adv, ws->x0, (size_t)ns * (size_t)D * sizeof(float));
    for (int64_t i = 0; i < ns; i++)
        ws->res[i] = res_init;

    int have_forward = 0; /* the model's last forward is at the current x1 */
    for (int it = 0; it < p->n_iter; it++) {
        if (!have_forward)
            ELLE_TRY(elle__aa_forward(am, ws->x1, ns, ws->logits));
        memset(ws->dlogits, 0, (size_t)ns * (size_t)K * sizeof(float));
        for (int64_t i = 0; i < ns; i++) {
            ws->dlogits[i * K + ws->t2[i]] += 1.0f;
            ws->dlogits[i * K + ws->y2[i]] -= 1.0f;
        }
        ELLE_TRY(elle__aa_vjp(am, ns, ws->dlogits, ws->grad));

        for (int64_t i = 0; i < ns; i++) {
            const float *z = ws->logits + i * K;
            const float f = z[ws->t2[i]] - z[ws->y2[i]];
            const float *w = ws->grad + i * D;
            float *x1 = ws->x1 + i * D;
            const float *x0 = ws->x0 + i * D;
            double acc = 0.0;
            for (int64_t j = 0; j < D; j++)
                acc += (double)(w[j] * x1[j]);
            const float b = -f + (float)acc;
            elle__fab_projection_linf(x1, w, b, D, ws->d1, ws->scratch);
            elle__fab_projection_linf(x0, w, b, D, ws->d2, ws->scratch);
            float a1 = 0.0f, a2 = 0.0f;
            for (int64_t j = 0; j < D; j++) {
                a1 = fmaxf(a1, fabsf(ws->d1[j]));
                a2 = fmaxf(a2, fabsf(ws->d2[j]));
            }
            a1 = fmaxf(a1, 1e-8f);
            a2 = fmaxf(a2, 1e-8f);
            const float alpha = fminf(fmaxf(a1 / (a1 + a2), 0.0f), alpha_max);
            const float one_m_alpha = 1.0f - alpha;
            for (int64_t j = 0; j < D; j++) {
                const float v = (x1[j] + eta * ws->d1[j]) * one_m_alpha +
                                (x0[j] + ws->d2[j] * eta) * alpha;
                x1[j] = fminf(fmaxf(v, 0.0f), 1.0f);
            }
        }

        ELLE_TRY(elle__aa_forward(am, ws->x1, ns, ws->logits));
        have_forward = 1;
        for (int64_t i = 0; i < ns; i++) {
            if (elle__aa_argmax(ws->logits + i * K, K) == ws->y2[i])
                continue;
            float *x1 = ws->x1 + i * D;
            const float *x0 = ws->x0 + i * D;
            const float dist = linf_dist(x1, x0, D);
            if (dist < ws->res[i]) {
                memcpy(ws->adv + i * D, x1, (size_t)D * sizeof(float));
                ws->res[i] = dist;
            }
            for (int64_t j = 0; j < D; j++)
                x1[j] = x0[j] + (x1[j] - x0[j]) * beta;
            have_forward = 0;
        }
    }
    for (int64_t i = 0; i < ns; i++)
        if (!(ws->res[i] < res_init))
            memcpy(ws->adv + i * D, ws->x0 + i * D, (size_t)D * sizeof(float));
    return ELLE_OK;
}

int elle__fab_t_perturb(elle__aa_model *am, const elle__aa_params *p, const float *x,
                        const int32_t *y, int64_t n, float *x_adv)
{
    ELLE_CHECK_ARG(am != NULL && p != NULL && x != NULL && y != NULL && x_adv != NULL);
    if (n < 1 || n > am->max_batch)
        ELLE_FAIL(ELLE_ESHAPE, "fab-t: chunk of %lld outside [1, %lld]", (long long)n,
                  (long long)am->max_batch);
    if (p->n_iter < 0 || p->n_target_classes < 0)
        ELLE_FAIL(ELLE_EINVAL, "fab-t: n_iter = %d, n_target_classes = %d", p->n_iter,
                  p->n_target_classes);
    const int64_t D = am->numel, K = am->classes;
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= K)
            ELLE_FAIL(ELLE_EINVAL, "fab-t: label[%lld] = %d outside [0, %lld)", (long long)i,
                      (int)y[i], (long long)K);

    fab_ws ws;
    ELLE_TRY(fab_ws_alloc(&ws, n, D, K));
    int rc = ELLE_OK;
    rank_entry *ranks = malloc((size_t)K * sizeof *ranks);
    if (!ranks) {
        rc = elle__error_set(ELLE_ENOMEM, "fab-t: out of memory");
        goto cleanup;
    }

    memcpy(x_adv, x, (size_t)n * (size_t)D * sizeof(float));
    ELLE_TRY_GOTO(rc, elle__aa_forward(am, x, n, ws.clean));
    for (int64_t i = 0; i < n; i++)
        ws.acc[i] = elle__aa_argmax(ws.clean + i * K, K) == y[i];

    int64_t last_rank = (int64_t)p->n_target_classes + 1;
    if (last_rank > K)
        last_rank = K; /* a model with fewer classes has fewer targets */
    for (int r = 2; r <= last_rank; r++) {
        int64_t ns = 0;
        for (int64_t i = 0; i < n; i++) {
            if (!ws.acc[i])
                continue;
            ws.idx[ns] = i;
            ws.y2[ns] = y[i];
            ws.t2[ns] = rank_class(ws.clean + i * K, K, r, ranks);
            memcpy(ws.x0 + ns * D, x + i * D, (size_t)D * sizeof(float));
            ns++;
        }
        if (ns == 0)
            break;
        ELLE_TRY_GOTO(rc, fab_single_run(am, p, &ws, ns));

        /* acceptance: a fresh forward, and the norm bound */
        ELLE_TRY_GOTO(rc, elle__aa_forward(am, ws.adv, ns, ws.logits));
        for (int64_t s = 0; s < ns; s++) {
            const float *a = ws.adv + s * D;
            const int still_right = elle__aa_argmax(ws.logits + s * K, K) == ws.y2[s];
            const float res = linf_dist(ws.x0 + s * D, a, D);
            if (still_right || res > p->eps)
                continue;
            const int64_t i = ws.idx[s];
            ws.acc[i] = 0;
            memcpy(x_adv + i * D, a, (size_t)D * sizeof(float));
        }
    }

cleanup:
    free(ranks);
    fab_ws_free(&ws);
    return rc;
}
