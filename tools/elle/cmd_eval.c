/*
 * elle eval: clean and robust accuracy of a saved model on a dataset split.
 *
 *   elle eval --model small_cnn --weights out/model.safetensors [--dataset ...]
 *   elle eval --weights out/model.safetensors --attack pgd-50-10 --eps 8/255
 *   elle eval --weights out/model.safetensors --attack autoattack --n 1000 --bs 250
 *
 * Reports accuracies as correct/total over all evaluated samples (the
 * reference code averages per-batch accuracies; see docs/cli.md). With
 * --attack, elle_attack_evaluate gives clean and robust counts in one pass;
 * for AutoAttack also the robust count after each of its attacks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"

static void help(void)
{
    printf("usage: elle eval --weights FILE [options]\n"
           "\n"
           "Evaluates a model saved by 'elle train' (safetensors, PyTorch names) in eval mode:\n"
           "clean accuracy, and robust accuracy under --attack.\n"
           "\n"
           "  --weights FILE        model state to load (required)\n"
           "  --split NAME          test (default) or train\n"
           "  --n N                 evaluate the first N samples only (default: all)\n"
           "  --batch N, --bs N     evaluation batch size (default 256; AutoAttack's chunk)\n"
           "  --attack NAME         none (default), fgsm, pgd-K (K steps, one start; alpha =\n"
           "                        eps/8 as the reference's per-epoch PGD-20), pgd-K-R (K\n"
           "                        steps, R restarts; alpha = eps/4 as its PGD-50-10), e.g.\n"
           "                        pgd-20, pgd-50-10; every point clamped to [0, 1];\n"
           "                        autoattack (AutoAttack, see --version) or one of its\n"
           "                        attacks: apgd-ce, apgd-dlr, apgd-t, fab-t, square\n"
           "  --version V           autoattack: standard (default: apgd-ce, apgd-t, fab-t,\n"
           "                        square) or rand (apgd-ce, apgd-dlr, eot_iter 20)\n"
           "  --eps X               L-inf radius in [0, 1] (default 8/255); fractions accepted\n"
           "  --alpha X             fgsm/PGD step (overrides the default above)\n"
           "  --attack-param K=V    any attack parameter by name (early_stop, seed, steps,\n"
           "                        n_queries, n_target_classes, eot_iter, ...); repeatable;\n"
           "                        the default seed is --seed (AutoAttack: the torch seed)\n"
           "%s",
           cli_common_help);
}

#define MAX_KV 32

/* Clean accuracy only: forward passes over the first `total` samples. */
static int clean_only(const char *cmd, elle_model *m, elle_dataset *d, int64_t total,
                      int64_t batch, int64_t *correct_out)
{
    int64_t ch, h, w, k = elle_model_num_classes(m);
    elle_dataset_shape(d, &ch, &h, &w);
    float *x = malloc((size_t)(batch * ch * h * w) * sizeof *x);
    float *z = malloc((size_t)(batch * k) * sizeof *z);
    int32_t *y = malloc((size_t)batch * sizeof *y);
    int code = 0, rc;
    int64_t correct = 0;
    if (!x || !z || !y) {
        fprintf(stderr, "elle eval: out of memory\n");
        code = 1;
        goto done;
    }
    for (int64_t start = 0; start < total; start += batch) {
        int64_t nb = total - start < batch ? total - start : batch;
        for (int64_t i = 0; i < nb; i++) {
            rc = elle_dataset_get(d, start + i, x + i * ch * h * w, &y[i]);
            if (rc != ELLE_OK) {
                code = cli_lib_error(cmd, "reading the dataset", rc);
                goto done;
            }
        }
        if ((rc = elle_model_forward(m, x, nb, z)) != ELLE_OK) {
            code = cli_lib_error(cmd, "forward", rc);
            goto done;
        }
        for (int64_t i = 0; i < nb; i++) {
            int64_t best = 0;
            for (int64_t j = 1; j < k; j++)
                if (z[i * k + j] > z[i * k + best])
                    best = j;
            correct += best == y[i];
        }
    }
    *correct_out = correct;
done:
    free(x);
    free(z);
    free(y);
    return code;
}

int cmd_eval(int argc, char **argv)
{
    static const char *const flags[] = {"help", NULL};
    const char *cmd = "eval";
    cli_common c;
    const char *weights = NULL, *attack_name = "none";
    const char *attack_params[MAX_KV];
    int n_attack_params = 0;
    int64_t n_max = 0, batch = 256, steps = 0, restarts = 0;
    double eps = 8.0 / 255, alpha = -1;
    elle_attack_kind kind = ELLE_ATTACK_PGD;
    int with_attack = 0, version = -1;
    elle_split split = ELLE_SPLIT_TEST;
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
        } else if (strcmp(a.name, "weights") == 0) {
            weights = v;
        } else if (strcmp(a.name, "split") == 0) {
            if (elle_split_from_name(v, &split))
                return cli_usage_error(cmd, "--split wants train or test, got '%s'", v);
        } else if (strcmp(a.name, "n") == 0) {
            if (cli_parse_int(v, 1, INT64_MAX, &n_max))
                return cli_usage_error(cmd, "--n wants a positive integer, got '%s'", v);
        } else if (strcmp(a.name, "batch") == 0 || strcmp(a.name, "bs") == 0) {
            if (cli_parse_int(v, 1, 1 << 20, &batch))
                return cli_usage_error(cmd, "--%s wants an integer in [1, 2^20], got '%s'",
                                       a.name, v);
        } else if (strcmp(a.name, "attack") == 0) {
            if (strcmp(v, "none") == 0) {
                with_attack = 0;
            } else if (cli_parse_attack(v, &kind, &steps, &restarts) == 0 &&
                       (kind == ELLE_ATTACK_PGD || kind == ELLE_ATTACK_FGSM ||
                        (kind >= ELLE_ATTACK_APGD_CE && kind <= ELLE_ATTACK_AUTOATTACK)) &&
                       strcmp(v, "pgd") != 0) {
                with_attack = 1;
            } else {
                return cli_usage_error(cmd, "--attack wants none, fgsm, pgd-K, pgd-K-R (e.g. "
                                            "pgd-20, pgd-50-10), autoattack, apgd-ce, "
                                            "apgd-dlr, apgd-t, fab-t or square, got '%s'", v);
            }
            attack_name = v;
        } else if (strcmp(a.name, "version") == 0) {
            if (strcmp(v, "standard") == 0)
                version = 0;
            else if (strcmp(v, "rand") == 0)
                version = 1;
            else
                return cli_usage_error(cmd, "--version wants standard or rand, got '%s'", v);
        } else if (strcmp(a.name, "eps") == 0) {
            if (cli_parse_double(v, &eps) || eps < 0 || eps > 1)
                return cli_usage_error(cmd, "--eps wants a number in [0, 1] (e.g. 8/255), "
                                            "got '%s'", v);
        } else if (strcmp(a.name, "alpha") == 0) {
            if (cli_parse_double(v, &alpha) || alpha <= 0 || alpha > 1)
                return cli_usage_error(cmd, "--alpha wants a number in (0, 1] (e.g. 2/255), "
                                            "got '%s'", v);
        } else if (strcmp(a.name, "attack-param") == 0) {
            if (n_attack_params == MAX_KV)
                return cli_usage_error(cmd, "too many --attack-param options");
            if (cli_check_attack_param(cmd, "attack-param", v))
                return 2;
            attack_params[n_attack_params++] = v;
        } else {
            return cli_usage_error(cmd, "unknown option --%s", a.name);
        }
    }
    if (r)
        return r;
    if (!weights)
        return cli_usage_error(cmd, "--weights FILE is required");
    if (!with_attack && (alpha > 0 || n_attack_params))
        return cli_usage_error(cmd, "--%s needs --attack", alpha > 0 ? "alpha" : "attack-param");
    const int autoattack_kind = with_attack && kind >= ELLE_ATTACK_APGD_CE;
    if (version >= 0 && !(with_attack && kind == ELLE_ATTACK_AUTOATTACK))
        return cli_usage_error(cmd, "--version needs --attack autoattack");
    if (alpha > 0 && autoattack_kind)
        return cli_usage_error(cmd, "--alpha applies to fgsm and pgd, not %s", attack_name);

    elle_context *ctx = NULL;
    elle_dataset *d = NULL;
    elle_model *m = NULL;
    elle_attack *atk = NULL;
    int code = cli_open_context(cmd, &c, &ctx);
    if (!code)
        code = cli_open_dataset(cmd, &c, split, &d);
    if (!code)
        code = cli_create_model(cmd, &c, ctx, d, &m);
    if (code)
        goto done;
    int rc = elle_model_load(m, weights);
    if (rc == ELLE_OK)
        rc = elle_model_reserve(m, batch);
    if (rc == ELLE_OK)
        rc = elle_model_set_training(m, 0);
    if (rc != ELLE_OK) {
        code = cli_lib_error(cmd, weights, rc);
        goto done;
    }
    int64_t total = elle_dataset_size(d);
    if (n_max && n_max < total)
        total = n_max;
    int64_t correct = 0, robust = 0, evaluated = total;
    if (!with_attack) {
        if ((code = clean_only(cmd, m, d, total, batch, &correct)))
            goto done;
    } else if (autoattack_kind) {
        /* AutoAttack: its own step sizes, always inside [0, 1]; the seed is
         * the torch seed of every attack and chunk */
        if ((rc = elle_attack_create(&atk, m, kind)) ||
            (rc = elle_attack_set_param(atk, ELLE_ATTACK_PARAM_EPS, eps)) ||
            (rc = elle_attack_set_param(atk, ELLE_ATTACK_PARAM_SEED, (double)c.seed)) ||
            (version >= 0 &&
             (rc = elle_attack_set_param(atk, ELLE_ATTACK_PARAM_VERSION, (double)version)))) {
            code = cli_lib_error(cmd, "attack", rc);
            goto done;
        }
        for (int i = 0; i < n_attack_params; i++)
            if ((code = cli_apply_attack_param(cmd, "attack-param", atk, attack_params[i])))
                goto done;
        rc = elle_attack_evaluate(atk, d, total, batch, &correct, &robust, &evaluated);
        if (rc != ELLE_OK) {
            code = cli_lib_error(cmd, "evaluation", rc);
            goto done;
        }
    } else {
        /* the reference's evaluation attacks: every point clamped to the
         * image; PGD-K: alpha eps/8 (per-epoch PGD-20), PGD-K-R: eps/4 (PGD-50-10) */
        double a_default = kind == ELLE_ATTACK_FGSM ? eps : restarts ? eps / 4 : eps / 8;
        if ((rc = elle_attack_create(&atk, m, kind)) ||
            (rc = elle_attack_set_param(atk, ELLE_ATTACK_PARAM_EPS, eps)) ||
            (rc = elle_attack_set_param(atk, ELLE_ATTACK_PARAM_ALPHA,
                                        alpha > 0 ? alpha : a_default)) ||
            (rc = elle_attack_set_param(atk, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 1)) ||
            (rc = elle_attack_set_param(atk, ELLE_ATTACK_PARAM_SEED, (double)c.seed)) ||
            (kind == ELLE_ATTACK_PGD &&
             ((rc = elle_attack_set_param(atk, ELLE_ATTACK_PARAM_STEPS, (double)steps)) ||
              (rc = elle_attack_set_param(atk, ELLE_ATTACK_PARAM_RESTARTS,
                                          (double)(restarts ? restarts : 1)))))) {
            code = cli_lib_error(cmd, "attack", rc);
            goto done;
        }
        for (int i = 0; i < n_attack_params; i++)
            if ((code = cli_apply_attack_param(cmd, "attack-param", atk, attack_params[i])))
                goto done;
        rc = elle_attack_evaluate(atk, d, total, batch, &correct, &robust, &evaluated);
        if (rc != ELLE_OK) {
            code = cli_lib_error(cmd, "evaluation", rc);
            goto done;
        }
    }
    printf("%s %s, %s split: clean accuracy %lld/%lld = %.2f%%\n", c.model, weights,
           elle_split_name(split), (long long)correct, (long long)evaluated,
           100.0 * (double)correct / (double)evaluated);
    if (autoattack_kind) {
        double ver = 0, seed = 0;
        elle_attack_get_param(atk, ELLE_ATTACK_PARAM_VERSION, &ver);
        elle_attack_get_param(atk, ELLE_ATTACK_PARAM_SEED, &seed);
        int n_stages = elle_attack_num_stages(atk);
        if (kind == ELLE_ATTACK_AUTOATTACK)
            printf("%s version %s (", attack_name, ver != 0 ? "rand" : "standard");
        else
            printf("%s (", attack_name);
        for (int s = 0; s < n_stages; s++) {
            const char *name = NULL;
            elle_attack_stage_result(atk, s, &name, NULL, NULL);
            printf("%s%s", s ? ", " : "", name);
        }
        printf("), eps %.6g, seed %.0f, bs %lld:\n", eps, seed, (long long)batch);
        printf("  %-10s %10s %12s %10s\n", "attack", "robust", "accuracy", "time");
        printf("  %-10s %10lld %11.2f%% %10s\n", "clean", (long long)correct,
               100.0 * (double)correct / (double)evaluated, "");
        for (int s = 0; s < n_stages; s++) {
            const char *name = NULL;
            int64_t after = 0;
            double sec = 0;
            elle_attack_stage_result(atk, s, &name, &after, &sec);
            printf("  %-10s %10lld %11.2f%% %9.1fs\n", name, (long long)after,
                   100.0 * (double)after / (double)evaluated, sec);
        }
        printf("%s (eps %.6g): robust accuracy %lld/%lld = %.2f%%\n", attack_name, eps,
               (long long)robust, (long long)evaluated, 100.0 * (double)robust / (double)evaluated);
    } else if (with_attack) {
        double used_alpha;
        elle_attack_get_param(atk, ELLE_ATTACK_PARAM_ALPHA, &used_alpha);
        printf("%s (eps %.6g, alpha %.6g): robust accuracy %lld/%lld = %.2f%%\n", attack_name,
               eps, used_alpha, (long long)robust, (long long)evaluated,
               100.0 * (double)robust / (double)evaluated);
    }
done:
    elle_attack_free(atk);
    elle_model_free(m);
    elle_dataset_free(d);
    elle_context_free(ctx);
    return code;
}
