/* Contexts: backend selection and thread settings. */
#include <stdlib.h>
#include <string.h>

#include "core/context.h"
#include "core/error.h"
#include "core/params.h"

static const elle__param_spec context_params[] = {
    {ELLE_CONTEXT_PARAM_THREADS, "threads", 0, 4096, 1, 0},
};
#define N_CONTEXT_PARAMS (sizeof context_params / sizeof context_params[0])

static const char *const backend_names[] = {"cpu", "cuda", "reference"};

const char *elle_backend_name(elle_backend kind)
{
    if ((int)kind < 0 || (int)kind > 2)
        return NULL;
    return backend_names[kind];
}

int elle_backend_from_name(const char *name, elle_backend *out)
{
    ELLE_CHECK_ARG(name != NULL);
    ELLE_CHECK_ARG(out != NULL);
    for (int i = 0; i < 3; i++) {
        if (strcmp(name, backend_names[i]) == 0) {
            *out = (elle_backend)i;
            return ELLE_OK;
        }
    }
    if (strcmp(name, "ref") == 0) {
        *out = ELLE_BACKEND_REFERENCE;
        return ELLE_OK;
    }
    ELLE_FAIL(ELLE_EINVAL, "elle_backend_from_name: unknown backend '%s' (cpu, cuda, reference)",
              name);
}

/* CUDA devices this build can use: 0 without the backend compiled in, and
 * 0 (not an error) when the driver or the GPU is missing. */
static int cuda_devices(void)
{
#ifdef ELLE_HAVE_CUDA
    return elle__cuda_device_count();
#else
    return 0;
#endif
}

int elle_backend_available(elle_backend kind)
{
    return elle_backend_device_count(kind) > 0;
}

int elle_backend_device_count(elle_backend kind)
{
    switch (kind) {
    case ELLE_BACKEND_CPU:
    case ELLE_BACKEND_REFERENCE:
        return 1;
    case ELLE_BACKEND_CUDA:
        return cuda_devices();
    default:
        return 0;
    }
}

static int backend_create(elle__backend *be, elle_backend kind, int device_index)
{
    switch (kind) {
    case ELLE_BACKEND_CPU:
        return elle__backend_cpu_create(be, device_index);
    case ELLE_BACKEND_REFERENCE:
        return elle__backend_ref_create(be);
    case ELLE_BACKEND_CUDA:
#ifdef ELLE_HAVE_CUDA
        return elle__backend_cuda_create(be, device_index);
#else
        break;
#endif
    }
    ELLE_FAIL(ELLE_EINVAL, "elle_context_create: unknown backend %d", (int)kind);
}

int elle_context_create(elle_context **out, elle_backend kind, int device_index)
{
    ELLE_CHECK_ARG(out != NULL);
    if ((int)kind < 0 || (int)kind > 2)
        ELLE_FAIL(ELLE_EINVAL, "elle_context_create: unknown backend %d", (int)kind);
#ifndef ELLE_HAVE_CUDA
    if (kind == ELLE_BACKEND_CUDA)
        ELLE_FAIL(ELLE_EUNSUPPORTED,
                  "elle_context_create: this libelle was built without the CUDA backend; "
                  "rebuild with nvcc, cuDNN 9 and cuBLAS installed and "
                  "'meson setup build -Dcuda=enabled'");
#endif
    /* CUDA checks its index against the devices it finds */
    if (kind != ELLE_BACKEND_CUDA && device_index != 0)
        ELLE_FAIL(ELLE_EDEVICE, "elle_context_create: backend '%s' has one device (index 0), got %d",
                  backend_names[kind], device_index);

    elle_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        ELLE_FAIL(ELLE_ENOMEM, "elle_context_create: out of memory");
    int rc = backend_create(&ctx->be, kind, device_index);
    if (rc < 0) {
        free(ctx);
        return rc;
    }
    ctx->be.kind = kind;
    ctx->device_index = device_index;
    *out = ctx;
    return ELLE_OK;
}

void elle_context_free(elle_context *ctx)
{
    if (!ctx)
        return;
    if (ctx->be.ops && ctx->be.ops->destroy)
        ctx->be.ops->destroy(&ctx->be);
    free(ctx);
}

int elle_context_backend(const elle_context *ctx)
{
    return ctx ? ctx->be.kind : -1;
}

int elle_context_set_param(elle_context *ctx, elle_context_param param, double value)
{
    ELLE_CHECK_ARG(ctx != NULL);
    ELLE_TRY(elle__param_check(context_params, N_CONTEXT_PARAMS, (int)param, value,
                               "elle_context_set_param"));
    switch (param) {
    case ELLE_CONTEXT_PARAM_THREADS:
        if (ctx->be.ops->set_threads)
            ELLE_TRY(ctx->be.ops->set_threads(&ctx->be, (int)value));
        ctx->threads = (int)value;
        ctx->be.threads = (int)value;
        return ELLE_OK;
    }
    ELLE_FAIL(ELLE_EINVAL, "elle_context_set_param: unknown parameter %d", (int)param);
}

int elle_context_get_param(const elle_context *ctx, elle_context_param param, double *out)
{
    ELLE_CHECK_ARG(ctx != NULL);
    ELLE_CHECK_ARG(out != NULL);
    switch (param) {
    case ELLE_CONTEXT_PARAM_THREADS:
        *out = ctx->threads;
        return ELLE_OK;
    }
    ELLE_FAIL(ELLE_EINVAL, "elle_context_get_param: unknown parameter %d", (int)param);
}

int elle_context_param_bounds(elle_context_param param, double *lo, double *hi)
{
    ELLE_CHECK_ARG(lo != NULL);
    ELLE_CHECK_ARG(hi != NULL);
    const elle__param_spec *s = elle__param_find(context_params, N_CONTEXT_PARAMS, (int)param);
    if (!s)
        ELLE_FAIL(ELLE_EINVAL, "elle_context_param_bounds: unknown parameter %d", (int)param);
    *lo = s->lo;
    *hi = s->hi;
    return ELLE_OK;
}

int elle_context_param_from_name(const char *name, elle_context_param *out)
{
    int id = 0;
    ELLE_CHECK_ARG(out != NULL);
    ELLE_TRY(elle__param_lookup(context_params, N_CONTEXT_PARAMS, name, &id,
                                "elle_context_param_from_name"));
    *out = (elle_context_param)id;
    return ELLE_OK;
}

const char *elle_context_param_name(elle_context_param param)
{
    const elle__param_spec *s = elle__param_find(context_params, N_CONTEXT_PARAMS, (int)param);
    return s ? s->name : NULL;
}
