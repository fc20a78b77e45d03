/*
 * Internals of the trainer handle shared by the lib/train sources: the trainer and
 * metrics structs, the metrics record helpers (metrics.c) and the progress
 * bar (progress.c). Nothing here is exported.
 */
#ifndef ELLE_TRAIN_INTERNAL_H
#define ELLE_TRAIN_INTERNAL_H

#include <stdint.h>

#include <jansson.h>

#include "elle/train.h"

#define ELLE__TRAIN_N_PARAMS 23  /* elle_train_param ids 1 .. 22 */
#define ELLE__TRAIN_N_METRICS 34 /* elle_train_metric ids 1 .. 33 (a bit each in `has`) */
#define ELLE__TRAIN_N_PATHS 4    /* elle_train_path ids 1 .. 3 */
#define ELLE__TRAIN_N_EVENTS 3   /* elle_train_event ids 1 .. 2 */

/* One record of metrics: the values present this event, by metric id. */
struct elle_train_metrics {
    int event;     /* elle_train_event */
    uint64_t has;  /* bit k set: value[k] holds metric k */
    double value[ELLE__TRAIN_N_METRICS];
};

struct elle_trainer {
    elle_model *model;                 /* borrowed */
    elle_optimizer *opt;               /* owned: SGD, its buffer allocated once */
    double p[ELLE__TRAIN_N_PARAMS];    /* by elle_train_param id; -1 = auto where allowed */
    char *path[ELLE__TRAIN_N_PATHS];   /* by elle_train_path id; NULL = not written */
    elle_train_callback cb[ELLE__TRAIN_N_EVENTS];
    void *cb_data[ELLE__TRAIN_N_EVENTS];
    elle_train_metrics last_epoch;     /* event 0 until an epoch completed */
    elle_attack *attack;               /* borrowed; NULL = clean training */
    elle_attack *monitor;              /* borrowed; NULL = the fit builds its PGD-20 */
    elle_regularizer **regs;           /* borrowed, in the order added */
    int n_regs, cap_regs;
};

/* ---- co_detect.c: catastrophic-overfitting rules (pure, tested directly) ---- */

/* Running state of the epoch-level rule: the best PGD accuracy so far and the
 * training accuracy of that epoch. Start with elle__co_init. */
typedef struct elle__co_state {
    double best_pgd;        /* -1 before the first epoch */
    double train_at_best;   /* training accuracy of the best epoch */
    int64_t best_epoch;     /* -1 before the first epoch */
} elle__co_state;

void elle__co_init(elle__co_state *s);
/* Feed one epoch's PGD accuracy and training accuracy (against the training
 * attack); returns the epoch's flag: 1 when pgd_acc < (1 - drop) * best (the
 * best of the EARLIER epochs) and train_acc > the training accuracy of that
 * best epoch, else 0. Then the best is updated (a strictly higher pgd_acc
 * becomes the new best; the first epoch always does). */
int elle__co_epoch(elle__co_state *s, int64_t epoch, double pgd_acc, double train_acc,
                   double drop);
/* The E_lin alarm of one step: 1 when the history held more than 2 values
 * (count, before this one) and value > mean + k * std of them, else 0 —
 * the ELLE-A detection test with sensitivity k. */
int elle__co_elin_alarm(int64_t count, double mean, double std, double value, double k);

/* ---- metrics.c -------------------------------------------------------------- */

/* Empty record for `event`. */
void elle__metrics_clear(elle_train_metrics *m, elle_train_event event);
/* Store `value` under `key` (1 <= key < ELLE__TRAIN_N_METRICS). */
void elle__metrics_set(elle_train_metrics *m, elle_train_metric key, double value);
/* {"event": "step"|"epoch", <name>: <value>, ...} in metric-id order;
 * counts as integers, non-finite values as null. NULL when out of memory. */
json_t *elle__metrics_json(const elle_train_metrics *m);
/* Static name of an event ("step", "epoch"), NULL if unknown. */
const char *elle__train_event_name(int event);

/* ---- progress.c --------------------------------------------------------------- */

/* A one-line progress bar on stderr, redrawn in place with '\r'. Draws
 * nothing unless enabled and stderr is a terminal. */
typedef struct elle__progress {
    int on;
    int64_t epoch, epochs, total;
    int64_t last_cells;
    double last_time;
} elle__progress;

void elle__progress_start(elle__progress *pb, int enabled, int64_t epoch, int64_t epochs,
                          int64_t total_batches);
/* After batch `done` (1-based) of the epoch. */
void elle__progress_step(elle__progress *pb, int64_t done, double loss, double lr);
/* End the line with the epoch's evaluation results. */
void elle__progress_finish(elle__progress *pb, const elle_train_metrics *epoch_metrics);

#endif /* ELLE_TRAIN_INTERNAL_H */
