/*
 * Robust accuracy over a dataset: for each batch, the clean prediction and
 * the attack's verdict, counted over samples.
 *
 * A sample is robust when the model classifies it correctly at x and at
 * every point the attack checked (the final point of each restart; with
 * early_stop, every iterate). Counting clean mistakes as non-robust makes
 * robust <= clean by construction (as AutoAttack does); counting any
 * misclassifying restart makes R restarts never report more than one.
 *
 * Accuracies are correct / total over all evaluated samples. The reference
 * (ELLE's Trainer.eval) averages per-batch accuracies instead, so its last,
 * smaller batch weighs as much as a full one; docs/attacks.md has the
 * difference.
 *
 * The AutoAttack kinds run the reference's run_standard_evaluation instead
 * (autoattack.c): all n_max samples are loaded, and each attack runs on the
 * still-robust ones in chunks of `batch` across the whole set, as the
 * reference batches them (so the random streams match it for a seed).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attacks/attack_internal.h"
#include "core/error.h"
#include "nn/model_internal.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The AutoAttack kinds: the whole pipeline over the first `total` samples
 * (a->aa prepared and batch checked by the caller). */
static int aa_evaluate(elle_attack *a, const elle_dataset *d, int64_t total, int64_t batch,
                       int64_t *clean_out, int64_t *robust_out)
{
    const int64_t numel = a->aa.numel, classes = a->aa.classes;
    const int64_t cnt = total > 0 ? total : 1;
    int rc = ELLE_OK;
    float *x = malloc((size_t)(cnt * numel) * sizeof(float));
    int32_t *y = malloc((size_t)cnt * sizeof(int32_t));
    if (!x || !y) {
        rc = elle__error_set(ELLE_ENOMEM, "out of memory for %lld images", (long long)total);
        goto cleanup;
    }
    for (int64_t i = 0; i < total; i++) {
        ELLE_TRY_GOTO(rc, elle_dataset_get(d, i, x + i * numel, &y[i]));
        if (y[i] < 0 || y[i] >= classes) {
            rc = elle__error_set(ELLE_EINVAL, "sample %lld has label %d, the model has %lld "
                                              "classes",
                                 (long long)i, (int)y[i], (long long)classes);
            goto cleanup;
        }
        for (int64_t j = 0; j < numel; j++) {
            const float v = x[i * numel + j];
            if (!(v >= 0.0f && v <= 1.0f)) {
                rc = elle__error_set(ELLE_EINVAL, "sample %lld: pixel %lld = %g outside [0, 1]",
                                     (long long)i, (long long)j, (double)v);
                goto cleanup;
            }
        }
    }
    elle__aa_params p;
    elle__aa_attack attacks[ELLE__AA_MAX_STAGES];
    int n_attacks = 0;
    elle__aa_report rep;
    elle__attack_aa_config(a, &p, attacks, &n_attacks);
    ELLE_TRY_GOTO(rc, elle__autoattack_run(&a->aa, &p, attacks, n_attacks, x, y, total, batch,
                                           NULL, NULL, NULL, &rep));
    a->n_stages = rep.n_stages;
    for (int s = 0; s < rep.n_stages; s++) {
        a->stages[s].name = elle__aa_attack_name(rep.stages[s].attack);
        a->stages[s].robust = rep.stages[s].robust;
        a->stages[s].seconds = rep.stages[s].seconds;
    }
    if (clean_out)
        *clean_out = rep.clean;
    if (robust_out)
        *robust_out = rep.n_stages ? rep.stages[rep.n_stages - 1].robust : rep.clean;
cleanup:
    free(x);
    free(y);
    return rc;
}

int elle_attack_evaluate(elle_attack *a, const elle_dataset *d, int64_t n_max, int64_t batch,
                         int64_t *clean_correct_out, int64_t *robust_correct_out,
                         int64_t *total_out)
{
    static const char fn[] = "elle_attack_evaluate";
    if (!a || !d)
        ELLE_FAIL(ELLE_EINVAL, "%s: NULL argument (a %p, d %p)", fn, (const void *)a,
                  (const void *)d);
    if (n_max < 0)
        ELLE_FAIL(ELLE_EINVAL, "%s: n_max = %lld, need >= 0 (0 = the whole dataset)", fn,
                  (long long)n_max);
    if (batch < 1)
        ELLE_FAIL(ELLE_EINVAL, "%s: batch = %lld, need >= 1", fn, (long long)batch);
    int64_t mc, mh, mw, dc, dh, dw;
    ELLE_TRY(elle_model_input_shape(a->model, &mc, &mh, &mw));
    ELLE_TRY(elle_dataset_shape(d, &dc, &dh, &dw));
    if (mc != dc || mh != dh || mw != dw)
        ELLE_FAIL(ELLE_ESHAPE, "%s: dataset images are (%lld, %lld, %lld), the model takes "
                               "(%lld, %lld, %lld)",
                  fn, (long long)dc, (long long)dh, (long long)dw, (long long)mc, (long long)mh,
                  (long long)mw);
    const int64_t size = elle_dataset_size(d);
    const int64_t total = n_max == 0 || n_max > size ? size : n_max;
    if (elle__attack_is_aa(a->kind)) {
        int64_t clean = 0, robust = 0;
        ELLE_TRY(elle__attack_aa_prepare(a, 1, fn));
        if (batch > elle__model_max_batch(a->model))
            ELLE_FAIL(ELLE_ESHAPE, "%s: batch = %lld exceeds the model's reserved batch %lld",
                      fn, (long long)batch, (long long)elle__model_max_batch(a->model));
        int rc = aa_evaluate(a, d, total, batch, &clean, &robust);
        if (rc < 0) {
            elle__error_prefix("%s", fn);
            return rc;
        }
        if (clean_correct_out)
            *clean_correct_out = clean;
        if (robust_correct_out)
            *robust_correct_out = robust;
        if (total_out)
            *total_out = total;
        return ELLE_OK;
    }
    /* buffers (and ELLE_ESTATE before elle_model_reserve) first, then the batch */
    ELLE_TRY(elle__attack_prepare(a, 1, fn));
    if (batch > elle__model_max_batch(a->model))
        ELLE_FAIL(ELLE_ESHAPE, "%s: batch = %lld exceeds the model's reserved batch %lld", fn,
                  (long long)batch, (long long)elle__model_max_batch(a->model));

    elle__backend *be = elle__model_backend(a->model);
    const int64_t numel = a->numel;
    const int64_t bmax = total < batch ? total : batch;
    int rc = ELLE_OK;
    int64_t clean = 0, robust = 0;
    const double t0 = now_s();
    float *images = malloc((size_t)(bmax > 0 ? bmax : 1) * (size_t)numel * sizeof(float));
    int32_t *labels = malloc((size_t)(bmax > 0 ? bmax : 1) * sizeof(int32_t));
    unsigned char *clean_ok = malloc((size_t)(bmax > 0 ? bmax : 1));
    unsigned char *fooled = malloc((size_t)(bmax > 0 ? bmax : 1));
    if (!images || !labels || !clean_ok || !fooled) {
        rc = elle__error_set(ELLE_ENOMEM, "out of memory for a batch of %lld images",
                             (long long)bmax);
        goto cleanup;
    }

    for (int64_t start = 0; start < total; start += batch) {
        const int64_t n = total - start < batch ? total - start : batch;
        for (int64_t i = 0; i < n; i++) {
            ELLE_TRY_GOTO(rc, elle_dataset_get(d, start + i, images + i * numel, &labels[i]));
            if (labels[i] < 0 || labels[i] >= a->classes) {
                rc = elle__error_set(ELLE_EINVAL, "sample %lld has label %d, the model has %lld "
                                                  "classes",
                                     (long long)(start + i), (int)labels[i],
                                     (long long)a->classes);
                goto cleanup;
            }
        }
        ELLE_TRY_GOTO(rc, be->ops->copy_to_device(be, a->x0, images,
                                                  (size_t)(n * numel) * sizeof(float)));
        ELLE_TRY_GOTO(rc, be->ops->copy_to_device(be, a->labels, labels,
                                                  (size_t)n * sizeof(int32_t)));
        memcpy(a->h_labels, labels, (size_t)n * sizeof(int32_t));

        /* clean: one forward at x */
        ELLE_TRY_GOTO(rc, elle__attack_forward(a, a->labels, n, a->x0, 0));
        ELLE_TRY_GOTO(rc, elle__attack_misclassified(a, n, clean_ok));
        for (int64_t i = 0; i < n; i++)
            clean_ok[i] = !clean_ok[i];

        memset(fooled, 0, (size_t)n);
        ELLE_TRY_GOTO(rc, elle__attack_run(a, a->labels, n, a->adv, fooled));
        for (int64_t i = 0; i < n; i++) {
            clean += clean_ok[i];
            robust += clean_ok[i] && !fooled[i];
        }
    }
    if (clean_correct_out)
        *clean_correct_out = clean;
    if (robust_correct_out)
        *robust_correct_out = robust;
    if (total_out)
        *total_out = total;
    a->n_stages = 1;
    a->stages[0].name = elle_attack_kind_name(a->kind);
    a->stages[0].robust = robust;
    a->stages[0].seconds = now_s() - t0;
cleanup:
    free(images);
    free(labels);
    free(clean_ok);
    free(fooled);
    if (rc < 0)
        elle__error_prefix("%s", fn);
    return rc;
}
