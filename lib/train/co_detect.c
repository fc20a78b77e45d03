/*
 * Catastrophic-overfitting (CO) detection rules of the trainer: pure
 * functions of the numbers the trainer already has, kept apart from the loop
 * so the tests can feed them hand-made sequences. None of the reference
 * codes automates this (spec/reference-implementations.md §5.7: CO is read
 * off the PGD curves by eye); docs/training.md states the rules.
 *
 * Epoch rule (co_flag): CO shows as robust accuracy collapsing while the
 * accuracy against the (single-step) training attack climbs — the model
 * learns to defeat its training attack, not to be robust. An epoch is
 * flagged when its PGD accuracy is below (1 - drop) times the best PGD
 * accuracy of the earlier epochs AND its training accuracy is above the
 * training accuracy of that best epoch. A drop with falling training
 * accuracy (e.g. a diverging run) is not flagged.
 *
 * Step rule (elin_alarms): the ELLE-A test, E_t > mean + k * std of the
 * earlier values when more than two exist — a sudden rise of the local
 * linearity error, which the paper ties to the onset of CO.
 */
#include "train/train_internal.h"

void elle__co_init(elle__co_state *s)
{
    s->best_pgd = -1.0;
    s->train_at_best = 0.0;
    s->best_epoch = -1;
}

int elle__co_epoch(elle__co_state *s, int64_t epoch, double pgd_acc, double train_acc,
                   double drop)
{
    int flag = 0;
    if (s->best_epoch >= 0 && pgd_acc < (1.0 - drop) * s->best_pgd &&
        train_acc > s->train_at_best)
        flag = 1;
    if (s->best_epoch < 0 || pgd_acc > s->best_pgd) {
        s->best_pgd = pgd_acc;
        s->train_at_best = train_acc;
        s->best_epoch = epoch;
    }
    return flag;
}

int elle__co_elin_alarm(int64_t count, double mean, double std, double value, double k)
{
    return count > 2 && value > mean + k * std;
}
