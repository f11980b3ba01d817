/*
 * maxmin: the optimised CPU implementation (semantics in ref/maxmin.c). Per bucket:
 * one min/max pass, then one pass that quantises in float32 (multiplying by the
 * reciprocal of the unit, so a level can differ from the reference's double division
 * by one where x sits on a rounding boundary), packs the levels and takes the decoded
 * value off x (the residual, done here instead of in decode).
 *
 * When b divides 8 (the default b = 4 included), SSE2 quantises, packs and unpacks
 * sixteen elements at a time with no table lookups: encode computes each value in
 * double as gk_maxmin_value does (so the residual is the reference's bit for bit),
 * decode in float32 as mn + level * unit (within an ulp of the reference's value)
 * when the bucket's range fits a float. Other widths, and ranges near FLT_MAX, take
 * the exact per-bucket table of the 2^b levels (gk_maxmin_value) through the bit
 * stream. Decode walks out once, bucket by bucket, adding every
 * node's values while the bucket is in L1, and scales it by 1 / W there.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../quant.h"
#include "../rng.h"
#include "bits.h"
#include "gcomp.h"

/* Elements per chunk of uniforms (a multiple of 16: whole SSE2 groups). */
#define MAXMIN_CHUNK 256

/* Decoded value of each level of a bucket (top + 1 entries). */
static void maxmin_table(float mn, double unit, unsigned top, float *lut)
{
    for (unsigned l = 0; l <= top; l++)
        lut[l] = gk_maxmin_value(mn, unit, l);
}

/* The float32 unit of a bucket for the fast path: 0 for a constant bucket (every
   level then decodes to mn exactly, as gk_maxmin_value does), or -1 when
   mn + top * unit could overflow a float, in which case the exact table is used. */
static float maxmin_unit_f32(double unit, unsigned top, float mn)
{
    if (unit < GK_MAXMIN_MIN_UNIT)
        return 0.0f;
    if (unit * (double)top + fabs((double)mn) >= (double)FLT_MAX / 2)
        return -1.0f;
    return (float)unit;
}

/* Minimum and maximum of x[0 .. n-1], n >= 1; the comparisons of gk_minmax. */
static inline void maxmin_minmax(const float *x, size_t n, float *mn, float *mx)
{
#ifdef __SSE2__
    if (n >= 16) {
        /* _mm_min_ps(v, lo) is v < lo ? v : lo, _mm_max_ps(v, hi) is v > hi ? v : hi. */
        __m128 lo0 = _mm_loadu_ps(x), lo1 = lo0, hi0 = lo0, hi1 = lo0;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + i + 4);
            lo0 = _mm_min_ps(a, lo0);
            lo1 = _mm_min_ps(b, lo1);
            hi0 = _mm_max_ps(a, hi0);
            hi1 = _mm_max_ps(b, hi1);
        }
        float l[8], h[8];
        _mm_storeu_ps(l, lo0);
        _mm_storeu_ps(l + 4, lo1);
        _mm_storeu_ps(h, hi0);
        _mm_storeu_ps(h + 4, hi1);
        float a = l[0], b = h[0];
        for (int j = 1; j < 8; j++) {
            a = l[j] < a ? l[j] : a;
            b = h[j] > b ? h[j] : b;
        }
        for (; i < n; i++) {
            a = x[i] < a ? x[i] : a;
            b = x[i] > b ? x[i] : b;
        }
        *mn = a;
        *mx = b;
        return;
    }
#endif
    gk_minmax(x, n, mn, mx);
}

/* The level of one element: min(trunc((v - mn) inv + rho), top), the argument >= 0
   (the truncation is the floor). Also catches v - mn overflowing to Inf. */
static inline unsigned maxmin_level(float v, float mn, float inv, float rho, float ftop)
{
    float t = (v - mn) * inv + rho;
    t = t < ftop ? t : ftop;
    return (unsigned)t;
}

#ifdef __SSE2__
/*
 * Sixteen elements of the fast path: levels into the 2b bytes at field, and
 * x -= gk_maxmin_value(mn, unit, level) (unit 0 for a constant bucket). The levels are narrowed to bytes with saturating packs
 * (they are <= 255), then neighbouring fields are merged pairwise (each 16-bit lane
 * lo | hi << 8 becomes lo | hi << w) until 8 / b of them share a byte.
 */
static inline void maxmin_quant16(float *x, const float *rho, float mn, float inv, float ftop,
                                  double unit, unsigned b, uint8_t *field)
{
    const __m128 vmn = _mm_set1_ps(mn), vinv = _mm_set1_ps(inv), vtop = _mm_set1_ps(ftop);
    const __m128d vmnd = _mm_set1_pd((double)mn), vunitd = _mm_set1_pd(unit);
    __m128i lv[4];
    for (int g = 0; g < 4; g++) {
        __m128 v = _mm_loadu_ps(x + 4 * g);
        __m128 t = _mm_add_ps(_mm_mul_ps(_mm_sub_ps(v, vmn), vinv), _mm_loadu_ps(rho + 4 * g));
        /* min_ps(t, top) is t < top ? t : top, so Inf also becomes top. */
        lv[g] = _mm_cvttps_epi32(_mm_min_ps(t, vtop));
        /* The value in double, as gk_maxmin_value: the residual matches the
           reference's bit for bit (it is small next to x, so float would not do). */
        __m128d v0 = _mm_add_pd(vmnd, _mm_mul_pd(_mm_cvtepi32_pd(lv[g]), vunitd));
        __m128d v1 = _mm_add_pd(
            vmnd, _mm_mul_pd(_mm_cvtepi32_pd(_mm_shuffle_epi32(lv[g], 0xee)), vunitd));
        __m128 val = _mm_movelh_ps(_mm_cvtpd_ps(v0), _mm_cvtpd_ps(v1));
        _mm_storeu_ps(x + 4 * g, _mm_sub_ps(v, val));
    }
    __m128i w = _mm_packus_epi16(_mm_packs_epi32(lv[0], lv[1]), _mm_packs_epi32(lv[2], lv[3]));
    const __m128i low = _mm_set1_epi16(0x00ff);
    for (unsigned width = b; width < 8; width *= 2) {
        __m128i m = _mm_or_si128(_mm_and_si128(w, low),
                                 _mm_sll_epi16(_mm_srli_epi16(w, 8), _mm_cvtsi32_si128((int)width)));
        w = _mm_packus_epi16(m, m);
    }
    if (b == 8) {
        _mm_storeu_si128((__m128i *)field, w);
    } else if (b == 4) {
        _mm_storel_epi64((__m128i *)field, w);
    } else {
        uint32_t u = (uint32_t)_mm_cvtsi128_si32(w);
        memcpy(field, &u, 2 * b); /* b = 2: 4 bytes, b = 1: 2 bytes */
    }
}

/* The sixteen levels at field (2b bytes), as the inverse of maxmin_quant16's merges,
   in four vectors of 32-bit integers. */
static inline void maxmin_unpack16(const uint8_t *field, unsigned b, __m128i lv[4])
{
    __m128i w;
    if (b == 8) {
        w = _mm_loadu_si128((const __m128i *)field);
    } else if (b == 4) {
        w = _mm_loadl_epi64((const __m128i *)field);
    } else {
        uint32_t u = 0;
        memcpy(&u, field, 2 * b);
        w = _mm_cvtsi32_si128((int)u);
    }
    /* Each stage splits every byte's two fields of width `width` into two bytes. */
    for (unsigned width = 4; width >= b && b < 8; width /= 2) {
        __m128i mask = _mm_set1_epi8((char)((1u << width) - 1u));
        __m128i lo = _mm_and_si128(w, mask);
        __m128i hi = _mm_and_si128(_mm_srl_epi16(w, _mm_cvtsi32_si128((int)width)), mask);
        w = _mm_unpacklo_epi8(lo, hi);
        if (width == 1)
            break;
    }
    const __m128i zero = _mm_setzero_si128();
    __m128i l16 = _mm_unpacklo_epi8(w, zero), h16 = _mm_unpackhi_epi8(w, zero);
    lv[0] = _mm_unpacklo_epi16(l16, zero);
    lv[1] = _mm_unpackhi_epi16(l16, zero);
    lv[2] = _mm_unpacklo_epi16(h16, zero);
    lv[3] = _mm_unpackhi_epi16(h16, zero);
}
#endif

/*
 * The fast path's quantisation of one chunk of a bucket (b dividing 8): len elements
 * at x, their levels into field (which starts on a byte; the chunk starts on a whole
 * number of bytes into the bucket's field). Sixteen at a time with SSE2, then the
 * rest element by element into the last, zero-padded bytes.
 */
static inline void maxmin_quant_chunk(float *x, const float *rho, size_t len, float mn,
                                      float inv, float ftop, double unit, unsigned b,
                                      uint8_t *field)
{
    size_t j = 0;
#ifdef __SSE2__
    for (; j + 16 <= len; j += 16)
        maxmin_quant16(x + j, rho + j, mn, inv, ftop, unit, b, field + j * b / 8);
#endif
    if (j == len)
        return;
    size_t first = j * b / 8;
    memset(field + first, 0, gk_maxmin_bucket_bytes(len, (int)b) - first);
    for (; j < len; j++) {
        unsigned l = maxmin_level(x[j], mn, inv, rho[j], ftop);
        x[j] -= (float)((double)mn + (double)l * unit);
        field[j * b / 8] |= (uint8_t)(l << (j * b % 8));
    }
}

static int maxmin_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_MAXMIN_BUCKET];
    int bits = (int)call->spec->v[GK_MAXMIN_BITS];
    bool stochastic = call->spec->v[GK_MAXMIN_STOCHASTIC] != 0.0;
    unsigned top = (1u << bits) - 1u, b = (unsigned)bits;
    size_t nb = (d + B - 1) / B;
    uint8_t *p = send, *field = p + 8 * nb;
    gk_bitwriter bw = {.p = field};
    float rho[MAXMIN_CHUNK], lut[256];
    unsigned lv[MAXMIN_CHUNK];
    gk_rng rng;
    gk_rng_seed(&rng, call->seed, call->layer->id, call->step, 1 + (uint64_t)call->node);
    for (size_t j = 0; j < MAXMIN_CHUNK; j++)
        rho[j] = 0.5f;
    for (size_t k = 0; k < nb; k++) {
        size_t lo = k * B, hi = lo + B < d ? lo + B : d;
        float mn, mx;
        maxmin_minmax(x + lo, hi - lo, &mn, &mx);
        gk_store_f32(p + 8 * k, mn);
        gk_store_f32(p + 8 * k + 4, mx);
        double unit = gk_maxmin_unit(mn, mx, bits);
        bool constant = unit < GK_MAXMIN_MIN_UNIT;
        float inv = constant ? 0.0f : (float)(1.0 / unit), ftop = (float)top;
        if (8 % bits == 0) {
            /* The fast path; a constant bucket has inv = 0 and x - mn finite, so every
               level is floor(rho) = 0, and unit 0 makes its value mn. */
            for (size_t c = lo; c < hi; c += MAXMIN_CHUNK) {
                size_t len = hi - c < MAXMIN_CHUNK ? hi - c : MAXMIN_CHUNK;
                if (stochastic)
                    for (size_t j = 0; j < len; j++)
                        rho[j] = gk_rng_uniform(&rng);
                maxmin_quant_chunk(x + c, rho, len, mn, inv, ftop, constant ? 0.0 : unit, b,
                                   field + (c - lo) * b / 8);
            }
            field += gk_maxmin_bucket_bytes(hi - lo, bits);
            continue;
        }
        /* The exact path through the bit stream, which starts at this bucket's field. */
        bw.p = field;
        bool table = hi - lo > top;
        if (table)
            maxmin_table(mn, unit, top, lut);
        for (size_t c = lo; c < hi; c += MAXMIN_CHUNK) {
            size_t len = hi - c < MAXMIN_CHUNK ? hi - c : MAXMIN_CHUNK;
            if (stochastic)
                for (size_t j = 0; j < len; j++)
                    rho[j] = gk_rng_uniform(&rng);
            for (size_t j = 0; j < len; j++)
                lv[j] = constant ? 0u : maxmin_level(x[c + j], mn, inv, rho[j], ftop);
            if (table)
                for (size_t j = 0; j < len; j++)
                    x[c + j] -= lut[lv[j]];
            else
                for (size_t j = 0; j < len; j++)
                    x[c + j] -= gk_maxmin_value(mn, unit, lv[j]);
            for (size_t j = 0; j < len; j++)
                gk_bw_put(&bw, lv[j], b);
        }
        gk_bw_flush(&bw);
        field += gk_maxmin_bucket_bytes(hi - lo, bits);
    }
    *bytes = gk_maxmin_bytes(d, B, bits);
    return GCOMP_OK;
}

/*
 * o[0 .. len-1] = (first ? 0 : o) + the decoded values of one node's bucket field on
 * the fast path (b dividing 8, value mn + level * unit in float32).
 */
static inline void maxmin_decode_fast(const uint8_t *field, size_t len, unsigned b, float mn,
                                      float unit, bool first, float *o)
{
    size_t j = 0;
#ifdef __SSE2__
    const __m128 vmn = _mm_set1_ps(mn), vunit = _mm_set1_ps(unit);
    for (; j + 16 <= len; j += 16) {
        __m128i lv[4];
        maxmin_unpack16(field + j * b / 8, b, lv);
        for (int g = 0; g < 4; g++) {
            __m128 val = _mm_add_ps(vmn, _mm_mul_ps(_mm_cvtepi32_ps(lv[g]), vunit));
            if (!first)
                val = _mm_add_ps(_mm_loadu_ps(o + j + 4 * g), val);
            _mm_storeu_ps(o + j + 4 * g, val);
        }
    }
#endif
    unsigned mask = (1u << b) - 1u;
    for (; j < len; j++) {
        unsigned l = (field[j * b / 8] >> (j * b % 8)) & mask;
        float val = mn + (float)l * unit;
        o[j] = first ? val : o[j] + val;
    }
}

static int maxmin_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                             const size_t *bytes, int nrecv, float *out)
{
    (void)x; /* the residual was taken in encode */
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_MAXMIN_BUCKET];
    int bits = (int)call->spec->v[GK_MAXMIN_BITS];
    unsigned top = (1u << bits) - 1u, b = (unsigned)bits;
    size_t nb = (d + B - 1) / B, bb = gk_maxmin_bucket_bytes(B, bits);
    if (gk_maxmin_check(call, recv, bytes, nrecv, B, bits))
        return GCOMP_PROTOCOL;
    float lut[256], inv = 1.0f / (float)nrecv;
    for (size_t k = 0; k < nb; k++) {
        size_t lo = k * B, hi = lo + B < d ? lo + B : d;
        float *o = out + lo;
        for (int w = 0; w < nrecv; w++) {
            const uint8_t *p = recv[w], *field = p + 8 * nb + k * bb;
            float mn = gk_load_f32(p + 8 * k), mx = gk_load_f32(p + 8 * k + 4);
            double unit = gk_maxmin_unit(mn, mx, bits);
            float unitf = maxmin_unit_f32(unit, top, mn);
            if (8 % bits == 0 && unitf >= 0.0f) {
                /* Constant shifts inside: the compiler specialises each width. */
                switch (bits) {
                case 1: maxmin_decode_fast(field, hi - lo, 1, mn, unitf, w == 0, o); break;
                case 2: maxmin_decode_fast(field, hi - lo, 2, mn, unitf, w == 0, o); break;
                case 4: maxmin_decode_fast(field, hi - lo, 4, mn, unitf, w == 0, o); break;
                default: maxmin_decode_fast(field, hi - lo, 8, mn, unitf, w == 0, o); break;
                }
                continue;
            }
            /* The exact path through the bit stream. */
            gk_bitreader br = {.p = field};
            bool table = hi - lo > top;
            if (table)
                maxmin_table(mn, unit, top, lut);
            for (size_t i = 0; i < hi - lo; i++) {
                unsigned l = gk_br_get(&br, b);
                float val = table ? lut[l] : gk_maxmin_value(mn, unit, l);
                o[i] = w == 0 ? val : o[i] + val;
            }
        }
        for (size_t i = 0; i < hi - lo; i++)
            o[i] *= inv;
    }
    return GCOMP_OK;
}

const gk_codec_impl gk_maxmin_cpu = {.encode = maxmin_cpu_encode,
                                     .decode = maxmin_cpu_decode};
