/*
 * terngrad: the optimised CPU implementation (semantics in ref/terngrad.c). Three
 * reduction passes with independent lanes (mean, variance, clipped max; min and max
 * written as comparisons, which the compiler vectorises, where fminf/fmaxf are calls),
 * then the codes in chunks: the chunk's uniforms are drawn first (the generator is
 * sequential), then one branch-free pass compares, takes s t off x (the residual, done
 * here instead of in decode) and packs four 2-bit codes per byte. Decode is one pass
 * over out in chunks, every node's codes added through a four-entry table while the
 * chunk is in cache.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../quant.h"
#include "../rng.h"
#include "bits.h"
#include "gcomp.h"

/* Elements per chunk (a multiple of 4: whole code bytes). */
#define TERN_CHUNK 512

#ifdef __SSE2__
/* Bits b3 b2 b1 b0 spread to bits 6, 4, 2, 0. */
static const uint8_t tern_spread[16] = {0x00, 0x01, 0x04, 0x05, 0x10, 0x11, 0x14, 0x15,
                                        0x40, 0x41, 0x44, 0x45, 0x50, 0x51, 0x54, 0x55};
#endif

static int terngrad_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel, i;
    uint8_t *b = send, *codes = b + 4;
    double acc[8] = {0}, sum = 0.0, var = 0.0;
    for (i = 0; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += x[i + j];
    for (int j = 0; j < 8; j++)
        sum += acc[j];
    for (; i < d; i++)
        sum += x[i];
    double mean = sum / (double)d;
    memset(acc, 0, sizeof(acc));
    for (i = 0; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += ((double)x[i + j] - mean) * ((double)x[i + j] - mean);
    for (int j = 0; j < 8; j++)
        var += acc[j];
    for (; i < d; i++)
        var += ((double)x[i] - mean) * ((double)x[i] - mean);
    float clip = (float)(2.5 * sqrt(var / (double)d));
    if (clip == 0.0f)
        clip = INFINITY;
    /* x holds no NaN (codec.h), so the comparisons are fminf and fmaxf. */
    float mx[8] = {0}, s = 0.0f;
    for (i = 0; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; j++) {
            float a = fabsf(x[i + j]);
            a = a < clip ? a : clip;
            mx[j] = a > mx[j] ? a : mx[j];
        }
    for (int j = 0; j < 8; j++)
        s = mx[j] > s ? mx[j] : s;
    for (; i < d; i++) {
        float a = fabsf(x[i]);
        a = a < clip ? a : clip;
        s = a > s ? a : s;
    }
    gk_store_f32(b, s);
    gk_rng rng;
    gk_rng_seed(&rng, call->seed, call->layer->id, call->step, 1 + (uint64_t)call->node);
    float u[TERN_CHUNK];
    uint8_t c[TERN_CHUNK];
    for (size_t lo = 0; lo < d; lo += TERN_CHUNK) {
        size_t len = d - lo < TERN_CHUNK ? d - lo : TERN_CHUNK;
        for (size_t j = 0; j < len; j++)
            u[j] = gk_rng_uniform(&rng);
        float *v = x + lo;
        uint8_t *out = codes + lo / 4;
        size_t j = 0;
#ifdef __SSE2__
        /* Four elements, one code byte, at a time: bit 2j of the byte is "kept and
           positive", bit 2j + 1 "kept and negative" (codes 1 and 2). */
        const __m128 vs = _mm_set1_ps(s), vclip = _mm_set1_ps(clip), zero = _mm_setzero_ps();
        const __m128 absmask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
        const __m128 signbit = _mm_castsi128_ps(_mm_set1_epi32((int)0x80000000u));
        for (; j + 4 <= len; j += 4) {
            __m128 xv = _mm_loadu_ps(v + j);
            __m128 a = _mm_min_ps(_mm_and_ps(xv, absmask), vclip);
            __m128 keep = _mm_cmplt_ps(_mm_mul_ps(_mm_loadu_ps(u + j), vs), a);
            __m128 neg = _mm_cmplt_ps(xv, zero);
            __m128 st = _mm_and_ps(keep, _mm_or_ps(vs, _mm_and_ps(neg, signbit)));
            _mm_storeu_ps(v + j, _mm_sub_ps(xv, st));
            unsigned km = (unsigned)_mm_movemask_ps(keep), nm = (unsigned)_mm_movemask_ps(neg);
            out[j / 4] = (uint8_t)(tern_spread[km & ~nm] | tern_spread[km & nm] << 1);
        }
#endif
        /* What SSE2 left (all of the chunk without it, else the last partial byte),
           element by element, then packed from j (a multiple of 4) on. */
        size_t done = j;
        for (; j < len; j++) {
            float a = fabsf(v[j]);
            a = a < clip ? a : clip;
            int keep = u[j] * s < a, neg = v[j] < 0.0f;
            c[j] = (uint8_t)(keep * (1 + neg));
            v[j] -= keep ? (neg ? -s : s) : 0.0f;
        }
        for (; j % 4; j++)
            c[j] = 0; /* the unused codes of the last byte */
        for (size_t k = done / 4; k < j / 4; k++)
            out[k] = (uint8_t)(c[4 * k] | c[4 * k + 1] << 2 | c[4 * k + 2] << 4 | c[4 * k + 3] << 6);
    }
    *bytes = gk_terngrad_bytes(d);
    return GCOMP_OK;
}

static int terngrad_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    (void)x; /* the residual was taken in encode */
    size_t d = call->layer->numel;
    if (gk_scaled_check(call, recv, bytes, nrecv, gk_terngrad_bytes(d)))
        return GCOMP_PROTOCOL;
    float inv = 1.0f / (float)nrecv;
    for (size_t lo = 0; lo < d; lo += TERN_CHUNK) {
        size_t len = d - lo < TERN_CHUNK ? d - lo : TERN_CHUNK, full = len / 4;
        float *o = out + lo;
        for (int w = 0; w < nrecv; w++) {
            const uint8_t *b = recv[w], *codes = b + 4 + lo / 4;
            float s = gk_load_f32(b);
            const float lut[4] = {0.0f, s, -s, 0.0f};
            if (w == 0) {
                for (size_t k = 0; k < full; k++) {
                    unsigned c = codes[k];
                    o[4 * k] = lut[c & 3u];
                    o[4 * k + 1] = lut[(c >> 2) & 3u];
                    o[4 * k + 2] = lut[(c >> 4) & 3u];
                    o[4 * k + 3] = lut[c >> 6];
                }
                for (size_t j = 4 * full; j < len; j++)
                    o[j] = lut[(codes[j / 4] >> (2 * (j % 4))) & 3u];
                continue;
            }
            for (size_t k = 0; k < full; k++) {
                unsigned c = codes[k];
                o[4 * k] += lut[c & 3u];
                o[4 * k + 1] += lut[(c >> 2) & 3u];
                o[4 * k + 2] += lut[(c >> 4) & 3u];
                o[4 * k + 3] += lut[c >> 6];
            }
            for (size_t j = 4 * full; j < len; j++)
                o[j] += lut[(codes[j / 4] >> (2 * (j % 4))) & 3u];
        }
        for (size_t j = 0; j < len; j++)
            o[j] *= inv;
    }
    return GCOMP_OK;
}

const gk_codec_impl gk_terngrad_cpu = {.encode = terngrad_cpu_encode,
                                       .decode = terngrad_cpu_decode};
