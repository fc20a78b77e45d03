/*
 * quickstart: the program shown in README.md ("Using the library from C"),
 * plus a JSON summary for `make demo`. Builds the small CNN, runs it on a
 * batch of 8 blank 28x28 images and prints the first image's first logit
 * and its argmax.
 *
 *   quickstart [SUMMARY.json [BACKEND]]
 *
 * SUMMARY.json receives {"logits_finite", "num_params", "version", ...}.
 * BACKEND is "cpu" (the default, as in the README) or "reference".
 */
#include <elle.h>
#include <math.h>
#include <stdio.h>

static int write_summary(const char *path, const elle_model *model, const char *backend,
                         const float *logits, int n, int classes, int argmax)
{
    int finite = 1;
    for (int i = 0; i < n * classes; i++)
        finite = finite && isfinite(logits[i]);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return ELLE_EIO;
    }
    fprintf(f,
            "{\"logits_finite\": %s, \"num_params\": %lld, \"version\": \"%s\", "
            "\"arch\": \"%s\", \"backend\": \"%s\", \"batch\": %d, \"argmax\": %d}\n",
            finite ? "true" : "false", (long long)elle_model_num_params(model),
            elle_version_string(), elle_model_arch(model), backend, n, argmax);
    if (fclose(f) != 0) {
        perror(path);
        return ELLE_EIO;
    }
    printf("wrote %s\n", path);
    return finite ? ELLE_OK : ELLE_ENUMERIC;
}

int main(int argc, char **argv)
{
    elle_backend backend = ELLE_BACKEND_CPU;
    if (argc > 2 && elle_backend_from_name(argv[2], &backend) != ELLE_OK) {
        fprintf(stderr, "quickstart: %s\n", elle_error_last()->message);
        return 2;
    }

    elle_context *ctx = NULL;
    elle_model_config *cfg = NULL;
    elle_model *model = NULL;
    static float images[8 * 1 * 28 * 28]; /* (8, 1, 28, 28) in [0, 1]: all zeros */
    float logits[8 * 10];                 /* (8, 10) */

    int rc = elle_context_create(&ctx, backend, 0);
    if (rc == ELLE_OK) rc = elle_model_config_create(&cfg, "small_cnn");
    if (rc == ELLE_OK) rc = elle_model_create(&model, ctx, cfg);
    if (rc == ELLE_OK) rc = elle_model_reserve(model, 8); /* plan and allocate for batches <= 8 */
    if (rc == ELLE_OK) rc = elle_model_forward(model, images, 8, logits);

    if (rc == ELLE_OK) {
        int best = 0;
        for (int k = 1; k < 10; k++)
            if (logits[k] > logits[best]) best = k;
        printf("logits[0][0] = %.4f, argmax = %d\n", logits[0], best);
        printf("libelle %s, %s on %s: %lld parameters\n", elle_version_string(),
               elle_model_arch(model), elle_backend_name(backend),
               (long long)elle_model_num_params(model));
        if (argc > 1)
            rc = write_summary(argv[1], model, elle_backend_name(backend), logits, 8, 10, best);
    } else {
        fprintf(stderr, "%s: %s\n", elle_status_name(rc), elle_error_last()->message);
    }
    elle_model_free(model); /* children before parents; NULL is accepted */
    elle_model_config_free(cfg);
    elle_context_free(ctx);
    return rc == ELLE_OK ? 0 : 1;
}
