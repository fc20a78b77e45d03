#ifndef ELLE_CORE_LOG_H
#define ELLE_CORE_LOG_H

#include "elle/context.h"

/* Send a line to the hook installed with elle_log_set (no-op without one). */
void elle__log(int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
