/*
 * AutoAttack's driver, run_standard_evaluation (spec/autoattack.md §2.2):
 *
 *   1. clean pass in consecutive chunks of bs: robust[i] = (pred(x_i) == y_i);
 *   2. for each attack in order, the still-robust indices in increasing
 *      order, in consecutive chunks of bs (so the chunks change from attack
 *      to attack, as the reference's), each chunk perturbed with the seed
 *      p->seed (the reference's `adversary.seed = S`: the same S for every
 *      attack and chunk), then judged by a fresh forward on the returned
 *      points: every point with pred != y stops being robust and its
 *      adversarial point and prediction are kept;
 *   3. robust accuracy after each attack = robust points / all n points
 *      (clean mistakes count as non-robust).
 *
 * A point counts as broken only if it also lies in B(x) = eps-ball ∩
 * [0,1]^d: the components guarantee it, and a violation is reported as an
 * internal error rather than counted (a bug must not inflate the attack).
 * The reference's checks (randomness, output range, ...) only warn and are
 * not reproduced.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attacks/autoattack_internal.h"
#include "core/error.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *elle__aa_attack_name(elle__aa_attack a)
{
    switch (a) {
    case ELLE__AA_APGD_CE: return "apgd-ce";
    case ELLE__AA_APGD_T: return "apgd-t";
    case ELLE__AA_FAB_T: return "fab-t";
    case ELLE__AA_SQUARE: return "square";
    case ELLE__AA_APGD_DLR: return "apgd-dlr";
    }
    return NULL;
}

int elle__aa_perturb(elle__aa_model *am, const elle__aa_params *p, elle__aa_attack attack,
                     const float *x, const int32_t *y, int64_t n, float *x_adv)
{
    switch (attack) {
    case ELLE__AA_APGD_CE: return elle__apgd_perturb(am, p, ELLE__AA_LOSS_CE, x, y, n, x_adv);
    case ELLE__AA_APGD_DLR: return elle__apgd_perturb(am, p, ELLE__AA_LOSS_DLR, x, y, n, x_adv);
    case ELLE__AA_APGD_T:
        return elle__apgd_perturb(am, p, ELLE__AA_LOSS_DLR_TARGETED, x, y, n, x_adv);
    case ELLE__AA_FAB_T: return elle__fab_t_perturb(am, p, x, y, n, x_adv);
    case ELLE__AA_SQUARE: return elle__square_perturb(am, p, x, y, n, x_adv);
    }
    ELLE_FAIL(ELLE_EINVAL, "autoattack: unknown attack %d", (int)attack);
}

/* adv inside B(x) in float32: within [x - eps, x + eps] as the projections
 * compute it, or |adv - x| <= eps as FAB's acceptance test does (the two
 * differ by at most one rounding), and inside [0, 1]. Returns the first
 * offending coordinate, or -1. */
static int64_t outside_ball(const float *adv, const float *x, int64_t numel, float eps)
{
    for (int64_t j = 0; j < numel; j++) {
        const float v = adv[j], c = x[j];
        if (!(v >= 0.0f && v <= 1.0f))
            return j;
        if (!(v >= c - eps && v <= c + eps) && !(fabsf(v - c) <= eps))
            return j;
    }
    return -1;
}

int elle__autoattack_run(elle__aa_model *am, const elle__aa_params *p,
                         const elle__aa_attack *attacks, int n_attacks, const float *x,
                         const int32_t *y, int64_t n, int64_t bs, unsigned char *robust,
                         float *x_adv, int32_t *y_adv, elle__aa_report *report)
{
    const int64_t numel = am->numel, classes = am->classes;
    if (n < 0)
        ELLE_FAIL(ELLE_EINVAL, "autoattack: n = %lld, need >= 0", (long long)n);
    if (bs < 1 || bs > am->max_batch)
        ELLE_FAIL(ELLE_ESHAPE, "autoattack: bs = %lld outside [1, %lld] (the model's reserved "
                               "batch)",
                  (long long)bs, (long long)am->max_batch);
    if (n_attacks < 0 || n_attacks > ELLE__AA_MAX_STAGES)
        ELLE_FAIL(ELLE_EINVAL, "autoattack: %d attacks, at most %d", n_attacks,
                  ELLE__AA_MAX_STAGES);
    if (!(p->eps >= 0.0f && p->eps <= 1.0f))
        ELLE_FAIL(ELLE_EINVAL, "autoattack: eps = %g outside [0, 1]", (double)p->eps);
    for (int s = 0; s < n_attacks; s++)
        if (!elle__aa_attack_name(attacks[s]))
            ELLE_FAIL(ELLE_EINVAL, "autoattack: unknown attack %d", (int)attacks[s]);

    elle__aa_report rep;
    memset(&rep, 0, sizeof rep);
    rep.total = n;
    rep.n_stages = n_attacks;
    int rc = ELLE_OK;
    const int64_t chunk = bs < n ? bs : (n > 0 ? n : 1);
    const size_t img = (size_t)(chunk * numel) * sizeof(float);
    unsigned char *flags = robust ? robust : malloc((size_t)(n > 0 ? n : 1));
    int64_t *sel = malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    float *logits = malloc((size_t)(chunk * classes) * sizeof(float));
    float *xs = malloc(img), *adv = malloc(img);
    int32_t *ys = malloc((size_t)chunk * sizeof(int32_t));
    if (!flags || !sel || !logits || !xs || !adv || !ys) {
        rc = elle__error_set(ELLE_ENOMEM, "autoattack: out of memory for %lld points",
                             (long long)n);
        goto cleanup;
    }

    /* clean accuracy, in consecutive chunks */
    double t0 = now_s();
    for (int64_t start = 0; start < n; start += bs) {
        const int64_t nb = n - start < bs ? n - start : bs;
        ELLE_TRY_GOTO(rc, elle__aa_forward(am, x + start * numel, nb, logits));
        for (int64_t i = 0; i < nb; i++) {
            const int32_t pred = elle__aa_argmax(logits + i * classes, classes);
            flags[start + i] = pred == y[start + i];
            if (y_adv)
                y_adv[start + i] = pred;
            rep.clean += flags[start + i];
        }
    }
    rep.clean_seconds = now_s() - t0;
    if (x_adv && n > 0)
        memcpy(x_adv, x, (size_t)(n * numel) * sizeof(float));

    int64_t n_robust = rep.clean;
    for (int s = 0; s < n_attacks; s++) {
        elle__aa_stage *st = &rep.stages[s];
        st->attack = attacks[s];
        st->robust = n_robust;
        if (n_robust == 0)
            continue; /* the reference stops attacking: nothing is left */
        st->ran = 1;
        t0 = now_s();
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (flags[i])
                sel[m++] = i;
        for (int64_t c0 = 0; c0 < m; c0 += bs) {
            const int64_t nb = m - c0 < bs ? m - c0 : bs;
            const int64_t *idx = sel + c0;
            for (int64_t j = 0; j < nb; j++) {
                memcpy(xs + j * numel, x + idx[j] * numel, (size_t)numel * sizeof(float));
                ys[j] = y[idx[j]];
            }
            ELLE_TRY_GOTO(rc, elle__aa_perturb(am, p, attacks[s], xs, ys, nb, adv));
            /* success is judged by a fresh forward on the returned batch */
            ELLE_TRY_GOTO(rc, elle__aa_forward(am, adv, nb, logits));
            for (int64_t j = 0; j < nb; j++) {
                const int32_t pred = elle__aa_argmax(logits + j * classes, classes);
                if (pred == ys[j])
                    continue;
                const int64_t bad = outside_ball(adv + j * numel, xs + j * numel, numel, p->eps);
                if (bad >= 0) {
                    rc = elle__error_set(
                        ELLE_ERROR,
                        "autoattack: internal error: %s returned sample %lld with coordinate "
                        "%lld = %.9g outside the eps-ball (x = %.9g, eps = %.9g) or [0, 1]",
                        elle__aa_attack_name(attacks[s]), (long long)idx[j], (long long)bad,
                        (double)adv[j * numel + bad], (double)xs[j * numel + bad],
                        (double)p->eps);
                    goto cleanup;
                }
                flags[idx[j]] = 0;
                n_robust--;
                if (x_adv)
                    memcpy(x_adv + idx[j] * numel, adv + j * numel,
                           (size_t)numel * sizeof(float));
                if (y_adv)
                    y_adv[idx[j]] = pred;
            }
        }
        st->robust = n_robust;
        st->seconds = now_s() - t0;
    }
    if (report)
        *report = rep;

cleanup:
    if (flags != robust)
        free(flags);
    free(sel);
    free(logits);
    free(xs);
    free(adv);
    free(ys);
    return rc;
}
