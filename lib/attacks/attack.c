/*
 * elle_attack: the handle, its parameters and buffers, the host-array entry
 * point, and the building blocks the algorithms (fgsm.c, pgd.c,
 * gat_attack.c) are made of.
 * The AutoAttack kinds (apgd.c, fab.c, square.c, autoattack.c) run on host
 * arrays through elle__aa_model; this file maps the handle's parameters to
 * theirs.
 *
 * Buffers live in backend memory and are allocated once, for the model's
 * reserved batch, the first time they are needed; a step allocates nothing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attacks/attack_internal.h"
#include "core/error.h"
#include "core/params.h"
#include "core/rng.h"
#include "nn/model_internal.h"

/* Defaults that depend on the kind are overwritten in elle_attack_create. */
static const elle__param_spec attack_params[] = {
    {ELLE_ATTACK_PARAM_EPS, "eps", 0, 1, 0, 8.0 / 255.0},
    {ELLE_ATTACK_PARAM_ALPHA, "alpha", 0, 1, 0, 0},
    {ELLE_ATTACK_PARAM_STEPS, "steps", 1, 100000, 1, 10},
    {ELLE_ATTACK_PARAM_RESTARTS, "restarts", 1, 10000, 1, 1},
    {ELLE_ATTACK_PARAM_NOISE_MULT, "noise_mult", 0, 64, 0, 1},
    {ELLE_ATTACK_PARAM_RANDOM_START, "random_start", 0, 1, 1, 1},
    {ELLE_ATTACK_PARAM_PROJECT, "project", 0, 1, 1, 1},
    {ELLE_ATTACK_PARAM_CLAMP_IMAGE, "clamp_image", 0, 1, 1, 0},
    {ELLE_ATTACK_PARAM_EARLY_STOP, "early_stop", 0, 1, 1, 0},
    {ELLE_ATTACK_PARAM_SEED, "seed", 0, 9007199254740991.0, 1, 0},
    {ELLE_ATTACK_PARAM_N_TARGET_CLASSES, "n_target_classes", 1, 100000, 1, 9},
    {ELLE_ATTACK_PARAM_N_QUERIES, "n_queries", 1, 10000000, 1, 5000},
    {ELLE_ATTACK_PARAM_EOT_ITER, "eot_iter", 0, 1000, 1, 0},
    {ELLE_ATTACK_PARAM_VERSION, "version", 0, 1, 1, 0},
    {ELLE_ATTACK_PARAM_GAT_WEIGHT, "gat_weight", 0, 1e6, 0, 10},
};
#define N_ATTACK_PARAMS (sizeof attack_params / sizeof attack_params[0])

static const char *const kind_names[] = {"fgsm",    "rs-fgsm",  "n-fgsm", "pgd",
                                         "apgd-ce", "apgd-dlr", "apgd-t", "fab-t",
                                         "square",  "autoattack", "gat"};
#define N_KINDS 11

/* ---- names ---------------------------------------------------------------------- */

const char *elle_attack_kind_name(elle_attack_kind kind)
{
    if ((int)kind < 0 || (int)kind >= N_KINDS)
        return NULL;
    return kind_names[kind];
}

int elle_attack_kind_from_name(const char *name, elle_attack_kind *out)
{
    ELLE_CHECK_ARG(name != NULL);
    ELLE_CHECK_ARG(out != NULL);
    for (int i = 0; i < N_KINDS; i++) {
        /* the CLI's method names use '-', Python keyword style uses '_' */
        const char *k = kind_names[i], *v = name;
        while (*k && (*v == *k || (*v == '_' && *k == '-'))) {
            k++;
            v++;
        }
        if (*k == '\0' && *v == '\0') {
            *out = (elle_attack_kind)i;
            return ELLE_OK;
        }
    }
    ELLE_FAIL(ELLE_EINVAL,
              "elle_attack_kind_from_name: unknown attack '%s' (fgsm, rs-fgsm, n-fgsm, pgd, "
              "apgd-ce, apgd-dlr, apgd-t, fab-t, square, autoattack, gat)",
              name);
}

int elle_attack_get_kind(const elle_attack *a)
{
    return a ? (int)a->kind : -1;
}

elle_model *elle_attack_get_model(const elle_attack *a)
{
    return a ? a->model : NULL;
}

/* ---- lifetime ------------------------------------------------------------------- */

int elle_attack_create(elle_attack **out, elle_model *model, elle_attack_kind kind)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(model != NULL);
    if ((int)kind < 0 || (int)kind >= N_KINDS)
        ELLE_FAIL(ELLE_EINVAL,
                  "elle_attack_create: unknown attack kind %d (0 fgsm, 1 rs-fgsm, 2 n-fgsm, "
                  "3 pgd, 4 apgd-ce, 5 apgd-dlr, 6 apgd-t, 7 fab-t, 8 square, 9 autoattack, "
                  "10 gat)",
                  (int)kind);
    elle_attack *a = calloc(1, sizeof *a);
    if (!a)
        ELLE_FAIL(ELLE_ENOMEM, "elle_attack_create: out of memory");
    a->model = model;
    a->kind = kind;
    for (size_t i = 0; i < N_ATTACK_PARAMS; i++)
        a->p[attack_params[i].id] = attack_params[i].default_value;
    /* the kinds are presets of one family: start noise, step, projection */
    switch (kind) {
    case ELLE_ATTACK_FGSM:
        a->p[ELLE_ATTACK_PARAM_RANDOM_START] = 0;
        a->p[ELLE_ATTACK_PARAM_PROJECT] = 0; /* one step of eps from x cannot leave the ball */
        break;
    case ELLE_ATTACK_RS_FGSM:
        break;
    case ELLE_ATTACK_N_FGSM:
        a->p[ELLE_ATTACK_PARAM_NOISE_MULT] = 2;
        a->p[ELLE_ATTACK_PARAM_PROJECT] = 0;
        break;
    case ELLE_ATTACK_PGD:
        break;
    case ELLE_ATTACK_APGD_CE:
    case ELLE_ATTACK_APGD_DLR:
    case ELLE_ATTACK_APGD_T:
    case ELLE_ATTACK_FAB_T:
    case ELLE_ATTACK_AUTOATTACK:
        a->p[ELLE_ATTACK_PARAM_STEPS] = 100; /* the reference's n_iter */
        break;
    case ELLE_ATTACK_SQUARE:
        break;
    case ELLE_ATTACK_GAT:
        /* the reference clamps both the start and the guided point to the
         * image; the projection is the clean version's (docs/attacks.md) */
        a->p[ELLE_ATTACK_PARAM_CLAMP_IMAGE] = 1;
        break;
    }
    *out = a;
    return ELLE_OK;
}

static void release_buffers(elle_attack *a)
{
    elle__backend *be = elle__model_backend(a->model);
    void *dev[] = {a->x0, a->adv, a->grad, a->best, a->coef, a->loss, a->dlogits, a->labels};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i])
            be->ops->free(be, dev[i]);
    free(a->h_loss);
    free(a->h_best_loss);
    free(a->h_coef);
    free(a->h_logits);
    free(a->h_prob);
    free(a->h_labels);
    free(a->h_fooled);
    free(a->h_mask);
    a->x0 = a->adv = a->grad = a->best = a->coef = a->loss = a->dlogits = NULL;
    a->labels = NULL;
    a->h_loss = a->h_best_loss = a->h_coef = a->h_logits = NULL;
    a->h_prob = NULL;
    a->h_labels = NULL;
    a->h_fooled = a->h_mask = NULL;
    a->cap = 0;
    a->bytes = 0;
}

static size_t aa_bytes(const elle_attack *a)
{
    if (!a->aa_ready)
        return 0;
    return ((size_t)(2 * a->aa.numel) + (size_t)a->aa.classes) * (size_t)a->aa.max_batch *
           sizeof(float);
}

void elle_attack_free(elle_attack *a)
{
    if (!a)
        return;
    release_buffers(a);
    if (a->aa_ready)
        elle__aa_model_release(&a->aa);
    free(a);
}

size_t elle_attack_memory_size(const elle_attack *a)
{
    return a ? sizeof *a + a->bytes + aa_bytes(a) : 0;
}

int elle_attack_num_stages(const elle_attack *a)
{
    ELLE_CHECK_ARG(a != NULL);
    return a->n_stages;
}

int elle_attack_stage_result(const elle_attack *a, int stage, const char **name,
                             int64_t *robust_correct, double *seconds)
{
    ELLE_CHECK_ARG(a != NULL);
    if (stage < 0 || stage >= a->n_stages)
        ELLE_FAIL(ELLE_EINVAL, "elle_attack_stage_result: stage %d outside [0, %d) (the stages "
                               "of the last elle_attack_evaluate)",
                  stage, a->n_stages);
    if (name)
        *name = a->stages[stage].name;
    if (robust_correct)
        *robust_correct = a->stages[stage].robust;
    if (seconds)
        *seconds = a->stages[stage].seconds;
    return ELLE_OK;
}

/* ---- parameters ----------------------------------------------------------------- */

int elle_attack_set_param(elle_attack *a, elle_attack_param param, double value)
{
    ELLE_CHECK_ARG(a != NULL);
    ELLE_TRY(elle__param_check(attack_params, N_ATTACK_PARAMS, (int)param, value,
                               "elle_attack_set_param"));
    a->p[param] = value;
    /* a new seed is a new stream, read from its beginning */
    if (param == ELLE_ATTACK_PARAM_SEED)
        a->counter = 0;
    return ELLE_OK;
}

int elle_attack_get_param(const elle_attack *a, elle_attack_param param, double *out)
{
    ELLE_CHECK_ARG(a != NULL);
    ELLE_CHECK_ARG(out != NULL);
    if (!elle__param_find(attack_params, N_ATTACK_PARAMS, (int)param))
        ELLE_FAIL(ELLE_EINVAL, "elle_attack_get_param: unknown parameter %d", (int)param);
    *out = a->p[param];
    return ELLE_OK;
}

int elle_attack_param_bounds(elle_attack_param param, double *lo, double *hi)
{
    ELLE_CHECK_ARG(lo != NULL);
    ELLE_CHECK_ARG(hi != NULL);
    const elle__param_spec *s = elle__param_find(attack_params, N_ATTACK_PARAMS, (int)param);
    if (!s)
        ELLE_FAIL(ELLE_EINVAL, "elle_attack_param_bounds: unknown parameter %d", (int)param);
    *lo = s->lo;
    *hi = s->hi;
    return ELLE_OK;
}

int elle_attack_param_from_name(const char *name, elle_attack_param *out)
{
    int id = 0;
    ELLE_CHECK_ARG(out != NULL);
    ELLE_TRY(elle__param_lookup(attack_params, N_ATTACK_PARAMS, name, &id,
                                "elle_attack_param_from_name"));
    *out = (elle_attack_param)id;
    return ELLE_OK;
}

const char *elle_attack_param_name(elle_attack_param param)
{
    const elle__param_spec *s = elle__param_find(attack_params, N_ATTACK_PARAMS, (int)param);
    return s ? s->name : NULL;
}

int elle_attack_get_rng_counter(const elle_attack *a, uint64_t *out)
{
    ELLE_CHECK_ARG(a != NULL);
    ELLE_CHECK_ARG(out != NULL);
    *out = a->counter;
    return ELLE_OK;
}

int elle_attack_set_rng_counter(elle_attack *a, uint64_t counter)
{
    ELLE_CHECK_ARG(a != NULL);
    a->counter = counter;
    return ELLE_OK;
}

double elle__attack_alpha(const elle_attack *a)
{
    double alpha = a->p[ELLE_ATTACK_PARAM_ALPHA];
    if (alpha > 0)
        return alpha;
    double eps = a->p[ELLE_ATTACK_PARAM_EPS];
    switch (a->kind) {
    case ELLE_ATTACK_RS_FGSM: return 1.25 * eps; /* Fast AT: 10/255 at eps 8/255 */
    case ELLE_ATTACK_PGD: return eps / 4.0;      /* the reference's PGD-50-10 step */
    default: return eps;
    }
}

/* ---- buffers -------------------------------------------------------------------- */

static int alloc_dev(elle__backend *be, size_t bytes, void **out, size_t *total)
{
    *total += bytes;
    return be->ops->alloc(be, bytes, out);
}

static void *alloc_host(size_t bytes, size_t *total)
{
    *total += bytes;
    return malloc(bytes ? bytes : 1);
}

int elle__attack_prepare(elle_attack *a, int64_t n, const char *fn)
{
    int64_t max_batch = elle__model_max_batch(a->model);
    if (max_batch == 0)
        ELLE_FAIL(ELLE_ESTATE, "%s: call elle_model_reserve on the model first", fn);
    if (n < 1 || n > max_batch)
        ELLE_FAIL(ELLE_ESHAPE, "%s: batch of %lld outside [1, %lld] (the model's reserved batch)",
                  fn, (long long)n, (long long)max_batch);
    if (a->cap >= max_batch)
        return ELLE_OK;

    /* first use, or the model was re-reserved for a larger batch */
    release_buffers(a);
    elle__backend *be = elle__model_backend(a->model);
    const int64_t numel = elle__model_image_numel(a->model);
    const int64_t classes = elle_model_num_classes(a->model);
    const size_t images = (size_t)max_batch * (size_t)numel * sizeof(float);
    const size_t vec = (size_t)max_batch * sizeof(float);
    size_t total = 0;
    int rc = ELLE_OK;
    const size_t logit_bytes = (size_t)max_batch * (size_t)classes * sizeof(float);
    void *p[8] = {NULL};
    ELLE_TRY_GOTO(rc, alloc_dev(be, images, &p[0], &total));
    ELLE_TRY_GOTO(rc, alloc_dev(be, images, &p[1], &total));
    ELLE_TRY_GOTO(rc, alloc_dev(be, images, &p[2], &total));
    ELLE_TRY_GOTO(rc, alloc_dev(be, images, &p[3], &total));
    ELLE_TRY_GOTO(rc, alloc_dev(be, vec, &p[4], &total));
    ELLE_TRY_GOTO(rc, alloc_dev(be, vec, &p[5], &total));
    ELLE_TRY_GOTO(rc, alloc_dev(be, (size_t)max_batch * sizeof(int32_t), &p[6], &total));
    ELLE_TRY_GOTO(rc, alloc_dev(be, logit_bytes, &p[7], &total));
    a->x0 = p[0];
    a->adv = p[1];
    a->grad = p[2];
    a->best = p[3];
    a->coef = p[4];
    a->loss = p[5];
    a->labels = p[6];
    a->dlogits = p[7];
    for (int i = 0; i < 8; i++)
        p[i] = NULL;
    a->h_loss = alloc_host(vec, &total);
    a->h_best_loss = alloc_host(vec, &total);
    a->h_coef = alloc_host(vec, &total);
    a->h_logits = alloc_host(logit_bytes, &total);
    a->h_prob = alloc_host(2 * (size_t)max_batch * (size_t)classes * sizeof(double), &total);
    a->h_labels = alloc_host((size_t)max_batch * sizeof(int32_t), &total);
    a->h_fooled = alloc_host((size_t)max_batch, &total);
    a->h_mask = alloc_host((size_t)max_batch, &total);
    if (!a->h_loss || !a->h_best_loss || !a->h_coef || !a->h_logits || !a->h_prob ||
        !a->h_labels || !a->h_fooled || !a->h_mask) {
        rc = elle__error_set(ELLE_ENOMEM, "%s: out of memory for the attack's host buffers", fn);
        goto cleanup;
    }
    a->cap = max_batch;
    a->numel = numel;
    a->classes = classes;
    a->bytes = total;
cleanup:
    if (rc < 0) {
        for (int i = 0; i < 8; i++)
            if (p[i])
                be->ops->free(be, p[i]);
        release_buffers(a);
        elle__error_prefix("%s: attack buffers for a batch of %lld", fn, (long long)max_batch);
    }
    return rc;
}

/* ---- building blocks ------------------------------------------------------------ */

/* Project cur onto the eps-ball around x0 and/or clamp it to [0, 1], as the
 * parameters say: the treatment every perturbed point receives. */
int elle__attack_constrain(elle_attack *a, int64_t n, float *cur)
{
    elle__backend *be = elle__model_backend(a->model);
    const int clamp = a->p[ELLE_ATTACK_PARAM_CLAMP_IMAGE] != 0;
    if (a->p[ELLE_ATTACK_PARAM_PROJECT] != 0)
        return be->ops->project_linf(be, n, a->numel, a->x0, (float)a->p[ELLE_ATTACK_PARAM_EPS],
                                     NULL, clamp, 0.0f, 1.0f, cur);
    if (clamp)
        return be->ops->clamp(be, n * a->numel, 0.0f, 1.0f, cur);
    return ELLE_OK;
}

int elle__attack_start(elle_attack *a, int64_t n, float *cur)
{
    elle__backend *be = elle__model_backend(a->model);
    const int64_t count = n * a->numel;
    if (cur != a->x0)
        ELLE_TRY(be->ops->copy(be, cur, a->x0, (size_t)count * sizeof(float)));
    if (a->p[ELLE_ATTACK_PARAM_RANDOM_START] == 0)
        return ELLE_OK; /* x itself: nothing to project or clamp */
    const float r = (float)(a->p[ELLE_ATTACK_PARAM_NOISE_MULT] * a->p[ELLE_ATTACK_PARAM_EPS]);
    /* the noise goes through the gradient buffer, free until the first step */
    ELLE_TRY(be->ops->uniform(be, count, (uint64_t)a->p[ELLE_ATTACK_PARAM_SEED], a->counter, -r, r,
                              a->grad));
    a->counter += elle__rng_blocks(count);
    ELLE_TRY(be->ops->axpy(be, count, 1.0f, a->grad, cur));
    return elle__attack_constrain(a, n, cur);
}

int elle__attack_forward(elle_attack *a, const int32_t *y, int64_t n, const float *cur,
                         int want_loss)
{
    return elle__model_forward_dev(a->model, cur, y, n, want_loss ? a->loss : NULL);
}

int elle__attack_ascend(elle_attack *a, int64_t n, float alpha, float *cur)
{
    elle__backend *be = elle__model_backend(a->model);
    const int64_t count = n * a->numel;
    /* input gradient only (param_grads = 0): the parameter gradients the
     * trainer accumulates are never touched */
    ELLE_TRY(elle__model_backward_dev(a->model, n, a->coef, 0, a->grad));
    ELLE_TRY(be->ops->sign(be, count, a->grad, a->grad));
    ELLE_TRY(be->ops->axpy(be, count, alpha, a->grad, cur));
    return elle__attack_constrain(a, n, cur);
}

int elle__attack_misclassified(elle_attack *a, int64_t n, unsigned char *mis)
{
    elle__backend *be = elle__model_backend(a->model);
    const int64_t k = a->classes;
    ELLE_TRY(be->ops->copy_to_host(be, a->h_logits, elle__model_logits_dev(a->model),
                                   (size_t)(n * k) * sizeof(float)));
    for (int64_t i = 0; i < n; i++) {
        const float *z = a->h_logits + i * k;
        int64_t arg = 0;
        for (int64_t j = 0; j < k; j++) {
            if (!isfinite(z[j]))
                ELLE_FAIL(ELLE_ENUMERIC, "attack: logit %lld of sample %lld is %g", (long long)j,
                          (long long)i, (double)z[j]);
            if (z[j] > z[arg])
                arg = j; /* strict: the first maximum wins, as torch.argmax */
        }
        mis[i] = arg != a->h_labels[i];
    }
    return ELLE_OK;
}

int elle__attack_copy_rows(elle_attack *a, int64_t n, const unsigned char *mask, float *dst,
                           const float *src)
{
    elle__backend *be = elle__model_backend(a->model);
    const size_t row = (size_t)a->numel * sizeof(float);
    int64_t i = 0;
    while (i < n) {
        if (!mask[i]) {
            i++;
            continue;
        }
        int64_t j = i;
        while (j < n && mask[j])
            j++;
        ELLE_TRY(be->ops->copy(be, dst + i * a->numel, src + i * a->numel,
                               (size_t)(j - i) * row));
        i = j;
    }
    return ELLE_OK;
}

/* ---- AutoAttack kinds ----------------------------------------------------------- */

int elle__attack_is_aa(elle_attack_kind kind)
{
    return kind >= ELLE_ATTACK_APGD_CE && kind <= ELLE_ATTACK_AUTOATTACK;
}

void elle__attack_aa_config(const elle_attack *a, elle__aa_params *p, elle__aa_attack *attacks,
                            int *n_attacks)
{
    const int rand_version =
        a->kind == ELLE_ATTACK_AUTOATTACK && a->p[ELLE_ATTACK_PARAM_VERSION] != 0;
    /* eps meets the float32 images as a float, as in the reference */
    elle__aa_params_standard(p, (float)a->p[ELLE_ATTACK_PARAM_EPS],
                             (uint64_t)a->p[ELLE_ATTACK_PARAM_SEED]);
    p->n_iter = (int)a->p[ELLE_ATTACK_PARAM_STEPS];
    p->n_restarts = (int)a->p[ELLE_ATTACK_PARAM_RESTARTS];
    p->n_target_classes = (int)a->p[ELLE_ATTACK_PARAM_N_TARGET_CLASSES];
    p->n_queries = (int)a->p[ELLE_ATTACK_PARAM_N_QUERIES];
    const int eot = (int)a->p[ELLE_ATTACK_PARAM_EOT_ITER];
    p->eot_iter = eot > 0 ? eot : rand_version ? 20 : 1;
    int n = 0;
    switch (a->kind) {
    case ELLE_ATTACK_APGD_CE: attacks[n++] = ELLE__AA_APGD_CE; break;
    case ELLE_ATTACK_APGD_DLR: attacks[n++] = ELLE__AA_APGD_DLR; break;
    case ELLE_ATTACK_APGD_T: attacks[n++] = ELLE__AA_APGD_T; break;
    case ELLE_ATTACK_FAB_T: attacks[n++] = ELLE__AA_FAB_T; break;
    case ELLE_ATTACK_SQUARE: attacks[n++] = ELLE__AA_SQUARE; break;
    case ELLE_ATTACK_AUTOATTACK:
        attacks[n++] = ELLE__AA_APGD_CE;
        if (rand_version) {
            attacks[n++] = ELLE__AA_APGD_DLR;
        } else {
            attacks[n++] = ELLE__AA_APGD_T;
            attacks[n++] = ELLE__AA_FAB_T;
            attacks[n++] = ELLE__AA_SQUARE;
        }
        break;
    default: break;
    }
    *n_attacks = n;
}

int elle__attack_aa_prepare(elle_attack *a, int64_t n, const char *fn)
{
    int64_t max_batch = elle__model_max_batch(a->model);
    if (max_batch == 0)
        ELLE_FAIL(ELLE_ESTATE, "%s: call elle_model_reserve on the model first", fn);
    if (n < 1 || n > max_batch)
        ELLE_FAIL(ELLE_ESHAPE, "%s: batch of %lld outside [1, %lld] (the model's reserved batch)",
                  fn, (long long)n, (long long)max_batch);
    /* the DLR losses rank the logits: untargeted needs 3, targeted 4 */
    const int64_t classes = elle_model_num_classes(a->model);
    const int rand_version =
        a->kind == ELLE_ATTACK_AUTOATTACK && a->p[ELLE_ATTACK_PARAM_VERSION] != 0;
    int64_t need = 2;
    const char *why = NULL;
    if (a->kind == ELLE_ATTACK_APGD_DLR || rand_version) {
        need = 3;
        why = "the DLR loss";
    } else if (a->kind == ELLE_ATTACK_APGD_T || a->kind == ELLE_ATTACK_AUTOATTACK) {
        need = 4;
        why = "the targeted DLR loss (apgd-t)";
    }
    if (classes < need)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "%s: %s needs >= %lld classes, the model has %lld", fn, why,
                  (long long)need, (long long)classes);
    if (a->aa_ready && a->aa.max_batch >= max_batch)
        return ELLE_OK;
    if (a->aa_ready) {
        elle__aa_model_release(&a->aa);
        a->aa_ready = 0;
    }
    int rc = elle__aa_model_init(&a->aa, a->model);
    if (rc < 0) {
        elle__error_prefix("%s", fn);
        return rc;
    }
    a->aa_ready = 1;
    return ELLE_OK;
}

/* elle_attack_perturb of the AutoAttack kinds (a, x, y, x_adv_out and n >= 1
 * checked by the caller). */
static int aa_perturb(elle_attack *a, const float *x, const int32_t *y, int64_t n,
                      float *x_adv_out, const char *fn)
{
    ELLE_TRY(elle__attack_aa_prepare(a, n, fn));
    const int64_t numel = a->aa.numel, count = n * numel;
    for (int64_t i = 0; i < count; i++)
        if (!(x[i] >= 0.0f && x[i] <= 1.0f))
            ELLE_FAIL(ELLE_EINVAL, "%s: x[%lld] = %g outside [0, 1] (sample %lld)", fn,
                      (long long)i, (double)x[i], (long long)(i / numel));
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= a->aa.classes)
            ELLE_FAIL(ELLE_EINVAL, "%s: y[%lld] = %d outside [0, %lld)", fn, (long long)i,
                      (int)y[i], (long long)a->aa.classes);
    elle__aa_params p;
    elle__aa_attack attacks[ELLE__AA_MAX_STAGES];
    int n_attacks = 0;
    elle__attack_aa_config(a, &p, attacks, &n_attacks);
    /* the components may not write over x: a separate output */
    float *out = malloc((size_t)count * sizeof(float));
    if (!out)
        ELLE_FAIL(ELLE_ENOMEM, "%s: out of memory for %lld images", fn, (long long)n);
    int rc;
    if (a->kind == ELLE_ATTACK_AUTOATTACK)
        rc = elle__autoattack_run(&a->aa, &p, attacks, n_attacks, x, y, n, n, NULL, out, NULL,
                                  NULL);
    else
        rc = elle__aa_perturb(&a->aa, &p, attacks[0], x, y, n, out);
    if (rc == ELLE_OK)
        memcpy(x_adv_out, out, (size_t)count * sizeof(float));
    else
        elle__error_prefix("%s", fn);
    free(out);
    return rc;
}

/* ---- entry points --------------------------------------------------------------- */

int elle__attack_run(elle_attack *a, const int32_t *y, int64_t n, float *x_adv,
                     unsigned char *fooled)
{
    elle__backend *be = elle__model_backend(a->model);
    if (elle__attack_is_aa(a->kind))
        ELLE_FAIL(ELLE_EUNSUPPORTED, "attack: %s runs on host arrays only (elle_attack_perturb, "
                                     "elle_attack_evaluate), not inside training",
                  kind_names[a->kind]);
    /* CE_mean: every sample weighs 1/n (the reference's mean reduction) */
    ELLE_TRY(be->ops->fill(be, n, 1.0f / (float)n, a->coef));
    if (a->kind == ELLE_ATTACK_PGD)
        return elle__attack_pgd_run(a, y, n, x_adv, fooled);
    if (a->kind == ELLE_ATTACK_GAT)
        return elle__attack_gat_run(a, y, n, x_adv, fooled);
    return elle__attack_fgsm_run(a, y, n, x_adv, fooled);
}

int elle__attack_perturb_dev(elle_attack *a, const float *x, const int32_t *y, int64_t n,
                             float *x_adv)
{
    ELLE_CHECK_ARG(a != NULL);
    ELLE_CHECK_ARG(x != NULL && y != NULL && x_adv != NULL);
    ELLE_TRY(elle__attack_prepare(a, n, "elle__attack_perturb_dev"));
    elle__backend *be = elle__model_backend(a->model);
    /* x may be x_adv, or a buffer the model's forward overwrites: the
     * centre of the ball is kept in x0 */
    ELLE_TRY(be->ops->copy(be, a->x0, x, (size_t)(n * a->numel) * sizeof(float)));
    return elle__attack_run(a, y, n, x_adv, NULL);
}

int elle_attack_perturb(elle_attack *a, const float *x, const int32_t *y, int64_t n,
                        float *x_adv_out)
{
    static const char fn[] = "elle_attack_perturb";
    if (!a || !x || !y || !x_adv_out)
        ELLE_FAIL(ELLE_EINVAL, "%s: NULL argument (a %p, x %p, y %p, x_adv_out %p)", fn,
                  (const void *)a, (const void *)x, (const void *)y, (const void *)x_adv_out);
    if (n < 1)
        ELLE_FAIL(ELLE_EINVAL, "%s: n = %lld, need n >= 1", fn, (long long)n);
    if (elle__attack_is_aa(a->kind))
        return aa_perturb(a, x, y, n, x_adv_out, fn);
    ELLE_TRY(elle__attack_prepare(a, n, fn));
    const int64_t count = n * a->numel;
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(x[i]))
            ELLE_FAIL(ELLE_EINVAL, "%s: x[%lld] = %g is not finite (sample %lld)", fn,
                      (long long)i, (double)x[i], (long long)(i / a->numel));
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= a->classes)
            ELLE_FAIL(ELLE_EINVAL, "%s: y[%lld] = %d outside [0, %lld)", fn, (long long)i,
                      (int)y[i], (long long)a->classes);
    elle__backend *be = elle__model_backend(a->model);
    ELLE_TRY(be->ops->copy_to_device(be, a->x0, x, (size_t)count * sizeof(float)));
    ELLE_TRY(be->ops->copy_to_device(be, a->labels, y, (size_t)n * sizeof(int32_t)));
    ELLE_TRY(elle__attack_run(a, a->labels, n, a->adv, NULL));
    ELLE_TRY(be->ops->copy_to_host(be, x_adv_out, a->adv, (size_t)count * sizeof(float)));
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(x_adv_out[i]))
            ELLE_FAIL(ELLE_ENUMERIC,
                      "%s: x_adv[%lld] = %g is not finite (sample %lld): the model's input "
                      "gradient is NaN or Inf",
                      fn, (long long)i, (double)x_adv_out[i], (long long)(i / a->numel));
    return ELLE_OK;
}
