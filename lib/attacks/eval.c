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
 */
#include <stdlib.h>
#include <string.h>

#include "attacks/attack_internal.h"
#include "core/error.h"
#include "nn/model_internal.h"

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
cleanup:
    free(images);
    free(labels);
    free(clean_ok);
    free(fooled);
    if (rc < 0)
        elle__error_prefix("%s", fn);
    return rc;
}
