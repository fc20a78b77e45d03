/*
 * Internals of elle_attack: the handle, its buffers, and the steps every
 * algorithm is composed of. The algorithms (fgsm.c, pgd.c) are
 * backend-agnostic: they call the model's device-resident entry points
 * (nn/model_internal.h) and the backend's flat elementwise ops, never a
 * library such as oneDNN or cuDNN.
 *
 * elle__attack_perturb_dev is the entry point the trainer uses: its batch
 * already lives in backend memory.
 */
#ifndef ELLE_ATTACKS_ATTACK_INTERNAL_H
#define ELLE_ATTACKS_ATTACK_INTERNAL_H

#include <stdint.h>

#include "attacks/autoattack_internal.h"
#include "backend/backend.h"
#include "elle/attack.h"

#define ELLE__ATTACK_PARAM_SLOTS 16 /* parameter values by enum id (1 .. 15) */

/* One stage of the last elle_attack_evaluate (elle_attack_stage_result). */
typedef struct elle__attack_stage {
    const char *name; /* static */
    int64_t robust;
    double seconds;
} elle__attack_stage;

struct elle_attack {
    elle_model *model; /* borrowed */
    elle_attack_kind kind;
    double p[ELLE__ATTACK_PARAM_SLOTS];
    uint64_t counter; /* next Philox block of the stream (seed, counter) */

    /* Buffers, sized for `cap` samples (the model's reserved batch when they
     * were allocated); NULL until the first perturb or evaluate. Backend
     * memory: */
    int64_t cap;
    int64_t numel;   /* C*H*W of one image */
    int64_t classes;
    float *x0;       /* (cap, numel) the clean batch (the ball's centre) */
    float *adv;      /* (cap, numel) output of the host-array entry points */
    float *grad;     /* (cap, numel) input gradient; also the noise of a random start */
    float *best;     /* (cap, numel) per-sample kept point (restarts, early stop) */
    float *coef;     /* (cap) d objective / d loss_i: 1/n, 0 for a stopped sample */
    float *loss;     /* (cap) per-sample losses of a selection forward */
    float *dlogits;  /* (cap, classes) d objective / d logits (gat) */
    int32_t *labels; /* (cap) labels of the host-array entry points */
    /* host memory: */
    float *h_loss;      /* (cap) */
    float *h_best_loss; /* (cap) */
    float *h_coef;      /* (cap) */
    float *h_logits;    /* (cap, classes) */
    double *h_prob;     /* (cap, 2 classes) gat: P = softmax(f(x)), then Q at the point */
    int32_t *h_labels;  /* (cap) */
    unsigned char *h_fooled; /* (cap) 1 once a checked point misclassified the sample */
    unsigned char *h_mask;   /* (cap) scratch: rows to copy */
    size_t bytes; /* backend + host bytes held */

    /* AutoAttack kinds: the model as a host function (autoattack_model.c),
     * set up on first use for the model's reserved batch (aa_ready). */
    elle__aa_model aa;
    int aa_ready;

    /* stages of the last successful elle_attack_evaluate */
    int n_stages;
    elle__attack_stage stages[ELLE__AA_MAX_STAGES];
};

/* 1 for the AutoAttack kinds (apgd-ce .. autoattack), which run on host
 * arrays through elle__aa_model instead of the device building blocks. */
int elle__attack_is_aa(elle_attack_kind kind);

/* The AutoAttack parameters from the attack's (eps, steps, restarts,
 * n_target_classes, n_queries, eot_iter, version, seed), and the attacks
 * the kind runs in order (*n_attacks of them). */
void elle__attack_aa_config(const elle_attack *a, elle__aa_params *p, elle__aa_attack *attacks,
                            int *n_attacks);

/* Make a->aa hold the model's reserved batch and n fit: ELLE_ESTATE before
 * elle_model_reserve, ELLE_ESHAPE for n outside [1, max batch],
 * ELLE_EUNSUPPORTED when the kind needs more classes than the model has,
 * ELLE_ENOMEM. */
int elle__attack_aa_prepare(elle_attack *a, int64_t n, const char *fn);

/* The step size in use: ALPHA, or the kind's default relative to EPS when
 * ALPHA is 0. */
double elle__attack_alpha(const elle_attack *a);

/* Make sure the buffers hold the model's reserved batch and n fits:
 * ELLE_ESTATE before elle_model_reserve, ELLE_ESHAPE for n outside
 * [1, max batch], ELLE_ENOMEM. `fn` names the caller in messages. */
int elle__attack_prepare(elle_attack *a, int64_t n, const char *fn);

/* Adversarial examples for a batch already in backend memory: x (n, C, H, W),
 * y (n labels, trusted: checked at the public boundary), x_adv (n, C, H, W;
 * may alias x). Allocates the buffers on first use. Runs the kind's
 * algorithm in the model's current mode, with the input-gradient-only
 * backward. */
int elle__attack_perturb_dev(elle_attack *a, const float *x, const int32_t *y, int64_t n,
                             float *x_adv);

/* The kind's algorithm on the batch in a->x0 (already copied there), labels
 * y (backend memory), writing x_adv. When fooled != NULL (host, n bytes,
 * zeroed by the caller) the final point of every restart (and, with
 * early_stop, every iterate) is classified and fooled[i] set to 1 when one
 * of them misclassifies sample i; this costs one extra forward per restart
 * where the algorithm would not already make one. */
int elle__attack_run(elle_attack *a, const int32_t *y, int64_t n, float *x_adv,
                     unsigned char *fooled);

/* ---- building blocks (attack.c), shared by fgsm.c and pgd.c --------------------- */

/* cur := x0, plus U[-k eps, k eps] noise when RANDOM_START (the counter
 * advances), then projected onto the eps-ball when PROJECT and clamped to
 * [0, 1] when CLAMP_IMAGE, as every perturbed point. */
int elle__attack_start(elle_attack *a, int64_t n, float *cur);

/* Forward of cur with labels y; the per-sample losses land in a->loss when
 * want_loss. Training mode updates the BatchNorm running statistics. */
int elle__attack_forward(elle_attack *a, const int32_t *y, int64_t n, const float *cur,
                         int want_loss);

/* Project cur onto the eps-ball around a->x0 when PROJECT and clamp it to
 * [0, 1] when CLAMP_IMAGE: what every perturbed point goes through. */
int elle__attack_constrain(elle_attack *a, int64_t n, float *cur);

/* After elle__attack_forward: the gradient of sum_i coef_i loss_i (a->coef;
 * 1/n = CE_mean) with respect to the input, without parameter gradients;
 * then cur += alpha * sign(gradient), projected / clamped as the
 * parameters say. */
int elle__attack_ascend(elle_attack *a, int64_t n, float alpha, float *cur);

/* After elle__attack_forward: mis[i] := 1 when the argmax of the logits
 * (first maximum, as torch.argmax) differs from h_labels[i], else 0.
 * ELLE_ENUMERIC for a non-finite logit. */
int elle__attack_misclassified(elle_attack *a, int64_t n, unsigned char *mis);

/* dst row i := src row i for every i < n with mask[i] (rows of a->numel
 * floats, backend memory); adjacent rows are copied as one run. */
int elle__attack_copy_rows(elle_attack *a, int64_t n, const unsigned char *mask, float *dst,
                           const float *src);

/* The algorithms. */
int elle__attack_fgsm_run(elle_attack *a, const int32_t *y, int64_t n, float *x_adv,
                          unsigned char *fooled);
int elle__attack_pgd_run(elle_attack *a, const int32_t *y, int64_t n, float *x_adv,
                         unsigned char *fooled);
int elle__attack_gat_run(elle_attack *a, const int32_t *y, int64_t n, float *x_adv,
                         unsigned char *fooled);

/* GAT's two stages (gat_attack.c), exposed for the tests. gat_clean: the
 * labels y (backend memory) to a->h_labels, one forward of a->x0 and
 * P = softmax of its logits into a->h_prob (rows of `classes`). gat_cost,
 * after gat_clean on the same batch: one forward of cur, the guided cost
 * CE_mean + gat_weight (1/n) sum_i ||P_i - Q_i||^2 into *cost (may be
 * NULL), Q = softmax(f(cur)) into the second half of a->h_prob, and its
 * input gradient (P a constant, no parameter gradient) into a->grad.
 * ELLE_ENUMERIC for non-finite logits. */
int elle__attack_gat_clean(elle_attack *a, const int32_t *y, int64_t n);
int elle__attack_gat_cost(elle_attack *a, const int32_t *y, int64_t n, const float *cur,
                          double *cost);

#endif /* ELLE_ATTACKS_ATTACK_INTERNAL_H */
