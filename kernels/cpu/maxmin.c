/*
 * maxmin: the optimised CPU implementation (semantics in ref/maxmin.c). Per bucket:
 * one min/max pass, then one pass that quantises in float32 (multiplying by the
 * reciprocal of the unit, so a level can differ from the reference's double division
 * by one where x sits on a rounding boundary), packs through a bit stream and takes
 * the decoded value off x (the residual, done here instead of in decode). Decoded
 * values come from a per-bucket table of the 2^b levels, computed as the reference
 * does (gk_maxmin_value), when the bucket has at least 2^b elements. When b divides 8
 * the levels are packed and unpacked whole bytes at a time (maxmin_add_bytes), other
 * widths go through the bit stream.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../quant.h"
#include "../rng.h"
#include "bits.h"
#include "gcomp.h"

#define MAXMIN_CHUNK 256

/* Decoded value of each level of a bucket (top + 1 entries). */
static void maxmin_table(float mn, double unit, unsigned top, float *lut)
{
    for (unsigned l = 0; l <= top; l++)
        lut[l] = gk_maxmin_value(mn, unit, l);
}

static int maxmin_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_MAXMIN_BUCKET];
    int bits = (int)call->spec->v[GK_MAXMIN_BITS];
    bool stochastic = call->spec->v[GK_MAXMIN_STOCHASTIC] != 0.0;
    unsigned top = (1u << bits) - 1u;
    size_t nb = (d + B - 1) / B;
    uint8_t *p = send;
    gk_bitwriter bw = {.p = p + 8 * nb};
    float rho[MAXMIN_CHUNK], lut[256];
    unsigned lv[MAXMIN_CHUNK];
    gk_rng rng;
    gk_rng_seed(&rng, call->seed, call->layer->id, call->step, 1 + (uint64_t)call->node);
    for (size_t j = 0; j < MAXMIN_CHUNK; j++)
        rho[j] = 0.5f;
    for (size_t k = 0; k < nb; k++) {
        size_t lo = k * B, hi = lo + B < d ? lo + B : d;
        float mn, mx;
        gk_minmax(x + lo, hi - lo, &mn, &mx);
        gk_store_f32(p + 8 * k, mn);
        gk_store_f32(p + 8 * k + 4, mx);
        double unit = gk_maxmin_unit(mn, mx, bits);
        bool constant = unit < GK_MAXMIN_MIN_UNIT;
        bool table = hi - lo > top;
        if (table)
            maxmin_table(mn, unit, top, lut);
        float inv = constant ? 0.0f : (float)(1.0 / unit), ftop = (float)top;
        for (size_t c = lo; c < hi; c += MAXMIN_CHUNK) {
            size_t len = hi - c < MAXMIN_CHUNK ? hi - c : MAXMIN_CHUNK;
            if (stochastic)
                for (size_t j = 0; j < len; j++)
                    rho[j] = gk_rng_uniform(&rng);
            for (size_t j = 0; j < len; j++) {
                float t = (x[c + j] - mn) * inv + rho[j];
                t = t < ftop ? t : ftop; /* also catches x - mn overflowing to Inf */
                lv[j] = constant ? 0u : (unsigned)t;
            }
            if (table)
                for (size_t j = 0; j < len; j++)
                    x[c + j] -= lut[lv[j]];
            else
                for (size_t j = 0; j < len; j++)
                    x[c + j] -= gk_maxmin_value(mn, unit, lv[j]);
            if (8 % bits == 0 && bw.n == 0 && len % (8u / (unsigned)bits) == 0) {
                /* Whole bytes of 8 / b levels each, the stream at a byte boundary. */
                unsigned per = 8u / (unsigned)bits;
                for (size_t j = 0; j < len; j += per) {
                    unsigned byte = 0;
                    for (unsigned e = 0; e < per; e++)
                        byte |= lv[j + e] << (e * (unsigned)bits);
                    *bw.p++ = (uint8_t)byte;
                }
            } else {
                for (size_t j = 0; j < len; j++)
                    gk_bw_put(&bw, lv[j], (unsigned)bits);
            }
        }
        gk_bw_flush(&bw);
    }
    *bytes = gk_maxmin_bytes(d, B, bits);
    return GCOMP_OK;
}

/* o[i] += lut[level i] for the len levels of a field of b-bit levels, b dividing 8,
   whole bytes first and then the last byte's levels. */
static inline void maxmin_add_bytes(const uint8_t *field, size_t len, unsigned b,
                                    const float *lut, float *o)
{
    unsigned per = 8u / b, mask = (1u << b) - 1u;
    size_t full = len / per, i = 0;
    for (size_t k = 0; k < full; k++) {
        unsigned c = field[k];
        for (unsigned e = 0; e < per; e++, i++)
            o[i] += lut[(c >> (e * b)) & mask];
    }
    for (unsigned e = 0; i < len; e++, i++)
        o[i] += lut[(field[full] >> (e * b)) & mask];
}

static int maxmin_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                             const size_t *bytes, int nrecv, float *out)
{
    (void)x; /* the residual was taken in encode */
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_MAXMIN_BUCKET];
    int bits = (int)call->spec->v[GK_MAXMIN_BITS];
    unsigned top = (1u << bits) - 1u;
    size_t nb = (d + B - 1) / B;
    if (gk_check_gather(call, bytes, nrecv, gk_maxmin_bytes(d, B, bits)))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++)
        for (size_t k = 0; k < nb; k++) {
            const uint8_t *p = (const uint8_t *)recv[w] + 8 * k;
            float mn = gk_load_f32(p), mx = gk_load_f32(p + 4);
            if (!isfinite(mn) || !isfinite(mx) || mn > mx)
                return GCOMP_PROTOCOL;
        }
    memset(out, 0, d * sizeof(float));
    float lut[256];
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *p = recv[w];
        gk_bitreader br = {.p = p + 8 * nb};
        for (size_t k = 0; k < nb; k++) {
            size_t lo = k * B, hi = lo + B < d ? lo + B : d;
            float mn = gk_load_f32(p + 8 * k), mx = gk_load_f32(p + 8 * k + 4);
            double unit = gk_maxmin_unit(mn, mx, bits);
            if (hi - lo > top && 8 % bits == 0) {
                /* Whole bytes of 8 / b levels each; the bucket's field starts on a byte
                   and the last byte's unused bits are skipped with the bucket. */
                maxmin_table(mn, unit, top, lut);
                switch (bits) { /* constant shifts inside: the compiler unrolls each */
                case 1: maxmin_add_bytes(br.p, hi - lo, 1, lut, out + lo); break;
                case 2: maxmin_add_bytes(br.p, hi - lo, 2, lut, out + lo); break;
                case 4: maxmin_add_bytes(br.p, hi - lo, 4, lut, out + lo); break;
                default: maxmin_add_bytes(br.p, hi - lo, 8, lut, out + lo); break;
                }
                br.p += gk_maxmin_bucket_bytes(hi - lo, bits);
                continue;
            }
            if (hi - lo > top) {
                maxmin_table(mn, unit, top, lut);
                for (size_t i = lo; i < hi; i++)
                    out[i] += lut[gk_br_get(&br, (unsigned)bits)];
            } else {
                for (size_t i = lo; i < hi; i++)
                    out[i] += gk_maxmin_value(mn, unit, gk_br_get(&br, (unsigned)bits));
            }
            /* Each bucket's field starts on a byte: drop the last byte's unused bits. */
            br.acc = 0;
            br.n = 0;
        }
    }
    float inv = 1.0f / (float)nrecv;
    for (size_t i = 0; i < d; i++)
        out[i] *= inv;
    return GCOMP_OK;
}

const gk_codec_impl gk_maxmin_cpu = {.encode = maxmin_cpu_encode,
                                     .decode = maxmin_cpu_decode};
