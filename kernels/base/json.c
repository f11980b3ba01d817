#include "json.h"

#include <math.h>
#include <stdio.h>

size_t gk_json_str(char *out, size_t len, const char *s)
{
    size_t n = 0;
    char esc[8];
#define PUT(c)              \
    do {                    \
        if (n + 1 < len)    \
            out[n] = (c);   \
        n++;                \
    } while (0)
    PUT('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT((char)c);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            for (char *e = esc; *e; e++)
                PUT(*e);
        } else {
            PUT((char)c);
        }
    }
    PUT('"');
#undef PUT
    if (len)
        out[n < len ? n : len - 1] = '\0';
    return n;
}

size_t gk_json_num(char *out, size_t len, double v, int precision)
{
    int n = isfinite(v) ? snprintf(out, len, "%.*g", precision, v) : snprintf(out, len, "null");
    return n < 0 ? 0 : (size_t)n;
}
