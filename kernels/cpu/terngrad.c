/*
 * terngrad: the optimised CPU implementation (semantics in ref/terngrad.c). Three
 * reduction passes with independent lanes (mean, variance, clipped max), then one
 * pass that draws, packs four 2-bit codes per byte and takes s t off x (the residual,
 * done here instead of in decode). Decode is a four-entry table per node.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../quant.h"
#include "../rng.h"
#include "bits.h"
#include "gcomp.h"

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
    float mx[8] = {0}, s = 0.0f;
    for (i = 0; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; j++)
            mx[j] = fmaxf(mx[j], fminf(fabsf(x[i + j]), clip));
    for (int j = 0; j < 8; j++)
        s = fmaxf(s, mx[j]);
    for (; i < d; i++)
        s = fmaxf(s, fminf(fabsf(x[i]), clip));
    gk_store_f32(b, s);
    gk_rng rng;
    gk_rng_seed(&rng, call->seed, call->layer->id, call->step, 1 + (uint64_t)call->node);
    for (size_t byte = 0; byte < (d + 3) / 4; byte++) {
        unsigned packed = 0;
        for (unsigned j = 0; j < 4 && 4 * byte + j < d; j++) {
            float v = x[4 * byte + j];
            int keep = gk_rng_uniform(&rng) * s < fminf(fabsf(v), clip);
            int neg = v < 0.0f;
            packed |= (unsigned)(keep * (1 + neg)) << (2 * j);
            x[4 * byte + j] = v - (keep ? (neg ? -s : s) : 0.0f);
        }
        codes[byte] = (uint8_t)packed;
    }
    *bytes = gk_terngrad_bytes(d);
    return GCOMP_OK;
}

static int terngrad_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    (void)x; /* the residual was taken in encode */
    size_t d = call->layer->numel;
    if (gk_check_gather(call, bytes, nrecv, gk_terngrad_bytes(d)))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++) {
        float s = gk_load_f32(recv[w]);
        if (!isfinite(s) || s < 0.0f)
            return GCOMP_PROTOCOL;
    }
    memset(out, 0, d * sizeof(float));
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *b = recv[w], *codes = b + 4;
        float s = gk_load_f32(b);
        const float lut[4] = {0.0f, s, -s, 0.0f};
        size_t full = d / 4;
        for (size_t k = 0; k < full; k++) {
            unsigned c = codes[k];
            out[4 * k] += lut[c & 3u];
            out[4 * k + 1] += lut[(c >> 2) & 3u];
            out[4 * k + 2] += lut[(c >> 4) & 3u];
            out[4 * k + 3] += lut[c >> 6];
        }
        for (size_t i = 4 * full; i < d; i++)
            out[i] += lut[(codes[i / 4] >> (2 * (i % 4))) & 3u];
    }
    float inv = 1.0f / (float)nrecv;
    for (size_t i = 0; i < d; i++)
        out[i] *= inv;
    return GCOMP_OK;
}

const gk_codec_impl gk_terngrad_cpu = {.encode = terngrad_cpu_encode,
                                       .decode = terngrad_cpu_decode};
