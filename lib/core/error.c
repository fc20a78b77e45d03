/* Thread-local last error (elle_error_last) and status names. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "elle/error.h"

#define ELLE__MSG_MAX 1024

static _Thread_local char tl_message[ELLE__MSG_MAX];
static _Thread_local elle_error tl_error = {ELLE_OK, ""};

int elle__error_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_message, sizeof tl_message, fmt, ap);
    va_end(ap);
    tl_error.code = code;
    tl_error.message = tl_message;
    return code;
}

void elle__error_prefix(const char *fmt, ...)
{
    char prefix[256];
    char old[ELLE__MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, tl_message, sizeof old);
    int room = (int)(sizeof tl_message) - (int)strlen(prefix) - 3;
    snprintf(tl_message, sizeof tl_message, "%s: %.*s", prefix, room > 0 ? room : 0, old);
    tl_error.message = tl_message;
}

const elle_error *elle_error_last(void)
{
    if (!tl_error.message)
        tl_error.message = "";
    return &tl_error;
}

void elle_error_clear(void)
{
    tl_message[0] = '\0';
    tl_error.code = ELLE_OK;
    tl_error.message = tl_message;
}

const char *elle_status_name(int code)
{
    switch (code) {
    case ELLE_OK: return "ELLE_OK";
    case ELLE_ERROR: return "ELLE_ERROR";
    case ELLE_EINVAL: return "ELLE_EINVAL";
    case ELLE_ESHAPE: return "ELLE_ESHAPE";
    case ELLE_ENOMEM: return "ELLE_ENOMEM";
    case ELLE_EIO: return "ELLE_EIO";
    case ELLE_EFORMAT: return "ELLE_EFORMAT";
    case ELLE_EUNSUPPORTED: return "ELLE_EUNSUPPORTED";
    case ELLE_EDEVICE: return "ELLE_EDEVICE";
    case ELLE_ENUMERIC: return "ELLE_ENUMERIC";
    case ELLE_EUSER: return "ELLE_EUSER";
    case ELLE_EVERSION: return "ELLE_EVERSION";
    case ELLE_ESTATE: return "ELLE_ESTATE";
    default: return "ELLE_UNKNOWN";
    }
}
