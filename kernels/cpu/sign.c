/*
 * signsgd, signnorm, onebit: the optimised CPU implementation. Encode is one
 * reduction pass and one packing pass over 32-element words; decode accumulates each
 * node's payload into out with a two-entry select per bit. Semantics and payloads are
 * those of ref/sign.c and quant.h.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../quant.h"
#include "bits.h"
#include "gcomp.h"

static int signsgd_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel;
    uint8_t *b = send;
    int any = 0;
    for (size_t i = 0; i < d; i++)
        any |= x[i] != 0.0f;
    gk_store_u32(b, (uint32_t)any);
    gk_bits_pack_neg(x, d, b + 4);
    *bytes = gk_signsgd_bytes(d);
    return GCOMP_OK;
}

static int signsgd_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                              const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (gk_check_gather(call, bytes, nrecv, gk_signsgd_bytes(d)))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++)
        if (gk_load_u32(recv[w]) > 1)
            return GCOMP_PROTOCOL;
    memset(out, 0, d * sizeof(float));
    /* Votes are small integers: exact in float. */
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *b = recv[w];
        if (gk_load_u32(b))
            gk_bits_select_add(b + 4, d, -1.0f, 1.0f, out);
    }
    for (size_t i = 0; i < d; i++)
        out[i] = (float)((out[i] > 0.0f) - (out[i] < 0.0f));
    if (gk_load_u32(recv[call->node]))
        gk_sign_residual(x, d, -1.0f, 1.0f);
    return GCOMP_OK;
}

static int signnorm_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel;
    uint8_t *b = send;
    gk_store_f32(b, (float)gk_sum_abs(x, d));
    gk_bits_pack_neg(x, d, b + 4);
    *bytes = gk_signnorm_bytes(d);
    return GCOMP_OK;
}

static int signnorm_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (gk_check_gather(call, bytes, nrecv, gk_signnorm_bytes(d)))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++) {
        float l1 = gk_load_f32(recv[w]);
        if (!isfinite(l1) || l1 < 0.0f)
            return GCOMP_PROTOCOL;
    }
    memset(out, 0, d * sizeof(float));
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *b = recv[w];
        float s = gk_load_f32(b) / (float)d / (float)nrecv;
        gk_bits_select_add(b + 4, d, -s, s, out);
    }
    float s = gk_load_f32(recv[call->node]) / (float)d;
    gk_sign_residual(x, d, -s, s);
    return GCOMP_OK;
}

static int onebit_cpu_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel;
    uint8_t *b = send;
    /* One pass: the sum and count of the negatives and the total sum, eight lanes. */
    double neg[8] = {0}, all[8] = {0};
    size_t cnt[8] = {0}, i = 0;
    for (; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; j++) {
            float v = x[i + j];
            int isneg = v < 0.0f;
            neg[j] += isneg ? v : 0.0f;
            cnt[j] += (size_t)isneg;
            all[j] += v;
        }
    for (int j = 1; j < 8; j++) {
        neg[0] += neg[j];
        all[0] += all[j];
        cnt[0] += cnt[j];
    }
    for (; i < d; i++) {
        if (x[i] < 0.0f) {
            neg[0] += x[i];
            cnt[0]++;
        }
        all[0] += x[i];
    }
    size_t n0 = cnt[0], n1 = d - n0;
    gk_store_f32(b, n0 ? (float)(neg[0] / (double)n0) : 0.0f);
    gk_store_f32(b + 4, n1 ? (float)((all[0] - neg[0]) / (double)n1) : 0.0f);
    gk_bits_pack_neg(x, d, b + 8);
    *bytes = gk_onebit_bytes(d);
    return GCOMP_OK;
}

static int onebit_cpu_decode(const gk_call *call, float *x, const void *const *recv,
                             const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (gk_check_gather(call, bytes, nrecv, gk_onebit_bytes(d)))
        return GCOMP_PROTOCOL;
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *b = recv[w];
        if (!isfinite(gk_load_f32(b)) || !isfinite(gk_load_f32(b + 4)))
            return GCOMP_PROTOCOL;
    }
    memset(out, 0, d * sizeof(float));
    float inv = 1.0f / (float)nrecv;
    for (int w = 0; w < nrecv; w++) {
        const uint8_t *b = recv[w];
        gk_bits_select_add(b + 8, d, gk_load_f32(b) * inv, gk_load_f32(b + 4) * inv, out);
    }
    const uint8_t *own = recv[call->node];
    gk_sign_residual(x, d, gk_load_f32(own), gk_load_f32(own + 4));
    return GCOMP_OK;
}

const gk_codec_impl gk_signsgd_cpu = {.encode = signsgd_cpu_encode,
                                      .decode = signsgd_cpu_decode};
const gk_codec_impl gk_signnorm_cpu = {.encode = signnorm_cpu_encode,
                                       .decode = signnorm_cpu_decode};
const gk_codec_impl gk_onebit_cpu = {.encode = onebit_cpu_encode,
                                     .decode = onebit_cpu_decode};
