/* Process-wide log hook. libelle prints nothing unless a hook is set. */
#include <stdarg.h>
#include <stdio.h>

#include "core/log.h"

static elle_log_fn g_log_fn;
static void *g_log_user;

void elle_log_set(elle_log_fn fn, void *user_data)
{
    g_log_fn = fn;
    g_log_user = user_data;
}

void elle__log(int level, const char *fmt, ...)
{
    if (!g_log_fn)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    g_log_fn(level, line, g_log_user);
}
