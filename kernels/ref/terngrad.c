/*
 * terngrad: TernGrad ternary quantisation (algorithms.md 2.6; GRACE's terngrad),
 * scalar reference and codec entry. sigma = the population standard deviation of the
 * layer; c = clip(x, -2.5 sigma, 2.5 sigma); s = max |c|; each element sends
 * t = sign(x) * Bernoulli(|c| / s) as a 2-bit code, plus s as float32. Decode: s t,
 * averaged over the nodes. E[s t] = c: unbiased up to the clipping.
 *
 * Two choices beyond the references: when sigma is 0 (one element, or a constant
 * layer) nothing is clipped, so such a layer is sent exactly instead of zeroed as
 * GRACE would; and a zero layer has s = 0 and decodes to 0 (no 0/0).
 * The Bernoulli draw is u * s < |c| with u from gk_rng seeded (seed, layer id, step,
 * 1 + node), one draw per element in order.
 *
 * Error feedback: unbiased like QSGD, so off by default and allowed (the residual is
 * then x - s t, which also carries what the clipping removed).
 */
#include <math.h>
#include <stdint.h>

#include "../quant.h"
#include "../rng.h"
#include "gcomp.h"

/* The 2-bit codes: 0 -> 0, 1 -> +1, 2 -> -1 (3 is never sent and decodes to 0). */
static float ref_tern(unsigned code)
{
    return code == 1 ? 1.0f : code == 2 ? -1.0f : 0.0f;
}

static int terngrad_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel;
    uint8_t *b = send, *codes = b + 4;
    double sum = 0.0, var = 0.0;
    for (size_t i = 0; i < d; i++)
        sum += x[i];
    double mean = sum / (double)d;
    for (size_t i = 0; i < d; i++)
        var += ((double)x[i] - mean) * ((double)x[i] - mean);
    float clip = (float)(2.5 * sqrt(var / (double)d));
    if (clip == 0.0f)
        clip = INFINITY;
    float s = 0.0f;
    for (size_t i = 0; i < d; i++)
        s = fmaxf(s, fminf(fabsf(x[i]), clip));
    gk_store_f32(b, s);
    for (size_t i = 0; i < (d + 3) / 4; i++)
        codes[i] = 0;
    gk_rng rng;
    gk_rng_seed(&rng, call->seed, call->layer->id, call->step, 1 + (uint64_t)call->node);
    for (size_t i = 0; i < d; i++) {
        float u = gk_rng_uniform(&rng);
        if (u * s < fminf(fabsf(x[i]), clip))
            codes[i / 4] |= (uint8_t)((x[i] < 0.0f ? 2u : 1u) << (2 * (i % 4)));
    }
    *bytes = gk_terngrad_bytes(d);
    return GCOMP_OK;
}

static int terngrad_ref_decode(const gk_call *call, float *x, const void *const *recv,
                               const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (gk_scaled_check(call, recv, bytes, nrecv, gk_terngrad_bytes(d)))
        return GCOMP_PROTOCOL;
    for (size_t i = 0; i < d; i++) {
        double acc = 0.0;
        for (int w = 0; w < nrecv; w++) {
            const uint8_t *b = recv[w];
            acc += gk_load_f32(b) * ref_tern((b[4 + i / 4] >> (2 * (i % 4))) & 3u);
        }
        out[i] = (float)(acc / nrecv);
    }
    const uint8_t *own = recv[call->node];
    float s = gk_load_f32(own);
    for (size_t i = 0; i < d; i++)
        x[i] -= s * ref_tern((own[4 + i / 4] >> (2 * (i % 4))) & 3u);
    return GCOMP_OK;
}

static size_t terngrad_max_bytes(const gk_spec *spec, const gk_layer *layer,
                                 int phase, uint64_t step)
{
    (void)step;
    (void)spec;
    (void)phase;
    return gk_terngrad_bytes(layer->numel);
}

static const gk_codec_impl terngrad_ref = {.encode = terngrad_ref_encode,
                                           .decode = terngrad_ref_decode};

const gk_codec gk_codec_terngrad = {
    .name = "terngrad",
    .summary = "TernGrad: unbiased ternary {-s, 0, s} at 2 bits per element, clipped at 2.5 sigma",
    .ef_default = false,
    .ef_allowed = true,
    .phase_coll = gk_allgather_coll,
    .max_bytes = terngrad_max_bytes,
    .fixed_bytes = gk_payload_always_fixed,
    .impl = {[GK_BACKEND_REF] = &terngrad_ref, [GK_BACKEND_CPU] = &gk_terngrad_cpu},
};
