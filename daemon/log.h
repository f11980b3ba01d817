/* log.h: the daemon's log lines, "gcompd[node N] LEVEL: text", on stderr. */
#ifndef GCD_LOG_H
#define GCD_LOG_H

enum { GCD_LOG_ERROR = 0, GCD_LOG_WARN = 1, GCD_LOG_INFO = 2, GCD_LOG_DEBUG = 3 };

/* Set once at start-up, before any thread starts. */
void gcd_log_setup(int node, int level);
void gcd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define gcd_log_error(...) gcd_log(GCD_LOG_ERROR, __VA_ARGS__)
#define gcd_log_warn(...) gcd_log(GCD_LOG_WARN, __VA_ARGS__)
#define gcd_log_info(...) gcd_log(GCD_LOG_INFO, __VA_ARGS__)
#define gcd_log_debug(...) gcd_log(GCD_LOG_DEBUG, __VA_ARGS__)

#endif
