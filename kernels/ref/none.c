/*
 * none: the exact mean. This scalar version is the oracle; the engine's dense path
 * (daemon/engine.c) is the optimised one, so compresses() sends every layer there.
 */
#include <string.h>

#include "../codec.h"

static int none_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel * sizeof(float);
    memcpy(send, x, n);
    *bytes = n;
    return 0;
}

static int none_decode(const gk_call *call, float *x, const void *const *recv,
                       const size_t *bytes, int nrecv, float *out)
{
    (void)bytes;
    (void)nrecv;
    const float *sum = recv[0];
    for (size_t i = 0; i < call->layer->numel; i++) {
        out[i] = sum[i] / (float)call->nodes;
        x[i] = 0.0f;
    }
    return 0;
}

static bool none_compresses(const gk_spec *spec, const gk_layer *layer)
{
    (void)spec;
    (void)layer;
    return false;
}

static size_t none_max_bytes(const gk_spec *spec, const gk_layer *layer, int phase, uint64_t step)
{
    (void)step;
    (void)spec;
    (void)phase;
    return layer->numel * sizeof(float);
}

static const gk_codec_impl none_ref = {.encode = none_encode, .decode = none_decode};

const gk_codec gk_codec_none = {
    .name = "none",
    .summary = "exact mean (allreduce of float32)",
    .ef_default = false,
    .ef_allowed = false,
    .compresses = none_compresses,
    .max_bytes = none_max_bytes,
    .impl = {[GK_BACKEND_REF] = &none_ref},
};
