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
#include <stddef.h>
#include <stdint.h>

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

#endif /* GK_CPU_BITS_H */
