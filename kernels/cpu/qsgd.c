/*
 * qsgd: the optimised CPU implementation (semantics in ref/qsgd.c). Per bucket: one
 * l2 pass, the bucket's uniforms drawn into a small buffer (the generator is
 * sequential), then one branch-free pass (SSE2, sixteen elements at a time) that
 * writes the int8 levels and takes the decoded value off x (the residual, done here
 * instead of in decode). Decode is one pass over out, bucket by bucket.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../quant.h"
#include "../rng.h"
#include "bits.h"
#include "gcomp.h"

#define QSGD_CHUNK 256

#ifdef __SSE2__
/*
 * Sixteen elements at a time: level = min(floor(s |v| / norm + u), s) with the floor a
 * truncation (the argument is >= 0), the signed levels narrowed to int8 with saturating
 * packs (|level| <= 127), and x -= scale * (sign * level), every float operation the
 * scalar loop's in the same order. Returns the elements done (a multiple of 16).
 */
static size_t qsgd_quantise_sse2(float *x, const float *u, size_t len, float fs, float norm,
                                 float scale, int8_t *q)
{
    const __m128 vs = _mm_set1_ps(fs), vn = _mm_set1_ps(norm), vsc = _mm_set1_ps(scale);
    const __m128 absmask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    const __m128 signbit = _mm_castsi128_ps(_mm_set1_epi32((int)0x80000000u));
    const __m128 zero = _mm_setzero_ps();
    size_t j = 0;
    for (; j + 16 <= len; j += 16) {
        __m128i lv[4];
        for (int g = 0; g < 4; g++) {
            __m128 v = _mm_loadu_ps(x + j + 4 * g);
            __m128 t = _mm_div_ps(_mm_mul_ps(vs, _mm_and_ps(v, absmask)), vn);
            t = _mm_add_ps(t, _mm_loadu_ps(u + j + 4 * g));
            t = _mm_min_ps(_mm_cvtepi32_ps(_mm_cvttps_epi32(t)), vs);
            __m128 neg = _mm_cmplt_ps(v, zero);
            __m128 sq = _mm_or_ps(t, _mm_and_ps(neg, signbit));
            _mm_storeu_ps(x + j + 4 * g, _mm_sub_ps(v, _mm_mul_ps(vsc, sq)));
            lv[g] = _mm_cvttps_epi32(sq);
        }
        __m128i w = _mm_packs_epi16(_mm_packs_epi32(lv[0], lv[1]), _mm_packs_epi32(lv[2], lv[3]));
        _mm_storeu_si128((__m128i *)(q + j), w);
    }
    return j;
}
#endif

static int qsgd_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_QSGD_BUCKET];
    int s = (int)call->spec->v[GK_QSGD_LEVELS];
    size_t nb = gk_qsgd_buckets(d, B);
    uint8_t *norms = send;
    int8_t *q = (int8_t *)((uint8_t *)send + 4 * nb);
    const float fs = (float)s;
    float u[QSGD_CHUNK];
    gk_rng rng;
    gk_rng_seed(&rng, call->seed, call->layer->id, call->step, 1 + (uint64_t)call->node);
    for (size_t k = 0; k < nb; k++) {
        size_t lo = k * B, hi = lo + B < d ? lo + B : d;
        float norm = (float)sqrt(gk_sum_sq(x + lo, hi - lo));
        gk_store_f32(norms + 4 * k, norm);
        float scale = norm / fs; /* gk_qsgd_value's norm / s */
        for (size_t c = lo; c < hi; c += QSGD_CHUNK) {
            size_t len = hi - c < QSGD_CHUNK ? hi - c : QSGD_CHUNK;
            for (size_t j = 0; j < len; j++)
                u[j] = gk_rng_uniform(&rng);
            if (norm == 0.0f) {
                memset(q + c, 0, len);
                continue;
            }
            size_t j = 0;
#ifdef __SSE2__
            j = qsgd_quantise_sse2(x + c, u, len, fs, norm, scale, q + c);
#endif
            for (; j < len; j++) {
                float v = x[c + j];
                float t = floorf(fs * fabsf(v) / norm + u[j]);
                t = t > fs ? fs : t;
                float sq = v < 0.0f ? -t : t;
                q[c + j] = (int8_t)sq;
                x[c + j] = v - scale * sq;
            }
        }
    }
    *bytes = gk_qsgd_bytes(d, B);
    return GCOMP_OK;
}

static int qsgd_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                           const size_t *bytes, int nrecv, float *out)
{
    (void)x; /* the residual was taken in encode */
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_QSGD_BUCKET];
    int s = (int)call->spec->v[GK_QSGD_LEVELS];
    size_t nb = gk_qsgd_buckets(d, B);
    if (gk_qsgd_check(call, recv, bytes, nrecv, B))
        return GCOMP_PROTOCOL;
    /* One pass over out, a bucket at a time: every node's levels are added while the
       bucket is in cache. */
    float inv = 1.0f / (float)nrecv;
    for (size_t k = 0; k < nb; k++) {
        size_t lo = k * B, hi = lo + B < d ? lo + B : d;
        for (int w = 0; w < nrecv; w++) {
            const uint8_t *b = recv[w];
            const int8_t *q = (const int8_t *)(b + 4 * nb);
            float scale = gk_load_f32(b + 4 * k) / (float)s;
            if (w == 0)
                for (size_t i = lo; i < hi; i++)
                    out[i] = scale * (float)q[i];
            else
                for (size_t i = lo; i < hi; i++)
                    out[i] += scale * (float)q[i];
        }
        for (size_t i = lo; i < hi; i++)
            out[i] *= inv;
    }
    return GCOMP_OK;
}

const gk_codec_impl gk_qsgd_cpu = {.encode = qsgd_cpu_encode, .decode = qsgd_cpu_decode};
