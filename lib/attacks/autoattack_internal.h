/*
 * Internals of AutoAttack (spec/autoattack.md): the model seen as a host
 * function (logits, vector-Jacobian product), the parameters every
 * component reads, and the components the driver (autoattack.c) chains.
 *
 * The components are written on host arrays: their logic (DLR losses,
 * checkpoints, the FAB hyperplane-box projection, Square's windows) is
 * per-sample bookkeeping that is clearest in plain C, and the model's
 * forward/backward dominate the cost. The model itself runs on its backend
 * through elle__aa_model (one copy of the batch in and the logits out per
 * call). All images are float32 (n, numel) in [0, 1], C order; labels int32.
 * n is at most the model's reserved batch (the driver chunks by bs <= it).
 */
#ifndef ELLE_ATTACKS_AUTOATTACK_INTERNAL_H
#define ELLE_ATTACKS_AUTOATTACK_INTERNAL_H

#include <stdint.h>

#include "attacks/mt19937.h"
#include "backend/backend.h"
#include "elle/model.h"

/* ---- the model as a host function (autoattack_model.c) ----------------------- */

typedef struct elle__aa_model {
    elle_model *model;  /* borrowed; used in its current mode (eval for AA) */
    elle__backend *be;
    int64_t numel;      /* C*H*W */
    int64_t classes;
    int64_t max_batch;  /* the model's reserved batch */
    float *d_x;         /* backend (max_batch, numel) */
    float *d_dlogits;   /* backend (max_batch, classes) */
    float *d_dx;        /* backend (max_batch, numel) */
    int64_t last_n;     /* batch of the last elle__aa_forward, 0 if none */
    int64_t forwards, backwards; /* counters, for cost reports and tests */
} elle__aa_model;

/* ELLE_ESTATE before elle_model_reserve; ELLE_ENOMEM. */
int elle__aa_model_init(elle__aa_model *am, elle_model *model);
void elle__aa_model_release(elle__aa_model *am);

/* logits (n, classes) host := f(x), x (n, numel) host, 1 <= n <= max_batch.
 * ELLE_ENUMERIC for a non-finite logit. */
int elle__aa_forward(elle__aa_model *am, const float *x, int64_t n, float *logits);

/* After elle__aa_forward of n points: dx (n, numel) host := the gradient
 * of sum_i <dlogits_i, z_i> with respect to x (dlogits (n, classes) host),
 * input-gradient-only backward (no parameter gradients). */
int elle__aa_vjp(elle__aa_model *am, int64_t n, const float *dlogits, float *dx);

/* pred(z) with torch's tie rule (first maximum). */
int32_t elle__aa_argmax(const float *z, int64_t classes);

/* ---- parameters ---------------------------------------------------------------- */

typedef enum elle__aa_loss {
    ELLE__AA_LOSS_CE = 0,
    ELLE__AA_LOSS_DLR = 1,         /* untargeted DLR */
    ELLE__AA_LOSS_DLR_TARGETED = 2 /* APGD-T */
} elle__aa_loss;

typedef struct elle__aa_params {
    float eps;            /* L-inf radius (8/255) */
    int n_iter;           /* APGD and FAB iterations (100) */
    int n_restarts;       /* 1 in the standard version */
    int n_target_classes; /* APGD-T and FAB-T (9) */
    int n_queries;        /* Square (5000) */
    float p_init;         /* Square (0.8) */
    float rho;            /* APGD (0.75) */
    int eot_iter;         /* APGD (1; 20 in the 'rand' version) */
    float fab_alpha_max;  /* 0.1 */
    float fab_eta;        /* 1.05 */
    float fab_beta;       /* 0.9 */
    uint64_t seed;        /* torch.manual_seed(seed) once per (attack, chunk) */
} elle__aa_params;

/* The standard version's values for eps (spec §2.1). */
void elle__aa_params_standard(elle__aa_params *p, float eps, uint64_t seed);

/* ---- components ------------------------------------------------------------------
 * Each is the reference's `perturb(x, y)` for one chunk: it seeds its own
 * MT19937 with p->seed (when it draws), attacks only the points the model
 * classifies correctly at x, and writes x_adv (n, numel) host: for every
 * point it fooled, an adversarial point inside B(x) = eps-ball ∩ [0,1]^d;
 * for every other point, x itself (or, where the reference returns it, its
 * best non-adversarial iterate: still inside B(x)). The driver judges
 * success with a fresh forward; components never report counts. x, y, x_adv
 * are host; x_adv may not alias x. */

/* APGD-CE (loss CE), untargeted APGD-DLR (loss DLR) and APGD-T (loss
 * DLR_TARGETED: targets of ranks 2 .. n_target_classes+1 of the clean
 * logits, each run only on the points not yet fooled). apgd.c */
int elle__apgd_perturb(elle__aa_model *am, const elle__aa_params *p, elle__aa_loss loss,
                       const float *x, const int32_t *y, int64_t n, float *x_adv);

/* FAB-T, L-inf, targeted over n_target_classes, no random start (the
 * standard version's n_restarts = 1). fab.c, projection in fab_projection.c */
int elle__fab_t_perturb(elle__aa_model *am, const elle__aa_params *p, const float *x,
                        const int32_t *y, int64_t n, float *x_adv);

/* Square, L-inf, margin loss, n_queries. square.c */
int elle__square_perturb(elle__aa_model *am, const elle__aa_params *p, const float *x,
                         const int32_t *y, int64_t n, float *x_adv);

/* Square's schedule (spec §5.2 steps 2-3), exposed for tests: p at raw
 * iteration i_iter (resc_schedule = False; p_init as the Python double),
 * and the square side max(round_half_even(sqrt(p*c*h*w / c)), 1) capped at
 * min(h, w). */
double elle__square_p_selection(double p_init, int i_iter);
int64_t elle__square_side(double p, int64_t c, int64_t h, int64_t w);

/* What one Square run leaves behind, for tests (all fields written). */
typedef struct elle__square_trace {
    elle__mt19937 g;    /* the generator after the run (seeded with p->seed at its start) */
    int64_t iterations; /* loop iterations entered (each drew 2 + C numbers) */
    int early_return;   /* every initial margin was < 0 */
    float *x_best;      /* NULL, or (n, numel): attack_single_run's x_best for the points
                           attacked, x for the others */
    float *margin;      /* NULL, or (n): their margin_min; NAN for points not attacked */
} elle__square_trace;

/* elle__square_perturb, filling *trace when trace != NULL. */
int elle__square_perturb_traced(elle__aa_model *am, const elle__aa_params *p, const float *x,
                                const int32_t *y, int64_t n, float *x_adv,
                                elle__square_trace *trace);

/* The minimal-L-inf displacement of FAB (spec §4.3), for one point, in
 * float32 as the reference: d (numel) := argmin ||d||_inf subject to
 * <w, t+d> = b (the hyperplane, the reference's sign convention) and
 * t + d in [0,1]^d, or the reference's answer when the hyperplane is
 * unreachable in the box (the corner d_full). Host scratch of
 * elle__fab_projection_scratch_bytes(numel) bytes (8-byte aligned) from the
 * caller (no allocation). fab_projection.c */
void elle__fab_projection_linf(const float *t, const float *w, float b, int64_t numel,
                               float *d, void *scratch);
size_t elle__fab_projection_scratch_bytes(int64_t numel);

/* ---- APGD pieces, exposed for tests (apgd.c) -------------------------------------- */

/* The checkpoint schedule of one APGD run (spec §3.3): the first interval
 * n_iter_2 = max(int(0.22 n_iter), 1), then k := max(k - size_decr,
 * n_iter_min), all three truncated from double as the reference. */
typedef struct elle__apgd_schedule {
    int k, counter, size_decr, n_iter_min;
} elle__apgd_schedule;

void elle__apgd_schedule_init(elle__apgd_schedule *s, int n_iter);
/* Call after each iteration: the interval k (> 0) when a checkpoint fires
 * now (and the schedule moves to the next interval), else 0. */
int elle__apgd_schedule_step(elle__apgd_schedule *s);

/* Per-sample loss (float32, as the reference) and d loss / d logits (dz,
 * classes floats) for CE, DLR (classes >= 3) or targeted DLR (classes >= 4;
 * target t). */
float elle__aa_loss_grad(elle__aa_loss loss, const float *z, int64_t classes, int32_t y,
                         int32_t t, float *dz);

/* The random start: u := torch.rand(m, numel) from g (into u, m*numel
 * floats), tau = 2u - 1, x0 := clip_[0,1](x + eps * tau / (max|tau| +
 * 1e-12)) per sample. */
void elle__apgd_random_start(elle__mt19937 *g, const float *x, int64_t m, int64_t numel,
                             float eps, float *u, float *x0);

/* One APGD run (the reference's attack_single_run) on m points, random
 * start drawn from g: x_best (the highest-loss iterate), loss_best, acc (1
 * while no iterate misclassified the point) and x_best_adv (the latest
 * misclassifying iterate; x0 where none). target: m classes for targeted
 * DLR, else NULL. Any output but x_best may be NULL. */
int elle__apgd_run(elle__aa_model *am, const elle__aa_params *p, elle__aa_loss loss,
                   elle__mt19937 *g, const float *x, const int32_t *y, const int32_t *target,
                   int64_t m, float *x_best, float *loss_best, unsigned char *acc,
                   float *x_best_adv);

/* ---- the driver (autoattack.c) -------------------------------------------------------- */

typedef enum elle__aa_attack {
    ELLE__AA_APGD_CE = 0,
    ELLE__AA_APGD_T = 1,
    ELLE__AA_FAB_T = 2,
    ELLE__AA_SQUARE = 3,
    ELLE__AA_APGD_DLR = 4
} elle__aa_attack;

#define ELLE__AA_MAX_STAGES 8

typedef struct elle__aa_stage {
    elle__aa_attack attack;
    int64_t robust;  /* robust points after this attack (over all n) */
    double seconds;  /* wall time of this attack, 0 when it did not run */
    int ran;         /* 0 when no robust point was left to attack */
} elle__aa_stage;

typedef struct elle__aa_report {
    int64_t total, clean; /* points, and points classified correctly at x */
    double clean_seconds;
    int n_stages;
    elle__aa_stage stages[ELLE__AA_MAX_STAGES];
} elle__aa_report;

/* The reference's name of an attack ("apgd-ce", "apgd-t", "fab-t", "square",
 * "apgd-dlr"). */
const char *elle__aa_attack_name(elle__aa_attack a);

/* One attack's perturb(x, y) on one chunk (the component of `a`). */
int elle__aa_perturb(elle__aa_model *am, const elle__aa_params *p, elle__aa_attack a,
                     const float *x, const int32_t *y, int64_t n, float *x_adv);

/* run_standard_evaluation (spec §2.2) over n points with the attacks in
 * order: clean pass in chunks of bs, then each attack on the still-robust
 * indices, in increasing order, in chunks of bs, seeded with p->seed per
 * chunk; success judged by a fresh forward, every counted point checked to
 * lie in B(x). robust (n, may be NULL): 1 where no attack succeeded; x_adv
 * (n, numel, may be NULL): the adversarial point found, else x; y_adv (n,
 * may be NULL): the prediction there. 1 <= bs <= the model's reserved
 * batch. ELLE_ERROR when a component returns a misclassified point outside
 * B(x) (a bug, never counted). */
int elle__autoattack_run(elle__aa_model *am, const elle__aa_params *p,
                         const elle__aa_attack *attacks, int n_attacks, const float *x,
                         const int32_t *y, int64_t n, int64_t bs, unsigned char *robust,
                         float *x_adv, int32_t *y_adv, elle__aa_report *report);

#endif /* ELLE_ATTACKS_AUTOATTACK_INTERNAL_H */
