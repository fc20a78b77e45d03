/*
 * The model as a host function for AutoAttack: copy the batch to the
 * backend, forward, copy the logits back; for a vector-Jacobian product,
 * copy d objective / d logits in and the input gradient out. The buffers are
 * allocated once per elle__aa_model, for the model's reserved batch.
 */
#include <math.h>
#include <string.h>

#include "attacks/autoattack_internal.h"
#include "core/error.h"
#include "nn/model_internal.h"

int elle__aa_model_init(elle__aa_model *am, elle_model *model)
{
    memset(am, 0, sizeof *am);
    int64_t max_batch = elle__model_max_batch(model);
    if (max_batch < 1)
        ELLE_FAIL(ELLE_ESTATE, "autoattack: call elle_model_reserve first");
    int64_t classes = elle_model_num_classes(model);
    am->model = model;
    am->be = elle__model_backend(model);
    am->numel = elle__model_image_numel(model);
    am->classes = classes;
    am->max_batch = max_batch;
    elle__backend *be = am->be;
    size_t img = (size_t)max_batch * (size_t)am->numel * sizeof(float);
    void *p;
    int rc = be->ops->alloc(be, img, &p);
    if (rc == ELLE_OK) {
        am->d_x = p;
        rc = be->ops->alloc(be, img, &p);
    }
    if (rc == ELLE_OK) {
        am->d_dx = p;
        rc = be->ops->alloc(be, (size_t)max_batch * (size_t)classes * sizeof(float), &p);
    }
    if (rc == ELLE_OK)
        am->d_dlogits = p;
    if (rc < 0)
        elle__aa_model_release(am);
    return rc;
}

void elle__aa_model_release(elle__aa_model *am)
{
    if (!am || !am->be)
        return;
    elle__backend *be = am->be;
    be->ops->free(be, am->d_x);
    be->ops->free(be, am->d_dx);
    be->ops->free(be, am->d_dlogits);
    memset(am, 0, sizeof *am);
}

int elle__aa_forward(elle__aa_model *am, const float *x, int64_t n, float *logits)
{
    elle__backend *be = am->be;
    if (n < 1 || n > am->max_batch)
        ELLE_FAIL(ELLE_ESHAPE, "autoattack: batch of %lld outside [1, %lld]", (long long)n,
                  (long long)am->max_batch);
    am->last_n = 0;
    ELLE_TRY(be->ops->copy_to_device(be, am->d_x, x, (size_t)n * (size_t)am->numel * sizeof(float)));
    ELLE_TRY(elle__model_forward_dev(am->model, am->d_x, NULL, n, NULL));
    ELLE_TRY(be->ops->copy_to_host(be, logits, elle__model_logits_dev(am->model),
                                   (size_t)n * (size_t)am->classes * sizeof(float)));
    for (int64_t i = 0; i < n * am->classes; i++)
        if (!isfinite(logits[i]))
            ELLE_FAIL(ELLE_ENUMERIC, "autoattack: non-finite logit %g (sample %lld, class %lld)",
                      (double)logits[i], (long long)(i / am->classes),
                      (long long)(i % am->classes));
    am->last_n = n;
    am->forwards++;
    return ELLE_OK;
}

int elle__aa_vjp(elle__aa_model *am, int64_t n, const float *dlogits, float *dx)
{
    elle__backend *be = am->be;
    if (am->last_n != n)
        ELLE_FAIL(ELLE_ESTATE, "autoattack: vjp of %lld samples after a forward of %lld",
                  (long long)n, (long long)am->last_n);
    ELLE_TRY(be->ops->copy_to_device(be, am->d_dlogits, dlogits,
                                     (size_t)n * (size_t)am->classes * sizeof(float)));
    ELLE_TRY(elle__model_backward_logits_dev(am->model, n, am->d_dlogits, 0, am->d_dx));
    ELLE_TRY(be->ops->copy_to_host(be, dx, am->d_dx, (size_t)n * (size_t)am->numel * sizeof(float)));
    am->backwards++;
    return ELLE_OK;
}

int32_t elle__aa_argmax(const float *z, int64_t classes)
{
    int64_t best = 0;
    for (int64_t k = 1; k < classes; k++)
        if (z[k] > z[best])
            best = k;
    return (int32_t)best;
}

void elle__aa_params_standard(elle__aa_params *p, float eps, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->eps = eps;
    p->n_iter = 100;
    p->n_restarts = 1;
    p->n_target_classes = 9;
    p->n_queries = 5000;
    p->p_init = 0.8f;
    p->rho = 0.75f;
    p->eot_iter = 1;
    p->fab_alpha_max = 0.1f;
    p->fab_eta = 1.05f;
    p->fab_beta = 0.9f;
    p->seed = seed;
}
