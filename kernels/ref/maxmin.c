/*
 * maxmin: CGX max-min quantisation (algorithms.md 2.6, as used by L-GreCo), scalar
 * reference and codec entry. Per bucket of B elements: min and max as float32 and
 * per element a b-bit level
 *   unit  = (max - min) / (2^b - 1)
 *   level = min(floor((x - min) / unit + rho), 2^b - 1)
 * with rho = 0.5 (round to nearest, stochastic=0) or U(0,1) (stochastic=1, from
 * gk_rng seeded (seed, layer id, step, 1 + node), one draw per element in order,
 * constant buckets included). A bucket with unit < 1e-10 sends level 0 and decodes
 * to its min, so a constant bucket decodes exactly. Decode: min + level unit (in
 * double), each node's payload decoded, then averaged.
 * Error feedback is on by default: rounding to nearest is biased.
 */
#include <math.h>
#include <stdint.h>

#include "../quant.h"
#include "../rng.h"
#include "gcomp.h"

/* Offset of bucket k's level field in the payload. */
static size_t ref_field(size_t nb, size_t k, size_t B, int bits)
{
    return 8 * nb + k * gk_maxmin_bucket_bytes(B, bits);
}

static int maxmin_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_MAXMIN_BUCKET];
    int bits = (int)call->spec->v[GK_MAXMIN_BITS];
    bool stochastic = call->spec->v[GK_MAXMIN_STOCHASTIC] != 0.0;
    unsigned top = (1u << bits) - 1u;
    size_t nb = (d + B - 1) / B, total = gk_maxmin_bytes(d, B, bits);
    uint8_t *p = send;
    for (size_t i = 8 * nb; i < total; i++)
        p[i] = 0;
    gk_rng rng;
    gk_rng_seed(&rng, call->seed, call->layer->id, call->step, 1 + (uint64_t)call->node);
    for (size_t k = 0; k < nb; k++) {
        size_t lo = k * B, hi = lo + B < d ? lo + B : d;
        float mn = x[lo], mx = x[lo];
        for (size_t i = lo; i < hi; i++) {
            mn = fminf(mn, x[i]);
            mx = fmaxf(mx, x[i]);
        }
        gk_store_f32(p + 8 * k, mn);
        gk_store_f32(p + 8 * k + 4, mx);
        double unit = gk_maxmin_unit(mn, mx, bits);
        uint8_t *field = p + ref_field(nb, k, B, bits);
        for (size_t i = lo; i < hi; i++) {
            double rho = stochastic ? (double)gk_rng_uniform(&rng) : 0.5;
            unsigned level = 0;
            if (unit >= GK_MAXMIN_MIN_UNIT) {
                double t = floor(((double)x[i] - mn) / unit + rho);
                level = t > (double)top ? top : (unsigned)t;
            }
            /* Bit by bit: level bit j goes to field bit (i - lo) b + j. */
            for (int j = 0; j < bits; j++) {
                size_t bit = (i - lo) * (size_t)bits + (size_t)j;
                if ((level >> j) & 1u)
                    field[bit / 8] |= (uint8_t)(1u << (bit % 8));
            }
        }
    }
    *bytes = total;
    return GCOMP_OK;
}

/* Node payload p's decoded element i. */
static float ref_decoded(const uint8_t *p, size_t nb, size_t i, size_t B, int bits)
{
    size_t k = i / B;
    float mn = gk_load_f32(p + 8 * k), mx = gk_load_f32(p + 8 * k + 4);
    const uint8_t *field = p + ref_field(nb, k, B, bits);
    unsigned level = 0;
    for (int j = 0; j < bits; j++) {
        size_t bit = (i - k * B) * (size_t)bits + (size_t)j;
        level |= (unsigned)((field[bit / 8] >> (bit % 8)) & 1u) << j;
    }
    return gk_maxmin_value(mn, gk_maxmin_unit(mn, mx, bits), level);
}

static int maxmin_ref_decode(const gk_call *call, float *x, const void *const *recv,
                             const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel, B = (size_t)call->spec->v[GK_MAXMIN_BUCKET];
    int bits = (int)call->spec->v[GK_MAXMIN_BITS];
    size_t nb = (d + B - 1) / B;
    if (gk_maxmin_check(call, recv, bytes, nrecv, B, bits))
        return GCOMP_PROTOCOL;
    for (size_t i = 0; i < d; i++) {
        double acc = 0.0;
        for (int w = 0; w < nrecv; w++)
            acc += ref_decoded(recv[w], nb, i, B, bits);
        out[i] = (float)(acc / nrecv);
    }
    for (size_t i = 0; i < d; i++)
        x[i] -= ref_decoded(recv[call->node], nb, i, B, bits);
    return GCOMP_OK;
}

static size_t maxmin_max_bytes(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step)
{
    (void)step;
    (void)phase;
    return gk_maxmin_bytes(layer->numel, (size_t)spec->v[GK_MAXMIN_BUCKET],
                           (int)spec->v[GK_MAXMIN_BITS]);
}

static const gk_param_desc maxmin_params[] = {
    {"bits", 4, 1, 8, true, "bits per element (2^bits levels between min and max)"},
    {"bucket", 512, 1, 1 << 24, true, "elements per bucket sharing one min and max"},
    {"stochastic", 0, 0, 1, true, "0: round to nearest; 1: stochastic rounding"},
};

static const gk_codec_impl maxmin_ref = {.encode = maxmin_ref_encode,
                                         .decode = maxmin_ref_decode};

const gk_codec gk_codec_maxmin = {
    .name = "maxmin",
    .summary = "CGX max-min quantisation: b-bit levels between each bucket's min and max",
    .params = maxmin_params,
    .nparams = sizeof(maxmin_params) / sizeof(maxmin_params[0]),
    .ef_default = true,
    .ef_allowed = true,
    .phase_coll = gk_allgather_coll,
    .knob = "bits",
    .knob_more = -1,
    .max_bytes = maxmin_max_bytes,
    .fixed_bytes = gk_payload_always_fixed,
    .impl = {[GK_BACKEND_REF] = &maxmin_ref, [GK_BACKEND_CPU] = &gk_maxmin_cpu},
};
