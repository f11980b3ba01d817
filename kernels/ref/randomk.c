/*
 * randomk: k = max(1, floor(density * numel)) distinct indices drawn from the shared
 * generator (gk_sparse_floyd, seeded with the job seed, layer id and step, stream 0), so
 * every node picks the same ones and only the values travel, as float32 in ascending
 * index order, by allreduce (algorithms.md 2.4). out = the summed values / W scattered
 * to those indices, 0 elsewhere; the residual is zero at the sent indices.
 */
#include <stdlib.h>

#include "../sparse.h"
#include "gcomp.h"
#include "gcomp_config.h"

static void randomk_ref_mark(void *ctx, size_t i)
{
    ((unsigned char *)ctx)[i] = 1;
}

static bool randomk_ref_marked(void *ctx, size_t i)
{
    return ((unsigned char *)ctx)[i] != 0;
}

/* The chosen indices, ascending, into a new array of k; NULL when out of memory. */
static uint32_t *randomk_ref_indices(const gk_call *call, size_t k)
{
    size_t n = call->layer->numel;
    unsigned char *chosen = calloc(n, 1);
    uint32_t *idx = malloc(k * sizeof(*idx));
    if (!chosen || !idx) {
        free(chosen);
        free(idx);
        return NULL;
    }
    gk_sparse_floyd(call->seed, call->layer->id, call->step, n, k, randomk_ref_mark,
                    randomk_ref_marked, chosen);
    size_t j = 0;
    for (size_t i = 0; i < n; i++)
        if (chosen[i])
            idx[j++] = (uint32_t)i;
    free(chosen);
    return idx;
}

static int randomk_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t k = gk_sparse_spec_k(call->spec, call->layer);
    uint32_t *idx = randomk_ref_indices(call, k);
    if (!idx)
        return GCOMP_NOMEM;
    float *val = send;
    for (size_t j = 0; j < k; j++)
        val[j] = x[idx[j]];
    free(idx);
    *bytes = k * sizeof(float);
    return GCOMP_OK;
}

static int randomk_ref_decode(const gk_call *call, float *x, const void *const *recv,
                              const size_t *bytes, int nrecv, float *out)
{
    size_t k = gk_sparse_spec_k(call->spec, call->layer);
    if (nrecv != 1 || !recv || !recv[0] || bytes[0] != k * sizeof(float))
        return GCOMP_INVALID;
    uint32_t *idx = randomk_ref_indices(call, k);
    if (!idx)
        return GCOMP_NOMEM;
    const float *sum = recv[0];
    for (size_t i = 0; i < call->layer->numel; i++)
        out[i] = 0.0f;
    for (size_t j = 0; j < k; j++) {
        out[idx[j]] = sum[j] / (float)call->nodes;
        x[idx[j]] = 0.0f;
    }
    free(idx);
    return GCOMP_OK;
}

static const gk_codec_impl randomk_ref = {.encode = randomk_ref_encode,
                                          .decode = randomk_ref_decode};

static const gk_param_desc randomk_params[] = {
    {.key = "density", .def = 0.01, .min = 0.0, .max = 1.0,
     .help = "fraction of each layer's elements sent, k = max(1, floor(density * numel))"},
};

const gk_codec gk_codec_randomk = {
    .name = "randomk",
    .summary = "Random-K with shared-seed indices: only values travel, by allreduce",
    .params = randomk_params,
    .nparams = 1,
    .ef_default = true,
    .ef_allowed = true,
    .knob = "density",
    .knob_more = -1,
    .max_bytes = gk_sparse_max_bytes_values,
    .impl = {[GK_BACKEND_REF] = &randomk_ref, [GK_BACKEND_CPU] = &gk_randomk_cpu,
#if GCOMP_HAVE_CUDA
             [GK_BACKEND_CUDA] = &gk_randomk_cuda,
#endif
    },
};
