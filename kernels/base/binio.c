#include "binio.h"

#include <stdarg.h>
#include <string.h>

static bool put(gk_writer *w, const void *p, size_t n)
{
    if (!w->failed && n && fwrite(p, 1, n, w->f) != n)
        w->failed = true;
    return !w->failed;
}

static bool put_le(gk_writer *w, uint64_t v, int bytes)
{
    unsigned char b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    return put(w, b, (size_t)bytes);
}

bool gk_put_u8(gk_writer *w, uint8_t v) { return put_le(w, v, 1); }
bool gk_put_u32(gk_writer *w, uint32_t v) { return put_le(w, v, 4); }
bool gk_put_u64(gk_writer *w, uint64_t v) { return put_le(w, v, 8); }
bool gk_put_i64(gk_writer *w, int64_t v) { return put_le(w, (uint64_t)v, 8); }

bool gk_put_f64(gk_writer *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return put_le(w, u, 8);
}

bool gk_put_f32s(gk_writer *w, const float *v, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return put(w, v, n * sizeof(float));
#else
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof(u));
        put_le(w, u, 4);
    }
    return !w->failed;
#endif
}

bool gk_put_str(gk_writer *w, const char *s)
{
    size_t n = strlen(s);
    return gk_put_u32(w, (uint32_t)n) && put(w, s, n);
}

bool gk_put_tag(gk_writer *w, const char *tag, uint32_t version)
{
    return put(w, tag, 4) && gk_put_u32(w, version);
}

bool gk_reader_fail(gk_reader *r, const char *fmt, ...)
{
    if (!r->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, sizeof(r->err), fmt, ap);
        va_end(ap);
        r->failed = true;
    }
    return false;
}

static bool get(gk_reader *r, void *p, size_t n)
{
    if (!r->failed && n && fread(p, 1, n, r->f) != n)
        gk_reader_fail(r, "truncated (%s)", ferror(r->f) ? "read error" : "end of file");
    return !r->failed;
}

static bool get_le(gk_reader *r, uint64_t *v, int bytes)
{
    unsigned char b[8];
    if (!get(r, b, (size_t)bytes))
        return false;
    uint64_t x = 0;
    for (int i = 0; i < bytes; i++)
        x |= (uint64_t)b[i] << (8 * i);
    *v = x;
    return true;
}

bool gk_get_u8(gk_reader *r, uint8_t *v)
{
    uint64_t x;
    return get_le(r, &x, 1) && ((*v = (uint8_t)x), true);
}

bool gk_get_u32(gk_reader *r, uint32_t *v)
{
    uint64_t x;
    return get_le(r, &x, 4) && ((*v = (uint32_t)x), true);
}

bool gk_get_u64(gk_reader *r, uint64_t *v)
{
    return get_le(r, v, 8);
}

bool gk_get_i64(gk_reader *r, int64_t *v)
{
    uint64_t x;
    return get_le(r, &x, 8) && ((*v = (int64_t)x), true);
}

bool gk_get_f64(gk_reader *r, double *v)
{
    uint64_t x;
    return get_le(r, &x, 8) && (memcpy(v, &x, sizeof(*v)), true);
}

bool gk_get_f32s(gk_reader *r, float *v, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return get(r, v, n * sizeof(float));
#else
    for (size_t i = 0; i < n; i++) {
        uint64_t u;
        if (!get_le(r, &u, 4))
            return false;
        uint32_t x = (uint32_t)u;
        memcpy(&v[i], &x, sizeof(x));
    }
    return true;
#endif
}

bool gk_get_str(gk_reader *r, char *s, size_t cap)
{
    uint32_t n;
    if (!gk_get_u32(r, &n))
        return false;
    if (n >= cap)
        return gk_reader_fail(r, "a string of %u bytes, at most %zu expected", n, cap - 1);
    if (!get(r, s, n))
        return false;
    s[n] = '\0';
    return true;
}

bool gk_get_tag(gk_reader *r, const char *tag, uint32_t max, uint32_t *version)
{
    char t[5] = "";
    uint32_t v;
    if (!get(r, t, 4) || !gk_get_u32(r, &v))
        return false;
    if (memcmp(t, tag, 4) != 0) {
        for (int i = 0; i < 4; i++)
            if (t[i] < 0x20 || t[i] > 0x7e)
                t[i] = '?';
        return gk_reader_fail(r, "expected a '%.4s' record, found '%.4s'", tag, t);
    }
    if (v < 1 || v > max)
        return gk_reader_fail(r, "'%.4s' record of format version %u; this gcomp reads "
                                 "versions 1..%u", tag, v, max);
    if (version)
        *version = v;
    return true;
}
