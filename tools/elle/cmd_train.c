/*
 * elle train: fit a model on a dataset with the paper's knobs.
 *
 *   elle train --dataset fashion-mnist --model small_cnn --epochs 1 --out out/run
 *
 * Writes into --out DIR: model.safetensors (final), best.safetensors (best
 * validation accuracy; with --val-size > 0), log.jsonl (JSON lines, one per
 * epoch, plus every --log-every steps) and summary.json (final figures).
 * Exit status: 0 success, 1 library error (message printed), 2 bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "args.h"
#include "cli.h"

#define MAX_TRAIN_PARAMS 32

static void help(void)
{
    printf("usage: elle train [options]\n"
           "\n"
           "Trains a model on a dataset and evaluates clean test accuracy every epoch.\n"
           "\n"
           "  --epochs N            epochs (default 1)\n"
           "  --batch N             training batch size (default 128)\n"
           "  --lr X                peak / initial learning rate (default: 0.2 for short,\n"
           "                        0.1 otherwise); fractions such as 1/5 are accepted\n"
           "  --schedule NAME       short (cyclic, default), long, long-cos, constant\n"
           "  --wd X                weight decay, coupled (default 5e-4)\n"
           "  --momentum X          SGD momentum (default 0.9)\n"
           "  --steps-per-batch N   1 (default) or 2 (the ELLE code's two optimizer steps)\n"
           "  --val-size N          training images held out for validation (default 1024;\n"
           "                        0 = none); the best-validation model is saved\n"
           "  --crop P              random crop with P pixels of zero padding (default 0;\n"
           "                        cifar10/cifar100: 4)\n"
           "  --flip 0|1            random horizontal flip (default 0; cifar: 1)\n"
           "  --out DIR             output directory (default out/train)\n"
           "  --log-every N         also log every N steps (default 0 = epochs only)\n"
           "  --train-param K=V     any trainer parameter by name (see docs/training.md);\n"
           "                        repeatable\n"
           "  --no-progress         no progress bar (it shows only on a terminal)\n"
           "%s",
           cli_common_help);
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0777) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(buf, 0777) && errno != EEXIST ? -1 : 0;
}

static double metric(const elle_train_metrics *m, elle_train_metric k)
{
    double v = -1;
    if (elle_train_metrics_has(m, k))
        elle_train_metrics_get(m, k, &v);
    return v;
}

/* One line per epoch on stdout. */
static int on_epoch(const elle_train_metrics *m, void *user_data)
{
    (void)user_data;
    printf("epoch %3.0f/%.0f  loss %.4f  lr %.4g", metric(m, ELLE_TRAIN_METRIC_EPOCH) + 1,
           metric(m, ELLE_TRAIN_METRIC_TOTAL_EPOCHS), metric(m, ELLE_TRAIN_METRIC_LOSS),
           metric(m, ELLE_TRAIN_METRIC_LR));
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_TRAIN_ACC))
        printf("  train %.2f%%", 100 * metric(m, ELLE_TRAIN_METRIC_TRAIN_ACC));
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_VAL_ACC))
        printf("  val %.2f%%", 100 * metric(m, ELLE_TRAIN_METRIC_VAL_ACC));
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_TEST_ACC))
        printf("  test %.2f%%", 100 * metric(m, ELLE_TRAIN_METRIC_TEST_ACC));
    printf("  %.1f s (%.0f img/s)\n", metric(m, ELLE_TRAIN_METRIC_TIME),
           metric(m, ELLE_TRAIN_METRIC_SAMPLES_PER_S));
    fflush(stdout);
    return 0;
}

static int set_tp(const char *cmd, elle_trainer *t, elle_train_param p, double v, const char *flag)
{
    int rc = elle_trainer_set_param(t, p, v);
    if (rc != ELLE_OK) {
        char what[96];
        snprintf(what, sizeof what, "--%s", flag);
        return cli_lib_error(cmd, what, rc);
    }
    return 0;
}

/* summary.json: the run's configuration and final figures, for scripts and make demo. */
static int write_summary(const char *path, const cli_common *c, const elle_trainer *t,
                         double seconds, int64_t params)
{
    const elle_train_metrics *m = elle_trainer_last_epoch(t);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "{\n  \"libelle_version\": \"%s\",\n  \"dataset\": \"%s\",\n  \"model\": \"%s\",\n"
               "  \"backend\": \"%s\",\n  \"num_params\": %lld,\n  \"wall_time_s\": %.3f",
            elle_version_string(), c->dataset, c->model, c->backend, (long long)params, seconds);
    static const elle_train_metric keys[] = {
        ELLE_TRAIN_METRIC_TOTAL_EPOCHS, ELLE_TRAIN_METRIC_TOTAL_STEPS, ELLE_TRAIN_METRIC_LOSS,
        ELLE_TRAIN_METRIC_TEST_ACC,     ELLE_TRAIN_METRIC_TEST_LOSS,   ELLE_TRAIN_METRIC_VAL_ACC,
        ELLE_TRAIN_METRIC_BEST_VAL_ACC, ELLE_TRAIN_METRIC_TIME,        ELLE_TRAIN_METRIC_SAMPLES_PER_S};
    for (size_t i = 0; m && i < sizeof keys / sizeof keys[0]; i++)
        if (elle_train_metrics_has(m, keys[i]))
            fprintf(f, ",\n  \"%s\": %.6g", elle_train_metric_name(keys[i]), metric(m, keys[i]));
    fprintf(f, "\n}\n");
    return fclose(f);
}

int cmd_train(int argc, char **argv)
{
    static const char *const flags[] = {"help", "no-progress", NULL};
    const char *cmd = "train";
    cli_common c;
    const char *out = "out/train";
    int64_t epochs = 1, batch = 128, val_size = 1024, crop = -1, flip = -1, steps_per_batch = 1,
            log_every = 0;
    double lr = -1, wd = 5e-4, momentum = -1;
    const char *schedule = "short";
    const char *train_params[MAX_TRAIN_PARAMS];
    int n_train_params = 0, progress = 1;
    args a;
    int r;
    cli_common_init(&c);
    args_init(&a, cmd, argc, argv, flags);
    while ((r = args_next(&a)) == 1) {
        int k = cli_common_option(cmd, &c, a.name, a.value ? a.value : "");
        if (k == 2)
            return 2;
        if (k == 1)
            continue;
        const char *v = a.value;
        if (strcmp(a.name, "help") == 0) {
            help();
            return 0;
        } else if (strcmp(a.name, "no-progress") == 0) {
            progress = 0;
        } else if (strcmp(a.name, "epochs") == 0) {
            if (cli_parse_int(v, 1, 1000000, &epochs))
                return cli_usage_error(cmd, "--epochs wants an integer in [1, 1e6], got '%s'", v);
        } else if (strcmp(a.name, "batch") == 0) {
            if (cli_parse_int(v, 1, 1 << 20, &batch))
                return cli_usage_error(cmd, "--batch wants an integer in [1, 2^20], got '%s'", v);
        } else if (strcmp(a.name, "lr") == 0) {
            if (cli_parse_double(v, &lr) || lr < 0)
                return cli_usage_error(cmd, "--lr wants a non-negative number, got '%s'", v);
        } else if (strcmp(a.name, "wd") == 0) {
            if (cli_parse_double(v, &wd) || wd < 0)
                return cli_usage_error(cmd, "--wd wants a non-negative number, got '%s'", v);
        } else if (strcmp(a.name, "momentum") == 0) {
            if (cli_parse_double(v, &momentum) || momentum < 0 || momentum > 1)
                return cli_usage_error(cmd, "--momentum wants a number in [0, 1], got '%s'", v);
        } else if (strcmp(a.name, "schedule") == 0) {
            elle_schedule_kind s;
            if (elle_schedule_kind_from_name(v, &s))
                return cli_usage_error(cmd, "--schedule wants short, long, long-cos or constant, "
                                            "got '%s'", v);
            schedule = v;
        } else if (strcmp(a.name, "steps-per-batch") == 0) {
            if (cli_parse_int(v, 1, 2, &steps_per_batch))
                return cli_usage_error(cmd, "--steps-per-batch wants 1 or 2, got '%s'", v);
        } else if (strcmp(a.name, "val-size") == 0) {
            if (cli_parse_int(v, 0, INT64_MAX, &val_size))
                return cli_usage_error(cmd, "--val-size wants a non-negative integer, got '%s'", v);
        } else if (strcmp(a.name, "crop") == 0) {
            if (cli_parse_int(v, 0, 64, &crop))
                return cli_usage_error(cmd, "--crop wants an integer in [0, 64], got '%s'", v);
        } else if (strcmp(a.name, "flip") == 0) {
            if (cli_parse_int(v, 0, 1, &flip))
                return cli_usage_error(cmd, "--flip wants 0 or 1, got '%s'", v);
        } else if (strcmp(a.name, "out") == 0) {
            out = v;
        } else if (strcmp(a.name, "log-every") == 0) {
            if (cli_parse_int(v, 0, 1000000000, &log_every))
                return cli_usage_error(cmd, "--log-every wants a non-negative integer, got '%s'", v);
        } else if (strcmp(a.name, "train-param") == 0) {
            if (!strchr(v, '=') || n_train_params == MAX_TRAIN_PARAMS)
                return cli_usage_error(cmd, "--train-param wants NAME=VALUE, got '%s'", v);
            train_params[n_train_params++] = v;
        } else {
            return cli_usage_error(cmd, "unknown option --%s", a.name);
        }
    }
    if (r)
        return r;

    elle_context *ctx = NULL;
    elle_dataset *train_all = NULL, *train = NULL, *val = NULL, *test = NULL;
    elle_model *m = NULL;
    elle_trainer *t = NULL;
    int code = 0, rc;
    char path[4200];

    if (mkdir_p(out)) {
        fprintf(stderr, "elle train: cannot create the output directory %s: %s\n", out,
                strerror(errno));
        return 1;
    }
    if ((code = cli_open_context(cmd, &c, &ctx)) ||
        (code = cli_open_dataset(cmd, &c, ELLE_SPLIT_TRAIN, &train_all)) ||
        (code = cli_open_dataset(cmd, &c, ELLE_SPLIT_TEST, &test)))
        goto done;
    if (val_size > 0) {
        if (val_size >= elle_dataset_size(train_all)) {
            code = cli_usage_error(cmd, "--val-size %lld leaves no training data (%lld images)",
                                   (long long)val_size, (long long)elle_dataset_size(train_all));
            goto done;
        }
        rc = elle_dataset_split(train_all, val_size, (uint64_t)c.seed, &train, &val);
        if (rc != ELLE_OK) {
            code = cli_lib_error(cmd, "validation split", rc);
            goto done;
        }
    } else {
        train = train_all;
        train_all = NULL;
    }
    /* augmentation: the paper's CIFAR recipe by default, none for 28x28 data and SVHN */
    int cifar = strncmp(c.dataset, "cifar", 5) == 0;
    if (crop < 0)
        crop = cifar ? 4 : 0;
    if (flip < 0)
        flip = cifar ? 1 : 0;
    if ((rc = elle_dataset_set_param(train, ELLE_DATASET_PARAM_CROP_PADDING, (double)crop)) ||
        (rc = elle_dataset_set_param(train, ELLE_DATASET_PARAM_FLIP, (double)flip))) {
        code = cli_lib_error(cmd, "augmentation", rc);
        goto done;
    }
    if ((code = cli_create_model(cmd, &c, ctx, train, &m)))
        goto done;
    if ((rc = elle_trainer_create(&t, m)) != ELLE_OK) {
        code = cli_lib_error(cmd, "trainer", rc);
        goto done;
    }
    elle_schedule_kind sk;
    elle_schedule_kind_from_name(schedule, &sk);
    if ((code = set_tp(cmd, t, ELLE_TRAIN_PARAM_EPOCHS, (double)epochs, "epochs")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_BATCH_SIZE, (double)batch, "batch")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_LR, lr, "lr")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_SCHEDULE, (double)sk, "schedule")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_WEIGHT_DECAY, wd, "wd")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_MOMENTUM, momentum, "momentum")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_STEPS_PER_BATCH, (double)steps_per_batch,
                       "steps-per-batch")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_SEED, (double)c.seed, "seed")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_LOG_EVERY, (double)log_every, "log-every")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_PROGRESS, progress, "no-progress")))
        goto done;
    for (int i = 0; i < n_train_params; i++) {
        char name[64];
        const char *eq = strchr(train_params[i], '=');
        double v;
        elle_train_param p;
        snprintf(name, sizeof name, "%.*s", (int)(eq - train_params[i]), train_params[i]);
        if (elle_trainer_param_from_name(name, &p)) {
            code = cli_usage_error(cmd, "unknown trainer parameter '%s'", name);
            goto done;
        }
        if (cli_parse_double(eq + 1, &v)) {
            code = cli_usage_error(cmd, "--train-param %s: '%s' is not a number", name, eq + 1);
            goto done;
        }
        if ((code = set_tp(cmd, t, p, v, "train-param")))
            goto done;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    elle_trainer_set_path(t, ELLE_TRAIN_PATH_FINAL_MODEL, path);
    if (val) {
        snprintf(path, sizeof path, "%s/best.safetensors", out);
        elle_trainer_set_path(t, ELLE_TRAIN_PATH_BEST_MODEL, path);
    }
    snprintf(path, sizeof path, "%s/log.jsonl", out);
    elle_trainer_set_path(t, ELLE_TRAIN_PATH_LOG, path);
    elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_EPOCH, on_epoch, NULL);

    printf("training %s (%lld parameters) on %s: %lld training, %lld validation, %lld test "
           "images; %lld epoch(s), batch %lld, schedule %s, backend %s\n",
           c.model, (long long)elle_model_num_params(m), c.dataset,
           (long long)elle_dataset_size(train), (long long)(val ? elle_dataset_size(val) : 0),
           (long long)elle_dataset_size(test), (long long)epochs, (long long)batch, schedule,
           c.backend);
    fflush(stdout);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = elle_trainer_fit(t, train, test, val);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != ELLE_OK) {
        code = cli_lib_error(cmd, "training stopped", rc);
        goto done;
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    snprintf(path, sizeof path, "%s/summary.json", out);
    if (write_summary(path, &c, t, secs, elle_model_num_params(m))) {
        fprintf(stderr, "elle train: cannot write %s\n", path);
        code = 1;
        goto done;
    }
    const elle_train_metrics *last = elle_trainer_last_epoch(t);
    printf("final test accuracy %.2f%%; wrote %s/{model.safetensors%s, log.jsonl, summary.json} "
           "in %.1f s\n",
           100 * metric(last, ELLE_TRAIN_METRIC_TEST_ACC), out, val ? ", best.safetensors" : "",
           secs);
done:
    elle_trainer_free(t);
    elle_model_free(m);
    elle_dataset_free(val);
    elle_dataset_free(train);
    elle_dataset_free(train_all);
    elle_dataset_free(test);
    elle_context_free(ctx);
    return code;
}
