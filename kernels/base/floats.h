/*
 * floats.h: two loops over float arrays that the daemon and the codecs share: a test
 * for non-finite values, and a scaled copy with non-temporal stores.
 */
#ifndef GK_FLOATS_H
#define GK_FLOATS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __SSE__
#include <immintrin.h>
#endif

/* 1 if any of the n floats is Inf or NaN (all exponent bits set). An integer OR
   reduction, so it vectorises (a float sum would be a serial dependency chain). */
static inline uint32_t gk_any_nonfinite(const float *restrict v, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof(u));
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return bad;
}

/*
 * o = a * scale, storing o with non-temporal stores where the target has them: a large
 * output goes to memory without being read first (no read-for-ownership) and without
 * evicting the cache, as memcpy does for large copies. For outputs that are not read
 * again soon. Streamed stores are weakly ordered: gk_stream_fence() before another
 * thread may read o.
 */
static inline void gk_stream_scale(float *restrict o, const float *restrict a, size_t n,
                                   float scale)
{
    size_t i = 0;
#ifdef __SSE__
    for (; i < n && ((uintptr_t)(o + i) & 15) != 0; i++)
        o[i] = a[i] * scale;
    __m128 s = _mm_set1_ps(scale);
    for (; i + 4 <= n; i += 4)
        _mm_stream_ps(o + i, _mm_mul_ps(_mm_loadu_ps(a + i), s));
#endif
    for (; i < n; i++)
        o[i] = a[i] * scale;
}

/* Make the streamed stores before it visible to other threads. */
static inline void gk_stream_fence(void)
{
#ifdef __SSE__
    _mm_sfence();
#endif
}

#endif
