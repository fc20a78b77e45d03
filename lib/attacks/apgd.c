/*
 * APGD in the L-inf ball (Croce & Hein 2020; spec/autoattack.md §3): APGD-CE,
 * untargeted APGD-DLR and APGD-T (targeted DLR over the clean logits'
 * runner-up classes), as the AutoAttack reference code runs them.
 *
 * One run (elle__apgd_run) on m points:
 *   x0   = clip_[0,1](x + eps * tau / (max|tau| + 1e-12)), tau = 2u - 1 per sample
 *   z    = P(x_i + eta * sign(g_i))
 *   x_i+1 = P(x_i + a (z - x_i) + (1 - a)(x_i - x_i-1)),  a = 1 at i = 0, else 0.75
 * with P the projection onto B(x) = eps-ball ∩ [0,1]^d, per-sample step eta
 * (2 eps, halved at a checkpoint when the loss oscillated or stalled; the
 * point then restarts from its best iterate), the best-loss iterate kept
 * (strict >) and every misclassifying iterate remembered (the latest one is
 * returned). No early stop: every point of the run takes all n_iter steps.
 *
 * The reference's arithmetic is float32 tensors against Python doubles: the
 * constants of the schedule are truncated from double, eps meets the images
 * as a float, and the step is written in the reference's operation order so
 * that the same gradient signs give the same iterates bit for bit. The
 * losses' gradients with respect to the logits are written out here (CE,
 * DLR, targeted DLR) and pulled back through the model by one
 * vector-Jacobian product per forward.
 *
 * Random numbers: the caller seeds one MT19937 per perturb (the reference's
 * torch.manual_seed(seed)); each run draws one block of m*numel uniforms, in
 * C order, for its random start, so with the same seed and subsets the
 * starts equal the reference's.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attacks/autoattack_internal.h"
#include "core/error.h"

/* ---- schedule ------------------------------------------------------------------- */

void elle__apgd_schedule_init(elle__apgd_schedule *s, int n_iter)
{
    /* int() of a double product, as the reference's __init__ */
    int n_iter_2 = (int)(0.22 * (double)n_iter);
    int size_decr = (int)(0.03 * (double)n_iter);
    int n_iter_min = (int)(0.06 * (double)n_iter);
    s->k = n_iter_2 > 1 ? n_iter_2 : 1;
    s->size_decr = size_decr > 1 ? size_decr : 1;
    s->n_iter_min = n_iter_min > 1 ? n_iter_min : 1;
    s->counter = 0;
}

int elle__apgd_schedule_step(elle__apgd_schedule *s)
{
    if (++s->counter != s->k)
        return 0;
    const int k = s->k;
    s->k = k - s->size_decr > s->n_iter_min ? k - s->size_decr : s->n_iter_min;
    s->counter = 0;
    return k;
}

/* ---- losses --------------------------------------------------------------------- */

/* Indices of the r largest logits, largest first. Ties are ordered as an
 * ascending stable sort read from its end (the later class first); only
 * gradient routing among equal values depends on it (spec §6). */
static void top_ranks(const float *z, int64_t classes, int r, int64_t *idx)
{
    int count = 0;
    for (int64_t k = 0; k < classes; k++) {
        if (count == r && !(z[k] >= z[idx[r - 1]]))
            continue;
        int pos = 0;
        while (pos < count && !(z[k] >= z[idx[pos]]))
            pos++;
        int last = count < r ? count : r - 1;
        for (int j = last; j > pos; j--)
            idx[j] = idx[j - 1];
        idx[pos] = k;
        if (count < r)
            count++;
    }
}

float elle__aa_loss_grad(elle__aa_loss loss, const float *z, int64_t classes, int32_t y,
                         int32_t t, float *dz)
{
    if (loss == ELLE__AA_LOSS_CE) {
        /* logsumexp(z) - z_y; gradient softmax(z) - e_y */
        double mx = z[0];
        for (int64_t k = 1; k < classes; k++)
            mx = fmax(mx, z[k]);
        double s = 0;
        for (int64_t k = 0; k < classes; k++)
            s += exp((double)z[k] - mx);
        for (int64_t k = 0; k < classes; k++)
            dz[k] = (float)(exp((double)z[k] - mx) / s);
        dz[y] -= 1.0f;
        return (float)(mx + log(s) - (double)z[y]);
    }
    int64_t top[4];
    const float eps12 = 1e-12f;
    for (int64_t k = 0; k < classes; k++)
        dz[k] = 0.0f;
    if (loss == ELLE__AA_LOSS_DLR) {
        /* -(z_y - z_m) / (z_pi1 - z_pi3 + 1e-12), m the best class other than y */
        top_ranks(z, classes, 3, top);
        const float ind = top[0] == y ? 1.0f : 0.0f;
        const int64_t m = top[0] == y ? top[1] : top[0];
        const float num = z[y] - z[top[1]] * ind - z[top[0]] * (1.0f - ind);
        const float den = z[top[0]] - z[top[2]] + eps12;
        const double d = den, nd2 = (double)num / (d * d);
        dz[y] += (float)(-1.0 / d);
        dz[m] += (float)(1.0 / d);
        dz[top[0]] += (float)nd2;
        dz[top[2]] -= (float)nd2;
        return -num / den;
    }
    /* targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12) */
    top_ranks(z, classes, 4, top);
    const float num = z[y] - z[t];
    const float den = z[top[0]] - 0.5f * (z[top[2]] + z[top[3]]) + eps12;
    const double d = den, nd2 = (double)num / (d * d);
    dz[y] += (float)(-1.0 / d);
    dz[t] += (float)(1.0 / d);
    dz[top[0]] += (float)nd2;
    dz[top[2]] -= (float)(0.5 * nd2);
    dz[top[3]] -= (float)(0.5 * nd2);
    return -num / den;
}

/* ---- one run -------------------------------------------------------------------- */

void elle__apgd_random_start(elle__mt19937 *g, const float *x, int64_t m, int64_t numel,
                             float eps, float *u, float *x0)
{
    elle__mt19937_fill(g, u, m * numel); /* one torch.rand over the whole subset */
    for (int64_t i = 0; i < m; i++) {
        float *t = u + i * numel;
        float tmax = 0.0f;
        for (int64_t j = 0; j < numel; j++) {
            t[j] = 2.0f * t[j] - 1.0f; /* exact */
            tmax = fmaxf(tmax, fabsf(t[j]));
        }
        const float den = tmax + 1e-12f;
        const float *xi = x + i * numel;
        float *o = x0 + i * numel;
        for (int64_t j = 0; j < numel; j++) {
            float v = xi[j] + eps * (t[j] / den);
            o[j] = fminf(fmaxf(v, 0.0f), 1.0f);
        }
    }
}

static inline float signf(float g)
{
    return (float)((g > 0.0f) - (g < 0.0f));
}

/* P(v): into [x - eps, x + eps] (max first, as torch.max then torch.min),
 * then into [0, 1]. */
static inline float project(float v, float xc, float eps)
{
    v = fmaxf(v, xc - eps);
    v = fminf(v, xc + eps);
    return fminf(fmaxf(v, 0.0f), 1.0f);
}

typedef struct run_ws {
    float *cur, *prev, *grad, *grad_best, *gtmp, *adv_fallback;
    float *logits, *dlogits, *loss, *hist, *loss_best_last, *eta, *lb_fallback;
    unsigned char *reduced_last, *acc_fallback;
} run_ws;

/* Forward+backward at cur over eot_iter draws: loss (per sample), logits
 * (the last draw's) and grad (the mean of the input gradients). */
static int loss_and_input_grad(elle__aa_model *am, const elle__aa_params *p, elle__aa_loss loss,
                               const int32_t *y, const int32_t *target, int64_t m, run_ws *w)
{
    const int64_t numel = am->numel, classes = am->classes, count = m * numel;
    const int eot = p->eot_iter > 1 ? p->eot_iter : 1;
    for (int e = 0; e < eot; e++) {
        ELLE_TRY(elle__aa_forward(am, w->cur, m, w->logits));
        for (int64_t i = 0; i < m; i++)
            w->loss[i] = elle__aa_loss_grad(loss, w->logits + i * classes, classes, y[i],
                                            target ? target[i] : 0, w->dlogits + i * classes);
        /* the per-sample losses are summed: one VJP gives every sample's gradient */
        ELLE_TRY(elle__aa_vjp(am, m, w->dlogits, e == 0 ? w->grad : w->gtmp));
        if (e > 0)
            for (int64_t j = 0; j < count; j++)
                w->grad[j] += w->gtmp[j];
    }
    if (eot > 1) {
        const float div = (float)eot;
        for (int64_t j = 0; j < count; j++)
            w->grad[j] /= div;
    }
    return ELLE_OK;
}

int elle__apgd_run(elle__aa_model *am, const elle__aa_params *p, elle__aa_loss loss,
                   elle__mt19937 *g, const float *x, const int32_t *y, const int32_t *target,
                   int64_t m, float *x_best, float *loss_best, unsigned char *acc,
                   float *x_best_adv)
{
    const int64_t numel = am->numel, classes = am->classes, count = m * numel;
    const int n_iter = p->n_iter;
    const float eps = p->eps;
    if (m < 1 || m > am->max_batch)
        ELLE_FAIL(ELLE_ESHAPE, "apgd: %lld points outside [1, %lld]", (long long)m,
                  (long long)am->max_batch);
    if (n_iter < 1)
        ELLE_FAIL(ELLE_EINVAL, "apgd: n_iter = %d, need >= 1", n_iter);
    if (loss == ELLE__AA_LOSS_DLR_TARGETED && !target)
        ELLE_FAIL(ELLE_EINVAL, "apgd: targeted DLR without targets");

    int rc = ELLE_OK;
    const size_t img = (size_t)count * sizeof(float);
    run_ws w = {0};
    w.cur = malloc(img);
    w.prev = malloc(img);
    w.grad = malloc(img);
    w.grad_best = malloc(img);
    w.gtmp = p->eot_iter > 1 ? malloc(img) : NULL;
    w.adv_fallback = x_best_adv ? NULL : malloc(img);
    w.logits = malloc((size_t)(m * classes) * sizeof(float));
    w.dlogits = malloc((size_t)(m * classes) * sizeof(float));
    w.loss = malloc((size_t)m * sizeof(float));
    w.hist = calloc((size_t)n_iter * (size_t)m, sizeof(float)); /* zeros: the first-check quirk */
    w.loss_best_last = malloc((size_t)m * sizeof(float));
    w.eta = malloc((size_t)m * sizeof(float));
    w.lb_fallback = loss_best ? NULL : malloc((size_t)m * sizeof(float));
    w.reduced_last = malloc((size_t)m);
    w.acc_fallback = acc ? NULL : malloc((size_t)m);
    if (!w.cur || !w.prev || !w.grad || !w.grad_best || (p->eot_iter > 1 && !w.gtmp) ||
        (!x_best_adv && !w.adv_fallback) || !w.logits || !w.dlogits || !w.loss || !w.hist ||
        !w.loss_best_last || !w.eta || (!loss_best && !w.lb_fallback) || !w.reduced_last ||
        (!acc && !w.acc_fallback)) {
        rc = elle__error_set(ELLE_ENOMEM, "apgd: out of memory for a run of %lld points",
                             (long long)m);
        goto cleanup;
    }
    float *best_adv = x_best_adv ? x_best_adv : w.adv_fallback;
    float *lbest = loss_best ? loss_best : w.lb_fallback;
    unsigned char *ok = acc ? acc : w.acc_fallback;

    /* start: the random point, its loss, gradient and class */
    elle__apgd_random_start(g, x, m, numel, eps, w.grad, w.cur);
    ELLE_TRY_GOTO(rc, loss_and_input_grad(am, p, loss, y, target, m, &w));
    memcpy(w.prev, w.cur, img);
    memcpy(x_best, w.cur, img);
    memcpy(best_adv, w.cur, img);
    memcpy(w.grad_best, w.grad, img);
    const float eta0 = (float)(2.0 * (double)eps);
    for (int64_t i = 0; i < m; i++) {
        ok[i] = elle__aa_argmax(w.logits + i * classes, classes) == y[i];
        lbest[i] = w.loss[i];
        w.loss_best_last[i] = w.loss[i];
        w.reduced_last[i] = 1;
        w.eta[i] = eta0;
    }

    elle__apgd_schedule sched;
    elle__apgd_schedule_init(&sched, n_iter);
    for (int it = 0; it < n_iter; it++) {
        /* the step: sign ascent, then momentum, each projected onto B(x) */
        const float a = it > 0 ? 0.75f : 1.0f, b = 1.0f - a;
        for (int64_t i = 0; i < m; i++) {
            const float eta = w.eta[i];
            const int64_t o = i * numel;
            for (int64_t j = o; j < o + numel; j++) {
                const float xc = x[j], c = w.cur[j];
                const float mom = c - w.prev[j];
                const float z = project(c + eta * signf(w.grad[j]), xc, eps);
                w.prev[j] = c;
                w.cur[j] = project((c + (z - c) * a) + mom * b, xc, eps);
            }
        }
        ELLE_TRY_GOTO(rc, loss_and_input_grad(am, p, loss, y, target, m, &w));

        float *h = w.hist + (size_t)it * (size_t)m;
        for (int64_t i = 0; i < m; i++) {
            const int64_t o = i * numel;
            if (elle__aa_argmax(w.logits + i * classes, classes) != y[i]) {
                ok[i] = 0; /* any misclassifying iterate is adversarial: keep the latest */
                memcpy(best_adv + o, w.cur + o, (size_t)numel * sizeof(float));
            }
            h[i] = w.loss[i];
            if (w.loss[i] > lbest[i]) {
                memcpy(x_best + o, w.cur + o, (size_t)numel * sizeof(float));
                memcpy(w.grad_best + o, w.grad + o, (size_t)numel * sizeof(float));
                lbest[i] = w.loss[i];
            }
        }

        const int k = elle__apgd_schedule_step(&sched);
        if (!k)
            continue;
        /* checkpoint: halve the step where the loss oscillated (cond1) or
         * stalled since a check that did not halve (cond2) */
        const float thr = (float)((double)k * (double)p->rho);
        for (int64_t i = 0; i < m; i++) {
            int inc = 0;
            for (int c = 0; c < k; c++) {
                /* at the first check it-c-1 reaches -1: Python's index wraps
                 * to the history's last row, still zero */
                const int cur_row = it - c, prev_row = (it - c - 1 + n_iter) % n_iter;
                inc += w.hist[(size_t)cur_row * (size_t)m + (size_t)i] >
                       w.hist[(size_t)prev_row * (size_t)m + (size_t)i];
            }
            const int cond1 = (float)inc <= thr;
            const int cond2 = !w.reduced_last[i] && w.loss_best_last[i] >= lbest[i];
            const int reduce = cond1 || cond2;
            w.reduced_last[i] = (unsigned char)reduce;
            w.loss_best_last[i] = lbest[i];
            if (reduce) {
                const int64_t o = i * numel;
                w.eta[i] /= 2.0f;
                /* restart from the best point; the previous iterate stays */
                memcpy(w.cur + o, x_best + o, (size_t)numel * sizeof(float));
                memcpy(w.grad + o, w.grad_best + o, (size_t)numel * sizeof(float));
            }
        }
    }

cleanup:
    free(w.cur);
    free(w.prev);
    free(w.grad);
    free(w.grad_best);
    free(w.gtmp);
    free(w.adv_fallback);
    free(w.logits);
    free(w.dlogits);
    free(w.loss);
    free(w.hist);
    free(w.loss_best_last);
    free(w.eta);
    free(w.lb_fallback);
    free(w.reduced_last);
    free(w.acc_fallback);
    return rc;
}

/* ---- perturb -------------------------------------------------------------------- */

int elle__apgd_perturb(elle__aa_model *am, const elle__aa_params *p, elle__aa_loss loss,
                       const float *x, const int32_t *y, int64_t n, float *x_adv)
{
    const int64_t numel = am->numel, classes = am->classes;
    const int targeted = loss == ELLE__AA_LOSS_DLR_TARGETED;
    if (loss == ELLE__AA_LOSS_DLR && classes < 3)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "apgd-dlr: the DLR loss needs >= 3 classes, the model has "
                                     "%lld", (long long)classes);
    if (targeted && classes < 4)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "apgd-t: the targeted DLR loss needs >= 4 classes, the "
                                     "model has %lld", (long long)classes);
    if (n < 1 || n > am->max_batch)
        ELLE_FAIL(ELLE_ESHAPE, "apgd: batch of %lld outside [1, %lld]", (long long)n,
                  (long long)am->max_batch);

    int rc = ELLE_OK;
    const size_t img = (size_t)(n * numel) * sizeof(float);
    float *logits = malloc((size_t)(n * classes) * sizeof(float));
    unsigned char *acc = malloc((size_t)n), *acc_run = malloc((size_t)n);
    int64_t *sel = malloc((size_t)n * sizeof(int64_t));
    int64_t *top = malloc((size_t)(classes > 0 ? classes : 1) * sizeof(int64_t));
    int32_t *ys = malloc((size_t)n * sizeof(int32_t)), *ts = malloc((size_t)n * sizeof(int32_t));
    float *xs = malloc(img), *best = malloc(img), *best_adv = malloc(img);
    if (!logits || !acc || !acc_run || !sel || !top || !ys || !ts || !xs || !best || !best_adv) {
        rc = elle__error_set(ELLE_ENOMEM, "apgd: out of memory for a batch of %lld",
                             (long long)n);
        goto cleanup;
    }

    /* only the points classified correctly at x are attacked */
    ELLE_TRY_GOTO(rc, elle__aa_forward(am, x, n, logits));
    for (int64_t i = 0; i < n; i++)
        acc[i] = elle__aa_argmax(logits + i * classes, classes) == y[i];
    memcpy(x_adv, x, img);

    elle__mt19937 g;
    elle__mt19937_seed(&g, p->seed); /* once per perturb, before any target */
    /* APGD-T: targets of ranks 2 .. n_target_classes + 1 (at most the
     * number of classes); the others: one pass */
    int last_rank = 2;
    if (targeted)
        last_rank = p->n_target_classes + 1 < classes ? p->n_target_classes + 1 : (int)classes;
    for (int rank = 2; rank <= last_rank; rank++) {
        for (int r = 0; r < p->n_restarts; r++) {
            int64_t m = 0;
            for (int64_t i = 0; i < n; i++)
                if (acc[i])
                    sel[m++] = i;
            if (m == 0)
                goto done;
            for (int64_t j = 0; j < m; j++) {
                memcpy(xs + j * numel, x + sel[j] * numel, (size_t)numel * sizeof(float));
                ys[j] = y[sel[j]];
            }
            if (targeted) {
                /* the target: the rank-th largest clean logit of the subset */
                ELLE_TRY_GOTO(rc, elle__aa_forward(am, xs, m, logits));
                for (int64_t j = 0; j < m; j++) {
                    top_ranks(logits + j * classes, classes, rank, top);
                    ts[j] = (int32_t)top[rank - 1];
                }
            }
            ELLE_TRY_GOTO(rc, elle__apgd_run(am, p, loss, &g, xs, ys, targeted ? ts : NULL, m,
                                             best, NULL, acc_run, best_adv));
            for (int64_t j = 0; j < m; j++) {
                if (acc_run[j])
                    continue;
                acc[sel[j]] = 0;
                memcpy(x_adv + sel[j] * numel, best_adv + j * numel,
                       (size_t)numel * sizeof(float));
            }
        }
    }
done:
cleanup:
    free(logits);
    free(acc);
    free(acc_run);
    free(sel);
    free(top);
    free(ys);
    free(ts);
    free(xs);
    free(best);
    free(best_adv);
    return rc;
}
