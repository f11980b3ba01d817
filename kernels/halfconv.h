/*
 * halfconv.h: float32 <-> IEEE half and bfloat16, round to nearest even. Used by the
 * fp16/bf16 codecs and by the transports' narrow-type sums. Under nvcc they are
 * __host__ __device__, so that the CUDA casts (kernels/cuda/cast.cu) run these very
 * functions and round exactly as the reference does.
 */
#ifndef GK_HALFCONV_H
#define GK_HALFCONV_H

#include <stdint.h>
#include <string.h>

#include "base/hostdev.h"

GK_HOSTDEV static inline uint32_t gk_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

GK_HOSTDEV static inline float gk_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

GK_HOSTDEV static inline uint16_t gk_float_to_bf16(float f)
{
    uint32_t u = gk_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

GK_HOSTDEV static inline float gk_bf16_to_float(uint16_t h)
{
    return gk_bits_f32((uint32_t)h << 16);
}

GK_HOSTDEV static inline uint16_t gk_float_to_half(float f)
{
    uint32_t u = gk_f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* Inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0));
    if (a >= 0x477ff000u) /* rounds to >= 65520: overflow to Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* subnormal half or zero */
        if (a < 0x33000000u)
            return (uint16_t)sign;
        uint32_t mant = (a & 0x7fffffu) | 0x800000u;
        /* value = mant * 2^(e-150); the half subnormal unit is 2^-24 */
        int shift = 126 - (int)(a >> 23);
        uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = a - 0x38000000u; /* rebias exponent 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

GK_HOSTDEV static inline float gk_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f)
        return gk_bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) { /* zero or subnormal: m * 2^-24 */
        float v = (float)m * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return gk_bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

#endif /* GK_HALFCONV_H */
