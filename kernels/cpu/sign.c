/*
 * signsgd, signnorm, onebit: the optimised CPU implementation. Encode is one pass over
 * x in 32-element words: each word's sign bits are packed (SSE2 compare + movemask)
 * while the reduction the codec needs (any nonzero, l1 norm, sum and count of the
 * negatives) is taken in float over the word and added to double accumulators per
 * word. Decode is one pass over out and x (gk_sign_decode): every node's word is read
 * once, the output written once and the residual taken off x in the same pass.
 * Semantics and payloads are those of ref/sign.c and quant.h.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../quant.h"
#include "bits.h"
#include "gcomp.h"

/* Set bits of a word (no popcnt instruction in the baseline x86-64). */
static inline unsigned popcount32(uint32_t v)
{
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    return (((v + (v >> 4)) & 0x0f0f0f0fu) * 0x01010101u) >> 24;
}

#ifdef __SSE2__
/* The sum of the four lanes. */
static inline float hsum4(__m128 v)
{
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
    return _mm_cvtss_f32(v);
}
#endif

/*
 * The sign bits of x into bits, with per word (32 elements) and in double across the
 * words: *abs = sum |x|, *neg = sum of the x < 0, *all = sum x, and *nonzero whether
 * any x != 0. The sums are only taken when the pointer is not NULL.
 */
static void sign_pack(const float *x, size_t d, uint8_t *bits, double *abs, double *neg,
                      double *all, int *nonzero)
{
    size_t full = d / 32;
    double sa = 0.0, sn = 0.0, sl = 0.0;
    int any = 0;
#ifdef __SSE2__
    const __m128 zero = _mm_setzero_ps();
    const __m128 absmask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    __m128 nz = zero;
    for (size_t k = 0; k < full; k++) {
        const float *v = x + 32 * k;
        __m128 a = zero, n = zero, l = zero;
        uint32_t word = 0;
        for (unsigned g = 0; g < 8; g++) {
            __m128 xv = _mm_loadu_ps(v + 4 * g), m = _mm_cmplt_ps(xv, zero);
            word |= (uint32_t)_mm_movemask_ps(m) << (4 * g);
            if (abs)
                a = _mm_add_ps(a, _mm_and_ps(xv, absmask));
            if (neg) {
                n = _mm_add_ps(n, _mm_and_ps(m, xv));
                l = _mm_add_ps(l, xv);
            }
            if (nonzero)
                nz = _mm_or_ps(nz, _mm_cmpneq_ps(xv, zero));
        }
        gk_store_le32(bits + 4 * k, word);
        if (abs)
            sa += hsum4(a);
        if (neg) {
            sn += hsum4(n);
            sl += hsum4(l);
        }
    }
    any = _mm_movemask_ps(nz) != 0;
#else
    for (size_t k = 0; k < full; k++) {
        const float *v = x + 32 * k;
        float a = 0.0f, n = 0.0f, l = 0.0f;
        for (unsigned j = 0; j < 32; j++) {
            a += fabsf(v[j]);
            n += v[j] < 0.0f ? v[j] : 0.0f;
            l += v[j];
            any |= v[j] != 0.0f;
        }
        gk_store_le32(bits + 4 * k, gk_pack_neg32(v));
        sa += a;
        sn += n;
        sl += l;
    }
#endif
    if (32 * full < d) {
        const float *v = x + 32 * full;
        size_t len = d - 32 * full;
        gk_store_le32(bits + 4 * full, gk_pack_neg_tail(v, len));
        for (size_t j = 0; j < len; j++) {
            sa += fabsf(v[j]);
            sn += v[j] < 0.0f ? v[j] : 0.0f;
            sl += v[j];
            any |= v[j] != 0.0f;
        }
    }
    if (abs)
        *abs = sa;
    if (neg) {
        *neg = sn;
        *all = sl;
    }
    if (nonzero)
        *nonzero = any;
}

/* The number of set bits of a field of d elements (its padding bits are zero). */
static size_t count_bits(const uint8_t *bits, size_t d)
{
    size_t n = 0;
    for (size_t k = 0; k < (d + 31) / 32; k++)
        n += popcount32(gk_load_le32(bits + 4 * k));
    return n;
}

static int signsgd_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel;
    uint8_t *b = send;
    int any = 0;
    sign_pack(x, d, b + 4, NULL, NULL, NULL, &any);
    gk_store_u32(b, (uint32_t)any);
    *bytes = gk_signsgd_bytes(d);
    return GCOMP_OK;
}

static int signsgd_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                              const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (gk_signsgd_check(call, recv, bytes, nrecv))
        return GCOMP_PROTOCOL;
    /* Votes are small integers: exact in float. An abstaining node counts 0 for
       both bit values. */
    const uint8_t *bits[nrecv];
    float v1[nrecv], v0[nrecv];
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *b = recv[w];
        float on = gk_load_u32(b) ? 1.0f : 0.0f;
        bits[w] = b + 4;
        v1[w] = -on;
        v0[w] = on;
    }
    const uint8_t *own = recv[call->node];
    gk_sign_decode(bits, v1, v0, nrecv, d, true, out, gk_load_u32(own) ? own + 4 : NULL, -1.0f,
                   1.0f, x);
    return GCOMP_OK;
}

static int signnorm_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel;
    uint8_t *b = send;
    double l1 = 0.0;
    sign_pack(x, d, b + 4, &l1, NULL, NULL, NULL);
    gk_store_f32(b, (float)l1);
    *bytes = gk_signnorm_bytes(d);
    return GCOMP_OK;
}

static int signnorm_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (gk_scaled_check(call, recv, bytes, nrecv, gk_signnorm_bytes(d)))
        return GCOMP_PROTOCOL;
    const uint8_t *bits[nrecv];
    float v1[nrecv], v0[nrecv];
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *b = recv[w];
        float s = gk_load_f32(b) / (float)d / (float)nrecv;
        bits[w] = b + 4;
        v1[w] = -s;
        v0[w] = s;
    }
    const uint8_t *own = recv[call->node];
    float s = gk_load_f32(own) / (float)d;
    gk_sign_decode(bits, v1, v0, nrecv, d, false, out, own + 4, -s, s, x);
    return GCOMP_OK;
}

static int onebit_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel;
    uint8_t *b = send;
    double neg = 0.0, all = 0.0;
    sign_pack(x, d, b + 8, NULL, &neg, &all, NULL);
    size_t n0 = count_bits(b + 8, d), n1 = d - n0;
    gk_store_f32(b, n0 ? (float)(neg / (double)n0) : 0.0f);
    gk_store_f32(b + 4, n1 ? (float)((all - neg) / (double)n1) : 0.0f);
    *bytes = gk_onebit_bytes(d);
    return GCOMP_OK;
}

static int onebit_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                             const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (gk_onebit_check(call, recv, bytes, nrecv))
        return GCOMP_PROTOCOL;
    const uint8_t *bits[nrecv];
    float v1[nrecv], v0[nrecv], inv = 1.0f / (float)nrecv;
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *b = recv[w];
        bits[w] = b + 8;
        v1[w] = gk_load_f32(b) * inv;
        v0[w] = gk_load_f32(b + 4) * inv;
    }
    const uint8_t *own = recv[call->node];
    gk_sign_decode(bits, v1, v0, nrecv, d, false, out, own + 8, gk_load_f32(own),
                   gk_load_f32(own + 4), x);
    return GCOMP_OK;
}

const gk_codec_impl gk_signsgd_cpu = {.encode = signsgd_cpu_encode,
                                      .decode = signsgd_cpu_decode};
const gk_codec_impl gk_signnorm_cpu = {.encode = signnorm_cpu_encode,
                                       .decode = signnorm_cpu_decode};
const gk_codec_impl gk_onebit_cpu = {.encode = onebit_cpu_encode,
                                     .decode = onebit_cpu_decode};
