/*
 * threshold: hard threshold (Rethink-GS, algorithms.md 2.3): every element with
 * |x| > lambda is sent as an (index, value) entry by allgather; the count varies
 * (0 .. numel) and is bytes / 8 (sparse.h). Residual zero at the sent positions.
 */
#include <math.h>

#include "../sparse.h"
#include "gcomp.h"

static int threshold_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    float lambda = (float)call->spec->v[GK_SPARSE_DENSITY];
    size_t c = 0;
    for (size_t i = 0; i < call->layer->numel; i++)
        if (fabsf(x[i]) > lambda)
            gk_sparse_put(send, c++, (uint32_t)i, x[i]);
    *bytes = c * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int threshold_ref_decode(const gk_call *call, float *x, const void *const *recv,
                                const size_t *bytes, int nrecv, float *out)
{
    return gk_sparse_decode_ref(call, x, recv, bytes, nrecv, out, NULL, 0, call->layer->numel);
}

static const gk_codec_impl threshold_ref = {.encode = threshold_ref_encode,
                                            .decode = threshold_ref_decode};

static const gk_param_desc threshold_params[] = {
    {.key = "lambda", .def = 4.72e-3, .min = 0.0, .max = 1e30,
     .help = "send every element with |x| > lambda (one lambda for all layers)"},
};

const gk_codec gk_codec_threshold = {
    .name = "threshold",
    .summary = "hard threshold |x| > lambda, variable size, values + indices by allgather",
    .params = threshold_params,
    .nparams = 1,
    .ef_default = true,
    .ef_allowed = true,
    .phase_coll = gk_sparse_coll_allgather,
    .knob = "lambda",
    .knob_more = 1,
    .max_bytes = gk_sparse_max_bytes_any,
    .impl = {[GK_BACKEND_REF] = &threshold_ref, [GK_BACKEND_CPU] = &gk_threshold_cpu},
};
