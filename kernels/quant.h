/*
 * quant.h: payload layouts and parameter indices of the sign family, the quantisers
 * and the casts, shared by their scalar references (ref/sign.c, ref/qsgd.c,
 * ref/terngrad.c, ref/maxmin.c, ref/cast.c), their optimised versions (cpu/) and the
 * tests. Every payload has a fixed size for a layer, so max_bytes is exact.
 *
 * Bit order: element i of a 1-bit field is bit (i % 8) of byte i / 8; of a b-bit
 * field, bits i b .. i b + b - 1 of the field read as one little-endian bit string
 * (LSB first). Unused bits are zero. Floats are IEEE float32 in host byte order,
 * read and written with memcpy (a segment need not be aligned).
 *
 *   signsgd   u32 flag (1: this node votes, 0: its layer is all zero and it abstains)
 *             + sign bits (1 = negative), padded to 32-bit words: 4 + 4 ceil(d/32)
 *   signnorm  f32 |x|_1 + sign bits in 32-bit words: 4 + 4 ceil(d/32), i.e. the
 *             32 ceil(d/32) + 32 bits of algorithms.md 2.5
 *   onebit    f32 mu0 (mean of the negatives), f32 mu1 (mean of the rest) + mask bits
 *             (1 = negative) in 32-bit words: 8 + 4 ceil(d/32)
 *   qsgd      f32 l2 norm per bucket (ceil(d/B) of them) + int8 sign*level per
 *             element: 4 ceil(d/B) + d
 *   terngrad  f32 scale s + 2-bit codes (0: 0, 1: +s, 2: -s) four per byte:
 *             4 + ceil(d/4)
 *   maxmin    f32 min, f32 max per bucket (all pairs first), then each bucket's b-bit
 *             levels starting on a byte: 8 ceil(d/B) + sum over buckets ceil(B_k b/8)
 *   fp16/bf16 d narrow values of x / W (allreduce): 2 d
 */
#ifndef GK_QUANT_H
#define GK_QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"
#include "gcomp.h"

/* Indices into gk_spec.v (the order of each codec's params table). */
enum { GK_QSGD_LEVELS = 0, GK_QSGD_BUCKET = 1 };
enum { GK_MAXMIN_BITS = 0, GK_MAXMIN_BUCKET = 1, GK_MAXMIN_STOCHASTIC = 2 };

/* Bytes of a 1-bit field of d elements padded to 32-bit words. */
static inline size_t gk_signbits_bytes(size_t d)
{
    return 4 * ((d + 31) / 32);
}

static inline size_t gk_signsgd_bytes(size_t d)
{
    return 4 + gk_signbits_bytes(d);
}

static inline size_t gk_signnorm_bytes(size_t d)
{
    return 4 + gk_signbits_bytes(d);
}

static inline size_t gk_onebit_bytes(size_t d)
{
    return 8 + gk_signbits_bytes(d);
}

static inline size_t gk_qsgd_buckets(size_t d, size_t bucket)
{
    return (d + bucket - 1) / bucket;
}

static inline size_t gk_qsgd_bytes(size_t d, size_t bucket)
{
    return 4 * gk_qsgd_buckets(d, bucket) + d;
}

static inline size_t gk_terngrad_bytes(size_t d)
{
    return 4 + (d + 3) / 4;
}

/* Bytes of the b-bit levels of a bucket of len elements. */
static inline size_t gk_maxmin_bucket_bytes(size_t len, int bits)
{
    return (len * (size_t)bits + 7) / 8;
}

static inline size_t gk_maxmin_bytes(size_t d, size_t bucket, int bits)
{
    size_t nb = (d + bucket - 1) / bucket, last = d - (nb - 1) * bucket;
    return 8 * nb + (nb - 1) * gk_maxmin_bucket_bytes(bucket, bits) +
           gk_maxmin_bucket_bytes(last, bits);
}

/* Unaligned float and u32 access to payload bytes. */
static inline float gk_load_f32(const void *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

static inline void gk_store_f32(void *p, float f)
{
    memcpy(p, &f, 4);
}

static inline uint32_t gk_load_u32(const void *p)
{
    uint32_t u;
    memcpy(&u, p, 4);
    return u;
}

static inline void gk_store_u32(void *p, uint32_t u)
{
    memcpy(p, &u, 4);
}

/* phase_coll of the allgather codecs. */
static inline gk_coll gk_allgather_coll(const gk_spec *spec, int phase)
{
    (void)spec;
    (void)phase;
    return GK_COLL_ALLGATHER;
}

/*
 * Decoded values, shared so that the reference and the optimised version compute the
 * residual x - value bit for bit alike.
 */

/* QSGD: the element of a bucket with l2 norm `norm` sent as q in -s..s. */
static inline float gk_qsgd_value(float norm, int s, int q)
{
    return norm / (float)s * (float)q;
}

/* Max-min: below this unit a bucket is treated as constant and decodes to its min. */
#define GK_MAXMIN_MIN_UNIT 1e-10

/* Max-min unit (max - min) / (2^b - 1) in double: max - min may exceed FLT_MAX. */
static inline double gk_maxmin_unit(float mn, float mx, int bits)
{
    return ((double)mx - (double)mn) / (double)((1u << bits) - 1u);
}

/* Max-min: the value of a level in a bucket [mn, mx]; exact (mn) for a constant one. */
static inline float gk_maxmin_value(float mn, double unit, unsigned level)
{
    return unit < GK_MAXMIN_MIN_UNIT ? mn : (float)((double)mn + (double)level * unit);
}

/* An allgather decode's inputs: one payload per node, each of the layer's size. */
static inline int gk_check_gather(const gk_call *call, const size_t *bytes, int nrecv,
                                  size_t want)
{
    if (nrecv != call->nodes)
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++)
        if (bytes[w] != want)
            return GCOMP_PROTOCOL;
    return GCOMP_OK;
}

/*
 * Each payload format's check of what other nodes sent (untrusted bytes): the sizes,
 * then the header fields a decoder relies on. Shared by the reference and optimised
 * decoders, so both refuse exactly the same payloads. Return 0 or GCOMP_PROTOCOL.
 */
static inline int gk_signsgd_check(const gk_call *call, const void *const *recv,
                                   const size_t *bytes, int nrecv)
{
    if (gk_check_gather(call, bytes, nrecv, gk_signsgd_bytes(call->layer->numel)))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++)
        if (gk_load_u32(recv[w]) > 1)
            return GCOMP_PROTOCOL;
    return GCOMP_OK;
}

/* A leading non-negative finite float (signnorm's l1 norm, terngrad's scale). */
static inline int gk_scaled_check(const gk_call *call, const void *const *recv,
                                  const size_t *bytes, int nrecv, size_t want)
{
    if (gk_check_gather(call, bytes, nrecv, want))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++) {
        float v = gk_load_f32(recv[w]);
        if (!isfinite(v) || v < 0.0f)
            return GCOMP_PROTOCOL;
    }
    return GCOMP_OK;
}

static inline int gk_onebit_check(const gk_call *call, const void *const *recv,
                                  const size_t *bytes, int nrecv)
{
    if (gk_check_gather(call, bytes, nrecv, gk_onebit_bytes(call->layer->numel)))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *b = recv[w];
        if (!isfinite(gk_load_f32(b)) || !isfinite(gk_load_f32(b + 4)))
            return GCOMP_PROTOCOL;
    }
    return GCOMP_OK;
}

static inline int gk_qsgd_check(const gk_call *call, const void *const *recv,
                                const size_t *bytes, int nrecv, size_t bucket)
{
    size_t d = call->layer->numel, nb = gk_qsgd_buckets(d, bucket);
    if (gk_check_gather(call, bytes, nrecv, gk_qsgd_bytes(d, bucket)))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++)
        for (size_t k = 0; k < nb; k++) {
            float norm = gk_load_f32((const uint8_t *)recv[w] + 4 * k);
            if (!isfinite(norm) || norm < 0.0f)
                return GCOMP_PROTOCOL;
        }
    return GCOMP_OK;
}

static inline int gk_maxmin_check(const gk_call *call, const void *const *recv,
                                  const size_t *bytes, int nrecv, size_t bucket, int bits)
{
    size_t d = call->layer->numel, nb = (d + bucket - 1) / bucket;
    if (gk_check_gather(call, bytes, nrecv, gk_maxmin_bytes(d, bucket, bits)))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++)
        for (size_t k = 0; k < nb; k++) {
            const uint8_t *p = (const uint8_t *)recv[w] + 8 * k;
            float mn = gk_load_f32(p), mx = gk_load_f32(p + 4);
            if (!isfinite(mn) || !isfinite(mx) || mn > mx)
                return GCOMP_PROTOCOL;
        }
    return GCOMP_OK;
}

/* The optimised implementations; the codec entries live with the references. */
extern const gk_codec_impl gk_signsgd_cpu, gk_signnorm_cpu, gk_onebit_cpu;
extern const gk_codec_impl gk_qsgd_cpu, gk_terngrad_cpu, gk_maxmin_cpu;
extern const gk_codec_impl gk_fp16_cpu, gk_bf16_cpu;
/* The CUDA implementations (cuda/<name>.cu), defined only when GCOMP_HAVE_CUDA. */
extern const gk_codec_impl gk_fp16_cuda, gk_bf16_cuda;

#endif /* GK_QUANT_H */
