/*
 * fp16, bf16: the narrow-type casts (algorithms.md 2.6), scalar reference and codec
 * entries. Each node sends v = x / W rounded to the narrow type (to nearest even);
 * the allreduce sums the v in that type (the transports add in float32 and round);
 * out = the sum, widened: the mean. Dividing by W before the cast keeps a sum of W
 * large values in range.
 *
 * Saturation: v is clamped to +-L, L the largest narrow value <= MAX / W (MAX = 65504
 * for fp16, 3.3895e38 for bf16), so that neither one node's value nor the sum of W of
 * them can round to Inf: a mean beyond the type's range comes out as +-MAX, and with
 * ef=1 the excess stays in the residual.
 *
 * Residual: x - W widen(v), what this node's payload stands for (computed in encode).
 * Error feedback is off by default: the rounding error is small (2^-11 relative for
 * fp16, 2^-8 for bf16) and round-to-nearest-even has no systematic sign; it is
 * allowed for users who cast very small gradients (fp16 flushes below 6e-8 W).
 */
#include <stdint.h>

#include "../halfconv.h"
#include "../quant.h"
#include "gcomp.h"
#include "gcomp_config.h"

/* The narrow type's conversions, so one body serves both casts. */
typedef struct cast_type {
    uint16_t (*narrow)(float);
    float (*widen)(uint16_t);
    uint16_t max_bits; /* the largest finite value */
} cast_type;

static const cast_type fp16_type = {gk_float_to_half, gk_half_to_float, 0x7bffu};
static const cast_type bf16_type = {gk_float_to_bf16, gk_bf16_to_float, 0x7f7fu};

/* The largest narrow value <= MAX / W, as float. */
static float cast_limit(const cast_type *t, int nodes)
{
    float bound = t->widen(t->max_bits) / (float)nodes;
    uint16_t h = t->narrow(bound);
    if (t->widen(h) > bound)
        h--; /* positive finite values: the next lower encoding is the next lower value */
    return t->widen(h);
}

static int cast_encode(const cast_type *t, const gk_call *call, float *x, void *send,
                       size_t *bytes)
{
    size_t d = call->layer->numel;
    float lim = cast_limit(t, call->nodes), W = (float)call->nodes;
    uint16_t *v = send;
    for (size_t i = 0; i < d; i++) {
        float y = x[i] / W;
        if (y > lim)
            y = lim;
        if (y < -lim)
            y = -lim;
        v[i] = t->narrow(y);
        x[i] -= W * t->widen(v[i]);
    }
    *bytes = d * sizeof(uint16_t);
    return GCOMP_OK;
}

static int cast_decode(const cast_type *t, const gk_call *call, const void *const *recv,
                       const size_t *bytes, int nrecv, float *out)
{
    size_t d = call->layer->numel;
    if (nrecv != 1 || bytes[0] != d * sizeof(uint16_t))
        return GCOMP_PROTOCOL;
    const uint16_t *sum = recv[0];
    for (size_t i = 0; i < d; i++)
        out[i] = t->widen(sum[i]);
    return GCOMP_OK;
}

static int fp16_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    return cast_encode(&fp16_type, call, x, send, bytes);
}

static int fp16_ref_decode(const gk_call *call, float *x, const void *const *recv,
                           const size_t *bytes, int nrecv, float *out)
{
    (void)x;
    return cast_decode(&fp16_type, call, recv, bytes, nrecv, out);
}

static int bf16_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    return cast_encode(&bf16_type, call, x, send, bytes);
}

static int bf16_ref_decode(const gk_call *call, float *x, const void *const *recv,
                           const size_t *bytes, int nrecv, float *out)
{
    (void)x;
    return cast_decode(&bf16_type, call, recv, bytes, nrecv, out);
}

static gk_coll fp16_coll(const gk_spec *spec, int phase)
{
    (void)spec;
    (void)phase;
    return GK_COLL_ALLREDUCE_F16;
}

static gk_coll bf16_coll(const gk_spec *spec, int phase)
{
    (void)spec;
    (void)phase;
    return GK_COLL_ALLREDUCE_BF16;
}

static size_t cast_max_bytes(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step)
{
    (void)step;
    (void)spec;
    (void)phase;
    return layer->numel * sizeof(uint16_t);
}

static const gk_codec_impl fp16_ref = {.encode = fp16_ref_encode, .decode = fp16_ref_decode};
static const gk_codec_impl bf16_ref = {.encode = bf16_ref_encode, .decode = bf16_ref_decode};

const gk_codec gk_codec_fp16 = {
    .name = "fp16",
    .summary = "allreduce in IEEE half of x / W (saturating at +-65504)",
    .ef_default = false,
    .ef_allowed = true,
    .phase_coll = fp16_coll,
    .max_bytes = cast_max_bytes,
    .impl = {[GK_BACKEND_REF] = &fp16_ref, [GK_BACKEND_CPU] = &gk_fp16_cpu,
#if GCOMP_HAVE_CUDA
             [GK_BACKEND_CUDA] = &gk_fp16_cuda,
#endif
    },
};

const gk_codec gk_codec_bf16 = {
    .name = "bf16",
    .summary = "allreduce in bfloat16 of x / W",
    .ef_default = false,
    .ef_allowed = true,
    .phase_coll = bf16_coll,
    .max_bytes = cast_max_bytes,
    .impl = {[GK_BACKEND_REF] = &bf16_ref, [GK_BACKEND_CPU] = &gk_bf16_cpu,
#if GCOMP_HAVE_CUDA
             [GK_BACKEND_CUDA] = &gk_bf16_cuda,
#endif
    },
};
