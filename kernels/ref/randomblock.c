/*
 * randomblock: a contiguous run of k = max(1, floor(density * numel)) elements starting
 * at an offset drawn from the shared generator (gk_sparse_block_offset), wrapping at the
 * end of the layer (algorithms.md 2.4). Only the values travel, float32 in block order,
 * by allreduce; out = the summed values / W scattered to the block, 0 elsewhere; the
 * residual is zero on the block.
 */
#include "../sparse.h"
#include "gcomp.h"

static int randomblock_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    size_t off = gk_sparse_block_offset(call->seed, call->layer->id, call->step, n);
    float *val = send;
    for (size_t j = 0; j < k; j++)
        val[j] = x[(off + j) % n];
    *bytes = k * sizeof(float);
    return GCOMP_OK;
}

static int randomblock_ref_decode(const gk_call *call, float *x, const void *const *recv,
                                  const size_t *bytes, int nrecv, float *out)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    if (nrecv != 1 || !recv || !recv[0] || bytes[0] != k * sizeof(float))
        return GCOMP_INVALID;
    size_t off = gk_sparse_block_offset(call->seed, call->layer->id, call->step, n);
    const float *sum = recv[0];
    for (size_t i = 0; i < n; i++)
        out[i] = 0.0f;
    for (size_t j = 0; j < k; j++) {
        out[(off + j) % n] = sum[j] / (float)call->nodes;
        x[(off + j) % n] = 0.0f;
    }
    return GCOMP_OK;
}

static const gk_codec_impl randomblock_ref = {.encode = randomblock_ref_encode,
                                              .decode = randomblock_ref_decode};

static const gk_param_desc randomblock_params[] = {
    {.key = "density", .def = 0.01, .min = 0.0, .max = 1.0,
     .help = "fraction of each layer's elements sent, k = max(1, floor(density * numel))"},
};

const gk_codec gk_codec_randomblock = {
    .name = "randomblock",
    .summary = "Random-block: a shared-seed contiguous block, only values travel, allreduce",
    .params = randomblock_params,
    .nparams = 1,
    .ef_default = true,
    .ef_allowed = true,
    .knob = "density",
    .knob_more = -1,
    .max_bytes = gk_sparse_max_bytes_values,
    .impl = {[GK_BACKEND_REF] = &randomblock_ref, [GK_BACKEND_CPU] = &gk_randomblock_cpu},
};
