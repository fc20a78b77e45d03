/* elle info: what this build and machine offer. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"

static void cpu_model(char *out, size_t n)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(out, n, "unknown");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *v = strchr(line, ':');
            if (v) {
                snprintf(out, n, "%s", v + 2);
                out[strcspn(out, "\n")] = '\0';
            }
            break;
        }
    }
    fclose(f);
}

/* Why CUDA is not available: not compiled in, or compiled in without a
 * usable driver or GPU (the failed create's message names the CUDA error). */
static void cuda_reason(void)
{
    elle_context *ctx = NULL;
    int rc = elle_context_create(&ctx, ELLE_BACKEND_CUDA, 0);
    if (rc == ELLE_OK)
        elle_context_free(ctx);
    else if (rc == ELLE_EUNSUPPORTED)
        printf(" (not compiled in)");
    else
        printf(" (compiled in; %s)", elle_error_last()->message);
}

int cmd_info(int argc, char **argv)
{
    static const char *const flags[] = {"help", NULL};
    args a;
    int r;
    args_init(&a, "info", argc, argv, flags);
    while ((r = args_next(&a)) == 1) {
        if (strcmp(a.name, "help") == 0) {
            printf("usage: elle info\n\nPrints the libelle version, the compiled-in backends, "
                   "threads and CPU features.\n");
            return 0;
        }
        return cli_usage_error("info", "unknown option --%s", a.name);
    }
    if (r)
        return r;

    char model[256];
    cpu_model(model, sizeof model);
    printf("libelle %s (ABI %d)\n", elle_version_string(), elle_version_number());
    printf("backends:\n");
    for (int b = 0; b <= 2; b++) {
        printf("  %-10s %s", elle_backend_name((elle_backend)b),
               elle_backend_available((elle_backend)b) ? "available" : "not available");
        if (elle_backend_available((elle_backend)b))
            printf(", %d device(s)", elle_backend_device_count((elle_backend)b));
        else if (b == ELLE_BACKEND_CUDA)
            cuda_reason();
        printf("\n");
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("threads: %ld cores online (elle uses all by default; --threads N)\n", cores);
    printf("cpu: %s\n", model);
    printf("cpu features:");
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2"))
        printf(" sse4.2");
    if (__builtin_cpu_supports("avx"))
        printf(" avx");
    if (__builtin_cpu_supports("avx2"))
        printf(" avx2");
    if (__builtin_cpu_supports("fma"))
        printf(" fma");
    if (__builtin_cpu_supports("avx512f"))
        printf(" avx512f");
    if (__builtin_cpu_supports("avx512bw"))
        printf(" avx512bw");
    if (__builtin_cpu_supports("avx512vnni"))
        printf(" avx512vnni");
#else
    printf(" (not detected on this architecture)");
#endif
    printf("\n");
    return 0;
}
