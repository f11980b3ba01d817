/*
 * qsgd: QSGD stochastic quantisation (algorithms.md 2.6; GRACE defaults s = 127,
 * B = 128), scalar reference and codec entry. Per bucket of B elements: the l2 norm
 * |b| as float32, and per element q = sign(x) * level with
 *   level = min(floor(s |x| / |b| + u), s),  u ~ U(0,1),
 * i.e. floor(s |x| / |b|) plus a Bernoulli of the fraction, sent as int8 (s <= 127).
 * Decode: |b| / s * q, averaged over the nodes. A zero bucket sends q = 0 and decodes
 * to 0 (no 0/0). u comes from gk_rng seeded (seed, layer id, step, 1 + node): local to
 * the node, reproducible, one draw per element in order (zero buckets included).
 *
 * Error feedback: QSGD is unbiased (E[decode] = x), which is what its convergence
 * analysis relies on, and it is run without memory in the paper and GRACE; so ef is
 * off by default. It is allowed (ef=1) for users who want to cut the variance at the
 * price of the unbiasedness; the residual is then x minus this node's decoded payload.
 * Error feedback only stays bounded when the quantiser's variance is below |x|^2,
 * i.e. levels >= about sqrt(bucket) (the defaults 127 and 128 are far inside); with
 * levels=1 and bucket=128 the residual grows geometrically (test_sign_quant.c).
 */
#include <math.h>
#include <stdint.h>

#include "../quant.h"
#include "../rng.h"
#include "gcomp.h"

static int qsgd_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_QSGD_BUCKET];
    int s = (int)call->spec->v[GK_QSGD_LEVELS];
    size_t nb = gk_qsgd_buckets(d, B);
    uint8_t *norms = send;
    int8_t *q = (int8_t *)((uint8_t *)send + 4 * nb);
    gk_rng rng;
    gk_rng_seed(&rng, call->seed, call->layer->id, call->step, 1 + (uint64_t)call->node);
    for (size_t k = 0; k < nb; k++) {
        size_t lo = k * B, hi = lo + B < d ? lo + B : d;
        double ss = 0.0;
        for (size_t i = lo; i < hi; i++)
            ss += (double)x[i] * x[i];
        float norm = (float)sqrt(ss);
        gk_store_f32(norms + 4 * k, norm);
        for (size_t i = lo; i < hi; i++) {
            float u = gk_rng_uniform(&rng);
            int level = 0;
            if (norm > 0.0f) {
                level = (int)floorf((float)s * fabsf(x[i]) / norm + u);
                if (level > s)
                    level = s;
            }
            q[i] = (int8_t)(x[i] < 0.0f ? -level : level);
        }
    }
    *bytes = gk_qsgd_bytes(d, B);
    return GCOMP_OK;
}

static int qsgd_ref_decode(const gk_call *call, float *x, const void *const *recv,
                           const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_QSGD_BUCKET];
    int s = (int)call->spec->v[GK_QSGD_LEVELS];
    size_t nb = gk_qsgd_buckets(d, B);
    if (gk_qsgd_check(call, recv, bytes, nrecv, B))
        return GCOMP_PROTOCOL;
    for (size_t i = 0; i < d; i++) {
        double acc = 0.0;
        for (int w = 0; w < nrecv; w++) {
            const uint8_t *b = recv[w];
            const int8_t *q = (const int8_t *)(b + 4 * nb);
            acc += gk_qsgd_value(gk_load_f32(b + 4 * (i / B)), s, q[i]);
        }
        out[i] = (float)(acc / nrecv);
    }
    const uint8_t *own = recv[call->node];
    const int8_t *q = (const int8_t *)(own + 4 * nb);
    for (size_t i = 0; i < d; i++)
        x[i] -= gk_qsgd_value(gk_load_f32(own + 4 * (i / B)), s, q[i]);
    return GCOMP_OK;
}

static size_t qsgd_max_bytes(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step)
{
    (void)step;
    (void)phase;
    return gk_qsgd_bytes(layer->numel, (size_t)spec->v[GK_QSGD_BUCKET]);
}

static const gk_param_desc qsgd_params[] = {
    {"levels", 127, 1, 127, true, "quantisation levels s per sign (int8 payload)"},
    {"bucket", 128, 1, 1 << 24, true, "elements per bucket sharing one l2 norm"},
};

static const gk_codec_impl qsgd_ref = {.encode = qsgd_ref_encode, .decode = qsgd_ref_decode};

const gk_codec gk_codec_qsgd = {
    .name = "qsgd",
    .summary = "QSGD: unbiased stochastic int8 levels with a float32 l2 norm per bucket",
    .params = qsgd_params,
    .nparams = sizeof(qsgd_params) / sizeof(qsgd_params[0]),
    .ef_default = false,
    .ef_allowed = true,
    .phase_coll = gk_allgather_coll,
    .knob = "levels",
    .knob_more = -1,
    .max_bytes = qsgd_max_bytes,
    .fixed_bytes = gk_payload_always_fixed,
    .impl = {[GK_BACKEND_REF] = &qsgd_ref, [GK_BACKEND_CPU] = &gk_qsgd_cpu},
};
