/*
 * The adaptive regularization strength of ELLE-A (Algorithm 1, teal lines;
 * spec/algorithms.md §2), as a mechanism of its own: any regularizer that
 * reports an error value per step can use it (the reference LLR and CURE
 * scripts run it on their own values).
 *
 * State: a history of observed values and the current lambda. One
 * observation of a value E:
 *
 *     if count > 2 and E > mean(H) + sensitivity * std(H):   lambda <- lambda_max
 *     else:                                                 lambda <- decay * lambda
 *     append E
 *
 * where H is the last `window` values of the history (all when window is 0;
 * the "more than 2" test counts the whole history, as the ImageNet code),
 * mean and std are the population statistics (numpy's default ddof = 0),
 * and E itself is not in H when it is tested. Before the first observation
 * lambda is lambda_start. The rule always runs, so the statistics and the
 * detection count are kept in constant-lambda mode too; `enabled` only
 * selects which lambda elle__adaptive_lambda reports.
 *
 * When the update happens relative to a step's backward (the reference's
 * one-step lag) is the caller's business; lib/regularizers/regularizer.c
 * does it in one place for every kind.
 */
#ifndef ELLE_REGULARIZERS_ADAPTIVE_H
#define ELLE_REGULARIZERS_ADAPTIVE_H

#include <stddef.h>
#include <stdint.h>

typedef struct elle__adaptive {
    /* parameters (set directly by the owner; read at each observation) */
    int enabled;         /* 1: elle__adaptive_lambda reports the adaptive lambda */
    double lambda_const; /* reported when !enabled */
    double lambda_max, decay, sensitivity, lambda_start;
    int64_t window;      /* 0 = whole history */

    /* state */
    double lambda;       /* adaptive lambda after the last observation */
    double *hist;        /* every observed value, oldest first */
    int64_t count, cap;
    int64_t detections;  /* observations that exceeded the threshold */
} elle__adaptive;

/* Parameters at ELLE-A's defaults (lambda_max 4000, decay 0.99,
 * sensitivity 2, window 0, lambda_start 0, disabled, lambda_const 0) and an
 * empty history. Allocates nothing. */
void elle__adaptive_init(elle__adaptive *a);
/* Free the history. */
void elle__adaptive_release(elle__adaptive *a);
/* Empty the history (lambda back to lambda_start); keeps the parameters and
 * the allocation. */
void elle__adaptive_reset(elle__adaptive *a);

/* The lambda to use now: lambda_const when disabled; otherwise the adaptive
 * lambda (lambda_start while the history is empty). */
double elle__adaptive_lambda(const elle__adaptive *a);
/* The adaptive lambda whether enabled or not. */
double elle__adaptive_lambda_adaptive(const elle__adaptive *a);

/* Apply the rule to `value` and append it. ELLE_EINVAL for a non-finite
 * value, ELLE_ENOMEM when the history cannot grow (state unchanged then).
 * *detected (may be NULL) is set to 1 when the value exceeded the
 * threshold. */
int elle__adaptive_observe(elle__adaptive *a, double value, int *detected);

/* Population mean and std of the values the next observation is tested
 * against (the last `window`; 0 and 0 when empty). */
void elle__adaptive_stats(const elle__adaptive *a, double *mean, double *std);

/* Serialized state: lambda, detections, count, then the history, as
 * little-endian binary64 / uint64 (elle__adaptive_state_bytes bytes). */
size_t elle__adaptive_state_bytes(const elle__adaptive *a);
void elle__adaptive_state_write(const elle__adaptive *a, unsigned char *out);
/* Check and load a state of `size` bytes: ELLE_EFORMAT when the size does
 * not match the stored count or a value is not finite (or lambda < 0),
 * ELLE_ENOMEM; `a` is unchanged on failure. */
int elle__adaptive_state_read(elle__adaptive *a, const unsigned char *in, size_t size,
                              const char *who);

/* Little-endian helpers shared with regularizer.c's state format. */
void elle__reg_put_u64(unsigned char *p, uint64_t v);
uint64_t elle__reg_get_u64(const unsigned char *p);
void elle__reg_put_f64(unsigned char *p, double v);
double elle__reg_get_f64(const unsigned char *p);

#endif /* ELLE_REGULARIZERS_ADAPTIVE_H */
