/*
 * bits.h: the helpers the optimised quantisers share: sign-bit packing in 32-bit
 * words, a b-bit stream writer and reader, and single-pass reductions (sums, per
 * bucket min/max) written with independent accumulators so the compiler can keep
 * them in vector registers. The bit order is quant.h's (LSB first, little-endian
 * bytes), written byte by byte so it does not depend on the host's byte order.
 */
#ifndef GK_CPU_BITS_H
#define GK_CPU_BITS_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

static inline void gk_store_le32(uint8_t *p, uint32_t w)
{
    p[0] = (uint8_t)w;
    p[1] = (uint8_t)(w >> 8);
    p[2] = (uint8_t)(w >> 16);
    p[3] = (uint8_t)(w >> 24);
}

static inline uint32_t gk_load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Bits 1 = (x[i] < 0) for d elements, zero-padded to whole 32-bit words
   (4 ceil(d/32) bytes). */
static inline void gk_bits_pack_neg(const float *x, size_t d, uint8_t *bits)
{
    size_t full = d / 32;
    for (size_t w = 0; w < full; w++) {
        const float *v = x + 32 * w;
        uint32_t word = 0;
        for (unsigned j = 0; j < 32; j++)
            word |= (uint32_t)(v[j] < 0.0f) << j;
        gk_store_le32(bits + 4 * w, word);
    }
    if (full * 32 < d) {
        uint32_t word = 0;
        for (size_t j = 0; full * 32 + j < d; j++)
            word |= (uint32_t)(x[full * 32 + j] < 0.0f) << j;
        gk_store_le32(bits + 4 * full, word);
    }
}

/* acc[i] += bit i ? v1 : v0 for the d elements of a 1-bit field. */
static inline void gk_bits_select_add(const uint8_t *bits, size_t d, float v1, float v0,
                                      float *acc)
{
    const float sel[2] = {v0, v1};
    size_t full = d / 32;
    for (size_t w = 0; w < full; w++) {
        uint32_t word = gk_load_le32(bits + 4 * w);
        float *a = acc + 32 * w;
        for (unsigned j = 0; j < 32; j++)
            a[j] += sel[(word >> j) & 1u];
    }
    for (size_t i = full * 32; i < d; i++)
        acc[i] += sel[(bits[i / 8] >> (i % 8)) & 1u];
}

/* x[i] -= x[i] < 0 ? v1 : v0: the residual of a sign-coded payload, from x itself. */
static inline void gk_sign_residual(float *x, size_t d, float v1, float v0)
{
    for (size_t i = 0; i < d; i++)
        x[i] -= x[i] < 0.0f ? v1 : v0;
}

/* A stream of b-bit values (b <= 24), LSB first. */
typedef struct gk_bitwriter {
    uint8_t *p;
    uint64_t acc;
    unsigned n; /* bits held in acc, < 32 between calls */
} gk_bitwriter;

static inline void gk_bw_put(gk_bitwriter *w, uint32_t v, unsigned b)
{
    w->acc |= (uint64_t)v << w->n;
    w->n += b;
    if (w->n >= 32) {
        gk_store_le32(w->p, (uint32_t)w->acc);
        w->p += 4;
        w->acc >>= 32;
        w->n -= 32;
    }
}

/* Write the last partial bytes: the stream then covers ceil(bits / 8) bytes. */
static inline void gk_bw_flush(gk_bitwriter *w)
{
    while (w->n > 0) {
        *w->p++ = (uint8_t)w->acc;
        w->acc >>= 8;
        w->n = w->n > 8 ? w->n - 8 : 0;
    }
    w->acc = 0;
}

typedef struct gk_bitreader {
    const uint8_t *p;
    uint64_t acc;
    unsigned n;
} gk_bitreader;

/* The next b-bit value (b <= 24). The caller reads no more values than were written,
   so the reader never runs past the stream's last byte. */
static inline uint32_t gk_br_get(gk_bitreader *r, unsigned b)
{
    while (r->n < b) {
        r->acc |= (uint64_t)*r->p++ << r->n;
        r->n += 8;
    }
    uint32_t v = (uint32_t)(r->acc & ((1u << b) - 1u));
    r->acc >>= b;
    r->n -= b;
    return v;
}

/* sum |x| and sum x^2 in double, eight independent lanes. */
static inline double gk_sum_abs(const float *x, size_t n)
{
    double a[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            a[j] += fabsf(x[i + j]);
    double s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; i < n; i++)
        s += fabsf(x[i]);
    return s;
}

static inline double gk_sum_sq(const float *x, size_t n)
{
    double a[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            a[j] += (double)x[i + j] * x[i + j];
    double s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

/* Minimum and maximum of x[0 .. n-1], n >= 1, eight lanes. */
static inline void gk_minmax(const float *x, size_t n, float *mn, float *mx)
{
    float lo[8], hi[8];
    for (int j = 0; j < 8; j++)
        lo[j] = hi[j] = x[0];
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            float v = x[i + j];
            lo[j] = v < lo[j] ? v : lo[j];
            hi[j] = v > hi[j] ? v : hi[j];
        }
    for (; i < n; i++) {
        lo[0] = x[i] < lo[0] ? x[i] : lo[0];
        hi[0] = x[i] > hi[0] ? x[i] : hi[0];
    }
    for (int j = 1; j < 8; j++) {
        lo[0] = lo[j] < lo[0] ? lo[j] : lo[0];
        hi[0] = hi[j] > hi[0] ? hi[j] : hi[0];
    }
    *mn = lo[0];
    *mx = hi[0];
}

/*
 * Sign family, one 32-element word at a time. A word of sign bits is packed and
 * unpacked four elements at a time: with SSE2 by a compare and a movemask, and back
 * through a table of the sixteen 4-lane masks; the scalar versions are the fallback.
 */

/* Bits 1 = (v[j] < 0) of 32 elements (-0 is not negative, as in the reference). */
static inline uint32_t gk_pack_neg32(const float *v)
{
#ifdef __SSE2__
    const __m128 zero = _mm_setzero_ps();
    uint32_t word = 0;
    for (unsigned g = 0; g < 8; g++)
        word |= (uint32_t)_mm_movemask_ps(_mm_cmplt_ps(_mm_loadu_ps(v + 4 * g), zero)) << (4 * g);
    return word;
#else
    uint32_t word = 0;
    for (unsigned j = 0; j < 32; j++)
        word |= (uint32_t)(v[j] < 0.0f) << j;
    return word;
#endif
}

/* Bits 1 = (x[i] < 0) of the d mod 32 elements after the last whole word. */
static inline uint32_t gk_pack_neg_tail(const float *v, size_t len)
{
    uint32_t word = 0;
    for (size_t j = 0; j < len; j++)
        word |= (uint32_t)(v[j] < 0.0f) << j;
    return word;
}

#ifdef __SSE2__
/* All ones in lane j of entry k where bit j of k is set. */
static const uint32_t gk_mask4_table[16][4] __attribute__((aligned(16))) = {
    {0, 0, 0, 0}, {~0u, 0, 0, 0}, {0, ~0u, 0, 0}, {~0u, ~0u, 0, 0},
    {0, 0, ~0u, 0}, {~0u, 0, ~0u, 0}, {0, ~0u, ~0u, 0}, {~0u, ~0u, ~0u, 0},
    {0, 0, 0, ~0u}, {~0u, 0, 0, ~0u}, {0, ~0u, 0, ~0u}, {~0u, ~0u, 0, ~0u},
    {0, 0, ~0u, ~0u}, {~0u, 0, ~0u, ~0u}, {0, ~0u, ~0u, ~0u}, {~0u, ~0u, ~0u, ~0u},
};

/* The 4-lane mask of bits 4g .. 4g + 3 of word. */
static inline __m128 gk_mask4(uint32_t word, unsigned g)
{
    return _mm_load_ps((const float *)gk_mask4_table[(word >> (4 * g)) & 15u]);
}

/* Lane-wise mask ? v1 : v0. */
static inline __m128 gk_select4(__m128 mask, __m128 v1, __m128 v0)
{
    return _mm_or_ps(_mm_and_ps(mask, v1), _mm_andnot_ps(mask, v0));
}
#endif

/* Nodes whose 16-entry value tables gk_sign_decode keeps on the stack at a time. */
#define GK_SIGN_TABLE_NODES 32

/*
 * The decode of a sign-coded layer in one pass over out and x, 32 elements (one word
 * of every payload) at a time: out[i] = sum_w (bit_w(i) ? v1[w] : v0[w]), or with
 * vote set its sign (+1, -1 or 0 on a tie); and, when own is not NULL, the residual
 * x[i] -= own bit(i) ? own1 : own0. bits[w] points at node w's field of ceil(d/32)
 * little-endian words; W >= 1. Sums run in float in node order. With SSE2 each node's four
 * bits index a table of the sixteen 4-lane values, so a node costs a load and an add
 * per four elements; with more than GK_SIGN_TABLE_NODES nodes the nodes are added
 * in groups of that many, out holding the partial sums between the groups.
 */
static inline void gk_sign_decode(const uint8_t *const *bits, const float *v1,
                                  const float *v0, int W, size_t d, bool vote, float *out,
                                  const uint8_t *own, float own1, float own0, float *x)
{
    size_t full = d / 32;
#ifdef __SSE2__
    const __m128 one = _mm_set1_ps(1.0f), zero = _mm_setzero_ps();
    __m128 lut[GK_SIGN_TABLE_NODES][16], olut[16];
    for (unsigned e = 0; e < 16; e++)
        olut[e] = gk_select4(gk_mask4(e, 0), _mm_set1_ps(own1), _mm_set1_ps(own0));
    for (int w0 = 0; w0 < W; w0 += GK_SIGN_TABLE_NODES) {
        int nw = W - w0 < GK_SIGN_TABLE_NODES ? W - w0 : GK_SIGN_TABLE_NODES;
        bool first = w0 == 0, last = w0 + nw >= W;
        for (int w = 0; w < nw; w++)
            for (unsigned e = 0; e < 16; e++)
                lut[w][e] = gk_select4(gk_mask4(e, 0), _mm_set1_ps(v1[w0 + w]),
                                       _mm_set1_ps(v0[w0 + w]));
        for (size_t k = 0; k < full; k++) {
            float *o = out + 32 * k;
            __m128 acc[8];
            for (unsigned g = 0; g < 8; g++)
                acc[g] = first ? zero : _mm_loadu_ps(o + 4 * g);
            for (int w = 0; w < nw; w++) {
                uint32_t word = gk_load_le32(bits[w0 + w] + 4 * k);
                for (unsigned g = 0; g < 8; g++)
                    acc[g] = _mm_add_ps(acc[g], lut[w][(word >> (4 * g)) & 15u]);
            }
            for (unsigned g = 0; g < 8; g++) {
                if (vote && last)
                    acc[g] = _mm_sub_ps(_mm_and_ps(_mm_cmpgt_ps(acc[g], zero), one),
                                        _mm_and_ps(_mm_cmplt_ps(acc[g], zero), one));
                _mm_storeu_ps(o + 4 * g, acc[g]);
            }
            if (own && last) {
                uint32_t ow = gk_load_le32(own + 4 * k);
                float *xv = x + 32 * k;
                for (unsigned g = 0; g < 8; g++)
                    _mm_storeu_ps(xv + 4 * g, _mm_sub_ps(_mm_loadu_ps(xv + 4 * g),
                                                         olut[(ow >> (4 * g)) & 15u]));
            }
        }
    }
#else
    for (size_t k = 0; k < full; k++) {
        for (unsigned j = 0; j < 32; j++) {
            float acc = 0.0f;
            for (int w = 0; w < W; w++)
                acc += (gk_load_le32(bits[w] + 4 * k) >> j) & 1u ? v1[w] : v0[w];
            out[32 * k + j] = vote ? (float)((acc > 0.0f) - (acc < 0.0f)) : acc;
        }
        if (own) {
            uint32_t ow = gk_load_le32(own + 4 * k);
            for (unsigned j = 0; j < 32; j++)
                x[32 * k + j] -= (ow >> j) & 1u ? own1 : own0;
        }
    }
#endif
    /* The elements after the last whole word, one by one. */
    for (size_t i = 32 * full; i < d; i++) {
        float acc = 0.0f;
        for (int w = 0; w < W; w++)
            acc += (bits[w][i / 8] >> (i % 8)) & 1u ? v1[w] : v0[w];
        out[i] = vote ? (float)((acc > 0.0f) - (acc < 0.0f)) : acc;
        if (own)
            x[i] -= (own[i / 8] >> (i % 8)) & 1u ? own1 : own0;
    }
}

#endif /* GK_CPU_BITS_H */
