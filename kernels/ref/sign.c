/*
 * signsgd, signnorm, onebit: the sign family (algorithms.md 2.5), scalar reference and
 * codec entries. Payload layouts are in quant.h; all three are sent by allgather and
 * every node decodes every node's payload.
 *
 * The sign of 0: one bit cannot say 0, so an element that is exactly 0 (or -0) is
 * sent as positive (bit 0); only x < 0 sets the bit.
 *  - signsgd: out = sign(sum_w sign_w), a tie gives 0. So that a zero gradient gives a
 *    zero output, a node whose whole layer is zero abstains (flag word 0: its votes
 *    count as 0). Memory is off (ef refused); x is left as x - sign(x), the residual
 *    of what the payload says, and the engine discards it.
 *  - signnorm: out = (1/W) sum_w (|x_w|_1 / d) sign_w; residual x - (|x|_1 / d) sign(x)
 *    with the sign as sent. A zero layer has |x|_1 = 0 and sends 0 whatever its bits.
 *  - onebit: mu0 = mean of the x < 0, mu1 = mean of the rest (0 for an empty set);
 *    out = (1/W) sum_w (bit ? mu0_w : mu1_w); residual x - (bit ? mu0 : mu1).
 */
#include <math.h>
#include <stdint.h>

#include "../quant.h"
#include "gcomp.h"

static int ref_bit(const uint8_t *bits, size_t i)
{
    return (bits[i / 8] >> (i % 8)) & 1;
}

/* Write the sign bits of x (1 = negative) with zero padding to whole 32-bit words. */
static void ref_pack_signs(const float *x, size_t d, uint8_t *bits)
{
    for (size_t i = 0; i < gk_signbits_bytes(d); i++)
        bits[i] = 0;
    for (size_t i = 0; i < d; i++)
        if (x[i] < 0.0f)
            bits[i / 8] |= (uint8_t)(1u << (i % 8));
}

static int signsgd_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel;
    uint8_t *b = send;
    uint32_t any = 0;
    for (size_t i = 0; i < d; i++)
        if (x[i] != 0.0f)
            any = 1;
    gk_store_u32(b, any);
    ref_pack_signs(x, d, b + 4);
    *bytes = gk_signsgd_bytes(d);
    return GCOMP_OK;
}

static int signsgd_ref_decode(const gk_call *call, float *x, const void *const *recv,
                              const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (gk_signsgd_check(call, recv, bytes, nrecv))
        return GCOMP_PROTOCOL;
    for (size_t i = 0; i < d; i++) {
        long vote = 0;
        for (int w = 0; w < nrecv; w++) {
            const uint8_t *b = recv[w];
            if (gk_load_u32(b))
                vote += ref_bit(b + 4, i) ? -1 : 1;
        }
        out[i] = vote > 0 ? 1.0f : vote < 0 ? -1.0f : 0.0f;
    }
    const uint8_t *own = recv[call->node];
    if (gk_load_u32(own))
        for (size_t i = 0; i < d; i++)
            x[i] -= ref_bit(own + 4, i) ? -1.0f : 1.0f;
    return GCOMP_OK;
}

static int signnorm_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel;
    uint8_t *b = send;
    double l1 = 0.0;
    for (size_t i = 0; i < d; i++)
        l1 += fabs((double)x[i]);
    gk_store_f32(b, (float)l1);
    ref_pack_signs(x, d, b + 4);
    *bytes = gk_signnorm_bytes(d);
    return GCOMP_OK;
}

static int signnorm_ref_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (gk_scaled_check(call, recv, bytes, nrecv, gk_signnorm_bytes(d)))
        return GCOMP_PROTOCOL;
    for (size_t i = 0; i < d; i++) {
        double acc = 0.0;
        for (int w = 0; w < nrecv; w++) {
            const uint8_t *b = recv[w];
            float s = gk_load_f32(b) / (float)d;
            acc += ref_bit(b + 4, i) ? -s : s;
        }
        out[i] = (float)(acc / nrecv);
    }
    const uint8_t *own = recv[call->node];
    float s = gk_load_f32(own) / (float)d;
    for (size_t i = 0; i < d; i++)
        x[i] -= ref_bit(own + 4, i) ? -s : s;
    return GCOMP_OK;
}

static int onebit_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel, n0 = 0, n1 = 0;
    uint8_t *b = send;
    double s0 = 0.0, s1 = 0.0;
    for (size_t i = 0; i < d; i++) {
        if (x[i] < 0.0f) {
            s0 += x[i];
            n0++;
        } else {
            s1 += x[i];
            n1++;
        }
    }
    gk_store_f32(b, n0 ? (float)(s0 / (double)n0) : 0.0f);
    gk_store_f32(b + 4, n1 ? (float)(s1 / (double)n1) : 0.0f);
    ref_pack_signs(x, d, b + 8);
    *bytes = gk_onebit_bytes(d);
    return GCOMP_OK;
}

static int onebit_ref_decode(const gk_call *call, float *x, const void *const *recv,
                             const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (gk_onebit_check(call, recv, bytes, nrecv))
        return GCOMP_PROTOCOL;
    for (size_t i = 0; i < d; i++) {
        double acc = 0.0;
        for (int w = 0; w < nrecv; w++) {
            const uint8_t *b = recv[w];
            acc += ref_bit(b + 8, i) ? gk_load_f32(b) : gk_load_f32(b + 4);
        }
        out[i] = (float)(acc / nrecv);
    }
    const uint8_t *own = recv[call->node];
    float mu0 = gk_load_f32(own), mu1 = gk_load_f32(own + 4);
    for (size_t i = 0; i < d; i++)
        x[i] -= ref_bit(own + 8, i) ? mu0 : mu1;
    return GCOMP_OK;
}

static size_t signsgd_max_bytes(const gk_spec *spec, const gk_layer *layer,
                                int phase, uint64_t step)
{
    (void)step;
    (void)spec;
    (void)phase;
    return gk_signsgd_bytes(layer->numel);
}

static size_t signnorm_max_bytes(const gk_spec *spec, const gk_layer *layer,
                                 int phase, uint64_t step)
{
    (void)step;
    (void)spec;
    (void)phase;
    return gk_signnorm_bytes(layer->numel);
}

static size_t onebit_max_bytes(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step)
{
    (void)step;
    (void)spec;
    (void)phase;
    return gk_onebit_bytes(layer->numel);
}

static const gk_codec_impl signsgd_ref = {.encode = signsgd_ref_encode,
                                          .decode = signsgd_ref_decode};
static const gk_codec_impl signnorm_ref = {.encode = signnorm_ref_encode,
                                           .decode = signnorm_ref_decode};
static const gk_codec_impl onebit_ref = {.encode = onebit_ref_encode,
                                         .decode = onebit_ref_decode};

const gk_codec gk_codec_signsgd = {
    .name = "signsgd",
    .summary = "signSGD with majority vote: 1 bit per element, out in {-1, 0, +1}",
    .ef_default = false,
    .ef_allowed = false,
    .phase_coll = gk_allgather_coll,
    .max_bytes = signsgd_max_bytes,
    .fixed_bytes = gk_payload_always_fixed,
    .impl = {[GK_BACKEND_REF] = &signsgd_ref, [GK_BACKEND_CPU] = &gk_signsgd_cpu},
};

const gk_codec gk_codec_signnorm = {
    .name = "signnorm",
    .summary = "sign bits scaled by the layer's mean |x| (l1 norm / d), with error feedback",
    .ef_default = true,
    .ef_allowed = true,
    .phase_coll = gk_allgather_coll,
    .max_bytes = signnorm_max_bytes,
    .fixed_bytes = gk_payload_always_fixed,
    .impl = {[GK_BACKEND_REF] = &signnorm_ref, [GK_BACKEND_CPU] = &gk_signnorm_cpu},
};

const gk_codec gk_codec_onebit = {
    .name = "onebit",
    .summary = "1-bit SGD: sign mask + mean of the negatives and of the rest, with error feedback",
    .ef_default = true,
    .ef_allowed = true,
    .phase_coll = gk_allgather_coll,
    .max_bytes = onebit_max_bytes,
    .fixed_bytes = gk_payload_always_fixed,
    .impl = {[GK_BACKEND_REF] = &onebit_ref, [GK_BACKEND_CPU] = &gk_onebit_cpu},
};
