/*
 * fp16, bf16: the optimised CPU implementation (semantics in ref/cast.c). fp16 uses
 * the F16C conversion instructions (round to nearest even, as gk_float_to_half) when
 * the processor has them, eight elements at a time; bf16 rounds with integer
 * arithmetic on the float's bits, branch-free (the clamped values are finite, so the
 * NaN case of gk_float_to_bf16 cannot occur).
 */
#include <stdint.h>
#include <string.h>

#include "../halfconv.h"
#include "../quant.h"
#include "gcomp.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define CAST_HAVE_F16C 1
#else
#define CAST_HAVE_F16C 0
#endif

/* The largest value of the narrow type <= max / W (see ref/cast.c). */
static float cast_limit(uint16_t (*narrow)(float), float (*widen)(uint16_t), uint16_t max_bits,
                        int nodes)
{
    float bound = widen(max_bits) / (float)nodes;
    uint16_t h = narrow(bound);
    if (widen(h) > bound)
        h--;
    return widen(h);
}

/* The scalar fp16 loop: the fallback and the tail of the F16C loop. */
static void fp16_scalar(float *x, uint16_t *v, size_t lo, size_t hi, float W, float lim)
{
    for (size_t i = lo; i < hi; i++) {
        float y = x[i] / W;
        y = y > lim ? lim : y;
        y = y < -lim ? -lim : y;
        v[i] = gk_float_to_half(y);
        x[i] -= W * gk_half_to_float(v[i]);
    }
}

#if CAST_HAVE_F16C
__attribute__((target("avx,f16c"))) static size_t fp16_f16c(float *x, uint16_t *v, size_t d,
                                                             float W, float lim)
{
    __m256 w = _mm256_set1_ps(W), hi = _mm256_set1_ps(lim), lo = _mm256_set1_ps(-lim);
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        __m256 y = _mm256_max_ps(_mm256_min_ps(_mm256_div_ps(xv, w), hi), lo);
        __m128i h = _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(v + i), h);
        _mm256_storeu_ps(x + i, _mm256_sub_ps(xv, _mm256_mul_ps(w, _mm256_cvtph_ps(h))));
    }
    return i;
}

__attribute__((target("avx,f16c"))) static size_t fp16_widen_f16c(const uint16_t *v, size_t d,
                                                                   float *out)
{
    size_t i = 0;
    for (; i + 8 <= d; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i))));
    return i;
}

/* From cpuid (clang before 18 has no __builtin_cpu_supports("f16c")): AVX state is
   usable only if the OS saves it (OSXSAVE, then XCR0 bits 1 and 2). */
static int have_f16c(void)
{
    unsigned a, b, c, d, lo = 0, hi = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return 0;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (c & bit_AVX) && (c & bit_F16C) && (lo & 6) == 6;
}
#endif

static int fp16_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel, done = 0;
    float W = (float)call->nodes;
    float lim = cast_limit(gk_float_to_half, gk_half_to_float, 0x7bffu, call->nodes);
#if CAST_HAVE_F16C
    if (have_f16c())
        done = fp16_f16c(x, send, d, W, lim);
#endif
    fp16_scalar(x, send, done, d, W, lim);
    *bytes = d * sizeof(uint16_t);
    return GCOMP_OK;
}

static int fp16_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                           const size_t *bytes, int nrecv, float *out)
{
    (void)x;
    size_t d = call->layer->numel, done = 0;
    if (nrecv != 1 || bytes[0] != d * sizeof(uint16_t))
        return GCOMP_PROTOCOL;
    const uint16_t *sum = recv[0];
#if CAST_HAVE_F16C
    if (have_f16c())
        done = fp16_widen_f16c(sum, d, out);
#endif
    for (size_t i = done; i < d; i++)
        out[i] = gk_half_to_float(sum[i]);
    return GCOMP_OK;
}

static int bf16_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel;
    float W = (float)call->nodes;
    float lim = cast_limit(gk_float_to_bf16, gk_bf16_to_float, 0x7f7fu, call->nodes);
    uint16_t *v = send;
    for (size_t i = 0; i < d; i++) {
        float y = x[i] / W;
        y = y > lim ? lim : y;
        y = y < -lim ? -lim : y;
        uint32_t u;
        memcpy(&u, &y, 4);
        u = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        v[i] = (uint16_t)u;
        u <<= 16;
        float back;
        memcpy(&back, &u, 4);
        x[i] -= W * back;
    }
    *bytes = d * sizeof(uint16_t);
    return GCOMP_OK;
}

static int bf16_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                           const size_t *bytes, int nrecv, float *out)
{
    (void)x;
    size_t d = call->layer->numel;
    if (nrecv != 1 || bytes[0] != d * sizeof(uint16_t))
        return GCOMP_PROTOCOL;
    const uint16_t *sum = recv[0];
    for (size_t i = 0; i < d; i++) {
        uint32_t u = (uint32_t)sum[i] << 16;
        memcpy(&out[i], &u, 4);
    }
    return GCOMP_OK;
}

const gk_codec_impl gk_fp16_cpu = {.encode = fp16_cpu_encode, .decode = fp16_cpu_decode};
const gk_codec_impl gk_bf16_cpu = {.encode = bf16_cpu_encode, .decode = bf16_cpu_decode};
