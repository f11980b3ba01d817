/*
 * topk: the k = max(1, floor(density * numel)) largest |x| of the layer, sent as
 * (index, value) entries by allgather (sparse.h); out = (1/W) sum_w scatter_add; the
 * residual is x with the sent positions zeroed (algorithms.md 2.3, GRACE's ratio form).
 * This reference sorts the whole layer; ties go to the lowest indices.
 */
#include <math.h>
#include <stdlib.h>

#include "../sparse.h"
#include "gcomp.h"

typedef struct topk_item {
    float mag;
    uint32_t idx;
} topk_item;

/* Larger magnitude first; equal magnitudes in index order. */
static int topk_by_mag(const void *pa, const void *pb)
{
    const topk_item *a = pa, *b = pb;
    if (a->mag != b->mag)
        return a->mag > b->mag ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int topk_by_idx(const void *pa, const void *pb)
{
    const topk_item *a = pa, *b = pb;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int topk_ref_encode(const gk_call *call, float *x, void *send, size_t *bytes)
{
    size_t n = call->layer->numel, k = gk_sparse_spec_k(call->spec, call->layer);
    topk_item *items = malloc(n * sizeof(*items));
    if (!items)
        return GCOMP_NOMEM;
    for (size_t i = 0; i < n; i++)
        items[i] = (topk_item){fabsf(x[i]), (uint32_t)i};
    qsort(items, n, sizeof(*items), topk_by_mag);
    qsort(items, k, sizeof(*items), topk_by_idx);
    for (size_t j = 0; j < k; j++)
        gk_sparse_put(send, j, items[j].idx, x[items[j].idx]);
    free(items);
    *bytes = k * GK_SPARSE_ENTRY;
    return GCOMP_OK;
}

static int topk_ref_decode(const gk_call *call, float *x, const void *const *recv,
                           const size_t *bytes, int nrecv, float *out)
{
    return gk_sparse_decode_ref(call, x, recv, bytes, nrecv, out, NULL, 0,
                                gk_sparse_spec_k(call->spec, call->layer));
}

static const gk_codec_impl topk_ref = {.encode = topk_ref_encode, .decode = topk_ref_decode};

static const gk_param_desc topk_params[] = {
    {.key = "density", .def = 0.01, .min = 0.0, .max = 1.0,
     .help = "fraction of each layer's elements sent, k = max(1, floor(density * numel))"},
};

const gk_codec gk_codec_topk = {
    .name = "topk",
    .summary = "exact Top-K by magnitude, values + indices by allgather",
    .params = topk_params,
    .nparams = 1,
    .ef_default = true,
    .ef_allowed = true,
    .phase_coll = gk_sparse_coll_allgather,
    .knob = "density",
    .knob_more = -1,
    .max_bytes = gk_sparse_max_bytes_k,
    .fixed_bytes = gk_payload_always_fixed,
    .impl = {[GK_BACKEND_REF] = &topk_ref, [GK_BACKEND_CPU] = &gk_topk_cpu},
};
