/*
 * elle train: fit a model on a dataset with the paper's knobs.
 *
 *   elle train --dataset fashion-mnist --model small_cnn --epochs 1 --out out/run
 *   elle train --method elle-a --eps 8/255 --epochs 3 --out out/elle-a
 *   elle train --method n-fgsm+elle-a --preset paper --dataset cifar10 --data DIR
 *
 * --method composes one training attack and any regularizers (docs/cli.md):
 * "plain", an attack ("fgsm", "rs-fgsm", "n-fgsm", "pgd-K"), and "+elle" /
 * "+elle-a" / "+gradalign" / "+llr" / "+cure" / "+gat" terms; a regularizer
 * alone means FGSM plus that regularizer, as in the reference scripts,
 * except that "gat" (and "gat+elle", ...) brings GAT's own guided attack.
 *
 * Writes into --out DIR: model.safetensors (final), best.safetensors (best
 * validation accuracy — PGD when the monitor runs; with --val-size > 0),
 * log.jsonl (JSON lines, one per epoch, plus every --log-every steps) and
 * summary.json (final figures).
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
#define MAX_KV 32
#define MAX_REGS 4

/* What --method asks for. */
typedef struct method {
    const char *name;
    int has_attack;
    elle_attack_kind kind;
    int64_t steps;                 /* pgd-K */
    int n_regs;
    elle_regularizer_kind reg[MAX_REGS]; /* per regularizer: its kind */
    int adaptive[MAX_REGS];        /* and ELLE-A's lambda (elle-a; llr and cure: as their
                                      reference scripts) or a constant one */
} method;

/* "plain" | ATTACK ["+" REG]... | REG ["+" REG]... (attack implied) | "plain+" REG...
 * ATTACK: fgsm, rs-fgsm, n-fgsm, pgd-K; REG: elle, elle-a, gradalign, llr,
 * cure, gat. The implied attack is GAT's guided attack when gat is among
 * the terms, FGSM otherwise. 0 ok, -1 bad. */
static int parse_method(const char *s, method *m)
{
    char buf[128];
    memset(m, 0, sizeof *m);
    m->name = s;
    if (strlen(s) >= sizeof buf || !*s)
        return -1;
    strcpy(buf, s);
    int explicit_plain = 0, first = 1;
    for (char *tok = buf, *next; tok; tok = next, first = 0) {
        next = strchr(tok, '+');
        if (next)
            *next++ = '\0';
        int64_t restarts;
        static const struct {
            const char *name;
            elle_regularizer_kind kind;
            int adaptive;
        } regs[] = {{"elle", ELLE_REGULARIZER_ELLE, 0},
                    {"elle-a", ELLE_REGULARIZER_ELLE, 1},
                    {"gradalign", ELLE_REGULARIZER_GRADALIGN, 0},
                    {"llr", ELLE_REGULARIZER_LLR, 1},
                    {"cure", ELLE_REGULARIZER_CURE, 1},
                    {"gat", ELLE_REGULARIZER_GAT, 0}};
        int found = -1;
        for (int k = 0; k < (int)(sizeof regs / sizeof regs[0]); k++)
            if (strcmp(tok, regs[k].name) == 0)
                found = k;
        if (found >= 0) {
            if (m->n_regs == MAX_REGS)
                return -1;
            m->reg[m->n_regs] = regs[found].kind;
            m->adaptive[m->n_regs++] = regs[found].adaptive;
        } else if (first && strcmp(tok, "plain") == 0) {
            explicit_plain = 1;
        } else if (first && cli_parse_attack(tok, &m->kind, &m->steps, &restarts) == 0 &&
                   restarts == 0) {
            m->has_attack = 1;
        } else {
            return -1;
        }
    }
    /* "elle", "elle-a", "gradalign", "llr", "cure": FGSM + the regularizer
     * (the paper's methods and the reference scripts' baselines). "gat":
     * GAT = its guided attack + its output-distance term; "gat+elle" adds
     * ELLE, the reference's GAT + ELLE */
    if (!m->has_attack && !explicit_plain && m->n_regs > 0) {
        m->has_attack = 1;
        m->kind = ELLE_ATTACK_FGSM;
        for (int i = 0; i < m->n_regs; i++)
            if (m->reg[i] == ELLE_REGULARIZER_GAT)
                m->kind = ELLE_ATTACK_GAT;
    }
    return 0;
}

static void help(void)
{
    printf("usage: elle train [options]\n"
           "\n"
           "Trains a model on a dataset, clean or adversarially, and evaluates clean and\n"
           "PGD-20 test accuracy every epoch.\n"
           "\n"
           "  --method NAME         plain (default), fgsm, rs-fgsm, n-fgsm, pgd-K (e.g. pgd-10),\n"
           "                        elle, elle-a, gradalign, llr, cure (FGSM + the regularizer;\n"
           "                        llr and cure with ELLE-A's adaptive lambda, as their\n"
           "                        reference scripts), gat, gat+elle (GAT's guided attack +\n"
           "                        its output-distance term [+ ELLE]), or a composition\n"
           "                        ATTACK+REG..., e.g. n-fgsm+elle-a, pgd-10+elle, fgsm+gat\n"
           "  --eps X               L-inf radius in [0, 1] of the attack, the regularizers and\n"
           "                        the PGD-20 monitor (default 8/255); fractions accepted\n"
           "  --alpha X             attack step (default: the kind's: fgsm, n-fgsm, gat eps;\n"
           "                        rs-fgsm 1.25 eps; pgd-K eps/4)\n"
           "  --lambda X            strength of the constant-lambda terms (default by eps:\n"
           "                        elle 1000 up to 8/255, 5000 up to 20/255, 10000 above;\n"
           "                        gradalign 0.02*10^(eps*255/8), at most 2; gat 10)\n"
           "  --lambda-max X        strength of the adaptive terms after a detection (default:\n"
           "                        elle-a 4000; llr, cure by eps as their scripts)\n"
           "  --attack-param K=V    any attack parameter by name (clamp_image, noise_mult,\n"
           "                        seed, ...); repeatable\n"
           "  --reg-param K=V       any regularizer parameter by name (sensitivity, decay,\n"
           "                        window, points, error, variant, per_sample, ...), for\n"
           "                        every regularizer that has it; repeatable\n"
           "  --pgd-test-n N        PGD-20 monitor (alpha = eps/8) on the first N test images\n"
           "                        every epoch (default 1000; 0 = off)\n"
           "  --pgd-val 0|1         PGD-20 monitor on the validation set, which then picks\n"
           "                        best.safetensors (default 1)\n"
           "  --preset paper        the reference code's settings: 30 epochs, short schedule\n"
           "                        with momentum cycling, lr 0.2, two optimizer steps per\n"
           "                        batch, extra clean forward, no image clamp, lambda by eps,\n"
           "                        ELLE-A lambda_max 4000, PGD-20 on the whole test set;\n"
           "                        explicit flags override it\n"
           "  --epochs N            epochs (default 1)\n"
           "  --batch N             training batch size (default 128)\n"
           "  --lr X                peak / initial learning rate (default: 0.2 for short,\n"
           "                        0.1 otherwise); fractions such as 1/5 are accepted\n"
           "  --schedule NAME       short (cyclic, default), long, long-cos, constant\n"
           "  --wd X                weight decay, coupled (default 5e-4)\n"
           "  --momentum X          SGD momentum (default 0.9)\n"
           "  --steps-per-batch N   1 (default) or 2 (the ELLE code's two optimizer steps)\n"
           "  --train-n N           train on N images drawn at random (seeded) from what\n"
           "                        the validation split leaves (default 0 = all of them)\n"
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

/* What on_epoch needs besides the metrics. */
typedef struct epoch_printer {
    int co_epochs;         /* epochs flagged so far */
    const char *reg_label; /* what the first regularizer's value is called */
} epoch_printer;

/* The name of a regularizer's value R on the epoch line: E_lin for ELLE,
 * the kind's name for the others (GradAlign's 1 - cos, LLR's gamma term,
 * CURE's curvature, GAT's output distance). */
static const char *reg_value_label(elle_regularizer_kind kind)
{
    if (kind == ELLE_REGULARIZER_ELLE)
        return "E_lin";
    const char *name = elle_regularizer_kind_name(kind);
    return name ? name : "R";
}

/* One line per epoch on stdout; counts the CO-flagged epochs. */
static int on_epoch(const elle_train_metrics *m, void *user_data)
{
    epoch_printer *pr = user_data;
    printf("epoch %3.0f/%.0f  loss %.4f  lr %.4g", metric(m, ELLE_TRAIN_METRIC_EPOCH) + 1,
           metric(m, ELLE_TRAIN_METRIC_TOTAL_EPOCHS), metric(m, ELLE_TRAIN_METRIC_LOSS),
           metric(m, ELLE_TRAIN_METRIC_LR));
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_TRAIN_ACC))
        printf("  train %.2f%%", 100 * metric(m, ELLE_TRAIN_METRIC_TRAIN_ACC));
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_VAL_ACC))
        printf("  val %.2f%%", 100 * metric(m, ELLE_TRAIN_METRIC_VAL_ACC));
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_PGD_VAL_ACC))
        printf(" (pgd %.2f%%)", 100 * metric(m, ELLE_TRAIN_METRIC_PGD_VAL_ACC));
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_TEST_ACC))
        printf("  test %.2f%%", 100 * metric(m, ELLE_TRAIN_METRIC_TEST_ACC));
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_PGD_TEST_ACC))
        printf(" (pgd %.2f%%)", 100 * metric(m, ELLE_TRAIN_METRIC_PGD_TEST_ACC));
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_REG_VALUE))
        printf("  %s %.3g  lambda %.4g..%.4g  resets %.0f", pr->reg_label,
               metric(m, ELLE_TRAIN_METRIC_REG_VALUE), metric(m, ELLE_TRAIN_METRIC_LAMBDA_MIN),
               metric(m, ELLE_TRAIN_METRIC_LAMBDA_MAX), metric(m, ELLE_TRAIN_METRIC_LAMBDA_RESETS));
    printf("  %.1f s (%.0f img/s)", metric(m, ELLE_TRAIN_METRIC_TIME),
           metric(m, ELLE_TRAIN_METRIC_SAMPLES_PER_S));
    if (metric(m, ELLE_TRAIN_METRIC_CO_FLAG) == 1) {
        printf("  [CO?]");
        pr->co_epochs++;
    }
    printf("\n");
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
                         const char *method_name, double eps, int paper, int co_epochs,
                         double seconds, int64_t params)
{
    const elle_train_metrics *m = elle_trainer_last_epoch(t);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "{\n  \"libelle_version\": \"%s\",\n  \"dataset\": \"%s\",\n  \"model\": \"%s\",\n"
               "  \"backend\": \"%s\",\n  \"num_params\": %lld,\n  \"method\": \"%s\",\n"
               "  \"eps\": %.9g,\n  \"preset\": %s,\n  \"co_epochs\": %d,\n  \"wall_time_s\": %.3f",
            elle_version_string(), c->dataset, c->model, c->backend, (long long)params,
            method_name, eps, paper ? "\"paper\"" : "null", co_epochs, seconds);
    static const elle_train_metric keys[] = {
        ELLE_TRAIN_METRIC_TOTAL_EPOCHS, ELLE_TRAIN_METRIC_TOTAL_STEPS,
        ELLE_TRAIN_METRIC_LOSS,         ELLE_TRAIN_METRIC_TRAIN_ACC,
        ELLE_TRAIN_METRIC_CLEAN_TRAIN_ACC, ELLE_TRAIN_METRIC_TEST_ACC,
        ELLE_TRAIN_METRIC_TEST_LOSS,    ELLE_TRAIN_METRIC_PGD_TEST_ACC,
        ELLE_TRAIN_METRIC_VAL_ACC,      ELLE_TRAIN_METRIC_PGD_VAL_ACC,
        ELLE_TRAIN_METRIC_BEST_VAL_ACC, ELLE_TRAIN_METRIC_BEST_VAL_EPOCH,
        ELLE_TRAIN_METRIC_REG_VALUE,    ELLE_TRAIN_METRIC_LAMBDA,
        ELLE_TRAIN_METRIC_LAMBDA_MEAN,  ELLE_TRAIN_METRIC_LAMBDA_RESETS,
        ELLE_TRAIN_METRIC_CO_FLAG,      ELLE_TRAIN_METRIC_TIME,
        ELLE_TRAIN_METRIC_SAMPLES_PER_S};
    for (size_t i = 0; m && i < sizeof keys / sizeof keys[0]; i++)
        if (elle_train_metrics_has(m, keys[i]))
            fprintf(f, ",\n  \"%s\": %.6g", elle_train_metric_name(keys[i]), metric(m, keys[i]));
    fprintf(f, "\n}\n");
    return fclose(f);
}

/* Whether regularizers of `kind` have parameter p. */
static int reg_has(elle_regularizer_kind kind, elle_regularizer_param p)
{
    return elle_regularizer_param_bounds(kind, p, NULL, NULL) == ELLE_OK;
}

/* Check "NAME=VALUE" against the parameters of the method's regularizers. */
static int check_reg_param(const char *cmd, const method *meth, const char *kv)
{
    char name[64];
    double v, lo = 0, hi = 0;
    elle_regularizer_param p;
    if (cli_parse_kv(kv, name, sizeof name, &v))
        return cli_usage_error(cmd, "--reg-param wants NAME=NUMBER, got '%s'", kv);
    int known = elle_regularizer_param_from_name(name, &p) == ELLE_OK, has = 0;
    for (int i = 0; known && i < meth->n_regs && !has; i++)
        has = elle_regularizer_param_bounds(meth->reg[i], p, &lo, &hi) == ELLE_OK;
    if (!has)
        return cli_usage_error(cmd, "--reg-param: %s regularizer parameter '%s' (lambda, "
                                    "eps, adaptive, lambda_max, decay, sensitivity, window, "
                                    "lambda_start, points, reuse_adv, error, seed, clamp_image, "
                                    "lambda_lag, variant, per_sample; docs/regularizers.md says "
                                    "which kind has which)",
                               known ? "no regularizer of the method has the" : "unknown", name);
    if (v < lo || v > hi)
        return cli_usage_error(cmd, "--reg-param: regularizer parameter '%s' = %g outside "
                                    "[%g, %g]",
                               name, v, lo, hi);
    return 0;
}

/* Set a regularizer parameter; a value it refuses is a usage error (2). */
static int set_rp(const char *cmd, elle_regularizer *r, elle_regularizer_param p, double v,
                  const char *flag)
{
    if (elle_regularizer_set_param(r, p, v) != ELLE_OK)
        return cli_usage_error(cmd, "--%s: %s", flag, elle_error_last()->message);
    return 0;
}

int cmd_train(int argc, char **argv)
{
    static const char *const flags[] = {"help", "no-progress", NULL};
    const char *cmd = "train";
    cli_common c;
    const char *out = "out/train";
    int64_t epochs = 1, batch = 128, val_size = 1024, train_n = 0, crop = -1, flip = -1, steps_per_batch = 1,
            log_every = 0, pgd_test_n = 1000, pgd_val = 1;
    double lr = -1, wd = 5e-4, momentum = -1, eps = 8.0 / 255, alpha = -1, lambda = -1,
           lambda_max = -1;
    const char *schedule = "short";
    const char *train_params[MAX_TRAIN_PARAMS], *attack_params[MAX_KV], *reg_params[MAX_KV];
    int n_train_params = 0, n_attack_params = 0, n_reg_params = 0, progress = 1, paper = 0;
    /* which flags were given: they win over --preset paper */
    int set_epochs = 0, set_lr = 0, set_schedule = 0, set_spb = 0, set_pgd_test_n = 0,
        set_eps = 0;
    method meth;
    parse_method("plain", &meth);
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
        } else if (strcmp(a.name, "method") == 0) {
            if (parse_method(v, &meth))
                return cli_usage_error(cmd, "--method wants plain, fgsm, rs-fgsm, n-fgsm, pgd-K, "
                                            "elle, elle-a, gradalign, llr, cure, gat, gat+elle or "
                                            "ATTACK+REG (e.g. n-fgsm+elle-a, fgsm+gat), got '%s'",
                                       v);
        } else if (strcmp(a.name, "preset") == 0) {
            if (strcmp(v, "paper") != 0)
                return cli_usage_error(cmd, "--preset wants paper, got '%s'", v);
            paper = 1;
        } else if (strcmp(a.name, "eps") == 0) {
            if (cli_parse_double(v, &eps) || eps < 0 || eps > 1)
                return cli_usage_error(cmd, "--eps wants a number in [0, 1] (e.g. 8/255), "
                                            "got '%s'", v);
            set_eps = 1;
        } else if (strcmp(a.name, "alpha") == 0) {
            if (cli_parse_double(v, &alpha) || alpha <= 0 || alpha > 1)
                return cli_usage_error(cmd, "--alpha wants a number in (0, 1] (e.g. 2/255), "
                                            "got '%s'", v);
        } else if (strcmp(a.name, "lambda") == 0) {
            if (cli_parse_double(v, &lambda) || lambda < 0 || lambda > 1e12)
                return cli_usage_error(cmd, "--lambda wants a number in [0, 1e12], got '%s'", v);
        } else if (strcmp(a.name, "lambda-max") == 0) {
            if (cli_parse_double(v, &lambda_max) || lambda_max < 0 || lambda_max > 1e12)
                return cli_usage_error(cmd, "--lambda-max wants a number in [0, 1e12], got '%s'",
                                       v);
        } else if (strcmp(a.name, "pgd-test-n") == 0) {
            if (cli_parse_int(v, 0, 2147483647, &pgd_test_n))
                return cli_usage_error(cmd, "--pgd-test-n wants a non-negative integer, got '%s'",
                                       v);
            set_pgd_test_n = 1;
        } else if (strcmp(a.name, "pgd-val") == 0) {
            if (cli_parse_int(v, 0, 1, &pgd_val))
                return cli_usage_error(cmd, "--pgd-val wants 0 or 1, got '%s'", v);
        } else if (strcmp(a.name, "attack-param") == 0) {
            if (n_attack_params == MAX_KV)
                return cli_usage_error(cmd, "too many --attack-param options");
            if (cli_check_attack_param(cmd, "attack-param", v))
                return 2;
            attack_params[n_attack_params++] = v;
        } else if (strcmp(a.name, "reg-param") == 0) {
            if (n_reg_params == MAX_KV)
                return cli_usage_error(cmd, "too many --reg-param options");
            reg_params[n_reg_params++] = v; /* checked once --method is known */
        } else if (strcmp(a.name, "epochs") == 0) {
            if (cli_parse_int(v, 1, 1000000, &epochs))
                return cli_usage_error(cmd, "--epochs wants an integer in [1, 1e6], got '%s'", v);
            set_epochs = 1;
        } else if (strcmp(a.name, "batch") == 0) {
            if (cli_parse_int(v, 1, 1 << 20, &batch))
                return cli_usage_error(cmd, "--batch wants an integer in [1, 2^20], got '%s'", v);
        } else if (strcmp(a.name, "lr") == 0) {
            if (cli_parse_double(v, &lr) || lr < 0)
                return cli_usage_error(cmd, "--lr wants a non-negative number, got '%s'", v);
            set_lr = 1;
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
            set_schedule = 1;
        } else if (strcmp(a.name, "steps-per-batch") == 0) {
            if (cli_parse_int(v, 1, 2, &steps_per_batch))
                return cli_usage_error(cmd, "--steps-per-batch wants 1 or 2, got '%s'", v);
            set_spb = 1;
        } else if (strcmp(a.name, "train-n") == 0) {
            if (cli_parse_int(v, 0, INT64_MAX, &train_n))
                return cli_usage_error(cmd, "--train-n wants a non-negative integer, got '%s'", v);
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

    for (int i = 0; i < n_reg_params; i++)
        if (n_reg_params && meth.n_regs && check_reg_param(cmd, &meth, reg_params[i]))
            return 2;

    /* flags that the method does not use are mistakes, not silently ignored */
    int n_const = 0, n_adaptive = 0;
    for (int i = 0; i < meth.n_regs; i++)
        meth.adaptive[i] ? n_adaptive++ : n_const++;
    if (!meth.has_attack && (alpha > 0 || n_attack_params))
        return cli_usage_error(cmd, "--%s needs a method with an attack ('%s' has none)",
                               alpha > 0 ? "alpha" : "attack-param", meth.name);
    if (lambda >= 0 && n_const == 0)
        return cli_usage_error(cmd, "--lambda sets a constant strength; method '%s' has no "
                                    "constant-lambda term such as 'elle' (adaptive terms: "
                                    "--lambda-max)", meth.name);
    if (lambda_max >= 0 && n_adaptive == 0)
        return cli_usage_error(cmd, "--lambda-max sets an adaptive strength; method '%s' has no "
                                    "adaptive term such as 'elle-a'", meth.name);
    if (n_reg_params && meth.n_regs == 0)
        return cli_usage_error(cmd, "--reg-param needs a method with a regularizer ('%s' has "
                                    "none)", meth.name);

    /* --preset paper: the reference code's settings, under explicit flags */
    if (paper) {
        if (!set_epochs)
            epochs = 30;
        if (!set_lr)
            lr = 0.2;
        if (!set_schedule)
            schedule = "short";
        if (!set_spb)
            steps_per_batch = 2;
    }

    elle_context *ctx = NULL;
    elle_dataset *train_all = NULL, *train = NULL, *val = NULL, *test = NULL;
    elle_model *m = NULL;
    elle_trainer *t = NULL;
    elle_attack *attack = NULL, *monitor = NULL;
    elle_regularizer *regs[MAX_REGS] = {NULL};
    int code = 0, rc;
    epoch_printer printer = {0, "E_lin"};
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
    if (train_n > 0 && train_n < elle_dataset_size(train)) {
        /* a seeded random subset: the "validation" part of this second split
         * is the discarded remainder (a different seed than the first split,
         * so the two draws are independent) */
        elle_dataset *subset = NULL, *rest = NULL;
        rc = elle_dataset_split(train, elle_dataset_size(train) - train_n,
                                (uint64_t)c.seed ^ 0x5eedu, &subset, &rest);
        if (rc != ELLE_OK) {
            code = cli_lib_error(cmd, "--train-n subset", rc);
            goto done;
        }
        elle_dataset_free(rest);
        elle_dataset_free(train);
        train = subset;
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
    if (paper && !set_pgd_test_n)
        pgd_test_n = elle_dataset_size(test); /* the reference: the whole test set */
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
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_PROGRESS, progress, "no-progress")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_PGD_TEST_N, (double)pgd_test_n, "pgd-test-n")) ||
        (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_PGD_VAL, (double)pgd_val, "pgd-val")))
        goto done;
    if (paper && ((code = set_tp(cmd, t, ELLE_TRAIN_PARAM_EXTRA_CLEAN_FORWARD, 1, "preset")) ||
                  (sk == ELLE_SCHEDULE_SHORT &&
                   (code = set_tp(cmd, t, ELLE_TRAIN_PARAM_CYCLE_MOMENTUM, 1, "preset")))))
        goto done;

    /* the method: one training attack and its regularizers, all on this model */
    if (meth.has_attack) {
        if ((rc = elle_attack_create(&attack, m, meth.kind)) != ELLE_OK) {
            code = cli_lib_error(cmd, "attack", rc);
            goto done;
        }
        if ((rc = elle_attack_set_param(attack, ELLE_ATTACK_PARAM_EPS, eps)) ||
            (rc = elle_attack_set_param(attack, ELLE_ATTACK_PARAM_SEED, (double)c.seed)) ||
            (meth.kind == ELLE_ATTACK_PGD &&
             (rc = elle_attack_set_param(attack, ELLE_ATTACK_PARAM_STEPS, (double)meth.steps))) ||
            (alpha > 0 && (rc = elle_attack_set_param(attack, ELLE_ATTACK_PARAM_ALPHA, alpha))) ||
            /* the reference's GAT attack clamps to the image; its other attacks do not */
            (paper && meth.kind != ELLE_ATTACK_GAT &&
             (rc = elle_attack_set_param(attack, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 0)))) {
            code = cli_lib_error(cmd, "attack", rc);
            goto done;
        }
        for (int i = 0; i < n_attack_params; i++)
            if ((code = cli_apply_attack_param(cmd, "attack-param", attack, attack_params[i])))
                goto done;
        if ((rc = elle_trainer_set_attack(t, attack)) != ELLE_OK) {
            code = cli_lib_error(cmd, "attack", rc);
            goto done;
        }
    }
    for (int i = 0; i < meth.n_regs; i++) {
        double dl, dl_max;
        elle_regularizer_kind rk = meth.reg[i];
        elle_regularizer_default_lambda(rk, eps, 0, &dl);
        elle_regularizer_default_lambda(rk, eps, 1, &dl_max);
        if ((rc = elle_regularizer_create(&regs[i], m, rk)) != ELLE_OK) {
            code = cli_lib_error(cmd, "regularizer", rc);
            goto done;
        }
        if ((code = set_rp(cmd, regs[i], ELLE_REGULARIZER_PARAM_EPS, eps, "eps")) ||
            (reg_has(rk, ELLE_REGULARIZER_PARAM_SEED) &&
             (code = set_rp(cmd, regs[i], ELLE_REGULARIZER_PARAM_SEED, (double)c.seed,
                            "seed"))) ||
            (code = set_rp(cmd, regs[i], ELLE_REGULARIZER_PARAM_ADAPTIVE, meth.adaptive[i],
                           "method")) ||
            (code = set_rp(cmd, regs[i], ELLE_REGULARIZER_PARAM_LAMBDA,
                           lambda >= 0 ? lambda : dl, "lambda")) ||
            (code = set_rp(cmd, regs[i], ELLE_REGULARIZER_PARAM_LAMBDA_MAX,
                           lambda_max >= 0 ? lambda_max : dl_max, "lambda-max")) ||
            (paper && reg_has(rk, ELLE_REGULARIZER_PARAM_CLAMP_IMAGE) &&
             (code = set_rp(cmd, regs[i], ELLE_REGULARIZER_PARAM_CLAMP_IMAGE, 0, "preset"))))
            goto done;
        for (int k = 0; k < n_reg_params; k++) {
            char name[64];
            double v;
            elle_regularizer_param p;
            cli_parse_kv(reg_params[k], name, sizeof name, &v);
            elle_regularizer_param_from_name(name, &p);
            if (reg_has(rk, p) && (code = set_rp(cmd, regs[i], p, v, "reg-param")))
                goto done;
        }
        if ((rc = elle_trainer_add_regularizer(t, regs[i])) != ELLE_OK) {
            code = cli_lib_error(cmd, "regularizer", rc);
            goto done;
        }
    }
    /* plain training with an explicit --eps: monitor PGD-20 at that eps too */
    if (!meth.has_attack && meth.n_regs == 0 && set_eps) {
        if ((rc = elle_attack_create(&monitor, m, ELLE_ATTACK_PGD)) ||
            (rc = elle_attack_set_param(monitor, ELLE_ATTACK_PARAM_EPS, eps)) ||
            (rc = elle_attack_set_param(monitor, ELLE_ATTACK_PARAM_STEPS, 20)) ||
            (rc = elle_attack_set_param(monitor, ELLE_ATTACK_PARAM_ALPHA, eps / 8)) ||
            (rc = elle_attack_set_param(monitor, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 1)) ||
            (rc = elle_attack_set_param(monitor, ELLE_ATTACK_PARAM_SEED, (double)c.seed)) ||
            (rc = elle_trainer_set_monitor_attack(t, monitor))) {
            code = cli_lib_error(cmd, "PGD monitor", rc);
            goto done;
        }
    }
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
    if (meth.n_regs > 0)
        printer.reg_label = reg_value_label(meth.reg[0]);
    elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_EPOCH, on_epoch, &printer);

    printf("training %s (%lld parameters) on %s: %lld training, %lld validation, %lld test "
           "images; method %s, eps %.5g%s; %lld epoch(s), batch %lld, schedule %s, backend %s\n",
           c.model, (long long)elle_model_num_params(m), c.dataset,
           (long long)elle_dataset_size(train), (long long)(val ? elle_dataset_size(val) : 0),
           (long long)elle_dataset_size(test), meth.name, eps, paper ? ", preset paper" : "",
           (long long)epochs, (long long)batch, schedule, c.backend);
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
    if (write_summary(path, &c, t, meth.name, eps, paper, printer.co_epochs, secs,
                      elle_model_num_params(m))) {
        fprintf(stderr, "elle train: cannot write %s\n", path);
        code = 1;
        goto done;
    }
    const elle_train_metrics *last = elle_trainer_last_epoch(t);
    printf("final test accuracy %.2f%%", 100 * metric(last, ELLE_TRAIN_METRIC_TEST_ACC));
    if (elle_train_metrics_has(last, ELLE_TRAIN_METRIC_PGD_TEST_ACC)) {
        double pn;
        elle_trainer_get_param(t, ELLE_TRAIN_PARAM_PGD_TEST_N, &pn);
        int64_t tn = elle_dataset_size(test);
        printf(", PGD-20 accuracy %.2f%% (first %lld test images)",
               100 * metric(last, ELLE_TRAIN_METRIC_PGD_TEST_ACC),
               (long long)(pn < (double)tn ? (int64_t)pn : tn));
    }
    if (printer.co_epochs)
        printf("; %d epoch(s) flagged as possible catastrophic overfitting", printer.co_epochs);
    printf("; wrote %s/{model.safetensors%s, log.jsonl, summary.json} in %.1f s\n", out,
           val ? ", best.safetensors" : "", secs);
done:
    elle_trainer_free(t);
    for (int i = 0; i < MAX_REGS; i++)
        elle_regularizer_free(regs[i]);
    elle_attack_free(attack);
    elle_attack_free(monitor);
    elle_model_free(m);
    elle_dataset_free(val);
    elle_dataset_free(train);
    elle_dataset_free(train_all);
    elle_dataset_free(test);
    elle_context_free(ctx);
    return code;
}
