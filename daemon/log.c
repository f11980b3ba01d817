#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static int log_node = -1;
static int log_level = GCD_LOG_INFO;
static const char *const level_names[] = {"error", "warning", "info", "debug"};

void gcd_log_setup(int node, int level)
{
    log_node = node;
    log_level = level;
}

void gcd_log(int level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* One fprintf per line so lines of the two threads do not interleave. */
    fprintf(stderr, "gcompd[node %d] %s: %s\n", log_node, level_names[level], line);
}
