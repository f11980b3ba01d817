/*
 * json.h: gcomp's one JSON writer of strings and numbers, for stats lines, decision
 * logs, gcompctl --json and metrics. Any thread.
 */
#ifndef GK_JSON_H
#define GK_JSON_H

#include <stddef.h>

/* s as a JSON string (quotes, escapes) into out[len] (always terminated when len > 0);
   returns the length it needed, like snprintf. */
size_t gk_json_str(char *out, size_t len, const char *s);
/* v as a JSON number with %.*g precision; NaN and infinities (not JSON) become null.
   Returns the length it needed. */
size_t gk_json_num(char *out, size_t len, double v, int precision);

#endif
