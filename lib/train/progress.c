/*
 * The trainer's progress bar: one line on stderr, redrawn in place, only
 * when the user asked for it (ELLE_TRAIN_PARAM_PROGRESS) and stderr is a
 * terminal, so logs and pipes never receive control characters. The library
 * prints nothing otherwise.
 *
 *   epoch   3/30 [##########..........]    120/383  loss    1.2345  lr 0.01234
 */
#include <math.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "train/train_internal.h"

#define BAR_CELLS 24

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void elle__progress_start(elle__progress *pb, int enabled, int64_t epoch, int64_t epochs,
                          int64_t total_batches)
{
    pb->on = enabled && isatty(STDERR_FILENO);
    pb->epoch = epoch;
    pb->epochs = epochs;
    pb->total = total_batches > 0 ? total_batches : 1;
    pb->last_cells = -1;
    pb->last_time = 0.0;
}

void elle__progress_step(elle__progress *pb, int64_t done, double loss, double lr)
{
    if (!pb->on)
        return;
    int64_t cells = done * BAR_CELLS / pb->total;
    double t = now_s();
    /* redraw when the bar grows, at most ~10 times a second otherwise */
    if (cells == pb->last_cells && t - pb->last_time < 0.1 && done != pb->total)
        return;
    pb->last_cells = cells;
    pb->last_time = t;
    char bar[BAR_CELLS + 1];
    for (int i = 0; i < BAR_CELLS; i++)
        bar[i] = i < cells ? '#' : '.';
    bar[BAR_CELLS] = '\0';
    /* fixed widths: a shorter line must cover the previous one */
    fprintf(stderr, "\repoch %3lld/%lld [%s] %6lld/%lld  loss %9.4f  lr %-11.5g",
            (long long)pb->epoch + 1, (long long)pb->epochs, bar, (long long)done,
            (long long)pb->total, loss, lr);
    fflush(stderr);
}

void elle__progress_finish(elle__progress *pb, const elle_train_metrics *m)
{
    if (!pb->on)
        return;
    double v;
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_TEST_ACC) &&
        elle_train_metrics_get(m, ELLE_TRAIN_METRIC_TEST_ACC, &v) == 0)
        fprintf(stderr, " test_acc %.4f", v);
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_PGD_TEST_ACC) &&
        elle_train_metrics_get(m, ELLE_TRAIN_METRIC_PGD_TEST_ACC, &v) == 0)
        fprintf(stderr, " pgd_test_acc %.4f", v);
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_VAL_ACC) &&
        elle_train_metrics_get(m, ELLE_TRAIN_METRIC_VAL_ACC, &v) == 0)
        fprintf(stderr, " val_acc %.4f", v);
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_PGD_VAL_ACC) &&
        elle_train_metrics_get(m, ELLE_TRAIN_METRIC_PGD_VAL_ACC, &v) == 0)
        fprintf(stderr, " pgd_val_acc %.4f", v);
    fputc('\n', stderr);
    fflush(stderr);
}
